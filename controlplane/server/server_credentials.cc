#include "controlplane/server/server_credentials.h"


#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/pem_file.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace sluice::controlplane {

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
  if (!flags.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPemFile("--client-ca", flags.client_ca_file, PemKind::kCertificate);
    if (!ca.ok()) return ca.status();
  }
  // Read at start above (errors name the flag); watched from now on, so a
  // renewal (cert-manager rewriting a mounted Secret) needs no restart.
  security.files = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      flags.tls_key_file, flags.tls_cert_file, flags.client_ca_file,
      std::max(1u, flags.reload_interval_seconds));
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
