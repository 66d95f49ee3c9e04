// WebSocket through the proxy with real peers (python3-websockets): a route
// that allows the upgrade carries messages both ways; one that does not
// strips the upgrade; a 101 nobody asked for is a 502; an idle tunnel closes.
// Over HTTP/2 (RFC 8441) the client is ws_h2_client.py.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/tls_client.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

// A ws_tool.py server; port() once it prints "listening on PORT".
class PythonPeer {
 public:
  explicit PythonPeer(const std::string& mode) {
    std::string log = MakeTempDir("ws") + "/" + mode + ".log";
    process_ = std::make_unique<Process>(
        "/usr/bin/python3", std::vector<std::string>{RunfilePath("tests/harness/ws_tool.py"), mode},
        log);
    auto line = process_->WaitForLogLine("listening on ", absl::Seconds(20));
    if (line) (void)absl::SimpleAtoi(line->substr(line->find("on ") + 3), &port_);
  }
  int port() const { return port_; }
  Process& process() { return *process_; }

 private:
  std::unique_ptr<Process> process_;
  int port_ = 0;
};

CommandResult WsTool(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/python3", RunfilePath("tests/harness/ws_tool.py")};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, {}, absl::Seconds(60));
}

// What `fd` reads until the peer closes, `timeout` passes or, with
// `head_only`, a whole response head came.
std::string ReadFrom(int fd, absl::Duration timeout, bool head_only) {
  std::string got;
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline && !(head_only && absl::StrContains(got, "\r\n\r\n"))) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

class WebSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_GT(echo_.port(), 0) << echo_.process().Log();
    ASSERT_GT(raw101_.port(), 0) << raw101_.process().Log();
    ASSERT_TRUE(plain_.ok()) << plain_.process().Log();
    port_ = PickFreePort();
    aged_port_ = PickFreePort();
    tls_port_ = PickFreePort();
    no_h2_ws_port_ = PickFreePort();
    const TestCert cert =
        MakeSelfSigned(MakeTempDir("ws-cert"), "server", "localhost", {"localhost"});
    std::string yaml = absl::StrCat(
        "kind: Cluster\nname: echo\nspec:\n  endpoints: [{address: 127.0.0.1, port: ", echo_.port(),
        "}]\n---\nkind: Cluster\nname: switcher\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        raw101_.port(), "}]\n---\nkind: Cluster\nname: plain\nspec:\n  endpoints: "
        "[{address: 127.0.0.1, port: ", plain_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n      routes:\n"
        "        - match: {prefix: /ws-idle}\n"
        "          route: {cluster: echo, websocket: true, websocket_idle_timeout: 1s, timeout: 2s}\n"
        "        - match: {prefix: /ws}\n          route: {cluster: echo, websocket: true, timeout: 1s}\n"
        "        - match: {prefix: /plain}\n          route: {cluster: echo}\n"
        "        - match: {prefix: /switch-ws}\n"
        "          route: {cluster: switcher, websocket: true}\n"
        "        - match: {prefix: /switch}\n          route: {cluster: switcher}\n"
        "        - match: {prefix: /cachedws}\n"
        "          route: {cluster: echo, websocket: true}\n"
        "          policies: [{name: cache, typed_config: {statuses: [426], default_ttl: 60s}}]\n"
        "        - match: {prefix: /answers200}\n"
        "          route: {cluster: plain, websocket: true}\n"
        "        - match: {prefix: /direct}\n"
        "          direct_response: {status: 200, body: hello}\n"
        "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ", port_,
        ", route_table: main, access_log: {path: ", log_, "}}\n",
        "---\nkind: Listener\nname: aged\nspec: {address: 127.0.0.1, port: ", aged_port_,
        ", route_table: main, http: {max_connection_age: 1s}}\n",
        "---\n", CertificateSecretYaml("ws-cert", cert),
        "---\nkind: Listener\nname: secure\nspec: {address: 127.0.0.1, port: ", tls_port_,
        ", route_table: main, tls: {certificates: [ws-cert]}}\n",
        "---\n", NoH2WebSocketListener(true));
    std::string path = MakeTempDir("ws-config") + "/config.yaml";
    std::ofstream(path) << yaml;
    auto r = cp_.Ctl({"apply", "-f", path});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "ws-proxy");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  std::string Url(const std::string& path) const {
    return absl::StrCat("ws://127.0.0.1:", port_, path);
  }

  ControlPlane cp_{"", "info"};
  PythonPeer echo_{"server"};
  PythonPeer raw101_{"raw101"};
  UpstreamServer plain_{"plain"};  // answers 200 to any request
  std::unique_ptr<Proxy> proxy_;
  int port_ = 0;
  int aged_port_ = 0;
  int tls_port_ = 0;  // TLS, ALPN h2 and http/1.1
  int no_h2_ws_port_ = 0;

  // A listener whose HTTP/2 offers no WebSocket (`off`), or does again.
  std::string NoH2WebSocketListener(bool off) const {
    return absl::StrCat("kind: Listener\nname: no-h2-ws\nspec:\n  address: 127.0.0.1\n  port: ",
                        no_h2_ws_port_, "\n  route_table: main\n",
                        off ? "  http: {http2: {websocket: false}}\n" : "");
  }
  std::string log_ = MakeTempDir("ws-log") + "/access.log";

  // The access log line whose path is `path`, waiting for the writer.
  std::string LogLineOf(const std::string& path) {
    return WaitForFileLine(log_, "\"path\":\"" + path + "\"", absl::Seconds(5)).value_or("");
  }
};

