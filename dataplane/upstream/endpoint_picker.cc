#include "dataplane/upstream/endpoint_picker.h"

#include <algorithm>

#include "common/log.h"

namespace sluice::upstream {

int EndpointPicker::Pick(const ClusterInfo& cluster, uint64_t hash,
                         const std::vector<int>* exclude) {
  const int n = static_cast<int>(cluster.endpoints.size());
  if (n == 0) return -1;
  const std::vector<char>* allowed = nullptr;  // nullptr: every endpoint
  int count = n;
  const bool excluding = exclude != nullptr && !exclude->empty();
  if (cluster.health_check.enabled || cluster.outlier.enabled || excluding) {
    const int64_t now = NowNanos();
    allowed_.assign(static_cast<size_t>(n), 1);
    int usable = 0;
    for (int i = 0; i < n; ++i) {
      allowed_[i] = cluster.endpoints[i].state->usable(now) ? 1 : 0;
      usable += allowed_[i];
    }
    bool panic = InPanic(cluster, static_cast<size_t>(usable));
    if (panic && excluding) {
      // A retry goes to a usable endpoint it has not tried when there is
      // one, panic or not: spread over all, it kept landing on the other
      // dead ones (1 live of 3: half the requests got 502 after their
      // connect-failure retry), as nginx's proxy_next_upstream would not.
      for (int i = 0; i < n && panic; ++i) {
        if (allowed_[i] && std::find(exclude->begin(), exclude->end(), i) == exclude->end()) {
          panic = false;
        }
      }
    }
    if (panic) {
      // Panic: too few usable endpoints; spread over all rather than overload them.
      std::fill(allowed_.begin(), allowed_.end(), 1);
      usable = n;
      cluster.stats.panic->Inc();
    }
    if (usable == 0) return -1;
    if (excluding) {
      // Newest first: when every usable endpoint was tried, the ones tried
      // longest ago stay candidates, never the one that just failed.
      for (auto it = exclude->rbegin(); it != exclude->rend(); ++it) {
        const int e = *it;
        if (e >= 0 && e < n && allowed_[e] && usable > 1) {
          allowed_[e] = 0;
          --usable;
        }
      }
    }
    count = usable;
    if (usable < n) allowed = &allowed_;
  }
  const std::vector<int64_t>* ramp =
      cluster.slow_start_window_ns > 0 ? SlowStartWeights(cluster) : nullptr;
  switch (cluster.lb_policy) {
    case config::v1::Cluster::LEAST_REQUEST:
      return PickLeastRequest(cluster, allowed, count, ramp);
    case config::v1::Cluster::RANDOM:
      return PickRandom(cluster, allowed, ramp);
    case config::v1::Cluster::RING_HASH:
    case config::v1::Cluster::MAGLEV:
      if (cluster.hash_table) {
        return cluster.hash_table->Lookup(
            hash, [allowed](int i) { return allowed == nullptr || (*allowed)[i] != 0; });
      }
      return PickRoundRobin(cluster, allowed, nullptr, excluding);
    default:
      return PickRoundRobin(cluster, allowed, ramp, excluding);
  }
}

int64_t SlowStartPermille(const ClusterInfo& cluster, const EndpointState& state, int64_t now_ns) {
  const int64_t window = cluster.slow_start_window_ns;
  if (window <= 0) return 1000;
  const int64_t since = state.in_rotation_since(now_ns);
  // Joined before slow start was turned on: it was serving at full share.
  if (since < cluster.slow_start_since_ns) return 1000;
  const int64_t elapsed = now_ns - since;
  if (elapsed >= window) return 1000;
  return std::max<int64_t>(
      cluster.slow_start_min_percent * 10,
      elapsed <= 0 ? 0 : static_cast<int64_t>(static_cast<double>(elapsed) / window * 1000));
}

const std::vector<int64_t>* EndpointPicker::SlowStartWeights(const ClusterInfo& cluster) {
  const int64_t now = NowNanos();
  const size_t n = cluster.endpoints.size();
  bool ramping = false;
  ramp_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const EndpointInfo& e = cluster.endpoints[i];
    // Weights in thousandths (at most 10^7): 10% of a weight of 1 is 100.
    const int64_t permille = SlowStartPermille(cluster, *e.state, now);
    ramping = ramping || permille < 1000;
    ramp_[i] = std::max<int64_t>(1, static_cast<int64_t>(e.weight) * permille);
  }
  return ramping ? &ramp_ : nullptr;
}

