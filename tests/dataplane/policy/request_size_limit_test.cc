// The `request-size-limit` policy: its config rules and its filter, through
// the registries the binaries use.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "api/policy_registry.h"
#include "dataplane/http/filter.h"
#include "tests/dataplane/policy/fake_callbacks.h"
#include "dataplane/policy/registry.h"
#include "dataplane/policy/request_size_limit/request_size_limit_config.pb.h"

namespace sluice::policy::request_size_limit {
namespace {

using testing::FakeCallbacks;

std::vector<api::PolicyConfigError> Errors(uint64_t max_bytes) {
  v1::RequestSizeLimitConfig config;
  config.set_max_bytes(max_bytes);
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator("request-size-limit")->Validate(config, &errors);
  return errors;
}

std::shared_ptr<const http::FilterFactory> Compile(uint64_t max_bytes) {
  v1::RequestSizeLimitConfig config;
  config.set_max_bytes(max_bytes);
  auto compiled = FindPolicyFactory("request-size-limit")->Compile(config);
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return *compiled;
}

TEST(RequestSizeLimitTest, ConfigRulesNameTheField) {
  ASSERT_NE(api::FindPolicyValidator("request-size-limit"), nullptr);
  EXPECT_TRUE(Errors(1).empty());
  auto errors = Errors(0);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].field, "max_bytes");
  EXPECT_EQ(Errors((uint64_t{16} << 30) + 1).size(), 1u);
}

TEST(RequestSizeLimitTest, DeclaredLengthOverTheLimitIsRefusedAtTheHead) {
  auto factory = Compile(10);
  FakeCallbacks callbacks;
  http::HeaderMap headers;
  callbacks.info_.request_content_length = 10;
  EXPECT_EQ(factory->CreateFilter()->OnRequestHeaders(headers, callbacks),
            http::FilterStatus::kContinue);
  callbacks.info_.request_content_length = 11;
  EXPECT_EQ(factory->CreateFilter()->OnRequestHeaders(headers, callbacks),
            http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(callbacks.status_, 413);
  EXPECT_TRUE(absl::StrContains(callbacks.message_, "11 bytes is over this route's limit of 10"));
}

TEST(RequestSizeLimitTest, StreamedBodyIsCountedAcrossPieces) {
  auto factory = Compile(10);
  FakeCallbacks callbacks;
  http::HeaderMap headers;
  auto filter = factory->CreateFilter();
  ASSERT_EQ(filter->OnRequestHeaders(headers, callbacks), http::FilterStatus::kContinue);
  EXPECT_EQ(filter->OnRequestData("123456", false, callbacks), http::FilterStatus::kContinue);
  EXPECT_EQ(filter->OnRequestData("7890", false, callbacks), http::FilterStatus::kContinue);
  EXPECT_EQ(filter->OnRequestData("", true, callbacks), http::FilterStatus::kContinue);
  EXPECT_EQ(callbacks.status_, 0);
  EXPECT_EQ(filter->OnRequestData("x", false, callbacks), http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(callbacks.status_, 413);
}

}  // namespace
}  // namespace sluice::policy::request_size_limit
