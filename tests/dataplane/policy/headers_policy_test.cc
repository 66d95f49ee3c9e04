// The `headers` policy: its config rules through the shared validation
// library, and its filter through the policy registry, as the proxy uses it.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "api/policy_registry.h"
#include "api/validation.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/http/filter.h"
#include "tests/dataplane/policy/fake_callbacks.h"
#include "dataplane/policy/headers/headers_policy.h"
#include "dataplane/policy/registry.h"
#include "google/protobuf/text_format.h"
#include "headers_config.pb.h"

namespace sluice::policy::headers {
namespace {

v1::HeadersConfig Parse(const std::string& text) {
  v1::HeadersConfig config;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &config)) << text;
  return config;
}

std::vector<std::string> Errors(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> errors;
  ValidateHeadersConfig(Parse(text), &errors);
  std::vector<std::string> out;
  for (auto& [field, message] : errors) out.push_back(field + ": " + message);
  return out;
}

std::vector<std::shared_ptr<const http::FilterFactory>> factories_;  // keep compiled chains alive

using testing::FakeCallbacks;

std::unique_ptr<http::Filter> MakeFilter(const std::string& text) {
  const PolicyFactory* factory = FindPolicyFactory("headers");
  EXPECT_NE(factory, nullptr);
  auto compiled = factory->Compile(Parse(text));
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  factories_.push_back(*compiled);
  return (*compiled)->CreateFilter();
}

TEST(HeadersPolicyTest, RegisteredUnderItsName) {
  const api::PolicyValidator* validator = api::FindPolicyValidator("headers");
  ASSERT_NE(validator, nullptr);
  EXPECT_EQ(validator->config_type()->full_name(), "sluice.policy.headers.v1.HeadersConfig");
  EXPECT_NE(FindPolicyFactory("headers"), nullptr);
}

