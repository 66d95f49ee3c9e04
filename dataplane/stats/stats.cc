#include "dataplane/stats/stats.h"

#include <algorithm>
#include <new>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace sluice::stats {
namespace {

std::atomic<int> histogram_shards{1};

}  // namespace

void SetHistogramShards(int shards) { histogram_shards.store(shards < 1 ? 1 : shards); }

Histogram::Histogram()
    : count_(static_cast<size_t>(histogram_shards.load())), shards_(new Shard[count_]) {}

Histogram::Totals Histogram::Sum() const {
  Totals t;
  for (size_t i = 0; i < count_; ++i) {
    for (int b = 0; b <= kFinite; ++b) {
      uint64_t n = shards_[i].buckets[b].load(std::memory_order_relaxed);
      t.buckets[b] += n;
      t.count += n;
    }
    t.sum_micros += shards_[i].sum_micros.load(std::memory_order_relaxed);
  }
  return t;
}

std::shared_ptr<MetricGroup> MetricGroup::Make(const MetricGroupSpec* spec) {
  static_assert(sizeof(MetricGroup) % alignof(Counter) == 0);
  static_assert(sizeof(Counter) % alignof(Histogram) == 0);
  const size_t bytes = sizeof(MetricGroup) + spec->counters.size() * sizeof(Counter) +
                       spec->histograms.size() * sizeof(Histogram);
  auto* group = new (::operator new(bytes)) MetricGroup(spec);
  for (size_t i = 0; i < spec->counters.size(); ++i) new (group->counters() + i) Counter;
  for (size_t i = 0; i < spec->histograms.size(); ++i) new (group->histograms() + i) Histogram;
  return std::shared_ptr<MetricGroup>(group, [](MetricGroup* g) {
    g->~MetricGroup();
    ::operator delete(g);
  });
}

MetricGroup::~MetricGroup() {
  // Counters are trivially destructible; histograms own their shards.
  for (size_t i = 0; i < spec_->histograms.size(); ++i) histograms()[i].~Histogram();
}

Counter* MetricGroup::counters() const {
  return reinterpret_cast<Counter*>(
      const_cast<char*>(reinterpret_cast<const char*>(this) + sizeof(MetricGroup)));
}

Histogram* MetricGroup::histograms() const {
  return reinterpret_cast<Histogram*>(reinterpret_cast<char*>(counters() + spec_->counters.size()));
}

MetricGroup* StatsStore::GetGroup(const MetricGroupSpec& spec, const std::string& labels,
                                  std::shared_ptr<const void>* hold) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<MetricGroup>& slot = groups_[&spec][labels];
  if (!slot) slot = MetricGroup::Make(&spec);
  *hold = slot;
  return slot.get();
}

Histogram* StatsStore::GetHistogram(const std::string& name, const std::string& labels,
                                    std::shared_ptr<const void>* hold) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Histogram>& slot = histograms_[name][labels];
  if (!slot) slot = std::make_shared<Histogram>();
  *hold = slot;
  return slot.get();
}

Counter* StatsStore::GetCounter(const std::string& name, const std::string& labels) {
  absl::MutexLock lock(&mu_);
  CounterSlot& slot = counters_[name][labels];
  if (!slot.counter) slot.counter = std::make_shared<Counter>();
  slot.permanent = true;
  return slot.counter.get();
}

Counter* StatsStore::GetCounter(const std::string& name, const std::string& labels,
                                std::shared_ptr<const void>* hold) {
  absl::MutexLock lock(&mu_);
  CounterSlot& slot = counters_[name][labels];
  if (!slot.counter) slot.counter = std::make_shared<Counter>();
  *hold = slot.counter;
  return slot.counter.get();
}

void StatsStore::Prune() {
  absl::MutexLock lock(&mu_);
  for (auto family = counters_.begin(); family != counters_.end();) {
    for (auto it = family->second.begin(); it != family->second.end();) {
      bool unheld = !it->second.permanent && it->second.counter.use_count() == 1;
      it = unheld ? family->second.erase(it) : std::next(it);
    }
    family = family->second.empty() ? counters_.erase(family) : std::next(family);
  }
  for (auto family = histograms_.begin(); family != histograms_.end();) {
    for (auto it = family->second.begin(); it != family->second.end();) {
      it = it->second.use_count() == 1 ? family->second.erase(it) : std::next(it);
    }
    family = family->second.empty() ? histograms_.erase(family) : std::next(family);
  }
  for (auto kind = groups_.begin(); kind != groups_.end();) {
    for (auto it = kind->second.begin(); it != kind->second.end();) {
      it = it->second.use_count() == 1 ? kind->second.erase(it) : std::next(it);
    }
    kind = kind->second.empty() ? groups_.erase(kind) : std::next(kind);
  }
}

