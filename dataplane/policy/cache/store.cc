#include "dataplane/policy/cache/store.h"

#include "dataplane/policy/cache/response_store.h"

namespace sluice::policy::cache {

static_assert(kDefaultMemoryBudgetBytes == ResponseStore::kDefaultBudget);

void SetMemoryBudget(uint64_t bytes) {
  ResponseStore::Global().SetBudget(bytes);
}

void SetStatsStore(stats::StatsStore* stats) {
  ResponseStore::Global().SetStats(stats);
  SetResponseStats(stats);
}

void InstallPurgeHandler() { ResponseStore::Global(); }

}  // namespace sluice::policy::cache
