// rate-limit scope FLEET with two control-plane replicas sharing one etcd
// member (--store etcd), one proxy on each (1 worker, its own listener:
// node_groups g0/g1 and --group). One consumer is limited to 100 requests a
// SECOND across the fleet; the load, 120 and 40 a second, is above it on
// both. The replicas divide the limit between them by their proxies'
// demand through etcd, so what the two proxies admit over 5 s is within
// 10% of 500 — without the division each replica would give its proxy the
// whole limit (100 + 40 a second: 700).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

constexpr int kReplicas = 2;
constexpr int kLimitPerSecond = 100;
constexpr double kRates[kReplicas] = {120, 40};

class RateLimitFleetReplicasTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(etcd_.ok()) << etcd_.Logs();
    ASSERT_TRUE(upstream_.ok());
    for (int i = 0; i < kReplicas; ++i) {
      replicas_[i] = std::make_unique<ControlPlane>(
          "", "info",
          std::vector<std::string>{"--store", "etcd", "--etcd-endpoints",
                                   etcd_.endpoints(), "--etcd-prefix",
                                   "/sluice-fleet/"});
      ASSERT_TRUE(replicas_[i]->ok()) << replicas_[i]->process().Log();
      ports_[i] = PickFreePort();
    }
    auto applied = replicas_[0]->Ctl(
        {"apply", "-f",
         WriteFile(MakeTempDir("fleet-replicas"), "config.yaml", Config())});
    ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
    for (int i = 0; i < kReplicas; ++i) {
      proxies_[i] = std::make_unique<Proxy>(
          replicas_[i]->address(), absl::StrCat("fleet-replica-proxy-", i), 1,
          "",
          std::vector<std::string>{"--group", absl::StrCat("g", i),
                                   "--rate-limit-report-interval", "200ms"});
      ASSERT_TRUE(proxies_[i]->ok()) << proxies_[i]->process().Log();
      ASSERT_TRUE(proxies_[i]->WaitForVersion(1))
          << proxies_[i]->process().Log();
    }
  }

  std::string Config() {
    std::string yaml = absl::StrCat(
        "kind: Consumer\nname: alice\nspec:\n  keys: [{key: "
        "alice-key-123}]\n---\n"
        "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, "
        "port: ",
        upstream_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n"
        "      routes:\n"
        "        - name: api\n          match: {prefix: /api}\n          "
        "route: {cluster: web}\n"
        "          policies:\n"
        "            - name: rate-limit\n"
        "              typed_config:\n"
        "                limits: [{requests: ",
        kLimitPerSecond,
        ", per: SECOND}]\n"
        "                scope: FLEET\n"
        "            - {name: key-auth, typed_config: {}}\n");
    for (int i = 0; i < kReplicas; ++i) {
      absl::StrAppend(&yaml, "---\nkind: Listener\nname: public-", i,
                      "\nspec: {address: 127.0.0.1, port: ", ports_[i],
                      ", route_table: main, node_groups: [g", i, "]}\n");
    }
    return yaml;
  }

  using Counts = PacedLoadCounts;

  // Sends alice's requests to each proxy at kRates for `duration`, paced.
  Counts Load(absl::Duration duration) {
    std::vector<std::string> addresses;
    for (int i = 0; i < kReplicas; ++i) addresses.push_back(absl::StrCat("127.0.0.1:", ports_[i]));
    return PacedLoad(addresses, std::vector<double>(kRates, kRates + kReplicas), duration,
                     "/api/orders", {{"apikey", "alice-key-123"}});
  }

  static std::string Describe(const Counts& c) { return c.Describe(); }

  EtcdCluster etcd_{1};
  UpstreamServer upstream_{"web-1"};
  std::unique_ptr<ControlPlane> replicas_[kReplicas];
  std::unique_ptr<Proxy> proxies_[kReplicas];
  int ports_[kReplicas] = {0, 0};
};

TEST_F(RateLimitFleetReplicasTest, TwoReplicasHoldTheFleetLimitTogether) {
  // Demand estimates and the replicas' exchange settle.
  Load(absl::Seconds(3));
  Counts counts = Load(absl::Seconds(5));
  std::printf("FLEET 100/s over 2 replicas, load 120/s + 40/s, 5 s: %s\n",
              Describe(counts).c_str());
  EXPECT_EQ(counts.other, 0);
  EXPECT_NEAR(counts.admitted(), 5 * kLimitPerSecond, 0.1 * 5 * kLimitPerSecond)
      << Describe(counts);
  // Each replica's share follows its proxy's demand (75 and 25 a second).
  EXPECT_GT(counts.admitted_by[0], counts.admitted_by[1]) << Describe(counts);
  EXPECT_GT(counts.admitted_by[1], 0) << Describe(counts);
}

}  // namespace
}  // namespace sluice::testing
