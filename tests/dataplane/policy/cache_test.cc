// The `cache` policy: Cache-Control, dates and freshness; what is stored
// and what not; Vary, HEAD, the client's conditionals; revalidation,
// stale-if-error and stale-while-revalidate; coalescing of misses and its
// deadline; the store's LRU budget; purges and identities; metrics; the
// config rules -- through the registries the binaries use, on a fake
// clock.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/cache/purge.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/cache/cache_config.pb.h"
#include "dataplane/policy/cache/cache_control.h"
#include "dataplane/policy/cache/internal.h"
#include "dataplane/policy/cache/response_store.h"
#include "dataplane/policy/cache/store.h"
#include "dataplane/policy/registry.h"
#include "dataplane/stats/stats.h"
#include "tests/dataplane/policy/fake_callbacks.h"

namespace sluice::policy::cache {
namespace {

using testing::FakeCallbacks;
using Fields = std::vector<std::pair<std::string, std::string>>;

constexpr int64_t kSecond = 1000000000;
constexpr int64_t kStart =
    int64_t{1764000000} * kSecond;  // 2025-11-24T16:00:00Z

std::atomic<int64_t> fake_now{kStart};

std::string DateAt(int64_t ns) { return FormatHttpDate(ns / kSecond); }

class CacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_now = kStart;
    SetClockForTesting([] { return fake_now.load(); });
    InstallPurgeHandler();
    sluice::cache::Purge({});
  }
  void TearDown() override {
    sluice::cache::Purge({});
    SetClockForTesting(nullptr);
  }
  static void Advance(int64_t seconds) { fake_now += seconds * kSecond; }
};

std::vector<api::PolicyConfigError> Errors(const v1::CacheConfig& config) {
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator("cache")->Validate(config, &errors);
  return errors;
}

std::shared_ptr<const http::FilterFactory> Compile(
    const v1::CacheConfig& config = {}) {
  auto errors = Errors(config);
  EXPECT_TRUE(errors.empty()) << errors[0].field << ": " << errors[0].message;
  auto compiled = FindPolicyFactory("cache")->Compile(config);
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return *compiled;
}

http::HeaderMap Map(const Fields& fields) {
  http::HeaderMap map;
  for (const auto& [n, v] : fields) map.Add(n, v);
  return map;
}

// One exchange through a fresh filter of `factory`, driven hook by hook.
class Client {
 public:
  Client(const http::FilterFactory& factory, std::string path = "/items?id=1",
         Fields headers = {}, std::string method = "GET",
         std::string route = "items")
      : filter_(factory.CreateFilter()),
        path_(std::move(path)),
        method_(std::move(method)),
        route_(std::move(route)) {
    callbacks.info_.path = path_;
    callbacks.info_.method = method_;
    callbacks.info_.route_name = route_;
    callbacks.info_.route_table = "main";
    callbacks.info_.virtual_host = "0";
    callbacks.info_.request_content_length = 0;  // no body, as the proxy says of one
    request.Add("host", "API.example.com:8443");
    for (const auto& [n, v] : headers) request.Add(n, v);
  }

  http::FilterStatus Start() {
    head_status = filter_->OnRequestHeaders(request, callbacks);
    return head_status;
  }
  bool went_upstream() const {
    return head_status == http::FilterStatus::kContinue;
  }
  bool answered() const { return callbacks.replies_ > 0; }

  // The upstream's response, whole. Returns whether it reached the client
  // (the filter did not answer instead).
  bool Respond(int status, const Fields& fields, std::string body = "") {
    http::HeaderMap headers = Map(fields);
    if (filter_->OnUpstreamHeaders(status, headers, callbacks) !=
        http::FilterStatus::kContinue) {
      Reply();
      return false;
    }
    response_status = status;
    response = headers;
    filter_->OnResponseHeaders(status, response, callbacks);
    for (size_t i = 0; i < body.size(); i += 7) {
      filter_->OnResponseData(std::string_view(body).substr(i, 7), callbacks);
    }
    filter_->OnResponseEnd(callbacks);
    response_body = body;
    return true;
  }
  // The upstream failed before answering.
  bool Fail(int status) {
    if (filter_->OnUpstreamError(status, callbacks) !=
        http::FilterStatus::kContinue) {
      Reply();
      return false;
    }
    response_status = status;
    filter_->OnResponseHeaders(status, response, callbacks);
    return true;
  }
  // The filter's own answer goes through the response hooks too.
  void Reply() {
    response_status = callbacks.status_;
    response = callbacks.reply_headers_;
    response_body = callbacks.body_;
    filter_->OnResponseHeaders(response_status, response, callbacks);
  }
  std::string header(std::string_view name) const {
    const std::string* v = response.Get(name);
    return v ? *v : "<none>";
  }
  std::string upstream_header(std::string_view name) const {
    const std::string* v = request.Get(name);
    return v ? *v : "<none>";
  }
  std::string cache_status() const { return header("X-Cache-Status"); }
  void Destroy() { filter_.reset(); }
  http::Filter& filter() { return *filter_; }

  FakeCallbacks callbacks;
  http::HeaderMap request;
  http::FilterStatus head_status = http::FilterStatus::kContinue;
  int response_status = 0;
  http::HeaderMap response;
  std::string response_body;

 private:
  std::unique_ptr<http::Filter> filter_;
  std::string path_;
  std::string method_;
  std::string route_;
};

// A request that is expected to be answered from the cache.
struct Served {
  std::string status;  // X-Cache-Status
  int code = 0;
  std::string body;
  std::string age;
};

Served FromCache(const http::FilterFactory& factory, Fields headers = {},
                 std::string path = "/items?id=1", std::string method = "GET") {
  Client c(factory, path, std::move(headers), std::move(method));
  c.Start();
  Served served;
  if (!c.answered()) {
    served.status = "<upstream>";  // not answered from the cache
    return served;
  }
  c.Reply();
  served.status = c.cache_status();
  served.code = c.response_status;
  served.body = c.response_body;
  served.age = c.header("Age");
  return served;
}

// A miss that the upstream answers; returns X-Cache-Status.
std::string Fill(const http::FilterFactory& factory, int status,
                 const Fields& fields, std::string body = "hello",
                 Fields request = {}, std::string path = "/items?id=1") {
  Client c(factory, path, std::move(request));
  c.Start();
  if (!c.went_upstream()) return "<not upstream>";
  c.Respond(status, fields, body);
  return c.cache_status();
}

Fields Fresh(int max_age = 60, Fields more = {}) {
  Fields f = {{"Content-Type", "text/plain"},
              {"Cache-Control", absl::StrCat("max-age=", max_age)},
              {"Date", DateAt(fake_now)}};
  f.insert(f.end(), more.begin(), more.end());
  return f;
}

// ---- RFC pieces ----

TEST(CacheControlTest, ParsesDirectives) {
  CacheControl cc;
  ParseCacheControlValue(
      R"(Public, max-age=60, s-maxage="120", no-cache="set-cookie, x-a", MUST-revalidate,)"
      R"( stale-while-revalidate=30, stale-if-error=bogus, max-stale)",
      &cc);
  EXPECT_TRUE(cc.is_public);
  EXPECT_EQ(cc.max_age, 60);
  EXPECT_EQ(cc.s_maxage, 120);
  EXPECT_TRUE(cc.no_cache);  // the qualified form counts as the plain one
  EXPECT_TRUE(cc.must_revalidate);
  EXPECT_EQ(cc.stale_while_revalidate, 30);
  EXPECT_EQ(cc.stale_if_error, 0);  // not a number: 0
  EXPECT_EQ(cc.max_stale, kAnyStale);
  EXPECT_FALSE(cc.no_store);
  EXPECT_EQ(cc.min_fresh, -1);

  CacheControl big;
  ParseCacheControlValue("max-age=99999999999999", &big);
  EXPECT_EQ(big.max_age, int64_t{1} << 31);

  CacheControl two = ParseCacheControl(
      Map({{"cache-control", "private"}, {"Cache-Control", "no-store"}}));
  EXPECT_TRUE(two.is_private);
  EXPECT_TRUE(two.no_store);

  // RFC 9111 4.2.1: a directive given twice: the first counts (the last
  // used to, an hour's freshness out of "max-age=0, max-age=3600").
  CacheControl repeated = ParseCacheControl(
      Map({{"cache-control", "max-age=0, s-maxage=5"}, {"Cache-Control", "max-age=3600, s-maxage=9"}}));
  EXPECT_EQ(repeated.max_age, 0);
  EXPECT_EQ(repeated.s_maxage, 5);
}

