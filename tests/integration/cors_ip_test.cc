// The `cors` and `ip-restriction` policies through real processes: routes
// applied with sluicectl, a real proxy and a real upstream; preflights
// answered at the gateway without reaching the upstream, CORS fields on
// actual responses and on the gateway's own refusals, clients refused or
// let through by their address, and bad config refused with its field.
#include <gtest/gtest.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

constexpr char kApp[] = "https://app.example.com";

class CorsIpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok());
    port_ = PickFreePort();
    ASSERT_EQ(Apply(Config()), 0) << last_error_;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "cors-ip-proxy");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  // `cors_policy` and `deny` are what the tests that refuse bad config
  // replace.
  std::string Config(const std::string& cors_policy = kCors,
                     const std::string& deny = "[127.0.0.1]") {
    return absl::StrCat(
        "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n"
        "      routes:\n"
        "        - name: cors\n          match: {prefix: /cors}\n          route: {cluster: web}\n"
        "          policies:\n",
        cors_policy,
        "            - name: headers\n"
        "              typed_config: {response: {add: [{name: vary, value: Accept-Encoding}]}}\n"
        "        - name: continue\n          match: {prefix: /continue}\n"
        "          route: {cluster: web}\n"
        "          policies:\n"
        "            - {name: cors, typed_config: {origins: ['*'], preflight_continue: true}}\n"
        "        - name: denied\n          match: {prefix: /denied}\n"
        "          route: {cluster: web}\n"
        "          policies:\n"
        "            - {name: ip-restriction, typed_config: {deny: ",
        deny,
        "}}\n"
        "            - {name: cors, typed_config: {origins: ['",
        kApp,
        "']}}\n"
        "        - name: allowed\n          match: {prefix: /allowed}\n"
        "          route: {cluster: web}\n"
        "          policies:\n"
        "            - {name: ip-restriction, typed_config: {allow: [127.0.0.0/8, '::1']}}\n"
        "        - name: elsewhere\n          match: {prefix: /elsewhere}\n"
        "          route: {cluster: web}\n"
        "          policies:\n"
        "            - name: ip-restriction\n"
        "              typed_config: {allow: [192.0.2.0/24], status: 451, message: not from "
        "there}\n"
        "        - name: open\n          match: {prefix: /}\n          route: {cluster: web}\n"
        "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ",
        port_, ", route_table: main}\n");
  }

  static constexpr char kCors[] =
      "            - name: cors\n"
      "              typed_config:\n"
      "                origins: ['https://app.example.com', '~^https://[a-z]+\\.example\\.org$']\n"
      "                headers: [authorization, content-type]\n"
      "                exposed_headers: [x-upstream]\n"
      "                credentials: true\n"
      "                max_age: 600\n";

  int Apply(const std::string& yaml) {
    auto r = cp_.Ctl({"apply", "-f", WriteFile(MakeTempDir("cors-ip"), "config.yaml", yaml)});
    last_error_ = r.out + r.err;
    return r.exit_code;
  }

  int UpstreamRequests() const {
    std::optional<int> n = upstream_.RequestCount();
    EXPECT_TRUE(n.has_value());
    return n.value_or(-1);
  }

  // The preflight's raw response, lower-cased (to see repeated fields).
  std::string RawPreflight(const std::string& path, const std::string& origin) {
    return absl::AsciiStrToLower(
        SendRaw(address(), absl::StrCat("OPTIONS ", path, " HTTP/1.1\r\nhost: a\r\norigin: ",
                                        origin,
                                        "\r\naccess-control-request-method: PUT\r\n"
                                        "connection: close\r\n\r\n")));
  }

  HttpResponse Preflight(const std::string& path, const std::string& origin) {
    return HttpRequest(address(), "OPTIONS", path,
                       {{"origin", origin},
                        {"access-control-request-method", "PUT"},
                        {"access-control-request-headers", "content-type"}},
                       "");
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  ControlPlane cp_{"", "info"};
  UpstreamServer upstream_{"web-1"};
  std::unique_ptr<Proxy> proxy_;
  int port_ = 0;
  std::string last_error_;
};

TEST_F(CorsIpTest, PreflightIsAnsweredByTheGatewayAndNeverReachesTheUpstream) {
  const int before = UpstreamRequests();
  HttpResponse r = Preflight("/cors/items/7", kApp);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(r.body, "");
  EXPECT_EQ(r.header("content-length"), "");
  EXPECT_EQ(r.header("access-control-allow-origin"), kApp);
  EXPECT_EQ(r.header("access-control-allow-methods"),
            "GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS");
  EXPECT_EQ(r.header("access-control-allow-headers"), "authorization, content-type");
  EXPECT_EQ(r.header("access-control-allow-credentials"), "true");
  EXPECT_EQ(r.header("access-control-max-age"), "600");
  // Vary: Origin, and the route's headers policy adds its field to the
  // gateway's answer as to every answer of the route.
  std::string raw = RawPreflight("/cors/items/7", kApp);
  EXPECT_TRUE(absl::StrContains(raw, "\r\nvary: origin\r\n")) << raw;
  EXPECT_TRUE(absl::StrContains(raw, "\r\nvary: accept-encoding\r\n")) << raw;
  EXPECT_EQ(r.header("x-upstream"), "");
  EXPECT_NE(r.header("x-request-id"), "");
  // A regex origin; and one that is not allowed: 204 without the allow
  // fields, so the browser stops there.
  r = Preflight("/cors/items/7", "https://shop.example.org");
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(r.header("access-control-allow-origin"), "https://shop.example.org");
  r = Preflight("/cors/items/7", "https://evil.example");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(r.header("access-control-allow-origin"), "");
  EXPECT_EQ(r.header("access-control-allow-methods"), "");
  EXPECT_EQ(r.header("access-control-allow-credentials"), "");
  raw = RawPreflight("/cors/items/7", "https://evil.example");
  EXPECT_TRUE(absl::StrContains(raw, "\r\nvary: origin\r\n")) << raw;
  EXPECT_EQ(UpstreamRequests(), before);
}

