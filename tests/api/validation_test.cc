// Every validation rule, one test each: the rule rejects what it should, with
// the resource and field named, and accepts the valid neighbour.
#include "api/validation.h"

#include <gtest/gtest.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "api/credentials.h"
#include "api/policy_registry.h"
#include "google/protobuf/text_format.h"
#include "tests/api/test_certificates.h"

namespace sluice::api {
namespace {

Resource Parse(const std::string& text) {
  Resource r;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &r)) << text;
  return r;
}

const char kCluster[] = R"(cluster { name: "users" endpoints { address: "127.0.0.1" port: 9001 } })";
const char kTable[] = R"(route_table { name: "main" virtual_hosts {
  domains: "*" routes { match { prefix: "/" } route { cluster: "users" } } } })";
const char kListener[] = R"(listener { name: "public" address: "127.0.0.1" port: 8080 route_table: "main" })";

ResourceMap Valid() {
  ResourceMap state;
  for (const char* text : {kCluster, kTable, kListener}) {
    Resource r = Parse(text);
    state[IdOf(r)] = r;
  }
  return state;
}

// Errors for `state` after replacing one resource with `text`.
std::string ErrorsWith(const std::string& text, ResourceMap state = Valid()) {
  Resource r = Parse(text);
  state[IdOf(r)] = r;
  return std::string(CheckState(state).message());
}

// What an apply of `text` is told: the state's rules and the rules for new
// content, one message.
std::string AppliedErrors(const std::string& text) {
  std::string out = ErrorsWith(text);
  std::vector<ValidationError> errors;
  ValidateNewContent(Parse(text), &errors);
  if (!errors.empty()) absl::StrAppend(&out, out.empty() ? "" : "\n", ToStatus(errors).message());
  return out;
}

TEST(ValidationTest, ValidStatePasses) { EXPECT_TRUE(CheckState(Valid()).ok()); }

// A rate-limit keyed on the credential field an authentication policy of
// the route takes off (key-auth's apikey, basic-auth's and jwt's
// Authorization) found it on no request: every caller shared the fallback
// bucket, one spending all the others' budget (probe: bob got 429 after
// alice's requests). Refused at apply; keep_credentials, or another
// field, is fine.
TEST(ValidationTest, APolicyMayNotReadACredentialAnotherTakesOff) {
  auto table = [](const std::string& vhost_policies, const std::string& route_policies) {
    return absl::StrCat(R"(route_table { name: "main" virtual_hosts { domains: "*" )",
                        vhost_policies,
                        R"( routes { name: "api" match { prefix: "/" } route { cluster: "users" } )",
                        route_policies, " } } }");
  };
  const std::string limit_on = R"(policies { name: "rate-limit" typed_config {
      [type.googleapis.com/sluice.policy.rate_limit.v1.RateLimitConfig] {
        limits { requests: 5 per: MINUTE } key: HEADER header_name: "%s" } } })";
  auto limit = [&](const std::string& header) {
    return absl::StrReplaceAll(limit_on, {{"%s", header}});
  };
  const std::string key_auth = R"(policies { name: "key-auth" typed_config {
      [type.googleapis.com/sluice.policy.key_auth.v1.KeyAuthConfig] {} } })";
  const std::string kept_key_auth = R"(policies { name: "key-auth" typed_config {
      [type.googleapis.com/sluice.policy.key_auth.v1.KeyAuthConfig] { keep_credentials: true } } })";
  const std::string basic_auth = R"(policies { name: "basic-auth" typed_config {
      [type.googleapis.com/sluice.policy.basic_auth.v1.BasicAuthConfig] {} } })";
  EXPECT_EQ(AppliedErrors(table("", key_auth + limit("ApiKey"))),
            "RouteTable \"main\": virtual_hosts[0].routes[0].policies[1].typed_config.header_name: "
            "'apikey' is the credential key-auth takes off the request before rate-limit reads it: "
            "no request would have it, so all would count as one caller; key by CONSUMER, the "
            "caller key-auth identifies");
  // On the virtual host, for a route's own authentication.
  EXPECT_TRUE(absl::StrContains(AppliedErrors(table(limit("authorization"), basic_auth)),
                                "virtual_hosts[0].policies[0].typed_config.header_name: "
                                "'authorization' is the credential basic-auth takes off"))
      << AppliedErrors(table(limit("authorization"), basic_auth));
  EXPECT_EQ(AppliedErrors(table("", kept_key_auth + limit("apikey"))), "");
  EXPECT_EQ(AppliedErrors(table("", key_auth + limit("x-tenant"))), "");
  EXPECT_EQ(AppliedErrors(table("", basic_auth + limit("apikey"))), "");
  // A stored state with one still loads.
  EXPECT_EQ(ErrorsWith(table("", key_auth + limit("apikey"))), "");
}

TEST(ValidationTest, NameRequiredAndCharset) {
  EXPECT_EQ(ErrorsWith(R"(cluster { name: "a b" endpoints { address: "127.0.0.1" port: 1 } })"),
            "Cluster \"a b\": name: 'a b' may contain only ASCII letters, digits, '-', '_' and '.'");
  // A name is quoted escaped (no forged line, no raw control byte) and cut
  // (a 100 KB name made a status message gRPC would not carry).
  EXPECT_EQ(ErrorsWith(R"(cluster { name: "web\nerror: forged" endpoints { address: "127.0.0.1" port: 1 } })"),
            "Cluster \"web\\nerror: forged\": name: 'web\\nerror: forged' may contain only ASCII letters, "
            "digits, '-', '_' and '.'");
  const std::string huge = ErrorsWith("cluster { name: \"" + std::string(100000, 'a') +
                                      "\" endpoints { address: \"127.0.0.1\" port: 1 } }");
  EXPECT_LT(huge.size(), 400u) << huge.substr(0, 400);
  EXPECT_TRUE(absl::StrContains(huge, "...(100000 bytes)")) << huge.substr(0, 400);
  EXPECT_NE(ErrorsWith(R"(cluster { name: "" endpoints { address: "127.0.0.1" port: 1 } })")
                .find("name: is required"),
            std::string::npos);
  EXPECT_NE(ErrorsWith("cluster { name: \"" + std::string(129, 'a') +
                       "\" endpoints { address: \"127.0.0.1\" port: 1 } }")
                .find("at most 128"),
            std::string::npos);
}

TEST(ValidationTest, ClusterNeedsEndpoints) {
  EXPECT_EQ(ErrorsWith(R"(cluster { name: "users" })"),
            "Cluster \"users\": endpoints: needs at least one endpoint");
}

TEST(ValidationTest, BadAddressAndPort) {
  std::string e = ErrorsWith(
      R"(cluster { name: "users" endpoints { address: "local host" port: 0 } })");
  EXPECT_NE(e.find("endpoints[0].address: 'local host' is neither an IPv4 or IPv6 address nor "
                   "a host name"),
            std::string::npos) << e;
  EXPECT_NE(e.find("endpoints[0].port: must be 1..65535, got 0"), std::string::npos) << e;
  // inet_pton stopped at a NUL: "127.0.0.1\0x" was stored as an address.
  e = ErrorsWith(
      R"(cluster { name: "users" endpoints { address: "127.0.0.1\000x" port: 80 } })");
  EXPECT_NE(e.find("endpoints[0].address: '127.0.0.1\\x00x' is neither an IPv4 or IPv6 address"),
            std::string::npos) << e;
  // A bad IPv4 address is not taken for a name; a bad IPv6 one neither.
  for (const char* bad : {"10.0.0.256", "1.2.3", "::g", "-a.example", "a..example", "a_b.c-"}) {
    e = ErrorsWith(absl::StrCat(R"(cluster { name: "users" endpoints { address: ")", bad,
                                R"(" port: 80 } })"));
    EXPECT_NE(e.find("is neither an IPv4 or IPv6 address nor a host name"), std::string::npos)
        << bad << ": " << e;
  }
  // Host names: resolved by the proxies.
  for (const char* good : {"localhost", "backend", "api.example.com.", "my_service",
                           "backend.default.svc.cluster.local", "10.0.0.example"}) {
    EXPECT_EQ(ErrorsWith(absl::StrCat(R"(cluster { name: "users" endpoints { address: ")", good,
                                      R"(" port: 80 } })")),
              "")
        << good;
  }
  EXPECT_TRUE(CheckState([] {
                auto s = Valid();
                Resource r = Parse(R"(cluster { name: "users" endpoints { address: "::1" port: 65535 } })");
                s[IdOf(r)] = r;
                return s;
              }()).ok());
}

TEST(ValidationTest, DuplicateEndpoint) {
  EXPECT_NE(ErrorsWith(R"(cluster { name: "users"
      endpoints { address: "127.0.0.1" port: 1 } endpoints { address: "127.0.0.1" port: 1 } })")
                .find("endpoints[1]: 127.0.0.1:1 is the same endpoint as endpoints[0]"),
            std::string::npos);
  // One address spelled two ways is one endpoint.
  EXPECT_NE(ErrorsWith(R"(cluster { name: "users"
      endpoints { address: "::1" port: 1 } endpoints { address: "0:0::1" port: 1 } })")
                .find("endpoints[1]: [0:0::1]:1 is the same endpoint as endpoints[0]"),
            std::string::npos);
}

TEST(ValidationTest, SlowStart) {
  const std::string named = R"(cluster { name: "users" endpoints { address: "127.0.0.1" port: 80 } )";
  EXPECT_EQ(ErrorsWith(named + R"(slow_start { window { seconds: 30 } } })"), "");
  EXPECT_EQ(ErrorsWith(named + R"(lb_policy: LEAST_REQUEST slow_start { window { seconds: 3600 }
      min_weight_percent { value: 100 } } })"),
            "");
  std::string e = ErrorsWith(named + R"(slow_start { min_weight_percent { value: 0 } } })");
  EXPECT_NE(e.find("slow_start.window: is required"), std::string::npos) << e;
  EXPECT_NE(e.find("slow_start.min_weight_percent: must be 1..100, got 0"), std::string::npos) << e;
  e = ErrorsWith(named + R"(slow_start { window { seconds: 3601 } min_weight_percent { value: 101 } } })");
  EXPECT_NE(e.find("slow_start.window: must be between 1s and 1h, got 1h1s"), std::string::npos)
      << e;
  EXPECT_NE(e.find("slow_start.min_weight_percent: must be 1..100, got 101"), std::string::npos) << e;
  e = ErrorsWith(named + R"(lb_policy: MAGLEV hash_policy { source_ip: true }
      slow_start { window { seconds: 30 } } })");
  EXPECT_NE(e.find("slow_start: does not apply to lb_policy MAGLEV"), std::string::npos) << e;
}

TEST(ValidationTest, DnsSettings) {
  const std::string named = R"(cluster { name: "users" endpoints { address: "a.example" port: 80 } )";
  EXPECT_EQ(ErrorsWith(named + R"(dns_refresh_interval { seconds: 30 } dns_lookup_family: ALL
      dns_resolvers: "10.0.0.53" dns_resolvers: "127.0.0.1:5353" dns_resolvers: "[::1]:53"
      dns_resolvers: "fd00::53" })"),
            "");
  std::string e = ErrorsWith(named + R"(dns_refresh_interval { nanos: 500000000 }
      dns_resolvers: "[127.0.0.1]:53" dns_resolvers: "127.0.0.1:0" dns_resolvers: "ns.example"
      dns_resolvers: "127.0.0.1:" })");
  EXPECT_NE(e.find("dns_refresh_interval: must be between 1s and 24h, got 500ms"), std::string::npos) << e;
  for (int i = 0; i < 4; ++i) {
    EXPECT_NE(e.find(absl::StrCat("dns_resolvers[", i, "]: ")), std::string::npos) << i << e;
  }
  e = ErrorsWith(named + R"(dns_resolvers: "0.0.0.0" dns_resolvers: "10.0.0.53:53"
      dns_resolvers: "10.0.0.53:53" dns_resolvers: "[::]:53" })");
  EXPECT_NE(e.find("dns_resolvers[0]: '0.0.0.0' is the unspecified address"), std::string::npos) << e;
  EXPECT_NE(e.find("dns_resolvers[2]: '10.0.0.53:53' is listed twice"), std::string::npos) << e;
  EXPECT_NE(e.find("dns_resolvers[3]: '[::]:53' is the unspecified address"), std::string::npos) << e;
  // One server in two spellings: the port 53 implied, an IPv4-mapped form.
  e = ErrorsWith(named + R"(dns_resolvers: "10.0.0.53" dns_resolvers: "10.0.0.53:53"
      dns_resolvers: "[::ffff:10.0.0.53]:53" dns_resolvers: "[::ffff:0.0.0.0]:53" })");
  EXPECT_NE(e.find("dns_resolvers[1]: '10.0.0.53:53' is listed twice"), std::string::npos) << e;
  EXPECT_NE(e.find("dns_resolvers[2]: '[::ffff:10.0.0.53]:53' is listed twice"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("dns_resolvers[3]: '[::ffff:0.0.0.0]:53' is the unspecified address"),
            std::string::npos)
      << e;
  std::string nine = named;
  for (int i = 0; i < 9; ++i) absl::StrAppend(&nine, "dns_resolvers: \"10.0.0.", i, "\" ");
  e = ErrorsWith(nine + "}");
  EXPECT_NE(e.find("dns_resolvers: has 9 servers; at most 8"), std::string::npos) << e;
  // Only where an endpoint is a name.
  e = ErrorsWith(R"(cluster { name: "users" endpoints { address: "127.0.0.1" port: 80 }
      dns_refresh_interval { seconds: 5 } dns_lookup_family: V4_ONLY dns_resolvers: "10.0.0.53" })");
  for (const char* field : {"dns_refresh_interval", "dns_lookup_family", "dns_resolvers"}) {
    EXPECT_NE(e.find(absl::StrCat(field, ": applies only to endpoints given by host name")),
              std::string::npos)
        << field << e;
  }
  // One name twice, whatever its case or trailing dot.
  e = ErrorsWith(R"(cluster { name: "users" endpoints { address: "A.example." port: 80 }
      endpoints { address: "a.EXAMPLE" port: 80 } endpoints { address: "a.example" port: 81 } })");
  EXPECT_NE(e.find("endpoints[1]: a.EXAMPLE:80 is the same endpoint as endpoints[0]"),
            std::string::npos)
      << e;
  EXPECT_EQ(e.find("endpoints[2]"), std::string::npos) << e;
}

TEST(ValidationTest, WeightRange) {
  EXPECT_NE(ErrorsWith(R"(cluster { name: "users" endpoints { address: "127.0.0.1" port: 1 weight: 10001 } })")
                .find("endpoints[0].weight: must be 1..10000, got 10001"),
            std::string::npos);
  // An explicit 0 would read as unset (weight 1) where the operator meant
  // "drain": it is refused, with what to do instead.
  EXPECT_NE(ErrorsWith(R"(cluster { name: "users" endpoints { address: "127.0.0.1" port: 1 weight: 0 } })")
                .find("endpoints[0].weight: must be 1..10000, got 0: a weight of 0 does not drain"),
            std::string::npos);
  EXPECT_EQ(ErrorsWith(R"(cluster { name: "users" endpoints { address: "127.0.0.1" port: 1 } })"), "");
}

