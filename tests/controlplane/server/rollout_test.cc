// Canary rollouts: the verdict over figures (a pure function), the split of
// the fleet in ConfigState (which version each proxy is served), and the
// RolloutManager driven through a ProxyRegistry with an injected clock:
// a regression or a NACK rolls the canaries back, good figures promote, a
// restart mid-rollout puts every proxy back on the stable content.
#include "controlplane/server/rollout.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "tests/harness/process.h"

namespace sluice::controlplane {
namespace {

admin::v1::RolloutFigures Figures(uint64_t requests, uint64_t errors, double p99,
                                  uint32_t nacks = 0) {
  admin::v1::RolloutFigures f;
  f.set_requests(requests);
  f.set_responses_5xx(errors);
  f.set_p99_ms(p99);
  f.set_nacks(nacks);
  return f;
}

TEST(JudgeRolloutTest, ANackRollsBackAtOnce) {
  RolloutVerdict v = JudgeRollout(Figures(0, 0, 0, 1), Figures(0, 0, 0), {}, false);
  EXPECT_EQ(v.decision, RolloutVerdict::kRollBack);
  EXPECT_TRUE(absl::StrContains(v.reason, "NACK")) << v.reason;
}

TEST(JudgeRolloutTest, A5xxIncreaseOverTheLimitRollsBackBeforeTheWindowEnds) {
  // 3% against 1%: two points over, the default allows one.
  RolloutVerdict v = JudgeRollout(Figures(1000, 30, 5), Figures(1000, 10, 5), {}, false);
  EXPECT_EQ(v.decision, RolloutVerdict::kRollBack);
  EXPECT_TRUE(absl::StrContains(v.reason, "5xx rate 3.00% on the canaries")) << v.reason;
  // 1.5% against 1%: within.
  EXPECT_EQ(JudgeRollout(Figures(1000, 15, 5), Figures(1000, 10, 5), {}, false).decision,
            RolloutVerdict::kContinue);
  EXPECT_EQ(JudgeRollout(Figures(1000, 15, 5), Figures(1000, 10, 5), {}, true).decision,
            RolloutVerdict::kPromote);
}

TEST(JudgeRolloutTest, P99IsJudgedByRatioAndSlack) {
  RolloutLimits limits;  // 1.5x or 10 ms more, whichever allows more
  // 100 ms against 50 ms: over both.
  EXPECT_EQ(JudgeRollout(Figures(500, 0, 100), Figures(500, 0, 50), limits, true).decision,
            RolloutVerdict::kRollBack);
  // 70 ms against 50 ms: within 1.5x.
  EXPECT_EQ(JudgeRollout(Figures(500, 0, 70), Figures(500, 0, 50), limits, true).decision,
            RolloutVerdict::kPromote);
  // 3 ms against 1 ms: three times, but within the 10 ms slack.
  EXPECT_EQ(JudgeRollout(Figures(500, 0, 3), Figures(500, 0, 1), limits, true).decision,
            RolloutVerdict::kPromote);
  limits.p99_slack_ms = 0;
  EXPECT_EQ(JudgeRollout(Figures(500, 0, 3), Figures(500, 0, 1), limits, true).decision,
            RolloutVerdict::kRollBack);
}

TEST(JudgeRolloutTest, WithoutEnoughTrafficTheSettingDecides) {
  RolloutLimits limits;
  limits.min_requests = 100;
  // Even a bad-looking canary is not judged on 50 requests before the end.
  EXPECT_EQ(JudgeRollout(Figures(50, 50, 5), Figures(500, 0, 5), limits, false).decision,
            RolloutVerdict::kContinue);
  RolloutVerdict v = JudgeRollout(Figures(50, 0, 5), Figures(500, 0, 5), limits, true);
  EXPECT_EQ(v.decision, RolloutVerdict::kRollBack);
  EXPECT_TRUE(absl::StrContains(v.reason, "not enough traffic")) << v.reason;
  limits.promote_without_traffic = true;
  EXPECT_EQ(JudgeRollout(Figures(50, 0, 5), Figures(500, 0, 5), limits, true).decision,
            RolloutVerdict::kPromote);
  // The rest needs the requests too.
  limits.promote_without_traffic = false;
  EXPECT_EQ(JudgeRollout(Figures(500, 0, 5), Figures(50, 0, 5), limits, true).decision,
            RolloutVerdict::kRollBack);
}

// A change that makes a policy refuse most callers (a 401 on every request)
// is rolled back on its 4xx rate; an intended one passes with the limit at 1.
// Before: only 5xx and p99 were judged, and it was promoted.
TEST(JudgeRolloutTest, A4xxIncreaseOverTheLimitRollsBack) {
  admin::v1::RolloutFigures canary = Figures(1000, 0, 5);
  canary.set_responses_4xx(900);
  admin::v1::RolloutFigures rest = Figures(1000, 0, 5);
  rest.set_responses_4xx(20);
  RolloutVerdict v = JudgeRollout(canary, rest, {}, false);
  EXPECT_EQ(v.decision, RolloutVerdict::kRollBack);
  EXPECT_TRUE(absl::StrContains(v.reason, "4xx rate 90.00% on the canaries against 2.00%"))
      << v.reason;
  RolloutLimits intended;
  intended.max_4xx_rate_increase = 1;
  EXPECT_EQ(JudgeRollout(canary, rest, intended, true).decision, RolloutVerdict::kPromote);
  canary.set_responses_4xx(110);  // 9 points over: within the default 10
  EXPECT_EQ(JudgeRollout(canary, rest, {}, true).decision, RolloutVerdict::kPromote);
}

TEST(JudgeRolloutTest, ThresholdsOutOfRangeAreRefused) {
  admin::v1::RolloutThresholds t;
  t.set_max_p99_ratio(0.5);
  EXPECT_FALSE(LimitsFrom(t).ok());
  t.Clear();
  t.set_max_5xx_rate_increase(2);
  EXPECT_FALSE(LimitsFrom(t).ok());
  t.Clear();
  t.set_max_4xx_rate_increase(-0.1);
  EXPECT_FALSE(LimitsFrom(t).ok());
  t.Clear();
  absl::StatusOr<RolloutLimits> defaults = LimitsFrom(t);
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->max_5xx_rate_increase, 0.01);
  EXPECT_EQ(defaults->max_p99_ratio, 1.5);
  EXPECT_EQ(defaults->min_requests, 100u);
  EXPECT_EQ(defaults->max_4xx_rate_increase, 0.1);
  EXPECT_FALSE(defaults->promote_without_traffic);
}

api::Resource Cluster(const std::string& name, uint32_t port) {
  api::Resource r;
  r.mutable_cluster()->set_name(name);
  auto* e = r.mutable_cluster()->add_endpoints();
  e->set_address("127.0.0.1");
  e->set_port(port);
  return r;
}

uint32_t PortOf(const Snapshot& snapshot) {
  return snapshot.resources.at({config::v1::CLUSTER, "users"}).cluster().endpoints(0).port();
}

TEST(CanarySplitTest, OnlyCanariesAreServedTheCandidateUntilTheSplitEnds) {
  auto store = FileStore::Open(sluice::testing::MakeTempDir("split"));
  ASSERT_TRUE(store.ok());
  auto state = ConfigState::Create(std::move(*store));
  ASSERT_TRUE(state.ok());
  ASSERT_TRUE((*state)->Apply({Cluster("users", 9000)}, false).ok());  // version 1
  CanarySplit split;
  split.group = "canary";
  split.node_ids = {"picked"};
  uint64_t stable_seen = 0, candidate_seen = 0;
  auto change = (*state)->ApplyCanary({Cluster("users", 9001)}, split, ChangeContext{},
                                      [&](uint64_t stable, uint64_t candidate) {
                                        stable_seen = stable;
                                        candidate_seen = candidate;
                                        return absl::OkStatus();
                                      });
  ASSERT_TRUE(change.ok()) << change.status();
  EXPECT_EQ(stable_seen, 1u);
  EXPECT_EQ(candidate_seen, 2u);
  ASSERT_TRUE((*state)->split().has_value());
  EXPECT_EQ((*state)->split()->rollout_id, "r2");
  // By group, by node id, and everyone else.
  EXPECT_EQ((*state)->SnapshotFor("c1", "canary")->version, 2u);
  EXPECT_EQ(PortOf(*(*state)->SnapshotFor("c1", "canary")), 9001u);
  EXPECT_EQ((*state)->SnapshotFor("picked", "main")->version, 2u);
  EXPECT_EQ((*state)->SnapshotFor("m1", "main")->version, 1u);
  EXPECT_EQ(PortOf(*(*state)->SnapshotFor("m1", "main")), 9000u);

  // Nothing else changes the config meanwhile.
  auto refused = (*state)->Apply({Cluster("orders", 9002)}, false);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "r2")) << refused.status();
  EXPECT_EQ((*state)->Rollback(1, false).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*state)->EndCanary("r9", false, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);

  // Rolled back: a new version with the stable content, for everyone.
  auto ended = (*state)->EndCanary("r2", false, ChangeContext{"sluice-control", "why"});
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(ended->version, 3u);
  EXPECT_FALSE((*state)->split().has_value());
  EXPECT_EQ((*state)->SnapshotFor("m1", "main")->version, 3u);
  EXPECT_EQ(PortOf(*(*state)->SnapshotFor("c1", "canary")), 9000u);
  EXPECT_EQ((*state)->History()->Find(3)->message, "why");

  // Promoted: a new version with the candidate's content even though
  // nothing changed since it.
  ASSERT_TRUE((*state)->ApplyCanary({Cluster("users", 9003)}, split, {}, nullptr).ok());  // 4
  auto promoted = (*state)->EndCanary("r4", true, {});
  ASSERT_TRUE(promoted.ok()) << promoted.status();
  EXPECT_EQ(promoted->version, 5u);
  EXPECT_TRUE(promoted->diff.empty());
  EXPECT_EQ(PortOf(*(*state)->SnapshotFor("m1", "main")), 9003u);
}

