// The `cache` policy's store: responses in memory, shared by every worker
// of the proxy and every config version (entries outlive the config
// version that stored them as long as the policy keeps its identity).
//
// Entries are immutable and reference-counted: a response being served
// stays whole when it is replaced, evicted or purged meanwhile. They are
// kept in shards (a mutex each) by key; a key may hold several variants
// (Vary). The store holds a byte budget with LRU eviction (the least
// recently used entry of the whole store first), and
// coalesces misses: the first request of a key to go upstream is its
// filler; others wait (Waiter) until the filler stores the response
// (they get it) or gives up (they go upstream), bounded by a deadline a
// process-wide thread enforces.
//
// Keys begin with the 8 bytes of a Namespace id (one per policy identity,
// Acquire()); when the last compiled policy of an identity goes, its
// entries go.
//
// Thread-safe. Lookup, BeginFill, Insert and EndFill run on workers (one
// shard lock each); Acquire on the config thread; Purge on the config
// client's thread.
#ifndef SLUICE_DATAPLANE_POLICY_CACHE_RESPONSE_STORE_H_
#define SLUICE_DATAPLANE_POLICY_CACHE_RESPONSE_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <deque>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "dataplane/cache/purge.h"
#include "dataplane/http/filter.h"
#include "dataplane/http/header_map.h"
#include "dataplane/stats/stats.h"

namespace sluice::policy::cache {

// A stored response. Immutable once in the store.
struct Entry {
  struct VaryField {
    std::string name;   // lower case
    std::string value;  // the request's fields of that name, joined
    bool present = false;
  };
  // What the entry was stored for (purges select on these).
  std::string route;
  std::string host;  // lower case, no port
  std::string path;  // path and query as requested
  // The policy's query_params (KeyedPath of `path` is what the key holds).
  std::shared_ptr<const std::vector<std::string>> query_params;
  int status = 200;
  // The end-to-end fields as stored: without hop-by-hop and framing
  // fields, Age, Set-Cookie and X-Cache-Status; with a Date.
  std::vector<http::HeaderMap::Field> headers;
  std::string body;
  std::vector<VaryField> vary;
  // Nanoseconds on the cache's clock.
  int64_t request_time = 0;
  int64_t response_time = 0;
  int64_t corrected_initial_age = 0;
  int64_t lifetime = 0;
  // How long past `lifetime` it may be served, by stale-while-revalidate
  // and by stale-if-error (the upstream's directives, else the policy's).
  int64_t stale_while_revalidate = 0;
  int64_t stale_if_error = 0;
  bool no_cache = false;         // revalidated before every use
  bool must_revalidate = false;  // never served stale
  std::string etag;
  std::string last_modified;
  uint64_t bytes = 0;  // what it counts against the budget

  int64_t Age(int64_t now) const;
  bool Fresh(int64_t now) const { return !no_cache && Age(now) < lifetime; }
  // Whether `request` selects this variant (its Vary'd fields are equal).
  bool Matches(const http::HeaderMap& request) const;
  // Fills `bytes` from the rest.
  void Account(size_t key_size);
};

// A request waiting for another one's miss. Thread-safe.
class Waiter : public std::enable_shared_from_this<Waiter> {
 public:
  // `done` runs on the request's worker (through `handle`) with the stored
  // response, or nullptr: go upstream; `stale_on_error`: the entry is a
  // stale one the filler served because the upstream failed (not stored
  // anew), for the waiter's stale-if-error.
  Waiter(std::shared_ptr<http::ResumeHandle> handle,
         std::function<void(std::shared_ptr<const Entry>, bool stale_on_error)> done)
      : handle_(std::move(handle)), done_(std::move(done)) {}
  // The first call wins; later ones do nothing.
  void Resolve(std::shared_ptr<const Entry> entry, bool stale_on_error = false);
  // The waiting filter is gone: nothing is posted any more.
  void Cancel() {
    resolved_.store(true);
    cancelled_.store(true);
  }