TEST(ValidationTest, DurationsOutOfRange) {
  EXPECT_NE(ErrorsWith(R"(cluster { name: "users" connect_timeout { seconds: 600 }
      endpoints { address: "127.0.0.1" port: 1 } })")
                .find("connect_timeout: must be between 1ms and 5m, got 10m"),
            std::string::npos);
  EXPECT_NE(ErrorsWith(R"(cluster { name: "users" idle_connection_timeout { nanos: 500000000 }
      endpoints { address: "127.0.0.1" port: 1 } })")
                .find("idle_connection_timeout: must be between 1s and 24h, got 500ms"),
            std::string::npos);
  EXPECT_NE(ErrorsWith(R"(cluster { name: "users" keepalive_interval { nanos: 500000000 }
      protocol: HTTP2 endpoints { address: "127.0.0.1" port: 1 } })")
                .find("keepalive_interval: must be between 1s and 1h, got 500ms"),
            std::string::npos);
  EXPECT_NE(ErrorsWith(R"(cluster { name: "users" keepalive_interval { seconds: 10 }
      endpoints { address: "127.0.0.1" port: 1 } })")
                .find("keepalive_interval: applies to HTTP/2 only (protocol HTTP2 or AUTO)"),
            std::string::npos);
  EXPECT_EQ(ErrorsWith(R"(cluster { name: "users" keepalive_interval { seconds: 10 }
      protocol: HTTP2 endpoints { address: "127.0.0.1" port: 1 } })"), "");
  EXPECT_NE(ErrorsWith(R"(cluster { name: "users" idle_connection_timeout { seconds: 5 }
      protocol: HTTP2 endpoints { address: "127.0.0.1" port: 1 } })")
                .find("idle_connection_timeout: applies to HTTP/1.1 connections"),
            std::string::npos);
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" } route { cluster: "users" timeout { seconds: -1 } } } } })")
                .find("routes[0].route.timeout: must be a non-negative duration"),
            std::string::npos);
  EXPECT_NE(ErrorsWith(R"(listener { name: "public" address: "127.0.0.1" port: 8080
      route_table: "main" http { idle_timeout { seconds: 100000 } } })")
                .find("http.idle_timeout: must be between"),
            std::string::npos);
}

TEST(ValidationTest, BadRegexRejectedByRe2) {
  std::string e = ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { regex: "(unclosed" } route { cluster: "users" } } } })");
  EXPECT_NE(e.find("virtual_hosts[0].routes[0].match.regex: invalid RE2 regular expression"),
            std::string::npos) << e;
  // Backreferences are not RE2.
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" headers { name: "x" regex: "(a)\\1" } } route { cluster: "users" } } } })")
                .find("headers[0].regex: invalid RE2"),
            std::string::npos);
}

// A few bytes that compile to a huge program (0.2 s each to compile: 60 of
// them made every apply and every proxy update take seconds) are refused,
// wherever a config holds a regular expression; a large but usual one is not.
// Apply-only: a stored config an older build took still loads (its proxies
// would refuse it otherwise).
TEST(ValidationTest, RegexProgramSizeIsBounded) {
  const std::string huge = R"(/r(\\pL|\\pN){1,300})";
  const std::string table = absl::StrCat(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { regex: ")", huge, R"(" } route { cluster: "users" } } } })");
  EXPECT_EQ(ErrorsWith(table), "");
  std::string e = AppliedErrors(table);
  EXPECT_NE(e.find("virtual_hosts[0].routes[0].match.regex: the regular expression compiles to "),
            std::string::npos) << e;
  EXPECT_NE(e.find("RE2 instructions, over the limit of 20000"), std::string::npos) << e;
  e = AppliedErrors(absl::StrCat(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" query_parameters { name: "q" regex: ")", huge,
                              R"(" } } route { cluster: "users" } } } })"));
  EXPECT_NE(e.find("query_parameters[0].regex: the regular expression compiles to "),
            std::string::npos) << e;
  EXPECT_EQ(AppliedErrors(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { regex: "/[\\pL\\pN_-]+/[a-z]{1,1000}" } route { cluster: "users" } } } })"),
            "");
}

// What an error quotes is printable and bounded: a control byte a message
// quotes raw is written \xNN (it reached terminals and the audit log as an
// escape sequence), a line is at most 1 KiB, and the whole answer about
// 6 KiB (a 4 KB value made an answer over gRPC's metadata limit, and
// sluicectl showed no field and no reason; a 25 MB one a 131 MB audit line).
TEST(ValidationTest, ErrorsArePrintableAndBounded) {
  std::vector<ValidationError> errors;
  errors.push_back({{config::v1::CLUSTER, "c"}, "hash_policy.header",
                    "'x\x1b]0;PWNED\x07\r\nforged' is not a valid header name"});
  EXPECT_EQ(ToStatus(errors).message(),
            "Cluster \"c\": hash_policy.header: 'x\\x1b]0;PWNED\\x07\\x0d\\x0aforged' is not a "
            "valid header name");
  errors.clear();
  errors.push_back({{config::v1::CLUSTER, "c"}, "address", std::string(10 << 20, 'a')});
  std::string message(ToStatus(errors).message());
  EXPECT_LT(message.size(), 1100u);
  EXPECT_TRUE(absl::EndsWith(message, "...(10485782 bytes)")) << message.substr(1000);
  // Escapes count as what they write: 5,000 ESC bytes are 1 KiB shown.
  errors.clear();
  errors.push_back({{config::v1::CLUSTER, "c"}, "", std::string(5000, '\x1b')});
  message = std::string(ToStatus(errors).message());
  EXPECT_LT(message.size(), 1050u) << message.size();
  EXPECT_TRUE(absl::EndsWith(message, "\\x1b...(5013 bytes)")) << message.substr(1000);
  // A cut never splits a UTF-8 sequence.
  errors.clear();
  std::string accents;
  for (int i = 0; i < 1000; ++i) accents += "\xc3\xa9";
  errors.push_back({{config::v1::CLUSTER, "c"}, "", accents});
  message = std::string(ToStatus(errors).message());
  const size_t cut = message.find("...(");
  ASSERT_NE(cut, std::string::npos);
  EXPECT_NE(static_cast<unsigned char>(message[cut - 1]), 0xc3);
  // 20 errors of a KiB each: about 6 KiB shown, the rest counted.
  errors.clear();
  for (int i = 0; i < 20; ++i) {
    errors.push_back({{config::v1::CLUSTER, absl::StrCat("c", i)}, "", std::string(1000, 'v')});
  }
  message = std::string(ToStatus(errors).message());
  EXPECT_LT(message.size(), 7 * 1024u);
  EXPECT_TRUE(absl::EndsWith(message, "... and 14 more errors")) << message.substr(message.size() - 40);
  // A long address is quoted cut, not whole.
  std::string e = ErrorsWith(absl::StrCat(R"(cluster { name: "c" endpoints { address: ")",
                                          std::string(100000, 'a'), R"(" port: 80 } })"));
  EXPECT_LT(e.size(), 1100u) << e.size();
  EXPECT_NE(e.find("endpoints[0].address"), std::string::npos) << e.substr(0, 200);
}

TEST(ValidationTest, UnknownClusterReference) {
  EXPECT_EQ(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" } route { cluster: "nope" } } } })"),
            "RouteTable \"main\": virtual_hosts[0].routes[0].route.cluster: refers to "
            "Cluster \"nope\", which does not exist");
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" } route { weighted_clusters {
        clusters { name: "users" weight: 1 } clusters { name: "gone" weight: 1 } } } } } })")
                .find("weighted_clusters.clusters[1].name: refers to Cluster \"gone\""),
            std::string::npos);
}

TEST(ValidationTest, UnknownRouteTableReference) {
  EXPECT_EQ(ErrorsWith(R"(listener { name: "public" address: "127.0.0.1" port: 8080 route_table: "other" })"),
            "Listener \"public\": route_table: refers to RouteTable \"other\", which does not exist");
}

TEST(ValidationTest, AccessLogPathFieldsAndSample) {
  EXPECT_EQ(ErrorsWith(R"(listener { name: "public" address: "127.0.0.1" port: 8080
      route_table: "main" access_log { path: "/var/log/sluice/access.log" fields: "status"
      fields: "path" sample_percent: 10 } })"),
            "");
  EXPECT_EQ(ErrorsWith(R"(listener { name: "public" address: "127.0.0.1" port: 8080
      route_table: "main" access_log { path: "-" } })"),
            "");
  std::string e = ErrorsWith(R"(listener { name: "public" address: "127.0.0.1" port: 8080
      route_table: "main" access_log { path: "logs/a.log" fields: "status" fields: "nope"
      fields: "status" sample_percent: 101 } })");
  EXPECT_NE(e.find("access_log.path: 'logs/a.log' must be \"-\", \"stdout\" or an absolute path"),
            std::string::npos) << e;
  EXPECT_NE(e.find("access_log.fields[1]: unknown field 'nope' (known: time, request_id"),
            std::string::npos) << e;
  EXPECT_NE(e.find("access_log.fields[2]: 'status' is listed twice"), std::string::npos) << e;
  EXPECT_NE(e.find("access_log.sample_percent: must be 1..100 (0: 100), got 101"),
            std::string::npos) << e;
  e = ErrorsWith(R"(listener { name: "public" address: "127.0.0.1" port: 8080
      route_table: "main" access_log { } })");
  EXPECT_NE(e.find("access_log.path: is required"), std::string::npos) << e;
  // A line break in the name broke the proxy's own log lines about it:
  // refused at apply (a stored one is kept).
  const std::string newline = R"(listener { name: "public" address: "127.0.0.1" port: 8080
      route_table: "main" access_log { path: "/var/log/a\nb.log" } })";
  EXPECT_EQ(ErrorsWith(newline), "");
  e = AppliedErrors(newline);
  EXPECT_NE(e.find("access_log.path: '/var/log/a\\nb.log' has a control character (byte 11 is "
                   "0x0a): a file name may not"),
            std::string::npos)
      << e;
  e = AppliedErrors(R"(listener { name: "public" address: "127.0.0.1" port: 8080
      route_table: "main" access_log { path: "/var/log/a\177.log" } })");
  EXPECT_NE(e.find("(byte 11 is 0x7f)"), std::string::npos) << e;
  EXPECT_EQ(AppliedErrors(R"(listener { name: "public" address: "127.0.0.1" port: 8080
      route_table: "main" access_log { path: "/var/log/caf\303\251 b.log" } })"),
            "");
  // Another of the proxy's descriptors (/proc/self/fd/5 was its event
  // loop's signal pipe: each line's newline a SIGUSR1), /proc, /sys or
  // standard input: refused at apply. Standard output and error are taken.
  for (const char* internal : {"/proc/self/fd/5", "/dev/fd/7", "/proc/1/environ",
                               "/sys/kernel/x", "/dev/stdin",
                               // Other spellings (the regression probe's).
                               "//proc/self/fd/5", "/./proc/self/fd/5", "/dev/./fd/5",
                               "/dev//fd/5", "/tmp/../proc/self/fd/5", "/dev/./stdin", "/proc",
                               "/sys", "/proc/self/fd/1/", "/var/log/",
                               // Directories otherwise (the 2026-12-02 probe's).
                               "/", "/var/log/sluice/.", "/tmp/..", "//"}) {
    e = AppliedErrors(absl::StrCat(R"(listener { name: "public" address: "127.0.0.1" port: 8080
      route_table: "main" access_log { path: ")", internal, R"(" } })"));
    EXPECT_NE(e.find(absl::StrCat("access_log.path: '", internal, "'")), std::string::npos) << e;
  }
  for (const char* standard : {"/proc/self/fd/1", "/proc/self/fd/2", "/dev/fd/1", "/dev/fd/2",
                               "/dev/stdout", "/dev/stderr", "/dev/null"}) {
    EXPECT_EQ(AppliedErrors(absl::StrCat(
                  R"(listener { name: "public" address: "127.0.0.1" port: 8080
      route_table: "main" access_log { path: ")",
                  standard, R"(" } })")),
              "")
        << standard;
  }
}

TEST(ValidationTest, ListenersInDisjointNodeGroupsShareAPort) {
  auto state = Valid();
  Resource a = Parse(R"(listener { name: "r1" address: "127.0.0.1" port: 9090
      route_table: "main" node_groups: "r1" })");
  Resource b = Parse(R"(listener { name: "r2" address: "0.0.0.0" port: 9090
      route_table: "main" node_groups: "r2" node_groups: "r3" })");
  state[IdOf(a)] = a;
  state[IdOf(b)] = b;
  EXPECT_TRUE(CheckState(state).ok()) << CheckState(state);
  // A shared group, or a listener on every proxy, conflicts as before.
  b.mutable_listener()->add_node_groups("r1");
  state[IdOf(b)] = b;
  std::string e(CheckState(state).message());
  EXPECT_NE(e.find("Listener \"r2\": port: 0.0.0.0:9090 conflicts with Listener \"r1\""),
            std::string::npos) << e;
  b.mutable_listener()->clear_node_groups();
  state[IdOf(b)] = b;
  EXPECT_FALSE(CheckState(state).ok());
}

TEST(ValidationTest, NodeGroupsAreNamesListedOnce) {
  std::string e = ErrorsWith(R"(listener { name: "public" address: "127.0.0.1" port: 8080
      route_table: "main" node_groups: "r1" node_groups: "bad group" node_groups: "r1"
      node_groups: "" })");
  EXPECT_NE(e.find("node_groups[1]: 'bad group' may contain only ASCII letters"), std::string::npos)
      << e;
  EXPECT_NE(e.find("node_groups[2]: 'r1' is already listed at node_groups[0]"),
            std::string::npos) << e;
  EXPECT_NE(e.find("node_groups[3]: is required"), std::string::npos) << e;
}

// An enum number no name has (a client of the admin API sending proto) is
// refused, not taken as the last action.
TEST(ValidationTest, HeadersWithUnderscoresTakesItsThreeValues) {
  EXPECT_NE(ErrorsWith(R"(listener { name: "public" address: "127.0.0.1" port: 8080 route_table: "main"
                                     http { headers_with_underscores: 7 } })")
                .find("http.headers_with_underscores: unknown value 7"),
            std::string::npos);
  EXPECT_EQ(ErrorsWith(R"(listener { name: "public" address: "127.0.0.1" port: 8080 route_table: "main"
                                     http { headers_with_underscores: DROP_HEADER } })"),
            "");
}