int EndpointPicker::PickRoundRobin(const ClusterInfo& cluster, const std::vector<char>* allowed,
                                   const std::vector<int64_t>* ramp, bool retry) {
  if (cluster.uid != last_cluster_) {
    last_state_ = &round_robin_[cluster.name];  // node addresses are stable
    last_cluster_ = cluster.uid;
  }
  RoundRobinState& state = *last_state_;
  const size_t n = cluster.endpoints.size();
  if (cluster.equal_weights && ramp == nullptr) {
    // A first try moves the rotation past what it skipped (endpoints out of
    // rotation). A retry leaves that rotation alone and goes round the
    // endpoints it may take on a rotation of its own, so the first tries
    // stay even whatever fails. A retry that took the first tries' turn
    // took it from the endpoint after the one that failed: with a dead
    // endpoint just before a live one, in panic, the live one drew no first
    // try and the dead ones twice their share; moving the first tries'
    // rotation past what a retry skipped made a dead endpoint ahead of two
    // unhealthy ones draw every second first try; always taking the first
    // usable one after it put every retry on one endpoint.
    uint64_t& cursor = retry ? state.retry_next : state.next;
    for (size_t tries = 0; tries < n; ++tries) {
      const uint64_t at = cursor + tries;
      const int i = static_cast<int>(at % n);
      if (allowed != nullptr && !(*allowed)[i]) continue;
      cursor = at + 1;
      return i;
    }
    return -1;
  }
  const bool ramping = ramp != nullptr;
  if (state.shape != cluster.uid || state.ramping != ramping) {
    // Another version of the cluster: its positions carry over unless the
    // weights changed (a connect_timeout tuned now and then would otherwise
    // send the next pick of every worker to the heaviest endpoint), or a
    // slow start began or ended (its weights are in thousandths).
    state.shape = cluster.uid;
    bool same = state.weights.size() == n && state.ramping == ramping;
    for (size_t i = 0; same && i < n; ++i) same = state.weights[i] == cluster.endpoints[i].weight;
    if (!same) {
      state.weights.resize(n);
      for (size_t i = 0; i < n; ++i) state.weights[i] = cluster.endpoints[i].weight;
      state.current.assign(n, 0);
      state.retry_current.assign(n, 0);
    }
    state.ramping = ramping;
  }
  // Retries go round weighted positions of their own too, so the first
  // tries keep to the weights whatever fails (a failing endpoint's retries
  // moved the shared positions: weights 2/1/1/2 drew first tries of
  // 35/17/26/42 in 120).
  std::vector<int64_t>& current = retry ? state.retry_current : state.current;
  int best = -1;
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    if (allowed != nullptr && !(*allowed)[i]) continue;
    const int64_t weight = ramping ? (*ramp)[i] : cluster.endpoints[i].weight;
    current[i] += weight;
    total += weight;
    if (best < 0 || current[i] > current[best]) best = static_cast<int>(i);
  }
  if (best >= 0) current[best] -= total;
  return best;
}

int EndpointPicker::PickLeastRequest(const ClusterInfo& cluster, const std::vector<char>* allowed,
                                     int count, const std::vector<int64_t>* ramp) {
  const size_t n = cluster.endpoints.size();
  // The k-th allowed endpoint.
  auto nth = [&](size_t k) -> size_t {
    if (allowed == nullptr) return k;
    for (size_t i = 0; i < n; ++i) {
      if ((*allowed)[i] && k-- == 0) return i;
    }
    return 0;
  };
  if (count == 1) return static_cast<int>(nth(0));
  if (!cluster.equal_weights || ramp != nullptr) {
    // Two candidates drawn by weight, the one with fewer requests in flight
    // relative to its weight wins. With nothing in flight at either (light
    // traffic) the first draw stands, so the shares follow the weights
    // exactly, as for RANDOM; a tie under load goes by weight too.
    int a = PickRandom(cluster, allowed, ramp);
    int b = PickRandom(cluster, allowed, ramp);
    for (int tries = 0; b == a && tries < 3; ++tries) b = PickRandom(cluster, allowed, ramp);
    if (a < 0 || b < 0 || a == b) return a;
    const int64_t active_a = active(cluster.endpoints[a].pool_key);
    const int64_t active_b = active(cluster.endpoints[b].pool_key);
    const uint64_t weight_a = ramp ? (*ramp)[a] : cluster.endpoints[a].weight;
    const uint64_t weight_b = ramp ? (*ramp)[b] : cluster.endpoints[b].weight;
    const int64_t lhs = active_a * static_cast<int64_t>(weight_b);
    const int64_t rhs = active_b * static_cast<int64_t>(weight_a);
    if (lhs != rhs) return lhs < rhs ? a : b;
    if (active_a == 0) return a;
    return rng_() % (weight_a + weight_b) < weight_a ? a : b;
  }
  size_t ka = rng_() % count;
  size_t kb = rng_() % (count - 1);
  if (kb >= ka) ++kb;
  size_t a = nth(ka), b = nth(kb);
  // Compare active/weight without division: active_a * w_b vs active_b * w_a.
  int64_t lhs = active(cluster.endpoints[a].pool_key) * cluster.endpoints[b].weight;
  int64_t rhs = active(cluster.endpoints[b].pool_key) * cluster.endpoints[a].weight;
  if (lhs == rhs) return static_cast<int>(rng_() & 1 ? a : b);
  return static_cast<int>(lhs < rhs ? a : b);
}

