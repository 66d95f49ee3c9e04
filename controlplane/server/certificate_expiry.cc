#include "controlplane/server/certificate_expiry.h"

#include "api/tls_material.h"

namespace sluice::controlplane {

std::vector<std::pair<std::string, int64_t>> CertificateExpiries::Of(
    const api::ResourceMap& resources) {
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<std::string, int64_t>> out;
  absl::flat_hash_map<std::string, Entry> next;
  for (const auto& [id, resource] : resources) {
    if (!resource.has_secret() || !resource.secret().has_tls_certificate()) continue;
    const std::string& chain = resource.secret().tls_certificate().certificate_chain();
    Entry entry;
    auto known = by_name_.find(id.second);
    if (known != by_name_.end() && known->second.chain == chain) {
      entry = std::move(known->second);
    } else {
      ++parsed_;
      entry.chain = chain;
      if (auto not_after = api::LeafNotAfter(chain)) {
        entry.not_after = absl::ToUnixSeconds(*not_after);
      }
    }
    if (entry.not_after) out.emplace_back(id.second, *entry.not_after);
    next.emplace(id.second, std::move(entry));
  }
  by_name_ = std::move(next);  // Secrets gone are forgotten
  return out;
}

size_t CertificateExpiries::parsed() {
  absl::MutexLock lock(&mu_);
  return parsed_;
}

}  // namespace sluice::controlplane
