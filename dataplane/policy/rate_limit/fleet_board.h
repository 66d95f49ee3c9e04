// FleetBoard: process-wide, the scope FLEET rate limiters of this proxy,
// and the two ends of their exchange with the control plane on the config
// stream (api/sluice/discovery/v1/discovery.proto): the demand report a
// proxy sends every --rate-limit-report-interval (MakeDemand) and the
// leases the control plane answers with (ApplyLeases).
//
// Thread-safe. Limiters register in their constructor and leave in their
// destructor (any thread that compiles or drops a config version);
// MakeDemand/ApplyLeases run on the config client's threads. Lock order:
// the board's mutex, then a limiter's shard.
#ifndef SLUICE_DATAPLANE_POLICY_RATE_LIMIT_FLEET_BOARD_H_
#define SLUICE_DATAPLANE_POLICY_RATE_LIMIT_FLEET_BOARD_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "sluice/discovery/v1/discovery.pb.h"

namespace sluice::policy::rate_limit {

class FleetLimiter;

class FleetBoard {
 public:
  // Keys reported per policy per interval at most (the busiest are not
  // chosen: the first found); the rest keep the default share.
  static constexpr size_t kMaxReportedKeys = 10000;

  static FleetBoard& Get();

  void Register(FleetLimiter* limiter);
  void Unregister(FleetLimiter* limiter);

  // The demand since the last call, covering `interval_ms`; nullopt when
  // no FLEET limiter lives (the proxy is then not in the fleet).
  std::optional<discovery::v1::RateLimitDemand> MakeDemand(uint64_t interval_ms);
  // Hands each limiter its leases (matched by identity) at `now_ns` on the
  // limiters' clock.
  void ApplyLeases(const discovery::v1::RateLimitLeases& leases, int64_t now_ns);

 private:
  absl::Mutex mu_;
  std::vector<FleetLimiter*> limiters_ ABSL_GUARDED_BY(mu_);
  // The fleet size of the last leases taken, sent back in each demand.
  uint32_t fleet_size_heard_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sluice::policy::rate_limit

#endif  // SLUICE_DATAPLANE_POLICY_RATE_LIMIT_FLEET_BOARD_H_
