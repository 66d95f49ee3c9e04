// ConfigSnapshot: one config version compiled for the request path --
// route tables compiled for matching, clusters, listeners with their bound
// sockets and stats handles. Immutable once built and shared by every worker
// (read-copy-update: a request keeps the snapshot it started with; the last
// reference frees it).
//
// CompileSnapshot runs on the config thread; snapshots are read anywhere.
#ifndef SLUICE_DATAPLANE_CONFIG_SNAPSHOT_H_
#define SLUICE_DATAPLANE_CONFIG_SNAPSHOT_H_

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "api/resource.h"
#include "api/validation.h"
#include "dataplane/accesslog/access_log.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/http/filter.h"
#include "dataplane/http/path_normalizer.h"
#include "dataplane/net/socket.h"
#include "dataplane/net/transport_socket.h"
#include "dataplane/router/route_table.h"
#include "dataplane/stats/stats.h"
#include "dataplane/upstream/cluster.h"
#include "dataplane/upstream/endpoint_state.h"

namespace sluice::config {

// One SO_REUSEPORT listening socket per worker on one address. Closed when
// the last snapshot that uses it is freed.
struct ListenSockets {
  net::Address address;
  std::vector<int> fds;
  // Client connections open on these sockets now, across workers (kept
  // with the sockets across versions).
  std::atomic<int64_t> open_connections{0};
  // A compiled version has no listener on them any more: each worker shuts
  // its fd down (no new connection is accepted into its backlog) as it
  // applies that version, and the cache binds new sockets for the address
  // should a listener come back. The fds close with the last snapshot.
  std::atomic<bool> retired{false};
  ~ListenSockets();
};

// Keeps listening sockets across versions: a listener whose address stays
// keeps its sockets (no connection is refused during a change). Config
// thread only.
class ListenerSocketCache {
 public:
  explicit ListenerSocketCache(int workers) : workers_(workers) {}
  absl::StatusOr<std::shared_ptr<ListenSockets>> Get(const net::Address& address);

 private:
  int workers_;
  std::map<std::string, std::weak_ptr<ListenSockets>> by_address_;
};

// A route's compiled policies, in order (the virtual host's merged with the
// route's). Shared by the workers; each request makes its own filters.
using FilterChain = std::vector<std::shared_ptr<const http::FilterFactory>>;

// Responses by status class, per route.
// gRPC status codes 0 (OK) .. 16 (UNAUTHENTICATED).
constexpr int kGrpcStatusCount = 17;

// A route's sluice_route_grpc_responses_total series, made when its first
// gRPC response ends (most routes carry none: no 17 series each).
struct RouteGrpcStats {
  RouteGrpcStats(stats::StatsStore& s, std::string l) : store(s), labels(std::move(l)) {}
  stats::StatsStore& store;
  const std::string labels;  // the route's
  absl::Mutex mu;
  std::atomic<stats::MetricGroup*> group{nullptr};
  std::shared_ptr<const void> hold ABSL_GUARDED_BY(mu);
};

struct RouteStats {
  // The counter of gRPC status `code` (0..kGrpcStatusCount-1) for this
  // route; any worker thread.
  stats::Counter* GrpcStatus(int code) const;

