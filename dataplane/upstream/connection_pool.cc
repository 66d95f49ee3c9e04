#include "dataplane/upstream/connection_pool.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "dataplane/http/http_util.h"
#include "dataplane/net/socket.h"

namespace sluice::upstream {

UpstreamConnection::UpstreamConnection(event::Dispatcher& dispatcher, ConnectionPool& pool,
                                       int fd, std::unique_ptr<net::TransportSocket> transport,
                                       std::string pool_key, absl::Duration connect_timeout,
                                       std::shared_ptr<ClusterState> cluster_state,
                                       std::shared_ptr<EndpointState> endpoint_state)
    : dispatcher_(dispatcher),
      pool_(pool),
      connection_(std::make_unique<net::Connection>(dispatcher, fd, /*connecting=*/true,
                                                    std::move(transport))),
      pool_key_(std::move(pool_key)),
      parser_(http::Http1Parser::Mode::kResponse, this),
      // Runs until OnConnected(), which for TLS comes after the handshake.
      connect_timer_(dispatcher, [this] {
        bool handshaking = !connection_->connecting() && !connection_->handshake_complete();
        connection_->Close();
        if (events_) {
          events_->OnUpstreamFailed(
              true, true, handshaking ? "connect timeout in the TLS handshake" : "connect timeout");
        }
      }),
      cluster_state_(std::move(cluster_state)),
      endpoint_state_(std::move(endpoint_state)) {
  connection_->SetCallbacks(this);
  // An upstream may answer before it has read the whole request (a 403 or
  // 413 to an upload) and close: the write that then fails must not lose
  // the answer already in the socket (RFC 9112 9.6). Before: a held body,
  // written in one go, got the reset first and the client a 502.
  connection_->ReadBeforeWriteFailure();
  connect_timer_.Enable(connect_timeout);
  cluster_state_->connections.fetch_add(1, std::memory_order_relaxed);
  endpoint_state_->connections.fetch_add(1, std::memory_order_relaxed);
}

UpstreamConnection::~UpstreamConnection() { Uncount(); }

void UpstreamConnection::Uncount() {
  if (!counted_) return;
  counted_ = false;
  if (worker_count_) --*worker_count_;
  cluster_state_->connections.fetch_sub(1, std::memory_order_relaxed);
  endpoint_state_->connections.fetch_sub(1, std::memory_order_relaxed);
}

void UpstreamConnection::Attach(UpstreamEvents* events, bool head_request, bool upgrade) {
  events_ = events;
  upgrade_requested_ = upgrade;
  tunnel_ = false;
  invalid_response_ = nullptr;
  interim_responses_ = 0;
  ++requests_;
  response_started_ = false;
  response_done_ = false;
  head_seen_ = false;
  complete_reported_ = false;
  reusable_ = false;
  interim_ = false;
  parser_.Reset();
  parser_.SetNextResponseIsForHead(head_request);
}

void UpstreamConnection::OnConnected() {
  connect_timer_.Disable();
  if (events_) events_->OnUpstreamConnected();
}

void UpstreamConnection::OnWriteDrained() {
  if (events_) events_->OnUpstreamWriteDrained();
}

void UpstreamConnection::OnReadable() {
  if (idle_) {
    // Unsolicited bytes on an idle connection: it cannot be trusted.
    connection_->Close();
    pool_.RemoveIdle(this);
    return;
  }
  ReadResponse();
}

void UpstreamConnection::ReadResponse() {
  net::Buffer& input = connection_->input();
  if (tunnel_) {
    PassTunnelBytes();
    return;
  }
  while (!input.empty() && events_ != nullptr && !response_done_ && !tunnel_) {
    response_started_ = true;
    auto result = parser_.Feed(input.view());
    input.Drain(result.consumed);
    if (result.error != http::ParseError::kNone) {
      std::string why = absl::StrCat("invalid response: ", parser_.error_detail());
      connection_->Close();
      if (events_) events_->OnUpstreamInvalidResponse(why);
      return;
    }
    if (invalid_response_ != nullptr) {
      connection_->Close();
      if (events_) events_->OnUpstreamInvalidResponse(invalid_response_);
      return;
    }
    if (result.consumed == 0) break;  // incomplete head: wait for more
  }
  if (tunnel_) {
    PassTunnelBytes();  // bytes that came with the 101
    return;
  }
  if (response_done_ && !complete_reported_) {
    // Reported once the parser returned and its bytes were drained: bytes
    // left over (past Content-Length, a body on a HEAD response) mean the
    // upstream said more than its framing, and the connection is never
    // pooled with them.
    if (!input.empty()) reusable_ = false;
    complete_reported_ = true;
    if (events_) events_->OnUpstreamComplete();
  }
}

void UpstreamConnection::PassTunnelBytes() {
  net::Buffer& input = connection_->input();
  if (input.empty() || events_ == nullptr) return;
  std::string_view bytes = input.view();
  size_t n = bytes.size();
  events_->OnUpstreamBody(bytes);
  input.Drain(n);
}

void UpstreamConnection::OnClosed(net::CloseReason reason, int error) {
  connect_timer_.Disable();
  if (idle_) {
    pool_.RemoveIdle(this);
    return;
  }
  if (events_ == nullptr || response_done_) return;
  if (reason == net::CloseReason::kConnectFailed) {
    events_->OnUpstreamFailed(true, false, absl::StrCat("connect failed: ", strerror(error)));
    return;
  }
  if (reason == net::CloseReason::kHandshakeFailed) {
    // "connect failed: TLS handshake: certificate verify failed: ..."
    events_->OnUpstreamFailed(
        true, false,
        absl::StrCat("connect failed: TLS ", connection_->transport().failure_reason()));
    return;
  }
  if (tunnel_) {
    // A close ends a tunnel normally; a reset is the upstream failing it.
    events_->OnUpstreamFailed(false, false,
                              reason == net::CloseReason::kReset
                                  ? absl::StrCat("reset the tunnel: ",
                                                 net::ResetReason(connection_->transport(), error))
                                  : std::string(kTunnelClosed));
    return;
  }
  if (response_started_ && parser_.FinishOnClose() == http::ParseError::kNone && response_done_) {
    if (connection_->transport().truncated()) {
      // Over TLS such a response is whole only with close_notify (RFC 9112
      // 9.8): without it, it may have been cut.
      events_->OnUpstreamFailed(false, false,
                                "closed the connection without TLS close_notify, so the response "
                                "it delimited may be cut short");
      return;
    }
    if (reason == net::CloseReason::kReset) {
      // A reset is no end of a body the close delimits: it may be cut (as
      // nginx and Envoy take it).
      events_->OnUpstreamFailed(
          false, false,
          absl::StrCat("reset the connection (", net::ResetReason(connection_->transport(), error),
                       "), so the response it delimited may be cut short"));
      return;
    }
    // A response delimited by the close completed.
    complete_reported_ = true;
    events_->OnUpstreamComplete();
    return;
  }
  if (reason != net::CloseReason::kReset && response_started_ && !head_seen_ &&
      !connection_->input().empty()) {
    // Bytes that never became a head: say which kind (it read as a plain
    // close, which sent operators to look for a crash).
    const std::string_view got = connection_->input().view();
    const std::string_view prefix = got.substr(0, 5);
    events_->OnUpstreamFailed(
        false, false,
        std::string_view("HTTP/").substr(0, prefix.size()) == prefix
            ? absl::StrCat("closed the connection in the middle of the response head (after ",
                           got.size(), " bytes)")
            : absl::StrCat("sent ", got.size(),
                           " bytes that are no HTTP response (no status line), then closed "
                           "the connection"));
    return;
  }
  events_->OnUpstreamFailed(false, false,
                            reason == net::CloseReason::kReset
                                ? absl::StrCat("connection reset: ",
                                               net::ResetReason(connection_->transport(), error))
                                : "closed the connection");
}

void UpstreamConnection::OnHead(const http::MessageHead& head) {
  head_seen_ = true;
  if (invalid_response_ != nullptr) return;  // failed: ReadResponse() reports it
  if (head.status == 101) {
    // RFC 9110 15.2.2: a 101 names the protocol in Upgrade; the client
    // asked for websocket only (the one upgrade a route forwards).
    const http::HeaderField* upgrade = http::FindHeader(head.headers, "upgrade");
    if (!upgrade_requested_) {
      invalid_response_ =
          "answered 101 Switching Protocols to a request that asked for no upgrade";
      return;
    }
    if (upgrade == nullptr || !http::HasToken(upgrade->value, "websocket")) {
      invalid_response_ =
          "answered 101 Switching Protocols without switching to websocket (its Upgrade "
          "field is missing or names another protocol)";
      return;
    }
    tunnel_ = true;
    reusable_ = false;
    response_started_ = true;
    if (events_) events_->OnUpstreamHead(head);
    return;
  }
  interim_ = head.status >= 100 && head.status < 200;
  if (interim_ && ++interim_responses_ > kMaxInterimResponses) {
    invalid_response_ = kTooManyInterimResponses;
    parser_.Pause();
    return;
  }
  if (interim_) {
    // 100 Continue answers an Expect the gateway took on itself; the
    // others go to the client (RFC 9110 15.2). The final response follows.
    if (head.status != 100 && events_) events_->OnUpstreamInformational(head.status, head.headers);
    return;
  }
  reusable_ = head.keep_alive && head.framing != http::BodyFraming::kUntilClose;
  if (events_) events_->OnUpstreamHead(head);
}

void UpstreamConnection::OnBody(std::string_view chunk) {
  if (events_) events_->OnUpstreamBody(chunk);
}

void UpstreamConnection::OnTrailers(const std::vector<http::HeaderField>& trailers) {
  if (events_ && !interim_) events_->OnUpstreamTrailers(trailers);
}

void UpstreamConnection::OnMessageComplete() {
  if (tunnel_ || invalid_response_ != nullptr) return;  // the parser pauses itself after a 101
  if (interim_) {
    interim_ = false;
    return;
  }
  response_done_ = true;
  parser_.Pause();  // ReadResponse() reports it once the parser returned
}

ConnectionPool::~ConnectionPool() { CloseAllIdle(); }

absl::StatusOr<std::unique_ptr<UpstreamConnection>> ConnectionPool::Acquire(
    const ClusterInfo& cluster, const EndpointInfo& endpoint, bool fresh, bool may_wait) {
  // A pooled connection holds no unread byte: Release() refuses one with
  // bytes past the response's framing, and an idle one that receives any is
  // closed when the loop reads them (OnReadable). Bytes that arrive after
  // the reuse began (from the same loop turn until the next request's
  // response would come: tens of milliseconds for an upstream that sends
  // a late extra response) cannot be told from the next response: HTTP/1.1
  // has no request ids, so no proxy can close that window (nginx serves
  // them as well); a peek before each reuse would only narrow it, at ~3%
  // of throughput. What the next exchange reads past its own framing then
  // closes the connection, so it does not carry on.
  auto it = fresh ? idle_.end() : idle_.find(endpoint.pool_key);
  if (it != idle_.end() && it->second.head != nullptr) {
    UpstreamConnection* c = it->second.PopFront();
    c->idle_ = false;
    cluster.stats.connections_reused->Inc();
    return std::unique_ptr<UpstreamConnection>(c);
  }
  if (!may_wait) return absl::FailedPreconditionError("max_pending_requests");
  std::shared_ptr<uint32_t>& mine = mine_[cluster.state.get()];
  if (mine == nullptr) mine = std::make_shared<uint32_t>(0);
  if (cluster.state->connections.load(std::memory_order_relaxed) >=
          cluster.breakers.max_connections &&
      !CloseOneIdle(cluster) && *mine > 0) {
    return absl::ResourceExhaustedError("max_connections");
  }
  std::unique_ptr<net::TransportSocket> transport;
  if (cluster.transport != nullptr) {
    // HTTP/1.1 whatever the cluster's protocol: an AUTO cluster's endpoint
    // that speaks h2 too must not pick it for a connection of this pool.
    transport = cluster.transport->CreateHttp1();
    // Never fall back to plain TCP: the request would go out unencrypted.
    if (transport == nullptr) return absl::UnavailableError("TLS: cannot start a session");
  }
  auto fd = net::ConnectNonBlocking(endpoint.address);
  if (!fd.ok()) return fd.status();
  cluster.stats.connections_opened->Inc();
  auto connection = std::make_unique<UpstreamConnection>(
      dispatcher_, *this, *fd, std::move(transport), endpoint.pool_key, cluster.connect_timeout,
      cluster.state, endpoint.state);
  connection->connection().SetPeerIsLocal(net::IsLoopback(endpoint.address.storage));
  connection->worker_count_ = mine;
  ++*mine;
  return connection;
}

void ConnectionPool::Release(std::unique_ptr<UpstreamConnection> connection, uint32_t max_idle,
                             uint64_t idle_sweeps) {
  connection->Detach();
  auto it = idle_.find(connection->pool_key());
  if (it == idle_.end()) {
    if (keys_known_) {
      // Its endpoint left the config while the request ran: nothing would
      // reuse or close it, and it would hold a place in the cluster's
      // max_connections for ever.
      Discard(std::move(connection));
      return;
    }
    it = idle_.try_emplace(connection->pool_key()).first;
  }
  IdleList& list = it->second;
  if (list.limits_known) {
    max_idle = list.max_idle;
    idle_sweeps = list.idle_sweeps;
  }
  if (!connection->reusable() || !connection->connection().open() ||
      connection->connection().output_size() > 0 || !connection->connection().input().empty() ||
      list.size >= max_idle) {
    Discard(std::move(connection));
    return;
  }
  UpstreamConnection* c = connection.release();
  c->idle_ = true;
  // The request may have paused reading (its client was behind) in the read
  // that completed the response. Idle, the connection reads again: to see
  // the upstream close it, and for the next request's response, which
  // nothing else would turn reading back on for (it waited out the route
  // timeout).
  c->connection().SetReadEnabled(true);
  c->connection().input().ShrinkIfEmpty();
  // No clock read per request: the sweep counts seconds.
  c->idle_sweep_ = sweeps_;
  c->idle_sweeps_allowed_ = idle_sweeps;
  list.PushFront(c);
  if (!sweep_timer_.enabled()) sweep_timer_.Enable(kSweepInterval);
}

void ConnectionPool::Sweep() {
  ++sweeps_;
  bool any = false;
  for (auto& [key, list] : idle_) {
    for (UpstreamConnection* c = list.head; c != nullptr;) {
      UpstreamConnection* next = c->idle_next_;
      if (sweeps_ - c->idle_sweep_ > c->idle_sweeps_allowed_) {
        list.Erase(c);
        c->idle_ = false;
        Discard(std::unique_ptr<UpstreamConnection>(c));
      } else {
        any = true;
      }
      c = next;
    }
  }
  if (any) sweep_timer_.Enable(kSweepInterval);
}

void ConnectionPool::IdleList::PushFront(UpstreamConnection* c) {
  c->idle_prev_ = nullptr;
  c->idle_next_ = head;
  if (head != nullptr) head->idle_prev_ = c;
  head = c;
  ++size;
}

UpstreamConnection* ConnectionPool::IdleList::PopFront() {
  UpstreamConnection* c = head;
  Erase(c);
  return c;
}

void ConnectionPool::IdleList::Erase(UpstreamConnection* c) {
  if (c->idle_prev_ != nullptr) {
    c->idle_prev_->idle_next_ = c->idle_next_;
  } else {
    head = c->idle_next_;
  }
  if (c->idle_next_ != nullptr) c->idle_next_->idle_prev_ = c->idle_prev_;
  c->idle_prev_ = c->idle_next_ = nullptr;
  --size;
}

bool ConnectionPool::CloseOneIdle(const ClusterInfo& cluster) {
  for (const EndpointInfo& endpoint : cluster.endpoints) {
    auto it = idle_.find(endpoint.pool_key);
    if (it == idle_.end() || it->second.head == nullptr) continue;
    std::unique_ptr<UpstreamConnection> idle(it->second.PopFront());
    idle->idle_ = false;
    idle->connection().Close();
    idle.reset();  // its place in the cluster's count is free now
    return true;
  }
  return false;
}

void ConnectionPool::RemoveIdle(UpstreamConnection* connection) {
  auto it = idle_.find(connection->pool_key());
  if (it == idle_.end()) return;
  it->second.Erase(connection);
  connection->idle_ = false;
  Discard(std::unique_ptr<UpstreamConnection>(connection));
}

void ConnectionPool::Discard(std::unique_ptr<UpstreamConnection> connection) {
  connection->connection().Close();
  connection->Uncount();
  dispatcher_.DeferredDelete(std::move(connection));
}

void ConnectionPool::CloseIdleExcept(const std::set<std::string>& keep) {
  // A new config: forget the counts of clusters this worker has no
  // connection to (their state may be gone).
  for (auto it = mine_.begin(); it != mine_.end();) {
    if (*it->second == 0 && it->second.use_count() == 1) {
      it = mine_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = idle_.begin(); it != idle_.end();) {
    if (keep.count(it->first)) {
      ++it;
      continue;
    }
    while (it->second.head != nullptr) {
      UpstreamConnection* c = it->second.PopFront();
      c->idle_ = false;
      Discard(std::unique_ptr<UpstreamConnection>(c));
    }
    it = idle_.erase(it);
  }
  // The keys of the config: a connection released to another key closes.
  for (const std::string& key : keep) idle_.try_emplace(key);
  keys_known_ = true;
}

void ConnectionPool::Tighten(const std::string& pool_key, uint32_t max_idle,
                             uint64_t allowed) {
  auto it = idle_.find(pool_key);
  if (it == idle_.end()) return;
  it->second.limits_known = true;
  it->second.max_idle = max_idle;
  it->second.idle_sweeps = allowed;
  size_t kept = 0;
  for (UpstreamConnection* c = it->second.head; c != nullptr;) {  // most recent first
    UpstreamConnection* next = c->idle_next_;
    if (++kept > max_idle) {
      it->second.Erase(c);
      c->idle_ = false;
      Discard(std::unique_ptr<UpstreamConnection>(c));
    } else {
      c->idle_sweeps_allowed_ = std::min(c->idle_sweeps_allowed_, allowed);
    }
    c = next;
  }
}

void ConnectionPool::CloseAllIdle() { CloseIdleExcept({}); }

size_t ConnectionPool::idle_count() const {
  size_t n = 0;
  for (const auto& [key, list] : idle_) n += list.size;
  return n;
}

}  // namespace sluice::upstream
