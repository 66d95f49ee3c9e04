// EtcdStore: sluice-control's state, history and operator tokens in an etcd
// cluster (v3 API over gRPC), shared by several control-plane replicas
// (sluice-control --store etcd --etcd-endpoints host:port,...).
//
// TLS (--etcd-ca, and --etcd-cert/--etcd-key for etcd's --client-cert-auth):
// every endpoint is reached over TLS, the server certificate verified
// against the CA and the endpoint's host (or --etcd-server-name); a failed
// handshake is reported as a TLS failure with gRPC's reason, not as an
// unreachable cluster.
//
// Layout, under the prefix (--etcd-prefix, default "/sluice/"):
//
//   store_id            the store's id (32 hex digits), made once by the
//                       first replica with a create-if-absent transaction
//   version             the current version, decimal: what commits compare
//   state               the current state: FileStore::Encode (the bytes of
//                       state.db: version, store id, every resource)
//   history/base        the whole content of the oldest kept version
//                       (FileStore::EncodeHistory with no entries)
//   history/v/<%020d>   one kept version's entry (EncodeHistory with that
//                       entry alone)
//   tokens              the operator tokens (TokenFile::Encode: digests)
//   leases/<replica>    one replica's demand for its rate-limit scope FLEET
//                       keys (controlplane/server/replica_shares.h), put
//                       every 500 ms; not part of the state: changes under
//                       leases/ do not wake the watch
//   fleet/<replica>     one replica's proxies (controlplane/server/
//                       fleet_view.h), put every second; not part of the
//                       state either
//
// A commit is one transaction: if `version` still holds the version the
// change was based on (absent for version 0), put version, state and the new
// history entry, delete the entries no longer kept and put history/base when
// the oldest kept version moved; else read `state` and answer ABORTED naming
// the version another replica stored first. The whole request must fit
// etcd's --max-request-bytes (1.5 MiB by default; --etcd-max-request-bytes
// tells this store what the cluster allows): a bigger change is refused
// with RESOURCE_EXHAUSTED, nothing stored. Tokens are saved with a
// transaction that compares the `tokens` value with what was loaded.
//
// Every replica watches the prefix (one thread, one Watch stream to one
// endpoint at a time): any event makes it read the whole prefix again at one
// revision and hand a newer version to the Watch callback and changed tokens
// to the WatchTokens callback. After a broken stream it reads everything
// again before watching on, so it never misses a version.
//
// Each call tries the endpoints in turn, starting with the last that
// answered, within `timeout` in all; requests carry etcd's "hasleader"
// metadata, so a member cut off from the quorum answers at once instead of
// waiting. When none answers: UNAVAILABLE "etcd: no quorum or unreachable
// (endpoints ...)", for an operator's change with "nothing applied" or, when a member
// timed out holding the request, the warning that etcd may still apply it
// once its quorum is back (as with any etcd client). When every endpoint
// failed TLS (a certificate the CA did not sign, a name not in it, no client
// certificate for --client-cert-auth), UNAVAILABLE "etcd: TLS failed with
// every endpoint (...)" with gRPC's reason for each.
//
// Thread-safe. Watch callbacks run on the store's watch thread; the
// destructor stops and joins it.
#ifndef SLUICE_CONTROLPLANE_STORE_ETCD_STORE_H_
#define SLUICE_CONTROLPLANE_STORE_ETCD_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controlplane/store/config_store.h"
#include "etcdserverpb/rpc.grpc.pb.h"

namespace grpc {
class ClientContext;
}  // namespace grpc

