// Metrics, access logs and trace context through real processes: a proxy
// with an access log on its listener, key-auth identifying consumers; the
// log's JSON lines, the Prometheus text checked by promtool, the
// traceparent an upstream receives, and reopening the log on SIGUSR1.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> Lines(const std::string& path) {
  return absl::StrSplit(Read(path), '\n', absl::SkipEmpty());
}

class ObservabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok());
    port_ = PickFreePort();
    std::string yaml = absl::StrCat(
        "kind: Consumer\nname: alice\nspec: {keys: [{key: alice-key-123}]}\n---\n"
        "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n      routes:\n"
        "        - name: keyed\n          match: {prefix: /keyed}\n          route: {cluster: web}\n"
        "          policies: [{name: key-auth, typed_config: {}}]\n"
        "        - name: kept\n          match: {prefix: /kept}\n          route: {cluster: web}\n"
        "          policies: [{name: key-auth, typed_config: {keep_credentials: true}}]\n"
        "        - name: open\n          match: {prefix: /open}\n          route: {cluster: web}\n"
        "        - name: fenced\n          match: {prefix: /fenced}\n          route: {cluster: web}\n"
        "          policies: [{name: ip-restriction, typed_config: {deny: [127.0.0.0/8]}},\n"
        "                     {name: key-auth, typed_config: {}}]\n"
        "        - name: cached\n          match: {prefix: /cached}\n          route: {cluster: web}\n"
        "          policies: [{name: cache, typed_config: {}}]\n"
        "        - name: moved\n          match: {prefix: /moved}\n"
        "          redirect: {path_redirect: /open/moved}\n"
        "        - name: stalls\n          match: {prefix: /stalls}\n"
        "          route: {cluster: web, idle_timeout: 300ms}\n"
        "        - name: pertry\n          match: {prefix: /pertry}\n"
        "          route: {cluster: web, retry_policy: {num_retries: 1, retry_on: [reset], "
        "per_try_timeout: 200ms}}\n"
        "        - name: timed\n          match: {prefix: /timed}\n"
        "          route: {cluster: web, timeout: 300ms}\n"
        "---\nkind: Listener\nname: public\nspec:\n  address: 127.0.0.1\n  port: ", port_,
        "\n  route_table: main\n  access_log: {path: ", log_, "}\n"
        "  http: {trusted_proxy_hops: 1, request_headers_timeout: 1s}\n");
    auto r = cp_.Ctl({"apply", "-f", WriteFile(dir_, "config.yaml", yaml)});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "obs-proxy", 2, "",
                                     std::vector<std::string>{"--report-interval", "200ms"});
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  // The log line of request `id`, waiting for the writer (every 100 ms).
  std::string LogLine(const std::string& path, const std::string& id) {
    std::string found;
    WaitFor(
        [&] {
          for (const std::string& line : Lines(path)) {
            if (absl::StrContains(line, absl::StrCat("\"request_id\":\"", id, "\""))) {
              found = line;
              return true;
            }
          }
          return false;
        },
        absl::Seconds(10));
    return found;
  }

  ControlPlane cp_{"", "info"};
  UpstreamServer upstream_{"web-1"};
  std::string dir_ = MakeTempDir("obs");
  std::string log_ = dir_ + "/access.log";
  std::unique_ptr<Proxy> proxy_;
  int port_ = 0;
};

