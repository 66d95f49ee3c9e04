// A legitimate client next to abusive ones, real processes: 5,000 idle
// connections, 500 clients that send their request heads a byte at a time,
// and a client that pipelines requests and never reads. The legitimate
// client's latency stays low and the proxy's memory bounded; both are
// printed for the record.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

long RssKb(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      long kb = 0;
      std::string digits;
      for (char c : line) {
        if (c >= '0' && c <= '9') digits += c;
      }
      (void)absl::SimpleAtoi(digits, &kb);
      return kb;
    }
  }
  return -1;
}

// A listener on `port` whose every request gets a direct 200.
::testing::AssertionResult ApplyDirectResponse(ControlPlane& cp, int port) {
  std::string path = WriteFile(
      MakeTempDir("direct"), "config.yaml",
      absl::StrCat("kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
                   "      routes:\n        - match: {prefix: /}\n"
                   "          direct_response: {status: 200}\n"
                   "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ",
                   port, ", route_table: main}\n"));
  auto r = cp.Ctl({"apply", "-f", path});
  if (r.exit_code != 0) return ::testing::AssertionFailure() << r.out << r.err;
  return ::testing::AssertionSuccess();
}

TEST(AbuseTest, LegitimateClientKeepsItsLatencyUnderAbuse) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  UpstreamServer upstream("abuse-up");
  ASSERT_TRUE(upstream.ok()) << upstream.process().Log();
  int port = PickFreePort();
  std::string path = MakeTempDir("abuse") + "/config.yaml";
  std::ofstream(path) << absl::StrCat(
      "kind: Cluster\nname: up\nspec:\n  endpoints: [{address: 127.0.0.1, port: ", upstream.port(),
      "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n        - match: {path: /local}\n          direct_response: {status: 404}\n"
      "        - match: {prefix: /}\n          route: {cluster: up}\n"
      "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ",
      port, ", route_table: main, http: {request_headers_timeout: 60s, idle_timeout: 120s}}\n");
  auto r = cp.Ctl({"apply", "-f", path});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Proxy proxy(cp.address(), "abuse-proxy");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  pid_t pid = proxy.process().pid();
  long rss_start = RssKb(pid);

  // 5,000 idle connections.
  std::vector<int> idle;
  for (int i = 0; i < 5000; ++i) {
    int fd = Connect(port);
    ASSERT_GE(fd, 0) << "connection " << i;
    idle.push_back(fd);
  }
  // 500 slow-header clients: a byte at a time, round robin, from one thread.
  std::vector<int> slow;
  for (int i = 0; i < 500; ++i) {
    int fd = Connect(port);
    ASSERT_GE(fd, 0);
    slow.push_back(fd);
  }
  std::atomic<bool> stop{false};
  std::thread slow_thread([&] {
    const std::string head = "GET /slow HTTP/1.1\r\nHost: abuse\r\nX-Padding: " +
                             std::string(2000, 'p') + "\r\n\r\n";
    size_t at = 0;
    while (!stop.load()) {
      for (int fd : slow) (void)send(fd, &head[at % (head.size() - 4)], 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      ++at;
      absl::SleepFor(absl::Milliseconds(20));  // pacing of the abusers
    }
  });
  // A client that pipelines requests as fast as the proxy takes them and
  // never reads the answers.
  int greedy = Connect(port);
  ASSERT_GE(greedy, 0);
  std::thread greedy_thread([&] {
    std::string batch;
    for (int i = 0; i < 100; ++i) batch += "GET /local HTTP/1.1\r\nHost: abuse\r\n\r\n";
    while (!stop.load()) {
      if (send(greedy, batch.data(), batch.size(), MSG_NOSIGNAL | MSG_DONTWAIT) <= 0) {
        pollfd p{greedy, POLLOUT, 0};
        poll(&p, 1, 10);
      }
    }
  });

  // The legitimate client: sequential requests on fresh connections (the
  // expensive case: accept, parse, upstream, close).
  std::string listener = absl::StrCat("127.0.0.1:", port);
  std::vector<double> ms;
  int failures = 0;
  for (int i = 0; i < 1000; ++i) {
    absl::Time start = absl::Now();
    HttpResponse response = HttpGet(listener, "/legit");
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    if (response.status != 200) ++failures;
  }
  long rss_loaded = RssKb(pid);
  stop.store(true);
  slow_thread.join();
  greedy_thread.join();
  for (int fd : idle) close(fd);
  for (int fd : slow) close(fd);
  close(greedy);

  std::sort(ms.begin(), ms.end());
  double p50 = ms[ms.size() / 2], p99 = ms[ms.size() * 99 / 100];
  std::printf("legitimate client: p50 %.2f ms, p99 %.2f ms, %d failures; proxy RSS %ld KiB at "
              "start, %ld KiB with 5000 idle + 500 slow-header + 1 greedy pipelining client\n",
              p50, p99, failures, rss_start, rss_loaded);
  EXPECT_EQ(failures, 0);
  EXPECT_LT(p99, 10.0);
  // Bounded: about 3 KiB per idle connection, buffers capped for the rest.
  EXPECT_LT(rss_loaded - rss_start, 100 * 1024);
}

