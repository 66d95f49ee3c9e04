// gRPC through the proxy with real peers: sluice-control, one sluice-proxy
// (two workers) and grpc_tool.py (python3-grpcio) as the h2c upstream and as
// the clients, over a plain listener (h2c) and a TLS one (h2 by ALPN). The
// cluster speaks HTTP/2 to the upstream and is health checked with the gRPC
// health protocol. A gRPC server refuses requests without "te: trailers", so
// every call that succeeds also shows the proxy forwarded it.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/harness/grpc_peer.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/tls_client.h"

namespace sluice::testing {
namespace {

constexpr int kWorkers = 2;
constexpr char kOpened[] = "sluice_upstream_connections_opened_total{cluster=\"grpc\"}";

// A value from the /clusters page line of `cluster`, e.g. "active_requests";
// -1 when absent.
int64_t ClusterValue(const std::string& page, const std::string& cluster, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(page, '\n')) {
    if (!absl::StartsWith(line, absl::StrCat("cluster ", cluster, " ("))) continue;
    size_t at = line.find(absl::StrCat(" ", name, "="));
    if (at == absl::string_view::npos) return -1;
    absl::string_view digits = line.substr(at + name.size() + 2);
    digits = digits.substr(0, digits.find_first_not_of("0123456789"));
    int64_t value = -1;
    return absl::SimpleAtoi(digits, &value) ? value : -1;
  }
  return -1;
}

GrpcServer::Options HealthFileOptions(const std::string& path) {
  GrpcServer::Options options;
  options.health_file = path;
  return options;
}

class GrpcTest : public ::testing::Test {
 protected:
  ~GrpcTest() override {
    if (mute_fd_ >= 0) close(mute_fd_);
  }
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(server_.ok()) << server_.process().Log();
    WriteHealth("sluice.test.Echo=SERVING\n");
    ca_ = MakeCa(dir_, "ca", "gRPC Test CA");
    TestCert cert = MakeSignedBy(ca_, dir_, "grpc-test", "grpc.test", {"grpc.test"});
    int mute_port = 0;
    mute_fd_ = SilentListener(&mute_port);
    ASSERT_GE(mute_fd_, 0);
    plain_port_ = PickFreePort();
    tls_port_ = PickFreePort();
    ASSERT_NE(plain_port_, tls_port_);
    std::string yaml = absl::StrCat(
        CertificateSecretYaml("grpc-cert", cert),
        "---\nkind: Cluster\nname: grpc\nspec:\n  protocol: HTTP2\n"
        "  endpoints: [{address: 127.0.0.1, port: ", server_.port(), "}]\n"
        "  health_check:\n"
        "    grpc: {service_name: sluice.test.Echo, authority: health.grpc.test}\n"
        "    interval: 250ms\n    timeout: 250ms\n"
        "    healthy_threshold: 1\n    unhealthy_threshold: 3\n    healthy_on_add: false\n"
        "  panic_threshold_percent: 0\n",
        // The same server, at most two streams per connection.
        "---\nkind: Cluster\nname: narrow\nspec:\n  protocol: HTTP2\n  max_concurrent_streams: 2\n"
        "  endpoints: [{address: 127.0.0.1, port: ", server_.port(), "}]\n",
        // Nothing listens on the dead cluster's port.
        "---\nkind: Cluster\nname: dead\nspec:\n  protocol: HTTP2\n"
        "  endpoints: [{address: 127.0.0.1, port: ", PickFreePort(), "}]\n",
        // The mute cluster's takes connections and never sends SETTINGS.
        "---\nkind: Cluster\nname: mute\nspec:\n  protocol: HTTP2\n  connect_timeout: 300ms\n"
        "  endpoints: [{address: 127.0.0.1, port: ", mute_port, "}]\n",
        "---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: [unrouted.test]\n      routes:\n"
        "        - match: {prefix: /other.Service/}\n          route: {cluster: grpc}\n"
        "    - domains: [dead.test]\n      routes:\n"
        "        - match: {prefix: /}\n          route: {cluster: dead}\n"
        "    - domains: [narrow.test]\n      routes:\n"
        "        - match: {prefix: /}\n          route: {cluster: narrow}\n"
        "    - domains: [keyed.test]\n      routes:\n"
        "        - match: {prefix: /}\n          route: {cluster: grpc}\n"
        "          policies: [{name: key-auth, typed_config: {}}]\n"
        "    - domains: [limited.test]\n      routes:\n"
        "        - match: {prefix: /}\n          route: {cluster: grpc}\n"
        "          policies: [{name: request-size-limit, typed_config: {max_bytes: 2000}}]\n"
        "    - domains: [slow.test]\n      routes:\n"
        "        - match: {prefix: /}\n          route: {cluster: grpc, timeout: 300ms}\n"
        "    - domains: ['*']\n      routes:\n"
        "        - match: {prefix: /sluice.test.Echo/}\n          route: {cluster: grpc}\n"
        "    - domains: [retry.test]\n      routes:\n"
        "        - match: {prefix: /}\n          route: {cluster: grpc, retry_policy: "
        "{num_retries: 2, retry_on: [unavailable, resource-exhausted], base_interval: 1ms}}\n"
        "    - domains: [noretry.test]\n      routes:\n"
        "        - match: {prefix: /}\n          route: {cluster: grpc, retry_policy: "
        "{num_retries: 2, retry_on: [5xx], retry_non_idempotent: true}}\n"
        // Added last: the tests above name routes by their index.
        "    - domains: [mute.test]\n      routes:\n"
        "        - match: {prefix: /}\n          route: {cluster: mute}\n"
        "    - domains: [held.test]\n      routes:\n"
        "        - match: {prefix: /}\n          route: {cluster: grpc, timeout: 300ms}\n"
        "          policies: [{name: request-validation, typed_config: "
        "{content_types: [application/grpc], body_schema: '{}'}}]\n"
        "    - domains: [json-only.test]\n      routes:\n"
        "        - match: {prefix: /}\n          route: {cluster: grpc}\n"
        "          policies: [{name: request-validation, typed_config: "
        "{content_types: [application/json]}}]\n",
        "---\nkind: Consumer\nname: grpc-client\nspec: {keys: [{key: grpc-client-key-1}]}\n",
        "---\nkind: Listener\nname: plain\nspec: {address: 127.0.0.1, port: ", plain_port_,
        ", route_table: main, access_log: {path: ", dir_, "/access.log}}\n",
        "---\nkind: Listener\nname: tls\nspec: {address: 127.0.0.1, port: ", tls_port_,
        ", route_table: main, tls: {certificates: [grpc-cert]}}\n");
    auto r = cp_.Ctl({"apply", "-f", WriteFile(dir_, "config.yaml", yaml)});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "grpc-proxy", kWorkers);
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
    // healthy_on_add is false: the endpoint takes traffic after its first
    // passing gRPC health check.
    ASSERT_TRUE(WaitForEndpointHealth("healthy")) << Clusters();
  }

  // Replaces the health file in one rename: the server never reads half a file.
  void WriteHealth(const std::string& text) {
    std::string staging = health_file_ + ".new";
    std::ofstream(staging) << text;
    ASSERT_EQ(std::rename(staging.c_str(), health_file_.c_str()), 0);
  }

  std::string Clusters() const { return proxy_->Admin("/clusters").second; }

  // The proxy's ERROR log lines (a failed check says why it aborted).
  std::string ProxyErrors() const {
    std::string errors;
    for (absl::string_view line : absl::StrSplit(proxy_->process().Log(), '\n')) {
      if (absl::StrContains(line, " ERROR ")) absl::StrAppend(&errors, line, "\n");
    }
    return errors;
  }

  bool WaitForEndpointHealth(const std::string& health) const {
    std::string line = absl::StrCat("127.0.0.1:", server_.port(), " health=", health, " ");
    return WaitFor([&] { return absl::StrContains(Clusters(), line); }, absl::Seconds(10));
  }

  // `calls` concurrent server-stream calls through the plain listener, each
  // 8 x 16 KiB over ~1.4 s, with `args` added; returns their results and
  // sets *peak to the most requests the proxy had in flight at once on
  // `cluster`.
  std::vector<GrpcCallResult> ConcurrentCalls(int calls, const std::string& cluster,
                                              const std::vector<std::string>& args,
                                              int64_t* peak) const {
    std::vector<GrpcCallResult> results(calls);
    std::atomic<int> finished{0};
    std::vector<std::thread> clients;
    for (int i = 0; i < calls; ++i) {
      clients.emplace_back([&, i] {
        std::vector<std::string> all = {"--payload", "8:16384:200", "--timeout", "30"};
        all.insert(all.end(), args.begin(), args.end());
        results[i] = Call("server-stream", all);
        finished.fetch_add(1);
      });
    }
    *peak = 0;
    WaitFor(
        [&] {
          *peak = std::max(*peak, ClusterValue(Clusters(), cluster, "active_requests"));
          return *peak >= calls || finished.load() == calls;
        },
        absl::Seconds(60));
    for (std::thread& t : clients) t.join();
    return results;
  }

  // The proxy again, with --drain-timeout 1s; then a server-stream call of
  // 100 messages 100 ms apart (ten seconds, far past that) into *r, open
  // through the plain listener when this returns. Join the thread.
  std::thread LongCallOnADrainingProxy(const std::string& node, GrpcCallResult* r) {
    proxy_.reset();
    proxy_ = std::make_unique<Proxy>(cp_.address(), node, kWorkers, "",
                                     std::vector<std::string>{"--drain-timeout", "1s"});
    EXPECT_TRUE(proxy_->ok()) << proxy_->process().Log();
    EXPECT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
    EXPECT_TRUE(WaitForEndpointHealth("healthy")) << Clusters();
    std::thread call([this, r] {
      *r = Call("server-stream", {"--payload", "100:16:100", "--timeout", "20"});
    });
    EXPECT_TRUE(WaitFor([&] { return absl::StrContains(Clusters(), "active_requests=1 "); },
                        absl::Seconds(10)))
        << Clusters();
    return call;
  }

  // A call through the plain listener (h2c).
  GrpcCallResult Call(const std::string& kind, const std::vector<std::string>& args = {}) const {
    return GrpcCall(absl::StrCat("127.0.0.1:", plain_port_), kind, args);
  }

  // A call through the TLS listener, for the name in its certificate.
  GrpcCallResult CallTls(const std::string& kind, std::vector<std::string> args = {}) const {
    args.insert(args.end(), {"--tls", ca_.cert_path, "--authority", "grpc.test"});
    return GrpcCall(absl::StrCat("127.0.0.1:", tls_port_), kind, args);
  }

  // A call straight to the upstream, bypassing the proxy.
  GrpcCallResult CallUpstream(const std::string& kind) const {
    return GrpcCall(server_.address(), kind);
  }

  ControlPlane cp_{"", "info"};
  std::string dir_ = MakeTempDir("grpc");
  std::string health_file_ = dir_ + "/health";
  GrpcServer server_{"echo", HealthFileOptions(health_file_)};
  std::unique_ptr<Proxy> proxy_;
  TestCert ca_;
  int plain_port_ = 0;
  int tls_port_ = 0;
  int mute_fd_ = -1;  // the mute cluster's endpoint
};

