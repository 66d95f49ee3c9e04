// The `rate-limit` policy: its config rules, GCRA's arithmetic on a fake
// clock, key composition and the fallback bucket, the key cap, counters
// carried across compiles, and exactness under concurrent requests --
// through the registries the binaries use, with the clock replaced.
#include <algorithm>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/rate_limit/gcra_limiter_impl.h"
#include "dataplane/policy/rate_limit/internal.h"
#include "dataplane/policy/rate_limit/limiter_registry.h"
#include "dataplane/policy/rate_limit/rate_limit_config.pb.h"
#include "dataplane/policy/registry.h"
#include "tests/dataplane/policy/fake_callbacks.h"

namespace sluice::policy::rate_limit {
namespace {

using testing::FakeCallbacks;

constexpr int64_t kSecond = 1000000000;
constexpr int64_t kMinute = 60 * kSecond;

// The clock every policy compiled by these tests reads. Starts far from 0
// so that "long ago" and "now" differ.
std::atomic<int64_t> fake_now{1000 * kSecond};

class RateLimitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_now = 1000 * kSecond;
    SetClockForTesting([] { return fake_now.load(); });
  }
  void TearDown() override { SetClockForTesting(nullptr); }
};

v1::RateLimitConfig Config(std::string name,
                           std::vector<std::pair<uint64_t, v1::Limit::Unit>> limits,
                           std::vector<v1::RateLimitConfig::KeyPart> key = {}) {
  v1::RateLimitConfig config;
  config.set_name(std::move(name));
  for (const auto& [requests, per] : limits) {
    v1::Limit* limit = config.add_limits();
    limit->set_requests(requests);
    limit->set_per(per);
  }
  for (auto part : key) config.add_key(part);
  return config;
}

std::vector<api::PolicyConfigError> Errors(const v1::RateLimitConfig& config) {
  std::vector<api::PolicyConfigError> errors;
  api::FindPolicyValidator("rate-limit")->Validate(config, &errors);
  return errors;
}

std::shared_ptr<const http::FilterFactory> Compile(const v1::RateLimitConfig& config) {
  auto errors = Errors(config);
  EXPECT_TRUE(errors.empty()) << errors[0].field << ": " << errors[0].message;
  auto compiled = FindPolicyFactory("rate-limit")->Compile(config);
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return *compiled;
}

auth::Consumer MakeConsumer(std::string name) {
  auth::Consumer c;
  c.name = std::move(name);
  return c;
}
const auth::Consumer alice = MakeConsumer("alice");
const auth::Consumer bob = MakeConsumer("bob");

// One request through a fresh filter, and its response head.
struct Exchange {
  FakeCallbacks callbacks;
  http::HeaderMap request;
  http::HeaderMap response;
  http::FilterStatus status;

  Exchange(const http::FilterFactory& factory, const auth::Consumer* consumer,
           std::string client_ip = "192.0.2.1", std::string route = "orders",
           std::vector<std::pair<std::string, std::string>> headers = {},
           bool background = false) {
    callbacks.info_.consumer = consumer;
    callbacks.info_.background = background;
    ip_ = std::move(client_ip);
    route_ = std::move(route);
    callbacks.info_.client_ip = ip_;
    callbacks.info_.route_name = route_;
    for (const auto& [n, v] : headers) request.Add(n, v);
    auto filter = factory.CreateFilter();
    status = filter->OnRequestHeaders(request, callbacks);
    // The response hooks run on every response, the 429 included.
    int code = status == http::FilterStatus::kContinue ? 200 : callbacks.status_;
    if (status != http::FilterStatus::kContinue) response = callbacks.reply_headers_;
    filter->OnResponseHeaders(code, response, callbacks);
  }
  bool admitted() const { return status == http::FilterStatus::kContinue; }
  std::string header(std::string_view name) const {
    const std::string* v = response.Get(name);
    return v ? *v : "<none>";
  }
  size_t count(std::string_view name) const {
    size_t n = 0;
    for (const auto& f : response.fields())
      n += absl::EqualsIgnoreCase(f.name, absl::string_view(name.data(), name.size())) ? 1 : 0;
    return n;
  }

 private:
  std::string ip_;
  std::string route_;
};

int Admitted(const http::FilterFactory& factory, int attempts, const auth::Consumer* consumer,
             std::string ip = "192.0.2.1", std::string route = "orders") {
  int admitted = 0;
  for (int i = 0; i < attempts; ++i) admitted += Exchange(factory, consumer, ip, route).admitted();
  return admitted;
}

// ---- config rules ----

// A longer window's limit at or below a shorter one's leaves the shorter one
// nothing to refuse: refused at apply (as Kong does), kept when stored.
TEST_F(RateLimitTest, ALimitThatCouldNeverRefuseIsRefusedAtApply) {
  auto at_apply = [](const v1::RateLimitConfig& config) {
    std::vector<api::PolicyConfigError> errors;
    api::FindPolicyValidator("rate-limit")->ValidateNew(config, &errors);
    return errors;
  };
  auto dead = Config("", {{5, v1::Limit::MINUTE}, {4, v1::Limit::HOUR}});
  EXPECT_TRUE(Errors(dead).empty());  // a stored one still compiles
  auto errors = at_apply(dead);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].field, "limits[1].requests");
  EXPECT_EQ(errors[0].message,
            "4 per HOUR is not more than limits[0]'s 5 per MINUTE: the MINUTE limit could never "
            "refuse a request; drop it or raise this one");
  EXPECT_EQ(at_apply(Config("", {{10, v1::Limit::DAY}, {10, v1::Limit::SECOND}}))[0].field,
            "limits[0].requests");  // equal is dead too, in any order
  EXPECT_TRUE(at_apply(Config("", {{3, v1::Limit::SECOND}, {5, v1::Limit::MINUTE}})).empty());
  EXPECT_TRUE(at_apply(Config("", {{100, v1::Limit::HOUR}, {10, v1::Limit::SECOND}})).empty());
  // The shorter limit really never refuses alone: 5/min with 5/hour admits 5.
  auto factory = Compile(Config("never", {{5, v1::Limit::MINUTE}, {5, v1::Limit::HOUR}}));
  EXPECT_EQ(Admitted(*factory, 10, &alice), 5);
}

