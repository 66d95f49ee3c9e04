#include "dataplane/server/downstream_connection.h"

#include <limits>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "dataplane/http/http_util.h"
#include "dataplane/net/socket.h"
#include "dataplane/server/worker.h"

namespace sluice::server {
namespace {

using http::AppendHeader;

http::Http1Parser::Limits ParserLimits(const config::ListenerRuntime& listener) {
  http::Http1Parser::Limits limits;
  limits.max_head_bytes = listener.max_request_headers_bytes;
  limits.max_headers = listener.max_request_headers;
  // Trailers are a header section too: the same bound as the head's, as
  // for HTTP/2 (before: a fixed 16 KiB whatever the listener said).
  limits.max_trailer_bytes = listener.max_request_headers_bytes;
  return limits;
}

}  // namespace

DownstreamConnection::DownstreamConnection(Worker& worker, int fd,
                                           const config::ListenerRuntime& listener,
                                           std::unique_ptr<net::TransportSocket> transport,
                                           std::string peer_ip, bool peer_is_local)
    : worker_(worker),
      connection_(std::make_unique<net::Connection>(worker.dispatcher(), fd, false,
                                                    std::move(transport))),
      listener_name_(listener.name),
      peer_ip_(std::move(peer_ip)),
      request_headers_timeout_ns_(ToNanos(listener.request_headers_timeout)),
      idle_timeout_ns_(ToNanos(listener.idle_timeout)),
      parser_(http::Http1Parser::Mode::kRequest, this, ParserLimits(listener)),
      timer_(worker.dispatcher(), [this] { OnDownstreamTimer(); }),
      secure_(static_cast<bool>(listener.tls)) {
  max_requests_ = listener.max_requests_per_connection;
  if (listener.max_connection_age > absl::ZeroDuration()) {
    age_timer_ = std::make_unique<event::Timer>(worker.dispatcher(), [this] {
      // Old enough: the next response closes it; an idle one gets a short
      // grace for a request already on its way, then closes; a WebSocket,
      // which has no next response, is ended now.
      drain_requested_ = true;
      soft_drain_ = false;
      end_tunnel_reason_ = "max_connection_age";  // a WebSocket, now or once it opens
      if (tunnel_) {
        EndTunnel(end_tunnel_reason());
        return;
      }
      if (idle()) ArmIdleTimer();
    });
    age_timer_->Enable(listener.max_connection_age);
  }
  connection_->SetCallbacks(this);
  connection_->SetPeerIsLocal(peer_is_local);
  if (listener.tls || listener.proxy_protocol) {
    // The handshake (a PROXY header, TLS) must be done within the
    // request-head timeout.
    timer_is_head_ = true;
    timer_.Set(request_headers_timeout(), /*shared_duration=*/true);
  } else {
    ArmIdleTimer();
  }
}

DownstreamConnection::~DownstreamConnection() {
  // Still open as the worker stops (the drain timeout): a body delimited by
  // the close is cut, so it must not end with a FIN (see Abort()).
  if (!closed_ && stream_in_use_ && response_by_close_ && connection_ != nullptr) {
    connection_->Reset();
  }
  // The stream releases its upstream connection (if any) as it goes.
  if (stream_ != nullptr) worker_.ReturnStream(std::move(stream_));
}

void DownstreamConnection::OnConnected() {
  const net::TransportSocket& transport = connection_->transport();
  if (const net::ProxyHeaderState* header = transport.proxy_header();
      header != nullptr && !header->source.empty()) {
    peer_ip_ = header->source;  // the client a balancer in front names
  }
  const net::TlsInfo* tls = transport.tls_info();
  if (transport.secure()) worker_.stats().downstream_tls_handshakes->Inc();
  if (tls != nullptr && tls->resumed) worker_.stats().downstream_tls_resumptions->Inc();
  if (tls != nullptr && tls->alpn == "h2") {
    SwitchToHttp2();
    return;
  }
  // Handshake done: from here the connection is idle until its first
  // request starts (then the request-head timeout runs again).
  if (!stream_in_use_ && connection_->input().empty()) ArmIdleTimer();
}

namespace {

// The session's settings, read from the listener when the connection turns
// to HTTP/2 rather than kept by every HTTP/1 connection from its accept (104
// bytes each): a change of them since drains the connection anyway.
Http2SessionOptions Http2OptionsOf(const config::ListenerRuntime& listener) {
  Http2SessionOptions options;
  options.limits.max_concurrent_streams = listener.http2_max_concurrent_streams;
  options.limits.initial_window_size = listener.http2_initial_stream_window;
  options.limits.enable_connect_protocol = listener.http2_websocket;
  // What a stream's client may send ahead of its upstream taking it: the
  // window the listener advertises, and no more (a 1 MiB floor made a
  // smaller window bound nothing).
  options.limits.max_request_body_buffer = listener.http2_initial_stream_window;
  options.limits.max_header_list_bytes = static_cast<uint32_t>(listener.max_request_headers_bytes);
  options.limits.max_trailer_fields = static_cast<uint32_t>(listener.max_request_headers);
  options.idle_timeout = listener.idle_timeout;
  options.request_headers_timeout = listener.request_headers_timeout;
  options.max_requests = listener.max_requests_per_connection;
  options.max_connection_age = listener.max_connection_age;
  return options;
}

}  // namespace

void DownstreamConnection::SwitchToHttp2() {
  // Its listener: the one it came in on, kept with the last config that had
  // it once a newer one removed it.
  const config::ConfigSnapshot& config =
      listener_snapshot_ != nullptr ? *listener_snapshot_ : *worker_.snapshot();
  auto listener = config.listeners.find(listener_name_);
  if (listener == config.listeners.end()) {
    CloseNow();  // not reached: listener_snapshot_ has it once it is gone
    return;
  }
  timer_.Clear();
  if (resume_timer_) resume_timer_->Disable();
  closed_ = true;  // this object is done: the session owns the connection now
  auto* session = new Http2Session(worker_, std::move(connection_), listener_name_, peer_ip_,
                                   Http2OptionsOf(listener->second));
  // A drain asked for during the handshake (the listener removed or its TLS
  // rules changed, the worker's drain) carries over: the session would
  // otherwise serve on under the rules the connection no longer meets.
  const bool drain = drain_requested_;
  if (listener_snapshot_ != nullptr) session->KeepListenerSnapshot(listener_snapshot_);
  worker_.ReplaceConnection(this, session);  // `this` is deleted after the loop iteration
  session->Start();
  if (drain) session->StartDrain();
}

bool DownstreamConnection::idle() const {
  return !stream_in_use_ && !parser_.in_message() && connection_->input().empty();
}

void DownstreamConnection::EndStreamsAtDrainDeadline() {
  if (stream_in_use_ && !closed_) stream_->EndAtDrainDeadline();
}

size_t DownstreamConnection::HeldResponseBytes() const {
  return closed_ ? 0 : connection_->output_size();
}

void DownstreamConnection::ShedForOverload() {
  if (closed_) return;
  if (stream_in_use_) stream_->SetResponseFlagIfUnset("overload");
  CloseNow();
}

void DownstreamConnection::StartDrain() {
  drain_requested_ = true;
  soft_drain_ = false;
  // An idle keep-alive connection is not closed at once: a client may be
  // sending its next request right now, and would see a reset. It gets a
  // short grace; a request that comes in it is answered with
  // Connection: close.
  if (idle()) ArmIdleTimer();
}

void DownstreamConnection::OnSnapshotChanged(
    const std::shared_ptr<const config::ConfigSnapshot>& previous) {
  if (worker_.snapshot()->listeners.count(listener_name_)) {
    // Its listener now lets in others, or fewer (TLS added or removed, a
    // client CA or the client certificate rule changed, versions, ciphers):
    // the connection, made under the old rules, is drained.
    if (config::ListenerAccessChanged(previous.get(), *worker_.snapshot(), listener_name_)) {
      end_tunnel_reason_ = "listener_tls_changed";
    } else if (config::ListenerMoved(previous.get(), *worker_.snapshot(), listener_name_)) {
      end_tunnel_reason_ = "listener_moved";
    } else if (config::ListenerConnectionRulesChanged(previous.get(), *worker_.snapshot(),
                                                      listener_name_)) {
      // Limits copied at accept changed: the next response closes it, and
      // the client's next connection has them. An idle one is not closed
      // after the 1 s grace (a client reusing it then would race the
      // close: about one request in 50 failed with clients that do not
      // check a pooled connection): its own idle timeout ends it, as it
      // would have without the change. A WebSocket runs on.
      if (!tunnel_ && !drain_requested_) {
        drain_requested_ = true;
        soft_drain_ = true;
      }
      return;
    } else {
      return;
    }
    if (tunnel_) {
      EndTunnel(end_tunnel_reason());
      return;
    }
    StartListenerDrain();
    return;
  }
  if (listener_snapshot_ == nullptr && previous != nullptr &&
      previous->listeners.count(listener_name_)) {
    listener_snapshot_ = previous;
  }
  // Its listener is gone: a WebSocket, which has no next response to end
  // it, is ended now (it would run on for as long as its peers talk), or
  // right after its 101 when its handshake is under way.
  end_tunnel_reason_ = "listener_removed";
  if (tunnel_) {
    EndTunnel(end_tunnel_reason());
    return;
  }
  StartListenerDrain();
}

void DownstreamConnection::StartListenerDrain() {
  StartDrain();
  if (closed_ || listener_drain_timer_ != nullptr) return;
  // A response under way (a long download, a server-sent event stream)
  // ends at the deadline, as at a SIGTERM drain's: else it outlived the
  // rules it came in under.
  listener_drain_timer_ = std::make_unique<event::Timer>(worker_.dispatcher(), [this] {
    if (stream_in_use_ && !closed_) {
      stream_->EndAtDrainDeadline(kListenerDrainWhy, end_tunnel_reason());
    }
  });
  listener_drain_timer_->Enable(ListenerDrain::timeout());
}

void DownstreamConnection::EndTunnel(std::string_view why) {
  if (closed_ || closing_) return;
  SLUICE_LOG(kDebug, "WebSocket from ", peer_ip_, " ended: ", std::string(why));
  if (stream_in_use_) {
    stream_->SetResponseFlagIfUnset(why);
    stream_in_use_ = false;
    stream_->OnDownstreamGone();  // the upstream side closes
  }
  CloseOnceWritten();  // what was written (a 101) still goes out
}

void DownstreamConnection::ArmIdleTimer() {
  timer_is_head_ = false;
  if (worker_.draining() || (drain_requested_ && !soft_drain_)) {
    // Draining: a connection that sends nothing more is not waited for long.
    timer_.Set(std::min(idle_timeout(), absl::Seconds(1)));
    return;
  }
  timer_.Set(idle_timeout(), /*shared_duration=*/true);
}

void DownstreamConnection::OnDownstreamTimer() {
  if (tunnel_ && end_tunnel_reason_ != nullptr) {
    EndTunnel(end_tunnel_reason());
    return;
  }
  if (closed_ || stream_in_use_) return;
  if (closing_) {
    CloseNow();  // the last response was not taken within the idle timeout
    return;
  }
  if (!connection_->handshake_complete()) {
    if (drain_requested_ && !soft_drain_) {
      CloseNow();  // the proxy stops: no client's fault
      return;
    }
    if (const net::ProxyHeaderState* header = connection_->transport().proxy_header();
        header != nullptr && !header->done) {
      worker_.stats().downstream_proxy_protocol_errors->Inc();
      SLUICE_LOG(kDebug, "PROXY protocol header from ", peer_ip_, " on listener \"",
                 listener_name_, "\" not received within the request-head timeout");
    } else {
      worker_.stats().DownstreamTlsHandshakeError("timeout")->Inc();
      SLUICE_LOG(kDebug, "TLS handshake from ", peer_ip_, " on listener \"", listener_name_,
                 "\" not done within the request-head timeout");
    }
    CloseNow();
    return;
  }
  if (timer_is_head_ && !parser_.in_message() && connection_->input().empty()) {
    CloseBetweenMessages();  // connected, sent nothing
    return;
  }
  if (timer_is_head_ || parser_.in_message()) {
    // Logged with what the head said so far, as nginx logs it.
    parser_.SalvageRefusedRequest(connection_->input().view());
    SendSessionError(408, "request head not received in time");
    return;
  }
  CloseBetweenMessages();  // idle, or drained
}

void DownstreamConnection::CloseBetweenMessages() {
  if (closed_) return;
  connection_->CloseOrderly();
  CloseNow();
}

void DownstreamConnection::OnReadable() { ProcessInput(); }

void DownstreamConnection::ProcessInput() {
  if (closed_) return;
  net::Buffer& input = connection_->input();
  if (tunnel_) {
    // A WebSocket: the client's bytes go to the upstream as they are.
    if (stream_in_use_ && !input.empty()) {
      std::string_view bytes = input.view();
      size_t n = bytes.size();
      stream_->OnRequestData(bytes);
      if (!closed_) input.Drain(n);
    }
    // The client closed, or half-closed, while the upstream had not yet
    // switched: the tunnel ends as soon as the 101 is out, as a close after
    // it ends one (its upstream held a breaker slot and a socket until
    // websocket_idle_timeout, its application a client long gone). On the
    // next loop turn: what the client sent before it left, just handed on,
    // is written to the upstream first (ending now dropped it).
    if (peer_eof_ && stream_in_use_ && !closed_ && end_tunnel_reason_ == nullptr) {
      end_tunnel_reason_ = "client_closed";
      timer_.Set(absl::ZeroDuration());
    }
    return;
  }
  if (requests_ == 0 && !secure_ && !input.empty() && input.view()[0] == 'P') {
    // HTTP/2 with prior knowledge (h2c) starts with this preface. Over TLS
    // only ALPN chooses HTTP/2 (RFC 9113 3.3): there the preface is an
    // HTTP/1 request line of version 2.0, answered 505.
    static constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    std::string_view start = input.view().substr(0, kPreface.size());
    if (start == kPreface) {
      SwitchToHttp2();
      return;
    }
    if (kPreface.substr(0, start.size()) == start) {
      if (!timer_is_head_) {  // the rest of the preface must come in time
        timer_is_head_ = true;
        timer_.Set(request_headers_timeout(), /*shared_duration=*/true);
      }
      return;
    }
  }
  if (in_process_input_) {
    process_again_ = true;
    return;
  }
  in_process_input_ = true;
  do {
    process_again_ = false;
    // Once a response said Connection: close (closing_), nothing more is
    // read as requests: one answer per request (RFC 9112 9.6). Before, a
    // malformed body after a gateway's own answer got a second, 400 answer.
    while (!closed_ && !closing_ && !tunnel_ && !input.empty() && !parser_.paused()) {
      http::Http1Parser::Result result = parser_.Feed(input.view());
      if (closed_ || closing_) break;
      input.Drain(result.consumed);
      if (result.error != http::ParseError::kNone) {
        HandleParseError(result.error);
        break;
      }
      if (result.consumed == 0) break;  // an incomplete head: wait for more
    }
  } while (process_again_ && !closed_ && !closing_);
  in_process_input_ = false;
  if (closed_ || closing_ || tunnel_) return;
  if (!stream_in_use_ && !input.empty() && !timer_is_head_) {
    // A new request has begun arriving: the head must come in time.
    timer_is_head_ = true;
    timer_.Set(request_headers_timeout(), /*shared_duration=*/true);
    head_began_ns_ = absl::ToUnixNanos(absl::Now());
  }
  // Pipelined requests wait unparsed; do not let them pile up without bound.
  if (stream_in_use_ && parser_.paused() && input.size() > kHighWatermark) {
    connection_->SetReadEnabled(false);
  }
  // The client half-closed and every request it sent whole was answered:
  // what is left is a request cut short, or nothing.
  if (peer_eof_ && !stream_in_use_ && !awaiting_drain_) {
    RecordAbandonedHead();
    CloseOnceWritten();
  }
}

void DownstreamConnection::FillFromRefusedRequest(accesslog::Entry& e,
                                                  std::string_view* traceparent) const {
  const http::Http1Parser::RefusedRequest* refused = parser_.refused_request();
  if (refused == nullptr) return;
  e.method = refused->method;
  e.path = refused->target;
  e.protocol = refused->version_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
  e.authority = refused->host;
  e.user_agent = refused->user_agent;
  *traceparent = refused->traceparent;
}

void DownstreamConnection::RecordAbandonedHead() {
  if (abandoned_head_logged_ || stream_in_use_ || !parser_.in_message() || closing_) return;
  const std::string_view pending = connection_->input().view();
  if (pending.empty()) return;
  abandoned_head_logged_ = true;
  // Logged as nginx (400) and HAProxy (CR, <BADREQ>) log it: with what of
  // the head came whole (its request line, Host, User-Agent).
  parser_.SalvageRefusedRequest(pending);
  std::string request_id;
  worker_.NewRequestId(&request_id);
  accesslog::Entry e;
  e.start = head_began_ns_ != 0 ? absl::FromUnixNanos(head_began_ns_) : absl::Now();
  e.duration = absl::Now() - e.start;
  e.request_id = request_id;
  e.client_ip = peer_ip_;
  e.peer_ip = net::DirectPeer(connection_->transport());
  e.protocol = "HTTP/1.1";
  std::string_view traceparent;
  FillFromRefusedRequest(e, &traceparent);
  e.status = 0;  // nothing was answered
  e.response_flag = "client_closed";
  RecordPreStreamAnswer(worker_, listener_name_, connection_->transport().tls_info(), e,
                        traceparent);
}

void DownstreamConnection::HandleParseError(http::ParseError error) {
  worker_.stats().downstream_protocol_errors->Inc();
  SLUICE_LOG(kDebug, "bad request from ", peer_ip_, ": ", parser_.error_detail());
  int status = 400;
  std::string message;
  if (error == http::ParseError::kVersionNotSupported) {
    status = 505;
    message = parser_.error_detail();
  } else if (error == http::ParseError::kHeadersTooLarge) {
    status = 431;
    // Which bound: the count or the bytes.
    message = parser_.error_detail() == "too many header fields"
                  ? absl::StrCat("more than ", parser_.limits().max_headers,
                                 " header fields (the listener's http.max_request_headers)")
                  : std::string("request header section too large");
  } else if (error == http::ParseError::kRequestLineTooLong) {
    status = 414;
    message = "request line longer than the listener's http.max_request_headers_bytes";
  } else if (error == http::ParseError::kNotImplemented) {
    status = 501;
    message = parser_.error_detail();
  } else {
    message = absl::StrCat("malformed request: ", parser_.error_detail());
  }
  if (stream_in_use_) {
    // A broken body (or trailers): the exchange cannot go on. It answers
    // itself, so the access log has the answer the client got, with its
    // request id (it logged the exchange as status 0, client_closed, and
    // the 400 under another id nowhere).
    if (stream_->response_started()) {
      CloseNow();
      return;
    }
    stream_->RefuseBrokenRequest(status, message);
    if (stream_in_use_ && !closed_) {
      // Defensive: the answer did not end the exchange.
      stream_in_use_ = false;
      stream_->OnDownstreamGone();
      SendSessionError(status, message, nullptr, /*logged=*/true);
    }
    return;
  }
  SendSessionError(status, message, nullptr, /*logged=*/false);
}

void DownstreamConnection::OnHead(const http::MessageHead& head) {
  // One request at a time: the parser stops after this message.
  parser_.Pause();
  if (requests_ < std::numeric_limits<uint32_t>::max()) ++requests_;
  if (max_requests_ > 0 && requests_ >= max_requests_) close_after_response_ = true;
  request_message_open_ = true;
  timer_.Clear();
  timer_is_head_ = false;
  client_http10_ = head.version_minor == 0;
  if (!head.keep_alive) close_after_response_ = true;
  request_has_body_ = head.framing == http::BodyFraming::kChunked ||
                      (head.framing == http::BodyFraming::kContentLength && head.content_length > 0);
  // A response that comes before the body is read (a policy's 401 or 429)
  // need not end the connection when what is left of the body is small and
  // sure to come: it is read and dropped, and the next request is served.
  request_body_discardable_ = head.framing == http::BodyFraming::kContentLength &&
                              head.content_length <= kDiscardableBodyBytes &&
                              !head.expect_continue;
  response_chunked_ = false;
  response_by_close_ = false;

  RequestHead request;
  request.method = head.method;
  request.target = head.target;
  request.headers = &head.headers;
  if (const http::HeaderField* h = http::FindHeader(head.headers, "host")) request.authority = h->value;
  if (head.target == "*" && head.method != "OPTIONS") {
    SendSessionError(400, "the asterisk-form target is for OPTIONS only", &head);
    return;
  }
  if (!head.target.empty() && head.target[0] != '/' && head.method != "CONNECT" &&
      head.target != "*") {
    // absolute-form (RFC 9112 3.2.2): the target's authority wins over Host.
    size_t scheme_end = head.target.find("://");
    if (scheme_end == std::string_view::npos) {
      SendSessionError(400, "request target must be a path or an absolute URL", &head);
      return;
    }
    std::string_view scheme = head.target.substr(0, scheme_end);
    if (!http::EqualsIgnoreCase(scheme, "http") && !http::EqualsIgnoreCase(scheme, "https")) {
      SendSessionError(400, "request target: the scheme must be http or https", &head);
      return;
    }
    std::string_view rest = head.target.substr(scheme_end + 3);
    size_t end = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, end);
    // RFC 9110 4.2.1/4.2.4: an http(s) URI has a host, and userinfo in it is
    // an error; routing and forwarding use this one authority.
    if (!http::IsValidHostValue(authority)) {
      SendSessionError(400, "request target: invalid authority (an empty host, userinfo, or "
                            "characters a host cannot have)", &head);
      return;
    }
    request.authority = authority;
    request.authority_from_target = true;
    if (end == std::string_view::npos || rest[end] == '#') {
      // RFC 9112 3.2.4: an OPTIONS for a URI with an empty path and no query
      // asks about the server as a whole and goes on as "OPTIONS *".
      request.target = head.method == "OPTIONS" ? "*" : "/";
    } else if (rest[end] == '?') {
      if (absolute_target_ == nullptr) absolute_target_ = std::make_unique<std::string>();
      absolute_target_->assign("/");  // "http://host?q" is "/?q" on host
      absolute_target_->append(rest.substr(end));
      request.target = *absolute_target_;
    } else {
      request.target = rest.substr(end);
    }
  }
  switch (head.framing) {
    case http::BodyFraming::kChunked: request.body = RequestHead::Body::kStream; break;
    case http::BodyFraming::kContentLength:
      request.body = RequestHead::Body::kLength;
      request.content_length = head.content_length;
      break;
    default:
      // No body: a POST, PUT or PATCH still goes with Content-Length: 0, as
      // RFC 9110 8.6 has user agents send it (a server may answer 411
      // without), the same as one arriving over HTTP/2.
      if (head.method == "POST" || head.method == "PUT" || head.method == "PATCH") {
        request.body = RequestHead::Body::kLength;
        request.content_length = 0;
      } else {
        request.body = RequestHead::Body::kNone;
      }
      break;
  }
  request.expect_continue = head.expect_continue;
  request.upgrade = head.upgrade;
  request.connection_names = head.connection_names;
  request.http10 = client_http10_;
  if (stream_ == nullptr) {
    stream_ = worker_.TakeStream(*this, listener_name_, peer_ip_, connection_->transport());
  } else {
    stream_->Reset();  // kept since the last request: pipelined
  }
  stream_in_use_ = true;
  stream_->Start(request);
}

