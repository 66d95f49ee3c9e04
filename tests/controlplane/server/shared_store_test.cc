// ConfigState and OperatorTokens on a store shared with another replica (a
// fake of what EtcdStore does): versions the other replica commits become
// current and are published; a commit based on a version that is no longer
// the store's is made again on top of the store's version, or refused with
// ABORTED when it names the version it expects; the store's
// errors reach the caller as they are; canary rollouts are refused.
#include <gtest/gtest.h>

#include <memory>

#include "absl/strings/match.h"
#include "controlplane/server/config_history.h"
#include "controlplane/server/config_state.h"
#include "controlplane/server/operator_tokens.h"
#include "controlplane/store/config_store.h"

namespace sluice::controlplane {
namespace {

api::Resource Cluster(const std::string& name) {
  api::Resource r;
  r.mutable_cluster()->set_name(name);
  auto* e = r.mutable_cluster()->add_endpoints();
  e->set_address("127.0.0.1");
  e->set_port(9000);
  return r;
}

// What the replicas share: the stored state and history, and the watch.
struct Shared {
  StoredState state{0, {}, "shared-id"};
  StoredHistory history;
  ConfigStore::VersionCallback on_version;
  absl::Status next_error;  // the next commit fails with it when set
};

class FakeSharedStore : public ConfigStore {
 public:
  explicit FakeSharedStore(std::shared_ptr<Shared> shared)
      : shared_(std::move(shared)) {}
  absl::StatusOr<StoredState> Load() override { return shared_->state; }
  absl::StatusOr<StoredHistory> LoadHistory() override {
    return shared_->history;
  }
  absl::Status RecordStoreId(const StoredState&, bool*) override {
    return absl::OkStatus();
  }
  absl::Status Commit(uint64_t base_version, const StoredState& next,
                      const StoredHistory& history,
                      std::string* warning) override {
    if (!shared_->next_error.ok())
      return std::exchange(shared_->next_error, absl::OkStatus());
    if (base_version != shared_->state.version) {
      return absl::AbortedError(
          absl::StrCat("another control-plane replica applied version ",
                       shared_->state.version, " first"));
    }
    shared_->state = next;
    shared_->history = history;
    return absl::OkStatus();
  }
  bool shared() const override { return true; }
  std::string Describe() const override { return "the fake shared store"; }
  void Watch(VersionCallback on_version) override {
    shared_->on_version = std::move(on_version);
  }

 private:
  std::shared_ptr<Shared> shared_;
};

class SharedStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto state =
        ConfigState::Create(std::make_unique<FakeSharedStore>(shared_));
    ASSERT_TRUE(state.ok()) << state.status();
    state_ = std::move(*state);
    state_->Subscribe([this](bool) { ++notified_; });
  }

  // The other replica commits `resource` as the next version; `deliver`:
  // the watch reports it.
  void OtherReplicaApplies(const api::Resource& resource, bool deliver = true) {
    StoredState next = shared_->state;
    ++next.version;
    next.resources[api::IdOf(resource)] = resource;
    ConfigHistory history =
        ConfigHistory::Restore(shared_->history, 100, shared_->state.version,
                               shared_->state.resources, nullptr);
    HistoryEntry entry;
    entry.version = next.version;
    entry.author = "other";
    entry.added.push_back(resource);
    history.Append(entry, next.resources);
    shared_->state = next;
    shared_->history = history.stored();
    if (deliver) shared_->on_version(shared_->state, shared_->history);
  }

  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
  std::unique_ptr<ConfigState> state_;
  int notified_ = 0;
};

TEST_F(SharedStoreTest,
       AVersionAnotherReplicaCommittedBecomesCurrentAndIsPublished) {
  EXPECT_EQ(state_->store_id(), "shared-id");
  OtherReplicaApplies(Cluster("a"));
  EXPECT_EQ(state_->Current()->version, 1u);
  EXPECT_EQ(state_->Current()->resources.size(), 1u);
  EXPECT_EQ(notified_, 1);
  const HistoryEntry* entry = state_->History()->Find(1);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->author, "other");
  // Reported again (the watch read it twice): nothing new.
  shared_->on_version(shared_->state, shared_->history);
  EXPECT_EQ(notified_, 1);
  // This replica goes on from there.
  auto applied = state_->Apply({Cluster("b")}, false, {"me", "", 0});
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->version, 2u);
  EXPECT_EQ(shared_->state.version, 2u);
  ASSERT_EQ(shared_->history.entries.size(), 2u);
  EXPECT_EQ(shared_->history.entries.back().author, "me");
}

