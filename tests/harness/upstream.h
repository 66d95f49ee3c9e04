// An upstream_server process (see upstream_server.cc) on an ephemeral
// loopback port, for integration tests that need a real origin behind the
// proxy. Depending on //tests/harness:upstream puts the binary in runfiles.
//
// Main test thread only.
#ifndef SLUICE_TESTS_HARNESS_UPSTREAM_H_
#define SLUICE_TESTS_HARNESS_UPSTREAM_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "tests/harness/process.h"

namespace sluice::testing {

// Path of the upstream_server binary: $SLUICE_UPSTREAM_SERVER when set (for
// runs outside Bazel), else its runfiles path.
std::string UpstreamServerPath();

class UpstreamServer {
 public:
  // Starts `upstream_server --port 0 --name <name>` and waits (up to 10 s)
  // for its "listening on" line; ok() says whether it came.
  explicit UpstreamServer(std::string name);
  // On a given port (0: ephemeral), with `defaults` (e.g. "status=503" or
  // "delay_ms=50") applied to every request before its own query.
  UpstreamServer(std::string name, int port, std::string defaults);
  // On `address` (an IPv4 loopback address, e.g. 127.0.0.2).
  UpstreamServer(std::string name, int port, std::string defaults, std::string address);
  UpstreamServer(const UpstreamServer&) = delete;
  UpstreamServer& operator=(const UpstreamServer&) = delete;

  bool ok() const { return port_ > 0; }
  int port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT" (its IP)
  const std::string& name() const { return name_; }
  Process& process() { return *process_; }

  // Requests received so far, from GET /__stats; nullopt if that fails.
  std::optional<int> RequestCount() const;
  // SIGTERM, then waits; returns the wait status, nullopt on timeout.
  std::optional<int> Stop(absl::Duration timeout = absl::Seconds(10));

 private:
  std::string name_;
  std::string ip_ = "127.0.0.1";
  int port_ = 0;
  std::unique_ptr<Process> process_;
};

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_HARNESS_UPSTREAM_H_
