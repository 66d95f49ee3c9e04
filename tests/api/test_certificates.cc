#include "tests/api/test_certificates.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

namespace sluice::testing {
namespace {

void Require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "test_certificates: %s failed\n", what);
    std::abort();
  }
}

struct Free {
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
  void operator()(BASIC_CONSTRAINTS* p) const { BASIC_CONSTRAINTS_free(p); }
};
template <typename T>
using Ptr = std::unique_ptr<T, Free>;

Ptr<EVP_PKEY> GenerateKey(int type, int rsa_bits = 2048, int curve = NID_X9_62_prime256v1) {
  Ptr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new_id(type, nullptr));
  Require(ctx != nullptr, "EVP_PKEY_CTX_new_id");
  Require(EVP_PKEY_keygen_init(ctx.get()) == 1, "EVP_PKEY_keygen_init");
  if (type == EVP_PKEY_RSA) {
    Require(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), rsa_bits) == 1, "rsa bits");
  }
  if (type == EVP_PKEY_EC) {
    Require(EVP_PKEY_CTX_set_ec_paramgen_curve_nid(ctx.get(), curve) == 1,
            "EVP_PKEY_CTX_set_ec_paramgen_curve_nid");
  }
  EVP_PKEY* key = nullptr;
  Require(EVP_PKEY_keygen(ctx.get(), &key) == 1, "EVP_PKEY_keygen");
  return Ptr<EVP_PKEY>(key);
}

std::string BioText(BIO* bio) {
  const char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(size));
}

std::string KeyPem(EVP_PKEY* key, const std::string& passphrase) {
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (passphrase.empty()) {
    Require(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
            "PEM_write_bio_PrivateKey");
  } else {
    Require(PEM_write_bio_PKCS8PrivateKey(bio.get(), key, EVP_aes_128_cbc(),
                                          const_cast<char*>(passphrase.data()),
                                          static_cast<int>(passphrase.size()), nullptr,
                                          nullptr) == 1,
            "PEM_write_bio_PKCS8PrivateKey");
  }
  return BioText(bio.get());
}

Ptr<X509> ParseCertificate(const std::string& pem) {
  Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Ptr<X509> x509(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  Require(x509 != nullptr, "PEM_read_bio_X509");
  return x509;
}

Ptr<EVP_PKEY> ParseKey(const std::string& pem) {
  Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Ptr<EVP_PKEY> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  Require(key != nullptr, "PEM_read_bio_PrivateKey");
  return key;
}

int KeyId(KeyType type) {
  switch (type) {
    case KeyType::kEcdsaP256:
    case KeyType::kEcdsaP384:
    case KeyType::kEcdsaSecp256k1: return EVP_PKEY_EC;
    case KeyType::kEd25519: return EVP_PKEY_ED25519;
    case KeyType::kRsa2048:
    case KeyType::kRsa1024: return EVP_PKEY_RSA;
  }
  return EVP_PKEY_EC;
}

int RsaBits(KeyType type) { return type == KeyType::kRsa1024 ? 1024 : 2048; }

int CurveNid(KeyType type) {
  return type == KeyType::kEcdsaP384        ? NID_secp384r1
         : type == KeyType::kEcdsaSecp256k1 ? NID_secp256k1
                                            : NID_X9_62_prime256v1;
}

}  // namespace

std::string MakeKeyPem(KeyType type, const std::string& passphrase) {
  return KeyPem(GenerateKey(KeyId(type), RsaBits(type), CurveNid(type)).get(), passphrase);
}

std::string MakeX25519KeyPem() { return KeyPem(GenerateKey(EVP_PKEY_X25519).get(), ""); }

std::string ToTraditionalKeyPem(const std::string& key_pem) {
  Ptr<EVP_PKEY> key = ParseKey(key_pem);
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  Require(PEM_write_bio_PrivateKey_traditional(bio.get(), key.get(), nullptr, nullptr, 0, nullptr,
                                               nullptr) == 1,
          "PEM_write_bio_PrivateKey_traditional");
  return BioText(bio.get());
}

