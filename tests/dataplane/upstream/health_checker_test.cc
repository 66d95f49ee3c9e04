#include "dataplane/upstream/health_checker.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/net/socket.h"
#include "dataplane/stats/stats.h"

namespace sluice::upstream {
namespace {

// The checker writes to sockets the upstream may have reset (the server's
// main() ignores SIGPIPE the same way).
const bool kSigpipeIgnored = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

constexpr char kOk[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

// A listening socket on 127.0.0.1. `port` 0: any free port. Ports below the
// ephemeral range (see PortOutsideEphemeralRange) stay free of outgoing
// connections, so a test can stop a server and start it again on its port.
int ListenOn(int port) {
  absl::StatusOr<net::Address> address =
      net::ParseAddress("127.0.0.1", static_cast<uint16_t>(port));
  if (!address.ok()) return -1;
  absl::StatusOr<int> fd = net::Listen(*address, /*reuse_port=*/false);
  return fd.ok() ? *fd : -1;
}

// A port nothing listens on, below the kernel's ephemeral range (32768 and
// up by default), so no outgoing connection of this process takes it either.
int PortOutsideEphemeralRange() {
  static std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> dist(20000, 32000);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    int port = dist(rng);
    int fd = ListenOn(port);
    if (fd >= 0) {
      close(fd);
      return port;
    }
  }
  ADD_FAILURE() << "no free port";
  return 0;
}

// A tiny HTTP upstream on its own thread: reads each request head, answers
// with a canned response (an empty one: closes without answering) and closes.
class CannedUpstream {
 public:
  // nullptr if `port` cannot be bound.
  static std::unique_ptr<CannedUpstream> Start(std::string response,
                                               int port = 0) {
    int fd = ListenOn(port);
    if (fd < 0) return nullptr;
    return std::unique_ptr<CannedUpstream>(
        new CannedUpstream(fd, std::move(response)));
  }

  ~CannedUpstream() { Stop(); }

  // Closes the listener: connects are refused from now on.
  void Stop() {
    if (listen_fd_ < 0) return;
    uint64_t one = 1;
    ssize_t ignored = write(stop_fd_, &one, sizeof(one));
    (void)ignored;
    thread_.join();
    close(listen_fd_);
    close(stop_fd_);
    listen_fd_ = -1;
  }

  int port() const { return port_; }
  int requests() {
    absl::MutexLock lock(&mu_);
    return requests_;
  }
  std::string last_request() {
    absl::MutexLock lock(&mu_);
    return last_request_;
  }

 private:
  CannedUpstream(int listen_fd, std::string response)
      : listen_fd_(listen_fd),
        stop_fd_(eventfd(0, EFD_CLOEXEC)),
        port_(net::BoundPort(listen_fd)),
        response_(std::move(response)),
        thread_([this] { Serve(); }) {}

  void Serve() {
    while (true) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents != 0) return;
      int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      std::string request = ReadHead(client);
      if (!request.empty()) {
        absl::MutexLock lock(&mu_);
        ++requests_;
        last_request_ = request;
      }
      if (!request.empty() && !response_.empty()) {
        ssize_t ignored =
            send(client, response_.data(), response_.size(), MSG_NOSIGNAL);
        (void)ignored;
      }
      close(client);
    }
  }

  // The request head, or what arrived before EOF or a 2 s silence.
  static std::string ReadHead(int fd) {
    std::string data;
    while (!absl::StrContains(data, "\r\n\r\n")) {
      pollfd pfd = {fd, POLLIN, 0};
      if (poll(&pfd, 1, 2000) <= 0) break;
      char buf[4096];
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      data.append(buf, static_cast<size_t>(n));
    }
    return data;
  }

  int listen_fd_;
  int stop_fd_;
  int port_;
  const std::string response_;
  absl::Mutex mu_;
  int requests_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_request_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: starts once the members above are set
};

