// HTTP/2 to upstreams: connections that carry many requests at once, and the
// per-worker pool of them, keyed by the endpoint's pool key (which for an
// HTTP/2 cluster names the cluster, and for TLS its TLS context).
//
// A request gets an Http2UpstreamStream from Http2Pool::Acquire(): a stream
// on a connection of that key that has room (fewer open streams than both
// the cluster's max_concurrent_streams and the upstream's own
// SETTINGS_MAX_CONCURRENT_STREAMS, no GOAWAY), else on a new connection.
// Events reach the request through the same UpstreamEvents as HTTP/1:
// OnUpstreamHead (a MessageHead built from the HTTP/2 head: a Content-Length
// gives kContentLength framing, END_STREAM on the head kNone, otherwise the
// body is a stream), OnUpstreamBody, OnUpstreamTrailers, OnUpstreamComplete,
// OnUpstreamFailed, and OnUpstreamRefused when the upstream provably did not
// process the request (REFUSED_STREAM, above a GOAWAY's last stream id, or
// the connection failed before the request left): the request may go again;
// OnUpstreamLost when the upstream closed or reset the connection (after a
// GOAWAY too, for the streams it may have processed) before the stream's
// response began.
//
// Flow control: response bytes are handed on at once; while the request has
// reading disabled (its client is slow) the stream's receive window is not
// replenished, so that upstream stream stalls and no other.
//
// A connection stays open with no stream (the next request reuses it) until
// the upstream closes it, sends GOAWAY, the config no longer names its key,
// or it has sat unused for kIdleTimeout; a connection with no stream while
// another of its key also has none is closed at once.
//
// Liveness: an idle connection is sent a PING every kPingInterval, a busy
// one that received nothing for kBusyPingAfter is sent one too (both: the
// cluster's keepalive_interval when set), and a connection whose PING has
// no ACK within kPingTimeout is closed, idle or not (a stream opened
// meanwhile does not forget the PING), so a dead peer is noticed before a
// request needs it, and a long stream to it ends. A stream given up with no response
// (its timeout, or its client gone kSuspectAfter or more after its HEADERS
// left), while nothing at all came on its connection since, makes the
// connection suspect: it takes no new stream, and is sent a PING, until the
// ACK clears it (or its absence closes it). Within kSuspectCooldown of an
// ACK no PING is sent for it: the connection drains instead (GOAWAY; new
// streams go on a new connection; it closes once its streams end), unless
// the cluster is at its max_connections: then no new connection could be
// made while a long stream kept the drained one open, and every request
// would get 503, so it goes on serving. A busy
// connection to a peer that hung is thus left after its first timed-out
// request, not sent every new one, and a connection that answers is pinged
// at most once per kSuspectCooldown for it (gRPC servers count pings
// without cause against a client).
//
// A write that fails because the upstream closed first reads what it sent
// before it went (net::Connection::ReadBeforeWriteFailure), so its GOAWAY
// still says which streams it did not process: those go again.
//
// For a cluster with protocol AUTO, the TLS handshake offers "h2" and
// "http/1.1"; when an endpoint picks HTTP/1.1 the pool remembers it for the
// pool key (SpeaksHttp1), closes the connection and refuses its streams, and
// requests to that endpoint then take the HTTP/1.1 pool.
//
// Worker thread only.
#ifndef SLUICE_DATAPLANE_UPSTREAM_HTTP2_POOL_H_
#define SLUICE_DATAPLANE_UPSTREAM_HTTP2_POOL_H_

#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/status/statusor.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/http2_client_codec.h"
#include "dataplane/net/connection.h"
#include "dataplane/upstream/cluster.h"
#include "dataplane/upstream/connection_pool.h"

namespace sluice::upstream {

class Http2Pool;
class Http2UpstreamConnection;

// One request on an HTTP/2 upstream connection, owned by the request.
// Destroying it before the response completed resets the stream (CANCEL).
class Http2UpstreamStream {
 public:
  ~Http2UpstreamStream();
  Http2UpstreamStream(const Http2UpstreamStream&) = delete;
  Http2UpstreamStream& operator=(const Http2UpstreamStream&) = delete;

