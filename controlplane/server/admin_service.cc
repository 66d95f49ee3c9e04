#include "controlplane/server/admin_service.h"

#include <malloc.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "api/credentials.h"
#include "api/resource.h"
#include "api/validation.h"
#include "google/protobuf/util/time_util.h"

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

template <typename Resources>
std::vector<api::ResourceId> IdsOf(const Resources& resources) {
  std::vector<api::ResourceId> ids;
  for (const auto& r : resources) ids.push_back(api::IdOf(r));
  return ids;
}

constexpr char kKinds[] = "LISTENER, ROUTE_TABLE, CLUSTER, SECRET or CONSUMER";

// A kind this build does not know (a newer client's): refused, not taken
// for "none of that kind".
absl::Status CheckKnownKind(config::v1::ResourceKind kind) {
  if (config::v1::ResourceKind_IsValid(kind)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("unknown kind ", static_cast<int>(kind),
                                                 " (this control plane knows ", kKinds, ")"));
}

absl::Status CheckKindAndName(config::v1::ResourceKind kind, const std::string& name) {
  if (absl::Status known = CheckKnownKind(kind); !known.ok()) return known;
  if (kind == config::v1::RESOURCE_KIND_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat("kind is required (", kKinds, ")"));
  }
  if (name.empty()) return absl::InvalidArgumentError("name is required");
  return absl::OkStatus();
}

std::vector<std::string> Names(const std::vector<api::ResourceId>& ids) {
  std::vector<std::string> names;
  for (const auto& id : ids) {
    names.push_back(absl::StrCat(api::KindName(id.first), "/", id.second));
  }
  return names;
}

std::string ResultText(const absl::Status& status) {
  if (status.ok()) return "OK";
  return absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message());
}

// The history's author: the token's name when the caller has one.
std::string AuthorOf(const AdminCaller& caller, const std::string& claimed) {
  return caller.authenticated ? caller.identity : claimed;
}

// The audit log's "resources" of a purge: its selector and group, each
// field that is set ("cache/*" when none is: the whole cache everywhere).
std::vector<std::string> PurgeTargets(
    const admin::v1::PurgeCacheRequest& request) {
  std::vector<std::string> targets;
  auto add = [&](const char* field, const std::string& value) {
    if (!value.empty())
      targets.push_back(absl::StrCat("cache/", field, "=", value));
  };
  add("route", request.route());
  add("host", request.host());
  add("path", request.path());
  add("prefix", request.prefix());
  if (targets.empty()) targets.push_back("cache/*");
  if (!request.group().empty())
    targets.push_back(absl::StrCat("group/", request.group()));
  return targets;
}

}  // namespace

// Whether a RouteTable of `snapshot` has a route named `name`: its name, or
// "<virtual host name or index>/<route index>" when it has none (the name
// the proxies key cache entries and metrics by).
bool HasRouteNamed(const Snapshot& snapshot, const std::string& name) {
  for (const auto& [id, resource] : snapshot.resources) {
    if (!resource.has_route_table()) continue;
    const auto& table = resource.route_table();
    for (int v = 0; v < table.virtual_hosts_size(); ++v) {
      const auto& vhost = table.virtual_hosts(v);
      const std::string label = api::VirtualHostLabel(vhost, v);
      for (int r = 0; r < vhost.routes_size(); ++r) {
        if (api::RouteName(vhost.routes(r), label, r) == name) return true;
      }
    }
  }
  return false;
}

absl::Status CheckPurgeRequest(const admin::v1::PurgeCacheRequest& request) {
  const std::pair<const char*, const std::string*> fields[] = {
      {"route", &request.route()},
      {"host", &request.host()},
      {"path", &request.path()},
      {"prefix", &request.prefix()},
      {"group", &request.group()}};
  for (const auto& [name, value] : fields) {
    if (value->size() > kMaxPurgeFieldBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " is ", value->size(), " bytes; at most ",
                       kMaxPurgeFieldBytes, " are accepted"));
    }
  }
  if (!request.path().empty() && !request.prefix().empty()) {
    return absl::InvalidArgumentError(
        "path and prefix are exclusive: path purges one key, prefix every path "
        "under it; "
        "give one of them");
  }
  if (!request.path().empty() && request.path()[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("path \"", request.path(), "\" must start with '/'"));
  }
  if (!request.prefix().empty() && request.prefix()[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("prefix \"", request.prefix(), "\" must start with '/'"));
  }
  if (absl::Milliseconds(request.timeout_ms()) > kMaxPurgeTimeout) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout_ms is ", request.timeout_ms(), "; at most ",
                     absl::ToInt64Milliseconds(kMaxPurgeTimeout), " (",
                     absl::FormatDuration(kMaxPurgeTimeout), ") is accepted"));
  }
  return absl::OkStatus();
}

