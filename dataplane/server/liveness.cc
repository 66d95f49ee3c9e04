#include "dataplane/server/liveness.h"

#include "absl/strings/str_cat.h"

namespace sluice::server {

Liveness::Liveness(size_t workers, Post post, std::function<absl::Time()> clock)
    : post_(std::move(post)),
      clock_(std::move(clock)),
      pings_(std::make_shared<std::vector<Ping>>(workers)) {}

std::pair<bool, std::string> Liveness::Check() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_();
  std::string stuck;
  for (size_t i = 0; i < pings_->size(); ++i) {
    Ping& ping = (*pings_)[i];
    if (ping.answered.load() < ping.sent) {
      if (now - ping.posted >= kStuckAfter) {
        absl::StrAppend(&stuck, stuck.empty() ? "" : ", ", i);
      }
      continue;
    }
    const uint64_t n = ++ping.sent;
    ping.posted = now;
    post_(i, [pings = pings_, i, n] { (*pings)[i].answered.store(n); });
  }
  if (stuck.empty()) return {true, "alive"};
  return {false, absl::StrCat("worker ", stuck, " has not run a task posted ",
                              absl::FormatDuration(kStuckAfter),
                              " or more ago (its event loop is stuck)")};
}

}  // namespace sluice::server
