// FileStore: the control plane's durable state in its data dir.
//
// The whole state (every resource, the version counter and the store id)
// lives in one file, `state.db`: an 8-byte magic, a format number, the payload
// length, a CRC-32 of the payload, then the payload. Format 1 (no store id)
// is still read. Save() writes `state.db.tmp`, fsyncs it, renames it over
// `state.db` and fsyncs the directory, so after a crash at any instant the
// file is either the old state or the new one, whole. Load()
// refuses a file that is truncated, has the wrong magic or a bad checksum,
// with an error that names the file: it never returns an empty state in place
// of a damaged one.
//
// The state holds private keys (Secrets): `state.db` and `state.db.tmp` are
// mode 0600 whatever the umask, Open() narrows a wider `state.db` to 0600, and
// a new data dir is made 0700.
//
// The history of accepted versions (StoredHistory) lives beside it in
// `history.db`, written and checked the same way (its own magic, format 1;
// layout in file_store.cc), and `history.log`: the entries appended since
// history.db was written (AppendHistory; each record with its own checksum,
// fsynced), so that a version costs its own change, not the whole history. A missing history file is an empty history; a
// damaged one is refused like a damaged state file. It holds the same private
// keys as the state: mode 0600 too. The two files are replaced one after the
// other, not together: the caller writes the history first, so after a crash
// it may hold one version more than `state.db` (the caller drops it), never
// one fewer.
//
// Operator tokens (TokenFile) live in `tokens.db`, written and checked the
// same way (its own magic, format 1): SHA-256 digests only, mode 0600.
//
// The data dir is locked (flock on `LOCK`) for the store's lifetime so two
// control planes never share one. Not thread-safe: the caller serializes.
#ifndef SLUICE_CONTROLPLANE_STORE_FILE_STORE_H_
#define SLUICE_CONTROLPLANE_STORE_FILE_STORE_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>

#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "api/resource.h"

namespace sluice::controlplane {

struct StoredState {
  uint64_t version = 0;
  api::ResourceMap resources;
  // The identity of the store the version belongs to (versions compare only
  // within one store): sluice-control makes a random one for a new data dir;
  // a proxy's --state-dir keeps the id of the control plane it came from.
  // Empty: unknown (nothing saved yet, or a format 1 file).
  std::string store_id;
};

// A new random store id: 32 hex digits (a new data dir, or a new etcd
// prefix).
std::string NewStoreId();

// One resource as the history keeps it in memory: its id and its
// deterministic serialization (api::DeterministicBytes), about a tenth of the
// parsed message's size (a 10,000-route table: ~0.3 MB against ~4 MiB), so a
// long history of changes to a big table stays small. Parsed only when a
// version's content is rebuilt (rollback, diff, a trimmed oldest version).
struct PackedResource {
  api::ResourceId id;
  std::string bytes;

  // The resource (its bytes came from a serialization: they parse).
  api::Resource Unpack() const;
  // api::ContentHash of the resource, from its bytes.
  uint64_t Hash() const { return api::ContentHashOfBytes(bytes); }
};

// A list of resources, kept packed, with the value semantics of std::vector
// whose copies share one vector until one of them is changed (copy on
// write). The history's entries are copied with every new version
// (ConfigHistory is copied, appended to and published) and never change once
// written, so sharing them keeps a version's cost to its own change, not the
// history's size. As with std::vector, one object is not changed and read at
// once.
class SharedResourceList {
 public:
  SharedResourceList() = default;
  SharedResourceList(std::initializer_list<api::Resource> items) {
    for (const api::Resource& r : items) push_back(r);
  }

  size_t size() const { return items_ ? items_->size() : 0; }
  bool empty() const { return size() == 0; }
  // The packed resources, in the order they were added.
  const std::vector<PackedResource>& items() const { return items_ ? *items_ : Empty(); }
  // The i-th resource, unpacked (a copy).
  api::Resource operator[](size_t i) const { return (*items_)[i].Unpack(); }
  std::vector<api::ResourceId> Ids() const;

  void push_back(const api::Resource& r);
  // A resource from its serialization as a store holds it (not necessarily
  // deterministic); false, and nothing added, when the bytes do not parse.
  bool PushSerialized(absl::string_view bytes);
  void reserve(size_t n) { Mutable().reserve(n); }
  void clear() { items_.reset(); }

 private:
  static const std::vector<PackedResource>& Empty() {
    static const std::vector<PackedResource> kEmpty;
    return kEmpty;
  }
  std::vector<PackedResource>& Mutable() {
    if (!items_) {
      items_ = std::make_shared<std::vector<PackedResource>>();
    } else if (items_.use_count() > 1) {
      items_ = std::make_shared<std::vector<PackedResource>>(*items_);
    }
    return *items_;
  }

