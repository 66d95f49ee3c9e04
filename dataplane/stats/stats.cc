#include "dataplane/stats/stats.h"

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

std::shared_ptr<const void> StatsStore::MakeHold(const std::shared_ptr<ReleaseLog>& log,
                                                 Released entry) {
  const void* metric = entry.ref.get();
  // The deleter runs when the last copy of the hold goes: it hands its
  // reference to the log, so the slot stays until Prune() looks at it.
  return std::shared_ptr<const void>(
      metric, [log, entry = std::move(entry)](const void*) mutable {
        absl::MutexLock lock(&log->mu);
        log->released.push_back(std::move(entry));
      });
}

Histogram* StatsStore::GetHistogram(const std::string& name, const std::string& labels,
                                    std::shared_ptr<const void>* hold) {
  absl::MutexLock lock(&mu_);
  auto family = histograms_.try_emplace(name).first;
  auto it = family->second.try_emplace(labels).first;
  if (!it->second) it->second = std::make_shared<Histogram>();
  Released entry;
  entry.ref = it->second;
  entry.histogram_family = family;
  entry.histogram = it;
  entry.is_counter = false;
  *hold = MakeHold(release_log_, std::move(entry));
  return it->second.get();
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
  auto family = counters_.try_emplace(name).first;
  auto it = family->second.try_emplace(labels).first;
  if (!it->second.counter) it->second.counter = std::make_shared<Counter>();
  Released entry;
  entry.ref = it->second.counter;
  entry.counter_family = family;
  entry.counter = it;
  entry.is_counter = true;
  *hold = MakeHold(release_log_, std::move(entry));
  return it->second.counter.get();
}

void StatsStore::Prune() {
  std::vector<Released> released;
  {
    absl::MutexLock lock(&release_log_->mu);
    released.swap(release_log_->released);
  }
  if (released.empty()) return;
  absl::MutexLock lock(&mu_);
  // Every slot named here is still in its map: each entry's `ref` kept it.
  // Drop those references first, then erase the slots only the map holds,
  // each slot once (several holds of one metric may have gone). Erasing a
  // slot leaves the other entries' slots, which are distinct, in place; a
  // family is erased once empty, when no entry left names a slot in it.
  absl::flat_hash_set<const void*> seen;
  std::vector<Released*> unique;
  for (Released& r : released) {
    r.ref.reset();
    const void* slot = r.is_counter ? static_cast<const void*>(&r.counter->second)
                                    : static_cast<const void*>(&r.histogram->second);
    if (seen.insert(slot).second) unique.push_back(&r);
  }
  for (Released* r : unique) {
    if (r->is_counter) {
      const CounterSlot& slot = r->counter->second;
      if (slot.permanent || slot.counter.use_count() != 1) continue;
      r->counter_family->second.erase(r->counter);
      if (r->counter_family->second.empty()) counters_.erase(r->counter_family);
    } else {
      if (r->histogram->second.use_count() != 1) continue;
      r->histogram_family->second.erase(r->histogram);
      if (r->histogram_family->second.empty()) histograms_.erase(r->histogram_family);
    }
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
