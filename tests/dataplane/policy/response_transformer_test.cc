// The `response-transformer` policy: its config rules through the validator
// registry, and its filter through the policy registry, driven as the stream
// drives it (OnResponseBody for a held upstream response, then
// OnResponseHeaders).
#include <gtest/gtest.h>

#include <tuple>

#include "absl/strings/match.h"
#include "api/policy_registry.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/registry.h"
#include "dataplane/policy/response_transformer/response_transformer_config.pb.h"
#include "google/protobuf/text_format.h"
#include "tests/dataplane/policy/fake_callbacks.h"

namespace sluice::policy::response_transformer {
namespace {

using testing::FakeCallbacks;

v1::ResponseTransformerConfig Parse(const std::string& text) {
  v1::ResponseTransformerConfig config;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &config))
      << text;
  return config;
}

std::string Errors(const std::string& text) {
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator("response-transformer")
      ->Validate(Parse(text), &errors);
  std::string all;
  for (const auto& e : errors) all += e.field + ": " + e.message + "\n";
  return all;
}

std::shared_ptr<const http::FilterFactory> Compile(const std::string& text) {
  EXPECT_EQ(Errors(text), "") << text;
  auto compiled =
      FindPolicyFactory("response-transformer")->Compile(Parse(text));
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return compiled.ok() ? *compiled : nullptr;
}

// An upstream response held whole, through one filter.
struct Response {
  void Run(const http::FilterFactory& factory, FakeCallbacks& callbacks) {
    auto filter = factory.CreateFilter();
    http::HeaderMap request;
    ASSERT_EQ(filter->OnRequestHeaders(request, callbacks),
              http::FilterStatus::kContinue);
    if (factory.response_body_limit() > 0 &&
        body.size() <= factory.response_body_limit()) {
      filter->OnResponseBody(status, headers, body, callbacks);
    }
    filter->OnResponseHeaders(status, headers, callbacks);
  }
  int status = 200;
  http::HeaderMap headers;
  std::string body;
};

std::vector<std::string> All(const http::HeaderMap& headers,
                             const std::string& name) {
  std::vector<std::string> out;
  for (const auto& f : headers.fields()) {
    if (absl::EqualsIgnoreCase(f.name, name)) out.push_back(f.value);
  }
  return out;
}

TEST(ResponseTransformerTest, RegisteredUnderItsName) {
  const api::PolicyValidator* validator =
      api::FindPolicyValidator("response-transformer");
  ASSERT_NE(validator, nullptr);
  EXPECT_EQ(validator->config_type()->full_name(),
            "sluice.policy.response_transformer.v1.ResponseTransformerConfig");
  auto factory = Compile("");
  EXPECT_EQ(factory->policy_name(), "response-transformer");
  EXPECT_EQ(factory->phase(), http::FilterPhase::kTransformation);
  EXPECT_EQ(factory->request_body_limit(), 0u);
  EXPECT_EQ(factory->response_body_limit(),
            0u);  // no body edits: responses stream
  EXPECT_EQ(Compile(R"pb(body { remove: "a" })pb")->response_body_limit(),
            1u << 20);
  EXPECT_EQ(Compile(R"pb(body { remove: "a" max_body_bytes: 10 })pb")
                ->response_body_limit(),
            10u);
  EXPECT_EQ(Compile(R"pb(headers { remove: "a" }
                         body { max_body_bytes: 10 })pb")
                ->response_body_limit(),
            0u);
}

TEST(ResponseTransformerTest, HeaderEditsInOrderWithTemplates) {
  auto factory = Compile(R"pb(
    headers {
      remove: "server"
      rename { from: "x-internal-id" to: "x-id" }
      replace { name: "cache-control" value: "no-store" }
      replace { name: "x-absent" value: "never" }
      add { name: "x-served-by" value: "sluice %ROUTE% for %CONSUMER%" }
      add { name: "content-type" value: "text/html" }
      append { name: "vary" value: "origin" }
      append { name: "x-request-copy" value: "%REQUEST_ID%" }
    }
  )pb");
  auth::Consumer dave;
  dave.name = "dave";
  FakeCallbacks callbacks;
  callbacks.info_.route_name = "shop";
  callbacks.info_.request_id = "r-9";
  callbacks.info_.consumer = &dave;
  Response r;
  r.headers.Add("Server", "nginx");
  r.headers.Add("content-type", "text/plain");
  r.headers.Add("x-internal-id", "42");
  r.headers.Add("cache-control", "max-age=60");
  r.headers.Add("cache-control", "public");
  r.headers.Add("vary", "accept");
  r.Run(*factory, callbacks);
  EXPECT_EQ(r.headers.Get("server"), nullptr);
  EXPECT_EQ(r.headers.Get("x-internal-id"), nullptr);
  EXPECT_EQ(All(r.headers, "x-id"), std::vector<std::string>{"42"});
  EXPECT_EQ(All(r.headers, "cache-control"),
            std::vector<std::string>{"no-store"});
  EXPECT_EQ(r.headers.Get("x-absent"), nullptr);
  EXPECT_EQ(*r.headers.Get("x-served-by"), "sluice shop for dave");
  EXPECT_EQ(All(r.headers, "content-type"),
            std::vector<std::string>{"text/plain"});
  EXPECT_EQ(All(r.headers, "vary"),
            (std::vector<std::string>{"accept", "origin"}));
  EXPECT_EQ(*r.headers.Get("x-request-copy"), "r-9");
  EXPECT_EQ(callbacks.replies_, 0);
}