 private:
  std::shared_ptr<http::ResumeHandle> handle_;
  std::function<void(std::shared_ptr<const Entry>, bool)> done_;
  std::atomic<bool> resolved_{false};
  std::atomic<bool> cancelled_{false};
};

// What X-Cache-Status says; also the `status` label of
// sluice_cache_responses_total.
enum class CacheStatus {
  kNone,
  kHit,
  kMiss,
  kBypass,
  kExpired,
  kStale,
  kRevalidated
};
std::string_view CacheStatusName(CacheStatus status);

class ResponseStore;

// The entries of one policy identity. Held by the compiled policies;
// destroying it drops the entries.
class Namespace {
 public:
  Namespace(ResponseStore* store, uint64_t id);
  ~Namespace();
  uint64_t id() const { return id_; }
  // The bytes its keys begin with.
  const std::string& prefix() const { return prefix_; }
  ResponseStore* store() const { return store_; }

 private:
  ResponseStore* store_;
  uint64_t id_;
  std::string prefix_;
};

class ResponseStore {
 public:
  static constexpr size_t kShards = 16;
  static constexpr uint64_t kDefaultBudget = uint64_t{64} << 20;

  // The proxy's store (kShards shards, kDefaultBudget); made on first use,
  // which also installs the purge handler (cache::SetPurgeHandler).
  static ResponseStore& Global();

  ResponseStore(size_t shards, uint64_t budget_bytes);
  ResponseStore(const ResponseStore&) = delete;
  ResponseStore& operator=(const ResponseStore&) = delete;

  // A smaller budget evicts at the next insert.
  void SetBudget(uint64_t bytes) { budget_.store(bytes); }
  uint64_t budget() const { return budget_.load(std::memory_order_relaxed); }
  // The namespace of `identity`: the live one, or a new one.
  std::shared_ptr<Namespace> Acquire(const std::string& identity);

  // The variant of `key` that `request` selects, or nullptr. Marks it used.
  std::shared_ptr<const Entry> Lookup(std::string_view key,
                                      const http::HeaderMap& request);

  enum class FillRole {
    kFiller,   // this request fills the key (`*token` set): Insert or EndFill
               // follows
    kWaiter,   // another fills it: `waiter` will be resolved
    kChanged,  // the key's entry changed since Lookup: look up again
    kUncoalesced,  // go upstream alone: another fills it and no waiter
                   // was given, or the key's last response could not be
                   // stored (a pass marker: see EndFill)
  };
  // After a Lookup that gave `seen` (maybe nullptr) and found it not
  // usable: who goes upstream. `make_waiter` is called (under the shard's
  // lock) only when the request is to wait, and may return nullptr (no
  // coalescing: kUncoalesced); the waiter's deadline is the caller's
  // (AddDeadline), its Waiter in `*waiter`.
  FillRole BeginFill(std::string_view key, const http::HeaderMap& request,
                     const Entry* seen,
                     absl::FunctionRef<std::shared_ptr<Waiter>()> make_waiter,
                     int64_t now, uint64_t* token, std::shared_ptr<Waiter>* waiter);
  // Stores `entry` under `key` (replacing the variant with the same Vary'd
  // values; with kMaxVariants already, the key's least recently used one
  // goes) and evicts over the budget. `fill_token` (0: none) ends that
  // fill: its waiters get `entry`.
  void Insert(std::string_view key, std::shared_ptr<const Entry> entry,
              uint64_t fill_token);
  // Ends a fill without an entry: its waiters go upstream. `pass_until`
  // (> 0: the response could not be stored) marks the key until then: its
  // misses are not coalesced (Varnish's hit-for-miss), so an uncacheable
  // URL under concurrent load is not serialised behind one request at a
  // time. Markers are bounded per shard (kMaxPassMarkers, kMaxPassBytes);
  // an Insert clears the key's.
  static constexpr size_t kMaxPassMarkers = 1024;
  static constexpr size_t kMaxVariants = 64;
  static constexpr size_t kMaxPassBytes = 256 * 1024;
  // `stale_answer`: the filler served this stale entry because the
  // upstream failed (stale-if-error); its waiters get it to serve likewise
  // rather than each trying the failing upstream again.
  void EndFill(std::string_view key, uint64_t fill_token, int64_t pass_until = 0,
               std::shared_ptr<const Entry> stale_answer = nullptr);
  // Stale-while-revalidate: true (and the key is marked until `until`)
  // when no refresh of `key` is under way.
  bool ClaimRefresh(std::string_view key, int64_t now, int64_t until);
  // The refresh of `key` is over, whatever its outcome (a failure, a 5xx, a
  // response that may not be stored): the next stale use may claim another
  // at once. A stored refresh has cleared the mark already.
  void EndRefresh(std::string_view key);

