// libFuzzer target: the HTTP/2 client codec (bytes from upstreams).
//
// Input layout: byte 0 selects options, byte 1 seeds how the rest is split
// into reads; the rest is what the upstream sends. Option bits:
//   0x01  the driver sends the server's SETTINGS (empty) first, so
//         mutations start past it; without it the input must carry its own
//   0x02  small limits (header list, windows, buffers, output)
//   0x04  the caller never consumes response bodies (flow control stalls)
//   0x08  requests are POSTs with a body (more than a window) and trailers
//   0x10  Shutdown() after the first read
//   0x20  TakeOutput() in small slices instead of all at once
//   0x40  the caller resets every third response on its head
//   0x80  SubmitPing() after every read
// Three requests are open before the first byte arrives (streams 1, 3, 5);
// another is opened after every read while CanOpenStream(), up to 12. The
// transport closes at the end (OnTransportClosed). Every callback is checked
// against the codec's contract, and every request must end exactly once
// (response, OnStreamReset, or the caller's own reset); a violation aborts
// so that libFuzzer reports it.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/http/http2_client_codec.h"

#define FUZZ_CHECK(cond)                                                    \
  do {                                                                      \
    if (!(cond)) {                                                          \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                  \
      std::abort();                                                         \
    }                                                                       \
  } while (0)

namespace sluice::http::fuzz {
namespace {

constexpr std::string_view kServerSettings =
    std::string_view("\0\0\0\4\0\0\0\0\0", 9);
constexpr int kMaxRequests = 12;

struct Options {
  Http2ClientLimits limits;
  bool consume = true;
  bool post = false;
  bool shutdown = false;
  bool small_output_slices = false;
  bool reset_some = false;
  bool ping = false;
};

bool IsConnectionSpecific(std::string_view name) {
  return name == "connection" || name == "keep-alive" ||
         name == "proxy-connection" || name == "transfer-encoding" ||
         name == "upgrade";
}

void CheckFields(const HeaderMap& fields, size_t limit, size_t extra_bytes) {
  size_t bytes = extra_bytes;
  for (const HeaderMap::Field& f : fields.fields()) {
    FUZZ_CHECK(!f.name.empty());
    FUZZ_CHECK(f.name[0] != ':');
    for (char c : f.name) FUZZ_CHECK(!(c >= 'A' && c <= 'Z'));
    FUZZ_CHECK(!IsConnectionSpecific(f.name));
    for (char c : f.value) FUZZ_CHECK(c != '\r' && c != '\n' && c != '\0');
    if (!f.value.empty()) {
      FUZZ_CHECK(f.value.front() != ' ' && f.value.front() != '\t');
      FUZZ_CHECK(f.value.back() != ' ' && f.value.back() != '\t');
    }
    bytes += f.name.size() + f.value.size() + 32;
  }
  FUZZ_CHECK(bytes <= limit);
}

class CheckingCallbacks : public Http2ClientCallbacks {
 public:
  explicit CheckingCallbacks(const Options& options) : options_(options) {}
  void set_codec(Http2ClientCodec* codec) { codec_ = codec; }

  void Open() {
    Http2Request request;
    request.method = options_.post ? "POST" : "GET";
    request.scheme = "https";
    request.authority = "upstream.test";
    const std::string path = "/" + std::to_string(opened_);
    request.path = path;
    const HeaderField fields[] = {{"accept", "*/*"},
                                  {"Connection", "close"},
                                  {"te", "trailers"},
                                  {"Host", "dropped"}};
    request.fields = fields;
    request.field_count = std::size(fields);
    const bool could = codec_->CanOpenStream();
    const int32_t id = codec_->SubmitRequest(request, !options_.post);
    FUZZ_CHECK((id > 0) == could);
    if (id < 0) return;
    FUZZ_CHECK(id % 2 == 1 && streams_.count(id) == 0);
    ++opened_;
    streams_[id];
    if (!options_.post) {
      FUZZ_CHECK(!codec_->SubmitData(id, "x", true));
      return;
    }
    const std::string body((path.size() * 7919) % 70000 + 1, 'p');
    FUZZ_CHECK(codec_->SubmitData(id, body, false));
    FUZZ_CHECK(codec_->QueuedBytes(id) == body.size());
    const HeaderField trailers[] = {{"x-checksum", "1"}, {":bad", "x"}};
    FUZZ_CHECK(codec_->SubmitTrailers(id, trailers, std::size(trailers)));
    FUZZ_CHECK(!codec_->SubmitData(id, "late", true));
  }

  void OnResponseHeaders(int32_t stream_id, int status,
                         const HeaderMap& headers, bool end_stream) override {
    Stream& s = Live(stream_id);
    FUZZ_CHECK(!s.head);
    FUZZ_CHECK(status >= 200 && status <= 599);
    CheckFields(headers, options_.limits.max_header_list_bytes,
                7 + 3 + 32);  // :status
    s.head = true;
    if (end_stream) End(stream_id);
    if (!end_stream && options_.reset_some && ++heads_ % 3 == 0) {
      codec_->ResetStream(stream_id, 8 /* CANCEL */);
      s.reset_by_us = true;
      FUZZ_CHECK(!codec_->SubmitData(stream_id, "x", true));
    }
  }

  void OnResponseData(int32_t stream_id, std::string_view data,
                      bool end_stream) override {
    Stream& s = Live(stream_id);
    FUZZ_CHECK(s.head);
    FUZZ_CHECK(end_stream || !data.empty());
    s.held += data.size();
    // The buffering bound, plus one default window the peer may use before
    // it has seen our SETTINGS.
    const size_t bound = std::max(options_.limits.max_response_body_buffer,
                                  options_.limits.initial_window_size) +
                         65535;
    FUZZ_CHECK(s.held <= bound);
    if (options_.consume) {
      codec_->ConsumeResponseData(stream_id, data.size());
      s.held = 0;
    }
    if (end_stream) End(stream_id);
  }

