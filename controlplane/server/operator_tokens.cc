#include "controlplane/server/operator_tokens.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/credentials.h"
#include "common/log.h"
#include "controlplane/store/file_config_store.h"

namespace sluice::controlplane {
namespace {

constexpr char kTokenPrefix[] = "slc_";
constexpr size_t kTokenBytes = 32;
constexpr size_t kMaxNameLength = 64;
constexpr size_t kMinBootstrapTokenLength = 16;

std::string OpenSslRandom(size_t n) {
  std::string bytes(n, '\0');
  // A failing CSPRNG is a broken invariant: never hand out a weak token.
  if (RAND_bytes(reinterpret_cast<unsigned char*>(bytes.data()),
                 static_cast<int>(n)) != 1) {
    abort();
  }
  return bytes;
}

// Starting with a letter or digit: a name such as `--admin-token-file` would
// pass in `token list` for the bootstrap token's origin.
bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameLength ||
      !absl::ascii_isalnum(static_cast<unsigned char>(name[0]))) {
    return false;
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' &&
        c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kViewer:
      return "viewer";
    case Role::kOperator:
      return "operator";
    case Role::kAdmin:
      return "admin";
  }
  return "viewer";
}

absl::StatusOr<Role> ParseRole(std::string_view name) {
  if (name == "viewer") return Role::kViewer;
  if (name == "operator") return Role::kOperator;
  if (name == "admin") return Role::kAdmin;
  return absl::InvalidArgumentError(absl::StrCat(
      "role '", std::string(name), "': expected viewer, operator or admin"));
}

OperatorTokens::OperatorTokens(std::unique_ptr<TokenStore> store,
                               std::function<absl::Time()> now,
                               RandomBytes random)
    : store_(std::move(store)),
      now_(std::move(now)),
      random_(random ? std::move(random) : RandomBytes(&OpenSslRandom)) {}

OperatorTokens::~OperatorTokens() { store_.reset(); }

