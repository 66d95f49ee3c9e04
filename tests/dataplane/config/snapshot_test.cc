#include "dataplane/config/snapshot.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "api/validation.h"
#include "google/protobuf/text_format.h"
#include "tests/api/test_certificates.h"
#include "tests/harness/proxy.h"

namespace sluice::config {
namespace {

api::ResourceMap State(int port, const std::string& extra = "") {
  api::ResourceMap state;
  for (std::string text :
       {std::string(R"(cluster { name: "c" endpoints { address: "127.0.0.1" port: 9001 weight: 2 }
                      endpoints { address: "::1" port: 9002 } connect_timeout { seconds: 2 } })"),
        std::string(R"(route_table { name: "rt" virtual_hosts { domains: "*"
                      routes { name: "a" match { prefix: "/a" } route { cluster: "c" } }
                      routes { match { prefix: "/" } direct_response { status: 200 } } } })"),
        "listener { name: \"l\" address: \"127.0.0.1\" port: " + std::to_string(port) +
            " route_table: \"rt\" http { idle_timeout { seconds: 7 } } }",
        extra}) {
    if (text.empty()) continue;
    api::Resource r;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &r)) << text;
    state[api::IdOf(r)] = r;
  }
  return state;
}

TEST(SnapshotTest, CompilesEveryKindWithDefaults) {
  ListenerSocketCache sockets(2);
  stats::StatsStore store;
  upstream::HealthRegistry registry;
  int port = testing::PickFreePort();
  auto snapshot = CompileSnapshot(7, State(port), sockets, store, registry);
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  const ConfigSnapshot& s = **snapshot;
  EXPECT_EQ(s.version, 7u);
  const auto& cluster = *s.clusters.at("c");
  ASSERT_EQ(cluster.endpoints.size(), 2u);
  EXPECT_EQ(cluster.endpoints[1].key, "[::1]:9002");
  EXPECT_EQ(cluster.total_weight, 3u);
  EXPECT_FALSE(cluster.equal_weights);
  EXPECT_EQ(cluster.connect_timeout, absl::Seconds(2));
  EXPECT_EQ(s.endpoint_keys.count("127.0.0.1:9001"), 1u);
  const ListenerRuntime& l = s.listeners.at("l");
  EXPECT_EQ(l.sockets->fds.size(), 2u);  // one SO_REUSEPORT socket per worker
  EXPECT_EQ(l.idle_timeout, absl::Seconds(7));
  EXPECT_EQ(l.request_headers_timeout, api::kDefaultRequestHeadersTimeout);
  EXPECT_EQ(l.max_request_headers_bytes, api::kDefaultMaxRequestHeadersBytes);
  EXPECT_EQ(l.route_stats->size(), 2u);
  EXPECT_EQ(l.route_table->route(0).name, "a");
}

TEST(SnapshotTest, BindsOnlyTheListenersPlacedOnItsGroup) {
  ListenerSocketCache sockets(1);
  stats::StatsStore store;
  upstream::HealthRegistry registry;
  int port = testing::PickFreePort();
  int other_port = testing::PickFreePort();
  // "l" is on every proxy; "mine" on group r1; "theirs" (same port as "mine")
  // on r2 only.
  std::string extra = "listener { name: \"theirs\" address: \"127.0.0.1\" port: " +
                      std::to_string(other_port) +
                      " route_table: \"rt\" node_groups: \"r2\" }";
  auto state = State(port, extra);
  api::Resource mine = state.at({config::v1::LISTENER, "theirs"});
  mine.mutable_listener()->set_name("mine");
  mine.mutable_listener()->set_node_groups(0, "r1");
  state[api::IdOf(mine)] = mine;
  auto snapshot = CompileSnapshot(1, state, sockets, store, registry, nullptr, nullptr, "r1");
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ((*snapshot)->listeners.count("l"), 1u);
  EXPECT_EQ((*snapshot)->listeners.count("mine"), 1u);
  EXPECT_EQ((*snapshot)->listeners.count("theirs"), 0u);
  // A proxy without a group binds only the listeners on every proxy.
  ListenerSocketCache other_sockets(1);
  auto ungrouped = CompileSnapshot(1, state, other_sockets, store, registry);
  ASSERT_TRUE(ungrouped.ok()) << ungrouped.status();
  EXPECT_EQ((*ungrouped)->listeners.size(), 1u);
  EXPECT_EQ((*ungrouped)->listeners.count("l"), 1u);
}

