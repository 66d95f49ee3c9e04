// The request-validation policy through real processes: a route with a JSON
// Schema applied with sluicectl, a real proxy holding and validating bodies
// (HTTP/1 with Content-Length, chunked and Expect: 100-continue; h2c with
// curl) and a real upstream that reports what reached it.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "tests/harness/http_client.h"
#include "tests/harness/http_wire.h"
#include "tests/harness/process.h"
#include "tests/harness/proxy.h"
#include "tests/harness/upstream.h"

namespace sluice::testing {
namespace {

// The order route's schema, as an operator writes it in YAML (a block
// string).
constexpr char kOrderPolicy[] = R"(
          policies:
            - name: request-validation
              typed_config:
                content_types: [application/json]
                headers: [{name: x-tenant, required: true, pattern: '[a-z]+'},
                          {name: x-region, pattern: '[a-z]+'}]
                query_parameters: [{name: page, pattern: '[0-9]+'}]
                body_required: true
                max_body_bytes: 4096
                body_schema: |
                  {
                    "type": "object",
                    "required": ["customer", "items"],
                    "properties": {
                      "customer": {"type": "string", "minLength": 1, "maxLength": 32},
                      "items": {
                        "type": "array", "minItems": 1,
                        "items": {
                          "type": "object",
                          "required": ["sku", "price"],
                          "properties": {
                            "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"},
                            "price": {"type": "number", "minimum": 0}
                          },
                          "additionalProperties": false
                        }
                      }
                    }
                  }
)";

// A route for large bodies: an array of integers, up to 4 MiB.
constexpr char kBulkPolicy[] = R"(
          policies:
            - name: request-validation
              typed_config:
                max_body_bytes: 4194304
                body_schema: '{"type": "array", "items": {"type": "integer"}}'
)";

// A blocking socket to the proxy for exchanges the HTTP client does not
// offer (reading an interim 100 Continue before sending the body).
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RawConnection() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  bool Send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  // Reads until what arrived contains `needle` (true), or the peer closes
  // or `timeout` passes (false). What arrived is in received().
  bool ReadUntil(const std::string& needle, absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!absl::StrContains(received_, needle)) {
      int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
      if (ms <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, ms) <= 0) return false;
      char buf[16384];
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return false;
      received_.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  const std::string& received() const { return received_; }

 private:
  int fd_ = -1;
  std::string received_;
};

class RequestValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cp_.ok()) << cp_.process().Log();
    ASSERT_TRUE(upstream_.ok());
    dir_ = MakeTempDir("request-validation");
    port_ = PickFreePort();
    ASSERT_EQ(Apply(Config(kOrderPolicy)), 0) << last_output_;
    proxy_ = std::make_unique<Proxy>(cp_.address(), "validation-proxy");
    ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
    ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  }

  std::string Config(const std::string& order_policy) {
    return absl::StrCat(
        "kind: Cluster\nname: web\nspec:\n  endpoints: [{address: 127.0.0.1, port: ",
        upstream_.port(),
        "}]\n---\nkind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"
        "    - domains: ['*']\n"
        "      routes:\n"
        "        - name: orders\n          match: {prefix: /orders}\n          route: {cluster: "
        "web}",
        order_policy,
        "        - name: bulk\n          match: {prefix: /bulk}\n          route: {cluster: web}",
        kBulkPolicy,
        // A route limit under the hold, and request-size-limit under it.
        "        - name: capped\n          match: {prefix: /capped}\n"
        "          route: {cluster: web, max_request_body_bytes: 100}",
        kBulkPolicy,
        "        - name: sized\n          match: {prefix: /sized}\n          route: {cluster: web}\n"
        "          policies:\n"
        "            - {name: request-size-limit, typed_config: {max_bytes: 50}}\n"
        "            - name: request-validation\n"
        "              typed_config: {max_body_bytes: 100, body_schema: '{\"type\": \"array\"}'}\n"
        "        - name: big\n          match: {prefix: /big}\n          route: {cluster: web}\n"
        "          policies:\n"
        "            - name: request-validation\n"
        "              typed_config:\n"
        "                {max_body_bytes: 16777216, body_schema: '{\"type\": \"array\"}'}\n"
        "        - name: open\n          match: {prefix: /}\n          route: {cluster: web}\n"
        "---\nkind: Listener\nname: public\nspec: {address: 127.0.0.1, port: ",
        port_, ", route_table: main, http: {http2: {}}}\n");
  }

  int Apply(const std::string& yaml) {
    auto r = cp_.Ctl({"apply", "-f", WriteFile(dir_, "config.yaml", yaml)});
    last_output_ = r.out + r.err;
    return r.exit_code;
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  int Requests() const { return upstream_.RequestCount().value_or(-1); }

  static Headers Valid() {
    return {{"x-tenant", "acme"}, {"content-type", "application/json; charset=utf-8"}};
  }
  // "body-bytes=N body-crc=HEX": what the upstream prints for a body it got.
  static std::string Echo(const std::string& body) {
    return absl::StrCat("body-bytes=", body.size(), " body-crc=", Crc32Hex(body));
  }

  ControlPlane cp_{"", "info"};
  UpstreamServer upstream_{"web-1"};
  std::unique_ptr<Proxy> proxy_;
  std::string dir_;
  int port_ = 0;
  std::string last_output_;
};

