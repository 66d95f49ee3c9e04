#include "common/grpc_log.h"

#include <grpc/support/log.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace sluice {
namespace {

absl::Mutex mu;
double credit ABSL_GUARDED_BY(mu) = kGrpcLogBurst;
absl::Time refilled ABSL_GUARDED_BY(mu) = absl::InfinitePast();
uint64_t suppressed ABSL_GUARDED_BY(mu) = 0;

void OnGrpcLog(gpr_log_func_args* args) {
  const LogLevel level = args->severity == GPR_LOG_SEVERITY_ERROR  ? LogLevel::kError
                         : args->severity == GPR_LOG_SEVERITY_INFO ? LogLevel::kInfo
                                                                   : LogLevel::kDebug;
  if (!LogEnabled(level)) return;
  uint64_t dropped = 0;
  {
    absl::MutexLock lock(&mu);
    const absl::Time now = absl::Now();
    if (refilled != absl::InfinitePast()) {
      credit = std::min(kGrpcLogBurst,
                        credit + std::max(0.0, absl::ToDoubleSeconds(now - refilled)) *
                                     kGrpcLogPerSecond);
    }
    refilled = now;
    if (credit < 1) {
      ++suppressed;
      return;
    }
    credit -= 1;
    dropped = suppressed;
    suppressed = 0;
  }
  std::string line = absl::StrCat("grpc: ", args->message != nullptr ? args->message : "", " (",
                                  args->file != nullptr ? args->file : "?", ":", args->line, ")");
  if (dropped > 0) {
    absl::StrAppend(&line, " (and ", dropped, " more gRPC log lines not written since the last: at most ",
                    kGrpcLogPerSecond, " a second)");
  }
  LogLine(level, line);
}

}  // namespace

void RouteGrpcLogging() { gpr_set_log_function(&OnGrpcLog); }

}  // namespace sluice
