#include "dataplane/upstream/consistent_hash.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace sluice::upstream {
namespace {

constexpr uint32_t kPointsPerWeight = 1024;  // points per unit of weight
constexpr uint32_t kMaglevSize = 65537;  // api::kMaglevTableSize
constexpr int kNumKeys = 10000;

enum class Kind { kRingHash, kMaglev };

std::string KindName(const testing::TestParamInfo<Kind>& info) {
  return info.param == Kind::kRingHash ? "RingHash" : "Maglev";
}

std::unique_ptr<ConsistentHashTable> Build(
    Kind kind, const std::vector<std::string>& keys,
    const std::vector<uint32_t>& weights) {
  return kind == Kind::kRingHash ? BuildRingHash(keys, weights, kPointsPerWeight)
                                 : BuildMaglev(keys, weights, kMaglevSize);
}

std::vector<std::string> EndpointKeys(int n) {
  std::vector<std::string> keys;
  for (int i = 0; i < n; ++i) {
    keys.push_back("10.0.0." + std::to_string(i + 1) + ":8080");
  }
  return keys;
}

// Request hashes as the router would make them: HashKey of a header value.
// mt19937_64's output is fixed by the standard, so these are the same
// everywhere.
std::vector<uint64_t> RequestHashes(int n, uint64_t seed = 42) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> hashes;
  for (int i = 0; i < n; ++i) {
    hashes.push_back(HashKey("session-" + std::to_string(rng())));
  }
  return hashes;
}

bool AllUsable(int) { return true; }

std::vector<int> LookupAll(const ConsistentHashTable& table,
                           const std::vector<uint64_t>& hashes,
                           const std::function<bool(int)>& usable = AllUsable) {
  std::vector<int> result;
  result.reserve(hashes.size());
  for (uint64_t h : hashes) result.push_back(table.Lookup(h, usable));
  return result;
}

std::vector<double> Shares(const std::vector<int>& picks, int num_endpoints) {
  std::vector<double> shares(num_endpoints, 0.0);
  for (int e : picks) {
    EXPECT_GE(e, 0);
    EXPECT_LT(e, num_endpoints);
    if (e >= 0 && e < num_endpoints) shares[e] += 1.0 / picks.size();
  }
  return shares;
}

std::string Percentages(const std::vector<double>& shares) {
  std::string out;
  for (double s : shares) {
    out += std::to_string(s * 100).substr(0, 5) + "% ";
  }
  return out;
}

TEST(HashKeyTest, MatchesReferenceXxh64) {
  // Computed with the reference xxHash library, XXH64(data, len, seed 0).
  // Endpoint placement on every proxy depends on these: they must never
  // change.
  EXPECT_EQ(HashKey(""), 0xef46db3751d8e999ULL);
  EXPECT_EQ(HashKey("a"), 0xd24ec4f1a98c6e5bULL);
  EXPECT_EQ(HashKey("abc"), 0x44bc2cf5ad770999ULL);
  EXPECT_EQ(HashKey("10.0.0.1:8080"), 0xcb972177068eb685ULL);
  EXPECT_EQ(HashKey("user-42"), 0x397e9d3a76af7c81ULL);
  // Longer than 32 bytes: the four-lane path.
  EXPECT_EQ(HashKey("The quick brown fox jumps over the lazy dog"),
            0x0b242d361fda71bcULL);
}

TEST(HashKeyTest, OneBitChangesAboutHalfTheOutputBits) {
  std::mt19937_64 rng(7);
  int total_flipped = 0;
  int trials = 0;
  for (int i = 0; i < 200; ++i) {
    std::string s = "key-" + std::to_string(rng());
    const uint64_t base = HashKey(s);
    for (size_t byte = 0; byte < s.size(); ++byte) {
      for (int bit = 0; bit < 8; ++bit) {
        std::string t = s;
        t[byte] = static_cast<char>(t[byte] ^ (1 << bit));
        total_flipped += __builtin_popcountll(base ^ HashKey(t));
        ++trials;
      }
    }
  }
  const double mean = static_cast<double>(total_flipped) / trials;
  EXPECT_NEAR(mean, 32.0, 0.5);
}

class ConsistentHashTest : public testing::TestWithParam<Kind> {};

TEST_P(ConsistentHashTest, EmptyTableReturnsNoEndpoint) {
  auto table = Build(GetParam(), {}, {});
  int calls = 0;
  EXPECT_EQ(table->Lookup(HashKey("x"),
                          [&](int) {
                            ++calls;
                            return true;
                          }),
            -1);
  EXPECT_EQ(calls, 0);
}

