// The `cors` policy's config rules, registered for every binary that
// validates config.
#include <memory>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "api/regex_limit.h"
#include "re2/re2.h"
#include "dataplane/policy/cors/cors_config.pb.h"
#include "dataplane/policy/cors/origin_pattern.h"

namespace sluice::policy::cors {
namespace {

constexpr int kMaxOrigins = 64;
constexpr int kMaxMethods = 32;
constexpr size_t kMaxMethodLength = 32;
constexpr int kMaxHeaderNames = 64;
constexpr size_t kMaxHeaderNameLength = 128;
// Firefox's cap; Chromium caps at 7200.
constexpr uint32_t kMaxAgeSeconds = 86400;

bool IsToken(const std::string& s, size_t max_length) {
  if (s.empty() || s.size() > max_length) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) &&
        std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

using Errors = std::vector<api::PolicyConfigError>;

void CheckOrigins(const v1::CorsConfig& config, Errors* errors) {
  if (config.origins_size() < 1 || config.origins_size() > kMaxOrigins) {
    errors->push_back({"origins", absl::StrCat("needs 1..", kMaxOrigins, " entries, got ",
                                               config.origins_size())});
  }
  for (int i = 0; i < config.origins_size() && i < kMaxOrigins; ++i) {
    std::string field = absl::StrCat("origins[", i, "]");
    absl::StatusOr<OriginPattern> pattern = ParseOriginPattern(config.origins(i));
    if (!pattern.ok()) {
      errors->push_back({field, std::string(pattern.status().message())});
    } else if (pattern->kind == OriginPattern::Kind::kAny) {
      if (config.origins_size() > 1) {
        errors->push_back({field, "'*' allows every origin and must be the only entry"});
      } else if (config.credentials()) {
        errors->push_back({"credentials",
                           "cannot be true with origins ['*']: browsers refuse credentials for "
                           "a wildcard origin; list the origins instead"});
      }
    }
  }
}

// `what`: "method" or "header name".
void CheckTokens(const char* list, const google::protobuf::RepeatedPtrField<std::string>& tokens,
                 int max_count, size_t max_length, const char* what, bool credentials,
                 Errors* errors) {
  if (tokens.size() > max_count) {
    errors->push_back({list, absl::StrCat("at most ", max_count, " entries, got ", tokens.size())});
    return;
  }
  for (int i = 0; i < tokens.size(); ++i) {
    std::string field = absl::StrCat(list, "[", i, "]");
    if (!IsToken(tokens[i], max_length)) {
      errors->push_back(
          {field, absl::StrCat("'", tokens[i], "' is not a ", what, " (an RFC 9110 token of 1..",
                               max_length, " characters)")});
    } else if (tokens[i] == "*" && credentials) {
      errors->push_back({field,
                         "'*' means \"any\" only without credentials (browsers take it "
                         "literally when credentials is true); list the names"});
    }
  }
}

// A `.` in an expression that stands for a character of any kind: outside
// a class and \Q...\E, unescaped. `end`: the offset after it and its
// quantifier; `spans`: the quantifier lets it span more than one character
// (`.*`, `.+`, `.{2,}`, `.{1,63}` span a host label on purpose; a `.` alone,
// `.?` or `.{1}` between letters is nearly always a dot meant literally).
struct AnyCharacter {
  size_t offset;
  size_t end;
  bool spans;
};

std::vector<AnyCharacter> AnyCharacters(std::string_view regex) {
  std::vector<AnyCharacter> found;
  bool in_class = false;
  for (size_t i = 0; i < regex.size(); ++i) {
    const char c = regex[i];
    if (c == '\\') {
      if (i + 1 < regex.size() && regex[i + 1] == 'Q') {  // quoted up to \E
        const size_t quote_end = regex.find("\\E", i + 2);
        if (quote_end == std::string_view::npos) return found;
        i = quote_end + 1;
      } else {
        ++i;  // the escaped character, whatever it is
      }
    } else if (in_class) {
      if (c == '[' && i + 1 < regex.size() && regex[i + 1] == ':') {  // [:alnum:]
        const size_t named_end = regex.find(":]", i + 2);
        if (named_end != std::string_view::npos) i = named_end + 1;
      } else if (c == ']') {
        in_class = false;
      }
    } else if (c == '[') {
      in_class = true;
      // A `]` first in a class (after an optional `^`) is a member.
      if (i + 1 < regex.size() && regex[i + 1] == '^') ++i;
      if (i + 1 < regex.size() && regex[i + 1] == ']') ++i;
    } else if (c == '.') {
      AnyCharacter any{i, i + 1, false};
      const char next = i + 1 < regex.size() ? regex[i + 1] : '\0';
      if (next == '*' || next == '+') {
        any = {i, i + 2, true};
      } else if (next == '{') {
        // {m}, {m,} or {m,n}: lone when at most one character.
        const size_t close = regex.find('}', i + 2);
        if (close != std::string_view::npos) {
          const std::string_view inside = regex.substr(i + 2, close - i - 2);
          const size_t comma = inside.find(',');
          const std::string_view upper =
              comma == std::string_view::npos ? inside : inside.substr(comma + 1);
          int bound = 0;
          any.end = close + 1;
          any.spans = upper.empty() ||
                      (absl::SimpleAtoi(absl::string_view(upper.data(), upper.size()), &bound) &&
                       bound > 1);
        }
      }
      if (any.end < regex.size() && regex[any.end] == '?') ++any.end;  // lazy
      found.push_back(any);
      i = any.end - 1;
    }
  }
  return found;
}

// The offset of the first lone `.` (AnyCharacter::spans false), or npos.
size_t LoneAnyCharacter(std::string_view regex) {
  for (const AnyCharacter& any : AnyCharacters(regex)) {
    if (!any.spans) return any.offset;
  }
  return std::string_view::npos;
}

// The offset of a spanning `.` joined to the letters of a domain's last two
// labels (`.*example\.com`, no `\.` between them): it lets in
// https://evilexample.com, which anyone can register. npos when none.
size_t WildcardJoinedToDomain(std::string_view regex) {
  for (const AnyCharacter& any : AnyCharacters(regex)) {
    if (!any.spans || any.end >= regex.size() ||
        !absl::ascii_isalnum(static_cast<unsigned char>(regex[any.end]))) {
      continue;
    }
    size_t dots = 0;
    for (size_t at = regex.find("\\.", any.end); at != std::string_view::npos;
         at = regex.find("\\.", at + 2)) {
      ++dots;
    }
    if (dots <= 1) return any.offset;
  }
  return std::string_view::npos;
}

class CorsValidator : public api::PolicyValidator {
 public:
  std::string name() const override { return "cors"; }
  const google::protobuf::Descriptor* config_type() const override {
    return v1::CorsConfig::descriptor();
  }
  void Validate(const google::protobuf::Message& message, Errors* errors) const override {
    const auto& config = static_cast<const v1::CorsConfig&>(message);
    CheckOrigins(config, errors);
    CheckTokens("methods", config.methods(), kMaxMethods, kMaxMethodLength, "method",
                config.credentials(), errors);
    CheckTokens("headers", config.headers(), kMaxHeaderNames, kMaxHeaderNameLength, "header name",
                config.credentials(), errors);
    CheckTokens("exposed_headers", config.exposed_headers(), kMaxHeaderNames, kMaxHeaderNameLength,
                "header name", config.credentials(), errors);
    if (config.has_max_age() && config.max_age() > kMaxAgeSeconds) {
      errors->push_back({"max_age", absl::StrCat("must be 0..", kMaxAgeSeconds, " seconds, got ",
                                                 config.max_age())});
    }
  }
  // Apply-only: a stored config an older build took still loads. With
  // credentials, an expression that lets in `null` or any origin is the
  // reflect-every-origin mistake: any page reads answers made with the
  // user's cookies.
  void ValidateNew(const google::protobuf::Message& message, Errors* errors) const override {
    const auto& config = static_cast<const v1::CorsConfig&>(message);
    for (int i = 0; i < config.origins_size() && i < kMaxOrigins; ++i) {
      absl::StatusOr<OriginPattern> pattern = ParseOriginPattern(config.origins(i));
      if (!pattern.ok() || pattern->kind != OriginPattern::Kind::kRegex) continue;
      if (api::RegexBudgetSpent()) break;  // refused anyway: compile no more
      RE2::Options options;
      options.set_log_errors(false);
      const RE2 re(pattern->value, options);
      if (!re.ok()) continue;
      const std::string field = absl::StrCat("origins[", i, "]");
      // Within api/regex_limit.h's program size.
      if (std::string why = api::RegexProgramTooLarge(re); !why.empty()) {
        errors->push_back({field, why});
        continue;
      }
      if (!config.credentials()) continue;
      if (RE2::FullMatch("null", re)) {
        errors->push_back({field, "with credentials: true the expression must not match the origin "
                                  "null, which any page can send (a sandboxed frame, a local "
                                  "file): anchor it to your origins"});
      } else if (RE2::FullMatch("https://sluice-cors-probe.invalid", re) ||
                 RE2::FullMatch("http://sluice-cors-probe.invalid", re)) {
        errors->push_back({field, "with credentials: true the expression must not match any "
                                  "origin (it matches https://sluice-cors-probe.invalid): every "
                                  "page could read answers made with the user's cookies; list "
                                  "the origins or anchor the expression to your domains"});
      } else if (const size_t dot = LoneAnyCharacter(pattern->value);
                 dot != std::string_view::npos) {
        // `~https://app.example.com` lets in https://app-example.com, a
        // domain anyone can register, with the user's cookies.
        errors->push_back(
            {field, absl::StrCat("with credentials: true the expression must not hold a lone '.' "
                                 "(at offset ", dot, " of the expression), which matches any "
                                 "character and so lets in origins such as a look-alike "
                                 "domain anyone can register; write '\\.' for a dot")});
      } else if (const size_t wildcard = WildcardJoinedToDomain(pattern->value);
                 wildcard != std::string_view::npos) {
        // `~https://.*example\.com` lets in https://evilexample.com.
        errors->push_back(
            {field, absl::StrCat("with credentials: true the expression must not join a "
                                 "wildcard to a domain's name (at offset ", wildcard,
                                 " of the expression): it also matches a look-alike such as "
                                 "https://evilexample.com, which anyone can register; end the "
                                 "wildcard with '\\.' ('(.*\\.)?example\\.com')")});
      }
    }
  }
};

const bool registered = api::RegisterPolicyValidator(std::make_unique<CorsValidator>());

}  // namespace
}  // namespace sluice::policy::cors