// A call still open when a SIGTERM drain's deadline comes ends with
// UNAVAILABLE in trailers, which clients retry, and is logged as the
// gateway's 503 with grpc_status 14 (before: the connection was cut; a
// balancer between turned that into RST_STREAM(CANCEL), CANCELLED, which
// clients do not retry, and the log had a 200 with no grpc_status).
TEST_F(GrpcTest, ACallOpenAtTheDrainDeadlineEndsUnavailable) {
  GrpcCallResult r;
  std::thread call = LongCallOnADrainingProxy("grpc-drain-proxy", &r);
  proxy_->process().Signal(SIGTERM);
  call.join();
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "UNAVAILABLE") << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.details, "shutting down")) << r.Describe();
  EXPECT_GT(r.responses, 0) << r.Describe();
  EXPECT_LT(r.responses, 100) << r.Describe();
  std::optional<std::string> line =
      WaitForFileLine(dir_ + "/access.log", "\"response_flag\":\"drain_timeout\"", absl::Seconds(5));
  ASSERT_TRUE(line.has_value()) << ReadFile(dir_ + "/access.log");
  EXPECT_TRUE(absl::StrContains(*line, "\"status\":503,")) << *line;
  EXPECT_TRUE(absl::StrContains(*line, "\"grpc_status\":14")) << *line;
  // And the process log says so (before: only the access log did).
  EXPECT_TRUE(WaitFor([&] {
    return absl::StrContains(proxy_->process().Log(),
                             "drain timeout (1s) with 1 connection still open: ending");
  }, absl::Seconds(5))) << proxy_->process().Log();
}

