#include "controlplane/server/config_state.h"

#include <set>

#include "absl/random/distributions.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "api/discovery.h"
#include "api/regex_limit.h"
#include "api/credentials.h"
#include "api/validation.h"
#include "common/log.h"
#include "controlplane/store/file_config_store.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/message_differencer.h"

namespace sluice::controlplane {

namespace {

// The DiscoveryResponse fields other than the resources: version, nonce,
// store id (and their tags), with room to spare.
constexpr int64_t kResponseOverheadBytes = 128;

// One resource's share of ConfigBytes: tag of `resources` (field 3),
// length, message.
int64_t ResourceBytes(size_t size) {
  return 1 + google::protobuf::io::CodedOutputStream::VarintSize64(size) +
         static_cast<int64_t>(size);
}

// Whether `a` and `b` encode alike (deterministically).
bool SameEncoding(const api::Resource& a, const api::Resource& b) {
  auto encode = [](const api::Resource& r) {
    std::string bytes;
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    r.SerializeToCodedStream(&coded);
    coded.Trim();
    return bytes;
  };
  return a.ByteSizeLong() == b.ByteSizeLong() && encode(a) == encode(b);
}

}  // namespace

api::StateDiff ConfigState::DiffOf(const api::ResourceMap& from, const api::ResourceMap& to,
                                   const NextDigest& digest) {
  // What Merge found, instead of comparing again.
  return api::ComputeDiff(
      from, to, [&digest](const api::ResourceId& id, const api::Resource&,
                          const api::Resource&) { return digest.changed.count(id) == 0; });
}

int64_t ConfigBytes(const api::ResourceMap& resources) {
  int64_t bytes = kResponseOverheadBytes;
  for (const auto& [id, resource] : resources) bytes += ResourceBytes(resource.ByteSizeLong());
  return bytes;
}

std::string DescribeVersion(const HistoryEntry& entry) {
  if (entry.time == absl::InfinitePast() && entry.message.empty()) {
    return absl::StrCat("version ", entry.version, " (made before history was kept)");
  }
  std::string out = absl::StrCat(
      "version ", entry.version, " (",
      entry.time == absl::InfinitePast()
          ? std::string("time unknown")
          : absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", entry.time, absl::UTCTimeZone()),
      ", by ",
      // Another client's text, in an error message: control bytes escaped,
      // so it cannot make lines of its own.
      entry.author.empty() ? "unknown" : absl::CHexEscape(entry.author));
  if (!entry.message.empty()) absl::StrAppend(&out, ": \"", absl::CHexEscape(entry.message), "\"");
  absl::StrAppend(&out, ", +", entry.added.size(), " ~", entry.changed.size(), " -",
                  entry.removed.size(), ")");
  return out;
}

namespace {

// The regular expressions' program size per resource of `resources`
// (`hashes`: theirs), taken from `reuse` for the resources it has with the
// same hash.
std::map<api::ResourceId, int64_t> RegexSizes(const api::ResourceMap& resources,
                                              const std::map<api::ResourceId, uint64_t>& hashes,
                                              const Snapshot* reuse) {
  std::map<api::ResourceId, int64_t> sizes;
  for (const auto& [id, resource] : resources) {
    if (reuse != nullptr) {
      auto hash = hashes.find(id);
      auto old_hash = reuse->hashes.find(id);
      auto old = reuse->regex_sizes.find(id);
      if (hash != hashes.end() && old_hash != reuse->hashes.end() &&
          hash->second == old_hash->second && old != reuse->regex_sizes.end()) {
        sizes[id] = old->second;
        continue;
      }
    }
    sizes[id] = api::RegexProgramSizeOf(resource);
  }
  return sizes;
}

int64_t Sum(const std::map<api::ResourceId, int64_t>& sizes) {
  int64_t total = 0;
  for (const auto& [id, size] : sizes) total += size;
  return total;
}

std::map<api::ResourceId, uint64_t> ContentHashes(const api::ResourceMap& resources) {
  std::map<api::ResourceId, uint64_t> hashes;
  for (const auto& [id, resource] : resources) hashes[id] = api::ContentHash(resource);
  return hashes;
}

// `hashes` and `regex_sizes`: the resources', computed already.
std::shared_ptr<const Snapshot> MakeSnapshotOf(uint64_t version, api::ResourceMap resources,
                                               std::map<api::ResourceId, uint64_t> hashes,
                                               std::map<api::ResourceId, int64_t> regex_sizes) {
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->version = version;
  for (const auto& [id, resource] : resources) {
    snapshot->sizes[id] = static_cast<int64_t>(resource.ByteSizeLong());
  }
  snapshot->hashes = std::move(hashes);
  snapshot->regex_total = Sum(regex_sizes);
  snapshot->regex_sizes = std::move(regex_sizes);
  snapshot->config_bytes = ConfigBytes(resources);
  snapshot->resources = std::move(resources);
  return snapshot;
}

}  // namespace

std::shared_ptr<const Snapshot> MakeSnapshot(uint64_t version, api::ResourceMap resources,
                                             const Snapshot* reuse) {
  std::map<api::ResourceId, uint64_t> hashes = ContentHashes(resources);
  std::map<api::ResourceId, int64_t> regex_sizes = RegexSizes(resources, hashes, reuse);
  return MakeSnapshotOf(version, std::move(resources), std::move(hashes), std::move(regex_sizes));
}

absl::StatusOr<std::unique_ptr<ConfigState>> ConfigState::Create(
    std::unique_ptr<FileStore> store, Clock clock, int64_t max_config_bytes,
    size_t history_versions) {
  return Create(std::make_unique<FileConfigStore>(std::move(store)), std::move(clock),
                max_config_bytes, history_versions);
}

absl::StatusOr<std::unique_ptr<ConfigState>> ConfigState::Create(
    std::unique_ptr<ConfigStore> store, Clock clock, int64_t max_config_bytes,
    size_t history_versions) {
  if (history_versions < 1) {
    return absl::InvalidArgumentError("the history must keep at least 1 version");
  }
  if (max_config_bytes <= 0 || max_config_bytes > api::kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the config size limit must be 1..",
                                                   api::kMaxConfigBytes, " bytes, got ",
                                                   max_config_bytes));
  }
  absl::StatusOr<StoredState> stored = store->Load();
  if (!stored.ok()) return stored.status();
  // A stored state was valid when it was accepted; if this build's rules
  // reject it, say so but keep serving it: the operator fixes it with apply.
  if (absl::Status status = api::CheckState(stored->resources); !status.ok()) {
    SLUICE_LOG(kWarning, "the stored state does not pass this build's validation:\n",
               status.message());
  }
  absl::StatusOr<StoredHistory> stored_history = store->LoadHistory();
  if (!stored_history.ok()) return stored_history.status();
  // The history is written before the state, so a crash leaves it at most
  // one version ahead (the first apply's version 1 with no state yet: it is
  // dropped, as documented). Further ahead with no state, the state is
  // missing (state.db deleted, restored without it): starting empty, the
  // first apply would overwrite a history that could rebuild every version.
  if (stored->version == 0 && !stored_history->entries.empty() &&
      stored_history->entries.back().version > 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        store->Describe(), " has a history (versions ", stored_history->entries.front().version,
        "..", stored_history->entries.back().version,
        ") but no state: the state is missing (state.db in a data dir). sluice-control will not "
        "start on it, since the first change would overwrite that history; restore the state "
        "from a backup, or move the history away (history.db and history.log) to start a new "
        "store"));
  }
  if (stored->version == 0 && !stored_history->entries.empty()) {
    // Version 1 alone: a crash during the first apply, or state.db lost
    // after it was answered. The two look alike; say what is dropped.
    SLUICE_LOG(kWarning, store->Describe(),
               " has a history of version 1 but no state: taken as a crash during the first "
               "apply, and dropped (the next apply writes version 1 anew). If that apply was "
               "answered, state.db is missing: stop, and restore it from a backup");
  }
  if (stored->store_id.empty()) {
    // A new data dir (or one written before stores had ids): from now on its
    // versions are told apart from those of any other store.
    stored->store_id = NewStoreId();
    bool replaced = false;
    absl::Status saved = store->RecordStoreId(*stored, &replaced);
    if (!saved.ok() && !replaced) {
      return absl::UnavailableError(
          absl::StrCat("cannot record the new store id: ", saved.message()));
    }
    if (!saved.ok()) SLUICE_LOG(kWarning, saved.message());
    SLUICE_LOG(kInfo, "new store id ", stored->store_id, " in ", store->Describe());
  }
  std::string history_warning;
  auto history = std::make_shared<const ConfigHistory>(
      ConfigHistory::Restore(std::move(*stored_history), history_versions, stored->version,
                             stored->resources, &history_warning));
  if (!history_warning.empty()) SLUICE_LOG(kWarning, history_warning);
  auto snapshot = MakeSnapshot(stored->version, std::move(stored->resources));
  if (snapshot->config_bytes > max_config_bytes) {
    SLUICE_LOG(kWarning, "the stored config is ", snapshot->config_bytes,
               " bytes, over the limit of ", max_config_bytes,
               " bytes: proxies may not receive it; changes that do not shrink it are refused");
  }
  std::unique_ptr<ConfigState> state(new ConfigState(std::move(store), snapshot,
                                                     std::move(history), std::move(clock),
                                                     std::move(stored->store_id),
                                                     max_config_bytes));
  ConfigState* raw = state.get();
  raw->store_->Watch([raw](StoredState version, StoredHistory version_history) {
    raw->Adopt(std::move(version), std::move(version_history));
  });
  return state;
}

