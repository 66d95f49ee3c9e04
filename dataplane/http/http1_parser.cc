// HTTP/1.1 parser. What is rejected, all with kBadRequest unless noted:
//  - start line not exactly "METHOD SP target SP HTTP/1.x CRLF" (requests) or
//    "HTTP/1.x SP 3DIGIT [SP reason] CRLF" (responses; the SP before an empty
//    reason may be missing, as many servers omit it); a version that is not
//    HTTP/<digit>.<digit> (HTTP/1.2 and up are read as HTTP/1.1, RFC 9112
//    2.3; a request with another major version is kVersionNotSupported,
//    505); status outside 100..599;
//  - method or field name with a non-token character, whitespace between a
//    field name and its colon (requests; a response's is removed, RFC 9112
//    5.1), a field line starting with whitespace (obsolete line folding; in
//    a response's trailers it is made spaces, RFC 9112 5.2);
//    request-target empty or with bytes outside 0x21..0x7E;
//  - control characters other than HTAB in a field value or reason (NUL and
//    bare CR included); any line end other than CRLF, in the head, the chunk
//    framing and the trailers;
//  - more than kMaxLeadingEmptyLines empty lines before a start line;
//  - Content-Length that is not 1*DIGIT, above 2^63-1, or that disagrees with
//    another Content-Length (identical repeats, also "5, 5", collapse);
//  - Transfer-Encoding with any coding but "chunked" or with chunked twice;
//    Transfer-Encoding together with Content-Length; Transfer-Encoding in an
//    HTTP/1.0 message (RFC 9112 6.1: the framing is faulty);
//  - requests: no Host in HTTP/1.1, more than one Host, or an invalid Host;
//  - chunk size empty, not hex, or 2^63 or more; white space after it that
//    no extension follows (requests only: a response's `5 CRLF` is taken); a
//    chunk extension with control characters, a request's that breaks RFC
//    9112 7.1.1's grammar (`;`, `;=v`, `;a="v`, `;a=b c`), a chunk line above
//    kMaxChunkLineBytes; chunk data not followed by CRLF;
//  - head over max_head_bytes, more than max_headers fields, or a trailer
//    section over max_trailer_bytes: kHeadersTooLarge; a request line that
//    alone passes max_head_bytes: kRequestLineTooLong (kNotImplemented when
//    the method alone does).
#include "dataplane/http/http1_parser.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cstring>

namespace sluice::http {
namespace {

// RFC 9112 2.2: a server SHOULD ignore at least one empty line before a
// request line. More than this many is treated as garbage.
constexpr uint8_t kMaxLeadingEmptyLines = 2;
// Bound on "chunk-size [chunk-ext] CRLF", extensions included.
constexpr size_t kMaxChunkLineBytes = 4096;
constexpr uint64_t kMaxContentLength = (uint64_t{1} << 63) - 1;

using CharTable = std::array<bool, 256>;

constexpr CharTable MakeTokenTable() {
  CharTable t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) {
    t[static_cast<unsigned char>(c)] = true;
  }
  return t;
}

// field-vchar / SP / HTAB (also what a reason phrase and a chunk extension may
// contain): everything but the controls and DEL.
constexpr CharTable MakeFieldValueTable() {
  CharTable t{};
  t['\t'] = true;
  for (int c = 0x20; c <= 0xff; ++c) t[c] = c != 0x7f;
  return t;
}

// request-target: visible ASCII only.
// Visible ASCII but '#': a fragment is not part of a request target (RFC
// 9112 3.2), and an upstream would cut the target there (HAProxy's
// CVE-2023-45539).
constexpr CharTable MakeTargetTable() {
  CharTable t{};
  for (int c = 0x21; c <= 0x7e; ++c) t[c] = c != '#';
  return t;
}

// reg-name and IPv4 as hosts are named: letters, digits, '-', '.' and '_'
// (RFC 3986 3.2.2 allows more; no '@', so no userinfo).
constexpr CharTable MakeRegNameTable() {
  CharTable t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  // No '%': RFC 3986 allows a percent-encoded reg-name, but routes match
  // the name as sent while an upstream may decode it ("admin%2einternal"
  // is admin.internal to it); nginx refuses it too (400), and no domain a
  // route can name holds one. No sub-delims and no '~' either: no domain a
  // route can name holds one, so such a Host only ever reached the `*`
  // virtual host, and past it (and its policies) an upstream that reads
  // Host as a list (HAProxy's hdr(host) splits "internal.example,x" at the
  // comma) took it for the name a stricter virtual host guards.
  for (char c : std::string_view("-._")) {
    t[static_cast<unsigned char>(c)] = true;
  }
  return t;
}

// Inside an IP-literal's brackets: IPv6 (with an embedded IPv4).
constexpr CharTable MakeIpLiteralTable() {
  CharTable t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'f'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'F'; ++c) t[c] = true;
  t[':'] = t['.'] = true;
  return t;
}

constexpr CharTable kTokenChar = MakeTokenTable();
constexpr CharTable kFieldValueChar = MakeFieldValueTable();
constexpr CharTable kTargetChar = MakeTargetTable();
constexpr CharTable kRegNameChar = MakeRegNameTable();
constexpr CharTable kIpLiteralChar = MakeIpLiteralTable();

inline unsigned char Byte(char c) { return static_cast<unsigned char>(c); }
inline bool IsOws(char c) { return c == ' ' || c == '\t'; }

inline char ToLowerAscii(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c;
}

// `lower` must be lower case.
bool EqualsIgnoreCase(std::string_view s, std::string_view lower) {
  if (s.size() != lower.size()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (ToLowerAscii(s[i]) != lower[i]) return false;
  }
  return true;
}

