#include "api/route_patch.h"

#include <string>
#include <tuple>
#include <utility>

#include "api/resource.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

namespace sluice::api {
namespace {

using config::v1::RouteTable;

RouteTable Table(int hosts, int routes_per_host) {
  RouteTable table;
  table.set_name("main");
  for (int h = 0; h < hosts; ++h) {
    auto* vhost = table.add_virtual_hosts();
    vhost->set_name("h" + std::to_string(h));
    vhost->add_domains("h" + std::to_string(h) + ".example.com");
    for (int r = 0; r < routes_per_host; ++r) {
      auto* route = vhost->add_routes();
      route->set_name("r" + std::to_string(h) + "-" + std::to_string(r));
      route->mutable_match()->set_prefix("/svc" + std::to_string(r));
      route->mutable_route()->set_cluster("c" + std::to_string(r % 3));
    }
  }
  return table;
}

uint64_t Hash(const RouteTable& table) {
  Resource resource;
  *resource.mutable_route_table() = table;
  return ContentHash(resource);
}

std::string Text(const RouteTable& table) {
  std::string out;
  google::protobuf::TextFormat::PrintToString(table, &out);
  return out;
}

TEST(RouteTablePatchTest, ReplacedRoutesOnlyAndApplyGivesTheNewTable) {
  RouteTable base = Table(3, 50);
  RouteTable next = base;
  next.mutable_virtual_hosts(1)->mutable_routes(7)->mutable_match()->set_path("/exact");
  next.mutable_virtual_hosts(2)->mutable_routes(49)->mutable_route()->set_cluster("other");
  auto patch = MakeRouteTablePatch(base, Hash(base), next, Hash(next));
  ASSERT_TRUE(patch.has_value());
  EXPECT_EQ(patch->name(), "main");
  EXPECT_EQ(patch->base_hash(), Hash(base));
  EXPECT_EQ(patch->hash(), Hash(next));
  ASSERT_EQ(patch->routes_size(), 2);
  EXPECT_EQ(patch->routes(0).virtual_host(), 1u);
  EXPECT_EQ(patch->routes(0).index(), 7u);
  EXPECT_EQ(patch->routes(1).virtual_host(), 2u);
  EXPECT_EQ(patch->routes(1).index(), 49u);

  RouteTable held = base;
  RoutePatchUndo undo;
  auto ids = ApplyRouteTablePatch(*patch, &held, &undo);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->changed, (std::vector<uint32_t>{57, 149}));
  EXPECT_TRUE(ids->splices.empty());
  EXPECT_EQ(Text(held), Text(next));
  EXPECT_EQ(Hash(held), patch->hash());

