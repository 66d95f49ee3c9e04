// HTTPS offload through real processes: sluice-control, one sluice-proxy, an
// upstream_server; clients are curl, openssl s_client and an OpenSSL client
// in the test. Certificates are made with the openssl CLI at test time.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <functional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/tls_client.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

std::string GetRequest(const std::string& host, const std::string& path) {
  return absl::StrCat("GET ", path, " HTTP/1.1\r\nhost: ", host, "\r\n\r\n");
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok());
    dir_ = MakeTempDir("tls");
    a_ = MakeSelfSigned(dir_, "a", "a.test", {"a.test"});
    wild_ = MakeSelfSigned(dir_, "wild", "wild.test", {"*.wild.test"});
    fallback_ = MakeSelfSigned(dir_, "default", "default.test", {"default.test"});
    ca_ = MakeCa(dir_, "ca", "Test Client CA");
    client_ = MakeSignedBy(ca_, dir_, "client", "client-1");
    https_port_ = PickFreePort();
    mtls_port_ = PickFreePort();
    quick_port_ = PickFreePort();
    idle_port_ = PickFreePort();
    std::string yaml = absl::StrCat(
        CertificateSecretYaml("default-cert", fallback_), "---\n",
        CertificateSecretYaml("a-cert", a_), "---\n",
        CertificateSecretYaml("wild-cert", wild_), "---\n", CaSecretYaml("clients", ca_),
        "---\nkind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_.port(), "}]\n",
        "---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
        "      routes:\n        - match: {prefix: /go}\n          redirect: {path_redirect: /gone}\n"
        "        - match: {prefix: /}\n          route: {cluster: web}\n",
        "---\nkind: Listener\nname: https\nspec:\n  address: 127.0.0.1\n  port: ", https_port_,
        "\n  route_table: main\n  tls:\n    certificates: [default-cert, a-cert, wild-cert]\n",
        "---\nkind: Listener\nname: mtls\nspec:\n  address: 127.0.0.1\n  port: ", mtls_port_,
        "\n  route_table: main\n  tls:\n    certificates: [a-cert]\n    client_ca: clients\n",
        "---\nkind: Listener\nname: quick\nspec:\n  address: 127.0.0.1\n  port: ", quick_port_,
        "\n  route_table: main\n  http: {request_headers_timeout: 500ms, idle_timeout: 30s}\n"
        "  tls:\n    certificates: [a-cert]\n",
        "---\nkind: Listener\nname: idle\nspec:\n  address: 127.0.0.1\n  port: ", idle_port_,
        "\n  route_table: main\n  http: {idle_timeout: 300ms}\n"
        "  tls:\n    certificates: [a-cert]\n");
    auto r = cp_.Ctl({"apply", "-f", WriteFile(dir_, "config.yaml", yaml)});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    // debug: the handshake failures' log lines.
    proxy_ = std::make_unique<Proxy>(cp_.address(), "tls-proxy", 1, "",
                                     std::vector<std::string>{"--log-level", "debug"});
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  // The subject of the certificate the proxy presents for `sni`.
  std::string SubjectFor(const std::string& sni) {
    TlsClient client;
    TlsClientOptions options;
    options.sni = sni;
    if (!client.Connect(https_port_, options)) return "error: " + client.error();
    return client.peer_subject();
  }

  // TLS 1.2 to a.test with the client certificate client-1.
  TlsClientOptions ClientCertificateOverTls12() const {
    TlsClientOptions options;
    options.max_version = TLS1_2_VERSION;
    options.sni = "a.test";
    options.client_cert_path = client_.cert_path;
    options.client_key_path = client_.key_path;
    return options;
  }

  // Gives the mTLS listener an access log at `log` (config version 2).
  bool LogTheMtlsListener(const std::string& log) {
    auto applied = cp_.Ctl(
        {"apply", "-f",
         WriteFile(dir_, "logged.yaml",
                   absl::StrCat("kind: Listener\nname: mtls\nspec:\n  address: 127.0.0.1\n"
                                "  port: ", mtls_port_, "\n  route_table: main\n"
                                "  access_log: {path: ", log, "}\n"
                                "  tls:\n    certificates: [a-cert]\n    client_ca: clients\n"))});
    EXPECT_EQ(applied.exit_code, 0) << applied.out << applied.err;
    const bool taken = applied.exit_code == 0 && proxy_->WaitForVersion(2);
    EXPECT_TRUE(taken) << proxy_->process().Log();
    return taken;
  }

  int64_t HandshakeErrors(const std::string& reason) const {
    return proxy_->Stat(
        absl::StrCat("sluice_downstream_tls_handshake_errors_total{reason=\"", reason, "\"}"));
  }

  ControlPlane cp_{"", "info"};
  UpstreamServer upstream_{"web-1"};
  std::unique_ptr<Proxy> proxy_;
  std::string dir_;
  TestCert a_, wild_, fallback_, ca_, client_;
  int https_port_ = 0;
  int mtls_port_ = 0;
  int quick_port_ = 0;
  int idle_port_ = 0;
};