TEST_F(WebSocketTest, MessagesFlowBothWaysPastTheRouteTimeout) {
  // The route timeout (1s) covers the handshake only; the exchange of 1 MiB
  // messages may take longer without being cut.
  CommandResult r = WsTool({"client", Url("/ws"), "1.5"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StartsWith(r.out, "ok 204")) << r.out << r.err;
  // The connection still serves plain HTTP requests afterwards (a new one).
  HttpResponse plain = HttpGet(absl::StrCat("127.0.0.1:", port_), "/plain");
  EXPECT_TRUE(plain.ok()) << plain.error;
  // The route's latency is the handshake's, not the 1.5 s the tunnel was
  // open (a p99 alert fired on every WebSocket route).
  const std::string labels = "{route_table=\"main\",route=\"0/1\",virtual_host=\"0\"}";
  ASSERT_TRUE(WaitFor(
      [&] { return proxy_->Stat("sluice_route_request_duration_seconds_count" + labels) == 1; },
      absl::Seconds(10)))
      << proxy_->Admin("/metrics").second;
  const std::string sum_series = "sluice_route_request_duration_seconds_sum" + labels + " ";
  const std::string metrics = proxy_->Admin("/metrics").second;
  const size_t at = metrics.find(sum_series);
  ASSERT_NE(at, std::string::npos) << metrics;
  double seconds = -1;
  ASSERT_TRUE(absl::SimpleAtod(
      metrics.substr(at + sum_series.size(), metrics.find('\n', at) - at - sum_series.size()),
      &seconds));
  EXPECT_GE(seconds, 0.0);
  EXPECT_LT(seconds, 1.0);
  // A tunnel that ended normally is no upstream failure in the log.
  EXPECT_TRUE(absl::StrContains(LogLineOf("/ws"), "\"upstream_failure\":\"\"")) << LogLineOf("/ws");
}

// A cache on a WebSocket route leaves handshakes alone: a stored answer of
// the URI (here the echo server's 426 to a plain GET) is not served to a
// client asking to switch protocols, which gets the upstream's 101.
TEST_F(WebSocketTest, ACachedResponseIsNeverTheAnswerToAHandshake) {
  const std::string host_port = absl::StrCat("127.0.0.1:", port_);
  HttpResponse first = HttpGet(host_port, "/cachedws/chat");
  ASSERT_TRUE(first.ok()) << first.error;
  ASSERT_EQ(first.status, 426) << first.body;
  // Stored: a plain GET is a hit (so the handshake below could be one).
  ASSERT_TRUE(WaitFor(
      [&] { return HttpGet(host_port, "/cachedws/chat").header("x-cache-status") == "Hit"; },
      absl::Seconds(5)));
  CommandResult r = WsTool({"client", Url("/cachedws/chat"), "0"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StartsWith(r.out, "ok 204")) << r.out << r.err;
}

// A WebSocket the client ends (it closes its connection, as clients
// usually do) was answered with its 101: it is counted like one the
// upstream ends. Before, it was in no response metric at all.
TEST_F(WebSocketTest, AWebSocketTheClientEndsIsCounted) {
  const std::string labels =
      "{route_table=\"main\",route=\"0/1\",virtual_host=\"0\",status_class=\"1xx\"}";
  const int64_t before = std::max<int64_t>(proxy_->Stat("sluice_route_requests_total" + labels), 0);
  const std::string script = absl::StrCat(
      "import socket\n"
      "s = socket.create_connection(('127.0.0.1', ", port_, "))\n"
      "s.sendall(b'GET /ws HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\n"
      "Connection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n"
      "Sec-WebSocket-Version: 13\\r\\n\\r\\n')\n"
      "s.settimeout(10)\n"
      "head = s.recv(65536)\n"
      "assert head.startswith(b'HTTP/1.1 101'), head\n"
      "s.close()\n"
      "print('closed')\n");
  CommandResult client = RunCommand({"/usr/bin/python3", "-c", script});
  ASSERT_EQ(client.out, "closed\n") << client.err;
  EXPECT_TRUE(WaitFor(
      [&] { return proxy_->Stat("sluice_route_requests_total" + labels) == before + 1; },
      absl::Seconds(10)))
      << proxy_->Admin("/metrics").second;
  EXPECT_TRUE(absl::StrContains(LogLineOf("/ws"), "\"response_flag\":\"client_closed\""))
      << LogLineOf("/ws");
}

// sluice_websockets_active counts the tunnels open now: one from its 101
// until it ends (Envoy's downstream_cx_upgrades_active).
TEST_F(WebSocketTest, OpenWebSocketsAreAGauge) {
  const std::string upgrade =
      "GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
      "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n";
  EXPECT_LE(proxy_->Stat("sluice_websockets_active"), 0);
  const int fd = ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(send(fd, upgrade.data(), upgrade.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(upgrade.size()));
  const std::string head = ReadFrom(fd, absl::Seconds(10), /*head_only=*/true);
  EXPECT_TRUE(absl::StartsWith(head, "HTTP/1.1 101")) << head;
  EXPECT_TRUE(WaitFor([&] { return proxy_->Stat("sluice_websockets_active") == 1; },
                      absl::Seconds(5)))
      << proxy_->Admin("/metrics").second;
  close(fd);
  EXPECT_TRUE(WaitFor([&] { return proxy_->Stat("sluice_websockets_active") == 0; },
                      absl::Seconds(5)))
      << proxy_->Admin("/metrics").second;
}

TEST_F(WebSocketTest, WithoutTheOptInTheUpgradeIsRemoved) {
  CommandResult r = WsTool({"client", Url("/plain")});
  EXPECT_NE(r.exit_code, 0) << r.out;
  // websockets' server answers a request without Upgrade with 426.
  EXPECT_TRUE(absl::StrContains(r.out, "426")) << r.out << r.err;
}

TEST_F(WebSocketTest, A101NobodyAskedForIsA502NotAHang) {
  absl::Time start = absl::Now();
  HttpResponse r = HttpGet(absl::StrCat("127.0.0.1:", port_), "/switch");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 502);
  EXPECT_TRUE(absl::StrContains(r.body, "101 Switching Protocols")) << r.body;
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

// A 101 must name the protocol it switches to (RFC 9110 15.2.2), and the
// client asked for websocket: a 101 without Upgrade, or to h2c, is a 502,
// never a tunnel labelled websocket.
TEST_F(WebSocketTest, A101ThatDoesNotSwitchToWebSocketIsA502) {
  const Headers upgrade = {{"connection", "upgrade"},
                           {"upgrade", "websocket"},
                           {"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="},
                           {"sec-websocket-version", "13"}};
  for (const std::string path : {"/switch-ws-none", "/switch-ws-h2c"}) {
    HttpResponse r = HttpRequest(absl::StrCat("127.0.0.1:", port_), "GET", path, upgrade, "",
                                 absl::Seconds(10));
    ASSERT_TRUE(r.ok()) << path << ": " << r.error;
    EXPECT_EQ(r.status, 502) << path;
    EXPECT_TRUE(absl::StrContains(r.body, "without switching to websocket")) << r.body;
    // Logged as the upstream breaking HTTP, not as a reset (Envoy's UPE).
    const std::string line = LogLineOf(path);
    EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"upstream_protocol_error\""))
        << line;
  }
  // (A 101 with upgrade: websocket opens the tunnel:
  // MessagesFlowBothWaysPastTheRouteTimeout.)
}

TEST_F(WebSocketTest, AnIdleTunnelIsClosedAfterItsIdleTimeout) {
  const std::string labels =
      "{route_table=\"main\",route=\"0/0\",virtual_host=\"0\",status_class=\"1xx\"}";
  const int64_t before = std::max<int64_t>(proxy_->Stat("sluice_route_requests_total" + labels), 0);
  CommandResult r = WsTool({"idle", Url("/ws-idle"), "10"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  double seconds = 0;
  ASSERT_TRUE(absl::SimpleAtod(r.out.substr(r.out.find("after ") + 6), &seconds)) << r.out;
  EXPECT_GE(seconds, 0.9) << r.out;
  EXPECT_LT(seconds, 5) << r.out;
  EXPECT_TRUE(absl::StrContains(LogLineOf("/ws-idle"), "\"response_flag\":\"idle_timeout\""))
      << LogLineOf("/ws-idle");
  // The gateway closed a quiet tunnel: no upstream timeout (before: one
  // counted per idle close, raising the cluster's error alerts).
  EXPECT_EQ(proxy_->Stat("sluice_upstream_timeouts_total{cluster=\"echo\"}"), 0);
  // Its 101 is counted, as when either side ends it (before: in no series).
  EXPECT_TRUE(WaitFor(
      [&] { return proxy_->Stat("sluice_route_requests_total" + labels) == before + 1; },
      absl::Seconds(10)))
      << proxy_->Admin("/metrics").second;
}

// A WebSocket has no next response to end it: when its listener is removed,
// or its connection reaches max_connection_age, it is ended then. Before:
// it ran on for as long as its peers talked.
TEST_F(WebSocketTest, ARemovedListenerOrAnAgedConnectionEndsItsWebSockets) {
  CommandResult aged = WsTool({"chat", absl::StrCat("ws://127.0.0.1:", aged_port_, "/ws"), "10"});
  EXPECT_TRUE(absl::StrContains(aged.out, "closed after ")) << aged.out << aged.err;

  CommandResult removed;
  std::thread chat([&] { removed = WsTool({"chat", Url("/ws"), "10"}); });
  ASSERT_TRUE(WaitFor(
      [&] { return proxy_->Stat("sluice_downstream_connections_active") >= 1; },
      absl::Seconds(10)));
  auto r = cp_.Ctl({"delete", "listener", "public"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  chat.join();
  EXPECT_TRUE(absl::StrContains(removed.out, "closed after ")) << removed.out << removed.err;
  EXPECT_TRUE(absl::StrContains(LogLineOf("/ws"), "\"response_flag\":\"listener_removed\""))
      << LogLineOf("/ws");
}

// At --drain-timeout a WebSocket is cut then, as the log line at the
// deadline says, not when the process leaves after its 200 ms grace.
TEST_F(WebSocketTest, AWebSocketIsCutAtTheDrainDeadline) {
  proxy_.reset();
  proxy_ = std::make_unique<Proxy>(cp_.address(), "ws-drain", 1, "",
                                   std::vector<std::string>{"--drain-timeout", "1s"});
  ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
  ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  Process chat("/usr/bin/python3",
               std::vector<std::string>{RunfilePath("tests/harness/ws_tool.py"), "chat",
                                        Url("/ws"), "20"},
               MakeTempDir("ws-drain") + "/chat.log");
  ASSERT_TRUE(chat.WaitForLogLine("open", absl::Seconds(20))) << chat.Log();
  std::optional<int> exited = proxy_->Stop(absl::Seconds(20));
  ASSERT_TRUE(exited.has_value());
  ASSERT_TRUE(chat.WaitForLogLine("closed after ", absl::Seconds(10))) << chat.Log();
  EXPECT_FALSE(absl::StrContains(proxy_->process().Log(), "did not close within the grace"))
      << proxy_->process().Log();
  EXPECT_TRUE(absl::StrContains(LogLineOf("/ws"), "\"response_flag\":\"drain_timeout\""))
      << LogLineOf("/ws");
}

// A connection that reaches its max_connection_age while its WebSocket
// handshake waits for the upstream: the tunnel is ended right after its
// 101 (the upstream here would keep it 10 s). Before: it ran on.
TEST_F(WebSocketTest, AHandshakeUnderWayWhenTheConnectionAgesEndsAfterIts101) {
  const std::string upgrade =
      "GET /switch-ws-slow HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\n"
      "upgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "sec-websocket-version: 13\r\n\r\n";
  const absl::Time start = absl::Now();
  std::string reply =
      SendRaw(absl::StrCat("127.0.0.1:", aged_port_), upgrade, absl::Seconds(15));
  EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 101")) << reply;
  EXPECT_LT(absl::Now() - start, absl::Seconds(6)) << reply;
}

// A client that half-closes (or closes) while the upstream has not yet
// switched: the tunnel ends once the 101 is out, as a half-close after it
// ends one. Before: the upstream kept it until websocket_idle_timeout (here
// the upstream's own 10 s), holding a breaker slot for a client long gone.
TEST_F(WebSocketTest, AClientGoneBeforeThe101EndsTheTunnelOnceItIsOut) {
  const std::string upgrade =
      "GET /switch-ws-slow-gone HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\n"
      "upgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "sec-websocket-version: 13\r\n\r\n";
  // A masked text frame "early" right behind the handshake: it reaches the
  // upstream after its 101 (before: dropped with the tunnel).
  const std::string frame = std::string("\x81\x85\x01\x02\x03\x04", 6) + "dnbhu";
  const int fd = ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  const std::string sent = upgrade + frame;
  ASSERT_EQ(send(fd, sent.data(), sent.size(), MSG_NOSIGNAL), static_cast<ssize_t>(sent.size()));
  ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
  const absl::Time start = absl::Now();
  const std::string reply = ReadFrom(fd, absl::Seconds(15), /*head_only=*/false);
  const absl::Duration took = absl::Now() - start;
  close(fd);
  EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 101")) << reply;
  EXPECT_LT(took, absl::Seconds(6)) << reply;
  const std::string line = LogLineOf("/switch-ws-slow-gone");
  EXPECT_TRUE(absl::StrContains(line, "\"status\":101")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"client_closed\"")) << line;
  auto got = raw101_.process().WaitForLogLine("after 101 got ", absl::Seconds(15));
  ASSERT_TRUE(got.has_value()) << raw101_.process().Log();
  EXPECT_TRUE(absl::StrContains(*got, "after 101 got 11 bytes")) << *got;
}

// An upstream that resets a WebSocket is logged and counted as a reset; one
// that closes it is its normal end.
TEST_F(WebSocketTest, AnUpstreamResetOfATunnelIsLoggedAsOne) {
  const std::string upgrade =
      "GET /switch-ws-rst HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\n"
      "upgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "sec-websocket-version: 13\r\n\r\n";
  std::string reply = SendRaw(absl::StrCat("127.0.0.1:", port_), upgrade, absl::Seconds(10));
  EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 101")) << reply;
  const std::string line = LogLineOf("/switch-ws-rst");
  EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"upstream_reset\"")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"upstream_failure\":\"reset the tunnel: ")) << line;
}

CommandResult WsH2(int port, const std::string& path, const std::string& mode,
                   bool tls = false) {
  std::vector<std::string> argv = {"/usr/bin/python3",
                                   RunfilePath("tests/harness/ws_h2_client.py"),
                                   "--port", absl::StrCat(port), "--path", path, "--mode", mode};
  if (tls) argv.push_back("--tls");
  return RunCommand(argv, {}, absl::Seconds(60));
}

// RFC 8441: the gateway's HTTP/2 SETTINGS offer extended CONNECT, and a
// WebSocket opened as a stream reaches the HTTP/1.1 upstream as its
// handshake (a Sec-WebSocket-Key made for it: the Python server refuses one
// without), its 101 answered 200; messages of 200 KB flow both ways through
// both flow controls, and the Close handshake ends the stream. Frames the
// client sent with its HEADERS, before the 200, are not lost. h2c, and h2
// over TLS (ALPN), as browsers use it.
TEST_F(WebSocketTest, OverHttp2AWebSocketOpensAsAStream) {
  for (const std::string mode : {"echo", "early"}) {
    for (const bool tls : {false, true}) {
      CommandResult r = WsH2(tls ? tls_port_ : port_, "/ws", mode, tls);
      EXPECT_EQ(r.exit_code, 0) << mode << " tls " << tls << ": " << r.out << r.err;
      EXPECT_EQ(r.out, "enable_connect_protocol=1\nstatus 200\nok\n")
          << mode << " tls " << tls << ": " << r.err;
    }
  }
  const std::string line = LogLineOf("/ws");
  EXPECT_TRUE(absl::StrContains(line, "\"protocol\":\"HTTP/2\",\"status\":200")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"\"")) << line;
  EXPECT_TRUE(WaitFor([&] { return proxy_->Stat("sluice_websockets_active") == 0; },
                      absl::Seconds(5)))
      << proxy_->Admin("/metrics").second;
}

