// HTTP/2 conformance of the downstream session, h2spec's way: 96 cases of
// RFC 9113 (frame format and sizes, stream states and identifiers,
// concurrency, every frame type's rules, flow-control windows, CONTINUATION,
// malformed requests: pseudo-headers, connection-specific fields,
// content-length against DATA), RFC 7541 (HPACK decoding errors) and RFC
// 8441 (extended CONNECT: answered; :protocol where it does not belong), sent as
// hand-written frames by tests/harness/h2_conformance.py to a real
// sluice-proxy, over h2c with prior knowledge and over TLS with ALPN h2.
// Each case checks the server's answer: the response, the RST_STREAM or the
// GOAWAY with the code the RFC names. The proxy keeps serving afterwards.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/tls_client.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

class Http2ConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok());
    const std::string dir = MakeTempDir("h2-conformance");
    const TestCert cert = MakeSelfSigned(dir, "localhost", "localhost", {"localhost"});
    plain_port_ = PickFreePort();
    tls_port_ = PickFreePort();
    const std::string yaml = absl::StrCat(
        CertificateSecretYaml("cert", cert),
        "---\nkind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_.port(), "}]\n",
        "---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n      routes:\n"
        "        - match: {prefix: /}\n          route: {cluster: web}\n",
        "---\nkind: Listener\nname: plain\nspec: {address: 127.0.0.1, port: ", plain_port_,
        ", route_table: main}\n",
        "---\nkind: Listener\nname: tls\nspec: {address: 127.0.0.1, port: ", tls_port_,
        ", route_table: main, tls: {certificates: [cert]}}\n");
    auto r = cp_.Ctl({"apply", "-f", WriteFile(dir, "config.yaml", yaml)});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "h2-conformance-proxy");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  // Runs every case against `port`; the output names each case and what the
  // proxy did.
  void RunCases(int port, bool tls) {
    std::vector<std::string> argv = {"/usr/bin/python3",
                                     RunfilePath("tests/harness/h2_conformance.py"), "--port",
                                     absl::StrCat(port)};
    if (tls) argv.push_back("--tls");
    CommandResult r = RunCommand(argv, {}, absl::Seconds(240));
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    // All of them ran (a script that stopped early or ran none fails).
    EXPECT_TRUE(absl::StrContains(r.out, "cases 96 failures 0")) << r.out << r.err;
    // Not one case took the proxy down or wedged it.
    HttpResponse after = HttpGet(absl::StrCat("127.0.0.1:", plain_port_), "/after");
    EXPECT_EQ(after.status, 200) << after.error;
    EXPECT_TRUE(proxy_->process().Running()) << proxy_->process().Log();
  }

  ControlPlane cp_;
  UpstreamServer upstream_{"conformance-upstream"};
  std::unique_ptr<Proxy> proxy_;
  int plain_port_ = 0;
  int tls_port_ = 0;
};

TEST_F(Http2ConformanceTest, H2cWithPriorKnowledge) { RunCases(plain_port_, false); }

TEST_F(Http2ConformanceTest, H2OverTls) { RunCases(tls_port_, true); }

}  // namespace
}  // namespace sluice::testing
