// The scope FLEET rate limiter: one limit across the proxies of the fleet,
// with no network call per request. Each proxy enforces, per key and limit,
// a *share* of the limit that the control plane leases to it by its recent
// demand (Google's Doorman design; the control plane's side is
// controlplane/server/rate_limit_leases.h). Between leases it decides
// alone, so Take() never waits on the network.
//
// Per key and limit the proxy runs a token bucket at its share: `share`
// requests per period, holding at most max(share, 1) tokens (the share of
// the window's burst; a new key starts full, as LOCAL's GCRA does). A new
// share takes effect at once: tokens earned so far are kept (capped at the
// new size), so a share change causes no burst. Every request seen, admitted
// or not, counts as demand; the config client's reporter takes the demand
// every report interval (TakeDemand: a leased key keeps being reported,
// with 0, for kIdleReports intervals after its last request, so that the
// control plane's estimate decays rather than flickers and the proxy's
// lease stays current) and hands back the leases the control plane
// answered (ApplyLeases).
//
// Which share applies, for limit i of requests L_i:
//   - the control plane was heard from within `keep_share_for`:
//       the key's lease when it came with the last answers (within
//       kLeaseCurrentNs of the last one), else L_i / fleet size (a key the
//       control plane has not yet seen, or one idle long enough that it
//       stopped being reported);
//   - never heard from, or silent for longer than `keep_share_for`: the
//     fallback, the configured per-proxy limit or L_i / max(1, fleet size
//     last heard) (the whole L_i before any answer).
// Never unlimited, never zero: every share is at least kMinShareFraction of
// L_i / fleet size.
//
// Memory: about `max_keys` keys (counted over all shards, at most
// max_keys + 64), evicted as LOCAL's: full buckets with no pending demand
// first, the new key's shard's, then every shard's; the fullest others only
// when that sweep frees fewer than max_keys/64.
//
// Thread-safe: Take() from every worker; TakeDemand()/ApplyLeases() from
// the config client's threads (via FleetBoard).
#ifndef SLUICE_DATAPLANE_POLICY_RATE_LIMIT_FLEET_LIMITER_IMPL_H_
#define SLUICE_DATAPLANE_POLICY_RATE_LIMIT_FLEET_LIMITER_IMPL_H_

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/node_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "dataplane/policy/rate_limit/limiter.h"

namespace sluice::policy::rate_limit {

class FleetBoard;

struct FleetLimiterOptions {
  // How long the last shares hold without word from the control plane.
  int64_t keep_share_for_ns = 30'000'000'000;
  // Per limit (in the limiter's order): the per-proxy fallback requests per
  // period; 0 or missing: the limit / max(1, fleet size last heard).
  std::vector<uint64_t> fallback_requests;
};

class FleetLimiter : public RateLimiter {
 public:
  static constexpr size_t kMaxHeldKeyBytes = 64;
  static constexpr size_t kMaxShards = 64;
  // Shards hold at least this many keys of max_keys (so a small table has
  // fewer shards, down to one): a full table evicts from the new key's
  // shard, and a shard of two or three keys may hold nothing to drop but a
  // caller who spent its budget.
  static constexpr size_t kMinKeysPerShard = 64;
  // A lease older than the last answer by more than this is not current.
  static constexpr int64_t kLeaseCurrentNs = 1'000'000'000;
  static constexpr double kMinShareFraction = 0.001;
  // A leased key is reported (with 0 requests) for this many reports after
  // its last request (20 s at the default interval), so the control plane
  // sees it idle rather than gone: a proxy whose requests for a key come
  // seconds apart stays in the division at its average demand (with 10,
  // 2 s, it left and came back at 0, and a limit of 100 a minute over five
  // such proxies admitted up to +27%).
  static constexpr int kIdleReports = 100;

  struct KeyDemand {
    std::string key;
    uint64_t requests = 0;
  };
  struct KeyShares {
    std::string key;
    std::vector<double> shares;  // requests per period, one per limit
  };

  // 1..kMaxLimits limits (requests >= 1, period_ns >= requests); max_keys
  // >= 1. `identity` names the policy on the stream. `board` (may be null:
  // tests drive the limiter directly) is told of the limiter for its life.
  FleetLimiter(std::string identity, std::vector<LimitSpec> limits, size_t max_keys,
               FleetLimiterOptions options, FleetBoard* board);
  ~FleetLimiter() override;

  void Take(std::string_view key, int64_t now_ns, Decision* decision) override;
  size_t tracked_keys() const override;

  const std::string& identity() const { return identity_; }
  const std::vector<LimitSpec>& limits() const { return specs_; }
  // The requests seen per key since the last call: keys with any, then,
  // in the room left, leased keys idle for fewer than kIdleReports calls
  // (0 requests); at most `max_keys` of them. The ones returned start
  // again from 0.
  std::vector<KeyDemand> TakeDemand(size_t max_keys);
  // The control plane's answer at `now_ns`: the fleet's size and the shares
  // of the keys it leased (keys no longer held are skipped).
  void ApplyLeases(uint32_t fleet_size, const std::vector<KeyShares>& leases, int64_t now_ns);
  // The share of limit `limit` that `key` is enforced at, at `now_ns`.
  double ShareOf(std::string_view key, size_t limit, int64_t now_ns);

 private:
  struct Entry {
    double tokens[kMaxLimits] = {};
    double lease[kMaxLimits] = {};
    int64_t refilled_ns = 0;
    int64_t lease_ns = std::numeric_limits<int64_t>::min();
    bool has_lease = false;
    uint64_t demand = 0;
    int idle_reports = 0;  // reports since its last request
  };
  using Map = absl::node_hash_map<std::string, Entry>;
  struct alignas(64) Shard {
    mutable absl::Mutex mu;
    Map map ABSL_GUARDED_BY(mu);
  };

  static constexpr int64_t kNever = std::numeric_limits<int64_t>::min();

  std::string HeldKey(std::string_view key) const;
  Shard& ShardOf(std::string_view held_key) const;
  // The share of limit i for `entry` at `now`.
  double Share(const Entry& entry, size_t i, int64_t now) const;
  // Brings the buckets to `now` at the shares that applied until now.
  void Refill(Entry& entry, int64_t now) const;
  void Evict(Shard& shard, int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Removes the shard's full buckets with no demand (lock held); the others
  // go to `active` (with their fullness) when it is given.
  size_t DropFull(Shard& shard, int64_t now, std::vector<std::pair<double, Map::iterator>>* active)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);

  const std::string identity_;
  const std::vector<LimitSpec> specs_;
  const FleetLimiterOptions options_;
  FleetBoard* const board_;
  size_t max_keys_;
  // A sweep of every shard for keys to drop at no loss, at most once per
  // kSweepInterval (Evict).
  static constexpr int64_t kSweepInterval = 50'000'000;  // 50 ms
  std::atomic<int64_t> last_sweep_ns_{std::numeric_limits<int64_t>::min() / 2};
  std::atomic<size_t> keys_{0};  // held in all shards together
  size_t shard_count_;
  std::unique_ptr<Shard[]> shards_;
  // When the control plane last answered (kNever: not yet), and the fleet's
  // size it said.
  std::atomic<int64_t> contact_ns_{kNever};
  std::atomic<uint32_t> fleet_size_{0};
};

}  // namespace sluice::policy::rate_limit

#endif  // SLUICE_DATAPLANE_POLICY_RATE_LIMIT_FLEET_LIMITER_IMPL_H_