const std::string kGoodOrder =
    R"({"customer": "Zoë", "items": [{"sku": "ABC-1", "price": 9.5}, {"sku": "XYZ-22", "price": 0}]})";

TEST_F(RequestValidationTest, AValidJsonBodyReachesTheUpstreamWhole) {
  HttpResponse r = HttpRequest(address(), "POST", "/orders?page=2", Valid(), kGoodOrder);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, absl::StrCat("web-1 POST /orders?page=2\n", Echo(kGoodOrder), "\n"));
  EXPECT_EQ(r.header("x-echo-content-length"), absl::StrCat(kGoodOrder.size()));
}

// A field spelled with '_' for a checked name (x_tenant) is what CGI-style
// upstreams read as the checked one too: it never passed unchecked.
TEST_F(RequestValidationTest, TheUnderscoreSpellingOfACheckedHeaderIsRemoved) {
  Headers headers = Valid();
  headers.push_back({"x_tenant", "EVIL"});
  headers.push_back({"X_Tenant", "EVIL"});
  HttpResponse r = HttpRequest(address(), "POST", "/orders", headers, kGoodOrder);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-echo-x_tenant"), "");
  EXPECT_FALSE(absl::StrContains(r.body + r.header("x-echo-X_Tenant"), "EVIL"));
}

