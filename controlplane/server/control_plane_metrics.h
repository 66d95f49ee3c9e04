// ControlPlaneMetrics: what sluice-control counts about itself, rendered in
// the Prometheus text format for --metrics-listen (metrics_endpoint.h).
//
// Counters are lock-free atomics bumped where things happen: the admin
// service counts each Apply and Delete by how it ended, the discovery service
// each response pushed to a proxy, each ACK (and the time from that push to
// it) and each NACK. What is a state rather than an event (the config
// version, the proxies connected) is read when a scrape renders, from
// ConfigState and ProxyRegistry, and passed in as ScrapeState.
//
// Thread-safe; every method may be called from any thread.
#ifndef SLUICE_CONTROLPLANE_SERVER_CONTROL_PLANE_METRICS_H_
#define SLUICE_CONTROLPLANE_SERVER_CONTROL_PLANE_METRICS_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace sluice::controlplane {

// sluice-control's version, as sluice_control_build_info{version} reports it.
inline constexpr char kControlPlaneVersion[] = "0.1";

// How an Apply or Delete request ended: the `result` label.
enum class ChangeOutcome {
  kOk,           // a new version was stored and pushed
  kUnchanged,    // valid, but the state already was that: no new version
  kDryRun,       // valid dry run; nothing stored
  kInvalid,      // INVALID_ARGUMENT: the request or the resulting state
  kNotFound,     // NOT_FOUND: a delete of something absent
  kConflict,     // FAILED_PRECONDITION: a delete of something others refer to
  kTooLarge,     // RESOURCE_EXHAUSTED: past --max-config-bytes
  kUnavailable,  // UNAVAILABLE: not stored, or shutting down
  kError,        // any other code
};
inline constexpr int kChangeOutcomes = static_cast<int>(ChangeOutcome::kError) + 1;

// The `result` label value of `outcome`: "ok", "unchanged", "dry_run",
// "invalid", "not_found", "conflict", "too_large", "unavailable", "error".
const char* ChangeOutcomeName(ChangeOutcome outcome);

// The outcome of a request that ended with `status`; for an OK one,
// `dry_run` and whether it `changed` the version tell the three apart.
ChangeOutcome OutcomeOf(const absl::Status& status, bool dry_run, bool changed);

// A histogram of durations with fixed buckets, one set of relaxed atomics:
// ACKs come at the rate proxies apply configs, far too rarely for sharding
// to matter.
class DurationHistogram {
 public:
  // Upper bounds in microseconds; +Inf follows. From a proxy on the same
  // host applying a small config (~1 ms) to a large config on a busy fleet.
  static constexpr int kFinite = 15;
  static constexpr int64_t kBoundsMicros[kFinite] = {
      1000,   2500,    5000,    10000,   25000,    50000,    100000,  250000,
      500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000};

  void Observe(absl::Duration duration);

  struct Totals {
    uint64_t buckets[kFinite + 1] = {};  // not cumulative; the last is +Inf
    uint64_t count = 0;
    uint64_t sum_micros = 0;
  };
  Totals Sum() const;

 private:
  std::atomic<uint64_t> buckets_[kFinite + 1] = {};
  std::atomic<uint64_t> sum_micros_{0};
};

class ControlPlaneMetrics {
 public:
  void CountApply(ChangeOutcome outcome) { Bump(applies_[Index(outcome)]); }
  void CountDelete(ChangeOutcome outcome) { Bump(deletes_[Index(outcome)]); }
  // A change made a new version at `when`.
  void RecordNewVersion(absl::Time when);
  // A DiscoveryResponse was written to a proxy's stream.
  void CountPush() { Bump(pushes_); }
  // A proxy ACKed a response `since_push` after it was written.
  void CountAck(absl::Duration since_push);
  void CountNack() { Bump(nacks_); }
  // An admin API call refused for its token: none or unknown
  // (`unauthenticated`), or a role too low (`permission_denied`).
  void CountAdminRefusal(bool unauthenticated) {
    Bump(admin_refusals_[unauthenticated ? 0 : 1]);
  }
  // A config stream refused for its client certificate (none, no node, or
  // another node's).
  void CountStreamRefusal() { Bump(stream_refusals_); }

  // What a scrape reads from the rest of the control plane.
  struct ScrapeState {
    uint64_t config_version = 0;
    int64_t connected_proxies = 0;
    bool rollout_running = false;
    // Each tls_certificate Secret's leaf notAfter, Unix seconds, by name.
    std::vector<std::pair<std::string, int64_t>> certificate_expiry;
  };
  // Every family with HELP and TYPE; every `result` label value is present
  // from the start (at 0), so rate() and increase() see the first one.
  std::string Render(const ScrapeState& state) const;

 private:
  static int Index(ChangeOutcome outcome) { return static_cast<int>(outcome); }
  static void Bump(std::atomic<uint64_t>& counter) {
    counter.fetch_add(1, std::memory_order_relaxed);
  }

  std::atomic<uint64_t> applies_[kChangeOutcomes] = {};
  std::atomic<uint64_t> deletes_[kChangeOutcomes] = {};
  // Unix microseconds of the last new version made since start; 0: none.
  std::atomic<int64_t> last_change_micros_{0};
  std::atomic<uint64_t> pushes_{0};
  std::atomic<uint64_t> acks_{0};
  std::atomic<uint64_t> nacks_{0};
  std::atomic<uint64_t> admin_refusals_[2] = {};  // unauthenticated, permission_denied
  std::atomic<uint64_t> stream_refusals_{0};
  DurationHistogram ack_latency_;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_CONTROL_PLANE_METRICS_H_
