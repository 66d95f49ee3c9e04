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
#include <utility>

#include "absl/time/time.h"
#include "dataplane/config/snapshot.h"
#include "dataplane/stats/stats.h"
#include "sluice/discovery/v1/discovery.pb.h"

namespace sluice::server {

class TrafficReporter {
 public:
  using SnapshotFn = std::function<std::shared_ptr<const config::ConfigSnapshot>()>;
  // `active_connections` may be null.
  TrafficReporter(SnapshotFn current, const stats::Gauge* active_connections)
      : current_(std::move(current)), active_connections_(active_connections) {}

  // The report since the previous call (the first call only takes the
  // baseline: an empty report with interval_ms 0). Its config_version is the
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
  bool started_ = false;
  uint64_t interval_version_ = 0;  // the version at the start of the interval
  absl::Time last_time_;
  std::map<std::pair<std::string, std::string>, RouteTotals> last_;  // by (table, route)
};

}  // namespace sluice::server

#endif  // SLUICE_DATAPLANE_SERVER_TRAFFIC_REPORT_H_
