// HTTP/2 to upstreams that are not gRPC, with nginx as the upstream: h2c with
// prior knowledge (`listen ... http2`), h2 by ALPN (`listen ... ssl http2`)
// and HTTPS that only speaks HTTP/1.1 (`listen ... ssl`). Every nginx
// response says which protocol nginx saw (x-proto: $server_protocol) and, on
// TLS, which ALPN protocol was chosen (x-alpn). Clients are HTTP/1.1 (the
// harness client) and curl; WebSocket clients are ws_tool.py (HTTP/1.1) and
// ws_h2_client.py (RFC 8441 over h2c), the server behind nginx ws_tool.py's.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_replace.h"
#include "tests/harness/http_client.h"
#include "tests/harness/http_wire.h"
#include "tests/harness/nginx.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/tls_client.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

// nginx directives adding 20 KB of response fields (a value is at most 4 KB
// in nginx's config).
std::string BigHeadFields() {
  std::string out;
  for (int i = 0; i < 5; ++i) absl::StrAppend(&out, "add_header x-big-", i, " ", std::string(4000, 'b'), "; ");
  return out;
}

// h2c on `h2c_port` (its /h2c/echo/ proxied to upstream_server on
// `origin_port`, which reports the body it got), h2 and HTTP/1.1 by ALPN on
// `h2_tls_port` (its /ws/ passes WebSocket handshakes, which nginx takes
// over HTTP/1.1 only, to the echo server on `ws_port`), HTTP/1.1 only on
// `h1_tls_port` (its /auto-h1/echo/ to upstream_server too).
std::string NginxServers(int h2c_port, int h2_tls_port, int h1_tls_port, int origin_port,
                         int goaway_port, int limited_port, int ws_port, const TestCert& cert) {
  constexpr char kServers[] = R"(  server {
    listen 127.0.0.1:{LIMITED} http2;
    http2_max_concurrent_streams 5;
    location / { proxy_pass http://127.0.0.1:{ORIGIN}; }
  }
  server {
    listen 127.0.0.1:{GOAWAY} http2;
    keepalive_requests 3;
    location / { return 200 "goaway-upstream\n"; }
  }
  server {
    listen 127.0.0.1:{H2C} http2;
    add_header x-proto $server_protocol always;
    client_max_body_size 8m;
    location /h2c/echo/ { proxy_pass http://127.0.0.1:{ORIGIN}; }
    location /big-head { {BIG} return 200 "big\n"; }
    location / { return 200 "h2c-upstream\n"; }
  }
  server {
    listen 127.0.0.1:{H2_TLS} ssl http2;
    ssl_certificate {CERT};
    ssl_certificate_key {KEY};
    add_header x-proto $server_protocol always;
    add_header x-alpn "$ssl_alpn_protocol" always;
    location /ws/ {
      proxy_pass http://127.0.0.1:{WS};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
    }
    location / { return 200 "h2-upstream\n"; }
  }
  server {
    listen 127.0.0.1:{H1_TLS} ssl;
    ssl_certificate {CERT};
    ssl_certificate_key {KEY};
    add_header x-proto $server_protocol always;
    add_header x-alpn "$ssl_alpn_protocol" always;
    location /auto-h1/echo/ { proxy_pass http://127.0.0.1:{ORIGIN}; }
    location / { return 200 "h1-upstream\n"; }
  }
)";
  return absl::StrReplaceAll(kServers, {{"{H2C}", absl::StrCat(h2c_port)},
                                        {"{H2_TLS}", absl::StrCat(h2_tls_port)},
                                        {"{H1_TLS}", absl::StrCat(h1_tls_port)},
                                        {"{ORIGIN}", absl::StrCat(origin_port)},
                                        {"{GOAWAY}", absl::StrCat(goaway_port)},
                                        {"{LIMITED}", absl::StrCat(limited_port)},
                                        {"{WS}", absl::StrCat(ws_port)},
                                        {"{BIG}", BigHeadFields()},
                                        {"{CERT}", cert.cert_path},
                                        {"{KEY}", cert.key_path}});
}

// A cluster of one endpoint speaking `protocol`, with `tls` (a YAML flow
// mapping) unless empty.
std::string ClusterYaml(const std::string& name, int port, const std::string& protocol,
                        const std::string& tls) {
  return absl::StrCat("kind: Cluster\nname: ", name, "\nspec:\n  protocol: ", protocol,
                      "\n  endpoints: [{address: 127.0.0.1, port: ", port, "}]\n",
                      tls.empty() ? "" : absl::StrCat("  tls: ", tls, "\n"));
}

constexpr char kHttpCheck[] =
    "  health_check: {http: {path: /}, interval: 300ms, timeout: 300ms, healthy_threshold: 1, "
    "healthy_on_add: false}\n  panic_threshold_percent: 0\n";

class UpstreamHttp2Test : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(origin_.ok()) << origin_.process().Log();
    dir_ = MakeTempDir("upstream-h2");
    ws_echo_ = std::make_unique<Process>(
        "/usr/bin/python3",
        std::vector<std::string>{RunfilePath("tests/harness/ws_tool.py"), "server"},
        dir_ + "/ws_echo.log");
    auto listening = ws_echo_->WaitForLogLine("listening on ", absl::Seconds(20));
    int ws_port = 0;
    ASSERT_TRUE(listening && absl::SimpleAtoi(listening->substr(listening->find("on ") + 3),
                                              &ws_port))
        << ws_echo_->Log();
    TestCert ca = MakeCa(dir_, "upstream-ca", "Upstream Test CA");
    TestCert backend = MakeSignedBy(ca, dir_, "backend", "backend", {"backend.test"});
    int h2c_port = PickFreePort();
    int h2_tls_port = PickFreePort();
    int h1_tls_port = PickFreePort();
    int goaway_port = PickFreePort();
    int limited_port = PickFreePort();
    proxy_port_ = PickFreePort();
    ASSERT_TRUE(h2c_port != h2_tls_port && h2c_port != h1_tls_port &&
                h2_tls_port != h1_tls_port);
    nginx_ = std::make_unique<Nginx>(
        dir_,
        NginxServers(h2c_port, h2_tls_port, h1_tls_port, origin_.port(), goaway_port,
                     limited_port, ws_port, backend),
        std::vector<int>{h2c_port, h2_tls_port, h1_tls_port, goaway_port, limited_port});
    ASSERT_TRUE(nginx_->ok()) << nginx_->Log();
    // TLS that answers no ALPN at all (and HTTP/1.0 to "GET /").
    const int no_alpn_port = PickFreePort();
    no_alpn_ = std::make_unique<Process>(
        "/usr/bin/openssl",
        std::vector<std::string>{"s_server", "-accept", absl::StrCat("127.0.0.1:", no_alpn_port),
                                 "-cert", backend.cert_path, "-key", backend.key_path, "-www",
                                 "-naccept", "100"},
        dir_ + "/s_server.log");
    ASSERT_TRUE(no_alpn_->WaitForLogLine("ACCEPT", absl::Seconds(10))) << no_alpn_->Log();

    const std::string verified = "{ca: upstream-ca, sni: backend.test}";
    std::string routes;
    for (const char* name : {"h2c", "auto-h2", "auto-h1", "h2-only", "goaway", "limited",
                             "checked-h2c", "checked-auto-h2", "checked-auto-h1",
                             "checked-big-head", "h1-as-h2", "mixed", "h2-no-alpn",
                             "auto-h1-after-dead"}) {
      absl::StrAppend(&routes, "        - match: {prefix: /", name,
                      "/}\n          route: {cluster: ", name, "}\n");
    }
    std::string yaml = absl::StrCat(
        CaSecretYaml("upstream-ca", ca), "---\n", ClusterYaml("h2c", h2c_port, "HTTP2", ""),
        "---\n", ClusterYaml("auto-h2", h2_tls_port, "AUTO", verified), "---\n",
        ClusterYaml("auto-h1", h1_tls_port, "AUTO", verified), "---\n",
        "kind: Cluster\nname: auto-h1-after-dead\nspec:\n  protocol: AUTO\n  endpoints: "
        "[{address: 127.0.0.1, port: ", PickFreePort(), "}, {address: 127.0.0.1, port: ",
        h1_tls_port, "}]\n  tls: ", verified, "\n---\n",
        ClusterYaml("h2-only", h1_tls_port, "HTTP2", verified), "---\n",
        ClusterYaml("goaway", goaway_port, "HTTP2", ""), "---\n",
        ClusterYaml("limited", limited_port, "HTTP2", ""), "---\n",
        // HTTP health checks in each protocol: an endpoint takes traffic
        // once one passed.
        ClusterYaml("checked-h2c", h2c_port, "HTTP2", ""), kHttpCheck, "---\n",
        // A 20 KB response head, which traffic takes: so does the check.
        ClusterYaml("checked-big-head", h2c_port, "HTTP2", ""),
        absl::StrReplaceAll(kHttpCheck, {{"path: /}", "path: /big-head}"}}), "---\n",
        ClusterYaml("checked-auto-h2", h2_tls_port, "AUTO", verified), kHttpCheck, "---\n",
        ClusterYaml("checked-auto-h1", h1_tls_port, "AUTO", verified), kHttpCheck, "---\n",
        ClusterYaml("auto-no-alpn", no_alpn_port, "AUTO", verified), "---\n",
        ClusterYaml("h2-no-alpn", no_alpn_port, "HTTP2", verified),
        "  connect_timeout: 300ms\n---\n",
        // An HTTP2 cluster with an HTTP/1.1 endpoint: alone, and beside an
        // h2c one.
        ClusterYaml("h1-as-h2", origin_.port(), "HTTP2", ""), "---\n",
        "kind: Cluster\nname: mixed\nspec:\n  protocol: HTTP2\n  endpoints: [{address: "
        "127.0.0.1, port: ", origin_.port(), "}, {address: 127.0.0.1, port: ", h2c_port, "}]\n",
        "---\n",
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
        "      routes:\n",
        routes,
        "        - match: {prefix: /auto-no-alpn/}\n"
        "          route: {cluster: auto-no-alpn, prefix_rewrite: /}\n",
        "        - match: {prefix: /ws/}\n"
        "          route: {cluster: auto-h2, websocket: true}\n",
        "---\nkind: Listener\nname: http\nspec: {address: 127.0.0.1, port: ", proxy_port_,
        ", route_table: main}\n");
    auto r = cp_.Ctl({"apply", "-f", WriteFile(dir_, "config.yaml", yaml)});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "upstream-h2-proxy");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  std::string ProxyAddress() const { return absl::StrCat("127.0.0.1:", proxy_port_); }
  HttpResponse Get(const std::string& path) { return HttpGet(ProxyAddress(), path); }

  ControlPlane cp_{"", "info"};
  UpstreamServer origin_{"origin"};
  std::unique_ptr<Process> ws_echo_;  // ws_tool.py server, behind nginx's /ws/
  std::unique_ptr<Nginx> nginx_;
  std::unique_ptr<Process> no_alpn_;
  std::unique_ptr<Proxy> proxy_;
  std::string dir_;
  int proxy_port_ = 0;
};

