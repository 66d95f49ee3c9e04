#include "controlplane/store/file_store.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstring>

#include "absl/base/internal/endian.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/random_id.h"

namespace sluice::controlplane {
namespace {

constexpr char kMagic[8] = {'S', 'L', 'U', 'I', 'C', 'E', 'D', 'B'};
// 1: no store id. 2: the store id follows the version.
constexpr uint32_t kFormat = 2;
constexpr uint32_t kFormatWithoutStoreId = 1;
// magic, format (u32), payload length (u64), crc32 (u32)
constexpr size_t kHeaderSize = 8 + 4 + 8 + 4;
// The payload starts with the version (u64), then (format 2) the store id's
// length (u32) and bytes, then the resource count (u32); per resource:
// length (u32), serialized Resource.

// history.db: the same header as state.db with its own magic and format 1.
// Payload: the base's resource count (u32) and resources (length u32,
// serialized Resource each); the entry count (u32); per entry: version (u64),
// time (i64 unix microseconds, INT64_MIN: unknown), author and message
// (length u32 and bytes each), unchanged (u32), then the added, the changed
// (count u32, resources as above each) and the removed (count u32; per id:
// kind u32, name as length u32 and bytes).
constexpr char kHistoryMagic[8] = {'S', 'L', 'U', 'I', 'C', 'E', 'H', 'I'};
constexpr uint32_t kHistoryFormat = 1;

// history.log: the entries appended since history.db was last written, so
// that a new version costs its own change, not the whole history. An 8-byte
// magic and a format (u32, 1), then per entry: payload length (u32), CRC-32
// of the payload (u32), payload (the entry as in history.db). Entries at or
// before history.db's newest are left from before history.db was replaced
// and are skipped; a record cut short or failing its checksum at the end is
// an append a crash interrupted (before the state file named its version)
// and is ignored.
constexpr char kHistoryLogMagic[8] = {'S', 'L', 'U', 'I', 'C', 'E', 'H', 'L'};
constexpr uint32_t kHistoryLogFormat = 1;

// tokens.db: the same header with its own magic and format 1. Payload: the
// token count (u32); per token: name, role, sha256 hex (length u32 and bytes
// each), created (i64 unix microseconds), created_by (length u32 and bytes).
constexpr char kTokensMagic[8] = {'S', 'L', 'U', 'I', 'C', 'E', 'T', 'K'};
constexpr uint32_t kTokensFormat = 1;

void PutU32(std::string* out, uint32_t value) {
  char buf[4];
  absl::little_endian::Store32(buf, value);
  out->append(buf, 4);
}

void PutU64(std::string* out, uint64_t value) {
  char buf[8];
  absl::little_endian::Store64(buf, value);
  out->append(buf, 8);
}

void PutBytes(std::string* out, const std::string& bytes) {
  PutU32(out, static_cast<uint32_t>(bytes.size()));
  out->append(bytes);
}

// Reads the history payload with bounds checks; the first failure sticks.
class PayloadReader {
 public:
  PayloadReader(const char* p, const char* end) : p_(p), end_(end) {}
  bool U32(uint32_t* v) {
    if (end_ - p_ < 4) return false;
    *v = absl::little_endian::Load32(p_);
    p_ += 4;
    return true;
  }
  bool U64(uint64_t* v) {
    if (end_ - p_ < 8) return false;
    *v = absl::little_endian::Load64(p_);
    p_ += 8;
    return true;
  }
  bool Bytes(std::string* v) {
    uint32_t size;
    if (!U32(&size) || static_cast<uint64_t>(end_ - p_) < size) return false;
    v->assign(p_, size);
    p_ += size;
    return true;
  }
  bool Resource(api::Resource* r) {
    std::string bytes;
    return Bytes(&bytes) && r->ParseFromString(bytes);
  }
  bool done() const { return p_ == end_; }