TEST_F(TlsTest, CurlGetsTheUpstreamOverHttpsWithForwardedProto) {
  std::string url = absl::StrCat("https://a.test:", https_port_, "/hello");
  CommandResult r = RunCommand({"/usr/bin/curl", "-sS", "-i", "--http1.1", "--cacert",
                                a_.cert_path, "--resolve",
                                absl::StrCat("a.test:", https_port_, ":127.0.0.1"), url});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StartsWith(r.out, "HTTP/1.1 200")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "x-echo-x-forwarded-proto: https")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "web-1 GET /hello")) << r.out;
  // Redirects keep the scheme the client used.
  r = RunCommand({"/usr/bin/curl", "-sS", "-i", "-k", "--resolve",
                  absl::StrCat("a.test:", https_port_, ":127.0.0.1"),
                  absl::StrCat("https://a.test:", https_port_, "/go")});
  EXPECT_TRUE(absl::StrContains(r.out, absl::StrCat("location: https://a.test:", https_port_, "/gone")))
      << r.out;
}

TEST_F(TlsTest, SniPicksTheCertificate) {
  EXPECT_EQ(SubjectFor("a.test"), "/CN=a.test");
  EXPECT_EQ(SubjectFor("A.TEST"), "/CN=a.test");
  EXPECT_EQ(SubjectFor("x.wild.test"), "/CN=wild.test");
  EXPECT_EQ(SubjectFor("a.b.wild.test"), "/CN=default.test");  // one label only
  EXPECT_EQ(SubjectFor("unknown.test"), "/CN=default.test");
  EXPECT_EQ(SubjectFor(""), "/CN=default.test");
  // Not a host name (RFC 6066 3): the unrecognized_name alert, whatever
  // certificate a wildcard would have given.
  for (const char* bad : {"a b.wild.test", "a/b.wild.test", "*.wild.test", "a\xff.wild.test",
                          "x\r\ninjected: 1.wild.test"}) {
    EXPECT_TRUE(absl::StrContains(SubjectFor(bad), "unrecognized name")) << bad;
  }
  EXPECT_EQ(SubjectFor("127.0.0.1"), "/CN=default.test");  // an address: let be
  // The same through openssl s_client.
  CommandResult r = RunCommand(
      {"/bin/bash", "-c",
       absl::StrCat("echo | openssl s_client -connect 127.0.0.1:", https_port_,
                    " -servername x.wild.test 2>/dev/null | openssl x509 -noout -subject")});
  EXPECT_TRUE(absl::StrContains(r.out, "CN = wild.test")) << r.out << r.err;
}

TEST_F(TlsTest, VersionsAlpnAndSessionResumption) {
  TlsClient first;
  TlsClientOptions options;
  options.sni = "a.test";
  options.alpn = {"h2", "http/1.1"};
  {
    TlsClient h2;
    ASSERT_TRUE(h2.Connect(https_port_, options)) << h2.error();
    EXPECT_EQ(h2.alpn(), "h2");  // the default list prefers h2
  }
  options.alpn = {"http/1.1"};
  ASSERT_TRUE(first.Connect(https_port_, options)) << first.error();
  EXPECT_EQ(first.version(), "TLSv1.3");
  EXPECT_EQ(first.alpn(), "http/1.1");
  Http1Message response;
  ASSERT_TRUE(first.Request(GetRequest("a.test", "/one"), &response)) << first.error();
  EXPECT_EQ(response.status, 200);
  first.Close();

  // Resumption with tickets, by openssl s_client: the second handshake
  // resumes the first one's session.
  std::string sess = absl::StrCat(dir_, "/session.pem");
  std::string request = "printf 'GET / HTTP/1.1\\r\\nhost: a.test\\r\\nconnection: close\\r\\n\\r\\n'";
  std::string s_client = absl::StrCat("openssl s_client -ign_eof -connect 127.0.0.1:", https_port_,
                                      " -servername a.test");
  CommandResult r = RunCommand(
      {"/bin/bash", "-c",
       absl::StrCat(request, " | ", s_client, " -sess_out ", sess, " 2>&1 | grep -E '^(New|Reused),'; ",
                    request, " | ", s_client, " -sess_in ", sess, " 2>&1 | grep -E '^(New|Reused),'")});
  EXPECT_TRUE(absl::StartsWith(r.out, "New, TLSv1.3")) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "\nReused, TLSv1.3")) << r.out << r.err;
  // Before: a resumed connection got no new ticket, so a client that uses
  // each TLS 1.3 ticket once (RFC 8446 C.4) resumed only every other time.
  r = RunCommand({"/bin/bash", "-c",
                  absl::StrCat(request, " | ", s_client, " -msg -sess_in ", sess,
                               " 2>&1 | grep -E '^Reused,|NewSessionTicket'")});
  EXPECT_TRUE(absl::StrContains(r.out, "Reused, TLSv1.3")) << r.out << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "NewSessionTicket")) << r.out << r.err;

  TlsClient tls12;
  TlsClientOptions old;
  old.sni = "a.test";
  old.max_version = TLS1_2_VERSION;
  ASSERT_TRUE(tls12.Connect(https_port_, old)) << tls12.error();
  EXPECT_EQ(tls12.version(), "TLSv1.2");
  ASSERT_TRUE(tls12.Request(GetRequest("a.test", "/12"), &response)) << tls12.error();
  EXPECT_EQ(response.status, 200);
  EXPECT_GE(proxy_->Stat("sluice_downstream_tls_resumptions_total"), 1);
  EXPECT_GE(proxy_->Stat("sluice_downstream_tls_handshakes_total"), 4);
}

