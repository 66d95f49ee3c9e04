// common/pem_file: the checks made on TLS files read again (a CA bundle
// parses) and the warning about a certificate out of its validity.
#include "common/pem_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "tests/api/test_certificates.h"

namespace sluice {
namespace {

using testing::CertificateSpec;
using testing::MakeCertificate;

std::string WriteTemp(const std::string& name, const std::string& text) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  return path;
}

TEST(CertificateTimeProblemTest, NamesAnExpiredOrNotYetValidCertificate) {
  CertificateSpec valid;
  EXPECT_EQ(CertificateTimeProblem(WriteTemp("valid.pem", MakeCertificate(valid).certificate_pem)),
            "");
  CertificateSpec expired;
  expired.not_before = absl::Now() - absl::Hours(48);
  expired.not_after = absl::Now() - absl::Hours(24);
  const std::string old = CertificateTimeProblem(
      WriteTemp("expired.pem", MakeCertificate(expired).certificate_pem));
  EXPECT_TRUE(absl::StartsWith(old, "expired on ")) << old;
  EXPECT_TRUE(absl::EndsWith(old, " GMT")) << old;
  CertificateSpec early;
  early.not_before = absl::Now() + absl::Hours(24);
  early.not_after = absl::Now() + absl::Hours(48);
  const std::string soon =
      CertificateTimeProblem(WriteTemp("early.pem", MakeCertificate(early).certificate_pem));
  EXPECT_TRUE(absl::StartsWith(soon, "is not valid before ")) << soon;
  // Unreadable or not a certificate: other checks say so.
  EXPECT_EQ(CertificateTimeProblem(WriteTemp("garbage.pem", "garbage")), "");
  EXPECT_EQ(CertificateTimeProblem("/no/such/file.pem"), "");
}

TEST(CheckCertificatesParseTest, EveryBlockOfABundleMustParse) {
  const std::string a = MakeCertificate({}).certificate_pem;
  const std::string b = MakeCertificate({}).certificate_pem;
  EXPECT_TRUE(CheckCertificatesParse("--client-ca", a).ok());
  EXPECT_TRUE(CheckCertificatesParse("--client-ca", a + b).ok());
  const std::string broken =
      "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
  absl::Status first = CheckCertificatesParse("--client-ca", broken + a);
  EXPECT_FALSE(first.ok());
  EXPECT_EQ(first.message(), "--client-ca: no certificate parses");
  absl::Status later = CheckCertificatesParse("--client-ca", a + broken);
  EXPECT_FALSE(later.ok());
  EXPECT_EQ(later.message(), "--client-ca: a certificate after the first does not parse");
  EXPECT_FALSE(CheckCertificatesParse("--client-ca", "").ok());
}

TEST(OthersCanReadTest, NamesAWorldReadableFileOnly) {
  const std::string path = WriteTemp("token", "0123456789abcdef0123456789abcdef\n");
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  EXPECT_EQ(OthersCanRead("--admin-token-file", path),
            "--admin-token-file " + path + " is readable by every user on this host (mode 0644): "
            "chmod o-r " + path);
  ASSERT_EQ(::chmod(path.c_str(), 0440), 0);  // Kubernetes' group-readable mount
  EXPECT_EQ(OthersCanRead("--admin-token-file", path), "");
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_EQ(OthersCanRead("--admin-token-file", path), "");
  EXPECT_EQ(OthersCanRead("--tls-key", path + ".missing"), "");  // reading it says so
}

}  // namespace
}  // namespace sluice
