// LeaseAllocator: the division of a limit by demand (skews, headroom,
// floor) and the reports of proxies over time on an injected clock: join,
// leave (disconnect and idle), the fleet's size.
#include "controlplane/server/rate_limit_leases.h"

#include <gtest/gtest.h>

#include <cmath>

#include <numeric>
#include <string>
#include <vector>

namespace sluice::controlplane {
namespace {

constexpr double kFloor = 0.05;

double Sum(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }

// Demand `total` per second split by `percent`.
std::vector<double> Skew(double total, const std::vector<double>& percent) {
  std::vector<double> demand;
  for (double p : percent) demand.push_back(total * p / 100);
  return demand;
}

// In overload the heavy shares plus the light proxies' demand make the limit;
// a light proxy gets 15% over its demand (at most the even share).
double Committed(const std::vector<double>& shares, const std::vector<double>& demand,
                 double limit) {
  const double equal = limit / static_cast<double>(demand.size());
  double sum = 0;
  for (size_t i = 0; i < shares.size(); ++i) sum += demand[i] <= equal ? demand[i] : shares[i];
  return sum;
}

TEST(LeaseDivideTest, OverloadSkewedSharesMakeTheLimit) {
  // 600 a minute = 10 a second, demand 1.5x the limit.
  for (const auto& skew : std::vector<std::vector<double>>{
           {70, 3, 9, 9, 9}, {20, 20, 20, 20, 20}, {97, 1, 1, 1, 0}}) {
    std::vector<double> demand = Skew(15, skew);
    std::vector<double> shares = LeaseAllocator::Divide(10, demand, kFloor);
    ASSERT_EQ(shares.size(), demand.size());
    EXPECT_NEAR(Committed(shares, demand, 10), 10, 1e-9) << skew[0];
    for (double share : shares) EXPECT_GT(share, 0);  // never zero
  }
  // 70/3/9/9/9: the light ones get their demand and 15%, the heavy one the
  // rest of the limit after their demand.
  std::vector<double> shares = LeaseAllocator::Divide(10, Skew(15, {70, 3, 9, 9, 9}), kFloor);
  EXPECT_NEAR(shares[1], 0.45 * 1.15, 1e-9);
  EXPECT_NEAR(shares[2], 1.35 * 1.15, 1e-9);
  EXPECT_NEAR(shares[0], 10 - 0.45 - 3 * 1.35, 1e-9);
  // Even load: even shares summing to the limit.
  shares = LeaseAllocator::Divide(10, Skew(15, {20, 20, 20, 20, 20}), kFloor);
  for (double share : shares) EXPECT_NEAR(share, 2, 1e-9);
  // A light one near the even share gets at most the even share.
  shares = LeaseAllocator::Divide(10, {3.2, 6, 12}, kFloor);
  EXPECT_NEAR(shares[0], 10.0 / 3, 1e-9);
  // Two heavy ones split what is left by how much more they want.
  shares = LeaseAllocator::Divide(10, {1, 6, 12}, kFloor);
  EXPECT_NEAR(shares[0], 1.15, 1e-9);
  EXPECT_NEAR(shares[1], 10.0 / 3 + 7.0 / 3 * (6 - 10.0 / 3) / (6 + 12 - 20.0 / 3), 1e-9);
  EXPECT_NEAR(shares[1] + shares[2], 9, 1e-9);
}

// A light proxy whose bucket is shallow (under 10 requests a window) gets
// two standard deviations of a Poisson count as room, not 15%: at 0.8 a
// SECOND a share of 0.92 (a bucket of one token) refused half of its
// callers. The heavy one still gets the limit less the light one's demand.
TEST(LeaseDivideTest, AShallowBucketGetsRoomForItsRandomness) {
  std::vector<double> shares = LeaseAllocator::Divide(20, {14, 0.8, 2.7, 2.7, 2.7}, kFloor, 1);
  EXPECT_NEAR(shares[1], 0.8 + 2 * std::sqrt(0.8), 1e-9);
  EXPECT_NEAR(shares[2], 4, 1e-9);  // 2.7 + 3.3, capped at the even share
  EXPECT_NEAR(shares[0], 20 - 0.8 - 3 * 2.7, 1e-9);
  shares = LeaseAllocator::Divide(20, {18, 0.8, 1, 1, 1}, kFloor, 1);
  EXPECT_NEAR(shares[2], 3, 1e-9);
  // A minute's window: 0.8 a second is 48 a window, deep enough for 15%.
  shares = LeaseAllocator::Divide(20, {14, 0.8, 2.7, 2.7, 2.7}, kFloor, 60);
  EXPECT_NEAR(shares[1], 0.8 * 1.15, 1e-9);
}

TEST(LeaseDivideTest, HeadroomIsSplitEvenlyAndTheFloorHolds) {
  std::vector<double> shares = LeaseAllocator::Divide(10, {4, 1, 0}, kFloor);
  EXPECT_NEAR(shares[0], 4 + 5.0 / 3, 1e-9);
  EXPECT_NEAR(shares[2], 5.0 / 3, 1e-9);
  EXPECT_NEAR(Sum(shares), 10, 1e-9);
  // 97/1/1/1/0 in overload: the idle one is not starved to zero.
  shares = LeaseAllocator::Divide(10, Skew(20, {97, 1, 1, 1, 0}), kFloor);
  EXPECT_NEAR(shares[4], kFloor * 10 / 5, 1e-9);
  EXPECT_NEAR(shares[1], 0.2 * 1.15, 1e-9);
  EXPECT_NEAR(shares[0], 10 - 0.6, 1e-9);
  EXPECT_TRUE(LeaseAllocator::Divide(10, {}, kFloor).empty());
}

discovery::v1::RateLimitDemand Demand(uint64_t requests, std::string key = "alice",
                                      uint64_t interval_ms = 200) {
  discovery::v1::RateLimitDemand demand;
  demand.set_interval_ms(interval_ms);
  if (requests == 0) return demand;
  discovery::v1::PolicyDemand* policy = demand.add_policies();
  policy->set_identity("policy-1");
  discovery::v1::FleetLimit* limit = policy->add_limits();
  limit->set_requests(600);
  limit->set_period_ms(60000);
  discovery::v1::KeyDemand* k = policy->add_keys();
  k->set_key(key);
  k->set_requests(requests);
  return demand;
}

// The share (per minute) in an answer, or -1 when the key got none.
double ShareIn(const discovery::v1::RateLimitLeases& leases, const std::string& key = "alice") {
  for (const auto& policy : leases.policies()) {
    for (const auto& lease : policy.keys()) {
      if (lease.key() == key && lease.shares_size() == 1) return lease.shares(0);
    }
  }
  return -1;
}

class LeaseAllocatorTest : public ::testing::Test {
 protected:
  // Every proxy reports once per 200 ms interval, `requests` each; returns
  // the last answers.
  std::vector<double> Round(const std::vector<uint64_t>& requests, uint64_t interval_ms = 200) {
    now_ += absl::Milliseconds(interval_ms);
    std::vector<double> shares;
    for (size_t p = 0; p < requests.size(); ++p) {
      last_ = allocator_.Report(p + 1, Demand(requests[p], "alice", interval_ms), now_);
      shares.push_back(ShareIn(last_));
    }
    return shares;
  }