TEST_F(RequestValidationTest, AnInvalidRequestIs400NamingTheFieldAndNeverReachesTheUpstream) {
  const int before = Requests();
  ASSERT_GE(before, 0);
  HttpConnection conn(address(), HttpConnection::Options{.reconnect = true});
  struct Case {
    std::string path;
    Headers headers;
    std::string body;
    int status;
    std::string error;
  };
  const std::string bad_price =
      R"({"customer": "a", "items": [{"sku": "ABC-1", "price": 1}, {"sku": "ABC-2", "price": -3}]})";
  const std::vector<Case> cases = {
      {"/orders", Valid(), bad_price, 400, "body: /items/1/price: must be >= 0 (minimum)"},
      {"/orders", Valid(), R"({"customer": "a", "items": [{"sku": "abc", "price": 1}]})", 400,
       "body: /items/0/sku: does not match pattern ^[A-Z]{3}-[0-9]+$ (pattern)"},
      {"/orders", Valid(), R"({"customer": "a", "items": [{"sku": "ABC-1", "price": 1, "x": 1}]})",
       400, "body: /items/0/x: is not allowed (additionalProperties)"},
      {"/orders", Valid(), R"({"items": []})", 400, "body: /customer: is required (required)"},
      {"/orders", Valid(), R"([1, 2])", 400, "body: must be of type object, got array (type)"},
      {"/orders", Valid(), R"({"customer": "a", "items": [)", 400,
       "body: not valid JSON: The JSON document has an improper structure: missing or "
       "superfluous commas, braces, missing keys, etc."},
      {"/orders",
       {{"content-type", "application/json"}},
       kGoodOrder,
       400,
       "header x-tenant: is required"},
      {"/orders",
       {{"x-tenant", "ACME"}, {"content-type", "application/json"}},
       kGoodOrder,
       400,
       "header x-tenant: does not match pattern [a-z]+"},
      {"/orders?page=one", Valid(), kGoodOrder, 400, "query page: does not match pattern [0-9]+"},
      {"/orders",
       {{"x-tenant", "acme"}, {"content-type", "text/plain"}},
       kGoodOrder,
       415,
       "header content-type: text/plain is not allowed (allowed: application/json)"},
      {"/orders", {{"x-tenant", "acme"}}, "", 400, "body: is required"},
      // A singleton field twice: the check would read one, the upstream
      // perhaps the other.
      {"/orders",
       {{"x-tenant", "acme"}, {"content-type", "application/json"},
        {"content-type", "application/x-www-form-urlencoded"}},
       "a=b",
       400,
       "header content-type: is given more than once"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    Headers headers = c.headers;
    headers.push_back({"x-request-id", absl::StrCat("case-", i)});
    HttpResponse r = conn.Request("POST", c.path, headers, c.body);
    ASSERT_TRUE(r.ok()) << i << ": " << r.error;
    EXPECT_EQ(r.status, c.status) << i << ": " << r.body;
    EXPECT_EQ(r.header("content-type"), "application/json") << i;
    EXPECT_EQ(r.body, absl::StrCat("{\"error\":\"", absl::StrReplaceAll(c.error, {{"\"", "\\\""}}),
                                   "\",\"request_id\":\"case-", i, "\"}\n"))
        << i;
    EXPECT_EQ(r.header("x-upstream"), "") << i;
  }
  EXPECT_EQ(Requests(), before);
  // A body read whole and refused leaves the connection usable (one
  // refused at its head is closed: its body was never read).
  HttpConnection again(address());
  HttpResponse r = again.Request("POST", "/orders", Valid(), bad_price);
  EXPECT_EQ(r.status, 400);
  r = again.Request("POST", "/orders", Valid(), kGoodOrder);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(again.connections_opened(), 1);
  EXPECT_EQ(Requests(), before + 1);
}

TEST_F(RequestValidationTest, AChunkedBodyReachesTheUpstreamWithAContentLength) {
  HttpResponse r = HttpRequest(address(), "POST", "/orders",
                               {{"x-tenant", "acme"},
                                {"content-type", "application/json"},
                                {"transfer-encoding", "chunked"}},
                               EncodeChunked(kGoodOrder, 5));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, Echo(kGoodOrder))) << r.body;
  EXPECT_EQ(r.header("x-echo-content-length"), absl::StrCat(kGoodOrder.size()));
  EXPECT_EQ(r.header("x-echo-transfer-encoding"), "");
  // An invalid chunked body is refused whole.
  const int before = Requests();
  r = HttpRequest(address(), "POST", "/orders",
                  {{"x-tenant", "acme"},
                   {"content-type", "application/json"},
                   {"transfer-encoding", "chunked"}},
                  EncodeChunked(R"({"customer": 7, "items": [1]})", 3));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 400);
  EXPECT_TRUE(absl::StrContains(r.body, "body: /customer: must be of type string, got integer"))
      << r.body;
  EXPECT_EQ(Requests(), before);
}

TEST_F(RequestValidationTest, TrailersOfAHeldChunkedBodyStillReachTheUpstream) {
  std::string chunked = EncodeChunked(kGoodOrder, 7);
  // EncodeChunked ends with "0\r\n\r\n": put a trailer field before the last CRLF.
  ASSERT_TRUE(absl::EndsWith(chunked, "0\r\n\r\n"));
  chunked.resize(chunked.size() - 2);
  // A trailer of a checked header, absent from the head, was never
  // checked: dropped, in either spelling (it reached the upstream).
  chunked += "x-test-checksum: abc123\r\nx-region: ABC\r\nx_region: ABC\r\n\r\n";
  HttpResponse r = HttpRequest(address(), "POST", "/orders",
                               {{"x-tenant", "acme"},
                                {"content-type", "application/json"},
                                {"transfer-encoding", "chunked"}},
                               chunked);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, Echo(kGoodOrder))) << r.body;
  EXPECT_EQ(r.header("x-echo-trailer-x-test-checksum"), "abc123");
  EXPECT_EQ(r.header("x-echo-trailer-x-region"), "");
  EXPECT_EQ(r.header("x-echo-trailer-x_region"), "");
  EXPECT_EQ(r.header("x-echo-transfer-encoding"), "chunked");  // so that the trailer can follow
}