TEST_F(UpstreamHttp2Test, Http11ClientThroughAnHttp2ClusterToH2c) {
  HttpResponse r = Get("/h2c/hello");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "h2c-upstream\n");
  EXPECT_EQ(r.header("x-proto"), "HTTP/2.0");
  // The next request is a new stream on the same upstream connection.
  r = Get("/h2c/again");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-proto"), "HTTP/2.0");
  EXPECT_EQ(proxy_->Stat("sluice_upstream_connections_opened_total{cluster=\"h2c\"}"), 1)
      << proxy_->Admin("/stats").second;
  EXPECT_GE(proxy_->Stat("sluice_upstream_connections_reused_total{cluster=\"h2c\"}"), 1);
  // An HTTP/2 client gets the same.
  CommandResult curl = RunCommand({"/usr/bin/curl", "-sS", "-i", "--max-time", "20",
                                   "--http2-prior-knowledge",
                                   absl::StrCat("http://", ProxyAddress(), "/h2c/from-h2")});
  ASSERT_EQ(curl.exit_code, 0) << curl.err;
  EXPECT_TRUE(absl::StartsWith(curl.out, "HTTP/2 200")) << curl.out;
  EXPECT_TRUE(absl::StrContains(curl.out, "x-proto: HTTP/2.0")) << curl.out;
  EXPECT_TRUE(absl::StrContains(curl.out, "\r\n\r\nh2c-upstream\n")) << curl.out;
}

TEST_F(UpstreamHttp2Test, BodiesBothWaysOverH2c) {
  // nginx passes /h2c/echo/ on to upstream_server, which reports the size
  // and CRC of the body that reached it.
  std::string body;
  body.reserve(1 << 20);
  for (int i = 0; i < (1 << 20); ++i) body.push_back(static_cast<char>('a' + i * 7 % 26));
  HttpResponse r = HttpRequest(ProxyAddress(), "POST", "/h2c/echo/up", {}, body,
                               absl::Seconds(20));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-proto"), "HTTP/2.0");
  EXPECT_EQ(r.body, absl::StrCat("origin POST /h2c/echo/up\nbody-bytes=1048576 body-crc=",
                                 Crc32Hex(body), "\n"));
  // A chunked request body has no length: it goes as DATA frames to the end
  // of the stream.
  std::string part = body.substr(0, 300000);
  r = HttpRequest(ProxyAddress(), "PUT", "/h2c/echo/chunked", {{"transfer-encoding", "chunked"}},
                  EncodeChunked(part, 9), absl::Seconds(20));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, absl::StrCat("origin PUT /h2c/echo/chunked\nbody-bytes=300000 body-crc=",
                                 Crc32Hex(part), "\n"));
  // 3 MB down: more than the HTTP/2 windows, so the proxy must keep
  // granting the upstream window as the client reads.
  r = HttpRequest(ProxyAddress(), "GET", "/h2c/echo/big?size=3000000", {}, "", absl::Seconds(20));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body.size(), 3000000u);
  EXPECT_EQ(r.body, std::string(3000000, 'x'));
}

TEST_F(UpstreamHttp2Test, AutoSpeaksHttp2WhenTheUpstreamPicksH2) {
  HttpResponse r = Get("/auto-h2/x");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "h2-upstream\n");
  EXPECT_EQ(r.header("x-proto"), "HTTP/2.0");
  EXPECT_EQ(r.header("x-alpn"), "h2");
}

// A WebSocket through an AUTO cluster whose endpoint speaks h2 (nginx, which
// takes WebSocket handshakes over HTTP/1.1 only, as most servers): its
// handshake goes over a connection that offered http/1.1 alone by ALPN, from
// an HTTP/1.1 client and from an RFC 8441 one; other requests still go over
// HTTP/2. Before, the handshake went out as an HTTP/2 GET without its
// Upgrade: the echo server behind nginx answered 426.
TEST_F(UpstreamHttp2Test, AutoTakesAWebSocketOverHttp11ToAnEndpointThatSpeaksH2) {
  auto ws = [](const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"/usr/bin/python3"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, {}, absl::Seconds(60));
  };
  CommandResult r = ws({RunfilePath("tests/harness/ws_tool.py"), "client",
                        absl::StrCat("ws://", ProxyAddress(), "/ws/one")});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StartsWith(r.out, "ok ")) << r.out << r.err;
  r = ws({RunfilePath("tests/harness/ws_h2_client.py"), "--port", absl::StrCat(proxy_port_),
          "--path", "/ws/two", "--mode", "echo"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "enable_connect_protocol=1\nstatus 200\nok\n") << r.err;
  HttpResponse plain = Get("/auto-h2/after-ws");
  ASSERT_TRUE(plain.ok()) << plain.error;
  EXPECT_EQ(plain.header("x-proto"), "HTTP/2.0");
}

