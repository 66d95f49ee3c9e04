// `sluicectl cache purge` through real processes: sluice-control relays the
// purge on the config stream to every connected sluice-proxy and reports who
// confirmed; a proxy that cannot answer is named and the command fails;
// malformed selectors and viewer tokens are refused; the audit log records
// who purged what. (No cache policy is configured: every proxy removes 0
// entries.)
#include <gtest/gtest.h>
#include <signal.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"

namespace sluice::testing {
namespace {

constexpr char kAdminToken[] = "cache-purge-admin-token-0123456789";

class CachePurgeTest : public ::testing::Test {
 protected:
  CachePurgeTest()
      : dir_(MakeTempDir("cache_purge")),
        cp_("", "debug",
            {"--require-tokens", "--admin-token-file",
             WriteFile(dir_, "admin-token", absl::StrCat(kAdminToken, "\n"))}) {
  }

  CommandResult Ctl(const std::string& token, std::vector<std::string> args) {
    args.insert(args.begin(), {"--token", token});
    return cp_.Ctl(args);
  }

  std::string CreateToken(const std::string& name, const std::string& role) {
    CommandResult r =
        Ctl(kAdminToken, {"token", "create", name, "--role", role});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return std::string(absl::StripAsciiWhitespace(r.out));
  }

  // Waits until sluice-control lists `n` proxies.
  bool WaitForProxies(int n) {
    const std::string listed = absl::StrCat("\n", n, n == 1 ? " proxy;" : " proxies;");
    return WaitFor(
        [&] {
          return absl::StrContains("\n" + Ctl(kAdminToken, {"proxies"}).out,
                                   listed);
        },
        absl::Seconds(20));
  }

