#include "dataplane/net/transport_socket.h"

#include <unistd.h>

namespace sluice::net {

const std::string& TransportSocket::failure_reason() const {
  static const std::string* const kNone = new std::string();
  return *kNone;
}

ssize_t PlainTransportSocket::Read(char* buffer, size_t size) { return ::read(fd_, buffer, size); }

ssize_t PlainTransportSocket::Write(const char* data, size_t size) {
  return ::write(fd_, data, size);
}

}  // namespace sluice::net
