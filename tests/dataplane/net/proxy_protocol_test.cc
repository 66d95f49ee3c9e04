// The PROXY protocol header: the parser on bytes (versions 1 and 2, whole,
// partial, malformed), and the transport that reads it off a socket taking
// no byte past it.
#include "dataplane/net/proxy_protocol.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

namespace sluice::net {
namespace {

using Status = ProxyHeader::Status;

std::string V2(int command, int family, std::string addresses, std::string tlvs = "") {
  std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
  h.push_back(static_cast<char>(0x20 | command));
  h.push_back(static_cast<char>((family << 4) | 1));
  const size_t length = addresses.size() + tlvs.size();
  h.push_back(static_cast<char>(length >> 8));
  h.push_back(static_cast<char>(length & 0xff));
  return h + addresses + tlvs;
}

std::string V4Addresses() {
  // 203.0.113.7:51234 -> 10.0.0.1:443
  return std::string("\xcb\x00\x71\x07\x0a\x00\x00\x01\xc8\x22\x01\xbb", 12);
}

std::string V6Addresses(bool mapped) {
  std::string source = mapped ? std::string("\0\0\0\0\0\0\0\0\0\0\xff\xff\x07\x07\x07\x07", 16)
                              : std::string("\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x07", 16);
  return source + std::string(16, '\0') + std::string("\x01\x02\x01\xbb", 4);
}

TEST(ProxyHeaderTest, Version1) {
  const std::string line = "PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
  ProxyHeader h = ParseProxyHeader(line + "GET / HTTP/1.1\r\n");
  ASSERT_EQ(h.status, Status::kDone) << h.error;
  EXPECT_EQ(h.length, line.size());
  EXPECT_EQ(h.source, "203.0.113.7");
  h = ParseProxyHeader("PROXY TCP6 2001:DB8:0::7 ::1 1 65535\r\n");
  ASSERT_EQ(h.status, Status::kDone) << h.error;
  EXPECT_EQ(h.source, "2001:db8::7");
  h = ParseProxyHeader("PROXY TCP6 ::ffff:7.7.7.7 ::1 1 2\r\n");
  EXPECT_EQ(h.source, "7.7.7.7");
  h = ParseProxyHeader("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n");
  ASSERT_EQ(h.status, Status::kDone) << h.error;
  EXPECT_EQ(h.source, "");  // the peer is the client
  // Every prefix of a header wants more.
  for (size_t n = 0; n < line.size(); ++n) {
    EXPECT_EQ(ParseProxyHeader(line.substr(0, n)).status, Status::kNeedMore) << n;
  }
}

TEST(ProxyHeaderTest, Version1Refusals) {
  for (const char* bad : {
           "GET / HTTP/1.1\r\n",                              // no header at all
           "PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\n",     // LF alone
           "PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\rX",    // CR alone
           "PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",         // another family
           "PROXY TCP4 203.0.113.7 10.0.0.1 65536 443\r\n",   // port
           "PROXY TCP4 203.0.113.7 10.0.0.1 -1 443\r\n",
           "PROXY TCP4 203.0.113.7 10.0.0.1 51234\r\n",       // a field short
           "PROXY  TCP4 203.0.113.7 10.0.0.1 1 2\r\n",        // two spaces
           "PROXY UDP4 203.0.113.7 10.0.0.1 1 2\r\n",
           "proxy TCP4 203.0.113.7 10.0.0.1 1 2\r\n",
       }) {
    ProxyHeader h = ParseProxyHeader(bad);
    EXPECT_EQ(h.status, Status::kInvalid) << bad;
    EXPECT_FALSE(h.error.empty()) << bad;
  }
  // No line end within 107 bytes.
  EXPECT_EQ(ParseProxyHeader("PROXY " + std::string(101, 'x')).status, Status::kInvalid);
  EXPECT_EQ(ParseProxyHeader("PROXY " + std::string(100, 'x')).status, Status::kNeedMore);
}

TEST(ProxyHeaderTest, Version2) {
  ProxyHeader h = ParseProxyHeader(V2(1, 1, V4Addresses()) + "\x16\x03\x01");
  ASSERT_EQ(h.status, Status::kDone) << h.error;
  EXPECT_EQ(h.length, 28u);
  EXPECT_EQ(h.source, "203.0.113.7");
  h = ParseProxyHeader(V2(1, 2, V6Addresses(false)));
  ASSERT_EQ(h.status, Status::kDone) << h.error;
  EXPECT_EQ(h.source, "2001:db8::7");
  EXPECT_EQ(ParseProxyHeader(V2(1, 2, V6Addresses(true))).source, "7.7.7.7");
  // TLVs (an AWS NLB's, say) count in the length; only the addresses are read.
  const std::string tlvs(300, 'T');
  h = ParseProxyHeader(V2(1, 1, V4Addresses(), tlvs).substr(0, 28));
  ASSERT_EQ(h.status, Status::kDone) << h.error;
  EXPECT_EQ(h.length, 28u + tlvs.size());
  // LOCAL (the balancer's health check) and AF_UNSPEC name no client.
  h = ParseProxyHeader(V2(0, 0, ""));
  ASSERT_EQ(h.status, Status::kDone);
  EXPECT_EQ(h.source, "");
  EXPECT_EQ(ParseProxyHeader(V2(1, 0, "")).source, "");
  const std::string whole = V2(1, 2, V6Addresses(false));
  for (size_t n = 0; n < whole.size(); ++n) {
    EXPECT_EQ(ParseProxyHeader(whole.substr(0, n)).status, Status::kNeedMore) << n;
  }
}

TEST(ProxyHeaderTest, Version2Refusals) {
  std::string bad_version = V2(1, 1, V4Addresses());
  bad_version[12] = 0x11;
  std::string bad_command = V2(1, 1, V4Addresses());
  bad_command[12] = 0x22;
  std::string short_addresses = V2(1, 2, V4Addresses());  // 12 bytes for IPv6's 36
  std::string bad_family = V2(1, 1, V4Addresses());
  bad_family[13] = 0x41;
  std::string bad_signature = V2(1, 1, V4Addresses());
  bad_signature[7] = 'X';
  for (const std::string& bad :
       {bad_version, bad_command, short_addresses, bad_family, bad_signature}) {
    EXPECT_EQ(ParseProxyHeader(bad).status, Status::kInvalid);
  }
}

// The transport over a real socket pair: it takes the header and nothing
// more, in pieces, and then reads as the plain socket it wraps.
class ProxyTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds_), 0);
    transport_.Attach(fds_[0]);
  }
  void TearDown() override {
    close(fds_[0]);
    if (fds_[1] >= 0) close(fds_[1]);
  }
  void Send(const std::string& bytes) {
    ASSERT_EQ(send(fds_[1], bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  }
  std::string ReadAll() {
    std::string out;
    char buffer[4096];
    ssize_t n;
    while ((n = transport_.Read(buffer, sizeof(buffer))) > 0) out.append(buffer, n);
    return out;
  }

  int fds_[2] = {-1, -1};
  ProxyProtocolTransport transport_{nullptr};
};

TEST_F(ProxyTransportTest, TakesTheHeaderInPiecesAndNotAByteMore) {
  const std::string header = V2(1, 1, V4Addresses(), std::string(1000, 'T'));
  EXPECT_EQ(transport_.Handshake(), TransportSocket::Progress::kWantRead);
  for (size_t at = 0; at < header.size(); at += 7) {
    EXPECT_EQ(transport_.Handshake(), TransportSocket::Progress::kWantRead) << at;
    Send(header.substr(at, 7));
  }
  Send("GET / HTTP/1.1\r\n\r\n");
  ASSERT_EQ(transport_.Handshake(), TransportSocket::Progress::kDone)
      << transport_.failure_reason();
  ASSERT_NE(transport_.proxy_header(), nullptr);
  EXPECT_TRUE(transport_.proxy_header()->done);
  EXPECT_EQ(transport_.proxy_header()->source, "203.0.113.7");
  EXPECT_EQ(ReadAll(), "GET / HTTP/1.1\r\n\r\n");
}

TEST_F(ProxyTransportTest, Version1WithTheRequestInTheSameSegment) {
  Send("PROXY TCP4 198.51.100.9 10.0.0.1 4000 80\r\nGET /a HTTP/1.1\r\n\r\n");
  ASSERT_EQ(transport_.Handshake(), TransportSocket::Progress::kDone);
  EXPECT_EQ(transport_.proxy_header()->source, "198.51.100.9");
  EXPECT_EQ(ReadAll(), "GET /a HTTP/1.1\r\n\r\n");
}

TEST_F(ProxyTransportTest, ARequestWithoutAHeaderFails) {
  Send("GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(transport_.Handshake(), TransportSocket::Progress::kFailed);
  EXPECT_TRUE(transport_.proxy_header()->failed);
  EXPECT_EQ(transport_.failure_reason(),
            "PROXY protocol: the connection does not start with a PROXY protocol header");
}

TEST_F(ProxyTransportTest, AConnectionEndingInsideTheHeaderFails) {
  Send("PROXY TCP4 198.51.");
  EXPECT_EQ(transport_.Handshake(), TransportSocket::Progress::kWantRead);
  close(fds_[1]);
  fds_[1] = -1;
  EXPECT_EQ(transport_.Handshake(), TransportSocket::Progress::kFailed);
  EXPECT_EQ(transport_.failure_reason(), "PROXY protocol: the connection ended inside its header");
}

}  // namespace
}  // namespace sluice::net
