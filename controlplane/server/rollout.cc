#include "controlplane/server/rollout.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "api/resource.h"
#include "api/validation.h"
#include "common/log.h"
#include "controlplane/store/file_store.h"

namespace sluice::controlplane {
namespace {

double FiveXxRate(const admin::v1::RolloutFigures& figures) {
  if (figures.requests() == 0) return 0;
  return static_cast<double>(figures.responses_5xx()) / static_cast<double>(figures.requests());
}

double FourXxRate(const admin::v1::RolloutFigures& figures) {
  if (figures.requests() == 0) return 0;
  return static_cast<double>(figures.responses_4xx()) / static_cast<double>(figures.requests());
}

std::string Percent(double ratio) { return absl::StrFormat("%.2f%%", 100.0 * ratio); }

google::protobuf::Timestamp ToTimestamp(absl::Time time) {
  google::protobuf::Timestamp out;
  const int64_t micros = absl::ToUnixMicros(time);
  out.set_seconds(micros / 1000000);
  out.set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
  return out;
}

// Adds one report to a side's figures.
void Add(const discovery::v1::TrafficReport& report, admin::v1::RolloutFigures* figures,
         double* p99_sum) {
  figures->set_reports(figures->reports() + 1);
  figures->set_requests(figures->requests() + report.requests());
  figures->set_responses_5xx(figures->responses_5xx() + report.responses_5xx());
  figures->set_responses_4xx(figures->responses_4xx() + report.responses_4xx());
  *p99_sum += report.p99_ms() * static_cast<double>(report.requests());
  figures->set_p99_ms(figures->requests() > 0 ? *p99_sum / static_cast<double>(figures->requests())
                                              : 0.0);
}

}  // namespace

absl::StatusOr<RolloutLimits> LimitsFrom(const admin::v1::RolloutThresholds& thresholds) {
  RolloutLimits limits;
  if (thresholds.has_max_5xx_rate_increase()) {
    limits.max_5xx_rate_increase = thresholds.max_5xx_rate_increase();
  }
  if (thresholds.has_max_p99_ratio()) limits.max_p99_ratio = thresholds.max_p99_ratio();
  if (thresholds.has_p99_slack_ms()) limits.p99_slack_ms = thresholds.p99_slack_ms();
  if (thresholds.has_min_requests()) limits.min_requests = thresholds.min_requests();
  if (thresholds.has_promote_without_traffic()) {
    limits.promote_without_traffic = thresholds.promote_without_traffic();
  }
  if (thresholds.has_max_4xx_rate_increase()) {
    limits.max_4xx_rate_increase = thresholds.max_4xx_rate_increase();
  }
  if (!(limits.max_5xx_rate_increase >= 0 && limits.max_5xx_rate_increase <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("thresholds.max_5xx_rate_increase is ", limits.max_5xx_rate_increase,
                     "; expected 0..1 (0.01 is one percentage point)"));
  }
  if (!(limits.max_4xx_rate_increase >= 0 && limits.max_4xx_rate_increase <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("thresholds.max_4xx_rate_increase is ", limits.max_4xx_rate_increase,
                     "; expected 0..1 (0.1 is ten percentage points; 1: 4xx not judged)"));
  }
  if (!(limits.max_p99_ratio >= 1 && limits.max_p99_ratio <= 1000)) {
    return absl::InvalidArgumentError(
        absl::StrCat("thresholds.max_p99_ratio is ", limits.max_p99_ratio, "; expected 1..1000"));
  }
  if (!(limits.p99_slack_ms >= 0 && limits.p99_slack_ms <= 3600000)) {
    return absl::InvalidArgumentError(
        absl::StrCat("thresholds.p99_slack_ms is ", limits.p99_slack_ms, "; expected 0..3600000"));
  }
  return limits;
}

admin::v1::RolloutThresholds ThresholdsOf(const RolloutLimits& limits) {
  admin::v1::RolloutThresholds out;
  out.set_max_5xx_rate_increase(limits.max_5xx_rate_increase);
  out.set_max_p99_ratio(limits.max_p99_ratio);
  out.set_p99_slack_ms(limits.p99_slack_ms);
  out.set_min_requests(limits.min_requests);
  out.set_promote_without_traffic(limits.promote_without_traffic);
  out.set_max_4xx_rate_increase(limits.max_4xx_rate_increase);
  return out;
}

std::string DescribeFigures(const admin::v1::RolloutFigures& figures) {
  return absl::StrFormat(
      "%d requests from %d %s (%d %s), 5xx %s, 4xx %s, p99 %.1f ms, %d NACKs",
      figures.requests(), figures.proxies(), figures.proxies() == 1 ? "proxy" : "proxies",
      figures.reports(), figures.reports() == 1 ? "report" : "reports",
      Percent(FiveXxRate(figures)), Percent(FourXxRate(figures)), figures.p99_ms(),
      figures.nacks());
}

RolloutVerdict JudgeRollout(const admin::v1::RolloutFigures& canary,
                            const admin::v1::RolloutFigures& rest, const RolloutLimits& limits,
                            bool window_over) {
  if (canary.nacks() > 0) {
    return {RolloutVerdict::kRollBack, "a canary rejected (NACKed) the candidate"};
  }
  const bool enough =
      canary.requests() >= limits.min_requests && rest.requests() >= limits.min_requests;
  if (enough) {
    const double canary_rate = FiveXxRate(canary);
    const double rest_rate = FiveXxRate(rest);
    if (canary_rate - rest_rate > limits.max_5xx_rate_increase) {
      return {RolloutVerdict::kRollBack,
              absl::StrCat("5xx rate ", Percent(canary_rate), " on the canaries against ",
                           Percent(rest_rate), " on the rest: more than ",
                           absl::StrFormat("%.2f", 100.0 * limits.max_5xx_rate_increase),
                           " percentage points over")};
    }
    const double canary_4xx = FourXxRate(canary);
    const double rest_4xx = FourXxRate(rest);
    if (limits.max_4xx_rate_increase < 1 &&
        canary_4xx - rest_4xx > limits.max_4xx_rate_increase) {
      return {RolloutVerdict::kRollBack,
              absl::StrCat("4xx rate ", Percent(canary_4xx), " on the canaries against ",
                           Percent(rest_4xx), " on the rest: more than ",
                           absl::StrFormat("%.2f", 100.0 * limits.max_4xx_rate_increase),
                           " percentage points over (a policy refusing callers? an intended "
                           "change: --max-4xx-rate 1)")};
    }
    const double allowed =
        std::max(rest.p99_ms() * limits.max_p99_ratio, rest.p99_ms() + limits.p99_slack_ms);
    if (canary.p99_ms() > allowed) {
      return {RolloutVerdict::kRollBack,
              absl::StrFormat("p99 %.1f ms on the canaries against %.1f ms on the rest: over "
                              "the %.1f ms allowed (%gx, or %g ms more)",
                              canary.p99_ms(), rest.p99_ms(), allowed, limits.max_p99_ratio,
                              limits.p99_slack_ms)};
    }
  }
  if (!window_over) return {};
  if (enough) return {RolloutVerdict::kPromote, "within the thresholds"};
  std::string reason =
      absl::StrCat("not enough traffic: ", canary.requests(), " requests on the canaries and ",
                   rest.requests(), " on the rest, at least ", limits.min_requests, " each needed");
  if (limits.promote_without_traffic) {
    return {RolloutVerdict::kPromote, absl::StrCat(reason, " (--on-no-traffic promote)")};
  }
  return {RolloutVerdict::kRollBack, absl::StrCat(reason, " (--on-no-traffic abort)")};
}

RolloutManager::RolloutManager(ConfigState* state, ProxyRegistry* registry,
                               std::string rollout_path, Clock clock, absl::Duration tick,
                               ControlPlaneMetrics* metrics)
    : state_(state),
      registry_(registry),
      path_(std::move(rollout_path)),
      clock_(std::move(clock)),
      tick_(tick),
      metrics_(metrics) {
  registry_->SetObserver(
      ProxyObserver{[this](const discovery::v1::Node& node,
                           const discovery::v1::TrafficReport& report) { Reported(node, report); },
                    [this](const discovery::v1::Node& node, uint64_t version,
                           const std::string& error) { Nacked(node, version, error); }});
  ticker_ = std::thread([this] {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(&stopping_), tick_);
        if (stopping_) return;
      }
      Tick();
    }
  });
}

