// The `cache` policy through real processes: sluice-control, sluice-proxy
// (two workers) and a real origin (upstream_server) that counts requests and
// sets Cache-Control, ETag, Vary as each test asks. What a client sees
// (X-Cache-Status, Age, 304s, stale answers) and what the origin sees (how
// many requests reached it): coalescing of 500 concurrent misses, RFC 9111
// revalidation, stale-if-error with the origin killed,
// stale-while-revalidate, Vary, config changes, and `sluicectl cache purge`
// across two proxies.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

class CacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(origin_.ok());
    ASSERT_TRUE(fragile_.ok());
    port_ = PickFreePort();
    ASSERT_EQ(Apply(Config("lock_timeout: 10s")), 0) << last_error_;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "cache-proxy", /*workers=*/2);
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  // /c: cached, from `origin_`; /f: cached, from `fragile_` (killed by
  // tests); /plain: not cached. `policy` is the cache policy's typed config.
  std::string Config(const std::string& policy, const std::string& extra_route = "") {
    return absl::StrCat(
        "kind: Cluster\nname: origin\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        origin_.port(),
        "}]\n---\nkind: Cluster\nname: fragile\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        fragile_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n"
        "      routes:\n",
        extra_route,
        "        - name: cached\n          match: {prefix: /c/}\n          route: {cluster: origin}\n"
        "          policies: [{name: cache, typed_config: {",
        policy,
        "}}]\n"
        "        - name: fragile\n          match: {prefix: /f/}\n          route: {cluster: fragile}\n"
        "          policies: [{name: cache, typed_config: {lock_timeout: 10s}}]\n"
        "        - name: plain\n          match: {prefix: /}\n          route: {cluster: origin}\n"
        "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ",
        port_, ", route_table: main, access_log: {path: ", log_, "}}\n");
  }

  int Apply(const std::string& yaml) {
    auto r = cp_.Ctl({"apply", "-f", WriteFile(MakeTempDir("cache"), "config.yaml", yaml)});
    last_error_ = r.out + r.err;
    return r.exit_code;
  }

  HttpResponse Get(const std::string& path, const Headers& headers = {}) {
    return HttpGet(address(), path, headers);
  }

  int OriginCount() { return origin_.RequestCount().value_or(-1); }

  // Requests `path` until its X-Cache-Status is no longer Hit (the entry
  // went stale), within 10 s; that response.
  HttpResponse GetUntilNotHit(const std::string& path) {
    HttpResponse r;
    EXPECT_TRUE(WaitFor(
        [&] {
          r = Get(path);
          return !r.ok() || r.header("x-cache-status") != "Hit";
        },
        absl::Seconds(10)));
    return r;
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  ControlPlane cp_{"", "info"};
  UpstreamServer origin_{"origin"};
  UpstreamServer fragile_{"fragile"};
  std::unique_ptr<Proxy> proxy_;
  int port_ = 0;
  std::string last_error_;
  const std::string log_ = absl::StrCat(MakeTempDir("cache-log"), "/access.log");
};

TEST_F(CacheTest, AMissIsStoredAndThenServedWithItsAge) {
  const std::string path = "/c/one?cc=public,max-age=60";
  HttpResponse miss = Get(path);
  ASSERT_TRUE(miss.ok()) << miss.error;
  EXPECT_EQ(miss.status, 200);
  EXPECT_EQ(miss.header("x-cache-status"), "Miss");
  EXPECT_EQ(OriginCount(), 1);
  HttpResponse hit = Get(path);
  ASSERT_TRUE(hit.ok()) << hit.error;
  EXPECT_EQ(hit.status, 200);
  EXPECT_EQ(hit.header("x-cache-status"), "Hit");
  EXPECT_EQ(hit.body, miss.body);
  EXPECT_EQ(hit.header("x-upstream"), "origin");  // the stored fields
  EXPECT_NE(hit.header("x-request-id"), miss.header("x-request-id"));  // its own, once
  EXPECT_EQ(hit.header("x-request-id").size(), 36u) << hit.header("x-request-id");
  EXPECT_EQ(hit.header("cache-control"), "public,max-age=60");
  int age = -1;
  ASSERT_TRUE(absl::SimpleAtoi(hit.header("age"), &age)) << hit.header("age");
  EXPECT_GE(age, 0);
  EXPECT_LE(age, 60);
  EXPECT_EQ(OriginCount(), 1);
  // HEAD is answered from the GET's entry, without a body.
  HttpResponse head = HttpRequest(address(), "HEAD", path, {}, "");
  ASSERT_TRUE(head.ok()) << head.error;
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("x-cache-status"), "Hit");
  EXPECT_EQ(head.header("content-length"), absl::StrCat(miss.body.size()));
  EXPECT_EQ(head.body, "");
  EXPECT_EQ(OriginCount(), 1);
  // Another method is not cached.
  HttpResponse post = HttpRequest(address(), "POST", path, {}, "x");
  EXPECT_EQ(post.status, 200);
  EXPECT_EQ(post.header("x-cache-status"), "Bypass");
  EXPECT_EQ(OriginCount(), 2);
  // A route without the policy says nothing.
  HttpResponse plain = Get("/plain?cc=max-age=60");
  EXPECT_EQ(plain.header("x-cache-status"), "");
}

