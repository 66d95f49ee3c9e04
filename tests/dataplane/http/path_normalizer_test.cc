// Request path normalisation: the bypasses of issue 8, RFC 3986 dot
// segments and percent-encodings, each option, errors, and properties
// (idempotence, output shape) over random inputs.
#include "dataplane/http/path_normalizer.h"

#include <cctype>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace sluice::http {
namespace {

// The normalised target, or "<error: ...>" (which no expected value is).
std::string Normalize(std::string_view target,
                      const PathNormalizeOptions& options = {}) {
  absl::StatusOr<NormalizedPath> result = NormalizePath(target, options);
  if (!result.ok()) return "<error: " + result.status().ToString() + ">";
  return result->target;
}

// Expects `target` to be refused with INVALID_ARGUMENT (a 400).
void ExpectRejected(std::string_view target,
                    const PathNormalizeOptions& options = {}) {
  absl::StatusOr<NormalizedPath> result = NormalizePath(target, options);
  ASSERT_FALSE(result.ok()) << target << " -> " << result->target;
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
      << target;
  EXPECT_FALSE(result.status().message().empty());
}

PathNormalizeOptions Merge() {
  PathNormalizeOptions options;
  options.merge_slashes = true;
  return options;
}

PathNormalizeOptions Escaped(
    EscapedSlashAction action,
    BackslashAction backslashes = BackslashAction::kKeep) {
  PathNormalizeOptions options;
  options.escaped_slashes = action;
  options.backslashes = backslashes;
  return options;
}

PathNormalizeOptions Backslashes(BackslashAction action) {
  PathNormalizeOptions options;
  options.backslashes = action;
  return options;
}

// Every combination of options.
std::vector<PathNormalizeOptions> AllOptions() {
  std::vector<PathNormalizeOptions> all;
  for (bool merge : {false, true}) {
    for (EscapedSlashAction escaped :
         {EscapedSlashAction::kKeep, EscapedSlashAction::kReject,
          EscapedSlashAction::kUnescapeAndForward,
          EscapedSlashAction::kUnescapeAndRedirect}) {
      for (BackslashAction backslash :
           {BackslashAction::kKeep, BackslashAction::kReject,
            BackslashAction::kToSlash}) {
        all.push_back({merge, escaped, backslash});
      }
    }
  }
  return all;
}

TEST(PathNormalizerTest, IssueBypassesReachTheGuardedPath) {
  EXPECT_EQ(Normalize("/a/../admin"), "/admin");
  EXPECT_EQ(Normalize("/./admin"), "/admin");
  EXPECT_EQ(Normalize("/%61dmin"), "/admin");
  EXPECT_EQ(Normalize("//admin", Merge()), "/admin");
  // Without merging, "//admin" stays what it is (and is routed and forwarded
  // as that): an empty segment is a segment in RFC 3986.
  EXPECT_EQ(Normalize("//admin"), "//admin");
  EXPECT_EQ(Normalize("/x/%2e%2e/%61dmin/./users?id=1", Merge()),
            "/admin/users?id=1");
}

TEST(PathNormalizerTest, ChangedSaysWhetherTheTargetDiffers) {
  for (std::string_view target :
       {"/", "/admin", "/a/b/c?x=1", "/.well-known/acme", "/a..b/c.d/..e",
        "/%3A%C3%A9", "/a%2Fb", "//a//", "/a\\b", "/?", "/a?../%2e"}) {
    absl::StatusOr<NormalizedPath> result = NormalizePath(target, {});
    ASSERT_TRUE(result.ok()) << target;
    EXPECT_EQ(result->target, target);
    EXPECT_FALSE(result->changed) << target;
    EXPECT_FALSE(result->redirect) << target;
  }
  absl::StatusOr<NormalizedPath> result = NormalizePath("/a/./b", {});
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->target, "/a/b");
  EXPECT_TRUE(result->changed);
}

