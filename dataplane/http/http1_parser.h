// Strict, incremental, zero-copy HTTP/1.1 message parser (RFC 9112).
//
// The parser does no I/O: the connection owner feeds it the bytes it has read
// and gets events back through Http1Callbacks. It parses requests (client side
// of the proxy) or responses (upstream side), one parser per connection and
// direction.
//
// Buffer contract. A message head (start line + header section) is parsed only
// once it is complete in the bytes given to one Feed() call; until then Feed()
// consumes none of it and the caller keeps those bytes and passes them again,
// followed by what it reads next. The same holds for a chunked trailer section.
// Body bytes are consumed as they arrive and handed out as views into the
// caller's buffer. All views passed to callbacks are valid only during the
// callback.
//
// Strictness. Anything that could let two HTTP implementations disagree on
// where a message ends is rejected (see http1_parser.cc for the full list):
// Content-Length with Transfer-Encoding, conflicting Content-Length values,
// transfer codings other than a single "chunked", obsolete line folding, bare
// CR or LF as a line end, control characters in fields, and so on.
//
// Protocol switches. After a message that switches the connection to another
// protocol -- a request with "Connection: upgrade" plus an Upgrade header, a
// CONNECT request, or a 101 response -- the parser pauses itself, because the
// bytes that follow are not HTTP/1. The caller either hands those bytes to the
// tunnel or, if the switch did not happen (the upstream declined the upgrade),
// calls Resume() to keep parsing HTTP/1.
//
// Threading: not thread-safe. A parser belongs to the worker thread that owns
// its connection. Callbacks must not call Feed(), FinishOnClose() or Reset().
#ifndef SLUICE_DATAPLANE_HTTP_HTTP1_PARSER_H_
#define SLUICE_DATAPLANE_HTTP_HTTP1_PARSER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::http {

struct HeaderField {
  std::string_view name;
  std::string_view value;  // leading and trailing OWS removed
};

enum class BodyFraming {
  kNone,
  kContentLength,
  kChunked,
  kUntilClose,  // responses only: the body ends when the upstream closes
};

struct MessageHead {
  // Request.
  std::string_view method;
  std::string_view target;
  // Response.
  int status = 0;
  std::string_view reason;

  int version_minor = 1;  // HTTP/1.0 -> 0, HTTP/1.1 -> 1
  // Views into the caller's buffer, valid only during OnHead.
  std::vector<HeaderField> headers;
  BodyFraming framing = BodyFraming::kNone;
  // The declared Content-Length. Meaningful when framing == kContentLength; a
  // response that has no body (HEAD, 204, 304, 1xx) still reports the value it
  // declared.
  uint64_t content_length = 0;
  bool has_content_length = false;  // the message had a (valid) Content-Length
  // Per version default, then "Connection: close" / "keep-alive". Always false
  // for a response read until close.
  bool keep_alive = true;
  bool expect_continue = false;  // HTTP/1.1 request with Expect: 100-continue
  bool upgrade = false;          // Connection: upgrade with an Upgrade header
  // A Connection field lists something other than "close" and "keep-alive"
  // (a field name, "upgrade"...): only then is ConnectionTokens worth making.
  bool connection_names = false;
  size_t head_bytes = 0;  // start line + header section incl. the final CRLF
};

enum class ParseError {
  kNone,
  kBadRequest,       // 400 to a client, 502 for an upstream response
  kHeadersTooLarge,  // 431 (head, header count or trailers over the limits)
  kVersionNotSupported,  // 505: a request line with a major version other than 1
  kRequestLineTooLong,   // 414: a request line alone over the head limit
  kNotImplemented,       // 501: a transfer coding other than chunked, chunked last
};

// The parser's rules for parts of a request that HTTP/2 carries in
// pseudo-header fields, for the HTTP/2 session to apply the same ones:
// a request-target of visible ASCII only (0x21..0x7E), and a Host value of
// uri-host [":" port] (RFC 9112 3.2, RFC 3986 3.2.2): a reg-name or IPv4
// host (not empty, no userinfo, no percent-encoding) or an [IPv6] literal,
// and a port of digits only. "a.com:1:2", "x:abc", "%61.com", "a..b" and "" are
// invalid (400).
bool IsValidRequestTarget(std::string_view target);
bool IsValidHostValue(std::string_view host);
// A Host value without its port: "[::1]:80" -> "[::1]", "a.com:80" ->
// "a.com"; a host with several ':' and no brackets is returned whole.
std::string_view StripPort(std::string_view host);
// An IPv6 address (without brackets) in its usual spelling (RFC 5952, as
// inet_ntop writes it: "0:0::1" -> "::1"); "" when `text` is none.
std::string CanonicalIpv6(std::string_view text);

