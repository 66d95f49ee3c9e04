// RouteTable::Match on a table of 10,000 routes: exact paths and prefixes over
// four virtual hosts, a few regex routes among them, a catch-all at the end
// of each. Requests are a mix of exact hits, prefix hits, regex hits,
// header-conditioned routes, 405s and 404s. Also the cost of Compile and of
// Recompile (a few routes replaced) on that table and on a 10 x 1000 one.
//
//   route_table_benchmark --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dataplane/router/route_table.h"

namespace sluice::router {
namespace {

constexpr int kRoutesPerVirtualHost = 2500;

config::v1::Route* AddRoute(config::v1::VirtualHost* vhost) {
  config::v1::Route* route = vhost->add_routes();
  route->mutable_route()->set_cluster(
      absl::StrCat(vhost->name(), "-", vhost->routes_size() % 50));
  return route;
}

config::v1::RouteTable BuildTable() {
  config::v1::RouteTable table;
  table.set_name("bench");
  const char* const kVirtualHosts[][2] = {
      {"api", "api.example.com"},
      {"web", "www.example.com"},
      {"internal", "*.internal.example.com"},
      {"default", "*"},
  };
  for (const auto& [name, domain] : kVirtualHosts) {
    config::v1::VirtualHost* vhost = table.add_virtual_hosts();
    vhost->set_name(name);
    vhost->add_domains(domain);
    // Groups of four routes per service: two exact paths (one with methods),
    // a prefix with a header condition, a plain prefix; every 500th group
    // also a regex route.
    for (int i = 0; vhost->routes_size() < kRoutesPerVirtualHost - 1; ++i) {
      std::string base = absl::StrCat("/", name, "/v1/svc", i);
      auto* exact = AddRoute(vhost);
      exact->mutable_match()->set_path(base + "/status");
      auto* exact_get = AddRoute(vhost);
      exact_get->mutable_match()->set_path(base + "/items");
      exact_get->mutable_match()->add_methods("GET");
      exact_get->mutable_match()->add_methods("HEAD");
      auto* canary = AddRoute(vhost);
      canary->mutable_match()->set_prefix(base + "/");
      auto* header = canary->mutable_match()->add_headers();
      header->set_name("x-canary");
      header->set_exact("1");
      auto* prefix = AddRoute(vhost);
      prefix->mutable_match()->set_prefix(base + "/");
      if (i % 125 == 0) {
        auto* regex = AddRoute(vhost);
        regex->mutable_match()->set_regex(
            absl::StrCat("/", name, "/v2/svc", i, "/items/[0-9]+(/details)?"));
      }
    }
    vhost->mutable_routes()->DeleteSubrange(
        kRoutesPerVirtualHost - 1,
        vhost->routes_size() - (kRoutesPerVirtualHost - 1));
    AddRoute(vhost)->mutable_match()->set_prefix("/");
  }
  return table;
}

struct Request {
  std::string host;
  std::string method;
  std::string target;
  std::vector<http::HeaderField> headers;
};

// Request kinds, in the order of the switch below.
constexpr int kRequestKinds = 8;
const char* const kRequestKindNames[kRequestKinds] = {
    "exact", "exact_with_query", "prefix",    "prefix_with_header",
    "regex", "method_fallback",  "catch_all", "catch_all_long"};

std::vector<Request> BuildRequests() {
  static const std::vector<http::HeaderField> kHeaders = {
      {"Host", "x"},           {"User-Agent", "curl/8.0"},
      {"Accept", "*/*"},       {"Content-Type", "application/json"},
      {"X-Request-Id", "abc"}, {"Authorization", "Bearer t"},
  };
  static const std::vector<http::HeaderField> kCanaryHeaders = {
      {"Host", "x"}, {"User-Agent", "curl/8.0"}, {"X-Canary", "1"}};
  std::vector<Request> requests;
  const char* const kHosts[][2] = {{"api", "api.example.com"},
                                   {"web", "WWW.example.com:443"},
                                   {"internal", "db.eu.internal.example.com"},
                                   {"default", "203.0.113.7:8080"}};
  for (int i = 0; i < 64; ++i) {
    const auto& [name, host] = kHosts[i % 4];
    int svc = (i * 37) % 600;
    std::string base = absl::StrCat("/", name, "/v1/svc", svc);
    Request r{host, "GET", "", kHeaders};
    switch (i % kRequestKinds) {
      case 0:
        r.target = base + "/status";
        break;
      case 1:
        r.target = base + "/items?limit=10&offset=20";
        break;
      case 2:
        r.target = base + "/items/123/details";
        break;
      case 3:
        r.target = base + "/items/9";
        r.headers = kCanaryHeaders;
        break;
      case 4:
        r.target =
            absl::StrCat("/", name, "/v2/svc", 125 * (i % 5), "/items/42");
        break;
      case 5:
        r.target = base + "/items";
        r.method = "POST";  // the exact route is GET/HEAD: falls to prefix
        break;
      case 6:
        r.target = "/favicon.ico";
        break;
      case 7:
        r.target = base + "x/unknown/path/with/more/segments";
        break;
    }
    requests.push_back(std::move(r));
  }
  return requests;
}

// Matches every request in turn; with range(0) >= 0, only requests of that
// kind.
void BM_Match(benchmark::State& state) {
  static const auto* const table =
      new absl::StatusOr<std::shared_ptr<const RouteTable>>(
          RouteTable::Compile(BuildTable()));
  if (!table->ok()) {
    state.SkipWithError(std::string(table->status().message()).c_str());
    return;
  }
  static const std::vector<Request>* const requests =
      new std::vector<Request>(BuildRequests());
  std::vector<RouteRequest> route_requests;
  for (size_t k = 0; k < requests->size(); ++k) {
    if (state.range(0) >= 0 &&
        static_cast<int>(k) % kRequestKinds != state.range(0)) {
      continue;
    }
    const Request& r = (*requests)[k];
    route_requests.push_back({r.method, r.host, r.target, &r.headers});
  }
  if (state.range(0) >= 0) state.SetLabel(kRequestKindNames[state.range(0)]);
  const RouteTable& route_table = ***table;
  size_t i = 0;
  for (auto _ : state) {
    MatchResult result = route_table.Match(route_requests[i]);
    benchmark::DoNotOptimize(result);
    if (++i == route_requests.size()) i = 0;
  }
  state.counters["routes"] = route_table.route_count();
}
BENCHMARK(BM_Match)->DenseRange(-1, kRequestKinds - 1);

// 10 virtual hosts of 1000 routes each: exact paths and prefixes, half of
// the prefixes with a method list.
config::v1::RouteTable BuildFlatTable() {
  config::v1::RouteTable table;
  table.set_name("flat");
  for (int v = 0; v < 10; ++v) {
    config::v1::VirtualHost* vhost = table.add_virtual_hosts();
    vhost->set_name(absl::StrCat("vh", v));
    vhost->add_domains(v == 9 ? std::string("*")
                              : absl::StrCat("vh", v, ".example.com"));
    for (int r = 0; r < 1000; ++r) {
      config::v1::Route* route = AddRoute(vhost);
      std::string path = absl::StrCat("/svc", r / 2, "/v1");
      if (r % 2 == 0) {
        route->mutable_match()->set_path(path + "/status");
      } else {
        route->mutable_match()->set_prefix(path + "/");
        if (r % 4 == 1) route->mutable_match()->add_methods("GET");
      }
    }
  }
  return table;
}

// range(0): 0 = BuildTable (4 x 2500 routes), 1 = BuildFlatTable (10 x 1000).
config::v1::RouteTable BenchTable(int64_t which) {
  return which == 0 ? BuildTable() : BuildFlatTable();
}

void BM_Compile(benchmark::State& state) {
  config::v1::RouteTable config = BenchTable(state.range(0));
  for (auto _ : state) {
    auto table = RouteTable::Compile(config);
    benchmark::DoNotOptimize(table);
  }
  state.SetLabel(state.range(0) == 0 ? "4x2500" : "10x1000");
}
BENCHMARK(BM_Compile)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// Recompile of a table with range(1) routes replaced, spread evenly over the
// table: in turn each becomes a regex route with a method, an exact path or a
// prefix (the first, alone when range(1) is 1, a regex: the dearest). Every
// iteration makes a new table from the same previous one and drops it (its
// destruction is counted).
void BM_Recompile(benchmark::State& state) {
  config::v1::RouteTable config = BenchTable(state.range(0));
  auto previous = RouteTable::Compile(config);
  if (!previous.ok()) {
    state.SkipWithError(std::string(previous.status().message()).c_str());
    return;
  }
  const uint32_t total = (*previous)->route_count();
  const uint32_t count = state.range(1);
  std::vector<uint32_t> replaced;
  for (uint32_t i = 0; i < count; ++i) {
    replaced.push_back(total / (2 * count) + i * (total / count));
  }
  uint32_t id = 0;
  size_t next = 0;
  for (auto& vhost : *config.mutable_virtual_hosts()) {
    for (auto& route : *vhost.mutable_routes()) {
      if (next < replaced.size() && replaced[next] == id) {
        auto* match = route.mutable_match();
        switch (next % 3) {
          case 0:
            match->set_regex(absl::StrCat("/replaced/", id, "/[0-9]+"));
            match->add_methods("POST");
            break;
          case 1:
            match->set_path(absl::StrCat("/replaced/", id));
            break;
          case 2:
            match->set_prefix(absl::StrCat("/replaced/", id, "/"));
            break;
        }
        ++next;
      }
      ++id;
    }
  }
  for (auto _ : state) {
    auto table = RouteTable::Recompile(**previous, config, replaced);
    if (!table.ok()) {
      state.SkipWithError(std::string(table.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(table);
  }
  state.SetLabel(state.range(0) == 0 ? "4x2500" : "10x1000");
}
BENCHMARK(BM_Recompile)
    ->Args({0, 1})
    ->Args({1, 1})
    ->Args({0, 16})
    ->Args({1, 256})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace sluice::router

BENCHMARK_MAIN();
