// The pool of idle upstream HTTP/1.1 connections, over a socketpair (no
// listener): what a connection the pool holds still notices.
#include "dataplane/upstream/connection_pool.h"

#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/net/socket.h"
#include "dataplane/stats/stats.h"

namespace sluice::upstream {
namespace {

// Runs the loop until `done` holds or 5 s pass, checking every millisecond.
void RunUntil(event::Dispatcher& dispatcher, const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  std::unique_ptr<event::Timer> check;
  check = std::make_unique<event::Timer>(dispatcher, [&] {
    if (done() || absl::Now() >= deadline) {
      dispatcher.Exit();
    } else {
      check->Enable(absl::Milliseconds(1));
    }
  });
  check->Enable(absl::Milliseconds(1));
  dispatcher.Run();
}

// A request's side: it stops reading the upstream on every body piece, as a
// stream does while its client is behind (ProxyStream::OnUpstreamBody).
class PausingEvents : public UpstreamEvents {
 public:
  explicit PausingEvents(UpstreamConnection* connection) : connection_(connection) {}
  void OnUpstreamConnected() override {}
  void OnUpstreamHead(const http::MessageHead&) override {}
  void OnUpstreamBody(std::string_view) override {
    connection_->connection().SetReadEnabled(false);
  }
  void OnUpstreamComplete() override { complete = true; }
  void OnUpstreamFailed(bool, bool, const std::string& why) override { failed = why; }
  void OnUpstreamWriteDrained() override {}

  bool complete = false;
  std::string failed;

