// Config history through real processes: versions applied with sluicectl
// (author and message), `sluicectl history`, `diff`, `rollback` (a new
// version with the old content, served by a connected proxy) and
// `--if-version` refusing a stale change.
#include <limits.h>
#include <unistd.h>

#include <cstdlib>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"

namespace sluice::testing {
namespace {

class HistoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    port_ = PickFreePort();
  }

  // A listener whose only route answers `body` itself: no upstream needed.
  std::string Config(const std::string& body) {
    return absl::StrCat(
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n      routes:\n"
        "        - match: {prefix: /}\n          direct_response: {status: 200, body: ",
        body, "}\n---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ", port_,
        ", route_table: main}\n");
  }

  CommandResult Apply(const std::string& yaml, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"apply", "-f",
                                     WriteFile(MakeTempDir("history"), "config.yaml", yaml)};
    args.insert(args.end(), extra.begin(), extra.end());
    return cp_.Ctl(args);
  }

  std::string Body() {
    HttpResponse r = HttpGet(absl::StrCat("127.0.0.1:", port_), "/");
    return r.ok() ? r.body : "(error: " + r.error + ")";
  }

  // What sluicectl reports as the author: $USER@hostname.
  static std::string Author() {
    const char* user = std::getenv("USER");
    char host[HOST_NAME_MAX + 1] = {0};
    ::gethostname(host, sizeof(host) - 1);
    return absl::StrCat(user && *user ? user : "unknown", "@", host);
  }

  ControlPlane cp_{"", "info"};
  int port_ = 0;
};

