// Process-wide: the rate limiters of the `rate-limit` policies compiled in
// this proxy, by identity (a string naming everything that gives counters
// their meaning: scope, name, limits, key, fallback, max_keys; see
// StateIdentity in internal.h). A config version whose policy keeps its
// identity gets the limiter the previous version used, counters and all;
// a change of its limits alone (scope LOCAL) carries each caller's counts
// over to the new limiter (GcraLimiter::CarryOver); any other change starts
// from empty counters. The registry holds limiters
// weakly: a limiter lives as long as a compiled policy (a FilterFactory of
// a config version still in use) holds it.
//
// Thread-safe. Called on the config thread when policies compile (and by
// tests); never on the request path.
#ifndef SLUICE_DATAPLANE_POLICY_RATE_LIMIT_LIMITER_REGISTRY_H_
#define SLUICE_DATAPLANE_POLICY_RATE_LIMIT_LIMITER_REGISTRY_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "dataplane/policy/rate_limit/limiter.h"

namespace sluice::policy::rate_limit {

class LimiterRegistry {
 public:
  static LimiterRegistry& Get();

  // The live limiter of `identity`, or a new one from `make`.
  std::shared_ptr<RateLimiter> FindOrCreate(
      const std::string& identity, const std::function<std::unique_ptr<RateLimiter>()>& make);
  // The same, for a limiter of `family` (the identity but for its limits):
  // a new one is made by `make` from the family's live limiters (the
  // versions of the policy with other limits), so it can carry their
  // counters over. The identity's live limiter is reused only while no
  // other of the family was made after it: limits A, then B, then A again
  // while a request of the first A still holds its limiter get a new one,
  // with what was spent under B (the old one's counts had missed it).
  std::shared_ptr<RateLimiter> FindOrCreate(
      const std::string& identity, const std::string& family,
      const std::function<std::unique_ptr<RateLimiter>(
          const std::vector<std::shared_ptr<RateLimiter>>& family_live)>& make);
  // The live limiter of `identity`, or nullptr.
  std::shared_ptr<RateLimiter> Find(const std::string& identity);
  // Identities with a live limiter.
  size_t size();

 private:
  // Forgets identities whose limiter is gone.
  void Sweep() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  struct Slot {
    std::weak_ptr<RateLimiter> limiter;
    std::string family;  // empty: made without one
    uint64_t made = 0;   // when (next_made_), to tell the family's newest
  };
  uint64_t next_made_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, Slot> by_identity_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::policy::rate_limit

#endif  // SLUICE_DATAPLANE_POLICY_RATE_LIMIT_LIMITER_REGISTRY_H_
