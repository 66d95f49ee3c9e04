#include "dataplane/server/http2_session.h"

#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/log.h"
#include "dataplane/http/http_util.h"
#include "dataplane/server/worker.h"

namespace sluice::server {
namespace {

// Framed output kept queued on the socket before more is taken from the
// codec: the codec and nghttp2 hold the rest, bounded by flow control.
constexpr size_t kSocketWatermark = 256 * 1024;
constexpr size_t kTakeChunk = 64 * 1024;
constexpr uint32_t kInternalError = 0x2;  // RFC 9113 7
constexpr uint32_t kNoError = 0x0;
constexpr uint32_t kEnhanceYourCalm = 0xb;

}  // namespace

// One HTTP/2 stream: the exchange and the sink that frames its response.
class Http2Session::Stream : public DownstreamSink, public event::DeferredDeletable {
 public:
  Stream(Http2Session& session, int32_t id)
      : session_(session),
        id_(id),
        proxy_(session.worker_, *this, session.listener_, session.peer_ip_,
               session.connection_->transport()) {}

  // A finished stream, reset (RecycleBatch), serves `id` now.
  void Reuse(int32_t id) {
    id_ = id;
    read_enabled_ = true;
    unconsumed_ = 0;
    ended_ = false;
    tunnel_ = false;
  }

  ProxyStream& proxy() { return proxy_; }
  // An extended CONNECT (RFC 8441): its DATA are a WebSocket's bytes, its
  // END_STREAM a half-close.
  bool tunnel() const { return tunnel_; }
  void set_tunnel(bool tunnel) { tunnel_ = tunnel; }
  http::HeaderMap& request_headers() { return request_headers_; }
  // The request head's fields as views, for Start(); storage kept.
  std::vector<http::HeaderField>& request_fields() { return request_fields_; }

  // Request body bytes handed to the exchange: acknowledged to the client
  // (flow-control credit) only while the upstream keeps up.
  void Consumed(size_t n) {
    if (read_enabled_) {
      session_.codec_.ConsumeRequestData(id_, n);
    } else {
      unconsumed_ += n;
    }
  }