 private:
  const char* p_;
  const char* end_;
};

// One history entry as history.db and history.log hold it: version (u64),
// time (i64 unix microseconds, INT64_MIN: unknown), author and message
// (length u32 and bytes each), unchanged (u32), then the added, the changed
// (count u32, resources as length u32 and bytes each) and the removed (count
// u32; per id: kind u32, name as length u32 and bytes).
void EncodeEntry(const HistoryEntry& e, std::string* payload) {
  PutU64(payload, e.version);
  PutU64(payload, static_cast<uint64_t>(e.time == absl::InfinitePast()
                                            ? INT64_MIN
                                            : absl::ToUnixMicros(e.time)));
  PutBytes(payload, e.author);
  PutBytes(payload, e.message);
  PutU32(payload, e.unchanged);
  for (const auto* list : {&e.added, &e.changed}) {
    PutU32(payload, static_cast<uint32_t>(list->size()));
    for (const PackedResource& resource : list->items()) PutBytes(payload, resource.bytes);
  }
  PutU32(payload, static_cast<uint32_t>(e.removed.size()));
  for (const auto& [kind, name] : e.removed) {
    PutU32(payload, static_cast<uint32_t>(kind));
    PutBytes(payload, name);
  }
}

// Reads one entry; empty, or what is wrong (" cut short", ...) to follow
// "entry N".
std::string DecodeEntry(PayloadReader* in, HistoryEntry* e) {
  uint64_t micros;
  uint32_t n;
  if (!in->U64(&e->version) || !in->U64(&micros) || !in->Bytes(&e->author) ||
      !in->Bytes(&e->message) || !in->U32(&e->unchanged)) {
    return " cut short";
  }
  e->time = static_cast<int64_t>(micros) == INT64_MIN
                ? absl::InfinitePast()
                : absl::FromUnixMicros(static_cast<int64_t>(micros));
  for (auto* list : {&e->added, &e->changed}) {
    if (!in->U32(&n)) return " cut short";
    for (uint32_t j = 0; j < n; ++j) {
      std::string bytes;
      if (!in->Bytes(&bytes) || !list->PushSerialized(bytes)) {
        return absl::StrCat(" (version ", e->version, "): a resource is damaged");
      }
    }
  }
  if (!in->U32(&n)) return " cut short";
  for (uint32_t j = 0; j < n; ++j) {
    uint32_t kind;
    std::string name;
    if (!in->U32(&kind) || !in->Bytes(&name)) return " cut short";
    e->removed.emplace_back(static_cast<api::ResourceKind>(kind), std::move(name));
  }
  return "";
}

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, const std::string& bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write", path);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

uint32_t Crc32(const std::string& bytes, size_t offset) {
  uLong crc = crc32(0L, Z_NULL, 0);
  return static_cast<uint32_t>(
      crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + offset),
            static_cast<uInt>(bytes.size() - offset)));
}

absl::Status Corrupt(const std::string& path, absl::string_view why) {
  return absl::DataLossError(absl::StrCat(
      "state file ", path, " is damaged: ", why,
      ". sluice-control will not start with an empty state in its place; "
      "restore the file from a backup, or move it away to start empty"));
}

// The whole file; `*missing` and an empty string when it does not exist.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path, bool* missing) {
  *missing = false;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      *missing = true;
      return std::string();
    }
    return ErrnoError("cannot open", path);
  }
  std::string bytes;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status status = ErrnoError("cannot read", path);
      ::close(fd);
      return status;
    }
    if (n == 0) break;
    bytes.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return bytes;
}

}  // namespace

FileStore::FileStore(std::string dir, int lock_fd)
    : dir_(std::move(dir)),
      state_path_(dir_ + "/state.db"),
      history_path_(dir_ + "/history.db"),
      history_log_path_(dir_ + "/history.log"),
      lock_fd_(lock_fd) {}

FileStore::~FileStore() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

