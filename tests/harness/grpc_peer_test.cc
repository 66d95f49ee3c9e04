// grpc_tool.py and its C++ wrapper, client straight to server (no proxy): the
// reference the proxied calls in //tests/integration:grpc_test are held to.
#include "tests/harness/grpc_peer.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "tests/harness/process.h"

namespace sluice::testing {
namespace {

GrpcServer::Options HealthFileOptions(const std::string& path) {
  GrpcServer::Options options;
  options.health_file = path;
  return options;
}

class GrpcPeerTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.ok()) << server_.process().Log(); }

  // Replaces the health file in one rename: the server never reads half a file.
  void WriteHealth(const std::string& text) {
    std::string staging = health_file_ + ".new";
    std::ofstream(staging) << text;
    ASSERT_EQ(std::rename(staging.c_str(), health_file_.c_str()), 0);
  }

  std::string health_file_ = MakeTempDir("grpc-peer") + "/health";
  GrpcServer server_{"peer-test", HealthFileOptions(health_file_)};
};

TEST_F(GrpcPeerTest, UnaryEchoesPayloadMetadataAndAuthority) {
  GrpcCallResult r = GrpcCall(server_.address(), "unary",
                              {"--payload", "ping", "--metadata", "x-test-a=1", "--authority",
                               "peer.test"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_TRUE(r.ok) << r.Describe();
  EXPECT_EQ(r.code, "OK");
  EXPECT_EQ(r.payload, "ping");
  EXPECT_TRUE(r.verified);
  EXPECT_EQ(r.initial_metadata["x-test-a"], "1");
  EXPECT_EQ(r.initial_metadata["x-seen-authority"], "peer.test");
  EXPECT_EQ(r.trailing_metadata["x-trailer"], "unary");
}

TEST_F(GrpcPeerTest, FailPayloadGivesThatStatus) {
  GrpcCallResult r = GrpcCall(server_.address(), "unary", {"--payload", "fail:5:gone"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.code, "NOT_FOUND");
  EXPECT_EQ(r.details, "gone");
  EXPECT_EQ(r.trailing_metadata["x-trailer"], "unary");
  EXPECT_FALSE(r.payload.has_value());
}

TEST_F(GrpcPeerTest, HealthFollowsTheFileAndStatsCountCalls) {
  GrpcCallResult r = GrpcCall(server_.address(), "health");  // no file: SERVING
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.status, "SERVING");
  WriteHealth("=SERVING\nsluice.test.Echo=NOT_SERVING\n");
  r = GrpcCall(server_.address(), "health", {"--service", "sluice.test.Echo"});
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_TRUE(r.ok) << r.Describe();
  EXPECT_EQ(r.status, "NOT_SERVING");
  r = GrpcCall(server_.address(), "health", {"--service", "unknown"});
  EXPECT_EQ(r.code, "NOT_FOUND") << r.Describe();

  r = GrpcCall(server_.address(), "server-stream", {"--count", "4", "--size", "100"});
  EXPECT_TRUE(r.verified) << r.Describe();
  EXPECT_EQ(r.responses, 4);
  EXPECT_EQ(r.bytes, 400);
  r = GrpcCall(server_.address(), "stats");
  ASSERT_TRUE(r.parsed) << r.Describe();
  EXPECT_EQ(r.stats["/grpc.health.v1.Health/Check"], 3) << r.out;
  EXPECT_EQ(r.stats["/sluice.test.Echo/ServerStream"], 1) << r.out;
}

TEST(GrpcCallOutputTest, RejectsWhatIsNotTheToolsJson) {
  GrpcCallResult r;
  ParseGrpcCallOutput("not json", &r);
  EXPECT_FALSE(r.parsed);
  EXPECT_FALSE(r.parse_error.empty());
  ParseGrpcCallOutput(R"({"ok": true, "code": 0})", &r);
  EXPECT_FALSE(r.parsed);
  EXPECT_EQ(r.parse_error, "field \"code\" is missing or of the wrong type");
}

}  // namespace
}  // namespace sluice::testing