  // DownstreamSink
  void EncodeHeaders(const ResponseHead& head) override {
    // The fields go to the codec as the views they are; it checks (those
    // the HTTP/1 parser has not) and lower-cases them while it builds the
    // HEADERS frame.
    std::optional<uint64_t> content_length;
    bool end = false;
    switch (head.body) {
      case ResponseHead::Body::kNone:
        end = true;
        if (head.declared_length > 0 || (head.declared_length == 0 && !head.length_implied)) {
          content_length = static_cast<uint64_t>(head.declared_length);
        }
        break;
      case ResponseHead::Body::kLength:
        if (!head.length_implied || head.content_length != 0) {
          content_length = head.content_length;
        }
        end = head.content_length == 0;
        break;
      case ResponseHead::Body::kStream:
        break;
      case ResponseHead::Body::kTunnel: {
        // The upstream's 101 to an extended CONNECT: the tunnel is open,
        // which HTTP/2 says with a 200 (RFC 8441 5). Sec-WebSocket-Accept
        // answered the key the gateway made, not one the client sent.
        std::vector<http::HeaderField> fields;
        fields.reserve(head.headers->size());
        for (const http::HeaderField& f : *head.headers) {
          if (!http::EqualsIgnoreCase(f.name, "sec-websocket-accept")) fields.push_back(f);
        }
        session_.codec_.SubmitResponse(id_, 200, fields.data(), fields.size(), std::nullopt,
                                       false);
        session_.ScheduleFlush();
        session_.OnTunnelOpened();
        return;
      }
    }
    const std::vector<http::HeaderField>& fields = *head.headers;
    session_.codec_.SubmitResponse(id_, head.status, fields.data(), fields.size(),
                                   content_length, end, head.syntax_checked);
    ended_ = end;
    session_.ScheduleFlush();
  }
  void EncodeData(std::string_view data) override {
    if (ended_ || data.empty()) return;
    session_.codec_.SubmitData(id_, data, false);
    session_.ScheduleFlush();
  }
  void EncodeEnd(const std::vector<http::HeaderField>& trailers) override {
    if (ended_) return;
    ended_ = true;
    if (trailers.empty()) {
      session_.codec_.SubmitData(id_, {}, true);
    } else {
      session_.codec_.SubmitTrailers(id_, trailers.data(), trailers.size());
    }
    session_.ScheduleFlush();
  }
  void EncodeContinue() override {
    session_.codec_.SubmitResponse(id_, 100, nullptr, 0, std::nullopt, false);
    session_.ScheduleFlush();
  }
  void EncodeInformational(int status, const std::vector<http::HeaderField>& fields) override {
    session_.codec_.SubmitResponse(id_, status, fields.data(), fields.size(), std::nullopt, false);
    session_.ScheduleFlush();
  }
  void Abort() override {
    // Cut off mid-response: RST_STREAM tells this client; the others go on.
    session_.codec_.ResetStream(id_, kInternalError);
    session_.ScheduleFlush();
    session_.RemoveStream(id_);
  }
  void AbortLoss(bool* head_lost, size_t* bytes_lost) const override {
    session_.codec_.ResetLoss(id_, head_lost, bytes_lost);
  }
  size_t buffered_response_bytes() const override { return session_.codec_.QueuedBytes(id_); }
  void SetRequestReadEnabled(bool enabled) override {
    read_enabled_ = enabled;
    if (enabled && unconsumed_ > 0) {
      session_.codec_.ConsumeRequestData(id_, unconsumed_);
      unconsumed_ = 0;
      session_.ScheduleFlush();
    }
  }
  void OnStreamDone() override { session_.RemoveStream(id_); }
  size_t buffer_limit() const override { return session_.StreamBufferLimit(); }
  const std::shared_ptr<const config::ConfigSnapshot>& listener_snapshot() const override {
    return session_.listener_snapshot_;
  }

 private:
  Http2Session& session_;
  int32_t id_;
  http::HeaderMap request_headers_;  // owns what the request head's views point to
  std::vector<http::HeaderField> request_fields_;
  ProxyStream proxy_;
  bool read_enabled_ = true;
  size_t unconsumed_ = 0;
  bool tunnel_ = false;
  bool ended_ = false;  // the response's end went to the codec
};

// The streams that ended during one event loop iteration. It goes through
// the dispatcher's deferred deletion, as a finished stream used to itself,
// so that no stream is touched while it may be on the call stack; its
// destructor resets them for reuse (into the session's free list) or, when
// the session is gone or the list is full, frees them.
class Http2Session::RecycleBatch : public event::DeferredDeletable {
 public:
  explicit RecycleBatch(Http2Session* session) : session_(session) {}
  ~RecycleBatch() override {
    if (session_ != nullptr) session_->recycle_batch_ = nullptr;
    for (std::unique_ptr<Stream>& stream : streams_) {
      if (session_ == nullptr || session_->closed_ ||
          session_->free_streams_.size() >= kMaxFreeStreams) {
        continue;  // freed below
      }
      // What freeing the stream did first (a no-op once its exchange
      // ended), then the state of a new one, buffers kept.
      stream->proxy().OnDownstreamGone();
      stream->proxy().Reset();
      stream->request_headers().Clear();
      stream->request_fields().clear();
      session_->free_streams_.push_back(std::move(stream));
    }
    // A connection with no stream open keeps none spare unless it is busy
    // (then OnIdle drops them after kSpareHold), so an idle connection costs
    // what it did before streams were reused.
    if (session_ != nullptr && session_->streams_.empty() && !session_->Busy()) {
      session_->free_streams_.clear();
    }
  }

  void Add(std::unique_ptr<Stream> stream) { streams_.push_back(std::move(stream)); }
  // The session is being destroyed: the streams are just freed.
  void Detach() { session_ = nullptr; }