// A listener that moves (or goes, or narrows its TLS rules) drains its
// connections: a call on one still open --drain-timeout later ends with
// UNAVAILABLE, as at a SIGTERM drain's deadline. Before: GOAWAY only, and a
// long call ran on the old port (or under a client CA taken out) for good.
TEST_F(GrpcTest, ACallOnAMovedListenerEndsAtTheDrainTimeout) {
  GrpcCallResult r;
  std::thread call = LongCallOnADrainingProxy("grpc-move-proxy", &r);
  const int moved_port = PickFreePort();
  auto applied = cp_.Ctl({"apply", "-f",
                          WriteFile(dir_, "moved.yaml",
                                    absl::StrCat("kind: Listener\nname: plain\nspec: {address: "
                                                 "127.0.0.1, port: ",
                                                 moved_port, ", route_table: main, access_log: "
                                                 "{path: ", dir_, "/access.log}}\n"))});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  call.join();
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "UNAVAILABLE") << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.details, "listener this connection came in on was changed"))
      << r.Describe();
  EXPECT_LT(r.responses, 100) << r.Describe();
  std::optional<std::string> line = WaitForFileLine(
      dir_ + "/access.log", "\"response_flag\":\"listener_moved\"", absl::Seconds(5));
  ASSERT_TRUE(line.has_value()) << ReadFile(dir_ + "/access.log");
  EXPECT_TRUE(absl::StrContains(*line, "\"grpc_status\":14")) << *line;
}

