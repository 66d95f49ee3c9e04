#include "dataplane/http/path_normalizer.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sluice::http {
namespace {

bool IsUnreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// False when NormalizePath would return `path` as it is: nothing to decode,
// reject or convert, no dot segment, no slashes to merge, no parameters to
// drop; then `*reads_otherwise` is ReadsOtherwise(path), found in the same
// pass (a '%' always takes the slow path).
bool MayChange(std::string_view path, const PathNormalizeOptions& options,
               bool* reads_otherwise) {
  bool kept = false;
  for (size_t i = 0; i < path.size(); ++i) {
    const char c = path[i];
    if (c == '%' || c == '#') return true;
    if (c == ';') {
      if (options.strip_path_parameters) return true;
      kept = true;
    }
    if (c == '\\') {
      if (options.backslashes != BackslashAction::kKeep) return true;
      kept = true;
    }
    if (c == '/' && i + 1 < path.size()) {
      const char next = path[i + 1];
      // Also true for names that merely start with '.' ("/.well-known"):
      // the slow path leaves those alone.
      if (next == '.') return true;
      if (next == '/') {
        if (options.merge_slashes) return true;
        kept = true;
      }
    }
  }
  *reads_otherwise = kept;
  return false;
}

// Whether a normalised `path` holds what some upstreams read otherwise than
// the gateway does: "//", '\\', ';', or an escaped slash ("%2F", "%5C":
// upper-case, as normalised).
bool ReadsOtherwise(std::string_view path) {
  for (size_t i = 0; i < path.size(); ++i) {
    const char c = path[i];
    if (c == '\\' || c == ';') return true;
    if (c == '/' && i + 1 < path.size() && path[i + 1] == '/') return true;
    if (c == '%' && i + 2 < path.size() && path[i + 1] == '2' && path[i + 2] == 'F') return true;
    if (c == '%' && i + 2 < path.size() && path[i + 1] == '5' && path[i + 2] == 'C') return true;
  }
  return false;
}

// Step 1: `path` with percent-encodings decoded or canonicalised and
// backslashes handled, appended to `out`. Sets `*decoded_slash` when an
// escaped slash was decoded.
absl::Status DecodePath(std::string_view path,
                        const PathNormalizeOptions& options, std::string* out,
                        bool* decoded_slash) {
  constexpr char kUpperHex[] = "0123456789ABCDEF";
  auto add_backslash = [&]() -> absl::Status {
    switch (options.backslashes) {
      case BackslashAction::kKeep:
        out->push_back('\\');
        return absl::OkStatus();
      case BackslashAction::kReject:
        return absl::InvalidArgumentError("backslash in path");
      case BackslashAction::kToSlash:
        out->push_back('/');
        return absl::OkStatus();
    }
    return absl::OkStatus();
  };
  for (size_t i = 0; i < path.size(); ++i) {
    const char c = path[i];
    if (c == '#')
      return absl::InvalidArgumentError("fragment in request target");
    if (c == '\\') {
      if (absl::Status s = add_backslash(); !s.ok()) return s;
      continue;
    }
    if (c != '%') {
      out->push_back(c);
      continue;
    }
    const int high = i + 2 < path.size() ? HexValue(path[i + 1]) : -1;
    const int low = high >= 0 ? HexValue(path[i + 2]) : -1;
    if (low < 0)
      return absl::InvalidArgumentError("invalid percent-encoding in path");
    i += 2;
    const unsigned char value = static_cast<unsigned char>(high * 16 + low);
    if (value == 0)
      return absl::InvalidArgumentError("percent-encoded NUL in path");
    // A line end or other control character no resource name has: PCRE,
    // Python, Java and PHP regexes read "$" as matching before a final
    // "\n", so "/secret/1%0A" reached an upstream's "^/secret/[0-9]+$"
    // through the catch-all route, past the regex route guarding it.
    if (value < 0x20 || value == 0x7f)
      return absl::InvalidArgumentError("percent-encoded control character in path");
    if (IsUnreserved(value)) {
      out->push_back(static_cast<char>(value));
      continue;
    }
    if (value == '/' || value == '\\') {
      switch (options.escaped_slashes) {
        case EscapedSlashAction::kKeep:
          break;  // Canonicalised below like any other escape.
        case EscapedSlashAction::kReject:
          return absl::InvalidArgumentError("escaped slash in path");
        case EscapedSlashAction::kUnescapeAndForward:
        case EscapedSlashAction::kUnescapeAndRedirect:
          *decoded_slash = true;
          if (value == '/') {
            out->push_back('/');
          } else if (absl::Status s = add_backslash(); !s.ok()) {
            return s;
          }
          continue;
      }
    }
    out->push_back('%');
    out->push_back(kUpperHex[high]);
    out->push_back(kUpperHex[low]);
  }
  return absl::OkStatus();
}

// Between steps 1 and 2, for strip_path_parameters, in place: each
// segment loses what follows its first ';' ("/a;x=1/..;/b" -> "/a/../b").
// After step 1, so that a separator decoded from `%2F` (or a backslash made
// a slash) ends the parameters as a raw '/' does.
void StripPathParameters(std::string* path) {
  size_t write = 0;
  bool in_parameters = false;
  for (size_t read = 0; read < path->size(); ++read) {
    const char c = (*path)[read];
    if (c == '/') in_parameters = false;
    if (c == ';') in_parameters = true;
    if (!in_parameters) (*path)[write++] = c;
  }
  path->resize(write);
}

// Step 2 (RFC 3986 5.2.4) on a path that starts with '/', in place: the
// output is a sequence of "/segment" written over the input, never ahead of
// where the input is read. ".." above the root is dropped. Linear: a ".."
// scans back only over bytes it removes.
void RemoveDotSegments(std::string* path) {
  char* const data = path->data();
  const size_t size = path->size();
  size_t write = 0;
  size_t read = 0;  // data[read] == '/': the start of the next segment.
  while (read < size) {
    const size_t begin = read + 1;
    const char* slash =
        static_cast<const char*>(std::memchr(data + begin, '/', size - begin));
    const size_t end =
        slash != nullptr ? static_cast<size_t>(slash - data) : size;
    const std::string_view segment(data + begin, end - begin);
    const bool last = end == size;
    if (segment == "." || segment == "..") {
      if (segment == ".." && write > 0) {
        // data[0] == '/' whenever write > 0, so the search succeeds.
        write = std::string_view(data, write).rfind('/');
      }
      // "/a/." and "/a/b/.." end in a '/' (RFC 3986 5.2.4 step 2B/2C).
      if (last) data[write++] = '/';
    } else {
      data[write] = '/';
      std::memmove(data + write + 1, data + begin, segment.size());
      write += 1 + segment.size();
    }
    read = end;
  }
  path->resize(write);
  if (path->empty()) path->push_back('/');
}

// Step 3: runs of '/' become one, in place.
void MergeSlashes(std::string* path) {
  size_t write = 0;
  for (size_t read = 0; read < path->size(); ++read) {
    const char c = (*path)[read];
    if (c == '/' && write > 0 && (*path)[write - 1] == '/') continue;
    (*path)[write++] = c;
  }
  path->resize(write);
}

}  // namespace

