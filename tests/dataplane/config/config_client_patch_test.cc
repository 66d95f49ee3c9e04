// ConfigClient and route-table patches (discovery.v1.RouteTablePatch), against
// a scripted control plane (an in-process gRPC DiscoveryService that sends
// what the test gives it and hands back the proxy's answers): a patch is
// applied to the held table, a patch on another base or for a table not held
// is NACKed naming the table and both hashes and changes nothing, a version
// the proxy cannot apply is undone, and a new stream says the patched
// table's hash. The last test times a one-route patch of a 10,000-route,
// 2,000-cluster config through the client and CompileSnapshot.
#include <gtest/gtest.h>

#include <deque>
#include <optional>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "api/resource.h"
#include "api/route_patch.h"
#include "dataplane/config/config_client.h"
#include "dataplane/config/snapshot.h"
#include "google/protobuf/text_format.h"
#include "grpcpp/grpcpp.h"
#include "sluice/discovery/v1/discovery.grpc.pb.h"
#include "tests/harness/proxy.h"

namespace sluice::config {
namespace {

using discovery::v1::DiscoveryRequest;
using discovery::v1::DiscoveryResponse;

// The control plane: each stream gets the responses queued with Send(); every
// request the proxy writes is kept, in order, for Next().
class ScriptedControlPlane final : public discovery::v1::DiscoveryService::Service {
 public:
  ScriptedControlPlane() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.SetMaxReceiveMessageSize(64 << 20);
    builder.SetMaxSendMessageSize(64 << 20);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~ScriptedControlPlane() override {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    server_->Shutdown(std::chrono::system_clock::now());
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  void Send(DiscoveryResponse response) {
    absl::MutexLock lock(&mu_);
    to_send_.push_back(std::move(response));
  }
  // Ends the current stream (the proxy reconnects).
  void Break() {
    absl::MutexLock lock(&mu_);
    break_ = true;
  }
  // The next request the proxy wrote, waiting up to 10 s.
  std::optional<DiscoveryRequest> Next() {
    absl::MutexLock lock(&mu_);
    auto have = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !received_.empty(); };
    if (!mu_.AwaitWithTimeout(absl::Condition(&have), absl::Seconds(10))) return std::nullopt;
    DiscoveryRequest request = std::move(received_.front());
    received_.pop_front();
    return request;
  }

  grpc::Status StreamConfig(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<DiscoveryResponse, DiscoveryRequest>* stream) override {
    // Requests are read on their own thread: the proxy answers in its own time.
    std::thread reader([this, stream] {
      DiscoveryRequest request;
      while (stream->Read(&request)) {
        absl::MutexLock lock(&mu_);
        received_.push_back(request);
      }
    });
    for (;;) {
      std::optional<DiscoveryResponse> next;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || break_ || !to_send_.empty();
        };
        mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(100));
        if (stopping_ || break_ || context->IsCancelled()) {
          break_ = false;
          break;
        }
        if (to_send_.empty()) continue;
        next = std::move(to_send_.front());
        to_send_.pop_front();
      }
      if (!stream->Write(*next)) break;
    }
    context->TryCancel();
    reader.join();
    return grpc::Status::OK;
  }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool break_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<DiscoveryResponse> to_send_ ABSL_GUARDED_BY(mu_);
  std::deque<DiscoveryRequest> received_ ABSL_GUARDED_BY(mu_);
};

api::Resource Parse(const std::string& text) {
  api::Resource r;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &r)) << text;
  return r;
}

// Table "rt" with routes a, b, c; route b goes to `b_cluster`.
api::Resource Table(const std::string& b_cluster) {
  return Parse(absl::StrCat(R"(route_table { name: "rt" virtual_hosts { domains: "*"
      routes { name: "a" match { prefix: "/a" } route { cluster: "c" } }
      routes { name: "b" match { prefix: "/b" } route { cluster: ")",
                            b_cluster, R"(" } }
      routes { name: "c" match { prefix: "/" } route { cluster: "c" } } } })"));
}

DiscoveryResponse Whole(uint64_t version, const std::vector<api::Resource>& resources) {
  DiscoveryResponse response;
  response.set_version(version);
  response.set_nonce(absl::StrCat("n", version));
  response.set_store_id("store");
  for (const auto& r : resources) *response.add_resources() = r;
  return response;
}