std::string_view TrimOws(std::string_view s) {
  size_t b = 0;
  size_t e = s.size();
  while (b < e && IsOws(s[b])) ++b;
  while (e > b && IsOws(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// Calls fn(element) for each OWS-trimmed element of a comma-separated list,
// empty ones included. Stops and returns false when fn does.
template <typename Fn>
bool ForEachListElement(std::string_view list, Fn fn) {
  while (true) {
    const size_t comma = list.find(',');
    if (!fn(TrimOws(list.substr(0, comma)))) return false;
    if (comma == std::string_view::npos) return true;
    list.remove_prefix(comma + 1);
  }
}

inline int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Index of the first byte in [i, end) that is a control character or DEL
// (HTAB included), or `end`. Field values are the bulk of a head, so eight
// bytes are checked at a time: a word is looked at closely only when one of
// its bytes is below 0x20 or equal to 0x7F (bytes >= 0x80 never flag it).
size_t FindControl(const char* p, size_t i, size_t end) {
  constexpr uint64_t kOnes = 0x0101010101010101ull;
  constexpr uint64_t kHighs = 0x8080808080808080ull;
  while (end - i >= 8) {
    uint64_t word;
    std::memcpy(&word, p + i, 8);
    const uint64_t below_space = (word - kOnes * 0x20) & ~word & kHighs;
    const uint64_t x = word ^ (kOnes * 0x7f);
    const uint64_t del = (x - kOnes) & ~x & kHighs;
    if ((below_space | del) != 0) break;
    i += 8;
  }
  while (i < end && Byte(p[i]) >= 0x20 && p[i] != 0x7f) ++i;
  return i;
}

// "HTTP/1.0" or "HTTP/1.1"; a higher minor version ("HTTP/1.2") is read as
// the highest we speak, 1.1 (RFC 9112 2.3). Returns the minor version, -2
// for a well-formed version with another major ("HTTP/2.0"), -1 otherwise.
int ParseVersion(std::string_view v) {
  if (v.size() != 8 || v.substr(0, 5) != "HTTP/" || v[6] != '.' || v[5] < '0' || v[5] > '9' ||
      v[7] < '0' || v[7] > '9') {
    return -1;
  }
  if (v[5] != '1') return -2;
  return v[7] == '0' ? 0 : 1;
}

}  // namespace

bool IsValidRequestTarget(std::string_view target) {
  for (char c : target) {
    if (!kTargetChar[Byte(c)]) return false;
  }
  return true;
}

std::string_view StripPort(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  size_t colon = host.find(':');
  if (colon == std::string_view::npos) return host;
  if (host.find(':', colon + 1) != std::string_view::npos) return host;
  return host.substr(0, colon);
}

std::string CanonicalIpv6(std::string_view text) {
  char buffer[INET6_ADDRSTRLEN];
  if (text.empty() || text.size() >= sizeof(buffer)) return "";
  text.copy(buffer, text.size());
  buffer[text.size()] = '\0';
  in6_addr parsed;
  if (inet_pton(AF_INET6, buffer, &parsed) != 1 ||
      inet_ntop(AF_INET6, &parsed, buffer, sizeof(buffer)) == nullptr) {
    return "";
  }
  return buffer;
}

bool IsValidHostValue(std::string_view host) {
  // uri-host: an IP-literal in brackets, or reg-name / IPv4 characters.
  size_t host_end;
  if (!host.empty() && host.front() == '[') {
    host_end = host.find(']');
    if (host_end == std::string_view::npos || host_end == 1) return false;
    for (char c : host.substr(1, host_end - 1)) {
      if (!kIpLiteralChar[Byte(c)]) return false;
    }
    // An IPv6 address (RFC 3986 3.2.2), not just its characters:
    // [1::2::3] or [12345::1] is none (routing would take it for no
    // virtual host of its own, an upstream might read it otherwise).
    if (CanonicalIpv6(host.substr(1, host_end - 1)).empty()) return false;
    ++host_end;
  } else {
    host_end = 0;
    while (host_end < host.size() && kRegNameChar[Byte(host[host_end])]) ++host_end;
    if (host_end == 0) return false;  // RFC 9112 3.2: an http(s) target has a host
    // "." is the root's trailing dot, nothing else: routing drops that dot
    // and would be left with no host (nginx answers 400 too). An empty label
    // ("a..b", "internal.example..") is no name either: routing would not
    // take it for "internal.example" while an upstream that strips trailing
    // dots would (nginx answers 400).
    // A leading dot is an empty first label (".internal.example").
    if (host[0] == '.') return false;
    if (host.substr(0, host_end).find("..") != std::string_view::npos) return false;
  }
  // [ ":" port ], port = *DIGIT, a TCP port (0..65535, as Envoy and nginx
  // take it: an upstream reading "a:99999999999" would not agree on it).
  std::string_view rest = host.substr(host_end);
  if (rest.empty()) return true;
  if (rest.front() != ':') return false;
  uint32_t port = 0;
  for (char c : rest.substr(1)) {
    if (c < '0' || c > '9') return false;
    port = port * 10 + static_cast<uint32_t>(c - '0');
    if (port > 65535) return false;
  }
  return true;
}

Http1Parser::Http1Parser(Mode mode, Http1Callbacks* callbacks)
    : Http1Parser(mode, callbacks, Limits()) {}

Http1Parser::Http1Parser(Mode mode, Http1Callbacks* callbacks, Limits limits)
    : mode_(mode), callbacks_(callbacks), limits_(limits) {}

void Http1Parser::Reset() {
  state_ = State::kHead;
  error_ = ParseError::kNone;
  error_detail_.clear();
  paused_ = false;
  in_message_ = false;
  next_response_is_for_head_ = false;
  switches_protocols_ = false;
  final_response_ = false;
  chunk_size_has_digit_ = false;
  leading_empty_lines_ = 0;
  scan_offset_ = 0;
  remaining_ = 0;
  chunk_size_ = 0;
  chunk_line_bytes_ = 0;
  head_.headers.clear();
  trailers_.clear();
}

void Http1Parser::ReleaseIdleMemory() {
  if (in_message_) return;
  std::vector<HeaderField>().swap(head_.headers);
  std::vector<HeaderField>().swap(trailers_);
  std::string().swap(unfolded_trailers_);
}

bool Http1Parser::Fail(ParseError error, const char* detail) {
  error_ = error;
  error_detail_ = detail;
  return false;
}

Http1Parser::Result Http1Parser::Feed(std::string_view data) {
  if (error_ != ParseError::kNone) return {0, error_};
  if (paused_ && AtMessageBoundary()) return {0, ParseError::kNone};

  const size_t size = data.size();
  size_t pos = 0;
  while (pos < size) {
    switch (state_) {
      case State::kHead: {
        const Step step = ParseHeadAt(data, &pos);
        if (step == Step::kFailed) return {pos, error_};
        if (step == Step::kNeedMore) return {pos, ParseError::kNone};
        break;
      }
      case State::kBodyContentLength: {
        const size_t take =
            static_cast<size_t>(std::min<uint64_t>(remaining_, size - pos));
        callbacks_->OnBody(data.substr(pos, take));
        pos += take;
        remaining_ -= take;
        if (remaining_ == 0) CompleteMessage();
        break;
      }
      case State::kBodyUntilClose:
        callbacks_->OnBody(data.substr(pos));
        pos = size;
        break;
      case State::kChunkSize:
      case State::kChunkSizeBws:
      case State::kChunkExtension:
      case State::kChunkSizeLf:
        if (!ParseChunkLine(data, &pos)) return {pos, error_};
        break;
      case State::kChunkData: {
        const size_t take =
            static_cast<size_t>(std::min<uint64_t>(remaining_, size - pos));
        callbacks_->OnBody(data.substr(pos, take));
        pos += take;
        remaining_ -= take;
        if (remaining_ == 0) state_ = State::kChunkDataCr;
        break;
      }
      case State::kChunkDataCr:
        if (data[pos] != '\r') {
          Fail(ParseError::kBadRequest, "chunk data not followed by CRLF");
          return {pos, error_};
        }
        ++pos;
        state_ = State::kChunkDataLf;
        break;
      case State::kChunkDataLf:
        if (data[pos] != '\n') {
          Fail(ParseError::kBadRequest, "chunk data not followed by CRLF");
          return {pos, error_};
        }
        ++pos;
        state_ = State::kChunkSize;
        chunk_size_ = 0;
        chunk_size_has_digit_ = false;
        chunk_line_bytes_ = 0;
        break;
      case State::kTrailers: {
        const Step step = ParseTrailersAt(data, &pos);
        if (step == Step::kFailed) return {pos, error_};
        if (step == Step::kNeedMore) return {pos, ParseError::kNone};
        break;
      }
    }
    // Pause() only takes effect between messages.
    if (paused_ && AtMessageBoundary()) break;
  }
  return {pos, ParseError::kNone};
}

Http1Parser::Step Http1Parser::ParseHeadAt(std::string_view data, size_t* pos) {
  const size_t size = data.size();
  size_t start = *pos;
  // Empty lines before the start line. They are consumed, so a head that is
  // not yet complete always begins with a non-empty line.
  while (start < size && (data[start] == '\r' || data[start] == '\n')) {
    if (data[start] == '\n') {
      // An empty line ended by a bare LF (`echo | openssl s_client`, a
      // probe's newline): ignored as nginx does (RFC 9112 2.2 lets a
      // server take LF alone as a line end; only here, before a start
      // line, where it carries nothing).
      if (++leading_empty_lines_ > kMaxLeadingEmptyLines) {
        Fail(ParseError::kBadRequest, "too many empty lines before start line");
        return Step::kFailed;
      }
      start += 1;
      *pos = start;
      continue;
    }
    if (start + 1 == size) break;
    if (data[start + 1] != '\n') {
      Fail(ParseError::kBadRequest, "bare CR used as a line end");
      return Step::kFailed;
    }
    if (++leading_empty_lines_ > kMaxLeadingEmptyLines) {
      Fail(ParseError::kBadRequest, "too many empty lines before start line");
      return Step::kFailed;
    }
    start += 2;
    *pos = start;
  }
  if (start == size || data[start] == '\r') return Step::kNeedMore;
  in_message_ = true;
  head_method_ = false;  // a head over the size limits fails before it is parsed

  size_t end = 0;
  const Step step = FindSectionEnd(data, start, limits_.max_head_bytes, &end);
  if (step != Step::kDone) return step;

  if (!ParseHead(data.substr(start, end - start))) return Step::kFailed;
  *pos = end;
  callbacks_->OnHead(head_);
  StartBody();
  return Step::kDone;
}

// Finds the CRLF CRLF that ends the field section starting at `start`, whose
// first line is not empty. Every LF on the way must follow a CR.
Http1Parser::Step Http1Parser::FindSectionEnd(std::string_view data,
                                              size_t start, size_t max_bytes,
                                              size_t* end) {
  const char* const p = data.data();
  const size_t available = data.size() - start;
  const size_t search_end =
      start + (available > max_bytes ? max_bytes : available);
  // Resume where the previous call stopped; the caller re-feeds the bytes.
  size_t i = start + (scan_offset_ <= available ? scan_offset_ : 0);
  while (i < search_end) {
    const void* hit = std::memchr(p + i, '\n', search_end - i);
    if (hit == nullptr) break;
    const size_t lf = static_cast<const char*>(hit) - p;
    if (lf == start || p[lf - 1] != '\r') {
      // A wrong request line is the error, as when the head comes in pieces.
      if (RequestLineFails(data.substr(0, lf), start)) return Step::kFailed;
      Fail(ParseError::kBadRequest, "bare LF used as a line end");
      if (state_ == State::kHead) SalvageRefusedRequest(data.substr(start, lf - start));
      return Step::kFailed;
    }
    if (lf - start >= 3 && p[lf - 2] == '\n') {
      scan_offset_ = 0;
      *end = lf + 1;
      return Step::kDone;
    }
    i = lf + 1;
  }
  if (available >= max_bytes) {
    if (RequestLineFails(data.substr(0, search_end), start)) return Step::kFailed;
    // No line end within the limit: the request line alone is too long,
    // which RFC 9112 3 answers with 414 (its target is what grows).
    if (mode_ == Mode::kRequest && state_ == State::kHead &&
        std::memchr(p + start, '\n', search_end - start) == nullptr) {
      // No space either: the method alone is over the limit, which RFC
      // 9112 3 answers with 501 (longer than any method implemented).
      if (std::memchr(p + start, ' ', search_end - start) == nullptr) {
        Fail(ParseError::kNotImplemented,
             "a method longer than the listener's http.max_request_headers_bytes");
        return Step::kFailed;
      }
      Fail(ParseError::kRequestLineTooLong, "request line longer than the head limit");
      return Step::kFailed;
    }
    Fail(ParseError::kHeadersTooLarge, state_ == State::kHead
                                           ? "message head too large"
                                           : "trailer section too large");
    // Logged with what came whole before the limit (the request line, Host,
    // User-Agent), as a head refused for its field count is, and as nginx
    // logs its 400 for a header too large.
    if (state_ == State::kHead) SalvageRefusedRequest(data.substr(start, search_end - start));
    return Step::kFailed;
  }
  scan_offset_ = available;
  if (RequestLineFails(data, start)) return Step::kFailed;
  return Step::kNeedMore;
}

bool Http1Parser::RequestLineFails(std::string_view data, size_t start) {
  return mode_ == Mode::kRequest && state_ == State::kHead && !CheckPartialRequestLine(data, start);
}

// A head still coming whose request line is already wrong is refused now,
// not when its empty line or its timeout comes: HTTP/0.9's "GET /\r\n"
// sends no empty line, nor does a TLS handshake sent to a plain port. Only
// for heads split across reads (a whole one is parsed once, by ParseHead),
// and before a bare LF or a size limit is reported, so that a head gets
// the same error however it is split.
bool Http1Parser::CheckPartialRequestLine(std::string_view data, size_t start) {
  const size_t lf = data.find('\n', start);
  if (lf != std::string_view::npos && lf > start && data[lf - 1] == '\r') {
    return ParseRequestLine(data.substr(start, lf - 1 - start));
  }
  // Not whole (or ended by a bare LF, the caller's error): its method so far.
  const size_t end = lf == std::string_view::npos ? data.size() : lf;
  size_t i = start;
  while (i < end && kTokenChar[Byte(data[i])]) ++i;
  if (i < end && data[i] != ' ') {
    return Fail(ParseError::kBadRequest, "invalid method in request line");
  }
  return true;
}

bool Http1Parser::ParseHead(std::string_view head) {
  head_method_ = false;
  has_refused_request_ = false;
  head_.method = {};
  head_.target = {};
  head_.status = 0;
  head_.reason = {};
  head_.version_minor = 1;
  head_.headers.clear();
  head_.framing = BodyFraming::kNone;
  head_.content_length = 0;
  head_.has_content_length = false;
  head_.keep_alive = true;
  head_.expect_continue = false;
  head_.upgrade = false;
  head_.connection_names = false;
  head_.head_bytes = head.size();

  // FindSectionEnd guarantees the first LF exists and follows a CR.
  const size_t lf = head.find('\n');
  const std::string_view start_line = head.substr(0, lf - 1);
  if (mode_ == Mode::kRequest ? !ParseRequestLine(start_line)
                              : !ParseStatusLine(start_line)) {
    return false;
  }
  // Field lines, without the empty line that ends the section.
  const std::string_view fields = head.substr(lf + 1, head.size() - lf - 3);
  if (!ParseFieldLines(fields, &head_.headers) || !ApplyHeaderSemantics()) {
    RememberRefusedRequest();
    return false;
  }
  return true;
}

void Http1Parser::RememberRefusedRequest() {
  if (mode_ != Mode::kRequest) return;
  // The views point into the bytes being fed: copied while they are valid.
  has_refused_request_ = true;
  RefusedRequest& refused = FreshRefusedRequest();
  refused.method.assign(head_.method);
  refused.target.assign(head_.target);
  refused.version_minor = head_.version_minor;
  for (const HeaderField& f : head_.headers) {
    if (refused.host.empty() && EqualsIgnoreCase(f.name, "host")) {
      refused.host.assign(f.value);
    } else if (refused.user_agent.empty() && EqualsIgnoreCase(f.name, "user-agent")) {
      refused.user_agent.assign(f.value);
    } else if (refused.traceparent.empty() && EqualsIgnoreCase(f.name, "traceparent")) {
      refused.traceparent.assign(f.value);
    }
  }
}

Http1Parser::RefusedRequest& Http1Parser::FreshRefusedRequest() {
  if (refused_request_ == nullptr) {
    refused_request_ = std::make_unique<RefusedRequest>();
  } else {
    *refused_request_ = RefusedRequest();
  }
  return *refused_request_;
}

void Http1Parser::SalvageRefusedRequest(std::string_view head) {
  if (mode_ != Mode::kRequest) return;
  has_refused_request_ = false;
  while (head.substr(0, 2) == "\r\n") head.remove_prefix(2);  // leading empty lines
  size_t end = head.find("\r\n");
  if (end == std::string_view::npos) return;
  // METHOD SP TARGET SP HTTP/1.x, each part of its own characters.
  const std::string_view line = head.substr(0, end);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp1 == 0 || sp2 == sp1 + 1) return;
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  for (char c : method) {
    if (!kTokenChar[Byte(c)]) return;
  }
  for (char c : target) {
    if (!kTargetChar[Byte(c)]) return;
  }
  has_refused_request_ = true;
  RefusedRequest& refused = FreshRefusedRequest();
  refused.method.assign(method);
  refused.target.assign(target);
  refused.version_minor = line.substr(sp2 + 1) == "HTTP/1.0" ? 0 : 1;
  // The field lines after it that ended in CRLF and hold no other control.
  while (true) {
    const size_t from = end + 2;
    end = head.find("\r\n", from);
    if (end == std::string_view::npos || end == from) return;
    const std::string_view field = head.substr(from, end - from);
    const size_t colon = field.find(':');
    if (colon == std::string_view::npos ||
        std::any_of(field.begin(), field.end(),
                    [](char c) { return Byte(c) < 0x20 && c != '\t'; })) {
      continue;
    }
    const std::string_view name = field.substr(0, colon);
    std::string_view value = field.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    std::string* into = EqualsIgnoreCase(name, "host")         ? &refused.host
                        : EqualsIgnoreCase(name, "user-agent")  ? &refused.user_agent
                        : EqualsIgnoreCase(name, "traceparent") ? &refused.traceparent
                                                                : nullptr;
    if (into != nullptr && into->empty()) into->assign(value);
  }
}

bool Http1Parser::ParseRequestLine(std::string_view line) {
  const size_t size = line.size();
  size_t i = 0;
  while (i < size && kTokenChar[Byte(line[i])]) ++i;
  if (i == 0 || i == size || line[i] != ' ') {
    return Fail(ParseError::kBadRequest,
                i == size ? "malformed request line"
                          : "invalid method in request line");
  }
  head_.method = line.substr(0, i);
  head_method_ = head_.method == "HEAD";
  const size_t target_begin = ++i;
  while (i < size && kTargetChar[Byte(line[i])]) ++i;
  if (i == target_begin) {
    return Fail(ParseError::kBadRequest, "empty request target");
  }
  if (i == size) {
    return Fail(ParseError::kBadRequest, "malformed request line");
  }
  if (line[i] != ' ') {
    return Fail(ParseError::kBadRequest, "invalid request target");
  }
  head_.target = line.substr(target_begin, i - target_begin);
  const int minor = ParseVersion(line.substr(i + 1));
  if (minor == -2) {
    return Fail(ParseError::kVersionNotSupported, "HTTP version not supported (HTTP/1.x only)");
  }
  if (minor < 0) {
    return Fail(ParseError::kBadRequest, "unsupported HTTP version");
  }
  head_.version_minor = minor;
  return true;
}

bool Http1Parser::ParseStatusLine(std::string_view line) {
  if (line.size() < 12 || line[8] != ' ') {
    return Fail(ParseError::kBadRequest, "malformed status line");
  }
  const int minor = ParseVersion(line.substr(0, 8));
  if (minor < 0) {
    return Fail(ParseError::kBadRequest, "unsupported HTTP version");
  }
  head_.version_minor = minor;
  int status = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') {
      return Fail(ParseError::kBadRequest, "invalid status code");
    }
    status = status * 10 + (line[i] - '0');
  }
  if (status < 100 || status > 599) {
    return Fail(ParseError::kBadRequest, "invalid status code");
  }
  head_.status = status;
  if (line.size() == 12) return true;  // "HTTP/1.1 200" without SP
  if (line[12] != ' ') {
    return Fail(ParseError::kBadRequest, "malformed status line");
  }
  head_.reason = line.substr(13);
  for (char c : head_.reason) {
    if (!kFieldValueChar[Byte(c)]) {
      return Fail(ParseError::kBadRequest, "invalid character in reason");
    }
  }
  return true;
}

