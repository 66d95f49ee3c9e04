// The admin API never hands a private key back: Get and List redact it,
// whatever client asks. Consumers' API keys and passwords are taken in plain
// and only their hashes come back.
#include "controlplane/server/admin_service.h"

#include "controlplane/server/fleet_view.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

#include "api/credentials.h"

#include "tests/api/test_certificates.h"
#include "tests/harness/process.h"

namespace sluice::controlplane {
namespace {

class AdminServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = sluice::testing::MakeTempDir("admin_service");
    auto store = FileStore::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    auto state = ConfigState::Create(std::move(*store));
    ASSERT_TRUE(state.ok()) << state.status();
    state_ = std::move(*state);
    rollouts_ = std::make_unique<RolloutManager>(state_.get(), &registry_, dir + "/rollout.db");
    service_ = std::make_unique<AdminServiceImpl>(state_.get(), &registry_, rollouts_.get());

    certificate_ = sluice::testing::MakeCertificate({});
    admin::v1::ApplyRequest apply;
    auto* secret = apply.add_resources()->mutable_secret();
    secret->set_name("web");
    secret->mutable_tls_certificate()->set_certificate_chain(certificate_.certificate_pem);
    secret->mutable_tls_certificate()->set_private_key(certificate_.key_pem);
    auto* cluster = apply.add_resources()->mutable_cluster();
    cluster->set_name("users");
    cluster->add_endpoints()->set_address("127.0.0.1");
    cluster->mutable_endpoints(0)->set_port(9000);
    admin::v1::ApplyResponse applied;
    grpc::Status status = service_->Apply(nullptr, &apply, &applied);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  ProxyRegistry registry_;
  std::unique_ptr<ConfigState> state_;
  std::unique_ptr<RolloutManager> rollouts_;
  std::unique_ptr<AdminServiceImpl> service_;
  sluice::testing::TestCertificate certificate_;
};

// A field this build does not know (a newer sluicectl's option) is refused
// in a request that changes something: it was ignored, and the change made
// without what it asked.
TEST_F(AdminServiceTest, ARequestWithAFieldThisBuildDoesNotKnowChangesNothing) {
  admin::v1::ApplyRequest apply;
  auto* cluster = apply.add_resources()->mutable_cluster();
  cluster->set_name("other");
  cluster->add_endpoints()->set_address("127.0.0.1");
  cluster->mutable_endpoints(0)->set_port(9001);
  apply.GetReflection()->MutableUnknownFields(&apply)->AddVarint(111, 1);
  admin::v1::ApplyResponse applied;
  grpc::Status status = service_->Apply(nullptr, &apply, &applied);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "ApplyRequest has field 111, which this control plane does not know (sent by a "
            "newer client?); nothing changed");
  admin::v1::DeleteRequest remove;
  remove.set_kind(config::v1::CLUSTER);
  remove.set_name("users");
  remove.GetReflection()->MutableUnknownFields(&remove)->AddLengthDelimited(50, "x");
  admin::v1::DeleteResponse deleted;
  status = service_->Delete(nullptr, &remove, &deleted);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Deeper in the request too (a key of `more`), and a known field sent
  // with another wire type is named as such.
  admin::v1::DeleteRequest nested;
  nested.set_kind(config::v1::CLUSTER);
  nested.set_name("users");
  auto* more = nested.add_more();
  more->set_kind(config::v1::SECRET);
  more->set_name("web");
  more->GetReflection()->MutableUnknownFields(more)->AddVarint(9, 1);
  status = service_->Delete(nullptr, &nested, &deleted);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "DeleteRequest.more[0] has field 9, which this control plane does not know (sent by "
            "a newer client?); nothing changed");
  admin::v1::ApplyRequest typed;
  *typed.mutable_resources() = apply.resources();
  typed.GetReflection()->MutableUnknownFields(&typed)->AddVarint(3, 5);  // author is a string
  status = service_->Apply(nullptr, &typed, &applied);
  EXPECT_EQ(status.error_message(),
            "ApplyRequest field 3 (author) came with the wrong wire type (it is a string field); "
            "the request is malformed; nothing changed");
  EXPECT_EQ(state_->Current()->version, 1u);
  EXPECT_EQ(state_->Current()->resources.size(), 2u);
}

