// ClusterInfo: one upstream cluster compiled from config; immutable and
// shared by all workers through the config snapshot.
//
// Per-worker mutable state (round-robin position, requests in flight,
// pooled connections) lives in EndpointPicker and ConnectionPool, keyed by
// cluster name and endpoint key (pool key), so it survives a new snapshot
// that keeps the cluster or the endpoint.
#ifndef SLUICE_DATAPLANE_UPSTREAM_CLUSTER_H_
#define SLUICE_DATAPLANE_UPSTREAM_CLUSTER_H_

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "api/resource.h"
#include "dataplane/net/socket.h"
#include "dataplane/net/transport_socket.h"
#include "dataplane/stats/stats.h"
#include "dataplane/upstream/consistent_hash.h"
#include "dataplane/upstream/dns_cache.h"
#include "dataplane/upstream/endpoint_state.h"
#include "sluice/config/v1/config.pb.h"

namespace sluice::upstream {

struct EndpointInfo {
  std::string key;  // "127.0.0.1:9001": identity across versions
  // Which pooled connections may carry this cluster's requests to it, and
  // the key of this worker's per-(cluster, endpoint) state (requests in
  // flight): the endpoint and the cluster's name ("127.0.0.1:9001
  // http:users", "127.0.0.1:50051 h2c:grpc"), for TLS also its TLS context
  // ("127.0.0.1:9443 tls:users#3"). Two clusters that share an endpoint
  // never share connections, counts or breakers, and connections made with
  // other TLS settings are never reused.
  std::string pool_key;
  std::string ip;   // "127.0.0.1" / "::1"
  uint16_t port = 0;
  // The host name it was resolved from (Cluster.endpoints[].address, as
  // written); empty for an endpoint given by address.
  std::string host_name;
  net::Address address;
  uint32_t weight = 1;
  std::shared_ptr<EndpointState> state;  // shared across workers and versions
};

struct HealthCheckConfig {
  bool enabled = false;
  enum class Kind { kTcp, kHttp, kGrpc };
  Kind kind = Kind::kTcp;
  std::string path;
  std::string host;                  // empty: the endpoint's address (HTTP and gRPC)
  std::string grpc_service;          // gRPC: the service asked about
  std::vector<uint32_t> expected;    // empty: 200..299
  absl::Duration interval;
  absl::Duration timeout;
  absl::Duration jitter;
  uint32_t healthy_threshold = 2;
  uint32_t unhealthy_threshold = 3;
  bool healthy_on_add = false;
};

struct OutlierConfig {
  bool enabled = false;
  uint32_t consecutive_5xx = 0;              // 0: off
  uint32_t consecutive_gateway_failure = 0;  // 0: off
  absl::Duration base_ejection_time;
  absl::Duration max_ejection_time;
  uint32_t max_ejection_percent = 10;
  // A passing active health check ends an ejection.
  bool uneject_on_health_check_pass = true;
};

// How long an endpoint must go without an ejection for the count that
// lengthens its ejections to go down by one: base_ejection_time, at least
// 10 s (Envoy's default sweep interval).
inline absl::Duration EjectionDecayPeriod(const OutlierConfig& o) {
  return std::max(o.base_ejection_time, absl::Seconds(10));
}

// `times` ejected, one less for each `period` since `from_ns` (0: never).
inline uint32_t DecayedTimes(uint32_t times, int64_t from_ns, int64_t now_ns,
                             absl::Duration period) {
  if (times == 0 || from_ns <= 0 || now_ns <= from_ns) return times;
  const int64_t steps = (now_ns - from_ns) / absl::ToInt64Nanoseconds(period);
  return steps >= times ? 0 : times - static_cast<uint32_t>(steps);
}

// The count that lengthens an endpoint's next ejection, as of `now_ns`:
// its times ejected, one less for each decay period since its last
// ejection ended (or since a config changed the period, see
// KeepEjectionDecay).
inline uint32_t DecayedTimesEjected(const OutlierConfig& o, const EndpointState& s,
                                    int64_t now_ns) {
  return DecayedTimes(s.times_ejected.load(),
                      std::max(s.ejected_until_ns.load(), s.decay_from_ns.load()), now_ns,
                      EjectionDecayPeriod(o));
}

// A cluster version with another decay period: the decay so far is kept
// (counted with the period it ran under) and the new period counts from
// now. Before, the whole time since the last ejection was counted again
// with the new period: raising base_ejection_time gave long-healthy
// endpoints their old counts back, lowering it erased recent ones.
inline void KeepEjectionDecay(EndpointState& s, absl::Duration period, int64_t now_ns) {
  const int64_t period_ns = absl::ToInt64Nanoseconds(period);
  const int64_t was = s.decay_period_ns.exchange(period_ns);
  if (was == 0 || was == period_ns) return;
  const int64_t from = std::max(s.ejected_until_ns.load(), s.decay_from_ns.load());
  if (from <= 0 || from >= now_ns) return;  // never ejected, or ejected now
  s.times_ejected.store(DecayedTimes(s.times_ejected.load(), from, now_ns, absl::Nanoseconds(was)));
  s.decay_from_ns.store(now_ns);
}

struct BreakerLimits {
  int64_t max_connections;
  int64_t max_pending_requests;
  int64_t max_requests;
  // A fixed cap on retries in flight (circuit_breakers.max_retries), or 0:
  // the retry budget decides.
  int64_t max_retries;
  uint32_t retry_budget_percent;
  uint32_t min_retry_concurrency;
  // Retries that may be in flight now, given `active_requests`.
  int64_t RetryLimit(int64_t active_requests) const {
    if (max_retries > 0) return max_retries;
    return std::max<int64_t>(min_retry_concurrency,
                             active_requests * retry_budget_percent / 100);
  }
};

struct ClusterStats {
  stats::Counter* upstream_requests;
  stats::Counter* upstream_connect_failures;
  stats::Counter* upstream_resets;        // refused or reset before a response
  stats::Counter* upstream_timeouts;
  stats::Counter* upstream_responses_5xx;
  stats::Counter* no_healthy_endpoint;
  stats::Counter* connections_opened;
  stats::Counter* connections_reused;
  stats::Counter* health_check_passes;
  stats::Counter* health_check_failures;
  stats::Counter* outlier_ejections;
  stats::Counter* breaker_overflow_connections;
  stats::Counter* breaker_overflow_pending;
  stats::Counter* breaker_overflow_requests;
  stats::Counter* breaker_overflow_retries;
  stats::Counter* retries;            // retries started
  stats::Counter* retry_successes;    // requests that succeeded on a retry
  stats::Counter* retries_exhausted;  // requests that failed after retrying
  stats::Counter* panic;              // picks made in panic mode
  // From the request's (last) try going upstream: to the response head
  // (time to first byte), and to the response's end.
  stats::Histogram* upstream_first_byte;
  stats::Histogram* upstream_duration;
};

// The HTTP version spoken to the endpoints (Cluster.protocol).
enum class UpstreamProtocol { kHttp1, kHttp2, kAuto };

struct ClusterInfo {
  std::string name;
  // Unique per compiled cluster in this process (never reused, unlike an
  // address): per-worker state caches compare it.
  uint64_t uid = 0;
  UpstreamProtocol protocol = UpstreamProtocol::kHttp1;
  // HTTP/2: streams per connection before another one is opened.
  uint32_t max_concurrent_streams = 100;
  // HTTP/2: a PING after this long with nothing received (Cluster
  // keepalive_interval); zero: Http2Pool's defaults.
  absl::Duration keepalive_interval = absl::ZeroDuration();
  std::vector<EndpointInfo> endpoints;
  config::v1::Cluster::LbPolicy lb_policy = config::v1::Cluster::ROUND_ROBIN;
  bool equal_weights = true;
  uint32_t total_weight = 0;
  absl::Duration connect_timeout;
  uint32_t max_idle_per_endpoint = 64;
  absl::Duration idle_connection_timeout = absl::Seconds(60);  // HTTP/1.1 pool
  uint64_t idle_connection_sweeps = 60;  // the same, in ConnectionPool sweeps
  HealthCheckConfig health_check;
  OutlierConfig outlier;
  BreakerLimits breakers;
  uint32_t panic_threshold_percent = 50;  // 0: never panic
  // Slow start (Cluster.slow_start): 0 when off.
  int64_t slow_start_window_ns = 0;
  int64_t slow_start_since_ns = 0;  // ClusterState::slow_start_since_ns
  uint32_t slow_start_min_percent = 10;
  config::v1::HashPolicy hash_policy;
  std::shared_ptr<const ConsistentHashTable> hash_table;  // RING_HASH, MAGLEV
  // TLS to the endpoints (a net::TlsClientContext): makes each connection's
  // transport socket, for requests and health checks. nullptr: plain TCP.
  std::shared_ptr<const net::TransportSocketFactory> transport;
  std::shared_ptr<ClusterState> state;                    // shared across workers
  // Host names of endpoints that gave no endpoint at the compile, and why
  // ("backend.internal: no address", "... : no answer within 5s"), for
  // /clusters and the 503 of a cluster left without endpoints.
  std::vector<std::string> dns_problems;
  ClusterStats stats;
  std::shared_ptr<const void> stat_hold;  // keeps `stats` (one StatsStore group) in the store
};

// Compiles a validated Cluster; `resources` holds the Secrets its tls names,
// `store` receives its stats and `registry` provides the state that persists
// across versions. `previous` (this cluster compiled for the running
// version, or nullptr): when its TLS settings and Secrets are equal, its TLS
// context is kept, and with it the pooled connections and the session to
// resume. Errors name the cluster and the field ("tls: ca: ...").
//
// Endpoints given by host name become one endpoint per address `dns` has
// for the name (of the cluster's dns_lookup_family), each with the
// endpoint's port and weight; an address listed before (by another name,
// or as an address) is not listed again. Without `dns`, or before its
// first answer, a name gives none.
absl::StatusOr<std::shared_ptr<const ClusterInfo>> CompileCluster(
    const config::v1::Cluster& cluster, const api::ResourceMap& resources,
    stats::StatsStore& store, HealthRegistry& registry, const ClusterInfo* previous = nullptr,
    const DnsCache* dns = nullptr);

// The DNS queries of a cluster's endpoints given by host name (none when
// every endpoint is an address).
std::vector<DnsQuery> DnsQueries(const config::v1::Cluster& cluster);

}  // namespace sluice::upstream

#endif  // SLUICE_DATAPLANE_UPSTREAM_CLUSTER_H_
