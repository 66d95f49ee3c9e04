#include "dataplane/server/worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "dataplane/net/proxy_protocol.h"
#include "dataplane/net/socket.h"
#include "dataplane/server/cpu_set.h"
#include "dataplane/server/downstream_connection.h"
#include "dataplane/server/proxy_stream.h"

namespace sluice::server {

std::atomic<int64_t> ConnectionLimit::max_{0};
std::atomic<bool> Overload::active_{false};
std::atomic<int64_t> ConnectionLimit::open_{0};
std::atomic<int64_t> HeldBodies::max_{int64_t{1} << 30};
std::atomic<int64_t> HeldBodies::held_{0};
std::atomic<int64_t> ListenerDrain::ms_{30000};

bool HeldBodies::TryTake(int64_t bytes) {
  if (held_.fetch_add(bytes, std::memory_order_relaxed) + bytes > max_.load(std::memory_order_relaxed)) {
    held_.fetch_sub(bytes, std::memory_order_relaxed);
    return false;
  }
  return true;
}

int64_t ConnectionLimit::DefaultMax() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1024;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  // Each client connection may hold an upstream one; keep 256 for listeners,
  // the control plane, health checks and logs.
  int64_t fds = limit.rlim_cur == RLIM_INFINITY ? (int64_t{1} << 20)
                                                : static_cast<int64_t>(limit.rlim_cur);
  return std::max<int64_t>(64, (fds - 256) / 2);
}

void ConnectionLimit::InitDefault() {
  static std::once_flag once;
  std::call_once(once, [] {
    int64_t unset = 0;
    max_.compare_exchange_strong(unset, DefaultMax());
  });
}

