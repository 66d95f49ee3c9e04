// The `cors` policy's config rules, registered for every binary that
// validates config.
#include <algorithm>
#include <memory>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
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
      const auto [end, spans] = Quantifier(regex, i + 1);
      found.push_back({i, end, spans});
      i = end - 1;
    }
  }
  return found;
}

// The offset of the first lone `.` (a `.` whose quantifier does not repeat
// it), or npos.
size_t LoneAnyCharacter(std::string_view regex) {
  for (const AnyCharacter& any : AnyCharacters(regex)) {
    if (!any.spans) return any.offset;
  }
  return std::string_view::npos;
}

// The offset of a spanning `.` joined to the letters of a domain's last two
// labels (`.*example\.com`, no `\.` between them): it lets in
// https://evilexample.com, which anyone can register. npos when none.
// (LookAlikeOrigin finds the other wildcards by matching.)
size_t WildcardJoinedToDomain(std::string_view regex) {
  for (const AnyCharacter& any : AnyCharacters(regex)) {
    if (!any.spans || any.end >= regex.size()) continue;
    const char next = regex[any.end];
    if (!absl::ascii_isalnum(static_cast<unsigned char>(next)) && next != '-') continue;
    // `.*localhost`: nobody registers a name that ends so.
    if (absl::StartsWithIgnoreCase(absl::string_view(regex.data() + any.end,
                                                     regex.size() - any.end),
                                   "localhost")) {
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

// The runs of host-name characters an expression spells out (`example.com`
// in `^https://(.*)example\.com$`; `example` and `.com` in
// `(?:[a-z]+example|foo)\.com`), read through groups, flags, `\Q...\E`,
// `\x65`, `\x{65}`, `\145` and one-character classes; a quantified
// character ends one. Lower case, at most 32.
std::vector<std::string> SpelledRuns(std::string_view regex) {
  std::vector<std::string> found;
  std::string run;
  // The run as each open group began: an alternative after the first
  // follows it too (`example\.(com|co\.[a-z]{2})` spells `example.co.`).
  std::vector<std::string> groups;
  size_t borrowed = 0;  // how much of `run` is its group's beginning
  auto end_run = [&] {
    // The scheme (`https` of `https://`, `http` of `https?://`) names no host.
    if (run == "http" || run == "https") run.clear();
    if (!run.empty() && found.size() < 32) found.push_back(run);
    // The alternative alone too (`co.`), as a label it spells.
    if (borrowed > 0 && run.size() > borrowed && found.size() < 32) {
      found.push_back(run.substr(borrowed));
    }
    run.clear();
    borrowed = 0;
  };
  auto quantified = [&](size_t at) {
    return at < regex.size() && std::string_view("?*+{").find(regex[at]) != std::string_view::npos;
  };
  auto hex = [](char h) { return absl::ascii_isdigit(h) ? h - '0' : (h | 0x20) - 'a' + 10; };
  auto domain_char = [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  };
  const size_t n = regex.size();
  for (size_t i = 0; i < n; ++i) {
    const char c = regex[i];
    char literal = 0;
    size_t next = i + 1;
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') {
      literal = c;
    } else if (c == '\\' && i + 1 < n) {
      const char e = regex[i + 1];
      if (e == '.' || e == '-') {
        literal = e;
        next = i + 2;
      } else if (e == 'x' && i + 3 < n && absl::ascii_isxdigit(regex[i + 2]) &&
                 absl::ascii_isxdigit(regex[i + 3])) {
        literal = static_cast<char>(hex(regex[i + 2]) * 16 + hex(regex[i + 3]));
        next = i + 4;
      } else if (e == 'x' && i + 2 < n && regex[i + 2] == '{') {  // \x{65}
        const size_t close = regex.find('}', i + 3);
        int code = 0;
        for (size_t j = i + 3; close != std::string_view::npos && j < close; ++j) {
          code = absl::ascii_isxdigit(regex[j]) && code < 0x100 ? code * 16 + hex(regex[j]) : 0x100;
        }
        if (close == std::string_view::npos || code >= 0x80) {
          end_run();
          i = close == std::string_view::npos ? n : close;
          continue;
        }
        literal = static_cast<char>(code);
        next = close + 1;
      } else if (e >= '0' && e <= '7' && i + 3 < n && regex[i + 2] >= '0' && regex[i + 2] <= '7' &&
                 regex[i + 3] >= '0' && regex[i + 3] <= '7') {  // \056
        literal = static_cast<char>(((e - '0') * 64 + (regex[i + 2] - '0') * 8 +
                                     (regex[i + 3] - '0')) & 0x7f);
        next = i + 4;
      } else if (e == 'p' || e == 'P') {  // \pL, \p{Greek}: a class
        end_run();
        if (i + 2 < n && regex[i + 2] == '{') {
          const size_t close = regex.find('}', i + 3);
          i = close == std::string_view::npos ? n : close;
        } else {
          i += 2;
        }
        continue;
      } else if (e == 'Q') {
        const size_t close = regex.find("\\E", i + 2);
        const std::string_view quoted =
            regex.substr(i + 2, close == std::string_view::npos ? n : close - i - 2);
        for (char q : quoted) {
          if (domain_char(q)) {
            run.push_back(absl::ascii_tolower(static_cast<unsigned char>(q)));
          } else {
            end_run();
          }
        }
        if (close == std::string_view::npos) break;
        i = close + 1;
        continue;
      } else {
        end_run();
        ++i;
        continue;
      }
    } else if (c == '[') {
      if (i + 2 < n && regex[i + 2] == ']' && regex[i + 1] != '^' && regex[i + 1] != '\\') {
        literal = regex[i + 1];  // [e]
        next = i + 3;
      } else if (i + 3 < n && regex[i + 1] == '\\' && regex[i + 3] == ']') {
        literal = regex[i + 2];  // [\.]
        next = i + 4;
      } else {
        end_run();
        size_t j = i + 1;
        if (j < n && regex[j] == '^') ++j;
        if (j < n && regex[j] == ']') ++j;
        for (; j < n && regex[j] != ']'; ++j) {
          if (regex[j] == '\\') {
            ++j;
          } else if (regex[j] == '[' && j + 1 < n && regex[j + 1] == ':') {
            const size_t named_end = regex.find(":]", j + 2);
            if (named_end != std::string_view::npos) j = named_end + 1;
          }
        }
        i = j;
        continue;
      }
    } else if (c == '(') {
      if (i + 1 < n && regex[i + 1] == '?') {  // (?:, (?i), (?i:, (?P<name>
        size_t j = i + 2;
        while (j < n && regex[j] != ':' && regex[j] != ')' && regex[j] != '>') ++j;
        i = j;
        if (j < n && regex[j] == ')') continue;  // (?i): flags, no group
      }
      groups.push_back(run);
      continue;  // a group's text joins what is around it
    } else if (c == ')') {
      if (!groups.empty()) groups.pop_back();
      if (quantified(i + 1)) end_run();
      continue;
    } else if (c == '|' && !groups.empty() && !groups.back().empty()) {
      end_run();
      run = groups.back();
      borrowed = run.size();
      continue;
    } else {
      end_run();  // '.', '|', '^', '$', a quantifier...
      continue;
    }
    if (!domain_char(literal)) {
      end_run();
    } else if (quantified(next)) {
      end_run();  // `s?`: that character may or may not be there
    } else {
      run.push_back(absl::ascii_tolower(static_cast<unsigned char>(literal)));
    }
    i = next - 1;
  }
  end_run();
  return found;
}

// Top-level names nobody registers: RFC 6761's (`localhost`, `test`,
// `invalid`, `example`), mDNS's `local` (RFC 6762), `internal` (ICANN,
// 2024, for private use), `arpa` (`home.arpa`, RFC 8375) and `corp`,
// `home` and `mail`, which ICANN resolved never to delegate (2018).
bool IsReservedTopLevel(std::string_view label) {
  static const std::set<std::string_view> kReserved = {
      "localhost", "test", "invalid", "example", "local", "internal", "arpa",
      "corp",      "home", "mail"};
  return kReserved.count(label) > 0;
}

// `second.country` is a level anyone registers under (`co.uk`, `com.au`,
// `ne.jp`, `com.pl`): a second level that names a kind of registrant under
// a country whose registry sells below such levels, or one of the common
// ones (`com`, `co`, `net`, `org`, `edu`, `gov`, `ac`...) under any
// two-letter country code.
bool IsPublicSecondLevel(std::string_view second, std::string_view country) {
  // Country codes whose registries register below such second levels (a
  // company's own `web.de` or `go.io` is registered in two labels).
  static const std::set<std::string_view> kCountriesWithSecondLevels = {
      "uk", "au", "jp", "nz", "za", "br", "in", "il", "kr", "cn", "tw", "hk", "sg", "my",
      "id", "th", "ph", "vn", "ar", "mx", "tr", "ua", "pk", "bd", "eg", "ng", "ke", "pe",
      "ve", "ec", "uy", "py", "bo", "np", "lk", "cy", "mt", "fj", "gh", "tz", "ug", "zw",
      "zm", "mz", "ao", "cm", "sa", "ae", "om", "qa", "kw", "bh", "jo", "lb", "co", "at",
      "fr"};
  static const std::set<std::string_view> kSecondLevels = {
      "ac",  "co",  "com", "edu", "gov", "net", "org", "ltd", "plc", "me",  "ne",  "or",
      "go",  "gob", "mil", "nom", "sch", "gen", "biz", "info", "web", "int", "res", "lg",
      "ad",  "ed",  "gr",  "in",  "nic", "id",  "nhs", "police", "mod", "judiciary",
      "gv",  "asso", "gouv"};
  static const std::set<std::string_view> kCommonSecondLevels = {
      "ac", "co", "com", "edu", "gov", "net", "org", "mil", "gob", "nom", "sch", "ltd", "plc"};
  if (country.size() != 2) return false;
  if (kCommonSecondLevels.count(second) > 0) return true;
  return kCountriesWithSecondLevels.count(country) > 0 && kSecondLevels.count(second) > 0;
}

// The part of `name` anyone registers as a whole: its last two labels, or
// three under a two-letter country code with a second level that names a
// kind of registrant (`example.co.uk`, `example.com.au`, `example.ne.jp`;
// `app.fly.io` is under fly.io, which one owner registered). Empty for an
// IP address, a single label, or a name under a top-level name nobody
// registers (IsReservedTopLevel: `localhost`, `internal`, `test`...).
std::string RegisteredPart(const std::string& name) {
  std::vector<std::string> labels;
  for (absl::string_view label : absl::StrSplit(name, '.')) {
    if (!label.empty()) labels.emplace_back(label);
  }
  if (labels.size() < 2 || IsReservedTopLevel(labels.back())) return "";
  bool numeric = true;
  for (const std::string& label : labels) {
    for (char c : label) numeric = numeric && absl::ascii_isdigit(static_cast<unsigned char>(c));
  }
  if (numeric) return "";
  size_t take = 2;
  if (labels.size() >= 3 && IsPublicSecondLevel(labels[labels.size() - 2], labels.back())) {
    take = 3;
  }
  std::vector<std::string> tail(labels.end() - take, labels.end());
  return absl::StrJoin(tail, ".");
}

// The domains an expression may be meant for, from what it spells: each
// run with a dot; a run without one joined to what follows the first dot
// of each run with one (`example` and the `.com` of `foo.com` in
// `(?:[a-z]+example|foo)\.com`); and, as its top-level domain may be
// written as a class (`example\.[a-z]+`, `example\.c[^x]m`), each with
// its last label (or the empty one after a final dot) put as `com`, `net`,
// `org` or `io`.
std::vector<std::string> MeantDomains(std::string_view regex) {
  const std::vector<std::string> runs = SpelledRuns(regex);
  std::vector<std::string> names;
  for (const std::string& run : runs) {
    if (run.find('.') != std::string::npos) names.push_back(run);
  }
  for (const std::string& label : runs) {
    if (label.find('.') != std::string::npos) continue;
    for (const std::string& other : runs) {
      const size_t dot = other.find('.');  // `.com` of `foo.com` too
      if (dot != std::string::npos && dot + 1 < other.size()) {
        names.push_back(label + other.substr(dot));
      }
    }
  }
  const size_t spelled = names.size();
  for (size_t i = 0; i < spelled; ++i) {
    const size_t dot = names[i].rfind('.');
    for (const char* tld : {"com", "net", "org", "io"}) {
      names.push_back(absl::StrCat(names[i].substr(0, dot + 1), tld));
    }
  }
  if (names.size() > 64) names.resize(64);
  return names;
}

// An origin on a domain anyone can register that the expression lets in
// because a wildcard runs into a domain it names (`[^/]*example\.com`,
// `(.*)example\.com`, `\w+-example\.com`, `[a-z]example\.co\.uk`): each
// domain it may be meant for (MeantDomains) is cut to its registered part
// and tried with made-up first parts (each letter, `1`, `aa` up to ten
// letters, with and without a `-`), over https and http, without a port and
// with `:443`, `:8443`, `:1` and each it spells. Empty when none matches.
// The ports origins are tried with: none, `:443`, `:8443`, `:1` and each
// the expression spells (`:3000`), at most 12.
std::vector<std::string> TriedPorts(std::string_view regex) {
  std::vector<std::string> ports = {"", ":443", ":8443", ":1", ":3000", ":8080"};
  // Each run of two to five digits it spells (`:3000`, `:(3000|8080)`).
  for (size_t at = 0; at < regex.size() && ports.size() < 16;) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(regex[at]))) {
      ++at;
      continue;
    }
    size_t end = at;
    while (end < regex.size() && absl::ascii_isdigit(static_cast<unsigned char>(regex[end]))) {
      ++end;
    }
    const std::string port = ":" + std::string(regex.substr(at, end - at));
    if (end - at >= 2 && end - at <= 5 &&
        std::find(ports.begin(), ports.end(), port) == ports.end()) {
      ports.push_back(port);
    }
    at = end;
  }
  return ports;
}

