// TLS to upstreams through real processes: sluice-control, one sluice-proxy
// and nginx as the HTTPS upstream (a certificate for "backend.test" signed by
// a test CA, client certificates asked for and echoed). Certificates are
// made with the openssl CLI at test time.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "tests/harness/http_client.h"
#include "tests/harness/nginx.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/tls_client.h"

namespace sluice::testing {
namespace {

// A cluster of one endpoint with `tls` (YAML flow mapping) and `extra` spec
// lines.
std::string ClusterYaml(const std::string& name, int port, const std::string& tls,
                        const std::string& extra = "") {
  return absl::StrCat("kind: Cluster\nname: ", name,
                      "\nspec:\n  endpoints: [{address: 127.0.0.1, port: ", port, "}]\n",
                      tls.empty() ? "" : absl::StrCat("  tls: ", tls, "\n"), extra);
}

// The nginx servers: HTTPS on `port` for backend.test (asking for client
// certificates signed by `client_ca`, echoing what it got) and one with a
// self-signed certificate on `self_signed_port`.
std::string NginxServers(int port, int self_signed_port, const TestCert& backend,
                         const TestCert& client_ca, const TestCert& self_signed) {
  // A new upstream connection per /resume/ request: the next one resumes.
  constexpr char kServers[] = R"(  server {
    listen 127.0.0.1:{PORT} ssl;
    server_name backend.test;
    ssl_certificate {BACKEND_CERT};
    ssl_certificate_key {BACKEND_KEY};
    ssl_client_certificate {CLIENT_CA};
    ssl_verify_client optional;
    add_header x-client-subject "$ssl_client_s_dn" always;
    add_header x-server-name "$ssl_server_name" always;
    add_header x-session-reused "$ssl_session_reused" always;
    location /resume/ { keepalive_timeout 0; return 200 "tls-upstream\n"; }
    location /secure/held/ { client_max_body_size 1k; lingering_close off; return 200 "read\n"; }
    location /secure/early/ { client_max_body_size 1k; lingering_close off; return 200 "read\n"; }
    location / { return 200 "tls-upstream\n"; }
  }
  server {
    listen 127.0.0.1:{SELF_SIGNED_PORT} ssl;
    ssl_certificate {SELF_SIGNED_CERT};
    ssl_certificate_key {SELF_SIGNED_KEY};
    location / { return 200 "self-signed-upstream\n"; }
  }
)";
  return absl::StrReplaceAll(kServers, {{"{PORT}", absl::StrCat(port)},
                                        {"{BACKEND_CERT}", backend.cert_path},
                                        {"{BACKEND_KEY}", backend.key_path},
                                        {"{CLIENT_CA}", client_ca.cert_path},
                                        {"{SELF_SIGNED_PORT}", absl::StrCat(self_signed_port)},
                                        {"{SELF_SIGNED_CERT}", self_signed.cert_path},
                                        {"{SELF_SIGNED_KEY}", self_signed.key_path}});
}

class UpstreamTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    dir_ = MakeTempDir("upstream-tls");
    access_log_ = dir_ + "/access.log";
    upstream_ca_ = MakeCa(dir_, "upstream-ca", "Upstream Test CA");
    other_ca_ = MakeCa(dir_, "other-ca", "Other Test CA");
    backend_ = MakeSignedBy(upstream_ca_, dir_, "backend", "backend", {"backend.test"});
    gateway_ca_ = MakeCa(dir_, "gateway-ca", "Gateway Client CA");
    gateway_ = MakeSignedBy(gateway_ca_, dir_, "gateway", "gateway-1");
    self_signed_ = MakeSelfSigned(dir_, "self", "self.test", {"self.test"});
    port_ = PickFreePort();
    self_signed_port_ = PickFreePort();
    ASSERT_NE(port_, self_signed_port_);
    nginx_ = std::make_unique<Nginx>(
        dir_, NginxServers(port_, self_signed_port_, backend_, gateway_ca_, self_signed_),
        std::vector<int>{port_, self_signed_port_});
    ASSERT_TRUE(nginx_->ok()) << nginx_->Log();

    // A socket that completes TCP handshakes (the kernel does) but never
    // answers a TLS ClientHello.
    int stalled_port = 0;
    stalled_fd_ = SilentListener(&stalled_port);
    ASSERT_GE(stalled_fd_, 0);

    // An HTTPS upstream whose responses end at the close, with or without
    // close_notify.
    closer_ = std::make_unique<Process>(
        "/usr/bin/python3",
        std::vector<std::string>{RunfilePath("tests/harness/tls_close_peer.py"),
                                 backend_.cert_path, backend_.key_path},
        dir_ + "/closer.log");
    auto listening = closer_->WaitForLogLine("listening on ", absl::Seconds(20));
    ASSERT_TRUE(listening.has_value()) << closer_->Log();
    int closer_port = 0;
    ASSERT_TRUE(absl::SimpleAtoi(listening->substr(listening->find("on ") + 3), &closer_port));
    // The same, requiring a client certificate the gateway's CA issued.
    demanding_ = std::make_unique<Process>(
        "/usr/bin/python3",
        std::vector<std::string>{RunfilePath("tests/harness/tls_close_peer.py"),
                                 backend_.cert_path, backend_.key_path, gateway_ca_.cert_path},
        dir_ + "/demanding.log");
    listening = demanding_->WaitForLogLine("listening on ", absl::Seconds(20));
    ASSERT_TRUE(listening.has_value()) << demanding_->Log();
    ASSERT_TRUE(absl::SimpleAtoi(listening->substr(listening->find("on ") + 3), &demanding_port_));

    proxy_port_ = PickFreePort();
    const std::string verified = "{ca: upstream-ca, sni: backend.test}";
    // Uploads to /secure/held/ are held whole (validated) before they go.
    std::string routes =
        "        - match: {prefix: /secure/held/}\n          route: {cluster: secure}\n"
        "          policies:\n            - name: request-validation\n"
        "              typed_config: {max_body_bytes: 16777216, body_schema: '{\"type\": \"array\"}'}\n";
    for (const char* name :
         {"secure", "plain", "wrong-ca", "wrong-name", "mtls", "insecure", "resume", "stalled",
          "stalled-one", "closer", "demanding"}) {
      absl::StrAppend(&routes, "        - match: {prefix: /", name,
                      "/}\n          route: {cluster: ", name, "}\n");
    }
    std::string yaml = absl::StrCat(
        CaSecretYaml("upstream-ca", upstream_ca_), "---\n", CaSecretYaml("other-ca", other_ca_), "---\n",
        CertificateSecretYaml("gateway-cert", gateway_), "---\n", ClusterYaml("secure", port_, verified),
        "---\n",
        // The same endpoint without TLS: its connections must never be pooled
        // with the TLS ones.
        ClusterYaml("plain", port_, ""), "---\n",
        ClusterYaml("wrong-ca", port_, "{ca: other-ca, sni: backend.test}",
                    "  outlier_detection: {consecutive_gateway_failure: 2}\n"),
        "---\n", ClusterYaml("wrong-name", port_, "{ca: upstream-ca, sni: other.test}"), "---\n",
        ClusterYaml("mtls", port_,
                    "{ca: upstream-ca, sni: backend.test, client_certificate: gateway-cert}"),
        "---\n", ClusterYaml("insecure", self_signed_port_, "{insecure_skip_verify: true}"),
        "---\n", ClusterYaml("resume", port_, verified), "---\n",
        ClusterYaml("stalled", stalled_port, verified, "  connect_timeout: 300ms\n"), "---\n",
        ClusterYaml("stalled-one", stalled_port, verified,
                    "  connect_timeout: 3s\n  circuit_breakers: {max_pending_requests: 1}\n"),
        "---\n",
        ClusterYaml("closer", closer_port, verified), "---\n",
        ClusterYaml("demanding", demanding_port_, verified), "---\n",
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
        "      routes:\n",
        routes,
        "---\nkind: Listener\nname: http\nspec:\n  address: 127.0.0.1\n  port: ", proxy_port_,
        "\n  route_table: main\n  access_log: {path: ", access_log_, "}\n");
    auto r = cp_.Ctl({"apply", "-f", WriteFile(dir_, "config.yaml", yaml)});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "upstream-tls-proxy");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  void TearDown() override {
    if (stalled_fd_ >= 0) close(stalled_fd_);
  }

  HttpResponse Get(const std::string& path) {
    return HttpGet(absl::StrCat("127.0.0.1:", proxy_port_), path);
  }

  ControlPlane cp_{"", "info"};
  std::unique_ptr<Nginx> nginx_;
  std::unique_ptr<Proxy> proxy_;
  std::unique_ptr<Process> closer_;
  std::unique_ptr<Process> demanding_;
  int demanding_port_ = 0;
  std::string dir_;
  std::string access_log_;
  TestCert upstream_ca_, other_ca_, backend_, gateway_ca_, gateway_, self_signed_;
  int port_ = 0;
  int self_signed_port_ = 0;
  int proxy_port_ = 0;
  int stalled_fd_ = -1;
};