TEST(CanarySplitTest, ARefusalBeforeTheCommitChangesNothing) {
  auto store = FileStore::Open(sluice::testing::MakeTempDir("split"));
  ASSERT_TRUE(store.ok());
  auto state = ConfigState::Create(std::move(*store));
  ASSERT_TRUE(state.ok());
  ASSERT_TRUE((*state)->Apply({Cluster("users", 9000)}, false).ok());
  CanarySplit split;
  split.group = "canary";
  auto change = (*state)->ApplyCanary({Cluster("users", 9001)}, split, {}, [](uint64_t, uint64_t) {
    return absl::UnavailableError("disk full");
  });
  EXPECT_EQ(change.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*state)->Current()->version, 1u);
  EXPECT_FALSE((*state)->split().has_value());
  // And a change that alters nothing has nothing to verify.
  EXPECT_EQ((*state)->ApplyCanary({Cluster("users", 9000)}, split, {}, nullptr).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

class RolloutManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = sluice::testing::MakeTempDir("rollout");
    Open();
    ASSERT_TRUE(state_->Apply({Cluster("users", 9000)}, false).ok());  // version 1
    canary_ = Connect("c1", "canary");
    main1_ = Connect("m1", "main");
    main2_ = Connect("m2", "main");
  }
  void Open() {
    auto store = FileStore::Open(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    auto state = ConfigState::Create(std::move(*store));
    ASSERT_TRUE(state.ok()) << state.status();
    state_ = std::move(*state);
    manager_ = std::make_unique<RolloutManager>(
        state_.get(), &registry_, Path(), [this] { return now_; }, absl::Hours(1));
  }
  std::string Path() const { return dir_ + "/rollout.db"; }
  int Connect(const std::string& id, const std::string& group) {
    discovery::v1::Node node;
    node.set_id(id);
    node.set_group(group);
    return registry_.Connect(node, 1);
  }
  admin::v1::StartRolloutRequest Request(uint32_t port) {
    admin::v1::StartRolloutRequest request;
    *request.add_resources() = Cluster("users", port);
    request.set_canary_group("canary");
    request.set_verify_ms(10000);
    request.set_message("new port");
    return request;
  }
  void Report(int handle, uint64_t version, uint64_t requests, uint64_t errors, double p99) {
    discovery::v1::TrafficReport report;
    report.set_config_version(version);
    report.set_requests(requests);
    report.set_responses_5xx(errors);
    report.set_p99_ms(p99);
    registry_.Reported(handle, report);
  }
  admin::v1::Rollout Get() {
    bool running = false;
    auto rollout = manager_->Get(&running);
    return rollout.value_or(admin::v1::Rollout());
  }

  std::string dir_;
  absl::Time now_ = absl::FromUnixSeconds(1900000000);
  ProxyRegistry registry_;
  std::unique_ptr<ConfigState> state_;
  std::unique_ptr<RolloutManager> manager_;
  int canary_ = 0, main1_ = 0, main2_ = 0;
};

