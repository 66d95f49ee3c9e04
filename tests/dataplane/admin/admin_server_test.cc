// AdminServer on a real loopback socket and event loop, with handlers whose
// answers are as large as a big fleet's: what it keeps and what it refuses.
#include "dataplane/admin/admin_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "dataplane/event/dispatcher.h"

namespace sluice::admin {
namespace {

class AdminServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AdminHandlers handlers;
    handlers.ready = [] { return std::make_pair(true, std::string("ready")); };
    handlers.live = [] { return std::make_pair(true, std::string("alive")); };
    handlers.stats = [] { return std::string(10 << 20, 'm'); };  // 10 MiB
    handlers.config_dump = [] { return std::string("{}"); };
    handlers.clusters = [](bool) { return std::string("clusters"); };
    absl::Notification listening;
    loop_ = std::thread([&] {
      event::Dispatcher dispatcher;
      dispatcher_ = &dispatcher;
      AdminServer server(dispatcher, handlers);
      auto port = server.Listen("127.0.0.1:0");
      port_ = port.ok() ? *port : -1;
      listening.Notify();
      dispatcher.Run();
    });
    listening.WaitForNotification();
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    dispatcher_->Post([this] { dispatcher_->Exit(); });
    loop_.join();
  }

  int Connect(int receive_buffer = 0) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (receive_buffer > 0) {
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return fd;
  }
  static void Send(int fd, const std::string& bytes) {
    ASSERT_EQ(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  // Everything until the server closes (or 10 s).
  static std::string ReadAll(int fd) {
    std::string got;
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    char buffer[65536];
    while (absl::Now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 100) != 1) continue;
      const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      got.append(buffer, static_cast<size_t>(n));
    }
    return got;
  }
  static int Count(const std::string& text, const std::string& needle) {
    int n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
      ++n;
    }
    return n;
  }

  std::thread loop_;
  event::Dispatcher* dispatcher_ = nullptr;
  int port_ = -1;
};

// Pipelined requests, then a half-close: every one is answered, in order,
// then the connection closes (before: only the first; the half-close
// closed it once that answer was written).
TEST_F(AdminServerTest, PipelinedRequestsBeforeAHalfCloseAreAllAnswered) {
  const int fd = Connect();
  const std::string get = "GET /livez HTTP/1.1\r\nHost: a\r\n\r\n";
  Send(fd, "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n" + get + get);
  shutdown(fd, SHUT_WR);
  const std::string got = ReadAll(fd);
  close(fd);
  EXPECT_EQ(Count(got, "HTTP/1.1 200 OK"), 3) << got.size();
  EXPECT_TRUE(absl::EndsWith(got, "alive\n"));
}

// Clients that ask for a large answer and never read it: at most 64 MiB of
// answers are held (before: a copy per connection, 2.4 GB for 130); past
// that a large answer is 503, and probes still get theirs.
TEST_F(AdminServerTest, AnswersInFlightAreBounded) {
  std::vector<int> stalled;
  for (int i = 0; i < 8; ++i) {  // 8 x 10 MiB
    stalled.push_back(Connect(4096));
    Send(stalled.back(), "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
  }
  // The eighth is queued once the loop has served the others.
  bool refused = false;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!refused && absl::Now() < deadline) {
    const int fd = Connect();
    Send(fd, "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    std::string head;
    char buffer[256];
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 2000) == 1) {
      const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n > 0) head.assign(buffer, static_cast<size_t>(n));
    }
    close(fd);
    refused = absl::StartsWith(head, "HTTP/1.1 503");
  }
  EXPECT_TRUE(refused);
  const int probe = Connect();
  Send(probe, "GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(ReadAll(probe), "HTTP/1.1 200 OK"));
  close(probe);
  for (int fd : stalled) close(fd);
}

// Every place taken by a client that is being written to and never reads:
// a new connection closes the one writing longest, so a probe is answered
// (before: every new connection was closed at accept).
TEST_F(AdminServerTest, AProbeGetsThroughClientsThatNeverRead) {
  std::vector<int> stalled;
  for (size_t i = 0; i < AdminServer::kMaxConnections; ++i) {
    stalled.push_back(Connect(4096));
    // Small answers, pipelined until the socket buffers are full.
    std::string many;
    for (int j = 0; j < 2000; ++j) absl::StrAppend(&many, "GET /livez HTTP/1.1\r\nHost: a\r\n\r\n");
    send(stalled.back(), many.data(), many.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  // Each is being answered: its receive buffer fills (then the server's
  // send buffer, and its answer stays queued).
  for (int fd : stalled) {
    int queued = 0;
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while ((ioctl(fd, FIONREAD, &queued) != 0 || queued < 2048) && absl::Now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      poll(&p, 1, 10);
    }
  }
  const int probe = Connect();
  Send(probe, "GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(ReadAll(probe), "HTTP/1.1 200 OK"));
  close(probe);
  for (int fd : stalled) close(fd);
}

}  // namespace
}  // namespace sluice::admin
