// The `request-transformer` policy: its config rules through the validator
// registry, and its filter through the policy registry, as the binaries use
// them. Also the template variables it added to the headers policy's engine.
#include <gtest/gtest.h>
#include <simdjson.h>

#include <algorithm>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "api/policy_registry.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/headers/headers_policy.h"
#include "dataplane/policy/registry.h"
#include "dataplane/policy/request_transformer/request_transformer_config.pb.h"
#include "dataplane/policy/request_transformer/transform.h"
#include "google/protobuf/message.h"
#include "google/protobuf/text_format.h"
#include "tests/dataplane/policy/fake_callbacks.h"

namespace sluice::policy::request_transformer {
namespace {

using testing::FakeCallbacks;

v1::RequestTransformerConfig Parse(const std::string& text) {
  v1::RequestTransformerConfig config;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &config))
      << text;
  return config;
}

// "field: message" lines.
std::string Errors(const v1::RequestTransformerConfig& config) {
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator("request-transformer")->Validate(config, &errors);
  std::string all;
  for (const auto& e : errors) all += e.field + ": " + e.message + "\n";
  return all;
}
std::string Errors(const std::string& text) { return Errors(Parse(text)); }

std::shared_ptr<const http::FilterFactory> Compile(const std::string& text) {
  v1::RequestTransformerConfig config = Parse(text);
  EXPECT_EQ(Errors(config), "") << text;
  auto compiled = FindPolicyFactory("request-transformer")->Compile(config);
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return compiled.ok() ? *compiled : nullptr;
}

// A request through one filter: its head, then (when the factory asks for
// it and the request has one) its whole body, as the stream does.
struct Exchange {
  explicit Exchange(std::string target) : target_(std::move(target)) {
    callbacks.info_.path = target_;
    callbacks.info_.method = "POST";
    callbacks.info_.request_id = "req-7";
    callbacks.info_.client_ip = "10.1.2.3";
    callbacks.info_.route_name = "api";
  }
  // The target that goes upstream.
  std::string target() const { return std::string(callbacks.info_.path); }

  // The head step's status when it answers, else the body step's
  // (kContinue without one).
  http::FilterStatus Run(const http::FilterFactory& factory) {
    auto filter = factory.CreateFilter();
    const http::FilterStatus head = filter->OnRequestHeaders(headers, callbacks);
    if (head != http::FilterStatus::kContinue) return head;
    http::FilterStatus status = http::FilterStatus::kContinue;
    if (factory.request_body_limit() > 0 && !body.empty()) {
      EXPECT_LE(body.size(), factory.request_body_limit());
      status = filter->OnRequestBody(body, callbacks);
    }
    if (status == http::FilterStatus::kContinue) {
      EXPECT_EQ(callbacks.replies_, 0);
    }
    return status;
  }

