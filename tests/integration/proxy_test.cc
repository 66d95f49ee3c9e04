// sluice-control, two sluice-proxy replicas and three upstream servers as real
// processes, with real HTTP traffic through them.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>

#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "dataplane/event/dispatcher.h"
#include "tests/harness/http_client.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

struct ConfigOptions {
  int listener_port = 0;
  std::vector<int> endpoints;           // ports of cluster "backends"
  int extra_routes = 0;                 // /extra-N direct responses
  int extra_listener_port = 0;          // a second listener when non-zero
  std::string route_timeout = "15s";
  std::string lb_policy = "ROUND_ROBIN";
  std::string headers_with_underscores = "ALLOW";  // the listener's http option
};

std::string ConfigYaml(const ConfigOptions& o) {
  std::string eps;
  for (int p : o.endpoints) absl::StrAppend(&eps, "    - {address: 127.0.0.1, port: ", p, "}\n");
  std::string routes;
  for (int i = 0; i < o.extra_routes; ++i) {
    absl::StrAppend(&routes, "        - match: {path: /extra-", i,
                    "}\n          direct_response: {status: 200, body: \"extra ", i, "\"}\n");
  }
  std::string yaml = absl::StrCat(
      "kind: Cluster\nname: backends\nspec:\n  lb_policy: ", o.lb_policy,
      "\n  connect_timeout: 1s\n  endpoints:\n", eps,
      "---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
      "    - name: strict\n      domains: [strict.test]\n      routes:\n"
      "        - match: {prefix: /only-get, methods: [GET]}\n          route: {cluster: backends}\n"
      "    - name: all\n"
      "      domains: ['*']\n      routes:\n", routes,
      "        - match: {path: /healthz}\n          direct_response: {status: 200, body: \"ok\\n\"}\n"
      "        - match: {prefix: /old/}\n          route: {cluster: backends, prefix_rewrite: /new/}\n"
      "        - match: {prefix: /Mixed/, case_sensitive: false}\n"
      "          route: {cluster: backends, prefix_rewrite: /lower/}\n"
      "        - match: {prefix: /go}\n          redirect: {path_redirect: /gone, response_code: 302}\n"
      "        - match: {prefix: /moved/}\n          redirect: {prefix_rewrite: /here/}\n"
      "        - match: {prefix: /}\n          route: {cluster: backends, timeout: ",
      o.route_timeout, "}\n",
      "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ", o.listener_port,
      ", route_table: main, http: {request_headers_timeout: 2s, idle_timeout: 30s, "
      "headers_with_underscores: ", o.headers_with_underscores, "}}\n");
  if (o.extra_listener_port) {
    absl::StrAppend(&yaml, "---\nkind: Listener\nname: extra\nspec: {address: 127.0.0.1, port: ",
                    o.extra_listener_port, ", route_table: main}\n");
  }
  return yaml;
}

std::string WriteConfig(const std::string& yaml) {
  std::string path = MakeTempDir("config") + "/config.yaml";
  std::ofstream(path) << yaml;
  return path;
}

class ProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    for (const char* name : {"up-a", "up-b", "up-c"}) {
      upstreams_.push_back(std::make_unique<UpstreamServer>(name));
      ASSERT_TRUE(upstreams_.back()->ok()) << upstreams_.back()->process().Log();
    }
    options_.listener_port = PickFreePort();
    ASSERT_NE(options_.listener_port, 0);
    for (auto& u : upstreams_) options_.endpoints.push_back(u->port());
    ASSERT_EQ(Apply(options_), 1u);
    for (const char* id : {"proxy-1", "proxy-2"}) {
      proxies_.push_back(std::make_unique<Proxy>(cp_.address(), id));
      ASSERT_TRUE(proxies_.back()->ok()) << proxies_.back()->process().Log();
    }
    for (auto& p : proxies_) ASSERT_TRUE(p->WaitForVersion(1)) << p->process().Log();
  }

  // Applies and returns the new version (0 on failure).
  uint64_t Apply(const ConfigOptions& o) {
    auto r = cp_.Ctl({"apply", "-f", WriteConfig(ConfigYaml(o))});
    size_t at = r.out.find("version ");
    if (r.exit_code != 0 || at == std::string::npos) {
      ADD_FAILURE() << r.out << r.err;
      return 0;
    }
    return std::stoull(r.out.substr(at + 8));
  }

  std::string listener() const { return absl::StrCat("127.0.0.1:", options_.listener_port); }

  // For the --wait tests: proxies_[2], a second proxy of node id "proxy-2",
  // stopped (it takes no version); then `sluicectl apply --wait` of one
  // more cluster (version 2), during which, once proxies_[1] took the
  // version and sluicectl is waiting for the stopped one, `churn` runs.
  CommandResult ApplyWaitingWithAStoppedDuplicate(const std::string& timeout,
                                                  const std::function<void()>& churn) {
    proxies_.push_back(std::make_unique<Proxy>(cp_.address(), "proxy-2"));
    EXPECT_TRUE(proxies_[2]->ok()) << proxies_[2]->process().Log();
    EXPECT_TRUE(proxies_[2]->WaitForVersion(1)) << proxies_[2]->process().Log();
    proxies_[2]->process().Signal(SIGSTOP);
    const std::string change = WriteConfig(
        "kind: Cluster\nname: spare\nspec:\n  endpoints: [{address: 127.0.0.1, port: 9}]\n");
    std::thread during([&] {
      WaitFor([&] { return cp_.Ctl({"get", "cluster", "spare"}).exit_code == 0; },
              absl::Seconds(20));
      EXPECT_TRUE(proxies_[1]->WaitForVersion(2));
      absl::SleepFor(absl::Seconds(1));  // sluicectl is waiting for the stopped one
      churn();
    });
    CommandResult waited = cp_.Ctl({"apply", "-f", change, "--wait", "--timeout", timeout});
    during.join();
    return waited;
  }

  void KillProxy(size_t i) {
    proxies_[i]->process().Signal(SIGKILL);
    proxies_[i]->process().Wait(absl::Seconds(10));
  }

  ControlPlane cp_{"", "info"};
  std::vector<std::unique_ptr<UpstreamServer>> upstreams_;
  std::vector<std::unique_ptr<Proxy>> proxies_;
  ConfigOptions options_;
};

TEST_F(ProxyTest, RequestsSpreadOverTheThreeEndpointsAndBothReplicas) {
  std::map<std::string, int> by_upstream;
  for (int i = 0; i < 90; ++i) {
    HttpResponse r = HttpGet(listener(), "/spread");
    ASSERT_TRUE(r.ok()) << r.error;
    ASSERT_EQ(r.status, 200);
    by_upstream[r.header("x-upstream")]++;
    EXPECT_FALSE(r.header("x-request-id").empty());
  }
  EXPECT_EQ(by_upstream.size(), 3u);
  for (auto& [name, count] : by_upstream) EXPECT_GE(count, 10) << name;
  // Both replicas share the listener; each served some of the connections.
  for (auto& p : proxies_) {
    EXPECT_GT(p->Stat("sluice_downstream_requests_total"), 0) << p->Admin("/stats").second;
  }
}

// http.headers_with_underscores: a field CGI-style upstreams read as its
// `-` spelling (x_env as x-env), which route header matchers and policies
// take as another field, goes through (ALLOW, the default), is refused
// (REJECT_REQUEST) or is removed before anything reads it (DROP_HEADER),
// as Envoy's headers_with_underscores_action.
TEST_F(ProxyTest, HeadersWithUnderscoresAreAllowedRefusedOrDropped) {
  const std::vector<std::pair<std::string, std::string>> sent = {{"x_env", "prod"},
                                                                 {"x-test-kept", "yes"}};
  HttpResponse r = HttpGet(listener(), "/u", sent);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-echo-x_env"), "prod");
  ConfigOptions o = options_;
  o.headers_with_underscores = "REJECT_REQUEST";
  ASSERT_EQ(Apply(o), 2u);
  for (auto& p : proxies_) ASSERT_TRUE(p->WaitForVersion(2)) << p->process().Log();
  r = HttpGet(listener(), "/u", sent);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "header field x_env has '_' in its name")) << r.body;
  o.headers_with_underscores = "DROP_HEADER";
  ASSERT_EQ(Apply(o), 3u);
  for (auto& p : proxies_) ASSERT_TRUE(p->WaitForVersion(3)) << p->process().Log();
  r = HttpGet(listener(), "/u", sent);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-echo-x_env"), "");
  EXPECT_EQ(r.header("x-echo-x-test-kept"), "yes");
  // Trailers too (they reached the upstream).
  std::string raw = SendRaw(listener(),
                            "POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                            "Connection: close\r\n\r\n3\r\nabc\r\n0\r\nx_trail: 1\r\n"
                            "x-trail: 2\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(raw, "HTTP/1.1 200")) << raw;
  EXPECT_TRUE(absl::StrContains(raw, "x-echo-trailer-x-trail: 2")) << raw;
  EXPECT_FALSE(absl::StrContains(raw, "x_trail")) << raw;
}

