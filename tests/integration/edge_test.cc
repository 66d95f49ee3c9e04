// Edge hardening with real processes: flow control both ways for slow
// clients, clients that never read, and connections that must not outlive
// their deadlines. Each test reproduces a defect found in review.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

// A blocking client socket with a small receive buffer, so that the proxy
// feels how fast it reads.
class RawClient {
 public:
  explicit RawClient(int port, int receive_buffer = 64 * 1024) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RawClient() {
    if (fd_ >= 0) close(fd_);
  }
  bool connected() const { return connected_; }

  bool Send(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  // Sends what the socket takes without blocking; returns the count.
  size_t SendSome(const std::string& bytes) {
    ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    return n > 0 ? static_cast<size_t>(n) : 0;
  }
  // Reads at about `bytes_per_second` until the peer closes or `limit`
  // bytes came; returns the count.
  size_t ReadPaced(double bytes_per_second, size_t limit, absl::Duration deadline) {
    size_t total = 0;
    char buffer[64 * 1024];
    absl::Time end = absl::Now() + deadline;
    absl::Time start = absl::Now();
    while (total < limit && absl::Now() < end) {
      ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      total += static_cast<size_t>(n);
      // Pace the reader: it is a slow client, not a wait for a condition.
      absl::Time due = start + absl::Seconds(static_cast<double>(total) / bytes_per_second);
      if (due > absl::Now()) absl::SleepFor(due - absl::Now());
    }
    return total;
  }
  // One response (head and Content-Length body; none for HEAD) as text, or
  // what came before the connection closed.
  std::string ReadResponse(bool head_request = false) {
    std::string data;
    char buffer[4096];
    size_t end = std::string::npos;
    while ((end = data.find("\r\n\r\n")) == std::string::npos) {
      ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) return data;
      data.append(buffer, static_cast<size_t>(n));
    }
    size_t length = 0;
    size_t at = data.find("content-length: ");
    if (at != std::string::npos && at < end && !head_request) {
      length = std::stoul(data.substr(at + 16, data.find("\r\n", at) - at - 16));
    }
    while (data.size() < end + 4 + length) {
      ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      data.append(buffer, static_cast<size_t>(n));
    }
    return data;
  }
  void ShutdownWrite() { shutdown(fd_, SHUT_WR); }
  // What comes until the peer closes or `timeout` passes; `closed` says
  // which.
  std::string ReadUntilClosed(absl::Duration timeout, bool* closed = nullptr) {
    std::string data;
    absl::Time end = absl::Now() + timeout;
    char buffer[64 * 1024];
    if (closed != nullptr) *closed = false;
    while (absl::Now() < end) {
      pollfd p{fd_, POLLIN, 0};
      int ms = static_cast<int>(absl::ToInt64Milliseconds(end - absl::Now()));
      if (poll(&p, 1, std::max(ms, 1)) <= 0) continue;
      ssize_t n = recv(fd_, buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN)) {
        if (closed != nullptr) *closed = true;
        break;
      }
      if (n > 0) data.append(buffer, static_cast<size_t>(n));
    }
    return data;
  }
  // Whether the peer closed the connection within `timeout` (reading and
  // discarding what comes).
  bool ClosedWithin(absl::Duration timeout) {
    bool closed = false;
    ReadUntilClosed(timeout, &closed);
    return closed;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

// A listening socket on 127.0.0.1 and a free port (into *port); -1 when
// it cannot be made. `receive_buffer` > 0 sets its accepted connections'
// SO_RCVBUF (a small window: a peer that does not read is soon behind).
int ListenOnLoopback(int* port, int receive_buffer = 0) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (receive_buffer > 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
  }
  socklen_t length = sizeof(addr);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(fd, 16) != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

// An upstream that answers every request head with fixed bytes, then
// closes: for responses no well-behaved server sends.
class RawUpstream {
 public:
  explicit RawUpstream(std::string response) : response_(std::move(response)) {
    fd_ = ListenOnLoopback(&port_);
    thread_ = std::thread([this] {
      while (true) {
        int c = accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        std::string head;
        char buffer[4096];
        while (head.find("\r\n\r\n") == std::string::npos) {
          ssize_t n = recv(c, buffer, sizeof(buffer), 0);
          if (n <= 0) break;
          head.append(buffer, static_cast<size_t>(n));
        }
        (void)send(c, response_.data(), response_.size(), MSG_NOSIGNAL);
        shutdown(c, SHUT_WR);
        while (recv(c, buffer, sizeof(buffer), 0) > 0) {
        }
        close(c);
      }
    });
  }
  ~RawUpstream() {
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
  }
  int port() const { return port_; }

 private:
  std::string response_;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

long RssKb(pid_t pid) {
  std::string status = ReadFile(absl::StrCat("/proc/", pid, "/status"));
  size_t at = status.find("VmRSS:");
  if (at == std::string::npos) return -1;
  long kb = 0;
  std::string_view rest = std::string_view(status).substr(at + 6);
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  (void)absl::SimpleAtoi(std::string(rest.substr(0, rest.find(' '))), &kb);
  return kb;
}

class EdgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok()) << upstream_.process().Log();
    port_ = PickFreePort();
    limited_port_ = PickFreePort();
    std::string yaml = absl::StrCat(
        "kind: Cluster\nname: up\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_.port(),
        "}]\n---\nkind: Cluster\nname: up2\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_.port(),
        "}]\n---\nkind: Consumer\nname: slow\nspec: {basic_auth: {username: slow, "
        "password: pw-slow}}\n---\n", RouteTableYaml(true),
        "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ",
        port_, ", route_table: main, http: {idle_timeout: 2s, max_uri_bytes: 300, "
        "max_request_headers: 20, max_request_body_bytes: 100000}}\n"
        "---\nkind: Listener\nname: limited\nspec: {address: 127.0.0.1, port: ", limited_port_,
        ", route_table: main, max_connections: 2, "
        "http: {max_requests_per_connection: 2, max_connection_age: 3s}}\n");
    std::string path = MakeTempDir("edge") + "/config.yaml";
    std::ofstream(path) << yaml;
    auto r = cp_.Ctl({"apply", "-f", path});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "edge-proxy");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  // The route table; `with_two` adds /two/ (cluster up2).
  static std::string RouteTableYaml(bool with_two) {
    return absl::StrCat(
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n      routes:\n"
        "        - match: {path: /local}\n          direct_response: {status: 404, body: "
        "\"nothing here, and a body long enough to fill buffers quickly\"}\n"
        "        - match: {prefix: /admin}\n          direct_response: {status: 403, body: guarded}\n",
        with_two ? "        - match: {prefix: /two/}\n          route: {cluster: up2}\n" : "",
        "        - match: {prefix: /small/}\n          route: {cluster: up, max_request_body_bytes: 10}\n"
        "        - match: {prefix: /idle/}\n          route: {cluster: up, timeout: 2s, "
        "idle_timeout: 1s}\n"
        "        - match: {prefix: /idle0/}\n          route: {cluster: up, timeout: 1s, "
        "idle_timeout: 0s}\n"
        "        - match: {prefix: /held0/}\n          route: {cluster: up, timeout: 1s, "
        "idle_timeout: 0s}\n          policies: [{name: request-validation, typed_config: "
        "{body_schema: '{\"type\": \"object\"}'}}]\n"
        "        - match: {prefix: /pertry/}\n          route: {cluster: up, timeout: 10s, "
        "idle_timeout: 3s, retry_policy: {num_retries: 2, retry_on: [reset], "
        "per_try_timeout: 1s, retry_non_idempotent: true}}\n"
        "        - match: {prefix: /basic/}\n          route: {cluster: up, timeout: 2s, "
        "idle_timeout: 1s}\n          policies: [{name: basic-auth}]\n"
        "        - match: {prefix: /}\n          route: {cluster: up, timeout: 2s, "
        "idle_timeout: 3s}\n");
  }

  // Version 2: a listener on a new port whose every request goes to the
  // upstream on `upstream_port`. Its port, or 0 when that failed.
  // `listener_settings`: more of the listener's spec, e.g. ", access_log: {...}".
  int ListenerTo(int upstream_port, const std::string& route_settings = "",
                 const std::string& listener_settings = "") {
    const int port = PickFreePort();
    std::string yaml = absl::StrCat(
        "kind: Cluster\nname: hints\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_port, "}]\n---\nkind: RouteTable\nname: hints\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n      routes: [{match: {prefix: /}, route: {cluster: hints",
        route_settings, "}}]\n"
        "---\nkind: Listener\nname: hints\nspec: {address: 127.0.0.1, port: ", port,
        ", route_table: hints", listener_settings, "}\n");
    std::string path = MakeTempDir("edge-listener") + "/config.yaml";
    std::ofstream(path) << yaml;
    auto r = cp_.Ctl({"apply", "-f", path});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    if (r.exit_code != 0 || !proxy_->WaitForVersion(2)) return 0;
    return port;
  }

  ControlPlane cp_{"", "info"};
  UpstreamServer upstream_{"edge-up"};
  std::unique_ptr<Proxy> proxy_;
  int port_ = 0;
  int limited_port_ = 0;
};