TEST(HeadersPolicyTest, ValidConfigHasNoErrors) {
  EXPECT_TRUE(Errors(R"pb(
    request {
      remove: "x-debug"
      set { name: "host" value: "internal.example" }
      set { name: "x-client" value: "%CLIENT_IP% via %SCHEME% (100%%)" }
      add { name: "x-trace" value: "%REQUEST_ID%" }
    }
    response { add { name: "strict-transport-security" value: "max-age=63072000" } }
  )pb").empty());
}

TEST(HeadersPolicyTest, RulesNameTheField) {
  auto errors = Errors(R"pb(
    request {
      remove: "content-length"
      remove: "host"
      set { name: "bad name" value: "x" }
      add { name: "x-a" value: "%NOPE%" }
      add { name: "x-b" value: "50%" }
      add { name: "" value: "x" }
    }
    response { set { name: "transfer-encoding" value: "gzip" } add { name: "host" value: "h" } }
  )pb");
  std::string all;
  for (const auto& e : errors) all += e + "\n";
  EXPECT_TRUE(absl::StrContains(all, "request.remove[0]: 'content-length' is set by the gateway")) << all;
  EXPECT_TRUE(absl::StrContains(all, "request.remove[1]: host can only be replaced")) << all;
  EXPECT_TRUE(absl::StrContains(all, "request.set[0].name: 'bad name' is not a valid header name")) << all;
  EXPECT_TRUE(absl::StrContains(all, "request.add[0].value: unknown variable %NOPE%")) << all;
  EXPECT_TRUE(absl::StrContains(all, "request.add[1].value: '%' at byte 2 starts no variable")) << all;
  EXPECT_TRUE(absl::StrContains(all, "request.add[2].name: is required")) << all;
  EXPECT_TRUE(absl::StrContains(all, "response.set[0].name: 'transfer-encoding'")) << all;
  EXPECT_TRUE(absl::StrContains(all, "response.add[0].name: host is a request field")) << all;
  // The consumer fields upstreams trust cannot be written on the request;
  // removing them, or writing them on the response, is allowed.
  errors = Errors(R"pb(
    request {
      remove: "x-consumer-name"
      set { name: "X-Consumer-Name" value: "%CLIENT_IP%" }
      add { name: "x-anonymous-consumer" value: "false" }
      add { name: "x_consumer_groups" value: "%CLIENT_IP%" }
    }
    response { set { name: "x-consumer-name" value: "%CONSUMER%" } }
  )pb");
  all.clear();
  for (const auto& e : errors) all += e + "\n";
  EXPECT_TRUE(absl::StrContains(all, "request.set[0].name: 'X-Consumer-Name' is set by the "
                                     "gateway's authentication policies"))
      << all;
  EXPECT_TRUE(absl::StrContains(all, "request.add[0].name: 'x-anonymous-consumer'")) << all;
  // The '_' spelling, which CGI-style upstreams read as the same field.
  EXPECT_TRUE(absl::StrContains(all, "request.add[1].name: 'x_consumer_groups'")) << all;
  EXPECT_EQ(errors.size(), 3u) << all;
}

// The apply-only rules' refusals of `text`, as "field: message".
std::vector<std::string> NewErrors(const std::string& text) {
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator("headers")->ValidateNew(Parse(text), &errors);
  std::vector<std::string> out;
  for (const auto& e : errors) out.push_back(e.field + ": " + e.message);
  return out;
}

// CGI spellings of framing fields (read as Content-Length by PHP, WSGI,
// Rack) and fields the gateway takes off requests are refused at apply
// (before: `content_length: 0` went upstream with a value from the query).
TEST(HeadersPolicyTest, FramingFieldsInCgiSpellingAndExpectAreNotWritten) {
  std::vector<std::string> errors = NewErrors(
      R"pb(request {
             set { name: "content_length" value: "0" }
             add { name: "Transfer_Encoding" value: "chunked" }
             add { name: "Expect" value: "100-continue" }
             add { name: "http2_settings" value: "AAA" }
           })pb");
  ASSERT_EQ(errors.size(), 4u);
  EXPECT_EQ(errors[0], "request.set[0].name: 'content_length' is read as content-length by "
                       "CGI-style servers (PHP, WSGI, Rack), which the gateway sets (connection "
                       "and framing); it cannot be written");
  EXPECT_TRUE(absl::StartsWith(errors[1], "request.add[0].name: 'Transfer_Encoding' is read as "
                                          "transfer-encoding"));
  EXPECT_TRUE(absl::StartsWith(errors[2], "request.add[1].name: 'Expect' is taken off requests"));
  EXPECT_TRUE(absl::StartsWith(errors[3], "request.add[2].name: 'http2_settings' is taken off"));
  // Removing them is fine, and so are other '_' names and responses' fields.
  EXPECT_TRUE(NewErrors(R"pb(request {
                               remove: "content_length"
                               add { name: "x_trace" value: "1" }
                             }
                             response { add { name: "content_length" value: "1" } })pb")
                  .empty());
}

// gRPC's status goes in trailers: a grpc-status set on responses (or
// removed) failed every call through the route ("No status received"), and
// turned a NOT_FOUND into UNKNOWN. Refused at apply; grpc-message and
// grpc-status-details-bin may still be removed (from trailers too).
TEST(HeadersPolicyTest, GrpcStatusIsNotEdited) {
  std::vector<std::string> errors = NewErrors(
      R"pb(response {
             set { name: "grpc-status" value: "0" }
             add { name: "Grpc-Message" value: "hidden" }
             remove: "GRPC-STATUS"
             remove: "grpc-message"
             remove: "grpc-status-details-bin"
           })pb");
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_EQ(errors[0], "response.remove[0]: 'GRPC-STATUS' is a gRPC call's outcome, which the "
                       "upstream sends in the trailers after its messages; a policy cannot "
                       "change or remove it (gRPC clients would fail every call: No status "
                       "received)");
  EXPECT_TRUE(absl::StartsWith(errors[1], "response.set[0].name: 'grpc-status' is a gRPC"));
  EXPECT_EQ(errors[2], "response.add[0].name: 'Grpc-Message' goes with a gRPC call's status, "
                       "in the trailers the upstream sends; a policy can remove it (from "
                       "trailers too) but not write it");
  // Requests' fields of those names are no one's business but the client's.
  EXPECT_TRUE(NewErrors(R"pb(request { set { name: "grpc-status" value: "0" } })pb").empty());
  EXPECT_TRUE(Errors(R"pb(response { set { name: "grpc-status" value: "0" } })pb").empty())
      << "not a rule for what is stored";
}

