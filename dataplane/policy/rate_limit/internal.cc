#include "dataplane/policy/rate_limit/internal.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace sluice::policy::rate_limit {
namespace {

absl::Mutex clock_mu(absl::kConstInit);
Clock* test_clock ABSL_GUARDED_BY(clock_mu) = nullptr;

}  // namespace

int64_t MonotonicNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void SetClockForTesting(Clock clock) {
  absl::MutexLock lock(&clock_mu);
  delete test_clock;
  test_clock = clock ? new Clock(std::move(clock)) : nullptr;
}

Clock CurrentClock() {
  absl::MutexLock lock(&clock_mu);
  return test_clock != nullptr ? *test_clock : Clock(&MonotonicNanos);
}

int64_t UnitSeconds(v1::Limit::Unit unit) {
  switch (unit) {
    case v1::Limit::SECOND: return 1;
    case v1::Limit::MINUTE: return 60;
    case v1::Limit::HOUR: return 3600;
    case v1::Limit::DAY: return 86400;
    default: return 0;
  }
}

std::string_view UnitName(v1::Limit::Unit unit) {
  switch (unit) {
    case v1::Limit::SECOND: return "Second";
    case v1::Limit::MINUTE: return "Minute";
    case v1::Limit::HOUR: return "Hour";
    case v1::Limit::DAY: return "Day";
    default: return "";
  }
}

std::string StateIdentity(const v1::RateLimitConfig& config) {
  std::vector<std::pair<int64_t, uint64_t>> limits;  // (seconds, requests)
  for (const v1::Limit& limit : config.limits()) {
    limits.emplace_back(UnitSeconds(limit.per()), limit.requests());
  }
  std::sort(limits.begin(), limits.end());
  // Lengths before names keep any two configs apart, whatever their bytes.
  std::string id = absl::StrCat("scope=", config.scope(), ";name=", config.name().size(), ":",
                                config.name(), ";limits=");
  for (const auto& [seconds, requests] : limits) absl::StrAppend(&id, requests, "/", seconds, "s,");
  absl::StrAppend(&id, ";key=");
  std::vector<int> parts(config.key().begin(), config.key().end());  // a set: order is moot
  if (parts.empty()) parts.push_back(v1::RateLimitConfig::CONSUMER);
  std::sort(parts.begin(), parts.end());
  for (int part : parts) absl::StrAppend(&id, part, ",");
  bool has_header = std::find(config.key().begin(), config.key().end(),
                              v1::RateLimitConfig::HEADER) != config.key().end();
  std::string header = has_header ? config.header_name() : "";
  std::transform(header.begin(), header.end(), header.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string fallback = config.fallback().empty() ? kDefaultFallback : config.fallback();
  absl::StrAppend(&id, ";header=", header.size(), ":", header, ";fallback=", fallback.size(), ":",
                  fallback,
                  ";max_keys=", config.has_max_keys() ? config.max_keys() : kDefaultMaxKeys);
  if (config.scope() == v1::RateLimitConfig::FLEET) {
    const v1::FleetOptions& fleet = config.fleet();
    absl::StrAppend(&id, ";keep_share_for=",
                    fleet.has_keep_share_for() ? fleet.keep_share_for().seconds()
                                               : kDefaultKeepShareForSeconds,
                    "s", fleet.keep_share_for().nanos(), "ns;fallback_limits=");
    std::vector<std::pair<int64_t, uint64_t>> fallbacks;
    for (const v1::Limit& limit : fleet.fallback_limits()) {
      fallbacks.emplace_back(UnitSeconds(limit.per()), limit.requests());
    }
    std::sort(fallbacks.begin(), fallbacks.end());
    for (const auto& [seconds, requests] : fallbacks) {
      absl::StrAppend(&id, requests, "/", seconds, "s,");
    }
  }
  return id;
}

}  // namespace sluice::policy::rate_limit
