#include "controlplane/server/config_state.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "api/validation.h"
#include "common/log.h"
#include "google/protobuf/util/message_differencer.h"

namespace sluice::controlplane {

std::shared_ptr<const Snapshot> MakeSnapshot(uint64_t version,
                                             api::ResourceMap resources) {
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->version = version;
  for (const auto& [id, resource] : resources) {
    snapshot->hashes[id] = api::ContentHash(resource);
  }
  snapshot->resources = std::move(resources);
  return snapshot;
}

absl::StatusOr<std::unique_ptr<ConfigState>> ConfigState::Create(
    std::unique_ptr<FileStore> store, Clock clock) {
  absl::StatusOr<StoredState> stored = store->Load();
  if (!stored.ok()) return stored.status();
  // A stored state was valid when it was accepted; if this build's rules
  // reject it, say so but keep serving it: the operator fixes it with apply.
  if (absl::Status status = api::CheckState(stored->resources); !status.ok()) {
    SLUICE_LOG(kWarning, "the stored state does not pass this build's validation:\n",
               status.message());
  }
  auto snapshot = MakeSnapshot(stored->version, std::move(stored->resources));
  return std::unique_ptr<ConfigState>(
      new ConfigState(std::move(store), snapshot, std::move(clock)));
}

ConfigState::ConfigState(std::unique_ptr<FileStore> store,
                         std::shared_ptr<const Snapshot> initial, Clock clock)
    : clock_(std::move(clock)), store_(std::move(store)), current_(std::move(initial)) {}

std::shared_ptr<const Snapshot> ConfigState::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::Apply(
    const std::vector<api::Resource>& resources, bool dry_run) {
  absl::MutexLock write_lock(&write_mu_);
  std::shared_ptr<const Snapshot> base = Current();
  api::ResourceMap next = base->resources;
  std::set<api::ResourceId> seen;
  std::vector<std::string> errors;
  std::vector<api::ValidationError> apply_time_errors;
  const absl::Time now = clock_();
  for (size_t i = 0; i < resources.size(); ++i) {
    const api::Resource& resource = resources[i];
    if (resource.kind_case() == api::Resource::KIND_NOT_SET) {
      errors.push_back(absl::StrCat("resources[", i, "]: has no kind"));
      continue;
    }
    api::ResourceId id = api::IdOf(resource);
    if (!seen.insert(id).second) {
      errors.push_back(absl::StrCat(api::Describe(id), ": appears twice in one apply"));
      continue;
    }
    // Only what this apply adds or changes: re-applying an unchanged Secret
    // whose certificate has expired since does not block other changes.
    auto stored = base->resources.find(id);
    if (stored == base->resources.end() ||
        !google::protobuf::util::MessageDifferencer::Equals(stored->second, resource)) {
      api::ValidateAtApplyTime(resource, now, &apply_time_errors);
    }
    next[id] = resource;
  }
  if (!errors.empty()) {
    std::string message;
    for (const auto& e : errors) absl::StrAppend(&message, message.empty() ? "" : "\n", e);
    return absl::InvalidArgumentError(message);
  }
  return Commit(std::move(next), dry_run, /*is_delete=*/false, nullptr,
                std::move(apply_time_errors));
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::Delete(
    const api::ResourceId& id, bool dry_run) {
  absl::MutexLock write_lock(&write_mu_);
  std::shared_ptr<const Snapshot> base = Current();
  if (!base->resources.count(id)) {
    return absl::NotFoundError(absl::StrCat(api::Describe(id), " does not exist"));
  }
  api::ResourceMap next = base->resources;
  next.erase(id);
  return Commit(std::move(next), dry_run, /*is_delete=*/true, &id);
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::Commit(
    api::ResourceMap next, bool dry_run, bool is_delete,
    const api::ResourceId* deleted, std::vector<api::ValidationError> apply_time_errors) {
  if (shutting_down()) {
    return absl::UnavailableError("sluice-control is shutting down");
  }
  std::shared_ptr<const Snapshot> base = Current();
  std::vector<api::ValidationError> errors = api::ValidateState(next);
  errors.insert(errors.end(), std::make_move_iterator(apply_time_errors.begin()),
                std::make_move_iterator(apply_time_errors.end()));
  if (absl::Status status = api::ToStatus(errors); !status.ok()) {
    if (is_delete) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot delete ", api::Describe(*deleted),
                       ": the rest of the config needs it:\n", status.message()));
    }
    return status;
  }
  ChangeResult result;
  result.diff = api::ComputeDiff(base->resources, next);
  result.version = base->version;
  if (dry_run || result.diff.empty()) return result;

  StoredState stored{base->version + 1, std::move(next)};
  if (absl::Status status = store_->Save(stored); !status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "the change was not stored, nothing changed: ", status.message()));
  }
  result.version = stored.version;
  auto snapshot = MakeSnapshot(stored.version, std::move(stored.resources));
  {
    absl::MutexLock lock(&mu_);
    current_ = std::move(snapshot);
  }
  SLUICE_LOG(kInfo, "version ", result.version, ": ", result.diff.added.size(),
             " added, ", result.diff.changed.size(), " changed, ",
             result.diff.removed.size(), " removed");
  Notify(false);
  return result;
}

int ConfigState::Subscribe(std::function<void(bool)> callback) {
  absl::MutexLock lock(&mu_);
  int id = next_subscriber_++;
  if (shutting_down_) callback(true);
  subscribers_[id] = std::move(callback);
  return id;
}

void ConfigState::Unsubscribe(int id) {
  absl::MutexLock lock(&mu_);
  subscribers_.erase(id);
}

void ConfigState::Notify(bool shutting_down) {
  absl::MutexLock lock(&mu_);
  for (auto& [id, callback] : subscribers_) callback(shutting_down);
}

void ConfigState::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
  }
  Notify(true);
}

bool ConfigState::shutting_down() const {
  absl::MutexLock lock(&mu_);
  return shutting_down_;
}

}  // namespace sluice::controlplane