TEST_F(HistoryTest, HistoryDiffRollbackAndAStaleIfVersion) {
  CommandResult r = Apply(Config("one"), {"-m", "first version"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string v1_yaml = cp_.Ctl({"get", "-o", "yaml"}).out;
  Proxy proxy(cp_.address(), "history-proxy");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  EXPECT_EQ(Body(), "one");

  r = Apply(Config("two"), {"-m", "say two\n99  2030-01-01  admin  +0 ~0 -0  forged\x1b[2J"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "applied: version 2")) << r.out;
  ASSERT_TRUE(proxy.WaitForVersion(2)) << proxy.process().Log();
  EXPECT_EQ(Body(), "two");

  // history: newest first, with author, change and message.
  r = cp_.Ctl({"history"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const size_t v2_row = r.out.find("\n2 ");
  const size_t v1_row = r.out.find("\n1 ");
  ASSERT_NE(v2_row, std::string::npos) << r.out;
  ASSERT_NE(v1_row, std::string::npos) << r.out;
  EXPECT_LT(v2_row, v1_row) << r.out;
  std::string v2_line = r.out.substr(v2_row + 1, r.out.find('\n', v2_row + 1) - v2_row - 1);
  EXPECT_TRUE(absl::StrContains(v2_line, Author())) << v2_line;
  EXPECT_TRUE(absl::StrContains(v2_line, "+0 ~1 -0")) << v2_line;
  // The message's line end and escape byte are shown, not obeyed: no
  // forged row, nothing for the terminal.
  EXPECT_TRUE(absl::StrContains(v2_line, "say two\\n99  2030-01-01  admin  +0 ~0 -0  forged\\x1b[2J"))
      << v2_line;
  EXPECT_FALSE(absl::StrContains(r.out, "\n99 ")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "\x1b")) << r.out;
  std::string v1_line = r.out.substr(v1_row + 1, r.out.find('\n', v1_row + 1) - v1_row - 1);
  EXPECT_TRUE(absl::StrContains(v1_line, "+2 ~0 -0")) << v1_line;
  EXPECT_TRUE(absl::StrContains(v1_line, "first version")) << v1_line;
  EXPECT_TRUE(absl::StrContains(v1_line, Author())) << v1_line;
  r = cp_.Ctl({"history", "--limit", "1", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "\"message\":\"say two\\n99")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "first version")) << r.out;

  // diff: the resource and the line that changed.
  r = cp_.Ctl({"diff", "1", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "~ RouteTable \"main\"")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "    - ")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "one")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "    + ")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "two")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "0 added, 1 changed, 0 removed, 1 unchanged")) << r.out;
  // Removed before added, as diff -u and git print them.
  ASSERT_NE(r.out.find("\n    + "), std::string::npos) << r.out;
  EXPECT_LT(r.out.find("\n    - "), r.out.find("\n    + ")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "Listener")) << r.out;
  // A flag the command does not take is refused, not ignored.
  r = cp_.Ctl({"diff", "1", "2", "-o", "json"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "diff does not take -o")) << r.err;
  EXPECT_EQ(r.out, "");

  // rollback 1 --dry-run: stores nothing, and shows the lines that would
  // change, as apply --dry-run does (before: only "~ RouteTable").
  r = cp_.Ctl({"rollback", "1", "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "~ RouteTable \"main\"")) << r.out;
  ASSERT_NE(r.out.find("\n    - "), std::string::npos) << r.out;
  ASSERT_NE(r.out.find("\n    + "), std::string::npos) << r.out;
  EXPECT_LT(r.out.find("two", r.out.find("\n    - ")), r.out.find("\n    + ")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out.substr(r.out.find("\n    + ")), "one")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "dry run: nothing stored")) << r.out;

  // rollback 1: version 3 has version 1's content, and the proxy serves it.
  r = cp_.Ctl({"rollback", "1", "-m", "back to one"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "applied: version 3")) << r.out;
  EXPECT_EQ(cp_.Ctl({"get", "-o", "yaml"}).out, v1_yaml);
  ASSERT_TRUE(proxy.WaitForVersion(3)) << proxy.process().Log();
  EXPECT_EQ(Body(), "one");
  r = cp_.Ctl({"history", "--limit", "1"});
  EXPECT_TRUE(absl::StrContains(r.out, "back to one")) << r.out;

  // A change based on version 2 is refused: the conflict is printed and
  // nothing changes.
  r = Apply(Config("three"), {"--if-version", "2", "-m", "stale"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "conflict")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "the current version is version 3")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, Author())) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "changes since version 2")) << r.out;
  // The operator's message keeps the rollback's target with it.
  EXPECT_TRUE(absl::StrContains(r.out, "rollback to version 1: back to one")) << r.out;
  EXPECT_EQ(cp_.Ctl({"get", "-o", "yaml"}).out, v1_yaml);
  r = cp_.Ctl({"history", "--limit", "1"});
  EXPECT_TRUE(absl::StrContains(r.out, "current version 3")) << r.out;
  EXPECT_EQ(Body(), "one");
  // With the current version it goes through. Its message has a line
  // break and an escape byte: a later conflict shows them escaped, not as
  // lines of their own.
  r = Apply(Config("three"), {"--if-version", "3", "-m", "fix\nerror: FORGED\x1b[31m"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy.WaitForVersion(4)) << proxy.process().Log();
  EXPECT_EQ(Body(), "three");
  r = Apply(Config("three"), {"--if-version", "3"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "fix\\nerror: FORGED\\x1b[31m")) << r.err;
  EXPECT_FALSE(absl::StrContains(r.err, "\nerror: FORGED")) << r.err;
  // A message over 4096 bytes, or not UTF-8, is refused before anything
  // is sent (the server refuses it too).
  r = Apply(Config("four"), {"-m", std::string(4097, 'm')});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "-m: 4097 bytes; at most 4096 are kept")) << r.err;
  r = Apply(Config("four"), {"-m", "caf\xe9"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "-m: not valid UTF-8 (byte 4)")) << r.err;

  // Wrong use is a usage error: exit 2.
  r = cp_.Ctl({"rollback"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "rollback needs the version")) << r.err;
  r = cp_.Ctl({"rollback", "3", "4"});  // before: "needs the version"
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "rollback takes one version: '4' is one argument too many"))
      << r.err;
  // Likewise for the other commands (before: each said an argument was
  // missing).
  r = cp_.Ctl({"diff", "1", "1", "1"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "diff takes V1 and optionally V2: '1' is one argument too "
                                       "many")) << r.err;
  r = cp_.Ctl({"rollout", "status", "extra"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "rollout status: 'extra' is one argument too many"))
      << r.err;
  r = cp_.Ctl({"token", "revoke", "a", "b"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "token revoke takes one NAME: 'b' is one argument too many"))
      << r.err;
  r = cp_.Ctl({"rollback", "abc"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "rollback abc: a version is a number from 1")) << r.err;
  r = cp_.Ctl({"rollback", "0"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "rollback 0: a version is a number from 1")) << r.err;

  // Versions no longer kept cannot come back.
  r = cp_.Ctl({"rollback", "9"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "version 9 is not in the history")) << r.err;
  // Far behind, the conflict lists the newest 20 changes, not all.
  for (int i = 0; i < 21; ++i) {
    ASSERT_EQ(Apply(Config(absl::StrCat("v", i)), {"-m", absl::StrCat("step ", i)}).exit_code, 0);
  }
  r = Apply(Config("stale"), {"--if-version", "3"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "step 20")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "step 0\n")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, " older one")) << r.out;
}

