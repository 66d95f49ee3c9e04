#include "dataplane/upstream/endpoint_picker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace sluice::upstream {
namespace {

std::shared_ptr<const ClusterInfo> MakeCluster(std::vector<uint32_t> weights,
                                               config::v1::Cluster::LbPolicy policy,
                                               stats::StatsStore& store,
                                               bool outlier_detection = false) {
  config::v1::Cluster c;
  c.set_name("c");
  if (outlier_detection) {
    auto* od = c.mutable_outlier_detection();
    od->mutable_consecutive_5xx()->set_value(1);
    od->mutable_base_ejection_time()->set_seconds(1);
    od->mutable_max_ejection_percent()->set_value(100);
  }
  c.set_lb_policy(policy);
  for (size_t i = 0; i < weights.size(); ++i) {
    auto* e = c.add_endpoints();
    e->set_address("127.0.0.1");
    e->set_port(9000 + static_cast<uint32_t>(i));
    e->set_weight(weights[i]);
  }
  static upstream::HealthRegistry registry;
  return *CompileCluster(c, /*resources=*/{}, store, registry);
}

TEST(EndpointPickerTest, RoundRobinVisitsEachEndpointInTurn) {
  stats::StatsStore store;
  auto cluster = MakeCluster({1, 1, 1}, config::v1::Cluster::ROUND_ROBIN, store);
  EndpointPicker picker(1);
  std::vector<int> order;
  for (int i = 0; i < 6; ++i) order.push_back(picker.Pick(*cluster));
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 0, 1, 2}));
}

// A retry avoids every endpoint the request tried, while one is left:
// with two of three down, A then B then the live one. Before: only the
// last one was avoided, and A, B, A failed every retry.
TEST(EndpointPickerTest, EveryTriedEndpointIsAvoidedWhileOneIsLeft) {
  stats::StatsStore store;
  for (auto policy : {config::v1::Cluster::ROUND_ROBIN, config::v1::Cluster::RANDOM,
                      config::v1::Cluster::LEAST_REQUEST}) {
    auto cluster = MakeCluster({100, 100, 1}, policy, store);
    EndpointPicker picker(7);
    for (int round = 0; round < 50; ++round) {
      std::vector<int> tried = {0, 1};
      EXPECT_EQ(picker.Pick(*cluster, 0, &tried), 2) << policy;
      tried = {1, 0, 2};  // all tried: one is still picked
      EXPECT_GE(picker.Pick(*cluster, 0, &tried), 0) << policy;
    }
  }
}

// In panic (too few usable endpoints: the first try spreads over all), a
// retry still goes to a usable endpoint it has not tried. Before: it spread
// over all too, and with 1 live endpoint of 3 half the retries of a
// connect failure hit the other dead one (502).
TEST(EndpointPickerTest, ARetryInPanicGoesToAnUntriedUsableEndpoint) {
  stats::StatsStore store;
  for (auto policy : {config::v1::Cluster::ROUND_ROBIN, config::v1::Cluster::RANDOM,
                      config::v1::Cluster::LEAST_REQUEST}) {
    auto cluster = MakeCluster({1, 1, 1}, policy, store, /*outlier_detection=*/true);
    const int64_t later = NowNanos() + int64_t{3600} * 1'000'000'000;
    cluster->endpoints[0].state->ejected_until_ns.store(later);
    cluster->endpoints[2].state->ejected_until_ns.store(later);
    EndpointPicker picker(11);
    std::map<int, int> first;
    for (int round = 0; round < 60; ++round) {
      ++first[picker.Pick(*cluster)];  // panic: over all three
      std::vector<int> tried = {0};
      EXPECT_EQ(picker.Pick(*cluster, 0, &tried), 1) << policy;
      tried = {2};
      EXPECT_EQ(picker.Pick(*cluster, 0, &tried), 1) << policy;
    }
    EXPECT_GT(first[0] + first[2], 0) << policy;  // panic: the dead ones too
    // The live one tried too: panic again, never the one just tried.
    std::vector<int> tried = {1};
    for (int round = 0; round < 20; ++round) EXPECT_NE(picker.Pick(*cluster, 0, &tried), 1);
  }
}