  UndoRouteTablePatch(&undo, &held);
  EXPECT_EQ(Text(held), Text(base));
  EXPECT_TRUE(undo.replaced.empty());
}

TEST(RouteTablePatchTest, NoPatchWhenTheHostsChangeOrNothingDoes) {
  RouteTable base = Table(2, 10);
  EXPECT_FALSE(MakeRouteTablePatch(base, 1, base, 1).has_value()) << "equal tables";

  RouteTable domains = base;
  domains.mutable_virtual_hosts(1)->add_domains("more.example.com");
  EXPECT_FALSE(MakeRouteTablePatch(base, 1, domains, 2).has_value()) << "a domain added";

  RouteTable renamed = base;
  renamed.mutable_virtual_hosts(0)->set_name("other");
  EXPECT_FALSE(MakeRouteTablePatch(base, 1, renamed, 2).has_value()) << "a host renamed";

  RouteTable policies = base;
  policies.mutable_virtual_hosts(0)->add_policies()->set_name("headers");
  EXPECT_FALSE(MakeRouteTablePatch(base, 1, policies, 2).has_value()) << "a host policy";

  RouteTable hosts = base;
  hosts.add_virtual_hosts()->set_name("third");
  EXPECT_FALSE(MakeRouteTablePatch(base, 1, hosts, 2).has_value()) << "a host added";
}

TEST(RouteTablePatchTest, TooManyReplacedRoutesSendTheWholeTable) {
  RouteTable base = Table(1, kMaxPatchedRoutes + 1);
  RouteTable at_limit = base;
  for (int r = 0; r < kMaxPatchedRoutes; ++r) {
    at_limit.mutable_virtual_hosts(0)->mutable_routes(r)->mutable_route()->set_cluster("x");
  }
  auto patch = MakeRouteTablePatch(base, 1, at_limit, 2);
  ASSERT_TRUE(patch.has_value());
  EXPECT_EQ(patch->routes_size(), kMaxPatchedRoutes);

  RouteTable over = at_limit;
  over.mutable_virtual_hosts(0)->mutable_routes(kMaxPatchedRoutes)->mutable_route()->set_cluster(
      "x");
  EXPECT_FALSE(MakeRouteTablePatch(base, 1, over, 3).has_value());
}

TEST(RouteTablePatchTest, BadPositionsAreRefusedAndChangeNothing) {
  RouteTable base = Table(2, 3);
  const std::string before = Text(base);
  RoutePatchUndo undo;

  discovery::v1::RouteTablePatch outside;
  outside.set_name("main");
  auto* r = outside.add_routes();
  r->set_virtual_host(0);
  r->set_index(0);
  r->mutable_route()->set_name("fine");
  r = outside.add_routes();
  r->set_virtual_host(1);
  r->set_index(3);
  auto status = ApplyRouteTablePatch(outside, &base, &undo);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.status().message().find("routes[1] replaces route 3 of virtual host 1"),
            std::string::npos)
      << status.status();
  EXPECT_EQ(Text(base), before);

  discovery::v1::RouteTablePatch no_host = outside;
  no_host.mutable_routes(1)->set_virtual_host(2);
  no_host.mutable_routes(1)->set_index(0);
  EXPECT_FALSE(ApplyRouteTablePatch(no_host, &base, &undo).ok());
  EXPECT_EQ(Text(base), before);

  discovery::v1::RouteTablePatch unordered;
  unordered.set_name("main");
  for (int index : {2, 1}) {
    r = unordered.add_routes();
    r->set_virtual_host(0);
    r->set_index(index);
  }
  status = ApplyRouteTablePatch(unordered, &base, &undo);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.status().message().find("ascending"), std::string::npos) << status.status();
  EXPECT_EQ(Text(base), before);

  discovery::v1::RouteTablePatch twice = unordered;
  twice.mutable_routes(1)->set_index(2);
  EXPECT_FALSE(ApplyRouteTablePatch(twice, &base, &undo).ok());
  EXPECT_EQ(Text(base), before);
}

// Applies the patch from `base` to `next` to a copy of `base`: it must give
// `next` exactly, and undone give `base`. Returns the patch and the result.
std::pair<discovery::v1::RouteTablePatch, RoutePatchResult> RoundTrip(const RouteTable& base,
                                                                    const RouteTable& next) {
  auto patch = MakeRouteTablePatch(base, Hash(base), next, Hash(next));
  EXPECT_TRUE(patch.has_value());
  if (!patch.has_value()) return {};
  RouteTable held = base;
  RoutePatchUndo undo;
  auto result = ApplyRouteTablePatch(*patch, &held, &undo);
  EXPECT_TRUE(result.ok()) << result.status();
  if (!result.ok()) return {};
  EXPECT_EQ(Text(held), Text(next));
  EXPECT_EQ(Hash(held), patch->hash());
  UndoRouteTablePatch(&undo, &held);
  EXPECT_EQ(Text(held), Text(base));
  EXPECT_TRUE(undo.spliced.empty());
  return {*patch, *result};
}

config::v1::Route NewRoute(const std::string& name) {
  config::v1::Route route;
  route.set_name(name);
  route.mutable_match()->set_path("/" + name);
  route.mutable_route()->set_cluster("c9");
  return route;
}

