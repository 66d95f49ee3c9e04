// AdminServer: the proxy's admin HTTP endpoint (loopback by default), on the
// main thread's event loop.
//
//   GET /ready        200 once a config is applied; 503 before and while draining
//   GET /stats        Prometheus text format
//   GET /config_dump  the running config and its version as JSON, private keys
//                     redacted (config_dump.h renders it)
//   GET /clusters     endpoints, their health and counts (?format=json)
//
// With RequireToken(), every path but /ready and /livez answers 401 unless
// the request carries `Authorization: Bearer <token>` (compared as SHA-256
// digests in constant time): `sluice-proxy --admin-token-file`. /ready and
// /livez stay open for load balancers and Kubernetes probes.
//
// Main thread only; the providers it calls must be thread-safe.
#ifndef SLUICE_DATAPLANE_ADMIN_ADMIN_SERVER_H_
#define SLUICE_DATAPLANE_ADMIN_ADMIN_SERVER_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/net/accept_backoff.h"

struct evconnlistener;
struct event;
struct event_base;
struct evhttp;
struct evhttp_request;

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
  // Optional: called once a reply of kLargeReplyBytes or more is sent (or
  // its client gone) and freed, to hand that memory back to the kernel (a
  // /metrics of a 10,000-route table is tens of MiB).
  std::function<void()> release_memory;
};

inline constexpr size_t kLargeReplyBytes = 4 << 20;

class AdminServer {
 public:
  AdminServer(event::Dispatcher& dispatcher, AdminHandlers handlers);
  ~AdminServer();
  // Binds HOST:PORT (port 0 picks one); returns the bound port.
  absl::StatusOr<int> Listen(const std::string& host_port);
  // From now on, every path but /ready and /livez needs `token` as a bearer token.
  void RequireToken(const std::string& token);
  // Reads the token from the first line of `path` (surrounding whitespace
  // trimmed); INVALID_ARGUMENT naming the file when unreadable, empty or
  // shorter than 16 characters.
  absl::Status RequireTokenFromFile(const std::string& path);

 private:
  static void Handle(::evhttp_request* request, void* arg);
  // accept() failed (out of descriptors): libevent would log and retry at
  // once, forever, while the socket stays readable. Pauses accepting as the
  // workers do (net::AcceptBackoff).
  static void OnAcceptError(::evconnlistener* listener, void* arg);
  static void OnResumeAccepting(int fd, short what, void* arg);

  ::event_base* base_;
  ::evhttp* http_;
  ::evconnlistener* listener_ = nullptr;
  ::event* resume_ = nullptr;
  net::AcceptBackoff accept_backoff_;
  AdminHandlers handlers_;
  std::string token_sha256_;  // empty: no token needed
};

}  // namespace sluice::admin

#endif  // SLUICE_DATAPLANE_ADMIN_ADMIN_SERVER_H_