// `section` is a sequence of "name: value CRLF" lines in which every LF is
// known to follow a CR.
bool Http1Parser::ParseFieldLines(std::string_view section,
                                  std::vector<HeaderField>* fields) {
  const char* const p = section.data();
  const size_t size = section.size();
  if (fields->capacity() == 0 && size > 0) {
    fields->reserve(std::min(kInitialFields, limits_.max_headers));
  }
  size_t i = 0;
  while (i < size) {
    if (IsOws(p[i])) {
      return Fail(ParseError::kBadRequest,
                  "field line starts with whitespace (obsolete line folding)");
    }
    const size_t name_begin = i;
    while (kTokenChar[Byte(p[i])]) ++i;  // stops at the CR at the latest
    const std::string_view name(p + name_begin, i - name_begin);
    if (p[i] != ':' || i == name_begin) {
      if (i > name_begin && IsOws(p[i])) {
        // `Name : value`, or a line with no colon at all (`XA 1`).
        size_t after = i;
        while (IsOws(p[after])) ++after;
        // A response's `Name : value` is taken as `Name: value`: a proxy
        // removes such whitespace before forwarding (RFC 9112 5.1); a
        // request's is refused, as a server must.
        if (p[after] == ':' && mode_ == Mode::kResponse) {
          i = after;
        } else {
          // `Bad Name: v`: a space in the name, not a line without a colon.
          const size_t line_end = FindControl(p, after, size);
          const bool colon_later =
              std::string_view(p + after, line_end - after).find(':') != std::string_view::npos;
          return Fail(ParseError::kBadRequest,
                      p[after] == ':' ? "whitespace between field name and colon"
                      : colon_later   ? "invalid character in field name"
                                      : "field line without a colon");
        }
      } else {
        return Fail(ParseError::kBadRequest,
                    i == name_begin ? "empty or invalid field name"
                    : p[i] == '\r' ? "field line without a colon"
                                    : "invalid character in field name");
      }
    }
    ++i;
    // The value runs to the line's CR; HTAB is the only control allowed in it.
    size_t cr = FindControl(p, i, size);
    while (p[cr] == '\t') cr = FindControl(p, cr + 1, size);
    if (p[cr] != '\r' || p[cr + 1] != '\n') {
      return Fail(ParseError::kBadRequest, "invalid character in field value");
    }
    const std::string_view value = TrimOws(section.substr(i, cr - i));
    if (fields->size() >= limits_.max_headers) {
      return Fail(ParseError::kHeadersTooLarge, "too many header fields");
    }
    fields->push_back({name, value});
    i = cr + 2;
  }
  return true;
}

