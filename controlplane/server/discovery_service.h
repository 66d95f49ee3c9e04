// DiscoveryServiceImpl: the config stream to proxies (api/sluice/discovery).
//
// Streams are served with gRPC's callback API and hold no thread of their
// own: reads, writes and the stream's end are callbacks on gRPC's threads,
// and the config responses are built by a small fixed pool of push threads
// (`push_threads`) that every stream shares. A stream sends a response
// whenever the proxy is behind the version meant for it
// (ConfigState::SnapshotFor: the current one, or during a canary rollout the
// stable one unless the proxy is a canary) and has no response outstanding;
// its reads record ACKs and NACKs. A stream writes one message at a time.
// A NACKed version is offered again after a backoff (the cause may pass: a
// port busy for a moment); a newer version is sent at once.
//
// What a proxy holds is tracked per stream as a pointer to a snapshot (the
// one it ACKed; an empty one for a proxy that holds nothing), so every
// response carries only the resources that differ. The response that takes
// a proxy from snapshot X to snapshot Y is built and serialized once and
// shared by every stream making that move (a small cache, kMaxCachedDeltas
// moves); only its nonce is per stream. A reconnecting proxy whose
// known_resources match no snapshot it is meant to run, and one whose
// patched tables were NACKed, is diffed on its own.
//
// Route-level deltas: a RouteTable the proxy holds at a hash whose content
// the control plane still has (the snapshot the proxy holds, or one of the
// last kKeptSnapshots sent) goes as a RouteTablePatch
// (api::MakeRouteTablePatch, made once per (base, new) pair and shared;
// kMaxCachedPatches pairs) when the change allows one, else whole in
// `resources`. A NACK of a response that carried patches makes the stream
// forget the proxy's hashes of those tables, so the next offer sends them
// whole.
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
// attaches to the relay with a queue of CachePurge commands that it sends,
// each in a response of its own with no nonce, ahead of config responses
// and whether or not one is unanswered (they are not part of the ACK/NACK
// protocol). The proxy's PurgeResults go to the relay without taking the
// stream's lock. The stream detaches when it ends.
//
// Rate-limit leases (LeaseAllocator, when there is one): a proxy's
// RateLimitDemand (a request of its own, no nonce) is handed to the
// allocator as it is read, and the answer (its shares) goes back in a
// response of its own with `rate_limit_leases` set and no nonce, sent like a
// purge; only the newest unsent answer is kept. The proxy leaves the
// allocator when its stream ends.
//
// ConfigState::Shutdown() ends every stream with UNAVAILABLE.
//
// Thread-safe. Register it on a grpc::ServerBuilder like any service; it
// must outlive the grpc::Server (its push threads stop in its destructor).
#ifndef SLUICE_CONTROLPLANE_SERVER_DISCOVERY_SERVICE_H_
#define SLUICE_CONTROLPLANE_SERVER_DISCOVERY_SERVICE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controlplane/server/config_state.h"
#include "controlplane/server/control_plane_metrics.h"
#include "controlplane/server/proxy_registry.h"
#include "controlplane/server/purge_relay.h"
#include "controlplane/server/rate_limit_leases.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "sluice/discovery/v1/discovery.grpc.pb.h"

namespace sluice::controlplane {

// The URI SAN prefix that binds a proxy's certificate to its node id.
inline constexpr char kNodeUriPrefix[] = "spiffe://sluice/node/";

// The node id a certificate names, from its subject alternative names (the
// URIs among them): UNAUTHENTICATED when `verified` is false (no verified
// certificate), PERMISSION_DENIED when no SAN, or more than one distinct
// one, starts with kNodeUriPrefix.
absl::StatusOr<std::string> NodeIdFromCertificate(bool verified,
                                                  const std::vector<std::string>& sans);

// Moves (proxy holds snapshot X -> snapshot Y) whose response is kept for
// the streams that make the same move.
inline constexpr size_t kMaxCachedDeltas = 8;
// (base, new) route table pairs whose patch (or the lack of one) is kept.
inline constexpr size_t kMaxCachedPatches = 64;
// Snapshots sent last whose route tables serve as patch bases for proxies
// that hold no snapshot of their own (a reconnect, a NACKed patch).
inline constexpr size_t kKeptSnapshots = 4;

struct DiscoveryOptions {
  // Streams served at once; the next one is refused (RESOURCE_EXHAUSTED).
  int max_streams = 1000;
  // A stream that sends no first request this long after it opened is
  // ended (DEADLINE_EXCEEDED), so silent clients cannot hold the slots.
  absl::Duration first_request_timeout = absl::Seconds(10);
  // The first NACK of a version is followed by an offer of it again after
  // `nack_retry`; each NACK of it in a row doubles that, up to
  // `nack_retry_max`.
  absl::Duration nack_retry = absl::Seconds(5);
  // With replicas on a shared store: how long a proxy that holds a newer
  // version than this replica is offered nothing while the replica reads
  // the store again; past it, the store is taken to be behind (a restored
  // backup) and the current version is offered, as with one control plane.
  absl::Duration catch_up_wait = absl::Seconds(5);
  absl::Duration nack_retry_max = absl::Minutes(5);
  // Streams must come from a peer with a verified client certificate that
  // names the node (see the file comment).
  bool require_node_certificate = false;
  // Threads that build and start the config responses of all streams
  // (1..64).
  int push_threads = 2;
};

namespace discovery_internal {
struct StreamHub;  // what every stream shares (discovery_service.cc)
}  // namespace discovery_internal

// StreamConfig is served raw (grpc::ByteBuffer), so that a response shared by
// many streams is serialized once.
class DiscoveryServiceImpl final
    : public discovery::v1::DiscoveryService::WithRawCallbackMethod_StreamConfig<
          discovery::v1::DiscoveryService::Service> {
 public:
  // `metrics` may be null: nothing is counted then. `purges` may be null:
  // streams take no purges then (a proxy's purge results are dropped).
  // Starts options.push_threads threads.
  DiscoveryServiceImpl(ConfigState* state, ProxyRegistry* registry,
                       DiscoveryOptions options = {},
                       ControlPlaneMetrics* metrics = nullptr,
                       PurgeRelay* purges = nullptr);
  // Stops the push threads. The grpc::Server must be shut down first.
  ~DiscoveryServiceImpl() override;

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StreamConfig(
      grpc::CallbackServerContext* context) override;

  // Streams being served now, including ones not yet past their first
  // request.
  int active_streams() const;

  // Rate-limit leases for scope FLEET (may stay null: demand reports are
  // ignored then). Call before serving; `leases` outlives the service.
  void set_lease_allocator(LeaseAllocator* leases);

 private:
  std::unique_ptr<discovery_internal::StreamHub> hub_;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_DISCOVERY_SERVICE_H_