TEST(PathNormalizerTest, DotSegmentsAreRemoved) {
  // RFC 3986 5.2.4's own example, and its trailing-slash rules.
  EXPECT_EQ(Normalize("/a/b/c/./../../g"), "/a/g");
  EXPECT_EQ(Normalize("/a/b/.."), "/a/");
  EXPECT_EQ(Normalize("/a/b/../"), "/a/");
  EXPECT_EQ(Normalize("/a/."), "/a/");
  EXPECT_EQ(Normalize("/a/./"), "/a/");
  EXPECT_EQ(Normalize("/."), "/");
  EXPECT_EQ(Normalize("/a/./b/./c"), "/a/b/c");
  // Names that only contain dots are not dot segments.
  EXPECT_EQ(Normalize("/.../a/..b/b../.c"), "/.../a/..b/b../.c");
  // ".." removes one segment, an empty one included.
  EXPECT_EQ(Normalize("/a//../b"), "/a/b");
  EXPECT_EQ(Normalize("/a/..//b"), "//b");
}

TEST(PathNormalizerTest, PercentEncodedDotsAreDotSegments) {
  EXPECT_EQ(Normalize("/a/%2e%2e/admin"), "/admin");
  EXPECT_EQ(Normalize("/a/%2E%2E/admin"), "/admin");
  EXPECT_EQ(Normalize("/a/.%2e/admin"), "/admin");
  EXPECT_EQ(Normalize("/a/%2E./admin"), "/admin");
  EXPECT_EQ(Normalize("/%2e/admin"), "/admin");
  EXPECT_EQ(Normalize("/a/%2e%2e"), "/");
  EXPECT_EQ(Normalize("/a/%2e%2e%2e"), "/a/...");
  // One level of decoding only: "%25" is '%' and stays encoded.
  EXPECT_EQ(Normalize("/a/%252e%252e/admin"), "/a/%252e%252e/admin");
}

TEST(PathNormalizerTest, ParentAboveRootStaysAtRoot) {
  EXPECT_EQ(Normalize("/.."), "/");
  EXPECT_EQ(Normalize("/../"), "/");
  EXPECT_EQ(Normalize("/../../.."), "/");
  EXPECT_EQ(Normalize("/../admin"), "/admin");
  EXPECT_EQ(Normalize("/a/../../b"), "/b");
  EXPECT_EQ(Normalize("/%2e%2e/%2e%2e/etc/passwd"), "/etc/passwd");
}

TEST(PathNormalizerTest, QueryIsKeptByteForByte) {
  EXPECT_EQ(Normalize("/a/../b?x=/../y&z=%2e%2e&w=%7e&v=%zz&n=%00&s=%2f\\"),
            "/b?x=/../y&z=%2e%2e&w=%7e&v=%zz&n=%00&s=%2f\\");
  EXPECT_EQ(Normalize("/%7e?%7e"), "/~?%7e");
  EXPECT_EQ(Normalize("/a?b/../c", Merge()), "/a?b/../c");
  EXPECT_EQ(Normalize("//a?//b", Merge()), "/a?//b");
  EXPECT_EQ(Normalize("/a?b?c#d"), "/a?b?c#d");
  EXPECT_EQ(Normalize("/./?"), "/?");
  EXPECT_EQ(Normalize("/a%2Fb?%2F", Escaped(EscapedSlashAction::kReject)),
            "<error: INVALID_ARGUMENT: escaped slash in path>");
  EXPECT_EQ(Normalize("/a?%2F", Escaped(EscapedSlashAction::kReject)),
            "/a?%2F");
}

TEST(PathNormalizerTest, UnreservedAreDecodedOthersGetUpperCaseHex) {
  EXPECT_EQ(Normalize("/%41%5a%30%39%2d%2E%5f%7E%61%7a"), "/AZ09-._~az");
  EXPECT_EQ(Normalize("/a%3ab"), "/a%3Ab");
  EXPECT_EQ(Normalize("/%c3%a9"), "/%C3%A9");
  EXPECT_EQ(Normalize("/%20%25%3f%23%40"), "/%20%25%3F%23%40");
  EXPECT_EQ(Normalize("/%ff"), "/%FF");
}

