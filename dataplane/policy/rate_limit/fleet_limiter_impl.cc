#include "dataplane/policy/rate_limit/fleet_limiter_impl.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"
#include "api/credentials.h"
#include "dataplane/policy/rate_limit/fleet_board.h"

namespace sluice::policy::rate_limit {
namespace {

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

FleetLimiter::FleetLimiter(std::string identity, std::vector<LimitSpec> limits, size_t max_keys,
                           FleetLimiterOptions options, FleetBoard* board)
    : identity_(std::move(identity)),
      specs_(std::move(limits)),
      options_(std::move(options)),
      board_(board) {
  if (specs_.empty() || specs_.size() > kMaxLimits || max_keys == 0 ||
      options_.keep_share_for_ns <= 0) {
    abort();
  }
  for (const LimitSpec& spec : specs_) {
    if (spec.requests == 0 || spec.period_ns <= 0 ||
        spec.requests > static_cast<uint64_t>(spec.period_ns)) {
      abort();
    }
  }
  max_keys_ = max_keys;
  shard_count_ = std::clamp<size_t>(max_keys / kMinKeysPerShard, 1, kMaxShards);
  shards_ = std::make_unique<Shard[]>(shard_count_);
  if (board_ != nullptr) board_->Register(this);
}

FleetLimiter::~FleetLimiter() {
  if (board_ != nullptr) board_->Unregister(this);
}

std::string FleetLimiter::HeldKey(std::string_view key) const {
  if (key.size() <= kMaxHeldKeyBytes) return std::string(key);
  // As GcraLimiter: a long key is held as its SHA-256, marked apart.
  std::string digest(33, '\xff');
  api::Sha256(key, reinterpret_cast<unsigned char*>(digest.data() + 1));
  return digest;
}

FleetLimiter::Shard& FleetLimiter::ShardOf(std::string_view held_key) const {
  return shards_[(absl::HashOf(AbslView(held_key)) >> 32) % shard_count_];
}

double FleetLimiter::Share(const Entry& entry, size_t i, int64_t now) const {
  const double limit = static_cast<double>(specs_[i].requests);
  const uint32_t fleet = std::max<uint32_t>(1, fleet_size_.load(std::memory_order_relaxed));
  const int64_t contact = contact_ns_.load(std::memory_order_relaxed);
  double share;
  if (contact != kNever && now - contact <= options_.keep_share_for_ns) {
    share = entry.has_lease && contact - entry.lease_ns <= kLeaseCurrentNs ? entry.lease[i]
                                                                           : limit / fleet;
  } else if (i < options_.fallback_requests.size() && options_.fallback_requests[i] > 0) {
    share = static_cast<double>(options_.fallback_requests[i]);
  } else {
    share = limit / fleet;
  }
  return std::clamp(share, limit * kMinShareFraction / fleet, limit);
}

void FleetLimiter::Refill(Entry& entry, int64_t now) const {
  const int64_t elapsed = now - entry.refilled_ns;
  if (elapsed <= 0) return;
  for (size_t i = 0; i < specs_.size(); ++i) {
    const double share = Share(entry, i, now);
    const double capacity = std::max(share, 1.0);
    entry.tokens[i] = std::min(
        capacity, entry.tokens[i] + static_cast<double>(elapsed) * share /
                                        static_cast<double>(specs_[i].period_ns));
  }
  entry.refilled_ns = now;
}

void FleetLimiter::Take(std::string_view key, int64_t now, Decision* decision) {
  const std::string held = HeldKey(key);
  Shard& shard = ShardOf(held);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.map.find(held);
  if (it == shard.map.end()) {
    // The bound counts all shards together (see GcraLimiter::TakeHeld).
    if (keys_.load(std::memory_order_relaxed) >= max_keys_) Evict(shard, now);
    it = shard.map.try_emplace(held).first;
    keys_.fetch_add(1, std::memory_order_relaxed);
    Entry& fresh = it->second;
    fresh.refilled_ns = now;
    for (size_t i = 0; i < specs_.size(); ++i) fresh.tokens[i] = std::max(Share(fresh, i, now), 1.0);
  }
  Entry& entry = it->second;
  Refill(entry, now);
  ++entry.demand;
  const size_t n = specs_.size();
  bool allowed = true;
  for (size_t i = 0; i < n; ++i) allowed = allowed && entry.tokens[i] >= 1.0;
  if (allowed) {
    for (size_t i = 0; i < n; ++i) entry.tokens[i] -= 1.0;
  }
  decision->allowed = allowed;
  decision->retry_after_ns = 0;
  decision->count = n;
  for (size_t i = 0; i < n; ++i) {
    const double share = Share(entry, i, now);
    const double ns_per_token = static_cast<double>(specs_[i].period_ns) / share;
    LimitUsage& usage = decision->usage[i];
    // The fleet's limit; what remains is this proxy's part of it.
    usage.limit = specs_[i].requests;
    usage.remaining = static_cast<uint64_t>(std::floor(entry.tokens[i]));
    usage.reset_ns = static_cast<int64_t>(
        std::ceil((std::max(share, 1.0) - entry.tokens[i]) * ns_per_token));
    if (!allowed && entry.tokens[i] < 1.0) {
      decision->retry_after_ns =
          std::max(decision->retry_after_ns,
                   static_cast<int64_t>(std::ceil((1.0 - entry.tokens[i]) * ns_per_token)));
    }
  }
}

size_t FleetLimiter::DropFull(Shard& shard, int64_t now,
                              std::vector<std::pair<double, Map::iterator>>* active) {
  size_t freed = 0;
  for (auto it = shard.map.begin(); it != shard.map.end();) {
    Entry& entry = it->second;
    Refill(entry, now);
    double fullness = 1.0;
    for (size_t i = 0; i < specs_.size(); ++i) {
      fullness = std::min(fullness, entry.tokens[i] / std::max(Share(entry, i, now), 1.0));
    }
    if (fullness >= 1.0 && entry.demand == 0) {
      shard.map.erase(it++);
      ++freed;
    } else {
      if (active != nullptr) active->emplace_back(fullness, it);
      ++it;
    }
  }
  keys_.fetch_sub(freed, std::memory_order_relaxed);
  return freed;
}

void FleetLimiter::Evict(Shard& shard, int64_t now) {
  // As GcraLimiter::Evict: full buckets with no demand to report, this
  // shard's, then (the table still full) every other shard's; only when the
  // table is still full, this shard's fullest go.
  std::vector<std::pair<double, Map::iterator>> active;  // (fullness, entry)
  active.reserve(shard.map.size());
  DropFull(shard, now, &active);
  if (keys_.load(std::memory_order_relaxed) < max_keys_) return;
  if (SweepOtherShards(shards_.get(), shard_count_, shard, last_sweep_ns_, now, kSweepInterval,
                       [&](Shard& other) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                         DropFull(other, now, nullptr);
                       }) &&
      keys_.load(std::memory_order_relaxed) < max_keys_) {
    return;
  }
  size_t more = std::min(std::max<size_t>(1, shard.map.size() / 8), active.size());
  std::nth_element(active.begin(), active.begin() + more, active.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; i < more; ++i) shard.map.erase(active[i].second);
  keys_.fetch_sub(more, std::memory_order_relaxed);
}

size_t FleetLimiter::tracked_keys() const {
  size_t total = 0;
  for (size_t i = 0; i < shard_count_; ++i) {
    absl::MutexLock lock(&shards_[i].mu);
    total += shards_[i].map.size();
  }
  return total;
}

std::vector<FleetLimiter::KeyDemand> FleetLimiter::TakeDemand(size_t max_keys) {
  std::vector<KeyDemand> demand;
  // The keys with requests first, then the idle leased ones in the room
  // left: idle keys never crowd out a key that had requests.
  constexpr int kReportedNow = -1;
  for (size_t s = 0; s < shard_count_ && demand.size() < max_keys; ++s) {
    absl::MutexLock lock(&shards_[s].mu);
    for (auto& [key, entry] : shards_[s].map) {
      if (entry.demand == 0) continue;
      if (demand.size() >= max_keys) break;
      demand.push_back({key, entry.demand});
      entry.demand = 0;
      entry.idle_reports = kReportedNow;
    }
  }
  for (size_t s = 0; s < shard_count_; ++s) {
    absl::MutexLock lock(&shards_[s].mu);
    for (auto& [key, entry] : shards_[s].map) {
      if (entry.idle_reports == kReportedNow) {
        entry.idle_reports = 0;
        continue;
      }
      // Requests not reported for want of room wait for the next report.
      if (entry.demand > 0 || !entry.has_lease) continue;
      if (entry.idle_reports >= kIdleReports || ++entry.idle_reports >= kIdleReports) continue;
      if (demand.size() < max_keys) demand.push_back({key, 0});
    }
  }
  return demand;
}

void FleetLimiter::ApplyLeases(uint32_t fleet_size, const std::vector<KeyShares>& leases,
                               int64_t now) {
  for (const KeyShares& lease : leases) {
    Shard& shard = ShardOf(lease.key);
    absl::MutexLock lock(&shard.mu);
    auto it = shard.map.find(lease.key);
    if (it == shard.map.end()) continue;
    Entry& entry = it->second;
    Refill(entry, now);  // until now at the old share
    for (size_t i = 0; i < specs_.size(); ++i) {
      entry.lease[i] = i < lease.shares.size() ? lease.shares[i] : 0.0;
    }
    entry.has_lease = true;
    entry.lease_ns = now;
  }
  // Keys without a lease change share with the fleet's size; that share
  // counts from now on (a refill since ran at the old one only as far as
  // the clock's resolution allows: a negligible error).
  fleet_size_.store(fleet_size, std::memory_order_relaxed);
  contact_ns_.store(now, std::memory_order_relaxed);
}

double FleetLimiter::ShareOf(std::string_view key, size_t limit, int64_t now) {
  const std::string held = HeldKey(key);
  Shard& shard = ShardOf(held);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.map.find(held);
  Entry none;
  return Share(it == shard.map.end() ? none : it->second, limit, now);
}

}  // namespace sluice::policy::rate_limit
