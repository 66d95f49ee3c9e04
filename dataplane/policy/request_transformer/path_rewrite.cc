#include "dataplane/policy/request_transformer/path_rewrite.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "re2/re2.h"

namespace sluice::policy::request_transformer {
namespace {

re2::StringPiece Piece(std::string_view s) {
  return re2::StringPiece(s.data(), s.size());
}

RE2::Options Options() {
  RE2::Options options;
  options.set_log_errors(false);
  return options;
}

// Characters a path may hold as they are (RFC 3986 pchar and '/'), plus
// '\' for the group references and '%' for percent-encodings.
bool IsRewriteChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("-._~!$&'()*+,;=:@/%\\").find(c) !=
             std::string_view::npos;
}

bool IsHex(char c) {
  return absl::ascii_isxdigit(static_cast<unsigned char>(c));
}

}  // namespace

PathRewrite::~PathRewrite() = default;

int PathRewrite::Check(
    const std::string& regex, const std::string& rewrite,
    const std::string& prefix,
    std::vector<std::pair<std::string, std::string>>* errors) {
  const std::string regex_field = prefix + ".regex";
  const std::string rewrite_field = prefix + ".rewrite";
  if (regex.empty()) {
    if (!rewrite.empty())
      errors->emplace_back(regex_field, "is required with rewrite");
    return -1;
  }
  if (regex.size() > kMaxRegexBytes) {
    errors->emplace_back(
        regex_field,
        absl::StrCat("is ", regex.size(), " bytes; at most ", kMaxRegexBytes));
    return kMaxCaptures;
  }
  RE2 re(Piece(regex), Options());
  if (!re.ok()) {
    errors->emplace_back(regex_field, absl::StrCat("RE2 error: ", re.error()));
    return kMaxCaptures;
  }
  const int captures = std::min(re.NumberOfCapturingGroups(), kMaxCaptures);
  if (rewrite.empty()) {
    errors->emplace_back(rewrite_field, "is required with regex");
  } else if (rewrite.size() > kMaxRewriteBytes) {
    errors->emplace_back(rewrite_field,
                         absl::StrCat("is ", rewrite.size(), " bytes; at most ",
                                      kMaxRewriteBytes));
  } else if (rewrite[0] != '/') {
    errors->emplace_back(rewrite_field, "must start with '/'");
  } else {
    std::string why;
    for (size_t i = 0; i < rewrite.size() && why.empty(); ++i) {
      char c = rewrite[i];
      if (c == '?') {
        why =
            "must not contain '?' (the query is kept as it is; change it with "
            "query edits)";
      } else if (!IsRewriteChar(c)) {
        why = absl::StrCat("byte ", i,
                           " is not a path character (percent-encode it)");
      } else if (c == '\\' && !(i + 1 < rewrite.size() &&
                                absl::ascii_isdigit(static_cast<unsigned char>(
                                    rewrite[i + 1])))) {
        why = absl::StrCat("'\\' at byte ", i,
                           " is not followed by a group number (\\0..\\9)");
      } else if (c == '%' &&
                 !(i + 2 < rewrite.size() && IsHex(rewrite[i + 1]) &&
                   IsHex(rewrite[i + 2]))) {
        why = absl::StrCat("'%' at byte ", i,
                           " starts no percent-encoding (write %25)");
      }
    }
    if (why.empty() && !re.CheckRewriteString(Piece(rewrite), &why)) {
      why = absl::StrCat("RE2 error: ", why);
    }
    if (!why.empty()) errors->emplace_back(rewrite_field, why);
  }
  return captures;
}

absl::StatusOr<std::unique_ptr<PathRewrite>> PathRewrite::Compile(
    const std::string& regex, const std::string& rewrite) {
  std::unique_ptr<PathRewrite> out(new PathRewrite());
  out->re_ = std::make_unique<RE2>(Piece(regex), Options());
  if (!out->re_->ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("path.regex: RE2 error: ", out->re_->error()));
  }
  std::string why;
  if (!out->re_->CheckRewriteString(Piece(rewrite), &why)) {
    return absl::InvalidArgumentError(
        absl::StrCat("path.rewrite: RE2 error: ", why));
  }
  out->rewrite_ = rewrite;
  out->captures_ = std::min(out->re_->NumberOfCapturingGroups(), kMaxCaptures);
  return out;
}

bool PathRewrite::Apply(std::string_view path, std::string* new_path,
                        std::vector<std::string>* groups) const {
  const int n = 1 + re_->NumberOfCapturingGroups();
  std::vector<re2::StringPiece> match(n);
  if (!re_->Match(Piece(path), 0, path.size(), RE2::ANCHOR_BOTH, match.data(),
                  n))
    return false;
  new_path->clear();
  if (!re_->Rewrite(new_path, Piece(rewrite_), match.data(), n)) return false;
  groups->clear();
  for (int i = 0; i <= captures_; ++i) {
    groups->emplace_back(match[i].data() == nullptr
                             ? std::string()
                             : std::string(match[i].data(), match[i].size()));
  }
  return true;
}

}  // namespace sluice::policy::request_transformer