// An apply whose resources alone are over the config limit is refused before
// it is copied and validated, counted and audited like any refusal.
TEST(AdminServiceLimitTest, AnApplyOverTheLimitByItselfIsRefusedBeforeItIsChecked) {
  const std::string dir = sluice::testing::MakeTempDir("admin_service");
  auto store = FileStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto state = ConfigState::Create(std::move(*store), &absl::Now, /*max_config_bytes=*/4096);
  ASSERT_TRUE(state.ok()) << state.status();
  ProxyRegistry registry;
  RolloutManager rollouts(state->get(), &registry, dir + "/rollout.db");
  AdminServiceImpl service(state->get(), &registry, &rollouts);
  admin::v1::ApplyRequest apply;
  apply.set_dry_run(true);
  for (int i = 0; i < 300; ++i) {
    // Invalid too (port 0): the whole check would have said so instead.
    auto* cluster = apply.add_resources()->mutable_cluster();
    cluster->set_name(absl::StrCat("c", i));
    cluster->add_endpoints()->set_address("127.0.0.1");
  }
  admin::v1::ApplyResponse applied;
  grpc::Status status = service.Apply(nullptr, &apply, &applied);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(absl::StartsWith(status.error_message(), "the resources of this apply alone are "))
      << status.error_message();
  EXPECT_EQ((*state)->Current()->version, 0u);
}

// Replicas on etcd: ListProxies adds the other replicas' proxies. The same
// process (node id, group, pid) seen here and in another replica's list
// (it just moved here) is listed once; two processes under one node id
// (twins) are two proxies. Before, twins on two replicas were listed once
// and apply --wait missed one's refusal.
TEST_F(AdminServiceTest, ListProxiesCoversTheOtherReplicasProcessByProcess) {
  class Board : public ReplicaDemandBoard {
   public:
    absl::Status Publish(const std::string& replica, std::string value) override {
      entries[replica] = {replica, std::move(value), ++revision};
      return absl::OkStatus();
    }
    absl::StatusOr<std::vector<Entry>> ReadAll() override {
      std::vector<Entry> all;
      for (const auto& [replica, entry] : entries) all.push_back(entry);
      return all;
    }
    absl::Status Remove(const std::string& replica, int64_t) override {
      entries.erase(replica);
      return absl::OkStatus();
    }
    std::map<std::string, Entry> entries;
    int64_t revision = 0;
  } board;
  auto node = [](const std::string& id, const std::string& group, const std::string& pid,
                 const std::string& instance = "") {
    discovery::v1::Node n;
    n.set_id(id);
    n.set_group(group);
    (*n.mutable_labels())["pid"] = pid;
    if (!instance.empty()) (*n.mutable_labels())["instance"] = instance;
    return n;
  };
  registry_.Connect(node("p1", "g1", "100"), 1);
  registry_.Connect(node("moved", "g1", "300"), 1);
  // Twins in containers: pid 1 both, told apart by their instance.
  registry_.Connect(node("ct", "g1", "1", "aaaa"), 1);
  std::vector<admin::v1::ProxyStatus> theirs;
  for (const auto& n : {node("p1", "g2", "200"), node("moved", "g1", "300"),
                        node("ct", "g1", "1", "bbbb")}) {
    admin::v1::ProxyStatus status;
    *status.mutable_node() = n;
    theirs.push_back(status);
  }
  FleetView mine(&board, [this] { return registry_.List(); }, {.replica_id = "mine"});
  FleetView other(&board, [&] { return theirs; }, {.replica_id = "other"});
  service_->set_fleet_view(&mine);
  // A replica that just started answers once its view is whole, not with
  // its own proxies alone (apply --wait said "no proxy is connected").
  admin::v1::ListProxiesResponse listed;
  std::thread asking([&] { ASSERT_TRUE(service_->ListProxies(nullptr, nullptr, &listed).ok()); });
  for (int i = 0; i < 2; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    ASSERT_TRUE(other.RunOnce().ok());
    ASSERT_TRUE(mine.RunOnce().ok());
  }
  asking.join();
  std::vector<std::string> seen;
  for (const auto& p : listed.proxies()) {
    seen.push_back(absl::StrCat(p.node().id(), "/", p.node().group(), "@", p.replica()));
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"ct/g1@mine", "moved/g1@mine", "p1/g1@mine",
                                            "p1/g2@other", "ct/g1@other"}));
  service_->set_fleet_view(nullptr);
}

