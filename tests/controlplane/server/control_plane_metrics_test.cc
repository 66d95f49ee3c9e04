// ControlPlaneMetrics: the text a scrape gets (every family with HELP and
// TYPE, promtool finds nothing to lint), the ACK latency histogram's
// buckets, and the admin service counting each Apply and Delete by how it
// ended.
#include "controlplane/server/control_plane_metrics.h"

#include <gtest/gtest.h>

#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "controlplane/server/admin_service.h"
#include "tests/harness/process.h"

namespace sluice::controlplane {
namespace {

// The value of the sample `series` (exact text before the value), if present.
std::optional<double> Sample(const std::string& text, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, series + " ")) {
      double value = 0;
      if (absl::SimpleAtod(line.substr(series.size() + 1), &value)) return value;
    }
  }
  return std::nullopt;
}

TEST(ControlPlaneMetricsTest, EveryFamilyHasHelpAndTypeAndPassesPromtool) {
  ControlPlaneMetrics metrics;
  metrics.CountApply(ChangeOutcome::kOk);
  metrics.CountPush();
  metrics.CountAck(absl::Milliseconds(30));
  std::string text = metrics.Render({7, 2, true, {{"web-cert", 1900000000}}});
  for (const char* family :
       {"sluice_control_build_info", "sluice_control_config_version",
        "sluice_control_certificate_expiry_timestamp_seconds",
        "sluice_control_last_apply_timestamp_seconds", "sluice_control_applies_total",
        "sluice_control_deletes_total", "sluice_control_connected_proxies",
        "sluice_control_pushes_total", "sluice_control_acks_total", "sluice_control_nacks_total",
        "sluice_control_ack_latency_seconds", "sluice_control_rollout_running"}) {
    EXPECT_TRUE(absl::StrContains(text, absl::StrCat("# HELP ", family, " "))) << family;
    EXPECT_TRUE(absl::StrContains(text, absl::StrCat("# TYPE ", family, " "))) << family;
  }
  EXPECT_EQ(Sample(text, "sluice_control_build_info{version=\"0.1\"}"), 1);
  EXPECT_EQ(Sample(text, "sluice_control_config_version"), 7);
  EXPECT_EQ(Sample(text, "sluice_control_connected_proxies"), 2);
  EXPECT_EQ(Sample(text, "sluice_control_rollout_running"), 1);
  EXPECT_EQ(Sample(metrics.Render({7, 2, false, {}}), "sluice_control_rollout_running"), 0);
  EXPECT_EQ(
      Sample(text, "sluice_control_certificate_expiry_timestamp_seconds{secret=\"web-cert\"}"),
      1900000000);
  EXPECT_EQ(Sample(text, "sluice_control_pushes_total"), 1);

  std::string dir = sluice::testing::MakeTempDir("control-metrics");
  std::string file = sluice::testing::WriteFile(dir, "metrics.txt", text);
  sluice::testing::CommandResult check =
      sluice::testing::RunCommand({"/bin/sh", "-c", "promtool check metrics < " + file});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  // Its lint (counters end in _total, base units, ...) must find nothing.
  EXPECT_EQ(check.out + check.err, "") << text;
}

TEST(ControlPlaneMetricsTest, EveryResultIsThereFromTheStart) {
  ControlPlaneMetrics metrics;
  std::string text = metrics.Render({});
  for (const char* result : {"ok", "unchanged", "dry_run", "invalid", "not_found", "conflict",
                             "too_large", "unavailable", "error"}) {
    EXPECT_EQ(Sample(text, absl::StrCat("sluice_control_applies_total{result=\"", result, "\"}")),
              0)
        << result;
  }
  EXPECT_EQ(Sample(text, "sluice_control_last_apply_timestamp_seconds"), 0);
}

TEST(ControlPlaneMetricsTest, AckLatencyBucketsAreCumulative) {
  ControlPlaneMetrics metrics;
  metrics.CountAck(absl::Microseconds(500));  // le 0.001
  metrics.CountAck(absl::Milliseconds(1));    // le 0.001: bounds are inclusive
  metrics.CountAck(absl::Milliseconds(40));   // le 0.05
  metrics.CountAck(absl::Minutes(2));         // +Inf only
  std::string text = metrics.Render({});
  const std::string bucket = "sluice_control_ack_latency_seconds_bucket";
  EXPECT_EQ(Sample(text, bucket + "{le=\"0.001\"}"), 2);
  EXPECT_EQ(Sample(text, bucket + "{le=\"0.025\"}"), 2);
  EXPECT_EQ(Sample(text, bucket + "{le=\"0.05\"}"), 3);
  EXPECT_EQ(Sample(text, bucket + "{le=\"60\"}"), 3);
  EXPECT_EQ(Sample(text, bucket + "{le=\"+Inf\"}"), 4);
  EXPECT_EQ(Sample(text, "sluice_control_ack_latency_seconds_count"), 4);
  EXPECT_DOUBLE_EQ(*Sample(text, "sluice_control_ack_latency_seconds_sum"), 120.0415);
  EXPECT_EQ(Sample(text, "sluice_control_acks_total"), 4);
}

