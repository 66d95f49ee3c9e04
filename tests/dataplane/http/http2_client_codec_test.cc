// Drives Http2ClientCodec against the server codec (Http2ServerCodec) in
// memory, bytes piped between the two, and against a raw nghttp2 server
// session where the upstream has to misbehave (malformed or oversized
// responses, GOAWAY, REFUSED_STREAM).
#include "dataplane/http/http2_client_codec.h"

#include <nghttp2/nghttp2.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "dataplane/http/http2_server_codec.h"
#include "dataplane/http/http2_util.h"
#include "gtest/gtest.h"
#include "tests/harness/http_wire.h"
#include "tests/harness/resident.h"

namespace sluice::http {
namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

// ---------------------------------------------------------------------------
// The client side: the codec's callbacks, recorded.

struct Response {
  int status = 0;
  HeaderMap headers;
  bool has_head = false;
  bool end_on_headers = false;
  std::string body;
  bool body_ended = false;
  HeaderMap trailers;
  bool has_trailers = false;
  bool reset = false;
  uint32_t reset_code = 0;
  bool refused = false;
  bool by_peer = false;
  std::string reason;
  int writable = 0;

  bool complete() const { return end_on_headers || body_ended || has_trailers; }
};

class ClientRecorder : public Http2ClientCallbacks {
 public:
  void OnResponseHeaders(int32_t stream_id, int status,
                         const HeaderMap& headers, bool end_stream) override {
    Response& r = responses[stream_id];
    EXPECT_FALSE(r.has_head) << "two final heads on " << stream_id;
    EXPECT_FALSE(r.reset);
    EXPECT_FALSE(caller_reset.count(stream_id)) << stream_id;
    r.status = status;
    r.headers = headers;
    r.has_head = true;
    r.end_on_headers = end_stream;
    if (end_stream) CheckGone(stream_id);
    if (on_headers) on_headers(stream_id);
  }
  void OnResponseData(int32_t stream_id, std::string_view data,
                      bool end_stream) override {
    Response& r = responses[stream_id];
    EXPECT_TRUE(r.has_head);
    EXPECT_FALSE(r.complete() || r.reset) << stream_id;
    EXPECT_FALSE(caller_reset.count(stream_id)) << stream_id;
    EXPECT_TRUE(end_stream || !data.empty());
    r.body.append(data);
    r.body_ended = end_stream;
    if (end_stream) CheckGone(stream_id);
    if (consume && codec != nullptr && !hold.count(stream_id)) {
      codec->ConsumeResponseData(stream_id, data.size());
    }
    if (on_data) on_data(stream_id);
  }
  void OnInformationalResponse(int32_t stream_id, int status,
                               const HeaderMap& headers) override {
    EXPECT_FALSE(responses[stream_id].has_head) << "1xx after the final head";
    informational.push_back({stream_id, status, headers});
  }
  struct Informational {
    int32_t stream_id;
    int status;
    HeaderMap headers;
  };
  std::vector<Informational> informational;
  void OnResponseTrailers(int32_t stream_id,
                          const HeaderMap& trailers) override {
    Response& r = responses[stream_id];
    EXPECT_TRUE(r.has_head);
    EXPECT_FALSE(r.complete() || r.reset) << stream_id;
    r.trailers = trailers;
    r.has_trailers = true;
    CheckGone(stream_id);
  }
  void OnStreamReset(int32_t stream_id, uint32_t error_code, bool refused, bool by_peer,
                     std::string_view reason) override {
    Response& r = responses[stream_id];
    EXPECT_FALSE(r.reset) << "reset twice: " << stream_id;
    EXPECT_FALSE(r.complete()) << "reset after the response: " << stream_id;
    EXPECT_FALSE(caller_reset.count(stream_id))
        << "reset reported for a stream the caller reset: " << stream_id;
    EXPECT_FALSE(reason.empty());
    r.reset = true;
    r.reset_code = error_code;
    r.refused = refused;
    r.by_peer = by_peer;
    r.reason = std::string(reason);
    reset_order.push_back(stream_id);
    CheckGone(stream_id);
  }
  void OnStreamWritable(int32_t stream_id) override {
    ++responses[stream_id].writable;
    if (on_writable) on_writable(stream_id);
  }
  void OnGoaway(int32_t last_stream_id, uint32_t error_code) override {
    goaways.emplace_back(last_stream_id, error_code);
    EXPECT_FALSE(codec->CanOpenStream());
  }
  void OnSettings() override { ++settings; }
  void OnPingAck() override { ++ping_acks; }

  // A stream that ended is gone from the codec at once.
  void CheckGone(int32_t stream_id) {
    if (codec == nullptr) return;
    EXPECT_FALSE(codec->SubmitData(stream_id, "late", true)) << stream_id;
    EXPECT_EQ(codec->QueuedBytes(stream_id), 0u);
  }

  std::map<int32_t, Response> responses;
  std::vector<int32_t> reset_order;
  std::set<int32_t> caller_reset;  // the test reset these itself
  std::vector<std::pair<int32_t, uint32_t>> goaways;
  int settings = 0;
  int ping_acks = 0;
  Http2ClientCodec* codec = nullptr;
  // ConsumeResponseData as soon as bytes arrive, except for `hold`.
  bool consume = true;
  std::set<int32_t> hold;
  std::function<void(int32_t)> on_headers;
  std::function<void(int32_t)> on_data;
  std::function<void(int32_t)> on_writable;
};

Http2Request Get(std::string_view path,
                 const std::vector<HeaderField>* fields = nullptr) {
  Http2Request r;
  r.method = "GET";
  r.scheme = "http";
  r.authority = "upstream.test";
  r.path = path;
  if (fields != nullptr) {
    r.fields = fields->data();
    r.field_count = fields->size();
  }
  return r;
}

Http2Request Post(std::string_view path,
                  const std::vector<HeaderField>* fields = nullptr) {
  Http2Request r = Get(path, fields);
  r.method = "POST";
  return r;
}

std::string Pattern(size_t n, char seed) {
  std::string s(n, ' ');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i % 23);
  return s;
}

// ---------------------------------------------------------------------------
// The server side, well behaved: Http2ServerCodec, its callbacks recorded.

struct ServerRequest {
  RequestPseudo pseudo;
  HeaderMap headers;
  bool end_on_headers = false;
  std::string body;
  int data_calls = 0;
  bool body_ended = false;
  HeaderMap trailers;
  bool has_trailers = false;
  bool reset = false;
  uint32_t reset_code = 0;
};

class ServerRecorder : public Http2ServerCallbacks {
 public:
  void OnRequestHeaders(int32_t stream_id, RequestPseudo pseudo,
                        HeaderMap headers, bool end_stream) override {
    ServerRequest& r = requests[stream_id];
    r.pseudo = std::move(pseudo);
    r.headers = std::move(headers);
    r.end_on_headers = end_stream;
    order.push_back(stream_id);
    if (on_headers) on_headers(stream_id);
  }
  void OnRequestData(int32_t stream_id, std::string_view data,
                     bool end_stream) override {
    ServerRequest& r = requests[stream_id];
    r.body.append(data);
    ++r.data_calls;
    r.body_ended = end_stream;
    if (consume && !hold.count(stream_id)) {
      codec->ConsumeRequestData(stream_id, data.size());
    }
    if (on_data) on_data(stream_id);
  }
  void OnRequestTrailers(int32_t stream_id, HeaderMap trailers) override {
    ServerRequest& r = requests[stream_id];
    r.trailers = std::move(trailers);
    r.has_trailers = true;
    if (on_trailers) on_trailers(stream_id);
  }
  void OnStreamReset(int32_t stream_id, uint32_t error_code) override {
    ServerRequest& r = requests[stream_id];
    r.reset = true;
    r.reset_code = error_code;
  }

  std::map<int32_t, ServerRequest> requests;
  std::vector<int32_t> order;
  Http2ServerCodec* codec = nullptr;
  // ConsumeRequestData as soon as bytes arrive, except for `hold`.
  bool consume = true;
  std::set<int32_t> hold;
  std::function<void(int32_t)> on_headers;
  std::function<void(int32_t)> on_data;
  std::function<void(int32_t)> on_trailers;
};

HeaderMap Headers(const Fields& fields) {
  HeaderMap h;
  for (const auto& [name, value] : fields) h.Add(name, value);
  return h;
}

// A client codec and a server codec, linked in memory.
struct Fixture {
  explicit Fixture(Http2ClientLimits client_limits = Http2ClientLimits(),
                   Http2Limits server_limits = Http2Limits())
      : client(&client_events, client_limits),
        server(&server_events, server_limits) {
    client_events.codec = &client;
    server_events.codec = &server;
  }

  // Moves bytes both ways until neither side has anything to say.
  void Run() {
    for (int round = 0; round < 100000; ++round) {
      std::string up;
      client.TakeOutput(&up);
      if (!up.empty() && !server.Receive(up)) server_ok = false;
      std::string down;
      server.TakeOutput(&down);
      if (!down.empty() && !client.Receive(down)) client_ok = false;
      if (up.empty() && down.empty()) return;
    }
    ADD_FAILURE() << "the link never went quiet";
  }

  ClientRecorder client_events;
  ServerRecorder server_events;
  Http2ClientCodec client;
  Http2ServerCodec server;
  bool client_ok = true;
  bool server_ok = true;
};

// ---------------------------------------------------------------------------
// The server side, misbehaving at will: an nghttp2 server session.

struct RawRequest {
  Fields head;
  std::string body;
  bool ended = false;
  Fields trailers;
  bool in_trailers = false;
  bool rst_received = false;
  uint32_t rst_code = 0;
  bool closed = false;
};

struct Download {
  std::string body;
  size_t offset = 0;
  Fields trailers;
};