void AppendLocationPath(std::string_view path, std::string* out) {
  for (char c : path) {
    if (c == '\\') {
      out->append("%5C");
    } else {
      out->push_back(c);
    }
  }
}

bool HasHiddenDotSegment(std::string_view target) {
  const std::string_view path = target.substr(0, target.find('?'));
  // Segments as the most liberal reading splits them: at '/', '\\', "%2F"
  // and "%5C" (any case), each cut at its first ';'.
  size_t start = 0;
  bool in_parameters = false;
  size_t end_of_name = 0;  // where the segment's name ends (its ';' or end)
  auto dot_segment = [&](size_t end) {
    const size_t name_end = in_parameters ? end_of_name : end;
    const std::string_view name = path.substr(start, name_end - start);
    return name == "." || name == "..";
  };
  for (size_t i = 0; i <= path.size(); ++i) {
    size_t separator = 0;  // its length; 0: not a separator
    if (i == path.size()) {
      separator = 1;
    } else if (path[i] == '/' || path[i] == '\\') {
      separator = 1;
    } else if (path[i] == '%' && i + 2 < path.size() &&
               ((path[i + 1] == '2' && (path[i + 2] == 'F' || path[i + 2] == 'f')) ||
                (path[i + 1] == '5' && (path[i + 2] == 'C' || path[i + 2] == 'c')))) {
      separator = 3;
    }
    if (separator == 0) {
      if (path[i] == ';' && !in_parameters) {
        in_parameters = true;
        end_of_name = i;
      }
      continue;
    }
    if (dot_segment(i)) return true;
    in_parameters = false;
    start = i + separator;
    i += separator - 1;
  }
  return false;
}

bool HasDotSegment(std::string_view target) {
  const std::string_view path = target.substr(0, target.find('?'));
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view segment = path.substr(start, end - start);
    if (segment == "." || segment == "..") return true;
    start = end + 1;
  }
  return false;
}

absl::StatusOr<NormalizedPath> NormalizePath(
    std::string_view target, const PathNormalizeOptions& options) {
  NormalizedPath result;
  if (target == "*") {
    result.target = "*";
    return result;
  }
  if (target.empty() || target.front() != '/') {
    return absl::InvalidArgumentError("request target does not start with '/'");
  }
  const size_t query_begin = std::min(target.find('?'), target.size());
  std::string_view path = target.substr(0, query_begin);
  const std::string_view query = target.substr(query_begin);  // "?..." or empty
  std::string unparameterised;
  if (options.strip_raw_path_parameters && path.find(';') != std::string_view::npos) {
    unparameterised.assign(path);
    StripPathParameters(&unparameterised);
    path = unparameterised;
  }
  if (!MayChange(path, options, &result.ambiguous)) {
    if (unparameterised.empty()) {
      result.target.assign(target);
    } else {
      result.target.assign(path);
      result.target.append(query);
      result.changed = true;
    }
    return result;
  }

  result.target.reserve(target.size());
  bool decoded_slash = false;
  if (absl::Status s =
          DecodePath(path, options, &result.target, &decoded_slash);
      !s.ok()) {
    return s;
  }
  if (options.strip_path_parameters) StripPathParameters(&result.target);
  if (options.merge_slashes_first) MergeSlashes(&result.target);
  RemoveDotSegments(&result.target);
  if (options.merge_slashes) MergeSlashes(&result.target);
  // What goes upstream is what an upstream reads: the check is on the
  // result (normalising can make "//" or "..;" meet).
  result.ambiguous = ReadsOtherwise(result.target);
  result.target.append(query);
  result.changed = result.target != target;
  result.redirect =
      decoded_slash &&
      options.escaped_slashes == EscapedSlashAction::kUnescapeAndRedirect;
  if (result.redirect) {
    // The Location writes a kept '\' as %5C again: when that gives back the
    // request's own target (a %5C kept as a backslash), a redirect would
    // send the client to the same URL forever; forward it instead.
    std::string location;
    AppendLocationPath(result.target, &location);
    result.redirect = location != target;
  }
  return result;
}

}  // namespace sluice::http
