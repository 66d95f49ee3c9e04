#include "dataplane/config/snapshot.h"

#include <unistd.h>

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "api/tls_material.h"
#include "api/validation.h"
#include "common/log.h"
#include "dataplane/net/tls.h"
#include "dataplane/policy/chain.h"
#include "dataplane/policy/registry.h"

namespace sluice::config {
namespace {

int TlsVersion(const std::string& text, int unset) {
  if (text == "1.2") return TLS1_2_VERSION;
  if (text == "1.3") return TLS1_3_VERSION;
  return unset;
}

// The listener's TLS context from its `tls` block and the Secrets it names
// (validated already).
absl::StatusOr<std::shared_ptr<const net::TransportSocketFactory>> CompileListenerTls(
    const config::v1::ListenerTls& tls, const api::ResourceMap& resources) {
  net::TlsServerConfig server;
  auto secret = [&](const std::string& name) -> const config::v1::Secret* {
    auto it = resources.find({config::v1::SECRET, name});
    return it == resources.end() ? nullptr : &it->second.secret();
  };
  for (int i = 0; i < tls.certificates_size(); ++i) {
    const config::v1::Secret* s = secret(tls.certificates(i));
    if (s == nullptr || !s->has_tls_certificate()) {
      return absl::InvalidArgumentError(absl::StrCat("tls.certificates[", i, "]: Secret \"",
                                                     tls.certificates(i), "\" is not a tls_certificate"));
    }
    api::CertificateInfo info;
    api::TlsMaterialError error;
    // Expiry is checked when a Secret is applied, not here: a certificate
    // that expires while it is in use must not make the proxy refuse its
    // whole config (it keeps serving it; clients see the expiry).
    if (!api::ParseTlsCertificate(s->tls_certificate(), &info, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("Secret \"", s->name(), "\": ", error.field,
                                                     ": ", error.message));
    }
    if (api::TlsMaterialError expiry; !api::CheckValidAt(info, absl::Now(), &expiry)) {
      SLUICE_LOG(kWarning, "Secret \"", s->name(), "\": ", expiry.message);
    }
    net::TlsCertificateConfig cert;
    cert.chain_pem = s->tls_certificate().certificate_chain();
    cert.key_pem = s->tls_certificate().private_key();
    cert.dns_names = std::move(info.dns_names);
    server.certificates.push_back(std::move(cert));
  }
  server.min_version = TlsVersion(tls.min_version(), TLS1_2_VERSION);
  server.max_version = TlsVersion(tls.max_version(), TLS1_3_VERSION);
  server.cipher_list = tls.cipher_suites();
  for (const std::string& protocol : tls.alpn_protocols()) server.alpn_protocols.push_back(protocol);
  if (server.alpn_protocols.empty()) {
    server.alpn_protocols.push_back("h2");
    server.alpn_protocols.push_back("http/1.1");
  }
  if (!tls.client_ca().empty()) {
    const config::v1::Secret* ca = secret(tls.client_ca());
    if (ca == nullptr || !ca->has_trusted_ca()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tls.client_ca: Secret \"", tls.client_ca(), "\" is not a trusted_ca"));
    }
    server.client_ca_pem = ca->trusted_ca().ca_certificates();
    server.require_client_certificate =
        !tls.has_require_client_certificate() || tls.require_client_certificate().value();
  }
  server.session_tickets = !tls.has_session_tickets() || tls.session_tickets().value();
  auto context = net::TlsServerContext::Create(server);
  if (!context.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tls: ", context.status().message()));
  }
  return std::shared_ptr<const net::TransportSocketFactory>(std::move(*context));
}

// One policy list entry compiled by its registered factory.
absl::StatusOr<std::shared_ptr<const http::FilterFactory>> CompilePolicy(
    const config::v1::TypedExtensionConfig& policy, const std::string& field) {
  const api::PolicyValidator* validator = api::FindPolicyValidator(policy.name());
  const policy::PolicyFactory* factory = policy::FindPolicyFactory(policy.name());
  if (validator == nullptr || factory == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": policy '", policy.name(), "' is not in this proxy build"));
  }
  std::string error;
  auto config = api::UnpackPolicyConfig(*validator, policy.typed_config(), &error);
  if (config == nullptr) return absl::InvalidArgumentError(absl::StrCat(field, ": ", error));
  auto compiled = factory->Compile(*config);
  if (!compiled.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", compiled.status().message()));
  }
  return compiled;
}