TEST_F(AdminServiceTest, GetRedactsThePrivateKey) {
  admin::v1::GetRequest request;
  request.set_kind(config::v1::SECRET);
  request.set_name("web");
  admin::v1::GetResponse response;
  ASSERT_TRUE(service_->Get(nullptr, &request, &response).ok());
  const auto& tls = response.resource().secret().tls_certificate();
  EXPECT_EQ(tls.private_key(), "[redacted]");
  EXPECT_EQ(tls.certificate_chain(), certificate_.certificate_pem);
  EXPECT_EQ(response.resource().DebugString().find("PRIVATE KEY"), std::string::npos);
  // What is stored (and pushed to proxies) keeps the key.
  EXPECT_EQ(state_->Current()
                ->resources.at({config::v1::SECRET, "web"})
                .secret()
                .tls_certificate()
                .private_key(),
            certificate_.key_pem);
}

TEST_F(AdminServiceTest, ListRedactsThePrivateKey) {
  for (auto kind : {config::v1::RESOURCE_KIND_UNSPECIFIED, config::v1::SECRET}) {
    admin::v1::ListRequest request;
    request.set_kind(kind);
    admin::v1::ListResponse response;
    ASSERT_TRUE(service_->List(nullptr, &request, &response).ok());
    EXPECT_EQ(response.DebugString().find("PRIVATE KEY"), std::string::npos);
    bool found = false;
    for (const auto& r : response.resources()) {
      if (!r.has_secret()) continue;
      found = true;
      EXPECT_EQ(r.secret().tls_certificate().private_key(), "[redacted]");
    }
    EXPECT_TRUE(found);
  }
}

TEST_F(AdminServiceTest, SecretKindIsAccepted) {
  admin::v1::GetRequest request;
  request.set_kind(config::v1::SECRET);
  request.set_name("nope");
  admin::v1::GetResponse response;
  grpc::Status status = service_->Get(nullptr, &request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "Secret \"nope\" does not exist");
}

TEST_F(AdminServiceTest, ConsumerCredentialsComeBackOnlyAsHashes) {
  admin::v1::ApplyRequest apply;
  auto* consumer = apply.add_resources()->mutable_consumer();
  consumer->set_name("alice");
  consumer->add_keys()->set_key("alice-plain-key-1");
  consumer->mutable_basic_auth()->set_username("alice");
  consumer->mutable_basic_auth()->set_password("alice-plain-password");
  admin::v1::ApplyResponse applied;
  grpc::Status status = service_->Apply(nullptr, &apply, &applied);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(applied.diff().added_size(), 1);

  admin::v1::GetRequest get;
  get.set_kind(config::v1::CONSUMER);
  get.set_name("alice");
  admin::v1::GetResponse got;
  ASSERT_TRUE(service_->Get(nullptr, &get, &got).ok());
  const auto& c = got.resource().consumer();
  EXPECT_EQ(c.keys(0).key(), "");
  EXPECT_EQ(c.keys(0).key_sha256(), api::Sha256Hex("alice-plain-key-1"));
  EXPECT_EQ(c.basic_auth().password(), "");
  EXPECT_TRUE(api::VerifyPassword("alice-plain-password", c.basic_auth().password_hash()));
  EXPECT_EQ(got.DebugString().find("plain"), std::string::npos) << got.DebugString();

  admin::v1::ListRequest list;
  list.set_kind(config::v1::CONSUMER);
  admin::v1::ListResponse listed;
  ASSERT_TRUE(service_->List(nullptr, &list, &listed).ok());
  ASSERT_EQ(listed.resources_size(), 1);
  EXPECT_EQ(listed.resources(0).SerializeAsString(), got.resource().SerializeAsString());
  EXPECT_EQ(listed.DebugString().find("plain"), std::string::npos) << listed.DebugString();
}

