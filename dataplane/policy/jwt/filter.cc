// The `jwt` policy's filter: see filter.h.
#include "dataplane/policy/jwt/filter.h"

#include <openssl/sha.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/policy/auth_util.h"
#include "dataplane/policy/jwt/keys.h"
#include "dataplane/policy/jwt/verifier.h"
#include "dataplane/policy/registry.h"

namespace sluice::policy::jwt {
namespace {

constexpr std::string_view kDefaultHeader = "authorization";
constexpr std::string_view kDefaultHeaderPrefix = "Bearer ";
constexpr int64_t kDefaultLeewaySeconds = 60;
constexpr char kChallenge[] = "Bearer realm=\"sluice\"";

struct ClaimHeader {
  std::string header;
  size_t wanted_index;  // in VerifierOptions::wanted_claims
};

struct Settings {
  std::unique_ptr<TokenVerifier> verifier;
  VerifiedTokenCache::Key config_digest;
  std::string header;  // empty: not looked at
  std::string header_prefix;
  std::string cookie;
  std::string query_parameter;
  std::string consumer_claim;  // wanted_claims[0] when set
  std::string anonymous;
  std::vector<ClaimHeader> claim_headers;
  bool keep_token = false;
  Clock clock;
};

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A claim's text that may go into a header field value as it is: no
// control characters but HTAB, no white space at either end.
bool IsHeaderValue(std::string_view text) {
  for (char c : text) {
    unsigned char u = static_cast<unsigned char>(c);
    if ((u < 0x20 && u != '\t') || u == 0x7f) return false;
  }
  return TrimSpaces(text).size() == text.size();
}

// RFC 6750 3: error_description takes %x20-21 / %x23-5B / %x5D-7E.
// `error`: invalid_token (a token was checked and refused) or
// invalid_request (the request is malformed: a token given twice).
std::string Challenge(std::string_view message, const char* error = "invalid_token") {
  std::string description(message);
  for (char& c : description) {
    if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') c = '?';
  }
  return absl::StrCat(kChallenge, ", error=\"", error, "\", error_description=\"", description,
                      "\"");
}

// Each `name=value` pair of the request's cookie fields, in order.
template <typename Fn>
void ForEachCookie(const http::HeaderMap& headers, Fn fn) {
  for (const http::HeaderMap::Field& f : headers.fields()) {
    if (!absl::EqualsIgnoreCase(absl::string_view(f.name.data(), f.name.size()), "cookie")) {
      continue;
    }
    for (absl::string_view piece : absl::StrSplit(f.value, ';')) {
      std::string_view pair = TrimSpaces(std::string_view(piece.data(), piece.size()));
      size_t eq = pair.find('=');
      if (eq == std::string_view::npos) continue;
      if (!fn(TrimSpaces(pair.substr(0, eq)), TrimSpaces(pair.substr(eq + 1)))) return;
    }
  }
}

size_t CountCookie(const http::HeaderMap& headers, std::string_view name) {
  size_t n = 0;
  ForEachCookie(headers, [&](std::string_view cookie, std::string_view) {
    if (cookie == name) ++n;
    return true;
  });
  return n;
}

std::optional<std::string> FindCookie(const http::HeaderMap& headers, std::string_view name) {
  std::optional<std::string> found;
  ForEachCookie(headers, [&](std::string_view n, std::string_view v) {
    if (n != name) return true;
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    found = std::string(v);
    return false;
  });
  return found;
}

// The cookie fields without any `name` cookie (a field left empty goes),
// in any spelling PHP reads as that name too (`jwt.token`, `jwt token` and
// `jwt[token` are its `$_COOKIE['jwt_token']`), as for query parameters.
void RemoveCookie(http::HeaderMap& headers, std::string_view name) {
  std::vector<std::string> kept;
  for (const http::HeaderMap::Field& f : headers.fields()) {
    if (!absl::EqualsIgnoreCase(absl::string_view(f.name.data(), f.name.size()), "cookie")) {
      continue;
    }
    std::vector<std::string> pairs;
    for (absl::string_view piece : absl::StrSplit(f.value, ';')) {
      std::string_view pair = TrimSpaces(std::string_view(piece.data(), piece.size()));
      if (pair.empty()) continue;
      const std::string_view cookie = TrimSpaces(pair.substr(0, pair.find('=')));
      if (cookie == name || SameParameterName(cookie, name)) continue;
      pairs.emplace_back(pair);
    }
    if (!pairs.empty()) kept.push_back(absl::StrJoin(pairs, "; "));
  }
  headers.Remove("cookie");
  for (const std::string& value : kept) headers.Add("cookie", value);
}

class JwtFilter : public http::Filter {
 public:
  explicit JwtFilter(const Settings& settings) : settings_(settings) {}