absl::StatusOr<AdminCaller> AdminServiceImpl::Authorize(grpc::ServerContextBase* context,
                                                        Role needed, const char* method) {
  AdminCaller caller{"anonymous", context ? context->peer() : "in-process", false};
  if (!TokensRequired()) return caller;
  std::string header;
  size_t headers = 0;
  if (context != nullptr) {
    const auto& metadata = context->client_metadata();
    headers = metadata.count("authorization");
    if (auto it = metadata.find("authorization"); it != metadata.end()) {
      header.assign(it->second.data(), it->second.size());
    }
  }
  return CheckToken(std::move(caller), headers, header, needed, method);
}

bool AdminServiceImpl::TokensRequired() const {
  return access_.require_tokens || (access_.tokens != nullptr && access_.tokens->HasStored());
}

namespace {

// The role each admin method's handler asks for (Authorize), known from the
// method's name before its request is read: a viewer's 60 MiB Apply is
// refused unread, as a call without a token is.
Role RoleNeeded(std::string_view method) {
  for (std::string_view admin : {"CreateToken", "ListTokens", "RevokeToken"}) {
    if (method == admin) return Role::kAdmin;
  }
  for (std::string_view op : {"Apply", "Delete", "Rollback", "PurgeCache", "StartRollout",
                              "PromoteRollout", "AbortRollout"}) {
    if (method == op) return Role::kOperator;
  }
  return Role::kViewer;
}

}  // namespace

absl::Status AdminServiceImpl::AuthenticateEarly(size_t headers, std::string_view header,
                                                 const std::string& method) {
  if (!TokensRequired()) return absl::OkStatus();
  // The peer's address is not known here (gRPC gives the call's metadata
  // and the connection's certificate, not its address).
  AdminCaller caller{"anonymous", "(refused before its request was read)", false};
  return CheckToken(std::move(caller), headers, std::string(header), RoleNeeded(method),
                    method.c_str())
      .status();
}

absl::StatusOr<AdminCaller> AdminServiceImpl::CheckToken(AdminCaller caller, size_t headers,
                                                         const std::string& header, Role needed,
                                                         const char* method) {
  absl::Status refused;
  std::optional<TokenIdentity> identity;
  if (headers > 1) {
    // Which one a proxy in front checked is its own choice: neither counts.
    refused = absl::UnauthenticatedError(
        "more than one 'authorization' metadata entry; send one token");
  } else if (header.empty()) {
    refused = absl::UnauthenticatedError(
        "sluice-control requires a token and none was sent (metadata "
        "'authorization: Bearer TOKEN')");
  } else if (const std::optional<std::string_view> token = api::BearerToken(header);
             !token || access_.tokens == nullptr ||
             !(identity = access_.tokens->Verify(std::string(*token)))) {
    refused = absl::UnauthenticatedError("the token is not valid (unknown or revoked)");
  } else if (identity->role < needed) {
    caller.identity = identity->name;
    refused = absl::PermissionDeniedError(
        absl::StrCat(method, " needs the ", RoleName(needed), " role; your token '",
                     identity->name, "' is ", identity->role == Role::kViewer ? "a " : "an ",
                     RoleName(identity->role)));
  }
  if (!refused.ok()) {
    if (metrics_ != nullptr) {
      metrics_->CountAdminRefusal(refused.code() == absl::StatusCode::kUnauthenticated);
    }
    uint64_t unwritten = 0;
    bool write = false;
    {
      absl::MutexLock lock(&refusal_mu_);
      const absl::Time now = absl::Now();
      if (refusal_refill_ != absl::InfinitePast()) {
        // Clamped: a wall clock stepped back gives no credit, takes none.
        refusal_credit_ = std::min(
            kRefusalBurst,
            refusal_credit_ + std::max(0.0, absl::ToDoubleSeconds(now - refusal_refill_)) *
                                  kRefusalsPerSecond);
      }
      refusal_refill_ = now;
      if (refusal_credit_ >= 1) {
        refusal_credit_ -= 1;
        write = true;
        unwritten = std::exchange(refusals_unwritten_, 0);
      } else {
        ++refusals_unwritten_;
      }
    }
    if (write) {
      Audit(caller, method, {}, 0, false,
            unwritten == 0
                ? refused
                : absl::Status(refused.code(),
                               absl::StrCat(refused.message(), " (and ", unwritten,
                                            " more refused calls not written since the last "
                                            "line: at most 10 a second)")));
    }
    return refused;
  }
  caller.identity = identity->name;
  caller.authenticated = true;
  return caller;
}

