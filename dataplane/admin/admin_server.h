// AdminServer: the proxy's admin HTTP endpoint (loopback by default), on the
// main thread's event loop.
//
//   GET /ready        200 once a config is applied; 503 before and while draining
//   GET /stats        Prometheus text format
//   GET /config_dump  the running config and its version as JSON, private keys
//                     redacted (config_dump.h renders it)
//   GET /clusters     endpoints, their health and counts (?format=json)
//
// Main thread only; the providers it calls must be thread-safe.
#ifndef SLUICE_DATAPLANE_ADMIN_ADMIN_SERVER_H_
#define SLUICE_DATAPLANE_ADMIN_ADMIN_SERVER_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "dataplane/event/dispatcher.h"

struct evhttp;
struct evhttp_request;

namespace sluice::admin {

struct AdminHandlers {
  // (ready, reason) for /ready.
  std::function<std::pair<bool, std::string>()> ready;
  std::function<std::string()> stats;
  std::function<std::string()> config_dump;
  // /clusters; JSON with ?format=json.
  std::function<std::string(bool json)> clusters;
};

class AdminServer {
 public:
  AdminServer(event::Dispatcher& dispatcher, AdminHandlers handlers);
  ~AdminServer();
  // Binds HOST:PORT (port 0 picks one); returns the bound port.
  absl::StatusOr<int> Listen(const std::string& host_port);

 private:
  static void Handle(::evhttp_request* request, void* arg);
  ::evhttp* http_;
  AdminHandlers handlers_;
};

}  // namespace sluice::admin

#endif  // SLUICE_DATAPLANE_ADMIN_ADMIN_SERVER_H_