TEST_F(UpstreamTlsTest, VerifiedUpstreamAnswersThroughTheProxy) {
  HttpResponse r = Get("/secure/a");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "tls-upstream\n");
  EXPECT_EQ(r.header("x-server-name"), "backend.test");  // the SNI nginx received
  EXPECT_EQ(r.header("x-client-subject"), "");           // no client certificate asked of it

  // The plain cluster on the same endpoint speaks HTTP to the TLS port: nginx
  // refuses it. Had it been given the pooled TLS connection, it would get 200.
  r = Get("/plain/b");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "plain HTTP request was sent to HTTPS port")) << r.body;

  // The TLS cluster again: its pooled connection is reused.
  r = Get("/secure/c");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_GE(proxy_->Stat("sluice_upstream_connections_reused_total{cluster=\"secure\"}"), 1)
      << proxy_->Admin("/stats").second;
}

TEST_F(UpstreamTlsTest, UntrustedUpstreamIsA502NamingTheVerificationFailure) {
  for (int i = 0; i < 2; ++i) {
    HttpResponse r = Get("/wrong-ca/x");
    EXPECT_EQ(r.status, 502) << r.body;
    EXPECT_TRUE(absl::StrContains(r.body,
                                  "upstream connect failed: TLS handshake: certificate verify "
                                  "failed: unable to get local issuer certificate"))
        << r.body;
  }
  // Each request tried once: the default retry of a failed connect goes to
  // another endpoint, and this cluster has one.
  EXPECT_EQ(proxy_->Stat("sluice_upstream_connect_failures_total{cluster=\"wrong-ca\"}"), 2);
  // The operator reads why in the access log (before: only the client did).
  EXPECT_TRUE(WaitForFileLine(access_log_,
                              "\"upstream_failure\":\"connect failed: TLS handshake: "
                              "certificate verify failed: unable to get local issuer "
                              "certificate\"",
                              absl::Seconds(5))
                  .has_value())
      << ReadFile(access_log_);
  // Gateway failures for outlier detection, like a refused connect.
  EXPECT_EQ(proxy_->Stat("sluice_outlier_ejections_total{cluster=\"wrong-ca\"}"), 1);
  // nginx saw the handshake end with our alert.
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(nginx_->Log(), "alert unknown ca"); },
                      absl::Seconds(5)))
      << nginx_->Log();
}

TEST_F(UpstreamTlsTest, SniThatTheCertificateDoesNotNameIsA502) {
  HttpResponse r = Get("/wrong-name/x");
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_TRUE(absl::StrContains(
      r.body,
      "upstream connect failed: TLS handshake: certificate verify failed: hostname mismatch"))
      << r.body;
}

TEST_F(UpstreamTlsTest, ClientCertificateIsPresentedToTheUpstream) {
  // A verified connection without a client certificate is pooled first: the
  // mTLS cluster must not be given it.
  HttpResponse r = Get("/secure/first");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-client-subject"), "");
  r = Get("/mtls/x");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-client-subject"), "CN=gateway-1");
}

TEST_F(UpstreamTlsTest, InsecureSkipVerifyAcceptsASelfSignedUpstream) {
  HttpResponse r = Get("/insecure/x");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "self-signed-upstream\n");
}

