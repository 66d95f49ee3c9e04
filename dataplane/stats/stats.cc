#include "dataplane/stats/stats.h"

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
}

size_t StatsStore::size() const {
  absl::MutexLock lock(&mu_);
  size_t n = gauges_.size();
  for (const auto& [name, family] : counters_) n += family.size();
  for (const auto& [name, family] : histograms_) n += family.size();
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

std::string StatsStore::RenderPrometheus() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  auto header = [&](const std::string& name, const char* type) {
    if (auto it = help_.find(name); it != help_.end()) {
      absl::StrAppend(&out, "# HELP ", name, " ", it->second, "\n");
    }
    absl::StrAppend(&out, "# TYPE ", name, " ", type, "\n");
  };
  auto series = [&](const std::string& name, const std::string& labels) {
    return labels.empty() ? name : absl::StrCat(name, "{", labels, "}");
  };
  for (const auto& [name, family] : counters_) {
    header(name, "counter");
    for (const auto& [labels, slot] : family) {
      absl::StrAppend(&out, series(name, labels), " ", slot.counter->value(), "\n");
    }
  }
  for (const auto& [name, family] : gauges_) {
    header(name, "gauge");
    for (const auto& [labels, gauge] : family) {
      absl::StrAppend(&out, series(name, labels), " ", gauge->value(), "\n");
    }
  }
  for (const auto& [name, family] : histograms_) {
    header(name, "histogram");
    for (const auto& [labels, histogram] : family) {
      Histogram::Totals t = histogram->Sum();
      std::string prefix = labels.empty() ? std::string() : absl::StrCat(labels, ",");
      uint64_t cumulative = 0;
      for (int b = 0; b <= Histogram::kFinite; ++b) {
        cumulative += t.buckets[b];
        std::string le = b == Histogram::kFinite
                             ? std::string("+Inf")
                             : absl::StrCat(static_cast<double>(Histogram::kBoundsMicros[b]) / 1e6);
        absl::StrAppend(&out, name, "_bucket{", prefix, "le=\"", le, "\"} ", cumulative, "\n");
      }
      absl::StrAppend(&out, series(name + "_sum", labels), " ",
                      static_cast<double>(t.sum_micros) / 1e6, "\n");
      absl::StrAppend(&out, series(name + "_count", labels), " ", t.count, "\n");
    }
  }
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
