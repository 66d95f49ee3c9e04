// Minimal leveled logging to stderr, shared by every Sluice binary.
//
// Thread-safe: each line is written with one write(2). The level is process
// wide and set once at start-up.
#ifndef SLUICE_COMMON_LOG_H_
#define SLUICE_COMMON_LOG_H_

#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace sluice {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Parses "debug", "info", "warning" (or "warn") and "error".
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view text);
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
void LogLine(LogLevel level, absl::string_view message);

// Aborts the process with `message`: for broken invariants inside our own code.
[[noreturn]] void Fatal(absl::string_view message);

}  // namespace sluice

#define SLUICE_LOG(level, ...)                                      \
  do {                                                              \
    if (::sluice::LogEnabled(::sluice::LogLevel::level)) {          \
      ::sluice::LogLine(::sluice::LogLevel::level,                  \
                        ::absl::StrCat(__VA_ARGS__));               \
    }                                                               \
  } while (0)

#define SLUICE_CHECK(cond)                                                 \
  do {                                                                     \
    if (!(cond)) {                                                         \
      ::sluice::Fatal(::absl::StrCat(__FILE__, ":", __LINE__,              \
                                     ": check failed: ", #cond));          \
    }                                                                      \
  } while (0)

#endif  // SLUICE_COMMON_LOG_H_