  std::string target_;
  FakeCallbacks callbacks;
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

TEST(RequestTransformerTest, RegisteredUnderItsNameInTheTransformationPhase) {
  const api::PolicyValidator* validator =
      api::FindPolicyValidator("request-transformer");
  ASSERT_NE(validator, nullptr);
  EXPECT_EQ(validator->config_type()->full_name(),
            "sluice.policy.request_transformer.v1.RequestTransformerConfig");
  auto factory = Compile("");
  ASSERT_NE(factory, nullptr);
  EXPECT_EQ(factory->policy_name(), "request-transformer");
  EXPECT_EQ(factory->phase(), http::FilterPhase::kTransformation);
  EXPECT_EQ(factory->request_body_limit(),
            0u);  // no body edits: the body streams
  EXPECT_EQ(factory->response_body_limit(), 0u);
}

TEST(RequestTransformerTest,
     HeaderEditsRunRemoveRenameReplaceAddAppendInThatOrder) {
  auto factory = Compile(R"pb(
    headers {
      remove: "x-debug"
      remove: "x-old"
      rename { from: "x-user" to: "x-account" }
      rename { from: "x-absent" to: "x-kept" }
      replace { name: "x-env" value: "prod" }
      replace { name: "x-missing" value: "never" }
      replace { name: "host" value: "internal.example" }
      add { name: "x-env" value: "dev" }
      add { name: "x-new" value: "added" }
      add { name: "x-account" value: "not-added" }
      append { name: "x-tag" value: "b" }
      append { name: "x-old" value: "after-remove" }
    }
  )pb");
  Exchange ex("/orders");
  auto& h = ex.headers;
  h.Add("host", "api.example");
  h.Add("X-Debug", "1");
  h.Add("x-old", "1");
  h.Add("x-user", "u1");
  h.Add("x-user", "u2");
  h.Add("x-account", "stale");
  h.Add("x-kept", "k");
  h.Add("x-env", "dev");
  h.Add("x-env", "staging");
  h.Add("x-tag", "a");
  ex.Run(*factory);
  EXPECT_EQ(h.Get("x-debug"), nullptr);
  EXPECT_EQ(All(h, "x-user"), std::vector<std::string>{});
  EXPECT_EQ(All(h, "x-account"),
            (std::vector<std::string>{"u1", "u2"}));  // "stale" replaced
  EXPECT_EQ(All(h, "x-kept"),
            std::vector<std::string>{"k"});  // rename without a from: nothing
  EXPECT_EQ(All(h, "x-env"),
            std::vector<std::string>{"prod"});  // replaced, so add skipped it
  EXPECT_EQ(h.Get("x-missing"), nullptr);       // replace only when present
  EXPECT_EQ(*h.Get("host"), "internal.example");
  EXPECT_EQ(All(h, "x-new"), std::vector<std::string>{"added"});
  EXPECT_EQ(All(h, "x-tag"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(All(h, "x-old"), std::vector<std::string>{
                                 "after-remove"});  // removed, then appended
  EXPECT_EQ(ex.target(),
            "/orders");  // no query or path edit: the path is not set
  EXPECT_TRUE(ex.callbacks.path_.empty());
}

TEST(RequestTransformerTest,
     ValuesUseTemplatesRenderedFromTheRequestAsItArrived) {
  auto factory = Compile(R"pb(
    headers {
      remove: "x-tenant"
      add {
        name: "x-who"
        value: "%CONSUMER%@%CLIENT_IP% id=%REQUEST_ID% route=%ROUTE%"
      }
      add { name: "x-tenant-copy" value: "[%HEADER(X-Tenant)%]" }
      add { name: "x-cookies" value: "[%HEADER(cookie)%]" }
      add { name: "x-page" value: "%QUERY(page)%" }
      add { name: "x-key" value: "%QUERY(api key)%" }
      add { name: "x-none" value: "<%HEADER(x-nothing)%%QUERY(nothing)%>" }
      add { name: "x-form" value: "%QUERY(q)%" }
      append { name: "x-pct" value: "100%%" }
    }
  )pb");
  auth::Consumer alice;
  alice.name = "alice";
  Exchange ex("/v1/list?page=2%20b&size=10&api+key=k1&q=a+b%2Bc");
  ex.callbacks.info_.consumer = &alice;
  ex.headers.Add("x-tenant", "t1");
  ex.headers.Add("X-Tenant", "t2");
  ex.headers.Add("Cookie", "a=1");
  ex.headers.Add("cookie", "b=2; c=3");
  ex.Run(*factory);
  EXPECT_EQ(*ex.headers.Get("x-who"), "alice@10.1.2.3 id=req-7 route=api");
  // Removed by the same policy, yet its values are there: values come first.
  EXPECT_EQ(ex.headers.Get("x-tenant"), nullptr);
  EXPECT_EQ(*ex.headers.Get("x-tenant-copy"), "[t1, t2]");
  // Cookie lines are one cookie-string (RFC 6265 5.4), as HTTP/2's crumbs
  // are joined (RFC 9113 8.2.3). Before: "a=1, b=2; c=3", the cookie a
  // with the value "1, b=2".
  EXPECT_EQ(*ex.headers.Get("x-cookies"), "[a=1; b=2; c=3]");
  EXPECT_EQ(*ex.headers.Get("x-page"), "2 b");  // percent-decoded
  // A name with a space, as query edits take it (refused at apply before),
  // sent with a '+' as a form sends it (before: not found).
  EXPECT_EQ(*ex.headers.Get("x-key"), "k1");
  EXPECT_EQ(*ex.headers.Get("x-none"), "<>");
  // A '+' is a space, as route query matchers and Kong read it; %2B a '+'.
  // Before: "a+b+c".
  EXPECT_EQ(*ex.headers.Get("x-form"), "a b+c");
  EXPECT_EQ(*ex.headers.Get("x-pct"), "100%");
}

// A header value that renders empty sends no empty field (as the `headers`
// policy, nginx and Envoy): `replace` takes the fields away, `add` and
// `append` add none. Query values keep theirs (`?who=` is a parameter).
// What CGI-style servers (PHP, WSGI, Rack) read as the same variable goes
// with a removed, renamed or replaced field (as with the `headers` policy).
// Before: `X_Debug` reached a PHP upstream as HTTP_X_DEBUG after
// `remove: [x-debug]`, and `X_Token` beside a renamed `x-token`.
TEST(RequestTransformerTest, EditedHeadersTakeTheirCgiSpellingsAlong) {
  auto factory = Compile(R"pb(
    headers {
      remove: "x-debug"
      rename { from: "x-user-token" to: "x-token" }
      replace { name: "x-env" value: "prod" }
    }
  )pb");
  Exchange ex("/orders");
  auto& h = ex.headers;
  h.Add("host", "api.example");
  h.Add("X_Debug", "1");
  h.Add("x-user-token", "t1");
  h.Add("X_User_Token", "other");
  h.Add("X_Token", "spoof");
  h.Add("x-env", "dev");
  h.Add("x_env", "dev2");
  h.Add("x_kept", "k");
  ex.Run(*factory);
  EXPECT_EQ(h.Get("x_debug"), nullptr);
  EXPECT_EQ(h.Get("x_user_token"), nullptr);
  EXPECT_EQ(h.Get("x_token"), nullptr);
  EXPECT_EQ(All(h, "x-token"), std::vector<std::string>{"t1"});
  EXPECT_EQ(h.Get("x_env"), nullptr);
  EXPECT_EQ(All(h, "x-env"), std::vector<std::string>{"prod"});
  EXPECT_EQ(All(h, "x_kept"), std::vector<std::string>{"k"});
}

TEST(RequestTransformerTest, AHeaderValueThatRendersEmptySendsNoField) {
  auto factory = Compile(R"pb(
    headers {
      replace { name: "x-tenant" value: "%HEADER(x-absent)%" }
      add { name: "x-who" value: "%CONSUMER%" }
      append { name: "x-page" value: "%QUERY(page)%" }
      append { name: "x-kept" value: "<%CONSUMER%>" }
    }
    query { add { name: "who" value: "%CONSUMER%" } }
  )pb");
  Exchange ex("/v1/list");
  ex.headers.Add("x-tenant", "t1");
  ex.headers.Add("x-tenant", "t2");
  ex.Run(*factory);
  EXPECT_EQ(ex.headers.Get("x-tenant"), nullptr);
  EXPECT_EQ(ex.headers.Get("x-who"), nullptr);
  EXPECT_EQ(ex.headers.Get("x-page"), nullptr);
  ASSERT_NE(ex.headers.Get("x-kept"), nullptr);
  EXPECT_EQ(*ex.headers.Get("x-kept"), "<>");
  EXPECT_EQ(ex.target(), "/v1/list?who=");
}

// A literal Host replacement that is no host is refused at apply (every
// request got 400 at run time).
TEST(RequestTransformerTest, ALiteralHostReplacementMustBeAHost) {
  auto new_errors = [](const std::string& text) {
    std::vector<api::PolicyConfigError> errors;
    api::FindPolicyValidator("request-transformer")->ValidateNew(Parse(text), &errors);
    std::string all;
    for (const auto& e : errors) all += e.field + ": " + e.message + "\n";
    return all;
  };
  const std::string bad = R"pb(headers { replace { name: "host" value: "b:1:2" } })pb";
  std::string all = new_errors(bad);
  EXPECT_TRUE(absl::StrContains(all, "headers.replace[0].value: 'b:1:2' is not a valid host"))
      << all;
  EXPECT_EQ(Errors(bad), "");  // apply-only
  EXPECT_EQ(new_errors(R"pb(headers { replace { name: "host" value: "b.internal:8080" } })pb"), "");
}

// The probe's: `content_length` and `Transfer_Encoding` with values from
// the query went upstream; CGI-style servers read them as framing.
TEST(RequestTransformerTest, FramingFieldsInCgiSpellingAreNotWritten) {
  std::vector<api::PolicyConfigError> errors;
  const std::string text = R"pb(headers {
                                  add { name: "content_length" value: "%QUERY(cl)%" }
                                  append { name: "Transfer_Encoding" value: "chunked" }
                                  replace { name: "expect" value: "x" }
                                  rename { from: "x-a" to: "keep_alive" }
                                })pb";
  api::FindPolicyValidator("request-transformer")->ValidateNew(Parse(text), &errors);
  std::string all;
  for (const auto& e : errors) all += e.field + ": " + e.message + "\n";
  EXPECT_EQ(errors.size(), 4u) << all;
  EXPECT_TRUE(absl::StrContains(all, "headers.add[0].name: 'content_length' is read as "
                                     "content-length"))
      << all;
  EXPECT_TRUE(absl::StrContains(all, "headers.append[0].name: 'Transfer_Encoding'")) << all;
  EXPECT_TRUE(absl::StrContains(all, "headers.replace[0].name: 'expect' is taken off")) << all;
  EXPECT_TRUE(absl::StrContains(all, "headers.rename[0].to: 'keep_alive'")) << all;
  EXPECT_EQ(Errors(text), "");  // apply-only
}

TEST(RequestTransformerTest, DecodedQueryBytesCannotSplitAHeader) {
  auto factory =
      Compile(R"pb(headers { add { name: "x-q" value: "%QUERY(q)%" } })pb");
  Exchange ex("/?q=a%0D%0Ax-evil:%201%00");
  ex.Run(*factory);
  EXPECT_EQ(*ex.headers.Get("x-q"), "a  x-evil: 1");  // the end's white space goes
}

// A rendered value loses white space at its ends (RFC 9110 5.5), and one
// that is only white space sends no field. Before: `x-q: x ` went upstream,
// and `%0d%0a` sent a blank field (HTTP/2 upstreams refuse both).
TEST(RequestTransformerTest, RenderedHeaderValuesHaveNoWhiteSpaceAtTheirEnds) {
  auto factory =
      Compile(R"pb(headers { add { name: "x-q" value: "%QUERY(q)%" } })pb");
  Exchange edged("/?q=%20x%09y%20");
  edged.Run(*factory);
  ASSERT_NE(edged.headers.Get("x-q"), nullptr);
  EXPECT_EQ(*edged.headers.Get("x-q"), "x\ty");
  Exchange blank("/?q=%0d%0a");
  blank.Run(*factory);
  EXPECT_EQ(blank.headers.Get("x-q"), nullptr);
}

// At apply: a literal value with white space at its ends (the `headers`
// policy's rule), and a rename to the same name in another case (it did
// nothing).
TEST(RequestTransformerTest, EdgeWhiteSpaceAndACaseOnlyRenameAreRefusedAtApply) {
  const std::string text = R"pb(headers {
    add { name: "x-a" value: " lead" }
    append { name: "x-b" value: "t\t" }
    rename { from: "x-c" to: "X-C" }
  })pb";
  EXPECT_EQ(Errors(text), "");  // apply-only: a stored one keeps loading
  for (const char* policy : {"request-transformer", "response-transformer"}) {
    std::vector<api::PolicyConfigError> errors;
    const google::protobuf::Descriptor* type = api::FindPolicyValidator(policy)->config_type();
    std::unique_ptr<google::protobuf::Message> config(
        google::protobuf::MessageFactory::generated_factory()->GetPrototype(type)->New());
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(text, config.get()));
    api::FindPolicyValidator(policy)->ValidateNew(*config, &errors);
    std::string all;
    for (const auto& e : errors) all += e.field + ": " + e.message + "\n";
    EXPECT_EQ(all,
              "headers.rename[0].to: is the same as from (field names are case-insensitive)\n"
              "headers.add[0].value: begins or ends with white space, which a field value "
              "cannot (RFC 9110 5.5: HTTP/2 drops such a field, HTTP/1 would send it)\n"
              "headers.append[0].value: begins or ends with white space, which a field value "
              "cannot (RFC 9110 5.5: HTTP/2 drops such a field, HTTP/1 would send it)\n")
        << policy;
  }
}

