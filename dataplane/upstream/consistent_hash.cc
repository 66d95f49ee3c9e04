#include "dataplane/upstream/consistent_hash.h"

#include <algorithm>
#include <charconv>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace sluice::upstream {
namespace {

// Aborts on a broken caller contract (the builders' inputs come from
// CompileCluster, which has already validated the config).
[[noreturn]] void ContractViolated(const char* what) {
  Fatal(absl::StrCat("consistent_hash: contract violated: ", what));
}

// ---------------------------------------------------------------------------
// XXH64 (xxHash, 64-bit variant, by Yann Collet), written out from the
// published algorithm so the result never depends on a library version.
// Input bytes are read as little-endian words whatever the host byte order,
// so a key hashes to the same value on every machine. The final avalanche
// (xor-shift / multiply) flips each output bit with probability ~1/2 for any
// single input bit change. HashKey() is XXH64 with seed 0, bit for bit the
// same as the reference XXH64(data, len, 0).

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ULL;

inline uint64_t RotateLeft(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

inline uint64_t ReadLe64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

inline uint32_t ReadLe32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

inline uint64_t XxRound(uint64_t acc, uint64_t input) {
  acc += input * kPrime2;
  acc = RotateLeft(acc, 31);
  return acc * kPrime1;
}

inline uint64_t XxMerge(uint64_t acc, uint64_t lane) {
  acc ^= XxRound(0, lane);
  return acc * kPrime1 + kPrime4;
}

uint64_t Xxh64(std::string_view data, uint64_t seed) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const unsigned char* const end = p + data.size();
  uint64_t h;
  if (data.size() >= 32) {
    const unsigned char* const limit = end - 32;
    uint64_t v1 = seed + kPrime1 + kPrime2;
    uint64_t v2 = seed + kPrime2;
    uint64_t v3 = seed;
    uint64_t v4 = seed - kPrime1;
    do {
      v1 = XxRound(v1, ReadLe64(p));
      v2 = XxRound(v2, ReadLe64(p + 8));
      v3 = XxRound(v3, ReadLe64(p + 16));
      v4 = XxRound(v4, ReadLe64(p + 24));
      p += 32;
    } while (p <= limit);
    h = RotateLeft(v1, 1) + RotateLeft(v2, 7) + RotateLeft(v3, 12) +
        RotateLeft(v4, 18);
    h = XxMerge(h, v1);
    h = XxMerge(h, v2);
    h = XxMerge(h, v3);
    h = XxMerge(h, v4);
  } else {
    h = seed + kPrime5;
  }
  h += static_cast<uint64_t>(data.size());
  while (end - p >= 8) {
    h ^= XxRound(0, ReadLe64(p));
    h = RotateLeft(h, 27) * kPrime1 + kPrime4;
    p += 8;
  }
  if (end - p >= 4) {
    h ^= static_cast<uint64_t>(ReadLe32(p)) * kPrime1;
    h = RotateLeft(h, 23) * kPrime2 + kPrime3;
    p += 4;
  }
  while (p < end) {
    h ^= static_cast<uint64_t>(*p) * kPrime5;
    h = RotateLeft(h, 11) * kPrime1;
    ++p;
  }
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  h *= kPrime3;
  h ^= h >> 32;
  return h;
}

// ---------------------------------------------------------------------------
// Shared by both tables: a lookup starts at one slot of a circular array of
// endpoint indices (ring points in hash order, or the Maglev table) and walks
// forward to the first usable endpoint. `usable` is asked at most once per
// endpoint per lookup, and the walk ends as soon as every endpoint present in
// the array has been found unusable, so a lookup with all endpoints down
// costs O(distinct endpoints) callbacks, not O(slots).

// A set of endpoint indices that allocates only for large clusters.
class EndpointSet {
 public:
  explicit EndpointSet(size_t num_endpoints) {
    size_t words = (num_endpoints + 63) / 64;
    if (words > kInlineWords) {
      heap_.assign(words, 0);
      words_ = heap_.data();
    }
  }
  bool Contains(int32_t e) const { return (words_[e >> 6] >> (e & 63)) & 1; }
  void Insert(int32_t e) { words_[e >> 6] |= uint64_t{1} << (e & 63); }