TEST(ValidationTest, ListenerPlacement) {
  Resource r = Parse(R"(listener { name: "l" node_groups: "a" node_groups: "b" })");
  EXPECT_TRUE(ListenerPlacedOn(r.listener(), "b"));
  EXPECT_FALSE(ListenerPlacedOn(r.listener(), "c"));
  EXPECT_FALSE(ListenerPlacedOn(r.listener(), ""));
  r.mutable_listener()->clear_node_groups();
  EXPECT_TRUE(ListenerPlacedOn(r.listener(), ""));
  EXPECT_TRUE(ListenerPlacedOn(r.listener(), "c"));
}

TEST(ValidationTest, ConflictingListeners) {
  auto state = Valid();
  Resource r = Parse(R"(listener { name: "second" address: "0.0.0.0" port: 8080 route_table: "main" })");
  state[IdOf(r)] = r;
  std::string e(CheckState(state).message());
  EXPECT_NE(e.find("conflicts with Listener"), std::string::npos) << e;
  // Same port on two different specific addresses is fine.
  r = Parse(R"(listener { name: "second" address: "127.0.0.2" port: 8080 route_table: "main" })");
  state[IdOf(r)] = r;
  EXPECT_TRUE(CheckState(state).ok());
  // One IPv6 address spelled two ways is one socket (the proxy would bind
  // it once and serve only one listener's routes), and "0::0" is "::".
  Resource v6 = Parse(R"(listener { name: "v6" address: "::1" port: 9443 route_table: "main" })");
  state[IdOf(v6)] = v6;
  r = Parse(R"(listener { name: "second" address: "0:0::1" port: 9443 route_table: "main" })");
  state[IdOf(r)] = r;
  e = std::string(CheckState(state).message());
  EXPECT_NE(e.find("Listener \"v6\": port: [::1]:9443 conflicts with Listener \"second\" on "
                   "[0:0::1]:9443"),
            std::string::npos) << e;
  // The listener a change adds is the one told, whatever the names' order.
  std::set<ResourceId> changed = {IdOf(r)};
  e = std::string(ToStatus(ValidateState(state, &changed)).message());
  EXPECT_NE(e.find("Listener \"second\": port: [0:0::1]:9443 conflicts with Listener \"v6\""),
            std::string::npos) << e;
  r = Parse(R"(listener { name: "second" address: "0::0" port: 9443 route_table: "main" })");
  state[IdOf(r)] = r;
  EXPECT_FALSE(CheckState(state).ok());
}

// Host is matched without its port and one trailing dot, and an IPv6 Host is
// bracketed: a domain written otherwise would silently never match.
TEST(ValidationTest, DomainsThatCouldNeverMatchAreRefused) {
  auto errors = [](const std::string& domain) {
    return ErrorsWith(absl::StrCat(R"(route_table { name: "main" virtual_hosts { domains: ")",
                                   domain, R"(" routes { match { prefix: "/" } route { cluster: "users" } } } })"));
  };
  // "my_svc": a Docker Compose service name (refused before, though routed
  // through "*" and accepted as a host_redirect).
  for (const char* good : {"a.example", "*.a.example", "[::1]", "[2001:db8::1]", "127.0.0.1", "*",
                           "my_svc", "*.my_svc.internal"}) {
    EXPECT_EQ(errors(good), "") << good;
  }
  EXPECT_NE(errors("p.example.com:8080").find("matched on Host without its port"),
            std::string::npos) << errors("p.example.com:8080");
  EXPECT_NE(errors("[::1]:80").find("IPv6 address is written in brackets"), std::string::npos);
  EXPECT_NE(errors("::1").find("IPv6 address is written in brackets"), std::string::npos);
  EXPECT_NE(errors("[::1").find("IPv6 address is written in brackets"), std::string::npos);
  EXPECT_NE(errors("a[b]").find("IPv6 address is written in brackets"), std::string::npos);
  EXPECT_NE(errors("[zz]").find("IPv6 address is written in brackets"), std::string::npos);
  EXPECT_NE(errors("d.example.org.").find("leave the trailing dot out"), std::string::npos);
  EXPECT_NE(errors("*.example.org.").find("leave the trailing dot out"), std::string::npos);
}

TEST(ValidationTest, AnIpv4MappedListenerAddressIsRefusedWithTheIpv4Form) {
  std::string e = ErrorsWith(
      R"(listener { name: "mapped" address: "::ffff:127.0.0.1" port: 9443 route_table: "main" })");
  EXPECT_NE(e.find("address: '::ffff:127.0.0.1' is an IPv4-mapped IPv6 address, which a "
                   "listener cannot bind; write it as the IPv4 address 127.0.0.1"),
            std::string::npos) << e;
}

TEST(ValidationTest, DuplicateDomainsAcrossVirtualHosts) {
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main"
      virtual_hosts { domains: "a.com" routes { match { prefix: "/" } route { cluster: "users" } } }
      virtual_hosts { domains: "a.com" routes { match { prefix: "/" } route { cluster: "users" } } } })")
                .find("virtual_hosts[1].domains[0]: domain 'a.com' is already served by virtual_hosts[0]"),
            std::string::npos);
}

// Names label the metrics: two alike in the same place would share series.
TEST(ValidationTest, NamesThatWouldShareMetricsAreRefused) {
  const std::string route = R"(routes { name: "r" match { prefix: "/" } route { cluster: "users" } })";
  std::string e = ErrorsWith(absl::StrCat(R"(route_table { name: "main"
      virtual_hosts { name: "api" domains: "a.com" )", route, route, R"( }
      virtual_hosts { name: "api" domains: "b.com" )", route, R"( }
      virtual_hosts { name: "7" domains: "c.com" )", route, R"( } })"));
  EXPECT_NE(e.find("virtual_hosts[0].routes[1].name: 'r' is also routes[0]'s name in this "
                   "virtual host"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("virtual_hosts[1].name: 'api' is also virtual_hosts[0]'s name"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("virtual_hosts[2].name: '7' is all digits"), std::string::npos) << e;
  // The same route name in two virtual hosts is fine: virtual_host is a label.
  EXPECT_EQ(ErrorsWith(absl::StrCat(R"(route_table { name: "main"
      virtual_hosts { name: "a" domains: "a.com" )", route, R"( }
      virtual_hosts { name: "b" domains: "b.com" )", route, R"( } })")), "");
}

TEST(ValidationTest, BadDomain) {
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "A*.com"
      routes { match { prefix: "/" } route { cluster: "users" } } } })")
                .find("domains[0]: 'A*.com' must be"),
            std::string::npos);
}

TEST(ValidationTest, RouteNeedsMatchAndAction) {
  std::string e = ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*" routes { } } })");
  EXPECT_NE(e.find("routes[0].match: needs one of prefix, path or regex"), std::string::npos);
  EXPECT_NE(e.find("routes[0]: needs one of route, redirect or direct_response"), std::string::npos);
}

// Envoy's header matchers take pseudo-headers; the refusal says which field
// matches each here.
TEST(ValidationTest, APseudoHeaderMatcherSaysWhatToMatchInstead) {
  std::string e = ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" headers { name: ":authority" exact: "a.com" }
                                   headers { name: ":method" exact: "GET" } }
               route { cluster: "users" } } } })");
  EXPECT_NE(e.find("headers[0].name: ':authority' is not a valid header name: match it as `host`"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("headers[1].name: ':method' is not a valid header name: match the method with "
                   "methods"),
            std::string::npos)
      << e;
}

// An IPv6 domain is matched as written: one not in RFC 5952 form matched no
// client's Host, so the usual spelling is asked for at apply.
TEST(ValidationTest, AnIpv6DomainIsWrittenAsClientsSendIt) {
  auto applied = [](const std::string& domain) {
    return AppliedErrors(absl::StrCat(R"(route_table { name: "main" virtual_hosts { domains: ")",
                                      domain, R"(" routes { match { prefix: "/" }
                                      route { cluster: "users" } } } })"));
  };
  EXPECT_NE(applied("[0:0::1]").find("'[0:0::1]' is not the IPv6 address's usual spelling "
                                     "(RFC 5952), which hosts are matched against: write '[::1]'"),
            std::string::npos)
      << applied("[0:0::1]");
  EXPECT_NE(applied("[2001:db8:0::1]").find("write '[2001:db8::1]'"), std::string::npos);
  EXPECT_NE(applied("[1::2::3]").find("is not an IPv6 address in brackets"), std::string::npos);
  for (const char* ok : {"[::1]", "[2001:db8::1]", "[::ffff:10.0.0.1]"}) {
    EXPECT_EQ(applied(ok), "") << ok;
  }
}

TEST(ValidationTest, PathMustStartWithSlash) {
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "api" } route { cluster: "users" } } } })")
                .find("match.prefix: 'api' must start with '/'"),
            std::string::npos);
  // A control byte never is in a request's path: such a route never matched.
  std::string e = ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/a\000z" } route { cluster: "users" } } } })");
  EXPECT_NE(e.find("match.prefix: '/a\\x00z' has a control byte at position 3"), std::string::npos)
      << e;
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { path: "/a\nb" } route { cluster: "users" } } } })")
                .find("match.path: '/a\\nb' has a control byte at position 3"),
            std::string::npos);
}

// A prefix or path that no normalised request path can hold is refused
// when applied (ValidateNewContent), never in a stored or pushed state.
// `match` is "prefix VALUE", "path VALUE" or "regex VALUE".
std::string NewContentErrors(const std::string& match, bool case_sensitive = true) {
  Resource table = Parse(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/ok" } route { cluster: "users" } }
      routes { route { cluster: "users" } } } })");
  auto* m = table.mutable_route_table()->mutable_virtual_hosts(0)->mutable_routes(1)->mutable_match();
  if (!case_sensitive) m->mutable_case_sensitive()->set_value(false);
  const std::string value = match.substr(match.find(' ') + 1);
  if (absl::StartsWith(match, "prefix ")) m->set_prefix(value);
  if (absl::StartsWith(match, "path ")) m->set_path(value);
  if (absl::StartsWith(match, "regex ")) m->set_regex(value);
  std::vector<ValidationError> errors;
  ValidateResource(table, &errors);
  EXPECT_TRUE(errors.empty()) << match << ": " << ToStatus(errors);
  errors.clear();
  ValidateNewContent(table, &errors);
  return ToStatus(errors).ToString();
}

// A name sluicectl reads as a flag, or `.` and `..`, is refused when new;
// a stored one passes the state's rules (it keeps being served).
TEST(ValidationTest, ANameLikeAFlagOrADotSegmentIsRefusedAtApply) {
  for (const char* name : {"-lead", ".", ".."}) {
    const std::string text =
        absl::StrCat(R"(cluster { name: ")", name,
                     R"(" endpoints { address: "127.0.0.1" port: 80 } })");
    std::vector<ValidationError> errors;
    ValidateResource(Parse(text), &errors);
    EXPECT_TRUE(errors.empty()) << name << ": " << ToStatus(errors);
    EXPECT_TRUE(absl::StrContains(AppliedErrors(text), absl::StrCat("Cluster \"", name,
                                                                    "\": name: '", name, "' ")))
        << name << ": " << AppliedErrors(text);
  }
  EXPECT_EQ(AppliedErrors(R"(cluster { name: "a-" endpoints { address: "127.0.0.1" port: 80 } })"),
            "");
  EXPECT_EQ(AppliedErrors(R"(cluster { name: ".a" endpoints { address: "127.0.0.1" port: 80 } })"),
            "");
}

// A field the schema does not know (protobuf keeps its bytes) is refused
// at apply, with where it is: in the resource, deeper, or in a policy's
// typed_config. Such bytes were stored and pushed unchecked.
// An endpoint at the unspecified address (a connect reaches this host) is
// refused at apply (accepted before); a stored one keeps working.
TEST(ValidationTest, AnEndpointAtTheUnspecifiedAddressIsRefusedAtApply) {
  for (const char* address : {"0.0.0.0", "::", "0:0::0", "::ffff:0.0.0.0"}) {
    const std::string text = absl::StrCat(R"(cluster { name: "web" endpoints { address: ")",
                                          address, R"(" port: 80 } })");
    EXPECT_NE(AppliedErrors(text).find("endpoints[0].address: '" + std::string(address) +
                                       "' is the unspecified address"),
              std::string::npos)
        << address << ": " << AppliedErrors(text);
    EXPECT_EQ(ErrorsWith(text), "") << address;
  }
  EXPECT_EQ(AppliedErrors(R"(cluster { name: "web" endpoints { address: "127.0.0.1" port: 80 } })"),
            "");
}

// Addresses no TCP connection goes to, which the proxies leave out of DNS
// answers (0.0.0.0/8, multicast, the broadcast address), are no DNS servers
// either: refused at apply (accepted before, probe); a stored one keeps
// working.
TEST(ValidationTest, DnsServersNoConnectionGoesToAreRefusedAtApply) {
  const std::string named = R"(cluster { name: "web" endpoints { address: "api.internal" port: 80 }
      dns_resolvers: "10.0.0.53" dns_resolvers: "224.0.0.251:5353" dns_resolvers: "[ff02::fb]:5353"
      dns_resolvers: "255.255.255.255" dns_resolvers: "[::ffff:0.1.2.3]:53" })";
  const std::string e = AppliedErrors(named);
  EXPECT_EQ(e.find("dns_resolvers[0]"), std::string::npos) << e;
  EXPECT_NE(e.find("dns_resolvers[1]: '224.0.0.251:5353' is a multicast address (224.0.0.0/4), "
                   "no DNS server to ask"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("dns_resolvers[2]: '[ff02::fb]:5353' is a multicast address (ff00::/8)"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("dns_resolvers[3]: '255.255.255.255' is the broadcast address"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("dns_resolvers[4]: '[::ffff:0.1.2.3]:53' is in 0.0.0.0/8 (\"this network\")"),
            std::string::npos)
      << e;
  EXPECT_EQ(ErrorsWith(named), "");
}

// A policy's own apply-only rules (PolicyValidator::ValidateNew) run on a
// route table's policies, on the virtual host and on each route, when
// applied; a stored or pushed table that breaks them stays valid.
TEST(ValidationTest, PolicyRulesForNewContentRunAtApplyOnly) {
  auto acl = [](const std::string& text) {
    const google::protobuf::Descriptor* type = FindPolicyValidator("acl")->config_type();
    std::unique_ptr<google::protobuf::Message> config(
        google::protobuf::MessageFactory::generated_factory()->GetPrototype(type)->New());
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, config.get())) << text;
    config::v1::TypedExtensionConfig policy;
    policy.set_name("acl");
    policy.mutable_typed_config()->PackFrom(*config);
    return policy;
  };
  Resource table = Parse(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" } direct_response { status: 200 } } } })");
  auto* vhost = table.mutable_route_table()->mutable_virtual_hosts(0);
  *vhost->add_policies() = acl(R"(allow: "a b")");
  *vhost->mutable_routes(0)->add_policies() = acl(R"(deny: "ok" deny: "x/y")");
  std::vector<ValidationError> errors;
  ValidateResource(table, &errors);
  EXPECT_TRUE(errors.empty()) << ToStatus(errors);
  ValidateNewContent(table, &errors);
  ASSERT_EQ(errors.size(), 2u) << ToStatus(errors);
  EXPECT_EQ(errors[0].field, "virtual_hosts[0].policies[0].typed_config.allow[0]");
  EXPECT_EQ(errors[1].field, "virtual_hosts[0].routes[0].policies[0].typed_config.deny[1]");
  EXPECT_TRUE(absl::StrContains(errors[1].message, "'x/y' would match no Consumer group"))
      << errors[1].message;
}

