// The config stream between the real sluice-control and sluice-proxy: its
// bounds (whole config, streams), when a proxy counts as connected, keepalive
// on an idle stream against a stopped control plane, NACKed versions offered
// again, and versions compared within one store.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"

namespace sluice::testing {
namespace {

std::string WriteConfig(const std::string& yaml) {
  std::string path = MakeTempDir("config") + "/config.yaml";
  std::ofstream(path) << yaml;
  return path;
}

// A route table of `routes` direct responses with bodies of `body_bytes`.
std::string BigRouteTableYaml(const std::string& name, int routes, int body_bytes) {
  std::string yaml = absl::StrCat("kind: RouteTable\nname: ", name,
                                  "\nspec:\n  virtual_hosts:\n    - domains: ['", name,
                                  ".test']\n      routes:\n");
  const std::string body(body_bytes, 'x');
  for (int i = 0; i < routes; ++i) {
    absl::StrAppend(&yaml, "        - match: {path: /r", i, "}\n          direct_response: "
                    "{status: 200, body: \"", body, "\"}\n");
  }
  return yaml;
}

std::string ListenerYaml(int port, const std::string& body = "ok") {
  return absl::StrCat(
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n        - match: {prefix: /}\n          direct_response: {status: 200, "
      "body: \"", body, "\"}\n---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ",
      port, ", route_table: main}\n");
}

int Count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

// A listening socket that holds `port` (without SO_REUSEPORT, so a proxy
// cannot bind it too) until closed.
class PortHolder {
 public:
  explicit PortHolder(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    ok_ = bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 && listen(fd_, 8) == 0;
  }
  ~PortHolder() { Close(); }
  bool ok() const { return ok_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  bool ok_ = false;
};

// Before: the proxy logged "connected" on its first response, which a proxy
// of an empty control plane never gets.
TEST(ControlStreamTest, ProxyLogsConnectedAsSoonAsTheStreamIsUp) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  Proxy proxy(cp.address(), "p1");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  EXPECT_TRUE(proxy.process().WaitForLogLine(
      absl::StrCat("connected to control plane ", cp.address(), " (stream established)"),
      absl::Seconds(10)))
      << proxy.process().Log();
  EXPECT_EQ(proxy.ReadyVersion(), 0u);
  cp.Kill();
  EXPECT_TRUE(proxy.process().WaitForLogLine(
      absl::StrCat("config stream to control plane ", cp.address(), " broken"),
      absl::Seconds(10)))
      << proxy.process().Log();
}

// Before: gRPC's default 4 MiB receive limit on the proxy's channel: a config
// over it reached no proxy that connected afterwards, while every apply was
// accepted.
TEST(ControlStreamTest, ANewProxyReceivesAConfigOverGrpcsDefaultMessageLimit) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  // 2 x 40 x 60 KB: about 4.8 MB, in two applies of 2.4 MB each.
  for (const char* name : {"big-1", "big-2"}) {
    auto r = cp.Ctl({"apply", "-f", WriteConfig(BigRouteTableYaml(name, 40, 60000))});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  Proxy proxy(cp.address(), "p1");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  EXPECT_TRUE(proxy.WaitForVersion(2, absl::Seconds(30))) << proxy.process().Log();
  // And sluicectl lists it.
  auto listed = cp.Ctl({"get"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find("version 2"), std::string::npos);
}

TEST(ControlStreamTest, AnApplyThatMakesTheConfigTooLargeIsRefusedWithSizeAndLimit) {
  ControlPlane cp("", "info", {"--max-config-bytes", "100000"});
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteConfig(BigRouteTableYaml("small", 1, 60000))}).exit_code,
            0);
  // Under the limit alone, over it with what is stored.
  auto r = cp.Ctl({"apply", "-f", WriteConfig(BigRouteTableYaml("big", 1, 50000))});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("error: nothing applied:\nthe whole config would be "), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find(" bytes, over the limit of 100000 bytes (a proxy that connects receives "
                       "it in one message; sluice-control --max-config-bytes); nothing changed"),
            std::string::npos)
      << r.err;
  EXPECT_NE(cp.Ctl({"get"}).out.find("version 1"), std::string::npos);
  // Over the limit by itself: refused before it is checked, saying so.
  r = cp.Ctl({"apply", "-f", WriteConfig(BigRouteTableYaml("bigger", 3, 50000))});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("error: nothing applied:\nthe resources of this apply alone are "),
            std::string::npos)
      << r.err;
  EXPECT_NE(cp.Ctl({"get"}).out.find("version 1"), std::string::npos);
  // A limit above what a proxy receives is refused at start.
  auto bad = RunCommand({RunfilePath("controlplane/server/sluice-control"), "--data-dir",
                         MakeTempDir("cp"), "--max-config-bytes", "999999999"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--max-config-bytes must be 1024..33554432"), std::string::npos)
      << bad.err;
}

TEST(ControlStreamTest, StreamsOverTheLimitAreRefusedWithTheReason) {
  ControlPlane cp("", "debug", {"--max-discovery-streams", "1"});
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  Proxy first(cp.address(), "p1");
  ASSERT_TRUE(first.process().WaitForLogLine("connected to control plane", absl::Seconds(10)));
  Proxy second(cp.address(), "p2");
  EXPECT_TRUE(second.process().WaitForLogLine(
      absl::StrCat("control plane ", cp.address(),
                   " refused the config stream (RESOURCE_EXHAUSTED: sluice-control already "
                   "serves 1 discovery streams, its limit (--max-discovery-streams))"),
      absl::Seconds(10)))
      << second.process().Log();
  // The slot frees when the first proxy goes.
  first.Stop();
  EXPECT_TRUE(second.process().WaitForLogLine("connected to control plane", absl::Seconds(20)))
      << second.process().Log();
}

// Before: a NACKed version was never offered again: a proxy that could not
// bind a port for a moment stayed on its old version until the next change.
TEST(ControlStreamTest, ANackedVersionIsTakenOnceThePortIsFree) {
  ControlPlane cp("", "debug", {"--nack-retry", "500ms"});
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  int port = PickFreePort();
  ASSERT_NE(port, 0);
  auto holder = std::make_unique<PortHolder>(port);
  ASSERT_TRUE(holder->ok());
  Proxy proxy(cp.address(), "p1");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  auto applied = cp.Ctl({"apply", "-f", WriteConfig(ListenerYaml(port))});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  ASSERT_TRUE(WaitFor(
      [&] {
        return cp.Ctl({"proxies"}).out.find("v1: Listener \"public\": cannot bind") !=
               std::string::npos;
      },
      absl::Seconds(20)))
      << cp.Ctl({"proxies"}).out;
  EXPECT_EQ(proxy.ReadyVersion(), 0u);
  holder.reset();
  EXPECT_TRUE(proxy.WaitForVersion(1, absl::Seconds(20))) << proxy.process().Log();
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port), "/").body, "ok");
  // The last NACK stays on record next to the version now running.
  auto listed = cp.Ctl({"proxies", "-o", "json"});
  EXPECT_NE(listed.out.find("\"version_applied\":\"1\""), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find("\"last_nack_version\":\"1\""), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find("cannot bind"), std::string::npos) << listed.out;
  // The table marks it as past (it read like a fault still there).
  const std::string table = cp.Ctl({"proxies"}).out;
  EXPECT_NE(table.find("v1 (taken since): Listener \"public\": cannot bind"), std::string::npos)
      << table;
}