void AdminServiceImpl::Audit(const AdminCaller& caller, const char* method,
                             std::vector<std::string> resources, uint64_t version,
                             bool dry_run, const absl::Status& result) {
  if (access_.audit == nullptr) return;
  access_.audit->Append(AuditRecord{caller.identity, caller.peer, method, std::move(resources),
                                    version, dry_run, ResultText(result)});
}

namespace {

// AdminTokenGate: sluice-control's TLS credentials run it on each call's
// metadata, before gRPC reads the request message.
class AdminTokenGate final : public grpc::AuthMetadataProcessor {
 public:
  explicit AdminTokenGate(AdminServiceImpl* admin) : admin_(admin) {}
  bool IsBlocking() const override { return false; }  // a digest compare
  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext*, OutputMetadata*,
                       OutputMetadata*) override {
    static constexpr absl::string_view kPrefix = "/sluice.admin.v1.AdminService/";
    auto path = metadata.find(":path");
    if (path == metadata.end()) return grpc::Status::OK;
    const absl::string_view p(path->second.data(), path->second.size());
    // The discovery service (proxies) has its own rules.
    if (!absl::StartsWith(p, kPrefix)) return grpc::Status::OK;
    std::string header;
    if (auto it = metadata.find("authorization"); it != metadata.end()) {
      header.assign(it->second.data(), it->second.size());
    }
    // The method as the audit log names it (the path is the client's text).
    const std::string method = api::Shown(p.substr(kPrefix.size()), 64);
    return ToGrpcStatus(admin_->AuthenticateEarly(metadata.count("authorization"), header, method));
  }

 private:
  AdminServiceImpl* admin_;
};

}  // namespace

std::shared_ptr<grpc::AuthMetadataProcessor> MakeAdminTokenGate(AdminServiceImpl* admin) {
  return std::make_shared<AdminTokenGate>(admin);
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

namespace {

// A request that changes something with a field this build does not know
// (a newer sluicectl's option) is refused: ignored, the change would be
// made without what the option asked.
absl::Status CheckKnownFields(const google::protobuf::Message& request) {
  // Nested messages too (a DeleteRequest's `more` keys), but not the
  // resources an apply carries: ValidateNewContent names what is wrong in
  // them, with the path in the resource.
  std::string path;
  int number = 0;
  const google::protobuf::Descriptor* owner = nullptr;
  if (!api::FindUnknownField(request, request.GetDescriptor()->name(), &path, &number, &owner,
                             api::Resource::descriptor())) {
    return absl::OkStatus();
  }
  // A known number lands among the unknown fields when it came with
  // another wire type than its field's.
  if (const google::protobuf::FieldDescriptor* known = owner->FindFieldByNumber(number)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " field ", number, " (", known->name(), ") came with the wrong wire type (it is a ",
        known->is_repeated() ? "repeated " : "", known->type_name(),
        " field); the request is malformed; nothing changed"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      path, " has field ", number,
      ", which this control plane does not know (sent by a newer client?); nothing changed"));
}

// An apply request this big has its memory handed back once it is done.
constexpr size_t kReleaseMemoryAfterBytes = 1 << 20;

}  // namespace

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

AdminServiceImpl::~AdminServiceImpl() {
  {
    absl::MutexLock lock(&apply_mu_);
    apply_stop_ = true;
  }
  apply_thread_.join();
}

void AdminServiceImpl::RunApplies() {
  for (;;) {
    std::function<void()> work;
    {
      absl::MutexLock lock(&apply_mu_);
      apply_mu_.Await(absl::Condition(
          +[](AdminServiceImpl* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->apply_mu_) {
            return self->apply_stop_ || !self->apply_queue_.empty();
          },
          this));
      if (apply_queue_.empty()) return;  // stopping, with nothing left
      work = std::move(apply_queue_.front());
      apply_queue_.pop_front();
    }
    work();
  }
}

