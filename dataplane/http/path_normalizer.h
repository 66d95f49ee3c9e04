// Request path normalisation (RFC 3986 6.2.2 and 5.2.4), done once per
// request before routing, so that the path a route (and its policies) match
// is byte for byte the path the upstream receives. Without it `/a/../admin`,
// `/./admin` and `/%61dmin` all miss a route guarding `/admin` while an
// upstream resolves each of them to `/admin`. What the listener's options
// keep and some upstreams read as separators (`//`, `%2F`, `%5C`, '\') is
// flagged (NormalizedPath::ambiguous) for the caller to route again as
// kAmbiguousReadings read it.
//
// What NormalizePath does to the path (the part of the target before the
// first '?'; the query, '?' included, is kept byte for byte):
//   1. Percent-decoding. `%XX` of an unreserved character (ALPHA DIGIT - . _ ~)
//      becomes the character; any other `%XX` stays encoded with its hex
//      digits upper-cased (`%3a` -> `%3A`). `%` not followed by two hex digits
//      and `%00` are errors. `%2F` and `%5C` follow `escaped_slashes`; a raw
//      `\` (or one decoded from `%5C`) follows `backslashes`. Decoding is one
//      level only: `%252e` stays `%252e`.
//   2. Dot segments (RFC 3986 5.2.4) are removed from the decoded path, so
//      `%2e%2e` counts as `..`. `..` above the root stays at the root
//      (`/../a` -> `/a`), as Envoy's `normalize_path` does. A trailing `.` or
//      `..` leaves a trailing '/' (`/a/b/..` -> `/a/`).
//   3. With merge_slashes, runs of '/' become one ("//a///b" -> "/a/b"),
//      after dot segments are removed (Envoy's order: `/a//../b` -> `/a/b`).
// Other bytes are left as they are; the request parsers decide which bytes a
// target may hold.
//
// The target must be origin-form (start with '/'), or be exactly "*"
// (OPTIONS), which is returned unchanged. A '#' in the path is an error: a
// request target has no fragment (RFC 9112 3.2), and upstreams disagree on
// what to do with one.
//
// Errors are INVALID_ARGUMENT with a short reason, for a 400 answer.
//
// Pure function: no I/O, no state; thread-safe. Linear in the target's size
// (also for hostile inputs such as thousands of `/..`); when nothing needs to
// change, the only work beyond one scan is copying the target.
#ifndef SLUICE_DATAPLANE_HTTP_PATH_NORMALIZER_H_
#define SLUICE_DATAPLANE_HTTP_PATH_NORMALIZER_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace sluice::http {

// What to do with `%2F` ('/') and `%5C` ('\') in a path (any case of hex).
// Envoy's `path_with_escaped_slashes_action`.
enum class EscapedSlashAction {
  // Stay encoded (as `%2F`, `%5C`): they are not path separators for routing
  // nor for dot segments. An upstream that decodes them before resolving its
  // path may see a different path than the route did.
  kKeep,
  // The request is an error (400).
  kReject,
  // Decoded before dot segments are removed: `%2F` becomes '/', `%5C` a raw
  // '\' (which then follows BackslashAction). The normalised path is routed
  // and forwarded.
  kUnescapeAndForward,
  // As kUnescapeAndForward, and when the path held an escaped slash the
  // result says so (NormalizedPath::redirect): the caller answers with a
  // redirect to the normalised target instead of forwarding.
  kUnescapeAndRedirect,
};

// What to do with a raw '\' in a path (some servers, IIS among them, treat
// it as '/').
enum class BackslashAction {
  kKeep,     // Left as it is; not a separator for dot segments.
  kReject,   // The request is an error (400).
  kToSlash,  // Becomes '/' before dot segments are removed.
};

struct PathNormalizeOptions {
  bool merge_slashes = false;
  EscapedSlashAction escaped_slashes = EscapedSlashAction::kKeep;
  BackslashAction backslashes = BackslashAction::kKeep;
  // Path parameters (RFC 3986 3.3: from a raw ';' to the segment's end) are
  // dropped before dot segments are removed, as Tomcat and Jetty read a
  // path ("/x/..;/admin" is their "/admin"). Only the readings of
  // kAmbiguousReadings set it.
  bool strip_path_parameters = false;
  // Runs of '/' become one before dot segments are removed too, as nginx
  // and Tomcat do ("/x//../admin" is their "/admin", Envoy's "/x/admin").
  // Only the readings of kAmbiguousReadings set it.
  bool merge_slashes_first = false;
  // Path parameters are dropped from the path as sent, before anything is
  // decoded, each up to the next '/' as sent (Tomcat's order: in
  // "/api;%2Fx/admin" the parameter takes the "%2Fx" with it, "/api/admin").
  // Only the readings of kAmbiguousReadings set it.
  bool strip_raw_path_parameters = false;
};

struct NormalizedPath {
  // The normalised path followed by the original "?query" (if any).
  std::string target;
  // `target` differs from the input.
  bool changed = false;
  // kUnescapeAndRedirect decoded at least one escaped slash: answer with a
  // redirect to `target` (307 keeps the method and body) rather than forward.
  bool redirect = false;
  // `target`'s path holds what an upstream may read as another path than
  // the gateway does: a `%2F` or `%5C` kept encoded, a '\\', "//" or a ';'
  // (nginx merges slashes and decodes `%2F` before resolving dot segments,
  // IIS reads '\\' as '/', Tomcat drops ";parameters"). The caller checks
  // that `target` read each way of kAmbiguousReadings routes the same
  // (ProxyStream refuses it otherwise).
  bool ambiguous = false;
};

// The ways liberal upstreams read a path: escaped slashes decoded,
// backslashes as slashes, path parameters dropped (after decoding, or as
// Tomcat does before it), runs of slashes merged, before dot segments are
// removed (nginx, Tomcat) or after (Envoy).
inline constexpr PathNormalizeOptions kAmbiguousReadings[] = {
    {true, EscapedSlashAction::kUnescapeAndForward, BackslashAction::kToSlash, true, true, false},
    {true, EscapedSlashAction::kUnescapeAndForward, BackslashAction::kToSlash, true, false, false},
    {true, EscapedSlashAction::kUnescapeAndForward, BackslashAction::kToSlash, false, true, true},
};

// Whether the path of `target` (up to '?') has a "." or ".." segment as
// some upstream splits it: at '/', '\\', "%2F" or "%5C", with a segment's
// ";parameters" dropped ("/x/..;y", "/x/..%2F", "/x\\..", "/y/..;%2Fz" for
// Tomcat, which drops parameters before it decodes). A normalised path has
// no plain dot segment left, so such a one is one the gateway did not see:
// it would resolve, upstream, past the route the gateway chose.
bool HasHiddenDotSegment(std::string_view target);

// Whether the path of `target` (up to '?') has a "." or ".." segment. A
// normalised path has none; a prefix_rewrite can make one ("/api../x" with
// prefix /api rewritten to / is "/../x").
bool HasDotSegment(std::string_view target);

// Appends `path` (and query) to a Location `out`, a backslash as %5C: it is
// no URI character, and browsers read a raw one as '/' ("/\\evil.example"
// as another host).
void AppendLocationPath(std::string_view path, std::string* out);

// Normalises `target` (origin-form path and query, or "*") as described
// above. INVALID_ARGUMENT for a target that must be answered 400.
absl::StatusOr<NormalizedPath> NormalizePath(
    std::string_view target, const PathNormalizeOptions& options);

}  // namespace sluice::http

#endif  // SLUICE_DATAPLANE_HTTP_PATH_NORMALIZER_H_