TEST_F(ObservabilityTest, EveryRequestIsOneJsonLineSayingWhyTheGatewayAnswered) {
  HttpResponse ok = HttpGet(address(), "/keyed/a?apikey=alice-key-123&x=1",
                            {{"x-request-id", "obs-ok"}, {"user-agent", "obs-test/1"}});
  ASSERT_EQ(ok.status, 200) << ok.body;
  HttpResponse denied = HttpGet(address(), "/keyed/a", {{"x-request-id", "obs-401"}});
  ASSERT_EQ(denied.status, 401);
  HttpResponse none = HttpGet(address(), "/nowhere", {{"x-request-id", "obs-404"}});
  ASSERT_EQ(none.status, 404);

  std::string line = LogLine(log_, "obs-ok");
  ASSERT_FALSE(line.empty()) << Read(log_);
  EXPECT_TRUE(absl::StartsWith(line, "{\"time\":\"")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"status\":200,")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"method\":\"GET\"")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"path\":\"/keyed/a?x=1\"")) << line;  // key removed
  EXPECT_FALSE(absl::StrContains(line, "alice-key-123")) << line;
  // A key kept for the upstream (keep_credentials) is not written either
  // (it was: the log held a working key).
  HttpResponse kept = HttpGet(address(), "/kept/a?apikey=alice-key-123&x=1",
                              {{"x-request-id", "obs-kept"}});
  ASSERT_EQ(kept.status, 200) << kept.body;
  EXPECT_TRUE(absl::StrContains(kept.body, "/kept/a?apikey=alice-key-123&x=1")) << kept.body;
  const std::string kept_line = LogLine(log_, "obs-kept");
  EXPECT_TRUE(absl::StrContains(kept_line, "\"path\":\"/kept/a?x=1\"")) << kept_line;
  EXPECT_FALSE(absl::StrContains(kept_line, "alice-key-123")) << kept_line;
  EXPECT_TRUE(absl::StrContains(line, "\"consumer\":\"alice\"")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"route\":\"keyed\",\"cluster\":\"web\"")) << line;
  EXPECT_TRUE(absl::StrContains(line, absl::StrCat("\"endpoint\":\"127.0.0.1:", upstream_.port())))
      << line;
  EXPECT_TRUE(absl::StrContains(line, "\"user_agent\":\"obs-test/1\"")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"\"")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"protocol\":\"HTTP/1.1\"")) << line;
  EXPECT_FALSE(absl::StrContains(line, "\"upstream_duration_ms\":null")) << line;

  // The client gets this exchange's id, never the upstream's own.
  HttpResponse theirs = HttpGet(address(), "/keyed/a?apikey=alice-key-123&rid=upstream-id",
                                {{"x-request-id", "obs-mine"}});
  ASSERT_EQ(theirs.status, 200) << theirs.body;
  EXPECT_EQ(theirs.header("x-request-id"), "obs-mine");
  EXPECT_EQ(theirs.headers.count("x-request-id"), 1u);
  EXPECT_TRUE(absl::StrContains(LogLine(log_, "obs-mine"), "\"status\":200,"));

  line = LogLine(log_, "obs-401");
  EXPECT_TRUE(absl::StrContains(line, "\"status\":401,")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"policy:key-auth\"")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"upstream_duration_ms\":null")) << line;
  // The route's cluster, though the policy answered before any went
  // upstream (it was empty: a grouping by cluster missed its 401s).
  EXPECT_TRUE(absl::StrContains(line, "\"route\":\"keyed\",\"cluster\":\"web\",\"endpoint\":\"\""))
      << line;
  line = LogLine(log_, "obs-404");
  EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"no_route\"")) << line;

  // The path routing saw, on a route with no policies as on one with some
  // (before: the first logged the target as spelled, so a search for
  // /open/~u missed it).
  const std::vector<std::pair<std::string, std::string>> spelled = {
      {"/open/./x/../%7Eu?q=1", "/open/~u?q=1"},
      {"/keyed/./x/../%7Eu?apikey=alice-key-123", "/keyed/~u"}};
  for (const auto& [target, logged] : spelled) {
    const std::string id = absl::StrCat("obs-norm-", logged.substr(1, 4));
    HttpResponse r = HttpGet(address(), target, {{"x-request-id", id}});
    ASSERT_EQ(r.status, 200) << r.body;
    line = LogLine(log_, id);
    EXPECT_TRUE(absl::StrContains(line, absl::StrCat("\"path\":\"", logged, "\""))) << line;
  }

  // What the gateway refuses before any route is chosen is logged and
  // counted too, under the request id the client got.
  const std::string series =
      "sluice_listener_requests_total{listener=\"public\",status_class=\"4xx\"}";
  const int64_t before = proxy_->Stat(series);
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"GET /twice HTTP/1.1\r\nHost: a\r\nHost: b\r\nUser-Agent: obs-test/2\r\n\r\n",
       "\"status\":400,"},
      {"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n", "\"method\":\"GET\""},
      {"GET / HTTP/1.1\r\nHost: a\r\nBig: " + std::string(70000, 'x') + "\r\n\r\n",
       "\"status\":431,"},
      {"GET / HTTP/3.0\r\nHost: a\r\n\r\n", "\"status\":505,"},
      // A smuggling attempt the parser refuses after its request line shows
      // what it asked for (before: method and path empty).
      {"POST /smuggle HTTP/1.1\r\nHost: s.example\r\nUser-Agent: obs-smuggle\r\n"
       "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
       "\"method\":\"POST\",\"authority\":\"s.example\",\"path\":\"/smuggle\""},
      // With the client's trace id (it was empty), refused by the parser or
      // after it.
      {"POST /traced HTTP/1.1\r\nHost: t\r\n"
       "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
       "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
       "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\""},
      {"GET /twice HTTP/1.1\r\nHost: a\r\nHost: b\r\n"
       "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00\r\n\r\n",
       "\"trace_id\":\"0af7651916cd43dd8448eb211c80319c\""},
      // Without one, a made one (32 hex digits), as for any request.
      {"GET /made HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "\"trace_id\":\""},
      // A body that breaks its chunked framing, on a route to the upstream:
      // logged as the 400 the client got, under its id (it was status 0,
      // client_closed, under another id).
      {"POST /open/chunkbad HTTP/1.1\r\nHost: c.example\r\nTransfer-Encoding: chunked\r\n\r\n"
       "5\r\nhelloXX0\r\n\r\n",
       "\"status\":400,"},
      {"POST /open/chunksize HTTP/1.1\r\nHost: c.example\r\nTransfer-Encoding: chunked\r\n\r\n"
       "+5\r\nhello\r\n0\r\n\r\n",
       "\"path\":\"/open/chunksize\""},
      // A bare LF: what the lines before it said (before: all empty).
      {"GET /open/lf HTTP/1.1\r\nHost: lf.example\r\nUser-Agent: obs-lf\r\nX-A: a\n"
       "X-Injected: 1\r\n\r\n",
       "\"method\":\"GET\",\"authority\":\"lf.example\",\"path\":\"/open/lf\""},
  };
  for (const auto& [request, expected] : refused) {
    std::string reply = SendRaw(address(), request);
    size_t at = reply.find("x-request-id: ");
    ASSERT_NE(at, std::string::npos) << reply;
    std::string id = reply.substr(at + 14, reply.find("\r\n", at) - at - 14);
    line = LogLine(log_, id);
    ASSERT_FALSE(line.empty()) << request.substr(0, 40) << "\n" << Read(log_);
    EXPECT_TRUE(absl::StrContains(line, expected)) << line;
    EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"bad_request\"")) << line;
    size_t trace = line.find("\"trace_id\":\"");
    ASSERT_NE(trace, std::string::npos) << line;
    EXPECT_EQ(line.find('"', trace + 12) - trace - 12, 32u) << line;
    // bytes_out is the error body the client got.
    size_t length_at = reply.find("content-length: ");
    ASSERT_NE(length_at, std::string::npos) << reply;
    std::string length = reply.substr(length_at + 16, reply.find("\r\n", length_at) - length_at - 16);
    EXPECT_TRUE(absl::StrContains(line, "\"bytes_out\":" + length + ",")) << line;
  }
  EXPECT_TRUE(absl::StrContains(LogLine(log_, "obs-404"), "no_route"));
  WaitFor([&] { return proxy_->Stat(series) == before + 10; }, absl::Seconds(5));
  EXPECT_EQ(proxy_->Stat(series), before + 10);  // the 505 is a 5xx
  // A head that never ends (its timeout, 1 s here): logged with what it
  // said so far, as nginx logs a 408 (before: method, path and Host empty).
  std::string reply = SendRaw(
      address(), "GET /open/slowhead HTTP/1.1\r\nHost: slow.example\r\nUser-Agent: obs-slow\r\n",
      absl::Seconds(10));
  ASSERT_TRUE(absl::StartsWith(reply, "HTTP/1.1 408")) << reply;
  size_t at = reply.find("x-request-id: ");
  ASSERT_NE(at, std::string::npos) << reply;
  line = LogLine(log_, reply.substr(at + 14, reply.find("\r\n", at) - at - 14));
  EXPECT_TRUE(absl::StrContains(
      line, "\"method\":\"GET\",\"authority\":\"slow.example\",\"path\":\"/open/slowhead\""))
      << line;
  EXPECT_TRUE(absl::StrContains(line, "\"user_agent\":\"obs-slow\"")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"request_timeout\"")) << line;
  // A client gone in the middle of its head: logged with status 0 and what
  // came whole, as nginx and HAProxy log it (before: no line at all).
  const int fd = ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  const std::string head =
      "GET /open/gone HTTP/1.1\r\nHost: gone.example\r\nUser-Agent: obs-gone\r\nX-A: ";
  ASSERT_EQ(send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
  close(fd);  // its FIN comes after the bytes
  std::optional<std::string> gone = WaitForFileLine(log_, "obs-gone", absl::Seconds(5));
  ASSERT_TRUE(gone.has_value()) << Read(log_);
  EXPECT_TRUE(absl::StrContains(
      *gone, "\"method\":\"GET\",\"authority\":\"gone.example\",\"path\":\"/open/gone\""))
      << *gone;
  EXPECT_TRUE(absl::StrContains(*gone, "\"status\":0,")) << *gone;
  EXPECT_TRUE(absl::StrContains(*gone, "\"response_flag\":\"client_closed\"")) << *gone;
}