TEST(PathNormalizerTest, InvalidPercentEncodingsAreRejected) {
  for (std::string_view target : {"/%zz", "/%4", "/%", "/a%", "/a%g0", "/a%0g",
                                  "/%%41", "/%-1", "/%+1", "/% 1", "/%4?x=1"}) {
    ExpectRejected(target);
  }
  for (const PathNormalizeOptions& options : AllOptions())
    ExpectRejected("/%zz", options);
}

TEST(PathNormalizerTest, EncodedNulIsRejected) {
  ExpectRejected("/%00");
  ExpectRejected("/a%00b");
  ExpectRejected("/a/%000");
  // Other control characters too: "$" matches before a final "\n" in PCRE.
  for (const char* control : {"/secret/1%0A", "/a%0d", "/a%09b", "/a%1F", "/a%7f"}) {
    ExpectRejected(control);
  }
  EXPECT_EQ(Normalize("/a%20b?q=%0A"), "/a%20b?q=%0A");  // a space, and the query
  for (const PathNormalizeOptions& options : AllOptions())
    ExpectRejected("/%00", options);
}

TEST(PathNormalizerTest, MergeSlashesOnAndOff) {
  EXPECT_EQ(Normalize("//a///b//"), "//a///b//");
  EXPECT_EQ(Normalize("//a///b//", Merge()), "/a/b/");
  EXPECT_EQ(Normalize("///", Merge()), "/");
  EXPECT_EQ(Normalize("/a//b", Merge()), "/a/b");
  // Dot segments first, then merging (Envoy's order).
  EXPECT_EQ(Normalize("/a//../b", Merge()), "/a/b");
  EXPECT_EQ(Normalize("/a/..//b", Merge()), "/b");
  EXPECT_EQ(Normalize("/a/.//./b", Merge()), "/a/b");
}

TEST(PathNormalizerTest, EscapedSlashesKept) {
  const PathNormalizeOptions keep = Escaped(EscapedSlashAction::kKeep);
  EXPECT_EQ(Normalize("/a%2fb", keep), "/a%2Fb");
  EXPECT_EQ(Normalize("/a%5cb", keep), "/a%5Cb");
  // An encoded slash is not a separator: no dot segment here.
  EXPECT_EQ(Normalize("/a%2F..%2Fadmin", keep), "/a%2F..%2Fadmin");
  EXPECT_EQ(Normalize("/a%2F%2Fb", Merge()), "/a%2F%2Fb");
}

