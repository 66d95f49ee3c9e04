// The pieces of OpsHttpServer's file a caller uses without the server:
// HOST:PORT parsing and binding, with errors that name what is wrong. (The
// server itself is tested through its two users: the proxy's admin
// endpoint, tests/dataplane/admin, and sluice-control's metrics endpoint,
// tests/controlplane/server.)
#include "common/ops_http_server.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace sluice::common {
namespace {

TEST(SplitHostPortTest, TakesV4V6AndNamesWhatIsWrong) {
  auto v4 = SplitHostPort("127.0.0.1:18001");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->first, "127.0.0.1");
  EXPECT_EQ(v4->second, 18001);
  auto v6 = SplitHostPort("[::1]:0");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->first, "::1");
  EXPECT_EQ(v6->second, 0);
  EXPECT_EQ(SplitHostPort("18001").status().message(),
            "'18001' is not HOST:PORT (e.g. 127.0.0.1:18001)");
  EXPECT_EQ(SplitHostPort(":18001").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SplitHostPort("127.0.0.1:70000").status().message(),
            "'127.0.0.1:70000': the port must be 0..65535");
  EXPECT_EQ(SplitHostPort("127.0.0.1:x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SplitHostPort("[::1:80").status().message(),
            "'[::1:80': an IPv6 host is written [ADDRESS]:PORT");
}

TEST(ListenTcpTest, BindsAndNamesWhyNot) {
  absl::StatusOr<int> fd = ListenTcp("127.0.0.1:0");
  ASSERT_TRUE(fd.ok()) << fd.status();
  sockaddr_in local{};
  socklen_t length = sizeof(local);
  ASSERT_EQ(getsockname(*fd, reinterpret_cast<sockaddr*>(&local), &length), 0);
  const int port = ntohs(local.sin_port);
  absl::StatusOr<int> again = ListenTcp(absl::StrCat("127.0.0.1:", port));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(again.status().message(),
            absl::StrCat("cannot listen on 127.0.0.1:", port, ": Address already in use"));
  close(*fd);
  EXPECT_EQ(ListenTcp("18001").status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<int> v6 = ListenTcp("[::1]:0");
  if (v6.ok()) close(*v6);  // a machine without IPv6 says why
  EXPECT_TRUE(v6.ok() || absl::StrContains(v6.status().message(), "cannot listen on [::1]:0"))
      << v6.status();
  EXPECT_TRUE(absl::StartsWith(ListenTcp("no-such-host.invalid:0").status().message(),
                               "cannot listen on no-such-host.invalid:0: "));
}

}  // namespace
}  // namespace sluice::common
