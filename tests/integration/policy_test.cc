// Policies on the filter chain through real processes: the `headers` policy
// on a virtual host and on routes, applied with sluicectl, changed live, and
// rejected with its field when wrong.
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

std::string WriteFile(const std::string& name, const std::string& text) {
  std::string path = MakeTempDir("policy") + "/" + name;
  std::ofstream(path) << text;
  return path;
}

class PolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok());
    port_ = PickFreePort();
    ASSERT_EQ(Apply(Config("from-vhost")), 0) << last_error_;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "policy-proxy");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  // A virtual host with a `headers` policy, and routes that inherit it,
  // replace it, or answer directly.
  std::string Config(const std::string& vhost_value) {
    return absl::StrCat(
        "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, port: ", upstream_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n"
        "      policies:\n"
        "        - name: headers\n"
        "          typed_config:\n"
        "            request:\n"
        "              remove: [x-test-secret]\n"
        "              set: [{name: x-test-origin, value: ", vhost_value, "}]\n"
        "              add: [{name: x-test-client, value: '%CLIENT_IP% %SCHEME% %METHOD% %ROUTE%'},\n"
        "                    {name: x-test-id, value: 'id=%REQUEST_ID%'}]\n"
        "            response:\n"
        "              remove: [x-upstream]\n"
        "              add: [{name: x-served-by, value: sluice}]\n"
        "      routes:\n"
        "        - name: direct\n          match: {path: /direct}\n"
        "          direct_response: {status: 200, body: direct}\n"
        "        - name: own\n          match: {prefix: /own}\n          route: {cluster: web}\n"
        "          policies:\n"
        "            - name: headers\n"
        "              typed_config: {request: {set: [{name: host, value: internal.example}]},\n"
        "                             response: {remove: [date]}}\n"
        "        - name: small\n          match: {prefix: /small}\n          route: {cluster: web}\n"
        "          policies: [{name: request-size-limit, typed_config: {max_bytes: 10}}]\n"
        "        - name: plain\n          match: {prefix: /}\n          route: {cluster: web}\n"
        "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ", port_,
        ", route_table: main}\n");
  }

  int Apply(const std::string& yaml) {
    auto r = cp_.Ctl({"apply", "-f", WriteFile("config.yaml", yaml)});
    last_error_ = r.out + r.err;
    return r.exit_code;
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  ControlPlane cp_{"", "info"};
  UpstreamServer upstream_{"web-1"};
  std::unique_ptr<Proxy> proxy_;
  int port_ = 0;
  std::string last_error_;
};

TEST_F(PolicyTest, VirtualHostPolicyChangesRequestAndResponseHeaders) {
  HttpResponse r = HttpGet(address(), "/users",
                           {{"x-test-secret", "s3cr3t"}, {"x-test-origin", "client"},
                            {"x-request-id", "fixed-id-1"}});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-echo-x-test-secret"), "");          // removed
  EXPECT_EQ(r.header("x-echo-x-test-origin"), "from-vhost");  // set replaced the client's
  EXPECT_EQ(r.header("x-echo-x-test-client"), "127.0.0.1 http GET plain");
  EXPECT_EQ(r.header("x-echo-x-test-id"), "id=fixed-id-1");
  EXPECT_EQ(r.header("x-upstream"), "");  // response field removed
  EXPECT_EQ(r.header("x-served-by"), "sluice");
  EXPECT_EQ(r.header("x-request-id"), "fixed-id-1");
}

TEST_F(PolicyTest, RoutePolicyReplacesTheVirtualHostsOfTheSameName) {
  HttpResponse r = HttpGet(address(), "/own/1", {{"x-test-secret", "s3cr3t"}});
  // A policy that removes Date: a proxy with a clock sends one all the same
  // (RFC 9110 6.6.1). Before: the response went without.
  EXPECT_FALSE(r.header("date").empty());
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("x-echo-host"), "internal.example");
  EXPECT_EQ(r.header("x-echo-x-test-secret"), "s3cr3t");  // the vhost's removal is replaced
  EXPECT_EQ(r.header("x-served-by"), "");
  EXPECT_EQ(r.header("x-upstream"), "web-1");
}

