// libFuzzer target: the `jwt` policy's parsing of untrusted bytes
// (dataplane/policy/jwt/jws.h, keys.h, verifier.h).
//
// Input layout: byte 0 selects what the rest is fed to:
//   0  ParseCompactJws, then ParseClaims of the payload (a few claims wanted)
//   1  ParseKeySet, as a JWK Set (operator input, but parsed by three
//      binaries)
//   2  TokenVerifier::Verify against a fixed key set holding one key of
//      every type (the HS256 secrets are known to the seeds), every
//      algorithm allowed, issuer and audience rules on
// Each result is checked against the contract; a violation aborts so that
// libFuzzer reports it.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/policy/jwt/jws.h"
#include "dataplane/policy/jwt/keys.h"
#include "dataplane/policy/jwt/verifier.h"

#define FUZZ_CHECK(cond)                                                    \
  do {                                                                      \
    if (!(cond)) {                                                          \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                  \
      std::abort();                                                         \
    }                                                                       \
  } while (0)

namespace sluice::policy::jwt::fuzz {
namespace {

constexpr int64_t kNow = 1700000000;

// One key of each type; kids r, p256, p384, ed, hs and one oct key without
// a kid. Secrets: "sluice-fuzz-secret-0123456789abcdef" (hs) and
// "sluice-fuzz-secret-without-a-kid!!".
constexpr char kJwks[] =
    R"({"keys":[)"
    R"({"kty":"RSA","kid":"r","n":"jY_MCKMS6IOV9uW9rNIhSldXJe5gk1OazGflSSmuxb)"
    R"(9mnHF-hJIinqCQfKxtZDrDMFKRLeW5anWSO-sf3RBTvRyCYmz7zNIhGrLAiNl9M6SJRWZn)"
    R"(4igyfYKXpQ6cAnAcBcN_V5WFNwiO75Ia8NGVS733cYGrojIbyLEXJkXBP5xRgGq74LPNjc)"
    R"(asFiV3xXDbCrQH_SCrYJW9y1GoOiTJqK-74XyE_4yQQyxzBsOy303cH18htT6TASBFX6Kw)"
    R"(TotrB_VFgC3jYZXnkWbp4KNf-l7Y4FWxOmu-h165ATZDf_8VNaqJCF_RXOPlS9pr185Ol9)"
    R"(GXrZaCSAhDmP8d0f2bJQ","e":"AQAB"})"
    ","
    R"({"kty":"EC","kid":"p256","crv":"P-256","x":"dqaZ5BuflTcEXA2FZrzqvTZ3mp)"
    R"(azMDawSSeTBYYogpI","y":"xodj42WbvMXhKtenXP1f82cl9Gm18V2O8MTp9r_sIUg"})"
    ","
    R"({"kty":"EC","kid":"p384","crv":"P-384","x":"RdjC8I_p1W7p2If8GX0QY_t4Kf)"
    R"(HFqAa1FVrfe_teZt_IuE_KVV47de5XRbUmi4sV","y":"td5vmt37TmudCQRcXSst3xW6V)"
    R"(vQLwi556wae1oZQaNMnjRFUPi4MKERZFnEz5pad"})"
    ","
    R"({"kty":"OKP","kid":"ed","crv":"Ed25519","x":"5-5vzfC2GJROXuovU82w90Nmk)"
    R"(GFsk7aoW4_3Qoje1SM"})"
    ","
    R"({"kty":"oct","kid":"hs","k":"c2x1aWNlLWZ1enotc2VjcmV0LTAxMjM0NTY3ODlhY)"
    R"(mNkZWY"})"
    ","
    R"({"kty":"oct","k":"c2x1aWNlLWZ1enotc2VjcmV0LXdpdGhvdXQtYS1raWQhIQ"})"
    "]}";

const std::vector<std::string>& Wanted() {
  static const auto* const wanted =
      new std::vector<std::string>{"sub", "email", "roles", "exp", "org"};
  return *wanted;
}

// What may go into a WWW-Authenticate error_description as it is.
bool IsPlainMessage(absl::string_view m) {
  if (m.empty()) return false;
  for (char c : m) {
    if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') return false;
  }
  return true;
}