TEST_F(RateLimitTest, ConfigRulesNameTheField) {
  ASSERT_NE(api::FindPolicyValidator("rate-limit"), nullptr);
  EXPECT_TRUE(Errors(Config("", {{5, v1::Limit::MINUTE}})).empty());

  auto only = [](const v1::RateLimitConfig& config) {
    auto errors = Errors(config);
    EXPECT_EQ(errors.size(), 1u);
    return errors.empty() ? api::PolicyConfigError{"<none>", ""} : errors[0];
  };
  auto e = only(Config("", {}));
  EXPECT_EQ(e.field, "limits");
  EXPECT_TRUE(absl::StrContains(e.message, "at least one limit")) << e.message;

  e = only(Config("", {{5, v1::Limit::UNIT_UNSPECIFIED}}));
  EXPECT_EQ(e.field, "limits[0].per");
  e = only(Config("", {{0, v1::Limit::SECOND}}));
  EXPECT_EQ(e.field, "limits[0].requests");
  e = only(Config("", {{5, v1::Limit::MINUTE}, {10, v1::Limit::HOUR}, {7, v1::Limit::MINUTE}}));
  EXPECT_EQ(e.field, "limits[2].per");
  EXPECT_EQ(e.message,
            "MINUTE is limited twice (limits[0] and limits[2]); keep one limit per unit");
  EXPECT_TRUE(Errors(Config("", {{60000000, v1::Limit::MINUTE}})).empty());
  e = only(Config("", {{60000001, v1::Limit::MINUTE}}));
  EXPECT_EQ(e.field, "limits[0].requests");
  EXPECT_TRUE(absl::StrContains(e.message, "at most 60000000 per MINUTE")) << e.message;

  e = only(Config("", {{5, v1::Limit::MINUTE}},
                  {v1::RateLimitConfig::CONSUMER, v1::RateLimitConfig::CONSUMER}));
  EXPECT_EQ(e.field, "key[1]");
  EXPECT_EQ(e.message, "CONSUMER is listed twice");
  e = only(Config("", {{5, v1::Limit::MINUTE}}, {v1::RateLimitConfig::HEADER}));
  EXPECT_EQ(e.field, "header_name");
  EXPECT_EQ(e.message, "required with HEADER in key: 1..64 header-name characters, got \"\"");
  auto config = Config("", {{5, v1::Limit::MINUTE}}, {v1::RateLimitConfig::HEADER});
  config.set_header_name("x tenant");
  EXPECT_EQ(only(config).field, "header_name");
  // Given but wrong: not "required".
  EXPECT_EQ(only(config).message, "1..64 header-name characters, got \"x tenant\"");
  config.set_header_name("x-tenant");
  EXPECT_TRUE(Errors(config).empty());
  config = Config("", {{5, v1::Limit::MINUTE}});
  config.set_header_name("x-tenant");
  EXPECT_EQ(only(config).message, "set, but key has no HEADER part");
  config = Config("", {{5, v1::Limit::MINUTE}});
  config.add_key(static_cast<v1::RateLimitConfig::KeyPart>(9));
  EXPECT_EQ(only(config).field, "key[0]");

  config = Config("", {{5, v1::Limit::MINUTE}});
  config.set_fallback("no consumer");
  EXPECT_EQ(only(config).field, "fallback");
  config = Config("bad name!", {{5, v1::Limit::MINUTE}});
  EXPECT_EQ(only(config).field, "name");
  config = Config("", {{5, v1::Limit::MINUTE}});
  config.set_max_keys(0);
  EXPECT_EQ(only(config).field, "max_keys");
  config.set_max_keys(10000001);
  EXPECT_EQ(only(config).message, "1..10000000, got 10000001");
  config.set_max_keys(10000000);
  EXPECT_TRUE(Errors(config).empty());

  config = Config("", {{5, v1::Limit::MINUTE}});
  config.set_scope(v1::RateLimitConfig::FLEET);
  EXPECT_TRUE(Errors(config).empty());
  EXPECT_TRUE(FindPolicyFactory("rate-limit")->Compile(config).ok());
  config.mutable_fleet()->mutable_keep_share_for()->set_seconds(0);
  EXPECT_EQ(only(config).field, "fleet.keep_share_for");
  config.mutable_fleet()->mutable_keep_share_for()->set_seconds(3601);
  EXPECT_EQ(only(config).message, "1s..3600s, got 3601s");
  config.mutable_fleet()->mutable_keep_share_for()->set_seconds(0);
  config.mutable_fleet()->mutable_keep_share_for()->set_nanos(999000000);
  EXPECT_EQ(only(config).message, "1s..3600s, got 0.999s");  // not "0s"
  config.mutable_fleet()->mutable_keep_share_for()->set_nanos(0);
  config.mutable_fleet()->mutable_keep_share_for()->set_seconds(60);
  v1::Limit* fallback = config.mutable_fleet()->add_fallback_limits();
  fallback->set_requests(6);
  fallback->set_per(v1::Limit::MINUTE);
  EXPECT_EQ(only(config).field, "fleet.fallback_limits[0].requests");
  fallback->set_requests(0);
  EXPECT_EQ(only(config).field, "fleet.fallback_limits[0].requests");
  fallback->set_requests(2);
  EXPECT_TRUE(Errors(config).empty());
  fallback->set_per(v1::Limit::HOUR);
  EXPECT_EQ(only(config).field, "fleet.fallback_limits[0].per");
  fallback->set_per(v1::Limit::MINUTE);
  config.set_scope(v1::RateLimitConfig::LOCAL);
  e = only(config);
  EXPECT_EQ(e.field, "fleet");
  EXPECT_EQ(e.message, "only with scope: FLEET");
}