TEST_F(ObservabilityTest, AKeyInTheQueryIsNotLoggedWhenTheRequestIsRefusedFirst) {
  // Refused before the route's key-auth took the key out of the path: the
  // path is logged without its query (each of these wrote the key in clear:
  // refused by the parser, by the path check, for want of a route, or by a
  // policy that runs before key-auth).
  const std::string key = "alice-key-123";
  // Those answered on a connection that stays open ask for its close:
  // SendRaw reads until then.
  const std::string close = "Connection: close\r\n\r\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"GET /keyed/a?apikey=" + key + "&x=1 HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n",
       "\"path\":\"/keyed/a\""},
      {"GET /keyed/a?apikey=" + key + " HTTP/1.1\r\nHost: a\r\nBig: " +
           std::string(70000, 'x') + "\r\n\r\n",
       "\"path\":\"/keyed/a\""},
      {"GET /keyed/%zz?apikey=" + key + " HTTP/1.1\r\nHost: a\r\n" + close,
       "\"path\":\"/keyed/%zz\""},
      {"GET /nowhere?apikey=" + key + " HTTP/1.1\r\nHost: a\r\n" + close,
       "\"path\":\"/nowhere\""},
      {"GET /fenced/a?apikey=" + key + " HTTP/1.1\r\nHost: a\r\n" + close,
       "\"path\":\"/fenced/a\""},
  };
  for (const auto& [request, expected] : cases) {
    std::string reply = SendRaw(address(), request);
    size_t at = reply.find("x-request-id: ");
    ASSERT_NE(at, std::string::npos) << reply;
    const std::string line =
        LogLine(log_, reply.substr(at + 14, reply.find("\r\n", at) - at - 14));
    ASSERT_FALSE(line.empty()) << request.substr(0, 40) << "\n" << Read(log_);
    EXPECT_TRUE(absl::StrContains(line, expected)) << line;
    EXPECT_FALSE(absl::StrContains(line, key)) << line;
  }
  // A route without such a policy keeps its query, refused or not.
  HttpResponse open = HttpGet(address(), "/open/a?q=1", {{"x-request-id", "obs-open-q"}});
  ASSERT_EQ(open.status, 200) << open.body;
  EXPECT_TRUE(absl::StrContains(LogLine(log_, "obs-open-q"), "\"path\":\"/open/a?q=1\""));
}