// RFC 7301 3.2: a client that offers protocols, none of them the
// listener's, gets the no_application_protocol alert; HTTP/1.0 is served
// as HTTP/1; a client that offers none is served HTTP/1.1.
TEST_F(TlsTest, AlpnWithNoProtocolInCommonIsRefused) {
  TlsClientOptions options;
  options.sni = "a.test";
  options.alpn = {"spdy/3", "foo"};
  TlsClient refused;
  EXPECT_FALSE(refused.Connect(https_port_, options));
  EXPECT_TRUE(absl::StrContains(refused.error(), "no application protocol")) << refused.error();
  for (const std::vector<std::string>& alpn :
       std::vector<std::vector<std::string>>{{"http/1.0"}, {}}) {
    options.alpn = alpn;
    TlsClient client;
    ASSERT_TRUE(client.Connect(https_port_, options)) << client.error();
    Http1Message response;
    ASSERT_TRUE(client.Request(GetRequest("a.test", "/alpn"), &response)) << client.error();
    EXPECT_EQ(response.status, 200);
  }
}

// A session (ticket) made on a listener without client certificates is not
// resumed on one that requires them: resuming skips the certificate check.
// Before: it was, and the request got 200 with no certificate at all.
TEST_F(TlsTest, ASessionFromAnotherListenerDoesNotSkipTheClientCertificate) {
  for (const char* version : {"-tls1_3", "-tls1_2"}) {
    std::string sess = absl::StrCat(dir_, "/other", version, ".pem");
    std::string request =
        "printf 'GET / HTTP/1.1\\r\\nhost: a.test\\r\\nconnection: close\\r\\n\\r\\n'";
    auto s_client = [&](int port) {
      return absl::StrCat("openssl s_client -ign_eof ", version, " -connect 127.0.0.1:", port,
                          " -servername a.test");
    };
    CommandResult r = RunCommand(
        {"/bin/bash", "-c",
         absl::StrCat(request, " | ", s_client(https_port_), " -sess_out ", sess,
                      " 2>&1 | grep -E '^(New|Reused),'; ", request, " | ", s_client(mtls_port_),
                      " -sess_in ", sess, " 2>&1 | grep -E '^(New|Reused),|^HTTP/1.1'")});
    EXPECT_TRUE(absl::StartsWith(r.out, "New,")) << version << "\n" << r.out << r.err;
    EXPECT_FALSE(absl::StrContains(r.out, "Reused,")) << version << "\n" << r.out;
    EXPECT_FALSE(absl::StrContains(r.out, "HTTP/1.1 200")) << version << "\n" << r.out;
  }
}

// RFC 9113 9.2.2: no HTTP/2 over a TLS 1.2 suite without AEAD (browsers
// fail such a connection). Before: h2 was chosen with the CBC suite.
TEST_F(TlsTest, Http2IsNotChosenOverACipherItForbids) {
  const int port = PickFreePort();
  std::string yaml = absl::StrCat(
      "kind: Listener\nname: cbc\nspec:\n  address: 127.0.0.1\n  port: ", port,
      "\n  route_table: main\n  tls:\n    certificates: [default-cert]\n"
      "    max_version: '1.2'\n"
      "    cipher_suites: 'ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-GCM-SHA256'\n");
  auto applied = cp_.Ctl({"apply", "-f", WriteFile(dir_, "cbc.yaml", yaml)});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  auto alpn = [&](const std::string& cipher) {
    return RunCommand({"/bin/bash", "-c",
                       absl::StrCat("openssl s_client -connect 127.0.0.1:", port,
                                    " -tls1_2 -cipher ", cipher,
                                    " -alpn h2,http/1.1 </dev/null 2>&1")})
        .out;
  };
  std::string cbc = alpn("ECDHE-ECDSA-AES128-SHA");
  EXPECT_TRUE(absl::StrContains(cbc, "ALPN protocol: http/1.1")) << cbc;
  std::string gcm = alpn("ECDHE-ECDSA-AES128-GCM-SHA256");
  EXPECT_TRUE(absl::StrContains(gcm, "ALPN protocol: h2")) << gcm;

  // A listener of `[h2]` alone: a client offering both suites gets the CBC
  // one, then no protocol named, and goes on in HTTP/1.1 as a client
  // without ALPN does. Before: the no_application_protocol alert, and
  // `curl --http2` could not connect at all.
  const int h2_port = PickFreePort();
  yaml = absl::StrCat("kind: Listener\nname: cbc-h2\nspec:\n  address: 127.0.0.1\n  port: ",
                      h2_port,
                      "\n  route_table: main\n  tls:\n    certificates: [default-cert]\n"
                      "    max_version: '1.2'\n    alpn_protocols: [h2]\n"
                      "    cipher_suites: 'ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-GCM-SHA256'\n");
  applied = cp_.Ctl({"apply", "-f", WriteFile(dir_, "cbc-h2.yaml", yaml)});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  ASSERT_TRUE(proxy_->WaitForVersion(3)) << proxy_->process().Log();
  std::string both =
      RunCommand({"/bin/bash", "-c",
                  absl::StrCat("printf 'GET /ok HTTP/1.1\\r\\nhost: a.test\\r\\nconnection: "
                               "close\\r\\n\\r\\n' | openssl s_client -ign_eof -connect 127.0.0.1:",
                               h2_port, " -tls1_2 -alpn h2,http/1.1 2>&1")})
          .out;
  EXPECT_TRUE(absl::StrContains(both, "No ALPN negotiated")) << both;
  EXPECT_TRUE(absl::StrContains(both, "Cipher is ECDHE-ECDSA-AES128-SHA")) << both;
  EXPECT_TRUE(absl::StrContains(both, "HTTP/1.1 ")) << both;
  EXPECT_FALSE(absl::StrContains(both, "no application protocol")) << both;
}