DiscoveryResponse Patch(uint64_t version, const api::Resource& from, const api::Resource& to,
                        std::optional<uint64_t> base_hash = std::nullopt) {
  DiscoveryResponse response = Whole(version, {});
  auto patch = api::MakeRouteTablePatch(from.route_table(), api::ContentHash(from),
                                        to.route_table(), api::ContentHash(to));
  EXPECT_TRUE(patch.has_value());
  if (base_hash.has_value()) patch->set_base_hash(*base_hash);
  *response.add_route_table_patches() = *patch;
  return response;
}

// What the proxy's apply callback saw; it fails while `fail` is set.
struct Applied {
  absl::Mutex mu;
  std::vector<api::ConfigChange> changes ABSL_GUARDED_BY(mu);
  bool fail ABSL_GUARDED_BY(mu) = false;
  ConfigClient::ApplyFn Fn() {
    return [this](uint64_t, const api::ResourceMap&, const api::ConfigChange& change) {
      absl::MutexLock lock(&mu);
      changes.push_back(change);
      return fail ? absl::InvalidArgumentError("RouteTable \"rt\": cannot compile") : absl::OkStatus();
    };
  }
};

std::string HeldTable(const ConfigClient& client) {
  std::string out;
  client.WithHeld([&](const controlplane::StoredState& held) {
    auto it = held.resources.find({config::v1::ROUTE_TABLE, "rt"});
    if (it != held.resources.end()) out = it->second.route_table().SerializeAsString();
  });
  return out;
}

discovery::v1::Node Node() {
  discovery::v1::Node node;
  node.set_id("p1");
  return node;
}

TEST(ConfigClientPatchTest, AppliesPatchesAndRefusesOnesItCannot) {
  ScriptedControlPlane cp;
  Applied applied;
  ConfigClient client(cp.address(), Node(), {}, applied.Fn(), nullptr);
  client.Start();
  ASSERT_TRUE(cp.Next().has_value());  // the first request
  const api::Resource cluster = Parse(R"(cluster { name: "c" endpoints { address: "127.0.0.1" port: 9001 } })");
  const api::Resource v1 = Table("c"), v2 = Table("d"), v3 = Table("e");

  cp.Send(Whole(1, {cluster, v1}));
  auto ack = cp.Next();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->version_applied(), 1u);
  EXPECT_EQ(ack->error_detail(), "");

  // Route b replaced: applied in place, its id handed to the proxy.
  cp.Send(Patch(2, v1, v2));
  ack = cp.Next();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->version_applied(), 2u);
  EXPECT_EQ(ack->error_detail(), "");
  EXPECT_EQ(HeldTable(client), v2.route_table().SerializeAsString());
  {
    absl::MutexLock lock(&applied.mu);
    ASSERT_EQ(applied.changes.size(), 2u);
    EXPECT_TRUE(applied.changes[1].changed.empty());
    EXPECT_FALSE(applied.changes[1].removed);
    EXPECT_EQ(applied.changes[1].patched.at("rt"), std::vector<uint32_t>{1});
  }

  // A patch made against another version of the table: NACKed, naming the
  // table and both hashes; nothing changes and the proxy is not asked.
  const uint64_t stale = api::ContentHash(v1);
  cp.Send(Patch(3, v2, v3, stale));
  ack = cp.Next();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->version_applied(), 2u);
  EXPECT_EQ(ack->error_detail(),
            absl::StrCat("route table patch for RouteTable \"rt\": base hash ",
                         absl::Hex(stale, absl::kZeroPad16),
                         ", but this proxy holds the table at hash ",
                         absl::Hex(api::ContentHash(v2), absl::kZeroPad16), "; send it whole"));
  EXPECT_EQ(HeldTable(client), v2.route_table().SerializeAsString());

  // A patch for a table the proxy does not hold.
  DiscoveryResponse unknown = Patch(3, v2, v3);
  unknown.mutable_route_table_patches(0)->set_name("other");
  cp.Send(unknown);
  ack = cp.Next();
  ASSERT_TRUE(ack.has_value());
  EXPECT_TRUE(absl::StrContains(ack->error_detail(),
                                "route table patch for RouteTable \"other\" (base hash "))
      << ack->error_detail();
  EXPECT_TRUE(absl::StrContains(ack->error_detail(), "does not hold that table"));

  // The proxy cannot apply the patched version: undone, table and hash.
  {
    absl::MutexLock lock(&applied.mu);
    applied.fail = true;
  }
  cp.Send(Patch(3, v2, v3));
  ack = cp.Next();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->version_applied(), 2u);
  EXPECT_EQ(ack->error_detail(), "RouteTable \"rt\": cannot compile");
  EXPECT_EQ(HeldTable(client), v2.route_table().SerializeAsString());
  {
    absl::MutexLock lock(&applied.mu);
    applied.fail = false;
  }
  // ... so the same patch, on the same base, goes in once it can.
  cp.Send(Patch(3, v2, v3));
  ack = cp.Next();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->version_applied(), 3u);
  EXPECT_EQ(ack->error_detail(), "");
  EXPECT_EQ(HeldTable(client), v3.route_table().SerializeAsString());

  // A new stream says what the proxy holds: the patched table's hash.
  cp.Break();
  std::optional<DiscoveryRequest> hello;
  for (int i = 0; i < 20 && !(hello && hello->has_node()); ++i) hello = cp.Next();
  ASSERT_TRUE(hello.has_value() && hello->has_node());
  EXPECT_EQ(hello->version_applied(), 3u);
  bool found = false;
  for (const auto& key : hello->known_resources()) {
    if (key.kind() != config::v1::ROUTE_TABLE) continue;
    found = true;
    EXPECT_EQ(key.name(), "rt");
    EXPECT_EQ(key.hash(), api::ContentHash(v3));
  }
  EXPECT_TRUE(found);
  client.Stop();
}