// A value that is percent-encoded (a query value) or escaped (a JSON
// string) keeps the bytes it was given: only header values lose their
// control characters. Before: a decoded %01 became a space everywhere.
TEST(RequestTransformerTest, EncodedValuesKeepControlBytes) {
  auto factory = Compile(R"pb(
    query { add { name: "copy" value: "%QUERY(q)%" } }
    body { add { name: "copy" value: "\"%QUERY(q)%\"" } }
  )pb");
  Exchange ex("/?q=a%01b%7Fc");
  ex.headers.Add("content-type", "application/json");
  ex.body = "{}";
  ex.Run(*factory);
  EXPECT_TRUE(absl::StrContains(ex.target(), "copy=a%01b%7Fc")) << ex.target();
  EXPECT_EQ(ex.body, "{\"copy\":\"a\\u0001b\x7f" "c\"}");
}

TEST(RequestTransformerTest,
     QueryEditsKeepUntouchedParametersAsSentAndEncodeNewOnes) {
  auto factory = Compile(R"pb(
    query {
      remove: "debug"
      rename { from: "q" to: "search" }
      replace { name: "limit" value: "50" }
      replace { name: "absent" value: "x" }
      add { name: "lang" value: "en" }
      add { name: "page" value: "9" }
      append { name: "tag" value: "a b&c=d/é" }
      append { name: "who" value: "%CONSUMER%" }
    }
  )pb");
  auth::Consumer bob;
  bob.name = "bob+1";
  Exchange ex(
      "/items?q=caf%C3%A9&limit=5&debug=1&page=3&limit=7&search=old&x=%2F");
  ex.callbacks.info_.consumer = &bob;
  ex.Run(*factory);
  EXPECT_EQ(ex.target(),
            "/items?search=caf%C3%A9&limit=50&page=3&x=%2F&lang=en&tag=a%20b%"
            "26c%3Dd/%C3%A9"
            "&who=bob%2B1");
}