 private:
  Http2Session* session_;
  std::vector<std::unique_ptr<Stream>> streams_;
};

Http2Session::Http2Session(Worker& worker, std::unique_ptr<net::Connection> connection,
                           std::string listener, std::string peer_ip,
                           const Http2SessionOptions& options)
    : worker_(worker),
      connection_(std::move(connection)),
      listener_(std::move(listener)),
      peer_ip_(std::move(peer_ip)),
      options_(options),
      codec_(this, options.limits),
      idle_timer_(worker.dispatcher(), [this] { OnIdle(); }) {}

Http2Session::~Http2Session() {
  if (flush_scheduled_) worker_.dispatcher().CancelFlush(this);
  for (auto& [id, stream] : streams_) stream->proxy().OnDownstreamGone();
  streams_.clear();
  if (recycle_batch_ != nullptr) recycle_batch_->Detach();
}

void Http2Session::Start() {
  connection_->SetCallbacks(this);
  connection_->SetReadEnabled(true);
  worker_.stats().downstream_http2_connections->Inc();
  ArmIdleTimer();
  if (options_.max_connection_age > absl::ZeroDuration()) {
    age_timer_ = std::make_unique<event::Timer>(worker_.dispatcher(), [this] {
      StartDrain();
      EndTunnels("max_connection_age");
    });
    age_timer_->Enable(options_.max_connection_age);
  }
  Flush();  // the server preface goes first
  if (!closed_ && !connection_->input().empty()) OnReadable();
}

Http2Session::Stream* Http2Session::Find(int32_t stream_id) {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? nullptr : it->second.get();
}

void Http2Session::RemoveStream(int32_t stream_id) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return;
  // The stream may be on the call stack (its exchange just finished): it is
  // recycled (or freed) after the current callback.
  if (recycle_batch_ == nullptr) {
    auto batch = std::make_unique<RecycleBatch>(this);
    recycle_batch_ = batch.get();
    worker_.dispatcher().DeferredDelete(std::move(batch));
  }
  recycle_batch_->Add(std::move(it->second));
  streams_.erase(it);
  if (streams_.empty() && !closed_) ArmIdleTimer();
}

std::unique_ptr<Http2Session::Stream> Http2Session::NewStream(int32_t stream_id) {
  if (free_streams_.empty()) return std::make_unique<Stream>(*this, stream_id);
  std::unique_ptr<Stream> stream = std::move(free_streams_.back());
  free_streams_.pop_back();
  stream->Reuse(stream_id);
  return stream;
}

void Http2Session::ScheduleFlush() {
  if (flush_scheduled_ || closed_) return;
  flush_scheduled_ = true;
  worker_.dispatcher().ScheduleFlush(this);
}

void Http2Session::ArmIdleTimer() {
  holding_spares_ = Busy() && kSpareHold < options_.idle_timeout;
  idle_timer_.Set(holding_spares_ ? kSpareHold : options_.idle_timeout);
}

void Http2Session::ReleaseIdleMemory() {
  connection_->ReleaseIdleBuffers();
  codec_.ReleaseIdleMemory();  // nghttp2's frame buffer, the codec's stream table
  // The stream table keeps the capacity of the most streams it held.
  if (streams_.empty() && streams_.capacity() > 0) {
    absl::flat_hash_map<int32_t, std::unique_ptr<Stream>>().swap(streams_);
  }
}

void Http2Session::OnIdle() {
  if (closed_) return;
  if (!streams_.empty()) return;
  free_streams_.clear();  // an idle connection keeps no stream
  if (holding_spares_ && !draining_) {
    // A busy connection has had no stream open for kSpareHold: it gives its
    // spares and buffers back and waits out the rest of the idle timeout.
    holding_spares_ = false;
    if (!codec_.WantsWrite()) ReleaseIdleMemory();
    idle_timer_.Set(options_.idle_timeout - kSpareHold);
    return;
  }
  holding_spares_ = false;
  if (draining_) {
    // The client did not finish the graceful close in time: the final
    // GOAWAY (if still due) says which streams were processed, then close.
    codec_.Shutdown(kNoError);
    Flush();
    if (!closed_) CloseNow();
    return;
  }
  // No stream for the idle timeout: GOAWAY, then close once it is through
  // (or after a short grace).
  draining_ = true;
  BeginShutdown();
  idle_timer_.Set(absl::Seconds(1));
  Flush();
}