TEST_F(GrpcTest, UnaryEchoesPayloadMetadataAndTrailers) {
  GrpcCallResult r = Call("unary", {"--payload", "hello sluice", "--authority", "echo.test",
                                    "--metadata", "x-test-a=1", "--metadata", "x-test-b=two"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "OK") << r.Describe();
  EXPECT_EQ(r.payload, "hello sluice");
  EXPECT_TRUE(r.verified) << r.Describe();
  EXPECT_EQ(r.initial_metadata["x-test-a"], "1") << r.out;
  EXPECT_EQ(r.initial_metadata["x-test-b"], "two") << r.out;
  EXPECT_EQ(r.initial_metadata["x-seen-authority"], "echo.test") << r.out;
  EXPECT_EQ(r.trailing_metadata["x-trailer"], "unary") << r.out;
}

TEST_F(GrpcTest, LargeServerStreamArrivesIntact) {
  GrpcCallResult r =
      Call("server-stream", {"--count", "200", "--size", "16384", "--timeout", "30"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "OK") << r.Describe();
  EXPECT_EQ(r.responses, 200);
  EXPECT_EQ(r.bytes, 200 * 16384);
  EXPECT_TRUE(r.verified) << r.out;
  EXPECT_EQ(r.trailing_metadata["x-trailer"], "server-stream") << r.out;
}

TEST_F(GrpcTest, ClientStreamOfAHundredMessages) {
  GrpcCallResult r = Call("client-stream", {"--count", "100", "--size", "1000", "--timeout", "30"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "OK") << r.Describe();
  EXPECT_EQ(r.payload, "count=100 bytes=100000");
  EXPECT_TRUE(r.verified) << r.out;
}

TEST_F(GrpcTest, BidiPingPongIsNotBuffered) {
  // Message i+1 leaves only once echo i came back: a proxy that holds either
  // direction back stalls the call into its deadline.
  GrpcCallResult r = Call("bidi", {"--count", "50", "--size", "256", "--timeout", "10"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "OK") << r.Describe();
  EXPECT_EQ(r.responses, 50);
  EXPECT_TRUE(r.verified) << r.out;
}

// A limit passed while the response streams ends the call with the status
// in trailers. Before: RST_STREAM INTERNAL_ERROR, no grpc-status.
TEST_F(GrpcTest, ALimitPassedMidCallEndsItWithAStatusInTrailers) {
  GrpcCallResult r = Call("bidi", {"--count", "50", "--size", "256", "--timeout", "10",
                                   "--authority", "limited.test"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "RESOURCE_EXHAUSTED") << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.details, "over this route's limit of 2000")) << r.Describe();
  EXPECT_GT(r.responses, 0) << r.Describe();  // the response had begun
  EXPECT_LT(r.responses, 50) << r.Describe();
}

TEST_F(GrpcTest, UpstreamErrorStatusIsForwarded) {
  GrpcCallResult r = Call("unary", {"--payload", "fail:5:gone", "--metadata", "x-test-id=7"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "NOT_FOUND") << r.Describe();
  EXPECT_EQ(r.details, "gone");
  EXPECT_EQ(r.initial_metadata["x-test-id"], "7") << r.out;
  EXPECT_EQ(r.trailing_metadata["x-trailer"], "unary") << r.out;
  // An application status is not a gateway failure: the endpoint stays in.
  EXPECT_EQ(Call("unary").code, "OK");
  // Both are HTTP 200s; the gRPC statuses are counted and logged.
  const std::string route = R"(route_table="main",route="6/0",virtual_host="6")";
  auto count = [&](int code) {
    return proxy_->Stat(
        absl::StrCat("sluice_route_grpc_responses_total{", route, ",grpc_status=\"", code, "\"}"));
  };
  EXPECT_TRUE(WaitFor([&] { return count(5) == 1 && count(0) == 1; }, absl::Seconds(5)))
      << proxy_->Admin("/metrics").second;
  EXPECT_EQ(proxy_->Stat(absl::StrCat("sluice_route_requests_total{", route,
                                      ",status_class=\"2xx\"}")),
            2);
  EXPECT_TRUE(
      WaitForFileLine(dir_ + "/access.log", "\"grpc_status\":5,", absl::Seconds(5)).has_value());
}

// retry_on: unavailable (and the other gRPC statuses, as Envoy's) sends a
// call again when its answer was trailers-only (grpc-status in the response
// head: nothing of it reached the client), though every call is a POST.
// Other statuses, routes without it, and a status after the response head
// are passed on.
TEST_F(GrpcTest, RetryOnGrpcStatusResendsTrailersOnlyFailures) {
  auto unary = [&](const std::string& authority, const std::string& payload) {
    return Call("unary", {"--authority", authority, "--payload", payload});
  };
  GrpcCallResult r = unary("retry.test", "flaky:14:2:a");
  EXPECT_EQ(r.code, "OK") << r.Describe();
  EXPECT_EQ(r.payload, "flaky:14:2:a") << r.Describe();
  r = unary("retry.test", "flaky:8:1:b");
  EXPECT_EQ(r.code, "OK") << r.Describe();
  // Three failures: the two retries are not enough, and the last is passed on.
  r = unary("retry.test", "flaky:14:3:c");
  EXPECT_EQ(r.code, "UNAVAILABLE") << r.Describe();
  EXPECT_EQ(r.details, "flaky call 3") << r.Describe();
  r = unary("retry.test", "flaky:13:1:d");  // INTERNAL is not listed
  EXPECT_EQ(r.code, "INTERNAL") << r.Describe();
  EXPECT_EQ(r.details, "flaky call 1") << r.Describe();
  r = unary("noretry.test", "flaky:14:1:e");  // 5xx: HTTP statuses only
  EXPECT_EQ(r.code, "UNAVAILABLE") << r.Describe();
  EXPECT_EQ(r.details, "flaky call 1") << r.Describe();
  // Metadata went first: the status came in trailers, after the head.
  r = unary("retry.test", "fail:14:after the head");
  EXPECT_EQ(r.code, "UNAVAILABLE") << r.Describe();
  EXPECT_EQ(r.initial_metadata.count("x-seen-authority"), 1u) << r.out;
  EXPECT_EQ(proxy_->Stat("sluice_retries_total{cluster=\"grpc\"}"), 2 + 1 + 2);
  EXPECT_TRUE(WaitForFileLine(dir_ + "/access.log", "\"attempts\":3,", absl::Seconds(5))
                  .has_value());
}

TEST_F(GrpcTest, ClientDeadlineEndsTheCallAndFreesTheUpstreamStream) {
  GrpcCallResult r = Call("unary", {"--payload", "sleep:5000", "--timeout", "0.5"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "DEADLINE_EXCEEDED") << r.Describe();
  EXPECT_LT(r.elapsed_ms, 2000) << r.out;
  // The proxy lets go of the upstream stream (grpc-timeout bounds the route,
  // and the client reset its stream) instead of waiting out the 5 s answer.
  std::string page;
  EXPECT_TRUE(WaitFor(
      [&] {
        page = Clusters();
        return ClusterValue(page, "grpc", "active_requests") == 0;
      },
      absl::Seconds(2)))
      << page;
  r = Call("unary", {"--payload", "after"});
  EXPECT_EQ(r.payload, "after") << r.Describe();
}

// Calls ending at their deadline before any answer (an upstream slowdown)
// are reset by the client before their response began; that is no rapid
// reset (CVE-2023-44487). Counted as one, 100 of them ended the connection
// with GOAWAY(ENHANCE_YOUR_CALM) and the healthy stream on it with it.
TEST_F(GrpcTest, CallsEndingAtTheirDeadlineAreNoRapidReset) {
  GrpcCallResult r = Call("server-stream", {"--payload", "30:16:100", "--expiring", "80",
                                            "--expiring-waves", "3", "--expiring-timeout", "0.3"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "OK") << r.Describe();
  EXPECT_EQ(r.responses, 30) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.out, "\"expiring\": {\"DEADLINE_EXCEEDED\": 240}")) << r.out;
  EXPECT_EQ(proxy_->Stat("sluice_downstream_protocol_errors_total"), 0);
}

TEST_F(GrpcTest, APolicysRefusalIsAGrpcStatus) {
  GrpcCallResult r = Call("unary", {"--authority", "keyed.test"});
  EXPECT_EQ(r.code, "UNAUTHENTICATED") << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.details, "no API key found in request")) << r.out << r.err;
  r = Call("unary", {"--authority", "keyed.test", "--metadata", "apikey=grpc-client-key-1"});
  EXPECT_EQ(r.code, "OK") << r.out << r.err;
}

TEST_F(GrpcTest, NoRouteIsUnimplemented) {
  GrpcCallResult r = Call("unary", {"--authority", "unrouted.test"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "UNIMPLEMENTED") << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.details, "no route")) << r.out;
}

TEST_F(GrpcTest, DeadEndpointIsUnavailable) {
  GrpcCallResult r = Call("unary", {"--authority", "dead.test"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "UNAVAILABLE") << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.details, "connect")) << r.out;
  // The gateway's own status is counted and logged as the client got it.
  EXPECT_TRUE(WaitFor(
      [&] {
        return proxy_->Stat("sluice_route_grpc_responses_total{route_table=\"main\",route=\"1/0\","
                            "virtual_host=\"1\",grpc_status=\"14\"}") == 1;
      },
      absl::Seconds(5)))
      << proxy_->Admin("/metrics").second;
  EXPECT_TRUE(
      WaitForFileLine(dir_ + "/access.log", "\"grpc_status\":14,", absl::Seconds(5)).has_value());
}