// `ambiguous`: what an upstream may read as another path than the gateway
// does, whichever way the path was spelled (fast path or not).
TEST(PathNormalizerTest, AmbiguousNamesWhatAnUpstreamMayReadOtherwise) {
  auto ambiguous = [](std::string_view target, const PathNormalizeOptions& options = {}) {
    absl::StatusOr<NormalizedPath> result = NormalizePath(target, options);
    EXPECT_TRUE(result.ok()) << target;
    return result.ok() && result->ambiguous;
  };
  EXPECT_FALSE(ambiguous("/a/b?x=//y%2F"));  // the query is not the path
  EXPECT_FALSE(ambiguous("/a/./b/%61"));
  EXPECT_TRUE(ambiguous("//admin"));
  EXPECT_TRUE(ambiguous("/x//y"));
  EXPECT_TRUE(ambiguous("/x/.//y"));            // slow path, "//" left
  EXPECT_FALSE(ambiguous("//admin", Merge()));
  EXPECT_TRUE(ambiguous("/%2Fadmin"));
  EXPECT_TRUE(ambiguous("/x/..%2fadmin"));
  EXPECT_TRUE(ambiguous("/a%5Cb"));
  EXPECT_TRUE(ambiguous("/\\admin"));             // fast path, '\\' kept
  EXPECT_FALSE(ambiguous("/a\\b", Backslashes(BackslashAction::kToSlash)));
  EXPECT_TRUE(ambiguous("/\\admin", Backslashes(BackslashAction::kToSlash)));  // "//admin"
  EXPECT_FALSE(ambiguous("/a%2Fb", Escaped(EscapedSlashAction::kUnescapeAndForward)));
  // %5C decoded to a kept '\\': an IIS upstream reads it as '/'.
  EXPECT_TRUE(ambiguous("/a%5Cb", Escaped(EscapedSlashAction::kUnescapeAndForward)));
  EXPECT_FALSE(ambiguous("/a%5Cb", Escaped(EscapedSlashAction::kUnescapeAndForward,
                                          BackslashAction::kToSlash)));
  // Path parameters: Tomcat reads "/x/..;/admin" as "/admin".
  EXPECT_TRUE(ambiguous("/x/..;/admin"));
  EXPECT_TRUE(ambiguous("/a;jsessionid=1"));
  EXPECT_EQ(Normalize("/x/..;/admin", kAmbiguousReadings[0]), "/admin");
  EXPECT_EQ(Normalize("/x;p=1/y;q", kAmbiguousReadings[0]), "/x/y");
  EXPECT_EQ(Normalize("/x/..;%2F..;%5Cadmin;v", kAmbiguousReadings[0]), "/admin");
  EXPECT_EQ(Normalize("/x;a%3Bb/y", kAmbiguousReadings[0]), "/x/y");
  // Tomcat drops a parameter up to the next '/' as sent, before decoding.
  EXPECT_EQ(Normalize("/api;%2Fx/admin", kAmbiguousReadings[2]), "/api/admin");
  EXPECT_EQ(Normalize("/api;%2Fx/admin", kAmbiguousReadings[0]), "/api/x/admin");
  EXPECT_EQ(Normalize("/a;b", kAmbiguousReadings[2]), "/a");
  // Slashes merged before dot segments (nginx, Tomcat) or after (Envoy).
  EXPECT_EQ(Normalize("/x//../admin", kAmbiguousReadings[0]), "/admin");
  EXPECT_EQ(Normalize("/x//../admin", kAmbiguousReadings[1]), "/x/admin");
  // What normalising makes meet counts: "/x//..;/admin" merged is
  // "/x/..;/admin", Tomcat's "/admin".
  PathNormalizeOptions merge_reject = Merge();
  merge_reject.escaped_slashes = EscapedSlashAction::kReject;
  EXPECT_EQ(Normalize("/x//..;/admin", merge_reject), "/x/..;/admin");
  EXPECT_TRUE(ambiguous("/x//..;/admin", merge_reject));
  // The liberal reading itself is never ambiguous.
  EXPECT_FALSE(ambiguous("/x/..%2F\\/%5C/a;b", kAmbiguousReadings[0]));
  EXPECT_EQ(Normalize("/x/..%2F\\/%5C/a", kAmbiguousReadings[0]), "/a");
}

// Dot segments only some upstreams see: split at '/', '\\', %2F, %5C, each
// cut at its ';'.
TEST(PathNormalizerTest, HiddenDotSegments) {
  for (const char* hidden : {"/x/..;y", "/x/..;/admin", "/x/..%2Fy", "/x/..%2fy", "/x\\..",
                             "/x%5C..%5Cy", "//admin/..;x", "/y/..;%2Fx/admin", "/x/.;p/y",
                             "/..;", "/a/..?q"}) {
    EXPECT_TRUE(HasHiddenDotSegment(hidden)) << hidden;
  }
  for (const char* plain : {"/", "/a/b", "/x/..y", "/x/y..", "/x/...;/y", "/a;..", "/a;x/..b",
                            "/files/a%2Fb", "/a%2E%2E", "/q?/../x", "/.well-known/x"}) {
    EXPECT_FALSE(HasHiddenDotSegment(plain)) << plain;
  }
}

TEST(PathNormalizerTest, EscapedSlashesRejected) {
  const PathNormalizeOptions reject = Escaped(EscapedSlashAction::kReject);
  for (std::string_view target :
       {"/a%2Fb", "/a%2fb", "/a%5Cb", "/a%5cb", "/%2F"}) {
    ExpectRejected(target, reject);
  }
  EXPECT_EQ(Normalize("/a/b%2e%3A", reject), "/a/b.%3A");
  // A raw backslash is not an escaped one.
  EXPECT_EQ(Normalize("/a\\b", reject), "/a\\b");
}

