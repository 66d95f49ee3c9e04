// ConfigState with Secrets and Consumers: what an apply or a delete is told,
// with the time of the apply injected, and what is stored.
#include "controlplane/server/config_state.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/credentials.h"
#include "api/regex_limit.h"
#include "sluice/discovery/v1/discovery.pb.h"
#include "tests/api/test_certificates.h"
#include "tests/harness/process.h"

namespace sluice::controlplane {
namespace {

const absl::Time kJan2030 = absl::FromCivil(absl::CivilDay(2030, 1, 1), absl::UTCTimeZone());

api::Resource Cluster(const std::string& name) {
  api::Resource r;
  r.mutable_cluster()->set_name(name);
  auto* e = r.mutable_cluster()->add_endpoints();
  e->set_address("127.0.0.1");
  e->set_port(9000);
  return r;
}

api::Resource RouteTable() {
  api::Resource r;
  auto* vhost = r.mutable_route_table()->add_virtual_hosts();
  r.mutable_route_table()->set_name("main");
  vhost->add_domains("*");
  auto* route = vhost->add_routes();
  route->mutable_match()->set_prefix("/");
  route->mutable_route()->set_cluster("users");
  return r;
}

api::Resource HttpsListener() {
  api::Resource r;
  auto* l = r.mutable_listener();
  l->set_name("https");
  l->set_address("127.0.0.1");
  l->set_port(8443);
  l->set_route_table("main");
  l->mutable_tls()->add_certificates("web");
  return r;
}

// A certificate valid through 2030 only.
api::Resource Secret2030(const std::string& name) {
  testing::CertificateSpec spec;
  spec.not_before = kJan2030;
  spec.not_after = kJan2030 + absl::Hours(24 * 365);
  testing::TestCertificate c = testing::MakeCertificate(spec);
  api::Resource r;
  r.mutable_secret()->set_name(name);
  r.mutable_secret()->mutable_tls_certificate()->set_certificate_chain(c.certificate_pem);
  r.mutable_secret()->mutable_tls_certificate()->set_private_key(c.key_pem);
  return r;
}

class ConfigStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = FileStore::Open(sluice::testing::MakeTempDir("config_state"));
    ASSERT_TRUE(store.ok()) << store.status();
    auto state = ConfigState::Create(std::move(*store), [this] { return now_; });
    ASSERT_TRUE(state.ok()) << state.status();
    state_ = std::move(*state);
  }

  absl::Time now_ = kJan2030 + absl::Hours(24 * 100);
  std::unique_ptr<ConfigState> state_;
};

TEST_F(ConfigStateTest, CertificateMustBeValidWhenItIsApplied) {
  api::Resource secret = Secret2030("web");
  now_ = kJan2030 - absl::Hours(1);
  auto result = state_->Apply({Cluster("users"), RouteTable(), secret, HttpsListener()}, false);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(result.status().message(),
            "Secret \"web\": tls_certificate.certificate_chain: certificate is not valid before "
            "2030-01-01T00:00:00Z");
  EXPECT_EQ(state_->Current()->version, 0u);

  now_ = kJan2030 + absl::Hours(24 * 100);
  result = state_->Apply({Cluster("users"), RouteTable(), secret, HttpsListener()}, false);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->version, 1u);
  // The stored key is the real one; only what is shown is redacted.
  EXPECT_EQ(state_->Current()
                ->resources.at({config::v1::SECRET, "web"})
                .secret()
                .tls_certificate()
                .private_key(),
            secret.secret().tls_certificate().private_key());
}

TEST_F(ConfigStateTest, ACertificateThatExpiresInServiceDoesNotBlockOtherChanges) {
  api::Resource secret = Secret2030("web");
  ASSERT_TRUE(state_->Apply({Cluster("users"), RouteTable(), secret, HttpsListener()}, false).ok());
  now_ = kJan2030 + absl::Hours(24 * 400);  // the certificate has expired
  // An unrelated change, and re-applying the unchanged Secret with it (as
  // `sluicectl apply -f DIR` does), both go through.
  api::Resource other = Cluster("other");
  auto result = state_->Apply({other, secret}, false);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->diff.added.size(), 1u);
  // A changed Secret with an expired certificate is refused.
  api::Resource renewed_but_expired = Secret2030("web");
  result = state_->Apply({renewed_but_expired}, /*dry_run=*/true);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().message(),
            "Secret \"web\": tls_certificate.certificate_chain: certificate expired at "
            "2031-01-01T00:00:00Z");
}

