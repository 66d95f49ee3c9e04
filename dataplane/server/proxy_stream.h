// ProxyStream: one request/response exchange, the same whatever protocol
// the client speaks. The downstream codec session (HTTP/1 today:
// DownstreamConnection) parses the request and hands the stream its head,
// body and end; the stream routes it, runs the route's policies, picks the
// cluster and endpoint, talks to the upstream (retries, breakers, timeouts,
// outlier reports) and hands the response back through a DownstreamSink,
// which encodes it for its protocol. Envoy's shape: codec -> connection
// manager (the session) -> stream with its filter chain -> router.
//
// The stream never touches the client's socket, and knows nothing of
// HTTP/1 framing on the client side: bodies come in and go out as bytes with
// a "how is it delimited" tag (ResponseHead::Body), and the sink decides
// chunking, Content-Length or DATA frames.
//
// Worker thread only. Owned by its session; reused for the next request on
// an HTTP/1 connection (Reset), so a keep-alive connection allocates nothing
// per request.
#ifndef SLUICE_DATAPLANE_SERVER_PROXY_STREAM_H_
#define SLUICE_DATAPLANE_SERVER_PROXY_STREAM_H_

#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "dataplane/config/snapshot.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/filter.h"
#include "dataplane/http/header_map.h"
#include "dataplane/http/http1_parser.h"
#include "dataplane/http/http_util.h"
#include "dataplane/net/transport_socket.h"
#include "dataplane/upstream/connection_pool.h"
#include "dataplane/upstream/http2_pool.h"

