// The `jwt` policy's config rules, registered for every binary that
// validates config. Keys are parsed here as the proxy parses them, so a key
// the proxy could not use is refused at apply time with its reason.
#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "dataplane/http/header_map.h"
#include "re2/re2.h"
#include "dataplane/policy/jwt/jwt_config.pb.h"
#include "dataplane/policy/jwt/keys.h"

namespace sluice::policy::jwt {
namespace {

constexpr size_t kMaxListEntries = 64;  // issuers, audiences
constexpr size_t kMaxListEntryLength = 1024;
constexpr int kMaxClaimsToHeaders = 16;
constexpr size_t kMaxNameLength = 64;  // header, cookie and query parameter names
constexpr size_t kMaxClaimLength = 128;
constexpr size_t kMaxHeaderPrefixLength = 64;
constexpr uint32_t kMaxLeewaySeconds = 3600;

bool IsTokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsToken(std::string_view s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

// URL-unreserved characters (RFC 3986 2.3): a query parameter name matched
// as it is written.
bool IsQueryName(std::string_view s) {
  if (s.empty() || s.size() > kMaxNameLength) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) &&
        std::string_view("-._~").find(c) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

// Printable ASCII without quotes or backslashes (claim names go into
// error messages and WWW-Authenticate).
bool IsClaimName(std::string_view s) {
  if (s.empty() || s.size() > kMaxClaimLength) return false;
  for (char c : s) {
    if (c < 0x21 || c > 0x7e || c == '"' || c == '\\') return false;
  }
  return true;
}

class JwtValidator : public api::PolicyValidator {
 public:
  std::string name() const override { return "jwt"; }
  const google::protobuf::Descriptor* config_type() const override {
    return v1::JwtConfig::descriptor();
  }
  // HS256 secrets ("k" of an oct JWK) are not shown; the public keys are.
  void Redact(google::protobuf::Message* message) const override {
    auto* config = static_cast<v1::JwtConfig*>(message);
    std::string jwks = config->jwks();
    // "k", also spelled with an escape (refused at apply, but a config
    // stored before that rule must not show its secret either).
    static const RE2* secret = new RE2(R"re("(?:k|\\u006[bB])"\s*:\s*"[^"]*")re");
    if (RE2::GlobalReplace(&jwks, *secret, R"("k":"[redacted]")") > 0) {
      config->set_jwks(jwks);
    }
  }
  void ConsumerReferences(const google::protobuf::Message& message,
                          std::vector<std::pair<std::string, std::string>>* refs) const override {
    const auto& config = static_cast<const v1::JwtConfig&>(message);
    if (!config.anonymous().empty()) refs->emplace_back("anonymous", config.anonymous());
  }
  void RemovedRequestFields(const google::protobuf::Message& message,
                            std::vector<std::string>* fields) const override {
    const auto& config = static_cast<const v1::JwtConfig&>(message);
    if (config.keep_token()) return;
    if (!config.has_header()) {
      fields->push_back("authorization");
    } else if (!config.header().empty()) {
      fields->push_back(absl::AsciiStrToLower(config.header()));
    }
  }
  void Validate(const google::protobuf::Message& message,
                std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::JwtConfig&>(message);
    // Member names with escapes ("\u006b" is "k" to the key parser) would
    // keep a secret out of sight of the redaction: refused.
    static const RE2* escaped_name =
        new RE2(R"re("((?:[^"\\]|\\.)*\\(?:[^"\\]|\\.)*)"\s*:)re");
    std::string name;
    if (RE2::PartialMatch(config.jwks(), *escaped_name, &name)) {
      errors->push_back({"jwks", absl::StrCat("member name \"", name,
                                              "\" is written with escapes: write member names "
                                              "plainly (an oct key's \"k\" so spelled could not "
                                              "be redacted)")});
      return;
    }
    ValidateKeysAndAlgorithms(config, errors);
    ValidateClaimRules(config, errors);
    ValidateTokenSources(config, errors);
    ValidateClaimsToHeaders(config, errors);
  }

 private:
  static void ValidateKeysAndAlgorithms(const v1::JwtConfig& config,
                                        std::vector<api::PolicyConfigError>* errors) {
    std::vector<PemKeyInput> pems;
    for (const v1::PublicKeyPem& p : config.public_keys_pem()) pems.push_back({p.pem(), p.kid()});
    // Output of `sluicectl get` applied back: say so, rather than that
    // "[redacted]" is not base64url.
    static const RE2* redacted = new RE2(R"re("k"\s*:\s*"\[redacted\]")re");
    if (RE2::PartialMatch(config.jwks(), *redacted)) {
      errors->push_back({"jwks", "an oct key's \"k\" is [redacted]: the secret was redacted on "
                                 "output (sluicectl get) and must be supplied again"});
      return;
    }
    std::vector<KeySetError> key_errors;
    std::vector<VerificationKey> keys = ParseKeySet(config.jwks(), pems, &key_errors);
    for (KeySetError& e : key_errors) errors->push_back({e.field, std::move(e.message)});

    if (config.algorithms().empty()) {
      errors->push_back({"algorithms", absl::StrCat("required: one or more of ", AlgorithmNames())});
    }
    std::set<std::string> seen;
    for (int i = 0; i < config.algorithms_size(); ++i) {
      const std::string& name = config.algorithms(i);
      std::string field = absl::StrCat("algorithms[", i, "]");
      std::optional<Algorithm> alg = AlgorithmFromName(name);
      if (!alg) {
        errors->push_back(
            {field, absl::EqualsIgnoreCase(name, "none")
                        ? std::string("\"none\" (unsigned tokens) is never allowed")
                        : absl::StrCat("\"", name, "\" is not one of ", AlgorithmNames())});
        continue;
      }
      if (!seen.insert(name).second) {
        errors->push_back({field, absl::StrCat(name, " is listed twice")});
        continue;
      }
      bool verifiable = false;
      for (const VerificationKey& key : keys) verifiable = verifiable || key.CanVerify(*alg);
      if (!verifiable && key_errors.empty()) {
        errors->push_back({field, absl::StrCat("no key can verify ", name, " tokens")});
      }
    }
  }

  static void ValidateClaimRules(const v1::JwtConfig& config,
                                 std::vector<api::PolicyConfigError>* errors) {
    for (const auto& [list, label] : {std::pair(&config.issuers(), "issuers"),
                                      std::pair(&config.audiences(), "audiences")}) {
      if (static_cast<size_t>(list->size()) > kMaxListEntries) {
        errors->push_back({label, absl::StrCat("has ", list->size(), " entries; at most ",
                                               kMaxListEntries)});
      }
      for (int i = 0; i < list->size(); ++i) {
        const std::string& v = list->Get(i);
        if (v.empty() || v.size() > kMaxListEntryLength) {
          errors->push_back({absl::StrCat(label, "[", i, "]"),
                             absl::StrCat("must be 1..", kMaxListEntryLength, " characters")});
        }
      }
    }
    if (config.has_leeway_seconds() && config.leeway_seconds() > kMaxLeewaySeconds) {
      errors->push_back({"leeway_seconds", absl::StrCat("at most ", kMaxLeewaySeconds, ", got ",
                                                        config.leeway_seconds())});
    }
    if (!config.consumer_claim().empty() && !IsClaimName(config.consumer_claim())) {
      errors->push_back({"consumer_claim", ClaimNameRule(config.consumer_claim())});
    }
  }

  static std::string ClaimNameRule(const std::string& got) {
    return absl::StrCat("must be 1..", kMaxClaimLength,
                        " printable ASCII characters without spaces, quotes or backslashes, "
                        "got \"",
                        got, "\"");
  }

  static void ValidateTokenSources(const v1::JwtConfig& config,
                                   std::vector<api::PolicyConfigError>* errors) {
    bool header_on = !config.has_header() || !config.header().empty();
    if (config.has_header() && !config.header().empty() &&
        !IsToken(config.header(), kMaxNameLength)) {
      errors->push_back({"header", absl::StrCat("must be 1..", kMaxNameLength,
                                                " header-name characters, got \"",
                                                config.header(), "\"")});
    }
    const std::string& prefix = config.header_prefix();
    bool prefix_ok = prefix.size() <= kMaxHeaderPrefixLength;
    for (char c : prefix) prefix_ok = prefix_ok && c >= 0x20 && c <= 0x7e;
    if (!prefix_ok) {
      errors->push_back({"header_prefix", absl::StrCat("at most ", kMaxHeaderPrefixLength,
                                                       " printable ASCII characters")});
    }
    if (!config.cookie().empty() && !IsToken(config.cookie(), kMaxNameLength)) {
      errors->push_back({"cookie", absl::StrCat("must be 1..", kMaxNameLength,
                                                " cookie-name characters, got \"",
                                                config.cookie(), "\"")});
    }
    if (!config.query_parameter().empty() && !IsQueryName(config.query_parameter())) {
      errors->push_back({"query_parameter",
                         absl::StrCat("must be 1..", kMaxNameLength,
                                      " letters, digits, '-', '.', '_' or '~', got \"",
                                      config.query_parameter(), "\"")});
    }
    if (!header_on && config.cookie().empty() && config.query_parameter().empty()) {
      errors->push_back({"header", "the header is off and there is no cookie or "
                                   "query_parameter: no token could ever be found"});
    }
  }

  static void ValidateClaimsToHeaders(const v1::JwtConfig& config,
                                      std::vector<api::PolicyConfigError>* errors) {
    if (config.claims_to_headers_size() > kMaxClaimsToHeaders) {
      errors->push_back({"claims_to_headers",
                         absl::StrCat("has ", config.claims_to_headers_size(),
                                      " entries; at most ", kMaxClaimsToHeaders)});
    }
    std::string token_header = absl::AsciiStrToLower(
        config.has_header() ? config.header() : std::string("authorization"));
    std::set<std::string> headers;
    for (int i = 0; i < config.claims_to_headers_size(); ++i) {
      const v1::ClaimToHeader& c = config.claims_to_headers(i);
      std::string field = absl::StrCat("claims_to_headers[", i, "]");
      if (!IsClaimName(c.claim())) {
        errors->push_back({absl::StrCat(field, ".claim"), ClaimNameRule(c.claim())});
      }
      std::string header = absl::AsciiStrToLower(c.header());
      std::string header_field = absl::StrCat(field, ".header");
      if (!IsToken(c.header(), kMaxNameLength)) {
        errors->push_back({header_field, absl::StrCat("must be 1..", kMaxNameLength,
                                                      " header-name characters, got \"",
                                                      c.header(), "\"")});
        continue;
      }
      // A claim, which the token's issuer may copy from what a user typed,
      // must not pass as a field the gateway sets or one that frames.
      if (http::IsGatewayOrFramingField(header)) {
        errors->push_back({header_field, absl::StrCat("\"", header,
                                                      "\" is set by the gateway or frames the "
                                                      "message; choose another header")});
      } else if (header == token_header) {
        errors->push_back({header_field, absl::StrCat("\"", header,
                                                      "\" is the header the token comes in")});
      } else if (std::replace(header.begin(), header.end(), '_', '-');
                 !headers.insert(header).second) {
        errors->push_back(
            {header_field, absl::StrCat("\"", c.header(), "\" is listed twice (as CGI reads it)")});
      }
    }
  }

  // A claim header that CGI reads as the token's own (X_Token for x-token):
  // the upstream could take the claim for the token; a public_keys_pem
  // entry holding more than its PUBLIC KEY block (PemProblem). Earlier
  // builds accepted both, so they are refused only in what an apply adds or
  // changes.
  void ValidateNew(const google::protobuf::Message& message,
                   std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::JwtConfig&>(message);
    for (int i = 0; i < config.public_keys_pem_size(); ++i) {
      if (std::string problem = PemProblem(config.public_keys_pem(i).pem()); !problem.empty()) {
        errors->push_back({absl::StrCat("public_keys_pem[", i, "].pem"), std::move(problem)});
      }
    }
    const std::string token_header = absl::AsciiStrToLower(
        config.has_header() ? config.header() : std::string("authorization"));
    // A token header the gateway sets or removes before the policy runs
    // (x-consumer-name, x-forwarded-for), or that frames the message, never
    // holds the client's token: every request would be refused.
    if (config.has_header() && !config.header().empty() &&
        http::IsGatewayOrFramingField(config.header())) {
      errors->push_back({"header", absl::StrCat("\"", config.header(),
                                                "\" is set by the gateway or frames the message: "
                                                "no token could be read from it; choose another "
                                                "name")});
    }
    for (int i = 0; i < config.claims_to_headers_size(); ++i) {
      const std::string header = absl::AsciiStrToLower(config.claims_to_headers(i).header());
      if (header != token_header && http::SameCgiName(header, token_header)) {
        errors->push_back({absl::StrCat("claims_to_headers[", i, "].header"),
                           absl::StrCat("\"", header,
                                        "\" is the header the token comes in (as CGI reads it)")});
      } else if (http::SameCgiName(header, "cookie") ||
                 http::SameCgiName(header, "authorization")) {
        // A claim taken for the client's session or credentials.
        errors->push_back({absl::StrCat("claims_to_headers[", i, "].header"),
                           absl::StrCat("\"", header,
                                        "\" carries the client's cookies or credentials; "
                                        "choose another header")});
      } else if (http::SameCgiName(header, "expect") ||
                 http::SameCgiName(header, "http2-settings")) {
        // Taken off requests before policies: a claim there would ask the
        // upstream for 100-continue or an HTTP/2 upgrade.
        errors->push_back({absl::StrCat("claims_to_headers[", i, "].header"),
                           absl::StrCat("\"", header,
                                        "\" is taken off requests before policies and handled "
                                        "by the gateway; choose another header")});
      }
    }
  }
};

const bool registered = api::RegisterPolicyValidator(std::make_unique<JwtValidator>());

}  // namespace
}  // namespace sluice::policy::jwt
