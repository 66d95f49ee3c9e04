#include "controlplane/server/server_credentials.h"


#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/pem_file.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace sluice::controlplane {

namespace {

constexpr size_t kCertFile = 0, kKeyFile = 1, kCaFile = 2;

// The three files of `flags` into `files` (the CA's only with --client-ca),
// each checked: it reads and parses, every block of a chain or bundle
// does, the key is the certificate's, and with `check_dates` the
// certificate is in its validity. Errors name the flag.
absl::Status ReadTlsFiles(const ServerSecurityFlags& flags, bool check_dates,
                          std::array<std::string, 3>* files) {
  absl::StatusOr<std::string> cert =
      ReadPemFile("--tls-cert", flags.tls_cert_file, PemKind::kCertificate);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key =
      ReadPemFile("--tls-key", flags.tls_key_file, PemKind::kPrivateKey);
  if (!key.ok()) return key.status();
  if (absl::Status match = CheckKeyMatchesCertificate("--tls-cert", *cert, "--tls-key", *key);
      !match.ok()) {
    return match;
  }
  if (check_dates) {
    if (std::string expired = CertificateTimeProblemOfPem(*cert); !expired.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-cert ", flags.tls_cert_file, ": the certificate ", expired));
    }
  }
  (*files)[kCertFile] = *std::move(cert);
  (*files)[kKeyFile] = *std::move(key);
  if (!flags.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPemFile("--client-ca", flags.client_ca_file, PemKind::kCertificate);
    if (!ca.ok()) return ca.status();
    if (absl::Status parses = CheckCertificatesParse("--client-ca", *ca); !parses.ok()) {
      return parses;
    }
    (*files)[kCaFile] = *std::move(ca);
  }
  return absl::OkStatus();
}

}  // namespace

// The certificate, key and CA files as last read whole and checked, each in
// a memfd whose number stays the same: gRPC's watcher reads them by their
// /proc/self/fd paths. A new good set replaces them with dup3 (each swap is
// atomic; gRPC reads again when a file's mtime changes while it reads, so it
// does not keep a new certificate with an old key). Checked every interval
// on its own thread.
class StagedTlsFiles {
 public:
  static absl::StatusOr<std::shared_ptr<StagedTlsFiles>> Start(
      const ServerSecurityFlags& flags, const std::array<std::string, 3>& contents) {
    auto staged = std::shared_ptr<StagedTlsFiles>(new StagedTlsFiles(flags));
    for (size_t i = 0; i < 3; ++i) {
      if (i == kCa && flags.client_ca_file.empty()) continue;
      absl::StatusOr<int> fd = MemoryFile(contents[i]);
      if (!fd.ok()) return fd.status();
      staged->fds_[i] = *fd;
      staged->last_[i] = contents[i];
    }
    staged->thread_ = std::thread([s = staged.get()] { s->Run(); });
    return staged;
  }
  ~StagedTlsFiles() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    if (thread_.joinable()) thread_.join();
    for (int fd : fds_) {
      if (fd >= 0) ::close(fd);
    }
  }
  std::string path(size_t i) const {
    return fds_[i] < 0 ? std::string() : absl::StrCat("/proc/self/fd/", fds_[i]);
  }

  static constexpr size_t kCert = kCertFile, kKey = kKeyFile, kCa = kCaFile;

 private:
  explicit StagedTlsFiles(const ServerSecurityFlags& flags) : flags_(flags) {}

  // A sealed-size in-memory file holding `bytes` (close-on-exec).
  static absl::StatusOr<int> MemoryFile(const std::string& bytes) {
    const int fd = ::memfd_create("sluice-tls", MFD_CLOEXEC);
    if (fd < 0) return absl::InternalError(absl::StrCat("memfd_create: ", std::strerror(errno)));
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int error = errno;
        ::close(fd);
        return absl::InternalError(absl::StrCat("writing a memfd: ", std::strerror(error)));
      }
      done += static_cast<size_t>(n);
    }
    return fd;
  }

  void Run() {
    const absl::Duration interval = absl::Seconds(std::max(1u, flags_.reload_interval_seconds));
    absl::MutexLock lock(&mu_);
    while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval)) {
      mu_.Unlock();
      Reload();
      mu_.Lock();
    }
  }

  // Reads the three files; stages them when they changed and are good.
  void Reload() {
    std::array<std::string, 3> now;
    // A set that works is not traded for one every client refuses: a new
    // certificate out of its dates is not taken.
    absl::Status problem = ReadTlsFiles(flags_, /*check_dates=*/true, &now);
    if (problem.ok() && now == last_) {
      if (!told_.empty()) {
        told_.clear();
        SLUICE_LOG(kInfo, "the TLS files are the ones in use again");
      }
      return;
    }
    if (problem.ok()) {
      // Every new file made first, then swapped in back to back: gRPC's
      // watcher reading between two swaps is as unlikely as can be.
      std::array<int, 3> fresh = {-1, -1, -1};
      for (size_t i = 0; i < 3 && problem.ok(); ++i) {
        if (fds_[i] < 0 || now[i] == last_[i]) continue;
        absl::StatusOr<int> fd = MemoryFile(now[i]);
        if (fd.ok()) {
          fresh[i] = *fd;
        } else {
          problem = fd.status();
        }
      }
      for (size_t i = 0; i < 3 && problem.ok(); ++i) {
        if (fresh[i] < 0) continue;
        if (::dup3(fresh[i], fds_[i], O_CLOEXEC) < 0) {
          problem = absl::InternalError(absl::StrCat("dup3: ", std::strerror(errno)));
        } else {
          last_[i] = std::move(now[i]);
        }
      }
      for (int fd : fresh) {
        if (fd >= 0) ::close(fd);
      }
      if (problem.ok()) {
        told_.clear();
        SLUICE_LOG(kInfo, "TLS files read again: new handshakes use them");
        return;
      }
    }
    const std::string why(problem.message());
    if (why != told_) {  // once per problem, not every interval
      told_ = why;
      SLUICE_LOG(kWarning, why, "; new handshakes keep the TLS files read before");
    }
  }

  const ServerSecurityFlags flags_;
  std::array<int, 3> fds_ = {-1, -1, -1};
  std::array<std::string, 3> last_;  // what the memfds hold (the reload thread's)
  std::string told_;                 // the problem last logged
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