TEST_F(ObservabilityTest, ATrustedProxysForwardedForNamesTheClient) {
  // One trusted hop: the rightmost X-Forwarded-For address is the client.
  HttpResponse r = HttpGet(address(), "/open",
                           {{"x-forwarded-for", "198.51.100.7, 203.0.113.9"},
                            {"x-request-id", "obs-xff"}});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-echo-x-forwarded-for"), "198.51.100.7, 203.0.113.9, 127.0.0.1");
  // X-Real-IP is the client address; a client's own is dropped (before, it
  // went upstream as sent).
  EXPECT_EQ(r.header("x-echo-x-real-ip"), "203.0.113.9");
  r = HttpGet(address(), "/open", {{"x-real-ip", "9.9.9.9"}, {"x_real_ip", "9.9.9.9"}});
  EXPECT_EQ(r.header("x-echo-x-real-ip"), "127.0.0.1");
  EXPECT_EQ(r.header("x-echo-x_real_ip"), "");
  // Behind trusted proxies, what they say of the host the client reached
  // goes upstream too.
  r = HttpGet(address(), "/open", {{"x-forwarded-host", "shop.example"},
                                   {"x-forwarded-port", "443"}, {"x-forwarded-ssl", "on"},
                                   {"x-forwarded-prefix", "/shop"},
                                   {"X_Forwarded_Prefix", "/evil"}});
  EXPECT_EQ(r.header("x-echo-x-forwarded-host"), "shop.example");
  EXPECT_EQ(r.header("x-echo-x-forwarded-prefix"), "/shop");
  // Its '_' spelling, which CGI reads as the same field and no cache keys,
  // never goes (as X_Forwarded_Host).
  EXPECT_EQ(r.header("x-echo-x_forwarded_prefix"), "");
  EXPECT_EQ(r.header("x-echo-x-forwarded-port"), "443");
  EXPECT_EQ(r.header("x-echo-x-forwarded-ssl"), "on");
  EXPECT_TRUE(absl::StrContains(LogLine(log_, "obs-xff"),
                                "\"client_ip\":\"203.0.113.9\",\"peer_ip\":\"127.0.0.1\""))
      << LogLine(log_, "obs-xff");
  // The scheme is the one the trusted proxy says (it terminated TLS): it goes
  // upstream and redirects keep it. Before: http, and the redirect went from
  // https to http. A value that is not http or https leaves the connection's.
  r = HttpGet(address(), "/open", {{"x-forwarded-proto", "HTTPS"}});
  EXPECT_EQ(r.header("x-echo-x-forwarded-proto"), "https");
  r = HttpGet(address(), "/moved", {{"x-forwarded-proto", "https"}, {"host", "shop.example"}});
  EXPECT_EQ(r.status, 301);
  EXPECT_EQ(r.header("location"), "https://shop.example/open/moved");
  r = HttpGet(address(), "/open", {{"x-forwarded-proto", "wss"}});
  EXPECT_EQ(r.header("x-echo-x-forwarded-proto"), "http");
  r = HttpGet(address(), "/open", {{"x-forwarded-proto", "https"}, {"x-forwarded-proto", "https"}});
  EXPECT_EQ(r.header("x-echo-x-forwarded-proto"), "http");
  // The client address is read from the right, however long the list.
  std::string many(20000, ',');
  r = HttpGet(address(), "/open", {{"x-forwarded-for", "1.1.1.1" + many + "198.51.100.8"},
                                   {"x-forwarded-for", "203.0.113.10,"},
                                   {"x-request-id", "obs-xff5"}});
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(absl::StrContains(LogLine(log_, "obs-xff5"), "\"client_ip\":\"203.0.113.10\""));
  // Not an address: the peer's.
  r = HttpGet(address(), "/open", {{"x-forwarded-for", "unknown"}, {"x-request-id", "obs-xff2"}});
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(absl::StrContains(LogLine(log_, "obs-xff2"), "\"client_ip\":\"127.0.0.1\""));
  // One spelling per address (it was the text as sent: three rate-limit
  // budgets for one IPv6 address, another for its IPv4-mapped form).
  for (const auto& [sent, id, logged] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"2001:DB8:0:0:0:0:0:7", "obs-xff3", "2001:db8::7"},
           {"::ffff:7.7.7.7", "obs-xff4", "7.7.7.7"}}) {
    r = HttpGet(address(), "/open", {{"x-forwarded-for", sent}, {"x-request-id", id}});
    ASSERT_EQ(r.status, 200);
    EXPECT_TRUE(absl::StrContains(LogLine(log_, id), "\"client_ip\":\"" + logged + "\""))
        << LogLine(log_, id);
  }
}

// A try that ran out of its per-try timeout says so in upstream_failure
// (it was empty: the docs promise why the last failed try did).
TEST_F(ObservabilityTest, APerTryTimeoutIsNamedInUpstreamFailure) {
  HttpResponse r = HttpGet(address(), "/pertry?delay_ms=1000", {{"x-request-id", "obs-pertry"}});
  EXPECT_EQ(r.status, 504) << r.body;
  const std::string line = LogLine(log_, "obs-pertry");
  EXPECT_TRUE(absl::StrContains(line, "\"attempts\":2")) << line;
  EXPECT_TRUE(
      absl::StrContains(line, "\"upstream_failure\":\"no answer within the per-try timeout\""))
      << line;
  // And the route timeout (it was empty).
  r = HttpGet(address(), "/timed?delay_ms=1000", {{"x-request-id", "obs-timed"}});
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_TRUE(absl::StrContains(LogLine(log_, "obs-timed"),
                                "\"upstream_failure\":\"no answer within the route timeout\""))
      << LogLine(log_, "obs-timed");
}

