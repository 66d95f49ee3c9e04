// The scope LOCAL rate limiter: GCRA (the generic cell rate algorithm) per
// key and limit, counters in this proxy's memory.
//
// Algorithm. A limit of N requests per period P has an emission interval
// T = floor(P / N) ns and a burst allowance B = N * T (<= P). A key holds,
// per limit, one "theoretical arrival time" TAT (initially in the past). A
// request at `now` is admitted when max(TAT, now) + T - now <= B, and then
// TAT becomes max(TAT, now) + T; a refused request changes nothing. So:
//   - a key with no recent requests gets exactly N at once; request N+1 is
//     refused until T has passed, and from then on one more every T;
//   - in any span of L ns at most N + floor(L / T) requests are admitted:
//     at most 2N - 1 in any window of length P when N divides P (2N
//     otherwise): the burst allowance on top of a steady rate. The
//     long-run rate is 1 / T >= N / P, higher than N / P by less than
//     N / P_ns relatively (rounding of T; 1e-10 for 5 per minute, 1e-3 at
//     the cap of 1e6 per second);
//   - it never refuses a request that a strict sliding window (at most N in
//     any P) would admit.
// A key whose TATs are all <= now is indistinguishable from an unknown key:
// forgetting it loses nothing.
//
// Concurrency. Keys are spread over shards; a shard is an absl::Mutex and a
// hash map of key -> per-limit atomic TATs. An existing key is found under
// the shard's *reader* lock (an atomic operation on the mutex word, never a
// wait unless a writer holds it) and its TATs are updated with
// compare-exchange while that lock is held: no two requests for existing
// keys ever wait for each other, but they do touch the shard mutex's cache
// line. A new key takes the shard's writer lock to be inserted. With one
// limit the admitted count is exact under any interleaving. With several, a
// request admitted by the first limits and refused by a later one gives
// back what it took (TAT -= T): a request racing with it may be refused by
// what was taken for that moment.
//
// Memory. About `max_keys` keys are held (a new key in a shard with none
// to give may pass it by one: at most max_keys + 64), about 125 bytes each
// for a route + client IP key, 175 at most (keys over 64 bytes are held as
// a SHA-256). The bound counts all shards together. A new key when
// max_keys are held first removes its shard's keys that are whole again
// (lossless: such a key is the same as an unknown one); when that leaves the
// table full, the whole keys of every other shard go too (a sweep of the
// table, at most once per kSweepInterval). Only when the table is still full
// (max_keys callers who are not whole, or a second full table within
// kSweepInterval) are keys of the new key's shard closest to whole removed,
// an eighth of it (the smallest max TAT: a flood of one-request keys goes
// first, a heavily used key last). So the count is exact for every caller
// while no more than max_keys are active. A removed key that was not whole
// starts whole on its next request: it gets back up to (TAT - now) / T
// requests per limit early. A new key costs a scan of its shard (about 8
// visits per new key in a flood), and a sweep every key's visit.
//
// Thread-safe.
#ifndef SLUICE_DATAPLANE_POLICY_RATE_LIMIT_GCRA_LIMITER_IMPL_H_
#define SLUICE_DATAPLANE_POLICY_RATE_LIMIT_GCRA_LIMITER_IMPL_H_

#include <atomic>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/node_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "dataplane/policy/rate_limit/limiter.h"

namespace sluice::policy::rate_limit {

class GcraLimiter : public RateLimiter {
 public:
  // Keys longer than this are held as a SHA-256 of the key.
  static constexpr size_t kMaxHeldKeyBytes = 64;
  static constexpr size_t kMaxShards = 64;
  // Shards hold at least this many keys of max_keys (so a small table has
  // fewer shards, down to one): a full table evicts from the new key's
  // shard, and a shard of two or three keys may hold nothing to drop but a
  // caller who spent its budget.
  static constexpr size_t kMinKeysPerShard = 64;

  // 1..kMaxLimits limits, each requests >= 1 and period_ns >= requests;
  // max_keys >= 1. Decisions report the limits in this order.
  GcraLimiter(std::vector<LimitSpec> limits, size_t max_keys);

  void Take(std::string_view key, int64_t now_ns, Decision* decision) override;
  size_t tracked_keys() const override;

  // Carries the counts of `previous` (the same policy with other limits,
  // still live) over to this limiter, before it takes any request: for each
  // limit whose period `previous` limits too, a caller that had spent k
  // requests there ((TAT - now) / T, fractional) has spent k here, at most
  // this limit's burst (a caller over the new limit has none left and earns
  // them back at the new rate). Other limits, and keys whole in `previous`,
  // start whole; so do keys past max_keys. A request `previous` admits after
  // this call is not counted here.
  void CarryOver(const GcraLimiter& previous, int64_t now);

  // Keys removed while not whole (their holder got a fresh budget early).
  uint64_t evicted_active() const { return evicted_active_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    std::atomic<int64_t> tat[kMaxLimits] = {};
  };
  using Map = absl::node_hash_map<std::string, Entry>;
  struct alignas(64) Shard {
    mutable absl::Mutex mu;
    Map map ABSL_GUARDED_BY(mu);
  };
  struct Limit {
    uint64_t requests;
    int64_t interval_ns;  // T
    int64_t burst_ns;     // B = requests * T
    int64_t period_ns;    // P
  };

  void TakeFrom(Entry& entry, int64_t now, Decision* decision) const;
  void TakeHeld(std::string_view held_key, int64_t now, Decision* decision);
  // Frees room for a new key in `shard` (writer lock held) when the table
  // holds max_keys keys.
  void Evict(Shard& shard, int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Removes the shard's whole keys (lock held); the others go to `active`
  // (with the time they are whole) when it is given. Returns how many went.
  size_t DropWhole(Shard& shard, int64_t now,
                   std::vector<std::pair<int64_t, Map::iterator>>* active)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);

  std::vector<Limit> limits_;
  size_t max_keys_;
  // A sweep of every shard for keys to drop at no loss, at most once per
  // kSweepInterval (Evict).
  static constexpr int64_t kSweepInterval = 50'000'000;  // 50 ms
  std::atomic<int64_t> last_sweep_ns_{std::numeric_limits<int64_t>::min() / 2};
  std::atomic<size_t> keys_{0};  // held in all shards together
  size_t shard_count_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<uint64_t> evicted_active_{0};
};

}  // namespace sluice::policy::rate_limit

#endif  // SLUICE_DATAPLANE_POLICY_RATE_LIMIT_GCRA_LIMITER_IMPL_H_