bool Http1Parser::ApplyHeaderSemantics() {
  const bool request = mode_ == Mode::kRequest;
  bool has_content_length = false;
  uint64_t content_length = 0;
  bool has_transfer_encoding = false;
  bool chunked = false;
  bool other_coding = false;  // a transfer coding other than chunked
  int host_count = 0;
  bool connection_close = false;
  bool connection_keep_alive = false;
  bool connection_upgrade = false;
  bool has_upgrade = false;

  for (const HeaderField& field : head_.headers) {
    const std::string_view name = field.name;
    const std::string_view value = field.value;
    switch (name.size()) {
      case 4:
        if (request && EqualsIgnoreCase(name, "host")) {
          if (++host_count > 1) {
            return Fail(ParseError::kBadRequest, "more than one Host header");
          }
          if (!IsValidHostValue(value)) {
            return Fail(ParseError::kBadRequest, "invalid Host header");
          }
        }
        break;
      case 6:
        // A list (RFC 9110 10.1.1): 100-continue may be one member.
        if (request && EqualsIgnoreCase(name, "expect")) {
          ForEachListElement(value, [&](std::string_view member) {
            if (EqualsIgnoreCase(member, "100-continue")) head_.expect_continue = true;
            return true;
          });
        }
        break;
      case 7:
        if (EqualsIgnoreCase(name, "upgrade") && !value.empty()) {
          has_upgrade = true;
        }
        break;
      case 10:
        if (EqualsIgnoreCase(name, "connection")) {
          ForEachListElement(value, [&](std::string_view option) {
            if (EqualsIgnoreCase(option, "close")) {
              connection_close = true;
            } else if (EqualsIgnoreCase(option, "keep-alive")) {
              connection_keep_alive = true;
            } else if (!option.empty()) {
              head_.connection_names = true;
              if (EqualsIgnoreCase(option, "upgrade")) connection_upgrade = true;
            }
            return true;
          });
        }
        break;
      case 14:
        if (EqualsIgnoreCase(name, "content-length")) {
          const bool ok = ForEachListElement(value, [&](std::string_view v) {
            if (v.empty()) return false;
            uint64_t n = 0;
            for (char c : v) {
              if (c < '0' || c > '9') return false;
              const unsigned digit = static_cast<unsigned>(c - '0');
              if (n > (kMaxContentLength - digit) / 10) return false;
              n = n * 10 + digit;
            }
            if (has_content_length && n != content_length) {
              return Fail(ParseError::kBadRequest,
                          "conflicting Content-Length values");
            }
            has_content_length = true;
            content_length = n;
            return true;
          });
          if (!ok) {
            if (error_ == ParseError::kNone) {
              Fail(ParseError::kBadRequest, "invalid Content-Length");
            }
            return false;
          }
        }
        break;
      case 17:
        if (EqualsIgnoreCase(name, "transfer-encoding")) {
          has_transfer_encoding = true;
          const bool ok = ForEachListElement(value, [&](std::string_view v) {
            if (v.empty()) {
              // RFC 9110 5.6.1 would skip it; refused (as nginx does, 501)
              // so that no server behind can frame the body another way.
              return Fail(ParseError::kBadRequest, "an empty element in Transfer-Encoding");
            }
            if (chunked) {
              // Nothing may follow chunked (RFC 9112 6.3): the length is unknown.
              return Fail(ParseError::kBadRequest,
                          EqualsIgnoreCase(v, "chunked") ? "chunked applied twice"
                                                         : "a transfer coding after chunked");
            }
            if (EqualsIgnoreCase(v, "chunked")) {
              chunked = true;
              return true;
            }
            // Another coding: a token (its parameters aside), or the field
            // is malformed.
            const std::string_view coding = v.substr(0, v.find(';'));
            bool token = !coding.empty();
            for (char ch : coding) token = token && kTokenChar[Byte(ch)];
            if (!token) {
              return Fail(ParseError::kBadRequest, "malformed Transfer-Encoding");
            }
            other_coding = true;
            return true;
          });
          if (!ok) return false;
        }
        break;
      default:
        break;
    }
  }

  if (other_coding) {
    // Framed (chunked is last) but coded in a way the gateway does not
    // decode: 501 to a request (RFC 9112 6.1); without chunked last there is
    // no framing at all (400), and an upstream's is a 502 either way.
    return Fail(chunked && request ? ParseError::kNotImplemented : ParseError::kBadRequest,
                "unsupported Transfer-Encoding (only chunked)");
  }
  if (has_transfer_encoding && has_content_length) {
    return Fail(ParseError::kBadRequest,
                "Content-Length together with Transfer-Encoding");
  }
  if (has_transfer_encoding && head_.version_minor == 0) {
    return Fail(ParseError::kBadRequest,
                "Transfer-Encoding in an HTTP/1.0 message");
  }
  if (request && head_.version_minor == 1 && host_count == 0) {
    return Fail(ParseError::kBadRequest, "missing Host header");
  }
  if (head_.version_minor == 0) head_.expect_continue = false;

  head_.content_length = content_length;
  head_.has_content_length = has_content_length;
  head_.upgrade = connection_upgrade && has_upgrade;
  head_.keep_alive =
      !connection_close && (head_.version_minor == 1 || connection_keep_alive);

  if (request) {
    final_response_ = false;
    switches_protocols_ = head_.upgrade || head_.method == "CONNECT";
    if (chunked) {
      head_.framing = BodyFraming::kChunked;
    } else if (has_content_length) {
      head_.framing = BodyFraming::kContentLength;
    }
    return true;
  }

  final_response_ = head_.status >= 200;
  switches_protocols_ = head_.status == 101;
  const bool no_body = head_.status < 200 || head_.status == 204 ||
                       head_.status == 304 || next_response_is_for_head_;
  if (no_body) {
    head_.framing = BodyFraming::kNone;
  } else if (chunked) {
    head_.framing = BodyFraming::kChunked;
  } else if (has_content_length) {
    head_.framing = BodyFraming::kContentLength;
  } else {
    head_.framing = BodyFraming::kUntilClose;
    head_.keep_alive = false;
  }
  return true;
}

