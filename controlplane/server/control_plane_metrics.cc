#include "controlplane/server/control_plane_metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace sluice::controlplane {
namespace {

void Family(std::string* out, const char* name, const char* type, const char* help) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

// Seconds with microsecond precision, as Prometheus parses them.
std::string Seconds(uint64_t micros) {
  return absl::StrFormat("%d.%06d", micros / 1000000, micros % 1000000);
}

void RenderByResult(std::string* out, const char* name,
                    const std::atomic<uint64_t> (&counts)[kChangeOutcomes]) {
  for (int i = 0; i < kChangeOutcomes; ++i) {
    absl::StrAppend(out, name, "{result=\"", ChangeOutcomeName(static_cast<ChangeOutcome>(i)),
                    "\"} ", counts[i].load(std::memory_order_relaxed), "\n");
  }
}

}  // namespace

const char* ChangeOutcomeName(ChangeOutcome outcome) {
  switch (outcome) {
    case ChangeOutcome::kOk:
      return "ok";
    case ChangeOutcome::kUnchanged:
      return "unchanged";
    case ChangeOutcome::kDryRun:
      return "dry_run";
    case ChangeOutcome::kInvalid:
      return "invalid";
    case ChangeOutcome::kNotFound:
      return "not_found";
    case ChangeOutcome::kConflict:
      return "conflict";
    case ChangeOutcome::kTooLarge:
      return "too_large";
    case ChangeOutcome::kUnavailable:
      return "unavailable";
    case ChangeOutcome::kError:
      return "error";
  }
  return "error";
}

ChangeOutcome OutcomeOf(const absl::Status& status, bool dry_run, bool changed) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      if (dry_run) return ChangeOutcome::kDryRun;
      return changed ? ChangeOutcome::kOk : ChangeOutcome::kUnchanged;
    case absl::StatusCode::kInvalidArgument:
      return ChangeOutcome::kInvalid;
    case absl::StatusCode::kNotFound:
      return ChangeOutcome::kNotFound;
    case absl::StatusCode::kFailedPrecondition:  // refused by what is stored
    case absl::StatusCode::kAborted:             // --if-version: the config moved on
      return ChangeOutcome::kConflict;
    case absl::StatusCode::kResourceExhausted:
      return ChangeOutcome::kTooLarge;
    case absl::StatusCode::kUnavailable:
      return ChangeOutcome::kUnavailable;
    default:
      return ChangeOutcome::kError;
  }
}

void DurationHistogram::Observe(absl::Duration duration) {
  int64_t micros = absl::ToInt64Microseconds(duration);
  if (micros < 0) micros = 0;
  int b = 0;
  while (b < kFinite && micros > kBoundsMicros[b]) ++b;
  buckets_[b].fetch_add(1, std::memory_order_relaxed);
  sum_micros_.fetch_add(static_cast<uint64_t>(micros), std::memory_order_relaxed);
}

DurationHistogram::Totals DurationHistogram::Sum() const {
  Totals totals;
  for (int b = 0; b <= kFinite; ++b) {
    totals.buckets[b] = buckets_[b].load(std::memory_order_relaxed);
    totals.count += totals.buckets[b];
  }
  totals.sum_micros = sum_micros_.load(std::memory_order_relaxed);
  return totals;
}

void ControlPlaneMetrics::RecordNewVersion(absl::Time when) {
  last_change_micros_.store(absl::ToUnixMicros(when), std::memory_order_relaxed);
}

void ControlPlaneMetrics::CountAck(absl::Duration since_push) {
  Bump(acks_);
  ack_latency_.Observe(since_push);
}