RolloutManager::~RolloutManager() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  ticker_.join();
  registry_->SetObserver({});
}

void RolloutManager::Reported(const discovery::v1::Node& node,
                              const discovery::v1::TrafficReport& report) {
  absl::MutexLock lock(&mu_);
  if (!running_ || rollout_.state() != admin::v1::Rollout::VERIFYING) return;
  if (split_.Selects(node.id(), node.group())) {
    if (report.config_version() != rollout_.candidate_version()) return;
    Add(report, rollout_.mutable_canary(), &canary_p99_sum_);
    canary_reporters_.insert(node.id());
    rollout_.mutable_canary()->set_proxies(static_cast<uint32_t>(canary_reporters_.size()));
  } else {
    if (report.config_version() != rollout_.stable_version()) return;
    Add(report, rollout_.mutable_rest(), &rest_p99_sum_);
    rest_reporters_.insert(node.id());
    rollout_.mutable_rest()->set_proxies(static_cast<uint32_t>(rest_reporters_.size()));
  }
}

void RolloutManager::Nacked(const discovery::v1::Node& node, uint64_t version,
                            const std::string& error) {
  absl::MutexLock lock(&mu_);
  if (!running_ || version != rollout_.candidate_version()) return;
  if (!split_.Selects(node.id(), node.group())) return;
  rollout_.mutable_canary()->set_nacks(rollout_.canary().nacks() + 1);
  if (nack_.empty()) nack_ = absl::StrCat(node.id(), ": ", error.substr(0, 512));
}

