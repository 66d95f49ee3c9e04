// What both ends of the config stream (sluice/discovery/v1) and of the admin
// API agree on beyond the protos: the bounds, one set of numbers for
// sluice-control, sluice-proxy and sluicectl so that what one end may send the
// other accepts (docs/operations.md lists them), keepalive, and the stream's
// initial metadata.
//
// Constants only; thread-safe.
#ifndef SLUICE_API_DISCOVERY_H_
#define SLUICE_API_DISCOVERY_H_

#include <cstddef>
#include <cstdint>

namespace sluice::api {

// The largest whole config: the encoded size of the DiscoveryResponse that
// carries every resource, which is what a proxy that holds nothing receives
// in one message. An apply that would make the config larger is refused
// (RESOURCE_EXHAUSTED, naming the size and the limit); sluice-control
// --max-config-bytes can lower it, never raise it.
inline constexpr int64_t kMaxConfigBytes = int64_t{32} << 20;

// The gRPC message limit, receive and send, on both ends of the config stream
// and of the admin API. Twice the config and some room: a response to a proxy
// that holds another config carries the new config plus the keys of what it
// held, and a proxy's first request lists the key of everything it holds.
inline constexpr int kMaxMessageBytes = static_cast<int>(2 * kMaxConfigBytes + (1 << 20));

// What a proxy says about itself on its first request (discovery.v1.Node);
// sluice-control ends a stream that exceeds one with INVALID_ARGUMENT.
inline constexpr size_t kMaxNodeIdBytes = 256;
inline constexpr size_t kMaxNodeGroupBytes = 256;
inline constexpr size_t kMaxBuildVersionBytes = 256;
inline constexpr int kMaxNodeLabels = 64;
inline constexpr size_t kMaxLabelKeyBytes = 256;
inline constexpr size_t kMaxLabelValueBytes = 1024;
// Node.client_features: what a proxy understands beyond the base protocol.
// "sluice.route_table_patch": DiscoveryResponse.route_table_patches.
inline constexpr char kFeatureRouteTablePatch[] = "sluice.route_table_patch";
inline constexpr int kMaxClientFeatures = 64;
inline constexpr size_t kMaxClientFeatureBytes = 256;
// The reason a proxy gives with a NACK. The proxy shortens a longer one;
// sluice-control ends a stream whose NACK is longer.
inline constexpr size_t kMaxNackErrorBytes = 16 << 10;
// Who made a change and why (admin API: apply, delete, rollback), kept in
// the history: longer ones are refused (INVALID_ARGUMENT).
inline constexpr size_t kMaxAuthorBytes = 256;
inline constexpr size_t kMaxChangeMessageBytes = 4096;

// Keepalive on the config stream. A proxy pings an idle stream every
// keepalive interval (at least this, default kDefaultKeepalive) and drops it
// when a ping is not answered within the timeout; sluice-control accepts
// pings without data as often as every kMinKeepaliveMs / 2.
inline constexpr int kMinKeepaliveMs = 1000;
inline constexpr int kDefaultKeepaliveMs = 30000;
inline constexpr int kDefaultKeepaliveTimeoutMs = 10000;

// sluice-control sends this initial-metadata key as soon as it has accepted a
// stream's first request: the proxy then knows the stream is established,
// before (and without) any response.
inline constexpr char kStreamAcceptedKey[] = "sluice-stream-accepted";

}  // namespace sluice::api

#endif  // SLUICE_API_DISCOVERY_H_
