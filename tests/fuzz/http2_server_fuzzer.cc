// libFuzzer target: the HTTP/2 server codec (bytes from clients).
//
// Input layout: byte 0 selects options, byte 1 seeds how the rest is split
// into reads; the rest is what the client sends. Option bits:
//   0x01  the driver sends the client connection preface (magic + SETTINGS)
//         first, so mutations start past it; without it the input must
//         carry its own preface
//   0x02  small limits (header list, windows, buffers, streams, resets)
//   0x04  the caller never consumes request bodies (flow control stalls)
//   0x08  responses end with trailers
//   0x10  graceful Shutdown() after the first read
//   0x20  TakeOutput() in small slices instead of all at once
//   0x40  the caller resets every third stream it sees
// Every complete request head is answered with SubmitResponse + SubmitData
// (sized from the path, up to ~70 KB, more than one window) to exercise the
// send path. Every callback is checked against the codec's contract; a
// violation aborts so that libFuzzer reports it.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

#include "dataplane/http/http2_server_codec.h"

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

constexpr std::string_view kPreface =
    std::string_view("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\4\0\0\0\0\0", 33);

struct Options {
  Http2Limits limits;
  bool consume = true;
  bool trailers = false;
  bool shutdown = false;
  bool small_output_slices = false;
  bool reset_some = false;
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
  // Joined cookie crumbs count fewer bytes than the crumbs did.
  FUZZ_CHECK(bytes <= limit);
}

class CheckingCallbacks : public Http2ServerCallbacks {
 public:
  explicit CheckingCallbacks(const Options& options) : options_(options) {}
  void set_codec(Http2ServerCodec* codec) { codec_ = codec; }

  void OnRequestHeaders(int32_t stream_id, RequestPseudo pseudo,
                        HeaderMap headers, bool end_stream) override {
    FUZZ_CHECK(stream_id > 0 && stream_id % 2 == 1);
    FUZZ_CHECK(streams_.count(stream_id) == 0);
    FUZZ_CHECK(codec_->open_streams() <=
               options_.limits.max_concurrent_streams);
    FUZZ_CHECK(!pseudo.method.empty());
    if (pseudo.method != "CONNECT") {
      FUZZ_CHECK(!pseudo.scheme.empty() && !pseudo.path.empty());
    } else {
      FUZZ_CHECK(!pseudo.authority.empty());
    }
    const size_t pseudo_bytes =
        (pseudo.method.size() + 7 + 32) +
        (pseudo.scheme.empty() ? 0 : pseudo.scheme.size() + 7 + 32) +
        (pseudo.authority.empty() ? 0 : pseudo.authority.size() + 10 + 32) +
        (pseudo.path.empty() ? 0 : pseudo.path.size() + 5 + 32);
    CheckFields(headers, options_.limits.max_header_list_bytes, pseudo_bytes);

    Stream& s = streams_[stream_id];
    s.ended = end_stream;
    const int index = seen_++;
    if (options_.reset_some && index % 3 == 2) {
      codec_->ResetStream(stream_id, 8 /* CANCEL */);
      s.reset_by_us = true;
      FUZZ_CHECK(!codec_->SubmitResponse(stream_id, 200, HeaderMap(), true));
      return;
    }
    HeaderMap response;
    response.Add("Content-Type", "text/plain");
    response.Add("Connection", "close");  // must be dropped, not sent
    response.Add("x-path", pseudo.path);
    FUZZ_CHECK(codec_->SubmitResponse(stream_id, 200, response, false));
    FUZZ_CHECK(!codec_->SubmitResponse(stream_id, 200, response, false));
    const std::string body((pseudo.path.size() * 997) % 70000, 'b');
    FUZZ_CHECK(codec_->SubmitData(stream_id, body, !options_.trailers));
    FUZZ_CHECK(codec_->QueuedBytes(stream_id) == body.size());
    if (options_.trailers) {
      HeaderMap trailers;
      trailers.Add("grpc-status", "0");
      FUZZ_CHECK(codec_->SubmitTrailers(stream_id, trailers));
    }
    FUZZ_CHECK(!codec_->SubmitData(stream_id, "late", true));
  }

