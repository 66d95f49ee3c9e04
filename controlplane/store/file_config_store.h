// The default ConfigStore and TokenStore: the data dir's files (FileStore's
// state.db and history.db, TokenFile's tokens.db), written by this control
// plane alone (the data dir is locked). Never calls a Watch callback.
//
// Not thread-safe: the caller serializes (ConfigState and OperatorTokens do).
#ifndef SLUICE_CONTROLPLANE_STORE_FILE_CONFIG_STORE_H_
#define SLUICE_CONTROLPLANE_STORE_FILE_CONFIG_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "controlplane/store/config_store.h"
#include "controlplane/store/file_store.h"

namespace sluice::controlplane {

// history.log may grow to this size, or history.db's, before history.db is
// written whole again.
inline constexpr size_t kMinHistoryLogBytes = size_t{1} << 20;

class FileConfigStore : public ConfigStore {
 public:
  explicit FileConfigStore(std::unique_ptr<FileStore> store)
      : store_(std::move(store)) {}

  absl::StatusOr<StoredState> Load() override { return store_->Load(); }
  absl::StatusOr<StoredHistory> LoadHistory() override {
    return store_->LoadHistory();
  }
  absl::Status RecordStoreId(const StoredState& state,
                             bool* replaced) override {
    return store_->Save(state, replaced);
  }
  // The history first, then the state: after a crash between the two the
  // history holds one version more, which the next start drops. An error
  // after the state's rename is a warning (stored, maybe not durably).
  // The history's newest entry is appended to history.log when the one
  // before it is what this object stored last; history.db is written whole
  // (and the log dropped) otherwise: the first commit of a process, after a
  // failed one, once the log has grown past history.db's size (at least
  // kMinHistoryLogBytes), so each version costs about its own change, and
  // once a Secret the files hold has left the kept versions (a private key
  // rotated away leaves the disk with the version that last had it).
  absl::Status Commit(uint64_t base_version, const StoredState& next,
                      const StoredHistory& history,
                      std::string* warning) override;
  bool shared() const override { return false; }
  std::string Describe() const override;
  void Watch(VersionCallback) override {}

  FileStore& file_store() { return *store_; }

 private:
  std::unique_ptr<FileStore> store_;
  // The newest history entry this object stored (0: none yet, or unknown
  // after a failure), and the sizes of history.db and history.log since.
  uint64_t stored_history_version_ = 0;
  size_t history_db_bytes_ = 0;
  size_t history_log_bytes_ = 0;
  // The Secrets (by ContentHash) history.db and history.log hold.
  absl::flat_hash_set<uint64_t> secrets_on_disk_;
};

// `tokens.db` in a data dir whose FileStore is open (it holds the lock).
class FileTokenStore : public TokenStore {
 public:
  explicit FileTokenStore(const std::string& data_dir) : file_(data_dir) {}

  absl::StatusOr<std::vector<StoredToken>> LoadTokens() override {
    return file_.Load();
  }
  // `previous` is not checked: nobody else writes the file.
  absl::Status SaveTokens(const std::vector<StoredToken>& previous,
                          const std::vector<StoredToken>& next) override {
    return file_.Save(next);
  }
  void WatchTokens(TokensCallback) override {}
  bool TokensCurrent(int64_t) override { return true; }
  std::string Describe() const override { return "token file " + file_.path(); }

 private:
  TokenFile file_;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_STORE_FILE_CONFIG_STORE_H_