absl::StatusOr<std::unique_ptr<FileStore>> FileStore::Open(
    const std::string& data_dir) {
  // Missing parents are made as `mkdir -p` (and etcd's --data-dir) would,
  // with the umask's modes; the data dir itself is the owner's only.
  for (size_t slash = data_dir.find('/', 1); slash != std::string::npos;
       slash = data_dir.find('/', slash + 1)) {
    const std::string parent = data_dir.substr(0, slash);
    if (::mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoError("cannot create data dir", parent);
    }
  }
  if (::mkdir(data_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return ErrnoError("cannot create data dir", data_dir);
  }
  struct stat st;
  if (::stat(data_dir.c_str(), &st) != 0) return ErrnoError("cannot stat", data_dir);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("data dir ", data_dir, " is not a directory"));
  }
  // Whoever may write the directory may rename or replace the files in it
  // (their checksums are no MAC): owner only, as a new one is made, also
  // for one of ours made by hand with a wider mode. One owned by another
  // user (a Kubernetes volume: root's, group fsGroup) is left as it is,
  // with a word when anyone may write it.
  if ((st.st_mode & 077) != 0 && st.st_uid == ::geteuid()) {
    if (::chmod(data_dir.c_str(), 0700) != 0) {
      return ErrnoError("cannot restrict to mode 0700 (it holds private keys)", data_dir);
    }
  } else if ((st.st_mode & S_IWOTH) != 0 && (st.st_mode & S_ISVTX) == 0) {
    SLUICE_LOG(kWarning, "directory ", data_dir, " is writable by every user (mode ",
               absl::StrFormat("%04o", st.st_mode & 07777),
               ") and not this user's to narrow: a local user could replace its files; "
               "give it mode 0700, or use it only where no other user runs");
  }
  std::string lock_path = data_dir + "/LOCK";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("cannot open", lock_path);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "data dir ", data_dir,
        " is in use by another process (", lock_path,
        " is locked: a sluice-control's --data-dir, or a sluice-proxy's --state-dir)"));
  }
  // A leftover temporary file is an interrupted Save: the real file is intact.
  ::unlink((data_dir + "/state.db.tmp").c_str());
  ::unlink((data_dir + "/history.db.tmp").c_str());
  ::unlink((data_dir + "/tokens.db.tmp").c_str());
  // The state and the history hold private keys: owner only, also for a file
  // written by an older build or restored from a backup with a wider mode.
  for (const char* name : {"/state.db", "/history.db", "/history.log", "/tokens.db"}) {
    std::string path = data_dir + name;
    if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0 &&
        ::chmod(path.c_str(), 0600) != 0) {
      absl::Status status =
          ErrnoError("cannot restrict to mode 0600 (it holds private keys)", path);
      ::close(fd);
      return status;
    }
  }
  return std::unique_ptr<FileStore>(new FileStore(data_dir, fd));
}

std::string FileStore::Encode(uint64_t version, const std::string& store_id,
                              const api::ResourceMap& resources) {
  std::string payload;
  char buf[8];
  absl::little_endian::Store64(buf, version);
  payload.append(buf, 8);
  absl::little_endian::Store32(buf, static_cast<uint32_t>(store_id.size()));
  payload.append(buf, 4);
  payload.append(store_id);
  absl::little_endian::Store32(buf, static_cast<uint32_t>(resources.size()));
  payload.append(buf, 4);
  for (const auto& [id, resource] : resources) {
    std::string bytes = resource.SerializeAsString();
    absl::little_endian::Store32(buf, static_cast<uint32_t>(bytes.size()));
    payload.append(buf, 4);
    payload.append(bytes);
  }
  std::string out(kMagic, sizeof(kMagic));
  absl::little_endian::Store32(buf, kFormat);
  out.append(buf, 4);
  absl::little_endian::Store64(buf, payload.size());
  out.append(buf, 8);
  out.append(4, '\0');  // crc, filled below
  out.append(payload);
  absl::little_endian::Store32(&out[20], Crc32(out, kHeaderSize));
  return out;
}

