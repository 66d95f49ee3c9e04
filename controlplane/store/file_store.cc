#include "controlplane/store/file_store.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>

#include "absl/base/internal/endian.h"
#include "absl/strings/str_cat.h"

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

}  // namespace

FileStore::FileStore(std::string dir, int lock_fd)
    : dir_(std::move(dir)), state_path_(dir_ + "/state.db"), lock_fd_(lock_fd) {}

FileStore::~FileStore() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

absl::StatusOr<std::unique_ptr<FileStore>> FileStore::Open(
    const std::string& data_dir) {
  if (::mkdir(data_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return ErrnoError("cannot create data dir", data_dir);
  }
  struct stat st;
  if (::stat(data_dir.c_str(), &st) != 0) return ErrnoError("cannot stat", data_dir);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("data dir ", data_dir, " is not a directory"));
  }
  std::string lock_path = data_dir + "/LOCK";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("cannot open", lock_path);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "data dir ", data_dir,
        " is in use by another sluice-control (", lock_path, " is locked)"));
  }
  // A leftover temporary file is an interrupted Save: the real file is intact.
  ::unlink((data_dir + "/state.db.tmp").c_str());
  // The state holds private keys: owner only, also for a file written by an
  // older build or restored from a backup with a wider mode.
  std::string state_path = data_dir + "/state.db";
  if (::stat(state_path.c_str(), &st) == 0 && (st.st_mode & 077) != 0 &&
      ::chmod(state_path.c_str(), 0600) != 0) {
    absl::Status status = ErrnoError("cannot restrict to mode 0600 (it holds private keys)",
                                     state_path);
    ::close(fd);
    return status;
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
  int fd = ::open(state_path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return StoredState{};
    return ErrnoError("cannot open", state_path_);
  }
  std::string bytes;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status status = ErrnoError("cannot read", state_path_);
      ::close(fd);
      return status;
    }
    if (n == 0) break;
    bytes.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return Decode(bytes, state_path_);
}

absl::Status FileStore::Save(uint64_t version, const std::string& store_id,
                             const api::ResourceMap& resources, bool* replaced) {
  if (replaced) *replaced = false;
  std::string tmp = state_path_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("cannot create", tmp);
  // The mode of open() applies only to a new file; the state holds private
  // keys, so make sure before writing them.
  absl::Status status = absl::OkStatus();
  if (::fchmod(fd, 0600) != 0) status = ErrnoError("cannot set mode 0600 on", tmp);
  if (status.ok()) status = WriteAll(fd, Encode(version, store_id, resources), tmp);
  if (status.ok() && ::fsync(fd) != 0) status = ErrnoError("cannot fsync", tmp);
  ::close(fd);
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  if (::rename(tmp.c_str(), state_path_.c_str()) != 0) {
    status = ErrnoError("cannot rename into", state_path_);
    ::unlink(tmp.c_str());
    return status;
  }
  // From here the new state is what Load() reads; only its durability is
  // left to make sure of.
  if (replaced) *replaced = true;
  int dir_fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    return ErrnoError(absl::StrCat(state_path_, " is replaced, but cannot open its directory"),
                      dir_);
  }
  int rc = directory_fsync_ ? directory_fsync_(dir_fd) : ::fsync(dir_fd);
  status = rc == 0 ? absl::OkStatus()
                   : ErrnoError(absl::StrCat(state_path_,
                                             " is replaced, but cannot fsync its directory"),
                                dir_);
  ::close(dir_fd);
  return status;
}

}  // namespace sluice::controlplane