// A resumed session brings what its first handshake agreed on: it must not
// carry a TLS 1.2 suite a listener refuses (OpenSSL checks the session's
// suite against the client's list only), nor move to another server name
// (RFC 6066 3). Before: both resumed, and the second logged the old name.
TEST_F(TlsTest, ASessionResumesOnlyUnderItsOwnSuitesAndServerName) {
  const int narrow_port = PickFreePort();
  std::string yaml = absl::StrCat(
      "kind: Listener\nname: narrow\nspec:\n  address: 127.0.0.1\n  port: ", narrow_port,
      "\n  route_table: main\n  tls:\n    certificates: [default-cert, a-cert, wild-cert]\n"
      "    max_version: '1.2'\n    cipher_suites: ECDHE-ECDSA-AES256-GCM-SHA384\n");
  auto applied = cp_.Ctl({"apply", "-f", WriteFile(dir_, "narrow.yaml", yaml)});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  const std::string request =
      "printf 'GET / HTTP/1.1\\r\\nhost: a.test\\r\\nconnection: close\\r\\n\\r\\n'";
  auto twice = [&](const std::string& first, const std::string& second) {
    std::string sess = absl::StrCat(dir_, "/resume-", PickFreePort(), ".pem");
    return RunCommand(
        {"/bin/bash", "-c",
         absl::StrCat(request, " | openssl s_client -ign_eof ", first, " -sess_out ", sess,
                      " 2>&1 | grep -E '^(New|Reused),'; ", request,
                      " | openssl s_client -ign_eof ", second, " -sess_in ", sess,
                      " 2>&1 | grep -E '^(New|Reused),|^HTTP/1.1'")})
        .out;
  };
  const std::string https = absl::StrCat(" -connect 127.0.0.1:", https_port_);
  const std::string aes128 = " -tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256";
  // The control: the same listener and name resume.
  std::string out = twice(https + aes128 + " -servername a.test", https + aes128 + " -servername a.test");
  EXPECT_TRUE(absl::StrContains(out, "\nReused,")) << out;
  // A suite the narrow listener refuses is not brought in by a session.
  out = twice(https + aes128 + " -servername a.test",
              absl::StrCat(" -connect 127.0.0.1:", narrow_port, aes128, " -servername a.test"));
  EXPECT_FALSE(absl::StrContains(out, "Reused,")) << out;
  EXPECT_FALSE(absl::StrContains(out, "HTTP/1.1 200")) << out;
  // Another server name gets a full handshake (TLS 1.2 and 1.3).
  for (const char* version : {" -tls1_2", " -tls1_3"}) {
    out = twice(https + version + " -servername a.test", https + version + " -servername x.wild.test");
    EXPECT_FALSE(absl::StrContains(out, "Reused,")) << version << "\n" << out;
    EXPECT_TRUE(absl::StrContains(out, "HTTP/1.1 200")) << version << "\n" << out;
  }
}

// %TLS_SNI% is the name the client sent, also on a TLS 1.2 resumption,
// where OpenSSL's SSL_get_servername gives the session's first name (its
// case may differ); %TLS_CLIENT_SUBJECT% is the RFC 2253 form.
TEST_F(TlsTest, TlsVariablesAreWhatTheClientSent) {
  std::string yaml = absl::StrCat(
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n        - match: {prefix: /}\n          route: {cluster: web}\n"
      "          policies:\n            - name: headers\n              typed_config:\n"
      "                request:\n                  set:\n"
      "                    - {name: x-test-sni, value: '%TLS_SNI%'}\n"
      "                    - {name: x-test-subject, value: '%TLS_CLIENT_SUBJECT%'}\n");
  auto applied = cp_.Ctl({"apply", "-f", WriteFile(dir_, "vars.yaml", yaml)});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  TlsClientOptions options = ClientCertificateOverTls12();
  TlsClient first;
  ASSERT_TRUE(first.Connect(mtls_port_, options)) << first.error();
  Http1Message response;
  ASSERT_TRUE(first.Request(GetRequest("a.test", "/vars"), &response)) << first.error();
  EXPECT_EQ(response.Header("x-echo-x-test-sni"), "a.test");
  EXPECT_EQ(response.Header("x-echo-x-test-subject"), "CN=client-1");
  SSL_SESSION* session = first.TakeSession();
  ASSERT_NE(session, nullptr);
  first.Close();
  options.sni = "A.Test";
  options.session = session;
  TlsClient second;
  const bool connected = second.Connect(mtls_port_, options);
  SSL_SESSION_free(session);
  ASSERT_TRUE(connected) << second.error();
  EXPECT_TRUE(second.resumed());
  ASSERT_TRUE(second.Request(GetRequest("a.test", "/vars"), &response)) << second.error();
  EXPECT_EQ(response.Header("x-echo-x-test-sni"), "A.Test");
  EXPECT_EQ(response.Header("x-echo-x-test-subject"), "CN=client-1");
}

// The access log has what policies have: SNI, version, cipher and the
// client certificate's subject (issue 7; the cipher and subject were not
// logged).
TEST_F(TlsTest, TheAccessLogNamesTheCipherAndTheClientCertificate) {
  const std::string log = dir_ + "/mtls.log";
  ASSERT_TRUE(LogTheMtlsListener(log));
  TlsClientOptions options = ClientCertificateOverTls12();
  TlsClient client;
  ASSERT_TRUE(client.Connect(mtls_port_, options)) << client.error();
  Http1Message response;
  ASSERT_TRUE(client.Request(GetRequest("a.test", "/logged"), &response)) << client.error();
  const std::string line =
      WaitForFileLine(log, "\"path\":\"/logged\"", absl::Seconds(5)).value_or("");
  EXPECT_TRUE(absl::StrContains(line, "\"tls_version\":\"TLSv1.2\",\"sni\":\"a.test\","
                                      "\"tls_cipher\":\"ECDHE-"))
      << line;
  EXPECT_TRUE(absl::StrContains(line, "\"tls_client_subject\":\"CN=client-1\"")) << line;
}