 private:
  static constexpr size_t kInlineWords = 4;  // 256 endpoints
  uint64_t inline_[kInlineWords] = {};
  std::vector<uint64_t> heap_;
  uint64_t* words_ = inline_;
};

// Slots drawn from the key tried before walking on (Maglev).
constexpr int kRedraws = 16;

// splitmix64's finaliser: a bijective 64-bit mix.
uint64_t Mix(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The endpoint of slots[start] if usable; else, with `redraw`, the first
// usable one of up to kRedraws more slots drawn from `hash`, then the next
// usable slot after `start`. Each endpoint is asked at most once.
int WalkToUsable(const std::vector<int32_t>& slots, size_t start,
                 size_t num_endpoints, size_t distinct_endpoints,
                 const std::function<bool(int)>& usable, bool redraw = false,
                 uint64_t hash = 0) {
  const int32_t first = slots[start];
  if (usable(first)) return first;  // the common case: no bookkeeping
  if (distinct_endpoints == 1) return -1;
  EndpointSet unusable(num_endpoints);
  unusable.Insert(first);
  size_t unusable_count = 1;
  const size_t size = slots.size();
  if (redraw) {
    // A Maglev table's next slot belongs to whichever endpoint's permutation
    // reached it first, so walking on hands a dead endpoint's keys to the
    // survivors very unevenly (58/31/13% of them among 3). Slots drawn
    // anew from the key (the same ones each time: the key stays put) are
    // each a survivor's in proportion to its share of the table, i.e. its
    // weight, as Envoy's rebuilt table over the healthy ones would give.
    uint64_t h = hash;
    for (int draw = 0; draw < kRedraws; ++draw) {
      h = Mix(h + 0x9e3779b97f4a7c15ULL);
      const int32_t e = slots[h % size];
      if (unusable.Contains(e)) continue;
      if (usable(e)) return e;
      unusable.Insert(e);
      if (++unusable_count == distinct_endpoints) return -1;
    }
  }
  size_t pos = start;
  for (size_t step = 1; step < size; ++step) {
    if (++pos == size) pos = 0;
    const int32_t e = slots[pos];
    if (unusable.Contains(e)) continue;
    if (usable(e)) return e;
    unusable.Insert(e);
    if (++unusable_count == distinct_endpoints) return -1;
  }
  return -1;
}

void CheckInputs(const std::vector<std::string>& keys,
                 const std::vector<uint32_t>& weights) {
  if (keys.size() != weights.size()) {
    ContractViolated("keys and weights differ in length");
  }
  if (keys.size() > static_cast<size_t>(INT32_MAX)) {
    ContractViolated("too many endpoints");
  }
  for (uint32_t w : weights) {
    if (w == 0) ContractViolated("weight 0 (weights must be >= 1)");
  }
}

// ---------------------------------------------------------------------------
// Ring hash (ketama style).
//
// Endpoint i gets points HashKey(key_i + "_" + j) for j = 0 .. points_i - 1.
// points_i = max(16, round(weight_i * points_per_weight)): a fixed number of
// points per unit of weight (160 by default, as ketama uses), so an
// endpoint's points depend only on its own weight. Adding or removing an
// endpoint, or changing one weight, moves only the keys of that endpoint.
// (Envoy instead scales to a total ring size, which makes every survivor gain
// or lose points when one endpoint goes: ~15% of the other keys move for
// 5 -> 4 endpoints.) Only rings that would pass 4M points are scaled down.
class RingHashTable final : public ConsistentHashTable {
 public:
  RingHashTable(std::vector<uint64_t> hashes, std::vector<int32_t> endpoints,
                size_t num_endpoints)
      : hashes_(std::move(hashes)),
        endpoints_(std::move(endpoints)),
        num_endpoints_(num_endpoints) {}

  int Lookup(uint64_t hash,
             const std::function<bool(int)>& usable) const override {
    if (hashes_.empty()) return -1;
    auto it = std::lower_bound(hashes_.begin(), hashes_.end(), hash);
    size_t start =
        it == hashes_.end() ? 0 : static_cast<size_t>(it - hashes_.begin());
    // Every endpoint has at least one point, so all of them are distinct.
    return WalkToUsable(endpoints_, start, num_endpoints_, num_endpoints_,
                        usable);
  }

 private:
  std::vector<uint64_t> hashes_;    // sorted
  std::vector<int32_t> endpoints_;  // endpoints_[i] owns point hashes_[i]
  size_t num_endpoints_;
};

constexpr uint64_t kMaxRingPoints = 4 * 1024 * 1024;
constexpr uint64_t kMinPointsPerEndpoint = 16;

// The number of ring points for each endpoint (see RingHashTable).
std::vector<uint64_t> RingPointCounts(const std::vector<uint32_t>& weights,
                                      uint32_t points_per_weight) {
  // A fixed number of points per unit of weight, so that adding or removing
  // an endpoint never moves the points of the others: only the keys of the
  // endpoint that left (or the ones the newcomer takes) move. Only a ring
  // that would pass kMaxRingPoints is scaled down as a whole.
  uint64_t total_weight = 0;
  for (uint32_t w : weights) total_weight += w;
  long double scale = std::max<uint32_t>(points_per_weight, 1);
  if (total_weight * scale > kMaxRingPoints) {
    scale = static_cast<long double>(kMaxRingPoints) / static_cast<long double>(total_weight);
  }
  std::vector<uint64_t> counts;
  counts.reserve(weights.size());
  for (uint32_t w : weights) {
    uint64_t points = static_cast<uint64_t>(w * scale + 0.5L);
    counts.push_back(std::max(points, kMinPointsPerEndpoint));
  }
  return counts;
}

// ---------------------------------------------------------------------------
// Maglev (Eisenbud et al., NSDI 2016, section 3.4), weighted as Envoy does.
//
// Each endpoint's preference list over the M table slots is the permutation
// (offset + j * skip) mod M with offset = XXH64(key, seed 0) mod M and
// skip = XXH64(key, seed 1) mod (M - 1) + 1; M prime makes every skip a
// generator, so the list visits every slot. Endpoints take turns claiming
// their next free preferred slot until the table is full. With weights, an
// endpoint takes its turn in round r only when r * weight >= its target, and
// each turn raises its target by the largest weight: an endpoint with the
// largest weight claims a slot every round, one with a third of it every
// third round, so slot counts follow the weights. Endpoints take turns in
// order of their key's hash (not input order), so the table depends on the
// set of endpoints, not on the order they were listed in.
class MaglevTable final : public ConsistentHashTable {
 public:
  MaglevTable(std::vector<int32_t> table, size_t num_endpoints,
              size_t distinct_endpoints)
      : table_(std::move(table)),
        num_endpoints_(num_endpoints),
        distinct_endpoints_(distinct_endpoints) {}

  int Lookup(uint64_t hash,
             const std::function<bool(int)>& usable) const override {
    if (table_.empty()) return -1;
    return WalkToUsable(table_, static_cast<size_t>(hash % table_.size()),
                        num_endpoints_, distinct_endpoints_, usable, /*redraw=*/true, hash);
  }

 private:
  std::vector<int32_t> table_;
  size_t num_endpoints_;
  size_t distinct_endpoints_;  // endpoints with at least one slot
};

bool IsPrime(uint32_t n) {
  if (n < 2) return false;
  for (uint64_t d = 2; d * d <= n; ++d) {
    if (n % d == 0) return false;
  }
  return true;
}

class EmptyTable final : public ConsistentHashTable {
 public:
  int Lookup(uint64_t, const std::function<bool(int)>&) const override {
    return -1;
  }
};

}  // namespace

uint64_t HashKey(std::string_view key) { return Xxh64(key, 0); }

std::unique_ptr<ConsistentHashTable> BuildRingHash(
    const std::vector<std::string>& keys, const std::vector<uint32_t>& weights,
    uint32_t points_per_weight) {
  CheckInputs(keys, weights);
  if (keys.empty()) return std::make_unique<EmptyTable>();

  const std::vector<uint64_t> counts = RingPointCounts(weights, points_per_weight);
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;

  struct Point {
    uint64_t hash;
    int32_t endpoint;
  };
  std::vector<Point> points;
  points.reserve(total);
  std::string name;
  char digits[24];
  for (size_t i = 0; i < keys.size(); ++i) {
    name.assign(keys[i]);
    name.push_back('_');
    const size_t prefix = name.size();
    for (uint64_t j = 0; j < counts[i]; ++j) {
      auto [digits_end, ec] = std::to_chars(digits, digits + sizeof(digits), j);
      (void)ec;  // 24 chars always hold a uint64_t
      name.resize(prefix);
      name.append(digits, digits_end);
      points.push_back({HashKey(name), static_cast<int32_t>(i)});
    }
  }
  // Ties (two points with one hash) are broken by endpoint key, so the ring
  // does not depend on the order the endpoints were listed in.
  std::sort(points.begin(), points.end(), [&](const Point& a, const Point& b) {
    if (a.hash != b.hash) return a.hash < b.hash;
    if (a.endpoint == b.endpoint) return false;
    const int by_key = keys[a.endpoint].compare(keys[b.endpoint]);
    return by_key != 0 ? by_key < 0 : a.endpoint < b.endpoint;
  });

  std::vector<uint64_t> hashes;
  std::vector<int32_t> endpoints;
  hashes.reserve(points.size());
  endpoints.reserve(points.size());
  for (const Point& p : points) {
    hashes.push_back(p.hash);
    endpoints.push_back(p.endpoint);
  }
  return std::make_unique<RingHashTable>(std::move(hashes),
                                         std::move(endpoints), keys.size());
}

std::unique_ptr<ConsistentHashTable> BuildMaglev(
    const std::vector<std::string>& keys, const std::vector<uint32_t>& weights,
    uint32_t table_size) {
  CheckInputs(keys, weights);
  // A composite size would leave some preference lists short of a full
  // permutation and the fill loop below would never end.
  if (!IsPrime(table_size)) ContractViolated("Maglev table size is not prime");
  if (keys.empty()) return std::make_unique<EmptyTable>();

  const uint64_t m = table_size;
  struct Builder {
    uint64_t offset_hash;  // also the turn order
    int32_t endpoint;
    uint64_t weight;
    uint64_t skip;
    uint64_t next_slot;  // (offset + j * skip) mod m for the current j
    uint64_t target = 0;
  };
  std::vector<Builder> builders;
  builders.reserve(keys.size());
  uint64_t max_weight = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const uint64_t offset_hash = Xxh64(keys[i], 0);
    const uint64_t skip = Xxh64(keys[i], 1) % (m - 1) + 1;
    builders.push_back({offset_hash, static_cast<int32_t>(i), weights[i], skip,
                        offset_hash % m});
    max_weight = std::max<uint64_t>(max_weight, weights[i]);
  }
  std::sort(builders.begin(), builders.end(),
            [&](const Builder& a, const Builder& b) {
              if (a.offset_hash != b.offset_hash) {
                return a.offset_hash < b.offset_hash;
              }
              const int by_key = keys[a.endpoint].compare(keys[b.endpoint]);
              return by_key != 0 ? by_key < 0 : a.endpoint < b.endpoint;
            });

  std::vector<int32_t> table(m, -1);
  std::vector<char> has_slot(keys.size(), 0);
  uint64_t filled = 0;
  for (uint64_t round = 0; filled < m; ++round) {
    for (Builder& b : builders) {
      if (round * b.weight < b.target) continue;
      b.target += max_weight;
      while (table[b.next_slot] != -1) {
        b.next_slot += b.skip;
        if (b.next_slot >= m) b.next_slot -= m;
      }
      table[b.next_slot] = b.endpoint;
      has_slot[b.endpoint] = 1;
      if (++filled == m) break;
    }
  }
  const size_t distinct =
      static_cast<size_t>(std::count(has_slot.begin(), has_slot.end(), 1));
  return std::make_unique<MaglevTable>(std::move(table), keys.size(), distinct);
}

}  // namespace sluice::upstream
