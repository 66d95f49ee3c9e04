// Test harness for multi-process tests: starts the real binaries, waits on
// their logs with deadlines, runs CLI commands and captures their output.
//
// Used from the test's main thread only.
#ifndef SLUICE_TESTS_HARNESS_PROCESS_H_
#define SLUICE_TESTS_HARNESS_PROCESS_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include <memory>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sluice::testing {

// Absolute path of a file in the test's runfiles, e.g.
// "controlplane/server/sluice-control".
std::string RunfilePath(const std::string& relative);

// A fresh directory under $TEST_TMPDIR.
std::string MakeTempDir(const std::string& prefix);

// Reads a whole file; empty when missing.
std::string ReadFile(const std::string& path);

// Writes `text` to dir/name; returns the path.
std::string WriteFile(const std::string& dir, const std::string& name, const std::string& text);

// Polls `condition` every few milliseconds until it holds or `timeout`
// passes. Returns whether it held.
template <typename F>
bool WaitFor(F condition, absl::Duration timeout);

// The first line of the file at `path` that contains `needle` (an access
// log line, say), waiting up to `timeout` for it to be written.
std::optional<std::string> WaitForFileLine(const std::string& path, const std::string& needle,
                                           absl::Duration timeout);

class Process {
 public:
  // Starts `binary` with `args`; stdout and stderr go to `log_path`.
  Process(const std::string& binary, const std::vector<std::string>& args,
          const std::string& log_path);
  ~Process();  // SIGKILLs the process if it still runs
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  std::string Log() const { return ReadFile(log_path_); }

  // The first log line that contains `needle`, waiting up to `timeout`.
  std::optional<std::string> WaitForLogLine(const std::string& needle,
                                            absl::Duration timeout) const;
  void Signal(int signal);
  // Waits for exit; returns the wait status, or nullopt on timeout.
  std::optional<int> Wait(absl::Duration timeout);
  bool Running();

 private:
  pid_t pid_ = -1;
  std::string log_path_;
  bool reaped_ = false;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs a command to completion with `env` added to the environment.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::vector<std::string>& env = {},
                         absl::Duration timeout = absl::Seconds(60));

// A sluice-control on an ephemeral port with its own data dir; `extra_args`
// go on its command line (e.g. {"--nack-retry", "500ms"}).
class ControlPlane {
 public:
  explicit ControlPlane(std::string data_dir = "", const std::string& log_level = "debug",
                        std::vector<std::string> extra_args = {});
  bool ok() const { return port_ > 0; }
  int port() const { return port_; }
  std::string address() const;
  const std::string& data_dir() const { return data_dir_; }
  Process& process() { return *process_; }
  // Restarts on the same port and data dir (after Kill or Stop).
  bool Restart();
  void Kill();  // SIGKILL, then reap

  // sluicectl with --server pointing here.
  CommandResult Ctl(const std::vector<std::string>& args) const;

 private:
  bool Start(int port);
  std::string data_dir_;
  std::string log_level_;
  std::vector<std::string> extra_args_;
  int port_ = 0;
  int starts_ = 0;
  std::unique_ptr<Process> process_;
};

template <typename F>
bool WaitFor(F condition, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (condition()) return true;
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_HARNESS_PROCESS_H_