// ---- GCRA on a fake clock, driven directly ----

// The key bound counts every shard together: up to max_keys callers, none
// is forgotten, however unevenly they hash. Before, each of the 64 shards
// held max_keys / 64 and one filled long before max_keys, evicting callers
// still limited (60 callers at max_keys 64: 36 got a fresh budget).
TEST(GcraLimiterTest, AsManyCallersAsMaxKeysAreAllRemembered) {
  for (size_t max_keys : {64u, 1000u, 6400u}) {
    GcraLimiter limiter({{3, kMinute}}, max_keys);
    const size_t callers = max_keys;
    const int64_t t0 = 1000 * kSecond;
    Decision d;
    for (size_t c = 0; c < callers; ++c) {
      for (int i = 0; i < 3; ++i) {
        limiter.Take(absl::StrCat("caller-", c), t0, &d);
        ASSERT_TRUE(d.allowed) << c;
      }
    }
    int extra = 0;
    for (size_t c = 0; c < callers; ++c) {
      limiter.Take(absl::StrCat("caller-", c), t0 + kSecond, &d);
      extra += d.allowed ? 1 : 0;
    }
    EXPECT_EQ(extra, 0) << "max_keys " << max_keys;
    EXPECT_EQ(limiter.tracked_keys(), callers);
  }
}

// A full table whose whole keys sit in other shards than a new key's drops
// those, not the new key's shard's limited callers. Before, a new key freed
// an eighth of its own shard, limited callers included: with 6000 limited
// callers and 400 whole keys at max_keys 6400, 100 new keys gave about 90
// limited callers a fresh budget.
TEST(GcraLimiterTest, ANewKeyDropsWholeKeysAnywhereBeforeALimitedCaller) {
  const size_t max_keys = 6400;
  GcraLimiter limiter({{2, kMinute}}, max_keys);
  Decision d;
  const int64_t t0 = 1000 * kSecond;
  for (int c = 0; c < 400; ++c) limiter.Take(absl::StrCat("done-", c), t0, &d);
  const int64_t t1 = t0 + 31 * kSecond;  // "done-" keys are whole again
  for (int c = 0; c < 6000; ++c) {
    for (int i = 0; i < 2; ++i) limiter.Take(absl::StrCat("limited-", c), t1, &d);
  }
  for (int c = 0; c < 100; ++c) {
    limiter.Take(absl::StrCat("new-", c), t1, &d);
    ASSERT_TRUE(d.allowed);
  }
  int fresh = 0;
  for (int c = 0; c < 6000; ++c) {
    limiter.Take(absl::StrCat("limited-", c), t1 + kSecond, &d);
    fresh += d.allowed ? 1 : 0;
  }
  EXPECT_EQ(fresh, 0);
  EXPECT_EQ(limiter.evicted_active(), 0u);
  EXPECT_LE(limiter.tracked_keys(), max_keys);
  // A table really full of limited callers still takes new keys: the ones
  // closest to whole go.
  for (int c = 0; c < 1000; ++c) {
    limiter.Take(absl::StrCat("flood-", c), t1 + kSecond, &d);
    ASSERT_TRUE(d.allowed);
  }
  EXPECT_GT(limiter.evicted_active(), 0u);
  EXPECT_LE(limiter.tracked_keys(), max_keys + GcraLimiter::kMaxShards);
}

// A small table has few shards: a flood of one-request keys drops its own
// kind, not a caller who spent its budget. Before, max_keys 8 made 8 shards
// of one key, and a flood key hashing to a spent caller's shard dropped it
// (a fresh budget); so did 100 keys in 64 shards.
TEST(GcraLimiterTest, AFloodOfNewKeysInASmallTableKeepsSpentCallers) {
  for (const auto& [max_keys, flood] : {std::pair<size_t, int>{8, 200}, {100, 300}, {640, 3000}}) {
    GcraLimiter limiter({{5, kMinute}}, max_keys);
    Decision d;
    const int64_t t0 = 1000 * kSecond;
    for (int v = 0; v < 3; ++v) {
      for (int i = 0; i < 5; ++i) limiter.Take(absl::StrCat("victim-", v), t0, &d);
    }
    for (int c = 0; c < flood; ++c) {
      limiter.Take(absl::StrCat("flood-", c), t0 + kSecond, &d);
      ASSERT_TRUE(d.allowed);
    }
    for (int v = 0; v < 3; ++v) {
      limiter.Take(absl::StrCat("victim-", v), t0 + 2 * kSecond, &d);
      EXPECT_FALSE(d.allowed) << "max_keys " << max_keys << ", victim " << v;
    }
    EXPECT_LE(limiter.tracked_keys(), max_keys + GcraLimiter::kMaxShards);
  }
}

TEST(GcraLimiterTest, ExactlyNAtOnceThenOneEveryInterval) {
  GcraLimiter limiter({{5, kMinute}}, 100);  // T = 12 s
  Decision d;
  const int64_t t0 = 5000 * kSecond;
  for (int i = 0; i < 5; ++i) {
    limiter.Take("k", t0, &d);
    ASSERT_TRUE(d.allowed) << i;
    EXPECT_EQ(d.usage[0].remaining, 4u - i);
    EXPECT_EQ(d.usage[0].reset_ns, (i + 1) * 12 * kSecond);  // until whole again
  }
  limiter.Take("k", t0, &d);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after_ns, 12 * kSecond);
  EXPECT_EQ(d.usage[0].remaining, 0u);
  // A refused request takes nothing: still 12 s, not 24.
  limiter.Take("k", t0 + 1, &d);
  EXPECT_EQ(d.retry_after_ns, 12 * kSecond - 1);
  limiter.Take("k", t0 + 12 * kSecond - 1, &d);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after_ns, 1);
  limiter.Take("k", t0 + 12 * kSecond, &d);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.usage[0].remaining, 0u);
  limiter.Take("k", t0 + 12 * kSecond, &d);
  EXPECT_FALSE(d.allowed);
  // A full window later the key is whole again: 5 more at once.
  int later = 0;
  for (int i = 0; i < 6; ++i) {
    limiter.Take("k", t0 + 72 * kSecond, &d);
    later += d.allowed;
  }
  EXPECT_EQ(later, 5);
  // Other keys are untouched.
  limiter.Take("other", t0, &d);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.usage[0].remaining, 4u);
}