void Insert(RouteTable* table, int v, int index, const config::v1::Route& route) {
  auto* routes = table->mutable_virtual_hosts(v)->mutable_routes();
  *routes->Add() = route;
  for (int i = routes->size() - 1; i > index; --i) routes->SwapElements(i, i - 1);
}

TEST(RouteTablePatchTest, AddedRoutesAreOneSpliceAtStartMiddleAndEnd) {
  const RouteTable base = Table(3, 20);
  for (int index : {0, 7, 20}) {
    SCOPED_TRACE(index);
    RouteTable next = base;
    Insert(&next, 1, index, NewRoute("new"));
    auto [patch, result] = RoundTrip(base, next);
    EXPECT_EQ(patch.routes_size(), 0);
    ASSERT_EQ(patch.splices_size(), 1);
    EXPECT_EQ(patch.splices(0).virtual_host(), 1u);
    EXPECT_EQ(patch.splices(0).index(), static_cast<uint32_t>(index));
    EXPECT_EQ(patch.splices(0).removed(), 0u);
    ASSERT_EQ(patch.splices(0).routes_size(), 1);
    EXPECT_EQ(patch.splices(0).routes(0).name(), "new");
    const uint32_t id = 20 + static_cast<uint32_t>(index);
    EXPECT_EQ(result.changed, (std::vector<uint32_t>{id}));
    ASSERT_EQ(result.splices.size(), 1u);
    EXPECT_EQ(result.splices[0].first, id);
    EXPECT_EQ(result.splices[0].removed, 0u);
    EXPECT_EQ(result.splices[0].inserted, 1u);
  }
}

TEST(RouteTablePatchTest, RemovedAndAddedRoutesWithReplacementsElsewhere) {
  const RouteTable base = Table(3, 20);

  RouteTable removed = base;
  removed.mutable_virtual_hosts(2)->mutable_routes()->DeleteSubrange(19, 1);
  auto [patch, result] = RoundTrip(base, removed);
  ASSERT_EQ(patch.splices_size(), 1);
  EXPECT_EQ(patch.splices(0).virtual_host(), 2u);
  EXPECT_EQ(patch.splices(0).index(), 19u);
  EXPECT_EQ(patch.splices(0).removed(), 1u);
  EXPECT_EQ(patch.splices(0).routes_size(), 0);
  EXPECT_TRUE(result.changed.empty());
  EXPECT_EQ(result.removed, 1u);

  // Host 0: two removed and one added between them; host 1: one route
  // replaced in place; host 2: one removed at the start.
  RouteTable mixed = base;
  mixed.mutable_virtual_hosts(0)->mutable_routes()->DeleteSubrange(3, 2);
  Insert(&mixed, 0, 3, NewRoute("between"));
  mixed.mutable_virtual_hosts(1)->mutable_routes(5)->mutable_route()->set_cluster("other");
  mixed.mutable_virtual_hosts(2)->mutable_routes()->DeleteSubrange(0, 1);
  std::tie(patch, result) = RoundTrip(base, mixed);
  ASSERT_EQ(patch.routes_size(), 1);
  EXPECT_EQ(patch.routes(0).virtual_host(), 1u);
  EXPECT_EQ(patch.routes(0).index(), 5u);
  ASSERT_EQ(patch.splices_size(), 2);
  EXPECT_EQ(patch.splices(0).virtual_host(), 0u);
  EXPECT_EQ(patch.splices(0).index(), 3u);
  EXPECT_EQ(patch.splices(0).removed(), 2u);
  EXPECT_EQ(patch.splices(0).routes_size(), 1);
  EXPECT_EQ(patch.splices(1).virtual_host(), 2u);
  EXPECT_EQ(patch.splices(1).index(), 0u);
  EXPECT_EQ(patch.splices(1).removed(), 1u);
  // Ids in the patched table: host 0 has 19 routes now.
  EXPECT_EQ(result.changed, (std::vector<uint32_t>{3, 24}));
  ASSERT_EQ(result.splices.size(), 2u);
  EXPECT_EQ(result.splices[0].first, 3u);
  EXPECT_EQ(result.splices[1].first, 39u);
  EXPECT_EQ(result.removed, 3u);
}

