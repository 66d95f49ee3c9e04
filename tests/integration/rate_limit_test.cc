// The rate-limit policy through real processes: Consumers and key-auth
// applied with sluicectl, rate-limit per consumer on a route of a real
// proxy in front of a real upstream; the 429 a client sees, its headers,
// and what config changes do to the counters.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

class RateLimitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok());
    port_ = PickFreePort();
    ASSERT_EQ(Apply(Consumers(false) + Routes(5, false)), 0) << last_error_;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "rate-limit-proxy");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  static std::string Consumers(bool with_carol) {
    return absl::StrCat(
        "kind: Consumer\nname: alice\nspec:\n  keys: [{key: alice-key-123}]\n---\n"
        "kind: Consumer\nname: bob\nspec:\n  keys: [{key: bob-key-4567}]\n---\n",
        with_carol ? "kind: Consumer\nname: carol\nspec:\n  keys: [{key: carol-key-89}]\n---\n"
                   : "");
  }

  // /api: key-auth, then `per_minute` requests a minute per consumer.
  // `extra_route`: another route before it, its policy untouched.
  std::string Routes(int per_minute, bool extra_route) {
    return absl::StrCat(
        "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n"
        "      routes:\n",
        extra_route ? "        - name: health\n          match: {prefix: /health}\n"
                      "          route: {cluster: web}\n"
                    : "",
        "        - name: api\n          match: {prefix: /api}\n          route: {cluster: web}\n"
        "          policies:\n"
        "            - name: rate-limit\n"  // written first, runs after key-auth
        "              typed_config:\n"
        "                name: per-consumer\n"
        "                limits: [{requests: ",
        per_minute,
        ", per: MINUTE}]\n"
        "                key: [CONSUMER]\n"
        "            - {name: key-auth, typed_config: {}}\n"
        "        - name: trimmed\n          match: {prefix: /trimmed}\n          route: {cluster: web}\n"
        "          policies:\n"
        "            - {name: rate-limit, typed_config: {limits: [{requests: 1, per: MINUTE}], "
        "key: [CLIENT_IP]}}\n"
        "            - {name: response-transformer, typed_config: {headers: {remove: "
        "[ratelimit-limit, x-ratelimit-remaining-minute]}}}\n"
        "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ",
        port_, ", route_table: main}\n");
  }

  int Apply(const std::string& yaml) {
    auto r = cp_.Ctl({"apply", "-f", WriteFile(MakeTempDir("rate-limit"), "config.yaml", yaml)});
    last_error_ = r.out + r.err;
    return r.exit_code;
  }

  HttpResponse Get(const std::string& key, Headers extra = {}) {
    extra.push_back({"apikey", key});
    return HttpGet(address(), "/api/orders", extra);
  }

  // Spends `n` of alice's requests; all must pass.
  void Spend(int n) {
    for (int i = 0; i < n; ++i) {
      HttpResponse r = Get("alice-key-123");
      ASSERT_TRUE(r.ok()) << r.error;
      ASSERT_EQ(r.status, 200) << i << ": " << r.body;
    }
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  ControlPlane cp_{"", "info"};
  UpstreamServer upstream_{"web-1"};
  std::unique_ptr<Proxy> proxy_;
  int port_ = 0;
  std::string last_error_;
};

