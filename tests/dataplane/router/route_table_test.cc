// RouteTable: each matching rule through Match, the route actions' helpers,
// and a randomized comparison of the indexed matcher with a plain first-match
// scan of the config.
#include "dataplane/router/route_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/numeric/int128.h"
#include "absl/strings/match.h"
#include "google/protobuf/text_format.h"
#include "re2/re2.h"

namespace sluice::router {
namespace {

using http::HeaderField;

config::v1::RouteTable ParseTable(const std::string& text) {
  config::v1::RouteTable table;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &table))
      << text;
  return table;
}

std::shared_ptr<const RouteTable> Compile(const std::string& text) {
  auto table = RouteTable::Compile(ParseTable(text));
  EXPECT_TRUE(table.ok()) << table.status();
  return table.ok() ? *table : nullptr;
}

// "404", "405 <Allow>" or the name of the matched route.
std::string Outcome(const RouteTable& table, std::string_view host,
                    std::string_view path_and_query,
                    std::string_view method = "GET",
                    const std::vector<HeaderField>& headers = {}) {
  RouteRequest request;
  request.method = method;
  request.host = host;
  request.path_and_query = path_and_query;
  request.headers = &headers;
  MatchResult result = table.Match(request);
  switch (result.kind) {
    case MatchResult::Kind::kRoute:
      EXPECT_NE(result.route, nullptr);
      return result.route == nullptr ? "null" : result.route->name;
    case MatchResult::Kind::kNoRoute:
      EXPECT_EQ(result.route, nullptr);
      return "404";
    case MatchResult::Kind::kMethodNotAllowed:
      EXPECT_EQ(result.route, nullptr);
      return "405 " + result.allowed_methods;
  }
  return "?";
}

// A vhost with one catch-all route named after the vhost.
std::string VirtualHostText(const std::string& name,
                            const std::vector<std::string>& domains) {
  std::string text = "virtual_hosts { name: \"" + name + "\"";
  for (const auto& d : domains) text += " domains: \"" + d + "\"";
  return text + " routes { name: \"" + name +
         "\" match { prefix: \"/\" } route { cluster: \"c\" } } }";
}

TEST(RouteTableHostTest, ExactThenLongestWildcardThenStar) {
  auto table =
      Compile("name: \"t\" " + VirtualHostText("star", {"*"}) +
              VirtualHostText("example", {"example.com", "www.example.com"}) +
              VirtualHostText("wild", {"*.example.com"}) +
              VirtualHostText("deep", {"*.api.example.com"}) +
              VirtualHostText("exact-in-wild", {"x.api.example.com"}) +
              VirtualHostText("v6", {"[::1]"}));
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(Outcome(*table, "example.com", "/"), "example");
  EXPECT_EQ(Outcome(*table, "www.example.com", "/"), "example");
  EXPECT_EQ(Outcome(*table, "a.example.com", "/"), "wild");
  EXPECT_EQ(Outcome(*table, "a.b.example.com", "/"), "wild");
  EXPECT_EQ(Outcome(*table, "api.example.com", "/"), "wild");
  EXPECT_EQ(Outcome(*table, "v1.api.example.com", "/"), "deep");
  EXPECT_EQ(Outcome(*table, "a.v1.api.example.com", "/"), "deep");
  EXPECT_EQ(Outcome(*table, "x.api.example.com", "/"), "exact-in-wild");
  EXPECT_EQ(Outcome(*table, ".example.com", "/"), "star");
  EXPECT_EQ(Outcome(*table, "badexample.com", "/"), "star");
  EXPECT_EQ(Outcome(*table, "other.org", "/"), "star");
  EXPECT_EQ(Outcome(*table, "", "/"), "star");
  EXPECT_EQ(Outcome(*table, "[::1]", "/"), "v6");
}

TEST(RouteTableHostTest, PortAndCaseAreIgnored) {
  auto table =
      Compile("name: \"t\" " + VirtualHostText("example", {"example.com"}) +
              VirtualHostText("wild", {"*.example.com"}) +
              VirtualHostText("v6", {"[::1]"}) + VirtualHostText("compose", {"my_svc"}));
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(Outcome(*table, "My_Svc:8080", "/"), "compose");
  EXPECT_EQ(Outcome(*table, "example.com:8080", "/"), "example");
  EXPECT_EQ(Outcome(*table, "EXAMPLE.Com", "/"), "example");
  EXPECT_EQ(Outcome(*table, "Example.COM:443", "/"), "example");
  EXPECT_EQ(Outcome(*table, "example.com:", "/"), "example");
  EXPECT_EQ(Outcome(*table, "A.Example.Com:80", "/"), "wild");
  EXPECT_EQ(Outcome(*table, "[::1]:80", "/"), "v6");
  EXPECT_EQ(Outcome(*table, "[::1]", "/"), "v6");
  // An IPv6 address in another spelling is the same host (before: a 404,
  // or the "*" virtual host and its policies).
  EXPECT_EQ(Outcome(*table, "[0:0::1]", "/"), "v6");
  EXPECT_EQ(Outcome(*table, "[0:0:0:0:0:0:0:1]:8080", "/"), "v6");
  EXPECT_EQ(Outcome(*table, "[0000::0001]", "/"), "v6");
  EXPECT_EQ(Outcome(*table, "[::2]", "/"), "404");
  EXPECT_EQ(Outcome(*table, "[::1x]", "/"), "404");
  EXPECT_EQ(Outcome(*table, "[" + std::string(60, '0') + "]", "/"), "404");
  // Without a "*" virtual host, anything else is a 404.
  EXPECT_EQ(Outcome(*table, "example.org", "/"), "404");
  EXPECT_EQ(Outcome(*table, "::1", "/"), "404");
  // A fully qualified name's trailing dot is the same host (nginx and the
  // upstreams read it so); only one is removed.
  EXPECT_EQ(Outcome(*table, "example.com.", "/"), "example");
  EXPECT_EQ(Outcome(*table, "Example.com.:443", "/"), "example");
  EXPECT_EQ(Outcome(*table, "a.example.com.", "/"), "wild");
  EXPECT_EQ(Outcome(*table, "example.com..", "/"), "404");
  EXPECT_EQ(Outcome(*table, std::string(300, 'A') + ".example.com", "/"),
            "wild");
}

constexpr char kPathTable[] = R"(
  name: "paths"
  virtual_hosts {
    name: "v" domains: "*"
    routes { name: "exact-users" match { path: "/users" } route { cluster: "c" } }
    routes { name: "prefix-api" match { prefix: "/api" } route { cluster: "c" } }
    routes { name: "regex-item" match { regex: "/items/[0-9]+" } route { cluster: "c" } }
    routes { name: "prefix-api-v2" match { prefix: "/api/v2/" } route { cluster: "c" } }
    routes { name: "exact-after" match { path: "/api/x" } route { cluster: "c" } }
    routes { name: "regex-any" match { regex: "/r/.*" } route { cluster: "c" } }
    routes { name: "prefix-r" match { prefix: "/r/" } route { cluster: "c" } }
    routes { name: "regex-nocase" match { regex: "(?i)/NoCase/[a-z]+" } route { cluster: "c" } }
    routes { name: "regex-alternative" match { regex: "/zz|/b/(x|yy)+" } route { cluster: "c" } }
  }
)";

TEST(RouteTablePathTest, PrefixExactAndRegex) {
  auto table = Compile(kPathTable);
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(Outcome(*table, "h", "/users"), "exact-users");
  EXPECT_EQ(Outcome(*table, "h", "/users?x=1"), "exact-users");
  EXPECT_EQ(Outcome(*table, "h", "/users/"), "404");
  EXPECT_EQ(Outcome(*table, "h", "/Users"), "404");
  EXPECT_EQ(Outcome(*table, "h", "/api"), "prefix-api");
  EXPECT_EQ(Outcome(*table, "h", "/apis"), "prefix-api");  // a byte prefix
  EXPECT_EQ(Outcome(*table, "h", "/ap"), "404");
  EXPECT_EQ(Outcome(*table, "h", "/items/12"), "regex-item");
  EXPECT_EQ(Outcome(*table, "h", "/items/12?q=3"), "regex-item");
  EXPECT_EQ(Outcome(*table, "h", "/items/12x"), "404");  // full match
  EXPECT_EQ(Outcome(*table, "h", "/x/items/12"), "404");
  EXPECT_EQ(Outcome(*table, "h", "/r/anything"), "regex-any");
  EXPECT_EQ(Outcome(*table, "h", "/R/anything"), "404");
  EXPECT_EQ(Outcome(*table, "h", "/nocase/abc"), "regex-nocase");
  EXPECT_EQ(Outcome(*table, "h", "/NOCASE/ABC"), "regex-nocase");
  EXPECT_EQ(Outcome(*table, "h", "/NOCASE/"), "404");
  EXPECT_EQ(Outcome(*table, "h", "/zz"), "regex-alternative");
  EXPECT_EQ(Outcome(*table, "h", "/b/x"), "regex-alternative");
  EXPECT_EQ(Outcome(*table, "h", "/b/xyyxyyyy"), "regex-alternative");
  EXPECT_EQ(Outcome(*table, "h", "/b/xy"), "404");
  EXPECT_EQ(Outcome(*table, "h", ""), "404");
  EXPECT_EQ(Outcome(*table, "h", "?/users"), "404");
}

