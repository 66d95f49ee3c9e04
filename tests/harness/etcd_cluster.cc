#include "tests/harness/etcd_cluster.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/harness/proxy.h"

namespace sluice::testing {
namespace {

// `name` in $PATH (Debian's etcd-server installs /usr/bin/etcd).
std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir :
       absl::StrSplit(path != nullptr && *path ? path : "/usr/bin:/bin", ':')) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "/usr/bin/" + name;
}

}  // namespace

EtcdCluster::EtcdCluster(int members, std::optional<EtcdTlsFiles> tls)
    : etcd_(FindOnPath("etcd")), tls_(std::move(tls)) {
  std::vector<std::string> peers;
  for (int i = 0; i < members; ++i) {
    Member m;
    m.name = absl::StrCat("m", i + 1);
    m.client_port = PickFreePort();
    do {
      m.peer_port = PickFreePort();
    } while (m.peer_port == m.client_port);
    m.data_dir = MakeTempDir(absl::StrCat("etcd-", m.name));
    peers.push_back(absl::StrCat(m.name, "=http://127.0.0.1:", m.peer_port));
    members_.push_back(std::move(m));
  }
  initial_cluster_ = absl::StrJoin(peers, ",");
  for (Member& m : members_) Start(m);
  ok_ = true;
  for (Member& m : members_) ok_ = WaitServing(m, absl::Seconds(30)) && ok_;
}

void EtcdCluster::Start(Member& m) {
  const std::string client =
      absl::StrCat(tls_ ? "https" : "http", "://127.0.0.1:", m.client_port);
  const std::string peer = absl::StrCat("http://127.0.0.1:", m.peer_port);
  std::vector<std::string> args{
      "--name", m.name, "--data-dir", m.data_dir, "--listen-client-urls",
      client, "--advertise-client-urls", client, "--listen-peer-urls", peer,
      "--initial-advertise-peer-urls", peer, "--initial-cluster",
      initial_cluster_, "--initial-cluster-state", "new",
      "--initial-cluster-token", "sluice-test",
      // Elections within a second on loopback.
      "--heartbeat-interval", "50", "--election-timeout", "500"};
  if (tls_) {
    args.insert(args.end(),
                {"--cert-file", tls_->cert_file, "--key-file", tls_->key_file,
                 "--trusted-ca-file", tls_->ca_file, "--client-cert-auth"});
  }
  m.process = std::make_unique<Process>(
      etcd_, args, absl::StrCat(m.data_dir, ".log.", m.starts++));
}

bool EtcdCluster::WaitServing(Member& m, absl::Duration timeout) {
  return m.process->WaitForLogLine("ready to serve client requests", timeout)
      .has_value();
}

std::string EtcdCluster::endpoint(int member) const {
  return absl::StrCat("127.0.0.1:", members_[member].client_port);
}

std::string EtcdCluster::endpoints() const {
  std::vector<std::string> all;
  for (size_t i = 0; i < members_.size(); ++i)
    all.push_back(
        absl::StrCat(tls_ ? "https://" : "", endpoint(static_cast<int>(i))));
  return absl::StrJoin(all, ",");
}

std::string EtcdCluster::Logs() const {
  std::string out;
  for (const Member& m : members_) {
    absl::StrAppend(&out, "--- etcd ", m.name, " ---\n", m.process->Log());
  }
  return out;
}

void EtcdCluster::Kill(int member) {
  members_[member].process->Signal(SIGKILL);
  members_[member].process->Wait(absl::Seconds(10));
}

bool EtcdCluster::Restart(int member) {
  Member& m = members_[member];
  if (m.process->Running()) Kill(member);
  Start(m);
  return WaitServing(m, absl::Seconds(30));
}

}  // namespace sluice::testing
