// OperatorTokens: the bearer tokens operators use with the admin API, each
// with a role. A token is "slc_" and 32 random bytes in base64url; only its
// SHA-256 is kept, in the data dir's `tokens.db` (TokenFile: checksummed,
// fsynced, renamed into place, mode 0600) or, with a store shared by several
// control planes, in etcd (EtcdStore::Tokens): a change there is refused
// (ABORTED) when another control plane changed the tokens first, and the
// changes others make replace the ones held here as the store reports them.
// A bootstrap admin token (from
// `sluice-control --admin-token-file`) is held hashed in memory only.
//
// Verify() compares the digest of what a client sent with every known digest
// in constant time (it does not stop at a match).
//
// Thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_OPERATOR_TOKENS_H_
#define SLUICE_CONTROLPLANE_SERVER_OPERATOR_TOKENS_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controlplane/store/config_store.h"
#include "controlplane/store/file_store.h"

namespace sluice::controlplane {

// Each role may do what the ones below it may.
enum class Role { kViewer = 1, kOperator = 2, kAdmin = 3 };

// "viewer", "operator" or "admin".
const char* RoleName(Role role);
// INVALID_ARGUMENT naming the three roles for anything else.
absl::StatusOr<Role> ParseRole(std::string_view name);

// Who a verified token belongs to.
struct TokenIdentity {
  std::string name;
  Role role = Role::kViewer;
};

// The name the bootstrap token has in the audit log, the history and
// ListTokens.
inline constexpr char kBootstrapTokenName[] = "bootstrap-admin";

// The stored entry by which a replica started with --require-tokens tells
// the others sharing its store (etcd) that every call needs a token, before
// any token is stored (the bootstrap one is held in memory only). Not a
// token: its digest (64 zeros) is no token's and it is never listed; it
// stays until an admin revokes it by this name.
inline constexpr char kTokensRequiredMarker[] = "*tokens-required*";

class OperatorTokens {
 public:
  // 32 random bytes from OpenSSL unless a test passes its own source.
  using RandomBytes = std::function<std::string(size_t n)>;

  // Loads `data_dir`/tokens.db (the data dir's FileStore must be open).
  static absl::StatusOr<std::unique_ptr<OperatorTokens>> Open(
      const std::string& data_dir, std::function<absl::Time()> now = &absl::Now,
      RandomBytes random = nullptr);
  // Loads the tokens from `store` and follows the changes other control
  // planes make to them.
  static absl::StatusOr<std::unique_ptr<OperatorTokens>> Open(
      std::unique_ptr<TokenStore> store,
      std::function<absl::Time()> now = &absl::Now,
      RandomBytes random = nullptr);
  ~OperatorTokens();

  // Accepts `token` (surrounding whitespace trimmed) as an admin token named
  // kBootstrapTokenName. INVALID_ARGUMENT when it is shorter than 16
  // characters.
  absl::Status AddBootstrapToken(std::string_view token);
  // The token in the first line of `path`, trimmed, checked as
  // AddBootstrapToken checks it (so a bad file is refused before anything
  // starts); errors name the file and never quote it.
  static absl::StatusOr<std::string> ReadBootstrapTokenFile(const std::string& path);

  // The identity of `token`, or nullopt when it is unknown.
  std::optional<TokenIdentity> Verify(std::string_view token) const;

  // A new token named `name` with `role`, durably stored before it is
  // returned. INVALID_ARGUMENT for a bad name, ALREADY_EXISTS for a taken one.
  absl::StatusOr<std::string> Create(const std::string& name, Role role,
                                     const std::string& created_by);
  // NOT_FOUND when there is no such token; FAILED_PRECONDITION for the
  // bootstrap token (remove it from the file and restart instead).
  absl::Status Revoke(const std::string& name);
  // Every token, the bootstrap one first; digests included (callers must
  // not hand them out).
  std::vector<StoredToken> List() const;
  // Whether no token (stored or bootstrap) exists; the marker is none.
  bool empty() const;
  // Whether a token is stored (made with `token create`, kept in the store
  // every replica shares), or the marker RecordTokensRequired leaves: then
  // every call needs a token, whatever --require-tokens says, so that a
  // replica started without the flag is no way around the others' tokens.
  bool HasStored() const;
  // Whether only the marker is stored (no token).
  bool OnlyMarkerStored() const;
  // Stores kTokensRequiredMarker unless it is there (retried when another
  // replica changed the tokens meanwhile).
  absl::Status RecordTokensRequired();

 private:
  OperatorTokens(std::unique_ptr<TokenStore> store,
                 std::function<absl::Time()> now, RandomBytes random);
  // The stored tokens another control plane left, read at `revision`:
  // checked, then held unless a save or load of this one's is newer.
  void Replace(std::vector<StoredToken> stored, int64_t revision);

  mutable absl::Mutex mu_;
  // Saves are serialized by mu_; reset first by the destructor (which stops
  // its callbacks).
  std::unique_ptr<TokenStore> store_;
  std::function<absl::Time()> now_;
  RandomBytes random_;
  std::vector<StoredToken> tokens_ ABSL_GUARDED_BY(mu_);  // stored ones
  std::optional<StoredToken> bootstrap_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_OPERATOR_TOKENS_H_
