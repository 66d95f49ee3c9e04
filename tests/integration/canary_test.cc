// Canary rollouts through real processes: sluice-control, an upstream and
// three proxies, each in its own node group with its own listener
// (node_groups), sending traffic reports every 200 ms while clients keep
// requesting through all three. `sluicectl apply --canary canary` sends a
// change to the canary proxy only: one that points the route at a dead port
// is rolled back on the canary's 5xx while the other proxies never apply it;
// a good one is promoted to all; a control plane killed mid-rollout puts
// every proxy back on the stable content when it starts again.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

constexpr const char* kGroups[] = {"canary", "main-a", "main-b"};

// Requests through one listener, in a loop, counting the statuses.
class Traffic {
 public:
  explicit Traffic(int port) : port_(port), thread_([this] { Run(); }) {}
  ~Traffic() {
    stop_ = true;
    thread_.join();
  }
  std::map<int, int> Statuses() const {
    absl::MutexLock lock(&mu_);
    return statuses_;
  }
  int Failures() const {  // anything but 200
    int failures = 0;
    for (const auto& [status, count] : Statuses()) {
      if (status != 200) failures += count;
    }
    return failures;
  }
  void Reset() {
    absl::MutexLock lock(&mu_);
    statuses_.clear();
  }

 private:
  void Run() {
    while (!stop_) {
      HttpResponse r =
          HttpGet(absl::StrCat("127.0.0.1:", port_), "/api/items", {}, absl::Seconds(5));
      absl::MutexLock lock(&mu_);
      ++statuses_[r.status];
    }
  }
  const int port_;
  std::atomic<bool> stop_{false};
  mutable absl::Mutex mu_;
  std::map<int, int> statuses_;
  std::thread thread_;
};

class CanaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok());
    dead_port_ = PickFreePort();
    for (int i = 0; i < 3; ++i) ports_[i] = PickFreePort();
    CommandResult applied = Apply(Config(upstream_.port(), ""), {"-m", "stable"});
    ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
    for (int i = 0; i < 3; ++i) {
      proxies_[i] = std::make_unique<Proxy>(
          cp_.address(), absl::StrCat(kGroups[i], "-proxy"), /*workers=*/1, "",
          std::vector<std::string>{"--group", kGroups[i], "--report-interval", "200ms",
                                   "--log-level", "info"});
      ASSERT_TRUE(proxies_[i]->ok()) << proxies_[i]->process().Log();
      ASSERT_TRUE(proxies_[i]->WaitForVersion(1)) << proxies_[i]->process().Log();
    }
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(WaitFor(
          [&] {
            return HttpGet(absl::StrCat("127.0.0.1:", ports_[i]), "/api/items").status == 200;
          },
          absl::Seconds(10)));
      traffic_[i] = std::make_unique<Traffic>(ports_[i]);
    }
  }

  // The route /api to cluster app on `port`; `extra_route`: more routes.
  std::string Config(int port, const std::string& extra_route) {
    std::string yaml = absl::StrCat(
        "kind: Cluster\nname: app\nspec:\n  endpoints: [{address: 127.0.0.1, port: ", port,
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n      routes:\n",
        extra_route, "        - {match: {prefix: /api}, route: {cluster: app}}\n");
    for (int i = 0; i < 3; ++i) {
      absl::StrAppend(&yaml, "---\nkind: Listener\nname: ", kGroups[i],
                      "\nspec: {address: 127.0.0.1, port: ", ports_[i],
                      ", route_table: main, node_groups: [", kGroups[i], "]}\n");
    }
    return yaml;
  }

  // Config() with listener main-a (no canary serves it) given an access log
  // its proxy cannot open: a version that proxy refuses. Empty if not found.
  std::string UnservedListenerConfig(int port) {
    std::string yaml = Config(port, "");
    const std::string placed = absl::StrCat("node_groups: [", kGroups[1], "]}");
    const size_t at = yaml.find(placed);
    if (at == std::string::npos) return "";
    yaml.replace(at, placed.size(),
                 absl::StrCat("node_groups: [", kGroups[1],
                              "], access_log: {path: /nonexistent-dir/x.log}}"));
    return yaml;
  }

  CommandResult Apply(const std::string& yaml, std::vector<std::string> extra) {
    std::vector<std::string> args = {"apply", "-f",
                                     WriteFile(MakeTempDir("canary"), "config.yaml", yaml)};
    args.insert(args.end(), extra.begin(), extra.end());
    return cp_.Ctl(args);
  }

  Proxy& canary() { return *proxies_[0]; }

  ControlPlane cp_{"", "info"};
  UpstreamServer upstream_{"app"};
  int dead_port_ = 0;
  int ports_[3] = {0, 0, 0};
  std::unique_ptr<Proxy> proxies_[3];
  std::unique_ptr<Traffic> traffic_[3];
};

