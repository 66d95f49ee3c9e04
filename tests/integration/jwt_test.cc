// The `jwt` policy through real processes: config applied with sluicectl
// (the JWK Set validated by the control plane), a real proxy verifying
// ES256 tokens made by PyJWT at test time against the real clock, and a real
// upstream seeing the consumer and the claim headers (x-test-* names: the
// upstream echoes those).
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/dataplane/policy/jwt_material.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

class JwtIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(material_.error.empty()) << material_.error;
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok());
    port_ = PickFreePort();
    ASSERT_EQ(Apply(Config("[ES256]")), 0) << last_error_;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "jwt-proxy");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  std::string Config(const std::string& algorithms) {
    // The JWK Set as a YAML single-quoted string (JSON has no single quotes).
    return absl::StrCat(
        "kind: Consumer\nname: alice\nspec: {groups: [staff], keys: [{key: alice-key-0123456789}]}\n---\n"
        "kind: Consumer\nname: guest\nspec: {groups: [public]}\n---\n"
        "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n"
        "      routes:\n"
        "        - name: api\n          match: {prefix: /api}\n          route: {cluster: web}\n"
        "          policies:\n"
        "            - name: jwt\n"
        "              typed_config:\n"
        "                jwks: '",
        material_.jwks.at("es256"),
        "'\n"
        "                algorithms: ",
        algorithms,
        "\n"
        "                issuers: ['https://issuer.test']\n"
        "                audiences: [api]\n"
        "                consumer_claim: sub\n"
        "                query_parameter: access_token\n"
        "                claims_to_headers:\n"
        "                  - {claim: email, header: x-test-user-email}\n"
        "                  - {claim: roles, header: x-test-user-roles}\n"
        "        - name: mixed\n          match: {prefix: /mixed}\n          route: {cluster: web}\n"
        "          policies:\n"
        "            - {name: key-auth, typed_config: {key_names: [apikey]}}\n"
        "            - name: jwt\n"
        "              typed_config:\n"
        "                jwks: '",
        material_.jwks.at("es256"),
        "'\n"
        "                algorithms: [ES256]\n"
        "                issuers: ['https://issuer.test']\n"
        "                audiences: [api]\n"
        "                consumer_claim: sub\n"
        "                claims_to_headers: [{claim: roles, header: x-test-user-roles}]\n"
        "        - name: lenient\n          match: {prefix: /lenient}\n          route: {cluster: web}\n"
        "          policies:\n"
        "            - {name: key-auth, typed_config: {key_names: [apikey], anonymous: guest}}\n",
        EsJwtPolicy(""),
        "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ",
        port_, ", route_table: main}\n");
  }

  // A route's jwt policy item: ES256 with the test JWK Set, the token also
  // in ?access_token, and `more` typed_config lines.
  std::string EsJwtPolicy(const std::string& more) const {
    return absl::StrCat(
        "            - name: jwt\n"
        "              typed_config:\n"
        "                jwks: '",
        material_.jwks.at("es256"),
        "'\n"
        "                algorithms: [ES256]\n"
        "                query_parameter: access_token\n",
        more);
  }

  int Apply(const std::string& yaml) {
    auto r = cp_.Ctl({"apply", "-f", WriteFile(MakeTempDir("jwt"), "config.yaml", yaml)});
    last_error_ = r.out + r.err;
    return r.exit_code;
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  // Claims relative to the real clock: ES256 expires in an hour, "expired"
  // an hour ago.
  JwtMaterial material_ = MakeJwtMaterial(absl::ToUnixSeconds(absl::Now()));
  ControlPlane cp_{"", "info"};
  UpstreamServer upstream_{"web-1"};
  std::unique_ptr<Proxy> proxy_;
  int port_ = 0;
  std::string last_error_;
};

TEST_F(JwtIntegrationTest, AValidTokenReachesTheUpstreamWithItsConsumerAndClaims) {
  HttpConnection conn(address());
  for (int i = 0; i < 2; ++i) {  // verified, then from the cache
    HttpResponse r = conn.Request(
        "GET", "/api/orders",
        {{"authorization", "Bearer " + material_.token("ES256")},
         {"x-test-user-email", "mallory@example.com"},
         {"x-consumer-name", "mallory"}});
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-echo-x-consumer-name"), "alice");
    EXPECT_EQ(r.header("x-echo-x-consumer-groups"), "staff");
    EXPECT_EQ(r.header("x-echo-x-test-user-email"), "alice@example.com");
    EXPECT_EQ(r.header("x-echo-x-test-user-roles"), "admin,dev");
    EXPECT_EQ(r.header("x-echo-authorization"), "");
  }
  // In the query: removed from the target the upstream sees.
  HttpResponse q =
      HttpGet(address(), "/api/orders?access_token=" + material_.token("ES256") + "&page=2");
  ASSERT_TRUE(q.ok()) << q.error;
  EXPECT_EQ(q.status, 200) << q.body;
  EXPECT_EQ(q.body, "web-1 GET /api/orders?page=2\n");
}