TEST(GcraLimiterTest, AnyWindowAdmitsAtMostTwiceTheLimitMinusOne) {
  // The documented bound: in any span L, at most N + floor(L / T). A
  // client that asks every millisecond for a minute gets the burst of N at
  // once plus one per T: 2N - 1 within the first window of length P.
  constexpr int kN = 10;
  GcraLimiter limiter({{kN, kMinute}}, 100);  // T = 6 s
  Decision d;
  int admitted = 0;
  const int64_t t0 = 5000 * kSecond;
  for (int64_t t = t0; t < t0 + kMinute; t += kSecond / 1000) {
    limiter.Take("k", t, &d);
    admitted += d.allowed;
  }
  EXPECT_EQ(admitted, 2 * kN - 1);
  // Over ten windows: N + floor(L / T) = 10 + 99.
  for (int64_t t = t0 + kMinute; t < t0 + 10 * kMinute; t += kSecond / 1000) {
    limiter.Take("k", t, &d);
    admitted += d.allowed;
  }
  EXPECT_EQ(admitted, kN + 99);
}

TEST(GcraLimiterTest, NeverRefusesWhatAStrictSlidingWindowAdmits) {
  // N per P, sent as bursts of N exactly P apart: every window of length
  // P holds N requests; none is refused.
  GcraLimiter limiter({{3, kSecond}}, 100);  // T = 333333333 ns, B = 999999999 ns
  Decision d;
  for (int burst = 0; burst < 50; ++burst) {
    for (int i = 0; i < 3; ++i) {
      limiter.Take("k", 7 * kSecond + burst * kSecond, &d);
      ASSERT_TRUE(d.allowed) << burst << "/" << i;
    }
  }
}

// ---- through the filter ----

// The gateway's own background refresh (a cache's stale-while-revalidate)
// is never refused and takes nothing from the client's budget.
TEST_F(RateLimitTest, ABackgroundRefreshIsNotTheClientsRequest) {
  auto factory = Compile(Config("background", {{3, v1::Limit::MINUTE}}));
  EXPECT_EQ(Admitted(*factory, 2, &alice), 2);
  for (int i = 0; i < 5; ++i) {
    Exchange refresh(*factory, &alice, "192.0.2.1", "orders", {}, /*background=*/true);
    EXPECT_TRUE(refresh.admitted()) << i;
  }
  EXPECT_EQ(Admitted(*factory, 2, &alice), 1);  // the third of three, then 429
}

TEST_F(RateLimitTest, TheNPlusFirstRequestGets429WithRetryAfterAndHeaders) {
  auto factory = Compile(Config("n-plus-one", {{5, v1::Limit::MINUTE}}));
  for (int i = 0; i < 5; ++i) {
    Exchange ok(*factory, &alice);
    ASSERT_TRUE(ok.admitted()) << i;
    EXPECT_EQ(ok.header("RateLimit-Limit"), "5");
    EXPECT_EQ(ok.header("RateLimit-Remaining"), absl::StrCat(4 - i));
    EXPECT_EQ(ok.header("RateLimit-Reset"), absl::StrCat(12 * (i + 1)));
    EXPECT_EQ(ok.header("X-RateLimit-Limit-Minute"), "5");
    EXPECT_EQ(ok.header("X-RateLimit-Remaining-Minute"), absl::StrCat(4 - i));
    EXPECT_EQ(ok.header("RateLimit-Policy"), "<none>");  // draft_headers is off
  }
  fake_now += 2 * kSecond + 1;
  Exchange refused(*factory, &alice);
  EXPECT_EQ(refused.status, http::FilterStatus::kStopLocalReply);
  EXPECT_EQ(refused.callbacks.status_, 429);
  EXPECT_EQ(refused.callbacks.message_, "API rate limit exceeded");
  // Rounded up: 9.999999999 s.
  EXPECT_EQ(refused.header("Retry-After"), "10");
  EXPECT_EQ(refused.header("RateLimit-Limit"), "5");
  EXPECT_EQ(refused.header("RateLimit-Remaining"), "0");
  EXPECT_EQ(refused.header("RateLimit-Reset"), "58");
  EXPECT_EQ(refused.header("X-RateLimit-Remaining-Minute"), "0");
  // The response hook ran on the 429 too, without doubling a field.
  EXPECT_EQ(refused.count("RateLimit-Remaining"), 1u);
  // bob has his own budget.
  EXPECT_TRUE(Exchange(*factory, &bob).admitted());
  // alice is admitted again once an interval has passed since the 5th.
  fake_now += 10 * kSecond;
  EXPECT_TRUE(Exchange(*factory, &alice).admitted());
  EXPECT_FALSE(Exchange(*factory, &alice).admitted());
}

