// Upstream HTTP/1.1 connections and the per-worker pool of idle keep-alive
// connections, keyed by the endpoint's pool key (EndpointInfo::pool_key: the
// endpoint, and for a TLS cluster also the cluster and its TLS context).
//
// An UpstreamConnection is owned by the request using it, or by the pool
// while idle. It parses responses with the shared HTTP/1 parser and hands
// the events to its current UpstreamEvents. An idle connection that the
// upstream closes (or that sends unsolicited bytes) leaves the pool at once.
// For a TLS cluster the connection runs its handshake (verifying the
// upstream) before OnUpstreamConnected(); the cluster's connect_timeout
// covers the TCP connect and the handshake together, and a failed handshake
// is a connect failure.
//
// Worker thread only.
#ifndef SLUICE_DATAPLANE_UPSTREAM_CONNECTION_POOL_H_
#define SLUICE_DATAPLANE_UPSTREAM_CONNECTION_POOL_H_

#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/http1_parser.h"
#include "dataplane/net/connection.h"
#include "dataplane/upstream/cluster.h"

namespace sluice::upstream {

// What OnUpstreamFailed says when the upstream closed a tunnel (a WebSocket)
// normally: its end, not a failure.
inline constexpr char kTunnelClosed[] = "closed the tunnel";

class ConnectionPool;

// What a request sees of its upstream connection.
class UpstreamEvents {
 public:
  virtual ~UpstreamEvents() = default;
  virtual void OnUpstreamConnected() = 0;
  // HTTP/2: the upstream's SETTINGS came, after OnUpstreamConnected (until
  // then the connect timeout runs and a failure is a connect failure).
  virtual void OnUpstreamSettled() {}
  virtual void OnUpstreamHead(const http::MessageHead& head) = 0;
  virtual void OnUpstreamBody(std::string_view bytes) = 0;
  virtual void OnUpstreamComplete() = 0;
  // The connection failed or closed before the response completed.
  // `connect_failed`: it never connected (refused, timed out, TLS handshake
  // failed).
  virtual void OnUpstreamFailed(bool connect_failed, bool timed_out, const std::string& why) = 0;
  virtual void OnUpstreamWriteDrained() = 0;
  // HTTP/2: the upstream did not process the request (REFUSED_STREAM, a
  // GOAWAY below its stream, or the connection went before the request
  // left, e.g. an AUTO endpoint chose HTTP/1.1): it may be sent again.
  virtual void OnUpstreamRefused(const std::string& why) { OnUpstreamFailed(false, false, why); }
  // HTTP/2: the upstream reset the stream with `error_code` (other than
  // REFUSED_STREAM, which is OnUpstreamRefused); then as OnUpstreamFailed.
  virtual void OnUpstreamReset(uint32_t error_code, const std::string& why) {
    OnUpstreamFailed(false, false, why);
  }
  // HTTP/2: the upstream closed or reset the connection (a GOAWAY or not) after
  // the request left and before its response began: it may have acted on
  // it (a crash while processing it), as with a pooled HTTP/1 connection
  // found closed; then as OnUpstreamFailed.
  virtual void OnUpstreamLost(const std::string& why) { OnUpstreamFailed(false, false, why); }
  // The upstream's response broke HTTP (an invalid head or body, a 101 that
  // switches to no WebSocket, an HTTP/2 stream reset as malformed): then as
  // OnUpstreamFailed.
  virtual void OnUpstreamInvalidResponse(const std::string& why) {
    OnUpstreamFailed(false, false, why);
  }
  // Chunked trailer fields of the response (before OnUpstreamComplete).
  virtual void OnUpstreamTrailers(const std::vector<http::HeaderField>& trailers) {}
  // An informational (1xx) response before the final head, other than 100
  // Continue and 101 (103 Early Hints, say); `fields` are views valid during
  // the call.
  virtual void OnUpstreamInformational(int status, const std::vector<http::HeaderField>& fields) {}
};

class UpstreamConnection : public net::ConnectionCallbacks,
                           public http::Http1Callbacks,
                           public event::DeferredDeletable {
 public:
  // 1xx heads an exchange may get before its final response (more fail it
  // with a 502: an upstream sending them forever kept the proxy reading until
  // the route timeout); 8 of them go to the client.
  static constexpr int kMaxInterimResponses = 32;
  static constexpr char kTooManyInterimResponses[] =
      "invalid response: more than 32 interim (1xx) responses";
  // `transport`: the TLS socket for a TLS cluster, nullptr for plain TCP.
  UpstreamConnection(event::Dispatcher& dispatcher, ConnectionPool& pool, int fd,
                     std::unique_ptr<net::TransportSocket> transport, std::string pool_key,
                     absl::Duration connect_timeout,
                     std::shared_ptr<ClusterState> cluster_state,
                     std::shared_ptr<EndpointState> endpoint_state);
  ~UpstreamConnection() override;

  // Starts serving a request: events go to `events`. `upgrade`: the request
  // asks for a protocol switch (WebSocket); a 101 answer then turns the
  // connection into a tunnel: OnUpstreamHead(101), then every byte from the
  // upstream as OnUpstreamBody, and OnUpstreamFailed when it closes. A 101
  // to a request that asked no upgrade fails the request (502).
  void Attach(UpstreamEvents* events, bool head_request, bool upgrade = false);
  bool tunnel() const { return tunnel_; }
  void Detach() { events_ = nullptr; }

  net::Connection& connection() { return *connection_; }
  const std::string& pool_key() const { return pool_key_; }
  bool reused() const { return requests_ > 1; }
  // Whether a response byte arrived for the current request.
  bool response_started() const { return response_started_; }
  // The response completed and the upstream allows another request.
  bool reusable() const { return reusable_; }
  // Gives up its place in the open-connection counts (max_connections),
  // once; the destructor does it otherwise. For a closed connection whose
  // deletion is deferred: a request acquiring one right after it must not
  // find the cluster full of connections that are gone.
  void Uncount();

  // net::ConnectionCallbacks
  void OnReadable() override;
  void OnWriteDrained() override;
  void OnConnected() override;
  void OnClosed(net::CloseReason reason, int error) override;
  // http::Http1Callbacks
  void OnHead(const http::MessageHead& head) override;
  void OnBody(std::string_view chunk) override;
  void OnMessageComplete() override;
  void OnTrailers(const std::vector<http::HeaderField>& trailers) override;

 private:
  friend class ConnectionPool;
  void ReadResponse();
  void PassTunnelBytes();

  event::Dispatcher& dispatcher_;
  ConnectionPool& pool_;
  std::unique_ptr<net::Connection> connection_;
  std::string pool_key_;
  http::Http1Parser parser_;
  event::Timer connect_timer_;
  UpstreamEvents* events_ = nullptr;
  int requests_ = 0;
  bool response_started_ = false;
  bool response_done_ = false;
  bool head_seen_ = false;  // a response head (1xx included) was parsed
  bool complete_reported_ = false;  // OnUpstreamComplete was called
  bool reusable_ = false;
  bool interim_ = false;
  bool idle_ = false;
  bool upgrade_requested_ = false;
  bool tunnel_ = false;            // a 101 answered the upgrade: raw bytes now
  // A response the exchange cannot take: a 101 nobody asked for, or one
  // that does not switch to the WebSocket the client asked for (no Upgrade,
  // or another protocol), or more than kMaxInterimResponses 1xx: why, else
  // nullptr.
  const char* invalid_response_ = nullptr;
  int interim_responses_ = 0;  // 1xx of the current exchange
  // Neighbours in the pool's idle list of its endpoint, while idle.
  UpstreamConnection* idle_prev_ = nullptr;
  UpstreamConnection* idle_next_ = nullptr;
  // While idle: the pool's sweep count when it was released, and how many
  // sweeps (seconds) it may stay unused.
  uint64_t idle_sweep_ = 0;
  uint64_t idle_sweeps_allowed_ = 0;
  // Open-connection counts for circuit breakers and the admin page.
  bool counted_ = true;
  // This worker's count of connections to the cluster (ConnectionPool::
  // mine_), while counted_; nullptr for one made outside Acquire.
  std::shared_ptr<uint32_t> worker_count_;
  std::shared_ptr<ClusterState> cluster_state_;
  std::shared_ptr<EndpointState> endpoint_state_;
};

class ConnectionPool {
 public:
  // How often idle connections are looked at (while there are any): one
  // unused for its cluster's idle_connection_timeout closes within this
  // much after it.
  static constexpr absl::Duration kSweepInterval = absl::Seconds(1);