absl::StatusOr<RolloutManager::Started> RolloutManager::Start(
    const admin::v1::StartRolloutRequest& request, const std::string& author) {
  if (absl::Status shared = state_->CheckCanarySupported(); !shared.ok()) return shared;
  if (request.resources_size() == 0) {
    return absl::InvalidArgumentError("a rollout needs at least one resource");
  }
  const bool by_group = !request.canary_group().empty();
  if (by_group == (request.canary_percent() != 0)) {
    return absl::InvalidArgumentError(
        "give exactly one of canary_group (a node group) and canary_percent (1..99)");
  }
  if (!by_group && request.canary_percent() > 99) {
    return absl::InvalidArgumentError(
        absl::StrCat("canary_percent is ", request.canary_percent(),
                     "; expected 1..99 (a canary needs the rest of the fleet to compare with)"));
  }
  const absl::Duration verify = absl::Milliseconds(request.verify_ms());
  if (verify < kMinVerify || verify > kMaxVerify) {
    return absl::InvalidArgumentError(absl::StrCat("verify_ms is ", request.verify_ms(),
                                                   "; expected ", absl::FormatDuration(kMinVerify),
                                                   "..", absl::FormatDuration(kMaxVerify)));
  }
  absl::StatusOr<RolloutLimits> limits = LimitsFrom(request.thresholds());
  if (!limits.ok()) return limits.status();

  absl::MutexLock decide(&decide_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (running_) {
      return absl::FailedPreconditionError(
          absl::StrCat("canary rollout ", rollout_.id(),
                       " is in progress (sluicectl rollout status); "
                       "promote or abort it first; nothing changed"));
    }
  }
  if (state_->History()->retention() < 2) {
    return absl::FailedPreconditionError(
        "canary rollouts need sluice-control --history 2 or more (a restart mid-rollout "
        "restores the stable version from the history)");
  }
  // The canaries, among the proxies connected now.
  std::vector<admin::v1::ProxyStatus> proxies = registry_->List();
  CanarySplit split;
  admin::v1::Rollout rollout;
  size_t canaries = 0;
  if (by_group) {
    split.group = request.canary_group();
    rollout.set_canary_group(request.canary_group());
    for (const auto& p : proxies) {
      if (p.node().group() != split.group) continue;
      ++canaries;
      rollout.add_canary_nodes(p.node().id());
    }
  } else {
    // The share rounded down, at least one; the first by node id (List's
    // order), so the same proxies each time.
    canaries = std::max<size_t>(1, proxies.size() * request.canary_percent() / 100);
    canaries = std::min(canaries, proxies.size());
    for (size_t i = 0; i < canaries; ++i) {
      split.node_ids.insert(proxies[i].node().id());
      rollout.add_canary_nodes(proxies[i].node().id());
    }
  }
  const std::string selection =
      by_group ? absl::StrCat("node group \"", request.canary_group(), "\"")
               : absl::StrCat(request.canary_percent(), "% of the connected proxies");
  if (canaries == 0) {
    return absl::FailedPreconditionError(absl::StrCat("no connected proxy is in ", selection,
                                                      ": there is no canary; nothing changed"));
  }
  if (canaries >= proxies.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat(selection, " is every connected proxy (", proxies.size(),
                     "): a canary needs the rest of the fleet to compare with; nothing changed"));
  }
  const absl::Time now = clock_();
  rollout.set_state(admin::v1::Rollout::DEPLOYING);
  rollout.set_verify_ms(request.verify_ms());
  *rollout.mutable_thresholds() = ThresholdsOf(*limits);
  *rollout.mutable_started() = ToTimestamp(now);
  rollout.set_author(author);
  rollout.set_message(request.message());

  bool recorded = false;
  auto before_commit = [&](uint64_t stable, uint64_t candidate) -> absl::Status {
    rollout.set_id(RolloutIdFor(candidate));
    rollout.set_stable_version(stable);
    rollout.set_candidate_version(candidate);
    // On disk before the candidate is: a restart always knows the fleet may
    // be split.
    bool replaced = false;
    if (absl::Status status = WriteFileDurably(path_, rollout.SerializeAsString(), &replaced);
        !status.ok() && !replaced) {
      return absl::UnavailableError(absl::StrCat("cannot record the rollout in ", path_,
                                                 ", nothing changed: ", status.message()));
    }
    recorded = true;
    absl::MutexLock lock(&mu_);
    running_ = true;
    have_rollout_ = true;
    rollout_ = rollout;
    split_ = split;
    limits_ = *limits;
    started_ = now;
    verify_ends_ = absl::InfiniteFuture();
    canary_gone_since_.clear();
    canary_connections_.clear();
    canary_reporters_.clear();
    rest_reporters_.clear();
    canary_p99_sum_ = 0;
    rest_p99_sum_ = 0;
    nack_.clear();
    return absl::OkStatus();
  };
  std::string message = request.message().empty() ? std::string("[canary]")
                                                  : absl::StrCat("[canary] ", request.message());
  std::vector<api::Resource> resources(request.resources().begin(), request.resources().end());
  absl::StatusOr<ConfigState::ChangeResult> change = state_->ApplyCanary(
      resources, split, ChangeContext{author, message, request.if_version()}, before_commit);
  if (!change.ok()) {
    if (recorded) {
      absl::MutexLock lock(&mu_);
      running_ = false;
      have_rollout_ = false;
    }
    if (recorded) RemoveFile();
    return change.status();
  }
  SLUICE_LOG(kInfo, "canary rollout ", rollout.id(), ": version ", rollout.candidate_version(),
             " to ", canaries, " of ", proxies.size(), " proxies (", selection, "), version ",
             rollout.stable_version(), " stays on the rest; verify ", absl::FormatDuration(verify));
  // A listener the change adds or alters that no canary serves (its
  // node_groups name none of theirs) is not tried by them: what only its
  // proxies check (binding its port, opening its access log) shows first
  // after promotion. Said, not refused.
  std::set<std::string> canary_groups;
  for (const auto& p : proxies) {
    if (split.Selects(p.node().id(), p.node().group())) canary_groups.insert(p.node().group());
  }
  std::set<api::ResourceId> touched(change->diff.added.begin(), change->diff.added.end());
  touched.insert(change->diff.changed.begin(), change->diff.changed.end());
  std::vector<std::string> untried;
  for (const api::Resource& r : resources) {
    if (!r.has_listener() || touched.count(api::IdOf(r)) == 0) continue;
    bool served = false;
    for (const std::string& group : canary_groups) {
      served = served || api::ListenerPlacedOn(r.listener(), group);
    }
    if (!served) untried.push_back(api::Describe(api::IdOf(r)));
  }
  if (!untried.empty()) {
    absl::StrAppend(&change->warning, change->warning.empty() ? "" : "; ",
                    absl::StrJoin(untried, ", "),
                    untried.size() == 1 ? " changes but is" : " change but are",
                    " served by no canary (node_groups): the canaries cannot try what only its "
                    "proxies check (its port, its access log); sluicectl apply --wait follows the "
                    "fleet after the decision");
  }
  return Started{rollout, *std::move(change)};
}

