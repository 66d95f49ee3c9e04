#include "common/nearest.h"

#include <algorithm>

namespace sluice::common {

namespace {

// Edits between `a` and `b`: insertions, deletions, substitutions and
// swaps of two neighbours (`prot` is one edit from `port`).
size_t Distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

}  // namespace

std::string Nearest(std::string_view given, const std::vector<std::string>& known,
                    size_t max_edits) {
  // Two edits, one for a word of four characters or fewer: `host` is two
  // from `port` and `dns` two from `tls`, and neither was meant.
  const size_t most = max_edits != 0 ? max_edits : given.size() <= 4 ? 1 : 2;
  std::string best;
  size_t best_distance = most + 1;
  bool tie = false;
  for (const std::string& name : known) {
    if (name.size() > given.size() + most || given.size() > name.size() + most) continue;
    const size_t distance = Distance(given, name);
    if (distance < best_distance) {
      best_distance = distance;
      best = name;
      tie = false;
    } else if (distance == best_distance && name != best) {
      tie = true;
    }
  }
  // Two as near (`m_version`: min_version or max_version?): neither.
  return tie ? std::string() : best;
}

}  // namespace sluice::common