TEST(ResponseTransformerTest, JsonBodyEditsOnAJsonResponse) {
  auto factory = Compile(R"pb(
    body {
      remove: "secret"
      rename { from: "id" to: "uid" }
      replace { name: "count" value: "0" }
      add { name: "request_id" value: "\"%REQUEST_ID%\"" }
      add { name: "meta" value: "{\"v\": 2}" }
    }
    headers { add { name: "x-transformed" value: "1" } }
  )pb");
  FakeCallbacks callbacks;
  callbacks.info_.request_id = "abc";
  Response r;
  r.headers.Add("content-type", "application/json");
  r.body =
      "{\"id\": 7, \"secret\": \"s3cr3t\", \"items\": [{\"secret\": 1}], "
      "\"count\": 12.0}";
  r.Run(*factory, callbacks);
  // Only the top level: a nested "secret" stays.
  EXPECT_EQ(r.body,
            "{\"uid\":7,\"items\":[{\"secret\": "
            "1}],\"count\":0,\"request_id\":\"abc\","
            "\"meta\":{\"v\": 2}}");
  EXPECT_EQ(*r.headers.Get("x-transformed"), "1");
}

TEST(ResponseTransformerTest, OtherResponsesAreUntouched) {
  auto factory = Compile(R"pb(body { remove: "secret" })pb");
  FakeCallbacks callbacks;
  const std::string object = "{\"secret\":1}";
  for (const auto& [type, encoding, body] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"text/plain", "", object},
           {"", "", object},
           {"application/json", "gzip", object},
           {"application/json", "", "{\"secret\":1"},
           {"application/json", "", "[{\"secret\":1}]"},
           {"application/json", "", ""},
       }) {
    Response r;
    if (!type.empty()) r.headers.Add("content-type", type);
    if (!encoding.empty()) r.headers.Add("content-encoding", encoding);
    r.body = body;
    r.Run(*factory, callbacks);
    EXPECT_EQ(r.body, body) << type << " " << encoding;
  }
  Response identity;
  identity.headers.Add("Content-Type", "Application/Problem+JSON");
  identity.headers.Add("content-encoding", "identity");
  identity.body = object;
  identity.Run(*factory, callbacks);
  EXPECT_EQ(identity.body, "{}");
}

// What a browser reads as JSON is edited: a body after a UTF-8 byte order
// mark (fetch().json() skips it; it goes out without it), and one whose
// last of two Content-Type fields is JSON. Before: both went out unedited,
// "secret" included.
TEST(ResponseTransformerTest, WhatABrowserReadsAsJsonIsEdited) {
  auto factory = Compile(R"pb(body { remove: "secret" })pb");
  FakeCallbacks callbacks;
  Response bom;
  bom.headers.Add("content-type", "application/json");
  bom.body = "\xEF\xBB\xBF{\"secret\":1,\"a\":2}";
  bom.Run(*factory, callbacks);
  EXPECT_EQ(bom.body, "{\"a\":2}");
  Response two;
  two.headers.Add("content-type", "text/html");
  two.headers.Add("Content-Type", "application/json");
  two.body = "{\"secret\":1}";
  two.Run(*factory, callbacks);
  EXPECT_EQ(two.body, "{}");
  // One field with a list is the same (RFC 9110 5.3): it went out unedited.
  for (const char* type : {"text/plain, application/json", "application/json, text/plain",
                           "text/plain,application/vnd.api+json; charset=utf-8"}) {
    Response listed;
    listed.headers.Add("content-type", type);
    listed.body = "{\"secret\":1,\"ok\":1}";
    listed.Run(*factory, callbacks);
    EXPECT_EQ(listed.body, "{\"ok\":1}") << type;
  }
  Response bom_unchanged;  // nothing to edit: the body stays as it came
  bom_unchanged.headers.Add("content-type", "application/json");
  bom_unchanged.body = "\xEF\xBB\xBF{\"a\":2}";
  bom_unchanged.Run(*factory, callbacks);
  EXPECT_EQ(bom_unchanged.body, "\xEF\xBB\xBF{\"a\":2}");
}

