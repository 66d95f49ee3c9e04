// A real etcd cluster for integration tests: `members` etcd processes (from
// PATH, Debian's etcd-server) on loopback ports, each with its own data dir
// under $TEST_TMPDIR. Members can be killed and started again. With TLS the
// client URLs are https:// and require a client certificate signed by the
// given CA (etcd's --client-cert-auth); peers talk plain http.
//
// Main test thread only.
#ifndef SLUICE_TESTS_HARNESS_ETCD_CLUSTER_H_
#define SLUICE_TESTS_HARNESS_ETCD_CLUSTER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "tests/harness/process.h"

namespace sluice::testing {

// PEM files for members serving clients over TLS.
struct EtcdTlsFiles {
  std::string cert_file;  // --cert-file: the server certificate
  std::string key_file;   // --key-file
  std::string ca_file;    // --trusted-ca-file: verifies client certificates
};

class EtcdCluster {
 public:
  // Starts the members; ok() once every one serves clients. `tls`: clients
  // need TLS and a certificate signed by tls.ca_file.
  explicit EtcdCluster(int members = 3,
                       std::optional<EtcdTlsFiles> tls = std::nullopt);
  bool ok() const { return ok_; }
  // "127.0.0.1:P1,127.0.0.1:P2,..." (sluice-control --etcd-endpoints);
  // each with https:// under TLS.
  std::string endpoints() const;
  std::string endpoint(int member) const;  // HOST:PORT
  Process& member(int member) { return *members_[member].process; }
  // Everything the members logged, for failure messages.
  std::string Logs() const;

  void Kill(int member);  // SIGKILL, then reap
  // Starts a killed member again on its ports and data dir; true once it
  // serves clients.
  bool Restart(int member);

 private:
  struct Member {
    std::string name;
    int client_port = 0;
    int peer_port = 0;
    std::string data_dir;
    int starts = 0;
    std::unique_ptr<Process> process;
  };
  void Start(Member& m);
  bool WaitServing(Member& m, absl::Duration timeout);

  std::string etcd_;
  std::optional<EtcdTlsFiles> tls_;
  std::string initial_cluster_;
  std::vector<Member> members_;
  bool ok_ = false;
};

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_HARNESS_ETCD_CLUSTER_H_
