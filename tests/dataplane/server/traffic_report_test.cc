// The fleet view's percentile estimate from histogram buckets.
#include "dataplane/server/traffic_report.h"

#include <gtest/gtest.h>

namespace sluice::server {
namespace {

using Buckets = std::array<uint64_t, stats::Histogram::kFinite + 1>;

// A report names the version that served its whole interval, and 0 for
// an interval in which another version was applied.
TEST(TrafficReportTest, AnIntervalThatSpansAVersionChangeBelongsToNoVersion) {
  auto snapshot = std::make_shared<config::ConfigSnapshot>();
  snapshot->version = 3;
  TrafficReporter reporter([&] { return std::shared_ptr<const config::ConfigSnapshot>(snapshot); },
                           nullptr);
  absl::Time t = absl::FromUnixSeconds(1000);
  EXPECT_EQ(reporter.Make(t).config_version(), 3u);  // the baseline
  EXPECT_EQ(reporter.Make(t + absl::Seconds(5)).config_version(), 3u);
  auto next = std::make_shared<config::ConfigSnapshot>();
  next->version = 4;
  snapshot = next;  // applied during the next interval
  EXPECT_EQ(reporter.Make(t + absl::Seconds(10)).config_version(), 0u);
  EXPECT_EQ(reporter.Make(t + absl::Seconds(15)).config_version(), 4u);
}

// A proxy waiting for its first config reports its intervals (with nothing
// served), and the interval in which the config came belongs to no version.
TEST(TrafficReportTest, AProxyWithoutAConfigReportsItsIntervals) {
  std::shared_ptr<config::ConfigSnapshot> snapshot;
  TrafficReporter reporter([&] { return std::shared_ptr<const config::ConfigSnapshot>(snapshot); },
                           nullptr);
  absl::Time t = absl::FromUnixSeconds(1000);
  EXPECT_EQ(reporter.Make(t).interval_ms(), 0u);  // the baseline, at start
  discovery::v1::TrafficReport idle = reporter.Make(t + absl::Seconds(5));
  EXPECT_EQ(idle.interval_ms(), 5000u);
  EXPECT_EQ(idle.requests(), 0u);
  EXPECT_EQ(idle.config_version(), 0u);
  snapshot = std::make_shared<config::ConfigSnapshot>();
  snapshot->version = 2;
  discovery::v1::TrafficReport arrived = reporter.Make(t + absl::Seconds(10));
  EXPECT_EQ(arrived.interval_ms(), 5000u);
  EXPECT_EQ(arrived.config_version(), 0u);
  EXPECT_EQ(reporter.Make(t + absl::Seconds(15)).config_version(), 2u);
}

TEST(TrafficReportTest, QuantilesInterpolateWithinTheBucket) {
  Buckets b{};
  EXPECT_EQ(TrafficReporter::QuantileMs(b, 0.5), 0);
  b[0] = 100;  // all in (0, 0.5 ms]
  EXPECT_DOUBLE_EQ(TrafficReporter::QuantileMs(b, 0.5), 0.25);
  EXPECT_DOUBLE_EQ(TrafficReporter::QuantileMs(b, 1.0), 0.5);
  b = {};
  b[0] = 98;  // 98 fast ones, 2 in (5, 10] ms
  b[4] = 2;
  EXPECT_NEAR(TrafficReporter::QuantileMs(b, 0.5), 0.5 * 50 / 98, 1e-9);
  EXPECT_DOUBLE_EQ(TrafficReporter::QuantileMs(b, 0.99), 7.5);
  b = {};
  b[stats::Histogram::kFinite] = 10;  // over 10 s: reads as 10 s
  EXPECT_DOUBLE_EQ(TrafficReporter::QuantileMs(b, 0.99), 10000);
}

}  // namespace
}  // namespace sluice::server