TEST(CacheControlTest, DatesAndEtags) {
  int64_t t = 0;
  ASSERT_TRUE(ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT", &t));
  EXPECT_EQ(t, 784111777);
  ASSERT_TRUE(ParseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT", &t));
  EXPECT_EQ(t, 784111777);
  ASSERT_TRUE(ParseHttpDate("Sun Nov  6 08:49:37 1994", &t));
  EXPECT_EQ(t, 784111777);
  EXPECT_FALSE(ParseHttpDate("0", &t));
  EXPECT_EQ(FormatHttpDate(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");

  EXPECT_TRUE(IfNoneMatchMatches("\"a\"", "\"a\""));
  EXPECT_TRUE(IfNoneMatchMatches("W/\"a\"", "\"a\""));  // weak comparison
  EXPECT_TRUE(IfNoneMatchMatches("\"x\", W/\"a\"", "W/\"a\""));
  EXPECT_TRUE(IfNoneMatchMatches("*", "\"a\""));
  EXPECT_FALSE(IfNoneMatchMatches("\"b\", \"c\"", "\"a\""));
  EXPECT_FALSE(IfNoneMatchMatches("\"a\"", ""));
}

TEST(CacheControlTest, FreshnessLifetime) {
  int64_t now = 1000000;
  auto lifetime = [&](const Fields& f, int64_t default_ttl = 0) {
    return FreshnessLifetime(ParseCacheControl(Map(f)), Map(f), now,
                             default_ttl);
  };
  EXPECT_EQ(lifetime({{"cache-control", "max-age=60"}}), 60);
  EXPECT_EQ(lifetime({{"cache-control", "max-age=60, s-maxage=10"}}),
            10);  // shared: s-maxage
  EXPECT_EQ(lifetime({{"date", FormatHttpDate(now - 100)},
                      {"expires", FormatHttpDate(now + 200)}}),
            300);  // Expires against Date, not against the clock
  EXPECT_EQ(lifetime({{"expires", FormatHttpDate(now + 200)}}), 200);
  EXPECT_EQ(lifetime({{"expires", "0"}}), 0);
  EXPECT_EQ(lifetime({{"cache-control", "max-age=5"},
                      {"expires", FormatHttpDate(now + 200)}}),
            5);
  EXPECT_EQ(lifetime({}), -1);
  EXPECT_EQ(lifetime({}, 30), 30);
  // A far Expires is bounded like delta-seconds (2^31), not overflowed into
  // "already expired".
  EXPECT_EQ(lifetime({{"date", FormatHttpDate(now)},
                      {"expires", "Fri, 31 Dec 9999 23:59:59 GMT"}}),
            int64_t{1} << 31);

  // Age: apparent age from Date, or the upstream's Age plus the delay.
  int64_t t = 1000 * kSecond;
  EXPECT_EQ(CorrectedInitialAge(Map({{"date", FormatHttpDate(990)}}), t, t),
            10 * kSecond);
  EXPECT_EQ(
      CorrectedInitialAge(Map({{"date", FormatHttpDate(1000)}, {"age", "7"}}),
                          t - kSecond, t),
      8 * kSecond);
  // An Age too large to parse is 2^31 (RFC 9111 1.2.2): stale, not new.
  EXPECT_EQ(CorrectedInitialAge(Map({{"age", "99999999999999999999"}}), t, t),
            (int64_t{1} << 31) * kSecond);
  EXPECT_EQ(CorrectedInitialAge(Map({{"age", "-5"}}), t, t), 0);
  // A list: its first member (RFC 9111 5.1); it was ignored (age 0).
  EXPECT_EQ(CorrectedInitialAge(Map({{"age", "50, 60"}}), t, t), 50 * kSecond);
  EXPECT_EQ(CorrectedInitialAge(Map({{"age", "50"}, {"age", "60"}}), t, t), 50 * kSecond);
}

// ---- storing and serving ----

TEST_F(CacheTest, MissStoresHitServesWithAge) {
  auto factory = Compile();
  EXPECT_TRUE(factory->observes_upstream());
  EXPECT_EQ(factory->phase(), http::FilterPhase::kCache);
  EXPECT_EQ(Fill(*factory, 200,
                 Fresh(60, {{"ETag", "\"v1\""}, {"Connection", "x"}}), "hello"),
            "Miss");
  Advance(30);
  Served hit = FromCache(*factory);
  EXPECT_EQ(hit.status, "Hit");
  EXPECT_EQ(hit.code, 200);
  EXPECT_EQ(hit.body, "hello");
  EXPECT_EQ(hit.age, "30");

  // The host is compared without case and one trailing dot (the host
  // routing reads); its port as a number; the path and query exactly.
  EXPECT_EQ(FromCache(*factory, {}, "/items?id=2").status, "<upstream>");
  for (const char* host :
       {"api.EXAMPLE.com:8443", "api.example.com.:8443", "api.example.com:08443"}) {
    Client other_host(*factory);
    other_host.request.Set("host", host);
    other_host.Start();
    EXPECT_TRUE(other_host.answered()) << host;
  }
  // The port goes upstream in Host as sent: an upstream that builds links
  // from it answers per port (before: one client's `Host: api.example.com:666`
  // answer was served to everyone).
  for (const char* host : {"api.example.com", "api.example.com:666", "api.example.com:443"}) {
    Client other_port(*factory);
    other_port.request.Set("host", host);
    other_port.Start();
    EXPECT_TRUE(other_port.went_upstream()) << host;
  }
  // The scheme's own port (80 here) is no port: links work alike.
  Client portless(*factory, "/items?id=3");
  portless.request.Set("host", "api.example.com");
  portless.Start();
  ASSERT_TRUE(portless.went_upstream());
  portless.Respond(200, Fresh(60), "plain");
  for (const char* host : {"api.example.com:80", "api.example.com.:080", "api.example.com:"}) {
    Client default_port(*factory, "/items?id=3");
    default_port.request.Set("host", host);
    default_port.Start();
    EXPECT_TRUE(default_port.answered()) << host;
  }
  Advance(31);  // 61 s old: stale, goes upstream
  Client expired(*factory);
  expired.Start();
  ASSERT_TRUE(expired.went_upstream());
  EXPECT_EQ(expired.upstream_header("If-None-Match"), "\"v1\"");
  expired.Respond(200, Fresh(60), "v2");
  EXPECT_EQ(expired.cache_status(), "Expired");
  EXPECT_EQ(FromCache(*factory).body, "v2");
}

TEST_F(CacheTest, StoredHeadersLeaveHopByHopAndAgeOut) {
  auto factory = Compile();
  Fill(*factory, 200,
       Fresh(60, {{"Age", "5"}, {"Keep-Alive", "timeout=5"}, {"X-App", "1"}}));
  Client c(*factory);
  c.Start();
  ASSERT_TRUE(c.answered());
  c.Reply();
  EXPECT_EQ(c.header("X-App"), "1");
  EXPECT_EQ(c.header("Keep-Alive"), "<none>");
  EXPECT_EQ(c.header("Age"), "5");  // the upstream's Age counts
  EXPECT_EQ(c.header("Date"), DateAt(kStart));
}

TEST_F(CacheTest, DefaultTtlAndExpires) {
  auto plain = Compile();
  EXPECT_EQ(Fill(*plain, 200, {{"Content-Type", "text/plain"}}), "Miss");
  EXPECT_EQ(FromCache(*plain).status,
            "<upstream>");  // no freshness: not stored

  v1::CacheConfig config;
  config.mutable_default_ttl()->set_seconds(10);
  auto ttl = Compile(config);
  Fill(*ttl, 200, {{"Content-Type", "text/plain"}});
  Advance(9);
  EXPECT_EQ(FromCache(*ttl).status, "Hit");
  Advance(1);
  EXPECT_EQ(FromCache(*ttl).status, "<upstream>");

  // Expires against Date: an upstream whose clock is 1 h behind still
  // gives 100 s.
  auto expires = Compile();
  Fill(*expires, 200,
       {{"Date", DateAt(fake_now - 3600 * kSecond)},
        {"Expires", DateAt(fake_now - 3500 * kSecond)}},
       "x", {}, "/e");
  EXPECT_EQ(FromCache(*expires, {}, "/e").status,
            "<upstream>");  // apparent age 3600
  Fill(*expires, 200,
       {{"Date", DateAt(fake_now)},
        {"Expires", DateAt(fake_now + 100 * kSecond)}},
       "x", {}, "/f");
  Advance(99);
  EXPECT_EQ(FromCache(*expires, {}, "/f").status, "Hit");
}

TEST_F(CacheTest, SMaxageWinsForASharedCache) {
  auto factory = Compile();
  Fill(*factory, 200,
       {{"Cache-Control", "max-age=600, s-maxage=10"},
        {"Date", DateAt(fake_now)}});
  Advance(11);
  EXPECT_EQ(FromCache(*factory).status, "<upstream>");
}

TEST_F(CacheTest, WhatIsNotStored) {
  auto factory = Compile();
  struct Case {
    std::string name;
    int status;
    Fields response;
    Fields request;
  } cases[] = {
      {"no-store", 200, Fresh(60, {{"Cache-Control", "no-store"}}), {}},
      {"private", 200, {{"Cache-Control", "private, max-age=60"}}, {}},
      {"set-cookie", 200, Fresh(60, {{"Set-Cookie", "a=b"}}), {}},
      {"set-cookie2", 200, Fresh(60, {{"Set-Cookie2", "a=b; Version=1"}}), {}},
      // Never usable: validated before every use with no validator, or
      // stale on arrival with neither validator nor stale use (they took
      // room in the budget, pushing out entries that answer).
      {"no-cache without validator", 200, Fresh(60, {{"Cache-Control", "no-cache"}}), {}},
      {"stale on arrival", 200, Fresh(60, {{"Age", "70"}}), {}},
      {"vary *", 200, Fresh(60, {{"Vary", "*"}}), {}},
      {"authorization", 200, Fresh(60), {{"Authorization", "Bearer x"}}},
      {"500", 500, Fresh(60), {}},
      {"302", 302, Fresh(60), {}},
  };
  int i = 0;
  for (const Case& c : cases) {
    std::string path = absl::StrCat("/n", i++);
    EXPECT_EQ(Fill(*factory, c.status, c.response, "x", c.request, path),
              "Miss")
        << c.name;
    EXPECT_EQ(FromCache(*factory, c.request, path).status, "<upstream>")
        << c.name;
  }
  // Authorization with public (or s-maxage, must-revalidate): stored.
  Fill(*factory, 200, {{"Cache-Control", "public, max-age=60"}}, "x",
       {{"Authorization", "a"}}, "/auth");
  EXPECT_EQ(FromCache(*factory, {{"Authorization", "a"}}, "/auth").status,
            "Hit");
  // A 404 is heuristically cacheable: stored with explicit freshness.
  Fill(*factory, 404, Fresh(60), "gone", {}, "/404");
  Served s = FromCache(*factory, {}, "/404");
  EXPECT_EQ(s.code, 404);
  EXPECT_EQ(s.body, "gone");
}

TEST_F(CacheTest, SetCookieStoredWithoutIt) {
  v1::CacheConfig config;
  config.set_cache_set_cookie(true);
  auto factory = Compile(config);
  Fill(*factory, 200, Fresh(60, {{"Set-Cookie", "session=1"}}));
  Client c(*factory);
  c.Start();
  ASSERT_TRUE(c.answered());
  c.Reply();
  EXPECT_EQ(c.header("Set-Cookie"), "<none>");
  EXPECT_EQ(c.cache_status(), "Hit");
}

TEST_F(CacheTest, ContentTypesAndStatuses) {
  v1::CacheConfig config;
  config.add_content_types("application/json");
  config.add_content_types("image/*");
  config.add_statuses(200);
  auto factory = Compile(config);
  Fill(*factory, 200,
       {{"Cache-Control", "max-age=60"}, {"Content-Type", "text/html"}}, "x",
       {}, "/html");
  Fill(*factory, 200,
       {{"Cache-Control", "max-age=60"},
        {"Content-Type", "Application/JSON; charset=utf-8"}},
       "x", {}, "/json");
  Fill(*factory, 200,
       {{"Cache-Control", "max-age=60"}, {"Content-Type", "image/png"}}, "x",
       {}, "/png");
  Fill(*factory, 404,
       {{"Cache-Control", "max-age=60"}, {"Content-Type", "image/png"}}, "x",
       {}, "/404");
  EXPECT_EQ(FromCache(*factory, {}, "/html").status, "<upstream>");
  EXPECT_EQ(FromCache(*factory, {}, "/json").status, "Hit");
  EXPECT_EQ(FromCache(*factory, {}, "/png").status, "Hit");
  EXPECT_EQ(FromCache(*factory, {}, "/404").status, "<upstream>");
}

TEST_F(CacheTest, VarySelectsTheVariant) {
  auto factory = Compile();
  Fill(*factory, 200, Fresh(60, {{"Vary", "Accept-Encoding"}}), "gzipped",
       {{"Accept-Encoding", "gzip"}});
  Fill(*factory, 200, Fresh(60, {{"Vary", "Accept-Encoding"}}), "plain", {});
  EXPECT_EQ(FromCache(*factory, {{"accept-encoding", "gzip"}}).body, "gzipped");
  EXPECT_EQ(FromCache(*factory, {}).body, "plain");
  EXPECT_EQ(FromCache(*factory, {{"Accept-Encoding", "br"}}).status,
            "<upstream>");
}

// Cookie lines are one cookie list joined with "; " (RFC 6265 5.4, RFC 9113
// 8.2.3), not with ", " as a list field's: two lines "a=1" and "b=2" are
// the variant of "a=1; b=2", not of the single cookie "a=1, b=2".
TEST_F(CacheTest, VaryOnCookieJoinsItsLinesAsOneCookieList) {
  auto factory = Compile();
  Fill(*factory, 200, Fresh(60, {{"Vary", "Cookie"}}), "one cookie", {{"Cookie", "a=1, b=2"}});
  EXPECT_EQ(FromCache(*factory, {{"Cookie", "a=1"}, {"Cookie", "b=2"}}).status, "<upstream>");
  Fill(*factory, 200, Fresh(60, {{"Vary", "Cookie"}}), "two cookies", {{"Cookie", "a=1; b=2"}});
  EXPECT_EQ(FromCache(*factory, {{"Cookie", "a=1"}, {"Cookie", "b=2"}}).body, "two cookies");
  EXPECT_EQ(FromCache(*factory, {{"Cookie", "a=1, b=2"}}).body, "one cookie");
}

// A key keeps at most kMaxVariants: a Vary on a field each client sends
// differently evicts the key's least recently used variant, so a lookup
// never scans thousands under the shard's lock.
TEST_F(CacheTest, AKeyKeepsABoundedNumberOfVariants) {
  auto factory = Compile();
  const size_t cap = ResponseStore::kMaxVariants;
  const uint64_t evictions = ResponseStore::Global().evictions();
  auto variant = [](size_t i) { return Fields{{"X-V", absl::StrCat("v", i)}}; };
  for (size_t i = 0; i < cap; ++i) {
    Fill(*factory, 200, Fresh(60, {{"Vary", "X-V"}}), absl::StrCat("body", i), variant(i));
  }
  EXPECT_EQ(ResponseStore::Global().evictions(), evictions);
  EXPECT_EQ(FromCache(*factory, variant(0)).body, "body0");  // v0 is now recent
  Fill(*factory, 200, Fresh(60, {{"Vary", "X-V"}}), "one more", variant(cap));
  EXPECT_EQ(ResponseStore::Global().evictions(), evictions + 1);
  EXPECT_EQ(FromCache(*factory, variant(cap)).body, "one more");
  EXPECT_EQ(FromCache(*factory, variant(0)).body, "body0");
  EXPECT_EQ(FromCache(*factory, variant(1)).status, "<upstream>");  // the least recent
  EXPECT_EQ(FromCache(*factory, variant(2)).body, "body2");
}

TEST_F(CacheTest, KeyParts) {
  v1::CacheConfig config;
  config.add_query_params("page");
  config.add_query_params("id");
  config.add_key_headers("Accept-Language");
  auto factory = Compile(config);
  Fill(*factory, 200, Fresh(60), "en", {{"Accept-Language", "en"}},
       "/k?id=1&page=2&utm=x");
  EXPECT_EQ(
      FromCache(*factory, {{"Accept-Language", "en"}}, "/k?page=2&utm=y&id=1")
          .body,
      "en");
  EXPECT_EQ(
      FromCache(*factory, {{"Accept-Language", "de"}}, "/k?id=1&page=2").status,
      "<upstream>");
  EXPECT_EQ(
      FromCache(*factory, {{"Accept-Language", "en"}}, "/k?id=1&page=3").status,
      "<upstream>");
}

// Route names are unique only within a virtual host: the same name in
// another route table or virtual host is another route, and an answer over
// http (a redirect to https) is not one over https. All three shared
// entries: one listener's upstream answered another's clients.
TEST_F(CacheTest, AnotherTableVirtualHostOrSchemeIsAnotherKey) {
  auto factory = Compile();
  auto client = [&](std::string_view table, std::string_view vhost, std::string_view scheme) {
    auto c = std::make_unique<Client>(*factory);
    c->callbacks.info_.route_table = table;
    c->callbacks.info_.virtual_host = vhost;
    c->callbacks.info_.scheme = scheme;
    return c;
  };
  auto fill = client("public", "0", "http");
  fill.get()->Start();
  ASSERT_TRUE(fill->went_upstream());
  fill->Respond(200, Fresh(60), "public, http");
  for (auto [table, vhost, scheme] :
       std::vector<std::array<std::string_view, 3>>{
           {"internal", "0", "http"}, {"public", "1", "http"}, {"public", "0", "https"}}) {
    auto other = client(table, vhost, scheme);
    other->Start();
    EXPECT_TRUE(other->went_upstream()) << table << " " << vhost << " " << scheme;
  }
  auto same = client("public", "0", "http");
  same->Start();
  EXPECT_TRUE(same->answered());
  EXPECT_EQ(same->callbacks.body_, "public, http");
}

// query_params names are matched as the upstream's framework reads them:
// `%70age=1` is page=1. It was keyed as "no page" and then served to
// every request without one (cache poisoning).
TEST_F(CacheTest, AQueryParameterNameIsMatchedDecoded) {
  v1::CacheConfig config;
  config.add_query_params("page");
  config.add_query_params("sort_by");
  auto factory = Compile(config);
  Fill(*factory, 200, Fresh(60), "page one", {}, "/q?%70age=1");
  EXPECT_EQ(FromCache(*factory, {}, "/q?page=1").body, "page one");
  EXPECT_EQ(FromCache(*factory, {}, "/q").status, "<upstream>");
  Fill(*factory, 200, Fresh(60), "sorted", {}, "/s?sort%5Fby=x");
  EXPECT_EQ(FromCache(*factory, {}, "/s?sort_by=x").body, "sorted");
  EXPECT_EQ(FromCache(*factory, {}, "/s?sort_by=y").status, "<upstream>");
  EXPECT_EQ(FromCache(*factory, {}, "/s").status, "<upstream>");
}

// A query holding another spelling an upstream reads as a keyed parameter
// (PHP's `page[]`, ASP.NET's `PAGE`, one after a ';' for Rack 2, older
// Python and Go) is neither served from nor stored in the cache: the key
// holds `page=1`, the upstream may have answered `page=EVIL` (before: that
// answer was served to every `?page=1`).
TEST_F(CacheTest, AQueryReadOtherwiseByUpstreamsIsNotCached) {
  v1::CacheConfig config;
  config.add_query_params("page");
  auto factory = Compile(config);
  for (const char* attack : {"/z?page=1&page[]=EVIL", "/z?page=1&x=1;page=EVIL",
                             "/z?page=1&PAGE=EVIL", "/z?page=1&pa%67e[x]=EVIL",
                             "/z?page=1&Pag%65=EVIL"}) {
    Client c(*factory, attack);
    c.Start();
    ASSERT_TRUE(c.went_upstream()) << attack;
    c.Respond(200, Fresh(60), "evil");
    EXPECT_EQ(c.cache_status(), "Bypass") << attack;
    EXPECT_EQ(FromCache(*factory, {}, "/z?page=1").status, "<upstream>") << attack;
  }
  // Other parameters, unkeyed, as before.
  Fill(*factory, 200, Fresh(60), "one", {}, "/z?page=1&utm=x;y");
  EXPECT_EQ(FromCache(*factory, {}, "/z?page=1").body, "one");
}

TEST_F(CacheTest, KeyConsumerGivesEachConsumerItsEntries) {
  auto factory = Compile();  // by default
  auth::Consumer alice, bob;
  alice.name = "alice";
  bob.name = "bob";
  Client fill(*factory);
  fill.callbacks.info_.consumer = &alice;
  fill.Start();
  fill.Respond(200, Fresh(60), "for alice");
  Client again(*factory);
  again.callbacks.info_.consumer = &alice;
  again.Start();
  EXPECT_TRUE(again.answered());
  EXPECT_EQ(again.callbacks.body_, "for alice");
  Client other(*factory);
  other.callbacks.info_.consumer = &bob;
  other.Start();
  EXPECT_TRUE(other.went_upstream());
  // A consumer deleted and made again under the same name with other
  // credentials (another content hash) is another caller.
  auth::Consumer new_alice = alice;
  new_alice.content_hash = alice.content_hash + 1;
  Client recreated(*factory);
  recreated.callbacks.info_.consumer = &new_alice;
  recreated.Start();
  EXPECT_TRUE(recreated.went_upstream());
  // Shared when the policy says so.
  v1::CacheConfig shared;
  shared.set_key_consumer(false);
  auto shared_factory = Compile(shared);
  Client first(*shared_factory, "/shared");
  first.callbacks.info_.consumer = &alice;
  first.Start();
  first.Respond(200, Fresh(60), "for everyone");
  Client second(*shared_factory, "/shared");
  second.callbacks.info_.consumer = &bob;
  second.Start();
  EXPECT_TRUE(second.answered());
}

// RFC 9111 3.5 on the request as the client sent it. An authentication
// policy removes the Authorization it checked (jwt, basic-auth) before the
// cache runs; a token holder's answer was stored and served to every other
// token holder when no consumer keyed it.
TEST_F(CacheTest, AnAuthenticatedRequestsAnswerIsSharedOnlyWhenTheUpstreamSaysSo) {
  auto factory = Compile();
  // The Authorization was removed, no consumer: not stored.
  Client removed(*factory, "/me");
  removed.callbacks.info_.client_authorization = true;
  removed.Start();
  removed.Respond(200, Fresh(60), "alice's");
  EXPECT_EQ(removed.cache_status(), "Miss");
  EXPECT_EQ(FromCache(*factory, {}, "/me").status, "<upstream>");
  // A credential accepted elsewhere (a jwt cookie), no consumer: not stored.
  Client cookie(*factory, "/me");
  cookie.callbacks.SetConsumer(nullptr, /*anonymous=*/false);
  cookie.Start();
  cookie.Respond(200, Fresh(60), "alice's");
  EXPECT_EQ(FromCache(*factory, {}, "/me").status, "<upstream>");
  // Nor for an anonymous consumer (shared by every anonymous caller).
  auth::Consumer guest, alice, bob;
  guest.name = "guest";
  alice.name = "alice";
  bob.name = "bob";
  Client anonymous(*factory, "/me");
  anonymous.callbacks.info_.client_authorization = true;
  anonymous.callbacks.SetConsumer(&guest, /*anonymous=*/true);
  anonymous.Start();
  anonymous.Respond(200, Fresh(60), "someone's");
  Client other_guest(*factory, "/me");
  other_guest.callbacks.SetConsumer(&guest, /*anonymous=*/true);
  other_guest.Start();
  EXPECT_TRUE(other_guest.went_upstream());
  // The upstream says a shared cache may keep it: stored.
  Client shared(*factory, "/public");
  shared.callbacks.info_.client_authorization = true;
  shared.Start();
  shared.Respond(200, Fresh(60, {{"Cache-Control", "public"}}), "everyone's");
  EXPECT_EQ(FromCache(*factory, {}, "/public").status, "Hit");
  // Keyed by the consumer it identified, with the credential consumed:
  // the caller's own entry.
  Client own(*factory, "/mine");
  own.callbacks.info_.client_authorization = true;
  own.callbacks.SetConsumer(&alice, /*anonymous=*/false);
  own.Start();
  own.Respond(200, Fresh(60), "alice's");
  Client again(*factory, "/mine");
  again.callbacks.SetConsumer(&alice, false);
  again.Start();
  EXPECT_TRUE(again.answered());
  Client other(*factory, "/mine");
  other.callbacks.SetConsumer(&bob, false);
  other.Start();
  EXPECT_TRUE(other.went_upstream());
  // What the upstream was told about the caller besides its name (a jwt
  // claim's header): one consumer's tokens with other roles get other
  // answers.
  Client admin(*factory, "/roles");
  admin.callbacks.SetConsumer(&alice, false);
  admin.callbacks.SetConsumerClaims("x-user-roles=admin\n");
  admin.Start();
  admin.Respond(200, Fresh(60), "the admin view");
  Client admin_again(*factory, "/roles");
  admin_again.callbacks.SetConsumer(&alice, false);
  admin_again.callbacks.SetConsumerClaims("x-user-roles=admin\n");
  admin_again.Start();
  EXPECT_TRUE(admin_again.answered());
  Client reader(*factory, "/roles");
  reader.callbacks.SetConsumer(&alice, false);
  reader.callbacks.SetConsumerClaims("x-user-roles=read\n");
  reader.Start();
  EXPECT_TRUE(reader.went_upstream());
  // Still going upstream, the Authorization may be what the answer is for.
  Client forwarded(*factory, "/fwd", {{"Authorization", "Bearer a"}});
  forwarded.callbacks.info_.client_authorization = true;
  forwarded.callbacks.SetConsumer(&alice, false);
  forwarded.Start();
  forwarded.Respond(200, Fresh(60), "for token a");
  Client same_consumer(*factory, "/fwd");
  same_consumer.callbacks.SetConsumer(&alice, false);
  same_consumer.Start();
  EXPECT_TRUE(same_consumer.went_upstream());
  // With key_consumer: false the consumers share entries: a request that
  // came with Authorization only when the upstream marks the answer
  // shareable; one with another credential (an apikey) as configured.
  v1::CacheConfig unkeyed;
  unkeyed.set_key_consumer(false);
  auto unkeyed_factory = Compile(unkeyed);
  Client basic(*unkeyed_factory, "/basic");
  basic.callbacks.info_.client_authorization = true;
  basic.callbacks.SetConsumer(&alice, false);
  basic.Start();
  basic.Respond(200, Fresh(60), "alice's");
  Client bobs(*unkeyed_factory, "/basic");
  bobs.callbacks.SetConsumer(&bob, false);
  bobs.Start();
  EXPECT_TRUE(bobs.went_upstream());
  Client apikey(*unkeyed_factory, "/apikey");
  apikey.callbacks.SetConsumer(&alice, false);
  apikey.Start();
  apikey.Respond(200, Fresh(60), "the same for all");
  Client bob_apikey(*unkeyed_factory, "/apikey");
  bob_apikey.callbacks.SetConsumer(&bob, false);
  bob_apikey.Start();
  EXPECT_TRUE(bob_apikey.answered());
}

TEST_F(CacheTest, HeadIsAnsweredFromGetAndNeverStored) {
  auto factory = Compile();
  Client head_miss(*factory, "/items?id=1", {}, "HEAD");
  head_miss.Start();
  ASSERT_TRUE(head_miss.went_upstream());
  head_miss.Respond(200, Fresh(60), "");
  EXPECT_EQ(head_miss.cache_status(), "Miss");
  EXPECT_EQ(FromCache(*factory).status, "<upstream>");  // HEAD stored nothing

  Fill(*factory, 200, Fresh(60), "body");
  Served head = FromCache(*factory, {}, "/items?id=1", "HEAD");
  EXPECT_EQ(head.status, "Hit");
  EXPECT_EQ(head.code, 200);

  Served post = FromCache(*factory, {}, "/items?id=1", "POST");
  EXPECT_EQ(post.status, "<upstream>");
  Client post_client(*factory, "/items?id=1", {}, "POST");
  post_client.Start();
  post_client.Respond(200, Fresh(60));
  EXPECT_EQ(post_client.cache_status(), "Bypass");
}

// A GET with a body is neither served nor stored (as Envoy's cache): a hit
// came before the body was held and checked by request-validation, whose
// 400 then turned into a hit, and a body still coming held the fill while
// every other caller of the key waited.
TEST_F(CacheTest, AGetWithABodyBypassesTheCache) {
  auto factory = Compile();
  Fill(*factory, 200, Fresh(60), "body");
  for (int64_t length : {int64_t{20}, int64_t{-1}}) {  // declared, or chunked / HTTP/2
    Client with_body(*factory);
    with_body.callbacks.info_.request_content_length = length;
    with_body.Start();
    EXPECT_TRUE(with_body.went_upstream()) << length;
    with_body.Respond(200, Fresh(60), "other");
    EXPECT_EQ(with_body.cache_status(), "Bypass") << length;
  }
  EXPECT_EQ(FromCache(*factory).status, "Hit");  // the entry stayed as it was
}

TEST_F(CacheTest, UnsafeMethodInvalidates) {
  auto factory = Compile();
  Fill(*factory, 200, Fresh(60), "v1");
  Client failed_put(*factory, "/items?id=1", {}, "PUT");
  failed_put.Start();
  failed_put.Respond(500, {});
  EXPECT_EQ(FromCache(*factory).status, "Hit");
  Client put(*factory, "/items?id=1", {}, "PUT");
  put.Start();
  put.Respond(204, {});
  EXPECT_EQ(put.cache_status(), "Bypass");
  EXPECT_EQ(FromCache(*factory).status, "<upstream>");
}

TEST_F(CacheTest, ClientConditionalsGet304FromTheCache) {
  auto factory = Compile();
  std::string lm = DateAt(kStart - 3600 * kSecond);
  Fill(*factory, 200, Fresh(60, {{"ETag", "\"v1\""}, {"Last-Modified", lm}}),
       "body");
  Client inm(*factory, "/items?id=1", {{"If-None-Match", "\"v0\", W/\"v1\""}});
  inm.Start();
  ASSERT_TRUE(inm.answered());
  inm.Reply();
  EXPECT_EQ(inm.response_status, 304);
  EXPECT_EQ(inm.response_body, "");
  EXPECT_EQ(inm.header("ETag"), "\"v1\"");
  EXPECT_EQ(inm.header("Cache-Control"), "max-age=60");
  EXPECT_EQ(inm.header("Content-Type"), "<none>");
  EXPECT_EQ(inm.header("Age"), "0");
  EXPECT_EQ(inm.cache_status(), "Hit");

  EXPECT_EQ(FromCache(*factory, {{"If-None-Match", "\"v0\""}}).code, 200);
  // Two field lines are one list (RFC 9110 5.3): the second one counts too.
  EXPECT_EQ(FromCache(*factory, {{"If-None-Match", "\"v0\""}, {"If-None-Match", "W/\"v1\""}})
                .code,
            304);
  EXPECT_EQ(FromCache(*factory, {{"If-Modified-Since", lm}}).code, 304);
  EXPECT_EQ(FromCache(*factory,
                      {{"If-Modified-Since", DateAt(kStart - 7200 * kSecond)}})
                .code,
            200);
  // If-None-Match decides when both are sent.
  EXPECT_EQ(FromCache(*factory,
                      {{"If-None-Match", "\"v0\""}, {"If-Modified-Since", lm}})
                .code,
            200);
}

// If-Match and If-Unmodified-Since are for the origin's representation
// (RFC 9110 13.2.2): a stored 2xx that fails them gets the 412 the origin
// would send, as nginx answers from its cache. Before: a 200 from the cache.
TEST_F(CacheTest, ClientPreconditionsAreEvaluatedOnTheStoredResponse) {
  auto factory = Compile();
  std::string lm = DateAt(kStart - 3600 * kSecond);
  Fill(*factory, 200, Fresh(60, {{"ETag", "\"v1\""}, {"Last-Modified", lm}}), "body");
  Served failed = FromCache(*factory, {{"If-Match", "\"other\""}});
  EXPECT_EQ(failed.code, 412);
  EXPECT_EQ(failed.status, "Hit");
  EXPECT_EQ(FromCache(*factory, {{"If-Match", "\"v0\", \"v1\""}}).code, 200);
  EXPECT_EQ(FromCache(*factory, {{"If-Match", "*"}}).code, 200);
  // The strong comparison: a weak tag never matches.
  EXPECT_EQ(FromCache(*factory, {{"If-Match", "W/\"v1\""}}).code, 412);
  EXPECT_EQ(FromCache(*factory, {{"If-Match", "\"x\""}, {"If-Match", "\"v1\""}}).code, 200);
  EXPECT_EQ(FromCache(*factory, {{"If-Unmodified-Since", DateAt(kStart - 7200 * kSecond)}}).code,
            412);
  EXPECT_EQ(FromCache(*factory, {{"If-Unmodified-Since", lm}}).code, 200);
  EXPECT_EQ(FromCache(*factory, {{"If-Unmodified-Since", "yesterday"}}).code, 200);
  // If-Match decides when both are sent.
  EXPECT_EQ(FromCache(*factory, {{"If-Match", "\"v1\""},
                                 {"If-Unmodified-Since", DateAt(kStart - 7200 * kSecond)}})
                .code,
            200);
}

TEST_F(CacheTest, StaleEntryIsRevalidated) {
  auto factory = Compile();
  std::string lm = DateAt(kStart - 3600 * kSecond);
  Fill(*factory, 200,
       Fresh(10, {{"ETag", "\"v1\""}, {"Last-Modified", lm}, {"X-Old", "1"}}),
       "body");
  Advance(20);
  Client c(*factory);
  c.Start();
  ASSERT_TRUE(c.went_upstream());
  EXPECT_EQ(c.upstream_header("If-None-Match"), "\"v1\"");
  EXPECT_EQ(c.upstream_header("If-Modified-Since"), lm);
  EXPECT_FALSE(c.Respond(304, {{"Cache-Control", "max-age=100"},
                               {"ETag", "\"v1\""},
                               {"Date", DateAt(fake_now)},
                               {"X-New", "2"}}));
  EXPECT_EQ(c.response_status, 200);
  EXPECT_EQ(c.response_body, "body");
  EXPECT_EQ(c.cache_status(), "Revalidated");
  EXPECT_EQ(c.header("X-Old"), "1");
  EXPECT_EQ(c.header("X-New"), "2");
  EXPECT_EQ(c.header("Cache-Control"), "max-age=100");

  Advance(90);  // fresh again by the 304's max-age
  Served hit = FromCache(*factory);
  EXPECT_EQ(hit.status, "Hit");
  EXPECT_EQ(hit.age, "90");

  // A client's own conditional on a stale entry: the entry's validators go
  // instead (RFC 9111 4.3.2), the 304 refreshes the entry, and the client
  // is answered from it. Before, its 304 passed through and the entry
  // stayed stale for every revalidating client.
  Advance(20);
  Client own(*factory, "/items?id=1", {{"If-None-Match", "\"v1\""}});
  own.Start();
  ASSERT_TRUE(own.went_upstream());
  EXPECT_EQ(own.upstream_header("If-None-Match"), "\"v1\"");
  EXPECT_EQ(own.upstream_header("If-Modified-Since"), lm);
  EXPECT_FALSE(own.Respond(304, {{"ETag", "\"v1\""}, {"Cache-Control", "max-age=100"}}));
  EXPECT_EQ(own.response_status, 304);  // its own conditional holds
  EXPECT_EQ(own.cache_status(), "Revalidated");
  EXPECT_EQ(FromCache(*factory).status, "Hit");  // refreshed
  // One whose conditional does not hold gets the refreshed entry whole.
  Advance(200);
  Client other(*factory, "/items?id=1", {{"If-None-Match", "\"old\""}});
  other.Start();
  ASSERT_TRUE(other.went_upstream());
  EXPECT_EQ(other.upstream_header("If-None-Match"), "\"v1\"");
  EXPECT_FALSE(other.Respond(304, {{"ETag", "\"v1\""}, {"Cache-Control", "max-age=100"}}));
  EXPECT_EQ(other.response_status, 200);
  EXPECT_EQ(other.response_body, "body");
}

// A Set-Cookie in the upstream's 304 is the revalidating client's: it gets
// it, and the refreshed entry is not stored (as a response with one on a
// miss). Before: the cookie was dropped and the entry stored.
TEST_F(CacheTest, ASetCookieInA304GoesToItsClientAndIsNotStored) {
  auto factory = Compile();
  Fill(*factory, 200, Fresh(10, {{"ETag", "\"v1\""}}), "body");
  Advance(20);
  Client c(*factory);
  c.Start();
  ASSERT_TRUE(c.went_upstream());
  EXPECT_FALSE(c.Respond(304, {{"ETag", "\"v1\""}, {"Cache-Control", "max-age=100"},
                               {"Set-Cookie", "s=1"}}));
  EXPECT_EQ(c.response_status, 200);
  EXPECT_EQ(c.response_body, "body");
  EXPECT_EQ(c.cache_status(), "Revalidated");
  EXPECT_EQ(c.header("Set-Cookie"), "s=1");
  // Not refreshed: the next client revalidates again, and gets no cookie.
  Client next(*factory);
  next.Start();
  EXPECT_TRUE(next.went_upstream());
  EXPECT_FALSE(next.Respond(304, {{"ETag", "\"v1\""}, {"Cache-Control", "max-age=100"}}));
  EXPECT_EQ(next.header("Set-Cookie"), "<none>");
  EXPECT_EQ(FromCache(*factory).status, "Hit");  // refreshed by that one
}

// RFC 9111 3.5 for a 304 too: the upstream's 304 to a request with
// Authorization answers that client, and refreshes the shared entry only
// when it says public, s-maxage or must-revalidate. Before, its fields (a
// user's) and its lifetime were stored and served to everyone.
TEST_F(CacheTest, AnAuthenticatedRequestsThreeOhFourRefreshesTheEntryOnlyWhenShareable) {
  auto factory = Compile();
  Fill(*factory, 200, Fresh(1, {{"ETag", "\"e1\""}}), "body");
  Advance(2);
  Client alice(*factory, "/items?id=1", {{"Authorization", "Bearer a"}});
  alice.Start();
  ASSERT_TRUE(alice.went_upstream());
  EXPECT_EQ(alice.upstream_header("If-None-Match"), "\"e1\"");
  EXPECT_FALSE(alice.Respond(304, {{"ETag", "\"e1\""}, {"Cache-Control", "max-age=60"},
                                   {"X-User", "alice"}}));
  EXPECT_EQ(alice.response_status, 200);
  EXPECT_EQ(alice.header("X-User"), "alice");
  // Not stored: the next client revalidates, and sees no X-User.
  Client next(*factory);
  next.Start();
  ASSERT_TRUE(next.went_upstream());
  EXPECT_FALSE(next.Respond(304, {{"ETag", "\"e1\""}, {"Cache-Control", "max-age=60"}}));
  EXPECT_EQ(next.header("X-User"), "<none>");
  EXPECT_EQ(FromCache(*factory).status, "Hit");
  // One that says s-maxage may refresh it.
  Advance(61);
  Client shared(*factory, "/items?id=1", {{"Authorization", "Bearer a"}});
  shared.Start();
  ASSERT_TRUE(shared.went_upstream());
  EXPECT_FALSE(shared.Respond(304, {{"ETag", "\"e1\""}, {"Cache-Control", "s-maxage=60"}}));
  EXPECT_EQ(FromCache(*factory).status, "Hit");
}

// RFC 9111 4.3.4: a 304 that names another entity-tag than the entry's
// does not select it and must not update it. Before, it refreshed the
// entry's fields and lifetime whatever tag it named.
TEST_F(CacheTest, A304NamingAnotherETagDoesNotRefreshTheEntry) {
  auto factory = Compile();
  Fill(*factory, 200, Fresh(10, {{"ETag", "\"v1\""}, {"X-Old", "1"}}), "body");
  Advance(20);
  Client c(*factory);
  c.Start();
  ASSERT_TRUE(c.went_upstream());
  EXPECT_EQ(c.upstream_header("If-None-Match"), "\"v1\"");
  EXPECT_FALSE(c.Respond(304, {{"ETag", "\"v2\""}, {"Cache-Control", "max-age=100"},
                               {"X-New", "2"}}));
  EXPECT_EQ(c.response_status, 200);  // the stored response, as it is
  EXPECT_EQ(c.response_body, "body");
  EXPECT_EQ(c.header("X-Old"), "1");
  EXPECT_EQ(c.header("X-New"), "<none>");
  // Not refreshed, and gone: the next request fetches the whole response.
  Client next(*factory);
  next.Start();
  ASSERT_TRUE(next.went_upstream());
  EXPECT_EQ(next.upstream_header("If-None-Match"), "<none>");
  EXPECT_TRUE(next.Respond(200, Fresh(100, {{"ETag", "\"v2\""}}), "new body"));
  EXPECT_EQ(FromCache(*factory).status, "Hit");
  // A weak tag selects the entry by weak comparison; a strong one by strong.
  Advance(200);
  Client weak(*factory);
  weak.Start();
  ASSERT_TRUE(weak.went_upstream());
  EXPECT_FALSE(weak.Respond(304, {{"ETag", "W/\"v2\""}, {"Cache-Control", "max-age=100"}}));
  EXPECT_EQ(weak.response_body, "new body");
  EXPECT_EQ(FromCache(*factory).status, "Hit");  // refreshed
  // An ETag field that is no one entity-tag selects nothing: `*` (which,
  // stored, went back as If-None-Match: * and was revalidated forever),
  // a list, a tag without quotes. Before: each refreshed the entry.
  Advance(101);
  for (const char* tag : {"*", "\"v3\", \"v2\"", "\"v2\", \"v3\"", "v2", "two lines"}) {
    Fill(*factory, 200, Fresh(1, {{"ETag", "\"v2\""}}), "body v2");
    Advance(2);
    Client odd(*factory);
    odd.Start();
    ASSERT_TRUE(odd.went_upstream()) << tag;
    EXPECT_EQ(odd.upstream_header("If-None-Match"), "\"v2\"") << tag;
    // Two ETag lines, the first the entry's: a list too (before: the first
    // was matched, the entry refreshed, and both lines stored).
    const Fields two = {{"ETag", "\"v2\""}, {"ETag", "*"}, {"Cache-Control", "max-age=100"}};
    EXPECT_FALSE(odd.Respond(304, std::string(tag) == "two lines"
                                      ? two
                                      : Fields{{"ETag", tag}, {"Cache-Control", "max-age=100"}}))
        << tag;
    EXPECT_EQ(odd.response_body, "body v2") << tag;
    EXPECT_EQ(odd.cache_status(), "Expired") << tag;  // not confirmed (before: Revalidated)
    Client after(*factory);
    after.Start();
    ASSERT_TRUE(after.went_upstream()) << tag;
    EXPECT_EQ(after.upstream_header("If-None-Match"), "<none>") << tag;  // removed
    EXPECT_TRUE(after.Respond(200, Fresh(100, {{"ETag", "\"v2\""}}), "x")) << tag;
    Advance(101);
  }
}

// A 304 with a Last-Modified and no ETag selects the entry only when it
// is the entry's (RFC 9111 4.3.4: a weak validator must correspond). Before:
// a later date refreshed it, and the old body went out under that date.
TEST_F(CacheTest, A304NamingAnotherLastModifiedDoesNotRefreshTheEntry) {
  auto factory = Compile();
  const char* jan1 = "Mon, 01 Jan 2024 00:00:00 GMT";
  Fill(*factory, 200, Fresh(1, {{"Last-Modified", jan1}}), "jan 1");
  Advance(2);
  Client later(*factory);
  later.Start();
  ASSERT_TRUE(later.went_upstream());
  EXPECT_EQ(later.upstream_header("If-Modified-Since"), jan1);
  EXPECT_FALSE(later.Respond(
      304, {{"Last-Modified", "Tue, 02 Jan 2024 00:00:00 GMT"}, {"Cache-Control", "max-age=100"}}));
  EXPECT_EQ(later.response_body, "jan 1");
  EXPECT_EQ(later.header("Last-Modified"), jan1);
  EXPECT_EQ(later.cache_status(), "Expired");
  Client after(*factory);
  after.Start();
  ASSERT_TRUE(after.went_upstream());
  EXPECT_EQ(after.upstream_header("If-Modified-Since"), "<none>");  // removed
  EXPECT_TRUE(after.Respond(200, Fresh(1, {{"Last-Modified", jan1}}), "jan 1"));
  // The same instant, spelled in another HTTP-date form: selected.
  Advance(2);
  Client same(*factory);
  same.Start();
  ASSERT_TRUE(same.went_upstream());
  EXPECT_FALSE(same.Respond(
      304, {{"Last-Modified", "Monday, 01-Jan-24 00:00:00 GMT"}, {"Cache-Control", "max-age=100"}}));
  EXPECT_EQ(same.cache_status(), "Revalidated");
  EXPECT_EQ(FromCache(*factory).status, "Hit");
}

// A 304 that says no-store (or private) ends the entry it revalidated:
// before, the old entry stayed, revalidated on every request and ready to
// answer stale-if-error after the origin said not to keep it.
TEST_F(CacheTest, A304SayingNoStoreRemovesTheEntry) {
  auto factory = Compile();
  Fill(*factory, 200, Fresh(10, {{"ETag", "\"v1\""}, {"Cache-Control", "stale-if-error=600"}}),
       "body");
  Advance(20);
  Client c(*factory);
  c.Start();
  ASSERT_TRUE(c.went_upstream());
  EXPECT_FALSE(c.Respond(304, {{"ETag", "\"v1\""}, {"Cache-Control", "no-store"}}));
  EXPECT_EQ(c.cache_status(), "Revalidated");
  EXPECT_EQ(c.response_body, "body");
  Client next(*factory);
  next.Start();
  ASSERT_TRUE(next.went_upstream());
  EXPECT_EQ(next.upstream_header("If-None-Match"), "<none>");  // nothing left to revalidate
  EXPECT_TRUE(next.Fail(503));  // and no stale entry answers the error
  EXPECT_EQ(next.cache_status(), "Miss");
}

// A stale-while-revalidate refresh goes without the triggering client's
// conditionals: no client sees its answer, and a 304 or 412 to them
// refreshed nothing.
TEST_F(CacheTest, ABackgroundRefreshCarriesNoClientConditional) {
  auto factory = Compile();
  Fill(*factory, 200, Fresh(10, {{"Cache-Control", "stale-while-revalidate=60"}}), "old");
  Advance(20);
  Client refresh(*factory, "/items?id=1",
                 {{"If-None-Match", "\"q\""}, {"If-Match", "\"z\""},
                  {"If-Modified-Since", DateAt(fake_now)}});
  refresh.callbacks.info_.background = true;
  refresh.Start();
  ASSERT_TRUE(refresh.went_upstream());
  EXPECT_EQ(refresh.upstream_header("If-None-Match"), "<none>");
  EXPECT_EQ(refresh.upstream_header("If-Match"), "<none>");
  EXPECT_EQ(refresh.upstream_header("If-Modified-Since"), "<none>");
  refresh.Respond(200, Fresh(10), "new");
  EXPECT_EQ(FromCache(*factory).body, "new");
}

// The forwarded host and port a trusting listener passes on are part of
// the key: an upstream that builds links from them answered one client's
// X-Forwarded-Host to every later one (cache poisoning).
TEST_F(CacheTest, ForwardedHostAndPortAreKeyed) {
  auto factory = Compile();
  Fill(*factory, 200, Fresh(60), "evil", {{"X-Forwarded-Host", "evil.example"}});
  EXPECT_EQ(FromCache(*factory).status, "<upstream>");
  EXPECT_EQ(FromCache(*factory, {{"X-Forwarded-Host", "evil.example"}}).body, "evil");
  Fill(*factory, 200, Fresh(60), "port", {{"X-Forwarded-Port", "441"}});
  EXPECT_EQ(FromCache(*factory, {{"X-Forwarded-Port", "442"}}).status, "<upstream>");
  Fill(*factory, 200, Fresh(60), "fwd", {{"Forwarded", "host=evil2.example"}});
  EXPECT_EQ(FromCache(*factory, {{"Forwarded", "host=other.example"}}).status, "<upstream>");
  Fill(*factory, 200, Fresh(60), "prefix", {{"X-Forwarded-Prefix", "/evil"}});
  EXPECT_EQ(FromCache(*factory, {{"X-Forwarded-Prefix", "/shop"}}).status, "<upstream>");
  Fill(*factory, 200, Fresh(60), "plain");
  EXPECT_EQ(FromCache(*factory).body, "plain");
}

TEST_F(CacheTest, NoCacheIsStoredButRevalidatedEveryTime) {
  auto factory = Compile();
  Fill(*factory, 200, {{"Cache-Control", "no-cache"}, {"ETag", "\"n\""}},
       "body");
  Client c(*factory);
  c.Start();
  ASSERT_TRUE(c.went_upstream());
  EXPECT_EQ(c.upstream_header("If-None-Match"), "\"n\"");
  EXPECT_FALSE(c.Respond(304, {{"ETag", "\"n\""}}));
  EXPECT_EQ(c.cache_status(), "Revalidated");
  EXPECT_EQ(c.response_body, "body");
}

TEST_F(CacheTest, StaleIfError) {
  auto factory = Compile();
  Fill(*factory, 200, Fresh(10, {{"Cache-Control", "stale-if-error=60"}}),
       "old");
  Advance(30);
  Client c503(*factory);
  c503.Start();
  ASSERT_TRUE(c503.went_upstream());
  EXPECT_FALSE(c503.Respond(503, {}, "down"));
  EXPECT_EQ(c503.response_status, 200);
  EXPECT_EQ(c503.response_body, "old");
  EXPECT_EQ(c503.cache_status(), "Stale");
  EXPECT_EQ(c503.header("Age"), "30");

  Client failed(*factory);
  failed.Start();
  EXPECT_FALSE(failed.Fail(502));
  EXPECT_EQ(failed.response_body, "old");
  EXPECT_EQ(failed.cache_status(), "Stale");

  Advance(50);  // 80 s: past max-age + stale-if-error
  Client late(*factory);
  late.Start();
  EXPECT_TRUE(late.Fail(504));
  EXPECT_EQ(late.cache_status(), "Expired");

  // must-revalidate forbids it, even with the policy's default.
  v1::CacheConfig config;
  config.mutable_stale_if_error()->set_seconds(600);
  auto strict = Compile(config);
  Fill(*strict, 200, Fresh(10, {{"Cache-Control", "must-revalidate"}}), "old",
       {}, "/s");
  Fill(*strict, 200, Fresh(10), "old", {}, "/d");
  Advance(30);
  Client must(*strict, "/s");
  must.Start();
  EXPECT_TRUE(must.Respond(500, {}, "err"));
  Client by_default(*strict, "/d");
  by_default.Start();
  EXPECT_FALSE(by_default.Respond(500, {}, "err"));
  EXPECT_EQ(by_default.response_body, "old");
}

TEST_F(CacheTest, StaleWhileRevalidate) {
  auto factory = Compile();
  Fill(*factory, 200,
       Fresh(10, {{"Cache-Control", "stale-while-revalidate=60"}}), "old");
  Advance(20);
  Client first(*factory);
  first.Start();
  ASSERT_TRUE(first.answered());
  first.Reply();
  EXPECT_EQ(first.cache_status(), "Stale");
  EXPECT_EQ(first.response_body, "old");
  EXPECT_EQ(first.callbacks.background_refreshes_, 1);
  Client second(*factory);
  second.Start();
  ASSERT_TRUE(second.answered());
  EXPECT_EQ(second.callbacks.background_refreshes_,
            0);  // one refresh at a time

  // The background exchange goes upstream and stores what it gets.
  Client refresh(*factory);
  refresh.callbacks.info_.background = true;
  refresh.Start();
  ASSERT_TRUE(refresh.went_upstream());
  refresh.Respond(200, Fresh(10), "new");
  Served after = FromCache(*factory);
  EXPECT_EQ(after.status, "Hit");
  EXPECT_EQ(after.body, "new");

  Advance(100);  // past the window: upstream
  EXPECT_EQ(FromCache(*factory).status, "<upstream>");
}

// A refresh that stores nothing (here a 503) ends its claim: the next
// stale use starts another at once, rather than 30 s later.
TEST_F(CacheTest, AFailedRefreshLetsTheNextStaleUseRefreshAgain) {
  auto factory = Compile();
  Fill(*factory, 200,
       Fresh(10, {{"Cache-Control", "stale-while-revalidate=60"}}), "old");
  Advance(20);
  {
    Client first(*factory);
    first.Start();
    ASSERT_TRUE(first.answered());
    first.Reply();
    EXPECT_EQ(first.callbacks.background_refreshes_, 1);
  }
  {
    Client refresh(*factory);
    refresh.callbacks.info_.background = true;
    refresh.Start();
    ASSERT_TRUE(refresh.went_upstream());
    refresh.Respond(503, {}, "down");
  }
  Client again(*factory);
  again.Start();
  ASSERT_TRUE(again.answered());
  again.Reply();
  EXPECT_EQ(again.cache_status(), "Stale");
  EXPECT_EQ(again.response_body, "old");
  EXPECT_EQ(again.callbacks.background_refreshes_, 1);
}

TEST_F(CacheTest, RequestCacheControlIgnoredUnlessHonoured) {
  auto ignoring = Compile();
  Fill(*ignoring, 200, Fresh(60));
  EXPECT_EQ(FromCache(*ignoring, {{"Cache-Control", "no-cache"}}).status,
            "Hit");

  v1::CacheConfig config;
  config.set_honor_request_cache_control(true);
  auto honouring = Compile(config);
  Fill(*honouring, 200, Fresh(60, {{"Cache-Control", "max-stale=0"}}));
  Advance(30);
  EXPECT_EQ(FromCache(*honouring).status, "Hit");
  EXPECT_EQ(FromCache(*honouring, {{"Cache-Control", "max-age=10"}}).status,
            "<upstream>");
  EXPECT_EQ(FromCache(*honouring, {{"Cache-Control", "min-fresh=40"}}).status,
            "<upstream>");
  EXPECT_EQ(FromCache(*honouring, {{"Cache-Control", "no-cache"}}).status,
            "<upstream>");
  Client no_store(*honouring, "/items?id=1", {{"Cache-Control", "no-store"}});
  no_store.Start();
  no_store.Respond(200, Fresh(60));
  EXPECT_EQ(no_store.cache_status(), "Bypass");
  Advance(40);  // 70 s: stale, but the client accepts 20 s more
  EXPECT_EQ(FromCache(*honouring, {{"Cache-Control", "max-stale=20"}}).status,
            "Stale");
  // only-if-cached: a usable stored response, or 504 without going upstream.
  EXPECT_EQ(FromCache(*honouring, {{"Cache-Control", "only-if-cached, max-stale=20"}}).status,
            "Stale");
  Client only(*honouring, "/never-stored", {{"Cache-Control", "only-if-cached"}});
  only.Start();
  EXPECT_FALSE(only.went_upstream());
  EXPECT_EQ(only.callbacks.status_, 504);
}

// ---- coalescing ----

TEST_F(CacheTest, ConcurrentMissesWaitForTheFirst) {
  auto factory = Compile();
  Client first(*factory);
  first.Start();
  ASSERT_TRUE(first.went_upstream());
  Client second(*factory);
  EXPECT_EQ(second.Start(), http::FilterStatus::kStopIteration);
  first.Respond(200, Fresh(60), "shared");
  ASSERT_TRUE(second.callbacks.RunPosted());
  ASSERT_TRUE(second.answered());
  second.Reply();
  EXPECT_EQ(second.cache_status(), "Hit");
  EXPECT_EQ(second.response_body, "shared");
  EXPECT_EQ(second.callbacks.continues_, 0);
}

// A waiter is answered from the filler's entry only when it is fresh:
// one to be validated before every use (no-cache, or stale on arrival) was
// the filler's answer, not the waiter's (RFC 9111 4). Before: served, and
// labelled Hit.
TEST_F(CacheTest, WaitersGoUpstreamWhenTheFillersEntryIsNotFresh) {
  auto factory = Compile();
  int i = 0;
  for (const Fields& response :
       {Fields{{"Cache-Control", "no-cache"}, {"ETag", "\"n\""}},
        Fields{{"Cache-Control", "max-age=0"}, {"ETag", "\"z\""}},
        Fresh(10, {{"Age", "100"}, {"ETag", "\"o\""}})}) {
    const std::string path = absl::StrCat("/w", i++);
    Client filler(*factory, path);
    filler.Start();
    ASSERT_TRUE(filler.went_upstream());
    Client waiter(*factory, path);
    EXPECT_EQ(waiter.Start(), http::FilterStatus::kStopIteration);
    filler.Respond(200, response, "filled");
    ASSERT_TRUE(waiter.callbacks.RunPosted());
    EXPECT_FALSE(waiter.answered()) << path;
    EXPECT_EQ(waiter.callbacks.continues_, 1) << path;
  }
}

TEST_F(CacheTest, WaitersGoUpstreamWhenTheFillerGivesUp) {
  auto factory = Compile();
  // Cut short: the filler is destroyed without OnResponseEnd.
  auto cut = std::make_unique<Client>(*factory);
  cut->Start();
  Client waiter(*factory);
  EXPECT_EQ(waiter.Start(), http::FilterStatus::kStopIteration);
  http::HeaderMap head = Map(Fresh(60));
  cut->filter().OnUpstreamHeaders(200, head, cut->callbacks);
  cut->filter().OnResponseData("par", cut->callbacks);
  cut.reset();
  ASSERT_TRUE(waiter.callbacks.RunPosted());
  EXPECT_EQ(waiter.callbacks.continues_, 1);
  EXPECT_FALSE(waiter.answered());
  waiter.Respond(200, Fresh(60), "mine");  // and it may store
  EXPECT_EQ(waiter.cache_status(), "Miss");
  EXPECT_EQ(FromCache(*factory).body, "mine");

  // Uncacheable: released at the head.
  Client filler(*factory, "/u");
  filler.Start();
  Client w2(*factory, "/u");
  EXPECT_EQ(w2.Start(), http::FilterStatus::kStopIteration);
  http::HeaderMap private_head = Map({{"Cache-Control", "private"}});
  filler.filter().OnUpstreamHeaders(200, private_head, filler.callbacks);
  ASSERT_TRUE(w2.callbacks.RunPosted());
  EXPECT_EQ(w2.callbacks.continues_, 1);
}

// Requests that waited for a filler that failed still have the stale entry
// for stale-if-error (RFC 5861 4). Before, only the filler got it: its
// waiters got the origin's 503.
TEST_F(CacheTest, WaitersOfAFailedRefillAreAnsweredFromTheStaleEntry) {
  auto factory = Compile();
  Fill(*factory, 200, Fresh(10, {{"Cache-Control", "stale-if-error=60"}}), "old");
  Advance(30);
  auto filler = std::make_unique<Client>(*factory);
  filler->Start();
  ASSERT_TRUE(filler->went_upstream());
  Client waiter(*factory);
  EXPECT_EQ(waiter.Start(), http::FilterStatus::kStopIteration);
  filler.reset();  // its exchange failed without a storable response
  ASSERT_TRUE(waiter.callbacks.RunPosted());
  EXPECT_EQ(waiter.callbacks.continues_, 1);
  EXPECT_FALSE(waiter.Respond(503, {}, "down"));
  EXPECT_EQ(waiter.response_status, 200);
  EXPECT_EQ(waiter.response_body, "old");
  EXPECT_EQ(waiter.cache_status(), "Stale");
}

// The filler's upstream answered 5xx and it served the stale entry: its
// waiters get that entry too, without each trying the failing upstream
// again (Varnish's grace). Before: every waiter went upstream first, so 20
// waiters were 20 more requests to an origin that was failing.
TEST_F(CacheTest, WaitersOfAFillerThatServedStaleOnErrorGetItWithoutGoingUpstream) {
  auto factory = Compile();
  Fill(*factory, 200, Fresh(10, {{"Cache-Control", "stale-if-error=60"}}), "old");
  Advance(30);
  Client filler(*factory);
  filler.Start();
  ASSERT_TRUE(filler.went_upstream());
  Client waiter(*factory);
  EXPECT_EQ(waiter.Start(), http::FilterStatus::kStopIteration);
  EXPECT_FALSE(filler.Respond(503, {}, "down"));
  EXPECT_EQ(filler.cache_status(), "Stale");
  ASSERT_TRUE(waiter.callbacks.RunPosted());
  EXPECT_EQ(waiter.callbacks.continues_, 0);  // not upstream
  ASSERT_TRUE(waiter.answered());
  waiter.Reply();
  EXPECT_EQ(waiter.response_body, "old");
  EXPECT_EQ(waiter.cache_status(), "Stale");
}

// A 304 to a client's own conditional (no entry to revalidate) says
// nothing of what the next response will be: the key's misses still wait
// for one another. Before, it turned coalescing off for 30 s.
// The origin changed its Vary: of two stored responses that both match, the
// most recent answers (RFC 9111 4.1); the older, stale one used to hide it.
TEST_F(CacheTest, OfMatchingVariantsTheMostRecentAnswers) {
  auto factory = Compile();
  const Fields both = {{"X-A", "1"}, {"X-B", "1"}};
  Fill(*factory, 200, Fresh(1, {{"Vary", "X-A"}}), "old", both);
  Advance(5);
  Client again(*factory, "/items?id=1", both);
  again.Start();
  ASSERT_TRUE(again.went_upstream());
  again.Respond(200, Fresh(3600, {{"Vary", "X-B"}}), "new");
  Served served = FromCache(*factory, both);
  EXPECT_EQ(served.status, "Hit");
  EXPECT_EQ(served.body, "new");
  // Proxy-Authentication-Info, like Proxy-Authenticate, is not stored.
  Fill(*factory, 200, Fresh(60, {{"Proxy-Authentication-Info", "nextnonce=\"abc\""}}), "p", {},
       "/pai");
  Client hit(*factory, "/pai");
  hit.Start();
  ASSERT_TRUE(hit.answered());
  EXPECT_EQ(hit.header("Proxy-Authentication-Info"), "<none>");
}

TEST_F(CacheTest, A304ToAClientsConditionalKeepsCoalescing) {
  auto factory = Compile();
  Client conditional(*factory, "/c", {{"If-None-Match", "\"x\""}});
  conditional.Start();
  ASSERT_TRUE(conditional.went_upstream());
  EXPECT_TRUE(conditional.Respond(304, {{"ETag", "\"x\""}}));
  Client first(*factory, "/c");
  first.Start();
  ASSERT_TRUE(first.went_upstream());
  Client second(*factory, "/c");
  EXPECT_EQ(second.Start(), http::FilterStatus::kStopIteration);
}

TEST_F(CacheTest, AKeyWhoseResponseCouldNotBeStoredIsNotCoalescedForAWhile) {
  auto factory = Compile();
  Client filler(*factory, "/u");
  filler.Start();
  http::HeaderMap private_head = Map({{"Cache-Control", "private"}});
  filler.filter().OnUpstreamHeaders(200, private_head, filler.callbacks);
  // Concurrent misses of /u now go upstream together, none waits.
  Client a(*factory, "/u");
  a.Start();
  EXPECT_TRUE(a.went_upstream());
  Client b(*factory, "/u");
  b.Start();
  EXPECT_TRUE(b.went_upstream());
  // 30 s later, misses wait for one another again.
  Advance(31);
  Client c(*factory, "/u");
  c.Start();
  EXPECT_TRUE(c.went_upstream());
  Client d(*factory, "/u");
  EXPECT_EQ(d.Start(), http::FilterStatus::kStopIteration);
  // A storable response ends the marker at once and answers the waiter.
  c.Respond(200, Fresh(60), "now public");
  ASSERT_TRUE(d.callbacks.RunPosted());
  ASSERT_TRUE(d.answered());
}

TEST_F(CacheTest, LockTimeoutSendsTheWaiterUpstream) {
  v1::CacheConfig config;
  config.mutable_lock_timeout()->set_seconds(2);
  auto factory = Compile(config);
  Client filler(*factory);
  filler.Start();
  Client waiter(*factory);
  EXPECT_EQ(waiter.Start(), http::FilterStatus::kStopIteration);
  EXPECT_FALSE(
      waiter.callbacks.RunPosted(1, absl::Milliseconds(50)));  // not yet
  Advance(3);
  WakeDeadlinesForTesting();
  ASSERT_TRUE(waiter.callbacks.RunPosted());
  EXPECT_EQ(waiter.callbacks.continues_, 1);
  // The filler's later response resolves nobody twice.
  filler.Respond(200, Fresh(60), "late");
  EXPECT_FALSE(waiter.callbacks.RunPosted(1, absl::Milliseconds(20)));
  // The waiter's own request went upstream at the timeout: its response's
  // age counts from then, not from when it began to wait (RFC 9111 4.2.3).
  Advance(1);
  waiter.Respond(200, Fresh(60), "waited");
  Served served = FromCache(*factory);
  EXPECT_EQ(served.body, "waited");
  EXPECT_EQ(served.age, "1");
}

TEST_F(CacheTest, FiveHundredConcurrentClientsOneUpstreamRequest) {
  auto factory = Compile();
  constexpr int kThreads = 10, kPerThread = 50;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kThreads * kPerThread; ++i) {
    clients.push_back(std::make_unique<Client>(*factory, "/cold"));
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) clients[t * kPerThread + i]->Start();
    });
  }
  for (auto& t : threads) t.join();
  Client* filler = nullptr;
  int upstream = 0;
  for (auto& c : clients) {
    if (c->went_upstream()) {
      ++upstream;
      filler = c.get();
    }
  }
  ASSERT_EQ(upstream, 1);
  filler->Respond(200, Fresh(60), "cold");
  int hits = 0;
  for (auto& c : clients) {
    if (c.get() == filler) continue;
    ASSERT_TRUE(c->callbacks.RunPosted());
    hits += c->answered() && c->callbacks.body_ == "cold";
  }
  EXPECT_EQ(hits, kThreads * kPerThread - 1);
}