  LeaseAllocator allocator_;
  absl::Time now_ = absl::FromUnixSeconds(1000);
  discovery::v1::RateLimitLeases last_;
};

TEST_F(LeaseAllocatorTest, SkewedDemandConvergesToTheDivision) {
  // 21 a second in all against 10 a second (600 a minute), 14/1/2/2/2 a
  // second: the even share is 2, so all but the first are light and the
  // first gets what their demand leaves. The estimates start from 0.
  std::vector<double> shares;
  for (int i = 0; i < 40; ++i) shares = Round({14, 1, 2, 2, 2}, 1000);
  EXPECT_EQ(last_.fleet_size(), 5u);
  EXPECT_NEAR(shares[0], 180, 2);  // per minute
  EXPECT_NEAR(shares[1], 60 * 1.15, 1);
  EXPECT_NEAR(shares[2], 120, 1);  // capped at the even share
  // The load moves to proxy 2: the shares follow within some 20 reports
  // of a second (proxy 1 counts as heavy until its demand is under the
  // even share; the slow average's time constant is 6.5 s), the rest as
  // the slow average settles.
  for (int i = 0; i < 25; ++i) shares = Round({1, 14, 2, 2, 2}, 1000);
  EXPECT_GT(shares[1], 150);
  EXPECT_LT(shares[0], 90);
  for (int i = 0; i < 40; ++i) shares = Round({1, 14, 2, 2, 2}, 1000);
  EXPECT_NEAR(shares[1], 180, 2);
  EXPECT_NEAR(shares[0], 60 * 1.15, 2);
}

// A proxy with a request every few report intervals: its fast average
// jumps between 0 and 5 a second; the heavy proxy's share is the limit
// less the light one's slow average, not less its fast one capped at the
// even share (which gave it more on average than the light one left).
TEST_F(LeaseAllocatorTest, ASparseProxyIsCountedAtItsAverage) {
  // 100 a minute: 1.67 a second, the even share 0.83. Proxy 1 sends 2.5 a
  // second; proxy 2 one request every 8th interval (0.625 a second), and
  // reports the key with 0 in between, as a proxy does while it holds a
  // lease.
  auto demand = [](uint64_t requests) {
    discovery::v1::RateLimitDemand d;
    d.set_interval_ms(200);
    discovery::v1::PolicyDemand* policy = d.add_policies();
    policy->set_identity("policy-1");
    policy->add_limits()->set_requests(100);
    policy->mutable_limits(0)->set_period_ms(60000);
    discovery::v1::KeyDemand* k = policy->add_keys();
    k->set_key("alice");
    k->set_requests(requests);
    return d;
  };
  double sum = 0;
  int n = 0;
  for (int i = 0; i < 800; ++i) {
    now_ += absl::Milliseconds(200);
    double share = ShareIn(allocator_.Report(1, demand(i % 2 == 0 ? 1 : 0), now_));
    allocator_.Report(2, demand(i % 8 == 0 ? 1 : 0), now_);
    if (i >= 200) {
      sum += share;
      ++n;
    }
  }
  // Proxy 1's share: 100 less proxy 2's 37.5 a minute (before: 66).
  EXPECT_NEAR(sum / n, 62.5, 2.5);
}

TEST_F(LeaseAllocatorTest, JoinAndLeaveGiveAndTakeBackShares) {
  std::vector<double> shares;
  for (int i = 0; i < 10; ++i) shares = Round({10, 10});
  EXPECT_NEAR(shares[0], 300, 1e-6);
  EXPECT_NEAR(shares[1], 300, 1e-6);
  // A third proxy joins with the same demand (50 a second, 5x the limit):
  // within a few intervals the three split the limit.
  for (int i = 0; i < 5; ++i) shares = Round({10, 10, 10});
  EXPECT_NEAR(shares[0], 200, 1e-6);
  EXPECT_NEAR(shares[2], 200, 1e-6);
  EXPECT_EQ(last_.fleet_size(), 3u);
  // Proxy 3 disconnects: the next answers split between the two at once.
  allocator_.Disconnect(3);
  shares = Round({10, 10});
  EXPECT_NEAR(shares[0], 300, 1e-6);
  EXPECT_EQ(last_.fleet_size(), 2u);
  // Proxy 2 stays connected but its traffic for the key stops: after
  // idle_reports zero samples it gives its share back.
  Round({10, 0});
  shares = Round({10, 0});
  EXPECT_EQ(shares[1], -1);  // no lease for a key it did not report
  EXPECT_NEAR(shares[0], 600, 1e-6);
  EXPECT_EQ(allocator_.tracked_keys(), 1u);
  EXPECT_EQ(last_.fleet_size(), 2u);  // still in the fleet: it reports
  // Everyone leaves: nothing is held.
  allocator_.Disconnect(1);
  allocator_.Disconnect(2);
  EXPECT_EQ(allocator_.tracked_keys(), 0u);
  EXPECT_EQ(allocator_.fleet_size(now_), 0u);
}

// A restarted control plane hears its proxies again one by one; those not
// back yet admit limit / the fleet size they last heard. Dividing the whole
// limit among those back let the fleet over it (probe: +26% for 7 s while
// a light proxy's reconnect backoff ran): their part is kept for them.
TEST_F(LeaseAllocatorTest, ARestartKeepsThePartsOfProxiesNotBackYet) {
  auto report = [&](uint64_t proxy, uint32_t heard) {
    discovery::v1::RateLimitDemand demand = Demand(10);  // 50 a second, 5x the limit
    demand.set_fleet_size_heard(heard);
    last_ = allocator_.Report(proxy, demand, now_);
    return ShareIn(last_);
  };
  // Proxies 1 and 3 are back, 2 is not: they share 2/3 of the limit.
  double one = 0, three = 0;
  for (int i = 0; i < 10; ++i) {
    now_ += absl::Milliseconds(200);
    one = report(1, 3);
    three = report(3, 3);
  }
  EXPECT_NEAR(one, 200, 1e-6);
  EXPECT_NEAR(three, 200, 1e-6);
  EXPECT_EQ(last_.fleet_size(), 3u);
  // Proxy 2 comes back: the three split the whole limit.
  double two = 0;
  for (int i = 0; i < 5; ++i) {
    now_ += absl::Milliseconds(200);
    one = report(1, 3);
    two = report(2, 3);
    three = report(3, 3);
  }
  EXPECT_NEAR(one + two + three, 600, 1e-6);
  EXPECT_EQ(last_.fleet_size(), 3u);
  // One gone for good costs the others its part until the grace ends.
  allocator_.Disconnect(2);
  now_ += absl::Milliseconds(200);
  EXPECT_NEAR(report(1, 3), 200, 1e-6);
  now_ = absl::FromUnixSeconds(1000) + absl::Seconds(16);
  one = report(1, 3);
  three = report(3, 3);
  EXPECT_NEAR(one + three, 600, 1e-6);
  EXPECT_EQ(last_.fleet_size(), 2u);
  // A size heard after the grace no longer counts.
  EXPECT_NEAR(report(1, 5), 300, 1e-6);
  EXPECT_EQ(last_.fleet_size(), 2u);
}

TEST_F(LeaseAllocatorTest, SilentProxiesLeaveTheFleetSize) {
  Round({1, 1, 1});
  EXPECT_EQ(allocator_.fleet_size(now_), 3u);
  now_ += absl::Seconds(3);
  EXPECT_EQ(allocator_.fleet_size(now_), 0u);
}

TEST_F(LeaseAllocatorTest, KeysAreBounded) {
  LeaseAllocatorOptions options;
  options.max_keys = 2;
  LeaseAllocator small(options);
  discovery::v1::RateLimitDemand demand = Demand(1, "a");
  for (const char* key : {"b", "c"}) {
    auto* k = demand.mutable_policies(0)->add_keys();
    k->set_key(key);
    k->set_requests(1);
  }
  discovery::v1::RateLimitLeases answer = small.Report(1, demand, now_);
  EXPECT_GT(ShareIn(answer, "a"), 0);
  EXPECT_GT(ShareIn(answer, "b"), 0);
  EXPECT_EQ(ShareIn(answer, "c"), -1);
  EXPECT_EQ(small.tracked_keys(), 2u);
}

}  // namespace
}  // namespace sluice::controlplane