TEST(ValidationTest, AppliedResourcesCarryNoUnknownFields) {
  auto errors_of = [](const Resource& r) {
    std::vector<ValidationError> errors;
    ValidateNewContent(r, &errors);
    return ToStatus(errors).ToString();
  };
  Resource cluster = Parse(R"(cluster { name: "web" endpoints { address: "127.0.0.1" port: 80 } })");
  EXPECT_EQ(errors_of(cluster), "OK");
  cluster.mutable_cluster()->GetReflection()->MutableUnknownFields(cluster.mutable_cluster())
      ->AddLengthDelimited(999, "hello");
  EXPECT_TRUE(absl::StrContains(errors_of(cluster),
                                "Cluster \"web\": carries field number 999, which this "
                                "sluice-control does not know"))
      << errors_of(cluster);
  Resource deep = Parse(R"(cluster { name: "web" endpoints { address: "127.0.0.1" port: 80 }
      endpoints { address: "127.0.0.2" port: 80 } })");
  auto* endpoint = deep.mutable_cluster()->mutable_endpoints(1);
  endpoint->GetReflection()->MutableUnknownFields(endpoint)->AddVarint(77, 1);
  EXPECT_TRUE(absl::StrContains(errors_of(deep), "endpoints[1]: carries field number 77"))
      << errors_of(deep);
  Resource table = Parse(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" } direct_response { status: 200 }
        policies { name: "headers" } } } })");
  auto* policy = table.mutable_route_table()->mutable_virtual_hosts(0)->mutable_routes(0)
                     ->mutable_policies(0);
  policy->mutable_typed_config()->set_type_url(
      "type.googleapis.com/sluice.policy.headers.v1.HeadersConfig");
  policy->mutable_typed_config()->set_value(std::string("\xb8\x3e\x01", 3));  // field 999, varint 1
  EXPECT_TRUE(absl::StrContains(errors_of(table),
                                "virtual_hosts[0].routes[0].policies[0].typed_config: carries "
                                "field number 999"))
      << errors_of(table);
  // On the Any wrapper itself (before: only what it carries was checked,
  // and the wrapper's extra bytes were stored).
  policy->mutable_typed_config()->clear_value();
  policy->mutable_typed_config()->GetReflection()
      ->MutableUnknownFields(policy->mutable_typed_config())
      ->AddLengthDelimited(9, "smuggled-bytes");
  EXPECT_TRUE(absl::StrContains(errors_of(table),
                                "virtual_hosts[0].routes[0].policies[0].typed_config: carries "
                                "field number 9,"))
      << errors_of(table);
  // A known field number with another wire type is named as such, not as
  // unknown: port (an integer) sent length-delimited.
  Resource wrong = Parse(R"(cluster { name: "web" endpoints { address: "127.0.0.1" port: 80 } })");
  auto* first = wrong.mutable_cluster()->mutable_endpoints(0);
  first->GetReflection()->MutableUnknownFields(first)->AddLengthDelimited(
      first->GetDescriptor()->FindFieldByName("port")->number(), "80");
  EXPECT_TRUE(absl::StrContains(errors_of(wrong),
                                "endpoints[0].port: field number 2 came with the wrong wire type"))
      << errors_of(wrong);
}

TEST(ValidationTest, AppliedRouteMatchesMustBeMatchable) {
  for (const char* fine : {"prefix /a%2F", "prefix /a%2", "prefix /a%", "prefix /a/..",
                           "prefix /a/.well-known", "path /a%3Ab", "path /a/...", "regex /a b"}) {
    EXPECT_EQ(NewContentErrors(fine), "OK") << fine;
  }
  const std::pair<const char*, const char*> refused[] = {
      {"prefix /caf\xc3\xa9 x",
       "virtual_hosts[0].routes[1].match.prefix: '/caf\\xc3\\xa9 x' has the byte 0xC3 at "
       "byte 5, which requests send percent-encoded: write '/caf%C3%A9%20x'; no request would "
       "match"},
      {"prefix /%61dmin",
       "match.prefix: '/%61dmin' has %61 at byte 2, which request paths carry as 'a' once "
       "normalised: write '/admin'"},
      {"path /a%2fb", "has %2f at byte 3, which request paths carry as %2F once "
                      "normalised: write '/a%2Fb'"},
      {"prefix /search?q=", "has '?' at byte 8: the query is not part of the path "
                            "(match it with query_parameters)"},
      {"path /a#b", "has '#' at byte 3: a request whose path holds one is refused (400)"},
      {"prefix /a%zz", "has '%' at byte 3 starting no percent-encoding"},
      {"path /a%2", "has '%' at byte 3 starting no percent-encoding"},
      {"prefix /a%00", "has %00 at byte 3"},
      {"prefix /a%e", "ends with %e, which request paths carry as %E... once normalised: write "
                      "'/a%E'"},
      {"prefix /a/../b", "has the segment '..', which request paths never hold"},
      {"prefix /a/%2E/b", "has the segment '.', which request paths never hold"},
      {"path /a/..", "has the segment '..'"},
  };
  for (const auto& [match, message] : refused) {
    std::string e = NewContentErrors(match);
    EXPECT_NE(e.find(message), std::string::npos) << match << ": " << e;
  }
  // A route ignoring case matches a lower-case percent-encoding; the other
  // spellings are still refused.
  EXPECT_EQ(NewContentErrors("path /a%2fb", false), "OK");
  EXPECT_EQ(NewContentErrors("prefix /a%e", false), "OK");
  EXPECT_NE(NewContentErrors("prefix /%61dmin", false).find("write '/admin'"), std::string::npos);
}

TEST(ValidationTest, MatcherIgnoreCaseIsForStringMatches) {
  auto with = [](const std::string& matcher) {
    return absl::StrCat(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" headers { name: "x-a" )",
                        matcher, R"( } } route { cluster: "users" } } } })");
  };
  for (const char* fine : {"suffix: \".json\"", "contains: \"bot\" ignore_case: true",
                           "exact: \"A\" ignore_case: true", "prefix: \"A\" ignore_case: true"}) {
    EXPECT_EQ(ErrorsWith(with(fine)), "") << fine;
  }
  EXPECT_NE(ErrorsWith(with("regex: \"a\" ignore_case: true"))
                .find("headers[0].ignore_case: applies to exact, prefix, suffix and contains; "
                      "make a regex ignore case with (?i)"),
            std::string::npos);
  EXPECT_NE(ErrorsWith(with("present: true ignore_case: true"))
                .find("headers[0].ignore_case: applies to exact, prefix, suffix and contains, "
                      "not to present"),
            std::string::npos);
  EXPECT_NE(ErrorsWith(with("invert: true"))
                .find("headers[0]: needs one of exact, prefix, suffix, contains, regex or present"),
            std::string::npos);
  // The same for query parameters.
  auto query = [](const std::string& matcher) {
    return absl::StrCat(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" query_parameters { name: "q" )",
                        matcher, R"( } } route { cluster: "users" } } } })");
  };
  EXPECT_EQ(ErrorsWith(query("suffix: \"x\" ignore_case: true")), "");
  EXPECT_NE(ErrorsWith(query("regex: \"a\" ignore_case: true"))
                .find("query_parameters[0].ignore_case: applies to exact, prefix, suffix and "
                      "contains; make a regex ignore case with (?i)"),
            std::string::npos);
  EXPECT_NE(ErrorsWith(query("ignore_case: true"))
                .find("query_parameters[0]: needs one of exact, prefix, suffix, contains, regex "
                      "or present"),
            std::string::npos);
}

TEST(ValidationTest, MethodsMustBeUpperCaseTokens) {
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" methods: "get" } route { cluster: "users" } } } })")
                .find("methods[0]: 'get' is not an upper-case HTTP method"),
            std::string::npos);
  // A route that could never match, or a method listed twice (accepted before).
  const std::string connect = R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" methods: "GET" methods: "CONNECT" } route { cluster: "users" } } } })";
  const std::string twice = R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" methods: "GET" methods: "POST" methods: "GET" } route { cluster: "users" } } } })";
  EXPECT_NE(AppliedErrors(connect).find("methods[1]: CONNECT is answered 405 by the gateway"),
            std::string::npos);
  EXPECT_NE(AppliedErrors(twice).find("methods[2]: 'GET' is listed twice"), std::string::npos);
  // At apply only: a stored state with them (accepted before) still serves.
  EXPECT_EQ(ErrorsWith(connect), "");
  EXPECT_EQ(ErrorsWith(twice), "");
}

TEST(ValidationTest, RedirectPrefixRewriteRules) {
  auto with = [](const std::string& match, const std::string& redirect) {
    return absl::StrCat(
        R"(route_table { name: "main" virtual_hosts { domains: "*" routes { match { )", match,
        " } redirect { ", redirect, " } } } }");
  };
  EXPECT_EQ(ErrorsWith(with("prefix: \"/a\"", "prefix_rewrite: \"/b\"")), "");
  EXPECT_NE(ErrorsWith(with("path: \"/a\"", "prefix_rewrite: \"/b\""))
                .find("redirect.prefix_rewrite: needs a match on prefix"),
            std::string::npos);
  EXPECT_NE(ErrorsWith(with("prefix: \"/a\"", "prefix_rewrite: \"b\""))
                .find("redirect.prefix_rewrite: must start with '/'"),
            std::string::npos);
  EXPECT_NE(
      ErrorsWith(with("prefix: \"/a\"", "prefix_rewrite: \"/b\" path_redirect: \"/c\""))
          .find("redirect.prefix_rewrite: set only one of path_redirect and prefix_rewrite"),
      std::string::npos);
  EXPECT_NE(ErrorsWith(with("prefix: \"/a\"", "prefix_rewrite: \"/b c\""))
                .find("must not contain spaces or control characters"),
            std::string::npos);
  EXPECT_NE(AppliedErrors(with("prefix: \"/a\"", "prefix_rewrite: \"/b#c\""))
                .find("redirect.prefix_rewrite: has '#' at byte 3"),
            std::string::npos)
      << AppliedErrors(with("prefix: \"/a\"", "prefix_rewrite: \"/b#c\""));
}

TEST(ValidationTest, RedirectAndDirectResponseRanges) {
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" } redirect { response_code: 200 } } } })")
                .find("redirect.response_code: must be 301, 302, 303, 307 or 308, got 200"),
            std::string::npos);
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" } direct_response { status: 99 } } } })")
                .find("direct_response.status: must be 200..599, got 99"),
            std::string::npos);
}

// Values that would make a bad target or Location are refused at apply
// (they were accepted: the upstream got "/a?b/z?orig=1", a client
// "http://evil.example/x/...", every request on a route a 400).
TEST(ValidationTest, RewritesRedirectsAndAnswersThatCannotWork) {
  auto text = [](const std::string& route) {
    return absl::StrCat(
        R"(route_table { name: "main" virtual_hosts { domains: "*" routes { match { prefix: "/a" } )",
        route, " } } }");
  };
  auto errors = [&](const std::string& route) { return AppliedErrors(text(route)); };
  const std::pair<const char*, const char*> refused[] = {
      {R"(route { cluster: "users" prefix_rewrite: "/a?b" })", "prefix_rewrite: has '?' at byte 3"},
      {R"(route { cluster: "users" prefix_rewrite: "/a#b" })", "prefix_rewrite: has '#' at byte 3"},
      {R"(route { cluster: "users" prefix_rewrite: "/%zz" })",
       "prefix_rewrite: has '%' at byte 2 starting no percent-encoding"},
      {R"(route { cluster: "users" prefix_rewrite: "/../" })",
       "prefix_rewrite: has the segment '..': requests on the route would be refused"},
      // After prefix "/a" the rest of the path ("/x", "") leaves the last one
      // whole too: "/v1/../x". Before: accepted, and nearly every request 400.
      {R"(route { cluster: "users" prefix_rewrite: "/v1/.." })",
       "prefix_rewrite: has the segment '..', which requests for '/a' and '/a/...' leave whole"},
      {R"(route { cluster: "users" prefix_rewrite: "/a%2Fb/." })", "has the segment '.'"},
      // Sent raw upstream before (RFC 9112 3.2 wants it percent-encoded).
      {R"(route { cluster: "users" prefix_rewrite: "/\303\274" })",
       "prefix_rewrite: has '\\xc3' (0xC3) at byte 2: a request target takes it percent-encoded"},
      {R"(route { cluster: "users" prefix_rewrite: "/a|b" })", "has '|' (0x7C) at byte 3"},
      {R"(route { cluster: "users" prefix_rewrite: "/v/%2E/" })", "has the segment '%2E'"},
      {R"(redirect { host_redirect: "::1" })", "host_redirect: an IPv6 address is written in brackets"},
      {R"(redirect { host_redirect: "evil.example/x" })", "host_redirect: 'evil.example/x' is not a host name"},
      {R"(redirect { host_redirect: "user@a.example" })", "is not a host name"},
      {R"(redirect { host_redirect: "a.example:99999" })", "host_redirect: the port in 'a.example:99999' must be 1..65535"},
      {R"(direct_response { status: 204 body: "x" })", "direct_response.body: a 204 answer has no body"},
      {R"(direct_response { status: 205 body: "x" })", "direct_response.body: a 205 answer has no body"},
  };
  for (const auto& [route, message] : refused) {
    EXPECT_NE(errors(route).find(message), std::string::npos) << route << "\n" << errors(route);
    // Refused when applied, never in a stored or pushed state: a route an
    // earlier build accepted keeps being served, and other changes go on
    // (before: the control plane refused every apply and a new proxy its
    // whole config).
    EXPECT_EQ(ErrorsWith(text(route)), "") << route;
  }
  // After a prefix ending in '/' the rest runs on into the last segment
  // ("/v1/.." and "x" make "/v1/..x"): fine.
  EXPECT_EQ(AppliedErrors(R"(route_table { name: "main" virtual_hosts { domains: "*" routes {
      match { prefix: "/a/" } route { cluster: "users" prefix_rewrite: "/v1/.." } } } })"),
            "");
  for (const char* fine : {R"(route { cluster: "users" prefix_rewrite: "/v2/" })",
                           R"(route { cluster: "users" prefix_rewrite: "/a%2Fb/.x" })",
                           R"(route { cluster: "users" prefix_rewrite: "/%C3%BC/" })",
                           R"(redirect { host_redirect: "new.example.com:8443" })",
                           R"(redirect { host_redirect: "[::1]:8080" })",
                           R"(redirect { path_redirect: "/doc#part" })",
                           R"(direct_response { status: 204 })"}) {
    EXPECT_EQ(errors(fine), "") << fine;
  }
  EXPECT_NE(AppliedErrors(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { regex: "" } direct_response { status: 200 } } } })")
                .find("match.regex: is empty"),
            std::string::npos);
  const std::string labels = R"(route_table { name: "main" virtual_hosts { domains: "a..b"
      routes { match { prefix: "/" } direct_response { status: 200 } } } })";
  EXPECT_NE(AppliedErrors(labels).find("domains[0]: 'a..b' is not a host name"),
            std::string::npos);
  EXPECT_EQ(ErrorsWith(labels), "");  // at apply only
  // An empty domain: one error, not a second about its labels.
  const std::string empty = AppliedErrors(R"(route_table { name: "main" virtual_hosts {
      domains: "" routes { match { prefix: "/" } direct_response { status: 200 } } } })");
  EXPECT_TRUE(absl::StrContains(empty, "must be a lower-case host name")) << empty;
  EXPECT_FALSE(absl::StrContains(empty, "is not a host name")) << empty;
}