void Http2Session::BeginShutdown() {
  codec_.Shutdown(kNoError);
  // A client that never answers the PING (RFC 9113 requires it to) would
  // otherwise keep the connection past max_requests_per_connection,
  // max_connection_age or a listener's removal, opening streams forever.
  if (final_goaway_timer_ == nullptr) {
    final_goaway_timer_ = std::make_unique<event::Timer>(worker_.dispatcher(), [this] {
      if (closed_) return;
      codec_.Shutdown(kNoError);  // the final GOAWAY, unless already sent
      Flush();
    });
  }
  final_goaway_timer_->Enable(kFinalGoawayWait);
}

template <typename F>
void Http2Session::EndEachStream(F end) {
  std::vector<int32_t> ids;
  ids.reserve(streams_.size());
  for (const auto& [id, stream] : streams_) ids.push_back(id);
  for (int32_t id : ids) {
    auto it = streams_.find(id);
    if (it != streams_.end()) end(it->second->proxy());
  }
}

void Http2Session::EndStreamsAtDrainDeadline() {
  EndEachStream([](ProxyStream& proxy) { proxy.EndAtDrainDeadline(); });
}

size_t Http2Session::HeldResponseBytes() const {
  size_t held = connection_->output_size();
  for (const auto& [id, stream] : streams_) held += codec_.QueuedBytes(id);
  return held;
}

void Http2Session::ShedForOverload() {
  if (closed_) return;
  for (auto& [id, stream] : streams_) stream->proxy().SetResponseFlagIfUnset("overload");
  // GOAWAY says why, if the client reads it; the close does not wait for it.
  codec_.Shutdown(kEnhanceYourCalm);
  codec_.Shutdown(kEnhanceYourCalm);
  Flush();
  CloseNow();
}

void Http2Session::StartDrain() {
  if (closed_ || draining_) return;
  draining_ = true;
  BeginShutdown();
  if (streams_.empty()) {
    holding_spares_ = false;
    idle_timer_.Set(absl::Seconds(1));
  }
  // From inside Receive() (max_requests reached by a new stream) the codec
  // cannot be drained: OnReadable() flushes once Receive() returns.
  if (!in_receive_) Flush();
}

size_t Http2Session::StreamBufferLimit() const {
  // 100 streams of 1 MiB each way were 160 MB or more per connection for
  // a client that opens them and never reads (nginx keeps a request's
  // upstream buffering near 64 KiB): the session's budget is shared.
  constexpr size_t kSessionBudget = size_t{8} << 20;
  constexpr size_t kMinPerStream = size_t{64} << 10;
  constexpr size_t kMaxPerStream = size_t{1} << 20;
  const size_t streams = std::max<size_t>(1, streams_.size());
  return std::clamp(kSessionBudget / streams, kMinPerStream, kMaxPerStream);
}

