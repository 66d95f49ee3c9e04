// MetricsEndpoint over real loopback HTTP: GET /metrics answers what the
// render function returns at that moment, anything else is refused, a bad or
// busy address is an error, and Stop() closes the port.
#include "controlplane/server/metrics_endpoint.h"

#include <gtest/gtest.h>

#include <atomic>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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
  EXPECT_EQ(other.body, "sluice-control serves only GET /metrics here\n");
  HttpResponse post = HttpRequest(address, "POST", "/metrics", {}, "");
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(post.header("allow"), "GET, HEAD");
  EXPECT_EQ(scrapes.load(), 2);  // neither rendered

  endpoint.Stop();
  HttpResponse after = HttpGet(address, "/metrics", {}, absl::Seconds(2));
  EXPECT_FALSE(after.ok());
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

TEST(MetricsEndpointTest, StopWithoutStartAndStopTwiceAreHarmless) {
  MetricsEndpoint never([] { return std::string(); });
  never.Stop();
  MetricsEndpoint twice([] { return std::string(); });
  ASSERT_TRUE(twice.Start("127.0.0.1:0").ok());
  twice.Stop();
  twice.Stop();
}

TEST(SplitHostPortTest, TakesV4V6AndNamesWhatIsWrong) {
  auto v4 = SplitHostPort("127.0.0.1:18001");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->first, "127.0.0.1");
  EXPECT_EQ(v4->second, 18001);
  auto v6 = SplitHostPort("[::1]:0");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->first, "::1");
  EXPECT_EQ(v6->second, 0);
  EXPECT_EQ(SplitHostPort("18001").status().message(),
            "'18001' is not HOST:PORT (e.g. 127.0.0.1:18001)");
  EXPECT_EQ(SplitHostPort(":18001").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SplitHostPort("127.0.0.1:70000").status().message(),
            "'127.0.0.1:70000': the port must be 0..65535");
  EXPECT_EQ(SplitHostPort("127.0.0.1:x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SplitHostPort("[::1:80").status().message(),
            "'[::1:80': an IPv6 host is written [ADDRESS]:PORT");
}

}  // namespace
}  // namespace sluice::controlplane