  void OnResponseTrailers(int32_t stream_id,
                          const HeaderMap& trailers) override {
    Stream& s = Live(stream_id);
    FUZZ_CHECK(s.head);
    CheckFields(trailers, options_.limits.max_header_list_bytes, 0);
    End(stream_id);
  }

  void OnStreamReset(int32_t stream_id, uint32_t /*error_code*/,
                     bool /*refused*/, bool /*by_peer*/, std::string_view reason) override {
    Live(stream_id);
    FUZZ_CHECK(!reason.empty());
    End(stream_id);
  }

  void OnStreamWritable(int32_t stream_id) override {
    Live(stream_id);
    FUZZ_CHECK(codec_->QueuedBytes(stream_id) <=
               options_.limits.stream_send_low_watermark);
  }

  void OnGoaway(int32_t /*last_stream_id*/, uint32_t /*error_code*/) override {
    FUZZ_CHECK(!codec_->CanOpenStream());
    FUZZ_CHECK(codec_->goaway_received());
  }

  // Every request ended exactly once.
  void CheckAllEnded() const {
    for (const auto& [id, s] : streams_) FUZZ_CHECK(s.ended || s.reset_by_us);
  }

  int opened() const { return opened_; }

 private:
  struct Stream {
    bool head = false;
    bool ended = false;
    bool reset_by_us = false;
    size_t held = 0;
  };

  Stream& Live(int32_t stream_id) {
    auto it = streams_.find(stream_id);
    FUZZ_CHECK(it != streams_.end());
    FUZZ_CHECK(!it->second.ended && !it->second.reset_by_us);
    return it->second;
  }

  // A stream that ended is gone from the codec at once.
  void End(int32_t stream_id) {
    streams_[stream_id].ended = true;
    FUZZ_CHECK(!codec_->SubmitData(stream_id, "x", true));
    FUZZ_CHECK(codec_->QueuedBytes(stream_id) == 0);
  }

  const Options& options_;
  Http2ClientCodec* codec_ = nullptr;
  std::map<int32_t, Stream> streams_;
  int opened_ = 0;
  int heads_ = 0;
};

void Drain(Http2ClientCodec* codec, const Options& options) {
  std::string out;
  codec->TakeOutput(&out, options.small_output_slices ? 100 : SIZE_MAX);
}

void RunOne(const uint8_t* data, size_t size) {
  if (size < 2) return;
  const uint8_t flags = data[0];
  const uint8_t split_seed = data[1];
  Options options;
  if (flags & 0x02) {
    options.limits.initial_window_size = 1024;
    options.limits.connection_window_size = 65535;
    options.limits.max_header_list_bytes = 300;
    options.limits.max_response_body_buffer = 2048;
    options.limits.max_buffered_output = 512;
    options.limits.stream_send_low_watermark = 100;
  }
  options.consume = (flags & 0x04) == 0;
  options.post = (flags & 0x08) != 0;
  options.shutdown = (flags & 0x10) != 0;
  options.small_output_slices = (flags & 0x20) != 0;
  options.reset_some = (flags & 0x40) != 0;
  options.ping = (flags & 0x80) != 0;

  std::string stream;
  if (flags & 0x01) stream.append(kServerSettings);
  stream.append(reinterpret_cast<const char*>(data) + 2, size - 2);

  CheckingCallbacks callbacks(options);
  Http2ClientCodec codec(&callbacks, options.limits);
  callbacks.set_codec(&codec);
  for (int i = 0; i < 3; ++i) callbacks.Open();
  FUZZ_CHECK(callbacks.opened() == 3);
  Drain(&codec, options);

  uint32_t state = split_seed * 2654435761u + 1;
  const size_t max_piece = split_seed == 0 ? 1 : 1 + split_seed % 61;
  bool failed = false;
  bool first = true;
  for (size_t offset = 0; offset < stream.size();) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    const size_t len =
        std::min<size_t>(1 + state % max_piece, stream.size() - offset);
    const bool ok = codec.Receive(std::string_view(stream).substr(offset, len));
    offset += len;
    if (failed) FUZZ_CHECK(!ok);  // stays failed
    if (!ok) {
      failed = true;
      FUZZ_CHECK(!codec.error().empty());
      FUZZ_CHECK(!codec.WantsRead());
      FUZZ_CHECK(!codec.CanOpenStream());
      // Every stream has ended.
      FUZZ_CHECK(codec.open_streams() == 0);
      callbacks.CheckAllEnded();
    }
    if (first && options.shutdown) codec.Shutdown();
    first = false;
    if (options.ping) codec.SubmitPing();
    if (callbacks.opened() < kMaxRequests && codec.CanOpenStream()) {
      callbacks.Open();
    }
    Drain(&codec, options);
  }
  for (int i = 0; i < 8 && codec.WantsWrite(); ++i) Drain(&codec, options);
  if (!codec.error().empty()) FUZZ_CHECK(!codec.WantsRead());
  codec.OnTransportClosed();
  FUZZ_CHECK(codec.open_streams() == 0);
  FUZZ_CHECK(!codec.WantsWrite() && !codec.WantsRead());
  callbacks.CheckAllEnded();
}

}  // namespace
}  // namespace sluice::http::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sluice::http::fuzz::RunOne(data, size);
  return 0;
}
