// SendRing on the running kernel's io_uring, over real socket pairs.
#include "dataplane/event/send_ring.h"

#include <errno.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

namespace sluice::event {
namespace {

struct SocketPair {
  SocketPair() {
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  }
  ~SocketPair() {
    if (fds[0] >= 0) close(fds[0]);
    if (fds[1] >= 0) close(fds[1]);
  }
  std::string Drain() {
    std::string got;
    char buffer[65536];
    ssize_t n;
    while ((n = recv(fds[1], buffer, sizeof(buffer), 0)) > 0) got.append(buffer, n);
    return got;
  }
  int fds[2] = {-1, -1};
};

// The kernel may have no io_uring or forbid it (io_uring_setup fails; the
// proxy then sends one by one, and there is nothing here to test). Any other
// reason for no ring is a failure.
#define MAKE_RING_OR_SKIP(ring, entries)                                         \
  std::string why;                                                               \
  std::unique_ptr<SendRing> ring = SendRing::Create(entries, &why);              \
  if (ring == nullptr && why.rfind("io_uring_setup: ", 0) == 0) GTEST_SKIP() << why; \
  ASSERT_NE(ring, nullptr) << why

TEST(SendRingTest, EverySendOfABatchIsMadeAndReportedByItsTag) {
  MAKE_RING_OR_SKIP(ring, 8);
  SocketPair a, b, c;
  ASSERT_TRUE(ring->Queue(a.fds[0], "alpha", 5, 10));
  ASSERT_TRUE(ring->Queue(b.fds[0], "bravo!", 6, 11));
  ASSERT_TRUE(ring->Queue(c.fds[0], "c", 1, 12));
  EXPECT_EQ(ring->queued(), 3u);
  std::map<uint64_t, int> results;
  ASSERT_TRUE(ring->Submit([&](uint64_t tag, int result) { results[tag] = result; }));
  EXPECT_EQ(ring->queued(), 0u);
  EXPECT_EQ(results, (std::map<uint64_t, int>{{10, 5}, {11, 6}, {12, 1}}));
  EXPECT_EQ(a.Drain(), "alpha");
  EXPECT_EQ(b.Drain(), "bravo!");
  EXPECT_EQ(c.Drain(), "c");
}

// Reads: each gets its socket's bytes, an empty socket EAGAIN and one
// whose peer closed 0, all within the one call; the ring then sends again.
TEST(SendRingTest, ReadsGetTheirBytesEagainOrTheEndOfTheStreamAtOnce) {
  MAKE_RING_OR_SKIP(ring, 8);
  SocketPair data, empty, ended;
  ASSERT_EQ(send(data.fds[1], "payload", 7, 0), 7);
  close(ended.fds[1]);
  ended.fds[1] = -1;
  char got_data[16] = {}, got_empty[16], got_ended[16];
  ASSERT_TRUE(ring->QueueRecv(data.fds[0], got_data, sizeof(got_data), 1));
  ASSERT_TRUE(ring->QueueRecv(empty.fds[0], got_empty, sizeof(got_empty), 2));
  ASSERT_TRUE(ring->QueueRecv(ended.fds[0], got_ended, sizeof(got_ended), 3));
  std::map<uint64_t, int> results;
  ASSERT_TRUE(ring->Submit([&](uint64_t tag, int result) { results[tag] = result; }));
  EXPECT_EQ(results, (std::map<uint64_t, int>{{1, 7}, {2, -EAGAIN}, {3, 0}}));
  EXPECT_EQ(std::string(got_data, 7), "payload");
  // A read takes at most what it was given room for.
  ASSERT_EQ(send(data.fds[1], "0123456789", 10, 0), 10);
  ASSERT_TRUE(ring->QueueRecv(data.fds[0], got_data, 4, 4));
  ASSERT_TRUE(ring->Queue(empty.fds[1], "back", 4, 5));
  results.clear();
  ASSERT_TRUE(ring->Submit([&](uint64_t tag, int result) { results[tag] = result; }));
  EXPECT_EQ(results, (std::map<uint64_t, int>{{4, 4}, {5, 4}}));
  EXPECT_EQ(std::string(got_data, 4), "0123");
  char rest[16];
  EXPECT_EQ(recv(data.fds[0], rest, sizeof(rest), 0), 6);
  EXPECT_EQ(recv(empty.fds[0], rest, sizeof(rest), 0), 4);
}

TEST(SendRingTest, AFullSocketGivesEagainAndAClosedPeerEpipeAtOnce) {
  MAKE_RING_OR_SKIP(ring, 8);
  SocketPair full, gone, fine;
  char chunk[4096] = {};
  while (send(full.fds[0], chunk, sizeof(chunk), MSG_DONTWAIT) > 0) {
  }
  close(gone.fds[1]);
  gone.fds[1] = -1;
  ring->Queue(full.fds[0], chunk, sizeof(chunk), 0);
  ring->Queue(gone.fds[0], "x", 1, 1);
  ring->Queue(fine.fds[0], "ok", 2, 2);
  std::map<uint64_t, int> results;
  // No SIGPIPE either (MSG_NOSIGNAL): the test would die of it.
  ASSERT_TRUE(ring->Submit([&](uint64_t tag, int result) { results[tag] = result; }));
  EXPECT_EQ(results, (std::map<uint64_t, int>{{0, -EAGAIN}, {1, -EPIPE}, {2, 2}}));
  EXPECT_EQ(fine.Drain(), "ok");
}

TEST(SendRingTest, ABatchHoldsAsManySendsAsTheRingHasEntriesAndTheRingIsReused) {
  MAKE_RING_OR_SKIP(ring, 4);
  std::vector<SocketPair> pairs(5);
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(ring->Queue(pairs[i].fds[0], "abc", 3, i)) << i;
    }
    EXPECT_FALSE(ring->Queue(pairs[4].fds[0], "abc", 3, 4));  // full
    int made = 0;
    ASSERT_TRUE(ring->Submit([&](uint64_t, int result) {
      EXPECT_EQ(result, 3);
      ++made;
    }));
    EXPECT_EQ(made, 4);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(pairs[i].Drain(), "abc") << "round " << round;
  }
  // An empty batch makes no call and reports nothing.
  EXPECT_TRUE(ring->Submit([&](uint64_t, int) { ADD_FAILURE(); }));
}

TEST(SendRingTest, ASendTooBigForOneCallIsMadeInPart) {
  MAKE_RING_OR_SKIP(ring, 2);
  SocketPair pair;
  const std::string big(4 << 20, 'b');
  ring->Queue(pair.fds[0], big.data(), big.size(), 7);
  int sent = 0;
  ASSERT_TRUE(ring->Submit([&](uint64_t tag, int result) {
    EXPECT_EQ(tag, 7u);
    sent = result;
  }));
  // The socket takes what fits in its buffer; the rest is the caller's.
  EXPECT_GT(sent, 0);
  EXPECT_LT(sent, static_cast<int>(big.size()));
  EXPECT_EQ(pair.Drain(), big.substr(0, sent));
}

}  // namespace
}  // namespace sluice::event
