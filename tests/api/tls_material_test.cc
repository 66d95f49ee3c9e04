// api/tls_material: what an operator is told about the key material they
// apply. Certificates and keys are made at test time (test_certificates.h).
#include "api/tls_material.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/api/test_certificates.h"

namespace sluice::api {
namespace {

using sluice::testing::CertificateSpec;
using sluice::testing::KeyType;
using sluice::testing::MakeCertificate;
using sluice::testing::MakeKeyPem;
using sluice::testing::TestCertificate;

config::v1::TlsCertificate Material(const std::string& chain, const std::string& key) {
  config::v1::TlsCertificate certificate;
  certificate.set_certificate_chain(chain);
  certificate.set_private_key(key);
  return certificate;
}

config::v1::TlsCertificate Material(const TestCertificate& c) {
  return Material(c.certificate_pem, c.key_pem);
}

// "field: message", or "ok".
std::string Inspect(const config::v1::TlsCertificate& certificate, absl::Time now = absl::Now(),
                    CertificateInfo* info = nullptr) {
  TlsMaterialError error;
  if (InspectTlsCertificate(certificate, now, info, &error)) return "ok";
  return absl::StrCat(error.field, ": ", error.message);
}

std::string InspectCa(const std::string& bundle) {
  config::v1::TrustedCa ca;
  ca.set_ca_certificates(bundle);
  TlsMaterialError error;
  if (InspectTrustedCa(ca, &error)) return "ok";
  return absl::StrCat(error.field, ": ", error.message);
}

absl::Time Utc(int year, int month, int day) {
  return absl::FromCivil(absl::CivilDay(year, month, day), absl::UTCTimeZone());
}

// No line of the key's base64 body appears in `text`.
void ExpectNoKeyMaterial(const std::string& text, const std::string& key_pem) {
  for (absl::string_view line : absl::StrSplit(key_pem, '\n')) {
    if (line.empty() || absl::StartsWith(line, "-----")) continue;
    EXPECT_EQ(text.find(std::string(line)), std::string::npos) << "key material in: " << text;
  }
}

TEST(TlsMaterialTest, ValidCertificateAndKeyGiveSanNamesLowerCase) {
  CertificateSpec spec;
  spec.common_name = "ignored.example.com";
  spec.dns_names = {"api.example.com", "*.API.Example.com"};
  spec.not_before = Utc(2020, 1, 1);
  spec.not_after = Utc(2099, 1, 1);
  CertificateInfo info;
  ASSERT_EQ(Inspect(Material(MakeCertificate(spec)), absl::Now(), &info), "ok");
  EXPECT_EQ(info.dns_names, (std::vector<std::string>{"api.example.com", "*.api.example.com"}));
  EXPECT_EQ(info.subject, "CN=ignored.example.com,O=Sluice Tests");
  EXPECT_EQ(info.not_before, Utc(2020, 1, 1));
  EXPECT_EQ(info.not_after, Utc(2099, 1, 1));
}

// The leaf's expiry alone (sluice-control's certificate expiry metric), the
// key not looked at; nullopt for no certificate.
TEST(TlsMaterialTest, LeafNotAfterReadsTheFirstCertificate) {
  CertificateSpec spec;
  spec.common_name = "api.example.com";
  spec.not_before = Utc(2020, 1, 1);
  spec.not_after = Utc(2031, 6, 1);
  const config::v1::TlsCertificate material = Material(MakeCertificate(spec));
  EXPECT_EQ(LeafNotAfter(material.certificate_chain()), Utc(2031, 6, 1));
  EXPECT_EQ(LeafNotAfter(""), std::nullopt);
  EXPECT_EQ(LeafNotAfter("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"),
            std::nullopt);
}

// The leaf's public key kind, the private key not parsed (the rules across
// resources ask it of every listener's certificates on every change).
TEST(TlsMaterialTest, LeafKeyKindReadsTheLeafsPublicKey) {
  for (auto [type, kind] : {std::pair{KeyType::kRsa2048, CertificateInfo::KeyKind::kRsa},
                            std::pair{KeyType::kEcdsaP256, CertificateInfo::KeyKind::kEc},
                            std::pair{KeyType::kEd25519, CertificateInfo::KeyKind::kEc}}) {
    CertificateSpec spec;
    spec.key_type = type;
    const config::v1::TlsCertificate material = Material(MakeCertificate(spec));
    EXPECT_EQ(LeafKeyKind(material.certificate_chain()), kind);
    CertificateInfo info;
    ASSERT_TRUE(ParseTlsCertificate(material, &info, nullptr));
    EXPECT_EQ(info.key_kind, kind);  // what the private key says
  }
  EXPECT_EQ(LeafKeyKind(""), std::nullopt);
  EXPECT_EQ(LeafKeyKind("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"),
            std::nullopt);
}

TEST(TlsMaterialTest, SubjectCommonNameWhenThereIsNoDnsSan) {
  CertificateSpec spec;
  spec.common_name = "Legacy.Example.com";
  CertificateInfo info;
  ASSERT_EQ(Inspect(Material(MakeCertificate(spec)), absl::Now(), &info), "ok");
  EXPECT_EQ(info.dns_names, std::vector<std::string>{"legacy.example.com"});
}

TEST(TlsMaterialTest, Ed25519KeysAreAccepted) {
  CertificateSpec spec;
  spec.key_type = KeyType::kEd25519;
  EXPECT_EQ(Inspect(Material(MakeCertificate(spec))), "ok");
}

TEST(TlsMaterialTest, RsaAndTraditionalKeyFormsAreAccepted) {
  CertificateSpec spec;
  spec.key_type = KeyType::kRsa2048;
  TestCertificate rsa = MakeCertificate(spec);
  EXPECT_EQ(Inspect(Material(rsa)), "ok");
  std::string traditional = sluice::testing::ToTraditionalKeyPem(rsa.key_pem);
  ASSERT_TRUE(absl::StartsWith(traditional, "-----BEGIN RSA PRIVATE KEY-----")) << traditional;
  EXPECT_EQ(Inspect(Material(rsa.certificate_pem, traditional)), "ok");

  TestCertificate ec = MakeCertificate({});
  traditional = sluice::testing::ToTraditionalKeyPem(ec.key_pem);
  ASSERT_TRUE(absl::StartsWith(traditional, "-----BEGIN EC PRIVATE KEY-----")) << traditional;
  // As `openssl ecparam -genkey` writes it: the curve first.
  std::string with_params =
      "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n" +
      traditional;
  EXPECT_EQ(Inspect(Material(ec.certificate_pem, with_params)), "ok");
}

// Before: accepted at apply, then refused by every proxy ("ee key too
// small"), so the version was stored but never served.
TEST(TlsMaterialTest, AnRsaKeyUnder2048BitsIsRefused) {
  CertificateSpec spec;
  spec.key_type = KeyType::kRsa1024;
  TestCertificate small = MakeCertificate(spec);
  EXPECT_EQ(Inspect(Material(small)),
            "tls_certificate.private_key: is a 1024-bit RSA key; at least 2048 bits are needed "
            "(TLS libraries refuse smaller ones)");
}

// Before: a secp256k1 certificate was accepted, then no TLS 1.3 client (nor
// curl) could finish a handshake with the listener.
TEST(TlsMaterialTest, OnlyTheCurvesTlsSignsWithAreAccepted) {
  CertificateSpec spec;
  spec.key_type = KeyType::kEcdsaP384;
  EXPECT_EQ(Inspect(Material(MakeCertificate(spec))), "ok");
  spec.key_type = KeyType::kEcdsaSecp256k1;
  CertificateInfo info;
  // The content is valid (a proxy holding one keeps serving it); an apply
  // is refused (api::ValidateAtApplyTime).
  EXPECT_EQ(Inspect(Material(MakeCertificate(spec)), absl::Now(), &info), "ok");
  TlsMaterialError error;
  EXPECT_FALSE(CheckTlsCurve(info, &error));
  EXPECT_EQ(absl::StrCat(error.field, ": ", error.message),
            "tls_certificate.private_key: is an EC key on a curve other than P-256, P-384 or "
            "P-521: TLS 1.3 signs with those only, and clients refuse the handshake");
}

// A PEM pasted on one line (YAML `field: PEM` without `|`): the error
// quoted the whole BEGIN line, key included.
TEST(TlsMaterialTest, AOneLinePemIsRefusedWithoutQuotingIt) {
  TestCertificate c = MakeCertificate({});
  std::string one_line = absl::StrJoin(absl::StrSplit(c.key_pem, '\n', absl::SkipEmpty()), " ");
  std::string e = Inspect(Material(c.certificate_pem, one_line));
  EXPECT_TRUE(absl::StrContains(e, "tls_certificate.private_key: line 1 is a '-----BEGIN' line "
                                   "that goes on"))
      << e;
  ExpectNoKeyMaterial(e, c.key_pem);
}

TEST(TlsMaterialTest, ChainWithIntermediateLeafFirst) {
  CertificateSpec root_spec;
  root_spec.common_name = "Root";
  root_spec.is_ca = true;
  TestCertificate root = MakeCertificate(root_spec);
  CertificateSpec intermediate_spec;
  intermediate_spec.common_name = "Intermediate";
  intermediate_spec.is_ca = true;
  intermediate_spec.issuer = &root;
  TestCertificate intermediate = MakeCertificate(intermediate_spec);
  CertificateSpec leaf_spec;
  leaf_spec.issuer = &intermediate;
  TestCertificate leaf = MakeCertificate(leaf_spec);

  EXPECT_EQ(Inspect(Material(leaf.certificate_pem + intermediate.certificate_pem, leaf.key_pem)),
            "ok");
  // The operator put the intermediate first: say so rather than only "mismatch".
  EXPECT_EQ(Inspect(Material(intermediate.certificate_pem + leaf.certificate_pem, leaf.key_pem)),
            "tls_certificate.private_key: does not match the certificate's public key (it "
            "matches certificate 2 of the chain: the leaf certificate must come first)");
}

TEST(TlsMaterialTest, MismatchedKey) {
  TestCertificate a = MakeCertificate({});
  TestCertificate b = MakeCertificate({});
  EXPECT_EQ(Inspect(Material(a.certificate_pem, b.key_pem)),
            "tls_certificate.private_key: does not match the certificate's public key");
  // An Ed25519 key against an ECDSA certificate is a mismatch too.
  EXPECT_EQ(Inspect(Material(a.certificate_pem, MakeKeyPem(KeyType::kEd25519))),
            "tls_certificate.private_key: does not match the certificate's public key");
}

TEST(TlsMaterialTest, ExpiredAndNotYetValid) {
  CertificateSpec spec;
  spec.not_before = Utc(2023, 1, 1);
  spec.not_after = Utc(2024, 1, 1);
  auto certificate = Material(MakeCertificate(spec));
  EXPECT_EQ(Inspect(certificate, Utc(2024, 6, 1)),
            "tls_certificate.certificate_chain: certificate expired at 2024-01-01T00:00:00Z");
  EXPECT_EQ(Inspect(certificate, Utc(2022, 6, 1)),
            "tls_certificate.certificate_chain: certificate is not valid before "
            "2023-01-01T00:00:00Z");
  EXPECT_EQ(Inspect(certificate, Utc(2023, 6, 1)), "ok");
  // The content checks alone do not look at the time.
  TlsMaterialError error;
  CertificateInfo info;
  EXPECT_TRUE(ParseTlsCertificate(certificate, &info, &error));
  EXPECT_FALSE(CheckValidAt(info, Utc(2024, 1, 1) + absl::Seconds(1), &error));
  EXPECT_TRUE(CheckValidAt(info, Utc(2024, 1, 1), &error));
}

TEST(TlsMaterialTest, EmptyFieldsAreRequired) {
  TestCertificate c = MakeCertificate({});
  EXPECT_EQ(Inspect(Material("", c.key_pem)), "tls_certificate.certificate_chain: is required");
  EXPECT_EQ(Inspect(Material(c.certificate_pem, "")), "tls_certificate.private_key: is required");
  // A key's size is checked at apply only (api::ValidateNewContent): a
  // stored one of any size still parses.
  const std::string padded = std::string(70000, '\n') + c.key_pem;
  EXPECT_EQ(Inspect(Material(c.certificate_pem, padded)), "ok");
}

TEST(TlsMaterialTest, GarbageIsNotAPemCertificate) {
  TestCertificate c = MakeCertificate({});
  EXPECT_EQ(Inspect(Material("hello", c.key_pem)),
            "tls_certificate.certificate_chain: not a PEM certificate: no '-----BEGIN "
            "CERTIFICATE-----' line found");
  // A block whose body is not a certificate: OpenSSL's reason is passed on.
  std::string broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  std::string e = Inspect(Material(broken, c.key_pem));
  EXPECT_TRUE(absl::StartsWith(e, "tls_certificate.certificate_chain: not a PEM certificate: "))
      << e;
  EXPECT_GT(e.size(), std::string("tls_certificate.certificate_chain: not a PEM certificate: ").size());
  // Base64 that decodes to no DER: OpenSSL's ASN.1 reason alone ("too
  // long") read as a size limit (probe).
  e = Inspect(Material(
      "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", c.key_pem));
  EXPECT_TRUE(absl::StartsWith(e, "tls_certificate.certificate_chain: not a PEM certificate: the "
                                  "block's base64 decodes, but not to a certificate (DER: "))
      << e;
  EXPECT_EQ(Inspect(Material(
                "-----BEGIN CERTIFICATE-----\n!!!!@@@@\n-----END CERTIFICATE-----\n", c.key_pem)),
            "tls_certificate.certificate_chain: not a PEM certificate: bad base64 decode");
  e = Inspect(Material(c.certificate_pem,
                       "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n"
                       "-----END PRIVATE KEY-----\n"));
  EXPECT_TRUE(absl::StartsWith(e, "tls_certificate.private_key: not a PEM private key: "))
      << e;
  // An empty block says so (OpenSSL queues no reason: "unknown error").
  EXPECT_EQ(Inspect(Material("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
                             c.key_pem)),
            "tls_certificate.certificate_chain: not a PEM certificate: the block is empty "
            "(nothing between its BEGIN and END lines)");
  EXPECT_EQ(Inspect(Material(c.certificate_pem,
                             "-----BEGIN PRIVATE KEY-----\n \n-----END PRIVATE KEY-----\n")),
            "tls_certificate.private_key: not a PEM private key: the block is empty "
            "(nothing between its BEGIN and END lines)");
  // Cut short.
  std::string cut = c.certificate_pem.substr(0, c.certificate_pem.size() / 2);
  EXPECT_EQ(Inspect(Material(cut, c.key_pem)),
            "tls_certificate.certificate_chain: '-----BEGIN CERTIFICATE-----' at line 1 has no "
            "matching '-----END CERTIFICATE-----' line (is the text cut short?)");
}

TEST(TlsMaterialTest, TrailingTextIsRefused) {
  TestCertificate c = MakeCertificate({});
  int lines = static_cast<int>(std::count(c.certificate_pem.begin(), c.certificate_pem.end(), '\n'));
  EXPECT_EQ(Inspect(Material(c.certificate_pem + "\nMIIBxyz\n", c.key_pem)),
            absl::StrCat("tls_certificate.certificate_chain: unexpected text at line ", lines + 2,
                         ", after the last PEM block"));
  EXPECT_EQ(Inspect(Material(c.certificate_pem, c.key_pem + "oops\n")),
            absl::StrCat("tls_certificate.private_key: unexpected text at line 6, after the last "
                         "PEM block"));
  // Explanatory text before a block (as `openssl x509 -text` writes) is fine.
  EXPECT_EQ(Inspect(Material("subject=CN = api.example.com\n" + c.certificate_pem, c.key_pem)),
            "ok");
  // So are blank lines and CRLF line ends.
  std::string crlf;
  for (char ch : c.certificate_pem) crlf += ch == '\n' ? std::string("\r\n") : std::string(1, ch);
  EXPECT_EQ(Inspect(Material(crlf + "\n\n", c.key_pem)), "ok");
}

TEST(TlsMaterialTest, KeyAndCertificateInEachOthersField) {
  TestCertificate c = MakeCertificate({});
  std::string e = Inspect(Material(c.key_pem, c.key_pem));
  EXPECT_EQ(e,
            "tls_certificate.certificate_chain: PEM block 1 (line 1) is a 'PRIVATE KEY', not a "
            "'CERTIFICATE' (is the private key in the wrong field?)");
  ExpectNoKeyMaterial(e, c.key_pem);
  EXPECT_EQ(Inspect(Material(c.certificate_pem, c.certificate_pem)),
            "tls_certificate.private_key: PEM block 1 (line 1) is a 'CERTIFICATE', not a "
            "private key (is the certificate in the wrong field?)");
  EXPECT_EQ(Inspect(Material(c.certificate_pem, "not a key")),
            "tls_certificate.private_key: not a PEM private key: no '-----BEGIN PRIVATE "
            "KEY-----' line found");
  EXPECT_EQ(Inspect(Material(c.certificate_pem, c.key_pem + c.key_pem)),
            "tls_certificate.private_key: holds 2 private keys; exactly one is expected");
}

TEST(TlsMaterialTest, BrokenKeyBodyIsReportedWithoutItsContent) {
  TestCertificate c = MakeCertificate({});
  std::string key = c.key_pem;
  key[40] = key[40] == 'A' ? 'B' : 'A';  // inside the base64 body
  key.insert(45, "!!");
  std::string e = Inspect(Material(c.certificate_pem, key));
  EXPECT_TRUE(absl::StartsWith(e, "tls_certificate.private_key: not a PEM private key: ") ||
              absl::StartsWith(e, "tls_certificate.private_key: does not match"))
      << e;
  ExpectNoKeyMaterial(e, key);
}

TEST(TlsMaterialTest, EncryptedKeysAreUnsupported) {
  const std::string kEncrypted =
      "tls_certificate.private_key: is encrypted; encrypted private keys are not supported: "
      "give the key without a passphrase (e.g. the output of `openssl pkey -in KEY.pem`)";
  TestCertificate c = MakeCertificate({});
  EXPECT_EQ(Inspect(Material(c.certificate_pem,
                             MakeKeyPem(KeyType::kEcdsaP256, "correct horse"))),
            kEncrypted);
  // The traditional (RFC 1421) form, as `openssl genrsa -aes128` writes it.
  EXPECT_EQ(Inspect(Material(c.certificate_pem,
                             "-----BEGIN RSA PRIVATE KEY-----\n"
                             "Proc-Type: 4,ENCRYPTED\n"
                             "DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\n"
                             "AAAA\n"
                             "-----END RSA PRIVATE KEY-----\n")),
            kEncrypted);
}

TEST(TlsMaterialTest, KeyTypesOtherThanRsaEcdsaEd25519AreRefused) {
  TestCertificate c = MakeCertificate({});
  EXPECT_EQ(Inspect(Material(c.certificate_pem, sluice::testing::MakeX25519KeyPem())),
            "tls_certificate.private_key: is a X25519 key; RSA, ECDSA and Ed25519 keys are "
            "supported");
}

TEST(TlsMaterialTest, OversizedChain) {
  TestCertificate c = MakeCertificate({});
  std::string chain = c.certificate_pem;
  while (chain.size() < 70000) chain += c.certificate_pem;
  chain.resize(70000);
  EXPECT_EQ(Inspect(Material(chain, c.key_pem)),
            "tls_certificate.certificate_chain: certificate chain is 70000 bytes, at most 65536");
}

TEST(TlsMaterialTest, CaBundles) {
  CertificateSpec spec;
  spec.is_ca = true;
  TestCertificate a = MakeCertificate(spec);
  TestCertificate b = MakeCertificate(spec);
  EXPECT_EQ(InspectCa(a.certificate_pem), "ok");
  // Labels between certificates, as curl's cacert.pem has them.
  EXPECT_EQ(InspectCa("## bundle\n\nRoot A\n======\n" + a.certificate_pem + "\nRoot B\n======\n" +
                      b.certificate_pem),
            "ok");
  EXPECT_EQ(InspectCa(""), "trusted_ca.ca_certificates: is required");
  EXPECT_EQ(InspectCa("garbage\n"),
            "trusted_ca.ca_certificates: no certificate found (expected PEM blocks '-----BEGIN "
            "CERTIFICATE-----')");
  EXPECT_EQ(InspectCa(a.certificate_pem + a.key_pem),
            absl::StrCat("trusted_ca.ca_certificates: PEM block 2 (line ",
                         std::count(a.certificate_pem.begin(), a.certificate_pem.end(), '\n') + 1,
                         ") is a 'PRIVATE KEY', not a 'CERTIFICATE' (is the private key in the "
                         "wrong field?)"));
  std::string broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  EXPECT_TRUE(absl::StartsWith(InspectCa(a.certificate_pem + broken),
                               "trusted_ca.ca_certificates: not a PEM certificate: "));
  EXPECT_TRUE(absl::EndsWith(InspectCa(a.certificate_pem + broken), " (PEM block 2 of 2)"));
  std::string big;
  while (big.size() <= kMaxCaBundleBytes) big += a.certificate_pem;
  EXPECT_EQ(InspectCa(big), absl::StrCat("trusted_ca.ca_certificates: CA bundle is ", big.size(),
                                         " bytes, at most 1048576"));
}

TEST(TlsMaterialTest, DnsNameMatching) {
  EXPECT_TRUE(DnsNameMatches("api.example.com", "api.example.com"));
  EXPECT_TRUE(DnsNameMatches("api.example.com", "API.Example.COM"));
  EXPECT_FALSE(DnsNameMatches("api.example.com", "web.example.com"));
  EXPECT_FALSE(DnsNameMatches("api.example.com", ""));
  EXPECT_TRUE(DnsNameMatches("*.example.com", "a.example.com"));
  EXPECT_TRUE(DnsNameMatches("*.example.com", "A.EXAMPLE.com"));
  EXPECT_FALSE(DnsNameMatches("*.example.com", "example.com"));
  EXPECT_FALSE(DnsNameMatches("*.example.com", ".example.com"));
  EXPECT_FALSE(DnsNameMatches("*.example.com", "a.b.example.com"));
  EXPECT_FALSE(DnsNameMatches("*.example.com", "a.example.org"));
  EXPECT_FALSE(DnsNameMatches("*.example.com", "aexample.com"));
  EXPECT_FALSE(DnsNameMatches("a*.example.com", "ab.example.com"));
  EXPECT_FALSE(DnsNameMatches("*.*.example.com", "a.b.example.com"));
}

}  // namespace
}  // namespace sluice::api