class RawServer {
 public:
  explicit RawServer(const std::vector<nghttp2_settings_entry>& settings = {}) {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs,
                                                            OnBeginHeaders);
    nghttp2_session_callbacks_set_on_header_callback(cbs, OnHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, OnFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, OnData);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, OnClose);
    nghttp2_option* opt;
    nghttp2_option_new(&opt);
    // Whatever the test wants to send, nghttp2 sends.
    // (nghttp2 checks the sum of the raw name and value lengths against it.)
    nghttp2_option_set_max_send_header_block_length(opt, 1 << 24);
    nghttp2_session_server_new2(&session_, cbs, this, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings.data(),
                            settings.size());
  }
  ~RawServer() { nghttp2_session_del(session_); }

  static std::vector<nghttp2_nv> Nva(const Fields& fields) {
    std::vector<nghttp2_nv> nva;
    for (const auto& [name, value] : fields) {
      nva.push_back(
          {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
           reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())),
           name.size(), value.size(), NGHTTP2_NV_FLAG_NONE});
    }
    return nva;
  }

  // A response: `head` as given (pseudo-header fields included), then the
  // body, then trailers if any.
  void Respond(int32_t stream_id, const Fields& head, std::string body = "",
               Fields trailers = {}) {
    const std::vector<nghttp2_nv> nva = Nva(head);
    if (body.empty() && trailers.empty()) {
      ASSERT_EQ(nghttp2_submit_response(session_, stream_id, nva.data(),
                                        nva.size(), nullptr),
                0);
      return;
    }
    downloads_.push_back(Download{std::move(body), 0, std::move(trailers)});
    nghttp2_data_provider provider;
    provider.source.ptr = &downloads_.back();
    provider.read_callback = ReadDownload;
    ASSERT_EQ(nghttp2_submit_response(session_, stream_id, nva.data(),
                                      nva.size(), &provider),
              0);
  }

  // A HEADERS frame on its own (interim heads, trailers out of place).
  void Headers(int32_t stream_id, const Fields& fields, bool end_stream) {
    const std::vector<nghttp2_nv> nva = Nva(fields);
    ASSERT_EQ(
        nghttp2_submit_headers(
            session_, end_stream ? NGHTTP2_FLAG_END_STREAM : NGHTTP2_FLAG_NONE,
            stream_id, nullptr, nva.data(), nva.size(), nullptr),
        0);
  }

  std::string Send() {
    std::string out;
    for (;;) {
      const uint8_t* data;
      const ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n <= 0) break;
      out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    return out;
  }

  void Recv(std::string_view bytes) {
    const ssize_t rv = nghttp2_session_mem_recv(
        session_, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    EXPECT_EQ(rv, static_cast<ssize_t>(bytes.size()));
  }

  nghttp2_session* session() { return session_; }

  std::map<int32_t, RawRequest> requests;
  std::vector<int32_t> order;
  std::vector<std::pair<int32_t, uint32_t>> goaways;  // last stream id, code
  int pings = 0;

 private:
  static RawServer* Self(void* p) { return static_cast<RawServer*>(p); }

  static ssize_t ReadDownload(nghttp2_session* session, int32_t stream_id,
                              uint8_t* buf, size_t length, uint32_t* flags,
                              nghttp2_data_source* source, void*) {
    Download* d = static_cast<Download*>(source->ptr);
    const size_t n = std::min(length, d->body.size() - d->offset);
    std::memcpy(buf, d->body.data() + d->offset, n);
    d->offset += n;
    if (d->offset == d->body.size()) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (!d->trailers.empty()) {
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        const std::vector<nghttp2_nv> nva = Nva(d->trailers);
        nghttp2_submit_trailer(session, stream_id, nva.data(), nva.size());
      }
    }
    return static_cast<ssize_t>(n);
  }

  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame,
                            void* p) {
    RawServer* self = Self(p);
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      self->order.push_back(frame->hd.stream_id);
    } else {
      self->requests[frame->hd.stream_id].in_trailers = true;
    }
    return 0;
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame,
                      const uint8_t* name, size_t namelen, const uint8_t* value,
                      size_t valuelen, uint8_t, void* p) {
    RawRequest& r = Self(p)->requests[frame->hd.stream_id];
    std::pair<std::string, std::string> field(
        std::string(reinterpret_cast<const char*>(name), namelen),
        std::string(reinterpret_cast<const char*>(value), valuelen));
    (r.in_trailers ? r.trailers : r.head).push_back(std::move(field));
    return 0;
  }

  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame,
                         void* p) {
    RawServer* self = Self(p);
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
      case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
          self->requests[frame->hd.stream_id].ended = true;
        }
        break;
      case NGHTTP2_RST_STREAM: {
        RawRequest& r = self->requests[frame->hd.stream_id];
        r.rst_received = true;
        r.rst_code = frame->rst_stream.error_code;
        break;
      }
      case NGHTTP2_GOAWAY:
        self->goaways.emplace_back(frame->goaway.last_stream_id,
                                   frame->goaway.error_code);
        break;
      case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) == 0) ++self->pings;
        break;
      default:
        break;
    }
    return 0;
  }

  static int OnData(nghttp2_session*, uint8_t, int32_t stream_id,
                    const uint8_t* data, size_t len, void* p) {
    Self(p)->requests[stream_id].body.append(
        reinterpret_cast<const char*>(data), len);
    return 0;
  }

  static int OnClose(nghttp2_session*, int32_t stream_id, uint32_t, void* p) {
    Self(p)->requests[stream_id].closed = true;
    return 0;
  }

  nghttp2_session* session_ = nullptr;
  std::deque<Download> downloads_;
};

// A client codec and a raw nghttp2 server, linked in memory.
struct RawFixture {
  explicit RawFixture(
      Http2ClientLimits limits = Http2ClientLimits(),
      const std::vector<nghttp2_settings_entry>& server_settings = {})
      : client(&events, limits), server(server_settings) {
    events.codec = &client;
  }

  void Run() {
    for (int round = 0; round < 100000; ++round) {
      std::string up;
      client.TakeOutput(&up);
      if (!up.empty()) server.Recv(up);
      const std::string down = server.Send();
      if (!down.empty() && !client.Receive(down)) client_ok = false;
      if (up.empty() && down.empty()) return;
    }
    ADD_FAILURE() << "the link never went quiet";
  }

  ClientRecorder events;
  Http2ClientCodec client;
  RawServer server;
  bool client_ok = true;
};

const Fields kOk = {{":status", "200"}};

// ---------------------------------------------------------------------------
// Raw frames, for what no HTTP/2 library sends.

std::string Frame(uint8_t type, uint8_t flags, uint32_t stream_id,
                  std::string_view payload) {
  return ::sluice::testing::Http2Frame(type, flags, stream_id,
                                      absl::string_view(payload.data(), payload.size()));
}

constexpr uint8_t kData = 0x0, kHeaders = 0x1, kSettings = 0x4, kPing = 0x6;
constexpr uint8_t kAck = 0x1, kEndStream = 0x1, kEndHeaders = 0x4;

// ---------------------------------------------------------------------------
// The normal path.

TEST(Http2ClientCodecTest, PrefaceAndSettingsAreQueuedAtConstruction) {
  ClientRecorder events;
  Http2ClientLimits limits;
  limits.initial_window_size = 100000;
  limits.max_header_list_bytes = 5000;
  limits.connection_window_size = 1 << 24;
  Http2ClientCodec client(&events, limits);
  EXPECT_TRUE(client.WantsWrite());
  std::string out;
  client.TakeOutput(&out);
  const std::string magic = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  ASSERT_GE(out.size(), magic.size() + 9);
  EXPECT_EQ(out.substr(0, magic.size()), magic);
  // SETTINGS: ENABLE_PUSH 0, INITIAL_WINDOW_SIZE, MAX_HEADER_LIST_SIZE.
  const std::string settings = out.substr(magic.size());
  ASSERT_GE(settings.size(), 9u + 18);
  EXPECT_EQ(settings[3], kSettings);
  auto setting = [&](uint16_t id) -> int64_t {
    for (size_t at = 9; at + 6 <= 9 + 18; at += 6) {
      const auto* p = reinterpret_cast<const uint8_t*>(settings.data() + at);
      if (((p[0] << 8) | p[1]) == id) {
        return (int64_t{p[2]} << 24) | (p[3] << 16) | (p[4] << 8) | p[5];
      }
    }
    return -1;
  };
  EXPECT_EQ(setting(NGHTTP2_SETTINGS_ENABLE_PUSH), 0);
  EXPECT_EQ(setting(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE), 100000);
  EXPECT_EQ(setting(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE), 5000);
  // Then the connection window goes up.
  const std::string window_update = settings.substr(9 + 18);
  ASSERT_EQ(window_update.size(), 13u);
  EXPECT_EQ(window_update[3], 0x8);
  const auto* p = reinterpret_cast<const uint8_t*>(window_update.data() + 9);
  EXPECT_EQ((uint32_t{p[0]} << 24) | (p[1] << 16) | (p[2] << 8) | p[3],
            (1u << 24) - 65535);
  EXPECT_FALSE(client.WantsWrite());
  // Before the peer's SETTINGS: 100 streams assumed.
  EXPECT_EQ(client.peer_max_concurrent_streams(), 100u);
  EXPECT_TRUE(client.CanOpenStream());
  EXPECT_TRUE(client.WantsRead());
}

