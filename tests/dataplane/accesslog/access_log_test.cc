// Access logs: JSON lines with the chosen fields, escaping, reopening after
// a rename (logrotate), and dropping (counted) when a worker's buffer is
// full instead of waiting.
#include "dataplane/accesslog/access_log.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <algorithm>
#include <climits>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/json_string.h"
#include "dataplane/stats/stats.h"

namespace sluice::accesslog {
namespace {

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

Entry Sample() {
  Entry e;
  e.start = absl::FromUnixMillis(1795881600123);  // 2026-11-28T16:00:00.123Z
  e.request_id = "req-1";
  e.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  e.client_ip = "127.0.0.1";
  e.method = "GET";
  e.authority = "api.example";
  e.path = "/users?id=1";
  e.protocol = "HTTP/1.1";
  e.status = 200;
  e.bytes_in = 0;
  e.bytes_out = 12;
  e.duration = absl::Microseconds(1234);
  e.upstream_duration = absl::Microseconds(1000);
  e.route = "users";
  e.cluster = "users";
  e.endpoint = "127.0.0.1:9001";
  e.attempts = 1;
  e.consumer = "alice";
  e.user_agent = "curl/7.88";
  return e;
}

TEST(AccessLogTest, WritesOneJsonObjectPerRequestWithEveryField) {
  SetWorkerCount(2);
  stats::StatsStore store;
  std::string path = TempPath("all.log");
  std::remove(path.c_str());
  auto log = AccessLog::Open(path, {}, 0, store);
  ASSERT_TRUE(log.ok()) << log.status();
  (*log)->Log(0, Sample());
  Entry cut = Sample();
  cut.status = 0;
  cut.upstream_duration = absl::InfiniteDuration();
  cut.response_flag = "client_closed";
  cut.client_ip = "203.0.113.7";  // from X-Forwarded-For, behind a trusted proxy
  cut.peer_ip = "10.0.0.9";
  cut.upstream_failure = "connect failed: TLS handshake: certificate verify failed";
  (*log)->Log(1, cut);
  FlushAll();
  std::vector<std::string> lines = absl::StrSplit(Read(path), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0],
            "{\"time\":\"2026-11-28T16:00:00.123Z\",\"request_id\":\"req-1\","
            "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"client_ip\":\"127.0.0.1\","
            "\"peer_ip\":\"127.0.0.1\",\"method\":\"GET\",\"authority\":\"api.example\",\"path\":\"/users?id=1\","
            "\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes_in\":0,\"bytes_out\":12,"
            "\"duration_ms\":1.234,\"upstream_duration_ms\":1.000,\"route\":\"users\","
            "\"cluster\":\"users\",\"endpoint\":\"127.0.0.1:9001\",\"attempts\":1,"
            "\"consumer\":\"alice\",\"tls_version\":\"\",\"sni\":\"\",\"tls_cipher\":\"\",\"tls_client_subject\":\"\","
            "\"user_agent\":\"curl/7.88\",\"response_flag\":\"\",\"upstream_failure\":\"\","
            "\"grpc_status\":null,\"cache_status\":\"\"}");
  EXPECT_TRUE(absl::StrContains(lines[1], "\"status\":0,")) << lines[1];
  EXPECT_TRUE(absl::StrContains(lines[1], "\"client_ip\":\"203.0.113.7\",\"peer_ip\":\"10.0.0.9\","))
      << lines[1];
  EXPECT_TRUE(absl::StrContains(lines[1], "\"upstream_duration_ms\":null,")) << lines[1];
  EXPECT_TRUE(absl::StrContains(lines[1], "\"response_flag\":\"client_closed\"")) << lines[1];
  EXPECT_TRUE(absl::StrContains(
      lines[1], "\"upstream_failure\":\"connect failed: TLS handshake: certificate verify failed\""))
      << lines[1];
}

TEST(AccessLogTest, ChosenFieldsInTheirOrder) {
  stats::StatsStore store;
  std::string path = TempPath("some.log");
  std::remove(path.c_str());
  auto log = AccessLog::Open(path, {"status", "method", "path"}, 100, store);
  ASSERT_TRUE(log.ok());
  (*log)->Log(0, Sample());
  FlushAll();
  EXPECT_EQ(Read(path), "{\"status\":200,\"method\":\"GET\",\"path\":\"/users?id=1\"}\n");
  EXPECT_FALSE(AccessLog::Open(path, {"nope"}, 100, store).ok());
}

// Userinfo in a refused request's Host or absolute-form target holds a
// password: logged as [redacted] (before: in clear). An origin-form path's
// '@' is no userinfo and stays.
TEST(AccessLogTest, UserinfoIsNeverLogged) {
  stats::StatsStore store;
  std::string path = TempPath("userinfo.log");
  std::remove(path.c_str());
  auto log = AccessLog::Open(path, {"authority", "path"}, 100, store);
  ASSERT_TRUE(log.ok());
  Entry e = Sample();
  e.authority = "u:HOSTSECRET@h:8080";
  e.path = "http://u:PATHSECRET@h/x?a=b@c";
  (*log)->Log(0, e);
  e.authority = "api.example";
  e.path = "/users/@me?to=a@b";
  (*log)->Log(0, e);
  e.path = "https://a@b@h?q";
  (*log)->Log(0, e);
  FlushAll();
  EXPECT_EQ(Read(path),
            "{\"authority\":\"[redacted]@h:8080\",\"path\":\"http://[redacted]@h/x?a=b@c\"}\n"
            "{\"authority\":\"api.example\",\"path\":\"/users/@me?to=a@b\"}\n"
            "{\"authority\":\"api.example\",\"path\":\"https://[redacted]@h?q\"}\n");
}

TEST(AccessLogTest, StringsAreEscapedAndInvalidUtf8Replaced) {
  std::string out;
  common::AppendJsonString(&out, "a\"b\\c\nd\x01 \xc3\xa9 \xff \xe2\x82 \xed\xa0\x80");
  EXPECT_EQ(out, "\"a\\\"b\\\\c\\u000ad\\u0001 \xc3\xa9 \\ufffd \\ufffd\\ufffd \\ufffd\\ufffd\\ufffd\"");
  // Bytes F5..FF start no sequence, even when continuation bytes follow
  // (F8..FF were taken for a 3-byte start and copied raw: the line was no
  // UTF-8 and log pipelines dropped it).
  out.clear();
  common::AppendJsonString(&out, "A\xff\x80\x80" "B\xf8\x88\x80" "C\xf5\xbf\xbf" "D\xf4\x8f\xbf\xbf");
  EXPECT_EQ(out, "\"A\\ufffd\\ufffd\\ufffdB\\ufffd\\ufffd\\ufffdC\\ufffd\\ufffd\\ufffdD\xf4\x8f\xbf\xbf\"");
  // Line ends other than \n that some readers split on are escaped.
  out.clear();
  common::AppendJsonString(&out, "a\xe2\x80\xa8" "b\xe2\x80\xa9" "c\xc2\x85" "d\xe2\x80\xa7");
  EXPECT_EQ(out, "\"a\\u2028b\\u2029c\\u0085d\xe2\x80\xa7\"");
}

TEST(AccessLogTest, ReopenAfterRenameWritesToANewFile) {
  stats::StatsStore store;
  std::string path = TempPath("rotate.log");
  std::remove(path.c_str());
  std::remove((path + ".1").c_str());
  auto log = AccessLog::Open(path, {"request_id"}, 100, store);
  ASSERT_TRUE(log.ok());
  (*log)->Log(0, Sample());
  FlushAll();
  ASSERT_EQ(std::rename(path.c_str(), (path + ".1").c_str()), 0);
  ReopenAll();
  Entry second = Sample();
  second.request_id = "req-2";
  (*log)->Log(0, second);
  FlushAll();
  EXPECT_EQ(Read(path + ".1"), "{\"request_id\":\"req-1\"}\n");
  EXPECT_EQ(Read(path), "{\"request_id\":\"req-2\"}\n");
}

// A write cut short (here by a file size limit, as by a full disk) leaves a
// torn line; the next write that goes through ends it first, so the
// entries after it are lines of their own (before: the next entry was
// glued onto the fragment).
TEST(AccessLogTest, AWriteCutMidLineDoesNotGlueTheNextEntryOntoIt) {
  stats::StatsStore store;
  std::string path = TempPath("torn.log");
  std::remove(path.c_str());
  auto log = AccessLog::Open(path, {"request_id"}, 100, store);
  ASSERT_TRUE(log.ok());
  (*log)->Log(0, Sample());  // {"request_id":"req-1"}\n: 23 bytes
  FlushAll();
  ASSERT_EQ(Read(path).size(), 23u);
  struct rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  void (*old_handler)(int) = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 30;  // 7 bytes of the next line fit
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  Entry torn = Sample();
  torn.request_id = "req-2";
  (*log)->Log(0, torn);
  FlushAll();
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
  std::signal(SIGXFSZ, old_handler);
  ASSERT_EQ(Read(path), "{\"request_id\":\"req-1\"}\n{\"reque");
  Entry next = Sample();
  next.request_id = "req-3";
  (*log)->Log(0, next);
  FlushAll();
  EXPECT_EQ(Read(path), "{\"request_id\":\"req-1\"}\n{\"reque\n{\"request_id\":\"req-3\"}\n");
}

// With an allowed directory (--access-log-dir), only files whose real
// directory is inside it are taken, never through a symbolic link in the
// last component, and only regular files and FIFOs (before: any path the
// proxy could write, so an operator's listener could append to a shell's
// start-up file). Standard output and standard error, by any spelling
// (/dev/stderr is a link), are always taken.
TEST(AccessLogTest, ConfinedToTheAllowedDirectory) {
  stats::StatsStore store;
  const std::string base = TempPath("allowed");
  const std::string logs = base + "/logs";
  const std::string other = base + "/other";
  std::filesystem::remove_all(base);
  std::filesystem::create_directories(logs);
  std::filesystem::create_directories(other);
  std::filesystem::create_symlink(other + "/target.log", logs + "/link.log");
  // Unconfined, a link is followed as before.
  EXPECT_TRUE(AccessLog::Open(logs + "/link.log", {"request_id"}, 100, store).ok());

  SetAllowedDirectory(std::filesystem::canonical(logs).string());
  auto inside = AccessLog::Open(logs + "/a.log", {"request_id"}, 100, store);
  EXPECT_TRUE(inside.ok()) << inside.status();
  std::filesystem::create_symlink(other + "/target2.log", logs + "/link2.log");
  auto link = AccessLog::Open(logs + "/link2.log", {"request_id"}, 100, store);
  ASSERT_FALSE(link.ok());
  EXPECT_TRUE(absl::StrContains(link.status().message(), "it is a symbolic link")) << link.status();
  EXPECT_FALSE(std::filesystem::exists(other + "/target2.log"));
  auto outside = AccessLog::Open(other + "/b.log", {"request_id"}, 100, store);
  ASSERT_FALSE(outside.ok());
  EXPECT_EQ(outside.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(outside.status().message(), "--access-log-dir"))
      << outside.status();
  // A directory link inside that leads out, and "..", are judged by where
  // they lead.
  std::filesystem::create_directory_symlink(other, logs + "/out");
  EXPECT_FALSE(AccessLog::Open(logs + "/out/c.log", {"request_id"}, 100, store).ok());
  EXPECT_FALSE(AccessLog::Open(logs + "/../other/d.log", {"request_id"}, 100, store).ok());
  for (const char* standard : {"-", "/dev/stdout", "/dev/stderr", "/proc/self/fd/2"}) {
    auto opened = AccessLog::Open(standard, {"request_id"}, 100, store);
    EXPECT_TRUE(opened.ok()) << standard << ": " << opened.status();
  }
  SetAllowedDirectory("");
  EXPECT_FALSE(std::filesystem::exists(other + "/b.log"));
  EXPECT_FALSE(std::filesystem::exists(other + "/c.log"));
}

// A 64 KiB user agent, logged alone: an entry of ua.size() + 17 bytes.
const std::string kBigUserAgent(64 * 1024, 'u');
Entry Big() {
  Entry big = Sample();
  big.user_agent = kBigUserAgent;
  return big;
}

// A fresh log of the user agent alone at `name`.
absl::StatusOr<std::shared_ptr<const AccessLog>> UserAgentLog(const std::string& name,
                                                               stats::StatsStore& store,
                                                               std::string* path) {
  *path = TempPath(name);
  std::remove(path->c_str());
  return AccessLog::Open(*path, {"user_agent"}, 100, store);
}

// A destination's counters leave the store with it: a path no listener
// logs to any more, or one that never opened, was listed in /metrics for
// the process's life.
TEST(AccessLogTest, ADestinationsSeriesGoWithIt) {
  stats::StatsStore store;
  store.Prune();
  const size_t before = store.size();
  auto missing = AccessLog::Open(TempPath("no-such-dir") + "/sub/x.log", {}, 100, store);
  ASSERT_FALSE(missing.ok());
  store.Prune();
  EXPECT_EQ(store.size(), before);
  std::string path;
  {
    auto log = UserAgentLog("series.log", store, &path);
    ASSERT_TRUE(log.ok()) << log.status();
    store.Prune();
    EXPECT_EQ(store.size(), before + 2);  // dropped, write errors
  }
  PruneUnused();  // no AccessLog holds it: the destination closes
  store.Prune();
  EXPECT_EQ(store.size(), before);
}

// "-" and "stdout" are one destination (one writer): two on one pipe
// spliced each other's lines.
TEST(AccessLogTest, BothSpellingsOfStandardOutputAreOneDestination) {
  stats::StatsStore store;
  store.Prune();
  const size_t before = store.size();
  auto dash = AccessLog::Open("-", {}, 100, store);
  auto word = AccessLog::Open("stdout", {}, 100, store);
  auto dev = AccessLog::Open("/dev/stdout", {}, 100, store);
  auto proc = AccessLog::Open("/proc/self/fd/1", {}, 100, store);
  auto fd = AccessLog::Open("/dev/fd/1", {}, 100, store);  // the same file, by its inode
  ASSERT_TRUE(fd.ok()) << fd.status();
  ASSERT_TRUE(dash.ok()) << dash.status();
  ASSERT_TRUE(word.ok()) << word.status();
  ASSERT_TRUE(dev.ok()) << dev.status();
  ASSERT_TRUE(proc.ok()) << proc.status();
  store.Prune();
  EXPECT_EQ(store.size(), before + 2);  // one destination's dropped, write errors
}

TEST(AccessLogTest, AFullBufferDropsAndCountsInsteadOfWaiting) {
  stats::StatsStore store;
  std::string path;
  auto log = UserAgentLog("full.log", store, &path);
  ASSERT_TRUE(log.ok());
  const Entry big = Big();
  const std::string& ua = kBigUserAgent;
  // 4 MiB per worker buffer: 100 entries of 64 KiB cannot all fit between
  // two writes unless the writer runs in between; at least, none blocks.
  for (int i = 0; i < 100; ++i) (*log)->Log(0, big);
  FlushAll();
  uint64_t dropped = store.GetCounter("sluice_access_log_dropped_total",
                                      "path=" + stats::LabelValue(path))
                         ->value();
  size_t written = Read(path).size() / (ua.size() + 17);
  EXPECT_EQ(written + dropped, 100u);
}

// An entry larger than the whole 4 MiB buffer is written (before: always
// dropped, so a client that sent 700 KB of bytes escaped 6 to 1 in its
// User-Agent kept its request out of the log).
TEST(AccessLogTest, AnEntryLargerThanTheBufferIsWritten) {
  SetWriteIntervalForTest(absl::Hours(1));  // the small entry waits in the buffer
  stats::StatsStore store;
  std::string path;
  auto log = UserAgentLog("huge.log", store, &path);
  ASSERT_TRUE(log.ok());
  Entry huge = Sample();
  const std::string ua(5 << 20, 'u');
  huge.user_agent = ua;
  // Also behind other entries not yet written (before the fix for this,
  // it went in only alone, so under traffic it was dropped again).
  Entry small = Sample();
  small.user_agent = "small";
  (*log)->Log(0, small);
  (*log)->Log(0, huge);
  FlushAll();
  EXPECT_EQ(store.GetCounter("sluice_access_log_dropped_total", "path=" + stats::LabelValue(path))
                ->value(),
            0u);
  EXPECT_EQ(Read(path), "{\"user_agent\":\"small\"}\n{\"user_agent\":\"" + ua + "\"}\n");
  SetWriteIntervalForTest(absl::Milliseconds(100));
}

// A FIFO whose reader stops reading costs entries, counted as write
// errors, never a writer stuck in write(): a flush, a config change that
// drops the log and the shutdown all wait for the writer (before: blocked
// until the reader went away).
TEST(AccessLogTest, AStalledFifoReaderLosesEntriesButBlocksNothing) {
  stats::StatsStore store;
  const std::string path = TempPath("stalled.fifo");
  std::remove(path.c_str());
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  const int reader = open(path.c_str(), O_RDONLY | O_NONBLOCK);  // never reads
  ASSERT_GE(reader, 0);
  auto log = AccessLog::Open(path, {"user_agent"}, 100, store);
  ASSERT_TRUE(log.ok()) << log.status();
  const Entry big = Big();
  for (int i = 0; i < 8; ++i) (*log)->Log(0, big);  // 512 KiB: over a pipe's 64 KiB
  FlushAll();
  EXPECT_GE(store.GetCounter("sluice_access_log_write_errors_total",
                             "path=" + stats::LabelValue(path))
                ->value(),
            1u);
  close(reader);
}

// Standard error, a log shipper's FIFO or journald's socket is shared with
// other writers: each write there is whole lines within PIPE_BUF, which
// the kernel keeps whole, so no other writer's bytes land inside an entry
// (one 512 KiB write was spliced by the proxy's own log lines on a shared
// pipe). A SOCK_SEQPACKET socket as standard error shows each write.
TEST(AccessLogTest, OnAPipeOrSocketEachWriteIsWholeLinesWithinPipeBuf) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
  const timeval wait{10, 0};
  ASSERT_EQ(setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait)), 0);
  const int saved = dup(2);
  ASSERT_GE(saved, 0);
  ASSERT_EQ(dup2(sv[0], 2), 2);
  constexpr size_t kEntries = 2000;
  std::vector<size_t> sizes;
  size_t lines = 0;
  bool whole = true;
  std::thread reader([&] {
    std::vector<char> buf(1 << 20);
    while (lines < kEntries) {
      const ssize_t n = recv(sv[1], buf.data(), buf.size(), 0);
      if (n <= 0) break;
      sizes.push_back(static_cast<size_t>(n));
      whole = whole && buf[static_cast<size_t>(n) - 1] == '\n';
      lines += static_cast<size_t>(std::count(buf.begin(), buf.begin() + n, '\n'));
    }
  });
  {
    stats::StatsStore store;
    auto log = AccessLog::Open("/dev/stderr", {"user_agent"}, 100, store);
    EXPECT_TRUE(log.ok()) << log.status();
    if (log.ok()) {
      Entry e = Sample();
      const std::string user_agent(300, 'u');  // Entry holds views: the string outlives it
      e.user_agent = user_agent;
      for (size_t i = 0; i < kEntries; ++i) (*log)->Log(0, e);
      FlushAll();
    }
  }
  reader.join();
  dup2(saved, 2);
  close(saved);
  close(sv[0]);
  close(sv[1]);
  EXPECT_EQ(lines, kEntries);
  EXPECT_TRUE(whole);
  EXPECT_GT(sizes.size(), 1u);
  for (size_t size : sizes) EXPECT_LE(size, static_cast<size_t>(PIPE_BUF));
}