TEST_F(CacheTest, WhatTheOriginForbidsOrLeavesUnsaidIsNotStored) {
  for (const std::string& path :
       {std::string("/c/a?cc=no-store"), std::string("/c/b?cc=private,max-age=60"),
        std::string("/c/c"), std::string("/c/d?cc=max-age=60&cookie=1"),
        std::string("/c/e?cc=max-age=60&vary=*")}) {
    int before = OriginCount();
    EXPECT_EQ(Get(path).header("x-cache-status"), "Miss") << path;
    HttpResponse again = Get(path);
    EXPECT_EQ(again.status, 200) << path;
    EXPECT_NE(again.header("x-cache-status"), "Hit") << path;
    EXPECT_EQ(OriginCount(), before + 2) << path;
  }
  // A request with Authorization is stored only when the response says public.
  Headers auth = {{"authorization", "Bearer abc"}};
  Get("/c/g?cc=max-age=60", auth);
  EXPECT_EQ(Get("/c/g?cc=max-age=60", auth).header("x-cache-status"), "Miss");
  Get("/c/h?cc=public,max-age=60", auth);
  EXPECT_EQ(Get("/c/h?cc=public,max-age=60", auth).header("x-cache-status"), "Hit");
}

TEST_F(CacheTest, FiveHundredConcurrentMissesSendOneRequestUpstream) {
  const std::string path = "/c/cold?cc=public,max-age=60&delay_ms=700";
  const int before = OriginCount();
  constexpr int kClients = 500;
  std::atomic<int> ok{0};
  absl::Mutex mu;
  std::map<std::string, int> statuses;
  std::vector<std::string> errors;
  std::vector<std::thread> clients;
  clients.reserve(kClients);
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&] {
      HttpResponse r = HttpGet(address(), path, {}, absl::Seconds(30));
      absl::MutexLock lock(&mu);
      if (!r.ok() || r.status != 200) {
        errors.push_back(absl::StrCat(r.status, " ", r.error, " ", r.body));
        return;
      }
      ++ok;
      ++statuses[r.header("x-cache-status")];
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_TRUE(errors.empty()) << errors.size() << " failed, e.g. " << errors[0];
  EXPECT_EQ(ok.load(), kClients);
  EXPECT_EQ(OriginCount(), before + 1);  // exactly one request reached the origin
  EXPECT_EQ(statuses["Miss"], 1);
  EXPECT_EQ(statuses["Hit"], kClients - 1);
}

// A waiter's time in the lock does not count against the route timeout:
// lock_timeout bounds the wait, and the route timeout starts when a waiter
// goes upstream (as nginx's proxy_cache_lock_timeout and proxy_read_timeout).
// Before: with timeout 1s, waiters released by an uncacheable 0.7 s answer
// got 504 0.3 s after going upstream, and waiters on a body that took 1.5 s
// got 504 "a policy did not finish within the route timeout".
TEST_F(CacheTest, TheWaitInTheLockIsNotPartOfTheRouteTimeout) {
  // /b/: the cache wait follows a basic-auth check (a pause of its own):
  // before, the timer of the check went on and cut the wait at 1 s.
  const std::string route =
      "        - name: timed\n          match: {prefix: /t/}\n"
      "          route: {cluster: origin, timeout: 1s}\n"
      "          policies: [{name: cache, typed_config: {lock_timeout: 5s}}]\n"
      "        - name: checked\n          match: {prefix: /b/}\n"
      "          route: {cluster: origin, timeout: 1s}\n"
      "          policies: [{name: basic-auth, typed_config: {}},\n"
      "                     {name: cache, typed_config: {lock_timeout: 5s}}]\n";
  const std::string consumer =
      "kind: Consumer\nname: carol\nspec: {basic_auth: {username: carol, password: "
      "lock-wait-pw}}\n---\n";
  ASSERT_EQ(Apply(consumer + Config("lock_timeout: 10s", route)), 0) << last_error_;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  for (const std::string path : {"/t/uncacheable?cc=no-store&delay_ms=700",
                                 "/t/slow-body?cc=public,max-age=60&chunked=1&gap_ms=500",
                                 "/b/slow-body?cc=public,max-age=60&chunked=1&gap_ms=500"}) {
    absl::Mutex mu;
    std::vector<std::string> answers;
    std::vector<std::thread> clients;
    for (int i = 0; i < 4; ++i) {
      clients.emplace_back([&] {
        HttpResponse r = HttpGet(address(), path,
                                 {{"authorization", "Basic Y2Fyb2w6bG9jay13YWl0LXB3"}},
                                 absl::Seconds(20));
        absl::MutexLock lock(&mu);
        answers.push_back(absl::StrCat(r.status, " ", r.header("x-cache-status"), " ",
                                       r.status == 200 ? "" : r.body, r.error));
      });
    }
    for (std::thread& t : clients) t.join();
    for (const std::string& a : answers) EXPECT_TRUE(absl::StartsWith(a, "200 ")) << path << ": " << a;
  }
}

