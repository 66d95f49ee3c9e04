// The history of versions in ConfigState and the admin API: what each
// version records, retention, surviving a restart (the store reopened),
// rollback (content equality, removals, unknown versions, today's rules) and
// optimistic concurrency (if_version). Time is injected.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "controlplane/server/admin_service.h"
#include "controlplane/server/config_state.h"
#include "google/protobuf/util/message_differencer.h"
#include "tests/api/test_certificates.h"
#include "tests/harness/process.h"

namespace sluice::controlplane {
namespace {

const absl::Time kStart = absl::FromCivil(absl::CivilSecond(2030, 4, 11, 10, 0, 0),
                                          absl::UTCTimeZone());

api::Resource Cluster(const std::string& name, int port = 9000) {
  api::Resource r;
  r.mutable_cluster()->set_name(name);
  auto* e = r.mutable_cluster()->add_endpoints();
  e->set_address("127.0.0.1");
  e->set_port(port);
  return r;
}

bool SameContent(const api::ResourceMap& a, const api::ResourceMap& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [id, resource] : a) {
    auto it = b.find(id);
    if (it == b.end() ||
        !google::protobuf::util::MessageDifferencer::Equals(resource, it->second)) {
      return false;
    }
  }
  return true;
}

class HistoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = sluice::testing::MakeTempDir("history");
    Open(kDefaultHistoryVersions);
  }

  void Open(size_t history_versions) {
    state_.reset();  // releases the data dir's lock
    auto store = FileStore::Open(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    auto state = ConfigState::Create(std::move(*store), [this] { return now_; },
                                     api::kMaxConfigBytes, history_versions);
    ASSERT_TRUE(state.ok()) << state.status();
    state_ = std::move(*state);
  }

  uint64_t Apply(const std::vector<api::Resource>& resources, const std::string& author,
                 const std::string& message) {
    now_ += absl::Minutes(1);
    auto result = state_->Apply(resources, false, ChangeContext{author, message, 0});
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? result->version : 0;
  }

  std::string dir_;
  absl::Time now_ = kStart;
  std::unique_ptr<ConfigState> state_;
};

TEST_F(HistoryTest, EveryVersionIsRecordedWithAuthorMessageTimeAndChange) {
  Apply({Cluster("a"), Cluster("b")}, "ana@host-1", "first");
  Apply({Cluster("a", 9001), Cluster("c")}, "bo@host-2", "");
  now_ += absl::Minutes(1);
  ASSERT_TRUE(state_->Delete({config::v1::CLUSTER, "b"}, false, {"cy@host-3", "drop b", 0}).ok());

  const auto& entries = state_->History()->stored().entries;
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].version, 1u);
  EXPECT_EQ(entries[0].author, "ana@host-1");
  EXPECT_EQ(entries[0].message, "first");
  EXPECT_EQ(entries[0].time, kStart + absl::Minutes(1));
  EXPECT_EQ(entries[0].added.size(), 2u);
  EXPECT_EQ(entries[1].author, "bo@host-2");
  ASSERT_EQ(entries[1].added.size(), 1u);
  EXPECT_EQ(api::NameOf(entries[1].added[0]), "c");
  ASSERT_EQ(entries[1].changed.size(), 1u);
  EXPECT_EQ(entries[1].changed[0].cluster().endpoints(0).port(), 9001u);
  EXPECT_EQ(entries[1].unchanged, 1u);
  EXPECT_EQ(entries[2].message, "drop b");
  ASSERT_EQ(entries[2].removed.size(), 1u);
  EXPECT_EQ(entries[2].removed[0], (api::ResourceId{config::v1::CLUSTER, "b"}));

  // A change that changes nothing, and a dry run, make no version.
  Apply({Cluster("a", 9001)}, "ana@host-1", "again");
  ASSERT_TRUE(state_->Apply({Cluster("z")}, true, {"ana@host-1", "", 0}).ok());
  EXPECT_EQ(state_->History()->stored().entries.size(), 3u);
}

