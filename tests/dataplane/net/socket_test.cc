#include "dataplane/net/socket.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>

#include "gtest/gtest.h"

namespace sluice::net {
namespace {

sockaddr_storage Ip(const std::string& ip) {
  auto address = ParseAddress(ip, 80);
  EXPECT_TRUE(address.ok()) << ip;
  return address.ok() ? address->storage : sockaddr_storage{};
}

// What counts as a peer on this host: the whole of 127.0.0.0/8, ::1, and
// IPv4 loopback addresses mapped into IPv6 (a dual-stack socket's peer).
TEST(SocketTest, LoopbackAddressesAreThoseOfThisHost) {
  for (const char* ip : {"127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"}) {
    EXPECT_TRUE(IsLoopback(Ip(ip))) << ip;
  }
  for (const char* ip : {"10.0.0.1", "128.0.0.1", "126.255.255.255", "0.0.0.0", "::",
                         "::2", "::ffff:10.0.0.1", "fe80::1", "::127.0.0.1"}) {
    EXPECT_FALSE(IsLoopback(Ip(ip))) << ip;
  }
  EXPECT_FALSE(IsLoopback(sockaddr_storage{}));  // no address family
}

}  // namespace
}  // namespace sluice::net
