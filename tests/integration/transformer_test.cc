// request-transformer and response-transformer through real processes:
// config applied with sluicectl, a real proxy, and a real upstream that
// reports what it received (echoed x-test-* fields, the target, the body
// with echo=1) or answers JSON (json=1).
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/http_wire.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

constexpr int kResponseLimit = 4096;
constexpr int kRequestLimit = 65536;

class TransformerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok());
    port_ = PickFreePort();
    ASSERT_EQ(Apply(Config()), 0) << last_error_;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "transformer-proxy");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  std::string Config(const std::string& regex = "'/req/v1/(\\w+)/(\\d+)'") {
    return absl::StrCat(
        "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, "
        "port: ",
        upstream_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n"
        "      routes:\n"
        "        - name: req\n          match: {prefix: /req}\n          "
        "route: {cluster: web}\n"
        "          policies:\n"
        "            - name: request-transformer\n"
        "              typed_config:\n"
        "                headers:\n"
        "                  remove: [x-test-drop]\n"
        "                  rename: [{from: x-test-old, to: x-test-new}]\n"
        "                  replace: [{name: x-test-env, value: prod}]\n"
        "                  add:\n"
        "                    - {name: x-test-seen, value: "
        "'%HEADER(x-test-old)%|%QUERY(q)%|"
        "%CAPTURE(1)%|%ROUTE%'}\n"
        "                  append: [{name: x-test-tag, value: two}]\n"
        "                query:\n"
        "                  remove: [debug]\n"
        "                  rename: [{from: q, to: search}]\n"
        "                  add: [{name: src, value: gw}]\n"
        "                path: {regex: ",
        regex,
        ", rewrite: '/internal/\\1/item/\\2'}\n"
        "                body:\n"
        "                  remove: [password]\n"
        "                  add:\n"
        "                    - {name: via, value: '\"%ROUTE%\"'}\n"
        "                    - {name: n, value: '1'}\n"
        "                    - {name: meta, value: '{\"v\": [1, 2.50]}'}\n"
        "                  max_body_bytes: ",
        kRequestLimit,
        "\n"
        "        - name: host\n          match: {prefix: /host}\n          "
        "route: {cluster: web}\n"
        "          policies:\n"
        "            - name: request-transformer\n"
        "              typed_config:\n"
        "                headers: {replace: [{name: host, value: '%HEADER(x-test-host)%'}]}\n"
        "        - name: resp\n          match: {prefix: /resp}\n          "
        "route: {cluster: web}\n"
        "          policies:\n"
        "            - name: response-transformer\n"
        "              typed_config:\n"
        "                headers:\n"
        "                  remove: [x-upstream]\n"
        "                  add: [{name: x-transformed, value: 'yes'}]\n"
        "                body:\n"
        "                  remove: [secret]\n"
        "                  rename: [{from: upstream, to: origin}]\n"
        "                  add: [{name: gateway, value: '\"sluice\"'}]\n"
        "                  max_body_bytes: ",
        kResponseLimit,
        "\n"
        "        - name: guarded\n          match: {prefix: /guarded}\n          "
        "route: {cluster: web}\n"
        "          policies:\n"
        "            - {name: key-auth, typed_config: {}}\n"
        "            - name: response-transformer\n"
        "              typed_config: {headers: {add: [{name: x-transformed, value: 'yes'}]}}\n"
        "            - name: headers\n"
        "              typed_config: {response: {add: [{name: strict-transport-security, "
        "value: max-age=1}]}}\n"
        "        - name: stamped\n          match: {prefix: /stamped}\n          "
        "route: {cluster: web}\n"
        "          policies:\n"
        "            - name: headers\n"
        "              typed_config: {request: {set: [{name: x-test-role, value: reader}], "
        "remove: [x-test-key]}, response: {remove: [x-test-trailer]}}\n"
        "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ",
        port_, ", route_table: main}\n");
  }

  int Apply(const std::string& yaml) {
    auto r =
        cp_.Ctl({"apply", "-f",
                 WriteFile(MakeTempDir("transformer"), "config.yaml", yaml)});
    last_error_ = r.out + r.err;
    return r.exit_code;
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  ControlPlane cp_{"", "info"};
  UpstreamServer upstream_{"web-1"};
  std::unique_ptr<Proxy> proxy_;
  int port_ = 0;
  std::string last_error_;
};

