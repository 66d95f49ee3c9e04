// ConfigClient: the proxy's side of the discovery stream to sluice-control.
//
// Runs on its own thread (gRPC's synchronous API blocks). It identifies the
// proxy, says which version, store and resources it holds, and for every
// response builds the next full resource set, hands it to `apply` (validate,
// compile, publish) and answers ACK or NACK with the reason. A response with a
// lower version than the one held, from the same store, is NACKed; from
// another store (the control plane's data dir was reset) it is taken.
//
// The stream counts as connected once sluice-control has sent its initial
// metadata (it accepted the stream), with or without a response. Keepalive
// pings go out on an idle stream every `keepalive` and a ping unanswered for
// `keepalive_timeout` breaks it, so a control plane that vanished is noticed
// while no config changes. When the stream breaks or cannot be opened it
// tries again after a jittered backoff (ControlPlaneFailover: 250 ms doubling
// to 10 s); given several control-plane addresses (replicas) it starts at a
// random one and moves to the next one in the list on every failure, so a
// replica that dies is replaced by another within about 250 ms. The proxy
// keeps serving its last good config meanwhile, and every new stream says
// what it holds (version, store id, resources with their hashes), so a
// replica of the same store sends only what differs.
//
// A route table the proxy holds may come as a patch (discovery.v1.
// RouteTablePatch: only its replaced, added and removed routes; the log line
// "applied config version N (C resources changed, R removed; M route tables
// patched: K routes replaced, I inserted, D removed)" counts each; a route
// changed where a virtual host's route count changed travels in that host's
// splice, and counts as one removed and one inserted). The client applies it in place
// to the table it holds when the patch's base_hash is the hash of that table
// (kept per table: api::ContentHash when the table came whole, the patch's
// `hash` after a patch, so no table is hashed again for a patch); a patch
// for a table not held, or held at another hash, is NACKed naming the table
// and both hashes, and the control plane sends the table whole.
//
// A cache purge the control plane sends on the stream (a response with
// `purge` set, outside the ACK/NACK protocol) is carried out on the client's
// thread with cache::Purge() and answered with a request carrying
// `purge_result` and no nonce; what the proxy holds does not change.
//
// Rate-limit scope FLEET rides the stream the same way: every
// --rate-limit-report-interval a request of its own with `rate_limit_demand`,
// and the control plane's responses with `rate_limit_leases` (no nonce, not
// answered) go to the leases sink.
//
// Start()/Stop() from the main thread; `apply` and `persist` run on the
// client's thread; connected() from any thread.
#ifndef SLUICE_DATAPLANE_CONFIG_CONFIG_CLIENT_H_
#define SLUICE_DATAPLANE_CONFIG_CONFIG_CLIENT_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "api/discovery.h"
#include "api/resource.h"
#include "api/validation.h"
#include "controlplane/store/file_store.h"
#include "grpcpp/grpcpp.h"
#include "sluice/discovery/v1/discovery.grpc.pb.h"

namespace sluice::config {

struct ConfigClientOptions {
  // An idle stream is pinged this often (at least api::kMinKeepaliveMs)...
  absl::Duration keepalive = absl::Milliseconds(api::kDefaultKeepaliveMs);
  // ... and broken when a ping is not answered within this (at least 1 ms).
  absl::Duration keepalive_timeout = absl::Milliseconds(api::kDefaultKeepaliveTimeoutMs);

  // TLS to the control plane, on when `tls_ca_pem` is set: the PEM CAs that
  // verify its certificate, and optionally this proxy's client certificate
  // and key (a control plane with --client-ca requires them, naming the
  // node id). `tls_server_name` overrides the name checked against the
  // control plane's certificate (default: the host of the address being
  // connected to). All addresses of the list share these.
  std::string tls_ca_pem;
  std::string tls_cert_pem;
  std::string tls_key_pem;
  std::string tls_server_name;
  // The files those came from (--control-plane-ca, -cert, -key), read again
  // before each connection: a renewed certificate (cert-manager rewrites
  // the files) is used from the next reconnect on, without a restart. A
  // file that cannot be read then keeps what was read before, with a
  // warning. Empty: the PEM above is used as it is.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;