TEST_F(ConfigStateTest, ContentAndApplyTimeErrorsAreReportedTogether) {
  api::Resource secret = Secret2030("web");
  now_ = kJan2030 + absl::Hours(24 * 400);
  auto result = state_->Apply({Cluster("users"), RouteTable(), secret, HttpsListener()}, false);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::StrContains(result.status().message(), "certificate expired at"))
      << result.status();
  api::Resource listener = HttpsListener();
  listener.mutable_listener()->mutable_tls()->set_min_version("1.0");
  result = state_->Apply({Cluster("users"), RouteTable(), secret, listener}, false);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::StrContains(result.status().message(),
                                "Listener \"https\": tls.min_version: must be"))
      << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), "certificate expired at"))
      << result.status();
}

// A route no request path can match is refused when applied (it is not a
// rule of the stored state: see api::ValidateNewContent).
TEST_F(ConfigStateTest, ARouteThatCannotMatchIsRefusedAtApply) {
  ASSERT_TRUE(state_->Apply({Cluster("users"), RouteTable()}, false).ok());
  api::Resource table = RouteTable();
  table.mutable_route_table()->mutable_virtual_hosts(0)->mutable_routes(0)->mutable_match()
      ->set_prefix("/search?q=");
  auto result = state_->Apply({table}, /*dry_run=*/true);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().message(),
            "RouteTable \"main\": virtual_hosts[0].routes[0].match.prefix: '/search?q=' has "
            "'?' at byte 8: the query is not part of the path (match it with query_parameters); "
            "no request would match");
  EXPECT_EQ(state_->Current()->version, 1u);
}

TEST_F(ConfigStateTest, DeletingASecretInUseIsRefused) {
  ASSERT_TRUE(
      state_->Apply({Cluster("users"), RouteTable(), Secret2030("web"), HttpsListener()}, false)
          .ok());
  auto result = state_->Delete({config::v1::SECRET, "web"}, false);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(result.status().message(),
            "cannot delete Secret \"web\": the rest of the config needs it:\n"
            "Listener \"https\": tls.certificates[0]: Secret \"web\" is what this delete "
            "removes");
  result = state_->Delete({config::v1::ROUTE_TABLE, "main"}, false);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::StrContains(result.status().message(),
                                "RouteTable \"main\", which this delete removes"))
      << result.status().message();
  // A version this store never made is not "changed since".
  ChangeContext ahead;
  ahead.if_version = 999;
  result = state_->Delete({config::v1::LISTENER, "https"}, false, ahead);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::StrContains(result.status().message(),
                                "--if-version 999 is ahead of this store"))
      << result.status().message();
  ASSERT_TRUE(state_->Delete({config::v1::LISTENER, "https"}, false).ok());
  EXPECT_TRUE(state_->Delete({config::v1::SECRET, "web"}, false).ok());
}

api::Resource ClusterWithEndpoints(const std::string& name, int endpoints) {
  api::Resource r;
  r.mutable_cluster()->set_name(name);
  for (int i = 0; i < endpoints; ++i) {
    auto* e = r.mutable_cluster()->add_endpoints();
    e->set_address("127.0.0.1");
    e->set_port(static_cast<uint32_t>(10000 + i));
  }
  return r;
}

std::unique_ptr<ConfigState> OpenState(const std::string& dir, int64_t max_config_bytes,
                                       FileStore** store_out = nullptr) {
  auto store = FileStore::Open(dir);
  EXPECT_TRUE(store.ok()) << store.status();
  if (store_out) *store_out = store->get();
  auto state = ConfigState::Create(std::move(*store), &absl::Now, max_config_bytes);
  EXPECT_TRUE(state.ok()) << state.status();
  return std::move(*state);
}

// What a new proxy receives is the whole config in one message: ConfigBytes
// is that message's size (with room for the nonce), never less.
TEST(ConfigBytesTest, CoversTheFullDiscoveryResponse) {
  api::ResourceMap resources;
  for (int i = 0; i < 50; ++i) {
    api::Resource r = ClusterWithEndpoints("c" + std::to_string(i), i);
    resources[api::IdOf(r)] = r;
  }
  discovery::v1::DiscoveryResponse full;
  full.set_version(UINT64_MAX);
  full.set_nonce(std::to_string(UINT64_MAX));
  full.set_store_id(NewStoreId());
  for (const auto& [id, r] : resources) *full.add_resources() = r;
  int64_t real = static_cast<int64_t>(full.ByteSizeLong());
  EXPECT_GE(ConfigBytes(resources), real);
  EXPECT_LE(ConfigBytes(resources), real + 128);
}