void Http2Session::OnRequestHeadersTooLarge(int32_t /*stream_id*/, ReplyFields* reply) {
  // Counted as HTTP/1's 431 is: a protocol error, and a stream.
  worker_.stats().downstream_protocol_errors->Inc();
  worker_.stats().downstream_http2_streams->Inc();
  std::string request_id;
  if (reply == nullptr) {
    // More than twice over (an HPACK bomb, say): reset with
    // ENHANCE_YOUR_CALM, not answered; logged with status 0.
    worker_.NewRequestId(&request_id);
    accesslog::Entry e;
    e.request_id = request_id;
    e.client_ip = peer_ip_;
    e.peer_ip = net::DirectPeer(connection_->transport());
    e.protocol = "HTTP/2";
    e.status = 0;
    RecordPreStreamAnswer(worker_, listener_, connection_->transport().tls_info(), e);
    return;
  }
  worker_.NewRequestId(&reply->request_id);
  reply->date = std::string(worker_.HttpDate());
  worker_.stats().downstream_responses_by_class[4]->Inc();
  accesslog::Entry e;
  e.request_id = reply->request_id;
  e.client_ip = peer_ip_;
  e.peer_ip = net::DirectPeer(connection_->transport());
  e.protocol = "HTTP/2";
  e.status = 431;
  // As HTTP/1's 431 is logged: what names the request, and the body sent.
  if (reply->pseudo != nullptr) {
    e.method = reply->pseudo->method;
    e.authority = reply->pseudo->authority;
    e.path = reply->pseudo->path;
  }
  e.user_agent = reply->user_agent;
  if (reply->grpc) {
    e.grpc_status = 8;  // RESOURCE_EXHAUSTED, as gRPC's own metadata limit
  } else {
    e.bytes_out = http::Http2ServerCodec::HeadersTooLargeBody(reply->request_id).size();
  }
  RecordPreStreamAnswer(worker_, listener_, connection_->transport().tls_info(), e);
}

void Http2Session::OnRequestMalformed(int32_t /*stream_id*/, const http::RequestPseudo& pseudo,
                                      const http::HeaderMap& headers) {
  worker_.stats().downstream_protocol_errors->Inc();
  worker_.stats().downstream_http2_streams->Inc();
  std::string request_id;
  worker_.NewRequestId(&request_id);
  accesslog::Entry e;
  e.request_id = request_id;
  e.client_ip = peer_ip_;
  e.peer_ip = net::DirectPeer(connection_->transport());
  e.protocol = "HTTP/2";
  e.method = pseudo.method;
  e.path = pseudo.path;
  e.authority = pseudo.authority;
  if (const std::string* host = headers.Get("host"); e.authority.empty() && host != nullptr) {
    e.authority = *host;
  }
  if (const std::string* ua = headers.Get("user-agent")) e.user_agent = *ua;
  const std::string* traceparent = headers.Get("traceparent");
  e.status = 0;  // reset (RST_STREAM PROTOCOL_ERROR), not answered
  RecordPreStreamAnswer(worker_, listener_, connection_->transport().tls_info(), e,
                        traceparent != nullptr ? std::string_view(*traceparent) : std::string_view());
}

void Http2Session::OnSnapshotChanged(
    const std::shared_ptr<const config::ConfigSnapshot>& previous) {
  if (worker_.snapshot()->listeners.count(listener_)) {
    // Made under TLS rules its listener no longer has, or on an address it
    // left: drained (GOAWAY), its streams ended at the deadline. Limits
    // copied at accept changed: drained, its streams run on.
    if (config::ListenerAccessChanged(previous.get(), *worker_.snapshot(), listener_)) {
      StartListenerDrain("listener_tls_changed");
    } else if (config::ListenerMoved(previous.get(), *worker_.snapshot(), listener_)) {
      StartListenerDrain("listener_moved");
    } else if (config::ListenerConnectionRulesChanged(previous.get(), *worker_.snapshot(),
                                                      listener_)) {
      StartDrain();
    }
    return;
  }
  if (listener_snapshot_ == nullptr && previous != nullptr && previous->listeners.count(listener_)) {
    listener_snapshot_ = previous;
  }
  StartListenerDrain("listener_removed");
}

void Http2Session::EndTunnels(std::string_view flag) {
  if (closed_) return;
  if (end_tunnels_flag_.empty()) end_tunnels_flag_ = flag;
  if (end_tunnels_timer_ == nullptr) {
    end_tunnels_timer_ = std::make_unique<event::Timer>(worker_.dispatcher(), [this] {
      if (closed_) return;
      // EndTunnel leaves the streams that are no WebSocket alone.
      EndEachStream([this](ProxyStream& proxy) { proxy.EndTunnel(end_tunnels_flag_); });
      if (!closed_) Flush();
    });
  }
  end_tunnels_timer_->Enable(absl::ZeroDuration());
}

void Http2Session::OnTunnelOpened() {
  if (!end_tunnels_flag_.empty()) EndTunnels(end_tunnels_flag_);
}