TEST_F(RateLimitTest, TheSixthRequestOfAMinuteIs429AndOtherConsumersAreUnaffected) {
  for (int i = 0; i < 5; ++i) {
    HttpResponse r = Get("alice-key-123");
    ASSERT_TRUE(r.ok()) << r.error;
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-echo-x-consumer-name"), "alice");
    EXPECT_EQ(r.header("ratelimit-limit"), "5");
    EXPECT_EQ(r.header("ratelimit-remaining"), absl::StrCat(4 - i));
    EXPECT_EQ(r.header("x-ratelimit-limit-minute"), "5");
    EXPECT_EQ(r.header("x-ratelimit-remaining-minute"), absl::StrCat(4 - i));
  }
  HttpResponse r = Get("alice-key-123", {{"x-request-id", "req-429"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.body, "{\"error\":\"API rate limit exceeded\",\"request_id\":\"req-429\"}\n");
  EXPECT_EQ(r.header("x-upstream"), "");  // the upstream never saw it
  int retry_after = 0;
  ASSERT_TRUE(absl::SimpleAtoi(r.header("retry-after"), &retry_after)) << r.header("retry-after");
  EXPECT_GE(retry_after, 1);  // one request every 12 s: the next within 12 s
  EXPECT_LE(retry_after, 12);
  EXPECT_EQ(r.header("ratelimit-limit"), "5");
  EXPECT_EQ(r.header("ratelimit-remaining"), "0");
  int reset = 0;
  ASSERT_TRUE(absl::SimpleAtoi(r.header("ratelimit-reset"), &reset));
  EXPECT_GE(reset, 49);  // whole again after the 5 * 12 s just spent
  EXPECT_LE(reset, 60);
  EXPECT_EQ(r.header("x-ratelimit-remaining-minute"), "0");

  // bob has his own budget.
  r = Get("bob-key-4567");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("ratelimit-remaining"), "4");
  // A gRPC client gets RESOURCE_EXHAUSTED.
  r = Get("alice-key-123", {{"content-type", "application/grpc"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("grpc-status"), "8");
  EXPECT_EQ(r.header("grpc-message"), "API rate limit exceeded");
  // A refused key-auth is answered before rate limiting: 401, no headers.
  r = Get("wrong-key-000");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.header("ratelimit-limit"), "");
}

// Tiers through sluicectl: a Consumer group's override gives its members
// their own limits; the others keep the policy's.
TEST_F(RateLimitTest, AnOverrideGivesAGroupItsOwnLimits) {
  std::string routes = Routes(2, false);
  const std::string limits = "                limits: [{requests: 2, per: MINUTE}]\n";
  ASSERT_NE(routes.find(limits), std::string::npos);
  routes.replace(routes.find(limits), limits.size(),
                 limits + "                overrides:\n"
                          "                  - groups: [gold]\n"
                          "                    limits: [{requests: 4, per: MINUTE}]\n");
  ASSERT_EQ(Apply(absl::StrCat(
                "kind: Consumer\nname: alice\nspec:\n  keys: [{key: alice-key-123}]\n"
                "  groups: [gold]\n---\n"
                "kind: Consumer\nname: bob\nspec:\n  keys: [{key: bob-key-4567}]\n---\n",
                routes)),
            0)
      << last_error_;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  for (int i = 0; i < 4; ++i) {
    HttpResponse r = Get("alice-key-123");
    ASSERT_EQ(r.status, 200) << i << ": " << r.body;
    EXPECT_EQ(r.header("x-ratelimit-limit-minute"), "4");
    EXPECT_EQ(r.header("x-ratelimit-remaining-minute"), absl::StrCat(3 - i));
  }
  EXPECT_EQ(Get("alice-key-123").status, 429);
  for (int i = 0; i < 2; ++i) {
    HttpResponse r = Get("bob-key-4567");
    ASSERT_EQ(r.status, 200) << i << ": " << r.body;
    EXPECT_EQ(r.header("x-ratelimit-limit-minute"), "2");
  }
  EXPECT_EQ(Get("bob-key-4567").status, 429);
  // A bad override is refused with its field named; the last good config serves.
  std::string bad = routes;
  bad.replace(bad.find("groups: [gold]"), 14, "groups: []");
  EXPECT_NE(Apply(bad), 0);
  EXPECT_NE(last_error_.find("overrides[0]: names no one: give consumers, groups or both"),
            std::string::npos)
      << last_error_;
  EXPECT_EQ(Get("bob-key-4567").status, 429);
}

// The RateLimit fields are there for the response policies to edit, on the
// upstream's answer and on the 429. Before: rate-limit added them after
// every other policy had run, so response-transformer could not remove them.
TEST_F(RateLimitTest, ResponsePoliciesCanRemoveTheRateLimitFields) {
  for (int status : {200, 429}) {
    HttpResponse r = HttpGet(address(), "/trimmed/x");
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_EQ(r.header("ratelimit-limit"), "") << status;
    EXPECT_EQ(r.header("x-ratelimit-remaining-minute"), "") << status;
    EXPECT_EQ(r.header("ratelimit-remaining"), "0") << status;
    EXPECT_EQ(r.header("x-ratelimit-limit-minute"), "1") << status;
  }
}

TEST_F(RateLimitTest, ChangesElsewhereKeepTheCountersAndAChangedLimitKeepsWhatWasSpent) {
  Spend(5);
  ASSERT_EQ(Get("alice-key-123").status, 429);
  // An unrelated resource changes (a new consumer): alice is still limited.
  ASSERT_EQ(Apply(Consumers(true)), 0) << last_error_;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  EXPECT_EQ(Get("alice-key-123").status, 429);
  EXPECT_EQ(Get("carol-key-89").status, 200);
  // The route table changes around the policy (it is compiled again, the
  // policy's config is the same): still limited.
  ASSERT_EQ(Apply(Routes(5, true)), 0) << last_error_;
  ASSERT_TRUE(proxy_->WaitForVersion(3)) << proxy_->process().Log();
  EXPECT_EQ(HttpGet(address(), "/health").status, 200);
  HttpResponse r = Get("alice-key-123");
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.header("ratelimit-limit"), "5");
  // A raised limit: the new limit, with what alice spent carried over
  // (5 of the 8: 3 more). Before, she got all 8 afresh.
  ASSERT_EQ(Apply(Routes(8, true)), 0) << last_error_;
  ASSERT_TRUE(proxy_->WaitForVersion(4)) << proxy_->process().Log();
  r = Get("alice-key-123");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("ratelimit-limit"), "8");
  EXPECT_EQ(r.header("ratelimit-remaining"), "2");
  Spend(2);
  r = Get("alice-key-123");
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.header("ratelimit-limit"), "8");
  // A lowered one: she spent more than it allows, and stays limited.
  ASSERT_EQ(Apply(Routes(3, true)), 0) << last_error_;
  ASSERT_TRUE(proxy_->WaitForVersion(5)) << proxy_->process().Log();
  r = Get("alice-key-123");
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.header("ratelimit-limit"), "3");
  EXPECT_EQ(Get("carol-key-89").status, 200);
}

TEST_F(RateLimitTest, ScopeFleetOptionsAreCheckedAtApply) {
  std::string yaml = Routes(5, false);
  size_t at = yaml.find("                key: [CONSUMER]\n");
  ASSERT_NE(at, std::string::npos);
  yaml.insert(at,
              "                scope: FLEET\n"
              "                fleet: {fallback_limits: [{requests: 6, per: MINUTE}]}\n");
  EXPECT_NE(Apply(yaml), 0);
  EXPECT_TRUE(absl::StrContains(last_error_,
                                "policies[0].typed_config.fleet.fallback_limits[0].requests"))
      << last_error_;
  EXPECT_TRUE(absl::StrContains(last_error_, "1..5 (the fleet's limit")) << last_error_;
}

}  // namespace
}  // namespace sluice::testing