// END_STREAM from the client is a half-close carried to the upstream (its
// socket shut down for writing): the upstream, seeing the end, closes, and
// the gateway ends the stream. Before, the upstream never learned of it.
TEST_F(WebSocketTest, OverHttp2TheClientsEndOfStreamIsAHalfClose) {
  CommandResult r = WsH2(port_, "/ws", "half-close");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "enable_connect_protocol=1\nstatus 200\nended\n") << r.err;
}

// A listener's http2.websocket: false leaves SETTINGS_ENABLE_CONNECT_PROTOCOL
// out (for clients whose RFC 8441 is broken: browsers then use HTTP/1.1),
// and an extended CONNECT is malformed there (RST_STREAM PROTOCOL_ERROR,
// RFC 8441 3). Turned back on live, new connections are offered it.
TEST_F(WebSocketTest, OverHttp2TheListenerMayOfferNoWebSocket) {
  CommandResult r = WsH2(no_h2_ws_port_, "/ws", "echo");
  EXPECT_TRUE(absl::StartsWith(r.out, "enable_connect_protocol=0\nstream reset, code 1\n"))
      << r.out << r.err;
  const std::string path = MakeTempDir("ws-on") + "/listener.yaml";
  std::ofstream(path) << NoH2WebSocketListener(false);
  auto applied = cp_.Ctl({"apply", "-f", path});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  r = WsH2(no_h2_ws_port_, "/ws", "echo");
  EXPECT_EQ(r.out, "enable_connect_protocol=1\nstatus 200\nok\n") << r.err;
}