// A client CA secret holding only an intermediate trusts the certificates
// it issued, as a cluster's tls.ca does. Before: "unknown ca".
TEST_F(TlsTest, AnIntermediateAloneIsEnoughAsTheClientCa) {
  TestCert inter = MakeIntermediateCa(ca_, dir_, "inter", "Test Intermediate");
  TestCert leaf = MakeSignedBy(inter, dir_, "inter-client", "client-2");
  const int port = PickFreePort();
  std::string yaml = absl::StrCat(
      CaSecretYaml("inter-only", inter),
      "---\nkind: Listener\nname: inter\nspec:\n  address: 127.0.0.1\n  port: ", port,
      "\n  route_table: main\n  tls:\n    certificates: [a-cert]\n    client_ca: inter-only\n");
  auto applied = cp_.Ctl({"apply", "-f", WriteFile(dir_, "inter.yaml", yaml)});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();
  std::string resolve = absl::StrCat("a.test:", port, ":127.0.0.1");
  std::string url = absl::StrCat("https://a.test:", port, "/inter");
  CommandResult with = RunCommand({"/usr/bin/curl", "-sS", "-k", "--cert", leaf.cert_path,
                                   "--key", leaf.key_path, "--resolve", resolve, url});
  EXPECT_EQ(with.exit_code, 0) << with.err;
  EXPECT_TRUE(absl::StrContains(with.out, "GET /inter")) << with.out;
  // The root's own clients are not the intermediate's.
  CommandResult other = RunCommand({"/usr/bin/curl", "-sS", "-k", "--cert", client_.cert_path,
                                    "--key", client_.key_path, "--resolve", resolve, url});
  EXPECT_NE(other.exit_code, 0) << other.out;
}

