#include "controlplane/server/fleet_view.h"

#include <utility>

#include "common/log.h"

namespace sluice::controlplane {

FleetView::FleetView(ReplicaDemandBoard* board,
                     std::function<std::vector<admin::v1::ProxyStatus>()> own,
                     FleetViewOptions options)
    : board_(board),
      own_(std::move(own)),
      options_(std::move(options)),
      own_entry_(board, options_.replica_id),
      runner_("proxy list exchange", "sluicectl proxies shows the last one read",
              options_.period, [this] { return RunOnce(); }),
      created_(options_.clock()) {}

FleetView::~FleetView() { Stop(); }

absl::Status FleetView::RunOnce() {
  absl::MutexLock lock(&run_mu_);
  absl::Status status = RunOnceLocked();
  own_entry_.RunEnded(status);
  return status;
}

absl::Status FleetView::RunOnceLocked() {
  admin::v1::ListProxiesResponse mine;
  for (admin::v1::ProxyStatus& status : own_()) {
    status.set_replica(options_.replica_id);
    *mine.add_proxies() = std::move(status);
  }
  std::string value = mine.SerializeAsString();
  // Cut to fit, least needed first: traffic reports, then long NACK
  // messages, then every NACK message and feature list (versions, the NACKed
  // one included, always stay: --wait needs them).
  for (int cut = 0; cut < 3 && value.size() > options_.max_entry_bytes; ++cut) {
    for (admin::v1::ProxyStatus& status : *mine.mutable_proxies()) {
      if (cut == 0) {
        status.clear_last_report();
        status.clear_last_report_time();
      } else if (cut == 1) {
        if (status.last_nack_error().size() > kNackBytesWhenCut) {
          status.mutable_last_nack_error()->resize(kNackBytesWhenCut);
        }
      } else {
        if (!status.last_nack_error().empty()) status.set_last_nack_error("(cut: too long to share)");
        status.mutable_node()->clear_client_features();
        status.mutable_node()->clear_build_version();
      }
    }
    value = mine.SerializeAsString();
  }
  if (value.size() > options_.max_entry_bytes && !too_large_logged_) {
    SLUICE_LOG(kWarning, "this replica's ", mine.proxies_size(), " proxies take ", value.size(),
               " bytes, over the ", options_.max_entry_bytes,
               " an etcd request may hold: the other replicas do not see them (raise etcd's "
               "--max-request-bytes and --etcd-max-request-bytes)");
    too_large_logged_ = true;
  } else if (value.size() <= options_.max_entry_bytes) {
    too_large_logged_ = false;
  }
  // Published every period, changed or not: the revision moving is what
  // tells the others this replica lives. The others are read even when etcd
  // refused this replica's entry.
  absl::Status published = own_entry_.Publish(std::move(value));
  // Out of reach (not a refusal, such as an entry over etcd's request
  // limit): the read would wait as long again for nothing.
  if (absl::IsUnavailable(published) || absl::IsDeadlineExceeded(published)) return published;
  absl::StatusOr<std::vector<ReplicaDemandBoard::Entry>> entries = board_->ReadAll();
  if (!entries.ok()) return entries.status();
  const absl::Time now = options_.clock();
  absl::flat_hash_map<std::string, Seen> seen;
  absl::flat_hash_map<std::string, admin::v1::ListProxiesResponse> kept;
  std::vector<admin::v1::ProxyStatus> others;
  std::vector<admin::v1::ProxyStatus> silent_proxies;
  for (ReplicaDemandBoard::Entry& entry : *entries) {
    if (entry.replica == options_.replica_id) continue;
    auto before = seen_.find(entry.replica);
    const bool first_sight = before == seen_.end();
    Seen current{entry.revision, now, false};
    if (!first_sight) {
      if (before->second.revision == entry.revision) {
        current.changed = before->second.changed;
        current.confirmed = before->second.confirmed;
      } else {
        current.confirmed = true;
      }
    }
    seen[entry.replica] = current;
    const absl::Duration unchanged = now - current.changed;
    if (unchanged > options_.forget_after) {
      board_->Remove(entry.replica, entry.revision).IgnoreError();
      continue;
    }
    // Live once seen to change, until it stops changing: a dead replica's
    // entry, never changing, never counts; one that stopped changing while
    // watched is silent.
    if (!current.confirmed) continue;
    const bool silent = unchanged > options_.stale_after;
    admin::v1::ListProxiesResponse theirs;
    if (auto known = entries_.find(entry.replica);
        known != entries_.end() && !first_sight && before->second.revision == entry.revision) {
      theirs = std::move(known->second);  // unchanged: not parsed again
    } else if (!theirs.ParseFromString(entry.value)) {
      SLUICE_LOG(kWarning, "replica ", entry.replica, "'s proxy list ignored: it does not parse");
      continue;
    }
    for (const admin::v1::ProxyStatus& status : theirs.proxies()) {
      if (!silent) {
        others.push_back(status);
        continue;
      }
      admin::v1::ProxyStatus& quiet = silent_proxies.emplace_back(status);
      quiet.mutable_replica_silent_for()->set_seconds(absl::ToInt64Seconds(unchanged));
      quiet.mutable_replica_silent_for()->set_nanos(
          static_cast<int32_t>(absl::ToInt64Nanoseconds(unchanged % absl::Seconds(1))));
    }
    kept[entry.replica] = std::move(theirs);
  }
  seen_ = std::move(seen);
  entries_ = std::move(kept);
  {
    absl::MutexLock others_lock(&others_mu_);
    others_ = std::move(others);
    silent_ = std::move(silent_proxies);
    read_at_ = now;
    ++good_reads_;
  }
  return published;
}

bool FleetView::WaitWhole(absl::Duration timeout) {
  absl::MutexLock lock(&others_mu_);
  auto whole = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(others_mu_) { return good_reads_ >= 2; };
  return others_mu_.AwaitWithTimeout(absl::Condition(&whole), timeout);
}

std::vector<admin::v1::ProxyStatus> FleetView::Others() {
  absl::MutexLock lock(&others_mu_);
  if (options_.clock() - read_at_ > options_.stale_after) return {};  // the board is out of reach
  return others_;
}

std::vector<admin::v1::ProxyStatus> FleetView::Silent() {
  absl::MutexLock lock(&others_mu_);
  if (options_.clock() - read_at_ > options_.stale_after) return {};  // the board is out of reach
  return silent_;
}

absl::Duration FleetView::UnreadFor() {
  absl::MutexLock lock(&others_mu_);
  const absl::Time from = read_at_ == absl::InfinitePast() ? created_ : read_at_;
  const absl::Duration unread = options_.clock() - from;
  return unread > options_.stale_after ? unread : absl::ZeroDuration();
}

void FleetView::Start() { runner_.Start(); }

void FleetView::RequestStop() { runner_.RequestStop(); }

void FleetView::Stop() {
  runner_.Stop();
  absl::MutexLock lock(&run_mu_);
  own_entry_.Remove();
}

}  // namespace sluice::controlplane