TEST_F(CacheTest, AStaleEntryIsRevalidatedAndAClientsConditionalIsAnswered) {
  const std::string path = "/c/rv?cc=max-age=1&etag=v1";
  HttpResponse miss = Get(path);
  EXPECT_EQ(miss.header("x-cache-status"), "Miss");
  EXPECT_EQ(miss.header("etag"), "\"v1\"");
  // The client already has it: 304 from the cache.
  HttpResponse not_modified = Get(path, {{"if-none-match", "\"v0\", \"v1\""}});
  ASSERT_TRUE(not_modified.ok()) << not_modified.error;
  EXPECT_EQ(not_modified.status, 304);
  EXPECT_EQ(not_modified.header("etag"), "\"v1\"");
  EXPECT_EQ(not_modified.body, "");
  const int before = OriginCount();
  // Once stale, the origin is asked with If-None-Match and answers 304: the
  // stored body is served, fresh again.
  HttpResponse revalidated = GetUntilNotHit(path);
  ASSERT_TRUE(revalidated.ok()) << revalidated.error;
  EXPECT_EQ(revalidated.status, 200);
  EXPECT_EQ(revalidated.header("x-cache-status"), "Revalidated");
  EXPECT_EQ(revalidated.body, miss.body);
  EXPECT_EQ(OriginCount(), before + 1);
  EXPECT_EQ(Get(path).header("x-cache-status"), "Hit");
}

TEST_F(CacheTest, AStaleEntryIsServedWhileTheOriginIsDown) {
  const std::string path = "/f/sie?cc=max-age=1,stale-if-error=60";
  HttpResponse miss = Get(path);
  ASSERT_EQ(miss.status, 200);
  EXPECT_EQ(miss.header("x-cache-status"), "Miss");
  // Without stale-if-error, the origin's failure shows.
  const std::string strict = "/f/strict?cc=max-age=1";
  EXPECT_EQ(Get(strict).header("x-cache-status"), "Miss");
  ASSERT_TRUE(fragile_.Stop().has_value());
  HttpResponse stale = GetUntilNotHit(path);
  ASSERT_TRUE(stale.ok()) << stale.error;
  EXPECT_EQ(stale.status, 200);
  EXPECT_EQ(stale.header("x-cache-status"), "Stale");
  EXPECT_EQ(stale.body, miss.body);
  HttpResponse failed = GetUntilNotHit(strict);
  EXPECT_EQ(failed.status, 502);
}

TEST_F(CacheTest, StaleWhileRevalidateAnswersAtOnceAndRefreshesInTheBackground) {
  const std::string path = "/c/swr?cc=max-age=1,stale-while-revalidate=60";
  HttpResponse miss = Get(path);
  EXPECT_EQ(miss.header("x-cache-status"), "Miss");
  const int before = OriginCount();
  HttpResponse stale = GetUntilNotHit(path);
  EXPECT_EQ(stale.status, 200);
  EXPECT_EQ(stale.header("x-cache-status"), "Stale");
  // One background request refreshes the entry.
  ASSERT_TRUE(WaitFor([&] { return OriginCount() == before + 1; }, absl::Seconds(10)));
  ASSERT_TRUE(WaitFor([&] { return Get(path).header("x-cache-status") == "Hit"; },
                      absl::Seconds(10)));
  EXPECT_EQ(OriginCount(), before + 1);
}