// Before: the proxy's gRPC client stopped pinging after two pings without
// data, so a control plane that stopped answering on an idle stream went
// unnoticed until the next change, which never came.
// The state dir is a cache of the control plane's config: a damaged one is
// set aside and the proxy starts, then serves what the control plane sends.
// Before: it refused to start (a crash loop under Kubernetes).
TEST(ControlStreamTest, ADamagedStateFileIsSetAsideAndTheProxyStarts) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  const int port = PickFreePort();
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteConfig(ListenerYaml(port, "from the control plane"))})
                .exit_code,
            0);
  const std::string state_dir = MakeTempDir("damaged-state");
  std::ofstream(state_dir + "/state.db") << "not a state file";
  // A Kubernetes pod name as node id (28 characters).
  const std::string node = "sluice-proxy-7d9f8c6b5-x2x4q";
  Proxy proxy(cp.address(), node, 1, state_dir);
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  // `proxies` widens its columns to the longest node id: the values stay
  // under their headers.
  const std::string table = cp.Ctl({"proxies"}).out;
  const size_t header_group = table.find("GROUP");
  const size_t row = table.find("\n" + node + " ");
  ASSERT_NE(row, std::string::npos) << table;
  EXPECT_EQ(table.find_first_not_of(' ', row + 1 + node.size()) - (row + 1), header_group) << table;
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port), "/").body, "from the control plane");
  EXPECT_TRUE(absl::StrContains(proxy.process().Log(), "is damaged"));
  EXPECT_TRUE(absl::StrContains(proxy.process().Log(), "state.db.damaged"));
  EXPECT_FALSE(absl::StrContains(proxy.process().Log(), "sluice-control will not start"));
  std::ifstream aside(state_dir + "/state.db.damaged");
  std::string kept((std::istreambuf_iterator<char>(aside)), std::istreambuf_iterator<char>());
  EXPECT_EQ(kept, "not a state file");
}