void Http1Parser::StartBody() {
  switch (head_.framing) {
    case BodyFraming::kNone:
      CompleteMessage();
      break;
    case BodyFraming::kContentLength:
      if (head_.content_length == 0) {
        CompleteMessage();
      } else {
        remaining_ = head_.content_length;
        state_ = State::kBodyContentLength;
      }
      break;
    case BodyFraming::kChunked:
      state_ = State::kChunkSize;
      chunk_size_ = 0;
      chunk_size_has_digit_ = false;
      chunk_line_bytes_ = 0;
      break;
    case BodyFraming::kUntilClose:
      state_ = State::kBodyUntilClose;
      break;
  }
}

bool Http1Parser::ChunkExtensionByte(char c) {
  const bool token = kTokenChar[Byte(c)];
  const bool ows = IsOws(c);
  switch (ext_state_) {
    case ExtState::kBeforeName:
      if (token) ext_state_ = ExtState::kName;
      return token || ows;
    case ExtState::kName:
    case ExtState::kAfterName:
      if (token && ext_state_ == ExtState::kName) return true;
      if (ows) ext_state_ = ExtState::kAfterName;
      else if (c == '=') ext_state_ = ExtState::kBeforeValue;
      else if (c == ';') ext_state_ = ExtState::kBeforeName;
      else return false;
      return true;
    case ExtState::kBeforeValue:
      if (c == '"') ext_state_ = ExtState::kQuoted;
      else if (token) ext_state_ = ExtState::kToken;
      else return ows;
      return true;
    case ExtState::kToken:
    case ExtState::kAfterValue:
      if (token && ext_state_ == ExtState::kToken) return true;
      if (ows) ext_state_ = ExtState::kAfterValue;
      else if (c == ';') ext_state_ = ExtState::kBeforeName;
      else return false;
      return true;
    case ExtState::kQuoted:
      // qdtext or a quoted-pair's backslash (field value bytes: checked).
      if (c == '"') ext_state_ = ExtState::kAfterValue;
      else if (c == '\\') ext_state_ = ExtState::kQuotedPair;
      return true;
    case ExtState::kQuotedPair:
      ext_state_ = ExtState::kQuoted;
      return true;
  }
  return false;
}

