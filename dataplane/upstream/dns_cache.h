// DnsCache: the addresses of the host names that cluster endpoints are
// given by (Cluster.endpoints[].address), kept fresh for the snapshots.
//
// Each distinct (name, DNS servers) pair the config uses is a query. The
// cache looks every query up on its own thread, one at a time, when it is
// first tracked and then every refresh interval (the shortest of the
// clusters that use it), with c-ares: the servers given, or the host's
// (/etc/hosts first, then /etc/resolv.conf's servers). An answer replaces
// the last one; a name that does not exist or has no address answers with
// no address; a failure (timeout, SERVFAIL, refused) keeps the last answer
// and is told (DnsAnswer::problem, the log once per problem). When a
// query's addresses change, `on_change` gets its key on the cache's thread:
// the proxy compiles the clusters that use it again (ProxyMain).
//
// Thread-safe: Track() and Get() from any thread (the config thread, the
// compile); the lookups and `on_change` on the cache's thread.
#ifndef SLUICE_DATAPLANE_UPSTREAM_DNS_CACHE_H_
#define SLUICE_DATAPLANE_UPSTREAM_DNS_CACHE_H_

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

// What one lookup found: IP literals, each family sorted. An OK status with
// no address: the name has none (NXDOMAIN, or no A/AAAA record).
struct DnsLookupResult {
  absl::Status status;
  std::vector<std::string> v4;
  std::vector<std::string> v6;
};

// `servers`: "IP", "IP:PORT" or "[IPv6]:PORT"; empty: the host's resolver
// configuration. Gives up after `timeout`.
using DnsLookupFn = std::function<DnsLookupResult(
    const std::string& name, const std::vector<std::string>& servers, absl::Duration timeout)>;

// The lookup through c-ares.
DnsLookupResult CaresLookup(const std::string& name, const std::vector<std::string>& servers,
                            absl::Duration timeout);

struct DnsQuery {
  std::string name;                  // api::CanonicalHostName
  std::vector<std::string> servers;  // Cluster.dns_resolvers, in order
  absl::Duration refresh;
  // "name", or "name@server,server": a query's identity.
  std::string Key() const;
};

struct DnsAnswer {
  bool answered = false;  // a lookup has answered (with addresses or none)
  std::vector<std::string> v4;
  std::vector<std::string> v6;
  // Why the last lookup failed ("" when it answered); with `answered`, the
  // addresses above are the last answer's.
  std::string problem;
};

class DnsCache {
 public:
  static constexpr absl::Duration kLookupTimeout = absl::Seconds(5);

  // `stats` (may be null) receives sluice_dns_lookups_total{result}.
  explicit DnsCache(DnsLookupFn lookup = CaresLookup, stats::StatsStore* stats = nullptr);
  ~DnsCache();
  DnsCache(const DnsCache&) = delete;
  DnsCache& operator=(const DnsCache&) = delete;

  // Called with the keys of the queries whose addresses changed, on the
  // cache's thread. Set before Start().
  void SetOnChange(std::function<void(const std::set<std::string>& keys)> on_change) {
    on_change_ = std::move(on_change);
  }
  void Start();
  void Stop();

  // The queries the config uses now (others are forgotten). Waits up to
  // `wait` until every query never looked up before has had its first
  // lookup (answered or failed), so that a new cluster starts with its
  // endpoints, as Envoy's cluster warming does.
  void Track(const std::vector<DnsQuery>& queries, absl::Duration wait);
  // The last answer of `key` (DnsQuery::Key()); not answered when unknown.
  DnsAnswer Get(const std::string& key) const;

 private:
  struct Entry {
    DnsQuery query;
    DnsAnswer answer;
    bool looked_up = false;  // at least once (answered or not)
    absl::Time next;         // the next lookup
    std::string logged_problem;
  };
  void Loop();

  const DnsLookupFn lookup_;
  stats::Counter* lookups_answered_ = nullptr;
  stats::Counter* lookups_no_address_ = nullptr;
  stats::Counter* lookups_failed_ = nullptr;
  std::function<void(const std::set<std::string>&)> on_change_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // Track() calls
  std::thread thread_;
};

}  // namespace sluice::upstream

#endif  // SLUICE_DATAPLANE_UPSTREAM_DNS_CACHE_H_