// In panic the first tries go round every endpoint in turn, however the
// retries go: a retry's pick passes over the endpoints it may not take
// without moving the rotation. Before: with a dead endpoint ahead of two
// unhealthy ones, each retry after the dead one moved the rotation past
// them, so the dead one drew every second first try and they none; and
// with a dead one just before a healthy one (and another dead one), the
// retry took the healthy one's turn, which drew no first try at all; the
// same with no endpoint usable, a dead one before each live one.
TEST(EndpointPickerTest, RetriesInPanicLeaveTheRoundRobinRotationEven) {
  stats::StatsStore store;
  auto cluster = MakeCluster({1, 1, 1, 1, 1}, config::v1::Cluster::ROUND_ROBIN, store,
                             /*outlier_detection=*/true);
  const int64_t later = NowNanos() + int64_t{3600} * 1'000'000'000;
  // {out of rotation, of them the dead ones (a connect fails: retried)}
  const std::vector<std::pair<std::vector<int>, std::vector<int>>> layouts = {
      {{1, 2, 3}, {1}},     // dead, unhealthy, unhealthy between two usable
      {{0, 1, 2}, {0, 2}},  // dead, unhealthy, dead, then two usable
      {{0, 1, 2, 3, 4}, {0, 2}},  // none usable: dead, unhealthy, dead, unhealthy x2
  };
  for (const auto& [out, dead] : layouts) {
    // Endpoint states are kept by address: another test's ejection may hold.
    for (int i = 0; i < 5; ++i) cluster->endpoints[i].state->ejected_until_ns.store(0);
    for (int i : out) cluster->endpoints[i].state->ejected_until_ns.store(later);
    EndpointPicker picker(5);
    std::map<int, int> first, again;
    int retries = 0;
    for (int round = 0; round < 100; ++round) {
      const int pick = picker.Pick(*cluster);
      ++first[pick];
      if (std::find(dead.begin(), dead.end(), pick) != dead.end()) {
        ++retries;
        std::vector<int> tried = {pick};
        ++again[picker.Pick(*cluster, 0, &tried)];
      }
    }
    for (int i = 0; i < 5; ++i) EXPECT_EQ(first[i], 20) << i << " of layout " << out[0];
    EXPECT_EQ(retries, 20 * static_cast<int>(dead.size()));
    // The retries go round the usable ones too (they all went to the first
    // usable one after the dead one: twice the other's load).
    int usable = 0;
    for (int i = 0; i < 5; ++i) {
      if (std::find(out.begin(), out.end(), i) != out.end()) continue;
      ++usable;
      EXPECT_EQ(again[i], retries / 2) << i << " of layout " << out[0];
    }
    if (out.size() == 5) {
      // None usable: a retry goes to an endpoint it has not tried, in turn.
      EXPECT_EQ(usable, 0);
      EXPECT_EQ(again[0] + again[1] + again[2] + again[3] + again[4], retries);
      continue;
    }
    EXPECT_EQ(usable, 2);
  }
}

// Once every endpoint was tried, the one tried longest ago is picked, never
// the one that just failed. Before: the oldest were excluded first, so with
// two endpoints the tries went A, B, B, B.
TEST(EndpointPickerTest, AllTriedPicksTheOneTriedLongestAgo) {
  stats::StatsStore store;
  for (auto policy : {config::v1::Cluster::ROUND_ROBIN, config::v1::Cluster::RANDOM,
                      config::v1::Cluster::LEAST_REQUEST}) {
    auto two = MakeCluster({1, 1}, policy, store);
    auto three = MakeCluster({1, 1, 1}, policy, store);
    EndpointPicker picker(3);
    for (int round = 0; round < 50; ++round) {
      std::vector<int> tried = {0, 1};  // 1 failed last
      EXPECT_EQ(picker.Pick(*two, 0, &tried), 0) << policy;
      tried = {1, 0};
      EXPECT_EQ(picker.Pick(*two, 0, &tried), 1) << policy;
      tried = {2, 0, 1};
      EXPECT_EQ(picker.Pick(*three, 0, &tried), 2) << policy;
    }
  }
}

