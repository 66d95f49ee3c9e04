#include "controlplane/server/purge_relay.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "api/discovery.h"
#include "common/log.h"

namespace sluice::controlplane {

void PurgeRelay::Prune(absl::Time now) {
  while (!made_.empty() && now - made_.front().at > kReplayWindow) made_.pop_front();
  for (auto it = departed_.begin(); it != departed_.end();) {
    it = now - it->second.at > kReplayWindow ? departed_.erase(it) : std::next(it);
  }
}

void PurgeRelay::Attach(int handle, const discovery::v1::Node& node,
                        QueueFn queue) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_();
  Prune(now);
  if (auto left = departed_.find(node.id()); left != departed_.end()) {
    int replayed = 0;
    for (const Made& made : made_) {
      if (made.at < left->second.at - absl::Minutes(1)) continue;
      if (!made.group.empty() && made.group != node.group()) continue;
      discovery::v1::CachePurge command;
      command.set_id(next_id_++);  // no answer is waited for
      *command.mutable_selector() = made.selector;
      queue(command);
      ++replayed;
    }
    if (replayed > 0) {
      SLUICE_LOG(kInfo, "proxy ", node.id(), " is back ",
                 absl::FormatDuration(absl::Trunc(now - left->second.at, absl::Seconds(1))),
                 " after it left: sent it the ", replayed,
                 " cache purge(s) made from a minute before it left");
    }
    departed_.erase(left);
  }
  streams_[handle] = Stream{node.id(), node.group(), std::move(queue)};
}

void PurgeRelay::Detach(int handle) {
  absl::MutexLock lock(&mu_);
  if (auto it = streams_.find(handle); it != streams_.end()) {
    const std::string node_id = it->second.node_id;
    const std::string group = it->second.group;
    streams_.erase(it);
    const bool another = std::any_of(streams_.begin(), streams_.end(),
                                     [&](const auto& s) { return s.second.node_id == node_id; });
    if (!another) departed_[node_id] = Left{group, clock_()};
  }
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
  const absl::Time now = clock_();
  Prune(now);
  if (made_.size() >= kMaxReplayed) made_.pop_front();
  made_.push_back(Made{now, selector, group});
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
  for (const auto& [node_id, left] : departed_) {  // ordered by node id
    if (!group.empty() && left.group != group) continue;
    outcome.departed.push_back({node_id, now - left.at});
  }
  pending_.erase(id);
  return outcome;
}

int PurgeRelay::outstanding() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(pending_.size());
}

}  // namespace sluice::controlplane