TEST(RequestTransformerTest,
     QueryNamesMatchDecodedAndAnEmptiedQueryLosesItsMark) {
  auto factory = Compile(R"pb(query { remove: "api key" })pb");
  Exchange ex("/x?api%20key=secret&api%20key=2");
  ex.Run(*factory);
  EXPECT_EQ(ex.target(), "/x");
  // Removed in every spelling PHP reads as it (it went upstream as
  // `api%20key%00=...`, `api+key[]=...`: $_GET['api_key']).
  auto php = Compile(R"pb(query { remove: "debug" })pb");
  for (const char* spelling : {"debug%00", "+debug", "debug[]", "deb%75g"}) {
    Exchange spelled(absl::StrCat("/x?", spelling, "=1&k=2"));
    spelled.Run(*php);
    EXPECT_EQ(spelled.target(), "/x?k=2") << spelling;
  }
  // Renamed and read: the name itself (percent-decoded); PHP's spellings are
  // other parameters to most upstreams, and keep their bytes.
  auto rename = Compile(R"pb(
    query { rename { from: "q" to: "search" } }
    headers { add { name: "x-q" value: "%QUERY(q)%" } })pb");
  Exchange php_only("/x?q%00zzz=hello&q[a]=1&%20q=2");
  php_only.Run(*rename);
  EXPECT_EQ(php_only.target(), "/x?q%00zzz=hello&q[a]=1&%20q=2");
  EXPECT_EQ(php_only.headers.Get("x-q"), nullptr);
  Exchange both("/x?q[a]=1&%71=find");
  both.Run(*rename);
  EXPECT_EQ(both.target(), "/x?q[a]=1&search=find");
  ASSERT_NE(both.headers.Get("x-q"), nullptr);
  EXPECT_EQ(*both.headers.Get("x-q"), "find");
  // A rename onto a PHP spelling of its own name keeps the renamed ones.
  auto onto = Compile(R"pb(query { rename { from: "a.b" to: "a_b" } })pb");
  Exchange dotted("/x?a.b=1&a_b=2");
  dotted.Run(*onto);
  EXPECT_EQ(dotted.target(), "/x?a_b=1");
  // Nothing to change: the target is not touched, odd bytes included.
  Exchange same("/x?a=1&&b");
  same.Run(*factory);
  EXPECT_TRUE(same.callbacks.path_.empty());
  EXPECT_EQ(same.target(), "/x?a=1&&b");
}

TEST(RequestTransformerTest,
     PathRegexRewritesThePathWithCapturesAndKeepsTheQuery) {
  auto factory = Compile(R"pb(
    path { regex: "/api/v1/(\\w+)/(\\d+)" rewrite: "/v2/\\1/items/\\2" }
    headers {
      add { name: "x-id" value: "%CAPTURE(2)% of %CAPTURE(1)% (%CAPTURE(0)%)" }
    }
    query { add { name: "kind" value: "%CAPTURE(1)%" } }
  )pb");
  Exchange ex("/api/v1/books/42?sort=asc");
  ex.Run(*factory);
  EXPECT_EQ(ex.target(), "/v2/books/items/42?sort=asc&kind=books");
  EXPECT_EQ(*ex.headers.Get("x-id"), "42 of books (/api/v1/books/42)");

  // The regex must match the whole path; otherwise the path stays and the
  // captures are empty.
  Exchange partial("/api/v1/books/42/extra");
  partial.Run(*factory);
  EXPECT_EQ(partial.target(), "/api/v1/books/42/extra?kind=");
  EXPECT_EQ(*partial.headers.Get("x-id"), "of  ()");  // no white space at its ends
}

TEST(RequestTransformerTest, PathRewriteWithoutQuery) {
  auto factory =
      Compile(R"pb(path { regex: "/old(/.*)?" rewrite: "/new\\1" })pb");
  Exchange ex("/old/a/b");
  ex.Run(*factory);
  EXPECT_EQ(ex.target(), "/new/a/b");
  Exchange bare("/old?");
  bare.Run(*factory);
  EXPECT_EQ(bare.target(),
            "/new?");  // an unmatched group is empty; the query mark stays
}

TEST(RequestTransformerTest, BodyEditsAskTheStreamToHoldTheBody) {
  EXPECT_EQ(Compile(R"pb(body { remove: "a" })pb")->request_body_limit(),
            1u << 20);
  EXPECT_EQ(Compile(R"pb(body { remove: "a" max_body_bytes: 100 })pb")
                ->request_body_limit(),
            100u);
  EXPECT_EQ(
      Compile(R"pb(body { max_body_bytes: 16777216 })pb")->request_body_limit(),
      0u);
}

TEST(RequestTransformerTest,
     JsonBodyEditsKeepUntouchedFieldsVerbatimAndInOrder) {
  auto factory = Compile(R"pb(
    body {
      remove: "password"
      rename { from: "user" to: "login" }
      replace { name: "n" value: "2" }
      replace { name: "absent" value: "true" }
      add { name: "source" value: "\"gateway\"" }
      add { name: "obj" value: " {\"k\": [1, 2.50, null]} " }
      add { name: "n" value: "3" }
    }
  )pb");
  Exchange ex("/users");
  ex.headers.Add("content-type", "application/json; charset=utf-8");
  ex.body =
      "{ \"user\" : \"al\\u0069ce\",\n \"password\":\"x\", \"nested\": {\"a\": "
      "[1, {\"b\": \"}\"}],"
      " \"c\": 1.50e3}, \"n\": 1, \"s\": \"\\ud83d\\ude00 \\\"q\\\"\", "
      "\"big\": 12345678901234567890 }\n";
  ex.Run(*factory);
  EXPECT_EQ(
      ex.body,
      "{\"login\":\"al\\u0069ce\",\"nested\":{\"a\": [1, {\"b\": \"}\"}], "
      "\"c\": 1.50e3},"
      "\"n\":2,\"s\":\"\\ud83d\\ude00 \\\"q\\\"\",\"big\":12345678901234567890,"
      "\"source\":\"gateway\",\"obj\":{\"k\": [1, 2.50, null]}}");
}