namespace sluice::server {

class Worker;

// A request head as the codec parsed it. Views are valid during Start().
struct RequestHead {
  std::string_view method;
  std::string_view target;     // origin-form: path and query
  std::string_view authority;  // Host (HTTP/1) or :authority (HTTP/2); may be empty
  std::string_view scheme;     // HTTP/2's :scheme; empty for HTTP/1
  // The authority came from an absolute-form target (RFC 9112 3.2.2): it is
  // sent upstream as Host in place of the client's Host field.
  bool authority_from_target = false;
  const std::vector<http::HeaderField>* headers = nullptr;  // as received
  enum class Body { kNone, kLength, kStream };  // kStream: length unknown
  Body body = Body::kNone;
  uint64_t content_length = 0;  // kLength
  bool expect_continue = false;
  bool upgrade = false;  // HTTP/1: Connection: upgrade with an Upgrade field
  // HTTP/2: an extended CONNECT with :protocol websocket (RFC 8441), made a
  // GET with `upgrade`: the stream's DATA are the tunnel's bytes, and the
  // upstream's 101 is answered 200.
  bool extended_connect = false;
  // Whether a Connection field may list field names to drop (MessageHead::
  // connection_names). True unless the maker of the head knows better.
  bool connection_names = true;
  bool http10 = false;
  bool http2 = false;
  // A detached exchange the gateway started (a cache's background refresh):
  // filters see StreamInfo::background.
  bool background = false;
};

// A request to send again in the background (FilterCallbacks::
// StartBackgroundRefresh): the head as the client sent it, owned.
struct BackgroundRequest {
  std::string listener;
  std::string peer_ip;
  bool secure = false;
  std::string method;
  std::string target;
  std::string authority;
  bool authority_from_target = false;
  bool http2 = false;
  http::HeaderMap fields;
};

// A response head for the sink to encode. Views are valid during the call.
struct ResponseHead {
  int status = 0;
  std::string_view reason;  // empty: the standard phrase
  // End-to-end fields, x-request-id included. No framing or hop-by-hop
  // fields: the sink adds its own.
  const std::vector<http::HeaderField>* headers = nullptr;
  enum class Body {
    kNone,    // no body follows (HEAD, 204, 304)
    kLength,  // exactly content_length bytes follow
    kStream,  // bytes of unknown total length follow
    kTunnel,  // 101: raw bytes both ways from now on (a WebSocket; HTTP/2 sends 200)
  };
  Body body = Body::kNone;
  uint64_t content_length = 0;
  // kNone: the length a HEAD response declares (the GET's), to be sent as
  // Content-Length; -1 for none.
  int64_t declared_length = -1;
  // The gateway wants the client connection closed after this response
  // (HTTP/1 sends Connection: close; HTTP/2 ignores it).
  bool close_connection = false;
  // kLength 0, or kNone with declared_length 0: no length was declared (an
  // HTTP/2 response ended with its head, gRPC's trailers-only, the
  // gateway's own included): HTTP/1 needs Content-Length: 0, an HTTP/2
  // client nothing (the response is passed on as it came).
  bool length_implied = false;
  // The first `syntax_checked` fields came from an HTTP/1 upstream's
  // response, whose parser checked their syntax: an HTTP/2 sink need not
  // check their bytes again (Http2ServerCodec::SubmitResponse).
  size_t syntax_checked = 0;
};

// The client side of a stream, implemented by each codec session.
class DownstreamSink {
 public:
  virtual ~DownstreamSink() = default;
  virtual void EncodeHeaders(const ResponseHead& head) = 0;
  virtual void EncodeData(std::string_view data) = 0;
  // The response is complete; `trailers` (possibly empty) go with its end
  // where the protocol can carry them.
  virtual void EncodeEnd(const std::vector<http::HeaderField>& trailers) = 0;
  // An interim "100 Continue".
  virtual void EncodeContinue() = 0;
  // An informational response from the upstream (103 Early Hints) before
  // the final head; an HTTP/1.0 client gets none (RFC 9110 15.2).
  virtual void EncodeInformational(int status, const std::vector<http::HeaderField>& fields) = 0;
  // The response was cut off after it began (or cannot be given): the
  // client must see the failure. The stream has released its upstream and
  // makes no further call (no OnStreamDone); the sink may destroy it.
  virtual void Abort() = 0;
  // Abort() when the client took none of the response for the idle
  // timeout: what waits for it is never sent (HTTP/1 resets the connection
  // at once, rather than hold it, and its output, until the idle timeout).
  virtual void AbortUnsent() { Abort(); }
  // What Abort() would keep from the client of what it was given: whether
  // the response head would be lost, and how many body bytes (for the
  // access log). HTTP/1 writes what it has before it closes: nothing.
  virtual void AbortLoss(bool* head_lost, size_t* bytes_lost) const {
    *head_lost = false;
    *bytes_lost = 0;
  }
  // Response bytes queued towards the client, for back-pressure.
  virtual size_t buffered_response_bytes() const = 0;
  // Stop (or resume) delivering request body bytes: back-pressure.
  virtual void SetRequestReadEnabled(bool enabled) = 0;
  // The exchange is over (after EncodeEnd or Abort). The stream makes no
  // further call; the sink may reuse or destroy it from here on.
  virtual void OnStreamDone() = 0;
  // The last config that had this connection's listener, kept by a
  // connection whose listener a newer config removed: its requests are
  // served by it while the connection drains. Null otherwise.
  // The bytes of this exchange that may wait in each direction (towards
  // the client, towards the upstream) before the other side stops being
  // read. A connection with one exchange at a time: 1 MiB; an HTTP/2
  // session divides a budget between its open streams.
  virtual size_t buffer_limit() const { return size_t{1} << 20; }
  virtual const std::shared_ptr<const config::ConfigSnapshot>& listener_snapshot() const {
    static const std::shared_ptr<const config::ConfigSnapshot> kNone;
    return kNone;
  }
};

// A W3C traceparent (Trace Context 3.2): its trace id, parent id and sampled
// flag, or false when `value` is not a valid one.
bool ParseTraceparent(std::string_view value, std::string_view* trace_id,
                      std::string_view* parent_id, bool* sampled);

class ProxyStream : public upstream::UpstreamEvents, public http::FilterCallbacks {
 public:
  static constexpr size_t kHighWatermark = 1 << 20;
  // Sends of one request the upstream did not process (see resends_).
  static constexpr int kMaxResends = 3;
  // Request body held while a policy pauses the chain; beyond it the
  // client is not read until the chain resumes.
  static constexpr size_t kPausedBodyBytes = 64 * 1024;

  // `transport`, `listener` and `peer_ip` belong to the session and outlive
  // the stream.
  ProxyStream(Worker& worker, DownstreamSink& sink, const std::string& listener,
              const std::string& peer_ip, const net::TransportSocket& transport);
  ~ProxyStream() override;
  ProxyStream(const ProxyStream&) = delete;
  ProxyStream& operator=(const ProxyStream&) = delete;

  // Back to the initial state, keeping buffers, for the next request.
  void Reset();
  // A reset stream serves another session of its worker from now on
  // (Worker::TakeStream): the arguments as the constructor's.
  void Rebind(DownstreamSink& sink, const std::string& listener, const std::string& peer_ip,
              const net::TransportSocket& transport) {
    sink_ = &sink;
    listener_ = &listener;
    peer_ip_ = &peer_ip;
    transport_ = &transport;
  }