  // The request head; `end_stream`: no body follows. Once only.
  void SendHeaders(const http::Http2Request& request, bool end_stream);
  // Request body bytes (copied); `end_stream` ends the request.
  void SendData(std::string_view data, bool end_stream);
  // Trailers end the request.
  void SendTrailers(const http::HeaderField* fields, size_t count);
  // Request bytes queued and not yet framed: back-pressure towards the client.
  size_t queued_bytes() const;
  // false: stop replenishing the response window (the client is slow).
  void SetReadEnabled(bool enabled);

  // The connection is still connecting (TCP or TLS).
  bool connecting() const;
  // The request went to the codec on a connection whose SETTINGS came:
  // no connect failure can follow.
  bool settled() const;
  // Its connection is up and the upstream's SETTINGS came (the request's
  // HEADERS may not have gone yet).
  bool connection_settled() const;
  // Those SETTINGS allow an extended CONNECT (RFC 8441: a WebSocket).
  bool peer_allows_extended_connect() const;
  // SendHeaders went to the codec.
  bool headers_sent() const { return id_ >= 0; }
  // The connection carried other requests before this one.
  bool reused() const { return reused_; }
  // A response byte arrived.
  bool response_started() const { return response_started_; }
  // The gateway gives the stream up for its timeout (the route's or the
  // try's), not its client: said before destroying it, so that a try
  // timeout shorter than kSuspectAfter still counts (Suspect).
  void TimedOut() { timed_out_ = true; }

 private:
  friend class Http2UpstreamConnection;
  friend class Http2Pool;
  Http2UpstreamStream(Http2UpstreamConnection* connection, UpstreamEvents* events, bool reused)
      : connection_(connection), events_(events), reused_(reused) {}