grpc::ServerUnaryReactor* AdminServiceImpl::Apply(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // Before the request is parsed: a refused caller costs its bytes only.
  if (auto caller = Authorize(context, Role::kOperator, "Apply"); !caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status()));
    return reactor;
  }
  absl::MutexLock lock(&apply_mu_);
  apply_queue_.push_back([this, context, request, response, reactor] {
    // A caller that gave up while this waited (sluicectl's deadline) is
    // not changed behind its back.
    if (context->IsCancelled()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED,
                                   "the call was cancelled before the apply began"));
      return;
    }
    const size_t request_bytes = request->Length();
    {
      admin::v1::ApplyRequest parsed;
      grpc::ByteBuffer bytes(*request);  // Deserialize consumes its buffer
      grpc::Status status =
          grpc::SerializationTraits<admin::v1::ApplyRequest>::Deserialize(&bytes, &parsed);
      if (status.ok()) {
        admin::v1::ApplyResponse answer;
        status = Apply(context, &parsed, &answer);
        bool own = false;
        if (status.ok()) {
          status = grpc::SerializationTraits<admin::v1::ApplyResponse>::Serialize(
              answer, response, &own);
        }
      }
      reactor->Finish(status);
    }
    // A big request's parse, copies and checks are freed now: their pages
    // go back to the kernel (glibc keeps them otherwise; a refused 36 MB
    // apply left 1.8 GB resident).
    if (request_bytes > kReleaseMemoryAfterBytes) malloc_trim(0);
  });
  return reactor;
}

grpc::Status AdminServiceImpl::Apply(grpc::ServerContextBase* context,
                                     const admin::v1::ApplyRequest* request,
                                     admin::v1::ApplyResponse* response) {
  // A second check for a call that came raw: cheap, and in-process callers
  // come only here.
  auto caller = Authorize(context, Role::kOperator, "Apply");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (absl::Status s = CheckKnownFields(*request); !s.ok()) return ToGrpcStatus(s);
  if (request->resources_size() == 0) {
    absl::Status empty = absl::InvalidArgumentError("apply needs at least one resource");
    Count(/*is_delete=*/false, empty, request->dry_run());
    Audit(*caller, "Apply", {}, 0, request->dry_run(), empty);
    return ToGrpcStatus(empty);
  }
  // Too big whatever it holds: refused before it is copied and validated
  // (1.2 million resources over the limit took half a minute and 1.9 GB
  // to be refused after all).
  if (absl::Status too_big = state_->CheckResourcesFit(request->resources()); !too_big.ok()) {
    Count(/*is_delete=*/false, too_big, request->dry_run());
    Audit(*caller, "Apply", {}, 0, request->dry_run(), too_big);
    return ToGrpcStatus(too_big);
  }
  std::vector<api::Resource> resources(request->resources().begin(),
                                       request->resources().end());
  std::vector<std::string> names = Names(IdsOf(resources));
  // The copy is ConfigState's to keep: no second copy of a big request.
  auto result = state_->Apply(std::move(resources), request->dry_run(),
                              ChangeContext{AuthorOf(*caller, request->author()),
                                            request->message(), request->if_version()});
  Count(/*is_delete=*/false, result, request->dry_run());
  Audit(*caller, "Apply", std::move(names),
        result.ok() && !request->dry_run() ? result->version : 0, request->dry_run(),
        result.status());
  if (!result.ok()) return ToGrpcStatus(result.status());
  response->set_version(result->version);
  response->set_dry_run(request->dry_run());
  response->set_warning(result->warning);
  FillDiff(result->diff, response->mutable_diff());
  return grpc::Status::OK;
}

namespace {

// Sets the response's store_unread_for when etcd is out of reach. The fleet
// board is read from etcd every second, as the state is watched: unread
// past its staleness bound, etcd is out of reach (no quorum, or this
// replica cut off) and the state may have moved on without this replica.
template <typename Response>
void NoteStoreUnread(FleetView* fleet, Response* response) {
  const absl::Duration unread = fleet != nullptr ? fleet->UnreadFor() : absl::ZeroDuration();
  if (unread > absl::ZeroDuration()) {
    response->mutable_store_unread_for()->set_seconds(absl::ToInt64Seconds(unread));
  }
}

}  // namespace

