// The test tools themselves: upstream_server as a real process, driven by
// http_client over loopback, plus the client against scripted byte streams.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/harness/http_client.h"
#include "tests/harness/http_wire.h"
#include "tests/harness/process.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string RandomBytes(size_t n) {
  std::mt19937 rng(42);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// A blocking loopback socket for byte-level checks.
class RawSocket {
 public:
  explicit RawSocket(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ =
        connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RawSocket() { close(fd_); }
  bool connected() const { return connected_; }
  void Send(const std::string& bytes) {
    ASSERT_EQ(send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  // Reads until `needle` has arrived (returns all read so far), or timeout.
  std::string ReadUntil(const std::string& needle, absl::Duration timeout) {
    absl::Time deadline = absl::Now() + timeout;
    while (!absl::StrContains(received_, needle) && absl::Now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      char buf[4096];
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      received_.append(buf, static_cast<size_t>(n));
    }
    return received_;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string received_;
};

// A one-connection server that reads a request head, answers with fixed
// bytes and closes: responses upstream_server would never produce.
class ScriptedPeer {
 public:
  explicit ScriptedPeer(std::string script) : script_(std::move(script)) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(listen_fd_, 4);
    socklen_t len = sizeof(addr);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedPeer() {
    thread_.join();
    close(listen_fd_);
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  void Serve() {
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 10000) <= 0) return;
    int fd = accept(listen_fd_, nullptr, nullptr);
    std::string request;
    char buf[4096];
    while (!absl::StrContains(request, "\r\n\r\n")) {
      pollfd q{fd, POLLIN, 0};
      if (poll(&q, 1, 10000) <= 0) break;
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
    }
    send(fd, script_.data(), script_.size(), MSG_NOSIGNAL);
    shutdown(fd, SHUT_WR);
    while (true) {  // until the client closes
      pollfd q{fd, POLLIN, 0};
      if (poll(&q, 1, 10000) <= 0 || recv(fd, buf, sizeof(buf), 0) <= 0) break;
    }
    close(fd);
  }

  std::string script_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

class UpstreamServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(upstream_.ok())
        << "upstream_server at " << UpstreamServerPath()
        << " did not start: " << upstream_.process().Log();
  }
  std::string address() const { return upstream_.address(); }

  UpstreamServer upstream_{"up1"};
};

TEST_F(UpstreamServerTest, AnswersWithNameMethodAndTarget) {
  HttpResponse r = HttpGet(address(), "/hello?x=1");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-upstream"), "up1");
  EXPECT_EQ(r.header("content-type"), "text/plain");
  EXPECT_EQ(r.body, "up1 GET /hello?x=1\n");
  EXPECT_EQ(r.header("content-length"), absl::StrCat(r.body.size()));
  EXPECT_EQ(r.header("x-echo-host"), address());
  EXPECT_EQ(r.header("x-echo-connection"), "close");
  EXPECT_EQ(r.headers.count("x-echo-x-forwarded-for"), 0u);
  EXPECT_EQ(r.headers.count("x-echo-content-length"), 0u);
}

TEST_F(UpstreamServerTest, EchoesForwardingAndHopByHopHeaders) {
  HttpResponse r = HttpGet(address(), "/echo",
                           {{"X-Forwarded-For", "10.0.0.1"},
                            {"x-forwarded-for", "10.0.0.2"},
                            {"x-forwarded-proto", "https"},
                            {"x-request-id", "req-7"},
                            {"host", "example.test"},
                            {"te", "trailers"},
                            {"x-not-echoed", "1"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.header("x-echo-x-forwarded-for"), "10.0.0.1, 10.0.0.2");
  EXPECT_EQ(r.header("x-echo-x-forwarded-proto"), "https");
  EXPECT_EQ(r.header("x-echo-x-request-id"), "req-7");
  EXPECT_EQ(r.header("x-echo-host"), "example.test");
  EXPECT_EQ(r.header("x-echo-te"), "trailers");
  EXPECT_EQ(r.header("x-echo-connection"), "close");
  EXPECT_EQ(r.headers.count("x-echo-x-not-echoed"), 0u);
}

TEST_F(UpstreamServerTest, ContentLengthBodyArrivesIntact) {
  std::string body = RandomBytes(300000);
  HttpResponse r = HttpRequest(address(), "POST", "/upload", {}, body);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body,
            absl::StrCat("up1 POST /upload\nbody-bytes=300000 body-crc=",
                         Crc32Hex(body), "\n"));
  EXPECT_EQ(r.header("x-echo-content-length"), "300000");
}

TEST_F(UpstreamServerTest, EmptyDeclaredBodyIsReported) {
  HttpResponse r = HttpRequest(address(), "POST", "/empty", {}, "");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.body, "up1 POST /empty\nbody-bytes=0 body-crc=00000000\n");
}

TEST_F(UpstreamServerTest, ChunkedRequestBodyArrivesIntact) {
  std::string body = RandomBytes(70000);
  HttpResponse r =
      HttpRequest(address(), "PUT", "/chunked",
                  {{"transfer-encoding", "chunked"}}, EncodeChunked(body, 7));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, absl::StrCat("up1 PUT /chunked\nbody-bytes=70000 body-crc=",
                                 Crc32Hex(body), "\n"));
  EXPECT_EQ(r.header("x-echo-transfer-encoding"), "chunked");
  EXPECT_EQ(r.headers.count("x-echo-content-length"), 0u);
}

TEST(Crc32Test, MatchesKnownVectors) {
  EXPECT_EQ(Crc32Hex(""), "00000000");
  EXPECT_EQ(Crc32Hex("123456789"), "cbf43926");
  EXPECT_EQ(Crc32Hex("hello"), "3610a686");
}

TEST_F(UpstreamServerTest, StatusParameter) {
  HttpResponse r = HttpGet(address(), "/s?status=503");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "up1 GET /s?status=503\n");

