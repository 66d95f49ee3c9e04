#include "tests/harness/http_wire.h"

#include <algorithm>
#include <array>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace sluice::testing {
namespace {

constexpr size_t kMaxChunkLineBytes = 4096;
constexpr size_t kCompactAfterBytes = 64 * 1024;

bool IsTokenChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         absl::string_view("!#$%&'*+-.^_`|~").find(c) !=
             absl::string_view::npos;
}

bool IsToken(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

// Field values and reason phrases: visible characters, SP, HTAB, obs-text.
bool IsFieldText(absl::string_view s) {
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if ((u < 0x20 && u != '\t') || u == 0x7f) return false;
  }
  return true;
}

absl::string_view TrimOws(absl::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

bool ParseVersion(absl::string_view s, int* minor) {
  if (s == "HTTP/1.1") {
    *minor = 1;
    return true;
  }
  if (s == "HTTP/1.0") {
    *minor = 0;
    return true;
  }
  return false;
}

// Bounded, printable excerpt of untrusted bytes for error messages.
std::string Excerpt(absl::string_view s) {
  std::string out;
  for (char c : s.substr(0, 60)) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out.push_back(c);
    } else {
      absl::StrAppend(&out, "\\x", absl::Hex(u, absl::kZeroPad2));
    }
  }
  if (s.size() > 60) out += "...";
  return out;
}

const std::array<uint32_t, 256>& CrcTable() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

}  // namespace

std::string Http1Message::Header(absl::string_view name) const {
  std::vector<absl::string_view> values;
  for (const auto& [n, v] : headers) {
    if (n == name) values.push_back(v);
  }
  return absl::StrJoin(values, ", ");
}

bool Http1Message::HasHeader(absl::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (n == name) return true;
  }
  return false;
}

bool Http1Message::HasToken(absl::string_view name,
                            absl::string_view token) const {
  for (const auto& [n, v] : headers) {
    if (n != name) continue;
    for (absl::string_view t : absl::StrSplit(v, ',')) {
      if (absl::EqualsIgnoreCase(TrimOws(t), token)) return true;
    }
  }
  return false;
}

bool Http1Message::KeepAlive() const {
  if (HasToken("connection", "close")) return false;
  if (minor_version == 0) return HasToken("connection", "keep-alive");
  return true;
}

void Http1Reader::Feed(absl::string_view bytes) {
  Compact();
  buffer_.append(bytes.data(), bytes.size());
}

void Http1Reader::FeedEof() { eof_ = true; }

void Http1Reader::Compact() {
  if (pos_ == 0) return;
  if (pos_ < buffer_.size() && pos_ < kCompactAfterBytes) return;
  buffer_.erase(0, pos_);
  scan_pos_ = scan_pos_ > pos_ ? scan_pos_ - pos_ : 0;
  pos_ = 0;
}

const Http1Message* Http1Reader::head_in_progress() const {
  switch (state_) {
    case State::kHead:
    case State::kError:
      return nullptr;
    default:
      return &current_;
  }
}

bool Http1Reader::mid_message() const {
  return state_ != State::kHead || pos_ < buffer_.size();
}

Http1Reader::Result Http1Reader::Fail(std::string error,
                                      Http1Message* message) {
  error_ = std::move(error);
  state_ = State::kError;
  *message = current_;
  return Result::kError;
}

bool Http1Reader::TakeLine(absl::string_view* line, std::string* error,
                           bool* failed) {
  *failed = false;
  size_t lf = buffer_.find('\n', pos_);
  if (lf == std::string::npos) return false;
  if (lf == pos_ || buffer_[lf - 1] != '\r') {
    *error = "bare LF line ending (CRLF required)";
    *failed = true;
    return false;
  }
  *line = absl::string_view(buffer_).substr(pos_, lf - 1 - pos_);
  pos_ = lf + 1;
  return true;
}

