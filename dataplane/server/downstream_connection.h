// DownstreamConnection: one client connection and the requests on it, from
// the parsed request head through routing, endpoint choice and the upstream
// exchange to the end of the response.
//
// Requests on a connection are handled one at a time, in order: a pipelined
// request waits, unparsed, in the input buffer until the response before it
// is done. Bodies stream both ways; when either side's output backs up past
// kHighWatermark, reading from the other side pauses until it drains.
//
// Worker thread only. Frees itself (deferred) when the connection ends.
#ifndef SLUICE_DATAPLANE_SERVER_DOWNSTREAM_CONNECTION_H_
#define SLUICE_DATAPLANE_SERVER_DOWNSTREAM_CONNECTION_H_

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "dataplane/config/snapshot.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/filter.h"
#include "dataplane/http/header_map.h"
#include "dataplane/http/http1_parser.h"
#include "dataplane/net/connection.h"
#include "dataplane/upstream/connection_pool.h"

namespace sluice::server {

class Worker;

class DownstreamConnection : public net::ConnectionCallbacks,
                             public http::Http1Callbacks,
                             public http::FilterCallbacks,
                             public upstream::UpstreamEvents,
                             public event::DeferredDeletable {
 public:
  static constexpr size_t kHighWatermark = 1 << 20;

  // `transport`: the listener's TLS socket; nullptr on a plain listener.
  DownstreamConnection(Worker& worker, int fd, const config::ListenerRuntime& listener,
                       std::unique_ptr<net::TransportSocket> transport);
  ~DownstreamConnection() override;

  // Connection: close on the next response; closes now when idle.
  void StartDrain();
  // Closes an idle connection whose listener is gone.
  void OnSnapshotChanged();

  // net::ConnectionCallbacks (client side)
  void OnReadable() override;
  void OnWriteDrained() override;
  void OnConnected() override;  // TLS handshake done
  void OnClosed(net::CloseReason reason, int error) override;
  // http::Http1Callbacks (request parser)
  void OnHead(const http::MessageHead& head) override;
  void OnBody(std::string_view chunk) override;
  void OnMessageComplete() override;
  void OnTrailers(const std::vector<http::HeaderField>& trailers) override;
  // upstream::UpstreamEvents
  void OnUpstreamConnected() override;
  void OnUpstreamHead(const http::MessageHead& head) override;
  void OnUpstreamBody(std::string_view bytes) override;
  void OnUpstreamComplete() override;
  void OnUpstreamFailed(bool connect_failed, bool timed_out, const std::string& why) override;
  void OnUpstreamWriteDrained() override;
  void OnUpstreamTrailers(const std::vector<http::HeaderField>& trailers) override;
  // http::FilterCallbacks (the current request's policies)
  const http::StreamInfo& info() const override;
  void SendLocalReply(int status, std::string_view message, const http::HeaderMap& headers) override;

 private:
  struct Request;

  void ProcessInput();
  void HandleParseError(http::ParseError error);
  void StartRequest(const http::MessageHead& head);
  bool ConnectUpstream();
  // The request's end-to-end fields as they go upstream: hop-by-hop and
  // framing ones dropped, Host from an absolute target, x-forwarded-for
  // appended, x-forwarded-proto and x-request-id set. emit(name, value).
  template <typename Emit>
  void ForEachForwardedHeader(const http::MessageHead& head, std::string_view absolute_host,
                              Emit emit);
  // Runs the route's policies on the request head; false when one answered.
  bool RunRequestFilters(const config::FilterChain& chain, const http::MessageHead& head,
                         std::string_view absolute_host, std::string_view target);
  // WebSocket: the upstream answered 101; forward it and carry bytes both
  // ways (the idle timer bounds a silent tunnel).
  void StartTunnel(const http::MessageHead& head);
  void PumpClientToUpstream();
  // The policies that saw the request, in reverse, on a response head.
  void RunResponseFilters(int status, http::HeaderMap& headers);
  uint64_t HashKeyFor(const upstream::ClusterInfo& cluster, const http::MessageHead& head,
                      std::string_view target);
  enum class RetryReason { kConnectFailure, kReset, kStatus };
  // Whether the route's retry policy (and the cluster's retry breaker) allow
  // another try for this failure.
  bool MayRetry(RetryReason reason, int status);
  void ScheduleRetry();
  void OnRetryTimer();
  void OnPerTryTimeout();
  void SendLocalResponse(int status, std::string_view error, std::string_view extra_headers = {},
                         std::string_view body_override = {},
                         std::string_view content_type = "application/json");
  void FinishRequest();
  // The request's timers stop and its cluster breaker counts are given back.
  void EndRequestAccounting();
  // After a response: close if asked to, else wait for the next request.
  void FinishConnectionAfterResponse();
  void ReleaseUpstream(bool reusable);
  void CloseNow();
  void ArmIdleTimer();
  void OnDownstreamTimer();
  void OnRouteTimeout();
  bool idle() const;

  Worker& worker_;
  std::unique_ptr<net::Connection> connection_;
  std::string listener_name_;
  std::string peer_ip_;
  absl::Duration request_headers_timeout_;
  absl::Duration idle_timeout_;
  http::Http1Parser parser_;
  event::Timer timer_;          // idle, then request-head timeout
  event::Timer route_timer_;    // the current request's route timeout (all tries)
  event::Timer retry_timer_;    // backoff before the next try
  event::Timer per_try_timer_;  // the current try's timeout
  event::Timer resume_timer_;   // continues pipelined input outside callbacks
  bool timer_is_head_ = false;  // timer_ counts the request-head timeout
  std::unique_ptr<Request> request_;
  std::unique_ptr<Request> spare_request_;  // the last one, kept for reuse
  std::string response_head_;               // scratch for response heads
  bool close_after_response_ = false;
  bool closed_ = false;
  bool closing_ = false;               // flushing the last response, then closed
  bool request_message_open_ = false;  // the request's body is still arriving
  bool in_process_input_ = false;
  bool process_again_ = false;
};

}  // namespace sluice::server

#endif  // SLUICE_DATAPLANE_SERVER_DOWNSTREAM_CONNECTION_H_