TEST(Http2ClientCodecTest, SimpleGet) {
  Fixture f;
  f.server_events.on_headers = [&](int32_t id) {
    EXPECT_TRUE(f.server.SubmitResponse(
        id, 200, Headers({{"content-type", "text/plain"}, {"x-a", "1"}}),
        false));
    EXPECT_TRUE(f.server.SubmitData(id, "hello", true));
  };
  const std::vector<HeaderField> fields = {
      {"Accept", "*/*"},
      {"Host", "ignored.test"},
      {"Connection", "keep-alive, x-hop"},
      {"Keep-Alive", "timeout=5"},
      {"Proxy-Connection", "keep-alive"},
      {"Transfer-Encoding", "chunked"},
      {"Upgrade", "h2c"},
      {"TE", "gzip, Trailers;q=0.5"},
      {":path", "/evil"},
      {"x-bad-value", "a\r\nb"},
      {"bad name", "v"},
      {"X-Custom", "Mixed Case Value"},
  };
  const int32_t id = f.client.SubmitRequest(Get("/index.html?q=1", &fields),
                                            /*end_stream=*/true);
  ASSERT_EQ(id, 1);
  EXPECT_EQ(f.client.open_streams(), 1u);
  EXPECT_FALSE(f.client.SubmitData(id, "no body", true));
  f.Run();

  ASSERT_EQ(f.server_events.requests.count(id), 1u);
  const ServerRequest& req = f.server_events.requests[id];
  EXPECT_EQ(req.pseudo.method, "GET");
  EXPECT_EQ(req.pseudo.scheme, "http");
  EXPECT_EQ(req.pseudo.authority, "upstream.test");
  EXPECT_EQ(req.pseudo.path, "/index.html?q=1");
  EXPECT_TRUE(req.end_on_headers);
  EXPECT_FALSE(req.reset);
  ASSERT_NE(req.headers.Get("accept"), nullptr);
  EXPECT_EQ(*req.headers.Get("accept"), "*/*");
  ASSERT_NE(req.headers.Get("x-custom"), nullptr);
  EXPECT_EQ(req.headers.fields()[1].name, "te");
  EXPECT_EQ(req.headers.fields()[1].value, "trailers");
  EXPECT_EQ(req.headers.fields()[2].name, "x-custom");
  EXPECT_EQ(req.headers.fields()[2].value, "Mixed Case Value");
  EXPECT_EQ(req.headers.size(), 3u);  // everything else was dropped

  const Response& resp = f.client_events.responses[id];
  EXPECT_EQ(resp.status, 200);
  ASSERT_NE(resp.headers.Get("content-type"), nullptr);
  EXPECT_EQ(*resp.headers.Get("content-type"), "text/plain");
  EXPECT_EQ(resp.headers.Get(":status"), nullptr);
  EXPECT_FALSE(resp.end_on_headers);
  EXPECT_EQ(resp.body, "hello");
  EXPECT_TRUE(resp.body_ended);
  EXPECT_FALSE(resp.reset);
  EXPECT_EQ(f.client.open_streams(), 0u);
  EXPECT_TRUE(f.client_ok);
  EXPECT_TRUE(f.server_ok);
  EXPECT_TRUE(f.client.error().empty());
  EXPECT_EQ(f.client_events.settings, 1);
  EXPECT_EQ(f.client.peer_max_concurrent_streams(), 100u);  // the server's
  EXPECT_TRUE(f.client.WantsRead());
}

TEST(Http2ClientCodecTest, HeadOnlyResponseEndsOnHeaders) {
  Fixture f;
  f.server_events.on_headers = [&](int32_t id) {
    EXPECT_TRUE(f.server.SubmitResponse(id, 204, HeaderMap(), true));
  };
  const int32_t id = f.client.SubmitRequest(Get("/"), true);
  f.Run();
  const Response& resp = f.client_events.responses[id];
  EXPECT_EQ(resp.status, 204);
  EXPECT_TRUE(resp.end_on_headers);
  EXPECT_TRUE(resp.body.empty());
  EXPECT_EQ(f.client.open_streams(), 0u);
}

TEST(Http2ClientCodecTest, InformationalHeadsComeBeforeTheFinalOne) {
  Fixture f;
  f.server_events.on_headers = [&](int32_t id) {
    HeaderMap hints;
    hints.Add("link", "</a.css>; rel=preload");
    EXPECT_TRUE(f.server.SubmitResponse(id, 103, hints, false));
    EXPECT_TRUE(f.server.SubmitResponse(id, 200, HeaderMap(), true));
  };
  const int32_t id = f.client.SubmitRequest(Get("/"), true);
  f.Run();
  ASSERT_EQ(f.client_events.informational.size(), 1u);
  EXPECT_EQ(f.client_events.informational[0].stream_id, id);
  EXPECT_EQ(f.client_events.informational[0].status, 103);
  ASSERT_NE(f.client_events.informational[0].headers.Get("link"), nullptr);
  EXPECT_EQ(f.client_events.responses[id].status, 200);
}

TEST(Http2ClientCodecTest, AuthorityFromTheHostFieldWhenNoneIsGiven) {
  Fixture f;
  const std::vector<HeaderField> fields = {{"host", "from-host.test:8080"}};
  Http2Request request = Get("/", &fields);
  request.authority = "";
  const int32_t id = f.client.SubmitRequest(request, true);
  f.Run();
  const ServerRequest& req = f.server_events.requests[id];
  EXPECT_EQ(req.pseudo.authority, "from-host.test:8080");
  EXPECT_EQ(req.headers.Get("host"), nullptr);
}

TEST(Http2ClientCodecTest, ConnectSendsOnlyMethodAndAuthority) {
  Fixture f;
  Http2Request connect;
  connect.method = "CONNECT";
  connect.scheme = "https";  // not sent
  connect.path = "/";        // not sent
  connect.authority = "tunnel.test:443";
  const int32_t id = f.client.SubmitRequest(connect, false);
  ASSERT_GT(id, 0);
  f.Run();
  const ServerRequest& req = f.server_events.requests[id];
  EXPECT_EQ(req.pseudo.method, "CONNECT");
  EXPECT_EQ(req.pseudo.authority, "tunnel.test:443");
  EXPECT_TRUE(req.pseudo.scheme.empty());
  EXPECT_TRUE(req.pseudo.path.empty());
  EXPECT_FALSE(req.reset);
}

// RFC 8441: an extended CONNECT keeps :scheme and :path and adds
// :protocol, and goes only to a peer whose SETTINGS allowed it (before they
// came, or where they did not, SubmitRequest refuses it and sends nothing).
TEST(Http2ClientCodecTest, AnExtendedConnectGoesOnlyWhereTheSettingsAllowIt) {
  Http2Request websocket = Get("/chat");
  websocket.method = "CONNECT";
  websocket.protocol = "websocket";
  {
    Fixture f;
    EXPECT_FALSE(f.client.peer_allows_extended_connect());
    EXPECT_EQ(f.client.SubmitRequest(websocket, false), -1);  // no SETTINGS yet
    f.Run();
    EXPECT_TRUE(f.client.peer_allows_extended_connect());
    const int32_t id = f.client.SubmitRequest(websocket, false);
    ASSERT_GT(id, 0);
    f.Run();
    const ServerRequest& req = f.server_events.requests[id];
    EXPECT_EQ(req.pseudo.method, "CONNECT");
    EXPECT_EQ(req.pseudo.protocol, "websocket");
    EXPECT_EQ(req.pseudo.path, "/chat");
    EXPECT_FALSE(req.pseudo.scheme.empty());
    EXPECT_FALSE(req.end_on_headers);
    EXPECT_FALSE(req.reset);
  }
  Http2Limits no_websocket;
  no_websocket.enable_connect_protocol = false;
  Fixture f(Http2ClientLimits(), no_websocket);
  f.Run();
  EXPECT_FALSE(f.client.peer_allows_extended_connect());
  EXPECT_EQ(f.client.SubmitRequest(websocket, false), -1);
  Http2Request not_connect = Get("/chat");
  not_connect.protocol = "websocket";
  EXPECT_EQ(f.client.SubmitRequest(not_connect, false), -1);
  f.Run();
  EXPECT_TRUE(f.server_events.requests.empty());
}

TEST(Http2ClientCodecTest, IncompleteRequestsAreNotSent) {
  Fixture f;
  Http2Request no_path = Get("");
  EXPECT_EQ(f.client.SubmitRequest(no_path, true), -1);
  Http2Request no_method = Get("/");
  no_method.method = "";
  EXPECT_EQ(f.client.SubmitRequest(no_method, true), -1);
  Http2Request connect;
  connect.method = "CONNECT";
  EXPECT_EQ(f.client.SubmitRequest(connect, true), -1);  // no authority
  EXPECT_EQ(f.client.open_streams(), 0u);
  f.Run();
  EXPECT_TRUE(f.server_events.requests.empty());
  // The next valid request still gets the first stream id.
  EXPECT_EQ(f.client.SubmitRequest(Get("/"), true), 1);
}

// ---------------------------------------------------------------------------
// Request and response bodies, flow control.

