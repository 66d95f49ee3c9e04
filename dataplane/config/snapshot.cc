#include "dataplane/config/snapshot.h"

#include <unistd.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "api/validation.h"

namespace sluice::config {
namespace {

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
    uint64_t version, api::ResourceMap resources, ListenerSocketCache& sockets,
    stats::StatsStore& store, upstream::HealthRegistry& registry,
    const ConfigSnapshot* previous, const std::set<api::ResourceId>* changed) {
  // Unchanged resources passed the per-resource rules when they came.
  const bool incremental = previous != nullptr && changed != nullptr;
  if (absl::Status status = api::CheckState(resources, incremental ? changed : nullptr);
      !status.ok()) {
    return status;
  }
  auto snapshot = std::make_shared<ConfigSnapshot>();
  snapshot->version = version;
  auto reusable = [&](const api::ResourceId& id) {
    return previous != nullptr && changed != nullptr && !changed->count(id) &&
           previous->resources.count(id);
  };
  for (const auto& [id, resource] : resources) {
    if (resource.has_cluster() && reusable(id) && previous->clusters.count(id.second)) {
      const auto& cluster = previous->clusters.at(id.second);
      for (const auto& e : cluster->endpoints) snapshot->endpoint_keys.insert(e.key);
      snapshot->clusters[id.second] = cluster;
    } else if (resource.has_route_table() && reusable(id) &&
               previous->route_tables.count(id.second)) {
      snapshot->route_tables[id.second] = previous->route_tables.at(id.second);
      snapshot->route_stats[id.second] = previous->route_stats.at(id.second);
    } else if (resource.has_cluster()) {
      auto cluster = upstream::CompileCluster(resource.cluster(), store, registry);
      if (!cluster.ok()) return cluster.status();
      for (const auto& e : (*cluster)->endpoints) snapshot->endpoint_keys.insert(e.key);
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
          kept.emplace(old_table.route(i).name, &old_stats[i]);
        }
      }
      for (uint32_t i = 0; i < (*table)->route_count(); ++i) {
        if (auto it = kept.find((*table)->route(i).name); it != kept.end()) {
          route_stats[i] = *it->second;
          continue;
        }
        for (int c = 1; c <= 5; ++c) {
          route_stats[i].by_class[c] = store.GetCounter(
              "sluice_route_requests_total",
              absl::StrCat("route_table=", stats::LabelValue(id.second),
                           ",route=", stats::LabelValue((*table)->route(i).name),
                           ",status_class=\"", c, "xx\""));
        }
      }
      snapshot->route_stats[id.second] = std::move(route_stats);
      snapshot->route_tables[id.second] = std::move(*table);
    }
  }
  for (const auto& [id, resource] : resources) {
    if (!resource.has_listener()) continue;
    const auto& l = resource.listener();
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
    runtime.max_request_headers_bytes = l.http().max_request_headers_bytes()
                                            ? l.http().max_request_headers_bytes()
                                            : api::kDefaultMaxRequestHeadersBytes;
    runtime.request_headers_timeout = l.http().has_request_headers_timeout()
                                          ? api::ToDuration(l.http().request_headers_timeout())
                                          : api::kDefaultRequestHeadersTimeout;
    runtime.idle_timeout = l.http().has_idle_timeout() ? api::ToDuration(l.http().idle_timeout())
                                                       : api::kDefaultIdleTimeout;
    snapshot->listeners[l.name()] = std::move(runtime);
  }
  snapshot->resources = std::move(resources);
  return std::shared_ptr<const ConfigSnapshot>(std::move(snapshot));
}

}  // namespace sluice::config