  // Removes every variant of `key`.
  void Invalidate(std::string_view key);
  uint64_t Purge(const sluice::cache::PurgeSelector& selector);
  // Removes every entry of a namespace (its keys' prefix).
  void DropNamespace(uint64_t id);

  uint64_t bytes() const { return bytes_.load(); }
  int64_t entries() const { return entries_.load(); }
  uint64_t evictions() const { return evictions_.load(); }

  // The gauges and counters of the store (Global's, by SetStatsStore).
  void SetStats(stats::StatsStore* stats);

 private:
  struct Slot;
  struct LruItem {
    const std::string* key;
    Slot* slot;
    const Entry* entry;
    uint64_t used;  // use_clock_ when stored or last looked up
  };
  struct Variant {
    std::shared_ptr<const Entry> entry;
    std::list<LruItem>::iterator lru;
  };
  struct Slot {
    std::vector<Variant> variants;
    uint64_t fill_token = 0;
    std::vector<std::shared_ptr<Waiter>> waiters;
    int64_t refresh_until = 0;
    int64_t pass_until = 0;  // EndFill's pass marker
  };
  struct Shard {
    absl::Mutex mu;
    absl::node_hash_map<std::string, Slot> slots ABSL_GUARDED_BY(mu);
    std::list<LruItem> lru ABSL_GUARDED_BY(mu);  // front: most recently used
    // Pass markers by expiry (oldest first), and their keys' bytes.
    std::deque<std::pair<int64_t, std::string>> passes ABSL_GUARDED_BY(mu);
    size_t pass_bytes ABSL_GUARDED_BY(mu) = 0;
  };

  Shard& ShardOf(std::string_view key);
  // Removes one variant; erases the slot when nothing is left in it.
  void RemoveVariant(Shard& shard, const std::string& key, Slot& slot,
                     size_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Evicts the store's least recently used entries (use_clock_ orders
  // them across shards) until it is within the budget.
  void EvictOverBudget();
  void AddBytes(int64_t bytes, int64_t entries);
  static int FindVariant(const Slot& slot, const http::HeaderMap& request);

  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> budget_;
  std::atomic<uint64_t> bytes_{0};
  std::atomic<int64_t> entries_{0};
  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> next_token_{1};
  std::atomic<uint64_t> use_clock_{1};
  std::atomic<stats::Gauge*> bytes_gauge_{nullptr};
  std::atomic<stats::Gauge*> entries_gauge_{nullptr};
  std::atomic<stats::Counter*> evictions_counter_{nullptr};

  absl::Mutex namespaces_mu_;
  uint64_t next_namespace_ ABSL_GUARDED_BY(namespaces_mu_) = 1;
  absl::flat_hash_map<std::string, std::weak_ptr<Namespace>> namespaces_
      ABSL_GUARDED_BY(namespaces_mu_);
};

// The process-wide deadline thread of waiting requests: resolves a waiter
// (nullptr: go upstream) at `deadline` on the cache's clock
// (CurrentClock()), unless it was resolved before. One thread, started on
// first use, sleeping until the earliest deadline.
void AddDeadline(int64_t deadline, std::weak_ptr<Waiter> waiter);
// Tests that moved the clock: the thread looks at the deadlines again.
void WakeDeadlinesForTesting();

// sluice_cache_responses_total{route,status}, when a stats store is set
// (store.h's SetStatsStore); a per-thread cache of the counters.
void CountResponse(std::string_view route_table, std::string_view virtual_host,
                   std::string_view route, CacheStatus status);
void SetResponseStats(stats::StatsStore* stats);

}  // namespace sluice::policy::cache

#endif  // SLUICE_DATAPLANE_POLICY_CACHE_RESPONSE_STORE_H_
