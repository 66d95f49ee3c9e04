// FleetView: every replica lists every replica's proxies (sluice-control
// --store etcd). Before, a replica answered for its own proxies alone, and
// `apply --wait` on it said "taken by 2 of 2" while a proxy on the other
// replica refused the version.
#include "controlplane/server/fleet_view.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace sluice::controlplane {
namespace {

// etcd's fleet/ keys: a revision per write, as etcd's mod_revision.
class Board : public ReplicaDemandBoard {
 public:
  absl::Status Publish(const std::string& replica, std::string value) override {
    if (!available) return absl::UnavailableError("etcd: no quorum");
    if (refuse) return absl::InvalidArgumentError("etcdserver: request is too large");
    entries[replica] = {replica, std::move(value), ++revision_};
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<Entry>> ReadAll() override {
    ++reads;
    if (!available) return absl::UnavailableError("etcd: no quorum");
    std::vector<Entry> all;
    for (const auto& [replica, entry] : entries) all.push_back(entry);
    return all;
  }
  absl::Status Remove(const std::string& replica, int64_t revision) override {
    ++removes;
    if (!available) return absl::UnavailableError("etcd: no quorum");
    auto it = entries.find(replica);
    if (it != entries.end() && (revision == 0 || it->second.revision == revision)) {
      entries.erase(it);
    }
    return absl::OkStatus();
  }
  std::map<std::string, Entry> entries;
  bool available = true;
  bool refuse = false;  // etcd refuses a write (over its request limit)
  int removes = 0;  // calls, each of which waits on etcd
  int reads = 0;

 private:
  int64_t revision_ = 0;
};

admin::v1::ProxyStatus Proxy(const std::string& id, uint64_t version) {
  admin::v1::ProxyStatus status;
  status.mutable_node()->set_id(id);
  status.set_version_applied(version);
  return status;
}

struct Replica {
  Replica(Board* board, const std::string& id, absl::Time* now)
      : view(board, [this] { return own; },
             FleetViewOptions{.replica_id = id, .clock = [now] { return *now; }}) {}
  std::vector<admin::v1::ProxyStatus> own;
  FleetView view;
};

TEST(FleetViewTest, EachReplicaSeesTheOthersProxiesWhileTheyLive) {
  Board board;
  absl::Time now = absl::FromUnixSeconds(1000);
  Replica a(&board, "replica-a", &now), b(&board, "replica-b", &now);
  a.own = {Proxy("p1", 3)};
  b.own = {Proxy("p2", 2), Proxy("p3", 3)};
  ASSERT_TRUE(a.view.RunOnce().ok());
  ASSERT_TRUE(b.view.RunOnce().ok());
  // An entry first seen counts once it changes (a dead replica's never
  // does: a new replica listed its proxies for 3 s).
  ASSERT_TRUE(a.view.RunOnce().ok());
  EXPECT_TRUE(a.view.Others().empty());
  ASSERT_TRUE(b.view.RunOnce().ok());
  ASSERT_TRUE(a.view.RunOnce().ok());
  std::vector<admin::v1::ProxyStatus> others = a.view.Others();
  ASSERT_EQ(others.size(), 2u);
  EXPECT_EQ(others[0].node().id(), "p2");
  EXPECT_EQ(others[0].version_applied(), 2u);
  EXPECT_EQ(others[0].replica(), "replica-b");
  ASSERT_TRUE(b.view.RunOnce().ok());
  ASSERT_EQ(b.view.Others().size(), 1u);
  EXPECT_EQ(b.view.Others()[0].replica(), "replica-a");
  // p2 takes version 3: seen at the next periods.
  b.own[0].set_version_applied(3);
  ASSERT_TRUE(b.view.RunOnce().ok());
  ASSERT_TRUE(a.view.RunOnce().ok());
  EXPECT_EQ(a.view.Others()[0].version_applied(), 3u);
  // b stops publishing (killed): its proxies are left out once its entry
  // has not changed for 3 s (they reconnect elsewhere), and its entry is
  // deleted after 60 s.
  now += absl::Seconds(2);
  ASSERT_TRUE(a.view.RunOnce().ok());
  EXPECT_EQ(a.view.Others().size(), 2u);
  now += absl::Seconds(2);
  ASSERT_TRUE(a.view.RunOnce().ok());
  EXPECT_TRUE(a.view.Others().empty());
  // ... but listed as silent, with how long, until it is forgotten: b may be
  // hung with its proxies still held (apply --wait took them for gone and
  // said "no proxy is connected", exit 0).
  std::vector<admin::v1::ProxyStatus> silent = a.view.Silent();
  ASSERT_EQ(silent.size(), 2u);
  EXPECT_EQ(silent[0].replica(), "replica-b");
  EXPECT_EQ(silent[0].version_applied(), 3u);
  EXPECT_EQ(silent[0].replica_silent_for().seconds(), 4);
  EXPECT_TRUE(b.view.Silent().empty());
  // A replica started after b died never lists b's proxies: its entry does
  // not change (it was listed from the second read on).
  Replica c(&board, "replica-c", &now);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(c.view.RunOnce().ok());
    ASSERT_TRUE(a.view.RunOnce().ok());
    for (const auto& status : c.view.Others()) EXPECT_NE(status.replica(), "replica-b") << i;
    now += absl::Milliseconds(500);
  }
  EXPECT_TRUE(c.view.WaitWhole(absl::ZeroDuration()));
  EXPECT_TRUE(c.view.Silent().empty());  // never seen alive
  now += absl::Seconds(60);
  ASSERT_TRUE(a.view.RunOnce().ok());
  EXPECT_EQ(board.entries.count("replica-b"), 0u);
  EXPECT_TRUE(a.view.Silent().empty());
  // A replica that stops cleanly removes its own entry.
  a.view.Stop();
  EXPECT_TRUE(board.entries.empty());
}

// Past every cut the entry still does not fit (a tiny etcd request limit):
// the versions, NACKed ones included, stay; the messages go.
TEST(FleetViewTest, AnEntryCutToTheBoneKeepsTheVersions) {
  Board board;
  absl::Time now = absl::FromUnixSeconds(1000);
  Replica a(&board, "replica-a", &now);
  FleetView small(&board, [] {
    std::vector<admin::v1::ProxyStatus> own;
    for (int i = 0; i < 20; ++i) {
      admin::v1::ProxyStatus status = Proxy("p" + std::to_string(i), 1);
      status.set_last_nack_version(2);
      status.set_last_nack_error(std::string(200, 'x'));
      status.mutable_node()->add_client_features("sluice.route_table_patch");
      own.push_back(status);
    }
    return own;
  }, FleetViewOptions{.replica_id = "small", .max_entry_bytes = 1500, .clock = [&now] { return now; }});
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(small.RunOnce().ok());
    ASSERT_TRUE(a.view.RunOnce().ok());
  }
  std::vector<admin::v1::ProxyStatus> others = a.view.Others();
  ASSERT_EQ(others.size(), 20u);
  EXPECT_EQ(others[0].last_nack_version(), 2u);
  EXPECT_EQ(others[0].last_nack_error(), "(cut: too long to share)");
  EXPECT_EQ(others[0].node().client_features_size(), 0);
}

