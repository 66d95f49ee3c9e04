// What the `rate-limit` policy's validator, filter and tests share: the
// config's defaults and bounds, the units, the counters' identity, and the
// clock the filter reads (replaceable by tests).
//
// Not for other packages. SetClockForTesting: tests only, before the
// policies it should apply to are compiled; the rest is pure and
// thread-safe.
#ifndef SLUICE_DATAPLANE_POLICY_RATE_LIMIT_INTERNAL_H_
#define SLUICE_DATAPLANE_POLICY_RATE_LIMIT_INTERNAL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "dataplane/policy/rate_limit/rate_limit_config.pb.h"

namespace sluice::policy::rate_limit {

inline constexpr uint64_t kDefaultMaxKeys = 100000;
inline constexpr uint64_t kMaxMaxKeys = 10000000;
inline constexpr uint64_t kMaxRequestsPerSecond = 1000000;
inline constexpr char kDefaultFallback[] = "unidentified";
// scope FLEET: fleet.keep_share_for's default and bounds.
inline constexpr int64_t kDefaultKeepShareForSeconds = 30;
inline constexpr int64_t kMinKeepShareForSeconds = 1;
inline constexpr int64_t kMaxKeepShareForSeconds = 3600;

// Nanoseconds on a monotonic clock.
using Clock = std::function<int64_t()>;

// The process's steady clock.
int64_t MonotonicNanos();
// The clock policies compiled from now on read: MonotonicNanos unless a
// test replaced it. nullptr restores it.
void SetClockForTesting(Clock clock);
Clock CurrentClock();

// Seconds in a unit; 0 for UNIT_UNSPECIFIED and unknown values.
int64_t UnitSeconds(v1::Limit::Unit unit);
// "Second", "Minute", "Hour", "Day" (as in X-RateLimit-Limit-Minute).
std::string_view UnitName(v1::Limit::Unit unit);

// The config's parts that give counters their meaning, with defaults
// filled in and limits in unit order, as one string: policies (of any
// config version) with the same identity share counters. `headers` and
// `draft_headers` are not part of it; `fleet` is, with scope FLEET.
std::string StateIdentity(const v1::RateLimitConfig& config);

}  // namespace sluice::policy::rate_limit

#endif  // SLUICE_DATAPLANE_POLICY_RATE_LIMIT_INTERNAL_H_