TEST_F(SharedStoreTest, AChangeOnAStaleReplicaIsMadeOnTopOfTheStoresVersion) {
  // The other replica's version 1 has not been reported here yet: the
  // commit based on version 0 loses, this replica takes version 1 from the
  // store and makes the change again on top of it.
  OtherReplicaApplies(Cluster("a"), /*deliver=*/false);
  auto applied = state_->Apply({Cluster("b")}, false);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->version, 2u);
  EXPECT_EQ(state_->Current()->resources.size(), 2u);
  EXPECT_EQ(shared_->state.resources.size(), 2u);
  ASSERT_NE(state_->History()->Find(1), nullptr);
  EXPECT_EQ(state_->History()->Find(1)->author, "other");
}

TEST_F(SharedStoreTest,
       AConditionalChangeBasedOnAnOldVersionIsAbortedAndChangesNothing) {
  OtherReplicaApplies(Cluster("a"));
  // Version 2 committed elsewhere, not reported here yet: a change on the
  // condition of version 1 (current here) is refused by the store.
  OtherReplicaApplies(Cluster("b"), /*deliver=*/false);
  ChangeContext context;
  context.if_version = 1;
  auto applied = state_->Apply({Cluster("c")}, false, context);
  ASSERT_FALSE(applied.ok());
  EXPECT_EQ(applied.status().code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(
      absl::StrContains(applied.status().message(), "applied version 2 first"))
      << applied.status();
  EXPECT_EQ(state_->Current()->version, 1u);
  EXPECT_EQ(notified_, 1);
  EXPECT_EQ(shared_->state.resources.count({config::v1::CLUSTER, "c"}), 0u);
}

TEST_F(SharedStoreTest, TheStoresErrorsReachTheCallerAsTheyAre) {
  shared_->next_error = absl::UnavailableError(
      "etcd: no quorum or unreachable (endpoints a:1): nothing applied: a:1: "
      "no leader");
  // The operator reads it in the control plane's log too (before: only the
  // caller was told).
  ::testing::internal::CaptureStderr();
  auto applied = state_->Apply({Cluster("a")}, false);
  std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_FALSE(applied.ok());
  EXPECT_EQ(applied.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StartsWith(applied.status().message(), "etcd: no quorum"))
      << applied.status();
  EXPECT_TRUE(absl::StrContains(log, "version 1 was not stored (the fake shared store): etcd: "
                                     "no quorum")) << log;
  shared_->next_error =
      absl::InternalError("cannot write d/state.db.tmp: No space left on device");
  ::testing::internal::CaptureStderr();
  applied = state_->Apply({Cluster("a")}, false);
  log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(applied.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(applied.status().message(),
            "the change was not stored, nothing changed: cannot write d/state.db.tmp: No space "
            "left on device");
  EXPECT_TRUE(absl::StrContains(log, "version 1 was not stored (the fake shared store): cannot "
                                     "write d/state.db.tmp")) << log;
  shared_->next_error =
      absl::ResourceExhaustedError("over --etcd-max-request-bytes");
  applied = state_->Apply({Cluster("a")}, false);
  EXPECT_EQ(applied.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(state_->Current()->version, 0u);
  EXPECT_EQ(notified_, 0);
}

TEST_F(SharedStoreTest, VersionsOfAnotherStoreAreIgnored) {
  StoredState foreign{5, {}, "another-id"};
  foreign.resources[{config::v1::CLUSTER, "x"}] = Cluster("x");
  shared_->on_version(foreign, StoredHistory{});
  EXPECT_EQ(state_->Current()->version, 0u);
  EXPECT_EQ(notified_, 0);
}

TEST_F(SharedStoreTest, CanaryRolloutsAreRefused) {
  EXPECT_EQ(state_->CheckCanarySupported().code(),
            absl::StatusCode::kFailedPrecondition);
  auto started = state_->ApplyCanary({Cluster("a")}, CanarySplit{"", "g1", {}},
                                     {}, nullptr);
  ASSERT_FALSE(started.ok());
  EXPECT_TRUE(absl::StrContains(started.status().message(), "not supported"))
      << started.status();
  EXPECT_EQ(state_->Current()->version, 0u);
}

// Tokens shared the same way: saves compare with what was loaded. Each
// save is a revision, as in etcd; `*revision` is the newest.
class FakeTokenStore : public TokenStore {
 public:
  FakeTokenStore(std::vector<StoredToken>* stored, TokensCallback* on_tokens,
                 int64_t* revision)
      : stored_(stored), on_tokens_(on_tokens), revision_(revision) {}
  absl::StatusOr<std::vector<StoredToken>> LoadTokens() override {
    return *stored_;
  }
  absl::Status SaveTokens(const std::vector<StoredToken>& previous,
                          const std::vector<StoredToken>& next) override {
    if (previous.size() != stored_->size()) {
      return absl::AbortedError(
          "another control-plane replica changed the operator tokens first");
    }
    *stored_ = next;
    ++*revision_;
    return absl::OkStatus();
  }
  void WatchTokens(TokensCallback on_tokens) override {
    *on_tokens_ = std::move(on_tokens);
  }
  bool TokensCurrent(int64_t revision) override { return revision >= *revision_; }
  std::string Describe() const override { return "fake tokens"; }

 private:
  std::vector<StoredToken>* stored_;
  TokensCallback* on_tokens_;
  int64_t* revision_;
};

// OperatorTokens on a FakeTokenStore: `stored`, `revision` and `on_tokens`
// are the store's side, as another replica would change and deliver them.
class SharedTokensTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokens = OperatorTokens::Open(
        std::make_unique<FakeTokenStore>(&stored, &on_tokens, &revision));
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    ASSERT_TRUE(on_tokens);
  }

  std::vector<StoredToken> stored;
  TokenStore::TokensCallback on_tokens;
  int64_t revision = 0;
  absl::StatusOr<std::unique_ptr<OperatorTokens>> tokens;
};

TEST_F(SharedTokensTest, ChangesOfAnotherReplicaAreFollowedAndAStaleSaveIsAborted) {
  auto ci = (*tokens)->Create("ci", Role::kAdmin, "ana");
  ASSERT_TRUE(ci.ok()) << ci.status();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_TRUE((*tokens)->Verify(*ci).has_value());

  // Another replica adds one, and this one has not heard yet: refused.
  StoredToken other{"deploy", "admin", std::string(64, 'b'), absl::Now(), "bo"};
  stored.push_back(other);
  ++revision;
  auto stale = (*tokens)->Create("third", Role::kViewer, "ana");
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  // Once told, it knows both and goes on; a revoke elsewhere ends a token here.
  on_tokens(stored, revision);
  EXPECT_EQ((*tokens)->List().size(), 2u);
  ASSERT_TRUE((*tokens)->Create("third", Role::kViewer, "ana").ok());
  stored = {other};
  on_tokens(stored, ++revision);
  EXPECT_FALSE((*tokens)->Verify(*ci).has_value());
}

// The watch reads the tokens, this replica saves a change, then the read is
// delivered: it is older than the save and is not taken. Before, a token
// revoked here was valid again (and a token made here gone) until the next
// change anywhere, and this replica's next save was refused as stale.
TEST_F(SharedTokensTest, ADeliveryOvertakenByThisReplicasSaveIsIgnored) {
  auto admin = (*tokens)->Create("admin", Role::kAdmin, "ana");
  ASSERT_TRUE(admin.ok()) << admin.status();
  auto ci = (*tokens)->Create("ci", Role::kOperator, "ana");
  ASSERT_TRUE(ci.ok()) << ci.status();
  const std::vector<StoredToken> read_by_the_watch = stored;
  const int64_t read_at = revision;
  ASSERT_TRUE((*tokens)->Revoke("ci").ok());
  on_tokens(read_by_the_watch, read_at);
  EXPECT_FALSE((*tokens)->Verify(*ci).has_value()) << "a revoked token is valid again";
  EXPECT_EQ((*tokens)->List().size(), 1u);
  EXPECT_TRUE((*tokens)->Create("deploy", Role::kOperator, "ana").ok());
  // A delivery as new as the store's is taken.
  stored.push_back(read_by_the_watch[1]);
  on_tokens(stored, ++revision);
  EXPECT_TRUE((*tokens)->Verify(*ci).has_value());
}

}  // namespace
}  // namespace sluice::controlplane
