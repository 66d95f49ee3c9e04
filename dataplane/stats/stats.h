// Stats: counters, gauges and histograms shared by all threads, rendered in Prometheus
// text format by the admin endpoint.
//
// A metric is created once (on the main or config thread, at snapshot
// compilation), so the request path holds plain pointers and only does
// relaxed atomic adds. Process-wide metrics live as long as the process; a
// cluster's or route's metrics are held by what uses them (`hold`) and
// Prune() forgets those nobody holds any more, so a removed cluster or route
// leaves /stats and frees its memory, and the number of metrics follows the
// config in force.
//
// Series that are made and dropped together (a route's five status classes
// and its latency histogram, a cluster's ~20 counters) form a MetricGroup:
// one allocation for all of them, one label string and one entry in the
// store, so 10,000 routes cost ~10,000 entries rather than 60,000. The
// request path still holds plain Counter* and Histogram* pointers; /metrics
// prints a group's series exactly as it prints separate ones.
//
// StatsStore is thread-safe; Counter and Gauge are lock-free.
#ifndef SLUICE_DATAPLANE_STATS_STATS_H_
#define SLUICE_DATAPLANE_STATS_STATS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace sluice::stats {

class Counter {
 public:
  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void Add(int64_t n) { value_.fetch_add(n, std::memory_order_relaxed); }
  void Set(int64_t n) { value_.store(n, std::memory_order_relaxed); }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// A latency histogram with fixed buckets (Prometheus `le` bounds, in
// seconds: kBoundsMicros), one shard per worker so that Observe() is two
// relaxed adds on a cache line no other worker writes; rendering sums the
// shards. The shard count is set once at start (SetHistogramShards) before
// any histogram is made.
class Histogram {
 public:
  static constexpr int kFinite = 14;
  static constexpr int64_t kBoundsMicros[kFinite] = {500,    1000,    2500,    5000,   10000,
                                                     25000,  50000,   100000,  250000, 500000,
                                                     1000000, 2500000, 5000000, 10000000};
  Histogram();
  // `shard`: the worker's index (taken modulo the shard count).
  void Observe(int shard, int64_t micros) {
    int b = 0;
    while (b < kFinite && micros > kBoundsMicros[b]) ++b;
    Shard& s = shards_[static_cast<size_t>(shard) % count_];
    s.buckets[b].fetch_add(1, std::memory_order_relaxed);
    s.sum_micros.fetch_add(micros < 0 ? 0 : static_cast<uint64_t>(micros),
                           std::memory_order_relaxed);
  }
  struct Totals {
    uint64_t buckets[kFinite + 1] = {};  // not cumulative; the last is +Inf
    uint64_t count = 0;
    uint64_t sum_micros = 0;
  };
  Totals Sum() const;

 private:
  struct alignas(64) Shard {
    std::atomic<uint64_t> buckets[kFinite + 1] = {};
    std::atomic<uint64_t> sum_micros{0};
  };
  size_t count_;
  std::unique_ptr<Shard[]> shards_;
};

// How many shards histograms made from now on have (the worker count;
// default 1). Call before the workers start.
void SetHistogramShards(int shards);

// The shape of a MetricGroup: which series it has. Each series' labels are
// the group's labels (StatsStore::GetGroup) followed by its `extra_labels`
// (empty, or a comma then more labels, e.g. `,status_class="2xx"`), so the
// group's labels come first in every series, as when the series are made
// one by one. A spec is identified by its address: make one per kind of
// group (a static), and let it live as long as every store that uses it.
// A series must not be made both in a group and on its own (GetCounter):
// /metrics would list it twice.
struct MetricGroupSpec {
  struct CounterSeries {
    std::string name;
    std::string extra_labels;
  };
  std::vector<CounterSeries> counters;
  std::vector<std::string> histograms;  // names; the group's labels only
  // /metrics leaves a group out while every counter is 0 and every
  // histogram empty: a route nobody has requested lists no series (a
  // 10,000-route table would print some 240,000 series of zeros).
  bool hidden_until_counted = false;
};

// The series of one group, in the order of its spec. Made and owned by a
// StatsStore (GetGroup); one allocation holds the header and every series.
class MetricGroup {
 public:
  MetricGroup(const MetricGroup&) = delete;
  MetricGroup& operator=(const MetricGroup&) = delete;

  // `i` indexes spec.counters / spec.histograms.
  Counter* counter(size_t i) { return counters() + i; }
  const Counter* counter(size_t i) const { return counters() + i; }
  Histogram* histogram(size_t i) { return histograms() + i; }
  const Histogram* histogram(size_t i) const { return histograms() + i; }
  const MetricGroupSpec& spec() const { return *spec_; }

  // Counters and histograms default-constructed; shared_ptr frees it.
  static std::shared_ptr<MetricGroup> Make(const MetricGroupSpec* spec);

 private:
  explicit MetricGroup(const MetricGroupSpec* spec) : spec_(spec) {}
  ~MetricGroup();
  Counter* counters() const;
  Histogram* histograms() const;

  const MetricGroupSpec* spec_;
  // Then, in the same allocation: Counter[spec.counters.size()],
  // Histogram[spec.histograms.size()].
};

class StatsStore {
 public:
  // `labels` is the Prometheus label set without braces, e.g.
  // route="users",status_class="2xx"; empty for none. Same name and labels:
  // same object.
  Counter* GetCounter(const std::string& name, const std::string& labels = "");
  // The same metric, held: it stays (and keeps its value across config
  // versions) while some `hold` returned for it lives.
  Counter* GetCounter(const std::string& name, const std::string& labels,
                      std::shared_ptr<const void>* hold);
  // The group of `spec`'s series with the labels `labels` (non-empty, as
  // for GetCounter), held like a held counter: same spec and labels give the
  // same group, values kept, while some hold of it lives. Its counters and
  // histograms stay valid while a hold lives.
  MetricGroup* GetGroup(const MetricGroupSpec& spec, const std::string& labels,
                        std::shared_ptr<const void>* hold);
  // Forgets held metrics (and groups) that nothing holds (a walk over every metric,
  // under the store's lock). Any thread.
  void Prune();
  // The number of series (a group counts as its counters and histograms).
  size_t size() const;
  Gauge* GetGauge(const std::string& name, const std::string& labels = "");
  // A histogram, held like a held counter.
  Histogram* GetHistogram(const std::string& name, const std::string& labels,
                          std::shared_ptr<const void>* hold);
  // Declares the HELP text of a metric family.
  void Describe(const std::string& name, const std::string& help);

  std::string RenderPrometheus() const;

 private:
  mutable absl::Mutex mu_;
  struct CounterSlot {
    std::shared_ptr<Counter> counter;
    bool permanent = false;
  };
  std::map<std::string, std::map<std::string, CounterSlot>> counters_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<std::string, std::unique_ptr<Gauge>>> gauges_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<std::string, std::shared_ptr<Histogram>>> histograms_
      ABSL_GUARDED_BY(mu_);
  // By spec, then by the group's labels.
  std::map<const MetricGroupSpec*, std::map<std::string, std::shared_ptr<MetricGroup>>> groups_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> help_ ABSL_GUARDED_BY(mu_);
  // The size of the last rendering: the next one is reserved that large.
  mutable size_t last_render_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

// Escapes a label value for the Prometheus text format.
std::string LabelValue(const std::string& value);

}  // namespace sluice::stats

#endif  // SLUICE_DATAPLANE_STATS_STATS_H_