// An endpoint that takes no connection within connect_timeout is out of
// reach: UNAVAILABLE, which clients may retry, as a refused connect (the
// log keeps the 504). Before: DEADLINE_EXCEEDED, the call's deadline far
// off.
TEST_F(GrpcTest, AConnectTimeoutIsUnavailable) {
  GrpcCallResult r = Call("unary", {"--authority", "mute.test", "--timeout", "10"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "UNAVAILABLE") << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.details, "connect timeout")) << r.out;
  EXPECT_LT(r.elapsed_ms, 5000) << r.out;
  std::optional<std::string> line =
      WaitForFileLine(dir_ + "/access.log", "\"grpc_status\":14,", absl::Seconds(5));
  ASSERT_TRUE(line.has_value());
  EXPECT_TRUE(absl::StrContains(*line, "\"status\":504,")) << *line;
  EXPECT_TRUE(absl::StrContains(*line, "\"response_flag\":\"upstream_timeout\"")) << *line;
}

// gRPC over HTTP/1.1 (as a grpc-web client may speak it): the gateway's own
// error is framed (content-length: 0), so the client has it at once and the
// connection serves the next request. Before: no length, and the client
// waited for the close.
TEST_F(GrpcTest, TheGatewaysGrpcErrorIsFramedOverHttp1) {
  std::string reply = SendRaw(
      absl::StrCat("127.0.0.1:", plain_port_),
      "POST /x HTTP/1.1\r\nHost: dead.test\r\ncontent-type: application/grpc\r\n"
      "content-length: 5\r\n\r\nhello"
      "GET /next HTTP/1.1\r\nHost: unrouted.test\r\nconnection: close\r\n\r\n",
      absl::Seconds(10));
  EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 200")) << reply;
  EXPECT_TRUE(absl::StrContains(reply, "grpc-status: 14")) << reply;
  EXPECT_TRUE(absl::StrContains(reply, "content-length: 0\r\n")) << reply;
  // The pipelined request was answered on the same connection.
  EXPECT_TRUE(absl::StrContains(reply, "HTTP/1.1 404")) << reply;
  EXPECT_TRUE(absl::StrContains(reply, "content-type: application/grpc\r\n")) << reply;
  // A gRPC-Web client gets its own content-type (application/grpc is a
  // protocol error to it).
  for (const auto& [sent, answered] :
       std::vector<std::pair<std::string, std::string>>{
           {"application/grpc-web+proto", "application/grpc-web+proto"},
           {"application/grpc-web", "application/grpc-web+proto"},
           {"application/grpc-web-text", "application/grpc-web-text+proto"},
           // In the request's message format (PROTOCOL-WEB.md); before: +proto.
           {"application/grpc-web+json", "application/grpc-web+json"},
           {"application/grpc-web-text+json; charset=utf-8", "application/grpc-web-text+json"},
           {"application/grpc-web+", "application/grpc-web+proto"}}) {
    reply = SendRaw(absl::StrCat("127.0.0.1:", plain_port_),
                    absl::StrCat("POST /x HTTP/1.1\r\nHost: dead.test\r\ncontent-type: ", sent,
                                 "\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello"),
                    absl::Seconds(10));
    EXPECT_TRUE(absl::StrContains(reply, "grpc-status: 14")) << reply;
    EXPECT_TRUE(absl::StrContains(reply, "content-type: " + answered + "\r\n")) << sent << reply;
  }
}