std::optional<admin::v1::Rollout> RolloutManager::Get(bool* running) const {
  absl::MutexLock lock(&mu_);
  *running = running_;
  if (!have_rollout_) return std::nullopt;
  return rollout_;
}

absl::StatusOr<admin::v1::Rollout> RolloutManager::Decide(bool promote, const std::string& author,
                                                          const std::string& message) {
  absl::MutexLock decide(&decide_mu_);
  std::string id;
  {
    absl::MutexLock lock(&mu_);
    if (!running_) {
      return absl::FailedPreconditionError("no canary rollout is in progress");
    }
    id = rollout_.id();
  }
  return End(id, promote,
             promote ? absl::StrCat("promoted by ", author) : absl::StrCat("aborted by ", author),
             author, message, /*automatic=*/false);
}

void RolloutManager::Tick() {
  // A stopping control plane decides nothing: a restart ends the rollout.
  if (state_->shutting_down()) return;
  absl::MutexLock decide(&decide_mu_);
  if (clock_() < retry_decision_at_) return;
  admin::v1::Rollout rollout;
  CanarySplit split;
  RolloutLimits limits;
  absl::Time started, verify_ends;
  std::string nack;
  {
    absl::MutexLock lock(&mu_);
    if (!running_) return;
    rollout = rollout_;
    split = split_;
    limits = limits_;
    started = started_;
    verify_ends = verify_ends_;
    nack = nack_;
  }
  const absl::Time now = clock_();
  if (rollout.canary().nacks() > 0) {
    (void)End(rollout.id(), false, absl::StrCat("a canary rejected the candidate (", nack, ")"),
              "sluice-control", "", /*automatic=*/true);
    return;
  }
  const std::vector<admin::v1::ProxyStatus> proxies = registry_->List();
  // A proxy of the canary group that joined since the start is a canary too
  // (it is served the candidate): rollout status names it, and it is
  // watched as the others are.
  if (!split.group.empty()) {
    std::vector<std::string> joined;
    for (const auto& p : proxies) {
      if (p.node().group() != split.group) continue;
      if (std::find(rollout.canary_nodes().begin(), rollout.canary_nodes().end(),
                    p.node().id()) == rollout.canary_nodes().end()) {
        joined.push_back(p.node().id());
      }
    }
    if (!joined.empty()) {
      for (const std::string& id : joined) rollout.add_canary_nodes(id);
      absl::MutexLock lock(&mu_);
      if (running_ && rollout_.id() == rollout.id()) {
        for (const std::string& id : joined) rollout_.add_canary_nodes(id);
      }
    }
  }
  // A canary gone (kCanaryGoneLimit) or connected anew (a restart) while
  // the rollout runs, deploying or verifying: a candidate that crashes its
  // proxies, or cuts them off, looks like this, and the figures of those
  // left (or of none) would promote it.
  for (const std::string& id : rollout.canary_nodes()) {
    const admin::v1::ProxyStatus* found = nullptr;
    for (const auto& p : proxies) {
      if (p.node().id() == id) found = &p;
    }
    if (found == nullptr) {
      const absl::Time gone = canary_gone_since_.emplace(id, now).first->second;
      if (now - gone >= kCanaryGoneLimit) {
        (void)End(rollout.id(), false,
                  absl::StrCat("canary ", id, " has been disconnected for ",
                               absl::FormatDuration(absl::Trunc(now - gone, absl::Seconds(1))),
                               " during the rollout (a candidate that crashes its proxies, or "
                               "cuts them off, looks like this)"),
                  "sluice-control", "", /*automatic=*/true);
        return;
      }
      continue;
    }
    canary_gone_since_.erase(id);
    const int64_t since = found->connected_since().seconds() * 1000000000 +
                          found->connected_since().nanos();
    auto [seen, first] = canary_connections_.emplace(id, since);
    if (!first && seen->second != since) {
      (void)End(rollout.id(), false,
                absl::StrCat("canary ", id, " reconnected during the rollout (restarted? a "
                             "candidate that crashes its proxies looks like this)"),
                "sluice-control", "", /*automatic=*/true);
      return;
    }
  }
  if (rollout.state() == admin::v1::Rollout::DEPLOYING) {
    size_t canaries = 0, taken = 0;
    for (const auto& p : proxies) {
      if (!split.Selects(p.node().id(), p.node().group())) continue;
      ++canaries;
      if (p.version_applied() >= rollout.candidate_version()) ++taken;
    }
    if (canaries > 0 && taken == canaries) {
      absl::MutexLock lock(&mu_);
      if (!running_ || rollout_.id() != rollout.id()) return;
      const absl::Duration verify = absl::Milliseconds(rollout.verify_ms());
      rollout_.set_state(admin::v1::Rollout::VERIFYING);
      *rollout_.mutable_verify_started() = ToTimestamp(now);
      *rollout_.mutable_verify_ends() = ToTimestamp(now + verify);
      verify_ends_ = now + verify;
      SLUICE_LOG(kInfo, "canary rollout ", rollout.id(), ": ", canaries, " canaries run version ",
                 rollout.candidate_version(), "; verifying for ", absl::FormatDuration(verify));
      return;
    }
    if (now - started > kCanaryDeployTimeout) {
      (void)End(rollout.id(), false,
                absl::StrCat("the canaries did not take version ", rollout.candidate_version(),
                             " within ", absl::FormatDuration(kCanaryDeployTimeout), " (", taken,
                             " of ", canaries, " connected did)"),
                "sluice-control", "", /*automatic=*/true);
    }
    return;
  }
  RolloutVerdict verdict =
      JudgeRollout(rollout.canary(), rollout.rest(), limits, now >= verify_ends);
  if (verdict.decision == RolloutVerdict::kContinue) return;
  (void)End(rollout.id(), verdict.decision == RolloutVerdict::kPromote, verdict.reason,
            "sluice-control", "", /*automatic=*/true);
}

