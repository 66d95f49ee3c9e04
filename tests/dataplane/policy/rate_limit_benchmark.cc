// The `rate-limit` policy's cost per request: a filter made, its request
// hook (key, clock, limiter) and its response hook (the headers), for an
// admitted request of a known key, a refused one, a new key each time
// (insertion and eviction at max_keys), and several threads on one key;
// and the limiter alone.
//
//   bazel run -c opt --config=opt //tests/dataplane/policy:rate_limit_benchmark
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "dataplane/auth/consumers.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/rate_limit/gcra_limiter_impl.h"
#include "dataplane/policy/rate_limit/rate_limit_config.pb.h"
#include "dataplane/policy/registry.h"
#include "tests/dataplane/policy/fake_callbacks.h"

namespace sluice::policy::rate_limit {
namespace {

std::shared_ptr<const http::FilterFactory> Compile(const std::string& name, uint64_t requests,
                                                   v1::Limit::Unit per, bool headers,
                                                   v1::RateLimitConfig::KeyPart key) {
  v1::RateLimitConfig config;
  config.set_name(name);
  v1::Limit* limit = config.add_limits();
  limit->set_requests(requests);
  limit->set_per(per);
  config.add_key(key);
  config.set_headers(headers);
  return *FindPolicyFactory("rate-limit")->Compile(config);
}

const auth::Consumer& Alice() {
  static const auth::Consumer* alice = [] {
    auto* c = new auth::Consumer();
    c->name = "alice";
    return c;
  }();
  return *alice;
}

// One request and its response through a fresh filter; `callbacks` and the
// header maps are reused (the proxy's are per stream, not this filter's).
void RunExchange(const http::FilterFactory& factory, testing::FakeCallbacks& callbacks,
                 http::HeaderMap& request, http::HeaderMap& response) {
  auto filter = factory.CreateFilter();
  http::FilterStatus status = filter->OnRequestHeaders(request, callbacks);
  benchmark::DoNotOptimize(status);
  response.Clear();
  response.Add("content-type", "application/json");
  filter->OnResponseHeaders(status == http::FilterStatus::kContinue ? 200 : 429, response,
                            callbacks);
}

void BM_AdmittedKnownKey(benchmark::State& state) {
  // 60M a minute: never refused at benchmark speeds.
  auto factory = Compile(absl::StrCat("bench-admit-", state.range(0)), 60000000, v1::Limit::MINUTE,
                         state.range(0) != 0, v1::RateLimitConfig::CONSUMER);
  testing::FakeCallbacks callbacks;
  callbacks.info_.consumer = &Alice();
  callbacks.info_.client_ip = "192.0.2.1";
  callbacks.info_.route_name = "orders";
  http::HeaderMap request, response;
  for (auto _ : state) RunExchange(*factory, callbacks, request, response);
}
BENCHMARK(BM_AdmittedKnownKey)->Arg(1)->Arg(0)->ArgName("headers");

void BM_RefusedKnownKey(benchmark::State& state) {
  auto factory = Compile("bench-refuse", 1, v1::Limit::DAY, true, v1::RateLimitConfig::CONSUMER);
  testing::FakeCallbacks callbacks;
  callbacks.info_.consumer = &Alice();
  callbacks.info_.route_name = "orders";
  http::HeaderMap request, response;
  RunExchange(*factory, callbacks, request, response);  // spends the day's one
  for (auto _ : state) RunExchange(*factory, callbacks, request, response);
}
BENCHMARK(BM_RefusedKnownKey);

void BM_NewClientIpEachRequest(benchmark::State& state) {
  // Default max_keys (100000): past it, every request inserts and evicts.
  auto factory = Compile("bench-flood", 5, v1::Limit::MINUTE, true, v1::RateLimitConfig::CLIENT_IP);
  testing::FakeCallbacks callbacks;
  callbacks.info_.route_name = "orders";
  http::HeaderMap request, response;
  uint32_t i = 0;
  std::string ip;
  for (auto _ : state) {
    ++i;
    ip = absl::StrCat(10 + (i >> 24), ".", (i >> 16) & 255, ".", (i >> 8) & 255, ".", i & 255);
    callbacks.info_.client_ip = ip;
    RunExchange(*factory, callbacks, request, response);
  }
}
BENCHMARK(BM_NewClientIpEachRequest);

void BM_ThreadsOnOneKey(benchmark::State& state) {
  static std::shared_ptr<const http::FilterFactory> factory;
  if (state.thread_index() == 0) {
    factory =
        Compile("bench-threads", 60000000, v1::Limit::MINUTE, true, v1::RateLimitConfig::CONSUMER);
  }
  testing::FakeCallbacks callbacks;
  callbacks.info_.consumer = &Alice();
  callbacks.info_.route_name = "orders";
  http::HeaderMap request, response;
  for (auto _ : state) RunExchange(*factory, callbacks, request, response);
}
BENCHMARK(BM_ThreadsOnOneKey)->Threads(1)->Threads(2)->UseRealTime();

void BM_LimiterTakeKnownKey(benchmark::State& state) {
  GcraLimiter limiter({{60000000, 60000000000}}, 100000);
  Decision d;
  int64_t now = 1000000000000;
  for (auto _ : state) {
    limiter.Take("orders/alice", now++, &d);
    benchmark::DoNotOptimize(d);
  }
}
BENCHMARK(BM_LimiterTakeKnownKey);

// Heap per tracked key: 100000 keys the size of "route + client IP" keys.
void BM_HeapPerKey(benchmark::State& state) {
  for (auto _ : state) {
    size_t before = mallinfo2().uordblks;
    auto limiter = std::make_unique<GcraLimiter>(std::vector<LimitSpec>{{5, 60000000000}}, 100000);
    Decision d;
    for (uint32_t i = 0; i < 100000; ++i) {
      limiter->Take(absl::StrCat("orders|10.", (i >> 16) & 255, ".", (i >> 8) & 255, ".", i & 255),
                    0, &d);
    }
    size_t after = mallinfo2().uordblks;
    state.counters["bytes_per_key"] =
        static_cast<double>(after - before) / static_cast<double>(limiter->tracked_keys());
  }
}
BENCHMARK(BM_HeapPerKey)->Iterations(1);

}  // namespace
}  // namespace sluice::policy::rate_limit

BENCHMARK_MAIN();
