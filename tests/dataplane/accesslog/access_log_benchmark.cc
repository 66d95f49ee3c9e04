// What formatting and buffering one access log entry costs on a worker
// (not a timed test: run it by hand, built with -c opt).
#include <cstdio>

#include "absl/time/clock.h"
#include "dataplane/accesslog/access_log.h"

int main() {
  using namespace sluice;
  accesslog::SetWorkerCount(1);
  stats::StatsStore store;
  auto log = accesslog::AccessLog::Open("/dev/null", {}, 100, store);
  if (!log.ok()) return 1;
  accesslog::Entry e;
  e.request_id = "8a3c1f0e-7b2d-4a4c-55b8-e3a1f6d2c7e0";
  e.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  e.client_ip = "127.0.0.1";
  e.method = "GET";
  e.authority = "127.0.0.1:18083";
  e.path = "/plain";
  e.protocol = "HTTP/1.1";
  e.status = 200;
  e.bytes_out = 12;
  e.duration = absl::Microseconds(512);
  e.upstream_duration = absl::Microseconds(400);
  e.route = "r0";
  e.cluster = "backend";
  e.endpoint = "127.0.0.1:18080";
  e.attempts = 1;
  e.user_agent = "wrk";
  const int n = 2000000;
  absl::Time start = absl::Now();
  for (int i = 0; i < n; ++i) {
    e.start = absl::Now();
    (*log)->Log(0, e);
  }
  absl::Duration took = absl::Now() - start;
  accesslog::FlushAll();
  std::printf("%.1f ns per entry\n", absl::ToDoubleNanoseconds(took) / n);
  return 0;
}
