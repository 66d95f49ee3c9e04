// The `rate-limit` policy's config rules, registered for every binary that
// validates config.
#include <memory>
#include <string>
#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "dataplane/policy/rate_limit/internal.h"
#include "dataplane/policy/rate_limit/limiter.h"
#include "dataplane/policy/rate_limit/rate_limit_config.pb.h"

namespace sluice::policy::rate_limit {
namespace {

constexpr size_t kMaxKeyParts = 4;
constexpr size_t kMaxNameLength = 64;

bool IsTokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

bool ValidName(const std::string& name) {
  if (name.size() > kMaxNameLength) return false;
  for (char c : name) {
    if (!IsNameChar(c)) return false;
  }
  return true;
}

class RateLimitValidator : public api::PolicyValidator {
 public:
  std::string name() const override { return "rate-limit"; }
  const google::protobuf::Descriptor* config_type() const override {
    return v1::RateLimitConfig::descriptor();
  }
  void ReadRequestFields(const google::protobuf::Message& message,
                         std::vector<std::pair<std::string, std::string>>* fields) const override {
    const auto& config = static_cast<const v1::RateLimitConfig&>(message);
    if (config.header_name().empty()) return;
    for (int part : config.key()) {
      if (part == v1::RateLimitConfig::HEADER) {
        fields->emplace_back("header_name", absl::AsciiStrToLower(config.header_name()));
        return;
      }
    }
  }
  void Validate(const google::protobuf::Message& message,
                std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::RateLimitConfig&>(message);
    ValidateLimits(config, errors);
    ValidateKey(config, errors);
    if (!config.fallback().empty() && !ValidName(config.fallback())) {
      errors->push_back({"fallback", absl::StrCat("1..", kMaxNameLength,
                                                  " characters of A-Z, a-z, 0-9, '.', '_', '-'")});
    }
    if (!ValidName(config.name())) {
      errors->push_back({"name", absl::StrCat("at most ", kMaxNameLength,
                                              " characters of A-Z, a-z, 0-9, '.', '_', '-'")});
    }
    if (config.has_max_keys() && (config.max_keys() < 1 || config.max_keys() > kMaxMaxKeys)) {
      errors->push_back(
          {"max_keys", absl::StrCat("1..", kMaxMaxKeys, ", got ", config.max_keys())});
    }
    if (config.scope() == v1::RateLimitConfig::FLEET) {
      ValidateFleet(config, errors);
    } else if (config.scope() != v1::RateLimitConfig::LOCAL) {
      errors->push_back({"scope", absl::StrCat("unknown scope ", config.scope())});
    } else if (config.has_fleet()) {
      errors->push_back({"fleet", "only with scope: FLEET"});
    }
  }

  // A longer window's limit at or below a shorter one's makes the shorter
  // one dead: each admitted request spends one of both, and the shorter
  // window earns requests back faster, so it can never refuse alone (Kong
  // refuses "The limit for hour cannot be lower than the limit for
  // minute"). Apply only: a stored config with such limits keeps working.
  void ValidateNew(const google::protobuf::Message& message,
                   std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::RateLimitConfig&>(message);
    for (int i = 0; i < config.limits_size(); ++i) {
      const v1::Limit& longer = config.limits(i);
      for (int j = 0; j < config.limits_size(); ++j) {
        const v1::Limit& shorter = config.limits(j);
        if (UnitSeconds(shorter.per()) == 0 ||
            UnitSeconds(shorter.per()) >= UnitSeconds(longer.per()) || longer.requests() < 1 ||
            longer.requests() > shorter.requests()) {
          continue;
        }
        errors->push_back(
            {absl::StrCat("limits[", i, "].requests"),
             absl::StrCat(longer.requests(), " per ", v1::Limit::Unit_Name(longer.per()),
                          " is not more than limits[", j, "]'s ", shorter.requests(), " per ",
                          v1::Limit::Unit_Name(shorter.per()), ": the ",
                          v1::Limit::Unit_Name(shorter.per()),
                          " limit could never refuse a request; drop it or raise this one")});
        break;
      }
    }
  }

