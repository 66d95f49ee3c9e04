// The `cors` policy's filter. A preflight (OPTIONS with Origin and
// Access-Control-Request-Method) is answered here with 204, unless
// `preflight_continue`: with the Access-Control-Allow-* fields when the
// origin is allowed, without them when it is not (the browser then blocks
// the actual request; nothing goes upstream either way). Other requests go
// on; their responses, the upstream's or the gateway's own (a 401 of a
// later policy, a 502), get Access-Control-Allow-Origin (and -Credentials,
// -Expose-Headers) when the origin is allowed, and Vary: Origin whenever
// the answer depends on the Origin.
//
// Matching an origin costs a case-insensitive comparison per exact entry
// and an RE2 full match per regex entry (at most 64 entries), once per
// request that carries an Origin.
#include "dataplane/http/filter.h"

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "dataplane/policy/cors/cors_config.pb.h"
#include "dataplane/policy/cors/origin_pattern.h"
#include "dataplane/policy/registry.h"
#include "re2/re2.h"

namespace sluice::policy::cors {
namespace {

constexpr char kDefaultMethods[] = "GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS";

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return absl::EqualsIgnoreCase(absl::string_view(a.data(), a.size()),
                                absl::string_view(b.data(), b.size()));
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) &&
        std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

// Calls `fn` on each element of a comma-separated field value; stops and
// returns false when `fn` does.
template <typename Fn>
bool ForEachListElement(std::string_view value, Fn fn) {
  while (true) {
    size_t comma = value.find(',');
    std::string_view element = Trim(value.substr(0, comma));
    if (!element.empty() && !fn(element)) return false;
    if (comma == std::string_view::npos) return true;
    value.remove_prefix(comma + 1);
  }
}

// Vary: Origin, merged into the Vary the response has (one field, the
// existing elements first), unless it already varies on Origin or on
// everything ("*").
void AddVaryOrigin(http::HeaderMap& headers) {
  std::vector<std::string_view> existing;
  bool covered = false;
  for (const http::HeaderMap::Field& f : headers.fields()) {
    if (!EqualsIgnoreCase(f.name, "vary")) continue;
    ForEachListElement(f.value, [&](std::string_view element) {
      covered = covered || element == "*" || EqualsIgnoreCase(element, "origin");
      existing.push_back(element);
      return true;
    });
  }
  if (covered) return;
  if (existing.empty()) {
    headers.Add("Vary", "Origin");
    return;
  }
  std::string merged;
  for (std::string_view e : existing) absl::StrAppend(&merged, std::string(e), ", ");
  merged.append("Origin");
  headers.Set("Vary", merged);
}

struct Settings {
  bool any_origin = false;         // origins: ["*"]
  std::vector<std::string> exact;  // lower-case
  std::vector<std::unique_ptr<const RE2>> regexes;
  std::string allow_methods;
  std::string allow_headers;   // empty: reflect the preflight's
  std::string expose_headers;  // empty: not sent
  bool credentials = false;
  std::string max_age;  // empty: not sent
  bool preflight_continue = false;

  bool Allows(std::string_view origin) const {
    if (any_origin) return true;
    for (const std::string& e : exact) {
      if (EqualsIgnoreCase(origin, e)) return true;
    }
    for (const auto& re : regexes) {
      if (RE2::FullMatch(re2::StringPiece(origin.data(), origin.size()), *re)) return true;
    }
    return false;
  }
};

class CorsFilter : public http::Filter {
 public:
  explicit CorsFilter(const Settings& settings) : settings_(settings) {}

  http::FilterStatus OnRequestHeaders(http::HeaderMap& headers,
                                      http::FilterCallbacks& callbacks) override {
    const std::string* origin = headers.Get("origin");
    if (origin == nullptr) return http::FilterStatus::kContinue;
    origin_ = *origin;
    has_origin_ = true;
    // Origin is one value (RFC 6454 7); two fields are no origin, whichever
    // comes first (before: the first decided).
    allowed_ = headers.Count("origin") == 1 && settings_.Allows(origin_);
    if (settings_.preflight_continue || callbacks.info().method != "OPTIONS" ||
        headers.Get("access-control-request-method") == nullptr) {
      return http::FilterStatus::kContinue;
    }
    // A preflight: the gateway answers it.
    answered_ = true;
    http::HeaderMap reply;
    if (allowed_) {
      reply.Add("Access-Control-Allow-Origin", AllowOrigin());
      reply.Add("Access-Control-Allow-Methods", settings_.allow_methods);
      if (!settings_.allow_headers.empty()) {
        reply.Add("Access-Control-Allow-Headers", settings_.allow_headers);
      } else {
        // Reflected only when it is a list of header names; several fields
        // are one list (RFC 9110 5.3), joined with ", ".
        std::string requested;
        for (const http::HeaderMap::Field& f : headers.fields()) {
          if (!EqualsIgnoreCase(f.name, "access-control-request-headers")) continue;
          if (!requested.empty()) requested += ", ";
          requested += f.value;
        }
        if (!Trim(requested).empty() && ForEachListElement(requested, IsToken)) {
          reply.Add("Access-Control-Allow-Headers", requested);
        }
      }
      if (settings_.credentials) reply.Add("Access-Control-Allow-Credentials", "true");
      if (!settings_.max_age.empty()) reply.Add("Access-Control-Max-Age", settings_.max_age);
    }
    reply.Add("Vary", "Origin");
    callbacks.SendResponse(204, reply, "");
    return http::FilterStatus::kStopLocalReply;
  }

