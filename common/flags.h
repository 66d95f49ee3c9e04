// Command-line flags in the form operators expect: --name VALUE,
// --name=VALUE and bare --switch, with hyphenated names.
//
// Not thread-safe; used once at start-up.
#ifndef SLUICE_COMMON_FLAGS_H_
#define SLUICE_COMMON_FLAGS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace sluice {

struct ParsedFlags {
  std::map<std::string, std::string> values;  // flag name without dashes
  std::set<std::string> switches;             // bare switches that were given
  std::vector<std::string> positional;
  // Value flags given more than once (`values` keeps the last): a command
  // that takes each once refuses them.
  std::set<std::string> repeated;
};

// `with_value` lists flags that take a value; `switches` those that do not.
// Unknown flags and missing values are errors that name the flag.
absl::StatusOr<ParsedFlags> ParseFlags(int argc, char** argv,
                                       const std::set<std::string>& with_value,
                                       const std::set<std::string>& switches);

// Reads integer flag `name` into `*out` when it was given (`*out` keeps its
// default otherwise). INVALID_ARGUMENT "--NAME must be LO..HI, not 'VALUE'"
// ("at least LO" when `hi` is the int64 maximum) for a value that is not a
// whole number in range.
absl::Status IntFlagInRange(const ParsedFlags& flags, const std::string& name, int64_t lo,
                            int64_t hi, int64_t* out);

// Parses a duration such as "30s", "250ms", "1m"; names `flag` in errors.
absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& flag,
                                                 const std::string& value);

// Checks a HOST:PORT flag (host a name, an IPv4 address or [IPv6]; port
// 1..65535, or 0 too with `allow_zero`: a port the kernel picks): gRPC would
// otherwise take "h:89636" as port 24100 and "h:" as 443. INVALID_ARGUMENT
// naming `flag` and what is wrong.
absl::Status CheckHostPortFlag(const std::string& flag, const std::string& value,
                               bool allow_zero = false);

}  // namespace sluice

#endif  // SLUICE_COMMON_FLAGS_H_
