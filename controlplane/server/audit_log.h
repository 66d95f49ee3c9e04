// AuditLog: `<data-dir>/audit.log`, one JSON object per line for every change
// made through the admin API (Apply, Delete, Rollback, CreateToken,
// RevokeToken, dry runs included), every canary rollout decision the
// control plane makes itself (identity "sluice-control"), and every call
// refused for want of a valid token or a high enough role:
//
//   {"time":"2026-11-28T17:31:55.123456Z","identity":"ci","peer":"ipv4:127.0.0.1:5123",
//    "method":"Apply","resources":["Cluster/web"],"version":7,"result":"OK"}
//
// `identity` is the token's name, or "anonymous" when tokens are not
// required; `result` is "OK" or the gRPC code and message; `version` is the
// version after the change (absent when none). Each line is written whole
// and flushed to the OS, not fsynced: a power loss may lose the last lines.
// The file is opened for appending with mode 0600. With `max_bytes`, a
// line that takes it to that size or past moves it to `<path>.1` (replacing
// the one there) and starts a new one, so the log takes at most about twice
// that on the data dir's volume, whoever calls; else, or as well, after
// logrotate moves it, Reopen (SIGHUP or SIGUSR1) starts a new one at the
// path, or rotate it with copytruncate.
//
// Thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_AUDIT_LOG_H_
#define SLUICE_CONTROLPLANE_SERVER_AUDIT_LOG_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sluice::controlplane {

struct AuditRecord {
  std::string identity;
  std::string peer;
  std::string method;
  // "Kind/name" of each resource touched, or "token/<name>".
  std::vector<std::string> resources;
  uint64_t version = 0;  // 0: none
  bool dry_run = false;
  std::string result;  // "OK", or e.g. "PERMISSION_DENIED: ..."
};

class AuditLog {
 public:
  // Opens (creates) `path` for appending.
  // `max_bytes` 0: never rotated by sluice-control.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(
      const std::string& path, std::function<absl::Time()> now = &absl::Now,
      uint64_t max_bytes = 0);
  ~AuditLog();

  // Appends one line. A failed write is logged, not returned: the change it
  // describes has happened already.
  void Append(const AuditRecord& record);
  // Opens the path anew (a rotated file is closed); on failure the old file
  // stays in use and the error is returned.
  absl::Status Reopen();
  // The JSON line for `record` at `time`, without the newline.
  static std::string Format(const AuditRecord& record, absl::Time time);

 private:
  AuditLog(std::FILE* file, std::string path, std::function<absl::Time()> now,
           uint64_t max_bytes)
      : file_(file), path_(std::move(path)), now_(std::move(now)), max_bytes_(max_bytes) {}
  // Moves the file to <path>.1 and opens a new one (mu_ held).
  void Rotate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::FILE* file_ ABSL_GUARDED_BY(mu_);
  uint64_t size_ ABSL_GUARDED_BY(mu_) = 0;  // of the file being written
  std::string path_;
  std::function<absl::Time()> now_;
  const uint64_t max_bytes_;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_AUDIT_LOG_H_