// ---- the store ----

TEST_F(CacheTest, LruEvictionUnderTheBudget) {
  ResponseStore store(1, uint64_t{1} << 30);
  auto ns = store.Acquire("test");
  http::HeaderMap request;
  auto put = [&](const std::string& name) {
    auto e = std::make_shared<Entry>();
    e->path = name;
    e->body = std::string(1000, 'x');
    e->lifetime = 60 * kSecond;
    e->Account(name.size());
    store.Insert(ns->prefix() + name, e, 0);
    return e->bytes;
  };
  uint64_t size = put("a");
  store.SetBudget(3 * size);
  put("b");
  put("c");
  EXPECT_EQ(store.entries(), 3);
  ASSERT_NE(store.Lookup(ns->prefix() + "a", request),
            nullptr);  // a is now the most recent
  put("d");
  EXPECT_EQ(store.entries(), 3);
  EXPECT_LE(store.bytes(), 3 * size);
  EXPECT_EQ(store.evictions(), 1u);
  EXPECT_EQ(store.Lookup(ns->prefix() + "b", request),
            nullptr);  // the least recent went
  EXPECT_NE(store.Lookup(ns->prefix() + "a", request), nullptr);

  // An entry larger than the whole budget is not stored, and evicts
  // nothing (it evicted every entry, then itself).
  {
    auto big = std::make_shared<Entry>();
    big->path = "big";
    big->body = std::string(4 * size, 'x');
    big->lifetime = 60 * kSecond;
    big->Account(3);
    store.Insert(ns->prefix() + "big", big, 0);
    EXPECT_EQ(store.entries(), 3);
    EXPECT_EQ(store.evictions(), 1u);
    EXPECT_EQ(store.Lookup(ns->prefix() + "big", request), nullptr);
  }

  // An entry being served survives its eviction.
  std::shared_ptr<const Entry> held = store.Lookup(ns->prefix() + "c", request);
  store.SetBudget(0);
  put("e");
  EXPECT_EQ(store.entries(), 0);
  EXPECT_EQ(held->body.size(), 1000u);
}

