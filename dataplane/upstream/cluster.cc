#include "dataplane/upstream/cluster.h"

#include <atomic>
#include <iterator>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "api/resource.h"
#include "api/validation.h"
#include "dataplane/net/tls.h"

namespace sluice::upstream {

namespace {

uint32_t OrDefault(uint32_t value, uint32_t fallback) { return value ? value : fallback; }

int TlsVersion(const std::string& text, int unset) {
  if (text == "1.2") return TLS1_2_VERSION;
  if (text == "1.3") return TLS1_3_VERSION;
  return unset;
}

// The TLS client settings from the cluster's tls block and the Secrets it
// names (validated already; checked again, as the listener's are).
absl::StatusOr<net::TlsClientConfig> UpstreamTlsConfig(const config::v1::UpstreamTls& tls,
                                                       config::v1::Cluster::Protocol protocol,
                                                       const api::ResourceMap& resources) {
  auto secret = [&](const std::string& name) -> const config::v1::Secret* {
    auto it = resources.find({config::v1::SECRET, name});
    return it == resources.end() ? nullptr : &it->second.secret();
  };
  net::TlsClientConfig config;
  switch (protocol) {
    case config::v1::Cluster::HTTP2: config.alpn_protocols = {"h2"}; break;
    case config::v1::Cluster::AUTO: config.alpn_protocols = {"h2", "http/1.1"}; break;
    default: config.alpn_protocols = {"http/1.1"}; break;
  }
  config.verify = !tls.insecure_skip_verify();
  if (config.verify) {
    const config::v1::Secret* ca = secret(tls.ca());
    if (ca == nullptr || !ca->has_trusted_ca()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tls.ca: Secret \"", tls.ca(), "\" is not a trusted_ca"));
    }
    config.ca_pem = ca->trusted_ca().ca_certificates();
  }
  config.sni = absl::AsciiStrToLower(tls.sni());
  if (!tls.client_certificate().empty()) {
    const config::v1::Secret* cert = secret(tls.client_certificate());
    if (cert == nullptr || !cert->has_tls_certificate()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tls.client_certificate: Secret \"", tls.client_certificate(),
          "\" is not a tls_certificate"));
    }
    config.client_chain_pem = cert->tls_certificate().certificate_chain();
    config.client_key_pem = cert->tls_certificate().private_key();
  }
  config.min_version = TlsVersion(tls.min_version(), TLS1_2_VERSION);
  config.max_version = TlsVersion(tls.max_version(), TLS1_3_VERSION);
  return config;
}

// The cluster's TLS context: the previous version's when the settings are
// equal, else a new one.
absl::StatusOr<std::shared_ptr<const net::TlsClientContext>> UpstreamTlsContext(
    const config::v1::UpstreamTls& tls, config::v1::Cluster::Protocol protocol,
    const api::ResourceMap& resources, const ClusterInfo* previous) {
  auto config = UpstreamTlsConfig(tls, protocol, resources);
  if (!config.ok()) return config.status();
  if (previous != nullptr && previous->transport != nullptr) {
    auto kept = std::dynamic_pointer_cast<const net::TlsClientContext>(previous->transport);
    if (kept != nullptr && kept->config() == *config) return kept;
  }
  auto context = net::TlsClientContext::Create(*config);
  if (!context.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tls: ", context.status().message()));
  }
  return std::shared_ptr<const net::TlsClientContext>(std::move(*context));
}

