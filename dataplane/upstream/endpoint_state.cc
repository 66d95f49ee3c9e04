#include "dataplane/upstream/endpoint_state.h"

namespace sluice::upstream {

std::shared_ptr<EndpointState> HealthRegistry::Endpoint(const std::string& cluster,
                                                        const std::string& endpoint_key,
                                                        Health initial) {
  absl::MutexLock lock(&mu_);
  auto& slot = endpoints_[{cluster, endpoint_key}];
  if (!slot) {
    slot = std::make_shared<EndpointState>();
    slot->health.store(initial);
  }
  return slot;
}

std::shared_ptr<ClusterState> HealthRegistry::Cluster(const std::string& cluster) {
  absl::MutexLock lock(&mu_);
  auto& slot = clusters_[cluster];
  if (!slot) slot = std::make_shared<ClusterState>();
  return slot;
}

void HealthRegistry::Prune() {
  absl::MutexLock lock(&mu_);
  for (auto it = endpoints_.begin(); it != endpoints_.end();) {
    it = it->second.use_count() == 1 ? endpoints_.erase(it) : std::next(it);
  }
  for (auto it = clusters_.begin(); it != clusters_.end();) {
    it = it->second.use_count() == 1 ? clusters_.erase(it) : std::next(it);
  }
}

}  // namespace sluice::upstream