// Who and why are bounded: a 20 MiB message kept in the history made
// `history` (and every conflict report) fail past gRPC's message limit.
TEST_F(HistoryTest, AnAuthorOrMessageOverItsLimitIsRefused) {
  auto result = state_->Apply({Cluster("a")}, false, {"ana", std::string(4097, 'm'), 0});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(result.status().message(), "message is 4097 bytes; at most 4096 are kept; nothing changed");
  result = state_->Apply({Cluster("a")}, false, {std::string(257, 'a'), "", 0});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().message(), "author is 257 bytes; at most 256 are kept; nothing changed");
  EXPECT_FALSE(state_->Delete({config::v1::CLUSTER, "a"}, false, {"ana", std::string(5000, 'm'), 0})
                   .ok());
  EXPECT_TRUE(state_->History()->stored().entries.empty());
  Apply({Cluster("a")}, std::string(256, 'a'), std::string(4096, 'm'));  // at the limits: kept
}

TEST_F(HistoryTest, KeepsTheNewestVersionsAndEachOneCanBeRebuilt) {
  Open(3);
  for (int i = 1; i <= 5; ++i) Apply({Cluster("a", 9000 + i), Cluster(absl::StrCat("c", i))},
                                     "ana", absl::StrCat("v", i));
  auto history = state_->History();
  ASSERT_EQ(history->stored().entries.size(), 3u);
  EXPECT_EQ(history->stored().entries.front().version, 3u);
  EXPECT_EQ(history->stored().entries.back().version, 5u);
  auto v3 = history->ContentAt(3);
  ASSERT_TRUE(v3.ok()) << v3.status();
  EXPECT_EQ(v3->size(), 4u);  // a, c1, c2, c3
  EXPECT_EQ(v3->at({config::v1::CLUSTER, "a"}).cluster().endpoints(0).port(), 9003u);
  EXPECT_FALSE(v3->count({config::v1::CLUSTER, "c4"}));
  auto v5 = history->ContentAt(5);
  ASSERT_TRUE(v5.ok());
  EXPECT_TRUE(SameContent(*v5, state_->Current()->resources));
  auto v2 = history->ContentAt(2);
  ASSERT_FALSE(v2.ok());
  EXPECT_EQ(v2.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(v2.status().message(), "versions 3..5 are kept"))
      << v2.status();
}

TEST_F(HistoryTest, TheCurrentVersionIsAlwaysKept) {
  Open(1);
  Apply({Cluster("a")}, "ana", "one");
  Apply({Cluster("b")}, "ana", "two");
  auto history = state_->History();
  ASSERT_EQ(history->stored().entries.size(), 1u);
  EXPECT_EQ(history->stored().entries[0].version, 2u);
  EXPECT_EQ(history->stored().entries[0].message, "two");
  auto v2 = history->ContentAt(2);
  ASSERT_TRUE(v2.ok());
  EXPECT_TRUE(SameContent(*v2, state_->Current()->resources));
}

TEST_F(HistoryTest, SurvivesARestartAndALowerRetentionAfterIt) {
  for (int i = 1; i <= 4; ++i) Apply({Cluster("a", 9000 + i)}, "ana", absl::StrCat("v", i));
  Open(kDefaultHistoryVersions);  // the control plane restarts on the same data dir
  auto history = state_->History();
  ASSERT_EQ(history->stored().entries.size(), 4u);
  EXPECT_EQ(history->stored().entries[1].message, "v2");
  EXPECT_EQ(history->stored().entries[1].author, "ana");
  EXPECT_EQ(history->stored().entries[1].time, kStart + absl::Minutes(2));
  auto v2 = history->ContentAt(2);
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->at({config::v1::CLUSTER, "a"}).cluster().endpoints(0).port(), 9002u);

  Open(2);
  ASSERT_EQ(state_->History()->stored().entries.size(), 2u);
  EXPECT_EQ(state_->History()->stored().entries[0].version, 3u);
  // And the next change continues from there.
  EXPECT_EQ(Apply({Cluster("b")}, "bo", "v5"), 5u);
  Open(2);
  EXPECT_EQ(state_->History()->stored().entries.back().message, "v5");
}

