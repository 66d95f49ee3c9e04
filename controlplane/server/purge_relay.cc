#include "controlplane/server/purge_relay.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "api/discovery.h"

namespace sluice::controlplane {

void PurgeRelay::Attach(int handle, const discovery::v1::Node& node,
                        QueueFn queue) {
  absl::MutexLock lock(&mu_);
  streams_[handle] = Stream{node.id(), node.group(), std::move(queue)};
}

void PurgeRelay::Detach(int handle) {
  absl::MutexLock lock(&mu_);
  streams_.erase(handle);
  for (auto& [id, pending] : pending_) {
    auto it = pending.targets.find(handle);
    if (it == pending.targets.end() || it->second.answered) continue;
    it->second.answered = true;
    it->second.reason = "disconnected before answering";
    --pending.unanswered;
  }
}

void PurgeRelay::Answered(int handle,
                          const discovery::v1::PurgeResult& result) {
  absl::MutexLock lock(&mu_);
  auto pending = pending_.find(result.id());
  if (pending == pending_.end()) return;  // too late: the purge timed out
  auto it = pending->second.targets.find(handle);
  if (it == pending->second.targets.end() || it->second.answered) return;
  Target& target = it->second;
  target.answered = true;
  target.entries_removed = result.entries_removed();
  if (result.error().empty()) {
    target.confirmed = true;
  } else {
    // Bounded like a NACK's reason.
    target.reason = result.error().substr(0, api::kMaxNackErrorBytes);
  }
  --pending->second.unanswered;
}

PurgeOutcome PurgeRelay::Purge(const discovery::v1::PurgeSelector& selector,
                               const std::string& group,
                               absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const uint64_t id = next_id_++;
  discovery::v1::CachePurge command;
  command.set_id(id);
  *command.mutable_selector() = selector;
  Pending& pending = pending_[id];
  for (const auto& [handle, stream] : streams_) {
    if (!group.empty() && stream.group != group) continue;
    pending.targets[handle].node_id = stream.node_id;
    ++pending.unanswered;
    stream.queue(command);
  }
  auto all_answered = [](Pending* p) { return p->unanswered == 0; };
  mu_.AwaitWithTimeout(absl::Condition(+all_answered, &pending), timeout);

  PurgeOutcome outcome;
  outcome.targeted = static_cast<int>(pending.targets.size());
  for (const auto& [handle, target] : pending.targets) {
    if (target.confirmed) {
      ++outcome.confirmed;
      outcome.entries_removed += target.entries_removed;
      continue;
    }
    outcome.failures.push_back(
        {target.node_id, target.answered
                             ? target.reason
                             : absl::StrCat("no answer within ",
                                            absl::FormatDuration(timeout))});
  }
  std::stable_sort(
      outcome.failures.begin(), outcome.failures.end(),
      [](const auto& a, const auto& b) { return a.node_id < b.node_id; });
  pending_.erase(id);
  return outcome;
}

int PurgeRelay::outstanding() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(pending_.size());
}

}  // namespace sluice::controlplane
