// What the `request-validation` policy's validator and filter both apply:
// its limits and defaults, the names its rules may use, and how a
// Content-Type value reduces to the media type compared with the allowed
// list. Pure functions; thread-safe.
#ifndef SLUICE_DATAPLANE_POLICY_REQUEST_VALIDATION_REQUEST_RULES_H_
#define SLUICE_DATAPLANE_POLICY_REQUEST_VALIDATION_REQUEST_RULES_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::policy::request_validation {

inline constexpr int kMaxParameterRules = 64;  // per list
inline constexpr size_t kMaxHeaderNameLength = 64;
inline constexpr size_t kMaxQueryNameLength = 128;
inline constexpr int kMaxContentTypes = 32;
inline constexpr size_t kMaxMediaTypeLength = 127;
inline constexpr uint32_t kDefaultMaxBodyBytes = 1 << 20;
inline constexpr uint32_t kMaxMaxBodyBytes = 16 << 20;

// An RFC 9110 token (header names, media type parts).
bool IsToken(std::string_view s);
// A query parameter name a rule may use: 1..kMaxQueryNameLength bytes, no
// '&', '=', '#', '?', space or control character.
bool IsQueryParameterName(std::string_view s);

// The media type of a Content-Type value, lower-cased "type/subtype" with
// parameters (";charset=...") and surrounding whitespace dropped; nullopt
// when the value is not token "/" token, or longer than
// kMaxMediaTypeLength.
std::optional<std::string> MediaTypeOf(std::string_view content_type);

}  // namespace sluice::policy::request_validation

#endif  // SLUICE_DATAPLANE_POLICY_REQUEST_VALIDATION_REQUEST_RULES_H_