  // 204 has no body; the keep-alive connection stays usable after it.
  HttpConnection conn(address());
  r = conn.Request("GET", "/s?status=204");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(r.body, "");
  EXPECT_EQ(r.headers.count("content-length"), 0u);
  r = conn.Request("GET", "/after");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.body, "up1 GET /after\n");

  r = HttpGet(address(), "/s?status=99");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("status=99"));
}

TEST_F(UpstreamServerTest, DelayDoesNotBlockOtherConnections) {
  absl::Duration slow_elapsed;
  HttpResponse slow;
  std::thread slow_thread([&] {
    absl::Time start = absl::Now();
    slow = HttpGet(address(), "/slow?delay_ms=700");
    slow_elapsed = absl::Now() - start;
  });
  // Once the slow request is in, a fast one must not wait behind it.
  ASSERT_TRUE(
      WaitFor([&] { return upstream_.RequestCount() == 1; }, absl::Seconds(5)));
  absl::Time start = absl::Now();
  HttpResponse fast = HttpGet(address(), "/fast");
  absl::Duration fast_elapsed = absl::Now() - start;
  slow_thread.join();
  ASSERT_TRUE(fast.ok()) << fast.error;
  ASSERT_TRUE(slow.ok()) << slow.error;
  EXPECT_EQ(slow.body, "up1 GET /slow?delay_ms=700\n");
  EXPECT_GE(slow_elapsed, absl::Milliseconds(698));  // clock granularity
  EXPECT_LT(fast_elapsed, absl::Milliseconds(400));
}

TEST_F(UpstreamServerTest, SizeParameter) {
  HttpResponse r = HttpGet(address(), "/big?size=2000000");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.header("content-length"), "2000000");
  EXPECT_EQ(r.body, std::string(2000000, 'x'));
  r = HttpGet(address(), "/zero?size=0");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.body, "");
}

