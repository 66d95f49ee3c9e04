#include "api/route_patch.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace sluice::api {
namespace {

using config::v1::Route;
using config::v1::RouteTable;
using config::v1::VirtualHost;

// Deterministic bytes of `message` (map fields in key order), so equal
// content compares equal.
std::string Bytes(const google::protobuf::MessageLite& message) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  message.SerializeWithCachedSizes(&coded);
  return out;
}

bool Same(const google::protobuf::MessageLite& a, const google::protobuf::MessageLite& b) {
  // ByteSizeLong also caches the sizes SerializeWithCachedSizes needs.
  if (a.ByteSizeLong() != b.ByteSizeLong()) return false;
  return Bytes(a) == Bytes(b);
}

// Everything of a virtual host but its routes.
bool SameHost(const VirtualHost& a, const VirtualHost& b) {
  if (a.name() != b.name() || a.domains_size() != b.domains_size() ||
      a.policies_size() != b.policies_size()) {
    return false;
  }
  for (int i = 0; i < a.domains_size(); ++i) {
    if (a.domains(i) != b.domains(i)) return false;
  }
  for (int i = 0; i < a.policies_size(); ++i) {
    if (!Same(a.policies(i), b.policies(i))) return false;
  }
  return true;
}

// Adds to `patch` what turns `from` (virtual host `v`) into `to`: its
// changed routes as replacements when the route count is the same, else one
// splice. False when that would take `patch` past kMaxPatchedRoutes routes
// (`*budget` counts them down).
bool DiffHost(const VirtualHost& from, const VirtualHost& to, int v,
              discovery::v1::RouteTablePatch* patch, int* budget) {
  const int n = from.routes_size();
  const int m = to.routes_size();
  if (n == m) {
    for (int r = 0; r < n; ++r) {
      if (Same(from.routes(r), to.routes(r))) continue;
      if (--*budget < 0) return false;
      discovery::v1::RouteReplacement* replacement = patch->add_routes();
      replacement->set_virtual_host(static_cast<uint32_t>(v));
      replacement->set_index(static_cast<uint32_t>(r));
      *replacement->mutable_route() = to.routes(r);
    }
    return true;
  }
  // The middle between the longest common prefix and the longest common
  // suffix (which do not overlap) is what changed.
  int prefix = 0;
  while (prefix < n && prefix < m && Same(from.routes(prefix), to.routes(prefix))) ++prefix;
  int suffix = 0;
  while (suffix < n - prefix && suffix < m - prefix &&
         Same(from.routes(n - 1 - suffix), to.routes(m - 1 - suffix))) {
    ++suffix;
  }
  const int removed = n - prefix - suffix;
  const int inserted = m - prefix - suffix;
  *budget -= removed + inserted;
  if (*budget < 0) return false;
  discovery::v1::RouteSplice* splice = patch->add_splices();
  splice->set_virtual_host(static_cast<uint32_t>(v));
  splice->set_index(static_cast<uint32_t>(prefix));
  splice->set_removed(static_cast<uint32_t>(removed));
  for (int r = prefix; r < prefix + inserted; ++r) *splice->add_routes() = to.routes(r);
  return true;
}

}  // namespace

std::optional<discovery::v1::RouteTablePatch> MakeRouteTablePatch(const RouteTable& base,
                                                                  uint64_t base_hash,
                                                                  const RouteTable& next,
                                                                  uint64_t next_hash) {
  if (base.name() != next.name() || base.virtual_hosts_size() != next.virtual_hosts_size()) {
    return std::nullopt;
  }
  discovery::v1::RouteTablePatch patch;
  for (int v = 0; v < base.virtual_hosts_size(); ++v) {
    if (!SameHost(base.virtual_hosts(v), next.virtual_hosts(v))) return std::nullopt;
  }
  int budget = kMaxPatchedRoutes;
  for (int v = 0; v < base.virtual_hosts_size(); ++v) {
    if (!DiffHost(base.virtual_hosts(v), next.virtual_hosts(v), v, &patch, &budget)) {
      return std::nullopt;
    }
  }
  if (patch.routes_size() == 0 && patch.splices_size() == 0) return std::nullopt;
  patch.set_name(next.name());
  patch.set_base_hash(base_hash);
  patch.set_hash(next_hash);
  return patch;
}

