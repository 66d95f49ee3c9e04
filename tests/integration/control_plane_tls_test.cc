// TLS on sluice-control's gRPC port and proxies authenticated by client
// certificates that name their node id (docs/operations.md, "Securing the
// control plane"): the real sluice-control, sluice-proxy and sluicectl, with
// certificates made by scripts/dev-certs.sh.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"

namespace sluice::testing {
namespace {

std::string WriteConfig(const std::string& yaml) {
  std::string path = MakeTempDir("config") + "/config.yaml";
  std::ofstream(path) << yaml;
  return path;
}

std::string ListenerYaml(int port) {
  return absl::StrCat(
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: "
      "['*']\n"
      "      routes:\n        - match: {prefix: /}\n          direct_response: "
      "{status: 200, "
      "body: \"over tls\"}\n---\nkind: Listener\nname: public\nspec: {address: "
      "127.0.0.1, "
      "port: ",
      port, ", route_table: main}\n");
}

// Replaces `to`.pem and `to`.key with copies of `from`.pem and `from`.key,
// each by a rename, as a certificate renewal does; true when both went.
bool InstallPair(const std::string& from, const std::string& to) {
  for (const char* ext : {".pem", ".key"}) {
    std::ifstream in(from + ext, std::ios::binary);
    std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (pem.empty()) return false;
    std::string tmp = to + ".next" + ext;
    std::ofstream(tmp, std::ios::binary) << pem;
    if (rename(tmp.c_str(), (to + ext).c_str()) != 0) return false;
  }
  return true;
}

class ControlPlaneTlsTest : public ::testing::Test {
 protected:
  // One CA and set of certificates for the whole suite: a proxy
  // certificate for node "p1" and one for node "p2".
  static void SetUpTestSuite() {
    certs_ = new std::string(MakeTempDir("certs"));
    CommandResult made =
        RunCommand({RunfilePath("scripts/dev-certs.sh"), *certs_, "p1", "p2"});
    ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
    ASSERT_NE(made.out.find("spiffe://sluice/node/p1"), std::string::npos)
        << made.out;
  }
  static std::string Cert(const std::string& name) {
    return absl::StrCat(*certs_, "/", name);
  }

  // A control plane serving TLS with client certificates.
  static std::vector<std::string> TlsArgs() {
    return {"--tls-cert",  Cert("control-plane.pem"),
            "--tls-key",   Cert("control-plane.key"),
            "--client-ca", Cert("ca.pem")};
  }
  // A proxy's flags for TLS, with the client certificate of `cert_node`
  // (none when empty).
  static std::vector<std::string> ProxyTls(const std::string& cert_node) {
    std::vector<std::string> args = {"--control-plane-ca", Cert("ca.pem")};
    if (!cert_node.empty()) {
      args.insert(args.end(),
                  {"--control-plane-cert", Cert("proxy-" + cert_node + ".pem"),
                   "--control-plane-key", Cert("proxy-" + cert_node + ".key")});
    }
    return args;
  }

  // Applies a listener on a free port through `cp` (TLS, verified by our
  // CA); true when it was applied.
  static bool ApplyListener(ControlPlane& cp) {
    return cp.Ctl({"--ca", Cert("ca.pem"), "apply", "-f",
                   WriteConfig(ListenerYaml(PickFreePort()))})
               .exit_code == 0;
  }

  static std::string* certs_;
};

std::string* ControlPlaneTlsTest::certs_ = nullptr;

// (a) and (d): sluicectl with --ca applies and lists; a proxy whose
// certificate names its node id gets the config and serves it.
TEST_F(ControlPlaneTlsTest, ProxyWithItsOwnCertificateServesTheConfig) {
  ControlPlane cp("", "debug", TlsArgs());
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  EXPECT_TRUE(cp.process().WaitForLogLine(
      "TLS, proxies need a client certificate", absl::ZeroDuration()))
      << cp.process().Log();
  const int port = PickFreePort();
  CommandResult applied = cp.Ctl(
      {"--ca", Cert("ca.pem"), "apply", "-f", WriteConfig(ListenerYaml(port))});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;

  Proxy proxy(cp.address(), "p1", 1, "", ProxyTls("p1"));
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1))
      << proxy.process().Log() << cp.process().Log();
  HttpResponse response = HttpGet(absl::StrCat("127.0.0.1:", port), "/");
  EXPECT_EQ(response.status, 200) << response.error;
  EXPECT_EQ(response.body, "over tls");