// Smooth weighted round robin keeps its positions across versions of the
// cluster whose weights stay (a connect_timeout tuned). Before: every
// version started over, so the heaviest endpoint took the next pick.
TEST(EndpointPickerTest, WeightedPositionsSurviveAVersionThatKeepsTheWeights) {
  stats::StatsStore store;
  EndpointPicker picker(1);
  std::vector<int> order;
  for (int i = 0; i < 10; ++i) {
    // A new ClusterInfo each time: another version of cluster "c".
    auto cluster = MakeCluster({1, 2, 7}, config::v1::Cluster::ROUND_ROBIN, store);
    order.push_back(picker.Pick(*cluster));
  }
  EXPECT_EQ(std::count(order.begin(), order.end(), 2), 7);
  EXPECT_EQ(std::count(order.begin(), order.end(), 1), 2);
  EXPECT_EQ(std::count(order.begin(), order.end(), 0), 1);
  // Changed weights start over.
  auto changed = MakeCluster({7, 2, 1}, config::v1::Cluster::ROUND_ROBIN, store);
  EXPECT_EQ(picker.Pick(*changed), 0);
}

TEST(EndpointPickerTest, WeightedRoundRobinIsExactAndSmooth) {
  stats::StatsStore store;
  auto cluster = MakeCluster({5, 1, 1}, config::v1::Cluster::ROUND_ROBIN, store);
  EndpointPicker picker(1);
  std::map<int, int> counts;
  int longest_run = 0, run = 0, last = -1;
  for (int i = 0; i < 700; ++i) {
    int pick = picker.Pick(*cluster);
    counts[pick]++;
    run = pick == last ? run + 1 : 1;
    last = pick;
    longest_run = std::max(longest_run, run);
  }
  EXPECT_EQ(counts[0], 500);
  EXPECT_EQ(counts[1], 100);
  EXPECT_EQ(counts[2], 100);
  // Smooth: the light endpoints are interleaved (a a b a c a a ...), so the
  // heavy one never gets its whole share of a cycle and more in one run.
  EXPECT_LE(longest_run, 4);
}

// With unequal weights too, the retries of a failing endpoint go round
// weighted positions of their own: the first tries keep to the weights.
// Before: each retry moved the first tries' positions: weights 2/1/1/2
// with the second endpoint failing (no health information, so it stays in
// rotation) gave first tries of 39/20/20/41 in 120 here, 35/17/26/42
// through a proxy.
TEST(EndpointPickerTest, WeightedRetriesLeaveTheFirstTriesToTheWeights) {
  stats::StatsStore store;
  auto cluster = MakeCluster({2, 1, 1, 2}, config::v1::Cluster::ROUND_ROBIN, store);
  EndpointPicker picker(3);
  std::map<int, int> first, again;
  for (int round = 0; round < 120; ++round) {
    const int pick = picker.Pick(*cluster);
    ++first[pick];
    if (pick == 1) {
      std::vector<int> tried = {1};
      ++again[picker.Pick(*cluster, 0, &tried)];
    }
  }
  EXPECT_EQ(first[0], 40);
  EXPECT_EQ(first[1], 20);
  EXPECT_EQ(first[2], 20);
  EXPECT_EQ(first[3], 40);
  // The 20 retries go by weight over the other three: 8, 4, 8.
  EXPECT_EQ(again[1], 0);
  EXPECT_EQ(again[0], 8);
  EXPECT_EQ(again[2], 4);
  EXPECT_EQ(again[3], 8);
}

