// HealthChecker: active health checks (TCP connect, HTTP GET, or the gRPC
// health protocol, grpc.health.v1.Health/Check over HTTP/2) for every
// cluster that configures them, run on the main thread's dispatcher. A
// cluster with tls is checked over TLS with its settings: a probe passes
// only after a verified handshake, and a failed one is a failure naming the
// reason ("TLS handshake: certificate verify failed: ...").
//
// There is one check per (cluster name, endpoint key). A timer starts a probe
// `interval` (+ uniform random jitter in [0, jitter]) after the previous probe
// ended, so probes of one endpoint never overlap; `timeout` cuts a slow probe
// short, and that counts as a failure. The first probe starts within
// min(jitter, interval) of the Update() that added the endpoint, so a new
// endpoint is judged quickly.
//
// Results drive the endpoint's shared EndpointState::health, which workers
// read lock-free on the request path:
//   - pass:    kUnknown -> kHealthy on the first pass;
//              kUnhealthy -> kHealthy after healthy_threshold consecutive
//              passes.
//   - failure: kUnknown or kHealthy -> kUnhealthy after unhealthy_threshold
//              consecutive failures; the reason goes to SetLastCheckFailure()
//              (kept after later passes, for the admin page).
// Each transition is logged at info level. A check, with its consecutive
// counts, survives an Update() that keeps its (cluster, endpoint) pair.
//
// Threading: construct, Update() and destroy on the dispatcher's thread (or
// while its loop is not running). active_checks() may be called from any
// thread.
#ifndef SLUICE_DATAPLANE_UPSTREAM_HEALTH_CHECKER_H_
#define SLUICE_DATAPLANE_UPSTREAM_HEALTH_CHECKER_H_

#include <atomic>
#include <cstddef>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/upstream/cluster.h"

namespace sluice::upstream {

// The gRPC health checking protocol's answer, read as a gRPC client would.
namespace grpc_health {

// The `status` of the one length-prefixed, uncompressed HealthCheckResponse
// that `body` (the response's DATA) must be: as protobuf parses it, the
// last value of field 1 wins, unknown fields are skipped and the varint is
// cut to the enum's int32 (2^32 + 1 is 1, SERVING); 0 (UNKNOWN) when
// absent. INVALID_ARGUMENT with the reason otherwise (compressed, a
// length prefix that disagrees with the bytes, not a protobuf message).
absl::StatusOr<int32_t> ServingStatus(std::string_view body);

}  // namespace grpc_health

class HealthChecker {
 public:
  explicit HealthChecker(event::Dispatcher& dispatcher);
  // Stops every check and closes its socket.
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // Called with every cluster of a newly applied config version. Starts checks
  // for new (cluster, endpoint) pairs, keeps the running ones (and their
  // consecutive counts) for pairs that stay, applying the new settings, and
  // stops the rest. Endpoints of clusters without a health check are set to
  // kHealthy (their checks, if any, were removed).
  void Update(const std::vector<std::shared_ptr<const ClusterInfo>>& clusters);

  // Number of (cluster, endpoint) pairs being checked.
  size_t active_checks() const {
    return active_checks_.load(std::memory_order_relaxed);
  }

 private:
  class EndpointCheck;
  class Probe;
  class HttpProbe;
  class GrpcProbe;

  // Uniform in [0, max].
  absl::Duration RandomDelay(absl::Duration max);

  event::Dispatcher& dispatcher_;
  std::mt19937_64 rng_;
  // Keyed by (cluster name, endpoint key).
  std::map<std::pair<std::string, std::string>, std::unique_ptr<EndpointCheck>>
      checks_;
  std::atomic<size_t> active_checks_{0};
};

}  // namespace sluice::upstream

#endif  // SLUICE_DATAPLANE_UPSTREAM_HEALTH_CHECKER_H_