  // $SLUICE_CA works as --ca does, and sees the proxy.
  CommandResult proxies =
      RunCommand({RunfilePath("controlplane/cli/sluicectl"), "--server",
                  cp.address(), "proxies"},
                 {absl::StrCat("SLUICE_CA=", Cert("ca.pem"))});
  EXPECT_EQ(proxies.exit_code, 0) << proxies.err;
  EXPECT_NE(proxies.out.find("p1"), std::string::npos) << proxies.out;
  CommandResult listed = cp.Ctl({"--ca", Cert("ca.pem"), "get"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find("public"), std::string::npos) << listed.out;
}

// With TLS and tokens, an admin call without a valid token is refused on its
// metadata, before gRPC reads its request (up to 65 MiB): the audit line
// says so. Before: read whole, then refused, so any client that reached the
// port could make sluice-control hold gigabytes. Proxies (no token: their
// certificate) and callers with a token are let through.
TEST_F(ControlPlaneTlsTest, AnAdminCallWithoutATokenIsRefusedBeforeItsRequestIsRead) {
  const std::string dir = MakeTempDir("tls-tokens");
  const std::string token = "tls-bootstrap-token-0123456789abcdef";
  const std::string token_file = WriteFile(dir, "admin-token", token + "\n");
  chmod(token_file.c_str(), 0600);
  std::vector<std::string> args = TlsArgs();
  args.insert(args.end(), {"--require-tokens", "--admin-token-file", token_file});
  ControlPlane cp("", "info", args);
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  CommandResult refused = cp.Ctl({"--ca", Cert("ca.pem"), "apply", "-f",
                                  WriteConfig(ListenerYaml(PickFreePort()))});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(refused.err, "not authenticated")) << refused.err;
  const std::string audit = ReadFile(cp.data_dir() + "/audit.log");
  EXPECT_TRUE(absl::StrContains(audit, "\"peer\":\"(refused before its request was read)\","
                                       "\"method\":\"Apply\"")) << audit;
  const int port = PickFreePort();
  CommandResult applied = cp.Ctl({"--ca", Cert("ca.pem"), "--token", token, "apply", "-f",
                                  WriteConfig(ListenerYaml(port))});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  // A valid token of a role the method does not allow is refused unread
  // too (a viewer's Apply was read whole first: 60 MiB calls took the
  // control plane to 200 MB), with the role named; its reads go through.
  CommandResult viewer = cp.Ctl({"--ca", Cert("ca.pem"), "--token", token, "token", "create",
                                 "grafana", "--role", "viewer"});
  ASSERT_EQ(viewer.exit_code, 0) << viewer.out << viewer.err;
  const std::string viewer_token(absl::StripAsciiWhitespace(viewer.out));
  CommandResult denied = cp.Ctl({"--ca", Cert("ca.pem"), "--token", viewer_token, "apply", "-f",
                                 WriteConfig(ListenerYaml(PickFreePort()))});
  EXPECT_EQ(denied.exit_code, 1) << denied.out << denied.err;
  EXPECT_TRUE(absl::StrContains(denied.err, "Apply needs the operator role; your token "
                                            "'grafana' is a viewer"))
      << denied.err;
  const std::string audited = ReadFile(cp.data_dir() + "/audit.log");
  EXPECT_TRUE(absl::StrContains(audited, "\"identity\":\"grafana\",\"peer\":\"(refused before "
                                         "its request was read)\",\"method\":\"Apply\""))
      << audited;
  EXPECT_EQ(cp.Ctl({"--ca", Cert("ca.pem"), "--token", viewer_token, "get"}).exit_code, 0);
  Proxy proxy(cp.address(), "p1", 1, "", ProxyTls("p1"));
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log() << cp.process().Log();
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", port), "/").status, 200);
}