TEST(RouteTablePathTest, FirstDeclaredRouteWins) {
  auto table = Compile(kPathTable);
  ASSERT_NE(table, nullptr);
  // "/api" is declared before the longer "/api/v2/" and the exact "/api/x".
  EXPECT_EQ(Outcome(*table, "h", "/api/v2/users"), "prefix-api");
  EXPECT_EQ(Outcome(*table, "h", "/api/x"), "prefix-api");
  // The regex route comes before the prefix route that also matches.
  EXPECT_EQ(Outcome(*table, "h", "/r/"), "regex-any");

  auto catch_all_first = Compile(R"(
    name: "t" virtual_hosts { name: "v" domains: "*"
      routes { name: "b" match { prefix: "/b" } route { cluster: "c" } }
      routes { name: "all" match { prefix: "/" } route { cluster: "c" } }
      routes { name: "exact-b" match { path: "/b" } route { cluster: "c" } }
      routes { name: "exact-a" match { path: "/a" } route { cluster: "c" } }
    })");
  ASSERT_NE(catch_all_first, nullptr);
  EXPECT_EQ(Outcome(*catch_all_first, "h", "/b"), "b");
  EXPECT_EQ(Outcome(*catch_all_first, "h", "/a"), "all");
  EXPECT_EQ(Outcome(*catch_all_first, "h", "/"), "all");
}

// case_sensitive: false compares prefix, path and regex ignoring ASCII
// case; such routes keep their place in the order (they are not in the
// index, but are tried as regex routes are), and a prefix_rewrite replaces
// the prefix however the request spelled it.
TEST(RouteTablePathTest, RoutesThatIgnoreCase) {
  const std::string text = R"(
    name: "t" virtual_hosts { name: "v" domains: "*"
      routes { name: "ci-exact" match { path: "/Users" case_sensitive { value: false } }
               route { cluster: "c" } }
      routes { name: "cs-api" match { prefix: "/api" } route { cluster: "c" } }
      routes { name: "ci-api" match { prefix: "/API/v2/" case_sensitive { value: false } }
               route { cluster: "c" prefix_rewrite: "/v2/" } }
      routes { name: "ci-regex" match { regex: "/items/[a-z]+" case_sensitive { value: false } }
               route { cluster: "c" } }
      routes { name: "cs-said" match { prefix: "/Exact" case_sensitive { value: true } }
               route { cluster: "c" } }
      routes { name: "all" match { prefix: "/" } route { cluster: "c" } }
    })";
  auto table = Compile(text);
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(Outcome(*table, "h", "/users"), "ci-exact");
  EXPECT_EQ(Outcome(*table, "h", "/USERS?x=1"), "ci-exact");
  EXPECT_EQ(Outcome(*table, "h", "/users/1"), "all");
  EXPECT_EQ(Outcome(*table, "h", "/api/v2/x"), "cs-api");  // declared first
  EXPECT_EQ(Outcome(*table, "h", "/API/V2/x"), "ci-api");
  EXPECT_EQ(Outcome(*table, "h", "/Api/v2/"), "ci-api");
  EXPECT_EQ(Outcome(*table, "h", "/Api/v3/"), "all");
  EXPECT_EQ(Outcome(*table, "h", "/ITEMS/Abc"), "ci-regex");
  EXPECT_EQ(Outcome(*table, "h", "/items/1"), "all");
  EXPECT_EQ(Outcome(*table, "h", "/Exact/1"), "cs-said");
  EXPECT_EQ(Outcome(*table, "h", "/exact/1"), "all");
  EXPECT_EQ(table->route(2).RewritePath("/Api/V2/x?q=A"), "/v2/x?q=A");
  EXPECT_EQ(table->route(2).RewritePath("/API/v2/"), "/v2/");

  // A patch that turns a route's case_sensitive off (and another's on)
  // moves it out of the index (and back in).
  config::v1::RouteTable config = ParseTable(text);
  config.mutable_virtual_hosts(0)->mutable_routes(1)->mutable_match()
      ->mutable_case_sensitive()->set_value(false);
  config.mutable_virtual_hosts(0)->mutable_routes(0)->mutable_match()->clear_case_sensitive();
  auto patched = RouteTable::Recompile(*table, config, {0, 1});
  ASSERT_TRUE(patched.ok()) << patched.status();
  EXPECT_EQ(Outcome(**patched, "h", "/API/V2/x"), "cs-api");
  EXPECT_EQ(Outcome(**patched, "h", "/APIs"), "cs-api");
  EXPECT_EQ(Outcome(**patched, "h", "/users"), "all");
  EXPECT_EQ(Outcome(**patched, "h", "/Users"), "ci-exact");
  // The method list still applies to a route ignoring case.
  auto with_methods = Compile(R"(
    name: "t" virtual_hosts { name: "v" domains: "*"
      routes { name: "post" match { prefix: "/A" methods: "POST" case_sensitive { value: false } }
               route { cluster: "c" } } })");
  ASSERT_NE(with_methods, nullptr);
  EXPECT_EQ(Outcome(*with_methods, "h", "/a", "POST"), "post");
  EXPECT_EQ(Outcome(*with_methods, "h", "/a", "GET"), "405 POST");
}

constexpr char kMethodTable[] = R"(
  name: "methods"
  virtual_hosts {
    name: "v" domains: "*"
    routes { name: "get" match { path: "/a" methods: "GET" methods: "HEAD" } route { cluster: "c" } }
    routes { name: "post" match { prefix: "/a" methods: "POST" } route { cluster: "c" } }
    routes { name: "delete-admin" match { prefix: "/" methods: "DELETE"
      headers { name: "x-admin" present: true } } route { cluster: "c" } }
    routes { name: "regex-put" match { regex: "/a|/b" methods: "PUT" methods: "GET" } route { cluster: "c" } }
    routes { name: "any-b" match { path: "/b" } route { cluster: "c" } }
  }
)";

TEST(RouteTableMethodTest, MethodsAndMethodNotAllowed) {
  auto table = Compile(kMethodTable);
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(Outcome(*table, "h", "/a", "GET"), "get");
  EXPECT_EQ(Outcome(*table, "h", "/a", "HEAD"), "get");
  EXPECT_EQ(Outcome(*table, "h", "/a", "POST"), "post");
  EXPECT_EQ(Outcome(*table, "h", "/a", "PUT"), "regex-put");
  EXPECT_EQ(Outcome(*table, "h", "/a", "get"), "405 GET, HEAD, POST, PUT");
  EXPECT_EQ(Outcome(*table, "h", "/a", "PATCH"), "405 GET, HEAD, POST, PUT");
  // The DELETE route needs a header; with it, DELETE joins the allow list.
  EXPECT_EQ(Outcome(*table, "h", "/a", "PATCH", {{"X-Admin", "1"}}),
            "405 DELETE, GET, HEAD, POST, PUT");
  EXPECT_EQ(Outcome(*table, "h", "/a", "DELETE", {{"X-Admin", "1"}}),
            "delete-admin");
  EXPECT_EQ(Outcome(*table, "h", "/ab", "GET"), "405 POST");
  // A route without methods matches any method.
  EXPECT_EQ(Outcome(*table, "h", "/b", "PATCH"), "any-b");
  // GET takes HEAD along (RFC 9110 9.1); before, HEAD on a GET-only route
  // was 405 with an Allow that did not name it.
  auto get_only = Compile(R"(name: "t" virtual_hosts { name: "v" domains: "*"
      routes { name: "get" match { prefix: "/g" methods: "GET" } route { cluster: "c" } }
      routes { name: "post" match { prefix: "/p" methods: "POST" } route { cluster: "c" } } })");
  ASSERT_NE(get_only, nullptr);
  EXPECT_EQ(Outcome(*get_only, "h", "/g", "HEAD"), "get");
  EXPECT_EQ(Outcome(*get_only, "h", "/g", "PUT"), "405 GET, HEAD");
  EXPECT_EQ(Outcome(*get_only, "h", "/p", "HEAD"), "405 POST");
  // A later route that lists HEAD itself still gets it (it was unreachable
  // for HEAD once GET took HEAD along); one without methods does not.
  auto head_too = Compile(R"(name: "t" virtual_hosts { name: "v" domains: "*"
      routes { name: "get" match { prefix: "/m" methods: "GET" } route { cluster: "c" } }
      routes { name: "any" match { prefix: "/m/any" } route { cluster: "c" } }
      routes { name: "head" match { prefix: "/m" methods: "POST" methods: "HEAD" }
               route { cluster: "c" } }
      routes { name: "all" match { prefix: "/" } route { cluster: "c" } } })");
  ASSERT_NE(head_too, nullptr);
  EXPECT_EQ(Outcome(*head_too, "h", "/m", "HEAD"), "head");
  // A route between them that takes any method keeps HEAD with the GET
  // route (it went to the later HEAD route past it).
  EXPECT_EQ(Outcome(*head_too, "h", "/m/any", "HEAD"), "get");
  EXPECT_EQ(Outcome(*head_too, "h", "/m", "GET"), "get");
  EXPECT_EQ(Outcome(*head_too, "h", "/x", "HEAD"), "all");
  EXPECT_EQ(Outcome(*table, "h", "/b", "PUT"), "regex-put");
  // Nothing matches the path (without a DELETE-capable header): 404.
  EXPECT_EQ(Outcome(*table, "h", "/c", "GET"), "404");
  EXPECT_EQ(Outcome(*table, "h", "/c", "GET", {{"x-admin", ""}}), "405 DELETE");
}

constexpr char kHeaderTable[] = R"(
  name: "headers"
  virtual_hosts {
    name: "v" domains: "*"
    routes { name: "exact" match { prefix: "/exact" headers { name: "X-Tenant" exact: "acme" } } route { cluster: "c" } }
    routes { name: "prefix" match { prefix: "/prefix" headers { name: "user-agent" prefix: "curl/" } } route { cluster: "c" } }
    routes { name: "regex" match { prefix: "/regex" headers { name: "x-id" regex: "[0-9]+" } } route { cluster: "c" } }
    routes { name: "present" match { prefix: "/present" headers { name: "x-debug" present: true } } route { cluster: "c" } }
    routes { name: "absent" match { prefix: "/absent" headers { name: "x-debug" present: false } } route { cluster: "c" } }
    routes { name: "not-acme" match { prefix: "/invert" headers { name: "x-tenant" exact: "acme" invert: true } } route { cluster: "c" } }
    routes { name: "inverted-absent" match { prefix: "/invabsent" headers { name: "x-debug" present: false invert: true } } route { cluster: "c" } }
    routes { name: "both" match { prefix: "/both" headers { name: "a" exact: "1" } headers { name: "b" exact: "2" } } route { cluster: "c" } }
    routes { name: "by-host" match { prefix: "/host" headers { name: "Host" exact: "h:8080" } } route { cluster: "c" } }
    routes { name: "cookies" match { prefix: "/cookie" headers { name: "Cookie" exact: "a=1; b=2" } } route { cluster: "c" } }
    routes { name: "fallback" match { prefix: "/" } route { cluster: "c" } }
  }
)";

