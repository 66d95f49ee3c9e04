// The known name a typo was meant to be, for "did you mean" hints (a
// command, a flag, a config field).
#ifndef SLUICE_COMMON_NEAREST_H_
#define SLUICE_COMMON_NEAREST_H_

#include <string>
#include <string_view>
#include <vector>

namespace sluice::common {

// The name in `known` nearest `given` (`apyl`, `--dryrun`, `endpoint`,
// `prot`): at most two edits away (inserting, deleting or changing a
// character, or swapping two neighbours), one for a word of four
// characters or fewer; "" when none is, or two are equally near.
// `max_edits` other than 0 replaces that bound (a command line's few
// commands and flags: `apyl` is two from `apply`).
std::string Nearest(std::string_view given, const std::vector<std::string>& known,
                    size_t max_edits = 0);

}  // namespace sluice::common

#endif  // SLUICE_COMMON_NEAREST_H_