void DownstreamConnection::OnBody(std::string_view chunk) {
  if (stream_in_use_) stream_->OnRequestData(chunk);
}

void DownstreamConnection::OnChunkSize(uint64_t size) {
  if (stream_in_use_) stream_->OnRequestChunkDeclared(size);
}

void DownstreamConnection::OnTrailers(const std::vector<http::HeaderField>& trailers) {
  // Views into the fed bytes, valid until Feed returns: OnMessageComplete
  // follows in the same call.
  request_trailers_ = trailers;
}

void DownstreamConnection::OnMessageComplete() {
  request_message_open_ = false;
  if (stream_in_use_) stream_->OnRequestEnd(request_trailers_);
  request_trailers_.clear();
}

void DownstreamConnection::EncodeHeaders(const ResponseHead& head) {
  std::string out = worker_.TakeHeadScratch();
  out.append("HTTP/1.1 ");
  absl::StrAppend(&out, head.status);
  out.push_back(' ');
  out.append(head.reason.empty() ? http::ReasonPhrase(head.status) : head.reason);
  out.append("\r\n");
  // An HTTP/1.0 client gets a streamed body delimited by the close, which
  // has no trailer section: a Trailer field would announce fields that never
  // come (RFC 9110 6.6.2).
  const bool drop_trailer_field = client_http10_ && head.body == ResponseHead::Body::kStream;
  for (const http::HeaderField& f : *head.headers) {
    if (drop_trailer_field && http::EqualsIgnoreCase(f.name, "trailer")) continue;
    AppendHeader(&out, f.name, f.value);
  }
  if (head.close_connection || drain_requested_ || worker_.draining() ||
      (UnreadBodyEndsConnection() || (head.status == 413 && request_message_open_ &&
                                      request_has_body_))) {
    close_after_response_ = true;
  }
  switch (head.body) {
    case ResponseHead::Body::kNone:
      if (head.declared_length >= 0) {
        out.append("content-length: ");
        absl::StrAppend(&out, head.declared_length);
        out.append("\r\n");
      }
      break;
    case ResponseHead::Body::kLength:
      out.append("content-length: ");
      absl::StrAppend(&out, head.content_length);
      out.append("\r\n");
      break;
    case ResponseHead::Body::kStream:
      if (client_http10_) {
        close_after_response_ = true;  // HTTP/1.0 has no chunked coding: delimit by close
        response_by_close_ = true;
      } else {
        AppendHeader(&out, "transfer-encoding", "chunked");
        response_chunked_ = true;
      }
      break;
    case ResponseHead::Body::kTunnel:
      AppendHeader(&out, "connection", "upgrade");
      AppendHeader(&out, "upgrade", "websocket");
      tunnel_ = true;
      close_after_response_ = true;  // the connection ends with the tunnel
      break;
  }
  if (head.body != ResponseHead::Body::kTunnel) {
    if (close_after_response_) {
      AppendHeader(&out, "connection", "close");
    } else if (client_http10_) {
      AppendHeader(&out, "connection", "keep-alive");
    }
  }
  out.append("\r\n");
  connection_->Write(out);
  worker_.ReturnHeadScratch(std::move(out));
  // A WebSocket opened after its connection was told to end (its listener
  // removed, its max_connection_age reached while the handshake ran): ended
  // on the next loop turn, outside the stream's callbacks, once the 101 is out.
  if (tunnel_ && end_tunnel_reason_ != nullptr) {
    timer_.Set(absl::ZeroDuration());
    return;
  }
  // Frames the client sent right behind its upgrade request wait unparsed:
  // hand them over on the next loop turn, outside the stream's callbacks
  // (and end the tunnel then if the client has gone: ProcessInput).
  if (tunnel_ && (!connection_->input().empty() || peer_eof_)) {
    ResumeSoon();
  }
}