ConfigState::ConfigState(std::unique_ptr<ConfigStore> store,
                         std::shared_ptr<const Snapshot> initial,
                         std::shared_ptr<const ConfigHistory> history, Clock clock,
                         std::string store_id, int64_t max_config_bytes)
    : clock_(std::move(clock)),
      store_id_(std::move(store_id)),
      max_config_bytes_(max_config_bytes),
      store_description_(store->Describe()),
      shared_store_(store->shared()),
      store_(std::move(store)),
      current_(std::move(initial)),
      history_(std::move(history)) {}

ConfigState::~ConfigState() { store_.reset(); }

absl::StatusOr<ConfigState::ChangeResult> ConfigState::RetryIfStale(
    const ChangeContext& context,
    const std::function<absl::StatusOr<ChangeResult>()>& attempt) {
  // Tries: each one loses only to a version committed meanwhile. Replicas
  // applying at once in a loop lost three in a row (2 of 60 applies
  // failed): ten, after a random pause that grows, so racing replicas
  // fall out of step.
  constexpr int kTries = 10;
  for (int i = 1;; ++i) {
    if (i > 1) {
      absl::SleepFor(absl::Milliseconds(absl::Uniform<int>(retry_bitgen_, 0, 10 * i)));
    }
    absl::StatusOr<ChangeResult> result = attempt();
    if (result.ok() || result.status().code() != absl::StatusCode::kAborted ||
        context.if_version != 0 || !shared_store_ || i == kTries) {
      return result;
    }
    // Another replica committed a version this one had not heard of yet:
    // take it now, and make the change on top of it.
    absl::StatusOr<StoredState> latest = store_->Load();
    if (!latest.ok()) return result;
    absl::StatusOr<StoredHistory> latest_history = store_->LoadHistory();
    if (!latest_history.ok()) return result;
    AdoptLocked(std::move(*latest), std::move(*latest_history));
  }
}