// A cluster's counters: family, labels after cluster="...", and the
// ClusterStats field that points at it. ClusterStatsSpec() lists them in
// this order.
struct ClusterCounter {
  const char* name;
  const char* extra_labels;
  stats::Counter* ClusterStats::*field;
};
constexpr ClusterCounter kClusterCounters[] = {
    {"sluice_upstream_requests_total", "", &ClusterStats::upstream_requests},
    {"sluice_upstream_connect_failures_total", "", &ClusterStats::upstream_connect_failures},
    {"sluice_upstream_resets_total", "", &ClusterStats::upstream_resets},
    {"sluice_upstream_timeouts_total", "", &ClusterStats::upstream_timeouts},
    {"sluice_upstream_responses_5xx_total", "", &ClusterStats::upstream_responses_5xx},
    {"sluice_upstream_no_endpoint_total", "", &ClusterStats::no_healthy_endpoint},
    {"sluice_upstream_connections_opened_total", "", &ClusterStats::connections_opened},
    {"sluice_upstream_connections_reused_total", "", &ClusterStats::connections_reused},
    {"sluice_health_check_passes_total", "", &ClusterStats::health_check_passes},
    {"sluice_health_check_failures_total", "", &ClusterStats::health_check_failures},
    {"sluice_outlier_ejections_total", "", &ClusterStats::outlier_ejections},
    {"sluice_circuit_breaker_overflows_total", ",breaker=\"max_connections\"",
     &ClusterStats::breaker_overflow_connections},
    {"sluice_circuit_breaker_overflows_total", ",breaker=\"max_pending_requests\"",
     &ClusterStats::breaker_overflow_pending},
    {"sluice_circuit_breaker_overflows_total", ",breaker=\"max_requests\"",
     &ClusterStats::breaker_overflow_requests},
    {"sluice_circuit_breaker_overflows_total", ",breaker=\"max_retries\"",
     &ClusterStats::breaker_overflow_retries},
    {"sluice_retries_total", "", &ClusterStats::retries},
    {"sluice_retry_successes_total", "", &ClusterStats::retry_successes},
    {"sluice_retries_exhausted_total", "", &ClusterStats::retries_exhausted},
    {"sluice_lb_panic_picks_total", "", &ClusterStats::panic},
};

// A cluster's metrics, made and held as one group (labels: cluster="..."):
// kClusterCounters, then the first-byte and duration histograms.
const stats::MetricGroupSpec& ClusterStatsSpec() {
  static const stats::MetricGroupSpec* const spec = [] {
    auto* s = new stats::MetricGroupSpec;
    for (const ClusterCounter& c : kClusterCounters) {
      s->counters.push_back({c.name, c.extra_labels});
    }
    s->histograms = {"sluice_upstream_first_byte_seconds", "sluice_upstream_duration_seconds"};
    return s;
  }();
  return *spec;
}

// The query of an endpoint given by host name.
DnsQuery QueryOf(const config::v1::Cluster& cluster, const config::v1::Endpoint& endpoint) {
  DnsQuery query;
  query.name = api::CanonicalHostName(endpoint.address());
  query.servers.assign(cluster.dns_resolvers().begin(), cluster.dns_resolvers().end());
  query.refresh = cluster.has_dns_refresh_interval()
                      ? api::ToDuration(cluster.dns_refresh_interval())
                      : api::kDefaultDnsRefreshInterval;
  return query;
}

}  // namespace

std::vector<DnsQuery> DnsQueries(const config::v1::Cluster& cluster) {
  std::vector<DnsQuery> queries;
  for (const auto& e : cluster.endpoints()) {
    if (api::IsEndpointHostName(e.address())) queries.push_back(QueryOf(cluster, e));
  }
  return queries;
}