std::string LookAlikeOrigin(const RE2& re, std::string_view regex,
                            const std::vector<std::string>& ports) {
  std::vector<std::string> made_up;
  for (char c = 'a'; c <= 'z'; ++c) made_up.push_back(std::string(1, c));
  for (size_t length = 2; length <= 10; ++length) made_up.push_back(std::string(length, 'a'));
  made_up.push_back("1");
  for (size_t i = 0, n = made_up.size(); i < n; ++i) made_up.push_back(made_up[i] + "-");
  // A label it spells, joined to the domain by a class in place of the dot
  // (`app[.-]example\.com`, `app\Wexample\.com`) or by a dot that may be
  // left out (`(www\.?)?example\.com`): https://app-example.com.
  for (const std::string& run : SpelledRuns(regex)) {
    if (run.find('.') != std::string::npos || run.size() > 63) continue;
    made_up.push_back(run);
    made_up.push_back(run + "-");
  }
  std::set<std::string> tried;
  for (const std::string& domain : MeantDomains(regex)) {
    const std::string registered = RegisteredPart(domain);
    if (registered.empty() || !tried.insert(registered).second) continue;
    for (const char* scheme : {"https://", "http://"}) {
      for (const std::string& first : made_up) {
        for (const std::string& port : ports) {
          const std::string origin = absl::StrCat(scheme, first, registered, port);
          if (RE2::FullMatch(origin, re)) return origin;
        }
      }
    }
  }
  return "";
}

