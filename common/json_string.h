// JSON string literals: quotes, escapes (RFC 8259), and bytes that are not
// well-formed UTF-8 written as \ufffd, so the output is always valid JSON.
// Shared by the access log and the gateway's own error bodies.
#ifndef SLUICE_COMMON_JSON_STRING_H_
#define SLUICE_COMMON_JSON_STRING_H_

#include <string>
#include <string_view>

namespace sluice::common {

// Appends `value` to `out` as a JSON string, quotes included. Control
// characters and DEL are written \u00XX.
void AppendJsonString(std::string* out, std::string_view value);

}  // namespace sluice::common

#endif  // SLUICE_COMMON_JSON_STRING_H_