TEST_F(PolicyTest, ResponsePoliciesApplyToGatewayAnswersToo) {
  HttpResponse r = HttpGet(address(), "/direct");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "direct");
  EXPECT_EQ(r.header("x-served-by"), "sluice");
  // A 503 the gateway makes on the route (upstream gone) carries it as well.
  ASSERT_TRUE(upstream_.Stop().has_value());
  r = HttpGet(address(), "/users");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 502);
  EXPECT_EQ(r.header("x-served-by"), "sluice");
  EXPECT_TRUE(absl::StrContains(r.body, "\"error\"")) << r.body;
}

TEST_F(PolicyTest, PolicyChangesApplyLive) {
  ASSERT_EQ(Apply(Config("second-version")), 0) << last_error_;
  ASSERT_TRUE(proxy_->WaitForVersion(2));
  HttpResponse r = HttpGet(address(), "/users");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.header("x-echo-x-test-origin"), "second-version");
}

TEST_F(PolicyTest, InvalidPoliciesAreRejectedWithTheirFieldAndNothingChanges) {
  std::string bad = Config("x");
  bad.replace(bad.find("remove: [x-test-secret]"), 23, "remove: [content-length]");
  EXPECT_NE(Apply(bad), 0);
  EXPECT_TRUE(absl::StrContains(
      last_error_,
      "virtual_hosts[0].policies[0].typed_config.request.remove[0]: 'content-length' is set by the gateway"))
      << last_error_;
  std::string unknown = Config("x");
  unknown.replace(unknown.find("- name: headers"), 15, "- name: nonesuch");
  EXPECT_NE(Apply(unknown), 0);
  EXPECT_TRUE(absl::StrContains(last_error_, "unknown policy 'nonesuch' (this build has: acl, basic-auth, "))
      << last_error_;
  std::string template_error = Config("'%BOGUS%'");
  EXPECT_NE(Apply(template_error), 0);
  EXPECT_TRUE(absl::StrContains(last_error_, "unknown variable %BOGUS%")) << last_error_;
  EXPECT_EQ(proxy_->ReadyVersion(), 1u);
  HttpResponse r = HttpGet(address(), "/users");
  EXPECT_EQ(r.header("x-echo-x-test-origin"), "from-vhost");
}

TEST_F(PolicyTest, GetShowsPoliciesInTheShapeApplyReads) {
  auto r = cp_.Ctl({"get", "routetable", "main", "-o", "yaml"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "x-test-secret")) << r.out;
  std::string path = WriteFile("roundtrip.yaml", r.out);
  auto again = cp_.Ctl({"apply", "-f", path});
  EXPECT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_TRUE(absl::StrContains(again.out, "0 added, 0 changed")) << again.out;
}