// A matcher on "host" reads the request's authority, which HTTP/2 carries
// as :authority, not as a field. Before: it never matched an HTTP/2
// request (the same request routed differently by protocol).
TEST(RouteTableHeaderTest, HostMatchesTheAuthorityWhicheverProtocol) {
  auto table = Compile(kHeaderTable);
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(Outcome(*table, "h:8080", "/host", "GET", {}), "by-host");  // HTTP/2
  EXPECT_EQ(Outcome(*table, "h:8080", "/host", "GET", {{"host", "h:8080"}}), "by-host");
  EXPECT_EQ(Outcome(*table, "h:9090", "/host", "GET", {{"host", "h:9090"}}), "fallback");
  EXPECT_EQ(Outcome(*table, "", "/host", "GET", {}), "fallback");  // HTTP/1.0, none
}

// Cookie lines are one cookie-string joined with "; " (RFC 6265 5.4), as
// HTTP/2 joins its cookie crumbs (RFC 9113 8.2.3). Before: two HTTP/1
// Cookie lines were matched as "a=1,b=2", and the route an HTTP/2 request
// took was not the one the same request over HTTP/1.1 took.
TEST(RouteTableHeaderTest, CookieLinesAreOneCookieString) {
  auto table = Compile(kHeaderTable);
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(Outcome(*table, "h", "/cookie", "GET", {{"cookie", "a=1; b=2"}}), "cookies");
  EXPECT_EQ(Outcome(*table, "h", "/cookie", "GET", {{"Cookie", "a=1"}, {"cookie", "b=2"}}),
            "cookies");
  EXPECT_EQ(Outcome(*table, "h", "/cookie", "GET", {{"cookie", "b=2"}, {"cookie", "a=1"}}),
            "fallback");
  EXPECT_EQ(Outcome(*table, "h", "/cookie", "GET", {{"cookie", "a=1,b=2"}}), "fallback");
}

TEST(RouteTableHeaderTest, EveryMatcherKind) {
  auto table = Compile(kHeaderTable);
  ASSERT_NE(table, nullptr);
  auto outcome = [&](std::string_view path,
                     const std::vector<HeaderField>& headers) {
    return Outcome(*table, "h", path, "GET", headers);
  };
  EXPECT_EQ(outcome("/exact", {{"x-tenant", "acme"}}), "exact");
  EXPECT_EQ(outcome("/exact", {{"X-TENANT", "acme"}}), "exact");
  EXPECT_EQ(outcome("/exact", {{"x-tenant", "Acme"}}), "fallback");
  EXPECT_EQ(outcome("/exact", {{"x-tenant", "acme2"}}), "fallback");
  EXPECT_EQ(outcome("/exact", {}), "fallback");
  // Repeated lines are one comma-joined value (RFC 9110 5.3): neither order
  // matches "acme" alone, so a client cannot pick a route by putting one
  // value first while the upstream reads another.
  EXPECT_EQ(outcome("/exact", {{"x-tenant", "other"}, {"x-tenant", "acme"}}),
            "fallback");
  EXPECT_EQ(outcome("/exact", {{"x-tenant", "acme"}, {"x-tenant", "other"}}),
            "fallback");
  EXPECT_EQ(outcome("/invert", {{"x-tenant", "acme"}, {"x-tenant", "acme"}}), "not-acme");
  EXPECT_EQ(outcome("/regex", {{"x-id", "1"}, {"x-id", "2"}}), "fallback");
  EXPECT_EQ(outcome("/regex", {{"x-id", "1"}, {"x-other", "x"}, {"x-ID", "23"}}), "fallback");
  EXPECT_EQ(outcome("/prefix", {{"user-agent", "curl/8"}, {"user-agent", "x"}}), "prefix");
  EXPECT_EQ(outcome("/prefix", {{"user-agent", "x"}, {"user-agent", "curl/8"}}), "fallback");

  EXPECT_EQ(outcome("/prefix", {{"User-Agent", "curl/8.0"}}), "prefix");
  EXPECT_EQ(outcome("/prefix", {{"User-Agent", "curl"}}), "fallback");

  EXPECT_EQ(outcome("/regex", {{"x-id", "123"}}), "regex");
  EXPECT_EQ(outcome("/regex", {{"x-id", "123a"}}), "fallback");
  EXPECT_EQ(outcome("/regex", {{"x-id", ""}}), "fallback");

  EXPECT_EQ(outcome("/present", {{"X-Debug", ""}}), "present");
  EXPECT_EQ(outcome("/present", {{"x-other", "1"}}), "fallback");
  EXPECT_EQ(outcome("/absent", {{"x-other", "1"}}), "absent");
  EXPECT_EQ(outcome("/absent", {{"x-debug", "1"}}), "fallback");

  EXPECT_EQ(outcome("/invert", {{"x-tenant", "other"}}), "not-acme");
  EXPECT_EQ(outcome("/invert", {}), "not-acme");  // absent: exact fails
  EXPECT_EQ(outcome("/invert", {{"x-tenant", "acme"}}), "fallback");
  EXPECT_EQ(outcome("/invabsent", {{"x-debug", "1"}}), "inverted-absent");
  EXPECT_EQ(outcome("/invabsent", {}), "fallback");

  EXPECT_EQ(outcome("/both", {{"a", "1"}, {"b", "2"}}), "both");
  EXPECT_EQ(outcome("/both", {{"a", "1"}}), "fallback");
  EXPECT_EQ(outcome("/both", {{"b", "2"}, {"A", "1"}}), "both");
}

// suffix and contains, and ignore_case (Envoy's string matcher: exact,
// prefix, suffix and contains ignoring ASCII case).
TEST(RouteTableHeaderTest, SuffixContainsAndIgnoringCase) {
  auto table = Compile(R"(
    name: "t" virtual_hosts { name: "v" domains: "*"
      routes { name: "suffix" match { prefix: "/s" headers { name: "x-file" suffix: ".json" } }
               route { cluster: "c" } }
      routes { name: "contains" match { prefix: "/c"
                                        headers { name: "user-agent" contains: "Bot" } }
               route { cluster: "c" } }
      routes { name: "exact-ic" match { prefix: "/e"
                                        headers { name: "x-t" exact: "Acme" ignore_case: true } }
               route { cluster: "c" } }
      routes { name: "prefix-ic" match { prefix: "/p"
                                         headers { name: "x-t" prefix: "ab" ignore_case: true } }
               route { cluster: "c" } }
      routes { name: "suffix-ic"
               match { prefix: "/s" headers { name: "x-file" suffix: ".XML" ignore_case: true } }
               route { cluster: "c" } }
      routes { name: "contains-ic"
               match { prefix: "/c"
                       headers { name: "user-agent" contains: "spider" ignore_case: true } }
               route { cluster: "c" } }
      routes { name: "not-contains" match { prefix: "/n"
                                            headers { name: "x-t" contains: "x" invert: true } }
               route { cluster: "c" } }
      routes { name: "fallback" match { prefix: "/" } route { cluster: "c" } } })");
  ASSERT_NE(table, nullptr);
  auto outcome = [&](std::string_view path, const std::vector<HeaderField>& headers) {
    return Outcome(*table, "h", path, "GET", headers);
  };
  EXPECT_EQ(outcome("/s", {{"x-file", "a.json"}}), "suffix");
  EXPECT_EQ(outcome("/s", {{"x-file", ".json"}}), "suffix");
  EXPECT_EQ(outcome("/s", {{"x-file", "a.JSON"}}), "fallback");
  EXPECT_EQ(outcome("/s", {{"x-file", "a.json.gz"}}), "fallback");
  EXPECT_EQ(outcome("/s", {{"x-file", "b.xml"}}), "suffix-ic");
  EXPECT_EQ(outcome("/s", {{"x-file", "b.Xml"}}), "suffix-ic");
  EXPECT_EQ(outcome("/s", {{"x-file", "xml"}}), "fallback");
  EXPECT_EQ(outcome("/c", {{"user-agent", "GoodBot/1"}}), "contains");
  EXPECT_EQ(outcome("/c", {{"user-agent", "goodbot/1"}}), "fallback");
  EXPECT_EQ(outcome("/c", {{"user-agent", "a SPIDER b"}}), "contains-ic");
  EXPECT_EQ(outcome("/c", {{"user-agent", "spide"}}), "fallback");
  EXPECT_EQ(outcome("/c", {}), "fallback");
  EXPECT_EQ(outcome("/e", {{"x-t", "acme"}}), "exact-ic");
  EXPECT_EQ(outcome("/e", {{"x-t", "ACME"}}), "exact-ic");
  EXPECT_EQ(outcome("/e", {{"x-t", "acme1"}}), "fallback");
  EXPECT_EQ(outcome("/p", {{"x-t", "ABc"}}), "prefix-ic");
  EXPECT_EQ(outcome("/p", {{"x-t", "a"}}), "fallback");
  EXPECT_EQ(outcome("/n", {{"x-t", "abc"}}), "not-contains");
  EXPECT_EQ(outcome("/n", {}), "not-contains");
  EXPECT_EQ(outcome("/n", {{"x-t", "axc"}}), "fallback");
}

TEST(RouteTableHeaderTest, NullHeadersMeansNone) {
  auto table = Compile(kHeaderTable);
  ASSERT_NE(table, nullptr);
  RouteRequest request;
  request.method = "GET";
  request.host = "h";
  request.path_and_query = "/absent";
  request.headers = nullptr;
  MatchResult result = table->Match(request);
  ASSERT_EQ(result.kind, MatchResult::Kind::kRoute);
  EXPECT_EQ(result.route->name, "absent");
}