  // INVALID_ARGUMENT naming the option that is out of range.
  absl::Status Check() const;
};

// "host:port[,host:port...]" (the --control-plane flag) into its addresses,
// in order, spaces around each one dropped. Each address is passed to gRPC
// as it is (any gRPC target without a comma). INVALID_ARGUMENT for an empty
// list or entry, or an address given twice.
absl::StatusOr<std::vector<std::string>> ParseControlPlaneAddresses(absl::string_view flag);

// Which control plane to try next and how long to wait before trying it.
// No I/O, no clock, no randomness of its own: the caller says how long the
// attempt lived and passes a random number, so a test drives every step.
//
// Addresses are tried in list order from `first`, wrapping around; every
// failure (a stream that broke, was refused, or could not be opened) moves to
// the next one. The wait before the next attempt is drawn uniformly from
// [d/2, d] with d = min(base * 2^passes, max), where `passes` counts the
// whole passes over the list that failed since the last healthy stream (one
// that lived at least `healthy_after`); a healthy stream starts over at
// `base`. With one address: 250 ms, 500 ms, 1 s, ... 10 s (each jittered),
// as a single control plane always had. With two: 250, 250, 500, 500, 1 s...
//
// One thread at a time (the client's).
class ControlPlaneFailover {
 public:
  struct Schedule {
    absl::Duration base = absl::Milliseconds(250);
    absl::Duration max = absl::Seconds(10);
    absl::Duration healthy_after = absl::Seconds(5);
  };

  // `addresses` must not be empty; `first` is taken modulo its size.
  ControlPlaneFailover(std::vector<std::string> addresses, size_t first, Schedule schedule);
  explicit ControlPlaneFailover(std::vector<std::string> addresses, size_t first = 0)
      : ControlPlaneFailover(std::move(addresses), first, Schedule()) {}

  const std::vector<std::string>& addresses() const { return addresses_; }
  size_t index() const { return index_; }
  const std::string& current() const { return addresses_[index_]; }

  // The attempt on current() ended after `lived` (from its start, connect
  // included). Moves to the next address and returns how long to wait before
  // trying it; `random` (any 64-bit value, uniform) picks the jitter.
  absl::Duration Next(absl::Duration lived, uint64_t random);

 private:
  const std::vector<std::string> addresses_;
  const Schedule schedule_;
  size_t index_;
  // Failures in a row since the last healthy stream.
  uint64_t failures_ = 0;
};

class ConfigClient {
 public:
  // `change`: what the response added or changed whole, patched route by
  // route (the replaced and inserted route ids per table, and the splices of
  // tables that had routes added or removed) and whether it removed any.
  using ApplyFn = std::function<absl::Status(uint64_t version, const api::ResourceMap& resources,
                                             const api::ConfigChange& change)>;
  // Runs after an applied version is ACKed (keeping it on disk must not
  // delay the ACK), with the version, its store id and its resources.
  using PersistFn = std::function<void(const controlplane::StoredState& held)>;

  // `held`: what the proxy serves already (from its --state-dir), or nothing.
  // `control_planes`: replicas' addresses, at least one (see
  // ControlPlaneFailover); the first one tried is picked at random.
  ConfigClient(std::vector<std::string> control_planes, discovery::v1::Node node,
               controlplane::StoredState held, ApplyFn apply, PersistFn persist,
               ConfigClientOptions options = {});
  // One control plane.
  ConfigClient(std::string control_plane, discovery::v1::Node node,
               controlplane::StoredState held, ApplyFn apply, PersistFn persist,
               ConfigClientOptions options = {})
      : ConfigClient(std::vector<std::string>{std::move(control_plane)}, std::move(node),
                     std::move(held), std::move(apply), std::move(persist),
                     std::move(options)) {}
  ~ConfigClient();

  // Every `interval` while a stream is up, `source` (called on a reporter
  // thread of the client's) makes a traffic summary that goes to the control
  // plane on the stream. Call before Start().
  using ReportFn = std::function<discovery::v1::TrafficReport()>;
  void SetReportSource(ReportFn source, absl::Duration interval);
  // Rate-limit scope FLEET: every `interval` while a stream is up, `demand`
  // (on a thread of the client's) makes the demand report that goes to the
  // control plane (nullopt: nothing to send, the proxy has no FLEET
  // policy); the leases it answers go to `leases` on the client's thread.
  // Call before Start().
  using DemandFn = std::function<std::optional<discovery::v1::RateLimitDemand>()>;
  using LeasesFn = std::function<void(const discovery::v1::RateLimitLeases&)>;
  void SetRateLimitExchange(DemandFn demand, absl::Duration interval, LeasesFn leases);

