#include "dataplane/policy/cache/response_store.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "dataplane/policy/cache/cache_control.h"
#include "dataplane/policy/cache/internal.h"

namespace sluice::policy::cache {
namespace {

constexpr uint64_t kEntryOverhead =
    256;  // the Entry, its slot, LRU node and map node

absl::string_view AV(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return absl::EqualsIgnoreCase(AV(a), AV(b));
}

std::string NamespacePrefix(uint64_t id) {
  std::string prefix(8, '\0');
  std::memcpy(prefix.data(), &id, 8);
  return prefix;
}

}  // namespace

// ---- Entry ----

int64_t Entry::Age(int64_t now) const {
  return corrected_initial_age + std::max<int64_t>(0, now - response_time);
}

bool Entry::Matches(const http::HeaderMap& request) const {
  for (const VaryField& field : vary) {
    bool present = false;
    std::string value = JoinedValues(request, field.name, &present);
    if (present != field.present || value != field.value) return false;
  }
  return true;
}

void Entry::Account(size_t key_size) {
  uint64_t n = kEntryOverhead + key_size + route.size() + host.size() +
               path.size() + body.size() + etag.size() + last_modified.size();
  for (const auto& f : headers) n += f.name.size() + f.value.size() + 16;
  for (const auto& v : vary) n += v.name.size() + v.value.size() + 16;
  bytes = n;
}

// ---- Waiter ----

void Waiter::Resolve(std::shared_ptr<const Entry> entry, bool stale_on_error) {
  if (resolved_.exchange(true)) return;
  handle_->Post(
      [self = shared_from_this(), entry = std::move(entry), stale_on_error]() mutable {
        if (!self->cancelled_.load()) self->done_(std::move(entry), stale_on_error);
      });
}

std::string_view CacheStatusName(CacheStatus status) {
  switch (status) {
    case CacheStatus::kHit:
      return "Hit";
    case CacheStatus::kMiss:
      return "Miss";
    case CacheStatus::kBypass:
      return "Bypass";
    case CacheStatus::kExpired:
      return "Expired";
    case CacheStatus::kStale:
      return "Stale";
    case CacheStatus::kRevalidated:
      return "Revalidated";
    default:
      return "";
  }
}

// ---- Namespace ----

Namespace::Namespace(ResponseStore* store, uint64_t id)
    : store_(store), id_(id), prefix_(NamespacePrefix(id)) {}

Namespace::~Namespace() { store_->DropNamespace(id_); }

// ---- ResponseStore ----

ResponseStore& ResponseStore::Global() {
  static ResponseStore* const store = [] {
    auto* s = new ResponseStore(kShards, kDefaultBudget);  // never destroyed
    sluice::cache::SetPurgeHandler(
        [s](const sluice::cache::PurgeSelector& selector) {
          return s->Purge(selector);
        });
    return s;
  }();
  return *store;
}

ResponseStore::ResponseStore(size_t shards, uint64_t budget_bytes)
    : budget_(budget_bytes) {
  for (size_t i = 0; i < std::max<size_t>(1, shards); ++i) {
    shards_.push_back(std::make_unique<Shard>());
  }
}

std::shared_ptr<Namespace> ResponseStore::Acquire(const std::string& identity) {
  absl::MutexLock lock(&namespaces_mu_);
  absl::erase_if(namespaces_,
                 [](const auto& item) { return item.second.expired(); });
  std::weak_ptr<Namespace>& slot = namespaces_[identity];
  if (std::shared_ptr<Namespace> live = slot.lock()) return live;
  auto ns = std::make_shared<Namespace>(this, next_namespace_++);
  slot = ns;
  return ns;
}

ResponseStore::Shard& ResponseStore::ShardOf(std::string_view key) {
  return *shards_[std::hash<std::string_view>()(key) % shards_.size()];
}

int ResponseStore::FindVariant(const Slot& slot,
                               const http::HeaderMap& request) {
  // RFC 9111 4.1: of several that match (the origin changed its Vary), the
  // most recent response.
  int found = -1;
  for (size_t i = 0; i < slot.variants.size(); ++i) {
    const Entry& entry = *slot.variants[i].entry;
    if (!entry.Matches(request)) continue;
    if (found < 0 || entry.response_time > slot.variants[found].entry->response_time) {
      found = static_cast<int>(i);
    }
  }
  return found;
}

std::shared_ptr<const Entry> ResponseStore::Lookup(
    std::string_view key, const http::HeaderMap& request) {
  Shard& shard = ShardOf(key);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.slots.find(AV(key));
  if (it == shard.slots.end()) return nullptr;
  int i = FindVariant(it->second, request);
  if (i < 0) return nullptr;
  Variant& v = it->second.variants[i];
  shard.lru.splice(shard.lru.begin(), shard.lru, v.lru);
  v.lru->used = use_clock_.fetch_add(1);
  return v.entry;
}

ResponseStore::FillRole ResponseStore::BeginFill(
    std::string_view key, const http::HeaderMap& request, const Entry* seen,
    absl::FunctionRef<std::shared_ptr<Waiter>()> make_waiter, int64_t now, uint64_t* token,
    std::shared_ptr<Waiter>* waiter) {
  Shard& shard = ShardOf(key);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.slots.try_emplace(AV(key)).first;
  Slot& slot = it->second;
  int i = FindVariant(slot, request);
  const Entry* now_seen = i < 0 ? nullptr : slot.variants[i].entry.get();
  if (now_seen != seen) {
    if (slot.variants.empty() && slot.fill_token == 0 && slot.pass_until == 0) {
      shard.slots.erase(it);
    }
    return FillRole::kChanged;
  }
  if (slot.pass_until > now) return FillRole::kUncoalesced;
  if (slot.fill_token == 0) {
    slot.fill_token = next_token_.fetch_add(1);
    *token = slot.fill_token;
    return FillRole::kFiller;
  }
  *waiter = make_waiter();
  if (*waiter == nullptr) return FillRole::kUncoalesced;
  slot.waiters.push_back(*waiter);
  return FillRole::kWaiter;
}

void ResponseStore::Insert(std::string_view key,
                           std::shared_ptr<const Entry> entry,
                           uint64_t fill_token) {
  Shard& shard = ShardOf(key);
  std::vector<std::shared_ptr<Waiter>> waiters;
  if (entry->bytes > budget_.load()) {
    // Larger than the whole cache: storing it would evict every entry, then
    // itself. Not stored; the requests waiting for it get it.
    {
      absl::MutexLock lock(&shard.mu);
      auto it = shard.slots.find(AV(key));
      if (it != shard.slots.end() && fill_token != 0 && it->second.fill_token == fill_token) {
        it->second.fill_token = 0;
        waiters.swap(it->second.waiters);
      }
    }
    for (auto& w : waiters) w->Resolve(entry);
    EvictOverBudget();  // a lowered budget
    return;
  }
  {
    absl::MutexLock lock(&shard.mu);
    auto it = shard.slots.try_emplace(AV(key)).first;
    Slot& slot = it->second;
    // The variant with the same Vary'd values goes (RFC 9111 4.1).
    for (size_t i = 0; i < slot.variants.size(); ++i) {
      const Entry& old = *slot.variants[i].entry;
      bool same = old.vary.size() == entry->vary.size();
      for (size_t j = 0; same && j < old.vary.size(); ++j) {
        same = old.vary[j].name == entry->vary[j].name &&
               old.vary[j].present == entry->vary[j].present &&
               old.vary[j].value == entry->vary[j].value;
      }
      if (same) {
        shard.lru.erase(slot.variants[i].lru);
        AddBytes(-static_cast<int64_t>(old.bytes), -1);
        slot.variants.erase(slot.variants.begin() + i);
        break;
      }
    }
    // A key's variants are looked through one by one under the shard's
    // lock: a Vary on a field every client sends differently must not make
    // that scan long. Past kMaxVariants the key's least recently used one
    // goes (counted as an eviction).
    if (slot.variants.size() >= kMaxVariants) {
      size_t lru = 0;
      for (size_t i = 1; i < slot.variants.size(); ++i) {
        if (slot.variants[i].lru->used < slot.variants[lru].lru->used) lru = i;
      }
      shard.lru.erase(slot.variants[lru].lru);
      AddBytes(-static_cast<int64_t>(slot.variants[lru].entry->bytes), -1);
      slot.variants.erase(slot.variants.begin() + lru);
      evictions_.fetch_add(1);
      if (stats::Counter* c = evictions_counter_.load()) c->Inc();
    }
    shard.lru.push_front({&it->first, &slot, entry.get(), use_clock_.fetch_add(1)});
    AddBytes(static_cast<int64_t>(entry->bytes), 1);
    slot.variants.push_back({entry, shard.lru.begin()});
    slot.refresh_until = 0;
    slot.pass_until = 0;
    if (fill_token != 0 && slot.fill_token == fill_token) {
      slot.fill_token = 0;
      waiters.swap(slot.waiters);
    }
  }
  for (auto& w : waiters) w->Resolve(entry);
  EvictOverBudget();
}

void ResponseStore::EndFill(std::string_view key, uint64_t fill_token, int64_t pass_until,
                            std::shared_ptr<const Entry> stale_answer) {
  if (fill_token == 0) return;
  Shard& shard = ShardOf(key);
  std::vector<std::shared_ptr<Waiter>> waiters;
  {
    absl::MutexLock lock(&shard.mu);
    auto it = shard.slots.find(AV(key));
    if (it == shard.slots.end() || it->second.fill_token != fill_token) return;
    it->second.fill_token = 0;
    waiters.swap(it->second.waiters);
    if (pass_until > 0) {
      // The oldest markers make room (markers expire in the order they
      // are made); their slots go when nothing else is in them.
      while (!shard.passes.empty() && (shard.passes.size() >= kMaxPassMarkers ||
                                       shard.pass_bytes + key.size() > kMaxPassBytes)) {
        const auto& [until, old_key] = shard.passes.front();
        auto old = shard.slots.find(old_key);
        if (old != it && old != shard.slots.end() && old->second.pass_until == until) {
          old->second.pass_until = 0;
          if (old->second.variants.empty() && old->second.fill_token == 0 &&
              old->second.refresh_until == 0) {
            shard.slots.erase(old);  // a node map: `it` stays valid
          }
        }
        shard.pass_bytes -= old_key.size();
        shard.passes.pop_front();
      }
      if (key.size() <= kMaxPassBytes) {
        it->second.pass_until = pass_until;
        shard.passes.emplace_back(pass_until, std::string(key));
        shard.pass_bytes += key.size();
      }
    } else if (it->second.variants.empty() && it->second.refresh_until == 0 &&
               it->second.pass_until == 0) {
      shard.slots.erase(it);
    }
  }
  const bool stale_on_error = stale_answer != nullptr;
  for (auto& w : waiters) w->Resolve(stale_answer, stale_on_error);
}

bool ResponseStore::ClaimRefresh(std::string_view key, int64_t now,
                                 int64_t until) {
  Shard& shard = ShardOf(key);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.slots.find(AV(key));
  if (it == shard.slots.end()) return false;
  if (it->second.refresh_until > now) return false;
  it->second.refresh_until = until;
  return true;
}

void ResponseStore::EndRefresh(std::string_view key) {
  Shard& shard = ShardOf(key);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.slots.find(AV(key));
  if (it != shard.slots.end()) it->second.refresh_until = 0;
}

void ResponseStore::RemoveVariant(Shard& shard, const std::string& key,
                                  Slot& slot, size_t index) {
  const Variant& v = slot.variants[index];
  shard.lru.erase(v.lru);
  AddBytes(-static_cast<int64_t>(v.entry->bytes), -1);
  slot.variants.erase(slot.variants.begin() + index);
  if (slot.variants.empty() && slot.fill_token == 0 && slot.pass_until == 0) {
    shard.slots.erase(key);
  }
}

void ResponseStore::EvictOverBudget() {
  while (bytes_.load() > budget_.load()) {
    // The least recently used entry of the whole store: the oldest of the
    // shards' oldest. (Evicting from the inserting shard first would drop
    // its hot entries, down to the one just stored, while colder ones
    // elsewhere stay.)
    Shard* oldest = nullptr;
    uint64_t oldest_use = 0;
    for (auto& shard_ptr : shards_) {
      absl::MutexLock lock(&shard_ptr->mu);
      if (shard_ptr->lru.empty()) continue;
      const uint64_t used = shard_ptr->lru.back().used;
      if (oldest == nullptr || used < oldest_use) {
        oldest = shard_ptr.get();
        oldest_use = used;
      }
    }
    if (oldest == nullptr) return;
    absl::MutexLock lock(&oldest->mu);
    if (oldest->lru.empty()) continue;  // another thread evicted it meanwhile
    LruItem item = oldest->lru.back();
    Slot& slot = *item.slot;
    for (size_t i = 0; i < slot.variants.size(); ++i) {
      if (slot.variants[i].entry.get() == item.entry) {
        std::string key = *item.key;  // the slot (and its key) may go
        RemoveVariant(*oldest, key, slot, i);
        break;
      }
    }
    evictions_.fetch_add(1);
    if (stats::Counter* c = evictions_counter_.load()) c->Inc();
  }
}

void ResponseStore::AddBytes(int64_t bytes, int64_t entries) {
  bytes_.fetch_add(static_cast<uint64_t>(bytes));
  entries_.fetch_add(entries);
  if (stats::Gauge* g = bytes_gauge_.load()) g->Add(bytes);
  if (stats::Gauge* g = entries_gauge_.load()) g->Add(entries);
}

void ResponseStore::Invalidate(std::string_view key) {
  Shard& shard = ShardOf(key);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.slots.find(AV(key));
  if (it == shard.slots.end()) return;
  const std::string k = it->first;
  while (!it->second.variants.empty()) {
    bool last = it->second.variants.size() == 1;
    RemoveVariant(shard, k, it->second, it->second.variants.size() - 1);
    if (last) break;
  }
}

uint64_t ResponseStore::Purge(const sluice::cache::PurgeSelector& selector) {
  uint64_t removed = 0;
  for (auto& shard_ptr : shards_) {
    Shard& shard = *shard_ptr;
    absl::MutexLock lock(&shard.mu);
    std::vector<std::string> keys;
    for (auto& [key, slot] : shard.slots) {
      if (!slot.variants.empty()) keys.push_back(key);
    }
    for (const std::string& key : keys) {
      auto it = shard.slots.find(key);
      if (it == shard.slots.end()) continue;
      Slot& slot = it->second;
      for (size_t i = slot.variants.size(); i-- > 0;) {
        const Entry& e = *slot.variants[i].entry;
        // A Host with a trailing dot names the same host (the selector has
        // none: the data plane drops it).
        std::string_view host = e.host;
        if (!host.empty() && host.back() == '.') host.remove_suffix(1);
        bool match =
            (selector.route.empty() || e.route == selector.route) &&
            (selector.host.empty() || EqualsIgnoreCase(host, selector.host));
        if (!selector.path.empty()) {
          // One key: the selector as the entry's key holds a path and query
          // (its query_params only, in their order), not the spelling the
          // request that filled it happened to use.
          static const std::vector<std::string> kWholeQuery;
          const std::vector<std::string>& names = e.query_params ? *e.query_params : kWholeQuery;
          match = match && KeyedPath(e.path, names) == KeyedPath(selector.path, names);
        } else if (!selector.prefix.empty()) {
          match = match && absl::StartsWith(e.path, selector.prefix);
        }
        if (!match) continue;
        bool last = slot.variants.size() == 1;
        RemoveVariant(shard, key, slot, i);
        ++removed;
        if (last) break;  // the slot may be gone
      }
    }
  }
  return removed;
}

void ResponseStore::DropNamespace(uint64_t id) {
  const std::string prefix = NamespacePrefix(id);
  for (auto& shard_ptr : shards_) {
    Shard& shard = *shard_ptr;
    absl::MutexLock lock(&shard.mu);
    std::vector<std::string> keys;
    for (auto& [key, slot] : shard.slots) {
      if (absl::StartsWith(key, prefix)) keys.push_back(key);
    }
    for (const std::string& key : keys) {
      auto it = shard.slots.find(key);
      while (it != shard.slots.end() && !it->second.variants.empty()) {
        bool last = it->second.variants.size() == 1;
        RemoveVariant(shard, key, it->second, it->second.variants.size() - 1);
        if (last) break;
      }
    }
  }
}

void ResponseStore::SetStats(stats::StatsStore* stats) {
  if (stats == nullptr) {
    bytes_gauge_ = nullptr;
    entries_gauge_ = nullptr;
    evictions_counter_ = nullptr;
    return;
  }
  stats->Describe("sluice_cache_bytes",
                  "Bytes the response cache holds (bodies, fields, keys).");
  stats->Describe("sluice_cache_entries",
                  "Responses the response cache holds.");
  stats->Describe("sluice_cache_evictions_total",
                  "Responses evicted from the response cache to stay in its "
                  "memory budget.");
  stats::Gauge* bytes = stats->GetGauge("sluice_cache_bytes");
  stats::Gauge* entries = stats->GetGauge("sluice_cache_entries");
  bytes->Set(static_cast<int64_t>(bytes_.load()));
  entries->Set(entries_.load());
  bytes_gauge_ = bytes;
  entries_gauge_ = entries;
  evictions_counter_ = stats->GetCounter("sluice_cache_evictions_total");
}

// ---- deadlines ----

namespace {

class DeadlineThread {
 public:
  static DeadlineThread& Get() {
    static DeadlineThread* const t = new DeadlineThread();  // never destroyed
    return *t;
  }