bool Http1Reader::ParseHeaderLine(absl::string_view line, HeaderList* into,
                                  std::string* error) {
  if (line.front() == ' ' || line.front() == '\t') {
    *error = absl::StrCat("obsolete line folding in header line '",
                          Excerpt(line), "'");
    return false;
  }
  size_t colon = line.find(':');
  if (colon == absl::string_view::npos) {
    *error = absl::StrCat("header line without ':' '", Excerpt(line), "'");
    return false;
  }
  absl::string_view name = line.substr(0, colon);
  if (!IsToken(name)) {
    *error = absl::StrCat("invalid header name '", Excerpt(name), "'");
    return false;
  }
  absl::string_view value = TrimOws(line.substr(colon + 1));
  if (!IsFieldText(value)) {
    *error =
        absl::StrCat("control character in the value of header '", name, "'");
    return false;
  }
  into->emplace_back(absl::AsciiStrToLower(name), std::string(value));
  return true;
}

bool Http1Reader::ParseHead(absl::string_view head, std::string* error) {
  std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  // `head` ends with CRLF CRLF: the split leaves two empty strings at the end.
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  if (lines.empty()) {
    *error = "empty message head";
    return false;
  }
  absl::string_view start = lines[0];
  if (mode_ == Mode::kRequest) {
    std::vector<absl::string_view> parts = absl::StrSplit(start, ' ');
    if (parts.size() != 3) {
      *error = absl::StrCat("malformed request line '", Excerpt(start), "'");
      return false;
    }
    if (!IsToken(parts[0])) {
      *error = absl::StrCat("invalid method '", Excerpt(parts[0]), "'");
      return false;
    }
    bool target_ok = !parts[1].empty() &&
                     std::all_of(parts[1].begin(), parts[1].end(),
                                 [](char c) { return c > 0x20 && c < 0x7f; });
    if (!target_ok) {
      *error = absl::StrCat("invalid request target '", Excerpt(parts[1]), "'");
      return false;
    }
    if (!ParseVersion(parts[2], &current_.minor_version)) {
      *error =
          absl::StrCat("unsupported HTTP version '", Excerpt(parts[2]), "'");
      return false;
    }
    current_.method = std::string(parts[0]);
    current_.target = std::string(parts[1]);
  } else {
    // HTTP/1.x SP 3DIGIT [SP reason]; a missing reason is tolerated.
    absl::string_view status_text =
        start.size() >= 12 ? start.substr(9, 3) : "";
    bool ok = start.size() >= 12 &&
              ParseVersion(start.substr(0, 8), &current_.minor_version) &&
              start[8] == ' ' &&
              std::all_of(status_text.begin(), status_text.end(),
                          [](char c) { return c >= '0' && c <= '9'; }) &&
              (start.size() == 12 || start[12] == ' ') && IsFieldText(start);
    if (!ok) {
      *error = absl::StrCat("malformed status line '", Excerpt(start), "'");
      return false;
    }
    current_.status = (status_text[0] - '0') * 100 +
                      (status_text[1] - '0') * 10 + (status_text[2] - '0');
    if (current_.status < 100) {
      *error =
          absl::StrCat("status code out of range in '", Excerpt(start), "'");
      return false;
    }
    current_.reason = start.size() > 13 ? std::string(start.substr(13)) : "";
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    if (!ParseHeaderLine(lines[i], &current_.headers, error)) return false;
  }
  return true;
}

bool Http1Reader::StartBody(bool response_to_head, std::string* error) {
  const bool has_te = current_.HasHeader("transfer-encoding");
  const bool has_cl = current_.HasHeader("content-length");
  current_.has_body_framing = has_te || has_cl;
  state_ = State::kHead;  // no body unless decided below
  if (mode_ == Mode::kResponse &&
      (response_to_head || current_.status < 200 || current_.status == 204 ||
       current_.status == 304)) {
    return true;
  }
  if (has_te && has_cl) {
    *error =
        "both Transfer-Encoding and Content-Length (request smuggling risk)";
    return false;
  }
  if (has_te) {
    std::string te = current_.Header("transfer-encoding");
    if (!absl::EqualsIgnoreCase(TrimOws(te), "chunked")) {
      *error = absl::StrCat("unsupported transfer-encoding '", Excerpt(te),
                            "' (only 'chunked')");
      return false;
    }
    current_.chunked = true;
    state_ = State::kChunkSize;
    return true;
  }
  if (has_cl) {
    std::string cl = current_.Header("content-length");
    bool first = true;
    uint64_t length = 0;
    for (absl::string_view part : absl::StrSplit(cl, ',')) {
      part = TrimOws(part);
      uint64_t v = 0;
      bool digits = !part.empty() && part.size() <= 18 &&
                    std::all_of(part.begin(), part.end(),
                                [](char c) { return c >= '0' && c <= '9'; });
      if (!digits || !absl::SimpleAtoi(part, &v) || (!first && v != length)) {
        *error = absl::StrCat("invalid Content-Length '", Excerpt(cl), "'");
        return false;
      }
      length = v;
      first = false;
    }
    expected_length_ = length;
    remaining_ = length;
    if (length > 0) state_ = State::kBodyLength;
    return true;
  }
  if (mode_ == Mode::kResponse) state_ = State::kBodyUntilClose;
  return true;
}

