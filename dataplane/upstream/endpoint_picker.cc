#include "dataplane/upstream/endpoint_picker.h"

namespace sluice::upstream {

int EndpointPicker::Pick(const ClusterInfo& cluster) {
  if (cluster.endpoints.empty()) return -1;
  if (cluster.lb_policy == config::v1::Cluster::LEAST_REQUEST) {
    return PickLeastRequest(cluster);
  }
  return PickRoundRobin(cluster);
}

int EndpointPicker::PickRoundRobin(const ClusterInfo& cluster) {
  if (&cluster != last_cluster_) {
    last_state_ = &round_robin_[cluster.name];  // node addresses are stable
    last_cluster_ = &cluster;
  }
  RoundRobinState& state = *last_state_;
  const size_t n = cluster.endpoints.size();
  if (cluster.equal_weights) {
    return static_cast<int>(state.next++ % n);
  }
  if (state.shape != &cluster || state.current.size() != n) {
    // A new version of the cluster: start over (positions do not carry over
    // meaningfully when weights or endpoints change).
    state.current.assign(n, 0);
    state.shape = &cluster;
  }
  int best = 0;
  for (size_t i = 0; i < n; ++i) {
    state.current[i] += cluster.endpoints[i].weight;
    if (state.current[i] > state.current[best]) best = static_cast<int>(i);
  }
  state.current[best] -= cluster.total_weight;
  return best;
}

int EndpointPicker::PickLeastRequest(const ClusterInfo& cluster) {
  const size_t n = cluster.endpoints.size();
  if (n == 1) return 0;
  size_t a = rng_() % n;
  size_t b = rng_() % (n - 1);
  if (b >= a) ++b;
  // Compare active/weight without division: active_a * w_b vs active_b * w_a.
  int64_t active_a = active(cluster.endpoints[a].key);
  int64_t active_b = active(cluster.endpoints[b].key);
  int64_t lhs = active_a * cluster.endpoints[b].weight;
  int64_t rhs = active_b * cluster.endpoints[a].weight;
  if (lhs == rhs) return static_cast<int>(rng_() & 1 ? a : b);
  return static_cast<int>(lhs < rhs ? a : b);
}

void EndpointPicker::RequestFinished(const std::string& endpoint_key) {
  auto it = active_.find(endpoint_key);
  if (it == active_.end()) return;
  if (it->second > 0) --it->second;
}

int64_t EndpointPicker::active(const std::string& endpoint_key) const {
  auto it = active_.find(endpoint_key);
  return it == active_.end() ? 0 : it->second;
}

}  // namespace sluice::upstream