// Table "rt" (Table("c")) with a route "new" inserted at `index`.
api::Resource TableWithAdded(int index) {
  api::Resource table = Table("c");
  auto* routes = table.mutable_route_table()->mutable_virtual_hosts(0)->mutable_routes();
  config::v1::Route* route = routes->Add();
  route->set_name("new");
  route->mutable_match()->set_prefix("/new");
  route->mutable_route()->set_cluster("c");
  for (int i = routes->size() - 1; i > index; --i) routes->SwapElements(i, i - 1);
  return table;
}

TEST(ConfigClientPatchTest, SplicesAddAndRemoveRoutesAndAreUndoneOnNack) {
  ScriptedControlPlane cp;
  Applied applied;
  ConfigClient client(cp.address(), Node(), {}, applied.Fn(), nullptr);
  client.Start();
  ASSERT_TRUE(cp.Next().has_value());
  const api::Resource cluster = Parse(R"(cluster { name: "c" endpoints { address: "127.0.0.1" port: 9001 } })");
  const api::Resource v1 = Table("c"), added = TableWithAdded(1);
  cp.Send(Whole(1, {cluster, v1}));
  auto ack = cp.Next();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->version_applied(), 1u);

  // A route added: one splice; the proxy is told the inserted id and the
  // splice.
  DiscoveryResponse add = Patch(2, v1, added);
  ASSERT_EQ(add.route_table_patches(0).splices_size(), 1);
  cp.Send(add);
  ack = cp.Next();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->version_applied(), 2u);
  EXPECT_EQ(ack->error_detail(), "");
  EXPECT_EQ(HeldTable(client), added.route_table().SerializeAsString());
  {
    absl::MutexLock lock(&applied.mu);
    ASSERT_EQ(applied.changes.size(), 2u);
    EXPECT_TRUE(applied.changes[1].changed.empty());
    EXPECT_EQ(applied.changes[1].patched.at("rt"), std::vector<uint32_t>{1});
    ASSERT_EQ(applied.changes[1].spliced.at("rt").size(), 1u);
    const api::ConfigChange::Splice& s = applied.changes[1].spliced.at("rt")[0];
    EXPECT_EQ(s.first, 1u);
    EXPECT_EQ(s.removed, 0u);
    EXPECT_EQ(s.inserted, 1u);
  }

  // Removing it again, refused by the proxy: table and hash put back.
  {
    absl::MutexLock lock(&applied.mu);
    applied.fail = true;
  }
  cp.Send(Patch(3, added, v1));
  ack = cp.Next();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->version_applied(), 2u);
  EXPECT_EQ(ack->error_detail(), "RouteTable \"rt\": cannot compile");
  EXPECT_EQ(HeldTable(client), added.route_table().SerializeAsString());
  {
    absl::MutexLock lock(&applied.mu);
    applied.fail = false;
  }
  // A splice the table does not fit (index past its end): NACKed, nothing
  // changes.
  DiscoveryResponse bad = Patch(3, added, v1);
  bad.mutable_route_table_patches(0)->mutable_splices(0)->set_index(9);
  cp.Send(bad);
  ack = cp.Next();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->version_applied(), 2u);
  EXPECT_TRUE(absl::StrContains(ack->error_detail(), "splices[0] removes 1 routes from route 9"))
      << ack->error_detail();
  EXPECT_EQ(HeldTable(client), added.route_table().SerializeAsString());
  // The same removal on the same base goes in once the proxy can apply it.
  cp.Send(Patch(3, added, v1));
  ack = cp.Next();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->version_applied(), 3u);
  EXPECT_EQ(ack->error_detail(), "");
  EXPECT_EQ(HeldTable(client), v1.route_table().SerializeAsString());
  {
    absl::MutexLock lock(&applied.mu);
    const api::ConfigChange& change = applied.changes.back();
    EXPECT_TRUE(change.patched.at("rt").empty());
    ASSERT_EQ(change.spliced.at("rt").size(), 1u);
    EXPECT_EQ(change.spliced.at("rt")[0].removed, 1u);
  }

  // A new stream says the hash of the table as spliced.
  cp.Break();
  std::optional<DiscoveryRequest> hello;
  for (int i = 0; i < 20 && !(hello && hello->has_node()); ++i) hello = cp.Next();
  ASSERT_TRUE(hello.has_value() && hello->has_node());
  bool found = false;
  for (const auto& key : hello->known_resources()) {
    if (key.kind() != config::v1::ROUTE_TABLE) continue;
    found = true;
    EXPECT_EQ(key.hash(), api::ContentHash(v1));
  }
  EXPECT_TRUE(found);
  client.Stop();
}