TEST(Http2ClientCodecTest, PostBodyLargerThanTheWindowsGoesOutAsCreditComes) {
  Http2ClientLimits client_limits;
  client_limits.stream_send_low_watermark = 16 * 1024;
  Http2Limits server_limits;
  server_limits.initial_window_size = 16384;  // the server's stream window
  server_limits.max_request_body_buffer = 16384;
  server_limits.connection_window_size = 65535;
  Fixture f(client_limits, server_limits);
  f.server_events.consume = false;  // the server's caller is slow
  f.Run();  // SETTINGS both ways: the client knows the server's windows

  const std::vector<HeaderField> fields = {{"content-type", "a/b"}};
  const int32_t id = f.client.SubmitRequest(Post("/upload", &fields), false);
  const std::string body = Pattern(500000, 'a');
  // Submitted in pieces, as an HTTP/1 body arrives.
  for (size_t at = 0; at < body.size(); at += 100000) {
    EXPECT_TRUE(f.client.SubmitData(id,
                                    std::string_view(body).substr(at, 100000),
                                    at + 100000 >= body.size()));
  }
  EXPECT_FALSE(f.client.SubmitData(id, "after the end", false));
  EXPECT_EQ(f.client.QueuedBytes(id), body.size());
  f.Run();

  // The server's stream window allows 16 KiB while nothing is consumed.
  const ServerRequest& req = f.server_events.requests[id];
  EXPECT_EQ(req.body.size(), 16384u);
  EXPECT_EQ(f.client.QueuedBytes(id), body.size() - 16384);
  EXPECT_EQ(f.client_events.responses[id].writable, 0);

  size_t consumed = 0;
  int rounds = 0;
  while (!req.body_ended && rounds++ < 1000) {
    f.server.ConsumeRequestData(id, req.body.size() - consumed);
    consumed = req.body.size();
    f.Run();
  }
  EXPECT_GT(rounds, 20);
  EXPECT_EQ(req.body, body);
  EXPECT_TRUE(req.body_ended);
  EXPECT_GE(req.data_calls, 30);  // many DATA frames
  EXPECT_EQ(f.client.QueuedBytes(id), 0u);
  EXPECT_EQ(f.client_events.responses[id].writable, 1);

  ASSERT_TRUE(f.server.SubmitResponse(id, 201, HeaderMap(), true));
  f.Run();
  EXPECT_EQ(f.client_events.responses[id].status, 201);
  EXPECT_EQ(f.client.open_streams(), 0u);
  EXPECT_FALSE(f.server_events.requests[id].reset);
}

TEST(Http2ClientCodecTest, AnIdleSessionGivesItsFrameBufferPagesBack) {
  Fixture f;
  f.Run();
  const http2::SessionMemory& memory = f.client.memory();
  ASSERT_TRUE(memory.has_frame_buffer());
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t capacity = memory.frame_buffer_capacity();
  ASSERT_TRUE(memory.has_stream_map());
  const size_t map_capacity = memory.stream_map_capacity();
  for (char seed : {'a', 'P'}) {
    const std::vector<HeaderField> fields = {{"content-type", "a/b"}};
    const int32_t id = f.client.SubmitRequest(Post("/upload", &fields), false);
    const std::string body = Pattern(40000, seed);
    ASSERT_TRUE(f.client.SubmitData(id, body, true));
    EXPECT_EQ(f.client.ReleaseIdleMemory(), 0u);  // output waits
    f.Run();
    const ServerRequest& req = f.server_events.requests[id];
    EXPECT_EQ(req.body, body);
    ASSERT_TRUE(f.server.SubmitResponse(id, 204, HeaderMap(), true));
    f.Run();
    EXPECT_EQ(f.client_events.responses[id].status, 204);
    EXPECT_EQ(sluice::testing::ResidentPages(memory.frame_buffer(), capacity), capacity / page);
    EXPECT_EQ(sluice::testing::ResidentPages(memory.stream_map(), map_capacity), 1u);
    EXPECT_EQ(f.client.ReleaseIdleMemory(), map_capacity + capacity);
    EXPECT_EQ(sluice::testing::ResidentPages(memory.frame_buffer(), capacity), 0u);
    EXPECT_EQ(sluice::testing::ResidentPages(memory.stream_map(), map_capacity), 0u);
  }
  EXPECT_TRUE(f.client_ok);
  EXPECT_TRUE(f.server_ok);
}

TEST(Http2ClientCodecTest, StalledUploadDoesNotStopAnotherStream) {
  Http2Limits server_limits;
  server_limits.initial_window_size = 16384;
  server_limits.max_request_body_buffer = 16384;
  server_limits.connection_window_size = 65535;
  Fixture f(Http2ClientLimits(), server_limits);
  f.Run();
  const int32_t slow = f.client.SubmitRequest(Post("/slow"), false);
  const int32_t fast = f.client.SubmitRequest(Post("/fast"), false);
  // The server's caller passes on every body but `slow`'s.
  f.server_events.hold.insert(slow);
  const std::string big = Pattern(300000, 'A');
  ASSERT_TRUE(f.client.SubmitData(slow, big, true));
  ASSERT_TRUE(f.client.SubmitData(fast, big, true));
  f.Run();
  EXPECT_EQ(f.server_events.requests[fast].body, big);
  EXPECT_TRUE(f.server_events.requests[fast].body_ended);
  EXPECT_EQ(f.client.QueuedBytes(fast), 0u);
  EXPECT_EQ(f.server_events.requests[slow].body.size(), 16384u);
  EXPECT_EQ(f.client.QueuedBytes(slow), big.size() - 16384);
}

TEST(Http2ClientCodecTest, SlowCallerStallsOnlyItsOwnResponse) {
  Http2ClientLimits limits;
  limits.initial_window_size = 16384;
  limits.max_response_body_buffer = 32768;
  limits.connection_window_size = 65535;
  Fixture f(limits);
  f.Run();
  const std::string big = Pattern(400000, 'k');
  f.server_events.on_headers = [&](int32_t id) {
    ASSERT_TRUE(f.server.SubmitResponse(id, 200, HeaderMap(), false));
    ASSERT_TRUE(f.server.SubmitData(id, big, true));
  };
  const int32_t slow = f.client.SubmitRequest(Get("/slow"), true);
  const int32_t fast = f.client.SubmitRequest(Get("/fast"), true);
  // The caller passes on every body but `slow`'s at once.
  f.client_events.hold.insert(slow);
  f.Run();

  EXPECT_EQ(f.client_events.responses[fast].body, big);
  EXPECT_TRUE(f.client_events.responses[fast].body_ended);
  // `slow` holds at most max(max_response_body_buffer, window) unconsumed.
  const size_t held = f.client_events.responses[slow].body.size();
  EXPECT_LE(held, 32768u);
  EXPECT_GE(held, 32768u - 16384);
  EXPECT_FALSE(f.client_events.responses[slow].body_ended);
  EXPECT_GT(f.server.QueuedBytes(slow), 0u);

  size_t consumed = 0;
  for (int i = 0; i < 1000 && !f.client_events.responses[slow].body_ended;
       ++i) {
    const size_t have = f.client_events.responses[slow].body.size();
    f.client.ConsumeResponseData(slow, have - consumed);
    consumed = have;
    f.Run();
    EXPECT_LE(f.client_events.responses[slow].body.size() - consumed, 32768u);
  }
  EXPECT_EQ(f.client_events.responses[slow].body, big);
  EXPECT_EQ(f.client.open_streams(), 0u);
}

// With the default limits a response nobody reads holds at most 256 KiB: an
// upstream fills no more, whatever it has to send (100 stalled streams of
// one client held 100 MiB with the earlier 1 MiB window).
TEST(Http2ClientCodecTest, AStalledResponseHoldsAtMostTheDefaultWindow) {
  Fixture f{Http2ClientLimits()};
  f.Run();
  const std::string big = Pattern(4 << 20, 'w');
  f.server_events.on_headers = [&](int32_t id) {
    ASSERT_TRUE(f.server.SubmitResponse(id, 200, HeaderMap(), false));
    ASSERT_TRUE(f.server.SubmitData(id, big, true));
  };
  const int32_t stalled = f.client.SubmitRequest(Get("/stalled"), true);
  f.client_events.hold.insert(stalled);
  f.Run();
  const size_t held = f.client_events.responses[stalled].body.size();
  EXPECT_LE(held, 256u << 10);
  EXPECT_GT(held, 0u);
  EXPECT_FALSE(f.client_events.responses[stalled].body_ended);
}

TEST(Http2ClientCodecTest, BytesOfResetStreamsStillReturnConnectionCredit) {
  Http2ClientLimits limits;
  limits.initial_window_size = 65535;
  limits.connection_window_size = 65535;
  limits.max_response_body_buffer = 65535;
  Fixture f(limits);
  f.Run();
  f.server_events.on_headers = [&](int32_t id) {
    ASSERT_TRUE(f.server.SubmitResponse(id, 200, HeaderMap(), false));
    ASSERT_TRUE(f.server.SubmitData(id, Pattern(60000, 'c'), true));
  };
  // The caller gives up on each response at its first bytes; the rest of
  // them arrive for a stream that is gone.
  f.client_events.on_data = [&](int32_t id) {
    if (f.client_events.caller_reset.insert(id).second) {
      f.client.ResetStream(id, NGHTTP2_CANCEL);
    }
  };
  for (int i = 0; i < 10; ++i) {
    f.client.SubmitRequest(Get("/abandoned"), true);
    f.Run();
  }
  f.client_events.on_data = nullptr;
  const int32_t id = f.client.SubmitRequest(Get("/last"), true);
  f.Run();
  EXPECT_EQ(f.client_events.responses[id].body, Pattern(60000, 'c'));
  EXPECT_TRUE(f.client_events.responses[id].body_ended);
  EXPECT_TRUE(f.client_events.reset_order.empty());
}