// The client's traceparent goes on as it came: the gateway records no span,
// and a parent id of its own (before: a new one per hop) left the
// upstream's spans with a parent no tracer had. Flags other than sampled
// go as zero (W3C Trace Context 3.2.2.5), and a later version as 00.
TEST_F(ObservabilityTest, TraceContextIsPassedOnWithTheClientsParent) {
  const std::string parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  HttpResponse r = HttpGet(address(), "/open",
                           {{"traceparent", parent}, {"tracestate", "vendor=x"},
                            {"x-request-id", "obs-trace"}});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-echo-traceparent"), parent);
  EXPECT_EQ(r.header("x-echo-tracestate"), "vendor=x");
  for (const auto& [in, out] : std::vector<std::pair<std::string, std::string>>{
           {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
           {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
           {"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-comes",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}) {
    r = HttpGet(address(), "/open", {{"traceparent", in}, {"tracestate", "vendor=x"}});
    EXPECT_EQ(r.header("x-echo-traceparent"), out) << in;
    EXPECT_EQ(r.header("x-echo-tracestate"), "vendor=x") << in;
  }
  EXPECT_TRUE(absl::StrContains(LogLine(log_, "obs-trace"),
                                "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\""));
  // None, an invalid one, or two valid ones (W3C's test_traceparent_duplicated):
  // a new trace, and the client's tracestate, which belongs to its trace,
  // is dropped (test_tracestate_included_traceparent_missing).
  for (const std::string& bad : {std::string(), std::string("00-xyz-00f067aa0ba902b7-01"),
                                 std::string("00-00000000000000000000000000000000-"
                                             "00f067aa0ba902b7-01"),
                                 std::string("two")}) {
    Headers headers = {{"tracestate", "vendor=x"}};
    if (bad == "two") {
      headers.push_back({"traceparent", parent});
      headers.push_back({"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"});
    } else if (!bad.empty()) {
      headers.push_back({"traceparent", bad});
    }
    r = HttpGet(address(), "/open", headers);
    std::string made = r.header("x-echo-traceparent");
    ASSERT_EQ(made.size(), 55u) << bad << " -> " << made;
    EXPECT_TRUE(absl::StartsWith(made, "00-")) << made;
    EXPECT_NE(made.substr(3, 32), "00000000000000000000000000000000");
    EXPECT_NE(made.substr(3, 32), "4bf92f3577b34da6a3ce929d0e0e4736") << bad;
    EXPECT_TRUE(absl::EndsWith(made, "-00")) << made;
    EXPECT_EQ(r.header("x-echo-tracestate"), "") << bad;
  }
}

TEST_F(ObservabilityTest, MetricsHaveHistogramsAndConsumersAndPassPromtool) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(HttpGet(address(), "/keyed", {{"apikey", "alice-key-123"}}).status, 200);
  }
  ASSERT_EQ(HttpGet(address(), "/keyed").status, 401);
  // A request its client abandons (an HTTP/2 stream reset before the
  // answer) is in neither the counter nor the latency histogram.
  CommandResult abandoned = RunCommand(
      {"/usr/bin/curl", "-sS", "--http2-prior-knowledge", "--max-time", "0.5", "-H",
       "apikey: alice-key-123", "-H", "x-request-id: obs-abandoned",
       absl::StrCat("http://", address(), "/keyed?delay_ms=3000")});
  EXPECT_NE(abandoned.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(LogLine(log_, "obs-abandoned"), "\"status\":0,"));
  // One its client leaves after the head (status 200 logged, client_closed):
  // "none" for the consumer too, as for the route. Before: counted 2xx.
  CommandResult left = RunCommand(
      {"/usr/bin/curl", "-sS", "--max-time", "0.5", "-o", "/dev/null", "-H",
       "apikey: alice-key-123", "-H", "x-request-id: obs-left",
       absl::StrCat("http://", address(), "/keyed?chunked=1&gap_ms=1000")});
  EXPECT_NE(left.exit_code, 0);
  ASSERT_TRUE(WaitForFileLine(log_, "obs-left", absl::Seconds(5)));
  EXPECT_TRUE(absl::StrContains(LogLine(log_, "obs-left"), "\"response_flag\":\"client_closed\""))
      << LogLine(log_, "obs-left");
  auto [status, text] = proxy_->Admin("/metrics");
  ASSERT_EQ(status, 200);
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_route_request_duration_seconds_count{route_table=\"main\",route=\"keyed\","
            "virtual_host=\"0\"} 6\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_upstream_first_byte_seconds_count{cluster=\"web\"} 6\n"))  // obs-left's too
      << text;
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_consumer_requests_total{consumer=\"alice\",status_class=\"2xx\"} 5\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_consumer_requests_total{consumer=\"alice\",status_class=\"none\"} 2\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_policy_responses_total{policy=\"key-auth\",status=\"401\"} 1\n"))
      << text;
  // The version, as sluice_control_build_info has it (it read
  // "sluice-proxy 0.1"), and the node id and group: a scrape found by a
  // pod's address names the proxy.
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_build_info{version=\"0.1\",node=\"obs-proxy\",group=\"test\"} 1"))
      << text;
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_listener_requests_total{listener=\"public\",status_class=\"2xx\"} 5\n"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "sluice_config_last_apply_timestamp_seconds ")) << text;
  EXPECT_EQ(proxy_->Admin("/stats").second.substr(0, 20), text.substr(0, 20));  // the alias
  std::string file = WriteFile(dir_, "metrics.txt", text);
  CommandResult check = RunCommand({"/bin/sh", "-c", "promtool check metrics < " + file});
  // promtool's lint wants _total counters and base units: it must find nothing.
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_EQ(check.out + check.err, "") << check.out << check.err;
}

// Body bytes per route, each way (Kong's kong_bandwidth_bytes): the access
// log's bytes_in and bytes_out, summed.
TEST_F(ObservabilityTest, EachRouteCountsItsBodyBytesBothWays) {
  const Headers key = {{"apikey", "alice-key-123"}};
  HttpResponse posted =
      HttpRequest(address(), "POST", "/keyed?size=10", key, std::string(1000, 'b'));
  ASSERT_EQ(posted.status, 200) << posted.body;
  ASSERT_EQ(posted.body.size(), 10u);
  HttpResponse got = HttpGet(address(), "/keyed?size=777", key);
  ASSERT_EQ(got.status, 200);
  ASSERT_EQ(got.body.size(), 777u);
  const std::string labels = "{route_table=\"main\",route=\"keyed\",virtual_host=\"0\"}";
  EXPECT_TRUE(WaitFor(
      [&] { return proxy_->Stat("sluice_route_request_bytes_total" + labels) == 1000 &&
                   proxy_->Stat("sluice_route_response_bytes_total" + labels) == 787; },
      absl::Seconds(5)))
      << proxy_->Admin("/metrics").second;
}

TEST_F(ObservabilityTest, SigusrOneReopensTheLogAfterItWasMoved) {
  ASSERT_EQ(HttpGet(address(), "/open", {{"x-request-id", "before-rotate"}}).status, 200);
  ASSERT_FALSE(LogLine(log_, "before-rotate").empty());
  ASSERT_EQ(std::rename(log_.c_str(), (log_ + ".1").c_str()), 0);
  proxy_->process().Signal(SIGUSR1);
  // The reopen happens at the writer's next pass; requests until then still
  // go to the moved file, so retry until one lands in the new file.
  bool rotated = WaitFor(
      [&] {
        HttpGet(address(), "/open", {{"x-request-id", "after-rotate"}});
        return absl::StrContains(Read(log_), "after-rotate");
      },
      absl::Seconds(10));
  EXPECT_TRUE(rotated) << Read(log_ + ".1");
  EXPECT_TRUE(absl::StrContains(Read(log_ + ".1"), "before-rotate"));
  // SIGHUP does the same (before, it killed the proxy: its default action).
  ASSERT_EQ(std::rename(log_.c_str(), (log_ + ".2").c_str()), 0);
  proxy_->process().Signal(SIGHUP);
  rotated = WaitFor(
      [&] {
        HttpGet(address(), "/open", {{"x-request-id", "after-hup"}});
        return absl::StrContains(Read(log_), "after-hup");
      },
      absl::Seconds(10));
  EXPECT_TRUE(rotated) << proxy_->process().Log();
  EXPECT_TRUE(absl::StrContains(proxy_->process().Log(), "SIGHUP: reopening access logs"));
}