Http1Reader::Result Http1Reader::Next(Http1Message* message,
                                      bool response_to_head) {
  auto finish = [&] {
    *message = std::move(current_);
    current_ = Http1Message();
    state_ = State::kHead;
    scan_pos_ = pos_;
    return Result::kMessage;
  };
  std::string error;
  while (true) {
    const size_t avail = buffer_.size() - pos_;
    switch (state_) {
      case State::kHead: {
        if (mode_ == Mode::kRequest) {
          // RFC 9112 2.2: ignore empty lines before a request line.
          while (buffer_.size() - pos_ >= 2 && buffer_[pos_] == '\r' &&
                 buffer_[pos_ + 1] == '\n') {
            pos_ += 2;
          }
        }
        if (pos_ == buffer_.size())
          return eof_ ? Result::kClosed : Result::kNeedMore;
        size_t end = std::string::npos;
        for (size_t i = std::max(scan_pos_, pos_); i < buffer_.size(); ++i) {
          if (buffer_[i] != '\n') continue;
          if (i == pos_ || buffer_[i - 1] != '\r') {
            current_ = Http1Message();
            return Fail("bare LF line ending in message head (CRLF required)",
                        message);
          }
          if (i - 1 == pos_) {
            current_ = Http1Message();
            return Fail("empty start line", message);
          }
          if (i >= pos_ + 3 && buffer_[i - 2] == '\n') {
            end = i + 1;
            break;
          }
        }
        if (end == std::string::npos) {
          scan_pos_ = buffer_.size();
          current_ = Http1Message();
          if (buffer_.size() - pos_ > kMaxHeadBytes) {
            return Fail("message head larger than 64 KiB", message);
          }
          if (eof_) {
            return Fail(
                absl::StrCat(
                    "connection closed in the middle of the message head ('",
                    Excerpt(absl::string_view(buffer_).substr(pos_)), "')"),
                message);
          }
          return Result::kNeedMore;
        }
        if (end - pos_ > kMaxHeadBytes) {
          return Fail("message head larger than 64 KiB", message);
        }
        current_ = Http1Message();
        absl::string_view head =
            absl::string_view(buffer_).substr(pos_, end - pos_);
        if (!ParseHead(head, &error)) return Fail(error, message);
        pos_ = end;
        scan_pos_ = pos_;
        if (!StartBody(response_to_head, &error)) return Fail(error, message);
        if (state_ == State::kHead) return finish();
        break;
      }
      case State::kBodyLength:
      case State::kChunkData: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, avail));
        current_.body.append(buffer_, pos_, n);
        pos_ += n;
        remaining_ -= n;
        if (remaining_ == 0) {
          if (state_ == State::kBodyLength) return finish();
          state_ = State::kChunkDataEnd;
          break;
        }
        if (eof_) {
          return Fail(
              state_ == State::kBodyLength
                  ? absl::StrCat("connection closed after ",
                                 current_.body.size(), " of ", expected_length_,
                                 " body bytes")
                  : absl::StrCat("connection closed inside a chunk after ",
                                 current_.body.size(), " body bytes"),
              message);
        }
        return Result::kNeedMore;
      }
      case State::kChunkSize: {
        absl::string_view line;
        bool failed = false;
        if (!TakeLine(&line, &error, &failed)) {
          if (failed)
            return Fail(absl::StrCat("chunk size line: ", error), message);
          if (avail > kMaxChunkLineBytes)
            return Fail("chunk size line too long", message);
          if (eof_) {
            return Fail(absl::StrCat("connection closed in chunked body after ",
                                     current_.body.size(), " body bytes"),
                        message);
          }
          return Result::kNeedMore;
        }
        size_t digits = 0;
        while (digits < line.size() && absl::ascii_isxdigit(line[digits]))
          ++digits;
        absl::string_view rest = TrimOws(line.substr(digits));
        uint64_t size = 0;
        if (digits == 0 || digits > 15 ||
            (!rest.empty() && rest.front() != ';') ||
            !absl::SimpleHexAtoi(line.substr(0, digits), &size)) {
          return Fail(
              absl::StrCat("malformed chunk size line '", Excerpt(line), "'"),
              message);
        }
        if (size == 0) {
          state_ = State::kTrailers;
        } else {
          remaining_ = size;
          state_ = State::kChunkData;
        }
        break;
      }
      case State::kChunkDataEnd: {
        if (avail < 2) {
          if (eof_) return Fail("connection closed after chunk data", message);
          return Result::kNeedMore;
        }
        if (buffer_[pos_] != '\r' || buffer_[pos_ + 1] != '\n') {
          return Fail("chunk data not followed by CRLF (chunk size wrong?)",
                      message);
        }
        pos_ += 2;
        state_ = State::kChunkSize;
        break;
      }
      case State::kTrailers: {
        absl::string_view line;
        bool failed = false;
        if (!TakeLine(&line, &error, &failed)) {
          if (failed)
            return Fail(absl::StrCat("trailer section: ", error), message);
          if (avail > kMaxHeadBytes)
            return Fail("trailer section too long", message);
          if (eof_)
            return Fail("connection closed in the trailer section", message);
          return Result::kNeedMore;
        }
        if (line.empty()) return finish();
        if (!ParseHeaderLine(line, &current_.trailers, &error)) {
          return Fail(absl::StrCat("trailer section: ", error), message);
        }
        break;
      }
      case State::kBodyUntilClose: {
        current_.body.append(buffer_, pos_, avail);
        pos_ += avail;
        if (eof_) return finish();
        return Result::kNeedMore;
      }
      case State::kError:
        *message = current_;
        return Result::kError;
    }
  }
}