TEST(Http2ClientCodecTest, GrpcLikeTrailersBothWays) {
  Fixture f;
  f.server_events.on_trailers = [&](int32_t id) {
    ASSERT_TRUE(f.server.SubmitResponse(
        id, 200, Headers({{"content-type", "application/grpc"}}), false));
    ASSERT_TRUE(
        f.server.SubmitData(id, std::string("\0\0\0\0\5reply", 10), false));
    ASSERT_TRUE(f.server.SubmitData(id, "-more", false));
    ASSERT_TRUE(f.server.SubmitTrailers(
        id, Headers({{"grpc-status", "0"}, {"grpc-message", "ok"}})));
  };
  const std::vector<HeaderField> fields = {{"content-type", "application/grpc"},
                                           {"te", "trailers"}};
  const int32_t id =
      f.client.SubmitRequest(Post("/pkg.Svc/Call", &fields), false);
  ASSERT_TRUE(
      f.client.SubmitData(id, std::string("\0\0\0\0\5hello", 10), false));
  const std::vector<HeaderField> trailers = {
      {"x-checksum", "abc"}, {"te", "trailers"}, {":bad", "x"}};
  ASSERT_TRUE(f.client.SubmitTrailers(id, trailers.data(), trailers.size()));
  EXPECT_FALSE(f.client.SubmitData(id, "late", true));
  EXPECT_FALSE(f.client.SubmitTrailers(id, trailers.data(), 1));
  f.Run();

  const ServerRequest& req = f.server_events.requests[id];
  ASSERT_NE(req.headers.Get("te"), nullptr);
  EXPECT_EQ(*req.headers.Get("te"), "trailers");
  EXPECT_EQ(req.body, std::string("\0\0\0\0\5hello", 10));
  EXPECT_FALSE(req.body_ended);  // the trailers end it
  ASSERT_TRUE(req.has_trailers);
  ASSERT_EQ(req.trailers.size(), 1u);
  EXPECT_EQ(*req.trailers.Get("x-checksum"), "abc");
  EXPECT_FALSE(req.reset);

  const Response& resp = f.client_events.responses[id];
  EXPECT_EQ(resp.status, 200);
  EXPECT_EQ(resp.body, std::string("\0\0\0\0\5reply", 10) + "-more");
  EXPECT_FALSE(resp.body_ended);
  ASSERT_TRUE(resp.has_trailers);
  ASSERT_NE(resp.trailers.Get("grpc-status"), nullptr);
  EXPECT_EQ(*resp.trailers.Get("grpc-status"), "0");
  EXPECT_EQ(*resp.trailers.Get("grpc-message"), "ok");
  EXPECT_FALSE(resp.reset);
  EXPECT_EQ(f.client.open_streams(), 0u);
}

TEST(Http2ClientCodecTest, EmptyTrailersJustEndTheBody) {
  Fixture f;
  const int32_t id = f.client.SubmitRequest(Post("/"), false);
  ASSERT_TRUE(f.client.SubmitData(id, "body", false));
  ASSERT_TRUE(f.client.SubmitTrailers(id, nullptr, 0));
  f.Run();
  const ServerRequest& req = f.server_events.requests[id];
  EXPECT_EQ(req.body, "body");
  EXPECT_TRUE(req.body_ended);
  EXPECT_FALSE(req.has_trailers);
}

TEST(Http2ClientCodecTest, ResponseCompletingDuringTheUploadDropsTheRest) {
  Http2Limits server_limits;
  server_limits.initial_window_size = 16384;
  server_limits.max_request_body_buffer = 16384;
  Fixture f(Http2ClientLimits(), server_limits);
  f.server_events.consume = false;  // the upload stalls at the window
  f.Run();
  f.server_events.on_headers = [&](int32_t id) {
    EXPECT_TRUE(f.server.SubmitResponse(
        id, 413, Headers({{"content-length", "4"}}), false));
    EXPECT_TRUE(f.server.SubmitData(id, "nope", true));
  };
  const int32_t id = f.client.SubmitRequest(Post("/"), false);
  ASSERT_TRUE(f.client.SubmitData(id, Pattern(300000, 'u'), false));
  f.Run();
  const Response& resp = f.client_events.responses[id];
  EXPECT_EQ(resp.status, 413);
  EXPECT_EQ(resp.body, "nope");
  EXPECT_TRUE(resp.body_ended);
  EXPECT_FALSE(resp.reset);
  EXPECT_EQ(f.client.open_streams(), 0u);
  EXPECT_EQ(f.client.QueuedBytes(id), 0u);
  EXPECT_FALSE(f.client.SubmitData(id, "more", true));
  // Both sides stopped the stream without error.
  EXPECT_TRUE(f.server_events.requests[id].reset);
  EXPECT_EQ(f.server_events.requests[id].reset_code, NGHTTP2_NO_ERROR);
  EXPECT_LE(f.server_events.requests[id].body.size(), 16384u);
  EXPECT_TRUE(f.client_ok);
  EXPECT_TRUE(f.server_ok);
}

TEST(Http2ClientCodecTest, ResponseCompletingBeforeTheRequestEndsIsReported) {
  // Raw server: it answers and ends its side without RST_STREAM; the client
  // stops its request with RST_STREAM(NO_ERROR) itself.
  RawFixture f;
  const int32_t id = f.client.SubmitRequest(Post("/"), false);
  ASSERT_TRUE(f.client.SubmitData(id, "first part", false));
  f.Run();
  EXPECT_EQ(f.server.requests[id].body, "first part");
  f.server.Respond(id, kOk, "done");
  f.Run();
  const Response& resp = f.events.responses[id];
  EXPECT_EQ(resp.body, "done");
  EXPECT_TRUE(resp.body_ended);
  EXPECT_FALSE(resp.reset);
  EXPECT_FALSE(f.client.SubmitData(id, "second part", true));
  EXPECT_TRUE(f.server.requests[id].rst_received);
  EXPECT_EQ(f.server.requests[id].rst_code, NGHTTP2_NO_ERROR);
  EXPECT_FALSE(f.server.requests[id].ended);
  EXPECT_EQ(f.client.open_streams(), 0u);
}