grpc::Status AdminServiceImpl::Get(grpc::ServerContext* context,
                                   const admin::v1::GetRequest* request,
                                   admin::v1::GetResponse* response) {
  if (auto caller = Authorize(context, Role::kViewer, "Get"); !caller.ok()) {
    return ToGrpcStatus(caller.status());
  }
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
  NoteStoreUnread(fleet_, response);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::List(grpc::ServerContext* context,
                                    const admin::v1::ListRequest* request,
                                    admin::v1::ListResponse* response) {
  if (auto caller = Authorize(context, Role::kViewer, "List"); !caller.ok()) {
    return ToGrpcStatus(caller.status());
  }
  if (absl::Status known = CheckKnownKind(request->kind()); !known.ok()) {
    return ToGrpcStatus(known);
  }
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
  NoteStoreUnread(fleet_, response);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::Delete(grpc::ServerContext* context,
                                      const admin::v1::DeleteRequest* request,
                                      admin::v1::DeleteResponse* response) {
  auto caller = Authorize(context, Role::kOperator, "Delete");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (absl::Status s = CheckKnownFields(*request); !s.ok()) return ToGrpcStatus(s);
  // Each named once, in the order given.
  std::vector<api::ResourceId> ids;
  std::set<api::ResourceId> seen;
  auto add = [&](config::v1::ResourceKind kind, const std::string& name) {
    if (seen.emplace(kind, name).second) ids.emplace_back(kind, name);
  };
  add(request->kind(), request->name());
  for (const config::v1::ResourceKey& key : request->more()) add(key.kind(), key.name());
  // sluicectl's dry run before a delete of several names (whether this
  // control plane reads them all: an older one deletes the first only) is
  // no operator's: neither counted nor audited (it doubled each such delete
  // in both).
  const bool check =
      request->dry_run() && context != nullptr &&
      context->client_metadata().count(api::kSluicectlCheckMetadata) > 0;
  for (const api::ResourceId& id : ids) {
    if (absl::Status s = CheckKindAndName(id.first, id.second); !s.ok()) {
      if (!check) {
        Count(/*is_delete=*/true, s, request->dry_run());
        Audit(*caller, "Delete", Names(ids), 0, request->dry_run(), s);
      }
      return ToGrpcStatus(s);
    }
  }
  auto result = state_->DeleteAll(ids, request->dry_run(),
                                  ChangeContext{AuthorOf(*caller, request->author()),
                                                request->message(), request->if_version()});
  if (!check) {
    Count(/*is_delete=*/true, result, request->dry_run());
    Audit(*caller, "Delete", Names(ids), result.ok() && !request->dry_run() ? result->version : 0,
          request->dry_run(), result.status());
  }
  if (!result.ok()) return ToGrpcStatus(result.status());
  response->set_version(result->version);
  response->set_dry_run(request->dry_run());
  response->set_warning(result->warning);
  FillDiff(result->diff, response->mutable_diff());
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::ListProxies(grpc::ServerContext* context,
                                           const admin::v1::ListProxiesRequest*,
                                           admin::v1::ListProxiesResponse* response) {
  if (auto caller = Authorize(context, Role::kViewer, "ListProxies"); !caller.ok()) {
    return ToGrpcStatus(caller.status());
  }
  // A proxy process: its node id, group and instance label (two processes
  // under one node id are two proxies, each listed; in containers every pid
  // is 1).
  auto process_of = [](const admin::v1::ProxyStatus& status) {
    const auto& labels = status.node().labels();
    auto instance = labels.find("instance");  // random per process
    auto pid = labels.find("pid");            // proxies before the instance label
    return absl::StrCat(status.node().id(), "\n", status.node().group(), "\n",
                        instance != labels.end() ? instance->second
                        : pid != labels.end()    ? pid->second
                                                 : "");
  };
  if (started_with_config_) {
    const absl::Duration serving = absl::Now() - started_;
    response->mutable_serving_for()->set_seconds(absl::ToInt64Seconds(serving));
    response->mutable_serving_for()->set_nanos(
        static_cast<int32_t>(absl::ToInt64Nanoseconds(serving % absl::Seconds(1))));
  }
  absl::flat_hash_set<std::string> listed;
  for (auto& status : registry_->List()) {
    if (fleet_ != nullptr) status.set_replica(fleet_->replica_id());
    listed.insert(process_of(status));
    *response->add_proxies() = std::move(status);
  }
  // The other replicas' proxies, as they published them (within a second);
  // a proxy process that moved here is listed once, as this replica sees it.
  // A replica that just started waits for its view to be whole (about 2 s)
  // rather than answer with its own proxies alone (apply --wait said "no
  // proxy is connected").
  if (fleet_ != nullptr) {
    fleet_->WaitWhole(absl::Seconds(3));
    for (auto& status : fleet_->Others()) {
      if (!listed.insert(process_of(status)).second) continue;
      *response->add_proxies() = std::move(status);
    }
    // Then those of silent replicas (hung, cut off from etcd): a proxy may
    // still be held by one, on the version it had. One that has moved to a
    // live replica is listed there, not here.
    for (auto& status : fleet_->Silent()) {
      if (!listed.insert(process_of(status)).second) continue;
      *response->add_proxies() = std::move(status);
    }
    if (const absl::Duration unread = fleet_->UnreadFor(); unread > absl::ZeroDuration()) {
      response->mutable_fleet_unread_for()->set_seconds(absl::ToInt64Seconds(unread));
    }
  }
  const google::protobuf::Timestamp now = NowTimestamp();
  for (admin::v1::ProxyStatus& status : *response->mutable_proxies()) {
    if (!status.has_last_report_time()) continue;
    const google::protobuf::Duration age = now - status.last_report_time();
    *status.mutable_last_report_age() =
        age < google::protobuf::Duration() ? google::protobuf::Duration() : age;
  }
  response->set_current_version(state_->Current()->version);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::History(grpc::ServerContext* context,
                                       const admin::v1::HistoryRequest* request,
                                       admin::v1::HistoryResponse* response) {
  if (auto caller = Authorize(context, Role::kViewer, "History"); !caller.ok()) {
    return ToGrpcStatus(caller.status());
  }
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
    diff.added = it->added.Ids();
    diff.changed = it->changed.Ids();
    diff.removed = it->removed;
    diff.unchanged = static_cast<int>(it->unchanged);
    FillDiff(diff, out->mutable_diff());
  }
  response->set_current_version(state_->Current()->version);
  response->set_retention(static_cast<uint32_t>(history->retention()));
  NoteStoreUnread(fleet_, response);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::GetVersion(grpc::ServerContext* context,
                                          const admin::v1::GetVersionRequest* request,
                                          admin::v1::GetVersionResponse* response) {
  if (auto caller = Authorize(context, Role::kViewer, "GetVersion"); !caller.ok()) {
    return ToGrpcStatus(caller.status());
  }
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
  if (request->compare_with() != 0) {
    // Decided on the full content: a change only to a key is one too.
    absl::StatusOr<api::ResourceMap> other = history->ContentAt(request->compare_with());
    if (!other.ok()) return ToGrpcStatus(absl::NotFoundError(other.status().message()));
    for (const api::ResourceId& id : api::ComputeDiff(*other, content).changed) {
      config::v1::ResourceKey* key = response->add_changed();
      key->set_kind(id.first);
      key->set_name(id.second);
    }
  }
  for (auto& [id, resource] : content) {
    api::Resource* out = response->add_resources();
    *out = std::move(resource);
    api::RedactSecrets(out);
  }
  NoteStoreUnread(fleet_, response);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::Rollback(grpc::ServerContext* context,
                                        const admin::v1::RollbackRequest* request,
                                        admin::v1::RollbackResponse* response) {
  auto caller = Authorize(context, Role::kOperator, "Rollback");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (absl::Status s = CheckKnownFields(*request); !s.ok()) return ToGrpcStatus(s);
  const std::vector<std::string> target = {absl::StrCat("version/", request->version())};
  if (request->version() == 0) {
    absl::Status missing = absl::InvalidArgumentError("version is required");
    Audit(*caller, "Rollback", target, 0, request->dry_run(), missing);
    return ToGrpcStatus(missing);
  }
  auto result = state_->Rollback(request->version(), request->dry_run(),
                                 ChangeContext{AuthorOf(*caller, request->author()),
                                               request->message(), request->if_version()});
  // A dry run makes no version (its answer names the current one).
  Audit(*caller, "Rollback", target,
        result.ok() && !request->dry_run() ? result->version : 0, request->dry_run(),
        result.status());
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

grpc::Status AdminServiceImpl::PurgeCache(
    grpc::ServerContext* context, const admin::v1::PurgeCacheRequest* request,
    admin::v1::PurgeCacheResponse* response) {
  auto caller = Authorize(context, Role::kOperator, "PurgeCache");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (absl::Status s = CheckKnownFields(*request); !s.ok()) return ToGrpcStatus(s);
  absl::Status invalid = CheckPurgeRequest(*request);
  if (invalid.ok() && !request->route().empty() &&
      !HasRouteNamed(*state_->Current(), request->route())) {
    // A typo purged nothing and said "purged 0 entries", as if done.
    invalid = absl::NotFoundError(absl::StrCat("no route is named \"", request->route(),
                                               "\" (a route's name, or vhost/index when it has "
                                               "none, as in /metrics)"));
  }
  if (!invalid.ok()) {
    Audit(*caller, "PurgeCache", PurgeTargets(*request), 0, false, invalid);
    return ToGrpcStatus(invalid);
  }
  // Audited before the wait: the purge happens on the proxies that get it,
  // whatever they answer.
  Audit(*caller, "PurgeCache", PurgeTargets(*request), 0, false,
        absl::OkStatus());
  discovery::v1::PurgeSelector selector;
  selector.set_route(request->route());
  selector.set_host(request->host());
  selector.set_path(request->path());
  selector.set_prefix(request->prefix());
  const absl::Duration timeout =
      request->timeout_ms() == 0 ? kDefaultPurgeTimeout
                                 : absl::Milliseconds(request->timeout_ms());
  PurgeOutcome outcome;
  if (purges_ != nullptr)
    outcome = purges_->Purge(selector, request->group(), timeout);
  if (!request->group().empty() && outcome.targeted == 0 && outcome.departed.empty()) {
    // A mistyped group purged nothing and said "purged 0 entries on 0 of 0
    // proxies", as if done.
    return ToGrpcStatus(absl::NotFoundError(
        absl::StrCat("no connected proxy is in group \"", request->group(),
                     "\" (sluicectl proxies lists each proxy's group); nothing purged")));
  }
  response->set_proxies_targeted(static_cast<uint32_t>(outcome.targeted));
  response->set_proxies_confirmed(static_cast<uint32_t>(outcome.confirmed));
  response->set_entries_removed(outcome.entries_removed);
  for (const auto& failure : outcome.failures) {
    admin::v1::PurgeFailure* out = response->add_failures();
    out->set_node_id(failure.node_id);
    out->set_reason(failure.reason);
  }
  for (const auto& departed : outcome.departed) {
    admin::v1::PurgeDeparted* out = response->add_departed();
    out->set_node_id(departed.node_id);
    out->mutable_ago()->set_seconds(absl::ToInt64Seconds(departed.ago));
  }
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::StartRollout(grpc::ServerContext* context,
                                            const admin::v1::StartRolloutRequest* request,
                                            admin::v1::StartRolloutResponse* response) {
  auto caller = Authorize(context, Role::kOperator, "StartRollout");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (absl::Status s = CheckKnownFields(*request); !s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<RolloutManager::Started> started =
      rollouts_->Start(*request, AuthorOf(*caller, request->author()));
  std::vector<std::string> targets;
  if (started.ok()) targets.push_back(absl::StrCat("rollout/", started->rollout.id()));
  for (const auto& name : Names(IdsOf(request->resources()))) {
    targets.push_back(name);
  }
  Audit(*caller, "StartRollout", std::move(targets),
        started.ok() ? started->change.version : 0, false, started.status());
  // A canary apply is an apply: counted with the others, refused or not.
  if (started.ok()) {
    Count(/*is_delete=*/false, started->change, /*dry_run=*/false);
  } else if (started.status().GetPayload(kNothingToChangePayload).has_value()) {
    if (metrics_ != nullptr) metrics_->CountApply(ChangeOutcome::kUnchanged);
  } else {
    Count(/*is_delete=*/false, started.status(), /*dry_run=*/false);
  }
  if (!started.ok()) return ToGrpcStatus(started.status());
  *response->mutable_rollout() = started->rollout;
  FillDiff(started->change.diff, response->mutable_diff());
  response->set_warning(started->change.warning);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::GetRollout(grpc::ServerContext* context,
                                          const admin::v1::GetRolloutRequest*,
                                          admin::v1::GetRolloutResponse* response) {
  if (auto caller = Authorize(context, Role::kViewer, "GetRollout"); !caller.ok()) {
    return ToGrpcStatus(caller.status());
  }
  bool running = false;
  std::optional<admin::v1::Rollout> rollout;
  rollout = rollouts_->Get(&running);
  if (!rollout.has_value()) {
    return ToGrpcStatus(absl::NotFoundError("no canary rollout since sluice-control started"));
  }
  *response->mutable_rollout() = std::move(*rollout);
  response->set_running(running);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::PromoteRollout(grpc::ServerContext* context,
                                              const admin::v1::PromoteRolloutRequest* request,
                                              admin::v1::PromoteRolloutResponse* response) {
  auto caller = Authorize(context, Role::kOperator, "PromoteRollout");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (absl::Status s = CheckKnownFields(*request); !s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<admin::v1::Rollout> decided =
      rollouts_->Decide(true, AuthorOf(*caller, request->author()), request->message());
  Audit(*caller, "PromoteRollout",
        {decided.ok() ? absl::StrCat("rollout/", decided->id()) : std::string("rollout/-")},
        decided.ok() ? decided->decision_version() : 0, false, decided.status());
  if (!decided.ok()) return ToGrpcStatus(decided.status());
  *response->mutable_rollout() = std::move(*decided);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::AbortRollout(grpc::ServerContext* context,
                                            const admin::v1::AbortRolloutRequest* request,
                                            admin::v1::AbortRolloutResponse* response) {
  auto caller = Authorize(context, Role::kOperator, "AbortRollout");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (absl::Status s = CheckKnownFields(*request); !s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<admin::v1::Rollout> decided =
      rollouts_->Decide(false, AuthorOf(*caller, request->author()), request->message());
  Audit(*caller, "AbortRollout",
        {decided.ok() ? absl::StrCat("rollout/", decided->id()) : std::string("rollout/-")},
        decided.ok() ? decided->decision_version() : 0, false, decided.status());
  if (!decided.ok()) return ToGrpcStatus(decided.status());
  *response->mutable_rollout() = std::move(*decided);
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::CreateToken(grpc::ServerContext* context,
                                           const admin::v1::CreateTokenRequest* request,
                                           admin::v1::CreateTokenResponse* response) {
  auto caller = Authorize(context, Role::kAdmin, "CreateToken");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (absl::Status s = CheckKnownFields(*request); !s.ok()) return ToGrpcStatus(s);
  // The role asked for too: who was given admin is the audit's question.
  const std::vector<std::string> target = {absl::StrCat("token/", request->name()),
                                           absl::StrCat("role/", request->role())};
  absl::StatusOr<std::string> token = absl::FailedPreconditionError(
      "sluice-control has no token store");
  absl::StatusOr<Role> role = ParseRole(request->role());
  if (!role.ok()) {
    token = role.status();
  } else if (access_.tokens != nullptr) {
    token = access_.tokens->Create(request->name(), *role, caller->identity);
  }
  Audit(*caller, "CreateToken", target, 0, false, token.status());
  if (!token.ok()) return ToGrpcStatus(token.status());
  response->set_token(*token);
  response->set_name(request->name());
  response->set_role(RoleName(*role));
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::ListTokens(grpc::ServerContext* context,
                                          const admin::v1::ListTokensRequest*,
                                          admin::v1::ListTokensResponse* response) {
  auto caller = Authorize(context, Role::kAdmin, "ListTokens");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (access_.tokens == nullptr) return grpc::Status::OK;
  for (const StoredToken& t : access_.tokens->List()) {
    admin::v1::TokenInfo* out = response->add_tokens();
    out->set_name(t.name);
    out->set_role(t.role);
    if (t.created != absl::InfinitePast()) {
      out->mutable_created()->set_seconds(absl::ToUnixSeconds(t.created));
    }
    out->set_created_by(t.created_by);
  }
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::RevokeToken(grpc::ServerContext* context,
                                           const admin::v1::RevokeTokenRequest* request,
                                           admin::v1::RevokeTokenResponse*) {
  auto caller = Authorize(context, Role::kAdmin, "RevokeToken");
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (absl::Status s = CheckKnownFields(*request); !s.ok()) return ToGrpcStatus(s);
  absl::Status revoked = access_.tokens == nullptr
                             ? absl::NotFoundError(absl::StrCat("no token named '",
                                                                request->name(), "'"))
                             : access_.tokens->Revoke(request->name());
  Audit(*caller, "RevokeToken", {absl::StrCat("token/", request->name())}, 0, false, revoked);
  return ToGrpcStatus(revoked);
}

}  // namespace sluice::controlplane