// An origin on a domain anyone can register that the expression lets in
// because a wildcard follows a domain it names, or stands for its
// top-level domain: `example\.com.*` lets in https://example.com.a.com (a
// name under a.com, whoever registers it), `example\.com(\.[a-z]+)?`
// https://example.com.br, `example\.com\w*` https://example.community,
// `example\.[a-z]+` the same name under any top-level domain, and
// `example\.c[a-z]+` https://example.cafe. Each domain it may be meant for
// (MeantDomains) is tried with made-up labels after it (`.a.com`, `.q.com`,
// `-a.com`, `a.com`, `.a.net`, `.a.org`, `.a.io`, `.zq`, `.qq`, `zq`,
// `qq`, `q`), and with made-up top-level domains in place of its own t (`zq`,
// `qq`, `zqx`, `qqx`, `sluiceprobe`, `a.zq`, `q.qq`; t with its first
// letters kept, `czq`, `cozq` for `com`, or one letter made `q`, `cqm`; each
// label it spells alone with a `q` or two before it or one after it), over
// https and http, with TriedPorts; never a name it may be meant for itself,
// nor one whose last label it spells alone. Empty when none matches.
std::string TrailingWildcardOrigin(const RE2& re, std::string_view regex,
                                   const std::vector<std::string>& ports) {
  std::set<std::string> tried;
  std::vector<std::string> meant = MeantDomains(regex);
  // Labels it spells alone: a top-level domain among alternatives
  // (`example\.(com|co)`), or one a class runs into (`example\.[a-z]et`).
  std::set<std::string> labels;
  for (const std::string& run : SpelledRuns(regex)) {
    if (run.find('.') == std::string::npos && run.size() <= 63) labels.insert(run);
  }
  // A domain cut at its dot takes each of them as its last label too.
  for (size_t i = 0, n = meant.size(); i < n; ++i) {
    if (meant[i].empty() || meant[i].back() != '.') continue;
    for (const std::string& label : labels) meant.push_back(meant[i] + label);
  }
  // A name it may be meant for is no look-alike, nor one whose last label
  // it spells alone (`example\.(com|co)` names example.co).
  const std::set<std::string> named(meant.begin(), meant.end());
  auto spelled = [&](const std::string& host) {
    const size_t last_dot = host.rfind('.');
    return named.count(host) > 0 ||
           (last_dot != std::string::npos && labels.count(host.substr(last_dot + 1)) > 0);
  };
  // A name that starts with a dot follows a wildcard (`[a-z0-9-]+\.internal`,
  // `[a-z0-9-]+\.example\.[a-z]+`): tried with a made-up first label.
  for (size_t i = 0, n = meant.size(); i < n; ++i) {
    if (meant[i].size() > 1 && meant[i][0] == '.') meant.push_back("a" + meant[i]);
  }
  // A single label it spells (`localhost`, `acme`) may be followed by a
  // wildcard too (`https?://localhost.*` lets in https://localhost.a.com).
  for (const std::string& label : labels) {
    if (label.size() < 2 || label.back() == '-' || label[0] == '-') continue;
    for (const char* after : {".a.com", "a.com", "-a.com"}) {
      const std::string host = label + after;
      for (const char* scheme : {"https://", "http://"}) {
        for (const std::string& port : ports) {
          const std::string origin = absl::StrCat(scheme, host, port);
          if (RE2::FullMatch(origin, re)) return origin;
        }
      }
    }
  }
  for (std::string domain : meant) {
    // A run cut by a wildcard after its dot (`example\.com\.[a-z]+`) names
    // the domain before that dot.
    while (!domain.empty() && domain.back() == '.') domain.pop_back();
    const size_t dot = domain.rfind('.');
    if (dot == std::string::npos || dot == 0 || !tried.insert(domain).second) continue;
    std::vector<std::string> hosts;
    for (const char* after : {".a.com", ".q.com", "-a.com", "a.com", ".a.net", ".a.org", ".a.io",
                              ".zq", ".qq", "zq", "qq", "q"}) {
      hosts.push_back(domain + after);
    }
    const std::string last = domain.substr(dot + 1);
    std::vector<std::string> tlds = {"zq", "qq", "zqx", "qqx", "sluiceprobe", "a.zq", "q.qq"};
    if (!last.empty()) {
      tlds.push_back(last.substr(0, 1) + "zq");
      tlds.push_back(last.substr(0, 1) + "qq");
    }
    if (last.size() >= 2) tlds.push_back(last.substr(0, 2) + "zq");
    // A class for one of its letters (`c[a-z]m`), or before or after a
    // label it spells (`[a-z]et`, `i[a-z]`, `[a-z][a-z]o`).
    for (size_t at = 0; at < last.size() && last.size() <= 8; ++at) {
      std::string one = last;
      one[at] = 'q';
      tlds.push_back(one);
    }
    for (const std::string& label : labels) {
      if (label.size() > 8) continue;
      tlds.push_back("q" + label);
      tlds.push_back("qq" + label);
      tlds.push_back(label + "q");
    }
    for (const std::string& tld : tlds) {
      if (tld != last) hosts.push_back(domain.substr(0, dot + 1) + tld);
    }
    for (const char* scheme : {"https://", "http://"}) {
      for (const std::string& host : hosts) {
        if (spelled(host)) continue;
        for (const std::string& port : ports) {
          const std::string origin = absl::StrCat(scheme, host, port);
          if (RE2::FullMatch(origin, re)) return origin;
        }
      }
    }
  }
  return "";
}