namespace sluice::controlplane {

// How the store reaches etcd: plaintext when ca_pem is empty.
struct EtcdTls {
  std::string ca_pem;    // the CA that signed etcd's server certificates
  std::string cert_pem;  // client certificate (chain); empty: none sent
  std::string key_pem;   // its private key
  // The name verified in the server certificate; empty: each endpoint's host.
  std::string server_name;
  bool enabled() const { return !ca_pem.empty(); }
};

struct EtcdOptions {
  std::vector<std::string> endpoints;  // host:port
  EtcdTls tls;
  std::string prefix = "/sluice/";
  // Each operation, all endpoints tried, ends within this.
  absl::Duration timeout = absl::Seconds(5);
  // etcd's --max-request-bytes (its default: 1.5 MiB).
  int64_t max_request_bytes = 1536 * 1024;
  // Every this long, etcd's history is compacted to the revision seen one
  // interval before (as kube-apiserver does): without it every put (each
  // replica's leases/ entry every 500 ms) stays in etcd's database until its
  // space quota (2 GiB by default) is full and etcd refuses every write.
  // Zero: never (etcd's own --auto-compaction-* does it).
  absl::Duration compaction_interval = absl::Minutes(5);
};

// What --etcd-endpoints names.
struct EtcdEndpoints {
  std::vector<std::string> addresses;  // host:port
  // The scheme the entries were written with: "http", "https", or empty
  // when every entry is a bare HOST:PORT (then --etcd-ca decides).
  std::string scheme;
};

// "a:1,http://b:2" → {"a:1", "b:2"}, "http"; INVALID_ARGUMENT naming the
// bad entry, or http:// mixed with https://.
absl::StatusOr<EtcdEndpoints> ParseEtcdEndpoints(const std::string& list);

// The TLS flags as given on the command line (file names).
struct EtcdTlsFlags {
  std::string ca_file;      // --etcd-ca; empty: plaintext
  std::string cert_file;    // --etcd-cert
  std::string key_file;     // --etcd-key
  std::string server_name;  // --etcd-server-name
};

// Reads the PEM files the flags name. INVALID_ARGUMENT naming the flag (and
// the file): https:// endpoints without --etcd-ca, http:// endpoints with
// it, --etcd-cert without --etcd-key or the other way round, a client
// certificate or server name without --etcd-ca, a file that cannot be read.
absl::StatusOr<EtcdTls> MakeEtcdTls(const EtcdEndpoints& endpoints,
                                    const EtcdTlsFlags& flags);

// The layout above, without I/O (unit tests drive it).
namespace etcd_layout {

// The first key after every key that starts with `prefix`.
std::string PrefixEnd(const std::string& prefix);
std::string HistoryEntryKey(const std::string& prefix, uint64_t version);

// What the prefix holds, read at one revision.
struct Contents {
  int64_t revision = 0;  // the read's revision
  std::string store_id;  // empty: none yet
  StoredState state;     // version 0 when none yet
  StoredHistory history;
  bool has_tokens = false;
  int64_t tokens_mod_revision = 0;
  std::vector<StoredToken> tokens;
};

// Decodes a Range of the whole prefix; DATA_LOSS naming the key when one
// does not decode.
absl::StatusOr<Contents> Decode(const std::string& prefix,
                                const etcdserverpb::RangeResponse& range);

// The commit transaction (see above). `put_base`: history.entries.front()
// is not the oldest version stored so far, so history/base is put too.
etcdserverpb::TxnRequest CommitTxn(const std::string& prefix,
                                   uint64_t base_version,
                                   const StoredState& next,
                                   const StoredHistory& history, bool put_base);

}  // namespace etcd_layout

class EtcdStore : public ConfigStore {
 public:
  // Makes the channels; nothing is sent until the first call.
  static absl::StatusOr<std::unique_ptr<EtcdStore>> Open(EtcdOptions options);
  ~EtcdStore() override;

  // Reads the prefix; a new prefix gets its store id (and an empty token
  // list) first. UNAVAILABLE while etcd has no quorum or is unreachable.
  absl::StatusOr<StoredState> Load() override;
  // The history read by the last Load (or read now).
  absl::StatusOr<StoredHistory> LoadHistory() override;
  // Never needed: Load makes the id.
  absl::Status RecordStoreId(const StoredState& state, bool* replaced) override;
  absl::Status Commit(uint64_t base_version, const StoredState& next,
                      const StoredHistory& history,
                      std::string* warning) override;
  bool shared() const override { return true; }
  std::string Describe() const override;
  void Watch(VersionCallback on_version) override;
  // Moves to the next endpoint and restarts the watch (catching up first);
  // at most once every 2 s.
  void Resync() override;
  // Compacts etcd's history to `revision` (all keys: etcd has one history).
  // A revision already compacted (by another replica) is no error.
  absl::Status Compact(int64_t revision);
  // etcd's current revision.
  absl::StatusOr<int64_t> CurrentRevision();