class Http1Callbacks {
 public:
  virtual ~Http1Callbacks() = default;
  virtual void OnHead(const MessageHead& head) = 0;
  // Decoded body bytes (chunk framing removed), a view into the fed buffer.
  virtual void OnBody(std::string_view chunk) = 0;
  // A chunk-size line of `size` (> 0) bytes ended: its data comes next.
  virtual void OnChunkSize(uint64_t /*size*/) {}
  // Chunked trailer fields; not called when the trailer section is empty.
  virtual void OnTrailers(const std::vector<HeaderField>& /*trailers*/) {}
  virtual void OnMessageComplete() = 0;
};

class Http1Parser {
 public:
  enum class Mode { kRequest, kResponse };
  struct Limits {
    size_t max_head_bytes = 61440;
    size_t max_headers = 200;  // also the limit on trailer fields
    size_t max_trailer_bytes = 16384;
  };
  struct Result {
    size_t consumed = 0;
    ParseError error = ParseError::kNone;
  };

  // `callbacks` is not owned and must outlive the parser. (Two constructors
  // rather than `Limits limits = {}`: a nested struct with member initializers
  // cannot be a default argument inside its enclosing class.)
  Http1Parser(Mode mode, Http1Callbacks* callbacks);
  Http1Parser(Mode mode, Http1Callbacks* callbacks, Limits limits);

  Http1Parser(const Http1Parser&) = delete;
  Http1Parser& operator=(const Http1Parser&) = delete;

  // Parses as much of `data` as it can and returns how many bytes it consumed;
  // the caller drops those and passes the rest again with the next bytes (see
  // the buffer contract above). Returns after OnMessageComplete when Pause()
  // was called from a callback or the message switched protocols. On the call
  // that fails, `consumed` counts the bytes handled before the error; after an
  // error the parser stays failed and Feed() returns {0, error()}.
  Result Feed(std::string_view data);

  // The peer closed the connection. Completes a response read until close
  // (calls OnMessageComplete). Returns kBadRequest (and enters the error
  // state) if a message was cut short, kNone otherwise.
  ParseError FinishOnClose();

  // Pause() takes effect once the current message (if one has begun) is
  // complete: Feed() keeps consuming its body, then stops after
  // OnMessageComplete. While paused, Feed() consumes nothing. Resume() also
  // cancels a pause that has not taken effect yet.
  void Pause() { paused_ = true; }
  void Resume() { paused_ = false; }
  // The current request's Upgrade (or CONNECT) will not switch protocols:
  // it was answered otherwise (the gateway's own reply, or an upstream's
  // non-101). Its end then makes no pause, which nothing would lift.
  void DeclineSwitch() { switches_protocols_ = false; }
  // True only once the pause is in effect (at a message boundary), so a read
  // loop `while (!parser.paused()) Feed(...)` keeps delivering the body of a
  // message whose OnHead called Pause().
  bool paused() const { return paused_ && AtMessageBoundary(); }

  // Response mode: the next final response answers a HEAD request, so it has
  // no body whatever its headers say. Interim (1xx) responses keep the flag;
  // it clears when that final response completes.
  void SetNextResponseIsForHead(bool head) {
    next_response_is_for_head_ = head;
  }

  ParseError error() const { return error_; }
  // Human-readable reason for error(), e.g. "Content-Length together with
  // Transfer-Encoding". Empty while error() == kNone.
  const std::string& error_detail() const { return error_detail_; }
  const Limits& limits() const { return limits_; }
  // The last request line read said HEAD (also when the head then failed):
  // an error answer to it has no content (RFC 9110 9.3.2).
  bool head_method() const { return head_method_; }
  // What a request refused after its request line was read said, copied
  // (for the access log: a refused smuggling attempt shows its method and
  // path); nullptr when the refusal came before (or there was none).
  struct RefusedRequest {
    std::string method;
    std::string target;
    std::string host;
    std::string user_agent;
    std::string traceparent;
    int version_minor = 1;
  };
  const RefusedRequest* refused_request() const {
    return has_refused_request_ ? refused_request_.get() : nullptr;
  }
  // For the access log of a request head refused before it was parsed (a
  // bare LF in it; its timeout, with `head` the bytes it had sent): keeps
  // as refused_request() what its lines that ended in CRLF say, the
  // request line first (as nginx logs a 408's). Sets no error.
  void SalvageRefusedRequest(std::string_view head);