// A Host set to a literal that is no host[:port] (a port over 65535, a
// space) is refused at apply: every request on the route got 400. One with
// variables is checked per request.
// (Apply-only: a stored config an older build took still loads.)
TEST(HeadersPolicyTest, ALiteralHostMustBeAHost) {
  const std::string bad = R"pb(request { set { name: "Host" value: "b:70000" } })pb";
  std::vector<std::string> errors = NewErrors(bad);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "request.set[0].value: 'b:70000' is not a valid host (host[:port], the "
                       "port 0..65535): every request would get 400");
  EXPECT_TRUE(Errors(bad).empty());  // not a rule for what is stored
  EXPECT_EQ(NewErrors(R"pb(request { set { name: "host" value: "a b" } })pb").size(), 1u);
  EXPECT_EQ(NewErrors(R"pb(request { set { name: "host" value: "" } })pb").size(), 1u);
  EXPECT_TRUE(NewErrors(R"pb(request { set { name: "host" value: "api.internal:8443" } })pb").empty());
  EXPECT_TRUE(NewErrors(R"pb(request { set { name: "host" value: "[::1]:80" } })pb").empty());
  EXPECT_TRUE(NewErrors(R"pb(request { set { name: "host" value: "%REQUEST_ID%.svc" } })pb").empty());
  EXPECT_TRUE(NewErrors(R"pb(request { set { name: "x-host" value: "a b" } })pb").empty());
}

// A value with white space at an end was sent over HTTP/1 and dropped by
// HTTP/2 (a malformed field there): refused at apply, either side.
TEST(HeadersPolicyTest, AValueHasNoWhiteSpaceAtItsEnds) {
  const std::string bad = R"pb(request { set { name: "x-a" value: " lead and trail " } }
                               response { add { name: "x-ok" value: "fine" }
                                          add { name: "x-b" value: "trail\t" } })pb";
  std::vector<std::string> errors = NewErrors(bad);
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_TRUE(absl::StartsWith(errors[0], "request.set[0].value: begins or ends with white space"))
      << errors[0];
  EXPECT_TRUE(absl::StartsWith(errors[1], "response.add[1].value: begins or ends with white space"))
      << errors[1];
  EXPECT_TRUE(Errors(bad).empty());  // not a rule for what is stored
  EXPECT_TRUE(NewErrors(R"pb(response { set { name: "x-a" value: "a  b" } })pb").empty());
}

TEST(HeadersPolicyTest, ValueLimitsAndControlCharacters) {
  v1::HeadersConfig config;
  auto* add = config.mutable_request()->add_add();
  add->set_name("x-big");
  add->set_value(std::string(kMaxValueBytes + 1, 'a'));
  auto* crlf = config.mutable_response()->add_set();
  crlf->set_name("x-split");
  crlf->set_value("a\r\nx-injected: 1");
  std::vector<std::pair<std::string, std::string>> errors;
  ValidateHeadersConfig(config, &errors);
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0].first, "request.add[0].value");
  EXPECT_EQ(errors[1].first, "response.set[0].value");
  EXPECT_EQ(errors[1].second, "has a control character at byte 2: only HTAB is allowed");
  // Any control but HTAB (RFC 9110 5.5): before, only CR, LF and NUL.
  for (const std::string& value : {std::string("a\x01b"), std::string("a\x7f")}) {
    crlf->set_value(value);
    errors.clear();
    ValidateHeadersConfig(config, &errors);
    EXPECT_EQ(errors.size(), 2u) << value;
  }
  crlf->set_value("a\tb");
  errors.clear();
  ValidateHeadersConfig(config, &errors);
  EXPECT_EQ(errors.size(), 1u);
}

