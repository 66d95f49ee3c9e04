#include "dataplane/policy/cors/origin_pattern.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "re2/re2.h"

namespace sluice::policy::cors {
namespace {

constexpr size_t kMaxEntryBytes = 1024;

bool IsSchemeChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
}

// RFC 3986 reg-name without percent-encodings and sub-delims: what a
// browser serializes a host as (punycode for IDNs).
bool IsHostChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
         c == '~';
}

bool IsIpv6LiteralChar(char c) {
  return absl::ascii_isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
}

// scheme "://" host [":" port], nothing else; the normalised form or "".
std::string NormaliseOrigin(std::string_view s) {
  size_t i = 0;
  if (s.empty() || !absl::ascii_isalpha(static_cast<unsigned char>(s[0]))) return "";
  while (i < s.size() && IsSchemeChar(s[i])) ++i;
  std::string scheme = absl::AsciiStrToLower(std::string(s.substr(0, i)));
  if (s.substr(i, 3) != "://") return "";
  i += 3;
  size_t host_start = i;
  if (i < s.size() && s[i] == '[') {
    ++i;
    while (i < s.size() && IsIpv6LiteralChar(s[i])) ++i;
    if (i >= s.size() || s[i] != ']' || i == host_start + 1) return "";
    ++i;
  } else {
    while (i < s.size() && IsHostChar(s[i])) ++i;
    if (i == host_start) return "";
  }
  std::string host = absl::AsciiStrToLower(std::string(s.substr(host_start, i - host_start)));
  std::string port;
  if (i < s.size() && s[i] == ':') {
    port = std::string(s.substr(i + 1));
    if (port.empty() || port.size() > 5) return "";
    int value = 0;
    for (char c : port) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return "";
      value = value * 10 + (c - '0');
    }
    if (value < 1 || value > 65535) return "";
    port = std::to_string(value);
    if ((scheme == "https" && value == 443) || (scheme == "http" && value == 80)) port.clear();
  } else if (i != s.size()) {
    return "";  // a path, a query, user info, spaces...
  }
  return port.empty() ? absl::StrCat(scheme, "://", host)
                      : absl::StrCat(scheme, "://", host, ":", port);
}

}  // namespace

absl::StatusOr<OriginPattern> ParseOriginPattern(std::string_view entry) {
  const std::string text(entry);
  if (entry.size() > kMaxEntryBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("is ", entry.size(), " bytes; at most ", kMaxEntryBytes));
  }
  if (entry == "*") return OriginPattern{OriginPattern::Kind::kAny, ""};
  if (!entry.empty() && entry[0] == '~') {
    std::string pattern(entry.substr(1));
    if (pattern.empty()) {
      return absl::InvalidArgumentError("'~' must be followed by a regular expression");
    }
    RE2::Options options;
    options.set_log_errors(false);
    RE2 re(pattern, options);
    if (!re.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid RE2 regular expression '", pattern, "': ", re.error()));
    }
    return OriginPattern{OriginPattern::Kind::kRegex, std::move(pattern)};
  }
  if (absl::AsciiStrToLower(text) == "null") {
    return absl::InvalidArgumentError(
        "'null' is the origin of sandboxed documents and local files, which any page can "
        "create; allowing it allows everyone (write '~^null$' if that is really meant)");
  }
  std::string normalised = NormaliseOrigin(entry);
  if (normalised.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text,
                     "' is not an origin: write scheme://host[:port] with no path "
                     "(e.g. https://app.example.com), '*', or '~' and an RE2 regular expression"));
  }
  return OriginPattern{OriginPattern::Kind::kExact, std::move(normalised)};
}

}  // namespace sluice::policy::cors
