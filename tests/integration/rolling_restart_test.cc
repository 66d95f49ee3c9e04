// The rolling-restart drill through real processes: a control plane, an
// upstream, two proxies (groups r1 and r2, each binding only its own
// listener through node_groups) and HAProxy in front of them, health-checking
// each proxy's /ready. Under steady load, each proxy in turn is stopped with
// SIGTERM and started again; no request may fail.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/harness/http_client.h"
#include "tests/harness/nginx.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

constexpr char kHaproxy[] = "/usr/sbin/haproxy";

// One command on HAProxy's stats socket; its whole answer ("" on failure).
std::string HaproxyCommand(const std::string& socket_path, const std::string& command) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_path.c_str());
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    std::string line = command + "\n";
    if (write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return out;
}

// A server's fields from "show stat" (CSV: pxname,svname,...,status at 17).
std::vector<std::string> ServerStat(const std::string& socket_path, const std::string& server) {
  for (absl::string_view line : absl::StrSplit(HaproxyCommand(socket_path, "show stat"), '\n')) {
    std::vector<std::string> fields = absl::StrSplit(line, ',');
    if (fields.size() > 17 && fields[0] == "proxies" && fields[1] == server) return fields;
  }
  return {};
}

std::string ServerStatus(const std::string& socket_path, const std::string& server) {
  std::vector<std::string> fields = ServerStat(socket_path, server);
  return fields.empty() ? "" : fields[17];
}

class RollingRestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(kHaproxy, X_OK) != 0) GTEST_SKIP() << kHaproxy << " is not installed";
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok());
    for (int i = 0; i < 2; ++i) {
      listen_ports_[i] = PickFreePort();
      admin_ports_[i] = PickFreePort();
      ASSERT_GT(listen_ports_[i], 0);
      ASSERT_GT(admin_ports_[i], 0);
    }
    frontend_port_ = PickFreePort();
    ASSERT_GT(frontend_port_, 0);
    std::string yaml = absl::StrCat(
        "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n      routes: [{match: {prefix: /}, route: {cluster: web}}]\n");
    for (int i = 0; i < 2; ++i) {
      absl::StrAppend(&yaml, "---\nkind: Listener\nname: edge-r", i + 1,
                      "\nspec: {address: 127.0.0.1, port: ", listen_ports_[i],
                      ", route_table: main, node_groups: [r", i + 1, "]}\n");
    }
    auto applied = cp_.Ctl({"apply", "-f", WriteFile(dir_, "config.yaml", yaml)});
    ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
    for (int i = 0; i < 2; ++i) {
      proxies_[i] = std::make_unique<Proxy>(
          cp_.address(), absl::StrCat("replica-", i + 1), /*workers=*/2, "",
          std::vector<std::string>{"--group", absl::StrCat("r", i + 1), "--admin",
                                   absl::StrCat("127.0.0.1:", admin_ports_[i]),
                                   "--drain-timeout", "2s", "--log-level", "info"});
      ASSERT_TRUE(proxies_[i]->ok()) << proxies_[i]->process().Log();
      ASSERT_TRUE(proxies_[i]->WaitForVersion(1)) << proxies_[i]->process().Log();
    }
    // Each proxy binds its own listener only.
    ASSERT_TRUE(AcceptingConnections(listen_ports_[0]));
    ASSERT_TRUE(AcceptingConnections(listen_ports_[1]));
    EXPECT_EQ(Served(0), 0);
    EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", listen_ports_[0]), "/").status, 200);
    EXPECT_EQ(Served(0), 1);
    EXPECT_EQ(proxies_[1]->Stat(
                  "sluice_listener_requests_total{listener=\"edge-r1\",status_class=\"2xx\"}"),
              -1)
        << "proxy r2 must not bind listener edge-r1";

    // A unix socket path has at most 107 bytes (HAProxy takes 97): not
    // under $TEST_TMPDIR.
    char socket_dir[] = "/tmp/sluice-haproxy-XXXXXX";
    ASSERT_NE(mkdtemp(socket_dir), nullptr);
    socket_dir_ = socket_dir;
    socket_path_ = socket_dir_ + "/stats.sock";
    std::string config = absl::StrCat(
        "global\n"
        "  stats socket ", socket_path_, " mode 600 level admin\n"
        "  maxconn 1000\n"
        "defaults\n"
        "  mode http\n"
        "  timeout connect 1s\n"
        "  timeout client 10s\n"
        "  timeout server 10s\n"
        "  retries 3\n"
        "  option redispatch 1\n"        // every retry goes to another server
        "  option http-server-close\n"  // one proxy connection per request
        "  http-reuse never\n"
        "frontend edge\n"
        "  bind 127.0.0.1:", frontend_port_, "\n"
        "  default_backend proxies\n"
        "backend proxies\n"
        "  balance roundrobin\n"
        "  option httpchk GET /ready\n"
        "  default-server inter 200ms fall 1 rise 1\n");
    for (int i = 0; i < 2; ++i) {
      absl::StrAppend(&config, "  server r", i + 1, " 127.0.0.1:", listen_ports_[i],
                      " check port ", admin_ports_[i], "\n");
    }
    std::string config_path = WriteFile(dir_, "haproxy.cfg", config);
    haproxy_ = std::make_unique<Process>(
        kHaproxy, std::vector<std::string>{"-db", "-f", config_path}, dir_ + "/haproxy.log");
    ASSERT_TRUE(WaitFor([&] { return AcceptingConnections(frontend_port_) || !haproxy_->Running(); },
                        absl::Seconds(10)) &&
                haproxy_->Running())
        << haproxy_->Log();
    ASSERT_TRUE(WaitFor([&] { return BothUp(); }, absl::Seconds(10)))
        << HaproxyCommand(socket_path_, "show stat") << haproxy_->Log();
  }

  void TearDown() override {
    haproxy_.reset();  // SIGKILLed
    if (!socket_dir_.empty()) {
      unlink(socket_path_.c_str());
      rmdir(socket_dir_.c_str());
    }
  }

  bool BothUp() const {
    return ServerStatus(socket_path_, "r1") == "UP" && ServerStatus(socket_path_, "r2") == "UP";
  }

  // 2xx responses proxy i has served on its listener since it started.
  int64_t Served(int i) const {
    return proxies_[i]->Stat(absl::StrCat("sluice_listener_requests_total{listener=\"edge-r",
                                          i + 1, "\",status_class=\"2xx\"}"));
  }

  std::string Diagnostics() const {
    std::string out = absl::StrCat("haproxy stats:\n", HaproxyCommand(socket_path_, "show stat"),
                                   "\nhaproxy log:\n", haproxy_->Log());
    for (int i = 0; i < 2; ++i) {
      absl::StrAppend(&out, "\nproxy r", i + 1, " log:\n", proxies_[i]->process().Log());
    }
    return out;
  }

  // SIGTERM, HAProxy takes it out, it exits; started again, HAProxy puts it
  // back and it serves requests.
  void RestartReplica(int i) {
    const std::string server = absl::StrCat("r", i + 1);
    SCOPED_TRACE("restarting proxy " + server);
    proxies_[i]->process().Signal(SIGTERM);
    EXPECT_TRUE(WaitFor([&] { return ServerStatus(socket_path_, server) == "DOWN"; },
                        absl::Seconds(5)))
        << Diagnostics();
    std::optional<int> exited = proxies_[i]->process().Wait(absl::Seconds(10));
    ASSERT_TRUE(exited.has_value()) << Diagnostics();
    EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 0) << *exited;
    ASSERT_TRUE(proxies_[i]->Restart()) << proxies_[i]->process().Log();
    ASSERT_TRUE(proxies_[i]->WaitForVersion(1, absl::Seconds(10)))
        << proxies_[i]->process().Log();
    EXPECT_TRUE(WaitFor([&] { return ServerStatus(socket_path_, server) == "UP"; },
                        absl::Seconds(5)))
        << Diagnostics();
    // Traffic reaches the new process through HAProxy.
    EXPECT_TRUE(WaitFor([&] { return Served(i) > 0; }, absl::Seconds(5))) << Diagnostics();
  }

  std::string dir_ = MakeTempDir("rolling");
  ControlPlane cp_{"", "info"};
  UpstreamServer upstream_{"web-1"};
  int listen_ports_[2] = {0, 0};
  int admin_ports_[2] = {0, 0};
  int frontend_port_ = 0;
  std::unique_ptr<Proxy> proxies_[2];
  std::string socket_dir_;
  std::string socket_path_;
  std::unique_ptr<Process> haproxy_;
};

