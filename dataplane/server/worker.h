// Worker: one thread with its own event loop, its own SO_REUSEPORT socket per
// listener, its connections (they never move between threads), its upstream
// connection pool and endpoint picker. The request path reads only
// worker-local state and the immutable snapshot: no locks.
//
// Start()/Stop()/Publish()/StartDrain() are called from the main or config
// thread; everything else runs on the worker's thread.
#ifndef SLUICE_DATAPLANE_SERVER_WORKER_H_
#define SLUICE_DATAPLANE_SERVER_WORKER_H_

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/accept_backoff.h"
#include "dataplane/config/snapshot.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/net/lingering_close.h"
#include "dataplane/stats/stats.h"
#include "dataplane/upstream/connection_pool.h"
#include "dataplane/upstream/http2_pool.h"
#include "dataplane/upstream/endpoint_picker.h"

namespace sluice::server {

class DownstreamSession;
class DownstreamSink;
class ProxyStream;
struct BackgroundRequest;

// Process-wide counters every worker updates.
// Requests by consumer and status class
// (sluice_consumer_requests_total{consumer,status_class}), for at most
// kMaxConsumers distinct consumers per proxy; the rest count under
// consumer="(other)" (no Consumer can have that name: it has parentheses),
// so a million consumers cannot make a million series.
// Thread-safe; Get() takes a lock (workers cache what it returns).
class ConsumerMetrics {
 public:
  static constexpr size_t kMaxConsumers = 1000;
  using Counters = std::array<stats::Counter*, 6>;  // by status / 100; 0: no response
  explicit ConsumerMetrics(stats::StatsStore& store) : store_(store) {}
  const Counters* Get(const std::string& consumer);

 private:
  stats::StatsStore& store_;
  absl::Mutex mu_;
  std::map<std::string, Counters> by_name_ ABSL_GUARDED_BY(mu_);
};

// Answers policies made (sluice_policy_responses_total{policy,status}):
// auth failures, 429s, validation errors... Bounded by the policies and the
// statuses they use. Thread-safe; Get() takes a lock (workers cache it).
class PolicyMetrics {
 public:
  explicit PolicyMetrics(stats::StatsStore& store) : store_(store) {}
  stats::Counter* Get(const std::string& policy, int status);

 private:
  stats::StatsStore& store_;
  absl::Mutex mu_;
  std::map<std::pair<std::string, int>, stats::Counter*> counters_ ABSL_GUARDED_BY(mu_);
};

struct ProxyStats {
  explicit ProxyStats(stats::StatsStore& store);
  ConsumerMetrics consumers;
  PolicyMetrics policies;
  stats::Gauge* downstream_connections_active;
  stats::Gauge* downstream_connections_lingering;
  stats::Gauge* websockets_active;  // tunnels open now (past their 101)
  stats::Counter* downstream_connections_total;
  stats::Counter* downstream_requests_total;
  stats::Counter* downstream_protocol_errors;
  stats::Counter* downstream_tls_handshakes;
  // sluice_downstream_tls_handshake_errors_total{reason}: `reason` is
  // "timeout" or a net::TransportSocket::handshake_failure_kind().
  stats::Counter* DownstreamTlsHandshakeError(std::string_view reason) const;
  static constexpr std::string_view kHandshakeFailureKinds[] = {
      "timeout",          "closed",      "plain_http",         "protocol_version",
      "no_shared_cipher", "no_application_protocol", "client_certificate",
      "server_name",      "other"};
  stats::Counter* downstream_tls_handshake_errors[std::size(kHandshakeFailureKinds)];
  // sluice_downstream_http2_connection_errors_total{reason}: `reason` is an
  // http::Http2ServerCodec::error_kind(), or header_timeout.
  stats::Counter* DownstreamHttp2ConnectionError(std::string_view reason) const;
  static constexpr std::string_view kHttp2ConnectionErrorKinds[] = {
      "rapid_reset", "continuation_flood", "flood",          "compression", "flow_control",
      "protocol",    "output",             "header_timeout", "other"};
  stats::Counter* downstream_http2_connection_errors[std::size(kHttp2ConnectionErrorKinds)];
  stats::Counter* downstream_proxy_protocol_errors;
  stats::Counter* downstream_tls_resumptions;
  stats::Counter* downstream_http2_connections;
  stats::Counter* downstream_http2_streams;  // requests on HTTP/2 connections
  stats::Counter* downstream_responses_by_class[6];  // gateway-wide, incl. no-route
  // Connections closed at accept: over the listener's max_connections, over
  // the proxy's --max-connections; accept(2) failures (descriptors out).
  stats::Counter* downstream_rejected_listener_limit;
  stats::Counter* downstream_rejected_proxy_limit;
  stats::Counter* downstream_accept_errors;
  stats::Counter* downstream_rejected_overload;  // connections closed at accept
  stats::Counter* overload_requests_rejected;    // requests answered 503
  stats::Counter* overload_sessions_shed;        // Worker::ShedHeavySessions
  stats::Gauge* request_bodies_held_bytes;       // HeldBodies::held()
  stats::Counter* held_bodies_refused;           // 503: past HeldBodies::max(), or overload
};

// The proxy-wide limit on open client connections (all listeners, all
// workers). Default: half of the descriptors the process may open (each
// client connection may need an upstream one) less a reserve, after raising
// the soft RLIMIT_NOFILE to the hard one. Set before the workers start.
class ConnectionLimit {
 public:
  static int64_t DefaultMax();
  // The default unless SetMax() came first (once per process).
  static void InitDefault();
  static void SetMax(int64_t max) { max_.store(max, std::memory_order_relaxed); }
  static int64_t max() { return max_.load(std::memory_order_relaxed); }
  // Takes a slot; false (nothing taken) at the limit.
  static bool TryAcquire();
  // Takes a slot whatever the limit: for a place handed on (a closing
  // connection's to its lingering socket, released right after).
  static void Acquire() { open_.fetch_add(1, std::memory_order_relaxed); }
  static void Release() { open_.fetch_sub(1, std::memory_order_relaxed); }