TEST_F(HistoryTest, HistorySurvivesARestartAndHonoursTheRetention) {
  ControlPlane cp("", "info", {"--history", "2"});
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  for (const char* body : {"a", "b", "c"}) {
    auto r = cp.Ctl({"apply", "-f", WriteFile(MakeTempDir("history"), "config.yaml",
                                               Config(body)), "-m", body});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }
  cp.Kill();
  ASSERT_TRUE(cp.Restart()) << cp.process().Log();
  CommandResult r = cp.Ctl({"history"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "\n3 ")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "\n2 ")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "\n1 ")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "up to 2 versions kept")) << r.out;
  r = cp.Ctl({"rollback", "1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "versions 2..3 are kept")) << r.err;
}

// Changes far apart in one resource are separate hunks with "..." between
// them, not run together as if they were neighbours.
TEST_F(HistoryTest, DiffSeparatesHunks) {
  auto table = [&](const std::string& first, const std::string& last) {
    std::string yaml =
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
        "      routes:\n";
    for (int i = 0; i < 12; ++i) {
      absl::StrAppend(&yaml, "        - match: {path: /r", i, "}\n          direct_response: "
                      "{status: 200, body: ", i == 0 ? first : i == 11 ? last : absl::StrCat("b", i),
                      "}\n");
    }
    return yaml;
  };
  ASSERT_EQ(Apply(table("first", "last")).exit_code, 0);
  ASSERT_EQ(Apply(table("FIRST", "LAST")).exit_code, 0);
  CommandResult r = cp_.Ctl({"diff", "1", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const size_t first = r.out.find("body: FIRST");
  // The gap says where the next hunk is.
  const size_t gap = r.out.find(
      "\n    ... in spec: > virtual_hosts: > - domains: > routes: > - match:\n", first);
  const size_t last = r.out.find("body: LAST");
  ASSERT_NE(first, std::string::npos) << r.out;
  ASSERT_NE(gap, std::string::npos) << r.out;
  ASSERT_NE(last, std::string::npos) << r.out;
  EXPECT_LT(first, gap) << r.out;
  EXPECT_LT(gap, last) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "/r5}")) << r.out;  // far from both
}

// A change only to a redacted field (an HS256 key) is a change in the
// diff: the control plane compares the full content, the output stays
// redacted on both sides.
TEST_F(HistoryTest, DiffShowsAChangeOnlyToARedactedKey) {
  auto table = [&](char fill) {
    return absl::StrCat(
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
        "      routes:\n        - match: {prefix: /}\n          direct_response: {status: 200}\n"
        "          policies:\n            - name: jwt\n              typed_config:\n"
        "                algorithms: [HS256]\n                jwks: '{\"keys\": [{\"kty\": \"oct\", "
        "\"k\": \"",
        std::string(43, fill), "\"}]}'\n");
  };
  ASSERT_EQ(Apply(table('A')).exit_code, 0);
  ASSERT_EQ(Apply(table('g')).exit_code, 0);
  CommandResult r = cp_.Ctl({"diff", "1", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "~ RouteTable \"main\"\n    (only redacted fields differ)"))
      << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "0 added, 1 changed, 0 removed")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, std::string(43, 'g'))) << r.out;
  // The current version (diff V1 alone) is compared the same way.
  r = cp_.Ctl({"diff", "1"});
  EXPECT_TRUE(absl::StrContains(r.out, "0 added, 1 changed, 0 removed")) << r.out;
  // Unchanged when both sides are one version.
  r = cp_.Ctl({"diff", "2", "2"});
  EXPECT_TRUE(absl::StrContains(r.out, "0 added, 0 changed, 0 removed")) << r.out;
}

// A write over the process's file-size limit (RLIMIT_FSIZE) fails with
// EFBIG and the change is refused, as on a full disk. Before: SIGXFSZ killed
// the control plane (and sluicectl said the change "may have been applied").
TEST(FileSizeLimitTest, AChangeTheStoreCannotWriteIsRefusedAndTheControlPlaneLives) {
  const std::string dir = MakeTempDir("fsize");
  const int port = PickFreePort();
  const std::string server = absl::StrCat("127.0.0.1:", port);
  // dash counts ulimit -f in 512-byte blocks: 64 KiB.
  Process cp("/bin/sh",
             {"-c", absl::StrCat("ulimit -f 128; exec ",
                                 RunfilePath("controlplane/server/sluice-control"),
                                 " --listen ", server, " --data-dir ", dir,
                                 "/data --log-level warning")},
             dir + "/cp.log");
  auto ctl = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {RunfilePath("controlplane/cli/sluicectl"), "--server",
                                     server};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  };
  ASSERT_TRUE(WaitFor([&] { return ctl({"get"}).exit_code == 0; }, absl::Seconds(30)))
      << cp.Log();
  // `routes` routes answering `body`.
  auto config = [&](int routes, const std::string& body) {
    std::string yaml =
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n      routes:\n";
    for (int i = 0; i < routes; ++i) {
      absl::StrAppend(&yaml, "        - match: {prefix: /r", i,
                      "}\n          direct_response: {status: 200, body: ", body, "}\n");
    }
    return WriteFile(dir, "config.yaml", yaml);
  };
  CommandResult small = ctl({"apply", "-f", config(1, "small")});
  ASSERT_EQ(small.exit_code, 0) << small.out << small.err;
  CommandResult big = ctl({"apply", "-f", config(50, std::string(4000, 'b'))});
  EXPECT_NE(big.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(big.err, "the change was not stored, nothing changed"))
      << big.out << big.err;
  EXPECT_TRUE(absl::StrContains(big.err, "File too large")) << big.err;
  // A definite answer: not "no answer ... may have been applied".
  EXPECT_FALSE(absl::StrContains(big.err, "may have been applied")) << big.err;
  EXPECT_TRUE(cp.Running()) << cp.Log();
  CommandResult get = ctl({"get", "routetable", "main", "-o", "yaml"});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_TRUE(absl::StrContains(get.out, "body: small")) << get.out;
}

}  // namespace
}  // namespace sluice::testing