  stats::Counter* by_class[6] = {};  // index status / 100; 0 unused
  stats::Counter* bytes_in = nullptr;   // request body bytes, every exchange's
  stats::Counter* bytes_out = nullptr;  // response body bytes handed on (as bytes_out logged)
  // From the request head to the response's end (or the cut).
  stats::Histogram* duration = nullptr;
  // Keeps the metrics above in the store: they are one StatsStore group
  // (StatsStore::GetGroup), so one hold keeps them all and a snapshot
  // taking a route's stats over from the one before copies one pointer.
  std::shared_ptr<const void> hold;
  std::shared_ptr<RouteGrpcStats> grpc;
};

// By route id; shared by the snapshots whose table has those routes.
using RouteStatsList = std::vector<RouteStats>;
using FilterChainList = std::vector<FilterChain>;

struct ListenerRuntime {
  std::string name;
  std::shared_ptr<ListenSockets> sockets;
  std::shared_ptr<const router::RouteTable> route_table;
  const std::vector<RouteStats>* route_stats = nullptr;  // by route id
  const std::vector<FilterChain>* route_filters = nullptr;  // by route id
  // Some route's policy takes a credential from the query: a request
  // answered before its route's policies ran logs its path without the query.
  bool query_credentials = false;
  size_t max_request_headers_bytes;
  absl::Duration request_headers_timeout;
  absl::Duration idle_timeout;
  uint32_t http2_max_concurrent_streams;
  uint32_t http2_initial_stream_window;
  bool http2_websocket = true;  // SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441)
  uint32_t max_connections = 0;  // 0: no listener limit
  uint32_t max_uri_bytes;
  uint32_t max_request_headers;
  uint64_t max_request_body_bytes = 0;  // 0: no limit
  uint32_t max_requests_per_connection = 0;  // 0: no limit
  absl::Duration max_connection_age = absl::ZeroDuration();  // 0: none
  http::PathNormalizeOptions path_normalization;
  // TLS termination: makes each connection's transport socket. nullptr for
  // plain HTTP.
  std::shared_ptr<const net::TransportSocketFactory> tls;
  // What decides who may connect and how, hashed: 0 for plain HTTP; with
  // TLS its versions, ciphers, ALPN protocols and client certificate rules
  // (not its certificates: a rotation keeps connections). Open connections
  // of a listener whose value changed are drained (compared per connection
  // at each version: a number, not the client CAs' PEM).
  size_t tls_access = 0;
  uint32_t trusted_proxy_hops = 0;  // http.trusted_proxy_hops
  // http.headers_with_underscores
  config::v1::HttpOptions::HeadersWithUnderscoresAction headers_with_underscores =
      config::v1::HttpOptions::ALLOW;
  bool proxy_protocol = false;  // every connection starts with a PROXY header
  // Responses by status class on this listener (index status / 100).
  stats::Counter* by_class[6] = {};
  std::shared_ptr<const void> holds[6];
  // The listener's access log; nullptr for none.
  std::shared_ptr<const accesslog::AccessLog> access_log;
};

// A container compiled once and shared by the snapshots that have it
// unchanged: a new snapshot copies the pointer, not the elements (2,000
// clusters' endpoints need not be copied and freed for a route change).
// Reads as the container it holds (find, count, at, iteration, and a
// conversion to a const reference); Mutable() gives a copy of the snapshot's
// own to change while the snapshot is being built (config thread only; a
// published snapshot is never changed).
template <typename Container>
class Shared {
 public:
  using key_type = typename Container::key_type;
  using const_iterator = typename Container::const_iterator;

  Shared() : value_(std::make_shared<Container>()) {}

  const Container& get() const { return *value_; }
  operator const Container&() const { return *value_; }  // NOLINT: reads as the container
  const_iterator begin() const { return value_->begin(); }
  const_iterator end() const { return value_->end(); }
  size_t size() const { return value_->size(); }
  bool empty() const { return value_->empty(); }
  size_t count(const key_type& key) const { return value_->count(key); }
  const_iterator find(const key_type& key) const { return value_->find(key); }
  template <typename C = Container>
  const typename C::mapped_type& at(const key_type& key) const {
    return value_->at(key);
  }
  // Whether `other` is this very container (a snapshot sharing it).
  bool SharedWith(const Shared& other) const { return value_ == other.value_; }
  // Copies the elements first when another snapshot shares them.
  Container& Mutable() {
    if (value_.use_count() != 1) value_ = std::make_shared<Container>(*value_);
    return *value_;
  }

