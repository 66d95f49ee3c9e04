// Health and load state shared by every worker of a proxy, per cluster and
// per (cluster, endpoint). It outlives config versions: a snapshot that keeps
// a cluster or an endpoint gets the same state objects (HealthRegistry), so
// health, ejections and counts carry over.
//
// Writers: active health checks (main thread), outlier detection and
// request accounting (workers). Readers: workers on the request path (relaxed
// atomic loads, no locks) and the admin endpoint. The only lock guards the
// last check failure text, which only health checks and admin touch.
#ifndef SLUICE_DATAPLANE_UPSTREAM_ENDPOINT_STATE_H_
#define SLUICE_DATAPLANE_UPSTREAM_ENDPOINT_STATE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sluice::upstream {

enum class Health : int { kHealthy = 0, kUnknown = 1, kUnhealthy = 2 };

struct EndpointState {
  // Active health: kHealthy when the cluster has no health check.
  std::atomic<Health> health{Health::kHealthy};
  // Outlier ejection: ejected while now < ejected_until (unix nanos).
  std::atomic<int64_t> ejected_until_ns{0};
  std::atomic<uint32_t> times_ejected{0};
  // times_ejected decays from the later of ejected_until_ns and this (set
  // when a config changed the decay period, decay_period_ns: 0 until a
  // cluster with outlier detection uses the endpoint).
  std::atomic<int64_t> decay_from_ns{0};
  std::atomic<int64_t> decay_period_ns{0};
  std::atomic<uint32_t> consecutive_5xx{0};
  std::atomic<uint32_t> consecutive_gateway_failures{0};
  // When it last joined the rotation (unix nanos): added to a cluster that
  // had endpoints before (0 for one of a cluster's first: slow start never
  // applies when a proxy starts or a cluster is made, as HAProxy's does
  // not), its first active check passed after such an add, or healthy
  // again after failing its check. Slow start counts from here (or from
  // the end of an ejection, when later).
  std::atomic<int64_t> joined_ns{0};
  // Across all workers.
  std::atomic<int64_t> active_requests{0};
  std::atomic<int64_t> connections{0};
  std::atomic<uint64_t> successes{0};
  std::atomic<uint64_t> errors{0};

  bool ejected(int64_t now_ns) const {
    return ejected_until_ns.load(std::memory_order_relaxed) > now_ns;
  }
  // May take traffic: healthy (or unchecked) and not ejected.
  bool usable(int64_t now_ns) const {
    return health.load(std::memory_order_relaxed) == Health::kHealthy && !ejected(now_ns);
  }
  // Healthy again (`was` its health before): it joins the rotation anew
  // when back from failing its check, or on its first pass when it was
  // added to a cluster in service (joined_ns set); not one of a starting
  // proxy's or a new cluster's (joined_ns 0).
  void Rejoined(Health was) {
    if (was == Health::kUnhealthy || joined_ns.load(std::memory_order_relaxed) != 0) {
      joined_ns.store(absl::GetCurrentTimeNanos(), std::memory_order_relaxed);
    }
  }
  // Since when it has been in the rotation for slow start: the later of
  // joined_ns and the end of its last ejection (when that has passed).
  int64_t in_rotation_since(int64_t now_ns) const {
    const int64_t joined = joined_ns.load(std::memory_order_relaxed);
    const int64_t ejection_end = ejected_until_ns.load(std::memory_order_relaxed);
    return ejection_end <= now_ns && ejection_end > joined ? ejection_end : joined;
  }

  void SetLastCheckFailure(std::string why) {
    absl::MutexLock lock(&mu_);
    last_check_failure_ = std::move(why);
  }
  std::string last_check_failure() const {
    absl::MutexLock lock(&mu_);
    return last_check_failure_;
  }

 private:
  mutable absl::Mutex mu_;
  std::string last_check_failure_ ABSL_GUARDED_BY(mu_);
};

// Cluster-wide counts for circuit breakers.
struct ClusterState {
  // Since when the cluster has had slow_start (unix nanos; 1 when it had it
  // from its first version, 0 without it): an endpoint that joined before
  // takes its whole share, so turning slow start on throttles none of the
  // endpoints already serving.
  std::atomic<int64_t> slow_start_since_ns{0};
  std::atomic<int64_t> active_requests{0};
  std::atomic<int64_t> pending_requests{0};  // waiting for a connection to open
  std::atomic<int64_t> connections{0};
  std::atomic<int64_t> active_retries{0};
};

inline int64_t NowNanos() { return absl::GetCurrentTimeNanos(); }

// Hands out the shared state objects, keyed by cluster name and endpoint key.
// Thread-safe; used when compiling snapshots, not on the request path.
class HealthRegistry {
 public:
  // `initial` is the health a new endpoint starts with; `joins` whether a
  // new one joins now (EndpointState::joined_ns).
  std::shared_ptr<EndpointState> Endpoint(const std::string& cluster,
                                          const std::string& endpoint_key, Health initial,
                                          bool joins = false);
  std::shared_ptr<ClusterState> Cluster(const std::string& cluster);
  // Whether some snapshot has the cluster: its state is here.
  bool KnowsCluster(const std::string& cluster);
  // Forgets state that no snapshot refers to any more. Walks the registry
  // only when some pointer handed out since the last walk went (a cluster
  // changed or removed); otherwise costs one atomic exchange.
  void Prune();

 private:
  // `slot`, handed out so that `released_` counts it when its last copy goes.
  template <typename T>
  std::shared_ptr<T> HandOut(const std::shared_ptr<T>& slot);

  // Pointers handed out that went since the last walk; shared with them
  // (they may outlive the registry).
  const std::shared_ptr<std::atomic<uint64_t>> released_ =
      std::make_shared<std::atomic<uint64_t>>(0);
  absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, std::shared_ptr<EndpointState>> endpoints_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<ClusterState>> clusters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::upstream

#endif  // SLUICE_DATAPLANE_UPSTREAM_ENDPOINT_STATE_H_
