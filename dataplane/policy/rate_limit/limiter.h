// What the `rate-limit` policy's filter asks of a rate limiter: take one
// request for a caller's key from each of the policy's limits, or refuse it,
// and say how much is left. The scope LOCAL implementation is GcraLimiter
// (gcra_limiter_impl.h), counters in this proxy's memory. A fleet-wide one
// plugs in behind the same interface: it decides locally too, against a
// share of the fleet's budget leased from the control plane and renewed in
// the background, so Take() never waits on the network.
//
// Time is passed in (nanoseconds on one monotonic clock for the limiter's
// whole life), so a limiter holds no clock and a test drives it directly.
//
// Implementations are thread-safe: every worker calls Take() concurrently.
// A limiter is shared by the config versions whose policy config keeps its
// identity (limiter_registry.h) and lives as long as one of them does.
#ifndef SLUICE_DATAPLANE_POLICY_RATE_LIMIT_LIMITER_H_
#define SLUICE_DATAPLANE_POLICY_RATE_LIMIT_LIMITER_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sluice::policy::rate_limit {

// One limit per unit: second, minute, hour, day.
inline constexpr size_t kMaxLimits = 4;

// Both limiters' eviction: when a new key finds the table full after its
// own shard dropped what it could, every other shard drops its keys that
// are the same as unknown ones (`drop(shard)`, lock held; a shard another
// thread holds is skipped), at most once per `interval_ns` (a flood of new
// keys into a full table would sweep it for each). Returns whether it ran.
template <typename Shard, typename Drop>
bool SweepOtherShards(Shard* shards, size_t count, const Shard& own,
                      std::atomic<int64_t>& last_sweep_ns, int64_t now, int64_t interval_ns,
                      Drop drop) {
  int64_t last = last_sweep_ns.load(std::memory_order_relaxed);
  if (now - last < interval_ns ||
      !last_sweep_ns.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
    return false;
  }
  for (size_t i = 0; i < count; ++i) {
    Shard& other = shards[i];
    if (&other == &own || !other.mu.TryLock()) continue;
    drop(other);
    other.mu.Unlock();
  }
  return true;
}

// `requests` per `period_ns`.
struct LimitSpec {
  uint64_t requests = 0;
  int64_t period_ns = 0;
};

// Where one key stands against one limit, after the decision.
struct LimitUsage {
  uint64_t limit = 0;
  // Requests that would be admitted now, in a burst.
  uint64_t remaining = 0;
  // Until the limit is whole again (remaining == limit) if no request comes.
  int64_t reset_ns = 0;
};

struct Decision {
  bool allowed = false;
  // When refused: until the next request for this key would be admitted.
  int64_t retry_after_ns = 0;
  // One per limit, in the limiter's order.
  size_t count = 0;
  std::array<LimitUsage, kMaxLimits> usage;
};

class RateLimiter {
 public:
  virtual ~RateLimiter() = default;
  // Takes one request for `key` at `now_ns` from every limit, or from none
  // when one of them refuses it; fills `decision`. Any thread.
  virtual void Take(std::string_view key, int64_t now_ns, Decision* decision) = 0;
  // Keys whose counters are held now (bounded by the limiter's capacity).
  virtual size_t tracked_keys() const = 0;
};

}  // namespace sluice::policy::rate_limit

#endif  // SLUICE_DATAPLANE_POLICY_RATE_LIMIT_LIMITER_H_