  std::string dir_;
  ControlPlane cp_;
};

TEST_F(CachePurgeTest, RelayedToEveryProxyAndConfirmed) {
  ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
  Proxy p1(cp_.address(), "p1");
  Proxy p2(cp_.address(), "p2");
  ASSERT_TRUE(p1.ok() && p2.ok()) << p1.process().Log() << p2.process().Log();
  for (Proxy* p : {&p1, &p2}) {
    ASSERT_TRUE(p->process().WaitForLogLine("connected to control plane",
                                            absl::Seconds(20)))
        << p->process().Log();
  }
  const std::string operator_token = CreateToken("cache-operator", "operator");
  // A route named "r" to purge (the cluster as cluster.yaml below has it).
  CommandResult r = Ctl(operator_token, {"apply", "-f",
                                         WriteFile(dir_, "routes.yaml",
                                                   "kind: Cluster\nname: web\nspec:\n  "
                                                   "endpoints: [{address: 127.0.0.1, "
                                                   "port: 9000}]\n---\n"
                                                   "kind: RouteTable\nname: main\nspec:\n"
                                                   "  virtual_hosts:\n    - domains: ['*']\n"
                                                   "      routes: [{name: r, match: {prefix: /}, "
                                                   "route: {cluster: web}}]\n")});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // A route no table has: refused, nothing sent (it said "purged 0").
  r = Ctl(operator_token, {"cache", "purge", "--route", "nosuch"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "no route is named \"nosuch\"")) << r.err;
  // An unnamed route goes by vhost/index.
  r = Ctl(operator_token, {"cache", "purge", "--route", "0/1"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;

  r = Ctl(operator_token, {"cache", "purge", "--route", "r", "--prefix", "/a"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "purged 0 entries on 2 of 2 proxies"))
      << r.out << r.err;
  // Each proxy got the selector as given.
  for (Proxy* p : {&p1, &p2}) {
    EXPECT_TRUE(p->process().WaitForLogLine(
        "(route \"r\", host \"\", path \"\", prefix \"/a\"): 0 entries removed",
        absl::Seconds(5)))
        << p->process().Log();
  }

  // The selector is taken as a request's Host and path are, as cache keys
  // hold them (before: compared as typed, and "purged 0" while the entry
  // stayed).
  r = Ctl(operator_token, {"cache", "purge", "--host", "Example.COM.:8080", "--path",
                           "/c%c3%a9/../x%63?q=1"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(p1.process().WaitForLogLine(
      "(route \"\", host \"example.com\", path \"/xc?q=1\", prefix \"\")", absl::Seconds(5)))
      << p1.process().Log();
  r = Ctl(operator_token, {"cache", "purge", "--host", "[::1]:80", "--prefix", "/a/%7euser/./b"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(p1.process().WaitForLogLine(
      "(route \"\", host \"[::1]\", path \"\", prefix \"/a/~user/b\")", absl::Seconds(5)))
      << p1.process().Log();

  // Only the proxies of a node group (the harness puts them in "test").
  // A group no connected proxy is in is refused (it said "purged 0 entries
  // on 0 of 0 proxies", exit 0: a typo looked done).
  r = Ctl(operator_token, {"cache", "purge", "--group", "elsewhere"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "error: no connected proxy is in group \"elsewhere\""))
      << r.err;
  EXPECT_EQ(r.err.find("nothing purged"), r.err.rfind("nothing purged")) << r.err;  // once
  r = Ctl(operator_token,
          {"cache", "purge", "--group", "test", "--path", "/a?x=1"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "on 2 of 2 proxies")) << r.out;

  // A proxy that cannot answer (stopped: its stream stays up) is named once
  // the timeout passes, and the command fails.
  p2.process().Signal(SIGSTOP);
  r = Ctl(operator_token,
          {"cache", "purge", "--prefix", "/a", "--timeout", "1s"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "purged 0 entries on 1 of 2 proxies"))
      << r.out;
  EXPECT_TRUE(
      absl::StrContains(r.out, "not confirmed: p2: no answer within 1s"))
      << r.out;
  EXPECT_TRUE(
      absl::StrContains(r.err, "1 of 2 proxies did not confirm the purge"))
      << r.err;
  EXPECT_FALSE(absl::StrContains(r.out, "p1:")) << r.out;

  // Once it runs again its late answer is dropped and the next purge is
  // confirmed by both; the config stream was not disturbed.
  p2.process().Signal(SIGCONT);
  r = Ctl(operator_token, {"cache", "purge", "--prefix", "/a"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "on 2 of 2 proxies")) << r.out;
  EXPECT_FALSE(absl::StrContains(p2.process().Log(), "rejected config"))
      << p2.process().Log();
  EXPECT_FALSE(
      absl::StrContains(p2.process().Log(), "config stream to control plane"))
      << p2.process().Log();

  // Config still flows to both after the purges.
  r = Ctl(operator_token, {"apply", "-f",
                           WriteFile(dir_, "cluster.yaml",
                                     "kind: Cluster\nname: web\nspec:\n  "
                                     "endpoints: [{address: 127.0.0.1, "
                                     "port: 9000}]\n")});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(p1.WaitForVersion(1)) << p1.process().Log();
  EXPECT_TRUE(p2.WaitForVersion(1)) << p2.process().Log();

  // A killed proxy leaves the fleet: it is no longer targeted.
  p2.process().Signal(SIGKILL);
  ASSERT_TRUE(WaitForProxies(1)) << Ctl(kAdminToken, {"proxies"}).out;
  r = Ctl(operator_token, {"cache", "purge", "--host", "example.com"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "on 1 of 1 proxies")) << r.out;

  // The audit log names who purged what.
  const std::string audit = ReadFile(cp_.data_dir() + "/audit.log");
  EXPECT_TRUE(
      absl::StrContains(audit, R"("identity":"cache-operator","peer":)"))
      << audit;
  EXPECT_TRUE(absl::StrContains(
      audit,
      R"("method":"PurgeCache","resources":["cache/route=r","cache/prefix=/a"],"result":"OK")"))
      << audit;
  EXPECT_TRUE(absl::StrContains(audit, R"(["cache/*","group/elsewhere"])"))
      << audit;
}

TEST_F(CachePurgeTest, BadSelectorsAndViewerTokensAreRefused) {
  ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
  Proxy p1(cp_.address(), "p1");
  ASSERT_TRUE(p1.ok()) << p1.process().Log();
  ASSERT_TRUE(p1.process().WaitForLogLine("connected to control plane",
                                          absl::Seconds(20)))
      << p1.process().Log();
  const std::string operator_token = CreateToken("cache-operator", "operator");
  const std::string viewer_token = CreateToken("dashboard", "viewer");

  // Flags the server would refuse are usage errors, said by sluicectl
  // itself (exit 2; before: exit 1, and only with a server to ask).
  CommandResult r =
      Ctl(operator_token, {"cache", "purge", "--path", "/a", "--prefix", "/b"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "--path and --prefix are exclusive")) << r.err;
  r = Ctl(operator_token, {"cache", "purge", "--prefix", "images/"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "--prefix images/: must start with '/'")) << r.err;
  r = Ctl(operator_token, {"cache", "purge", "--path", "a"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "--path a: must start with '/'")) << r.err;
  // An empty selector (an unset variable) narrows nothing: it purged every
  // entry of every proxy.
  for (const char* flag : {"--path", "--prefix", "--host", "--route", "--group"}) {
    r = Ctl(operator_token, {"cache", "purge", flag, ""});
    EXPECT_EQ(r.exit_code, 2) << flag;
    EXPECT_TRUE(absl::StrContains(r.err, absl::StrCat(flag, " is empty (an unset variable?)")))
        << r.err;
  }
  r = Ctl(operator_token, {"token", "create", "x", "--role", "root"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "--role root: expected viewer, operator or admin"))
      << r.err;
  r = Ctl(operator_token, {"--ca", "/no/such/ca.pem", "get"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "--ca /no/such/ca.pem")) << r.err;
  // A PEM file of the wrong kind (before: gRPC's own error, then "cannot
  // reach sluice-control", exit 1).
  const std::string key = WriteFile(dir_, "key.pem",
                                    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
  const std::string cert = WriteFile(dir_, "cert.pem",
                                     "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
  r = Ctl(operator_token, {"--ca", key, "get"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "holds no certificate")) << r.err;
  r = Ctl(operator_token, {"--ca", cert, "--cert", cert, "--key", cert, "get"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "--key " + cert + ": holds no private key")) << r.err;
  r = Ctl(operator_token, {"cache", "purge", "--timeout", "2m"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(
      absl::StrContains(r.err, "--timeout 2m: expected a duration of 1ms..60s"))
      << r.err;
  r = Ctl(operator_token, {"cache", "flush"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err, "cache needs purge")) << r.err;

  r = Ctl(viewer_token, {"cache", "purge", "--prefix", "/a"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(
      r.err,
      "permission denied: PurgeCache needs the operator role; your "
      "token 'dashboard' is a viewer"))
      << r.err;
  // Nothing reached the proxy.
  EXPECT_FALSE(absl::StrContains(p1.process().Log(), "cache purge"))
      << p1.process().Log();

  const std::string audit = ReadFile(cp_.data_dir() + "/audit.log");
  EXPECT_TRUE(absl::StrContains(audit, R"("identity":"dashboard")")) << audit;
  EXPECT_TRUE(absl::StrContains(
      audit, "PERMISSION_DENIED: PurgeCache needs the operator role"))
      << audit;
}

}  // namespace
}  // namespace sluice::testing