TEST(ConfigStateLimitsTest, AnApplyThatMakesTheConfigTooLargeIsRefusedWithSizeAndLimit) {
  auto state = OpenState(sluice::testing::MakeTempDir("config_state"), 4096);
  ASSERT_TRUE(state->Apply({ClusterWithEndpoints("small", 10)}, false).ok());
  int64_t bytes = ConfigBytes({{{config::v1::CLUSTER, "small"}, ClusterWithEndpoints("small", 10)},
                               {{config::v1::CLUSTER, "big"}, ClusterWithEndpoints("big", 300)}});
  ASSERT_GT(bytes, 4096);
  for (bool dry_run : {true, false}) {
    auto result = state->Apply({ClusterWithEndpoints("big", 300)}, dry_run);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(result.status().message(),
              absl::StrCat("the whole config would be ", bytes,
                           " bytes, over the limit of 4096 bytes (a proxy that connects "
                           "receives it in one message; sluice-control --max-config-bytes); "
                           "nothing changed"));
  }
  EXPECT_EQ(state->Current()->version, 1u);
  EXPECT_EQ(state->Current()->resources.size(), 1u);
  // Within the limit: accepted.
  EXPECT_TRUE(state->Apply({ClusterWithEndpoints("big", 100)}, false).ok());
}

// Resources that alone encode past the limit are refused before any copy or
// validation (AdminService asks before Apply): 1.2 million of them took half
// a minute and 1.9 GB to be refused after the whole check.
TEST(ConfigStateLimitsTest, ResourcesThatAloneAreOverTheLimitAreRefusedAtOnce) {
  auto state = OpenState(sluice::testing::MakeTempDir("config_state"), 4096);
  google::protobuf::RepeatedPtrField<api::Resource> resources;
  *resources.Add() = ClusterWithEndpoints("big", 300);
  int64_t bytes = ConfigBytes({{{config::v1::CLUSTER, "big"}, resources[0]}});
  ASSERT_GT(bytes, 4096);
  absl::Status status = state->CheckResourcesFit(resources);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(),
            absl::StrCat("the resources of this apply alone are ", bytes,
                         " bytes, over the limit of 4096 bytes for the whole config (a proxy "
                         "that connects receives it in one message; sluice-control "
                         "--max-config-bytes); nothing changed"));
  // Within it, the whole check decides.
  resources.Clear();
  *resources.Add() = ClusterWithEndpoints("some", 100);
  EXPECT_TRUE(state->CheckResourcesFit(resources).ok());
  // Consumers are stored sealed, in another size: not counted here.
  api::Resource consumer;
  consumer.mutable_consumer()->set_name("many");
  for (int i = 0; i < 64; ++i) {  // the most a consumer has, each 90 bytes
    consumer.mutable_consumer()->add_keys()->set_key(absl::StrCat(i, std::string(88, 'k')));
  }
  resources.Clear();
  *resources.Add() = consumer;
  ASSERT_GT(consumer.ByteSizeLong(), 4096u);
  EXPECT_TRUE(state->CheckResourcesFit(resources).ok());
}

TEST(ConfigStateLimitsTest, AConfigOverALoweredLimitMayShrinkButNotGrow) {
  std::string dir = sluice::testing::MakeTempDir("config_state");
  ASSERT_TRUE(
      OpenState(dir, api::kMaxConfigBytes)->Apply({ClusterWithEndpoints("big", 300)}, false).ok());
  auto state = OpenState(dir, 2048);
  ASSERT_GT(state->Current()->config_bytes, 2048);
  EXPECT_EQ(state->Apply({ClusterWithEndpoints("more", 1)}, false).status().code(),
            absl::StatusCode::kResourceExhausted);
  auto shrunk = state->Apply({ClusterWithEndpoints("big", 200)}, false);
  EXPECT_TRUE(shrunk.ok()) << shrunk.status();
  // Resources over the lowered limit but not past the stored config pass
  // the early check: the whole check says whether the config shrinks.
  google::protobuf::RepeatedPtrField<api::Resource> resources;
  *resources.Add() = ClusterWithEndpoints("big", 150);
  EXPECT_TRUE(state->CheckResourcesFit(resources).ok());
}