// Over the budget, the least recently used entries of the whole store go,
// whatever their shard: never the entry just stored while it fits, nor a
// recently used one because it shares the new entry's shard.
TEST_F(CacheTest, EvictionTakesTheStoresLeastRecentlyUsedAcrossShards) {
  ResponseStore store(ResponseStore::kShards, uint64_t{1} << 30);
  auto ns = store.Acquire("test");
  http::HeaderMap request;
  auto make = [&](const std::string& name, size_t body) {
    auto e = std::make_shared<Entry>();
    e->path = name;
    e->body = std::string(body, 'x');
    e->lifetime = 60 * kSecond;
    e->Account(ns->prefix().size() + name.size());
    return e;
  };
  uint64_t small = 0;
  for (int i = 0; i < 200; ++i) {
    auto e = make("s" + std::to_string(i), 1000);
    small = e->bytes;
    store.Insert(ns->prefix() + "s" + std::to_string(i), e, 0);
  }
  store.SetBudget(200 * small + 100);
  // The newest half is used again: the oldest half is what may go.
  for (int i = 100; i < 200; ++i) {
    ASSERT_NE(store.Lookup(ns->prefix() + "s" + std::to_string(i), request), nullptr);
  }
  auto big = make("big", 30 * 1000);
  store.Insert(ns->prefix() + "big", big, 0);
  EXPECT_NE(store.Lookup(ns->prefix() + "big", request), nullptr);  // stored
  EXPECT_LE(store.bytes(), 200 * small + 100);
  for (int i = 100; i < 200; ++i) {
    EXPECT_NE(store.Lookup(ns->prefix() + "s" + std::to_string(i), request), nullptr) << i;
  }
  // What went is the oldest: s0, s1, ..., as many as make room for it.
  const uint64_t needed = (big->bytes - 100 + small - 1) / small;
  int gone = 0;
  while (gone < 100 && store.Lookup(ns->prefix() + "s" + std::to_string(gone), request) == nullptr) {
    ++gone;
  }
  EXPECT_EQ(static_cast<uint64_t>(gone), needed);
  EXPECT_EQ(store.evictions(), needed);
}