// After the first version of a process, each one is appended to
// history.log; a restart reads them all back.
TEST_F(HistoryTest, VersionsAppendedToTheLogSurviveARestart) {
  for (int i = 1; i <= 5; ++i) Apply({Cluster("a", 9000 + i)}, "ana", absl::StrCat("v", i));
  struct stat st;
  ASSERT_EQ(::stat((dir_ + "/history.log").c_str(), &st), 0) << "versions 2..5 were appended";
  Open(kDefaultHistoryVersions);
  auto history = state_->History();
  ASSERT_EQ(history->stored().entries.size(), 5u);
  EXPECT_EQ(history->stored().entries[4].message, "v5");
  auto v3 = history->ContentAt(3);
  ASSERT_TRUE(v3.ok());
  EXPECT_EQ(v3->at({config::v1::CLUSTER, "a"}).cluster().endpoints(0).port(), 9003u);
  // The first version after the restart writes history.db whole again.
  EXPECT_EQ(Apply({Cluster("b")}, "bo", "v6"), 6u);
  EXPECT_NE(::access((dir_ + "/history.log").c_str(), F_OK), 0);
  EXPECT_EQ(Apply({Cluster("c")}, "bo", "v7"), 7u);
  Open(kDefaultHistoryVersions);
  ASSERT_EQ(state_->History()->stored().entries.size(), 7u);
  EXPECT_EQ(state_->History()->stored().entries.back().message, "v7");
}

TEST_F(HistoryTest, AStateWithoutHistoryFileStartsOneAtTheCurrentVersion) {
  Apply({Cluster("a")}, "ana", "one");
  Apply({Cluster("b")}, "ana", "two");
  ASSERT_EQ(::unlink((dir_ + "/history.db").c_str()), 0);
  Open(kDefaultHistoryVersions);
  auto history = state_->History();
  ASSERT_EQ(history->stored().entries.size(), 1u);
  EXPECT_EQ(history->stored().entries[0].version, 2u);
  EXPECT_EQ(history->stored().entries[0].time, absl::InfinitePast());
  EXPECT_TRUE(history->ContentAt(2).ok());
  // A history one version ahead of the state (a crash between the two
  // files) loses that version: rewrite the state as it was at version 2.
  Apply({Cluster("c")}, "ana", "three");
  StoredState v2{2, *history->ContentAt(2), state_->store_id()};
  state_.reset();
  {
    auto store = FileStore::Open(dir_);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Save(v2).ok());
  }
  Open(kDefaultHistoryVersions);
  EXPECT_EQ(state_->History()->stored().entries.back().version, 2u);
  EXPECT_EQ(Apply({Cluster("d")}, "ana", "three again"), 3u);
}

// history.log without history.db (deleted): the log cannot be read without
// the content it adds to, and the warning says so (before: "does not match
// the state", as if restored from another backup).
TEST_F(HistoryTest, ALogWithoutItsHistoryFileSaysSo) {
  for (int i = 1; i <= 3; ++i) Apply({Cluster("a", 9000 + i)}, "ana", absl::StrCat("v", i));
  state_.reset();
  ASSERT_EQ(::unlink((dir_ + "/history.db").c_str()), 0);
  ::testing::internal::CaptureStderr();
  Open(kDefaultHistoryVersions);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(absl::StrContains(log, "history.log is there without")) << log;
  EXPECT_FALSE(absl::StrContains(log, "does not match")) << log;
  ASSERT_EQ(state_->History()->stored().entries.size(), 1u);
  EXPECT_EQ(state_->History()->stored().entries[0].version, 3u);
}