TEST_F(RateLimitTest, SeveralLimitsAllApplyAndTheHeadersShowTheMostRestrictive) {
  auto factory =
      Compile(Config("several", {{5, v1::Limit::MINUTE}, {3, v1::Limit::SECOND}}));  // any order
  for (int i = 0; i < 3; ++i) {
    Exchange ok(*factory, &alice);
    ASSERT_TRUE(ok.admitted());
    EXPECT_EQ(ok.header("RateLimit-Limit"), "3");  // second: fewer remaining
    EXPECT_EQ(ok.header("RateLimit-Remaining"), absl::StrCat(2 - i));
    EXPECT_EQ(ok.header("RateLimit-Reset"), "1");
    EXPECT_EQ(ok.header("X-RateLimit-Remaining-Second"), absl::StrCat(2 - i));
    EXPECT_EQ(ok.header("X-RateLimit-Remaining-Minute"), absl::StrCat(4 - i));
  }
  Exchange by_second(*factory, &alice);
  EXPECT_FALSE(by_second.admitted());
  EXPECT_EQ(by_second.header("Retry-After"), "1");
  EXPECT_EQ(by_second.header("RateLimit-Limit"), "3");
  EXPECT_EQ(by_second.header("X-RateLimit-Remaining-Minute"), "2");

  fake_now += kSecond;
  Exchange fourth(*factory, &alice);
  ASSERT_TRUE(fourth.admitted());
  EXPECT_EQ(fourth.header("RateLimit-Limit"), "5");  // minute: 1 left, second: 2
  EXPECT_EQ(fourth.header("RateLimit-Remaining"), "1");
  EXPECT_EQ(fourth.header("RateLimit-Reset"), "47");
  EXPECT_TRUE(Exchange(*factory, &alice).admitted());
  Exchange by_minute(*factory, &alice);
  EXPECT_FALSE(by_minute.admitted());
  EXPECT_EQ(by_minute.header("Retry-After"), "11");
  EXPECT_EQ(by_minute.header("RateLimit-Limit"), "5");
  EXPECT_EQ(by_minute.header("RateLimit-Remaining"), "0");
  EXPECT_EQ(by_minute.header("X-RateLimit-Remaining-Second"), "1");  // refused: nothing taken
}

TEST_F(RateLimitTest, DraftHeadersAndNoHeaders) {
  auto config = Config("draft", {{100, v1::Limit::HOUR}, {10, v1::Limit::SECOND}});
  config.set_draft_headers(true);
  auto factory = Compile(config);
  Exchange ok(*factory, &alice);
  EXPECT_EQ(ok.header("RateLimit-Policy"), "\"second\";q=10;w=1, \"hour\";q=100;w=3600");
  EXPECT_EQ(ok.header("RateLimit"), "\"second\";r=9;t=1, \"hour\";r=99;t=36");
  EXPECT_EQ(ok.header("RateLimit-Limit"), "10");

  config = Config("quiet", {{1, v1::Limit::MINUTE}});
  config.set_headers(false);
  factory = Compile(config);
  Exchange quiet(*factory, &alice);
  EXPECT_TRUE(quiet.admitted());
  EXPECT_TRUE(quiet.response.empty());
  Exchange refused(*factory, &alice);
  EXPECT_EQ(refused.callbacks.status_, 429);
  EXPECT_EQ(refused.header("Retry-After"), "60");
  EXPECT_EQ(refused.header("RateLimit-Limit"), "<none>");
  EXPECT_EQ(refused.response.size(), 1u);
}

TEST_F(RateLimitTest, KeysCombineTheirPartsAndRoutesAreApart) {
  auto factory = Compile(Config("combined", {{1, v1::Limit::MINUTE}},
                                {v1::RateLimitConfig::CLIENT_IP, v1::RateLimitConfig::CONSUMER}));
  EXPECT_EQ(Admitted(*factory, 3, &alice, "192.0.2.1"), 1);
  EXPECT_EQ(Admitted(*factory, 3, &alice, "192.0.2.2"), 1);              // another address
  EXPECT_EQ(Admitted(*factory, 3, &bob, "192.0.2.1"), 1);                // another consumer
  EXPECT_EQ(Admitted(*factory, 3, &alice, "192.0.2.1", "invoices"), 1);  // another route

  auto config = Config("by-header", {{2, v1::Limit::MINUTE}}, {v1::RateLimitConfig::HEADER});
  config.set_header_name("X-Tenant");
  factory = Compile(config);
  auto tenant = [&](std::string value, std::string ip) {
    return Exchange(*factory, nullptr, ip, "orders", {{"x-tenant", value}}).admitted();
  };
  EXPECT_TRUE(tenant("acme", "192.0.2.1"));
  EXPECT_TRUE(tenant("acme", "192.0.2.2"));  // the address is not in the key
  EXPECT_FALSE(tenant("acme", "192.0.2.3"));
  EXPECT_TRUE(tenant("globex", "192.0.2.3"));
  // A long value is held as a digest: still its own bucket.
  std::string long_a(500, 'a'), long_b = long_a + "b";
  EXPECT_TRUE(tenant(long_a, "192.0.2.1"));
  EXPECT_TRUE(tenant(long_a, "192.0.2.1"));
  EXPECT_FALSE(tenant(long_a, "192.0.2.1"));
  EXPECT_TRUE(tenant(long_b, "192.0.2.1"));

  // ROUTE alone: every caller of the route shares one bucket.
  factory = Compile(Config("route-wide", {{2, v1::Limit::MINUTE}}, {v1::RateLimitConfig::ROUTE}));
  EXPECT_TRUE(Exchange(*factory, &alice, "192.0.2.1").admitted());
  EXPECT_TRUE(Exchange(*factory, &bob, "192.0.2.2").admitted());
  EXPECT_FALSE(Exchange(*factory, nullptr, "192.0.2.3").admitted());
  EXPECT_TRUE(Exchange(*factory, nullptr, "192.0.2.3", "invoices").admitted());
}

