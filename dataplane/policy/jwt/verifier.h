// Decides whether a JWT is accepted: its algorithm allowed, a key picked by
// `kid` (or every key that fits the algorithm when there is none), the
// signature good, then `exp`, `nbf`, `iss` and `aud` checked against a time
// the caller gives. No I/O and no clock of its own.
//
// Immutable once built; Verify() may run on any number of threads at once.
#ifndef SLUICE_DATAPLANE_POLICY_JWT_VERIFIER_H_
#define SLUICE_DATAPLANE_POLICY_JWT_VERIFIER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "dataplane/policy/jwt/jws.h"
#include "dataplane/policy/jwt/keys.h"

namespace sluice::policy::jwt {

struct VerifierOptions {
  std::vector<Algorithm> algorithms;  // allowed
  std::vector<std::string> issuers;   // empty: any
  std::vector<std::string> audiences; // empty: not checked
  int64_t leeway_seconds = 60;
  bool require_exp = true;
  // Claims to read for the caller (Claims::wanted).
  std::vector<std::string> wanted_claims;
};

struct VerifiedToken {
  Claims claims;
  // The Unix milliseconds `now` may take for the token to be accepted:
  // not_before <= now < expires (leeway included; the int64 limits when the
  // token has no nbf or exp).
  int64_t not_before;
  int64_t expires;
};

class TokenVerifier {
 public:
  TokenVerifier(VerifierOptions options, std::vector<VerificationKey> keys);

  // The token's claims, or UNAUTHENTICATED / INVALID_ARGUMENT with the
  // reason, a message quoting nothing of the token: "malformed token: ...",
  // "algorithm not allowed[: <alg>]", "unknown kid", "key does not match
  // the token's algorithm", "no key for the token's algorithm", "bad
  // signature", "token has no expiry (exp)", "token expired", "token not
  // yet valid", "issuer not allowed", "audience not allowed".
  // `now`: milliseconds since the Unix epoch.
  absl::StatusOr<VerifiedToken> Verify(std::string_view token, int64_t now) const;

  const VerifierOptions& options() const { return options_; }

 private:
  bool Allowed(Algorithm alg) const;

  VerifierOptions options_;
  std::vector<VerificationKey> keys_;
};

}  // namespace sluice::policy::jwt

#endif  // SLUICE_DATAPLANE_POLICY_JWT_VERIFIER_H_