TEST(PathNormalizerTest, EscapedSlashesUnescapedAndForwarded) {
  const PathNormalizeOptions forward =
      Escaped(EscapedSlashAction::kUnescapeAndForward);
  EXPECT_EQ(Normalize("/a%2Fb", forward), "/a/b");
  EXPECT_EQ(Normalize("/a%2fb", forward), "/a/b");
  // Decoded before dot segments are removed.
  EXPECT_EQ(Normalize("/a%2F..%2Fadmin", forward), "/admin");
  EXPECT_EQ(Normalize("/a%2F%2E%2E%2Fadmin", forward), "/admin");
  PathNormalizeOptions forward_merge = forward;
  forward_merge.merge_slashes = true;
  EXPECT_EQ(Normalize("/x%2F%2Fy", forward_merge), "/x/y");
  // %5C becomes a raw backslash, which follows `backslashes`.
  EXPECT_EQ(Normalize("/a%5Cb", forward), "/a\\b");
  EXPECT_EQ(Normalize("/a%5C..%5Cadmin", forward), "/a\\..\\admin");
  EXPECT_EQ(Normalize("/a%5C..%5Cadmin",
                      Escaped(EscapedSlashAction::kUnescapeAndForward,
                              BackslashAction::kToSlash)),
            "/admin");
  ExpectRejected("/a%5Cb", Escaped(EscapedSlashAction::kUnescapeAndForward,
                                   BackslashAction::kReject));
  absl::StatusOr<NormalizedPath> result = NormalizePath("/a%2Fb", forward);
  ASSERT_TRUE(result.ok());
  EXPECT_TRUE(result->changed);
  EXPECT_FALSE(result->redirect);
}

TEST(PathNormalizerTest, EscapedSlashesUnescapedAndRedirected) {
  const PathNormalizeOptions redirect =
      Escaped(EscapedSlashAction::kUnescapeAndRedirect);
  absl::StatusOr<NormalizedPath> result =
      NormalizePath("/a%2fb/../c?q=%2F", redirect);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->target, "/a/c?q=%2F");
  EXPECT_TRUE(result->changed);
  EXPECT_TRUE(result->redirect);

  // A %5C kept as a backslash is written %5C again in the Location: the
  // same URL is no redirect (before: 307 to itself, forever); one that
  // differs otherwise (the hex's case, a dot segment) redirects once.
  result = NormalizePath("/a%5Cb", redirect);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->target, "/a\\b");
  EXPECT_FALSE(result->redirect);
  for (std::string_view target : {"/a%5cb", "/a%5Cb/x/../y"}) {
    result = NormalizePath(target, redirect);
    ASSERT_TRUE(result.ok()) << target;
    EXPECT_TRUE(result->redirect) << target;
  }
  result = NormalizePath("/a%5Cb", Escaped(EscapedSlashAction::kUnescapeAndRedirect,
                                           BackslashAction::kToSlash));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->target, "/a/b");
  EXPECT_TRUE(result->redirect);

  // Other changes, and escaped slashes only in the query, are no redirect.
  for (std::string_view target : {"/a/./%61", "/a?x=%2F", "/a/b"}) {
    result = NormalizePath(target, redirect);
    ASSERT_TRUE(result.ok()) << target;
    EXPECT_FALSE(result->redirect) << target;
  }
}

TEST(PathNormalizerTest, RawBackslashActions) {
  EXPECT_EQ(Normalize("/a\\..\\admin"), "/a\\..\\admin");
  EXPECT_EQ(Normalize("/a\\..\\admin", Backslashes(BackslashAction::kKeep)),
            "/a\\..\\admin");
  ExpectRejected("/a\\b", Backslashes(BackslashAction::kReject));
  EXPECT_EQ(Normalize("/a\\..\\admin", Backslashes(BackslashAction::kToSlash)),
            "/admin");
  EXPECT_EQ(Normalize("/\\\\admin", Backslashes(BackslashAction::kToSlash)),
            "///admin");
  PathNormalizeOptions to_slash_merge = Backslashes(BackslashAction::kToSlash);
  to_slash_merge.merge_slashes = true;
  EXPECT_EQ(Normalize("/\\\\admin", to_slash_merge), "/admin");
  // In the query a backslash is just a byte.
  EXPECT_EQ(Normalize("/a?\\", Backslashes(BackslashAction::kReject)), "/a?\\");
}