// Overrides: the first naming the consumer or one of its groups gives the
// limits (and the headers say them); they are counted apart from the
// policy's, so a tier's callers spend nothing of the others' buckets.
TEST_F(RateLimitTest, OverridesGiveConsumersAndGroupsLimitsOfTheirOwn) {
  auth::Consumer dave = MakeConsumer("dave");
  dave.groups = {"staff", "gold"};
  auth::Consumer carol = MakeConsumer("carol");
  carol.groups = {"gold"};
  auto config = Config("tiers", {{2, v1::Limit::MINUTE}});
  v1::Override* gold = config.add_overrides();
  gold->add_groups("gold");
  gold->add_limits()->set_requests(5);
  gold->mutable_limits(0)->set_per(v1::Limit::MINUTE);
  v1::Override* carols = config.add_overrides();  // later: carol is gold first
  carols->add_consumers("carol");
  carols->add_limits()->set_requests(1);
  carols->mutable_limits(0)->set_per(v1::Limit::MINUTE);
  v1::Override* bobs = config.add_overrides();
  bobs->add_consumers("bob");
  bobs->add_limits()->set_requests(1);
  bobs->mutable_limits(0)->set_per(v1::Limit::MINUTE);
  bobs->add_limits()->set_requests(10);
  bobs->mutable_limits(1)->set_per(v1::Limit::HOUR);
  auto factory = Compile(config);
  EXPECT_EQ(Exchange(*factory, &alice).header("X-RateLimit-Limit-Minute"), "2");
  EXPECT_EQ(Exchange(*factory, &dave).header("X-RateLimit-Limit-Minute"), "5");
  Exchange b(*factory, &bob);
  EXPECT_EQ(b.header("X-RateLimit-Limit-Minute"), "1");
  EXPECT_EQ(b.header("X-RateLimit-Limit-Hour"), "10");
  EXPECT_EQ(Admitted(*factory, 10, &alice), 1);  // 2 in all
  EXPECT_EQ(Admitted(*factory, 10, &dave), 4);   // 5 in all
  EXPECT_EQ(Admitted(*factory, 10, &carol), 5);  // gold: the first override naming her
  EXPECT_EQ(Admitted(*factory, 10, &bob), 0);    // 1 in all
  EXPECT_EQ(Admitted(*factory, 10, nullptr), 2);  // no consumer: the policy's limits

  // Key ROUTE: one bucket for the route's callers, and one for the tier's.
  config = Config("route-tiers", {{1, v1::Limit::MINUTE}}, {v1::RateLimitConfig::ROUTE});
  gold = config.add_overrides();
  gold->add_groups("gold");
  gold->add_limits()->set_requests(3);
  gold->mutable_limits(0)->set_per(v1::Limit::MINUTE);
  factory = Compile(config);
  EXPECT_EQ(Admitted(*factory, 5, &alice), 1);
  EXPECT_EQ(Admitted(*factory, 5, &bob), 0);
  EXPECT_EQ(Admitted(*factory, 2, &dave), 2);
  EXPECT_EQ(Admitted(*factory, 5, &carol), 1);

  // Under FLEET an override is a limiter of its own too (its own leases).
  config = Config("fleet-tiers", {{2, v1::Limit::MINUTE}});
  config.set_scope(v1::RateLimitConfig::FLEET);
  gold = config.add_overrides();
  gold->add_groups("gold");
  gold->add_limits()->set_requests(6);
  gold->mutable_limits(0)->set_per(v1::Limit::MINUTE);
  factory = Compile(config);
  EXPECT_EQ(Admitted(*factory, 10, &alice), 2);
  EXPECT_EQ(Admitted(*factory, 10, &dave), 6);
}

TEST_F(RateLimitTest, OverrideRulesNameTheField) {
  auto config = Config("", {{5, v1::Limit::MINUTE}});
  v1::Override* first = config.add_overrides();
  v1::Override* second = config.add_overrides();
  v1::Override* third = config.add_overrides();
  first->add_groups("gold");
  first->add_consumers("bad name");
  first->add_limits()->set_requests(0);
  first->mutable_limits(0)->set_per(v1::Limit::MINUTE);
  second->add_groups("gold");
  second->add_groups("team@corp");
  second->add_limits()->set_requests(50);
  second->mutable_limits(0)->set_per(v1::Limit::MINUTE);
  second->add_limits()->set_requests(40);
  second->mutable_limits(1)->set_per(v1::Limit::HOUR);
  third->add_limits()->set_requests(1);
  third->mutable_limits(0)->set_per(v1::Limit::SECOND);
  std::vector<std::string> said;
  for (const auto& e : Errors(config)) said.push_back(e.field + ": " + e.message);
  std::sort(said.begin(), said.end());
  EXPECT_EQ(said, (std::vector<std::string>{
                      "overrides[0].consumers[0]: 'bad name' is no consumer name (1..128 "
                      "letters, digits, '-', '_', '.')",
                      "overrides[0].limits[0].requests: must be at least 1",
                      "overrides[1].groups[0]: group 'gold' is named in overrides[0].groups[0] "
                      "already (the first override that names a caller gives its limits)",
                      "overrides[2]: names no one: give consumers, groups or both"}));
  std::vector<api::PolicyConfigError> at_apply;
  api::FindPolicyValidator("rate-limit")->ValidateNew(config, &at_apply);
  ASSERT_EQ(at_apply.size(), 1u);
  EXPECT_EQ(at_apply[0].field, "overrides[1].limits[1].requests");
  for (int i = 0; i < 16; ++i) config.add_overrides();
  ASSERT_FALSE(Errors(config).empty());
  EXPECT_EQ(Errors(config)[0].field, "overrides");
  EXPECT_EQ(Errors(config)[0].message, "at most 16 overrides, got 19");
}