void DownstreamConnection::EncodeData(std::string_view data) {
  if (closed_ || data.empty()) return;
  if (response_chunked_) {
    std::string header;
    http::AppendChunkHeader(&header, data.size());
    connection_->Write2(header, data);
    connection_->Write("\r\n");
  } else {
    connection_->Write(data);
  }
}

void DownstreamConnection::EncodeEnd(const std::vector<http::HeaderField>& trailers) {
  if (closed_ || !response_chunked_) return;
  if (trailers.empty()) {
    connection_->Write("0\r\n\r\n");
    return;
  }
  std::string last = "0\r\n";
  for (const http::HeaderField& t : trailers) AppendHeader(&last, t.name, t.value);
  last.append("\r\n");
  connection_->Write(last);
}

void DownstreamConnection::EncodeContinue() {
  if (!closed_) connection_->Write("HTTP/1.1 100 Continue\r\n\r\n");
}

void DownstreamConnection::EncodeInformational(int status,
                                               const std::vector<http::HeaderField>& fields) {
  if (closed_ || client_http10_) return;  // an HTTP/1.0 client knows no 1xx
  std::string out = absl::StrCat("HTTP/1.1 ", status, " ");
  out.append(http::ReasonPhrase(status));
  out.append("\r\n");
  for (const http::HeaderField& f : fields) AppendHeader(&out, f.name, f.value);
  out.append("\r\n");
  connection_->Write(out);
}

