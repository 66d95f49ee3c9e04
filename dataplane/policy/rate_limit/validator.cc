// The `rate-limit` policy's config rules, registered for every binary that
// validates config.
#include <map>
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
constexpr int kMaxOverrides = 16;
constexpr int kMaxOverrideNames = 64;  // consumers and groups of one override
constexpr size_t kMaxConsumerNameLength = 128;
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
    ValidateLimits(config.limits(), "", errors);
    ValidateKey(config, errors);
    ValidateOverrides(config, errors);
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
    RefuseDeadLimits(config.limits(), "", errors);
    for (int o = 0; o < config.overrides_size(); ++o) {
      RefuseDeadLimits(config.overrides(o).limits(), absl::StrCat("overrides[", o, "]."), errors);
    }
  }

 private:
  using Limits = google::protobuf::RepeatedPtrField<v1::Limit>;

  // `prefix` names the list's owner in errors ("" or "overrides[N].").
  static void RefuseDeadLimits(const Limits& limits, const std::string& prefix,
                               std::vector<api::PolicyConfigError>* errors) {
    for (int i = 0; i < limits.size(); ++i) {
      const v1::Limit& longer = limits[i];
      for (int j = 0; j < limits.size(); ++j) {
        const v1::Limit& shorter = limits[j];
        if (UnitSeconds(shorter.per()) == 0 ||
            UnitSeconds(shorter.per()) >= UnitSeconds(longer.per()) || longer.requests() < 1 ||
            longer.requests() > shorter.requests()) {
          continue;
        }
        errors->push_back(
            {absl::StrCat(prefix, "limits[", i, "].requests"),
             absl::StrCat(longer.requests(), " per ", v1::Limit::Unit_Name(longer.per()),
                          " is not more than limits[", j, "]'s ", shorter.requests(), " per ",
                          v1::Limit::Unit_Name(shorter.per()), ": the ",
                          v1::Limit::Unit_Name(shorter.per()),
                          " limit could never refuse a request; drop it or raise this one")});
        break;
      }
    }
  }

  static void ValidateLimits(const Limits& limits, const std::string& prefix,
                             std::vector<api::PolicyConfigError>* errors) {
    if (limits.empty()) {
      errors->push_back({prefix + "limits",
                         "at least one limit is required, e.g. {requests: 100, per: "
                         "MINUTE}"});
      return;
    }
    if (static_cast<size_t>(limits.size()) > kMaxLimits) {
      errors->push_back(
          {prefix + "limits", absl::StrCat("at most ", kMaxLimits, " limits (one per unit), got ",
                                           limits.size())});
    }
    int first_of_unit[5] = {-1, -1, -1, -1, -1};
    for (int i = 0; i < limits.size(); ++i) {
      const v1::Limit& limit = limits[i];
      std::string field = absl::StrCat(prefix, "limits[", i, "]");
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

  // Each override: names (consumers: a Consumer's name characters; groups:
  // a group's), each consumer and group in one override only (the first
  // would take them all), and its limits as the policy's.
  static void ValidateOverrides(const v1::RateLimitConfig& config,
                                std::vector<api::PolicyConfigError>* errors) {
    if (config.overrides_size() > kMaxOverrides) {
      errors->push_back({"overrides", absl::StrCat("at most ", kMaxOverrides, " overrides, got ",
                                                   config.overrides_size())});
      return;
    }
    std::map<std::string, std::string, std::less<>> seen;  // "consumer x" -> field
    for (int o = 0; o < config.overrides_size(); ++o) {
      const v1::Override& entry = config.overrides(o);
      const std::string at = absl::StrCat("overrides[", o, "]");
      if (entry.consumers().empty() && entry.groups().empty()) {
        errors->push_back({at, "names no one: give consumers, groups or both"});
      }
      if (entry.consumers_size() + entry.groups_size() > kMaxOverrideNames) {
        errors->push_back({at, absl::StrCat("at most ", kMaxOverrideNames,
                                            " consumers and groups in all")});
      }
      for (const char* list : {"consumers", "groups"}) {
        const bool groups = std::string_view(list) == "groups";
        const auto& names = groups ? entry.groups() : entry.consumers();
        for (int i = 0; i < names.size(); ++i) {
          const std::string field = absl::StrCat(at, ".", list, "[", i, "]");
          const std::string& name = names[i];
          bool fine = !name.empty() && name.size() <= kMaxConsumerNameLength;
          for (char c : name) fine = fine && (IsNameChar(c) || (groups && c == '@'));
          if (!fine) {
            errors->push_back(
                {field, absl::StrCat("'", name, "' is no ", groups ? "group" : "consumer",
                                     " name (1..", kMaxConsumerNameLength,
                                     " letters, digits, '-', '_', '.'", groups ? ", '@'" : "",
                                     ")")});
            continue;
          }
          auto [it, added] = seen.emplace(absl::StrCat(groups ? "group " : "consumer ", name),
                                          field);
          if (!added) {
            errors->push_back({field, absl::StrCat(groups ? "group '" : "consumer '", name,
                                                   "' is named in ", it->second,
                                                   " already (the first override that names "
                                                   "a caller gives its limits)")});
          }
        }
      }
      ValidateLimits(entry.limits(), at + ".", errors);
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