TEST_F(RequestValidationTest, ABodyOverMaxBodyBytesIs413) {
  const int before = Requests();
  std::string big = absl::StrCat(R"({"customer": ")", std::string(5000, 'x'), R"(", "items": []})");
  HttpResponse r = HttpRequest(address(), "POST", "/orders", Valid(), big);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.status, 413);
  EXPECT_TRUE(absl::StrContains(
      r.body, absl::StrCat("request body of ", big.size(), " bytes is over the 4096 bytes")))
      << r.body;
  // Without a declared length: cut when the held body passes the limit.
  r = HttpRequest(address(), "POST", "/orders",
                  {{"x-tenant", "acme"},
                   {"content-type", "application/json"},
                   {"transfer-encoding", "chunked"}},
                  EncodeChunked(big, 10));
  EXPECT_EQ(r.status, 413) << r.error;
  EXPECT_TRUE(absl::StrContains(r.body, "request body over the 4096 bytes")) << r.body;
  // A chunk declared past the limit is refused at its size line (as
  // nginx), not after its bytes came. Before: the proxy waited for them,
  // and answered 408 at the route's idle_timeout.
  RawConnection conn(port_);
  ASSERT_TRUE(conn.ok());
  ASSERT_TRUE(conn.Send(
      "POST /orders HTTP/1.1\r\nhost: shop\r\nx-tenant: acme\r\ncontent-type: "
      "application/json\r\ntransfer-encoding: chunked\r\n\r\n7fffffffffffffff\r\n{\"a\":"));
  ASSERT_TRUE(conn.ReadUntil("request body over the 4096 bytes")) << conn.received();
  EXPECT_TRUE(absl::StartsWith(conn.received(), "HTTP/1.1 413 ")) << conn.received();
  EXPECT_EQ(Requests(), before);
}

// The route's (or listener's) body limit, and request-size-limit's, bound a
// body held for validation: a declared length over one gets its 413 before
// a 100 Continue or any holding, a streamed body is cut there. Before: the
// whole body (up to the holding policy's 4 MiB) was read and parsed, then
// answered 413, or 400 for bad JSON.
TEST_F(RequestValidationTest, AHeldBodyIsBoundByTheRouteAndSizeLimits) {
  const std::string bad(500, 'z');  // no JSON: a parse would say 400
  RawConnection conn(port_);
  ASSERT_TRUE(conn.ok());
  ASSERT_TRUE(conn.Send(absl::StrCat(
      "POST /capped HTTP/1.1\r\nhost: shop\r\ncontent-type: application/json\r\n"
      "expect: 100-continue\r\ncontent-length: ",
      bad.size(), "\r\n\r\n")));
  ASSERT_TRUE(conn.ReadUntil("is over the limit of 100")) << conn.received();
  EXPECT_TRUE(absl::StartsWith(conn.received(), "HTTP/1.1 413 ")) << conn.received();
  EXPECT_FALSE(absl::StrContains(conn.received(), "100 Continue")) << conn.received();
  HttpResponse r = HttpRequest(
      address(), "POST", "/capped",
      {{"content-type", "application/json"}, {"transfer-encoding", "chunked"}},
      EncodeChunked(bad, 10));
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "request body over the limit of 100 bytes")) << r.body;
  r = HttpRequest(address(), "POST", "/sized",
                  {{"content-type", "application/json"}, {"transfer-encoding", "chunked"}},
                  EncodeChunked(std::string(70, 'z'), 10));
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "request body over this route's limit of 50 bytes"))
      << r.body;
}

TEST_F(RequestValidationTest, ExpectContinueGetsA100ThenTheBodyIsValidated) {
  RawConnection conn(port_);
  ASSERT_TRUE(conn.ok());
  ASSERT_TRUE(conn.Send(
      absl::StrCat("POST /orders HTTP/1.1\r\nhost: shop\r\nx-tenant: acme\r\n"
                   "content-type: application/json\r\nexpect: 100-continue\r\ncontent-length: ",
                   kGoodOrder.size(), "\r\n\r\n")));
  // The proxy holds the body itself, so it asks for it.
  ASSERT_TRUE(conn.ReadUntil("HTTP/1.1 100 Continue\r\n\r\n")) << conn.received();
  ASSERT_TRUE(conn.Send(kGoodOrder));
  ASSERT_TRUE(conn.ReadUntil(Echo(kGoodOrder))) << conn.received();
  EXPECT_TRUE(absl::StrContains(conn.received(), "\r\n\r\nHTTP/1.1 200 OK\r\n")) << conn.received();

  // A head that fails its rules is answered at once, without a 100.
  RawConnection refused(port_);
  ASSERT_TRUE(refused.ok());
  ASSERT_TRUE(
      refused.Send("POST /orders HTTP/1.1\r\nhost: shop\r\ncontent-type: application/json\r\n"
                   "expect: 100-continue\r\ncontent-length: 20\r\n\r\n"));
  ASSERT_TRUE(refused.ReadUntil("header x-tenant: is required")) << refused.received();
  EXPECT_TRUE(absl::StartsWith(refused.received(), "HTTP/1.1 400 ")) << refused.received();
  EXPECT_FALSE(absl::StrContains(refused.received(), "100 Continue")) << refused.received();
}

