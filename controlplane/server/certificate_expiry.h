// The expiry of every tls_certificate Secret of a config, for
// sluice_control_certificate_expiry_timestamp_seconds. Each certificate
// chain is parsed once per content, not at every scrape: a scrape of 4,000
// Secrets took 0.9-1.9 s, past a 1 s probe's timeout, and the control
// plane's pod restarted in a loop.
//
// Thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_CERTIFICATE_EXPIRY_H_
#define SLUICE_CONTROLPLANE_SERVER_CERTIFICATE_EXPIRY_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "api/resource.h"

namespace sluice::controlplane {

class CertificateExpiries {
 public:
  // (Secret name, leaf certificate's notAfter in Unix seconds) of each
  // tls_certificate Secret of `resources` whose chain parses, in name order.
  std::vector<std::pair<std::string, int64_t>> Of(const api::ResourceMap& resources);
  // Chains parsed so far (a chain seen before is not parsed again).
  size_t parsed();

 private:
  struct Entry {
    std::string chain;  // what was parsed
    std::optional<int64_t> not_after;
  };
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> by_name_ ABSL_GUARDED_BY(mu_);
  size_t parsed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_CERTIFICATE_EXPIRY_H_
