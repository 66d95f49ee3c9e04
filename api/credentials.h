// Consumer credentials (API keys, basic-auth passwords) as they are stored
// and pushed: API keys as their SHA-256, passwords as salted PBKDF2-HMAC-
// SHA256 hashes. Used by the control plane (SealCredentials on apply), by
// validation (both planes), by sluicectl (hash-password) and by the proxy's
// authentication policies (VerifyPassword, Sha256). Uses only the OpenSSL
// API that BoringSSL shares.
//
// Pure functions except for the random salt of HashPassword; thread-safe.
// HashPassword and VerifyPassword cost one PBKDF2 run each (about 18 ms at
// the default iterations on one core of the machine this was measured on),
// in proportion to the iterations: keep them off a thread that must answer
// quickly.
#ifndef SLUICE_API_CREDENTIALS_H_
#define SLUICE_API_CREDENTIALS_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "sluice/config/v1/config.pb.h"

namespace sluice::api {

// PBKDF2 iterations of a new password hash, and the range a stored hash may
// use (config.proto, BasicAuthCredential.password_hash).
inline constexpr uint32_t kDefaultPasswordIterations = 100000;
inline constexpr uint32_t kMinPasswordIterations = 10000;
inline constexpr uint32_t kMaxPasswordIterations = 1000000;

// An API key as clients send it: this many printable ASCII characters.
inline constexpr size_t kMinApiKeyLength = 8;
inline constexpr size_t kMaxApiKeyLength = 512;
// Longest basic-auth password, in bytes.
inline constexpr size_t kMaxPasswordBytes = 1024;

// SHA-256 of `data` as 64 lowercase hex digits (an ApiKey's key_sha256).
std::string Sha256Hex(std::string_view data);
// SHA-256 of `data` into `out`.
void Sha256(std::string_view data, unsigned char out[32]);

// A new password hash with a random 16-byte salt:
// "pbkdf2-sha256$<iterations>$<salt, base64>$<32-byte key, base64>" (standard
// base64 alphabet, with padding). `iterations` must be within
// kMinPasswordIterations..kMaxPasswordIterations (aborts otherwise: callers
// check what an operator gives them first).
std::string HashPassword(std::string_view password,
                         uint32_t iterations = kDefaultPasswordIterations);

struct ParsedPasswordHash {
  uint32_t iterations;
  std::string salt;  // raw bytes
  std::string hash;  // raw bytes, 32 of them
};

// Parses what HashPassword makes. INVALID_ARGUMENT, with a message that
// quotes nothing of `text`, for another scheme, iterations outside
// kMinPasswordIterations..kMaxPasswordIterations, a salt outside 16..64 bytes,
// a hash that is not 32 bytes, or base64 that is not canonical.
absl::StatusOr<ParsedPasswordHash> ParsePasswordHash(std::string_view text);

// Whether `password` matches `password_hash` (compared in constant time).
// False for a hash that ParsePasswordHash refuses.
bool VerifyPassword(std::string_view password, std::string_view password_hash);

// The token of an `authorization` value `Bearer <token>`: the scheme in any
// case (RFC 9110 11.1), then one or more spaces or tabs (RFC 6750 2.1 asks
// for 1*SP), white space before the scheme and after the token left out. nullopt for another
// scheme or no token.
std::optional<std::string_view> BearerToken(std::string_view authorization);

// Empty when `token` (a bootstrap token read from a file) can travel in an
// HTTP field or in gRPC metadata: printable ASCII other than space
// (0x21..0x7e). Otherwise what is wrong, naming the first other byte's
// position (1-based) and value, quoting nothing of the token.
std::string TokenTextProblem(std::string_view token);

// kMinApiKeyLength..kMaxApiKeyLength characters, each printable ASCII other
// than space (0x21..0x7e).
bool ValidApiKeyText(std::string_view key);

// Replaces the plain credentials of a Consumer by their hashes, as the
// control plane does before it validates, stores or pushes an applied
// resource: each ApiKey's `key` becomes `key_sha256`, basic_auth's `password`
// becomes `password_hash`. When `previous` (may be null) is the stored
// version of the same Consumer, has the same username and its password_hash
// verifies this password, that hash is kept (no new salt): re-applying an
// unchanged file changes nothing. A credential that validation would refuse
// (a key of the wrong length or characters, both forms given, a password over
// kMaxPasswordBytes, the redaction marker) is left as it is so that validation
// reports it. Resources of other kinds are left as they are.
void SealCredentials(config::v1::Resource* resource,
                     const config::v1::Resource* previous);

// Whether `text` has a control character (0x00-0x1F or 0x7F), which RFC
// 7617 2 forbids in a Basic user-id and password.
inline bool HasControlCharacter(std::string_view text) {
  for (char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
  }
  return false;
}

}  // namespace sluice::api

#endif  // SLUICE_API_CREDENTIALS_H_
