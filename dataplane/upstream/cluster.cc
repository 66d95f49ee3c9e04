#include "dataplane/upstream/cluster.h"

#include "absl/strings/str_cat.h"
#include "api/validation.h"

namespace sluice::upstream {

absl::StatusOr<std::shared_ptr<const ClusterInfo>> CompileCluster(
    const config::v1::Cluster& cluster, stats::StatsStore& store) {
  auto info = std::make_shared<ClusterInfo>();
  info->name = cluster.name();
  info->lb_policy = cluster.lb_policy();
  info->connect_timeout = cluster.has_connect_timeout()
                              ? absl::Seconds(cluster.connect_timeout().seconds()) +
                                    absl::Nanoseconds(cluster.connect_timeout().nanos())
                              : api::kDefaultConnectTimeout;
  info->max_idle_per_endpoint = cluster.max_idle_connections_per_endpoint()
                                    ? cluster.max_idle_connections_per_endpoint()
                                    : api::kDefaultMaxIdleConnectionsPerEndpoint;
  for (int i = 0; i < cluster.endpoints_size(); ++i) {
    const auto& e = cluster.endpoints(i);
    auto address = net::ParseAddress(e.address(), static_cast<uint16_t>(e.port()));
    if (!address.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("Cluster \"", cluster.name(),
                                                     "\": endpoints[", i, "]: ",
                                                     address.status().message()));
    }
    EndpointInfo endpoint;
    endpoint.address = *address;
    endpoint.key = address->ToString();
    endpoint.weight = e.weight() ? e.weight() : 1;
    if (!info->endpoints.empty() && endpoint.weight != info->endpoints[0].weight) {
      info->equal_weights = false;
    }
    info->total_weight += endpoint.weight;
    info->endpoints.push_back(std::move(endpoint));
  }
  std::string labels = absl::StrCat("cluster=", stats::LabelValue(cluster.name()));
  info->stats.upstream_requests = store.GetCounter("sluice_upstream_requests_total", labels);
  info->stats.upstream_connect_failures =
      store.GetCounter("sluice_upstream_connect_failures_total", labels);
  info->stats.upstream_resets = store.GetCounter("sluice_upstream_resets_total", labels);
  info->stats.upstream_timeouts = store.GetCounter("sluice_upstream_timeouts_total", labels);
  info->stats.upstream_responses_5xx =
      store.GetCounter("sluice_upstream_responses_5xx_total", labels);
  info->stats.no_healthy_endpoint =
      store.GetCounter("sluice_upstream_no_endpoint_total", labels);
  info->stats.connections_opened =
      store.GetCounter("sluice_upstream_connections_opened_total", labels);
  info->stats.connections_reused =
      store.GetCounter("sluice_upstream_connections_reused_total", labels);
  return std::shared_ptr<const ClusterInfo>(std::move(info));
}

}  // namespace sluice::upstream
