// CertificateExpiries: each tls_certificate Secret's leaf notAfter, each
// chain parsed once (a scrape of thousands of Secrets re-parsed them all and
// passed the probes' timeout).
#include "controlplane/server/certificate_expiry.h"

#include <gtest/gtest.h>

#include "absl/time/time.h"
#include "tests/api/test_certificates.h"

namespace sluice::controlplane {
namespace {

api::Resource CertificateSecret(const std::string& name, absl::Time not_after) {
  testing::CertificateSpec spec;
  spec.not_after = not_after;
  api::Resource resource;
  resource.mutable_secret()->set_name(name);
  resource.mutable_secret()->mutable_tls_certificate()->set_certificate_chain(
      testing::MakeCertificate(spec).certificate_pem);
  return resource;
}

TEST(CertificateExpiriesTest, EachChainIsParsedOnce) {
  const absl::Time a_end = absl::FromUnixSeconds(2000000000);
  const absl::Time b_end = absl::FromUnixSeconds(2100000000);
  api::ResourceMap resources;
  resources[{config::v1::SECRET, "a"}] = CertificateSecret("a", a_end);
  resources[{config::v1::SECRET, "b"}] = CertificateSecret("b", b_end);
  CertificateExpiries expiries;
  using Expiry = std::vector<std::pair<std::string, int64_t>>;
  const Expiry both = {{"a", 2000000000}, {"b", 2100000000}};
  EXPECT_EQ(expiries.Of(resources), both);
  EXPECT_EQ(expiries.Of(resources), both);
  EXPECT_EQ(expiries.parsed(), 2u);  // the second scrape parsed nothing
  // A renewed certificate is parsed again, alone; a removed one goes.
  resources[{config::v1::SECRET, "a"}] =
      CertificateSecret("a", absl::FromUnixSeconds(2050000000));
  EXPECT_EQ(expiries.Of(resources), (Expiry{{"a", 2050000000}, {"b", 2100000000}}));
  EXPECT_EQ(expiries.parsed(), 3u);
  resources.erase({config::v1::SECRET, "b"});
  EXPECT_EQ(expiries.Of(resources), (Expiry{{"a", 2050000000}}));
  EXPECT_EQ(expiries.parsed(), 3u);
}

}  // namespace
}  // namespace sluice::controlplane
