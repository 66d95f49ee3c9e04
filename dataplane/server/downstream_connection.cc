#include "dataplane/server/downstream_connection.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "dataplane/http/http_util.h"
#include "dataplane/net/socket.h"
#include "dataplane/router/route_table.h"
#include "dataplane/upstream/endpoint_picker.h"
#include "dataplane/server/worker.h"

namespace sluice::server {
namespace {

http::Http1Parser::Limits ParserLimits(const config::ListenerRuntime& listener) {
  http::Http1Parser::Limits limits;
  limits.max_head_bytes = listener.max_request_headers_bytes;
  return limits;
}

bool ValidRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// An Upgrade field that lists "websocket" (RFC 6455 4.1; any case).
bool IsWebSocketUpgrade(const std::vector<http::HeaderField>& headers) {
  for (const http::HeaderField& h : headers) {
    if (!http::EqualsIgnoreCase(h.name, "upgrade")) continue;
    std::string_view rest = h.value;
    while (!rest.empty()) {
      size_t comma = rest.find(',');
      std::string_view token = rest.substr(0, comma);
      while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
      while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
      if (http::EqualsIgnoreCase(token, "websocket")) return true;
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return false;
}

void AppendHeader(std::string* out, std::string_view name, std::string_view value);

// Trailer fields to forward: none that frame, route or authenticate a
// message may come after its body (RFC 9110 6.5.1), nor hop-by-hop ones.
void EncodeTrailers(const std::vector<http::HeaderField>& trailers, std::string* out) {
  static const std::vector<std::string_view> kNoTokens;
  for (const http::HeaderField& t : trailers) {
    if (http::IsHopByHop(t.name, kNoTokens)) continue;
    bool forbidden = false;
    for (std::string_view name : {"content-length", "host", "content-type", "content-encoding",
                                  "content-range", "authorization", "set-cookie", "cookie",
                                  "expect", "max-forwards", "cache-control", "te"}) {
      if (http::EqualsIgnoreCase(t.name, name)) forbidden = true;
    }
    if (forbidden) continue;
    AppendHeader(out, t.name, t.value);
  }
}

bool IsIdempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "PUT" ||
         method == "DELETE" || method == "TRACE";
}

void AppendHeader(std::string* out, std::string_view name, std::string_view value) {
  out->append(name);
  out->append(": ");
  out->append(value);
  out->append("\r\n");
}

}  // namespace

// The request in progress on the connection.
struct DownstreamConnection::Request {
  std::shared_ptr<const config::ConfigSnapshot> snapshot;
  const router::RouteEntry* route = nullptr;
  const config::RouteStats* route_stats = nullptr;
  const upstream::ClusterInfo* cluster = nullptr;
  std::string endpoint_key;
  std::unique_ptr<upstream::UpstreamConnection> upstream;
  std::string method;
  std::string upstream_head;
  std::string request_id;
  bool has_body = false;
  bool request_chunked = false;
  bool request_complete = false;
  bool head_request = false;
  // Chunked trailer sections, encoded ("name: value\r\n" each), forwarded
  // in the last chunk.
  std::string request_trailers;
  std::string response_trailers;
  bool upgrade = false;  // a WebSocket upgrade the route allows
  bool tunnel = false;   // the upstream answered 101: bytes flow both ways
  bool client_http10 = false;
  bool client_keep_alive = true;
  bool response_started = false;
  bool response_chunked = false;
  bool upstream_paused_reading = false;
  int status = 0;
  int attempts = 0;
  int64_t* endpoint_active = nullptr;  // this worker's in-flight count for the endpoint
  int endpoint_index = -1;             // of the current (or last) try
  uint64_t hash = 0;                   // RING_HASH / MAGLEV key
  bool counted_request = false;        // in the cluster's active_requests
  bool pending = false;                // in the cluster's pending_requests
  bool counted_retry = false;          // in the cluster's active_retries
  int retries = 0;                     // retries started (route retry policy)
  // Retries: the body bytes sent so far, as written upstream, to send again.
  bool replayable = false;
  std::string replay;
  // Policies: the route's filters (empty: none), how many have seen the
  // request, and the request head as they left it.
  std::vector<std::unique_ptr<http::Filter>> filters;
  size_t filters_entered = 0;
  http::HeaderMap filtered_headers;
  std::string path;  // for StreamInfo
  http::StreamInfo info;
};

DownstreamConnection::DownstreamConnection(Worker& worker, int fd,
                                           const config::ListenerRuntime& listener,
                                           std::unique_ptr<net::TransportSocket> transport)
    : worker_(worker),
      connection_(std::make_unique<net::Connection>(worker.dispatcher(), fd, false,
                                                    std::move(transport))),
      listener_name_(listener.name),
      peer_ip_(net::PeerIp(fd)),
      request_headers_timeout_(listener.request_headers_timeout),
      idle_timeout_(listener.idle_timeout),
      parser_(http::Http1Parser::Mode::kRequest, this, ParserLimits(listener)),
      timer_(worker.dispatcher(), [this] { OnDownstreamTimer(); }),
      route_timer_(worker.dispatcher(), [this] { OnRouteTimeout(); }),
      retry_timer_(worker.dispatcher(), [this] { OnRetryTimer(); }),
      per_try_timer_(worker.dispatcher(), [this] { OnPerTryTimeout(); }),
      resume_timer_(worker.dispatcher(), [this] { ProcessInput(); }) {
  connection_->SetCallbacks(this);
  if (listener.tls) {
    // The handshake and the first request head must come within the
    // request-head timeout.
    timer_is_head_ = true;
    timer_.Enable(request_headers_timeout_, /*shared_duration=*/true);
  } else {
    ArmIdleTimer();
  }
}

void DownstreamConnection::OnConnected() {
  const net::TlsInfo* tls = connection_->transport().tls_info();
  worker_.stats().downstream_tls_handshakes->Inc();
  if (tls != nullptr && tls->resumed) worker_.stats().downstream_tls_resumptions->Inc();
}

DownstreamConnection::~DownstreamConnection() {
  if (request_ && request_->upstream) {
    request_->upstream->connection().Close();
    worker_.dispatcher().DeferredDelete(std::move(request_->upstream));
  }
}

bool DownstreamConnection::idle() const {
  return request_ == nullptr && !parser_.in_message() && connection_->input().empty();
}

void DownstreamConnection::StartDrain() {
  close_after_response_ = true;
  // An idle keep-alive connection is not closed at once: a client may be
  // sending its next request right now, and would see a reset. It gets a
  // short grace; a request that comes in it is answered with
  // Connection: close.
  if (idle()) ArmIdleTimer();
}

void DownstreamConnection::OnSnapshotChanged() {
  if (!worker_.snapshot()->listeners.count(listener_name_)) StartDrain();
}

void DownstreamConnection::ArmIdleTimer() {
  timer_is_head_ = false;
  if (worker_.draining()) {
    // Draining: a connection that sends nothing more is not waited for long.
    timer_.Enable(std::min(idle_timeout_, absl::Seconds(1)));
    return;
  }
  timer_.Enable(idle_timeout_, /*shared_duration=*/true);
}

void DownstreamConnection::OnDownstreamTimer() {
  if (closed_) return;
  if (request_ && request_->tunnel) {
    SLUICE_LOG(kDebug, "WebSocket from ", peer_ip_, " idle for ",
               absl::FormatDuration(request_->route->websocket_idle_timeout), ": closed");
    CloseNow();
    return;
  }
  if (request_) return;
  if (!connection_->handshake_complete()) {
    worker_.stats().downstream_tls_handshake_errors->Inc();
    SLUICE_LOG(kDebug, "TLS handshake from ", peer_ip_, " not done within the request-head timeout");
    CloseNow();
    return;
  }
  if (timer_is_head_ && !parser_.in_message() && connection_->input().empty()) {
    CloseNow();  // connected, sent nothing
    return;
  }
  if (timer_is_head_ || parser_.in_message()) {
    close_after_response_ = true;
    SendLocalResponse(408, "request head not received in time");
    return;
  }
  CloseNow();
}

void DownstreamConnection::OnReadable() { ProcessInput(); }

void DownstreamConnection::ProcessInput() {
  if (closed_) return;
  if (request_ && request_->tunnel) {
    PumpClientToUpstream();
    return;
  }
  if (in_process_input_) {
    process_again_ = true;
    return;
  }
  in_process_input_ = true;
  do {
    process_again_ = false;
    net::Buffer& input = connection_->input();
    while (!closed_ && !input.empty() && !parser_.paused()) {
      http::Http1Parser::Result result = parser_.Feed(input.view());
      if (closed_) break;
      input.Drain(result.consumed);
      if (result.error != http::ParseError::kNone) {
        HandleParseError(result.error);
        break;
      }
      if (result.consumed == 0) break;  // an incomplete head: wait for more
    }
  } while (process_again_ && !closed_);
  in_process_input_ = false;
  if (closed_) return;
  net::Buffer& input = connection_->input();
  if (request_ == nullptr && !input.empty() && !timer_is_head_) {
    // A new request has begun arriving: the head must come in time.
    timer_is_head_ = true;
    timer_.Enable(request_headers_timeout_, /*shared_duration=*/true);
  }
  // Pipelined requests wait unparsed; do not let them pile up without bound.
  if (request_ != nullptr && parser_.paused() && input.size() > kHighWatermark) {
    connection_->SetReadEnabled(false);
  }
}

void DownstreamConnection::HandleParseError(http::ParseError error) {
  worker_.stats().downstream_protocol_errors->Inc();
  close_after_response_ = true;
  SLUICE_LOG(kDebug, "bad request from ", peer_ip_, ": ", parser_.error_detail());
  if (error == http::ParseError::kHeadersTooLarge) {
    SendLocalResponse(431, "request header section too large");
  } else {
    SendLocalResponse(400, absl::StrCat("malformed request: ", parser_.error_detail()));
  }
}

void DownstreamConnection::OnHead(const http::MessageHead& head) {
  // One request at a time: the parser stops after this message.
  parser_.Pause();
  request_message_open_ = true;
  StartRequest(head);
}

void DownstreamConnection::StartRequest(const http::MessageHead& head) {
  timer_.Disable();
  timer_is_head_ = false;
  worker_.stats().downstream_requests_total->Inc();
  // Reuse the last request's object and buffers: no allocation per request
  // on a keep-alive connection.
  if (spare_request_) {
    std::string upstream_head = std::move(spare_request_->upstream_head);
    std::string replay = std::move(spare_request_->replay);
    std::string request_id = std::move(spare_request_->request_id);
    *spare_request_ = Request();
    upstream_head.clear();
    replay.clear();
    spare_request_->upstream_head = std::move(upstream_head);
    spare_request_->replay = std::move(replay);
    spare_request_->request_id = std::move(request_id);
    request_ = std::move(spare_request_);
  } else {
    request_ = std::make_unique<Request>();
  }
  Request& r = *request_;
  r.snapshot = worker_.snapshot();
  r.method.assign(head.method);
  r.head_request = head.method == "HEAD";
  r.client_http10 = head.version_minor == 0;
  r.client_keep_alive = head.keep_alive;
  r.has_body = head.framing == http::BodyFraming::kChunked ||
               (head.framing == http::BodyFraming::kContentLength && head.content_length > 0);
  r.request_chunked = head.framing == http::BodyFraming::kChunked;
  const http::HeaderField* id_header = http::FindHeader(head.headers, "x-request-id");
  if (id_header && ValidRequestId(id_header->value)) {
    r.request_id.assign(id_header->value);
  } else {
    worker_.NewRequestId(&r.request_id);
  }
  if (!r.client_keep_alive) close_after_response_ = true;
  // An Upgrade request is forwarded as a plain request (Upgrade is hop-by-hop
  // and removed); the parser's pause after it is lifted in FinishRequest.

  auto listener_it = r.snapshot->listeners.find(listener_name_);
  if (listener_it == r.snapshot->listeners.end()) {
    close_after_response_ = true;
    SendLocalResponse(503, "listener removed; the gateway is draining this connection");
    return;
  }
  const config::ListenerRuntime& listener = listener_it->second;
  if (head.method == "CONNECT") {
    close_after_response_ = true;  // what follows would be tunnel bytes
    SendLocalResponse(405, "CONNECT is not supported", "allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS\r\n");
    return;
  }
  std::string_view target = head.target;
  std::string_view host;
  if (const http::HeaderField* h = http::FindHeader(head.headers, "host")) host = h->value;
  std::string absolute_host;
  if (!target.empty() && target[0] != '/') {
    // absolute-form (RFC 9112 3.2.2): the target's authority wins over Host.
    size_t scheme_end = target.find("://");
    if (scheme_end == std::string_view::npos) {
      SendLocalResponse(400, "request target must be a path or an absolute URL");
      return;
    }
    std::string_view rest = target.substr(scheme_end + 3);
    size_t slash = rest.find('/');
    absolute_host.assign(rest.substr(0, slash));
    host = absolute_host;
    target = slash == std::string_view::npos ? std::string_view("/") : rest.substr(slash);
  }

  router::RouteRequest route_request;
  route_request.method = head.method;
  route_request.host = host;
  route_request.path_and_query = target;
  route_request.headers = &head.headers;
  router::MatchResult match = listener.route_table->Match(route_request);
  if (match.kind == router::MatchResult::Kind::kNoRoute) {
    SendLocalResponse(404, "no route matches the request");
    return;
  }
  if (match.kind == router::MatchResult::Kind::kMethodNotAllowed) {
    SendLocalResponse(405, absl::StrCat("method ", r.method, " is not allowed on this route"),
                      absl::StrCat("allow: ", match.allowed_methods, "\r\n"));
    return;
  }
  r.route = match.route;
  r.route_stats = &(*listener.route_stats)[r.route->id];
  if (listener.route_filters != nullptr && !(*listener.route_filters)[r.route->id].empty()) {
    if (!RunRequestFilters((*listener.route_filters)[r.route->id], head, absolute_host, target)) {
      return;  // a policy answered
    }
  }
  switch (r.route->action) {
    case router::RouteEntry::Action::kDirectResponse:
      SendLocalResponse(static_cast<int>(r.route->direct_status), "", "",
                        r.route->direct_body, r.route->direct_content_type);
      return;
    case router::RouteEntry::Action::kRedirect: {
      std::string location = r.route->RedirectLocation(
          connection_->transport().secure() ? "https" : "http", host, target);
      SendLocalResponse(static_cast<int>(r.route->redirect_code), "",
                        absl::StrCat("location: ", location, "\r\n"), " ", "text/plain");
      return;
    }
    case router::RouteEntry::Action::kCluster:
      break;
  }
  r.upgrade = r.route->websocket && head.upgrade && head.method == "GET" &&
              !r.client_http10 && IsWebSocketUpgrade(head.headers);
  const std::string& cluster_name =
      r.route->clusters.size() == 1 ? r.route->clusters[0].name
                                    : r.route->PickCluster(worker_.picker().Random());
  auto cluster_it = r.snapshot->clusters.find(cluster_name);
  if (cluster_it == r.snapshot->clusters.end()) {
    SendLocalResponse(503, absl::StrCat("cluster ", cluster_name, " is not configured"));
    return;
  }
  r.cluster = cluster_it->second.get();
  if (r.cluster->hash_table) r.hash = HashKeyFor(*r.cluster, head, target);
  const upstream::ClusterInfo& cluster = *r.cluster;
  if (cluster.state->active_requests.load(std::memory_order_relaxed) >=
      cluster.breakers.max_requests) {
    cluster.stats.breaker_overflow_requests->Inc();
    SendLocalResponse(503, absl::StrCat("circuit breaker max_requests is open for cluster ",
                                        cluster.name));
    return;
  }
  cluster.state->active_requests.fetch_add(1, std::memory_order_relaxed);
  r.counted_request = true;
  const router::RouteEntry::Retry& retry = r.route->retry;
  r.replayable = retry.num_retries > 0 && (IsIdempotent(r.method) || retry.retry_non_idempotent);

  // The request head for the upstream.
  std::string& out = r.upstream_head;
  out.reserve(head.head_bytes + 160);
  out.append(head.method);
  out.push_back(' ');
  if (!r.route->prefix_rewrite.empty()) {
    out.append(r.route->RewritePath(target));
  } else {
    out.append(target);
  }
  out.append(" HTTP/1.1\r\n");
  if (!r.filters.empty()) {
    for (const http::HeaderMap::Field& f : r.filtered_headers.fields()) {
      AppendHeader(&out, f.name, f.value);
    }
  } else {
    ForEachForwardedHeader(head, absolute_host, [&out](std::string_view name, std::string_view value) {
      AppendHeader(&out, name, value);
    });
  }
  if (r.upgrade) {
    AppendHeader(&out, "connection", "upgrade");
    AppendHeader(&out, "upgrade", "websocket");
  }
  if (head.framing == http::BodyFraming::kContentLength) {
    out.append("content-length: ");
    absl::StrAppend(&out, head.content_length);
    out.append("\r\n");
  } else if (r.request_chunked) {
    AppendHeader(&out, "transfer-encoding", "chunked");
  }
  out.append("\r\n");

  if (r.route->timeout > absl::ZeroDuration()) {
    route_timer_.Enable(r.route->timeout, /*shared_duration=*/true);
  }
  if (head.expect_continue && r.has_body) {
    connection_->Write("HTTP/1.1 100 Continue\r\n\r\n");
  }
  ConnectUpstream();
}

template <typename Emit>
void DownstreamConnection::ForEachForwardedHeader(const http::MessageHead& head,
                                                  std::string_view absolute_host, Emit emit) {
  std::vector<std::string_view> tokens = http::ConnectionTokens(head.headers);
  std::string forwarded_for;
  bool has_host = false;
  for (const http::HeaderField& h : head.headers) {
    if (http::IsHopByHop(h.name, tokens) || http::EqualsIgnoreCase(h.name, "content-length") ||
        http::EqualsIgnoreCase(h.name, "expect") ||
        http::EqualsIgnoreCase(h.name, "x-request-id") ||
        http::EqualsIgnoreCase(h.name, "x-forwarded-proto")) {
      continue;
    }
    if (http::EqualsIgnoreCase(h.name, "x-forwarded-for")) {
      if (!forwarded_for.empty()) forwarded_for.append(", ");
      forwarded_for.append(h.value);
      continue;
    }
    if (http::EqualsIgnoreCase(h.name, "host")) {
      has_host = true;
      if (!absolute_host.empty()) {
        emit("host", absolute_host);
        continue;
      }
    }
    emit(h.name, h.value);
  }
  if (!has_host) {
    emit("host", absolute_host.empty() ? std::string_view("localhost") : absolute_host);
  }
  if (!forwarded_for.empty()) forwarded_for.append(", ");
  forwarded_for.append(peer_ip_);
  emit("x-forwarded-for", forwarded_for);
  emit("x-forwarded-proto", connection_->transport().secure() ? "https" : "http");
  emit("x-request-id", request_->request_id);
}

bool DownstreamConnection::RunRequestFilters(const config::FilterChain& chain,
                                             const http::MessageHead& head,
                                             std::string_view absolute_host,
                                             std::string_view target) {
  Request& r = *request_;
  r.path.assign(target);
  http::StreamInfo& info = r.info;
  info.request_id = r.request_id;
  info.client_ip = peer_ip_;
  info.scheme = connection_->transport().secure() ? "https" : "http";
  info.method = r.method;
  info.path = r.path;
  info.route_name = r.route->name;
  if (const net::TlsInfo* tls = connection_->transport().tls_info()) {
    info.tls_version = tls->version;
    info.tls_sni = tls->sni;
    info.tls_peer_subject = tls->peer_subject;
  }
  r.filtered_headers.Clear();
  ForEachForwardedHeader(head, absolute_host, [&r](std::string_view name, std::string_view value) {
    r.filtered_headers.Add(name, value);
  });
  r.filters.reserve(chain.size());
  for (const auto& factory : chain) r.filters.push_back(factory->CreateFilter());
  for (const auto& filter : r.filters) {
    ++r.filters_entered;
    if (filter->OnRequestHeaders(r.filtered_headers, *this) == http::FilterStatus::kStopLocalReply) {
      if (!closed_ && request_ && !request_->response_started) {
        // A filter that stops must have answered; answer for it rather than hang.
        SendLocalResponse(500, "a policy stopped the request without answering");
      }
      return false;
    }
  }
  return true;
}

void DownstreamConnection::RunResponseFilters(int status, http::HeaderMap& headers) {
  Request& r = *request_;
  for (size_t i = r.filters_entered; i > 0; --i) {
    r.filters[i - 1]->OnResponseHeaders(status, headers, *this);
  }
}

const http::StreamInfo& DownstreamConnection::info() const { return request_->info; }

void DownstreamConnection::SendLocalReply(int status, std::string_view message,
                                          const http::HeaderMap& headers) {
  std::string extra;
  for (const http::HeaderMap::Field& f : headers.fields()) AppendHeader(&extra, f.name, f.value);
  SendLocalResponse(status, message, extra);
}

void DownstreamConnection::StartTunnel(const http::MessageHead& head) {
  Request& r = *request_;
  upstream::ReportOutcome(*r.cluster, r.cluster->endpoints[r.endpoint_index], head.status);
  r.status = 101;
  r.tunnel = true;
  r.response_started = true;
  route_timer_.Disable();  // the route timeout covered the handshake only
  std::string& out = response_head_;
  out.clear();
  out.append("HTTP/1.1 101 Switching Protocols\r\n");
  std::vector<std::string_view> tokens = http::ConnectionTokens(head.headers);
  http::HeaderMap headers;
  for (const http::HeaderField& h : head.headers) {
    if (http::IsHopByHop(h.name, tokens) || http::EqualsIgnoreCase(h.name, "content-length")) {
      continue;
    }
    headers.Add(h.name, h.value);
  }
  if (headers.Get("x-request-id") == nullptr) headers.Add("x-request-id", r.request_id);
  if (!r.filters.empty()) RunResponseFilters(101, headers);
  for (const http::HeaderMap::Field& f : headers.fields()) AppendHeader(&out, f.name, f.value);
  AppendHeader(&out, "connection", "upgrade");
  AppendHeader(&out, "upgrade", "websocket");
  out.append("\r\n");
  connection_->Write(out);
  timer_.Enable(r.route->websocket_idle_timeout);
  // Frames the client sent right behind its request are waiting unparsed.
  PumpClientToUpstream();
}

void DownstreamConnection::PumpClientToUpstream() {
  Request& r = *request_;
  net::Buffer& input = connection_->input();
  if (input.empty() || !r.upstream) return;
  net::Connection& up = r.upstream->connection();
  up.Write(input.view());
  input.Drain(input.size());
  timer_.Enable(r.route->websocket_idle_timeout);
  if (up.output_size() > kHighWatermark) connection_->SetReadEnabled(false);
}

bool DownstreamConnection::ConnectUpstream() {
  Request& r = *request_;
  const upstream::ClusterInfo& cluster = *r.cluster;
  // A retry avoids the endpoint that just failed when another one is usable.
  int index = worker_.picker().Pick(cluster, r.hash, r.attempts > 0 ? r.endpoint_index : -1);
  if (index < 0) {
    cluster.stats.no_healthy_endpoint->Inc();
    SendLocalResponse(503, "no healthy endpoint in cluster " + cluster.name);
    return false;
  }
  const upstream::EndpointInfo& endpoint = cluster.endpoints[index];
  auto acquired = worker_.pool().Acquire(cluster, endpoint);
  if (!acquired.ok()) {
    if (absl::IsResourceExhausted(acquired.status())) {
      cluster.stats.breaker_overflow_connections->Inc();
      SendLocalResponse(503, absl::StrCat("circuit breaker max_connections is open for cluster ",
                                          cluster.name));
    } else {
      cluster.stats.upstream_connect_failures->Inc();
      SendLocalResponse(502, absl::StrCat("upstream connect error: ", acquired.status().message()));
    }
    return false;
  }
  if ((*acquired)->connection().connecting()) {
    if (cluster.state->pending_requests.load(std::memory_order_relaxed) >=
        cluster.breakers.max_pending_requests) {
      (*acquired)->connection().Close();
      worker_.dispatcher().DeferredDelete(std::move(*acquired));
      cluster.stats.breaker_overflow_pending->Inc();
      SendLocalResponse(503, absl::StrCat("circuit breaker max_pending_requests is open for cluster ",
                                          cluster.name));
      return false;
    }
    cluster.state->pending_requests.fetch_add(1, std::memory_order_relaxed);
    r.pending = true;
  }
  r.upstream = std::move(*acquired);
  r.upstream->Attach(this, r.head_request, r.upgrade);
  r.endpoint_index = index;
  r.endpoint_key = endpoint.key;
  r.endpoint_active = worker_.picker().ActiveCounter(r.endpoint_key);
  ++*r.endpoint_active;
  endpoint.state->active_requests.fetch_add(1, std::memory_order_relaxed);
  ++r.attempts;
  cluster.stats.upstream_requests->Inc();
  if (r.replay.empty()) {
    r.upstream->connection().Write(r.upstream_head);
  } else {
    r.upstream->connection().Write2(r.upstream_head, r.replay);
  }
  if (r.request_complete && r.request_chunked && r.attempts > 1) {
    r.upstream->connection().Write2("0\r\n", r.request_trailers);
    r.upstream->connection().Write("\r\n");
  }
  if (r.route->retry.per_try_timeout > absl::ZeroDuration()) {
    per_try_timer_.Enable(r.route->retry.per_try_timeout);
  }
  return true;
}

uint64_t DownstreamConnection::HashKeyFor(const upstream::ClusterInfo& cluster,
                                          const http::MessageHead& head, std::string_view target) {
  const config::v1::HashPolicy& policy = cluster.hash_policy;
  std::string_view key;
  if (policy.has_header()) {
    if (const http::HeaderField* h = http::FindHeader(head.headers, policy.header())) key = h->value;
  } else if (policy.has_cookie()) {
    for (const http::HeaderField& h : head.headers) {
      if (!http::EqualsIgnoreCase(h.name, "cookie")) continue;
      std::string_view rest = h.value;
      while (!rest.empty() && key.empty()) {
        size_t semi = rest.find(';');
        std::string_view pair = rest.substr(0, semi);
        while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
        size_t eq = pair.find('=');
        if (eq != std::string_view::npos && pair.substr(0, eq) == policy.cookie()) {
          key = pair.substr(eq + 1);
        }
        if (semi == std::string_view::npos) break;
        rest.remove_prefix(semi + 1);
      }
    }
  } else if (policy.source_ip()) {
    key = peer_ip_;
  } else if (policy.path()) {
    key = target.substr(0, target.find('?'));
  }
  // No key (the header or cookie is absent): spread such requests randomly.
  if (key.empty()) return worker_.picker().Random();
  return upstream::HashKey(key);
}

bool DownstreamConnection::MayRetry(RetryReason reason, int status) {
  Request& r = *request_;
  const router::RouteEntry::Retry& retry = r.route->retry;
  if (r.response_started || !r.replayable || retry.num_retries == 0 ||
      r.retries >= static_cast<int>(retry.num_retries)) {
    return false;
  }
  bool wanted = false;
  switch (reason) {
    case RetryReason::kConnectFailure: wanted = retry.on_connect_failure; break;
    case RetryReason::kReset: wanted = retry.on_reset; break;
    case RetryReason::kStatus: wanted = retry.RetriesStatus(status); break;
  }
  if (!wanted) return false;
  const upstream::ClusterInfo& cluster = *r.cluster;
  if (!r.counted_retry && cluster.state->active_retries.load(std::memory_order_relaxed) >=
                              cluster.breakers.max_retries) {
    cluster.stats.breaker_overflow_retries->Inc();
    return false;
  }
  return true;
}

void DownstreamConnection::ScheduleRetry() {
  Request& r = *request_;
  ++r.retries;
  r.cluster->stats.retries->Inc();
  if (!r.counted_retry) {
    r.cluster->state->active_retries.fetch_add(1, std::memory_order_relaxed);
    r.counted_retry = true;
  }
  // Full jitter: a random wait in [0, min(max, base * 2^(n-1))].
  const router::RouteEntry::Retry& retry = r.route->retry;
  absl::Duration cap = retry.base_interval * (1 << std::min(r.retries - 1, 10));
  if (cap > retry.max_interval) cap = retry.max_interval;
  int64_t cap_us = std::max<int64_t>(1, absl::ToInt64Microseconds(cap));
  retry_timer_.Enable(absl::Microseconds(worker_.picker().Random() % (cap_us + 1)));
}

void DownstreamConnection::OnRetryTimer() {
  if (closed_ || !request_) return;
  if (!request_->replayable) {
    SendLocalResponse(502, "upstream failed and the request body was too large to send again");
    return;
  }
  ConnectUpstream();
}

void DownstreamConnection::OnPerTryTimeout() {
  if (closed_ || !request_ || !request_->upstream) return;
  Request& r = *request_;
  upstream::ReportOutcome(*r.cluster, r.cluster->endpoints[r.endpoint_index], 0);
  r.cluster->stats.upstream_timeouts->Inc();
  ReleaseUpstream(false);
  if (MayRetry(RetryReason::kReset, 0)) {
    ScheduleRetry();
    return;
  }
  if (r.response_started) {
    CloseNow();
    return;
  }
  SendLocalResponse(504, "upstream did not answer within the per-try timeout");
}

void DownstreamConnection::OnBody(std::string_view chunk) {
  if (!request_ || chunk.empty()) return;
  Request& r = *request_;
  std::string header;
  if (r.request_chunked) http::AppendChunkHeader(&header, chunk.size());
  if (r.replayable) {
    // Keep what is sent, to send it again on a retry (bounded).
    if (r.replay.size() + header.size() + chunk.size() + 2 > r.route->retry.max_replay_bytes) {
      r.replayable = false;
      std::string().swap(r.replay);
    } else {
      r.replay.append(header);
      r.replay.append(chunk);
      if (r.request_chunked) r.replay.append("\r\n");
    }
  }
  if (!r.upstream) return;  // between tries: kept in the replay buffer
  net::Connection& up = r.upstream->connection();
  if (r.request_chunked) {
    up.Write2(header, chunk);
    up.Write("\r\n");
  } else {
    up.Write(chunk);
  }
  if (up.output_size() > kHighWatermark) connection_->SetReadEnabled(false);
}

void DownstreamConnection::OnMessageComplete() {
  request_message_open_ = false;
  if (!request_) return;
  request_->request_complete = true;
  if (request_->request_chunked && request_->upstream) {
    request_->upstream->connection().Write2("0\r\n", request_->request_trailers);
    request_->upstream->connection().Write("\r\n");
  }
}

void DownstreamConnection::OnUpstreamConnected() {
  if (request_ && request_->pending) {
    request_->pending = false;
    request_->cluster->state->pending_requests.fetch_sub(1, std::memory_order_relaxed);
  }
}

void DownstreamConnection::OnTrailers(const std::vector<http::HeaderField>& trailers) {
  if (request_ && request_->request_chunked) EncodeTrailers(trailers, &request_->request_trailers);
}

void DownstreamConnection::OnUpstreamTrailers(const std::vector<http::HeaderField>& trailers) {
  // Only a chunked response to the client can carry them (not HTTP/1.0, not
  // a Content-Length body).
  if (request_ && request_->response_chunked) {
    EncodeTrailers(trailers, &request_->response_trailers);
  }
}

void DownstreamConnection::OnUpstreamWriteDrained() {
  // The upstream took the body bytes it was behind on: read the client again.
  if (!closed_ && !closing_ && request_ && !connection_->read_enabled()) {
    connection_->SetReadEnabled(true);
    ProcessInput();
  }
}

void DownstreamConnection::OnWriteDrained() {
  if (request_ && request_->upstream && request_->upstream_paused_reading) {
    request_->upstream_paused_reading = false;
    request_->upstream->connection().SetReadEnabled(true);
  }
}

void DownstreamConnection::OnUpstreamHead(const http::MessageHead& head) {
  Request& r = *request_;
  per_try_timer_.Disable();
  if (head.status == 101) {
    StartTunnel(head);
    return;
  }
  upstream::ReportOutcome(*r.cluster, r.cluster->endpoints[r.endpoint_index], head.status);
  if (MayRetry(RetryReason::kStatus, head.status)) {
    // Discard this response: the connection is closed, not drained.
    if (head.status >= 500) r.cluster->stats.upstream_responses_5xx->Inc();
    ReleaseUpstream(false);
    ScheduleRetry();
    return;
  }
  r.status = head.status;
  if (head.status >= 500) r.cluster->stats.upstream_responses_5xx->Inc();
  bool no_body = r.head_request || head.status == 204 || head.status == 304;
  if (r.client_http10 && !no_body && head.framing != http::BodyFraming::kContentLength) {
    close_after_response_ = true;  // HTTP/1.0 has no chunked coding: delimit by close
  }
  if (worker_.draining() || (request_message_open_ && r.has_body)) close_after_response_ = true;

  std::string& out = response_head_;
  out.clear();
  out.reserve(head.head_bytes + 96);
  out.append("HTTP/1.1 ");
  absl::StrAppend(&out, head.status);
  out.push_back(' ');
  out.append(head.reason.empty() ? http::ReasonPhrase(head.status) : head.reason);
  out.append("\r\n");
  std::vector<std::string_view> tokens = http::ConnectionTokens(head.headers);
  if (!r.filters.empty()) {
    // Policies see (and may change) the response's end-to-end fields.
    http::HeaderMap headers;
    for (const http::HeaderField& h : head.headers) {
      if (http::IsHopByHop(h.name, tokens)) continue;
      if (http::EqualsIgnoreCase(h.name, "content-length")) {
        if (no_body || head.framing == http::BodyFraming::kContentLength) {
          AppendHeader(&out, h.name, h.value);
        }
        continue;
      }
      headers.Add(h.name, h.value);
    }
    if (headers.Get("x-request-id") == nullptr) headers.Add("x-request-id", r.request_id);
    RunResponseFilters(head.status, headers);
    for (const http::HeaderMap::Field& f : headers.fields()) AppendHeader(&out, f.name, f.value);
  } else {
    bool has_request_id = false;
    for (const http::HeaderField& h : head.headers) {
      if (http::IsHopByHop(h.name, tokens)) continue;
      if (http::EqualsIgnoreCase(h.name, "content-length")) {
        if (no_body || head.framing == http::BodyFraming::kContentLength) {
          AppendHeader(&out, h.name, h.value);
        }
        continue;
      }
      if (http::EqualsIgnoreCase(h.name, "x-request-id")) has_request_id = true;
      AppendHeader(&out, h.name, h.value);
    }
    if (!has_request_id) AppendHeader(&out, "x-request-id", r.request_id);
  }
  if (!no_body) {
    if (head.framing == http::BodyFraming::kChunked ||
        head.framing == http::BodyFraming::kUntilClose) {
      if (!r.client_http10) {
        AppendHeader(&out, "transfer-encoding", "chunked");
        r.response_chunked = true;
      }
    } else if (head.framing == http::BodyFraming::kNone) {
      AppendHeader(&out, "content-length", "0");
    }
  }
  if (close_after_response_) {
    AppendHeader(&out, "connection", "close");
  } else if (r.client_http10) {
    AppendHeader(&out, "connection", "keep-alive");
  }
  out.append("\r\n");
  connection_->Write(out);
  r.response_started = true;
}

void DownstreamConnection::OnUpstreamBody(std::string_view bytes) {
  Request& r = *request_;
  if (r.tunnel) timer_.Enable(r.route->websocket_idle_timeout);
  if (r.response_chunked) {
    std::string header;
    http::AppendChunkHeader(&header, bytes.size());
    connection_->Write2(header, bytes);
    connection_->Write("\r\n");
  } else {
    connection_->Write(bytes);
  }
  if (connection_->output_size() > kHighWatermark && !r.upstream_paused_reading) {
    r.upstream_paused_reading = true;
    r.upstream->connection().SetReadEnabled(false);
  }
}

void DownstreamConnection::OnUpstreamComplete() {
  Request& r = *request_;
  if (r.response_chunked) {
    connection_->Write2("0\r\n", r.response_trailers);
    connection_->Write("\r\n");
  }
  bool reusable = r.upstream->reusable() && r.request_complete;
  if (!r.request_complete) close_after_response_ = true;
  ReleaseUpstream(reusable);
  FinishRequest();
}

void DownstreamConnection::OnUpstreamFailed(bool connect_failed, bool timed_out,
                                            const std::string& why) {
  if (closed_ || !request_) return;
  Request& r = *request_;
  if (r.tunnel) {
    // The upstream ended the WebSocket: what it sent reaches the client, then
    // the client connection closes.
    ReleaseUpstream(false);
    close_after_response_ = true;
    FinishRequest();
    return;
  }
  const upstream::ClusterStats& stats = r.cluster->stats;
  // A pooled connection the upstream had already closed: resend on another.
  if (!r.response_started && r.upstream && r.upstream->reused() &&
      !r.upstream->response_started() && !r.has_body && IsIdempotent(r.method) &&
      r.attempts < 3 + r.retries) {
    ReleaseUpstream(false);
    --r.attempts;  // not the endpoint's fault, not a retry
    ConnectUpstream();
    return;
  }
  if (connect_failed) {
    stats.upstream_connect_failures->Inc();
  } else {
    stats.upstream_resets->Inc();
  }
  if (timed_out) stats.upstream_timeouts->Inc();
  if (r.endpoint_index >= 0) {
    upstream::ReportOutcome(*r.cluster, r.cluster->endpoints[r.endpoint_index], 0);
  }
  ReleaseUpstream(false);
  if (MayRetry(connect_failed ? RetryReason::kConnectFailure : RetryReason::kReset, 0)) {
    ScheduleRetry();
    return;
  }
  if (r.response_started) {
    // Cut off mid-response: the client must see the cut, not a made-up status.
    CloseNow();
    return;
  }
  if (timed_out) {
    SendLocalResponse(504, absl::StrCat("upstream ", why));
  } else {
    SendLocalResponse(502, absl::StrCat("upstream ", why));
  }
}

void DownstreamConnection::OnRouteTimeout() {
  if (closed_ || !request_) return;
  Request& r = *request_;
  if (r.cluster) r.cluster->stats.upstream_timeouts->Inc();
  if (r.upstream) upstream::ReportOutcome(*r.cluster, r.cluster->endpoints[r.endpoint_index], 0);
  ReleaseUpstream(false);
  if (r.response_started) {
    CloseNow();
    return;
  }
  close_after_response_ = true;
  SendLocalResponse(504, "upstream did not answer within the route timeout");
}

void DownstreamConnection::ReleaseUpstream(bool reusable) {
  Request& r = *request_;
  per_try_timer_.Disable();
  if (r.pending) {
    r.pending = false;
    r.cluster->state->pending_requests.fetch_sub(1, std::memory_order_relaxed);
  }
  if (!r.upstream) return;
  if (r.endpoint_active) --*r.endpoint_active;
  r.endpoint_active = nullptr;
  r.cluster->endpoints[r.endpoint_index].state->active_requests.fetch_sub(
      1, std::memory_order_relaxed);
  if (!reusable) r.upstream->connection().Close();
  worker_.pool().Release(std::move(r.upstream), r.cluster->max_idle_per_endpoint);
}

void DownstreamConnection::SendLocalResponse(int status, std::string_view error,
                                             std::string_view extra_headers,
                                             std::string_view body_override,
                                             std::string_view content_type) {
  if (closed_) return;
  std::string request_id;
  if (request_) {
    request_id = request_->request_id;
  } else {
    worker_.NewRequestId(&request_id);
  }
  if (request_ && request_->response_started) {
    CloseNow();
    return;
  }
  if (request_ && request_->upstream) ReleaseUpstream(false);
  if (worker_.draining() || (request_message_open_ && request_ && request_->has_body) ||
      !request_) {
    close_after_response_ = true;
  }
  std::string body = error.empty() ? std::string(body_override) : http::ErrorBody(error, request_id);
  if (body == " ") body.clear();
  std::string out;
  out.append("HTTP/1.1 ");
  absl::StrAppend(&out, status);
  out.push_back(' ');
  out.append(http::ReasonPhrase(status));
  out.append("\r\n");
  std::string_view type = content_type.empty() ? std::string_view("text/plain") : content_type;
  if (request_ && request_->filters_entered > 0) {
    // The route's policies see the gateway's own responses too.
    http::HeaderMap headers;
    headers.Add("content-type", type);
    headers.Add("x-request-id", request_id);
    for (std::string_view rest = extra_headers; !rest.empty();) {
      size_t end = rest.find("\r\n");
      std::string_view line = rest.substr(0, end);
      size_t colon = line.find(':');
      if (colon != std::string_view::npos) {
        std::string_view value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
        headers.Add(line.substr(0, colon), value);
      }
      if (end == std::string_view::npos) break;
      rest.remove_prefix(end + 2);
    }
    RunResponseFilters(status, headers);
    AppendHeader(&out, "content-length", std::to_string(body.size()));
    for (const http::HeaderMap::Field& f : headers.fields()) AppendHeader(&out, f.name, f.value);
  } else {
    AppendHeader(&out, "content-type", type);
    AppendHeader(&out, "content-length", std::to_string(body.size()));
    AppendHeader(&out, "x-request-id", request_id);
    out.append(extra_headers);
  }
  if (close_after_response_) AppendHeader(&out, "connection", "close");
  out.append("\r\n");
  bool head_request = request_ && request_->head_request;
  if (head_request || body.empty()) {
    connection_->Write(out);
  } else {
    connection_->Write2(out, body);
  }
  if (!request_) {
    worker_.stats().downstream_responses_by_class[status / 100]->Inc();
    FinishConnectionAfterResponse();
    return;
  }
  request_->status = status;
  request_->response_started = true;
  FinishRequest();
}

void DownstreamConnection::FinishRequest() {
  Request& r = *request_;
  int status_class = r.status / 100;
  if (status_class >= 1 && status_class <= 5) {
    worker_.stats().downstream_responses_by_class[status_class]->Inc();
    if (r.route_stats) r.route_stats->by_class[status_class]->Inc();
  }
  if (request_message_open_ && r.has_body) close_after_response_ = true;
  if (r.cluster && r.retries > 0) {
    (r.status > 0 && r.status < 500 ? r.cluster->stats.retry_successes
                                    : r.cluster->stats.retries_exhausted)->Inc();
  }
  EndRequestAccounting();
  r.snapshot.reset();
  r.upstream.reset();
  spare_request_ = std::move(request_);
  FinishConnectionAfterResponse();
}

void DownstreamConnection::EndRequestAccounting() {
  route_timer_.Disable();
  retry_timer_.Disable();
  per_try_timer_.Disable();
  Request& r = *request_;
  if (r.counted_request) r.cluster->state->active_requests.fetch_sub(1, std::memory_order_relaxed);
  if (r.counted_retry) r.cluster->state->active_retries.fetch_sub(1, std::memory_order_relaxed);
  r.counted_request = r.counted_retry = false;
}

void DownstreamConnection::FinishConnectionAfterResponse() {
  if (close_after_response_ || worker_.draining()) {
    closing_ = true;
    timer_.Disable();
    if (connection_->CloseAfterFlush()) CloseNow();
    return;
  }
  parser_.Resume();
  connection_->SetReadEnabled(true);
  ArmIdleTimer();
  // Pipelined requests already buffered: continue on the next loop turn,
  // outside every callback that brought us here.
  if (!connection_->input().empty()) resume_timer_.Enable(absl::ZeroDuration());
}

void DownstreamConnection::OnClosed(net::CloseReason reason, int) {
  if (reason == net::CloseReason::kHandshakeFailed) {
    worker_.stats().downstream_tls_handshake_errors->Inc();
    SLUICE_LOG(kDebug, "TLS handshake from ", peer_ip_, " failed: ",
               connection_->transport().failure_reason());
  }
  CloseNow();
}

void DownstreamConnection::CloseNow() {
  if (closed_) return;
  closed_ = true;
  timer_.Disable();
  resume_timer_.Disable();
  if (request_) {
    if (request_->upstream || request_->pending) ReleaseUpstream(false);
    EndRequestAccounting();
  }
  connection_->Close();
  worker_.RemoveConnection(this);
}

}  // namespace sluice::server