TEST(ValidationTest, PrefixRewriteNeedsPrefixMatch) {
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { path: "/x" } route { cluster: "users" prefix_rewrite: "/y" } } } })")
                .find("prefix_rewrite: needs a match on prefix"),
            std::string::npos);
}

TEST(ValidationTest, ValuesThatReachTheWireCannotInject) {
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/a" } route { cluster: "users" prefix_rewrite: "/b\r\nx-injected: 1" } } } })")
                .find("prefix_rewrite: must not contain spaces or control characters"),
            std::string::npos);
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/a" } redirect { path_redirect: "/b\nset-cookie: x" } } } })")
                .find("must not contain spaces or control characters"),
            std::string::npos);
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/a" } direct_response { status: 200 content_type: "text/plain\r\nx: y" } } } })")
                .find("content_type: must not contain control characters"),
            std::string::npos);
}

TEST(ValidationTest, UnknownPolicyRejected) {
  EXPECT_NE(ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" } route { cluster: "users" } policies { name: "magic" } } } })")
                .find("policies[0].name: unknown policy 'magic'"),
            std::string::npos);
  // A typo of a known name says which one (the YAML loader's hint, for a
  // policy listed without a config too).
  const std::string typo = ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" } route { cluster: "users" } policies { name: "rate-limt" } } } })");
  EXPECT_NE(typo.find("unknown policy 'rate-limt' (this build has: "), std::string::npos) << typo;
  EXPECT_NE(typo.find("); did you mean 'rate-limit'?"), std::string::npos) << typo;
  const std::string caps = ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { match { prefix: "/" } route { cluster: "users" } policies { name: "JWT" } } } })");
  EXPECT_NE(caps.find("unknown policy 'JWT' (this build has: "), std::string::npos) << caps;
  EXPECT_NE(caps.find("); did you mean 'jwt'?"), std::string::npos) << caps;
}

TEST(ValidationTest, HeaderLimitRange) {
  EXPECT_NE(ErrorsWith(R"(listener { name: "public" address: "127.0.0.1" port: 8080
      route_table: "main" http { max_request_headers_bytes: 10 } })")
                .find("http.max_request_headers_bytes: must be 1024..1048576, got 10"),
            std::string::npos);
}

std::string ClusterText(const std::string& fields) {
  return "cluster { name: \"users\" endpoints { address: \"127.0.0.1\" port: 9001 } " + fields +
         " }";
}
std::string ClusterErrors(const std::string& fields) {
  return AppliedErrors(ClusterText(fields));
}

// Cluster values that were accepted and could never work as written:
// refused at apply, while a stored or pushed one (from an older build)
// keeps working (before: a new proxy refused its whole config).
TEST(ValidationTest, ClusterValuesThatCannotWorkAreRefused) {
  for (const char* fields : {"lb_policy: MAGLEV hash_policy { source_ip: false }",
                             R"(health_check { http { path: "/a#b" host: "a@b:x" } })"}) {
    EXPECT_EQ(ErrorsWith(ClusterText(fields)), "") << fields;
  }
  EXPECT_EQ(ErrorsWith(R"(cluster { name: "users" endpoints { address: "127.0.0.1" port: 80 }
                       endpoints { address: "::ffff:127.0.0.1" port: 80 } })"),
            "");
  // Control bytes in what goes on the wire stay refused everywhere.
  EXPECT_NE(ErrorsWith(ClusterText(R"(health_check { http { path: "/a\r\nX: y" } })"))
                .find("health_check.http.path: must not contain spaces or control characters"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("lb_policy: MAGLEV hash_policy { source_ip: false }")
                .find("hash_policy.source_ip: must be true (false names no key)"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("lb_policy: RING_HASH hash_policy { path: false }")
                .find("hash_policy.path: must be true"),
            std::string::npos);
  EXPECT_NE(AppliedErrors(R"(cluster { name: "users" endpoints { address: "127.0.0.1" port: 80 }
                       endpoints { address: "::ffff:127.0.0.1" port: 80 } })")
                .find("endpoints[1]: [::ffff:127.0.0.1]:80 is the same endpoint as endpoints[0]"),
            std::string::npos);
  for (const auto& [check, message] : std::vector<std::pair<std::string, std::string>>{
           {R"(http { path: "/a#b" })", "health_check.http.path: has '#' (0x23) at byte 3"},
           {R"(http { path: "/%zz" })", "health_check.http.path: has '%' at byte 2"},
           {R"(http { path: "/a\"b" })", "health_check.http.path: has '\\\"' (0x22) at byte 3"},
           {R"(http { path: "/x" host: "a@b:x" })", "health_check.http.host: 'a@b:x' is not a host name"},
       }) {
    EXPECT_NE(ClusterErrors(absl::StrCat("health_check { ", check, " }")).find(message),
              std::string::npos)
        << check << "\n" << ClusterErrors(absl::StrCat("health_check { ", check, " }"));
  }
  EXPECT_EQ(ClusterErrors(R"(health_check { http { path: "/healthz?full=1&x=%2F" host: "h.test:8080" } })"),
            "");
  for (const char* host : {"my_service", "svc.internal.", "10.0.0.1:8080", "[::1]:80"}) {
    EXPECT_EQ(ClusterErrors(absl::StrCat(R"(health_check { http { path: "/h" host: ")", host,
                                         R"(" } })")),
              "")
        << host;
  }
  EXPECT_NE(ClusterErrors(R"(health_check { tcp { } interval { nanos: 500000000 } })")
                .find("health_check.timeout: 1s (the default) must not exceed interval (500ms): "
                      "set a timeout with an interval under 1s"),
            std::string::npos);
}

TEST(ValidationTest, HealthCheckRules) {
  EXPECT_EQ(ClusterErrors("health_check { http { path: \"/h\" } interval { seconds: 2 } }"), "");
  EXPECT_NE(ClusterErrors("health_check { interval { seconds: 1 } }").find("health_check: needs http, tcp or grpc"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("health_check { http { path: \"h\" } }").find("health_check.http.path: is required and must start with '/'"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("health_check { tcp { } interval { seconds: 1 } timeout { seconds: 2 } }")
                .find("health_check.timeout: must not exceed interval (1s)"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("health_check { tcp { } unhealthy_threshold: 101 }")
                .find("health_check.unhealthy_threshold: must be 1..100, got 101"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("health_check { http { path: \"/\" expected_statuses: 99 } }")
                .find("expected_statuses[0]: must be 100..599, got 99"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("health_check { tcp { } interval { nanos: 1000 } }")
                .find("health_check.interval: must be between 10ms and 1h"),
            std::string::npos);
}

TEST(ValidationTest, RetryBudgetRules) {
  EXPECT_EQ(ClusterErrors("circuit_breakers { retry_budget { budget_percent: 25 } }"), "");
  EXPECT_NE(ClusterErrors("circuit_breakers { max_retries: 5 retry_budget { } }")
                .find("circuit_breakers.retry_budget: not with max_retries"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("circuit_breakers { retry_budget { budget_percent: 101 } }")
                .find("budget_percent: must be 1..100, got 101"),
            std::string::npos);
}

TEST(ValidationTest, UpstreamProtocolRules) {
  EXPECT_EQ(ClusterErrors("protocol: HTTP2 max_concurrent_streams: 10"), "");
  EXPECT_EQ(ClusterErrors("protocol: HTTP2 health_check { grpc { service_name: \"echo\" } }"), "");
  EXPECT_NE(ClusterErrors("protocol: AUTO").find("protocol: AUTO picks the protocol by TLS ALPN "
                                                 "and needs tls"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("max_concurrent_streams: 10")
                .find("max_concurrent_streams: applies to HTTP/2 only"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("protocol: HTTP2 max_concurrent_streams: 2147483648")
                .find("max_concurrent_streams: must be 1..2147483647, got 2147483648"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("health_check { grpc { } }")
                .find("health_check.grpc: gRPC runs over HTTP/2: set the cluster's protocol"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("protocol: HTTP2 health_check { grpc { service_name: \"a b\" } }")
                .find("health_check.grpc: service_name and authority must not contain spaces"),
            std::string::npos);
}

TEST(ValidationTest, OutlierPanicAndHashingRules) {
  EXPECT_NE(ClusterErrors("outlier_detection { max_ejection_percent { value: 101 } }")
                .find("outlier_detection.max_ejection_percent: must be 0..100, got 101"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("outlier_detection { base_ejection_time { seconds: 100000 } }")
                .find("outlier_detection.base_ejection_time: must be between"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("panic_threshold_percent { value: 120 }")
                .find("panic_threshold_percent: must be 0..100, got 120"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("lb_policy: RING_HASH").find("hash_policy: is required for RING_HASH and MAGLEV"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("hash_policy { header: \"x\" }").find("hash_policy: is used only with RING_HASH or MAGLEV"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("lb_policy: MAGLEV hash_policy { header: \"a b\" }")
                .find("hash_policy.header: 'a b' is not a valid header name"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("lb_policy: RING_HASH hash_policy { source_ip: true } ring_points_per_weight: 8")
                .find("ring_points_per_weight: must be 16..65536, got 8"),
            std::string::npos);
  EXPECT_EQ(ClusterErrors("lb_policy: MAGLEV hash_policy { cookie: \"session\" }"), "");
  // Accepted and never used before; an ejection longer than its cap too.
  EXPECT_NE(ClusterErrors("ring_points_per_weight: 100")
                .find("ring_points_per_weight: is used only with RING_HASH"),
            std::string::npos);
  EXPECT_NE(ClusterErrors("outlier_detection { base_ejection_time { seconds: 400 } "
                          "max_ejection_time { seconds: 300 } }")
                .find("outlier_detection.max_ejection_time: must be at least base_ejection_time "
                      "(6m40s), got 5m"),
            std::string::npos);
  EXPECT_EQ(ClusterErrors("outlier_detection { base_ejection_time { seconds: 400 } }"), "");
}

TEST(ValidationTest, RetryPolicyRules) {
  auto route = [](const std::string& retry) {
    return ErrorsWith(R"(route_table { name: "main" virtual_hosts { domains: "*"
        routes { match { prefix: "/" } route { cluster: "users" retry_policy { )" + retry + " } } } } }");
  };
  EXPECT_EQ(route("num_retries: 2 retry_on: \"5xx\""), "");
  EXPECT_EQ(route("num_retries: 0"), "");
  EXPECT_NE(route("num_retries: 11").find("retry_policy.num_retries: must be 0..10, got 11"),
            std::string::npos);
  EXPECT_NE(route("retry_on: \"sometimes\"").find("retry_policy.retry_on[0]: 'sometimes' is not one of"),
            std::string::npos);
  EXPECT_NE(route("retriable_status_codes: 409").find("needs \"retriable-status-codes\" in retry_on"),
            std::string::npos);
  EXPECT_NE(route("retry_on: \"retriable-status-codes\" retriable_status_codes: 700")
                .find("retriable_status_codes[0]: must be 100..599, got 700"),
            std::string::npos);
  EXPECT_NE(route("base_interval { seconds: 20 }").find("retry_policy.base_interval: must be between 1ms and 10s"),
            std::string::npos);
  EXPECT_NE(route("max_replay_bytes: 20000000").find("max_replay_bytes: must be at most 16777216"),
            std::string::npos);
}

TEST(ValidationTest, ManyErrorsAreCapped) {
  ResourceMap state;
  for (int i = 0; i < 30; ++i) {
    Resource r = Parse("cluster { name: \"c" + std::to_string(i) + "\" }");
    state[IdOf(r)] = r;
  }
  std::string e(CheckState(state).message());
  EXPECT_NE(e.find("... and 10 more errors"), std::string::npos) << e;
}

// --- Secrets and listener TLS ---

Resource CertificateSecret(const std::string& name,
                           const testing::CertificateSpec& spec = {}) {
  testing::TestCertificate c = testing::MakeCertificate(spec);
  Resource r;
  r.mutable_secret()->set_name(name);
  r.mutable_secret()->mutable_tls_certificate()->set_certificate_chain(c.certificate_pem);
  r.mutable_secret()->mutable_tls_certificate()->set_private_key(c.key_pem);
  return r;
}

Resource CaSecret(const std::string& name) {
  testing::CertificateSpec spec;
  spec.is_ca = true;
  Resource r;
  r.mutable_secret()->set_name(name);
  r.mutable_secret()->mutable_trusted_ca()->set_ca_certificates(
      testing::MakeCertificate(spec).certificate_pem);
  return r;
}

// A private key over 64 KiB (a 20 MB "key" of padding was stored and
// pushed once) is refused at apply; a stored one still parses.
TEST(ValidationTest, AnOversizedPrivateKeyIsRefusedAtApplyOnly) {
  Resource secret = CertificateSecret("web");
  auto* certificate = secret.mutable_secret()->mutable_tls_certificate();
  certificate->set_private_key(std::string(70000, '\n') + certificate->private_key());
  std::vector<ValidationError> errors;
  ValidateResource(secret, &errors);
  EXPECT_TRUE(errors.empty()) << ToStatus(errors);
  ValidateNewContent(secret, &errors);
  ASSERT_EQ(errors.size(), 1u) << ToStatus(errors);
  EXPECT_EQ(errors[0].ToString(),
            absl::StrCat("Secret \"web\": tls_certificate.private_key: is ",
                         certificate->private_key().size(), " bytes, at most 65536"));
}

// Valid() plus Secrets "web" (tls_certificate) and "clients" (trusted_ca), and
// the listener terminating TLS with "web".
ResourceMap ValidTls() {
  ResourceMap state = Valid();
  for (const Resource& r : {CertificateSecret("web"), CaSecret("clients")}) state[IdOf(r)] = r;
  Resource listener = Parse(std::string(kListener));
  listener.mutable_listener()->mutable_tls()->add_certificates("web");
  state[IdOf(listener)] = listener;
  return state;
}

// Errors after setting the listener's tls to `text` (text format of ListenerTls).
std::string ListenerTlsErrors(const std::string& text) {
  ResourceMap state = ValidTls();
  Resource& listener = state[{config::v1::LISTENER, "public"}];
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(
      text, listener.mutable_listener()->mutable_tls()))
      << text;
  return std::string(CheckState(state).message());
}

TEST(ValidationTest, TlsStatePasses) {
  EXPECT_TRUE(CheckState(ValidTls()).ok()) << CheckState(ValidTls());
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: ["web"] min_version: "1.3" alpn_protocols: "http/1.1"
      cipher_suites: "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:!aNULL:@STRENGTH"
      client_ca: "clients" require_client_certificate { value: false } session_tickets {})"),
            "");
}

TEST(ValidationTest, SecretContentErrorsNameSecretAndField) {
  ResourceMap state = ValidTls();
  Resource other = CertificateSecret("web");
  state[{config::v1::SECRET, "web"}].mutable_secret()->mutable_tls_certificate()->set_private_key(
      other.secret().tls_certificate().private_key());
  EXPECT_EQ(CheckState(state).message(),
            "Secret \"web\": tls_certificate.private_key: does not match the certificate's "
            "public key");
  Resource empty_ca;
  empty_ca.mutable_secret()->set_name("clients");
  empty_ca.mutable_secret()->mutable_trusted_ca();
  state = ValidTls();
  state[IdOf(empty_ca)] = empty_ca;
  EXPECT_EQ(CheckState(state).message(),
            "Secret \"clients\": trusted_ca.ca_certificates: is required");
}

TEST(ValidationTest, SecretNeedsOneTypeAndAValidName) {
  EXPECT_EQ(ErrorsWith(R"(secret { name: "bare" })"),
            "Secret \"bare\": needs one of tls_certificate or trusted_ca");
  Resource r = CaSecret("a b");
  std::vector<ValidationError> errors;
  ValidateResource(r, &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].ToString(),
            "Secret \"a b\": name: 'a b' may contain only ASCII letters, digits, '-', '_' and '.'");
}

TEST(ValidationTest, RedactedKeyFromGetCannotBeApplied) {
  ResourceMap state = ValidTls();
  RedactSecrets(&state);
  EXPECT_EQ(state.at({config::v1::SECRET, "web"}).secret().tls_certificate().private_key(),
            "[redacted]");
  EXPECT_EQ(CheckState(state).message(),
            "Secret \"web\": tls_certificate.private_key: is \"[redacted]\", what sluicectl get "
            "and the admin API show in place of a key: the key was redacted on output and must "
            "be supplied (the PEM private key itself)");
}

// A key on a curve TLS 1.3 does not sign with: refused at apply, kept in a
// stored or pushed state (builds before accepted it).
TEST(ValidationTest, TheKeysCurveIsCheckedAtApplyTimeOnly) {
  testing::CertificateSpec spec;
  spec.key_type = testing::KeyType::kEcdsaSecp256k1;
  Resource secret = CertificateSecret("web", spec);
  ResourceMap state = ValidTls();
  state[IdOf(secret)] = secret;
  EXPECT_TRUE(CheckState(state).ok()) << CheckState(state);
  std::vector<ValidationError> errors;
  ValidateAtApplyTime(secret, absl::Now(), &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].ToString(),
            "Secret \"web\": tls_certificate.private_key: is an EC key on a curve other than "
            "P-256, P-384 or P-521: TLS 1.3 signs with those only, and clients refuse the "
            "handshake");
}

TEST(ValidationTest, CertificateValidityIsCheckedAtApplyTimeOnly) {
  testing::CertificateSpec spec;
  spec.not_before = absl::FromUnixSeconds(1672531200);  // 2023-01-01
  spec.not_after = absl::FromUnixSeconds(1704067200);   // 2024-01-01
  Resource expired = CertificateSecret("web", spec);
  ResourceMap state = ValidTls();
  state[IdOf(expired)] = expired;
  // The content is fine: a stored or pushed state stays valid when a
  // certificate in it expires.
  EXPECT_TRUE(CheckState(state).ok()) << CheckState(state);
  std::vector<ValidationError> errors;
  ValidateAtApplyTime(expired, absl::FromUnixSeconds(1704067200 + 1), &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].ToString(),
            "Secret \"web\": tls_certificate.certificate_chain: certificate expired at "
            "2024-01-01T00:00:00Z");
  errors.clear();
  ValidateAtApplyTime(expired, absl::FromUnixSeconds(1672531200 - 1), &errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].message, "certificate is not valid before 2023-01-01T00:00:00Z");
  errors.clear();
  ValidateAtApplyTime(expired, absl::FromUnixSeconds(1690000000), &errors);
  ValidateAtApplyTime(CaSecret("ca"), absl::FromUnixSeconds(0), &errors);
  ValidateAtApplyTime(Parse(kCluster), absl::FromUnixSeconds(0), &errors);
  EXPECT_TRUE(errors.empty());
}

TEST(ValidationTest, ListenerTlsCertificatesList) {
  EXPECT_EQ(ListenerTlsErrors(""),
            "Listener \"public\": tls.certificates: needs at least one Secret with a "
            "tls_certificate");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: ["web", ""])"),
            "Listener \"public\": tls.certificates[1]: is required");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: ["web", "web"])"),
            "Listener \"public\": tls.certificates[1]: Secret \"web\" is already listed at "
            "tls.certificates[0]");
  std::string many = "certificates: [\"web\"";
  for (int i = 1; i < 65; ++i) absl::StrAppend(&many, ", \"web", i, "\"");
  many += "]";
  std::string e = ListenerTlsErrors(many);
  EXPECT_NE(e.find("Listener \"public\": tls.certificates: has 65 entries; at most 64"),
            std::string::npos)
      << e;
}

TEST(ValidationTest, ListenerTlsVersions) {
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" min_version: "1.1")"),
            "Listener \"public\": tls.min_version: must be \"1.2\" or \"1.3\", got '1.1'");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" max_version: "TLSv1.3")"),
            "Listener \"public\": tls.max_version: must be \"1.2\" or \"1.3\", got 'TLSv1.3'");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" min_version: "1.3" max_version: "1.2")"),
            "Listener \"public\": tls.min_version: 1.3 is above max_version 1.2");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" max_version: "1.2")"), "");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" min_version: "1.3")"), "");
}