 private:
  UpstreamConnection* connection_;
};

// A response whose last bytes arrived in the read that made the stream
// pause: the connection goes back to the pool with its reading off. Idle,
// it must still read: to notice the upstream closing it, and to get the
// next request's response.
TEST(ConnectionPoolTest, AConnectionReleasedWhilePausedReadsAgainOnceIdle) {
  event::Dispatcher dispatcher;
  ConnectionPool pool(dispatcher);
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  auto connection = std::make_unique<UpstreamConnection>(
      dispatcher, pool, fds[0], nullptr, "127.0.0.1:1", absl::Seconds(5),
      std::make_shared<ClusterState>(), std::make_shared<EndpointState>());
  PausingEvents events(connection.get());
  connection->Attach(&events, /*head_request=*/false);
  const std::string response = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
  ASSERT_EQ(write(fds[1], response.data(), response.size()),
            static_cast<ssize_t>(response.size()));
  RunUntil(dispatcher, [&] { return events.complete || !events.failed.empty(); });
  ASSERT_TRUE(events.complete) << events.failed;
  ASSERT_TRUE(connection->reusable());
  EXPECT_FALSE(connection->connection().read_enabled());  // the pause, as in the proxy

  UpstreamConnection* idle = connection.get();
  pool.Release(std::move(connection), /*max_idle=*/8);
  ASSERT_EQ(pool.idle_count(), 1u);
  EXPECT_TRUE(idle->connection().read_enabled());
  close(fds[1]);  // the upstream closes the idle connection: it leaves the pool
  RunUntil(dispatcher, [&] { return pool.idle_count() == 0; });
  EXPECT_EQ(pool.idle_count(), 0u);
  dispatcher.RunDeferredDeletes();
}

// A connection busy when a config dropped its endpoint is closed when its
// request is done: nothing would reuse it, and it held a place in the
// cluster's max_connections for ever (every request then got 503).
TEST(ConnectionPoolTest, AConnectionOfAnEndpointTheConfigDroppedClosesWhenReleased) {
  event::Dispatcher dispatcher;
  ConnectionPool pool(dispatcher);
  auto state = std::make_shared<ClusterState>();
  auto make = [&](const std::string& key, int* peer) {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    *peer = fds[1];
    return std::make_unique<UpstreamConnection>(dispatcher, pool, fds[0], nullptr, key,
                                                absl::Seconds(5), state,
                                                std::make_shared<EndpointState>());
  };
  auto answer = [&](UpstreamConnection* c, int peer) {
    PausingEvents events(c);
    c->Attach(&events, /*head_request=*/false);
    const std::string response = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    EXPECT_EQ(write(peer, response.data(), response.size()), static_cast<ssize_t>(response.size()));
    RunUntil(dispatcher, [&] { return events.complete || !events.failed.empty(); });
    EXPECT_TRUE(events.complete) << events.failed;
  };
  pool.CloseIdleExcept({"127.0.0.1:1", "127.0.0.1:2"});
  int kept_peer = -1;
  int dropped_peer = -1;
  auto kept = make("127.0.0.1:1", &kept_peer);
  auto dropped = make("127.0.0.1:2", &dropped_peer);
  answer(kept.get(), kept_peer);
  answer(dropped.get(), dropped_peer);
  EXPECT_EQ(state->connections.load(), 2);
  pool.CloseIdleExcept({"127.0.0.1:1"});  // a new config, while both are busy
  pool.Release(std::move(kept), /*max_idle=*/8);
  pool.Release(std::move(dropped), /*max_idle=*/8);
  dispatcher.RunDeferredDeletes();
  EXPECT_EQ(pool.idle_count(), 1u);
  EXPECT_EQ(state->connections.load(), 1);
  pool.CloseAllIdle();
  dispatcher.RunDeferredDeletes();
  EXPECT_EQ(state->connections.load(), 0);
  close(kept_peer);
  close(dropped_peer);
}

// An idle connection is closed once unused for its cluster's
// idle_connection_timeout (rounded up to whole seconds): its descriptor and
// its place in max_connections come back. Before, it stayed until the
// upstream closed it, and a worker holding many kept a cluster at its
// max_connections (503) with nothing in flight.
TEST(ConnectionPoolTest, AnIdleConnectionClosesAfterItsIdleTimeout) {
  event::Dispatcher dispatcher;
  dispatcher.UseSimulatedClock();
  ConnectionPool pool(dispatcher);
  auto state = std::make_shared<ClusterState>();
  std::vector<int> peers;
  auto release = [&](absl::Duration timeout) {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    peers.push_back(fds[1]);
    auto c = std::make_unique<UpstreamConnection>(dispatcher, pool, fds[0], nullptr,
                                                  "127.0.0.1:1", absl::Seconds(5), state,
                                                  std::make_shared<EndpointState>());
    PausingEvents events(c.get());
    c->Attach(&events, /*head_request=*/false);
    const std::string response = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    EXPECT_EQ(write(fds[1], response.data(), response.size()),
              static_cast<ssize_t>(response.size()));
    for (int i = 0; i < 100 && !events.complete; ++i) dispatcher.AdvanceClock(absl::Milliseconds(1));
    EXPECT_TRUE(events.complete) << events.failed;
    pool.Release(std::move(c), /*max_idle=*/8, ConnectionPool::IdleSweeps(timeout));
  };
  release(absl::Seconds(3));
  release(absl::Milliseconds(1500));  // rounded up: 2 s
  ASSERT_EQ(pool.idle_count(), 2u);
  EXPECT_EQ(state->connections.load(), 2);
  // Closed within a second after the timeout (the sweep runs every
  // second): not before it.
  dispatcher.AdvanceClock(absl::Milliseconds(2000));
  EXPECT_EQ(pool.idle_count(), 2u);
  dispatcher.AdvanceClock(absl::Seconds(1));  // 3 s: the 2 s one went
  EXPECT_EQ(pool.idle_count(), 1u);
  dispatcher.AdvanceClock(absl::Seconds(1));  // 4 s: the 3 s one too
  EXPECT_EQ(pool.idle_count(), 0u);
  dispatcher.RunDeferredDeletes();
  EXPECT_EQ(state->connections.load(), 0);

  // A new config's lower limits reach what is idle now (it kept the values
  // of its release: an old 60 s timeout after the operator set 1 s).
  for (int i = 0; i < 3; ++i) release(absl::Seconds(60));
  ASSERT_EQ(pool.idle_count(), 3u);
  pool.Tighten("127.0.0.1:1", /*max_idle=*/2, ConnectionPool::IdleSweeps(absl::Seconds(1)));
  dispatcher.RunDeferredDeletes();
  EXPECT_EQ(pool.idle_count(), 2u);  // the least recently used went
  dispatcher.AdvanceClock(absl::Seconds(2));
  EXPECT_EQ(pool.idle_count(), 0u);
  dispatcher.RunDeferredDeletes();
  EXPECT_EQ(state->connections.load(), 0);

  // Connections busy while the limits were lowered get them when they are
  // released, not those their requests started with (they stayed 60 s).
  for (int i = 0; i < 3; ++i) release(absl::Seconds(60));
  EXPECT_EQ(pool.idle_count(), 2u);
  // Closed, a connection frees its place in the counts at once, before its
  // deferred deletion: a request right after it (a resend) is not refused
  // by max_connections for a connection that is gone.
  EXPECT_EQ(state->connections.load(), 2);
  dispatcher.AdvanceClock(absl::Seconds(2));
  EXPECT_EQ(pool.idle_count(), 0u);
  EXPECT_EQ(state->connections.load(), 0);
  dispatcher.RunDeferredDeletes();
  EXPECT_EQ(state->connections.load(), 0);
  for (int fd : peers) close(fd);
}

}  // namespace
}  // namespace sluice::upstream