TEST_F(UpstreamHttp2Test, AutoFallsBackToHttp11WhenTheUpstreamPicksIt) {
  for (int i = 0; i < 2; ++i) {  // the first finds out, the second knows
    HttpResponse r = Get(absl::StrCat("/auto-h1/", i));
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.body, "h1-upstream\n");
    EXPECT_EQ(r.header("x-proto"), "HTTP/1.1");
    EXPECT_EQ(r.header("x-alpn"), "http/1.1");
  }
}

// The first request to find out that an AUTO endpoint speaks HTTP/1.1, as
// the retry after a connect failure elsewhere: it goes again to that
// endpoint over HTTP/1.1. Before, the picker chose again and sent it back
// to the dead endpoint: a 502 though a live one had answered.
TEST_F(UpstreamHttp2Test, AutoSendsTheRequestAgainToTheEndpointThatChoseHttp11) {
  for (int i = 0; i < 4; ++i) {
    HttpResponse r = Get(absl::StrCat("/auto-h1-after-dead/", i));
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.status, 200) << i << ": " << r.body;
    EXPECT_EQ(r.header("x-proto"), "HTTP/1.1") << i;
  }
}

// An upload larger than max_replay_bytes as the first request to an AUTO
// endpoint that chooses HTTP/1.1: the client is not read past the replay
// buffer until ALPN is known, so the request goes again over HTTP/1.1
// whole. Before, the body was no longer kept and the client got 502.
TEST_F(UpstreamHttp2Test, AutoSendsAFirstLargeUploadAgainOverHttp11Whole) {
  std::string body;
  body.reserve(1 << 20);
  for (int i = 0; i < (1 << 20); ++i) body.push_back(static_cast<char>('a' + i * 11 % 26));
  HttpResponse r = HttpRequest(ProxyAddress(), "POST", "/auto-h1/echo/up", {}, body,
                               absl::Seconds(20));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-proto"), "HTTP/1.1");
  EXPECT_EQ(r.body, absl::StrCat("origin POST /auto-h1/echo/up\nbody-bytes=1048576 body-crc=",
                                 Crc32Hex(body), "\n"));
  // One that chooses h2: the client is read again once it has.
  r = HttpRequest(ProxyAddress(), "POST", "/auto-h2/up", {}, body, absl::Seconds(20));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-proto"), "HTTP/2.0");
}

// An HTTP2 cluster's TLS endpoint that chose no protocol by ALPN and sends
// no SETTINGS (s_server waits for a GET line): the 504 says so. Before: it
// asked whether the upstream takes h2c with prior knowledge, on TLS.
TEST_F(UpstreamHttp2Test, AnHttp2UpstreamWithoutAlpnIsNamedInThe504) {
  HttpResponse r = Get("/h2-no-alpn/x");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "it chose no protocol by ALPN")) << r.body;
  EXPECT_FALSE(absl::StrContains(r.body, "h2c")) << r.body;
}

// An endpoint that answers no ALPN speaks HTTP/1.1 to AUTO (as Envoy takes
// it). Before: h2 was spoken, and the request failed (502 "SETTINGS
// expected", or a 504 from a server that waited).
TEST_F(UpstreamHttp2Test, AutoSpeaksHttp11WhenTheUpstreamAnswersNoAlpn) {
  HttpResponse r = Get("/auto-no-alpn/");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body << no_alpn_->Log();
  EXPECT_TRUE(absl::StrContains(r.body, "s_server")) << r.body;
}

TEST_F(UpstreamHttp2Test, Http2ClusterToAnHttp11OnlyUpstreamIsA502NamingAlpn) {
  absl::Time start = absl::Now();
  HttpResponse r = Get("/h2-only/x");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "ALPN")) << r.body;
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

// An HTTP2 cluster's endpoint that answers the preface with HTTP/1.1 (a
// 400) took no request: a connect failure, retried on another endpoint.
// Before, the requests sent to it failed with 502 ("SETTINGS expected"),
// every other one on a cluster with a working endpoint beside it.
TEST_F(UpstreamHttp2Test, AnEndpointAnsweringInHttp1IsAConnectFailureRetriedElsewhere) {
  HttpResponse alone = Get("/h1-as-h2/x");
  ASSERT_TRUE(alone.ok()) << alone.error;
  EXPECT_EQ(alone.status, 502) << alone.body;
  EXPECT_TRUE(absl::StrContains(alone.body, "does not speak HTTP/2")) << alone.body;
  for (int i = 0; i < 6; ++i) {
    HttpResponse r = Get("/mixed/x");
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.status, 200) << i << ": " << r.body;
    EXPECT_EQ(r.body, "h2c-upstream\n") << i;
  }
}

// An HTTP health check speaks the cluster's protocol: HTTP/2 to an h2c
// endpoint and to one that chose h2 by ALPN, HTTP/1.1 to one that chose it.
// Before: always HTTP/1.1 text, which an h2 endpoint refuses, so the
// endpoint never turned healthy (503 with panic_threshold_percent: 0).
TEST_F(UpstreamHttp2Test, HttpHealthChecksSpeakTheClustersProtocol) {
  for (const char* name :
       {"checked-h2c", "checked-auto-h2", "checked-auto-h1", "checked-big-head"}) {
    HttpResponse r;
    EXPECT_TRUE(WaitFor(
        [&] {
          r = Get(absl::StrCat("/", name, "/x"));
          return r.status == 200;
        },
        absl::Seconds(10)))
        << name << ": " << r.status << " " << r.body << proxy_->Admin("/clusters").second;
  }
  EXPECT_EQ(Get("/checked-auto-h2/y").header("x-proto"), "HTTP/2.0");
  EXPECT_EQ(Get("/checked-auto-h1/y").header("x-proto"), "HTTP/1.1");
}

// A check of an HTTP2 cluster's endpoint that answers in HTTP/1 is named
// as requests name it. Before: "stream reset (HTTP/2 error 1): connection
// error: sent GOAWAY PROTOCOL_ERROR: SETTINGS expected".
TEST_F(UpstreamHttp2Test, ChecksNameAnEndpointThatDoesNotSpeakHttp2) {
  const std::string grpc_check =
      "  health_check: {grpc: {}, interval: 300ms, timeout: 300ms}\n";
  const std::string http_check =
      "  health_check: {http: {path: /}, interval: 300ms, timeout: 300ms}\n";
  const std::string yaml =
      absl::StrCat(ClusterYaml("h1-grpc-checked", origin_.port(), "HTTP2", ""), grpc_check,
                   "---\n", ClusterYaml("h1-http-checked", origin_.port(), "HTTP2", ""),
                   http_check);
  auto r = cp_.Ctl({"apply", "-f", WriteFile(dir_, "h1-checked.yaml", yaml)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::string page;
  EXPECT_TRUE(WaitFor(
      [&] {
        page = proxy_->Admin("/clusters").second;
        size_t first = page.find("the endpoint does not speak HTTP/2");
        return first != std::string::npos &&
               page.find("the endpoint does not speak HTTP/2", first + 1) != std::string::npos;
      },
      absl::Seconds(10)))
      << page;
  EXPECT_FALSE(absl::StrContains(page, "SETTINGS expected")) << page;
}

TEST_F(UpstreamHttp2Test, AutoWithoutTlsIsRejected) {
  auto r = cp_.Ctl({"apply", "-f",
                    WriteFile(dir_, "auto-plain.yaml", ClusterYaml("auto-plain", 9, "AUTO", ""))});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err + r.out, "Cluster \"auto-plain\": protocol: ")) << r.err
                                                                                      << r.out;
  EXPECT_TRUE(absl::StrContains(r.err + r.out, "needs tls")) << r.err << r.out;
  EXPECT_TRUE(absl::StrContains(r.err + r.out, "auto-plain.yaml, document 1, line 4")) << r.err
                                                                                       << r.out;
  // Nothing changed: version 1 still serves.
  EXPECT_EQ(proxy_->ReadyVersion(), 1u);
  EXPECT_EQ(Get("/h2c/still").status, 200);
}