  void OnRequestData(int32_t stream_id, std::string_view data,
                     bool end_stream) override {
    Stream& s = Known(stream_id);
    FUZZ_CHECK(!s.ended && !s.reset && !s.reset_by_us);
    FUZZ_CHECK(end_stream || !data.empty());
    s.ended = end_stream;
    s.held += data.size();
    // The buffering bound, plus one default window the client may use
    // before it has seen our SETTINGS.
    const size_t bound = std::max(options_.limits.max_request_body_buffer,
                                  options_.limits.initial_window_size) +
                         65535;
    FUZZ_CHECK(s.held <= bound);
    if (options_.consume) {
      codec_->ConsumeRequestData(stream_id, data.size());
      s.held = 0;
    }
  }

  void OnRequestTrailers(int32_t stream_id, HeaderMap trailers) override {
    Stream& s = Known(stream_id);
    FUZZ_CHECK(!s.ended && !s.reset && !s.reset_by_us);
    CheckFields(trailers, options_.limits.max_header_list_bytes, 0);
    s.ended = true;
  }

  void OnStreamReset(int32_t stream_id, uint32_t /*error_code*/) override {
    Stream& s = Known(stream_id);
    FUZZ_CHECK(!s.reset && !s.reset_by_us);
    s.reset = true;
    FUZZ_CHECK(!codec_->SubmitData(stream_id, "x", true));
    FUZZ_CHECK(!codec_->SubmitResponse(stream_id, 200, HeaderMap(), true));
  }

  void OnStreamWritable(int32_t stream_id) override {
    Stream& s = Known(stream_id);
    FUZZ_CHECK(!s.reset && !s.reset_by_us);
    FUZZ_CHECK(codec_->QueuedBytes(stream_id) <=
               options_.limits.stream_send_low_watermark);
  }

  void OnRequestHeadersTooLarge(int32_t stream_id, ReplyFields* /*reply*/) override {
    FUZZ_CHECK(streams_.count(stream_id) == 0);
  }

 private:
  struct Stream {
    bool ended = false;
    bool reset = false;
    bool reset_by_us = false;
    size_t held = 0;
  };

  Stream& Known(int32_t stream_id) {
    auto it = streams_.find(stream_id);
    FUZZ_CHECK(it != streams_.end());
    return it->second;
  }

  const Options& options_;
  Http2ServerCodec* codec_ = nullptr;
  std::map<int32_t, Stream> streams_;
  int seen_ = 0;
};

void Drain(Http2ServerCodec* codec, const Options& options) {
  std::string out;
  codec->TakeOutput(&out, options.small_output_slices ? 100 : SIZE_MAX);
}

void RunOne(const uint8_t* data, size_t size) {
  if (size < 2) return;
  const uint8_t flags = data[0];
  const uint8_t split_seed = data[1];
  Options options;
  if (flags & 0x02) {
    options.limits.max_concurrent_streams = 4;
    options.limits.initial_window_size = 1024;
    options.limits.connection_window_size = 65535;
    options.limits.max_header_list_bytes = 300;
    options.limits.max_request_body_buffer = 2048;
    options.limits.max_buffered_output = 512;
    options.limits.stream_send_low_watermark = 100;
    options.limits.premature_reset_window = 8;
    options.limits.max_premature_resets = 4;
  }
  options.consume = (flags & 0x04) == 0;
  options.trailers = (flags & 0x08) != 0;
  options.shutdown = (flags & 0x10) != 0;
  options.small_output_slices = (flags & 0x20) != 0;
  options.reset_some = (flags & 0x40) != 0;

  std::string stream;
  if (flags & 0x01) stream.append(kPreface);
  stream.append(reinterpret_cast<const char*>(data) + 2, size - 2);

  CheckingCallbacks callbacks(options);
  Http2ServerCodec codec(&callbacks, options.limits);
  callbacks.set_codec(&codec);
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
    }
    if (first && options.shutdown) codec.Shutdown(0);
    first = false;
    Drain(&codec, options);
  }
  for (int i = 0; i < 8 && codec.WantsWrite(); ++i) Drain(&codec, options);
  if (!codec.error().empty()) FUZZ_CHECK(!codec.WantsRead());
}

}  // namespace
}  // namespace sluice::http::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sluice::http::fuzz::RunOne(data, size);
  return 0;
}