void DownstreamConnection::Abort() {
  // Cut off mid-response (or a tunnel ended badly): closing is the only way
  // HTTP/1 can tell the client. What is already encoded (the head, body
  // bytes) goes out first, so the client sees the response and its cut (a
  // body shorter than its Content-Length, a chunked body without its last
  // chunk), not an empty reply it may take for a request never processed
  // (and send again). A body delimited by the close would look whole that
  // way: it is cut at once with a reset (a FIN after the bytes an HTTP/1.0
  // client got made them a complete response), and a tunnel is closed.
  stream_in_use_ = false;
  if (!response_by_close_ && !tunnel_ && !closing_ && connection_->output_size() > 0) {
    connection_->SetReadEnabled(false);
    CloseOnceWritten();
    return;
  }
  if (response_by_close_) connection_->Reset();
  CloseNow();
}

void DownstreamConnection::AbortUnsent() {
  stream_in_use_ = false;
  connection_->Reset();  // what the client never took goes with it
  CloseNow();
}

size_t DownstreamConnection::buffered_response_bytes() const { return connection_->output_size(); }

void DownstreamConnection::SetRequestReadEnabled(bool enabled) {
  if (closed_ || closing_) return;
  if (!enabled) {
    connection_->SetReadEnabled(false);
    return;
  }
  if (!connection_->read_enabled()) {
    connection_->SetReadEnabled(true);
    ProcessInput();
  }
}