absl::StatusOr<admin::v1::Rollout> RolloutManager::End(const std::string& id, bool promote,
                                                       const std::string& reason,
                                                       const std::string& author,
                                                       const std::string& message,
                                                       bool automatic) {
  admin::v1::Rollout figures;
  {
    absl::MutexLock lock(&mu_);
    figures = rollout_;
  }
  std::string text =
      absl::StrCat("rollout ", id, promote ? " promoted: " : " rolled back: ", reason,
                   "; canaries: ", DescribeFigures(figures.canary()),
                   "; rest: ", DescribeFigures(figures.rest()));
  if (!message.empty()) absl::StrAppend(&text, " (", message, ")");
  absl::StatusOr<ConfigState::ChangeResult> result =
      state_->EndCanary(id, promote, ChangeContext{author, text});
  if (!result.ok()) {
    SLUICE_LOG(kError, "canary rollout ", id, ": cannot ", promote ? "promote" : "roll back", ": ",
               result.status().message(), " (tried again in 5s)");
    retry_decision_at_ = clock_() + absl::Seconds(5);
    return result.status();
  }
  if (metrics_ != nullptr) metrics_->RecordNewVersion(absl::Now());
  admin::v1::Rollout out;
  {
    absl::MutexLock lock(&mu_);
    running_ = false;
    rollout_.set_state(promote ? admin::v1::Rollout::PROMOTED : admin::v1::Rollout::ROLLED_BACK);
    rollout_.set_decision_version(result->version);
    rollout_.set_reason(reason);
    out = rollout_;
  }
  RemoveFile();
  if (audit_ != nullptr && automatic) {
    // The operators' decisions are recorded by the admin service, with
    // their identity; this one is the control plane's own.
    audit_->Append(AuditRecord{"sluice-control", "", promote ? "PromoteRollout" : "AbortRollout",
                               {absl::StrCat("rollout/", id)}, result->version, false,
                               absl::StrCat("OK: ", reason)});
  }
  if (promote) {
    SLUICE_LOG(kInfo, text, " (version ", result->version, ")");
  } else {
    SLUICE_LOG(kWarning, text, " (version ", result->version, ")");
  }
  return out;
}