TEST_F(CorsIpTest, ActualRequestsGetTheAllowFieldsWhenTheOriginIsAllowed) {
  HttpResponse r = HttpGet(address(), "/cors/items", {{"origin", kApp}, {"x-test-a", "1"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-echo-x-test-a"), "1");  // went upstream
  EXPECT_EQ(r.header("access-control-allow-origin"), kApp);
  EXPECT_EQ(r.header("access-control-allow-credentials"), "true");
  EXPECT_EQ(r.header("access-control-expose-headers"), "x-upstream");
  // The headers policy's Vary, merged with Origin into one field.
  EXPECT_EQ(r.header("vary"), "Accept-Encoding, Origin");
  r = HttpGet(address(), "/cors/items", {{"origin", "https://evil.example"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("access-control-allow-origin"), "");
  EXPECT_EQ(r.header("access-control-allow-credentials"), "");
  EXPECT_EQ(r.header("vary"), "Accept-Encoding, Origin");
  // No Origin: not a CORS request, but a cache must still keep them apart.
  r = HttpGet(address(), "/cors/items");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("access-control-allow-origin"), "");
  EXPECT_EQ(r.header("vary"), "Accept-Encoding, Origin");
}

TEST_F(CorsIpTest, PreflightContinueSendsThePreflightUpstream) {
  const int before = UpstreamRequests();
  HttpResponse r = Preflight("/continue", kApp);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-upstream"), "web-1");
  EXPECT_EQ(r.header("access-control-allow-origin"), "*");
  EXPECT_EQ(UpstreamRequests(), before + 1);
  // With '*' a request without Origin gets the same answer, and no Vary.
  r = HttpGet(address(), "/continue/x");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.header("access-control-allow-origin"), "*");
  EXPECT_EQ(r.header("vary"), "");
}

TEST_F(CorsIpTest, DeniedAddressIs403AndAllowedBlockPasses) {
  const int before = UpstreamRequests();
  HttpResponse r = HttpGet(address(), "/denied", {{"x-request-id", "req-ip-1"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.body, "{\"error\":\"your IP address is not allowed\",\"request_id\":\"req-ip-1\"}\n");
  EXPECT_EQ(r.header("x-upstream"), "");
  EXPECT_EQ(UpstreamRequests(), before);
  r = HttpGet(address(), "/allowed");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-upstream"), "web-1");
  // Not in the allow list, with the route's own status and message.
  r = HttpGet(address(), "/elsewhere");
  EXPECT_EQ(r.status, 451);
  EXPECT_TRUE(absl::StrContains(r.body, "\"error\":\"not from there\"")) << r.body;
}

TEST_F(CorsIpTest, TheGatewaysRefusalCarriesTheCorsFieldsSoAPageCanReadIt) {
  HttpResponse r = HttpGet(address(), "/denied", {{"origin", kApp}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.header("access-control-allow-origin"), kApp);
  EXPECT_EQ(r.header("vary"), "Origin");
  // cors runs before ip-restriction: a preflight is answered even for a
  // denied client (the actual request is then refused).
  r = Preflight("/denied", kApp);
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(r.header("access-control-allow-origin"), kApp);
}

TEST_F(CorsIpTest, BadConfigIsRefusedWithItsFieldAndNothingChanges) {
  EXPECT_NE(Apply(Config(kCors, "[10.0.0.0/8, '::1', 10.0.0.300/8]")), 0);
  EXPECT_TRUE(absl::StrContains(
      last_error_,
      "routes[2].policies[0].typed_config.deny[2]: '10.0.0.300/8' is not an IP address or CIDR"))
      << last_error_;
  EXPECT_NE(Apply(Config(kCors, "[10.0.0.1/8]")), 0);
  EXPECT_TRUE(absl::StrContains(
      last_error_, "deny[0]: '10.0.0.1/8' has host bits set (the block is '10.0.0.0/8')"))
      << last_error_;
  std::string star_with_credentials =
      "            - {name: cors, typed_config: {origins: ['*'], credentials: true}}\n";
  EXPECT_NE(Apply(Config(star_with_credentials)), 0);
  EXPECT_TRUE(absl::StrContains(last_error_,
                                "routes[0].policies[0].typed_config.credentials: cannot be true "
                                "with origins ['*']"))
      << last_error_;
  std::string bad_regex = "            - {name: cors, typed_config: {origins: ['~(']}}\n";
  EXPECT_NE(Apply(Config(bad_regex)), 0);
  EXPECT_TRUE(absl::StrContains(last_error_,
                                "routes[0].policies[0].typed_config.origins[0]: invalid RE2 "
                                "regular expression '(': missing ): ("))
      << last_error_;
  EXPECT_EQ(proxy_->ReadyVersion(), 1u);
  HttpResponse r = HttpGet(address(), "/denied");
  EXPECT_EQ(r.status, 403);
}

}  // namespace
}  // namespace sluice::testing
