// DnsCache with a lookup the test answers (no network), and the endpoints a
// cluster given by host names compiles to.
#include "dataplane/upstream/dns_cache.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "dataplane/upstream/cluster.h"

namespace sluice::upstream {
namespace {

DnsLookupResult Ok(std::vector<std::string> v4, std::vector<std::string> v6) {
  return {absl::OkStatus(), absl::OkStatus(), std::move(v4), std::move(v6), {}};
}
DnsLookupResult Failed(const std::string& why) {
  return {absl::DeadlineExceededError("A: " + why), absl::DeadlineExceededError("AAAA: " + why),
          {}, {}, {}};
}

// Answers from a table the test edits; counts lookups per name.
class FakeDns {
 public:
  DnsLookupFn Fn() {
    return [this](const std::string& name, const std::vector<std::string>& servers,
                  absl::Duration, const std::atomic<bool>& cancelled) {
      absl::MutexLock lock(&mu_);
      ++lookups_[name];
      servers_seen_ = servers;
      auto free = [this, &name]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return held_.count(name) == 0;
      };
      // Until released, or the cache stops (a test that failed half-way
      // must not hang in the cache's destructor).
      while (!mu_.AwaitWithTimeout(absl::Condition(&free), absl::Milliseconds(50)) &&
             !cancelled.load()) {
      }
      auto it = table_.find(name);
      return it == table_.end() ? DnsLookupResult{} : it->second;
    };
  }
  void Set(const std::string& name, DnsLookupResult result) {
    absl::MutexLock lock(&mu_);
    table_[name] = std::move(result);
  }
  int Lookups(const std::string& name) {
    absl::MutexLock lock(&mu_);
    return lookups_[name];
  }
  bool WaitForLookups(const std::string& name, int n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return lookups_[name] >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
  }
  // A lookup of `name` waits until Hold(name, false).
  void Hold(const std::string& name, bool hold) {
    absl::MutexLock lock(&mu_);
    if (hold) {
      held_.insert(name);
    } else {
      held_.erase(name);
    }
  }
  std::vector<std::string> servers_seen() {
    absl::MutexLock lock(&mu_);
    return servers_seen_;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, DnsLookupResult> table_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> lookups_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> servers_seen_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> held_ ABSL_GUARDED_BY(mu_);
};

DnsQuery Query(const std::string& name, absl::Duration refresh = absl::Seconds(1)) {
  DnsQuery q;
  q.name = name;
  q.refresh = refresh;
  return q;
}

// Changed keys, as the cache reports them.
class Changes {
 public:
  void Add(const std::set<std::string>& keys) {
    absl::MutexLock lock(&mu_);
    for (const auto& k : keys) ++count_[k];
  }
  int Count(const std::string& key) {
    absl::MutexLock lock(&mu_);
    return count_[key];
  }
  bool WaitFor(const std::string& key, int n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return count_[key] >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, int> count_ ABSL_GUARDED_BY(mu_);
};

TEST(DnsCacheTest, TrackWaitsForTheFirstLookupThenRefreshes) {
  FakeDns dns;
  dns.Set("backend.test", Ok({"10.0.0.1"}, {"fd00::1"}));
  Changes changes;
  DnsCache cache(dns.Fn());
  cache.SetOnChange([&](const std::set<std::string>& keys) { changes.Add(keys); });
  cache.Start();
  cache.Track({Query("backend.test", absl::Milliseconds(50))}, absl::Seconds(5));
  DnsAnswer a = cache.Get("backend.test");
  EXPECT_TRUE(a.answered);
  EXPECT_EQ(a.v4, std::vector<std::string>{"10.0.0.1"});
  EXPECT_EQ(a.v6, std::vector<std::string>{"fd00::1"});
  // Looked up again every interval; a change is reported once.
  ASSERT_TRUE(dns.WaitForLookups("backend.test", 3));
  ASSERT_TRUE(changes.WaitFor("backend.test", 1));  // the first answer
  dns.Set("backend.test", Ok({"10.0.0.1", "10.0.0.2"}, {}));
  ASSERT_TRUE(changes.WaitFor("backend.test", 2));
  a = cache.Get("backend.test");
  EXPECT_EQ(a.v4, (std::vector<std::string>{"10.0.0.1", "10.0.0.2"}));
  EXPECT_TRUE(a.v6.empty());
  const int lookups = dns.Lookups("backend.test");
  ASSERT_TRUE(dns.WaitForLookups("backend.test", lookups + 3));
  EXPECT_EQ(changes.Count("backend.test"), 2);  // the same answers: no change
}

TEST(DnsCacheTest, AFailureKeepsTheLastAddresses) {
  FakeDns dns;
  dns.Set("backend.test", Ok({"10.0.0.1"}, {}));
  DnsCache cache(dns.Fn());
  cache.Start();
  cache.Track({Query("backend.test", absl::Milliseconds(20))}, absl::Seconds(5));
  dns.Set("backend.test", Failed("no answer within 5s"));
  const int lookups = dns.Lookups("backend.test");
  ASSERT_TRUE(dns.WaitForLookups("backend.test", lookups + 2));
  DnsAnswer a = cache.Get("backend.test");
  EXPECT_TRUE(a.answered);
  EXPECT_EQ(a.v4, std::vector<std::string>{"10.0.0.1"});
  EXPECT_EQ(a.problem, "A: no answer within 5s; AAAA: no answer within 5s");
  // No such name: an answer, with no address.
  dns.Set("backend.test", Ok({}, {}));
  ASSERT_TRUE(dns.WaitForLookups("backend.test", dns.Lookups("backend.test") + 2));
  a = cache.Get("backend.test");
  EXPECT_TRUE(a.answered);
  EXPECT_TRUE(a.v4.empty());
  EXPECT_EQ(a.problem, "");
}

TEST(DnsCacheTest, ASlowLookupBoundsTheWaitAndForgottenNamesStop) {
  FakeDns dns;
  dns.Set("slow.test", Ok({"10.0.0.9"}, {}));
  dns.Hold("slow.test", true);
  DnsCache cache(dns.Fn());
  cache.Start();
  const absl::Time start = absl::Now();
  cache.Track({Query("slow.test")}, absl::Milliseconds(200));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_FALSE(cache.Get("slow.test").answered);
  dns.Hold("slow.test", false);
  // Forgotten: no more lookups of it, and nothing to get.
  ASSERT_TRUE(dns.WaitForLookups("slow.test", 1));
  cache.Track({Query("other.test", absl::Milliseconds(20))}, absl::Seconds(5));
  const int lookups = dns.Lookups("slow.test");
  ASSERT_TRUE(dns.WaitForLookups("other.test", 5));
  EXPECT_EQ(dns.Lookups("slow.test"), lookups);
  EXPECT_FALSE(cache.Get("slow.test").answered);
}

// A family whose query fails keeps its last addresses, whatever the
// other's answer (A and AAAA looked up together took a SERVFAIL of AAAA
// for "no IPv6 address", and a V6_ONLY cluster lost its endpoints).
TEST(DnsCacheTest, AFamilysFailureKeepsThatFamilysAddresses) {
  FakeDns dns;
  dns.Set("fam.test", Ok({"10.0.0.2"}, {"::1"}));
  Changes changes;
  DnsCache cache(dns.Fn());
  cache.SetOnChange([&](const std::set<std::string>& keys) { changes.Add(keys); });
  cache.Start();
  cache.Track({Query("fam.test", absl::Milliseconds(20))}, absl::Seconds(5));
  ASSERT_TRUE(changes.WaitFor("fam.test", 1));
  dns.Set("fam.test", {absl::OkStatus(), absl::UnavailableError("AAAA: the server failed (SERVFAIL)"),
                       {"10.0.0.3"}, {}, {}});
  // The problem is a change too: /clusters and a 503 say it.
  ASSERT_TRUE(changes.WaitFor("fam.test", 2));
  DnsAnswer a = cache.Get("fam.test");
  EXPECT_EQ(a.v4, std::vector<std::string>{"10.0.0.3"});
  EXPECT_EQ(a.v6, std::vector<std::string>{"::1"});
  EXPECT_EQ(a.problem, "AAAA: the server failed (SERVFAIL)");
  // It answers again: the problem goes, another change.
  dns.Set("fam.test", Ok({"10.0.0.3"}, {"::1"}));
  ASSERT_TRUE(changes.WaitFor("fam.test", 3));
  EXPECT_EQ(cache.Get("fam.test").problem, "");
}

// Lookups run side by side, and a change is told on a thread of its own:
// an apply waiting (in Track) for two new names while the change of the
// first one waited for the apply's lock took the whole 5 s, and the second
// name went without an answer. A name that never answers holds one lookup
// thread, not the others.
TEST(DnsCacheTest, LookupsRunSideBySideAndChangesDoNotHoldThemUp) {
  FakeDns dns;
  dns.Set("p1.test", Ok({"10.0.0.1"}, {}));
  dns.Set("p2.test", Ok({"10.0.0.2"}, {}));
  absl::Mutex apply_lock;  // the config client's, held by the apply
  Changes changes;
  DnsCache cache(dns.Fn());
  cache.SetOnChange([&](const std::set<std::string>& keys) {
    absl::MutexLock lock(&apply_lock);
    changes.Add(keys);
  });
  cache.Start();
  {
    absl::MutexLock lock(&apply_lock);
    const absl::Time start = absl::Now();
    cache.Track({Query("p1.test"), Query("p2.test")}, absl::Seconds(5));
    EXPECT_LT(absl::Now() - start, absl::Seconds(2));
    EXPECT_TRUE(cache.Get("p1.test").answered);
    EXPECT_TRUE(cache.Get("p2.test").answered);
  }
  ASSERT_TRUE(changes.WaitFor("p2.test", 1));
  // One name hangs: the others go on at their interval.
  dns.Hold("hung.test", true);
  cache.Track({Query("hung.test"), Query("p1.test", absl::Milliseconds(20))},
              absl::ZeroDuration());
  ASSERT_TRUE(dns.WaitForLookups("hung.test", 1));
  const int before = dns.Lookups("p1.test");
  EXPECT_TRUE(dns.WaitForLookups("p1.test", before + 3));
  dns.Hold("hung.test", false);
}

TEST(DnsCacheTest, ServersArePartOfTheQuery) {
  FakeDns dns;
  dns.Set("backend.test", Ok({"10.0.0.1"}, {}));
  DnsCache cache(dns.Fn());
  cache.Start();
  DnsQuery q = Query("backend.test");
  q.servers = {"127.0.0.1:5353", "[::1]:53"};
  EXPECT_EQ(q.Key(), "backend.test@127.0.0.1:5353,[::1]:53");
  cache.Track({q}, absl::Seconds(5));
  EXPECT_TRUE(cache.Get(q.Key()).answered);
  EXPECT_FALSE(cache.Get("backend.test").answered);
  EXPECT_EQ(dns.servers_seen(), q.servers);
}

// A name asked of other servers (dns_resolvers changed) starts from the
// addresses it had, and keeps them when those servers fail, as a failed
// refresh keeps them. Before: no endpoint until the new servers answered,
// none at all when they could not be reached (every request 503).
TEST(DnsCacheTest, ANameAskedOfOtherServersStartsFromItsAddresses) {
  FakeDns dns;
  dns.Set("backend.test", Ok({"10.0.0.1"}, {}));
  DnsCache cache(dns.Fn());
  cache.Start();
  cache.Track({Query("backend.test")}, absl::Seconds(5));
  ASSERT_TRUE(cache.Get("backend.test").answered);
  dns.Set("backend.test", Failed("no server gave an answer"));
  DnsQuery moved = Query("backend.test");
  moved.servers = {"127.0.0.1:5353"};
  cache.Track({moved}, absl::Seconds(5));
  DnsAnswer a = cache.Get(moved.Key());
  EXPECT_TRUE(a.answered);
  EXPECT_EQ(a.v4, std::vector<std::string>{"10.0.0.1"});
  // Their failure keeps them.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (cache.Get(moved.Key()).problem.empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  a = cache.Get(moved.Key());
  EXPECT_TRUE(a.answered);
  EXPECT_EQ(a.v4, std::vector<std::string>{"10.0.0.1"});
  EXPECT_EQ(a.problem, "A: no server gave an answer; AAAA: no server gave an answer");
  // Their first answer replaces them.
  dns.Set("backend.test", Ok({"10.0.0.2"}, {}));
  ASSERT_TRUE(dns.WaitForLookups("backend.test", dns.Lookups("backend.test") + 2));
  EXPECT_EQ(cache.Get(moved.Key()).v4, std::vector<std::string>{"10.0.0.2"});
}

// Only from the servers the name is no longer asked of: another cluster's
// servers, still asked, may answer otherwise (before: a cluster moved to
// an unreachable server took the other's "no address", and 503s).
TEST(DnsCacheTest, ANameMovedToOtherServersDoesNotTakeAnotherClustersAnswer) {
  FakeDns dns;
  DnsCache cache(dns.Fn());
  cache.Start();
  DnsQuery first = Query("backend.test", absl::Hours(1));
  first.servers = {"10.9.9.2"};
  DnsQuery other = Query("backend.test", absl::Hours(1));
  other.servers = {"10.9.9.1"};  // listed first among the cache's keys
  dns.Set("backend.test", Ok({"10.0.0.1"}, {}));
  cache.Track({first}, absl::Seconds(5));
  dns.Set("backend.test", Ok({}, {}));  // what the other servers say: no such name
  cache.Track({first, other}, absl::Seconds(5));
  ASSERT_TRUE(cache.Get(other.Key()).answered);
  ASSERT_TRUE(cache.Get(other.Key()).v4.empty());
  dns.Hold("backend.test", true);  // the first cluster's new servers: no answer yet
  DnsQuery moved = Query("backend.test", absl::Hours(1));
  moved.servers = {"10.9.9.3"};
  cache.Track({moved, other}, absl::ZeroDuration());
  EXPECT_EQ(cache.Get(moved.Key()).v4, std::vector<std::string>{"10.0.0.1"});
  dns.Hold("backend.test", false);
}

// A cluster of names compiles to one endpoint per address of its family,
// with the name's port and weight; an address met twice is listed once;
// a name without addresses is a problem named.
TEST(DnsClusterTest, NamesBecomeOneEndpointPerAddress) {
  FakeDns dns;
  dns.Set("a.test", Ok({"10.0.0.1", "10.0.0.2"}, {"fd00::1"}));
  dns.Set("b.test", Ok({"10.0.0.2"}, {}));
  dns.Set("v6.test", Ok({}, {"fd00::6"}));
  DnsCache cache(dns.Fn());
  cache.Start();
  config::v1::Cluster c;
  c.set_name("c");
  auto add = [&](const std::string& address, uint32_t weight) {
    auto* e = c.add_endpoints();
    e->set_address(address);
    e->set_port(8080);
    e->set_weight(weight);
  };
  add("A.test.", 3);
  add("b.test", 1);
  add("v6.test", 1);
  add("none.test", 1);
  add("10.0.0.9", 2);
  cache.Track(DnsQueries(c), absl::Seconds(5));
  stats::StatsStore store;
  HealthRegistry registry;
  auto keys = [&](const ClusterInfo& info) {
    std::vector<std::string> out;
    for (const auto& e : info.endpoints) {
      out.push_back(absl::StrCat(e.key, "/", e.weight, "/", e.host_name));
    }
    return out;
  };
  // V4_PREFERRED: a name's IPv4 addresses, its IPv6 ones when it has none.
  auto info = CompileCluster(c, {}, store, registry, nullptr, &cache);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(keys(**info), (std::vector<std::string>{
                              "10.0.0.1:8080/3/a.test", "10.0.0.2:8080/3/a.test",
                              "[fd00::6]:8080/1/v6.test", "10.0.0.9:8080/2/"}));
  EXPECT_EQ((*info)->dns_problems, std::vector<std::string>{"none.test: no address"});
  EXPECT_EQ((*info)->total_weight, 3u + 3 + 1 + 2);
  c.set_dns_lookup_family(config::v1::Cluster::ALL);
  info = CompileCluster(c, {}, store, registry, nullptr, &cache);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ((*info)->endpoints.size(), 5u);
  c.set_dns_lookup_family(config::v1::Cluster::V6_ONLY);
  info = CompileCluster(c, {}, store, registry, nullptr, &cache);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(keys(**info), (std::vector<std::string>{"[fd00::1]:8080/3/a.test",
                                                     "[fd00::6]:8080/1/v6.test",
                                                     "10.0.0.9:8080/2/"}));
  EXPECT_EQ((*info)->dns_problems,
            (std::vector<std::string>{"b.test: no address of dns_lookup_family V6_ONLY",
                                      "none.test: no address"}));
  // Without the cache (or before any answer) a name gives no endpoint.
  info = CompileCluster(c, {}, store, registry, nullptr, nullptr);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ((*info)->endpoints.size(), 1u);
  EXPECT_EQ((*info)->dns_problems.size(), 4u);
}

}  // namespace
}  // namespace sluice::upstream
