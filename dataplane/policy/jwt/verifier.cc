#include "dataplane/policy/jwt/verifier.h"

#include <algorithm>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace sluice::policy::jwt {
namespace {

absl::Status Refused(std::string_view why) {
  return absl::UnauthenticatedError(std::string(why));
}

bool Contains(const std::vector<std::string>& list, std::string_view value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t out;
  if (__builtin_add_overflow(a, b, &out)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return out;
}

}  // namespace

TokenVerifier::TokenVerifier(VerifierOptions options, std::vector<VerificationKey> keys)
    : options_(std::move(options)), keys_(std::move(keys)) {}

bool TokenVerifier::Allowed(Algorithm alg) const {
  return std::find(options_.algorithms.begin(), options_.algorithms.end(), alg) !=
         options_.algorithms.end();
}

absl::StatusOr<VerifiedToken> TokenVerifier::Verify(std::string_view token, int64_t now) const {
  absl::StatusOr<CompactJws> jws = ParseCompactJws(token);
  if (!jws.ok()) return jws.status();

  std::optional<Algorithm> alg = AlgorithmFromName(jws->header.alg);
  if (!alg || !Allowed(*alg)) {
    // Only names we know are echoed ("none" among them).
    if (alg || jws->header.alg == "none") {
      return Refused(absl::StrCat("algorithm not allowed: ", jws->header.alg));
    }
    return Refused("algorithm not allowed");
  }

  bool verified = false;
  if (jws->header.kid) {
    bool kid_known = false;
    bool fitting = false;
    // The keys of that kid, and those without one: a kid is a hint (RFC
    // 7515 4.1.4), and a key given as bare PEM has none (as Envoy's
    // jwt_authn tries them).
    for (const VerificationKey& key : keys_) {
      if (!key.kid().empty() && key.kid() != *jws->header.kid) continue;
      kid_known = true;
      if (!key.CanVerify(*alg)) continue;
      fitting = true;
      if (key.Verify(*alg, jws->signing_input, jws->signature)) {
        verified = true;
        break;
      }
    }
    if (!kid_known) return Refused("unknown kid");
    if (!fitting) return Refused("key does not match the token's algorithm");
  } else {
    bool fitting = false;
    for (const VerificationKey& key : keys_) {
      if (!key.CanVerify(*alg)) continue;
      fitting = true;
      if (key.Verify(*alg, jws->signing_input, jws->signature)) {
        verified = true;
        break;
      }
    }
    if (!fitting) return Refused("no key for the token's algorithm");
  }
  if (!verified) return Refused("bad signature");

  absl::StatusOr<Claims> claims = ParseClaims(jws->payload, options_.wanted_claims);
  if (!claims.ok()) return claims.status();
  VerifiedToken out;
  out.not_before = std::numeric_limits<int64_t>::min();
  out.expires = std::numeric_limits<int64_t>::max();
  if (claims->exp) {
    out.expires = SaturatingAdd(*claims->exp, options_.leeway_seconds * 1000);
  } else if (options_.require_exp) {
    return Refused("token has no expiry (exp)");
  }
  if (claims->nbf) out.not_before = SaturatingAdd(*claims->nbf, -options_.leeway_seconds * 1000);
  if (now >= out.expires) return Refused("token expired");
  if (now < out.not_before) return Refused("token not yet valid");
  if (!options_.issuers.empty() && (!claims->iss || !Contains(options_.issuers, *claims->iss))) {
    return Refused("issuer not allowed");
  }
  if (!options_.audiences.empty()) {
    bool match = false;
    if (claims->aud) {
      for (const std::string& aud : *claims->aud) match = match || Contains(options_.audiences, aud);
    }
    if (!match) return Refused("audience not allowed");
  }
  out.claims = std::move(*claims);
  return out;
}

}  // namespace sluice::policy::jwt