constexpr char kQueryTable[] = R"(
  name: "query"
  virtual_hosts {
    name: "v" domains: "*"
    routes { name: "exact" match { path: "/exact" query_parameters { name: "q" exact: "a b" } } route { cluster: "c" } }
    routes { name: "encoded-name" match { path: "/name" query_parameters { name: "a&b=" exact: "x" } } route { cluster: "c" } }
    routes { name: "regex" match { path: "/regex" query_parameters { name: "page" regex: "[0-9]{1,3}" } } route { cluster: "c" } }
    routes { name: "present" match { path: "/present" query_parameters { name: "debug" present: true } } route { cluster: "c" } }
    routes { name: "absent" match { path: "/absent" query_parameters { name: "debug" present: false } } route { cluster: "c" } }
    routes { name: "empty" match { path: "/empty" query_parameters { name: "e" exact: "" } } route { cluster: "c" } }
    routes { name: "percent" match { path: "/percent" query_parameters { name: "p" exact: "%zz%" } } route { cluster: "c" } }
    routes { name: "fallback" match { prefix: "/" } route { cluster: "c" } }
  }
)";

TEST(RouteTableQueryTest, ParametersAreDecodedAndMatched) {
  auto table = Compile(kQueryTable);
  ASSERT_NE(table, nullptr);
  auto outcome = [&](std::string_view target) {
    return Outcome(*table, "h", target);
  };
  EXPECT_EQ(outcome("/exact?q=a+b"), "exact");
  EXPECT_EQ(outcome("/exact?q=a%20b"), "exact");
  EXPECT_EQ(outcome("/exact?x=1&q=a%20b&y"), "exact");
  EXPECT_EQ(outcome("/exact?%71=a%20b"), "exact");   // %71 is 'q'
  EXPECT_EQ(outcome("/exact?Q=a+b"), "fallback");    // names are case-sensitive
  EXPECT_EQ(outcome("/exact?q=a%2Bb"), "fallback");  // %2B is '+', not ' '
  EXPECT_EQ(outcome("/exact?q=a b"), "exact");
  EXPECT_EQ(outcome("/exact?q=ab"), "fallback");
  EXPECT_EQ(outcome("/exact?q=x&q=a+b"), "fallback");  // first one counts
  EXPECT_EQ(outcome("/exact?q=a+b&q=x"), "exact");
  EXPECT_EQ(outcome("/exact"), "fallback");

  EXPECT_EQ(outcome("/name?a%26b%3D=x"), "encoded-name");
  EXPECT_EQ(outcome("/name?a&b==x"), "fallback");

  EXPECT_EQ(outcome("/regex?page=12"), "regex");
  EXPECT_EQ(outcome("/regex?page=%31%32"), "regex");
  EXPECT_EQ(outcome("/regex?page=1234"), "fallback");
  EXPECT_EQ(outcome("/regex?page="), "fallback");
  EXPECT_EQ(outcome("/regex"), "fallback");

  EXPECT_EQ(outcome("/present?debug"), "present");
  EXPECT_EQ(outcome("/present?debug="), "present");
  EXPECT_EQ(outcome("/present?&&debug&"), "present");
  EXPECT_EQ(outcome("/present?debugx=1"), "fallback");
  EXPECT_EQ(outcome("/absent?x=debug"), "absent");
  EXPECT_EQ(outcome("/absent"), "absent");
  EXPECT_EQ(outcome("/absent?debug=0"), "fallback");

  EXPECT_EQ(outcome("/empty?e"), "empty");
  EXPECT_EQ(outcome("/empty?e="), "empty");
  EXPECT_EQ(outcome("/empty?e=1"), "fallback");

  EXPECT_EQ(outcome("/percent?p=%zz%"), "percent");
  EXPECT_EQ(outcome("/percent?p=%25zz%25"), "percent");
  EXPECT_EQ(outcome("/percent?p=%zz%2"), "fallback");
}

// prefix, suffix, contains and ignore_case on decoded query values.
TEST(RouteTableQueryTest, PrefixSuffixContainsAndIgnoringCase) {
  auto table = Compile(R"(
    name: "t" virtual_hosts { name: "v" domains: "*"
      routes { name: "prefix" match { prefix: "/p" query_parameters { name: "q" prefix: "ab" } }
               route { cluster: "c" } }
      routes { name: "suffix" match { prefix: "/s" query_parameters { name: "f" suffix: ".csv" } }
               route { cluster: "c" } }
      routes { name: "contains-ic"
               match { prefix: "/c"
                       query_parameters { name: "q" contains: "RED" ignore_case: true } }
               route { cluster: "c" } }
      routes { name: "exact-ic"
               match { prefix: "/e" query_parameters { name: "q" exact: "Yes" ignore_case: true } }
               route { cluster: "c" } }
      routes { name: "fallback" match { prefix: "/" } route { cluster: "c" } } })");
  ASSERT_NE(table, nullptr);
  auto outcome = [&](std::string_view target) { return Outcome(*table, "h", target); };
  EXPECT_EQ(outcome("/p?q=abc"), "prefix");
  EXPECT_EQ(outcome("/p?q=%61b"), "prefix");  // decoded first
  EXPECT_EQ(outcome("/p?q=Abc"), "fallback");
  EXPECT_EQ(outcome("/p?x=abc"), "fallback");
  EXPECT_EQ(outcome("/s?f=a+b.csv"), "suffix");
  EXPECT_EQ(outcome("/s?f=a.csv.bak"), "fallback");
  EXPECT_EQ(outcome("/c?q=dark+Red+wine"), "contains-ic");
  EXPECT_EQ(outcome("/c?q=re"), "fallback");
  EXPECT_EQ(outcome("/e?q=YES"), "exact-ic");
  EXPECT_EQ(outcome("/e?q=yes1"), "fallback");
}

TEST(RouteEntryTest, WeightedClustersSplitTheRandomSpace) {
  auto table = Compile(R"(
    name: "t" virtual_hosts { name: "v" domains: "*" routes {
      match { prefix: "/" }
      route { weighted_clusters {
        clusters { name: "a" weight: 1 }
        clusters { name: "b" weight: 2 }
        clusters { name: "c" weight: 7 }
        clusters { name: "d" weight: 90 } } } } })");
  ASSERT_NE(table, nullptr);
  const RouteEntry& route = table->route(0);
  ASSERT_EQ(route.action, RouteEntry::Action::kCluster);
  ASSERT_EQ(route.clusters.size(), 4u);
  EXPECT_EQ(route.clusters[0].cumulative_weight, 1u);
  EXPECT_EQ(route.clusters[1].cumulative_weight, 3u);
  EXPECT_EQ(route.clusters[2].cumulative_weight, 10u);
  EXPECT_EQ(route.clusters[3].cumulative_weight, 100u);
  EXPECT_EQ(route.total_weight, 100u);

  // The ends of the space, and the exact boundaries between clusters.
  EXPECT_EQ(route.PickCluster(0), "a");
  EXPECT_EQ(route.PickCluster(UINT64_MAX), "d");
  // The smallest value that maps to weight point k: ceil(k * 2^64 / 100).
  auto boundary = [](uint64_t k) {
    return absl::Uint128Low64(((absl::uint128(k) << 64) + 99) / 100);
  };
  EXPECT_EQ(route.PickCluster(boundary(1) - 1), "a");
  EXPECT_EQ(route.PickCluster(boundary(1)), "b");
  EXPECT_EQ(route.PickCluster(boundary(3) - 1), "b");
  EXPECT_EQ(route.PickCluster(boundary(3)), "c");
  EXPECT_EQ(route.PickCluster(boundary(10) - 1), "c");
  EXPECT_EQ(route.PickCluster(boundary(10)), "d");

  // Evenly spaced points over the whole space, and pseudo-random ones.
  const std::map<std::string, double> want = {
      {"a", 0.01}, {"b", 0.02}, {"c", 0.07}, {"d", 0.90}};
  constexpr int kSamples = 1'000'000;
  std::map<std::string, int> even;
  std::map<std::string, int> random;
  std::mt19937_64 rng(42);
  const uint64_t spacing = UINT64_MAX / kSamples;
  for (int i = 0; i < kSamples; ++i) {
    ++even[route.PickCluster(spacing * i + spacing / 2)];
    ++random[route.PickCluster(rng())];
  }
  for (const auto& [name, share] : want) {
    EXPECT_NEAR(even[name] / static_cast<double>(kSamples), share, 0.01 * share)
        << name;
    EXPECT_NEAR(random[name] / static_cast<double>(kSamples), share, 0.01)
        << name;
  }
}

TEST(RouteEntryTest, SingleClusterAndNonClusterRoutes) {
  auto table = Compile(R"(
    name: "t" virtual_hosts { name: "v" domains: "*"
      routes { match { prefix: "/" } route { cluster: "users" } }
      routes { match { prefix: "/" } direct_response { status: 200 } } })");
  ASSERT_NE(table, nullptr);
  const RouteEntry& single = table->route(0);
  ASSERT_EQ(single.clusters.size(), 1u);
  EXPECT_EQ(single.total_weight, 1u);
  EXPECT_EQ(single.PickCluster(0), "users");
  EXPECT_EQ(single.PickCluster(UINT64_MAX), "users");
  EXPECT_EQ(table->route(1).PickCluster(7), "");
}