absl::StatusOr<StoredState> FileStore::Decode(const std::string& bytes,
                                              const std::string& path) {
  if (bytes.size() < kHeaderSize) {
    return Corrupt(path, absl::StrCat("truncated: ", bytes.size(),
                                      " bytes, shorter than the header"));
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return Corrupt(path, "not a Sluice state file (bad magic)");
  }
  uint32_t format = absl::little_endian::Load32(bytes.data() + 8);
  if (format != kFormat && format != kFormatWithoutStoreId) {
    return Corrupt(path, absl::StrCat("format ", format,
                                      " is not supported by this build (expects ",
                                      kFormatWithoutStoreId, " or ", kFormat, ")"));
  }
  uint64_t length = absl::little_endian::Load64(bytes.data() + 12);
  if (bytes.size() - kHeaderSize != length) {
    return Corrupt(path, absl::StrCat("truncated or padded: payload is ",
                                      bytes.size() - kHeaderSize,
                                      " bytes, header says ", length));
  }
  uint32_t want = absl::little_endian::Load32(bytes.data() + 20);
  uint32_t got = Crc32(bytes, kHeaderSize);
  if (want != got) {
    return Corrupt(path, absl::StrCat("checksum mismatch (header ", want,
                                      ", content ", got, ")"));
  }
  StoredState state;
  const char* p = bytes.data() + kHeaderSize;
  const char* end = bytes.data() + bytes.size();
  if (end - p < 8) return Corrupt(path, "payload too short");
  state.version = absl::little_endian::Load64(p);
  p += 8;
  if (format == kFormat) {
    if (end - p < 4) return Corrupt(path, "payload too short");
    uint32_t size = absl::little_endian::Load32(p);
    p += 4;
    if (static_cast<uint64_t>(end - p) < size) return Corrupt(path, "store id cut short");
    state.store_id.assign(p, size);
    p += size;
  }
  if (end - p < 4) return Corrupt(path, "payload too short");
  uint32_t count = absl::little_endian::Load32(p);
  p += 4;
  for (uint32_t i = 0; i < count; ++i) {
    if (end - p < 4) return Corrupt(path, absl::StrCat("resource ", i, " cut short"));
    uint32_t size = absl::little_endian::Load32(p);
    p += 4;
    if (static_cast<uint64_t>(end - p) < size) {
      return Corrupt(path, absl::StrCat("resource ", i, " cut short"));
    }
    api::Resource resource;
    if (!resource.ParseFromArray(p, static_cast<int>(size))) {
      return Corrupt(path, absl::StrCat("resource ", i, " does not parse"));
    }
    p += size;
    state.resources[api::IdOf(resource)] = std::move(resource);
  }
  if (p != end) return Corrupt(path, "trailing bytes after the last resource");
  return state;
}

absl::StatusOr<StoredState> FileStore::Load() const {
  bool missing = false;
  absl::StatusOr<std::string> bytes = ReadWholeFile(state_path_, &missing);
  if (!bytes.ok()) return bytes.status();
  if (missing) return StoredState{};
  return Decode(*bytes, state_path_);
}

absl::Status FileStore::Save(uint64_t version, const std::string& store_id,
                             const api::ResourceMap& resources, bool* replaced) {
  return WriteDurably(state_path_, Encode(version, store_id, resources), replaced);
}

absl::Status FileStore::WriteDurably(const std::string& path, const std::string& bytes,
                                     bool* replaced) {
  return WriteFileDurably(path, bytes, replaced, directory_fsync_);
}

absl::Status WriteFileDurably(const std::string& path, const std::string& bytes,
                              bool* replaced,
                              const std::function<int(int fd)>& directory_fsync) {
  const std::string dir =
      path.rfind('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  if (replaced) *replaced = false;
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("cannot create", tmp);
  // The mode of open() applies only to a new file; the state holds private
  // keys, so make sure before writing them.
  absl::Status status = absl::OkStatus();
  if (::fchmod(fd, 0600) != 0) status = ErrnoError("cannot set mode 0600 on", tmp);
  if (status.ok()) status = WriteAll(fd, bytes, tmp);
  if (status.ok() && ::fsync(fd) != 0) status = ErrnoError("cannot fsync", tmp);
  ::close(fd);
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    status = ErrnoError("cannot rename into", path);
    ::unlink(tmp.c_str());
    return status;
  }
  // From here the new file is what a load reads; only its durability is
  // left to make sure of.
  if (replaced) *replaced = true;
  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    return ErrnoError(absl::StrCat(path, " is replaced, but cannot open its directory"),
                      dir);
  }
  int rc = directory_fsync ? directory_fsync(dir_fd) : ::fsync(dir_fd);
  status = rc == 0 ? absl::OkStatus()
                   : ErrnoError(absl::StrCat(path,
                                             " is replaced, but cannot fsync its directory"),
                                dir);
  ::close(dir_fd);
  return status;
}

std::string FileStore::EncodeHistory(const StoredHistory& history) {
  std::string payload;
  PutU32(&payload, static_cast<uint32_t>(history.base.size()));
  for (const auto& [id, resource] : history.base) {
    PutBytes(&payload, resource.SerializeAsString());
  }
  PutU32(&payload, static_cast<uint32_t>(history.entries.size()));
  for (const HistoryEntry& e : history.entries) EncodeEntry(e, &payload);
  std::string out(kHistoryMagic, sizeof(kHistoryMagic));
  PutU32(&out, kHistoryFormat);
  PutU64(&out, payload.size());
  out.append(4, '\0');  // crc, filled below
  out.append(payload);
  absl::little_endian::Store32(&out[20], Crc32(out, kHeaderSize));
  return out;
}

