// Consumers and the authentication policies through real processes:
// consumers applied with sluicectl (keys and passwords sealed by the
// control plane), key-auth, basic-auth and acl on routes of a real proxy,
// the consumer reaching a real upstream, and live changes.
#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

std::string Basic(const std::string& user_pass) {
  return "Basic " + absl::Base64Escape(user_pass);
}

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok());
    port_ = PickFreePort();
    ASSERT_EQ(Apply(Consumers("alice-key-123") + Routes()), 0) << last_error_;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "auth-proxy");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  static std::string Consumers(const std::string& alice_key) {
    return absl::StrCat(
        "kind: Consumer\nname: alice\nspec:\n  groups: [admins, staff]\n"
        "  keys: [{key: ", alice_key, "}]\n"
        "  basic_auth: {username: alice, password: wonderland}\n---\n"
        "kind: Consumer\nname: bob\nspec:\n  groups: [staff]\n  keys: [{key: bob-key-4567}]\n---\n"
        "kind: Consumer\nname: guest\nspec: {groups: [public]}\n---\n");
  }

  std::string Routes() {
    return absl::StrCat(
        "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n"
        "      routes:\n"
        "        - name: admin\n          match: {prefix: /admin}\n          route: {cluster: web}\n"
        "          policies:\n"
        "            - {name: acl, typed_config: {allow: [admins]}}\n"  // written first, runs second
        "            - {name: key-auth, typed_config: {}}\n"
        "        - name: basic\n          match: {prefix: /basic}\n          route: {cluster: web}\n"
        "          policies: [{name: basic-auth, typed_config: {realm: shop}}]\n"
        "        - name: either\n          match: {prefix: /either}\n          route: {cluster: web}\n"
        "          policies:\n"
        "            - {name: key-auth, typed_config: {anonymous: guest}}\n"
        "            - {name: basic-auth, typed_config: {}}\n"
        "        - name: both\n          match: {prefix: /both}\n          route: {cluster: web}\n"
        "          policies:\n"
        "            - {name: basic-auth, typed_config: {}}\n"
        "            - {name: key-auth, typed_config: {}}\n"
        "        - name: open\n          match: {prefix: /}\n          route: {cluster: web}\n"
        "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ",
        port_, ", route_table: main}\n");
  }

  int Apply(const std::string& yaml) {
    auto r = cp_.Ctl({"apply", "-f", WriteFile(MakeTempDir("auth"), "config.yaml", yaml)});
    last_error_ = r.out + r.err;
    return r.exit_code;
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  ControlPlane cp_{"", "info"};
  UpstreamServer upstream_{"web-1"};
  std::unique_ptr<Proxy> proxy_;
  int port_ = 0;
  std::string last_error_;
};

