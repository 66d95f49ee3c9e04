// The compact JWS serialization (RFC 7515 7.1) and the JWT claims set (RFC
// 7519) read from untrusted bytes: three base64url parts (no padding), a
// JOSE header and a payload that are JSON objects. Bytes in, structs out:
// no keys, no clock, no I/O, so a unit test or a fuzzer
// (tests/fuzz/jwt_fuzzer.cc) drives every path.
//
// Every error is INVALID_ARGUMENT with a message "malformed token: ..."
// that quotes nothing of the token (it goes into a WWW-Authenticate
// header). Member names repeated in the header or the payload are refused
// (RFC 7515 4, RFC 7519 4). JSON is parsed with simdjson, bounded by
// kMaxJsonDepth.
//
// Thread-safe: each thread parses with its own parser.
#ifndef SLUICE_DATAPLANE_POLICY_JWT_JWS_H_
#define SLUICE_DATAPLANE_POLICY_JWT_JWS_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace sluice::policy::jwt {

// Longest token accepted, in bytes (as sent, base64url).
inline constexpr size_t kMaxTokenBytes = 8192;
// Deepest nesting of arrays and objects in the header or the payload.
inline constexpr size_t kMaxJsonDepth = 32;

struct JoseHeader {
  std::string alg;  // as written; never empty
  std::optional<std::string> kid;
  std::optional<std::string> typ;
};

struct CompactJws {
  JoseHeader header;
  // "<header>.<payload>" as it was in the token: what the signature covers.
  std::string_view signing_input;
  std::string payload;    // decoded (the claims set's JSON for a JWT)
  std::string signature;  // decoded
};

// Splits and decodes `token`; the header must be a JSON object with a
// string `alg`, optional string `kid` and `typ`, and no `crit` (no
// extension is understood). Does not look into the payload.
// `signing_input` points into `token`.
absl::StatusOr<CompactJws> ParseCompactJws(std::string_view token);

// A claim asked for by name, as a header value would carry it.
struct ClaimValue {
  enum class Kind {
    kAbsent,
    kString,    // text is the string
    kRendered,  // a number, a boolean, or an array of strings, numbers and
                // booleans joined with ","; text is that rendering
    kOther,     // null, an object, or an array holding anything else
  };
  Kind kind = Kind::kAbsent;
  std::string text;
};

struct Claims {
  // NumericDates (RFC 7519 2) in milliseconds: `exp` rounded up, `nbf`
  // rounded down, both clamped to +-2^52 seconds.
  std::optional<int64_t> exp;
  std::optional<int64_t> nbf;
  std::optional<std::string> iss;
  // `aud` as a string or an array of strings; nullopt when absent.
  std::optional<std::vector<std::string>> aud;
  // One per name in ParseClaims' `wanted`, in that order.
  std::vector<ClaimValue> wanted;
};

// Reads the claims set: a JSON object whose `exp` and `nbf`, when present,
// are numbers, `iss` a string and `aud` a string or an array of strings.
absl::StatusOr<Claims> ParseClaims(std::string_view payload,
                                   absl::Span<const std::string> wanted);

// base64url without padding (RFC 7515 2), as JWS parts and JWK members
// use it; nullopt for any other character, a '=' or an impossible length.
std::optional<std::string> DecodeBase64Url(std::string_view in);

}  // namespace sluice::policy::jwt

#endif  // SLUICE_DATAPLANE_POLICY_JWT_JWS_H_
