// ConfigClient against a real sluice-control process: when the stream counts
// as connected, keepalive on an idle stream (a stopped control plane is
// noticed), versions compared within a store, and cache purges.
#include "dataplane/config/config_client.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "dataplane/cache/purge.h"
#include "tests/harness/process.h"

namespace sluice::config {
namespace {

using testing::ControlPlane;
using testing::MakeTempDir;
using testing::WaitFor;

// What the client handed to the proxy, as the proxy's callbacks saw it.
class Recorder {
 public:
  ConfigClient::ApplyFn Apply() {
    return [this](uint64_t version, const api::ResourceMap& resources,
                  const api::ConfigChange&) {
      absl::MutexLock lock(&mu_);
      applied_.push_back(version);
      return absl::OkStatus();
    };
  }
  ConfigClient::PersistFn Persist() {
    return [this](const controlplane::StoredState& state) {
      absl::MutexLock lock(&mu_);
      persisted_ = state;
    };
  }
  std::vector<uint64_t> applied() {
    absl::MutexLock lock(&mu_);
    return applied_;
  }
  controlplane::StoredState persisted() {
    absl::MutexLock lock(&mu_);
    return persisted_;
  }

 private:
  absl::Mutex mu_;
  std::vector<uint64_t> applied_ ABSL_GUARDED_BY(mu_);
  controlplane::StoredState persisted_ ABSL_GUARDED_BY(mu_);
};

discovery::v1::Node Node(const std::string& id) {
  discovery::v1::Node node;
  node.set_id(id);
  return node;
}

std::string ClusterFile(const std::string& name, int port) {
  std::string path = MakeTempDir("yaml") + "/cluster.yaml";
  std::ofstream(path) << "kind: Cluster\nname: " << name
                      << "\nspec:\n  endpoints: [{address: 127.0.0.1, port: " << port << "}]\n";
  return path;
}

std::string StoreIdOf(const ControlPlane& cp) {
  auto state = controlplane::FileStore::Decode(
      testing::ReadFile(cp.data_dir() + "/state.db"), "state.db");
  EXPECT_TRUE(state.ok()) << state.status();
  return state.ok() ? state->store_id : "";
}

int Count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

// Before: "connected" was set (and logged) on the first response only, and
// a proxy that already runs the current version gets none.
TEST(ConfigClientTest, ConnectedOnceTheStreamIsAcceptedWithoutAnyResponse) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  Recorder recorder;
  ConfigClient client(cp.address(), Node("p1"), {}, recorder.Apply(), recorder.Persist());
  client.Start();
  EXPECT_TRUE(WaitFor([&] { return client.connected(); }, absl::Seconds(10)));
  EXPECT_TRUE(recorder.applied().empty());
  cp.Kill();
  EXPECT_TRUE(WaitFor([&] { return !client.connected(); }, absl::Seconds(10)));
}

// Before: gRPC's client stopped pinging after two pings without data (and
// sluice-control would have answered faster pings with GOAWAY
// too_many_pings), so a control plane that stopped answering went unnoticed
// on an idle stream.
TEST(ConfigClientTest, IdleStreamKeepsPingingAndNoticesAStoppedControlPlane) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ASSERT_EQ(cp.Ctl({"apply", "-f", ClusterFile("users", 9001)}).exit_code, 0);
  Recorder recorder;
  ConfigClientOptions options;
  options.keepalive = absl::Seconds(1);
  options.keepalive_timeout = absl::Seconds(1);
  ASSERT_TRUE(options.Check().ok());
  ConfigClient client(cp.address(), Node("p1"), {}, recorder.Apply(), recorder.Persist(),
                      options);
  client.Start();
  ASSERT_TRUE(WaitFor([&] { return recorder.persisted().version == 1; }, absl::Seconds(10)));

  // The idle stream itself is what is under test, so this waits on time, not
  // on a condition: idle for well past the two pings after which gRPC's
  // client stops by default, and past the few pings after which a server
  // that refuses pings without data sends GOAWAY "too many pings" (about 5 s
  // at this interval); the stream must not have been dropped meanwhile.
  absl::SleepFor(10 * options.keepalive);
  EXPECT_TRUE(client.connected());
  EXPECT_EQ(Count(cp.process().Log(), "proxy p1 connected"), 1) << cp.process().Log();

