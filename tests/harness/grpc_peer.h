// gRPC peers for integration tests: grpc_tool.py (Debian's python3-grpcio)
// as a server process, and its one-shot client calls with the JSON line each
// prints parsed into a GrpcCallResult. See grpc_tool.py's docstring for the
// services, the payload conventions and the JSON fields.
//
// Depending on //tests/harness:grpc_peer puts grpc_tool.py in runfiles.
// GrpcServer: main test thread only. GrpcCall() runs a process to
// completion and shares nothing, so test threads may call it at once.
#ifndef SLUICE_TESTS_HARNESS_GRPC_PEER_H_
#define SLUICE_TESTS_HARNESS_GRPC_PEER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "tests/harness/process.h"

namespace sluice::testing {

// `grpc_tool.py server` on 127.0.0.1, ephemeral port, h2c unless TLS.
class GrpcServer {
 public:
  struct Options {
    std::string cert_path;    // with key_path: TLS (ALPN h2)
    std::string key_path;
    std::string health_file;  // grpc.health.v1 statuses, re-read per call
    std::string client_ca_path;  // with TLS: a client certificate from this CA is required
  };
  // Starts the server and waits (up to 30 s) for "listening on PORT";
  // ok() says whether it came. `name` names its log file.
  explicit GrpcServer(const std::string& name, Options options = {});
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  bool ok() const { return port_ > 0; }
  int port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT"
  Process& process() { return *process_; }

 private:
  std::unique_ptr<Process> process_;
  int port_ = 0;
};

// What one `grpc_tool.py call` printed. `parsed` is false when the tool did
// not print its JSON line (it failed, or was killed at the timeout); then
// only exit_code, out, err and parse_error mean anything.
struct GrpcCallResult {
  int exit_code = -1;
  std::string out;  // the raw JSON line
  std::string err;  // the tool's stderr
  bool parsed = false;
  std::string parse_error;

  bool ok = false;
  std::string code;  // grpc.StatusCode name: "OK", "UNAVAILABLE", ...
  std::string details;
  std::map<std::string, std::string> initial_metadata;
  std::map<std::string, std::string> trailing_metadata;
  int64_t responses = 0;
  int64_t bytes = 0;
  std::optional<std::string> payload;  // first response, when printable text
  bool verified = false;
  std::string status;                  // health calls: "SERVING", ...
  std::map<std::string, int64_t> stats;  // stats calls: calls per method
  int64_t elapsed_ms = 0;

  // For failure messages: the JSON line, stderr and why parsing failed.
  std::string Describe() const;
};

// Runs `grpc_tool.py call TARGET KIND ARGS...`, e.g.
//   GrpcCall("127.0.0.1:8080", "unary", {"--payload", "fail:5:gone"}).
// `timeout` bounds the process (not the call's deadline: that is --timeout).
GrpcCallResult GrpcCall(const std::string& target, const std::string& kind,
                        const std::vector<std::string>& args = {},
                        absl::Duration timeout = absl::Seconds(60));

// Parses the tool's JSON line into `result` (sets parsed / parse_error).
void ParseGrpcCallOutput(const std::string& json, GrpcCallResult* result);

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_HARNESS_GRPC_PEER_H_
