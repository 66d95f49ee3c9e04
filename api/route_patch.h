// Route-level deltas of a RouteTable on the config stream
// (discovery.v1.RouteTablePatch): the control plane sends a table changed
// by replacing some of its routes as the replaced routes only, and the proxy
// applies them in place to the copy it holds and compiles only those routes.
//
// All functions are pure (no I/O) and thread-compatible: a table must not be
// read while a patch is applied to it or undone.
#ifndef SLUICE_API_ROUTE_PATCH_H_
#define SLUICE_API_ROUTE_PATCH_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "sluice/config/v1/config.pb.h"
#include "sluice/discovery/v1/discovery.pb.h"

namespace sluice::api {

// A patch is made only when it replaces at most this many routes; a larger
// change sends the whole table (it is then about as large, and the proxy
// compiles the table whole anyway).
inline constexpr int kMaxPatchedRoutes = 256;

// The patch that turns `base` into `next`, or nullopt when `next` does not
// keep `base`'s shape (the virtual hosts with their names, domains and
// policies, in order, each with as many routes) or would replace more than
// kMaxPatchedRoutes routes, or when they are equal. `base_hash` and
// `next_hash` are the tables' api::ContentHash, copied into the patch.
// Costs one serialization of each route of both tables.
std::optional<discovery::v1::RouteTablePatch> MakeRouteTablePatch(
    const config::v1::RouteTable& base, uint64_t base_hash,
    const config::v1::RouteTable& next, uint64_t next_hash);

// What ApplyRouteTablePatch replaced, to put back on a NACK.
struct RoutePatchUndo {
  struct Replaced {
    int virtual_host;
    int index;
    std::unique_ptr<config::v1::Route> route;
  };
  std::vector<Replaced> replaced;
};

// Replaces, in `table`, each route the patch names. Positions must exist,
// be in ascending order and appear once: otherwise INVALID_ARGUMENT naming
// the position, and `table` is left as it was. On success returns the
// replaced routes' ids (RouteEntry::id: the route's position counted over
// the virtual hosts in order), ascending, and fills `undo`. The caller
// checks patch.base_hash against what it holds first.
absl::StatusOr<std::vector<uint32_t>> ApplyRouteTablePatch(
    const discovery::v1::RouteTablePatch& patch, config::v1::RouteTable* table,
    RoutePatchUndo* undo);

// Puts back what ApplyRouteTablePatch replaced; `undo` is emptied.
void UndoRouteTablePatch(RoutePatchUndo* undo, config::v1::RouteTable* table);

}  // namespace sluice::api

#endif  // SLUICE_API_ROUTE_PATCH_H_
