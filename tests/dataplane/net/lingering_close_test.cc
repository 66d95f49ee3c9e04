// LingeringCloser over socketpairs: a socket it holds is read and closed
// when the peer closes, when the peer goes quiet for kIdle, and at once when
// too many linger.
#include "dataplane/net/lingering_close.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "dataplane/event/dispatcher.h"

namespace sluice::net {
namespace {

struct Pair {
  Pair() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    held = fds[0];
    peer = fds[1];
    shutdown(held, SHUT_WR);
  }
  ~Pair() { close(peer); }
  // The peer sees the held end closed: a write fails, or a read sees EOF.
  bool HeldEndClosed() const {
    char c;
    return recv(peer, &c, 1, MSG_DONTWAIT) == 0 && send(peer, "x", 1, MSG_NOSIGNAL) < 0;
  }
  int held = -1;
  int peer = -1;
};

TEST(LingeringCloseTest, ReadsWhatThePeerSendsAndClosesWhenItCloses) {
  event::Dispatcher dispatcher;
  dispatcher.UseSimulatedClock();
  LingeringCloser closer(dispatcher);
  Pair pair;
  closer.Take(pair.held);
  EXPECT_EQ(closer.size(), 1u);
  // The peer goes on sending (its request body): read and dropped, the
  // socket stays.
  const std::string body(100000, 'x');
  size_t sent = 0;
  for (int i = 0; i < 200 && sent < body.size(); ++i) {
    ssize_t n = send(pair.peer, body.data() + sent, body.size() - sent, MSG_NOSIGNAL);
    if (n > 0) sent += static_cast<size_t>(n);
    dispatcher.AdvanceClock(absl::Milliseconds(1));
  }
  EXPECT_EQ(sent, body.size());
  EXPECT_EQ(closer.size(), 1u);
  // It closes its end: so does the closer.
  shutdown(pair.peer, SHUT_WR);
  for (int i = 0; i < 100 && closer.size() > 0; ++i) dispatcher.AdvanceClock(absl::Milliseconds(1));
  EXPECT_EQ(closer.size(), 0u);
  EXPECT_TRUE(pair.HeldEndClosed());
}

TEST(LingeringCloseTest, AQuietPeerIsGivenIdleThenClosed) {
  event::Dispatcher dispatcher;
  dispatcher.UseSimulatedClock();
  LingeringCloser closer(dispatcher);
  Pair pair;
  closer.Take(pair.held);
  dispatcher.AdvanceClock(LingeringCloser::kIdle - absl::Milliseconds(10));
  EXPECT_EQ(closer.size(), 1u);
  dispatcher.AdvanceClock(absl::Milliseconds(20));
  EXPECT_EQ(closer.size(), 0u);
  EXPECT_TRUE(pair.HeldEndClosed());
}

// Each lingering socket holds a place in the proxy's connection budget
// (--max-connections): with none left it closes at once, and a place is
// given back when it closes. Before: lingering sockets were not counted, and
// a client could spend the proxy's descriptors.
TEST(LingeringCloseTest, ASocketHoldsABudgetPlaceWhileItLingers) {
  event::Dispatcher dispatcher;
  dispatcher.UseSimulatedClock();
  int places = 1;
  LingeringCloser closer(
      dispatcher,
      [&] {
        if (places == 0) return false;
        --places;
        return true;
      },
      [&] { ++places; });
  Pair first, second;
  closer.Take(first.held);
  EXPECT_EQ(closer.size(), 1u);
  EXPECT_EQ(places, 0);
  closer.Take(second.held);  // no place: closed at once
  EXPECT_EQ(closer.size(), 1u);
  EXPECT_TRUE(second.HeldEndClosed());
  dispatcher.AdvanceClock(LingeringCloser::kIdle + absl::Milliseconds(10));
  EXPECT_EQ(closer.size(), 0u);
  EXPECT_EQ(places, 1);
}

TEST(LingeringCloseTest, TheDestructorClosesWhatLingers) {
  Pair pair;
  {
    event::Dispatcher dispatcher;
    LingeringCloser closer(dispatcher);
    closer.Take(pair.held);
  }
  EXPECT_EQ(fcntl(pair.held, F_GETFD), -1);
}

}  // namespace
}  // namespace sluice::net