// (b) A proxy whose certificate names another node is refused; both ids are
// named in the control plane's log and in the proxy's.
TEST_F(ControlPlaneTlsTest, CertificateForAnotherNodeIsRefused) {
  const std::string metrics = absl::StrCat("127.0.0.1:", PickFreePort());
  std::vector<std::string> args = TlsArgs();
  args.insert(args.end(), {"--metrics-listen", metrics});
  ControlPlane cp("", "debug", args);
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ASSERT_TRUE(ApplyListener(cp));
  Proxy impostor(cp.address(), "p1", 1, "", ProxyTls("p2"));
  ASSERT_TRUE(impostor.ok()) << impostor.process().Log();
  EXPECT_TRUE(
      cp.process().WaitForLogLine("node.id \"p1\" differs from the node \"p2\" "
                                  "that the client certificate names",
                                  absl::Seconds(10)))
      << cp.process().Log();
  EXPECT_TRUE(impostor.process().WaitForLogLine(
      "refused the config stream (PERMISSION_DENIED", absl::Seconds(10)))
      << impostor.process().Log();
  EXPECT_EQ(impostor.ReadyVersion(), 0u);
  EXPECT_EQ(cp.process().Log().find("proxy p1 connected"), std::string::npos);
  // Counted for alerts.
  HttpResponse scraped = HttpGet(metrics, "/metrics");
  ASSERT_EQ(scraped.status, 200) << scraped.error;
  EXPECT_FALSE(absl::StrContains(scraped.body, "sluice_control_stream_refusals_total 0\n"))
      << scraped.body;
  EXPECT_TRUE(absl::StrContains(scraped.body, "sluice_control_stream_refusals_total "))
      << scraped.body;
}

// Only a URI SAN names a node: a certificate whose DNS SAN reads
// "spiffe://sluice/node/p3" is refused (before: it connected as p3).
TEST_F(ControlPlaneTlsTest, ADnsSanSpelledAsANodeUriNamesNoNode) {
  const std::string dir = MakeTempDir("dns-san");
  CommandResult made = RunCommand(
      {"/bin/bash", "-c",
       absl::StrCat("set -e; cd ", dir,
                    "; openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-subj /CN=p3 -keyout p3.key -out p3.csr 2>/dev/null; "
                    "printf 'subjectAltName=DNS:spiffe://sluice/node/p3\\nextendedKeyUsage=clientAuth\\n' > ext; "
                    "openssl x509 -req -in p3.csr -CA ", Cert("ca.pem"), " -CAkey ", Cert("ca.key"),
                    " -CAcreateserial -days 2 -extfile ext -out p3.pem 2>/dev/null")});
  ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  ControlPlane cp("", "debug", TlsArgs());
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ASSERT_TRUE(ApplyListener(cp));
  Proxy posing(cp.address(), "p3", 1, "",
               {"--control-plane-ca", Cert("ca.pem"), "--control-plane-cert", dir + "/p3.pem",
                "--control-plane-key", dir + "/p3.key"});
  ASSERT_TRUE(posing.ok()) << posing.process().Log();
  EXPECT_TRUE(posing.process().WaitForLogLine("refused the config stream (PERMISSION_DENIED",
                                              absl::Seconds(10)))
      << posing.process().Log() << cp.process().Log();
  EXPECT_EQ(posing.ReadyVersion(), 0u);
  EXPECT_EQ(cp.process().Log().find("proxy p3 connected"), std::string::npos);
}

// A renewed client certificate (cert-manager rewrites the files) is read
// again at the next connection, without a restart: here the files first
// hold another node's certificate (refused), then this node's.
TEST_F(ControlPlaneTlsTest, ARenewedClientCertificateIsUsedAtTheNextReconnect) {
  ControlPlane cp("", "debug", TlsArgs());
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ASSERT_TRUE(ApplyListener(cp));
  const std::string dir = MakeTempDir("client-cert");
  ASSERT_TRUE(InstallPair(Cert("proxy-p2"), dir + "/client"));
  Proxy proxy(cp.address(), "p1", 1, "",
              {"--control-plane-ca", Cert("ca.pem"), "--control-plane-cert", dir + "/client.pem",
               "--control-plane-key", dir + "/client.key"});
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.process().WaitForLogLine("refused the config stream (PERMISSION_DENIED",
                                             absl::Seconds(10)))
      << proxy.process().Log();
  ASSERT_TRUE(InstallPair(Cert("proxy-p1"), dir + "/client"));
  EXPECT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log() << cp.process().Log();
}

