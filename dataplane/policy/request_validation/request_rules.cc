#include "dataplane/policy/request_validation/request_rules.h"

namespace sluice::policy::request_validation {

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

bool IsQueryParameterName(std::string_view s) {
  if (s.empty() || s.size() > kMaxQueryNameLength) return false;
  for (char c : s) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f ||
        std::string_view("&=#?").find(c) != std::string_view::npos) {
      return false;
    }
  }
  return true;
}

std::optional<std::string> MediaTypeOf(std::string_view content_type) {
  std::string_view media = content_type.substr(0, content_type.find(';'));
  while (!media.empty() && (media.front() == ' ' || media.front() == '\t')) media.remove_prefix(1);
  while (!media.empty() && (media.back() == ' ' || media.back() == '\t')) media.remove_suffix(1);
  size_t slash = media.find('/');
  if (slash == std::string_view::npos || media.size() > kMaxMediaTypeLength ||
      !IsToken(media.substr(0, slash)) || !IsToken(media.substr(slash + 1))) {
    return std::nullopt;
  }
  std::string out(media);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

}  // namespace sluice::policy::request_validation