// bench-config.sh's config: `clusters` clusters with two endpoints each and
// one table "main" of `routes` routes in 10 virtual hosts; route 0's path
// ends in `marker`.
std::vector<api::Resource> BenchConfig(int routes, int clusters, const std::string& marker,
                                       int port) {
  std::vector<api::Resource> out;
  for (int c = 0; c < clusters; ++c) {
    api::Resource r;
    config::v1::Cluster* cluster = r.mutable_cluster();
    cluster->set_name(absl::StrCat("c", c));
    for (int base : {20000, 30000}) {
      auto* e = cluster->add_endpoints();
      e->set_address("127.0.0.1");
      e->set_port(static_cast<uint32_t>(base + c % 5000));
    }
    out.push_back(std::move(r));
  }
  api::Resource table;
  table.mutable_route_table()->set_name("main");
  const int per_host = routes / 10;
  for (int h = 0; h < 10; ++h) {
    auto* vhost = table.mutable_route_table()->add_virtual_hosts();
    vhost->set_name(absl::StrCat("h", h));
    vhost->add_domains(absl::StrCat("h", h, ".example.com"));
    if (h == 9) vhost->add_domains("*");
    for (int r = 0; r < per_host; ++r) {
      const int i = h * per_host + r;
      auto* route = vhost->add_routes();
      route->set_name(absl::StrCat("r", i));
      const std::string path = absl::StrCat("/svc", i, "/", i == 0 ? marker : "v");
      if (r % 2) {
        route->mutable_match()->set_path(path);
      } else {
        route->mutable_match()->set_prefix(path);
      }
      route->mutable_route()->set_cluster(absl::StrCat("c", i % clusters));
    }
  }
  out.push_back(table);
  out.push_back(Parse(absl::StrCat(R"(listener { name: "l" address: "127.0.0.1" port: )", port,
                                   R"( route_table: "main" })")));
  return out;
}

// What ProxyServer::Apply does with a version, minus the workers.
class Compiler {
 public:
  ConfigClient::ApplyFn Fn() {
    return [this](uint64_t version, const api::ResourceMap& resources,
                  const api::ConfigChange& change) -> absl::Status {
      const absl::Time start = absl::Now();
      registry_.Prune();
      store_.Prune();
      auto snapshot = CompileSnapshot(version, resources, sockets_, store_, registry_,
                                      current_.get(), &change);
      if (!snapshot.ok()) return snapshot.status();
      current_ = *snapshot;
      absl::MutexLock lock(&mu_);
      took_.push_back(absl::Now() - start);
      return absl::OkStatus();
    };
  }
  std::vector<absl::Duration> took() {
    absl::MutexLock lock(&mu_);
    return took_;
  }
  std::shared_ptr<const ConfigSnapshot> current() const { return current_; }  // after Stop()

 private:
  ListenerSocketCache sockets_{1};
  stats::StatsStore store_;
  upstream::HealthRegistry registry_;
  std::shared_ptr<const ConfigSnapshot> current_;
  absl::Mutex mu_;
  std::vector<absl::Duration> took_ ABSL_GUARDED_BY(mu_);
};

