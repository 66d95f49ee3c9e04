// The admin endpoint's /clusters page: per cluster and endpoint, its health
// and why (active check, outlier ejection), weight, requests in flight, open
// connections, successes and errors. Text for people, JSON for tools.
//
// Thread-safe: reads the immutable snapshot and atomic state.
#ifndef SLUICE_DATAPLANE_ADMIN_CLUSTERS_PAGE_H_
#define SLUICE_DATAPLANE_ADMIN_CLUSTERS_PAGE_H_

#include <string>

#include "dataplane/config/snapshot.h"

namespace sluice::admin {

std::string RenderClusters(const config::ConfigSnapshot* snapshot, bool json);

// The `sluice_cluster_endpoints{cluster,health}` gauges (Prometheus text,
// with HELP and TYPE): per cluster of the snapshot, how many endpoints are
// healthy, unhealthy, unknown and ejected, as RenderClusters tells them.
std::string RenderEndpointHealthMetrics(const config::ConfigSnapshot* snapshot);

}  // namespace sluice::admin

#endif  // SLUICE_DATAPLANE_ADMIN_CLUSTERS_PAGE_H_
