// Reading the PEM files that TLS flags name (certificates, keys, CAs).
//
// Not thread-safe in any interesting sense; used at start-up.
#ifndef SLUICE_COMMON_PEM_FILE_H_
#define SLUICE_COMMON_PEM_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sluice {

// What a PEM file must hold: any block, a certificate, or a private key.
enum class PemKind { kAny, kCertificate, kPrivateKey };

// The contents of `path`, which `flag` (e.g. "--tls-cert") named. Errors name
// the flag and the file: INVALID_ARGUMENT when it cannot be read, is empty,
// holds no "-----BEGIN " block, or none of `kind` (a key given for a CA, a
// certificate for a key: before, the TLS library refused it later, and a
// client retried forever). Validity of the certificate or key itself is left
// to the TLS library that uses it.
absl::StatusOr<std::string> ReadPemFile(const std::string& flag, const std::string& path,
                                        PemKind kind = PemKind::kAny);

// INVALID_ARGUMENT naming both flags when the private key `key_pem` (from
// `key_flag`) is not the one of the first certificate in `cert_pem` (from
// `cert_flag`), or either does not parse, nor does every certificate of the
// chain (CheckCertificatesParse): before, a server started and failed every
// handshake, a client retried for ever.
absl::Status CheckKeyMatchesCertificate(const std::string& cert_flag, const std::string& cert_pem,
                                        const std::string& key_flag, const std::string& key_pem);

// Why the first certificate in the file at `path` is not valid now ("expired
// on Jan  2 03:04:05 2026 GMT", "is not valid before ..."), or "" (also
// when the file does not read or parse: other checks say so).
std::string CertificateTimeProblem(const std::string& path);
// The same for the first certificate of `pem`.
std::string CertificateTimeProblemOfPem(const std::string& pem);

// "FILE is readable by every user on this host (mode 0644): chmod o-r FILE"
// when the file at `path` (a private key or a token file that `flag`
// named) grants read to others, else "" (also when it cannot be stat'ed:
// reading it says so). Group read is left alone: Kubernetes mounts secrets
// 0440 for the pod's group. The callers log it as a warning, as a start goes
// on: ssh refuses such a key, nginx and Envoy say nothing.
std::string OthersCanRead(const std::string& flag, const std::string& path);

// INVALID_ARGUMENT naming `flag` unless every certificate block of `pem`
// parses (a CA bundle), and there is at least one.
absl::Status CheckCertificatesParse(const std::string& flag, const std::string& pem);

}  // namespace sluice

#endif  // SLUICE_COMMON_PEM_FILE_H_