// An origin on a domain anyone can register that the expression lets in
// because a wildcard stands inside the registered name it is meant for, or
// for all of it: `example[0-9]*\.com` lets in https://example1.com,
// `example\.(com|[a-z]{2}\.uk)` https://example.qq.uk (a name under a
// second level anyone may register under), `[0-9]+\.com` https://1.com and
// `[0-9.]+` any IPv4 address, an attacker's own server's too. Tried: each
// label it spells with a made-up part (digits, letters, with a `-`) before
// each dot-led run it spells (`.com`); each domain it names up to a dot
// (`example.`) with a made-up label before such a run (`.uk`); a made-up
// label alone before one; two documentation addresses (RFC 5737). Never a
// name whose registered part is one it may be meant for (`app1.example.com`
// for `app[0-9]+\.example\.com`). Empty when none matches.
std::string InnerWildcardOrigin(const RE2& re, std::string_view regex,
                                const std::vector<std::string>& ports) {
  const std::vector<std::string> runs = SpelledRuns(regex);
  const std::vector<std::string> meant = MeantDomains(regex);
  std::set<std::string> meant_registered;
  for (std::string domain : meant) {
    while (!domain.empty() && domain.back() == '.') domain.pop_back();
    if (std::string registered = RegisteredPart(domain); !registered.empty()) {
      meant_registered.insert(std::move(registered));
    }
  }
  static constexpr const char* kMadeUp[] = {"1", "12", "0", "-1", "a", "-a", "aa", "q", "qq", "zq"};
  std::vector<std::string> hosts;
  for (const std::string& tail : runs) {
    if (tail.size() < 2 || tail[0] != '.') continue;  // `.com`, `.uk`, `.example.com`
    for (const char* part : kMadeUp) {
      if (part[0] != '-') hosts.push_back(part + tail);
      for (const std::string& label : runs) {  // `www.example`, `.example` (as a.example) too
        if (label.empty() || label == tail || label.back() == '.' || label.size() > 253) continue;
        hosts.push_back((label[0] == '.' ? "a" : "") + label + part + tail);
      }
      for (const std::string& domain : meant) {
        if (domain.size() < 2 || domain.back() != '.' || part[0] == '-') continue;
        hosts.push_back(domain + part + tail);
      }
    }
  }
  for (const char* address : {"203.0.113.7", "198.51.100.23", "203.0.113.1", "[2001:db8::7]"}) {
    hosts.push_back(address);
  }
  const std::set<std::string> named(meant.begin(), meant.end());
  for (const char* scheme : {"https://", "http://"}) {
    for (const std::string& host : hosts) {
      if (named.count(host) > 0 || IsReservedTopLevel(host.substr(host.rfind('.') + 1))) {
        continue;  // `1.internal`: nobody registers it
      }
      const std::string registered = RegisteredPart(host);
      if (meant_registered.count(registered) > 0) continue;
      for (const std::string& port : ports) {
        const std::string origin = absl::StrCat(scheme, host, port);
        if (RE2::FullMatch(origin, re)) return origin;
      }
    }
  }
  return "";
}