TEST_F(CacheTest, VaryKeepsOneEntryPerVariant) {
  const std::string path = "/c/v?cc=max-age=60&vary=x-test-lang";
  EXPECT_EQ(Get(path, {{"x-test-lang", "en"}}).header("x-cache-status"), "Miss");
  EXPECT_EQ(Get(path, {{"x-test-lang", "fr"}}).header("x-cache-status"), "Miss");
  HttpResponse en = Get(path, {{"x-test-lang", "en"}});
  EXPECT_EQ(en.header("x-cache-status"), "Hit");
  EXPECT_EQ(en.header("x-echo-x-test-lang"), "en");
  HttpResponse fr = Get(path, {{"x-test-lang", "fr"}});
  EXPECT_EQ(fr.header("x-cache-status"), "Hit");
  EXPECT_EQ(fr.header("x-echo-x-test-lang"), "fr");
}

TEST_F(CacheTest, AChangedPolicyDropsTheRoutesEntriesAndOtherChangesKeepThem) {
  const std::string path = "/c/keep?cc=max-age=60";
  Get(path);
  ASSERT_EQ(Get(path).header("x-cache-status"), "Hit");
  // Another route changes: the entries stay.
  ASSERT_EQ(Apply(Config("lock_timeout: 10s",
                         "        - name: extra\n          match: {prefix: /extra}\n"
                         "          route: {cluster: origin}\n")),
            0)
      << last_error_;
  ASSERT_TRUE(proxy_->WaitForVersion(2));
  EXPECT_EQ(Get(path).header("x-cache-status"), "Hit");
  // The route's cache policy changes: they go.
  ASSERT_EQ(Apply(Config("lock_timeout: 9s")), 0) << last_error_;
  ASSERT_TRUE(proxy_->WaitForVersion(3));
  EXPECT_EQ(Get(path).header("x-cache-status"), "Miss");
  // A bad policy is refused with its field named; the last good one serves.
  ASSERT_NE(Apply(Config("max_object_bytes: 0")), 0);
  EXPECT_TRUE(absl::StrContains(last_error_, "max_object_bytes")) << last_error_;
  EXPECT_EQ(Get(path).header("x-cache-status"), "Hit");
}

TEST_F(CacheTest, MetricsCountEachCacheStatus) {
  const std::string path = "/c/m?cc=max-age=60";
  Get(path);
  Get(path);
  Get(path);
  EXPECT_EQ(proxy_->Stat("sluice_cache_responses_total{route_table=\"main\",route=\"cached\",virtual_host=\"0\",status=\"miss\"}"), 1);
  EXPECT_EQ(proxy_->Stat("sluice_cache_responses_total{route_table=\"main\",route=\"cached\",virtual_host=\"0\",status=\"hit\"}"), 2);
  EXPECT_EQ(proxy_->Stat("sluice_cache_entries"), 1);
  EXPECT_GT(proxy_->Stat("sluice_cache_bytes"), 0);
  // And in the access log, as nginx's $upstream_cache_status: empty on a
  // route without a cache policy.
  Get("/plain/x");
  auto count = [&](const std::string& what) {
    const std::string log = ReadFile(log_);
    int n = 0;
    for (size_t at = log.find(what); at != std::string::npos; at = log.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_TRUE(WaitFor([&] { return count("\"cache_status\":") == 4; }, absl::Seconds(10)))
      << ReadFile(log_);  // each worker's lines are written within 100 ms
  EXPECT_EQ(count("\"cache_status\":\"\"}"), 1) << ReadFile(log_);
  EXPECT_EQ(count("\"path\":\"/c/m?cc=max-age=60\""), 3) << ReadFile(log_);
  EXPECT_EQ(count("\"cache_status\":\"Miss\"}"), 1) << ReadFile(log_);
  EXPECT_EQ(count("\"cache_status\":\"Hit\"}"), 2) << ReadFile(log_);
}

// Two proxies, each with its own listener (node groups), both caching the
// same path; one purge through the control plane empties both.
TEST(CachePurgeAcrossProxiesTest, APurgeReachesEveryProxy) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  UpstreamServer origin("origin");
  ASSERT_TRUE(origin.ok());
  const int ports[2] = {PickFreePort(), PickFreePort()};
  std::string yaml = absl::StrCat(
      "kind: Cluster\nname: origin\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
      origin.port(),
      "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
      "    - domains: ['*']\n      routes:\n"
      "        - name: cached\n          match: {prefix: /}\n          route: {cluster: origin}\n"
      "          policies: [{name: cache, typed_config: {default_ttl: 60s}}]\n");
  for (int i = 0; i < 2; ++i) {
    absl::StrAppend(&yaml, "---\nkind: Listener\nname: l", i,
                    "\nspec: {address: 127.0.0.1, port: ", ports[i],
                    ", route_table: main, node_groups: [g", i, "]}\n");
  }
  auto applied = cp.Ctl({"apply", "-f", WriteFile(MakeTempDir("cache"), "c.yaml", yaml)});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  std::vector<std::unique_ptr<Proxy>> proxies;
  for (int i = 0; i < 2; ++i) {
    proxies.push_back(std::make_unique<Proxy>(
        cp.address(), absl::StrCat("p", i), 1, "",
        std::vector<std::string>{"--group", absl::StrCat("g", i)}));
    ASSERT_TRUE(proxies.back()->ok()) << proxies.back()->process().Log();
    ASSERT_TRUE(proxies.back()->WaitForVersion(1));
  }
  auto get = [&](int i, const std::string& path) {
    return HttpGet(absl::StrCat("127.0.0.1:", ports[i]), path);
  };
  for (int i = 0; i < 2; ++i) {
    for (const char* path : {"/items/1", "/items/2", "/other"}) {
      EXPECT_EQ(get(i, path).header("x-cache-status"), "Miss");
      EXPECT_EQ(get(i, path).header("x-cache-status"), "Hit");
    }
  }
  auto r = cp.Ctl({"cache", "purge", "--route", "cached", "--prefix", "/items/"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "purged 4 entries on 2 of 2 proxies")) << r.out;
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(get(i, "/items/1").header("x-cache-status"), "Miss");
    EXPECT_EQ(get(i, "/items/2").header("x-cache-status"), "Miss");
    EXPECT_EQ(get(i, "/other").header("x-cache-status"), "Hit");
  }
  // One key.
  r = cp.Ctl({"cache", "purge", "--path", "/other"});
  EXPECT_TRUE(absl::StrContains(r.out, "purged 2 entries on 2 of 2 proxies")) << r.out;
  EXPECT_EQ(get(0, "/other").header("x-cache-status"), "Miss");
}

