// The `jwt` policy's verification keys: the JWS algorithms it knows (RFC
// 7518 3), keys read from a JWK Set (RFC 7517) or PEM, and signature
// checks. Uses only the OpenSSL API that BoringSSL shares: JWK RSA and EC
// keys are written as a DER SubjectPublicKeyInfo and read with d2i_PUBKEY
// (which also checks that an EC point is on its curve), Ed25519 keys with
// EVP_PKEY_new_raw_public_key.
//
// The validator (config thread of every binary that validates) and the
// filter's compiler parse the same way; a parsed key set is immutable and
// verifies from any number of threads at once.
#ifndef SLUICE_DATAPLANE_POLICY_JWT_KEYS_H_
#define SLUICE_DATAPLANE_POLICY_JWT_KEYS_H_

#include <openssl/evp.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/types/span.h"

namespace sluice::policy::jwt {

enum class Algorithm { kRs256, kRs384, kRs512, kPs256, kEs256, kEs384, kEdDsa, kHs256 };
inline constexpr Algorithm kAllAlgorithms[] = {
    Algorithm::kRs256, Algorithm::kRs384, Algorithm::kRs512, Algorithm::kPs256,
    Algorithm::kEs256, Algorithm::kEs384, Algorithm::kEdDsa, Algorithm::kHs256};

// "RS256" ... "HS256"; nullopt for any other name ("none" among them).
std::optional<Algorithm> AlgorithmFromName(std::string_view name);

// What else than one PUBLIC KEY block a `public_keys_pem` entry holds, or ""
// (only whitespace around the block). OpenSSL skips blocks it is not asked
// for, so a private key pasted beside the public one would be taken, stored
// and shown in full wherever the policy is (`sluicectl get`, history,
// /config_dump). Checked at apply only (JwtValidator::ValidateNew): a stored
// entry that breaks it goes on working, its first PUBLIC KEY taken.
std::string PemProblem(std::string_view pem);
std::string_view AlgorithmName(Algorithm alg);
// "RS256, RS384, ..., HS256", for messages.
std::string AlgorithmNames();

enum class KeyType { kRsa, kEcP256, kEcP384, kEd25519, kHmac };

// Limits on what a key set may hold.
inline constexpr size_t kMaxKeys = 64;
inline constexpr size_t kMaxJwksBytes = 64 * 1024;
inline constexpr size_t kMaxKidLength = 256;
inline constexpr int kMinRsaBits = 2048;
inline constexpr int kMaxRsaBits = 8192;
inline constexpr size_t kMinHmacKeyBytes = 32;  // RFC 7518 3.2: at least the hash size
inline constexpr size_t kMaxHmacKeyBytes = 1024;

class VerificationKey {
 public:
  VerificationKey(KeyType type, std::string kid, std::optional<Algorithm> alg,
                  EVP_PKEY* public_key, std::string secret);

  KeyType type() const { return type_; }
  const std::string& kid() const { return kid_; }  // empty: none

  // Whether a token signed with `alg` may be checked with this key: the
  // algorithm's key type is this key's (an HS256 token is never checked
  // with a public key), and the key's own `alg`, if any, is `alg`.
  bool CanVerify(Algorithm alg) const;
  // Whether `signature` (as JWS carries it: r||s for ECDSA) signs
  // `signing_input` with `alg`. Requires CanVerify(alg).
  bool Verify(Algorithm alg, std::string_view signing_input, std::string_view signature) const;

 private:
  struct PkeyFree {
    void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  };
  KeyType type_;
  std::string kid_;
  std::optional<Algorithm> alg_;
  std::unique_ptr<EVP_PKEY, PkeyFree> public_key_;  // all but kHmac
  std::string secret_;                              // kHmac
};

struct PemKeyInput {
  std::string_view pem;
  std::string_view kid;
};

// One error in a key set, as a policy validator reports it: `field` is
// "jwks" or "public_keys_pem[<i>].<pem|kid>".
struct KeySetError {
  std::string field;
  std::string message;
};

// The keys of a JWK Set (`jwks`, may be empty: none) then the PEM keys.
// Keys that cannot be used are left out with an error each: a JWK as
// `key <index in "keys"> (kid "<kid>"): <why>`. Also errors for no keys at
// all, more than kMaxKeys, and a kid used twice.
std::vector<VerificationKey> ParseKeySet(std::string_view jwks,
                                         absl::Span<const PemKeyInput> pems,
                                         std::vector<KeySetError>* errors);

}  // namespace sluice::policy::jwt

#endif  // SLUICE_DATAPLANE_POLICY_JWT_KEYS_H_