// A log path no listener names any more is closed and its series go, once
// the requests of the version that named it are done. Before: only at the
// next apply, so with none, never.
TEST_F(ObservabilityTest, AnAccessLogNoLongerNamedClosesWithoutAnotherApply) {
  ASSERT_EQ(HttpGet(address(), "/open").status, 200);
  const std::string series = "sluice_access_log_dropped_total{path=\"" + log_ + "\"}";
  ASSERT_TRUE(absl::StrContains(proxy_->Admin("/metrics").second, series));
  std::string yaml = absl::StrCat(
      "kind: Listener\nname: public\nspec:\n  address: 127.0.0.1\n  port: ", port_,
      "\n  route_table: main\n  access_log: {path: ", log_, ".other}\n"
      "  http: {trusted_proxy_hops: 1}\n");
  ASSERT_EQ(cp_.Ctl({"apply", "-f", WriteFile(dir_, "other-log.yaml", yaml)}).exit_code, 0);
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  ASSERT_EQ(HttpGet(address(), "/open").status, 200);
  EXPECT_TRUE(WaitFor([&] { return !absl::StrContains(proxy_->Admin("/metrics").second, series); },
                      absl::Seconds(15)))
      << proxy_->Admin("/metrics").second;
}

TEST_F(ObservabilityTest, TheFleetViewShowsEachProxysTrafficAndTheBusiestRoutes) {
  // Traffic on two routes until a report that covers it reached the control
  // plane (reports come every 200 ms here).
  auto wide = [&] { return cp_.Ctl({"proxies", "-o", "wide"}); };
  bool seen = WaitFor(
      [&] {
        for (int i = 0; i < 20; ++i) HttpGet(address(), "/open");
        HttpGet(address(), "/keyed");  // 401
        std::string out = wide().out;
        return absl::StrContains(out, "obs-proxy") && !absl::StrContains(out, "none") &&
               !absl::StrContains(out, "      0.0 ");
      },
      absl::Seconds(15));
  CommandResult r = wide();
  ASSERT_TRUE(seen) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "RPS")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "P99(ms)")) << r.out;
  // Wide adds to the table's columns (before: it dropped GROUP, PENDING,
  // CONNECTED and the NACK reason).
  for (const char* column : {"GROUP", "PENDING", "CONNECTED", "LAST NACK"}) {
    EXPECT_TRUE(absl::StrContains(r.out, column)) << column << "\n" << r.out;
  }
  // The report's age by the control plane's clock, to the nanosecond (it
  // had whole seconds: a fresh report read "0s", clamped from below zero).
  const std::string json = cp_.Ctl({"proxies", "-o", "json"}).out;
  const std::string key = "\"last_report_age\":\"";
  const size_t age_at = json.find(key);
  ASSERT_NE(age_at, std::string::npos) << json;
  const size_t from = age_at + key.size();
  const std::string age = json.substr(from, json.find('"', from) - from);
  EXPECT_TRUE(absl::StrContains(age, ".")) << age;
  // Reports cover 200 ms each: traffic until one that `top` reads has it.
  CommandResult top;
  const bool top_seen = WaitFor(
      [&] {
        for (int i = 0; i < 20; ++i) HttpGet(address(), "/open");
        top = cp_.Ctl({"top", "--once"});
        return top.exit_code == 0 &&
               absl::StrContains(top.out, "main                 0                open");
      },
      absl::Seconds(15));
  EXPECT_TRUE(top_seen) << top.out << top.err;
  EXPECT_TRUE(absl::StrContains(top.out, "fleet: 1 proxy (1 reporting)")) << top.out;
  // A hung proxy stays listed until the control plane's keepalive gives up
  // (40 s by default); its last report is left out of the fleet's figures
  // once past two intervals (before: counted as reporting all that time).
  proxy_->process().Signal(SIGSTOP);
  std::string last;
  const bool left_out = WaitFor(
      [&] {
        last = cp_.Ctl({"top", "--once"}).out;
        return absl::StrContains(
            last, "fleet: 1 proxy (0 reporting, 1 silent past two report intervals, left out)");
      },
      absl::Seconds(10));
  proxy_->process().Signal(SIGCONT);
  EXPECT_TRUE(left_out) << last;
  EXPECT_TRUE(absl::StrContains(last, " 0.0 rps")) << last;
  EXPECT_TRUE(WaitFor(
      [&] {
        last = cp_.Ctl({"top", "--once"}).out;
        return absl::StrContains(last, "fleet: 1 proxy (1 reporting)");
      },
      absl::Seconds(10)))
      << last;
}