TEST(PathNormalizerTest, AsteriskAndNonPathTargets) {
  absl::StatusOr<NormalizedPath> result = NormalizePath("*", Merge());
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->target, "*");
  EXPECT_FALSE(result->changed);
  for (std::string_view target :
       {"", "*x", "**", "a/b", "?x", "http://h/a", "%2Fa", ".."}) {
    ExpectRejected(target);
  }
}

TEST(PathNormalizerTest, FragmentInPathIsRejected) {
  ExpectRejected("/a#b");
  ExpectRejected("/#");
  ExpectRejected("/a/..#/admin");
  // '#' in the query is the query's business.
  EXPECT_EQ(Normalize("/a?b#c"), "/a?b#c");
}

TEST(PathNormalizerTest, NormalisingTwiceChangesNothing) {
  const std::vector<std::string_view> targets = {"/a/../admin",
                                                 "//admin",
                                                 "/./admin",
                                                 "/%61dmin",
                                                 "/a%2f..%2Fb%5c..%5cc",
                                                 "/a\\..\\b",
                                                 "/%3a/%7E/%2e%2E/./x//y/",
                                                 "/..//..//a",
                                                 "/a/b/..?q=/../%2e",
                                                 "*",
                                                 "/%252e%252E/x",
                                                 "/.%2e./..%2e/"};
  for (const PathNormalizeOptions& options : AllOptions()) {
    for (std::string_view target : targets) {
      absl::StatusOr<NormalizedPath> once = NormalizePath(target, options);
      if (!once.ok()) continue;
      absl::StatusOr<NormalizedPath> twice =
          NormalizePath(once->target, options);
      ASSERT_TRUE(twice.ok()) << target << " -> " << once->target;
      EXPECT_EQ(twice->target, once->target) << target;
      EXPECT_FALSE(twice->changed) << target;
      EXPECT_FALSE(twice->redirect) << target;
    }
  }
}

TEST(PathNormalizerTest, LargeHostileInputs) {
  auto repeat = [](std::string_view piece, size_t times) {
    std::string out;
    out.reserve(piece.size() * times);
    for (size_t i = 0; i < times; ++i) out.append(piece);
    return out;
  };
  // Compared without printing megabytes on failure.
  auto expect_normalized = [](const std::string& target,
                              const std::string& expected,
                              const PathNormalizeOptions& options = {}) {
    const std::string got = Normalize(target, options);
    EXPECT_TRUE(got == expected)
        << "target of " << target.size() << " bytes: got " << got.substr(0, 80)
        << "... (" << got.size() << " bytes), expected "
        << expected.substr(0, 80) << "... (" << expected.size() << " bytes)";
  };
  // 64 KiB of "/../".
  expect_normalized(repeat("/../", 16384), "/");
  expect_normalized(repeat("/../", 16384), "/", Merge());
  // A deep path, then as many ".." (each scans back over one segment only).
  expect_normalized(repeat("/abcdefgh", 65536) + repeat("/..", 65535),
                    "/abcdefgh/");
  expect_normalized("/" + repeat("%2e%2e/", 65536) + "x", "/x");
  expect_normalized(repeat("/", 1 << 20), "/", Merge());
  expect_normalized(repeat("/.", 1 << 19), "/");
  const std::string escapes = "/" + repeat("%2f%41", 65536);
  expect_normalized(escapes, "/" + repeat("%2FA", 65536));
  expect_normalized(escapes, "/" + repeat("/A", 65536),
                    Escaped(EscapedSlashAction::kUnescapeAndForward));
  PathNormalizeOptions forward_merge =
      Escaped(EscapedSlashAction::kUnescapeAndForward);
  forward_merge.merge_slashes = true;
  expect_normalized(escapes, repeat("/A", 65536), forward_merge);
}

