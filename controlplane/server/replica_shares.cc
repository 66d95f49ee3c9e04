#include "controlplane/server/replica_shares.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/log.h"
#include "common/random_id.h"

namespace sluice::controlplane {
namespace {

constexpr char kHeader[] = "sluice-replica-demand 1";
constexpr char kProxies[] = "#proxies";

}  // namespace

std::string EncodeReplicaDemand(const ReplicaDemand& demand, size_t proxies) {
  std::string out = absl::StrCat(kHeader, "\n", kProxies, "\t", proxies, "\n");
  for (const auto& [key, rate] : demand) {
    absl::StrAppend(&out, absl::CEscape(key), "\t",
                    absl::StrFormat("%.6g", rate), "\n");
  }
  return out;
}

absl::StatusOr<ReplicaDemand> DecodeReplicaDemand(const std::string& value,
                                                  size_t* proxies) {
  if (proxies != nullptr) *proxies = 0;
  std::vector<std::string> lines =
      absl::StrSplit(value, '\n', absl::SkipEmpty());
  if (lines.empty() || lines.front() != kHeader) {
    return absl::InvalidArgumentError(
        absl::StrCat("replica demand: line 1: expected \"", kHeader, "\""));
  }
  ReplicaDemand demand;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> fields = absl::StrSplit(lines[i], '\t');
    if (fields.size() == 2 && fields[0] == kProxies) {
      uint64_t count = 0;
      if (!absl::SimpleAtoi(fields[1], &count)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "replica demand: line ", i + 1, ": expected #proxies TAB COUNT"));
      }
      if (proxies != nullptr) *proxies = count;
      continue;
    }
    std::string key;
    double rate = 0;
    if (fields.size() != 2 || !absl::CUnescape(fields[0], &key) ||
        !absl::SimpleAtod(fields[1], &rate) || !(rate >= 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("replica demand: line ", i + 1,
                       ": expected ESCAPED-KEY TAB DEMAND (>= 0)"));
    }
    demand[key] = rate;
  }
  return demand;
}

absl::flat_hash_map<std::string, double> ReplicaFractions(
    const ReplicaDemand& own, const std::vector<ReplicaDemand>& others,
    double floor_fraction) {
  absl::flat_hash_map<std::string, double> fractions;
  for (const auto& [key, own_rate] : own) {
    size_t replicas = 1;
    double total = std::max(own_rate, 0.0);
    for (const ReplicaDemand& other : others) {
      auto it = other.find(key);
      if (it == other.end()) continue;
      ++replicas;
      total += std::max(it->second, 0.0);
    }
    if (replicas == 1) {
      fractions[key] = 1.0;  // no other replica's proxies are on it
      continue;
    }
    const double n = static_cast<double>(replicas);
    const double fraction =
        total <= 0
            ? 1.0 / n
            : std::max(std::max(own_rate, 0.0) / total, floor_fraction / n);
    fractions[key] = std::min(fraction, 1.0);
  }
  return fractions;
}

ReplicaShareExchange::ReplicaShareExchange(ReplicaDemandBoard* board,
                                           LeaseAllocator* allocator,
                                           ReplicaShareOptions options)
    : board_(board),
      allocator_(allocator),
      options_(std::move(options)),
      own_entry_(board, options_.replica_id),
      runner_("rate-limit demand exchange", "keeping the last shares", options_.period,
              [this] { return RunOnce(); }) {}

ReplicaShareExchange::~ReplicaShareExchange() { Stop(); }

std::string ReplicaShareExchange::NewReplicaId() { return RandomHexId(); }

absl::Status ReplicaShareExchange::RunOnce() {
  absl::MutexLock lock(&run_mu_);
  absl::Status status = RunOnceLocked();
  own_entry_.RunEnded(status);
  return status;
}

