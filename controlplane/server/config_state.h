// ConfigState: the declared state held by sluice-control, its version, and
// the changes to it.
//
// Applies and deletes are serialized, validated against the whole resulting
// state with the shared validation library (plus, for the resources an apply
// adds or changes, the rules about the moment of the change: a certificate
// must be valid now), checked against the size a proxy can receive (the whole
// config in one message), made durable through the ConfigStore (the data
// dir's files, or etcd shared with other replicas), and only then
// published: an acknowledged change is on disk. Each change that alters
// something gets the next version. Readers get immutable snapshots and never
// block a writer for long.
//
// Every accepted version is also kept in the history (ConfigHistory, stored
// in the store with the state, the history first): its time, the
// author and message the client gave (not authenticated), and its change.
// Rollback makes a new version with an old version's content. A change can
// be made conditional on the current version (ChangeContext::if_version).
//
// Canary rollouts split the fleet: ApplyCanary commits a candidate version
// that only the proxies a CanarySplit selects receive (SnapshotFor); the
// others keep the version before it (the stable one). EndCanary ends the
// split with a new version every proxy receives: the candidate's content
// (promote) or the stable one's (roll back). While a split is in place every
// other change is refused (FAILED_PRECONDITION naming the rollout), so the
// stable version is always the one before the candidate.
//
// The store has an identity, a random id made when the data dir is first used
// and kept in it: versions compare only within one store.
//
// The store may be shared by several control-plane replicas (EtcdStore): a
// change is then committed only if no replica committed a version after the
// one it was based on (else ABORTED, nothing changed), and the versions other
// replicas commit become this one's current version (with their history) as
// the store reports them, and are published like a local change. Canary
// rollouts are refused on a shared store (the split lives in one replica).
//
// Thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_CONFIG_STATE_H_
#define SLUICE_CONTROLPLANE_SERVER_CONFIG_STATE_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "api/discovery.h"
#include "api/resource.h"
#include "api/validation.h"
#include "controlplane/server/config_history.h"
#include "controlplane/store/config_store.h"
#include "controlplane/store/file_store.h"

namespace sluice::controlplane {

// On a refusal whose change was valid but changes nothing (a canary apply of
// what is already current): counted as `unchanged`, not as a conflict.
inline constexpr char kNothingToChangePayload[] = "sluice.dev/nothing-to-change";

// One version of the state; shared, immutable.
struct Snapshot {
  uint64_t version = 0;
  api::ResourceMap resources;
  std::map<api::ResourceId, uint64_t> hashes;  // api::ContentHash per resource
  int64_t config_bytes = 0;                     // ConfigBytes(resources)
  // The encoded size of each resource (ByteSizeLong), kept so that a change
  // measures only what it adds or changes.
  std::map<api::ResourceId, int64_t> sizes;
  // The RE2 program size of each resource's regular expressions
  // (api::RegexProgramSizeOf) and their sum, for the config-wide bound
  // api::kMaxConfigRegexProgramSize.
  std::map<api::ResourceId, int64_t> regex_sizes;
  int64_t regex_total = 0;
};

// Who asks for a change and on what condition.
struct ChangeContext {
  // Recorded in the history as given: the admin API passes the token's name
  // with --require-tokens, else what the client says (nothing checks it).
  std::string author;
  std::string message;
  // Non-zero: the change is refused with ABORTED unless this is the current
  // version.
  uint64_t if_version = 0;
};

// A canary rollout's id: "r" and its candidate version.
inline std::string RolloutIdFor(uint64_t candidate_version) {
  return absl::StrCat("r", candidate_version);
}

// Which proxies run a canary rollout's candidate.
struct CanarySplit {
  std::string rollout_id;  // set by ApplyCanary (RolloutIdFor)
  std::string group;               // non-empty: every proxy of this node group
  std::set<std::string> node_ids;  // and these proxies

  bool Selects(const std::string& node_id, const std::string& node_group) const {
    return (!group.empty() && node_group == group) || node_ids.count(node_id) > 0;
  }
};

class ConfigState {
 public:
  // The time an apply happens at; tests pass a fake.
  using Clock = std::function<absl::Time()>;

