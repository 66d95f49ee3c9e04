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

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"

namespace sluice::api {

inline constexpr int kMaxRegexProgramSize = 20000;

// The bound on a whole config's regular expressions together: each proxy
// holds every one compiled (some 16 bytes an instruction, more once
// matching builds its DFA), and each apply compiles the new ones. One
// route table of 80 routes, each with 64 patterns just under the limit
// above, was 97 million instructions: 1.75 GB on every proxy, and 25 s to
// apply. 10,000 route regexes of a usual size are a few hundred thousand.
inline constexpr int64_t kMaxConfigRegexProgramSize = 1000000;

// Counts, while it lives, the program sizes of the regular expressions
// RegexProgramTooLarge is asked about on this thread (an inner count's
// total goes to the outer one too when it ends). Past
// kMaxConfigRegexProgramSize, RegexBudgetSpent() says so: the checks stop
// compiling more, as the config is refused anyway.
class RegexProgramCount {
 public:
  RegexProgramCount() : outer_(current_) { current_ = this; }
  ~RegexProgramCount() {
    current_ = outer_;
    if (outer_ != nullptr) outer_->total_ += total_;
  }
  RegexProgramCount(const RegexProgramCount&) = delete;
  RegexProgramCount& operator=(const RegexProgramCount&) = delete;

  int64_t total() const { return total_; }
  static void Add(int64_t size) {
    if (current_ != nullptr) current_->total_ += size;
  }
  // The innermost count and those around it, past the config's bound.
  static bool Spent() {
    int64_t sum = 0;
    for (const RegexProgramCount* c = current_; c != nullptr; c = c->outer_) sum += c->total_;
    return sum > kMaxConfigRegexProgramSize;
  }

 private:
  RegexProgramCount* const outer_;
  int64_t total_ = 0;
  static inline thread_local RegexProgramCount* current_ = nullptr;
};

// Whether a count in force has passed kMaxConfigRegexProgramSize.
inline bool RegexBudgetSpent() { return RegexProgramCount::Spent(); }

// Empty when `re` (compiled without error) is within kMaxRegexProgramSize;
// else why not, for an error after the field's name. Counted by a
// RegexProgramCount in force.
inline std::string RegexProgramTooLarge(const RE2& re) {
  const int size = re.ProgramSize();
  RegexProgramCount::Add(size);
  if (size <= kMaxRegexProgramSize) return std::string();
  return absl::StrCat("the regular expression compiles to ", size,
                      " RE2 instructions, over the limit of ", kMaxRegexProgramSize,
                      " (counted repetitions of character classes grow it fast: use +, * or a "
                      "smaller count)");
}

}  // namespace sluice::api

#endif  // SLUICE_API_REGEX_LIMIT_H_