TEST_F(RolloutManagerTest, ARegressionOnTheCanaryRollsItBack) {
  auto started = manager_->Start(Request(9001), "ana");
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(started->rollout.id(), "r2");
  EXPECT_EQ(started->rollout.canary_nodes_size(), 1);
  EXPECT_EQ(::access(Path().c_str(), F_OK), 0);
  EXPECT_EQ(state_->SnapshotFor("m1", "main")->version, 1u);
  // Reports before the canaries run the candidate do not count.
  Report(canary_, 1, 1000, 1000, 5);
  manager_->Tick();
  EXPECT_EQ(Get().state(), admin::v1::Rollout::DEPLOYING);
  registry_.Acked(canary_, 2);
  manager_->Tick();
  EXPECT_EQ(Get().state(), admin::v1::Rollout::VERIFYING);
  Report(canary_, 2, 200, 100, 5);
  Report(main1_, 1, 200, 0, 5);
  Report(main2_, 1, 200, 0, 5);
  EXPECT_EQ(Get().canary().requests(), 200u);
  EXPECT_EQ(Get().rest().requests(), 400u);
  EXPECT_EQ(Get().rest().proxies(), 2u);
  manager_->Tick();  // before the window ends: a clear regression is not waited out
  admin::v1::Rollout r = Get();
  EXPECT_EQ(r.state(), admin::v1::Rollout::ROLLED_BACK);
  EXPECT_EQ(r.decision_version(), 3u);
  EXPECT_TRUE(absl::StrContains(r.reason(), "5xx rate 50.00%")) << r.reason();
  EXPECT_EQ(PortOf(*state_->SnapshotFor("c1", "canary")), 9000u);
  EXPECT_FALSE(state_->split().has_value());
  const HistoryEntry* decision = state_->History()->Find(3);
  ASSERT_NE(decision, nullptr);
  EXPECT_EQ(decision->author, "sluice-control");
  EXPECT_TRUE(absl::StrContains(decision->message, "rollout r2 rolled back")) << decision->message;
  EXPECT_TRUE(
      absl::StrContains(decision->message, "canaries: 200 requests from 1 proxy (1 report)"))
      << decision->message;
  EXPECT_TRUE(absl::StrContains(state_->History()->Find(2)->message, "[canary] new port"));
  EXPECT_NE(::access(Path().c_str(), F_OK), 0);
}