// Parses "chunk-size [ BWS ; chunk-ext ] CRLF" as its bytes arrive.
bool Http1Parser::ParseChunkLine(std::string_view data, size_t* pos) {
  size_t i = *pos;
  const size_t size = data.size();
  const size_t line_start = i;
  while (i < size) {
    const char c = data[i];
    switch (state_) {
      case State::kChunkSize: {
        const int digit = HexValue(c);
        if (digit >= 0) {
          if (chunk_size_ >> 59 != 0) {
            *pos = i;
            return Fail(ParseError::kBadRequest, "chunk size too large");
          }
          chunk_size_ = (chunk_size_ << 4) | static_cast<uint64_t>(digit);
          chunk_size_has_digit_ = true;
        } else if (c == '\n') {
          *pos = i;
          return Fail(ParseError::kBadRequest, "bare LF used as a line end");
        } else if (!chunk_size_has_digit_) {
          *pos = i;
          return Fail(ParseError::kBadRequest, "invalid chunk size");
        } else if (c == '\r') {
          state_ = State::kChunkSizeLf;
        } else if (c == ';') {
          state_ = State::kChunkExtension;
          ext_state_ = ExtState::kBeforeName;
        } else if (IsOws(c)) {
          state_ = State::kChunkSizeBws;
        } else {
          *pos = i;
          return Fail(ParseError::kBadRequest, "invalid chunk size");
        }
        break;
      }
      case State::kChunkSizeBws:
        if (c == ';') {
          state_ = State::kChunkExtension;
          ext_state_ = ExtState::kBeforeName;
        } else if (c == '\r' && mode_ == Mode::kResponse) {
          // `5 CRLF`: white space and no extension, which the grammar does
          // not allow but nginx and HAProxy take from upstreams (the body is
          // framed anew for the client). A request's is refused.
          state_ = State::kChunkSizeLf;
        } else if (!IsOws(c)) {
          *pos = i;
          return Fail(ParseError::kBadRequest, "invalid chunk size line");
        }
        break;
      case State::kChunkExtension:
        if (c != '\r' && !kFieldValueChar[Byte(c)]) {
          *pos = i;
          return Fail(ParseError::kBadRequest,
                      "invalid character in chunk extension");
        }
        if (mode_ == Mode::kResponse) {
          // An upstream's is taken as nginx and HAProxy take it (it is
          // not passed on: the body is framed anew).
          if (c == '\r') state_ = State::kChunkSizeLf;
        } else if (c == '\r') {
          // A name, or a whole value, must come before the line ends.
          if (ext_state_ != ExtState::kName && ext_state_ != ExtState::kAfterName &&
              ext_state_ != ExtState::kToken && ext_state_ != ExtState::kAfterValue) {
            *pos = i;
            return Fail(ParseError::kBadRequest, "invalid chunk extension");
          }
          state_ = State::kChunkSizeLf;
        } else if (!ChunkExtensionByte(c)) {
          *pos = i;
          return Fail(ParseError::kBadRequest, "invalid chunk extension");
        }
        break;
      case State::kChunkSizeLf:
        if (c != '\n') {
          *pos = i;
          return Fail(ParseError::kBadRequest, "bare CR in chunk size line");
        }
        *pos = i + 1;
        if (chunk_size_ == 0) {
          state_ = State::kTrailers;
          scan_offset_ = 0;
        } else {
          state_ = State::kChunkData;
          remaining_ = chunk_size_;
          callbacks_->OnChunkSize(chunk_size_);
        }
        return true;
      default:
        return true;  // not reached
    }
    ++i;
    if (chunk_line_bytes_ + (i - line_start) > kMaxChunkLineBytes) {
      *pos = i;
      return Fail(ParseError::kBadRequest, "chunk size line too long");
    }
  }
  chunk_line_bytes_ += i - line_start;
  *pos = i;
  return true;
}