TEST(EndpointPickerTest, LeastRequestAvoidsBusyEndpoints) {
  stats::StatsStore store;
  auto cluster = MakeCluster({1, 1, 1, 1}, config::v1::Cluster::LEAST_REQUEST, store);
  EndpointPicker picker(7);
  for (int i = 0; i < 10; ++i) picker.RequestStarted(cluster->endpoints[0].pool_key);
  std::map<int, int> counts;
  for (int i = 0; i < 4000; ++i) counts[picker.Pick(*cluster)]++;
  // Endpoint 0 is only chosen when both random choices are endpoint 0, which
  // power-of-two never does (it draws two distinct endpoints).
  EXPECT_EQ(counts[0], 0);
  for (int e = 1; e < 4; ++e) EXPECT_NEAR(counts[e], 4000 / 3, 200) << e;
  for (int i = 0; i < 10; ++i) picker.RequestFinished(cluster->endpoints[0].pool_key);
  EXPECT_EQ(picker.active(cluster->endpoints[0].pool_key), 0);
}

TEST(EndpointPickerTest, LeastRequestHonoursWeights) {
  stats::StatsStore store;
  auto cluster = MakeCluster({3, 1}, config::v1::Cluster::LEAST_REQUEST, store);
  EndpointPicker picker(3);
  // Keep picks in flight: the weighted comparison should let endpoint 0 hold
  // about three times the requests of endpoint 1.
  for (int i = 0; i < 400; ++i) picker.RequestStarted(cluster->endpoints[picker.Pick(*cluster)].pool_key);
  double ratio = static_cast<double>(picker.active(cluster->endpoints[0].pool_key)) /
                 static_cast<double>(picker.active(cluster->endpoints[1].pool_key));
  EXPECT_NEAR(ratio, 3.0, 0.3);
}

// Light traffic (nothing in flight when a pick is made): the shares follow
// the weights, as for RANDOM. Before: ties were broken evenly, so weights
// 1/2/5 gave a third each.
TEST(EndpointPickerTest, LeastRequestFollowsWeightsWhenNothingIsInFlight) {
  stats::StatsStore store;
  auto cluster = MakeCluster({1, 2, 5}, config::v1::Cluster::LEAST_REQUEST, store);
  EndpointPicker picker(11);
  std::map<int, int> counts;
  for (int i = 0; i < 8000; ++i) counts[picker.Pick(*cluster)]++;
  EXPECT_NEAR(counts[0], 1000, 150);
  EXPECT_NEAR(counts[1], 2000, 200);
  EXPECT_NEAR(counts[2], 5000, 250);
}

TEST(EndpointPickerTest, StateSurvivesANewVersionOfTheCluster) {
  stats::StatsStore store;
  auto v1 = MakeCluster({1, 1, 1}, config::v1::Cluster::ROUND_ROBIN, store);
  auto v2 = MakeCluster({1, 1, 1}, config::v1::Cluster::ROUND_ROBIN, store);
  EndpointPicker picker(1);
  EXPECT_EQ(picker.Pick(*v1), 0);
  EXPECT_EQ(picker.Pick(*v2), 1);  // the rotation continues across versions
}

// The count that lengthens ejections decays by one for each decay period
// (here 10 s) the endpoint went without one; taking outlier detection off
// clears an ejection and its count.
TEST(EndpointPickerTest, EjectionCountsDecayAndGoWithTheirConfig) {
  stats::StatsStore store;
  auto cluster = MakeCluster({1, 1}, config::v1::Cluster::ROUND_ROBIN, store, true);
  const EndpointInfo& e = cluster->endpoints[0];
  const int64_t second = 1'000'000'000;
  // Ejected 3 times; the last ejection ended 25 s ago: two periods.
  e.state->times_ejected.store(3);
  e.state->ejected_until_ns.store(NowNanos() - 25 * second);
  // What /clusters shows as times_ejected until then (before: the 3 stored).
  const int64_t now = NowNanos();
  const absl::Duration period = EjectionDecayPeriod(cluster->outlier);
  EXPECT_EQ(DecayedTimesEjected(cluster->outlier, *e.state, now), 1u);
  EXPECT_EQ(DecayedTimes(3, now - 25 * second, now, period), 1u);
  EXPECT_EQ(DecayedTimes(3, now - 35 * second, now, period), 0u);
  EXPECT_EQ(DecayedTimes(3, now + 5 * second, now, period), 3u);  // ejected
  EXPECT_EQ(DecayedTimes(0, 0, now, period), 0u);
  ReportOutcome(*cluster, e, 503);
  EXPECT_EQ(e.state->times_ejected.load(), 2u);  // 3 - 2 + 1
  int64_t left = e.state->ejected_until_ns.load() - NowNanos();
  EXPECT_GT(left, 1 * second);
  EXPECT_LE(left, 2 * second);
  // Without a pause in between the count grows as before.
  e.state->ejected_until_ns.store(NowNanos() - 1);
  ReportOutcome(*cluster, e, 503);
  EXPECT_EQ(e.state->times_ejected.load(), 3u);

  auto off = MakeCluster({1, 1}, config::v1::Cluster::ROUND_ROBIN, store, false);
  EXPECT_FALSE(off->endpoints[0].state->ejected(NowNanos()));
  EXPECT_EQ(off->endpoints[0].state->times_ejected.load(), 0u);
}

