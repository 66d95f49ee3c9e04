// Parsing and checking of TLS key material (Secret resources) with OpenSSL:
// used by validation (both planes) and by the proxy when it builds its TLS
// contexts. Uses only the OpenSSL API that BoringSSL shares.
//
// Pure functions; thread-safe.
#ifndef SLUICE_API_TLS_MATERIAL_H_
#define SLUICE_API_TLS_MATERIAL_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sluice/config/v1/config.pb.h"

namespace sluice::api {

inline constexpr size_t kMaxCertificateChainBytes = 64 * 1024;
inline constexpr size_t kMaxCaBundleBytes = 1024 * 1024;

// What a certificate says about itself, for SNI selection and for errors.
struct CertificateInfo {
  // DNS subjectAltNames, lower case ("api.example.com", "*.example.com");
  // the subject CN when the certificate has no DNS SAN.
  std::vector<std::string> dns_names;
  std::string subject;  // one line, e.g. "CN=api.example.com,O=Example"
  absl::Time not_before;
  absl::Time not_after;
  // The key's kind, which TLS 1.2 cipher suites can use it: kRsa needs an
  // RSA-authenticated suite (ECDHE-RSA-...), kEc (ECDSA, Ed25519) an
  // ECDSA-authenticated one (ECDHE-ECDSA-...).
  enum class KeyKind { kRsa, kEc, kOther };
  KeyKind key_kind = KeyKind::kOther;
  // False for an EC key on a curve other than P-256, P-384 and P-521, which
  // TLS 1.3 has no signature scheme for (secp256k1...): see CheckTlsCurve.
  bool tls_curve = true;
};

// An error found in a Secret, with the field it is about relative to the
// Secret's spec (e.g. "tls_certificate.private_key").
struct TlsMaterialError {
  std::string field;
  std::string message;
};

// Parses the chain (leaf first) and the key; checks that the key matches the
// leaf and that the leaf is valid at `now`. On failure returns false and
// fills `error`. Equivalent to ParseTlsCertificate, then CheckValidAt.
bool InspectTlsCertificate(const config::v1::TlsCertificate& certificate, absl::Time now,
                           CertificateInfo* info, TlsMaterialError* error);

// The checks of InspectTlsCertificate that depend only on the content (PEM
// syntax, sizes, key type, key matching the leaf), not on the time. Config
// validation uses this: its result must be the same in every process at
// every moment (see api/validation.h).
bool ParseTlsCertificate(const config::v1::TlsCertificate& certificate, CertificateInfo* info,
                         TlsMaterialError* error);

// The leaf's (the chain's first certificate's) notAfter, or nullopt when
// `chain_pem` holds no certificate that parses. The key is not looked at.
std::optional<absl::Time> LeafNotAfter(const std::string& chain_pem);

// What an operator should hear about a CA bundle that validation takes:
// each certificate not valid at `now` ("certificate CN=Old CA (PEM block 2
// of 3) expired at 2026-12-01T00:00:00Z"), which a chain leading to it
// cannot pass. Empty when all are valid, or when the bundle does not parse.
std::vector<std::string> TrustedCaNotes(const config::v1::TrustedCa& ca, absl::Time now);

// The kind of the leaf's public key (the private key's, in a Secret that
// passed ParseTlsCertificate), or nullopt when `chain_pem` holds no
// certificate that parses. The private key is not parsed: the rules across
// resources ask this of every listener's certificates on every change, and
// parsing and matching each RSA key took 2.3 s per apply at 50 listeners
// of 64 certificates.
std::optional<CertificateInfo::KeyKind> LeafKeyKind(const std::string& chain_pem);

// Whether `now` is within [info.not_before, info.not_after]; else false with
// `error` on "tls_certificate.certificate_chain" ("certificate expired at
// 2024-01-01T00:00:00Z", "certificate is not valid before ...").
bool CheckValidAt(const CertificateInfo& info, absl::Time now, TlsMaterialError* error);

// Whether the key is on a curve TLS 1.3 signs with (info.tls_curve); else
// false with `error` on "tls_certificate.private_key". An apply-time rule
// (api::ValidateAtApplyTime), not a content rule: builds before it accepted
// such keys, and a proxy that meets a stored one keeps serving it (TLS 1.2
// clients that offer the curve can still connect).
bool CheckTlsCurve(const CertificateInfo& info, TlsMaterialError* error);

// Parses a CA bundle (at least one certificate). On failure returns false and
// fills `error`.
bool InspectTrustedCa(const config::v1::TrustedCa& ca, TlsMaterialError* error);

// Whether `server_name` (an SNI value, any case) matches `dns_name` from
// CertificateInfo: equal ignoring case, or "*.rest" matching exactly one
// more label in front of "rest".
bool DnsNameMatches(std::string_view dns_name, std::string_view server_name);

}  // namespace sluice::api

#endif  // SLUICE_API_TLS_MATERIAL_H_
