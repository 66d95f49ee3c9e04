// Operator tokens through real processes: sluice-control with
// --require-tokens and a bootstrap --admin-token-file, sluicectl with
// --token / $SLUICE_TOKEN, roles, revocation, the audit log, and
// sluice-proxy's admin endpoint behind --admin-token-file.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"

namespace sluice::testing {
namespace {

constexpr char kAdminToken[] = "k8s-secret-admin-token-0123456789";
constexpr char kProxyAdminToken[] = "proxy-admin-token-abcdefghij";

std::string ClusterYaml(int port) {
  return absl::StrCat(
      "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, "
      "port: ",
      port, "}]\n");
}

class TokensTest : public ::testing::Test {
 protected:
  TokensTest()
      : dir_(MakeTempDir("tokens")),
        cp_("", "info",
            {"--require-tokens", "--admin-token-file",
             WriteFile(dir_, "admin-token", absl::StrCat(kAdminToken, "\n"))}) {
  }

  // sluicectl with a token.
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

  std::string dir_;
  ControlPlane cp_;
};

TEST_F(TokensTest, RolesTokensAndAuditThroughSluicectl) {
  ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
  const std::string config = WriteFile(dir_, "cluster.yaml", ClusterYaml(9000));

  // No token: refused, and sluicectl says how to give one.
  CommandResult r = cp_.Ctl({"get"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err, "not authenticated")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--token")) << r.err;
  r = Ctl("slc_made-up", {"get"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err, "not authenticated")) << r.err;
  // A token goes in clear text to loopback only: to another host without
  // --ca it is refused before anything is sent (192.0.2.1 is TEST-NET-1,
  // never reached). Before: sent, then "cannot reach ...".
  r = RunCommand({RunfilePath("controlplane/cli/sluicectl"), "--server", "192.0.2.1:18000",
                  "--token", "slc_made-up", "get"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(
      r.err, "refusing to send the token in clear text to 192.0.2.1:18000: give --ca FILE"))
      << r.err;
  r = RunCommand({RunfilePath("controlplane/cli/sluicectl"), "--server",
                  absl::StrCat("localhost:", cp_.port()), "--token", "slc_made-up", "get"});
  EXPECT_TRUE(absl::StrContains(r.err, "not authenticated")) << r.err;  // loopback: sent

  const std::string viewer = CreateToken("dashboard", "viewer");
  const std::string deployer = CreateToken("ci-deployer", "operator");
  ASSERT_TRUE(absl::StartsWith(viewer, "slc_")) << viewer;
  ASSERT_TRUE(absl::StartsWith(deployer, "slc_")) << deployer;

  // The viewer reads, but cannot apply; the message names the role needed.
  r = Ctl(viewer, {"get"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Ctl(viewer, {"apply", "-f", config});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err,
                                "permission denied: Apply needs the operator "
                                "role; your token 'dashboard' is a viewer"))
      << r.err;

  // The operator applies ($SLUICE_TOKEN this time); the history names the
  // token.
  r = RunCommand({RunfilePath("controlplane/cli/sluicectl"), "--server",
                  cp_.address(), "apply", "-f", config},
                 {absl::StrCat("SLUICE_TOKEN=", deployer)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "applied: version 1")) << r.out;
  r = Ctl(viewer, {"history"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "ci-deployer")) << r.out;
  // A token read from a CRLF file keeps its line end: trimmed (before, gRPC
  // aborted sluicectl on the CR in a header). Another control byte is named.
  r = RunCommand({RunfilePath("controlplane/cli/sluicectl"), "--server", cp_.address(), "history"},
                 {absl::StrCat("SLUICE_TOKEN=", viewer, "\r\n")});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  r = RunCommand({RunfilePath("controlplane/cli/sluicectl"), "--server", cp_.address(), "history"},
                 {absl::StrCat("SLUICE_TOKEN=", viewer.substr(0, 4), "\x01", viewer.substr(4))});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;  // a usage error, as a flag that does not parse
  EXPECT_TRUE(absl::StrContains(r.err, "not printable ASCII at position 5")) << r.err;

  // A delete of several names refused for its token is refused once: the
  // dry run sluicectl makes first was refused, and the delete went after it
  // (two audit lines; regression probe).
  r = Ctl(viewer, {"delete", "cluster", "a", "b"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "permission denied: Delete needs the operator role"))
      << r.err;
  {
    const std::string audit = ReadFile(cp_.data_dir() + "/audit.log");
    size_t refused = 0;
    for (absl::string_view line : absl::StrSplit(audit, '\n')) {
      if (absl::StrContains(line, R"("identity":"dashboard")") &&
          absl::StrContains(line, R"("method":"Delete")")) {
        ++refused;
      }
    }
    EXPECT_EQ(refused, 1u) << audit;
  }

  // A dry run makes no version, and its audit line names none.
  r = Ctl(kAdminToken, {"apply", "-f", WriteFile(dir_, "dry.yaml", ClusterYaml(9001)),
                        "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = Ctl(kAdminToken, {"rollback", "1", "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  // Token management is the admin's.
  r = Ctl(deployer, {"token", "list"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err, "needs the admin role")) << r.err;
  r = Ctl(kAdminToken, {"token", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "dashboard")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "ci-deployer")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, deployer));

  // Revoked: refused from then on.
  r = Ctl(kAdminToken, {"token", "revoke", "ci-deployer"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Ctl(deployer, {"delete", "cluster", "web"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err, "not authenticated")) << r.err;
  r = Ctl(viewer, {"get", "cluster", "web"});
  EXPECT_EQ(r.exit_code, 0) << r.err;  // nothing was deleted

  // The audit log: one JSON line per change and per refusal, with identities.
  const std::string audit = ReadFile(cp_.data_dir() + "/audit.log");
  std::vector<std::string> lines =
      absl::StrSplit(audit, '\n', absl::SkipEmpty());
  auto find = [&](std::vector<std::string> needles) {
    for (const auto& line : lines) {
      bool all = true;
      for (const auto& n : needles) all = all && absl::StrContains(line, n);
      if (all) return true;
    }
    return false;
  };
  EXPECT_TRUE(find({R"("identity":"anonymous")", "UNAUTHENTICATED"})) << audit;
  EXPECT_TRUE(
      find({R"("identity":"bootstrap-admin")", R"("method":"CreateToken")",
            R"("resources":["token/dashboard","role/viewer"])", R"("result":"OK")"}))
      << audit;
  for (const auto& line : lines) {
    if (absl::StrContains(line, R"("dry_run":true)")) {
      EXPECT_FALSE(absl::StrContains(line, R"("version":)")) << line;
    }
  }
  EXPECT_TRUE(find({R"("method":"Apply")", R"("dry_run":true)"})) << audit;
  EXPECT_TRUE(find({R"("method":"Rollback")", R"("dry_run":true)"})) << audit;
  EXPECT_TRUE(find({R"("identity":"dashboard")", R"("method":"Apply")",
                    "PERMISSION_DENIED"}))
      << audit;
  EXPECT_TRUE(find({R"("identity":"ci-deployer")", R"("method":"Apply")",
                    "Cluster/web", R"("version":1)", R"("result":"OK")"}))
      << audit;
  EXPECT_TRUE(find({R"("method":"RevokeToken")", "token/ci-deployer"}))
      << audit;
  EXPECT_TRUE(find({R"("method":"Delete")", "UNAUTHENTICATED"})) << audit;
  EXPECT_FALSE(absl::StrContains(audit, viewer));
  EXPECT_FALSE(absl::StrContains(audit, kAdminToken));
  // Only digests on disk.
  EXPECT_FALSE(
      absl::StrContains(ReadFile(cp_.data_dir() + "/tokens.db"), viewer));
}

// After logrotate moves the audit log, SIGHUP or SIGUSR1 starts a new one
// at the path. Before: either signal killed sluice-control (a postrotate or
// `reload` sent to every Sluice process took the control plane down).
TEST_F(TokensTest, SighupAndSigusr1ReopenTheAuditLogAndNeverStopTheControlPlane) {
  ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
  const std::string audit = cp_.data_dir() + "/audit.log";
  int rotation = 0;
  for (int signal : {SIGHUP, SIGUSR1}) {
    ++rotation;
    ASSERT_EQ(::rename(audit.c_str(), absl::StrCat(audit, ".", rotation).c_str()), 0);
    cp_.process().Signal(signal);
    // A refused call is audited: once the reopen happened, in a new file.
    ASSERT_TRUE(WaitFor(
        [&] {
          Ctl("slc_made-up", {"get"});
          return absl::StrContains(ReadFile(audit), "UNAUTHENTICATED");
        },
        absl::Seconds(10)))
        << "signal " << signal << "\n" << cp_.process().Log();
    CommandResult r = Ctl(kAdminToken, {"get"});
    EXPECT_EQ(r.exit_code, 0) << r.err << cp_.process().Log();
  }
  EXPECT_TRUE(absl::StrContains(cp_.process().Log(), "audit log reopened"));
}

TEST_F(TokensTest, ProxyAdminEndpointNeedsItsTokenExceptForReady) {
  ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
  ASSERT_EQ(Ctl(kAdminToken,
                {"apply", "-f", WriteFile(dir_, "c.yaml", ClusterYaml(9000))})
                .exit_code,
            0);
  Proxy proxy(
      cp_.address(), "token-proxy", 1, "",
      {"--admin-token-file",
       WriteFile(dir_, "proxy-token", absl::StrCat(kProxyAdminToken, "\n"))});
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1))
      << proxy.process().Log();  // /ready stays open

  for (const char* path :
       {"/metrics", "/stats", "/config_dump", "/clusters", "/nope"}) {
    HttpResponse r = HttpGet(proxy.admin_address(), path);
    EXPECT_EQ(r.status, 401) << path << ": " << r.error;
    r = HttpGet(proxy.admin_address(), path,
                {{"authorization", "Bearer wrong-token-value"}});
    EXPECT_EQ(r.status, 401) << path;
  }
  HttpResponse ok =
      HttpGet(proxy.admin_address(), "/metrics",
              {{"authorization", absl::StrCat("Bearer ", kProxyAdminToken)}});
  EXPECT_EQ(ok.status, 200) << ok.error;
  EXPECT_FALSE(ok.body.empty());
  // RFC 6750 2.1 and RFC 9110 11.1: the scheme in any case, 1*SP after it.
  for (const char* spelled : {"bearer ", "BEARER  ", "Bearer\t"}) {
    HttpResponse spelled_ok =
        HttpGet(proxy.admin_address(), "/stats",
                {{"authorization", absl::StrCat(spelled, kProxyAdminToken)}});
    EXPECT_EQ(spelled_ok.status, 200) << spelled;
  }
  // Authorization is a singleton field: with two, neither is taken (the
  // last one counted, which a proxy in front checking the first let by).
  for (const auto& [first, second] :
       {std::pair<std::string, std::string>{"Bearer wrong-token-value",
                                            absl::StrCat("Bearer ", kProxyAdminToken)},
        {absl::StrCat("Bearer ", kProxyAdminToken), "Bearer wrong-token-value"}}) {
    HttpResponse two = HttpGet(proxy.admin_address(), "/metrics",
                               {{"authorization", first}, {"Authorization", second}});
    EXPECT_EQ(two.status, 400) << two.body;
    EXPECT_NE(two.body.find("more than one Authorization field"), std::string::npos)
        << two.body;
  }
  HttpResponse ready = HttpGet(proxy.admin_address(), "/ready");
  EXPECT_EQ(ready.status, 200);
  // /livez too (a liveness probe carries no token). Callers in a loop
  // cannot make a healthy worker look stuck (a ping just posted counted as
  // overdue: 503s).
  for (int i = 0; i < 200; ++i) {
    HttpResponse live = HttpGet(proxy.admin_address(), "/livez");
    ASSERT_EQ(live.status, 200) << i << ": " << live.body;
    ASSERT_EQ(live.body, "alive\n");
  }
  // Read before the token is checked, a request is bounded: a 200 MB body
  // is refused from its head (it was read whole, into memory, then 405),
  // and so is a head over 8 KiB (a 150 MB header was read whole, then 401).
  std::string answer = SendRaw(proxy.admin_address(),
                               "POST /metrics HTTP/1.1\r\nHost: a\r\n"
                               "Content-Length: 209715200\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 413")) << answer;
  answer = SendRaw(proxy.admin_address(),
                   absl::StrCat("GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: ",
                                std::string(16 * 1024, 'a'), "\r\n\r\n"));
  EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 400") ||
              absl::StartsWith(answer, "HTTP/1.1 431"))
      << answer.substr(0, 200);
  // A client still sending a head over 8 KiB when the 431 comes can send
  // the rest and read it: what comes after the answer is read and dropped
  // before the close. Before: closed with unread bytes, so the rest met a
  // reset (curl says "connection reset", never the 431).
  {
    const std::string admin = proxy.admin_address();
    const int fd = ConnectLoopback(std::stoi(admin.substr(admin.rfind(':') + 1)));
    ASSERT_GE(fd, 0);
    timeval bound{10, 0};  // a hang is a failure, not a stuck test
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof(bound));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &bound, sizeof(bound));
    const std::string head = absl::StrCat("GET /ready?", std::string(9000, 'a'));
    ASSERT_EQ(send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
    pollfd readable{fd, POLLIN, 0};
    ASSERT_EQ(poll(&readable, 1, 5000), 1);  // the 431 is here
    const std::string more(16 * 1024, 'b');
    for (int i = 0; i < 16; ++i) {
      ASSERT_EQ(send(fd, more.data(), more.size(), MSG_NOSIGNAL),
                static_cast<ssize_t>(more.size()))
          << i << ": " << strerror(errno);
    }
    shutdown(fd, SHUT_WR);
    std::string got;
    char buffer[4096];
    for (ssize_t n; (n = recv(fd, buffer, sizeof(buffer), 0)) > 0;) got.append(buffer, n);
    close(fd);
    EXPECT_TRUE(absl::StartsWith(got, "HTTP/1.1 431")) << got.substr(0, 200);
  }
  EXPECT_EQ(HttpGet(proxy.admin_address(), "/ready").status, 200);
}

}  // namespace
}  // namespace sluice::testing