TEST(HeadersPolicyTest, FilterRemovesThenSetsThenAdds) {
  auto filter = MakeFilter(R"pb(
    request {
      remove: "X-Debug"
      set { name: "x-env" value: "prod" }
      add { name: "x-trace" value: "id=%REQUEST_ID% ip=%CLIENT_IP% %METHOD% %ROUTE% %%" }
    }
    response { remove: "server" add { name: "x-served-by" value: "sluice" } }
  )pb");
  FakeCallbacks callbacks;
  callbacks.info_.request_id = "req-1";
  callbacks.info_.client_ip = "10.0.0.7";
  callbacks.info_.method = "GET";
  callbacks.info_.route_name = "users";
  http::HeaderMap request;
  request.Add("x-debug", "1");
  request.Add("X-Env", "dev");
  request.Add("x-env", "staging");
  request.Add("accept", "*/*");
  EXPECT_EQ(filter->OnRequestHeaders(request, callbacks), http::FilterStatus::kContinue);
  EXPECT_EQ(request.Get("x-debug"), nullptr);
  ASSERT_NE(request.Get("x-env"), nullptr);
  EXPECT_EQ(*request.Get("x-env"), "prod");
  EXPECT_EQ(request.size(), 3u);  // x-env once, accept, x-trace
  EXPECT_EQ(*request.Get("x-trace"), "id=req-1 ip=10.0.0.7 GET users %");

  http::HeaderMap response;
  response.Add("Server", "origin");
  filter->OnResponseHeaders(200, response, callbacks);
  EXPECT_EQ(response.Get("server"), nullptr);
  EXPECT_EQ(*response.Get("x-served-by"), "sluice");
  EXPECT_EQ(callbacks.replies_, 0);
}

// A value that renders empty sends no empty field, as nginx and Envoy leave
// it out: `set` takes the client's fields of that name away (it cannot supply
// the value), `add` adds nothing. Before: an empty field went upstream.
TEST(HeadersPolicyTest, AValueThatRendersEmptySendsNoField) {
  auto filter = MakeFilter(R"pb(
    request {
      set { name: "x-consumer-id" value: "%CONSUMER%" }
      set { name: "accept-encoding" value: "" }
      add { name: "x-client-cert" value: "%TLS_CLIENT_SUBJECT%" }
      add { name: "x-sni" value: "%TLS_SNI%" }
    }
    response { set { name: "x-served-for" value: "%CONSUMER%" } add { name: "x-v" value: "%TLS_VERSION%" } }
  )pb");
  FakeCallbacks callbacks;
  http::HeaderMap request;
  request.Add("X-Consumer-Id", "mallory");
  request.Add("accept-encoding", "gzip");
  request.Add("accept", "*/*");
  filter->OnRequestHeaders(request, callbacks);
  EXPECT_EQ(request.Get("x-consumer-id"), nullptr);
  EXPECT_EQ(request.Get("accept-encoding"), nullptr);
  EXPECT_EQ(request.Get("x-client-cert"), nullptr);
  EXPECT_EQ(request.Get("x-sni"), nullptr);
  EXPECT_EQ(request.size(), 1u);
  http::HeaderMap response;
  response.Add("x-served-for", "origin's");
  filter->OnResponseHeaders(200, response, callbacks);
  EXPECT_EQ(response.size(), 0u);

  // With values, the fields are there.
  auth::Consumer alice;
  alice.name = "alice";
  callbacks.info_.consumer = &alice;
  callbacks.info_.tls_sni = "api.example.com";
  http::HeaderMap again;
  again.Add("x-consumer-id", "mallory");
  filter->OnRequestHeaders(again, callbacks);
  ASSERT_NE(again.Get("x-consumer-id"), nullptr);
  EXPECT_EQ(*again.Get("x-consumer-id"), "alice");
  ASSERT_NE(again.Get("x-sni"), nullptr);
  EXPECT_EQ(*again.Get("x-sni"), "api.example.com");
  EXPECT_EQ(again.Get("x-client-cert"), nullptr);
}