void DownstreamConnection::OnStreamDone() {
  stream_in_use_ = false;
  if (closed_) return;
  if (UnreadBodyEndsConnection()) close_after_response_ = true;
  FinishConnectionAfterResponse();
}

void DownstreamConnection::OnWriteDrained() {
  if (stream_in_use_) {
    stream_->OnDownstreamDrained();
    return;
  }
  if (closing_ || closed_) return;
  if (awaiting_drain_) {
    awaiting_drain_ = false;
    parser_.Resume();
    ResumeReading();
    if (!connection_->input().empty() || peer_eof_) ResumeSoon();
    return;
  }
  // The response is out and nothing else is queued: the idle connection
  // gives its buffers back (about 20 KiB), its request's fields and its
  // exchange object.
  connection_->ReleaseIdleBuffers();
  parser_.ReleaseIdleMemory();
  if (stream_ != nullptr) worker_.ReturnStream(std::move(stream_));
}

void DownstreamConnection::SendSessionError(int status, std::string_view error,
                                            const http::MessageHead* head, bool logged) {
  if (closed_) return;
  close_after_response_ = true;
  std::string request_id;
  worker_.NewRequestId(&request_id);
  std::string body = http::ErrorBody(error, request_id);
  const std::string out = ClosingErrorHead(status, body.size(), request_id);
  // A HEAD gets the head only (RFC 9110 9.3.2), its length that of the body
  // a GET would have had.
  const bool head_only =
      head != nullptr ? head->method == "HEAD" : parser_.head_method();
  connection_->Write2(out, head_only ? std::string_view() : std::string_view(body));
  worker_.stats().downstream_responses_by_class[status / 100]->Inc();
  if (!logged) RecordSessionError(status, request_id, head, body.size());
  // A head over the limits (a method over them: 501) is answered while the
  // client is still sending it, as is a body in a coding not decoded (501):
  // it lingers, as a body not read does.
  if (status == 414 || status == 431 || status == 501) linger_on_close_ = true;
  FinishConnectionAfterResponse();
}