  http::FilterStatus OnRequestHeaders(http::HeaderMap& headers,
                                      http::FilterCallbacks& callbacks) override {
    RemoveClaimHeaders(headers);
    RemoveOtherSpellingsOfTheTokenHeader(headers);
    // The token's field is one field (Authorization: RFC 9110 11.6.2). With
    // two, the token checked (a cookie's, or the first field's) need not be
    // the one the upstream reads: refused, whatever the anonymous consumer.
    if (!settings_.header.empty() && headers.Count(settings_.header) > 1) {
      // A token in the query goes into no access log either.
      return Malformed(callbacks, absl::StrCat("more than one ", settings_.header, " field"),
                       !settings_.query_parameter.empty());
    }
    // With keep_token the checked token goes upstream: a second copy in its
    // source (two cookies or parameters of that name) might be the one an
    // upstream reads (Django takes the last cookie, PHP the last parameter).
    if (settings_.keep_token) {
      if (!settings_.cookie.empty() && CountCookie(headers, settings_.cookie) > 1) {
        return Malformed(callbacks, absl::StrCat("more than one ", settings_.cookie, " cookie"),
                         !settings_.query_parameter.empty());
      }
      if (!settings_.query_parameter.empty() &&
          CountQueryParameter(callbacks.info().path, settings_.query_parameter) > 1) {
        return Malformed(
            callbacks,
            absl::StrCat("more than one ", settings_.query_parameter, " query parameter"), true);
      }
    }
    // A token parameter after a ';' (`?x=1;jwt=T`) is neither checked nor
    // removed, and Rack 2, Python before 3.9.2 and Go before 1.17 read it.
    if (!settings_.query_parameter.empty() &&
        QueryParameterAfterSemicolon(callbacks.info().path, settings_.query_parameter)) {
      return Malformed(callbacks,
                       absl::StrCat(settings_.query_parameter, " query parameter after a ';'"),
                       true);
    }
    std::optional<std::string> token = TakeToken(headers, callbacks);
    if (!token) {
      return Unaccepted(headers, callbacks, "no bearer token found in request", kChallenge);
    }
    absl::StatusOr<std::shared_ptr<const AcceptedToken>> accepted = Accept(*token);
    if (!accepted.ok()) {
      return Refuse(headers, callbacks, std::string(accepted.status().message()));
    }
    const AcceptedToken& t = **accepted;
    const auth::Consumer* consumer = nullptr;
    if (!settings_.consumer_claim.empty()) {
      consumer = callbacks.consumers().FindByName(t.consumer);
      if (consumer == nullptr) return Refuse(headers, callbacks, "token's consumer is not known");
    }
    for (const auto& [name, value] : t.headers) headers.Add(name, value);
    // The upstream's answer may depend on them (x-user-roles): a cache
    // keyed by consumer keys on them too.
    if (!t.claims.empty()) callbacks.SetConsumerClaims(t.claims);
    // Without consumer_claim: accepted, naming no one (the cache keeps the
    // answer from other callers).
    callbacks.SetConsumer(consumer, /*anonymous=*/false);
    return http::FilterStatus::kContinue;
  }

  void OnSkippedInGroup(http::HeaderMap& headers, http::FilterCallbacks& callbacks) override {
    RemoveUnacceptedCredentials(headers, callbacks);
  }

