#include "controlplane/server/rate_limit_leases.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace sluice::controlplane {
namespace {

// A light proxy's share over its demand.
constexpr double kLightRoom = 1.15;
// Requests a window under which a light proxy's bucket is too shallow to
// take the randomness of its arrivals.
constexpr double kShallowBucket = 10;

// Both averages take an interval's sample. The slow one is the plain mean
// of the samples so far while that weighs a sample more (the first
// intervals after a proxy joins the key), so it starts at the proxy's rate
// instead of climbing from 0 for seconds.
void Sample(LeaseAllocator::Client& client, double sample, double w, double ws) {
  client.rate = w * sample + (1 - w) * client.rate;
  ++client.samples;
  const double weight = std::max(ws, 1.0 / static_cast<double>(client.samples));
  client.smooth = weight * sample + (1 - weight) * client.smooth;
}

// The demand a proxy is counted at when dividing. The fast average of a
// proxy with a request every few intervals jumps between 0 and 5 a second
// (one request in 200 ms), and the division, which counts a light proxy at
// most at the even share, then gave the heavy ones more on average than the
// light one left (+10% a minute at 100 a minute over 80/20); so the slow
// average, unless the fast one is off it by more than its own noise (three
// standard deviations of an EWMA of Poisson counts at the slow rate): the
// traffic really changed, and the share follows at the fast pace.
double DividedDemand(const LeaseAllocator::Client& client, double w, double interval_s) {
  const double deviation = std::sqrt(w / (2 - w) * client.smooth / interval_s);
  return std::abs(client.rate - client.smooth) > 3 * deviation ? client.rate : client.smooth;
}

}  // namespace

LeaseAllocator::LeaseAllocator(LeaseAllocatorOptions options) : options_(std::move(options)) {}

std::vector<double> LeaseAllocator::Divide(double limit, const std::vector<double>& demand,
                                           double floor_fraction, double window_seconds) {
  const size_t n = demand.size();
  std::vector<double> shares(n, 0.0);
  if (n == 0) return shares;
  double total = 0;
  for (double d : demand) total += std::max(d, 0.0);
  if (total <= limit) {
    const double headroom = (limit - total) / static_cast<double>(n);
    for (size_t i = 0; i < n; ++i) shares[i] = std::max(demand[i], 0.0) + headroom;
  } else {
    // Doorman's ProportionalShare, with room for the light proxies: those
    // under the even share are counted at their demand and get 15%
    // more (at most the even share), so that their randomness is not
    // refused;
    // what the even shares leave goes to the heavy ones in proportion to
    // how much more they want.
    const double equal = limit / static_cast<double>(n);
    double leftover = 0;
    double wants_more = 0;
    for (size_t i = 0; i < n; ++i) {
      const double d = std::max(demand[i], 0.0);
      if (d <= equal) {
        // Room for the randomness of its arrivals: 15%; and where its
        // bucket (a window of its share) is too shallow to take that
        // randomness, under 10 requests a window, at least two standard
        // deviations of a Poisson count over a window (a light proxy on a
        // limit per SECOND sees a request or two a window: a share of 1.15
        // of them, a bucket of one token, refused half of its callers while
        // the fleet had room). It uses the room only as its requests come,
        // and the others are given the limit less its demand, not less its
        // share.
        double room = kLightRoom * d;
        if (window_seconds > 0 && d * window_seconds < kShallowBucket) {
          room = std::max(room, d + 2 * std::sqrt(d / window_seconds));
        }
        shares[i] = std::min(room, equal);
        leftover += equal - d;
      } else {
        shares[i] = equal;
        wants_more += d - equal;
      }
    }
    for (size_t i = 0; i < n; ++i) {
      if (demand[i] > equal && wants_more > 0) {
        shares[i] += leftover * (demand[i] - equal) / wants_more;
      }
    }
  }
  const double floor = floor_fraction * limit / static_cast<double>(n);
  for (double& share : shares) share = std::max(share, floor);
  return shares;
}

size_t LeaseAllocator::FleetSize(absl::Time now) {
  size_t size = 0;
  for (const auto& [proxy, at] : last_report_) {
    if (now - at <= options_.member_timeout) ++size;
  }
  return size + other_replicas_proxies_;
}

size_t LeaseAllocator::ExpectedFleet(absl::Time now) {
  if (first_report_ == absl::InfinitePast() || now - first_report_ > options_.rejoin_grace) {
    return 0;
  }
  return heard_fleet_;
}

size_t LeaseAllocator::fleet_size(absl::Time now) {
  absl::MutexLock lock(&mu_);
  return FleetSize(now);
}

size_t LeaseAllocator::own_proxies(absl::Time now) {
  absl::MutexLock lock(&mu_);
  return FleetSize(now) - other_replicas_proxies_;
}

void LeaseAllocator::SetOtherReplicasProxies(size_t proxies) {
  absl::MutexLock lock(&mu_);
  other_replicas_proxies_ = proxies;
}

std::string LeaseAllocator::ShareKey(const std::string& identity, const std::string& key) {
  return absl::StrCat(identity, std::string(1, '\0'), key);
}

absl::flat_hash_map<std::string, double> LeaseAllocator::Demand() {
  absl::MutexLock lock(&mu_);
  absl::flat_hash_map<std::string, double> demand;
  demand.reserve(keys_.size());
  for (const auto& [id, state] : keys_) {
    double sum = 0;
    for (const auto& [proxy, client] : state.clients) sum += client.smooth;
    demand[id] = sum;
  }
  return demand;
}

void LeaseAllocator::SetReplicaShares(absl::flat_hash_map<std::string, double> fractions,
                                      size_t replicas) {
  absl::MutexLock lock(&mu_);
  replica_shares_ = std::move(fractions);
  new_key_fraction_ = 1.0 / static_cast<double>(std::max<size_t>(replicas, 1));
}