// A download that takes longer than the route timeout completes while bytes
// move: the route timeout covers the wait for the response head only.
TEST_F(EdgeTest, SlowClientGetsTheWholeDownload) {
  constexpr size_t kSize = 8'000'000;
  RawClient client(port_);
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send(absl::StrCat("GET /big?size=", kSize,
                                       " HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")));
  // 2 MB/s: about 4 s, twice the 2 s route timeout.
  absl::Time start = absl::Now();
  size_t got = client.ReadPaced(2'000'000, kSize + 4096, absl::Seconds(30));
  EXPECT_GT(got, kSize) << "cut after " << absl::Now() - start;
  EXPECT_GT(absl::Now() - start, absl::Seconds(3));  // it really was slow
}

// A client that stops reading mid-download is cut after the route's
// idle_timeout, not held forever (and not cut while it reads).
TEST_F(EdgeTest, StalledDownloadIsCutAfterTheIdleTimeout) {
  RawClient client(port_);
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send("GET /idle/big?size=50000000 HTTP/1.1\r\nHost: edge\r\n\r\n"));
  size_t got = client.ReadPaced(20'000'000, 1'000'000, absl::Seconds(10));
  ASSERT_GE(got, 1'000'000u);
  // Now it reads nothing: once the buffers are full, no byte moves; the
  // 1 s idle timeout cuts the exchange (and HTTP/1 closes the connection).
  // (Watched on the proxy: reading the socket would move bytes again.)
  absl::Time stop = absl::Now();
  EXPECT_TRUE(WaitFor([&] { return proxy_->Stat("sluice_downstream_connections_active") == 0; },
                      absl::Seconds(10)))
      << proxy_->Admin("/stats").second;
  EXPECT_LT(absl::Now() - stop, absl::Seconds(8));
  EXPECT_TRUE(client.ClosedWithin(absl::Seconds(10)));
  // The client's doing, not the upstream's: no upstream timeout counted.
  EXPECT_EQ(proxy_->Stat("sluice_upstream_timeouts_total{cluster=\"up\"}"), 0);
}

// Pipelines GETs of `path` to `port` without reading any answer, for up
// to `deadline` or until `cap` batches of 1000 went; returns the bytes the
// proxy took and (through *grew_kb) how much its RSS grew meanwhile.
size_t PipelineWithoutReading(int port, pid_t pid, const std::string& path, size_t cap,
                              absl::Duration deadline, long* grew_kb) {
  const long before = RssKb(pid);
  RawClient client(port, 4096);
  if (!client.connected() || before <= 0) return SIZE_MAX;
  std::string batch;
  for (int i = 0; i < 1000; ++i) absl::StrAppend(&batch, "GET ", path, " HTTP/1.1\r\nHost: edge\r\n\r\n");
  size_t accepted = 0;
  absl::Time end = absl::Now() + deadline;
  while (absl::Now() < end && accepted < cap * batch.size()) {
    size_t n = client.SendSome(batch);
    accepted += n;
    if (n == 0) {
      pollfd p{-1, 0, 0};
      poll(&p, 0, 10);  // the socket is full: let the proxy run
    }
  }
  *grew_kb = RssKb(pid) - before;
  return accepted;
}

// Pipelined requests answered locally to a client that never reads: the
// proxy stops reading once its output is over the watermark, so memory stays
// bounded however much the client sends. 200k requests would be 40+ MB of
// answers: the proxy stops taking them, so the sends stop being accepted.
TEST_F(EdgeTest, PipelinedLocalRepliesToANonReaderAreBounded) {
  long grew_kb = 0;
  const size_t batch = std::string("GET /local HTTP/1.1\r\nHost: edge\r\n\r\n").size() * 1000;
  size_t accepted = PipelineWithoutReading(port_, proxy_->process().pid(), "/local", 200,
                                           absl::Seconds(3), &grew_kb);
  EXPECT_LT(accepted, 200u * batch) << "the proxy kept reading";
  EXPECT_LT(grew_kb, 30 * 1024) << "RSS grew by " << grew_kb << " KiB";
  // And the proxy still serves others.
  HttpResponse r = HttpGet(absl::StrCat("127.0.0.1:", port_), "/x");
  EXPECT_EQ(r.status, 200) << r.error;
}

// The same with requests that go upstream: the answers come back one by
// one, and reading resumed after each while the kernel still took them, so
// the proxy read whatever the client sent (100 MB of pipelined GETs took
// its RSS to 194 MB). Now what is buffered past the watermark is answered
// before the socket is read again.
TEST_F(EdgeTest, PipelinedProxiedRequestsFromANonReaderAreBounded) {
  long grew_kb = 0;
  const size_t batch = std::string("GET /x HTTP/1.1\r\nHost: edge\r\n\r\n").size() * 1000;
  size_t accepted = PipelineWithoutReading(port_, proxy_->process().pid(), "/x", 2000,
                                           absl::Seconds(5), &grew_kb);  // 64 MB of requests
  EXPECT_LT(accepted, 1000u * batch) << "the proxy kept reading";
  EXPECT_LT(grew_kb, 30 * 1024) << "RSS grew by " << grew_kb << " KiB";
  HttpResponse r = HttpGet(absl::StrCat("127.0.0.1:", port_), "/x");
  EXPECT_EQ(r.status, 200) << r.error;
}

// A connection whose last response is never read (Connection: close) is
// closed within the deadlines (the listener's idle timeout once the
// response is complete and queued in the proxy, the route's idle_timeout
// while it still streams) instead of pinning its descriptor and buffers.
// One answer per request: once the gateway answered a request itself and
// said Connection: close, a malformed body of that request in the same read
// gets no second answer. Before: 404 then 400 on one request (a client
// pairing answers by order would take the 400 for its next request).
TEST_F(EdgeTest, AGatewayAnswerIsTheOnlyAnswerToItsRequest) {
  for (const char* target : {"/local", "/admin"}) {
    RawClient client(port_);
    ASSERT_TRUE(client.Send(absl::StrCat("POST ", target, " HTTP/1.1\r\nHost: edge\r\n"
                                         "Transfer-Encoding: chunked\r\n\r\nzz\r\n")));
    std::string r = client.ReadUntilClosed(absl::Seconds(10));  // bounded
    EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 40")) << r;
    size_t answers = 0;
    for (size_t at = r.find("HTTP/1.1 "); at != std::string::npos; at = r.find("HTTP/1.1 ", at + 1)) {
      ++answers;
    }
    EXPECT_EQ(answers, 1u) << target << ": " << r;
  }
}

TEST_F(EdgeTest, ClosingConnectionHasADeadline) {
  double open_before = proxy_->Stat("sluice_downstream_connections_active");
  RawClient client(port_, 4096);
  ASSERT_TRUE(client.connected());
  // More than the kernel's send buffer takes (tcp_wmem's maximum), so the
  // rest waits in the proxy.
  std::vector<std::string> wmem = absl::StrSplit(ReadFile("/proc/sys/net/ipv4/tcp_wmem"),
                                                 absl::ByAnyChar(" \t\n"), absl::SkipEmpty());
  long wmem_max = 4 << 20;
  if (!wmem.empty()) (void)absl::SimpleAtoi(wmem.back(), &wmem_max);
  ASSERT_TRUE(client.Send(absl::StrCat("GET /big?size=", wmem_max + 512 * 1024,
                                       " HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")));
  EXPECT_TRUE(WaitFor([&] { return proxy_->Stat("sluice_downstream_connections_active") > open_before; },
                      absl::Seconds(5)));
  EXPECT_TRUE(WaitFor(
      [&] { return proxy_->Stat("sluice_downstream_connections_active") <= open_before; },
      absl::Seconds(15)))
      << proxy_->Admin("/stats").second;
}

// An upstream that says more than its framing (bytes past Content-Length, a
// body on a HEAD response) leaves bytes that must never reach the next
// request on a pooled connection.
TEST_F(EdgeTest, BytesPastTheFramingAreNeverPooled) {
  RawClient client(port_);
  ASSERT_TRUE(client.connected());
  for (const char* method : {"GET", "HEAD"}) {
    ASSERT_TRUE(client.Send(absl::StrCat(method, " /first?smuggle=1 HTTP/1.1\r\nHost: edge\r\n\r\n")));
    std::string first = client.ReadResponse(std::string(method) == "HEAD");
    EXPECT_TRUE(absl::StartsWith(first, "HTTP/1.1 200")) << first;
    // The same client connection: the same worker, the same pool.
    ASSERT_TRUE(client.Send("GET /second HTTP/1.1\r\nHost: edge\r\n\r\n"));
    std::string second = client.ReadResponse();
    EXPECT_TRUE(absl::StrContains(second, "GET /second")) << second;
    EXPECT_FALSE(absl::StrContains(second, "smuggled")) << second;
  }
}