namespace {

bool IsMarker(const StoredToken& t) { return t.name == kTokensRequiredMarker; }

absl::Status CheckStoredTokens(const std::vector<StoredToken>& stored,
                               const std::string& where) {
  for (const StoredToken& t : stored) {
    if (!ParseRole(t.role).ok() || t.sha256_hex.size() != 64) {
      return absl::DataLossError(
          absl::StrCat(where, ": token '", t.name, "' has role '", t.role,
                       "' or a digest this build does not know"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<OperatorTokens>> OperatorTokens::Open(
    const std::string& data_dir, std::function<absl::Time()> now,
    RandomBytes random) {
  return Open(std::make_unique<FileTokenStore>(data_dir), std::move(now),
              std::move(random));
}

absl::StatusOr<std::unique_ptr<OperatorTokens>> OperatorTokens::Open(
    std::unique_ptr<TokenStore> store, std::function<absl::Time()> now,
    RandomBytes random) {
  std::unique_ptr<OperatorTokens> tokens(
      new OperatorTokens(std::move(store), std::move(now), std::move(random)));
  OperatorTokens* raw = tokens.get();
  // Followed before the first load: no change made meanwhile is missed.
  raw->store_->WatchTokens([raw](std::vector<StoredToken> stored, int64_t revision) {
    raw->Replace(std::move(stored), revision);
  });
  // Loaded and held under the lock: a change delivered meanwhile waits, then
  // is taken only if it is newer than what was loaded.
  absl::MutexLock lock(&raw->mu_);
  auto stored = raw->store_->LoadTokens();
  if (!stored.ok()) return stored.status();
  if (absl::Status checked =
          CheckStoredTokens(*stored, raw->store_->Describe());
      !checked.ok()) {
    return checked;
  }
  raw->tokens_ = std::move(*stored);
  return tokens;
}

void OperatorTokens::Replace(std::vector<StoredToken> stored, int64_t revision) {
  if (absl::Status checked = CheckStoredTokens(stored, store_->Describe());
      !checked.ok()) {
    SLUICE_LOG(kError, checked.message(), "; keeping the tokens held");
    return;
  }
  absl::MutexLock lock(&mu_);
  // Read before a save or load of this process's that came first: older than
  // what is held (a revoked token would be valid here again).
  if (!store_->TokensCurrent(revision)) return;
  tokens_ = std::move(stored);
}

absl::Status OperatorTokens::AddBootstrapToken(std::string_view token) {
  std::string trimmed(absl::StripAsciiWhitespace(
      absl::string_view(token.data(), token.size())));
  if (trimmed.size() < kMinBootstrapTokenLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the admin token is ", trimmed.size(), " characters; at least ",
        kMinBootstrapTokenLength, " (make one with: openssl rand -base64 32)"));
  }
  if (std::string problem = api::TokenTextProblem(trimmed); !problem.empty()) {
    return absl::InvalidArgumentError(problem);
  }
  absl::MutexLock lock(&mu_);
  bootstrap_ =
      StoredToken{kBootstrapTokenName, RoleName(Role::kAdmin),
                  api::Sha256Hex(trimmed), now_(), "--admin-token-file"};
  return absl::OkStatus();
}

absl::StatusOr<std::string> OperatorTokens::ReadBootstrapTokenFile(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read a token from ", path));
  }
  std::string trimmed(absl::StripAsciiWhitespace(line));
  if (trimmed.size() < kMinBootstrapTokenLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": the admin token is ", trimmed.size(), " characters; at least ",
        kMinBootstrapTokenLength, " (make one with: openssl rand -base64 32)"));
  }
  // Here too (AddBootstrapToken checks again): refused before a store is made.
  if (std::string problem = api::TokenTextProblem(trimmed); !problem.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
  }
  return trimmed;
}


std::optional<TokenIdentity> OperatorTokens::Verify(
    std::string_view token) const {
  const std::string digest = api::Sha256Hex(token);
  absl::MutexLock lock(&mu_);
  const StoredToken* match = nullptr;
  auto check = [&](const StoredToken& t) {
    // Every digest is compared, whether or not one matched already.
    if (t.sha256_hex.size() == digest.size() &&
        CRYPTO_memcmp(t.sha256_hex.data(), digest.data(), digest.size()) == 0) {
      match = &t;
    }
  };
  if (bootstrap_) check(*bootstrap_);
  for (const StoredToken& t : tokens_) {
    if (!IsMarker(t)) check(t);
  }
  if (match == nullptr) return std::nullopt;
  auto role = ParseRole(match->role);
  return TokenIdentity{match->name, role.ok() ? *role : Role::kViewer};
}

absl::StatusOr<std::string> OperatorTokens::Create(
    const std::string& name, Role role, const std::string& created_by) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("token name '", name, "': expected 1..", kMaxNameLength,
                     " of A-Z a-z 0-9 . _ -, the first a letter or digit"));
  }
  // Names the history and the audit log give to others: a token so named
  // would pass its changes off as theirs.
  for (const char* reserved : {"sluice-control", "anonymous", kBootstrapTokenName}) {
    if (absl::EqualsIgnoreCase(name, reserved)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token name '", name, "' is reserved: the history and the audit log name ",
          "the control plane's own decisions sluice-control, callers without a token ",
          "anonymous, and --admin-token-file's token ", kBootstrapTokenName));
    }
  }
  absl::MutexLock lock(&mu_);
  if (std::any_of(tokens_.begin(), tokens_.end(),
                  [&](const StoredToken& t) { return t.name == name; })) {
    return absl::AlreadyExistsError(
        absl::StrCat("a token named '", name, "' exists"));
  }
  // Once a token is stored every call needs one: a viewer or operator token
  // made first, with no admin token anywhere, would leave no one able to
  // make or revoke tokens (nor, for a viewer, to apply) until a restart
  // with --admin-token-file.
  const bool admin_exists =
      bootstrap_.has_value() ||
      std::any_of(tokens_.begin(), tokens_.end(), [](const StoredToken& t) {
        return !IsMarker(t) && t.role == RoleName(Role::kAdmin);
      });
  if (role != Role::kAdmin && !admin_exists) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the first token must have the admin role: no admin token exists (no ",
        "--admin-token-file, none created), and once a token is stored every call ",
        "needs one, so ", role == Role::kOperator ? "an " : "a ", RoleName(role),
        " token alone would leave no one able to make ",
        "or revoke tokens; create an admin token first (token create NAME --role admin)"));
  }
  std::string token = absl::StrCat(
      kTokenPrefix, absl::WebSafeBase64Escape(random_(kTokenBytes)));
  std::vector<StoredToken> next = tokens_;
  next.push_back(StoredToken{name, RoleName(role), api::Sha256Hex(token),
                             now_(), created_by});
  if (absl::Status saved = store_->SaveTokens(tokens_, next); !saved.ok()) {
    return absl::Status(
        saved.code() == absl::StatusCode::kAborted
            ? saved.code()
            : absl::StatusCode::kUnavailable,
        absl::StrCat("token not created: cannot store it: ", saved.message()));
  }
  tokens_ = std::move(next);
  return token;
}