TEST_F(ProxyTest, LocalResponsesAndForwardedHeaders) {
  HttpResponse r = HttpGet(listener(), "/healthz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok\n");
  r = HttpRequest(listener(), "POST", "/only-get/x", {{"host", "strict.test"}}, "data");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.header("allow"), "GET, HEAD");  // GET takes HEAD along
  EXPECT_NE(r.body.find("\"request_id\":\"" + r.header("x-request-id") + "\""), std::string::npos)
      << r.body;
  // A method with a lowercase letter matches no route's `methods` exactly
  // and got past them (and their policies) to upstreams that upper-case it:
  // 400, as from nginx. `purge` went through too, past a route's
  // `methods: [PURGE]`, to Django or Werkzeug, which take it for PURGE.
  for (const char* method : {"post", "Delete", "gET"}) {
    r = HttpRequest(listener(), method, "/only-get/x", {{"host", "strict.test"}}, "data");
    EXPECT_EQ(r.status, 400) << method;
    EXPECT_NE(r.body.find(absl::StrCat("method ", method, " is not ")), std::string::npos)
        << r.body;
  }
  for (const char* method : {"purge", "Purge", "PROPfind"}) {
    r = HttpRequest(listener(), method, "/old/path", {}, "");
    EXPECT_EQ(r.status, 400) << method;
    EXPECT_NE(r.body.find(absl::StrCat("method ", method, " has lowercase letters")),
              std::string::npos)
        << r.body;
  }
  r = HttpRequest(listener(), "PURGE", "/old/path", {}, "");
  EXPECT_EQ(r.status, 200) << r.body;
  // case_sensitive: false: the prefix is matched and replaced however
  // the request spells it.
  for (const char* path : {"/mixed/a?Q=1", "/MIXED/a?Q=1", "/Mixed/a?Q=1"}) {
    r = HttpGet(listener(), path);
    ASSERT_EQ(r.status, 200) << path;
    EXPECT_NE(r.body.find("GET /lower/a?Q=1"), std::string::npos) << path << ": " << r.body;
  }
  r = HttpGet(listener(), "/go/somewhere");
  EXPECT_EQ(r.status, 302);
  EXPECT_EQ(r.header("location"), "http://" + listener() + "/gone");
  r = HttpGet(listener(), "/moved/a/b?c=1");
  EXPECT_EQ(r.status, 301);
  EXPECT_EQ(r.header("location"), "http://" + listener() + "/here/a/b?c=1");

  r = HttpGet(listener(), "/old/path?q=1",
              {{"x-forwarded-for", "203.0.113.9"}, {"x-request-id", "client-id-1"},
               {"connection", "close, x-hop"}, {"x-hop", "secret"}, {"te", "trailers"},
               {"via", "1.0 fred"}});
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_NE(r.body.find("GET /new/path?q=1"), std::string::npos) << r.body;
  EXPECT_EQ(r.header("x-echo-x-forwarded-for"), "203.0.113.9, 127.0.0.1");
  // A comma ending a field adds no item, as the gateway reads the list
  // (trusted_proxy_hops): it goes on as `a, peer`, not `a,, peer`, whose
  // empty item a next hop would count. An empty item inside stays one.
  for (auto [sent, forwarded] : std::initializer_list<std::pair<const char*, const char*>>{
           {"203.0.113.9,", "203.0.113.9, 127.0.0.1"},
           {"203.0.113.9 ,", "203.0.113.9, 127.0.0.1"},
           {"10.0.0.1,,", "10.0.0.1,, 127.0.0.1"},
           {",", ", 127.0.0.1"}}) {
    HttpResponse x = HttpGet(listener(), "/old/path", {{"x-forwarded-for", sent}});
    ASSERT_EQ(x.status, 200) << x.error;
    EXPECT_EQ(x.header("x-echo-x-forwarded-for"), forwarded) << sent;
  }
  // An HTTP-to-HTTP gateway appends itself to Via (RFC 9110 7.6.3).
  EXPECT_EQ(r.header("x-echo-via"), "1.0 fred, 1.1 sluice");
  EXPECT_EQ(r.header("x-echo-x-real-ip"), "127.0.0.1");  // no trusted hop: the peer
  EXPECT_EQ(r.header("x-echo-x-forwarded-proto"), "http");
  EXPECT_EQ(r.header("x-echo-x-request-id"), "client-id-1");
  EXPECT_EQ(r.header("x-request-id"), "client-id-1");
  EXPECT_EQ(r.header("x-echo-host"), listener());
  EXPECT_EQ(r.header("x-echo-te"), "");
  EXPECT_EQ(r.header("x-echo-connection"), "");
  EXPECT_EQ(r.header("x-echo-x-hop"), "");  // named by Connection: this hop's only
}

// RFC 9110 6.6.1: a response forwarded without Date gets one (the test
// upstream sends none unless asked), an upstream's own is kept, and the
// gateway's own answers carry one.
TEST_F(ProxyTest, EveryResponseCarriesADate) {
  auto is_http_date = [](const std::string& v) {
    absl::Time t;
    std::string err;
    return v.size() == 29 && absl::ParseTime("%a, %d %b %Y %H:%M:%S GMT", v, &t, &err) &&
           absl::AbsDuration(absl::Now() - t) < absl::Seconds(60);
  };
  HttpResponse r = HttpGet(listener(), "/nodate");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_TRUE(is_http_date(r.header("date"))) << r.header("date");
  r = HttpGet(listener(), "/withdate?date=1");
  EXPECT_TRUE(is_http_date(r.header("date"))) << r.header("date");
  std::string raw = SendRaw(listener(), "GET /withdate?date=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  std::vector<std::string> parts = absl::StrSplit(raw, "\r\ndate: ");
  EXPECT_EQ(parts.size(), 2u) << raw;  // one Date, not two
  r = HttpGet(listener(), "/healthz");  // a direct response
  EXPECT_TRUE(is_http_date(r.header("date"))) << r.header("date");
  r = HttpGet(listener(), "/bad%zz");  // a 400 of the gateway's
  EXPECT_EQ(r.status, 400);
  EXPECT_TRUE(is_http_date(r.header("date"))) << r.header("date");
  raw = SendRaw(listener(), "GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n");  // before a stream
  EXPECT_TRUE(absl::StrContains(raw, "\r\ndate: ")) << raw;
}

TEST_F(ProxyTest, BodiesStreamBothWays) {
  std::string body(300000, 'b');
  for (size_t i = 0; i < body.size(); i += 7) body[i] = static_cast<char>('a' + i % 26);
  HttpResponse direct = HttpRequest(upstreams_[0]->address(), "POST", "/x", {}, body);
  ASSERT_EQ(direct.status, 200);
  std::string crc_line = direct.body.substr(direct.body.find("body-bytes="));
  HttpResponse r = HttpRequest(listener(), "POST", "/x", {}, body);
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_NE(r.body.find(crc_line), std::string::npos) << r.body;
  // Chunked request body, with Expect: 100-continue.
  r = HttpRequest(listener(), "POST", "/x",
                  {{"transfer-encoding", "chunked"}, {"expect", "100-continue"}},
                  EncodeChunked(body, 7000));
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_NE(r.body.find(crc_line), std::string::npos) << r.body;
  EXPECT_EQ(r.header("x-echo-transfer-encoding"), "chunked");
  // Large and chunked responses.
  r = HttpGet(listener(), "/x?size=2000000");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body.size(), 2000000u);
  r = HttpGet(listener(), "/x?chunked=1");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.header("transfer-encoding"), "chunked");
}

// Without trusted proxies in front, a client's word on the host and port
// it reached (which upstreams build URLs from, and a cache does not key on)
// does not go upstream.
TEST_F(ProxyTest, AClientsForwardedHostAndPortStayAtTheGateway) {
  HttpResponse r = HttpGet(listener(), "/fh", {{"x-forwarded-host", "evil.example"},
                                               {"X-Forwarded-Port", "8443"},
                                               {"X-Forwarded-Prefix", "//evil.example"},
                                               {"x_forwarded_prefix", "//evil.example"}});
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.headers.count("x-echo-x-forwarded-host"), 0u) << r.header("x-echo-x-forwarded-host");
  EXPECT_EQ(r.headers.count("x-echo-x-forwarded-port"), 0u);
  // The path prefix Spring and ASP.NET Core build links from (before: sent).
  EXPECT_EQ(r.headers.count("x-echo-x-forwarded-prefix"), 0u);
  EXPECT_EQ(r.headers.count("x-echo-x_forwarded_prefix"), 0u);
  // RFC 7239's Forwarded carries the same host= and proto=.
  r = HttpGet(listener(), "/fh", {{"forwarded", "host=evil.example;proto=https"}});
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.headers.count("x-echo-forwarded"), 0u) << r.header("x-echo-forwarded");
  // Nor its word on its client certificate (Envoy's XFCC, which
  // applications behind Envoy and Istio trust), in any spelling.
  r = HttpGet(listener(), "/fh", {{"x-forwarded-client-cert", "Subject=\"CN=admin\""},
                                  {"X_Forwarded_Client_Cert", "Subject=\"CN=admin\""}});
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.headers.count("x-echo-x-forwarded-client-cert"), 0u);
  EXPECT_EQ(r.headers.count("x-echo-X_Forwarded_Client_Cert"), 0u);
  EXPECT_EQ(r.headers.count("x-echo-x_forwarded_client_cert"), 0u);
  // Nor its word on its scheme in the spellings frameworks read besides
  // X-Forwarded-Proto (Rack's X-Forwarded-Ssl, Microsoft's Front-End-Https).
  r = HttpGet(listener(), "/fh", {{"X-Forwarded-Ssl", "on"}, {"Front-End-Https", "on"}});
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.headers.count("x-echo-x-forwarded-ssl"), 0u);
  EXPECT_EQ(r.headers.count("x-echo-front-end-https"), 0u);
}