TEST_F(CacheTest, ObjectOverMaxObjectBytesPassesThrough) {
  v1::CacheConfig config;
  config.set_max_object_bytes(10);
  auto factory = Compile(config);
  Client big(*factory, "/big");
  big.Start();
  big.Respond(200, Fresh(60), "0123456789A");
  EXPECT_EQ(big.response_body, "0123456789A");
  EXPECT_EQ(FromCache(*factory, {}, "/big").status, "<upstream>");
  Fill(*factory, 200, Fresh(60), "0123456789", {}, "/fits");
  EXPECT_EQ(FromCache(*factory, {}, "/fits").status, "Hit");
}

uint64_t Purge(std::string route, std::string host, std::string path,
               std::string prefix) {
  sluice::cache::PurgeSelector selector;
  selector.route = std::move(route);
  selector.host = std::move(host);
  selector.path = std::move(path);
  selector.prefix = std::move(prefix);
  return sluice::cache::Purge(selector);
}

TEST_F(CacheTest, PurgeByRoutePrefixAndPath) {
  auto factory = Compile();
  for (const char* path : {"/a/1", "/a/2?x=1", "/b/1"})
    Fill(*factory, 200, Fresh(60), "x", {}, path);
  EXPECT_EQ(Purge("other", "", "", ""), 0u);
  EXPECT_EQ(Purge("items", "", "/a/2?x=1", ""), 1u);
  EXPECT_EQ(FromCache(*factory, {}, "/a/2?x=1").status, "<upstream>");
  EXPECT_EQ(Purge("", "other.example.com", "", ""), 0u);
  EXPECT_EQ(Purge("", "API.example.com", "", "/a/"), 1u);
  EXPECT_EQ(FromCache(*factory, {}, "/b/1").status, "Hit");
  EXPECT_EQ(Purge("items", "", "", ""), 1u);
  EXPECT_EQ(ResponseStore::Global().entries(), 0);
  // A Host with a trailing dot is the same host (the data plane drops the
  // selector's; before, such an entry could not be purged by host).
  Client dotted(*factory, "/c");
  dotted.request.Set("host", "api.example.com.:8443");
  dotted.Start();
  ASSERT_TRUE(dotted.went_upstream());
  dotted.Respond(200, Fresh(60), "x");
  EXPECT_EQ(ResponseStore::Global().entries(), 1);
  EXPECT_EQ(Purge("", "api.example.com", "", ""), 1u);
  EXPECT_EQ(ResponseStore::Global().entries(), 0);
}

