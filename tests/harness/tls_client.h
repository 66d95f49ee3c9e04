// A blocking TLS client for integration tests (OpenSSL), with control over
// what curl and s_client do not expose in one process: SNI, a client
// certificate, session resumption, and several requests on one connection
// across a config change. Plus test certificates made with the openssl CLI.
//
// Main test thread only.
#ifndef SLUICE_TESTS_HARNESS_TLS_CLIENT_H_
#define SLUICE_TESTS_HARNESS_TLS_CLIENT_H_

#include <openssl/ssl.h>

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "tests/harness/http_wire.h"

namespace sluice::testing {

struct TlsClientOptions {
  std::string sni;                 // empty: no SNI
  std::string client_cert_path;    // PEM; with client_key_path
  std::string client_key_path;
  std::vector<std::string> alpn;   // offered protocols
  SSL_SESSION* session = nullptr;  // resume this session (not owned)
  int max_version = 0;             // e.g. TLS1_2_VERSION; 0: library default
};

class TlsClient {
 public:
  TlsClient() = default;
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  // Connects to 127.0.0.1:port and completes the handshake; false with
  // error() on failure. The server certificate is not verified: tests look
  // at peer_subject() instead.
  bool Connect(int port, const TlsClientOptions& options,
               absl::Duration timeout = absl::Seconds(10));
  // Sends `request` bytes and reads one response.
  bool Request(const std::string& request, Http1Message* response,
               absl::Duration timeout = absl::Seconds(10));
  // Reads (dropping what it reads) until the server ends the connection:
  // "close_notify" (an orderly TLS close), "eof" (TCP's FIN without it),
  // "reset", or "open" when it is still open at the deadline.
  std::string AwaitEnd(absl::Duration timeout);
  // The server certificate's subject, e.g. "/CN=a.test".
  std::string peer_subject() const;
  std::string version() const;
  std::string alpn() const;
  bool resumed() const;
  // The session for a later Connect(); the caller frees it (SSL_SESSION_free).
  SSL_SESSION* TakeSession() const;
  const std::string& error() const { return error_; }
  void Close();

 private:
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  Http1Reader reader_{Http1Reader::Mode::kResponse};
  std::string error_;
};

// Test key material made with the openssl CLI in `dir` (P-256 keys).
struct TestCert {
  std::string cert_path;
  std::string key_path;
  std::string cert_pem;
  std::string key_pem;
};
// A self-signed certificate with subject CN=cn and DNS SANs `dns_names`.
TestCert MakeSelfSigned(const std::string& dir, const std::string& file_prefix,
                        const std::string& cn, const std::vector<std::string>& dns_names);
// A CA, and a certificate signed by it (a client's, or with `dns_names` as
// DNS SANs a server's).
TestCert MakeCa(const std::string& dir, const std::string& file_prefix, const std::string& cn);
TestCert MakeSignedBy(const TestCert& ca, const std::string& dir, const std::string& file_prefix,
                      const std::string& cn, const std::vector<std::string>& dns_names = {});
// An intermediate CA signed by `ca` (basicConstraints CA:TRUE, keyCertSign).
TestCert MakeIntermediateCa(const TestCert& ca, const std::string& dir,
                            const std::string& file_prefix, const std::string& cn);

// `pem` as a YAML block scalar indented by `indent` spaces (after "key: |").
std::string YamlBlock(const std::string& pem, int indent);

// A Secret document with the certificate and its key, or with a CA bundle.
std::string CertificateSecretYaml(const std::string& name, const TestCert& cert);
std::string CaSecretYaml(const std::string& name, const TestCert& ca);

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_HARNESS_TLS_CLIENT_H_
