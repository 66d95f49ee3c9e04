#include "common/pem_file.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
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

std::string OthersCanRead(const std::string& flag, const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || (st.st_mode & S_IROTH) == 0) return "";
  char mode[8];
  std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return absl::StrCat(flag, " ", path, " is readable by every user on this host (mode ", mode,
                      "): chmod o-r ", path);
}

absl::Status CheckKeyMatchesCertificate(const std::string& cert_flag, const std::string& cert_pem,
                                        const std::string& key_flag, const std::string& key_pem) {
  BIO* cert_bio = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  X509* cert = cert_bio != nullptr ? PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr)
                                   : nullptr;
  BIO_free(cert_bio);
  BIO* key_bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = key_bio != nullptr
                      ? PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr)
                      : nullptr;
  BIO_free(key_bio);
  absl::Status status;
  if (cert == nullptr) {
    status = absl::InvalidArgumentError(absl::StrCat(cert_flag, ": the certificate does not parse"));
  } else if (key == nullptr) {
    status = absl::InvalidArgumentError(
        absl::StrCat(key_flag, ": the private key does not parse (an encrypted key is not taken)"));
  } else if (X509_check_private_key(cert, key) != 1) {
    status = absl::InvalidArgumentError(absl::StrCat(
        key_flag, " is not the private key of ", cert_flag, "'s certificate (another key pair)"));
  }
  ERR_clear_error();
  X509_free(cert);
  EVP_PKEY_free(key);
  // The chain whole: a broken intermediate is served as a lone leaf.
  if (status.ok()) status = CheckCertificatesParse(cert_flag, cert_pem);
  return status;
}

std::string CertificateTimeProblem(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::stringstream text;
  text << in.rdbuf();
  return CertificateTimeProblemOfPem(text.str());
}

std::string CertificateTimeProblemOfPem(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = bio != nullptr ? PEM_read_bio_X509(bio, nullptr, nullptr, nullptr) : nullptr;
  BIO_free(bio);
  std::string problem;
  auto text = [](const ASN1_TIME* time) {
    BIO* out = BIO_new(BIO_s_mem());
    std::string s;
    if (out != nullptr && ASN1_TIME_print(out, time) == 1) {
      char* data = nullptr;
      const long n = BIO_get_mem_data(out, &data);
      if (n > 0) s.assign(data, static_cast<size_t>(n));
    }
    BIO_free(out);
    return s;
  };
  if (cert != nullptr) {
    if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) {
      problem = absl::StrCat("expired on ", text(X509_get0_notAfter(cert)));
    } else if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) {
      problem = absl::StrCat("is not valid before ", text(X509_get0_notBefore(cert)));
    }
  }
  X509_free(cert);
  ERR_clear_error();
  return problem;
}

absl::Status CheckCertificatesParse(const std::string& flag, const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  int parsed = 0;
  bool broken = bio == nullptr;
  while (!broken) {
    X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    if (cert == nullptr) {
      // The end of the text, or a block that does not parse.
      const unsigned long error = ERR_peek_last_error();
      broken = !(ERR_GET_LIB(error) == ERR_LIB_PEM &&
                 ERR_GET_REASON(error) == PEM_R_NO_START_LINE && parsed > 0);
      break;
    }
    ++parsed;
    X509_free(cert);
  }
  BIO_free(bio);
  ERR_clear_error();
  if (broken) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", parsed == 0 ? "no certificate parses"
                                             : "a certificate after the first does not parse"));
  }
  return absl::OkStatus();
}

}  // namespace sluice