// nginx sends GOAWAY after 3 streams on a connection (keepalive_requests):
// the pool stops opening streams there, opens another connection, and sends
// again what the upstream did not process; clients see no failure. Twice
// the same budget, and the pool opens no more than 3 streams on a
// connection: 24 clients at once (8 times the budget) had a stream refused
// on every new connection in turn, and after three sends got a 502.
TEST_F(UpstreamHttp2Test, UpstreamGoawayIsInvisibleToClients) {
  for (int i = 0; i < 12; ++i) {
    HttpResponse r = HttpGet(ProxyAddress(), absl::StrCat("/goaway/seq-", i));
    ASSERT_EQ(r.status, 200) << i << ": " << r.body;
    EXPECT_EQ(r.body, "goaway-upstream\n");
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 24; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        HttpResponse r = HttpGet(ProxyAddress(), absl::StrCat("/goaway/par-", t, "-", i));
        if (r.status != 200) failures.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  // 252 requests, at most 3 per connection.
  EXPECT_GE(proxy_->Stat("sluice_upstream_connections_opened_total{cluster=\"goaway\"}"), 84)
      << proxy_->Admin("/stats").second;
  EXPECT_EQ(proxy_->Stat("sluice_upstream_resets_total{cluster=\"goaway\"}"), 0);
  EXPECT_EQ(proxy_->Stat("sluice_upstream_connect_failures_total{cluster=\"goaway\"}"), 0);
}

// h2_reset_peer.py: an h2c upstream that resets every stream with `code`.
class ResetPeer {
 public:
  explicit ResetPeer(int code, bool after_response = false)
      : ResetPeer(after_response ? std::vector<std::string>{absl::StrCat(code), "after-response"}
                                 : std::vector<std::string>{absl::StrCat(code)}) {}
  // h2_reset_peer.py with these arguments (e.g. {"head", "103"}).
  explicit ResetPeer(std::vector<std::string> peer_args) {
    std::vector<std::string> args = {RunfilePath("tests/harness/h2_reset_peer.py")};
    args.insert(args.end(), peer_args.begin(), peer_args.end());
    process_ = std::make_unique<Process>(
        "/usr/bin/python3", args,
        absl::StrCat(MakeTempDir("h2-reset"), "/peer.log"));
    auto line = process_->WaitForLogLine("listening on ", absl::Seconds(20));
    if (line) (void)absl::SimpleAtoi(line->substr(line->find("on ") + 3), &port_);
  }
  int port() const { return port_; }
  // HEADERS frames received so far: the sends of requests.
  int headers() const {
    const std::string log = process_->Log();
    int n = 0;
    for (size_t at = log.find("headers "); at != std::string::npos;
         at = log.find("headers ", at + 1)) {
      ++n;
    }
    return n;
  }

 private:
  std::unique_ptr<Process> process_;
  int port_ = 0;
};

// Before: a stream the upstream reset, or refused more than 3 times, was
// taken for a stale pooled connection and sent again without end (tens of
// thousands of sends a second on one connection) until the route timeout,
// or for ever with `timeout: 0s`. Now: a reset stream (the upstream may have
// acted on it) is a 502 after one send; REFUSED_STREAM (not processed) is
// sent again at most 3 times, and only while the whole request is at hand.
// An upstream that allows 5 streams (nginx refuses more with
// REFUSED_STREAM): a new connection to it opened while the first is full
// sends no more than the 5 the endpoint announced before, not a burst of
// every waiting request (it sent up to 100 until its SETTINGS came; the
// refused ones went again on yet another new connection, and after three
// sends the client got a 502).
TEST_F(UpstreamHttp2Test, ANewConnectionKeepsToTheStreamLimitTheEndpointAnnounced) {
  ASSERT_EQ(Get("/limited/learn").status, 200);  // the first SETTINGS: 5
  constexpr int kClients = 30;
  std::vector<int> statuses(kClients, 0);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      statuses[i] = HttpGet(ProxyAddress(), absl::StrCat("/limited/slow?delay_ms=500&i=", i),
                            {}, absl::Seconds(20))
                        .status;
    });
  }
  for (auto& t : clients) t.join();
  for (int i = 0; i < kClients; ++i) EXPECT_EQ(statuses[i], 200) << i;
  // Each sent once: none refused and sent again (before: 76 sends for 31
  // requests; one client in six got a 502 when one was refused 4 times).
  EXPECT_EQ(proxy_->Stat("sluice_upstream_requests_total{cluster=\"limited\"}"), kClients + 1)
      << proxy_->Admin("/stats").second;
  EXPECT_EQ(proxy_->Stat("sluice_upstream_resets_total{cluster=\"limited\"}"), 0);
  EXPECT_GE(proxy_->Stat("sluice_upstream_connections_opened_total{cluster=\"limited\"}"), 6);
}