Http1Parser::Step Http1Parser::ParseTrailersAt(std::string_view data,
                                               size_t* pos) {
  const size_t start = *pos;
  const char first = data[start];
  if (first == '\r') {  // empty trailer section: the last CRLF
    if (start + 1 == data.size()) return Step::kNeedMore;
    if (data[start + 1] != '\n') {
      Fail(ParseError::kBadRequest, "bare CR used as a line end");
      return Step::kFailed;
    }
    *pos = start + 2;
    CompleteMessage();
    return Step::kDone;
  }
  if (first == '\n') {
    Fail(ParseError::kBadRequest, "bare LF used as a line end");
    return Step::kFailed;
  }
  size_t end = 0;
  const Step step =
      FindSectionEnd(data, start, limits_.max_trailer_bytes, &end);
  if (step != Step::kDone) return step;
  trailers_.clear();
  unfolded_trailers_.clear();
  // Without the empty line that ends the section.
  std::string_view section = data.substr(start, end - start - 2);
  // A response's trailer section that begins with whitespace-preceded
  // lines: consumed without further processing, as RFC 9112 2.2 lets a
  // recipient do with such lines before a section's first field (they
  // folded onto no field), rather than cutting a response whose head went.
  // Their bytes are held to a field value's all the same: no control
  // character but a tab (a bare CR stays refused).
  while (mode_ == Mode::kResponse && !section.empty() && IsOws(section[0])) {
    const size_t line_end = section.find("\r\n");
    const std::string_view line = section.substr(0, line_end);
    for (unsigned char c : line) {
      if ((c < 0x20 && c != '\t') || c == 0x7f) {
        Fail(ParseError::kBadRequest, "invalid character in a trailer line");
        return Step::kFailed;
      }
    }
    section = line_end == std::string_view::npos ? std::string_view()
                                                 : section.substr(line_end + 2);
  }
  if (section.empty()) {  // nothing but such lines: no trailers
    *pos = end;
    CompleteMessage();
    return Step::kDone;
  }
  if (mode_ == Mode::kResponse && (section.find("\r\n ") != std::string_view::npos ||
                                   section.find("\r\n\t") != std::string_view::npos)) {
    // A response's trailer with obsolete line folding: each fold becomes
    // spaces, as RFC 9112 5.2 lets a proxy do (HAProxy does), rather than
    // cutting a response whose head already went (it was cut). A head's
    // folding still fails it, before anything went: 502.
    unfolded_trailers_.assign(section);
    for (size_t at = unfolded_trailers_.find("\r\n"); at != std::string::npos;
         at = unfolded_trailers_.find("\r\n", at + 2)) {
      size_t after = at + 2;
      if (after >= unfolded_trailers_.size() || !IsOws(unfolded_trailers_[after])) continue;
      unfolded_trailers_[at] = unfolded_trailers_[at + 1] = ' ';  // the fold: CRLF 1*WS
      for (; after < unfolded_trailers_.size() && IsOws(unfolded_trailers_[after]); ++after) {
        unfolded_trailers_[after] = ' ';
      }
    }
    section = unfolded_trailers_;
  }
  if (!ParseFieldLines(section, &trailers_)) {
    return Step::kFailed;
  }
  *pos = end;
  callbacks_->OnTrailers(trailers_);
  CompleteMessage();
  return Step::kDone;
}

void Http1Parser::CompleteMessage() {
  state_ = State::kHead;
  in_message_ = false;
  leading_empty_lines_ = 0;
  scan_offset_ = 0;
  if (final_response_) next_response_is_for_head_ = false;
  if (switches_protocols_) paused_ = true;
  switches_protocols_ = false;
  final_response_ = false;
  callbacks_->OnMessageComplete();
}

ParseError Http1Parser::FinishOnClose() {
  if (error_ != ParseError::kNone) return error_;
  if (state_ == State::kBodyUntilClose) {
    CompleteMessage();
    return ParseError::kNone;
  }
  if (state_ == State::kHead && !in_message_) return ParseError::kNone;
  Fail(ParseError::kBadRequest, "connection closed before message complete");
  return error_;
}

}  // namespace sluice::http
