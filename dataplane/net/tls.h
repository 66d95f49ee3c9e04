// TLS for connections, with OpenSSL 3 through the API BoringSSL shares.
//
// TlsServerContext is compiled from a listener's TLS settings on the config
// thread and shared, immutable, by every worker: it holds one SSL_CTX per
// certificate and picks one per handshake by the client's SNI. Each new
// connection gets a TlsTransportSocket from it, which keeps the context
// alive for as long as the connection lives, so a certificate rotated by a
// new config version applies to new handshakes while open connections go on
// with the one they started with.
//
// Session tickets are sealed with keys that the process makes and rotates
// (TicketKeys): all workers and all config versions share them, so a client
// resumes on whichever worker it lands on and across config changes.
//
// TlsClientContext is the other direction: compiled from a cluster's TLS
// settings and shared by the workers and the health checker, it makes the
// client-mode TlsTransportSocket of each upstream connection (the upstream's
// certificate verified against a CA bundle and a host name) and keeps the
// last session an upstream gave, so the next connection resumes it.
#ifndef SLUICE_DATAPLANE_NET_TLS_H_
#define SLUICE_DATAPLANE_NET_TLS_H_

#include <openssl/ssl.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "dataplane/net/buffer.h"
#include "dataplane/net/transport_socket.h"