  explicit ConnectionPool(event::Dispatcher& dispatcher)
      : dispatcher_(dispatcher), sweep_timer_(dispatcher, [this] { Sweep(); }) {}
  ~ConnectionPool();

  // An idle connection under the endpoint's pool key if there is one, else a
  // new one that is connecting (through the cluster's transport, TLS or
  // plain). RESOURCE_EXHAUSTED when a new connection would pass the
  // cluster's max_connections -- unless this worker has no connection to
  // the cluster (as Envoy's pools do: a worker is never starved by idle
  // connections other workers hold); UNAVAILABLE when the socket (or its
  // TLS session) cannot be created.
  // `fresh`: a new connection whatever is idle.
  // `may_wait` false (the cluster's max_pending_requests is full): an idle
  // connection or FAILED_PRECONDITION, never a new one to wait for.
  absl::StatusOr<std::unique_ptr<UpstreamConnection>> Acquire(const ClusterInfo& cluster,
                                                              const EndpointInfo& endpoint,
                                                              bool fresh = false,
                                                              bool may_wait = true);
  // Back to the pool after a complete response on a reusable connection;
  // otherwise (or when the endpoint's idle list is full, or its pool key
  // left the config while the request ran) it is closed. Unused for
  // `idle_sweeps` sweeps (IdleSweeps of the cluster's timeout), it is closed
  // then.
  // The limits are the config's the request ran with; once a config has
  // given the key its limits (Tighten), those win: a connection busy while
  // they were lowered gets the lowered ones.
  void Release(std::unique_ptr<UpstreamConnection> connection, uint32_t max_idle,
               uint64_t idle_sweeps = 60);
  // Closes it, frees its place in the counts and deletes it once the
  // current event is over.
  void Discard(std::unique_ptr<UpstreamConnection> connection);
  // An idle timeout in sweeps: rounded up to whole kSweepIntervals.
  static uint64_t IdleSweeps(absl::Duration idle_timeout) {
    return static_cast<uint64_t>(absl::ToInt64Seconds(absl::Ceil(idle_timeout, kSweepInterval)));
  }
  // Closes idle connections whose pool key is not in `keep`, the keys of
  // the config from now on: a busy connection of another key closes when it
  // is released.
  void CloseIdleExcept(const std::set<std::string>& keep);
  // A new config's limits for `pool_key` reach the connections idle now:
  // beyond `max_idle`, the least recently used close; each may stay unused
  // `idle_timeout` since it was released, if that is less than it had. The
  // connections released from now on get them too (Release).
  void Tighten(const std::string& pool_key, uint32_t max_idle, uint64_t idle_sweeps);
  void CloseAllIdle();
  size_t idle_count() const;

