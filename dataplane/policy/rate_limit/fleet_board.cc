#include "dataplane/policy/rate_limit/fleet_board.h"

#include <algorithm>
#include <string>

#include "dataplane/policy/rate_limit/fleet_limiter_impl.h"

namespace sluice::policy::rate_limit {

FleetBoard& FleetBoard::Get() {
  static auto* const board = new FleetBoard();  // never destroyed
  return *board;
}

void FleetBoard::Register(FleetLimiter* limiter) {
  absl::MutexLock lock(&mu_);
  limiters_.push_back(limiter);
}

void FleetBoard::Unregister(FleetLimiter* limiter) {
  absl::MutexLock lock(&mu_);
  limiters_.erase(std::remove(limiters_.begin(), limiters_.end(), limiter), limiters_.end());
}

std::optional<discovery::v1::RateLimitDemand> FleetBoard::MakeDemand(uint64_t interval_ms) {
  discovery::v1::RateLimitDemand demand;
  demand.set_interval_ms(interval_ms);
  absl::MutexLock lock(&mu_);
  if (limiters_.empty()) return std::nullopt;
  demand.set_fleet_size_heard(fleet_size_heard_);
  for (FleetLimiter* limiter : limiters_) {
    std::vector<FleetLimiter::KeyDemand> keys = limiter->TakeDemand(kMaxReportedKeys);
    if (keys.empty()) continue;
    discovery::v1::PolicyDemand* policy = demand.add_policies();
    policy->set_identity(limiter->identity());
    for (const LimitSpec& spec : limiter->limits()) {
      discovery::v1::FleetLimit* limit = policy->add_limits();
      limit->set_requests(spec.requests);
      limit->set_period_ms(static_cast<uint64_t>(spec.period_ns / 1000000));
    }
    for (FleetLimiter::KeyDemand& key : keys) {
      discovery::v1::KeyDemand* out = policy->add_keys();
      out->set_key(std::move(key.key));
      out->set_requests(key.requests);
    }
  }
  return demand;
}

void FleetBoard::ApplyLeases(const discovery::v1::RateLimitLeases& leases, int64_t now_ns) {
  absl::MutexLock lock(&mu_);
  fleet_size_heard_ = leases.fleet_size();
  for (FleetLimiter* limiter : limiters_) {
    std::vector<FleetLimiter::KeyShares> shares;
    for (const discovery::v1::PolicyLeases& policy : leases.policies()) {
      if (policy.identity() != limiter->identity()) continue;
      for (const discovery::v1::KeyLease& key : policy.keys()) {
        shares.push_back({key.key(), {key.shares().begin(), key.shares().end()}});
      }
    }
    // Also with no keys: the answer refreshes the contact and fleet size.
    limiter->ApplyLeases(leases.fleet_size(), shares, now_ns);
  }
}

}  // namespace sluice::policy::rate_limit