// With two authentication policies, the one that never ran (key-auth let the
// caller in first) still removes the client's copies of what it sets: a
// forged claim header does not reach the upstream, nor its _ spelling, nor
// the other policy's unused credentials. Before: x-test-user-roles: admin
// arrived next to the key-auth consumer.
TEST_F(JwtIntegrationTest, APolicyTheGroupSkippedStillRemovesForgedFields) {
  HttpResponse r = HttpGet(address(), "/mixed/x",
                           {{"apikey", "alice-key-0123456789"},
                            {"x-test-user-roles", "superadmin"},
                            {"x_test_user_roles", "superadmin"},
                            {"authorization", "Bearer " + material_.token("ES256")}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-echo-x-consumer-name"), "alice");
  EXPECT_EQ(r.header("x-echo-x-test-user-roles"), "");
  EXPECT_EQ(r.header("x-echo-x_test_user_roles"), "");
  EXPECT_EQ(r.header("x-echo-authorization"), "");
  EXPECT_EQ(r.header("x-echo-apikey"), "");
  // Nor as request trailers, which the head never named (key-auth let the
  // caller in, so the jwt policy never ran).
  std::string reply = SendRaw(
      address(),
      "POST /mixed/t HTTP/1.1\r\nhost: a\r\napikey: alice-key-0123456789\r\n"
      "transfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n"
      "x-test-user-roles: root\r\nx_test_user_roles: root\r\nx-checksum: ok\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(reply, "x-echo-trailer-x-checksum: ok")) << reply;
  EXPECT_FALSE(absl::StrContains(reply, "root")) << reply;
  // Nor credentials the gateway never checked: with the key in the query, a
  // key field or a token in a trailer (both went upstream before).
  reply = SendRaw(
      address(),
      "POST /mixed/t?apikey=alice-key-0123456789 HTTP/1.1\r\nhost: a\r\n"
      "transfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n"
      "apikey: bob-forged\r\nAPIKEY: bob-forged\r\nauthorization: Bearer bob-forged\r\n"
      "x-checksum: ok\r\n\r\n");
  EXPECT_TRUE(absl::StrContains(reply, "x-echo-trailer-x-checksum: ok")) << reply;
  EXPECT_TRUE(absl::StrContains(reply, "x-echo-x-consumer-name: alice")) << reply;
  EXPECT_FALSE(absl::StrContains(reply, "bob-forged")) << reply;
  // The jwt alone: the _ spelling of its claim header goes too.
  r = HttpGet(address(), "/api/orders",
              {{"authorization", "Bearer " + material_.token("ES256")},
               {"x_test_user_email", "mallory@example.com"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-echo-x_test_user_email"), "");
  EXPECT_EQ(r.header("x-echo-x-test-user-email"), "alice@example.com");
}

// Two Authorization fields: the token checked (here the query's) was not
// the one forwarded, and a forged second Bearer reached the upstream.
TEST_F(JwtIntegrationTest, ASecondAuthorizationFieldNeverCarriesATokenPastThePolicy) {
  const std::string forged = "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJyb290In0.AAAA";
  HttpResponse r =
      HttpGet(address(), "/api/orders?access_token=" + material_.token("ES256"),
              {{"authorization", "Basic eDp5"}, {"authorization", forged}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "more than one authorization field")) << r.body;
  // RFC 6750 3.1: invalid_request, and (3) the challenge with it.
  EXPECT_EQ(r.header("www-authenticate"),
            "Bearer realm=\"sluice\", error=\"invalid_request\", "
            "error_description=\"more than one authorization field\"");
  // key-auth let the caller in, so the jwt policy never ran: its token is
  // still taken out of every field, the other fields kept.
  r = HttpGet(address(), "/mixed/x",
              {{"apikey", "alice-key-0123456789"},
               {"authorization", "Basic eDp5"},
               {"authorization", forged}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-echo-x-consumer-name"), "alice");
  EXPECT_EQ(r.header("x-echo-authorization"), "Basic eDp5");
}

// With another policy's anonymous consumer to fall back on, a credential
// no policy accepted never goes upstream, and a malformed one (two of them,
// or one after a ';') is refused, not taken as the anonymous caller. Before:
// 200 as guest, with the unverified tokens and keys forwarded.
TEST_F(JwtIntegrationTest, AnotherPolicysAnonymousConsumerForwardsNoRefusedCredential) {
  const std::string forged = "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.";
  HttpResponse r = HttpGet(address(), "/lenient/x", {{"authorization", forged}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-echo-x-consumer-name"), "guest");
  EXPECT_EQ(r.header("x-echo-authorization"), "");
  r = HttpGet(address(), "/lenient/x", {{"authorization", forged}, {"authorization", forged}});
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "more than one authorization field")) << r.body;
  r = HttpGet(address(), "/lenient/x",
              {{"apikey", "alice-key-0123456789"}, {"apikey", "alice-key-0123456789"}});
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "more than one API key")) << r.body;
  r = HttpGet(address(), "/lenient/x?a=1;access_token=" + material_.token("ES256"));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "access_token query parameter after a ';'")) << r.body;
  r = HttpGet(address(), "/lenient/x?a=1;apikey=alice-key-0123456789");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "API key query parameter after a ';'")) << r.body;
}

// jwt without consumer_claim names no consumer, and removes the
// Authorization it checked before the cache runs: the cache took the request
// as an anonymous one, and alice's answer was bob's next (RFC 9111 3.5).
TEST_F(JwtIntegrationTest, ACachedAnswerForOneTokenHolderNeverReachesAnother) {
  const std::string route = absl::StrCat(
      "        - name: private\n          match: {prefix: /private}\n          route: {cluster: web}\n"
      "          policies:\n"
      "            - {name: cache, typed_config: {default_ttl: 60s}}\n",
      EsJwtPolicy("                claims_to_headers: [{claim: sub, header: x-test-user-sub}]\n"));
  std::string config = Config("[ES256]");
  const size_t at = config.find("        - name: api\n");
  ASSERT_NE(at, std::string::npos);
  config.insert(at, route);
  ASSERT_EQ(Apply(config), 0) << last_error_;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  auto get = [&](const std::string& path, const std::string& token) {
    return HttpGet(address(), path, {{"authorization", "Bearer " + token}});
  };
  for (const char* path : {"/private/me", "/private/me?access_token="}) {
    const bool in_query = absl::EndsWith(path, "=");
    auto as = [&](const std::string& token) {
      return in_query ? HttpGet(address(), path + token) : get(path, token);
    };
    HttpResponse alice = as(material_.token("ES256"));
    ASSERT_TRUE(alice.ok()) << alice.error;
    EXPECT_EQ(alice.status, 200) << alice.body;
    EXPECT_EQ(alice.header("x-echo-x-test-user-sub"), "alice") << path;
    HttpResponse bob = as(material_.token("sub_bob"));
    ASSERT_TRUE(bob.ok()) << bob.error;
    EXPECT_EQ(bob.header("x-echo-x-test-user-sub"), "bob") << path;
    EXPECT_NE(bob.header("x-cache-status"), "Hit") << path;
  }
  // What the upstream marks shareable is shared, among the holders of
  // tokens whose claims the upstream was told are the same: with
  // key_consumer (the default) the claims_to_headers values are keyed, and
  // this upstream answers per x-test-user-sub.
  HttpResponse first = get("/private/pub?cc=public", material_.token("ES256"));
  ASSERT_TRUE(first.ok()) << first.error;
  EXPECT_EQ(first.header("x-cache-status"), "Miss");
  HttpResponse again = get("/private/pub?cc=public", material_.token("ES256"));
  ASSERT_TRUE(again.ok()) << again.error;
  EXPECT_EQ(again.header("x-cache-status"), "Hit");
  EXPECT_EQ(again.header("x-echo-x-test-user-sub"), "alice");
  HttpResponse second = get("/private/pub?cc=public", material_.token("sub_bob"));
  ASSERT_TRUE(second.ok()) << second.error;
  EXPECT_EQ(second.header("x-cache-status"), "Miss");
  EXPECT_EQ(second.header("x-echo-x-test-user-sub"), "bob");
}

TEST_F(JwtIntegrationTest, ExpiredAndWrongKeyTokensAre401WithTheReason) {
  HttpResponse expired = HttpGet(
      address(), "/api/orders",
      {{"authorization", "Bearer " + material_.token("expired")}, {"x-request-id", "req-exp"}});
  ASSERT_TRUE(expired.ok()) << expired.error;
  EXPECT_EQ(expired.status, 401);
  EXPECT_EQ(expired.header("www-authenticate"),
            "Bearer realm=\"sluice\", error=\"invalid_token\", "
            "error_description=\"token expired\"");
  EXPECT_EQ(expired.body, "{\"error\":\"token expired\",\"request_id\":\"req-exp\"}\n");
  EXPECT_EQ(expired.header("x-upstream"), "");

  // Signed by another P-256 key under the configured kid.
  HttpResponse wrong_key = HttpGet(
      address(), "/api/orders", {{"authorization", "Bearer " + material_.token("es256_other_key")}});
  ASSERT_TRUE(wrong_key.ok()) << wrong_key.error;
  EXPECT_EQ(wrong_key.status, 401);
  EXPECT_TRUE(absl::StrContains(wrong_key.body, "bad signature")) << wrong_key.body;

  HttpResponse none = HttpGet(address(), "/api/orders");
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.header("www-authenticate"), "Bearer realm=\"sluice\"");
  EXPECT_EQ(upstream_.RequestCount().value_or(-1), 0);
}

TEST_F(JwtIntegrationTest, ABadJwtConfigIsRefusedAtApplyNamingTheField) {
  EXPECT_NE(Apply(Config("[ES256, none]")), 0);
  EXPECT_TRUE(absl::StrContains(last_error_, "typed_config.algorithms[1]")) << last_error_;
  EXPECT_TRUE(absl::StrContains(last_error_, "is never allowed")) << last_error_;
  // The running config is unchanged.
  HttpResponse r =
      HttpGet(address(), "/api/x", {{"authorization", "Bearer " + material_.token("ES256")}});
  EXPECT_EQ(r.status, 200) << r.body;
}

}  // namespace
}  // namespace sluice::testing