void Http2Session::StartListenerDrain(std::string_view flag) {
  StartDrain();
  EndTunnels(flag);
  if (closed_ || listener_drain_timer_ != nullptr) return;
  listener_drain_timer_ = std::make_unique<event::Timer>(worker_.dispatcher(), [this, flag] {
    if (closed_) return;
    EndEachStream(
        [flag](ProxyStream& proxy) { proxy.EndAtDrainDeadline(kListenerDrainWhy, flag); });
    if (!closed_) Flush();
  });
  listener_drain_timer_->Enable(ListenerDrain::timeout());
}

void Http2Session::OnReadable() {
  if (closed_) return;
  net::Buffer& input = connection_->input();
  if (input.empty()) return;
  in_receive_ = true;
  bool ok = codec_.Receive(input.view());
  in_receive_ = false;
  if (closed_) return;
  input.Drain(input.size());
  if (!ok) {
    worker_.stats().downstream_protocol_errors->Inc();
    worker_.stats().DownstreamHttp2ConnectionError(codec_.error_kind())->Inc();
    SLUICE_LOG(kDebug, "HTTP/2 connection error from ", peer_ip_, ": ", codec_.error());
  }
  WatchHeaderBlock();
  Flush();
}

void Http2Session::WatchHeaderBlock() {
  if (!codec_.head_pending()) {
    if (head_timer_ != nullptr) head_timer_->Clear();
    return;
  }
  if (head_timer_ == nullptr) {
    head_timer_ = std::make_unique<event::DeadlineTimer>(worker_.dispatcher(),
                                                         [this] { OnHeaderBlockTimeout(); });
  }
  // From the head's first byte: a client that trickles it is not given more
  // time with each byte.
  if (!head_timer_->set()) {
    head_timer_->Set(options_.request_headers_timeout, /*shared_duration=*/true);
  }
}

void Http2Session::OnHeaderBlockTimeout() {
  if (closed_ || !codec_.head_pending()) return;
  worker_.stats().downstream_protocol_errors->Inc();
  worker_.stats().DownstreamHttp2ConnectionError("header_timeout")->Inc();
  SLUICE_LOG(kDebug, "HTTP/2 frame header or header block from ", peer_ip_,
             " not received whole within ",
             absl::FormatDuration(options_.request_headers_timeout), ": GOAWAY, closed");
  // The final GOAWAY at once (the second call skips the PING round trip):
  // the streams it does not cover, the stalled one included, were not
  // processed. Then the connection closes; no more input can be decoded.
  draining_ = true;
  codec_.Shutdown(kNoError);
  codec_.Shutdown(kNoError);
  Flush();
  if (!closed_) CloseAfterOutput();
}

void Http2Session::OnWriteDrained() { Flush(); }

void Http2Session::Flush() {
  if (flush_scheduled_) {
    worker_.dispatcher().CancelFlush(this);
    flush_scheduled_ = false;
  }
  if (closed_) return;
  // The frames pass through the worker's scratch buffer (taken, so that a
  // Flush nested in a codec callback gets a fresh one).
  static thread_local std::string scratch;
  std::string out = std::move(scratch);
  while (codec_.WantsWrite() && connection_->output_size() < kSocketWatermark) {
    out.clear();
    codec_.TakeOutput(&out, kTakeChunk);
    if (out.empty()) break;
    connection_->Write(out);
  }
  out.clear();
  scratch = std::move(out);
  if (closed_) return;
  // Idle (no stream, nothing to send): the connection gives its buffers back
  // (a busy one after kSpareHold, in OnIdle). Not while bytes wait to be
  // read (the server preface's flush in Start(), before the client's first
  // bytes are handled): its requests would touch the pages again at once.
  if (streams_.empty() && !codec_.WantsWrite() && !Busy() && connection_->input().empty()) {
    ReleaseIdleMemory();
  }
  // GOAWAY sent and every stream done (or a connection error): close once
  // the last frames are written.
  if (!codec_.WantsRead() && !codec_.WantsWrite()) CloseAfterOutput();
}