// --path names one key: the path and query as the key holds them, not the
// spelling of the request that filled it.
TEST_F(CacheTest, PurgeByPathComparesWhatTheKeyHolds) {
  v1::CacheConfig config;
  config.add_query_params("sort");
  config.add_query_params("page");
  auto keyed = Compile(config);
  Fill(*keyed, 200, Fresh(60), "x", {}, "/kh/q3?sort=a&page=1&utm=x");
  EXPECT_EQ(Purge("", "", "/kh/q3?page=2&sort=a", ""), 0u);
  EXPECT_EQ(Purge("", "", "/kh/q3?page=1", ""), 0u);
  EXPECT_EQ(Purge("", "", "/kh/q3?page=1&sort=a", ""), 1u);
  EXPECT_EQ(FromCache(*keyed, {}, "/kh/q3?sort=a&page=1").status, "<upstream>");
  // Without query_params the whole query counts; an empty one is none.
  auto whole = Compile();
  Fill(*whole, 200, Fresh(60), "x", {}, "/c/pg?");
  EXPECT_EQ(Purge("", "", "/c/pg?a=1", ""), 0u);
  EXPECT_EQ(Purge("", "", "/c/pg", ""), 1u);
  EXPECT_EQ(KeyedPath("/a?b=1&a=2&a=3&c", {"a", "c"}), "/a?a=2&a=3&c");
  EXPECT_EQ(KeyedPath("/a?%70age=1", {"page"}), "/a?page=1");
  EXPECT_EQ(KeyedPath("/a?x=1", {"page"}), "/a");
}

