#include "dataplane/upstream/http2_pool.h"

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "dataplane/net/socket.h"

namespace sluice::upstream {
namespace {

constexpr uint32_t kCancel = 0x8;         // RST_STREAM CANCEL (RFC 9113 7)
constexpr uint32_t kProtocolError = 0x1;  // PROTOCOL_ERROR
// Framed output taken from the codec per write, and the socket's backlog
// above which the codec keeps the rest (its per-stream queues then fill and
// push back on the requests).
constexpr size_t kTakeChunk = 64 * 1024;
constexpr size_t kSocketWatermark = 256 * 1024;

}  // namespace

// --- Http2UpstreamStream -------------------------------------------------

Http2UpstreamStream::~Http2UpstreamStream() {
  if (connection_ == nullptr) return;
  if (id_ >= 0) {
    connection_->codec_.ResetStream(id_, kCancel);
    if (!response_started_ && connection_->reads_ == reads_at_send_ &&
        (timed_out_ || connection_->dispatcher_.Now() - sent_at_ >= Http2Pool::kSuspectAfter)) {
      connection_->Suspect();
    }
  }
  connection_->Forget(this);
}

bool Http2UpstreamStream::connection_settled() const {
  return connection_ != nullptr && connection_->settled();
}

bool Http2UpstreamStream::peer_allows_extended_connect() const {
  return connection_ != nullptr && connection_->codec_.peer_allows_extended_connect();
}

void Http2UpstreamStream::SendHeaders(const http::Http2Request& request, bool end_stream) {
  if (connection_ == nullptr || id_ >= 0) return;
  Http2UpstreamConnection* c = connection_;
  c->pending_.erase(this);
  int32_t id = c->codec_.SubmitRequest(request, end_stream);
  if (id < 0) {
    // The connection lost its room between Acquire and now (a GOAWAY or
    // SETTINGS arrived in between): nothing was sent.
    connection_ = nullptr;
    c->pool_.OnStreamsChanged(c);
    events_->OnUpstreamRefused("connection stopped taking new streams");
    return;
  }
  id_ = id;
  reads_at_send_ = c->reads_;
  sent_at_ = c->dispatcher_.Now();
  c->streams_.emplace(id, this);
  c->ScheduleFlush();
}

void Http2UpstreamStream::SendData(std::string_view data, bool end_stream) {
  if (connection_ == nullptr || id_ < 0) return;
  connection_->codec_.SubmitData(id_, data, end_stream);
  connection_->ScheduleFlush();
}

void Http2UpstreamStream::SendTrailers(const http::HeaderField* fields, size_t count) {
  if (connection_ == nullptr || id_ < 0) return;
  connection_->codec_.SubmitTrailers(id_, fields, count);
  connection_->ScheduleFlush();
}

size_t Http2UpstreamStream::queued_bytes() const {
  if (connection_ == nullptr || id_ < 0) return 0;
  return connection_->codec_.QueuedBytes(id_);
}

void Http2UpstreamStream::SetReadEnabled(bool enabled) {
  read_enabled_ = enabled;
  if (!enabled || connection_ == nullptr || id_ < 0 || unconsumed_ == 0) return;
  connection_->codec_.ConsumeResponseData(id_, unconsumed_);
  unconsumed_ = 0;
  connection_->ScheduleFlush();  // the WINDOW_UPDATE
}

bool Http2UpstreamStream::connecting() const {
  return connection_ != nullptr && connection_->connecting();
}

bool Http2UpstreamStream::settled() const {
  return connection_ != nullptr && id_ >= 0 && connection_->settled();
}

// --- Http2UpstreamConnection ---------------------------------------------

Http2UpstreamConnection::Http2UpstreamConnection(event::Dispatcher& dispatcher, Http2Pool& pool,
                                                 int fd,
                                                 std::unique_ptr<net::TransportSocket> transport,
                                                 std::string pool_key, const ClusterInfo& cluster,
                                                 std::shared_ptr<EndpointState> endpoint_state)
    : dispatcher_(dispatcher),
      pool_(pool),
      connection_(std::make_unique<net::Connection>(dispatcher, fd, /*connecting=*/true,
                                                    std::move(transport))),
      codec_(this, http::Http2ClientLimits()),
      pool_key_(std::move(pool_key)),
      max_streams_(cluster.max_concurrent_streams),
      max_connections_(cluster.breakers.max_connections),
      assumed_peer_limit_(pool.KnownPeerLimit(pool_key_)),
      auto_protocol_(cluster.protocol == UpstreamProtocol::kAuto),
      connect_timer_(dispatcher,
                     [this] {
                       bool handshaking =
                           !connection_->connecting() && !connection_->handshake_complete();
                       // Connected, but no SETTINGS came: no HTTP/2 server
                       // (one sends them first); nothing was processed.
                       const net::TlsInfo* tls = connection_->transport().tls_info();
                       FailAll(true, true, false,
                               !connected_ ? (handshaking ? "connect timeout in the TLS handshake"
                                                          : "connect timeout")
                               : tls == nullptr
                                   ? "connect timeout: the upstream sent no HTTP/2 SETTINGS "
                                     "(does it speak HTTP/2? h2c needs a server that takes it "
                                     "with prior knowledge)"
                               : tls->alpn.empty()
                                   ? "connect timeout: the upstream sent no HTTP/2 SETTINGS "
                                     "(it chose no protocol by ALPN, and the cluster's is "
                                     "HTTP2: does it speak HTTP/2 over TLS? protocol AUTO "
                                     "takes such an upstream as HTTP/1.1)"
                                   : "connect timeout: the upstream chose h2 by ALPN but sent "
                                     "no HTTP/2 SETTINGS");
                     }),
      idle_timer_(dispatcher, [this] { OnIdleTimer(); }),
      busy_timer_(dispatcher, [this] { OnBusyTimer(); }),
      idle_ping_interval_(cluster.keepalive_interval > absl::ZeroDuration()
                              ? cluster.keepalive_interval
                              : Http2Pool::kPingInterval),
      busy_ping_after_(cluster.keepalive_interval > absl::ZeroDuration()
                           ? cluster.keepalive_interval
                           : Http2Pool::kBusyPingAfter),
      ping_timer_(dispatcher,
                  [this] {
                    CloseNow(absl::StrCat("no PING ACK within ",
                                          absl::FormatDuration(Http2Pool::kPingTimeout)));
                  }),
      cluster_state_(cluster.state),
      endpoint_state_(std::move(endpoint_state)) {
  connection_->SetCallbacks(this);
  connection_->ReadBeforeWriteFailure();
  connect_timer_.Enable(cluster.connect_timeout);
  cluster_state_->connections.fetch_add(1, std::memory_order_relaxed);
  endpoint_state_->connections.fetch_add(1, std::memory_order_relaxed);
}

Http2UpstreamConnection::~Http2UpstreamConnection() {
  if (flush_scheduled_) dispatcher_.CancelFlush(this);
  for (auto* s : pending_) s->connection_ = nullptr;
  for (auto& [id, s] : streams_) s->connection_ = nullptr;
  cluster_state_->connections.fetch_sub(1, std::memory_order_relaxed);
  endpoint_state_->connections.fetch_sub(1, std::memory_order_relaxed);
}

bool Http2UpstreamConnection::HasCapacity() const {
  const size_t open = streams_.size() + pending_.size();
  return !closed_ && !suspect_ && codec_.CanOpenStream() && open < max_streams_ &&
         (codec_.peer_settings_received() || open < assumed_peer_limit_) &&
         (stream_budget_ == 0 || streams_opened_ < stream_budget_);
}

void Http2UpstreamConnection::OnSettings() {
  pool_.peer_limits_[pool_key_] = codec_.peer_max_concurrent_streams();
  if (!connected_) return;
  connect_timer_.Disable();  // the connect timeout covers them
  if (settled_told_) return;
  settled_told_ = true;
  // Copies: a request may leave inside the call.
  std::vector<int32_t> ids;
  ids.reserve(streams_.size());
  for (auto& [id, s] : streams_) ids.push_back(id);
  // And those whose HEADERS wait for them (a WebSocket's extended CONNECT
  // may go only where they allow it).
  std::vector<Http2UpstreamStream*> pending(pending_.begin(), pending_.end());
  for (int32_t id : ids) {
    if (Http2UpstreamStream* s = Find(id)) s->events_->OnUpstreamSettled();
  }
  for (Http2UpstreamStream* s : pending) {
    if (pending_.count(s)) s->events_->OnUpstreamSettled();
  }
}

void Http2UpstreamConnection::ScheduleFlush() {
  if (flush_scheduled_ || closed_) return;
  flush_scheduled_ = true;
  dispatcher_.ScheduleFlush(this);
}

void Http2UpstreamConnection::Flush() {
  if (flush_scheduled_) {
    dispatcher_.CancelFlush(this);
    flush_scheduled_ = false;
  }
  if (closed_ || !connected_) return;  // the preface waits for the handshake
  while (codec_.WantsWrite() && connection_->output_size() < kSocketWatermark) {
    scratch_.clear();
    codec_.TakeOutput(&scratch_, kTakeChunk);
    if (scratch_.empty()) break;
    connection_->Write(scratch_);
  }
  if (closed_) return;
  if (!codec_.WantsRead() && !codec_.WantsWrite()) {
    // A connection error was answered with GOAWAY, or a drained connection
    // has no stream left: close once the last frames are out. They are
    // written now (FailAll's close drops what is queued, a drain's GOAWAY
    // and RST_STREAMs included); a failure then is no one's to hear of.
    connection_->SetCallbacks(nullptr);
    connection_->Flush();
    FailAll(false, false, false, codec_.error().empty() ? "connection closed" : codec_.error());
  }
}

void Http2UpstreamConnection::OnConnected() {
  // The connect timeout runs on until the upstream's SETTINGS: a server that
  // accepts and never answers (an HTTP/1 one waiting for a request line
  // that the preface never finishes) failed only at the route timeout, and
  // the connection lived on for a PING's timeout more.
  if (codec_.peer_settings_received()) connect_timer_.Disable();
  if (const net::TlsInfo* tls = connection_->transport().tls_info()) {
    // AUTO: an endpoint that answers no ALPN speaks HTTP/1.1 (as Envoy's
    // auto protocol takes it); an HTTP2 cluster's is taken to speak h2.
    if (tls->alpn != "h2" && (auto_protocol_ || !tls->alpn.empty())) {
      if (auto_protocol_) {
        // The endpoint speaks HTTP/1.1: requests go again on the other pool.
        pool_.MarkHttp1(pool_key_);
        FailAll(false, false, true,
                tls->alpn.empty() ? "chose no protocol by ALPN: HTTP/1.1"
                                  : "chose HTTP/1.1 by ALPN");
      } else {
        FailAll(true, false, false,
                absl::StrCat("connect failed: the upstream chose ", tls->alpn,
                             " by ALPN; the cluster's protocol is HTTP2"));
      }
      return;
    }
  }
  connected_ = true;
  // Copies: a request may fail (and leave) inside OnUpstreamConnected.
  std::vector<int32_t> ids;
  ids.reserve(streams_.size());
  for (auto& [id, s] : streams_) ids.push_back(id);
  std::vector<Http2UpstreamStream*> pending(pending_.begin(), pending_.end());
  for (int32_t id : ids) {
    if (Http2UpstreamStream* s = Find(id)) s->events_->OnUpstreamConnected();
  }
  for (Http2UpstreamStream* s : pending) {
    if (pending_.count(s)) s->events_->OnUpstreamConnected();
  }
  Flush();
}

void Http2UpstreamConnection::OnReadable() {
  net::Buffer& input = connection_->input();
  if (input.empty()) return;
  ++reads_;
  last_read_ = dispatcher_.Now();
  std::string_view bytes = input.view();
  size_t n = bytes.size();
  if (!codec_.peer_settings_received() && n >= 4 && static_cast<uint8_t>(bytes[3]) != 0x04) {
    // Its first frame is not the SETTINGS a server's preface starts with
    // (RFC 9113 3.4; the type is the frame header's fourth byte): it does
    // not speak HTTP/2 (an HTTP/1 server answering the client preface
    // with a 400), so it took no request. A connect failure, retried on
    // another endpoint as one that never answers is: before, the requests
    // sent to it failed with 502 ("SETTINGS expected").
    FailAll(true, false, false,
            "connect failed: the upstream does not speak HTTP/2 (its first bytes are not a "
            "SETTINGS frame); the cluster's protocol is HTTP2");
    return;
  }
  bool ok = codec_.Receive(bytes);
  if (closed_) return;
  input.Drain(n);
  if (!ok) {
    SLUICE_LOG(kDebug, "HTTP/2 upstream ", pool_key_, ": ", codec_.error());
  }
  Flush();
}

void Http2UpstreamConnection::OnWriteDrained() { Flush(); }

void Http2UpstreamConnection::OnClosed(net::CloseReason reason, int error) {
  connect_timer_.Disable();
  if (closed_) return;
  switch (reason) {
    case net::CloseReason::kConnectFailed:
      FailAll(true, false, false, absl::StrCat("connect failed: ", strerror(error)));
      return;
    case net::CloseReason::kHandshakeFailed: {
      const std::string& failure = connection_->transport().failure_reason();
      FailAll(true, false, false,
              absl::StrCat("connect failed: TLS ", failure,
                           absl::StrContains(failure, "no application protocol")
                               ? " (the upstream does not speak h2 by ALPN; the cluster's "
                                 "protocol is HTTP2)"
                               : ""));
      return;
    }
    case net::CloseReason::kReset:
      FailAll(false, false, false,
              absl::StrCat("connection reset: ",
                           net::ResetReason(connection_->transport(), error)),
              /*lost=*/true);
      return;
    default:
      if (connection_->transport().secure() && connected_ && !codec_.peer_settings_received()) {
        // Right after the handshake, before its SETTINGS: how a server that
        // requires a client certificate refuses none, or one it does not
        // trust, under TLS 1.3 (the client's handshake is done first; gRPC
        // servers send no alert). Said so, or it read as a plain close.
        FailAll(false, false, false,
                "closed the connection right after the TLS handshake, before its HTTP/2 "
                "SETTINGS (does it require a client certificate? the cluster's "
                "tls.client_certificate sends none, or one it does not trust)");
        return;
      }
      FailAll(false, false, false, "closed the connection", /*lost=*/true);
      return;
  }
}

void Http2UpstreamConnection::FailAll(bool connect_failed, bool timed_out, bool refused,
                                      const std::string& why, bool lost) {
  if (closed_) return;
  closed_ = true;
  connect_timer_.Disable();
  idle_timer_.Disable();
  busy_timer_.Disable();
  ping_timer_.Disable();
  connection_->Close();
  // Streams whose HEADERS went out end through the codec (refused when a
  // GOAWAY said they were not processed); the others never left.
  std::vector<Http2UpstreamStream*> pending(pending_.begin(), pending_.end());
  pending_.clear();
  std::vector<Http2UpstreamStream*> open;
  open.reserve(streams_.size());
  for (auto& [id, s] : streams_) open.push_back(s);
  streams_.clear();
  for (Http2UpstreamStream* s : pending) s->connection_ = nullptr;
  for (Http2UpstreamStream* s : open) s->connection_ = nullptr;
  // Stream owners may destroy their handles in these calls (no longer ours).
  for (Http2UpstreamStream* s : pending) {
    // Their HEADERS never went: not processed, unless the connection never
    // came up (a connect failure, retried as one).
    if (refused || !connect_failed) {
      s->events_->OnUpstreamRefused(why);
    } else {
      s->events_->OnUpstreamFailed(connect_failed, timed_out, why);
    }
  }
  for (Http2UpstreamStream* s : open) {
    bool never_sent = !connected_;
    if (refused || (never_sent && !connect_failed)) {
      s->events_->OnUpstreamRefused(why);
    } else if (lost && !s->response_started_) {
      s->events_->OnUpstreamLost(why);
    } else {
      s->events_->OnUpstreamFailed(connect_failed, timed_out, why);
    }
  }
  Finish();
}

void Http2UpstreamConnection::Finish() { pool_.Remove(this); }

Http2UpstreamStream* Http2UpstreamConnection::Find(int32_t stream_id) const {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? nullptr : it->second;
}

void Http2UpstreamConnection::Forget(Http2UpstreamStream* stream) {
  if (stream->id_ >= 0) {
    auto it = streams_.find(stream->id_);
    if (it != streams_.end() && it->second == stream) streams_.erase(it);
  } else {
    pending_.erase(stream);
  }
  stream->connection_ = nullptr;
  ScheduleFlush();
  pool_.OnStreamsChanged(this);
}

void Http2UpstreamConnection::OnResponseHeaders(int32_t stream_id, int status,
                                                const http::HeaderMap& headers, bool end_stream) {
  Http2UpstreamStream* s = Find(stream_id);
  if (s == nullptr) return;
  s->response_started_ = true;
  http::MessageHead head;
  head.status = status;
  head.headers.reserve(headers.size());
  head.framing = http::BodyFraming::kChunked;  // a stream of DATA frames
  for (const http::HeaderMap::Field& f : headers.fields()) {
    head.headers.push_back({f.name, f.value});
    if (f.name == "content-length" && absl::SimpleAtoi(f.value, &head.content_length)) {
      head.framing = http::BodyFraming::kContentLength;
      head.has_content_length = true;
    }
  }
  if (end_stream && head.framing != http::BodyFraming::kContentLength) {
    head.framing = http::BodyFraming::kNone;
  }
  UpstreamEvents* events = s->events_;
  events->OnUpstreamHead(head);
  if (!end_stream || Find(stream_id) != s) return;
  streams_.erase(stream_id);
  s->connection_ = nullptr;
  pool_.OnStreamsChanged(this);
  events->OnUpstreamComplete();
}

void Http2UpstreamConnection::OnResponseData(int32_t stream_id, std::string_view data,
                                             bool end_stream) {
  Http2UpstreamStream* s = Find(stream_id);
  if (s == nullptr) return;
  UpstreamEvents* events = s->events_;
  if (!data.empty()) {
    events->OnUpstreamBody(data);
    if (Find(stream_id) != s) return;  // the request let go of it
    if (s->read_enabled_) {
      codec_.ConsumeResponseData(stream_id, data.size());
    } else {
      s->unconsumed_ += data.size();
    }
  }
  if (!end_stream) return;
  streams_.erase(stream_id);
  s->connection_ = nullptr;
  pool_.OnStreamsChanged(this);
  events->OnUpstreamComplete();
}

void Http2UpstreamConnection::OnInformationalResponse(int32_t stream_id, int status,
                                                      const http::HeaderMap& headers) {
  Http2UpstreamStream* s = Find(stream_id);
  if (s == nullptr) return;
  if (++s->interim_responses_ > UpstreamConnection::kMaxInterimResponses) {
    codec_.ResetStream(stream_id, kProtocolError);
    ScheduleFlush();
    streams_.erase(stream_id);
    s->connection_ = nullptr;
    pool_.OnStreamsChanged(this);
    s->events_->OnUpstreamInvalidResponse(UpstreamConnection::kTooManyInterimResponses);
    return;
  }
  if (status == 100) return;  // 100: the gateway's own Expect handling
  s->events_->OnUpstreamInformational(status, headers.Views());
}

void Http2UpstreamConnection::OnResponseTrailers(int32_t stream_id,
                                                 const http::HeaderMap& trailers) {
  Http2UpstreamStream* s = Find(stream_id);
  if (s == nullptr) return;
  UpstreamEvents* events = s->events_;
  events->OnUpstreamTrailers(trailers.Views());
  if (Find(stream_id) != s) return;
  streams_.erase(stream_id);
  s->connection_ = nullptr;
  pool_.OnStreamsChanged(this);
  events->OnUpstreamComplete();
}

void Http2UpstreamConnection::OnStreamReset(int32_t stream_id, uint32_t error_code, bool refused,
                                            bool by_peer, std::string_view reason) {
  Http2UpstreamStream* s = Find(stream_id);
  if (s == nullptr) return;
  streams_.erase(stream_id);
  s->connection_ = nullptr;
  pool_.OnStreamsChanged(this);
  // Said as "upstream <why>": who ended the stream, so that an operator
  // does not blame the upstream for a reset the gateway sent over what it
  // answered (a malformed response, a head over the limit).
  std::string why = by_peer ? absl::StrCat("reset the HTTP/2 stream (error ", error_code, "): ",
                                           std::string(reason))
                            : absl::StrCat("HTTP/2 stream ended by the gateway (error ",
                                           error_code, "): ", std::string(reason));
  if (refused) {
    s->events_->OnUpstreamRefused(why);
  } else if (!by_peer && error_code == kProtocolError) {
    s->events_->OnUpstreamInvalidResponse(why);  // the gateway refused what it sent
  } else {
    s->events_->OnUpstreamReset(error_code, why);
  }
}

void Http2UpstreamConnection::OnStreamWritable(int32_t stream_id) {
  if (Http2UpstreamStream* s = Find(stream_id)) s->events_->OnUpstreamWriteDrained();
}

void Http2UpstreamConnection::OnGoaway(int32_t last_stream_id, uint32_t error_code) {
  SLUICE_LOG(kDebug, "HTTP/2 upstream ", pool_key_, " sent GOAWAY (error ", error_code,
             ", last stream ", last_stream_id, ")");
  // Client streams are 1, 3, 5...: the GOAWAY let the first (id + 1) / 2
  // through. A first GOAWAY of a graceful shutdown (2^31 - 1) says nothing.
  const uint64_t processed = (static_cast<uint64_t>(last_stream_id) + 1) / 2;
  if (error_code == 0 && last_stream_id > 0 && last_stream_id < INT32_MAX &&
      streams_opened_ > processed) {
    pool_.LearnStreamBudget(pool_key_, processed);
  }
  pool_.OnStreamsChanged(this);
}

void Http2UpstreamConnection::OnPingAck() {
  ping_outstanding_ = false;
  suspect_ = false;
  last_ping_ack_ = dispatcher_.Now();
  ping_timer_.Disable();
}

void Http2UpstreamConnection::UpdateIdle() {
  if (closed_) return;
  if (streams_.empty() && pending_.empty()) {
    if (!idle_timer_.enabled()) {
      idle_since_ = absl::Now();
      idle_timer_.Enable(idle_ping_interval_);
    }
  } else {
    // An outstanding PING keeps its deadline (ping_timer_).
    idle_timer_.Disable();
    if (!busy_timer_.enabled()) busy_timer_.Enable(busy_ping_after_);
  }
}

void Http2UpstreamConnection::OnBusyTimer() {
  if (closed_ || (streams_.empty() && pending_.empty())) return;  // idle: idle_timer_'s
  // A PING once nothing has come for a whole interval, and none went within
  // one; else the check comes back when that would be so.
  if (!connected_) {  // the connect timeout's time
    busy_timer_.Enable(busy_ping_after_);
    return;
  }
  const absl::Time now = dispatcher_.Now();
  const absl::Time quiet_since = std::max(last_read_, last_ping_sent_);
  if (now - quiet_since >= busy_ping_after_) {
    SendPing();
    Flush();
    if (closed_) return;
    busy_timer_.Enable(busy_ping_after_);
    return;
  }
  busy_timer_.Enable(std::max(busy_ping_after_ - (now - quiet_since), absl::Milliseconds(10)));
}

void Http2UpstreamConnection::OnIdleTimer() {
  if (absl::Now() - idle_since_ >= Http2Pool::kIdleTimeout || !connected_) {
    CloseNow("idle");
    return;
  }
  SendPing();
  Flush();
  if (closed_) return;
  // Unused for a whole interval: the connection gives back its buffers and
  // nghttp2's frame buffer pages (the PING just taken from it included).
  codec_.ReleaseIdleMemory();
  connection_->ReleaseIdleBuffers();
  idle_timer_.Enable(idle_ping_interval_);
}

void Http2UpstreamConnection::SendPing() {
  if (ping_outstanding_ || closed_) return;
  ping_outstanding_ = true;
  last_ping_sent_ = dispatcher_.Now();
  codec_.SubmitPing();
  ping_timer_.Enable(Http2Pool::kPingTimeout);
}

void Http2UpstreamConnection::Suspect() {
  if (closed_ || !connected_) return;
  if (dispatcher_.Now() - last_ping_ack_ < Http2Pool::kSuspectCooldown) {
    // No second PING so soon: no new streams, closed once idle. Unless no
    // other connection may be opened: then draining would only refuse.
    if (cluster_state_->connections.load(std::memory_order_relaxed) < max_connections_) Drain();
    return;
  }
  suspect_ = true;
  SendPing();
  ScheduleFlush();  // may run inside the codec's callbacks: never Flush() here
}

void Http2UpstreamConnection::Drain() {
  if (closed_) return;
  codec_.Shutdown();
  ScheduleFlush();  // may run inside the codec's callbacks: never Flush() here
}

void Http2UpstreamConnection::CloseNow(const std::string& why) {
  FailAll(false, false, false, why);
}

// --- Http2Pool ------------------------------------------------------------

Http2Pool::~Http2Pool() {
  for (auto& [key, list] : connections_) {
    for (auto& c : list) {
      c->closed_ = true;
      c->connection_->Close();
    }
  }
}

absl::StatusOr<std::unique_ptr<Http2UpstreamStream>> Http2Pool::Acquire(
    const ClusterInfo& cluster, const EndpointInfo& endpoint, UpstreamEvents* events,
    bool may_wait) {
  auto& list = connections_[endpoint.pool_key];
  for (auto& c : list) {
    c->max_connections_ = cluster.breakers.max_connections;
    if (!c->HasCapacity() || (!may_wait && c->connecting())) continue;
    bool reused = c->streams_opened_ > 0;
    ++c->streams_opened_;
    if (reused) cluster.stats.connections_reused->Inc();
    auto stream = std::unique_ptr<Http2UpstreamStream>(
        new Http2UpstreamStream(c.get(), events, reused));
    c->pending_.insert(stream.get());
    c->UpdateIdle();
    return stream;
  }
  if (!may_wait) {
    if (list.empty()) connections_.erase(endpoint.pool_key);
    return absl::FailedPreconditionError("max_pending_requests");
  }
  if (cluster.state->connections.load(std::memory_order_relaxed) >=
          cluster.breakers.max_connections &&
      HasConnectionTo(cluster)) {
    if (list.empty()) connections_.erase(endpoint.pool_key);
    return absl::ResourceExhaustedError("max_connections");
  }
  std::unique_ptr<net::TransportSocket> transport;
  if (cluster.transport != nullptr) {
    transport = cluster.transport->Create();
    if (transport == nullptr) return absl::UnavailableError("TLS: cannot start a session");
  }
  auto fd = net::ConnectNonBlocking(endpoint.address);
  if (!fd.ok()) {
    if (list.empty()) connections_.erase(endpoint.pool_key);
    return fd.status();
  }
  cluster.stats.connections_opened->Inc();
  list.push_back(std::make_unique<Http2UpstreamConnection>(
      dispatcher_, *this, *fd, std::move(transport), endpoint.pool_key, cluster, endpoint.state));
  Http2UpstreamConnection* c = list.back().get();
  c->connection_->SetPeerIsLocal(net::IsLoopback(endpoint.address.storage));
  if (auto budget = stream_budgets_.find(endpoint.pool_key); budget != stream_budgets_.end()) {
    c->stream_budget_ = budget->second.confirmed;
  }
  ++c->streams_opened_;
  auto stream = std::unique_ptr<Http2UpstreamStream>(new Http2UpstreamStream(c, events, false));
  c->pending_.insert(stream.get());
  c->UpdateIdle();  // busy from the start: its keepalive runs
  return stream;
}

bool Http2Pool::HasConnectionTo(const ClusterInfo& cluster) const {
  for (const EndpointInfo& endpoint : cluster.endpoints) {
    auto it = connections_.find(endpoint.pool_key);
    if (it == connections_.end()) continue;
    for (const auto& c : it->second) {
      if (!c->closed_) return true;
    }
  }
  return false;
}

void Http2Pool::OnStreamsChanged(Http2UpstreamConnection* connection) {
  connection->UpdateIdle();
  if (connection->closed_ || !connection->streams_.empty() || !connection->pending_.empty()) {
    return;
  }
  if (connection->codec_.goaway_received()) {
    connection->CloseNow("sent GOAWAY");
    return;
  }
  // Keep one idle connection per key: close this one if another is idle
  // too, or the other when it is the suspect one (Suspect).
  auto it = connections_.find(connection->pool_key_);
  if (it == connections_.end()) return;
  for (auto& other : it->second) {
    if (other.get() != connection && !other->closed_ && other->streams_.empty() &&
        other->pending_.empty() && other->connected_) {
      (other->suspect_ && !connection->suspect_ ? other.get() : connection)->Drain();
      return;
    }
  }
}

void Http2Pool::Remove(Http2UpstreamConnection* connection) {
  auto it = connections_.find(connection->pool_key_);
  if (it == connections_.end()) return;
  auto& list = it->second;
  for (size_t i = 0; i < list.size(); ++i) {
    if (list[i].get() != connection) continue;
    std::unique_ptr<Http2UpstreamConnection> owned = std::move(list[i]);
    list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
    if (list.empty()) connections_.erase(it);
    dispatcher_.DeferredDelete(std::move(owned));
    return;
  }
}

void Http2Pool::LearnStreamBudget(const std::string& pool_key, uint64_t processed) {
  StreamBudget& budget = stream_budgets_[pool_key];
  if (processed != budget.seen) {
    budget.seen = processed;
    return;
  }
  if (budget.confirmed == processed) return;
  budget.confirmed = processed;
  SLUICE_LOG(kDebug, "HTTP/2 upstream ", pool_key, " serves ", processed,
             " streams per connection (two GOAWAYs said so): no more are opened on one");
  auto it = connections_.find(pool_key);
  if (it == connections_.end()) return;
  for (auto& c : it->second) c->stream_budget_ = processed;
}

uint32_t Http2Pool::KnownPeerLimit(const std::string& pool_key) const {
  auto it = peer_limits_.find(pool_key);
  return it == peer_limits_.end() ? UINT32_MAX : it->second;
}

void Http2Pool::DrainExcept(const std::set<std::string>& keep) {
  for (auto it = peer_limits_.begin(); it != peer_limits_.end();) {
    it = keep.count(it->first) ? std::next(it) : peer_limits_.erase(it);
  }
  for (auto it = stream_budgets_.begin(); it != stream_budgets_.end();) {
    it = keep.count(it->first) ? std::next(it) : stream_budgets_.erase(it);
  }
  std::vector<Http2UpstreamConnection*> drain;
  for (auto& [key, list] : connections_) {
    if (keep.count(key)) continue;
    for (auto& c : list) drain.push_back(c.get());
  }
  for (Http2UpstreamConnection* c : drain) {
    if (c->streams_.empty() && c->pending_.empty()) {
      c->CloseNow("its cluster changed");
    } else {
      c->Drain();
    }
  }
}

size_t Http2Pool::connection_count() const {
  size_t n = 0;
  for (const auto& [key, list] : connections_) n += list.size();
  return n;
}

}  // namespace sluice::upstream