TEST_F(AdminServiceTest, KindIsRequired) {
  admin::v1::GetRequest request;
  request.set_name("alice");
  admin::v1::GetResponse response;
  grpc::Status status = service_->Get(nullptr, &request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "kind is required (LISTENER, ROUTE_TABLE, CLUSTER, SECRET or CONSUMER)");
  // A kind this build does not know is named so, by Get, Delete and List
  // alike. Before: List answered it with no resources, and Delete said a
  // kind was required.
  request.set_kind(static_cast<config::v1::ResourceKind>(9));
  status = service_->Get(nullptr, &request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  const std::string unknown =
      "unknown kind 9 (this control plane knows LISTENER, ROUTE_TABLE, CLUSTER, SECRET or "
      "CONSUMER)";
  EXPECT_EQ(status.error_message(), unknown);
  admin::v1::ListRequest list;
  list.set_kind(static_cast<config::v1::ResourceKind>(9));
  admin::v1::ListResponse listed;
  status = service_->List(nullptr, &list, &listed);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), unknown);
}

// PurgeCache's selector checks, before anything is sent.
TEST_F(AdminServiceTest, PurgeSelectorsAreChecked) {
  auto purge = [&](const admin::v1::PurgeCacheRequest& request) {
    admin::v1::PurgeCacheResponse response;
    return service_->PurgeCache(nullptr, &request, &response);
  };
  admin::v1::PurgeCacheRequest request;
  request.set_path("/a");
  request.set_prefix("/b");
  grpc::Status status = purge(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "path and prefix are exclusive: path purges one key, prefix every "
            "path under it; "
            "give one of them");

  request.clear_path();
  request.set_prefix("b/");
  status = purge(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "prefix \"b/\" must start with '/'");

  request.clear_prefix();
  request.set_path("a?x=1");
  status = purge(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "path \"a?x=1\" must start with '/'");

  request.clear_path();
  request.set_host(std::string(kMaxPurgeFieldBytes + 1, 'h'));
  status = purge(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "host is 4097 bytes; at most 4096 are accepted");

  request.clear_host();
  request.set_timeout_ms(60001);
  status = purge(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "timeout_ms is 60001; at most 60000 (1m) is accepted");

  // A route no table has: NOT_FOUND (it said "purged 0 entries").
  request.set_timeout_ms(60000);
  request.set_route("r");
  request.set_prefix("/a");
  status = purge(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(),
            "no route is named \"r\" (a route's name, or vhost/index when it has none, as in "
            "/metrics)");
  admin::v1::ApplyRequest apply;
  auto* table = apply.add_resources()->mutable_route_table();
  table->set_name("main");
  auto* vhost = table->add_virtual_hosts();
  vhost->add_domains("*");
  auto* route = vhost->add_routes();
  route->set_name("r");
  route->mutable_match()->set_prefix("/");
  route->mutable_route()->set_cluster("users");
  vhost->add_routes()->CopyFrom(*route);
  vhost->mutable_routes(1)->clear_name();
  admin::v1::ApplyResponse applied;
  ASSERT_TRUE(service_->Apply(nullptr, &apply, &applied).ok());
  request.set_route("0/1");  // the unnamed one
  EXPECT_TRUE(purge(request).ok());
  request.set_route("r");

  // Valid, and no relay: no proxy is targeted.
  admin::v1::PurgeCacheResponse response;
  status = service_->PurgeCache(nullptr, &request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.proxies_targeted(), 0u);
  EXPECT_EQ(response.proxies_confirmed(), 0u);
}

}  // namespace
}  // namespace sluice::controlplane