TEST_F(RollingRestartTest, RestartingOneReplicaAtATimeFailsNoRequest) {
  LoadGenerator::Options options;
  options.host_port = absl::StrCat("127.0.0.1:", frontend_port_);
  options.path = "/drill";
  options.concurrency = 2;
  options.rate_per_thread = 75;  // 150 requests/s in all
  LoadGenerator load(options);
  load.Start();
  ASSERT_TRUE(WaitFor([&] { return Served(0) > 5 && Served(1) > 5; }, absl::Seconds(10)))
      << Diagnostics();

  RestartReplica(0);
  RestartReplica(1);
  // Both replicas carry load again before the load stops.
  int64_t r1 = Served(0);
  int64_t r2 = Served(1);
  EXPECT_TRUE(WaitFor([&] { return Served(0) > r1 && Served(1) > r2; }, absl::Seconds(5)))
      << Diagnostics();
  load.Stop();

  LoadGenerator::Counts counts = load.counts();
  EXPECT_GT(counts.total(), 50u);  // load ran through both restarts
  EXPECT_EQ(counts.failed, 0u) << absl::StrJoin(counts.first_errors, "\n") << "\n"
                               << Diagnostics();
  EXPECT_EQ(counts.ok, counts.total());
  // Whatever HAProxy retried elsewhere is visible in its counters.
  std::vector<std::string> r1_stat = ServerStat(socket_path_, "r1");
  std::vector<std::string> r2_stat = ServerStat(socket_path_, "r2");
  if (!r1_stat.empty() && !r2_stat.empty()) {
    std::printf("requests %llu; haproxy retries r1=%s r2=%s, redispatches r1=%s r2=%s\n",
                static_cast<unsigned long long>(counts.total()), r1_stat[15].c_str(),
                r2_stat[15].c_str(), r1_stat[16].c_str(), r2_stat[16].c_str());
  }
}

// Whether the process's main thread would survive `signal` now: it is
// ignored, blocked or handled (/proc/PID/status), not left to its default
// action, which ends the process.
bool SignalIsSafe(pid_t pid, int signal) {
  const std::string status = ReadFile(absl::StrCat("/proc/", pid, "/status"));
  for (const char* field : {"SigBlk:", "SigIgn:", "SigCgt:"}) {
    const size_t at = status.find(field);
    if (at == std::string::npos) continue;
    uint64_t mask = 0;
    const size_t begin = status.find_first_not_of(" \t", at + std::string_view(field).size());
    const std::string hex = status.substr(begin, status.find('\n', begin) - begin);
    if (absl::SimpleHexAtoi(hex, &mask) && (mask >> (signal - 1) & 1)) return true;
  }
  return false;
}

// A logrotate postrotate `kill -HUP` (or -USR1) that lands on a replica just
// restarted does not stop it: both are ignored or held from the binaries'
// first constructor on, before main. Before, the proxy left them to their
// default action until its main loop set its handlers (its first 20-30 ms,
// after loading its state), and such a signal ended the new replica.
TEST(EarlySignalTest, AReopenSignalDuringStartupStopsNeitherBinary) {
  for (int signal : {SIGHUP, SIGUSR1}) {
    const std::string dir = MakeTempDir("early-signal");
    Process control(RunfilePath("controlplane/server/sluice-control"),
                    {"--listen", "127.0.0.1:0", "--data-dir", dir + "/data"}, dir + "/cp.log");
    Process proxy(RunfilePath("dataplane/server/sluice-proxy"),
                  {"--control-plane", "127.0.0.1:1", "--node-id", "early", "--admin",
                   "127.0.0.1:0", "--state-dir", dir + "/state"},
                  dir + "/proxy.log");
    for (Process* p : {&control, &proxy}) {
      // Signalled at the first moment the signal is safe, polled without
      // pause (the proxy's handlers came a few milliseconds after its
      // first log lines; its protection now comes before any of them).
      const absl::Time deadline = absl::Now() + absl::Seconds(10);
      bool logged_first = false;
      while (!SignalIsSafe(p->pid(), signal) && absl::Now() < deadline && p->Running()) {
        logged_first = logged_first || !p->Log().empty();
      }
      EXPECT_FALSE(logged_first) << signal << ": it logged before " << signal << " was safe";
      if (!p->Running()) {
        FAIL() << signal << ": " << (p == &proxy ? "proxy" : "control")
               << " exited before the signal, status " << p->Wait(absl::ZeroDuration()).value_or(-1)
               << ": " << p->Log();
      }
      ASSERT_TRUE(SignalIsSafe(p->pid(), signal))
          << signal << " " << (p == &proxy ? "proxy" : "control") << " running=" << p->Running()
          << ": " << ReadFile(absl::StrCat("/proc/", p->pid(), "/status")) << p->Log();
      p->Signal(signal);
    }
    EXPECT_TRUE(control.WaitForLogLine("sluice-control listening on ", absl::Seconds(30)))
        << signal << ": " << control.Log();
    EXPECT_TRUE(proxy.WaitForLogLine("admin on 127.0.0.1:", absl::Seconds(30)))
        << signal << ": " << proxy.Log();
    EXPECT_TRUE(control.Running()) << signal;
    EXPECT_TRUE(proxy.Running()) << signal;
  }
}

}  // namespace
}  // namespace sluice::testing