std::string ServerSecurity::Describe() const {
  if (!tls) return "plaintext";
  return client_certificates ? "TLS, proxies need a client certificate" : "TLS";
}

absl::StatusOr<ServerSecurity> MakeServerSecurity(
    absl::string_view listen_host, const ServerSecurityFlags& flags) {
  ServerSecurity security;
  if (flags.tls_cert_file.empty() != flags.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together: give both, or neither");
  }
  if (flags.tls_cert_file.empty()) {
    if (!flags.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--client-ca needs TLS: give --tls-cert and --tls-key");
    }
    if (!flags.insecure &&
        !IsLoopbackHost(std::string_view(listen_host.data(), listen_host.size()))) {
      return absl::InvalidArgumentError(
          absl::StrCat("refusing to serve plaintext gRPC on ", listen_host,
                       ", which is not a loopback address: give --tls-cert and "
                       "--tls-key, or --insecure "
                       "to accept that anyone who reaches the port can read "
                       "and change the config"));
    }
    security.credentials = grpc::InsecureServerCredentials();
    return security;
  }
  std::array<std::string, 3> files;
  if (absl::Status read = ReadTlsFiles(flags, /*check_dates=*/false, &files); !read.ok()) {
    return read;
  }
  if (std::string loose = OthersCanRead("--tls-key", flags.tls_key_file); !loose.empty()) {
    SLUICE_LOG(kWarning, loose, ": anyone who can log in here can act as this control plane");
  }
  // Read at start above (errors name the flag); read again and checked
  // from now on, so a renewal (cert-manager rewriting a mounted Secret)
  // needs no restart, and a bad file is not installed.
  absl::StatusOr<std::shared_ptr<StagedTlsFiles>> staged =
      StagedTlsFiles::Start(flags, files);
  if (!staged.ok()) return staged.status();
  security.staged = *staged;
  security.files = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      security.staged->path(StagedTlsFiles::kKey), security.staged->path(StagedTlsFiles::kCert),
      security.staged->path(StagedTlsFiles::kCa), /*refresh_interval_sec=*/1);
  grpc::experimental::TlsServerCredentialsOptions options(security.files);
  options.watch_identity_key_cert_pairs();
  if (!flags.client_ca_file.empty()) {
    options.watch_root_certs();
    // Not REQUIRE: sluicectl has no certificate; the discovery service
    // refuses proxies without one.
    options.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
    security.client_certificates = true;
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  security.credentials = grpc::experimental::TlsServerCredentials(options);
  security.tls = true;
  return security;
}

}  // namespace sluice::controlplane
