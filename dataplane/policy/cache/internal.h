// What the `cache` policy's validator, filter and tests share: the
// config's defaults and bounds, the entries' identity, and the clock the
// filter and the store read (replaceable by tests).
//
// Not for other packages. SetClockForTesting: tests only, before the
// policies it should apply to are compiled; the rest is pure and
// thread-safe.
#ifndef SLUICE_DATAPLANE_POLICY_CACHE_INTERNAL_H_
#define SLUICE_DATAPLANE_POLICY_CACHE_INTERNAL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/policy/cache/cache_config.pb.h"

namespace sluice::policy::cache {

inline constexpr char kPolicyName[] = "cache";
inline constexpr uint64_t kDefaultMaxObjectBytes = uint64_t{1} << 20;
inline constexpr uint64_t kMaxMaxObjectBytes = uint64_t{64} << 20;
inline constexpr int64_t kDefaultLockTimeoutSeconds = 5;
inline constexpr int64_t kMaxLockTimeoutSeconds = 60;
inline constexpr int64_t kMaxDurationSeconds = 365 * 86400;
inline constexpr int kDefaultStatuses[] = {200, 203, 204, 300, 301, 308,
                                           404, 405, 410, 414, 501};
inline constexpr size_t kMaxContentTypes = 32;
inline constexpr size_t kMaxQueryParams = 32;
inline constexpr size_t kMaxKeyHeaders = 16;

// Nanoseconds since the Unix epoch (the cache compares with Date and
// Expires, so it reads the wall clock).
using Clock = std::function<int64_t()>;

int64_t WallNanos();
// The clock policies compiled from now on (and the coalescing deadlines)
// read: WallNanos unless a test replaced it. nullptr restores it.
void SetClockForTesting(Clock clock);
Clock CurrentClock();

// The config serialized deterministically: policies (of any config
// version) with the same identity share entries; any change of the policy
// starts from an empty cache for it.
std::string StateIdentity(const v1::CacheConfig& config);

// A query parameter's name as sent (percent-encoded, `+` for a space, as
// frameworks decode it) is `name`: `%70age` is `page`.
bool QueryNameIs(std::string_view sent, std::string_view name);

// The path and query as the cache key holds them: the path, then the whole
// query, or with `query_params` (sorted) only those parameters, by name
// (`/a?sort=x&page=2&utm=y` with [page, sort] is `/a?page=2&sort=x`); no
// `?` when nothing is left. What `cache purge --path` compares.
std::string KeyedPath(std::string_view path_and_query,
                      const std::vector<std::string>& query_params);

}  // namespace sluice::policy::cache

#endif  // SLUICE_DATAPLANE_POLICY_CACHE_INTERNAL_H_