  cp.process().Signal(SIGSTOP);
  absl::Time stopped = absl::Now();
  // Noticed within one interval plus the timeout (and some scheduling slack).
  EXPECT_TRUE(WaitFor([&] { return !client.connected(); }, absl::Seconds(6)));
  EXPECT_LE(absl::Now() - stopped,
            options.keepalive + options.keepalive_timeout + absl::Seconds(2));
  cp.process().Signal(SIGCONT);
  EXPECT_TRUE(WaitFor([&] { return client.connected(); }, absl::Seconds(20)));
  ASSERT_EQ(cp.Ctl({"apply", "-f", ClusterFile("orders", 9002)}).exit_code, 0);
  EXPECT_TRUE(WaitFor([&] { return recorder.persisted().version == 2; }, absl::Seconds(10)));
  EXPECT_EQ(recorder.persisted().resources.size(), 2u);
}

// Several addresses: whichever one it starts at, the client ends up on the
// one that answers, says so, and leaves it when it dies.
TEST(ConfigClientTest, ADeadAddressInTheListIsPassedOver) {
  ControlPlane dead;
  ASSERT_TRUE(dead.ok()) << dead.process().Log();
  dead.Kill();
  ControlPlane live;
  ASSERT_TRUE(live.ok()) << live.process().Log();
  ASSERT_EQ(live.Ctl({"apply", "-f", ClusterFile("users", 9001)}).exit_code, 0);
  Recorder recorder;
  ConfigClient client(std::vector<std::string>{dead.address(), live.address()}, Node("p1"), {},
                      recorder.Apply(), recorder.Persist());
  absl::Mutex mu;
  std::vector<std::string> events;
  client.SetConnectionObserver([&](const std::string& address, bool connected) {
    absl::MutexLock lock(&mu);
    events.push_back(absl::StrCat(address, connected ? " up" : " down"));
  });
  client.Start();
  // At most one failed attempt (250 ms at most) before the live one.
  ASSERT_TRUE(WaitFor([&] { return recorder.persisted().version == 1; }, absl::Seconds(5)));
  EXPECT_TRUE(client.connected());
  EXPECT_EQ(client.control_plane(), live.address());
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(events, std::vector<std::string>{live.address() + " up"});
  }
  live.Kill();
  EXPECT_TRUE(WaitFor([&] { return !client.connected(); }, absl::Seconds(5)));
  EXPECT_TRUE(WaitFor([&] { return client.control_plane() == dead.address(); },
                      absl::Seconds(5)));
  client.Stop();
  absl::MutexLock lock(&mu);
  EXPECT_EQ(events, (std::vector<std::string>{live.address() + " up", live.address() + " down"}));
}

TEST(ConfigClientTest, KeepaliveOptionsAreChecked) {
  ConfigClientOptions options;
  EXPECT_TRUE(options.Check().ok());
  options.keepalive = absl::Milliseconds(999);
  EXPECT_EQ(options.Check().message(), "keepalive must be 1s..2h, got 999ms");
  options.keepalive = absl::Seconds(10);
  options.keepalive_timeout = absl::ZeroDuration();
  EXPECT_EQ(options.Check().message(), "keepalive timeout must be 1ms..2h, got 0");
}

// Before: a proxy took any version it was sent, so a control plane started
// on an older copy of its data dir took every proxy back.
TEST(ConfigClientTest, ALowerVersionFromTheSameStoreIsRefused) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ASSERT_EQ(cp.Ctl({"apply", "-f", ClusterFile("users", 9001)}).exit_code, 0);
  ASSERT_EQ(cp.Ctl({"apply", "-f", ClusterFile("users", 9002)}).exit_code, 0);
  const std::string store_id = StoreIdOf(cp);
  ASSERT_EQ(store_id.size(), 32u);
  Recorder recorder;
  ConfigClient client(cp.address(), Node("p1"), controlplane::StoredState{5, {}, store_id},
                      recorder.Apply(), recorder.Persist());
  client.Start();
  const std::string nack = absl::StrCat(
      "v2: version 2 is older than version 5, which this proxy runs from the same store (",
      store_id, ")");
  EXPECT_TRUE(WaitFor([&] { return cp.Ctl({"proxies"}).out.find(nack) != std::string::npos; },
                      absl::Seconds(10)))
      << cp.Ctl({"proxies"}).out;
  EXPECT_TRUE(recorder.applied().empty());
}