// As over HTTP/1.1, a WebSocket stream has no next response to end it: at
// its connection's max_connection_age (1s on the aged listener) or when its
// listener is removed it is ended at once, with END_STREAM, not left to run
// on the drained connection. Before: it ran for as long as its peers talked.
TEST_F(WebSocketTest, OverHttp2AnAgedConnectionOrARemovedListenerEndsItsWebSockets) {
  CommandResult aged = WsH2(aged_port_, "/ws", "hold");
  EXPECT_TRUE(absl::StrContains(aged.out, "status 200\nended after ")) << aged.out << aged.err;

  CommandResult removed;
  std::thread hold([&] { removed = WsH2(port_, "/ws-removed", "hold"); });
  ASSERT_TRUE(WaitFor([&] { return proxy_->Stat("sluice_websockets_active") == 1; },
                      absl::Seconds(10)));
  auto r = cp_.Ctl({"delete", "listener", "public"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  hold.join();
  EXPECT_TRUE(absl::StrContains(removed.out, "status 200\nended after ")) << removed.out
                                                                           << removed.err;
  EXPECT_TRUE(absl::StrContains(LogLineOf("/ws-removed"),
                                "\"response_flag\":\"listener_removed\""))
      << LogLineOf("/ws-removed");
}

// A client's RST_STREAM ends the tunnel and its upstream connection at once,
// logged client_closed; the connection's other streams would go on.
TEST_F(WebSocketTest, OverHttp2AResetStreamEndsTheTunnel) {
  CommandResult r = WsH2(port_, "/ws-reset", "reset");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "enable_connect_protocol=1\nstatus 200\nreset, then 200\n") << r.err;
  const std::string line = LogLineOf("/ws-reset");
  EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"client_closed\"")) << line;
  EXPECT_TRUE(WaitFor([&] { return proxy_->Stat("sluice_websockets_active") == 0; },
                      absl::Seconds(5)))
      << proxy_->Admin("/metrics").second;
}