// A retry policy without num_retries retries once; an explicit 0 turns
// retries off (it is not read as unset).
TEST(RouteEntryTest, NumRetriesDefaultsToOneAndAnExplicitZeroMeansNone) {
  auto table = Compile(R"(
    name: "t" virtual_hosts { name: "v" domains: "*"
      routes { match { prefix: "/a" } route { cluster: "users" retry_policy { } } }
      routes { match { prefix: "/b" } route { cluster: "users" retry_policy { num_retries: 0 } } }
      routes { match { prefix: "/c" } route { cluster: "users" retry_policy { num_retries: 3 } } }
      routes { match { prefix: "/d" } route { cluster: "users" } } })");
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(table->route(0).retry.num_retries, 1u);
  EXPECT_EQ(table->route(1).retry.num_retries, 0u);
  EXPECT_EQ(table->route(2).retry.num_retries, 3u);
  // No policy: up to two more tries after connect failures, nothing else.
  EXPECT_EQ(table->route(3).retry.num_retries, 2u);
  EXPECT_TRUE(table->route(3).retry.on_connect_failure);
  EXPECT_FALSE(table->route(3).retry.on_reset);
  EXPECT_FALSE(table->route(3).retry.RetriesStatus(503));
}

TEST(RouteEntryTest, PrefixRewrite) {
  auto table = Compile(R"(
    name: "t" virtual_hosts { name: "v" domains: "*"
      routes { match { prefix: "/api/v1/" } route { cluster: "c" prefix_rewrite: "/" } }
      routes { match { prefix: "/old" } route { cluster: "c" prefix_rewrite: "/new/path" } }
      routes { match { prefix: "/plain" } route { cluster: "c" } }
      routes { match { path: "/exact" } route { cluster: "c" } } })");
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(table->route(0).matched_prefix, "/api/v1/");
  EXPECT_EQ(table->route(0).RewritePath("/api/v1/users/1?x=2"), "/users/1?x=2");
  EXPECT_EQ(table->route(0).RewritePath("/api/v1/"), "/");
  EXPECT_EQ(table->route(1).RewritePath("/old"), "/new/path");
  EXPECT_EQ(table->route(1).RewritePath("/older?a"), "/new/pather?a");
  EXPECT_EQ(table->route(1).RewritePath("/x/old"), "/x/old");
  EXPECT_EQ(table->route(2).RewritePath("/plain/x?y"), "/plain/x?y");
  EXPECT_EQ(table->route(3).matched_prefix, "");
  EXPECT_EQ(table->route(3).RewritePath("/exact?q"), "/exact?q");
}

TEST(RouteEntryTest, RedirectLocation) {
  auto table = Compile(R"(
    name: "t" virtual_hosts { name: "v" domains: "*"
      routes { match { prefix: "/" } redirect { scheme_redirect: "https" } }
      routes { match { prefix: "/" } redirect { host_redirect: "new.example.com" response_code: 308 } }
      routes { match { prefix: "/" } redirect { path_redirect: "/moved" } }
      routes { match { prefix: "/" } redirect { path_redirect: "/moved" strip_query: true } }
      routes { match { prefix: "/" } redirect { strip_query: true } }
      routes { match { prefix: "/" } redirect { path_redirect: "/search?q=new" } }
      routes { match { prefix: "/" } redirect {
        scheme_redirect: "http" host_redirect: "b.com:8080" path_redirect: "/x" response_code: 302 } }
      routes { match { prefix: "/" } redirect { path_redirect: "/doc#part" } }
      routes { match { prefix: "/" } redirect { path_redirect: "/s?q=1#top" } } })");
  ASSERT_NE(table, nullptr);
  const RouteEntry& https = table->route(0);
  EXPECT_EQ(https.action, RouteEntry::Action::kRedirect);
  EXPECT_EQ(https.redirect_code, 301u);
  EXPECT_EQ(https.RedirectLocation("http", "a.com", "/p?q=1"),
            "https://a.com/p?q=1");
  EXPECT_EQ(https.RedirectLocation("http", "a.com:80", "/p"),
            "https://a.com/p");
  EXPECT_EQ(https.RedirectLocation("http", "[::1]:80", "/p"),
            "https://[::1]/p");
  EXPECT_EQ(https.RedirectLocation("http", "a.com:8080", "/p"),
            "https://a.com:8080/p");
  EXPECT_EQ(https.RedirectLocation("https", "a.com:443", "/p"),
            "https://a.com:443/p");

  const RouteEntry& host = table->route(1);
  EXPECT_EQ(host.redirect_code, 308u);
  EXPECT_EQ(host.RedirectLocation("https", "a.com:8443", "/p?x"),
            "https://new.example.com/p?x");

  EXPECT_EQ(table->route(2).RedirectLocation("http", "a.com", "/old?x=1&y"),
            "http://a.com/moved?x=1&y");
  EXPECT_EQ(table->route(2).RedirectLocation("http", "a.com", "/old"),
            "http://a.com/moved");
  EXPECT_EQ(table->route(3).RedirectLocation("http", "a.com", "/old?x=1"),
            "http://a.com/moved");
  EXPECT_EQ(table->route(4).RedirectLocation("http", "a.com", "/keep?x=1"),
            "http://a.com/keep");
  EXPECT_EQ(table->route(5).RedirectLocation("http", "a.com", "/s?q=old"),
            "http://a.com/search?q=new");

  const RouteEntry& all = table->route(6);
  EXPECT_EQ(all.redirect_code, 302u);
  EXPECT_EQ(all.RedirectLocation("https", "a.com:443", "/p?q"),
            "http://b.com:8080/x?q");

  // The query goes before a path_redirect's fragment (RFC 3986 3.5); it
  // went into it ("/doc#part?q=1"), and the target never saw it.
  EXPECT_EQ(table->route(7).RedirectLocation("http", "a.com", "/old?q=1"),
            "http://a.com/doc?q=1#part");
  EXPECT_EQ(table->route(8).RedirectLocation("http", "a.com", "/old?x=2"),
            "http://a.com/s?q=1#top");
  // No Host (HTTP/1.0): a relative Location, not "http:///old"; none
  // when the scheme changes (it would send the client back here).
  EXPECT_EQ(table->route(2).RedirectLocation("http", "", "/old?x=2"), "/moved?x=2");
  EXPECT_EQ(https.RedirectLocation("http", "", "/old?x=2"), "");
  EXPECT_EQ(https.RedirectLocation("https", "", "/old"), "/old");
  // Nor one that names another host ("//evil.example/x" is a network-path
  // reference; browsers read "/\evil.example" alike): before, sent as is.
  EXPECT_EQ(https.RedirectLocation("https", "", "//evil.example/x?y"), "/.//evil.example/x?y");
  EXPECT_EQ(https.RedirectLocation("https", "", "/\\evil.example/x"), "/%5Cevil.example/x");
  EXPECT_EQ(https.RedirectLocation("https", "a.com", "/a\\b"), "https://a.com/a%5Cb");
  EXPECT_EQ(https.RedirectLocation("https", "a.com", "//evil.example/x"),
            "https://a.com//evil.example/x");
}

// A redirect's prefix_rewrite replaces the matched prefix and keeps the rest
// of the path and the query (Envoy's redirect prefix_rewrite; nginx's
// `rewrite ^/old/(.*)$ /new/$1 permanent`), however the prefix was spelt
// when the route ignores case.
TEST(RouteEntryTest, RedirectPrefixRewrite) {
  auto table = Compile(R"(
    name: "t" virtual_hosts { name: "v" domains: "*"
      routes { match { prefix: "/old/" } redirect { prefix_rewrite: "/new/" } }
      routes { match { prefix: "/Docs" case_sensitive { value: false } }
               redirect { prefix_rewrite: "/help" strip_query: true response_code: 308 } }
      routes { match { prefix: "/x" }
               redirect { prefix_rewrite: "/" host_redirect: "b.com" } } })");
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(table->route(0).RedirectLocation("http", "a.com", "/old/a/b?q=1"),
            "http://a.com/new/a/b?q=1");
  EXPECT_EQ(table->route(0).RedirectLocation("http", "a.com", "/old/"), "http://a.com/new/");
  EXPECT_EQ(table->route(1).RedirectLocation("https", "a.com", "/DOCS/intro?x"),
            "https://a.com/help/intro");
  EXPECT_EQ(table->route(2).RedirectLocation("http", "a.com", "/xy"), "http://b.com/y");
}

TEST(RouteEntryTest, DirectResponse) {
  auto table = Compile(R"(
    name: "t" virtual_hosts { name: "v" domains: "*"
      routes { match { path: "/health" } direct_response { status: 200 body: "ok" } }
      routes { match { prefix: "/" } direct_response {
        status: 503 body: "{\"down\":true}" content_type: "application/json" } } })");
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(Outcome(*table, "h", "/health"), "v/0");
  const RouteEntry& health = table->route(0);
  EXPECT_EQ(health.action, RouteEntry::Action::kDirectResponse);
  EXPECT_EQ(health.direct_status, 200u);
  EXPECT_EQ(health.direct_body, "ok");
  EXPECT_EQ(health.direct_content_type, "text/plain");
  const RouteEntry& down = table->route(1);
  EXPECT_EQ(down.direct_status, 503u);
  EXPECT_EQ(down.direct_body, "{\"down\":true}");
  EXPECT_EQ(down.direct_content_type, "application/json");
  EXPECT_TRUE(down.clusters.empty());
}

TEST(RouteTableTest, DefaultsIdsAndNames) {
  auto table = Compile(R"(
    name: "main"
    virtual_hosts { name: "api" domains: "api.com"
      routes { match { prefix: "/" } route { cluster: "c" } }
      routes { name: "slow" match { prefix: "/slow" } route { cluster: "c" timeout { seconds: 2 nanos: 500000000 } } } }
    virtual_hosts { domains: "*"
      routes { match { prefix: "/" } route { cluster: "c" timeout {} } }
      routes { match { prefix: "/" } redirect {} } })");
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(table->name(), "main");
  ASSERT_EQ(table->route_count(), 4u);
  for (uint32_t id = 0; id < table->route_count(); ++id) {
    EXPECT_EQ(table->route(id).id, id);
  }
  EXPECT_EQ(table->route(0).name, "api/0");
  EXPECT_EQ(table->route(1).name, "slow");
  EXPECT_EQ(table->route(2).name, "1/0");
  EXPECT_EQ(table->route(3).name, "1/1");
  EXPECT_EQ(table->route(0).timeout, absl::Seconds(15));
  EXPECT_EQ(table->route(1).timeout, absl::Milliseconds(2500));
  EXPECT_EQ(table->route(2).timeout, absl::ZeroDuration());
  EXPECT_EQ(table->route(0).prefix_rewrite, "");
  EXPECT_EQ(table->route(0).clusters[0].name, "c");
  EXPECT_EQ(table->route(3).redirect_code, 301u);
  EXPECT_FALSE(table->route(3).strip_query);

  RouteRequest request;
  request.method = "GET";
  request.host = "api.com";
  request.path_and_query = "/";
  MatchResult result = table->Match(request);
  ASSERT_EQ(result.kind, MatchResult::Kind::kRoute);
  EXPECT_EQ(result.route, &table->route(0));
  EXPECT_TRUE(result.allowed_methods.empty());
}