size_t StatsStore::size() const {
  absl::MutexLock lock(&mu_);
  size_t n = gauges_.size();
  for (const auto& [name, family] : counters_) n += family.size();
  for (const auto& [name, family] : histograms_) n += family.size();
  for (const auto& [spec, groups] : groups_) {
    n += groups.size() * (spec->counters.size() + spec->histograms.size());
  }
  return n;
}

Gauge* StatsStore::GetGauge(const std::string& name, const std::string& labels) {
  absl::MutexLock lock(&mu_);
  auto& slot = gauges_[name][labels];
  if (!slot) slot = std::make_unique<Gauge>();
  return slot.get();
}

void StatsStore::Describe(const std::string& name, const std::string& help) {
  absl::MutexLock lock(&mu_);
  help_[name] = help;
}

namespace {

// One series of a family being rendered: its labels are `labels` then
// `extra` (a comma and more labels, or empty), as a group's are.
template <typename Metric>
struct Series {
  absl::string_view labels;
  absl::string_view extra;
  const Metric* metric;
};

// Compares the label strings `a.labels + a.extra` and `b.labels + b.extra`
// without building them: the order /metrics lists a family's series in.
template <typename Metric>
bool LabelsLess(const Series<Metric>& a, const Series<Metric>& b) {
  size_t common = std::min(a.labels.size(), b.labels.size());
  if (int c = a.labels.substr(0, common).compare(b.labels.substr(0, common)); c != 0) return c < 0;
  // One's labels are a prefix of the other's: compare what follows.
  auto rest = [](const Series<Metric>& s, size_t from) {
    return from < s.labels.size() ? absl::StrCat(s.labels.substr(from), s.extra)
                                  : std::string(s.extra.substr(from - s.labels.size()));
  };
  if (a.labels.size() == b.labels.size()) return a.extra < b.extra;
  return rest(a, common) < rest(b, common);
}

// Appends `{labels extra}` (nothing when both are empty; no leading comma
// when `labels` is empty).
void AppendLabels(std::string* out, absl::string_view labels, absl::string_view extra,
                  absl::string_view more = {}) {
  if (labels.empty() && !extra.empty()) extra.remove_prefix(1);
  if (labels.empty() && extra.empty() && more.empty()) return;
  absl::StrAppend(out, "{", labels, extra);
  if (!more.empty()) absl::StrAppend(out, labels.empty() && extra.empty() ? "" : ",", more);
  out->push_back('}');
}

}  // namespace

