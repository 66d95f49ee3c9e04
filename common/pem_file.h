// Reading the PEM files that TLS flags name (certificates, keys, CAs).
//
// Not thread-safe in any interesting sense; used at start-up.
#ifndef SLUICE_COMMON_PEM_FILE_H_
#define SLUICE_COMMON_PEM_FILE_H_

#include <string>

#include "absl/status/statusor.h"

namespace sluice {

// The contents of `path`, which `flag` (e.g. "--tls-cert") named. Errors name
// the flag and the file: INVALID_ARGUMENT when it cannot be read, is empty,
// or holds no "-----BEGIN " block. Validity of the certificate or key itself
// is left to the TLS library that uses it.
absl::StatusOr<std::string> ReadPemFile(const std::string& flag,
                                        const std::string& path);

}  // namespace sluice

#endif  // SLUICE_COMMON_PEM_FILE_H_