// CGI, WSGI, Rack and PHP read x_consumer_name and x-consumer-name as one
// variable: a client's '_' spelling of a field the gateway sets must not
// reach the upstream either. Other '_' names go through.
TEST_F(ProxyTest, UnderscoreSpellingsOfTheGatewaysFieldsStayAtTheGateway) {
  HttpResponse r = HttpGet(listener(), "/us", {{"X_Consumer_Name", "root"},
                                               {"x-consumer_groups", "admin"},
                                               {"x_anonymous_consumer", "false"},
                                               {"X_Forwarded_For", "6.6.6.6"},
                                               {"x_forwarded_host", "evil.example"},
                                               {"x_request_id", "forged"},
                                               {"x_real_ip", "6.6.6.6"},
                                               {"Transfer_Encoding", "chunked"},
                                               {"content_length", "99"},
                                               {"x_custom_field", "kept"}});
  ASSERT_EQ(r.status, 200) << r.error;
  for (const char* name : {"x_consumer_name", "x-consumer_groups", "x_anonymous_consumer",
                           "x_forwarded_for", "x_forwarded_host", "x_request_id", "x_real_ip",
                           "transfer_encoding", "content_length"}) {
    EXPECT_EQ(r.headers.count(std::string("x-echo-") + name), 0u) << name;
  }
  EXPECT_EQ(r.header("x-echo-x_custom_field"), "kept");
  EXPECT_EQ(r.header("x-echo-x-forwarded-for"), "127.0.0.1");
}

TEST_F(ProxyTest, ChunkedTrailersAreForwardedBothWays) {
  // Request trailers reach the upstream (which echoes them as headers);
  // fields that must not come after a body are dropped.
  std::string reply = SendRaw(
      listener(),
      "POST /x HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
      "5\r\nhello\r\n0\r\nx-checksum: abc123\r\nauthorization: sneaky\r\n"
      "x-consumer-name: sneaky\r\nX-Anonymous-Consumer: sneaky\r\nx-forwarded-for: sneaky\r\n"
      "x-request-id: sneaky\r\nX-Forwarded-Port: sneaky\r\ntraceparent: sneaky\r\n"
      "Proxy-Authorization: sneaky\r\nIf-Match: sneaky\r\nIf-None-Match: sneaky\r\n"
      "Range: sneaky\r\nLocation: sneaky\r\nWWW-Authenticate: sneaky\r\nRetry-After: sneaky\r\n"
      "Strict-Transport-Security: sneaky\r\nRefresh: sneaky\r\nLink: sneaky\r\n"
      "Access-Control-Allow-Origin: sneaky\r\n\r\n");
  EXPECT_NE(reply.find("x-echo-trailer-x-checksum: abc123"), std::string::npos) << reply;
  // Nor may a client pass off what the gateway tells the upstream (the
  // consumer, its address, the request id) as trailers.
  EXPECT_EQ(reply.find("sneaky"), std::string::npos) << reply;
  // Response trailers reach an HTTP/1.1 client in the last chunk.
  reply = SendRaw(listener(), "GET /x?chunked=1&trailers=1 HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
  EXPECT_NE(reply.find("\r\n0\r\nx-test-trailer: done\r\n\r\n"), std::string::npos) << reply;
  EXPECT_NE(reply.find("\r\ntrailer: x-test-trailer\r\n"), std::string::npos) << reply;
  // An HTTP/1.0 client gets the body delimited by the close, without the
  // trailers and without the Trailer field that announced them.
  reply = SendRaw(listener(), "GET /x?chunked=1&trailers=1 HTTP/1.0\r\nhost: t\r\n\r\n");
  EXPECT_NE(reply.find("HTTP/1.1 200"), std::string::npos) << reply;
  EXPECT_EQ(reply.find("x-test-trailer"), std::string::npos) << reply;
}

TEST_F(ProxyTest, KeepAliveAndPipelining) {
  HttpConnection c(listener());
  for (int i = 0; i < 5; ++i) {
    HttpResponse r = c.Request("GET", absl::StrCat("/k", i));
    ASSERT_EQ(r.status, 200) << r.error;
  }
  EXPECT_EQ(c.connections_opened(), 1);
  std::string pipelined;
  for (int i = 0; i < 4; ++i) {
    pipelined += FormatRequest(listener(), i == 2 ? "HEAD" : "GET", absl::StrCat("/p", i), {}, "", false);
  }
  ASSERT_TRUE(c.Send(pipelined).ok());
  for (int i = 0; i < 4; ++i) {
    HttpResponse r = c.ReadResponse(i == 2 ? "HEAD" : "GET");
    ASSERT_EQ(r.status, 200) << r.error;
    if (i != 2) {
      EXPECT_NE(r.body.find(absl::StrCat("/p", i)), std::string::npos) << r.body;
    }
  }
  // A HEAD answer declares the GET's length (RFC 9110 9.3.2), as the
  // upstream did; a 204 declares none.
  HttpResponse get = c.Request("GET", "/same?size=777");
  ASSERT_EQ(get.body.size(), 777u);
  HttpResponse head = c.Request("HEAD", "/same?size=777");
  ASSERT_EQ(head.status, 200) << head.error;
  EXPECT_EQ(head.header("content-length"), "777");
  EXPECT_TRUE(head.body.empty());
  HttpResponse no_content = c.Request("GET", "/none?status=204");
  ASSERT_EQ(no_content.status, 204) << no_content.error;
  EXPECT_EQ(no_content.headers.count("content-length"), 0u);
}

TEST_F(ProxyTest, MalformedRequestsGetTheirStatusAndTheProxyKeepsServing) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "400"},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", "400"},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "501"},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "400"},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"},
      {"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n", "400"},
      {"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", "400"},
      {"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"GET / HTTP/1.1\r\n\r\n", "400"},
      {"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      // A fragment is not part of a request target (RFC 9112 3.2; HAProxy's
      // CVE-2023-45539): an upstream would cut what follows the '#'.
      {"GET /a?b=1#frag HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"GET / HTTP/1.1\r\nHost: a\r\nBig: " + std::string(70000, 'x') + "\r\n\r\n", "431"},
  };
  for (const auto& [request, status] : cases) {
    std::string response = SendRaw(listener(), request);
    EXPECT_EQ(response.substr(0, 12), "HTTP/1.1 " + status) << request.substr(0, 80) << "\n" << response;
    EXPECT_NE(response.find("connection: close"), std::string::npos) << response;
  }
  // After a HEAD on the connection, a GET's 431 still has its body (the
  // HEAD flag was the previous request's).
  {
    std::string response = SendRaw(
        listener(), "HEAD /a HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nBig: " +
                        std::string(70000, 'x') + "\r\n\r\n");
    const size_t second = response.find("HTTP/1.1 431");
    ASSERT_NE(second, std::string::npos) << response.substr(0, 400);
    EXPECT_TRUE(absl::EndsWith(response, "}\n")) << response.substr(second);
  }
  // A HEAD gets the head of the error only (RFC 9110 9.3.2).
  for (const std::string request :
       {"HEAD /x HTTP/1.1\r\nHost: a b\r\n\r\n", "HEAD /x HTTP/1.1\r\nHost: a\r\nX: a\r\n f\r\n\r\n"}) {
    std::string response = SendRaw(listener(), request);
    EXPECT_EQ(response.substr(0, 12), "HTTP/1.1 400") << response;
    EXPECT_TRUE(absl::StrContains(response, "content-length: ")) << response;
    EXPECT_TRUE(absl::EndsWith(response, "\r\n\r\n")) << response;
  }
  EXPECT_EQ(HttpGet(listener(), "/after").status, 200);
  EXPECT_GT(proxies_[0]->Stat("sluice_downstream_protocol_errors_total") +
                proxies_[1]->Stat("sluice_downstream_protocol_errors_total"),
            0);
}

TEST_F(ProxyTest, SlowClientGets408) {
  std::string response = SendRaw(listener(), "GET / HTTP/1.1\r\nHost: a\r\n", absl::Seconds(10));
  EXPECT_EQ(response.substr(0, 12), "HTTP/1.1 408") << response;
}

TEST_F(ProxyTest, UpstreamFailures) {
  // Refused: an endpoint nobody listens on.
  ConfigOptions dead = options_;
  dead.endpoints = {PickFreePort()};
  uint64_t v = Apply(dead);
  for (auto& p : proxies_) ASSERT_TRUE(p->WaitForVersion(v));
  HttpResponse r = HttpGet(listener(), "/x");
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_NE(r.body.find("upstream connect failed"), std::string::npos) << r.body;

  // Route timeout: an upstream that never answers gets 504 within the bound.
  ConfigOptions slow = options_;
  slow.route_timeout = "1s";
  v = Apply(slow);
  for (auto& p : proxies_) ASSERT_TRUE(p->WaitForVersion(v));
  absl::Time start = absl::Now();
  HttpConnection kept(listener());
  r = kept.Request("GET", "/x?hang=1");
  EXPECT_EQ(r.status, 504) << r.body << r.error;
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // The request was whole: its connection is kept, as nginx and Envoy keep
  // it (it was closed, and a pipelined request after it lost).
  EXPECT_NE(r.header("connection"), "close");
  r = kept.Request("GET", "/x");
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(kept.connections_opened(), 1);

  // Reset before the response: 502. Closed mid-response: the client sees the cut.
  r = HttpGet(listener(), "/x?reset=1");
  EXPECT_EQ(r.status, 502) << r.error;
  r = HttpGet(listener(), "/x?midway=1");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status, 200);
  // To an HTTP/1.0 client a chunked upstream body is delimited by the close:
  // cut, the connection is reset, so the client cannot take what it got for
  // the whole body (a FIN made it a complete 200 to curl).
  CommandResult http10 = RunCommand({"/usr/bin/curl", "-sS", "-0", "--max-time", "10", "-o",
                                     "/dev/null", "-w", "%{http_code}",
                                     absl::StrCat("http://", listener(), "/x?midway=1&chunked=1")});
  EXPECT_NE(http10.exit_code, 0) << http10.out;
  EXPECT_TRUE(absl::StrContains(http10.err, "reset")) << http10.err;
  // HTTP/1.1: the chunked body without its last chunk.
  CommandResult http11 = RunCommand({"/usr/bin/curl", "-sS", "--max-time", "10", "-o",
                                     "/dev/null",
                                     absl::StrCat("http://", listener(), "/x?midway=1&chunked=1")});
  EXPECT_NE(http11.exit_code, 0) << http11.out;
  // A body the upstream delimits by its close, ended with a reset: cut, not
  // whole (it went out with its last chunk).
  CommandResult reset = RunCommand({"/usr/bin/curl", "-sS", "--max-time", "10", "-o",
                                    "/dev/null",
                                    absl::StrCat("http://", listener(), "/x?close_reset=1")});
  EXPECT_NE(reset.exit_code, 0) << reset.out;
  CommandResult whole = RunCommand({"/usr/bin/curl", "-sS", "--max-time", "10",
                                    absl::StrCat("http://", listener(), "/x?close=1")});
  EXPECT_EQ(whole.exit_code, 0) << whole.err;
  // The upstream's own 503 passes through unchanged.
  r = HttpGet(listener(), "/x?status=503");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.header("x-upstream").empty(), false);
}