// An apply checks the rules of each resource it adds or changes, not of
// every stored one: before, each apply compiled every stored regex again (60
// that take 0.2 s each made every apply take 10 s and more), and a stored
// resource that today's rules refuse (here a regex over the program-size
// limit, stored before there was one) blocked every change.
TEST(ConfigStateLimitsTest, AnApplyChecksOnlyWhatItChanges) {
  const std::string dir = sluice::testing::MakeTempDir("config_state");
  {
    auto store = FileStore::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    api::Resource table = RouteTable();
    table.mutable_route_table()->mutable_virtual_hosts(0)->mutable_routes(0)->mutable_match()
        ->set_regex(R"(/r(\pL|\pN){1,300})");
    api::ResourceMap resources;
    resources.emplace(api::IdOf(table), table);
    resources.emplace(api::IdOf(Cluster("users")), Cluster("users"));
    ASSERT_TRUE((*store)->Save(1, resources).ok());
  }
  auto state = OpenState(dir, api::kMaxConfigBytes);
  auto applied = state->Apply({Cluster("other")}, false);
  EXPECT_TRUE(applied.ok()) << applied.status();
  auto deleted = state->Delete({config::v1::CLUSTER, "other"}, false);
  EXPECT_TRUE(deleted.ok()) << deleted.status();
  // The table itself, applied again as it is, is held to today's rules.
  api::Resource table = state->Current()->resources.at({config::v1::ROUTE_TABLE, "main"});
  table.mutable_route_table()->mutable_virtual_hosts(0)->add_domains("other.example");
  auto changed = state->Apply({table}, false);
  EXPECT_FALSE(changed.ok());
  EXPECT_TRUE(absl::StrContains(changed.status().message(), "over the limit of 20000"))
      << changed.status();
}

// Refusals that list resources are bounded like validation's (they travel
// in a gRPC status; 150 names given twice lost the reason to the client's
// metadata limit).
TEST(ConfigStateLimitsTest, ListsInRefusalsAreBounded) {
  auto state = OpenState(sluice::testing::MakeTempDir("config_state"), api::kMaxConfigBytes);
  std::vector<api::Resource> twice;
  for (int i = 0; i < 30; ++i) {
    twice.push_back(Cluster(absl::StrCat("c", i)));
    twice.push_back(Cluster(absl::StrCat("c", i)));
  }
  auto applied = state->Apply(twice, false);
  ASSERT_FALSE(applied.ok());
  EXPECT_TRUE(absl::EndsWith(applied.status().message(), "\n... and 10 more errors"))
      << applied.status();
  std::vector<api::ResourceId> absent;
  for (int i = 0; i < 30; ++i) absent.push_back({config::v1::CLUSTER, absl::StrCat("gone", i)});
  auto deleted = state->DeleteAll(absent, false, {});
  ASSERT_FALSE(deleted.ok());
  EXPECT_TRUE(absl::EndsWith(deleted.status().message(),
                             "Cluster \"gone19\" and 10 more do not exist; nothing deleted"))
      << deleted.status();
}

// A route table of `routes` routes, each matching by a regex of some 14,000
// RE2 instructions.
api::Resource RegexTable(const std::string& name, int routes) {
  api::Resource r;
  r.mutable_route_table()->set_name(name);
  auto* vhost = r.mutable_route_table()->add_virtual_hosts();
  vhost->add_domains(name + ".example");
  for (int i = 0; i < routes; ++i) {
    auto* route = vhost->add_routes();
    route->mutable_match()->set_regex(absl::StrCat("/", i, ".{900}.{900}"));
    route->mutable_route()->set_cluster("users");
  }
  return r;
}

// Every proxy holds every regular expression compiled: the config's
// together are bounded (one 247 KB file made every proxy 1.75 GB).
TEST(ConfigStateLimitsTest, AConfigsRegularExpressionsAreBoundedTogether) {
  auto state = OpenState(sluice::testing::MakeTempDir("config_state"), api::kMaxConfigBytes);
  ASSERT_TRUE(state->Apply({Cluster("users"), RegexTable("a", 40)}, false).ok());
  const int64_t one = state->Current()->regex_total;
  EXPECT_GT(one, 40 * 10000);
  EXPECT_LT(one, api::kMaxConfigRegexProgramSize);
  for (bool dry_run : {true, false}) {
    auto result = state->Apply({RegexTable("b", 40)}, dry_run);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_TRUE(absl::StrContains(
        result.status().message(),
        "the config's regular expressions would compile to at least "))
        << result.status();
    EXPECT_TRUE(absl::StrContains(result.status().message(), "; the most: RouteTable \"b\" "))
        << result.status();
    EXPECT_TRUE(absl::StrContains(result.status().message(), "; nothing changed"))
        << result.status();
  }
  EXPECT_EQ(state->Current()->version, 1u);
  // Smaller, it fits; the total counts what stays.
  ASSERT_TRUE(state->Apply({RegexTable("b", 10)}, false).ok());
  EXPECT_GT(state->Current()->regex_total, one);
  // Growing "a" now would pass the bound.
  EXPECT_FALSE(state->Apply({RegexTable("a", 60)}, false).ok());
  // A delete never grows it (the path without a digest counts too).
  ASSERT_TRUE(state->Delete({config::v1::ROUTE_TABLE, "b"}, false).ok());
  EXPECT_EQ(state->Current()->regex_total, one);
}