TEST_F(UpstreamServerTest, ChunkedResponse) {
  HttpConnection conn(address());
  HttpResponse r = conn.Request("GET", "/c?chunked=1");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.header("transfer-encoding"), "chunked");
  EXPECT_EQ(r.headers.count("content-length"), 0u);
  EXPECT_EQ(r.body, "up1 GET /c?chunked=1\n");
  r = conn.Request("GET", "/c?chunked=1&size=100001");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.body, std::string(100001, 'x'));
  r = conn.Request("GET", "/c?chunked=1&size=0");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.body, "");
  EXPECT_EQ(conn.connections_opened(), 1);

  // The chunk framing itself, byte for byte.
  std::string raw = SendRaw(address(),
                            "GET /c?chunked=1&size=10 HTTP/1.1\r\nhost: a\r\n"
                            "connection: close\r\n\r\n");
  EXPECT_THAT(
      raw,
      HasSubstr(
          "\r\n\r\n3\r\nxxx\r\n3\r\nxxx\r\n2\r\nxx\r\n2\r\nxx\r\n0\r\n\r\n"));
}

TEST_F(UpstreamServerTest, CloseParameter) {
  HttpConnection conn(address());
  HttpResponse r = conn.Request("GET", "/a");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(conn.connected());
  r = conn.Request("GET", "/b?close=1");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_EQ(r.body, "up1 GET /b?close=1\n");
  EXPECT_FALSE(conn.connected());
  r = conn.Request("GET", "/c");
  EXPECT_THAT(r.error, HasSubstr("not connected"));

  HttpConnection reconnecting(address(), {.reconnect = true});
  ASSERT_TRUE(reconnecting.Request("GET", "/b?close=1").ok());
  r = reconnecting.Request("GET", "/d");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(reconnecting.connections_opened(), 2);
}