TEST(SnapshotTest, KeptListenerKeepsItsSockets) {
  ListenerSocketCache sockets(1);
  stats::StatsStore store;
  upstream::HealthRegistry registry;
  int port = testing::PickFreePort();
  auto first = CompileSnapshot(1, State(port), sockets, store, registry);
  ASSERT_TRUE(first.ok());
  auto second = CompileSnapshot(2, State(port, R"(cluster { name: "d" endpoints { address: "127.0.0.1" port: 1 } })"),
                                sockets, store, registry);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*first)->listeners.at("l").sockets, (*second)->listeners.at("l").sockets);
}

TEST(SnapshotTest, UnchangedResourcesAreTakenOverCompiled) {
  ListenerSocketCache sockets(1);
  stats::StatsStore store;
  upstream::HealthRegistry registry;
  int port = testing::PickFreePort();
  auto first = CompileSnapshot(1, State(port), sockets, store, registry);
  ASSERT_TRUE(first.ok());
  std::set<api::ResourceId> changed = {{config::v1::ROUTE_TABLE, "rt"}};
  auto second = CompileSnapshot(2, State(port), sockets, store, registry, first->get(), &changed);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*first)->clusters.at("c"), (*second)->clusters.at("c"));           // reused
  EXPECT_NE((*first)->route_tables.at("rt"), (*second)->route_tables.at("rt"));  // recompiled
  // Without the previous snapshot everything is compiled afresh.
  auto third = CompileSnapshot(3, State(port), sockets, store, registry);
  ASSERT_TRUE(third.ok());
  EXPECT_NE((*first)->clusters.at("c"), (*third)->clusters.at("c"));
}

TEST(SnapshotTest, InvalidStateIsRejectedWithTheField) {
  ListenerSocketCache sockets(1);
  stats::StatsStore store;
  upstream::HealthRegistry registry;
  auto state = State(testing::PickFreePort());
  state.erase({config::v1::CLUSTER, "c"});
  auto snapshot = CompileSnapshot(3, state, sockets, store, registry);
  ASSERT_FALSE(snapshot.ok());
  EXPECT_NE(snapshot.status().message().find("route.cluster: refers to Cluster \"c\""),
            std::string::npos)
      << snapshot.status();
}

TEST(SnapshotTest, UnbindableListenerIsAnErrorNamingIt) {
  ListenerSocketCache sockets(1);
  stats::StatsStore store;
  upstream::HealthRegistry registry;
  int port = testing::PickFreePort();
  auto taken = net::Listen(*net::ParseAddress("127.0.0.1", static_cast<uint16_t>(port)), false);
  ASSERT_TRUE(taken.ok());
  auto snapshot = CompileSnapshot(4, State(port), sockets, store, registry);
  ASSERT_FALSE(snapshot.ok());
  EXPECT_NE(snapshot.status().message().find("Listener \"l\": cannot bind 127.0.0.1:"),
            std::string::npos)
      << snapshot.status();
  close(*taken);
}

// A Secret "upstream-ca" with a fresh CA certificate.
api::Resource CaSecret() {
  testing::CertificateSpec spec;
  spec.common_name = "Upstream CA";
  spec.is_ca = true;
  api::Resource r;
  r.mutable_secret()->set_name("upstream-ca");
  r.mutable_secret()->mutable_trusted_ca()->set_ca_certificates(
      testing::MakeCertificate(spec).certificate_pem);
  return r;
}

// State() with cluster "c" over TLS (verified with "upstream-ca") and
// `endpoints` endpoints.
api::ResourceMap TlsState(int port, const api::Resource& ca, int endpoints = 1) {
  api::ResourceMap state = State(port);
  state[api::IdOf(ca)] = ca;
  auto* cluster = state[{config::v1::CLUSTER, "c"}].mutable_cluster();
  cluster->clear_endpoints();
  for (int i = 0; i < endpoints; ++i) {
    auto* e = cluster->add_endpoints();
    e->set_address("127.0.0.1");
    e->set_port(9443 + static_cast<uint32_t>(i));
  }
  cluster->mutable_tls()->set_ca("upstream-ca");
  cluster->mutable_tls()->set_sni("backend.test");
  return state;
}