// sluice-control watches its own TLS files: a renewed certificate serves
// new handshakes within --tls-reload-interval, without a restart. Here the
// files first hold a certificate of another CA (clients refuse it), then
// the right one.
TEST_F(ControlPlaneTlsTest, ARenewedServerCertificateIsServedWithoutARestart) {
  const std::string other = MakeTempDir("other-ca");
  CommandResult made = RunCommand({RunfilePath("scripts/dev-certs.sh"), other, "p1"});
  ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  const std::string dir = MakeTempDir("server-cert");
  ASSERT_TRUE(InstallPair(other + "/control-plane", dir + "/server"));
  ControlPlane cp("", "debug",
                  {"--tls-cert", dir + "/server.pem", "--tls-key", dir + "/server.key",
                   "--client-ca", Cert("ca.pem"), "--tls-reload-interval", "1s"});
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  EXPECT_NE(cp.Ctl({"--ca", Cert("ca.pem"), "get"}).exit_code, 0);  // not our CA's
  ASSERT_TRUE(InstallPair(Cert("control-plane"), dir + "/server"));
  EXPECT_TRUE(WaitFor([&] { return cp.Ctl({"--ca", Cert("ca.pem"), "get"}).exit_code == 0; },
                      absl::Seconds(15)))
      << cp.process().Log();
  const int port = PickFreePort();
  ASSERT_EQ(cp.Ctl({"--ca", Cert("ca.pem"), "apply", "-f", WriteConfig(ListenerYaml(port))})
                .exit_code,
            0);
  Proxy proxy(cp.address(), "p1", 1, "", ProxyTls("p1"));
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  EXPECT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log() << cp.process().Log();
}

// A file read again that is garbage, or a certificate caught renewed
// before its key, is not installed: the files read before keep serving
// new handshakes, with a warning, until a good set comes. Before, gRPC's
// watcher installed whatever it read and every handshake failed.
TEST_F(ControlPlaneTlsTest, ABadOrHalfRenewedServerFileKeepsTheLastGoodOnes) {
  const std::string other = MakeTempDir("other-ca-bad");
  CommandResult made = RunCommand({RunfilePath("scripts/dev-certs.sh"), other, "p1"});
  ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  const std::string dir = MakeTempDir("server-cert-bad");
  ASSERT_TRUE(InstallPair(Cert("control-plane"), dir + "/server"));
  ControlPlane cp("", "debug",
                  {"--tls-cert", dir + "/server.pem", "--tls-key", dir + "/server.key",
                   "--client-ca", Cert("ca.pem"), "--tls-reload-interval", "1s"});
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ASSERT_EQ(cp.Ctl({"--ca", Cert("ca.pem"), "get"}).exit_code, 0) << cp.process().Log();
  // Calls keep working for 3 s (gRPC's watcher reads every second).
  auto keeps_serving = [&](const std::string& what) {
    const absl::Time until = absl::Now() + absl::Seconds(3);
    while (absl::Now() < until) {
      CommandResult r = cp.Ctl({"--ca", Cert("ca.pem"), "get"});
      if (r.exit_code != 0) {
        ADD_FAILURE() << what << ": " << r.err << cp.process().Log();
        return;
      }
    }
  };
  auto replace = [&](const std::string& path, const std::string& text) {
    std::ofstream(path + ".next", std::ios::binary) << text;
    return rename((path + ".next").c_str(), path.c_str()) == 0;
  };
  // The certificate renewed, its key not yet.
  std::ifstream other_pem(other + "/control-plane.pem", std::ios::binary);
  ASSERT_TRUE(replace(dir + "/server.pem",
                      std::string((std::istreambuf_iterator<char>(other_pem)),
                                  std::istreambuf_iterator<char>())));
  ASSERT_TRUE(cp.process().WaitForLogLine(
      "--tls-key is not the private key of --tls-cert's certificate (another key pair); new "
      "handshakes keep the TLS files read before",
      absl::Seconds(10)))
      << cp.process().Log();
  keeps_serving("half renewed");
  // Garbage in the key file.
  ASSERT_TRUE(replace(dir + "/server.key",
                      "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"));
  ASSERT_TRUE(cp.process().WaitForLogLine("--tls-key: the private key does not parse",
                                          absl::Seconds(10)))
      << cp.process().Log();
  keeps_serving("garbage key");
  // The right pair, but a chain whose second block is broken (served, it
  // was the leaf alone, which clients refused).
  ASSERT_TRUE(InstallPair(Cert("control-plane"), dir + "/server"));
  std::ifstream leaf(Cert("control-plane.pem"), std::ios::binary);
  ASSERT_TRUE(replace(dir + "/server.pem",
                      std::string((std::istreambuf_iterator<char>(leaf)),
                                  std::istreambuf_iterator<char>()) +
                          "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END "
                          "CERTIFICATE-----\n"));
  ASSERT_TRUE(cp.process().WaitForLogLine(
      "--tls-cert: a certificate after the first does not parse", absl::Seconds(10)))
      << cp.process().Log();
  keeps_serving("broken chain");
  // The whole new pair: served (clients of the old CA now refuse it).
  ASSERT_TRUE(InstallPair(other + "/control-plane", dir + "/server"));
  EXPECT_TRUE(WaitFor([&] { return cp.Ctl({"--ca", other + "/ca.pem", "get"}).exit_code == 0; },
                      absl::Seconds(15)))
      << cp.process().Log();
  EXPECT_NE(cp.Ctl({"--ca", Cert("ca.pem"), "get"}).exit_code, 0);
}