// RFC 9113 5.4.2: no RST_STREAM answers one. A server that ends its answer
// and resets the request (NO_ERROR, RFC 9113 8.1) in one write got an
// RST_STREAM(NO_ERROR) back: the client's, queued when the response ended.
TEST(Http2ClientCodecTest, AnEarlyAnswersOwnResetIsNotAnsweredWithAnother) {
  RawFixture f;
  const int32_t id = f.client.SubmitRequest(Post("/"), false);
  ASSERT_TRUE(f.client.SubmitData(id, "first part", false));
  f.Run();
  f.server.Respond(id, kOk, "done");
  std::string down = f.server.Send();  // the answer, whole
  nghttp2_submit_rst_stream(f.server.session(), NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
  down += f.server.Send();  // and the reset, read with it
  ASSERT_TRUE(f.client.Receive(down));
  f.Run();
  const Response& resp = f.events.responses[id];
  EXPECT_EQ(resp.body, "done");
  EXPECT_TRUE(resp.body_ended);
  EXPECT_FALSE(resp.reset);
  EXPECT_FALSE(f.server.requests[id].rst_received);
  EXPECT_EQ(f.client.open_streams(), 0u);
  EXPECT_FALSE(f.client.SubmitData(id, "second part", true));
}

TEST(Http2ClientCodecTest, UnsendableRequestPartsEndTheStream) {
  RawFixture f;
  f.Run();
  // Over nghttp2's 64 KiB limit on a header block it sends.
  const std::string huge(70000, 'h');
  const std::vector<HeaderField> big_head = {{"x-huge", huge}};
  const int32_t head = f.client.SubmitRequest(Get("/", &big_head), true);
  const int32_t trailers = f.client.SubmitRequest(Post("/"), false);
  ASSERT_TRUE(f.client.SubmitData(trailers, "body", false));
  const std::vector<HeaderField> big_trailers = {{"x-huge", huge}};
  ASSERT_TRUE(f.client.SubmitTrailers(trailers, big_trailers.data(),
                                      big_trailers.size()));
  f.Run();
  const Response& rh = f.events.responses[head];
  EXPECT_TRUE(rh.reset);
  EXPECT_EQ(rh.reset_code, NGHTTP2_INTERNAL_ERROR);
  EXPECT_FALSE(rh.refused);  // sending it elsewhere would not help
  EXPECT_NE(rh.reason.find("request head"), std::string::npos) << rh.reason;
  EXPECT_EQ(f.server.requests.count(head), 0u);
  const Response& rt = f.events.responses[trailers];
  EXPECT_TRUE(rt.reset);
  EXPECT_EQ(rt.reset_code, NGHTTP2_INTERNAL_ERROR);
  EXPECT_FALSE(rt.refused);
  EXPECT_NE(rt.reason.find("trailers"), std::string::npos) << rt.reason;
  EXPECT_EQ(f.server.requests[trailers].body, "body");
  EXPECT_TRUE(f.server.requests[trailers].rst_received);
  EXPECT_EQ(f.server.requests[trailers].rst_code, NGHTTP2_INTERNAL_ERROR);
  // The connection is fine.
  EXPECT_TRUE(f.client_ok);
  EXPECT_TRUE(f.client.CanOpenStream());
  const int32_t next = f.client.SubmitRequest(Get("/next"), true);
  f.Run();
  f.server.Respond(next, kOk, "ok");
  f.Run();
  EXPECT_EQ(f.events.responses[next].body, "ok");
}

TEST(Http2ClientCodecTest, InterimResponsesAreDropped) {
  Fixture f;
  f.server_events.on_headers = [&](int32_t id) {
    EXPECT_TRUE(f.server.SubmitResponse(id, 100, HeaderMap(), false));
    EXPECT_TRUE(f.server.SubmitResponse(
        id, 103, Headers({{"link", "</a.css>; rel=preload"}}), false));
    EXPECT_TRUE(
        f.server.SubmitResponse(id, 200, Headers({{"x-final", "yes"}}), true));
  };
  const int32_t id = f.client.SubmitRequest(Get("/"), true);
  f.Run();
  const Response& resp = f.client_events.responses[id];
  EXPECT_EQ(resp.status, 200);
  EXPECT_TRUE(resp.end_on_headers);
  EXPECT_EQ(resp.headers.Get("link"), nullptr);
  ASSERT_NE(resp.headers.Get("x-final"), nullptr);
  EXPECT_EQ(resp.headers.size(), 1u);
  EXPECT_EQ(f.client.open_streams(), 0u);
}

// ---------------------------------------------------------------------------
// Concurrency.

TEST(Http2ClientCodecTest, PeerSettingsLimitConcurrentStreams) {
  Http2Limits server_limits;
  server_limits.max_concurrent_streams = 3;
  Fixture f(Http2ClientLimits(), server_limits);
  EXPECT_EQ(f.client.peer_max_concurrent_streams(), 100u);
  f.Run();  // SETTINGS both ways
  EXPECT_EQ(f.client_events.settings, 1);
  EXPECT_EQ(f.client.peer_max_concurrent_streams(), 3u);

  std::vector<int32_t> ids;
  while (f.client.CanOpenStream()) {
    ids.push_back(f.client.SubmitRequest(Get("/"), true));
  }
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(f.client.SubmitRequest(Get("/"), true), -1);
  f.Run();
  EXPECT_EQ(f.server_events.order.size(), 3u);
  EXPECT_FALSE(f.client.CanOpenStream());

  // One completes: room for one more.
  ASSERT_TRUE(f.server.SubmitResponse(ids[1], 200, HeaderMap(), true));
  f.Run();
  EXPECT_EQ(f.client.open_streams(), 2u);
  EXPECT_TRUE(f.client.CanOpenStream());
  ids.push_back(f.client.SubmitRequest(Get("/"), true));
  EXPECT_GT(ids.back(), 0);
  EXPECT_FALSE(f.client.CanOpenStream());
  f.Run();
  EXPECT_EQ(f.server_events.order.size(), 4u);
  for (int32_t id : f.server_events.order) {
    EXPECT_FALSE(f.server_events.requests[id].reset) << id;
  }
}

TEST(Http2ClientCodecTest, SettingsWithoutALimitMeanUnlimited) {
  RawFixture f;
  f.Run();
  EXPECT_EQ(f.events.settings, 1);
  EXPECT_EQ(f.client.peer_max_concurrent_streams(), 0xffffffffu);
  EXPECT_TRUE(f.client.CanOpenStream());
}

TEST(Http2ClientCodecTest, ManyStreamsInterleaved) {
  Fixture f;
  std::vector<int32_t> ids;
  for (int i = 0; i < 50; ++i) {
    ids.push_back(
        f.client.SubmitRequest(Get("/" + std::to_string(i)), /*end=*/true));
  }
  f.server_events.on_headers = [&](int32_t id) {
    ASSERT_TRUE(f.server.SubmitResponse(id, 200, HeaderMap(), false));
    ASSERT_TRUE(f.server.SubmitData(
        id, Pattern(20000 + static_cast<size_t>(id), 'm'), true));
  };
  EXPECT_EQ(f.client.open_streams(), 50u);
  f.Run();
  for (int32_t id : ids) {
    const Response& resp = f.client_events.responses[id];
    EXPECT_EQ(resp.body, Pattern(20000 + static_cast<size_t>(id), 'm')) << id;
    EXPECT_TRUE(resp.body_ended);
  }
  EXPECT_EQ(f.client.open_streams(), 0u);
}

// ---------------------------------------------------------------------------
// Stream ends: GOAWAY, REFUSED_STREAM, resets.

TEST(Http2ClientCodecTest, GoawayRefusesTheStreamsAboveItsLastStreamId) {
  RawFixture f;
  const int32_t a = f.client.SubmitRequest(Get("/a"), true);
  const int32_t b = f.client.SubmitRequest(Get("/b"), true);
  const int32_t c = f.client.SubmitRequest(Get("/c"), true);
  f.Run();
  ASSERT_EQ(f.server.order.size(), 3u);

  // The server processed a and b; c is above its last stream id.
  nghttp2_submit_goaway(f.server.session(), NGHTTP2_FLAG_NONE, b,
                        NGHTTP2_NO_ERROR, nullptr, 0);
  const std::string goaway = f.server.Send();
  // A request submitted before the GOAWAY arrives, its HEADERS not yet out.
  const int32_t d = f.client.SubmitRequest(Get("/d"), true);
  ASSERT_GT(d, 0);
  EXPECT_TRUE(f.client.Receive(goaway));

  ASSERT_EQ(f.events.goaways.size(), 1u);
  EXPECT_EQ(f.events.goaways[0].first, b);
  EXPECT_EQ(f.events.goaways[0].second, NGHTTP2_NO_ERROR);
  EXPECT_TRUE(f.client.goaway_received());
  EXPECT_FALSE(f.client.CanOpenStream());
  EXPECT_EQ(f.client.SubmitRequest(Get("/e"), true), -1);

  for (int32_t id : {c, d}) {
    const Response& r = f.events.responses[id];
    EXPECT_TRUE(r.reset) << id;
    EXPECT_EQ(r.reset_code, NGHTTP2_REFUSED_STREAM) << id;
    EXPECT_TRUE(r.refused) << id;
  }
  EXPECT_NE(f.events.responses[c].reason.find("GOAWAY"), std::string::npos)
      << f.events.responses[c].reason;
  EXPECT_NE(f.events.responses[d].reason.find("not sent"), std::string::npos)
      << f.events.responses[d].reason;
  EXPECT_EQ(f.client.open_streams(), 2u);
  EXPECT_TRUE(f.client.WantsRead());

  // a and b complete.
  f.server.Respond(a, kOk, "A");
  f.server.Respond(b, kOk, "B");
  f.Run();
  EXPECT_EQ(f.events.responses[a].body, "A");
  EXPECT_EQ(f.events.responses[b].body, "B");
  EXPECT_FALSE(f.events.responses[a].reset);
  EXPECT_EQ(f.server.order.size(), 3u);  // d never reached the server
  EXPECT_EQ(f.client.open_streams(), 0u);
  EXPECT_FALSE(f.client.WantsRead());  // done with this connection
  EXPECT_TRUE(f.client.error().empty());
}

TEST(Http2ClientCodecTest, RefusedStreamIsSafeToRetry) {
  RawFixture f;
  const int32_t a = f.client.SubmitRequest(Get("/a"), true);
  const int32_t b = f.client.SubmitRequest(Get("/b"), true);
  const int32_t c = f.client.SubmitRequest(Post("/c"), false);
  ASSERT_TRUE(f.client.SubmitData(c, "partial", false));
  f.Run();
  nghttp2_submit_rst_stream(f.server.session(), NGHTTP2_FLAG_NONE, a,
                            NGHTTP2_REFUSED_STREAM);
  // b got a head first: a REFUSED_STREAM now contradicts it.
  f.server.Headers(b, kOk, false);
  f.Run();
  nghttp2_submit_rst_stream(f.server.session(), NGHTTP2_FLAG_NONE, b,
                            NGHTTP2_REFUSED_STREAM);
  nghttp2_submit_rst_stream(f.server.session(), NGHTTP2_FLAG_NONE, c,
                            NGHTTP2_CANCEL);
  f.Run();

  const Response& ra = f.events.responses[a];
  EXPECT_TRUE(ra.reset);
  EXPECT_EQ(ra.reset_code, NGHTTP2_REFUSED_STREAM);
  EXPECT_TRUE(ra.refused);
  EXPECT_TRUE(ra.by_peer);  // the upstream's RST_STREAM
  EXPECT_NE(ra.reason.find("REFUSED_STREAM"), std::string::npos) << ra.reason;
  const Response& rb = f.events.responses[b];
  EXPECT_EQ(rb.status, 200);
  EXPECT_TRUE(rb.reset);
  EXPECT_EQ(rb.reset_code, NGHTTP2_REFUSED_STREAM);
  EXPECT_FALSE(rb.refused);
  const Response& rc = f.events.responses[c];
  EXPECT_TRUE(rc.reset);
  EXPECT_EQ(rc.reset_code, NGHTTP2_CANCEL);
  EXPECT_FALSE(rc.refused);
  EXPECT_FALSE(f.client.SubmitData(c, "rest", true));
  EXPECT_EQ(f.client.open_streams(), 0u);
  EXPECT_TRUE(f.client.CanOpenStream());  // the connection is fine
  EXPECT_TRUE(f.client_ok);
}

TEST(Http2ClientCodecTest, CallerResetGetsNoCallback) {
  Fixture f;
  // Sent, then reset.
  const int32_t sent = f.client.SubmitRequest(Post("/sent"), false);
  ASSERT_TRUE(f.client.SubmitData(sent, "some", false));
  f.Run();
  ASSERT_EQ(f.server_events.requests.count(sent), 1u);
  f.client_events.caller_reset.insert(sent);
  f.client.ResetStream(sent, NGHTTP2_CANCEL);
  EXPECT_FALSE(f.client.SubmitData(sent, "more", true));
  EXPECT_EQ(f.client.open_streams(), 0u);
  // Reset before its HEADERS went out: the server never hears of it.
  const int32_t unsent = f.client.SubmitRequest(Get("/unsent"), true);
  f.client_events.caller_reset.insert(unsent);
  f.client.ResetStream(unsent, NGHTTP2_CANCEL);
  // Reset while its response arrives.
  const int32_t mid = f.client.SubmitRequest(Get("/mid"), true);
  f.server_events.on_headers = [&](int32_t id) {
    if (id != mid) return;
    ASSERT_TRUE(f.server.SubmitResponse(id, 200, HeaderMap(), false));
    // A response that never ends while the client listens.
    ASSERT_TRUE(f.server.SubmitData(id, Pattern(100000, 'x'), false));
  };
  f.client_events.on_data = [&](int32_t id) {
    if (id != mid || f.client_events.caller_reset.count(id)) return;
    f.client_events.caller_reset.insert(id);
    f.client.ResetStream(id, NGHTTP2_CANCEL);
  };
  f.Run();

  EXPECT_TRUE(f.server_events.requests[sent].reset);
  EXPECT_EQ(f.server_events.requests[sent].reset_code, NGHTTP2_CANCEL);
  EXPECT_EQ(f.server_events.requests.count(unsent), 0u);
  EXPECT_TRUE(f.server_events.requests[mid].reset);
  EXPECT_LT(f.client_events.responses[mid].body.size(), 100000u);
  for (int32_t id : {sent, unsent, mid}) {
    EXPECT_FALSE(f.client_events.responses[id].reset) << id;
  }
  EXPECT_TRUE(f.client_events.reset_order.empty());
  EXPECT_EQ(f.client.open_streams(), 0u);
  EXPECT_TRUE(f.client_ok);
  EXPECT_TRUE(f.client.CanOpenStream());
}

TEST(Http2ClientCodecTest, TransportCloseEndsEveryStream) {
  Fixture f;
  const int32_t sent = f.client.SubmitRequest(Get("/sent"), true);
  const int32_t answered = f.client.SubmitRequest(Get("/answered"), true);
  f.server_events.on_headers = [&](int32_t id) {
    if (id == answered) {
      ASSERT_TRUE(f.server.SubmitResponse(id, 200, HeaderMap(), false));
      ASSERT_TRUE(f.server.SubmitData(id, "part", false));
    }
  };
  f.Run();
  ASSERT_EQ(f.client_events.responses[answered].body, "part");
  const int32_t unsent = f.client.SubmitRequest(Get("/unsent"), true);
  std::string partial;
  // Its HEADERS is framed, but the bytes never reach the server: the codec
  // cannot know, so it is not refused.
  const int32_t framed = f.client.SubmitRequest(Get("/framed"), true);
  f.client.TakeOutput(&partial);
  const int32_t after = f.client.SubmitRequest(Get("/after"), true);

  f.client.OnTransportClosed();
  EXPECT_EQ(f.client.open_streams(), 0u);
  const Response& rs = f.client_events.responses[sent];
  EXPECT_TRUE(rs.reset);
  EXPECT_EQ(rs.reset_code, NGHTTP2_INTERNAL_ERROR);
  EXPECT_FALSE(rs.refused);
  EXPECT_TRUE(f.client_events.responses[answered].reset);
  EXPECT_FALSE(f.client_events.responses[answered].refused);
  EXPECT_TRUE(f.client_events.responses[framed].reset);
  EXPECT_FALSE(f.client_events.responses[framed].refused);
  EXPECT_TRUE(f.client_events.responses[after].reset);
  EXPECT_TRUE(f.client_events.responses[after].refused);
  EXPECT_EQ(f.client_events.reset_order.size(), 5u);
  EXPECT_TRUE(f.client_events.responses[unsent].reset);
  EXPECT_FALSE(f.client_events.responses[unsent].refused);  // framed too

  EXPECT_FALSE(f.client.CanOpenStream());
  EXPECT_FALSE(f.client.WantsRead());
  EXPECT_FALSE(f.client.WantsWrite());
  EXPECT_FALSE(f.client.Receive("anything"));
  EXPECT_EQ(f.client.SubmitRequest(Get("/"), true), -1);
  std::string out;
  f.client.TakeOutput(&out);
  EXPECT_TRUE(out.empty());
  f.client.OnTransportClosed();  // twice is harmless
  EXPECT_EQ(f.client_events.reset_order.size(), 5u);
}

TEST(Http2ClientCodecTest, ShutdownLetsOpenStreamsComplete) {
  RawFixture f;
  const int32_t id = f.client.SubmitRequest(Get("/"), true);
  f.Run();
  f.client.Shutdown();
  EXPECT_FALSE(f.client.CanOpenStream());
  EXPECT_EQ(f.client.SubmitRequest(Get("/late"), true), -1);
  f.Run();
  ASSERT_EQ(f.server.goaways.size(), 1u);
  EXPECT_EQ(f.server.goaways[0].second, NGHTTP2_NO_ERROR);
  EXPECT_TRUE(f.client.WantsRead());  // the open stream
  f.server.Respond(id, kOk, "last");
  f.Run();
  EXPECT_EQ(f.events.responses[id].body, "last");
  EXPECT_FALSE(f.events.responses[id].reset);
  EXPECT_FALSE(f.client.WantsRead());
  EXPECT_FALSE(f.client.WantsWrite());
  EXPECT_TRUE(f.client.error().empty());
  f.client.Shutdown();  // again: nothing more
  EXPECT_FALSE(f.client.WantsWrite());
}

// ---------------------------------------------------------------------------
// Responses the codec rejects.

// A response head in a HEADERS and 8 CONTINUATION frames (nghttp2's
// limit), read a byte at a time or a frame at a time, as TCP may split it:
// the response arrives. Before: nghttp2 1.52 counted a CONTINUATION per
// read that began or ended between the block's frames, and the upstream
// connection ended with GOAWAY ENHANCE_YOUR_CALM, every stream on it lost.
TEST(Http2ClientCodecTest, ContinuationsSplitAcrossReadsAreCountedOnce) {
  // x-long: 100 'q's, a literal without indexing (no table state).
  const std::string field = std::string("\x00\x06x-long\x64", 9) + std::string(100, 'q');
  for (const bool byte_at_a_time : {true, false}) {
    SCOPED_TRACE(byte_at_a_time ? "a byte at a time" : "a frame at a time");
    RawFixture f;
    const int32_t id = f.client.SubmitRequest(Get("/big-head"), true);
    f.Run();
    std::vector<std::string> frames = {Frame(kHeaders, kEndStream, id, "\x88")};  // :status 200
    for (int i = 0; i < 8; ++i) frames.push_back(Frame(0x9, i == 7 ? kEndHeaders : 0, id, field));
    for (const std::string& frame : frames) {
      if (byte_at_a_time) {
        for (char c : frame) ASSERT_TRUE(f.client.Receive(std::string_view(&c, 1)));
      } else {
        ASSERT_TRUE(f.client.Receive(frame));
      }
    }
    const Response& r = f.events.responses[id];
    EXPECT_EQ(r.status, 200);
    EXPECT_FALSE(r.reset) << r.reason;
    EXPECT_TRUE(r.end_on_headers);
  }
}

TEST(Http2ClientCodecTest, MalformedResponsesResetTheStream) {
  const std::vector<
      std::pair<std::string, std::function<void(RawFixture*, int32_t)>>>
      cases = {
          {"connection-specific field",
           [](RawFixture* f, int32_t id) {
             f->server.Respond(id,
                               {{":status", "200"}, {"connection", "close"}});
           }},
          {"upper-case name",
           [](RawFixture* f, int32_t id) {
             // nghttp2 lower-cases what it sends: a frame of our own.
             EXPECT_TRUE(f->client.Receive(
                 Frame(kHeaders, kEndHeaders | kEndStream, id,
                       std::string("\x88\x00\x07X-Upper\x01v", 12))));
           }},
          {"invalid value",
           [](RawFixture* f, int32_t id) {
             f->server.Respond(id, {{":status", "200"}, {"x-v", "a\nb"}});
           }},
          {"invalid name",
           [](RawFixture* f, int32_t id) {
             f->server.Respond(id, {{":status", "200"}, {"x y", "v"}});
           }},
          {"no :status",
           [](RawFixture* f, int32_t id) {
             f->server.Respond(id, {{"content-type", "a/b"}});
           }},
          {"bad :status",
           [](RawFixture* f, int32_t id) {
             f->server.Respond(id, {{":status", "20"}});
           }},
          {":status below 100 (nghttp2 takes it for a final status)",
           [](RawFixture* f, int32_t id) {
             f->server.Respond(id, {{":status", "050"}}, "data");
           }},
          {":status above 599",
           [](RawFixture* f, int32_t id) {
             f->server.Respond(id, {{":status", "999"}});
           }},
          {"request pseudo-header",
           [](RawFixture* f, int32_t id) {
             f->server.Respond(id, {{":status", "200"}, {":path", "/"}});
           }},
          {"content-length larger than the body",
           [](RawFixture* f, int32_t id) {
             f->server.Respond(
                 id, {{":status", "200"}, {"content-length", "10"}}, "short");
           }},
          {"pseudo-header in trailers",
           [](RawFixture* f, int32_t id) {
             f->server.Respond(id, kOk, "body", {{":status", "200"}});
           }},
          {"interim head ending the stream",
           [](RawFixture* f, int32_t id) {
             f->server.Headers(id, {{":status", "100"}}, true);
           }},
      };
  for (const auto& [name, respond] : cases) {
    SCOPED_TRACE(name);
    RawFixture f;
    const int32_t bad = f.client.SubmitRequest(Get("/bad"), true);
    const int32_t good = f.client.SubmitRequest(Get("/good"), true);
    f.Run();
    respond(&f, bad);
    f.server.Respond(good, kOk, "fine");
    f.Run();
    const Response& r = f.events.responses[bad];
    EXPECT_TRUE(r.reset);
    EXPECT_EQ(r.reset_code, NGHTTP2_PROTOCOL_ERROR);
    EXPECT_FALSE(r.refused);
    // The codec reset it, over the malformed response: not the upstream
    // (an operator was told the upstream reset the stream).
    EXPECT_FALSE(r.by_peer);
    EXPECT_NE(r.reason.find("malformed"), std::string::npos) << r.reason;
    EXPECT_FALSE(r.complete());
    EXPECT_TRUE(f.server.requests[bad].rst_received);
    EXPECT_EQ(f.server.requests[bad].rst_code, NGHTTP2_PROTOCOL_ERROR);
    // The connection and the other stream are fine.
    EXPECT_EQ(f.events.responses[good].body, "fine");
    EXPECT_TRUE(f.client_ok);
    EXPECT_EQ(f.client.open_streams(), 0u);
    EXPECT_TRUE(f.client.CanOpenStream());
  }
}

TEST(Http2ClientCodecTest, ResponseHeadOverTheLimitResetsTheStream) {
  Http2ClientLimits limits;
  limits.max_header_list_bytes = 4096;
  RawFixture f(limits);
  const int32_t big = f.client.SubmitRequest(Get("/big"), true);
  const int32_t fits = f.client.SubmitRequest(Get("/fits"), true);
  const int32_t after = f.client.SubmitRequest(Get("/after"), true);
  f.Run();
  // :status 200 costs 7 + 3 + 32 = 42 bytes.
  f.server.Respond(big, {{":status", "200"}, {"x-big", std::string(4100, 'b')}},
                   "never seen");
  // Exactly at the limit: 42 + (5 + 4017 + 32) = 4096.
  f.server.Respond(
      fits, {{":status", "200"}, {"x-fit", std::string(4017, 'f')}}, "ok");
  f.Run();
  const Response& rb = f.events.responses[big];
  EXPECT_TRUE(rb.reset);
  EXPECT_EQ(rb.reset_code, NGHTTP2_ENHANCE_YOUR_CALM);
  EXPECT_FALSE(rb.refused);
  EXPECT_NE(rb.reason.find("too large"), std::string::npos) << rb.reason;
  EXPECT_FALSE(rb.has_head);
  EXPECT_TRUE(rb.body.empty());
  EXPECT_TRUE(f.server.requests[big].rst_received);
  EXPECT_EQ(f.server.requests[big].rst_code, NGHTTP2_ENHANCE_YOUR_CALM);
  EXPECT_EQ(f.events.responses[fits].status, 200);
  EXPECT_EQ(f.events.responses[fits].body, "ok");

  // The connection still works.
  f.server.Respond(after,
                   {{":status", "200"}, {"x-fit", std::string(4017, 'f')}});
  f.Run();
  EXPECT_EQ(f.events.responses[after].status, 200);
  ASSERT_NE(f.events.responses[after].headers.Get("x-fit"), nullptr);
  EXPECT_TRUE(f.client_ok);
}

TEST(Http2ClientCodecTest, HpackBombIsResetWithoutKeepingIt) {
  RawFixture f;  // 96 KiB limit
  const int32_t bomb = f.client.SubmitRequest(Get("/bomb"), true);
  const int32_t next = f.client.SubmitRequest(Get("/next"), true);
  f.Run();
  // nghttp2's encoder indexes the field once and then sends one byte per
  // copy: a few KiB on the wire, 1.5 MB decoded.
  Fields head = {{":status", "200"}};
  for (int i = 0; i < 500; ++i) {
    head.emplace_back("x-b", std::string(2900, 'z'));
  }
  f.server.Respond(bomb, head);
  f.server.Respond(next, {{":status", "200"}, {"x-b", std::string(2900, 'z')}});
  f.Run();
  const Response& r = f.events.responses[bomb];
  EXPECT_TRUE(r.reset);
  EXPECT_EQ(r.reset_code, NGHTTP2_ENHANCE_YOUR_CALM);
  EXPECT_NE(r.reason.find("too large"), std::string::npos);
  EXPECT_EQ(f.events.responses[next].status, 200);
  EXPECT_TRUE(f.client_ok);
}

// A head far over the limit (200 fields of 1000 bytes, in a HEADERS and 12
// CONTINUATION frames) fails its own stream, and another stream on the
// connection is answered. Before: nghttp2's CONTINUATION bound (8) ended the
// connection, GOAWAY ENHANCE_YOUR_CALM, and every stream on it. A block that
// never ends still does, past 64 CONTINUATION frames.
TEST(Http2ClientCodecTest, HeadFarOverTheLimitFailsItsStreamAlone) {
  // x-long: 1000 'q's, a literal without indexing (length 1000 = 127 + 873).
  const std::string field = std::string("\x00\x06x-long\x7f\xe9\x06", 11) + std::string(1000, 'q');
  std::string block_part;
  for (int i = 0; i < 16; ++i) block_part += field;  // 16,176 bytes: one frame
  for (const int continuations : {12, 70}) {
    SCOPED_TRACE(continuations);
    RawFixture f;  // 96 KiB limit
    const int32_t big = f.client.SubmitRequest(Get("/big"), true);
    const int32_t other = f.client.SubmitRequest(Get("/other"), true);
    f.Run();
    bool ok = f.client.Receive(Frame(kHeaders, kEndStream, big, "\x88" + block_part));
    for (int i = 0; i < continuations && ok; ++i) {
      ok = f.client.Receive(
          Frame(0x9, i + 1 == continuations ? kEndHeaders : 0, big, block_part));
    }
    if (continuations == 70) {
      EXPECT_FALSE(ok);
      EXPECT_TRUE(f.events.responses[other].reset);
      continue;
    }
    ASSERT_TRUE(ok) << f.client.error();
    ASSERT_TRUE(f.client.Receive(Frame(kHeaders, kEndStream | kEndHeaders, other, "\x88")));
    const Response& rb = f.events.responses[big];
    EXPECT_TRUE(rb.reset);
    EXPECT_NE(rb.reason.find("response head too large"), std::string::npos) << rb.reason;
    EXPECT_EQ(f.events.responses[other].status, 200);
    EXPECT_FALSE(f.events.responses[other].reset);
    EXPECT_TRUE(f.client.error().empty()) << f.client.error();
  }
}

TEST(Http2ClientCodecTest, TrailersOverTheLimitResetTheStream) {
  Http2ClientLimits limits;
  limits.max_header_list_bytes = 2000;
  RawFixture f(limits);
  const int32_t id = f.client.SubmitRequest(Get("/"), true);
  f.Run();
  f.server.Respond(id, kOk, "body", {{"x-t", std::string(3000, 't')}});
  f.Run();
  const Response& r = f.events.responses[id];
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "body");
  EXPECT_FALSE(r.has_trailers);
  EXPECT_TRUE(r.reset);
  EXPECT_EQ(r.reset_code, NGHTTP2_ENHANCE_YOUR_CALM);
  EXPECT_NE(r.reason.find("trailers too large"), std::string::npos) << r.reason;
}