// request-size-limit uses the request-body hook: a declared length over the
// limit is refused before anything goes upstream, a streamed body when it
// passes the limit.
TEST_F(PolicyTest, RequestSizeLimitRefusesLargeBodies) {
  HttpResponse r = HttpRequest(address(), "POST", "/small/ok", {}, "12345");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "body-bytes=5")) << r.body;
  r = HttpRequest(address(), "POST", "/small/big", {}, std::string(20, 'x'));
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "request body of 20 bytes is over this route's limit of 10"))
      << r.body;
  // Chunked: no declared length, cut as it streams.
  std::string raw = SendRaw(address(),
                            "POST /small/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                            "\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(raw, "HTTP/1.1 413")) << raw;
  EXPECT_TRUE(absl::StrContains(raw, "over this route's limit of 10 bytes")) << raw;
  // A chunk declared past the limit: 413 at its size line, as for the
  // route's own limit (it waited for the bytes, to the idle timeout).
  raw = SendRaw(address(),
                "POST /small/declared HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                "\r\n\r\n4\r\n1234\r\nfffffffff\r\nabc");
  EXPECT_TRUE(absl::StartsWith(raw, "HTTP/1.1 413")) << raw;
  EXPECT_TRUE(absl::StrContains(raw, "over this route's limit of 10 bytes")) << raw;
  // A client still sending its body reads the 413: the connection is closed
  // in stages (RFC 9112 9.6), not at once. Before: the kernel reset it
  // under the unread body, and curl failed on its write ("Send failure:
  // Broken pipe") without the status.
  for (int i = 0; i < 3; ++i) {
    CommandResult upload = RunCommand(
        {"/bin/sh", "-c",
         absl::StrCat("head -c 3000000 /dev/zero | /usr/bin/curl -sS --http1.1 --max-time 20 "
                      "-o /dev/null -w '%{http_code}' -T - http://",
                      address(), "/small/streamed")});
    EXPECT_EQ(upload.exit_code, 0) << upload.err;
    EXPECT_EQ(upload.out, "413") << upload.err;
  }
  // A client that goes on sending after the 413 is not reset while it does:
  // bursts of exactly what one wake-up of the lingering close reads (it
  // closed when that emptied the socket), and a small declared body (64 KiB
  // at most: it was closed at once, not lingering).
  const std::string script = absl::StrCat(
      "import socket, sys, time\n"
      "length, burst, count, gap = (int(a) for a in sys.argv[1:])\n"
      "s = socket.create_connection(('127.0.0.1', ", port_, "))\n"
      "s.sendall(b'POST /small/burst HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: %d\\r\\n\\r\\n'"
      " % length)\n"
      "s.settimeout(10)\n"
      "head = s.recv(65536)\n"
      "assert head.startswith(b'HTTP/1.1 413'), head\n"
      "for i in range(count):\n"
      "    s.sendall(b'b' * burst)\n"
      "    time.sleep(gap / 1000)\n"
      "print('sent')\n");
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"100000000", "131072", "6", "200"}, {"60000", "10000", "6", "20"}}) {
    std::vector<std::string> argv = {"/usr/bin/python3", "-c", script};
    argv.insert(argv.end(), args.begin(), args.end());
    CommandResult burst = RunCommand(argv);
    EXPECT_EQ(burst.exit_code, 0) << args[0] << ": " << burst.err;
    EXPECT_EQ(burst.out, "sent\n") << args[0] << ": " << burst.err;
  }
  // Other routes have no limit.
  r = HttpRequest(address(), "POST", "/users", {}, std::string(20, 'x'));
  EXPECT_EQ(r.status, 200);
  // A bad config names the field.
  std::string bad = Config("x");
  bad.replace(bad.find("max_bytes: 10"), 13, "max_bytes: 0");
  EXPECT_NE(Apply(bad), 0);
  EXPECT_TRUE(absl::StrContains(last_error_, "typed_config.max_bytes: must be 1..")) << last_error_;
}

// A connection at --max-connections that is answered before its body was
// read lingers too: it hands its own place to the lingering socket. Before,
// the lingering socket asked for one more place, found none, and the
// connection was closed at once, reset under the unread body.
TEST(LingeringAtTheLimitTest, TheLastConnectionLingersToo) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  const int port = PickFreePort();
  const std::string dir = MakeTempDir("linger-limit");
  auto r = cp.Ctl({"apply", "-f",
                   ::sluice::testing::WriteFile(dir, "config.yaml",
                             absl::StrCat("kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
                                          "    - domains: ['*']\n      routes:\n"
                                          "        - match: {prefix: /}\n"
                                          "          direct_response: {status: 200, body: ok}\n"
                                          "          policies: [{name: request-size-limit, "
                                          "typed_config: {max_bytes: 10}}]\n"
                                          "---\nkind: Listener\nname: l\nspec: {address: "
                                          "127.0.0.1, port: ",
                                          port, ", route_table: main}\n"))});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Proxy proxy(cp.address(), "linger-limit", 1, "",
              std::vector<std::string>{"--max-connections", "1"});
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  const std::string script = absl::StrCat(
      "import socket, time\n"
      "s = socket.create_connection(('127.0.0.1', ", port, "))\n"
      "s.sendall(b'POST / HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 10000000\\r\\n\\r\\n')\n"
      "s.settimeout(10)\n"
      "assert s.recv(65536).startswith(b'HTTP/1.1 413')\n"
      "for i in range(20):\n"
      "    s.sendall(b'b' * 1000)\n"
      "    time.sleep(0.1)\n"
      "print('sent')\n");
  CommandResult client;
  std::thread sender([&] { client = RunCommand({"/usr/bin/python3", "-c", script}); });
  EXPECT_TRUE(WaitFor([&] { return proxy.Stat("sluice_downstream_connections_lingering") == 1; },
                      absl::Seconds(5)))
      << proxy.Admin("/metrics").second;
  sender.join();
  EXPECT_EQ(client.out, "sent\n") << client.err;
}

}  // namespace
}  // namespace sluice::testing