TEST(FleetViewTest, AnEntryOverTheLimitGoesWithoutReportsAndLongNacks) {
  Board board;
  absl::Time now = absl::FromUnixSeconds(1000);
  Replica a(&board, "replica-a", &now), b(&board, "replica-b", &now);
  for (int i = 0; i < 300; ++i) {
    admin::v1::ProxyStatus status = Proxy("p" + std::to_string(i), 1);
    status.mutable_last_report()->set_requests(1);
    status.set_last_nack_version(2);
    status.set_last_nack_error(std::string(1000, 'x'));  // ~300 KB in all
    b.own.push_back(status);
  }
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(b.view.RunOnce().ok());
    ASSERT_TRUE(a.view.RunOnce().ok());
  }
  EXPECT_LE(board.entries["replica-b"].value.size(), size_t{256 * 1024});
  std::vector<admin::v1::ProxyStatus> others = a.view.Others();
  ASSERT_EQ(others.size(), 300u);
  EXPECT_FALSE(others[0].has_last_report());
  EXPECT_EQ(others[0].last_nack_error().size(), FleetView::kNackBytesWhenCut);
  EXPECT_EQ(others[0].last_nack_version(), 2u);
}

// A board out of reach: the others' proxies are left out once the last
// read is stale_after old (they were listed for as long as etcd was down).
TEST(FleetViewTest, TheOthersGoWhenTheBoardCannotBeRead) {
  Board board;
  absl::Time now = absl::FromUnixSeconds(1000);
  Replica a(&board, "replica-a", &now), b(&board, "replica-b", &now);
  b.own = {Proxy("p2", 1)};
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(b.view.RunOnce().ok());
    ASSERT_TRUE(a.view.RunOnce().ok());
  }
  ASSERT_EQ(a.view.Others().size(), 1u);
  now += absl::Seconds(2);
  EXPECT_EQ(a.view.Others().size(), 1u);
  EXPECT_EQ(a.view.UnreadFor(), absl::ZeroDuration());
  now += absl::Seconds(2);  // no read for 4 s
  EXPECT_TRUE(a.view.Others().empty());
  // sluicectl proxies says so (before: "0 proxies", and no word why).
  EXPECT_EQ(a.view.UnreadFor(), absl::Seconds(4));
  board.available = false;
  EXPECT_FALSE(a.view.RunOnce().ok());
  EXPECT_EQ(a.view.UnreadFor(), absl::Seconds(4));
  board.available = true;
  ASSERT_TRUE(a.view.RunOnce().ok());
  EXPECT_EQ(a.view.UnreadFor(), absl::ZeroDuration());
}