absl::StatusOr<StoredHistory> FileStore::DecodeHistory(const std::string& bytes,
                                                       const std::string& path) {
  auto corrupt = [&path](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(
        "history file ", path, " is damaged: ", why,
        ". sluice-control will not start with an empty history in its place; restore "
        "the file from a backup, or move it away to start a new history"));
  };
  if (bytes.size() < kHeaderSize) return corrupt("truncated: shorter than the header");
  if (std::memcmp(bytes.data(), kHistoryMagic, sizeof(kHistoryMagic)) != 0) {
    return corrupt("not a Sluice history file (bad magic)");
  }
  uint32_t format = absl::little_endian::Load32(bytes.data() + 8);
  if (format != kHistoryFormat) {
    return corrupt(absl::StrCat("format ", format, " is not supported by this build (expects ",
                                kHistoryFormat, ")"));
  }
  uint64_t length = absl::little_endian::Load64(bytes.data() + 12);
  if (bytes.size() - kHeaderSize != length) {
    return corrupt(absl::StrCat("truncated or padded: payload is ", bytes.size() - kHeaderSize,
                                " bytes, header says ", length));
  }
  if (absl::little_endian::Load32(bytes.data() + 20) != Crc32(bytes, kHeaderSize)) {
    return corrupt("checksum mismatch");
  }
  PayloadReader in(bytes.data() + kHeaderSize, bytes.data() + bytes.size());
  StoredHistory history;
  uint32_t count;
  if (!in.U32(&count)) return corrupt("payload too short");
  for (uint32_t i = 0; i < count; ++i) {
    api::Resource resource;
    if (!in.Resource(&resource)) return corrupt(absl::StrCat("base resource ", i, " is damaged"));
    history.base[api::IdOf(resource)] = std::move(resource);
  }
  if (!in.U32(&count)) return corrupt("payload too short");
  for (uint32_t i = 0; i < count; ++i) {
    HistoryEntry e;
    std::string why = DecodeEntry(&in, &e);
    if (!why.empty()) return corrupt(absl::StrCat("entry ", i, why));
    history.entries.push_back(std::move(e));
  }
  if (!in.done()) return corrupt("trailing bytes after the last entry");
  return history;
}

absl::StatusOr<StoredHistory> FileStore::LoadHistory() const {
  bool missing = false;
  absl::StatusOr<std::string> bytes = ReadWholeFile(history_path_, &missing);
  if (!bytes.ok()) return bytes.status();
  StoredHistory history;
  const bool no_base = missing;
  if (!missing) {
    absl::StatusOr<StoredHistory> decoded = DecodeHistory(*bytes, history_path_);
    if (!decoded.ok()) return decoded.status();
    history = std::move(*decoded);
  }
  absl::StatusOr<std::string> log = ReadWholeFile(history_log_path_, &missing);
  if (!log.ok()) return log.status();
  if (missing) return history;
  if (no_base) {
    // The log adds to history.db's content: without it, nothing can be
    // rebuilt (before: read anyway, then "does not match the state", as if
    // restored from another backup).
    SLUICE_LOG(kWarning, history_log_path_, " is there without ", history_path_,
               " (the content it adds to): the history restarts at the current version");
    return history;
  }
  if (absl::Status status = ApplyHistoryLog(*log, history_log_path_, &history); !status.ok()) {
    return status;
  }
  return history;
}