TEST_P(ConsistentHashTest, SingleEndpointTakesEveryKey) {
  auto table = Build(GetParam(), {"10.0.0.1:80"}, {7});
  for (uint64_t h : RequestHashes(1000)) {
    ASSERT_EQ(table->Lookup(h, AllUsable), 0);
    ASSERT_EQ(table->Lookup(h, [](int) { return false; }), -1);
  }
}

TEST_P(ConsistentHashTest, SameKeySameEndpointAcrossTables) {
  const auto keys = EndpointKeys(5);
  const std::vector<uint32_t> weights(5, 1);
  auto a = Build(GetParam(), keys, weights);
  auto b = Build(GetParam(), keys, weights);
  const auto hashes = RequestHashes(kNumKeys);
  const auto picks = LookupAll(*a, hashes);
  EXPECT_EQ(picks, LookupAll(*a, hashes));
  EXPECT_EQ(picks, LookupAll(*b, hashes));
}

TEST_P(ConsistentHashTest, EndpointOrderDoesNotMatter) {
  const auto keys = EndpointKeys(5);
  std::vector<std::string> reversed(keys.rbegin(), keys.rend());
  auto a = Build(GetParam(), keys, {1, 2, 3, 4, 5});
  auto b = Build(GetParam(), reversed, {5, 4, 3, 2, 1});
  for (uint64_t h : RequestHashes(kNumKeys)) {
    ASSERT_EQ(keys[a->Lookup(h, AllUsable)], reversed[b->Lookup(h, AllUsable)]);
  }
}

// Tolerances. Maglev gives each of 5 equal endpoints 13107 or 13108 of the
// 65537 slots, so its shares differ from 20% only by sampling noise:
// sqrt(0.2 * 0.8 / 10000) = 0.4%, and +-2% is 5 sigma. A ring of 1280 points
// (256 per endpoint) has arc-length noise of about sqrt(256) / 1280 = 1.25%
// on top of that, so +-5% is about 3.8 sigma. Both inputs are fixed, so the
// test is deterministic; the tolerance says what a regression must exceed.
double EqualTolerance(Kind kind) { return kind == Kind::kMaglev ? 0.02 : 0.05; }

TEST_P(ConsistentHashTest, EqualWeightsSpreadEvenly) {
  auto table = Build(GetParam(), EndpointKeys(5), {1, 1, 1, 1, 1});
  const auto shares = Shares(LookupAll(*table, RequestHashes(kNumKeys)), 5);
  std::cout << "equal weights, 5 endpoints: " << Percentages(shares) << "\n";
  for (double s : shares) EXPECT_NEAR(s, 0.20, EqualTolerance(GetParam()));
}

TEST_P(ConsistentHashTest, WeightsThreeToOne) {
  auto table = Build(GetParam(), EndpointKeys(2), {3, 1});
  const auto shares = Shares(LookupAll(*table, RequestHashes(kNumKeys)), 2);
  std::cout << "weights 3:1: " << Percentages(shares) << "\n";
  EXPECT_NEAR(shares[0], 0.75, EqualTolerance(GetParam()));
  EXPECT_NEAR(shares[1], 0.25, EqualTolerance(GetParam()));
}

TEST_P(ConsistentHashTest, MixedWeightsFollowWeights) {
  const std::vector<uint32_t> weights = {1, 2, 3, 4, 10};
  auto table = Build(GetParam(), EndpointKeys(5), weights);
  const auto shares = Shares(LookupAll(*table, RequestHashes(kNumKeys)), 5);
  std::cout << "weights 1:2:3:4:10: " << Percentages(shares) << "\n";
  for (size_t i = 0; i < weights.size(); ++i) {
    EXPECT_NEAR(shares[i], weights[i] / 20.0, EqualTolerance(GetParam()));
  }
}

TEST_P(ConsistentHashTest, ExtremeWeightsBuild) {
  auto table = Build(GetParam(), EndpointKeys(2), {1, 10000});
  const auto shares = Shares(LookupAll(*table, RequestHashes(kNumKeys)), 2);
  std::cout << "weights 1:10000: " << Percentages(shares) << "\n";
  EXPECT_GT(shares[1], 0.95);
  // The light endpoint still has a place to take the heavy one's keys.
  for (uint64_t h : RequestHashes(100)) {
    EXPECT_EQ(table->Lookup(h, [](int e) { return e == 0; }), 0);
  }
}