TEST(ValidationTest, ListenerTlsAlpn) {
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" alpn_protocols: ["h2", "http/1.1"])"), "");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" alpn_protocols: ["spdy/3"])"),
            "Listener \"public\": tls.alpn_protocols[0]: 'spdy/3' is not supported (h2 or "
            "http/1.1)");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" alpn_protocols: ["http/1.1", "http/1.1"])"),
            "Listener \"public\": tls.alpn_protocols[1]: 'http/1.1' is listed twice");
  std::string e = ListenerTlsErrors(
      R"(certificates: "web" alpn_protocols: ["a", "b", "c", "d", "e", "f", "g", "h", "i"])");
  EXPECT_NE(e.find("tls.alpn_protocols: has 9 entries; at most 8"), std::string::npos) << e;
}

TEST(ValidationTest, ListenerTlsCipherSuites) {
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" cipher_suites: "ECDHE-RSA-AES128-GCM-SHA256:BOGUS-CIPHER")"),
            "Listener \"public\": tls.cipher_suites: 'BOGUS-CIPHER' matches no TLS 1.2 cipher "
            "suite");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" cipher_suites: "TLS_AES_128_GCM_SHA256")"),
            "Listener \"public\": tls.cipher_suites: 'TLS_AES_128_GCM_SHA256' is a TLS 1.3 "
            "suite; TLS 1.3 suites are not configurable (all three standard ones are offered)");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" cipher_suites: "ECDHE-RSA-AES128-GCM-SHA256:!ECDHE")"),
            "Listener \"public\": tls.cipher_suites: 'ECDHE-RSA-AES128-GCM-SHA256:!ECDHE' leaves "
            "no TLS 1.2 cipher suite");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" cipher_suites: "ECDHE+AESGCM:ECDHE+CHACHA20")"),
            "");
  // Suites that do not authenticate the gateway or do not encrypt, and a
  // lowered security level, are refused rather than offered.
  EXPECT_NE(ListenerTlsErrors(R"(certificates: "web" cipher_suites: "ECDHE-RSA-AES128-GCM-SHA256:aNULL")")
                .find("which does not authenticate the server (add !aNULL)"),
            std::string::npos);
  EXPECT_NE(ListenerTlsErrors(R"(certificates: "web" cipher_suites: "eNULL")")
                .find("which does not encrypt (add !eNULL)"),
            std::string::npos);
  EXPECT_NE(ListenerTlsErrors(R"(certificates: "web" cipher_suites: "ALL:@SECLEVEL=0")")
                .find("'@SECLEVEL=0' changes OpenSSL's security level"),
            std::string::npos);
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" cipher_suites: "HIGH:!aNULL:!eNULL")"), "");
}

// At apply: `@SECLEVEL=` inside an element (OpenSSL reads it there too: a
// 1024-bit RSA client certificate then passed mTLS) and the SUITEB
// keywords (Suite B mode, which made every handshake of a P-256 listener
// fail). A stored list keeps loading.
TEST(ValidationTest, ListenerCipherSuitesCannotHideASecurityLevelOrSuiteB) {
  for (const char* list : {"ECDHE-ECDSA-AES128-GCM-SHA256@SECLEVEL=0", "SUITEB192",
                           "SUITEB128ONLY", "ECDHE-RSA-AES128-GCM-SHA256:suiteb128"}) {
    Resource listener;
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
        absl::StrCat(R"(listener { name: "public" address: "127.0.0.1" port: 8443 tls {
            certificates: "web" cipher_suites: ")", list, R"(" } })"),
        &listener));
    std::vector<ValidationError> errors;
    ValidateNewContent(listener, &errors);
    ASSERT_EQ(errors.size(), 1u) << list;
    EXPECT_EQ(errors[0].field, "tls.cipher_suites") << list;
    EXPECT_TRUE(absl::StrContains(errors[0].message, absl::StrContains(list, "SECLEVEL")
                                                         ? "changes OpenSSL's security level"
                                                         : "Suite B mode"))
        << errors[0].message;
  }
  Resource plain;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      R"(listener { name: "public" address: "127.0.0.1" port: 8443 tls {
          certificates: "web" cipher_suites: "ECDHE+AESGCM:@STRENGTH" } })",
      &plain));
  std::vector<ValidationError> errors;
  ValidateNewContent(plain, &errors);
  EXPECT_TRUE(errors.empty());
}

// With cipher_suites set and TLS 1.2 allowed, each certificate's key needs a
// suite it can serve: an ECDSA certificate behind RSA-only suites (or the
// other way round) would fail every TLS 1.2 handshake that picks it.
TEST(ValidationTest, EachCertificateNeedsATls12SuiteForItsKey) {
  EXPECT_NE(ListenerTlsErrors(R"(certificates: "web" cipher_suites: "ECDHE-RSA-AES128-GCM-SHA256")")
                .find("tls.certificates[0]: Secret \"web\" holds an ECDSA (or EdDSA) key, and "
                      "tls.cipher_suites has no TLS 1.2 suite for it (ECDHE-ECDSA-...)"),
            std::string::npos);
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" min_version: "1.3"
      cipher_suites: "ECDHE-RSA-AES128-GCM-SHA256")"),
            "");  // TLS 1.3 only: the list is not used
  ResourceMap state = ValidTls();
  testing::CertificateSpec rsa;
  rsa.key_type = testing::KeyType::kRsa2048;
  Resource rsa_secret = CertificateSecret("rsa-web", rsa);
  state[IdOf(rsa_secret)] = rsa_secret;
  Resource& listener = state[{config::v1::LISTENER, "public"}];
  listener.mutable_listener()->mutable_tls()->add_certificates("rsa-web");
  listener.mutable_listener()->mutable_tls()->set_cipher_suites("ECDHE-ECDSA-AES128-GCM-SHA256");
  EXPECT_NE(std::string(CheckState(state).message())
                .find("tls.certificates[1]: Secret \"rsa-web\" holds an RSA key"),
            std::string::npos)
      << CheckState(state);
  listener.mutable_listener()->mutable_tls()->set_cipher_suites(
      "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256");
  EXPECT_TRUE(CheckState(state).ok()) << CheckState(state);
  // Suites the proxy never negotiates (it has no pre-shared key, SRP
  // password or DH parameters) serve no certificate. Before: an SRP-RSA,
  // RSA-PSK or DHE-RSA suite passed for the RSA certificate, and every
  // TLS 1.2 client then failed the handshake.
  for (const char* unusable : {"SRP-RSA-AES-128-CBC-SHA", "RSA-PSK-AES128-GCM-SHA256",
                               "DHE-RSA-AES128-GCM-SHA256", "PSK-AES128-GCM-SHA256"}) {
    listener.mutable_listener()->mutable_tls()->set_cipher_suites(
        absl::StrCat("ECDHE-ECDSA-AES128-GCM-SHA256:", unusable));
    EXPECT_NE(std::string(CheckState(state).message())
                  .find("tls.certificates[1]: Secret \"rsa-web\" holds an RSA key"),
              std::string::npos)
        << unusable << ": " << CheckState(state);
  }
}

TEST(ValidationTest, ListenerTlsClientCertificates) {
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" require_client_certificate { value: true })"),
            "Listener \"public\": tls.require_client_certificate: needs client_ca (the Secret "
            "with the CAs that client certificates are checked against)");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" client_ca: "clients")"), "");
}

TEST(ValidationTest, ListenerTlsReferencesExistingSecretsOfTheRightType) {
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: ["web", "gone"])"),
            "Listener \"public\": tls.certificates[1]: Secret \"gone\" does not exist");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: ["clients"])"),
            "Listener \"public\": tls.certificates[0]: Secret \"clients\" is not a "
            "tls_certificate (it is a trusted_ca)");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" client_ca: "web")"),
            "Listener \"public\": tls.client_ca: Secret \"web\" is not a trusted_ca (it is a "
            "tls_certificate)");
  EXPECT_EQ(ListenerTlsErrors(R"(certificates: "web" client_ca: "nope")"),
            "Listener \"public\": tls.client_ca: Secret \"nope\" does not exist");
}