absl::Status OperatorTokens::Revoke(const std::string& name) {
  absl::MutexLock lock(&mu_);
  if (name == kBootstrapTokenName && bootstrap_) {
    return absl::FailedPreconditionError(
        "the bootstrap token comes from --admin-token-file: change that file "
        "and restart "
        "sluice-control to replace it");
  }
  // The marker is revoked by its name only (a replica with --require-tokens
  // may still run: revoking the last token must not open the others).
  std::vector<StoredToken> next;
  for (const StoredToken& t : tokens_) {
    if (t.name != name) next.push_back(t);
  }
  if (next.size() == tokens_.size()) {
    return absl::NotFoundError(absl::StrCat("no token named '", name, "'"));
  }
  // The last admin token, with others left (and no --admin-token-file):
  // every call would still need a token and none could make or revoke
  // tokens, as with a viewer token made first.
  auto real = [](const StoredToken& t) { return !IsMarker(t); };
  auto admin = [&](const StoredToken& t) { return real(t) && t.role == RoleName(Role::kAdmin); };
  if (!bootstrap_.has_value() && std::none_of(next.begin(), next.end(), admin) &&
      std::any_of(next.begin(), next.end(), real)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "'", name, "' is the last admin token: without it the other tokens would still be "
        "needed on every call and no one could make or revoke tokens; create another admin "
        "token first, or revoke the others first"));
  }
  if (absl::Status saved = store_->SaveTokens(tokens_, next); !saved.ok()) {
    return absl::Status(
        saved.code() == absl::StatusCode::kAborted
            ? saved.code()
            : absl::StatusCode::kUnavailable,
        absl::StrCat("token not revoked: cannot store the change: ",
                     saved.message()));
  }
  tokens_ = std::move(next);
  return absl::OkStatus();
}

std::vector<StoredToken> OperatorTokens::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<StoredToken> all;
  if (bootstrap_) all.push_back(*bootstrap_);
  for (const StoredToken& t : tokens_) {
    if (!IsMarker(t)) all.push_back(t);
  }
  return all;
}

bool OperatorTokens::OnlyMarkerStored() const {
  absl::MutexLock lock(&mu_);
  return tokens_.size() == 1 && IsMarker(tokens_[0]);
}

absl::Status OperatorTokens::RecordTokensRequired() {
  for (int attempt = 0;; ++attempt) {
    absl::MutexLock lock(&mu_);
    if (std::any_of(tokens_.begin(), tokens_.end(), IsMarker)) return absl::OkStatus();
    std::vector<StoredToken> next = tokens_;
    next.push_back(StoredToken{kTokensRequiredMarker, RoleName(Role::kAdmin),
                               std::string(64, '0'), now_(), "--require-tokens"});
    absl::Status saved = store_->SaveTokens(tokens_, next);
    if (saved.ok()) {
      tokens_ = std::move(next);
      return saved;
    }
    if (saved.code() != absl::StatusCode::kAborted || attempt == 4) return saved;
    // Another replica changed the tokens first: from what is stored now.
    absl::StatusOr<std::vector<StoredToken>> stored = store_->LoadTokens();
    if (!stored.ok()) return stored.status();
    if (absl::Status checked = CheckStoredTokens(*stored, store_->Describe()); !checked.ok()) {
      return checked;
    }
    tokens_ = *std::move(stored);
  }
}

bool OperatorTokens::empty() const {
  absl::MutexLock lock(&mu_);
  return !bootstrap_ && std::all_of(tokens_.begin(), tokens_.end(), IsMarker);
}

bool OperatorTokens::HasStored() const {
  absl::MutexLock lock(&mu_);
  return !tokens_.empty();
}

}  // namespace sluice::controlplane
