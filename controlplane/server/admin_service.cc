#include "controlplane/server/admin_service.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace sluice::controlplane {
namespace {

void FillKeys(const std::vector<api::ResourceId>& ids,
              const std::map<api::ResourceId, uint64_t>& hashes,
              google::protobuf::RepeatedPtrField<config::v1::ResourceKey>* out) {
  for (const auto& id : ids) {
    auto* key = out->Add();
    key->set_kind(id.first);
    key->set_name(id.second);
    if (auto it = hashes.find(id); it != hashes.end()) key->set_hash(it->second);
  }
}

void FillDiff(const api::StateDiff& diff, admin::v1::Diff* out) {
  static const std::map<api::ResourceId, uint64_t> kNoHashes;
  FillKeys(diff.added, kNoHashes, out->mutable_added());
  FillKeys(diff.changed, kNoHashes, out->mutable_changed());
  FillKeys(diff.removed, kNoHashes, out->mutable_removed());
  out->set_unchanged(diff.unchanged);
}

std::vector<api::ResourceId> IdsOf(const std::vector<api::Resource>& resources) {
  std::vector<api::ResourceId> ids;
  for (const auto& r : resources) ids.push_back(api::IdOf(r));
  return ids;
}

absl::Status CheckKindAndName(config::v1::ResourceKind kind, const std::string& name) {
  if (kind == config::v1::RESOURCE_KIND_UNSPECIFIED ||
      !config::v1::ResourceKind_IsValid(kind)) {
    return absl::InvalidArgumentError(
        "kind is required (LISTENER, ROUTE_TABLE, CLUSTER, SECRET or CONSUMER)");
  }
  if (name.empty()) return absl::InvalidArgumentError("name is required");
  return absl::OkStatus();
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

void AdminServiceImpl::Count(bool is_delete,
                             const absl::StatusOr<ConfigState::ChangeResult>& result,
                             bool dry_run) {
  if (metrics_ == nullptr) return;
  // A change that alters something always makes a new version (ConfigState).
  const bool changed = result.ok() && !dry_run && !result->diff.empty();
  ChangeOutcome outcome = OutcomeOf(result.status(), dry_run, changed);
  if (is_delete) {
    metrics_->CountDelete(outcome);
  } else {
    metrics_->CountApply(outcome);
  }
  if (changed) metrics_->RecordNewVersion(absl::Now());
}

grpc::Status AdminServiceImpl::Apply(grpc::ServerContext*,
                                     const admin::v1::ApplyRequest* request,
                                     admin::v1::ApplyResponse* response) {
  if (request->resources_size() == 0) {
    absl::Status empty = absl::InvalidArgumentError("apply needs at least one resource");
    Count(/*is_delete=*/false, empty, request->dry_run());
    return ToGrpcStatus(empty);
  }
  std::vector<api::Resource> resources(request->resources().begin(),
                                       request->resources().end());
  auto result = state_->Apply(
      resources, request->dry_run(),
      ChangeContext{request->author(), request->message(), request->if_version()});
  Count(/*is_delete=*/false, result, request->dry_run());
  if (!result.ok()) return ToGrpcStatus(result.status());
  response->set_version(result->version);
  response->set_dry_run(request->dry_run());
  response->set_warning(result->warning);
  FillDiff(result->diff, response->mutable_diff());
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::Get(grpc::ServerContext*,
                                   const admin::v1::GetRequest* request,
                                   admin::v1::GetResponse* response) {
  if (absl::Status s = CheckKindAndName(request->kind(), request->name()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  auto snapshot = state_->Current();
  api::ResourceId id{request->kind(), request->name()};
  auto it = snapshot->resources.find(id);
  if (it == snapshot->resources.end()) {
    return ToGrpcStatus(absl::NotFoundError(absl::StrCat(api::Describe(id), " does not exist")));
  }
  *response->mutable_resource() = it->second;
  // Private keys go in (Apply) and out to proxies, never back to people.
  // (Consumers' credentials are stored as hashes; a plain one is redacted.)
  api::RedactSecrets(response->mutable_resource());
  response->set_version(snapshot->version);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::List(grpc::ServerContext*,
                                    const admin::v1::ListRequest* request,
                                    admin::v1::ListResponse* response) {
  auto snapshot = state_->Current();
  for (const auto& [id, resource] : snapshot->resources) {
    if (request->kind() == config::v1::RESOURCE_KIND_UNSPECIFIED ||
        request->kind() == id.first) {
      api::Resource* out = response->add_resources();
      *out = resource;
      api::RedactSecrets(out);
    }
  }
  response->set_version(snapshot->version);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::Delete(grpc::ServerContext*,
                                      const admin::v1::DeleteRequest* request,
                                      admin::v1::DeleteResponse* response) {
  if (absl::Status s = CheckKindAndName(request->kind(), request->name()); !s.ok()) {
    Count(/*is_delete=*/true, s, request->dry_run());
    return ToGrpcStatus(s);
  }
  auto result = state_->Delete(
      {request->kind(), request->name()}, request->dry_run(),
      ChangeContext{request->author(), request->message(), request->if_version()});
  Count(/*is_delete=*/true, result, request->dry_run());
  if (!result.ok()) return ToGrpcStatus(result.status());
  response->set_version(result->version);
  response->set_dry_run(request->dry_run());
  response->set_warning(result->warning);
  FillDiff(result->diff, response->mutable_diff());
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::ListProxies(grpc::ServerContext*,
                                           const admin::v1::ListProxiesRequest*,
                                           admin::v1::ListProxiesResponse* response) {
  for (auto& status : registry_->List()) *response->add_proxies() = std::move(status);
  response->set_current_version(state_->Current()->version);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::History(grpc::ServerContext*,
                                       const admin::v1::HistoryRequest* request,
                                       admin::v1::HistoryResponse* response) {
  auto history = state_->History();
  const auto& entries = history->stored().entries;
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (request->limit() != 0 &&
        response->entries_size() >= static_cast<int>(request->limit())) {
      break;
    }
    admin::v1::HistoryEntry* out = response->add_entries();
    out->set_version(it->version);
    if (it->time != absl::InfinitePast()) {
      const int64_t micros = absl::ToUnixMicros(it->time);
      out->mutable_time()->set_seconds(micros / 1000000);
      out->mutable_time()->set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
    }
    out->set_author(it->author);
    out->set_message(it->message);
    api::StateDiff diff;
    diff.added = IdsOf(it->added);
    diff.changed = IdsOf(it->changed);
    diff.removed = it->removed;
    diff.unchanged = static_cast<int>(it->unchanged);
    FillDiff(diff, out->mutable_diff());
  }
  response->set_current_version(state_->Current()->version);
  response->set_retention(static_cast<uint32_t>(history->retention()));
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::GetVersion(grpc::ServerContext*,
                                          const admin::v1::GetVersionRequest* request,
                                          admin::v1::GetVersionResponse* response) {
  auto history = state_->History();
  uint64_t version = request->version();
  api::ResourceMap content;
  if (version == 0) {
    auto snapshot = state_->Current();
    version = snapshot->version;
    content = snapshot->resources;
  } else {
    absl::StatusOr<api::ResourceMap> kept = history->ContentAt(version);
    if (!kept.ok()) return ToGrpcStatus(absl::NotFoundError(kept.status().message()));
    content = std::move(*kept);
  }
  response->set_version(version);
  for (auto& [id, resource] : content) {
    api::Resource* out = response->add_resources();
    *out = std::move(resource);
    api::RedactSecrets(out);
  }
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::Rollback(grpc::ServerContext*,
                                        const admin::v1::RollbackRequest* request,
                                        admin::v1::RollbackResponse* response) {
  if (request->version() == 0) {
    return ToGrpcStatus(absl::InvalidArgumentError("version is required"));
  }
  auto result = state_->Rollback(
      request->version(), request->dry_run(),
      ChangeContext{request->author(), request->message(), request->if_version()});
  if (!result.ok()) return ToGrpcStatus(result.status());
  if (metrics_ != nullptr && !request->dry_run() && !result->diff.empty()) {
    metrics_->RecordNewVersion(absl::Now());
  }
  response->set_version(result->version);
  response->set_dry_run(request->dry_run());
  response->set_warning(result->warning);
  FillDiff(result->diff, response->mutable_diff());
  return grpc::Status::OK;
}

}  // namespace sluice::controlplane
