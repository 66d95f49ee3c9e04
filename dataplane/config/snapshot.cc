#include "dataplane/config/snapshot.h"

#include <unistd.h>

#include <algorithm>
#include <functional>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
// Also sets *access (ListenerRuntime::tls_access).
absl::StatusOr<std::shared_ptr<const net::TransportSocketFactory>> CompileListenerTls(
    const config::v1::ListenerTls& tls, const api::ResourceMap& resources, size_t* access) {
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
  *access = std::hash<std::string>()(absl::StrCat(
      "tls ", server.min_version, "-", server.max_version, " ciphers ", server.cipher_list,
      " alpn ", absl::StrJoin(server.alpn_protocols, ","), " client certificate ",
      server.require_client_certificate ? "required" : "optional", " ca ",
      server.client_ca_pem));
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

// A virtual host's policies compiled, in order.
absl::StatusOr<FilterChain> CompileVirtualHostChain(const config::v1::VirtualHost& vhost, int v) {
  FilterChain chain;
  for (int i = 0; i < vhost.policies_size(); ++i) {
    auto f = CompilePolicy(vhost.policies(i),
                           absl::StrCat("virtual_hosts[", v, "].policies[", i, "]"));
    if (!f.ok()) return f.status();
    chain.push_back(std::move(*f));
  }
  return chain;
}

// Route `r` of virtual host `v`'s chain: the virtual host's policies, a
// route policy of the same name replacing the virtual host's in place, the
// route's others appended.
absl::StatusOr<FilterChain> CompileRouteChain(const FilterChain& vhost_chain,
                                              const config::v1::Route& route, int v, int r) {
  FilterChain chain = vhost_chain;
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
  return policy::OrderChain(std::move(chain));
}

// Each virtual host's chain into `vhost_chains` and each route's, by route
// id (declaration order across virtual hosts), into `chains`.
absl::Status CompileRouteFilters(const config::v1::RouteTable& table, FilterChainList* vhost_chains,
                                 FilterChainList* chains) {
  for (int v = 0; v < table.virtual_hosts_size(); ++v) {
    const config::v1::VirtualHost& vhost = table.virtual_hosts(v);
    auto vhost_chain = CompileVirtualHostChain(vhost, v);
    if (!vhost_chain.ok()) return vhost_chain.status();
    for (int r = 0; r < vhost.routes_size(); ++r) {
      auto chain = CompileRouteChain(*vhost_chain, vhost.routes(r), v, r);
      if (!chain.ok()) return chain.status();
      chains->push_back(std::move(*chain));
    }
    vhost_chains->push_back(std::move(*vhost_chain));
  }
  return absl::OkStatus();
}

// A route's metrics, made and held as one group: the five status classes of
// sluice_route_requests_total (1xx..5xx), the body bytes each way, then the
// latency histogram.
const stats::MetricGroupSpec& RouteStatsSpec() {
  static const stats::MetricGroupSpec* const spec = [] {
    auto* s = new stats::MetricGroupSpec;
    for (int c = 1; c <= 5; ++c) {
      s->counters.push_back(
          {"sluice_route_requests_total", absl::StrCat(",status_class=\"", c, "xx\"")});
    }
    s->counters.push_back({"sluice_route_request_bytes_total", ""});
    s->counters.push_back({"sluice_route_response_bytes_total", ""});
    s->histograms.push_back("sluice_route_request_duration_seconds");
    s->hidden_until_counted = true;  // a route's series appear with its first request
    return s;
  }();
  return *spec;
}

// sluice_route_grpc_responses_total, one series per gRPC status.
const stats::MetricGroupSpec& RouteGrpcStatsSpec() {
  static const stats::MetricGroupSpec* const spec = [] {
    auto* s = new stats::MetricGroupSpec;
    for (int c = 0; c < kGrpcStatusCount; ++c) {
      s->counters.push_back(
          {"sluice_route_grpc_responses_total", absl::StrCat(",grpc_status=\"", c, "\"")});
    }
    return s;
  }();
  return *spec;
}

// The metrics of `route` of route table `table`, created (or found: the
// same labels give the same metrics) in `store`.
RouteStats MakeRouteStats(stats::StatsStore& store, const std::string& table,
                          const router::RouteEntry& route) {
  RouteStats out;
  std::string route_labels =
      absl::StrCat("route_table=", stats::LabelValue(table), ",route=", stats::LabelValue(route.name),
                   ",virtual_host=", stats::LabelValue(route.virtual_host));
  stats::MetricGroup* group = store.GetGroup(RouteStatsSpec(), route_labels, &out.hold);
  for (int c = 1; c <= 5; ++c) out.by_class[c] = group->counter(c - 1);
  out.bytes_in = group->counter(5);
  out.bytes_out = group->counter(6);
  out.duration = group->histogram(0);
  out.grpc = std::make_shared<RouteGrpcStats>(store, std::move(route_labels));
  return out;
}

// Route table `id` compiled whole, with its stats (routes the previous
// version of the table had, found by name, keep theirs) and policy chains.
absl::Status CompileWholeTable(const api::ResourceId& id, const config::v1::RouteTable& proto,
                               const ConfigSnapshot* previous, stats::StatsStore& store,
                               ConfigSnapshot* snapshot) {
  auto table = router::RouteTable::Compile(proto);
  if (!table.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(api::Describe(id), ": ", table.status().message()));
  }
  auto route_stats = std::make_shared<RouteStatsList>((*table)->route_count());
  // Found by name, far cheaper than building their label sets again.
  absl::flat_hash_map<std::string, const RouteStats*> kept;
  if (previous != nullptr && previous->route_tables.count(id.second)) {
    const auto& old_table = *previous->route_tables.at(id.second);
    const auto& old_stats = *previous->route_stats.at(id.second);
    kept.reserve(old_table.route_count());
    for (uint32_t i = 0; i < old_table.route_count(); ++i) {
      kept.emplace(absl::StrCat(old_table.route(i).name, "\n", old_table.route(i).virtual_host),
                   &old_stats[i]);
    }
  }
  for (uint32_t i = 0; i < (*table)->route_count(); ++i) {
    const router::RouteEntry& route = (*table)->route(i);
    if (auto it = kept.find(absl::StrCat(route.name, "\n", route.virtual_host));
        it != kept.end()) {
      (*route_stats)[i] = *it->second;
    } else {
      (*route_stats)[i] = MakeRouteStats(store, id.second, route);
    }
  }
  auto vhost_chains = std::make_shared<FilterChainList>();
  auto chains = std::make_shared<FilterChainList>();
  chains->reserve((*table)->route_count());
  if (absl::Status status = CompileRouteFilters(proto, vhost_chains.get(), chains.get());
      !status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(api::Describe(id), ": ", status.message()));
  }
  snapshot->route_filters[id.second] = std::move(chains);
  snapshot->virtual_host_filters[id.second] = std::move(vhost_chains);
  snapshot->route_stats[id.second] = std::move(route_stats);
  snapshot->route_tables[id.second] = *std::move(table);
  return absl::OkStatus();
}

