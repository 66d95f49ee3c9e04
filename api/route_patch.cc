#include "api/route_patch.h"

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

// Everything of a virtual host but its routes, and the number of routes.
bool SameShape(const VirtualHost& a, const VirtualHost& b) {
  if (a.name() != b.name() || a.routes_size() != b.routes_size() ||
      a.domains_size() != b.domains_size() || a.policies_size() != b.policies_size()) {
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
    if (!SameShape(base.virtual_hosts(v), next.virtual_hosts(v))) return std::nullopt;
  }
  for (int v = 0; v < base.virtual_hosts_size(); ++v) {
    const VirtualHost& from = base.virtual_hosts(v);
    const VirtualHost& to = next.virtual_hosts(v);
    for (int r = 0; r < from.routes_size(); ++r) {
      if (Same(from.routes(r), to.routes(r))) continue;
      if (patch.routes_size() == kMaxPatchedRoutes) return std::nullopt;
      discovery::v1::RouteReplacement* replacement = patch.add_routes();
      replacement->set_virtual_host(static_cast<uint32_t>(v));
      replacement->set_index(static_cast<uint32_t>(r));
      *replacement->mutable_route() = to.routes(r);
    }
  }
  if (patch.routes_size() == 0) return std::nullopt;
  patch.set_name(next.name());
  patch.set_base_hash(base_hash);
  patch.set_hash(next_hash);
  return patch;
}

absl::StatusOr<std::vector<uint32_t>> ApplyRouteTablePatch(
    const discovery::v1::RouteTablePatch& patch, RouteTable* table, RoutePatchUndo* undo) {
  // Checked whole before anything changes.
  std::vector<uint32_t> first_id(table->virtual_hosts_size());
  uint32_t count = 0;
  for (int v = 0; v < table->virtual_hosts_size(); ++v) {
    first_id[v] = count;
    count += static_cast<uint32_t>(table->virtual_hosts(v).routes_size());
  }
  std::vector<uint32_t> ids;
  ids.reserve(patch.routes_size());
  for (int i = 0; i < patch.routes_size(); ++i) {
    const discovery::v1::RouteReplacement& r = patch.routes(i);
    if (r.virtual_host() >= static_cast<uint32_t>(table->virtual_hosts_size()) ||
        r.index() >= static_cast<uint32_t>(
                         table->virtual_hosts(static_cast<int>(r.virtual_host())).routes_size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "route table patch for \"", patch.name(), "\": routes[", i, "] replaces route ",
          r.index(), " of virtual host ", r.virtual_host(), ", which the table does not have"));
    }
    const uint32_t id = first_id[r.virtual_host()] + r.index();
    if (!ids.empty() && id <= ids.back()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "route table patch for \"", patch.name(), "\": routes[", i,
          "] is not after the route before it (replacements come once each, in "
          "ascending order)"));
    }
    ids.push_back(id);
  }
  undo->replaced.clear();
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
  return ids;
}

void UndoRouteTablePatch(RoutePatchUndo* undo, RouteTable* table) {
  for (auto it = undo->replaced.rbegin(); it != undo->replaced.rend(); ++it) {
    table->mutable_virtual_hosts(it->virtual_host)->mutable_routes(it->index)->Swap(
        it->route.get());
  }
  undo->replaced.clear();
}

}  // namespace sluice::api
