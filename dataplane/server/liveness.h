// Liveness of the workers' event loops, for the admin /livez: a worker is
// stuck when a ping posted to its loop has waited kStuckAfter or more. A
// check posts a ping to each worker that has none waiting; so callers in a
// loop post nothing more, and a ping just posted (by another caller) counts
// for nothing yet. Thread-safe.
#ifndef SLUICE_DATAPLANE_SERVER_LIVENESS_H_
#define SLUICE_DATAPLANE_SERVER_LIVENESS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sluice::server {

class Liveness {
 public:
  static constexpr absl::Duration kStuckAfter = absl::Seconds(5);
  // `post(i, task)` runs `task` on worker i's loop (from any thread).
  using Post = std::function<void(size_t worker, std::function<void()> task)>;
  Liveness(size_t workers, Post post, std::function<absl::Time()> clock = absl::Now);

  // {true, "alive"}, or {false, "worker 1 has not run a task posted 5s or
  // more ago (its event loop is stuck)"}.
  std::pair<bool, std::string> Check();

 private:
  struct Ping {
    uint64_t sent = 0;
    absl::Time posted;  // of the last one sent
    std::atomic<uint64_t> answered{0};
  };
  const Post post_;
  const std::function<absl::Time()> clock_;
  absl::Mutex mu_;
  // Shared with the posted tasks, which may outlive this object.
  const std::shared_ptr<std::vector<Ping>> pings_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::server

#endif  // SLUICE_DATAPLANE_SERVER_LIVENESS_H_
