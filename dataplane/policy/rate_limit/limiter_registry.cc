#include "dataplane/policy/rate_limit/limiter_registry.h"

namespace sluice::policy::rate_limit {

LimiterRegistry& LimiterRegistry::Get() {
  static auto* const registry = new LimiterRegistry();  // never destroyed
  return *registry;
}

std::shared_ptr<RateLimiter> LimiterRegistry::FindOrCreate(
    const std::string& identity, const std::function<std::unique_ptr<RateLimiter>()>& make) {
  absl::MutexLock lock(&mu_);
  Sweep();
  std::weak_ptr<RateLimiter>& slot = by_identity_[identity];
  if (std::shared_ptr<RateLimiter> live = slot.lock()) return live;
  std::shared_ptr<RateLimiter> limiter = make();
  slot = limiter;
  return limiter;
}

std::shared_ptr<RateLimiter> LimiterRegistry::Find(const std::string& identity) {
  absl::MutexLock lock(&mu_);
  auto it = by_identity_.find(identity);
  return it == by_identity_.end() ? nullptr : it->second.lock();
}

size_t LimiterRegistry::size() {
  absl::MutexLock lock(&mu_);
  Sweep();
  return by_identity_.size();
}

void LimiterRegistry::Sweep() {
  absl::erase_if(by_identity_, [](const auto& item) { return item.second.expired(); });
}

}  // namespace sluice::policy::rate_limit