// A proxy over --max-memory-mb takes no new connection (and would answer
// new requests 503); 1 MiB is under any proxy's RSS.
TEST(AbuseTest, OverloadGuardRefusesNewWorkOverTheMemoryLimit) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  int port = PickFreePort();
  ASSERT_TRUE(ApplyDirectResponse(cp, port));
  Proxy proxy(cp.address(), "overloaded", 1, "", {"--max-memory-mb", "1"});
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  ASSERT_TRUE(WaitFor([&] { return proxy.Stat("sluice_overload_active") == 1; }, absl::Seconds(5)))
      << proxy.Admin("/stats").second;
  HttpResponse response = HttpGet(absl::StrCat("127.0.0.1:", port), "/");
  EXPECT_NE(response.status, 200);
  EXPECT_GE(proxy.Stat("sluice_downstream_connections_rejected_total{reason=\"overload\"}"), 1);
  EXPECT_TRUE(absl::StrContains(proxy.process().Log(), "over --max-memory-mb 1:"));
}

// The overload guard lets go once a burst's memory is freed: the proxy
// hands the allocator's free memory back to the kernel before it counts,
// instead of refusing work for memory nobody uses (both tcmalloc and
// glibc's malloc keep what a burst freed). The burst: connections that
// each leave 14 KiB of an unfinished request head in the proxy.
TEST(AbuseTest, OverloadGuardLetsGoOnceABurstsMemoryIsFreed) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  int port = PickFreePort();
  ASSERT_TRUE(ApplyDirectResponse(cp, port));
  const std::string listener = absl::StrCat("127.0.0.1:", port);
  long baseline_kb = 0;
  {
    Proxy probe(cp.address(), "overload-probe");
    ASSERT_TRUE(probe.ok()) << probe.process().Log();
    ASSERT_TRUE(probe.WaitForVersion(1)) << probe.process().Log();
    ASSERT_EQ(HttpGet(listener, "/").status, 200);
    baseline_kb = RssKb(probe.process().pid());
  }
#if defined(__SANITIZE_ADDRESS__)
  // ASan's shadow of the memory the burst touched stays resident.
  constexpr long kHeadroomMb = 64;
#else
  constexpr long kHeadroomMb = 32;
#endif
  const long limit_mb = baseline_kb / 1024 + kHeadroomMb;
  Proxy proxy(cp.address(), "overload-burst", 1, "",
              {"--max-memory-mb", absl::StrCat(limit_mb)});
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  ASSERT_TRUE(WaitFor([&] { return HttpGet(listener, "/").status == 200; }, absl::Seconds(5)));

  const std::string head =
      "GET / HTTP/1.1\r\nHost: burst\r\nX-Big: " + std::string(14 * 1024, 'a');
  std::vector<int> burst;
  long peak_kb = 0;
  for (int i = 0; i < 4000 && proxy.Stat("sluice_overload_active") != 1; i += 100) {
    for (int j = 0; j < 100; ++j) {
      int fd = Connect(port);
      if (fd < 0) continue;
      (void)send(fd, head.data(), head.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      burst.push_back(fd);
    }
    peak_kb = std::max(peak_kb, RssKb(proxy.process().pid()));
  }
  ASSERT_TRUE(WaitFor([&] { return proxy.Stat("sluice_overload_active") == 1; }, absl::Seconds(5)))
      << "limit " << limit_mb << " MiB, proxy RSS " << RssKb(proxy.process().pid()) << " KiB";
  for (int fd : burst) close(fd);
  EXPECT_TRUE(WaitFor([&] { return proxy.Stat("sluice_overload_active") == 0; },
                      absl::Seconds(15)))
      << "limit " << limit_mb << " MiB, proxy RSS " << RssKb(proxy.process().pid()) << " KiB";
  EXPECT_EQ(HttpGet(listener, "/").status, 200);
  std::printf("overload burst: %zu connections, proxy RSS %ld KiB at start (probe), peak %ld KiB, "
              "%ld KiB after; limit %ld MiB\n",
              burst.size(), baseline_kb, peak_kb, RssKb(proxy.process().pid()), limit_mb);
  EXPECT_TRUE(absl::StrContains(proxy.process().Log(), "is back under --max-memory-mb"));
}

// --max-connections: the proxy-wide limit across listeners and workers.
TEST(AbuseTest, ProxyWideConnectionLimit) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  int port = PickFreePort();
  ASSERT_TRUE(ApplyDirectResponse(cp, port));
  Proxy proxy(cp.address(), "limited", 2, "", {"--max-connections", "3"});
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) held.push_back(Connect(port));
  ASSERT_TRUE(WaitFor([&] { return proxy.Stat("sluice_downstream_connections_active") == 3; },
                      absl::Seconds(5)));
  HttpResponse response = HttpGet(absl::StrCat("127.0.0.1:", port), "/");
  EXPECT_NE(response.status, 200);
  EXPECT_EQ(proxy.Stat("sluice_downstream_connections_rejected_total{reason=\"proxy_limit\"}"), 1);
  for (int fd : held) close(fd);
  EXPECT_TRUE(WaitFor([&] { return HttpGet(absl::StrCat("127.0.0.1:", port), "/").status == 200; },
                      absl::Seconds(5)));
}

}  // namespace
}  // namespace sluice::testing
