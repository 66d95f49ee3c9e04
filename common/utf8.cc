#include "common/utf8.h"

namespace sluice::common {

size_t InvalidUtf8At(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > text.size() || (n == 2 && c < 0xc2)) return i;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xc0) != 0x80) return i;
    }
    const unsigned char d = static_cast<unsigned char>(n > 1 ? text[i + 1] : 0);
    if ((n == 3 && ((c == 0xe0 && d < 0xa0) || (c == 0xed && d >= 0xa0))) ||
        (n == 4 && ((c == 0xf0 && d < 0x90) || (c == 0xf4 && d >= 0x90) || c > 0xf4))) {
      return i;  // overlong, a surrogate, or past U+10FFFF
    }
    i += n;
  }
  return std::string_view::npos;
}

}  // namespace sluice::common