namespace sluice::upstream {
namespace {

// At the cluster's max_connections, a worker with no connection to the
// cluster still opens one (as Envoy's pools do): idle connections another
// worker holds, which this one cannot close, starved it with 503s at no
// concurrency at all. A worker that has one is held to the limit.
TEST(ConnectionPoolTest, AWorkerWithoutAConnectionMayOpenOneAtTheLimit) {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(listener, 16), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const uint16_t port = ntohs(addr.sin_port);

  stats::StatsStore store;
  ClusterInfo cluster;
  cluster.name = "limited";
  cluster.connect_timeout = absl::Seconds(5);
  cluster.breakers.max_connections = 1;
  cluster.state = std::make_shared<ClusterState>();
  cluster.stats.connections_opened = store.GetCounter("opened");
  cluster.stats.connections_reused = store.GetCounter("reused");
  EndpointInfo endpoint;
  endpoint.ip = "127.0.0.1";
  endpoint.port = port;
  endpoint.key = endpoint.pool_key = absl::StrCat("127.0.0.1:", port);
  endpoint.address = *net::ParseAddress(endpoint.ip, endpoint.port);
  endpoint.state = std::make_shared<EndpointState>();
  cluster.endpoints.push_back(endpoint);

  event::Dispatcher dispatcher;
  ConnectionPool first_worker(dispatcher);
  ConnectionPool second_worker(dispatcher);
  auto held = first_worker.Acquire(cluster, cluster.endpoints[0]);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(cluster.state->connections.load(), 1);
  auto other = second_worker.Acquire(cluster, cluster.endpoints[0]);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(cluster.state->connections.load(), 2);
  auto more = first_worker.Acquire(cluster, cluster.endpoints[0]);
  EXPECT_TRUE(absl::IsResourceExhausted(more.status())) << more.status();
  // Its connection gone, the first worker may open one again.
  first_worker.Discard(std::move(*held));
  dispatcher.RunDeferredDeletes();
  auto again = first_worker.Acquire(cluster, cluster.endpoints[0]);
  EXPECT_TRUE(again.ok()) << again.status();
  first_worker.Discard(std::move(*again));
  second_worker.Discard(std::move(*other));
  dispatcher.RunDeferredDeletes();
  EXPECT_EQ(cluster.state->connections.load(), 0);
  close(listener);
}

}  // namespace
}  // namespace sluice::upstream