  // Restores the state from `store`; a store without an id (new, or written
  // by an older build) gets one, saved at once. `max_config_bytes` bounds
  // ConfigBytes() of every change (at most api::kMaxConfigBytes).
  // `history_versions` (>= 1) is how many versions the history keeps.
  static absl::StatusOr<std::unique_ptr<ConfigState>> Create(
      std::unique_ptr<ConfigStore> store, Clock clock = &absl::Now,
      int64_t max_config_bytes = api::kMaxConfigBytes,
      size_t history_versions = kDefaultHistoryVersions);
  // With the data dir's files (FileConfigStore).
  static absl::StatusOr<std::unique_ptr<ConfigState>> Create(
      std::unique_ptr<FileStore> store, Clock clock = &absl::Now,
      int64_t max_config_bytes = api::kMaxConfigBytes,
      size_t history_versions = kDefaultHistoryVersions);
  // Stops the store's callbacks before anything else goes.
  ~ConfigState();

  struct ChangeResult {
    uint64_t version = 0;  // the version after the change
    api::StateDiff diff;
    // Non-empty: the change is stored and published, but the operator should
    // know something (the data dir's fsync after the rename failed).
    std::string warning;
  };

  // RESOURCE_EXHAUSTED when `resources` alone encode past max_config_bytes
  // (and past the config's current size, which a lowered limit may have
  // left over it): no config holding them could be stored. Cheap (no
  // validation), so an apply can be refused before Apply copies and checks
  // it. Consumers are not counted: their keys are stored sealed, in another
  // size.
  absl::Status CheckResourcesFit(
      const google::protobuf::RepeatedPtrField<api::Resource>& resources) const;

  // Creates or replaces `resources` as one change. INVALID_ARGUMENT when the
  // request or the resulting state is invalid; RESOURCE_EXHAUSTED when the
  // config would grow past max_config_bytes; UNAVAILABLE when it cannot be
  // stored (on a shared store: a change based on a version another replica
  // has replaced is made again on top of the store's version, unless it
  // names context.if_version: ABORTED then; RESOURCE_EXHAUSTED when the
  // store cannot take a request that big; UNAVAILABLE with the store's
  // reason when it cannot be reached).
  // Nothing is stored then.
  // Consumers are sealed first (api::SealCredentials: plain API keys and
  // passwords become hashes), so neither the store, a dry run's diff nor a
  // proxy ever sees a plain credential. A new or changed password costs one
  // PBKDF2 hash, and an unchanged one a verification, under the write lock.
  // ABORTED when `context.if_version` is set and not current.
  absl::StatusOr<ChangeResult> Apply(const std::vector<api::Resource>& resources,
                                     bool dry_run, const ChangeContext& context = {});
  // The same, taking the resources over (no copy of a big request).
  absl::StatusOr<ChangeResult> Apply(std::vector<api::Resource>&& resources, bool dry_run,
                                     const ChangeContext& context = {});
  // NOT_FOUND when absent; FAILED_PRECONDITION when something refers to it.
  absl::StatusOr<ChangeResult> Delete(const api::ResourceId& id, bool dry_run,
                                      const ChangeContext& context = {});
  // Several resources removed in one version (ids listed twice count once):
  // NOT_FOUND naming each that is absent (nothing removed); FAILED_PRECONDITION
  // when what remains refers to one (they may refer to each other).
  absl::StatusOr<ChangeResult> DeleteAll(const std::vector<api::ResourceId>& ids, bool dry_run,
                                         const ChangeContext& context = {});
  // Makes the content of `version` current again, as a new version: its
  // resources added or changed back, the others removed. Checked like an
  // apply (the resources it brings back against the rules of now, e.g. a
  // certificate's validity); FAILED_PRECONDITION with the reason when
  // `version` is no longer kept or its content does not pass.
  absl::StatusOr<ChangeResult> Rollback(uint64_t version, bool dry_run,
                                        const ChangeContext& context = {});

