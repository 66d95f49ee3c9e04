#include "dataplane/net/proxy_protocol.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "dataplane/net/socket.h"

namespace sluice::net {
namespace {

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr char kV2SignatureBytes[12] = {'\r', '\n', '\r', '\n', '\0', '\r',
                                        '\n', 'Q',  'U',  'I',  'T',  '\n'};
constexpr std::string_view kV2Signature(kV2SignatureBytes, sizeof(kV2SignatureBytes));

ProxyHeader Invalid(std::string why) {
  ProxyHeader h;
  h.status = ProxyHeader::Status::kInvalid;
  h.error = std::move(why);
  return h;
}

ProxyHeader Done(size_t length, std::string source) {
  ProxyHeader h;
  h.status = ProxyHeader::Status::kDone;
  h.length = length;
  h.source = std::move(source);
  return h;
}

// One spelling per address, as X-Forwarded-For's client address gets:
// "::ffff:7.7.7.7" is "7.7.7.7".
std::string Spelled(int family, const void* address) {
  char text[INET6_ADDRSTRLEN] = {0};
  if (family == AF_INET6) {
    in6_addr v6;
    std::memcpy(&v6, address, sizeof(v6));
    if (IN6_IS_ADDR_V4MAPPED(&v6)) {
      in_addr v4;
      std::memcpy(&v4, v6.s6_addr + 12, sizeof(v4));
      inet_ntop(AF_INET, &v4, text, sizeof(text));
      return text;
    }
    inet_ntop(AF_INET6, &v6, text, sizeof(text));
    return text;
  }
  inet_ntop(AF_INET, address, text, sizeof(text));
  return text;
}

bool ValidPort(std::string_view port) {
  if (port.empty() || port.size() > 5) return false;
  uint32_t value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  return value <= 65535;
}

// "PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n", "PROXY UNKNOWN ...\r\n".
ProxyHeader ParseV1(std::string_view bytes) {
  size_t end = bytes.find('\n');
  if (end == std::string_view::npos) {
    if (bytes.size() >= kProxyV1MaxBytes) {
      return Invalid("a version 1 PROXY header longer than 107 bytes");
    }
    size_t cr = bytes.find('\r');
    if (cr != std::string_view::npos && cr + 1 < bytes.size()) {
      return Invalid("a version 1 PROXY header with a CR not followed by LF");
    }
    return {};
  }
  if (end == 0 || bytes[end - 1] != '\r') {
    return Invalid("a version 1 PROXY header whose line does not end in CRLF");
  }
  if (end + 1 > kProxyV1MaxBytes) return Invalid("a version 1 PROXY header longer than 107 bytes");
  std::string_view line = bytes.substr(0, end - 1);
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::string_view(line.data(), line.size()), ' ');
  if (parts.size() >= 2 && parts[1] == "UNKNOWN") return Done(end + 1, "");
  if (parts.size() != 6) {
    return Invalid("a version 1 PROXY header that is not "
                   "'PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT'");
  }
  int family;
  if (parts[1] == "TCP4") {
    family = AF_INET;
  } else if (parts[1] == "TCP6") {
    family = AF_INET6;
  } else {
    return Invalid(absl::StrCat("a version 1 PROXY header with protocol '",
                                std::string(parts[1].substr(0, 16)), "' (TCP4, TCP6 or UNKNOWN)"));
  }
  unsigned char source[sizeof(in6_addr)];
  unsigned char destination[sizeof(in6_addr)];
  const std::string src(parts[2]), dst(parts[3]);
  if (inet_pton(family, src.c_str(), source) != 1 ||
      inet_pton(family, dst.c_str(), destination) != 1) {
    return Invalid("a version 1 PROXY header with an address that is not of its protocol");
  }
  if (!ValidPort(std::string_view(parts[4].data(), parts[4].size())) ||
      !ValidPort(std::string_view(parts[5].data(), parts[5].size()))) {
    return Invalid("a version 1 PROXY header with a port that is not 0..65535");
  }
  return Done(end + 1, Spelled(family, source));
}

ProxyHeader ParseV2(std::string_view bytes) {
  if (bytes.size() < kV2Signature.size()) {
    if (kV2Signature.substr(0, bytes.size()) != bytes) {
      return Invalid("the connection does not start with a PROXY protocol header");
    }
    return {};
  }
  if (bytes.substr(0, kV2Signature.size()) != kV2Signature) {
    return Invalid("the connection does not start with a PROXY protocol header");
  }
  if (bytes.size() < 16) return {};
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(bytes[i]); };
  if ((byte(12) >> 4) != 2) {
    return Invalid(absl::StrCat("a PROXY header of version ", byte(12) >> 4, " (1 or 2)"));
  }
  const int command = byte(12) & 0x0f;
  if (command > 1) return Invalid(absl::StrCat("a version 2 PROXY header with command ", command));
  const size_t length = 16 + ((static_cast<size_t>(byte(14)) << 8) | byte(15));
  if (command == 0) return Done(length, "");  // LOCAL: the balancer's own connection
  const int family = byte(13) >> 4;
  const int transport = byte(13) & 0x0f;
  if (family > 3 || transport > 2) {
    return Invalid(absl::StrCat("a version 2 PROXY header with address family ", family,
                                " and transport ", transport));
  }
  // AF_INET: two addresses and two ports; AF_INET6 likewise; AF_UNSPEC and
  // AF_UNIX name no IP address: the peer is the client.
  const size_t addresses = family == 1 ? 12 : family == 2 ? 36 : 0;
  if (length - 16 < addresses) {
    return Invalid("a version 2 PROXY header too short for its addresses");
  }
  if (addresses == 0) return Done(length, "");
  if (bytes.size() < 16 + addresses) return {};
  return Done(length, Spelled(family == 1 ? AF_INET : AF_INET6, bytes.data() + 16));
}

}  // namespace

