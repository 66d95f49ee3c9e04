#include "controlplane/server/audit_log.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace sluice::controlplane {

namespace {

absl::StatusOr<std::FILE*> OpenForAppending(const std::string& path) {
  int fd =
      ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  // It names who changed what: owner only, as the rest of the data dir.
  (void)::fchmod(fd, 0600);
  std::FILE* file = ::fdopen(fd, "a");
  if (file == nullptr) {
    ::close(fd);
    return absl::InternalError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  return file;
}

}  // namespace

static uint64_t SizeOf(std::FILE* file) {
  struct stat st;
  return ::fstat(::fileno(file), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(
    const std::string& path, std::function<absl::Time()> now, uint64_t max_bytes) {
  absl::StatusOr<std::FILE*> file = OpenForAppending(path);
  if (!file.ok()) return file.status();
  std::unique_ptr<AuditLog> log(new AuditLog(*file, path, std::move(now), max_bytes));
  absl::MutexLock lock(&log->mu_);
  log->size_ = SizeOf(*file);
  return log;
}

absl::Status AuditLog::Reopen() {
  absl::StatusOr<std::FILE*> file = OpenForAppending(path_);
  if (!file.ok()) return file.status();
  absl::MutexLock lock(&mu_);
  std::fclose(file_);
  file_ = *file;
  size_ = SizeOf(file_);
  return absl::OkStatus();
}

void AuditLog::Rotate() {
  const std::string previous = path_ + ".1";
  if (::rename(path_.c_str(), previous.c_str()) != 0) {
    SLUICE_LOG(kError, "cannot rotate the audit log ", path_, " to ", previous, ": ",
               std::strerror(errno), " (written on)");
    size_ = 0;  // tried again after as many bytes more
    return;
  }
  absl::StatusOr<std::FILE*> file = OpenForAppending(path_);
  if (!file.ok()) {
    // The moved file stays open: lines go on there, not lost.
    SLUICE_LOG(kError, "audit log: ", file.status().message(), " (writing on to ", previous,
               ")");
    size_ = 0;
    return;
  }
  std::fclose(file_);
  file_ = *file;
  size_ = 0;
}

AuditLog::~AuditLog() {
  absl::MutexLock lock(&mu_);
  std::fclose(file_);
}

namespace {

// `text` as a JSON string, quoted and escaped by protobuf's JSON printer.
// Text made only of characters that printer leaves alone (resource names
// are) is quoted here: an Apply of thousands of resources names each one.
std::string JsonString(const std::string& text) {
  bool plain = true;
  for (char c : text) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != '.' && c != '/' &&
        c != ' ' && c != ':' && c != '@') {
      plain = false;
      break;
    }
  }
  if (plain) return absl::StrCat("\"", text, "\"");
  google::protobuf::Value value;
  value.set_string_value(text);
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(value, &json);
  return json;
}

}  // namespace

std::string AuditLog::Format(const AuditRecord& record, absl::Time time) {
  // Fields in a fixed order, so that lines read (and diff) alike.
  std::string line = absl::StrCat(
      "{\"time\":",
      JsonString(
          absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", time, absl::UTCTimeZone())),
      ",\"identity\":", JsonString(record.identity),
      ",\"peer\":", JsonString(record.peer),
      ",\"method\":", JsonString(record.method), ",\"resources\":[");
  for (size_t i = 0; i < record.resources.size(); ++i) {
    absl::StrAppend(&line, i ? "," : "", JsonString(record.resources[i]));
  }
  absl::StrAppend(&line, "]");
  if (record.version != 0)
    absl::StrAppend(&line, ",\"version\":", record.version);
  if (record.dry_run) absl::StrAppend(&line, ",\"dry_run\":true");
  absl::StrAppend(&line, ",\"result\":", JsonString(record.result), "}");
  return line;
}

void AuditLog::Append(const AuditRecord& record) {
  // The time read under the lock: lines in the order of their times.
  absl::MutexLock lock(&mu_);
  std::string text = Format(record, now_()) + "\n";
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size() ||
      std::fflush(file_) != 0) {
    SLUICE_LOG(kError, "cannot write the audit log ", path_, ": ",
               std::strerror(errno));
    return;
  }
  size_ += text.size();
  if (max_bytes_ != 0 && size_ >= max_bytes_) Rotate();
}

}  // namespace sluice::controlplane