// A missing state with its history still there (state.db deleted): the
// start is refused, naming both. Before: it started empty, and the first
// apply overwrote a history that could rebuild every version.
TEST_F(HistoryTest, AMissingStateWithAHistoryRefusesToStart) {
  for (int i = 1; i <= 3; ++i) Apply({Cluster("a", 9000 + i)}, "ana", absl::StrCat("v", i));
  state_.reset();
  ASSERT_EQ(::unlink((dir_ + "/state.db").c_str()), 0);
  auto store = FileStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  auto state = ConfigState::Create(std::move(*store), [this] { return now_; },
                                   api::kMaxConfigBytes, kDefaultHistoryVersions);
  ASSERT_FALSE(state.ok());
  EXPECT_EQ(state.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(state.status().message(),
                                "has a history (versions 1..3) but no state"))
      << state.status();
  struct stat st;
  EXPECT_EQ(::stat((dir_ + "/history.db").c_str(), &st), 0);  // left as it was
}

// A crash between the history and the state of the very first apply leaves
// version 1 in the history and no state: a crash, not a lost state. The
// start goes on and drops that version (as for any crash between the two).
TEST_F(HistoryTest, ACrashDuringTheFirstApplyIsNoMissingState) {
  Apply({Cluster("a")}, "ana", "v1");
  state_.reset();
  ASSERT_EQ(::unlink((dir_ + "/state.db").c_str()), 0);
  ::testing::internal::CaptureStderr();
  Open(kDefaultHistoryVersions);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(state_->Current()->version, 0u);
  EXPECT_TRUE(state_->History()->stored().entries.empty());
  // It cannot tell this from a state.db lost after that apply was answered:
  // the log says what it dropped (it said nothing).
  EXPECT_TRUE(absl::StrContains(log, "has a history of version 1 but no state")) << log;
  EXPECT_EQ(Apply({Cluster("b")}, "ana", "v1 again"), 1u);
}

// A history.log whose last record was lost (a cut-short write) while the
// state has that version: the older versions stay, and the state's is one
// change from the newest kept. Before: the whole history was dropped.
TEST_F(HistoryTest, AHistoryEndingBeforeTheStateKeepsItsOlderVersions) {
  for (int i = 1; i <= 5; ++i) Apply({Cluster("a", 9000 + i)}, "ana", absl::StrCat("v", i));
  Apply({Cluster("a", 9006), Cluster("b")}, "ana", "v6");
  state_.reset();
  struct stat st;
  const std::string log = dir_ + "/history.log";
  ASSERT_EQ(::stat(log.c_str(), &st), 0);
  ASSERT_EQ(::truncate(log.c_str(), st.st_size - 10), 0);
  Open(kDefaultHistoryVersions);
  auto history = state_->History();
  ASSERT_EQ(history->stored().entries.size(), 6u);
  EXPECT_EQ(history->stored().entries[4].message, "v5");
  const HistoryEntry& v6 = history->stored().entries[5];
  EXPECT_EQ(v6.version, 6u);
  EXPECT_EQ(v6.time, absl::InfinitePast());
  // Said so (the history table printed "made before history was kept").
  EXPECT_EQ(v6.message, "(its history record was lost: time, author and message unknown)");
  EXPECT_EQ(v6.added.size(), 1u);    // b
  EXPECT_EQ(v6.changed.size(), 1u);  // a's port
  auto content = history->ContentAt(6);
  ASSERT_TRUE(content.ok());
  EXPECT_TRUE(SameContent(*content, state_->Current()->resources));
  auto v3 = history->ContentAt(3);
  ASSERT_TRUE(v3.ok());
  EXPECT_EQ(v3->at({config::v1::CLUSTER, "a"}).cluster().endpoints(0).port(), 9003u);
  EXPECT_EQ(Apply({Cluster("c")}, "bo", "v7"), 7u);
}