TEST_F(UpstreamServerTest, CloseParameterSendsFinNotReset) {
  // The server must close gracefully even with unread pipelined input.
  std::string raw = SendRaw(address(),
                            "GET /a?close=1 HTTP/1.1\r\nhost: a\r\n\r\n"
                            "GET /never HTTP/1.1\r\nhost: a\r\n\r\n");
  EXPECT_THAT(raw, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(raw, HasSubstr("\r\n\r\nup1 GET /a?close=1\n"));
  EXPECT_THAT(raw, ::testing::Not(HasSubstr("/never")));
}

TEST_F(UpstreamServerTest, HangParameter) {
  absl::Time start = absl::Now();
  HttpResponse r = HttpGet(address(), "/h?hang=1", {}, absl::Milliseconds(300));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  EXPECT_THAT(r.error, HasSubstr("timed out"));
  EXPECT_EQ(r.status, 0);
  // Other connections are unaffected, and the hung request was counted.
  EXPECT_TRUE(HttpGet(address(), "/ok").ok());
  EXPECT_EQ(upstream_.RequestCount(), 2);
}

TEST_F(UpstreamServerTest, ResetParameter) {
  HttpResponse r = HttpGet(address(), "/r?reset=1");
  EXPECT_THAT(r.error, HasSubstr("reset by peer"));
  EXPECT_EQ(r.status, 0);

  HttpConnection conn(address());
  ASSERT_TRUE(conn.Request("GET", "/first").ok());
  r = conn.Request("GET", "/r?reset=1");
  EXPECT_THAT(r.error, HasSubstr("reset by peer"));
  EXPECT_FALSE(conn.connected());
}

TEST_F(UpstreamServerTest, MidwayParameter) {
  HttpResponse r = HttpGet(address(), "/m?midway=1");
  EXPECT_THAT(r.error, HasSubstr("closed after 10 of 1000 body bytes"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-length"), "1000");
  EXPECT_EQ(r.body, std::string(10, 'x'));
}

TEST_F(UpstreamServerTest, KeepAliveAndStats) {
  HttpConnection conn(address());
  for (int i = 0; i < 3; ++i) {
    HttpResponse r = conn.Request("GET", absl::StrCat("/k", i));
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.body, absl::StrCat("up1 GET /k", i, "\n"));
    EXPECT_EQ(r.headers.count("connection"), 0u);
  }
  EXPECT_EQ(conn.connections_opened(), 1);
  EXPECT_EQ(conn.responses_on_connection(), 3);
  EXPECT_TRUE(conn.connected());

  HttpResponse stats = HttpGet(address(), "/__stats");
  EXPECT_EQ(stats.body, "requests=3");
  EXPECT_EQ(stats.header("x-upstream"), "up1");
  EXPECT_EQ(upstream_.RequestCount(), 3);  // /__stats does not count itself
}

TEST_F(UpstreamServerTest, PipelinedRequestsAreAnsweredInOrder) {
  HttpConnection conn(address());
  ASSERT_TRUE(
      conn
          .Send(absl::StrCat(
              FormatRequest(address(), "GET", "/1?delay_ms=150", {}, "", false),
              FormatRequest(address(), "POST", "/2", {}, "abc", false),
              FormatRequest(address(), "HEAD", "/3", {}, "", false),
              FormatRequest(address(), "GET", "/4?chunked=1", {}, "", false)))
          .ok());
  HttpResponse r1 = conn.ReadResponse("GET");
  HttpResponse r2 = conn.ReadResponse("POST");
  HttpResponse r3 = conn.ReadResponse("HEAD");
  HttpResponse r4 = conn.ReadResponse("GET");
  ASSERT_TRUE(r1.ok() && r2.ok() && r3.ok() && r4.ok())
      << r1.error << r2.error << r3.error << r4.error;
  EXPECT_EQ(r1.body, "up1 GET /1?delay_ms=150\n");
  EXPECT_EQ(r2.body, absl::StrCat("up1 POST /2\nbody-bytes=3 body-crc=",
                                  Crc32Hex("abc"), "\n"));
  EXPECT_EQ(r3.header("content-length"),
            absl::StrCat(std::string("up1 HEAD /3\n").size()));
  EXPECT_EQ(r3.body, "");
  EXPECT_EQ(r4.body, "up1 GET /4?chunked=1\n");
  EXPECT_EQ(conn.connections_opened(), 1);
}

TEST_F(UpstreamServerTest, MalformedRequestsGet400AndClose) {
  struct Case {
    std::string bytes;
    std::string reason;
  };
  for (const Case& c : std::vector<Case>{
           {"GARBAGE\r\n\r\n", "malformed request line"},
           {"GET / HTTP/1.1\nhost: a\n\n", "bare LF"},
           {"GET / HTTP/1.1\r\nhost: a\r\n folded\r\n\r\n",
            "obsolete line folding"},
           {"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n"
            "transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            "both Transfer-Encoding and Content-Length"},
           {"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3, 4\r\n\r\nabcd",
            "invalid Content-Length"},
           {"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip\r\n\r\n",
            "unsupported transfer-encoding"},
           {"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: "
            "chunked\r\n\r\nzz\r\n",
            "malformed chunk size"},
           {"GET / HTTP/2.0\r\nhost: a\r\n\r\n", "unsupported HTTP version"},
       }) {
    absl::Time start = absl::Now();
    std::string raw = SendRaw(address(), c.bytes);
    EXPECT_THAT(raw, StartsWith("HTTP/1.1 400 Bad Request\r\n")) << c.bytes;
    EXPECT_THAT(raw, HasSubstr(c.reason)) << c.bytes;
    EXPECT_THAT(raw, HasSubstr("connection: close")) << c.bytes;
    EXPECT_LT(absl::Now() - start, absl::Seconds(3))
        << "not closed: " << c.bytes;
  }
}

TEST_F(UpstreamServerTest, ExpectContinueGetsInterimResponse) {
  RawSocket raw(upstream_.port());
  ASSERT_TRUE(raw.connected());
  raw.Send(
      "POST /e HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: "
      "5\r\n\r\n");
  EXPECT_EQ(raw.ReadUntil("\r\n\r\n", absl::Seconds(5)),
            "HTTP/1.1 100 Continue\r\n\r\n");
  raw.Send("hello");
  const std::string crc_line =
      absl::StrCat("body-crc=", Crc32Hex("hello"), "\n");
  std::string all = raw.ReadUntil(crc_line, absl::Seconds(5));
  EXPECT_THAT(all, HasSubstr("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(all, HasSubstr(crc_line));
}

TEST_F(UpstreamServerTest, ExitsCleanlyOnSigterm) {
  std::optional<int> status = upstream_.Stop();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0);
}

TEST(HttpClientTest, SkipsInterimResponses) {
  ScriptedPeer peer(
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"
      "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-final: yes\r\n\r\nok");
  HttpResponse r = HttpGet(peer.address(), "/");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok");
  EXPECT_EQ(r.headers.count("link"), 0u);
  EXPECT_EQ(r.header("X-Final"), "yes");
}

TEST(HttpClientTest, ReadsBodyUntilClose) {
  ScriptedPeer peer("HTTP/1.0 200 OK\r\nx-a: 1\r\nx-a: 2\r\n\r\nuntil the end");
  HttpResponse r = HttpGet(peer.address(), "/");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.body, "until the end");
  EXPECT_EQ(r.header("x-a"), "2");  // last wins
}

TEST(HttpClientTest, ChunkExtensionsAndTrailers) {
  ScriptedPeer peer(
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
      "5;name=value\r\nhello\r\n1\r\n!\r\n0\r\nx-trailer: t\r\n\r\n");
  HttpResponse r = HttpGet(peer.address(), "/");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.body, "hello!");
}

TEST(HttpClientTest, RejectsAmbiguousFraming) {
  ScriptedPeer peer(
      "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: "
      "chunked\r\n\r\n0\r\n\r\n");
  HttpResponse r = HttpGet(peer.address(), "/");
  EXPECT_THAT(r.error, HasSubstr("both Transfer-Encoding and Content-Length"));
  EXPECT_EQ(r.status, 200);
}

TEST(HttpClientTest, ReportsTruncatedHead) {
  ScriptedPeer peer("HTTP/1.1 200 OK\r\ncontent-len");
  HttpResponse r = HttpGet(peer.address(), "/");
  EXPECT_THAT(r.error, HasSubstr("closed in the middle of the message head"));
}

TEST(HttpClientTest, ReportsConnectFailure) {
  UpstreamServer gone("gone");
  ASSERT_TRUE(gone.ok());
  std::string address = gone.address();
  ASSERT_TRUE(gone.Stop().has_value());
  HttpResponse r = HttpGet(address, "/");
  EXPECT_THAT(r.error, HasSubstr("Connection refused"));
  EXPECT_EQ(SendRaw(address, "GET / HTTP/1.1\r\n\r\n"), "");
  HttpConnection conn(address);
  EXPECT_FALSE(conn.connected());
  EXPECT_THAT(conn.Request("GET", "/").error, HasSubstr("Connection refused"));
}

TEST_F(UpstreamServerTest, ConnectedTurnsFalseWhenThePeerCloses) {
  HttpConnection conn(address());
  ASSERT_TRUE(conn.Request("GET", "/").ok());
  EXPECT_TRUE(conn.connected());
  ASSERT_TRUE(upstream_.Stop().has_value());
  EXPECT_TRUE(WaitFor([&] { return !conn.connected(); }, absl::Seconds(5)));
  EXPECT_THAT(conn.Request("GET", "/").error,
              HasSubstr("closed the connection while it was idle"));
}

TEST_F(UpstreamServerTest, LoadGeneratorSteadyLoadHasNoFailures) {
  LoadGenerator load(
      {.host_port = address(), .path = "/load", .concurrency = 4});
  load.Start();
  absl::SleepFor(
      absl::Seconds(1));  // the load period, not a wait for a condition
  LoadGenerator::Counts during = load.counts();
  load.Stop();
  LoadGenerator::Counts c = load.counts();
  EXPECT_GT(during.ok, 0u);
  EXPECT_GE(c.ok, during.ok);
  EXPECT_GT(c.ok, 100u);
  EXPECT_EQ(c.failed, 0u);
  EXPECT_TRUE(c.first_errors.empty()) << c.first_errors.front();
  EXPECT_EQ(c.by_status, (std::map<int, uint64_t>{{200, c.ok}}));
  EXPECT_EQ(c.by_upstream, (std::map<std::string, uint64_t>{{"up1", c.ok}}));
  EXPECT_EQ(c.connections, 4u);  // keep-alive: one connection per thread
  // The server saw every counted request (and at most one per thread cut
  // short by Stop()).
  std::optional<int> served = upstream_.RequestCount();
  ASSERT_TRUE(served.has_value());
  EXPECT_GE(static_cast<uint64_t>(*served), c.ok);
  EXPECT_LE(static_cast<uint64_t>(*served), c.ok + 4);
}

TEST_F(UpstreamServerTest, LoadGeneratorHonoursRate) {
  LoadGenerator load(
      {.host_port = address(), .concurrency = 2, .rate_per_thread = 50});
  load.Start();
  absl::SleepFor(absl::Seconds(1));
  load.Stop();
  LoadGenerator::Counts c = load.counts();
  EXPECT_EQ(c.failed, 0u);
  EXPECT_GE(c.ok, 30u);  // ~100 expected; loose for a busy machine
  EXPECT_LE(c.ok, 130u);
}

TEST_F(UpstreamServerTest, LoadGeneratorCountsErrorStatuses) {
  LoadGenerator load(
      {.host_port = address(), .path = "/?status=503", .concurrency = 2});
  load.Start();
  ASSERT_TRUE(
      WaitFor([&] { return load.counts().failed >= 50; }, absl::Seconds(10)));
  load.Stop();
  LoadGenerator::Counts c = load.counts();
  EXPECT_EQ(c.ok, 0u);
  EXPECT_EQ(c.transport_errors, 0u);
  EXPECT_EQ(c.by_status, (std::map<int, uint64_t>{{503, c.failed}}));
  EXPECT_EQ(c.first_errors.size(), 20u);
  EXPECT_THAT(c.first_errors.front(), HasSubstr("status 503"));
}

TEST_F(UpstreamServerTest, LoadGeneratorCountsTransportErrorsAndReconnects) {
  LoadGenerator load(
      {.host_port = address(), .path = "/?reset=1", .concurrency = 2});
  load.Start();
  ASSERT_TRUE(
      WaitFor([&] { return load.counts().failed >= 30; }, absl::Seconds(10)));
  load.Stop();
  LoadGenerator::Counts c = load.counts();
  EXPECT_EQ(c.ok, 0u);
  EXPECT_EQ(c.transport_errors, c.failed);
  EXPECT_TRUE(c.by_status.empty());
  EXPECT_GE(c.connections, c.failed);  // a new connection after every error
  ASSERT_FALSE(c.first_errors.empty());
  EXPECT_THAT(c.first_errors.front(), HasSubstr("reset by peer"));
}

TEST_F(UpstreamServerTest, LoadGeneratorCountsTruncatedResponses) {
  // Every response is cut off mid-body: a transport error each time.
  LoadGenerator load(
      {.host_port = address(), .path = "/?midway=1", .concurrency = 1});
  load.Start();
  ASSERT_TRUE(
      WaitFor([&] { return load.counts().failed >= 5; }, absl::Seconds(10)));
  load.Stop();
  LoadGenerator::Counts c = load.counts();
  EXPECT_EQ(c.ok, 0u);
  EXPECT_EQ(c.transport_errors, c.failed);
  EXPECT_THAT(c.first_errors.front(),
              HasSubstr("closed after 10 of 1000 body bytes"));
}

TEST(LoadGeneratorTest, CountsConnectFailures) {
  UpstreamServer gone("gone");
  ASSERT_TRUE(gone.ok());
  std::string address = gone.address();
  ASSERT_TRUE(gone.Stop().has_value());
  LoadGenerator load({.host_port = address, .concurrency = 2});
  load.Start();
  ASSERT_TRUE(
      WaitFor([&] { return load.counts().failed >= 4; }, absl::Seconds(10)));
  load.Stop();
  LoadGenerator::Counts c = load.counts();
  EXPECT_EQ(c.ok, 0u);
  EXPECT_EQ(c.transport_errors, c.failed);
  EXPECT_THAT(c.first_errors.front(), HasSubstr("Connection refused"));
}

TEST_F(UpstreamServerTest, LoadGeneratorStopIsPromptWhileRequestsHang) {
  LoadGenerator load(
      {.host_port = address(), .path = "/?hang=1", .concurrency = 3});
  load.Start();
  ASSERT_TRUE(
      WaitFor([&] { return upstream_.RequestCount() == 3; }, absl::Seconds(5)));
  absl::Time start = absl::Now();
  load.Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_EQ(load.counts().total(), 0u);  // cut short by Stop(): not outcomes
}

}  // namespace
}  // namespace sluice::testing
