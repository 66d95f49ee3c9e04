// net::Connection over real loopback TCP sockets.
#include "dataplane/net/connection.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "dataplane/event/dispatcher.h"

namespace sluice::net {
namespace {

// A connected pair of TCP sockets on 127.0.0.1: `ours` non-blocking.
struct TcpPair {
  TcpPair() {
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listener, 1), 0);
    EXPECT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    ours = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    connect(ours, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));  // EINPROGRESS
    peer = accept(listener, nullptr, nullptr);
    EXPECT_GE(peer, 0);
    close(listener);
  }
  int ours = -1;
  int peer = -1;
};

struct Recorder : ConnectionCallbacks {
  explicit Recorder(Connection* c) : connection(c) {}
  void OnReadable() override {
    events += "read:" + std::string(connection->input().view()) + ";";
    connection->input().Drain(connection->input().size());
  }
  void OnClosed(CloseReason reason, int) override {
    events += reason == CloseReason::kReset ? "reset;" : "closed;";
  }
  Connection* connection;
  std::string events;
};

// The peer sent its last words (an HTTP/2 GOAWAY naming the streams it did
// not process) and closed; a write fails before they were read. With
// ReadBeforeWriteFailure they are handed on first; without, they are lost.
TEST(ConnectionTest, LastWordsOfAPeerAreReadBeforeAFailedWriteCloses) {
  for (bool read_first : {true, false}) {
    event::Dispatcher dispatcher;
    dispatcher.UseSimulatedClock();
    TcpPair pair;
    // A byte the peer never reads: its close is a reset.
    ASSERT_EQ(send(pair.ours, "x", 1, MSG_NOSIGNAL), 1);
    Connection connection(dispatcher, pair.ours, /*connecting=*/true, nullptr);
    Recorder recorder(&connection);
    connection.SetCallbacks(&recorder);
    if (read_first) connection.ReadBeforeWriteFailure();
    for (int i = 0; i < 500 && connection.connecting(); ++i) {
      pollfd p = {pair.ours, POLLOUT, 0};
      poll(&p, 1, 10);
      dispatcher.AdvanceClock(absl::ZeroDuration());
    }
    ASSERT_FALSE(connection.connecting());
    ASSERT_EQ(send(pair.peer, "goaway", 6, MSG_NOSIGNAL), 6);
    close(pair.peer);
    // The reset is in (the socket reports an error) before the write.
    pollfd p = {pair.ours, POLLIN, 0};
    for (int i = 0; i < 500 && !(p.revents & (POLLERR | POLLHUP)); ++i) poll(&p, 1, 10);
    ASSERT_TRUE(p.revents & (POLLERR | POLLHUP)) << p.revents;
    // Written before the read event runs.
    connection.Write("y");
    connection.Flush();
    if (read_first) {
      EXPECT_EQ(recorder.events, "read:goaway;reset;");
    } else {
      EXPECT_EQ(recorder.events, "reset;");
    }
    EXPECT_FALSE(connection.open());
  }
}

}  // namespace
}  // namespace sluice::net
