// AdminServiceImpl: the operator's API (api/sluice/admin), over ConfigState
// and ProxyRegistry. Maps absl::Status codes one to one onto gRPC codes.
// Get and List return Secrets with the private key redacted
// (api::RedactSecrets); Apply takes keys in full. Consumers' API keys and
// passwords are taken in plain or hashed and kept only hashed (ConfigState).
// Each Apply and Delete is counted in `metrics` by how it ended (a Rollback
// only as a new version). History, GetVersion and Rollback read and restore
// ConfigState's kept versions; GetVersion redacts like Get.
//
// Access (AdminAccess): with `require_tokens`, each call is checked once,
// first: the `authorization: Bearer <token>` metadata must name a token
// (OperatorTokens) whose role allows the method (viewer: reads; operator:
// also Apply, Delete, Rollback; admin: also the token methods), else
// UNAUTHENTICATED or PERMISSION_DENIED naming the role needed. The history's
// author is then the token's name. Without it every call is allowed as
// "anonymous" and the author is what the client says. Every change and every
// refused call is appended to the AuditLog when there is one.
//
// PurgeCache (operator) checks the selector, hands it to the PurgeRelay and
// blocks its gRPC thread until the targeted proxies answered or the timeout
// (at most kMaxPurgeTimeout) passed; each call is audited with the selector.
// Without a relay no proxy is targeted.
//
// StartRollout, PromoteRollout and AbortRollout (operator) and GetRollout
// (viewer) go to the RolloutManager (rollout.h); each change is audited
// ("rollout/<id>").
//
// Apply is served raw (gRPC's callback API, ByteBuffer in and out): the
// token is checked before the request is parsed, so a caller without one
// cannot make the control plane build the objects of a request as large as
// the server's receive limit (a 45 MB Apply took some 600 MB parsed, even
// when refused), and the parse and the change run on a thread of the
// service's own, not on the callback threads that serve the config streams.
//
// Thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_ADMIN_SERVICE_H_
#define SLUICE_CONTROLPLANE_SERVER_ADMIN_SERVICE_H_

#include <deque>
#include <functional>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "controlplane/server/audit_log.h"
#include "controlplane/server/config_state.h"
#include "controlplane/server/control_plane_metrics.h"
#include "controlplane/server/fleet_view.h"
#include "controlplane/server/operator_tokens.h"
#include "controlplane/server/proxy_registry.h"
#include "controlplane/server/purge_relay.h"
#include "controlplane/server/rollout.h"
#include "sluice/admin/v1/admin.grpc.pb.h"