void ConfigState::Adopt(StoredState stored, StoredHistory stored_history) {
  absl::MutexLock write_lock(&write_mu_);
  AdoptLocked(std::move(stored), std::move(stored_history));
}

void ConfigState::AdoptLocked(StoredState stored, StoredHistory stored_history) {
  if (shutting_down()) return;
  if (stored.store_id != store_id_) {
    SLUICE_LOG(kError, "ignoring version ", stored.version, " of store ", stored.store_id,
               " in ", store_description_, ": this control plane serves store ", store_id_);
    return;
  }
  std::shared_ptr<const Snapshot> base = Current();
  if (stored.version <= base->version) return;
  std::string warning;
  auto history = std::make_shared<const ConfigHistory>(ConfigHistory::Restore(
      std::move(stored_history), History()->retention(), stored.version, stored.resources,
      &warning));
  if (!warning.empty()) SLUICE_LOG(kWarning, warning);
  api::StateDiff diff = api::ComputeDiff(base->resources, stored.resources);
  auto snapshot = MakeSnapshot(stored.version, std::move(stored.resources), base.get());
  {
    absl::MutexLock lock(&mu_);
    current_ = std::move(snapshot);
    history_ = std::move(history);
  }
  SLUICE_LOG(kInfo, "version ", stored.version, " from another replica (", store_description_,
             "): ", diff.added.size(), " added, ", diff.changed.size(), " changed, ",
             diff.removed.size(), " removed");
  Notify(false);
}

std::shared_ptr<const Snapshot> ConfigState::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

std::shared_ptr<const ConfigHistory> ConfigState::History() const {
  absl::MutexLock lock(&mu_);
  return history_;
}

