// The known name a typo was meant to be, for "did you mean" hints (a
// command, a flag, a config field).
#ifndef SLUICE_COMMON_NEAREST_H_
#define SLUICE_COMMON_NEAREST_H_

#include <string>
#include <string_view>
#include <vector>

namespace sluice::common {

// The name in `known` nearest `given`, at most two edits away (`apyl`,
// `--dryrun`, `endpoint`), or "" (the first of equally near ones).
std::string Nearest(std::string_view given, const std::vector<std::string>& known);

}  // namespace sluice::common

#endif  // SLUICE_COMMON_NEAREST_H_
