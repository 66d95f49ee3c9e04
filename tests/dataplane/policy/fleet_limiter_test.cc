// FleetLimiter (rate-limit scope FLEET) on a fake clock: the share it
// enforces with and without a lease, the fallback once the control plane
// is silent, never zero, demand counting, the key cap, and the board's
// exchange in protos.
#include "dataplane/policy/rate_limit/fleet_limiter_impl.h"

#include <gtest/gtest.h>

#include "dataplane/policy/rate_limit/fleet_board.h"

namespace sluice::policy::rate_limit {
namespace {

constexpr int64_t kSecond = 1000000000;
constexpr int64_t kMs = 1000000;

// Requests admitted for `key` when `count` come evenly over [from, from+span).
int Admit(FleetLimiter& limiter, std::string_view key, int count, int64_t from, int64_t span) {
  int admitted = 0;
  Decision d;
  for (int i = 0; i < count; ++i) {
    limiter.Take(key, from + span * i / count, &d);
    admitted += d.allowed;
  }
  return admitted;
}

FleetLimiterOptions Options(int64_t keep_for = 30 * kSecond, std::vector<uint64_t> fallback = {}) {
  FleetLimiterOptions options;
  options.keep_share_for_ns = keep_for;
  options.fallback_requests = std::move(fallback);
  return options;
}

TEST(FleetLimiterTest, BeforeAnyLeaseTheFallbackApplies) {
  // 100 a second; no word from the control plane yet: the configured
  // fallback (20), or the whole limit without one.
  FleetLimiter with_fallback("p", {{100, kSecond}}, 1000, Options(30 * kSecond, {20}), nullptr);
  const int64_t t0 = 1000 * kSecond;
  EXPECT_NEAR(Admit(with_fallback, "alice", 1000, t0, kSecond), 20 + 20, 1);
  EXPECT_DOUBLE_EQ(with_fallback.ShareOf("alice", 0, t0), 20);
  FleetLimiter without("p", {{100, kSecond}}, 1000, Options(), nullptr);
  EXPECT_DOUBLE_EQ(without.ShareOf("alice", 0, t0), 100);
}

TEST(FleetLimiterTest, EnforcesItsLeasedShareAndDefaultsToLimitOverFleetSize) {
  FleetLimiter limiter("p", {{100, kSecond}}, 1000, Options(), nullptr);
  const int64_t t0 = 1000 * kSecond;
  Decision d;
  limiter.Take("alice", t0, &d);  // the key is known
  limiter.ApplyLeases(5, {{"alice", {30}}}, t0);
  EXPECT_DOUBLE_EQ(limiter.ShareOf("alice", 0, t0), 30);
  // A key without a lease: 100 / 5.
  EXPECT_DOUBLE_EQ(limiter.ShareOf("bob", 0, t0), 20);
  // Drained, the bucket refills at 30 a second: over 10 s, 300 (+ what was
  // left of the burst).
  Admit(limiter, "alice", 1000, t0, kMs);  // drain
  const int64_t t1 = t0 + kMs;
  // Leases keep coming every 200 ms with the same share.
  int admitted = 0;
  for (int i = 0; i < 50; ++i) {
    const int64_t at = t1 + i * 200 * kMs;
    limiter.ApplyLeases(5, {{"alice", {30}}}, at);
    admitted += Admit(limiter, "alice", 200, at, 200 * kMs);
  }
  EXPECT_NEAR(admitted, 300, 2);
  EXPECT_EQ(limiter.tracked_keys(), 1u);
}

TEST(FleetLimiterTest, AShareChangeCarriesTokensWithoutABurst) {
  FleetLimiter limiter("p", {{100, kSecond}}, 1000, Options(), nullptr);
  const int64_t t0 = 1000 * kSecond;
  Decision d;
  limiter.Take("alice", t0, &d);
  limiter.ApplyLeases(5, {{"alice", {10}}}, t0);
  Admit(limiter, "alice", 100, t0, kMs);  // drained
  // The share goes up to 90: the bucket does not jump to 90 tokens.
  limiter.ApplyLeases(5, {{"alice", {90}}}, t0 + kMs);
  EXPECT_LE(Admit(limiter, "alice", 100, t0 + kMs, kMs), 1);
  // Then it fills at 90 a second.
  EXPECT_NEAR(Admit(limiter, "alice", 1000, t0 + 2 * kMs, kSecond / 2), 45, 2);
}

TEST(FleetLimiterTest, SilentControlPlaneKeepsSharesThenFallsBackNeverZero) {
  FleetLimiter limiter("p", {{100, kSecond}}, 1000, Options(10 * kSecond, {}), nullptr);
  const int64_t t0 = 1000 * kSecond;
  Decision d;
  limiter.Take("alice", t0, &d);
  limiter.ApplyLeases(4, {{"alice", {70}}}, t0);
  // Silent for 9 s: still the last share.
  EXPECT_DOUBLE_EQ(limiter.ShareOf("alice", 0, t0 + 9 * kSecond), 70);
  EXPECT_DOUBLE_EQ(limiter.ShareOf("bob", 0, t0 + 9 * kSecond), 25);
  // After keep_share_for: limit / last fleet size.
  EXPECT_DOUBLE_EQ(limiter.ShareOf("alice", 0, t0 + 11 * kSecond), 25);
  int admitted = Admit(limiter, "alice", 1000, t0 + 20 * kSecond, 10 * kSecond);
  EXPECT_NEAR(admitted, 250 + 25, 3);  // rate plus the burst it had saved
  // A lease of 0 (a control plane's mistake) still admits: the floor.
  limiter.ApplyLeases(4, {{"alice", {0}}}, t0 + 30 * kSecond);
  EXPECT_GT(limiter.ShareOf("alice", 0, t0 + 30 * kSecond), 0);
  EXPECT_GE(Admit(limiter, "alice", 100, t0 + 31 * kSecond, 50 * kSecond), 1);
}

TEST(FleetLimiterTest, ConfiguredFallbackAfterExpiry) {
  FleetLimiter limiter("p", {{100, kSecond}, {1000, 60 * kSecond}}, 1000,
                       Options(5 * kSecond, {10, 0}), nullptr);
  const int64_t t0 = 1000 * kSecond;
  Decision d;
  limiter.Take("alice", t0, &d);
  limiter.ApplyLeases(2, {{"alice", {60, 600}}}, t0);
  EXPECT_DOUBLE_EQ(limiter.ShareOf("alice", 0, t0 + kSecond), 60);
  EXPECT_DOUBLE_EQ(limiter.ShareOf("alice", 1, t0 + kSecond), 600);
  EXPECT_DOUBLE_EQ(limiter.ShareOf("alice", 0, t0 + 6 * kSecond), 10);
  EXPECT_DOUBLE_EQ(limiter.ShareOf("alice", 1, t0 + 6 * kSecond), 500);
}

TEST(FleetLimiterTest, AKeyIdleWhileTheControlPlaneTalksGoesBackToTheDefault) {
  FleetLimiter limiter("p", {{100, kSecond}}, 1000, Options(), nullptr);
  const int64_t t0 = 1000 * kSecond;
  Decision d;
  limiter.Take("alice", t0, &d);
  limiter.ApplyLeases(5, {{"alice", {90}}}, t0);
  limiter.ApplyLeases(5, {}, t0 + 2 * kSecond);  // alice was not reported
  EXPECT_DOUBLE_EQ(limiter.ShareOf("alice", 0, t0 + 2 * kSecond), 20);
}

TEST(FleetLimiterTest, CountsDemandAdmittedOrNotAndBoundsKeys) {
  FleetLimiter limiter("p", {{5, kSecond}}, 2, Options(), nullptr);
  const int64_t t0 = 1000 * kSecond;
  EXPECT_EQ(Admit(limiter, "alice", 8, t0, kMs), 5);
  std::vector<FleetLimiter::KeyDemand> demand = limiter.TakeDemand(100);
  ASSERT_EQ(demand.size(), 1u);
  EXPECT_EQ(demand[0].key, "alice");
  EXPECT_EQ(demand[0].requests, 8u);
  EXPECT_TRUE(limiter.TakeDemand(100).empty());  // taken
  Admit(limiter, "bob", 1, t0, kMs);
  Admit(limiter, "carol", 1, t0 + 10 * kSecond, kMs);
  EXPECT_LE(limiter.tracked_keys(), 2u + 2);  // max_keys, plus one per shard at most
  // A long key is held (and reported) as a digest.
  std::string long_key(200, 'x');
  Admit(limiter, long_key, 1, t0 + 20 * kSecond, kMs);
  demand = limiter.TakeDemand(100);
  bool digest = false;
  for (const auto& k : demand) digest = digest || (k.key.size() == 33 && k.key[0] == '\xff');
  EXPECT_TRUE(digest);
}

// A leased key stays reported with 0 for kIdleReports reports after its
// last request, and such idle keys take only the room the keys with
// requests leave (before, a report full of idle keys left out keys that
// had requests).
TEST(FleetLimiterTest, IdleLeasedKeysAreReportedAfterTheBusyOnes) {
  FleetLimiter limiter("p", {{100, 60 * kSecond}}, 1000, Options(), nullptr);
  const int64_t t0 = 1000 * kSecond;
  for (const char* key : {"a", "b", "c"}) Admit(limiter, key, 1, t0, kMs);
  ASSERT_EQ(limiter.TakeDemand(100).size(), 3u);
  limiter.ApplyLeases(2, {{"a", {50}}, {"b", {50}}, {"c", {50}}}, t0 + kMs);
  for (int i = 0; i < 5; ++i) {
    Admit(limiter, "c", 1, t0 + (i + 1) * 200 * kMs, kMs);
    std::vector<FleetLimiter::KeyDemand> demand = limiter.TakeDemand(1);
    ASSERT_EQ(demand.size(), 1u);
    EXPECT_EQ(demand[0].key, "c");
    EXPECT_EQ(demand[0].requests, 1u);
  }
  // With room, the idle ones come too, with 0, until kIdleReports reports
  // have passed without a request.
  std::vector<FleetLimiter::KeyDemand> demand = limiter.TakeDemand(100);
  EXPECT_EQ(demand.size(), 3u);
  for (const auto& k : demand) EXPECT_EQ(k.requests, 0u) << k.key;
  int reports = 1;
  while (!limiter.TakeDemand(100).empty()) ++reports;
  EXPECT_EQ(reports, FleetLimiter::kIdleReports - 1);
}

TEST(FleetBoardTest, DemandAndLeasesGoByIdentity) {
  FleetBoard board;
  const int64_t t0 = 1000 * kSecond;
  FleetLimiter a("policy-a", {{100, kSecond}}, 100, Options(), &board);
  FleetLimiter b("policy-b", {{50, kSecond}}, 100, Options(), &board);
  Admit(a, "alice", 3, t0, kMs);
  EXPECT_FALSE(FleetBoard().MakeDemand(200).has_value());  // no FLEET policy
  discovery::v1::RateLimitDemand demand = *board.MakeDemand(200);
  EXPECT_EQ(demand.interval_ms(), 200u);
  ASSERT_EQ(demand.policies_size(), 1);  // b saw nothing
  EXPECT_EQ(demand.policies(0).identity(), "policy-a");
  ASSERT_EQ(demand.policies(0).limits_size(), 1);
  EXPECT_EQ(demand.policies(0).limits(0).period_ms(), 1000u);
  ASSERT_EQ(demand.policies(0).keys_size(), 1);
  EXPECT_EQ(demand.policies(0).keys(0).requests(), 3u);

  Admit(b, "alice", 1, t0, kMs);
  discovery::v1::RateLimitLeases leases;
  leases.set_fleet_size(2);
  auto* policy = leases.add_policies();
  policy->set_identity("policy-a");
  auto* key = policy->add_keys();
  key->set_key("alice");
  key->add_shares(80);
  board.ApplyLeases(leases, t0 + kMs);
  EXPECT_DOUBLE_EQ(a.ShareOf("alice", 0, t0 + kMs), 80);
  EXPECT_DOUBLE_EQ(b.ShareOf("alice", 0, t0 + kMs), 25);  // 50 / 2: no lease
  // The fleet size heard goes back in the next demand (a restarted control
  // plane keeps the parts of the proxies not back yet).
  EXPECT_EQ(demand.fleet_size_heard(), 0u);
  EXPECT_EQ(board.MakeDemand(200)->fleet_size_heard(), 2u);
}

}  // namespace
}  // namespace sluice::policy::rate_limit
