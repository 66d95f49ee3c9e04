// Listeners behind a TCP load balancer with the PROXY protocol: real HAProxy
// in TCP mode (send-proxy and send-proxy-v2, from another loopback address)
// in front of a plain and a TLS listener, and headers written by hand for
// the versions' corners. The client address the header names is the one the
// upstream, the policies and the access log see.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/nginx.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/tls_client.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

constexpr char kHaproxy[] = "/usr/sbin/haproxy";
constexpr char kErrors[] = "sluice_downstream_proxy_protocol_errors_total";

std::string V2(int command, std::string addresses) {
  std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
  h.push_back(static_cast<char>(0x20 | command));
  h.push_back(addresses.size() == 36 ? '\x21' : addresses.empty() ? '\x00' : '\x11');
  h.push_back(static_cast<char>(addresses.size() >> 8));
  h.push_back(static_cast<char>(addresses.size() & 0xff));
  return h + addresses;
}

std::string Echoed(const std::string& raw, const std::string& header) {
  const std::string key = absl::StrCat("\r\nx-echo-", header, ": ");
  size_t at = raw.find(key);
  if (at == std::string::npos) return "<none>";
  at += key.size();
  return raw.substr(at, raw.find("\r\n", at) - at);
}

class ProxyProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok());
    plain_port_ = PickFreePort();
    tls_port_ = PickFreePort();
    cert_ = MakeSelfSigned(dir_, "gw", "gw.test", {"gw.test"});
    std::string yaml = absl::StrCat(
        CertificateSecretYaml("gw-cert", cert_), "---\n",
        "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n      routes:\n"
        "        - name: open\n          match: {prefix: /open}\n          route: {cluster: web}\n"
        "        - name: doc\n          match: {prefix: /doc}\n          route: {cluster: web}\n"
        "          policies: [{name: ip-restriction, typed_config: {allow: [2001:db8::/32]}}]\n"
        "---\nkind: Listener\nname: plain\nspec:\n  address: 127.0.0.1\n  port: ", plain_port_,
        "\n  route_table: main\n  proxy_protocol: true\n  access_log: {path: ", log_, "}\n"
        "  http: {request_headers_timeout: 1s}\n"
        "---\nkind: Listener\nname: secure\nspec:\n  address: 127.0.0.1\n  port: ", tls_port_,
        "\n  route_table: main\n  proxy_protocol: true\n  tls: {certificates: [gw-cert]}\n");
    auto r = cp_.Ctl({"apply", "-f", WriteFile(dir_, "config.yaml", yaml)});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "pp-proxy", 2);
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  std::string plain() const { return absl::StrCat("127.0.0.1:", plain_port_); }
  std::string Get(const std::string& path) {
    return FormatRequest(plain(), "GET", path, {{"x-real-ip", "9.9.9.9"}}, "", true);
  }

  ControlPlane cp_{"", "info"};
  UpstreamServer upstream_{"web-1"};
  std::string dir_ = MakeTempDir("proxyproto");
  std::string log_ = dir_ + "/access.log";
  TestCert cert_;
  std::unique_ptr<Proxy> proxy_;
  int plain_port_ = 0;
  int tls_port_ = 0;
};

TEST_F(ProxyProtocolTest, TheHeaderNamesTheClient) {
  // Version 1, the request in the same segment.
  std::string raw =
      SendRaw(plain(), "PROXY TCP4 203.0.113.5 127.0.0.1 5555 80\r\n" + Get("/open/a"));
  ASSERT_TRUE(absl::StartsWith(raw, "HTTP/1.1 200")) << raw;
  EXPECT_EQ(Echoed(raw, "x-real-ip"), "203.0.113.5");
  EXPECT_EQ(Echoed(raw, "x-forwarded-for"), "203.0.113.5");
  // Version 2 with an IPv6 client, which the route's ip-restriction lets in.
  std::string v6 = std::string("\x20\x01\x0d\xb8", 4) + std::string(11, '\0') + "\x07" +
                   std::string(16, '\0') + std::string("\x01\x02\x01\xbb", 4);
  raw = SendRaw(plain(), V2(1, v6) + Get("/doc"));
  ASSERT_TRUE(absl::StartsWith(raw, "HTTP/1.1 200")) << raw;
  EXPECT_EQ(Echoed(raw, "x-real-ip"), "2001:db8::7");
  raw = SendRaw(plain(), "PROXY TCP4 203.0.113.5 127.0.0.1 5555 80\r\n" + Get("/doc"));
  EXPECT_TRUE(absl::StartsWith(raw, "HTTP/1.1 403")) << raw;
  // LOCAL (a balancer's own health check): the peer is the client.
  raw = SendRaw(plain(), V2(0, "") + Get("/open/b"));
  ASSERT_TRUE(absl::StartsWith(raw, "HTTP/1.1 200")) << raw;
  EXPECT_EQ(Echoed(raw, "x-real-ip"), "127.0.0.1");
  // The access log names the client the header gave, and the balancer.
  ASSERT_TRUE(WaitFor(
      [&] {
        std::ifstream in(log_);
        std::stringstream s;
        s << in.rdbuf();
        return absl::StrContains(s.str(), "\"client_ip\":\"203.0.113.5\",\"peer_ip\":\"127.0.0.1\"");
      },
      absl::Seconds(10)));
}