// Polls `condition` every 10 ms until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& condition,
             absl::Duration timeout = absl::Seconds(5)) {
  absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

HealthCheckConfig HttpCheck() {
  HealthCheckConfig hc;
  hc.enabled = true;
  hc.kind = HealthCheckConfig::Kind::kHttp;
  hc.path = "/healthz";
  hc.interval = absl::Milliseconds(50);
  hc.timeout = absl::Seconds(1);
  hc.jitter = absl::Milliseconds(10);
  hc.healthy_threshold = 2;
  hc.unhealthy_threshold = 3;
  return hc;
}

HealthCheckConfig TcpCheck() {
  HealthCheckConfig hc = HttpCheck();
  hc.kind = HealthCheckConfig::Kind::kTcp;
  hc.path.clear();
  return hc;
}

class HealthCheckerTest : public ::testing::Test {
 protected:
  HealthCheckerTest()
      : checker_(std::make_unique<HealthChecker>(dispatcher_)),
        loop_([this] { dispatcher_.Run(); }) {}

  ~HealthCheckerTest() override {
    dispatcher_.Exit();
    loop_.join();
    checker_.reset();  // the loop has stopped: safe from this thread
  }

  // A one-endpoint cluster on 127.0.0.1:`port` sharing `state`.
  std::shared_ptr<const ClusterInfo> Cluster(
      const std::string& name, int port, const HealthCheckConfig& hc,
      std::shared_ptr<EndpointState> state) {
    auto cluster = std::make_shared<ClusterInfo>();
    cluster->name = name;
    EndpointInfo endpoint;
    endpoint.ip = "127.0.0.1";
    endpoint.port = static_cast<uint16_t>(port);
    endpoint.key = absl::StrCat("127.0.0.1:", port);
    endpoint.address = *net::ParseAddress(endpoint.ip, endpoint.port);
    endpoint.state = std::move(state);
    cluster->endpoints.push_back(std::move(endpoint));
    cluster->health_check = hc;
    cluster->stats.health_check_passes =
        store_.GetCounter("health_check_passes", Label(name));
    cluster->stats.health_check_failures =
        store_.GetCounter("health_check_failures", Label(name));
    return cluster;
  }

  static std::shared_ptr<EndpointState> NewState(Health initial) {
    auto state = std::make_shared<EndpointState>();
    state->health.store(initial);
    return state;
  }

  // Runs Update() on the dispatcher's thread and waits for it.
  void Update(std::vector<std::shared_ptr<const ClusterInfo>> clusters) {
    absl::Notification done;
    dispatcher_.Post([&] {
      checker_->Update(clusters);
      done.Notify();
    });
    done.WaitForNotification();
  }

  uint64_t Passes(const std::string& cluster) {
    return store_.GetCounter("health_check_passes", Label(cluster))->value();
  }
  uint64_t Failures(const std::string& cluster) {
    return store_.GetCounter("health_check_failures", Label(cluster))->value();
  }

  static std::function<bool()> HealthIs(
      const std::shared_ptr<EndpointState>& state, Health health) {
    return [state, health] { return state->health.load() == health; };
  }

  stats::StatsStore store_;
  event::Dispatcher dispatcher_;
  std::unique_ptr<HealthChecker> checker_;

 private:
  static std::string Label(const std::string& cluster) {
    return absl::StrCat("cluster=\"", cluster, "\"");
  }

  std::thread loop_;  // last: runs the dispatcher once everything is built
};

TEST_F(HealthCheckerTest, HttpPassMakesUnknownEndpointHealthyAtOnce) {
  auto upstream = CannedUpstream::Start(kOk);
  ASSERT_NE(upstream, nullptr);
  auto state = NewState(Health::kUnknown);
  auto custom_host_state = NewState(Health::kUnknown);
  // A long interval: only the first check, which starts right after Update(),
  // can make the endpoints healthy within the deadline.
  HealthCheckConfig hc = HttpCheck();
  hc.interval = absl::Minutes(10);
  HealthCheckConfig with_host = hc;
  with_host.host = "users.internal";
  with_host.path = "/ready?full=1";

  // An endpoint of a new cluster (joined_ns 0): its first pass is no
  // joining for slow start; one added to a cluster in service (joined_ns
  // set) joins again when it passes.
  custom_host_state->joined_ns.store(1);
  Update({Cluster("users", upstream->port(), hc, state)});
  ASSERT_TRUE(WaitFor(HealthIs(state, Health::kHealthy), absl::Seconds(3)));
  EXPECT_EQ(state->joined_ns.load(), 0);
  EXPECT_EQ(Passes("users"), 1u);
  EXPECT_EQ(Failures("users"), 0u);
  EXPECT_EQ(state->last_check_failure(), "");
  EXPECT_EQ(
      upstream->last_request(),
      absl::StrCat(
          "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:", upstream->port(),
          "\r\nUser-Agent: sluice-health-check\r\nConnection: close\r\n\r\n"));

  Update({Cluster("users", upstream->port(), hc, state),
          Cluster("orders", upstream->port(), with_host, custom_host_state)});
  ASSERT_TRUE(
      WaitFor(HealthIs(custom_host_state, Health::kHealthy), absl::Seconds(3)));
  EXPECT_GT(custom_host_state->joined_ns.load(), 1);
  EXPECT_EQ(upstream->last_request(),
            "GET /ready?full=1 HTTP/1.1\r\nHost: users.internal\r\n"
            "User-Agent: sluice-health-check\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(checker_->active_checks(), 2u);
}

// A passing check ends an outlier ejection (Envoy's default). Before: the
// endpoint stayed out until its ejection time was up.
TEST_F(HealthCheckerTest, APassingCheckEndsAnEjection) {
  auto upstream = CannedUpstream::Start(kOk);
  ASSERT_NE(upstream, nullptr);
  auto state = NewState(Health::kHealthy);
  const int64_t ejected_until = NowNanos() + absl::ToInt64Nanoseconds(absl::Minutes(10));
  state->ejected_until_ns.store(ejected_until);
  state->times_ejected.store(2);
  HealthCheckConfig hc = HttpCheck();
  hc.interval = absl::Minutes(10);  // the first check only
  Update({Cluster("users", upstream->port(), hc, state)});
  ASSERT_TRUE(WaitFor([&] { return !state->ejected(NowNanos()); }, absl::Seconds(3)));
  EXPECT_GT(state->ejected_until_ns.load(), 0);  // ended now: the decay runs from here
  EXPECT_EQ(state->times_ejected.load(), 2u);
  EXPECT_TRUE(state->usable(NowNanos()));

  // successful_active_health_check_uneject_host: false keeps it out.
  auto kept = NewState(Health::kHealthy);
  kept->ejected_until_ns.store(ejected_until);
  auto cluster = std::const_pointer_cast<ClusterInfo>(
      Cluster("orders", upstream->port(), hc, kept));
  cluster->outlier.uneject_on_health_check_pass = false;
  const uint64_t passes = Passes("orders");
  Update({Cluster("users", upstream->port(), hc, state), cluster});
  ASSERT_TRUE(WaitFor([&] { return Passes("orders") > passes; }, absl::Seconds(3)));
  EXPECT_TRUE(kept->ejected(NowNanos()));
}

TEST_F(HealthCheckerTest, StatusOutsideExpectedFails) {
  auto upstream = CannedUpstream::Start(kOk);
  ASSERT_NE(upstream, nullptr);
  auto state = NewState(Health::kUnknown);
  HealthCheckConfig hc = HttpCheck();
  hc.expected = {204};

  Update({Cluster("users", upstream->port(), hc, state)});
  ASSERT_TRUE(WaitFor(HealthIs(state, Health::kUnhealthy)));
  EXPECT_EQ(Passes("users"), 0u);
  EXPECT_GE(Failures("users"), 3u);
  EXPECT_EQ(state->last_check_failure(),
            "unexpected status 200 (expected 204)");
}

TEST_F(HealthCheckerTest, ServerErrorFailsWithDefaultExpectedRange) {
  auto upstream = CannedUpstream::Start(
      "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
  ASSERT_NE(upstream, nullptr);
  auto state = NewState(Health::kHealthy);
  HealthCheckConfig hc = HttpCheck();

  Update({Cluster("users", upstream->port(), hc, state)});
  ASSERT_TRUE(WaitFor(HealthIs(state, Health::kUnhealthy)));
  EXPECT_EQ(state->last_check_failure(),
            "unexpected status 503 (expected 200-299)");
}

TEST_F(HealthCheckerTest, BadOrMissingResponseFails) {
  auto garbage = CannedUpstream::Start("SMTP ready\r\n\r\n");
  auto silent = CannedUpstream::Start("");  // reads the request, closes
  ASSERT_NE(garbage, nullptr);
  ASSERT_NE(silent, nullptr);
  auto garbage_state = NewState(Health::kUnknown);
  auto silent_state = NewState(Health::kUnknown);
  HealthCheckConfig hc = HttpCheck();
  hc.unhealthy_threshold = 1;

  Update({Cluster("garbage", garbage->port(), hc, garbage_state),
          Cluster("silent", silent->port(), hc, silent_state)});
  ASSERT_TRUE(WaitFor(HealthIs(garbage_state, Health::kUnhealthy)));
  ASSERT_TRUE(WaitFor(HealthIs(silent_state, Health::kUnhealthy)));
  EXPECT_TRUE(
      absl::StartsWith(garbage_state->last_check_failure(), "bad response: "))
      << garbage_state->last_check_failure();
  EXPECT_EQ(silent_state->last_check_failure(),
            "connection closed before a response");
}

TEST_F(HealthCheckerTest, StoppedServerTurnsUnhealthyAndRecoversOnRestart) {
  std::unique_ptr<CannedUpstream> upstream;
  int port = 0;
  ASSERT_TRUE(WaitFor([&] {
    port = PortOutsideEphemeralRange();
    upstream = CannedUpstream::Start(kOk, port);
    return upstream != nullptr;
  }));
  auto state = NewState(Health::kUnknown);
  HealthCheckConfig hc =
      HttpCheck();  // 50 ms (+ up to 10 ms), 3 failures, 2 passes

  Update({Cluster("users", port, hc, state)});
  ASSERT_TRUE(WaitFor(HealthIs(state, Health::kHealthy)));

  upstream->Stop();
  absl::Time stopped = absl::Now();
  ASSERT_TRUE(WaitFor(HealthIs(state, Health::kUnhealthy)));
  // 3 × 60 ms at most, plus slack for a loaded machine.
  EXPECT_LT(absl::Now() - stopped, absl::Milliseconds(1500));
  EXPECT_EQ(state->last_check_failure(), "connect: Connection refused");
  uint64_t passes_while_unhealthy = Passes("users");

  EXPECT_EQ(state->joined_ns.load(), 0);  // one of the first endpoints
  const int64_t before_recovery = upstream::NowNanos();
  upstream = CannedUpstream::Start(kOk, port);
  ASSERT_NE(upstream, nullptr);
  ASSERT_TRUE(WaitFor(HealthIs(state, Health::kHealthy)));
  // Back from failing, it joins again (slow start counts from here).
  EXPECT_GE(state->joined_ns.load(), before_recovery);
  // From kUnhealthy it takes healthy_threshold passes in a row.
  EXPECT_GE(Passes("users") - passes_while_unhealthy, 2u);
  // The last failure stays visible after recovering.
  EXPECT_EQ(state->last_check_failure(), "connect: Connection refused");
}

TEST_F(HealthCheckerTest, HangingServerFailsOnTimeout) {
  int hanging = ListenOn(0);  // completes handshakes, never answers
  ASSERT_GE(hanging, 0);
  auto state = NewState(Health::kUnknown);
  HealthCheckConfig hc = HttpCheck();
  hc.timeout = absl::Milliseconds(100);
  hc.unhealthy_threshold = 2;

  Update({Cluster("users", net::BoundPort(hanging), hc, state)});
  ASSERT_TRUE(WaitFor(HealthIs(state, Health::kUnhealthy)));
  EXPECT_EQ(state->last_check_failure(), "timeout after 100ms");
  EXPECT_EQ(Passes("users"), 0u);
  close(hanging);
}

TEST_F(HealthCheckerTest, TcpCheckFollowsTheListener) {
  int port = 0;
  int listener = -1;
  ASSERT_TRUE(WaitFor([&] {
    port = PortOutsideEphemeralRange();
    listener = ListenOn(port);  // the kernel accepts: a TCP check passes
    return listener >= 0;
  }));
  auto state = NewState(Health::kUnknown);

  Update({Cluster("users", port, TcpCheck(), state)});
  ASSERT_TRUE(WaitFor(HealthIs(state, Health::kHealthy)));
  EXPECT_EQ(Failures("users"), 0u);

  close(listener);
  ASSERT_TRUE(WaitFor(HealthIs(state, Health::kUnhealthy)));
  EXPECT_EQ(state->last_check_failure(), "connect: Connection refused");
}

TEST_F(HealthCheckerTest, RemovingTheCheckMakesEndpointHealthyAndStopsIt) {
  int port = PortOutsideEphemeralRange();  // nothing listens: refused
  auto state = NewState(Health::kUnknown);
  HealthCheckConfig hc = HttpCheck();
  hc.unhealthy_threshold = 1;

  Update({Cluster("users", port, hc, state)});
  EXPECT_EQ(checker_->active_checks(), 1u);
  ASSERT_TRUE(WaitFor(HealthIs(state, Health::kUnhealthy)));

  HealthCheckConfig removed = hc;
  removed.enabled = false;
  Update({Cluster("users", port, removed, state)});
  EXPECT_EQ(state->health.load(), Health::kHealthy);
  EXPECT_EQ(state->last_check_failure(), "");
  EXPECT_EQ(checker_->active_checks(), 0u);
  uint64_t failures = Failures("users");
  absl::SleepFor(absl::Milliseconds(300));  // six intervals: no check may run
  EXPECT_EQ(Failures("users"), failures);
  EXPECT_EQ(state->health.load(), Health::kHealthy);

  // A cluster dropped from the config stops its checks too.
  Update({Cluster("users", port, hc, state)});
  EXPECT_EQ(checker_->active_checks(), 1u);
  Update({});
  EXPECT_EQ(checker_->active_checks(), 0u);
}

TEST_F(HealthCheckerTest, UpdateKeepingTheEndpointKeepsItsCounts) {
  int port = PortOutsideEphemeralRange();  // nothing listens: refused
  auto state = NewState(Health::kHealthy);
  HealthCheckConfig hc = HttpCheck();
  hc.jitter = absl::ZeroDuration();
  hc.unhealthy_threshold = 4;

  // New config versions every 20 ms, faster than 4 failures take. Only a
  // check that keeps its count (and its timer) across them gets there.
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (state->health.load() != Health::kUnhealthy && absl::Now() < deadline) {
    Update({Cluster("users", port, hc, state)});
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(state->health.load(), Health::kUnhealthy);
  EXPECT_EQ(checker_->active_checks(), 1u);
}

TEST_F(HealthCheckerTest, UpdateKeepingAHealthyEndpointCausesNoTransition) {
  auto upstream = CannedUpstream::Start(kOk);
  ASSERT_NE(upstream, nullptr);
  auto state = NewState(Health::kUnknown);
  HealthCheckConfig hc = HttpCheck();

  Update({Cluster("users", upstream->port(), hc, state)});
  ASSERT_TRUE(WaitFor(HealthIs(state, Health::kHealthy)));

  // Same pair, a changed path: the check keeps running with the new path and
  // the endpoint never leaves kHealthy.
  hc.path = "/v2/healthz";
  uint64_t passes = Passes("users");
  for (int i = 0; i < 10; ++i) {
    Update({Cluster("users", upstream->port(), hc, state)});
    for (int j = 0; j < 5; ++j) {
      ASSERT_EQ(state->health.load(), Health::kHealthy);
      absl::SleepFor(absl::Milliseconds(5));
    }
  }
  ASSERT_TRUE(WaitFor([&] {
    return absl::StartsWith(upstream->last_request(), "GET /v2/healthz ");
  }));
  EXPECT_GT(Passes("users"), passes);
  EXPECT_EQ(Failures("users"), 0u);
  EXPECT_EQ(state->health.load(), Health::kHealthy);
  EXPECT_EQ(checker_->active_checks(), 1u);
}

TEST_F(HealthCheckerTest, ChangedIntervalAppliesToTheRunningCheck) {
  auto upstream = CannedUpstream::Start(kOk);
  ASSERT_NE(upstream, nullptr);
  auto state = NewState(Health::kUnknown);
  HealthCheckConfig hc = HttpCheck();
  hc.interval = absl::Minutes(10);

  Update({Cluster("users", upstream->port(), hc, state)});
  ASSERT_TRUE(WaitFor(HealthIs(state, Health::kHealthy)));
  EXPECT_EQ(Passes("users"), 1u);

  // With the old interval the next check would be minutes away.
  hc.interval = absl::Milliseconds(50);
  Update({Cluster("users", upstream->port(), hc, state)});
  EXPECT_TRUE(WaitFor([&] { return Passes("users") >= 4; }));
}

// The gRPC health answer is read as protobuf reads it. Before: an unknown
// field first, or status sent twice, read as UNKNOWN / the first value; a
// length prefix longer than the bytes, and a non-gRPC content-type, passed.
TEST(GrpcHealthAnswerTest, ReadAsAProtobufParserAndAGrpcClientWould) {
  auto message = [](std::string proto) {
    std::string body = {'\0', '\0', '\0', '\0', static_cast<char>(proto.size())};
    return body + proto;
  };
  EXPECT_EQ(*grpc_health::ServingStatus(message("\x08\x01")), 1);
  EXPECT_EQ(*grpc_health::ServingStatus(message("")), 0);  // absent: UNKNOWN
  EXPECT_EQ(*grpc_health::ServingStatus(message(std::string("\x12\x03" "abc" "\x08\x01"))), 1);
  EXPECT_EQ(*grpc_health::ServingStatus(message("\x08\x02\x08\x01")), 1);  // the last wins
  EXPECT_EQ(*grpc_health::ServingStatus(message("\x08\x81\x01")), 129);     // a 2-byte varint
  EXPECT_EQ(*grpc_health::ServingStatus(message(std::string("\x0d\x01\x02\x03\x04\x08\x01", 7))),
            1);  // a fixed32 field skipped
  // The enum is an int32: the varint cut to 32 bits, as protobuf reads it
  // (2^32 + 1 failed before, reported as "health status 1").
  EXPECT_EQ(*grpc_health::ServingStatus(message("\x08\x81\x80\x80\x80\x10")), 1);
  EXPECT_EQ(*grpc_health::ServingStatus(
                message("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")),
            -1);  // a negative enum: 10 varint bytes
  std::string cut = message("\x08\x01");
  cut[4] = 5;  // says 5 bytes, has 2
  EXPECT_EQ(grpc_health::ServingStatus(cut).status().message(),
            "the answer is not one HealthCheckResponse (2 bytes after the message prefix, which "
            "says 5)");
  EXPECT_FALSE(grpc_health::ServingStatus(message("\x08")).ok());          // varint cut short
  EXPECT_FALSE(grpc_health::ServingStatus(message("\x12\x05" "ab")).ok());  // length past the end
  EXPECT_FALSE(grpc_health::ServingStatus(message("\x0b")).ok());          // a group
  std::string compressed = message("\x08\x01");
  compressed[0] = 1;
  EXPECT_FALSE(grpc_health::ServingStatus(compressed).ok());
}

}  // namespace
}  // namespace sluice::upstream
