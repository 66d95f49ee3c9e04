// Consistent hashing tables for RING_HASH and MAGLEV, built once per cluster
// version (immutable, shared by all workers) and looked up per request.
//
// Both map a 64-bit key hash to an endpoint index. When the chosen endpoint
// is not usable, the lookup moves on to the first usable one (the ring: its
// next points; Maglev: up to 16 more slots drawn from the key, then the next
// slots), so keys of a dead endpoint spread over the others by weight while
// every other key stays where it was.
//
// Thread-safe after construction.
#ifndef SLUICE_DATAPLANE_UPSTREAM_CONSISTENT_HASH_H_
#define SLUICE_DATAPLANE_UPSTREAM_CONSISTENT_HASH_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::upstream {

// A stable 64-bit hash of a string (the same in every process and build).
uint64_t HashKey(std::string_view key);

class ConsistentHashTable {
 public:
  virtual ~ConsistentHashTable() = default;
  // The endpoint index for `hash`, skipping endpoints for which `usable`
  // returns false; -1 when none is usable.
  virtual int Lookup(uint64_t hash, const std::function<bool(int)>& usable) const = 0;
};

// `keys[i]` identifies endpoint i (its "ip:port"), `weights[i]` its weight.
// Ring hash: `points_per_weight` points per unit of weight for each endpoint
// (at least 16 each), so the other endpoints' points never move when one
// comes or goes; rings over 4M points are scaled down as a whole.
std::unique_ptr<ConsistentHashTable> BuildRingHash(const std::vector<std::string>& keys,
                                                   const std::vector<uint32_t>& weights,
                                                   uint32_t points_per_weight);
// Maglev: a lookup table of `table_size` entries (a prime), filled by weight.
std::unique_ptr<ConsistentHashTable> BuildMaglev(const std::vector<std::string>& keys,
                                                 const std::vector<uint32_t>& weights,
                                                 uint32_t table_size);

}  // namespace sluice::upstream

#endif  // SLUICE_DATAPLANE_UPSTREAM_CONSISTENT_HASH_H_