TEST_P(ConsistentHashTest, RemovingAnEndpointMovesMostlyItsOwnKeys) {
  const auto keys = EndpointKeys(5);
  auto full = Build(GetParam(), keys, std::vector<uint32_t>(5, 1));
  const auto hashes = RequestHashes(kNumKeys);
  const double survivor_bound = GetParam() == Kind::kRingHash ? 0.05 : 0.10;
  for (int removed = 0; removed < 5; ++removed) {
    std::vector<std::string> rest = keys;
    rest.erase(rest.begin() + removed);
    auto smaller = Build(GetParam(), rest, std::vector<uint32_t>(4, 1));
    int moved = 0;
    int survivor_keys = 0;
    int survivor_moved = 0;
    for (uint64_t h : hashes) {
      const std::string& before = keys[full->Lookup(h, AllUsable)];
      const std::string& after = rest[smaller->Lookup(h, AllUsable)];
      if (before != after) ++moved;
      if (before != keys[removed]) {
        ++survivor_keys;
        if (before != after) ++survivor_moved;
      }
    }
    const double moved_fraction = static_cast<double>(moved) / kNumKeys;
    const double survivor_fraction =
        static_cast<double>(survivor_moved) / survivor_keys;
    std::cout << "remove endpoint " << removed << " of 5: moved "
              << moved_fraction * 100 << "% of all keys, "
              << survivor_fraction * 100
              << "% of keys not on the removed endpoint\n";
    EXPECT_LT(survivor_fraction, survivor_bound) << "removed " << removed;
    EXPECT_GE(moved_fraction, 0.15) << "removed " << removed;
    EXPECT_LE(moved_fraction, 0.30) << "removed " << removed;
  }
}

TEST_P(ConsistentHashTest, UnusableEndpointKeysSpreadAndOthersStay) {
  auto table = Build(GetParam(), EndpointKeys(5), std::vector<uint32_t>(5, 1));
  const auto hashes = RequestHashes(kNumKeys);
  const auto before = LookupAll(*table, hashes);
  const auto after = LookupAll(*table, hashes, [](int e) { return e != 2; });
  std::map<int, int> new_homes;
  int keys_of_2 = 0;
  for (size_t i = 0; i < hashes.size(); ++i) {
    ASSERT_NE(after[i], 2);
    ASSERT_GE(after[i], 0);
    if (before[i] == 2) {
      ++keys_of_2;
      ++new_homes[after[i]];
    } else {
      ASSERT_EQ(after[i], before[i]);
    }
  }
  std::cout << "keys of unusable endpoint 2 (" << keys_of_2 << ") went to:";
  for (const auto& [e, n] : new_homes) std::cout << " " << e << "=" << n;
  std::cout << "\n";
  EXPECT_GT(keys_of_2, 0);
  EXPECT_GE(new_homes.size(), 2u);
  // No single endpoint takes the lot (the failure of a naive "next index").
  for (const auto& [e, n] : new_homes) EXPECT_LT(n, keys_of_2 * 0.6) << e;
}

TEST_P(ConsistentHashTest, OnlyOneUsableEndpointTakesEverything) {
  auto table = Build(GetParam(), EndpointKeys(5), {1, 2, 3, 4, 5});
  for (uint64_t h : RequestHashes(1000)) {
    ASSERT_EQ(table->Lookup(h, [](int e) { return e == 3; }), 3);
  }
}

TEST_P(ConsistentHashTest, AllUnusableReturnsNoEndpointAskingEachOnce) {
  const int n = 300;  // more than the inline set holds
  std::vector<uint32_t> weights(n, 1);
  auto table = Build(GetParam(), EndpointKeys(n), weights);
  for (uint64_t h : RequestHashes(50)) {
    std::vector<int> asked(n, 0);
    EXPECT_EQ(table->Lookup(h,
                            [&](int e) {
                              ++asked[e];
                              return false;
                            }),
              -1);
    for (int e = 0; e < n; ++e) ASSERT_EQ(asked[e], 1) << e;
  }
}

TEST_P(ConsistentHashTest, HundredEndpointsAllUsedAndBuildTime) {
  const int n = 100;
  const auto keys = EndpointKeys(n);
  std::vector<uint32_t> weights(n);
  for (int i = 0; i < n; ++i) weights[i] = 1 + i % 10;
  const auto start = std::chrono::steady_clock::now();
  auto table = Build(GetParam(), keys, weights);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  std::cout << "build, 100 endpoints: "
            << std::chrono::duration<double, std::milli>(elapsed).count()
            << " ms\n";
  const auto shares = Shares(LookupAll(*table, RequestHashes(50000)), n);
  for (int i = 0; i < n; ++i) EXPECT_GT(shares[i], 0.0) << i;
}

