// The --control-plane address list and the failover schedule, as pure
// functions: the random numbers are given, no clock, no process.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "dataplane/config/config_client.h"

namespace sluice::config {
namespace {

using Addresses = std::vector<std::string>;

constexpr uint64_t kLow = 0;  // the shortest wait of the range
constexpr uint64_t kHigh = std::numeric_limits<uint64_t>::max();

TEST(ParseControlPlaneAddressesTest, OneAddressIsKeptAsItIs) {
  auto parsed = ParseControlPlaneAddresses("127.0.0.1:18000");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, Addresses{"127.0.0.1:18000"});
  parsed = ParseControlPlaneAddresses("dns:///cp.example:18000");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, Addresses{"dns:///cp.example:18000"});
}

TEST(ParseControlPlaneAddressesTest, SeveralInOrderWithSpacesDropped) {
  auto parsed = ParseControlPlaneAddresses("cp-1:18000, cp-2:18000 ,[::1]:18000");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, (Addresses{"cp-1:18000", "cp-2:18000", "[::1]:18000"}));
}

TEST(ParseControlPlaneAddressesTest, EmptyEntriesAndRepeatsAreRefused) {
  auto parsed = ParseControlPlaneAddresses("");
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  parsed = ParseControlPlaneAddresses("cp-1:18000,,cp-2:18000");
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(parsed.status().message(),
            "--control-plane \"cp-1:18000,,cp-2:18000\": address 2 of 3 is empty "
            "(give HOST:PORT[,HOST:PORT...])");
  parsed = ParseControlPlaneAddresses("cp-1:18000,");
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  parsed = ParseControlPlaneAddresses("cp-1:18000,cp-1:18000");
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(parsed.status().message(),
            "--control-plane \"cp-1:18000,cp-1:18000\": cp-1:18000 is given twice");
  // A port gRPC would misread (99999 dialled as 34463), or none (443).
  // A control character, a space, a quote or a backslash (it reached the
  // log as a line of its own), in a host or a URI.
  for (const char* bad : {"127.0.0.1:18000,a\"b\\c\nx:1", "cp\t1:18000", "dns:///cp 1:18000",
                          "cp-1:18000,cp\x7f:1"}) {
    parsed = ParseControlPlaneAddresses(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(parsed.status().message(), "has a control character")) << bad;
  }
  for (const char* bad : {"cp-1:99999", "cp-1", "cp-1:0", "cp-1:18000,cp-2:x"}) {
    parsed = ParseControlPlaneAddresses(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(parsed.status().message(), "--control-plane")) << bad;
  }
}

TEST(ControlPlaneFailoverTest, StartsWhereToldAndWrapsAround) {
  ControlPlaneFailover failover({"a", "b", "c"}, /*first=*/4);  // 4 mod 3
  EXPECT_EQ(failover.current(), "b");
  failover.Next(absl::ZeroDuration(), kLow);
  EXPECT_EQ(failover.current(), "c");
  failover.Next(absl::ZeroDuration(), kLow);
  EXPECT_EQ(failover.current(), "a");
  failover.Next(absl::ZeroDuration(), kLow);
  EXPECT_EQ(failover.current(), "b");
}

// The random number that draws the top of the range under `ceiling`.
uint64_t Top(absl::Duration ceiling) {
  return static_cast<uint64_t>(absl::ToInt64Nanoseconds(ceiling - ceiling / 2));
}

// One address: the schedule a single control plane always had.
TEST(ControlPlaneFailoverTest, OneAddressDoublesFrom250msTo10s) {
  ControlPlaneFailover failover({"a"});
  const std::vector<int64_t> ceilings_ms = {250, 500, 1000, 2000, 4000, 8000, 10000, 10000};
  for (int64_t ceiling_ms : ceilings_ms) {
    const absl::Duration ceiling = absl::Milliseconds(ceiling_ms);
    ControlPlaneFailover low(failover);
    EXPECT_EQ(low.Next(absl::ZeroDuration(), kLow), ceiling / 2) << ceiling_ms;
    EXPECT_EQ(failover.Next(absl::ZeroDuration(), Top(ceiling)), ceiling) << ceiling_ms;
    EXPECT_EQ(failover.current(), "a");
  }
}

// Two addresses: the delay grows once per pass over the whole list.
TEST(ControlPlaneFailoverTest, TheDelayDoublesPerFailedPassOfTheList) {
  ControlPlaneFailover failover({"a", "b"});
  const std::vector<int64_t> ceilings_ms = {250, 250, 500, 500, 1000, 1000, 2000};
  for (size_t i = 0; i < ceilings_ms.size(); ++i) {
    const absl::Duration ceiling = absl::Milliseconds(ceilings_ms[i]);
    EXPECT_EQ(failover.Next(absl::Milliseconds(10), Top(ceiling)), ceiling)
        << "failure " << i + 1;
    EXPECT_EQ(failover.current(), i % 2 == 0 ? "b" : "a");
  }
}

TEST(ControlPlaneFailoverTest, JitterCoversHalfToAllOfTheDelay) {
  const ControlPlaneFailover failover({"a", "b"});
  EXPECT_EQ(ControlPlaneFailover(failover).Next(absl::ZeroDuration(), 0),
            absl::Milliseconds(125));
  EXPECT_EQ(ControlPlaneFailover(failover).Next(absl::ZeroDuration(), 55'000'000),
            absl::Milliseconds(180));
  // Any random number lands in [125ms, 250ms].
  for (uint64_t random : {uint64_t{1}, uint64_t{123456789}, kHigh, kHigh / 3}) {
    absl::Duration wait = ControlPlaneFailover(failover).Next(absl::ZeroDuration(), random);
    EXPECT_GE(wait, absl::Milliseconds(125)) << random;
    EXPECT_LE(wait, absl::Milliseconds(250)) << random;
  }
}

// A replica killed under a proxy that was connected for a while: the next
// one is tried within a quarter second, whatever failed before.
TEST(ControlPlaneFailoverTest, AHealthyStreamStartsTheScheduleOver) {
  ControlPlaneFailover failover({"a", "b"});
  for (int i = 0; i < 10; ++i) failover.Next(absl::Milliseconds(1), kHigh);
  EXPECT_EQ(failover.current(), "a");
  // 4 s is not healthy yet: 5 passes failed, the delay is 8 s.
  EXPECT_EQ(ControlPlaneFailover(failover).Next(absl::Seconds(4), kLow), absl::Seconds(4));
  absl::Duration wait = failover.Next(absl::Seconds(5), kHigh);
  EXPECT_LE(wait, absl::Milliseconds(250));
  EXPECT_EQ(failover.current(), "b");
}

TEST(ControlPlaneFailoverTest, ScheduleIsConfigurable) {
  ControlPlaneFailover failover({"a", "b", "c"}, 0,
                                {absl::Milliseconds(100), absl::Milliseconds(300),
                                 absl::Seconds(1)});
  std::vector<absl::Duration> ceilings;
  // The low end of each range: half of its ceiling.
  for (int i = 0; i < 9; ++i) ceilings.push_back(failover.Next(absl::ZeroDuration(), kLow));
  EXPECT_EQ(ceilings, (std::vector<absl::Duration>{
                          absl::Milliseconds(50), absl::Milliseconds(50), absl::Milliseconds(50),
                          absl::Milliseconds(100), absl::Milliseconds(100),
                          absl::Milliseconds(100), absl::Milliseconds(150),
                          absl::Milliseconds(150), absl::Milliseconds(150)}));
}

}  // namespace
}  // namespace sluice::config