TEST(ResponseTransformerTest, ErrorStatusesAreTransformedToo) {
  auto factory = Compile(R"pb(body { remove: "stack" })pb");
  FakeCallbacks callbacks;
  Response r;
  r.status = 500;
  r.headers.Add("content-type", "application/json");
  r.body = "{\"error\":\"boom\",\"stack\":\"at x\"}";
  r.Run(*factory, callbacks);
  EXPECT_EQ(r.body, "{\"error\":\"boom\"}");
}

TEST(ResponseTransformerTest, ErrorsNameTheField) {
  std::string all = Errors(R"pb(
    headers {
      remove: "host"
      rename { from: "content-length" to: "x-len" }
      replace { name: "host" value: "h" }
      add { name: "x-a" value: "%HEADER(x-b)%" }
      append { name: "x-b" value: "%CAPTURE(1)%" }
      append { name: "x-c" value: "%QUERY(q)%" }
    }
    body {
      remove: ""
      add { name: "a" value: "{'single': 1}" }
      replace { name: "b" value: "\"%QUERY(q)%\"" }
      max_body_bytes: 99999999
    }
  )pb");
  for (const char* want : {
           "headers.remove[0]: host is a request field",
           "headers.rename[0].from: 'content-length' is set by the gateway",
           "headers.replace[0].name: host is a request field",
           "headers.add[0].value: %HEADER(x-b)% is not available here",
           "headers.append[0].value: %CAPTURE(1)% is not available here",
           "headers.append[1].value: %QUERY(q)% is not available here",
           "body.remove[0]: is required",
           "body.add[0].value: not valid JSON",
           "body.replace[0].value: %QUERY(q)% is not available here",
           "body.max_body_bytes: is 99999999; at most 16777216",
       }) {
    EXPECT_TRUE(absl::StrContains(all, want)) << "want: " << want << "\nall:\n"
                                              << all;
  }
  EXPECT_EQ(Errors(R"pb(
              headers { add { name: "x-a" value: "%CONSUMER% %TLS_SNI%" } }
              body {
                add { name: "at" value: "\"%ROUTE%\"" }
                add { name: "n" value: "-1.5e-3" }
              }
            )pb"),
            "");
}

// gRPC's status fields are refused at apply: an added grpc-status sat next
// to the upstream's (a trailers-only answer's) and made clients read either;
// this policy edits no trailers, so even a removal missed most answers.
TEST(ResponseTransformerTest, GrpcStatusFieldsAreNotEdited) {
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator("response-transformer")
      ->ValidateNew(Parse(R"pb(headers {
                                 remove: "grpc-message"
                                 rename { from: "Grpc-Status" to: "x-status" }
                                 replace { name: "grpc-status-details-bin" value: "AA" }
                                 add { name: "grpc-status" value: "0" }
                                 append { name: "x-grpc-status" value: "0" }
                               })pb"),
                    &errors);
  std::string all;
  for (const auto& e : errors) all += e.field + ": " + e.message + "\n";
  EXPECT_EQ(errors.size(), 3u) << all;
  // A removal takes the field out of trailers too: grpc-message may go.
  EXPECT_FALSE(absl::StrContains(all, "headers.remove[0]")) << all;
  for (const char* want : {
           "headers.rename[0].from: 'Grpc-Status' is a gRPC call's outcome",
           "headers.replace[0].name: 'grpc-status-details-bin' goes with a gRPC call's status, "
           "in the trailers the upstream sends; a policy can remove it (from trailers too) but "
           "not write it",
           "headers.add[0].name: 'grpc-status' is a gRPC call's outcome, which the upstream "
           "sends in the trailers after its messages; a policy cannot change or remove it",
       }) {
    EXPECT_TRUE(absl::StrContains(all, want)) << "want: " << want << "\nall:\n" << all;
  }
  EXPECT_EQ(Errors(R"pb(headers { add { name: "grpc-status" value: "0" } })pb"), "")
      << "not a rule for what is stored";
}

}  // namespace
}  // namespace sluice::policy::response_transformer