TestCertificate MakeCertificate(const CertificateSpec& spec) {
  static long serial = 1;
  Ptr<EVP_PKEY> key =
      GenerateKey(KeyId(spec.key_type), RsaBits(spec.key_type), CurveNid(spec.key_type));
  Ptr<X509> x509(X509_new());
  Require(x509 != nullptr, "X509_new");
  Require(X509_set_version(x509.get(), 2) == 1, "X509_set_version");
  Require(ASN1_INTEGER_set(X509_get_serialNumber(x509.get()), serial++) == 1, "serial");
  Require(ASN1_TIME_set(X509_getm_notBefore(x509.get()), absl::ToTimeT(spec.not_before)) != nullptr,
          "notBefore");
  Require(ASN1_TIME_set(X509_getm_notAfter(x509.get()), absl::ToTimeT(spec.not_after)) != nullptr,
          "notAfter");
  Require(X509_set_pubkey(x509.get(), key.get()) == 1, "X509_set_pubkey");
  X509_NAME* subject = X509_get_subject_name(x509.get());
  Require(X509_NAME_add_entry_by_txt(
              subject, "O", MBSTRING_ASC,
              reinterpret_cast<const unsigned char*>(spec.organization.c_str()), -1, -1, 0) == 1,
          "O");
  for (const std::string& unit : spec.organizational_units) {
    Require(X509_NAME_add_entry_by_txt(subject, "OU", MBSTRING_ASC,
                                       reinterpret_cast<const unsigned char*>(unit.c_str()), -1,
                                       -1, 0) == 1,
            "OU");
  }
  if (!spec.common_name.empty()) {
    Require(X509_NAME_add_entry_by_txt(
                subject, "CN", MBSTRING_ASC,
                reinterpret_cast<const unsigned char*>(spec.common_name.c_str()), -1, -1, 0) == 1,
            "CN");
  }
  if (!spec.dns_names.empty()) {
    Ptr<GENERAL_NAMES> names(GENERAL_NAMES_new());
    for (const std::string& dns : spec.dns_names) {
      ASN1_IA5STRING* ia5 = ASN1_IA5STRING_new();
      Require(ASN1_STRING_set(ia5, dns.data(), static_cast<int>(dns.size())) == 1, "SAN");
      GENERAL_NAME* name = GENERAL_NAME_new();
      GENERAL_NAME_set0_value(name, GEN_DNS, ia5);
      Require(sk_GENERAL_NAME_push(names.get(), name) > 0, "SAN push");
    }
    Require(X509_add1_ext_i2d(x509.get(), NID_subject_alt_name, names.get(), 0,
                              X509V3_ADD_DEFAULT) == 1,
            "subjectAltName");
  }
  if (spec.is_ca) {
    Ptr<BASIC_CONSTRAINTS> constraints(BASIC_CONSTRAINTS_new());
    constraints->ca = 1;
    Require(X509_add1_ext_i2d(x509.get(), NID_basic_constraints, constraints.get(), 1,
                              X509V3_ADD_DEFAULT) == 1,
            "basicConstraints");
  }
  Ptr<EVP_PKEY> signer;
  if (spec.issuer != nullptr) {
    Ptr<X509> issuer = ParseCertificate(spec.issuer->certificate_pem);
    Require(X509_set_issuer_name(x509.get(), X509_get_subject_name(issuer.get())) == 1,
            "issuer name");
    signer = ParseKey(spec.issuer->key_pem);
  } else {
    Require(X509_set_issuer_name(x509.get(), subject) == 1, "issuer name");
  }
  EVP_PKEY* signing_key = signer ? signer.get() : key.get();
  const EVP_MD* digest = EVP_PKEY_id(signing_key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
  Require(X509_sign(x509.get(), signing_key, digest) > 0, "X509_sign");

  TestCertificate out;
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  Require(PEM_write_bio_X509(bio.get(), x509.get()) == 1, "PEM_write_bio_X509");
  out.certificate_pem = BioText(bio.get());
  out.key_pem = KeyPem(key.get(), "");
  return out;
}

}  // namespace sluice::testing