  // True between the first byte of a message and its completion (leading
  // empty lines do not count). For idle and request timeouts.
  bool in_message() const { return in_message_; }
  // During OnTrailers of a response whose trailers had obsolete line
  // folding: the section, folds made spaces, that the fields view instead of
  // the caller's buffer (empty otherwise).
  std::string_view unfolded_trailers() const { return unfolded_trailers_; }

  // Back to the initial state: clears errors, pause and the HEAD flag.
  void Reset();

  // Between messages, for a connection gone idle: gives back the storage
  // the last message's fields and trailers took (a browser's 15 request
  // fields hold 512 bytes); the next head takes kInitialFields' worth in one
  // allocation. Does nothing while a message is under way.
  static constexpr size_t kInitialFields = 16;
  void ReleaseIdleMemory();

 private:
  enum class State : uint8_t {
    kHead,
    kBodyContentLength,
    kBodyUntilClose,
    kChunkSize,
    kChunkSizeBws,  // whitespace after the size, a ';' must follow
    kChunkExtension,
    kChunkSizeLf,
    kChunkData,
    kChunkDataCr,
    kChunkDataLf,
    kTrailers,
  };
  enum class Step : uint8_t { kDone, kNeedMore, kFailed };
  // Where a request's chunk-ext stands (RFC 9112 7.1.1: *( BWS ";" BWS
  // token [ BWS "=" BWS ( token / quoted-string ) ] )).
  enum class ExtState : uint8_t {
    kBeforeName, kName, kAfterName, kBeforeValue, kToken, kQuoted, kQuotedPair, kAfterValue
  };
  // Takes one byte of a request's chunk extension (not its CR); false when
  // it breaks the grammar.
  bool ChunkExtensionByte(char c);

  // Each returns kFailed after calling Fail(), kNeedMore when `data` ends
  // before the step is done; *pos is advanced past what was consumed.
  Step ParseHeadAt(std::string_view data, size_t* pos);
  Step ParseTrailersAt(std::string_view data, size_t* pos);
  Step FindSectionEnd(std::string_view data, size_t start, size_t max_bytes,
                      size_t* end);
  bool ParseHead(std::string_view head);
  bool ParseRequestLine(std::string_view line);
  bool ParseStatusLine(std::string_view line);
  bool ParseFieldLines(std::string_view section,
                       std::vector<HeaderField>* fields);
  bool ApplyHeaderSemantics();
  bool ParseChunkLine(std::string_view data, size_t* pos);

  bool AtMessageBoundary() const {
    return state_ == State::kHead && !in_message_;
  }
  void StartBody();
  void CompleteMessage();
  bool Fail(ParseError error, const char* detail);

  const Mode mode_;
  Http1Callbacks* const callbacks_;
  const Limits limits_;

  State state_ = State::kHead;
  ParseError error_ = ParseError::kNone;
  bool head_method_ = false;
  bool has_refused_request_ = false;
  // Made at the first refusal (most connections have none: 168 bytes a
  // connection less), then reused.
  std::unique_ptr<RefusedRequest> refused_request_;
  // refused_request_ made or emptied.
  RefusedRequest& FreshRefusedRequest();
  void RememberRefusedRequest();
  bool CheckPartialRequestLine(std::string_view data, size_t start);
  // A request head's line is wrong (the error is set).
  bool RequestLineFails(std::string_view data, size_t start);
  bool paused_ = false;
  bool in_message_ = false;
  bool next_response_is_for_head_ = false;
  // Set from the head: pause once this message completes.
  bool switches_protocols_ = false;
  bool final_response_ = false;
  bool chunk_size_has_digit_ = false;
  uint8_t leading_empty_lines_ = 0;
  // Bytes of the pending head / trailer section already searched for its end,
  // so that re-fed bytes are not scanned again.
  size_t scan_offset_ = 0;
  // Body bytes left: of the Content-Length body, or of the current chunk.
  uint64_t remaining_ = 0;
  uint64_t chunk_size_ = 0;
  size_t chunk_line_bytes_ = 0;
  ExtState ext_state_ = ExtState::kBeforeName;

  MessageHead head_;  // reused across messages, keeps the vector's capacity
  std::vector<HeaderField> trailers_;
  // A response's trailer section with its obsolete line folding made
  // spaces (trailers_ then views it).
  std::string unfolded_trailers_;
  std::string error_detail_;
};

}  // namespace sluice::http

#endif  // SLUICE_DATAPLANE_HTTP_HTTP1_PARSER_H_