TEST(RouteTableTest, BadRegexNamesTheField) {
  struct Case {
    std::string match;
    std::string field;
  };
  for (const Case& c : std::vector<Case>{
           {"regex: \"/(a\"", "virtual_hosts[1].routes[1].match.regex"},
           {"prefix: \"/\" headers { name: \"a\" exact: \"1\" } "
            "headers { name: \"b\" regex: \"[\" }",
            "virtual_hosts[1].routes[1].match.headers[1].regex"},
           {"prefix: \"/\" query_parameters { name: \"q\" regex: \"*\" }",
            "virtual_hosts[1].routes[1].match.query_parameters[0].regex"},
       }) {
    auto table = RouteTable::Compile(ParseTable(
        R"(name: "t"
        virtual_hosts { domains: "a" routes { match { prefix: "/" } route { cluster: "c" } } }
        virtual_hosts { domains: "*"
          routes { match { prefix: "/" } route { cluster: "c" } }
          routes { match { )" +
        c.match + R"( } route { cluster: "c" } } })"));
    ASSERT_FALSE(table.ok()) << c.match;
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(table.status().message(),
                                 c.field + ": invalid RE2 regular expression"))
        << table.status();
  }
}

TEST(RouteTableTest, MissingPathSpecifierOrActionIsAnError) {
  auto no_path = RouteTable::Compile(ParseTable(
      R"(name: "t" virtual_hosts { domains: "*" routes { route { cluster: "c" } } })"));
  ASSERT_FALSE(no_path.ok());
  EXPECT_EQ(
      no_path.status().message(),
      "virtual_hosts[0].routes[0].match: needs one of prefix, path or regex");
  auto no_action = RouteTable::Compile(ParseTable(
      R"(name: "t" virtual_hosts { domains: "*" routes { match { prefix: "/" } } })"));
  ASSERT_FALSE(no_action.ok());
  EXPECT_EQ(no_action.status().code(), absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// The reference: a direct reading of the rules over the config, one route at
// a time.

struct Expected {
  MatchResult::Kind kind = MatchResult::Kind::kNoRoute;
  uint32_t id = 0;
  std::string allowed_methods;
};

class NaiveMatcher {
 public:
  explicit NaiveMatcher(const config::v1::RouteTable& table) : table_(table) {}

  Expected Match(const RouteRequest& request) {
    std::string host(request.host);
    for (char& c : host) c = static_cast<char>(std::tolower(c));
    if (!host.empty() && host[0] == '[') {
      if (host.find(']') != std::string::npos) {
        host = host.substr(0, host.find(']') + 1);
      }
    } else if (std::count(host.begin(), host.end(), ':') == 1) {
      host = host.substr(0, host.find(':'));
    }
    if (host.size() > 1 && host.back() == '.') host.pop_back();  // one trailing dot

    // Exact, then the longest wildcard suffix, then "*".
    int vhost = -1;
    for (int v = 0; v < table_.virtual_hosts_size() && vhost < 0; ++v) {
      for (const std::string& d : table_.virtual_hosts(v).domains()) {
        if (d == host) vhost = v;
      }
    }
    size_t longest = 0;
    if (vhost < 0) {
      for (int v = 0; v < table_.virtual_hosts_size(); ++v) {
        for (const std::string& d : table_.virtual_hosts(v).domains()) {
          if (d.size() < 2 || d[0] != '*') continue;
          std::string suffix = d.substr(1);  // ".a.com"
          if (host.size() > suffix.size() && suffix.size() > longest &&
              host.compare(host.size() - suffix.size(), suffix.size(),
                           suffix) == 0) {
            longest = suffix.size();
            vhost = v;
          }
        }
      }
    }
    for (int v = 0; v < table_.virtual_hosts_size() && vhost < 0; ++v) {
      for (const std::string& d : table_.virtual_hosts(v).domains()) {
        if (d == "*") vhost = v;
      }
    }
    Expected expected;
    if (vhost < 0) return expected;

    uint32_t id = 0;
    for (int v = 0; v < vhost; ++v) id += table_.virtual_hosts(v).routes_size();
    std::string target(request.path_and_query);
    std::string path = target.substr(0, target.find('?'));
    std::string query = target.find('?') == std::string::npos
                            ? ""
                            : target.substr(target.find('?') + 1);
    std::set<std::string> allowed;
    int64_t fallback = -1;
    for (const auto& route : table_.virtual_hosts(vhost).routes()) {
      const auto& m = route.match();
      bool ok = true;
      if (m.has_prefix()) ok = path.rfind(m.prefix(), 0) == 0;
      if (m.has_path()) ok = path == m.path();
      if (m.has_regex()) ok = RE2::FullMatch(path, Regex(m.regex()));
      for (const auto& h : m.headers()) {
        if (!ok) break;
        // Repeated lines: their values joined with ','.
        bool found = false;
        std::string value;
        if (request.headers != nullptr) {
          for (const HeaderField& f : *request.headers) {
            std::string name(f.name);
            for (char& c : name) c = static_cast<char>(std::tolower(c));
            if (name != h.name()) continue;
            if (found) value += ',';
            value += std::string(f.value);
            found = true;
          }
        }
        bool r = false;
        if (h.has_exact()) r = found && value == h.exact();
        if (h.has_prefix()) r = found && value.rfind(h.prefix(), 0) == 0;
        if (h.has_regex()) r = found && RE2::FullMatch(value, Regex(h.regex()));
        if (h.has_present()) r = found == h.present();
        ok = r != h.invert();
      }
      std::vector<std::pair<std::string, std::string>> params =
          ParseQuery(query);
      for (const auto& q : m.query_parameters()) {
        if (!ok) break;
        const std::string* value = nullptr;
        for (const auto& [name, v] : params) {
          if (name == q.name()) {
            value = &v;
            break;
          }
        }
        if (q.has_exact()) ok = value && *value == q.exact();
        if (q.has_regex())
          ok = value && RE2::FullMatch(*value, Regex(q.regex()));
        if (q.has_present()) ok = (value != nullptr) == q.present();
      }
      if (ok) {
        bool method_ok = m.methods().empty();
        bool implied = false;
        for (const std::string& method : m.methods()) {
          if (method == request.method) method_ok = true;
          // GET takes HEAD along.
          if (method == "GET" && request.method == "HEAD") implied = true;
        }
        // A HEAD taken along by a GET route goes to the next matching
        // route that takes HEAD itself if that one lists HEAD; one that
        // takes any method leaves it with the GET route.
        if (implied && !method_ok) {
          if (fallback < 0) fallback = id;
        } else if (method_ok) {
          expected.kind = MatchResult::Kind::kRoute;
          expected.id = fallback >= 0 && m.methods().empty() ? static_cast<uint32_t>(fallback) : id;
          return expected;
        }
        allowed.insert(m.methods().begin(), m.methods().end());
        if (allowed.count("GET")) allowed.insert("HEAD");
      }
      ++id;
    }
    if (fallback >= 0) {
      expected.kind = MatchResult::Kind::kRoute;
      expected.id = static_cast<uint32_t>(fallback);
      return expected;
    }
    if (!allowed.empty()) {
      expected.kind = MatchResult::Kind::kMethodNotAllowed;
      for (const std::string& method : allowed) {
        if (!expected.allowed_methods.empty()) expected.allowed_methods += ", ";
        expected.allowed_methods += method;
      }
    }
    return expected;
  }

 private:
  static std::string Decode(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '+') {
        out += ' ';
      } else if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(s[i + 1]) &&
                 std::isxdigit(s[i + 2])) {
        out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        out += s[i];
      }
    }
    return out;
  }

  static std::vector<std::pair<std::string, std::string>> ParseQuery(
      const std::string& query) {
    std::vector<std::pair<std::string, std::string>> params;
    std::string piece;
    for (size_t i = 0; i <= query.size(); ++i) {
      if (i < query.size() && query[i] != '&') {
        piece += query[i];
        continue;
      }
      if (!piece.empty()) {
        size_t eq = piece.find('=');
        params.emplace_back(
            Decode(piece.substr(0, eq)),
            eq == std::string::npos ? "" : Decode(piece.substr(eq + 1)));
      }
      piece.clear();
    }
    return params;
  }

  const RE2& Regex(const std::string& pattern) {
    auto& re = regexes_[pattern];
    if (re == nullptr) re = std::make_unique<RE2>(pattern);
    return *re;
  }

  const config::v1::RouteTable& table_;
  std::map<std::string, std::unique_ptr<RE2>> regexes_;
};

class RandomTables {
 public:
  explicit RandomTables(uint64_t seed) : rng_(seed) {}

  // 1-4 virtual hosts with 1..max_routes routes each.
  config::v1::RouteTable Table(int max_routes = 40) {
    config::v1::RouteTable table;
    table.set_name("random");
    std::vector<std::string> domains = {"a.com",     "b.a.com", "*.a.com",
                                        "*.b.a.com", "*.com",   "*",
                                        "[::1]",     "c.org",   "x.b.a.com"};
    std::shuffle(domains.begin(), domains.end(), rng_);
    int vhosts = Uniform(1, 4);
    for (int v = 0; v < vhosts; ++v) table.add_virtual_hosts();
    for (const std::string& d : domains) {
      if (Chance(0.7)) {
        table.mutable_virtual_hosts(Uniform(0, vhosts - 1))->add_domains(d);
      }
    }
    for (auto& vhost : *table.mutable_virtual_hosts()) {
      int routes = Uniform(1, max_routes);
      for (int r = 0; r < routes; ++r) AddRoute(vhost.add_routes());
    }
    return table;
  }

