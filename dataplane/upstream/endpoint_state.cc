#include "dataplane/upstream/endpoint_state.h"

namespace sluice::upstream {

template <typename T>
std::shared_ptr<T> HealthRegistry::HandOut(const std::shared_ptr<T>& slot) {
  // The deleter drops its reference to the slot before it counts, so that a
  // walk that sees the count sees the slot unreferenced too.
  return std::shared_ptr<T>(slot.get(),
                            [slot = std::shared_ptr<T>(slot), released = released_](T*) mutable {
                              slot.reset();
                              released->fetch_add(1, std::memory_order_release);
                            });
}

std::shared_ptr<EndpointState> HealthRegistry::Endpoint(const std::string& cluster,
                                                        const std::string& endpoint_key,
                                                        Health initial, bool joins) {
  absl::MutexLock lock(&mu_);
  auto& slot = endpoints_[{cluster, endpoint_key}];
  if (!slot) {
    slot = std::make_shared<EndpointState>();
    slot->health.store(initial);
    if (joins) slot->joined_ns.store(NowNanos());
  }
  return HandOut(slot);
}

bool HealthRegistry::KnowsCluster(const std::string& cluster) {
  absl::MutexLock lock(&mu_);
  return clusters_.count(cluster) != 0;
}

std::shared_ptr<ClusterState> HealthRegistry::Cluster(const std::string& cluster) {
  absl::MutexLock lock(&mu_);
  auto& slot = clusters_[cluster];
  if (!slot) slot = std::make_shared<ClusterState>();
  return HandOut(slot);
}

void HealthRegistry::Prune() {
  if (released_->exchange(0, std::memory_order_acquire) == 0) return;
  absl::MutexLock lock(&mu_);
  for (auto it = endpoints_.begin(); it != endpoints_.end();) {
    it = it->second.use_count() == 1 ? endpoints_.erase(it) : std::next(it);
  }
  for (auto it = clusters_.begin(); it != clusters_.end();) {
    it = it->second.use_count() == 1 ? clusters_.erase(it) : std::next(it);
  }
}

}  // namespace sluice::upstream