 private:
  static std::atomic<int64_t> max_;
  static std::atomic<int64_t> open_;
};

// How long a connection drained for its listener's sake (the listener moved
// to another address, was removed, or its TLS rules changed: a client CA
// taken out) keeps the exchanges it has: --drain-timeout, as a SIGTERM
// drain. Then they are ended as at that drain's deadline (a gRPC call with
// UNAVAILABLE), so that a long stream does not outlive the rules it came
// in under (Envoy drains a changed listener for --drain-time-s).
// What an exchange ended at that deadline is told (a gRPC call's message).
inline constexpr std::string_view kListenerDrainWhy =
    "the listener this connection came in on was changed or removed (its drain timeout passed)";

class ListenerDrain {
 public:
  static void SetTimeout(absl::Duration timeout) {
    ms_.store(absl::ToInt64Milliseconds(timeout), std::memory_order_relaxed);
  }
  static absl::Duration timeout() {
    return absl::Milliseconds(ms_.load(std::memory_order_relaxed));
  }

 private:
  static std::atomic<int64_t> ms_;
};

// The overload guard (Envoy's overload manager, for memory): while the
// proxy's resident memory is over --max-memory-mb, new connections are
// closed at accept and new requests answered 503 with Connection: close, so
// that what is in flight completes instead of the process being killed.
class Overload {
 public:
  static bool active() { return active_.load(std::memory_order_relaxed); }
  static void Set(bool active) { active_.store(active, std::memory_order_relaxed); }

 private:
  static std::atomic<bool> active_;
};

// The proxy-wide bound on request bodies held whole for policies (a
// request-validation body_schema, ...), in bytes: --max-held-body-mb (by
// default 1 GiB, or half of --max-memory-mb when that is given). A held body
// that would take the total past it is refused 503, as is one that grows
// while the overload guard is on: a held body is in memory two or three
// times (the hold, the copy on its way upstream, a parse), and one HTTP/2
// connection could otherwise hold 100 of them.
class HeldBodies {
 public:
  static void SetMax(int64_t bytes) { max_.store(bytes, std::memory_order_relaxed); }
  static int64_t max() { return max_.load(std::memory_order_relaxed); }
  static int64_t held() { return held_.load(std::memory_order_relaxed); }
  // Takes `bytes`; false (nothing taken) past the bound.
  static bool TryTake(int64_t bytes);
  static void Give(int64_t bytes) { held_.fetch_sub(bytes, std::memory_order_relaxed); }