  std::shared_ptr<std::vector<PackedResource>> items_;
};

// One accepted version: who made it, when, why, and what it changed from the
// version before it (the full content of what it added or changed, and what
// it removed).
struct HistoryEntry {
  uint64_t version = 0;
  // When the control plane accepted it; absl::InfinitePast(): unknown (a
  // version made before history was kept).
  absl::Time time = absl::InfinitePast();
  // The operator token's name with --require-tokens; else as the client
  // reported it (sluicectl: $USER@hostname), not authenticated.
  std::string author;
  std::string message;
  SharedResourceList added;
  SharedResourceList changed;
  std::vector<api::ResourceId> removed;
  uint32_t unchanged = 0;
};

// The kept versions, oldest first, and the whole content of the oldest: each
// later version's content is the one before it with its entry's change.
struct StoredHistory {
  api::ResourceMap base;  // the content of entries.front(); empty when none
  std::vector<HistoryEntry> entries;
};

// One operator token as stored: never the token itself, only its digest.
struct StoredToken {
  std::string name;
  std::string role;        // viewer, operator or admin
  std::string sha256_hex;  // of the whole token text
  absl::Time created = absl::InfinitePast();
  std::string created_by;
};

// Writes `bytes` to `path`.tmp (mode 0600), fsyncs it, renames it over `path`
// and fsyncs the directory. An error with `*replaced` false: `path` is
// unchanged; with `*replaced` true: it is replaced but its directory could not
// be fsynced. `directory_fsync` replaces fsync(2) for the directory (tests).
absl::Status WriteFileDurably(const std::string& path, const std::string& bytes,
                              bool* replaced = nullptr,
                              const std::function<int(int fd)>& directory_fsync = nullptr);

// `tokens.db` in a data dir whose FileStore is open (it holds the lock).
// Not thread-safe: the caller serializes.
class TokenFile {
 public:
  explicit TokenFile(const std::string& data_dir) : path_(data_dir + "/tokens.db") {}
  // Empty when the file does not exist; DATA_LOSS naming the file when damaged.
  absl::StatusOr<std::vector<StoredToken>> Load() const;
  absl::Status Save(const std::vector<StoredToken>& tokens);
  const std::string& path() const { return path_; }

  static std::string Encode(const std::vector<StoredToken>& tokens);
  static absl::StatusOr<std::vector<StoredToken>> Decode(const std::string& bytes,
                                                         const std::string& path);

 private:
  std::string path_;
};

class FileStore {
 public:
  // Creates `data_dir` when missing and takes its lock.
  static absl::StatusOr<std::unique_ptr<FileStore>> Open(const std::string& data_dir);
  ~FileStore();

  // The stored state; version 0 and no resources when nothing was saved yet.
  absl::StatusOr<StoredState> Load() const;
  // Durably replaces the stored state. OK: done. An error with `*replaced`
  // false: nothing changed, the previous state is intact. An error with
  // `*replaced` true: the new state is in place (Load returns it) but the
  // directory could not be fsynced after the rename, so it may not survive a
  // power loss or an OS crash; the error says so.
  absl::Status Save(const StoredState& state, bool* replaced = nullptr) {
    return Save(state.version, state.store_id, state.resources, replaced);
  }
  absl::Status Save(uint64_t version, const std::string& store_id,
                    const api::ResourceMap& resources, bool* replaced = nullptr);
  // With no store id (unknown).
  absl::Status Save(uint64_t version, const api::ResourceMap& resources) {
    return Save(version, "", resources);
  }

  // The stored history; empty when `history.db` does not exist.
  absl::StatusOr<StoredHistory> LoadHistory() const;
  // Durably replaces the stored history (and drops `history.log`);
  // `*replaced` as for Save(). `*bytes_written`: the size of history.db.
  absl::Status SaveHistory(const StoredHistory& history, bool* replaced = nullptr,
                           size_t* bytes_written = nullptr);
  // Durably appends `entry` to `history.log`: the stored history is then the
  // one saved last with this entry (the next version) at its end. An error:
  // nothing is appended. `*bytes_written`: the bytes appended.
  absl::Status AppendHistory(const HistoryEntry& entry, size_t* bytes_written = nullptr);

  const std::string& state_path() const { return state_path_; }
  const std::string& history_path() const { return history_path_; }
  const std::string& history_log_path() const { return history_log_path_; }

  // The on-disk encoding, exposed for tests.
  static std::string Encode(const StoredState& state) {
    return Encode(state.version, state.store_id, state.resources);
  }
  static std::string Encode(uint64_t version, const std::string& store_id,
                            const api::ResourceMap& resources);
  static absl::StatusOr<StoredState> Decode(const std::string& bytes,
                                            const std::string& path);
  static std::string EncodeHistory(const StoredHistory& history);
  static absl::StatusOr<StoredHistory> DecodeHistory(const std::string& bytes,
                                                     const std::string& path);
  // Adds the entries of a history.log's bytes to `history` (read from
  // history.db); DATA_LOSS naming `path` when damaged before its last record.
  static absl::Status ApplyHistoryLog(const std::string& log, const std::string& path,
                                      StoredHistory* history);

  // Replaces fsync(2) for the data directory; tests make it fail.
  void set_directory_fsync_for_testing(std::function<int(int fd)> fsync) {
    directory_fsync_ = std::move(fsync);
  }

 private:
  FileStore(std::string dir, int lock_fd);
  // Writes `bytes` to `path`.tmp (mode 0600), fsyncs it, renames it over
  // `path` and fsyncs the directory; `*replaced` as for Save().
  absl::Status WriteDurably(const std::string& path, const std::string& bytes,
                            bool* replaced);

  std::string dir_;
  std::string state_path_;
  std::string history_path_;
  std::string history_log_path_;
  int lock_fd_;
  std::function<int(int fd)> directory_fsync_;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_STORE_FILE_STORE_H_