void RolloutManager::RemoveFile() {
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT) {
    // A restart finds it, sees the rollout decided (the current version is
    // past its candidate) and removes it then.
    SLUICE_LOG(kWarning, "cannot remove ", path_, ": ", std::strerror(errno));
  }
}

absl::Status RolloutManager::RecoverInterrupted() {
  std::ifstream in(path_, std::ios::binary);
  if (!in) return absl::OkStatus();
  std::stringstream bytes;
  bytes << in.rdbuf();
  admin::v1::Rollout rollout;
  if (!rollout.ParseFromString(bytes.str()) || rollout.candidate_version() == 0) {
    return absl::DataLossError(absl::StrCat(
        path_,
        " is damaged: a canary rollout was in progress but its stable version is "
        "unknown; check the proxies' versions (sluicectl proxies), remove the file and "
        "roll back by hand (sluicectl rollback)"));
  }
  absl::MutexLock decide(&decide_mu_);
  const uint64_t current = state_->Current()->version;
  std::string reason = "aborted: control plane restarted";
  if (current == rollout.candidate_version()) {
    absl::StatusOr<ConfigState::ChangeResult> result =
        state_->Restore(rollout.stable_version(),
                        ChangeContext{"sluice-control",
                                      absl::StrCat("rollout ", rollout.id(), " ", reason,
                                                   " (every proxy back on the content of version ",
                                                   rollout.stable_version(), ")")});
    if (!result.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("canary rollout ", rollout.id(),
                       " was in progress and cannot be ended: ", result.status().message()));
    }
    rollout.set_decision_version(result->version);
    if (metrics_ != nullptr) metrics_->RecordNewVersion(absl::Now());
    if (audit_ != nullptr) {
      audit_->Append(AuditRecord{"sluice-control", "", "AbortRollout",
                                 {absl::StrCat("rollout/", rollout.id())}, result->version, false,
                                 absl::StrCat("OK: ", reason)});
    }
    SLUICE_LOG(kWarning, "canary rollout ", rollout.id(), " ", reason, ": version ",
               result->version, " has version ", rollout.stable_version(), "'s content");
  } else if (current < rollout.candidate_version()) {
    reason = "aborted: control plane restarted before the candidate was stored";
    SLUICE_LOG(kWarning, "canary rollout ", rollout.id(), " ", reason);
  } else {
    // Decided, but the file outlived the decision.
    RemoveFile();
    return absl::OkStatus();
  }
  rollout.set_state(admin::v1::Rollout::ROLLED_BACK);
  rollout.set_reason(reason);
  {
    absl::MutexLock lock(&mu_);
    rollout_ = rollout;
    have_rollout_ = true;
    running_ = false;
  }
  RemoveFile();
  return absl::OkStatus();
}

}  // namespace sluice::controlplane