// A version that changes the decay period keeps the decay so far and
// counts on with the new period from then. Before: the whole time since the
// last ejection was counted again with the new period, so raising
// base_ejection_time gave a long-healthy endpoint its old count back.
TEST(EndpointPickerTest, AChangedDecayPeriodKeepsTheDecaySoFar) {
  stats::StatsStore store;
  static upstream::HealthRegistry registry;
  auto version = [&](int base_seconds) {
    config::v1::Cluster c;
    c.set_name("decay");
    c.mutable_outlier_detection()->mutable_base_ejection_time()->set_seconds(base_seconds);
    auto* e = c.add_endpoints();
    e->set_address("127.0.0.1");
    e->set_port(9100);
    return *CompileCluster(c, /*resources=*/{}, store, registry);
  };
  const int64_t second = 1'000'000'000;
  auto fast = version(10);
  EndpointState& s = *fast->endpoints[0].state;
  s.times_ejected.store(2);
  s.ejected_until_ns.store(NowNanos() - 25 * second);  // two 10 s periods ago: 0 left
  EXPECT_EQ(DecayedTimesEjected(fast->outlier, s, NowNanos()), 0u);
  auto slow = version(400);
  EXPECT_EQ(DecayedTimesEjected(slow->outlier, s, NowNanos()), 0u);  // before: 2
  // And the other way: a count that had not decayed under 400 s stays.
  s.times_ejected.store(2);
  s.ejected_until_ns.store(NowNanos() - 25 * second);
  s.decay_from_ns.store(0);
  auto slow_again = version(400);
  EXPECT_EQ(DecayedTimesEjected(slow_again->outlier, s, NowNanos()), 2u);
  auto fast_again = version(10);
  EXPECT_EQ(DecayedTimesEjected(fast_again->outlier, s, NowNanos()), 2u);  // before: 0
  // The default max_ejection_time follows a longer base.
  EXPECT_EQ(version(600)->outlier.max_ejection_time, absl::Seconds(600));
  EXPECT_EQ(version(10)->outlier.max_ejection_time, absl::Seconds(300));
}