ProxyHeader ParseProxyHeader(std::string_view bytes) {
  if (bytes.empty()) return {};
  if (bytes[0] == kV2Signature[0]) return ParseV2(bytes);
  const size_t n = std::min(bytes.size(), kV1Prefix.size());
  if (bytes.substr(0, n) != kV1Prefix.substr(0, n)) {
    return Invalid("the connection does not start with a PROXY protocol header");
  }
  if (bytes.size() < kV1Prefix.size()) return {};
  return ParseV1(bytes);
}

ProxyProtocolTransport::ProxyProtocolTransport(std::unique_ptr<TransportSocket> inner,
                                               std::string peer)
    : inner_(inner != nullptr ? std::move(inner) : std::make_unique<PlainTransportSocket>()) {
  state_.peer = std::move(peer);
}

void ProxyProtocolTransport::Attach(int fd) {
  fd_ = fd;
  if (state_.peer.empty()) state_.peer = PeerIp(fd);
  inner_->Attach(fd);
}

TransportSocket::Progress ProxyProtocolTransport::Handshake() {
  if (!state_.done) {
    Progress header = ReadHeader();
    if (header != Progress::kDone) return header;
  }
  return inner_->Handshake();
}

const std::string& ProxyProtocolTransport::failure_reason() const {
  return state_.failed ? reason_ : inner_->failure_reason();
}

TransportSocket::Progress ProxyProtocolTransport::Fail(std::string why) {
  state_.failed = true;
  reason_ = absl::StrCat("PROXY protocol: ", why);
  return Progress::kFailed;
}

// The bytes are looked at (MSG_PEEK) before they are taken, so that not one
// byte past the header is: TLS or HTTP reads the socket from there. Every
// wake-up takes what it looked at (all of it belongs to the header while the
// header goes on), so a client that sends half a header does not wake the
// worker again and again.
TransportSocket::Progress ProxyProtocolTransport::ReadHeader() {
  if (state_.failed) return Progress::kFailed;
  char buffer[256];
  while (true) {
    if (parsed_) {
      if (skip_ == 0) {
        state_.done = true;
        return Progress::kDone;
      }
      const ssize_t n = ::recv(fd_, buffer, std::min(skip_, sizeof(buffer)), 0);
      if (n > 0) {
        skip_ -= static_cast<size_t>(n);
        continue;
      }
      if (n == 0) return Fail("the connection ended inside its header");
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Progress::kWantRead;
      return Fail(strerror(errno));
    }
    const ssize_t n = ::recv(fd_, buffer, sizeof(buffer) - got_.size(), MSG_PEEK);
    if (n == 0) {
      return Fail(got_.empty() ? "the connection ended before its header"
                               : "the connection ended inside its header");
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Progress::kWantRead;
      return Fail(strerror(errno));
    }
    std::string seen = got_;
    seen.append(buffer, static_cast<size_t>(n));
    ProxyHeader header = ParseProxyHeader(seen);
    if (header.status == ProxyHeader::Status::kInvalid) return Fail(header.error);
    size_t take = static_cast<size_t>(n);
    if (header.status == ProxyHeader::Status::kDone) {
      take = std::min(header.length, seen.size()) - got_.size();
      skip_ = header.length > seen.size() ? header.length - seen.size() : 0;
      state_.source = std::move(header.source);
      parsed_ = true;
    }
    const ssize_t taken = ::recv(fd_, buffer, take, 0);
    if (taken != static_cast<ssize_t>(take)) {
      return Fail(taken < 0 ? strerror(errno) : "the socket gave less than it showed");
    }
    if (parsed_) {
      got_.clear();
      got_.shrink_to_fit();
    } else {
      got_.append(buffer, take);
    }
  }
}

}  // namespace sluice::net