// Route table `id`, which differs from `previous`'s only in the routes
// `replaced` (ids, ascending; api::ApplyRouteTablePatch), made from
// previous's: only those routes are compiled and given stats (anew when the
// route's name or virtual host changed) and policy chains.
absl::Status CompilePatchedTable(const api::ResourceId& id, const config::v1::RouteTable& proto,
                                 const std::vector<uint32_t>& replaced,
                                 const ConfigSnapshot& previous, stats::StatsStore& store,
                                 ConfigSnapshot* snapshot) {
  const router::RouteTable& old_table = *previous.route_tables.at(id.second);
  auto table = router::RouteTable::Recompile(old_table, proto, replaced);
  if (!table.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(api::Describe(id), ": ", table.status().message()));
  }
  const std::shared_ptr<const FilterChainList>& vhost_chains =
      previous.virtual_host_filters.at(id.second);
  if ((*table)->route_count() != old_table.route_count() ||
      vhost_chains->size() != static_cast<size_t>(proto.virtual_hosts_size())) {
    // api::ApplyRouteTablePatch keeps the table's shape; a patch cannot
    // get here otherwise.
    return absl::InternalError(absl::StrCat(api::Describe(id), ": the patched table has ",
                                            (*table)->route_count(), " routes, the one before ",
                                            old_table.route_count()));
  }
  // One pointer copied per route (RouteStats::hold); the chains of routes
  // without policies are empty.
  auto route_stats = std::make_shared<RouteStatsList>(*previous.route_stats.at(id.second));
  auto chains = std::make_shared<FilterChainList>(*previous.route_filters.at(id.second));
  auto next = replaced.begin();
  uint32_t first = 0;  // the id of virtual host v's first route
  for (int v = 0; v < proto.virtual_hosts_size() && next != replaced.end(); ++v) {
    const config::v1::VirtualHost& vhost = proto.virtual_hosts(v);
    const uint32_t end = first + static_cast<uint32_t>(vhost.routes_size());
    for (; next != replaced.end() && *next < end; ++next) {
      const uint32_t route_id = *next;
      const int r = static_cast<int>(route_id - first);
      const router::RouteEntry& now = (*table)->route(route_id);
      const router::RouteEntry& before = old_table.route(route_id);
      if (now.name != before.name || now.virtual_host != before.virtual_host) {
        (*route_stats)[route_id] = MakeRouteStats(store, id.second, now);
      }
      auto chain = CompileRouteChain((*vhost_chains)[v], vhost.routes(r), v, r);
      if (!chain.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(api::Describe(id), ": ", chain.status().message()));
      }
      (*chains)[route_id] = *std::move(chain);
    }
    first = end;
  }
  if (next != replaced.end()) {
    return absl::InternalError(absl::StrCat(api::Describe(id), ": route id ", *next,
                                            " was replaced; the table has ", first, " routes"));
  }
  snapshot->route_filters[id.second] = std::move(chains);
  snapshot->virtual_host_filters[id.second] = vhost_chains;
  snapshot->route_stats[id.second] = std::move(route_stats);
  snapshot->route_tables[id.second] = *std::move(table);
  return absl::OkStatus();
}

