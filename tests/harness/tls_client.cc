#include "tests/harness/tls_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/harness/process.h"

namespace sluice::testing {
namespace {

std::string OpenSslError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no OpenSSL error";
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof(buffer));
  return buffer;
}

// Waits for the socket as OpenSSL asks; false on timeout.
bool WaitSocket(int fd, SSL* ssl, int ret, absl::Time deadline) {
  int err = SSL_get_error(ssl, ret);
  short events = err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN;
  if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) return false;
  int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  if (ms <= 0) return false;
  pollfd p{fd, events, 0};
  return poll(&p, 1, static_cast<int>(ms)) > 0;
}

void Run(const std::vector<std::string>& argv) {
  CommandResult r = RunCommand(argv);
  if (r.exit_code != 0) {
    fprintf(stderr, "command failed: %s\n%s%s\n", absl::StrJoin(argv, " ").c_str(), r.out.c_str(),
            r.err.c_str());
    abort();
  }
}

}  // namespace

TlsClient::~TlsClient() { Close(); }

void TlsClient::Close() {
  // An orderly close keeps the session resumable (SSL_free after no
  // close_notify marks it bad).
  if (ssl_ && SSL_is_init_finished(ssl_)) SSL_shutdown(ssl_);
  if (ssl_) SSL_free(ssl_);
  if (ctx_) SSL_CTX_free(ctx_);
  if (fd_ >= 0) close(fd_);
  ssl_ = nullptr;
  ctx_ = nullptr;
  fd_ = -1;
}

bool TlsClient::Connect(int port, const TlsClientOptions& options, absl::Duration timeout) {
  Close();
  reader_ = Http1Reader(Http1Reader::Mode::kResponse);
  absl::Time deadline = absl::Now() + timeout;
  fd_ = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    error_ = absl::StrCat("connect: ", strerror(errno));
    return false;
  }
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  ctx_ = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_CLIENT);
  if (options.max_version) SSL_CTX_set_max_proto_version(ctx_, options.max_version);
  if (!options.client_cert_path.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx_, options.client_cert_path.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx_, options.client_key_path.c_str(), SSL_FILETYPE_PEM) != 1) {
      error_ = absl::StrCat("client certificate: ", OpenSslError());
      return false;
    }
  }
  if (!options.alpn.empty()) {
    std::string wire;
    for (const std::string& p : options.alpn) {
      wire.push_back(static_cast<char>(p.size()));
      wire.append(p);
    }
    SSL_CTX_set_alpn_protos(ctx_, reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned int>(wire.size()));
  }
  ssl_ = SSL_new(ctx_);
  SSL_set_fd(ssl_, fd_);
  if (!options.sni.empty()) SSL_set_tlsext_host_name(ssl_, options.sni.c_str());
  if (options.session) SSL_set_session(ssl_, options.session);
  while (true) {
    int ret = SSL_connect(ssl_);
    if (ret == 1) break;
    int err = SSL_get_error(ssl_, ret);
    if ((err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) &&
        WaitSocket(fd_, ssl_, ret, deadline)) {
      continue;
    }
    error_ = absl::StrCat("handshake: ", err == SSL_ERROR_SYSCALL ? "connection closed"
                                                                  : OpenSslError());
    return false;
  }
  return true;
}

bool TlsClient::Request(const std::string& request, Http1Message* response,
                        absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  size_t sent = 0;
  while (sent < request.size()) {
    int ret = SSL_write(ssl_, request.data() + sent, static_cast<int>(request.size() - sent));
    if (ret > 0) {
      sent += static_cast<size_t>(ret);
      continue;
    }
    error_ = absl::StrCat("write: ", OpenSslError());
    return false;
  }
  char buffer[16384];
  while (true) {
    switch (reader_.Next(response)) {
      case Http1Reader::Result::kMessage: return true;
      case Http1Reader::Result::kError: error_ = reader_.error(); return false;
      case Http1Reader::Result::kClosed: error_ = "closed before a response"; return false;
      case Http1Reader::Result::kNeedMore: break;
    }
    if (absl::Now() > deadline) {
      error_ = "timed out";
      return false;
    }
    int ret = SSL_read(ssl_, buffer, sizeof(buffer));
    if (ret > 0) {
      reader_.Feed(absl::string_view(buffer, static_cast<size_t>(ret)));
      continue;
    }
    int err = SSL_get_error(ssl_, ret);
    if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && errno == 0)) {
      reader_.FeedEof();
      continue;
    }
    error_ = absl::StrCat("read: ", OpenSslError());
    return false;
  }
}

std::string TlsClient::AwaitEnd(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  char buffer[4096];
  while (true) {
    if (SSL_pending(ssl_) == 0) {
      const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      pollfd p{fd_, POLLIN, 0};
      if (ms <= 0 || poll(&p, 1, static_cast<int>(ms)) == 0) return "open";
    }
    ERR_clear_error();
    errno = 0;
    const int ret = SSL_read(ssl_, buffer, sizeof(buffer));
    if (ret > 0) continue;
    const int err = SSL_get_error(ssl_, ret);
    if (err == SSL_ERROR_ZERO_RETURN) return "close_notify";
    if (err == SSL_ERROR_WANT_READ) continue;
    if (err == SSL_ERROR_SYSCALL) return errno == ECONNRESET ? "reset" : "eof";
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
    if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) return "eof";
#endif
    return absl::StrCat("error: ", OpenSslError());
  }
}

