#include "dataplane/policy/ip_restriction/cidr.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace sluice::policy::ip_restriction {
namespace {

// An address as written: IPv6 text stays IPv6 even when IPv4-mapped.
std::optional<IpAddress> ParseWritten(std::string_view text) {
  char buffer[INET6_ADDRSTRLEN + 1];
  if (text.empty() || text.size() >= sizeof(buffer) ||
      text.find('\0') != std::string_view::npos) {  // inet_pton would stop at it
    return std::nullopt;
  }
  memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';
  IpAddress address;
  if (text.find(':') == std::string_view::npos) {
    in_addr v4;
    if (inet_pton(AF_INET, buffer, &v4) != 1) return std::nullopt;
    address.bits = ntohl(v4.s_addr);
    return address;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, buffer, &v6) != 1) return std::nullopt;
  uint64_t high = 0;
  uint64_t low = 0;
  for (int i = 0; i < 8; ++i) high = (high << 8) | v6.s6_addr[i];
  for (int i = 8; i < 16; ++i) low = (low << 8) | v6.s6_addr[i];
  address.v6 = true;
  address.bits = absl::MakeUint128(high, low);
  return address;
}

constexpr absl::uint128 kMappedPrefix = absl::MakeUint128(0, 0xffff00000000);
constexpr int kMappedPrefixLength = 96;

bool IsMapped(const IpAddress& a) { return a.v6 && (a.bits >> 32) == (kMappedPrefix >> 32); }

int Width(bool v6) { return v6 ? 128 : 32; }

// The bits below a prefix of `length` in an address of `width` bits.
absl::uint128 HostMask(int width, int length) {
  int host_bits = width - length;
  if (host_bits == 0) return 0;
  if (host_bits == 128) return absl::Uint128Max();
  return (absl::uint128(1) << host_bits) - 1;
}

std::string FormatAddress(const IpAddress& a) {
  char text[INET6_ADDRSTRLEN];
  if (!a.v6) {
    in_addr v4;
    v4.s_addr = htonl(static_cast<uint32_t>(absl::Uint128Low64(a.bits)));
    inet_ntop(AF_INET, &v4, text, sizeof(text));
    return text;
  }
  in6_addr v6;
  uint64_t high = absl::Uint128High64(a.bits);
  uint64_t low = absl::Uint128Low64(a.bits);
  for (int i = 7; i >= 0; --i, high >>= 8) v6.s6_addr[i] = high & 0xff;
  for (int i = 15; i >= 8; --i, low >>= 8) v6.s6_addr[i] = low & 0xff;
  inet_ntop(AF_INET6, &v6, text, sizeof(text));
  return text;
}

absl::Status NotAnAddress(std::string_view text) {
  return absl::InvalidArgumentError(
      absl::StrCat("'", absl::CHexEscape(absl::string_view(text.data(), text.size())),
                   "' is not an IP address or CIDR"));
}

}  // namespace

std::optional<IpAddress> ParseIpAddress(std::string_view text) {
  if (size_t zone = text.find('%');
      zone != std::string_view::npos && text.find(':') != std::string_view::npos) {
    text = text.substr(0, zone);
  }
  std::optional<IpAddress> address = ParseWritten(text);
  if (address && IsMapped(*address)) {
    address->v6 = false;
    address->bits &= absl::uint128(0xffffffff);
  }
  return address;
}

absl::StatusOr<CidrBlock> ParseCidrBlock(std::string_view text) {
  size_t slash = text.find('/');
  std::optional<IpAddress> address = ParseWritten(text.substr(0, slash));
  if (!address) return NotAnAddress(text);
  const int width = Width(address->v6);
  int length = width;
  if (slash != std::string_view::npos) {
    std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return NotAnAddress(text);
    }
    length = 0;
    for (char c : digits) length = length * 10 + (c - '0');
    if (length > width) {
      return absl::InvalidArgumentError(absl::StrCat("'", std::string(text), "' has prefix length ",
                                                     length, "; an ", address->v6 ? "IPv6" : "IPv4",
                                                     " block's is 0..", width));
    }
  }
  if ((address->bits & HostMask(width, length)) != 0) {
    IpAddress network = *address;
    network.bits &= ~HostMask(width, length);
    return absl::InvalidArgumentError(absl::StrCat("'", std::string(text),
                                                   "' has host bits set (the block is '",
                                                   FormatAddress(network), "/", length, "')"));
  }
  CidrBlock block{*address, length};
  if (IsMapped(*address) && length >= kMappedPrefixLength) {
    block.network.v6 = false;
    block.network.bits &= absl::uint128(0xffffffff);
    block.prefix_length = length - kMappedPrefixLength;
  }
  return block;
}

std::string FormatCidrBlock(const CidrBlock& block) {
  return absl::StrCat(FormatAddress(block.network), "/", block.prefix_length);
}

CidrSet::CidrSet(const std::vector<CidrBlock>& blocks) {
  Ranges v4;
  Ranges v6;
  for (const CidrBlock& b : blocks) {
    absl::uint128 host = HostMask(Width(b.network.v6), b.prefix_length);
    (b.network.v6 ? v6 : v4).emplace_back(b.network.bits, b.network.bits | host);
  }
  v4_ = Merge(std::move(v4));
  v6_ = Merge(std::move(v6));
}

CidrSet::Ranges CidrSet::Merge(Ranges ranges) {
  std::sort(ranges.begin(), ranges.end());
  Ranges merged;
  for (const auto& r : ranges) {
    if (!merged.empty() &&
        (r.first <= merged.back().second ||
         (merged.back().second != absl::Uint128Max() && r.first == merged.back().second + 1))) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

bool CidrSet::Find(const Ranges& ranges, absl::uint128 value) {
  // The last range starting at or before `value`.
  auto it = std::upper_bound(ranges.begin(), ranges.end(), value,
                             [](absl::uint128 v, const auto& r) { return v < r.first; });
  if (it == ranges.begin()) return false;
  return value <= std::prev(it)->second;
}

bool CidrSet::Contains(const IpAddress& address) const {
  return Find(address.v6 ? v6_ : v4_, address.bits);
}

}  // namespace sluice::policy::ip_restriction