 private:
  std::shared_ptr<Container> value_;
};

struct ConfigSnapshot {
  uint64_t version = 0;
  // The resources themselves are not kept here (the config client holds
  // the one copy, for the stream and /config_dump): only what they compile to.
  std::map<std::string, ListenerRuntime> listeners;
  std::map<std::string, std::shared_ptr<const router::RouteTable>> route_tables;
  // By route table. A table unchanged from the version before shares these
  // with it (and the listeners point into them).
  std::map<std::string, std::shared_ptr<const RouteStatsList>> route_stats;
  std::map<std::string, std::shared_ptr<const FilterChainList>> route_filters;
  // Each virtual host's compiled policies, in order, by route table: a
  // patched table's replaced and inserted routes are given the same
  // instances as the routes kept (a policy's state, such as a rate limit's, is per instance).
  std::map<std::string, std::shared_ptr<const FilterChainList>> virtual_host_filters;
  // The clusters and their endpoints' keys are shared with the snapshot
  // before when no cluster (or Secret) was added, changed or removed.
  Shared<std::unordered_map<std::string, std::shared_ptr<const upstream::ClusterInfo>>> clusters;
  Shared<std::set<std::string>> endpoint_keys;  // every endpoint of every cluster
  // Every endpoint's pool key (EndpointInfo::pool_key): pooled connections
  // under any other key are closed.
  Shared<std::set<std::string>> pool_keys;
  // The Consumer resources, for authentication policies. Never null.
  std::shared_ptr<const auth::ConsumerIndex> consumers;
};

// Whether listener `name`, in both snapshots, changed what decides who may
// connect to it (ListenerRuntime::tls_access): its open connections are
// drained then, as Envoy drains a changed filter chain's.
// Listener `name` as `before` and `after` have it; nulls unless both do.
inline std::pair<const ListenerRuntime*, const ListenerRuntime*> ListenerInBoth(
    const ConfigSnapshot* before, const ConfigSnapshot& after, const std::string& name) {
  if (before == nullptr) return {nullptr, nullptr};
  auto was = before->listeners.find(name);
  auto is = after.listeners.find(name);
  if (was == before->listeners.end() || is == after.listeners.end()) return {nullptr, nullptr};
  return {&was->second, &is->second};
}

inline bool ListenerAccessChanged(const ConfigSnapshot* before, const ConfigSnapshot& after,
                                  const std::string& name) {
  auto [was, is] = ListenerInBoth(before, after, name);
  return was != nullptr && was->tls_access != is->tls_access;
}

// Whether listener `name`, in both snapshots, changed the rules a
// connection takes when it is accepted (http: idle_timeout,
// request_headers_timeout, max_requests_per_connection, max_connection_age,
// the header limits, the HTTP/2 settings): its open connections are
// drained, so the new rules reach every client soon (as an Envoy listener
// update drains the old connections).
inline bool ListenerConnectionRulesChanged(const ConfigSnapshot* before,
                                           const ConfigSnapshot& after, const std::string& name) {
  auto [was, is] = ListenerInBoth(before, after, name);
  return was != nullptr &&
         (was->idle_timeout != is->idle_timeout ||
          was->request_headers_timeout != is->request_headers_timeout ||
          was->max_requests_per_connection != is->max_requests_per_connection ||
          was->max_connection_age != is->max_connection_age ||
          was->max_request_headers_bytes != is->max_request_headers_bytes ||
          was->max_request_headers != is->max_request_headers ||
          was->http2_max_concurrent_streams != is->http2_max_concurrent_streams ||
          was->http2_initial_stream_window != is->http2_initial_stream_window ||
          was->http2_websocket != is->http2_websocket);
}

// Whether listener `name`, in both snapshots, moved: to other sockets (its
// address or port changed) or to or from the PROXY protocol. Connections
// accepted on the old address are drained, as Envoy drains a listener whose
// address changed: moving a listener off a public address must not leave
// its keep-alive clients connected there.
inline bool ListenerMoved(const ConfigSnapshot* before, const ConfigSnapshot& after,
                          const std::string& name) {
  auto [was, is] = ListenerInBoth(before, after, name);
  return was != nullptr &&
         (was->sockets != is->sockets || was->proxy_protocol != is->proxy_protocol);
}

// Validates `resources` with the shared validation library and compiles
// them. Errors name the resource and field; nothing is bound on error
// except sockets that the next successful version may reuse.
//
// With `previous` and `change` (what the new version changes from
// previous's: api::ConfigChange), clusters and route tables that did not
// change are taken over from `previous` compiled as they are, so one changed
// route table costs that table's compilation, not the whole config's. (A
// cluster whose tls names a changed Secret is compiled again.) A route table
// patched route by route (change->patched) costs its replaced routes: they
// are validated (api::ValidateChange) and compiled
// (router::RouteTable::Recompile) alone, given their own stats and policy
// chains, and every other route keeps previous's. One with routes added or
// removed (change->spliced) is compiled whole (router::RouteTable::Compile),
// but only its inserted and replaced routes are validated and given new
// policy chains; every route that survived the splice keeps previous's
// stats and chain (by its old id), unless its stats labels changed (an
// unnamed route's default name "<virtual host>/<index>" follows its index):
// the result is what compiling the table whole would give.
//
// Only the listeners placed on `node_group` (the proxy's --group; see
// api::ListenerPlacedOn) are bound and compiled; the whole config is
// validated all the same.
//
// `dns` has the addresses of the endpoints given by host name (see
// upstream::CompileCluster); a cluster whose names' addresses changed is
// compiled again by a `change` that names it.
absl::StatusOr<std::shared_ptr<const ConfigSnapshot>> CompileSnapshot(
    uint64_t version, const api::ResourceMap& resources, ListenerSocketCache& sockets,
    stats::StatsStore& store, upstream::HealthRegistry& registry,
    const ConfigSnapshot* previous = nullptr, const api::ConfigChange* change = nullptr,
    absl::string_view node_group = "", const upstream::DnsCache* dns = nullptr);

}  // namespace sluice::config

#endif  // SLUICE_DATAPLANE_CONFIG_SNAPSHOT_H_
