#include "controlplane/store/file_config_store.h"

#include "absl/strings/str_cat.h"

namespace sluice::controlplane {

absl::Status FileConfigStore::Commit(uint64_t base_version,
                                     const StoredState& next,
                                     const StoredHistory& history,
                                     std::string* warning) {
  bool replaced = false;
  if (absl::Status status = store_->SaveHistory(history, &replaced);
      !status.ok()) {
    if (!replaced) return status;
    // Renamed, but the directory was not fsynced: the state's Save below
    // fsyncs the same directory, and says so if that fails too.
    *warning = std::string(status.message());
  }
  replaced = false;
  if (absl::Status status = store_->Save(next, &replaced); !status.ok()) {
    if (!replaced) return status;
    *warning = std::string(status.message());
    return absl::OkStatus();
  }
  warning->clear();
  return absl::OkStatus();
}

std::string FileConfigStore::Describe() const {
  std::string path = store_->state_path();
  return absl::StrCat("data dir ", path.substr(0, path.rfind('/')));
}

}  // namespace sluice::controlplane
