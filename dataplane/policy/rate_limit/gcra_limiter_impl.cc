#include "dataplane/policy/rate_limit/gcra_limiter_impl.h"

#include <algorithm>
#include <cstdlib>

#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"
#include "api/credentials.h"

namespace sluice::policy::rate_limit {
namespace {

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

GcraLimiter::GcraLimiter(std::vector<LimitSpec> limits, size_t max_keys) {
  if (limits.empty() || limits.size() > kMaxLimits || max_keys == 0) abort();
  for (const LimitSpec& spec : limits) {
    if (spec.requests == 0 || spec.period_ns < 0 ||
        spec.requests > static_cast<uint64_t>(spec.period_ns)) {
      abort();
    }
    int64_t interval = spec.period_ns / static_cast<int64_t>(spec.requests);
    limits_.push_back({spec.requests, interval, interval * static_cast<int64_t>(spec.requests),
                       spec.period_ns});
  }
  max_keys_ = max_keys;
  shard_count_ = std::clamp<size_t>(max_keys / kMinKeysPerShard, 1, kMaxShards);
  shards_ = std::make_unique<Shard[]>(shard_count_);
}

void GcraLimiter::Take(std::string_view key, int64_t now_ns, Decision* decision) {
  if (key.size() <= kMaxHeldKeyBytes) return TakeHeld(key, now_ns, decision);
  // A long key (a header value) is held as its SHA-256, so an entry's size
  // is bounded; the marker byte keeps it apart from any short key.
  char digest[33];
  digest[0] = '\xff';
  api::Sha256(key, reinterpret_cast<unsigned char*>(digest + 1));
  TakeHeld(std::string_view(digest, sizeof(digest)), now_ns, decision);
}

void GcraLimiter::TakeHeld(std::string_view key, int64_t now, Decision* decision) {
  absl::string_view k = AbslView(key);
  Shard& shard = shards_[(absl::HashOf(k) >> 32) % shard_count_];
  {
    absl::ReaderMutexLock lock(&shard.mu);
    auto it = shard.map.find(k);
    if (it != shard.map.end()) {
      // The reader lock keeps the entry from being evicted meanwhile.
      TakeFrom(it->second, now, decision);
      return;
    }
  }
  absl::MutexLock lock(&shard.mu);
  auto it = shard.map.find(k);
  if (it == shard.map.end()) {
    // The bound is the limiter's, not the shard's: keys hash unevenly, and
    // a shard full long before max_keys would evict callers still limited.
    if (keys_.load(std::memory_order_relaxed) >= max_keys_) Evict(shard, now);
    it = shard.map.try_emplace(std::string(key)).first;
    keys_.fetch_add(1, std::memory_order_relaxed);
  }
  TakeFrom(it->second, now, decision);
}

void GcraLimiter::TakeFrom(Entry& entry, int64_t now, Decision* decision) const {
  // Each TAT is one atomic; relaxed order suffices: a decision depends only
  // on each TAT's own modification order, never on another memory location.
  constexpr auto kRelaxed = std::memory_order_relaxed;
  const size_t n = limits_.size();
  int64_t tat[kMaxLimits];
  // A refused request writes nothing: check first, without writing.
  bool refused = false;
  for (size_t i = 0; i < n; ++i) {
    tat[i] = entry.tat[i].load(kRelaxed);
    if (std::max(tat[i], now) + limits_[i].interval_ns - now > limits_[i].burst_ns) refused = true;
  }
  if (!refused) {
    size_t taken = 0;  // limits whose TAT this request advanced
    while (taken < n && !refused) {
      const Limit& limit = limits_[taken];
      int64_t old = tat[taken];
      for (;;) {
        int64_t next = std::max(old, now) + limit.interval_ns;
        if (next - now > limit.burst_ns) {
          refused = true;  // another request took the last one meanwhile
          break;
        }
        if (entry.tat[taken].compare_exchange_weak(old, next, kRelaxed, kRelaxed)) {
          tat[taken++] = next;
          break;
        }
      }
    }
    if (refused) {
      // Give back what the earlier limits took.
      for (size_t i = 0; i < taken; ++i) entry.tat[i].fetch_sub(limits_[i].interval_ns, kRelaxed);
      for (size_t i = 0; i < n; ++i) tat[i] = entry.tat[i].load(kRelaxed);
    }
  }
  decision->allowed = !refused;
  decision->retry_after_ns = 0;
  decision->count = n;
  for (size_t i = 0; i < n; ++i) {
    const Limit& limit = limits_[i];
    int64_t base = std::max(tat[i], now);
    int64_t room = now + limit.burst_ns - base;  // what can still be spent now
    LimitUsage& usage = decision->usage[i];
    usage.limit = limit.requests;
    usage.remaining = room <= 0 ? 0 : static_cast<uint64_t>(room / limit.interval_ns);
    usage.reset_ns = base - now;
    if (refused && room < limit.interval_ns) {
      decision->retry_after_ns = std::max(decision->retry_after_ns, limit.interval_ns - room);
    }
  }
}

size_t GcraLimiter::DropWhole(Shard& shard, int64_t now,
                              std::vector<std::pair<int64_t, Map::iterator>>* active) {
  const size_t n = limits_.size();
  size_t freed = 0;
  for (auto it = shard.map.begin(); it != shard.map.end();) {
    int64_t whole_at = 0;
    for (size_t i = 0; i < n; ++i) {
      whole_at = std::max(whole_at, it->second.tat[i].load(std::memory_order_relaxed));
    }
    if (whole_at <= now) {
      shard.map.erase(it++);  // other iterators stay valid
      ++freed;
    } else {
      if (active != nullptr) active->emplace_back(whole_at, it);
      ++it;
    }
  }
  keys_.fetch_sub(freed, std::memory_order_relaxed);
  return freed;
}

void GcraLimiter::Evict(Shard& shard, int64_t now) {
  // A key whole again is the same as an unknown one: dropping it loses
  // nothing. This shard's first; when that leaves the table full, every
  // other shard's (one another thread holds is skipped); when the table is
  // still full, it holds max_keys callers who are not whole, and an eighth
  // of this shard goes, closest to whole first.
  std::vector<std::pair<int64_t, Map::iterator>> active;
  active.reserve(shard.map.size());
  DropWhole(shard, now, &active);
  if (keys_.load(std::memory_order_relaxed) < max_keys_) return;
  if (SweepOtherShards(shards_.get(), shard_count_, shard, last_sweep_ns_, now, kSweepInterval,
                       [&](Shard& other) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                         DropWhole(other, now, nullptr);
                       }) &&
      keys_.load(std::memory_order_relaxed) < max_keys_) {
    return;
  }
  size_t more = std::min(std::max<size_t>(1, shard.map.size() / 8), active.size());
  std::nth_element(active.begin(), active.begin() + more, active.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 0; i < more; ++i) shard.map.erase(active[i].second);
  keys_.fetch_sub(more, std::memory_order_relaxed);
  evicted_active_.fetch_add(more, std::memory_order_relaxed);
}

void GcraLimiter::CarryOver(const GcraLimiter& previous, int64_t now) {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  const size_t n = limits_.size();
  int from[kMaxLimits];  // the previous limit of the same period, or -1
  bool any = false;
  for (size_t i = 0; i < n; ++i) {
    from[i] = -1;
    for (size_t j = 0; j < previous.limits_.size(); ++j) {
      if (previous.limits_[j].period_ns == limits_[i].period_ns) from[i] = static_cast<int>(j);
    }
    any = any || from[i] >= 0;
  }
  if (!any) return;
  for (size_t s = 0; s < previous.shard_count_; ++s) {
    const Shard& old_shard = previous.shards_[s];
    absl::ReaderMutexLock old_lock(&old_shard.mu);
    for (const auto& [key, old_entry] : old_shard.map) {
      int64_t tat[kMaxLimits] = {};
      bool spent = false;
      for (size_t i = 0; i < n; ++i) {
        if (from[i] < 0) continue;
        const Limit& was = previous.limits_[from[i]];
        const int64_t debt = old_entry.tat[from[i]].load(kRelaxed) - now;
        if (debt <= 0) continue;
        // As many requests spent here (long double: debt * T overflows).
        const long double here = static_cast<long double>(debt) /
                                 static_cast<long double>(was.interval_ns) *
                                 static_cast<long double>(limits_[i].interval_ns);
        const int64_t owed = here >= static_cast<long double>(limits_[i].burst_ns)
                                 ? limits_[i].burst_ns
                                 : static_cast<int64_t>(here);
        if (owed <= 0) continue;
        tat[i] = now + owed;
        spent = true;
      }
      if (!spent) continue;
      if (keys_.load(kRelaxed) >= max_keys_) return;  // the rest start whole
      Shard& shard = shards_[(absl::HashOf(AbslView(key)) >> 32) % shard_count_];
      absl::MutexLock lock(&shard.mu);
      auto [it, inserted] = shard.map.try_emplace(key);
      if (inserted) keys_.fetch_add(1, kRelaxed);
      for (size_t i = 0; i < n; ++i) {
        if (tat[i] > it->second.tat[i].load(kRelaxed)) it->second.tat[i].store(tat[i], kRelaxed);
      }
    }
  }
}

size_t GcraLimiter::tracked_keys() const {
  size_t total = 0;
  for (size_t i = 0; i < shard_count_; ++i) {
    absl::ReaderMutexLock lock(&shards_[i].mu);
    total += shards_[i].map.size();
  }
  return total;
}

}  // namespace sluice::policy::rate_limit
