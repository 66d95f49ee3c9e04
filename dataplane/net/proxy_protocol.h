// The PROXY protocol (HAProxy's; version 1 text and version 2 binary): the
// header a load balancer in front sends first on each connection it passes
// on, naming the client's address, which the TCP peer (the balancer) is not.
// A listener with `proxy_protocol` wants it on every connection, before TLS
// and before HTTP, as nginx's `listen ... proxy_protocol` and Envoy's
// proxy_protocol listener filter do.
//
// ParseProxyHeader is the protocol, on bytes (no I/O); ProxyProtocolTransport
// reads the header off the socket as the first step of the connection's
// handshake, taking no byte past it, then hands the socket to the transport
// it wraps (plain or TLS).
#ifndef SLUICE_DATAPLANE_NET_PROXY_PROTOCOL_H_
#define SLUICE_DATAPLANE_NET_PROXY_PROTOCOL_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "dataplane/net/transport_socket.h"

namespace sluice::net {

// The longest version 1 header, CRLF included (the specification's bound).
inline constexpr size_t kProxyV1MaxBytes = 107;
// Bytes of a version 2 header read to find the address (its 16-byte head
// and the largest address block this reads: two IPv6 addresses and ports).
// TLVs after the addresses are taken off the socket and dropped.
inline constexpr size_t kProxyV2ParsedBytes = 16 + 36;

struct ProxyHeader {
  enum class Status { kNeedMore, kDone, kInvalid };
  Status status = Status::kNeedMore;
  // kDone: how many bytes the whole header takes (a version 2 header's TLVs
  // included, so it may be more than were given).
  size_t length = 0;
  // kDone: the client's address in one spelling ("203.0.113.7", "2001:db8::7";
  // an IPv4-mapped IPv6 address as IPv4); empty when the header names none
  // (version 1 UNKNOWN, version 2 LOCAL, or another family than IPv4 or
  // IPv6): the connection's own peer is the client then.
  std::string source;
  // kInvalid: why, for the debug log.
  std::string error;
};

// Looks at the first bytes of a connection (all of them so far). kNeedMore:
// every byte given belongs to the header, which goes on.
ProxyHeader ParseProxyHeader(std::string_view bytes);

// Wraps a connection's transport socket (nullptr: plain) with the PROXY
// protocol header as the first step of its handshake. `peer`: the socket's
// peer address as accept(2) gave it ("": asked of the socket at Attach).
class ProxyProtocolTransport : public TransportSocket {
 public:
  explicit ProxyProtocolTransport(std::unique_ptr<TransportSocket> inner, std::string peer = "");

  void Attach(int fd) override;
  Progress Handshake() override;
  ssize_t Read(char* buffer, size_t size) override { return inner_->Read(buffer, size); }
  ssize_t Write(const char* data, size_t size) override { return inner_->Write(data, size); }
  bool wants_read() const override { return inner_->wants_read(); }
  bool wants_write() const override { return inner_->wants_write(); }
  bool has_buffered_input() const override { return inner_->has_buffered_input(); }
  bool drained(size_t n, size_t size) const override { return inner_->drained(n, size); }
  void Shutdown() override { inner_->Shutdown(); }
  size_t Seal(const char* data, size_t size) override { return inner_->Seal(data, size); }
  std::string_view pending_output() const override { return inner_->pending_output(); }
  void DrainPendingOutput(size_t n) override { inner_->DrainPendingOutput(n); }
  void ReleaseIdleBuffers() override { inner_->ReleaseIdleBuffers(); }
  bool secure() const override { return inner_->secure(); }
  const TlsInfo* tls_info() const override { return inner_->tls_info(); }
  const std::string& failure_reason() const override;
  std::string_view handshake_failure_kind() const override {
    return inner_->handshake_failure_kind();
  }
  bool plain_http1_request() const override { return inner_->plain_http1_request(); }
  std::string_view plain_http1_head() const override { return inner_->plain_http1_head(); }
  bool truncated() const override { return inner_->truncated(); }
  const ProxyHeaderState* proxy_header() const override { return &state_; }

 private:
  Progress ReadHeader();
  Progress Fail(std::string why);

  std::unique_ptr<TransportSocket> inner_;
  int fd_ = -1;
  ProxyHeaderState state_;
  std::string reason_;  // why the header failed
  std::string got_;     // the header's bytes taken so far, while it goes on
  bool parsed_ = false;  // the header's address is read; skip_ bytes remain
  size_t skip_ = 0;      // a version 2 header's bytes still to take and drop
};

}  // namespace sluice::net

#endif  // SLUICE_DATAPLANE_NET_PROXY_PROTOCOL_H_
