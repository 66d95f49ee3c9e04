#include "api/resource.h"

#include <gtest/gtest.h>

#include "google/protobuf/text_format.h"

namespace sluice::api {
namespace {

Resource Cluster(const std::string& name, int port) {
  Resource r;
  r.mutable_cluster()->set_name(name);
  auto* e = r.mutable_cluster()->add_endpoints();
  e->set_address("127.0.0.1");
  e->set_port(port);
  return r;
}

TEST(ResourceTest, KindsParseInEveryCommonSpelling) {
  for (const char* text : {"Cluster", "clusters", "CLUSTER"}) {
    EXPECT_EQ(*ParseKind(text), config::v1::CLUSTER) << text;
  }
  for (const char* text : {"RouteTable", "route_table", "route-tables", "rt"}) {
    EXPECT_EQ(*ParseKind(text), config::v1::ROUTE_TABLE) << text;
  }
  EXPECT_EQ(*ParseKind("listeners"), config::v1::LISTENER);
  EXPECT_FALSE(ParseKind("pods").ok());
}

TEST(ResourceTest, ContentHashIsStableAndSensitive) {
  EXPECT_EQ(ContentHash(Cluster("a", 1)), ContentHash(Cluster("a", 1)));
  EXPECT_NE(ContentHash(Cluster("a", 1)), ContentHash(Cluster("a", 2)));
  // A fixed value: the hash must not change between builds or machines,
  // since proxies and the control plane compare hashes across processes.
  EXPECT_EQ(ContentHash(Resource()), 14695981039346656037ull);
}

TEST(ResourceTest, DiffFindsAddedChangedRemovedUnchanged) {
  ResourceMap from, to;
  for (auto r : {Cluster("keep", 1), Cluster("change", 1), Cluster("drop", 1)}) {
    from[IdOf(r)] = r;
  }
  for (auto r : {Cluster("keep", 1), Cluster("change", 2), Cluster("new", 1)}) {
    to[IdOf(r)] = r;
  }
  StateDiff diff = ComputeDiff(from, to);
  ASSERT_EQ(diff.added.size(), 1u);
  EXPECT_EQ(diff.added[0].second, "new");
  ASSERT_EQ(diff.changed.size(), 1u);
  EXPECT_EQ(diff.changed[0].second, "change");
  ASSERT_EQ(diff.removed.size(), 1u);
  EXPECT_EQ(diff.removed[0].second, "drop");
  EXPECT_EQ(diff.unchanged, 1);
  EXPECT_TRUE(ComputeDiff(to, to).empty());
}

}  // namespace
}  // namespace sluice::api