TEST(ControlStreamTest, AnIdleProxyNoticesAStoppedControlPlane) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  int port = PickFreePort();
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteConfig(ListenerYaml(port, "v1"))}).exit_code, 0);
  Proxy proxy(cp.address(), "p1", 1, "",
              {"--control-plane-keepalive", "1s", "--control-plane-keepalive-timeout", "1s"});
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();

  // Idle on purpose (this waits on time, not on a condition): well past the
  // two pings after which gRPC's client stops by default, and past the few
  // after which a server refusing pings without data sends GOAWAY.
  absl::SleepFor(absl::Seconds(10));
  EXPECT_EQ(Count(cp.process().Log(), "proxy p1 connected"), 1) << cp.process().Log();
  EXPECT_EQ(Count(proxy.process().Log(), "connected to control plane"), 1)
      << proxy.process().Log();

  cp.process().Signal(SIGSTOP);
  const std::string broken = absl::StrCat("config stream to control plane ", cp.address(),
                                          " broken (UNAVAILABLE: keepalive watchdog timeout)");
  absl::Time stopped = absl::Now();
  EXPECT_TRUE(proxy.process().WaitForLogLine(broken, absl::Seconds(6))) << proxy.process().Log();
  EXPECT_LE(absl::Now() - stopped, absl::Seconds(4));
  // It keeps trying while the control plane stays stopped, and keeps serving.
  EXPECT_TRUE(proxy.process().WaitForLogLine(
      absl::StrCat("control plane ", cp.address(), " unreachable"), absl::Seconds(20)))
      << proxy.process().Log();
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port), "/").body, "v1");
  EXPECT_EQ(proxy.ReadyVersion(), 1u);

  cp.process().Signal(SIGCONT);
  EXPECT_TRUE(WaitFor(
      [&] { return Count(proxy.process().Log(), "connected to control plane") == 2; },
      absl::Seconds(30)))
      << proxy.process().Log();
  auto applied = cp.Ctl({"apply", "-f", WriteConfig(ListenerYaml(port, "v2"))});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  EXPECT_TRUE(proxy.WaitForVersion(2)) << proxy.process().Log();

  // Killed outright: noticed at once (the socket closes), and the proxy
  // serves on.
  cp.Kill();
  const std::string any_break = broken.substr(0, broken.find(" ("));
  EXPECT_TRUE(
      WaitFor([&] { return Count(proxy.process().Log(), any_break) == 2; }, absl::Seconds(10)))
      << proxy.process().Log();
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port), "/").body, "v2");
}

