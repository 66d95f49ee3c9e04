// A proxy given two control planes (--control-plane A,B) through real
// processes: under steady keep-alive load, the control plane its stream is on
// is killed with SIGKILL. No request fails, the other control plane lists the
// proxy within 2 s, and a change applied there reaches the proxy.
//
// The two sluice-control processes have their own data dirs, so their store
// ids differ: the same config applied to each is version 1 of either store.
// Having been on one, the proxy takes the other's versions as those of a new
// store (the rule for a control plane whose data dir was reset).
#include <signal.h>

#include <gtest/gtest.h>

#include <atomic>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

// Keep-alive GETs in a loop on one connection from its own thread, until
// destroyed; counts what came back. Any thread may read the counts.
class SteadyLoad {
 public:
  explicit SteadyLoad(std::string address) : address_(std::move(address)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~SteadyLoad() {
    stop_.store(true);
    thread_.join();
  }
  int ok() const { return ok_.load(); }
  int failed() const { return failed_.load(); }
  std::string first_failure() {
    absl::MutexLock lock(&mu_);
    return first_failure_;
  }

 private:
  void Run() {
    HttpConnection::Options options;
    options.reconnect = true;  // a failure is counted, then the load goes on
    HttpConnection connection(address_, options);
    while (!stop_.load()) {
      HttpResponse r = connection.Request("GET", "/", {}, "", absl::Seconds(5));
      if (r.ok() && r.status == 200) {
        ok_.fetch_add(1);
        continue;
      }
      failed_.fetch_add(1);
      absl::MutexLock lock(&mu_);
      if (first_failure_.empty()) {
        first_failure_ = absl::StrCat("status ", r.status, ", error \"", r.error, "\"");
      }
    }
  }

  const std::string address_;
  std::atomic<bool> stop_{false};
  std::atomic<int> ok_{0};
  std::atomic<int> failed_{0};
  absl::Mutex mu_;
  std::string first_failure_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// The control plane the proxy's /ready names as connected, "" if none.
std::string ConnectedControlPlane(const Proxy& proxy) {
  auto [status, body] = proxy.Admin("/ready");
  const std::string marker = "; control plane ";
  size_t at = body.find(marker);
  if (status != 200 || at == std::string::npos) return "";
  std::string rest = body.substr(at + marker.size());
  size_t space = rest.find(' ');
  if (space == std::string::npos || rest.substr(space, 12) != " (connected)") return "";
  return rest.substr(0, space);
}

bool Lists(const ControlPlane& cp, const std::string& node_id) {
  CommandResult r = cp.Ctl({"proxies"});
  return r.exit_code == 0 && absl::StrContains(r.out, node_id) &&
         absl::StrContains(r.out, "\n1 proxy;");
}

TEST(ControlPlaneFailoverTest, AKilledReplicaIsReplacedWithinTwoSecondsWithoutAFailedRequest) {
  const std::string dir = MakeTempDir("failover");
  std::vector<std::unique_ptr<ControlPlane>> cps;
  cps.push_back(std::make_unique<ControlPlane>("", "info"));
  cps.push_back(std::make_unique<ControlPlane>("", "info"));
  for (auto& cp : cps) ASSERT_TRUE(cp->ok()) << cp->process().Log();
  UpstreamServer upstream("web");
  ASSERT_TRUE(upstream.ok());
  const int port = PickFreePort();
  const int second_port = PickFreePort();
  ASSERT_GT(port, 0);
  ASSERT_GT(second_port, 0);
  const std::string yaml = absl::StrCat(
      "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
      upstream.port(),
      "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
      "    - domains: ['*']\n      routes: [{match: {prefix: /}, route: {cluster: web}}]\n"
      "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ",
      port, ", route_table: main}\n");
  const std::string config = WriteFile(dir, "config.yaml", yaml);
  // The same config in both stores: version 1 of each.
  for (auto& cp : cps) {
    CommandResult applied = cp->Ctl({"apply", "-f", config});
    ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  }

  Proxy proxy(absl::StrCat(cps[0]->address(), ",", cps[1]->address()), "edge-1", /*workers=*/2,
              "", {"--log-level", "info"});
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  std::string connected;
  ASSERT_TRUE(WaitFor([&] { return !(connected = ConnectedControlPlane(proxy)).empty(); },
                      absl::Seconds(10)))
      << proxy.Admin("/ready").second;
  const int on = connected == cps[0]->address() ? 0 : 1;
  ASSERT_EQ(connected, cps[on]->address());
  ControlPlane& dying = *cps[on];
  ControlPlane& other = *cps[1 - on];
  ASSERT_TRUE(WaitFor([&] { return Lists(dying, "edge-1"); }, absl::Seconds(10)))
      << dying.Ctl({"proxies"}).out;
  EXPECT_FALSE(Lists(other, "edge-1")) << other.Ctl({"proxies"}).out;
  EXPECT_EQ(proxy.Stat(absl::StrCat("sluice_control_plane_connected{address=\"",
                                    dying.address(), "\"}")),
            1);
  EXPECT_EQ(proxy.Stat(absl::StrCat("sluice_control_plane_connected{address=\"",
                                    other.address(), "\"}")),
            0);

  ASSERT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port), "/").status, 200);
  {
    SteadyLoad load(absl::StrCat("127.0.0.1:", port));
    ASSERT_TRUE(WaitFor([&] { return load.ok() >= 50 || load.failed() > 0; },
                        absl::Seconds(10)));
    ASSERT_EQ(load.failed(), 0) << load.first_failure();

    const absl::Time killed = absl::Now();
    dying.Kill();
    const bool moved = WaitFor([&] { return Lists(other, "edge-1"); }, absl::Seconds(2));
    const absl::Duration took = absl::Now() - killed;
    EXPECT_TRUE(moved) << "not listed after " << took << "\n"
                       << other.Ctl({"proxies"}).out << proxy.process().Log();
    std::cerr << "the other control plane listed the proxy " << took << " after the kill\n";
    std::optional<std::string> switched = proxy.process().WaitForLogLine(
        absl::StrCat("trying ", other.address(), " in "), absl::Seconds(1));
    EXPECT_TRUE(switched.has_value()) << proxy.process().Log();
    std::cerr << switched.value_or("") << "\n";
    // Another store (another data dir): said although the version did not
    // go down. Before: logged only for a lower version.
    EXPECT_TRUE(proxy.process()
                    .WaitForLogLine("is not the one that version came from", absl::Seconds(2))
                    .has_value())
        << proxy.process().Log();
    // The control plane lists the stream a moment before the proxy hears it
    // was accepted.
    EXPECT_TRUE(WaitFor([&] { return ConnectedControlPlane(proxy) == other.address(); },
                        absl::Seconds(1)))
        << proxy.Admin("/ready").second;
    EXPECT_TRUE(WaitFor(
        [&] {
          return proxy.Stat(absl::StrCat("sluice_control_plane_connected{address=\"",
                                         other.address(), "\"}")) == 1 &&
                 proxy.Stat(absl::StrCat("sluice_control_plane_connected{address=\"",
                                         dying.address(), "\"}")) == 0;
        },
        absl::Seconds(1)))
        << proxy.Admin("/stats").second;
    // The load goes on over the switch and after it.
    const int before = load.ok();
    EXPECT_TRUE(WaitFor([&] { return load.ok() >= before + 50 || load.failed() > 0; },
                        absl::Seconds(10)));
    EXPECT_EQ(load.failed(), 0) << load.first_failure();
    std::cerr << load.ok() << " requests served, " << load.failed() << " failed\n";
  }

  // A change applied on the other control plane reaches the proxy: its
  // version 2 (of that store), with a second listener that serves.
  const std::string more = WriteFile(
      dir, "more.yaml",
      absl::StrCat(yaml, "---\nkind: Listener\nname: second\nspec: {address: 127.0.0.1, port: ",
                   second_port, ", route_table: main}\n"));
  CommandResult applied = other.Ctl({"apply", "-f", more});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  EXPECT_TRUE(proxy.WaitForVersion(2, absl::Seconds(10))) << proxy.process().Log();
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", second_port), "/").status, 200);
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port), "/").status, 200);
}

}  // namespace
}  // namespace sluice::testing