  // Commits `resources` as Apply does (never a dry run) as the candidate of
  // a canary rollout: only the proxies `split` selects receive it
  // (SnapshotFor), the others stay on the version before it.
  // `before_commit(stable, candidate)` runs under the write lock once the
  // change is validated and before anything is stored (the rollout records
  // itself durably there); its error refuses the change. A change that alters
  // nothing is refused (FAILED_PRECONDITION): there is nothing to verify.
  absl::StatusOr<ChangeResult> ApplyCanary(
      const std::vector<api::Resource>& resources, const CanarySplit& split,
      const ChangeContext& context,
      const std::function<absl::Status(uint64_t stable, uint64_t candidate)>& before_commit);
  // Ends the split of rollout `rollout_id` with a new version that every
  // proxy receives, recorded in the history with `context` (the decision):
  // the candidate's content when `promote`, else the stable version's (not
  // checked against the rules of now: the rest of the fleet runs it).
  // FAILED_PRECONDITION when that rollout does not split the fleet.
  absl::StatusOr<ChangeResult> EndCanary(const std::string& rollout_id, bool promote,
                                         const ChangeContext& context);
  // Makes the content of kept `version` current as a new version even when
  // nothing differs, without the apply-time rules (a restart ends an
  // interrupted rollout with it: see RolloutManager). Refused during a split.
  absl::StatusOr<ChangeResult> Restore(uint64_t version, const ChangeContext& context);

  // The version the proxy `node_id` of node group `group` is to run: the
  // current one, or during a canary rollout the stable one unless the proxy
  // is a canary.
  std::shared_ptr<const Snapshot> SnapshotFor(const std::string& node_id,
                                              const std::string& group) const;
  // FAILED_PRECONDITION when the store is shared by several control planes:
  // a split lives in one replica's memory, so canary rollouts are refused.
  absl::Status CheckCanarySupported() const;
  // The split in place, if any.
  std::optional<CanarySplit> split() const;

  std::shared_ptr<const Snapshot> Current() const;
  // The kept versions; immutable, newest last.
  std::shared_ptr<const ConfigHistory> History() const;
  // The store's identity; fixed for this object's lifetime.
  const std::string& store_id() const { return store_id_; }
  // The store may hold a newer version than this one (ConfigStore::Resync).
  void ResyncStore() { store_->Resync(); }
  bool shared_store() const { return shared_store_; }
  // Where the state is kept, for log lines (ConfigStore::Describe).
  const std::string& store_description() const { return store_description_; }
  int64_t max_config_bytes() const { return max_config_bytes_; }

  // `callback` runs after every new version (with false) and on Shutdown()
  // (with true), on the thread that made the change; it must be quick and
  // must not call back into this object. Returns an id for Unsubscribe().
  int Subscribe(std::function<void(bool shutting_down)> callback);
  void Unsubscribe(int id);
  size_t subscriber_count() const;

  // Wakes every subscriber for the last time; later changes fail.
  void Shutdown();
  bool shutting_down() const;