TEST_F(HistoryTest, RollbackMakesANewVersionWithTheOldContentIncludingRemovals) {
  Apply({Cluster("a"), Cluster("b")}, "ana", "v1");
  const api::ResourceMap v1 = state_->Current()->resources;
  Apply({Cluster("a", 9001), Cluster("c")}, "ana", "v2");
  now_ += absl::Minutes(1);
  ASSERT_TRUE(state_->Delete({config::v1::CLUSTER, "b"}, false).ok());

  // A dry run tells what would change and changes nothing.
  auto result = state_->Rollback(1, true, {"bo", "back", 0});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->version, 3u);
  EXPECT_EQ(result->diff.added.size(), 1u);    // b
  EXPECT_EQ(result->diff.changed.size(), 1u);  // a
  EXPECT_EQ(result->diff.removed.size(), 1u);  // c
  EXPECT_EQ(state_->Current()->version, 3u);

  result = state_->Rollback(1, false, {"bo", "back to v1", 0});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->version, 4u);
  EXPECT_TRUE(SameContent(state_->Current()->resources, v1));
  const HistoryEntry& entry = state_->History()->stored().entries.back();
  EXPECT_EQ(entry.version, 4u);
  EXPECT_EQ(entry.author, "bo");
  EXPECT_EQ(entry.message, "back to v1");
  ASSERT_EQ(entry.removed.size(), 1u);
  EXPECT_EQ(entry.removed[0].second, "c");
  // Once more: nothing to change, no new version.
  result = state_->Rollback(1, false, {});
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->version, 4u);
  EXPECT_TRUE(result->diff.empty());
}

TEST_F(HistoryTest, RollbackToAVersionNoLongerKeptIsRefused) {
  Open(2);
  for (int i = 1; i <= 3; ++i) Apply({Cluster("a", 9000 + i)}, "ana", "");
  for (uint64_t version : {1u, 7u}) {
    auto result = state_->Rollback(version, false, {});
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(result.status().message(),
              absl::StrCat("cannot roll back: version ", version,
                           " is not in the history (versions 2..3 are kept; sluice-control "
                           "--history sets how many)"));
  }
  EXPECT_EQ(state_->Current()->version, 3u);
}

TEST_F(HistoryTest, RollbackIsCheckedAgainstTodaysRules) {
  // A certificate valid for one day, then replaced by a cluster-only config.
  sluice::testing::CertificateSpec spec;
  spec.not_before = kStart - absl::Hours(1);
  spec.not_after = kStart + absl::Hours(24);
  sluice::testing::TestCertificate c = sluice::testing::MakeCertificate(spec);
  api::Resource secret;
  secret.mutable_secret()->set_name("web");
  secret.mutable_secret()->mutable_tls_certificate()->set_certificate_chain(c.certificate_pem);
  secret.mutable_secret()->mutable_tls_certificate()->set_private_key(c.key_pem);
  Apply({secret}, "ana", "with a certificate");
  now_ += absl::Minutes(1);
  ASSERT_TRUE(state_->Delete({config::v1::SECRET, "web"}, false).ok());
  now_ = kStart + absl::Hours(48);  // the certificate has expired
  auto result = state_->Rollback(1, false, {});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StartsWith(result.status().message(),
                               "cannot roll back to version 1: its content does not pass "
                               "today's validation:\nSecret \"web\": "))
      << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), "certificate expired at"))
      << result.status();
  EXPECT_EQ(state_->Current()->version, 2u);
}

TEST_F(HistoryTest, AStaleIfVersionIsAbortedNamingTheCurrentVersion) {
  Apply({Cluster("a")}, "ana@host-1", "one");
  Apply({Cluster("a", 9001)}, "bo@host-2", "raise the port");
  for (auto result : {state_->Apply({Cluster("b")}, false, {"cy", "", 1}),
                      state_->Delete({config::v1::CLUSTER, "a"}, false, {"cy", "", 1}),
                      state_->Rollback(1, false, {"cy", "", 1})}) {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kAborted);
    EXPECT_EQ(result.status().message(),
              "the config changed since version 1: the current version is version 2 "
              "(2030-04-11T10:02:00Z, by bo@host-2: \"raise the port\", +0 ~1 -0); nothing "
              "changed");
  }
  EXPECT_EQ(state_->Current()->version, 2u);
  // The current version goes through.
  auto result = state_->Apply({Cluster("b")}, false, {"cy", "", 2});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->version, 3u);
}