 private:
  // The request goes on without a token this policy accepted (another policy
  // of a group identified the caller, or the anonymous consumer takes it):
  // every form of a token goes, so that no upstream takes one for checked.
  void RemoveUnacceptedCredentials(http::HeaderMap& headers, http::FilterCallbacks& callbacks) {
    RemoveClaimHeaders(headers);
    RemoveOtherSpellingsOfTheTokenHeader(headers);
    // Whatever keep_token says: it keeps a token this policy accepted, and
    // this one accepted none (a forged token reached the upstream beside
    // another policy's identity).
    TakeToken(headers, callbacks, /*remove=*/true);  // taking it removes it
    // Its cookie in the spellings PHP reads as it too.
    if (!settings_.cookie.empty()) RemoveCookie(headers, settings_.cookie);
    // A token after a ';' (`?x=1;access_token=T`), which no policy checked.
    if (!settings_.query_parameter.empty() &&
        QueryParameterAfterSemicolon(callbacks.info().path, settings_.query_parameter)) {
      callbacks.SetPath(RemoveQueryParameter(callbacks.info().path, settings_.query_parameter));
    }
    // A token in a second field of the token's header (the first may be the
    // credential the accepting policy used) is removed too, and one set
    // apart by a tab (`Bearer<TAB>T`, which this policy never checks and
    // readers that split at any white space take).
    if (!settings_.header.empty() && headers.Count(settings_.header) > 0) {
      std::vector<std::string> kept;
      for (const auto& field : headers.fields()) {
        if (absl::EqualsIgnoreCase(field.name, settings_.header) && !LooksLikeToken(field.value)) {
          kept.push_back(field.value);
        }
      }
      headers.Remove(settings_.header);
      for (const std::string& value : kept) headers.Add(settings_.header, value);
    }
  }

  // x_jwt for x-jwt: never checked, and CGI, WSGI, Rack and PHP read it as
  // the token's field.
  void RemoveOtherSpellingsOfTheTokenHeader(http::HeaderMap& headers) {
    if (!settings_.header.empty()) headers.RemoveOtherCgiSpellings(settings_.header);
  }
  void RemoveClaimHeaders(http::HeaderMap& headers) {
    for (const ClaimHeader& h : settings_.claim_headers) {
      headers.Remove(h.header);
      headers.RemoveOtherCgiSpellings(h.header);
    }
  }

  // 400, whatever the anonymous consumer: the request gives a token more
  // than once (RFC 6750 3.1 invalid_request, with its challenge: 3).
  http::FilterStatus Malformed(http::FilterCallbacks& callbacks, std::string_view message,
                               bool token_in_query) {
    return Reject(callbacks, 400, message, Challenge(message, "invalid_request"), token_in_query);
  }

  http::FilterStatus Refuse(http::HeaderMap& headers, http::FilterCallbacks& callbacks,
                            std::string_view message) {
    return Unaccepted(headers, callbacks, message, Challenge(message));
  }

  // No token accepted: 401, or the anonymous consumer, for whom the request
  // is cleaned of every form of a token first (a `Bearer<TAB>T` field this
  // policy never checks, a refused token kept by keep_token).
  http::FilterStatus Unaccepted(http::HeaderMap& headers, http::FilterCallbacks& callbacks,
                                std::string_view message, std::string_view challenge) {
    if (!settings_.anonymous.empty()) RemoveUnacceptedCredentials(headers, callbacks);
    return RefuseOrAnonymous(callbacks, settings_.anonymous, message, challenge);
  }

  // HasTokenPrefix, with a prefix's last space matched by a tab too.
  bool LooksLikeToken(std::string_view v) const {
    if (HasTokenPrefix(v)) return true;
    const std::string& prefix = settings_.header_prefix;
    if (prefix.empty() || prefix.back() != ' ' || v.size() < prefix.size()) return false;
    return absl::EqualsIgnoreCase(absl::string_view(v.data(), prefix.size() - 1),
                                  absl::string_view(prefix.data(), prefix.size() - 1)) &&
           v[prefix.size() - 1] == '\t';
  }