TEST(RequestTransformerTest, JsonFieldsMatchByTheirUnescapedNames) {
  auto factory = Compile(R"pb(
    body {
      remove: "é"
      replace { name: "age" value: "40" }
      rename { from: "dup" to: "once" }
    }
  )pb");
  Exchange ex("/");
  ex.headers.Add("Content-Type", "application/vnd.api+json");
  ex.body = R"({"\u00e9":1,"\u0061ge":30,"dup":1,"once":0,"dup":2})";
  ex.Run(*factory);
  // Every field of a name is affected; renamed keys are written plainly.
  EXPECT_EQ(ex.body, R"({"\u0061ge":40,"once":1,"once":2})");
}

TEST(RequestTransformerTest, JsonTemplateValuesAreEscapedStrings) {
  auto factory = Compile(R"pb(
    headers { remove: "x-note" }
    body {
      add { name: "consumer" value: "\"%CONSUMER%\"" }
      add { name: "note" value: "\"%HEADER(x-note)% \\u00e9 100%%\"" }
      add { name: "path" value: "\"%CAPTURE(1)%\"" }
    }
    path { regex: "/p/(.*)" rewrite: "/q/\\1" }
  )pb");
  auth::Consumer odd;
  odd.name = "o\"dd\\";
  Exchange ex("/p/a%20b");
  ex.callbacks.info_.consumer = &odd;
  ex.headers.Add("content-type", "application/json");
  ex.headers.Add("x-note", std::string("say \"hi\"\t\xff"));
  ex.body = "{}";
  ex.Run(*factory);
  EXPECT_EQ(ex.body,
            "{\"consumer\":\"o\\\"dd\\\\\",\"note\":\"say \\\"hi\\\"\\t\\ufffd "
            "\xc3\xa9 100%\","
            "\"path\":\"a%20b\"}");
  EXPECT_EQ(ex.headers.Get("x-note"), nullptr);
  EXPECT_EQ(ex.target(), "/q/a%20b");
}

TEST(RequestTransformerTest, BodiesThatAreNotJsonObjectsPassUnchanged) {
  auto factory = Compile(R"pb(body {
                                remove: "a"
                                add { name: "b" value: "1" }
                              })pb");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"application/json", "[{\"a\": 1}]"},       // not an object
      {"application/json", "\"a\""},              // a scalar
      {"text/plain", "{\"a\": 1}"},  // not JSON by its type
      {"application/jsonx", "{\"a\": 1}"},
  };
  for (const auto& [type, body] : cases) {
    Exchange ex("/");
    ex.headers.Add("content-type", type);
    ex.body = body;
    ex.Run(*factory);
    EXPECT_EQ(ex.body, body) << type;
  }
  // gRPC's JSON formats frame their messages and a call is never held: not
  // a JSON body. Before: application/grpc+json was one (+json), so a call
  // got INTERNAL, or a bidi stream waited for its end.
  const std::string framed = std::string("\0\0\0\0\x08", 5) + "{\"a\": 1}";
  for (const char* type : {"application/grpc+json", "Application/gRPC-Web+JSON",
                           "application/grpc-web-text+json; charset=utf-8"}) {
    Exchange ex("/");
    ex.headers.Add("content-type", type);
    ex.body = framed;
    auto filter = factory->CreateFilter();
    EXPECT_EQ(filter->OnRequestHeaders(ex.headers, ex.callbacks), http::FilterStatus::kContinue)
        << type;
    EXPECT_FALSE(filter->WantsRequestBody(ex.headers)) << type;
    EXPECT_EQ(ex.callbacks.replies_, 0) << type;
  }
  // JSON simdjson cannot read, from which a field was to be removed: an
  // upstream's parser may read it, field and all (Python reads 1e400 and
  // lone surrogates, JavaScript big integers): refused. Before: sent on
  // with the field.
  for (const std::string body :
       {"{\"a\": 1,}", "{\"a\": \"\xff\"}", "{\"a\": 1} {}",
        "{\"a\": 1, \"n\": 123456789012345678901234567890}", "{\"a\": 1, \"n\": 1e400}",
        "{\"a\": 1, \"s\": \"\\ud800\"}"}) {
    Exchange ex("/");
    ex.headers.Add("content-type", "application/json");
    ex.body = body;
    EXPECT_EQ(ex.Run(*factory), http::FilterStatus::kStopLocalReply) << body;
    EXPECT_EQ(ex.callbacks.status_, 400) << body;
  }
  // Without a field to take out, such a body goes on as it is.
  auto adds_only = Compile(R"pb(body { add { name: "b" value: "1" } })pb");
  Exchange big("/");
  big.headers.Add("content-type", "application/json");
  big.body = "{\"a\": 123456789012345678901234567890}";
  EXPECT_EQ(big.Run(*adds_only), http::FilterStatus::kContinue);
  EXPECT_EQ(big.body, "{\"a\": 123456789012345678901234567890}");
  Exchange untyped("/");
  untyped.body = "{\"a\": 1}";
  untyped.Run(*factory);
  EXPECT_EQ(untyped.body, "{\"a\": 1}");
  // Encoded JSON: a field to take out cannot be, and an upstream that
  // decodes the body would read it: 415. Before: sent on, field and all
  // (also with `Content-Encoding:` empty or `identity, identity`, which
  // Express, Werkzeug and Go read as no coding).
  for (const auto& [coding, encoded] :
       std::vector<std::pair<std::string, bool>>{{"gzip", true},
                                                 {"identity, br", true},
                                                 {"x-gzip", true},
                                                 {"", false},
                                                 {"identity, identity", false},
                                                 {" ", false}}) {
    Exchange ex("/");
    ex.headers.Add("content-type", "application/json");
    ex.headers.Add("content-encoding", coding);
    ex.body = "{\"a\": 1}";
    EXPECT_EQ(ex.Run(*factory),
              encoded ? http::FilterStatus::kStopLocalReply : http::FilterStatus::kContinue)
        << coding;
    if (encoded) {
      EXPECT_EQ(ex.callbacks.status_, 415) << coding;
      EXPECT_NE(ex.callbacks.reply_headers_.Get("accept-encoding"), nullptr);
    } else {
      EXPECT_EQ(ex.body, "{\"b\":1}") << coding;
    }
  }
  // Only adding: an encoded body goes on as it is.
  Exchange gzipped("/");
  gzipped.headers.Add("content-type", "application/json");
  gzipped.headers.Add("content-encoding", "gzip");
  gzipped.body = "{\"a\": 1}";
  EXPECT_EQ(gzipped.Run(*adds_only), http::FilterStatus::kContinue);
  EXPECT_EQ(gzipped.body, "{\"a\": 1}");
}

