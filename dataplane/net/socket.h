// Socket helpers: addresses, listening sockets, non-blocking connects.
// Thread-safe (no shared state).
#ifndef SLUICE_DATAPLANE_NET_SOCKET_H_
#define SLUICE_DATAPLANE_NET_SOCKET_H_

#include <netinet/in.h>
#include <sys/socket.h>

#include <string>

#include "absl/status/statusor.h"

namespace sluice::net {

struct Address {
  sockaddr_storage storage{};
  socklen_t length = 0;
  std::string ToString() const;  // "127.0.0.1:80", "[::1]:80"
};

// An IPv4 or IPv6 literal and a port.
absl::StatusOr<Address> ParseAddress(const std::string& ip, uint16_t port);
// "HOST:PORT" or "[V6]:PORT".
absl::StatusOr<Address> ParseHostPort(const std::string& host_port);

// A non-blocking listening socket with SO_REUSEADDR and, when `reuse_port`,
// SO_REUSEPORT (so each worker can have its own socket on the address).
absl::StatusOr<int> Listen(const Address& address, bool reuse_port, int backlog = 4096);
// The port a bound socket got (for port 0).
int BoundPort(int fd);

// Starts a non-blocking connect; the socket becomes writable when done.
absl::StatusOr<int> ConnectNonBlocking(const Address& address);
// The pending error of a socket (SO_ERROR), 0 if none.
int SocketError(int fd);

// The peer's IP address as text ("" when the socket has none, or is not
// IPv4/IPv6): from getpeername(2), or from the address accept(2) gave.
std::string PeerIp(int fd);
std::string PeerIp(const sockaddr_storage& address);
// 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104: a process on this host.
bool IsLoopback(const sockaddr_storage& address);

}  // namespace sluice::net

#endif  // SLUICE_DATAPLANE_NET_SOCKET_H_