uint32_t Crc32(absl::string_view data) {
  const auto& table = CrcTable();
  uint32_t crc = 0xFFFFFFFFu;
  for (char c : data)
    crc = table[(crc ^ static_cast<unsigned char>(c)) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

std::string Crc32Hex(absl::string_view data) {
  return absl::StrCat(absl::Hex(Crc32(data), absl::kZeroPad8));
}

std::string EncodeChunked(absl::string_view body, int chunks) {
  std::string out;
  size_t n =
      std::max<size_t>(1, std::min<size_t>(std::max(chunks, 1), body.size()));
  size_t base = body.size() / n, extra = body.size() % n, at = 0;
  for (size_t i = 0; i < n && !body.empty(); ++i) {
    size_t len = base + (i < extra ? 1 : 0);
    absl::StrAppend(&out, absl::Hex(len), "\r\n", body.substr(at, len), "\r\n");
    at += len;
  }
  out += "0\r\n\r\n";
  return out;
}

std::string Http2Frame(uint8_t type, uint8_t flags, uint32_t stream_id,
                       absl::string_view payload) {
  std::string frame;
  frame.push_back(static_cast<char>((payload.size() >> 16) & 0xff));
  frame.push_back(static_cast<char>((payload.size() >> 8) & 0xff));
  frame.push_back(static_cast<char>(payload.size() & 0xff));
  frame.push_back(static_cast<char>(type));
  frame.push_back(static_cast<char>(flags));
  frame.push_back(static_cast<char>((stream_id >> 24) & 0x7f));
  frame.push_back(static_cast<char>((stream_id >> 16) & 0xff));
  frame.push_back(static_cast<char>((stream_id >> 8) & 0xff));
  frame.push_back(static_cast<char>(stream_id & 0xff));
  frame.append(payload.data(), payload.size());
  return frame;
}

}  // namespace sluice::testing