TEST(ValidationTest, RemovingASecretInUseIsInvalid) {
  ResourceMap state = ValidTls();
  state.erase({config::v1::SECRET, "web"});
  EXPECT_EQ(CheckState(state).message(),
            "Listener \"public\": tls.certificates[0]: Secret \"web\" does not exist");
  // Unreferenced, it may go.
  state = ValidTls();
  state.erase({config::v1::SECRET, "clients"});
  EXPECT_TRUE(CheckState(state).ok());
}

// --- Cluster TLS ---

// Errors after setting cluster "users"'s tls to `text` (text format of
// UpstreamTls) in ValidTls(), which has Secrets "web" (tls_certificate) and
// "clients" (trusted_ca).
std::string ClusterTlsErrors(const std::string& text) {
  ResourceMap state = ValidTls();
  Resource& cluster = state[{config::v1::CLUSTER, "users"}];
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(
      text, cluster.mutable_cluster()->mutable_tls()))
      << text;
  return std::string(CheckState(state).message());
}

TEST(ValidationTest, ClusterTlsPasses) {
  EXPECT_EQ(ClusterTlsErrors(R"(ca: "clients")"), "");
  EXPECT_EQ(ClusterTlsErrors(R"(ca: "clients" sni: "Backend-1.example.com"
      client_certificate: "web" min_version: "1.3" max_version: "1.3")"),
            "");
  EXPECT_EQ(ClusterTlsErrors(R"(insecure_skip_verify: true sni: "backend.test")"), "");
}

TEST(ValidationTest, ClusterTlsCaIsRequiredUnlessVerificationIsSkipped) {
  EXPECT_EQ(ClusterTlsErrors(""),
            "Cluster \"users\": tls.ca: is required: the Secret with the trusted_ca that the "
            "upstream's certificate must chain to (or, unsafe, insecure_skip_verify: true)");
  EXPECT_EQ(ClusterTlsErrors(R"(sni: "backend.test")"),
            "Cluster \"users\": tls.ca: is required: the Secret with the trusted_ca that the "
            "upstream's certificate must chain to (or, unsafe, insecure_skip_verify: true)");
  EXPECT_EQ(ClusterTlsErrors(R"(ca: "clients" insecure_skip_verify: true)"),
            "Cluster \"users\": tls.ca: must be unset with insecure_skip_verify (nothing is "
            "verified)");
}

TEST(ValidationTest, ClusterTlsNamesAndVersions) {
  // (Each also names a Secret that does not exist: the next line.)
  std::string e = ClusterTlsErrors(R"(ca: "a b")");
  EXPECT_NE(e.find("Cluster \"users\": tls.ca: 'a b' may contain only ASCII letters, digits, '-', '_' "
                   "and '.'\n"),
            std::string::npos)
      << e;
  e = ClusterTlsErrors(R"(ca: "clients" client_certificate: "web/1")");
  EXPECT_NE(e.find("Cluster \"users\": tls.client_certificate: 'web/1' may contain only ASCII letters, "
                   "digits, '-', '_' and '.'\n"),
            std::string::npos)
      << e;
  EXPECT_EQ(ClusterTlsErrors(R"(ca: "clients" min_version: "1.0")"),
            "Cluster \"users\": tls.min_version: must be \"1.2\" or \"1.3\", got '1.0'");
  EXPECT_EQ(ClusterTlsErrors(R"(ca: "clients" max_version: "1.4")"),
            "Cluster \"users\": tls.max_version: must be \"1.2\" or \"1.3\", got '1.4'");
  EXPECT_EQ(ClusterTlsErrors(R"(ca: "clients" min_version: "1.3" max_version: "1.2")"),
            "Cluster \"users\": tls.min_version: 1.3 is above max_version 1.2");
}

TEST(ValidationTest, ClusterTlsSniIsAHostName) {
  EXPECT_EQ(ClusterTlsErrors(R"(ca: "clients" sni: "10.0.0.1")"),
            "Cluster \"users\": tls.sni: '10.0.0.1' is an IP address; SNI carries host names "
            "only (leave sni unset to connect by address)");
  EXPECT_EQ(ClusterTlsErrors(R"(ca: "clients" sni: "::1")"),
            "Cluster \"users\": tls.sni: '::1' is an IP address; SNI carries host names only "
            "(leave sni unset to connect by address)");
  for (const std::string& bad :
       std::vector<std::string>{"*.example.com", "backend.test.", "-a.test", "a-.test", "a..test",
                                "back end.test", "a_b.test", std::string(64, 'a') + ".test"}) {
    EXPECT_EQ(ClusterTlsErrors(absl::StrCat(R"(ca: "clients" sni: ")", bad, "\"")),
              absl::StrCat("Cluster \"users\": tls.sni: '", bad,
                           "' is not a host name (labels of 1..63 letters, digits and '-', "
                           "not starting or ending with '-', separated by '.'; at most 253 in "
                           "all)"))
        << bad;
  }
  EXPECT_EQ(ClusterTlsErrors(absl::StrCat(R"(ca: "clients" sni: ")", std::string(63, 'a'),
                                          ".test\"")),
            "");
}

TEST(ValidationTest, ClusterTlsReferencesExistingSecretsOfTheRightType) {
  EXPECT_EQ(ClusterTlsErrors(R"(ca: "nope")"),
            "Cluster \"users\": tls.ca: Secret \"nope\" does not exist");
  EXPECT_EQ(ClusterTlsErrors(R"(ca: "web")"),
            "Cluster \"users\": tls.ca: Secret \"web\" is not a trusted_ca (it is a "
            "tls_certificate)");
  EXPECT_EQ(ClusterTlsErrors(R"(ca: "clients" client_certificate: "gone")"),
            "Cluster \"users\": tls.client_certificate: Secret \"gone\" does not exist");
  EXPECT_EQ(ClusterTlsErrors(R"(ca: "clients" client_certificate: "clients")"),
            "Cluster \"users\": tls.client_certificate: Secret \"clients\" is not a "
            "tls_certificate (it is a trusted_ca)");
}

TEST(ValidationTest, RemovingASecretAClusterUsesIsInvalid) {
  ResourceMap state = ValidTls();
  Resource& cluster = state[{config::v1::CLUSTER, "users"}];
  cluster.mutable_cluster()->mutable_tls()->set_ca("clients");
  cluster.mutable_cluster()->mutable_tls()->set_client_certificate("web");
  ASSERT_TRUE(CheckState(state).ok()) << CheckState(state);
  ResourceMap without_ca = state;
  without_ca.erase({config::v1::SECRET, "clients"});
  EXPECT_EQ(CheckState(without_ca).message(),
            "Cluster \"users\": tls.ca: Secret \"clients\" does not exist");
  // "web" is the listener's certificate too: both users are named.
  ResourceMap without_web = state;
  without_web.erase({config::v1::SECRET, "web"});
  std::string e(CheckState(without_web).message());
  EXPECT_NE(e.find("Cluster \"users\": tls.client_certificate: Secret \"web\" does not exist"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("Listener \"public\": tls.certificates[0]: Secret \"web\" does not exist"),
            std::string::npos)
      << e;
}

// --- Consumers ---

constexpr char kAliceKey[] = "alice-key-0123456789";
// A key that only appears as its hash here; the tests check that no error
// quotes a key or a hash.
constexpr char kBobKey[] = "bob-key-0123456789";

// A Consumer named `name`; `body` is the rest of its fields (text format).
Resource Consumer(const std::string& name, const std::string& body) {
  return Parse(absl::StrCat("consumer { name: \"", name, "\" ", body, " }"));
}

std::string ConsumerErrors(const std::string& body) {
  Resource r = Consumer("alice", body);
  ResourceMap state = Valid();
  state[IdOf(r)] = r;
  return std::string(CheckState(state).message());
}

TEST(ValidationTest, ConsumerStatePasses) {
  ResourceMap state = Valid();
  for (const Resource& r :
       {Consumer("alice@example.com",
                 absl::StrCat(R"(groups: ["admins", "ops.team_1-x@corp"] keys { key: ")", kAliceKey,
                              R"(" } keys { key_sha256: ")", Sha256Hex("another-alice-key"),
                              R"(" } basic_auth { username: "alice@example.com"
                                  password: "correct horse battery staple" })")),
        Consumer("bob", absl::StrCat(R"(basic_auth { username: "Bob Smith" password_hash: ")",
                                     HashPassword("pw", 10000), R"(" })")),
        Consumer("nobody", "")}) {
    state[IdOf(r)] = r;
  }
  EXPECT_TRUE(CheckState(state).ok()) << CheckState(state);
}

TEST(ValidationTest, ConsumerNameAndGroups) {
  EXPECT_EQ(ErrorsWith(R"(consumer { name: "a b" })"),
            "Consumer \"a b\": name: 'a b' may contain only ASCII letters, digits, '-', '_', '.' and "
            "'@'");
  EXPECT_EQ(ErrorsWith(R"(consumer { name: "" })"), "Consumer \"\": name: is required");
  EXPECT_EQ(ErrorsWith("consumer { name: \"" + std::string(129, 'a') + "\" }"),
            "Consumer \"" + std::string(128, 'a') +
                "...(129 bytes)\": name: is 129 characters; at most 128 are allowed");
  EXPECT_EQ(ConsumerErrors(R"(groups: ["ops", "a/b"])"),
            "Consumer \"alice\": groups[1]: 'a/b' may contain only ASCII letters, digits, '-', '_', "
            "'.' and '@'");
  EXPECT_EQ(ConsumerErrors(R"(groups: [""])"), "Consumer \"alice\": groups[0]: is required");
  EXPECT_EQ(ConsumerErrors("groups: \"" + std::string(129, 'g') + "\""),
            "Consumer \"alice\": groups[0]: is 129 characters; at most 128 are allowed");
  EXPECT_EQ(ConsumerErrors(R"(groups: ["ops", "dev", "ops"])"),
            "Consumer \"alice\": groups[2]: 'ops' is already listed at groups[0]");
  std::string groups;
  for (size_t i = 0; i <= kMaxConsumerGroups; ++i) absl::StrAppend(&groups, "groups: \"g", i, "\" ");
  EXPECT_EQ(ConsumerErrors(groups), "Consumer \"alice\": groups: has 65 entries; at most 64");
}

TEST(ValidationTest, ConsumerKeys) {
  const std::string hash = Sha256Hex(kAliceKey);
  auto expect = [&](const std::string& body, const std::string& message) {
    std::string e = ConsumerErrors(body);
    EXPECT_EQ(e, message) << body;
    EXPECT_FALSE(absl::StrContains(e, "key-0123")) << e;
    EXPECT_FALSE(absl::StrContains(e, hash)) << e;
  };
  expect(absl::StrCat(R"(keys { key: ")", kAliceKey, R"(" key_sha256: ")", hash, R"(" })"),
         "Consumer \"alice\": keys[0]: set one of key and key_sha256, not both");
  expect("keys {}", "Consumer \"alice\": keys[0]: needs key or key_sha256");
  expect(R"(keys { key: "key-0123"} keys { key: "key-012" })",
         "Consumer \"alice\": keys[1].key: is 7 characters; must be 8..512");
  expect(absl::StrCat(R"(keys { key: ")", std::string(513, 'k'), R"(" })"),
         "Consumer \"alice\": keys[0].key: is 513 characters; must be 8..512");
  expect(R"(keys { key: "key-0123 456" })",
         "Consumer \"alice\": keys[0].key: may contain only printable ASCII characters, no "
         "spaces");
  expect(R"(keys { key: "key-0123\t456" })",
         "Consumer \"alice\": keys[0].key: may contain only printable ASCII characters, no "
         "spaces");
  expect(absl::StrCat(R"(keys { key: ")", kAliceKey, R"(" } keys { key_sha256: ")",
                      absl::AsciiStrToUpper(hash), R"(" })"),
         "Consumer \"alice\": keys[1].key_sha256: must be 64 lowercase hex digits");
  expect(absl::StrCat(R"(keys { key_sha256: ")", hash.substr(1), R"(" })"),
         "Consumer \"alice\": keys[0].key_sha256: must be 64 lowercase hex digits");
  // The same key twice, once plain and once hashed.
  expect(absl::StrCat(R"(keys { key_sha256: ")", hash, R"(" } keys { key: ")", kAliceKey,
                      R"(" })"),
         "Consumer \"alice\": keys[1]: is the same key as keys[0]");
  // What `get` would show for a plain key cannot be applied as a key.
  expect(R"(keys { key: "[redacted]" })",
         "Consumer \"alice\": keys[0].key: is \"[redacted]\", what sluicectl get and the admin "
         "API show in place of a credential: give the API key itself");
  std::string keys;
  for (size_t i = 0; i <= kMaxConsumerKeys; ++i) {
    absl::StrAppend(&keys, "keys { key: \"key-", 1000000 + i, "\" } ");
  }
  expect(keys, "Consumer \"alice\": keys: has 65 entries; at most 64");
}

TEST(ValidationTest, ConsumerBasicAuth) {
  auto expect = [&](const std::string& basic_auth, const std::string& message) {
    std::string e = ConsumerErrors(absl::StrCat("basic_auth { ", basic_auth, " }"));
    EXPECT_EQ(e, message) << basic_auth;
    EXPECT_FALSE(absl::StrContains(e, "s3cret")) << e;
  };
  expect(R"(password: "s3cret")", "Consumer \"alice\": basic_auth.username: is required");
  expect(R"(username: "alice:s3cret" password: "s3cret")",
         "Consumer \"alice\": basic_auth.username: may contain only printable ASCII characters "
         "and no ':' (RFC 7617)");
  expect(R"(username: "al\nice" password: "s3cret")",
         "Consumer \"alice\": basic_auth.username: may contain only printable ASCII characters "
         "and no ':' (RFC 7617)");
  expect(absl::StrCat(R"(username: ")", std::string(129, 'u'), R"(" password: "s3cret")"),
         "Consumer \"alice\": basic_auth.username: is 129 characters; at most 128 are allowed");
  expect(R"(username: "alice")", "Consumer \"alice\": basic_auth: needs password or password_hash");
  expect(absl::StrCat(R"(username: "alice" password: "s3cret" password_hash: ")",
                      HashPassword("s3cret", 10000), R"(")"),
         "Consumer \"alice\": basic_auth: set one of password and password_hash, not both");
  expect(absl::StrCat(R"(username: "alice" password: ")", std::string(1025, 'p'), R"(")"),
         "Consumer \"alice\": basic_auth.password: is 1025 bytes; at most 1024");
  for (const char* password : {R"(s3\ncret)", R"(s3\000cret)", R"(s3\177cret)"}) {
    expect(absl::StrCat(R"(username: "alice" password: ")", password, R"(")"),
           "Consumer \"alice\": basic_auth.password: may not contain control characters "
           "(RFC 7617: no client could send it)");
  }
  expect(R"(username: "alice" password: "[redacted]")",
         "Consumer \"alice\": basic_auth.password: is \"[redacted]\", what sluicectl get and the "
         "admin API show in place of a credential: give the password itself");
  expect(R"(username: "alice" password_hash: "s3cret")",
         "Consumer \"alice\": basic_auth.password_hash: is not a password hash: expected "
         "pbkdf2-sha256$<iterations>$<salt, base64>$<hash, base64> (sluicectl hash-password "
         "makes one)");
  std::string low = HashPassword("s3cret", 10000);
  low.replace(low.find("$10000$"), 7, "$5$");
  expect(absl::StrCat(R"(username: "alice" password_hash: ")", low, R"(")"),
         "Consumer \"alice\": basic_auth.password_hash: iterations must be 10000..1000000, "
         "got 5");
  // The limits themselves are fine.
  expect(absl::StrCat(R"(username: ")", std::string(128, 'u'), R"(" password: ")",
                      std::string(1024, 'p'), R"(")"),
         "");
  expect(R"(username: "a b c ~" password: "x")", "");
}