  // A random route in place of *route: any match kind, methods, header and
  // query conditions, and any action and name.
  void ReplaceRoute(config::v1::Route* route) {
    route->Clear();
    AddRoute(route);
    if (Chance(0.5)) route->set_name("r" + std::to_string(Uniform(0, 1000000)));
    switch (Uniform(0, 4)) {
      case 0:
        route->mutable_redirect()->set_path_redirect("/moved");
        route->mutable_redirect()->set_response_code(Chance(0.5) ? 302 : 0);
        break;
      case 1:
        route->mutable_direct_response()->set_status(200 + Uniform(0, 300));
        route->mutable_direct_response()->set_body("body");
        break;
      case 2: {
        auto* clusters = route->mutable_route()->mutable_weighted_clusters();
        for (int i = Uniform(1, 3); i > 0; --i) {
          auto* c = clusters->add_clusters();
          c->set_name("w" + std::to_string(i));
          c->set_weight(Uniform(1, 100));
        }
        break;
      }
      case 3:
        route->mutable_route()->set_cluster("c" + std::to_string(Uniform(0, 9)));
        route->mutable_route()->set_prefix_rewrite("/new");
        route->mutable_route()->mutable_timeout()->set_seconds(Uniform(1, 60));
        break;
      default:
        break;  // AddRoute's cluster "c"
    }
  }

  int Uniform(int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng_);
  }

  RouteRequest Request(std::vector<HeaderField>* headers, std::string* target) {
    static const char* const kHosts[] = {
        "a.com",     "A.COM:8080", "x.b.a.com", "b.a.com",  "y.a.com",
        "Z.B.A.com", "a.com.",     "c.org:1",   "[::1]:80", "[::1]",
        "zzz",       "",           ".a.com",    "q.com",    "b.a.COM:"};
    static const char* const kMethods[] = {"GET", "POST", "PUT", "DELETE",
                                           "PATCH"};
    static const char* const kHeaderNames[] = {"x-a", "X-A", "x-b", "X-B",
                                               "x-c"};
    static const char* const kHeaderValues[] = {"1", "12", "x", "1x", ""};
    static const char* const kQueries[] = {
        "q=1",   "q=a+b", "a+b=1", "a%20b=a%20b", "q=1&q=2", "q",    "x",
        "%zz=1", "x=%",   "q=%31", "x=12",        "&&q=",    "a b=%"};
    RouteRequest request;
    request.method = kMethods[Uniform(0, 4)];
    request.host = kHosts[Uniform(0, std::size(kHosts) - 1)];
    *target = Path();
    if (Chance(0.5)) {
      *target += "?";
      int n = Uniform(0, 3);
      for (int i = 0; i < n; ++i) {
        if (i > 0) *target += "&";
        *target += kQueries[Uniform(0, std::size(kQueries) - 1)];
      }
    }
    request.path_and_query = *target;
    headers->clear();
    int n = Uniform(0, 3);
    for (int i = 0; i < n; ++i) {
      headers->push_back(
          {kHeaderNames[Uniform(0, 4)], kHeaderValues[Uniform(0, 4)]});
    }
    request.headers = headers;
    return request;
  }

 private:
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }

  std::string Path() {
    static const char* const kSegments[] = {"a", "b", "ab", "users",
                                            "1", "",  "A"};
    std::string path;
    int n = Uniform(0, 3);
    for (int i = 0; i < n; ++i) {
      path += "/";
      path += kSegments[Uniform(0, std::size(kSegments) - 1)];
    }
    return path.empty() ? "/" : path;
  }

  void AddRoute(config::v1::Route* route) {
    static const char* const kRegexes[] = {
        "/a/.*", "/users/[0-9]+", "/(a|b)+",     "/.*b",
        ".*",    "/a/?",          "(?i)/a/.*",   "/users/[0-9]+/?",
        "(/a)+", "/a|/b/.*",      "/[ab]{2}",    "/ab?",
        "",      "/[^/]+/1",      "/users(/.*)?"};
    static const char* const kMethods[] = {"GET", "POST", "PUT", "DELETE"};
    auto* match = route->mutable_match();
    int kind = Uniform(0, 9);
    if (kind < 5) {
      std::string prefix = Path();
      prefix = prefix.substr(0, Uniform(1, prefix.size()));
      match->set_prefix(prefix);
    } else if (kind < 9) {
      match->set_path(Path());
    } else {
      match->set_regex(kRegexes[Uniform(0, std::size(kRegexes) - 1)]);
    }
    if (Chance(0.4)) {
      for (const char* m : kMethods) {
        if (Chance(0.4)) match->add_methods(m);
      }
    }
    if (Chance(0.2)) {
      auto* h = match->add_headers();
      h->set_name(Chance(0.5) ? "x-a" : "x-b");
      switch (Uniform(0, 4)) {
        case 0:
          h->set_exact("1");
          break;
        case 1:
          h->set_prefix("1");
          break;
        case 2:
          h->set_regex("[0-9]+");
          break;
        case 3:
          h->set_present(true);
          break;
        case 4:
          h->set_present(false);
          break;
      }
      h->set_invert(Chance(0.3));
    }
    if (Chance(0.2)) {
      auto* q = match->add_query_parameters();
      q->set_name(Chance(0.5) ? "q" : (Chance(0.5) ? "a b" : "x"));
      switch (Uniform(0, 3)) {
        case 0:
          q->set_exact(Chance(0.5) ? "1" : "a b");
          break;
        case 1:
          q->set_regex("[0-9]*");
          break;
        case 2:
          q->set_present(true);
          break;
        case 3:
          q->set_present(false);
          break;
      }
    }
    route->mutable_route()->set_cluster("c");
  }

  std::mt19937_64 rng_;
};

TEST(RouteTableRandomTest, SameAnswerAsFirstMatchScan) {
  RandomTables random(20240601);
  int routes = 0, method_not_allowed = 0, not_found = 0;
  for (int t = 0; t < 300; ++t) {
    config::v1::RouteTable config = random.Table();
    auto table = RouteTable::Compile(config);
    ASSERT_TRUE(table.ok()) << table.status();
    NaiveMatcher naive(config);
    for (int i = 0; i < 100; ++i) {
      std::vector<HeaderField> headers;
      std::string target;
      RouteRequest request = random.Request(&headers, &target);
      Expected want = naive.Match(request);
      MatchResult got = (*table)->Match(request);
      std::string context = "table:\n" + config.DebugString() +
                            "\nrequest: " + std::string(request.method) + " " +
                            std::string(request.host) + " " + target;
      ASSERT_EQ(static_cast<int>(got.kind), static_cast<int>(want.kind))
          << context;
      switch (want.kind) {
        case MatchResult::Kind::kRoute:
          ASSERT_EQ(got.route->id, want.id) << context;
          ++routes;
          break;
        case MatchResult::Kind::kMethodNotAllowed:
          ASSERT_EQ(got.allowed_methods, want.allowed_methods) << context;
          ++method_not_allowed;
          break;
        case MatchResult::Kind::kNoRoute:
          ++not_found;
          break;
      }
    }
  }
  // The generator must exercise every outcome.
  EXPECT_GT(routes, 5000);
  EXPECT_GT(method_not_allowed, 200);
  EXPECT_GT(not_found, 1000);
}

// Every field of two entries, for Recompile against Compile.
void ExpectSameEntry(const RouteEntry& got, const RouteEntry& want,
                     const std::string& context) {
  EXPECT_EQ(got.id, want.id) << context;
  EXPECT_EQ(got.name, want.name) << context;
  EXPECT_EQ(got.virtual_host, want.virtual_host) << context;
  EXPECT_EQ(got.action, want.action) << context;
  ASSERT_EQ(got.clusters.size(), want.clusters.size()) << context;
  for (size_t i = 0; i < got.clusters.size(); ++i) {
    EXPECT_EQ(got.clusters[i].name, want.clusters[i].name) << context;
    EXPECT_EQ(got.clusters[i].cumulative_weight,
              want.clusters[i].cumulative_weight)
        << context;
  }
  EXPECT_EQ(got.total_weight, want.total_weight) << context;
  EXPECT_EQ(got.timeout, want.timeout) << context;
  EXPECT_EQ(got.prefix_rewrite, want.prefix_rewrite) << context;
  EXPECT_EQ(got.matched_prefix, want.matched_prefix) << context;
  EXPECT_EQ(got.path_redirect, want.path_redirect) << context;
  EXPECT_EQ(got.redirect_code, want.redirect_code) << context;
  EXPECT_EQ(got.direct_status, want.direct_status) << context;
  EXPECT_EQ(got.direct_body, want.direct_body) << context;
  EXPECT_EQ(got.direct_content_type, want.direct_content_type) << context;
}

