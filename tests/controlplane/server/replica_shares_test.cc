// ReplicaShareExchange: several control-plane replicas divide each FLEET
// limit between them by their proxies' demand (through a fake of etcd's
// leases/ keys, on an injected clock): the division, the floor, a replica
// whose entry stops changing or disappears, the entries' encoding.
#include "controlplane/server/replica_shares.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace sluice::controlplane {
namespace {

constexpr double kFloor = 0.05;

// etcd's leases/ keys: a revision per write, as etcd's mod_revision.
class FakeBoard : public ReplicaDemandBoard {
 public:
  absl::Status Publish(const std::string& replica, std::string value) override {
    if (!available) return absl::UnavailableError("etcd: no quorum");
    entries[replica] = {replica, std::move(value), ++revision_};
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<Entry>> ReadAll() override {
    if (!available) return absl::UnavailableError("etcd: no quorum");
    std::vector<Entry> all;
    for (const auto& [replica, entry] : entries) all.push_back(entry);
    return all;
  }
  absl::Status Remove(const std::string& replica, int64_t revision) override {
    ++removes;
    if (!available) return absl::UnavailableError("etcd: no quorum");
    auto it = entries.find(replica);
    if (it != entries.end() &&
        (revision == 0 || it->second.revision == revision)) {
      entries.erase(it);
    }
    return absl::OkStatus();
  }

  std::map<std::string, Entry> entries;
  bool available = true;
  int removes = 0;  // calls, each of which waits on etcd

 private:
  int64_t revision_ = 0;
};

TEST(ReplicaFractionsTest, DemandDividesTheLimit) {
  const std::string key = LeaseAllocator::ShareKey("policy-1", "alice");
  // 3:1 → 0.75 / 0.25.
  auto a = ReplicaFractions({{key, 3}}, {{{key, 1}}}, kFloor);
  auto b = ReplicaFractions({{key, 1}}, {{{key, 3}}}, kFloor);
  EXPECT_NEAR(a[key], 0.75, 1e-9);
  EXPECT_NEAR(b[key], 0.25, 1e-9);
  // A key only this replica has: the whole limit (no fraction set).
  // A key no other replica's proxies are on: the whole limit, named (an
  // absent key is one new since the exchange).
  EXPECT_EQ(ReplicaFractions({{key, 3}}, {{{"other", 1}}}, kFloor)[key], 1.0);
  EXPECT_EQ(ReplicaFractions({{key, 3}}, {}, kFloor)[key], 1.0);
  // No demand anywhere: even fractions.
  EXPECT_NEAR(
      ReplicaFractions({{key, 0}}, {{{key, 0}}, {{key, 0}}}, kFloor)[key],
      1.0 / 3, 1e-9);
}

TEST(ReplicaFractionsTest, TheFloorKeepsAnIdleReplicaServing) {
  const std::string key = LeaseAllocator::ShareKey("policy-1", "alice");
  // Demand 0 against 1000 on two others: 5% of an even third.
  EXPECT_NEAR(
      ReplicaFractions({{key, 0}}, {{{key, 1000}}, {{key, 1000}}}, kFloor)[key],
      kFloor / 3, 1e-12);
  // A tiny demand is lifted to the floor too; a large one is not lowered.
  EXPECT_NEAR(ReplicaFractions({{key, 1}}, {{{key, 999}}}, kFloor)[key],
              kFloor / 2, 1e-12);
  EXPECT_NEAR(ReplicaFractions({{key, 999}}, {{{key, 1}}}, kFloor)[key], 0.999,
              1e-12);
}

TEST(ReplicaDemandEncodingTest, RoundTripsAnyKeyAndRejectsGarbage) {
  ReplicaDemand demand{{LeaseAllocator::ShareKey("p\t1", "a\nb\\c"), 2.5},
                       {LeaseAllocator::ShareKey("p2", ""), 0}};
  size_t proxies = 0;
  absl::StatusOr<ReplicaDemand> decoded =
      DecodeReplicaDemand(EncodeReplicaDemand(demand, 7), &proxies);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, demand);
  EXPECT_EQ(proxies, 7u);
  // An older replica's entry has no count: 0.
  decoded = DecodeReplicaDemand("sluice-replica-demand 1\nk\\000x\t1\n", &proxies);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(proxies, 0u);
  EXPECT_FALSE(DecodeReplicaDemand("sluice-replica-demand 1\n#proxies\tmany\n").ok());
  EXPECT_FALSE(DecodeReplicaDemand("").ok());
  EXPECT_FALSE(DecodeReplicaDemand("sluice-replica-demand 1\nkey\n").ok());
  EXPECT_FALSE(DecodeReplicaDemand("sluice-replica-demand 1\nkey\t-1\n").ok());
  EXPECT_FALSE(
      DecodeReplicaDemand("sluice-replica-demand 1\nkey\tlots\n").ok());
}

discovery::v1::RateLimitDemand Demand(uint64_t requests, const std::string& key = "alice") {
  discovery::v1::RateLimitDemand demand;
  demand.set_interval_ms(1000);
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

double ShareIn(const discovery::v1::RateLimitLeases& leases, const std::string& key = "alice") {
  for (const auto& policy : leases.policies()) {
    for (const auto& lease : policy.keys()) {
      if (lease.key() == key && lease.shares_size() == 1)
        return lease.shares(0);
    }
  }
  return -1;
}

// Two replicas, each with one proxy on key "alice" (600 a minute).
class ReplicaShareExchangeTest : public ::testing::Test {
 protected:
  ReplicaShareOptions Options(const std::string& id) {
    ReplicaShareOptions options;
    options.replica_id = id;
    options.clock = [this] { return now_; };
    return options;
  }

  // Each proxy reports `a` and `b` requests for the last second; returns
  // the shares (per minute) they are answered with.
  std::pair<double, double> Second(uint64_t a, uint64_t b) {
    now_ += absl::Seconds(1);
    return {ShareIn(allocator_a_.Report(1, Demand(a), now_)),
            ShareIn(allocator_b_.Report(1, Demand(b), now_))};
  }

  absl::Time now_ = absl::FromUnixSeconds(1000);
  FakeBoard board_;
  LeaseAllocator allocator_a_;
  LeaseAllocator allocator_b_;
  ReplicaShareExchange a_{&board_, &allocator_a_, Options("a")};
  ReplicaShareExchange b_{&board_, &allocator_b_, Options("b")};
};

TEST_F(ReplicaShareExchangeTest, ReplicasSplitTheLimitByDemand) {
  // Before any exchange each replica gives its proxy the whole limit.
  EXPECT_NEAR(Second(30, 10).first, 600, 1e-6);
  for (int i = 0; i < 40; ++i) {
    Second(30, 10);
    ASSERT_TRUE(a_.RunOnce().ok());
    ASSERT_TRUE(b_.RunOnce().ok());
  }
  // Demand 3:1 (above the limit in all; the estimates converged): 450 and
  // 150 a minute, the limit in all.
  auto [share_a, share_b] = Second(30, 10);
  EXPECT_NEAR(share_a, 450, 0.5);
  EXPECT_NEAR(share_b, 150, 0.5);
  // The fleet size each answers with is the whole fleet's: a proxy that
  // loses its replica falls back to limit / 2, not the whole limit.
  EXPECT_EQ(allocator_a_.Report(1, Demand(30), now_).fleet_size(), 2u);
  EXPECT_EQ(allocator_b_.fleet_size(now_), 2u);
}

// A key that comes after the last exchange (a new caller's CLIENT_IP)
// gets limit / replicas on each until the next one: with etcd out of
// reach, every replica gave it the whole limit, as long as the outage
// lasted (a probe: 40 a minute admitted for a limit of 20 over two).
TEST_F(ReplicaShareExchangeTest, ANewKeyGetsItsPartWhileTheExchangeFails) {
  for (int i = 0; i < 5; ++i) {
    Second(30, 10);
    ASSERT_TRUE(a_.RunOnce().ok());
    ASSERT_TRUE(b_.RunOnce().ok());
  }
  board_.available = false;
  EXPECT_FALSE(a_.RunOnce().ok());
  EXPECT_FALSE(b_.RunOnce().ok());
  for (int i = 0; i < 10; ++i) {
    now_ += absl::Seconds(1);
    EXPECT_NEAR(ShareIn(allocator_a_.Report(1, Demand(5, "bob"), now_), "bob"), 300, 0.5) << i;
    EXPECT_NEAR(ShareIn(allocator_b_.Report(1, Demand(5, "bob"), now_), "bob"), 300, 0.5) << i;
    EXPECT_FALSE(a_.RunOnce().ok());
    EXPECT_FALSE(b_.RunOnce().ok());
  }
  // Back: a key only A's proxy is on gets the whole limit there.
  board_.available = true;
  now_ += absl::Seconds(1);
  allocator_a_.Report(1, Demand(5, "carol"), now_);
  ASSERT_TRUE(a_.RunOnce().ok());
  ASSERT_TRUE(b_.RunOnce().ok());
  now_ += absl::Seconds(1);
  EXPECT_NEAR(ShareIn(allocator_a_.Report(1, Demand(5, "carol"), now_), "carol"), 600, 0.5);
}

TEST_F(ReplicaShareExchangeTest, AGoneReplicaGivesBackItsShare) {
  for (int i = 0; i < 40; ++i) {
    Second(30, 10);
    ASSERT_TRUE(a_.RunOnce().ok());
    ASSERT_TRUE(b_.RunOnce().ok());
  }
  EXPECT_NEAR(Second(30, 10).first, 450, 0.5);
  // B dies without a word: its entry stays but stops changing (A sees its
  // last change in the run just made). A run that finds it unchanged for
  // more than stale_after (3 s) gives A the whole limit again.
  ASSERT_TRUE(a_.RunOnce().ok());
  for (int i = 1; i <= 5; ++i) {
    EXPECT_NEAR(Second(30, 10).first, i <= 4 ? 450 : 600, 0.5) << i << " s";
    ASSERT_TRUE(a_.RunOnce().ok());
  }
  EXPECT_TRUE(board_.entries.contains("b"));
  EXPECT_EQ(allocator_a_.fleet_size(now_), 1u);  // B's proxy no longer counted
  // Long dead: A deletes its entry.
  now_ += absl::Seconds(61);
  ASSERT_TRUE(a_.RunOnce().ok());
  EXPECT_FALSE(board_.entries.contains("b"));
  EXPECT_TRUE(board_.entries.contains("a"));
}

TEST_F(ReplicaShareExchangeTest, AStoppedReplicaRemovesItsEntryAtOnce) {
  for (int i = 0; i < 40; ++i) {
    Second(30, 10);
    ASSERT_TRUE(a_.RunOnce().ok());
    ASSERT_TRUE(b_.RunOnce().ok());
  }
  b_.Stop();
  EXPECT_FALSE(board_.entries.contains("b"));
  ASSERT_TRUE(a_.RunOnce().ok());
  EXPECT_NEAR(Second(30, 10).first, 600, 0.5);
}

// Stopping with the board out of reach does not wait on it once more to
// remove the entry (a SIGTERM took 15 s with etcd down).
TEST_F(ReplicaShareExchangeTest, AStoppingReplicaLeavesItsEntryWhenTheBoardJustFailed) {
  ASSERT_TRUE(b_.RunOnce().ok());
  board_.available = false;
  EXPECT_FALSE(b_.RunOnce().ok());
  const int before = board_.removes;
  b_.Stop();
  EXPECT_EQ(board_.removes, before);
}

TEST_F(ReplicaShareExchangeTest, WithoutTheBoardTheLastSharesStay) {
  for (int i = 0; i < 40; ++i) {
    Second(30, 10);
    ASSERT_TRUE(a_.RunOnce().ok());
    ASSERT_TRUE(b_.RunOnce().ok());
  }
  board_.available = false;
  EXPECT_EQ(a_.RunOnce().code(), absl::StatusCode::kUnavailable);
  EXPECT_NEAR(Second(30, 10).first, 450, 0.5);
}

}  // namespace
}  // namespace sluice::controlplane