// The apply time of a one-route patch at bench-config.sh's scale. Prints the
// times (the client logs "applied config version N (...) in X" too).
TEST(ConfigClientPatchTest, OneRoutePatchOfATenThousandRouteConfig) {
  ScriptedControlPlane cp;
  Compiler compiler;
  ConfigClient client(cp.address(), Node(), {}, compiler.Fn(), nullptr);
  client.Start();
  ASSERT_TRUE(cp.Next().has_value());
  // The listener is bound, and port 0 is not a valid listener: a free port.
  const std::vector<api::Resource> config = BenchConfig(10000, 2000, "v", sluice::testing::PickFreePort());
  cp.Send(Whole(1, config));
  auto ack = cp.Next();
  ASSERT_TRUE(ack.has_value());
  ASSERT_EQ(ack->error_detail(), "");
  const api::Resource base = config[2000];
  api::Resource next = base;
  for (uint64_t version = 2; version <= 21; ++version) {
    // Route 0 changes its path each time; route 5000 changes cluster.
    next.mutable_route_table()->mutable_virtual_hosts(0)->mutable_routes(0)
        ->mutable_match()->set_prefix(absl::StrCat("/svc0/", version));
    const api::Resource before = version == 2 ? base : api::Resource(next);
    api::Resource previous = next;
    previous.mutable_route_table()->mutable_virtual_hosts(0)->mutable_routes(0)
        ->mutable_match()->set_prefix(version == 2 ? "/svc0/v" : absl::StrCat("/svc0/", version - 1));
    const absl::Time sent = absl::Now();
    cp.Send(Patch(version, previous, next));
    ack = cp.Next();
    const absl::Duration round_trip = absl::Now() - sent;
    ASSERT_TRUE(ack.has_value());
    ASSERT_EQ(ack->error_detail(), "") << version;
    ASSERT_EQ(ack->version_applied(), version);
    std::printf("version %llu: apply (prune + CompileSnapshot) %s, response to ACK %s\n",
                static_cast<unsigned long long>(version),
                absl::FormatDuration(compiler.took().back()).c_str(),
                absl::FormatDuration(round_trip).c_str());
  }
  // For comparison: the same one-route change sent as the whole table.
  next.mutable_route_table()->mutable_virtual_hosts(0)->mutable_routes(0)
      ->mutable_match()->set_prefix("/svc0/21");
  {
    const absl::Time sent = absl::Now();
    cp.Send(Whole(22, {next}));
    ack = cp.Next();
    ASSERT_TRUE(ack.has_value());
    ASSERT_EQ(ack->error_detail(), "");
    std::printf("version 22 (the table whole): apply %s, response to ACK %s\n",
                absl::FormatDuration(compiler.took().back()).c_str(),
                absl::FormatDuration(absl::Now() - sent).c_str());
  }
  // A route added in the middle of h3 and removed again, as patches: the
  // result routes as a whole compile would (checked in snapshot_test).
  {
    api::Resource added = next;
    auto* routes = added.mutable_route_table()->mutable_virtual_hosts(3)->mutable_routes();
    config::v1::Route* route = routes->Add();
    route->set_name("added");
    route->mutable_match()->set_prefix("/added/");
    route->mutable_route()->set_cluster("c1");
    for (int i = routes->size() - 1; i > 500; --i) routes->SwapElements(i, i - 1);
    for (const auto& [version, from, to] :
         std::vector<std::tuple<uint64_t, api::Resource, api::Resource>>{{23, next, added},
                                                                         {24, added, next}}) {
      const absl::Time sent = absl::Now();
      cp.Send(Patch(version, from, to));
      ack = cp.Next();
      ASSERT_TRUE(ack.has_value());
      ASSERT_EQ(ack->error_detail(), "") << version;
      ASSERT_EQ(ack->version_applied(), version);
      std::printf("version %llu (a route %s): apply %s, response to ACK %s\n",
                  static_cast<unsigned long long>(version), version == 23 ? "added" : "removed",
                  absl::FormatDuration(compiler.took().back()).c_str(),
                  absl::FormatDuration(absl::Now() - sent).c_str());
    }
  }
  client.Stop();
  // The patched route routes as sent.
  router::RouteRequest request;
  request.method = "GET";
  request.host = "h0.example.com";
  request.path_and_query = "/svc0/21/x";
  router::MatchResult m = compiler.current()->route_tables.at("main")->Match(request);
  ASSERT_EQ(m.kind, router::MatchResult::Kind::kRoute);
  EXPECT_EQ(m.route->id, 0u);
  std::printf("whole config (version 1): apply %s\n",
              absl::FormatDuration(compiler.took().front()).c_str());
}

}  // namespace
}  // namespace sluice::config