TEST_F(RequestValidationTest, Http2BodiesLargerThanAWindowAreHeldAndValidated) {
  // 3 MB: more than the stream's 1 MiB flow-control window, so the proxy
  // must keep granting credit while it holds the body.
  std::string body = "[";
  while (body.size() < 3000000) body += "1234567,";
  body += "0]";
  const std::string body_path = WriteFile(dir_, "bulk.json", body);
  auto curl = [&](const std::string& file) {
    return RunCommand({"/usr/bin/curl", "-sS", "--max-time", "20", "--http2-prior-knowledge", "-H",
                       "content-type: application/json", "-w", "\n%{http_code} %{http_version}",
                       "--data-binary", "@" + file, absl::StrCat("http://", address(), "/bulk")});
  };
  CommandResult r = curl(body_path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, Echo(body))) << r.out;
  EXPECT_TRUE(absl::EndsWith(r.out, "\n200 2")) << r.out;
  std::string bad = body;
  bad.replace(bad.size() - 2, 1, "\"x\"");
  r = curl(WriteFile(dir_, "bad.json", bad));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "must be of type integer, got string (type)")) << r.out;
  EXPECT_TRUE(absl::EndsWith(r.out, "\n400 2")) << r.out;
}

// An upstream that answers a held body before reading it (a 403 to an
// upload it will not take) and closes, resetting the connection under the
// body the proxy still writes: the client gets that answer (RFC 9112 9.6),
// over HTTP/1.1 and HTTP/2. Before: the write failed first, most times, and
// the client got 502 "upstream connection reset: Broken pipe" (probe: 4 of 6
// with 15 MB).
TEST_F(RequestValidationTest, AnUpstreamsEarlyAnswerToAHeldBodyReachesTheClient) {
  std::string body = "[";
  while (body.size() < 12000000) body += "1234567,";
  body += "0]";
  const std::string body_path = WriteFile(dir_, "big.json", body);
  for (const char* version : {"--http1.1", "--http2-prior-knowledge"}) {
    for (int i = 0; i < 4; ++i) {
      CommandResult r = RunCommand(
          {"/usr/bin/curl", "-sS", "--max-time", "30", version, "-H", "expect:", "-H",
           "content-type: application/json", "-w", "\n%{http_code}", "--data-binary",
           "@" + body_path, absl::StrCat("http://", address(), "/big?early=1")});
      ASSERT_EQ(r.exit_code, 0) << version << " " << i << ": " << r.err;
      EXPECT_EQ(r.out, "early answer\n\n403") << version << " " << i;
    }
  }
  HttpResponse after = HttpRequest(address(), "GET", "/open", {}, "");
  EXPECT_EQ(after.status, 200) << after.error;
}

