// The `cors` policy's config rules, registered for every binary that
// validates config.
#include <algorithm>
#include <memory>
#include <string_view>
#include <utility>
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

// A single-character atom of an expression (outside \\Q...\\E) and its
// quantifier: a `.`, a class `[...]`, or a class escape (`\\w`, `\\S`,
// `\\pL`...). `end`: the offset after the atom and its quantifier; `spans`:
// the quantifier lets it match more than one character (`.*`, `[a-z]+`,
// `\\w{2,}`, `.{1,63}` span a host label on purpose; a `.` alone, `.?` or
// `.{1}` between letters is nearly always a dot meant literally); `wide`: it
// stands for more than a listed few characters (`.`, `[^/]`, `\\w`), so even
// once it adds a letter of the attacker's choosing.
struct Atom {
  size_t offset;
  size_t end;
  bool dot;
  bool spans;
  bool wide;
};

// The offset after the quantifier at `at` (`*`, `+`, `?`, `{m}`, `{m,}`,
// `{m,n}`, each maybe lazy), and whether it repeats its atom.
std::pair<size_t, bool> Quantifier(std::string_view regex, size_t at) {
  size_t end = at;
  bool repeats = false;
  const char next = at < regex.size() ? regex[at] : '\0';
  if (next == '*' || next == '+') {
    end = at + 1;
    repeats = true;
  } else if (next == '?') {
    end = at + 1;
  } else if (next == '{') {
    const size_t close = regex.find('}', at + 1);
    if (close != std::string_view::npos) {
      const std::string_view inside = regex.substr(at + 1, close - at - 1);
      const size_t comma = inside.find(',');
      const std::string_view upper =
          comma == std::string_view::npos ? inside : inside.substr(comma + 1);
      int bound = 0;
      end = close + 1;
      repeats = upper.empty() ||
                (absl::SimpleAtoi(absl::string_view(upper.data(), upper.size()), &bound) &&
                 bound > 1);
    }
  }
  if (end > at && end < regex.size() && regex[end] == '?') ++end;  // lazy
  return {end, repeats};
}

std::vector<Atom> Atoms(std::string_view regex) {
  std::vector<Atom> found;
  auto add = [&](size_t offset, size_t atom_end, bool dot, bool wide) {
    const auto [end, repeats] = Quantifier(regex, atom_end);
    found.push_back({offset, end, dot, repeats, wide});
    return end;
  };
  for (size_t i = 0; i < regex.size(); ++i) {
    const char c = regex[i];
    if (c == '\\' && i + 1 < regex.size()) {
      const char escaped = regex[i + 1];
      if (escaped == 'Q') {  // quoted up to \E
        const size_t quote_end = regex.find("\\E", i + 2);
        if (quote_end == std::string_view::npos) return found;
        i = quote_end + 1;
      } else if (std::string_view("wWdDSC").find(escaped) != std::string_view::npos) {
        i = add(i, i + 2, false, true) - 1;
      } else if (escaped == 'p' || escaped == 'P') {  // \pL, \p{Greek}
        size_t atom_end = i + 3;
        if (i + 2 < regex.size() && regex[i + 2] == '{') {
          const size_t close = regex.find('}', i + 3);
          atom_end = close == std::string_view::npos ? regex.size() : close + 1;
        }
        i = add(i, std::min(atom_end, regex.size()), false, true) - 1;
      } else {
        ++i;  // the escaped character, whatever it is
      }
    } else if (c == '[') {
      // A `]` first in a class (after an optional `^`) is a member.
      size_t j = i + 1;
      const bool negated = j < regex.size() && regex[j] == '^';
      if (negated) ++j;
      if (j < regex.size() && regex[j] == ']') ++j;
      for (; j < regex.size() && regex[j] != ']'; ++j) {
        if (regex[j] == '\\') {
          ++j;
        } else if (regex[j] == '[' && j + 1 < regex.size() && regex[j + 1] == ':') {  // [:alnum:]
          const size_t named_end = regex.find(":]", j + 2);
          if (named_end != std::string_view::npos) j = named_end + 1;
        }
      }
      if (j >= regex.size()) return found;  // unclosed: RE2 refuses it
      i = add(i, j + 1, false, negated) - 1;
    } else if (c == '.') {
      i = add(i, i + 1, true, true) - 1;
    }
  }
  return found;
}

// The offset of the first lone `.` (a `.` whose quantifier does not repeat
// it), or npos.
size_t LoneAnyCharacter(std::string_view regex) {
  for (const Atom& atom : Atoms(regex)) {
    if (atom.dot && !atom.spans) return atom.offset;
  }
  return std::string_view::npos;
}

// The offset of a wildcard joined to the letters of a domain's last two
// labels (`.*example\\.com`, `[^/]*example\\.com`, `\\w+-example\\.com`, no
// `\\.` between them): it lets in https://evilexample.com, which anyone can
// register. A wildcard: an atom that repeats, or a wide one. npos when none.
size_t WildcardJoinedToDomain(std::string_view regex) {
  for (const Atom& atom : Atoms(regex)) {
    if (!(atom.spans || atom.wide) || atom.end >= regex.size()) continue;
    const char next = regex[atom.end];
    if (!absl::ascii_isalnum(static_cast<unsigned char>(next)) && next != '-') continue;
    size_t dots = 0;
    for (size_t at = regex.find("\\.", atom.end); at != std::string_view::npos;
         at = regex.find("\\.", at + 2)) {
      ++dots;
    }
    if (dots <= 1) return atom.offset;
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
