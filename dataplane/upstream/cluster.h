// ClusterInfo: one upstream cluster compiled from config; immutable and
// shared by all workers through the config snapshot.
//
// Per-worker mutable state (round-robin position, requests in flight,
// pooled connections) lives in EndpointPicker and ConnectionPool, keyed by
// cluster name and endpoint key, so it survives a new snapshot that keeps
// the cluster or the endpoint.
#ifndef SLUICE_DATAPLANE_UPSTREAM_CLUSTER_H_
#define SLUICE_DATAPLANE_UPSTREAM_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/net/socket.h"
#include "dataplane/stats/stats.h"
#include "sluice/config/v1/config.pb.h"

namespace sluice::upstream {

struct EndpointInfo {
  std::string key;  // "127.0.0.1:9001": identity across versions
  net::Address address;
  uint32_t weight = 1;
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
};

struct ClusterInfo {
  std::string name;
  std::vector<EndpointInfo> endpoints;
  config::v1::Cluster::LbPolicy lb_policy = config::v1::Cluster::ROUND_ROBIN;
  bool equal_weights = true;
  uint32_t total_weight = 0;
  absl::Duration connect_timeout;
  uint32_t max_idle_per_endpoint = 64;
  ClusterStats stats;
};

// Compiles a validated Cluster; `store` receives its stats.
absl::StatusOr<std::shared_ptr<const ClusterInfo>> CompileCluster(
    const config::v1::Cluster& cluster, stats::StatsStore& store);

}  // namespace sluice::upstream

#endif  // SLUICE_DATAPLANE_UPSTREAM_CLUSTER_H_
