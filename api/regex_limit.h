// The one bound on the regular expressions a config may hold, wherever they
// are (route paths, header and query matchers, cors origins,
// request-validation patterns and JSON-schema patterns, request-transformer
// path rewrites): RE2's compiled program size. RE2 runs in linear time
// whatever the pattern, but compiling takes time and memory with the
// program's size, and counted repetitions of Unicode classes make it large
// from a few bytes: `/r(\pL|\pN){1,300}` is 400,000 instructions and 0.2 s
// to compile, so 60 of them in a route table made each apply and each
// proxy's update take seconds. Envoy bounds the same (re2.max_program_size,
// 100 by default); the limit here is larger, as `\pL{1,10}` alone is about
// 12,000.
#ifndef SLUICE_API_REGEX_LIMIT_H_
#define SLUICE_API_REGEX_LIMIT_H_

#include <re2/re2.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace sluice::api {

inline constexpr int kMaxRegexProgramSize = 20000;

// Empty when `re` (compiled without error) is within kMaxRegexProgramSize;
// else why not, for an error after the field's name.
inline std::string RegexProgramTooLarge(const RE2& re) {
  const int size = re.ProgramSize();
  if (size <= kMaxRegexProgramSize) return std::string();
  return absl::StrCat("the regular expression compiles to ", size,
                      " RE2 instructions, over the limit of ", kMaxRegexProgramSize,
                      " (counted repetitions of character classes grow it fast: use +, * or a "
                      "smaller count)");
}

}  // namespace sluice::api

#endif  // SLUICE_API_REGEX_LIMIT_H_
