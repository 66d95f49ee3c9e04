// Route tables changed route by route, between the real sluice-control and
// sluice-proxy: a one-route change, a route added and a route removed travel
// as a RouteTablePatch and are served, a new virtual host sends the table
// whole, and a proxy restarted
// from its state dir (holding a table it once patched) gets the next change
// as a patch against what it holds.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"

namespace sluice::testing {
namespace {

constexpr int kRoutes = 300;

// A listener on `port` and a table of kRoutes direct responses: /rI answers
// "vI", except the routes in `changed`, which answer "changed-I", and the
// routes in `removed`, which are left out. With `extra`, one more route
// (/extra) at the end; with `other_host`, a second virtual host (first, for
// other.test).
std::string ConfigYaml(int port, const std::set<int>& changed, bool extra = false,
                       const std::set<int>& removed = {}, bool other_host = false) {
  std::string yaml = absl::StrCat(
      "kind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ", port,
      ", route_table: main}\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n",
      other_host ? "    - name: other\n      domains: [other.test]\n      routes:\n"
                   "        - {match: {prefix: /}, direct_response: {status: 200, body: other}}\n"
                 : "",
      "    - name: all\n      domains: ['*']\n      routes:\n");
  for (int i = 0; i < kRoutes; ++i) {
    if (removed.count(i)) continue;
    absl::StrAppend(&yaml, "        - {name: r", i, ", match: {path: /r", i,
                    "}, direct_response: {status: 200, body: ",
                    changed.count(i) ? "changed-" : "v", i, "}}\n");
  }
  if (extra) {
    absl::StrAppend(&yaml, "        - {name: extra, match: {path: /extra}, "
                           "direct_response: {status: 200, body: extra}}\n");
  }
  return yaml;
}

std::string Write(const std::string& yaml) {
  std::string path = MakeTempDir("patch") + "/config.yaml";
  std::ofstream(path) << yaml;
  return path;
}

std::string Body(int port, const std::string& path) {
  HttpResponse r = HttpGet(absl::StrCat("127.0.0.1:", port), path);
  return r.ok() && r.status == 200 ? r.body : absl::StrCat("error ", r.status, " ", r.error);
}

TEST(RoutePatchTest, RouteChangesTravelAsPatchesAndNewVirtualHostsWhole) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  const int port = PickFreePort();
  auto applied = cp.Ctl({"apply", "-f", Write(ConfigYaml(port, {}))});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  Proxy proxy(cp.address(), "p1");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  EXPECT_EQ(Body(port, "/r7"), "v7");

  // One route changed in place: a patch of one route.
  applied = cp.Ctl({"apply", "-f", Write(ConfigYaml(port, {7}))});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  ASSERT_TRUE(proxy.WaitForVersion(2)) << proxy.process().Log();
  EXPECT_TRUE(proxy.process().WaitForLogLine(
      "applied config version 2 (0 resources changed, 0 removed; "
      "1 route table patched: 1 route replaced, 0 inserted, 0 removed)",
      absl::Seconds(5)))
      << proxy.process().Log();
  EXPECT_EQ(Body(port, "/r7"), "changed-7");
  EXPECT_EQ(Body(port, "/r8"), "v8");
  EXPECT_EQ(Body(port, "/r299"), "v299");

  // Two more, one of them far down the table.
  applied = cp.Ctl({"apply", "-f", Write(ConfigYaml(port, {7, 150, 299}))});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  ASSERT_TRUE(proxy.WaitForVersion(3)) << proxy.process().Log();
  EXPECT_TRUE(proxy.process().WaitForLogLine(
      "applied config version 3 (0 resources changed, 0 removed; "
      "1 route table patched: 2 routes replaced, 0 inserted, 0 removed)",
      absl::Seconds(5)))
      << proxy.process().Log();
  EXPECT_EQ(Body(port, "/r150"), "changed-150");
  EXPECT_EQ(Body(port, "/r299"), "changed-299");
  EXPECT_EQ(Body(port, "/r7"), "changed-7");

