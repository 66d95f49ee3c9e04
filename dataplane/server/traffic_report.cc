#include "dataplane/server/traffic_report.h"

#include <algorithm>
#include <vector>

namespace sluice::server {

double TrafficReporter::QuantileMs(
    const std::array<uint64_t, stats::Histogram::kFinite + 1>& buckets, double q) {
  uint64_t total = 0;
  for (uint64_t n : buckets) total += n;
  if (total == 0) return 0;
  double rank = q * static_cast<double>(total);
  uint64_t below = 0;
  for (int b = 0; b <= stats::Histogram::kFinite; ++b) {
    if (buckets[b] == 0 || static_cast<double>(below + buckets[b]) < rank) {
      below += buckets[b];
      continue;
    }
    // Linear within the bucket; the +Inf bucket reads as its lower bound.
    double lower = b == 0 ? 0 : static_cast<double>(stats::Histogram::kBoundsMicros[b - 1]);
    double upper = b == stats::Histogram::kFinite
                       ? lower
                       : static_cast<double>(stats::Histogram::kBoundsMicros[b]);
    double within = (rank - static_cast<double>(below)) / static_cast<double>(buckets[b]);
    return (lower + (upper - lower) * std::clamp(within, 0.0, 1.0)) / 1000.0;
  }
  return static_cast<double>(stats::Histogram::kBoundsMicros[stats::Histogram::kFinite - 1]) /
         1000.0;
}

discovery::v1::TrafficReport TrafficReporter::Make(absl::Time now) {
  discovery::v1::TrafficReport report;
  std::shared_ptr<const config::ConfigSnapshot> snapshot = current_();
  if (active_connections_ != nullptr) {
    report.set_active_connections(active_connections_->value());
  }
  const bool first = !started_;
  started_ = true;
  absl::Duration interval = first ? absl::ZeroDuration() : now - last_time_;
  last_time_ = now;
  if (snapshot == nullptr) {
    // No config yet, so no traffic: the report still covers its interval
    // (the fleet view shows the proxy reporting, with nothing served).
    report.set_interval_ms(static_cast<uint64_t>(absl::ToInt64Milliseconds(interval)));
    return report;
  }
  const uint64_t version = snapshot->version;
  report.set_config_version(first || version == interval_version_ ? version : 0);
  interval_version_ = version;
  std::map<RouteKey, RouteTotals> totals;
  for (const auto& [table_name, list] : snapshot->route_stats) {
    const config::RouteStatsList& stats = *list;
    auto table = snapshot->route_tables.find(table_name);
    if (table == snapshot->route_tables.end()) continue;
    for (uint32_t i = 0; i < stats.size() && i < table->second->route_count(); ++i) {
      // A route that never answered has nothing to report now or as a base
      // later (its counters only grow): skipped, so a report costs the
      // routes with traffic, not all of a 10,000-route table.
      uint64_t answered = 0;
      for (int c = 1; c <= 5; ++c) {
        if (stats[i].by_class[c] != nullptr) answered += stats[i].by_class[c]->value();
      }
      if (answered == 0) continue;
      const router::RouteEntry& entry = table->second->route(i);
      RouteTotals& t = totals[{table_name, entry.virtual_host, entry.name}];
      for (int c = 1; c <= 5; ++c) {
        if (stats[i].by_class[c] != nullptr) t.by_class[c] = stats[i].by_class[c]->value();
      }
      if (stats[i].duration != nullptr) {
        stats::Histogram::Totals h = stats[i].duration->Sum();
        std::copy(std::begin(h.buckets), std::end(h.buckets), t.buckets.begin());
      }
    }
  }
  struct RouteDelta {
    const RouteKey* key;
    uint64_t requests = 0;
    uint64_t errors = 0;
    std::array<uint64_t, stats::Histogram::kFinite + 1> buckets{};
  };
  std::vector<RouteDelta> routes;
  std::array<uint64_t, stats::Histogram::kFinite + 1> all{};
  if (!first) {
    for (const auto& [key, t] : totals) {
      RouteTotals base;
      if (auto it = last_.find(key); it != last_.end()) base = it->second;
      RouteDelta d;
      d.key = &key;
      for (int c = 1; c <= 5; ++c) {
        uint64_t n = t.by_class[c] >= base.by_class[c] ? t.by_class[c] - base.by_class[c] : 0;
        d.requests += n;
        if (c == 4) report.set_responses_4xx(report.responses_4xx() + n);
        if (c == 5) {
          d.errors = n;
          report.set_responses_5xx(report.responses_5xx() + n);
        }
      }
      for (size_t b = 0; b < t.buckets.size(); ++b) {
        d.buckets[b] = t.buckets[b] >= base.buckets[b] ? t.buckets[b] - base.buckets[b] : 0;
        all[b] += d.buckets[b];
      }
      report.set_requests(report.requests() + d.requests);
      if (d.requests > 0) routes.push_back(d);
    }
  }
  // The proxy's totals from its downstream counters when it has them:
  // answers no route counted (no route, a malformed request) are traffic
  // the fleet view must show.
  if (responses_[1] != nullptr) {
    uint64_t requests = 0;
    for (int c = 1; c <= 5; ++c) {
      const uint64_t now_count = responses_[c] != nullptr ? responses_[c]->value() : 0;
      const uint64_t n = now_count >= last_responses_[c] ? now_count - last_responses_[c] : 0;
      last_responses_[c] = now_count;
      if (first) continue;
      requests += n;
      if (c == 4) report.set_responses_4xx(n);
      if (c == 5) report.set_responses_5xx(n);
    }
    if (!first) report.set_requests(requests);
  }
  report.set_interval_ms(static_cast<uint64_t>(absl::ToInt64Milliseconds(interval)));
  report.set_p50_ms(QuantileMs(all, 0.50));
  report.set_p99_ms(QuantileMs(all, 0.99));
  std::sort(routes.begin(), routes.end(), [](const RouteDelta& a, const RouteDelta& b) {
    return a.requests > b.requests;
  });
  for (size_t i = 0; i < routes.size() && i < 10; ++i) {
    discovery::v1::RouteTraffic* r = report.add_routes();
    r->set_route_table(std::get<0>(*routes[i].key));
    r->set_virtual_host(std::get<1>(*routes[i].key));
    r->set_route(std::get<2>(*routes[i].key));
    r->set_requests(routes[i].requests);
    r->set_responses_5xx(routes[i].errors);
    r->set_p99_ms(QuantileMs(routes[i].buckets, 0.99));
  }
  last_ = std::move(totals);
  return report;
}

}  // namespace sluice::server
