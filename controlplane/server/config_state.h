// ConfigState: the declared state held by sluice-control, its version, and
// the changes to it.
//
// Applies and deletes are serialized, validated against the whole resulting
// state with the shared validation library (plus, for the resources an apply
// adds or changes, the rules about the moment of the change: a certificate
// must be valid now), made durable through the FileStore, and only then
// published: an acknowledged change is on disk. Each
// change that alters something gets the next version. Readers get immutable
// snapshots and never block a writer for long.
//
// Thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_CONFIG_STATE_H_
#define SLUICE_CONTROLPLANE_SERVER_CONFIG_STATE_H_

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "api/resource.h"
#include "api/validation.h"
#include "controlplane/store/file_store.h"

namespace sluice::controlplane {

// One version of the state; shared, immutable.
struct Snapshot {
  uint64_t version = 0;
  api::ResourceMap resources;
  std::map<api::ResourceId, uint64_t> hashes;  // api::ContentHash per resource
};

class ConfigState {
 public:
  // The time an apply happens at; tests pass a fake.
  using Clock = std::function<absl::Time()>;

  // Restores the state from `store`.
  static absl::StatusOr<std::unique_ptr<ConfigState>> Create(
      std::unique_ptr<FileStore> store, Clock clock = &absl::Now);

  struct ChangeResult {
    uint64_t version = 0;  // the version after the change
    api::StateDiff diff;
  };

  // Creates or replaces `resources` as one change. INVALID_ARGUMENT when the
  // request or the resulting state is invalid; nothing is stored then.
  absl::StatusOr<ChangeResult> Apply(const std::vector<api::Resource>& resources,
                                     bool dry_run);
  // NOT_FOUND when absent; FAILED_PRECONDITION when something refers to it.
  absl::StatusOr<ChangeResult> Delete(const api::ResourceId& id, bool dry_run);

  std::shared_ptr<const Snapshot> Current() const;

  // `callback` runs after every new version (with false) and on Shutdown()
  // (with true), on the thread that made the change; it must be quick and
  // must not call back into this object. Returns an id for Unsubscribe().
  int Subscribe(std::function<void(bool shutting_down)> callback);
  void Unsubscribe(int id);

  // Wakes every subscriber for the last time; later changes fail.
  void Shutdown();
  bool shutting_down() const;

 private:
  ConfigState(std::unique_ptr<FileStore> store, std::shared_ptr<const Snapshot> initial,
              Clock clock);
  // `apply_time_errors`: from api::ValidateAtApplyTime, reported together
  // with the errors of the resulting state.
  absl::StatusOr<ChangeResult> Commit(api::ResourceMap next, bool dry_run,
                                      bool is_delete, const api::ResourceId* deleted,
                                      std::vector<api::ValidationError> apply_time_errors = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void Notify(bool shutting_down);

  const Clock clock_;

  absl::Mutex write_mu_;  // serializes changes and store writes
  std::unique_ptr<FileStore> store_ ABSL_GUARDED_BY(write_mu_);

  mutable absl::Mutex mu_;  // guards the fields below; held only briefly
  std::shared_ptr<const Snapshot> current_ ABSL_GUARDED_BY(mu_);
  std::map<int, std::function<void(bool)>> subscribers_ ABSL_GUARDED_BY(mu_);
  int next_subscriber_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
};

std::shared_ptr<const Snapshot> MakeSnapshot(uint64_t version, api::ResourceMap resources);

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_CONFIG_STATE_H_
