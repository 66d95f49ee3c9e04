#include "dataplane/accesslog/access_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "api/validation.h"
#include "common/json_string.h"
#include "common/log.h"

namespace sluice::accesslog {
namespace {

constexpr size_t kMaxBufferedBytes = 4 << 20;  // per worker, per destination
// A buffer this full wakes the writer before its interval is up: the
// interval alone would cap a worker's log at 40 MiB/s, whatever the disk.
constexpr size_t kWakeBytes = 512 << 10;
constexpr absl::Duration kWriteInterval = absl::Milliseconds(100);
constexpr char kStdout[] = "-";  // "stdout" is the same
constexpr char kStderr[] = "/dev/stderr";  // fd 2, as the proxy was started with
std::atomic<int64_t> write_interval_ms{absl::ToInt64Milliseconds(kWriteInterval)};

std::atomic<int> worker_count{1};
absl::Mutex allowed_dir_mu;
std::string allowed_dir ABSL_GUARDED_BY(allowed_dir_mu);  // real path; "" any

// Why `path` is not inside `dir` (a real path), or "": its directory,
// resolved (links included), must be `dir` or below it.
std::string OutsideAllowedDirectory(const std::string& path, const std::string& dir) {
  const size_t slash = path.rfind('/');
  const std::string parent = slash == 0 ? "/" : path.substr(0, slash);
  char resolved[PATH_MAX];
  if (::realpath(parent.c_str(), resolved) == nullptr) {
    return absl::StrCat("its directory ", parent, " cannot be resolved: ", std::strerror(errno));
  }
  const std::string real(resolved);
  if (real == dir || absl::StartsWith(real, dir == "/" ? dir : dir + "/")) return "";
  return absl::StrCat("it is outside ", dir, ", the only directory this proxy writes access logs "
                      "to (--access-log-dir)", real == parent ? "" : absl::StrCat(
                          "; its directory is ", real, " once links are followed"));
}
std::atomic<uint64_t> reopen_generation{0};

enum Field {
  kTime, kRequestId, kTraceId, kClientIp, kPeerIp, kMethod, kAuthority, kPath, kProtocol, kStatus,
  kBytesIn, kBytesOut, kDurationMs, kUpstreamDurationMs, kRoute, kCluster, kEndpoint,
  kAttempts, kConsumer, kTlsVersion, kSni, kTlsCipher, kTlsClientSubject, kUserAgent, kResponseFlag, kUpstreamFailure, kGrpcStatus,
  kCacheStatus, kFieldCount,
};

// "2026-11-28T16:07:21.123Z", the second's part cached per thread.
void AppendTime(std::string* out, absl::Time t) {
  thread_local int64_t cached_second = -1;
  thread_local char prefix[32];
  int64_t ms = absl::ToUnixMillis(t);
  int64_t second = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  if (second != cached_second) {
    absl::CivilSecond c = absl::ToCivilSecond(absl::FromUnixSeconds(second), absl::UTCTimeZone());
    snprintf(prefix, sizeof(prefix), "%04d-%02d-%02dT%02d:%02d:%02d", static_cast<int>(c.year()),
             c.month(), c.day(), c.hour(), c.minute(), c.second());
    cached_second = second;
  }
  int frac = static_cast<int>(ms - second * 1000);
  char tail[6] = {'.', static_cast<char>('0' + frac / 100), static_cast<char>('0' + frac / 10 % 10),
                  static_cast<char>('0' + frac % 10), 'Z', '"'};
  out->push_back('"');
  out->append(prefix);
  out->append(tail, sizeof(tail));
}

void AppendMillis(std::string* out, absl::Duration d) {
  // Three decimals: microsecond resolution.
  int64_t us = absl::ToInt64Microseconds(d);
  if (us < 0) us = 0;
  absl::StrAppend(out, us / 1000);
  int frac = static_cast<int>(us % 1000);
  char tail[4] = {'.', static_cast<char>('0' + frac / 100), static_cast<char>('0' + frac / 10 % 10),
                  static_cast<char>('0' + frac % 10)};
  out->append(tail, sizeof(tail));
}

}  // namespace

const std::vector<std::string>& FieldNames() { return api::AccessLogFieldNames(); }


// One file (or stdout): per-worker buffers and the thread that writes them.
class Destination {
 public:
  // The counters are held by the destination: their series leave /metrics
  // with it (a path no listener logs to, or one that never opened).
  Destination(std::string path, stats::StatsStore& store)
      : path_(std::move(path)), buffers_(static_cast<size_t>(worker_count.load())) {
    const std::string labels = absl::StrCat("path=", stats::LabelValue(path_));
    dropped_ = store.GetCounter("sluice_access_log_dropped_total", labels, &dropped_hold_);
    write_errors_ =
        store.GetCounter("sluice_access_log_write_errors_total", labels, &write_errors_hold_);
  }
  ~Destination() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    if (writer_.joinable()) writer_.join();
    WriteBuffered();
    if (fd_ > 2) close(fd_);
  }