namespace sluice::net {

struct TlsCertificateConfig {
  std::string chain_pem;  // leaf first
  std::string key_pem;
  // Names the certificate serves, lower case: "api.example.com" or a
  // one-label wildcard "*.example.com".
  std::vector<std::string> dns_names;
};

struct TlsServerConfig {
  std::vector<TlsCertificateConfig> certificates;  // [0]: the default
  int min_version = TLS1_2_VERSION;
  int max_version = TLS1_3_VERSION;
  std::string cipher_list;  // TLS 1.2 suites; empty: kDefaultCipherList
  std::vector<std::string> alpn_protocols;  // server preference order
  std::string client_ca_pem;                // empty: no client certificates
  bool require_client_certificate = true;
  bool session_tickets = true;
};

inline constexpr char kDefaultCipherList[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// Thread-safe after Create().
class TlsServerContext : public TransportSocketFactory,
                         public std::enable_shared_from_this<TlsServerContext> {
 public:
  // INVALID_ARGUMENT naming what OpenSSL refused (a key, a cipher list).
  static absl::StatusOr<std::shared_ptr<TlsServerContext>> Create(const TlsServerConfig& config);
  ~TlsServerContext() override;
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  std::unique_ptr<TransportSocket> Create() const override;

  // The context whose certificate serves `server_name` (exact, then a
  // one-label wildcard), or the default one.
  SSL_CTX* ContextFor(std::string_view server_name) const;
  const std::string& alpn_wire() const { return alpn_wire_; }
  // alpn_wire() without h2: what a TLS 1.2 handshake whose suite forbids
  // HTTP/2 is offered. The ALPN callback's answer points into one of the two,
  // which must outlive the callback (OpenSSL copies it after it returns).
  const std::string& alpn_wire_without_h2() const { return alpn_wire_without_h2_; }
  // The session id context of a handshake whose ClientHello named
  // `server_name` (lower case; empty without SNI): the listener's, hashed
  // with the name, so a session resumes only under the name it was made
  // for (RFC 6066 3; OpenSSL decides on a TLS 1.2 resumption before the
  // servername callback and would report the old session's name).
  void SessionIdContextFor(std::string_view server_name, unsigned char out[32]) const;

 private:
  TlsServerContext() = default;
  absl::Status AddCertificate(const TlsServerConfig& config, const TlsCertificateConfig& cert);

  std::vector<SSL_CTX*> contexts_;
  absl::flat_hash_map<std::string, size_t> exact_names_;
  absl::flat_hash_map<std::string, size_t> wildcard_suffixes_;  // "example.com" for "*.example.com"
  std::string alpn_wire_;  // length-prefixed, preference order
  std::string alpn_wire_without_h2_;
  // SHA-256 of what a resumed session skips: the certificates, the
  // client-certificate rules, the versions and TLS 1.2 cipher suites. OpenSSL
  // resumes a session (ticket) only under the context it was made in, so one
  // made on a listener without mTLS, under another client CA, or with a
  // cipher suite this listener does not accept, is not resumed here (a full
  // handshake checks them instead).
  unsigned char session_id_context_[32] = {};
};

struct TlsClientConfig {
  // PEM CA certificates the upstream's chain must lead to (each one a trust
  // anchor, an intermediate as well as a root). Required when `verify`.
  std::string ca_pem;
  // Sent as SNI and, when `verify`, matched against the certificate's DNS
  // subjectAltNames. Empty: no SNI and no name check (the chain only).
  std::string sni;
  // Client certificate (leaf first) and key for upstreams that ask for one;
  // empty: none.
  std::string client_chain_pem;
  std::string client_key_pem;
  int min_version = TLS1_2_VERSION;
  int max_version = TLS1_3_VERSION;
  // false: nothing about the upstream's certificate is checked (unsafe).
  bool verify = true;
  // Offered by ALPN, in preference order ("h2", "http/1.1").
  std::vector<std::string> alpn_protocols = {"http/1.1"};

  bool operator==(const TlsClientConfig&) const = default;
};

// Thread-safe after Create(): workers and the health checker make sockets
// from one context at once.
//
// Every handshake offers the config's ALPN protocols. Resumption: the context keeps the
// last resumable session an upstream issued (guarded by a mutex) and offers
// it on each new connection; the endpoints of one cluster usually share
// their ticket keys, and one that does not simply makes a full handshake.
class TlsClientContext : public TransportSocketFactory,
                         public std::enable_shared_from_this<TlsClientContext> {
 public:
  // INVALID_ARGUMENT naming what OpenSSL refused ("ca: ...", "client
  // certificate: ...").
  static absl::StatusOr<std::shared_ptr<TlsClientContext>> Create(const TlsClientConfig& config);
  ~TlsClientContext() override;
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;

  // A client-mode socket; the handshake starts once the TCP connect is done.
  std::unique_ptr<TransportSocket> Create() const override;
  // The same, offering "http/1.1" alone by ALPN.
  std::unique_ptr<TransportSocket> CreateHttp1() const override;

  // What it was made from: a config version with equal settings may keep
  // this context (and its session).
  const TlsClientConfig& config() const { return config_; }
  // Unique among the contexts of this process: connections made by
  // different contexts (different CA, name, client certificate) are told
  // apart by it, e.g. in the connection pool.
  uint64_t id() const { return id_; }

 private:
  explicit TlsClientContext(const TlsClientConfig& config);
  static int OnNewSession(SSL* ssl, SSL_SESSION* session);
  std::unique_ptr<TransportSocket> MakeSocket(bool http1_only) const;

  const TlsClientConfig config_;
  const uint64_t id_;
  SSL_CTX* ctx_ = nullptr;
  mutable absl::Mutex mu_;
  SSL_SESSION* last_session_ ABSL_GUARDED_BY(mu_) = nullptr;  // owned
};

// One TLS session over one socket. Worker thread only.
class TlsTransportSocket : public TransportSocket {
 public:
  // Takes ownership of `ssl`; `context` is kept alive with it.
  TlsTransportSocket(std::shared_ptr<const void> context, SSL* ssl, bool server);
  ~TlsTransportSocket() override;

  void Attach(int fd) override;
  Progress Handshake() override;
  ssize_t Read(char* buffer, size_t size) override;
  ssize_t Write(const char* data, size_t size) override;
  bool wants_read() const override { return write_wants_read_; }
  bool wants_write() const override { return read_wants_write_; }
  bool has_buffered_input() const override;
  bool drained(size_t /*n*/, size_t /*size*/) const override { return socket_drained_; }
  void Shutdown() override;
  size_t Seal(const char* data, size_t size) override;
  std::string_view pending_output() const override { return sealed_.view(); }
  void DrainPendingOutput(size_t n) override {
    sealed_.Drain(std::min(n, sealed_.size()));
    sealed_.ShrinkIfEmpty();
  }
  void ReleaseIdleBuffers() override {
    sealed_.Release();
    received_.Release();
  }
  // A batched read takes at most this much (a TLS record is at most 16 KiB
  // of plaintext and 256 bytes more).
  static constexpr size_t kRecvRoom = 16384 + 512;
  bool RecvRoom(char** data, size_t* size) override;
  void RecvMade(int result) override;
  bool secure() const override { return true; }
  const TlsInfo* tls_info() const override { return done_ ? &info_ : nullptr; }
  const std::string& failure_reason() const override { return failure_reason_; }
  std::string_view handshake_failure_kind() const override { return failure_kind_; }
  bool plain_http1_request() const override;
  std::string_view plain_http1_head() const override;
  bool truncated() const override { return truncated_; }

 private:
  class SocketBio;
  // Maps a failed SSL_read/SSL_write to read(2)/write(2) conventions.
  ssize_t Failed(int ret, bool reading);
  // Sends sealed_ until it is empty (true) or the socket refuses (false,
  // errno set: EAGAIN when it is full).
  bool SendSealed();

  std::shared_ptr<const void> context_;
  SSL* ssl_;
  bool server_;
  int fd_ = -1;
  // The last recv from the socket came back short: nothing was left.
  bool socket_drained_ = false;
  // A batched recv's error (errno), for the next read of the socket.
  int received_error_ = 0;
  // What a batched recv read (RecvRoom), before SSL_read takes it.
  Buffer received_;
  // recv returned 0: the peer closed its side.
  bool peer_eof_ = false;
  // The connection's first bytes until the handshake is done (then freed):
  // up to 24, to tell plain HTTP sent to a TLS port from other garbage when
  // the handshake fails, and up to 4 KiB when they begin no TLS record, so
  // such a request's head can be logged.
  std::string first_bytes_;
  // The peer closed without close_notify (seen on client sockets, whose
  // context does not ignore an unexpected EOF).
  bool truncated_ = false;
  bool done_ = false;
  bool failed_ = false;
  bool read_wants_write_ = false;
  bool write_wants_read_ = false;
  // An SSL_write gave WANT_WRITE: OpenSSL holds part of a record and the
  // next SSL_write must repeat the call (Write() does; Seal() must not).
  bool write_retry_ = false;
  // Seal()'s SSL_write is running: the socket BIO appends to sealed_.
  bool sealing_ = false;
  // A Seal() failed: this session's records go out through Write() only.
  bool seal_refused_ = false;
  // Records made by Seal() (and whatever the session wrote after them) not
  // yet on the socket. While it holds bytes, the socket BIO appends to it
  // rather than sending, so nothing overtakes them.
  Buffer sealed_;
  TlsInfo info_;
  std::string failure_reason_;
  std::string_view failure_kind_ = "other";
};

// The last OpenSSL error on this thread as text, and the queue cleared.
std::string TakeOpenSslError();

}  // namespace sluice::net

#endif  // SLUICE_DATAPLANE_NET_TLS_H_