TEST_F(CanaryTest, ABadChangeIsRolledBackFromTheCanaryAndTheRestNeverSeeIt) {
  // Version 2 points /api at a port nothing listens on.
  CommandResult r =
      Apply(Config(dead_port_, ""), {"--canary", "canary", "--verify", "30s", "--min-requests",
                                     "20", "--wait", "-m", "move app"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "canary rollout r2: version 2 to node group \"canary\""))
      << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "rolled back as version 3: 5xx rate")) << r.out;
  // The canary's clients saw the failures that condemned the candidate.
  EXPECT_GT(traffic_[0]->Failures(), 0);

  // Every proxy ends on version 3 (version 1's content) and the canary
  // serves again.
  for (auto& proxy : proxies_) {
    ASSERT_TRUE(proxy->WaitForVersion(3)) << proxy->process().Log();
  }
  traffic_[0]->Reset();
  ASSERT_TRUE(WaitFor([&] { return traffic_[0]->Statuses()[200] > 10; }, absl::Seconds(10)));
  EXPECT_EQ(traffic_[0]->Failures(), 0);
  // The canary ran the candidate and failed on it; the others never applied
  // it and never failed a request.
  EXPECT_TRUE(absl::StrContains(canary().process().Log(), "applied config version 2"));
  for (int i = 1; i < 3; ++i) {
    const std::string log = proxies_[i]->process().Log();
    EXPECT_FALSE(absl::StrContains(log, "applied config version 2")) << log;
    EXPECT_TRUE(absl::StrContains(log, "applied config version 3")) << log;
    EXPECT_EQ(traffic_[i]->Failures(), 0) << kGroups[i];
  }

  // The decision and its figures are in the history and in rollout status.
  r = cp_.Ctl({"history"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "rollout r2 rolled back: 5xx rate")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "[canary] move app")) << r.out;
  r = cp_.Ctl({"rollout", "status"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "rollout r2: rolled back")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "candidate 2 on the canaries, stable 1 on the rest"))
      << r.out;
  // The rest's figures: from one or both of its proxies, as many as had
  // reported when the canaries' 5xx rate decided (the decision comes as soon
  // as both sides have --min-requests, which one report may bring).
  const size_t rest = r.out.find("\n  rest:");
  ASSERT_NE(rest, std::string::npos) << r.out;
  const std::string rest_line = r.out.substr(rest + 1, r.out.find('\n', rest + 1) - rest - 1);
  EXPECT_TRUE(absl::StrContains(rest_line, " requests from 2 proxies (") ||
              absl::StrContains(rest_line, " requests from 1 proxy ("))
      << r.out;
}

TEST_F(CanaryTest, AGoodChangeIsPromotedToEveryProxy) {
  const std::string extra =
      "        - {match: {prefix: /new}, direct_response: {status: 200, body: new}}\n";
  CommandResult r = Apply(Config(upstream_.port(), extra), {"--canary", "canary", "--verify", "3s",
                                                            "--min-requests", "20", "--wait"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "promoted as version 3: within the thresholds")) << r.out;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(proxies_[i]->WaitForVersion(3)) << proxies_[i]->process().Log();
    EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", ports_[i]), "/new").body, "new");
    EXPECT_EQ(traffic_[i]->Failures(), 0) << kGroups[i];
  }
  r = cp_.Ctl({"history", "--limit", "1"});
  EXPECT_TRUE(absl::StrContains(r.out, "rollout r2 promoted")) << r.out;
  // Nothing runs now: a plain apply goes through again.
  r = Apply(Config(upstream_.port(), ""), {});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