  absl::Status Start() {
    absl::Status status = OpenFile();
    if (!status.ok()) return status;
    writer_ = std::thread([this] { Run(); });
    return absl::OkStatus();
  }

  void Append(int worker, const std::string& line) {
    Buffer& b = buffers_[static_cast<size_t>(worker) % buffers_.size()];
    bool wake = false;
    {
      absl::MutexLock lock(&b.mu);
      // Dropped when the entries already waiting fill the buffer (the disk
      // or the writer is behind), not for its own size: one entry larger
      // than the whole buffer (a 1 MiB head of bytes escaped 6 to 1) goes
      // in while the buffer is under its bound, or a client could keep its
      // request out of the log. A buffer holds at most the bound plus one
      // such entry.
      const bool oversized = line.size() > kMaxBufferedBytes;
      if (oversized ? b.data.size() >= kMaxBufferedBytes
                    : b.data.size() + line.size() > kMaxBufferedBytes) {
        dropped_->Inc();
        return;
      }
      wake = b.data.size() < kWakeBytes && b.data.size() + line.size() >= kWakeBytes;
      b.data.append(line);
    }
    if (wake) {
      absl::MutexLock lock(&mu_);
      wake_ = true;
    }
  }

  void WriteBuffered() {
    absl::MutexLock write_lock(&write_mu_);
    if (generation_ != reopen_generation.load() || reopen_failed_) {
      generation_ = reopen_generation.load();
      if (fd_ > 2) {
        // SIGUSR1 (after logrotate moved the file): open the path again.
        // Failing, entries go on to the file as it was, and each write
        // round tries again; said once.
        int old = fd_;
        absl::Status opened = OpenFile();
        if (opened.ok()) {
          close(old);
          // A new (rotated) file starts clean; the same file reopened does not.
          struct stat st;
          if (::fstat(fd_, &st) == 0 && st.st_size == 0) mid_line_ = false;
          if (reopen_failed_) SLUICE_LOG(kInfo, "access log ", path_, " reopened");
          reopen_failed_ = false;
        } else if (!reopen_failed_) {
          reopen_failed_ = true;
          SLUICE_LOG(kWarning, opened.message(),
                     " (reopen after SIGHUP or SIGUSR1); writing on to the file as it was opened "
                     "and trying again");
        }
      }
    }
    for (Buffer& b : buffers_) {
      {
        absl::MutexLock lock(&b.mu);
        if (b.data.empty()) continue;
        scratch_.swap(b.data);
      }
      WriteAll(scratch_);
      scratch_.clear();
    }
  }

 private:
  struct Buffer {
    absl::Mutex mu;
    std::string data ABSL_GUARDED_BY(mu);
  };