void Http2Session::CloseAfterOutput() {
  closed_ = true;
  idle_timer_.Clear();
  if (head_timer_ != nullptr) head_timer_->Clear();
  for (auto& [id, stream] : streams_) stream->proxy().OnDownstreamGone();
  for (auto& [id, stream] : streams_) worker_.dispatcher().DeferredDelete(std::move(stream));
  streams_.clear();
  if (connection_->CloseAfterFlush()) {
    closed_ = false;  // let CloseNow do the rest
    CloseNow();
  }
}

void Http2Session::OnClosed(net::CloseReason, int) {
  closed_ = false;
  CloseNow();
}

void Http2Session::CloseNow() {
  if (closed_) return;
  closed_ = true;
  idle_timer_.Clear();
  if (head_timer_ != nullptr) head_timer_->Clear();
  if (flush_scheduled_) {
    worker_.dispatcher().CancelFlush(this);
    flush_scheduled_ = false;
  }
  for (auto& [id, stream] : streams_) stream->proxy().OnDownstreamGone();
  for (auto& [id, stream] : streams_) worker_.dispatcher().DeferredDelete(std::move(stream));
  streams_.clear();
  connection_->Close();
  worker_.RemoveConnection(this);
}

void Http2Session::OnRequestHeaders(int32_t stream_id, http::RequestPseudo pseudo,
                                    http::HeaderMap headers, bool end_stream) {
  idle_timer_.Clear();
  ++streams_opened_;
  if (options_.max_requests > 0 && streams_opened_ >= options_.max_requests) {
    StartDrain();  // GOAWAY: this stream is served, the client goes on elsewhere
  }
  worker_.stats().downstream_http2_streams->Inc();
  std::unique_ptr<Stream> owned = NewStream(stream_id);
  Stream* stream = owned.get();
  streams_[stream_id] = std::move(owned);
  stream->request_headers() = std::move(headers);
  std::vector<http::HeaderField>& fields = stream->request_fields();
  fields.clear();
  fields.reserve(stream->request_headers().size());
  const std::string* content_length = nullptr;
  const std::string* expect = nullptr;
  const std::string* host = nullptr;
  for (const http::HeaderMap::Field& f : stream->request_headers().fields()) {
    fields.push_back({f.name, f.value});
    if (f.name == "content-length") content_length = &f.value;
    if (f.name == "expect") expect = &f.value;
    if (f.name == "host") host = &f.value;
  }
  RequestHead head;
  head.http2 = true;
  head.connection_names = false;  // nghttp2 refuses a request with Connection
  head.method = pseudo.method;
  // RFC 8441: a WebSocket opened as a stream is, to the routes, the
  // policies and an HTTP/1.1 upstream, the GET with an upgrade an HTTP/1.1
  // client sends. nghttp2 has checked :scheme, :path and :authority. Another
  // :protocol stays a CONNECT (405).
  const bool websocket =
      pseudo.method == "CONNECT" && absl::EqualsIgnoreCase(pseudo.protocol, "websocket");
  if (websocket) {
    head.method = "GET";
    head.upgrade = true;
    head.extended_connect = true;
    stream->set_tunnel(true);
  }
  head.target = pseudo.path;
  head.scheme = pseudo.scheme;
  // :authority wins over a Host field (RFC 9113 8.3.1) and is what the
  // upstream gets as Host.
  if (!pseudo.authority.empty()) {
    head.authority = pseudo.authority;
    head.authority_from_target = true;
  } else if (host != nullptr) {
    head.authority = *host;
  }
  head.headers = &fields;
  uint64_t length = 0;
  if (end_stream) {
    // No body. An HTTP/1 upstream is still told its length, 0, when the
    // client gave one or the method defines content (RFC 9110 8.6: "a user
    // agent normally sends Content-Length in a POST request even when the
    // value is 0"; a server may answer 411 without): an h2 client need not
    // send one, and Go's sends content-length: 0 with END_STREAM on HEADERS.
    const bool zero = content_length != nullptr &&
                      absl::SimpleAtoi(*content_length, &length) && length == 0;
    if (zero || pseudo.method == "POST" || pseudo.method == "PUT" || pseudo.method == "PATCH") {
      head.body = RequestHead::Body::kLength;
      head.content_length = 0;
    } else {
      head.body = RequestHead::Body::kNone;
    }
  } else if (websocket) {
    head.body = RequestHead::Body::kNone;  // the stream's DATA are the tunnel's
  } else if (content_length != nullptr && absl::SimpleAtoi(*content_length, &length)) {
    head.body = RequestHead::Body::kLength;
    head.content_length = length;
  } else {
    head.body = RequestHead::Body::kStream;
  }
  // A list (RFC 9110 10.1.1): 100-continue may be one member.
  head.expect_continue = false;
  if (expect != nullptr) {
    for (absl::string_view member : absl::StrSplit(*expect, ',')) {
      member = absl::StripAsciiWhitespace(member);
      if (absl::EqualsIgnoreCase(member, "100-continue")) head.expect_continue = true;
    }
  }
  // A new stream, or a reused one that RecycleBatch has reset.
  stream->proxy().Start(head);
  if (Find(stream_id) != stream) return;
  if (websocket) {
    // Its request is whole (the route timer bounds the handshake); an
    // END_STREAM here ends the tunnel as soon as it opens.
    stream->proxy().OnRequestEnd({});
    if (end_stream && Find(stream_id) == stream) stream->proxy().OnTunnelClientEnd();
    return;
  }
  if (end_stream) stream->proxy().OnRequestEnd({});
}