// The cache stores the upstream's body, and a response-transformer before it
// in the chain edits every answer, a hit's too: a hit carries this caller's
// %CONSUMER%, not the first caller's. Before: the edited body was stored.
TEST_F(CacheTest, AHitIsEditedPerAnswerAndTheUpstreamsBodyIsStored) {
  const std::string route =
      "        - name: edited\n          match: {prefix: /e/}\n          route: {cluster: origin}\n"
      "          policies:\n"
      "            - {name: key-auth, typed_config: {}}\n"
      "            - name: response-transformer\n"
      "              typed_config:\n"
      "                headers: {add: [{name: x-served-for, value: '%CONSUMER%'}]}\n"
      "                body: {add: [{name: served_for, value: '\"%CONSUMER%\"'}]}\n"
      "            - {name: cache, typed_config: {key_consumer: false}}\n";
  const std::string consumers =
      "kind: Consumer\nname: alice\nspec: {keys: [{key: alice-key-0001}]}\n---\n"
      "kind: Consumer\nname: bob\nspec: {keys: [{key: bob-key-00002}]}\n---\n";
  ASSERT_EQ(Apply(consumers + Config("lock_timeout: 10s", route)), 0) << last_error_;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  const std::string path = "/e/doc?json=1&cc=public,max-age=60";
  HttpResponse miss = Get(path, {{"apikey", "alice-key-0001"}});
  ASSERT_TRUE(miss.ok()) << miss.error;
  EXPECT_EQ(miss.header("x-cache-status"), "Miss");
  EXPECT_TRUE(absl::StrContains(miss.body, "\"served_for\":\"alice\"")) << miss.body;
  for (const auto& [key, who] : {std::pair<const char*, const char*>{"bob-key-00002", "bob"},
                                 {"alice-key-0001", "alice"}}) {
    HttpResponse hit = Get(path, {{"apikey", key}});
    ASSERT_TRUE(hit.ok()) << hit.error;
    EXPECT_EQ(hit.header("x-cache-status"), "Hit") << who;
    EXPECT_EQ(hit.header("x-served-for"), who);
    EXPECT_TRUE(absl::StrContains(hit.body, absl::StrCat("\"served_for\":\"", who, "\"")))
        << who << ": " << hit.body;
    EXPECT_EQ(hit.header("content-length"), absl::StrCat(hit.body.size())) << who;
    // Edited once: one served_for field, not one per hit.
    EXPECT_EQ(hit.body.find("served_for"), hit.body.rfind("served_for")) << hit.body;
  }
}

}  // namespace
}  // namespace sluice::testing