 private:
  friend class UpstreamConnection;
  // One endpoint's idle connections, the most recently released first,
  // linked through the connections themselves: taking one and giving one
  // back allocate nothing. An endpoint keeps its (empty) list until
  // CloseIdleExcept drops its key.
  struct IdleList {
    UpstreamConnection* head = nullptr;
    size_t size = 0;
    // The current config's limits for the key (Tighten); unset before.
    bool limits_known = false;
    uint32_t max_idle = 0;
    uint64_t idle_sweeps = 0;
    void PushFront(UpstreamConnection* c);
    UpstreamConnection* PopFront();
    void Erase(UpstreamConnection* c);
  };
  void RemoveIdle(UpstreamConnection* connection);
  // At the cluster's max_connections: closes one idle connection of this
  // worker's to any of the cluster's endpoints, so a connection a request
  // needs is not refused for one nobody uses. False when there is none.
  bool CloseOneIdle(const ClusterInfo& cluster);
  // Closes the connections idle past their timeout; again in a second while
  // any is idle.
  void Sweep();

  event::Dispatcher& dispatcher_;
  event::Timer sweep_timer_;
  uint64_t sweeps_ = 0;
  // An entry per pool key of the current config (once CloseIdleExcept has
  // said which: keys_known_), idle connections or not.
  std::unordered_map<std::string, IdleList> idle_;
  bool keys_known_ = false;
  // This worker's open connections per cluster (by its shared state),
  // busy or idle: a worker with none may open one over max_connections.
  // Shared with the connections, which may outlive the pool.
  std::unordered_map<const ClusterState*, std::shared_ptr<uint32_t>> mine_;
};

}  // namespace sluice::upstream

#endif  // SLUICE_DATAPLANE_UPSTREAM_CONNECTION_POOL_H_