TEST_F(RolloutManagerTest, GoodFiguresArePromotedWhenTheWindowEnds) {
  ASSERT_TRUE(manager_->Start(Request(9001), "ana").ok());
  registry_.Acked(canary_, 2);
  manager_->Tick();
  Report(canary_, 2, 300, 0, 5);
  Report(main1_, 1, 300, 1, 6);
  manager_->Tick();
  EXPECT_EQ(Get().state(), admin::v1::Rollout::VERIFYING);
  now_ += absl::Seconds(11);
  manager_->Tick();
  admin::v1::Rollout r = Get();
  EXPECT_EQ(r.state(), admin::v1::Rollout::PROMOTED);
  EXPECT_EQ(r.decision_version(), 3u);
  EXPECT_EQ(PortOf(*state_->SnapshotFor("m1", "main")), 9001u);
  EXPECT_TRUE(absl::StrContains(state_->History()->Find(3)->message, "promoted: within"));
}

// A canary gone kCanaryGoneLimit while the candidate is verified rolls it
// back (a candidate that crashes its proxies looked like good figures, and
// was promoted); the control plane's own decision is in the audit log.
TEST_F(RolloutManagerTest, ACanaryGoneWhileVerifiedRollsBack) {
  auto audit = AuditLog::Open(dir_ + "/audit.log", [this] { return now_; });
  ASSERT_TRUE(audit.ok()) << audit.status();
  manager_->SetAuditLog(audit->get());
  admin::v1::StartRolloutRequest request = Request(9001);
  request.set_verify_ms(60000);
  ASSERT_TRUE(manager_->Start(request, "ana").ok());
  registry_.Acked(canary_, 2);
  manager_->Tick();
  ASSERT_EQ(Get().state(), admin::v1::Rollout::VERIFYING);
  Report(canary_, 2, 300, 0, 5);
  Report(main1_, 1, 300, 0, 5);
  registry_.Disconnect(canary_);
  manager_->Tick();
  now_ += kCanaryGoneLimit - absl::Seconds(1);
  manager_->Tick();
  EXPECT_EQ(Get().state(), admin::v1::Rollout::VERIFYING);
  now_ += absl::Seconds(1);
  manager_->Tick();
  admin::v1::Rollout r = Get();
  EXPECT_EQ(r.state(), admin::v1::Rollout::ROLLED_BACK);
  EXPECT_TRUE(absl::StrContains(r.reason(), "canary c1 has been disconnected for 10s")) << r.reason();
  EXPECT_EQ(PortOf(*state_->SnapshotFor("m1", "main")), 9000u);
  const std::string log = sluice::testing::ReadFile(dir_ + "/audit.log");
  EXPECT_TRUE(absl::StrContains(log, "\"identity\":\"sluice-control\"")) << log;
  EXPECT_TRUE(absl::StrContains(log, "\"method\":\"AbortRollout\"")) << log;
  EXPECT_TRUE(absl::StrContains(log, "\"resources\":[\"rollout/r2\"],\"version\":3")) << log;
}

