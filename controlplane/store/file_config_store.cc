#include "controlplane/store/file_config_store.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace sluice::controlplane {

absl::Status FileConfigStore::Commit(uint64_t base_version,
                                     const StoredState& next,
                                     const StoredHistory& history,
                                     std::string* warning) {
  bool replaced = false;
  const auto& entries = history.entries;
  const bool append =
      stored_history_version_ != 0 && entries.size() >= 2 &&
      entries[entries.size() - 2].version == stored_history_version_ &&
      history_log_bytes_ < std::max(history_db_bytes_, kMinHistoryLogBytes);
  stored_history_version_ = 0;  // unknown until this commit's history is stored
  if (append) {
    size_t bytes = 0;
    if (absl::Status status = store_->AppendHistory(entries.back(), &bytes); !status.ok()) {
      return status;
    }
    history_log_bytes_ += bytes;
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