absl::Status ReplicaShareExchange::RunOnceLocked() {
  const ReplicaDemand own = allocator_->Demand();
  if (absl::Status published = own_entry_.Publish(
          EncodeReplicaDemand(own, allocator_->own_proxies(options_.clock())));
      !published.ok()) {
    return published;
  }
  absl::StatusOr<std::vector<ReplicaDemandBoard::Entry>> entries =
      board_->ReadAll();
  if (!entries.ok()) return entries.status();
  const absl::Time now = options_.clock();
  std::vector<ReplicaDemand> others;
  size_t other_proxies = 0;
  absl::flat_hash_map<std::string, Seen> seen;
  for (ReplicaDemandBoard::Entry& entry : *entries) {
    if (entry.replica == options_.replica_id) continue;
    Seen current{entry.revision, now};
    if (auto before = seen_.find(entry.replica);
        before != seen_.end() && before->second.revision == entry.revision) {
      current.changed = before->second.changed;
    }
    seen[entry.replica] = current;
    const absl::Duration unchanged = now - current.changed;
    if (unchanged > options_.forget_after) {
      // A replica that died long ago (its random id never comes back).
      board_->Remove(entry.replica, entry.revision).IgnoreError();
      continue;
    }
    if (unchanged > options_.stale_after) continue;
    size_t proxies = 0;
    absl::StatusOr<ReplicaDemand> demand = DecodeReplicaDemand(entry.value, &proxies);
    if (!demand.ok()) {
      SLUICE_LOG(kWarning, "replica ", entry.replica,
                 "'s rate-limit demand ignored: ", demand.status().message());
      continue;
    }
    others.push_back(*std::move(demand));
    other_proxies += proxies;
  }
  seen_ = std::move(seen);
  allocator_->SetOtherReplicasProxies(other_proxies);
  allocator_->SetReplicaShares(ReplicaFractions(own, others, options_.floor_fraction),
                               others.size() + 1);
  return absl::OkStatus();
}

void ReplicaShareExchange::Start() { runner_.Start(); }

void ReplicaShareExchange::RequestStop() { runner_.RequestStop(); }

void ReplicaShareExchange::Stop() {
  runner_.Stop();
  absl::MutexLock lock(&run_mu_);
  own_entry_.Remove();
}

absl::Status OwnBoardEntry::Publish(std::string value) {
  absl::Status status = board_->Publish(replica_, std::move(value));
  if (status.ok()) published_ = true;
  return status;
}

void OwnBoardEntry::RunEnded(const absl::Status& status) {
  out_of_reach_ = absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status);
}

void OwnBoardEntry::Remove() {
  if (published_ && !out_of_reach_) board_->Remove(replica_, 0).IgnoreError();
  published_ = false;
}

PeriodicRunner::PeriodicRunner(std::string what, std::string meanwhile, absl::Duration period,
                               std::function<absl::Status()> run)
    : what_(std::move(what)),
      meanwhile_(std::move(meanwhile)),
      period_(period),
      run_(std::move(run)) {}

PeriodicRunner::~PeriodicRunner() { Stop(); }

void PeriodicRunner::Start() {
  absl::MutexLock lock(&mu_);
  if (started_ || stopping_) return;
  started_ = true;
  thread_ = std::thread([this] { Loop(); });
}

void PeriodicRunner::Loop() {
  bool failing = false;  // logged once until it works again
  while (true) {
    absl::Status status = run_();
    if (!status.ok() && !failing) {
      SLUICE_LOG(kWarning, what_, " with the other replicas failed: ", status.message(), "; ",
                 meanwhile_);
    } else if (status.ok() && failing) {
      SLUICE_LOG(kInfo, what_, " with the other replicas works again");
    }
    failing = !status.ok();
    absl::MutexLock lock(&mu_);
    if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), period_)) return;
  }
}

void PeriodicRunner::RequestStop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
}

void PeriodicRunner::Stop() {
  RequestStop();
  absl::MutexLock lock(&join_mu_);
  if (thread_.joinable()) thread_.join();
}

}  // namespace sluice::controlplane