TEST(RouteTablePatchTest, SplicesCountTowardsTheLimit) {
  const RouteTable base = Table(2, kMaxPatchedRoutes);
  RouteTable at_limit = base;
  // kMaxPatchedRoutes - 2 replaced in host 0 and two added in host 1: at
  // the limit. With host 1's first route removed as well, its splice covers
  // the whole host: far over.
  for (int r = 0; r < kMaxPatchedRoutes - 2; ++r) {
    at_limit.mutable_virtual_hosts(0)->mutable_routes(r)->mutable_route()->set_cluster("x");
  }
  RouteTable over = at_limit;
  at_limit.mutable_virtual_hosts(1)->add_routes()->set_name("new");
  at_limit.mutable_virtual_hosts(1)->add_routes()->set_name("new2");
  EXPECT_TRUE(MakeRouteTablePatch(base, 1, at_limit, 2).has_value());
  over.mutable_virtual_hosts(1)->mutable_routes()->DeleteSubrange(0, 1);
  over.mutable_virtual_hosts(1)->add_routes()->set_name("new");
  over.mutable_virtual_hosts(1)->add_routes()->set_name("new2");
  EXPECT_FALSE(MakeRouteTablePatch(base, 1, over, 3).has_value());
}

TEST(RouteTablePatchTest, BadSplicesAreRefusedAndChangeNothing) {
  RouteTable base = Table(2, 3);
  const std::string before = Text(base);
  RoutePatchUndo undo;
  auto refused = [&](const discovery::v1::RouteTablePatch& patch, const std::string& why) {
    auto status = ApplyRouteTablePatch(patch, &base, &undo);
    EXPECT_FALSE(status.ok()) << why;
    if (status.ok()) return std::string();
    EXPECT_EQ(status.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(Text(base), before) << why;
    return std::string(status.status().message());
  };
  discovery::v1::RouteTablePatch good;
  good.set_name("main");
  auto* s = good.add_splices();
  s->set_virtual_host(0);
  s->set_index(3);
  *s->add_routes() = NewRoute("end");

  discovery::v1::RouteTablePatch index = good;
  index.mutable_splices(0)->set_index(4);
  EXPECT_NE(refused(index, "index").find("splices[0] removes 0 routes from route 4 of virtual "
                                         "host 0, which the table does not have"),
            std::string::npos);

  discovery::v1::RouteTablePatch removed = good;
  removed.mutable_splices(0)->set_index(1);
  removed.mutable_splices(0)->set_removed(3);
  EXPECT_NE(refused(removed, "removed").find("splices[0] removes 3 routes"), std::string::npos);

  discovery::v1::RouteTablePatch host = good;
  host.mutable_splices(0)->set_virtual_host(2);
  refused(host, "no such virtual host");

  discovery::v1::RouteTablePatch twice = good;
  *twice.add_splices() = good.splices(0);
  twice.mutable_splices(1)->set_index(0);
  EXPECT_NE(refused(twice, "two splices").find("at most one per virtual host"), std::string::npos);

  discovery::v1::RouteTablePatch both = good;
  auto* r = both.add_routes();
  r->set_virtual_host(0);
  r->set_index(1);
  *r->mutable_route() = NewRoute("replaced");
  EXPECT_NE(refused(both, "splice and replacement").find("a virtual host has one or the other"),
            std::string::npos);

  // The good one applies and undoes.
  auto result = ApplyRouteTablePatch(good, &base, &undo);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(base.virtual_hosts(0).routes(3).name(), "end");
  EXPECT_EQ(result->changed, (std::vector<uint32_t>{3}));
  UndoRouteTablePatch(&undo, &base);
  EXPECT_EQ(Text(base), before);
}

}  // namespace
}  // namespace sluice::api
