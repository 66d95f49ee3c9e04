// Upstream HTTP/1.1 connections and the per-worker pool of idle keep-alive
// connections, keyed by endpoint.
//
// An UpstreamConnection is owned by the request using it, or by the pool
// while idle. It parses responses with the shared HTTP/1 parser and hands
// the events to its current UpstreamEvents. An idle connection that the
// upstream closes (or that sends unsolicited bytes) leaves the pool at once.
//
// Worker thread only.
#ifndef SLUICE_DATAPLANE_UPSTREAM_CONNECTION_POOL_H_
#define SLUICE_DATAPLANE_UPSTREAM_CONNECTION_POOL_H_

#include <list>
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

class ConnectionPool;

// What a request sees of its upstream connection.
class UpstreamEvents {
 public:
  virtual ~UpstreamEvents() = default;
  virtual void OnUpstreamConnected() = 0;
  virtual void OnUpstreamHead(const http::MessageHead& head) = 0;
  virtual void OnUpstreamBody(std::string_view bytes) = 0;
  virtual void OnUpstreamComplete() = 0;
  // The connection failed or closed before the response completed.
  // `connect_failed`: it never connected (refused, timed out).
  virtual void OnUpstreamFailed(bool connect_failed, bool timed_out, const std::string& why) = 0;
  virtual void OnUpstreamWriteDrained() = 0;
};

class UpstreamConnection : public net::ConnectionCallbacks,
                           public http::Http1Callbacks,
                           public event::DeferredDeletable {
 public:
  UpstreamConnection(event::Dispatcher& dispatcher, ConnectionPool& pool, int fd,
                     std::string endpoint_key, absl::Duration connect_timeout,
                     std::shared_ptr<ClusterState> cluster_state,
                     std::shared_ptr<EndpointState> endpoint_state);
  ~UpstreamConnection() override;

  // Starts serving a request: events go to `events`.
  void Attach(UpstreamEvents* events, bool head_request);
  void Detach() { events_ = nullptr; }

  net::Connection& connection() { return *connection_; }
  const std::string& endpoint_key() const { return endpoint_key_; }
  bool reused() const { return requests_ > 1; }
  // Whether a response byte arrived for the current request.
  bool response_started() const { return response_started_; }
  // The response completed and the upstream allows another request.
  bool reusable() const { return reusable_; }

  // net::ConnectionCallbacks
  void OnReadable() override;
  void OnWriteDrained() override;
  void OnConnected() override;
  void OnClosed(net::CloseReason reason, int error) override;
  // http::Http1Callbacks
  void OnHead(const http::MessageHead& head) override;
  void OnBody(std::string_view chunk) override;
  void OnMessageComplete() override;

 private:
  friend class ConnectionPool;
  void ReadResponse();

  event::Dispatcher& dispatcher_;
  ConnectionPool& pool_;
  std::unique_ptr<net::Connection> connection_;
  std::string endpoint_key_;
  http::Http1Parser parser_;
  event::Timer connect_timer_;
  UpstreamEvents* events_ = nullptr;
  int requests_ = 0;
  bool response_started_ = false;
  bool response_done_ = false;
  bool reusable_ = false;
  bool interim_ = false;
  bool idle_ = false;
  std::list<UpstreamConnection*>::iterator idle_position_;
  // Open-connection counts for circuit breakers and the admin page.
  std::shared_ptr<ClusterState> cluster_state_;
  std::shared_ptr<EndpointState> endpoint_state_;
};

class ConnectionPool {
 public:
  explicit ConnectionPool(event::Dispatcher& dispatcher) : dispatcher_(dispatcher) {}
  ~ConnectionPool();

  // An idle connection to the endpoint if there is one, else a new one that
  // is connecting. RESOURCE_EXHAUSTED when a new connection would pass the
  // cluster's max_connections; UNAVAILABLE when the socket cannot be created.
  absl::StatusOr<std::unique_ptr<UpstreamConnection>> Acquire(const ClusterInfo& cluster,
                                                              const EndpointInfo& endpoint);
  // Back to the pool after a complete response on a reusable connection;
  // otherwise (or when the endpoint's idle list is full) it is closed.
  void Release(std::unique_ptr<UpstreamConnection> connection, uint32_t max_idle);
  // Closes idle connections to endpoints not in `keep`.
  void CloseIdleExcept(const std::set<std::string>& keep);
  void CloseAllIdle();
  size_t idle_count() const;

 private:
  friend class UpstreamConnection;
  void RemoveIdle(UpstreamConnection* connection);

  event::Dispatcher& dispatcher_;
  std::unordered_map<std::string, std::list<UpstreamConnection*>> idle_;
};

}  // namespace sluice::upstream

#endif  // SLUICE_DATAPLANE_UPSTREAM_CONNECTION_POOL_H_
