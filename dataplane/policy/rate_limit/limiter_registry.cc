#include "dataplane/policy/rate_limit/limiter_registry.h"

namespace sluice::policy::rate_limit {

LimiterRegistry& LimiterRegistry::Get() {
  static auto* const registry = new LimiterRegistry();  // never destroyed
  return *registry;
}

std::shared_ptr<RateLimiter> LimiterRegistry::FindOrCreate(
    const std::string& identity, const std::function<std::unique_ptr<RateLimiter>()>& make) {
  return FindOrCreate(identity, std::string(),
                      [&](const std::vector<std::shared_ptr<RateLimiter>>&) { return make(); });
}

std::shared_ptr<RateLimiter> LimiterRegistry::FindOrCreate(
    const std::string& identity, const std::string& family,
    const std::function<std::unique_ptr<RateLimiter>(
        const std::vector<std::shared_ptr<RateLimiter>>& family_live)>& make) {
  absl::MutexLock lock(&mu_);
  Sweep();
  if (auto it = by_identity_.find(identity); it != by_identity_.end()) {
    if (std::shared_ptr<RateLimiter> live = it->second.limiter.lock()) {
      bool newer = false;  // another of the family, made since
      if (!family.empty()) {
        for (const auto& [id, slot] : by_identity_) {
          newer = newer || (slot.family == family && slot.made > it->second.made &&
                            !slot.limiter.expired());
        }
      }
      if (!newer) return live;
    }
  }
  std::vector<std::shared_ptr<RateLimiter>> family_live;
  if (!family.empty()) {
    for (const auto& [id, slot] : by_identity_) {
      if (slot.family != family) continue;
      if (std::shared_ptr<RateLimiter> live = slot.limiter.lock()) {
        family_live.push_back(std::move(live));
      }
    }
  }
  std::shared_ptr<RateLimiter> limiter = make(family_live);
  by_identity_[identity] = Slot{limiter, family, ++next_made_};
  return limiter;
}

std::shared_ptr<RateLimiter> LimiterRegistry::Find(const std::string& identity) {
  absl::MutexLock lock(&mu_);
  auto it = by_identity_.find(identity);
  return it == by_identity_.end() ? nullptr : it->second.limiter.lock();
}

size_t LimiterRegistry::size() {
  absl::MutexLock lock(&mu_);
  Sweep();
  return by_identity_.size();
}

void LimiterRegistry::Sweep() {
  absl::erase_if(by_identity_, [](const auto& item) { return item.second.limiter.expired(); });
}

}  // namespace sluice::policy::rate_limit