// A proxy's certificate caught renewed before its key is not used: it
// reconnects with the pair read before (before: "Invalid private key", and
// no connection until the key came).
TEST_F(ControlPlaneTlsTest, AHalfRenewedClientCertificateKeepsThePairReadBefore) {
  ControlPlane cp("", "debug", TlsArgs());
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ASSERT_TRUE(ApplyListener(cp));
  const std::string dir = MakeTempDir("client-cert-half");
  ASSERT_TRUE(InstallPair(Cert("proxy-p1"), dir + "/client"));
  Proxy proxy(cp.address(), "p1", 1, "",
              {"--control-plane-ca", Cert("ca.pem"), "--control-plane-cert", dir + "/client.pem",
               "--control-plane-key", dir + "/client.key"});
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  // p2's certificate, p1's key still: a mismatched pair.
  std::ifstream p2(Cert("proxy-p2.pem"), std::ios::binary);
  std::ofstream(dir + "/client.pem.next", std::ios::binary)
      << std::string((std::istreambuf_iterator<char>(p2)), std::istreambuf_iterator<char>());
  ASSERT_EQ(rename((dir + "/client.pem.next").c_str(), (dir + "/client.pem").c_str()), 0);
  cp.Kill();
  ASSERT_TRUE(cp.Restart()) << cp.process().Log();
  ASSERT_TRUE(ApplyListener(cp));  // version 2
  EXPECT_TRUE(proxy.WaitForVersion(2)) << proxy.process().Log() << cp.process().Log();
  EXPECT_TRUE(proxy.process().WaitForLogLine(
      "--control-plane-key is not the private key of --control-plane-cert's certificate",
      absl::Seconds(5)))
      << proxy.process().Log();
}

// (c) A proxy that speaks TLS but presents no client certificate is refused.
TEST_F(ControlPlaneTlsTest, ProxyWithoutClientCertificateIsRefused) {
  const std::string metrics = absl::StrCat("127.0.0.1:", PickFreePort());
  std::vector<std::string> args = TlsArgs();
  args.insert(args.end(), {"--metrics-listen", metrics});
  ControlPlane cp("", "debug", args);
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ASSERT_TRUE(ApplyListener(cp));
  Proxy anonymous(cp.address(), "p1", 1, "", ProxyTls(""));
  ASSERT_TRUE(anonymous.ok()) << anonymous.process().Log();
  EXPECT_TRUE(anonymous.process().WaitForLogLine(
      "refused the config stream (UNAUTHENTICATED", absl::Seconds(10)))
      << anonymous.process().Log();
  EXPECT_TRUE(cp.process().WaitForLogLine("this connection presented none",
                                          absl::Seconds(5)))
      << cp.process().Log();
  EXPECT_EQ(anonymous.ReadyVersion(), 0u);
  // Counted (it was not: only another node's certificate was).
  HttpResponse scraped = HttpGet(metrics, "/metrics");
  ASSERT_EQ(scraped.status, 200) << scraped.error;
  EXPECT_FALSE(absl::StrContains(scraped.body, "sluice_control_stream_refusals_total 0\n"))
      << scraped.body;
}

