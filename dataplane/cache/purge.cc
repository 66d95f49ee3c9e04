#include "dataplane/cache/purge.h"

#include <utility>

#include "absl/synchronization/mutex.h"

namespace sluice::cache {
namespace {

struct Slot {
  absl::Mutex mu;
  PurgeHandler handler ABSL_GUARDED_BY(mu);
};

Slot& GetSlot() {
  static Slot* slot = new Slot;  // never destroyed: used until exit
  return *slot;
}

}  // namespace

void SetPurgeHandler(PurgeHandler handler) {
  Slot& slot = GetSlot();
  absl::MutexLock lock(&slot.mu);
  slot.handler = std::move(handler);
}

uint64_t Purge(const PurgeSelector& selector) {
  PurgeHandler handler;
  {
    Slot& slot = GetSlot();
    absl::MutexLock lock(&slot.mu);
    handler = slot.handler;
  }
  return handler ? handler(selector) : 0;
}

}  // namespace sluice::cache