// A control plane whose data dir was reset is a new store: its versions
// start again, and a proxy takes them.
TEST(ConfigClientTest, ALowerVersionFromAnotherStoreIsTaken) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ASSERT_EQ(cp.Ctl({"apply", "-f", ClusterFile("users", 9001)}).exit_code, 0);
  Recorder recorder;
  api::Resource old;
  old.mutable_cluster()->set_name("old");
  ConfigClient client(cp.address(), Node("p1"),
                      controlplane::StoredState{5, {{api::IdOf(old), old}}, "a-store-now-gone"},
                      recorder.Apply(), recorder.Persist());
  client.Start();
  ASSERT_TRUE(WaitFor([&] { return recorder.persisted().version == 1; }, absl::Seconds(10)));
  controlplane::StoredState held = recorder.persisted();
  EXPECT_EQ(held.store_id, StoreIdOf(cp));
  ASSERT_EQ(held.resources.size(), 1u);
  EXPECT_EQ(held.resources.begin()->first.second, "users");
  EXPECT_EQ(recorder.applied(), std::vector<uint64_t>{1});
}

// A NACK reason longer than sluice-control accepts is cut, on a character
// boundary, rather than costing the stream.
TEST(ConfigClientTest, ALongNackReasonIsCut) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ASSERT_EQ(cp.Ctl({"apply", "-f", ClusterFile("users", 9001)}).exit_code, 0);
  std::string reason;
  while (reason.size() <= api::kMaxNackErrorBytes) reason += "é";
  ConfigClient client(
      cp.address(), Node("p1"), {},
      [&](uint64_t, const api::ResourceMap&, const api::ConfigChange&) {
        return absl::FailedPreconditionError(reason);
      },
      nullptr);
  client.Start();
  ASSERT_TRUE(WaitFor([&] { return cp.Ctl({"proxies"}).out.find("[cut]") != std::string::npos; },
                      absl::Seconds(10)))
      << cp.process().Log();
  EXPECT_TRUE(client.connected());
  EXPECT_EQ(Count(cp.process().Log(), "proxy p1 connected"), 1);
}

// A purge on the stream goes to the cache's handler on the client's thread
// and is confirmed with what it removed; it is neither applied nor ACKed.
TEST(ConfigClientTest, APurgeIsCarriedOutAndConfirmed) {
  ControlPlane cp;
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  // A route named "r" (sluice-control refuses to purge a route no table has).
  std::string routes = ClusterFile("users", 9001);
  std::ofstream(routes, std::ios::app)
      << "---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      << "      routes: [{name: r, match: {prefix: /}, route: {cluster: users}}]\n";
  ASSERT_EQ(cp.Ctl({"apply", "-f", routes}).exit_code, 0);
  absl::Mutex mu;
  std::vector<cache::PurgeSelector> seen;
  cache::SetPurgeHandler([&](const cache::PurgeSelector& selector) -> uint64_t {
    absl::MutexLock lock(&mu);
    seen.push_back(selector);
    return 12;
  });
  Recorder recorder;
  ConfigClient client(cp.address(), Node("p1"), {}, recorder.Apply(),
                      recorder.Persist());
  client.Start();
  ASSERT_TRUE(WaitFor([&] { return recorder.persisted().version == 1; },
                      absl::Seconds(10)));
  testing::CommandResult r = cp.Ctl({"cache", "purge", "--route", "r", "--host",
                                     "Example.com", "--prefix", "/a"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("purged 12 entries on 1 of 1 proxies"),
            std::string::npos)
      << r.out;
  {
    absl::MutexLock lock(&mu);
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].route, "r");
    EXPECT_EQ(seen[0].host, "example.com");  // as cache keys hold hosts
    EXPECT_EQ(seen[0].path, "");
    EXPECT_EQ(seen[0].prefix, "/a");
  }
  EXPECT_EQ(recorder.applied(), std::vector<uint64_t>{1});
  EXPECT_EQ(recorder.persisted().version, 1u);
  client.Stop();
  cache::SetPurgeHandler(nullptr);
}

}  // namespace
}  // namespace sluice::config