  // The request head arrived. May answer at once (404, a policy, a direct
  // response...) and call OnStreamDone before returning.
  void Start(const RequestHead& head);
  // Request body bytes (framing removed), or raw bytes once tunneling.
  void OnRequestData(std::string_view data);
  // An HTTP/1 chunk of `size` bytes is announced: one that takes the body
  // past a limit is refused now, not once its bytes came (as nginx).
  void OnRequestChunkDeclared(uint64_t size);
  // The request broke HTTP/1 framing after its head (a chunk, a trailer):
  // answered `status` with `message` (and the connection's end), logged
  // as this exchange.
  void RefuseBrokenRequest(int status, const std::string& message);
  // The request is complete; chunked trailer fields come along.
  void OnRequestEnd(const std::vector<http::HeaderField>& trailers);
  // Ends an open WebSocket as its upstream's close would (what was queued
  // for the client still goes out), logged with `flag` (max_connection_age,
  // listener_removed...; empty: the upstream's close, or a flag already
  // set). Nothing when no tunnel is open.
  void EndTunnel(std::string_view flag);
  // An HTTP/2 WebSocket's client ended its stream (END_STREAM): once what
  // it sent is written, the upstream connection is shut down for writing,
  // and the tunnel ends when the upstream closes its side.
  void OnTunnelClientEnd();
  // The sink's queued response bytes drained below the watermark.
  void OnDownstreamDrained();
  // The client is gone: release the upstream and every count; no sink call
  // follows. Safe to call at any time, more than once.
  void OnDownstreamGone();
  // The proxy's drain deadline came with this exchange open: a gRPC call
  // (not gRPC-Web) is answered UNAVAILABLE (trailers, or a whole reply when
  // none began), logged 503 `drain_timeout`; anything else is left to the
  // close. `why` and `flag` name another drain's deadline (a listener's).
  void EndAtDrainDeadline(
      std::string_view why = "the gateway is shutting down (its drain timeout passed)",
      std::string_view flag = "drain_timeout");
  // Why the exchange ended, for the access log, unless something already
  // said (a client that broke the protocol: "bad_request").
  void SetResponseFlagIfUnset(std::string_view flag) {
    if (active_ && response_flag_.empty()) response_flag_ = flag;
  }

  bool active() const { return active_; }
  bool tunnel() const { return tunnel_; }
  bool response_started() const { return response_started_; }
  // The client reset this exchange before its response began: a rapid
  // reset (CVE-2023-44487) unless the exchange lived kPrematureResetLifetime
  // (Envoy's premature_reset_min_stream_lifetime) or, a gRPC call, half its
  // grpc-timeout (the header may come late, behind other calls' frames, and
  // the reset early), at least kMinDeadlineLifetime: a client giving up on a
  // slow call, which an upstream slowdown makes many of at once.
  bool ResetIsPremature(absl::Time now) const;
  static constexpr absl::Duration kPrematureResetLifetime = absl::Seconds(1);
  static constexpr absl::Duration kMinDeadlineLifetime = absl::Milliseconds(100);
  const std::string& request_id() const { return request_id_; }

  // upstream::UpstreamEvents
  void OnUpstreamConnected() override;
  void OnUpstreamSettled() override;
  void OnUpstreamHead(const http::MessageHead& head) override;
  void OnUpstreamBody(std::string_view bytes) override;
  void OnUpstreamTrailers(const std::vector<http::HeaderField>& trailers) override;
  void OnUpstreamInformational(int status,
                               const std::vector<http::HeaderField>& fields) override;
  void OnUpstreamComplete() override;
  // Reports this try's outcome (`status`, 0 for a gateway failure) to
  // outlier detection and the endpoint's counts, once per try.
  void ReportTry(int status);
  // OnUpstreamFailed's work; `lost`: an HTTP/2 connection lost under the
  // request before its response began (OnUpstreamLost).
  void FailUpstream(bool connect_failed, bool timed_out, const std::string& why, bool lost);
  // Reports the try's held-back status, if any, as its outcome.
  void CreditPending() {
    if (pending_outcome_ != 0) ReportTry(pending_outcome_);
  }
  void OnUpstreamFailed(bool connect_failed, bool timed_out, const std::string& why) override;
  void OnUpstreamWriteDrained() override;
  void OnUpstreamRefused(const std::string& why) override;
  void OnUpstreamReset(uint32_t error_code, const std::string& why) override;
  void OnUpstreamLost(const std::string& why) override;
  void OnUpstreamInvalidResponse(const std::string& why) override;
  // http::FilterCallbacks
  const http::StreamInfo& info() const override { return info_; }
  void SendLocalReply(int status, std::string_view message, const http::HeaderMap& headers) override;
  void SendResponse(int status, const http::HeaderMap& headers, std::string_view body) override;
  void ContinueRequest() override;
  std::shared_ptr<http::ResumeHandle> MakeResumeHandle() override;
  const auth::ConsumerIndex& consumers() const override;
  void SetConsumer(const auth::Consumer* consumer, bool anonymous) override;
  void SetConsumerClaims(std::string claims) override { info_.consumer_claims = std::move(claims); }
  void SetPath(std::string path_and_query) override;
  void StartBackgroundRefresh() override;
  void SetAnsweringPolicy(std::string_view policy) override { answering_policy_ = policy; }
  void SetCacheStatus(std::string_view status) override { cache_status_ = status; }
  void HideQueryParameterFromLog(std::string_view name) override {
    hidden_from_log_.emplace_back(name);
  }
  void SetPauseLimit(absl::Duration limit) override { pause_limit_ = limit; }
  // A policy answers: response_flag_ names it (SetAnsweringPolicy's name,
  // else the current filter's), and the name given is forgotten.
  void NotePolicyAnswer();