// Two clusters with the same endpoint share no pooled connection (each has
// its own breakers, counts and TLS settings).
TEST_F(EdgeTest, ClustersSharingAnEndpointDoNotShareConnections) {
  RawClient client(port_);
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send("GET /a HTTP/1.1\r\nHost: edge\r\n\r\n"));
  EXPECT_TRUE(absl::StrContains(client.ReadResponse(), "GET /a"));
  // up's connection is idle in this worker's pool now; up2 must open its own.
  ASSERT_TRUE(client.Send("GET /two/b HTTP/1.1\r\nHost: edge\r\n\r\n"));
  EXPECT_TRUE(absl::StrContains(client.ReadResponse(), "GET /two/b"));
  EXPECT_EQ(proxy_->Stat("sluice_upstream_connections_opened_total{cluster=\"up2\"}"), 1)
      << proxy_->Admin("/stats").second;
  EXPECT_EQ(proxy_->Stat("sluice_upstream_connections_reused_total{cluster=\"up2\"}"), 0);
  // Each reuses its own.
  ASSERT_TRUE(client.Send("GET /two/c HTTP/1.1\r\nHost: edge\r\n\r\n"));
  EXPECT_TRUE(absl::StrContains(client.ReadResponse(), "GET /two/c"));
  EXPECT_EQ(proxy_->Stat("sluice_upstream_connections_reused_total{cluster=\"up2\"}"), 1);
}

// An absolute-form target's authority is validated, and the request is
// routed and forwarded with that one authority (RFC 9112 3.2.2).
TEST_F(EdgeTest, AbsoluteFormAuthorityIsValidatedAndUsedForBoth) {
  auto send = [&](const std::string& target) {
    RawClient client(port_);
    EXPECT_TRUE(client.Send(absl::StrCat("GET ", target, " HTTP/1.1\r\nHost: other.test\r\n\r\n")));
    return client.ReadResponse();
  };
  std::string r = send("http://edge.test/a");
  EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 200")) << r;
  EXPECT_TRUE(absl::StrContains(r, "x-echo-host: edge.test")) << r;
  r = send("http://edge.test?q=1");
  EXPECT_TRUE(absl::StrContains(r, "GET /?q=1")) << r;
  for (const char* bad : {"http:///a", "http://user@evil.test/a", "http://:80/a", "ftp://edge.test/a",
                          "http://edge.test:8x/a", "http://[::1/a"}) {
    r = send(bad);
    EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 400")) << bad << "\n" << r;
  }
}

// A listener's max_connections: connections past it are closed at accept
// and counted; once one closes, a new one is served.
TEST_F(EdgeTest, ListenerConnectionLimit) {
  std::string limited = absl::StrCat("127.0.0.1:", limited_port_);
  auto a = std::make_unique<RawClient>(limited_port_);
  auto b = std::make_unique<RawClient>(limited_port_);
  ASSERT_TRUE(a->connected() && b->connected());
  ASSERT_TRUE(a->Send("GET /a HTTP/1.1\r\nHost: edge\r\n\r\n"));
  ASSERT_TRUE(b->Send("GET /b HTTP/1.1\r\nHost: edge\r\n\r\n"));
  EXPECT_TRUE(absl::StrContains(a->ReadResponse(), "GET /a"));
  EXPECT_TRUE(absl::StrContains(b->ReadResponse(), "GET /b"));
  RawClient c(limited_port_);
  EXPECT_TRUE(c.ClosedWithin(absl::Seconds(5)));
  EXPECT_EQ(proxy_->Stat("sluice_downstream_connections_rejected_total{reason=\"listener_limit\"}"),
            1);
  // The other listener is not limited by this one.
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port_), "/x").status, 200);
  a.reset();
  EXPECT_TRUE(WaitFor([&] { return HttpGet(limited, "/again").status == 200; }, absl::Seconds(5)));
}

// CPU seconds (user + system) the process has used.
double CpuSeconds(pid_t pid) {
  std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  std::vector<std::string> fields = absl::StrSplit(stat.substr(stat.rfind(')') + 2), ' ');
  // After the command: state is field 3, utime 14 and stime 15 (1-based).
  long utime = 0, stime = 0;
  if (fields.size() < 13) return -1;
  (void)absl::SimpleAtoi(fields[11], &utime);
  (void)absl::SimpleAtoi(fields[12], &stime);
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Out of descriptors: accepting pauses (the proxy does not spin on a
// connection it cannot take); once descriptors free up, new connections
// are served.
TEST_F(EdgeTest, AcceptBacksOffWhenDescriptorsRunOut) {
  pid_t pid = proxy_->process().pid();
  std::string limits = ReadFile(absl::StrCat("/proc/", pid, "/limits"));
  std::vector<std::string> open_files = absl::StrSplit(
      limits.substr(limits.find("Max open files")), absl::ByAnyChar(" \n"), absl::SkipEmpty());
  ASSERT_GE(open_files.size(), 5u) << limits;
  std::string original = absl::StrCat(open_files[3], ":", open_files[4]);
  int used = 0;
  for (const auto& entry : std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fd"))) {
    (void)entry;
    ++used;
  }
  ASSERT_GT(used, 0);
  auto r = RunCommand({"/usr/bin/prlimit", absl::StrCat("--pid=", pid),
                       absl::StrCat("--nofile=", used + 4, ":", open_files[4])},
                      {}, absl::Seconds(10));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 20; ++i) {
    held.push_back(std::make_unique<RawClient>(port_));
    ASSERT_TRUE(held.back()->connected());  // the kernel's backlog takes them
  }
  // Paused, not spinning: with connections it cannot accept queued, a busy
  // loop would burn a core; the backoff leaves it nearly idle. (A
  // measurement window, not a wait for a condition.)
  absl::SleepFor(absl::Milliseconds(300));
  double cpu_before = CpuSeconds(pid);
  absl::SleepFor(absl::Seconds(2));
  double cpu_used = CpuSeconds(pid) - cpu_before;
  EXPECT_LT(cpu_used, 0.5) << "the proxy spun on accept";
  // Free descriptors: restore the limit and drop the held connections.
  r = RunCommand({"/usr/bin/prlimit", absl::StrCat("--pid=", pid), "--nofile=" + original}, {},
                 absl::Seconds(10));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  held.clear();
  EXPECT_TRUE(WaitFor(
      [&] { return HttpGet(absl::StrCat("127.0.0.1:", port_), "/back").status == 200; },
      absl::Seconds(10)));
  EXPECT_GE(proxy_->Stat("sluice_downstream_accept_errors_total"), 1);
}

// The path is normalised before routing and forwarded as routed: tricks
// that dodge a route for /admin reach it.
TEST_F(EdgeTest, PathsAreNormalisedBeforeRouting) {
  std::string listener = absl::StrCat("127.0.0.1:", port_);
  for (const char* path : {"/a/../admin", "/./admin", "/%61dmin", "/x/%2e%2e/admin/", "/../admin"}) {
    HttpResponse r = HttpGet(listener, path);
    EXPECT_EQ(r.status, 403) << path << ": " << r.body;
  }
  HttpResponse r = HttpGet(listener, "/x/./y/../z?q=/../%2e");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(absl::StrContains(r.body, "GET /x/z?q=/../%2e")) << r.body;  // query untouched
  EXPECT_EQ(HttpGet(listener, "/bad%zz").status, 400);
  EXPECT_EQ(HttpGet(listener, "/nul%00").status, 400);
  EXPECT_EQ(HttpGet(listener, "/admin%0A").status, 400);  // "$" matches before "\n" upstream
}

// A path an upstream may read as another route's (nginx merges "//" and
// decodes %2F before resolving dot segments; IIS reads '\\' as '/'; Tomcat
// drops ";parameters" first) is
// refused when that reading routes elsewhere, and forwarded as sent when it
// routes the same. Before: "//admin", "/%2Fadmin", "/x/..%2Fadmin" and
// "/\\admin" went to the catch-all route and reached an nginx upstream as
// /admin, past the route guarding it.
TEST_F(EdgeTest, PathsAnUpstreamMayReadAsAnotherRouteAreRefused) {
  const std::string listener = absl::StrCat("127.0.0.1:", port_);
  for (const char* path : {"//admin", "///admin/x", "/%2Fadmin", "/x/..%2Fadmin", "/x/..%2fadmin",
                           "/public/..%2F..%2Fadmin", "/\\admin", "/x/..%5Cadmin", "/x/..//admin",
                           "/x/..;/admin", "/x;p/..;/..;/admin",
                           // nginx merges slashes before it resolves dots.
                           "/x//..%2Fadmin", "/x/%2F..%2Fadmin", "/x;//..%2Fadmin",
                           "/x//..;/admin", "/x\\/..%2Fadmin",
                           // Tomcat drops ";%2Fx" whole: "//admin".
                           "/;%2Fx/admin",
                           // Node's new URL() and java.net.URI read a leading
                           // "//" as a host: "/admin" (before: the catch-all).
                           "//x/admin", "//edge/admin/users?x=1", "/\\x/admin", "//x:1/admin",
                           "//x@y/admin", "//x\\admin",
                           // WHATWG skips every slash before the host.
                           "///x/admin", "////x/admin", "/\\/x/admin", "//\\x/admin",
                           "/\\\\x/admin"}) {
    const std::string out =
        SendRaw(listener, absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: edge\r\n"
                                       "Connection: close\r\n\r\n"));
    EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 400")) << path << ": " << out;
    EXPECT_TRUE(absl::StrContains(out, "send the path plainly")) << path << ": " << out;
  }
  // A dot segment only some upstreams see is refused whatever the routes
  // (before: these reached nginx's /admin, /internal/status or /secret/1:
  // "//admin/..;x" is nginx's "/admin/..;x", under location /admin).
  for (const char* path : {"/x/..%2Fy", "/x/..;/y", "//admin/..;x", "/%2Fadmin/..;x",
                           "//admin\\..", "/internal%2F..;x%2F..%2Fstatus", "/y/..;%2Fx/admin",
                           "/q%2Fr/..;/admin", "/x/.;p/y"}) {
    const std::string out =
        SendRaw(listener, absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: edge\r\n"
                                       "Connection: close\r\n\r\n"));
    EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 400")) << path << ": " << out;
    EXPECT_TRUE(absl::StrContains(out, "has a dot segment some upstreams see")) << path << ": "
                                                                               << out;
  }
  // The same route either way, and no dot segment: forwarded as sent.
  for (const char* path : {"/files//a", "/files/a%2Fb", "/files/a%5Cb", "/files/a;v=1",
                           "/x/..y;/z", "/img/a;b.png", "/search;jsessionid=abc",
                           "//x/files/a", "//x?/admin"}) {
    HttpResponse r = HttpGet(listener, path);
    EXPECT_EQ(r.status, 200) << path << ": " << r.body;
    EXPECT_EQ(r.body, absl::StrCat("edge-up GET ", path, "\n")) << path;
  }
  // What normalising makes meet is checked too: with merge_slashes,
  // "/x//..;/admin" goes upstream as "/x/..;/admin", Tomcat's "/admin".
  const int strict = PickFreePort();
  const std::string yaml = absl::StrCat(
      "kind: Listener\nname: strict\nspec: {address: 127.0.0.1, port: ", strict,
      ", route_table: main, http: {path_normalization: {merge_slashes: true, "
      "escaped_slashes: REJECT_REQUEST, backslashes: REJECT_BACKSLASH}}}\n");
  const std::string file = MakeTempDir("edge-strict") + "/config.yaml";
  std::ofstream(file) << yaml;
  auto applied = cp_.Ctl({"apply", "-f", file});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  const std::string out = SendRaw(absl::StrCat("127.0.0.1:", strict),
                                  "GET /x//..;/admin HTTP/1.1\r\nHost: edge\r\n"
                                  "Connection: close\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(out, "has a dot segment some upstreams see")) << out;
}

