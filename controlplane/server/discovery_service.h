// DiscoveryServiceImpl: the config stream to proxies (api/sluice/discovery).
//
// Each stream runs on a gRPC sync-server thread (the writer) plus one reader
// thread of its own. The writer sends a response whenever the proxy is behind
// the version meant for it (ConfigState::SnapshotFor: the current one, or
// during a canary rollout the stable one unless the proxy is a canary) and
// has no response outstanding; the reader records
// ACKs and NACKs. What a proxy holds is tracked per stream as content hashes,
// so every response carries only the resources that differ. A NACKed version
// is offered again after a backoff (the cause may pass: a port busy for a
// moment); a newer version is sent at once.
//
// Each response written, each ACK (with the time since its response was
// written) and each NACK is counted in `metrics`, when there is one.
//
// Bounds (api/discovery.h): at most `max_streams` streams at once, a node
// whose strings or labels are too long, or a NACK reason that is, ends the
// stream with RESOURCE_EXHAUSTED or INVALID_ARGUMENT and the reason.
//
// Client certificates (`require_node_certificate`, set by sluice-control's
// --client-ca): a stream whose peer presented no verified certificate is
// refused UNAUTHENTICATED; one whose certificate does not name exactly one
// node, or names another node than the first request's node.id, is refused
// PERMISSION_DENIED with both names. A certificate names its node by a URI
// SAN "spiffe://sluice/node/<node id>" (kNodeUriPrefix).
//
// Cache purges (PurgeRelay, when there is one): an established stream
// attaches to the relay with a queue of CachePurge commands that its writer
// thread sends, each in a response of its own with no nonce, ahead of config
// responses and whether or not one is unanswered (they are not part of the
// ACK/NACK protocol). The reader thread hands the proxy's PurgeResults to the
// relay without taking the stream's lock. The stream detaches when it ends.
//
// Rate-limit leases (LeaseAllocator, when there is one): a proxy's
// RateLimitDemand (a request of its own, no nonce) is handed to the
// allocator by the reader thread, and the answer (its shares) goes back in a
// response of its own with `rate_limit_leases` set and no nonce, sent by the
// writer like a purge; only the newest unsent answer is kept. The proxy
// leaves the allocator when its stream ends.
//
// Thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_DISCOVERY_SERVICE_H_
#define SLUICE_CONTROLPLANE_SERVER_DISCOVERY_SERVICE_H_

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controlplane/server/config_state.h"
#include "controlplane/server/control_plane_metrics.h"
#include "controlplane/server/proxy_registry.h"
#include "controlplane/server/purge_relay.h"
#include "controlplane/server/rate_limit_leases.h"
#include "sluice/discovery/v1/discovery.grpc.pb.h"

namespace sluice::controlplane {

// Starts `body` on a new thread; RESOURCE_EXHAUSTED when the system has none
// to give.
absl::StatusOr<std::thread> StartThread(std::function<void()> body);

// The URI SAN prefix that binds a proxy's certificate to its node id.
inline constexpr char kNodeUriPrefix[] = "spiffe://sluice/node/";

// The node id a certificate names, from its subject alternative names (the
// URIs among them): UNAUTHENTICATED when `verified` is false (no verified
// certificate), PERMISSION_DENIED when no SAN, or more than one distinct
// one, starts with kNodeUriPrefix.
absl::StatusOr<std::string> NodeIdFromCertificate(bool verified,
                                                  const std::vector<std::string>& sans);

struct DiscoveryOptions {
  // Streams served at once; the next one is refused (RESOURCE_EXHAUSTED).
  int max_streams = 1000;
  // The first NACK of a version is followed by an offer of it again after
  // `nack_retry`; each NACK of it in a row doubles that, up to
  // `nack_retry_max`.
  absl::Duration nack_retry = absl::Seconds(5);
  absl::Duration nack_retry_max = absl::Minutes(5);
  // How a stream's reader thread is started; tests make it fail.
  std::function<absl::StatusOr<std::thread>(std::function<void()>)> start_thread = StartThread;
  // Streams must come from a peer with a verified client certificate that
  // names the node (see the file comment).
  bool require_node_certificate = false;
};

class DiscoveryServiceImpl final : public discovery::v1::DiscoveryService::Service {
 public:
  // `metrics` may be null: nothing is counted then. `purges` may be null:
  // streams take no purges then (a proxy's purge results are dropped).
  DiscoveryServiceImpl(ConfigState* state, ProxyRegistry* registry,
                       DiscoveryOptions options = {},
                       ControlPlaneMetrics* metrics = nullptr,
                       PurgeRelay* purges = nullptr)
      : state_(state),
        registry_(registry),
        options_(std::move(options)),
        metrics_(metrics),
        purges_(purges) {}

  grpc::Status StreamConfig(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<discovery::v1::DiscoveryResponse,
                               discovery::v1::DiscoveryRequest>* stream) override;

  // Streams being served now, including ones not yet past their first
  // request.
  int active_streams() const { return active_streams_.load(); }

  // Rate-limit leases for scope FLEET (may stay null: demand reports are
  // ignored then). Call before serving; `leases` outlives the service.
  void set_lease_allocator(LeaseAllocator* leases) { leases_ = leases; }

 private:
  ConfigState* state_;
  ProxyRegistry* registry_;
  const DiscoveryOptions options_;
  ControlPlaneMetrics* const metrics_;
  PurgeRelay* const purges_;
  std::atomic<uint64_t> next_nonce_{1};
  std::atomic<int> active_streams_{0};
  LeaseAllocator* leases_ = nullptr;
  std::atomic<uint64_t> next_lease_client_{1};
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_DISCOVERY_SERVICE_H_