std::string DownstreamConnection::ClosingErrorHead(int status, size_t body_size,
                                                   std::string_view request_id) {
  std::string out = absl::StrCat("HTTP/1.1 ", status, " ");
  out.append(http::ReasonPhrase(status));
  out.append("\r\n");
  AppendHeader(&out, "content-type", "application/json");
  AppendHeader(&out, "content-length", std::to_string(body_size));
  AppendHeader(&out, "x-request-id", request_id);
  AppendHeader(&out, "date", worker_.HttpDate());
  AppendHeader(&out, "connection", "close");
  out.append("\r\n");
  return out;
}

void DownstreamConnection::RecordSessionError(int status, std::string_view request_id,
                                              const http::MessageHead* head, size_t bytes_out) {
  accesslog::Entry e;
  e.bytes_out = bytes_out;
  if (status == 408) {
    // The head timer ran from the request's first byte: that is when the
    // exchange began.
    e.duration = request_headers_timeout();
    e.start = absl::Now() - e.duration;
  }
  e.request_id = request_id;
  e.client_ip = peer_ip_;
  e.peer_ip = net::DirectPeer(connection_->transport());
  e.protocol = client_http10_ ? "HTTP/1.0" : "HTTP/1.1";
  std::string_view traceparent;
  if (head != nullptr) {
    e.method = head->method;
    e.path = head->target;
    e.protocol = head->version_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
    if (const http::HeaderField* h = http::FindHeader(head->headers, "host")) e.authority = h->value;
    if (const http::HeaderField* h = http::FindHeader(head->headers, "user-agent")) {
      e.user_agent = h->value;
    }
    if (const http::HeaderField* h = http::FindHeader(head->headers, "traceparent")) {
      traceparent = h->value;
    }
  } else {
    FillFromRefusedRequest(e, &traceparent);  // refused by the parser after its request line
  }
  e.status = status;
  RecordPreStreamAnswer(worker_, listener_name_, connection_->transport().tls_info(), e,
                        traceparent);
}