absl::Status FileStore::ApplyHistoryLog(const std::string& log, const std::string& path,
                                        StoredHistory* history) {
  auto corrupt = [&path](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(
        "history log ", path, " is damaged: ", why,
        ". sluice-control will not start with part of its history; restore the file from a "
        "backup, or move it away (with history.db) to start a new history"));
  };
  if (log.size() < 12) {
    // The header itself cut short: the first append was interrupted.
    return absl::OkStatus();
  }
  if (std::memcmp(log.data(), kHistoryLogMagic, sizeof(kHistoryLogMagic)) != 0) {
    return corrupt("not a Sluice history log (bad magic)");
  }
  if (uint32_t format = absl::little_endian::Load32(log.data() + 8);
      format != kHistoryLogFormat) {
    return corrupt(absl::StrCat("format ", format, " is not supported by this build (expects ",
                                kHistoryLogFormat, ")"));
  }
  size_t p = 12;
  int record = 0;
  while (p < log.size()) {
    ++record;
    const bool header_whole = log.size() - p >= 8;
    const uint32_t length = header_whole ? absl::little_endian::Load32(log.data() + p) : 0;
    const bool whole = header_whole && log.size() - p - 8 >= length;
    std::string payload = whole ? log.substr(p + 8, length) : std::string();
    if (!whole || absl::little_endian::Load32(log.data() + p + 4) != Crc32(payload, 0)) {
      // Only the last record may be cut short: an interrupted append.
      if (!whole || p + 8 + length == log.size()) return absl::OkStatus();
      return corrupt(absl::StrCat("record ", record, ": checksum mismatch"));
    }
    p += 8 + length;
    PayloadReader in(payload.data(), payload.data() + payload.size());
    HistoryEntry entry;
    std::string why = DecodeEntry(&in, &entry);
    if (!why.empty() || !in.done()) {
      return corrupt(absl::StrCat("record ", record, why.empty() ? ": trailing bytes" : why));
    }
    const uint64_t newest = history->entries.empty() ? 0 : history->entries.back().version;
    if (entry.version <= newest) continue;  // already in history.db
    if (newest != 0 && entry.version != newest + 1) {
      return corrupt(absl::StrCat("record ", record, " is version ", entry.version,
                                  ", expected ", newest + 1));
    }
    history->entries.push_back(std::move(entry));
  }
  return absl::OkStatus();
}

absl::Status FileStore::SaveHistory(const StoredHistory& history, bool* replaced,
                                    size_t* bytes_written) {
  std::string bytes = EncodeHistory(history);
  if (bytes_written != nullptr) *bytes_written = bytes.size();
  bool renamed = false;
  absl::Status status = WriteDurably(history_path_, bytes, &renamed);
  if (replaced != nullptr) *replaced = renamed;
  // history.db now holds every entry of the log: drop it (one left behind
  // by a failure here is skipped when read).
  if (renamed) ::unlink(history_log_path_.c_str());
  return status;
}