TEST_F(UpstreamTlsTest, NewConnectionsResumeTheSession) {
  // nginx closes after each /resume/ response, so each request opens a new
  // upstream connection; the second offers the first one's session.
  HttpResponse first = Get("/resume/once");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.header("x-session-reused"), ".");
  HttpResponse second = Get("/resume/once");
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(second.header("x-session-reused"), "r");
  EXPECT_EQ(proxy_->Stat("sluice_upstream_connections_opened_total{cluster=\"resume\"}"), 2);
}

TEST_F(UpstreamTlsTest, ConnectTimeoutCoversTheHandshake) {
  HttpResponse r = Get("/stalled/x");
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "upstream connect timeout in the TLS handshake")) << r.body;
}

// A request over max_pending_requests gets its 503 without a connection
// being opened for it. Before, one was opened and closed at once: each
// refused request cost the upstream a handshake.
TEST_F(UpstreamTlsTest, ARequestOverMaxPendingOpensNoConnection) {
  HttpResponse first;
  std::thread waiting([&] { first = Get("/stalled-one/first"); });
  const std::string opened = "sluice_upstream_connections_opened_total{cluster=\"stalled-one\"}";
  ASSERT_TRUE(WaitFor([&] { return proxy_->Stat(opened) == 1; }, absl::Seconds(5)));
  HttpResponse second = Get("/stalled-one/second");
  EXPECT_EQ(second.status, 503) << second.body;
  EXPECT_TRUE(absl::StrContains(second.body, "max_pending_requests")) << second.body;
  EXPECT_EQ(proxy_->Stat(opened), 1);
  waiting.join();
  EXPECT_EQ(first.status, 504) << first.body;  // its handshake never ends
}

// A response delimited by the close is whole over TLS only when close_notify
// came before the close (RFC 9112 9.8): without it, the client must not be
// told it got the whole response.
TEST_F(UpstreamTlsTest, AResponseEndedByACloseWithoutCloseNotifyIsCut) {
  HttpResponse whole = Get("/closer/clean");
  ASSERT_TRUE(whole.ok()) << whole.error;
  EXPECT_EQ(whole.status, 200);
  EXPECT_EQ(whole.body, "the body, up to the close\n");
  HttpResponse cut = Get("/closer/cut");
  EXPECT_FALSE(cut.ok() && cut.status == 200 && cut.body == "the body, up to the close\n")
      << cut.status << " " << cut.body;
  EXPECT_EQ(proxy_->Stat("sluice_upstream_resets_total{cluster=\"closer\"}"), 1);
}

// An HTTPS upstream that answers an upload before reading it (nginx's 413
// for a body over client_max_body_size, sent without lingering) and closes,
// so that its kernel resets the connection under the body the proxy still
// writes: the client gets that answer (RFC 9112 9.6), as from a plain
// upstream.
TEST_F(UpstreamTlsTest, AnEarlyAnswerToAnUploadReachesTheClient) {
  std::string body = "[";
  while (body.size() < 12000000) body += "1234567,";
  body += "0]";
  const std::string body_path = WriteFile(dir_, "upload.json", body);
  // Held whole over HTTP/1.1 and HTTP/2, and streamed over HTTP/1.1 (curl
  // fails an HTTP/2 stream reset with NO_ERROR under an unfinished upload).
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--http1.1", "/secure/held/"},
      {"--http2-prior-knowledge", "/secure/held/"},
      {"--http1.1", "/secure/early/"}};
  for (const auto& [version, path] : cases) {
    for (int i = 0; i < 4; ++i) {
      CommandResult r = RunCommand(
          {"/usr/bin/curl", "-sS", "--max-time", "30", version, "-H", "expect:", "-H",
           "content-type: application/json", "-o", "/dev/null", "-w", "%{http_code}",
           "--data-binary", "@" + body_path,
           absl::StrCat("http://127.0.0.1:", proxy_port_, path, i)});
      ASSERT_EQ(r.exit_code, 0) << version << " " << path << i << ": " << r.err;
      EXPECT_EQ(r.out, "413") << version << " " << path << i;
    }
  }
  HttpResponse after = Get("/secure/after");
  EXPECT_EQ(after.status, 200) << after.error;
}

// A TLS 1.3 upstream refuses a missing client certificate with an alert
// after the client's side of the handshake: the 502 names it. Before: the
// alert came as "connection reset: Protocol error".
TEST_F(UpstreamTlsTest, AnUpstreamRefusingTheMissingClientCertificateIsNamedInThe502) {
  HttpResponse r = Get("/demanding/x");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "certificate required")) << r.body;
  EXPECT_FALSE(absl::StrContains(r.body, "Protocol error")) << r.body;
}