TEST(SnapshotTest, TlsClusterGetsATransportAndItsOwnPoolKeys) {
  ListenerSocketCache sockets(1);
  stats::StatsStore store;
  upstream::HealthRegistry registry;
  int port = testing::PickFreePort();
  auto plain = CompileSnapshot(1, State(port), sockets, store, registry);
  ASSERT_TRUE(plain.ok()) << plain.status();
  const auto& plain_cluster = *(*plain)->clusters.at("c");
  EXPECT_EQ(plain_cluster.transport, nullptr);
  EXPECT_EQ(plain_cluster.endpoints[0].pool_key, "127.0.0.1:9001 http:c");
  EXPECT_EQ((*plain)->pool_keys.count("127.0.0.1:9001 http:c"), 1u);

  auto tls = CompileSnapshot(2, TlsState(port, CaSecret()), sockets, store, registry);
  ASSERT_TRUE(tls.ok()) << tls.status();
  const auto& cluster = *(*tls)->clusters.at("c");
  ASSERT_NE(cluster.transport, nullptr);
  const std::string& key = cluster.endpoints[0].pool_key;
  EXPECT_TRUE(absl::StartsWith(key, "127.0.0.1:9443 tls:c#")) << key;
  EXPECT_EQ((*tls)->pool_keys.count(key), 1u);
  EXPECT_EQ((*tls)->endpoint_keys.count("127.0.0.1:9443"), 1u);
}

TEST(SnapshotTest, TlsClusterIsCompiledAgainWhenItsSecretChanges) {
  ListenerSocketCache sockets(1);
  stats::StatsStore store;
  upstream::HealthRegistry registry;
  int port = testing::PickFreePort();
  api::Resource ca = CaSecret();
  auto first = CompileSnapshot(1, TlsState(port, ca), sockets, store, registry);
  ASSERT_TRUE(first.ok()) << first.status();
  const auto& before = (*first)->clusters.at("c");

  // Something else changed: the cluster is taken over as it is.
  std::set<api::ResourceId> changed = {{config::v1::ROUTE_TABLE, "rt"}};
  auto second = CompileSnapshot(2, TlsState(port, ca), sockets, store, registry, first->get(),
                                &changed);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)->clusters.at("c"), before);

  // The CA was replaced: compiled again, with a new TLS context, so pooled
  // connections verified against the old CA are not reused.
  changed = {{config::v1::SECRET, "upstream-ca"}};
  auto third = CompileSnapshot(3, TlsState(port, CaSecret()), sockets, store, registry,
                               second->get(), &changed);
  ASSERT_TRUE(third.ok()) << third.status();
  const auto& after = (*third)->clusters.at("c");
  EXPECT_NE(after, before);
  EXPECT_NE(after->transport, before->transport);
  EXPECT_NE(after->endpoints[0].pool_key, before->endpoints[0].pool_key);
  EXPECT_EQ((*third)->pool_keys.count(before->endpoints[0].pool_key), 0u);
}

TEST(SnapshotTest, ChangedClusterWithTheSameTlsKeepsItsContext) {
  ListenerSocketCache sockets(1);
  stats::StatsStore store;
  upstream::HealthRegistry registry;
  int port = testing::PickFreePort();
  api::Resource ca = CaSecret();
  auto first = CompileSnapshot(1, TlsState(port, ca), sockets, store, registry);
  ASSERT_TRUE(first.ok()) << first.status();
  const auto& before = (*first)->clusters.at("c");
  // An endpoint added: the cluster is compiled again, but its TLS context
  // (pooled connections, session to resume) stays.
  std::set<api::ResourceId> changed = {{config::v1::CLUSTER, "c"}};
  auto second = CompileSnapshot(2, TlsState(port, ca, 2), sockets, store, registry, first->get(),
                                &changed);
  ASSERT_TRUE(second.ok()) << second.status();
  const auto& after = (*second)->clusters.at("c");
  EXPECT_NE(after, before);
  EXPECT_EQ(after->transport, before->transport);
  EXPECT_EQ(after->endpoints[0].pool_key, before->endpoints[0].pool_key);
  // Another name to verify: a new context.
  api::ResourceMap renamed = TlsState(port, ca, 2);
  renamed[{config::v1::CLUSTER, "c"}].mutable_cluster()->mutable_tls()->set_sni("other.test");
  auto third = CompileSnapshot(3, renamed, sockets, store, registry, second->get(), &changed);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_NE((*third)->clusters.at("c")->transport, before->transport);
}

}  // namespace
}  // namespace sluice::config
