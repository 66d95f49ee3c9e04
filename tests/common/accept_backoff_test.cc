// AcceptBackoff: the pause after accept(2) runs out of descriptors, shared
// by the workers' listeners and the admin endpoint.
#include "common/accept_backoff.h"

#include <gtest/gtest.h>

namespace sluice::common {
namespace {

TEST(AcceptBackoffTest, DoublesFrom50msTo1sAndLogsOncePer10s) {
  AcceptBackoff backoff;
  absl::Time now = absl::FromUnixSeconds(1000);
  bool log = false;
  EXPECT_EQ(backoff.OnFailure(now, &log), absl::Milliseconds(50));
  EXPECT_TRUE(log);
  const absl::Duration expected[] = {absl::Milliseconds(100), absl::Milliseconds(200),
                                     absl::Milliseconds(400), absl::Milliseconds(800),
                                     absl::Seconds(1), absl::Seconds(1)};
  for (absl::Duration want : expected) {
    now += absl::Milliseconds(500);
    EXPECT_EQ(backoff.OnFailure(now, &log), want);
    EXPECT_FALSE(log);
  }
  now += absl::Seconds(7);  // 10 s after the first line: another one
  backoff.OnFailure(now, &log);
  EXPECT_TRUE(log);
  // A success, or 10 s without a failure, starts again from 50 ms.
  backoff.OnSuccess();
  EXPECT_EQ(backoff.OnFailure(now + absl::Milliseconds(10), &log), absl::Milliseconds(50));
  backoff.OnFailure(now + absl::Milliseconds(20), &log);
  EXPECT_EQ(backoff.OnFailure(now + absl::Seconds(30), &log), absl::Milliseconds(50));
}

}  // namespace
}  // namespace sluice::common