  // A route added at the end: a patch of that route.
  applied = cp.Ctl({"apply", "-f", Write(ConfigYaml(port, {7, 150, 299}, /*extra=*/true))});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  ASSERT_TRUE(proxy.WaitForVersion(4)) << proxy.process().Log();
  EXPECT_TRUE(proxy.process().WaitForLogLine(
      "applied config version 4 (0 resources changed, 0 removed; "
      "1 route table patched: 0 routes replaced, 1 inserted, 0 removed)",
      absl::Seconds(5)))
      << proxy.process().Log();
  EXPECT_EQ(Body(port, "/extra"), "extra");
  EXPECT_EQ(Body(port, "/r150"), "changed-150");

  // A route removed from the middle: a patch too; the routes after it
  // (their ids moved) still answer.
  applied = cp.Ctl(
      {"apply", "-f", Write(ConfigYaml(port, {7, 150, 299}, /*extra=*/true, /*removed=*/{100}))});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  ASSERT_TRUE(proxy.WaitForVersion(5)) << proxy.process().Log();
  EXPECT_TRUE(proxy.process().WaitForLogLine(
      "applied config version 5 (0 resources changed, 0 removed; "
      "1 route table patched: 0 routes replaced, 0 inserted, 1 removed)",
      absl::Seconds(5)))
      << proxy.process().Log();
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port), "/r100").status, 404);
  EXPECT_EQ(Body(port, "/r99"), "v99");
  EXPECT_EQ(Body(port, "/r101"), "v101");
  EXPECT_EQ(Body(port, "/r150"), "changed-150");
  EXPECT_EQ(Body(port, "/extra"), "extra");

  // A virtual host added: the table goes whole.
  applied = cp.Ctl({"apply", "-f", Write(ConfigYaml(port, {7, 150, 299}, /*extra=*/true,
                                                    /*removed=*/{100}, /*other_host=*/true))});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  ASSERT_TRUE(proxy.WaitForVersion(6)) << proxy.process().Log();
  EXPECT_TRUE(proxy.process().WaitForLogLine(
      "applied config version 6 (1 resources changed, 0 removed)", absl::Seconds(5)))
      << proxy.process().Log();
  EXPECT_EQ(Body(port, "/r299"), "changed-299");

  // /config_dump shows the patched table as the control plane has it.
  auto [status, dump] = proxy.Admin("/config_dump");
  EXPECT_EQ(status, 200);
  EXPECT_NE(dump.find("changed-299"), std::string::npos);
}

// The table a proxy saved after patching it hashes as the control plane's:
// restarted from its state dir, the proxy is sent the next change as a patch
// against it (not the whole table), and serves it.
TEST(RoutePatchTest, ARestartedProxyIsPatchedAgainstTheTableItSaved) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  const int port = PickFreePort();
  ASSERT_EQ(cp.Ctl({"apply", "-f", Write(ConfigYaml(port, {}))}).exit_code, 0);
  Proxy proxy(cp.address(), "p1");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  ASSERT_EQ(cp.Ctl({"apply", "-f", Write(ConfigYaml(port, {3}))}).exit_code, 0);
  ASSERT_TRUE(proxy.WaitForVersion(2)) << proxy.process().Log();
  ASSERT_TRUE(proxy.process().WaitForLogLine(
      "1 route table patched: 1 route replaced, 0 inserted, 0 removed",
                                             absl::Seconds(5)))
      << proxy.process().Log();

  ASSERT_TRUE(proxy.Stop().has_value());
  ASSERT_EQ(cp.Ctl({"apply", "-f", Write(ConfigYaml(port, {3, 4}))}).exit_code, 0);
  ASSERT_TRUE(proxy.Restart()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(3)) << proxy.process().Log();
  EXPECT_TRUE(proxy.process().WaitForLogLine(
      "applied config version 3 (0 resources changed, 0 removed; "
      "1 route table patched: 1 route replaced, 0 inserted, 0 removed)",
      absl::Seconds(5)))
      << proxy.process().Log();
  EXPECT_EQ(Body(port, "/r3"), "changed-3");
  EXPECT_EQ(Body(port, "/r4"), "changed-4");
  EXPECT_EQ(Body(port, "/r5"), "v5");
}

}  // namespace
}  // namespace sluice::testing