// A log that cannot be written (a full disk: /dev/full) counts each failed
// write, and says so in the proxy's own log at most once every 10 s (it
// said every one, 25 lines a second, into a journal or disk as full).
TEST(AccessLogTest, FailedWritesAreSaidOnceInTenSeconds) {
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_NONBLOCK), 0);
  const int saved = dup(2);
  ASSERT_GE(saved, 0);
  ASSERT_EQ(dup2(pipe_fds[1], 2), 2);
  uint64_t errors = 0;
  {
    stats::StatsStore store;
    auto log = AccessLog::Open("/dev/full", {"user_agent"}, 100, store);
    EXPECT_TRUE(log.ok()) << log.status();
    if (log.ok()) {
      for (int i = 0; i < 5; ++i) {
        (*log)->Log(0, Sample());
        FlushAll();
      }
      errors = store.GetCounter("sluice_access_log_write_errors_total",
                                "path=" + stats::LabelValue("/dev/full"))
                   ->value();
    }
  }
  dup2(saved, 2);
  close(saved);
  std::string said;
  char buf[4096];
  for (ssize_t n; (n = read(pipe_fds[0], buf, sizeof(buf))) > 0;) said.append(buf, n);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  EXPECT_EQ(errors, 5u);
  size_t warnings = 0;
  for (size_t at = said.find("write failed"); at != std::string::npos;
       at = said.find("write failed", at + 1)) {
    ++warnings;
  }
  EXPECT_EQ(warnings, 1u) << said;
  EXPECT_TRUE(absl::StrContains(said, "No space left on device")) << said;
}