// A field the policy sets or removes reaches the upstream in no other
// spelling CGI-style servers read as the same variable (`X_Client_Cert` was
// forwarded next to the set `x-client-cert`: HTTP_X_CLIENT_CERT), and a
// trailer of that name is dropped even when the head has none (a set value
// that rendered empty).
TEST(HeadersPolicyTest, SetAndRemovedFieldsGoInEverySpelling) {
  auto filter = MakeFilter(R"pb(
    request {
      set { name: "x-client-cert" value: "%TLS_CLIENT_SUBJECT%" }
      remove: "x-debug"
    }
    response { set { name: "x-served-by" value: "gw" } }
  )pb");
  FakeCallbacks callbacks;
  callbacks.info_.tls_peer_subject = "CN=alice";
  http::HeaderMap request;
  request.Add("X_Client_Cert", "CN=admin");
  request.Add("x-client_cert", "CN=admin");
  request.Add("X_DEBUG", "1");
  request.Add("x-other_name", "kept");
  filter->OnRequestHeaders(request, callbacks);
  ASSERT_EQ(request.size(), 2u);
  ASSERT_NE(request.Get("x-client-cert"), nullptr);
  EXPECT_EQ(*request.Get("x-client-cert"), "CN=alice");
  EXPECT_NE(request.Get("x-other_name"), nullptr);
  const http::FilterFactory& factory = *factories_.back();
  EXPECT_EQ(factory.removed_request_fields(),
            (std::vector<std::string>{"x-debug", "x-client-cert"}));
  EXPECT_EQ(factory.removed_response_fields(), (std::vector<std::string>{"x-served-by"}));
}

TEST(HeadersPolicyTest, TlsVariablesAreEmptyOverPlainHttpAndControlBytesAreNeutralized) {
  auto filter = MakeFilter(R"pb(request { set { name: "x-client-cert" value: "[%TLS_CLIENT_SUBJECT%]" } })pb");
  FakeCallbacks callbacks;
  http::HeaderMap request;
  filter->OnRequestHeaders(request, callbacks);
  EXPECT_EQ(*request.Get("x-client-cert"), "[]");
  std::string subject = "/CN=a\r\nx-evil: 1";
  callbacks.info_.tls_peer_subject = subject;
  filter->OnRequestHeaders(request, callbacks);
  EXPECT_EQ(*request.Get("x-client-cert"), "[/CN=a  x-evil: 1]");
  // Every control character but HTAB (a decoded %01, a DEL): before, only
  // CR, LF and NUL were replaced and the rest went upstream.
  std::string controls = "/CN=a\x01" "b\x7f\tc";
  callbacks.info_.tls_peer_subject = controls;
  filter->OnRequestHeaders(request, callbacks);
  EXPECT_EQ(*request.Get("x-client-cert"), "[/CN=a b \tc]");
}

TEST(HeadersPolicyTest, ValidationLibraryChecksPolicyListsOnRoutesAndVirtualHosts) {
  api::Resource resource;
  auto* table = resource.mutable_route_table();
  table->set_name("main");
  auto* vhost = table->add_virtual_hosts();
  vhost->add_domains("*");
  auto* vp = vhost->add_policies();
  vp->set_name("nope");
  auto* route = vhost->add_routes();
  route->mutable_match()->set_prefix("/");
  route->mutable_direct_response()->set_status(200);
  auto* rp = route->add_policies();
  rp->set_name("headers");
  v1::HeadersConfig bad = Parse(R"pb(request { remove: "connection" })pb");
  rp->mutable_typed_config()->PackFrom(bad);
  auto* wrong_type = route->add_policies();
  wrong_type->set_name("headers");
  wrong_type->mutable_typed_config()->PackFrom(api::Resource());
  std::vector<api::ValidationError> errors;
  api::ValidateResource(resource, &errors);
  std::string all;
  for (const auto& e : errors) all += e.ToString() + "\n";
  EXPECT_TRUE(absl::StrContains(all, "virtual_hosts[0].policies[0].name: unknown policy 'nope' (this build has: acl, basic-auth, ")) << all;
  EXPECT_TRUE(absl::StrContains(all, "virtual_hosts[0].routes[0].policies[0].typed_config.request.remove[0]: 'connection'")) << all;
  EXPECT_TRUE(absl::StrContains(all, "policies[1].name: policy 'headers' is listed twice")) << all;
  EXPECT_TRUE(absl::StrContains(all, "policies[1].typed_config: typed_config is a 'type.googleapis.com/sluice.config.v1.Resource'")) << all;
}

}  // namespace
}  // namespace sluice::policy::headers
