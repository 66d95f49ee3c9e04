// Shared libFuzzer driver for the HTTP/1 parser fuzzers.
//
// Input layout: byte 0 selects options (limits, HEAD flag, pausing), byte 1
// seeds how the rest is split into reads; the rest is the byte stream. The
// stream is parsed twice -- in one piece and in the derived pieces, as a
// connection would (append, feed the buffer, drop what was consumed) -- and
// both runs must produce the same events. Every callback is checked against
// the parser's contract; a violation aborts so that libFuzzer reports it.
#ifndef SLUICE_TESTS_FUZZ_HTTP1_FUZZ_DRIVER_H_
#define SLUICE_TESTS_FUZZ_HTTP1_FUZZ_DRIVER_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/http/http1_parser.h"

#define FUZZ_CHECK(cond)                                                    \
  do {                                                                      \
    if (!(cond)) {                                                          \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                  \
      std::abort();                                                         \
    }                                                                       \
  } while (0)

namespace sluice::http::fuzz {

struct Options {
  Http1Parser::Mode mode = Http1Parser::Mode::kRequest;
  Http1Parser::Limits limits;
  bool head_response = false;
  bool pause_on_head = false;
};

// Checks callbacks against the contract and logs them for the differential.
class CheckingCallbacks : public Http1Callbacks {
 public:
  explicit CheckingCallbacks(const Options& options) : options_(options) {}

  void set_parser(Http1Parser* parser) { parser_ = parser; }
  // The buffer handed to the current Feed(); every view must lie inside it.
  void set_buffer(std::string_view buffer) { buffer_ = buffer; }
  void set_failed() { failed_ = true; }
  const std::string& log() const { return log_; }
  bool message_open() const { return message_open_; }

  void OnHead(const MessageHead& head) override {
    FUZZ_CHECK(!failed_);
    FUZZ_CHECK(!message_open_);
    FUZZ_CHECK(head.head_bytes > 0);
    FUZZ_CHECK(head.head_bytes <= options_.limits.max_head_bytes);
    FUZZ_CHECK(head.headers.size() <= options_.limits.max_headers);
    FUZZ_CHECK(head.version_minor == 0 || head.version_minor == 1);
    if (options_.mode == Http1Parser::Mode::kRequest) {
      FUZZ_CHECK(head.status == 0);
      FUZZ_CHECK(!head.method.empty() && !head.target.empty());
      FUZZ_CHECK(InBuffer(head.method) && InBuffer(head.target));
      FUZZ_CHECK(head.framing != BodyFraming::kUntilClose);
    } else {
      FUZZ_CHECK(head.status >= 100 && head.status <= 599);
      FUZZ_CHECK(head.reason.empty() || InBuffer(head.reason));
      if (head.status < 200 || head.status == 204 || head.status == 304) {
        FUZZ_CHECK(head.framing == BodyFraming::kNone);
      }
      if (head.framing == BodyFraming::kUntilClose) {
        FUZZ_CHECK(!head.keep_alive);
      }
    }
    for (const HeaderField& f : head.headers) {
      FUZZ_CHECK(!f.name.empty() && InBuffer(f.name));
      FUZZ_CHECK(f.value.empty() || InBuffer(f.value));
      for (char c : f.value) FUZZ_CHECK(c != '\r' && c != '\n' && c != '\0');
      if (!f.value.empty()) {
        FUZZ_CHECK(f.value.front() != ' ' && f.value.back() != ' ');
      }
    }
    message_open_ = true;
    framing_ = head.framing;
    content_length_ = head.content_length;
    body_bytes_ = 0;
    last_was_body_ = false;

    log_ += "H" + std::to_string(head.status) + " " + std::string(head.method) +
            " " + std::string(head.target) + " " + std::string(head.reason) +
            " v" + std::to_string(head.version_minor) + " f" +
            std::to_string(static_cast<int>(head.framing)) + " cl" +
            std::to_string(head.content_length) + " ka" +
            std::to_string(head.keep_alive) + " ex" +
            std::to_string(head.expect_continue) + " up" +
            std::to_string(head.upgrade) + " b" +
            std::to_string(head.head_bytes);
    for (const HeaderField& f : head.headers) {
      log_ += "|" + std::string(f.name) + ":" + std::string(f.value);
    }
    log_ += "\n";
    if (options_.pause_on_head) parser_->Pause();
  }

  void OnBody(std::string_view chunk) override {
    FUZZ_CHECK(!failed_);
    FUZZ_CHECK(message_open_);
    FUZZ_CHECK(framing_ != BodyFraming::kNone);
    FUZZ_CHECK(!chunk.empty());
    FUZZ_CHECK(InBuffer(chunk));
    body_bytes_ += chunk.size();
    if (framing_ == BodyFraming::kContentLength) {
      FUZZ_CHECK(body_bytes_ <= content_length_);
    }
    if (!last_was_body_) log_ += "B";
    log_.append(chunk);
    last_was_body_ = true;
  }

  void OnTrailers(const std::vector<HeaderField>& trailers) override {
    FUZZ_CHECK(!failed_);
    FUZZ_CHECK(message_open_);
    FUZZ_CHECK(framing_ == BodyFraming::kChunked);
    FUZZ_CHECK(!trailers.empty());
    FUZZ_CHECK(trailers.size() <= options_.limits.max_headers);
    log_ += "\nT";
    // Folded response trailers are views into the parser's unfolded copy.
    const std::string_view unfolded = parser_->unfolded_trailers();
    for (const HeaderField& f : trailers) {
      FUZZ_CHECK(InBuffer(f.name) ||
                 (!unfolded.empty() && f.name.data() >= unfolded.data() &&
                  f.name.data() + f.name.size() <= unfolded.data() + unfolded.size()));
      log_ += "|" + std::string(f.name) + ":" + std::string(f.value);
    }
    log_ += "\n";
    last_was_body_ = false;
  }

