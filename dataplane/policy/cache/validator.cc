// The `cache` policy's config rules, registered for every binary that
// validates config.
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "dataplane/policy/cache/cache_config.pb.h"
#include "dataplane/policy/cache/internal.h"

namespace sluice::policy::cache {
namespace {

constexpr size_t kMaxQueryParamLength = 128;
constexpr size_t kMaxHeaderNameLength = 64;

bool IsTokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsToken(const std::string& s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

// type/subtype or type/*, both tokens.
bool IsMediaRange(const std::string& s) {
  size_t slash = s.find('/');
  if (slash == std::string::npos || s.size() > 255) return false;
  std::string type = s.substr(0, slash), sub = s.substr(slash + 1);
  return IsToken(type, 127) && (sub == "*" || IsToken(sub, 127));
}

using Errors = std::vector<api::PolicyConfigError>;

void CheckDuration(const google::protobuf::Duration& d, bool present,
                   const std::string& field, int64_t max_seconds,
                   Errors* errors) {
  if (!present) return;
  if (d.seconds() < 0 || d.nanos() < 0) {
    errors->push_back({field, "must not be negative"});
  } else if (d.nanos() >= 1000000000) {
    errors->push_back({field, "nanos must be below 1s"});
  } else if (d.seconds() > max_seconds ||
             (d.seconds() == max_seconds && d.nanos() > 0)) {
    errors->push_back({field, absl::StrCat("at most ", max_seconds, "s, got ",
                                           d.seconds(), "s")});
  }
}

class CacheValidator : public api::PolicyValidator {
 public:
  std::string name() const override { return kPolicyName; }
  const google::protobuf::Descriptor* config_type() const override {
    return v1::CacheConfig::descriptor();
  }
  void Validate(const google::protobuf::Message& message,
                Errors* errors) const override {
    const auto& config = static_cast<const v1::CacheConfig&>(message);
    ValidateMethods(config, errors);
    ValidateStatuses(config, errors);
    ValidateContentTypes(config, errors);
    ValidateKey(config, errors);
    CheckDuration(config.default_ttl(), config.has_default_ttl(), "default_ttl",
                  kMaxDurationSeconds, errors);
    CheckDuration(config.lock_timeout(), config.has_lock_timeout(),
                  "lock_timeout", kMaxLockTimeoutSeconds, errors);
    CheckDuration(config.stale_while_revalidate(),
                  config.has_stale_while_revalidate(), "stale_while_revalidate",
                  kMaxDurationSeconds, errors);
    CheckDuration(config.stale_if_error(), config.has_stale_if_error(),
                  "stale_if_error", kMaxDurationSeconds, errors);
    if (config.has_max_object_bytes() &&
        (config.max_object_bytes() < 1 ||
         config.max_object_bytes() > kMaxMaxObjectBytes)) {
      errors->push_back(
          {"max_object_bytes",
           absl::StrCat("1..", kMaxMaxObjectBytes, " (64 MiB), got ",
                        config.max_object_bytes())});
    }
  }

  // Only a GET stores: `methods: [HEAD]` alone would cache nothing.
  // Apply only: a stored config with it keeps working (as a cache that
  // never hits).
  void ValidateNew(const google::protobuf::Message& message, Errors* errors) const override {
    const auto& config = static_cast<const v1::CacheConfig&>(message);
    if (config.methods_size() == 0) return;
    for (const std::string& method : config.methods()) {
      if (absl::AsciiStrToUpper(method) == "GET") return;
    }
    errors->push_back({"methods",
                       "without GET nothing is ever stored (a HEAD is answered from what a "
                       "GET stored): add GET"});
  }

 private:
  static void ValidateMethods(const v1::CacheConfig& config, Errors* errors) {
    std::set<std::string> seen;
    for (int i = 0; i < config.methods_size(); ++i) {
      std::string field = absl::StrCat("methods[", i, "]");
      std::string method = absl::AsciiStrToUpper(config.methods(i));
      if (method != "GET" && method != "HEAD") {
        errors->push_back(
            {field, absl::StrCat("'", config.methods(i),
                                 "' cannot be cached: only GET and HEAD")});
      } else if (!seen.insert(method).second) {
        errors->push_back({field, absl::StrCat(method, " is listed twice")});
      }
    }
  }

  static void ValidateStatuses(const v1::CacheConfig& config, Errors* errors) {
    std::set<uint32_t> seen;
    for (int i = 0; i < config.statuses_size(); ++i) {
      std::string field = absl::StrCat("statuses[", i, "]");
      uint32_t status = config.statuses(i);
      if (status < 100 || status > 599) {
        errors->push_back(
            {field, absl::StrCat(status, " is not an HTTP status")});
      } else if (status == 206 || status == 304 || status < 200) {
        errors->push_back(
            {field,
             absl::StrCat(status,
                          " cannot be cached (only whole final responses)")});
      } else if (!seen.insert(status).second) {
        errors->push_back({field, absl::StrCat(status, " is listed twice")});
      }
    }
  }

  static void ValidateContentTypes(const v1::CacheConfig& config,
                                   Errors* errors) {
    if (static_cast<size_t>(config.content_types_size()) > kMaxContentTypes) {
      errors->push_back(
          {"content_types", absl::StrCat("at most ", kMaxContentTypes, ", got ",
                                         config.content_types_size())});
    }
    for (int i = 0; i < config.content_types_size(); ++i) {
      if (!IsMediaRange(config.content_types(i))) {
        errors->push_back(
            {absl::StrCat("content_types[", i, "]"),
             absl::StrCat("'", config.content_types(i),
                          "' is not a media type (type/subtype or type/*)")});
      }
    }
  }

  static void ValidateKey(const v1::CacheConfig& config, Errors* errors) {
    if (static_cast<size_t>(config.query_params_size()) > kMaxQueryParams) {
      errors->push_back(
          {"query_params", absl::StrCat("at most ", kMaxQueryParams, ", got ",
                                        config.query_params_size())});
    }
    std::set<std::string> params;
    for (int i = 0; i < config.query_params_size(); ++i) {
      const std::string& p = config.query_params(i);
      std::string field = absl::StrCat("query_params[", i, "]");
      if (p.empty() || p.size() > kMaxQueryParamLength ||
          p.find_first_of("&=# ") != std::string::npos) {
        errors->push_back(
            {field, absl::StrCat("1..", kMaxQueryParamLength,
                                 " bytes without '&', '=', '#' or space")});
      } else if (!params.insert(p).second) {
        errors->push_back({field, absl::StrCat("'", p, "' is listed twice")});
      }
    }
    if (static_cast<size_t>(config.key_headers_size()) > kMaxKeyHeaders) {
      errors->push_back(
          {"key_headers", absl::StrCat("at most ", kMaxKeyHeaders, ", got ",
                                       config.key_headers_size())});
    }
    std::set<std::string> headers;
    for (int i = 0; i < config.key_headers_size(); ++i) {
      const std::string& h = config.key_headers(i);
      std::string field = absl::StrCat("key_headers[", i, "]");
      if (!IsToken(h, kMaxHeaderNameLength)) {
        errors->push_back(
            {field, absl::StrCat("'", h, "' is not a header name (1..",
                                 kMaxHeaderNameLength, " token characters)")});
      } else if (!headers.insert(absl::AsciiStrToLower(h)).second) {
        errors->push_back({field, absl::StrCat("'", h, "' is listed twice")});
      }
    }
  }
};

const bool registered =
    api::RegisterPolicyValidator(std::make_unique<CacheValidator>());

}  // namespace
}  // namespace sluice::policy::cache