INSTANTIATE_TEST_SUITE_P(Kinds, ConsistentHashTest,
                         testing::Values(Kind::kRingHash, Kind::kMaglev),
                         KindName);

// Ring hash only: a fixed number of points per unit of weight keeps every
// other endpoint's points in place when one endpoint's weight changes, so
// only keys that now belong to the changed endpoint move.
TEST(RingHashTest, WeightChangeMovesKeysOnlyToTheChangedEndpoint) {
  const auto keys = EndpointKeys(5);
  auto before = BuildRingHash(keys, {1, 1, 1, 1, 1}, kPointsPerWeight);
  auto after = BuildRingHash(keys, {2, 1, 1, 1, 1}, kPointsPerWeight);
  int moved = 0;
  for (uint64_t h : RequestHashes(kNumKeys)) {
    const int a = before->Lookup(h, AllUsable);
    const int b = after->Lookup(h, AllUsable);
    if (a != b) {
      ++moved;
      ASSERT_EQ(b, 0);
    }
  }
  std::cout << "weight 1 -> 2 on one of 5: moved " << moved * 100.0 / kNumKeys
            << "%\n";
  EXPECT_GT(moved, kNumKeys / 10);
}

TEST(RingHashTest, LargeRingSpreadsWithinOnePercent) {
  auto table = BuildRingHash(EndpointKeys(5), {1, 1, 1, 1, 1}, 1 << 20);
  const auto shares = Shares(LookupAll(*table, RequestHashes(100000)), 5);
  std::cout << "ring of 2^20, 5 endpoints: " << Percentages(shares) << "\n";
  for (double s : shares) EXPECT_NEAR(s, 0.20, 0.01);
}

TEST(RingHashTest, KeysPastTheLastPointWrapToTheFirst) {
  auto table = BuildRingHash(EndpointKeys(3), {1, 1, 1}, 64);
  // UINT64_MAX is past every point (unless one hashes to exactly that),
  // 0 is at or before the first: both land on the first point.
  EXPECT_EQ(table->Lookup(UINT64_MAX, AllUsable), table->Lookup(0, AllUsable));
}

TEST(MaglevTest, LookupIsTheSlotOfHashModuloSize) {
  // With a tiny table every slot is visible: hashes h and h + size pick the
  // same slot.
  auto table = BuildMaglev(EndpointKeys(3), {1, 1, 1}, 7);
  for (uint64_t h = 0; h < 7; ++h) {
    EXPECT_EQ(table->Lookup(h, AllUsable), table->Lookup(h + 7, AllUsable));
  }
  std::set<int> seen;
  for (uint64_t h = 0; h < 7; ++h) seen.insert(table->Lookup(h, AllUsable));
  EXPECT_EQ(seen.size(), 3u);
}

// A dead endpoint's keys go to the survivors about evenly, whichever of
// four it is. Before: the next table slot's owner took them, as unevenly as
// 158/89/11 of 258 (Envoy rebuilds the table over the healthy endpoints).
TEST(MaglevTest, ADeadEndpointsKeysSpreadEvenlyOverTheSurvivors) {
  auto table = BuildMaglev(EndpointKeys(4), {1, 1, 1, 1}, kMaglevSize);
  const auto hashes = RequestHashes(20000);
  const auto before = LookupAll(*table, hashes);
  for (int dead = 0; dead < 4; ++dead) {
    const auto after = LookupAll(*table, hashes, [dead](int e) { return e != dead; });
    std::map<int, int> new_homes;
    int moved = 0;
    for (size_t i = 0; i < hashes.size(); ++i) {
      if (before[i] != dead) {
        ASSERT_EQ(after[i], before[i]);
        continue;
      }
      ++moved;
      ++new_homes[after[i]];
    }
    ASSERT_EQ(new_homes.size(), 3u) << dead;
    for (const auto& [e, n] : new_homes) {
      EXPECT_GT(n, moved * 0.28) << "dead " << dead << " -> " << e << ": " << n << " of " << moved;
      EXPECT_LT(n, moved * 0.39) << "dead " << dead << " -> " << e << ": " << n << " of " << moved;
    }
  }
}

TEST(ConsistentHashDeathTest, BrokenContractsAbort) {
  EXPECT_DEATH(BuildMaglev(EndpointKeys(2), {1, 1}, 65536), "not prime");
  EXPECT_DEATH(BuildRingHash(EndpointKeys(2), {1}, kPointsPerWeight), "differ");
  EXPECT_DEATH(BuildMaglev(EndpointKeys(2), {1, 0}, kMaglevSize), "weight 0");
}

}  // namespace
}  // namespace sluice::upstream