void CheckClaims(const Claims& claims) {
  FUZZ_CHECK(claims.wanted.size() == Wanted().size());
  for (const ClaimValue& v : claims.wanted) {
    if (v.kind == ClaimValue::Kind::kAbsent || v.kind == ClaimValue::Kind::kOther) {
      FUZZ_CHECK(v.text.empty());
    }
  }
  constexpr int64_t kLimit = int64_t{1} << 62;
  if (claims.exp) FUZZ_CHECK(*claims.exp >= -kLimit && *claims.exp <= kLimit);
  if (claims.nbf) FUZZ_CHECK(*claims.nbf >= -kLimit && *claims.nbf <= kLimit);
}

void FuzzToken(std::string_view token) {
  absl::StatusOr<CompactJws> jws = ParseCompactJws(token);
  if (!jws.ok()) {
    FUZZ_CHECK(IsPlainMessage(jws.status().message()));
    return;
  }
  FUZZ_CHECK(token.size() <= kMaxTokenBytes);
  FUZZ_CHECK(!jws->header.alg.empty());
  FUZZ_CHECK(token.substr(0, jws->signing_input.size()) == jws->signing_input);
  FUZZ_CHECK(token.size() > jws->signing_input.size() &&
             token[jws->signing_input.size()] == '.');
  absl::StatusOr<Claims> claims = ParseClaims(jws->payload, Wanted());
  if (!claims.ok()) {
    FUZZ_CHECK(IsPlainMessage(claims.status().message()));
    return;
  }
  CheckClaims(*claims);
}

void FuzzKeySet(std::string_view jwks) {
  std::vector<KeySetError> errors;
  std::vector<VerificationKey> keys = ParseKeySet(jwks, {}, &errors);
  FUZZ_CHECK(!keys.empty() || !errors.empty());
  for (const KeySetError& e : errors) FUZZ_CHECK(e.field == "jwks" && !e.message.empty());
  for (const VerificationKey& key : keys) {
    bool any = false;
    for (Algorithm alg : kAllAlgorithms) any = any || key.CanVerify(alg);
    FUZZ_CHECK(any);
    // A key never verifies the empty signature.
    for (Algorithm alg : kAllAlgorithms) {
      if (key.CanVerify(alg)) FUZZ_CHECK(!key.Verify(alg, "a.b", ""));
    }
  }
}

const TokenVerifier& Verifier() {
  static const TokenVerifier* const verifier = [] {
    std::vector<KeySetError> errors;
    std::vector<VerificationKey> keys = ParseKeySet(kJwks, {}, &errors);
    FUZZ_CHECK(errors.empty() && keys.size() == 6);
    VerifierOptions options;
    options.algorithms.assign(std::begin(kAllAlgorithms), std::end(kAllAlgorithms));
    options.issuers = {"https://issuer.test"};
    options.audiences = {"api"};
    options.wanted_claims = Wanted();
    return new TokenVerifier(std::move(options), std::move(keys));
  }();
  return *verifier;
}

void FuzzVerify(std::string_view token) {
  absl::StatusOr<VerifiedToken> verified = Verifier().Verify(token, kNow);
  if (!verified.ok()) {
    FUZZ_CHECK(IsPlainMessage(verified.status().message()));
    return;
  }
  FUZZ_CHECK(verified->not_before <= kNow && kNow < verified->expires);
  CheckClaims(verified->claims);
  // Accepted tokens carry an iss and aud the rules allow.
  FUZZ_CHECK(verified->claims.iss && *verified->claims.iss == "https://issuer.test");
  FUZZ_CHECK(verified->claims.aud);
}

}  // namespace
}  // namespace sluice::policy::jwt::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      sluice::policy::jwt::fuzz::FuzzToken(rest);
      break;
    case 1:
      sluice::policy::jwt::fuzz::FuzzKeySet(rest);
      break;
    default:
      sluice::policy::jwt::fuzz::FuzzVerify(rest);
      break;
  }
  return 0;
}