absl::StatusOr<std::shared_ptr<const ClusterInfo>> CompileCluster(
    const config::v1::Cluster& cluster, const api::ResourceMap& resources,
    stats::StatsStore& store, HealthRegistry& registry, const ClusterInfo* previous,
    const DnsCache* dns) {
  auto info = std::make_shared<ClusterInfo>();
  std::string pool_suffix;  // after the endpoint key in pool keys
  if (cluster.has_tls()) {
    auto context = UpstreamTlsContext(cluster.tls(), cluster.protocol(), resources, previous);
    if (!context.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("Cluster \"", cluster.name(), "\": ",
                                                     context.status().message()));
    }
    pool_suffix = absl::StrCat(" tls:", cluster.name(), "#", (*context)->id());
    info->transport = std::move(*context);
  } else if (cluster.protocol() != config::v1::Cluster::HTTP1) {
    pool_suffix = absl::StrCat(" h2c:", cluster.name());
  } else {
    pool_suffix = absl::StrCat(" http:", cluster.name());
  }
  static std::atomic<uint64_t> next_uid{1};
  info->uid = next_uid.fetch_add(1, std::memory_order_relaxed);
  switch (cluster.protocol()) {
    case config::v1::Cluster::HTTP2: info->protocol = UpstreamProtocol::kHttp2; break;
    case config::v1::Cluster::AUTO: info->protocol = UpstreamProtocol::kAuto; break;
    default: info->protocol = UpstreamProtocol::kHttp1; break;
  }
  info->max_concurrent_streams = OrDefault(cluster.max_concurrent_streams(),
                                           api::kDefaultUpstreamMaxConcurrentStreams);
  if (cluster.has_health_check()) {
    const auto& hc = cluster.health_check();
    HealthCheckConfig& h = info->health_check;
    h.enabled = true;
    if (hc.has_http()) {
      h.kind = HealthCheckConfig::Kind::kHttp;
      h.path = hc.http().path();
      h.host = hc.http().host();
    } else if (hc.has_grpc()) {
      h.kind = HealthCheckConfig::Kind::kGrpc;
      h.grpc_service = hc.grpc().service_name();
      h.host = hc.grpc().authority();
    }
    h.expected.assign(hc.http().expected_statuses().begin(), hc.http().expected_statuses().end());
    h.interval = hc.has_interval() ? api::ToDuration(hc.interval()) : api::kDefaultHealthCheckInterval;
    h.timeout = hc.has_timeout() ? api::ToDuration(hc.timeout()) : api::kDefaultHealthCheckTimeout;
    h.jitter = api::ToDuration(hc.interval_jitter());
    h.healthy_threshold = OrDefault(hc.healthy_threshold(), api::kDefaultHealthyThreshold);
    h.unhealthy_threshold = OrDefault(hc.unhealthy_threshold(), api::kDefaultUnhealthyThreshold);
    h.healthy_on_add = hc.healthy_on_add();
  }
  if (cluster.has_outlier_detection()) {
    const auto& od = cluster.outlier_detection();
    OutlierConfig& o = info->outlier;
    o.enabled = true;
    o.consecutive_5xx = od.has_consecutive_5xx() ? od.consecutive_5xx().value()
                                                 : api::kDefaultConsecutive5xx;
    o.consecutive_gateway_failure = od.has_consecutive_gateway_failure()
                                        ? od.consecutive_gateway_failure().value()
                                        : api::kDefaultConsecutiveGatewayFailure;
    o.base_ejection_time = od.has_base_ejection_time() ? api::ToDuration(od.base_ejection_time())
                                                       : api::kDefaultBaseEjectionTime;
    // The default cap follows a longer base: one ejection lasts at least
    // the base the operator wrote (before: a 600s base was cut to 300s).
    o.max_ejection_time = od.has_max_ejection_time()
                              ? api::ToDuration(od.max_ejection_time())
                              : std::max(api::kDefaultMaxEjectionTime, o.base_ejection_time);
    o.max_ejection_percent = od.has_max_ejection_percent() ? od.max_ejection_percent().value()
                                                           : api::kDefaultMaxEjectionPercent;
    o.uneject_on_health_check_pass = !od.has_successful_active_health_check_uneject_host() ||
                                     od.successful_active_health_check_uneject_host().value();
  }
  const auto& cb = cluster.circuit_breakers();
  info->breakers = {OrDefault(cb.max_connections(), api::kDefaultMaxConnections),
                    OrDefault(cb.max_pending_requests(), api::kDefaultMaxPendingRequests),
                    OrDefault(cb.max_requests(), api::kDefaultMaxRequests),
                    cb.max_retries(),
                    OrDefault(cb.retry_budget().budget_percent(), api::kDefaultRetryBudgetPercent),
                    OrDefault(cb.retry_budget().min_retry_concurrency(),
                              api::kDefaultMinRetryConcurrency)};
  info->panic_threshold_percent = cluster.has_panic_threshold_percent()
                                      ? cluster.panic_threshold_percent().value()
                                      : api::kDefaultPanicThresholdPercent;
  info->hash_policy = cluster.hash_policy();
  // An endpoint new to a cluster that was there before joins it now (slow
  // start); one of a new cluster's (or a starting proxy's) does not.
  const bool cluster_known = registry.KnowsCluster(cluster.name());
  info->state = registry.Cluster(cluster.name());
  if (cluster.has_slow_start()) {
    info->slow_start_window_ns =
        absl::ToInt64Nanoseconds(api::ToDuration(cluster.slow_start().window()));
    if (cluster.slow_start().has_min_weight_percent()) {
      info->slow_start_min_percent = cluster.slow_start().min_weight_percent().value();
    }
    // Turned on for a cluster in service: from now (its endpoints serving
    // keep their share); a window or minimum changed later keeps the time.
    int64_t since = info->state->slow_start_since_ns.load();
    if (since == 0) {
      since = cluster_known ? NowNanos() : 1;
      info->state->slow_start_since_ns.store(since);
    }
    info->slow_start_since_ns = since;
  } else {
    info->state->slow_start_since_ns.store(0);
  }
  info->name = cluster.name();
  info->lb_policy = cluster.lb_policy();
  info->connect_timeout = cluster.has_connect_timeout()
                              ? api::ToDuration(cluster.connect_timeout())
                              : api::kDefaultConnectTimeout;
  info->keepalive_interval = cluster.has_keepalive_interval()
                                 ? api::ToDuration(cluster.keepalive_interval())
                                 : absl::ZeroDuration();
  info->idle_connection_timeout = cluster.has_idle_connection_timeout()
                                      ? api::ToDuration(cluster.idle_connection_timeout())
                                      : api::kDefaultIdleConnectionTimeout;
  // ConnectionPool sweeps once a second (ConnectionPool::IdleSweeps).
  info->idle_connection_sweeps = static_cast<uint64_t>(
      absl::ToInt64Seconds(absl::Ceil(info->idle_connection_timeout, absl::Seconds(1))));
  info->max_idle_per_endpoint = cluster.max_idle_connections_per_endpoint()
                                    ? cluster.max_idle_connections_per_endpoint()
                                    : api::kDefaultMaxIdleConnectionsPerEndpoint;
  // Each endpoint given by address, and each address of a host name.
  struct Target {
    std::string ip;
    const config::v1::Endpoint* endpoint;
    int index;
  };
  std::vector<Target> targets;
  for (int i = 0; i < cluster.endpoints_size(); ++i) {
    const auto& e = cluster.endpoints(i);
    if (!api::IsEndpointHostName(e.address())) {
      targets.push_back({e.address(), &e, i});
      continue;
    }
    const DnsQuery query = QueryOf(cluster, e);
    const DnsAnswer answer = dns != nullptr ? dns->Get(query.Key()) : DnsAnswer();
    std::vector<std::string> ips;
    switch (cluster.dns_lookup_family()) {
      case config::v1::Cluster::V4_ONLY: ips = answer.v4; break;
      case config::v1::Cluster::V6_ONLY: ips = answer.v6; break;
      case config::v1::Cluster::ALL:
        ips = answer.v4;
        ips.insert(ips.end(), answer.v6.begin(), answer.v6.end());
        break;
      default: ips = answer.v4.empty() ? answer.v6 : answer.v4; break;
    }
    if (ips.empty()) {
      info->dns_problems.push_back(absl::StrCat(
          query.name, ": ",
          !answer.problem.empty() ? answer.problem
          : !answer.answered      ? std::string("no answer yet")
          : answer.v4.empty() && answer.v6.empty()
              ? (answer.left_out.empty()
                     ? std::string("no address")
                     : absl::StrCat("no address (answered ", absl::StrJoin(answer.left_out, ", "),
                                    ", which names no endpoint)"))
              : absl::StrCat("no address of dns_lookup_family ",
                             config::v1::Cluster::DnsLookupFamily_Name(
                                 cluster.dns_lookup_family()))));
    }
    for (std::string& ip : ips) targets.push_back({std::move(ip), &e, i});
  }
  std::set<std::string> listed;
  for (const Target& target : targets) {
    const auto& e = *target.endpoint;
    auto address = net::ParseAddress(target.ip, static_cast<uint16_t>(e.port()));
    if (!address.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("Cluster \"", cluster.name(),
                                                     "\": endpoints[", target.index, "]: ",
                                                     address.status().message()));
    }
    EndpointInfo endpoint;
    endpoint.address = *address;
    endpoint.key = address->ToString();
    if (!listed.insert(endpoint.key).second) continue;  // listed before
    endpoint.pool_key = endpoint.key + pool_suffix;
    endpoint.ip = target.ip;
    endpoint.port = static_cast<uint16_t>(e.port());
    // The name as looked up: lower case, no trailing dot (a health check's
    // Host of "HC.Test.:80" fails many servers' virtual-host matching).
    if (target.ip != e.address()) endpoint.host_name = api::CanonicalHostName(e.address());
    Health initial = info->health_check.enabled && !info->health_check.healthy_on_add
                         ? Health::kUnknown
                         : Health::kHealthy;
    endpoint.state = registry.Endpoint(cluster.name(), endpoint.key, initial, cluster_known);
    if (!info->outlier.enabled) {
      // Outlier detection taken off: its ejection (and the count that would
      // lengthen the next one) goes with it, as an active check's health
      // does when the check is removed. One ejected until now ends now,
      // back in the rotation (slow start counts from here).
      const int64_t now = NowNanos();
      if (endpoint.state->ejected_until_ns.load() > now) {
        endpoint.state->ejected_until_ns.store(now);
      }
      endpoint.state->times_ejected.store(0);
      endpoint.state->consecutive_5xx.store(0);
      endpoint.state->consecutive_gateway_failures.store(0);
    } else {
      KeepEjectionDecay(*endpoint.state, EjectionDecayPeriod(info->outlier), NowNanos());
    }
    endpoint.weight = e.has_weight() ? e.weight() : 1;
    if (!info->endpoints.empty() && endpoint.weight != info->endpoints[0].weight) {
      info->equal_weights = false;
    }
    info->total_weight += endpoint.weight;
    info->endpoints.push_back(std::move(endpoint));
  }
  if ((info->lb_policy == config::v1::Cluster::RING_HASH ||
       info->lb_policy == config::v1::Cluster::MAGLEV) &&
      !info->endpoints.empty()) {
    std::vector<std::string> keys;
    std::vector<uint32_t> weights;
    for (const auto& e : info->endpoints) {
      keys.push_back(e.key);
      weights.push_back(e.weight);
    }
    info->hash_table =
        info->lb_policy == config::v1::Cluster::RING_HASH
            ? BuildRingHash(keys, weights, OrDefault(cluster.ring_points_per_weight(), api::kDefaultRingPointsPerWeight))
            : BuildMaglev(keys, weights, api::kMaglevTableSize);
  }
  std::string labels = absl::StrCat("cluster=", stats::LabelValue(cluster.name()));
  // Held by this ClusterInfo: a removed cluster's metrics go with it.
  stats::MetricGroup* group = store.GetGroup(ClusterStatsSpec(), labels, &info->stat_hold);
  for (size_t i = 0; i < std::size(kClusterCounters); ++i) {
    info->stats.*kClusterCounters[i].field = group->counter(i);
  }
  info->stats.upstream_first_byte = group->histogram(0);
  info->stats.upstream_duration = group->histogram(1);
  return std::shared_ptr<const ClusterInfo>(std::move(info));
}

}  // namespace sluice::upstream