TEST_F(ProxyProtocolTest, AConnectionWithoutAValidHeaderIsClosedUnanswered) {
  const int64_t before = std::max<int64_t>(proxy_->Stat(kErrors), 0);
  EXPECT_EQ(SendRaw(plain(), Get("/open/a")), "");
  EXPECT_EQ(SendRaw(plain(), "PROXY TCP4 203.0.113.5 127.0.0.1 99999 80\r\n" + Get("/open/a")),
            "");
  // Half a header, then nothing: closed at the request-head timeout (1 s).
  EXPECT_EQ(SendRaw(plain(), "PROXY TCP4 203.0", absl::Seconds(5)), "");
  ASSERT_TRUE(WaitFor([&] { return proxy_->Stat(kErrors) == before + 3; }, absl::Seconds(5)))
      << proxy_->Stat(kErrors) - before;
  // The listener still serves.
  std::string raw = SendRaw(plain(), "PROXY UNKNOWN\r\n" + Get("/open/c"));
  EXPECT_TRUE(absl::StartsWith(raw, "HTTP/1.1 200")) << raw;
  // A connection still in its header when the proxy stops is closed, not
  // counted (a rolling restart showed as a burst of errors).
  HttpConnection holding(plain());
  ASSERT_TRUE(holding.Send("PROXY TCP4 203.0").ok());
  HttpConnection slow(plain());  // keeps the draining proxy up meanwhile
  ASSERT_TRUE(slow.Send("PROXY UNKNOWN\r\n" + FormatRequest(plain(), "GET",
                                                             "/open/slow?delay_ms=3000", {}, "",
                                                             false))
                  .ok());
  ASSERT_TRUE(WaitFor([&] { return proxy_->Stat("sluice_downstream_connections_active") == 2; },
                      absl::Seconds(5)));
  const int64_t counted = proxy_->Stat(kErrors);
  proxy_->process().Signal(SIGTERM);
  ASSERT_TRUE(WaitFor([&] { return !holding.connected(); }, absl::Seconds(5)));
  EXPECT_EQ(proxy_->Stat(kErrors), counted);
  EXPECT_EQ(slow.ReadResponse().status, 200);
}

// HAProxy in TCP mode, connecting from 127.0.0.2: the client (127.0.0.1)
// is seen through send-proxy (version 1, plain listener) and send-proxy-v2
// (TLS listener: the header comes before the ClientHello).
TEST_F(ProxyProtocolTest, BehindHaproxyInTcpMode) {
  if (access(kHaproxy, X_OK) != 0) GTEST_SKIP() << kHaproxy << " is not installed";
  const int v1_port = PickFreePort();
  const int v2_port = PickFreePort();
  std::string config = absl::StrCat(
      "global\n  maxconn 100\n"
      "defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 10s\n"
      "  timeout server 10s\n"
      "listen v1\n  bind 127.0.0.1:", v1_port, "\n  server gw 127.0.0.1:", plain_port_,
      " source 127.0.0.2 send-proxy\n"
      "listen v2\n  bind 127.0.0.1:", v2_port, "\n  server gw 127.0.0.1:", tls_port_,
      " source 127.0.0.2 send-proxy-v2\n");
  Process haproxy(kHaproxy, {"-db", "-f", WriteFile(dir_, "haproxy.cfg", config)},
                  dir_ + "/haproxy.log");
  ASSERT_TRUE(WaitFor([&] { return AcceptingConnections(v2_port) || !haproxy.Running(); },
                      absl::Seconds(10)) &&
              haproxy.Running())
      << haproxy.Log();

  HttpResponse r = HttpGet(absl::StrCat("127.0.0.1:", v1_port), "/open/v1");
  ASSERT_EQ(r.status, 200) << r.error << haproxy.Log();
  EXPECT_EQ(r.header("x-echo-x-real-ip"), "127.0.0.1");  // not HAProxy's 127.0.0.2

  TlsClient client;
  TlsClientOptions options;
  options.sni = "gw.test";
  ASSERT_TRUE(client.Connect(v2_port, options)) << client.error() << haproxy.Log();
  EXPECT_EQ(client.peer_subject(), "/CN=gw.test");
  Http1Message response;
  ASSERT_TRUE(client.Request("GET /open/v2 HTTP/1.1\r\nHost: gw.test\r\n\r\n", &response))
      << client.error();
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.Header("x-echo-x-real-ip"), "127.0.0.1");
  EXPECT_EQ(response.Header("x-echo-x-forwarded-proto"), "https");
}

}  // namespace
}  // namespace sluice::testing
