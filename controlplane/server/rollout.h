// Canary rollouts: a change verified on some proxies before all get it.
//
// RolloutManager::Start commits the change as a candidate version that only
// the canaries receive (ConfigState::ApplyCanary: the proxies of a node
// group, or a share of the connected ones chosen by node id); the rest of the
// fleet stays on the stable version before it. Once every canary has ACKed
// the candidate, the verify window runs: the TrafficReports the proxies send
// on their config streams (ProxyRegistry's observer) are summed per side,
// canaries (reports of the candidate) and rest (reports of the stable
// version). JudgeRollout decides: a NACK of the candidate by a canary rolls
// back at once, so does a regression beyond the thresholds once both sides
// have enough requests; at the end of the window the candidate is promoted,
// or without enough traffic promoted or rolled back as the thresholds say.
// Either decision is a new version every proxy receives
// (ConfigState::EndCanary), so versions stay monotonic: promote carries the
// candidate's content, roll back the stable content, and its history message
// carries the figures and the reason. An operator may decide early (Promote,
// Abort).
//
// The running rollout is kept in `<data dir>/rollout.db` (written durably
// before the candidate is stored, removed once decided). A control plane that
// starts and finds it (RecoverInterrupted, before it serves) ends it: when
// the candidate is the current version it restores the stable content as a
// new version recorded as "aborted: control plane restarted", so the fleet is
// never left split.
//
// Lock order: the decision mutex, then ConfigState's locks; the figures'
// mutex is taken alone (the observer calls come from stream reader threads
// that hold their stream's lock). Thread-safe; a thread of its own ticks
// every `tick` to move a rollout on.
#ifndef SLUICE_CONTROLPLANE_SERVER_ROLLOUT_H_
#define SLUICE_CONTROLPLANE_SERVER_ROLLOUT_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controlplane/server/audit_log.h"
#include "controlplane/server/config_state.h"
#include "controlplane/server/control_plane_metrics.h"
#include "controlplane/server/proxy_registry.h"
#include "sluice/admin/v1/admin.pb.h"

namespace sluice::controlplane {

// The thresholds with their defaults filled in (admin.proto RolloutThresholds).
struct RolloutLimits {
  double max_5xx_rate_increase = 0.01;
  double max_p99_ratio = 1.5;
  double p99_slack_ms = 10;
  uint64_t min_requests = 100;
  bool promote_without_traffic = false;
  double max_4xx_rate_increase = 0.1;
};

// The limits `thresholds` asks for: INVALID_ARGUMENT naming the field when
// out of range (5xx increase 0..1, p99 ratio >= 1, slack >= 0).
absl::StatusOr<RolloutLimits> LimitsFrom(const admin::v1::RolloutThresholds& thresholds);
// `limits` with every field set, as GetRollout shows them.
admin::v1::RolloutThresholds ThresholdsOf(const RolloutLimits& limits);

struct RolloutVerdict {
  enum Decision { kContinue, kPromote, kRollBack };
  Decision decision = kContinue;
  std::string reason;  // empty with kContinue
};

// The decision on figures so far. `window_over`: the verify window has
// ended (else only a rollback is decided early). Pure.
RolloutVerdict JudgeRollout(const admin::v1::RolloutFigures& canary,
                            const admin::v1::RolloutFigures& rest, const RolloutLimits& limits,
                            bool window_over);

// "120 requests from 1 proxy, 5xx 2.50%, p99 12.3 ms, 0 NACKs"
std::string DescribeFigures(const admin::v1::RolloutFigures& figures);

// How long the canaries have to ACK the candidate before it is rolled back.
inline constexpr absl::Duration kCanaryDeployTimeout = absl::Seconds(30);
// A canary disconnected this long while the candidate is verified rolls it
// back (a candidate that crashes its proxies, or cuts them off, looks like
// this); a restart reconnects well within it.
inline constexpr absl::Duration kCanaryGoneLimit = absl::Seconds(10);
inline constexpr absl::Duration kMinVerify = absl::Seconds(1);
inline constexpr absl::Duration kMaxVerify = absl::Hours(1);

class RolloutManager {
 public:
  using Clock = std::function<absl::Time()>;

