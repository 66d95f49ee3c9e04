// AcceptBackoff: what to do when accept(2) fails for want of descriptors
// (EMFILE, ENFILE, ENOBUFS, ENOMEM). The connection stays queued in the
// kernel and the listening socket stays readable, so accepting again at
// once would spin: stop accepting for 50 ms, doubling to 1 s while the
// failures go on, and say so once per 10 s. Used by the proxy's workers and
// by OpsHttpServer (the admin and metrics endpoints).
//
// Thread-compatible (one per accepting thread).
#ifndef SLUICE_COMMON_ACCEPT_BACKOFF_H_
#define SLUICE_COMMON_ACCEPT_BACKOFF_H_

#include <algorithm>

#include "absl/time/time.h"

namespace sluice::common {

class AcceptBackoff {
 public:
  // A failure at `now`: how long to stop accepting. `*log`: whether to
  // say so now (at most once per 10 s). A failure 10 s or more after the
  // last one starts again from 50 ms.
  absl::Duration OnFailure(absl::Time now, bool* log) {
    if (now - last_failure_ >= absl::Seconds(10)) pause_ = absl::ZeroDuration();
    last_failure_ = now;
    pause_ = pause_ == absl::ZeroDuration() ? absl::Milliseconds(50)
                                            : std::min(pause_ * 2, absl::Seconds(1));
    *log = now - last_log_ >= absl::Seconds(10);
    if (*log) last_log_ = now;
    return pause_;
  }
  // A connection was accepted: the next failure starts from 50 ms.
  void OnSuccess() { pause_ = absl::ZeroDuration(); }

 private:
  absl::Duration pause_ = absl::ZeroDuration();
  absl::Time last_failure_ = absl::InfinitePast();
  absl::Time last_log_ = absl::InfinitePast();
};

}  // namespace sluice::common

#endif  // SLUICE_COMMON_ACCEPT_BACKOFF_H_