void RecordPreStreamAnswer(Worker& worker, const std::string& listener_name,
                           const net::TlsInfo* tls, accesslog::Entry& e,
                           std::string_view traceparent) {
  const std::shared_ptr<const config::ConfigSnapshot>& snapshot = worker.snapshot();
  if (snapshot == nullptr) return;
  auto it = snapshot->listeners.find(listener_name);
  if (it == snapshot->listeners.end()) return;
  const config::ListenerRuntime& listener = it->second;
  if (listener.by_class[e.status / 100] != nullptr) listener.by_class[e.status / 100]->Inc();
  const accesslog::AccessLog* log = listener.access_log.get();
  if (log == nullptr || !log->Samples([&worker] { return worker.picker().Random(); })) return;
  if (e.start == absl::Time()) e.start = absl::Now();  // answered as it came
  // Refused before any route's policies ran: a key in the query (key-auth,
  // a jwt query_parameter) was never taken out, so no query is written.
  if (listener.query_credentials) e.path = e.path.substr(0, e.path.find('?'));
  if (tls != nullptr) {
    e.tls_version = tls->version;
    e.sni = tls->sni;
    e.tls_cipher = tls->cipher;
    e.tls_client_subject = tls->peer_subject;
  }
  if (e.response_flag.empty()) e.response_flag = e.status == 408 ? "request_timeout" : "bad_request";
  char made[32];
  std::string_view parent_id;
  bool sampled;
  if (!ParseTraceparent(traceparent, &e.trace_id, &parent_id, &sampled)) {
    Worker::WriteHex64(made, worker.picker().Random());
    Worker::WriteHex64(made + 16, worker.picker().Random() | 1);
    e.trace_id = std::string_view(made, sizeof(made));
  }
  log->Log(worker.index(), e);
}

void DownstreamConnection::FinishConnectionAfterResponse() {
  // A response that is not a 101 ends any Upgrade the request asked for;
  // when it came before the request's end (a reply the gateway made in
  // OnHead), the parser would otherwise pause there for a tunnel and
  // never read the next request (it got 408 at the head timeout).
  parser_.DeclineSwitch();
  // Only a response that said Connection: close (or had to) ends the
  // connection; a drain that began after the head went waits for the next
  // one (drain_requested_) or the 1 s idle grace.
  if (close_after_response_ || (peer_eof_ && connection_->input().empty())) {
    CloseOnceWritten();
    return;
  }
  ArmIdleTimer();
  if (connection_->output_size() > ProxyStream::kHighWatermark) {
    // A client that sends requests and does not read the answers (local
    // replies are made at once): parse and read nothing more until it
    // reads. The idle timer bounds the wait.
    connection_->SetReadEnabled(false);
    awaiting_drain_ = true;
    return;
  }
  parser_.Resume();
  ResumeReading();
  // Pipelined requests already buffered: continue on the next loop turn,
  // outside every callback that brought us here. A response made while
  // ProcessInput parses (a direct response, a policy's 401 or 429, a cache
  // hit: answered within OnHead) needs no turn: that pass goes on with the
  // bytes after its request. Before, each such answer armed the timer too,
  // a wakeup for nothing whose libevent event (128 bytes) the idle
  // connection then kept.
  if (connection_->input().empty()) return;
  if (in_process_input_) {
    process_again_ = true;
  } else {
    ResumeSoon();
  }
}

