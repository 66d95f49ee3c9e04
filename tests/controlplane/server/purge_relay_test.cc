// PurgeRelay: a purge goes to every attached stream (of the group), and the
// outcome counts who answered, what they removed, who failed, who left and
// who said nothing before the timeout. Streams are fakes: their queue hands
// the command to a thread that answers like a proxy would.
#include "controlplane/server/purge_relay.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace sluice::controlplane {
namespace {

discovery::v1::Node NodeOf(const std::string& id, const std::string& group) {
  discovery::v1::Node node;
  node.set_id(id);
  node.set_group(group);
  return node;
}

// What the fake streams were sent, to be answered from another thread (the
// queue function must not call into the relay).
struct Sent {
  absl::Mutex mu;
  std::vector<std::pair<int, discovery::v1::CachePurge>> commands
      ABSL_GUARDED_BY(mu);

  PurgeRelay::QueueFn QueueFor(int handle) {
    return [this, handle](const discovery::v1::CachePurge& purge) {
      absl::MutexLock lock(&mu);
      commands.emplace_back(handle, purge);
    };
  }
  // Waits for `n` commands and returns them.
  std::vector<std::pair<int, discovery::v1::CachePurge>> Await(size_t n) {
    absl::MutexLock lock(&mu);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return commands.size() >= n;
    };
    mu.Await(absl::Condition(&enough));
    return commands;
  }
};

TEST(PurgeRelayTest, CountsAnswersFailuresDeparturesAndSilence) {
  PurgeRelay relay;
  Sent sent;
  relay.Attach(1, NodeOf("a", "edge"), sent.QueueFor(1));
  relay.Attach(2, NodeOf("b", "edge"), sent.QueueFor(2));
  relay.Attach(3, NodeOf("c", "edge"), sent.QueueFor(3));
  relay.Attach(4, NodeOf("d", "edge"), sent.QueueFor(4));
  relay.Attach(5, NodeOf("e", "internal"), sent.QueueFor(5));

  // a removes 3, b 4, c fails, d leaves; nobody answers for e (not
  // targeted anyway).
  std::thread proxies([&] {
    auto commands = sent.Await(4);
    for (const auto& [handle, purge] : commands) {
      EXPECT_EQ(purge.selector().prefix(), "/a");
      discovery::v1::PurgeResult result;
      result.set_id(purge.id());
      if (handle == 1) result.set_entries_removed(3);
      if (handle == 2) result.set_entries_removed(4);
      if (handle == 3) result.set_error("store unavailable");
      if (handle == 4) {
        relay.Detach(4);
        continue;
      }
      relay.Answered(handle, result);
      relay.Answered(handle, result);  // a repeat counts once
    }
  });
  discovery::v1::PurgeSelector selector;
  selector.set_prefix("/a");
  PurgeOutcome outcome = relay.Purge(selector, "edge", absl::Seconds(30));
  proxies.join();
  EXPECT_EQ(outcome.targeted, 4);
  EXPECT_EQ(outcome.confirmed, 2);
  EXPECT_EQ(outcome.entries_removed, 7u);
  ASSERT_EQ(outcome.failures.size(), 2u);
  EXPECT_EQ(outcome.failures[0].node_id, "c");
  EXPECT_EQ(outcome.failures[0].reason, "store unavailable");
  EXPECT_EQ(outcome.failures[1].node_id, "d");
  EXPECT_EQ(outcome.failures[1].reason, "disconnected before answering");
  EXPECT_EQ(relay.outstanding(), 0);
}

