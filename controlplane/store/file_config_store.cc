#include "controlplane/store/file_config_store.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "api/resource.h"

namespace sluice::controlplane {
namespace {

// The Secrets a history holds: the oldest version's, and those its versions
// added or changed.
absl::flat_hash_set<uint64_t> SecretsOf(const StoredHistory& history) {
  absl::flat_hash_set<uint64_t> secrets;
  for (auto it = history.base.lower_bound({api::ResourceKind::SECRET, ""});
       it != history.base.end() && it->first.first == api::ResourceKind::SECRET; ++it) {
    secrets.insert(api::ContentHash(it->second));
  }
  for (const HistoryEntry& entry : history.entries) {
    for (const SharedResourceList* list : {&entry.added, &entry.changed}) {
      for (const PackedResource& r : list->items()) {
        if (r.id.first == api::ResourceKind::SECRET) secrets.insert(r.Hash());
      }
    }
  }
  return secrets;
}

}  // namespace

absl::Status FileConfigStore::Commit(uint64_t base_version,
                                     const StoredState& next,
                                     const StoredHistory& history,
                                     std::string* warning) {
  bool replaced = false;
  const auto& entries = history.entries;
  bool append =
      stored_history_version_ != 0 && entries.size() >= 2 &&
      entries[entries.size() - 2].version == stored_history_version_ &&
      history_log_bytes_ < std::max(history_db_bytes_, kMinHistoryLogBytes);
  // A Secret on disk that no kept version has any more (a key rotated away,
  // aged out of --history): written whole, so the key leaves the disk.
  absl::flat_hash_set<uint64_t> kept_secrets;
  if (!secrets_on_disk_.empty() || !append) kept_secrets = SecretsOf(history);
  if (append) {
    for (uint64_t secret : secrets_on_disk_) {
      if (!kept_secrets.contains(secret)) {
        append = false;
        break;
      }
    }
  }
  stored_history_version_ = 0;  // unknown until this commit's history is stored
  if (append) {
    size_t bytes = 0;
    if (absl::Status status = store_->AppendHistory(entries.back(), &bytes); !status.ok()) {
      return status;
    }
    history_log_bytes_ += bytes;
    for (const SharedResourceList* list : {&entries.back().added, &entries.back().changed}) {
      for (const PackedResource& r : list->items()) {
        if (r.id.first == api::ResourceKind::SECRET) secrets_on_disk_.insert(r.Hash());
      }
    }
  } else {
    size_t bytes = 0;
    if (absl::Status status = store_->SaveHistory(history, &replaced, &bytes);
        !status.ok()) {
      if (!replaced) return status;
      // Renamed, but the directory was not fsynced: the state's Save below
      // fsyncs the same directory, and says so if that fails too.
      *warning = std::string(status.message());
    }
    history_db_bytes_ = bytes;
    history_log_bytes_ = 0;
    secrets_on_disk_ = std::move(kept_secrets);
  }
  replaced = false;
  if (absl::Status status = store_->Save(next, &replaced); !status.ok()) {
    // Not stored: the history on disk is a version ahead of the state (the
    // next start drops it), so the next commit writes history.db whole.
    if (!replaced) return status;
    *warning = std::string(status.message());
  } else {
    warning->clear();
  }
  if (!entries.empty()) stored_history_version_ = entries.back().version;
  return absl::OkStatus();
}

std::string FileConfigStore::Describe() const {
  std::string path = store_->state_path();
  return absl::StrCat("data dir ", path.substr(0, path.rfind('/')));
}

}  // namespace sluice::controlplane