// A name that reaches one of the proxy's own anonymous pipes, by any
// spelling (here a symbolic link to /proc/self/fd/N), is refused: the
// event loop's signal pipe took each line's newline for a SIGUSR1.
TEST(AccessLogTest, AnAnonymousPipeIsNoLog) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_NONBLOCK), 0);
  const std::string link = TempPath("pipe-link.log");
  std::remove(link.c_str());
  ASSERT_EQ(symlink(("/proc/self/fd/" + std::to_string(fds[1])).c_str(), link.c_str()), 0);
  stats::StatsStore store;
  auto log = AccessLog::Open(link, {"status"}, 100, store);
  EXPECT_FALSE(log.ok());
  EXPECT_TRUE(absl::StrContains(log.status().message(), "an anonymous pipe")) << log.status();
  close(fds[0]);
  close(fds[1]);
  std::remove(link.c_str());
}

// A buffer passing 512 KiB wakes its writer: the 100 ms interval alone
// capped a worker at 40 MiB/s and dropped entries a fast disk could take.
// With an interval of an hour, only the wake can write these in time.
TEST(AccessLogTest, AFillingBufferWakesTheWriterBeforeItsInterval) {
  SetWriteIntervalForTest(absl::Hours(1));
  stats::StatsStore store;
  std::string path;
  auto log = UserAgentLog("wake.log", store, &path);
  ASSERT_TRUE(log.ok());
  const Entry big = Big();
  const std::string& ua = kBigUserAgent;
  for (int i = 0; i < 10; ++i) (*log)->Log(0, big);  // 640 KiB
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (Read(path).size() < 8 * ua.size() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_GE(Read(path).size(), 8 * ua.size());
  SetWriteIntervalForTest(absl::Milliseconds(100));
}

}  // namespace
}  // namespace sluice::accesslog
