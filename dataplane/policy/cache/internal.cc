#include "dataplane/policy/cache/internal.h"

#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace sluice::policy::cache {
namespace {

absl::Mutex clock_mu(absl::kConstInit);
Clock* test_clock ABSL_GUARDED_BY(clock_mu) = nullptr;

}  // namespace

int64_t WallNanos() { return absl::GetCurrentTimeNanos(); }

void SetClockForTesting(Clock clock) {
  absl::MutexLock lock(&clock_mu);
  delete test_clock;
  test_clock = clock ? new Clock(std::move(clock)) : nullptr;
}

Clock CurrentClock() {
  absl::MutexLock lock(&clock_mu);
  return test_clock != nullptr ? *test_clock : Clock(&WallNanos);
}

std::string StateIdentity(const v1::CacheConfig& config) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream out(&stream);
    out.SetSerializationDeterministic(true);
    config.SerializeToCodedStream(&out);
  }
  return bytes;
}

}  // namespace sluice::policy::cache