TEST_F(TransformerTest, HeadersQueryAndPathAsTheUpstreamSeesThem) {
  HttpResponse r =
      HttpGet(address(), "/req/v1/books/42?q=go%20now&debug=1&page=2",
              {{"x-test-drop", "1"},
               {"x-test-old", "o"},
               {"x-test-env", "dev"},
               {"x-test-tag", "one"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(
      r.body,
      "web-1 GET /internal/books/item/42?search=go%20now&page=2&src=gw\n");
  EXPECT_EQ(r.header("x-echo-x-test-drop"), "");
  EXPECT_EQ(r.header("x-echo-x-test-old"), "");
  EXPECT_EQ(r.header("x-echo-x-test-new"), "o");
  EXPECT_EQ(r.header("x-echo-x-test-env"), "prod");
  EXPECT_EQ(r.header("x-echo-x-test-seen"), "o|go now|books|req");
  EXPECT_EQ(r.header("x-echo-x-test-tag"), "two");  // the last of "one", "two"

  // The regex must match the whole path: this one keeps its path.
  r = HttpGet(address(), "/req/v1/books/forty-two?x=1");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.body, "web-1 GET /req/v1/books/forty-two?x=1&src=gw\n");
  EXPECT_EQ(r.header("x-echo-x-test-seen"), "|||req");
  EXPECT_EQ(r.header("x-echo-x-test-env"), "");  // replace only when present
}

// A Host rendered from the request must still be one valid host: an empty,
// repeated or malformed one is the client's 400, never sent upstream.
TEST_F(TransformerTest, AHostMadeFromTheRequestMustBeAValidHost) {
  HttpResponse r = HttpGet(address(), "/host/a", {{"x-test-host", "tenant-1.internal:8080"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-echo-host"), "tenant-1.internal:8080");
  const std::vector<std::vector<std::pair<std::string, std::string>>> bad = {
      {},                                                    // absent: ""
      {{"x-test-host", "a b"}},                              // a space
      {{"x-test-host", "evil.example/x?y"}},                 // a path
      {{"x-test-host", "a"}, {"x-test-host", "b"}},          // joined "a, b"
  };
  for (const auto& headers : bad) {
    r = HttpGet(address(), "/host/a", headers);
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_TRUE(absl::StrContains(r.body, "a policy made the Host field from this request invalid"))
        << r.body;
  }
  EXPECT_EQ(HttpGet(address(), "/host/a", {{"x-test-host", "ok.example"}}).status, 200);
}

TEST_F(TransformerTest, RequestJsonBodyIsEditedAndSentWithItsNewLength) {
  const std::string sent =
      "{\"user\": \"al\\u0069ce\", \"password\": \"pw\", \"n\": 0}";
  const std::string want =
      "{\"user\":\"al\\u0069ce\",\"n\":0,\"via\":\"req\",\"meta\":{\"v\": [1, "
      "2.50]}}";
  HttpConnection conn(address());
  HttpResponse r = conn.Request("POST", "/req/v1/users/7?echo=1",
                                {{"content-type", "application/json"}}, sent);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, want);
  EXPECT_EQ(r.header("x-echo-content-length"), absl::StrCat(want.size()));

  // Chunked from the client: held whole, sent with a length.
  r = conn.Request(
      "POST", "/req/v1/users/7?echo=1",
      {{"content-type", "application/json"}, {"transfer-encoding", "chunked"}},
      EncodeChunked(sent, 3));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.body, want);
  EXPECT_EQ(r.header("x-echo-content-length"), absl::StrCat(want.size()));
  EXPECT_EQ(r.header("x-echo-transfer-encoding"), "");
  EXPECT_EQ(conn.connections_opened(), 1);
}

// Which body the edit applies to depends on Content-Type, a singleton field:
// two of them are refused rather than edited by one and read by the other.
TEST_F(TransformerTest, TwoContentTypesAreRefusedWhereTheBodyIsEdited) {
  HttpResponse r = HttpRequest(address(), "POST", "/req/v1/users/7",
                               {{"content-type", "text/plain"}, {"content-type", "application/json"}},
                               R"({"password":"p"})");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "content-type is given more than once")) << r.body;
  EXPECT_EQ(r.header("x-upstream"), "");
}

TEST_F(TransformerTest, RequestBodiesThatAreNotJsonObjectsGoUpstreamUnchangedUnlessUnreadable) {
  for (const auto& [type, body] :
       std::vector<std::pair<std::string, std::string>>{
           {"text/plain", "{\"password\": 1}"},
           {"application/json", "[1, 2]"},
       }) {
    HttpResponse r = HttpRequest(address(), "POST", "/req/x?echo=1",
                                 {{"content-type", type}}, body);
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, body) << type;
    EXPECT_EQ(r.header("x-echo-content-length"), absl::StrCat(body.size()));
  }
  // JSON the gateway cannot read, on a route that removes a field: an
  // upstream's parser might read it (Python reads 1e400), the password
  // with it. Refused, not sent on.
  for (const std::string body :
       {"{\"password\": 1,}", "{\"password\": \"p\", \"n\": 1e400}"}) {
    HttpResponse r = HttpRequest(address(), "POST", "/req/x?echo=1",
                                 {{"content-type", "application/json"}}, body);
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_TRUE(absl::StrContains(r.body, "not JSON the gateway can read")) << r.body;
    EXPECT_EQ(r.header("x-echo-content-length"), "") << body;  // never reached it
  }
  // A body that is not JSON is not held at all: over max_body_bytes it
  // still streams upstream whole (an upload on the same route).
  std::string upload(kRequestLimit * 3, 'b');
  HttpResponse r =
      HttpRequest(address(), "POST", "/req/x", {{"content-type", "text/plain"}}, upload);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(absl::StrContains(r.body, absl::StrCat("body-bytes=", upload.size()))) << r.body;
  // A JSON body is held: over max_body_bytes, 413.
  r = HttpRequest(address(), "POST", "/req/x", {{"content-type", "application/json"}},
                  std::string(kRequestLimit + 1, ' '));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.header("x-upstream"), "");
  // At the limit, it goes through.
  r = HttpRequest(address(), "POST", "/req/x", {{"content-type", "text/plain"}},
                  std::string(kRequestLimit, 'b'));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(
      absl::StrContains(r.body, absl::StrCat("body-bytes=", kRequestLimit)))
      << r.body;
}