// A 2xx is an open tunnel to an RFC 8441 client: a route without the
// opt-in, or one that answers itself, gets 403 (Envoy's answer to an
// upgrade the route does not allow), not the plain GET an HTTP/1.1
// upgrade falls back to; an upstream that answers its handshake 200 is a
// 502; one that answers 101 without switching to websocket too, and one
// whose 101 has no Sec-WebSocket-Accept answering the gateway's key (RFC
// 6455 4.1: the handshake's client fails it; ws_tool.py's raw101 sends none).
TEST_F(WebSocketTest, OverHttp2OnlyATunnelIsAnswered2xx) {
  CommandResult r = WsH2(port_, "/plain", "echo");
  EXPECT_TRUE(absl::StrContains(r.out, "status 403\n")) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "this route does not allow WebSocket")) << r.out;
  EXPECT_TRUE(absl::StrContains(LogLineOf("/plain"), "\"response_flag\":\"upgrade_refused\""))
      << LogLineOf("/plain");
  r = WsH2(port_, "/direct", "echo");
  EXPECT_TRUE(absl::StrContains(r.out, "status 403\n")) << r.out << r.err;
  r = WsH2(port_, "/answers200", "echo");
  EXPECT_TRUE(absl::StrContains(r.out, "status 502\n")) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "answered 200 to a WebSocket upgrade, not 101")) << r.out;
  r = WsH2(port_, "/switch-ws-none", "echo");
  EXPECT_TRUE(absl::StrContains(r.out, "status 502\n")) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "without switching to websocket")) << r.out;
  r = WsH2(port_, "/switch-ws", "echo");
  EXPECT_TRUE(absl::StrContains(r.out, "status 502\n")) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "without the Sec-WebSocket-Accept that answers")) << r.out;
}