// Limits a client can hit, each with its status.
TEST_F(EdgeTest, RequestLimitsAnswer414And431And413) {
  std::string listener = absl::StrCat("127.0.0.1:", port_);
  EXPECT_EQ(HttpGet(listener, "/" + std::string(400, 'a')).status, 414);
  // A request line longer than the whole head limit (61440) is a 414 too,
  // not a 431 (RFC 9112 3), and the connection closes.
  {
    RawClient client(port_);
    ASSERT_TRUE(client.connected());
    client.Send("GET /" + std::string(70000, 'a') + " HTTP/1.1\r\nHost: edge\r\n\r\n");
    std::string reply = client.ReadResponse();
    EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 414")) << reply.substr(0, 200);
  }
  // One whose method alone is: longer than any method implemented, 501
  // (RFC 9112 3).
  {
    RawClient client(port_);
    ASSERT_TRUE(client.connected());
    client.Send(std::string(70000, 'G') + " / HTTP/1.1\r\nHost: edge\r\n\r\n");
    std::string reply = client.ReadResponse();
    EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 501")) << reply.substr(0, 200);
    EXPECT_TRUE(absl::StrContains(
        reply, "a method longer than the listener's http.max_request_headers_bytes"))
        << reply;
  }
  // A client still sending an oversized head reads the 414, 431 or 501: the
  // connection closes lingering, as after an unread body. Before: closed
  // at once, the kernel reset it under the rest of the head (EPIPE).
  const std::pair<const char*, const char*> shapes[] = {
      {"'GET /' + 'a' * 3000000", "414 431"},
      {"'GET / HTTP/1.1\\r\\nx-big: ' + 'b' * 3000000", "414 431"},
      {"'G' * 3000000", "501"}};
  for (const auto& [shape, statuses] : shapes) {
    const std::string script = absl::StrCat(
        "import socket\n"
        "s = socket.create_connection(('127.0.0.1', ", port_, "))\n"
        "data = (", shape, ").encode()\n"
        "for i in range(0, len(data), 16384):\n"
        "    s.sendall(data[i:i + 16384])\n"
        "s.shutdown(socket.SHUT_WR)\n"
        "s.settimeout(10)\n"
        "print(s.recv(12).decode())\n");
    CommandResult sent = RunCommand({"/usr/bin/python3", "-c", script});
    EXPECT_EQ(sent.exit_code, 0) << shape << ": " << sent.err;
    ASSERT_TRUE(absl::StartsWith(sent.out, "HTTP/1.1 ")) << shape << ": " << sent.out;
    const std::string status(absl::StripAsciiWhitespace(sent.out.substr(9)));
    EXPECT_TRUE(status.size() == 3 && absl::StrContains(statuses, status))
        << shape << ": " << sent.out;
  }
  // A Host an upstream would read as another host than the gateway did.
  for (const char* host : {"edge:1:2", "edge:abc", "", "edge:65536", "edge:99999999999999999999"}) {
    RawClient client(port_);
    ASSERT_TRUE(client.connected());
    client.Send(absl::StrCat("GET /x HTTP/1.1\r\nHost: ", host, "\r\n\r\n"));
    std::string reply = client.ReadResponse();
    EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 400")) << host << ": " << reply.substr(0, 200);
  }
  std::vector<std::pair<std::string, std::string>> many;
  for (int i = 0; i < 25; ++i) many.push_back({absl::StrCat("x-h", i), "v"});
  EXPECT_EQ(HttpGet(listener, "/x", many).status, 431);
  // The count, named as such (it read "request header section too large",
  // as the byte limit does); Host counts, and HTTP/2's :authority counts as
  // the Host it stands for (an h2 request had one field more).
  {
    std::string head = "GET /x HTTP/1.1\r\nHost: edge\r\n";
    for (int i = 0; i < 20; ++i) absl::StrAppend(&head, "x-h", i, ": v\r\n");
    RawClient client(port_);
    ASSERT_TRUE(client.connected());
    client.Send(head + "\r\n");
    const std::string reply = client.ReadResponse();
    EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 431")) << reply;
    EXPECT_TRUE(absl::StrContains(
        reply, "more than 20 header fields (the listener's http.max_request_headers)"))
        << reply;
  }
  for (const auto& [fields, status] : {std::pair<int, std::string>{17, "200"}, {18, "431"}}) {
    // curl sends user-agent and accept: 2 + `fields` + :authority.
    std::vector<std::string> args = {"/usr/bin/curl", "-sS", "--max-time", "10",
                                     "--http2-prior-knowledge", "-o", "/dev/null",
                                     "-w", "%{http_code}"};
    for (int i = 0; i < fields; ++i) {
      args.push_back("-H");
      args.push_back(absl::StrCat("x-h", i, ": v"));
    }
    args.push_back(absl::StrCat("http://", listener, "/x"));
    EXPECT_EQ(RunCommand(args).out, status) << fields << " fields";
  }
  EXPECT_EQ(HttpRequest(listener, "POST", "/x", {}, std::string(200000, 'b')).status, 413);
  EXPECT_EQ(HttpRequest(listener, "POST", "/x", {}, std::string(50000, 'b')).status, 200);
  EXPECT_EQ(HttpRequest(listener, "POST", "/small/x", {}, std::string(50, 'b')).status, 413);
  // Whatever the route does with it: a direct response too (as nginx checks
  // client_max_body_size before its return). It answered 404 and read on.
  EXPECT_EQ(HttpRequest(listener, "POST", "/local", {}, std::string(200000, 'b')).status, 413);
  // No declared length: cut when it grows past the limit.
  RawClient client(port_);
  ASSERT_TRUE(client.connected());
  std::string chunked = "POST /x HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 20; ++i) absl::StrAppend(&chunked, "2000\r\n", std::string(0x2000, 'c'), "\r\n");
  client.Send(chunked);  // may fail part way: the proxy closes once it answered
  std::string r = client.ReadResponse();
  EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 413")) << r;
  // A chunk declared past the limit: 413 at its size line, with a few of
  // its bytes sent (it waited for the rest, to the idle timeout).
  RawClient declared(port_);
  ASSERT_TRUE(declared.connected());
  declared.Send("POST /x HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n"
                "10\r\n0123456789abcdef\r\nfffffffff\r\nabc");
  r = declared.ReadResponse();
  EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 413")) << r;
  EXPECT_TRUE(absl::StrContains(r, "request body over the limit of")) << r;
}