  absl::Status OpenFile() {
    if (path_ == kStdout || path_ == kStderr) {
      fd_ = path_ == kStdout ? 1 : 2;
      NoteKind();
      return absl::OkStatus();
    }
    bool confined;
    {
      absl::MutexLock lock(&allowed_dir_mu);
      confined = !allowed_dir.empty();
    }
    // Not blocking on a FIFO nobody reads. Confined to a directory: not
    // through a link either (one inside could point out of it).
    int fd = open(path_.c_str(),
                  O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK | (confined ? O_NOFOLLOW : 0),
                  0640);
    if (fd < 0) {
      return absl::UnavailableError(absl::StrCat(
          "cannot open access log ", path_, ": ",
          errno == ELOOP && confined ? "it is a symbolic link (with --access-log-dir, name the file itself)"
                                     : std::strerror(errno)));
    }
    // A disk's block device is never a log; confined, only regular files
    // and FIFOs (a log shipper's pipe) are.
    struct stat st;
    const bool fits = ::fstat(fd, &st) == 0 && !S_ISBLK(st.st_mode) &&
                      (!confined || S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode));
    if (!fits) {
      close(fd);
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot open access log ", path_, ": ",
          confined ? "not a regular file or FIFO" : "a block device"));
    }
    if (std::string why = NotALog(fd, st); !why.empty()) {
      close(fd);
      return absl::InvalidArgumentError(absl::StrCat("cannot open access log ", path_, ": ", why));
    }
    // A FIFO stays non-blocking: a reader that stalls costs entries
    // (counted write errors), never a writer stuck in write(), which a
    // config change or the shutdown would wait for.
    fd_ = fd;
    NoteKind();
    return absl::OkStatus();
  }

  // What the name reached that no log may be, whatever its spelling (a
  // symbolic link to /proc/self/fd/5): an anonymous pipe, one of the
  // proxy's own (its event loop's signal pipe took each line's newline for
  // a SIGUSR1), or a memory device (/dev/mem, /dev/kmsg). "" when fine.
  static std::string NotALog(int fd, const struct stat& st) {
    if (S_ISFIFO(st.st_mode)) {
      char target[64];
      const ssize_t n =
          readlink(absl::StrCat("/proc/self/fd/", fd).c_str(), target, sizeof(target) - 1);
      if (n > 5 && std::string_view(target, 5) == "pipe:") {
        return "an anonymous pipe (one of the proxy's own descriptors), not a file or FIFO; "
               "\"-\" writes to standard output, /dev/stderr to standard error";
      }
    }
    if (S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) != 3 &&
        minor(st.st_rdev) != 7) {
      return "a memory device (only /dev/null and /dev/full of that kind may be named)";
    }
    return "";
  }

  // A pipe or a socket (standard error shared with the proxy's own log, a
  // log shipper's FIFO, journald's stream) splices other writers' bytes
  // into a write over PIPE_BUF: there lines go out in writes of whole lines
  // of at most PIPE_BUF bytes, each atomic (a longer line alone).
  void NoteKind() {
    struct stat st;
    shared_stream_ = ::fstat(fd_, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
  }

  // Writes whole lines. A write that failed part way through a line (a full
  // disk, a file size limit) leaves the file mid-line: the next write that
  // goes through ends that torn line first, so each entry after it is still
  // a line of its own.
  void WriteAll(const std::string& data) {
    if (!mid_line_) {
      WriteSome(data);
      return;
    }
    std::string joined;  // rare: once after a failed write
    joined.reserve(data.size() + 1);
    joined.push_back('\n');
    joined.append(data);
    WriteSome(joined);
  }

  // `data` ends with a newline. A failed write is counted and said;
  // mid_line_ then tells whether the file ends inside a line.
  void WriteSome(std::string_view data) {
    size_t done = 0;
    while (done < data.size()) {
      size_t piece = data.size() - done;
      if (shared_stream_ && piece > PIPE_BUF) {
        // Whole lines up to PIPE_BUF bytes, or the one line that is longer.
        const std::string_view rest = data.substr(done);
        size_t end = rest.rfind('\n', PIPE_BUF - 1);
        if (end == std::string_view::npos) end = rest.find('\n');
        piece = end == std::string_view::npos ? rest.size() : end + 1;
      }
      ssize_t n = write(fd_, data.data() + done, piece);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int error = n < 0 ? errno : EIO;
        write_errors_->Inc();
        NoteLoss(data.size() - done, error);
        if (done > 0) mid_line_ = data[done - 1] != '\n';
        return;
      }
      done += static_cast<size_t>(n);
    }
    mid_line_ = false;
  }

  // Said at most once every 10 s, with what was lost since: a full disk
  // took a line of the proxy's own log for every failed write (25 a
  // second), on the disk, or in the journal, that was full.
  void NoteLoss(size_t bytes, int error) {
    lost_bytes_ += bytes;
    ++failed_writes_;
    const absl::Time now = absl::Now();
    if (now - last_loss_warning_ < absl::Seconds(10)) return;
    SLUICE_LOG(kWarning, "access log ", path_, ": write failed: ", std::strerror(error), "; ",
               lost_bytes_, " bytes lost in ", failed_writes_, failed_writes_ == 1 ? " write" :
               " writes", last_loss_warning_ == absl::InfinitePast() ? "" :
               " since the last warning", " (at most one warning every 10 s; "
               "sluice_access_log_write_errors_total counts each)");
    last_loss_warning_ = now;
    lost_bytes_ = 0;
    failed_writes_ = 0;
  }

  void Run() {
    // Below the workers: on a busy machine the workers get the CPU and the
    // log waits (its buffers bound the wait; past them entries are dropped
    // and counted), not the other way round.
    setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 10);
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(this, &Destination::StopOrWake),
                             absl::Milliseconds(write_interval_ms.load()));
        if (stop_) return;
        wake_ = false;
      }
      WriteBuffered();
    }
  }

  const std::string path_;
  std::vector<Buffer> buffers_;
  std::shared_ptr<const void> dropped_hold_;
  std::shared_ptr<const void> write_errors_hold_;
  stats::Counter* dropped_;
  stats::Counter* write_errors_;
  absl::Mutex write_mu_;  // one writer at a time (the thread, or FlushAll)
  int fd_ = -1;
  bool shared_stream_ = false;  // a pipe or socket: writes of whole lines within PIPE_BUF
  absl::Time last_loss_warning_ = absl::InfinitePast();
  size_t lost_bytes_ = 0;      // since the last warning
  uint64_t failed_writes_ = 0;  // since the last warning
  uint64_t generation_ = 0;
  std::string scratch_;
  bool StopOrWake() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || wake_; }

  bool reopen_failed_ = false;  // under write_mu_
  bool mid_line_ = false;       // under write_mu_
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;  // a buffer passed kWakeBytes
  std::thread writer_;
};