TEST_F(GrpcTest, RouteTimeoutIsDeadlineExceeded) {
  // No client deadline: the route's 300ms ends the call. The upstream has
  // sent its initial metadata by then (the Echo handlers send it first), so
  // the status has to come in trailers after a started response.
  GrpcCallResult r = Call("unary", {"--authority", "slow.test", "--payload", "sleep:2000"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "DEADLINE_EXCEEDED") << r.Describe();
  EXPECT_LT(r.elapsed_ms, 1500) << r.out;
  // The log says why the gateway ended it (the flag was empty before).
  std::optional<std::string> line =
      WaitForFileLine(dir_ + "/access.log", "\"grpc_status\":4,", absl::Seconds(5));
  ASSERT_TRUE(line.has_value());
  EXPECT_TRUE(absl::StrContains(*line, "\"status\":504,")) << *line;
  EXPECT_TRUE(absl::StrContains(*line, "\"response_flag\":\"upstream_timeout\"")) << *line;
  // Its response had begun: a call that outlives the route timeout is not
  // the endpoint failing (Envoy counts no timeout after the response
  // headers). Before, it counted against outlier detection, and long
  // streams on a route with the default timeout ejected their endpoints.
  const std::string page = Clusters();
  const size_t at = page.find("cluster grpc (");
  ASSERT_NE(at, std::string::npos) << page;
  const std::string block = page.substr(at, page.find("\ncluster ", at + 1) - at);
  EXPECT_TRUE(absl::StrContains(block, " errors=0")) << page;
}

// A call whose body a policy holds (request-validation reads every body)
// still ends at its deadline: the route timeout bounds the whole call.
// Before: the held body waited for the client's last message, and a
// ping-pong bidi call, which sends it only after an answer, hung until the
// client's own deadline.
TEST_F(GrpcTest, AHeldCallEndsAtItsDeadline) {
  GrpcCallResult r = Call("bidi", {"--authority", "held.test", "--timeout", "10"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "DEADLINE_EXCEEDED") << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.details, "did not arrive within the route timeout"))
      << r.Describe();
  EXPECT_LT(r.elapsed_ms, 5000) << r.out;
}