// While a rollout runs, the current version is the candidate only the
// canaries run: proxies says so (it read as rolled out).
TEST_F(CanaryTest, ProxiesSayWhileARolloutRuns) {
  const std::string extra =
      "        - {match: {prefix: /new}, direct_response: {status: 200, body: new}}\n";
  CommandResult r =
      Apply(Config(upstream_.port(), extra), {"--canary", "canary", "--verify", "1m"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = cp_.Ctl({"proxies"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "current version 2 (canary rollout r2: candidate 2 on the "
                                       "canaries, stable 1 on the rest)"))
      << r.out;
  r = cp_.Ctl({"rollout", "abort"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = cp_.Ctl({"proxies", "-o", "wide"});
  EXPECT_TRUE(absl::StrContains(r.out, "current version 3\n")) << r.out;
}

// A change to a listener no canary serves (node_groups) cannot be tried by
// them: apply says so, and --wait follows the fleet after the decision, so
// a version the rest refuses (an access log it cannot open) fails the
// command with the refusal. Before: "promoted", exit 0, the fleet split.
TEST_F(CanaryTest, WhatNoCanaryServesIsSaidAndTheFleetIsFollowed) {
  const std::string yaml = UnservedListenerConfig(upstream_.port());
  ASSERT_FALSE(yaml.empty());
  CommandResult r = Apply(yaml, {"--canary", "canary", "--verify", "2s", "--on-no-traffic",
                                 "promote", "--wait", "--timeout", "20s"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, absl::StrCat("Listener \"", kGroups[1],
                                                    "\" changes but is served by no canary")))
      << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "promoted as version 3")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "taken by 2 of 3 proxies, refused by 1")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "cannot open access log")) << r.err;
}

// The same, promoted by hand: `rollout promote --wait` follows the fleet as
// apply --wait does (promote said "promoted", exit 0, and took no --wait).
TEST_F(CanaryTest, APromoteByHandWaitsForTheFleetToo) {
  const std::string yaml = UnservedListenerConfig(upstream_.port());
  ASSERT_FALSE(yaml.empty());
  CommandResult r = Apply(yaml, {"--canary", "canary", "--verify", "1h"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(canary().WaitForVersion(2)) << canary().process().Log();
  r = cp_.Ctl({"rollout", "promote", "--wait", "--timeout", "20s"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "taken by 2 of 3 proxies, refused by 1")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "cannot open access log")) << r.err;
  EXPECT_EQ(cp_.Ctl({"rollout", "abort", "--timeout", "5s"}).exit_code, 2);  // --timeout needs --wait
}

TEST_F(CanaryTest, ARestartMidRolloutPutsTheCanaryBackAndRecordsWhy) {
  CommandResult r = Apply(Config(dead_port_, ""),
                          {"--canary", "canary", "--verify", "1h", "--min-requests", "1000000"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "follow it with: sluicectl rollout status")) << r.out;
  ASSERT_TRUE(canary().WaitForVersion(2)) << canary().process().Log();
  // Meanwhile other changes are refused, naming the rollout.
  r = Apply(Config(upstream_.port(), ""), {});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "canary rollout r2 is in progress")) << r.err;
  // A dry run changes nothing: allowed (it was refused), against the
  // canaries' version.
  r = Apply(Config(upstream_.port(), ""), {"--dry-run"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "dry run: nothing stored (current version 2)")) << r.out;
  // Once the control plane has seen the canary's ACK, the window runs.
  EXPECT_TRUE(WaitFor(
      [&] {
        r = cp_.Ctl({"rollout", "status"});
        return absl::StrContains(r.out, "rollout r2: verifying");
      },
      absl::Seconds(10)))
      << r.out;

  cp_.Kill();
  ASSERT_TRUE(cp_.Restart()) << cp_.process().Log();
  for (auto& proxy : proxies_) {
    ASSERT_TRUE(proxy->WaitForVersion(3)) << proxy->process().Log();
  }
  r = cp_.Ctl({"history", "--limit", "1"});
  EXPECT_TRUE(absl::StrContains(r.out, "rollout r2 aborted: control plane restarted")) << r.out;
  r = cp_.Ctl({"rollout", "status"});
  EXPECT_TRUE(absl::StrContains(r.out, "aborted: control plane restarted")) << r.out;
  traffic_[0]->Reset();
  ASSERT_TRUE(WaitFor([&] { return traffic_[0]->Statuses()[200] > 10; }, absl::Seconds(10)));
  EXPECT_EQ(traffic_[0]->Failures(), 0);
  for (int i = 1; i < 3; ++i) {
    EXPECT_FALSE(absl::StrContains(proxies_[i]->process().Log(), "applied config version 2"));
  }
}

