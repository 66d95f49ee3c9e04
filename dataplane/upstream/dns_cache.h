// DnsCache: the addresses of the host names that cluster endpoints are
// given by (Cluster.endpoints[].address), kept fresh for the snapshots.
//
// Each distinct (name, DNS servers) pair the config uses is a query. The
// cache looks each query up when it is first tracked and then every refresh
// interval (the shortest of the clusters that use it), on a pool of
// kLookupThreads threads (a name whose server does not answer holds one
// thread for up to kLookupTimeout, not the others), with c-ares: the servers
// given, or the host's (/etc/hosts first, then /etc/resolv.conf's
// servers). The A and AAAA queries are answered each on its own: an answer
// replaces that family's last addresses (none when the name does not exist
// or has no such record); a failure (timeout, SERVFAIL, refused) keeps them
// and is told (DnsAnswer::problem, the log once per problem). When a
// query's addresses or problem change, `on_change` gets its key, on a
// thread of the cache's own that does nothing else (it may wait: the proxy
// compiles the clusters that use the name again under the config client's
// lock, while an apply holding that lock waits in Track for lookups).
//
// Thread-safe: Track() and Get() from any thread.
#ifndef SLUICE_DATAPLANE_UPSTREAM_DNS_CACHE_H_
#define SLUICE_DATAPLANE_UPSTREAM_DNS_CACHE_H_

#include <atomic>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "dataplane/stats/stats.h"

namespace sluice::upstream {

// What one lookup found, per family: OK with its addresses (IP literals,
// sorted; none: no such record, or no such name), or why the family's
// query failed.
struct DnsLookupResult {
  absl::Status v4_status;
  absl::Status v6_status;
  std::vector<std::string> v4;
  std::vector<std::string> v6;
  // Answers left out, naming no endpoint (0.0.0.0/8, ::, multicast,
  // broadcast: a DNS sinkhole answers 0.0.0.0), sorted.
  std::vector<std::string> left_out;
};

// `servers`: "IP", "IP:PORT" or "[IPv6]:PORT"; empty: the host's resolver
// configuration. Gives up after `timeout`, or soon after `cancelled`.
using DnsLookupFn = std::function<DnsLookupResult(
    const std::string& name, const std::vector<std::string>& servers, absl::Duration timeout,
    const std::atomic<bool>& cancelled)>;

// The lookup through c-ares.
DnsLookupResult CaresLookup(const std::string& name, const std::vector<std::string>& servers,
                            absl::Duration timeout, const std::atomic<bool>& cancelled);

struct DnsQuery {
  std::string name;                  // api::CanonicalHostName
  std::vector<std::string> servers;  // Cluster.dns_resolvers, in order
  absl::Duration refresh;
  // "name", or "name@server,server": a query's identity.
  std::string Key() const;
};

struct DnsAnswer {
  bool answered = false;  // a family's query has answered (with addresses or none)
  std::vector<std::string> v4;
  std::vector<std::string> v6;
  // Why the last lookup's queries failed ("" when both answered); the
  // addresses of a family whose query failed are its last answer's.
  std::string problem;
  std::vector<std::string> left_out;  // of the last answer: see DnsLookupResult
};

class DnsCache {
 public:
  static constexpr absl::Duration kLookupTimeout = absl::Seconds(5);
  static constexpr int kLookupThreads = 8;

  // `stats` (may be null) receives sluice_dns_lookups_total{result}.
  explicit DnsCache(DnsLookupFn lookup = CaresLookup, stats::StatsStore* stats = nullptr);
  ~DnsCache();
  DnsCache(const DnsCache&) = delete;
  DnsCache& operator=(const DnsCache&) = delete;

  // Called with the keys of the queries whose addresses or problem changed,
  // on the cache's notifying thread. Set before Start().
  void SetOnChange(std::function<void(const std::set<std::string>& keys)> on_change) {
    on_change_ = std::move(on_change);
  }
  void Start();
  // Cancels the lookups in flight and joins the threads.
  void Stop();

  // The queries the config uses now (others are forgotten). Waits up to
  // `wait` until every query never looked up before has had its first
  // lookup (answered or failed), so that a new cluster starts with its
  // endpoints, as Envoy's cluster warming does. A new query's name starts
  // from the addresses it had from servers no longer asked: asked by
  // `next` (the version being applied, while `queries` holds the running
  // one's too), or by `queries` when `next` is null.
  void Track(const std::vector<DnsQuery>& queries, absl::Duration wait,
             const std::vector<DnsQuery>* next = nullptr);
  // The last answer of `key` (DnsQuery::Key()); not answered when unknown.
  DnsAnswer Get(const std::string& key) const;

 private:
  struct Entry {
    DnsQuery query;
    DnsAnswer answer;
    bool looked_up = false;  // at least once (answered or not)
    bool in_flight = false;
    absl::Time next;         // the next lookup
    std::string logged_problem;
  };
  void LookupLoop();
  void NotifyLoop();
  // Takes `result` for `key` (lock held); true when what compiles from it
  // changed.
  bool TakeResult(const std::string& key, DnsLookupResult result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const DnsLookupFn lookup_;
  stats::Counter* lookups_answered_ = nullptr;
  stats::Counter* lookups_no_address_ = nullptr;
  stats::Counter* lookups_failed_ = nullptr;
  std::function<void(const std::set<std::string>&)> on_change_;
  std::atomic<bool> cancelled_{false};
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> changed_ ABSL_GUARDED_BY(mu_);  // for NotifyLoop
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // bumped by every change of entries_
  std::vector<std::thread> threads_;
};

}  // namespace sluice::upstream

#endif  // SLUICE_DATAPLANE_UPSTREAM_DNS_CACHE_H_
