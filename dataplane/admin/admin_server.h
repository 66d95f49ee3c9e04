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
// HTTP/1.1 of its own on libevent bufferevents (libevent's evhttp, before,
// had no bound on connections and restarted its timeout at every byte: 450
// clients sending a header line every few seconds held every descriptor,
// and the data path with them). Its limits, for callers with or without the
// token: a request head within kMaxHeadBytes and within kRequestTimeout of
// the connection's start or of its last response; no request body beyond
// kMaxBodyBytes (only GET and HEAD are served); at most kMaxConnections
// connections, a new one closing the oldest that is waiting for a request,
// else the one that has been writing its answer longest (clients that
// pipeline requests and never read held every place, and probes got no
// answer); one request at a time per connection (pipelined ones wait their
// turn); at most kMaxReplyBytesInFlight of answers being written.
//
// Main thread only; the providers it calls must be thread-safe.
#ifndef SLUICE_DATAPLANE_ADMIN_ADMIN_SERVER_H_
#define SLUICE_DATAPLANE_ADMIN_ADMIN_SERVER_H_

#include <functional>
#include <list>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/net/accept_backoff.h"

struct bufferevent;
struct evconnlistener;
struct event;
struct event_base;
struct sockaddr;

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

// The admin token from the first line of `path` (surrounding whitespace
// trimmed); INVALID_ARGUMENT naming the file when unreadable, empty or
// shorter than 16 characters.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

class AdminServer {
 public:
  static constexpr size_t kMaxConnections = 128;
  static constexpr size_t kMaxHeadBytes = 8 * 1024;
  static constexpr size_t kMaxBodyBytes = 1024;
  static constexpr absl::Duration kRequestTimeout = absl::Seconds(10);
  // Answers being written, all connections together; past it a new answer
  // (but /ready's and /livez's, a few bytes) is 503 (a client that asks for
  // /config_dump and never reads held a copy per connection: 130 of them
  // took 2.4 GB).
  static constexpr size_t kMaxReplyBytesInFlight = 64 << 20;

  AdminServer(event::Dispatcher& dispatcher, AdminHandlers handlers);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;
  // Binds HOST:PORT (port 0 picks one); returns the bound port.
  absl::StatusOr<int> Listen(const std::string& host_port);
  // From now on, every path but /ready and /livez needs `token` as a bearer token.
  void RequireToken(const std::string& token);
  size_t connections() const { return connections_.size(); }

 private:
  struct Connection;
  using ConnectionList = std::list<Connection>;
  // One request's answer, as bytes to write.
  struct Reply {
    int status = 200;
    std::string body;
    const char* content_type = "text/plain; charset=utf-8";
    std::string extra_headers;  // whole lines, CRLF-ended
    bool close = false;         // Connection: close, then close
  };

  static void OnAccept(::evconnlistener* listener, int fd, ::sockaddr* address, int length,
                       void* arg);
  // accept() failed (out of descriptors): libevent would log and retry at
  // once, forever, while the socket stays readable. Pauses accepting as the
  // workers do (net::AcceptBackoff).
  static void OnAcceptError(::evconnlistener* listener, void* arg);
  static void OnResumeAccepting(int fd, short what, void* arg);
  static void OnRead(::bufferevent* bev, void* arg);
  static void OnWritten(::bufferevent* bev, void* arg);
  static void OnEvent(::bufferevent* bev, short what, void* arg);
  static void OnDeadline(int fd, short what, void* arg);

  // Answers the next whole request in `c`'s input, if any and none is
  // being written.
  void Serve(ConnectionList::iterator c);
  // The answer to a parsed request.
  Reply Answer(absl::string_view method, absl::string_view target, bool has_token);
  void Send(ConnectionList::iterator c, Reply reply, bool head_only);
  void Close(ConnectionList::iterator c);
  // Room for one more connection: closes the oldest waiting for a request;
  // false when every one is writing a response.
  bool MakeRoom();

  ::event_base* base_;
  ::evconnlistener* listener_ = nullptr;
  ::event* resume_ = nullptr;
  net::AcceptBackoff accept_backoff_;
  AdminHandlers handlers_;
  std::string token_sha256_;  // empty: no token needed
  ConnectionList connections_;  // oldest first
  std::shared_ptr<size_t> reply_bytes_in_flight_ = std::make_shared<size_t>(0);
};

}  // namespace sluice::admin

#endif  // SLUICE_DATAPLANE_ADMIN_ADMIN_SERVER_H_