// max_requests_per_connection and max_connection_age end connections
// gracefully.
TEST_F(EdgeTest, ConnectionsEndAfterTheirRequestsOrAge) {
  RawClient client(limited_port_);
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send("GET /1 HTTP/1.1\r\nHost: edge\r\n\r\n"));
  std::string first = client.ReadResponse();
  EXPECT_FALSE(absl::StrContains(first, "connection: close")) << first;
  ASSERT_TRUE(client.Send("GET /2 HTTP/1.1\r\nHost: edge\r\n\r\n"));
  std::string second = client.ReadResponse();
  EXPECT_TRUE(absl::StrContains(second, "connection: close")) << second;
  EXPECT_TRUE(client.ClosedWithin(absl::Seconds(5)));

  RawClient old(limited_port_);
  ASSERT_TRUE(old.connected());
  ASSERT_TRUE(old.Send("GET /3 HTTP/1.1\r\nHost: edge\r\n\r\n"));
  EXPECT_TRUE(absl::StrContains(old.ReadResponse(), "GET /3"));
  absl::Time start = absl::Now();
  EXPECT_TRUE(old.ClosedWithin(absl::Seconds(10)));  // 3 s of age, then a 1 s grace
  EXPECT_GE(absl::Now() - start, absl::Seconds(1));
}

// A listener's connection rules (limits taken when a connection is
// accepted) changed live drain its open connections, so the new rules
// reach every client soon: the next request on an old connection is
// answered with Connection: close. Before: old connections kept the old
// rules for as long as they lived. An idle one is not closed after the
// drain's 1 s grace (a client reusing it then raced the close, and one
// that does not check its pooled connections failed about one request in
// 50): it keeps its idle timeout.
TEST_F(EdgeTest, ChangedConnectionRulesDrainTheListenersConnections) {
  RawClient client(port_);
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send("GET /a HTTP/1.1\r\nHost: edge\r\n\r\n"));
  std::string first = client.ReadResponse();
  ASSERT_TRUE(absl::StrContains(first, "GET /a")) << first;
  EXPECT_FALSE(absl::StrContains(first, "connection: close")) << first;
  std::string path = MakeTempDir("edge-rules") + "/listener.yaml";
  std::ofstream(path) << "kind: Listener\nname: public\nspec: {address: 127.0.0.1, port: "
                      << port_
                      << ", route_table: main, http: {idle_timeout: 2s, max_uri_bytes: 300, "
                         "max_request_headers: 21, max_request_body_bytes: 100000, "
                         "max_requests_per_connection: 100}}\n";
  auto r = cp_.Ctl({"apply", "-f", path});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  // Past the 1 s grace an idle connection of a stopping proxy gets.
  absl::SleepFor(absl::Milliseconds(1500));
  ASSERT_TRUE(client.Send("GET /b HTTP/1.1\r\nHost: edge\r\n\r\n"));
  std::string second = client.ReadResponse();
  EXPECT_TRUE(absl::StrContains(second, "GET /b")) << second;
  EXPECT_TRUE(absl::StrContains(second, "connection: close")) << second;
  EXPECT_TRUE(client.ClosedWithin(absl::Seconds(5)));
}

// A listener that goes (or moves, or changes its TLS rules) drains its
// connections: a response still under way --drain-timeout later is cut, as
// at a SIGTERM drain's deadline. Before: it ran to its end, however long
// (a server-sent event stream, for good).
TEST_F(EdgeTest, AResponseOnARemovedListenerEndsAtTheDrainTimeout) {
  proxy_.reset();
  proxy_ = std::make_unique<Proxy>(cp_.address(), "edge-drain-proxy", 1, "",
                                   std::vector<std::string>{"--drain-timeout", "1s"});
  ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
  ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  RawClient client(port_);
  ASSERT_TRUE(client.connected());
  // Four chunks 2.5 s apart (under the route's 3 s idle_timeout): 7.5 s.
  ASSERT_TRUE(client.Send("GET /long?chunked=1&gap_ms=2500 HTTP/1.1\r\nHost: edge\r\n\r\n"));
  bool closed = false;
  std::string got = client.ReadUntilClosed(absl::Milliseconds(500), &closed);
  ASSERT_TRUE(absl::StartsWith(got, "HTTP/1.1 200")) << got;
  ASSERT_FALSE(closed);
  auto r = cp_.Ctl({"delete", "listener", "public"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  absl::StrAppend(&got, client.ReadUntilClosed(absl::Seconds(4), &closed));
  EXPECT_TRUE(closed) << got;
  EXPECT_FALSE(absl::StrContains(got, "\r\n0\r\n")) << got;  // cut, not ended
}

// The route timeout is the upstream's time to answer: it starts once the
// request is in. An upload slower than it (route /idle/: timeout 2s,
// idle_timeout 1s) that keeps moving is answered; one that stalls gets 408
// at the idle timeout, and neither counts against the endpoint. Before: 504
// at the route timeout, counted as an upstream timeout and fed to outlier
// detection, so a few slow clients ejected healthy endpoints.
TEST_F(EdgeTest, AnUploadIsTheClientsTimeNotTheUpstreams) {
  const std::string timeouts = "sluice_upstream_timeouts_total{cluster=\"up\"}";
  const int64_t before = proxy_->Stat(timeouts);
  {
    RawClient client(port_);
    ASSERT_TRUE(client.Send("POST /idle/slow HTTP/1.1\r\nHost: edge\r\n"
                            "Content-Length: 30\r\n\r\n"));
    const absl::Time start = absl::Now();
    for (int i = 0; i < 6; ++i) {
      ASSERT_TRUE(client.Send("piece"));
      // A slow client, not a wait for a condition: 0.5 s between pieces
      // (under the 1 s idle timeout), 2.5 s in all (over the 2 s timeout).
      if (i < 5) absl::SleepFor(absl::Milliseconds(500));
    }
    EXPECT_GT(absl::Now() - start, absl::Seconds(2));
    std::string r = client.ReadResponse();
    EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 200")) << r;
    EXPECT_TRUE(absl::StrContains(r, "body-bytes=30")) << r;
  }
  {
    RawClient client(port_);
    ASSERT_TRUE(client.Send("POST /idle/stall HTTP/1.1\r\nHost: edge\r\n"
                            "Content-Length: 10\r\n\r\nab"));
    std::string r = client.ReadUntilClosed(absl::Seconds(10));  // bounded: no hang if it regresses
    EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 408")) << r;
    EXPECT_TRUE(absl::StrContains(r, "the request body stalled for 1s (the route's idle_timeout)"))
        << r;
  }
  // Nor does a try's own timeout (per_try_timeout 1s) run while the body
  // comes, nor a route timer a policy's pause started (basic-auth's first
  // password check): both cut this upload before.
  for (const std::string& target : {std::string("/pertry/slow"), std::string("/basic/slow")}) {
    RawClient client(port_);
    ASSERT_TRUE(client.Send("POST " + target + " HTTP/1.1\r\nHost: edge\r\n"
                            "Authorization: Basic c2xvdzpwdy1zbG93\r\n"  // slow:pw-slow
                            "Content-Length: 30\r\n\r\n"));
    for (int i = 0; i < 6; ++i) {
      ASSERT_TRUE(client.Send("piece")) << target;
      if (i < 5) absl::SleepFor(absl::Milliseconds(500));  // a slow client
    }
    std::string r = client.ReadResponse();
    EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 200")) << target << ": " << r;
    EXPECT_TRUE(absl::StrContains(r, "body-bytes=30")) << target << ": " << r;
  }
  EXPECT_EQ(proxy_->Stat(timeouts), before);
  {
    // idle_timeout 0s (no limit on a streamed response): the route's
    // timeout bounds a stalled upload instead, still as the client's.
    RawClient client(port_);
    ASSERT_TRUE(client.Send("POST /idle0/stall HTTP/1.1\r\nHost: edge\r\n"
                            "Content-Length: 10\r\n\r\nab"));
    std::string r = client.ReadUntilClosed(absl::Seconds(10));
    EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 408")) << r;
    EXPECT_TRUE(absl::StrContains(r, "(the route's timeout; its idle_timeout is 0s)")) << r;
  }
  {
    // The same for a body a policy holds whole (request-validation): it
    // was held, unbounded, for as long as the client kept the connection.
    RawClient client(port_);
    ASSERT_TRUE(client.Send("POST /held0/stall HTTP/1.1\r\nHost: edge\r\n"
                            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\""));
    std::string r = client.ReadUntilClosed(absl::Seconds(10));
    EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 408")) << r;
  }
  EXPECT_EQ(proxy_->Stat(timeouts), before);
  // The route timeout still bounds an upstream that does not answer.
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port_), "/idle/x?hang=1").status, 504);
  EXPECT_EQ(proxy_->Stat(timeouts), before + 1);
}

