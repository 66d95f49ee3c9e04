// Tokens the `jwt` policy accepted, remembered so that the next request
// with the same token costs one SHA-256 and one hash probe instead of a
// signature check and two JSON parses.
//
// Process-wide and kept across config versions. An entry's key is
// SHA-256(digest of the policy's config || token): a token accepted under
// one config (its keys, algorithms, issuers, audiences, claims...) is never
// taken as accepted under another, and a key change misses. An entry holds
// what the filter needs (the consumer claim's value, the claim headers) and
// the window the token is accepted in; outside it the entry is not used, so
// a token stops working at its `exp` (plus leeway) whether cached or not.
// Bounded: an LRU per shard, by entries and by bytes. Only acceptances are
// remembered.
//
// Thread-safe (a mutex per shard).
#ifndef SLUICE_DATAPLANE_POLICY_JWT_VERIFIED_TOKEN_CACHE_H_
#define SLUICE_DATAPLANE_POLICY_JWT_VERIFIED_TOKEN_CACHE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace sluice::policy::jwt {

// 16 shards of at most 1024 entries and 1 MiB each: 16384 tokens, 16 MiB.
inline constexpr size_t kCacheShards = 16;
inline constexpr size_t kCacheEntriesPerShard = 1024;
inline constexpr size_t kCacheBytesPerShard = 1 << 20;

// What a request needs from an accepted token. Immutable.
struct AcceptedToken {
  // Accepted while not_before <= now < expires (Unix milliseconds).
  int64_t not_before = 0;
  int64_t expires = 0;
  std::string consumer;  // the consumer claim's value; empty without consumer_claim
  std::vector<std::pair<std::string, std::string>> headers;  // header, value
  std::string claims;  // `header=value` lines of `headers`: StreamInfo::consumer_claims
  size_t ByteSize() const;
};

class VerifiedTokenCache {
 public:
  using Key = std::array<unsigned char, 32>;

  static VerifiedTokenCache& Get();  // the process's; never destroyed

  // SHA-256(config_digest || token).
  static Key KeyOf(const Key& config_digest, std::string_view token);

  // The entry for `key` if `now` is in its window (nullptr otherwise; an
  // entry past its expiry is dropped).
  std::shared_ptr<const AcceptedToken> Find(const Key& key, int64_t now);
  void Insert(const Key& key, std::shared_ptr<const AcceptedToken> token);

  struct Stats {
    uint64_t hits = 0;
    uint64_t misses = 0;
    size_t entries = 0;
  };
  Stats stats();

 private:
  struct KeyHasher {
    size_t operator()(const Key& k) const;
  };
  using Entry = std::pair<Key, std::shared_ptr<const AcceptedToken>>;
  struct Shard {
    absl::Mutex mu;
    std::list<Entry> lru ABSL_GUARDED_BY(mu);  // most recent first
    absl::flat_hash_map<Key, std::list<Entry>::iterator, KeyHasher> map ABSL_GUARDED_BY(mu);
    size_t bytes ABSL_GUARDED_BY(mu) = 0;
  };
  Shard& shard(const Key& key) { return shards_[key[0] % kCacheShards]; }
  static void EraseLocked(Shard& s, std::list<Entry>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);

  Shard shards_[kCacheShards];
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
};

}  // namespace sluice::policy::jwt

#endif  // SLUICE_DATAPLANE_POLICY_JWT_VERIFIED_TOKEN_CACHE_H_