TEST_F(RateLimitTest, RequestsLackingAPartShareTheFallbackBucket) {
  // Default key: CONSUMER.
  auto factory = Compile(Config("fallback", {{3, v1::Limit::MINUTE}}));
  // No consumer, from three addresses: one bucket of 3.
  EXPECT_EQ(Admitted(*factory, 2, nullptr, "192.0.2.1"), 2);
  EXPECT_EQ(Admitted(*factory, 2, nullptr, "192.0.2.2"), 1);
  EXPECT_EQ(Admitted(*factory, 2, nullptr, "192.0.2.3"), 0);
  // Consumers are not affected, and the bucket is per route.
  EXPECT_EQ(Admitted(*factory, 4, &alice), 3);
  EXPECT_EQ(Admitted(*factory, 4, nullptr, "192.0.2.1", "invoices"), 3);
  // With a part missing among several, only that part falls back: a
  // consumer without the header spends its own budget, not the others'.
  auto config = Config("fallback-2", {{1, v1::Limit::MINUTE}},
                       {v1::RateLimitConfig::CONSUMER, v1::RateLimitConfig::HEADER});
  config.set_header_name("x-tenant");
  config.set_fallback("shared");
  factory = Compile(config);
  EXPECT_TRUE(Exchange(*factory, &alice, "192.0.2.1").admitted());  // no x-tenant
  EXPECT_FALSE(Exchange(*factory, &alice, "192.0.2.3").admitted());  // alice's, spent
  EXPECT_TRUE(Exchange(*factory, &bob, "192.0.2.2").admitted());     // bob's own
  EXPECT_TRUE(Exchange(*factory, &bob, "192.0.2.2", "orders", {{"x-tenant", "t"}}).admitted());
  // No consumer, with the header: one bucket per header value.
  EXPECT_TRUE(Exchange(*factory, nullptr, "192.0.2.4", "orders", {{"x-tenant", "u"}}).admitted());
  EXPECT_FALSE(Exchange(*factory, nullptr, "192.0.2.5", "orders", {{"x-tenant", "u"}}).admitted());
  EXPECT_TRUE(Exchange(*factory, nullptr, "192.0.2.5", "orders", {{"x-tenant", "v"}}).admitted());
  // Neither: the route's fallback bucket, apart from the buckets above.
  EXPECT_TRUE(Exchange(*factory, nullptr, "192.0.2.6", "orders").admitted());
  EXPECT_FALSE(Exchange(*factory, nullptr, "192.0.2.7", "orders").admitted());
  // [CLIENT_IP, HEADER]: an address without the header does not starve others.
  config = Config("fallback-3", {{1, v1::Limit::MINUTE}},
                  {v1::RateLimitConfig::CLIENT_IP, v1::RateLimitConfig::HEADER});
  config.set_header_name("x-tenant");
  factory = Compile(config);
  EXPECT_TRUE(Exchange(*factory, nullptr, "192.0.2.1").admitted());
  EXPECT_FALSE(Exchange(*factory, nullptr, "192.0.2.1").admitted());
  EXPECT_TRUE(Exchange(*factory, nullptr, "192.0.2.2").admitted());
}

// A route name is unique only within its virtual host: routes named `api`
// in two virtual hosts, or in two RouteTables, are two routes with their
// own counters. They shared one budget (two tenants throttled each other).
TEST_F(RateLimitTest, SameNamedRoutesOfOtherVirtualHostsOrTablesHaveTheirOwnCounters) {
  auto factory = Compile(Config("", {{2, v1::Limit::MINUTE}}, {v1::RateLimitConfig::CLIENT_IP}));
  auto admitted = [&](std::string_view table, std::string_view vhost) {
    FakeCallbacks callbacks;
    callbacks.info_.client_ip = "192.0.2.9";
    callbacks.info_.route_name = "api";
    callbacks.info_.route_table = table;
    callbacks.info_.virtual_host = vhost;
    http::HeaderMap request;
    return factory->CreateFilter()->OnRequestHeaders(request, callbacks) ==
           http::FilterStatus::kContinue;
  };
  for (auto [table, vhost] : std::vector<std::pair<std::string_view, std::string_view>>{
           {"main", "a.example"}, {"main", "b.example"}, {"other", "a.example"}}) {
    EXPECT_TRUE(admitted(table, vhost)) << table << " " << vhost;
    EXPECT_TRUE(admitted(table, vhost)) << table << " " << vhost;
    EXPECT_FALSE(admitted(table, vhost)) << table << " " << vhost;
  }
}

TEST_F(RateLimitTest, AFloodOfDistinctKeysStaysWithinMaxKeysAndKeepsTheBusiestKey) {
  auto config = Config("flood", {{5, v1::Limit::MINUTE}}, {v1::RateLimitConfig::CLIENT_IP});
  config.set_max_keys(1000);
  auto factory = Compile(config);
  auto limiter = LimiterRegistry::Get().Find(StateIdentity(config));
  ASSERT_NE(limiter, nullptr);
  // One client spends its whole budget.
  EXPECT_EQ(Admitted(*factory, 6, nullptr, "198.51.100.7"), 5);
  // A million other addresses, one request each, at the same instant.
  size_t most = 0;
  for (uint32_t i = 0; i < 1000000; ++i) {
    std::string ip = absl::StrCat("10.", (i >> 16) & 255, ".", (i >> 8) & 255, ".", i & 255);
    ASSERT_TRUE(Exchange(*factory, nullptr, ip).admitted()) << ip;
    if (i % 1000 == 0) most = std::max(most, limiter->tracked_keys());
  }
  most = std::max(most, limiter->tracked_keys());
  EXPECT_LE(most, 1000u + 64);  // one over per shard at most
  EXPECT_GE(most, 900u);
  // The spent client was not forgotten: the one-request keys went first.
  EXPECT_FALSE(Exchange(*factory, nullptr, "198.51.100.7").admitted());

  // A minute later every key is whole again: the next inserts reclaim them
  // without losing anything, and the busy client gets a full budget.
  fake_now += kMinute;
  for (uint32_t i = 0; i < 5000; ++i) {
    Exchange(*factory, nullptr, absl::StrCat("172.16.", i >> 8, ".", i & 255));
  }
  EXPECT_LE(limiter->tracked_keys(), 1000u + 64);
  EXPECT_EQ(Admitted(*factory, 6, nullptr, "198.51.100.7"), 5);
}