TEST(ConfigStateLimitsTest, LimitAboveWhatProxiesReceiveIsRejected) {
  auto store = FileStore::Open(sluice::testing::MakeTempDir("config_state"));
  ASSERT_TRUE(store.ok());
  EXPECT_FALSE(ConfigState::Create(std::move(*store), &absl::Now, api::kMaxConfigBytes + 1).ok());
}

TEST(ConfigStateStoreIdTest, MadeOnceForADataDirAndKept) {
  std::string dir = sluice::testing::MakeTempDir("config_state");
  std::string id = OpenState(dir, api::kMaxConfigBytes)->store_id();
  EXPECT_EQ(id.size(), 32u);
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
  // Kept across restarts, before and after changes.
  {
    auto state = OpenState(dir, api::kMaxConfigBytes);
    EXPECT_EQ(state->store_id(), id);
    ASSERT_TRUE(state->Apply({Cluster("users")}, false).ok());
  }
  EXPECT_EQ(OpenState(dir, api::kMaxConfigBytes)->store_id(), id);
  // Another (or a reset) data dir is another store.
  EXPECT_NE(OpenState(sluice::testing::MakeTempDir("config_state"), api::kMaxConfigBytes)
                ->store_id(),
            id);
}

// The rename happened: the change is what a restart loads, so it is served
// and reported as stored, with the durability warning, never as "nothing
// changed".
TEST(ConfigStateStoreTest, DirectoryFsyncFailureIsReportedAsStoredAndNotDurable) {
  std::string dir = sluice::testing::MakeTempDir("config_state");
  FileStore* store = nullptr;
  auto state = OpenState(dir, api::kMaxConfigBytes, &store);
  int notified = 0;
  state->Subscribe([&](bool) { ++notified; });
  store->set_directory_fsync_for_testing([](int) {
    errno = EIO;
    return -1;
  });
  auto result = state->Apply({Cluster("users")}, false);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->version, 1u);
  EXPECT_EQ(result->diff.added.size(), 1u);
  EXPECT_TRUE(absl::StartsWith(result->warning,
                               "version 1 is stored and pushed to proxies, but may not survive "
                               "a power loss or OS crash: " +
                                   dir + "/state.db is replaced, but cannot fsync its directory"))
      << result->warning;
  EXPECT_EQ(state->Current()->version, 1u);
  EXPECT_EQ(notified, 1);
  state.reset();
  auto restarted = OpenState(dir, api::kMaxConfigBytes);
  EXPECT_EQ(restarted->Current()->version, 1u);
}

constexpr char kAliceKey[] = "alice-key-0123456789";
constexpr char kAlicePassword[] = "correct horse battery staple";