// An origin of a domain nobody here names that the expression matches:
// one with a hyphen, one without (`[a-z]+\\.[a-z]+` takes https://
// attacker.net), a level down, under the common top-level domains and
// under public second levels (`([a-z0-9-]+\\.)+com`, `[a-z0-9-]+\\.[a-z]{2,}
// \\.[a-z]{2}`, `([a-z0-9-]+\\.)?co\\.uk` take https://attacker.com,
// https://attacker.co.uk); "" when none does.
std::string AnyOriginItMatches(const RE2& re) {
  for (const char* host :
       {"sluice-cors-probe.invalid", "attacker.net", "www.attacker.net", "sluiceprobe.zq",
        "attacker.com", "www.attacker.com", "attacker.io", "www.attacker.io", "attacker.dev",
        "attacker.app", "www.attacker.de", "attacker.co.uk", "attacker.com.au",
        "attacker.co.jp"}) {
    for (const char* scheme : {"https://", "http://"}) {
      const std::string origin = absl::StrCat(scheme, host);
      if (RE2::FullMatch(origin, re)) return origin;
    }
  }
  return "";
}

// Suffixes under which hosting platforms give each customer a name of
// their own (the Public Suffix List's private part, its most used): a
// wildcard label under one lets in every other customer's site.
constexpr const char* kPlatformSuffixes[] = {
    "github.io",       "gitlab.io",          "herokuapp.com",     "vercel.app",
    "netlify.app",     "netlify.com",        "now.sh",            "pages.dev",
    "workers.dev",     "web.app",            "firebaseapp.com",   "firebaseio.com",
    "appspot.com",     "cloudfunctions.net", "azurewebsites.net", "azurestaticapps.net",
    "azurefd.net",     "cloudfront.net",     "amplifyapp.com",    "blogspot.com",
    "onrender.com",    "fly.dev",            "ngrok.io",          "ngrok-free.app",
    "ngrok.app",       "trycloudflare.com",  "loca.lt",           "glitch.me",
    "surge.sh",        "railway.app",        "deno.dev",          "co.com",
    "uk.com",          "us.com",             "eu.com",            "repl.co",
    "replit.app",      "replit.dev",         "csb.app",           "readthedocs.io",
    "gitbook.io",      "duckdns.org",        "pythonanywhere.com", "wordpress.com",
    "myshopify.com"};