absl::StatusOr<RoutePatchResult> ApplyRouteTablePatch(const discovery::v1::RouteTablePatch& patch,
                                                      RouteTable* table, RoutePatchUndo* undo) {
  // Checked whole before anything changes.
  const int hosts = table->virtual_hosts_size();
  auto route_count = [&](uint32_t v) {
    return static_cast<uint32_t>(table->virtual_hosts(static_cast<int>(v)).routes_size());
  };
  // The splice of each virtual host, or -1.
  std::vector<int> splice_of(hosts, -1);
  for (int i = 0; i < patch.splices_size(); ++i) {
    const discovery::v1::RouteSplice& s = patch.splices(i);
    if (s.virtual_host() >= static_cast<uint32_t>(hosts) ||
        s.index() > route_count(s.virtual_host()) ||
        s.removed() > route_count(s.virtual_host()) - s.index()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "route table patch for \"", patch.name(), "\": splices[", i, "] removes ", s.removed(),
          " routes from route ", s.index(), " of virtual host ", s.virtual_host(),
          ", which the table does not have"));
    }
    if (i > 0 && s.virtual_host() <= patch.splices(i - 1).virtual_host()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "route table patch for \"", patch.name(), "\": splices[", i,
          "] is not after the splice before it (at most one per virtual host, in ascending "
          "order)"));
    }
    splice_of[s.virtual_host()] = i;
  }
  // Ids count over the patched table: a virtual host's first id moves by
  // what the splices before it added and removed.
  std::vector<uint32_t> first_id(hosts);
  uint32_t count = 0;
  for (int v = 0; v < hosts; ++v) {
    first_id[v] = count;
    count += route_count(static_cast<uint32_t>(v));
    if (splice_of[v] >= 0) {
      const discovery::v1::RouteSplice& s = patch.splices(splice_of[v]);
      count = count - s.removed() + static_cast<uint32_t>(s.routes_size());
    }
  }
  RoutePatchResult result;
  result.changed.reserve(patch.routes_size());
  for (int i = 0; i < patch.routes_size(); ++i) {
    const discovery::v1::RouteReplacement& r = patch.routes(i);
    if (r.virtual_host() >= static_cast<uint32_t>(hosts) ||
        r.index() >= route_count(r.virtual_host())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "route table patch for \"", patch.name(), "\": routes[", i, "] replaces route ",
          r.index(), " of virtual host ", r.virtual_host(), ", which the table does not have"));
    }
    if (splice_of[r.virtual_host()] >= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "route table patch for \"", patch.name(), "\": routes[", i,
          "] replaces a route of virtual host ", r.virtual_host(), ", which splices[",
          splice_of[r.virtual_host()], "] changes (a virtual host has one or the other)"));
    }
    const uint32_t id = first_id[r.virtual_host()] + r.index();
    if (!result.changed.empty() && id <= result.changed.back()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "route table patch for \"", patch.name(), "\": routes[", i,
          "] is not after the route before it (replacements come once each, in "
          "ascending order)"));
    }
    result.changed.push_back(id);
  }
  for (const discovery::v1::RouteSplice& s : patch.splices()) {
    const uint32_t first = first_id[s.virtual_host()] + s.index();
    result.splices.push_back({first, s.removed(), static_cast<uint32_t>(s.routes_size())});
    result.removed += s.removed();
    for (int k = 0; k < s.routes_size(); ++k) result.changed.push_back(first + k);
  }
  std::sort(result.changed.begin(), result.changed.end());

  undo->replaced.clear();
  undo->spliced.clear();
  undo->replaced.reserve(patch.routes_size());
  for (const discovery::v1::RouteReplacement& r : patch.routes()) {
    Route* slot = table->mutable_virtual_hosts(static_cast<int>(r.virtual_host()))
                      ->mutable_routes(static_cast<int>(r.index()));
    auto old = std::make_unique<Route>();
    old->Swap(slot);
    *slot = r.route();
    undo->replaced.push_back(
        {static_cast<int>(r.virtual_host()), static_cast<int>(r.index()), std::move(old)});
  }
  for (const discovery::v1::RouteSplice& s : patch.splices()) {
    auto* routes =
        table->mutable_virtual_hosts(static_cast<int>(s.virtual_host()))->mutable_routes();
    const int index = static_cast<int>(s.index());
    const int removed = static_cast<int>(s.removed());
    RoutePatchUndo::Spliced entry{static_cast<int>(s.virtual_host()), index, s.routes_size(), {}};
    // The removed routes moved to the end (pointer moves) and taken off.
    std::rotate(routes->pointer_begin() + index, routes->pointer_begin() + index + removed,
                routes->pointer_end());
    entry.removed.resize(removed);
    for (int k = removed - 1; k >= 0; --k) entry.removed[k].reset(routes->ReleaseLast());
    // The new routes added at the end and moved into place.
    const int kept = routes->size();
    for (const Route& route : s.routes()) *routes->Add() = route;
    std::rotate(routes->pointer_begin() + index, routes->pointer_begin() + kept,
                routes->pointer_end());
    undo->spliced.push_back(std::move(entry));
  }
  return result;
}

void UndoRouteTablePatch(RoutePatchUndo* undo, RouteTable* table) {
  for (auto it = undo->spliced.rbegin(); it != undo->spliced.rend(); ++it) {
    auto* routes = table->mutable_virtual_hosts(it->virtual_host)->mutable_routes();
    std::rotate(routes->pointer_begin() + it->index,
                routes->pointer_begin() + it->index + it->inserted, routes->pointer_end());
    for (int k = 0; k < it->inserted; ++k) routes->RemoveLast();
    const int kept = routes->size();
    for (std::unique_ptr<Route>& route : it->removed) routes->AddAllocated(route.release());
    std::rotate(routes->pointer_begin() + it->index, routes->pointer_begin() + kept,
                routes->pointer_end());
  }
  undo->spliced.clear();
  for (auto it = undo->replaced.rbegin(); it != undo->replaced.rend(); ++it) {
    table->mutable_virtual_hosts(it->virtual_host)->mutable_routes(it->index)->Swap(
        it->route.get());
  }
  undo->replaced.clear();
}

}  // namespace sluice::api