// HTTP/2 over TLS is chosen by ALPN only (RFC 9113 3.3): a client that
// negotiated http/1.1, or no ALPN, and opens with the HTTP/2 preface is an
// HTTP/1 client with a request line of version 2.0: 505, never HTTP/2
// frames.
TEST_F(TlsTest, AnHttp2PrefaceWithoutAlpnH2GetsHttp1) {
  for (const std::vector<std::string>& alpn :
       {std::vector<std::string>{"http/1.1"}, std::vector<std::string>{}}) {
    TlsClientOptions options;
    options.sni = "a.test";
    options.alpn = alpn;
    TlsClient client;
    ASSERT_TRUE(client.Connect(https_port_, options)) << client.error();
    EXPECT_EQ(client.alpn(), alpn.empty() ? "" : "http/1.1");
    Http1Message response;
    ASSERT_TRUE(client.Request("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &response))
        << client.error();
    EXPECT_EQ(response.status, 505);
  }
}

// A handshake per request (wrk with Connection: close, which reuses each
// connection's TLS session for the next one). Before: a resumed handshake got
// no new ticket, so only every other connection resumed; and, once it did,
// a client gone before its session ticket was written left the worker
// spinning on a write that returned 0 (no connection was served after).
TEST_F(TlsTest, AHandshakePerRequestResumesAndKeepsServing) {
  const int64_t handshakes = proxy_->Stat("sluice_downstream_tls_handshakes_total");
  const int64_t resumptions = proxy_->Stat("sluice_downstream_tls_resumptions_total");
  const std::string url = absl::StrCat("https://a.test:", https_port_, "/close");
  for (int round = 0; round < 3; ++round) {
    // By address (wrk resolves no --resolve), with the name in Host.
    CommandResult r = RunCommand({"/usr/bin/wrk", "-t1", "-c20", "-d2s", "-H", "Connection: close",
                                  "-H", "Host: a.test",
                                  absl::StrCat("https://127.0.0.1:", https_port_, "/close")},
                                 {}, absl::Seconds(30));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }
  const int64_t done = proxy_->Stat("sluice_downstream_tls_handshakes_total") - handshakes;
  const int64_t resumed = proxy_->Stat("sluice_downstream_tls_resumptions_total") - resumptions;
  EXPECT_GT(done, 100);
  EXPECT_GT(resumed, done * 9 / 10) << resumed << " of " << done << " handshakes resumed";
  // Still serving.
  CommandResult r = RunCommand({"/usr/bin/curl", "-sS", "-k", "--max-time", "5", "--resolve",
                                absl::StrCat("a.test:", https_port_, ":127.0.0.1"), url});
  EXPECT_EQ(r.exit_code, 0) << r.err << proxy_->process().Log();
}

TEST_F(TlsTest, RotatedCertificateAppliesToNewHandshakesOnly) {
  TlsClient open;
  TlsClientOptions options;
  options.sni = "a.test";
  ASSERT_TRUE(open.Connect(https_port_, options)) << open.error();
  Http1Message response;
  ASSERT_TRUE(open.Request(GetRequest("a.test", "/before"), &response)) << open.error();
  EXPECT_EQ(open.peer_subject(), "/CN=a.test");

  TestCert renewed = MakeSelfSigned(dir_, "a2", "a.test renewed", {"a.test"});
  auto r = cp_.Ctl(
      {"apply", "-f", WriteFile(dir_, "rotate.yaml", CertificateSecretYaml("a-cert", renewed))});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();

  EXPECT_EQ(SubjectFor("a.test"), "/CN=a.test renewed");
  // The connection opened before the change goes on with its session.
  ASSERT_TRUE(open.Request(GetRequest("a.test", "/after"), &response)) << open.error();
  EXPECT_EQ(response.status, 200);
  EXPECT_TRUE(absl::StrContains(response.body, "GET /after"));
}

// Taking a client's CA out of the listener's client_ca shuts out that
// client's open connection too, not only its next handshake: the
// connection, made under the old rules, is drained (its next response says
// Connection: close, or it is closed first).
TEST_F(TlsTest, ANarrowedClientCaDrainsOpenConnections) {
  std::signal(SIGPIPE, SIG_IGN);  // a write to the closed connection fails, not kills
  TlsClient open;
  TlsClientOptions options;
  options.sni = "a.test";
  options.client_cert_path = client_.cert_path;
  options.client_key_path = client_.key_path;
  ASSERT_TRUE(open.Connect(mtls_port_, options)) << open.error();
  Http1Message response;
  ASSERT_TRUE(open.Request(GetRequest("a.test", "/before"), &response)) << open.error();
  ASSERT_EQ(response.status, 200);
  ASSERT_TRUE(response.KeepAlive());

  TestCert other = MakeCa(dir_, "other-ca", "Other Client CA");
  auto r = cp_.Ctl({"apply", "-f", WriteFile(dir_, "narrow.yaml", CaSecretYaml("clients", other))});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(proxy_->WaitForVersion(2)) << proxy_->process().Log();

  bool answered = open.Request(GetRequest("a.test", "/after"), &response);
  EXPECT_TRUE(!answered || !response.KeepAlive()) << response.status;
  if (answered) {
    EXPECT_FALSE(open.Request(GetRequest("a.test", "/again"), &response)) << response.status;
  }
  // A new handshake with that certificate is refused.
  TlsClient fresh;
  EXPECT_TRUE(!fresh.Connect(mtls_port_, options) ||
              !fresh.Request(GetRequest("a.test", "/new"), &response));
}

TEST_F(TlsTest, MutualTlsRefusesClientsWithoutATrustedCertificate) {
  TlsClient anonymous;
  TlsClientOptions options;
  options.sni = "a.test";
  Http1Message response;
  // TLS 1.3: the server's refusal may surface at the handshake or at the
  // first read, depending on timing; either way no response comes.
  bool refused = !anonymous.Connect(mtls_port_, options) ||
                 !anonymous.Request(GetRequest("a.test", "/"), &response);
  EXPECT_TRUE(refused) << response.status;

  TestCert stranger = MakeSelfSigned(dir_, "stranger", "stranger", {});
  TlsClient untrusted;
  options.client_cert_path = stranger.cert_path;
  options.client_key_path = stranger.key_path;
  refused = !untrusted.Connect(mtls_port_, options) ||
            !untrusted.Request(GetRequest("a.test", "/"), &response);
  EXPECT_TRUE(refused) << response.status;

  TlsClient trusted;
  options.client_cert_path = client_.cert_path;
  options.client_key_path = client_.key_path;
  ASSERT_TRUE(trusted.Connect(mtls_port_, options)) << trusted.error();
  ASSERT_TRUE(trusted.Request(GetRequest("a.test", "/mtls"), &response)) << trusted.error();
  EXPECT_EQ(response.status, 200);

  // curl with and without the certificate.
  std::string resolve = absl::StrCat("a.test:", mtls_port_, ":127.0.0.1");
  std::string url = absl::StrCat("https://a.test:", mtls_port_, "/curl");
  CommandResult without = RunCommand({"/usr/bin/curl", "-sS", "-k", "--resolve", resolve, url});
  EXPECT_NE(without.exit_code, 0) << without.out;
  CommandResult with = RunCommand({"/usr/bin/curl", "-sS", "-k", "--cert", client_.cert_path, "--key",
                                   client_.key_path, "--resolve", resolve, url});
  EXPECT_EQ(with.exit_code, 0) << with.err;
  EXPECT_TRUE(absl::StrContains(with.out, "GET /curl")) << with.out;
  EXPECT_TRUE(WaitFor([&] { return HandshakeErrors("client_certificate") >= 2; }, absl::Seconds(5)))
      << HandshakeErrors("client_certificate");
}

// Each failed handshake is counted under the kind of its failure, so an
// operator sees why clients cannot connect without debug logs.
TEST_F(TlsTest, HandshakeFailuresAreCountedByReason) {
  auto expect_one_more = [&](const std::string& reason, const std::function<void()>& fail) {
    int64_t before = HandshakeErrors(reason);
    fail();
    EXPECT_TRUE(WaitFor([&] { return HandshakeErrors(reason) == before + 1; }, absl::Seconds(5)))
        << reason << ": " << HandshakeErrors(reason) << " after " << before << "\n"
        << proxy_->Admin("/stats").second;
  };
  expect_one_more("plain_http", [&] {
    SendRaw(absl::StrCat("127.0.0.1:", https_port_), "GET / HTTP/1.1\r\nhost: a.test\r\n\r\n");
  });
  // Methods OpenSSL does not know, and the HTTP/2 preface: plain HTTP too
  // (they were counted as protocol_version).
  expect_one_more("plain_http", [&] {
    SendRaw(absl::StrCat("127.0.0.1:", https_port_), "DELETE / HTTP/1.1\r\nhost: a.test\r\n\r\n");
  });
  expect_one_more("plain_http", [&] {
    SendRaw(absl::StrCat("127.0.0.1:", https_port_), "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  });
  // A client whose signature algorithms the certificate (ECDSA) cannot
  // serve: no shared cipher (it was "other").
  expect_one_more("no_shared_cipher", [&] {
    CommandResult r = RunCommand({"/bin/bash", "-c",
                                  absl::StrCat("echo | openssl s_client -connect 127.0.0.1:",
                                               https_port_,
                                               " -servername a.test -sigalgs RSA+SHA256 2>&1")});
    EXPECT_NE(r.exit_code, 0) << r.out;
  });
  expect_one_more("no_application_protocol", [&] {
    TlsClientOptions options;
    options.sni = "a.test";
    options.alpn = {"spdy/3"};
    TlsClient client;
    EXPECT_FALSE(client.Connect(https_port_, options));
  });
  std::string s_client = absl::StrCat("echo | openssl s_client -connect 127.0.0.1:", https_port_,
                                      " -servername a.test ");
  expect_one_more("protocol_version", [&] {
    CommandResult r = RunCommand(
        {"/bin/bash", "-c", s_client + "-tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' 2>&1"});
    EXPECT_NE(r.exit_code, 0) << r.out;
  });
  expect_one_more("no_shared_cipher", [&] {  // an RSA suite, the certificate is ECDSA
    CommandResult r =
        RunCommand({"/bin/bash", "-c", s_client + "-tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256 2>&1"});
    EXPECT_NE(r.exit_code, 0) << r.out;
  });
  expect_one_more("server_name", [&] {
    TlsClientOptions options;
    options.sni = "a test";
    TlsClient client;
    EXPECT_FALSE(client.Connect(https_port_, options));
  });
  // The log line names the listener and the kind (OpenSSL's own reason is
  // "callback failed"). Before: neither, whichever listener it was.
  EXPECT_TRUE(proxy_->process().WaitForLogLine("on listener \"https\" failed (server_name): ",
                                               absl::Seconds(5)))
      << proxy_->process().Log();
  expect_one_more("timeout", [&] {  // request_headers_timeout 500ms bounds the handshake
    const int fd = ConnectLoopback(quick_port_);
    ASSERT_GE(fd, 0);
    pollfd p{fd, POLLIN, 0};
    EXPECT_EQ(poll(&p, 1, 5000), 1);  // readable: the proxy closed it
    close(fd);
  });
  expect_one_more("closed", [&] {  // a client gone in the middle of its ClientHello
    const int fd = ConnectLoopback(https_port_);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(send(fd, "\x16\x03\x01\x00\x40\x01", 6, MSG_NOSIGNAL), 6);
    close(fd);
  });
}

TEST_F(TlsTest, AfterTheHandshakeAConnectionMayIdleBeforeItsFirstRequest) {
  // request_headers_timeout 500ms bounds the handshake, not the silence
  // after it: a pre-opened connection waits for its first request under the
  // idle timeout (30 s).
  TlsClient client;
  TlsClientOptions options;
  options.sni = "a.test";
  options.alpn = {"http/1.1"};
  ASSERT_TRUE(client.Connect(quick_port_, options)) << client.error();
  absl::SleepFor(absl::Milliseconds(1500));  // the scenario is three head timeouts of silence
  Http1Message response;
  ASSERT_TRUE(client.Request(GetRequest("a.test", "/late"), &response)) << client.error();
  EXPECT_EQ(response.status, 200);
  // A client that never finishes its handshake is still closed in time.
  const int fd = ConnectLoopback(quick_port_);
  ASSERT_GE(fd, 0);
  pollfd p{fd, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 5000), 1);  // readable: the proxy closed it
  char byte;
  EXPECT_EQ(read(fd, &byte, 1), 0);
  close(fd);
}

// RFC 8446 6.1: close_notify before the close. A keep-alive connection the
// proxy ends for idleness, and one that never sent a request, get it (a
// strict client reported "unexpected eof"), as from nginx.
TEST_F(TlsTest, AConnectionEndedForIdlenessGetsCloseNotify) {
  for (int version : {TLS1_2_VERSION, 0}) {
    TlsClientOptions options;
    options.sni = "a.test";
    options.alpn = {"http/1.1"};
    options.max_version = version;
    TlsClient used;
    ASSERT_TRUE(used.Connect(idle_port_, options)) << used.error();
    Http1Message response;
    ASSERT_TRUE(used.Request(GetRequest("a.test", "/x"), &response)) << used.error();
    EXPECT_EQ(response.status, 200);
    EXPECT_EQ(used.AwaitEnd(absl::Seconds(10)), "close_notify") << version;
    TlsClient silent;
    ASSERT_TRUE(silent.Connect(idle_port_, options)) << silent.error();
    EXPECT_EQ(silent.AwaitEnd(absl::Seconds(10)), "close_notify") << version;
  }
}

// http:// used for an https:// port: the client is told so in the clear
// (as by nginx), and nothing goes upstream. Before: an empty reply (curl:
// "Empty reply from server").
TEST_F(TlsTest, PlainHttpOnATlsPortIsAnsweredWithA400) {
  const std::string target = absl::StrCat("127.0.0.1:", https_port_);
  // Methods OpenSSL knows (GET), and others (DELETE).
  auto check = [](const std::string& reply) {
    EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 400 Bad Request\r\n")) << reply;
    EXPECT_TRUE(absl::StrContains(reply, "\r\nconnection: close\r\n")) << reply;
    EXPECT_TRUE(absl::StrContains(reply, "this port speaks HTTPS (use https://)")) << reply;
    EXPECT_FALSE(absl::StrContains(reply, "web-1")) << reply;
  };
  check(SendRaw(target, "GET / HTTP/1.1\r\nhost: a.test\r\n\r\n"));
  check(SendRaw(target, "DELETE /x HTTP/1.1\r\nhost: a.test\r\n\r\n"));
  // A body still coming when the answer goes: the close lingers (its bytes
  // are read and dropped), so the client sends it whole and then reads its
  // 400 and a FIN, not a reset. Before the linger: the send failed.
  {
    int fd = ConnectLoopback(https_port_);
    ASSERT_GE(fd, 0);
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    const size_t body = 4 << 20;
    std::string out = absl::StrCat("POST /y HTTP/1.1\r\nhost: a.test\r\ncontent-length: ", body,
                                   "\r\n\r\n", std::string(body, 'x'));
    size_t sent = 0;
    int send_error = 0;
    while (sent < out.size()) {
      ssize_t n = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) {
        send_error = errno;
        break;
      }
      sent += static_cast<size_t>(n);
    }
    EXPECT_EQ(sent, out.size()) << strerror(send_error);
    std::string reply;
    char buffer[4096];
    ssize_t n;
    while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) reply.append(buffer, n);
    EXPECT_EQ(n, 0) << strerror(errno);
    close(fd);
    check(reply);
  }
  // curl sees the answer.
  CommandResult curl = RunCommand({"/usr/bin/curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                   absl::StrCat("http://", target, "/")});
  EXPECT_EQ(curl.exit_code, 0) << curl.err;
  EXPECT_EQ(curl.out, "400");
  // An HTTP/2 client would not read an HTTP/1 answer: it is closed, as
  // are bytes that are neither TLS nor HTTP.
  EXPECT_EQ(SendRaw(target, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), "");
  EXPECT_EQ(SendRaw(target, std::string("\x01\x02garbage\r\n\r\n")), "");
  // And the listener still serves TLS afterwards.
  EXPECT_EQ(SubjectFor("a.test"), "/CN=a.test");

  // The 400 is in the access log, under the request id the client got,
  // with its request line, Host and User-Agent (before: none of them).
  const std::string log = dir_ + "/plain.log";
  ASSERT_TRUE(LogTheMtlsListener(log));
  const std::string reply =
      SendRaw(absl::StrCat("127.0.0.1:", mtls_port_),
              "OPTIONS /secret?q=1 HTTP/1.1\r\nhost: a.test\r\nuser-agent: wrong-scheme/1\r\n\r\n");
  check(reply);
  const size_t at = reply.find("x-request-id: ");
  ASSERT_NE(at, std::string::npos) << reply;
  const std::string id = reply.substr(at + 14, reply.find("\r\n", at) - at - 14);
  const std::string line = WaitForFileLine(log, id, absl::Seconds(5)).value_or("");
  EXPECT_TRUE(absl::StrContains(line, "\"status\":400")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"response_flag\":\"bad_request\"")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"method\":\"OPTIONS\",\"authority\":\"a.test\","
                                      "\"path\":\"/secret?q=1\",\"protocol\":\"HTTP/1.1\""))
      << line;
  EXPECT_TRUE(absl::StrContains(line, "\"user_agent\":\"wrong-scheme/1\"")) << line;
}

TEST_F(TlsTest, BadKeyMaterialIsRejectedAndTheLastGoodConfigKeepsServing) {
  // A key that is not the certificate's.
  TestCert other = MakeSelfSigned(dir_, "other", "other", {"other.test"});
  TestCert mismatched = a_;
  mismatched.key_pem = other.key_pem;
  auto r = cp_.Ctl(
      {"apply", "-f", WriteFile(dir_, "bad.yaml", CertificateSecretYaml("a-cert", mismatched))});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err + r.out, "private_key")) << r.err << r.out;
  // A listener naming a Secret that does not exist.
  std::string listener = absl::StrCat(
      "kind: Listener\nname: https\nspec:\n  address: 127.0.0.1\n  port: ", https_port_,
      "\n  route_table: main\n  tls:\n    certificates: [nope]\n");
  r = cp_.Ctl({"apply", "-f", WriteFile(dir_, "missing.yaml", listener)});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err + r.out, "nope")) << r.err << r.out;
  // Nothing changed: version 1 still serves.
  EXPECT_EQ(proxy_->ReadyVersion(), 1u);
  EXPECT_EQ(SubjectFor("a.test"), "/CN=a.test");
}

TEST_F(TlsTest, PrivateKeysAreNeverShown) {
  std::string key_line = a_.key_pem.substr(a_.key_pem.find('\n') + 1, 40);
  for (const char* format : {"yaml", "json", "table"}) {
    auto r = cp_.Ctl({"get", "secret", "a-cert", "-o", format});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_FALSE(absl::StrContains(r.out, key_line)) << format << ": " << r.out;
  }
  auto r = cp_.Ctl({"get", "secret", "a-cert", "-o", "yaml"});
  EXPECT_TRUE(absl::StrContains(r.out, "[redacted]")) << r.out;
  auto dump = proxy_->Admin("/config_dump");
  EXPECT_EQ(dump.first, 200);
  EXPECT_FALSE(absl::StrContains(dump.second, key_line));
  EXPECT_FALSE(absl::StrContains(proxy_->process().Log(), key_line));
  EXPECT_FALSE(absl::StrContains(cp_.process().Log(), key_line));
}

}  // namespace
}  // namespace sluice::testing