  // Called on the client's thread when a stream to `address` counts as
  // connected (true) and when that stream ends (false). Call before Start().
  using ConnectionFn = std::function<void(const std::string& address, bool connected)>;
  void SetConnectionObserver(ConnectionFn observer) { connection_observer_ = std::move(observer); }

  void Start();
  void Stop();
  bool connected() const { return connected_.load(); }
  // The address in use: connected to, or being tried next. Any thread.
  const std::string& control_plane() const {
    return control_planes_[current_.load(std::memory_order_relaxed)];
  }
  // Calls `fn` with what the proxy holds -- the version it runs and that
  // version's resources, the proxy's one copy of them -- under a lock (not
  // while a response is being applied). For /config_dump; any thread.
  void WithHeld(const std::function<void(const controlplane::StoredState&)>& fn) const;

 private:
  void Run();
  // Runs one stream to `address` until it ends; nullopt when Stop() ended it.
  std::optional<grpc::Status> RunStream(const std::string& address);
  // Answers one response: applies it or says why not.
  discovery::v1::DiscoveryRequest Answer(const discovery::v1::DiscoveryResponse& response,
                                         bool* applied);
  // Carries out one purge command; returns the request that answers it.
  discovery::v1::DiscoveryRequest PurgeCache(
      const discovery::v1::CachePurge& purge);
  void MarkConnected(const std::string& address, absl::string_view how);
  // The content hash of route table `name`, which held_ has: kept, or
  // computed once and kept (a table loaded from the state dir).
  uint64_t HeldTableHash(const std::string& name, const api::Resource& table);

  const std::vector<std::string> control_planes_;
  // Index into control_planes_ of the address in use (the client thread
  // writes it).
  std::atomic<size_t> current_{0};
  ConnectionFn connection_observer_;
  const discovery::v1::Node node_;
  const ConfigClientOptions options_;
  // The TLS material last read (options_'s, then the files'): client
  // thread only.
  std::string tls_ca_pem_;
  std::string tls_cert_pem_;
  std::string tls_key_pem_;
  std::string tls_warned_;  // the last TLS file problem logged
  // Reads options_'s TLS files again into the above (client thread).
  void RefreshTlsMaterial();
  ApplyFn apply_;
  PersistFn persist_;
  std::thread thread_;
  std::atomic<bool> connected_{false};

  // Written on the client thread only, under held_mu_ (WithHeld reads it
  // from others).
  mutable absl::Mutex held_mu_;
  controlplane::StoredState held_;
  // Content hash of each held RouteTable whose hash is known (client thread
  // only): what a patch's base_hash is checked against, and what the first
  // request of a stream says the proxy holds.
  std::map<std::string, uint64_t> table_hashes_;

  // Every `interval` until Stop(): writes make() to the stream when one is
  // up (what is made meanwhile is dropped; nullopt: nothing this time).
  void RunPeriodic(
      absl::Duration interval,
      const std::function<std::optional<discovery::v1::DiscoveryRequest>()>& make);

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;

  // Writes to the stream: the client thread's answers and the reporter's
  // summaries, one at a time (gRPC allows one outstanding write).
  absl::Mutex write_mu_;
  grpc::ClientReaderWriter<discovery::v1::DiscoveryRequest, discovery::v1::DiscoveryResponse>*
      stream_ ABSL_GUARDED_BY(write_mu_) = nullptr;
  ReportFn report_source_;
  absl::Duration report_interval_ = absl::Seconds(5);
  std::thread reporter_;
  DemandFn demand_source_;
  absl::Duration demand_interval_ = absl::Milliseconds(200);
  LeasesFn leases_sink_;
  std::thread demand_reporter_;
};

}  // namespace sluice::config

#endif  // SLUICE_DATAPLANE_CONFIG_CONFIG_CLIENT_H_
