// The fleet view's percentile estimate from histogram buckets.
#include "dataplane/server/traffic_report.h"

#include <gtest/gtest.h>

namespace sluice::server {
namespace {

using Buckets = std::array<uint64_t, stats::Histogram::kFinite + 1>;

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