// Each route's chain, by route id (declaration order across virtual hosts):
// the virtual host's policies, a route policy of the same name replacing the
// virtual host's in place, the route's others appended.
absl::StatusOr<std::vector<FilterChain>> CompileRouteFilters(const config::v1::RouteTable& table) {
  std::vector<FilterChain> chains;
  for (int v = 0; v < table.virtual_hosts_size(); ++v) {
    const config::v1::VirtualHost& vhost = table.virtual_hosts(v);
    FilterChain vhost_chain;
    for (int i = 0; i < vhost.policies_size(); ++i) {
      auto f = CompilePolicy(vhost.policies(i),
                             absl::StrCat("virtual_hosts[", v, "].policies[", i, "]"));
      if (!f.ok()) return f.status();
      vhost_chain.push_back(std::move(*f));
    }
    for (int r = 0; r < vhost.routes_size(); ++r) {
      FilterChain chain = vhost_chain;
      const config::v1::Route& route = vhost.routes(r);
      for (int i = 0; i < route.policies_size(); ++i) {
        auto f = CompilePolicy(route.policies(i), absl::StrCat("virtual_hosts[", v, "].routes[", r,
                                                               "].policies[", i, "]"));
        if (!f.ok()) return f.status();
        auto same = std::find_if(chain.begin(), chain.end(), [&](const auto& existing) {
          return existing->policy_name() == route.policies(i).name();
        });
        if (same != chain.end() && same - chain.begin() < static_cast<ptrdiff_t>(vhost_chain.size())) {
          *same = std::move(*f);
        } else {
          chain.push_back(std::move(*f));
        }
      }
      chains.push_back(policy::OrderChain(std::move(chain)));
    }
  }
  return chains;
}

// Whether a cluster unchanged since the previous snapshot may be taken over
// compiled: none of the Secrets its tls names changed either.
bool ClusterSecretsUnchanged(const config::v1::Cluster& cluster,
                             const std::set<api::ResourceId>& changed) {
  if (!cluster.has_tls()) return true;
  for (const std::string& name : {cluster.tls().ca(), cluster.tls().client_certificate()}) {
    if (!name.empty() && changed.count({config::v1::SECRET, name})) return false;
  }
  return true;
}

// Whether the previous snapshot's TLS context for this listener still holds:
// the listener and every Secret it names are unchanged.
bool TlsUnchanged(const config::v1::Listener& listener, const ConfigSnapshot* previous,
                  const std::set<api::ResourceId>* changed) {
  if (previous == nullptr || changed == nullptr) return false;
  if (changed->count({config::v1::LISTENER, listener.name()})) return false;
  for (const std::string& name : listener.tls().certificates()) {
    if (changed->count({config::v1::SECRET, name})) return false;
  }
  if (!listener.tls().client_ca().empty() &&
      changed->count({config::v1::SECRET, listener.tls().client_ca()})) {
    return false;
  }
  auto it = previous->listeners.find(listener.name());
  return it != previous->listeners.end() && it->second.tls != nullptr;
}

}  // namespace

ListenSockets::~ListenSockets() {
  for (int fd : fds) close(fd);
}

absl::StatusOr<std::shared_ptr<ListenSockets>> ListenerSocketCache::Get(
    const net::Address& address) {
  std::string key = address.ToString();
  if (auto it = by_address_.find(key); it != by_address_.end()) {
    if (auto alive = it->second.lock()) return alive;
  }
  auto sockets = std::make_shared<ListenSockets>();
  sockets->address = address;
  for (int i = 0; i < workers_; ++i) {
    auto fd = net::Listen(address, /*reuse_port=*/true);
    if (!fd.ok()) return fd.status();
    sockets->fds.push_back(*fd);
  }
  by_address_[key] = sockets;
  return sockets;
}