TEST(RequestTransformerTest, NoChangeLeavesTheBodyBytesAlone) {
  auto factory = Compile(R"pb(body {
                                remove: "absent"
                                replace { name: "also" value: "1" }
                              })pb");
  Exchange ex("/");
  ex.headers.Add("content-type", "application/json");
  ex.body = "{ \"a\" : 1 }\n";
  ex.Run(*factory);
  EXPECT_EQ(ex.body, "{ \"a\" : 1 }\n");
}

TEST(RequestTransformerTest, TheContentTypeThatGoesUpstreamDecides) {
  auto factory = Compile(R"pb(
    headers { replace { name: "content-type" value: "application/json" } }
    body { add { name: "x" value: "1" } }
  )pb");
  Exchange ex("/");
  ex.headers.Add("content-type", "text/plain");
  ex.body = "{}";
  ex.Run(*factory);
  EXPECT_EQ(ex.body, "{\"x\":1}");
}

TEST(RequestTransformerTest, AnEmptyObjectAndALargeBody) {
  auto factory = Compile(R"pb(body {
                                add { name: "k" value: "null" }
                                max_body_bytes: 3000000
                              })pb");
  Exchange ex("/");
  ex.headers.Add("content-type", "application/json");
  std::string big = "{\"blob\":\"" + std::string(2500000, 'z') + "\"}";
  ex.body = big;
  ex.Run(*factory);
  EXPECT_EQ(ex.body, big.substr(0, big.size() - 1) + ",\"k\":null}");
  Exchange empty("/");
  empty.headers.Add("content-type", "application/json");
  empty.body = " { } ";
  empty.Run(*factory);
  EXPECT_EQ(empty.body, "{\"k\":null}");
}

TEST(RequestTransformerTest, ValidConfigHasNoErrors) {
  EXPECT_EQ(
      Errors(R"pb(
        headers {
          remove: "x-a"
          rename { from: "x-b" to: "X-B" }
          replace { name: "Host" value: "h" }
          add { name: "x-c" value: "%HEADER(x-a)% %QUERY(q)% %CAPTURE(1)%" }
          append { name: "x-d" value: "" }
        }
        query {
          remove: "a b"
          append { name: "é" value: "%CONSUMER%" }
        }
        path { regex: "/(a)(b)" rewrite: "/x/\\2/\\1/%2F" }
        body {
          add { name: "k" value: "\"%CAPTURE(2)%\"" }
          max_body_bytes: 16777216
        }
      )pb"),
      "");
}

// What authentication policies tell the upstream cannot be written from
// request values; removing those fields or renaming them away is allowed.
TEST(RequestTransformerTest, TheConsumerFieldsCannotBeWritten) {
  std::string all = Errors(R"pb(
    headers {
      remove: "x-consumer-name"
      rename { from: "x-consumer-groups" to: "x-groups-seen" }
      rename { from: "x-from" to: "X-Consumer-Name" }
      replace { name: "x-anonymous-consumer" value: "false" }
      add { name: "x-consumer-groups" value: "%HEADER(x-g)%" }
      append { name: "x-consumer-id" value: "1" }
    }
  )pb");
  EXPECT_TRUE(absl::StrContains(all, "headers.rename[1].to: 'X-Consumer-Name' is set by the "
                                     "gateway's authentication policies"))
      << all;
  EXPECT_TRUE(absl::StrContains(all, "headers.replace[0].name: 'x-anonymous-consumer'")) << all;
  EXPECT_TRUE(absl::StrContains(all, "headers.add[0].name: 'x-consumer-groups'")) << all;
  EXPECT_TRUE(absl::StrContains(all, "headers.append[0].name: 'x-consumer-id'")) << all;
  EXPECT_FALSE(absl::StrContains(all, "remove[0]")) << all;
  EXPECT_FALSE(absl::StrContains(all, "rename[0]")) << all;
}

TEST(RequestTransformerTest, ErrorsNameTheField) {
  std::string all = Errors(R"pb(
    headers {
      remove: "content-length"
      remove: "host"
      rename { from: "x-a" to: "bad name" }
      rename { from: "x-a" to: "transfer-encoding" }
      rename { from: "x-same" to: "x-same" }
      add { name: "host" value: "h" }
      add { name: "x-b" value: "%NOPE%" }
      append { name: "x-c" value: "%CAPTURE(1)%" }
      replace { name: "" value: "x" }
    }
    query {
      remove: ""
      add { name: "a\tb" value: "1" }
      append { name: "x" value: "50%" }
    }
    body {
      add { name: "a" value: "not json" }
      add { name: "b" value: "{\"a\":}" }
      add { name: "c" value: "\"%BAD%\"" }
      replace { name: "" value: "1" }
      rename { from: "x" to: "x" }
      max_body_bytes: 16777217
    }
  )pb");
  for (const char* want : {
           "headers.remove[0]: 'content-length' is set by the gateway "
           "(connection and framing)",
           "headers.remove[1]: host can only be replaced (headers.replace), "
           "not removed",
           "headers.rename[0].to: 'bad name' is not a valid header name",
           "headers.rename[1].to: 'transfer-encoding' is set by the gateway",
           "headers.rename[2].to: is the same as from",
           "headers.add[0].name: host can only be replaced (headers.replace)",
           "headers.add[1].value: unknown variable %NOPE% (known: %REQUEST_ID%",
           "%HEADER(name)%, %QUERY(name)%)",
           "headers.append[0].value: %CAPTURE(1)% is not available here",
           "headers.replace[0].name: is required",
           "query.remove[0]: is required",
           "query.add[0].name: must not contain control characters",
           "query.append[0].value: '%' at byte 2 starts no variable",
           "body.add[0].value: not valid JSON",
           "body.add[1].value: not valid JSON",
           "body.add[2].value: unknown variable %BAD%",
           "body.replace[0].name: is required",
           "body.rename[0].to: is the same as from",
           "body.max_body_bytes: is 16777217; at most 16777216",
       }) {
    EXPECT_TRUE(absl::StrContains(all, want)) << "want: " << want << "\nall:\n"
                                              << all;
  }
}