// Bodies held for policies are bounded together, proxy-wide
// (--max-held-body-mb): while one is held, another that would take the
// total past the bound is answered 503 with Retry-After, and taken once the
// first is gone. Before: nothing bounded them together, and one HTTP/2
// connection held 100 bodies of 16 MiB, each two or three times over, far
// past --max-memory-mb (probe).
TEST_F(RequestValidationTest, HeldBodiesTogetherAreBoundedProxyWide) {
  proxy_.reset();
  proxy_ = std::make_unique<Proxy>(cp_.address(), "validation-proxy-held", 1, "",
                                   std::vector<std::string>{"--max-held-body-mb", "1"});
  ASSERT_TRUE(proxy_->ok()) << proxy_->process().Log();
  ASSERT_TRUE(proxy_->WaitForVersion(1)) << proxy_->process().Log();
  auto array = [](size_t bytes) {
    std::string body = "[";
    while (body.size() < bytes) body += "1,";
    return body + "0]";
  };
  const std::string first = array(700000);
  RawConnection held(port_);
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(held.Send(absl::StrCat("POST /bulk HTTP/1.1\r\nHost: a\r\n"
                                     "Content-Type: application/json\r\nContent-Length: ",
                                     first.size(), "\r\n\r\n",
                                     first.substr(0, first.size() - 1))));
  // Its buffer, grown by doubling up to its declared length, with 64 bytes
  // of room for the JSON parser's padding, is charged.
  const int64_t charged = static_cast<int64_t>(first.size()) + 64;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (proxy_->Stat("sluice_request_bodies_held_bytes") != charged && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(proxy_->Stat("sluice_request_bodies_held_bytes"), charged);

  const std::string second = array(500000);
  HttpResponse r =
      HttpRequest(address(), "POST", "/bulk", {{"content-type", "application/json"}}, second);
  EXPECT_EQ(r.status, 503) << r.error;
  EXPECT_EQ(r.header("retry-after"), "1");
  EXPECT_TRUE(absl::StrContains(r.body, "holds its limit of 1 MiB of request bodies")) << r.body;
  EXPECT_EQ(proxy_->Stat("sluice_request_bodies_held_refused_total"), 1);

  ASSERT_TRUE(held.Send(first.substr(first.size() - 1)));
  ASSERT_TRUE(held.ReadUntil(Echo(first))) << held.received().substr(0, 300);
  EXPECT_TRUE(absl::StartsWith(held.received(), "HTTP/1.1 200")) << held.received().substr(0, 300);
  // Given back when the exchange ends.
  const absl::Time released = absl::Now() + absl::Seconds(10);
  while (proxy_->Stat("sluice_request_bodies_held_bytes") != 0 && absl::Now() < released) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(proxy_->Stat("sluice_request_bodies_held_bytes"), 0);
  r = HttpRequest(address(), "POST", "/bulk", {{"content-type", "application/json"}}, second);
  EXPECT_EQ(r.status, 200) << r.error << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, Echo(second))) << r.body.substr(0, 300);
  // A body that alone is more than the bound can never be held: 413, not a
  // 503 to retry for ever; declared or streamed.
  const std::string whole = array(1200000);
  r = HttpRequest(address(), "POST", "/bulk", {{"content-type", "application/json"}}, whole);
  EXPECT_EQ(r.status, 413) << r.error;
  EXPECT_TRUE(absl::StrContains(r.body, "over the 1 MiB the gateway holds for policies")) << r.body;
  r = HttpRequest(address(), "POST", "/bulk",
                  {{"content-type", "application/json"}, {"transfer-encoding", "chunked"}},
                  EncodeChunked(whole, 65536));
  EXPECT_EQ(r.status, 413) << r.error;
  EXPECT_TRUE(absl::StrContains(r.body, "over the 1 MiB the gateway holds for policies")) << r.body;
  EXPECT_EQ(proxy_->Stat("sluice_request_bodies_held_refused_total"), 1);
  // A streamed body of 0.7 MiB fits whatever its buffer's doubling (it got
  // 413 once the doubling reached the bound), and one of exactly the bound
  // fits (the parser's padding is not charged past it: it got 413 too).
  const std::string streamed = array(700000);
  r = HttpRequest(address(), "POST", "/bulk",
                  {{"content-type", "application/json"}, {"transfer-encoding", "chunked"}},
                  EncodeChunked(streamed, 65536));
  EXPECT_EQ(r.status, 200) << r.error << r.body.substr(0, 300);
  EXPECT_TRUE(absl::StrContains(r.body, Echo(streamed))) << r.body.substr(0, 300);
  std::string exact = "[";
  for (int i = 0; i < 524286; ++i) exact += "1,";
  exact += "10]";
  ASSERT_EQ(exact.size(), 1048576u);
  r = HttpRequest(address(), "POST", "/bulk", {{"content-type", "application/json"}}, exact);
  EXPECT_EQ(r.status, 200) << r.error << r.body.substr(0, 300);
  EXPECT_TRUE(absl::StrContains(r.body, Echo(exact))) << r.body.substr(0, 300);
  EXPECT_TRUE(WaitFor([&] { return proxy_->Stat("sluice_request_bodies_held_bytes") == 0; },
                      absl::Seconds(10)));
}

TEST_F(RequestValidationTest, ABadSchemaIsRefusedAtApplyNamingTheKeyword) {
  std::string policy = kOrderPolicy;
  const std::string from = R"("price": {"type": "number", "minimum": 0})";
  ASSERT_NE(policy.find(from), std::string::npos);
  policy.replace(policy.find(from), from.size(), R"("price": {"type": "number", "minimum": "0"})");
  EXPECT_NE(Apply(Config(policy)), 0);
  EXPECT_TRUE(absl::StrContains(
      last_output_,
      "policies[0].typed_config.body_schema: /properties/items/items/properties/price/minimum: "
      "must be a number"))
      << last_output_;
  // Nothing changed: the proxy still validates with the old schema.
  HttpResponse r = HttpRequest(address(), "POST", "/orders", Valid(), kGoodOrder);
  EXPECT_EQ(r.status, 200) << r.body;
}

}  // namespace
}  // namespace sluice::testing