namespace sluice::controlplane {

// Who may call the admin API, and where calls are recorded. Not owned; any
// may be null (no tokens: only the bootstrap or none; no audit log).
struct AdminAccess {
  // Also required, without it, once `tokens` holds a stored one.
  bool require_tokens = false;
  OperatorTokens* tokens = nullptr;
  AuditLog* audit = nullptr;
};

// The caller of one RPC once it is let in.
struct AdminCaller {
  std::string identity;  // the token's name, or "anonymous"
  std::string peer;
  bool authenticated = false;
};

// PurgeCache's wait for the proxies: the default and the most a request may
// ask for.
inline constexpr absl::Duration kDefaultPurgeTimeout = absl::Seconds(5);
inline constexpr absl::Duration kMaxPurgeTimeout = absl::Seconds(60);
// The longest selector field (route, host, path, prefix, group) accepted.
inline constexpr size_t kMaxPurgeFieldBytes = 4096;

// The purge `request` asks for: INVALID_ARGUMENT naming the fields when it
// is malformed (path with prefix, either not starting with '/', a field too
// long, a timeout over kMaxPurgeTimeout).
absl::Status CheckPurgeRequest(const admin::v1::PurgeCacheRequest& request);

class AdminServiceImpl final
    : public admin::v1::AdminService::WithRawCallbackMethod_Apply<
          admin::v1::AdminService::Service> {
 public:
  // `metrics` may be null: nothing is counted then. `purges` may be null:
  // PurgeCache targets no proxy then.
  AdminServiceImpl(ConfigState* state, ProxyRegistry* registry, RolloutManager* rollouts,
                   ControlPlaneMetrics* metrics = nullptr, AdminAccess access = {},
                   PurgeRelay* purges = nullptr)
      : state_(state),
        registry_(registry),
        metrics_(metrics),
        access_(access),
        purges_(purges),
        rollouts_(rollouts),
        apply_thread_([this] { RunApplies(); }) {}
  // Whether calls need a token (--require-tokens, or tokens stored).
  bool TokensRequired() const;
  // The token check of a call to `method`, from its metadata (`headers`
  // authorization entries, the first `header`), before its request is read
  // (MakeAdminTokenGate): a call without a valid token is refused, and
  // audited and counted as Authorize does; the role is checked later.
  absl::Status AuthenticateEarly(size_t headers, std::string_view header,
                                 const std::string& method);
  // Finishes the Applies still queued, then stops the thread.
  ~AdminServiceImpl() override;

  // With replicas on a shared store: ListProxies lists every replica's
  // proxies (`view` must outlive this).
  void set_fleet_view(FleetView* view) { fleet_ = view; }

  // The served Apply: authorizes, then queues the parse and the change.
  grpc::ServerUnaryReactor* Apply(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  // An Apply already parsed (the raw one's second half; in-process callers,
  // with a null `context`: no metadata then).
  grpc::Status Apply(grpc::ServerContextBase* context, const admin::v1::ApplyRequest* request,
                     admin::v1::ApplyResponse* response);
  grpc::Status Get(grpc::ServerContext*, const admin::v1::GetRequest* request,
                   admin::v1::GetResponse* response) override;
  grpc::Status List(grpc::ServerContext*, const admin::v1::ListRequest* request,
                    admin::v1::ListResponse* response) override;
  grpc::Status Delete(grpc::ServerContext*, const admin::v1::DeleteRequest* request,
                      admin::v1::DeleteResponse* response) override;
  grpc::Status ListProxies(grpc::ServerContext*,
                           const admin::v1::ListProxiesRequest* request,
                           admin::v1::ListProxiesResponse* response) override;
  grpc::Status History(grpc::ServerContext*, const admin::v1::HistoryRequest* request,
                       admin::v1::HistoryResponse* response) override;
  grpc::Status GetVersion(grpc::ServerContext*, const admin::v1::GetVersionRequest* request,
                          admin::v1::GetVersionResponse* response) override;
  grpc::Status Rollback(grpc::ServerContext*, const admin::v1::RollbackRequest* request,
                        admin::v1::RollbackResponse* response) override;
  grpc::Status PurgeCache(grpc::ServerContext*,
                          const admin::v1::PurgeCacheRequest* request,
                          admin::v1::PurgeCacheResponse* response) override;
  grpc::Status StartRollout(grpc::ServerContext*, const admin::v1::StartRolloutRequest* request,
                            admin::v1::StartRolloutResponse* response) override;
  grpc::Status GetRollout(grpc::ServerContext*, const admin::v1::GetRolloutRequest* request,
                          admin::v1::GetRolloutResponse* response) override;
  grpc::Status PromoteRollout(grpc::ServerContext*,
                              const admin::v1::PromoteRolloutRequest* request,
                              admin::v1::PromoteRolloutResponse* response) override;
  grpc::Status AbortRollout(grpc::ServerContext*, const admin::v1::AbortRolloutRequest* request,
                            admin::v1::AbortRolloutResponse* response) override;
  grpc::Status CreateToken(grpc::ServerContext*, const admin::v1::CreateTokenRequest* request,
                           admin::v1::CreateTokenResponse* response) override;
  grpc::Status ListTokens(grpc::ServerContext*, const admin::v1::ListTokensRequest* request,
                          admin::v1::ListTokensResponse* response) override;
  grpc::Status RevokeToken(grpc::ServerContext*, const admin::v1::RevokeTokenRequest* request,
                           admin::v1::RevokeTokenResponse* response) override;

 private:
  // Counts a finished Apply (or Delete) in metrics_, and the new version's time.
  void Count(bool is_delete, const absl::StatusOr<ConfigState::ChangeResult>& result,
             bool dry_run);

  // Lets the caller in for `method` if its token's role is at least
  // `needed`; a refusal is audited. `context` may be null (in-process calls
  // from tests): no metadata then.
  absl::StatusOr<AdminCaller> Authorize(grpc::ServerContextBase* context, Role needed,
                                        const char* method);
  // Authorize's token check on metadata already taken apart.
  absl::StatusOr<AdminCaller> CheckToken(AdminCaller caller, size_t headers,
                                         const std::string& header, Role needed,
                                         const char* method);
  // The apply thread: runs queued work until the destructor stops it.
  void RunApplies();
  // Appends the audit line of a change (no-op without an audit log).
  void Audit(const AdminCaller& caller, const char* method, std::vector<std::string> resources,
             uint64_t version, bool dry_run, const absl::Status& result);

  ConfigState* state_;
  ProxyRegistry* registry_;
  ControlPlaneMetrics* metrics_;
  AdminAccess access_;
  PurgeRelay* purges_;
  const absl::Time started_ = absl::Now();  // ListProxiesResponse.serving_for
  // The store had a config when this process started (a restart, whose
  // proxies may still be reconnecting), not a new one (no proxy had it).
  const bool started_with_config_ = state_ != nullptr && state_->Current()->version > 0;
  RolloutManager* const rollouts_;  // never null
  FleetView* fleet_ = nullptr;
  // Refusals written to the audit log: at most kRefusalBurst at once, then
  // kRefusalsPerSecond; the others are counted and named by the next one
  // written (a caller without a token cannot fill the disk).
  static constexpr double kRefusalsPerSecond = 10;
  static constexpr double kRefusalBurst = 100;
  absl::Mutex refusal_mu_;
  double refusal_credit_ ABSL_GUARDED_BY(refusal_mu_) = kRefusalBurst;
  absl::Time refusal_refill_ ABSL_GUARDED_BY(refusal_mu_) = absl::InfinitePast();
  uint64_t refusals_unwritten_ ABSL_GUARDED_BY(refusal_mu_) = 0;
  absl::Mutex apply_mu_;
  std::deque<std::function<void()>> apply_queue_ ABSL_GUARDED_BY(apply_mu_);
  bool apply_stop_ ABSL_GUARDED_BY(apply_mu_) = false;
  std::thread apply_thread_;  // last: started once the rest is set
};

grpc::Status ToGrpcStatus(const absl::Status& status);

// For sluice-control's TLS credentials (SetAuthMetadataProcessor): an admin
// call without a valid token is refused on its metadata, before gRPC reads
// its request (up to 65 MiB each). Checked only in the handlers, any
// client that reached the port could make the server hold gigabytes.
// Calls to other services pass through.
std::shared_ptr<grpc::AuthMetadataProcessor> MakeAdminTokenGate(AdminServiceImpl* admin);

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_ADMIN_SERVICE_H_