// A canary lost before it took the candidate (a candidate that crashes
// proxies as they apply it) is not dropped from the count: the rollout was
// verified, and promoted, on the others' figures alone.
TEST_F(RolloutManagerTest, ACanaryGoneWhileDeployingRollsBack) {
  int second = Connect("c2", "canary");
  ASSERT_TRUE(manager_->Start(Request(9001), "ana").ok());
  ASSERT_EQ(Get().canary_nodes_size(), 2);
  registry_.Disconnect(second);
  registry_.Acked(canary_, 2);
  manager_->Tick();
  now_ += kCanaryGoneLimit;
  manager_->Tick();
  admin::v1::Rollout r = Get();
  EXPECT_EQ(r.state(), admin::v1::Rollout::ROLLED_BACK);
  EXPECT_TRUE(absl::StrContains(r.reason(), "canary c2 has been disconnected")) << r.reason();
}

// A canary that connects anew during the rollout (crash-looping under a
// supervisor that restarts it within seconds) rolls it back; so does one
// that joined the group mid-rollout, once it is named and then lost. An
// operator's own decision is not written as the control plane's.
TEST_F(RolloutManagerTest, ACanaryRestartedOrJoinedAndLostRollsBack) {
  auto audit = AuditLog::Open(dir_ + "/audit.log", [this] { return now_; });
  ASSERT_TRUE(audit.ok()) << audit.status();
  manager_->SetAuditLog(audit->get());
  ASSERT_TRUE(manager_->Start(Request(9001), "ana").ok());
  registry_.Acked(canary_, 2);
  manager_->Tick();
  ASSERT_EQ(Get().state(), admin::v1::Rollout::VERIFYING);
  registry_.Disconnect(canary_);
  canary_ = Connect("c1", "canary");
  manager_->Tick();
  EXPECT_EQ(Get().state(), admin::v1::Rollout::ROLLED_BACK);
  EXPECT_TRUE(absl::StrContains(Get().reason(), "canary c1 reconnected")) << Get().reason();

  ASSERT_TRUE(manager_->Start(Request(9002), "ana").ok());
  registry_.Acked(canary_, 4);
  manager_->Tick();
  ASSERT_EQ(Get().state(), admin::v1::Rollout::VERIFYING);
  int joined = Connect("c2", "canary");
  manager_->Tick();
  EXPECT_EQ(Get().canary_nodes_size(), 2);
  registry_.Disconnect(joined);
  manager_->Tick();
  now_ += kCanaryGoneLimit;
  manager_->Tick();
  EXPECT_EQ(Get().state(), admin::v1::Rollout::ROLLED_BACK);
  EXPECT_TRUE(absl::StrContains(Get().reason(), "canary c2 has been disconnected")) << Get().reason();

  ASSERT_TRUE(manager_->Start(Request(9003), "ana").ok());
  ASSERT_TRUE(manager_->Decide(false, "sluice-control", "").ok());  // an operator so named
  const std::string log = sluice::testing::ReadFile(dir_ + "/audit.log");
  EXPECT_FALSE(absl::StrContains(log, "aborted by sluice-control")) << log;
}

