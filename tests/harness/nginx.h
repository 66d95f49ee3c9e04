// nginx (scripts/install-deps.sh installs it, 1.22 on Debian 12) as a real
// upstream for integration tests: HTTPS, HTTP/2 with prior knowledge (h2c,
// `listen ... http2`), h2 by ALPN (`listen ... ssl http2`).
//
// Main test thread only.
#ifndef SLUICE_TESTS_HARNESS_NGINX_H_
#define SLUICE_TESTS_HARNESS_NGINX_H_

#include <memory>
#include <string>
#include <vector>

#include "tests/harness/process.h"

namespace sluice::testing {

// One nginx process in the foreground (no master, one worker), with its
// config, logs, pid and temp files in `dir`.
class Nginx {
 public:
  // `servers` is the `server { ... }` blocks of the http context; the rest
  // of the config is fixed (no access log, default type text/plain). ok()
  // once every port in `ports` accepts connections (nginx cannot bind port 0
  // and tell us: pick them with PickFreePort()).
  Nginx(const std::string& dir, const std::string& servers, const std::vector<int>& ports);
  Nginx(const Nginx&) = delete;
  Nginx& operator=(const Nginx&) = delete;

  bool ok() const { return ok_; }
  // The error log (level info) and whatever nginx printed.
  std::string Log() const;
  Process& process() { return *process_; }

 private:
  std::unique_ptr<Process> process_;
  std::string error_log_;
  bool ok_ = false;
};

// Whether something accepts TCP connections on 127.0.0.1:port.
bool AcceptingConnections(int port);

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_HARNESS_NGINX_H_