  void Add(int64_t deadline, std::weak_ptr<Waiter> waiter) {
    absl::MutexLock lock(&mu_);
    if (!started_) {
      started_ = true;
      std::thread([this] { Run(); }).detach();
    }
    // The thread sleeps until the earliest deadline: wake it only for an
    // earlier one.
    if (deadlines_.empty() || deadline < deadlines_.begin()->first) changed_ = true;
    deadlines_.emplace(deadline, std::move(waiter));
  }

  void Wake() {
    absl::MutexLock lock(&mu_);
    changed_ = true;
  }

 private:
  void Run() {
    absl::MutexLock lock(&mu_);
    for (;;) {
      Clock clock = CurrentClock();
      int64_t now = clock();
      std::vector<std::weak_ptr<Waiter>> due;
      while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
        due.push_back(std::move(deadlines_.begin()->second));
        deadlines_.erase(deadlines_.begin());
      }
      if (!due.empty()) {
        mu_.Unlock();
        for (auto& w : due) {
          if (std::shared_ptr<Waiter> waiter = w.lock())
            waiter->Resolve(nullptr);
        }
        mu_.Lock();
        continue;
      }
      changed_ = false;
      auto changed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return changed_;
      };
      if (deadlines_.empty()) {
        mu_.Await(absl::Condition(&changed));
      } else {
        mu_.AwaitWithTimeout(
            absl::Condition(&changed),
            absl::Nanoseconds(deadlines_.begin()->first - now));
      }
    }
  }

  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool changed_ ABSL_GUARDED_BY(mu_) = false;
  std::multimap<int64_t, std::weak_ptr<Waiter>> deadlines_ ABSL_GUARDED_BY(mu_);
};

