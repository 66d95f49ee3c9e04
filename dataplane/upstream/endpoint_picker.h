// EndpointPicker: chooses an endpoint of a cluster for each request, per
// worker.
//
// Policies: ROUND_ROBIN (smooth weighted round robin, as nginx does it),
// LEAST_REQUEST (power of two choices over this worker's requests in flight,
// relative to weight), RANDOM (weighted), RING_HASH and MAGLEV (consistent
// hashing of a per-request key, see consistent_hash.h).
//
// Health: only usable endpoints are chosen (healthy by active checks and not
// ejected by outlier detection, see endpoint_state.h). When fewer than the
// cluster's panic threshold are usable, every endpoint is a candidate again
// ("panic", as Envoy does); with a threshold of 0 and nothing usable, Pick()
// returns -1 (503).
//
// Slow start (ClusterInfo::slow_start_window_ns): while an endpoint is
// within the window of joining the rotation, its weight counts as
// weight * max(min percent, time since joining / window); the weights are
// then compared in thousandths, so that 10% of a weight of 1 is a weight.
//
// One per worker; worker thread only.
#ifndef SLUICE_DATAPLANE_UPSTREAM_ENDPOINT_PICKER_H_
#define SLUICE_DATAPLANE_UPSTREAM_ENDPOINT_PICKER_H_

#include <cstdint>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "dataplane/upstream/cluster.h"

namespace sluice::upstream {

class EndpointPicker {
 public:
  explicit EndpointPicker(uint64_t seed) : rng_(seed) {}

  // Index into cluster.endpoints, or -1 when no endpoint may be used.
  // `hash` keys RING_HASH and MAGLEV. `exclude` (the endpoints of a
  // request's failed tries, as nginx's `tried` and Envoy's previous_hosts,
  // oldest try first) are avoided while another usable candidate is left,
  // the most recently tried first.
  int Pick(const ClusterInfo& cluster, uint64_t hash = 0,
           const std::vector<int>* exclude = nullptr);

  // Requests in flight per endpoint pool key (cluster and endpoint) on this
  // worker, maintained by the caller. The counter's address is stable, so a request can keep it.
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
    std::vector<int64_t> current;        // smooth WRR current weights
    std::vector<int64_t> retry_current;  // and those of retries off their turn
    uint64_t next = 0;                   // equal weights: plain rotation
    uint64_t retry_next = 0;             // and the rotation of retries
    uint64_t shape = 0;  // ClusterInfo::uid the weights were built for
    std::vector<int64_t> weights;  // and the endpoints' weights then
    bool ramping = false;          // `current` counts slow-start weights
  };
  // The weights of this pick while some endpoint is in its slow start (in
  // thousandths of a weight), or nullptr.
  const std::vector<int64_t>* SlowStartWeights(const ClusterInfo& cluster);
  // `retry`: the pick of a retry (tried endpoints excluded).
  int PickRoundRobin(const ClusterInfo& cluster, const std::vector<char>* allowed,
                     const std::vector<int64_t>* ramp, bool retry);
  int PickLeastRequest(const ClusterInfo& cluster, const std::vector<char>* allowed, int count,
                       const std::vector<int64_t>* ramp);
  int PickRandom(const ClusterInfo& cluster, const std::vector<char>* allowed,
                 const std::vector<int64_t>* ramp);

  std::mt19937_64 rng_;
  std::unordered_map<std::string, RoundRobinState> round_robin_;  // by cluster name
  // The last cluster picked from (ClusterInfo::uid) and its state: most
  // requests repeat it.
  uint64_t last_cluster_ = 0;
  RoundRobinState* last_state_ = nullptr;
  std::unordered_map<std::string, int64_t> active_;  // by endpoint pool key
  std::vector<char> allowed_;                         // scratch: candidates of one pick
  std::vector<int64_t> ramp_;                         // scratch: slow-start weights of one pick
};

// The share of its weight an endpoint takes in its slow start, in
// thousandths: 1000 once the window has passed (or without slow start).
int64_t SlowStartPermille(const ClusterInfo& cluster, const EndpointState& state, int64_t now_ns);

// Whether `usable` of the cluster's endpoints are too few, under its
// panic_threshold_percent (Pick() then spreads a first try over all; the
// admin page's /clusters says so).
inline bool InPanic(const ClusterInfo& cluster, size_t usable) {
  return static_cast<uint64_t>(usable) * 100 <
         static_cast<uint64_t>(cluster.endpoints.size()) * cluster.panic_threshold_percent;
}

// Reports the outcome of one try to outlier detection and the endpoint's
// counters: `status` is the response status, or 0 for a connect failure,
// reset or timeout. Thread-safe (atomics); ejects when a threshold is hit and
// the cluster's max_ejection_percent allows (one endpoint always may be).
void ReportOutcome(const ClusterInfo& cluster, const EndpointInfo& endpoint, int status);

}  // namespace sluice::upstream

#endif  // SLUICE_DATAPLANE_UPSTREAM_ENDPOINT_PICKER_H_