// Slow start: an endpoint that just joined takes min_weight_percent of its
// share, growing with the time since it joined (or since its ejection
// ended); once the window has passed, the weights are exact again.
TEST(EndpointPickerTest, SlowStartGrowsAJoiningEndpointsShare) {
  stats::StatsStore store;
  static upstream::HealthRegistry registry;
  for (auto policy : {config::v1::Cluster::ROUND_ROBIN, config::v1::Cluster::LEAST_REQUEST,
                      config::v1::Cluster::RANDOM}) {
    SCOPED_TRACE(config::v1::Cluster::LbPolicy_Name(policy));
    config::v1::Cluster c;
    c.set_name(absl::StrCat("slow-", policy));
    c.set_lb_policy(policy);
    c.mutable_slow_start()->mutable_window()->set_seconds(100);
    c.mutable_slow_start()->mutable_min_weight_percent()->set_value(10);
    for (uint32_t i = 0; i < 3; ++i) {
      auto* e = c.add_endpoints();
      e->set_address("127.0.0.1");
      e->set_port(9100 + i);
    }
    auto cluster = *CompileCluster(c, /*resources=*/{}, store, registry);
    ASSERT_EQ(cluster->slow_start_window_ns, int64_t{100} * 1000000000);
    const int64_t now = NowNanos();
    const int64_t second = 1000000000;
    auto joined = [&](int i, int64_t seconds_ago) {
      cluster->endpoints[i].state->joined_ns.store(now - seconds_ago * second);
    };
    auto share_of_2 = [&](int picks) {
      EndpointPicker picker(7);
      int count = 0;
      for (int k = 0; k < picks; ++k) count += picker.Pick(*cluster) == 2 ? 1 : 0;
      return static_cast<double>(count) / picks;
    };
    joined(0, 3600);
    joined(1, 3600);
    joined(2, 0);  // 10%: 0.1 / 2.1 of the picks
    EXPECT_NEAR(share_of_2(21000), 0.1 / 2.1, 0.015);
    joined(2, 50);  // 50%: 0.5 / 2.5
    EXPECT_NEAR(share_of_2(25000), 0.2, 0.02);
    joined(2, 101);  // past the window: an equal share
    EXPECT_NEAR(share_of_2(30000), 1.0 / 3, 0.02);
    // Back from an ejection that ended 5 s ago (it joined long before):
    // the minimum share again.
    cluster->endpoints[2].state->ejected_until_ns.store(now - 5 * second);
    EXPECT_NEAR(share_of_2(21000), 0.1 / 2.1, 0.015);
    cluster->endpoints[2].state->ejected_until_ns.store(0);
  }
}

// Slow start turned on for a cluster in service throttles none of the
// endpoints serving (only those that join from then on ramp), and an
// endpoint whose ejection ends because outlier detection was taken off
// ramps as one whose ejection ran out. Before: the one added just before
// slow start was turned on fell to 10%, and the uneject took it to 100% at
// once.
TEST(EndpointPickerTest, SlowStartTurnedOnThrottlesNoEndpointServing) {
  stats::StatsStore store;
  static upstream::HealthRegistry registry;
  auto compile = [&](int endpoints, bool slow, bool outlier) {
    config::v1::Cluster c;
    c.set_name("slow-on");
    if (slow) c.mutable_slow_start()->mutable_window()->set_seconds(100);
    if (outlier) c.mutable_outlier_detection()->mutable_consecutive_5xx()->set_value(1);
    for (int i = 0; i < endpoints; ++i) {
      auto* e = c.add_endpoints();
      e->set_address("127.0.0.1");
      e->set_port(9300 + static_cast<uint32_t>(i));
    }
    return *CompileCluster(c, /*resources=*/{}, store, registry);
  };
  auto permille = [](const std::shared_ptr<const ClusterInfo>& c, int i) {
    return SlowStartPermille(*c, *c->endpoints[i].state, NowNanos());
  };
  auto v1 = compile(2, false, true);
  auto v2 = compile(3, false, true);  // 9302 joins, no slow start yet
  auto v3 = compile(3, true, true);   // turned on
  EXPECT_EQ(permille(v3, 0), 1000);
  EXPECT_EQ(permille(v3, 2), 1000);
  auto v4 = compile(4, true, true);  // 9303 joins with slow start on
  EXPECT_EQ(permille(v4, 3), 100);
  // Ejected for 30 s more; outlier detection taken off: back now, ramping.
  v4->endpoints[1].state->ejected_until_ns.store(NowNanos() + int64_t{30} * 1000000000);
  auto v5 = compile(4, true, false);
  EXPECT_FALSE(v5->endpoints[1].state->ejected(NowNanos()));
  EXPECT_EQ(permille(v5, 1), 100);
  EXPECT_EQ(permille(v5, 0), 1000);
  // Off, then on again: the endpoints then serving keep their share.
  auto v6 = compile(4, false, false);
  auto v7 = compile(4, true, false);
  EXPECT_EQ(permille(v7, 1), 1000);
  EXPECT_EQ(permille(v7, 3), 1000);
}

}  // namespace
}  // namespace sluice::upstream
