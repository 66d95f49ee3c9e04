// Whether text is UTF-8, for the text fields of the config and of the admin
// API (protobuf strings: UTF-8 or refused).
#ifndef SLUICE_COMMON_UTF8_H_
#define SLUICE_COMMON_UTF8_H_

#include <cstddef>
#include <string_view>

namespace sluice::common {

// The byte offset of the first byte that is not part of valid UTF-8 in
// `text` (an overlong form, a surrogate, past U+10FFFF, a cut sequence), or
// std::string_view::npos.
size_t InvalidUtf8At(std::string_view text);

}  // namespace sluice::common

#endif  // SLUICE_COMMON_UTF8_H_