TEST_F(ProxyTest, TwentyVersionsUnderLoadWithZeroFailedRequests) {
  std::vector<pid_t> pids;
  for (auto& p : proxies_) pids.push_back(p->process().pid());
  LoadGenerator load({.host_port = listener(), .path = "/load", .concurrency = 4});
  load.Start();
  uint64_t version = 1;
  int extra_port = PickFreePort();
  for (int i = 0; i < 20; ++i) {
    ConfigOptions o = options_;
    o.extra_routes = i + 1;                                   // new routes every time
    o.endpoints.assign(options_.endpoints.begin(),            // changed endpoints
                       options_.endpoints.begin() + 1 + (i % 3));
    if (i >= 5 && i < 10) o.extra_listener_port = extra_port; // a listener added...
    if (i == 10) {                                            // ...and removed
      auto deleted = cp_.Ctl({"delete", "listener", "extra"});
      ASSERT_EQ(deleted.exit_code, 0) << deleted.err;
      version = std::stoull(deleted.out.substr(deleted.out.find("version ") + 8));
      for (auto& p : proxies_) ASSERT_TRUE(p->WaitForVersion(version)) << p->process().Log();
    }
    o.lb_policy = i % 2 ? "LEAST_REQUEST" : "ROUND_ROBIN";
    version = Apply(o);
    ASSERT_NE(version, 0u);
    for (auto& p : proxies_) ASSERT_TRUE(p->WaitForVersion(version)) << p->process().Log();
    if (i == 7) {
      HttpResponse r = HttpGet(absl::StrCat("127.0.0.1:", extra_port), "/extra-3");
      EXPECT_EQ(r.status, 200) << r.error;
      EXPECT_EQ(r.body, "extra 3");
    }
    EXPECT_EQ(HttpGet(listener(), absl::StrCat("/extra-", i)).body, absl::StrCat("extra ", i));
  }
  // The removed listener refuses connections.
  EXPECT_FALSE(HttpGet(absl::StrCat("127.0.0.1:", extra_port), "/extra-1", {}, absl::Seconds(2)).ok());
  absl::SleepFor(absl::Milliseconds(300));
  load.Stop();
  LoadGenerator::Counts counts = load.counts();
  EXPECT_GT(counts.ok, 200u);
  EXPECT_EQ(counts.failed, 0u) << absl::StrJoin(counts.first_errors, "\n");
  for (size_t i = 0; i < proxies_.size(); ++i) {
    EXPECT_TRUE(proxies_[i]->process().Running());
    EXPECT_EQ(proxies_[i]->process().pid(), pids[i]);
  }
  // Every version was ACKed: no proxy has a NACK on record.
  auto listed = cp_.Ctl({"proxies", "-o", "json"});
  EXPECT_NE(listed.out.find("proxy-1"), std::string::npos);
  EXPECT_EQ(listed.out.find("last_nack_error"), std::string::npos) << listed.out;
}

TEST_F(ProxyTest, InvalidConfigIsRejectedAndTrafficIsUnchanged) {
  // Rejected by the control plane: nothing reaches the proxies.
  std::string bad = WriteConfig(
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n  - domains: ['*']\n"
      "    routes: [{match: {regex: '(['}, route: {cluster: backends}}]\n");
  auto r = cp_.Ctl({"apply", "-f", bad});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("invalid RE2"), std::string::npos) << r.err;
  // Accepted by the control plane but impossible on the proxies (the port is
  // taken by another process): NACKed, and the last good config keeps serving.
  UpstreamServer squatter("squatter");
  ASSERT_TRUE(squatter.ok());
  ConfigOptions o = options_;
  o.extra_listener_port = squatter.port();
  uint64_t v = Apply(o);
  ASSERT_NE(v, 0u);
  // Every proxy NACKs version v, naming the listener it cannot bind.
  auto refused = [&](uint64_t version) {
    return WaitFor(
        [&] {
          auto p = cp_.Ctl({"proxies"});
          return p.out.find(absl::StrCat("v", version, ": Listener \"extra\": cannot bind")) !=
                 std::string::npos;
        },
        absl::Seconds(20));
  };
  ASSERT_TRUE(refused(v)) << cp_.Ctl({"proxies"}).out;
  for (auto& p : proxies_) EXPECT_EQ(p->ReadyVersion(), 1u);
  EXPECT_EQ(HttpGet(listener(), "/still").status, 200);
  EXPECT_GE(proxies_[0]->Stat("sluice_configs_rejected_total"), 1);
  // A later change without --wait says that the proxies refuse an earlier
  // version (and so take none after it). Before: nothing, exit 0.
  auto later = cp_.Ctl({"apply", "-f", WriteConfig("kind: Cluster\nname: later\nspec:\n  "
                                                   "endpoints: [{address: 127.0.0.1, port: 1}]\n")});
  EXPECT_EQ(later.exit_code, 0) << later.out << later.err;
  // (Version v, or already this one, which still holds the listener.)
  EXPECT_TRUE(absl::StrContains(later.err, absl::StrCat("refuses version ", v, " (")) ||
              absl::StrContains(later.err, absl::StrCat("refuses version ", v + 1, " (")))
      << later.err;
  EXPECT_TRUE(absl::StrContains(later.err, "(Listener \"extra\": cannot bind")) << later.err;
  EXPECT_TRUE(absl::StrContains(later.err, "takes no later version while the refused part stays"))
      << later.err;
  // The same file again changes nothing, and says so too. Before: "no
  // change", exit 0, no note.
  auto again = cp_.Ctl(
      {"apply", "-f",
       WriteConfig("kind: Cluster\nname: later\nspec:\n  endpoints: [{address: 127.0.0.1, "
                   "port: 1}]\n")});
  EXPECT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_TRUE(absl::StrContains(again.out, "no change")) << again.out;
  EXPECT_TRUE(absl::StrContains(again.err, "takes no later version while the refused part stays"))
      << again.err;
  // The control plane's own port: before, gRPC's SO_REUSEPORT let the
  // proxies bind it too, and the operators' connections went to them
  // (sluicectl was locked out). Now it is a port another process holds.
  const std::string cp_address = cp_.address();
  o.extra_listener_port = std::stoi(cp_address.substr(cp_address.rfind(':') + 1));
  v = Apply(o);
  ASSERT_NE(v, 0u);
  ASSERT_TRUE(refused(v)) << cp_.Ctl({"proxies"}).out;
  for (int i = 0; i < 20; ++i) {
    auto got = cp_.Ctl({"get", "listener", "extra"});
    ASSERT_EQ(got.exit_code, 0) << i << ": " << got.err;
  }
  // Removing the impossible listener gives a version the proxies take.
  auto deleted = cp_.Ctl({"delete", "listener", "extra"});
  ASSERT_EQ(deleted.exit_code, 0) << deleted.err;
  v = std::stoull(deleted.out.substr(deleted.out.find("version ") + 8));
  for (auto& p : proxies_) EXPECT_TRUE(p->WaitForVersion(v)) << p->process().Log();
  // apply --wait says which proxies refused the version, and why: exit 1
  // (before, an apply every proxy refused exited 0 without a word).
  o.extra_listener_port = squatter.port();
  auto waited = cp_.Ctl({"apply", "-f", WriteConfig(ConfigYaml(o)), "--wait", "--timeout", "20s"});
  EXPECT_EQ(waited.exit_code, 1) << waited.out << waited.err;
  EXPECT_TRUE(absl::StrContains(waited.out, "taken by 0 of 2 proxies, refused by 2")) << waited.out;
  EXPECT_TRUE(absl::StrContains(waited.err, "refused version")) << waited.err;
  EXPECT_TRUE(absl::StrContains(waited.err, "Listener \"extra\": cannot bind")) << waited.err;
  // The cause fixed (the port freed), the same apply --wait again changes
  // nothing and waits for the proxies to take the version when it is
  // offered again (--nack-retry) (before: the old refusals ended the wait
  // at once, exit 1).
  squatter.process().Signal(SIGKILL);
  squatter.process().Wait(absl::Seconds(5));
  waited = cp_.Ctl({"apply", "-f", WriteConfig(ConfigYaml(o)), "--wait", "--timeout", "30s"});
  EXPECT_EQ(waited.exit_code, 0) << waited.out << waited.err;
  EXPECT_TRUE(absl::StrContains(waited.out, "no change")) << waited.out;
  EXPECT_TRUE(absl::StrContains(waited.out, "taken by 2 of 2 proxies")) << waited.out;
  // And a version every proxy takes: exit 0.
  waited = cp_.Ctl({"delete", "listener", "extra", "--wait"});
  EXPECT_EQ(waited.exit_code, 0) << waited.out << waited.err;
  EXPECT_TRUE(absl::StrContains(waited.out, "taken by 2 of 2 proxies")) << waited.out;
}