std::string TlsClient::peer_subject() const {
  X509* peer = SSL_get1_peer_certificate(ssl_);
  if (peer == nullptr) return "";
  char subject[512];
  X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof(subject));
  X509_free(peer);
  return subject;
}

std::string TlsClient::version() const { return SSL_get_version(ssl_); }

std::string TlsClient::alpn() const {
  const unsigned char* data = nullptr;
  unsigned int length = 0;
  SSL_get0_alpn_selected(ssl_, &data, &length);
  return data ? std::string(reinterpret_cast<const char*>(data), length) : "";
}

bool TlsClient::resumed() const { return SSL_session_reused(ssl_) == 1; }

// A copy: freeing this client's context (Close) flushes its session cache,
// which marks the sessions in it not resumable, a shared one too.
SSL_SESSION* TlsClient::TakeSession() const {
  SSL_SESSION* session = SSL_get0_session(ssl_);
  return session == nullptr ? nullptr : SSL_SESSION_dup(session);
}

TestCert MakeSelfSigned(const std::string& dir, const std::string& file_prefix,
                        const std::string& cn, const std::vector<std::string>& dns_names) {
  TestCert cert;
  cert.cert_path = absl::StrCat(dir, "/", file_prefix, ".pem");
  cert.key_path = absl::StrCat(dir, "/", file_prefix, ".key");
  std::vector<std::string> argv = {"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                                   "ec_paramgen_curve:P-256", "-nodes", "-keyout", cert.key_path,
                                   "-out", cert.cert_path, "-days", "2", "-subj",
                                   absl::StrCat("/CN=", cn)};
  if (!dns_names.empty()) {
    std::vector<std::string> sans;
    for (const std::string& n : dns_names) sans.push_back(absl::StrCat("DNS:", n));
    argv.push_back("-addext");
    argv.push_back(absl::StrCat("subjectAltName=", absl::StrJoin(sans, ",")));
  }
  Run(argv);
  cert.cert_pem = ReadFile(cert.cert_path);
  cert.key_pem = ReadFile(cert.key_path);
  return cert;
}

TestCert MakeCa(const std::string& dir, const std::string& file_prefix, const std::string& cn) {
  return MakeSelfSigned(dir, file_prefix, cn, {});
}

namespace {

// `extensions`: lines of an openssl x509 -extfile (none: a certificate
// without extensions).
TestCert SignedBy(const TestCert& ca, const std::string& dir, const std::string& file_prefix,
                  const std::string& cn, const std::string& extensions) {
  TestCert cert;
  cert.cert_path = absl::StrCat(dir, "/", file_prefix, ".pem");
  cert.key_path = absl::StrCat(dir, "/", file_prefix, ".key");
  std::string csr = absl::StrCat(dir, "/", file_prefix, ".csr");
  Run({"/usr/bin/openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", cert.key_path, "-out", csr, "-subj", absl::StrCat("/CN=", cn)});
  std::vector<std::string> argv = {"/usr/bin/openssl", "x509", "-req", "-in", csr, "-CA",
                                   ca.cert_path, "-CAkey", ca.key_path, "-CAcreateserial",
                                   "-days", "2", "-out", cert.cert_path};
  if (!extensions.empty()) {
    std::string path = absl::StrCat(dir, "/", file_prefix, ".ext");
    FILE* f = fopen(path.c_str(), "w");
    if (f == nullptr) abort();
    fputs(extensions.c_str(), f);
    fclose(f);
    argv.push_back("-extfile");
    argv.push_back(path);
  }
  Run(argv);
  cert.cert_pem = ReadFile(cert.cert_path);
  cert.key_pem = ReadFile(cert.key_path);
  return cert;
}

}  // namespace

TestCert MakeSignedBy(const TestCert& ca, const std::string& dir, const std::string& file_prefix,
                      const std::string& cn, const std::vector<std::string>& dns_names) {
  std::string extensions;
  if (!dns_names.empty()) {
    std::vector<std::string> sans;
    for (const std::string& n : dns_names) sans.push_back(absl::StrCat("DNS:", n));
    extensions = absl::StrCat("subjectAltName=", absl::StrJoin(sans, ","), "\n");
  }
  return SignedBy(ca, dir, file_prefix, cn, extensions);
}

TestCert MakeIntermediateCa(const TestCert& ca, const std::string& dir,
                            const std::string& file_prefix, const std::string& cn) {
  return SignedBy(ca, dir, file_prefix, cn,
                  "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n");
}

std::string YamlBlock(const std::string& pem, int indent) {
  std::string out;
  std::string pad(static_cast<size_t>(indent), ' ');
  for (absl::string_view line : absl::StrSplit(pem, '\n', absl::SkipEmpty())) {
    absl::StrAppend(&out, pad, line, "\n");
  }
  return out;
}

std::string CertificateSecretYaml(const std::string& name, const TestCert& cert) {
  return absl::StrCat("kind: Secret\nname: ", name, "\nspec:\n  tls_certificate:\n",
                      "    certificate_chain: |\n", YamlBlock(cert.cert_pem, 6),
                      "    private_key: |\n", YamlBlock(cert.key_pem, 6));
}

std::string CaSecretYaml(const std::string& name, const TestCert& ca) {
  return absl::StrCat("kind: Secret\nname: ", name, "\nspec:\n  trusted_ca:\n",
                      "    ca_certificates: |\n", YamlBlock(ca.cert_pem, 6));
}

}  // namespace sluice::testing