// A route with idle_timeout 0s (a streamed response without limit) whose
// upstream answers while the client still uploads: the bound the upload had
// (the route's timeout) does not carry into the response. Before: the
// response was cut at the route's timeout, and charged to the upstream.
TEST_F(EdgeTest, AnEarlyStreamedAnswerOnARouteWithoutIdleTimeoutIsNotCut) {
  int upstream_port = 0;
  const int listen_fd = ListenOnLoopback(&upstream_port);
  ASSERT_GE(listen_fd, 0);
  // The upstream answers at once and streams 8 chunks 250 ms apart (2 s,
  // past the route's 1 s timeout), reading the body meanwhile.
  std::thread upstream([listen_fd] {
    int c = accept(listen_fd, nullptr, nullptr);
    if (c < 0) return;
    const std::string head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    (void)send(c, head.data(), head.size(), MSG_NOSIGNAL);
    char buffer[4096];
    for (int i = 0; i < 8; ++i) {
      const std::string chunk = "2\r\nok\r\n";
      (void)send(c, chunk.data(), chunk.size(), MSG_NOSIGNAL);
      const absl::Time until = absl::Now() + absl::Milliseconds(250);
      while (absl::Now() < until) {  // paced: a streaming origin, not a wait for a condition
        pollfd p{c, POLLIN, 0};
        if (poll(&p, 1, 20) > 0 && recv(c, buffer, sizeof(buffer), 0) <= 0) break;
      }
    }
    (void)send(c, "0\r\n\r\n", 5, MSG_NOSIGNAL);
    while (recv(c, buffer, sizeof(buffer), 0) > 0) {
    }
    close(c);
  });
  const int port = ListenerTo(upstream_port, ", timeout: 1s, idle_timeout: 0s");
  ASSERT_NE(port, 0);
  RawClient client(port);
  ASSERT_TRUE(client.Send("POST /up HTTP/1.1\r\nHost: edge\r\nContent-Length: 8\r\n\r\na"));
  std::string reply;
  for (int i = 0; i < 7; ++i) {  // a slow client: one byte every 300 ms
    reply += client.ReadUntilClosed(absl::Milliseconds(300));
    ASSERT_TRUE(client.Send("b")) << reply;
  }
  bool closed = false;
  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (reply.find("\r\n0\r\n\r\n") == std::string::npos && !closed && absl::Now() < until) {
    reply += client.ReadUntilClosed(absl::Milliseconds(100), &closed);
  }
  EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 200")) << reply;
  EXPECT_TRUE(absl::StrContains(reply, "\r\n0\r\n\r\n")) << reply;  // the whole response
  EXPECT_EQ(proxy_->Stat("sluice_upstream_timeouts_total{cluster=\"hints\"}"), 0);
  upstream.join();
  close(listen_fd);
}

// An upstream that takes the request head and then no body bytes: the
// client is not read while the upstream is behind, so the stall is the
// upstream's: 504, counted and charged. Before: 408, blamed on the client.
TEST_F(EdgeTest, AnUpstreamThatStopsReadingTheBodyIsTheUpstreamsStall) {
  int upstream_port = 0;
  const int listen_fd = ListenOnLoopback(&upstream_port, /*receive_buffer=*/4096);
  ASSERT_GE(listen_fd, 0);
  const std::string log = MakeTempDir("edge-log") + "/access.log";
  const int port = ListenerTo(upstream_port, ", timeout: 5s, idle_timeout: 1s",
                              absl::StrCat(", access_log: {path: ", log, "}"));
  ASSERT_NE(port, 0);
  RawClient client(port);
  ASSERT_TRUE(client.Send("POST /up HTTP/1.1\r\nHost: edge\r\nContent-Length: 50000000\r\n\r\n"));
  // The client sends as fast as it may: what stalls is the upstream.
  const std::string chunk(64 * 1024, 'x');
  const absl::Time until = absl::Now() + absl::Seconds(5);
  std::string reply;
  bool closed = false;
  while (absl::Now() < until && !closed) {
    client.SendSome(chunk);
    reply += client.ReadUntilClosed(absl::Milliseconds(20), &closed);
  }
  EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 504")) << reply;
  EXPECT_TRUE(absl::StrContains(reply, "the upstream took no request body bytes for 1s")) << reply;
  EXPECT_EQ(proxy_->Stat("sluice_upstream_timeouts_total{cluster=\"hints\"}"), 1);
  // The access log says why, as the 504 does (it was empty).
  EXPECT_TRUE(WaitForFileLine(log,
                              "\"upstream_failure\":\"the upstream took no request body bytes "
                              "for 1s\"",
                              absl::Seconds(5))
                  .has_value())
      << ReadFile(log);
  close(listen_fd);
}

