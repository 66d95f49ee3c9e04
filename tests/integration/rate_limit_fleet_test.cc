// rate-limit scope FLEET through real processes: sluice-control, 5 proxies
// (1 worker each, each serving its own listener: the listeners' node_groups
// are g0..g4 and each proxy runs with its --group), one upstream, one
// consumer (key-auth) limited to 100 requests a SECOND across the fleet.
// Load above the limit, skewed 70/3/9/9/9 over the proxies: what the fleet
// admits over 5 s is within 10% of 500. Then the control plane is killed:
// the proxies keep their last shares (about the limit in all) for
// keep_share_for, then each its fallback limit: never unlimited, never zero.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

constexpr int kProxies = 5;
constexpr int kLimitPerSecond = 100;
constexpr int kFallbackPerSecond = 10;
// Offered load: 150 a second, by proxy.
constexpr double kRates[kProxies] = {105, 4.5, 13.5, 13.5, 13.5};

class RateLimitFleetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok());
    for (int i = 0; i < kProxies; ++i) ports_.push_back(PickFreePort());
    ASSERT_EQ(Apply(Config()), 0) << last_error_;
    for (int i = 0; i < kProxies; ++i) {
      proxies_.push_back(std::make_unique<Proxy>(
          cp_.address(), absl::StrCat("fleet-proxy-", i), 1, "",
          std::vector<std::string>{"--group", absl::StrCat("g", i),
                                   "--rate-limit-report-interval", "200ms"}));
      ASSERT_TRUE(proxies_.back()->ok()) << proxies_.back()->process().Log();
    }
    for (auto& proxy : proxies_) {
      ASSERT_TRUE(proxy->WaitForVersion(1)) << proxy->process().Log();
    }
  }

  // One listener per proxy (its own group), one route table: 100 a second
  // per consumer across the fleet; 3 s of the last share, then 10 a second
  // per proxy.
  std::string Config() {
    std::string yaml = absl::StrCat(
        "kind: Consumer\nname: alice\nspec:\n  keys: [{key: alice-key-123}]\n---\n"
        "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n"
        "      routes:\n"
        "        - name: api\n          match: {prefix: /api}\n          route: {cluster: web}\n"
        "          policies:\n"
        "            - name: rate-limit\n"
        "              typed_config:\n"
        "                limits: [{requests: ",
        kLimitPerSecond,
        ", per: SECOND}]\n"
        "                scope: FLEET\n"
        "                fleet: {keep_share_for: 3s, fallback_limits: [{requests: ",
        kFallbackPerSecond,
        ", per: SECOND}]}\n"
        "            - {name: key-auth, typed_config: {}}\n");
    for (int i = 0; i < kProxies; ++i) {
      absl::StrAppend(&yaml, "---\nkind: Listener\nname: public-", i,
                      "\nspec: {address: 127.0.0.1, port: ", ports_[i],
                      ", route_table: main, node_groups: [g", i, "]}\n");
    }
    return yaml;
  }

  int Apply(const std::string& yaml) {
    auto r = cp_.Ctl({"apply", "-f", WriteFile(MakeTempDir("fleet"), "config.yaml", yaml)});
    last_error_ = r.out + r.err;
    return r.exit_code;
  }

  using Counts = PacedLoadCounts;

  // Sends alice's requests to each proxy at kRates for `duration`, paced.
  Counts Load(absl::Duration duration) {
    std::vector<std::string> addresses;
    for (int i = 0; i < kProxies; ++i) addresses.push_back(absl::StrCat("127.0.0.1:", ports_[i]));
    return PacedLoad(addresses, std::vector<double>(kRates, kRates + kProxies), duration,
                     "/api/orders", {{"apikey", "alice-key-123"}});
  }

  static std::string Describe(const Counts& c) { return c.Describe(); }

  ControlPlane cp_{"", "info"};
  UpstreamServer upstream_{"web-1"};
  std::vector<int> ports_;
  std::vector<std::unique_ptr<Proxy>> proxies_;
  std::string last_error_;
};

TEST_F(RateLimitFleetTest, SkewedLoadIsHeldToTheFleetLimitAndSurvivesTheControlPlane) {
  // Warm-up: leases settle, the new key's burst is spent.
  Counts warmup = Load(absl::Seconds(2));
  ASSERT_EQ(warmup.other, 0) << Describe(warmup);

  Counts measured = Load(absl::Seconds(5));
  std::printf("FLEET 100/s over 5 proxies, load 150/s skewed 70/3/9/9/9, 5 s: %s\n",
              Describe(measured).c_str());
  EXPECT_EQ(measured.other, 0);
  EXPECT_NEAR(measured.admitted(), 5 * kLimitPerSecond, 0.10 * 5 * kLimitPerSecond)
      << Describe(measured);
  EXPECT_GT(measured.refused, 0);
  // The light proxies are not starved: nearly all of theirs pass.
  EXPECT_GE(measured.admitted_by[1], 15) << Describe(measured);

  // The control plane goes away: the last shares hold for keep_share_for.
  cp_.Kill();
  Counts kept = Load(absl::Seconds(2));
  std::printf("FLEET control plane killed, last shares, 2 s: %s\n", Describe(kept).c_str());
  EXPECT_NEAR(kept.admitted(), 2 * kLimitPerSecond, 0.25 * 2 * kLimitPerSecond) << Describe(kept);
  // Then each proxy its fallback: 10 a second each, at most 50 in all
  // (the 3% proxy sends fewer): neither unlimited nor zero.
  Load(absl::Seconds(1.5));
  Counts fallback = Load(absl::Seconds(3));
  std::printf("FLEET fallback limits, 3 s: %s\n", Describe(fallback).c_str());
  EXPECT_GT(fallback.admitted(), 0);
  EXPECT_LE(fallback.admitted(), 3 * kProxies * kFallbackPerSecond + kProxies * kFallbackPerSecond)
      << Describe(fallback);
  for (int i : {0, 2, 3, 4}) {
    // Each busy proxy admits about its 10 a second.
    EXPECT_NEAR(fallback.admitted_by[i], 3 * kFallbackPerSecond, 12) << Describe(fallback);
  }
}

}  // namespace
}  // namespace sluice::testing
