#include "dataplane/config/snapshot.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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
  api::ConfigChange changed;
  changed.changed = {{config::v1::ROUTE_TABLE, "rt"}};
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
  api::ConfigChange changed;
  changed.changed = {{config::v1::ROUTE_TABLE, "rt"}};
  auto second = CompileSnapshot(2, TlsState(port, ca), sockets, store, registry, first->get(),
                                &changed);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)->clusters.at("c"), before);

  // The CA was replaced: compiled again, with a new TLS context, so pooled
  // connections verified against the old CA are not reused.
  changed.changed = {{config::v1::SECRET, "upstream-ca"}};
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
  api::ConfigChange changed;
  changed.changed = {{config::v1::CLUSTER, "c"}};
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

// State(port) with clusters "c" and "d" and table "rt" of 10 routes in two
// virtual hosts (h0 for h0.test, h1 for anything else), r0..r9 on /r0../r9
// to cluster "c", each route of h1 with a route policy... none: chains empty.
api::ResourceMap BigState(int port) {
  api::ResourceMap state =
      State(port, R"(cluster { name: "d" endpoints { address: "127.0.0.1" port: 9003 } })");
  api::Resource table;
  table.mutable_route_table()->set_name("rt");
  for (int h = 0; h < 2; ++h) {
    config::v1::VirtualHost* vhost = table.mutable_route_table()->add_virtual_hosts();
    vhost->set_name(absl::StrCat("h", h));
    vhost->add_domains(h == 0 ? "h0.test" : "*");
    for (int r = 0; r < 5; ++r) {
      const int i = h * 5 + r;
      config::v1::Route* route = vhost->add_routes();
      route->set_name(absl::StrCat("r", i));
      route->mutable_match()->set_prefix(absl::StrCat("/r", i));
      route->mutable_route()->set_cluster("c");
    }
  }
  state[api::IdOf(table)] = table;
  return state;
}

// Route `index` of virtual host `v` of "rt" in `state`.
config::v1::Route* RouteOf(api::ResourceMap& state, int v, int index) {
  return state[{config::v1::ROUTE_TABLE, "rt"}]
      .mutable_route_table()
      ->mutable_virtual_hosts(v)
      ->mutable_routes(index);
}

// The route id "rt" matches for `host` and `path`, or -1.
int Matched(const ConfigSnapshot& s, const std::string& host, const std::string& path) {
  router::RouteRequest request;
  request.method = "GET";
  request.host = host;
  request.path_and_query = path;
  router::MatchResult m = s.route_tables.at("rt")->Match(request);
  return m.kind == router::MatchResult::Kind::kRoute ? static_cast<int>(m.route->id) : -1;
}