// ---------------------------------------------------------------------------
// Connection-level events.

TEST(Http2ClientCodecTest, PingIsAcknowledged) {
  RawFixture f;
  f.Run();
  f.client.SubmitPing();
  f.Run();
  EXPECT_EQ(f.server.pings, 1);
  EXPECT_EQ(f.events.ping_acks, 1);
  // An ACK for a PING we never sent is not reported.
  EXPECT_TRUE(f.client.Receive(Frame(kPing, kAck, 0, "12345678")));
  EXPECT_EQ(f.events.ping_acks, 1);
  EXPECT_TRUE(f.client_ok);
}

TEST(Http2ClientCodecTest, ConnectionErrorEndsEveryStream) {
  RawFixture f;
  const int32_t sent = f.client.SubmitRequest(Get("/sent"), true);
  f.Run();
  const int32_t unsent = f.client.SubmitRequest(Get("/unsent"), true);
  // DATA on stream 0 is a connection error (PROTOCOL_ERROR).
  EXPECT_FALSE(f.client.Receive(Frame(kData, 0, 0, "x")));
  EXPECT_FALSE(f.client.error().empty());
  EXPECT_FALSE(f.client.WantsRead());
  EXPECT_FALSE(f.client.CanOpenStream());
  const Response& rs = f.events.responses[sent];
  EXPECT_TRUE(rs.reset);
  EXPECT_EQ(rs.reset_code, NGHTTP2_PROTOCOL_ERROR);
  EXPECT_FALSE(rs.refused);
  EXPECT_EQ(rs.reason, f.client.error());
  // nghttp2 refuses the request it can no longer send.
  const Response& ru = f.events.responses[unsent];
  EXPECT_TRUE(ru.reset);
  EXPECT_EQ(ru.reset_code, NGHTTP2_REFUSED_STREAM);
  EXPECT_TRUE(ru.refused);
  EXPECT_EQ(f.client.open_streams(), 0u);
  // The GOAWAY goes out.
  std::string out;
  f.client.TakeOutput(&out);
  f.server.Recv(out);
  ASSERT_EQ(f.server.goaways.size(), 1u);
  EXPECT_EQ(f.server.goaways[0].second, NGHTTP2_PROTOCOL_ERROR);
  EXPECT_FALSE(f.client.Receive(std::string(9, '\0')));
}

