// AdminServiceImpl: the operator's API (api/sluice/admin), over ConfigState
// and ProxyRegistry. Maps absl::Status codes one to one onto gRPC codes.
// Get and List return Secrets with the private key redacted
// (api::RedactSecrets); Apply takes keys in full. Consumers' API keys and
// passwords are taken in plain or hashed and kept only hashed (ConfigState).
// Each Apply and Delete is counted in `metrics` by how it ended (a Rollback
// only as a new version). History, GetVersion and Rollback read and restore
// ConfigState's kept versions; GetVersion redacts like Get.
//
// Thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_ADMIN_SERVICE_H_
#define SLUICE_CONTROLPLANE_SERVER_ADMIN_SERVICE_H_

#include "controlplane/server/config_state.h"
#include "controlplane/server/control_plane_metrics.h"
#include "controlplane/server/proxy_registry.h"
#include "sluice/admin/v1/admin.grpc.pb.h"

namespace sluice::controlplane {

class AdminServiceImpl final : public admin::v1::AdminService::Service {
 public:
  // `metrics` may be null: nothing is counted then.
  AdminServiceImpl(ConfigState* state, ProxyRegistry* registry,
                   ControlPlaneMetrics* metrics = nullptr)
      : state_(state), registry_(registry), metrics_(metrics) {}

  grpc::Status Apply(grpc::ServerContext*, const admin::v1::ApplyRequest* request,
                     admin::v1::ApplyResponse* response) override;
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

 private:
  // Counts a finished Apply (or Delete) in metrics_, and the new version's time.
  void Count(bool is_delete, const absl::StatusOr<ConfigState::ChangeResult>& result,
             bool dry_run);

  ConfigState* state_;
  ProxyRegistry* registry_;
  ControlPlaneMetrics* metrics_;
};

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_ADMIN_SERVICE_H_