namespace {

// Who made a change and why, as kept in the history.
absl::Status CheckChangeContext(const ChangeContext& context) {
  if (context.author.size() > api::kMaxAuthorBytes) {
    return absl::InvalidArgumentError(absl::StrCat("author is ", context.author.size(),
                                                   " bytes; at most ", api::kMaxAuthorBytes,
                                                   " are kept; nothing changed"));
  }
  if (context.message.size() > api::kMaxChangeMessageBytes) {
    return absl::InvalidArgumentError(absl::StrCat("message is ", context.message.size(),
                                                   " bytes; at most ", api::kMaxChangeMessageBytes,
                                                   " are kept; nothing changed"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ConfigState::CheckIfVersion(uint64_t if_version) const {
  const uint64_t current = Current()->version;
  if (if_version == 0 || if_version == current) return absl::OkStatus();
  std::string made = absl::StrCat("version ", current);
  if (const HistoryEntry* entry = History()->Find(current); entry != nullptr) {
    made = DescribeVersion(*entry);
  }
  if (if_version > current) {
    return absl::AbortedError(absl::StrCat("--if-version ", if_version,
                                           " is ahead of this store: the current version is ",
                                           made, "; nothing changed"));
  }
  return absl::AbortedError(absl::StrCat("the config changed since version ", if_version,
                                         ": the current version is ", made,
                                         "; nothing changed"));
}

absl::Status ConfigState::CheckNoSplit() const {
  absl::MutexLock lock(&mu_);
  if (!split_.has_value()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "canary rollout ", split_->rollout_id, " is in progress (version ", current_->version,
      " on the canaries, ", stable_->version,
      " on the rest; sluicectl rollout status); promote or abort it first; nothing changed"));
}

absl::StatusOr<api::ResourceMap> ConfigState::Merge(
    std::vector<api::Resource>&& resources, const Snapshot& base,
    std::vector<api::ValidationError>* apply_time_errors, NextDigest* digest) {
  api::ResourceMap next;
  std::vector<std::string> errors;
  const absl::Time now = clock_();
  for (size_t i = 0; i < resources.size(); ++i) {
    api::Resource& resource = resources[i];
    if (resource.kind_case() == api::Resource::KIND_NOT_SET) {
      errors.push_back(absl::StrCat("resources[", i, "]: has no kind"));
      continue;
    }
    api::ResourceId id = api::IdOf(resource);
    if (!digest->named.insert(id).second) {
      errors.push_back(absl::StrCat(api::Describe(id), ": appears twice in one apply"));
      continue;
    }
    auto stored = base.resources.find(id);
    // A Consumer's plain keys and password become hashes here, before
    // anything compares, validates, stores or pushes it. An unchanged
    // password keeps its stored hash, so re-applying a file is no change.
    api::SealCredentials(&resource,
                         stored != base.resources.end() ? &stored->second : nullptr);
    // Unchanged means the same deterministic encoding, which for this
    // config (no floating point, no map fields) is what
    // MessageDifferencer::Equals decides: the stored hash first, and the
    // two encodings only when the hashes agree.
    const uint64_t hash = api::ContentHash(resource);
    bool same = false;
    if (stored != base.resources.end()) {
      auto base_hash = base.hashes.find(id);
      same = base_hash != base.hashes.end() && base_hash->second == hash &&
             SameEncoding(stored->second, resource);
    }
    // Only what this apply adds or changes: re-applying an unchanged Secret
    // whose certificate has expired since does not block other changes.
    if (!same) {
      api::ValidateAtApplyTime(resource, now, apply_time_errors);
      api::RegexProgramCount count;
      api::ValidateNewContent(resource, apply_time_errors);
      digest->regex_sizes[id] = count.total();
      if (stored != base.resources.end()) digest->changed.insert(id);
      digest->validate.insert(id);
    } else if (auto it = base.regex_sizes.find(id); it != base.regex_sizes.end()) {
      digest->regex_sizes[id] = it->second;
    } else {
      digest->regex_sizes[id] = api::RegexProgramSizeOf(resource);
    }
    digest->hashes[id] = hash;
    // ContentHash has just serialized it: its size is cached.
    digest->sizes[id] = static_cast<int64_t>(resource.GetCachedSize());
    next.emplace(std::move(id), std::move(resource));
  }
  if (!errors.empty()) {
    // As api::ToStatus bounds an answer (it travels in a gRPC status, which
    // a client refuses past 8 KiB): 150 names given twice hid the reason.
    constexpr size_t kMaxShown = 20;
    std::string message;
    for (size_t i = 0; i < errors.size() && i < kMaxShown; ++i) {
      absl::StrAppend(&message, message.empty() ? "" : "\n", errors[i]);
    }
    if (errors.size() > kMaxShown) {
      absl::StrAppend(&message, "\n... and ", errors.size() - kMaxShown, " more errors");
    }
    return absl::InvalidArgumentError(message);
  }
  // What the apply does not name stays as it is, with its hash and size.
  for (const auto& [id, resource] : base.resources) {
    if (digest->named.count(id)) continue;
    next.emplace_hint(next.end(), id, resource);
    if (auto it = base.hashes.find(id); it != base.hashes.end()) digest->hashes[id] = it->second;
    if (auto it = base.sizes.find(id); it != base.sizes.end()) digest->sizes[id] = it->second;
    if (auto it = base.regex_sizes.find(id); it != base.regex_sizes.end()) {
      digest->regex_sizes[id] = it->second;
    }
  }
  return next;
}

absl::Status ConfigState::CheckResourcesFit(
    const google::protobuf::RepeatedPtrField<api::Resource>& resources) const {
  // Each resource of an apply is in the config it makes (one resource named
  // twice is refused), so their bytes are a lower bound on that config's.
  int64_t bytes = kResponseOverheadBytes;
  for (const api::Resource& resource : resources) {
    if (resource.has_consumer()) continue;
    bytes += ResourceBytes(resource.ByteSizeLong());
  }
  if (bytes <= max_config_bytes_ || bytes <= Current()->config_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "the resources of this apply alone are ", bytes, " bytes, over the limit of ",
      max_config_bytes_,
      " bytes for the whole config (a proxy that connects receives it in one message; "
      "sluice-control --max-config-bytes); nothing changed"));
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::Apply(
    const std::vector<api::Resource>& resources, bool dry_run, const ChangeContext& context) {
  return Apply(std::vector<api::Resource>(resources), dry_run, context);
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::Apply(
    std::vector<api::Resource>&& resources, bool dry_run, const ChangeContext& context) {
  absl::MutexLock write_lock(&write_mu_);
  return RetryIfStale(context, [&] {
    // A shared store may make the change again: keep the request for it.
    return ApplyLocked(shared_store_ ? resources : std::move(resources), dry_run, context);
  });
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::ApplyLocked(
    std::vector<api::Resource> resources, bool dry_run, const ChangeContext& context) {
  // A dry run changes nothing: allowed during a rollout (its base is the
  // canaries' version, which a promote makes everyone's).
  if (absl::Status status = dry_run ? absl::OkStatus() : CheckNoSplit(); !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckChangeContext(context); !status.ok()) return status;
  if (absl::Status status = CheckIfVersion(context.if_version); !status.ok()) return status;
  std::vector<api::ValidationError> apply_time_errors;
  NextDigest digest;
  absl::StatusOr<api::ResourceMap> next =
      Merge(std::move(resources), *Current(), &apply_time_errors, &digest);
  if (!next.ok()) return next.status();
  return Commit(std::move(*next), dry_run, context, /*refusal=*/"",
                std::move(apply_time_errors), nullptr, false, &digest);
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::ApplyCanary(
    const std::vector<api::Resource>& resources, const CanarySplit& split,
    const ChangeContext& context,
    const std::function<absl::Status(uint64_t stable, uint64_t candidate)>& before_commit) {
  absl::MutexLock write_lock(&write_mu_);
  if (absl::Status status = CheckCanarySupported(); !status.ok()) return status;
  if (absl::Status status = CheckNoSplit(); !status.ok()) return status;
  if (absl::Status status = CheckChangeContext(context); !status.ok()) return status;
  if (absl::Status status = CheckIfVersion(context.if_version); !status.ok()) return status;
  std::shared_ptr<const Snapshot> base = Current();
  std::vector<api::ValidationError> apply_time_errors;
  NextDigest digest;
  absl::StatusOr<api::ResourceMap> next =
      Merge(std::vector<api::Resource>(resources), *base, &apply_time_errors, &digest);
  if (!next.ok()) return next.status();
  if (api::ComputeDiff(base->resources, *next).empty()) {
    absl::Status unchanged = absl::FailedPreconditionError(absl::StrCat(
        "the resources change nothing in version ", base->version,
        ": there is nothing for a canary to verify; nothing changed"));
    unchanged.SetPayload(kNothingToChangePayload, absl::Cord());
    return unchanged;
  }
  SplitChange change{SplitChange::kStart, split, before_commit};
  return Commit(std::move(*next), /*dry_run=*/false, context, /*refusal=*/"",
                std::move(apply_time_errors), &change, /*force=*/false, &digest);
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::EndCanary(const std::string& rollout_id,
                                                                 bool promote,
                                                                 const ChangeContext& context) {
  absl::MutexLock write_lock(&write_mu_);
  std::shared_ptr<const Snapshot> content;
  {
    absl::MutexLock lock(&mu_);
    if (!split_.has_value() || split_->rollout_id != rollout_id) {
      return absl::FailedPreconditionError(
          absl::StrCat("canary rollout ", rollout_id, " does not split the fleet"));
    }
    content = promote ? current_ : stable_;
  }
  SplitChange change{SplitChange::kEnd, {}, nullptr};
  // Both sides were applied and served: ending the split checks only the
  // rules across resources (a per-resource rule this build added must not
  // leave a rollout that can be neither promoted nor aborted).
  const std::set<api::ResourceId> none;
  return Commit(content->resources, /*dry_run=*/false, context,
                absl::StrCat("cannot end canary rollout ", rollout_id), {}, &change,
                /*force=*/true, nullptr, &none);
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::Restore(uint64_t version,
                                                               const ChangeContext& context) {
  absl::MutexLock write_lock(&write_mu_);
  if (absl::Status status = CheckNoSplit(); !status.ok()) return status;
  absl::StatusOr<api::ResourceMap> next = History()->ContentAt(version);
  if (!next.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot restore: ", next.status().message()));
  }
  return Commit(std::move(*next), /*dry_run=*/false, context,
                absl::StrCat("cannot restore version ", version), {}, nullptr, /*force=*/true);
}

std::shared_ptr<const Snapshot> ConfigState::SnapshotFor(const std::string& node_id,
                                                         const std::string& group) const {
  absl::MutexLock lock(&mu_);
  if (split_.has_value() && !split_->Selects(node_id, group)) return stable_;
  return current_;
}

absl::Status ConfigState::CheckCanarySupported() const {
  if (!shared_store_) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "canary rollouts are not supported with a store shared by several control planes (",
      store_description_,
      "): the split would live in one replica only; apply without --canary; nothing changed"));
}

std::optional<CanarySplit> ConfigState::split() const {
  absl::MutexLock lock(&mu_);
  return split_;
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::Delete(
    const api::ResourceId& id, bool dry_run, const ChangeContext& context) {
  return DeleteAll({id}, dry_run, context);
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::DeleteAll(
    const std::vector<api::ResourceId>& ids, bool dry_run, const ChangeContext& context) {
  absl::MutexLock write_lock(&write_mu_);
  return RetryIfStale(context, [&] { return DeleteLocked(ids, dry_run, context); });
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::DeleteLocked(
    const std::vector<api::ResourceId>& ids, bool dry_run, const ChangeContext& context) {
  // A dry run changes nothing: allowed during a rollout (its base is the
  // canaries' version, which a promote makes everyone's).
  if (absl::Status status = dry_run ? absl::OkStatus() : CheckNoSplit(); !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckChangeContext(context); !status.ok()) return status;
  if (absl::Status status = CheckIfVersion(context.if_version); !status.ok()) return status;
  if (ids.empty()) return absl::InvalidArgumentError("nothing to delete");
  std::shared_ptr<const Snapshot> base = Current();
  std::vector<std::string> absent;
  std::set<api::ResourceId> removed;
  for (const api::ResourceId& id : ids) {
    if (!removed.insert(id).second) continue;
    if (!base->resources.count(id)) absent.push_back(api::Describe(id));
  }
  if (!absent.empty()) {
    constexpr size_t kMaxShown = 20;  // as api::ToStatus bounds an answer
    const size_t more = absent.size() > kMaxShown ? absent.size() - kMaxShown : 0;
    absent.resize(absent.size() - more);
    return absl::NotFoundError(absl::StrCat(absl::StrJoin(absent, ", "),
                                            more > 0 ? absl::StrCat(" and ", more, " more") : "",
                                            absent.size() + more == 1 ? " does" : " do",
                                            " not exist; nothing deleted"));
  }
  api::ResourceMap next = base->resources;
  for (const api::ResourceId& id : removed) next.erase(id);
  const std::string what =
      removed.size() == 1 ? api::Describe(*removed.begin())
                          : absl::StrCat(removed.size(), " resources");
  // A delete changes no resource: only the rules across resources run.
  const std::set<api::ResourceId> none;
  absl::StatusOr<ChangeResult> result =
      Commit(std::move(next), dry_run, context,
             absl::StrCat("cannot delete ", what, ": the rest of the config needs ",
                          removed.size() == 1 ? "it" : "them"),
             {}, nullptr, false, nullptr, &none);
  if (result.ok()) return result;
  // The referrers' errors say a resource "does not exist": it still does.
  std::vector<std::pair<std::string, std::string>> rewrites;
  for (const api::ResourceId& id : removed) {
    rewrites.emplace_back(absl::StrCat(api::Describe(id), ", which does not exist"),
                          absl::StrCat(api::Describe(id), ", which this delete removes"));
    rewrites.emplace_back(absl::StrCat(api::Describe(id), " does not exist"),
                          absl::StrCat(api::Describe(id), " is what this delete removes"));
  }
  return absl::Status(result.status().code(),
                      absl::StrReplaceAll(result.status().message(), rewrites));
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::Rollback(
    uint64_t version, bool dry_run, const ChangeContext& context) {
  absl::MutexLock write_lock(&write_mu_);
  return RetryIfStale(context, [&] { return RollbackLocked(version, dry_run, context); });
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::RollbackLocked(
    uint64_t version, bool dry_run, const ChangeContext& context) {
  // A dry run changes nothing: allowed during a rollout (its base is the
  // canaries' version, which a promote makes everyone's).
  if (absl::Status status = dry_run ? absl::OkStatus() : CheckNoSplit(); !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckChangeContext(context); !status.ok()) return status;
  if (absl::Status status = CheckIfVersion(context.if_version); !status.ok()) return status;
  absl::StatusOr<api::ResourceMap> next = History()->ContentAt(version);
  if (!next.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot roll back: ", next.status().message()));
  }
  // What comes back is checked against the rules of now, as if applied
  // again (a certificate may have expired since). It is stored as it was:
  // Consumers' credentials are already hashes.
  std::shared_ptr<const Snapshot> base = Current();
  std::vector<api::ValidationError> apply_time_errors;
  const absl::Time now = clock_();
  for (const auto& [id, resource] : *next) {
    auto stored = base->resources.find(id);
    if (stored == base->resources.end() ||
        !google::protobuf::util::MessageDifferencer::Equals(stored->second, resource)) {
      api::ValidateAtApplyTime(resource, now, &apply_time_errors);
    }
  }
  return Commit(std::move(*next), dry_run, context,
                absl::StrCat("cannot roll back to version ", version,
                             ": its content does not pass today's validation"),
                std::move(apply_time_errors));
}

absl::StatusOr<ConfigState::ChangeResult> ConfigState::Commit(
    api::ResourceMap next, bool dry_run, const ChangeContext& context,
    const std::string& refusal, std::vector<api::ValidationError> apply_time_errors,
    const SplitChange* split_change, bool force, const NextDigest* digest,
    const std::set<api::ResourceId>* validate) {
  if (shutting_down()) {
    return absl::UnavailableError("sluice-control is shutting down");
  }
  std::shared_ptr<const Snapshot> base = Current();
  // The listeners and consumers this change adds or alters: a conflict with
  // a stored one is theirs to be told (with their file and line).
  std::set<api::ResourceId> applied;
  for (const auto& [id, resource] : next) {
    if (id.first != config::v1::LISTENER && id.first != config::v1::CONSUMER) continue;
    auto stored = base->resources.find(id);
    if (stored == base->resources.end() ||
        !google::protobuf::util::MessageDifferencer::Equals(stored->second, resource)) {
      applied.insert(id);
    }
  }
  // Every proxy holds each regular expression compiled: bound them all
  // together (a change that shrinks a config already over goes through).
  // Before the rest of validation, which compiles each pattern again.
  std::map<api::ResourceId, int64_t> next_regex_sizes;
  std::map<api::ResourceId, uint64_t> next_hashes;
  if (digest != nullptr) {
    next_regex_sizes = digest->regex_sizes;
  } else {
    next_hashes = ContentHashes(next);
    next_regex_sizes = RegexSizes(next, next_hashes, base.get());
  }
  const int64_t next_regex_total = Sum(next_regex_sizes);
  if (next_regex_total > api::kMaxConfigRegexProgramSize &&
      next_regex_total > base->regex_total) {
    std::vector<std::pair<api::ResourceId, int64_t>> changed;
    for (const auto& [id, size] : next_regex_sizes) {
      auto old = base->regex_sizes.find(id);
      if (old == base->regex_sizes.end() || old->second != size) changed.push_back({id, size});
    }
    return absl::ResourceExhaustedError(
        absl::StrCat(api::RegexBudgetError(next_regex_total, changed), "; nothing changed"));
  }
  if (digest != nullptr) validate = &digest->validate;
  std::vector<api::ValidationError> errors = api::ValidateState(next, validate, &applied);
  api::CheckConsumerReferences(next, base->resources, &errors);
  errors.insert(errors.end(), std::make_move_iterator(apply_time_errors.begin()),
                std::make_move_iterator(apply_time_errors.end()));
  if (absl::Status status = api::ToStatus(errors); !status.ok()) {
    if (!refusal.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(refusal, ":\n", status.message()));
    }
    return status;
  }
  // A proxy that connects gets the whole config in one message: never grow
  // it past what a proxy accepts. (A change that shrinks a config already
  // over a lowered limit goes through.)
  int64_t next_bytes = 0;
  if (digest != nullptr) {
    next_bytes = kResponseOverheadBytes;
    for (const auto& [id, size] : digest->sizes) next_bytes += ResourceBytes(size);
  } else {
    next_bytes = ConfigBytes(next);
  }
  if (int64_t bytes = next_bytes; bytes > max_config_bytes_ && bytes > base->config_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the whole config would be ", bytes, " bytes, over the limit of ", max_config_bytes_,
        " bytes (a proxy that connects receives it in one message; sluice-control "
        "--max-config-bytes); nothing changed"));
  }
  ChangeResult result;
  result.diff = digest != nullptr ? DiffOf(base->resources, next, *digest)
                                  : api::ComputeDiff(base->resources, next);
  // Valid, but unable to do what it says: told, and applied.
  result.warning = absl::StrJoin(api::ConfigNotes(next, result.diff), "\n");
  result.version = base->version;
  if (dry_run || (result.diff.empty() && !force)) return result;

  StoredState stored{base->version + 1, std::move(next), store_id_};
  if (split_change != nullptr && split_change->action == SplitChange::kStart &&
      split_change->before_commit) {
    if (absl::Status status = split_change->before_commit(base->version, stored.version);
        !status.ok()) {
      return status;
    }
  }
  // The history first: after a crash between the two files it holds one
  // version more than the state, which the next start drops.
  HistoryEntry entry;
  entry.version = stored.version;
  entry.time = clock_();
  entry.author = context.author;
  entry.message = context.message;
  for (const auto& id : result.diff.added) entry.added.push_back(stored.resources.at(id));
  for (const auto& id : result.diff.changed) entry.changed.push_back(stored.resources.at(id));
  entry.removed = result.diff.removed;
  entry.unchanged = static_cast<uint32_t>(result.diff.unchanged);
  auto history = std::make_shared<ConfigHistory>(*History());
  history->Append(std::move(entry), stored.resources);
  std::string store_warning;
  if (absl::Status status = store_->Commit(base->version, stored, history->stored(),
                                           &store_warning);
      !status.ok()) {
    // Another replica first, a change too big for the store, or a shared
    // store out of reach (its message says what was applied): as is.
    if (status.code() == absl::StatusCode::kAborted ||
        status.code() == absl::StatusCode::kResourceExhausted) {
      return status;
    }
    // The store failing (a full disk, a lost permission, a shared store out
    // of reach) is the operator's to see in this log too, not only the
    // caller's.
    SLUICE_LOG(kError, "version ", stored.version, " was not stored (", store_description_,
               "): ", status.message());
    if (status.code() == absl::StatusCode::kUnavailable) return status;
    return absl::UnavailableError(absl::StrCat(
        "the change was not stored, nothing changed: ", status.message()));
  }
  if (!store_warning.empty()) {
    // The new state is what a restart loads: serve it too, and say that it
    // may not survive a power loss.
    const std::string durability = absl::StrCat("version ", stored.version,
                                                " is stored and pushed to proxies, but may not "
                                                "survive a power loss or OS crash: ",
                                                store_warning);
    SLUICE_LOG(kError, durability);
    result.warning = result.warning.empty() ? durability
                                            : absl::StrCat(result.warning, "\n", durability);
  }
  result.version = stored.version;
  std::shared_ptr<const Snapshot> snapshot;
  if (digest != nullptr) {
    auto made = std::make_shared<Snapshot>();
    made->version = stored.version;
    made->hashes = digest->hashes;
    made->sizes = digest->sizes;
    made->regex_sizes = std::move(next_regex_sizes);
    made->regex_total = next_regex_total;
    made->config_bytes = next_bytes;
    made->resources = std::move(stored.resources);
    snapshot = std::move(made);
  } else {
    // The hashes and sizes counted above (the same resources).
    snapshot = MakeSnapshotOf(stored.version, std::move(stored.resources), std::move(next_hashes),
                              std::move(next_regex_sizes));
  }
  {
    absl::MutexLock lock(&mu_);
    if (split_change != nullptr && split_change->action == SplitChange::kStart) {
      split_ = split_change->split;
      split_->rollout_id = RolloutIdFor(result.version);
      stable_ = current_;
    } else if (split_change != nullptr && split_change->action == SplitChange::kEnd) {
      split_.reset();
      stable_.reset();
    }
    current_ = std::move(snapshot);
    history_ = std::move(history);
  }
  SLUICE_LOG(kInfo, "version ", result.version, ": ", result.diff.added.size(),
             " added, ", result.diff.changed.size(), " changed, ",
             result.diff.removed.size(), " removed");
  Notify(false);
  return result;
}

int ConfigState::Subscribe(std::function<void(bool)> callback) {
  absl::MutexLock lock(&mu_);
  int id = next_subscriber_++;
  if (shutting_down_) callback(true);
  subscribers_[id] = std::move(callback);
  return id;
}

void ConfigState::Unsubscribe(int id) {
  absl::MutexLock lock(&mu_);
  subscribers_.erase(id);
}

size_t ConfigState::subscriber_count() const {
  absl::MutexLock lock(&mu_);
  return subscribers_.size();
}

void ConfigState::Notify(bool shutting_down) {
  absl::MutexLock lock(&mu_);
  for (auto& [id, callback] : subscribers_) callback(shutting_down);
}

void ConfigState::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
  }
  Notify(true);
}

bool ConfigState::shutting_down() const {
  absl::MutexLock lock(&mu_);
  return shutting_down_;
}

}  // namespace sluice::controlplane