std::string StatsStore::RenderPrometheus() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  // Grown once, not by doubling through a large rendering's sizes.
  out.reserve(last_render_bytes_ + last_render_bytes_ / 8);
  auto header = [&](const std::string& name, const char* type) {
    if (auto it = help_.find(name); it != help_.end()) {
      absl::StrAppend(&out, "# HELP ", name, " ", it->second, "\n");
    }
    absl::StrAppend(&out, "# TYPE ", name, " ", type, "\n");
  };
  // Which group series belong to which family: name -> (spec, index).
  std::map<absl::string_view, std::vector<std::pair<const MetricGroupSpec*, size_t>>>
      grouped_counters, grouped_histograms;
  // Groups left out until something counts (hidden_until_counted).
  absl::flat_hash_set<const MetricGroup*> hidden;
  for (const auto& [spec, groups] : groups_) {
    if (!spec->hidden_until_counted) continue;
    for (const auto& [labels, group] : groups) {
      bool counted = false;
      for (size_t i = 0; i < spec->counters.size() && !counted; ++i) {
        counted = group->counter(i)->value() != 0;
      }
      for (size_t i = 0; i < spec->histograms.size() && !counted; ++i) {
        counted = group->histogram(i)->Sum().count != 0;
      }
      if (!counted) hidden.insert(group.get());
    }
  }
  for (const auto& [spec, groups] : groups_) {
    for (size_t i = 0; i < spec->counters.size(); ++i) {
      grouped_counters[spec->counters[i].name].emplace_back(spec, i);
    }
    for (size_t i = 0; i < spec->histograms.size(); ++i) {
      grouped_histograms[spec->histograms[i]].emplace_back(spec, i);
    }
  }
  // A family's series: its own, then its groups', in label order. Each
  // source is in order already; sorting is needed only when several are.
  std::vector<Series<Counter>> counter_series;
  auto counter_family = [&](absl::string_view name) {
    counter_series.clear();
    if (auto it = counters_.find(std::string(name)); it != counters_.end()) {
      for (const auto& [labels, slot] : it->second) {
        counter_series.push_back({labels, {}, slot.counter.get()});
      }
    }
    if (auto it = grouped_counters.find(name); it != grouped_counters.end()) {
      for (const auto& [spec, index] : it->second) {
        for (const auto& [labels, group] : groups_.at(spec)) {
          if (hidden.contains(group.get())) continue;
          counter_series.push_back({labels, spec->counters[index].extra_labels,
                                    group->counter(index)});
        }
      }
    }
    if (!std::is_sorted(counter_series.begin(), counter_series.end(), LabelsLess<Counter>)) {
      std::stable_sort(counter_series.begin(), counter_series.end(), LabelsLess<Counter>);
    }
    header(std::string(name), "counter");
    for (const Series<Counter>& s : counter_series) {
      absl::StrAppend(&out, name);
      AppendLabels(&out, s.labels, s.extra);
      absl::StrAppend(&out, " ", s.metric->value(), "\n");
    }
  };
  // The `le` label of each bucket, the last +Inf.
  std::string le[Histogram::kFinite + 1];
  for (int b = 0; b <= Histogram::kFinite; ++b) {
    le[b] = absl::StrCat(
        "le=\"",
        b == Histogram::kFinite
            ? std::string("+Inf")
            : absl::StrCat(static_cast<double>(Histogram::kBoundsMicros[b]) / 1e6),
        "\"");
  }
  std::vector<Series<Histogram>> histogram_series;
  auto histogram_family = [&](absl::string_view name) {
    histogram_series.clear();
    if (auto it = histograms_.find(std::string(name)); it != histograms_.end()) {
      for (const auto& [labels, histogram] : it->second) {
        histogram_series.push_back({labels, {}, histogram.get()});
      }
    }
    if (auto it = grouped_histograms.find(name); it != grouped_histograms.end()) {
      for (const auto& [spec, index] : it->second) {
        for (const auto& [labels, group] : groups_.at(spec)) {
          if (hidden.contains(group.get())) continue;
          histogram_series.push_back({labels, {}, group->histogram(index)});
        }
      }
    }
    if (!std::is_sorted(histogram_series.begin(), histogram_series.end(),
                        LabelsLess<Histogram>)) {
      std::stable_sort(histogram_series.begin(), histogram_series.end(), LabelsLess<Histogram>);
    }
    header(std::string(name), "histogram");
    for (const Series<Histogram>& s : histogram_series) {
      Histogram::Totals t = s.metric->Sum();
      uint64_t cumulative = 0;
      for (int b = 0; b <= Histogram::kFinite; ++b) {
        cumulative += t.buckets[b];
        absl::StrAppend(&out, name, "_bucket");
        AppendLabels(&out, s.labels, {}, le[b]);
        absl::StrAppend(&out, " ", cumulative, "\n");
      }
      absl::StrAppend(&out, name, "_sum");
      AppendLabels(&out, s.labels, {});
      absl::StrAppend(&out, " ", static_cast<double>(t.sum_micros) / 1e6, "\n");
      absl::StrAppend(&out, name, "_count");
      AppendLabels(&out, s.labels, {});
      absl::StrAppend(&out, " ", t.count, "\n");
    }
  };
  // Families in name order: counters, then gauges, then histograms.
  auto families = [](const auto& own, const auto& grouped) {
    std::vector<absl::string_view> names;
    for (const auto& [name, family] : own) names.push_back(name);
    for (const auto& [name, members] : grouped) names.push_back(name);
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    return names;
  };
  for (absl::string_view name : families(counters_, grouped_counters)) counter_family(name);
  for (const auto& [name, family] : gauges_) {
    header(name, "gauge");
    for (const auto& [labels, gauge] : family) {
      absl::StrAppend(&out, name);
      AppendLabels(&out, labels, {});
      absl::StrAppend(&out, " ", gauge->value(), "\n");
    }
  }
  for (absl::string_view name : families(histograms_, grouped_histograms)) histogram_family(name);
  last_render_bytes_ = out.size();
  return out;
}

std::string LabelValue(const std::string& value) {
  std::string out = "\"";
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

}  // namespace sluice::stats