// A media type request-validation refuses (its 415) is INVALID_ARGUMENT to
// a gRPC client, with the reason. Before: UNKNOWN, which says nothing
// (probe).
TEST_F(GrpcTest, ARefusedMediaTypeIsInvalidArgument) {
  GrpcCallResult r = Call("unary", {"--authority", "json-only.test"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "INVALID_ARGUMENT") << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.details, "header content-type: application/grpc is not allowed"))
      << r.Describe();
}

TEST_F(GrpcTest, GrpcHealthCheckDrivesRouting) {
  ASSERT_EQ(Call("unary").code, "OK");
  WriteHealth("sluice.test.Echo=NOT_SERVING\n");
  GrpcCallResult r;
  EXPECT_TRUE(WaitFor(
      [&] {
        r = Call("unary");
        return r.code == "UNAVAILABLE";
      },
      absl::Seconds(10)))
      << r.Describe() << "\n" << Clusters();
  EXPECT_TRUE(absl::StrContains(r.details, "no healthy endpoint")) << r.out;
  std::string page = Clusters();
  EXPECT_TRUE(
      absl::StrContains(page, absl::StrCat("127.0.0.1:", server_.port(), " health=unhealthy")))
      << page;
  EXPECT_TRUE(absl::StrContains(page, "NOT_SERVING")) << page;  // why, for the operator
  EXPECT_GE(proxy_->Stat("sluice_health_check_failures_total{cluster=\"grpc\"}"), 3);

  WriteHealth("sluice.test.Echo=SERVING\n");
  EXPECT_TRUE(WaitFor(
      [&] {
        r = Call("unary", {"--payload", "back"});
        return r.code == "OK";
      },
      absl::Seconds(10)))
      << r.Describe() << "\n" << Clusters();
  EXPECT_EQ(r.payload, "back");
  // The checks were gRPC calls the server counted.
  GrpcCallResult stats = CallUpstream("stats");
  ASSERT_TRUE(stats.parsed) << stats.Describe();
  EXPECT_GE(stats.stats["/grpc.health.v1.Health/Check"], 4) << stats.out;
}