TEST_F(TransformerTest, ResponseJsonFieldRemovedWithTheRightLength) {
  const std::string want =
      "{\"origin\":\"web-1\",\"method\":\"GET\",\"target\":\"/resp/a?json=1\","
      "\"nested\":{\"a\":[1,2.50,{\"b\":null}]},\"gateway\":\"sluice\"}";
  HttpConnection conn(address());
  HttpResponse r = conn.Request("GET", "/resp/a?json=1");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, want);
  EXPECT_EQ(r.header("content-length"), absl::StrCat(want.size()));
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.header("x-upstream"), "");
  EXPECT_EQ(r.header("x-transformed"), "yes");

  // A chunked upstream response is held whole too, and goes out with a length.
  r = conn.Request("GET", "/resp/a?json=1&chunked=1");
  ASSERT_TRUE(r.ok()) << r.error;
  std::string chunked_want = want;
  chunked_want.replace(chunked_want.find("json=1"), 6, "json=1&chunked=1");
  EXPECT_EQ(r.body, chunked_want);
  EXPECT_EQ(r.header("content-length"), absl::StrCat(chunked_want.size()));
  EXPECT_EQ(r.header("transfer-encoding"), "");
  EXPECT_EQ(conn.connections_opened(),
            1);  // the lengths were right: the connection lives on

  // Trailers that came with it still reach the client: the edited body
  // then goes out chunked, with them in the last chunk.
  std::string reply = SendRaw(address(),
                              "GET /resp/a?json=1&chunked=1&trailers=1 HTTP/1.1\r\nhost: t\r\n"
                              "te: trailers\r\nconnection: close\r\n\r\n");
  EXPECT_NE(reply.find("transfer-encoding: chunked"), std::string::npos) << reply;
  EXPECT_NE(reply.find("\"gateway\":\"sluice\"}"), std::string::npos) << reply;
  EXPECT_NE(reply.find("\r\n0\r\nx-test-trailer: done\r\n\r\n"), std::string::npos) << reply;
}