TEST(SnapshotTest, PatchedTableRoutesAndCountsAsAWholeCompile) {
  ListenerSocketCache sockets(1);
  stats::StatsStore store;
  upstream::HealthRegistry registry;
  int port = testing::PickFreePort();
  api::ResourceMap state = BigState(port);
  auto first = CompileSnapshot(1, state, sockets, store, registry);
  ASSERT_TRUE(first.ok()) << first.status();
  // Route 3 (h0) goes to "d"; route 7 (h1, index 2) is renamed and moved to
  // another path.
  RouteOf(state, 0, 3)->mutable_route()->set_cluster("d");
  RouteOf(state, 1, 2)->set_name("r7b");
  RouteOf(state, 1, 2)->mutable_match()->set_prefix("/seven");
  api::ConfigChange change;
  change.patched["rt"] = {3, 7};
  auto patched = CompileSnapshot(2, state, sockets, store, registry, first->get(), &change);
  ASSERT_TRUE(patched.ok()) << patched.status();
  auto whole = CompileSnapshot(3, state, sockets, store, registry);
  ASSERT_TRUE(whole.ok()) << whole.status();

  const router::RouteTable& p = *(*patched)->route_tables.at("rt");
  const router::RouteTable& w = *(*whole)->route_tables.at("rt");
  ASSERT_EQ(p.route_count(), w.route_count());
  for (uint32_t i = 0; i < p.route_count(); ++i) {
    EXPECT_EQ(p.route(i).name, w.route(i).name) << i;
    EXPECT_EQ(p.route(i).virtual_host, w.route(i).virtual_host) << i;
    ASSERT_EQ(p.route(i).clusters.size(), 1u) << i;
    EXPECT_EQ(p.route(i).clusters[0].name, w.route(i).clusters[0].name) << i;
  }
  EXPECT_EQ(p.route(3).clusters[0].name, "d");
  for (const auto& [host, path] : std::vector<std::pair<std::string, std::string>>{
           {"h0.test", "/r3/x"}, {"h0.test", "/r0"}, {"other", "/seven"}, {"other", "/r7"},
           {"other", "/r9"}, {"h0.test", "/r7"}}) {
    EXPECT_EQ(Matched(**patched, host, path), Matched(**whole, host, path)) << host << path;
  }
  EXPECT_EQ(Matched(**patched, "other", "/seven"), 7);
  EXPECT_EQ(Matched(**patched, "other", "/r7"), -1);

  // Stats: routes kept (route 3 kept its name) keep their counters; the
  // renamed one has its own, under its new name.
  const RouteStatsList& before = *(*first)->route_stats.at("rt");
  const RouteStatsList& after = *(*patched)->route_stats.at("rt");
  const RouteStatsList& compiled = *(*whole)->route_stats.at("rt");
  for (uint32_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].by_class[2], compiled[i].by_class[2]) << i;  // same labels
    if (i != 7) {
      EXPECT_EQ(after[i].by_class[2], before[i].by_class[2]) << i;
    }
  }
  EXPECT_NE(after[7].by_class[2], before[7].by_class[2]);
  EXPECT_EQ((*patched)->listeners.at("l").route_stats, &after);
  // /metrics lists a route once it has counted (a 4xx here, for each).
  for (const RouteStatsList* list : {&before, &after}) {
    for (const RouteStats& r : *list) r.by_class[4]->Inc();
  }
  after[7].by_class[2]->Inc();
  std::string text = store.RenderPrometheus();
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_route_requests_total{route_table=\"rt\",route=\"r7b\",virtual_host=\"h1\","
            "status_class=\"2xx\"} 1"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "route=\"r7\",")) << text;

  // The old name goes once no snapshot has it; the others stay.
  first->reset();
  store.Prune();
  text = store.RenderPrometheus();
  EXPECT_FALSE(absl::StrContains(text, "route=\"r7\",")) << text;
  EXPECT_TRUE(absl::StrContains(text, "route=\"r3\",")) << text;
  EXPECT_TRUE(absl::StrContains(text, "route=\"r7b\",")) << text;

  // A version that does not touch the table shares its compiled table,
  // stats and chains (no copy), and the listener points into them.
  api::ConfigChange other;
  other.changed = {{config::v1::CLUSTER, "d"}};
  auto third = CompileSnapshot(4, state, sockets, store, registry, patched->get(), &other);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ((*third)->route_tables.at("rt"), (*patched)->route_tables.at("rt"));
  EXPECT_EQ((*third)->route_stats.at("rt"), (*patched)->route_stats.at("rt"));
  EXPECT_EQ((*third)->route_filters.at("rt"), (*patched)->route_filters.at("rt"));
  EXPECT_EQ((*third)->listeners.at("l").route_stats, &after);
}