// A proxy connected when --wait began that drops off before taking the
// version (a partition: it keeps serving its last config) counts as not
// having taken it: exit 1, named. Before: it left the count ("taken by 1
// of 1 proxies", exit 0). Here it shares its node id with another proxy,
// which takes the version: still counted apart.
TEST_F(ProxyTest, WaitCountsAProxyThatDisconnectsBeforeTakingTheVersion) {
  auto waited = ApplyWaitingWithAStoppedDuplicate("5s", [&] { KillProxy(2); });
  EXPECT_EQ(waited.exit_code, 1) << waited.out << waited.err;
  EXPECT_TRUE(absl::StrContains(waited.out, "taken by 2 of 3 proxies, 1 disconnected"))
      << waited.out;
  EXPECT_TRUE(absl::StrContains(waited.err, "disconnected before taking version")) << waited.err;
}

// The other way round: of two proxies sharing a node id, the one that took
// the version leaves and the pending one then takes it: every proxy took
// it, exit 0 (counting connections per id, the departure was taken for the
// pending one's).
TEST_F(ProxyTest, WaitTellsWhichProxyOfASharedIdLeft) {
  auto waited = ApplyWaitingWithAStoppedDuplicate("20s", [&] {
    KillProxy(1);
    // The control plane has seen it go (else it is still listed, as done).
    EXPECT_TRUE(WaitFor(
        [&] {
          const std::string rows = cp_.Ctl({"proxies"}).out;
          return rows.find("proxy-2") == rows.rfind("proxy-2");
        },
        absl::Seconds(10)));
    proxies_[2]->process().Signal(SIGCONT);
  });
  EXPECT_EQ(waited.exit_code, 0) << waited.out << waited.err;
  EXPECT_TRUE(absl::StrContains(waited.out, "taken by 2 of 2 proxies")) << waited.out;
}

// A pending proxy of a shared id leaves while the other one (which had
// taken the version) restarts under that id: the restart stands for the
// one that had taken it, not for the one that left (exit 1, named).
TEST_F(ProxyTest, WaitDoesNotLetARestartHideAProxyThatLeft) {
  auto waited = ApplyWaitingWithAStoppedDuplicate("6s", [&] {
    KillProxy(2);
    KillProxy(1);  // and the other proxy-2 restarts
    proxies_[1] = std::make_unique<Proxy>(cp_.address(), "proxy-2");
  });
  EXPECT_EQ(waited.exit_code, 1) << waited.out << waited.err;
  EXPECT_TRUE(absl::StrContains(waited.out, "taken by 2 of 3 proxies, 1 disconnected"))
      << waited.out;
}

TEST_F(ProxyTest, ControlPlaneKilledUnderLoad) {
  LoadGenerator load({.host_port = listener(), .path = "/load", .concurrency = 4});
  load.Start();
  absl::SleepFor(absl::Milliseconds(300));
  cp_.Kill();
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(HttpGet(listener(), "/while-down").status, 200);
  ASSERT_TRUE(cp_.Restart()) << cp_.process().Log();
  // Both proxies reconnect and hold the current version.
  ASSERT_TRUE(WaitFor([&] {
    auto p = cp_.Ctl({"proxies"});
    return p.out.find("proxy-1") != std::string::npos && p.out.find("proxy-2") != std::string::npos;
  }, absl::Seconds(30))) << cp_.Ctl({"proxies"}).out;
  ConfigOptions o = options_;
  o.extra_routes = 2;
  uint64_t v = Apply(o);
  for (auto& p : proxies_) EXPECT_TRUE(p->WaitForVersion(v));
  load.Stop();
  LoadGenerator::Counts counts = load.counts();
  EXPECT_GT(counts.ok, 100u);
  EXPECT_EQ(counts.failed, 0u) << absl::StrJoin(counts.first_errors, "\n");
}

TEST_F(ProxyTest, ProxyRestartedWhileControlPlaneIsDownServesItsLastConfig) {
  ConfigOptions o = options_;
  o.extra_routes = 3;
  uint64_t v = Apply(o);
  for (auto& p : proxies_) ASSERT_TRUE(p->WaitForVersion(v));
  cp_.Kill();
  auto status = proxies_[0]->Stop();
  ASSERT_TRUE(status.has_value());
  ASSERT_TRUE(proxies_[0]->Restart()) << proxies_[0]->process().Log();
  ASSERT_TRUE(proxies_[0]->WaitForVersion(v)) << proxies_[0]->process().Log();
  // Only the restarted proxy may answer: stop the other one.
  proxies_[1]->Stop();
  HttpResponse r = HttpGet(listener(), "/extra-2");
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "extra 2");
}

TEST_F(ProxyTest, SigtermDrainsInFlightRequests) {
  // Only proxy-1 stays, so the slow request surely lands on it.
  proxies_[1]->Stop();
  HttpConnection c(listener());
  ASSERT_TRUE(c.Send(FormatRequest(listener(), "GET", "/slow?delay_ms=1500", {}, "", false)).ok());
  absl::SleepFor(absl::Milliseconds(300));
  proxies_[0]->process().Signal(SIGTERM);
  EXPECT_TRUE(WaitFor([&] { return proxies_[0]->Admin("/ready").first == 503 ||
                                   !proxies_[0]->process().Running(); },
                      absl::Seconds(5)));
  HttpResponse r = c.ReadResponse();
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.header("connection"), "close");
  auto status = proxies_[0]->process().Wait(absl::Seconds(20));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
}

// Appends what arrives on `fd` to `got` until it holds `needle` after
// `from`; false when 10 s pass or the peer closes first.
bool ReadUntil(int fd, std::string* got, const std::string& needle, size_t from = 0) {
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (got->find(needle, from) == std::string::npos) {
    pollfd p = {fd, POLLIN, 0};
    int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (ms <= 0 || poll(&p, 1, ms) <= 0) return false;
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return false;
    got->append(buf, static_cast<size_t>(n));
  }
  return true;
}


// Opens a connection to `port` and starts a response that streams for
// about 1.2 s (its head read into `*got`, without Connection: close); -1
// when the connection or the head fails.
int StartStreamingResponse(int port, std::string* got) {
  int fd = ConnectLoopback(port);
  if (fd < 0) return -1;
  const std::string first = "GET /s?chunked=1&gap_ms=400 HTTP/1.1\r\nHost: t\r\n\r\n";
  if (send(fd, first.data(), first.size(), 0) != static_cast<ssize_t>(first.size()) ||
      !ReadUntil(fd, got, "\r\n\r\n")) {
    close(fd);
    return -1;
  }
  return fd;
}

// Reads the rest of the streaming response on `fd`, sends the next request
// and returns its response head ("" when it does not come).
std::string NextResponseHead(int fd, std::string* got) {
  if (!ReadUntil(fd, got, "\r\n0\r\n\r\n")) return "";
  const size_t second_at = got->size();
  const std::string second = "GET /next HTTP/1.1\r\nHost: t\r\n\r\n";
  if (send(fd, second.data(), second.size(), 0) != static_cast<ssize_t>(second.size()) ||
      !ReadUntil(fd, got, "\r\n\r\n", second_at)) {
    return "";
  }
  return got->substr(second_at);
}

// A drain that begins while a response streams, its head gone without
// Connection: close: the client may send its next request as soon as the
// response ends, so the connection stays for it (that response says
// close). Before: it was closed after the response and the next request,
// read or not, was never answered.
TEST_F(ProxyTest, ADrainAfterTheHeadWentLetsTheNextRequestBeAnswered) {
  proxies_[1]->Stop();
  std::string got;
  int fd = StartStreamingResponse(options_.listener_port, &got);
  ASSERT_GE(fd, 0) << got;
  EXPECT_FALSE(absl::StrContains(got, "connection: close")) << got;
  proxies_[0]->process().Signal(SIGTERM);
  ASSERT_TRUE(WaitFor([&] { return proxies_[0]->Admin("/ready").first == 503; },
                      absl::Seconds(5)));
  std::string reply = NextResponseHead(fd, &got);
  EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 200")) << reply << got;
  EXPECT_TRUE(absl::StrContains(reply, "connection: close")) << reply;
  close(fd);
  auto status = proxies_[0]->process().Wait(absl::Seconds(20));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
}