// Platforms whose customers' names sit at any depth below them: every name
// an expression spells under one is a suffix of others' names too.
constexpr const char* kPlatformParents[] = {"amazonaws.com", "windows.net", "on.aws", "run.app"};

// An origin under a suffix anyone registers names below that the
// expression lets in whatever the name: the suffixes are the labels it
// spells taken as top-level domains (`([a-z0-9-]+\.)+org`), the public
// second levels it spells (`[a-z0-9-]+\.co\.hu`, IsPublicSecondLevel)
// and the hosting platforms' (`[a-z0-9-]+\.github\.io`); made-up names
// (`sluiceprobe`, `sluice-probe`, `www.sluiceprobe`, `zq7`) are tried
// below each, over https and http, with TriedPorts. Never a name it may be
// meant for, nor one under a top-level name nobody registers. Empty when
// none matches.
std::string PublicSuffixOrigin(const RE2& re, std::string_view regex,
                               const std::vector<std::string>& ports) {
  std::set<std::string> suffixes;
  for (const std::string& run : SpelledRuns(regex)) {
    std::vector<std::string> labels;
    for (absl::string_view label : absl::StrSplit(run, '.')) {
      if (!label.empty()) labels.emplace_back(label);
    }
    for (size_t i = 0; i < labels.size(); ++i) {
      if (!IsReservedTopLevel(labels[i])) suffixes.insert(labels[i]);
      if (i + 1 < labels.size() && IsPublicSecondLevel(labels[i], labels[i + 1])) {
        suffixes.insert(labels[i] + "." + labels[i + 1]);
      }
    }
    // A platform's suffix, and every name it spells under a platform that
    // gives customers names further down (`s3.us-east-1.amazonaws.com`,
    // `z13.web.core.windows.net`, `a.run.app`).
    for (size_t i = 0; i < labels.size(); ++i) {
      const std::string tail = absl::StrJoin(labels.begin() + i, labels.end(), ".");
      for (const char* platform : kPlatformSuffixes) {
        if (tail == platform) suffixes.insert(tail);
      }
      for (const char* parent : kPlatformParents) {
        if (tail == parent || absl::EndsWith(tail, absl::StrCat(".", parent))) {
          suffixes.insert(tail);
        }
      }
    }
  }
  const std::vector<std::string> meant = MeantDomains(regex);
  const std::set<std::string> named(meant.begin(), meant.end());
  for (const std::string& suffix : suffixes) {
    if (suffixes.size() > 64) break;
    for (const char* made_up :
         {"sluiceprobe.", "sluice-probe.", "www.sluiceprobe.", "zq7.", "zqx.", "zqxw."}) {
      const std::string host = made_up + suffix;
      if (named.count(host) > 0) continue;
      for (const char* scheme : {"https://", "http://"}) {
        for (const std::string& port : ports) {
          const std::string origin = absl::StrCat(scheme, host, port);
          if (RE2::FullMatch(origin, re)) return origin;
        }
      }
    }
  }
  return "";
}