TEST_F(GrpcTest, UnaryAndBidiOverTlsByAlpn) {
  // gRPC clients insist on ALPN h2: these calls work only if the listener
  // negotiated it.
  GrpcCallResult r = CallTls("unary", {"--payload", "secure", "--metadata", "x-test-tls=yes"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "OK") << r.Describe();
  EXPECT_EQ(r.payload, "secure");
  EXPECT_EQ(r.initial_metadata["x-test-tls"], "yes") << r.out;
  EXPECT_EQ(r.initial_metadata["x-seen-authority"], "grpc.test") << r.out;
  EXPECT_EQ(r.trailing_metadata["x-trailer"], "unary") << r.out;
  r = CallTls("bidi", {"--count", "50", "--size", "1024", "--timeout", "10"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.code, "OK") << r.Describe();
  EXPECT_EQ(r.responses, 50);
  EXPECT_TRUE(r.verified) << r.out;
  EXPECT_GE(proxy_->Stat("sluice_downstream_tls_handshakes_total"), 2);
}

TEST_F(GrpcTest, ConcurrentCallsShareFewUpstreamConnections) {
  // 20 client processes at once, overlapping on the proxy.
  constexpr int kCalls = 20;
  int64_t peak = 0;
  std::vector<GrpcCallResult> results = ConcurrentCalls(kCalls, "grpc", {}, &peak);
  for (const GrpcCallResult& r : results) {
    ASSERT_TRUE(r.parsed) << r.Describe();
    EXPECT_EQ(r.code, "OK") << r.Describe();
    EXPECT_EQ(r.responses, 8) << r.out;
    EXPECT_TRUE(r.verified) << r.out;
  }
  // Had they not overlapped, one connection per worker would prove nothing.
  EXPECT_GE(peak, 5);
  int64_t opened = proxy_->Stat(kOpened);
  EXPECT_GE(opened, 1);
  EXPECT_LE(opened, 2 * kWorkers) << proxy_->Admin("/stats").second;
  GrpcCallResult stats = CallUpstream("stats");
  EXPECT_EQ(stats.stats["/sluice.test.Echo/ServerStream"], kCalls) << stats.Describe();
}

TEST_F(GrpcTest, MaxConcurrentStreamsOpensMoreConnections) {
  // At most 2 streams per connection: `peak` calls in flight at once needed
  // at least peak / 2 connections, whichever workers they were on. As the
  // calls end, connections go idle and all but one per worker are closed.
  constexpr int kCalls = 8;
  int64_t peak = 0;
  std::vector<GrpcCallResult> results =
      ConcurrentCalls(kCalls, "narrow", {"--authority", "narrow.test"}, &peak);
  EXPECT_EQ(ProxyErrors(), "");
  for (const GrpcCallResult& r : results) {
    ASSERT_TRUE(r.parsed) << r.Describe();
    EXPECT_EQ(r.code, "OK") << r.Describe();
    EXPECT_TRUE(r.verified) << r.out;
  }
  ASSERT_GE(peak, 4);
  EXPECT_GE(proxy_->Stat("sluice_upstream_connections_opened_total{cluster=\"narrow\"}"),
            (peak + 1) / 2)
      << "peak " << peak << "\n"
      << proxy_->Admin("/stats").second;
  // And the proxy is still there for the next call.
  GrpcCallResult after = Call("unary", {"--authority", "narrow.test"});
  EXPECT_EQ(after.code, "OK") << after.Describe() << "\nproxy log:\n" << proxy_->process().Log() << "\nwait status: " << proxy_->process().Wait(absl::Seconds(1)).value_or(-12345);
}

// An upstream that requires a client certificate, reached without one: the
// gRPC server closes right after the TLS 1.3 handshake, with no alert. The
// call's error says a client certificate may be wanted (before: "upstream
// closed the connection", nothing to go on); with the certificate it works.
TEST(GrpcMtlsUpstreamTest, AnUpstreamWantingAClientCertificateIsSaidToMaybeWantOne) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  const std::string dir = MakeTempDir("grpc-mtls");
  TestCert ca = MakeCa(dir, "ca", "gRPC mTLS Test CA");
  TestCert server_cert = MakeSignedBy(ca, dir, "server", "grpc.test", {"grpc.test"});
  TestCert client_cert = MakeSignedBy(ca, dir, "client", "gateway", {"gateway.test"});
  GrpcServer::Options options;
  options.cert_path = server_cert.cert_path;
  options.key_path = server_cert.key_path;
  options.client_ca_path = ca.cert_path;
  GrpcServer server("mtls", options);
  ASSERT_TRUE(server.ok()) << server.process().Log();
  const int port = PickFreePort();
  auto cluster = [&](const std::string& name, const std::string& client) {
    return absl::StrCat("---\nkind: Cluster\nname: ", name, "\nspec:\n  protocol: HTTP2\n",
                        "  endpoints: [{address: 127.0.0.1, port: ", server.port(), "}]\n",
                        "  tls: {ca: ca, sni: grpc.test", client, "}\n");
  };
  const std::string yaml = absl::StrCat(
      CaSecretYaml("ca", ca), "---\n", CertificateSecretYaml("gateway-cert", client_cert),
      cluster("without", ""), cluster("with", ", client_certificate: gateway-cert"),
      "---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
      "    - domains: [with.test]\n      routes:\n"
      "        - match: {prefix: /}\n          route: {cluster: with}\n"
      "    - domains: ['*']\n      routes:\n"
      "        - match: {prefix: /}\n          route: {cluster: without}\n",
      "---\nkind: Listener\nname: plain\nspec: {address: 127.0.0.1, port: ", port,
      ", route_table: main}\n");
  auto r = cp.Ctl({"apply", "-f", WriteFile(dir, "config.yaml", yaml)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Proxy proxy(cp.address(), "grpc-mtls-proxy");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  const std::string target = absl::StrCat("127.0.0.1:", port);
  GrpcCallResult refused = GrpcCall(target, "unary", {"--payload", "x"});
  ASSERT_TRUE(refused.parsed) << refused.Describe();
  EXPECT_EQ(refused.code, "UNAVAILABLE") << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.details, "does it require a client certificate?"))
      << refused.Describe();
  GrpcCallResult ok = GrpcCall(target, "unary", {"--payload", "y", "--authority", "with.test"});
  ASSERT_TRUE(ok.parsed) << ok.Describe();
  EXPECT_EQ(ok.code, "OK") << ok.Describe();
  EXPECT_EQ(ok.payload, "y");
}

}  // namespace
}  // namespace sluice::testing
