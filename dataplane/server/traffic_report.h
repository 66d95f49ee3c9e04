// TrafficReporter: what the proxy served since the last report, from the
// route counters and latency histograms, for the control plane's fleet view
// (sluicectl proxies -o wide, sluicectl top). Percentiles are estimated from
// the histogram buckets (linear within a bucket).
//
// Make() is called from one thread (the config client's reporter).
#ifndef SLUICE_DATAPLANE_SERVER_TRAFFIC_REPORT_H_
#define SLUICE_DATAPLANE_SERVER_TRAFFIC_REPORT_H_

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "absl/time/time.h"
#include "dataplane/config/snapshot.h"
#include "dataplane/stats/stats.h"
#include "sluice/discovery/v1/discovery.pb.h"

namespace sluice::server {

class TrafficReporter {
 public:
  using SnapshotFn = std::function<std::shared_ptr<const config::ConfigSnapshot>()>;
  // The proxy's responses by status class ([1] 1xx .. [5] 5xx), every
  // answer counted: a no-route 404 or a malformed request's 400 too.
  using ClassCounters = std::array<const stats::Counter*, 6>;
  // `active_connections` may be null. With `responses` (non-null entries),
  // the report's requests, 4xx and 5xx count every response of the proxy;
  // without, those of the routes only.
  TrafficReporter(SnapshotFn current, const stats::Gauge* active_connections,
                  ClassCounters responses = {})
      : current_(std::move(current)),
        active_connections_(active_connections),
        responses_(responses) {}

  // The report since the previous call (the first call only takes the
  // baseline: an empty report with interval_ms 0; the proxy makes it at
  // start, so its first report sent covers its first interval). Without a
  // config, an empty report of the interval. Its config_version is the
  // version that served the whole interval, 0 when another was applied
  // during it: a canary's figures must not include the traffic the stable
  // version served before the candidate came.
  discovery::v1::TrafficReport Make(absl::Time now = absl::Now());

  // The `q` quantile (0..1) in milliseconds of a histogram given as bucket
  // counts (not cumulative; the last is +Inf); 0 for no observations.
  static double QuantileMs(const std::array<uint64_t, stats::Histogram::kFinite + 1>& buckets,
                           double q);

 private:
  struct RouteTotals {
    std::array<uint64_t, 6> by_class{};
    std::array<uint64_t, stats::Histogram::kFinite + 1> buckets{};
  };
  SnapshotFn current_;
  const stats::Gauge* active_connections_;
  ClassCounters responses_;
  std::array<uint64_t, 6> last_responses_{};
  bool started_ = false;
  uint64_t interval_version_ = 0;  // the version at the start of the interval
  absl::Time last_time_;
  // By (table, virtual host, route): a route's name is unique in its
  // virtual host only.
  using RouteKey = std::tuple<std::string, std::string, std::string>;
  std::map<RouteKey, RouteTotals> last_;
};

}  // namespace sluice::server

#endif  // SLUICE_DATAPLANE_SERVER_TRAFFIC_REPORT_H_