// Routes of one name in two virtual hosts are two routes in the report, and
// its totals count every answer: a 404 for no route too. Before: one route
// overwrote the other (its 503s vanished from the totals), and answers made
// before routing were in no figure.
TEST_F(ObservabilityTest, TheReportKeepsSameNamedRoutesApartAndCountsEveryAnswer) {
  std::string yaml = absl::StrCat(
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
      "    - name: one\n      domains: [one.test]\n      routes:\n"
      "        - name: same\n          match: {prefix: /}\n          route: {cluster: web}\n"
      "    - name: two-with-a-name-longer-than-its-column\n      domains: [two.test]\n"
      "      routes:\n"
      "        - name: same\n          match: {prefix: /}\n          route: {cluster: web}\n");
  ASSERT_EQ(cp_.Ctl({"apply", "-f", WriteFile(dir_, "same.yaml", yaml)}).exit_code, 0);
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  std::string json;
  bool seen = WaitFor(
      [&] {
        for (int i = 0; i < 5; ++i) {
          HttpGet(address(), "/x?status=503", {{"host", "one.test"}});
          HttpGet(address(), "/x", {{"host", "two.test"}});
          HttpGet(address(), "/x", {{"host", "none.test"}});  // 404: no route
        }
        json = cp_.Ctl({"proxies", "-o", "json"}).out;
        return absl::StrContains(json, "\"virtual_host\":\"one\"") &&
               absl::StrContains(json, "\"virtual_host\":\"two-with-a-name-longer-than-its-column\"") &&
               absl::StrContains(json, "\"responses_5xx\"") &&
               absl::StrContains(json, "\"responses_4xx\"");
      },
      absl::Seconds(15));
  EXPECT_TRUE(seen) << json;
  // `top` widens its columns to the longest name: every row's RPS figure
  // ends where the header's RPS does.
  CommandResult top = cp_.Ctl({"top", "--once"});
  ASSERT_EQ(top.exit_code, 0) << top.err;
  std::vector<std::string> lines = absl::StrSplit(top.out, '\n', absl::SkipEmpty());
  size_t header = 0;
  while (header < lines.size() && !absl::StartsWith(lines[header], "ROUTE TABLE")) ++header;
  ASSERT_LT(header + 2, lines.size()) << top.out;
  const size_t rps_end = lines[header].find("RPS") + 3;
  for (size_t i = header + 1; i < lines.size(); ++i) {
    ASSERT_GT(lines[i].size(), rps_end) << top.out;
    EXPECT_NE(lines[i][rps_end - 1], ' ') << top.out;
    EXPECT_EQ(lines[i][rps_end], ' ') << top.out;
  }
}

// A cache answer made from the upstream's 304 (Revalidated) logs how long the
// upstream took: a response came from it. Before: null.
TEST_F(ObservabilityTest, ARevalidatedAnswerLogsTheUpstreamsTime) {
  const std::string path = "/cached/r?cc=max-age=1&etag=v1";
  HttpResponse r;
  ASSERT_TRUE(WaitFor(
      [&] {
        r = HttpGet(address(), path, {{"x-request-id", "obs-reval"}});
        return r.ok() && r.header("x-cache-status") == "Revalidated";
      },
      absl::Seconds(10)))
      << r.status << " " << r.header("x-cache-status");
  // The revalidated one: answered by the cache after a try upstream (the
  // loop's last request; the hits before it name the route's cluster too,
  // with no try).
  std::string line;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const std::string& l : Lines(log_)) {
          if (absl::StrContains(l, "\"request_id\":\"obs-reval\"") &&
              absl::StrContains(l, "\"cluster\":\"web\"") &&
              absl::StrContains(l, "\"attempts\":1,") &&
              absl::StrContains(l, "\"response_flag\":\"policy:cache\"")) {
            line = l;
            return true;
          }
        }
        return false;
      },
      absl::Seconds(10)))
      << Read(log_);
  EXPECT_FALSE(absl::StrContains(line, "\"upstream_duration_ms\":null")) << line;
}

// A response the upstream cut after it began came from upstream: its
// upstream time is logged, to the cut (it was null, as for no response).
TEST_F(ObservabilityTest, ACutResponseLogsItsUpstreamTime) {
  HttpResponse r = HttpGet(address(), "/open/x?midway=1", {{"x-request-id", "cut-1"}});
  EXPECT_FALSE(r.ok());
  const std::string line = LogLine(log_, "cut-1");
  EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"upstream_cut\"")) << line;
  EXPECT_FALSE(absl::StrContains(line, "\"upstream_duration_ms\":null")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"upstream_duration_ms\":")) << line;
}

// A response the upstream stops sending is cut at the route's idle_timeout,
// and the access log says so (its upstream_failure was empty: a stall read
// like a reset).
TEST_F(ObservabilityTest, AResponseCutAtTheIdleTimeoutSaysWhy) {
  HttpResponse r =
      HttpGet(address(), "/stalls/x?chunked=1&gap_ms=5000", {{"x-request-id", "stall-1"}});
  EXPECT_FALSE(r.ok());
  const std::string line = LogLine(log_, "stall-1");
  EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"upstream_cut\"")) << line;
  EXPECT_TRUE(absl::StrContains(
      line, "\"upstream_failure\":\"no bytes moved for 300ms (the route's idle_timeout)\""))
      << line;
}

// A client that takes none of its response for the idle_timeout is cut as
// its own doing: client_stalled, no upstream_failure, no upstream timeout
// counted (before: upstream_cut, "no bytes moved", a timeout of the
// cluster's, which sent an operator to an upstream that had answered).
TEST_F(ObservabilityTest, AClientThatStopsReadingIsCutAsItsOwnDoing) {
  const std::string timeouts = "sluice_upstream_timeouts_total{cluster=\"web\"}";
  const int64_t before = proxy_->Stat(timeouts);
  const int64_t open_before = proxy_->Stat("sluice_downstream_connections_active");
  const int fd = ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  const std::string request =
      "GET /stalls/big?size=64000000 HTTP/1.1\r\nHost: a\r\nx-request-id: stall-reader\r\n\r\n";
  ASSERT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  // Never read: the line comes once the 300 ms idle_timeout cuts it.
  std::optional<std::string> line = WaitForFileLine(log_, "stall-reader", absl::Seconds(20));
  // And its connection goes at once, with what it never took (it was held
  // until the listener's idle timeout, 60 s, for the output to drain).
  EXPECT_TRUE(WaitFor(
      [&] { return proxy_->Stat("sluice_downstream_connections_active") <= open_before; },
      absl::Seconds(5)))
      << proxy_->Stat("sluice_downstream_connections_active");
  close(fd);
  ASSERT_TRUE(line.has_value()) << Read(log_);
  EXPECT_TRUE(absl::StrContains(*line, "\"response_flag\":\"client_stalled\"")) << *line;
  EXPECT_TRUE(absl::StrContains(*line, "\"upstream_failure\":\"\"")) << *line;
  EXPECT_EQ(proxy_->Stat(timeouts), before);
}