TEST_F(CacheTest, EntriesFollowThePolicyIdentity) {
  v1::CacheConfig config;
  config.add_key_headers("x-a");
  auto v1 = Compile(config);
  Fill(*v1, 200, Fresh(60), "kept");
  auto v2 = Compile(config);  // the next config version, same policy
  v1.reset();
  EXPECT_EQ(FromCache(*v2).body, "kept");

  config.add_key_headers("x-b");  // the route's policy changes
  auto v3 = Compile(config);
  EXPECT_EQ(FromCache(*v3).status, "<upstream>");
  EXPECT_EQ(ResponseStore::Global().entries(), 1);
  v2.reset();  // the last policy of the old identity goes, and its entries
  EXPECT_EQ(ResponseStore::Global().entries(), 0);
}

TEST_F(CacheTest, Metrics) {
  stats::StatsStore stats;
  SetStatsStore(&stats);
  auto factory = Compile();
  Fill(*factory, 200, Fresh(60), "x");
  FromCache(*factory);
  FromCache(*factory);
  std::string text = stats.RenderPrometheus();
  SetStatsStore(nullptr);
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_cache_responses_total{route_table=\"main\",route=\"items\",virtual_host=\"0\",status=\"hit\"} 2"))
      << text;
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_cache_responses_total{route_table=\"main\",route=\"items\",virtual_host=\"0\",status=\"miss\"} 1"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "sluice_cache_entries 1")) << text;
  EXPECT_TRUE(absl::StrContains(text, "# HELP sluice_cache_bytes")) << text;
}

