// ConfigStore and TokenStore: where sluice-control keeps its declared state,
// its history and its operator tokens. Two implementations:
//
//   - FileConfigStore / FileTokenStore (file_config_store.h): the data dir's
//     files (FileStore, TokenFile), one control plane per data dir. The
//     default.
//   - EtcdStore (etcd_store.h): keys under a prefix in an etcd cluster,
//     shared by several control-plane replicas (sluice-control --store etcd).
//
// A commit names the version it was based on; a store shared by several
// writers refuses it (ABORTED) when another writer committed first, so no
// change is lost and versions only grow. A shared store also reports the
// versions other writers commit (Watch).
//
// Implementations say which threads may call them.
#ifndef SLUICE_CONTROLPLANE_STORE_CONFIG_STORE_H_
#define SLUICE_CONTROLPLANE_STORE_CONFIG_STORE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controlplane/store/file_store.h"

namespace sluice::controlplane {

class ConfigStore {
 public:
  virtual ~ConfigStore() = default;

  // The stored state; version 0, no resources and (file store only) no store
  // id when nothing was stored yet. A shared store always has an id: the
  // first writer made it.
  virtual absl::StatusOr<StoredState> Load() = 0;
  // The stored history; empty when none was stored.
  virtual absl::StatusOr<StoredHistory> LoadHistory() = 0;
  // Records `state` (version unchanged) with the store id it now has. An
  // error with `*replaced` true: recorded, but maybe not durably.
  virtual absl::Status RecordStoreId(const StoredState& state,
                                     bool* replaced) = 0;

  // Stores `next` (version base_version + 1) and `history` (its newest entry
  // is next's version) as one change. OK: stored; `*warning` non-empty when
  // it may not be durable (the operator should know). ABORTED: another
  // writer stored a version after `base_version` first; nothing stored.
  // Any other error: nothing stored (the message says why, for an operator).
  virtual absl::Status Commit(uint64_t base_version, const StoredState& next,
                              const StoredHistory& history,
                              std::string* warning) = 0;

  // Whether several control planes share this store. Canary rollouts (whose
  // split lives in one control plane's memory) are refused then.
  virtual bool shared() const = 0;
  // For log lines: "data dir ./sluice-data", "etcd 10.0.0.1:2379,... prefix
  // /sluice/".
  virtual std::string Describe() const = 0;

  // Calls `on_version(state, history)` whenever the store holds a version
  // another writer made (or one this process has not seen yet), from a
  // thread of the store's; the callee ignores versions it already has. At
  // most one callback; the store stops calling it before it is destroyed.
  // A store only this process writes never calls it.
  using VersionCallback =
      std::function<void(StoredState state, StoredHistory history)>;
  virtual void Watch(VersionCallback on_version) = 0;
  // A hint that the store holds a newer version than Watch delivered (a
  // proxy runs one): a shared store reads again at once, from another
  // member, rather than wait on a watch that may be stuck on a hung one.
  virtual void Resync() {}
};

// The operator tokens' storage (digests only).
class TokenStore {
 public:
  virtual ~TokenStore() = default;

  virtual absl::StatusOr<std::vector<StoredToken>> LoadTokens() = 0;
  // Replaces the stored tokens with `next`. `previous` is what the caller
  // last loaded or stored: ABORTED when the stored tokens differ from it
  // (another control plane changed them); nothing stored then.
  virtual absl::Status SaveTokens(const std::vector<StoredToken>& previous,
                                  const std::vector<StoredToken>& next) = 0;
  // Calls `on_tokens` with the stored tokens and the revision they were
  // read at when another writer changed them, from a thread of the store's;
  // stops before the store is destroyed. A store only this process writes
  // never calls it. A call can be overtaken by this process's own save (read
  // before the save, delivered after it): the callback takes the tokens only
  // if TokensCurrent(revision) holds, checked under the lock its saves hold.
  using TokensCallback =
      std::function<void(std::vector<StoredToken> tokens, int64_t revision)>;
  virtual void WatchTokens(TokensCallback on_tokens) = 0;
  // Whether tokens read at `revision` are as new as any this store has read
  // or saved since.
  virtual bool TokensCurrent(int64_t revision) = 0;
  // For error messages: "token file DIR/tokens.db", "etcd key /sluice/tokens".
  virtual std::string Describe() const = 0;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_STORE_CONFIG_STORE_H_
