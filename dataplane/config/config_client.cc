#include "dataplane/config/config_client.h"

#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace sluice::config {

ConfigClient::ConfigClient(std::string control_plane, discovery::v1::Node node,
                           uint64_t held_version, api::ResourceMap held, ApplyFn apply,
                           PersistFn persist)
    : control_plane_(std::move(control_plane)),
      node_(std::move(node)),
      apply_(std::move(apply)),
      persist_(std::move(persist)),
      held_version_(held_version),
      held_(std::move(held)) {}

ConfigClient::~ConfigClient() { Stop(); }

void ConfigClient::Start() {
  thread_ = std::thread([this] { Run(); });
}

void ConfigClient::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (context_) context_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

void ConfigClient::Run() {
  std::mt19937_64 rng(std::random_device{}());
  absl::Duration backoff = absl::Milliseconds(250);
  while (true) {
    absl::Time started = absl::Now();
    RunStream();
    connected_.store(false);
    // A stream that lived a while was healthy: start the backoff over.
    if (absl::Now() - started > absl::Seconds(5)) backoff = absl::Milliseconds(250);
    // Full jitter in [backoff/2, backoff].
    absl::Duration wait = backoff / 2 + absl::Nanoseconds(rng() % static_cast<uint64_t>(
                                                              absl::ToInt64Nanoseconds(backoff / 2) + 1));
    backoff = std::min(backoff * 2, absl::Seconds(10));
    absl::MutexLock lock(&mu_);
    auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
    mu_.AwaitWithTimeout(absl::Condition(&stopping), wait);
    if (stopping_) return;
  }
}

void ConfigClient::RunStream() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  auto channel =
      grpc::CreateCustomChannel(control_plane_, grpc::InsecureChannelCredentials(), args);
  auto stub = discovery::v1::DiscoveryService::NewStub(channel);
  grpc::ClientContext context;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    context_ = &context;
  }
  auto stream = stub->StreamConfig(&context);
  discovery::v1::DiscoveryRequest hello;
  *hello.mutable_node() = node_;
  hello.set_version_applied(held_version_);
  for (const auto& [id, resource] : held_) *hello.add_known_resources() = api::KeyOf(resource);
  bool ok = stream->Write(hello);
  discovery::v1::DiscoveryResponse response;
  while (ok && stream->Read(&response)) {
    if (!connected_.exchange(true)) {
      SLUICE_LOG(kInfo, "connected to control plane ", control_plane_);
    }
    absl::Time received = absl::Now();
    // Change what we hold in place (no copy of a large config), keeping what
    // is replaced so that a NACK can put it back.
    std::set<api::ResourceId> changed;
    std::vector<std::pair<api::ResourceId, std::optional<api::Resource>>> undo;
    for (const auto& key : response.removed()) {
      auto it = held_.find({key.kind(), key.name()});
      if (it == held_.end()) continue;
      undo.emplace_back(it->first, std::move(it->second));
      held_.erase(it);
    }
    for (const auto& resource : response.resources()) {
      api::ResourceId id = api::IdOf(resource);
      changed.insert(id);
      auto it = held_.find(id);
      if (it != held_.end()) {
        undo.emplace_back(id, std::move(it->second));
        it->second = resource;
      } else {
        undo.emplace_back(id, std::nullopt);
        held_.emplace(id, resource);
      }
    }
    absl::Status status = apply_(response.version(), held_, changed);
    discovery::v1::DiscoveryRequest answer;
    answer.set_response_nonce(response.nonce());
    if (status.ok()) {
      held_version_ = response.version();
      answer.set_version_applied(held_version_);
      SLUICE_LOG(kInfo, "applied config version ", held_version_, " (", changed.size(),
                 " resources changed, ", response.removed_size(), " removed) in ",
                 absl::FormatDuration(absl::Now() - received));
    } else {
      for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
        if (it->second) {
          held_[it->first] = std::move(*it->second);
        } else {
          held_.erase(it->first);
        }
      }
      answer.set_version_applied(held_version_);
      answer.set_error_detail(std::string(status.message()));
      SLUICE_LOG(kWarning, "rejected config version ", response.version(), ": ",
                 status.message());
    }
    ok = stream->Write(answer);
    if (status.ok() && persist_) persist_(held_version_, held_);
  }
  grpc::Status status = stream->Finish();
  {
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
    if (stopping_) return;
  }
  SLUICE_LOG(kWarning, "control plane ", control_plane_, " unreachable (",
             status.error_message(), "); serving version ", held_version_, ", retrying");
}

}  // namespace sluice::config
