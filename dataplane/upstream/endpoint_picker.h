// EndpointPicker: chooses an endpoint of a cluster for each request, per
// worker. Round robin is smooth weighted round robin (as nginx does it);
// least request is the power of two choices over requests in flight on this
// worker, weighted by endpoint weight.
//
// The seam for health: Pick() skips endpoints for which `usable` returns
// false (health checks and outlier detection plug in there).
//
// One per worker; worker thread only.
#ifndef SLUICE_DATAPLANE_UPSTREAM_ENDPOINT_PICKER_H_
#define SLUICE_DATAPLANE_UPSTREAM_ENDPOINT_PICKER_H_

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "dataplane/upstream/cluster.h"

namespace sluice::upstream {

class EndpointPicker {
 public:
  explicit EndpointPicker(uint64_t seed) : rng_(seed) {}

  // Index into cluster.endpoints, or -1 when no endpoint is usable.
  int Pick(const ClusterInfo& cluster);

  // Requests in flight per endpoint key, maintained by the caller. The
  // counter's address is stable, so a request can keep it instead of looking
  // the key up twice.
  int64_t* ActiveCounter(const std::string& endpoint_key) { return &active_[endpoint_key]; }
  void RequestStarted(const std::string& endpoint_key) { ++active_[endpoint_key]; }
  void RequestFinished(const std::string& endpoint_key);
  int64_t active(const std::string& endpoint_key) const;
  // Forgets counters of endpoints that are gone and have nothing in flight.
  template <typename KeySet>
  void Prune(const KeySet& keep) {
    for (auto it = active_.begin(); it != active_.end();) {
      it = (it->second == 0 && !keep.count(it->first)) ? active_.erase(it) : std::next(it);
    }
  }

  uint64_t Random() { return rng_(); }

 private:
  struct RoundRobinState {
    std::vector<int64_t> current;  // smooth WRR current weights
    uint64_t next = 0;             // equal weights: plain rotation
    const ClusterInfo* shape = nullptr;  // endpoints the state was built for
  };
  int PickRoundRobin(const ClusterInfo& cluster);
  int PickLeastRequest(const ClusterInfo& cluster);

  std::mt19937_64 rng_;
  std::unordered_map<std::string, RoundRobinState> round_robin_;  // by cluster name
  // The last cluster picked from and its state: most requests repeat it.
  const ClusterInfo* last_cluster_ = nullptr;
  RoundRobinState* last_state_ = nullptr;
  std::unordered_map<std::string, int64_t> active_;               // by endpoint key
};

}  // namespace sluice::upstream

#endif  // SLUICE_DATAPLANE_UPSTREAM_ENDPOINT_PICKER_H_