// A request still open when the proxy stops at --drain-timeout is logged
// as the gateway's doing (drain_timeout). Before: client_closed, which sent
// an operator looking at the client.
TEST_F(ObservabilityTest, ARequestCutAtTheDrainTimeoutSaysSo) {
  proxy_.reset();
  proxy_ = std::make_unique<Proxy>(cp_.address(), "obs-drain", 1, "",
                                   std::vector<std::string>{"--drain-timeout", "1s"});
  ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
  ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  const int before = upstream_.RequestCount().value_or(0);
  HttpResponse cut;
  std::thread client([&] {
    cut = HttpGet(address(), "/open/x?hang=1", {{"x-request-id", "drain-cut"}},
                  absl::Seconds(20));
  });
  // An HTTP/1.0 client's body is delimited by the close: cut at the drain
  // timeout, it ends with a reset, never a FIN that makes it look whole.
  CommandResult http10;
  std::thread client10([&] {
    http10 = RunCommand({"/usr/bin/curl", "-sS", "-0", "--max-time", "20", "-o", "/dev/null",
                         absl::StrCat("http://", address(), "/open/x?chunked=1&gap_ms=3000")});
  });
  // An HTTP/2 response under way is reset (RST_STREAM) before the
  // connection closes. Before: only the close, after a GOAWAY that had
  // named the stream as taken.
  CommandResult h2;
  std::thread client_h2([&] {
    h2 = RunCommand({"/usr/bin/nghttp", "-nv", "-H", "x-request-id: drain-cut-h2",
                     absl::StrCat("http://", address(), "/open/x?chunked=1&gap_ms=3000")});
  });
  ASSERT_TRUE(WaitFor([&] { return upstream_.RequestCount().value_or(0) > before + 2; },
                      absl::Seconds(10)));
  std::optional<int> exited = proxy_->Stop(absl::Seconds(20));
  client.join();
  client10.join();
  client_h2.join();
  ASSERT_TRUE(exited.has_value());
  EXPECT_TRUE(absl::StrContains(h2.out, "recv RST_STREAM frame"))
      << h2.out;
  EXPECT_TRUE(absl::StrContains(LogLine(log_, "drain-cut-h2"), "\"response_flag\":\"drain_timeout\""))
      << LogLine(log_, "drain-cut-h2");
  // Still waiting for its response head: answered 503 (it was cut).
  EXPECT_EQ(cut.status, 503) << cut.error;
  EXPECT_TRUE(absl::StrContains(cut.body, "the gateway is shutting down")) << cut.body;
  EXPECT_NE(http10.exit_code, 0) << http10.err;
  const std::string line = LogLine(log_, "drain-cut");
  EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"drain_timeout\"")) << line;
}

// An access log past the process's file-size limit (RLIMIT_FSIZE): the
// writes fail with EFBIG and are counted, the proxy serves on. Before:
// SIGXFSZ ended it, with nothing in its log.
TEST(AccessLogFileSizeLimitTest, WritesPastTheLimitAreCountedAndTheProxyLives) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  const std::string dir = MakeTempDir("obs-fsize");
  const int port = PickFreePort();
  const int admin_port = PickFreePort();
  const std::string yaml = absl::StrCat(
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
      "    - domains: ['*']\n      routes:\n"
      "        - match: {prefix: /}\n          direct_response: {status: 200, body: ok}\n"
      "---\nkind: Listener\nname: public\nspec:\n  address: 127.0.0.1\n  port: ", port,
      "\n  route_table: main\n  access_log: {path: ", dir, "/access.log}\n");
  auto r = cp.Ctl({"apply", "-f", WriteFile(dir, "config.yaml", yaml)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // dash counts ulimit -f in 512-byte blocks: 16 KiB.
  Process proxy("/bin/sh",
                {"-c", absl::StrCat("ulimit -f 32; exec ", RunfilePath("dataplane/server/sluice-proxy"),
                                    " --control-plane ", cp.address(),
                                    " --node-id fsize --workers 1 --admin 127.0.0.1:", admin_port,
                                    " --state-dir ", dir, "/state --log-level error")},
                dir + "/proxy.log");
  const std::string admin = absl::StrCat("127.0.0.1:", admin_port);
  ASSERT_TRUE(WaitFor([&] { return HttpGet(admin, "/ready").status == 200; }, absl::Seconds(30)))
      << proxy.Log();
  const std::string errors = "sluice_access_log_write_errors_total";
  auto write_errors = [&] {
    std::string metrics = HttpGet(admin, "/metrics").body;
    for (absl::string_view line : absl::StrSplit(metrics, '\n')) {
      if (absl::StartsWith(line, absl::StrCat(errors, "{"))) {
        int64_t n = 0;
        if (absl::SimpleAtoi(line.substr(line.rfind(' ') + 1), &n)) return n;
      }
    }
    return int64_t{-1};
  };
  HttpConnection client(absl::StrCat("127.0.0.1:", port));
  // About 300 bytes a line: well past 16 KiB, written as they come (the
  // writer flushes every 100 ms).
  for (int i = 0; i < 40 && write_errors() <= 0; ++i) {
    for (int j = 0; j < 20; ++j) ASSERT_EQ(client.Request("GET", "/").status, 200) << proxy.Log();
    absl::SleepFor(absl::Milliseconds(120));
  }
  EXPECT_GT(write_errors(), 0) << HttpGet(admin, "/metrics").body;
  EXPECT_TRUE(proxy.Running()) << proxy.Log();
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port), "/").status, 200);
}

}  // namespace
}  // namespace sluice::testing