// A version that arrives while the proxy drains does not open listeners
// nobody accepts on: a new listener's port refuses connections (a balancer
// retries elsewhere) instead of completing handshakes into a dead backlog.
TEST_F(ProxyTest, AListenerAddedDuringADrainRefusesConnections) {
  proxies_[1]->Stop();
  std::string got;
  int fd = StartStreamingResponse(options_.listener_port, &got);  // keeps the drain going
  ASSERT_GE(fd, 0) << got;
  proxies_[0]->process().Signal(SIGTERM);
  ASSERT_TRUE(WaitFor([&] { return proxies_[0]->Admin("/ready").first == 503; },
                      absl::Seconds(5)));
  ConfigOptions o = options_;
  o.extra_listener_port = PickFreePort();
  uint64_t v = Apply(o);
  // (/ready says 503 while draining: the version is read from the gauge.)
  ASSERT_TRUE(WaitFor(
      [&] { return proxies_[0]->Stat("sluice_config_version") == static_cast<int64_t>(v); },
      absl::Seconds(10)))
      << proxies_[0]->process().Log();
  int extra = ConnectLoopback(o.extra_listener_port);
  EXPECT_LT(extra, 0) << "a connection to the new listener was taken into its backlog";
  if (extra >= 0) close(extra);
  close(fd);
  auto status = proxies_[0]->process().Wait(absl::Seconds(20));
  ASSERT_TRUE(status.has_value());
}

// A listener removed while a keep-alive connection on it is open: the
// request that comes next on it is served by the last config that had the
// listener, and says Connection: close (Envoy drains a listener so).
// Before: 503 "listener removed".
TEST_F(ProxyTest, ARequestOnARemovedListenersOpenConnectionIsServed) {
  ConfigOptions o = options_;
  o.extra_listener_port = PickFreePort();
  uint64_t v = Apply(o);
  for (auto& p : proxies_) ASSERT_TRUE(p->WaitForVersion(v));
  // A response streaming while the listener goes (its head without close).
  std::string got;
  int fd = StartStreamingResponse(o.extra_listener_port, &got);
  ASSERT_GE(fd, 0) << got;
  auto deleted = cp_.Ctl({"delete", "listener", "extra"});
  ASSERT_EQ(deleted.exit_code, 0) << deleted.err;
  v = std::stoull(deleted.out.substr(deleted.out.find("version ") + 8));
  for (auto& p : proxies_) ASSERT_TRUE(p->WaitForVersion(v));
  // New connections to the port are refused at once, though the open one
  // still holds the config that had the listener (and its sockets).
  int refused = ConnectLoopback(o.extra_listener_port);
  EXPECT_EQ(refused, -1);
  if (refused >= 0) close(refused);
  std::string reply = NextResponseHead(fd, &got);
  EXPECT_TRUE(absl::StartsWith(reply, "HTTP/1.1 200")) << reply << got;
  EXPECT_TRUE(absl::StrContains(reply, "connection: close")) << reply;
  close(fd);
  // The listener back on the same port: new sockets, served.
  v = Apply(o);
  for (auto& p : proxies_) ASSERT_TRUE(p->WaitForVersion(v));
  HttpResponse back = HttpGet(absl::StrCat("127.0.0.1:", o.extra_listener_port), "/back");
  EXPECT_EQ(back.status, 200) << back.error;
}

// Out of descriptors, the admin endpoint pauses accepting (50 ms doubling
// to 1 s) and says so once, as the listeners do. Before, libevent retried
// at once for as long as the socket was readable: 900,000 log lines and a
// busy core in 3 s, from one health check.
TEST_F(ProxyTest, TheAdminEndpointOutOfDescriptorsPausesInsteadOfSpinning) {
  proxies_[1]->Stop();
  const pid_t pid = proxies_[0]->process().pid();
  rlimit before;
  ASSERT_EQ(prlimit(pid, RLIMIT_NOFILE, nullptr, &before), 0) << strerror(errno);
  // No descriptor can be opened any more (the soft limit only: it is
  // raised again below).
  rlimit none = {1, before.rlim_max};
  ASSERT_EQ(prlimit(pid, RLIMIT_NOFILE, &none, nullptr), 0) << strerror(errno);
  const std::string admin = proxies_[0]->admin_address();
  const int admin_fd = ConnectLoopback(std::stoi(admin.substr(admin.rfind(':') + 1)));
  ASSERT_GE(admin_fd, 0);
  const std::string ready = "GET /ready HTTP/1.1\r\nHost: a\r\n\r\n";
  ASSERT_EQ(send(admin_fd, ready.data(), ready.size(), 0), static_cast<ssize_t>(ready.size()));
  EXPECT_TRUE(WaitFor([&] {
    return absl::StrContains(proxies_[0]->process().Log(), "admin endpoint: accept failed");
  }, absl::Seconds(10))) << proxies_[0]->process().Log().substr(0, 2000);
  // A second of descriptors running out: a few tries, not a flood.
  const absl::Time until = absl::Now() + absl::Seconds(1);
  while (absl::Now() < until) absl::SleepFor(absl::Milliseconds(50));
  const std::string log = proxies_[0]->process().Log();
  EXPECT_FALSE(absl::StrContains(log, "Error from accept() call")) << log.substr(0, 2000);
  EXPECT_LT(log.size(), 100000u);
  // Descriptors back: the health check is answered.
  ASSERT_EQ(prlimit(pid, RLIMIT_NOFILE, &before, nullptr), 0) << strerror(errno);
  std::string got;
  EXPECT_TRUE(ReadUntil(admin_fd, &got, "\r\n\r\n")) << got;
  EXPECT_TRUE(absl::StartsWith(got, "HTTP/1.1 200")) << got;
  close(admin_fd);
}

TEST_F(ProxyTest, AdminStatsAndConfigDump) {
  ASSERT_EQ(HttpGet(listener(), "/healthz").status, 200);
  int64_t total = 0;
  for (auto& p : proxies_) {
    auto [status, body] = p->Admin("/config_dump");
    EXPECT_EQ(status, 200);
    EXPECT_NE(body.find("{\"version\":1,"), std::string::npos) << body;
    EXPECT_NE(body.find("\"backends\""), std::string::npos);
    EXPECT_EQ(p->Stat("sluice_config_version"), 1);
    total += std::max<int64_t>(0, p->Stat(
        "sluice_route_requests_total{route_table=\"main\",route=\"all/0\",virtual_host=\"all\","
        "status_class=\"2xx\"}"));
  }
  EXPECT_EQ(total, 1);
  // Other methods than GET and HEAD: 405 with Allow (it was libevent's 501).
  HttpResponse post = HttpRequest(proxies_[0]->admin_address(), "POST", "/metrics", {}, "x");
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(post.header("allow"), "GET, HEAD");
  // HEAD: the GET's length and no body, so a pipelined request's answer
  // after it reads right (before: the body came, in front of it).
  const std::string admin = proxies_[0]->admin_address();
  const std::string ready = HttpGet(admin, "/ready").body;
  ASSERT_FALSE(ready.empty());
  HttpConnection c(admin);
  ASSERT_TRUE(c.Send(FormatRequest(admin, "HEAD", "/ready", {}, "", false) +
                     FormatRequest(admin, "GET", "/livez", {}, "", false))
                  .ok());
  HttpResponse head = c.ReadResponse("HEAD");
  EXPECT_EQ(head.status, 200) << head.error;
  EXPECT_EQ(head.header("content-length"), absl::StrCat(ready.size()));
  EXPECT_TRUE(head.body.empty()) << head.body;
  HttpResponse live = c.ReadResponse("GET");
  EXPECT_EQ(live.status, 200) << live.error << live.body;
  // Framing read as strictly as the listeners read it (libevent's server
  // took these): two Content-Lengths, no Host, and a CONNECT's 405 has a
  // length (it had none, and the client waited for a close).
  std::string answer = SendRaw(admin, "GET /ready HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                                      "Content-Length: 2\r\n\r\nab");
  EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 400")) << answer;
  answer = SendRaw(admin, "GET /ready HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 400")) << answer;
  answer = SendRaw(admin, "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 400")) << answer;  // not origin-form
  HttpResponse options = HttpRequest(admin, "OPTIONS", "/ready", {}, "");
  EXPECT_EQ(options.status, 405);
  EXPECT_EQ(options.header("allow"), "GET, HEAD");
  EXPECT_FALSE(options.header("content-length").empty());
}

