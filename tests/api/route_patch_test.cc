#include "api/route_patch.h"

#include <string>

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
  EXPECT_EQ(*ids, (std::vector<uint32_t>{57, 149}));
  EXPECT_EQ(Text(held), Text(next));
  EXPECT_EQ(Hash(held), patch->hash());

  UndoRouteTablePatch(&undo, &held);
  EXPECT_EQ(Text(held), Text(base));
  EXPECT_TRUE(undo.replaced.empty());
}

TEST(RouteTablePatchTest, NoPatchWhenTheShapeChangesOrNothingDoes) {
  RouteTable base = Table(2, 10);
  EXPECT_FALSE(MakeRouteTablePatch(base, 1, base, 1).has_value()) << "equal tables";

  RouteTable added = base;
  added.mutable_virtual_hosts(0)->add_routes()->set_name("new");
  EXPECT_FALSE(MakeRouteTablePatch(base, 1, added, 2).has_value()) << "a route added";

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

}  // namespace
}  // namespace sluice::api