 private:
  ConfigState(std::unique_ptr<ConfigStore> store, std::shared_ptr<const Snapshot> initial,
              std::shared_ptr<const ConfigHistory> history, Clock clock, std::string store_id,
              int64_t max_config_bytes);
  // ABORTED, naming the current version and who made it when, unless
  // `if_version` is 0 or current.
  absl::Status CheckIfVersion(uint64_t if_version) const;
  // FAILED_PRECONDITION naming the rollout while the fleet is split.
  absl::Status CheckNoSplit() const;
  // What a change knows of its resulting state without comparing or
  // hashing it whole: the hash and size of every resource, and which of the
  // resources it names differ from the base (the others it names, and all
  // it does not name, are the base's).
  struct NextDigest {
    std::map<api::ResourceId, uint64_t> hashes;
    std::map<api::ResourceId, int64_t> sizes;
    std::map<api::ResourceId, int64_t> regex_sizes;
    std::set<api::ResourceId> named;
    std::set<api::ResourceId> changed;
    // Added or changed: the resources whose own rules Commit checks (the
    // rest passed them when they were applied).
    std::set<api::ResourceId> validate;
  };
  // api::ComputeDiff(from, to) where `to` is what Merge made with `digest`.
  static api::StateDiff DiffOf(const api::ResourceMap& from, const api::ResourceMap& to,
                               const NextDigest& digest);
  // Checks `resources` (sealed in place) and merges them into the
  // resources of `base`: the base's resources that `resources` replace are
  // not copied, and those that stay keep their hash and size.
  absl::StatusOr<api::ResourceMap> Merge(std::vector<api::Resource>&& resources,
                                         const Snapshot& base,
                                         std::vector<api::ValidationError>* apply_time_errors,
                                         NextDigest* digest);
  // `apply_time_errors`: from api::ValidateAtApplyTime, reported together
  // with the errors of the resulting state. `refusal` non-empty: those
  // errors are FAILED_PRECONDITION under that heading (else INVALID_ARGUMENT).
  // What a commit does to the split (none: nothing): put `split` in place
  // with the version before as the stable one, or end it.
  struct SplitChange {
    enum { kKeep, kStart, kEnd } action = kKeep;
    CanarySplit split;
    std::function<absl::Status(uint64_t stable, uint64_t candidate)> before_commit;
  };
  // `force`: a new version even when nothing changed (a decision to record).
  // `digest` (may be null: everything is compared and hashed) comes from
  // Merge; with it, each resource's own rules run only for those it names
  // in `validate`, as with `validate` (a delete, the end of a canary
  // split: none); with neither, for every resource (a restore or rollback
  // is held to today's rules). Before,
  // every apply checked every stored resource again: 60 stored regexes
  // that take 0.2 s each to compile made every apply take 10 s and more.
  // The rules across resources always run over the whole state.
  absl::StatusOr<ChangeResult> Commit(api::ResourceMap next, bool dry_run,
                                      const ChangeContext& context,
                                      const std::string& refusal,
                                      std::vector<api::ValidationError> apply_time_errors = {},
                                      const SplitChange* split_change = nullptr, bool force = false,
                                      const NextDigest* digest = nullptr,
                                      const std::set<api::ResourceId>* validate = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void Notify(bool shutting_down);
  // A version the shared store holds (another replica's commit): current
  // when newer than the current one. From the store's watch thread.
  void Adopt(StoredState stored, StoredHistory stored_history);
  void AdoptLocked(StoredState stored, StoredHistory stored_history)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Runs `attempt`; on a shared store, when it is ABORTED because another
  // replica committed a version this one had not seen yet and the change
  // names no if_version, takes that version from the store and tries again
  // (a few times).
  absl::StatusOr<ChangeResult> RetryIfStale(
      const ChangeContext& context, const std::function<absl::StatusOr<ChangeResult>()>& attempt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Takes `resources` only on the last try of RetryIfStale (a stale try
  // copies them).
  absl::StatusOr<ChangeResult> ApplyLocked(std::vector<api::Resource> resources,
                                           bool dry_run, const ChangeContext& context)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::StatusOr<ChangeResult> DeleteLocked(const std::vector<api::ResourceId>& ids, bool dry_run,
                                            const ChangeContext& context)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::StatusOr<ChangeResult> RollbackLocked(uint64_t version, bool dry_run,
                                              const ChangeContext& context)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  const Clock clock_;
  const std::string store_id_;
  const int64_t max_config_bytes_;
  const std::string store_description_;
  const bool shared_store_;

  absl::Mutex write_mu_;  // serializes changes, store writes and adoptions
  absl::BitGen retry_bitgen_ ABSL_GUARDED_BY(write_mu_);  // RetryIfStale's pauses
  // Not guarded: reset (stopping its callbacks) by the destructor alone.
  std::unique_ptr<ConfigStore> store_;

  mutable absl::Mutex mu_;  // guards the fields below; held only briefly
  std::shared_ptr<const Snapshot> current_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const ConfigHistory> history_ ABSL_GUARDED_BY(mu_);
  // During a canary rollout: who runs current_, and what the others run.
  std::optional<CanarySplit> split_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const Snapshot> stable_ ABSL_GUARDED_BY(mu_);
  std::map<int, std::function<void(bool)>> subscribers_ ABSL_GUARDED_BY(mu_);
  int next_subscriber_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
};

// `reuse` (may be null): a snapshot whose regular expressions' sizes are
// taken for the resources it has with the same hash (each other one's
// regular expressions are compiled to count them).
std::shared_ptr<const Snapshot> MakeSnapshot(uint64_t version, api::ResourceMap resources,
                                             const Snapshot* reuse = nullptr);

// The encoded size of the DiscoveryResponse that carries every resource of
// `resources`: what a proxy that holds nothing receives in one message.
int64_t ConfigBytes(const api::ResourceMap& resources);

// "version 7 (2030-04-11T10:00:00Z, by ana@build-1: \"raise the timeout\", +0 ~1 -0)":
// how errors name a kept version.
std::string DescribeVersion(const HistoryEntry& entry);

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_CONFIG_STATE_H_
