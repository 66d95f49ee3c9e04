// TransportSocket: how a Connection moves bytes over its file descriptor.
// Plain sockets read(2)/write(2); TLS runs a handshake first and then
// encrypts (dataplane/net/tls.h). The connection owns its transport socket
// and never touches the fd's bytes itself, so downstream and upstream
// connections, plain or TLS, share one Connection class.
//
// Owner's worker thread only.
#ifndef SLUICE_DATAPLANE_NET_TRANSPORT_SOCKET_H_
#define SLUICE_DATAPLANE_NET_TRANSPORT_SOCKET_H_

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace sluice::net {

// What a TLS session negotiated, for routing, policies and logs.
struct TlsInfo {
  std::string version;       // "TLSv1.3"
  std::string cipher;        // "TLS_AES_128_GCM_SHA256"
  std::string sni;           // the client's server name; empty when none
  std::string alpn;          // the negotiated protocol; empty when none
  std::string peer_subject;  // client certificate subject; empty when none
  bool resumed = false;
};

// A listener's PROXY protocol header (dataplane/net/proxy_protocol.h), as
// the connection's handshake reads it.
struct ProxyHeaderState {
  bool done = false;    // read whole and valid
  bool failed = false;  // missing, malformed, or the connection ended in it
  // Once done: the client's address it gave; empty when it gave none (a
  // balancer's own health check): the TCP peer is the client then.
  std::string source;
  // The TCP peer: the balancer.
  std::string peer;
};

class TransportSocket;
// The TCP peer when a PROXY header named another client (the balancer's
// address, for the access log's peer_ip); empty otherwise.
std::string_view DirectPeer(const TransportSocket& transport);

class TransportSocket {
 public:
  enum class Progress {
    kDone,       // the handshake (if any) is complete
    kWantRead,   // waiting for the socket to be readable
    kWantWrite,  // waiting for it to be writable
    kFailed,     // the handshake failed; failure_reason() says why
  };

  virtual ~TransportSocket() = default;

  // Called once with the connected (or accepted) socket before any I/O.
  virtual void Attach(int fd) = 0;
  // Advances the handshake. Plain sockets are done at once.
  virtual Progress Handshake() = 0;
  // Like read(2): >0 bytes read, 0 at the peer's orderly end, -1 with errno
  // (EAGAIN when nothing is ready now). After EAGAIN, wants_write() may ask
  // for writability before reading can go on.
  virtual ssize_t Read(char* buffer, size_t size) = 0;
  // Like write(2), same conventions; wants_read() may ask for readability.
  // pending_output() goes first: Write(data, 0) sends only that, giving 0
  // once it is all sent.
  virtual ssize_t Write(const char* data, size_t size) = 0;
  // The last Read()/Write() returned EAGAIN waiting on the other direction.
  virtual bool wants_read() const { return false; }
  virtual bool wants_write() const { return false; }
  // Bytes already taken off the socket and decrypted but not yet returned
  // by Read(): the socket will not signal them.
  virtual bool has_buffered_input() const { return false; }
  // After a Read() that gave `n` bytes of the `size` asked: the socket had
  // nothing more when last read, so reading again before the next
  // readiness event would only get EAGAIN. (A TLS Read() gives one record
  // at most: it answers from the last read of the socket itself.)
  virtual bool drained(size_t n, size_t size) const { return n < size; }
  // Best-effort orderly end (TLS close_notify) before the fd is closed.
  virtual void Shutdown() {}

  // For a dispatcher that batches sends (Connection::PendingSend): takes up
  // to `size` bytes of `data` and turns them into the bytes that go on the
  // socket (TLS: encrypts them into records), to be sent from
  // pending_output() by the batch. Returns how many it took: 0 when it
  // cannot now, and always for the plain socket, whose bytes go as they are.
  virtual size_t Seal(const char* /*data*/, size_t /*size*/) { return 0; }
  // What Seal() made (and, TLS, what the session wrote after it: an alert,
  // a key update) that is not yet on the socket. Write() sends it first.
  virtual std::string_view pending_output() const { return {}; }
  // `n` bytes of pending_output() were sent by someone else (the batch).
  virtual void DrainPendingOutput(size_t /*n*/) {}
  // Frees the storage of an empty pending_output() (the connection is idle).
  virtual void ReleaseIdleBuffers() {}

  // For a dispatcher that batches reads (Connection::PendingRecv), a
  // transport that reads the socket itself (TLS) takes the batched recv(2)'s
  // bytes: where they go (at most `*size`); false when it cannot now (the
  // connection then reads through Read() as usual). The plain socket never
  // does: the connection's input buffer takes them.
  virtual bool RecvRoom(char** /*data*/, size_t* /*size*/) { return false; }
  // That recv gave `result`: the bytes put there (Read() decrypts them before
  // reading the socket again), 0 at the peer's end, or -errno (EAGAIN: the
  // socket had nothing; any other: Read() fails with it).
  virtual void RecvMade(int /*result*/) {}

  virtual bool secure() const { return false; }
  // Negotiated details; nullptr for plain sockets or before the handshake.
  virtual const TlsInfo* tls_info() const { return nullptr; }
  // Why the handshake failed, or (TLS) why a later read or write did: an
  // alert the peer sent, say.
  virtual const std::string& failure_reason() const;
  // What kind of failure a failed handshake was, one of a fixed set (the
  // `reason` label of sluice_downstream_tls_handshake_errors_total):
  // "closed", "plain_http", "protocol_version", "no_shared_cipher",
  // "no_application_protocol", "client_certificate", "server_name", "other".
  virtual std::string_view handshake_failure_kind() const { return "other"; }
  // The handshake failed because the peer sent an HTTP/1 request in the
  // clear (a client that used http:// for an https:// port); not for the
  // HTTP/2 preface, whose client would not read an HTTP/1 answer.
  virtual bool plain_http1_request() const { return false; }
  // When plain_http1_request(): the bytes it began with (up to 4 KiB), for
  // the access log's method, path, Host and User-Agent.
  virtual std::string_view plain_http1_head() const { return {}; }
  // The peer ended the stream without saying so (TLS: no close_notify
  // before the TCP close; upstream sockets only), so data that ends at the
  // close may be cut short by an attacker or a failure (RFC 8446 6.1, RFC
  // 9112 9.8). Plain TCP has no such signal: false.
  virtual bool truncated() const { return false; }
  // A PROXY protocol listener's header; nullptr when the listener takes none.
  virtual const ProxyHeaderState* proxy_header() const { return nullptr; }
};

// Why a connection was reset, for error messages: the TLS reason when the
// transport has one (a TLS 1.3 peer refusing our certificate alerts after
// the handshake: "tlsv13 alert certificate required"), else strerror(error).
std::string ResetReason(const TransportSocket& transport, int error);

// recv(2) and send(2).
class PlainTransportSocket : public TransportSocket {
 public:
  void Attach(int fd) override { fd_ = fd; }
  Progress Handshake() override { return Progress::kDone; }
  ssize_t Read(char* buffer, size_t size) override;
  ssize_t Write(const char* data, size_t size) override;

 private:
  int fd_ = -1;
};

// Makes the transport socket of each new connection: one per listener (or
// upstream cluster), shared by the workers, so it must be thread-safe.
class TransportSocketFactory {
 public:
  virtual ~TransportSocketFactory() = default;
  virtual std::unique_ptr<TransportSocket> Create() const = 0;
  // A socket for a connection that will speak HTTP/1.1 whatever it could
  // negotiate: a TLS client offers only "http/1.1" by ALPN, so a server that
  // also speaks h2 cannot pick it (the HTTP/1.1 pool, WebSocket handshakes).
  virtual std::unique_ptr<TransportSocket> CreateHttp1() const { return Create(); }
};

}  // namespace sluice::net

#endif  // SLUICE_DATAPLANE_NET_TRANSPORT_SOCKET_H_