// `apply --canary --wait` outlives a control-plane restart: it asks again and
// reports the verdict the restart made (rolled back, exit 1). Before: it
// gave up at the first failed poll with "error: CANCELLED".
TEST_F(CanaryTest, AWaitingApplyReportsTheAbortAfterAControlPlaneRestart) {
  const std::string dir = MakeTempDir("canary-wait");
  // Errors of a canary apply name the file, as a plain apply's do.
  std::string dangling = WriteFile(
      dir, "dangling.yaml",
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n  - domains: ['*']\n"
      "    routes: [{match: {prefix: /}, route: {cluster: ghost}}]\n");
  CommandResult refused =
      cp_.Ctl({"apply", "-f", dangling, "--canary", "canary", "--verify", "5s"});
  EXPECT_EQ(refused.exit_code, 1) << refused.out << refused.err;
  EXPECT_TRUE(absl::StrContains(refused.err, dangling + ", document 1, line 6: RouteTable \"main\""))
      << refused.err;
  // Thresholds past the server's range are refused by sluicectl itself.
  for (const auto& [flag, value, says] :
       {std::tuple<std::string, std::string, std::string>{"--max-p99-ratio", "inf", "expected 1..1000"},
        {"--max-p99-ratio", "1001", "expected 1..1000"},
        {"--p99-slack", "2h", "expected a duration like 10ms, up to 1h"}}) {
    CommandResult bad =
        cp_.Ctl({"apply", "-f", dangling, "--canary", "canary", "--verify", "5s", flag, value});
    EXPECT_NE(bad.exit_code, 0) << flag << " " << value;
    EXPECT_TRUE(absl::StrContains(bad.err, absl::StrCat(flag, " ", value, ": ", says)))
        << bad.err;
  }
  Process waiting(RunfilePath("controlplane/cli/sluicectl"),
                  {"--server", cp_.address(), "apply", "-f",
                   WriteFile(dir, "config.yaml", Config(dead_port_, "")), "--canary", "canary",
                   "--verify", "1h", "--min-requests", "1000000", "--wait"},
                  dir + "/sluicectl.log");
  ASSERT_TRUE(waiting.WaitForLogLine("canary rollout r2", absl::Seconds(20)).has_value())
      << waiting.Log();
  ASSERT_TRUE(canary().WaitForVersion(2)) << canary().process().Log();
  cp_.Kill();
  ASSERT_TRUE(cp_.Restart()) << cp_.process().Log();
  std::optional<int> status = waiting.Wait(absl::Seconds(60));
  ASSERT_TRUE(status.has_value()) << waiting.Log();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << *status << "\n" << waiting.Log();
  EXPECT_TRUE(absl::StrContains(waiting.Log(), "aborted: control plane restarted")) << waiting.Log();
  EXPECT_FALSE(absl::StrContains(waiting.Log(), "CANCELLED")) << waiting.Log();
}

}  // namespace
}  // namespace sluice::testing
