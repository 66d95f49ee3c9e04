// sluice-control's gRPC port security from its flags, and the node id a
// proxy's client certificate names.
#include "controlplane/server/server_credentials.h"

#include <gtest/gtest.h>

#include "controlplane/server/discovery_service.h"
#include "tests/harness/process.h"

namespace sluice::controlplane {
namespace {

TEST(IsLoopbackHostTest, LoopbackAddressesOnly) {
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.1.2.3"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_TRUE(IsLoopbackHost("[::1]"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("[::]"));
  EXPECT_FALSE(IsLoopbackHost(""));
  EXPECT_FALSE(IsLoopbackHost("10.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("127.example.com"));
}

TEST(MakeServerSecurityTest, PlaintextOffLoopbackNeedsInsecure) {
  auto refused = MakeServerSecurity("0.0.0.0", {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("--insecure"),
            absl::string_view::npos);

  ServerSecurityFlags insecure;
  insecure.insecure = true;
  auto allowed = MakeServerSecurity("0.0.0.0", insecure);
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  EXPECT_FALSE(allowed->tls);
  EXPECT_TRUE(MakeServerSecurity("127.0.0.1", {}).ok());
}

TEST(MakeServerSecurityTest, FlagErrorsNameTheFlag) {
  ServerSecurityFlags cert_only;
  cert_only.tls_cert_file = "/x.pem";
  EXPECT_NE(MakeServerSecurity("127.0.0.1", cert_only)
                .status()
                .message()
                .find("--tls-key"),
            absl::string_view::npos);

  ServerSecurityFlags ca_only;
  ca_only.client_ca_file = "/ca.pem";
  EXPECT_NE(MakeServerSecurity("127.0.0.1", ca_only)
                .status()
                .message()
                .find("--client-ca"),
            absl::string_view::npos);

  const std::string dir = testing::MakeTempDir("pem");
  ServerSecurityFlags not_pem;
  not_pem.tls_cert_file = testing::WriteFile(dir, "cert.pem", "hello");
  not_pem.tls_key_file = testing::WriteFile(dir, "key.pem", "hello");
  auto status = MakeServerSecurity("127.0.0.1", not_pem).status();
  EXPECT_NE(status.message().find("--tls-cert " + not_pem.tls_cert_file +
                                  ": not a PEM file"),
            absl::string_view::npos)
      << status;
}

TEST(NodeIdFromCertificateTest, OneNodeUriNamesTheNode) {
  auto id =
      NodeIdFromCertificate(true, {"localhost", "spiffe://sluice/node/edge-1",
                                   "spiffe://sluice/node/edge-1"});
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "edge-1");
}

TEST(NodeIdFromCertificateTest, NoCertificateIsUnauthenticated) {
  EXPECT_EQ(NodeIdFromCertificate(false, {}).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(NodeIdFromCertificateTest, NoneOrSeveralNodesArePermissionDenied) {
  auto none =
      NodeIdFromCertificate(true, {"spiffe://other/node/a", "localhost"});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(none.status().message().find("names none"),
            absl::string_view::npos);
  auto several = NodeIdFromCertificate(
      true, {"spiffe://sluice/node/a", "spiffe://sluice/node/b"});
  EXPECT_EQ(several.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(several.status().message().find("a, b"), absl::string_view::npos);
  EXPECT_EQ(
      NodeIdFromCertificate(true, {"spiffe://sluice/node/"}).status().code(),
      absl::StatusCode::kPermissionDenied);
}

// A node id with a control character (a CA signed one) is refused, and
// shown escaped: before, its newline forged a line in sluice-control's log
// and in the refusal sent back.
TEST(NodeIdFromCertificateTest, AControlCharacterIsRefusedAndShownEscaped) {
  auto forged = NodeIdFromCertificate(
      true, {"spiffe://sluice/node/edge-9\n2026-12-01T00:00:00.000Z INFO FORGED"});
  EXPECT_EQ(forged.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(forged.status().message().find('\n'), absl::string_view::npos)
      << forged.status();
  EXPECT_NE(forged.status().message().find("edge-9\\n2026"), absl::string_view::npos)
      << forged.status();
  auto two = NodeIdFromCertificate(true, {"spiffe://sluice/node/a\x1b[2J", "spiffe://sluice/node/b"});
  EXPECT_EQ(two.status().message().find('\x1b'), absl::string_view::npos) << two.status();
}

}  // namespace
}  // namespace sluice::controlplane