// A WebSocket route to a protocol: HTTP2 cluster: the handshake goes
// upstream as an extended CONNECT (RFC 8441), Envoy's translation. The
// upstream is a second gateway (its own control plane), whose h2c listener
// offers SETTINGS_ENABLE_CONNECT_PROTOCOL and takes the WebSocket on to the
// HTTP/1.1 echo server; another of its listeners offers none.
class WebSocketToHttp2Test : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(inner_cp_.ok()) << inner_cp_.process().Log();
    ASSERT_GT(echo_.port(), 0) << echo_.process().Log();
    port_ = PickFreePort();
    inner_port_ = PickFreePort();
    inner_no_ws_port_ = PickFreePort();
    const std::string dir = MakeTempDir("ws-h2-up");
    const std::string inner = absl::StrCat(
        "kind: Cluster\nname: echo\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        echo_.port(), "}]\n---\nkind: RouteTable\nname: inner\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n      routes:\n"
        "        - match: {prefix: /}\n          route: {cluster: echo, websocket: true}\n"
        "---\nkind: Listener\nname: inner\nspec: {address: 127.0.0.1, port: ", inner_port_,
        ", route_table: inner, access_log: {path: ", inner_log_, "}}\n"
        "---\nkind: Listener\nname: inner-no-ws\nspec: {address: 127.0.0.1, port: ",
        inner_no_ws_port_, ", route_table: inner, http: {http2: {websocket: false}}}\n");
    auto r = inner_cp_.Ctl({"apply", "-f", WriteFile(dir, "inner.yaml", inner)});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    const std::string outer = absl::StrCat(
        "kind: Cluster\nname: h2\nspec:\n  protocol: HTTP2\n"
        "  endpoints: [{address: 127.0.0.1, port: ", inner_port_, "}]\n"
        "---\nkind: Cluster\nname: h2-no-ws\nspec:\n  protocol: HTTP2\n"
        "  endpoints: [{address: 127.0.0.1, port: ", inner_no_ws_port_, "}]\n"
        "---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n      routes:\n"
        "        - match: {prefix: /no-ws}\n          route: {cluster: h2-no-ws, websocket: true}\n"
        "        - match: {prefix: /}\n          route: {cluster: h2, websocket: true}\n"
        "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ", port_,
        ", route_table: main, access_log: {path: ", log_, "}}\n");
    r = cp_.Ctl({"apply", "-f", WriteFile(dir, "outer.yaml", outer)});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, "its WebSockets go upstream as extended CONNECT"))
        << r.err;
    inner_proxy_ = std::make_unique<Proxy>(inner_cp_.address(), "ws-inner");
    ASSERT_TRUE(inner_proxy_->ok()) << inner_proxy_->process().Log();
    ASSERT_TRUE(inner_proxy_->WaitForVersion(1)) << inner_proxy_->process().Log();
    proxy_ = std::make_unique<Proxy>(cp_.address(), "ws-outer");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  std::string Url(const std::string& path) const {
    return absl::StrCat("ws://127.0.0.1:", port_, path);
  }
  static std::string LineOf(const std::string& log, const std::string& path) {
    return WaitForFileLine(log, "\"path\":\"" + path + "\"", absl::Seconds(5)).value_or("");
  }

  ControlPlane cp_;
  ControlPlane inner_cp_;
  PythonPeer echo_{"server"};
  std::unique_ptr<Proxy> inner_proxy_;
  std::unique_ptr<Proxy> proxy_;
  int port_ = 0;
  int inner_port_ = 0;
  int inner_no_ws_port_ = 0;
  std::string log_ = MakeTempDir("ws-h2-log") + "/access.log";
  std::string inner_log_ = MakeTempDir("ws-h2-inner-log") + "/access.log";
};