// A table with a route added in one virtual host and one removed in the
// other (api::ApplyRouteTablePatch's splices) compiles to what a whole
// compile gives: routing, stats labels (an unnamed route whose index moved
// gets the stats of its new default name), chains; routes that survived keep
// their stats.
TEST(SnapshotTest, SplicedTableRoutesAndCountsAsAWholeCompile) {
  ListenerSocketCache sockets(1);
  stats::StatsStore store;
  upstream::HealthRegistry registry;
  int port = testing::PickFreePort();
  api::ResourceMap state = BigState(port);
  RouteOf(state, 1, 3)->clear_name();  // "h1/3" by default
  auto first = CompileSnapshot(1, state, sockets, store, registry);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first)->route_tables.at("rt")->route(8).name, "h1/3");

  auto* routes = state[{config::v1::ROUTE_TABLE, "rt"}].mutable_route_table();
  config::v1::Route* added = routes->mutable_virtual_hosts(0)->add_routes();
  added->set_name("new");
  added->mutable_match()->set_prefix("/new");
  added->mutable_route()->set_cluster("d");
  auto* h0 = routes->mutable_virtual_hosts(0)->mutable_routes();
  for (int i = h0->size() - 1; i > 1; --i) h0->SwapElements(i, i - 1);  // "new" at index 1
  routes->mutable_virtual_hosts(1)->mutable_routes()->DeleteSubrange(0, 1);  // r5
  api::ConfigChange change;
  change.patched["rt"] = {1};
  change.spliced["rt"] = {{1, 0, 1}, {6, 1, 0}};
  auto spliced = CompileSnapshot(2, state, sockets, store, registry, first->get(), &change);
  ASSERT_TRUE(spliced.ok()) << spliced.status();
  auto whole = CompileSnapshot(3, state, sockets, store, registry);
  ASSERT_TRUE(whole.ok()) << whole.status();

  const router::RouteTable& p = *(*spliced)->route_tables.at("rt");
  const router::RouteTable& w = *(*whole)->route_tables.at("rt");
  ASSERT_EQ(p.route_count(), 10u);
  ASSERT_EQ(p.route_count(), w.route_count());
  for (uint32_t i = 0; i < p.route_count(); ++i) {
    EXPECT_EQ(p.route(i).name, w.route(i).name) << i;
    EXPECT_EQ(p.route(i).virtual_host, w.route(i).virtual_host) << i;
  }
  EXPECT_EQ(p.route(8).name, "h1/2");
  for (const auto& [host, path] : std::vector<std::pair<std::string, std::string>>{
           {"h0.test", "/new"}, {"h0.test", "/r0"}, {"h0.test", "/r4"}, {"other", "/r5"},
           {"other", "/r6"}, {"other", "/r8"}, {"other", "/r9"}, {"h0.test", "/r9"}}) {
    EXPECT_EQ(Matched(**spliced, host, path), Matched(**whole, host, path)) << host << path;
  }
  EXPECT_EQ(Matched(**spliced, "h0.test", "/new"), 1);
  EXPECT_EQ(Matched(**spliced, "h0.test", "/r4"), 5);
  EXPECT_EQ(Matched(**spliced, "other", "/r5"), -1);
  EXPECT_EQ(Matched(**spliced, "other", "/r9"), 9);

  const RouteStatsList& before = *(*first)->route_stats.at("rt");
  const RouteStatsList& after = *(*spliced)->route_stats.at("rt");
  const RouteStatsList& compiled = *(*whole)->route_stats.at("rt");
  ASSERT_EQ(after.size(), compiled.size());
  for (uint32_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].by_class[2], compiled[i].by_class[2]) << i;  // same labels
    EXPECT_EQ(after[i].duration, compiled[i].duration) << i;
  }
  // Kept by old id: 0 -> 0, 2..5 -> 1..4, 6, 7, 9 -> 6, 7, 9.
  for (auto [now, old] : std::vector<std::pair<int, int>>{
           {0, 0}, {2, 1}, {5, 4}, {6, 6}, {7, 7}, {9, 9}}) {
    EXPECT_EQ(after[now].by_class[2], before[old].by_class[2]) << now;
  }
  EXPECT_NE(after[8].by_class[2], before[8].by_class[2]);  // "h1/3" is now "h1/2"
  // /metrics lists a route once it has counted (a 4xx here, for each).
  for (const RouteStatsList* list : {&before, &after}) {
    for (const RouteStats& r : *list) r.by_class[4]->Inc();
  }
  after[8].by_class[2]->Inc();
  std::string text = store.RenderPrometheus();
  EXPECT_TRUE(absl::StrContains(
      text, "sluice_route_requests_total{route_table=\"rt\",route=\"h1/2\",virtual_host=\"h1\","
            "status_class=\"2xx\"} 1"))
      << text;
  EXPECT_EQ((*spliced)->route_filters.at("rt")->size(), 10u);
  EXPECT_EQ((*spliced)->listeners.at("l").route_stats, &after);

  // The removed route's and the old default name's metrics go once no
  // snapshot has them.
  first->reset();
  whole->reset();
  store.Prune();
  text = store.RenderPrometheus();
  EXPECT_FALSE(absl::StrContains(text, "route=\"r5\",")) << text;
  EXPECT_FALSE(absl::StrContains(text, "route=\"h1/3\",")) << text;
  EXPECT_TRUE(absl::StrContains(text, "route=\"new\",")) << text;
  EXPECT_TRUE(absl::StrContains(text, "route=\"r4\",")) << text;
}

// A spliced table that leaves a virtual host without routes is refused.
TEST(SnapshotTest, SplicedTableWithAnEmptyVirtualHostIsRefused) {
  ListenerSocketCache sockets(1);
  stats::StatsStore store;
  upstream::HealthRegistry registry;
  int port = testing::PickFreePort();
  api::ResourceMap state = BigState(port);
  auto first = CompileSnapshot(1, state, sockets, store, registry);
  ASSERT_TRUE(first.ok()) << first.status();
  state[{config::v1::ROUTE_TABLE, "rt"}]
      .mutable_route_table()
      ->mutable_virtual_hosts(1)
      ->mutable_routes()
      ->Clear();
  api::ConfigChange change;
  change.patched["rt"] = {};
  change.spliced["rt"] = {{5, 5, 0}};
  auto spliced = CompileSnapshot(2, state, sockets, store, registry, first->get(), &change);
  ASSERT_FALSE(spliced.ok());
  EXPECT_EQ(spliced.status().message(),
            "RouteTable \"rt\": virtual_hosts[1].routes: needs at least one route");
}

TEST(SnapshotTest, PatchedRouteToAMissingClusterIsRefused) {
  ListenerSocketCache sockets(1);
  stats::StatsStore store;
  upstream::HealthRegistry registry;
  int port = testing::PickFreePort();
  api::ResourceMap state = BigState(port);
  auto first = CompileSnapshot(1, state, sockets, store, registry);
  ASSERT_TRUE(first.ok()) << first.status();
  RouteOf(state, 1, 1)->mutable_route()->set_cluster("nope");
  api::ConfigChange change;
  change.patched["rt"] = {6};
  auto patched = CompileSnapshot(2, state, sockets, store, registry, first->get(), &change);
  ASSERT_FALSE(patched.ok());
  EXPECT_EQ(patched.status().message(),
            "RouteTable \"rt\": virtual_hosts[1].routes[1].route.cluster: refers to Cluster "
            "\"nope\", which does not exist");
}

}  // namespace
}  // namespace sluice::config
