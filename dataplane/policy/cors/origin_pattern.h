// One entry of the `cors` policy's `origins`: parsed and checked here, for
// its validator (every binary that validates config) and its filter.
//
// Pure functions: any thread.
#ifndef SLUICE_DATAPLANE_POLICY_CORS_ORIGIN_PATTERN_H_
#define SLUICE_DATAPLANE_POLICY_CORS_ORIGIN_PATTERN_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace sluice::policy::cors {

struct OriginPattern {
  enum class Kind {
    kAny,    // "*"
    kExact,  // an origin; `value` is lower-case, without a default port
    kRegex,  // "~<regex>"; `value` is the regex, which compiled
  };
  Kind kind = Kind::kExact;
  std::string value;
};

// An InvalidArgument error's message says what is wrong without naming the
// field, e.g. "'https://a.example/' is not an origin ...", "invalid RE2
// regular expression '(': missing ): (".
absl::StatusOr<OriginPattern> ParseOriginPattern(std::string_view entry);

}  // namespace sluice::policy::cors

#endif  // SLUICE_DATAPLANE_POLICY_CORS_ORIGIN_PATTERN_H_