std::string ControlPlaneMetrics::Render(const ScrapeState& state) const {
  std::string out;
  Family(&out, "sluice_control_build_info", "gauge",
         "Always 1; the version label is sluice-control's version.");
  absl::StrAppend(&out, "sluice_control_build_info{version=\"", kControlPlaneVersion, "\"} 1\n");

  Family(&out, "sluice_control_config_version", "gauge",
         "The version of the declared state that proxies are sent (0: nothing applied yet).");
  absl::StrAppend(&out, "sluice_control_config_version ", state.config_version, "\n");

  Family(&out, "sluice_control_last_apply_timestamp_seconds", "gauge",
         "Unix time of the last apply or delete that made a new version since this process "
         "started (0: none yet).");
  int64_t last = last_change_micros_.load(std::memory_order_relaxed);
  absl::StrAppend(&out, "sluice_control_last_apply_timestamp_seconds ",
                  Seconds(last < 0 ? 0 : static_cast<uint64_t>(last)), "\n");

  Family(&out, "sluice_control_applies_total", "counter",
         "Apply requests, by how they ended (ok: a new version; unchanged; dry_run; invalid; "
         "not_found; conflict; too_large; unavailable; error).");
  RenderByResult(&out, "sluice_control_applies_total", applies_);

  Family(&out, "sluice_control_deletes_total", "counter",
         "Delete requests, by how they ended (the results of sluice_control_applies_total; "
         "conflict: other resources refer to it).");
  RenderByResult(&out, "sluice_control_deletes_total", deletes_);

  Family(&out, "sluice_control_admin_refusals_total", "counter",
         "Admin API calls refused for their token: code unauthenticated (none, unknown, "
         "revoked) or permission_denied (a role too low). Counted whether or not the audit "
         "log wrote the line (it writes at most 10 refusals a second).");
  absl::StrAppend(&out, "sluice_control_admin_refusals_total{code=\"unauthenticated\"} ",
                  admin_refusals_[0].load(std::memory_order_relaxed), "\n",
                  "sluice_control_admin_refusals_total{code=\"permission_denied\"} ",
                  admin_refusals_[1].load(std::memory_order_relaxed), "\n");
  Family(&out, "sluice_control_stream_refusals_total", "counter",
         "Config streams refused for their client certificate (none, naming no node, or "
         "another node than the stream's node.id).");
  absl::StrAppend(&out, "sluice_control_stream_refusals_total ",
                  stream_refusals_.load(std::memory_order_relaxed), "\n");

  Family(&out, "sluice_control_rollout_running", "gauge",
         "1 while a canary rollout (sluicectl apply --canary) runs: its canaries and the rest "
         "run different config versions on purpose.");
  absl::StrAppend(&out, "sluice_control_rollout_running ", state.rollout_running ? 1 : 0, "\n");
  Family(&out, "sluice_control_connected_proxies", "gauge",
         "Proxies whose config stream is established now.");
  absl::StrAppend(&out, "sluice_control_connected_proxies ", state.connected_proxies, "\n");

  Family(&out, "sluice_control_certificate_expiry_timestamp_seconds", "gauge",
         "Unix time the leaf certificate of each tls_certificate Secret expires (alert on "
         "this minus time() below a few days).");
  // (Resource names are letters, digits, '-', '_' and '.': nothing to escape.)
  for (const auto& [secret, not_after] : state.certificate_expiry) {
    absl::StrAppend(&out, "sluice_control_certificate_expiry_timestamp_seconds{secret=\"",
                    secret, "\"} ", not_after, "\n");
  }

  Family(&out, "sluice_control_pushes_total", "counter",
         "Config responses written to proxies' streams.");
  absl::StrAppend(&out, "sluice_control_pushes_total ", pushes_.load(std::memory_order_relaxed),
                  "\n");
  Family(&out, "sluice_control_acks_total", "counter", "Config responses proxies applied (ACK).");
  absl::StrAppend(&out, "sluice_control_acks_total ", acks_.load(std::memory_order_relaxed), "\n");
  Family(&out, "sluice_control_nacks_total", "counter",
         "Config responses proxies rejected (NACK); sluicectl proxies shows the reason.");
  absl::StrAppend(&out, "sluice_control_nacks_total ", nacks_.load(std::memory_order_relaxed),
                  "\n");

  Family(&out, "sluice_control_ack_latency_seconds", "histogram",
         "Time from writing a config response to a proxy to its ACK: transfer and apply.");
  DurationHistogram::Totals totals = ack_latency_.Sum();
  uint64_t cumulative = 0;
  for (int b = 0; b < DurationHistogram::kFinite; ++b) {
    cumulative += totals.buckets[b];
    absl::StrAppend(&out, "sluice_control_ack_latency_seconds_bucket{le=\"",
                    absl::StrFormat("%g", DurationHistogram::kBoundsMicros[b] / 1e6), "\"} ",
                    cumulative, "\n");
  }
  absl::StrAppend(&out, "sluice_control_ack_latency_seconds_bucket{le=\"+Inf\"} ", totals.count,
                  "\n", "sluice_control_ack_latency_seconds_sum ", Seconds(totals.sum_micros), "\n",
                  "sluice_control_ack_latency_seconds_count ", totals.count, "\n");
  return out;
}

}  // namespace sluice::controlplane
