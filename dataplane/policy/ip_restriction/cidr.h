// IP addresses and CIDR blocks for the `ip-restriction` policy: parsing,
// shared by its validator (every binary that validates config) and its
// filter, and CidrSet, the compiled form a filter asks "is this client in
// one of the blocks".
//
// IPv4 and IPv6 are kept apart: an IPv6 block never matches an IPv4 client
// (so `deny: ["::/0"]` shuts out IPv6 only). IPv4-mapped IPv6 addresses
// (::ffff:a.b.c.d), in a block or from a client, are taken as the IPv4
// address a.b.c.d.
//
// Pure functions and an immutable class: any thread.
#ifndef SLUICE_DATAPLANE_POLICY_IP_RESTRICTION_CIDR_H_
#define SLUICE_DATAPLANE_POLICY_IP_RESTRICTION_CIDR_H_

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/numeric/int128.h"
#include "absl/status/statusor.h"

namespace sluice::policy::ip_restriction {

struct IpAddress {
  bool v6 = false;
  // The address as a number: IPv4 in the low 32 bits.
  absl::uint128 bits = 0;
};

struct CidrBlock {
  IpAddress network;      // host bits are zero
  int prefix_length = 0;  // 0..32 (IPv4) or 0..128 (IPv6)
};

// An IPv4 dotted quad or an IPv6 address as inet_pton(3) reads them (no
// leading zeros in IPv4 parts, no surrounding spaces); an IPv6 zone
// ("fe80::1%eth0") is ignored. nullopt when it is neither.
std::optional<IpAddress> ParseIpAddress(std::string_view text);

// "10.0.0.0/8", "2001:db8::/32" or a single address ("127.0.0.1" is
// 127.0.0.1/32). An InvalidArgument error's message says what is wrong
// without naming a field, e.g. "'10.0.0.300/8' is not an IP address or
// CIDR", "'10.0.0.1/8' has host bits set (the block is '10.0.0.0/8')".
absl::StatusOr<CidrBlock> ParseCidrBlock(std::string_view text);

// The block as text, e.g. "10.0.0.0/8", "2001:db8::/32".
std::string FormatCidrBlock(const CidrBlock& block);

// A set of blocks, merged into sorted disjoint address ranges per family
// at construction (O(n log n)); Contains() is a binary search, O(log n),
// whatever the number or the overlap of the blocks.
class CidrSet {
 public:
  CidrSet() = default;
  explicit CidrSet(const std::vector<CidrBlock>& blocks);

  bool Contains(const IpAddress& address) const;
  bool empty() const { return v4_.empty() && v6_.empty(); }
  // Disjoint ranges after merging (for tests and stats).
  size_t range_count() const { return v4_.size() + v6_.size(); }

 private:
  // [first, last], sorted by first, disjoint and not adjacent.
  using Ranges = std::vector<std::pair<absl::uint128, absl::uint128>>;
  static Ranges Merge(Ranges ranges);
  static bool Find(const Ranges& ranges, absl::uint128 value);

  Ranges v4_;
  Ranges v6_;
};

}  // namespace sluice::policy::ip_restriction

#endif  // SLUICE_DATAPLANE_POLICY_IP_RESTRICTION_CIDR_H_
