// A sluice-proxy process for integration tests, with its admin endpoint on an
// ephemeral port and its own state dir.
//
// Main test thread only.
#ifndef SLUICE_TESTS_HARNESS_PROXY_H_
#define SLUICE_TESTS_HARNESS_PROXY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "tests/harness/process.h"

namespace sluice::testing {

class Proxy {
 public:
  // Starts sluice-proxy; ok() once its admin endpoint is listening.
  // `extra_args` go on its command line. `workers` 0 leaves --workers out
  // (the proxy's default).
  Proxy(const std::string& control_plane, const std::string& node_id, int workers = 1,
        std::string state_dir = "", std::vector<std::string> extra_args = {});
  bool ok() const { return admin_port_ > 0; }
  Process& process() { return *process_; }
  const std::string& state_dir() const { return state_dir_; }
  std::string admin_address() const;

  // GET on the admin endpoint: (status, body).
  std::pair<int, std::string> Admin(const std::string& path) const;
  // The version /ready reports, 0 when not ready.
  uint64_t ReadyVersion() const;
  bool WaitForVersion(uint64_t version, absl::Duration timeout = absl::Seconds(20)) const;
  // A counter or gauge value from /stats (exact series text), -1 if absent.
  int64_t Stat(const std::string& series) const;

  // SIGTERM and wait for exit.
  std::optional<int> Stop(absl::Duration timeout = absl::Seconds(40));
  // Starts again with the same node id and state dir.
  bool Restart();

 private:
  bool Start();
  std::string control_plane_;
  std::string node_id_;
  int workers_;
  std::string state_dir_;
  std::vector<std::string> extra_args_;
  int starts_ = 0;
  int admin_port_ = 0;
  std::unique_ptr<Process> process_;
};

// A TCP port that was free a moment ago, outside the ephemeral range.
int PickFreePort();

// A loopback socket that listens and never accepts: the kernel completes
// TCP handshakes into its backlog, and nothing is ever sent (an upstream
// that never answers a ClientHello or an HTTP/2 preface). Its fd (the
// caller closes it), or -1; `port` is set to its port.
int SilentListener(int* port, int backlog = 16);

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_HARNESS_PROXY_H_