TEST_F(RateLimitTest, CountersCarryOverWhileTheIdentityStaysAndResetWhenItChanges) {
  auto config = Config("carry", {{2, v1::Limit::MINUTE}, {100, v1::Limit::HOUR}});
  auto v1_factory = Compile(config);
  EXPECT_EQ(Admitted(*v1_factory, 3, &alice), 2);
  // The same policy in a new config version (the old one still in use):
  // same counters, though the headers settings changed.
  config.set_headers(false);
  config.set_draft_headers(true);
  auto v2_factory = Compile(config);
  EXPECT_EQ(Admitted(*v2_factory, 3, &alice), 0);
  EXPECT_EQ(Admitted(*v1_factory, 1, &alice), 0);
  // The limits listed in another order: the same identity.
  auto reordered = Config("carry", {{100, v1::Limit::HOUR}, {2, v1::Limit::MINUTE}});
  auto v3_factory = Compile(reordered);
  EXPECT_EQ(Admitted(*v3_factory, 1, &alice), 0);
  // Another limit: what alice spent carries over (2 of the 3 a minute).
  auto changed = Config("carry", {{3, v1::Limit::MINUTE}, {100, v1::Limit::HOUR}});
  auto v4_factory = Compile(changed);
  EXPECT_EQ(Admitted(*v4_factory, 4, &alice), 1);
  // Another name: new counters too.
  EXPECT_EQ(Admitted(*Compile(Config("carry-2", {{2, v1::Limit::MINUTE}, {100, v1::Limit::HOUR}})),
                     3, &alice),
            2);
  // Once no compiled policy holds them, the counters are freed.
  const std::string identity = StateIdentity(config);
  ASSERT_NE(LimiterRegistry::Get().Find(identity), nullptr);
  v1_factory.reset();
  v2_factory.reset();
  ASSERT_NE(LimiterRegistry::Get().Find(identity), nullptr);
  v3_factory.reset();
  EXPECT_EQ(LimiterRegistry::Get().Find(identity), nullptr);
  v4_factory.reset();  // (while it lived, its counts would carry over)
  EXPECT_EQ(Admitted(*Compile(config), 3, &alice), 2);  // from empty
}

// A limit raised or lowered keeps what each caller spent (as Kong's
// counters do). Before, every caller started whole: lowering a limit during
// an abuse gave the abuser a fresh burst, raising one gave everyone the
// whole new limit at once.
TEST_F(RateLimitTest, AChangedLimitKeepsWhatEachCallerSpent) {
  auto five = Compile(Config("change", {{5, v1::Limit::MINUTE}}));
  EXPECT_EQ(Admitted(*five, 3, &alice), 3);
  EXPECT_EQ(Admitted(*five, 6, &bob), 5);
  // Raised to 8 a minute (the old version still serving): 5 left for
  // alice, 3 for bob.
  auto eight = Compile(Config("change", {{8, v1::Limit::MINUTE}}));
  EXPECT_EQ(Admitted(*eight, 10, &alice), 5);
  EXPECT_EQ(Admitted(*eight, 10, &bob), 3);
  // Lowered to 2 a minute with 8 spent: none left, then one every 30 s
  // (not a wait for the 8 to be earned back at the new rate).
  auto two = Compile(Config("change", {{2, v1::Limit::MINUTE}}));
  EXPECT_EQ(Admitted(*two, 3, &alice), 0);
  EXPECT_EQ(Admitted(*two, 3, &bob), 0);
  fake_now += 30 * kSecond;
  EXPECT_EQ(Admitted(*two, 3, &alice), 1);
  EXPECT_EQ(Admitted(*two, 3, &bob), 1);
  // A caller the old limits never saw is whole (here: the bucket of
  // callers without a consumer).
  EXPECT_EQ(Admitted(*two, 3, nullptr), 2);
  // A unit the old limits had not starts whole.
  fake_now += 60 * kSecond;
  auto hourly = Compile(Config("change", {{2, v1::Limit::MINUTE}, {3, v1::Limit::HOUR}}));
  EXPECT_EQ(Admitted(*hourly, 3, &alice), 2);
  // Another key or name is another policy: nothing carries over.
  EXPECT_EQ(Admitted(*Compile(Config("other", {{3, v1::Limit::MINUTE}})), 4, &alice), 3);
}

// Limits A, then B, then A again while a request of the first A still
// holds its limiter (a WebSocket, a long poll): the spending under B
// carries over. Before: the first A's limiter came back, its counts
// without what B admitted.
TEST_F(RateLimitTest, BackToEarlierLimitsKeepsWhatWasSpentSince) {
  auto a = Compile(Config("round-trip", {{2, v1::Limit::MINUTE}}));
  auto b = Compile(Config("round-trip", {{4, v1::Limit::MINUTE}}));
  EXPECT_EQ(Admitted(*b, 5, &bob), 4);
  auto a_again = Compile(Config("round-trip", {{2, v1::Limit::MINUTE}}));
  EXPECT_EQ(Admitted(*a_again, 2, &bob), 0);
  // Without a change in between, the live limiter is the one reused.
  auto a_same = Compile(Config("round-trip", {{2, v1::Limit::MINUTE}}));
  EXPECT_EQ(Admitted(*a_same, 1, &alice), 1);
  EXPECT_EQ(Admitted(*a_again, 2, &alice), 1);
}

TEST_F(RateLimitTest, ConcurrentRequestsForOneKeyAdmitExactlyTheLimit) {
  for (bool two_limits : {false, true}) {
    // Frozen clock: nothing refills while the threads run. With two
    // limits, the later (minute) one refuses after the first (second) one
    // took: the request gives back what it took.
    auto config = two_limits
                      ? Config("hammer-2", {{20000, v1::Limit::SECOND}, {10000, v1::Limit::MINUTE}})
                      : Config("hammer", {{10000, v1::Limit::MINUTE}});
    auto factory = Compile(config);
    std::atomic<int> admitted{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 10000; ++i) {
          if (Exchange(*factory, &alice).admitted()) admitted.fetch_add(1);
        }
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(admitted.load(), 10000) << (two_limits ? "two limits" : "one limit");
  }
}

}  // namespace
}  // namespace sluice::policy::rate_limit
