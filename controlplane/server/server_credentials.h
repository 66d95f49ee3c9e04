// How sluice-control's gRPC port is secured: --tls-cert/--tls-key (TLS),
// --client-ca (client certificates, verified against that CA) and
// --insecure (plaintext on a non-loopback address, on purpose).
//
// The files are read at start (a missing or unparsable one is an error
// then) and watched afterwards: renewed ones serve new handshakes within
// the reload interval, without a restart; open streams go on. What is read
// again is checked first (each parses, the key is the certificate's): gRPC's
// watcher, which installs whatever it reads, reads in-memory copies of the
// last good files, so a garbage file or a key and certificate caught half
// replaced keep the previous ones serving, with a warning.
//
// With --client-ca the handshake requests a client certificate and verifies
// one that is presented, but lets a peer without one finish: sluicectl
// connects without a certificate, and the discovery service refuses a proxy
// stream whose peer has none (DiscoveryOptions::require_node_certificate).
//
// Main thread, at start-up.
#ifndef SLUICE_CONTROLPLANE_SERVER_SERVER_CREDENTIALS_H_
#define SLUICE_CONTROLPLANE_SERVER_SERVER_CREDENTIALS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/loopback.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"

namespace sluice::controlplane {

struct ServerSecurityFlags {
  std::string tls_cert_file;  // --tls-cert, PEM (may hold the chain)
  std::string tls_key_file;   // --tls-key, PEM
  std::string
      client_ca_file;     // --client-ca, PEM; empty: no client certificates
  bool insecure = false;  // --insecure
  // --tls-reload-interval: how often the three files are looked at again;
  // a renewed certificate, key or CA serves new handshakes from then on.
  unsigned int reload_interval_seconds = 60;
};

// The TLS files as last read whole and checked (StagedTlsFiles in the .cc).
class StagedTlsFiles;

struct ServerSecurity {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // With TLS: what watches the files (kept as long as the credentials),
  // and the checked copies it watches.
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> files;
  std::shared_ptr<StagedTlsFiles> staged;
  bool tls = false;
  bool client_certificates = false;  // proxies must present one
  // "plaintext", "TLS" or "TLS, proxies need a client certificate".
  std::string Describe() const;
};

// Whether `host` (of a HOST:PORT, brackets allowed) is a loopback address:
// 127.0.0.0/8, ::1 or localhost (common/loopback.h, which the proxy uses too).
using ::sluice::IsLoopbackHost;

// The credentials for a port on `listen_host`. INVALID_ARGUMENT naming the
// flag: --tls-cert without --tls-key or the other way round, --client-ca
// without TLS, an unreadable file, or plaintext on a non-loopback host
// without --insecure.
absl::StatusOr<ServerSecurity> MakeServerSecurity(
    absl::string_view listen_host, const ServerSecurityFlags& flags);

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_SERVER_CREDENTIALS_H_