// A libFuzzer-like property check with a fixed seed: random targets built
// from the bytes and pieces that matter never crash the normaliser, and every
// accepted result is "*" or a path with no dot segment, no encoding that
// should have been decoded or upper-cased, and that normalises to itself.
TEST(PathNormalizerTest, RandomTargetsKeepTheProperties) {
  const std::vector<std::string> pieces = {
      "/",   "/",   ".",   "..",   "%",    "%2e", "%2E", "%2f", "%2F",
      "%5c", "%5C", "%00", "%41",  "%7e",  "%3a", "%25", "\\",  "?",
      "#",   "a",   "b",   "2",    "e",    "F",   "c",   "0",   "/../",
      "/./", "//",  "*",   "\x01", "\xff", " "};
  std::mt19937 rng(20240508);
  std::uniform_int_distribution<size_t> piece_index(0, pieces.size() - 1);
  std::uniform_int_distribution<int> length(0, 24);
  const std::vector<PathNormalizeOptions> all_options = AllOptions();
  int accepted = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string target = round % 8 == 0 ? "" : "/";
    for (int n = length(rng); n > 0; --n) target += pieces[piece_index(rng)];
    const PathNormalizeOptions& options =
        all_options[round % all_options.size()];
    absl::StatusOr<NormalizedPath> result = NormalizePath(target, options);
    if (!result.ok()) {
      EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    ++accepted;
    const std::string& out = result->target;
    ASSERT_FALSE(out.empty()) << target;
    if (out == "*") {
      EXPECT_EQ(target, "*");
      continue;
    }
    ASSERT_EQ(out[0], '/') << target;
    EXPECT_EQ(result->changed, out != target) << target;
    const size_t query = target.find('?');
    if (query != std::string::npos) {
      EXPECT_EQ(out.substr(out.find('?')), target.substr(query)) << target;
    }
    const std::string path = out.substr(0, out.find('?'));
    const std::string slashed = path + "/";
    EXPECT_EQ(slashed.find("/./"), std::string::npos)
        << target << " -> " << out;
    EXPECT_EQ(slashed.find("/../"), std::string::npos)
        << target << " -> " << out;
    if (options.merge_slashes)
      EXPECT_EQ(path.find("//"), std::string::npos) << target;
    for (size_t i = path.find('%'); i != std::string::npos;
         i = path.find('%', i + 1)) {
      ASSERT_LE(i + 2, path.size() - 1) << target << " -> " << out;
      const std::string hex = path.substr(i + 1, 2);
      EXPECT_EQ(hex.find_first_not_of("0123456789ABCDEF"), std::string::npos)
          << out;
      const int value = std::stoi(hex, nullptr, 16);
      EXPECT_NE(value, 0) << out;
      EXPECT_FALSE(std::isalnum(value) || value == '-' || value == '.' ||
                   value == '_' || value == '~')
          << out;
    }
    absl::StatusOr<NormalizedPath> again = NormalizePath(out, options);
    ASSERT_TRUE(again.ok()) << target << " -> " << out;
    EXPECT_EQ(again->target, out) << target;
    EXPECT_FALSE(again->changed) << target;
    EXPECT_FALSE(again->redirect) << target;
  }
  // The generator must reach the interesting paths, not only errors.
  EXPECT_GT(accepted, 5000);
}

TEST(PathNormalizerTest, DotSegmentsAreWholeSegmentsOfThePathOnly) {
  for (const char* yes : {"/..", "/../x", "/a/./b", "/.", "/a/..?q", "/a/.?x=/../"}) {
    EXPECT_TRUE(HasDotSegment(yes)) << yes;
  }
  for (const char* no : {"/", "/..x", "/x..", "/.a/b.", "/a?/../", "/a/...", ""}) {
    EXPECT_FALSE(HasDotSegment(no)) << no;
  }
}

}  // namespace
}  // namespace sluice::http
