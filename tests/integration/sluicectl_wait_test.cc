// sluicectl apply --wait against a control plane whose view of the other
// replicas' proxies is unread (etcd out of reach, or back since a moment):
// a stand-in sluice-control (a real gRPC server in this process, answering
// Apply and ListProxies as a replica without proxies of its own does) and
// the real sluicectl binary.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "sluice/admin/v1/admin.grpc.pb.h"
#include "tests/harness/process.h"

namespace sluice::testing {
namespace {

// Applies are version 7. ListProxies: the other replicas' proxies unread
// (fleet_unread_for 5 s, no proxy of its own) for the first `unread_lists`
// calls, then read: one proxy, on version 7.
class StandIn final : public admin::v1::AdminService::Service {
 public:
  explicit StandIn(int unread_lists) : unread_lists_(unread_lists) {}

  grpc::Status Apply(grpc::ServerContext*, const admin::v1::ApplyRequest*,
                     admin::v1::ApplyResponse* response) override {
    response->set_version(7);
    response->mutable_diff()->add_added()->set_name("web");
    return grpc::Status::OK;
  }

  grpc::Status ListProxies(grpc::ServerContext*, const admin::v1::ListProxiesRequest*,
                           admin::v1::ListProxiesResponse* response) override {
    response->set_current_version(7);
    if (lists_++ < unread_lists_) {
      response->mutable_fleet_unread_for()->set_seconds(5);
      return grpc::Status::OK;
    }
    admin::v1::ProxyStatus* proxy = response->add_proxies();
    proxy->mutable_node()->set_id("p1");
    proxy->set_version_applied(7);
    proxy->mutable_connected_since()->set_seconds(1000);
    return grpc::Status::OK;
  }

 private:
  const int unread_lists_;
  std::atomic<int> lists_{0};
};

struct Served {
  std::unique_ptr<StandIn> service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

Served Serve(int unread_lists) {
  Served s;
  s.service = std::make_unique<StandIn>(unread_lists);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(s.service.get());
  s.server = builder.BuildAndStart();
  s.address = absl::StrCat("127.0.0.1:", port);
  return s;
}

CommandResult ApplyAndWait(const std::string& server, const std::string& timeout) {
  const std::string dir = MakeTempDir("wait");
  std::ofstream(dir + "/c.yaml")
      << "kind: Cluster\nname: web\nspec: {endpoints: [{address: 127.0.0.1, port: 9000}]}\n";
  return RunCommand({RunfilePath("controlplane/cli/sluicectl"), "--server", server, "apply",
                     "-f", dir + "/c.yaml", "--wait", "--timeout", timeout});
}

// Before: "version 7: no proxy is connected", exit 0, while the other
// replica's proxies had not taken it (HA drill, in the second after etcd
// came back).
TEST(SluicectlWaitTest, AnUnreadFleetIsNoEmptyFleet) {
  Served unread = Serve(/*unread_lists=*/1 << 30);
  ASSERT_TRUE(unread.server);
  CommandResult r = ApplyAndWait(unread.address, "1s");
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "version 7: no proxy of this replica is connected"))
      << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "no proxy is connected")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "has not read the other replicas' proxies for 5s (etcd "
                                       "out of reach): waiting for it to read them"))
      << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "the other control-plane replicas' proxies are not known"))
      << r.err;
  unread.server->Shutdown();

  // Read again within the wait: the proxy it then lists is waited for.
  Served back = Serve(/*unread_lists=*/3);
  ASSERT_TRUE(back.server);
  r = ApplyAndWait(back.address, "10s");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "version 7: taken by 1 of 1 proxies")) << r.out;
  back.server->Shutdown();
}

}  // namespace
}  // namespace sluice::testing