// Route table `id`, which differs from `previous`'s by the routes `changed`
// (ids in the new table, ascending: replaced and inserted) and `splices`
// (api::ConfigChange::Splice, ascending), compiled whole as a table but with
// the stats and policy chains of every route that survived the splices taken
// over from previous's (by old id). A surviving route whose name or virtual
// host label changed gets its stats anew, as a whole compile would (the
// same labels give the same metrics in `store`).
absl::Status CompileSplicedTable(const api::ResourceId& id, const config::v1::RouteTable& proto,
                                 const std::vector<uint32_t>& changed,
                                 const std::vector<api::ConfigChange::Splice>& splices,
                                 const ConfigSnapshot& previous, stats::StatsStore& store,
                                 ConfigSnapshot* snapshot) {
  const router::RouteTable& old_table = *previous.route_tables.at(id.second);
  const RouteStatsList& old_stats = *previous.route_stats.at(id.second);
  const FilterChainList& old_chains = *previous.route_filters.at(id.second);
  const std::shared_ptr<const FilterChainList>& vhost_chains =
      previous.virtual_host_filters.at(id.second);
  auto table = router::RouteTable::Compile(proto);
  if (!table.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(api::Describe(id), ": ", table.status().message()));
  }
  const uint32_t count = (*table)->route_count();
  int64_t shift = 0;  // new id - old id, over all splices
  for (const api::ConfigChange::Splice& s : splices) {
    shift += static_cast<int64_t>(s.inserted) - static_cast<int64_t>(s.removed);
  }
  if (vhost_chains->size() != static_cast<size_t>(proto.virtual_hosts_size()) ||
      static_cast<int64_t>(count) != static_cast<int64_t>(old_table.route_count()) + shift) {
    // api::ApplyRouteTablePatch keeps the virtual hosts and moves routes
    // only by its splices; a patch cannot get here otherwise.
    return absl::InternalError(absl::StrCat(api::Describe(id), ": the spliced table has ",
                                            count, " routes, the one before ",
                                            old_table.route_count(), ", the splices move ", shift));
  }
  auto route_stats = std::make_shared<RouteStatsList>(count);
  auto chains = std::make_shared<FilterChainList>(count);
  auto next_changed = changed.begin();
  auto next_splice = splices.begin();
  shift = 0;  // for the new id at hand: the splices before it
  uint32_t route_id = 0;
  for (int v = 0; v < proto.virtual_hosts_size(); ++v) {
    const config::v1::VirtualHost& vhost = proto.virtual_hosts(v);
    for (int r = 0; r < vhost.routes_size(); ++r, ++route_id) {
      while (next_splice != splices.end() &&
             route_id >= next_splice->first + next_splice->inserted) {
        shift += static_cast<int64_t>(next_splice->inserted) -
                 static_cast<int64_t>(next_splice->removed);
        ++next_splice;
      }
      const bool inserted = next_splice != splices.end() && route_id >= next_splice->first;
      const bool replaced = next_changed != changed.end() && *next_changed == route_id;
      if (replaced) ++next_changed;
      const router::RouteEntry& now = (*table)->route(route_id);
      if (inserted || replaced) {
        auto chain = CompileRouteChain((*vhost_chains)[v], vhost.routes(r), v, r);
        if (!chain.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat(api::Describe(id), ": ", chain.status().message()));
        }
        (*chains)[route_id] = *std::move(chain);
      }
      if (inserted) {
        (*route_stats)[route_id] = MakeRouteStats(store, id.second, now);
        continue;
      }
      const uint32_t old_id = static_cast<uint32_t>(static_cast<int64_t>(route_id) - shift);
      if (!replaced) (*chains)[route_id] = old_chains[old_id];
      const router::RouteEntry& before = old_table.route(old_id);
      (*route_stats)[route_id] = now.name == before.name && now.virtual_host == before.virtual_host
                                     ? old_stats[old_id]
                                     : MakeRouteStats(store, id.second, now);
    }
  }
  snapshot->route_filters[id.second] = std::move(chains);
  snapshot->virtual_host_filters[id.second] = vhost_chains;
  snapshot->route_stats[id.second] = std::move(route_stats);
  snapshot->route_tables[id.second] = *std::move(table);
  return absl::OkStatus();
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