bool ConnectionLimit::TryAcquire() {
  if (open_.fetch_add(1, std::memory_order_relaxed) >= max_.load(std::memory_order_relaxed)) {
    open_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

const ConsumerMetrics::Counters* ConsumerMetrics::Get(const std::string& consumer) {
  absl::MutexLock lock(&mu_);
  auto it = by_name_.find(consumer);
  if (it != by_name_.end()) return &it->second;
  const std::string& name = by_name_.size() < kMaxConsumers ? consumer : std::string("(other)");
  it = by_name_.find(name);
  if (it != by_name_.end()) return &it->second;
  Counters& c = by_name_[name];
  c[0] = store_.GetCounter("sluice_consumer_requests_total",
                           absl::StrCat("consumer=", stats::LabelValue(name),
                                        ",status_class=\"none\""));
  for (int k = 1; k <= 5; ++k) {
    c[k] = store_.GetCounter("sluice_consumer_requests_total",
                             absl::StrCat("consumer=", stats::LabelValue(name),
                                          ",status_class=\"", k, "xx\""));
  }
  return &c;
}

stats::Counter* PolicyMetrics::Get(const std::string& policy, int status) {
  absl::MutexLock lock(&mu_);
  stats::Counter*& c = counters_[{policy, status}];
  if (c == nullptr) {
    c = store_.GetCounter("sluice_policy_responses_total",
                          absl::StrCat("policy=", stats::LabelValue(policy), ",status=\"",
                                       status, "\""));
  }
  return c;
}

stats::Counter* Worker::PolicyCounter(std::string_view policy, int status) {
  std::pair<std::string, int> key(std::string(policy), status);
  auto it = policy_counters_.find(key);
  if (it != policy_counters_.end()) return it->second;
  stats::Counter* c = stats_.policies.Get(key.first, status);
  policy_counters_.emplace(std::move(key), c);
  return c;
}

const ConsumerMetrics::Counters& Worker::ConsumerCounters(const std::string& consumer) {
  auto it = consumer_counters_.find(consumer);
  if (it != consumer_counters_.end()) return *it->second;
  const ConsumerMetrics::Counters* c = stats_.consumers.Get(consumer);
  consumer_counters_.emplace(consumer, c);
  return *c;
}

namespace {

// One counter of `name` per reason in `reasons`, labelled reason="...".
template <size_t N>
void MakeReasonCounters(stats::StatsStore& store, const std::string& name,
                        const std::string_view (&reasons)[N], stats::Counter* (&counters)[N]) {
  for (size_t i = 0; i < N; ++i) {
    counters[i] = store.GetCounter(name, absl::StrCat("reason=\"", std::string(reasons[i]), "\""));
  }
}

// The counter of `reason`; the last one ("other") for a reason not listed.
template <size_t N>
stats::Counter* ReasonCounter(const std::string_view (&reasons)[N],
                              stats::Counter* const (&counters)[N], std::string_view reason) {
  for (size_t i = 0; i < N; ++i) {
    if (reasons[i] == reason) return counters[i];
  }
  return counters[N - 1];
}

}  // namespace

stats::Counter* ProxyStats::DownstreamTlsHandshakeError(std::string_view reason) const {
  return ReasonCounter(kHandshakeFailureKinds, downstream_tls_handshake_errors, reason);
}

stats::Counter* ProxyStats::DownstreamHttp2ConnectionError(std::string_view reason) const {
  return ReasonCounter(kHttp2ConnectionErrorKinds, downstream_http2_connection_errors, reason);
}

ProxyStats::ProxyStats(stats::StatsStore& store) : consumers(store), policies(store) {
  store.Describe("sluice_policy_responses_total",
                 "Answers a policy made instead of the upstream (401 of an authentication "
                 "policy, 403, 429 of rate-limit, 400 of request-validation, ...), by policy "
                 "and status.");
  // HELP for the families made elsewhere (per cluster, per access log, by
  // the config thread), so every family has one (promtool check metrics).
  for (const auto& [name, help] : std::initializer_list<std::pair<const char*, const char*>>{
           {"sluice_access_log_dropped_total",
            "Access log entries dropped because a worker's buffer was full (slow disk)."},
           {"sluice_access_log_write_errors_total", "Access log writes that failed."},
           {"sluice_circuit_breaker_overflows_total",
            "Requests refused because a circuit breaker was open, by cluster and breaker."},
           {"sluice_configs_applied_total", "Config versions applied."},
           {"sluice_configs_rejected_total", "Config versions rejected (NACKed)."},
           {"sluice_downstream_connections_total", "Client connections accepted."},
           {"sluice_downstream_protocol_errors_total",
            "Client protocol errors: malformed HTTP/1 requests, HTTP/2 connection errors and HTTP/2 streams reset for breaking the protocol."},
           {"sluice_downstream_requests_total", "Requests received from clients."},
           {"sluice_downstream_responses_total", "Responses sent to clients, by status class."},
           {"sluice_health_check_failures_total", "Active health checks that failed, by cluster."},
           {"sluice_health_check_passes_total", "Active health checks that passed, by cluster."},
           {"sluice_lb_panic_picks_total",
            "Endpoint picks made in panic mode (too few healthy endpoints), by cluster."},
           {"sluice_outlier_ejections_total", "Endpoints ejected as outliers, by cluster."},
           {"sluice_retries_exhausted_total", "Requests that failed after retrying, by cluster."},
           {"sluice_retries_total", "Retries started, by cluster."},
           {"sluice_retry_successes_total", "Requests that succeeded on a retry, by cluster."},
           {"sluice_upstream_connect_failures_total", "Upstream connects that failed, by cluster."},
           {"sluice_upstream_connections_opened_total", "Upstream connections opened, by cluster."},
           {"sluice_upstream_connections_reused_total",
            "Requests sent on a pooled upstream connection, by cluster."},
           {"sluice_upstream_no_endpoint_total",
            "Requests with no healthy endpoint to go to, by cluster."},
           {"sluice_upstream_requests_total", "Requests sent upstream (each try), by cluster."},
           {"sluice_upstream_resets_total",
            "Upstream exchanges reset or refused, or cut after the response began, by cluster."},
           {"sluice_upstream_responses_5xx_total", "Upstream responses with a 5xx status, by cluster."},
           {"sluice_upstream_timeouts_total", "Upstream exchanges that timed out, by cluster."},
           {"sluice_config_version", "The config version this proxy runs."},
           {"sluice_overload_active", "1 while the memory overload guard refuses requests."},
       }) {
    store.Describe(name, help);
  }
  store.Describe("sluice_consumer_requests_total",
                 "Requests by the consumer an authentication policy identified, by status "
                 "class (at most 1000 consumers; the rest under consumer=\"(other)\").");
  store.Describe("sluice_route_request_duration_seconds",
                 "Time from the request head to the end of the response, per route.");
  store.Describe("sluice_upstream_first_byte_seconds",
                 "Time from sending a request upstream to the response head, per cluster.");
  store.Describe("sluice_upstream_duration_seconds",
                 "Time from sending a request upstream to the response's end, per cluster.");
  store.Describe("sluice_downstream_connections_active", "Client connections open now.");
  store.Describe("sluice_route_request_bytes_total",
                 "Request body bytes per route (the access log's bytes_in, summed).");
  store.Describe("sluice_route_response_bytes_total",
                 "Response body bytes per route (the access log's bytes_out, summed).");
  store.Describe("sluice_route_requests_total",
                 "Responses per route by status class (gateway-made ones included).");
  store.Describe("sluice_route_grpc_responses_total",
                 "Responses to gRPC requests per route by the grpc-status the client got "
                 "(the upstream's or the gateway's).");
  downstream_connections_active = store.GetGauge("sluice_downstream_connections_active");
  store.Describe("sluice_downstream_connections_lingering",
                 "Client connections answered before their request body was read, closed once "
                 "the client stops sending (each holds a --max-connections place).");
  downstream_connections_lingering = store.GetGauge("sluice_downstream_connections_lingering");
  store.Describe("sluice_websockets_active",
                 "WebSockets open now (past their 101, until either side ends them).");
  websockets_active = store.GetGauge("sluice_websockets_active");
  downstream_connections_total = store.GetCounter("sluice_downstream_connections_total");
  downstream_requests_total = store.GetCounter("sluice_downstream_requests_total");
  downstream_protocol_errors = store.GetCounter("sluice_downstream_protocol_errors_total");
  store.Describe("sluice_downstream_tls_handshakes_total", "TLS handshakes completed.");
  store.Describe("sluice_downstream_tls_handshake_errors_total",
                 "TLS handshakes that failed or did not finish in time.");
  store.Describe("sluice_downstream_tls_resumptions_total",
                 "TLS handshakes that resumed a session (tickets).");
  downstream_tls_handshakes = store.GetCounter("sluice_downstream_tls_handshakes_total");
  MakeReasonCounters(store, "sluice_downstream_tls_handshake_errors_total", kHandshakeFailureKinds,
                     downstream_tls_handshake_errors);
  downstream_tls_resumptions = store.GetCounter("sluice_downstream_tls_resumptions_total");
  store.Describe("sluice_downstream_http2_connection_errors_total",
                 "Client HTTP/2 connections ended with a GOAWAY error, by why (rapid_reset, "
                 "continuation_flood, flood, compression, flow_control, protocol, output, "
                 "header_timeout, other).");
  MakeReasonCounters(store, "sluice_downstream_http2_connection_errors_total",
                     kHttp2ConnectionErrorKinds, downstream_http2_connection_errors);
  store.Describe("sluice_downstream_proxy_protocol_errors_total",
                 "Connections to a proxy_protocol listener closed for want of a valid PROXY "
                 "header (missing, malformed, cut, or not sent within request_headers_timeout).");
  downstream_proxy_protocol_errors =
      store.GetCounter("sluice_downstream_proxy_protocol_errors_total");
  store.Describe("sluice_downstream_http2_connections_total",
                 "Client connections that spoke HTTP/2 (ALPN h2 or h2c prior knowledge).");
  downstream_http2_connections = store.GetCounter("sluice_downstream_http2_connections_total");
  store.Describe("sluice_downstream_http2_streams_total",
                 "Streams (requests) clients opened on HTTP/2 connections.");
  downstream_http2_streams = store.GetCounter("sluice_downstream_http2_streams_total");
  store.Describe("sluice_listener_requests_total",
                 "Responses per listener by status class (gateway-made ones included).");
  store.Describe("sluice_downstream_connections_rejected_total",
                 "Connections closed at accept: over a limit (listener max_connections, "
                 "proxy --max-connections).");
  downstream_rejected_listener_limit = store.GetCounter(
      "sluice_downstream_connections_rejected_total", "reason=\"listener_limit\"");
  downstream_rejected_proxy_limit = store.GetCounter(
      "sluice_downstream_connections_rejected_total", "reason=\"proxy_limit\"");
  store.Describe("sluice_downstream_accept_errors_total",
                 "accept(2) failures (EMFILE/ENFILE: out of descriptors; accepting pauses).");
  downstream_accept_errors = store.GetCounter("sluice_downstream_accept_errors_total");
  downstream_rejected_overload = store.GetCounter("sluice_downstream_connections_rejected_total",
                                                  "reason=\"overload\"");
  store.Describe("sluice_overload_requests_rejected_total",
                 "Requests answered 503 because the proxy was over --max-memory-mb.");
  overload_requests_rejected = store.GetCounter("sluice_overload_requests_rejected_total");
  store.Describe("sluice_overload_connections_shed_total",
                 "Client connections closed because the proxy was over --max-memory-mb and "
                 "they held 1 MiB or more of response their client had not read.");
  overload_sessions_shed = store.GetCounter("sluice_overload_connections_shed_total");
  store.Describe("sluice_request_bodies_held_bytes",
                 "Request bytes held whole for policies now (bounded by --max-held-body-mb).");
  request_bodies_held_bytes = store.GetGauge("sluice_request_bodies_held_bytes");
  store.Describe("sluice_request_bodies_held_refused_total",
                 "Requests answered 503 because holding their body would pass --max-held-body-mb "
                 "or the proxy was over --max-memory-mb.");
  held_bodies_refused = store.GetCounter("sluice_request_bodies_held_refused_total");
  downstream_responses_by_class[0] = nullptr;
  for (int c = 1; c <= 5; ++c) {
    downstream_responses_by_class[c] = store.GetCounter(
        "sluice_downstream_responses_total", absl::StrCat("status_class=\"", c, "xx\""));
  }
}

Worker::Worker(int index, ProxyStats& stats)
    : index_(index),
      stats_(stats),
      post_gate_(std::make_shared<PostGate>(&dispatcher_)),
      pool_(dispatcher_),
      h2_pool_(dispatcher_),
      // A lingering socket keeps its connection's --max-connections place
      // until it closes (the connection hands it on: taken here, released by
      // RemoveConnection right after): a client cannot spend the proxy's
      // descriptors this way, and a connection at the limit lingers too.
      lingering_(
          dispatcher_,
          [&stats] {
            ConnectionLimit::Acquire();
            stats.downstream_connections_lingering->Add(1);
            return true;
          },
          [&stats] {
            ConnectionLimit::Release();
            stats.downstream_connections_lingering->Add(-1);
          }),
      picker_(0x9e3779b97f4a7c15ull * static_cast<uint64_t>(index + 1) ^
              static_cast<uint64_t>(getpid())),
      id_rng_(std::random_device{}()),
      accept_backoff_timer_(dispatcher_, [this] { SetAccepting(true); }),
      spare_trim_timer_(dispatcher_, [this] { TrimSpareStreams(); }) {
  ConnectionLimit::InitDefault();
}

Worker::~Worker() {
  Stop();
  post_gate_->Close();
}

void Worker::Start(int pin_cpu) {
  thread_ = std::thread([this, pin_cpu] {
    pthread_setname_np(pthread_self(), absl::StrCat("sluice-w", index_).substr(0, 15).c_str());
    if (pin_cpu >= 0) {
      if (absl::Status pinned = PinCurrentThread(pin_cpu); !pinned.ok()) {
        SLUICE_LOG(kWarning, "worker ", index_, ": ", pinned.message(), "; it runs unpinned");
      }
    }
    dispatcher_.Run();
    // Loop ended: close everything this thread owns, on this thread.
    stopping_ = true;
    accepting_.clear();
    for (DownstreamSession* c : Sessions()) c->StartDrain();
    for (DownstreamSession* c : Sessions()) RemoveConnection(c);
    background_.clear();
    pool_.CloseAllIdle();
    h2_pool_.DrainExcept({});
    dispatcher_.RunDeferredDeletes();
    spare_streams_.clear();
    spare_trim_timer_.Disable();
    snapshot_.reset();
  });
}

std::unique_ptr<ProxyStream> Worker::TakeStream(DownstreamSink& sink, const std::string& listener,
                                                const std::string& peer_ip,
                                                const net::TransportSocket& transport) {
  if (spare_streams_.empty()) {
    spare_low_ = 0;
    return std::make_unique<ProxyStream>(*this, sink, listener, peer_ip, transport);
  }
  std::unique_ptr<ProxyStream> stream = std::move(spare_streams_.back());
  spare_streams_.pop_back();
  spare_low_ = std::min(spare_low_, spare_streams_.size());
  stream->Rebind(sink, listener, peer_ip, transport);
  return stream;
}

void Worker::ReturnStream(std::unique_ptr<ProxyStream> stream) {
  stream->OnDownstreamGone();
  if (spare_streams_.size() >= kMaxSpareStreams) return;
  stream->Reset();
  spare_streams_.push_back(std::move(stream));
  if (!spare_trim_timer_.enabled()) {
    spare_low_ = spare_streams_.size();
    spare_trim_timer_.Enable(kSpareTrimPeriod);
  }
}

void Worker::TrimSpareStreams() {
  // The oldest spares (the vector's front: taking and giving back happen at
  // its back) went unused since the last trim.
  size_t unused = std::min(spare_low_, spare_streams_.size());
  spare_streams_.erase(spare_streams_.begin(), spare_streams_.begin() + unused);
  spare_low_ = spare_streams_.size();
  if (!spare_streams_.empty()) spare_trim_timer_.Enable(kSpareTrimPeriod);
}

void Worker::Stop() {
  if (!thread_.joinable()) return;
  dispatcher_.Exit();
  thread_.join();
}

void Worker::Publish(std::shared_ptr<const config::ConfigSnapshot> snapshot) {
  dispatcher_.Post([this, snapshot = std::move(snapshot)]() mutable {
    ApplySnapshot(std::move(snapshot));
  });
}

void Worker::StartDrain() {
  dispatcher_.Post([this] {
    draining_ = true;
    // Take what is already queued on our sockets before closing them: with
    // SO_REUSEPORT those connections would otherwise be reset, not moved to
    // a sibling (unless net.ipv4.tcp_migrate_req is 1). They are served one
    // response with Connection: close.
    std::vector<std::pair<std::string, int>> queued;
    for (const auto& [fd, slot] : accepting_) queued.emplace_back(slot.listener, fd);
    for (const auto& [listener, fd] : queued) Accept(listener, fd);
    accepting_.clear();
    // Stop listening. The fds stay open (the socket cache and the snapshot
    // own them until exit), so without this the kernel would go on
    // completing handshakes into a backlog nobody accepts: a load balancer
    // that has not yet seen /ready fail would send requests there, and they
    // would be reset only when the process exits. Now they are refused at
    // once (a connect failure every balancer retries elsewhere), and a
    // SO_REUSEPORT sibling takes this socket's share.
    for (const auto& [listener, fd] : queued) ::shutdown(fd, SHUT_RD);
    for (DownstreamSession* c : Sessions()) c->StartDrain();
  });
}

void Worker::ShedHeavySessions(size_t min_bytes) {
  dispatcher_.Post([this, min_bytes] {
    std::vector<DownstreamSession*> sessions = Sessions();
    for (DownstreamSession* c : sessions) {
      const size_t held = c->HeldResponseBytes();
      if (held < min_bytes) continue;
      stats_.overload_sessions_shed->Inc();
      SLUICE_LOG(kDebug, "over --max-memory-mb: closing a client connection that holds ", held,
                 " bytes of response it has not read");
      c->ShedForOverload();
    }
  });
}

void Worker::EndStreamsAtDrainDeadline() {
  dispatcher_.Post([this] {
    std::vector<DownstreamSession*> sessions = Sessions();
    for (DownstreamSession* c : sessions) c->EndStreamsAtDrainDeadline();
  });
}

void Worker::ApplySnapshot(std::shared_ptr<const config::ConfigSnapshot> snapshot) {
  // Listening sockets: keep those still configured, add new ones, drop the rest.
  std::map<int, AcceptSlot> next;
  if (!draining_) {
    for (const auto& [name, listener] : snapshot->listeners) {
      int fd = listener.sockets->fds[index_];
      auto it = accepting_.find(fd);
      if (it != accepting_.end() && it->second.sockets == listener.sockets) {
        it->second.listener = name;
        next.emplace(fd, std::move(it->second));
        accepting_.erase(it);
        continue;
      }
      AcceptSlot slot;
      slot.sockets = listener.sockets;
      slot.listener = name;
      slot.event = std::make_unique<event::FileEvent>(dispatcher_, fd, [this, fd](short) {
        auto it = accepting_.find(fd);
        if (it != accepting_.end()) Accept(it->second.listener, fd);
      });
      slot.event->SetEnabled(event::FileEvent::kRead);
      next.emplace(fd, std::move(slot));
    }
  } else {
    // A version applied while draining: its sockets refuse connections as
    // StartDrain made the others do. A listener it adds would otherwise
    // complete handshakes into a backlog nobody accepts (a balancer's
    // connect succeeds, so it does not try another replica).
    for (const auto& [name, listener] : snapshot->listeners) {
      ::shutdown(listener.sockets->fds[index_], SHUT_RD);
    }
  }
  accepting_.swap(next);
  // What is left in `next` are the slots of listeners this version drops.
  // Their sockets stay open while a connection they brought holds an old
  // snapshot: refuse new connections now rather than queue them unserved.
  for (const auto& [fd, slot] : next) {
    if (slot.sockets->retired) ::shutdown(fd, SHUT_RD);
  }
  next.clear();  // events removed before the old snapshot can close the fds
  std::shared_ptr<const config::ConfigSnapshot> previous = std::move(snapshot_);
  snapshot_ = std::move(snapshot);
  for (DownstreamSession* c : Sessions()) c->OnSnapshotChanged(previous);
  // A version that leaves every cluster as it was (it shares them with the
  // one before) changes nothing below: skipped, as walking every endpoint's
  // pools cost each worker about 3 ms per version at 2,000 clusters.
  if (previous != nullptr && snapshot_->clusters.SharedWith(previous->clusters) &&
      snapshot_->pool_keys.SharedWith(previous->pool_keys)) {
    return;
  }
  pool_.CloseIdleExcept(snapshot_->pool_keys);
  // Lowered idle limits apply to what is idle now, not only from its next
  // release (an operator lowering idle_connection_timeout under the
  // upstream's keep-alive meant it for these too).
  for (const auto& [name, cluster] : snapshot_->clusters) {
    for (const upstream::EndpointInfo& endpoint : cluster->endpoints) {
      pool_.Tighten(endpoint.pool_key, cluster->max_idle_per_endpoint,
                    cluster->idle_connection_sweeps);
    }
  }
  h2_pool_.DrainExcept(snapshot_->pool_keys);
  picker_.Prune(snapshot_->pool_keys);
}

void Worker::Accept(const std::string& listener_name, int listen_fd) {
  auto listener = snapshot_->listeners.find(listener_name);
  for (int i = 0; i < 64; ++i) {
    // The peer's address comes with the socket: no getpeername(2) later.
    sockaddr_storage peer;
    socklen_t peer_size = sizeof(peer);
    int fd = accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &peer_size,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      stats_.downstream_accept_errors->Inc();
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // The connection stays queued in the kernel; retrying now would
        // spin. Pause this worker's accepting and try again later.
        PauseAccepting();
      } else if (absl::Now() - last_accept_error_log_ > absl::Seconds(1)) {
        last_accept_error_log_ = absl::Now();
        SLUICE_LOG(kWarning, "accept on listener ", listener_name, ": ", strerror(errno));
      }
      return;
    }
    accept_backoff_.OnSuccess();
    if (listener == snapshot_->listeners.end()) {
      close(fd);
      continue;
    }
    const config::ListenerRuntime& runtime = listener->second;
    if (runtime.max_connections > 0 &&
        runtime.sockets->open_connections.load(std::memory_order_relaxed) >=
            runtime.max_connections) {
      // Counted before the close: a client that sees the close and then
      // reads the stats finds it counted.
      stats_.downstream_rejected_listener_limit->Inc();
      close(fd);
      continue;
    }
    if (Overload::active()) {
      stats_.downstream_rejected_overload->Inc();
      close(fd);
      continue;
    }
    if (!ConnectionLimit::TryAcquire()) {
      stats_.downstream_rejected_proxy_limit->Inc();
      close(fd);
      continue;
    }
    std::unique_ptr<net::TransportSocket> transport;
    if (runtime.tls) {
      transport = runtime.tls->Create();
      if (transport == nullptr) {  // out of memory in OpenSSL: never serve it in plain text
        stats_.DownstreamTlsHandshakeError("other")->Inc();
        close(fd);
        ConnectionLimit::Release();
        continue;
      }
    }
    std::string peer_ip = net::PeerIp(peer);
    if (runtime.proxy_protocol) {
      // Its header first, then TLS or plain HTTP.
      transport = std::make_unique<net::ProxyProtocolTransport>(std::move(transport), peer_ip);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto* connection =
        new DownstreamConnection(*this, fd, runtime, std::move(transport), std::move(peer_ip),
                                 net::IsLoopback(peer));
    runtime.sockets->open_connections.fetch_add(1, std::memory_order_relaxed);
    connections_.emplace(connection, runtime.sockets);
    active_connections_.fetch_add(1);
    stats_.downstream_connections_active->Add(1);
    stats_.downstream_connections_total->Inc();
  }
}

void Worker::PauseAccepting() {
  const int err = errno;
  bool log = false;
  const absl::Duration pause = accept_backoff_.OnFailure(absl::Now(), &log);
  if (log) {
    SLUICE_LOG(kWarning, "accept: ", strerror(err), ": out of descriptors; accepting pauses for ",
               absl::FormatDuration(pause),
               " at a time (raise the descriptor limit or lower --max-connections)");
  }
  SetAccepting(false);
  accept_backoff_timer_.Enable(pause);
}

void Worker::SetAccepting(bool enabled) {
  for (auto& [fd, slot] : accepting_) {
    slot.event->SetEnabled(enabled ? event::FileEvent::kRead : 0);
  }
}

std::vector<DownstreamSession*> Worker::Sessions() const {
  std::vector<DownstreamSession*> all;
  all.reserve(connections_.size());
  for (const auto& [session, sockets] : connections_) all.push_back(session);
  return all;
}

void Worker::ReplaceConnection(DownstreamSession* old_session, DownstreamSession* new_session) {
  auto it = connections_.find(old_session);
  if (it == connections_.end()) return;
  std::shared_ptr<config::ListenSockets> sockets = std::move(it->second);
  connections_.erase(it);
  connections_.emplace(new_session, std::move(sockets));
  dispatcher_.DeferredDelete(std::unique_ptr<event::DeferredDeletable>(old_session));
}

// A detached exchange: a ProxyStream whose response goes nowhere.
class Worker::BackgroundExchange : public DownstreamSink, public event::DeferredDeletable {
 public:
  BackgroundExchange(Worker& worker, std::unique_ptr<BackgroundRequest> request)
      : worker_(worker),
        request_(std::move(request)),
        transport_(request_->secure),
        stream_(worker, *this, request_->listener, request_->peer_ip, transport_) {}
  ~BackgroundExchange() override { stream_.OnDownstreamGone(); }

  void Start() {
    if (started_) return;
    started_ = true;
    for (const http::HeaderMap::Field& f : request_->fields.fields()) {
      views_.push_back({f.name, f.value});
    }
    RequestHead head;
    head.method = request_->method;
    head.target = request_->target;
    head.authority = request_->authority;
    head.authority_from_target = request_->authority_from_target;
    head.headers = &views_;
    head.http2 = request_->http2;
    head.background = true;
    stream_.Start(head);
    if (!done_) stream_.OnRequestEnd({});
  }

  // DownstreamSink: the response is dropped.
  void EncodeHeaders(const ResponseHead&) override {}
  void EncodeData(std::string_view) override {}
  void EncodeEnd(const std::vector<http::HeaderField>&) override {}
  void EncodeContinue() override {}
  void EncodeInformational(int, const std::vector<http::HeaderField>&) override {}
  void Abort() override { End(); }
  size_t buffered_response_bytes() const override { return 0; }
  void SetRequestReadEnabled(bool) override {}
  void OnStreamDone() override { End(); }

 private:
  // The transport the stream asks whether the client's was TLS.
  class Detached : public net::TransportSocket {
   public:
    explicit Detached(bool secure) : secure_(secure) {}
    void Attach(int) override {}
    Progress Handshake() override { return Progress::kDone; }
    ssize_t Read(char*, size_t) override { return 0; }
    ssize_t Write(const char*, size_t size) override { return static_cast<ssize_t>(size); }
    bool secure() const override { return secure_; }

   private:
    const bool secure_;
  };

  void End() {
    if (done_) return;
    done_ = true;
    worker_.EndBackground(this);
  }

  Worker& worker_;
  std::unique_ptr<BackgroundRequest> request_;
  Detached transport_;
  std::vector<http::HeaderField> views_;
  ProxyStream stream_;
  bool started_ = false;
  bool done_ = false;
};

void Worker::StartBackground(std::unique_ptr<BackgroundRequest> request) {
  if (background_.size() >= kMaxBackground || draining_) {
    SLUICE_LOG(kDebug, "background request ", request->method, " ", request->target,
               " dropped: ", background_.size(), " already running");
    return;
  }
  auto exchange = std::make_unique<BackgroundExchange>(*this, std::move(request));
  BackgroundExchange* raw = exchange.get();
  background_.emplace(raw, std::move(exchange));
  // After the current callback: the exchange that asked is still on the stack.
  dispatcher_.Post([this, raw] {
    if (background_.count(raw) != 0) raw->Start();
  });
}

void Worker::EndBackground(BackgroundExchange* exchange) {
  auto it = background_.find(exchange);
  if (it == background_.end()) return;
  // The exchange may be on the call stack (its stream just finished).
  dispatcher_.DeferredDelete(std::move(it->second));
  background_.erase(it);
}

void Worker::RemoveConnection(DownstreamSession* connection) {
  auto it = connections_.find(connection);
  if (it == connections_.end()) return;
  if (it->second) it->second->open_connections.fetch_sub(1, std::memory_order_relaxed);
  connections_.erase(it);
  ConnectionLimit::Release();
  active_connections_.fetch_sub(1);
  stats_.downstream_connections_active->Add(-1);
  dispatcher_.DeferredDelete(std::unique_ptr<event::DeferredDeletable>(connection));
}

void Worker::WriteHex64(char* out, uint64_t v) {
  static constexpr std::array<char, 512> kPairs = [] {
    constexpr char kDigits[] = "0123456789abcdef";
    std::array<char, 512> pairs{};
    for (int i = 0; i < 256; ++i) {
      pairs[2 * i] = kDigits[i >> 4];
      pairs[2 * i + 1] = kDigits[i & 0xf];
    }
    return pairs;
  }();
  for (int i = 7; i >= 0; --i, v >>= 8) std::memcpy(out + 2 * i, &kPairs[2 * (v & 0xff)], 2);
}

std::string_view Worker::HttpDate() {
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  if (now != date_second_) {
    date_second_ = now;
    static constexpr char kDays[][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr char kMonths[][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const time_t t = static_cast<time_t>(now);
    struct tm tm;
    gmtime_r(&t, &tm);
    std::snprintf(date_, sizeof(date_), "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday],
                  tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                  tm.tm_sec);
  }
  return std::string_view(date_, 29);
}

void Worker::NewRequestId(std::string* out) {
  // A random (version 4) UUID: 8-4-4-4-12 hex digits.
  uint64_t a = id_rng_();
  uint64_t b = id_rng_();
  a = (a & ~0xf000ull) | 0x4000ull;                   // version 4
  b = (b & ~(0xc000ull << 48)) | (0x8000ull << 48);  // variant 10xx
  char digits[32];
  WriteHex64(digits, a);
  WriteHex64(digits + 16, b);
  std::string& id = *out;
  id.assign(36, '-');
  std::memcpy(&id[0], digits, 8);
  std::memcpy(&id[9], digits + 8, 4);
  std::memcpy(&id[14], digits + 12, 4);
  std::memcpy(&id[19], digits + 16, 4);
  std::memcpy(&id[24], digits + 20, 12);
}

}  // namespace sluice::server