TEST(ValidationTest, ConsumersCannotShareAKey) {
  // One plain, one hashed: compared by their SHA-256.
  for (bool alice_plain : {true, false}) {
    ResourceMap state = Valid();
    std::string alice_key = alice_plain
                                ? absl::StrCat("key: \"", kBobKey, "\"")
                                : absl::StrCat("key_sha256: \"", Sha256Hex(kBobKey), "\"");
    std::string bob_key = !alice_plain
                              ? absl::StrCat("key: \"", kBobKey, "\"")
                              : absl::StrCat("key_sha256: \"", Sha256Hex(kBobKey), "\"");
    for (const Resource& r :
         {Consumer("alice", absl::StrCat(R"(keys { key: ")", kAliceKey, R"(" } keys { )",
                                         alice_key, " }")),
          Consumer("bob", absl::StrCat("keys { ", bob_key, " }"))}) {
      state[IdOf(r)] = r;
    }
    std::string e(CheckState(state).message());
    EXPECT_EQ(e,
              "Consumer \"bob\": keys[0]: is also a key of Consumer \"alice\" (keys[1]); no two "
              "consumers may share a key");
    EXPECT_FALSE(absl::StrContains(e, kBobKey)) << e;
    EXPECT_FALSE(absl::StrContains(e, Sha256Hex(kBobKey))) << e;
    // The rule is about the whole state: it holds when only another
    // resource changed too.
    std::set<ResourceId> changed = {{config::v1::CLUSTER, "users"}};
    EXPECT_EQ(ToStatus(ValidateState(state, &changed)).message(), e);
  }
}

TEST(ValidationTest, ConsumersCannotShareAUsername) {
  ResourceMap state = Valid();
  for (const Resource& r :
       {Consumer("alice", R"(basic_auth { username: "shared" password: "a" })"),
        Consumer("bob", R"(basic_auth { username: "shared" password: "b" })"),
        Consumer("carol", R"(basic_auth { username: "Shared" password: "c" })")}) {
    state[IdOf(r)] = r;
  }
  EXPECT_EQ(CheckState(state).message(),
            "Consumer \"bob\": basic_auth.username: 'shared' is also the username of Consumer "
            "\"alice\"; no two consumers may share a username");
  // A change is told of its own conflict: "alice" stored, "aaron" applied
  // with her username. It was "alice" that was named (first by name), so
  // the error had no file or line and blamed what the user did not touch.
  state.erase({config::v1::CONSUMER, "bob"});
  state.erase({config::v1::CONSUMER, "carol"});
  Resource aaron = Consumer("aaron", R"(basic_auth { username: "shared" password: "x" })");
  state[IdOf(aaron)] = aaron;
  std::set<ResourceId> changed = {IdOf(aaron)};
  EXPECT_EQ(ToStatus(ValidateState(state, &changed)).message(),
            "Consumer \"aaron\": basic_auth.username: 'shared' is also the username of Consumer "
            "\"alice\"; no two consumers may share a username");
}

// A state whose table "main" has three routes in one virtual host, with
// route `index` replaced by `route` (text format), and the change saying so.
ResourceMap Patched(int index, const std::string& route, ConfigChange* change) {
  ResourceMap state = Valid();
  Resource table = Parse(R"(route_table { name: "main" virtual_hosts { domains: "*"
      routes { name: "a" match { prefix: "/a" } route { cluster: "users" } }
      routes { name: "b" match { prefix: "/b" } route { cluster: "users" } }
      routes { name: "c" match { prefix: "/" } route { cluster: "users" } } } })");
  EXPECT_TRUE(CheckState(state).ok());
  config::v1::Route* replaced =
      table.mutable_route_table()->mutable_virtual_hosts(0)->mutable_routes(index);
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(route, replaced)) << route;
  state[IdOf(table)] = table;
  change->patched["main"] = {static_cast<uint32_t>(index)};
  return state;
}

TEST(ValidationTest, PatchedRouteToAMissingClusterIsRefusedWithTheField) {
  ConfigChange change;
  ResourceMap state =
      Patched(1, R"(name: "b" match { prefix: "/b" } route { cluster: "gone" })", &change);
  EXPECT_EQ(CheckChange(state, change).message(),
            "RouteTable \"main\": virtual_hosts[0].routes[1].route.cluster: refers to "
            "Cluster \"gone\", which does not exist");
  // The same with a resource changed whole beside it: the references are
  // checked over the whole state, once.
  Resource other = Parse(R"(cluster { name: "other" endpoints { address: "127.0.0.1" port: 9002 } })");
  state[IdOf(other)] = other;
  change.changed.insert(IdOf(other));
  EXPECT_EQ(CheckChange(state, change).message(),
            "RouteTable \"main\": virtual_hosts[0].routes[1].route.cluster: refers to "
            "Cluster \"gone\", which does not exist");
}

TEST(ValidationTest, PatchedRoutePassesThePerRouteRules) {
  ConfigChange change;
  ResourceMap state =
      Patched(2, R"(name: "c" match { prefix: "nope" } route { cluster: "users" })", &change);
  EXPECT_EQ(CheckChange(state, change).message(),
            "RouteTable \"main\": virtual_hosts[0].routes[2].match.prefix: 'nope' must start "
            "with '/'");
  ConfigChange fine;
  ResourceMap renamed =
      Patched(0, R"(name: "a2" match { prefix: "/a2" } direct_response { status: 204 })", &fine);
  EXPECT_TRUE(CheckChange(renamed, fine).ok()) << CheckChange(renamed, fine);
}

TEST(ValidationTest, PatchOfATableNotInTheStateIsRefused) {
  ConfigChange change;
  change.patched["other"] = {0};
  EXPECT_EQ(CheckChange(Valid(), change).message(),
            "RouteTable \"other\": was patched but is not in the config");
}

TEST(ValidationTest, ChangeWithRemovalChecksReferencesAcrossTheState) {
  // A cluster removed (nothing changed whole, nothing patched): the table
  // that still refers to it is refused.
  ResourceMap state = Valid();
  state.erase({config::v1::CLUSTER, "users"});
  ConfigChange change;
  change.removed = true;
  EXPECT_EQ(CheckChange(state, change).message(),
            "RouteTable \"main\": virtual_hosts[0].routes[0].route.cluster: refers to "
            "Cluster \"users\", which does not exist");
}

// A route an earlier one takes every request of is named at apply (the
// apply goes on): by prefix, by the same path or regex, by prefix "/" for a
// regex, with the same methods; not when the earlier one has header,
// query or other method conditions.
TEST(ConfigNotesTest, NamesRoutesNoRequestReaches) {
  ResourceMap state = Valid();
  Resource table = Parse(R"(route_table { name: "main" virtual_hosts { domains: "*"
    routes { match { prefix: "/api" } route { cluster: "users" } }
    routes { match { prefix: "/api/v2" } route { cluster: "users" } }
    routes { match { path: "/apiary" } route { cluster: "users" } }
    routes { match { prefix: "/b" headers { name: "x-v" exact: "2" } } route { cluster: "users" } }
    routes { match { prefix: "/b/c" } route { cluster: "users" } }
    routes { match { prefix: "/m" methods: "POST" methods: "GET" } route { cluster: "users" } }
    routes { match { prefix: "/m/x" methods: "GET" } route { cluster: "users" } }
    routes { match { prefix: "/m/y" methods: "GET" methods: "POST" } route { cluster: "users" } }
    routes { match { regex: "/r/[0-9]+" } route { cluster: "users" } }
    routes { match { regex: "/r/[0-9]+" query_parameters { name: "q" present: true } }
             route { cluster: "users" } }
    routes { match { path: "/p" } route { cluster: "users" } }
    routes { match { path: "/p" } route { cluster: "users" } }
    routes { match { prefix: "/" } route { cluster: "users" } }
    routes { match { regex: "/late" } route { cluster: "users" } } } })");
  state[IdOf(table)] = table;
  StateDiff diff;
  diff.changed.push_back(IdOf(table));
  const std::string notes = absl::StrJoin(ConfigNotes(state, diff), "\n");
  const std::string tail =
      " comes first and takes every request this one would (routes are tried in order: put the "
      "more specific one first)";
  EXPECT_EQ(notes,
            absl::StrCat(
                "RouteTable \"main\": virtual_hosts[0].routes[1]: never matched: "
                "virtual_hosts[0].routes[0] (prefix \"/api\")", tail, "\n",
                "RouteTable \"main\": virtual_hosts[0].routes[2]: never matched: "
                "virtual_hosts[0].routes[0] (prefix \"/api\")", tail, "\n",
                "RouteTable \"main\": virtual_hosts[0].routes[7]: never matched: "
                "virtual_hosts[0].routes[5] (prefix \"/m\", the same methods)", tail, "\n",
                "RouteTable \"main\": virtual_hosts[0].routes[9]: never matched: "
                "virtual_hosts[0].routes[8] (the same regex)", tail, "\n",
                "RouteTable \"main\": virtual_hosts[0].routes[11]: never matched: "
                "virtual_hosts[0].routes[10] (the same path)", tail, "\n",
                "RouteTable \"main\": virtual_hosts[0].routes[13]: never matched: "
                "virtual_hosts[0].routes[12] (prefix \"/\")", tail));
  // Only a change to the table brings them up again.
  EXPECT_TRUE(ConfigNotes(state, StateDiff()).empty());
}

// A CA bundle with an expired certificate is taken (bundles carry old
// ones), but said: a client chaining only to it is refused, so a bundle of
// one expired CA locked every client out with nothing said at apply.
TEST(ConfigNotesTest, NamesTrustedCaCertificatesNotValidNow) {
  testing::CertificateSpec old_ca;
  old_ca.is_ca = true;
  old_ca.common_name = "Old CA";
  old_ca.not_before = absl::FromUnixSeconds(1672531200);  // 2023-01-01
  old_ca.not_after = absl::FromUnixSeconds(1704067200);   // 2024-01-01
  testing::CertificateSpec current_ca;
  current_ca.is_ca = true;
  current_ca.common_name = "Current CA";
  Resource secret = CaSecret("clients");
  secret.mutable_secret()->mutable_trusted_ca()->set_ca_certificates(
      absl::StrCat(testing::MakeCertificate(current_ca).certificate_pem,
                   testing::MakeCertificate(old_ca).certificate_pem));
  ResourceMap state = ValidTls();
  state[IdOf(secret)] = secret;
  EXPECT_TRUE(CheckState(state).ok()) << CheckState(state);
  StateDiff diff;
  diff.added.push_back(IdOf(secret));
  EXPECT_EQ(absl::StrJoin(ConfigNotes(state, diff), "\n"),
            "Secret \"clients\": trusted_ca.ca_certificates: certificate CN=Old CA,O=Sluice Tests "
            "(PEM block 2 of 2) expired at 2024-01-01T00:00:00Z: a certificate whose chain leads "
            "only to it is refused (a client's, where a listener's tls.client_ca names this "
            "Secret; an upstream's, where a cluster's tls.ca does)");
  // Said when the Secret changes, not on every apply.
  EXPECT_TRUE(ConfigNotes(state, StateDiff()).empty());
  // Five are named, the rest counted.
  std::string bundle;
  for (int i = 0; i < 7; ++i) bundle += testing::MakeCertificate(old_ca).certificate_pem;
  secret.mutable_secret()->mutable_trusted_ca()->set_ca_certificates(bundle);
  state[IdOf(secret)] = secret;
  std::vector<std::string> notes = ConfigNotes(state, diff);
  ASSERT_EQ(notes.size(), 6u);
  EXPECT_EQ(notes[5],
            "Secret \"clients\": trusted_ca.ca_certificates: and 2 more certificates not valid "
            "now (the first 5 are named above)");
  state[IdOf(secret)] = CaSecret("clients");
  EXPECT_TRUE(ConfigNotes(state, diff).empty());
}

// A prefix of 300,000 bytes is found as any other (in a trie: its cost is
// its length; copying each of its prefixes made it quadratic, 1.8 s), and
// the note cuts it.
TEST(ConfigNotesTest, ALongPrefixIsFoundAndCutInTheNote) {
  const std::string prefix = "/" + std::string(300000, 'a');
  ResourceMap state = Valid();
  Resource table = Parse(absl::StrCat(
      R"(route_table { name: "main" virtual_hosts { domains: "*" routes { match { prefix: ")",
      prefix, R"(" } route { cluster: "users" } } routes { match { path: ")", prefix,
      R"(/x" } route { cluster: "users" } } } })"));
  state[IdOf(table)] = table;
  StateDiff diff;
  diff.added.push_back(IdOf(table));
  std::vector<std::string> notes = ConfigNotes(state, diff);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_TRUE(absl::StrContains(
      notes[0], absl::StrCat("routes[0] (prefix \"/", std::string(59, 'a'), "...\") comes first")))
      << notes[0].substr(0, 300);
  EXPECT_LT(notes[0].size(), 400u);
}

// A generated table with thousands of such routes names 20 and counts the rest.
TEST(ConfigNotesTest, NamesTwentyShadowedRoutesAndCountsTheRest) {
  std::string text = R"(route_table { name: "main" virtual_hosts { domains: "*"
    routes { match { prefix: "/" } route { cluster: "users" } })";
  for (int i = 0; i < 1000; ++i) {
    absl::StrAppend(&text, "routes { match { path: \"/p", i, "\" } route { cluster: \"users\" } }");
  }
  absl::StrAppend(&text, "} }");
  ResourceMap state = Valid();
  Resource table = Parse(text);
  state[IdOf(table)] = table;
  StateDiff diff;
  diff.added.push_back(IdOf(table));
  std::vector<std::string> notes = ConfigNotes(state, diff);
  ASSERT_EQ(notes.size(), 21u);
  EXPECT_TRUE(absl::StartsWith(notes[19], "RouteTable \"main\": virtual_hosts[0].routes[20]: "))
      << notes[19];
  EXPECT_EQ(notes[20], "and 980 more routes never matched (the first 20 are named above)");
}

}  // namespace
}  // namespace sluice::api