stats::Counter* RouteStats::GrpcStatus(int code) const {
  if (grpc == nullptr || code < 0 || code >= kGrpcStatusCount) return nullptr;
  RouteGrpcStats& g = *grpc;
  stats::MetricGroup* group = g.group.load(std::memory_order_acquire);
  if (group == nullptr) {
    absl::MutexLock lock(&g.mu);
    group = g.group.load(std::memory_order_relaxed);
    if (group == nullptr) {
      group = g.store.GetGroup(RouteGrpcStatsSpec(), g.labels, &g.hold);
      g.group.store(group, std::memory_order_release);
    }
  }
  return group->counter(static_cast<size_t>(code));
}

ListenSockets::~ListenSockets() {
  for (int fd : fds) close(fd);
}

absl::StatusOr<std::shared_ptr<ListenSockets>> ListenerSocketCache::Get(
    const net::Address& address) {
  std::string key = address.ToString();
  if (auto it = by_address_.find(key); it != by_address_.end()) {
    auto alive = it->second.lock();
    if (alive != nullptr && !alive->retired) return alive;
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
    const ConfigSnapshot* previous, const api::ConfigChange* change,
    absl::string_view node_group, const upstream::DnsCache* dns) {
  // Unchanged resources (and routes) passed the rules when they came.
  const bool incremental = previous != nullptr && change != nullptr;
  const std::set<api::ResourceId>* changed = incremental ? &change->changed : nullptr;
  if (absl::Status status =
          incremental ? api::CheckChange(resources, *change) : api::CheckState(resources);
      !status.ok()) {
    return status;
  }
  auto snapshot = std::make_shared<ConfigSnapshot>();
  snapshot->version = version;
  auto reusable = [&](const api::ResourceId& id) {
    // The caller checks that `previous` compiled it (it existed there).
    return incremental && !changed->count(id);
  };
  // The replaced route ids of a table patched route by route, or nullptr.
  auto patched = [&](const api::ResourceId& id) -> const std::vector<uint32_t>* {
    if (!incremental) return nullptr;
    auto it = change->patched.find(id.second);
    return it == change->patched.end() ? nullptr : &it->second;
  };
  // Clusters: shared with `previous` as they are when none (and no Secret a
  // cluster's tls may name) was added, changed or removed.
  const bool clusters_unchanged =
      incremental && !change->removed &&
      std::none_of(changed->begin(), changed->end(), [](const api::ResourceId& id) {
        return id.first == config::v1::CLUSTER || id.first == config::v1::SECRET;
      });
  if (clusters_unchanged) {
    snapshot->clusters = previous->clusters;
    snapshot->endpoint_keys = previous->endpoint_keys;
    snapshot->pool_keys = previous->pool_keys;
  } else {
    auto& clusters = snapshot->clusters.Mutable();
    auto& endpoint_keys = snapshot->endpoint_keys.Mutable();
    auto& pool_keys = snapshot->pool_keys.Mutable();
    for (auto it = resources.lower_bound({config::v1::CLUSTER, std::string()});
         it != resources.end() && it->first.first == config::v1::CLUSTER; ++it) {
      const auto& [id, resource] = *it;
      if (!resource.has_cluster()) continue;
      std::shared_ptr<const upstream::ClusterInfo> cluster;
      if (reusable(id) && previous->clusters.count(id.second) &&
          ClusterSecretsUnchanged(resource.cluster(), *changed)) {
        cluster = previous->clusters.at(id.second);
      } else {
        const upstream::ClusterInfo* before = nullptr;
        if (previous != nullptr) {
          if (auto old = previous->clusters.find(id.second); old != previous->clusters.end()) {
            before = old->second.get();
          }
        }
        auto compiled =
            upstream::CompileCluster(resource.cluster(), resources, store, registry, before, dns);
        if (!compiled.ok()) return compiled.status();
        cluster = *std::move(compiled);
      }
      for (const auto& e : cluster->endpoints) {
        endpoint_keys.insert(e.key);
        pool_keys.insert(e.pool_key);
      }
      clusters[id.second] = std::move(cluster);
    }
  }
  for (auto it = resources.lower_bound({config::v1::ROUTE_TABLE, std::string()});
       it != resources.end() && it->first.first == config::v1::ROUTE_TABLE; ++it) {
    const auto& [id, resource] = *it;
    if (!resource.has_route_table()) continue;
    const std::vector<uint32_t>* replaced = patched(id);
    if (replaced != nullptr && previous->route_tables.count(id.second) &&
        previous->virtual_host_filters.count(id.second)) {
      auto spliced = change->spliced.find(id.second);
      if (absl::Status status =
              spliced != change->spliced.end()
                  ? CompileSplicedTable(id, resource.route_table(), *replaced, spliced->second,
                                        *previous, store, snapshot.get())
                  : CompilePatchedTable(id, resource.route_table(), *replaced, *previous, store,
                                        snapshot.get());
          !status.ok()) {
        return status;
      }
    } else if (reusable(id) && replaced == nullptr && previous->route_tables.count(id.second)) {
      // Shared, not copied: the table, its stats and its policy chains.
      snapshot->route_tables[id.second] = previous->route_tables.at(id.second);
      snapshot->route_stats[id.second] = previous->route_stats.at(id.second);
      snapshot->route_filters[id.second] = previous->route_filters.at(id.second);
      snapshot->virtual_host_filters[id.second] = previous->virtual_host_filters.at(id.second);
    } else if (absl::Status status =
                   CompileWholeTable(id, resource.route_table(), previous, store, snapshot.get());
               !status.ok()) {
      return status;
    }
  }
  // Consumers: taken over when none was added, changed or removed.
  size_t consumer_count = 0;
  bool consumers_changed = !incremental;
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
  for (auto it = resources.lower_bound({config::v1::LISTENER, std::string()});
       it != resources.end() && it->first.first == config::v1::LISTENER; ++it) {
    const auto& [id, resource] = *it;
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
    runtime.route_stats = snapshot->route_stats.at(l.route_table()).get();
    runtime.route_filters = snapshot->route_filters.at(l.route_table()).get();
    for (const FilterChain& chain : *runtime.route_filters) {
      for (const auto& factory : chain) {
        runtime.query_credentials = runtime.query_credentials || factory->reads_query_credential();
      }
      if (runtime.query_credentials) break;
    }
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
    runtime.http2_websocket =
        !l.http().http2().has_websocket() || l.http().http2().websocket().value();
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
    runtime.headers_with_underscores = l.http().headers_with_underscores();
    runtime.proxy_protocol = l.proxy_protocol();
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
        runtime.tls_access = previous->listeners.at(l.name()).tls_access;
      } else {
        auto tls = CompileListenerTls(l.tls(), resources, &runtime.tls_access);
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
  // Sockets of listeners this version drops: retired, so that the workers
  // stop accepting on them as they apply it, even while a connection that
  // came through one still holds the snapshot it belonged to.
  if (previous != nullptr) {
    std::set<const ListenSockets*> kept;
    for (const auto& [name, listener] : snapshot->listeners) kept.insert(listener.sockets.get());
    for (const auto& [name, listener] : previous->listeners) {
      if (!kept.count(listener.sockets.get())) listener.sockets->retired = true;
    }
  }
  return std::shared_ptr<const ConfigSnapshot>(std::move(snapshot));
}

}  // namespace sluice::config