// With body edits, a range of the upstream's body (206) or a compressed
// one went to the client unedited, removed fields included; and the edited
// body kept the upstream's strong ETag and Accept-Ranges.
TEST_F(TransformerTest, BodyEditsAskForTheWholePlainBodyAndWeakenItsValidator) {
  HttpResponse r = HttpGet(address(), "/resp/a?json=1&etag=v1",
                           {{"range", "bytes=10-60"},
                            {"if-range", "\"v1\""},
                            {"accept-encoding", "gzip, br"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(absl::StrContains(r.body, "secret")) << r.body;
  EXPECT_EQ(r.header("x-echo-range"), "");
  EXPECT_EQ(r.header("x-echo-if-range"), "");
  EXPECT_EQ(r.header("x-echo-accept-encoding"), "identity");
  EXPECT_EQ(r.header("etag"), "W/\"v1\"");
  EXPECT_EQ(r.header("accept-ranges"), "");
  // HEAD and a 304 carry the ETag the 200 does (before: the strong one, so a
  // client holding W/"v1" could not freshen it).
  r = HttpRequest(address(), "HEAD", "/resp/a?json=1&etag=v1", {}, "");
  EXPECT_EQ(r.header("etag"), "W/\"v1\"");
  r = HttpGet(address(), "/resp/a?json=1&etag=v1", {{"if-none-match", "W/\"v1\""}});
  EXPECT_EQ(r.status, 304);
  EXPECT_EQ(r.header("etag"), "W/\"v1\"");
  // A route without body edits leaves them alone.
  r = HttpGet(address(), "/stamped/a?etag=v1", {{"range", "bytes=0-3"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.header("x-echo-range"), "bytes=0-3");
  EXPECT_EQ(r.header("etag"), "\"v1\"");
}

TEST_F(TransformerTest,
       OverTheLimitOrNotJsonTheResponsePassesThroughUnchanged) {
  HttpConnection conn(address());
  for (const std::string query :
       {"json=1&size=5000", "json=1&size=5000&chunked=1"}) {
    HttpResponse r = conn.Request("GET", "/resp/big?" + query);
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.status, 200);
    EXPECT_GT(r.body.size(), static_cast<size_t>(kResponseLimit));
    EXPECT_TRUE(absl::StartsWith(r.body, "{\"upstream\":\"web-1\","))
        << r.body.substr(0, 100);
    EXPECT_TRUE(absl::StrContains(r.body, "\"secret\":\"s3cr3t\"")) << query;
    EXPECT_TRUE(absl::EndsWith(r.body, std::string(100, 'x') + "\"}")) << query;
    EXPECT_FALSE(absl::StrContains(r.body, "gateway")) << query;
    // The headers are still the policy's.
    EXPECT_EQ(r.header("x-transformed"), "yes");
    EXPECT_EQ(r.header("x-upstream"), "");
  }
  // Just under the limit: transformed.
  HttpResponse r = conn.Request("GET", "/resp/big?json=1&size=3900");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_FALSE(absl::StrContains(r.body, "secret"));
  EXPECT_TRUE(absl::EndsWith(r.body, "\"gateway\":\"sluice\"}"));
  EXPECT_EQ(r.header("content-length"), absl::StrCat(r.body.size()));
  // Not JSON: untouched.
  r = conn.Request("GET", "/resp/text");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.body, "web-1 GET /resp/text\n");
  EXPECT_EQ(r.header("x-transformed"), "yes");
  // A HEAD response has no body to hold, and no length the edit would change.
  r = conn.Request("HEAD", "/resp/a?json=1");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "");
  EXPECT_EQ(r.header("content-length"), "");
  EXPECT_EQ(conn.connections_opened(), 1);
}

TEST_F(TransformerTest, ConfigErrorsNameTheFieldAndChangeNothing) {
  EXPECT_NE(Apply(Config("'/req/(unclosed'")), 0);
  EXPECT_TRUE(absl::StrContains(
      last_error_,
      "policies[0].typed_config.path.regex: RE2 error: missing ): "))
      << last_error_;
  std::string bad_json = Config();
  bad_json.replace(bad_json.find("value: '1'"), 10, "value: 'one'");
  EXPECT_NE(Apply(bad_json), 0);
  EXPECT_TRUE(absl::StrContains(
      last_error_, "typed_config.body.add[1].value: not valid JSON"))
      << last_error_;
  EXPECT_EQ(proxy_->ReadyVersion(), 1u);
  HttpResponse r = HttpGet(address(), "/req/v1/books/1");
  EXPECT_EQ(r.body, "web-1 GET /internal/books/item/1?src=gw\n");
}

// Response-field policies edit every answer of the route, a refusal by a
// policy of an earlier phase too: key-auth's 401 gets the security header.
// Before: only responses that reached their phase had them.
TEST_F(TransformerTest, ResponseFieldPoliciesEditAnEarlierPolicysRefusal) {
  HttpResponse r = HttpGet(address(), "/guarded/x");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_EQ(r.header("x-transformed"), "yes");
  EXPECT_EQ(r.header("strict-transport-security"), "max-age=1");
}

// On a route with policies a trailer may not repeat a field of the head: the
// policy set x-test-role and removed x-test-key, and an upstream that merges trailers
// would find the client's copies. Other trailers go on.
TEST_F(TransformerTest, TrailersCannotRepeatAFieldThePoliciesHandled) {
  std::string reply = SendRaw(
      address(),
      "POST /stamped HTTP/1.1\r\nhost: t\r\nx-test-key: k1\r\ntransfer-encoding: chunked\r\n"
      "connection: close\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc123\r\n"
      "x-test-role: sneaky-admin\r\nX-Test-Key: sneaky-key\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(reply, "x-echo-trailer-x-checksum: abc123")) << reply;
  EXPECT_TRUE(absl::StrContains(reply, "x-echo-x-test-role: reader")) << reply;
  EXPECT_FALSE(absl::StrContains(reply, "k1")) << reply;
  EXPECT_FALSE(absl::StrContains(reply, "sneaky")) << reply;
  // A field the policy removes, though the head did not carry it (before:
  // forwarded), in a CGI spelling too.
  reply = SendRaw(
      address(),
      "POST /stamped HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n"
      "connection: close\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc123\r\n"
      "X-Test-Key: sneaky-key\r\nx_test_key: sneaky-cgi\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(reply, "x-echo-trailer-x-checksum: abc123")) << reply;
  EXPECT_FALSE(absl::StrContains(reply, "sneaky")) << reply;
  // And a response trailer the policy removes from responses (before:
  // forwarded in the last chunk).
  reply = SendRaw(address(), "GET /stamped?chunked=1&trailers=1 HTTP/1.1\r\nhost: t\r\n"
                             "connection: close\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 200")) << reply;
  EXPECT_TRUE(absl::StrContains(reply, "\r\n0\r\n\r\n")) << reply;
  EXPECT_FALSE(absl::StrContains(reply, "\r\nx-test-trailer:")) << reply;
  // A field the policy renames from comes back as a trailer under its old
  // name no more (it was forwarded unrenamed).
  reply = SendRaw(
      address(),
      "POST /req HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n"
      "connection: close\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc123\r\n"
      "x-test-old: sneaky-old\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(reply, "x-echo-trailer-x-checksum: abc123")) << reply;
  EXPECT_FALSE(absl::StrContains(reply, "sneaky")) << reply;
}

}  // namespace
}  // namespace sluice::testing