TEST(PurgeRelayTest, SilenceTimesOutAndLateAnswersAreDropped) {
  PurgeRelay relay;
  Sent sent;
  relay.Attach(7, NodeOf("old-proxy", ""), sent.QueueFor(7));
  PurgeOutcome outcome = relay.Purge({}, "", absl::Milliseconds(20));
  EXPECT_EQ(outcome.targeted, 1);
  EXPECT_EQ(outcome.confirmed, 0);
  ASSERT_EQ(outcome.failures.size(), 1u);
  EXPECT_EQ(outcome.failures[0].node_id, "old-proxy");
  EXPECT_EQ(outcome.failures[0].reason, "no answer within 20ms");
  EXPECT_EQ(relay.outstanding(), 0);

  auto commands = sent.Await(1);
  discovery::v1::PurgeResult late;
  late.set_id(commands[0].second.id());
  relay.Answered(7, late);  // dropped: nothing outstanding
  EXPECT_EQ(relay.outstanding(), 0);

  // Gone: not targeted any more.
  relay.Detach(7);
  outcome = relay.Purge({}, "", absl::Seconds(1));
  EXPECT_EQ(outcome.targeted, 0);
  EXPECT_TRUE(outcome.failures.empty());
}

}  // namespace
}  // namespace sluice::controlplane

namespace sluice::controlplane {
namespace {

// A proxy cut off past its stream's keepalive (hung, partitioned) keeps its
// cache: it came back serving entries purged meanwhile, and the purge said
// nothing of it (cache probe). It is now named, and sent the purges made
// while it was away (and in the minute before it left) as it reconnects.
TEST(PurgeRelayTest, AProxyThatLeftIsNamedAndGetsThePurgesItMissedWhenBack) {
  absl::Time now = absl::FromUnixSeconds(100000);
  PurgeRelay relay([&] { return now; });
  Sent sent;
  relay.Attach(1, NodeOf("b", "edge"), sent.QueueFor(1));
  relay.Attach(2, NodeOf("c", "internal"), sent.QueueFor(2));
  relay.Attach(3, NodeOf("old", "edge"), sent.QueueFor(3));
  relay.Detach(3);
  now += absl::Minutes(11);  // "old" left more than 10 minutes ago
  relay.Detach(1);
  relay.Detach(2);
  now += absl::Seconds(30);

  discovery::v1::PurgeSelector everywhere;
  everywhere.set_path("/x");
  PurgeOutcome outcome = relay.Purge(everywhere, "", absl::Seconds(5));
  EXPECT_EQ(outcome.targeted, 0);
  ASSERT_EQ(outcome.departed.size(), 2u);
  EXPECT_EQ(outcome.departed[0].node_id, "b");
  EXPECT_EQ(outcome.departed[0].ago, absl::Seconds(30));
  EXPECT_EQ(outcome.departed[1].node_id, "c");
  discovery::v1::PurgeSelector edge_only;
  edge_only.set_prefix("/edge");
  outcome = relay.Purge(edge_only, "edge", absl::Seconds(5));
  ASSERT_EQ(outcome.departed.size(), 1u);  // c is not of the group
  EXPECT_EQ(outcome.departed[0].node_id, "b");

  // Back: b gets both, c the one for every group, "old" nothing.
  now += absl::Seconds(10);
  relay.Attach(4, NodeOf("b", "edge"), sent.QueueFor(4));
  relay.Attach(5, NodeOf("c", "internal"), sent.QueueFor(5));
  relay.Attach(6, NodeOf("old", "edge"), sent.QueueFor(6));
  auto commands = sent.Await(3);
  ASSERT_EQ(commands.size(), 3u);
  EXPECT_EQ(commands[0].first, 4);
  EXPECT_EQ(commands[0].second.selector().path(), "/x");
  EXPECT_EQ(commands[1].first, 4);
  EXPECT_EQ(commands[1].second.selector().prefix(), "/edge");
  EXPECT_EQ(commands[2].first, 5);
  EXPECT_EQ(commands[2].second.selector().path(), "/x");
  // Once back, no longer named, and nothing is sent again.
  relay.Detach(4);
  relay.Detach(5);
  relay.Detach(6);
  now += absl::Minutes(11);
  outcome = relay.Purge(everywhere, "", absl::Seconds(5));
  EXPECT_TRUE(outcome.departed.empty());
  relay.Attach(7, NodeOf("b", "edge"), sent.QueueFor(7));
  EXPECT_EQ(sent.Await(3).size(), 3u);
}

}  // namespace
}  // namespace sluice::controlplane
