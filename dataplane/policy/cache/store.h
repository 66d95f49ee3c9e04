// The proxy's response cache (the `cache` policy's store), as the proxy's
// main sees it: one store per process, shared by every worker, every route
// with a `cache` policy and every config version.
//
// Call from main, before the workers start (each may be called again
// later; thread-safe):
//   SetMemoryBudget(flag_cache_memory_mb << 20);   // --cache-memory-mb
//   SetStatsStore(&stats);                          // the metrics
//   InstallPurgeHandler();                          // `sluicectl cache purge`
// The store is made on first use (by these calls, or when a `cache` policy
// first compiles), and making it installs the purge handler
// (dataplane/cache/purge.h); InstallPurgeHandler() only makes that happen
// at start.
#ifndef SLUICE_DATAPLANE_POLICY_CACHE_STORE_H_
#define SLUICE_DATAPLANE_POLICY_CACHE_STORE_H_

#include <cstdint>

#include "dataplane/stats/stats.h"

namespace sluice::policy::cache {

inline constexpr uint64_t kDefaultMemoryBudgetBytes = uint64_t{64} << 20;

// The bytes all cached responses may take together (bodies, fields and
// keys; default 64 MiB). Lowering it evicts, least recently used first, at
// the next store.
void SetMemoryBudget(uint64_t bytes);

// Where the cache's metrics go: sluice_cache_responses_total{route,status}
// (status: hit, miss, bypass, expired, stale, revalidated),
// sluice_cache_bytes, sluice_cache_entries, sluice_cache_evictions_total.
// nullptr (the default): none. `stats` must outlive the process's use of
// the cache.
void SetStatsStore(stats::StatsStore* stats);

// Makes the store now, installing its purge handler.
void InstallPurgeHandler();

}  // namespace sluice::policy::cache

#endif  // SLUICE_DATAPLANE_POLICY_CACHE_STORE_H_