// Route names are unique only within a virtual host: routes of one name
// in other tables or virtual hosts count apart. Before: one series for
// every route named "items" (or "0/0", the default name).
TEST_F(CacheTest, MetricsKeepRoutesOfTheSameNameApart) {
  stats::StatsStore stats;
  SetStatsStore(&stats);
  auto factory = Compile();
  for (const char* table : {"main", "second"}) {
    Client fill(*factory);
    fill.callbacks.info_.route_table = table;
    fill.Start();
    ASSERT_TRUE(fill.went_upstream()) << table;
    fill.Respond(200, Fresh(60), "x");
    for (int i = 0; i < (table == std::string("main") ? 1 : 2); ++i) {
      Client hit(*factory);
      hit.callbacks.info_.route_table = table;
      hit.Start();
      ASSERT_TRUE(hit.answered()) << table;
      hit.Reply();
    }
  }
  std::string text = stats.RenderPrometheus();
  SetStatsStore(nullptr);
  for (const char* series :
       {"{route_table=\"main\",route=\"items\",virtual_host=\"0\",status=\"miss\"} 1",
        "{route_table=\"main\",route=\"items\",virtual_host=\"0\",status=\"hit\"} 1",
        "{route_table=\"second\",route=\"items\",virtual_host=\"0\",status=\"miss\"} 1",
        "{route_table=\"second\",route=\"items\",virtual_host=\"0\",status=\"hit\"} 2"}) {
    EXPECT_TRUE(absl::StrContains(text, absl::StrCat("sluice_cache_responses_total", series)))
        << series << "\n" << text;
  }
}

// ---- config rules ----

TEST_F(CacheTest, ConfigRulesNameTheField) {
  ASSERT_NE(api::FindPolicyValidator("cache"), nullptr);
  EXPECT_TRUE(Errors(v1::CacheConfig()).empty());
  auto only = [](const v1::CacheConfig& config) {
    auto errors = Errors(config);
    EXPECT_EQ(errors.size(), 1u);
    return errors.empty() ? api::PolicyConfigError{"<none>", ""} : errors[0];
  };
  v1::CacheConfig c;
  c.add_statuses(200);
  c.add_statuses(404);
  c.add_statuses(99);
  auto e = only(c);
  EXPECT_EQ(e.field, "statuses[2]");
  EXPECT_EQ(e.message, "99 is not an HTTP status");

  c.Clear();
  c.add_statuses(206);
  EXPECT_EQ(only(c).field, "statuses[0]");

  c.Clear();
  c.add_methods("get");
  c.add_methods("POST");
  e = only(c);
  EXPECT_EQ(e.field, "methods[1]");
  EXPECT_TRUE(absl::StrContains(e.message, "only GET and HEAD")) << e.message;

  // HEAD alone stores nothing: refused at apply, kept when stored.
  c.Clear();
  c.add_methods("head");
  EXPECT_TRUE(Errors(c).empty());
  std::vector<api::PolicyConfigError> at_apply;
  api::FindPolicyValidator("cache")->ValidateNew(c, &at_apply);
  ASSERT_EQ(at_apply.size(), 1u);
  EXPECT_EQ(at_apply[0].field, "methods");
  c.add_methods("GET");
  at_apply.clear();
  api::FindPolicyValidator("cache")->ValidateNew(c, &at_apply);
  EXPECT_TRUE(at_apply.empty());

  c.Clear();
  c.mutable_default_ttl()->set_seconds(-1);
  e = only(c);
  EXPECT_EQ(e.field, "default_ttl");
  EXPECT_EQ(e.message, "must not be negative");

  c.Clear();
  c.mutable_lock_timeout()->set_seconds(61);
  EXPECT_EQ(only(c).field, "lock_timeout");

  c.Clear();
  c.set_max_object_bytes(0);
  EXPECT_EQ(only(c).field, "max_object_bytes");
  c.set_max_object_bytes((uint64_t{64} << 20) + 1);
  EXPECT_EQ(only(c).field, "max_object_bytes");

  c.Clear();
  c.add_key_headers("bad header");
  EXPECT_EQ(only(c).field, "key_headers[0]");
  c.Clear();
  c.add_content_types("json");
  EXPECT_EQ(only(c).field, "content_types[0]");
  c.Clear();
  c.add_query_params("a=b");
  EXPECT_EQ(only(c).field, "query_params[0]");
  c.Clear();
  c.mutable_stale_if_error()->set_nanos(-5);
  EXPECT_EQ(only(c).field, "stale_if_error");
}

}  // namespace
}  // namespace sluice::policy::cache