namespace {

// Strong references: a destination is closed by PruneUnused() on the
// config thread (its writer thread joined there), never by the last
// request to use it on a worker.
absl::Mutex registry_mu;
std::map<std::string, std::shared_ptr<Destination>>& Registry() {
  static auto* registry = new std::map<std::string, std::shared_ptr<Destination>>();
  return *registry;
}

}  // namespace

void SetWorkerCount(int workers) { worker_count.store(workers < 1 ? 1 : workers); }

void ReopenAll() { reopen_generation.fetch_add(1); }

void SetAllowedDirectory(std::string dir) {
  absl::MutexLock lock(&allowed_dir_mu);
  allowed_dir = std::move(dir);
}

void PruneUnused() {
  std::vector<std::shared_ptr<Destination>> closing;
  {
    absl::MutexLock lock(&registry_mu);
    for (auto it = Registry().begin(); it != Registry().end();) {
      if (it->second.use_count() == 1) {
        closing.push_back(std::move(it->second));
        it = Registry().erase(it);
      } else {
        ++it;
      }
    }
  }
  closing.clear();  // joins their writers, outside the lock
}

void SetWriteIntervalForTest(absl::Duration interval) {
  write_interval_ms = absl::ToInt64Milliseconds(interval);
}

void FlushAll() {
  std::vector<std::shared_ptr<Destination>> all;
  {
    absl::MutexLock lock(&registry_mu);
    for (auto& [path, d] : Registry()) all.push_back(d);
  }
  for (auto& d : all) d->WriteBuffered();
}

absl::StatusOr<std::shared_ptr<const AccessLog>> AccessLog::Open(
    const std::string& path, const std::vector<std::string>& fields, uint32_t sample_percent,
    stats::StatsStore& store) {
  auto log = std::make_shared<AccessLog>();
  const std::vector<std::string>& names = FieldNames();
  if (fields.empty()) {
    for (int i = 0; i < kFieldCount; ++i) log->fields_.push_back(i);
  } else {
    for (const std::string& f : fields) {
      auto it = std::find(names.begin(), names.end(), f);
      if (it == names.end()) return absl::InvalidArgumentError("unknown access log field " + f);
      log->fields_.push_back(static_cast<int>(it - names.begin()));
    }
  }
  log->sample_percent_ = sample_percent == 0 ? 100 : sample_percent;
  // Every spelling of standard output is one destination: two writers on
  // one pipe would splice each other's lines (a write over PIPE_BUF is not
  // atomic). /dev/stdout is Envoy's spelling.
  // Any other name of the file standard output is (/dev/fd/1, the file it
  // was redirected to) is it too: two offsets on one file overwrite lines.
  // Standard error likewise (/dev/stderr is a link, to what fd 2 is).
  std::string key = path;
  if (path == "stdout" || path == "/dev/stdout" || path == "/proc/self/fd/1") {
    key = kStdout;
  } else if (path != kStdout) {
    // Standard output first: with 2>&1, /dev/stderr is standard output.
    if (struct stat named; ::stat(path.c_str(), &named) == 0) {
      for (const auto& [fd, name] : {std::pair{1, kStdout}, std::pair{2, kStderr}}) {
        struct stat standard;
        if (::fstat(fd, &standard) == 0 && named.st_dev == standard.st_dev &&
            named.st_ino == standard.st_ino) {
          key = name;
          break;
        }
      }
    }
    if (path == "/proc/self/fd/2" && key != kStdout) key = kStderr;
  }
  if (key != kStdout && key != kStderr) {
    absl::MutexLock lock(&allowed_dir_mu);
    if (!allowed_dir.empty()) {
      if (std::string why = OutsideAllowedDirectory(path, allowed_dir); !why.empty()) {
        return absl::PermissionDeniedError(
            absl::StrCat("access log ", path, " is refused: ", why));
      }
    }
  }
  absl::MutexLock lock(&registry_mu);
  std::shared_ptr<Destination>& slot = Registry()[key];
  log->destination_ = slot;
  if (log->destination_ == nullptr) {
    auto destination = std::make_shared<Destination>(key, store);
    if (absl::Status status = destination->Start(); !status.ok()) {
      Registry().erase(key);
      return status;
    }
    slot = destination;
    log->destination_ = std::move(destination);
  }
  return std::shared_ptr<const AccessLog>(std::move(log));
}