 private:
  static std::atomic<int64_t> max_;
  static std::atomic<int64_t> held_;
};

// Lets other threads hand work to a worker's loop for as long as the
// worker lives (Post on a closed gate drops the work). Thread-safe.
class PostGate {
 public:
  explicit PostGate(event::Dispatcher* dispatcher) : dispatcher_(dispatcher) {}
  void Post(std::function<void()> fn) {
    absl::MutexLock lock(&mu_);
    if (dispatcher_ != nullptr) dispatcher_->Post(std::move(fn));
  }
  void Close() {
    absl::MutexLock lock(&mu_);
    dispatcher_ = nullptr;
  }

 private:
  absl::Mutex mu_;
  event::Dispatcher* dispatcher_ ABSL_GUARDED_BY(mu_);
};

class Worker {
 public:
  Worker(int index, ProxyStats& stats);
  ~Worker();

  // Starts the worker's thread, named "sluice-w<index>" (as `top -H` and
  // /proc show it); `pin_cpu` >= 0 pins it to that CPU (--cpu-affinity auto;
  // a failure is logged and the thread runs unpinned).
  void Start(int pin_cpu = -1);
  // Stops the loop and joins; closes every connection.
  void Stop();
  // Thread-safe: the worker switches to `snapshot` on its own thread.
  void Publish(std::shared_ptr<const config::ConfigSnapshot> snapshot);
  // Tests that drive a ProxyStream without sockets: `snapshot` becomes the
  // worker's current one (no listener is bound). Worker thread (or the test
  // thread of a worker never started).
  void UseSnapshotForTesting(std::shared_ptr<const config::ConfigSnapshot> snapshot) {
    snapshot_ = std::move(snapshot);
  }
  // Accepts what waits on `listen_fd` for `listener`, as its readiness does.
  void AcceptForTesting(const std::string& listener, int listen_fd) { Accept(listener, listen_fd); }
  // Thread-safe: stop accepting; keep-alive connections close after their
  // current response; idle ones close now.
  void StartDrain();
  // At the drain's deadline: each open session ends the streams a close
  // would cut without a word (DownstreamSession::EndStreamsAtDrainDeadline).
  void EndStreamsAtDrainDeadline();
  // The overload guard is on: sessions holding `min_bytes` or more of
  // response for their clients are shed (a client that opens many streams
  // and reads none otherwise keeps the proxy over its memory limit, and
  // every new client out, for as long as it holds on). Thread-safe.
  void ShedHeavySessions(size_t min_bytes);
  // Thread-safe.
  int64_t active_connections() const { return active_connections_.load(); }

  // Worker thread only.
  event::Dispatcher& dispatcher() { return dispatcher_; }
  int index() const { return index_; }
  // This worker's cached ConsumerMetrics counters for `consumer`.
  const ConsumerMetrics::Counters& ConsumerCounters(const std::string& consumer);
  // This worker's cached PolicyMetrics counter.
  stats::Counter* PolicyCounter(std::string_view policy, int status);
  // Thread-safe.
  const std::shared_ptr<PostGate>& post_gate() const { return post_gate_; }
  const std::shared_ptr<const config::ConfigSnapshot>& snapshot() const { return snapshot_; }
  upstream::ConnectionPool& pool() { return pool_; }
  upstream::Http2Pool& h2_pool() { return h2_pool_; }
  // Client connections closed while the client may still be sending.
  net::LingeringCloser& lingering() { return lingering_; }
  // The loop ended (the process exits): what is still open is closed now.
  bool stopping() const { return stopping_; }
  upstream::EndpointPicker& picker() { return picker_; }
  ProxyStats& stats() { return stats_; }
  bool draining() const { return draining_; }
  // A new random UUID into `out` (reusing its storage).
  void NewRequestId(std::string* out);
  // Now as an HTTP-date ("Sun, 06 Nov 1994 08:49:37 GMT", RFC 9110 5.6.7),
  // formatted once a second; the view is valid until the next call.
  std::string_view HttpDate();
  // The 16 lower-case hex digits of `v`, most significant first, at `out`
  // (request and trace ids: a byte, two digits, at a time).
  static void WriteHex64(char* out, uint64_t v);
  // A session ends (deferred delete), or hands its connection to another
  // (HTTP/1 to HTTP/2 after ALPN or the h2c preface).
  void RemoveConnection(DownstreamSession* session);
  void ReplaceConnection(DownstreamSession* old_session, DownstreamSession* new_session);
  // Runs `request` as a detached exchange (a cache's background refresh)
  // on this worker, after the current callback; its response is dropped.
  // At most kMaxBackground at a time per worker: beyond, it is dropped.
  // Worker thread only.
  static constexpr size_t kMaxBackground = 64;