 private:
  static void ValidateLimits(const v1::RateLimitConfig& config,
                             std::vector<api::PolicyConfigError>* errors) {
    if (config.limits().empty()) {
      errors->push_back({"limits",
                         "at least one limit is required, e.g. {requests: 100, per: "
                         "MINUTE}"});
      return;
    }
    if (static_cast<size_t>(config.limits_size()) > kMaxLimits) {
      errors->push_back(
          {"limits", absl::StrCat("at most ", kMaxLimits, " limits (one per unit), got ",
                                  config.limits_size())});
    }
    int first_of_unit[5] = {-1, -1, -1, -1, -1};
    for (int i = 0; i < config.limits_size(); ++i) {
      const v1::Limit& limit = config.limits(i);
      std::string field = absl::StrCat("limits[", i, "]");
      int64_t seconds = UnitSeconds(limit.per());
      if (seconds == 0) {
        errors->push_back({field + ".per", "required: SECOND, MINUTE, HOUR or DAY"});
      } else if (int& first = first_of_unit[limit.per()]; first >= 0) {
        errors->push_back(
            {field + ".per",
             absl::StrCat(v1::Limit::Unit_Name(limit.per()), " is limited twice (", "limits[",
                          first, "] and limits[", i, "]); keep one limit per unit")});
      } else {
        first = i;
      }
      if (limit.requests() < 1) {
        errors->push_back({field + ".requests", "must be at least 1"});
      } else if (seconds > 0 &&
                 limit.requests() > kMaxRequestsPerSecond * static_cast<uint64_t>(seconds)) {
        errors->push_back(
            {field + ".requests",
             absl::StrCat("at most ", kMaxRequestsPerSecond * static_cast<uint64_t>(seconds),
                          " per ", v1::Limit::Unit_Name(limit.per()), " (", kMaxRequestsPerSecond,
                          " a second), got ", limit.requests())});
      }
    }
  }

  static void ValidateFleet(const v1::RateLimitConfig& config,
                            std::vector<api::PolicyConfigError>* errors) {
    const v1::FleetOptions& fleet = config.fleet();
    if (fleet.has_keep_share_for()) {
      const int64_t seconds = fleet.keep_share_for().seconds();
      const int32_t nanos = fleet.keep_share_for().nanos();
      if (seconds < kMinKeepShareForSeconds || seconds > kMaxKeepShareForSeconds ||
          (seconds == kMaxKeepShareForSeconds && nanos > 0) || nanos < 0) {
        errors->push_back({"fleet.keep_share_for",
                           absl::StrCat(kMinKeepShareForSeconds, "s..", kMaxKeepShareForSeconds,
                                        "s, got ",
                                        static_cast<double>(seconds) + nanos / 1e9, "s")});
      }
    }
    bool seen[5] = {};
    for (int i = 0; i < fleet.fallback_limits_size(); ++i) {
      const v1::Limit& fallback = fleet.fallback_limits(i);
      std::string field = absl::StrCat("fleet.fallback_limits[", i, "]");
      const v1::Limit* limit = nullptr;
      for (const v1::Limit& l : config.limits()) {
        if (l.per() == fallback.per() && UnitSeconds(l.per()) > 0) limit = &l;
      }
      if (limit == nullptr) {
        errors->push_back({field + ".per", "must be the unit of one of `limits`"});
        continue;
      }
      if (seen[fallback.per()]) {
        errors->push_back({field + ".per", absl::StrCat(v1::Limit::Unit_Name(fallback.per()),
                                                        " has two fallback limits")});
      }
      seen[fallback.per()] = true;
      if (fallback.requests() < 1 || fallback.requests() > limit->requests()) {
        errors->push_back(
            {field + ".requests", absl::StrCat("1..", limit->requests(),
                                               " (the fleet's limit; never unlimited, never "
                                               "zero), got ",
                                               fallback.requests())});
      }
    }
  }

  static void ValidateKey(const v1::RateLimitConfig& config,
                          std::vector<api::PolicyConfigError>* errors) {
    if (static_cast<size_t>(config.key_size()) > kMaxKeyParts) {
      errors->push_back(
          {"key", absl::StrCat("at most ", kMaxKeyParts, " parts, got ", config.key_size())});
    }
    bool seen[5] = {};
    bool has_header = false;
    for (int i = 0; i < config.key_size(); ++i) {
      int part = config.key(i);
      std::string field = absl::StrCat("key[", i, "]");
      if (part < v1::RateLimitConfig::CONSUMER || part > v1::RateLimitConfig::ROUTE) {
        errors->push_back({field, "one of CONSUMER, CLIENT_IP, HEADER, ROUTE"});
        continue;
      }
      if (seen[part]) {
        errors->push_back({field, absl::StrCat(v1::RateLimitConfig::KeyPart_Name(config.key(i)),
                                               " is listed twice")});
      }
      seen[part] = true;
      has_header = has_header || part == v1::RateLimitConfig::HEADER;
    }
    const std::string& header = config.header_name();
    bool token = !header.empty() && header.size() <= kMaxNameLength;
    for (char c : header) token = token && IsTokenChar(c);
    if (has_header && !token) {
      errors->push_back(
          {"header_name",
           absl::StrCat(header.empty() ? "required with HEADER in key: " : "", "1..",
                        kMaxNameLength, " header-name characters, got \"", header, "\"")});
    } else if (!has_header && !header.empty()) {
      errors->push_back({"header_name", "set, but key has no HEADER part"});
    }
  }
};

const bool registered = api::RegisterPolicyValidator(std::make_unique<RateLimitValidator>());

}  // namespace
}  // namespace sluice::policy::rate_limit
