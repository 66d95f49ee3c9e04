// FileStore: the control plane's durable state in its data dir.
//
// The whole state (every resource and the version counter) lives in one file,
// `state.db`: an 8-byte magic, a format number, the payload length, a CRC-32
// of the payload, then the payload. Save() writes `state.db.tmp`, fsyncs it,
// renames it over `state.db` and fsyncs the directory, so after a crash at any
// instant the file is either the old state or the new one, whole. Load()
// refuses a file that is truncated, has the wrong magic or a bad checksum,
// with an error that names the file: it never returns an empty state in place
// of a damaged one.
//
// The state holds private keys (Secrets): `state.db` and `state.db.tmp` are
// mode 0600 whatever the umask, Open() narrows a wider `state.db` to 0600, and
// a new data dir is made 0700.
//
// The data dir is locked (flock on `LOCK`) for the store's lifetime so two
// control planes never share one. Not thread-safe: the caller serializes.
#ifndef SLUICE_CONTROLPLANE_STORE_FILE_STORE_H_
#define SLUICE_CONTROLPLANE_STORE_FILE_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "api/resource.h"

namespace sluice::controlplane {

struct StoredState {
  uint64_t version = 0;
  api::ResourceMap resources;
};

class FileStore {
 public:
  // Creates `data_dir` when missing and takes its lock.
  static absl::StatusOr<std::unique_ptr<FileStore>> Open(const std::string& data_dir);
  ~FileStore();

  // The stored state; version 0 and no resources when nothing was saved yet.
  absl::StatusOr<StoredState> Load() const;
  // Durably replaces the stored state. On error the previous state is intact.
  absl::Status Save(const StoredState& state) { return Save(state.version, state.resources); }
  absl::Status Save(uint64_t version, const api::ResourceMap& resources);

  const std::string& state_path() const { return state_path_; }

  // The on-disk encoding, exposed for tests.
  static std::string Encode(const StoredState& state) {
    return Encode(state.version, state.resources);
  }
  static std::string Encode(uint64_t version, const api::ResourceMap& resources);
  static absl::StatusOr<StoredState> Decode(const std::string& bytes,
                                            const std::string& path);

 private:
  FileStore(std::string dir, int lock_fd);

  std::string dir_;
  std::string state_path_;
  int lock_fd_;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_STORE_FILE_STORE_H_