  bool HasTokenPrefix(std::string_view v) const {
    const std::string& prefix = settings_.header_prefix;
    return v.size() >= prefix.size() &&
           absl::EqualsIgnoreCase(absl::string_view(v.data(), prefix.size()), prefix);
  }

  // The token from the first source that carries one (header, cookie,
  // query), removed from the request unless keep_token; nullopt when none
  // does. A token in a later source was never checked: it is removed
  // whatever keep_token says, or an upstream reading that source would
  // take it for the one the gateway checked.
  // `remove`: the token goes too with keep_token (a token this policy did
  // not accept).
  std::optional<std::string> TakeToken(http::HeaderMap& headers, http::FilterCallbacks& callbacks,
                                       bool remove = false) {
    const bool keep = settings_.keep_token && !remove;
    std::optional<std::string> taken;
    if (!settings_.header.empty()) {
      if (const std::string* value = headers.Get(settings_.header)) {
        std::string_view v = *value;
        if (HasTokenPrefix(v)) {
          std::string token(TrimSpaces(v.substr(settings_.header_prefix.size())));
          if (!token.empty()) {
            if (!keep) headers.Remove(settings_.header);
            taken = std::move(token);
          }
        }
      }
    }
    if (!settings_.cookie.empty()) {
      if (std::optional<std::string> token = FindCookie(headers, settings_.cookie)) {
        const bool used = !taken && !token->empty();
        if (used) taken = std::move(token);
        if (!used || !keep) RemoveCookie(headers, settings_.cookie);
      }
    }
    if (!settings_.query_parameter.empty()) {
      std::string_view path = callbacks.info().path;
      if (std::optional<std::string> token = FindQueryParameter(path, settings_.query_parameter)) {
        const bool used = !taken && !token->empty();
        if (used) taken = std::move(token);
        if (!used || !keep) {
          callbacks.SetPath(RemoveQueryParameter(path, settings_.query_parameter));
        } else {
          callbacks.HideQueryParameterFromLog(settings_.query_parameter);  // kept upstream only
        }
      }
    }
    return taken;
  }

  absl::StatusOr<std::shared_ptr<const AcceptedToken>> Accept(const std::string& token) {
    const int64_t now = settings_.clock();
    if (token.size() > kMaxTokenBytes) {
      return absl::UnauthenticatedError(
          absl::StrCat("malformed token: longer than ", kMaxTokenBytes, " bytes"));
    }
    VerifiedTokenCache& cache = VerifiedTokenCache::Get();
    VerifiedTokenCache::Key key = VerifiedTokenCache::KeyOf(settings_.config_digest, token);
    if (std::shared_ptr<const AcceptedToken> hit = cache.Find(key, now)) return hit;

    absl::StatusOr<VerifiedToken> verified = settings_.verifier->Verify(token, now);
    if (!verified.ok()) return verified.status();
    auto accepted = std::make_shared<AcceptedToken>();
    accepted->not_before = verified->not_before;
    accepted->expires = verified->expires;
    const std::vector<ClaimValue>& claims = verified->claims.wanted;
    if (!settings_.consumer_claim.empty()) {
      const ClaimValue& consumer = claims[0];
      if (consumer.kind != ClaimValue::Kind::kString || consumer.text.empty()) {
        return absl::UnauthenticatedError(absl::StrCat(
            "token's ", settings_.consumer_claim, " claim is missing or not a string"));
      }
      accepted->consumer = consumer.text;
    }
    for (const ClaimHeader& h : settings_.claim_headers) {
      const ClaimValue& claim = claims[h.wanted_index];
      bool usable = claim.kind == ClaimValue::Kind::kString ||
                    claim.kind == ClaimValue::Kind::kRendered;
      // An empty value ("", []) sets none, as an absent claim.
      if (usable && !claim.text.empty() && IsHeaderValue(claim.text)) {
        accepted->headers.emplace_back(h.header, claim.text);
        absl::StrAppend(&accepted->claims, h.header, "=", claim.text, "\n");
      }
    }
    cache.Insert(key, accepted);
    return std::shared_ptr<const AcceptedToken>(std::move(accepted));
  }