  void OnResponseHeaders(int, http::HeaderMap& headers, http::FilterCallbacks&) override {
    if (answered_) return;  // the preflight answer is complete
    // With origins ["*"] every response gets the fields, Origin or not: it
    // is then the same for every origin and needs no Vary (the Fetch
    // standard's "CORS protocol and HTTP caches"; Kong does so too). Before,
    // a cache could keep an answer to a request without Origin, with no
    // CORS fields, and serve it to a CORS request, which the browser refused.
    if ((has_origin_ && allowed_) || settings_.any_origin) {
      headers.Set("Access-Control-Allow-Origin", AllowOrigin());
      // The gateway's grant replaces the upstream's whole: an upstream's
      // credentials next to the gateway's origin would be a credentialed
      // grant neither of them made.
      if (settings_.credentials) {
        headers.Set("Access-Control-Allow-Credentials", "true");
      } else {
        headers.Remove("Access-Control-Allow-Credentials");
      }
      if (!settings_.expose_headers.empty()) {
        headers.Set("Access-Control-Expose-Headers", settings_.expose_headers);
      }
    }
    if (!settings_.any_origin) AddVaryOrigin(headers);
  }

 private:
  std::string_view AllowOrigin() const {
    return settings_.any_origin ? std::string_view("*") : std::string_view(origin_);
  }

  const Settings& settings_;
  std::string origin_;
  bool has_origin_ = false;
  bool allowed_ = false;
  bool answered_ = false;
};

class CorsFilterFactory : public http::FilterFactory {
 public:
  explicit CorsFilterFactory(Settings settings) : settings_(std::move(settings)) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<CorsFilter>(settings_);
  }
  std::string_view policy_name() const override { return "cors"; }
  http::FilterPhase phase() const override { return http::FilterPhase::kPreflight; }

 private:
  const Settings settings_;
};

class CorsPolicyFactory : public PolicyFactory {
 public:
  std::string name() const override { return "cors"; }
  absl::StatusOr<std::shared_ptr<const http::FilterFactory>> Compile(
      const google::protobuf::Message& message) const override {
    const auto& config = static_cast<const v1::CorsConfig&>(message);
    Settings s;
    for (int i = 0; i < config.origins_size(); ++i) {
      absl::StatusOr<OriginPattern> pattern = ParseOriginPattern(config.origins(i));
      if (!pattern.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("origins[", i, "]: ", std::string(pattern.status().message())));
      }
      switch (pattern->kind) {
        case OriginPattern::Kind::kAny:
          s.any_origin = true;
          break;
        case OriginPattern::Kind::kExact:
          s.exact.push_back(std::move(pattern->value));
          break;
        case OriginPattern::Kind::kRegex: {
          RE2::Options options;
          options.set_log_errors(false);
          auto re = std::make_unique<const RE2>(pattern->value, options);
          if (!re->ok()) {
            return absl::InvalidArgumentError(absl::StrCat("origins[", i, "]: ", re->error()));
          }
          s.regexes.push_back(std::move(re));
          break;
        }
      }
    }
    s.allow_methods =
        config.methods().empty() ? kDefaultMethods : absl::StrJoin(config.methods(), ", ");
    s.allow_headers = absl::StrJoin(config.headers(), ", ");
    s.expose_headers = absl::StrJoin(config.exposed_headers(), ", ");
    s.credentials = config.credentials();
    if (config.has_max_age()) s.max_age = std::to_string(config.max_age());
    s.preflight_continue = config.preflight_continue();
    return std::shared_ptr<const http::FilterFactory>(
        std::make_shared<CorsFilterFactory>(std::move(s)));
  }
};

const bool registered = RegisterPolicyFactory(std::make_unique<CorsPolicyFactory>());

}  // namespace
}  // namespace sluice::policy::cors
