// AdminServer: the proxy's admin HTTP endpoint (loopback by default), on the
// main thread's event loop.
//
//   GET /ready        200 once a config is applied; 503 before and while draining
//   GET /livez        200 while every worker answers
//   GET /metrics      Prometheus text format (/stats: the same)
//   GET /config_dump  the running config and its version as JSON, private keys
//                     redacted (config_dump.h renders it)
//   GET /clusters     endpoints, their health and counts (?format=json)
//
// With RequireToken(), every path but /ready and /livez answers 401 unless
// the request carries `Authorization: Bearer <token>` (compared as SHA-256
// digests in constant time): `sluice-proxy --admin-token-file`. /ready and
// /livez stay open for load balancers and Kubernetes probes.
//
// It is served by common::OpsHttpServer (ops_http_server.h), which bounds
// connections, request heads, time and answers in flight for callers with or
// without the token, and answers methods other than GET and HEAD itself.
//
// Main thread only; the providers it calls must be thread-safe.
#ifndef SLUICE_DATAPLANE_ADMIN_ADMIN_SERVER_H_
#define SLUICE_DATAPLANE_ADMIN_ADMIN_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/ops_http_server.h"
#include "dataplane/event/dispatcher.h"

namespace sluice::admin {

struct AdminHandlers {
  // (ready, reason) for /ready.
  std::function<std::pair<bool, std::string>()> ready;
  // (alive, reason) for /livez: false when a worker is stuck.
  std::function<std::pair<bool, std::string>()> live;
  std::function<std::string()> stats;
  std::function<std::string()> config_dump;
  // /clusters; JSON with ?format=json.
  std::function<std::string(bool json)> clusters;
  // Optional: called once a reply of OpsHttpServer::kLargeReplyBytes or
  // more is sent (or its client gone) and freed, to hand that memory back to
  // the kernel (a /metrics of a 10,000-route table is tens of MiB).
  std::function<void()> release_memory;
};

// The admin token from the first line of `path` (surrounding whitespace
// trimmed); INVALID_ARGUMENT naming the file when unreadable, empty or
// shorter than 16 characters.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

class AdminServer {
 public:
  static constexpr size_t kMaxConnections = common::OpsHttpServer::kMaxConnections;

  AdminServer(event::Dispatcher& dispatcher, AdminHandlers handlers);
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;
  // Binds HOST:PORT (port 0 picks one); returns the bound port.
  absl::StatusOr<int> Listen(const std::string& host_port);
  // From now on, every path but /ready and /livez needs `token` as a bearer token.
  void RequireToken(const std::string& token);
  size_t connections() const { return server_.connections(); }

 private:
  // The answer to a GET (or HEAD) request.
  common::OpsReply Answer(const common::OpsRequest& request);

  AdminHandlers handlers_;
  std::string token_sha256_;  // empty: no token needed
  common::OpsHttpServer server_;
};

}  // namespace sluice::admin

#endif  // SLUICE_DATAPLANE_ADMIN_ADMIN_SERVER_H_