// Versions compare only within one store: a control plane started on an
// older copy of its data dir does not take proxies back; one started on a
// fresh data dir (a new store) does.
TEST(ControlStreamTest, AProxyGoesBackOnlyToAVersionOfAnotherStore) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  int port = PickFreePort();
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteConfig(ListenerYaml(port, "v1"))}).exit_code, 0);
  const std::string backup = MakeTempDir("backup") + "/state.db";
  std::ofstream(backup, std::ios::binary) << ReadFile(cp.data_dir() + "/state.db");
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteConfig(ListenerYaml(port, "v2"))}).exit_code, 0);
  Proxy proxy(cp.address(), "p1");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(2)) << proxy.process().Log();

  // The same store, restored from the backup: version 1 is refused.
  cp.Kill();
  std::ofstream(cp.data_dir() + "/state.db", std::ios::binary | std::ios::trunc)
      << ReadFile(backup);
  ASSERT_TRUE(cp.Restart()) << cp.process().Log();
  // Right after the restart `proxies` says why the list may be short.
  CommandResult listed = cp.Ctl({"proxies"});
  EXPECT_TRUE(absl::StrContains(listed.err, "proxies that were connected before may not be "
                                            "back yet (within 12s)"))
      << listed.err << listed.out;
  ASSERT_TRUE(WaitFor(
      [&] {
        return cp.Ctl({"proxies"}).out.find(
                   "v1: version 1 is older than version 2, which this proxy runs from the same "
                   "store") != std::string::npos;
      },
      absl::Seconds(20)))
      << cp.Ctl({"proxies"}).out << proxy.process().Log();
  EXPECT_EQ(proxy.ReadyVersion(), 2u);
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port), "/").body, "v2");

  // A reset data dir is a new store. Until something is applied to it the
  // proxy keeps serving (before: it took the empty version 0 and closed
  // every listener); then its version 1 is taken.
  // (The history goes with it: a state missing beside its history refuses
  // the start.)
  cp.Kill();
  ASSERT_EQ(std::remove((cp.data_dir() + "/state.db").c_str()), 0);
  ASSERT_EQ(std::remove((cp.data_dir() + "/history.db").c_str()), 0);
  std::remove((cp.data_dir() + "/history.log").c_str());  // there or not
  ASSERT_TRUE(cp.Restart()) << cp.process().Log();
  ASSERT_TRUE(WaitFor([&] { return cp.Ctl({"proxies"}).out.find("p1") != std::string::npos; },
                      absl::Seconds(20)))
      << cp.Ctl({"proxies"}).out << proxy.process().Log();
  // The stream is up; a version 0 would come now: give it the time to.
  ASSERT_FALSE(WaitFor([&] { return proxy.ReadyVersion() != 2; }, absl::Seconds(1)))
      << proxy.process().Log();
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port), "/").body, "v2");
  EXPECT_FALSE(absl::StrContains(proxy.process().Log(), "applied config version 0"));
  // Not even offered (the proxy would refuse it too).
  EXPECT_FALSE(absl::StrContains(proxy.process().Log(), "rejected config version 0"))
      << proxy.process().Log();
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteConfig(ListenerYaml(port, "new store"))}).exit_code, 0);
  EXPECT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port), "/").body, "new store");
}

// `apply --wait` just after sluice-control restarted: the proxies that were
// connected to it before are not back yet (their reconnect delay grew while
// it was down). The wait covers their longest reconnect delay, so the change
// is seen taken by the proxy. Before: "no proxy is connected", exit 0, while
// the proxy still served the version before.
TEST(ControlStreamTest, AWaitRightAfterARestartWaitsForTheProxiesToComeBack) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  const int port = PickFreePort();
  ASSERT_EQ(cp.Ctl({"apply", "-f", WriteConfig(ListenerYaml(port, "v1"))}).exit_code, 0);
  Proxy proxy(cp.address(), "p1");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  cp.Kill();
  // Down long enough for the proxy's next try to be seconds away.
  auto tries = [&] {
    const std::string log = proxy.process().Log();
    size_t n = 0;
    for (size_t at = log.find(" unreachable ("); at != std::string::npos;
         at = log.find(" unreachable (", at + 1)) {
      ++n;
    }
    return n;
  };
  ASSERT_TRUE(WaitFor([&] { return tries() >= 4; }, absl::Seconds(20))) << proxy.process().Log();
  ASSERT_TRUE(cp.Restart()) << cp.process().Log();
  CommandResult applied =
      cp.Ctl({"apply", "-f", WriteConfig(ListenerYaml(port, "v2")), "--wait"});
  EXPECT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  EXPECT_TRUE(absl::StrContains(applied.out, "version 2: taken by 1 of 1 proxies"))
      << applied.out << applied.err;
  EXPECT_EQ(proxy.ReadyVersion(), 2u);
}

}  // namespace
}  // namespace sluice::testing