// An endpoint whose checks fail, not yet unhealthy_threshold times, is
// shown with the failure: "not checked yet" and "failing" looked alike.
TEST_F(UpstreamTlsTest, AnUnjudgedEndpointShowsItsLastFailedCheck) {
  // A new cluster: an endpoint that was healthy before its cluster got a
  // check stays healthy until the check says otherwise.
  std::string yaml = ClusterYaml(
      "unjudged", port_, "{ca: other-ca, sni: backend.test}",
      "  health_check: {http: {path: /healthz}, interval: 30s, timeout: 1s,"
      " unhealthy_threshold: 3}\n");
  auto r = cp_.Ctl({"apply", "-f", WriteFile(dir_, "unjudged.yaml", yaml)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  std::string page;
  EXPECT_TRUE(WaitFor(
      [&] {
        page = proxy_->Admin("/clusters").second;
        return absl::StrContains(page, "the last one failed");
      },
      absl::Seconds(10)))
      << page;
  EXPECT_TRUE(absl::StrContains(page, "health=unknown")) << page;
  EXPECT_TRUE(absl::StrContains(page,
                                "no health check has passed yet; the last one failed: active "
                                "health check: TLS handshake: certificate verify failed"))
      << page;
}

TEST_F(UpstreamTlsTest, HealthChecksGoOverTls) {
  std::string checks =
      "  health_check: {http: {path: /healthz}, interval: 200ms, timeout: 150ms}\n";
  std::string yaml = absl::StrCat(
      ClusterYaml("secure", port_, "{ca: upstream-ca, sni: backend.test}", checks), "---\n",
      ClusterYaml("wrong-ca", port_, "{ca: other-ca, sni: backend.test}", checks), "---\n",
      ClusterYaml("demanding", demanding_port_, "{ca: upstream-ca, sni: backend.test}", checks));
  auto r = cp_.Ctl({"apply", "-f", WriteFile(dir_, "checks.yaml", yaml)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  // Each cluster is judged on its own schedule: "wrong-ca" keeps the health
  // it had before checks were set until it fails unhealthy_threshold times,
  // which may be after "demanding" did (this waited for any unhealthy one,
  // and failed when "demanding" came first).
  std::string page;
  bool judged = WaitFor(
      [&] {
        page = proxy_->Admin("/clusters").second;
        return absl::StrContains(page, "health=healthy") &&
               absl::StrContains(page,
                                 "active health check: TLS handshake: certificate verify failed: "
                                 "unable to get local issuer certificate");
      },
      absl::Seconds(10));
  EXPECT_TRUE(judged) << page;
  // An alert after the handshake is named as traffic names it (before:
  // "connection error: Connection reset by peer" or errno's "Protocol error").
  EXPECT_TRUE(WaitFor(
      [&] {
        page = proxy_->Admin("/clusters").second;
        return absl::StrContains(page, "active health check: connection error: TLS ") &&
               absl::StrContains(page, "certificate required");
      },
      absl::Seconds(10)))
      << page;
  EXPECT_GE(proxy_->Stat("sluice_health_check_passes_total{cluster=\"secure\"}"), 1);
}

TEST_F(UpstreamTlsTest, ClusterNamingAMissingSecretIsRejected) {
  auto r = cp_.Ctl({"apply", "-f",
                    WriteFile(dir_, "missing.yaml",
                              ClusterYaml("secure", port_, "{ca: nope, sni: backend.test}"))});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err + r.out,
                                "Cluster \"secure\": tls.ca: Secret \"nope\" does not exist"))
      << r.err << r.out;
  // A Secret a cluster uses cannot be deleted either.
  r = cp_.Ctl({"delete", "secret", "gateway-cert"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err + r.out, "tls.client_certificate")) << r.err << r.out;
  // Nothing changed: version 1 still serves.
  EXPECT_EQ(proxy_->ReadyVersion(), 1u);
  EXPECT_EQ(Get("/secure/still").status, 200);
}

}  // namespace
}  // namespace sluice::testing