TEST(UpstreamHttp2ResetTest, ResetStreamsAre502sAndRefusedOnesAreSentAgainAtMost3Times) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ResetPeer internal(2);  // INTERNAL_ERROR
  ResetPeer refused(7);   // REFUSED_STREAM
  ASSERT_GT(internal.port(), 0);
  ASSERT_GT(refused.port(), 0);
  const int port = PickFreePort();
  const std::string yaml = absl::StrCat(
      ClusterYaml("internal", internal.port(), "HTTP2", ""), "---\n",
      ClusterYaml("refused", refused.port(), "HTTP2", ""), "---\n",
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n"
      "        - match: {prefix: /internal/}\n          route: {cluster: internal, timeout: 0s}\n"
      "        - match: {prefix: /refused/}\n          route: {cluster: refused, timeout: 0s}\n",
      "---\nkind: Listener\nname: http\nspec: {address: 127.0.0.1, port: ", port,
      ", route_table: main}\n");
  auto r = cp.Ctl({"apply", "-f", WriteFile(MakeTempDir("h2-reset-config"), "config.yaml", yaml)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Proxy proxy(cp.address(), "h2-reset-proxy");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  const std::string address = absl::StrCat("127.0.0.1:", port);

  // A stream reset after its head and part of its body went out: an
  // HTTP/1.1 client gets what came, then the cut (before: an empty reply,
  // which clients take for a request never processed and send again).
  ResetPeer cut(2, /*after_response=*/true);
  ASSERT_GT(cut.port(), 0);
  const std::string cut_yaml = absl::StrCat(
      ClusterYaml("cut", cut.port(), "HTTP2", ""), "---\n",
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n"
      "        - match: {prefix: /internal/}\n          route: {cluster: internal, timeout: 0s}\n"
      "        - match: {prefix: /refused/}\n          route: {cluster: refused, timeout: 0s}\n"
      "        - match: {prefix: /cut/}\n          route: {cluster: cut, timeout: 0s}\n");
  r = cp.Ctl({"apply", "-f", WriteFile(MakeTempDir("h2-cut-config"), "config.yaml", cut_yaml)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy.WaitForVersion(2)) << proxy.process().Log();
  for (int i = 0; i < 5; ++i) {
    HttpResponse partial = HttpGet(address, "/cut/x");
    EXPECT_EQ(partial.status, 200) << partial.error;
    EXPECT_EQ(partial.body.size(), 1000u) << partial.error;
    EXPECT_FALSE(partial.ok());
  }

  HttpResponse reset = HttpGet(address, "/internal/x");
  EXPECT_EQ(reset.status, 502) << reset.error << reset.body;
  EXPECT_TRUE(absl::StrContains(reset.body, "reset the HTTP/2 stream")) << reset.body;
  EXPECT_EQ(internal.headers(), 1);

  HttpResponse get = HttpGet(address, "/refused/x");
  EXPECT_EQ(get.status, 502) << get.error << get.body;
  EXPECT_EQ(refused.headers(), 4);  // the first send and 3 more
  // A refused stream was not processed: a POST too is sent again, its body
  // kept (up to 64 KiB without a retry policy) until the response begins.
  HttpResponse post = HttpRequest(address, "POST", "/refused/y", {}, "some body", absl::Seconds(10));
  EXPECT_EQ(post.status, 502) << post.error << post.body;
  EXPECT_EQ(refused.headers(), 8);
  EXPECT_EQ(proxy.Stat("sluice_retries_total{cluster=\"refused\"}"), 0);

  // A gRPC-Web response cut midway is cut for the client too: gRPC-Web
  // reads its status from a frame in the body, which the gateway does not
  // write, so an HTTP/1.1 client gets no last chunk (before: a clean end
  // with the status in HTTP trailers, which gRPC-Web clients never read: a
  // failed call looked whole and successful).
  ResetPeer web_cut({"2", "after-grpc-web-response"});
  ASSERT_GT(web_cut.port(), 0);
  r = cp.Ctl({"apply", "-f",
              WriteFile(MakeTempDir("h2-web-cut-config"), "config.yaml",
                        absl::StrCat(ClusterYaml("webcut", web_cut.port(), "HTTP2", ""), "---\n",
                                     absl::StrReplaceAll(cut_yaml, {{"        - match: {prefix: /cut/}",
                                                                     "        - match: {prefix: /webcut/}\n"
                                                                     "          route: {cluster: webcut, timeout: 0s}\n"
                                                                     "        - match: {prefix: /cut/}"}})))});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy.WaitForVersion(3)) << proxy.process().Log();
  for (const char* type : {"application/grpc-web+proto", "application/grpc-web-text"}) {
    HttpResponse web = HttpRequest(address, "POST", "/webcut/g", {{"content-type", type}},
                                   std::string("\0\0\0\0\0", 5), absl::Seconds(10));
    EXPECT_EQ(web.status, 200) << type << ": " << web.error << web.body;
    EXPECT_FALSE(web.ok()) << type << ": " << web.body;
    EXPECT_EQ(web.header("grpc-status"), "") << type;
    EXPECT_TRUE(absl::StrContains(web.body, "hello")) << type << ": " << web.body;
  }

  // A gRPC request's reset is the status gRPC gives its code (PROTOCOL-HTTP2
  // "Errors"): INTERNAL_ERROR is INTERNAL, CANCEL is CANCELLED; only a
  // REFUSED_STREAM is UNAVAILABLE, which clients retry. Before: 14 for all.
  ResetPeer cancel(8);
  ASSERT_GT(cancel.port(), 0);
  r = cp.Ctl({"apply", "-f",
              WriteFile(MakeTempDir("h2-cancel-config"), "config.yaml",
                        absl::StrCat(ClusterYaml("cancel", cancel.port(), "HTTP2", ""), "---\n",
                                     absl::StrReplaceAll(cut_yaml, {{"        - match: {prefix: /cut/}",
                                                                     "        - match: {prefix: /cancel/}\n"
                                                                     "          route: {cluster: cancel, timeout: 0s}\n"
                                                                     "        - match: {prefix: /cut/}"}})))});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy.WaitForVersion(4)) << proxy.process().Log();
  const Headers grpc = {{"content-type", "application/grpc"}, {"te", "trailers"}};
  for (const auto& [path, status] : {std::pair<std::string, std::string>{"/internal/g", "13"},
                                     {"/cancel/g", "1"},
                                     {"/refused/g", "14"}}) {
    HttpResponse g = HttpRequest(address, "POST", path, grpc, "", absl::Seconds(10));
    EXPECT_EQ(g.status, 200) << path << ": " << g.error << g.body;
    EXPECT_EQ(g.header("grpc-status"), status) << path;
    EXPECT_TRUE(absl::StrContains(g.header("grpc-message"), "reset the HTTP/2 stream")) << path;
  }
}

