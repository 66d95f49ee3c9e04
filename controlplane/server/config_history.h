// ConfigHistory: the versions sluice-control keeps (StoredHistory), with the
// rules of what is kept: every accepted version is appended, the oldest are
// dropped beyond the retention (the current version is always kept), and any
// kept version's whole content can be rebuilt.
//
// A value type: ConfigState copies it, appends, stores the copy and only then
// publishes it as an immutable shared_ptr<const ConfigHistory>, so readers
// use it from any thread without a lock.
#ifndef SLUICE_CONTROLPLANE_SERVER_CONFIG_HISTORY_H_
#define SLUICE_CONTROLPLANE_SERVER_CONFIG_HISTORY_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "api/resource.h"
#include "controlplane/store/file_store.h"

namespace sluice::controlplane {

// sluice-control --history: versions kept by default.
inline constexpr size_t kDefaultHistoryVersions = 100;

class ConfigHistory {
 public:
  // `retention` >= 1.
  explicit ConfigHistory(size_t retention) : retention_(retention < 1 ? 1 : retention) {}

  // The history read from the store, made to agree with the state it goes
  // with: entries newer than `version` (written before a crash kept the
  // state from following) are dropped, and the oldest beyond the retention.
  // When what is left does not end at `version` with `content` (no history
  // file yet, or one from another state), the history restarts from the
  // current version alone (time and author unknown) and `*warning` says why.
  static ConfigHistory Restore(StoredHistory stored, size_t retention, uint64_t version,
                               const api::ResourceMap& content, std::string* warning);

  // Adds the newest version, whose whole content is `content`; drops the
  // oldest beyond the retention.
  void Append(HistoryEntry entry, const api::ResourceMap& content);

  // The kept entry of `version`; null when not kept.
  const HistoryEntry* Find(uint64_t version) const;
  // The whole content of `version`; FAILED_PRECONDITION naming the versions
  // kept when it is not one of them.
  absl::StatusOr<api::ResourceMap> ContentAt(uint64_t version) const;

  const StoredHistory& stored() const { return stored_; }
  size_t retention() const { return retention_; }
  // "versions 3..102 are kept", or "no version is kept".
  std::string DescribeKept() const;

 private:
  void Trim();

  size_t retention_;
  StoredHistory stored_;
};

// Applies `entry`'s change to `content`.
void ApplyEntry(const HistoryEntry& entry, api::ResourceMap* content);

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_CONFIG_HISTORY_H_
