#include "tests/harness/process.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sluice::testing {

std::string RunfilePath(const std::string& relative) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr) return relative;
  return absl::StrCat(srcdir, "/", workspace ? workspace : "sluice", "/", relative);
}

std::string MakeTempDir(const std::string& prefix) {
  static std::atomic<int> counter{0};
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(base ? base : "/tmp", "/", prefix, "-", getpid(), "-",
                                 counter.fetch_add(1));
  mkdir(dir.c_str(), 0700);
  return dir;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string WriteFile(const std::string& dir, const std::string& name, const std::string& text) {
  std::string path = absl::StrCat(dir, "/", name);
  std::ofstream(path) << text;
  return path;
}

Process::Process(const std::string& binary, const std::vector<std::string>& args,
                 const std::string& log_path)
    : log_path_(log_path) {
  std::vector<std::string> all = {binary};
  all.insert(all.end(), args.begin(), args.end());
  pid_ = fork();
  if (pid_ == 0) {
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    int null_fd = open("/dev/null", O_RDONLY);
    dup2(null_fd, 0);
    setpgid(0, 0);
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
}

Process::~Process() {
  if (pid_ > 0 && !reaped_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

std::optional<std::string> Process::WaitForLogLine(const std::string& needle,
                                                   absl::Duration timeout) const {
  return WaitForFileLine(log_path_, needle, timeout);
}

std::optional<std::string> WaitForFileLine(const std::string& path, const std::string& needle,
                                           absl::Duration timeout) {
  std::optional<std::string> found;
  WaitFor(
      [&] {
        for (absl::string_view line : absl::StrSplit(ReadFile(path), '\n')) {
          if (line.find(needle) != absl::string_view::npos) {
            found = std::string(line);
            return true;
          }
        }
        return false;
      },
      timeout);
  return found;
}

void Process::Signal(int signal) {
  if (pid_ > 0 && !reaped_) kill(pid_, signal);
}

std::optional<int> Process::Wait(absl::Duration timeout) {
  if (reaped_) return 0;
  int status = 0;
  bool done = WaitFor(
      [&] {
        pid_t r = waitpid(pid_, &status, WNOHANG);
        return r == pid_;
      },
      timeout);
  if (!done) return std::nullopt;
  reaped_ = true;
  return status;
}

bool Process::Running() {
  if (reaped_) return false;
  int status;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    reaped_ = true;
    return false;
  }
  return true;
}

CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::vector<std::string>& env, absl::Duration timeout) {
  std::string dir = MakeTempDir("cmd");
  std::string out_path = dir + "/out", err_path = dir + "/err";
  pid_t pid = fork();
  if (pid == 0) {
    int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(out, 1);
    dup2(err, 2);
    int null_fd = open("/dev/null", O_RDONLY);
    dup2(null_fd, 0);
    for (const auto& e : env) putenv(strdup(e.c_str()));
    std::vector<char*> args;
    std::vector<std::string> copy = argv;
    for (auto& a : copy) args.push_back(a.data());
    args.push_back(nullptr);
    execv(copy[0].c_str(), args.data());
    _exit(127);
  }
  CommandResult result;
  int status = 0;
  bool done = WaitFor([&] { return waitpid(pid, &status, WNOHANG) == pid; }, timeout);
  if (!done) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    result.exit_code = -1;
  } else {
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  result.out = ReadFile(out_path);
  result.err = ReadFile(err_path);
  return result;
}

ControlPlane::ControlPlane(std::string data_dir, const std::string& log_level,
                           std::vector<std::string> extra_args)
    : data_dir_(data_dir.empty() ? MakeTempDir("cp-data") : std::move(data_dir)),
      log_level_(log_level),
      extra_args_(std::move(extra_args)) {
  Start(0);
}

std::string ControlPlane::address() const { return absl::StrCat("127.0.0.1:", port_); }

bool ControlPlane::Start(int port) {
  std::string log = absl::StrCat(data_dir_, ".log.", starts_++);
  std::vector<std::string> args = {"--listen", absl::StrCat("127.0.0.1:", port), "--data-dir",
                                   data_dir_, "--log-level", log_level_};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  process_ = std::make_unique<Process>(RunfilePath("controlplane/server/sluice-control"), args,
                                       log);
  std::optional<std::string> line;
  WaitFor(
      [&] {
        line = process_->WaitForLogLine("listening on 127.0.0.1:", absl::ZeroDuration());
        return line.has_value() || !process_->Running();
      },
      absl::Seconds(30));
  if (!line) return false;
  std::string tail = line->substr(line->find("127.0.0.1:") + 10);
  int parsed = 0;
  if (!absl::SimpleAtoi(tail.substr(0, tail.find(',')), &parsed)) return false;
  port_ = parsed;
  return true;
}

bool ControlPlane::Restart() {
  if (process_ && process_->Running()) Kill();
  // The port may sit in TIME_WAIT briefly; gRPC sets SO_REUSEADDR, so retry.
  for (int attempt = 0; attempt < 50; ++attempt) {
    if (Start(port_)) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

void ControlPlane::Kill() {
  process_->Signal(SIGKILL);
  process_->Wait(absl::Seconds(10));
}

CommandResult ControlPlane::Ctl(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {RunfilePath("controlplane/cli/sluicectl"), "--server",
                                   address()};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

}  // namespace sluice::testing