TEST_F(AuthTest, KeyAuthIdentifiesTheConsumerForTheUpstreamAndHidesTheKey) {
  HttpResponse r = HttpGet(address(), "/admin/users",
                           {{"apikey", "alice-key-123"}, {"x-consumer-name", "mallory"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-echo-x-consumer-name"), "alice");  // the client's value is gone
  EXPECT_EQ(r.header("x-echo-x-consumer-groups"), "admins, staff");
  EXPECT_EQ(r.header("x-echo-apikey"), "");
  // In the query: removed from the target the upstream sees.
  r = HttpGet(address(), "/admin/users?page=2&apikey=alice-key-123");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "web-1 GET /admin/users?page=2\n");
}

TEST_F(AuthTest, MissingOrWrongKeyIs401AndAclRefusesOtherGroups) {
  HttpResponse r = HttpGet(address(), "/admin/users", {{"x-request-id", "req-401"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.header("www-authenticate"), "Key realm=\"sluice\"");
  EXPECT_EQ(r.body, "{\"error\":\"no API key found in request\",\"request_id\":\"req-401\"}\n");
  EXPECT_EQ(r.header("x-upstream"), "");
  r = HttpGet(address(), "/admin/users", {{"apikey", "alice-key-124"}});
  EXPECT_EQ(r.status, 401);
  EXPECT_TRUE(absl::StrContains(r.body, "invalid API key")) << r.body;
  // bob is known but not an admin: acl runs after key-auth, whatever the order written.
  r = HttpGet(address(), "/admin/users", {{"apikey", "bob-key-4567"}});
  EXPECT_EQ(r.status, 403);
  EXPECT_TRUE(absl::StrContains(r.body, "you cannot consume this service")) << r.body;
}

TEST_F(AuthTest, NoRouteLetsAClientClaimAConsumer) {
  HttpResponse r = HttpGet(address(), "/open",
                           {{"x-consumer-name", "alice"}, {"X-Consumer-Groups", "admins"},
                            {"x-anonymous-consumer", "false"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-echo-x-consumer-name"), "");
  EXPECT_EQ(r.header("x-echo-x-consumer-groups"), "");
  EXPECT_EQ(r.header("x-echo-x-anonymous-consumer"), "");
}

TEST_F(AuthTest, BasicAuthChecksThePasswordAndRemembersIt) {
  HttpConnection conn(address());
  for (int i = 0; i < 3; ++i) {  // the first is checked off the worker, the rest cached
    HttpResponse r = conn.Request("GET", "/basic/x", {{"authorization", Basic("alice:wonderland")}});
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-echo-x-consumer-name"), "alice");
    EXPECT_EQ(r.header("x-echo-authorization"), "");
  }
  HttpResponse r = conn.Request("GET", "/basic/x", {{"authorization", Basic("alice:guess")}});
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.header("www-authenticate"), "Basic realm=\"shop\", charset=\"UTF-8\"");
  r = conn.Request("GET", "/basic/x", {{"authorization", Basic("nobody:wonderland")}});
  EXPECT_EQ(r.status, 401);
  // A body sent with a request whose password is being checked goes upstream whole.
  std::string body(200000, 'b');
  r = conn.Request("POST", "/basic/upload", {{"authorization", Basic("alice:wonderland")}}, body);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(absl::StrContains(r.body, "body-bytes=200000")) << r.body;
}

TEST_F(AuthTest, SeveralAuthenticationPoliciesMeanAnyOfThemWithAnonymousLast) {
  HttpResponse r = HttpGet(address(), "/either", {{"authorization", Basic("alice:wonderland")}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-echo-x-consumer-name"), "alice");
  EXPECT_EQ(r.header("x-echo-x-anonymous-consumer"), "");
  r = HttpGet(address(), "/either", {{"apikey", "bob-key-4567"}});
  EXPECT_EQ(r.header("x-echo-x-consumer-name"), "bob");
  r = HttpGet(address(), "/either");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-echo-x-consumer-name"), "guest");
  EXPECT_EQ(r.header("x-echo-x-anonymous-consumer"), "true");
}

// Refused by every one of several policies: the answer is the first one's
// refusal (basic-auth, as written), counted and logged under its name, not
// under a name no policy has.
TEST_F(AuthTest, ARefusalOfSeveralPoliciesCarriesTheFirstOnesName) {
  HttpResponse r = HttpGet(address(), "/both", {{"authorization", Basic("alice:wrong")}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_FALSE(r.header("www-authenticate").empty());
  EXPECT_TRUE(WaitFor(
      [&] {
        return proxy_->Stat(
                   "sluice_policy_responses_total{policy=\"basic-auth\",status=\"401\"}") == 1;
      },
      absl::Seconds(5)))
      << proxy_->Admin("/metrics").second;
  EXPECT_FALSE(absl::StrContains(proxy_->Admin("/metrics").second, "policy=\"authentication\""));
  r = HttpGet(address(), "/both", {{"apikey", "bob-key-4567"}});
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-echo-x-consumer-name"), "bob");
}

TEST_F(AuthTest, ARevokedKeyStopsWorkingOnTheNextRequestOfAnOpenConnection) {
  HttpConnection conn(address());
  HttpResponse r = conn.Request("GET", "/admin", {{"apikey", "alice-key-123"}});
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(Apply(Consumers("alice-key-new-1")), 0) << last_error_;
  ASSERT_TRUE(proxy_->WaitForVersion(2));
  r = conn.Request("GET", "/admin", {{"apikey", "alice-key-123"}});
  EXPECT_EQ(r.status, 401);
  r = conn.Request("GET", "/admin", {{"apikey", "alice-key-new-1"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(conn.connections_opened(), 1);
}

TEST_F(AuthTest, StoredConsumersHoldOnlyHashes) {
  auto r = cp_.Ctl({"get", "consumer", "alice", "-o", "yaml"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(absl::StrContains(r.out, "alice-key-123")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "wonderland")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "key_sha256")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "pbkdf2-sha256$")) << r.out;
  // Applying the same file again changes nothing (the hashes are reused).
  ASSERT_EQ(Apply(Consumers("alice-key-123")), 0) << last_error_;
  EXPECT_TRUE(absl::StrContains(last_error_, "unchanged") ||
              absl::StrContains(last_error_, "no change"))
      << last_error_;
}

TEST_F(AuthTest, TheGatewayExampleIsValid) {
  auto r = cp_.Ctl({"apply", "--dry-run", "-f", RunfilePath("examples/gateway.yaml")});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

}  // namespace
}  // namespace sluice::testing