  void OnMessageComplete() override {
    FUZZ_CHECK(!failed_);
    FUZZ_CHECK(message_open_);
    FUZZ_CHECK(!parser_->in_message());
    if (framing_ == BodyFraming::kContentLength) {
      FUZZ_CHECK(body_bytes_ == content_length_);
    }
    if (framing_ == BodyFraming::kNone) FUZZ_CHECK(body_bytes_ == 0);
    message_open_ = false;
    last_was_body_ = false;
    log_ += "\nC\n";
  }

 private:
  bool InBuffer(std::string_view v) const {
    return v.data() >= buffer_.data() &&
           v.data() + v.size() <= buffer_.data() + buffer_.size();
  }

  const Options& options_;
  Http1Parser* parser_ = nullptr;
  std::string_view buffer_;
  bool failed_ = false;
  bool message_open_ = false;
  bool last_was_body_ = false;
  BodyFraming framing_ = BodyFraming::kNone;
  uint64_t content_length_ = 0;
  uint64_t body_bytes_ = 0;
  std::string log_;
};

struct RunOutcome {
  std::string log;
  ParseError error = ParseError::kNone;
  ParseError close_error = ParseError::kNone;
  std::string leftover;
};

// Feeds `stream` in pieces of the given sizes (the last piece takes the rest).
inline RunOutcome RunParser(const Options& options, std::string_view stream,
                            const std::vector<size_t>& pieces) {
  CheckingCallbacks callbacks(options);
  Http1Parser parser(options.mode, &callbacks, options.limits);
  callbacks.set_parser(&parser);
  parser.SetNextResponseIsForHead(options.head_response);

  RunOutcome out;
  std::string buffer;
  size_t offset = 0;
  size_t piece_index = 0;
  while (offset < stream.size() && out.error == ParseError::kNone) {
    size_t len = stream.size() - offset;
    if (piece_index < pieces.size() && pieces[piece_index] < len) {
      len = pieces[piece_index];
    }
    ++piece_index;
    buffer.append(stream.substr(offset, len));
    offset += len;
    while (true) {
      callbacks.set_buffer(buffer);
      const size_t log_before = callbacks.log().size();
      // Paused between messages: Feed() must not move.
      const bool stopped = parser.paused();
      const Http1Parser::Result r = parser.Feed(buffer);
      FUZZ_CHECK(r.consumed <= buffer.size());
      FUZZ_CHECK(r.error == parser.error());
      if (stopped) {
        FUZZ_CHECK(r.consumed == 0 && callbacks.log().size() == log_before);
      }
      buffer.erase(0, r.consumed);
      if (r.error != ParseError::kNone) {
        FUZZ_CHECK(!parser.error_detail().empty());
        callbacks.set_failed();
        // Sticky, and silent.
        callbacks.set_buffer(buffer);
        const Http1Parser::Result again = parser.Feed(buffer);
        FUZZ_CHECK(again.consumed == 0 && again.error == r.error);
        FUZZ_CHECK(parser.FinishOnClose() == r.error);
        out.error = r.error;
        break;
      }
      FUZZ_CHECK(parser.error_detail().empty());
      // A pause requested in the middle of a message waits for its end.
      if (!parser.paused()) break;
      FUZZ_CHECK(!parser.in_message() && !callbacks.message_open());
      parser.Resume();
      if (buffer.empty()) break;
    }
  }
  if (out.error == ParseError::kNone) {
    const bool was_open = parser.in_message();
    out.close_error = parser.FinishOnClose();
    if (out.close_error == ParseError::kNone) {
      FUZZ_CHECK(!callbacks.message_open());
    } else {
      FUZZ_CHECK(was_open);
      callbacks.set_failed();
    }
    out.leftover = buffer;
  }
  out.log = callbacks.log();
  return out;
}

inline void RunOne(Http1Parser::Mode mode, const uint8_t* data, size_t size) {
  if (size < 2) return;
  Options options;
  options.mode = mode;
  const uint8_t flags = data[0];
  const uint8_t split_seed = data[1];
  if (flags & 1) {
    options.limits.max_head_bytes = 64 + (flags >> 4) * 16;
    options.limits.max_headers = 1 + (flags >> 4);
    options.limits.max_trailer_bytes = 8 + (flags >> 4) * 4;
  }
  options.head_response = (flags & 2) != 0;
  options.pause_on_head = (flags & 4) != 0;
  const std::string_view stream(reinterpret_cast<const char*>(data) + 2,
                                size - 2);

  const RunOutcome whole = RunParser(options, stream, {});

  // Piece sizes from a small xorshift generator; seed 0 means byte by byte.
  std::vector<size_t> pieces;
  uint32_t state = split_seed * 2654435761u + 1;
  const size_t max_piece = split_seed == 0 ? 1 : 1 + split_seed % 31;
  for (size_t covered = 0; covered < stream.size();) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    const size_t len = 1 + state % max_piece;
    pieces.push_back(len);
    covered += len;
  }
  const RunOutcome split = RunParser(options, stream, pieces);

  FUZZ_CHECK(whole.error == split.error);
  FUZZ_CHECK(whole.log == split.log);
  if (whole.error == ParseError::kNone) {
    FUZZ_CHECK(whole.close_error == split.close_error);
    FUZZ_CHECK(whole.leftover == split.leftover);
  }
}

}  // namespace sluice::http::fuzz

#endif  // SLUICE_TESTS_FUZZ_HTTP1_FUZZ_DRIVER_H_
