// ProxyRegistry: what sluice-control knows of each connected proxy: its node,
// when it connected, the version it ACKed, the version pending, its last NACK.
//
// Thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_PROXY_REGISTRY_H_
#define SLUICE_CONTROLPLANE_SERVER_PROXY_REGISTRY_H_

#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "sluice/admin/v1/admin.pb.h"

namespace sluice::controlplane {

class ProxyRegistry {
 public:
  // Returns a handle for the other calls.
  int Connect(const discovery::v1::Node& node, uint64_t version_held);
  void Disconnect(int handle);
  void Sent(int handle, uint64_t version);
  void Acked(int handle, uint64_t version);
  void Nacked(int handle, uint64_t version, const std::string& error);
  void Reported(int handle, const discovery::v1::TrafficReport& report);

  // Connected proxies, ordered by node id.
  std::vector<admin::v1::ProxyStatus> List() const;
  // How many List() would return, without copying them.
  size_t connected() const;

 private:
  mutable absl::Mutex mu_;
  std::map<int, admin::v1::ProxyStatus> proxies_ ABSL_GUARDED_BY(mu_);
  int next_handle_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_PROXY_REGISTRY_H_