  // `rollout_path`: the file of the running rollout (rollout.db in the data
  // dir). Registers itself as `registry`'s observer and starts its ticking
  // thread; no pointer is owned and all must outlive this object. `metrics`
  // (may be null) records the time of each decision's version. Destroy it
  // after the discovery service has stopped (its streams call the observer).
  RolloutManager(ConfigState* state, ProxyRegistry* registry, std::string rollout_path,
                 Clock clock = &absl::Now, absl::Duration tick = absl::Milliseconds(100),
                 ControlPlaneMetrics* metrics = nullptr);
  ~RolloutManager();
  RolloutManager(const RolloutManager&) = delete;
  RolloutManager& operator=(const RolloutManager&) = delete;

  // Where the decisions the control plane makes itself (a verdict, a
  // restart's abort) are recorded, as the operators' are; call before
  // RecoverInterrupted. nullptr: nowhere.
  void SetAuditLog(AuditLog* audit) { audit_ = audit; }

  // Ends a rollout a previous process left in `rollout_path` (see the file
  // comment). Call before proxies are served.
  absl::Status RecoverInterrupted();

  struct Started {
    admin::v1::Rollout rollout;
    ConfigState::ChangeResult change;
  };
  // INVALID_ARGUMENT for a malformed request; FAILED_PRECONDITION when a
  // rollout runs, or the canaries would be none or every connected proxy;
  // else ApplyCanary's errors.
  absl::StatusOr<Started> Start(const admin::v1::StartRolloutRequest& request,
                                const std::string& author);
  // The running rollout (with `*running` true), else the last one decided;
  // nullopt when there was none.
  std::optional<admin::v1::Rollout> Get(bool* running) const;
  // Decides the running rollout now, as the operator `author` asks.
  // FAILED_PRECONDITION when none runs.
  absl::StatusOr<admin::v1::Rollout> Decide(bool promote, const std::string& author,
                                            const std::string& message);

  // Moves the running rollout on (the thread calls it every tick; tests may
  // call it directly).
  void Tick();

 private:
  void Reported(const discovery::v1::Node& node, const discovery::v1::TrafficReport& report);
  void Nacked(const discovery::v1::Node& node, uint64_t version, const std::string& error);
  // Ends the running rollout `id` with `promote` and `reason`. Holds
  // decide_mu_. `automatic`: the control plane's own decision (an
  // operator's is audited by the admin service, with their identity).
  absl::StatusOr<admin::v1::Rollout> End(const std::string& id, bool promote,
                                         const std::string& reason, const std::string& author,
                                         const std::string& message, bool automatic)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(decide_mu_);
  void RemoveFile();

  ConfigState* const state_;
  ProxyRegistry* const registry_;
  const std::string path_;
  const Clock clock_;
  const absl::Duration tick_;
  ControlPlaneMetrics* const metrics_;

  // Serializes Start, Decide and the ticks' decisions.
  absl::Mutex decide_mu_;
  // After a decision failed to commit (the store refused it), ticks retry it
  // from then on, not every tick.
  absl::Time retry_decision_at_ ABSL_GUARDED_BY(decide_mu_) = absl::InfinitePast();
  // While a rollout runs: since when each canary not connected has been
  // gone, and each canary's connection (when it connected, in nanoseconds)
  // as first seen.
  std::map<std::string, absl::Time> canary_gone_since_ ABSL_GUARDED_BY(decide_mu_);
  std::map<std::string, int64_t> canary_connections_ ABSL_GUARDED_BY(decide_mu_);
  AuditLog* audit_ = nullptr;  // automatic decisions; nullptr: none

  mutable absl::Mutex mu_;  // the fields below; never held while calling out
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  admin::v1::Rollout rollout_ ABSL_GUARDED_BY(mu_);  // running or last decided
  bool have_rollout_ ABSL_GUARDED_BY(mu_) = false;
  CanarySplit split_ ABSL_GUARDED_BY(mu_);
  RolloutLimits limits_ ABSL_GUARDED_BY(mu_);
  absl::Time started_ ABSL_GUARDED_BY(mu_);
  absl::Time verify_ends_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> canary_reporters_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> rest_reporters_ ABSL_GUARDED_BY(mu_);
  double canary_p99_sum_ ABSL_GUARDED_BY(mu_) = 0;  // p99 x requests
  double rest_p99_sum_ ABSL_GUARDED_BY(mu_) = 0;
  std::string nack_ ABSL_GUARDED_BY(mu_);  // the first canary NACK: "node: reason"
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  std::thread ticker_;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_ROLLOUT_H_