namespace {

// Userinfo (RFC 3986 3.2.1, `user:password@`) in a refused request's Host
// or :authority, or in the authority of its absolute-form target: it holds
// a password, so it is logged as `[redacted]@` (the request got its 400
// for it; an origin-form path's '@', `/users/@me`, is no userinfo).
void AppendWithoutUserinfo(std::string* line, std::string_view value, bool target) {
  const size_t any_at = value.find('@');
  size_t start = 0;
  if (any_at != std::string_view::npos && target) {
    const size_t scheme_end = value.find("://");
    start = value.empty() || value[0] == '/' || scheme_end == std::string_view::npos
                ? std::string_view::npos
                : scheme_end + 3;
  }
  if (any_at == std::string_view::npos || start == std::string_view::npos) {
    common::AppendJsonString(line, value);
    return;
  }
  const std::string_view authority =
      value.substr(start, value.find_first_of("/?#", start) - std::min(start, value.size()));
  const size_t at = authority.rfind('@');
  if (at == std::string_view::npos) {
    common::AppendJsonString(line, value);
    return;
  }
  std::string redacted(value.substr(0, start));
  redacted.append("[redacted]");
  redacted.append(value.substr(start + at));
  common::AppendJsonString(line, redacted);
}

}  // namespace

void AccessLog::Log(int worker, const Entry& e) const {
  thread_local std::string line;
  line.clear();
  line.push_back('{');
  bool first = true;
  for (int f : fields_) {
    if (!first) line.push_back(',');
    first = false;
    line.push_back('"');
    line.append(FieldNames()[static_cast<size_t>(f)]);
    line.append("\":");
    switch (f) {
      case kTime: AppendTime(&line, e.start); break;
      case kRequestId: common::AppendJsonString(&line, e.request_id); break;
      case kTraceId: common::AppendJsonString(&line, e.trace_id); break;
      case kClientIp: common::AppendJsonString(&line, e.client_ip); break;
      case kPeerIp:
        common::AppendJsonString(&line, e.peer_ip.empty() ? e.client_ip : e.peer_ip);
        break;
      case kMethod: common::AppendJsonString(&line, e.method); break;
      case kAuthority: AppendWithoutUserinfo(&line, e.authority, /*target=*/false); break;
      case kPath: AppendWithoutUserinfo(&line, e.path, /*target=*/true); break;
      case kProtocol: common::AppendJsonString(&line, e.protocol); break;
      case kStatus: absl::StrAppend(&line, e.status); break;
      case kBytesIn: absl::StrAppend(&line, e.bytes_in); break;
      case kBytesOut: absl::StrAppend(&line, e.bytes_out); break;
      case kDurationMs: AppendMillis(&line, e.duration); break;
      case kUpstreamDurationMs:
        if (e.upstream_duration == absl::InfiniteDuration()) {
          line.append("null");
        } else {
          AppendMillis(&line, e.upstream_duration);
        }
        break;
      case kRoute: common::AppendJsonString(&line, e.route); break;
      case kCluster: common::AppendJsonString(&line, e.cluster); break;
      case kEndpoint: common::AppendJsonString(&line, e.endpoint); break;
      case kAttempts: absl::StrAppend(&line, e.attempts); break;
      case kConsumer: common::AppendJsonString(&line, e.consumer); break;
      case kTlsVersion: common::AppendJsonString(&line, e.tls_version); break;
      case kSni: common::AppendJsonString(&line, e.sni); break;
      case kTlsCipher: common::AppendJsonString(&line, e.tls_cipher); break;
      case kTlsClientSubject: common::AppendJsonString(&line, e.tls_client_subject); break;
      case kUserAgent: common::AppendJsonString(&line, e.user_agent); break;
      case kResponseFlag: common::AppendJsonString(&line, e.response_flag); break;
      case kUpstreamFailure: common::AppendJsonString(&line, e.upstream_failure); break;
      case kGrpcStatus:
        if (e.grpc_status < 0) {
          line.append("null");
        } else {
          absl::StrAppend(&line, e.grpc_status);
        }
        break;
      case kCacheStatus: common::AppendJsonString(&line, e.cache_status); break;
    }
  }
  line.append("}\n");
  destination_->Append(worker, line);
}

}  // namespace sluice::accesslog