TEST(RequestTransformerTest, PathErrors) {
  {
    // Apply-only: a stored config an older build took still loads.
    const auto huge = Parse(R"pb(path { regex: "/(\\pL){1,100}" rewrite: "/b" })pb");
    EXPECT_EQ(Errors(huge), "");
    std::vector<api::PolicyConfigError> errors;
    api::FindPolicyValidator("request-transformer")->ValidateNew(huge, &errors);
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_EQ(errors[0].field, "path.regex");
    EXPECT_TRUE(absl::StartsWith(errors[0].message, "the regular expression compiles to "));
  }
  EXPECT_TRUE(
      absl::StrContains(Errors(R"pb(path { regex: "/(a" rewrite: "/b" })pb"),
                        "path.regex: RE2 error: missing ): /(a"))
      << Errors(R"pb(path { regex: "/(a" rewrite: "/b" })pb");
  EXPECT_EQ(Errors(R"pb(path { rewrite: "/b" })pb"),
            "path.regex: is required with rewrite\n");
  EXPECT_EQ(Errors(R"pb(path { regex: "/a" })pb"),
            "path.rewrite: is required with regex\n");
  EXPECT_EQ(Errors(R"pb(path { regex: "/a" rewrite: "b" })pb"),
            "path.rewrite: must start with '/'\n");
  EXPECT_TRUE(
      absl::StrContains(Errors(R"pb(path { regex: "/a" rewrite: "/b?c=1" })pb"),
                        "path.rewrite: must not contain '?'"));
  EXPECT_TRUE(
      absl::StrContains(Errors(R"pb(path { regex: "/a" rewrite: "/b c" })pb"),
                        "path.rewrite: byte 2 is not a path character"));
  EXPECT_TRUE(absl::StrContains(
      Errors(R"pb(path { regex: "/a" rewrite: "/b%zz" })pb"),
      "path.rewrite: '%' at byte 2 starts no percent-encoding"));
  EXPECT_TRUE(absl::StrContains(
      Errors(R"pb(path { regex: "/a" rewrite: "/\\\\" })pb"),
      "path.rewrite: '\\' at byte 1 is not followed by a group number"));
  EXPECT_TRUE(
      absl::StrContains(Errors(R"pb(path { regex: "/(a)" rewrite: "/\\2" })pb"),
                        "path.rewrite: RE2 error: "))
      << Errors(R"pb(path { regex: "/(a)" rewrite: "/\\2" })pb");
  // Captures beyond the regex's groups.
  EXPECT_TRUE(absl::StrContains(
      Errors(R"pb(path { regex: "/(a)" rewrite: "/" }
                  headers { add { name: "x" value: "%CAPTURE(2)%" } })pb"),
      "headers.add[0].value: %CAPTURE(2)%: path.regex has 1 capture group(s)"));
  // A broken regex is reported once, not again for every %CAPTURE%.
  EXPECT_EQ(
      Errors(R"pb(path { regex: "(" rewrite: "/" }
                  headers { add { name: "x" value: "%CAPTURE(3)%" } })pb"),
      "path.regex: RE2 error: missing ): (\n");
}

TEST(RequestTransformerTest, ListAndValueLimits) {
  v1::RequestTransformerConfig config;
  for (int i = 0; i < 65; ++i) config.mutable_headers()->add_remove("x-a");
  for (int i = 0; i < 64; ++i) config.mutable_query()->add_remove("a");
  auto* big = config.mutable_headers()->add_append();
  big->set_name("x-big");
  big->set_value(std::string(4097, 'v'));
  auto* crlf = config.mutable_query()->add_add();
  crlf->set_name("q");
  crlf->set_value("a\r\nb");
  auto* json = config.mutable_body()->add_add();
  json->set_name("j");
  json->set_value("[1,\n2]");
  auto* long_json = config.mutable_body()->add_replace();
  long_json->set_name("k");
  long_json->set_value("\"" + std::string(4095, 'x') + "\"");
  std::string all = Errors(config);
  EXPECT_TRUE(
      absl::StrContains(all, "headers.remove: has 65 entries; at most 64\n"))
      << all;
  EXPECT_FALSE(absl::StrContains(all, "query.remove:")) << all;
  EXPECT_TRUE(absl::StrContains(
      all, "headers.append[0].value: is 4097 bytes; at most 4096"))
      << all;
  EXPECT_TRUE(absl::StrContains(
      all, "query.add[0].value: has a control character at byte 2: only HTAB is allowed"))
      << all;
  EXPECT_TRUE(absl::StrContains(
      all, "body.add[0].value: has a control character at byte 4: only HTAB is allowed"))
      << all;
  EXPECT_TRUE(absl::StrContains(all, "body.replace[0].value: is 4097 bytes"))
      << all;
}

// The variables this policy added to the shared engine work in the headers
// policy too where they make sense (%CONSUMER%), and are refused where not.
TEST(RequestTransformerTest, HeadersPolicyTemplatesGainConsumerOnly) {
  auth::Consumer carol;
  carol.name = "carol";
  http::StreamInfo info;
  info.consumer = &carol;
  auto consumer = headers::ValueTemplate::Parse("<%CONSUMER%>");
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  EXPECT_EQ(consumer->Render(info), "<carol>");
  info.consumer = nullptr;
  EXPECT_EQ(consumer->Render(info), "<>");
  auto header = headers::ValueTemplate::Parse("%HEADER(x-a)%");
  ASSERT_FALSE(header.ok());
  EXPECT_TRUE(
      absl::StrContains(header.status().message(), "is not available here"));
  EXPECT_FALSE(headers::ValueTemplate::Parse("%CAPTURE(1)%").ok());
  headers::TemplateScope scope;
  scope.request_fields = true;
  EXPECT_FALSE(headers::ValueTemplate::Parse("%HEADER(a b)%", scope).ok());
  EXPECT_FALSE(headers::ValueTemplate::Parse("%HEADER()%", scope).ok());
  EXPECT_FALSE(headers::ValueTemplate::Parse("%QUERY(a=b)%", scope).ok());
  scope.captures = 2;
  EXPECT_TRUE(headers::ValueTemplate::Parse("%CAPTURE(2)%", scope).ok());
  EXPECT_FALSE(headers::ValueTemplate::Parse("%CAPTURE(3)%", scope).ok());
  EXPECT_FALSE(headers::ValueTemplate::Parse("%CAPTURE(10)%", scope).ok());
}

TEST(RequestTransformerTest, JsonQuoteEscapesAndRepairsUtf8) {
  EXPECT_EQ(transformer::JsonQuote(""), "\"\"");
  EXPECT_EQ(transformer::JsonQuote(std::string("a\"\\/\b\f\n\r\t\x01\x7f", 11)),
            "\"a\\\"\\\\/\\b\\f\\n\\r\\t\\u0001\x7f\"");
  EXPECT_EQ(transformer::JsonQuote("\xe2\x82\xac \xf0\x9f\x98\x80"),
            "\"\xe2\x82\xac \xf0\x9f\x98\x80\"");
  // Overlong, surrogate, truncated and stray bytes.
  EXPECT_EQ(transformer::JsonQuote("\xc0\xaf|\xed\xa0\x80|\xe2\x82|\x80"),
            "\"\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd|\\ufffd\\ufffd|\\ufffd\"");
}

// Mutated JSON bodies against an oracle: simdjson's view of the input with
// the edits applied by name must be simdjson's view of the output, and a
// body that is not edited keeps its bytes.
TEST(RequestTransformerTest, JsonEditsAgreeWithSimdjsonOnMutatedBodies) {
  transformer::EditSpec spec;
  spec.remove = {"a"};
  spec.rename = {{"b", "c"}};
  spec.replace = {{"d", "[1]"}};
  spec.add = {{"z", "\"x\""}};
  auto edits =
      transformer::JsonBodyEdits::Compile(spec, transformer::TemplateScope());
  ASSERT_TRUE(edits.ok()) << edits.status();
  const transformer::JsonBodyEdits::Values values =
      edits->Render(transformer::TemplateContext());
  const std::vector<std::string> corpus = {
      R"({"a":1,"b":{"x":[1,"]",{"}":"\""}]},"c":null,"d":-0.5e+2,"e":"\u00e9\\","a":[]})",
      R"( { "k\"ey" : "v\\\"" , "b" : [ ] , "z" : true } )",
      R"({"d":{},"b":"{[","c":[[[]]],"f":false})",
      R"({})",
  };
  // (unescaped key, minified value) pairs of an object, or nullopt.
  auto view = [](const std::string& json)
      -> std::optional<std::vector<std::pair<std::string, std::string>>> {
    simdjson::dom::parser parser;
    simdjson::dom::object object;
    if (parser.parse(json.data(), json.size()).get_object().get(object))
      return std::nullopt;
    std::vector<std::pair<std::string, std::string>> out;
    for (auto kv : object)
      out.emplace_back(std::string(kv.key), simdjson::minify(kv.value));
    return out;
  };
  std::mt19937 rng(20240601);
  const std::string alphabet = "{}[]\",:\\ 0aebdz\x01\xc3";
  int changed = 0, checked = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string body = corpus[rng() % corpus.size()];
    for (int m = rng() % 3; m > 0 && !body.empty(); --m) {
      size_t at = rng() % body.size();
      switch (rng() % 4) {
        case 0:
          body[at] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          body.erase(at, 1);
          break;
        case 2:
          body.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
        case 3:
          body.resize(at);
          break;
      }
    }
    auto before = view(body);
    std::string out = body;
    auto result = edits->Apply(values, &out);
    if (!before.has_value()) {
      EXPECT_TRUE(result == transformer::JsonBodyEdits::Result::kNotJsonObject ||
                  result == transformer::JsonBodyEdits::Result::kUnreadable)
          << body;
      EXPECT_EQ(out, body);
      continue;
    }
    ++checked;
    // The oracle: the same edits by name on simdjson's fields.
    auto want = *before;
    std::erase_if(want, [](const auto& f) { return f.first == "a"; });
    bool has_b = std::any_of(want.begin(), want.end(),
                             [](const auto& f) { return f.first == "b"; });
    if (has_b) {
      std::erase_if(want, [](const auto& f) { return f.first == "c"; });
      for (auto& f : want)
        if (f.first == "b") f.first = "c";
    }
    for (auto& f : want)
      if (f.first == "d") f.second = "[1]";
    if (std::none_of(want.begin(), want.end(),
                     [](const auto& f) { return f.first == "z"; })) {
      want.emplace_back("z", "\"x\"");
    }
    if (result == transformer::JsonBodyEdits::Result::kUnchanged) {
      EXPECT_EQ(out, body);
      EXPECT_EQ(want, *before) << body;
      continue;
    }
    ASSERT_EQ(result, transformer::JsonBodyEdits::Result::kChanged) << body;
    ++changed;
    auto after = view(out);
    ASSERT_TRUE(after.has_value()) << body << "\n -> " << out;
    EXPECT_EQ(*after, want) << body << "\n -> " << out;
  }
  EXPECT_GT(checked, 1000);
  EXPECT_GT(changed, 1000);
}

}  // namespace
}  // namespace sluice::policy::request_transformer
