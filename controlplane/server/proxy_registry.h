// ProxyRegistry: what sluice-control knows of each connected proxy: its node,
// when it connected, the version it ACKed, the version pending, its last NACK.
// An observer (the rollout manager) may also hear of every traffic report and
// NACK as they come.
//
// Thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_PROXY_REGISTRY_H_
#define SLUICE_CONTROLPLANE_SERVER_PROXY_REGISTRY_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "sluice/admin/v1/admin.pb.h"

namespace sluice::controlplane {

// Now, to the nanosecond (this protobuf's TimeUtil::GetCurrentTime gives
// whole seconds): connected_since also tells apart two connections of one
// node id (sluicectl --wait), and a report's age is not a second short.
google::protobuf::Timestamp NowTimestamp();

// Told of each traffic report and NACK, on the stream's reader thread, with
// no lock of the registry held; must be quick.
struct ProxyObserver {
  std::function<void(const discovery::v1::Node&, const discovery::v1::TrafficReport&)> reported;
  std::function<void(const discovery::v1::Node&, uint64_t version, const std::string& error)>
      nacked;
};

class ProxyRegistry {
 public:
  // Replaces the observer (an empty one: none).
  void SetObserver(ProxyObserver observer);

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
  std::shared_ptr<const ProxyObserver> observer_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_PROXY_REGISTRY_H_