// Recompile(previous, next, ids) must answer exactly as Compile(next): the
// same entries and the same Match results (ids, 405 Allow lists, 404s),
// patch after patch, each made from the previous recompiled table. The
// table each patch started from must keep answering as before.
TEST(RouteTableRecompileTest, SameAnswersAsCompile) {
  RandomTables random(20261128);
  int routes = 0, method_not_allowed = 0, not_found = 0, patches = 0;
  for (int t = 0; t < 25; ++t) {
    config::v1::RouteTable config = random.Table(150);
    auto compiled = RouteTable::Compile(config);
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    std::shared_ptr<const RouteTable> current = *compiled;
    for (int p = 0; p < 12; ++p, ++patches) {
      // Replace 1..8 random routes (or, now and then, none).
      const int total = current->route_count();
      std::set<uint32_t> ids;
      int count = random.Uniform(0, 9) == 0 ? 0 : random.Uniform(1, 8);
      for (int i = 0; i < count; ++i) ids.insert(random.Uniform(0, total - 1));
      config::v1::RouteTable next = config;
      for (uint32_t id : ids) {
        uint32_t r = id;
        int v = 0;
        while (r >=
               static_cast<uint32_t>(next.virtual_hosts(v).routes_size())) {
          r -= next.virtual_hosts(v).routes_size();
          ++v;
        }
        random.ReplaceRoute(next.mutable_virtual_hosts(v)->mutable_routes(r));
      }
      const std::vector<uint32_t> replaced(ids.begin(), ids.end());
      auto recompiled = RouteTable::Recompile(*current, next, replaced);
      ASSERT_TRUE(recompiled.ok()) << recompiled.status();
      auto want = RouteTable::Compile(next);
      ASSERT_TRUE(want.ok()) << want.status();
      const RouteTable& got = **recompiled;
      std::string context = "table:\n" + next.DebugString();
      ASSERT_EQ(got.route_count(), (*want)->route_count());
      EXPECT_EQ(got.name(), (*want)->name());
      for (uint32_t id = 0; id < got.route_count(); ++id) {
        ExpectSameEntry(got.route(id), (*want)->route(id),
                        context + "\nroute " + std::to_string(id));
      }
      NaiveMatcher naive(config);
      for (int i = 0; i < 200; ++i) {
        std::vector<HeaderField> headers;
        std::string target;
        RouteRequest request = random.Request(&headers, &target);
        MatchResult a = got.Match(request);
        MatchResult b = (*want)->Match(request);
        std::string where = context +
                            "\nrequest: " + std::string(request.method) + " " +
                            std::string(request.host) + " " + target;
        ASSERT_EQ(static_cast<int>(a.kind), static_cast<int>(b.kind)) << where;
        switch (a.kind) {
          case MatchResult::Kind::kRoute:
            ASSERT_EQ(a.route->id, b.route->id) << where;
            ASSERT_EQ(a.route, &got.route(a.route->id)) << where;
            ++routes;
            break;
          case MatchResult::Kind::kMethodNotAllowed:
            ASSERT_EQ(a.allowed_methods, b.allowed_methods) << where;
            ++method_not_allowed;
            break;
          case MatchResult::Kind::kNoRoute:
            ++not_found;
            break;
        }
        // The table the patch started from is unchanged.
        MatchResult before = current->Match(request);
        Expected expected = naive.Match(request);
        ASSERT_EQ(static_cast<int>(before.kind),
                  static_cast<int>(expected.kind))
            << where;
        if (before.kind == MatchResult::Kind::kRoute) {
          ASSERT_EQ(before.route->id, expected.id) << where;
        }
      }
      current = *recompiled;
      config = std::move(next);
    }
  }
  // The generator must exercise every outcome.
  std::printf("recompile: %d routes, %d 405s, %d 404s\n", routes,
              method_not_allowed, not_found);
  EXPECT_EQ(patches, 300);
  EXPECT_GT(routes, 30000);
  EXPECT_GT(method_not_allowed, 500);
  EXPECT_GT(not_found, 4000);
}

TEST(RouteTableRecompileTest, ReplacedRouteMayChangeEverything) {
  const std::string vhosts =
      "virtual_hosts { name: \"a\" domains: \"a.com\" "
      "  routes { name: \"first\" match { prefix: \"/x\" } "
      "           route { cluster: \"c\" } } "
      "  routes { match { prefix: \"/\" methods: \"PUT\" } "
      "           route { cluster: \"c\" } } } "
      "virtual_hosts { domains: \"*.b.com\" "
      "  routes { match { path: \"/y\" } route { cluster: \"c\" } } }";
  config::v1::RouteTable config = ParseTable(vhosts);
  auto previous = RouteTable::Compile(config);
  ASSERT_TRUE(previous.ok()) << previous.status();
  EXPECT_EQ(Outcome(**previous, "a.com", "/x/1"), "first");

  // Route 0: prefix -> regex with methods, a header, a redirect, no name.
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      "match { regex: \"/x/[0-9]+\" methods: \"GET\" "
      "        headers { name: \"x-v\" exact: \"2\" } } "
      "redirect { path_redirect: \"/z\" }",
      config.mutable_virtual_hosts(0)->mutable_routes(0)));
  // Route 2 (virtual host 1, route 0): exact -> prefix with a query matcher.
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      "name: \"q\" match { prefix: \"/\" "
      "  query_parameters { name: \"k\" present: true } } "
      "direct_response { status: 204 }",
      config.mutable_virtual_hosts(1)->mutable_routes(0)));
  auto table = RouteTable::Recompile(**previous, config, {0, 2});
  ASSERT_TRUE(table.ok()) << table.status();
  const RouteTable& t = **table;
  EXPECT_EQ(t.route(0).name, "a/0");
  EXPECT_EQ(t.route(0).action, RouteEntry::Action::kRedirect);
  EXPECT_EQ(t.route(0).matched_prefix, "");
  EXPECT_EQ(t.route(2).name, "q");
  EXPECT_EQ(t.route(2).virtual_host, "1");
  EXPECT_EQ(Outcome(t, "a.com", "/x/1", "GET", {{"X-V", "2"}}), "a/0");
  EXPECT_EQ(Outcome(t, "a.com", "/x/1", "POST", {{"X-V", "2"}}),
            "405 GET, HEAD, PUT");
  EXPECT_EQ(Outcome(t, "a.com", "/x/1", "GET"), "405 PUT");
  EXPECT_EQ(Outcome(t, "a.com", "/x/a", "PUT"), "a/1");
  EXPECT_EQ(Outcome(t, "w.b.com", "/y"), "404");
  EXPECT_EQ(Outcome(t, "w.b.com", "/other?k"), "q");
  // The previous table still answers as it did.
  EXPECT_EQ(Outcome(**previous, "a.com", "/x/1"), "first");
  EXPECT_EQ(Outcome(**previous, "w.b.com", "/y"), "1/0");
}

TEST(RouteTableRecompileTest, ErrorsNameTheReplacedRoute) {
  config::v1::RouteTable config = ParseTable(
      "virtual_hosts { name: \"a\" domains: \"*\" "
      "  routes { match { prefix: \"/\" } route { cluster: \"c\" } } } "
      "virtual_hosts { name: \"b\" domains: \"b.com\" "
      "  routes { match { prefix: \"/\" } route { cluster: \"c\" } } "
      "  routes { match { path: \"/p\" } route { cluster: \"c\" } } }");
  auto previous = RouteTable::Compile(config);
  ASSERT_TRUE(previous.ok()) << previous.status();

  config::v1::RouteTable bad_regex = config;
  bad_regex.mutable_virtual_hosts(1)
      ->mutable_routes(1)
      ->mutable_match()
      ->set_regex("(");
  auto result = RouteTable::Recompile(**previous, bad_regex, {2});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(result.status().message(),
                               "virtual_hosts[1].routes[1].match.regex: "
                               "invalid RE2 regular expression '('"))
      << result.status();
  // Compile says the same.
  EXPECT_EQ(RouteTable::Compile(bad_regex).status(), result.status());

  config::v1::RouteTable bad_header = config;
  bad_header.mutable_virtual_hosts(1)
      ->mutable_routes(0)
      ->mutable_match()
      ->add_headers()
      ->set_name("x");
  result = RouteTable::Recompile(**previous, bad_header, {1});
  EXPECT_EQ(result.status(), RouteTable::Compile(bad_header).status());
  EXPECT_TRUE(absl::StrContains(result.status().message(),
                                "virtual_hosts[1].routes[0].match.headers[0]"))
      << result.status();

  config::v1::RouteTable no_action = config;
  no_action.mutable_virtual_hosts(0)->mutable_routes(0)->clear_route();
  result = RouteTable::Recompile(**previous, no_action, {0});
  EXPECT_EQ(result.status(), absl::InvalidArgumentError(
                                 "virtual_hosts[0].routes[0]: needs one "
                                 "of route, redirect or direct_response"));

  // Another shape.
  config::v1::RouteTable fewer_vhosts = config;
  fewer_vhosts.mutable_virtual_hosts()->RemoveLast();
  result = RouteTable::Recompile(**previous, fewer_vhosts, {});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(result.status().message(), "1 virtual hosts"))
      << result.status();
  config::v1::RouteTable fewer_routes = config;
  fewer_routes.mutable_virtual_hosts(1)->mutable_routes()->RemoveLast();
  result = RouteTable::Recompile(**previous, fewer_routes, {1});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(result.status().message(),
                                "virtual_hosts[1] has 1 routes"))
      << result.status();
  config::v1::RouteTable more_routes = config;
  *more_routes.mutable_virtual_hosts(0)->add_routes() =
      config.virtual_hosts(0).routes(0);
  result = RouteTable::Recompile(**previous, more_routes, {3});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(result.status().message(),
                                "virtual_hosts[0] has 2 routes"))
      << result.status();
  config::v1::RouteTable renamed = config;
  renamed.mutable_virtual_hosts(1)->set_name("");
  result = RouteTable::Recompile(**previous, renamed, {});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      absl::StrContains(result.status().message(), "virtual_hosts[1].name"))
      << result.status();

  // Bad ids.
  for (const std::vector<uint32_t>& ids :
       std::vector<std::vector<uint32_t>>{{3}, {0, 7}, {2, 1}, {1, 1}}) {
    result = RouteTable::Recompile(**previous, config, ids);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
        << ids.size();
    EXPECT_TRUE(
        absl::StrContains(result.status().message(), "replaced route id"))
        << result.status();
  }

  // Nothing replaced, domains changed: a table as Compile's.
  config::v1::RouteTable moved = config;
  moved.mutable_virtual_hosts(1)->set_domains(0, "*.c.com");
  result = RouteTable::Recompile(**previous, moved, {});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(Outcome(**result, "b.com", "/p"), "a/0");
  EXPECT_EQ(Outcome(**result, "x.c.com", "/p"), "b/0");
}

}  // namespace
}  // namespace sluice::router