// A replica that never read the board counts from its start.
TEST(FleetViewTest, UnreadSinceStartWhenNeverRead) {
  Board board;
  board.available = false;
  absl::Time now = absl::FromUnixSeconds(1000);
  Replica a(&board, "replica-a", &now);
  EXPECT_FALSE(a.view.RunOnce().ok());
  EXPECT_EQ(a.view.UnreadFor(), absl::ZeroDuration());
  now += absl::Seconds(5);
  EXPECT_EQ(a.view.UnreadFor(), absl::Seconds(5));
}

// A replica stopping removes its entry at once, but not when the board just
// failed: with etcd out of reach each removal waits --etcd-timeout for
// nothing (a SIGTERM took 15 s); the others drop the entry once it stops
// changing. Before: Remove was called whatever the last run said.
TEST(FleetViewTest, AStoppingReplicaRemovesItsEntryUnlessTheBoardJustFailed) {
  Board board;
  absl::Time now = absl::FromUnixSeconds(1000);
  {
    Replica a(&board, "replica-a", &now);
    ASSERT_TRUE(a.view.RunOnce().ok());
    a.view.Stop();
    EXPECT_EQ(board.removes, 1);
    EXPECT_FALSE(board.entries.contains("replica-a"));
  }
  Replica b(&board, "replica-b", &now);
  ASSERT_TRUE(b.view.RunOnce().ok());
  board.available = false;
  const int reads = board.reads;
  EXPECT_FALSE(b.view.RunOnce().ok());
  // Nor does a run wait on a read once the write found etcd out of reach.
  EXPECT_EQ(board.reads, reads);
  b.view.Stop();
  EXPECT_EQ(board.removes, 1);
  // A write etcd refused is no outage: the entry left from before goes.
  board.available = true;
  Replica c(&board, "replica-c", &now);
  ASSERT_TRUE(c.view.RunOnce().ok());
  board.refuse = true;
  EXPECT_FALSE(c.view.RunOnce().ok());
  c.view.Stop();
  EXPECT_EQ(board.removes, 2);
  EXPECT_FALSE(board.entries.contains("replica-c"));
}

}  // namespace
}  // namespace sluice::controlplane