absl::Status FileStore::AppendHistory(const HistoryEntry& entry, size_t* bytes_written) {
  std::string payload;
  EncodeEntry(entry, &payload);
  std::string record;
  PutU32(&record, static_cast<uint32_t>(payload.size()));
  PutU32(&record, Crc32(payload, 0));
  record.append(payload);
  int fd = ::open(history_log_path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("cannot open", history_log_path_);
  struct stat st;
  absl::Status status = absl::OkStatus();
  if (::fstat(fd, &st) != 0) status = ErrnoError("cannot stat", history_log_path_);
  const off_t before = status.ok() ? st.st_size : 0;
  if (status.ok() && ::fchmod(fd, 0600) != 0) {
    status = ErrnoError("cannot set mode 0600 on", history_log_path_);
  }
  if (status.ok() && before == 0) {
    std::string header(kHistoryLogMagic, sizeof(kHistoryLogMagic));
    PutU32(&header, kHistoryLogFormat);
    record.insert(0, header);
  }
  if (status.ok()) status = WriteAll(fd, record, history_log_path_);
  if (status.ok() && ::fdatasync(fd) != 0) status = ErrnoError("cannot fsync", history_log_path_);
  if (!status.ok()) {
    // Leave no partial record for a later append to follow.
    (void)::ftruncate(fd, before);
    ::close(fd);
    return status;
  }
  ::close(fd);
  if (before == 0) {
    // A new file: its name must be durable too.
    int dir_fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = dir_fd < 0 ? -1 : (directory_fsync_ ? directory_fsync_(dir_fd) : ::fsync(dir_fd));
    if (dir_fd >= 0) ::close(dir_fd);
    if (rc != 0) {
      return ErrnoError(absl::StrCat(history_log_path_, " is written, but cannot fsync its directory"),
                        dir_);
    }
  }
  if (bytes_written != nullptr) *bytes_written = record.size();
  return absl::OkStatus();
}

std::string TokenFile::Encode(const std::vector<StoredToken>& tokens) {
  std::string payload;
  PutU32(&payload, static_cast<uint32_t>(tokens.size()));
  for (const StoredToken& t : tokens) {
    PutBytes(&payload, t.name);
    PutBytes(&payload, t.role);
    PutBytes(&payload, t.sha256_hex);
    PutU64(&payload, static_cast<uint64_t>(t.created == absl::InfinitePast()
                                               ? INT64_MIN
                                               : absl::ToUnixMicros(t.created)));
    PutBytes(&payload, t.created_by);
  }
  std::string out(kTokensMagic, sizeof(kTokensMagic));
  PutU32(&out, kTokensFormat);
  PutU64(&out, payload.size());
  out.append(4, '\0');  // crc, filled below
  out.append(payload);
  absl::little_endian::Store32(&out[20], Crc32(out, kHeaderSize));
  return out;
}

absl::StatusOr<std::vector<StoredToken>> TokenFile::Decode(const std::string& bytes,
                                                           const std::string& path) {
  auto corrupt = [&path](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(
        "token file ", path, " is damaged: ", why,
        ". sluice-control will not start without its tokens; restore the file from a "
        "backup, or move it away and create the tokens again"));
  };
  if (bytes.size() < kHeaderSize) return corrupt("truncated: shorter than the header");
  if (std::memcmp(bytes.data(), kTokensMagic, sizeof(kTokensMagic)) != 0) {
    return corrupt("not a Sluice token file (bad magic)");
  }
  if (absl::little_endian::Load32(bytes.data() + 8) != kTokensFormat) {
    return corrupt("format is not supported by this build");
  }
  if (bytes.size() - kHeaderSize != absl::little_endian::Load64(bytes.data() + 12)) {
    return corrupt("truncated or padded");
  }
  if (absl::little_endian::Load32(bytes.data() + 20) != Crc32(bytes, kHeaderSize)) {
    return corrupt("checksum mismatch");
  }
  PayloadReader in(bytes.data() + kHeaderSize, bytes.data() + bytes.size());
  uint32_t count;
  if (!in.U32(&count)) return corrupt("payload too short");
  std::vector<StoredToken> tokens;
  for (uint32_t i = 0; i < count; ++i) {
    StoredToken t;
    uint64_t micros;
    if (!in.Bytes(&t.name) || !in.Bytes(&t.role) || !in.Bytes(&t.sha256_hex) ||
        !in.U64(&micros) || !in.Bytes(&t.created_by)) {
      return corrupt(absl::StrCat("token ", i, " cut short"));
    }
    t.created = static_cast<int64_t>(micros) == INT64_MIN
                    ? absl::InfinitePast()
                    : absl::FromUnixMicros(static_cast<int64_t>(micros));
    tokens.push_back(std::move(t));
  }
  if (!in.done()) return corrupt("trailing bytes after the last token");
  return tokens;
}

absl::StatusOr<std::vector<StoredToken>> TokenFile::Load() const {
  bool missing = false;
  absl::StatusOr<std::string> bytes = ReadWholeFile(path_, &missing);
  if (!bytes.ok()) return bytes.status();
  if (missing) return std::vector<StoredToken>();
  return Decode(*bytes, path_);
}

absl::Status TokenFile::Save(const std::vector<StoredToken>& tokens) {
  return WriteFileDurably(path_, Encode(tokens));
}

api::Resource PackedResource::Unpack() const {
  api::Resource resource;
  resource.ParseFromString(bytes);
  return resource;
}

std::vector<api::ResourceId> SharedResourceList::Ids() const {
  std::vector<api::ResourceId> ids;
  ids.reserve(size());
  for (const PackedResource& r : items()) ids.push_back(r.id);
  return ids;
}

void SharedResourceList::push_back(const api::Resource& r) {
  Mutable().push_back(PackedResource{api::IdOf(r), api::DeterministicBytes(r)});
}

bool SharedResourceList::PushSerialized(absl::string_view bytes) {
  api::Resource resource;
  if (!resource.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return false;
  push_back(resource);
  return true;
}

std::string NewStoreId() { return RandomHexId(); }

}  // namespace sluice::controlplane