 private:
  // The route's policies that observe the upstream (observes_upstream()):
  // their hooks, in reverse chain order. An answering hook leaves
  // response_started_ set (or the stream inactive): true then.
  bool RunUpstreamHeadersFilters(int status);
  bool RunUpstreamErrorFilters(int status);
  void RunResponseDataFilters(std::string_view data);
  void RunResponseEndFilters();
  // The request's end-to-end fields as they go upstream: hop-by-hop and
  // framing ones dropped, Host from an absolute target, x-forwarded-for
  // appended, x-forwarded-proto and x-request-id set. emit(name, value).
  template <typename Emit>
  void ForEachForwardedHeader(const RequestHead& head, Emit emit);
  // Runs the route's policies on the request head.
  enum class ChainResult { kDone, kAnswered, kPaused };
  ChainResult RunRequestFilters(const config::FilterChain& chain, const RequestHead& head);
  ChainResult RunFiltersFrom(size_t first);
  // A policy paused the chain: the head's views are copied so the request
  // can go on after Start() returned.
  void SaveHead(const RequestHead& head);
  // The request-head hooks are done: hold the body for OnRequestBody hooks
  // when the chain has any, else Route().
  void FiltersDone(const RequestHead& head);
  // The held body is complete: runs the OnRequestBody hooks, then routes
  // the request with it.
  void FinishBodyBuffering();
  // A held response: over the limit, it goes on unheld; complete, through
  // the OnResponseBody hooks to the client.
  void ReleaseHeldResponse();
  void CompleteHeldResponse();
  // The held response is dropped (the upstream failed or went idle): the
  // client gets a gateway answer instead.
  void DropHeldResponse();
  // After the policies: the route's action (upstream, redirect, direct
  // response) for `head`.
  void Route(const RequestHead& head);
  void RunResponseFilters(int status, http::HeaderMap& headers);
  // A policy would change the body of this (bodiless HEAD or 304) response's
  // GET: its length is not the upstream's.
  bool BodyWouldBeEdited(int status);
  bool RepeatsAHeadField(std::string_view name) const;
  // Whether a policy on the route removes response fields of this name
  // (then an upstream's trailer of that name is dropped too).
  bool RemovedFromResponses(std::string_view name) const;
  // An OPTIONS or TRACE whose Max-Forwards is 0: this hop answers it.
  static bool MaxForwardsIsZero(const RequestHead& head);
  // Runs the request-body hooks; false when a policy answered (the stream
  // has then answered, or failed, already).
  bool RunRequestDataFilters(std::string_view data, bool end_stream);
  bool ConnectUpstream();
  uint64_t HashKeyFor(const upstream::ClusterInfo& cluster, const RequestHead& head);
  // kGrpcStatus: `status` is the grpc-status of a trailers-only answer.
  enum class RetryReason { kConnectFailure, kReset, kStatus, kGrpcStatus };
  bool MayRetry(RetryReason reason, int status);
  // `at_once`: no backoff (after a connect failure).
  void ScheduleRetry(bool at_once = false);
  void OnRetryTimer();
  void OnPerTryTimeout();
  void OnRouteTimeout();
  // Bytes moved after the response began (or into a held request body):
  // the idle timeout starts over. Reads the dispatcher's clock.
  void NoteActivity();
  void StartIdleTimer(absl::Duration limit);
  void OnIdleTimer();
  void StartTunnel(const http::MessageHead& head);
  // The client's end of a tunnel, carried upstream: a half-close (HTTP/1.1)
  // or END_STREAM (HTTP/2) once what the client sent is out.
  void EndTunnelUpstreamWrites();
  // Request bytes (body or tunnel) to the HTTP/2 upstream stream, with the
  // watermark towards the client.
  void SendUpstream2Data(std::string_view chunk);
  // For an HTTP/2 WebSocket's HTTP/1.1 handshake: the Sec-WebSocket-Key
  // (and version) an RFC 8441 request does not carry.
  void AppendHttp1WebSocketFields(const std::vector<http::HeaderField>& fields, std::string* out);
  // Whether a 101's Sec-WebSocket-Accept answers websocket_key_.
  bool AcceptsWebSocketKey(const std::vector<http::HeaderField>& fields) const;
  // The upstream head's end-to-end fields (hop-by-hop and Content-Length
  // dropped, x-request-id added when absent) into response_fields_.
  // Fills response_fields_; returns how many came from `head` (the
  // x-request-id the gateway may add comes last).
  size_t CollectResponseFields(const http::MessageHead& head);
  // A response made by the gateway: JSON {"error", "request_id"} when
  // `error` is set, else `body`. `extra` fields are added to it.
  // `content_type` empty: the response has no content-type field.
  void SendLocalResponse(int status, std::string_view error,
                         std::initializer_list<http::HeaderField> extra = {},
                         std::string_view body = {},
                         std::string_view content_type = "application/json",
                         bool close_connection = false);
  void SendLocalResponse(int status, std::string_view error, const http::HeaderField* extra,
                         size_t extra_count, std::string_view body,
                         std::string_view content_type, bool close_connection);
  // Adds date: now to response_fields_ unless `extra` has a Date (a
  // cached response's own).
  void AddDateUnlessGiven(const http::HeaderField* extra, size_t extra_count);
  // Encodes a response head through the route's policies (if any).
  void EncodeResponseHead(ResponseHead& head, std::vector<http::HeaderField>& fields);
  // The request head for an HTTP/2 upstream, from the forwarded fields.
  template <typename ForEach>
  void BuildHttp2Head(const RequestHead& head, std::string_view path, ForEach for_each);
  // 503: the cluster's max_pending_requests breaker is open.
  void RefusePending();
  // The route's max_request_body_bytes, else the listener's; 0: none.
  uint64_t BodyLimit() const;
  // 413: the body being held passed body_buffer_limit_ (hold_overflow_
  // names the limit when it is not the holding policy's).
  void RefuseHeldBody();
  // 413 for a streamed body past body_limit_ (the upstream request is cut).
  void RefuseStreamedBody();
  // Appends to the held body, its buffer's growth charged first; false
  // when refused (answered: 413 for a body larger than the whole bound).
  bool HoldBodyChunk(std::string_view chunk);
  // Charges `bytes` more of held body to HeldBodies; past its bound (or
  // under overload) answers 503 and returns false.
  bool TakeHeldBytes(size_t bytes);
  // Gives back what the request held (at its end, or when it is reset).
  void ReleaseHeldBytes();
  // Reads the client again if held_for_alpn_.
  void ResumeHeldForAlpn();
  // Once a connection is up and has the body, a body kept past
  // max_replay_bytes (replay_past_limit_) is kept no longer: the request is
  // not sent again, as one whose body passed the limit later is not.
  void DropReplayPastLimit();
  // Sends the request (head, and what the body has so far) on the try's
  // upstream; for a retry the body comes from the replay buffer.
  void SendRequestHttp1();
  void SendRequestHttp2();
  // The end of a request body that went upstream chunked (HTTP/1) or as
  // END_STREAM / trailers (HTTP/2).
  void SendRequestEnd();
  void SetUpstreamReadEnabled(bool enabled);
  void StartRouteTimer();
  // The route timer while a policy pauses the request: the route timeout,
  // or a policy's own bound (SetPauseLimit) when longer.
  void StartPauseTimer();
  // Once the head went upstream: the route timer when the request is
  // complete (or gRPC), else the idle timer over the body still to come.
  void StartRequestTimers();
  // What bounds a stalling request body: the route's idle_timeout, else
  // its timeout, else (a body held in memory) the default stream idle
  // timeout; zero: nothing.
  absl::Duration UploadIdleLimit() const;
  // The client's grpc-timeout, not the route's timeout, sets the deadline.
  bool GrpcTimeoutBinds() const;
  // The access log writes the path without its query: a policy that takes a
  // credential from the query (key-auth) never ran for this request.
  bool QueryMayHoldCredential() const;
  bool HasUpstream() const { return upstream_ != nullptr || upstream2_ != nullptr; }
  // A gRPC response that began (streamed) and cannot complete ends with an
  // error status in trailers, as gRPC clients understand it (a reset would
  // read as INTERNAL). `flag` is the access log's response_flag unless one
  // is set. False when that does not apply: gRPC-Web too (its status is a
  // frame in the body, which the gateway does not write), which is cut.
  bool EndGrpcResponse(int http_status, std::string_view error, std::string_view flag);
  // The exchange ended (answered, cut or abandoned): histograms, consumer
  // counters, the access log. Once per request.
  void RecordExchange();
  // Reads the client's traceparent (if valid) and sets the one sent upstream.
  void SetUpTraceContext(const http::HeaderField* traceparent);
  void Finish();
  // The response's status class in the listener, route and downstream
  // counters, once.
  void CountResponse();
  // Cut off: release, account, abort the client side; `unsent`: the
  // client stopped taking the response, and what waits for it is dropped.
  void Fail(bool unsent = false);
  void EndAccounting();
  void ReleaseUpstream(bool reusable);