api::Resource Alice(const std::string& password = kAlicePassword) {
  api::Resource r;
  auto* c = r.mutable_consumer();
  c->set_name("alice");
  c->add_groups("admins");
  c->add_keys()->set_key(kAliceKey);
  c->mutable_basic_auth()->set_username("alice");
  c->mutable_basic_auth()->set_password(password);
  return r;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(ConfigStateConsumerTest, PlainCredentialsAreStoredAndServedOnlyAsHashes) {
  std::string dir = sluice::testing::MakeTempDir("config_state");
  auto state = OpenState(dir, api::kMaxConfigBytes);
  int notified = 0;
  state->Subscribe([&](bool) { ++notified; });

  // A dry run says what would change and stores nothing.
  auto result = state->Apply({Alice()}, /*dry_run=*/true);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->diff.added.size(), 1u);
  EXPECT_EQ(state->Current()->version, 0u);

  result = state->Apply({Alice()}, false);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->version, 1u);
  EXPECT_EQ(notified, 1);
  const api::Resource& stored = state->Current()->resources.at({config::v1::CONSUMER, "alice"});
  ASSERT_EQ(stored.consumer().keys_size(), 1);
  EXPECT_EQ(stored.consumer().keys(0).key(), "");
  EXPECT_EQ(stored.consumer().keys(0).key_sha256(), api::Sha256Hex(kAliceKey));
  EXPECT_EQ(stored.consumer().basic_auth().username(), "alice");
  EXPECT_EQ(stored.consumer().basic_auth().password(), "");
  const std::string hash = stored.consumer().basic_auth().password_hash();
  EXPECT_TRUE(api::VerifyPassword(kAlicePassword, hash));
  EXPECT_EQ(stored.consumer().groups(0), "admins");
  // Nor is the plain value on disk.
  std::string on_disk = ReadFile(dir + "/state.db");
  ASSERT_NE(on_disk.find(hash), std::string::npos);
  EXPECT_EQ(on_disk.find(kAliceKey), std::string::npos);
  EXPECT_EQ(on_disk.find(kAlicePassword), std::string::npos);

  // The same file again, also after a restart: no change, no new version,
  // no push, the same hash (no new salt).
  for (int restart = 0; restart < 2; ++restart) {
    if (restart == 1) {
      state.reset();  // releases the data dir
      state = OpenState(dir, api::kMaxConfigBytes);
      notified = 0;
      state->Subscribe([&](bool) { ++notified; });
    }
    result = state->Apply({Alice()}, false);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_TRUE(result->diff.empty());
    EXPECT_EQ(result->diff.unchanged, 1);
    EXPECT_EQ(result->version, 1u);
    EXPECT_EQ(notified, restart == 0 ? 1 : 0);
    EXPECT_EQ(state->Current()
                  ->resources.at({config::v1::CONSUMER, "alice"})
                  .consumer()
                  .basic_auth()
                  .password_hash(),
              hash);
  }

  // A new password is a change, with a new hash.
  result = state->Apply({Alice("a new password")}, false);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->version, 2u);
  EXPECT_EQ(result->diff.changed.size(), 1u);
  const std::string new_hash = state->Current()
                                   ->resources.at({config::v1::CONSUMER, "alice"})
                                   .consumer()
                                   .basic_auth()
                                   .password_hash();
  EXPECT_NE(new_hash, hash);
  EXPECT_TRUE(api::VerifyPassword("a new password", new_hash));
  EXPECT_FALSE(api::VerifyPassword(kAlicePassword, new_hash));
}

// A consumer applied with a stored one's key or username is the one told,
// whatever the names' order ("aaron" sorts before "alice"): the server
// told "alice", which the apply did not touch, and sluicectl found no file
// or line for it.
TEST(ConfigStateConsumerTest, AConflictWithAStoredConsumerNamesTheOneApplied) {
  std::string dir = sluice::testing::MakeTempDir("config_state");
  auto state = OpenState(dir, api::kMaxConfigBytes);
  ASSERT_TRUE(state->Apply({Alice()}, false).ok());
  api::Resource aaron;
  aaron.mutable_consumer()->set_name("aaron");
  aaron.mutable_consumer()->add_keys()->set_key(kAliceKey);
  auto result = state->Apply({aaron}, false);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::StartsWith(result.status().message(),
                               "Consumer \"aaron\": keys[0]: is also a key of Consumer \"alice\""))
      << result.status();
}

TEST(ConfigStateConsumerTest, InvalidCredentialsAreRefusedWithoutQuotingThem) {
  auto state = OpenState(sluice::testing::MakeTempDir("config_state"), api::kMaxConfigBytes);
  ASSERT_TRUE(state->Apply({Alice()}, false).ok());
  // A key too short: reported as given, not hashed out of sight.
  api::Resource bob;
  bob.mutable_consumer()->set_name("bob");
  bob.mutable_consumer()->add_keys()->set_key("s3cret");
  auto result = state->Apply({bob}, false);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(result.status().message(),
            "Consumer \"bob\": keys[0].key: is 6 characters; must be 8..512");
  // Alice's key, given plain to another consumer: both are named, the key
  // is not.
  bob.mutable_consumer()->mutable_keys(0)->set_key(kAliceKey);
  result = state->Apply({bob}, /*dry_run=*/true);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().message(),
            "Consumer \"bob\": keys[0]: is also a key of Consumer \"alice\" (keys[0]); no two "
            "consumers may share a key");
  EXPECT_EQ(state->Current()->version, 1u);
}

}  // namespace
}  // namespace sluice::controlplane