  const Settings& settings_;
};

class JwtFilterFactory : public http::FilterFactory {
 public:
  explicit JwtFilterFactory(Settings settings) : settings_(std::move(settings)) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<JwtFilter>(settings_);
  }
  std::string_view policy_name() const override { return "jwt"; }
  http::FilterPhase phase() const override { return http::FilterPhase::kAuthentication; }
  bool reads_query_credential() const override { return !settings_.query_parameter.empty(); }
  std::vector<std::string> trusted_request_fields() const override {
    std::vector<std::string> names;
    for (const ClaimHeader& h : settings_.claim_headers) {
      names.push_back(h.header);
    }
    return names;
  }
  // A token in a trailer is one the gateway never checked (Authorization
  // and Cookie trailers never go upstream; a custom header's would).
  const std::vector<std::string>& removed_request_fields() const override { return removed_; }

 private:
  const Settings settings_;
  const std::vector<std::string> removed_ =
      settings_.header.empty() ? std::vector<std::string>() : std::vector<std::string>{settings_.header};
};

class JwtPolicyFactory : public PolicyFactory {
 public:
  std::string name() const override { return "jwt"; }
  absl::StatusOr<std::shared_ptr<const http::FilterFactory>> Compile(
      const google::protobuf::Message& message) const override {
    return CompileJwtFilter(static_cast<const v1::JwtConfig&>(message),
                            [] { return absl::ToUnixMillis(absl::Now()); });
  }
};

const bool registered = RegisterPolicyFactory(std::make_unique<JwtPolicyFactory>());

}  // namespace

absl::StatusOr<std::shared_ptr<const http::FilterFactory>> CompileJwtFilter(
    const v1::JwtConfig& config, Clock clock) {
  std::vector<PemKeyInput> pems;
  for (const v1::PublicKeyPem& p : config.public_keys_pem()) pems.push_back({p.pem(), p.kid()});
  std::vector<KeySetError> errors;
  std::vector<VerificationKey> keys = ParseKeySet(config.jwks(), pems, &errors);
  if (!errors.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(errors[0].field, ": ", errors[0].message));
  }
  VerifierOptions options;
  for (const std::string& name : config.algorithms()) {
    std::optional<Algorithm> alg = AlgorithmFromName(name);
    if (!alg) return absl::InvalidArgumentError(absl::StrCat("algorithms: unknown ", name));
    options.algorithms.push_back(*alg);
  }
  options.issuers.assign(config.issuers().begin(), config.issuers().end());
  options.audiences.assign(config.audiences().begin(), config.audiences().end());
  options.leeway_seconds =
      config.has_leeway_seconds() ? config.leeway_seconds() : kDefaultLeewaySeconds;
  options.require_exp = !config.has_require_exp() || config.require_exp();

  Settings s;
  if (!config.consumer_claim().empty()) {
    s.consumer_claim = config.consumer_claim();
    options.wanted_claims.push_back(config.consumer_claim());
  }
  for (const v1::ClaimToHeader& c : config.claims_to_headers()) {
    std::string header = absl::AsciiStrToLower(c.header());
    s.claim_headers.push_back({std::move(header), options.wanted_claims.size()});
    options.wanted_claims.push_back(c.claim());
  }
  s.verifier = std::make_unique<TokenVerifier>(std::move(options), std::move(keys));
  // The cache tells configs apart by this digest (no map fields: the
  // serialization is canonical).
  std::string serialized = config.SerializeAsString();
  SHA256(reinterpret_cast<const unsigned char*>(serialized.data()), serialized.size(),
         s.config_digest.data());
  s.header = config.has_header() ? config.header() : std::string(kDefaultHeader);
  s.header_prefix =
      config.has_header_prefix() ? config.header_prefix() : std::string(kDefaultHeaderPrefix);
  s.cookie = config.cookie();
  s.query_parameter = config.query_parameter();
  s.anonymous = config.anonymous();
  s.keep_token = config.keep_token();
  s.clock = std::move(clock);
  return std::shared_ptr<const http::FilterFactory>(
      std::make_shared<JwtFilterFactory>(std::move(s)));
}

}  // namespace sluice::policy::jwt
