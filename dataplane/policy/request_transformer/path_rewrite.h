// request-transformer's path rewrite: an RE2 matched against the whole
// request path and a rewrite with \0..\9 for its groups.
//
// Checked in every binary that validates config; compiled once per config
// version. Immutable once compiled; thread-safe.
#ifndef SLUICE_DATAPLANE_POLICY_REQUEST_TRANSFORMER_PATH_REWRITE_H_
#define SLUICE_DATAPLANE_POLICY_REQUEST_TRANSFORMER_PATH_REWRITE_H_

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace re2 {
class RE2;
}  // namespace re2

namespace sluice::policy::request_transformer {

inline constexpr size_t kMaxRegexBytes = 4096;
inline constexpr size_t kMaxRewriteBytes = 4096;
inline constexpr int kMaxCaptures = 9;  // \1..\9 and %CAPTURE(1)%..%CAPTURE(9)%

class PathRewrite {
 public:
  ~PathRewrite();

  // Appends (field, message) pairs for `prefix`.regex and `prefix`.rewrite;
  // returns the regex's number of groups (at most kMaxCaptures), or -1 when
  // there is no regex, or kMaxCaptures when it does not compile (the error
  // is reported once, here).
  static int Check(const std::string& regex, const std::string& rewrite,
                   const std::string& prefix,
                   std::vector<std::pair<std::string, std::string>>* errors);
  // `regex` and `rewrite` passed Check.
  static absl::StatusOr<std::unique_ptr<PathRewrite>> Compile(
      const std::string& regex, const std::string& rewrite);

  // Groups usable in the rewrite and in %CAPTURE(n)% (at most kMaxCaptures).
  int captures() const { return captures_; }
  // When the regex matches all of `path`: true, `*new_path` the rewrite and
  // `*groups` \0 .. \captures() (empty for a group that took no part).
  bool Apply(std::string_view path, std::string* new_path,
             std::vector<std::string>* groups) const;

 private:
  PathRewrite() = default;
  std::unique_ptr<re2::RE2> re_;
  std::string rewrite_;
  int captures_ = 0;
};

}  // namespace sluice::policy::request_transformer

#endif  // SLUICE_DATAPLANE_POLICY_REQUEST_TRANSFORMER_PATH_REWRITE_H_