// The admin endpoint bounds its connections and the time a request head
// may take. Before, libevent's server restarted its 10 s timeout at every
// byte and took any number of connections: 450 clients sending a header
// line every 4 s held every descriptor, and the data path with them.
TEST_F(ProxyTest, TheAdminEndpointBoundsSlowClients) {
  const std::string admin = proxies_[0]->admin_address();
  const int port = std::stoi(admin.substr(admin.rfind(':') + 1));
  const std::string partial = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
  // More idle clients than the endpoint keeps (128).
  std::vector<int> idle;
  for (int i = 0; i < 140; ++i) {
    const int fd = ConnectLoopback(port);
    ASSERT_GE(fd, 0) << i;
    ASSERT_EQ(send(fd, partial.data(), partial.size(), 0), static_cast<ssize_t>(partial.size()));
    idle.push_back(fd);
  }
  // The oldest are closed to make room.
  pollfd first = {idle[0], POLLIN, 0};
  EXPECT_EQ(poll(&first, 1, 5000), 1);
  // One client that sends a header line every 500 ms, for ever.
  const int trickle = ConnectLoopback(port);
  ASSERT_GE(trickle, 0);
  ASSERT_EQ(send(trickle, partial.data(), partial.size(), 0), static_cast<ssize_t>(partial.size()));
  const absl::Time trickle_start = absl::Now();
  // A probe still gets its answer at once: the oldest waiting connections
  // make room.
  const absl::Time asked = absl::Now();
  HttpResponse ready = HttpGet(admin, "/ready", {}, absl::Seconds(5));
  EXPECT_EQ(ready.status, 200) << ready.error;
  EXPECT_LT(absl::Now() - asked, absl::Seconds(2));
  EXPECT_EQ(HttpGet(listener(), "/healthz").status, 200);
  // The trickling client is closed within the request timeout (10 s) of
  // its start, however often it sends.
  bool closed = false;
  while (!closed && absl::Now() - trickle_start < absl::Seconds(20)) {
    const std::string line = "X-More: 1\r\n";
    if (send(trickle, line.data(), line.size(), MSG_NOSIGNAL) < 0) {
      closed = true;
      break;
    }
    pollfd p = {trickle, POLLIN, 0};
    if (poll(&p, 1, 500) == 1) {
      char byte;
      closed = recv(trickle, &byte, 1, 0) <= 0;
    }
  }
  EXPECT_TRUE(closed);
  EXPECT_LT(absl::Now() - trickle_start, absl::Seconds(15));
  close(trickle);
  for (int fd : idle) close(fd);
}

// The proxy's worker threads (named sluice-w<N>) and the CPUs each may run on
// (the Cpus_allowed_list line of its /proc status), by name.
std::map<std::string, std::string> WorkerThreads(pid_t pid) {
  std::map<std::string, std::string> threads;
  const std::string task = absl::StrCat("/proc/", pid, "/task");
  DIR* dir = opendir(task.c_str());
  if (dir == nullptr) return threads;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::string comm;
    std::getline(std::ifstream(absl::StrCat(task, "/", entry->d_name, "/comm")), comm);
    if (!absl::StartsWith(comm, "sluice-w")) continue;
    std::ifstream status(absl::StrCat(task, "/", entry->d_name, "/status"));
    for (std::string line; std::getline(status, line);) {
      if (absl::StartsWith(line, "Cpus_allowed_list:")) {
        threads[comm] = std::string(absl::StripAsciiWhitespace(line.substr(18)));
      }
    }
  }
  closedir(dir);
  return threads;
}

std::vector<int> CpusOfThisThread() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

// The io_uring instances a process holds (its dispatchers' send rings).
int IoUringFds(int pid) {
  int rings = 0;
  const std::string dir = absl::StrCat("/proc/", pid, "/fd");
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return -1;
  while (dirent* e = readdir(d)) {
    char target[256];
    const std::string link = dir + "/" + e->d_name;
    const ssize_t n = readlink(link.c_str(), target, sizeof(target) - 1);
    if (n > 0 && std::string_view(target, n) == "anon_inode:[io_uring]") ++rings;
  }
  closedir(d);
  return rings;
}

// --io-uring auto (the default) batches each worker's sends through a ring
// of its own; off makes no ring. Either way every response arrives whole
// (with the loops yielding to local peers, the default, and without).
TEST_F(ProxyTest, IoUringAutoGivesEachLoopARingAndOffNone) {
  for (auto& p : proxies_) ASSERT_TRUE(p->Stop().has_value());
  const bool kernel_allows = event::Dispatcher::BatchSendsUnavailable().empty();
  for (const std::string mode : {"auto", "off"}) {
    Proxy proxy(cp_.address(), "uring-" + mode, 2, "",
                {"--io-uring", mode, "--yield-to-local-peers", mode == "auto" ? "on" : "off"});
    ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
    ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
    for (int i = 0; i < 20; ++i) {
      HttpResponse r = HttpGet(listener(), i % 2 ? "/ring?size=3000000" : "/ring");
      ASSERT_TRUE(r.ok()) << r.error;
      EXPECT_EQ(r.status, 200);
      if (i % 2) EXPECT_EQ(r.body, std::string(3000000, 'x')) << mode;
    }
    const int rings = IoUringFds(proxy.process().pid());
    if (mode == "off" || !kernel_allows) {
      EXPECT_EQ(rings, 0) << mode;
    } else {
      // The main loop and two workers, at least.
      EXPECT_GE(rings, 3) << proxy.process().Log();
    }
    ASSERT_TRUE(proxy.Stop().has_value());
  }
  Proxy bad(cp_.address(), "bad-uring", 1, "", {"--io-uring", "on"});
  EXPECT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.process().Log(), "--io-uring must be off or auto, not 'on'"))
      << bad.process().Log();
  Proxy bad_yield(cp_.address(), "bad-yield", 1, "", {"--yield-to-local-peers", "auto"});
  EXPECT_FALSE(bad_yield.ok());
  EXPECT_TRUE(absl::StrContains(bad_yield.process().Log(),
                                "--yield-to-local-peers must be on or off, not 'auto'"))
      << bad_yield.process().Log();
}

// In a container whose seccomp profile refuses io_uring (containerd's and
// Docker's defaults), the proxy says so once and serves, sending and reading one by one.
TEST_F(ProxyTest, AProxyRefusedIoUringSaysSoAndServes) {
  for (auto& p : proxies_) ASSERT_TRUE(p->Stop().has_value());
  const std::string state_dir = MakeTempDir("no-io-uring");
  Process proxy(RunfilePath("tests/harness/no_io_uring"),
                {RunfilePath("dataplane/server/sluice-proxy"), "--control-plane", cp_.address(),
                 "--node-id", "no-io-uring", "--group", "test", "--admin", "127.0.0.1:0",
                 "--state-dir", state_dir, "--workers", "2", "--log-level", "debug"},
                state_dir + ".log");
  ASSERT_TRUE(proxy.WaitForLogLine("admin on 127.0.0.1:", absl::Seconds(30))) << proxy.Log();
  EXPECT_TRUE(absl::StrContains(
      proxy.Log(),
      "io_uring unavailable (io_uring_setup: Operation not permitted): each send and read is "
      "its own system call"))
      << proxy.Log();
  HttpResponse r;
  ASSERT_TRUE(WaitFor(
      [&] {
        r = HttpGet(listener(), "/refused?size=2000000");
        return r.ok() && r.status == 200;
      },
      absl::Seconds(20)))
      << r.error << " " << r.status << "\n" << proxy.Log();
  EXPECT_EQ(r.body, std::string(2000000, 'x'));
  for (int i = 0; i < 10; ++i) {
    r = HttpGet(listener(), "/refused");
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.status, 200);
  }
  EXPECT_EQ(IoUringFds(proxy.pid()), 0);
}

TEST_F(ProxyTest, CpuAffinityAutoPinsEachWorkerToItsOwnCpu) {
  for (auto& p : proxies_) ASSERT_TRUE(p->Stop().has_value());
  const std::vector<int> cpus = CpusOfThisThread();
  ASSERT_FALSE(cpus.empty());
  Proxy pinned(cp_.address(), "pinned", 3, "", {"--cpu-affinity", "auto"});
  ASSERT_TRUE(pinned.ok()) << pinned.process().Log();
  ASSERT_TRUE(pinned.WaitForVersion(1)) << pinned.process().Log();
  const std::map<std::string, std::string> threads = WorkerThreads(pinned.process().pid());
  ASSERT_EQ(threads.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(threads.at(absl::StrCat("sluice-w", i)),
              std::to_string(cpus[i % cpus.size()]))
        << "worker " << i;
  }
  for (int i = 0; i < 20; ++i) {
    HttpResponse r = HttpGet(listener(), "/pinned");
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.status, 200);
  }
  EXPECT_GE(pinned.Stat("sluice_downstream_requests_total"), 20);

  Proxy bad(cp_.address(), "bad-affinity", 1, "", {"--cpu-affinity", "yes"});
  EXPECT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.process().Log(), "--cpu-affinity must be off or auto"))
      << bad.process().Log();
  // A node id the control plane would refuse is refused at start (before:
  // a stream retried forever with INVALID_ARGUMENT).
  Proxy long_id(cp_.address(), std::string(300, 'n'), 1, MakeTempDir("long-id"));
  EXPECT_FALSE(long_id.ok());
  EXPECT_TRUE(absl::StrContains(long_id.process().Log(), "--node-id is 300 bytes; at most 256"))
      << long_id.process().Log();
}

