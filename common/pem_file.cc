#include "common/pem_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace sluice {

absl::StatusOr<std::string> ReadPemFile(const std::string& flag, const std::string& path,
                                        PemKind kind) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": cannot read: ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  std::string pem = text.str();
  if (pem.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " ", path, ": not a PEM file (no \"-----BEGIN \" line)"));
  }
  if (kind == PemKind::kCertificate && pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " ", path, ": holds no certificate (no \"-----BEGIN CERTIFICATE-----\" block)"));
  }
  if (kind == PemKind::kPrivateKey) {
    bool key = false;
    for (size_t at = pem.find("-----BEGIN "); at != std::string::npos && !key;
         at = pem.find("-----BEGIN ", at + 1)) {
      const size_t end = pem.find("-----", at + 11);
      key = end != std::string::npos && end >= at + 11 + 11 &&
            pem.compare(end - 11, 11, "PRIVATE KEY") == 0;
    }
    if (!key) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, " ", path, ": holds no private key (no \"-----BEGIN ... PRIVATE KEY-----\" block)"));
    }
  }
  return pem;
}

}  // namespace sluice
