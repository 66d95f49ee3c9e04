// Route-level deltas of a RouteTable on the config stream
// (discovery.v1.RouteTablePatch): the control plane sends a table changed
// by replacing, adding or removing some of its routes as those routes only
// (replacements in place, and per virtual host whose route count changed one
// splice), and the proxy applies them in place to the copy it holds.
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

// A patch is made only when it replaces, adds and removes at most this many
// routes in all; a larger change sends the whole table (it is then about as
// large, and the proxy compiles the table whole anyway).
inline constexpr int kMaxPatchedRoutes = 256;

// The patch that turns `base` into `next`, or nullopt when `next` does not
// keep `base`'s virtual hosts (with their names, domains and policies, in
// order) or would change more than kMaxPatchedRoutes routes, or when they
// are equal. A virtual host with as many routes as before gets its changed
// routes as replacements; one whose route count changed gets one splice:
// the routes between the longest common prefix and the longest common
// suffix of its old and new routes. `base_hash` and `next_hash` are the
// tables' api::ContentHash, copied into the patch. Costs one serialization
// of each route of both tables.
std::optional<discovery::v1::RouteTablePatch> MakeRouteTablePatch(
    const config::v1::RouteTable& base, uint64_t base_hash,
    const config::v1::RouteTable& next, uint64_t next_hash);

// What ApplyRouteTablePatch changed, to put back on a NACK.
struct RoutePatchUndo {
  struct Replaced {
    int virtual_host;
    int index;
    std::unique_ptr<config::v1::Route> route;
  };
  std::vector<Replaced> replaced;
  struct Spliced {
    int virtual_host;
    int index;
    int inserted;
    std::vector<std::unique_ptr<config::v1::Route>> removed;
  };
  std::vector<Spliced> spliced;
};

// What ApplyRouteTablePatch did, in route ids (RouteEntry::id: a route's
// position counted over the virtual hosts in order).
struct RoutePatchResult {
  // One splice: in the patched table, routes [first, first + inserted) are
  // new; they took the place of `removed` routes. Routes before `first`
  // keep their ids; the ids of routes after it shift by inserted - removed
  // (summed over the splices up to and including this one).
  struct Splice {
    uint32_t first;
    uint32_t removed;
    uint32_t inserted;
  };
  // Ids in the patched table of the routes replaced in place and of the
  // routes the splices inserted, ascending.
  std::vector<uint32_t> changed;
  // Ascending by `first`; empty when the patch only replaced routes (the
  // table then has the same ids as before).
  std::vector<Splice> splices;
  // Routes the splices removed, in all.
  uint32_t removed = 0;
};

// Replaces, in `table`, each route the patch names, and applies its
// splices. Positions must exist (a splice may start at a virtual host's end),
// replacements be in ascending order and appear once, splices come at most
// one per virtual host in ascending order, and no virtual host have both:
// otherwise INVALID_ARGUMENT naming the entry, and `table` is left as it
// was. On success fills `undo` and says what changed. The caller checks
// patch.base_hash against what it holds first. Costs, per splice, the
// virtual host's route count in pointer moves.
absl::StatusOr<RoutePatchResult> ApplyRouteTablePatch(
    const discovery::v1::RouteTablePatch& patch, config::v1::RouteTable* table,
    RoutePatchUndo* undo);

// Puts back what ApplyRouteTablePatch changed; `undo` is emptied.
void UndoRouteTablePatch(RoutePatchUndo* undo, config::v1::RouteTable* table);

}  // namespace sluice::api

#endif  // SLUICE_API_ROUTE_PATCH_H_
