// HTTP/1.1 message framing for the test tools (upstream_server, http_client):
// bytes in, messages out. It never touches a socket, so both tools and a unit
// test drive it the same way.
//
// Deliberately independent of dataplane/http: a test tool that shared the
// parser under test could not catch that parser's bugs. It is also strict on
// purpose (CRLF line endings only, no obs-fold, no Content-Length together
// with Transfer-Encoding, no transfer codings but "chunked"): the tools sit on
// both sides of the proxy, and sloppy bytes from the proxy should fail a test
// rather than be tolerated.
//
// Not thread-safe: one Http1Reader per connection, used by one thread.
#ifndef SLUICE_TESTS_HARNESS_HTTP_WIRE_H_
#define SLUICE_TESTS_HARNESS_HTTP_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace sluice::testing {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// One parsed request or response.
struct Http1Message {
  // Requests only.
  std::string method;
  std::string target;  // as received, query included
  // Responses only.
  int status = 0;
  std::string reason;

  int minor_version = 1;  // HTTP/1.<minor_version>
  HeaderList headers;     // names lower-cased, in arrival order
  HeaderList trailers;    // chunked bodies only; names lower-cased
  std::string body;       // chunk framing removed
  bool chunked = false;   // the body arrived with chunked framing
  // The message declared a body (Content-Length or Transfer-Encoding).
  bool has_body_framing = false;

  // All values of header `name` (lower-case) joined with ", "; empty when
  // absent. Use HasHeader() to tell absent from empty.
  std::string Header(absl::string_view name) const;
  bool HasHeader(absl::string_view name) const;
  // Whether the connection may carry another message after this one
  // (HTTP version and the Connection header's tokens).
  bool KeepAlive() const;
  // Whether header `name` holds the comma-separated token `token`
  // (case-insensitive), e.g. HasToken("connection", "close").
  bool HasToken(absl::string_view name, absl::string_view token) const;
};

class Http1Reader {
 public:
  enum class Mode { kRequest, kResponse };
  enum class Result {
    kNeedMore,  // feed more bytes (or FeedEof())
    kMessage,   // *message holds the next complete message
    kClosed,    // EOF at a message boundary: the peer closed cleanly
    kError,     // malformed or truncated; error() says why. Sticky.
  };

  static constexpr size_t kMaxHeadBytes = 64 * 1024;

  explicit Http1Reader(Mode mode) : mode_(mode) {}

  void Feed(absl::string_view bytes);
  // The peer will send no more bytes.
  void FeedEof();

  // Completes the next message from the buffered bytes, if it can.
  // `response_to_head`: in kResponse mode, the request being answered was a
  // HEAD (no body follows whatever the headers say); read when the message's
  // head completes. 1xx responses come out as messages of their own.
  // On kError, *message holds what arrived of the broken message (head and
  // partial body) so callers can report it.
  Result Next(Http1Message* message, bool response_to_head = false);

  const std::string& error() const { return error_; }
  // The head of the message whose body is still arriving; nullptr between
  // messages and while a head is incomplete.
  const Http1Message* head_in_progress() const;
  // Whether any bytes of an unfinished message are buffered.
  bool mid_message() const;
  // Bytes fed but not yet consumed by a returned message.
  size_t buffered_bytes() const { return buffer_.size() - pos_; }

 private:
  enum class State {
    kHead,
    kBodyLength,
    kChunkSize,
    kChunkData,
    kChunkDataEnd,
    kTrailers,
    kBodyUntilClose,
    kError,
  };

  Result Fail(std::string error, Http1Message* message);
  bool ParseHead(absl::string_view head, std::string* error);
  bool ParseHeaderLine(absl::string_view line, HeaderList* into,
                       std::string* error);
  // Chooses the body framing once the head is parsed.
  bool StartBody(bool response_to_head, std::string* error);
  // Finds the next CRLF-terminated line at or after pos_; false if none yet.
  // Sets *line (without CRLF) and advances pos_ past it. A bare LF is an error.
  bool TakeLine(absl::string_view* line, std::string* error, bool* failed);
  void Compact();

  Mode mode_;
  State state_ = State::kHead;
  std::string buffer_;
  size_t pos_ = 0;       // first unconsumed byte
  size_t scan_pos_ = 0;  // where the search for the end of the head resumes
  bool eof_ = false;
  uint64_t remaining_ = 0;  // body or chunk bytes still due
  uint64_t expected_length_ = 0;
  Http1Message current_;
  std::string error_;
};

// CRC-32 (IEEE 802.3, as zlib's crc32()).
uint32_t Crc32(absl::string_view data);
// Crc32() as 8 lower-case hex digits: the body-crc= value upstream_server
// prints.
std::string Crc32Hex(absl::string_view data);

// Encodes `body` with chunked framing, split into `chunks` chunks of nearly
// equal size (at least one byte each), plus the terminating zero chunk.
std::string EncodeChunked(absl::string_view body, int chunks = 1);

// One HTTP/2 frame as bytes (RFC 9113 4.1): the 9-byte header, then
// `payload`. For tests that speak raw HTTP/2.
std::string Http2Frame(uint8_t type, uint8_t flags, uint32_t stream_id,
                       absl::string_view payload);

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_HARNESS_HTTP_WIRE_H_
