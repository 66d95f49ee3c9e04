// sluice-control --store etcd over TLS with client certificates: one real
// etcd member serving https:// client URLs with --client-cert-auth,
// certificates made by scripts/dev-certs.sh (openssl). With the right CA and
// a client certificate applies work; without the certificate, with another
// CA or with a wrong server name the start-up log says which TLS check
// failed; bad flag combinations are refused before anything starts.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/process.h"

namespace sluice::testing {
namespace {

constexpr char kYaml[] =
    "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
    "    - domains: ['*']\n      routes:\n"
    "        - match: {prefix: /}\n          direct_response: {status: 200, "
    "body: ok}\n";

class EtcdTlsTest : public ::testing::Test {
 protected:
  // Two CAs: `certs_` signs etcd's server certificate (SAN localhost,
  // 127.0.0.1) and sluice-control's client certificate; `other_` is a CA
  // etcd does not know.
  static void SetUpTestSuite() {
    certs_ = new std::string(MakeTempDir("etcd-certs"));
    other_ = new std::string(MakeTempDir("other-certs"));
    for (const std::string* dir : {certs_, other_}) {
      CommandResult made = RunCommand(
          {RunfilePath("scripts/dev-certs.sh"), *dir, "sluice-control"});
      ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
    }
    etcd_ = new EtcdCluster(
        1, EtcdTlsFiles{Cert("control-plane.pem"), Cert("control-plane.key"),
                        Cert("ca.pem")});
    ASSERT_TRUE(etcd_->ok()) << etcd_->Logs();
  }
  static void TearDownTestSuite() {
    delete etcd_;
    etcd_ = nullptr;
  }
  static std::string Cert(const std::string& name) {
    return absl::StrCat(*certs_, "/", name);
  }
  static std::vector<std::string> ClientCertificate() {
    return {"--etcd-cert", Cert("proxy-sluice-control.pem"), "--etcd-key",
            Cert("proxy-sluice-control.key")};
  }
  static std::vector<std::string> StoreArgs(std::vector<std::string> extra) {
    std::vector<std::string> args = {"--store",          "etcd",
                                     "--etcd-endpoints", etcd_->endpoints(),
                                     "--etcd-timeout",   "1s"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // Starts sluice-control with `extra` and waits for its start-up log to
  // say why it cannot load the state; returns that line (else the log).
  static std::string StartUpFailure(const std::vector<std::string>& extra) {
    const std::string data_dir = MakeTempDir("cp-data");
    std::vector<std::string> args = {"--listen", "127.0.0.1:0", "--data-dir",
                                     data_dir};
    for (const std::string& arg : StoreArgs(extra)) args.push_back(arg);
    Process cp(RunfilePath("controlplane/server/sluice-control"), args,
               data_dir + ".log");
    std::optional<std::string> line =
        cp.WaitForLogLine("cannot load the state from etcd", absl::Seconds(10));
    EXPECT_FALSE(cp.WaitForLogLine("listening on", absl::ZeroDuration()))
        << cp.Log();
    return line.value_or("(no such line) " + cp.Log());
  }

  static std::string* certs_;
  static std::string* other_;
  static EtcdCluster* etcd_;
};

std::string* EtcdTlsTest::certs_ = nullptr;
std::string* EtcdTlsTest::other_ = nullptr;
EtcdCluster* EtcdTlsTest::etcd_ = nullptr;

TEST_F(EtcdTlsTest, ClientCertificateAppliesAndReads) {
  std::vector<std::string> extra = {"--etcd-ca", Cert("ca.pem")};
  for (const std::string& arg : ClientCertificate()) extra.push_back(arg);
  ControlPlane cp("", "info", StoreArgs(extra));
  ASSERT_TRUE(cp.ok()) << cp.process().Log() << etcd_->Logs();
  EXPECT_TRUE(cp.process().WaitForLogLine("(TLS with a client certificate)",
                                          absl::ZeroDuration()))
      << cp.process().Log();
  CommandResult applied =
      cp.Ctl({"apply", "-f", WriteFile(MakeTempDir("apply"), "c.yaml", kYaml)});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  EXPECT_TRUE(absl::StrContains(applied.out, "applied: version 1"))
      << applied.out;

  // A second replica with the same flags reads what the first one stored.
  // Its key is readable by every user: said at start, as for --tls-key (the
  // client certificate reads and writes the whole store).
  const std::string loose_key =
      WriteFile(MakeTempDir("loose-key"), "client.key", ReadFile(Cert("proxy-sluice-control.key")));
  ASSERT_EQ(::chmod(loose_key.c_str(), 0644), 0);
  std::vector<std::string> loose = {"--etcd-ca", Cert("ca.pem"), "--etcd-cert",
                                    Cert("proxy-sluice-control.pem"), "--etcd-key", loose_key};
  ControlPlane second("", "info", StoreArgs(loose));
  ASSERT_TRUE(second.ok()) << second.process().Log();
  EXPECT_TRUE(second.process().WaitForLogLine(
      absl::StrCat("--etcd-key ", loose_key, " is readable by every user on this host"),
      absl::ZeroDuration()))
      << second.process().Log();
  CommandResult listed = second.Ctl({"get"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_TRUE(absl::StrContains(listed.out, "main")) << listed.out;
}

TEST_F(EtcdTlsTest, WithoutClientCertificateStartUpSaysSo) {
  const std::string line = StartUpFailure({"--etcd-ca", Cert("ca.pem")});
  EXPECT_TRUE(absl::StrContains(line, "etcd: TLS failed with every endpoint"))
      << line;
  EXPECT_TRUE(absl::StrContains(
      line, "refuses clients without a certificate: give --etcd-cert"))
      << line;
}

TEST_F(EtcdTlsTest, WrongCaStartUpSaysSo) {
  std::vector<std::string> extra = {"--etcd-ca", *other_ + "/ca.pem"};
  for (const std::string& arg : ClientCertificate()) extra.push_back(arg);
  const std::string line = StartUpFailure(extra);
  EXPECT_TRUE(absl::StrContains(line, "etcd: TLS failed with every endpoint"))
      << line;
  EXPECT_TRUE(absl::StrContains(line, "certificate verify failed")) << line;
}

// A client certificate etcd's CA did not sign: etcd ends the handshake,
// which gRPC reports as "tcp handshaker shutdown". Before: "no quorum or
// unreachable", as if etcd were down.
TEST_F(EtcdTlsTest, UntrustedClientCertificateStartUpSaysSo) {
  const std::string line =
      StartUpFailure({"--etcd-ca", Cert("ca.pem"), "--etcd-cert",
                      *other_ + "/proxy-sluice-control.pem", "--etcd-key",
                      *other_ + "/proxy-sluice-control.key"});
  EXPECT_TRUE(absl::StrContains(line, "etcd: TLS failed with every endpoint"))
      << line;
  EXPECT_TRUE(absl::StrContains(line, "check --etcd-cert")) << line;
}

TEST_F(EtcdTlsTest, WrongServerNameStartUpSaysSo) {
  std::vector<std::string> extra = {"--etcd-ca", Cert("ca.pem"),
                                    "--etcd-server-name", "etcd.example"};
  for (const std::string& arg : ClientCertificate()) extra.push_back(arg);
  const std::string line = StartUpFailure(extra);
  EXPECT_TRUE(absl::StrContains(line, "etcd: TLS failed with every endpoint"))
      << line;
  EXPECT_TRUE(absl::StrContains(
      line, "Peer name etcd.example is not in peer certificate"))
      << line;
}

// Refused before anything starts, exit status 2, the flag named.
TEST_F(EtcdTlsTest, BadFlagsAreRefused) {
  const std::string https = etcd_->endpoints();
  const std::string missing = MakeTempDir("missing") + "/ca.pem";
  const struct {
    std::vector<std::string> flags;
    std::string message;
  } cases[] = {
      {{"--etcd-endpoints", https}, "https:// URLs: give --etcd-ca FILE"},
      {{"--etcd-endpoints", https + ",http://127.0.0.1:1"},
       "mixes http:// and https://"},
      {{"--etcd-endpoints", https, "--etcd-ca", Cert("ca.pem"), "--etcd-cert",
        Cert("proxy-sluice-control.pem")},
       "--etcd-cert and --etcd-key go together"},
      {{"--etcd-endpoints", https, "--etcd-ca", missing},
       "--etcd-ca " + missing + ": cannot read"},
      {{"--etcd-endpoints", "http://127.0.0.1:1", "--etcd-ca", Cert("ca.pem")},
       "write them https://"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv = {
        RunfilePath("controlplane/server/sluice-control"),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        MakeTempDir("cp-data"),
        "--store",
        "etcd"};
    argv.insert(argv.end(), c.flags.begin(), c.flags.end());
    CommandResult r = RunCommand(argv, {}, absl::Seconds(10));
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, c.message)) << r.err;
  }
}

}  // namespace
}  // namespace sluice::testing