TEST(HistoryAdminTest, HistoryNewestFirstGetVersionRedactedRollbackAborted) {
  const std::string dir = sluice::testing::MakeTempDir("history_admin");
  auto store = FileStore::Open(dir);
  ASSERT_TRUE(store.ok());
  auto state = ConfigState::Create(std::move(*store));
  ASSERT_TRUE(state.ok());
  ProxyRegistry registry;
  RolloutManager rollouts(state->get(), &registry, dir + "/rollout.db");
  AdminServiceImpl service(state->get(), &registry, &rollouts);
  sluice::testing::TestCertificate c = sluice::testing::MakeCertificate({});
  admin::v1::ApplyRequest apply;
  auto* secret = apply.add_resources()->mutable_secret();
  secret->set_name("web");
  secret->mutable_tls_certificate()->set_certificate_chain(c.certificate_pem);
  secret->mutable_tls_certificate()->set_private_key(c.key_pem);
  apply.set_author("ana@host-1");
  apply.set_message("add web");
  admin::v1::ApplyResponse applied;
  ASSERT_TRUE(service.Apply(nullptr, &apply, &applied).ok());
  admin::v1::DeleteRequest del;
  del.set_kind(config::v1::SECRET);
  del.set_name("web");
  del.set_author("bo@host-2");
  admin::v1::DeleteResponse deleted;
  ASSERT_TRUE(service.Delete(nullptr, &del, &deleted).ok());

  admin::v1::HistoryRequest history_request;
  admin::v1::HistoryResponse history;
  ASSERT_TRUE(service.History(nullptr, &history_request, &history).ok());
  ASSERT_EQ(history.entries_size(), 2);
  EXPECT_EQ(history.entries(0).version(), 2u);
  EXPECT_EQ(history.entries(0).author(), "bo@host-2");
  EXPECT_EQ(history.entries(0).diff().removed_size(), 1);
  EXPECT_EQ(history.entries(1).message(), "add web");
  EXPECT_EQ(history.entries(1).diff().added(0).name(), "web");
  EXPECT_GT(history.entries(1).time().seconds(), 0);
  EXPECT_EQ(history.current_version(), 2u);
  EXPECT_EQ(history.retention(), kDefaultHistoryVersions);
  history_request.set_limit(1);
  history.Clear();
  ASSERT_TRUE(service.History(nullptr, &history_request, &history).ok());
  EXPECT_EQ(history.entries_size(), 1);

  admin::v1::GetVersionRequest get;
  get.set_version(1);
  admin::v1::GetVersionResponse got;
  ASSERT_TRUE(service.GetVersion(nullptr, &get, &got).ok());
  ASSERT_EQ(got.resources_size(), 1);
  EXPECT_EQ(got.resources(0).secret().tls_certificate().private_key(), "[redacted]");
  get.set_version(9);
  EXPECT_EQ(service.GetVersion(nullptr, &get, &got).error_code(), grpc::StatusCode::NOT_FOUND);

  admin::v1::RollbackRequest rollback;
  rollback.set_version(1);
  rollback.set_if_version(1);
  admin::v1::RollbackResponse rolled;
  grpc::Status status = service.Rollback(nullptr, &rollback, &rolled);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "current version is version 2"))
      << status.error_message();
  rollback.set_if_version(2);
  status = service.Rollback(nullptr, &rollback, &rolled);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(rolled.version(), 3u);
  // What comes back is the real key, not the redacted text.
  EXPECT_EQ((*state)->Current()->resources.at({config::v1::SECRET, "web"})
                .secret().tls_certificate().private_key(),
            c.key_pem);
}

}  // namespace
}  // namespace sluice::controlplane