void Http2Session::OnRequestData(int32_t stream_id, std::string_view data, bool end_stream) {
  Stream* stream = Find(stream_id);
  if (stream == nullptr) {
    codec_.ConsumeRequestData(stream_id, data.size());  // answered already: drop
    return;
  }
  if (!data.empty()) {
    stream->proxy().OnRequestData(data);
    if (Find(stream_id) != stream) return;
    stream->Consumed(data.size());
  }
  if (!end_stream) return;
  if (stream->tunnel()) {
    stream->proxy().OnTunnelClientEnd();
  } else {
    stream->proxy().OnRequestEnd({});
  }
}

void Http2Session::OnRequestTrailers(int32_t stream_id, http::HeaderMap trailers) {
  Stream* stream = Find(stream_id);
  if (stream == nullptr) return;
  if (stream->tunnel()) {
    stream->proxy().OnTunnelClientEnd();  // a tunnel has no trailers to pass on
    return;
  }
  stream->proxy().OnRequestEnd(trailers.Views());
}

void Http2Session::OnStreamReset(int32_t stream_id, uint32_t error_code) {
  Stream* stream = Find(stream_id);
  if (stream == nullptr) return;
  if (error_code != kNoError) {
    SLUICE_LOG(kDebug, "HTTP/2 stream ", stream_id, " from ", peer_ip_, " reset, code ",
               error_code);
  }
  stream->proxy().OnDownstreamGone();
  RemoveStream(stream_id);
}

void Http2Session::OnStreamProtocolError(int32_t stream_id, uint32_t error_code) {
  Stream* stream = Find(stream_id);
  if (stream == nullptr) return;
  // Not a client that gave up: one that broke the protocol (counted and
  // logged as the malformed requests caught in their head are).
  worker_.stats().downstream_protocol_errors->Inc();
  SLUICE_LOG(kDebug, "HTTP/2 stream ", stream_id, " from ", peer_ip_,
             " broke the protocol, reset with code ", error_code);
  stream->proxy().SetResponseFlagIfUnset("bad_request");
}

bool Http2Session::ClientResetIsPremature(int32_t stream_id) {
  Stream* stream = Find(stream_id);
  return stream == nullptr || stream->proxy().ResetIsPremature(absl::Now());
}

void Http2Session::OnStreamWritable(int32_t stream_id) {
  if (Stream* stream = Find(stream_id)) stream->proxy().OnDownstreamDrained();
}

}  // namespace sluice::server
