// OpsHttpServer: the bounded HTTP/1.1 server under both planes' operational
// endpoints (sluice-proxy's --admin, sluice-control's --metrics-listen). It
// serves GET and HEAD with small answers computed by a handler; it is not
// the request path.
//
// Written on libevent bufferevents because evhttp, used before, had no bound
// on connections and restarted its timeout at every byte: 450 clients
// sending a header line every few seconds held every descriptor, and the
// rest of the process with them. Its limits, for every caller:
// - a request head within kMaxHeadBytes (431 past it) and within
//   kRequestTimeout of the connection's start or of its last answer (then
//   closed); no request body beyond kMaxBodyBytes (413);
// - at most kMaxConnections connections: a new one closes the oldest that is
//   waiting for a request, else the one that has been writing its answer
//   longest (clients that pipeline requests and never read held every place,
//   and probes got no answer);
// - one request at a time per connection (pipelined ones wait their turn,
//   and are answered even after the client's half-close, RFC 9112 9.3.2);
//   an answer not read within kRequestTimeout is given up on;
// - at most kMaxReplyBytesInFlight of answers being written, all connections
//   together: past it an answer over 4 KiB is 503 with Retry-After: 1 (a
//   client that asks for a large answer and never reads held a copy per
//   connection: 130 of them took 2.4 GB).
// Framing is read strictly: one Host (HTTP/1.1), agreeing Content-Lengths, no
// Transfer-Encoding, no obs-fold, no bare CR or LF, origin-form targets;
// every answer has a Content-Length. Methods other than GET and HEAD are
// 405 (with Allow) or 501 before the handler sees them; HEAD gets the GET's
// head without the body.
//
// One event loop thread: construct, Serve() and destroy on it (or before
// it runs and after it stops); the handler runs on it.
#ifndef SLUICE_COMMON_OPS_HTTP_SERVER_H_
#define SLUICE_COMMON_OPS_HTTP_SERVER_H_

#include <functional>
#include <list>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/accept_backoff.h"

struct bufferevent;
struct evconnlistener;
struct event;
struct event_base;
struct sockaddr;

namespace sluice::common {

// A GET or HEAD request, as the handler sees it (views valid during the call).
struct OpsRequest {
  absl::string_view path;           // the target up to '?'
  absl::string_view query;          // after '?', without it
  absl::string_view authorization;  // the last Authorization field's value
};

struct OpsReply {
  int status = 200;
  std::string body;
  const char* content_type = "text/plain; charset=utf-8";
  std::string extra_headers;  // whole lines, CRLF-ended
  bool close = false;         // Connection: close, then close
};

// Splits "HOST:PORT" ("[::1]:PORT" for IPv6) into host and port 0..65535;
// INVALID_ARGUMENT naming what is wrong otherwise.
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& host_port);

// A non-blocking listening TCP socket on HOST:PORT ("[::1]:PORT" for IPv6;
// a host name is resolved, its first address taken; port 0 picks one):
// INVALID_ARGUMENT for a malformed address, UNAVAILABLE naming the reason
// when it cannot be bound.
absl::StatusOr<int> ListenTcp(const std::string& host_port, int backlog = 128);

class OpsHttpServer {
 public:
  static constexpr size_t kMaxConnections = 128;
  static constexpr size_t kMaxHeadBytes = 8 * 1024;
  static constexpr size_t kMaxBodyBytes = 1024;
  static constexpr absl::Duration kRequestTimeout = absl::Seconds(10);
  // After an answer with Connection: close, what the client still sends is
  // read and dropped, at most this long and this much, before the close.
  static constexpr absl::Duration kLingerTime = absl::Seconds(2);
  static constexpr size_t kMaxLingerBytes = 1 << 20;
  static constexpr size_t kMaxReplyBytesInFlight = 64 << 20;
  // An answer this large, once written (or its client gone) and freed, calls
  // `release_memory` (to hand the memory back to the kernel).
  static constexpr size_t kLargeReplyBytes = 4 << 20;

  using Handler = std::function<OpsReply(const OpsRequest&)>;

  // `name` starts the bodies of its own refusals ("the admin endpoint takes
  // GET and HEAD only") and its log lines.
  OpsHttpServer(::event_base* base, std::string name, Handler handler,
                std::function<void()> release_memory = {});
  ~OpsHttpServer();
  OpsHttpServer(const OpsHttpServer&) = delete;
  OpsHttpServer& operator=(const OpsHttpServer&) = delete;

  // Serves the listening socket `fd`, which it owns from now on (closed
  // even on error). At most once.
  absl::Status Serve(int fd);
  size_t connections() const { return connections_.size(); }

 private:
  struct Connection;
  using ConnectionList = std::list<Connection>;

  static void OnAccept(::evconnlistener* listener, int fd, ::sockaddr* address, int length,
                       void* arg);
  // accept() failed (out of descriptors): libevent would log and retry at
  // once, forever, while the socket stays readable. Pauses accepting as the
  // proxy's workers do (AcceptBackoff).
  static void OnAcceptError(::evconnlistener* listener, void* arg);
  static void OnResumeAccepting(int fd, short what, void* arg);
  static void OnRead(::bufferevent* bev, void* arg);
  static void OnWritten(::bufferevent* bev, void* arg);
  static void OnEvent(::bufferevent* bev, short what, void* arg);
  static void OnDeadline(int fd, short what, void* arg);

  // Answers the next whole request in `c`'s input, if any and none is
  // being written.
  void Serve(ConnectionList::iterator c);
  void Send(ConnectionList::iterator c, OpsReply reply, bool head_only);
  void Close(ConnectionList::iterator c);
  void Linger(ConnectionList::iterator c);  // shut the sending side, drop what comes
  // Room for one more connection: closes the oldest waiting for a request,
  // else the one writing longest; false when there is none.
  bool MakeRoom();

  ::event_base* base_;
  std::string name_;
  Handler handler_;
  std::shared_ptr<const std::function<void()>> release_memory_;
  ::evconnlistener* listener_ = nullptr;
  ::event* resume_ = nullptr;
  AcceptBackoff accept_backoff_;
  ConnectionList connections_;  // oldest first
  std::shared_ptr<size_t> reply_bytes_in_flight_ = std::make_shared<size_t>(0);
};

}  // namespace sluice::common

#endif  // SLUICE_COMMON_OPS_HTTP_SERVER_H_