// (d) sluicectl without --ca against a TLS port fails and says what to give.
// Server-authenticated TLS (no --client-ca, as deploy/kubernetes runs it):
// a proxy with only --control-plane-ca gets the config and warns of no
// client certificate it was never given. Before: "--control-plane-cert:
// the certificate does not parse" at every start.
TEST_F(ControlPlaneTlsTest, AProxyWithOnlyTheCaConnectsWithoutWarnings) {
  ControlPlane cp("", "info",
                  {"--tls-cert", Cert("control-plane.pem"), "--tls-key", Cert("control-plane.key")});
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  ASSERT_TRUE(ApplyListener(cp));
  Proxy proxy(cp.address(), "p1", 1, "", ProxyTls(""));
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log() << cp.process().Log();
  EXPECT_FALSE(absl::StrContains(proxy.process().Log(), "--control-plane-cert"))
      << proxy.process().Log();
  EXPECT_FALSE(absl::StrContains(proxy.process().Log(), "WARN")) << proxy.process().Log();
}

TEST_F(ControlPlaneTlsTest, SluicectlWithoutCaFailsClearly) {
  ControlPlane cp("", "debug", TlsArgs());
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  CommandResult plain = cp.Ctl({"get"});
  EXPECT_NE(plain.exit_code, 0);
  EXPECT_NE(plain.err.find("cannot reach sluice-control at " + cp.address()),
            std::string::npos)
      << plain.err;
  EXPECT_NE(plain.err.find("give --ca FILE or set $SLUICE_CA"),
            std::string::npos)
      << plain.err;

  // Another CA's: refused, in sluicectl's words only (gRPC core's own line,
  // `E... ssl_transport_security.cc:1501] Handshake failed`, came first).
  const std::string other = MakeTempDir("other-ca-ctl");
  ASSERT_EQ(RunCommand({RunfilePath("scripts/dev-certs.sh"), other, "p1"}).exit_code, 0);
  CommandResult wrong_ca = cp.Ctl({"--ca", other + "/ca.pem", "get"});
  EXPECT_NE(wrong_ca.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(wrong_ca.err, "cannot reach sluice-control")) << wrong_ca.err;
  EXPECT_FALSE(absl::StrContains(wrong_ca.err, "ssl_transport_security")) << wrong_ca.err;

  CommandResult missing = cp.Ctl({"--ca", Cert("no-such.pem"), "get"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("--ca " + Cert("no-such.pem") + ": cannot read"),
            std::string::npos)
      << missing.err;
}

// A proxy without --control-plane-ca against a TLS port says what to give,
// as sluicectl does (it logged only "Socket closed", again and again).
TEST_F(ControlPlaneTlsTest, ProxyWithoutCaSaysWhatToGive) {
  ControlPlane cp("", "debug", TlsArgs());
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  Proxy plain(cp.address(), "p1", 1, "", {});
  ASSERT_TRUE(plain.ok()) << plain.process().Log();
  EXPECT_TRUE(plain.process().WaitForLogLine(
      "(if it serves TLS, give --control-plane-ca FILE)", absl::Seconds(10)))
      << plain.process().Log();
  EXPECT_EQ(plain.ReadyVersion(), 0u);
}

// gRPC core logs every refused TLS handshake; anyone who reaches the port
// made one line each, in gRPC's own format, without limit. Now they go
// through the process log: at most 100 at once, then 10 a second, and the
// next line written says how many were not.
TEST_F(ControlPlaneTlsTest, RefusedHandshakesCannotFloodTheLog) {
  ControlPlane cp("", "info", TlsArgs());
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  auto plaintext_hello = [&] {
    SendRaw(cp.address(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n", absl::Seconds(2));
  };
  for (int i = 0; i < 300; ++i) plaintext_hello();
  // Once credit is back, the next line is let through, with the count.
  EXPECT_TRUE(WaitFor(
      [&] {
        plaintext_hello();
        return absl::StrContains(cp.process().Log(), "more gRPC log lines not written");
      },
      absl::Seconds(5)))
      << cp.process().Log().substr(0, 2000);
  const std::string log = cp.process().Log();
  size_t lines = 0;
  for (size_t at = log.find("grpc: "); at != std::string::npos; at = log.find("grpc: ", at + 1)) {
    ++lines;
  }
  EXPECT_GT(lines, 50u);
  EXPECT_LT(lines, 200u) << log.substr(0, 2000);
}

// A key that is not the certificate's is refused at start, naming both
// flags (before: it listened and failed every handshake, "Socket closed"),
// and so is a bad --admin-token-file, before any store is made (before: the
// data dir was left with a new store and its lock).
TEST_F(ControlPlaneTlsTest, MismatchedKeyAndBadTokenFileAreRefusedAtStart) {
  const std::string binary = RunfilePath("controlplane/server/sluice-control");
  const std::string data = MakeTempDir("cp-data");
  CommandResult r = RunCommand({binary, "--listen", absl::StrCat("127.0.0.1:", PickFreePort()),
                                "--data-dir", data, "--tls-cert", Cert("control-plane.pem"),
                                "--tls-key", Cert("ca.key")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--tls-key is not the private key of --tls-cert"))
      << r.err;
  const std::string short_token = WriteFile(MakeTempDir("cp-token"), "token", "short\n");
  r = RunCommand({binary, "--listen", absl::StrCat("127.0.0.1:", PickFreePort()), "--data-dir",
                  data, "--admin-token-file", short_token});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "at least 16")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(data + "/state.db"));
  EXPECT_FALSE(std::filesystem::exists(data + "/LOCK"));
  // One no gRPC client could send: refused as early (it made a store first).
  const std::string accented =
      WriteFile(MakeTempDir("cp-token"), "token", "0123456789abcdef\xc3\xa9\n");
  r = RunCommand({binary, "--listen", absl::StrCat("127.0.0.1:", PickFreePort()), "--data-dir",
                  data, "--admin-token-file", accented});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "character 17 is byte 0xc3")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(data + "/state.db"));
  EXPECT_FALSE(std::filesystem::exists(data + "/LOCK"));
  // --require-tokens with no token at all, in a new data dir: nothing made.
  r = RunCommand({binary, "--listen", absl::StrCat("127.0.0.1:", PickFreePort()), "--data-dir",
                  data, "--require-tokens"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--require-tokens: no token exists yet")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(data + "/state.db"));
  EXPECT_FALSE(std::filesystem::exists(data + "/LOCK"));
  // A proxy's client key that is not its certificate's: refused at start.
  r = RunCommand({RunfilePath("dataplane/server/sluice-proxy"), "--control-plane",
                  "127.0.0.1:18000", "--node-id", "p", "--control-plane-ca", Cert("ca.pem"),
                  "--control-plane-cert", Cert("control-plane.pem"), "--control-plane-key",
                  Cert("ca.key")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "--control-plane-key is not the private key")) << r.err;
}

// (e) Plaintext on a non-loopback address needs --insecure.
TEST_F(ControlPlaneTlsTest, PlaintextOnAllAddressesNeedsInsecure) {
  const std::string listen = absl::StrCat("0.0.0.0:", PickFreePort());
  const std::string binary = RunfilePath("controlplane/server/sluice-control");
  Process refused(binary,
                  {"--listen", listen, "--data-dir", MakeTempDir("cp-data")},
                  MakeTempDir("cp-log") + "/log");
  std::optional<int> status = refused.Wait(absl::Seconds(10));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 2) << *status;
  EXPECT_NE(refused.Log().find("--insecure"), std::string::npos)
      << refused.Log();
  EXPECT_NE(refused.Log().find("0.0.0.0, which is not a loopback address"),
            std::string::npos)
      << refused.Log();

  Process allowed(
      binary,
      {"--listen", listen, "--data-dir", MakeTempDir("cp-data"), "--insecure"},
      MakeTempDir("cp-log") + "/log");
  EXPECT_TRUE(
      allowed.WaitForLogLine("listening on 0.0.0.0:", absl::Seconds(10)))
      << allowed.Log();
  // Open to whoever reaches it, and told so.
  EXPECT_TRUE(absl::StrContains(allowed.Log(), "without --require-tokens: unless tokens are "
                                               "stored, anyone who reaches this port can "
                                               "change the config"))
      << allowed.Log();
}

}  // namespace
}  // namespace sluice::testing