TEST(Http2ClientCodecTest, ConnectionErrorWithOutputHeldBackStillFails) {
  Http2ClientLimits limits;
  limits.max_buffered_output = 16;
  RawFixture f(limits);
  const int32_t id = f.client.SubmitRequest(Get("/"), true);
  f.Run();
  // The PING's ACK fills the codec's output buffer (the caller does not
  // take it), so the GOAWAY cannot be framed inside Receive().
  EXPECT_TRUE(f.client.Receive(Frame(kPing, 0, 0, "abcdefgh")));
  EXPECT_TRUE(f.client.WantsWrite());
  EXPECT_FALSE(f.client.Receive(Frame(kData, 0, 0, "x")));
  EXPECT_NE(f.client.error().find("connection error"), std::string::npos);
  EXPECT_FALSE(f.client.WantsRead());
  EXPECT_FALSE(f.client.CanOpenStream());
  EXPECT_TRUE(f.events.responses[id].reset);
  EXPECT_FALSE(f.events.responses[id].refused);
  std::string out;
  f.client.TakeOutput(&out);
  f.server.Recv(out);
  ASSERT_EQ(f.server.goaways.size(), 1u);
  EXPECT_EQ(f.server.goaways[0].second, NGHTTP2_PROTOCOL_ERROR);
}

}  // namespace
}  // namespace sluice::http