void DownstreamConnection::ResumeSoon() {
  // Made the first time: most connections never need it (56 bytes each).
  if (resume_timer_ == nullptr) {
    resume_timer_ =
        std::make_unique<event::Timer>(worker_.dispatcher(), [this] { ProcessInput(); });
  }
  resume_timer_->Enable(absl::ZeroDuration());
}

void DownstreamConnection::ResumeReading() {
  // Over the watermark, the requests already buffered are answered first:
  // the socket is read again once they are under it (the next response's
  // end comes back here). Before, reading resumed after every response,
  // and a client pipelining requests it never read the answers to (while
  // the kernel took those answers) had the proxy buffer all it sent: 100 MB
  // of GETs on one connection took the RSS to 194 MB.
  connection_->SetReadEnabled(connection_->input().size() <= ProxyStream::kHighWatermark);
}

bool DownstreamConnection::UnreadBodyEndsConnection() const {
  return request_message_open_ && request_has_body_ && !request_body_discardable_;
}

bool DownstreamConnection::OnReadEof() {
  if (closed_ || tunnel_) return false;
  // The client half-closed after sending (RFC 9112 9.6 allows it): every
  // request that arrived whole is answered (pipelined ones too), and a
  // response still being written is finished; then the connection closes.
  // A request cut short, or nothing to answer or write, ends here.
  if (stream_in_use_ && request_message_open_) return false;
  if (!stream_in_use_ && connection_->input().empty() && connection_->output_size() == 0) {
    return false;
  }
  peer_eof_ = true;
  if (stream_in_use_) {
    // The last request: its response says the connection closes.
    if (connection_->input().empty()) close_after_response_ = true;
  } else {
    // Answers what is buffered, or closes once the output is written
    // (ProcessInput's end), outside this callback.
    ResumeSoon();
  }
  return true;
}

void DownstreamConnection::CloseOnceWritten() {
  if (closing_ || closed_) return;
  closing_ = true;
  // A client that never reads the last response does not pin the
  // connection: it gets the idle timeout to take it.
  timer_.Set(idle_timeout(), /*shared_duration=*/true);
  // Answered before its body was read (413, 401): the client may still be
  // sending it, and a plain close would reset the connection under the
  // response it has not read yet. (A small declared body is read and
  // dropped when the connection stays; not when it closes, after a 413.)
  if ((request_message_open_ && request_has_body_) || linger_on_close_) {
    connection_->LingerOnClose(&worker_.lingering());
  }
  if (connection_->CloseAfterFlush()) CloseNow();
}

void DownstreamConnection::OnClosed(net::CloseReason reason, int) {
  if (reason == net::CloseReason::kHandshakeFailed) {
    const net::ProxyHeaderState* header = connection_->transport().proxy_header();
    const bool proxy_header_failed = header != nullptr && header->failed;
    if (proxy_header_failed) {
      worker_.stats().downstream_proxy_protocol_errors->Inc();
    } else {
      worker_.stats()
          .DownstreamTlsHandshakeError(connection_->transport().handshake_failure_kind())
          ->Inc();
    }
    // The listener, and the reason's kind (the metric's label: "server_name"
    // where OpenSSL says only "callback failed"), tell one listener's
    // failing clients from another's.
    SLUICE_LOG(kDebug, proxy_header_failed ? "connection from " : "TLS handshake from ", peer_ip_,
               " on listener \"", listener_name_, "\" failed",
               proxy_header_failed
                   ? std::string()
                   : " (" + std::string(connection_->transport().handshake_failure_kind()) + ")",
               ": ", connection_->transport().failure_reason());
  } else if (reason == net::CloseReason::kRemoteClosed || reason == net::CloseReason::kReset) {
    RecordAbandonedHead();  // gone in the middle of a request head
  }
  CloseNow();
}

// http:// used for an https:// port: the client is told so, as nginx tells
// it ("The plain HTTP request was sent to HTTPS port"), rather than left
// with an empty reply. Answered before its head is read: it lingers.
bool DownstreamConnection::OnPlainHttpRequest(std::string* reply) {
  std::string request_id;
  worker_.NewRequestId(&request_id);
  const std::string body = http::ErrorBody(
      "a plain HTTP request was sent to a TLS listener: this port speaks HTTPS (use https://)",
      request_id);
  *reply = ClosingErrorHead(400, body.size(), request_id);
  reply->append(body);
  worker_.stats().downstream_responses_by_class[4]->Inc();
  // Logged with what its first bytes hold whole: the request line, Host,
  // User-Agent (as nginx logs it).
  parser_.SalvageRefusedRequest(connection_->transport().plain_http1_head());
  RecordSessionError(400, request_id, nullptr, body.size());
  connection_->LingerOnClose(&worker_.lingering());
  return true;
}

int64_t DownstreamConnection::ToNanos(absl::Duration d) {
  return d == absl::InfiniteDuration() ? std::numeric_limits<int64_t>::max()
                                       : absl::ToInt64Nanoseconds(d);
}

absl::Duration DownstreamConnection::FromNanos(int64_t ns) {
  return ns == std::numeric_limits<int64_t>::max() ? absl::InfiniteDuration()
                                                   : absl::Nanoseconds(ns);
}

void DownstreamConnection::CloseNow() {
  if (closed_) return;
  closed_ = true;
  timer_.Clear();
  if (resume_timer_) resume_timer_->Disable();
  if (stream_in_use_) {
    stream_in_use_ = false;
    stream_->OnDownstreamGone();
  }
  connection_->Close();
  worker_.RemoveConnection(this);
}

}  // namespace sluice::server