size_t LeaseAllocator::tracked_keys() {
  absl::MutexLock lock(&mu_);
  return keys_.size();
}

discovery::v1::RateLimitLeases LeaseAllocator::Report(
    uint64_t proxy, const discovery::v1::RateLimitDemand& demand, absl::Time now) {
  absl::MutexLock lock(&mu_);
  last_report_[proxy] = now;
  if (first_report_ == absl::InfinitePast()) first_report_ = now;
  if (now - first_report_ <= options_.rejoin_grace) {
    heard_fleet_ = std::max<size_t>(heard_fleet_, demand.fleet_size_heard());
  }
  const double interval_s =
      static_cast<double>(std::max<uint64_t>(demand.interval_ms(), 1)) / 1000.0;
  const double w = options_.ewma_weight;
  // The slow average's weight for this interval: a time constant, whatever
  // the report interval.
  const double ws = 1 - std::exp(-interval_s / absl::ToDoubleSeconds(options_.smooth_time));
  absl::flat_hash_set<std::string>& joined = joined_[proxy];
  absl::flat_hash_set<std::string> reported;

  // 1. This interval's samples for the keys it reported.
  for (const discovery::v1::PolicyDemand& policy : demand.policies()) {
    std::vector<double> limits, periods;
    for (const discovery::v1::FleetLimit& limit : policy.limits()) {
      if (limit.period_ms() == 0 || limit.requests() == 0) break;
      periods.push_back(static_cast<double>(limit.period_ms()) / 1000.0);
      limits.push_back(static_cast<double>(limit.requests()) / periods.back());
    }
    if (limits.size() != static_cast<size_t>(policy.limits_size())) continue;  // malformed
    for (const discovery::v1::KeyDemand& key : policy.keys()) {
      std::string id = ShareKey(policy.identity(), key.key());
      auto it = keys_.find(id);
      if (it == keys_.end()) {
        if (keys_.size() >= options_.max_keys) continue;
        it = keys_.try_emplace(id).first;
      }
      KeyState& state = it->second;
      state.limits_per_second = limits;
      state.periods_seconds = periods;
      const double sample = static_cast<double>(key.requests()) / interval_s;
      auto client = state.clients.try_emplace(proxy).first;
      // A proxy joining a key was idle on it: the fast average starts from
      // 0; the slow one is the mean of its intervals so far (a rare
      // caller's one request counts as 5 a second for one interval, then
      // as 5 / k after k).
      Sample(client->second, sample, w, ws);
      client->second.idle = 0;
      joined.insert(id);
      reported.insert(std::move(id));
    }
  }
  // 2. A zero sample for the keys it is in but did not report.
  std::vector<std::string> left;
  for (const std::string& id : joined) {
    if (reported.contains(id)) continue;
    auto it = keys_.find(id);
    if (it == keys_.end()) {
      left.push_back(id);
      continue;
    }
    Client& client = it->second.clients[proxy];
    Sample(client, 0, w, ws);
    if (++client.idle >= options_.idle_reports) {
      it->second.clients.erase(proxy);
      if (it->second.clients.empty()) keys_.erase(it);
      left.push_back(id);
    }
  }
  for (const std::string& id : left) joined.erase(id);

  // 3. Its shares of the keys it reported.
  // The proxies not back yet since a restart admit limit / `fleet` each:
  // theirs is kept.
  const size_t here = FleetSize(now);
  const size_t fleet = std::max(here, ExpectedFleet(now));
  const double kept_for_missing =
      fleet > here ? static_cast<double>(fleet - here) / static_cast<double>(fleet) : 0.0;
  discovery::v1::RateLimitLeases answer;
  answer.set_fleet_size(static_cast<uint32_t>(fleet));
  for (const discovery::v1::PolicyDemand& policy : demand.policies()) {
    discovery::v1::PolicyLeases* out = nullptr;
    for (const discovery::v1::KeyDemand& key : policy.keys()) {
      const std::string id = ShareKey(policy.identity(), key.key());
      auto it = keys_.find(id);
      if (it == keys_.end() || !it->second.clients.contains(proxy)) continue;
      auto share = replica_shares_.find(id);
      const double fraction =
          share == replica_shares_.end() ? new_key_fraction_ : share->second;
      const KeyState& state = it->second;
      std::vector<double> rates;
      size_t self = 0;
      for (const auto& [id, client] : state.clients) {
        if (id == proxy) self = rates.size();
        rates.push_back(DividedDemand(client, w, interval_s));
      }
      if (out == nullptr) {
        out = answer.add_policies();
        out->set_identity(policy.identity());
      }
      discovery::v1::KeyLease* lease = out->add_keys();
      lease->set_key(key.key());
      for (size_t i = 0; i < state.limits_per_second.size(); ++i) {
        std::vector<double> shares =
            Divide(state.limits_per_second[i] * fraction * (1 - kept_for_missing), rates,
                   options_.floor_fraction, state.periods_seconds[i]);
        lease->add_shares(shares[self] * state.periods_seconds[i]);
      }
    }
  }
  return answer;
}

void LeaseAllocator::Disconnect(uint64_t proxy) {
  absl::MutexLock lock(&mu_);
  last_report_.erase(proxy);
  auto joined = joined_.find(proxy);
  if (joined == joined_.end()) return;
  for (const std::string& id : joined->second) {
    auto it = keys_.find(id);
    if (it == keys_.end()) continue;
    it->second.clients.erase(proxy);
    if (it->second.clients.empty()) keys_.erase(it);
  }
  joined_.erase(joined);
}

}  // namespace sluice::controlplane