// ---- response counters ----

absl::Mutex response_stats_mu(absl::kConstInit);
stats::StatsStore* response_stats ABSL_GUARDED_BY(response_stats_mu) = nullptr;
std::atomic<uint64_t> response_stats_generation{1};
std::atomic<bool> response_stats_set{false};

constexpr int kStatusCount = 7;

struct ThreadCounters {
  uint64_t generation = 0;
  absl::flat_hash_map<std::string, std::array<stats::Counter*, kStatusCount>>
      by_route;
};

}  // namespace

void AddDeadline(int64_t deadline, std::weak_ptr<Waiter> waiter) {
  DeadlineThread::Get().Add(deadline, std::move(waiter));
}

void WakeDeadlinesForTesting() { DeadlineThread::Get().Wake(); }

void SetResponseStats(stats::StatsStore* stats) {
  absl::MutexLock lock(&response_stats_mu);
  response_stats = stats;
  response_stats_generation.fetch_add(1);
  response_stats_set.store(stats != nullptr);
  if (stats != nullptr) {
    stats->Describe(
        "sluice_cache_responses_total",
        "Responses of routes with a cache policy, by X-Cache-Status.");
  }
}

void CountResponse(std::string_view route_table, std::string_view virtual_host,
                   std::string_view route, CacheStatus status) {
  if (!response_stats_set.load(std::memory_order_relaxed) ||
      status == CacheStatus::kNone)
    return;
  thread_local ThreadCounters local;
  uint64_t generation = response_stats_generation.load();
  if (local.generation != generation) {
    local.by_route.clear();
    local.generation = generation;
  }
  // Route names are unique only within a virtual host: the key takes all
  // three (names cannot hold '\n'). Its storage is reused.
  thread_local std::string key;
  key.assign(route_table);
  key.push_back('\n');
  key.append(virtual_host);
  key.push_back('\n');
  key.append(route);
  auto it = local.by_route.find(key);
  if (it == local.by_route.end()) {
    std::array<stats::Counter*, kStatusCount> counters{};
    absl::MutexLock lock(&response_stats_mu);
    if (response_stats == nullptr) return;
    for (int i = 1; i < kStatusCount; ++i) {
      std::string name = absl::AsciiStrToLower(
          std::string(CacheStatusName(static_cast<CacheStatus>(i))));
      counters[i] = response_stats->GetCounter(
          "sluice_cache_responses_total",
          absl::StrCat("route_table=", stats::LabelValue(std::string(route_table)),
                       ",route=", stats::LabelValue(std::string(route)),
                       ",virtual_host=", stats::LabelValue(std::string(virtual_host)),
                       ",status=\"", name, "\""));
    }
    it = local.by_route.emplace(key, counters).first;
  }
  it->second[static_cast<int>(status)]->Inc();
}

}  // namespace sluice::policy::cache
