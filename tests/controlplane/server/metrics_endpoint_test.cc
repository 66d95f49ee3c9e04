// MetricsEndpoint over real loopback HTTP: GET /metrics answers what the
// render function returns at that moment, anything else is refused, a bad or
// busy address is an error, its connections are bounded, and Stop() closes
// the port.
#include "controlplane/server/metrics_endpoint.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/harness/http_client.h"

namespace sluice::controlplane {
namespace {

using sluice::testing::HttpGet;
using sluice::testing::HttpRequest;
using sluice::testing::HttpResponse;

TEST(MetricsEndpointTest, ServesWhatRenderReturnsAtEachScrape) {
  std::atomic<int> scrapes{0};
  MetricsEndpoint endpoint([&] { return absl::StrCat("scrape ", ++scrapes, "\n"); });
  absl::StatusOr<int> port = endpoint.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  ASSERT_GT(*port, 0);
  const std::string address = absl::StrCat("127.0.0.1:", *port);

  HttpResponse first = HttpGet(address, "/metrics");
  ASSERT_TRUE(first.ok()) << first.error;
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(first.body, "scrape 1\n");
  EXPECT_EQ(first.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(HttpGet(address, "/metrics?x=1").body, "scrape 2\n");

  HttpResponse other = HttpGet(address, "/stats");
  EXPECT_EQ(other.status, 404);
  EXPECT_EQ(other.body, "sluice-control serves GET /metrics, /livez and /ready here\n");
  HttpResponse post = HttpRequest(address, "POST", "/metrics", {}, "");
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(post.header("allow"), "GET, HEAD");
  EXPECT_EQ(scrapes.load(), 2);  // neither rendered

  endpoint.Stop();
  HttpResponse after = HttpGet(address, "/metrics", {}, absl::Seconds(2));
  EXPECT_FALSE(after.ok());
}

// The probes' paths: /livez runs the liveness check and renders nothing;
// /ready follows SetServing (503 before the gRPC port serves and once it
// stops).
TEST(MetricsEndpointTest, LivezAndReadyAnswerWithoutAScrape) {
  std::atomic<int> scrapes{0};
  std::atomic<int> checks{0};
  MetricsEndpoint endpoint([&] { return absl::StrCat("scrape ", ++scrapes, "\n"); },
                           [&] { ++checks; });
  absl::StatusOr<int> port = endpoint.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  const std::string address = absl::StrCat("127.0.0.1:", *port);

  HttpResponse live = HttpGet(address, "/livez");
  EXPECT_EQ(live.status, 200);
  EXPECT_EQ(live.body, "ok\n");
  EXPECT_EQ(checks.load(), 1);
  HttpResponse starting = HttpGet(address, "/ready");
  EXPECT_EQ(starting.status, 503);
  EXPECT_EQ(starting.body, "starting\n");
  endpoint.SetServing(true);
  HttpResponse ready = HttpGet(address, "/ready");
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.body, "ready\n");
  endpoint.SetServing(false);
  HttpResponse stopping = HttpGet(address, "/ready");
  EXPECT_EQ(stopping.status, 503);
  EXPECT_EQ(stopping.body, "stopping\n");
  EXPECT_EQ(scrapes.load(), 0);
}

TEST(MetricsEndpointTest, ABusyPortIsAnError) {
  MetricsEndpoint first([] { return std::string(); });
  absl::StatusOr<int> port = first.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  MetricsEndpoint second([] { return std::string(); });
  absl::StatusOr<int> again = second.Start(absl::StrCat("127.0.0.1:", *port));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable) << again.status();
  EXPECT_TRUE(absl::StrContains(again.status().message(), "cannot listen on 127.0.0.1:"))
      << again.status();
}

// Clients that open connections and never finish a request cannot hold
// every descriptor: past 128 connections a new one closes the oldest that
// is waiting for a request, and a scrape gets through. (evhttp, before,
// kept every one for 10 s after its last byte.)
TEST(MetricsEndpointTest, SilentClientsCannotHoldEveryConnection) {
  MetricsEndpoint endpoint([] { return std::string("up 1\n"); });
  absl::StatusOr<int> port = endpoint.Start("127.0.0.1:0");
  ASSERT_TRUE(port.ok()) << port.status();
  auto connect_one = [&] {
    const int fd = sluice::testing::ConnectLoopback(*port);
    EXPECT_GE(fd, 0);
    const char partial[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n";  // never ended
    EXPECT_EQ(send(fd, partial, sizeof(partial) - 1, MSG_NOSIGNAL),
              static_cast<ssize_t>(sizeof(partial) - 1));
    return fd;
  };
  // Whether the server closed `fd` within `wait`.
  auto closed_within = [](int fd, absl::Duration wait) {
    const absl::Time deadline = absl::Now() + wait;
    while (absl::Now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 50) != 1) continue;
      char byte;
      return recv(fd, &byte, 1, 0) <= 0;
    }
    return false;
  };
  const int first = connect_one();
  ASSERT_FALSE(closed_within(first, absl::Milliseconds(200)));  // waiting, not refused
  std::vector<int> others;
  for (int i = 0; i < 128; ++i) others.push_back(connect_one());
  EXPECT_TRUE(closed_within(first, absl::Seconds(5)));
  HttpResponse scrape = HttpGet(absl::StrCat("127.0.0.1:", *port), "/metrics");
  EXPECT_EQ(scrape.status, 200) << scrape.error;
  EXPECT_EQ(scrape.body, "up 1\n");
  close(first);
  for (int fd : others) close(fd);
}

TEST(MetricsEndpointTest, StopWithoutStartAndStopTwiceAreHarmless) {
  MetricsEndpoint never([] { return std::string(); });
  never.Stop();
  MetricsEndpoint twice([] { return std::string(); });
  ASSERT_TRUE(twice.Start("127.0.0.1:0").ok());
  twice.Stop();
  twice.Stop();
}

}  // namespace
}  // namespace sluice::controlplane