TEST(ControlPlaneMetricsTest, OutcomeFollowsTheStatusCode) {
  EXPECT_EQ(OutcomeOf(absl::OkStatus(), false, true), ChangeOutcome::kOk);
  EXPECT_EQ(OutcomeOf(absl::OkStatus(), false, false), ChangeOutcome::kUnchanged);
  EXPECT_EQ(OutcomeOf(absl::OkStatus(), true, false), ChangeOutcome::kDryRun);
  EXPECT_EQ(OutcomeOf(absl::InvalidArgumentError(""), false, false), ChangeOutcome::kInvalid);
  EXPECT_EQ(OutcomeOf(absl::NotFoundError(""), false, false), ChangeOutcome::kNotFound);
  EXPECT_EQ(OutcomeOf(absl::FailedPreconditionError(""), false, false), ChangeOutcome::kConflict);
  EXPECT_EQ(OutcomeOf(absl::AbortedError(""), false, false), ChangeOutcome::kConflict);  // --if-version
  EXPECT_EQ(OutcomeOf(absl::ResourceExhaustedError(""), false, false), ChangeOutcome::kTooLarge);
  EXPECT_EQ(OutcomeOf(absl::UnavailableError(""), false, false), ChangeOutcome::kUnavailable);
  EXPECT_EQ(OutcomeOf(absl::InternalError(""), false, false), ChangeOutcome::kError);
}

class AdminServiceCountingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = sluice::testing::MakeTempDir("admin-metrics");
    auto store = FileStore::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    auto state = ConfigState::Create(std::move(*store));
    ASSERT_TRUE(state.ok()) << state.status();
    state_ = std::move(*state);
    rollouts_ = std::make_unique<RolloutManager>(state_.get(), &registry_, dir + "/rollout.db");
    service_ = std::make_unique<AdminServiceImpl>(state_.get(), &registry_, rollouts_.get(),
                                                  &metrics_);
  }

  grpc::Status Apply(const std::string& cluster, int port, bool dry_run = false) {
    admin::v1::ApplyRequest request;
    request.set_dry_run(dry_run);
    auto* c = request.add_resources()->mutable_cluster();
    c->set_name(cluster);
    c->add_endpoints()->set_address("127.0.0.1");
    c->mutable_endpoints(0)->set_port(port);
    admin::v1::ApplyResponse response;
    return service_->Apply(nullptr, &request, &response);
  }
  grpc::Status Delete(config::v1::ResourceKind kind, const std::string& name) {
    admin::v1::DeleteRequest request;
    request.set_kind(kind);
    request.set_name(name);
    admin::v1::DeleteResponse response;
    return service_->Delete(nullptr, &request, &response);
  }
  std::optional<double> Applies(const std::string& result) {
    return Sample(metrics_.Render({}),
                  absl::StrCat("sluice_control_applies_total{result=\"", result, "\"}"));
  }
  std::optional<double> Deletes(const std::string& result) {
    return Sample(metrics_.Render({}),
                  absl::StrCat("sluice_control_deletes_total{result=\"", result, "\"}"));
  }

  ControlPlaneMetrics metrics_;
  ProxyRegistry registry_;
  std::unique_ptr<ConfigState> state_;
  std::unique_ptr<RolloutManager> rollouts_;
  std::unique_ptr<AdminServiceImpl> service_;
};

TEST_F(AdminServiceCountingTest, AppliesAndDeletesAreCountedByHowTheyEnded) {
  const absl::Time before = absl::Now();
  ASSERT_TRUE(Apply("users", 9000).ok());
  ASSERT_TRUE(Apply("users", 9000).ok());  // the same again
  ASSERT_TRUE(Apply("users", 9001, /*dry_run=*/true).ok());
  ASSERT_FALSE(Apply("users", 0).ok());  // port 0 is invalid
  admin::v1::ApplyRequest empty;
  admin::v1::ApplyResponse ignored;
  ASSERT_FALSE(service_->Apply(nullptr, &empty, &ignored).ok());
  EXPECT_EQ(Applies("ok"), 1);
  EXPECT_EQ(Applies("unchanged"), 1);
  EXPECT_EQ(Applies("dry_run"), 1);
  EXPECT_EQ(Applies("invalid"), 2);

  std::optional<double> last =
      Sample(metrics_.Render({}), "sluice_control_last_apply_timestamp_seconds");
  ASSERT_TRUE(last.has_value());
  EXPECT_GE(*last, absl::ToUnixMicros(before) / 1e6 - 0.001);
  EXPECT_LE(*last, absl::ToUnixMicros(absl::Now()) / 1e6 + 0.001);

  EXPECT_FALSE(Delete(config::v1::CLUSTER, "nobody").ok());
  EXPECT_FALSE(Delete(config::v1::RESOURCE_KIND_UNSPECIFIED, "users").ok());
  EXPECT_TRUE(Delete(config::v1::CLUSTER, "users").ok());
  EXPECT_EQ(Deletes("not_found"), 1);
  EXPECT_EQ(Deletes("invalid"), 1);
  EXPECT_EQ(Deletes("ok"), 1);
  EXPECT_EQ(Applies("ok"), 1);  // deletes are not applies
}

}  // namespace
}  // namespace sluice::controlplane
