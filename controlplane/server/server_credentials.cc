#include "controlplane/server/server_credentials.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "common/pem_file.h"
#include "grpcpp/security/server_credentials.h"

namespace sluice::controlplane {

std::string ServerSecurity::Describe() const {
  if (!tls) return "plaintext";
  return client_certificates ? "TLS, proxies need a client certificate" : "TLS";
}

bool IsLoopbackHost(absl::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost") return true;
  const std::string address(host);
  in_addr v4;
  if (inet_pton(AF_INET, address.c_str(), &v4) == 1)
    return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  return inet_pton(AF_INET6, address.c_str(), &v6) == 1 &&
         IN6_IS_ADDR_LOOPBACK(&v6);
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
    if (!flags.insecure && !IsLoopbackHost(listen_host)) {
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
      ReadPemFile("--tls-cert", flags.tls_cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key =
      ReadPemFile("--tls-key", flags.tls_key_file);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back({*key, *cert});
  if (!flags.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPemFile("--client-ca", flags.client_ca_file);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    // Not REQUIRE: sluicectl has no certificate; the discovery service
    // refuses proxies without one.
    options.client_certificate_request =
        GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
    security.client_certificates = true;
  }
  security.credentials = grpc::SslServerCredentials(options);
  security.tls = true;
  return security;
}

}  // namespace sluice::controlplane