// An HTTP/1.1 client's handshake is answered 101 by the gateway once the
// upstream's 200 opens the stream, with the Sec-WebSocket-Accept that
// answers the client's key (python3-websockets checks it); messages up to
// 1 MiB flow both ways through HTTP/2 flow control. An RFC 8441 client's
// stream goes on as one (200), and its END_STREAM reaches the far end as a
// half-close. The upstream gateway saw HTTP/2 requests. Before: the
// HTTP/1.1 handshake went upstream as a plain GET, and the RFC 8441 client
// got 403.
TEST_F(WebSocketToHttp2Test, AWebSocketGoesToAnHttp2UpstreamAsAnExtendedConnect) {
  CommandResult r = WsTool({"client", Url("/chat"), "0"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StartsWith(r.out, "ok 204")) << r.out << r.err;
  std::string line = LineOf(log_, "/chat");
  EXPECT_TRUE(absl::StrContains(line, "\"protocol\":\"HTTP/1.1\",\"status\":101")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"upstream_failure\":\"\"")) << line;
  line = LineOf(inner_log_, "/chat");
  EXPECT_TRUE(absl::StrContains(line, "\"protocol\":\"HTTP/2\",\"status\":200")) << line;

  for (const std::string mode : {"echo", "early"}) {
    r = WsH2(port_, "/h2chat", mode);
    EXPECT_EQ(r.exit_code, 0) << mode << ": " << r.out << r.err;
    EXPECT_EQ(r.out, "enable_connect_protocol=1\nstatus 200\nok\n") << mode << ": " << r.err;
  }
  r = WsH2(port_, "/h2chat", "half-close");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "enable_connect_protocol=1\nstatus 200\nended\n") << r.err;
  EXPECT_TRUE(WaitFor([&] { return proxy_->Stat("sluice_websockets_active") == 0; },
                      absl::Seconds(5)))
      << proxy_->Admin("/metrics").second;
  // The connection to the upstream gateway carries plain requests still.
  HttpResponse plain = HttpGet(absl::StrCat("127.0.0.1:", port_), "/plain");
  ASSERT_TRUE(plain.ok()) << plain.error;
  EXPECT_EQ(plain.status, 426) << plain.body;  // the echo server's answer to a GET
}