  // The tokens under this store's prefix; the view must not outlive it.
  std::unique_ptr<TokenStore> Tokens();

  // "127.0.0.1:2379,127.0.0.1:22379"
  std::string EndpointList() const;

  // The per-replica keys of a space, kLeases or kFleet (see the layout
  // above).
  static constexpr char kLeases[] = "leases/";
  static constexpr char kFleet[] = "fleet/";
  struct ReplicaEntry {
    std::string replica;  // the key after <prefix><space>
    std::string value;
    int64_t mod_revision = 0;
  };
  // Puts <prefix><space><replica>.
  absl::Status PutReplicaEntry(const std::string& replica, std::string value,
                               const std::string& space = kLeases);
  // Every key of the space, read at one revision.
  absl::StatusOr<std::vector<ReplicaEntry>> ReadReplicaEntries(
      const std::string& space = kLeases);
  // Deletes <prefix><space><replica> if it still has `mod_revision` (0: in
  // any case).
  absl::Status DeleteReplicaEntry(const std::string& replica, int64_t mod_revision,
                                  const std::string& space = kLeases);

 private:
  class TokenView;
  struct Endpoint {
    std::string address;
    std::unique_ptr<etcdserverpb::KV::Stub> kv;
    std::unique_ptr<etcdserverpb::Watch::Stub> watch;
  };

  explicit EtcdStore(EtcdOptions options);

  // Runs `call` against the endpoints in turn until one answers (OK or an
  // error from etcd that is not about reaching a quorum) within the timeout.
  using UnaryCall = std::function<grpc::Status(Endpoint& endpoint,
                                               grpc::ClientContext* context)>;
  // `change`: an operator's change (config, tokens), whose error says whether
  // it may still be applied; bookkeeping writes (lease and fleet entries,
  // compaction) are retried by their callers and say only what failed.
  absl::Status CallAny(const UnaryCall& call, bool change = false);
  // One transaction, through CallAny.
  absl::Status Txn(const etcdserverpb::TxnRequest& txn, etcdserverpb::TxnResponse* response,
                   bool change);
  absl::StatusOr<etcd_layout::Contents> ReadAll();
  absl::StatusOr<etcd_layout::Contents> ReadAllCreatingId();
  absl::StatusOr<std::vector<StoredToken>> LoadTokens();
  absl::Status SaveTokens(const std::vector<StoredToken>& previous,
                          const std::vector<StoredToken>& next);
  // Records what a read found and hands it to the callbacks when newer.
  void Deliver(const etcd_layout::Contents& contents);
  void StartWatchThread() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WatchLoop();
  // Waits up to `d`; false when the store is stopping.
  bool SleepUnlessStopping(absl::Duration d);

  const EtcdOptions options_;
  std::vector<Endpoint> endpoints_;

  mutable absl::Mutex mu_;
  size_t preferred_ ABSL_GUARDED_BY(mu_) =
      0;  // the endpoint that last answered
  std::optional<etcd_layout::Contents> loaded_
      ABSL_GUARDED_BY(mu_);                          // by Load()
  uint64_t oldest_stored_ ABSL_GUARDED_BY(mu_) = 0;  // history's oldest version
  int64_t tokens_mod_revision_ ABSL_GUARDED_BY(mu_) = 0;
  bool has_tokens_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* watch_context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::thread watch_thread_;
  std::thread compaction_thread_;
  absl::Time last_resync_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  void CompactionLoop();
  bool watch_started_ ABSL_GUARDED_BY(mu_) = false;

  // Held while a callback runs, so that removing one waits for it.
  absl::Mutex delivery_mu_;
  VersionCallback on_version_ ABSL_GUARDED_BY(delivery_mu_);
  TokenStore::TokensCallback on_tokens_ ABSL_GUARDED_BY(delivery_mu_);
  uint64_t delivered_version_ ABSL_GUARDED_BY(delivery_mu_) = 0;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_STORE_ETCD_STORE_H_