// An upstream killed while it had requests in flight closes the connection
// with no GOAWAY: an idempotent request is sent again once, on a new
// connection, as one on a pooled HTTP/1 connection found closed; a POST is a
// 502 (the upstream may have acted on it). Before: a 502 for every method,
// where the same drill on an HTTP/1 cluster cost clients nothing.
TEST(UpstreamHttp2ResetTest, AConnectionLostUnderARequestSendsAnIdempotentOneAgainOnce) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ResetPeer closing({"close"});
  ResetPeer answering({"head", "200"});
  ASSERT_GT(closing.port(), 0);
  ASSERT_GT(answering.port(), 0);
  const int port = PickFreePort();
  const std::string yaml = absl::StrCat(
      ClusterYaml("lost", closing.port(), "HTTP2", ""), "---\n",
      "kind: Cluster\nname: mixed\nspec:\n  protocol: HTTP2\n  endpoints: [{address: 127.0.0.1, "
      "port: ", closing.port(), "}, {address: 127.0.0.1, port: ", answering.port(), "}]\n---\n",
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n"
      "        - match: {prefix: /lost/}\n          route: {cluster: lost, timeout: 0s}\n"
      "        - match: {prefix: /mixed/}\n          route: {cluster: mixed, timeout: 0s}\n",
      "---\nkind: Listener\nname: http\nspec: {address: 127.0.0.1, port: ", port,
      ", route_table: main}\n");
  auto r = cp.Ctl({"apply", "-f", WriteFile(MakeTempDir("h2-lost-config"), "config.yaml", yaml)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Proxy proxy(cp.address(), "h2-lost-proxy");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  const std::string address = absl::StrCat("127.0.0.1:", port);

  // One endpoint that closes under every request: sent twice, then a 502
  // naming the close (a reset when our SETTINGS ACK was still unread).
  HttpResponse get = HttpGet(address, "/lost/x");
  EXPECT_EQ(get.status, 502) << get.error << get.body;
  EXPECT_TRUE(absl::StrContains(get.body, "upstream closed the connection") ||
              absl::StrContains(get.body, "upstream connection reset: "))
      << get.body;
  EXPECT_EQ(closing.headers(), 2);
  HttpResponse put = HttpRequest(address, "PUT", "/lost/y", {}, "idempotent", absl::Seconds(10));
  EXPECT_EQ(put.status, 502) << put.error << put.body;
  EXPECT_EQ(closing.headers(), 4);
  HttpResponse post = HttpRequest(address, "POST", "/lost/z", {}, "some body", absl::Seconds(10));
  EXPECT_EQ(post.status, 502) << post.error << post.body;
  EXPECT_EQ(closing.headers(), 5);
  EXPECT_EQ(proxy.Stat("sluice_retries_total{cluster=\"lost\"}"), 0);

  // Beside a live endpoint: the request sent again goes on a new
  // connection, wherever the balancer picks, and the client sees its 200.
  const int before = closing.headers();
  for (int i = 0; i < 6; ++i) {
    HttpResponse ok = HttpGet(address, absl::StrCat("/mixed/", i));
    EXPECT_EQ(ok.status, 200) << i << ": " << ok.error << ok.body;
  }
  EXPECT_GT(closing.headers(), before);  // some went to the closing one first
}

// Answers that end a stream in one HEADERS frame. A 1xx that ends the
// stream is malformed (RFC 9113 8.1): a 502 (gRPC: INTERNAL) at once, not a
// stream left open until the route timeout. A trailers-only gRPC answer
// with a code gRPC does not define, or none, is counted as what a gRPC
// client reads: UNKNOWN, or the HTTP status's mapping (before: in no
// grpc_status series, so error ratios missed it).
// An HTTP2 cluster's endpoint that accepts and never sends its SETTINGS
// (no HTTP/2 server: an HTTP/1 one waits for a request line the preface
// never finishes) fails at the connect timeout as a connect failure, saying
// so; it failed only at the route timeout, with no reason, and the
// connection lived on for a PING's timeout more.
TEST(UpstreamHttp2ResetTest, AnEndpointThatSendsNoSettingsFailsAtTheConnectTimeout) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  int silent_port = 0;
  const int silent = SilentListener(&silent_port);
  ASSERT_GE(silent, 0);
  const int port = PickFreePort();
  const std::string yaml = absl::StrCat(
      ClusterYaml("silent", silent_port, "HTTP2", ""), "  connect_timeout: 300ms\n---\n",
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n        - {match: {prefix: /}, route: {cluster: silent, timeout: 10s}}\n"
      "---\nkind: Listener\nname: http\nspec: {address: 127.0.0.1, port: ", port,
      ", route_table: main}\n");
  auto r = cp.Ctl({"apply", "-f", WriteFile(MakeTempDir("h2-silent"), "config.yaml", yaml)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Proxy proxy(cp.address(), "h2-silent-proxy");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  const absl::Time start = absl::Now();
  HttpResponse answer = HttpGet(absl::StrCat("127.0.0.1:", port), "/x", {}, absl::Seconds(15));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(answer.status, 504) << answer.error << answer.body;
  EXPECT_TRUE(absl::StrContains(answer.body, "the upstream sent no HTTP/2 SETTINGS")) << answer.body;
  // A connect failure, so retried on the other endpoint whatever the body's
  // size: one past max_replay_bytes is kept until the SETTINGS come. Before:
  // dropped once TCP was up, and the request got that 504 (the other
  // endpoint: a listener of the same proxy, whose direct response says so).
  const int settled_port = PickFreePort();
  const std::string retried = absl::StrCat(
      "kind: Cluster\nname: both\nspec:\n  protocol: HTTP2\n  connect_timeout: 300ms\n"
      "  endpoints: [{address: 127.0.0.1, port: ", silent_port, "}, {address: 127.0.0.1, port: ",
      settled_port, "}]\n---\n",
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n        - {match: {prefix: /both/}, route: {cluster: both, timeout: 10s, "
      "retry_policy: {num_retries: 1, retry_on: [connect-failure], retry_non_idempotent: true, "
      "max_replay_bytes: 1000}}}\n"
      "        - {match: {prefix: /}, route: {cluster: silent, timeout: 10s}}\n---\n"
      "kind: RouteTable\nname: settled\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n        - {match: {prefix: /}, direct_response: {status: 200, body: "
      "settled}}\n---\n"
      "kind: Listener\nname: settled\nspec: {address: 127.0.0.1, port: ", settled_port,
      ", route_table: settled}\n");
  r = cp.Ctl({"apply", "-f", WriteFile(MakeTempDir("h2-silent"), "more.yaml", retried)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy.WaitForVersion(2)) << proxy.process().Log();
  for (int i = 0; i < 4; ++i) {
    HttpResponse posted = HttpRequest(absl::StrCat("127.0.0.1:", port), "POST", "/both/x", {},
                                      std::string(5000, 'p'), absl::Seconds(15));
    EXPECT_EQ(posted.status, 200) << i << ": " << posted.error << posted.body;
    EXPECT_EQ(posted.body, "settled") << i;
  }
  close(silent);
}

TEST(UpstreamHttp2ResetTest, AnswersThatEndTheStreamInTheirHead) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ResetPeer early({"head", "199"});
  ResetPeer code17({"head", "200", "content-type=application/grpc", "grpc-status=17"});
  ResetPeer no_code({"head", "200", "content-type=application/grpc"});
  ResetPeer no_code_503({"head", "503", "content-type=application/grpc"});
  ResetPeer no_code_504({"head", "504", "content-type=application/grpc"});
  ResetPeer web({"head", "200", "content-type=application/grpc-web+proto"});
  for (const ResetPeer* peer : {&early, &code17, &no_code, &no_code_503, &no_code_504, &web}) {
    ASSERT_GT(peer->port(), 0);
  }
  const int port = PickFreePort();
  const std::string yaml = absl::StrCat(
      ClusterYaml("early", early.port(), "HTTP2", ""), "---\n",
      ClusterYaml("code17", code17.port(), "HTTP2", ""), "---\n",
      ClusterYaml("nocode", no_code.port(), "HTTP2", ""), "---\n",
      ClusterYaml("nocode503", no_code_503.port(), "HTTP2", ""), "---\n",
      ClusterYaml("nocode504", no_code_504.port(), "HTTP2", ""), "---\n",
      ClusterYaml("web", web.port(), "HTTP2", ""), "---\n",
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n"
      "        - {name: early, match: {prefix: /early/}, route: {cluster: early, timeout: 0s}}\n"
      "        - {name: code17, match: {prefix: /code17/}, route: {cluster: code17}}\n"
      "        - {name: nocode, match: {prefix: /nocode/}, route: {cluster: nocode}}\n"
      "        - {name: nocode503, match: {prefix: /nocode503/}, route: {cluster: nocode503}}\n"
      "        - {name: nocode504, match: {prefix: /nocode504/}, route: {cluster: nocode504}}\n"
      "        - {name: web, match: {prefix: /web/}, route: {cluster: web}}\n"
      "---\nkind: Listener\nname: http\nspec: {address: 127.0.0.1, port: ", port,
      ", route_table: main}\n");
  auto r = cp.Ctl({"apply", "-f", WriteFile(MakeTempDir("h2-head-config"), "config.yaml", yaml)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Proxy proxy(cp.address(), "h2-head-proxy");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  const std::string address = absl::StrCat("127.0.0.1:", port);

  HttpResponse early_end = HttpGet(address, "/early/x", {}, absl::Seconds(5));
  EXPECT_EQ(early_end.status, 502) << early_end.error << early_end.body;
  EXPECT_TRUE(absl::StrContains(early_end.body, "malformed response")) << early_end.body;
  HttpResponse early_grpc = HttpRequest(address, "POST", "/early/g",
                                        {{"content-type", "application/grpc"}, {"te", "trailers"}},
                                        "", absl::Seconds(5));
  EXPECT_EQ(early_grpc.status, 200) << early_grpc.error;
  EXPECT_EQ(early_grpc.header("grpc-status"), "13");  // INTERNAL

  const Headers grpc = {{"content-type", "application/grpc"}, {"te", "trailers"}};
  auto grpc_count = [&](const std::string& route, int code) {
    return proxy.Stat(absl::StrCat("sluice_route_grpc_responses_total{route_table=\"main\",route=\"",
                                   route, "\",virtual_host=\"0\",grpc_status=\"", code, "\"}"));
  };
  for (const auto& [route, client_reads] : {std::pair<std::string, int>{"code17", 2},
                                            {"nocode", 2},
                                            {"nocode503", 14},
                                            // An upstream's 504 is UNAVAILABLE to a
                                            // client, not DEADLINE_EXCEEDED.
                                            {"nocode504", 14}}) {
    HttpResponse g = HttpRequest(address, "POST", absl::StrCat("/", route, "/g"), grpc, "",
                                 absl::Seconds(10));
    EXPECT_NE(g.status, 0) << route << ": " << g.error;
    EXPECT_TRUE(WaitFor([&] { return grpc_count(route, client_reads) == 1; }, absl::Seconds(5)))
        << route << "\n" << proxy.Admin("/metrics").second;
  }
  // A trailers-only answer goes to an HTTP/2 client as it came, without the
  // content-length: 0 an HTTP/1 client needs (grpcio handed it to the
  // application as trailing metadata).
  HttpResponse h1 = HttpRequest(address, "POST", "/code17/g", grpc, "", absl::Seconds(10));
  EXPECT_EQ(h1.header("content-length"), "0") << h1.error;
  CommandResult h2 = RunCommand({"/usr/bin/curl", "-sS", "-i", "--max-time", "10",
                                 "--http2-prior-knowledge", "-X", "POST", "-H",
                                 "content-type: application/grpc", "-H", "te: trailers",
                                 absl::StrCat("http://", address, "/code17/g")});
  EXPECT_TRUE(absl::StartsWith(h2.out, "HTTP/2 200")) << h2.out << h2.err;
  EXPECT_TRUE(absl::StrContains(h2.out, "grpc-status: 17")) << h2.out;
  EXPECT_FALSE(absl::StrContains(h2.out, "content-length")) << h2.out;
  // gRPC-Web carries its status in the body: a head without one is not
  // counted as UNKNOWN (every successful call was).
  HttpResponse w = HttpRequest(address, "POST", "/web/g",
                               {{"content-type", "application/grpc-web+proto"}}, "",
                               absl::Seconds(10));
  EXPECT_EQ(w.status, 200) << w.error;
  EXPECT_TRUE(WaitFor(
      [&] {
        return proxy.Stat("sluice_route_requests_total{route_table=\"main\",route=\"web\","
                          "virtual_host=\"0\",status_class=\"2xx\"}") == 1;
      },
      absl::Seconds(5)));
  EXPECT_LT(grpc_count("web", 2), 1);  // -1: no series at all
}

// Responses from an HTTP/2 upstream that break RFC 9113 8.2 and 8.1.1: a
// head with a field HTTP/2 forbids (an uppercase name, a connection-specific
// field, a NUL in a value) or a status that is not one (101, "abc") never
// reaches the client: 502. A body that does not match its content-length is
// cut (the head went out first: an HTTP/1.1 client sees an incomplete body,
// never a complete wrong one): a shorter one after what came, a longer one
// before the frame that overflows it. A body on a 204 is dropped; the
// client gets the 204 alone.
TEST(UpstreamHttp2ResetTest, ResponsesThatBreakHttp2sRulesAre502sOrCut) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  std::vector<std::pair<std::string, std::unique_ptr<ResetPeer>>> peers;
  auto add = [&](const std::string& name, std::vector<std::string> args) {
    peers.emplace_back(name, std::make_unique<ResetPeer>(std::move(args)));
  };
  add("upper", {"respond", "200", "hi", "X-Upper=1"});
  add("connection", {"respond", "200", "hi", "connection=close"});
  add("nul", {"respond", "200", "hi", "x-a=a\\x00b"});
  add("s101", {"head", "101"});
  add("abc", {"head", "abc"});
  add("short", {"respond", "200", "hello", "content-length=10"});
  add("long", {"respond", "200", "hello", "content-length=2"});
  add("nocontent", {"respond", "204", "hi"});
  add("fine", {"respond", "200", "hello", "content-length=5"});
  std::string yaml;
  std::string routes;
  for (const auto& [name, peer] : peers) {
    ASSERT_GT(peer->port(), 0) << name;
    absl::StrAppend(&yaml, ClusterYaml(name, peer->port(), "HTTP2", ""), "---\n");
    absl::StrAppend(&routes, "        - {match: {prefix: /", name, "/}, route: {cluster: ", name,
                    "}}\n");
  }
  const int port = PickFreePort();
  absl::StrAppend(&yaml,
                  "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
                  "    - domains: ['*']\n      routes:\n",
                  routes, "---\nkind: Listener\nname: http\nspec: {address: 127.0.0.1, port: ",
                  port, ", route_table: main}\n");
  auto r = cp.Ctl({"apply", "-f", WriteFile(MakeTempDir("h2-bad-config"), "config.yaml", yaml)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Proxy proxy(cp.address(), "h2-bad-proxy");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  const std::string address = absl::StrCat("127.0.0.1:", port);

  HttpResponse fine = HttpGet(address, "/fine/x", {}, absl::Seconds(10));
  EXPECT_EQ(fine.status, 200) << fine.error;
  EXPECT_EQ(fine.body, "hello");
  EXPECT_TRUE(fine.ok()) << fine.error;
  for (const char* name : {"upper", "connection", "nul", "s101", "abc"}) {
    HttpResponse bad = HttpGet(address, absl::StrCat("/", name, "/x"), {}, absl::Seconds(10));
    EXPECT_EQ(bad.status, 502) << name << ": " << bad.error << bad.body;
    EXPECT_TRUE(absl::StrContains(bad.body, "upstream")) << name << ": " << bad.body;
    EXPECT_EQ(bad.header("x-upper"), "") << name;
  }
  // content-length: 10, 5 bytes: the 5 bytes, then the cut.
  HttpResponse short_body = HttpGet(address, "/short/x", {}, absl::Seconds(10));
  EXPECT_EQ(short_body.status, 200) << short_body.error;
  EXPECT_EQ(short_body.body, "hello");
  EXPECT_FALSE(short_body.ok()) << "a complete response";
  // content-length: 2, 5 bytes: the DATA frame is refused whole, nothing of
  // it is passed on (no "he" that would make a complete wrong response).
  HttpResponse long_body = HttpGet(address, "/long/x", {}, absl::Seconds(10));
  EXPECT_EQ(long_body.status, 200) << long_body.error;
  EXPECT_EQ(long_body.body, "");
  EXPECT_FALSE(long_body.ok()) << "a complete response";
  HttpResponse no_content = HttpGet(address, "/nocontent/x", {}, absl::Seconds(10));
  EXPECT_EQ(no_content.status, 204) << no_content.error;
  EXPECT_EQ(no_content.body, "");
  // Each of them was sent once and the proxy still serves.
  HttpResponse again = HttpGet(address, "/fine/again", {}, absl::Seconds(10));
  EXPECT_EQ(again.status, 200) << again.error;
  for (const auto& [name, peer] : peers) {
    EXPECT_EQ(peer->headers(), name == "fine" ? 2 : 1) << name;
  }
}

// An HTTP2 cluster of one tests/harness/h2_stall_peer.py, routed with a
// timeout, behind a one-worker proxy.
class UpstreamHttp2StallTest : public ::testing::Test {
 protected:
  // `timeout`: the route's, with more of its fields after it when wanted;
  // `cluster_more`: more lines of the cluster's spec; `routes_before`: routes
  // ahead of the catch-all one.
  void Start(const std::vector<std::string>& peer_args, const std::string& timeout,
             const std::string& cluster_more = "", const std::string& routes_before = "") {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    std::vector<std::string> args = {RunfilePath("tests/harness/h2_stall_peer.py")};
    args.insert(args.end(), peer_args.begin(), peer_args.end());
    peer_ = std::make_unique<Process>("/usr/bin/python3", args,
                                      absl::StrCat(MakeTempDir("h2-stall"), "/peer.log"));
    auto line = peer_->WaitForLogLine("listening on ", absl::Seconds(20));
    ASSERT_TRUE(line.has_value()) << peer_->Log();
    int peer_port = 0;
    ASSERT_TRUE(absl::SimpleAtoi(line->substr(line->find("on ") + 3), &peer_port)) << *line;
    const int port = PickFreePort();
    const std::string yaml = absl::StrCat(
        ClusterYaml("stalls", peer_port, "HTTP2", ""), cluster_more, "---\n",
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
        "      routes:\n", routes_before,
        "        - match: {prefix: /}\n          route: {cluster: stalls, timeout: ", timeout,
        "}\n---\nkind: Listener\nname: http\nspec: {address: 127.0.0.1, port: ", port,
        ", route_table: main}\n");
    auto r = cp_.Ctl({"apply", "-f", WriteFile(MakeTempDir("h2-stall-config"), "config.yaml", yaml)});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "h2-stall-proxy");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
    address_ = absl::StrCat("127.0.0.1:", port);
  }
  std::string PeerLog() const { return peer_->Log(); }

  ControlPlane cp_{"", "info"};
  std::unique_ptr<Process> peer_;
  std::unique_ptr<Proxy> proxy_;
  std::string address_;
};

// An upstream that hung (it holds the connection and answers nothing, not
// even a PING): the request that times out on its connection makes it
// suspect, so the next request goes on a new connection (before: every
// request went on the hung connection, and got 504, for as long as one
// came at least every 40 s). The hung connection is closed (drained as the
// pool's second idle one, or at its PING's 10 s deadline).
TEST_F(UpstreamHttp2StallTest, AConnectionWhoseRequestTimedOutUnansweredTakesNoNewOnes) {
  ASSERT_NO_FATAL_FAILURE(Start({"1"}, "1s"));
  HttpResponse first = HttpGet(address_, "/a");
  EXPECT_EQ(first.status, 200) << first.error << first.body;
  HttpResponse hung = HttpGet(address_, "/b");  // connection 1's second: no answer
  EXPECT_EQ(hung.status, 504) << hung.error << hung.body;
  HttpResponse next = HttpGet(address_, "/c");
  EXPECT_EQ(next.status, 200) << next.error << next.body << "\n" << PeerLog();
  EXPECT_TRUE(absl::StrContains(PeerLog(), "headers 2 1\n")) << PeerLog();
  EXPECT_TRUE(absl::StrContains(PeerLog(), "ping 1\n")) << PeerLog();
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(PeerLog(), "closed 1\n"); },
                      absl::Seconds(20)))
      << PeerLog();
  EXPECT_FALSE(absl::StrContains(PeerLog(), "closed 2\n")) << PeerLog();
}

// A try timeout shorter than the 250 ms a client must have waited counts:
// the gateway gave the stream up, not a client that left at once. The try
// sent again goes on a new connection and is answered (before: every try
// went on the hung connection, and the request got 504).
TEST_F(UpstreamHttp2StallTest, AShortTryTimeoutMakesTheConnectionSuspect) {
  ASSERT_NO_FATAL_FAILURE(Start(
      {"1"}, "2s, retry_policy: {num_retries: 1, retry_on: [reset], per_try_timeout: 150ms}"));
  HttpResponse first = HttpGet(address_, "/a");
  EXPECT_EQ(first.status, 200) << first.error << first.body;
  HttpResponse retried = HttpGet(address_, "/b");  // connection 1 hangs; the retry does not
  EXPECT_EQ(retried.status, 200) << retried.error << retried.body << "\n" << PeerLog();
  EXPECT_TRUE(absl::StrContains(PeerLog(), "connection 2\n")) << PeerLog();
  EXPECT_TRUE(absl::StrContains(PeerLog(), "headers 2 1\n")) << PeerLog();
}

// A slow upstream that is alive (it acknowledges PINGs, answers nothing in
// time). Its unanswered requests make a connection suspect; the PING's ACK
// clears it. Another unanswered request within 5 minutes of that ACK sends
// no second PING (gRPC servers count each PING within 5 minutes of the last
// as a strike, and a few close the connection with its streams): the
// connection drains and new requests take a new one. So no connection is
// pinged twice (before the cooldown: one PING per timeout), and none keeps
// taking requests after its ACK (the cooldown without draining sent every
// request to a peer that might have hung since).
TEST_F(UpstreamHttp2StallTest, ASlowButLiveUpstreamIsPingedOnceAConnection) {
  ASSERT_NO_FATAL_FAILURE(Start({"0", "hold"}, "500ms"));
  for (int i = 0; i < 8; ++i) {
    HttpResponse timed_out = HttpGet(address_, absl::StrCat("/", i));
    EXPECT_EQ(timed_out.status, 504) << timed_out.error << timed_out.body;
  }
  const std::string log = PeerLog();
  std::map<std::string, int> pings;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StartsWith(line, "ping ")) ++pings[std::string(line.substr(5))];
  }
  EXPECT_FALSE(pings.empty()) << log;
  for (const auto& [connection, n] : pings) EXPECT_EQ(n, 1) << connection << "\n" << log;
  // Streams 1, 3, 5: the first (answered by SETTINGS), the suspect one,
  // the one that drains it; never a fourth.
  for (int c = 1; c <= 8; ++c) {
    EXPECT_FALSE(absl::StrContains(log, absl::StrCat("headers ", c, " 7\n"))) << log;
  }
  // A drained connection is closed after its GOAWAY went out, not with it
  // still queued (RFC 9113 6.8).
  bool drained = false;
  for (int c = 1; c <= 8; ++c) {
    if (!absl::StrContains(log, absl::StrCat("closed ", c, "\n"))) continue;
    drained = true;
    EXPECT_TRUE(absl::StrContains(log, absl::StrCat("goaway ", c, "\n"))) << c << "\n" << log;
  }
  EXPECT_TRUE(drained) << log;
}

// At the cluster's max_connections a suspect connection in its cooldown is
// not drained: a long stream (a watch) would keep the drained connection
// open, no other could be made, and every new request got 503 for as long
// as the stream lasted. It goes on serving instead (here the peer holds
// every request, so the next one times out as those before it).
TEST_F(UpstreamHttp2StallTest, AtTheConnectionLimitASuspectConnectionKeepsServing) {
  ASSERT_NO_FATAL_FAILURE(Start({"0", "hold"}, "500ms", "  circuit_breakers: {max_connections: 1}\n",
                                "        - match: {prefix: /watch}\n"
                                "          route: {cluster: stalls, timeout: 0s}\n"));
  // The first stream's timeout counts nothing (the peer's SETTINGS came
  // after it); the second's makes the connection suspect: PING, ACK.
  EXPECT_EQ(HttpGet(address_, "/a").status, 504);
  EXPECT_EQ(HttpGet(address_, "/a2").status, 504);
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(PeerLog(), "ping 1\n"); }, absl::Seconds(5)))
      << PeerLog();
  std::thread watch([&] { HttpGet(address_, "/watch", {}, absl::Seconds(30)); });
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(PeerLog(), "headers 1 5\n"); },
                      absl::Seconds(5)))
      << PeerLog();
  EXPECT_EQ(HttpGet(address_, "/b").status, 504);  // suspect again, within the cooldown
  HttpResponse next = HttpGet(address_, "/c");
  EXPECT_EQ(next.status, 504) << next.body << "\n" << PeerLog();
  EXPECT_FALSE(absl::StrContains(PeerLog(), "connection 2\n")) << PeerLog();
  proxy_.reset();  // ends the watch
  watch.join();
}