int EndpointPicker::PickRandom(const ClusterInfo& cluster, const std::vector<char>* allowed,
                               const std::vector<int64_t>* ramp) {
  auto weight = [&](size_t i) -> uint64_t {
    return ramp ? static_cast<uint64_t>((*ramp)[i]) : cluster.endpoints[i].weight;
  };
  uint64_t total = 0;
  for (size_t i = 0; i < cluster.endpoints.size(); ++i) {
    if (allowed == nullptr || (*allowed)[i]) total += weight(i);
  }
  if (total == 0) return -1;
  uint64_t point = rng_() % total;
  for (size_t i = 0; i < cluster.endpoints.size(); ++i) {
    if (allowed != nullptr && !(*allowed)[i]) continue;
    if (point < weight(i)) return static_cast<int>(i);
    point -= weight(i);
  }
  return -1;
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

namespace {

void TryEject(const ClusterInfo& cluster, const EndpointInfo& endpoint, const char* why,
              uint32_t consecutive) {
  const OutlierConfig& o = cluster.outlier;
  const int64_t now = NowNanos();
  EndpointState& state = *endpoint.state;
  int64_t until = state.ejected_until_ns.load();
  if (until > now) return;  // already ejected
  size_t ejected = 0;
  for (const EndpointInfo& e : cluster.endpoints) ejected += e.state->ejected(now) ? 1 : 0;
  size_t allowed = std::max<size_t>(1, cluster.endpoints.size() * o.max_ejection_percent / 100);
  if (ejected >= allowed) return;
  // The count that lengthens ejections decays while the endpoint behaves:
  // one step for each decay period since its last ejection ended (as
  // Envoy's multiplier goes down each interval a host is not ejected), so a
  // blip a day does not grow into the longest ejections.
  const uint32_t times = DecayedTimesEjected(o, state, now) + 1;
  absl::Duration length = std::min(o.base_ejection_time * times, o.max_ejection_time);
  if (!state.ejected_until_ns.compare_exchange_strong(until, now + absl::ToInt64Nanoseconds(length))) {
    return;  // another worker ejected it first
  }
  state.times_ejected.store(times);
  state.consecutive_5xx.store(0);
  state.consecutive_gateway_failures.store(0);
  cluster.stats.outlier_ejections->Inc();
  SLUICE_LOG(kInfo, "cluster ", cluster.name, " endpoint ", endpoint.key, " ejected for ",
             absl::FormatDuration(length), " (", consecutive, " consecutive ", why, ")");
}

}  // namespace

void ReportOutcome(const ClusterInfo& cluster, const EndpointInfo& endpoint, int status) {
  EndpointState& state = *endpoint.state;
  const bool failed = status == 0 || status >= 500;
  (failed ? state.errors : state.successes).fetch_add(1, std::memory_order_relaxed);
  if (!cluster.outlier.enabled) return;
  const OutlierConfig& o = cluster.outlier;
  if (!failed) {
    // Writes only when there is something to reset: no shared-line traffic
    // on the common path.
    if (state.consecutive_5xx.load(std::memory_order_relaxed)) state.consecutive_5xx.store(0);
    if (state.consecutive_gateway_failures.load(std::memory_order_relaxed)) {
      state.consecutive_gateway_failures.store(0);
    }
    return;
  }
  if (status == 0) {
    uint32_t n = state.consecutive_gateway_failures.fetch_add(1) + 1;
    if (o.consecutive_gateway_failure && n >= o.consecutive_gateway_failure) {
      TryEject(cluster, endpoint, "gateway failures", n);
    }
    return;
  }
  uint32_t n = state.consecutive_5xx.fetch_add(1) + 1;
  if (o.consecutive_5xx && n >= o.consecutive_5xx) TryEject(cluster, endpoint, "5xx responses", n);
}

}  // namespace sluice::upstream