TEST_F(RolloutManagerTest, ACanaryNackRollsBackAndOneRolloutRunsAtATime) {
  ASSERT_TRUE(manager_->Start(Request(9001), "ana").ok());
  auto second = manager_->Start(Request(9002), "ana");
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(second.status().message(), "r2")) << second.status();
  registry_.Nacked(main1_, 2, "not a canary: ignored");
  manager_->Tick();
  EXPECT_EQ(Get().state(), admin::v1::Rollout::DEPLOYING);
  registry_.Nacked(canary_, 2, "port 9001 is busy");
  manager_->Tick();
  admin::v1::Rollout r = Get();
  EXPECT_EQ(r.state(), admin::v1::Rollout::ROLLED_BACK);
  EXPECT_TRUE(absl::StrContains(r.reason(), "c1: port 9001 is busy")) << r.reason();
}

TEST_F(RolloutManagerTest, CanariesMustBeSomeButNotAllOfTheFleet) {
  auto request = Request(9001);
  request.set_canary_group("nobody");
  EXPECT_TRUE(absl::StrContains(manager_->Start(request, "ana").status().message(),
                                "no connected proxy is in node group \"nobody\""));
  request.set_canary_group("");
  request.set_canary_percent(50);
  registry_.Disconnect(main1_);
  registry_.Disconnect(main2_);  // 1 of 1
  EXPECT_TRUE(absl::StrContains(manager_->Start(request, "ana").status().message(),
                                "50% of the connected proxies is every connected proxy (1)"));
  main1_ = Connect("m1", "main");
  main2_ = Connect("m2", "main");
  request.set_canary_percent(34);  // 1.02 of 3: 1, the first by node id
  auto started = manager_->Start(request, "ana");
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_EQ(started->rollout.canary_nodes_size(), 1);
  EXPECT_EQ(started->rollout.canary_nodes(0), "c1");
  EXPECT_EQ(state_->SnapshotFor("m1", "canary")->version, 1u);  // by id, not group
}

TEST_F(RolloutManagerTest, ARestartMidRolloutPutsEveryProxyBackOnTheStableContent) {
  ASSERT_TRUE(manager_->Start(Request(9001), "ana").ok());
  manager_.reset();
  state_.reset();  // "killed": the candidate is the stored version
  Open();
  EXPECT_EQ(state_->Current()->version, 2u);
  ASSERT_TRUE(manager_->RecoverInterrupted().ok());
  EXPECT_EQ(state_->Current()->version, 3u);
  EXPECT_EQ(PortOf(*state_->Current()), 9000u);
  EXPECT_TRUE(absl::StrContains(state_->History()->Find(3)->message,
                                "rollout r2 aborted: control plane restarted"));
  bool running = true;
  auto last = manager_->Get(&running);
  ASSERT_TRUE(last.has_value());
  EXPECT_FALSE(running);
  EXPECT_EQ(last->state(), admin::v1::Rollout::ROLLED_BACK);
  EXPECT_NE(::access(Path().c_str(), F_OK), 0);
  // Once is enough.
  ASSERT_TRUE(manager_->RecoverInterrupted().ok());
  EXPECT_EQ(state_->Current()->version, 3u);
}

}  // namespace
}  // namespace sluice::controlplane