// A long stream (a route with timeout 0s) on a connection whose peer went
// silent, as a powered-off or partitioned host does (no RST ever comes):
// the connection is pinged once it has received nothing for the cluster's
// keepalive_interval, and with no ACK within 10 s it closes and the stream
// ends, 502 here. Before: only idle connections were pinged, and the
// stream was held for ever.
TEST_F(UpstreamHttp2StallTest, ABusyConnectionToASilentPeerIsPingedAndClosed) {
  ASSERT_NO_FATAL_FAILURE(Start({"1"}, "0s", "  keepalive_interval: 1s\n"));
  HttpResponse first = HttpGet(address_, "/a");  // answered; the peer then goes silent
  EXPECT_EQ(first.status, 200) << first.error << first.body;
  const absl::Time start = absl::Now();
  HttpResponse watch = HttpGet(address_, "/watch", {}, absl::Seconds(40));
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(watch.status, 502) << watch.error << watch.body << "\n" << PeerLog();
  EXPECT_TRUE(absl::StrContains(watch.body, "no PING ACK within 10s")) << watch.body;
  // The PING 1 s after the last byte read (not one to two checks later),
  // then 10 s for its ACK.
  EXPECT_GE(took, absl::Seconds(10));
  EXPECT_LT(took, absl::Milliseconds(12500));
  EXPECT_TRUE(absl::StrContains(PeerLog(), "ping 1\n")) << PeerLog();
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(PeerLog(), "closed 1\n"); },
                      absl::Seconds(5)))
      << PeerLog();
}

// A live peer (it acknowledges PINGs) with a long stream open is pinged at
// most once an interval and only after an interval with nothing received;
// the stream stays open until the client gives up.
TEST_F(UpstreamHttp2StallTest, ABusyConnectionToALivePeerStaysOpen) {
  ASSERT_NO_FATAL_FAILURE(Start({"0", "hold"}, "0s", "  keepalive_interval: 1s\n"));
  HttpResponse watch = HttpGet(address_, "/watch", {}, absl::Seconds(4));
  EXPECT_FALSE(watch.ok());  // the client's own timeout: nothing came, nothing failed
  EXPECT_EQ(watch.status, 0) << watch.body;
  const std::string log = PeerLog();
  EXPECT_TRUE(absl::StrContains(log, "ping 1\n")) << log;
  EXPECT_FALSE(absl::StrContains(log, "closed 1\n")) << log;
  EXPECT_FALSE(absl::StrContains(log, "connection 2\n")) << log;
}

}  // namespace
}  // namespace sluice::testing