  Worker& worker_;
  // The session's (Rebind() moves the stream to another).
  DownstreamSink* sink_;
  const std::string* listener_;
  const std::string* peer_ip_;
  const net::TransportSocket* transport_;
  event::DeadlineTimer route_timer_;  // the route timeout (all tries)
  event::Timer retry_timer_;    // backoff before the next try
  event::Timer per_try_timer_;  // the current try's timeout
  // Once the response began: the route's idle_timeout (a WebSocket's
  // websocket_idle_timeout), checked lazily against last_activity_.
  event::DeadlineTimer idle_timer_;
  absl::Duration idle_limit_ = absl::ZeroDuration();
  absl::Time last_activity_;

  // Per request (Reset clears them, keeping capacity).
  bool active_ = false;
  std::shared_ptr<const config::ConfigSnapshot> snapshot_;
  const router::RouteEntry* route_ = nullptr;
  const config::RouteStats* route_stats_ = nullptr;
  const upstream::ClusterInfo* cluster_ = nullptr;
  std::string endpoint_key_;
  // The current try's upstream: an HTTP/1.1 connection, or a stream on an
  // HTTP/2 one (never both).
  std::unique_ptr<upstream::UpstreamConnection> upstream_;
  std::unique_ptr<upstream::Http2UpstreamStream> upstream2_;
  std::string method_;
  std::string upstream_head_;  // HTTP/1.1 request head, for HTTP1 and AUTO clusters
  std::string normalized_target_;  // when normalisation changed the target
  // The request's fields less those with '_' in their names
  // (http.headers_with_underscores DROP_HEADER), when it had some.
  std::vector<http::HeaderField> underscore_free_headers_;
  bool drop_underscored_trailers_ = false;  // the listener does not ALLOW them
  // HTTP/2 request head for HTTP2 and AUTO clusters: name\0value\0 pairs
  // (pseudo-header values first: method, scheme, authority, path), and
  // views into it.
  std::string h2_storage_;
  std::vector<http::HeaderField> h2_fields_;
  http::Http2Request h2_request_;
  bool te_trailers_ = false;  // the client accepts trailers (te: trailers)
  // The listener trusts proxies in front (http.trusted_proxy_hops > 0): the
  // client's X-Forwarded-Host and X-Forwarded-Port go upstream.
  bool trust_forwarded_ = false;
  // The scheme the client used: the connection's, or behind trusted proxies
  // the one their X-Forwarded-Proto says (redirects, %SCHEME%, the
  // upstream's X-Forwarded-Proto).
  bool https_ = false;
  // Tries sent again because the upstream did not process them (HTTP/2
  // REFUSED_STREAM or above a GOAWAY's last stream; a pooled HTTP/1
  // connection found closed): at most kMaxResends, not counted as retries.
  int resends_ = 0;
  bool fresh_connection_ = false;  // the next HTTP/1 connection is a new one
  // Sent again once after its HTTP/2 connection was lost (OnUpstreamLost);
  // a second loss is a failure, as a resent HTTP/1 request's, which goes
  // on a new connection.
  bool resent_after_loss_ = false;
  // A request body byte went upstream (or was dropped between tries) and is
  // not kept for a retry: the request cannot be sent again whole.
  bool body_gone_ = false;
  // The body reached max_replay_bytes before a connection was up (one
  // connecting, or a retry waiting; AUTO: before the connection's ALPN said
  // which protocol the endpoint speaks); the client is not read until one
  // is, so that a request sent again (elsewhere, or over HTTP/1.1) has it
  // whole.
  bool held_for_alpn_ = false;
  // The body kept in replay_ passed max_replay_bytes while no connection
  // was up: kept whole only for a failed connect (DropReplayPastLimit).
  bool replay_past_limit_ = false;
  // The 413 for a held body over body_buffer_limit_ when that limit is the
  // listener's or route's, or request-size-limit's; empty: a holding
  // policy's own.
  std::string hold_overflow_;
  uint64_t body_limit_ = 0;   // request body limit (route's or listener's); 0: none
  uint64_t request_body_bytes_ = 0;
  std::string request_id_;
  bool has_body_ = false;
  bool request_chunked_ = false;  // the body goes upstream chunked
  bool request_complete_ = false;
  bool head_request_ = false;
  bool upgrade_ = false;  // a WebSocket upgrade the route allows
  bool extended_connect_ = false;  // RequestHead::extended_connect
  // The Sec-WebSocket-Key an extended CONNECT's handshake went upstream
  // with; or an HTTP/1.1 client's, whose handshake went to an HTTP/2
  // upstream as an extended CONNECT, then the Accept answering it (StartTunnel).
  std::string websocket_key_;
  // An extended CONNECT's client ended its stream before the 101 came.
  bool tunnel_client_ended_ = false;
  // SetAnsweringPolicy's name for the policy answer being sent; else the
  // answering filter's own.
  std::string_view answering_policy_;
  std::string_view cache_status_;  // SetCacheStatus's, for the access log
  // HideQueryParameterFromLog's names; with them the logged path is a copy.
  std::vector<std::string> hidden_from_log_;
  std::string scrubbed_path_;
  // SetPauseLimit's, for the pause under way; zero: none.
  absl::Duration pause_limit_ = absl::ZeroDuration();
  bool tunnel_ = false;   // the upstream answered 101: raw bytes both ways
  int informational_sent_ = 0;  // 1xx heads passed to the client this exchange
  bool response_started_ = false;
  bool upstream_paused_reading_ = false;
  bool upstream_no_body_ = false;  // the response has no body (HEAD, 204, 304)
  bool response_streamed_ = false;  // its length is not declared (chunked, DATA frames)
  bool grpc_ = false;  // content-type application/grpc: gateway errors are gRPC statuses
  // Their content-type: application/grpc, or grpc-web(-text)+proto for a
  // gRPC-Web client.
  std::string_view grpc_reply_type_ = "application/grpc";
  // A gRPC-Web reply type with the request's message format (`+json`).
  std::string grpc_reply_storage_;
  absl::Duration grpc_timeout_ = absl::InfiniteDuration();  // the client's grpc-timeout
  // The gRPC status for the upstream's RST_STREAM code (gRPC's HTTP/2 error
  // mapping: CANCEL is CANCELLED...), used instead of the HTTP status's
  // while the reset is being answered; -1: none.
  int grpc_reset_status_ = -1;
  // A try's non-5xx status, reported to outlier detection and the
  // endpoint's counts once its response ends whole (a response cut after
  // its head is the endpoint failing: a head's success reported at once
  // reset the failure run, so an endpoint that cut every response was
  // never ejected); 0: nothing to report.
  int pending_outcome_ = 0;
  // This try's outcome was reported (once: a 5xx head then cut is one
  // failure, not two).
  bool outcome_reported_ = false;
  // The grpc-status the client was given (the upstream's trailers or
  // trailers-only head, or the gateway's own); -1: none (not gRPC).
  int grpc_status_ = -1;
  int status_ = 0;
  int attempts_ = 0;
  int64_t* endpoint_active_ = nullptr;  // this worker's in-flight count for the endpoint
  int endpoint_index_ = -1;             // of the current (or last) try
  std::vector<int> tried_;  // endpoints of this request's failed tries
  int same_endpoint_ = -1;  // the next try's endpoint, when not the picker's
  uint64_t hash_ = 0;                   // RING_HASH / MAGLEV key
  bool counted_request_ = false;        // in the cluster's active_requests
  bool pending_ = false;                // in the cluster's pending_requests
  bool counted_retry_ = false;          // in the cluster's active_retries
  bool counted_tunnel_ = false;         // in sluice_websockets_active
  bool invalid_response_ = false;       // this failure: the upstream's response broke HTTP
  int retries_ = 0;
  bool replayable_ = false;
  // The route may retry this request after a failure that may have reached
  // the upstream (an idempotent method, or retry_non_idempotent).
  bool retries_any_method_ = false;
  std::string replay_;             // body bytes (no framing), to send again
  http::HeaderMap request_trailers_;  // forwardable request trailers
  // The head's field names as the client sent them, for a streamed body on a
  // route with policies (RepeatsAHeadField).
  std::vector<std::string> head_field_names_;
  std::vector<http::HeaderField> response_trailers_;  // views into trailer_storage_
  std::string trailer_storage_;
  // What the upstream response head's Connection named (RFC 9110 7.6.1:
  // its trailer fields of those names go too); empty when it named none.
  http::ConnectionTokens response_hop_names_;
  // Policies.
  std::vector<std::unique_ptr<http::Filter>> filters_;
  size_t filters_entered_ = 0;
  http::HeaderMap filtered_headers_;
  http::HeaderMap reply_headers_;  // a policy's local reply fields
  std::vector<http::HeaderField> reply_views_;  // SendResponse's fields (views)
  std::string path_;
  bool path_set_ = false;  // a policy set path_ (SetPath)
  std::string_view route_table_;  // route_'s table's name (snapshot_ holds it)
  http::StreamInfo info_;
  uint64_t max_body_bytes_ = 0;  // the listener's http.max_request_body_bytes
  // Observability: what the metrics and the access log record when the
  // exchange ends (RecordExchange).
  absl::Time start_time_;
  absl::Time upstream_sent_ = absl::InfinitePast();  // the last try went upstream
  absl::Time first_byte_ = absl::InfinitePast();     // its response head came
  absl::Time upstream_end_ = absl::InfinitePast();   // its response ended
  uint64_t bytes_in_ = 0;   // request body bytes from the client
  uint64_t bytes_out_ = 0;  // response body bytes to the client
  bool replaying_ = false;  // OnRequestData with bytes counted already
  bool replaying_held_ = false;  // ... and they are a body held whole (kept for retries)
  bool recorded_ = false;
  bool counted_response_ = false;  // Finish() counted it in the route's by_class
  // Why the gateway answered as it did ("no_route", "policy:key-auth",
  // ...); empty when the upstream's response went through.
  std::string response_flag_;
  std::string upstream_failure_;  // why the last upstream try failed, for the access log
  const config::FilterChain* chain_ = nullptr;  // the route's policies (snapshot_ holds it)
  // The listener's routes have a policy that takes a credential from the
  // query (ListenerRuntime::query_credentials); set with access_log_.
  bool query_credentials_ = false;
  size_t current_filter_ = 0;                    // the filter whose hook runs
  const accesslog::AccessLog* access_log_ = nullptr;  // this request is logged there
  stats::Counter* const* listener_stats_ = nullptr;   // the listener's by status class
  std::string_view protocol_;
  std::string log_authority_;
  std::string log_path_;
  std::string log_user_agent_;
  // W3C trace context: the traceparent sent upstream -- the client's (its
  // flags cut to `sampled`), or one made here.
  // The client's address: the peer's (a view of the session's string), or
  // with trusted proxy hops the one X-Forwarded-For names (copied into
  // client_ip_storage_).
  std::string_view client_ip_;
  std::string client_ip_storage_;
  // "00-<trace id>-<parent id>-<flags>": the trace id at [3, 35).
  char traceparent_[55];
  bool trace_continued_ = false;  // traceparent_ carries the client's trace
  // Some policy of the chain observes_upstream().
  bool observes_upstream_ = false;
  // Some policy of the chain edits_every_answer().
  bool edits_every_answer_ = false;
  bool fields_first_ = false;  // a filter's adds_response_fields_first()
  bool in_upstream_error_ = false;  // the OnUpstreamError hooks run
  // The request head the hooks see (valid while a request-head hook runs).
  const RequestHead* hook_head_ = nullptr;
  // Sent when this exchange ends (StartBackgroundRefresh).
  std::unique_ptr<BackgroundRequest> background_request_;
  // A policy paused the chain (kStopIteration) at filters_[filters_entered_ - 1].
  bool paused_ = false;
  bool in_hook_ = false;            // a request-head hook is running
  bool continued_in_hook_ = false;  // it called ContinueRequest before returning
  std::shared_ptr<const char> resume_token_;  // alive while handles may resume
  // A response held whole for OnResponseBody hooks (response_hold_limit_:
  // the chain's smallest response_body_limit(); 0: none).
  uint64_t response_hold_limit_ = 0;
  bool holding_response_ = false;
  uint64_t body_buffer_limit_ = 0;  // the chain's smallest request_body_limit(); 0: none
  int64_t held_bytes_ = 0;          // charged to HeldBodies (until the request ends)
  bool body_in_replay_ = false;     // OnRequestData's chunk is replay_ itself: no copy
  std::vector<bool> body_wanted_;    // by filter: it wanted this request's body held
  std::vector<bool> response_wanted_;  // by filter: it wanted this response held
  bool buffering_body_ = false;     // holding the whole body for OnRequestBody hooks
  bool paused_end_ = false;  // the request's end came during the pause (or hold)
  // What a pause or a hold keeps, made when one first happens and freed at
  // the end of the request: the common request never pays for it, and an
  // idle keep-alive connection holds none of it.
  struct Deferred {
    // The request head, copied (the codec's views die with Start()).
    RequestHead saved_head;
    std::string saved_authority;
    http::HeaderMap saved_fields;
    std::vector<http::HeaderField> saved_views;
    std::string paused_body;  // request body that came during the pause (or is held)
    // An HTTP/2 WebSocket's bytes that came before its upstream's 101.
    std::string tunnel_early;
    http::HeaderMap paused_trailers;
    // A response held whole for OnResponseBody.
    ResponseHead held_head;
    std::string held_reason;
    http::HeaderMap held_fields;
    std::string held_body;
  };
  Deferred& deferred() {
    if (deferred_ == nullptr) deferred_ = std::make_unique<Deferred>();
    return *deferred_;
  }
  std::unique_ptr<Deferred> deferred_;
  // Scratch for response heads.
  std::vector<http::HeaderField> response_fields_;
  std::string scratch_;
  std::string grpc_status_text_;
};

}  // namespace sluice::server

#endif  // SLUICE_DATAPLANE_SERVER_PROXY_STREAM_H_