  Http2UpstreamConnection* connection_;  // nullptr once the stream ended
  UpstreamEvents* events_;
  int32_t id_ = -1;  // once SendHeaders went to the codec
  bool reused_;
  bool response_started_ = false;
  bool read_enabled_ = true;
  bool timed_out_ = false;
  uint64_t reads_at_send_ = 0;  // the connection's reads_ when HEADERS went
  absl::Time sent_at_;          // when HEADERS went (dispatcher time)
  size_t unconsumed_ = 0;  // response bytes handed on while reading was disabled
  int interim_responses_ = 0;  // 1xx heads (UpstreamConnection::kMaxInterimResponses)
};

class Http2UpstreamConnection : public net::ConnectionCallbacks,
                                public http::Http2ClientCallbacks,
                                public event::Flushable,
                                public event::DeferredDeletable {
 public:
  Http2UpstreamConnection(event::Dispatcher& dispatcher, Http2Pool& pool, int fd,
                          std::unique_ptr<net::TransportSocket> transport, std::string pool_key,
                          const ClusterInfo& cluster, std::shared_ptr<EndpointState> endpoint_state);
  ~Http2UpstreamConnection() override;

  // Room for one more stream.
  bool HasCapacity() const;
  size_t streams() const { return streams_.size(); }
  const std::string& pool_key() const { return pool_key_; }
  bool connecting() const { return !connected_; }
  // Connected, and the upstream's SETTINGS came.
  bool settled() const { return connected_ && codec_.peer_settings_received(); }
  // GOAWAY (NO_ERROR) now, closing once open streams finish.
  void Drain();
  // Closes now; open streams fail (refused when their request never left).
  void CloseNow(const std::string& why);

  // net::ConnectionCallbacks
  void OnReadable() override;
  void OnWriteDrained() override;
  void OnConnected() override;
  void OnClosed(net::CloseReason reason, int error) override;
  // http::Http2ClientCallbacks
  void OnResponseHeaders(int32_t stream_id, int status, const http::HeaderMap& headers,
                         bool end_stream) override;
  void OnResponseData(int32_t stream_id, std::string_view data, bool end_stream) override;
  void OnResponseTrailers(int32_t stream_id, const http::HeaderMap& trailers) override;
  void OnInformationalResponse(int32_t stream_id, int status,
                               const http::HeaderMap& headers) override;
  void OnStreamReset(int32_t stream_id, uint32_t error_code, bool refused, bool by_peer,
                     std::string_view reason) override;
  void OnStreamWritable(int32_t stream_id) override;
  void OnGoaway(int32_t last_stream_id, uint32_t error_code) override;
  void OnPingAck() override;
  void OnSettings() override;
  // event::Flushable
  void Flush() override;

 private:
  friend class Http2UpstreamStream;
  friend class Http2Pool;
  void ScheduleFlush();
  // The stream left (completed, failed, or its owner let go of it).
  void Forget(Http2UpstreamStream* stream);
  Http2UpstreamStream* Find(int32_t stream_id) const;
  // Every stream fails; the connection closes and leaves the pool.
  // `lost`: the upstream closed or reset the connection; the
  // streams whose response had not begun hear OnUpstreamLost.
  void FailAll(bool connect_failed, bool timed_out, bool refused, const std::string& why,
               bool lost = false);
  void Finish();  // leaves the pool, deleted later
  void OnIdleTimer();
  void OnBusyTimer();
  void UpdateIdle();
  // Sends a PING (when none is out) and arms its deadline.
  void SendPing();
  // A stream was given up with nothing come since it was sent.
  void Suspect();

  event::Dispatcher& dispatcher_;
  Http2Pool& pool_;
  std::unique_ptr<net::Connection> connection_;
  http::Http2ClientCodec codec_;
  std::string pool_key_;
  const uint32_t max_streams_;
  // The cluster's circuit_breakers.max_connections as of the pool's last
  // request for the endpoint (a raised breaker counts at once).
  uint32_t max_connections_;
  // Until the peer's SETTINGS come, the stream limit its endpoint announced
  // on an earlier connection (Http2Pool::peer_limits_): a new connection
  // does not send a burst the upstream refuses.
  const uint32_t assumed_peer_limit_;
  // The streams its endpoint serves on one connection before its GOAWAY
  // (Http2Pool::stream_budgets_); 0: not known, no bound.
  uint64_t stream_budget_ = 0;
  const bool auto_protocol_;
  std::unordered_set<Http2UpstreamStream*> pending_;  // handed out, HEADERS not yet submitted
  std::unordered_map<int32_t, Http2UpstreamStream*> streams_;
  event::Timer connect_timer_;
  event::Timer idle_timer_;  // PING of an idle connection, and its idle end
  event::Timer busy_timer_;  // PING of a busy one that received nothing for busy_ping_after_
  const absl::Duration idle_ping_interval_;
  const absl::Duration busy_ping_after_;
  absl::Time last_read_ = absl::InfinitePast();  // dispatcher time of the last bytes read
  absl::Time last_ping_sent_ = absl::InfinitePast();  // dispatcher time
  event::Timer ping_timer_;  // the outstanding PING's deadline
  bool connected_ = false;
  bool settled_told_ = false;  // its streams heard of the SETTINGS (OnUpstreamSettled)
  bool suspect_ = false;  // no new stream until a PING ACK (Suspect)
  absl::Time last_ping_ack_ = absl::InfinitePast();  // dispatcher time
  uint64_t reads_ = 0;    // read events with bytes, over the connection's life
  bool closed_ = false;
  bool flush_scheduled_ = false;
  bool ping_outstanding_ = false;
  absl::Time idle_since_;
  uint64_t streams_opened_ = 0;
  std::shared_ptr<ClusterState> cluster_state_;
  std::shared_ptr<EndpointState> endpoint_state_;
  std::string scratch_;
};

class Http2Pool {
 public:
  // Liveness (see the file comment).
  static constexpr absl::Duration kPingInterval = absl::Seconds(30);
  // A busy connection that received nothing this long is pinged: a dead
  // peer (powered off, partitioned: no RST ever comes) would otherwise hold
  // a long stream (a watch, a route with timeout 0s) for ever. Past the 5
  // minutes gRPC servers want between PINGs without data (their
  // GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, grpc-go's
  // MinTime): closer ones are strikes, and a third one a GOAWAY.
  static constexpr absl::Duration kBusyPingAfter = absl::Seconds(305);
  static constexpr absl::Duration kPingTimeout = absl::Seconds(10);
  static constexpr absl::Duration kIdleTimeout = absl::Seconds(300);
  // A stream given up sooner after its HEADERS left (a client that went
  // at once) says nothing of its connection: no suspicion.
  static constexpr absl::Duration kSuspectAfter = absl::Milliseconds(250);
  // A connection that acknowledged a PING this recently is drained when
  // suspect rather than pinged again: gRPC servers' default keepalive
  // policy counts a PING within 5 minutes of the one before as a strike
  // (grpc-go: three strikes are GOAWAY too_many_pings, and the
  // connection's streams die).
  static constexpr absl::Duration kSuspectCooldown = absl::Minutes(5);

