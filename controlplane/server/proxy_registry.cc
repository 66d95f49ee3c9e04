#include "controlplane/server/proxy_registry.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"

namespace sluice::controlplane {

using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp NowTimestamp() {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
}

int ProxyRegistry::Connect(const discovery::v1::Node& node, uint64_t version_held) {
  absl::MutexLock lock(&mu_);
  int handle = next_handle_++;
  admin::v1::ProxyStatus& status = proxies_[handle];
  *status.mutable_node() = node;
  *status.mutable_connected_since() = NowTimestamp();
  status.set_version_applied(version_held);
  return handle;
}

void ProxyRegistry::Disconnect(int handle) {
  absl::MutexLock lock(&mu_);
  proxies_.erase(handle);
}

// (A call after Disconnect finds nothing: operator[] would list a
// disconnected proxy again, with no node.)
void ProxyRegistry::Sent(int handle, uint64_t version) {
  absl::MutexLock lock(&mu_);
  auto it = proxies_.find(handle);
  if (it != proxies_.end()) it->second.set_version_pending(version);
}

void ProxyRegistry::Acked(int handle, uint64_t version) {
  absl::MutexLock lock(&mu_);
  auto it = proxies_.find(handle);
  if (it == proxies_.end()) return;
  it->second.set_version_applied(version);
  it->second.set_version_pending(0);
}

void ProxyRegistry::SetObserver(ProxyObserver observer) {
  absl::MutexLock lock(&mu_);
  observer_ = std::make_shared<const ProxyObserver>(std::move(observer));
}

void ProxyRegistry::Nacked(int handle, uint64_t version, const std::string& error) {
  std::shared_ptr<const ProxyObserver> observer;
  discovery::v1::Node node;
  {
    absl::MutexLock lock(&mu_);
    auto it = proxies_.find(handle);
    if (it == proxies_.end()) return;
    admin::v1::ProxyStatus& status = it->second;
    status.set_version_pending(0);
    status.set_last_nack_version(version);
    status.set_last_nack_error(error);
    *status.mutable_last_nack_time() = NowTimestamp();
    observer = observer_;
    if (observer != nullptr && observer->nacked) node = status.node();
  }
  if (observer != nullptr && observer->nacked) observer->nacked(node, version, error);
}

void ProxyRegistry::Reported(int handle, const discovery::v1::TrafficReport& report) {
  std::shared_ptr<const ProxyObserver> observer;
  discovery::v1::Node node;
  {
    absl::MutexLock lock(&mu_);
    auto it = proxies_.find(handle);
    if (it == proxies_.end()) return;
    *it->second.mutable_last_report() = report;
    *it->second.mutable_last_report_time() = NowTimestamp();
    observer = observer_;
    if (observer != nullptr && observer->reported) node = it->second.node();
  }
  if (observer != nullptr && observer->reported) observer->reported(node, report);
}

size_t ProxyRegistry::connected() const {
  absl::MutexLock lock(&mu_);
  return proxies_.size();
}

std::vector<admin::v1::ProxyStatus> ProxyRegistry::List() const {
  std::vector<admin::v1::ProxyStatus> out;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [handle, status] : proxies_) out.push_back(status);
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.node().id() < b.node().id();
  });
  return out;
}

}  // namespace sluice::controlplane