  // The exchange objects of HTTP/1 connections. A keep-alive connection
  // holds one only from a request's head until its response is written,
  // so an idle connection costs no exchange (about 2.6 KiB) and a request
  // costs no construction (about 1 us): it takes a spare, bound to it
  // (ProxyStream::Rebind), and gives it back. Spares that went unused for
  // a whole kSpareTrimPeriod are freed; at most kMaxSpareStreams are kept.
  // Worker thread only.
  static constexpr size_t kMaxSpareStreams = 4096;
  static constexpr absl::Duration kSpareTrimPeriod = absl::Seconds(2);
  std::unique_ptr<ProxyStream> TakeStream(DownstreamSink& sink, const std::string& listener,
                                          const std::string& peer_ip,
                                          const net::TransportSocket& transport);
  // Ends what `stream` was doing (ProxyStream::OnDownstreamGone), resets it
  // and keeps it as a spare.
  void ReturnStream(std::unique_ptr<ProxyStream> stream);
  size_t spare_streams() const { return spare_streams_.size(); }
  // Storage for an HTTP/1 response head: taken, filled, written out and
  // given back, so that no idle connection keeps one (a proxied head holds
  // hundreds of bytes) and a response costs no allocation. One larger than
  // kMaxHeadScratch is freed rather than kept. Worker thread only.
  static constexpr size_t kMaxHeadScratch = 16 * 1024;
  std::string TakeHeadScratch() { return std::exchange(head_scratch_, std::string()); }
  void ReturnHeadScratch(std::string scratch) {
    if (scratch.capacity() > kMaxHeadScratch) return;
    scratch.clear();
    head_scratch_ = std::move(scratch);
  }
  void StartBackground(std::unique_ptr<BackgroundRequest> request);
  size_t background_exchanges() const { return background_.size(); }

 private:
  class BackgroundExchange;
  void EndBackground(BackgroundExchange* exchange);
  void ApplySnapshot(std::shared_ptr<const config::ConfigSnapshot> snapshot);
  void Accept(const std::string& listener, int fd);
  // Out of descriptors: stop accepting for a while instead of spinning.
  void PauseAccepting();
  void SetAccepting(bool enabled);
  std::vector<DownstreamSession*> Sessions() const;
  void TrimSpareStreams();

  const int index_;
  ProxyStats& stats_;
  event::Dispatcher dispatcher_;
  std::shared_ptr<PostGate> post_gate_;
  std::thread thread_;
  std::shared_ptr<const config::ConfigSnapshot> snapshot_;
  int64_t date_second_ = -1;  // the second date_ holds
  char date_[32] = {};
  upstream::ConnectionPool pool_;
  upstream::Http2Pool h2_pool_;
  net::LingeringCloser lingering_;
  bool stopping_ = false;
  upstream::EndpointPicker picker_;
  std::mt19937_64 id_rng_;
  absl::flat_hash_map<std::string, const ConsumerMetrics::Counters*> consumer_counters_;
  absl::flat_hash_map<std::pair<std::string, int>, stats::Counter*> policy_counters_;
  bool draining_ = false;
  // Accept events by listening fd, with the sockets they keep alive.
  struct AcceptSlot {
    std::shared_ptr<config::ListenSockets> sockets;
    std::string listener;
    std::unique_ptr<event::FileEvent> event;
  };
  std::map<int, AcceptSlot> accepting_;
  // Open sessions, with the listener sockets whose count they hold.
  std::unordered_map<DownstreamSession*, std::shared_ptr<config::ListenSockets>> connections_;
  std::atomic<int64_t> active_connections_{0};
  std::unordered_map<BackgroundExchange*, std::unique_ptr<BackgroundExchange>> background_;
  event::Timer accept_backoff_timer_;
  common::AcceptBackoff accept_backoff_;
  absl::Time last_accept_error_log_ = absl::InfinitePast();
  // Last: the spares' timers go before the dispatcher.
  std::vector<std::unique_ptr<ProxyStream>> spare_streams_;
  std::string head_scratch_;
  size_t spare_low_ = 0;  // the fewest spares since the last trim
  event::Timer spare_trim_timer_;
};

}  // namespace sluice::server

#endif  // SLUICE_DATAPLANE_SERVER_WORKER_H_