  explicit Http2Pool(event::Dispatcher& dispatcher) : dispatcher_(dispatcher) {}
  ~Http2Pool();
  Http2Pool(const Http2Pool&) = delete;
  Http2Pool& operator=(const Http2Pool&) = delete;

  // A stream on a connection to `endpoint` with room, or on a new one.
  // RESOURCE_EXHAUSTED when a new connection would pass max_connections
  // (unless this worker has no connection to the cluster);
  // UNAVAILABLE when the socket or its TLS session cannot be made.
  // `may_wait` false (the cluster's max_pending_requests is full): a stream
  // on a connection already open, or FAILED_PRECONDITION; never one that
  // waits for its connection to open.
  absl::StatusOr<std::unique_ptr<Http2UpstreamStream>> Acquire(const ClusterInfo& cluster,
                                                               const EndpointInfo& endpoint,
                                                               UpstreamEvents* events,
                                                               bool may_wait = true);
  // AUTO: this pool key's endpoint chose HTTP/1.1 by ALPN.
  bool SpeaksHttp1(const std::string& pool_key) const { return http1_keys_.count(pool_key) != 0; }
  // Connections whose key is not in `keep` drain (GOAWAY; closed once their
  // streams finish).
  void DrainExcept(const std::set<std::string>& keep);
  size_t connection_count() const;

 private:
  friend class Http2UpstreamConnection;
  friend class Http2UpstreamStream;
  void Remove(Http2UpstreamConnection* connection);
  // Whether this worker has an open connection to any of the cluster's
  // endpoints: one without may open one over max_connections (as Envoy's
  // pools do), else another worker's idle connections starve it.
  bool HasConnectionTo(const ClusterInfo& cluster) const;
  void OnStreamsChanged(Http2UpstreamConnection* connection);
  void MarkHttp1(const std::string& pool_key) { http1_keys_.insert(pool_key); }
  uint32_t KnownPeerLimit(const std::string& pool_key) const;
  // A NO_ERROR GOAWAY that left streams of `connection` unprocessed after
  // `processed`: the endpoint's budget of streams per connection (nginx's
  // keepalive_requests, Envoy's max_requests_per_connection on the other
  // side), once two such GOAWAYs in a row say the same (a restart's GOAWAY
  // comes at any count). New streams then go past it to other connections:
  // a burst larger than the budget was refused, sent again, refused...
  // and after three sends the client got a 502.
  void LearnStreamBudget(const std::string& pool_key, uint64_t processed);

  event::Dispatcher& dispatcher_;
  std::unordered_map<std::string, std::vector<std::unique_ptr<Http2UpstreamConnection>>>
      connections_;
  std::unordered_set<std::string> http1_keys_;
  // By pool key: the SETTINGS_MAX_CONCURRENT_STREAMS its endpoint last sent.
  std::unordered_map<std::string, uint32_t> peer_limits_;
  // By pool key: streams its last such GOAWAY let through, and the budget
  // two in a row confirmed (0: none).
  struct StreamBudget {
    uint64_t seen = 0;
    uint64_t confirmed = 0;
  };
  std::unordered_map<std::string, StreamBudget> stream_budgets_;
};

}  // namespace sluice::upstream

#endif  // SLUICE_DATAPLANE_UPSTREAM_HTTP2_POOL_H_
