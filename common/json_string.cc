#include "common/json_string.h"

#include <cstdio>

namespace sluice::common {

void AppendJsonString(std::string* out, std::string_view value) {
  out->push_back('"');
  // Most values need no escaping: copy them whole.
  size_t plain = 0;
  while (plain < value.size()) {
    unsigned char c = static_cast<unsigned char>(value[plain]);
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') break;
    ++plain;
  }
  out->append(value.data(), plain);
  size_t i = plain;
  while (i < value.size()) {
    unsigned char c = static_cast<unsigned char>(value[i]);
    if (c < 0x80) {
      if (c == '"' || c == '\\') {
        out->push_back('\\');
        out->push_back(static_cast<char>(c));
      } else if (c < 0x20 || c == 0x7f) {
        char esc[8];
        snprintf(esc, sizeof(esc), "\\u%04x", c);
        out->append(esc);
      } else {
        out->push_back(static_cast<char>(c));
      }
      ++i;
      continue;
    }
    // A UTF-8 sequence: copied when well formed, else U+FFFD for the byte.
    size_t n = c >= 0xf0 && c <= 0xf4   ? 4
               : c >= 0xe0 && c <= 0xef ? 3
               : c >= 0xc2 && c <= 0xdf ? 2
                                        : 0;
    bool ok = n > 0 && i + n <= value.size();
    for (size_t k = 1; ok && k < n; ++k) {
      ok = (static_cast<unsigned char>(value[i + k]) & 0xc0) == 0x80;
    }
    if (ok && n == 3) {
      unsigned char c1 = static_cast<unsigned char>(value[i + 1]);
      ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);  // overlong, surrogates
    }
    if (ok && n == 4) {
      unsigned char c1 = static_cast<unsigned char>(value[i + 1]);
      ok = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
    }
    // U+0085, U+2028 and U+2029 are valid JSON, but line ends to many
    // readers (JavaScript before ES2019, Python's splitlines): escaped, a
    // log line stays one line to every reader.
    const bool line_end = ok && ((n == 2 && c == 0xc2 && value[i + 1] == '\x85') ||
                                 (n == 3 && c == 0xe2 && value[i + 1] == '\x80' &&
                                  (value[i + 2] == '\xa8' || value[i + 2] == '\xa9')));
    if (line_end) {
      out->append(n == 2 ? "\\u0085" : value[i + 2] == '\xa8' ? "\\u2028" : "\\u2029");
      i += n;
    } else if (ok) {
      out->append(value.substr(i, n));
      i += n;
    } else {
      out->append("\\ufffd");
      ++i;
    }
  }
  out->push_back('"');
}

}  // namespace sluice::common