// Every flag is checked before anything starts: a bad one found after the
// held config was served left listeners bound (taking connections a
// replica sharing the port should have had, then closing them) and the
// state dir locked. Each refusal is one line naming the flag, exit 2.
TEST_F(ProxyTest, EveryFlagIsCheckedBeforeAnythingStarts) {
  const std::string state = MakeTempDir("flags-state");
  {
    Proxy holder(cp_.address(), "flags-holder", 1, state);
    ASSERT_TRUE(holder.ok()) << holder.process().Log();
    ASSERT_TRUE(holder.WaitForVersion(1)) << holder.process().Log();
    ASSERT_TRUE(holder.Stop().has_value());
  }
  const std::string binary = RunfilePath("dataplane/server/sluice-proxy");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--report-interval", "5ms"}, "--report-interval must be"},
      {{"--rate-limit-report-interval", "1h"}, "--rate-limit-report-interval must be"},
      {{"--admin", "127.0.0.1"}, "sluice-proxy: --admin 127.0.0.1: expected HOST:PORT"},
      {{"--admin", "127.0.0.1:65536"}, "sluice-proxy: --admin 127.0.0.1:65536: the port must"},
      {{"--admin-token-file", state + "/nope"}, "--admin-token-file"},
      {{"--max-memory-mb", "8796093022208"}, "--max-memory-mb must be 1..1048576"},
      {{"--drain-timeout", "100000h"}, "--drain-timeout is at most 1h"},
      {{"stray"}, "unexpected argument 'stray'"},
  };
  for (const auto& [extra, expected] : cases) {
    std::vector<std::string> argv = {binary, "--control-plane", cp_.address(), "--node-id",
                                     "flags", "--state-dir", state, "--log-level", "info"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    CommandResult r = RunCommand(argv);
    EXPECT_EQ(r.exit_code, 2) << expected << "\n" << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, expected)) << r.err;
    EXPECT_FALSE(absl::StrContains(r.err, "serving config version")) << r.err;
    // One line and where the flags are (the whole usage buried the error;
    // "----admin" named the flag with four dashes).
    EXPECT_TRUE(absl::EndsWith(r.err, "\n(sluice-proxy --help lists the flags)\n")) << r.err;
    EXPECT_FALSE(absl::StrContains(r.err, "----")) << r.err;
    EXPECT_FALSE(absl::StrContains(r.err, "usage:")) << r.err;
  }
  // A control-plane address gRPC would misread (99999 as 34463), a node id
  // that would forge a line in the control plane's log.
  for (const auto& [address, node, expected] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"127.0.0.1:99999", "flags", "--control-plane"},
           {"127.0.0.1", "flags", "sluice-proxy: --control-plane 127.0.0.1: expected HOST:PORT"},
           {cp_.address(), "a\nb", "--node-id has a control character"}}) {
    CommandResult r = RunCommand({binary, "--control-plane", address, "--node-id", node});
    EXPECT_EQ(r.exit_code, 2) << address << "\n" << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, expected)) << r.err;
  }
}

TEST_F(ProxyTest, TheDefaultWorkerCountIsTheCpusTheProxyMayUse) {
  // Run the proxy on one CPU (the affinity a child inherits, as a cpuset
  // would give it): it starts one worker, unpinned within that set.
  const std::vector<int> cpus = CpusOfThisThread();
  ASSERT_FALSE(cpus.empty());
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpus.back(), &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
  Proxy single(cp_.address(), "one-cpu", 0);
  cpu_set_t all;
  CPU_ZERO(&all);
  for (int cpu : cpus) CPU_SET(cpu, &all);
  ASSERT_EQ(sched_setaffinity(0, sizeof(all), &all), 0);
  ASSERT_TRUE(single.ok()) << single.process().Log();
  const std::map<std::string, std::string> threads = WorkerThreads(single.process().pid());
  ASSERT_EQ(threads.size(), 1u) << single.process().Log();
  EXPECT_EQ(threads.begin()->second, std::to_string(cpus.back()));
  EXPECT_TRUE(absl::StrContains(single.process().Log(), "1 workers (1 CPUs allowed"))
      << single.process().Log();
}

// --drain-delay: after SIGTERM /ready fails at once while the listener
// still accepts and serves (a balancer outside Kubernetes, with no preStop
// pause, sees /ready fail before connections are refused); then the drain.
TEST(DrainDelayTest, ReadyFailsFirstWhileTheListenerStillServes) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  const int port = PickFreePort();
  const std::string dir = MakeTempDir("drain-delay");
  std::ofstream(dir + "/config.yaml") << absl::StrCat(
      "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
      "      routes:\n        - match: {prefix: /}\n"
      "          direct_response: {status: 200, body: ok}\n"
      "---\nkind: Listener\nname: l\nspec: {address: 127.0.0.1, port: ",
      port, ", route_table: main}\n");
  ASSERT_EQ(cp.Ctl({"apply", "-f", dir + "/config.yaml"}).exit_code, 0);
  Proxy proxy(cp.address(), "delay-proxy", 1, "",
              {"--drain-delay", "3s", "--drain-timeout", "5s"});
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  const std::string address = absl::StrCat("127.0.0.1:", port);
  ASSERT_EQ(HttpGet(address, "/").status, 200);
  proxy.process().Signal(SIGTERM);
  ASSERT_TRUE(WaitFor([&] { return proxy.Admin("/ready").first == 503; }, absl::Seconds(2)))
      << proxy.process().Log();
  // Within the delay: a new connection is still served.
  HttpResponse during = HttpGet(address, "/");
  EXPECT_EQ(during.status, 200) << during.error << proxy.process().Log();
  // Then the drain: the listener refuses, and the idle proxy exits.
  EXPECT_TRUE(WaitFor([&] { return HttpGet(address, "/", {}, absl::Seconds(1)).status == 0; },
                      absl::Seconds(10)))
      << proxy.process().Log();
  EXPECT_EQ(proxy.process().Wait(absl::Seconds(10)), std::optional<int>(0))
      << proxy.process().Log();
  EXPECT_TRUE(absl::StrContains(proxy.process().Log(), "(--drain-delay), then draining"))
      << proxy.process().Log();
}

// At the drain timeout a request still waiting for its upstream is
// answered 503, HTTP/1 and HTTP/2 alike (it was cut: curl said 000, and a
// client could not tell a drain from a crash); before, only gRPC calls were.
TEST(DrainDelayTest, ARequestOpenAtTheDrainTimeoutIsAnswered503) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  UpstreamServer upstream("hang");
  ASSERT_TRUE(upstream.ok());
  const int port = PickFreePort();
  const std::string dir = MakeTempDir("drain-503");
  std::ofstream(dir + "/config.yaml") << absl::StrCat(
      "kind: Cluster\nname: c\nspec: {endpoints: [{address: 127.0.0.1, port: ", upstream.port(),
      "}]}\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
      "    - domains: ['*']\n      routes:\n        - match: {prefix: /}\n"
      "          route: {cluster: c, timeout: 0s}\n"
      "---\nkind: Listener\nname: l\nspec: {address: 127.0.0.1, port: ",
      port, ", route_table: main}\n");
  ASSERT_EQ(cp.Ctl({"apply", "-f", dir + "/config.yaml"}).exit_code, 0);
  Proxy proxy(cp.address(), "drain-503", 1, "", {"--drain-timeout", "1s"});
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  const std::string url = absl::StrCat("http://127.0.0.1:", port, "/x?hang=1");
  CommandResult h1, h2;
  std::thread t1([&] { h1 = RunCommand({"/usr/bin/curl", "-sS", "-i", "--max-time", "10", url}); });
  std::thread t2([&] {
    h2 = RunCommand({"/usr/bin/curl", "-sS", "-i", "--max-time", "10", "--http2-prior-knowledge",
                     url});
  });
  // Both requests are at the upstream.
  ASSERT_TRUE(WaitFor([&] { return upstream.RequestCount() == std::optional<int>(2); },
                      absl::Seconds(5)));
  proxy.process().Signal(SIGTERM);
  t1.join();
  t2.join();
  for (const CommandResult* r : {&h1, &h2}) {
    EXPECT_TRUE(absl::StrContains(r->out, " 503")) << r->out << r->err;
    EXPECT_TRUE(absl::StrContains(r->out, "the gateway is shutting down")) << r->out;
  }
  EXPECT_EQ(proxy.process().Wait(absl::Seconds(10)), std::optional<int>(0));
}

// A listener moved to another port drains the connections it accepted on
// the old one (Connection: close on the next response), as a removed one
// does: they were served on for as long as their clients kept them, the
// new route table included, so moving a listener off an address left its
// keep-alive clients there.
TEST(ListenerMoveTest, ConnectionsOnTheOldAddressAreDrained) {
  ControlPlane cp("", "info");
  ASSERT_TRUE(cp.ok()) << cp.process().Log();
  const int old_port = PickFreePort();
  int new_port = PickFreePort();
  while (new_port == old_port) new_port = PickFreePort();
  const std::string dir = MakeTempDir("listener-move");
  auto apply = [&](int port) {
    std::ofstream(dir + "/config.yaml") << absl::StrCat(
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: ['*']\n"
        "      routes:\n        - match: {prefix: /}\n"
        "          direct_response: {status: 200, body: ok}\n"
        "---\nkind: Listener\nname: mv\nspec: {address: 127.0.0.1, port: ",
        port, ", route_table: main}\n");
    return cp.Ctl({"apply", "-f", dir + "/config.yaml"}).exit_code;
  };
  ASSERT_EQ(apply(old_port), 0);
  Proxy proxy(cp.address(), "move-proxy");
  ASSERT_TRUE(proxy.ok()) << proxy.process().Log();
  ASSERT_TRUE(proxy.WaitForVersion(1)) << proxy.process().Log();
  HttpConnection kept(absl::StrCat("127.0.0.1:", old_port));
  HttpResponse r = kept.Request("GET", "/a");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_NE(r.header("connection"), "close");
  ASSERT_EQ(apply(new_port), 0);
  ASSERT_TRUE(proxy.WaitForVersion(2)) << proxy.process().Log();
  r = kept.Request("GET", "/b");
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(WaitFor([&] { return !kept.connected(); }, absl::Seconds(5)));
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", new_port), "/c").status, 200);
  EXPECT_EQ(HttpGet(absl::StrCat("127.0.0.1:", old_port), "/d", {}, absl::Seconds(2)).status, 0);
}

}  // namespace
}  // namespace sluice::testing