// A removed cluster's metrics and state are freed once no version in use
// has it: /stats follows the config in force.
TEST_F(EdgeTest, RemovedClustersLeaveStats) {
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port_), "/two/x").status, 200);
  EXPECT_NE(proxy_->Admin("/stats").second.find("cluster=\"up2\""), std::string::npos);
  std::string dir = MakeTempDir("edge-remove");
  std::ofstream(dir + "/routes.yaml") << RouteTableYaml(false);
  auto r = cp_.Ctl({"apply", "-f", dir + "/routes.yaml"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = cp_.Ctl({"delete", "cluster", "up2"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy_->WaitForVersion(3)) << proxy_->process().Log();
  // Any later version frees what the earlier ones held; the metrics go
  // from /stats within the prune interval (5 s) after that.
  std::ofstream(dir + "/cluster.yaml")
      << "kind: Cluster\nname: other\nspec:\n  endpoints: [{address: 127.0.0.1, port: "
      << upstream_.port() << "}]\n";
  r = cp_.Ctl({"apply", "-f", dir + "/cluster.yaml"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy_->WaitForVersion(4)) << proxy_->process().Log();
  std::string stats;
  EXPECT_TRUE(WaitFor(
      [&] {
        stats = proxy_->Admin("/stats").second;
        return stats.find("cluster=\"up2\"") == std::string::npos;
      },
      absl::Seconds(15)))
      << stats;
  EXPECT_NE(stats.find("cluster=\"up\""), std::string::npos);  // kept, with its counts
  EXPECT_GE(proxy_->Stat("sluice_upstream_requests_total{cluster=\"other\"}"), 0);
}

// RFC 9112 odds and ends a hostile suite checks: a client that half-closes
// after its request still gets the answer; OPTIONS *; version handling.
TEST_F(EdgeTest, HalfCloseAsteriskAndVersions) {
  {
    RawClient client(port_);
    ASSERT_TRUE(client.Send("GET /half HTTP/1.1\r\nHost: edge\r\n\r\n"));
    client.ShutdownWrite();
    std::string r = client.ReadResponse();
    EXPECT_TRUE(absl::StrContains(r, "GET /half")) << r;
    EXPECT_TRUE(client.ClosedWithin(absl::Seconds(5)));
  }
  // A response made at once (a direct response), the FIN read in the same
  // turn: it was lost (the close cancelled the scheduled write).
  for (int i = 0; i < 20; ++i) {
    RawClient client(port_);
    ASSERT_TRUE(client.Send("GET /local HTTP/1.1\r\nHost: edge\r\n\r\n"));
    client.ShutdownWrite();
    std::string r = client.ReadResponse();
    EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 404")) << i << ": " << r;
    EXPECT_TRUE(client.ClosedWithin(absl::Seconds(5)));
  }
  // Pipelined requests, then the FIN: every one is answered (only the first
  // was, then the connection closed).
  {
    RawClient client(port_);
    ASSERT_TRUE(client.Send("GET /half/1 HTTP/1.1\r\nHost: edge\r\n\r\n"
                            "GET /local HTTP/1.1\r\nHost: edge\r\n\r\n"
                            "GET /half/3 HTTP/1.1\r\nHost: edge\r\n\r\n"));
    client.ShutdownWrite();
    // Everything until the close (responses may share a read).
    bool closed = false;
    std::string all = client.ReadUntilClosed(absl::Seconds(5), &closed);
    EXPECT_TRUE(closed);
    const size_t first = all.find("GET /half/1");
    const size_t second = all.find("HTTP/1.1 404");
    const size_t third = all.find("GET /half/3");
    EXPECT_NE(first, std::string::npos) << all;
    EXPECT_NE(second, std::string::npos) << all;
    EXPECT_NE(third, std::string::npos) << all;
    EXPECT_LT(first, second) << all;
    EXPECT_LT(second, third) << all;
  }
  // Half a request, then the FIN: closed, nothing answered.
  {
    RawClient client(port_);
    ASSERT_TRUE(client.Send("GET /half HTTP/1.1\r\nHost: ed"));
    client.ShutdownWrite();
    EXPECT_TRUE(client.ClosedWithin(absl::Seconds(5)));
  }
  auto send = [&](const std::string& bytes) {
    RawClient client(port_);
    EXPECT_TRUE(client.Send(bytes));
    return client.ReadResponse();
  };
  std::string r = send("OPTIONS * HTTP/1.1\r\nHost: edge\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 200")) << r;
  EXPECT_TRUE(absl::StrContains(r, "allow: ")) << r;
  // RFC 9112 3.2.4: the absolute form of an empty path is OPTIONS * too (it
  // went upstream as "OPTIONS /").
  r = send("OPTIONS http://edge HTTP/1.1\r\nHost: edge\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 200")) << r;
  EXPECT_TRUE(absl::StrContains(r, "allow: ")) << r;
  EXPECT_FALSE(absl::StrContains(r, "OPTIONS /")) << r;
  r = send("OPTIONS http://edge/ HTTP/1.1\r\nHost: edge\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(r, "OPTIONS /")) << r;
  // Max-Forwards (RFC 9110 7.6.2): 0 is answered here, more goes on one less.
  r = send("OPTIONS /mf HTTP/1.1\r\nHost: edge\r\nMax-Forwards: 0\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 200")) << r;
  EXPECT_TRUE(absl::StrContains(r, "allow: ")) << r;
  EXPECT_FALSE(absl::StrContains(r, "OPTIONS /mf")) << r;
  r = send("TRACE /mf HTTP/1.1\r\nHost: edge\r\nMax-Forwards: 0\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 405")) << r;
  r = send("OPTIONS /mf HTTP/1.1\r\nHost: edge\r\nMax-Forwards: 3\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(r, "OPTIONS /mf")) << r;
  EXPECT_TRUE(absl::StrContains(r, "x-echo-max-forwards: 2")) << r;
  // One field: the first decides and only it goes on (a second, 0, made the
  // upstream read another count than the gateway did).
  r = send("TRACE /mf HTTP/1.1\r\nHost: edge\r\nMax-Forwards: 5\r\nMax-Forwards: 0\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(r, "x-echo-max-forwards: 4\r\n")) << r;
  // Not 1*DIGIT: no count the gateway read, none goes on.
  r = send("OPTIONS /mf HTTP/1.1\r\nHost: edge\r\nMax-Forwards: 0, 3\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(r, "OPTIONS /mf")) << r;
  EXPECT_FALSE(absl::StrContains(r, "x-echo-max-forwards")) << r;
  // "+0" is not 1*DIGIT either: not answered here as a zero.
  r = send("OPTIONS /mf HTTP/1.1\r\nHost: edge\r\nMax-Forwards: +0\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(r, "OPTIONS /mf")) << r;
  EXPECT_FALSE(absl::StrContains(r, "x-echo-max-forwards")) << r;
  // A count past 64 bits goes on as the largest they hold, not dropped.
  r = send("OPTIONS /mf HTTP/1.1\r\nHost: edge\r\nMax-Forwards: 99999999999999999999999\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(r, "x-echo-max-forwards: 18446744073709551614\r\n")) << r;
  r = send("GET /mf HTTP/1.1\r\nHost: edge\r\nMax-Forwards: 0\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(r, "x-echo-max-forwards: 0")) << r;  // only OPTIONS, TRACE
  EXPECT_TRUE(absl::StartsWith(send("GET * HTTP/1.1\r\nHost: edge\r\n\r\n"), "HTTP/1.1 400"));
  // A higher minor version is served as HTTP/1.1; another major is 505.
  r = send("GET /v HTTP/1.2\r\nHost: edge\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 200")) << r;
  EXPECT_TRUE(absl::StartsWith(send("GET /v HTTP/2.0\r\nHost: edge\r\n\r\n"), "HTTP/1.1 505"));
  EXPECT_TRUE(absl::StartsWith(send("GET /v HTTP/1.x\r\nHost: edge\r\n\r\n"), "HTTP/1.1 400"));
}

// Response framing is declared again from what was parsed: a Connection
// header cannot strip it, a list-valued Content-Length goes out as one
// value, and conflicting ones are a 502. An upstream that closes before a
// whole head says what it sent (it was "closed the connection" for bytes
// that are no HTTP at all, too).
TEST_F(EdgeTest, ResponseFramingIsRedeclared) {
  RawUpstream garbage("hello world, no status line");
  RawUpstream half_head("HTTP/1.1 200 OK\r\nContent-Le");
  RawUpstream stripped(
      "HTTP/1.1 200 OK\r\nConnection: content-length, close\r\nContent-Length: 5\r\n\r\nhello");
  RawUpstream listed("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\nhello");
  RawUpstream conflicting(
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
  int raw_port = PickFreePort();
  std::string yaml;
  for (auto [name, port] : {std::pair<const char*, int>{"stripped", stripped.port()},
                            {"listed", listed.port()},
                            {"conflicting", conflicting.port()},
                            {"garbage", garbage.port()},
                            {"halfhead", half_head.port()}}) {
    absl::StrAppend(&yaml, "kind: Cluster\nname: ", name,
                    "\nspec:\n  endpoints: [{address: 127.0.0.1, port: ", port, "}]\n---\n");
  }
  absl::StrAppend(&yaml,
                  "kind: RouteTable\nname: raw\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
                  "      routes:\n"
                  "        - match: {prefix: /stripped}\n          route: {cluster: stripped}\n"
                  "        - match: {prefix: /listed}\n          route: {cluster: listed}\n"
                  "        - match: {prefix: /conflicting}\n          route: {cluster: conflicting}\n"
                  "        - match: {prefix: /garbage}\n          route: {cluster: garbage}\n"
                  "        - match: {prefix: /halfhead}\n          route: {cluster: halfhead}\n"
                  "---\nkind: Listener\nname: raw\nspec: {address: 127.0.0.1, port: ",
                  raw_port, ", route_table: raw}\n");
  std::string dir = MakeTempDir("edge-raw");
  std::ofstream(dir + "/raw.yaml") << yaml;
  auto r = cp_.Ctl({"apply", "-f", dir + "/raw.yaml"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  auto get = [&](const std::string& path) {
    RawClient client(raw_port);
    EXPECT_TRUE(client.Send(absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: edge\r\n\r\n")));
    return client.ReadResponse();
  };
  std::string out = get("/stripped");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 200")) << out;
  EXPECT_TRUE(absl::StrContains(out, "content-length: 5\r\n")) << out;
  EXPECT_TRUE(absl::EndsWith(out, "\r\n\r\nhello")) << out;
  out = get("/listed");
  EXPECT_TRUE(absl::StrContains(out, "content-length: 5\r\n")) << out;
  EXPECT_FALSE(absl::StrContains(out, "5, 5")) << out;
  out = get("/conflicting");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 502")) << out;
  out = get("/garbage");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 502")) << out;
  EXPECT_TRUE(absl::StrContains(out, "upstream sent 27 bytes that are no HTTP response (no status "
                                     "line), then closed the connection"))
      << out;
  out = get("/halfhead");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 502")) << out;
  EXPECT_TRUE(absl::StrContains(out, "upstream closed the connection in the middle of the "
                                     "response head (after 27 bytes)"))
      << out;
}

// The normalisation redirect names this host (a relative "//evil.example/x"
// would name another one), and a prefix_rewrite or a policy's path rewrite
// that makes a dot segment is refused (nginx's off-by-slash: /api../admin to
// /../admin).
TEST_F(EdgeTest, NormalisationRedirectsAreAbsoluteAndRewritesMakeNoDotSegments) {
  int port = PickFreePort();
  std::string yaml = absl::StrCat(
      "kind: RouteTable\nname: rewrite\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n"
      "        - match: {prefix: /api/admin}\n          direct_response: {status: 403}\n"
      "        - match: {prefix: /api}\n          route: {cluster: up, prefix_rewrite: /}\n"
      "        - match: {prefix: /dd}\n          route: {cluster: up}\n"
      "          policies: [{name: request-transformer, typed_config: {path: {regex: "
      "'/dd([^/]*)(.*)', rewrite: '/api/\\1\\2'}}}]\n"
      "---\nkind: Listener\nname: redirecting\nspec: {address: 127.0.0.1, port: ", port,
      ", route_table: rewrite, http: {path_normalization: {escaped_slashes: "
      "UNESCAPE_AND_REDIRECT}}}\n");
  std::string path = MakeTempDir("edge-redirect") + "/config.yaml";
  std::ofstream(path) << yaml;
  auto r = cp_.Ctl({"apply", "-f", path});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  auto send = [&](const std::string& target) {
    RawClient client(port);
    EXPECT_TRUE(client.Send(absl::StrCat("GET ", target, " HTTP/1.1\r\nHost: edge:", port,
                                         "\r\n\r\n")));
    return client.ReadResponse();
  };
  std::string out = send("/%2fevil.example/x");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 307")) << out;
  EXPECT_TRUE(absl::StrContains(out, absl::StrCat("location: http://edge:", port,
                                                  "//evil.example/x\r\n"))) << out;
  out = send("/%5cevil.example");
  EXPECT_TRUE(absl::StrContains(out, absl::StrCat("location: http://edge:", port,
                                                  "/%5Cevil.example\r\n"))) << out;
  // Without a Host (HTTP/1.0) the Location is relative: "/.//evil..." is
  // this host's path "//evil.example/x" (before: "/evil.example/x", another
  // resource).
  out = SendRaw(absl::StrCat("127.0.0.1:", port), "GET /%2fevil.example/x HTTP/1.0\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 307")) << out;
  EXPECT_TRUE(absl::StrContains(out, "location: /.//evil.example/x\r\n")) << out;
  out = send("/api/x?q=1");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 200")) << out;
  EXPECT_TRUE(absl::StrContains(out, "GET //x?q=1")) << out;
  for (const char* sneaky : {"/api../admin", "/api%2e%2e/admin", "/api./admin", "/api.."}) {
    out = send(sneaky);
    EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 400")) << sneaky << ": " << out;
    EXPECT_TRUE(absl::StrContains(out, "prefix_rewrite has a dot segment")) << out;
  }
  EXPECT_TRUE(absl::StartsWith(send("/api..x/y"), "HTTP/1.1 200"));  // "..x" is a name
  // The same from request-transformer's path rewrite. Before: forwarded.
  for (const char* sneaky : {"/dd../admin", "/dd.", "/dd./x"}) {
    out = send(sneaky);
    EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 400")) << sneaky << ": " << out;
    EXPECT_TRUE(absl::StrContains(out, "policy's rewrite has a dot segment")) << out;
  }
  out = send("/ddx/y");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 200")) << out;
  EXPECT_TRUE(absl::StrContains(out, "GET /api/x/y")) << out;
}

// A request asking to Upgrade that the gateway answers itself (a direct
// response, OPTIONS *, a 400) switches nothing: the next request on the
// connection is served. Before: the parser stayed paused for a tunnel and
// the next request got 408 at the head timeout.
TEST_F(EdgeTest, AnUpgradeTheGatewayAnswersItselfLeavesTheConnectionServing) {
  const std::string upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
  for (const std::string& first :
       {absl::StrCat("GET /admin HTTP/1.1\r\nHost: a\r\n", upgrade, "\r\n"),
        absl::StrCat("OPTIONS * HTTP/1.1\r\nHost: a\r\n", upgrade, "\r\n"),
        absl::StrCat("GET /a%zz HTTP/1.1\r\nHost: a\r\n", upgrade, "\r\n")}) {
    const absl::Time start = absl::Now();
    std::string out = SendRaw(absl::StrCat("127.0.0.1:", port_),
                              first + "GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                              absl::Seconds(8));
    EXPECT_TRUE(absl::StrContains(out, "GET /after")) << first << "\n" << out;  // echoed
    EXPECT_FALSE(absl::StrContains(out, " 408 ")) << out;
    EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << first;
  }
}

// A chunked request's trailers are bounded by max_request_headers_bytes, as
// the head is (and HTTP/2 trailers are). Before: a fixed 16 KiB, so 20 KB of
// trailers got 431 under the default 60 KiB.
TEST_F(EdgeTest, RequestTrailersAreBoundedLikeTheHead) {
  auto send = [&](size_t trailer_bytes) {
    return SendRaw(absl::StrCat("127.0.0.1:", port_),
                   absl::StrCat("POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                                "Connection: close\r\n\r\n3\r\nabc\r\n0\r\nx-big: ",
                                std::string(trailer_bytes, 'a'), "\r\n\r\n"),
                   absl::Seconds(8));
  };
  std::string out = send(20000);
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 200")) << out.substr(0, 300);
  out = send(62000);
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 431")) << out.substr(0, 300);
}

// Informational responses (103 Early Hints) go to the client before the
// final one, as RFC 9110 15.2 asks of a proxy; never to an HTTP/1.0 client.
// Before: dropped.
TEST_F(EdgeTest, EarlyHintsReachTheClient) {
  RawUpstream hints(
      "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: x-secret\r\n"
      "x-secret: 1\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
  const int port = ListenerTo(hints.port());
  ASSERT_GT(port, 0);
  auto send = [&](const std::string& version) {
    return SendRaw(absl::StrCat("127.0.0.1:", port),
                   absl::StrCat("GET /h ", version, "\r\nHost: edge\r\nConnection: close\r\n\r\n"));
  };
  std::string out = send("HTTP/1.1");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"))
      << out;
  EXPECT_TRUE(absl::StrContains(out, "\r\n\r\nHTTP/1.1 200 OK\r\n")) << out;
  EXPECT_FALSE(absl::StrContains(out, "x-secret")) << out;  // named in its Connection
  out = send("HTTP/1.0");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 200")) << out;
  EXPECT_FALSE(absl::StrContains(out, "103")) << out;
  // HTTP/2: a HEADERS frame with :status 103 before the final one.
  CommandResult h2 = RunCommand({"/usr/bin/nghttp", "-v", absl::StrCat("http://127.0.0.1:", port, "/h2")});
  EXPECT_TRUE(absl::StrContains(h2.out, ":status: 103")) << h2.out << h2.err;
  EXPECT_TRUE(absl::StrContains(h2.out, ":status: 200")) << h2.out;
  EXPECT_LT(h2.out.find(":status: 103"), h2.out.find(":status: 200")) << h2.out;
}

// RFC 9110 6.6.1: a Date that the upstream's Connection names is this
// hop's, not forwarded, and the response gets the gateway's. Before: it
// went out with no Date at all.
TEST_F(EdgeTest, ADateThatConnectionNamesIsReplaced) {
  RawUpstream upstream(
      "HTTP/1.1 200 OK\r\nConnection: date, close\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\n"
      "Content-Length: 2\r\n\r\nok");
  const int port = ListenerTo(upstream.port());
  ASSERT_GT(port, 0);
  std::string out = SendRaw(absl::StrCat("127.0.0.1:", port),
                            "GET /d HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 200")) << out;
  EXPECT_FALSE(absl::StrContains(out, "2001")) << out;
  EXPECT_TRUE(absl::StrContains(out, "\r\ndate: ")) << out;
}

// RFC 9110 7.6.1: a trailer field the head's Connection names is this
// hop's, as a header field of that name is. Before: the header's was
// dropped and the trailer's forwarded (HTTP/1.1 and HTTP/2 clients).
TEST_F(EdgeTest, ATrailerThatConnectionNamesIsDropped) {
  RawUpstream upstream(
      "HTTP/1.1 200 OK\r\nConnection: x-hop, close\r\nTransfer-Encoding: chunked\r\n\r\n"
      "2\r\nok\r\n0\r\nX-Hop: secret\r\nX-Kept: 1\r\n\r\n");
  const int port = ListenerTo(upstream.port());
  ASSERT_GT(port, 0);
  std::string out = SendRaw(absl::StrCat("127.0.0.1:", port),
                            "GET /t HTTP/1.1\r\nHost: edge\r\nTE: trailers\r\n"
                            "Connection: TE, close\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 200")) << out;
  EXPECT_TRUE(absl::StrContains(out, "\r\n0\r\nx-kept: 1\r\n\r\n") ||
              absl::StrContains(out, "\r\n0\r\nX-Kept: 1\r\n\r\n"))
      << out;
  EXPECT_FALSE(absl::StrContains(absl::AsciiStrToLower(out), "secret")) << out;
  CommandResult h2 = RunCommand(
      {"/usr/bin/nghttp", "-v", absl::StrCat("http://127.0.0.1:", port, "/t2")});
  EXPECT_TRUE(absl::StrContains(h2.out, "x-kept: 1")) << h2.out << h2.err;
  EXPECT_FALSE(absl::StrContains(h2.out, "secret")) << h2.out;
}

// A response made before a small request body is read (a policy's 401,
// a 403) keeps the connection: the body is read and dropped and the next
// request is served. It ended the connection, so a throttled client paid a
// new connection (and TLS handshake) per 429. A large or chunked body, or
// one awaiting 100-continue, still ends it.
TEST_F(EdgeTest, AnEarlyAnswerToASmallBodyKeepsTheConnection) {
  const std::string address = absl::StrCat("127.0.0.1:", port_);
  std::string out = SendRaw(
      address,
      "POST /admin HTTP/1.1\r\nHost: edge\r\nContent-Length: 11\r\n\r\nhello world"
      "GET /local HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 403")) << out;
  EXPECT_FALSE(absl::StrContains(out.substr(0, out.find("\r\n\r\n")), "connection: close"))
      << out;
  EXPECT_TRUE(absl::StrContains(out, "guardedHTTP/1.1 404")) << out;  // the next one, answered
  // Over 64 KiB declared: answered, then closed; what follows is not served.
  out = SendRaw(address, absl::StrCat("POST /admin HTTP/1.1\r\nHost: edge\r\nContent-Length: ",
                                      70 * 1024, "\r\n\r\n", std::string(70 * 1024, 'x'),
                                      "GET /local HTTP/1.1\r\nHost: edge\r\n\r\n"));
  EXPECT_TRUE(absl::StartsWith(out, "HTTP/1.1 403")) << out.substr(0, 300);
  EXPECT_TRUE(absl::StrContains(out, "connection: close")) << out.substr(0, 300);
  EXPECT_FALSE(absl::StrContains(out, "HTTP/1.1 404")) << out.substr(0, 300);
}

// An upstream that sends 1xx without end is an invalid response past 32 of
// them (502, its connection closed); the client got 8. Before: the rest were
// dropped and the proxy kept reading until the route timeout (4.9 s of CPU
// against a slow peer).
TEST_F(EdgeTest, EndlessInterimResponsesAreA502) {
  std::string flood;
  for (int i = 0; i < 40; ++i) flood += "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n";
  RawUpstream hints(flood + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
  const int port = ListenerTo(hints.port());
  ASSERT_GT(port, 0);
  std::string out = SendRaw(absl::StrCat("127.0.0.1:", port),
                            "GET /h HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n");
  size_t hints_seen = 0;
  for (size_t at = out.find("HTTP/1.1 103"); at != std::string::npos;
       at = out.find("HTTP/1.1 103", at + 1)) {
    ++hints_seen;
  }
  EXPECT_EQ(hints_seen, 8u) << out;
  EXPECT_TRUE(absl::StrContains(out, "\r\n\r\nHTTP/1.1 502 Bad Gateway\r\n")) << out;
  EXPECT_TRUE(absl::StrContains(out, "more than 32 interim (1xx) responses")) << out;
}

}  // namespace
}  // namespace sluice::testing