absl::StatusOr<std::shared_ptr<const ConfigSnapshot>> CompileSnapshot(
    uint64_t version, const api::ResourceMap& resources, ListenerSocketCache& sockets,
    stats::StatsStore& store, upstream::HealthRegistry& registry,
    const ConfigSnapshot* previous, const std::set<api::ResourceId>* changed,
    absl::string_view node_group) {
  // Unchanged resources passed the per-resource rules when they came.
  const bool incremental = previous != nullptr && changed != nullptr;
  if (absl::Status status = api::CheckState(resources, incremental ? changed : nullptr);
      !status.ok()) {
    return status;
  }
  auto snapshot = std::make_shared<ConfigSnapshot>();
  snapshot->version = version;
  auto reusable = [&](const api::ResourceId& id) {
    // The caller checks that `previous` compiled it (it existed there).
    return previous != nullptr && changed != nullptr && !changed->count(id);
  };
  for (const auto& [id, resource] : resources) {
    if (resource.has_cluster() && reusable(id) && previous->clusters.count(id.second) &&
        ClusterSecretsUnchanged(resource.cluster(), *changed)) {
      const auto& cluster = previous->clusters.at(id.second);
      for (const auto& e : cluster->endpoints) {
        snapshot->endpoint_keys.insert(e.key);
        snapshot->pool_keys.insert(e.pool_key);
      }
      snapshot->clusters[id.second] = cluster;
    } else if (resource.has_route_table() && reusable(id) &&
               previous->route_tables.count(id.second)) {
      snapshot->route_tables[id.second] = previous->route_tables.at(id.second);
      snapshot->route_stats[id.second] = previous->route_stats.at(id.second);
      snapshot->route_filters[id.second] = previous->route_filters.at(id.second);
    } else if (resource.has_cluster()) {
      const upstream::ClusterInfo* before = nullptr;
      if (previous != nullptr) {
        if (auto it = previous->clusters.find(id.second); it != previous->clusters.end()) {
          before = it->second.get();
        }
      }
      auto cluster =
          upstream::CompileCluster(resource.cluster(), resources, store, registry, before);
      if (!cluster.ok()) return cluster.status();
      for (const auto& e : (*cluster)->endpoints) {
        snapshot->endpoint_keys.insert(e.key);
        snapshot->pool_keys.insert(e.pool_key);
      }
      snapshot->clusters[id.second] = std::move(*cluster);
    } else if (resource.has_route_table()) {
      auto table = router::RouteTable::Compile(resource.route_table());
      if (!table.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(api::Describe(id), ": ",
                                                       table.status().message()));
      }
      std::vector<RouteStats> route_stats((*table)->route_count());
      // Routes the previous version of this table had keep their counters
      // (found by name, far cheaper than building their label sets again).
      absl::flat_hash_map<std::string, const RouteStats*> kept;
      if (previous != nullptr && previous->route_tables.count(id.second)) {
        const auto& old_table = *previous->route_tables.at(id.second);
        const auto& old_stats = previous->route_stats.at(id.second);
        kept.reserve(old_table.route_count());
        for (uint32_t i = 0; i < old_table.route_count(); ++i) {
          kept.emplace(absl::StrCat(old_table.route(i).name, "\n", old_table.route(i).virtual_host),
                       &old_stats[i]);
        }
      }
      for (uint32_t i = 0; i < (*table)->route_count(); ++i) {
        if (auto it = kept.find(absl::StrCat((*table)->route(i).name, "\n",
                                             (*table)->route(i).virtual_host));
            it != kept.end()) {
          route_stats[i] = *it->second;
          continue;
        }
        std::string route_labels =
            absl::StrCat("route_table=", stats::LabelValue(id.second),
                         ",route=", stats::LabelValue((*table)->route(i).name),
                         ",virtual_host=", stats::LabelValue((*table)->route(i).virtual_host));
        for (int c = 1; c <= 5; ++c) {
          route_stats[i].by_class[c] = store.GetCounter(
              "sluice_route_requests_total",
              absl::StrCat(route_labels, ",status_class=\"", c, "xx\""),
              &route_stats[i].holds[c]);
        }
        route_stats[i].duration = store.GetHistogram("sluice_route_request_duration_seconds",
                                                     route_labels, &route_stats[i].duration_hold);
      }
      auto filters = CompileRouteFilters(resource.route_table());
      if (!filters.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(api::Describe(id), ": ",
                                                       filters.status().message()));
      }
      snapshot->route_filters[id.second] = std::move(*filters);
      snapshot->route_stats[id.second] = std::move(route_stats);
      snapshot->route_tables[id.second] = std::move(*table);
    }
  }
  // Consumers: taken over when none was added, changed or removed.
  size_t consumer_count = 0;
  bool consumers_changed = previous == nullptr || changed == nullptr;
  for (auto it = resources.lower_bound({config::v1::CONSUMER, std::string()});
       it != resources.end() && it->first.first == config::v1::CONSUMER; ++it) {
    ++consumer_count;
  }
  if (!consumers_changed) {
    consumers_changed = previous->consumers == nullptr ||
                        previous->consumers->size() != consumer_count ||
                        std::any_of(changed->begin(), changed->end(), [](const api::ResourceId& id) {
                          return id.first == config::v1::CONSUMER;
                        });
  }
  snapshot->consumers = consumers_changed ? auth::ConsumerIndex::Build(resources)
                                          : previous->consumers;
  for (const auto& [id, resource] : resources) {
    if (!resource.has_listener()) continue;
    const auto& l = resource.listener();
    if (!api::ListenerPlacedOn(l, node_group)) continue;  // another group's
    auto address = net::ParseAddress(l.address(), static_cast<uint16_t>(l.port()));
    if (!address.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(api::Describe(id), ": address: ", address.status().message()));
    }
    auto bound = sockets.Get(*address);
    if (!bound.ok()) {
      return absl::UnavailableError(
          absl::StrCat(api::Describe(id), ": ", bound.status().message()));
    }
    ListenerRuntime runtime;
    runtime.name = l.name();
    runtime.sockets = std::move(*bound);
    runtime.route_table = snapshot->route_tables.at(l.route_table());
    runtime.route_stats = &snapshot->route_stats.at(l.route_table());
    runtime.route_filters = &snapshot->route_filters.at(l.route_table());
    runtime.max_request_headers_bytes = l.http().max_request_headers_bytes()
                                            ? l.http().max_request_headers_bytes()
                                            : api::kDefaultMaxRequestHeadersBytes;
    runtime.request_headers_timeout = l.http().has_request_headers_timeout()
                                          ? api::ToDuration(l.http().request_headers_timeout())
                                          : api::kDefaultRequestHeadersTimeout;
    runtime.idle_timeout = l.http().has_idle_timeout() ? api::ToDuration(l.http().idle_timeout())
                                                       : api::kDefaultIdleTimeout;
    runtime.http2_max_concurrent_streams = l.http().http2().max_concurrent_streams()
                                               ? l.http().http2().max_concurrent_streams()
                                               : api::kDefaultHttp2MaxConcurrentStreams;
    runtime.http2_initial_stream_window = l.http().http2().initial_stream_window_size()
                                              ? l.http().http2().initial_stream_window_size()
                                              : api::kDefaultHttp2StreamWindow;
    runtime.max_connections = l.max_connections();
    runtime.max_uri_bytes =
        l.http().max_uri_bytes() ? l.http().max_uri_bytes() : api::kDefaultMaxUriBytes;
    runtime.max_request_headers = l.http().max_request_headers()
                                      ? l.http().max_request_headers()
                                      : api::kDefaultMaxRequestHeaders;
    runtime.max_request_body_bytes = l.http().max_request_body_bytes();
    runtime.max_requests_per_connection = l.http().max_requests_per_connection();
    runtime.max_connection_age = api::ToDuration(l.http().max_connection_age());
    runtime.trusted_proxy_hops = l.http().trusted_proxy_hops();
    for (int c = 1; c <= 5; ++c) {
      runtime.by_class[c] = store.GetCounter(
          "sluice_listener_requests_total",
          absl::StrCat("listener=", stats::LabelValue(l.name()), ",status_class=\"", c, "xx\""),
          &runtime.holds[c]);
    }
    const auto& pn = l.http().path_normalization();
    runtime.path_normalization.merge_slashes = pn.merge_slashes();
    switch (pn.escaped_slashes()) {
      case config::v1::PathNormalization::REJECT_REQUEST:
        runtime.path_normalization.escaped_slashes = http::EscapedSlashAction::kReject;
        break;
      case config::v1::PathNormalization::UNESCAPE_AND_FORWARD:
        runtime.path_normalization.escaped_slashes = http::EscapedSlashAction::kUnescapeAndForward;
        break;
      case config::v1::PathNormalization::UNESCAPE_AND_REDIRECT:
        runtime.path_normalization.escaped_slashes =
            http::EscapedSlashAction::kUnescapeAndRedirect;
        break;
      default:
        runtime.path_normalization.escaped_slashes = http::EscapedSlashAction::kKeep;
        break;
    }
    switch (pn.backslashes()) {
      case config::v1::PathNormalization::REJECT_BACKSLASH:
        runtime.path_normalization.backslashes = http::BackslashAction::kReject;
        break;
      case config::v1::PathNormalization::BACKSLASH_TO_SLASH:
        runtime.path_normalization.backslashes = http::BackslashAction::kToSlash;
        break;
      default:
        runtime.path_normalization.backslashes = http::BackslashAction::kKeep;
        break;
    }
    if (l.has_tls()) {
      if (TlsUnchanged(l, previous, changed)) {
        runtime.tls = previous->listeners.at(l.name()).tls;
      } else {
        auto tls = CompileListenerTls(l.tls(), resources);
        if (!tls.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat(api::Describe(id), ": ", tls.status().message()));
        }
        runtime.tls = std::move(*tls);
      }
    }
    if (l.has_access_log()) {
      const config::v1::AccessLog& a = l.access_log();
      auto log = accesslog::AccessLog::Open(
          a.path(), std::vector<std::string>(a.fields().begin(), a.fields().end()),
          a.sample_percent(), store);
      if (!log.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(api::Describe(id), ": access_log.path: ", log.status().message()));
      }
      runtime.access_log = std::move(*log);
    }
    snapshot->listeners[l.name()] = std::move(runtime);
  }
  return std::shared_ptr<const ConfigSnapshot>(std::move(snapshot));
}

}  // namespace sluice::config
