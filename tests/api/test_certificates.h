// Key material made at test time with OpenSSL, so that no key or certificate
// is checked in and none expires under the tests' feet.
//
// Thread-compatible; every call makes fresh keys.
#ifndef SLUICE_TESTS_API_TEST_CERTIFICATES_H_
#define SLUICE_TESTS_API_TEST_CERTIFICATES_H_

#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sluice::testing {

struct TestCertificate {
  std::string certificate_pem;
  std::string key_pem;  // PKCS#8 "PRIVATE KEY", not encrypted
};

// kRsa1024: too small for OpenSSL's default security level (refused).
// kEcdsaSecp256k1: a curve TLS does not sign with (refused by validation).
enum class KeyType { kEcdsaP256, kEcdsaP384, kEcdsaSecp256k1, kEd25519, kRsa2048, kRsa1024 };

struct CertificateSpec {
  std::string common_name = "api.example.com";
  std::string organization = "Sluice Tests";  // the subject's O, its first entry
  // OU entries of the subject, after its O and before its CN.
  std::vector<std::string> organizational_units;
  std::vector<std::string> dns_names;  // subjectAltName DNS entries; none when empty
  absl::Time not_before = absl::Now() - absl::Hours(1);
  absl::Time not_after = absl::Now() + absl::Hours(24);
  bool is_ca = false;
  KeyType key_type = KeyType::kEcdsaP256;
  // Signs with this certificate's key and names it as issuer; self-signed
  // when null.
  const TestCertificate* issuer = nullptr;
};

// Aborts the test binary on an OpenSSL failure (a bug in the helper).
TestCertificate MakeCertificate(const CertificateSpec& spec);

// A fresh private key as PEM: PKCS#8, or encrypted PKCS#8 with `passphrase`
// when it is not empty.
std::string MakeKeyPem(KeyType type, const std::string& passphrase = "");

// An X25519 key: a valid PEM private key that cannot sign.
std::string MakeX25519KeyPem();

// The same key in the traditional form ("RSA PRIVATE KEY", "EC PRIVATE
// KEY") that `openssl genrsa` and `openssl ecparam -genkey` write.
std::string ToTraditionalKeyPem(const std::string& key_pem);

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_API_TEST_CERTIFICATES_H_