// An HTTP/2 upstream whose SETTINGS do not allow extended CONNECT (many
// gRPC servers) gets no WebSocket: the client gets a 502 naming why, and
// the endpoint is not counted failed (the config asked what it cannot do).
// An HTTP/1.1 handshake without a valid Sec-WebSocket-Key, which the
// gateway answers itself here, is a 400.
TEST_F(WebSocketToHttp2Test, AnUpstreamThatDoesNotAllowExtendedConnectIsA502) {
  const std::string host_port = absl::StrCat("127.0.0.1:", port_);
  const std::string upgrade =
      "GET /no-ws/chat HTTP/1.1\r\nhost: x\r\nconnection: upgrade, close\r\n"
      "upgrade: websocket\r\n"
      "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n";
  std::string reply = SendRaw(host_port, upgrade, absl::Seconds(10));
  EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 502")) << reply;
  EXPECT_TRUE(absl::StrContains(reply, "SETTINGS_ENABLE_CONNECT_PROTOCOL")) << reply;
  const std::string line = LineOf(log_, "/no-ws/chat");
  EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"upstream_protocol_error\""))
      << line;
  CommandResult r = WsH2(port_, "/no-ws/h2", "echo");
  EXPECT_TRUE(absl::StrContains(r.out, "status 502\n")) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "does not take WebSocket over HTTP/2")) << r.out;
  EXPECT_EQ(proxy_->Stat("sluice_upstream_resets_total{cluster=\"h2-no-ws\"}"), 0)
      << proxy_->Admin("/metrics").second;
  HttpResponse plain = HttpGet(host_port, "/no-ws/plain");
  ASSERT_TRUE(plain.ok()) << plain.error;
  EXPECT_EQ(plain.status, 426) << plain.body;

  for (const std::string key : {"", "sec-websocket-key: c2hvcnQ=\r\n"}) {
    reply = SendRaw(host_port,
                    absl::StrCat("GET /chat HTTP/1.1\r\nhost: x\r\nconnection: upgrade, close\r\n"
                                 "upgrade: websocket\r\n", key,
                                 "sec-websocket-version: 13\r\n\r\n"),
                    absl::Seconds(10));
    EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 400")) << key << ": " << reply;
    EXPECT_TRUE(absl::StrContains(reply, "no valid Sec-WebSocket-Key")) << reply;
  }
}

}  // namespace
}  // namespace sluice::testing