// An origin whose registered name glues a label the expression spells to
// the domain it names (`(www\.|www)example\.com` lets in
// https://wwwexample.com, anyone's to register, besides www.example.com):
// a name it spells and matches, whose first label cut in two with a dot
// is a name it matches too, under another registered name. Empty when
// none.
std::string GluedLabelOrigin(const RE2& re, std::string_view regex) {
  const std::vector<std::string> runs = SpelledRuns(regex);
  // Labels it spells alone, or before a dot (`api` of `(api\.|www)`).
  std::set<std::string> labels;
  for (std::string run : runs) {
    if (!run.empty() && run.back() == '.') run.pop_back();
    if (!run.empty() && run.find('.') == std::string::npos && run.size() <= 63) {
      labels.insert(run);
    }
  }
  for (const std::string& run : runs) {
    // A registered name whose first label ends in another name it also
    // lets in below a label it spells: `(api\.|www)example\.com` matches
    // https://api.example.com and https://wwwexample.com.
    const std::string registered = RegisteredPart(run);
    const size_t first_dot = registered.find('.');
    if (registered.empty() || first_dot == std::string::npos) continue;
    for (const char* scheme : {"https://", "http://"}) {
      const std::string glued = absl::StrCat(scheme, registered);
      if (!RE2::FullMatch(glued, re)) continue;
      for (size_t cut = 1; cut + 1 < first_dot; ++cut) {
        const std::string shorter = registered.substr(cut);
        if (shorter[0] == '-') continue;
        for (const std::string& label : labels) {
          if (RE2::FullMatch(absl::StrCat(scheme, label, ".", shorter), re)) return glued;
        }
      }
    }
  }
  for (const std::string& run : runs) {
    const size_t dot = run.find('.');
    if (dot == std::string::npos || dot < 2 || run.size() > 253) continue;
    const std::string registered = RegisteredPart(run);
    if (registered.empty()) continue;
    for (const char* scheme : {"https://", "http://"}) {
      if (!RE2::FullMatch(absl::StrCat(scheme, run), re)) continue;
      for (size_t cut = 1; cut < dot; ++cut) {
        if (run[cut - 1] == '-' || run[cut] == '-') continue;
        const std::string split = absl::StrCat(run.substr(0, cut), ".", run.substr(cut));
        if (RegisteredPart(split) != registered &&
            RE2::FullMatch(absl::StrCat(scheme, split), re)) {
          return absl::StrCat(scheme, run);
        }
      }
    }
  }
  return "";
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
      } else if (const std::string any = AnyOriginItMatches(re); !any.empty()) {
        errors->push_back({field, absl::StrCat("with credentials: true the expression must not "
                                               "match any origin (it matches ", any, "): every "
                                  "page could read answers made with the user's cookies; list "
                                  "the origins or anchor the expression to your domains")});
      } else if (const std::string under = PublicSuffixOrigin(re, pattern->value,
                                                              TriedPorts(pattern->value));
                 !under.empty()) {
        // `~https://([a-z0-9-]+\.)+org` lets in https://attacker.org.
        errors->push_back({field, absl::StrCat("with credentials: true the expression must not "
                                               "match every name under a public suffix (it "
                                               "matches ", under, ", a name anyone can "
                                               "register): every such site could read answers "
                                               "made with the user's cookies; spell your "
                                               "registered domain ('[a-z0-9-]+\\.example\\."
                                               "org')")});
      } else if (const std::string glued = GluedLabelOrigin(re, pattern->value);
                 !glued.empty()) {
        errors->push_back({field, absl::StrCat("with credentials: true the expression must not "
                                               "join a label to the domain it names: it matches ",
                                               glued, ", a look-alike anyone can register; list "
                                               "each origin as its own entry")});
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
      } else if (const std::string look_alike =
                     LookAlikeOrigin(re, pattern->value, TriedPorts(pattern->value));
                 !look_alike.empty()) {
        errors->push_back(
            {field, absl::StrCat("with credentials: true the expression must not join a "
                                 "wildcard to a domain's name: it matches ", look_alike,
                                 ", a look-alike anyone can register; end the wildcard with "
                                 "'\\.' ('(.*\\.)?example\\.com')")});
      } else if (const std::string trailing =
                     TrailingWildcardOrigin(re, pattern->value, TriedPorts(pattern->value));
                 !trailing.empty()) {
        // `~https://example\.com.*` lets in https://example.com.a.com.
        errors->push_back(
            {field, absl::StrCat("with credentials: true the expression must not let a "
                                 "wildcard follow a domain's name or stand for its top-level "
                                 "domain: it matches ", trailing, ", another domain than "
                                 "the one it names, as names anyone can register would "
                                 "(example.com.br, example.community); end it at the name "
                                 "('example\\.com(:[0-9]+)?$') and spell the top-level "
                                 "domains ('example\\.(com|net)')")});
      } else if (const std::string inner =
                     InnerWildcardOrigin(re, pattern->value, TriedPorts(pattern->value));
                 !inner.empty()) {
        // `~https://example[0-9]*\.com` lets in https://example1.com.
        errors->push_back(
            {field, absl::StrCat("with credentials: true the expression must not hold a "
                                 "wildcard inside the domain it is meant for, or in its place: "
                                 "it matches ", inner, ", a name anyone can register (or "
                                 "any address); spell the domain's registered name "
                                 "('[a-z0-9]+\\.example\\.com' for its subdomains)")});
      }
    }
  }
};

const bool registered = api::RegisterPolicyValidator(std::make_unique<CorsValidator>());

}  // namespace
}  // namespace sluice::policy::cors
