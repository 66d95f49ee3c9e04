#include "dataplane/policy/request_transformer/transform.h"

#include "dataplane/policy/auth_util.h"

#include <simdjson.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sluice::policy::transformer {
namespace {

std::string_view TrimJsonSpace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

// --- A validated JSON object, split into raw field texts ---

bool IsJsonSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// `*at` is on a '"'; moves past the closing one.
bool SkipString(std::string_view json, size_t* at) {
  size_t i = *at + 1;
  while (i < json.size()) {
    if (json[i] == '\\') {
      i += 2;
    } else if (json[i] == '"') {
      *at = i + 1;
      return true;
    } else {
      ++i;
    }
  }
  return false;
}

// Moves `*at` past the value that starts there.
bool SkipValue(std::string_view json, size_t* at) {
  size_t i = *at;
  if (i >= json.size()) return false;
  char c = json[i];
  if (c == '"') return SkipString(json, at);
  if (c == '{' || c == '[') {
    int depth = 0;
    while (i < json.size()) {
      c = json[i];
      if (c == '"') {
        if (!SkipString(json, &i)) return false;
        continue;
      }
      if (c == '{' || c == '[') {
        ++depth;
      } else if (c == '}' || c == ']') {
        if (--depth == 0) {
          *at = i + 1;
          return true;
        }
      }
      ++i;
    }
    return false;
  }
  // A number, true, false or null.
  while (i < json.size() && json[i] != ',' && json[i] != '}' &&
         json[i] != ']' && !IsJsonSpace(json[i])) {
    ++i;
  }
  if (i == *at) return false;
  *at = i;
  return true;
}

struct RawField {
  std::string_view key;    // with its quotes, escapes as written
  std::string_view value;  // as written
};

// `json` is valid JSON (simdjson checked it) whose root is an object. False
// on anything unexpected (then the body is treated as not JSON).
bool SplitObject(std::string_view json, std::vector<RawField>* fields) {
  size_t i = 0;
  auto skip_space = [&] {
    while (i < json.size() && IsJsonSpace(json[i])) ++i;
  };
  skip_space();
  if (i >= json.size() || json[i] != '{') return false;
  ++i;
  skip_space();
  if (i < json.size() && json[i] == '}') return true;
  while (true) {
    skip_space();
    if (i >= json.size() || json[i] != '"') return false;
    size_t key_start = i;
    if (!SkipString(json, &i)) return false;
    std::string_view key = json.substr(key_start, i - key_start);
    skip_space();
    if (i >= json.size() || json[i] != ':') return false;
    ++i;
    skip_space();
    size_t value_start = i;
    if (!SkipValue(json, &i)) return false;
    fields->push_back({key, json.substr(value_start, i - value_start)});
    skip_space();
    if (i >= json.size()) return false;
    if (json[i] == ',') {
      ++i;
      continue;
    }
    return json[i] == '}';
  }
}

// Length of the UTF-8 sequence at `s` (RFC 3629), 0 when it is not one.
size_t Utf8SequenceLength(std::string_view s) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  auto cont = [&](size_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return i < s.size() && byte(i) >= lo && byte(i) <= hi;
  };
  unsigned char c = byte(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
    return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

bool IsValidUtf8(std::string_view s) {
  while (!s.empty()) {
    size_t n = Utf8SequenceLength(s);
    if (n == 0) return false;
    s.remove_prefix(n);
  }
  return true;
}

void CheckName(const std::string& name, const std::string& field,
               ConfigErrors* errors) {
  if (name.empty()) {
    errors->emplace_back(field, "is required");
  } else if (name.size() > kMaxNameBytes) {
    errors->emplace_back(
        field,
        absl::StrCat("is ", name.size(), " bytes; at most ", kMaxNameBytes));
  } else if (!IsValidUtf8(name)) {
    errors->emplace_back(field, "is not valid UTF-8");
  } else {
    for (char c : name) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        errors->emplace_back(field, "must not contain control characters");
        return;
      }
    }
  }
}

}  // namespace

// --- Config rules ---

void CheckListSizes(const EditSpec& spec, const std::string& prefix,
                    ConfigErrors* errors) {
  auto check = [&](size_t n, const char* list) {
    if (n > kMaxEntriesPerList) {
      errors->emplace_back(
          absl::StrCat(prefix, ".", list),
          absl::StrCat("has ", n, " entries; at most ", kMaxEntriesPerList));
    }
  };
  check(spec.remove.size(), "remove");
  check(spec.rename.size(), "rename");
  check(spec.replace.size(), "replace");
  check(spec.add.size(), "add");
  check(spec.append.size(), "append");
}

void CheckHeaderEdits(const EditSpec& spec, const std::string& prefix,
                      bool request, const TemplateScope& scope,
                      ConfigErrors* errors) {
  CheckListSizes(spec, prefix, errors);
  const std::string host_rule =
      request
          ? absl::StrCat("host can only be replaced (", prefix,
                         ".replace), not removed, renamed, added or appended")
          : std::string(
                "host is a request field; a response has none to change");
  for (size_t i = 0; i < spec.remove.size(); ++i) {
    headers::CheckHeaderName(spec.remove[i],
                             absl::StrCat(prefix, ".remove[", i, "]"),
                             host_rule, errors);
  }
  for (size_t i = 0; i < spec.rename.size(); ++i) {
    const auto& [from, to] = spec.rename[i];
    std::string field = absl::StrCat(prefix, ".rename[", i, "]");
    headers::CheckHeaderName(from, field + ".from", host_rule, errors);
    headers::CheckHeaderName(to, field + ".to", host_rule, errors);
    if (request) headers::CheckNotConsumerField(to, field + ".to", errors);
    if (!from.empty() && from == to)
      errors->emplace_back(field + ".to", "is the same as from");
  }
  auto check_values = [&](const auto& list, const char* kind,
                          std::string_view rule) {
    for (size_t i = 0; i < list.size(); ++i) {
      std::string field = absl::StrCat(prefix, ".", kind, "[", i, "]");
      headers::CheckHeaderName(list[i].first, field + ".name", rule, errors);
      if (request) headers::CheckNotConsumerField(list[i].first, field + ".name", errors);
      headers::CheckTemplateValue(list[i].second, field + ".value", scope,
                                  errors);
    }
  };
  check_values(spec.replace, "replace",
               request ? std::string_view() : host_rule);
  check_values(spec.add, "add", host_rule);
  check_values(spec.append, "append", host_rule);
}

void CheckNewHeaderEdits(const EditSpec& spec, const std::string& prefix,
                         ConfigErrors* errors) {
  for (size_t i = 0; i < spec.rename.size(); ++i) {
    const auto& [from, to] = spec.rename[i];
    if (from != to && absl::EqualsIgnoreCase(from, to)) {
      errors->emplace_back(absl::StrCat(prefix, ".rename[", i, "].to"),
                           "is the same as from (field names are case-insensitive)");
    }
  }
  auto edges = [&](const auto& list, const char* kind) {
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string& value = list[i].second;
      if (!value.empty() && (value.front() == ' ' || value.front() == '\t' ||
                             value.back() == ' ' || value.back() == '\t')) {
        errors->emplace_back(absl::StrCat(prefix, ".", kind, "[", i, "].value"),
                             "begins or ends with white space, which a field value cannot "
                             "(RFC 9110 5.5: HTTP/2 drops such a field, HTTP/1 would send it)");
      }
    }
  };
  edges(spec.replace, "replace");
  edges(spec.add, "add");
  edges(spec.append, "append");
}

std::string CheckJsonValue(std::string_view text, const TemplateScope& scope) {
  std::string_view json = TrimJsonSpace(text);
  simdjson::dom::parser parser;
  simdjson::dom::element element;
  if (auto error = parser.parse(json.data(), json.size()).get(element)) {
    return absl::StrCat("not valid JSON (", simdjson::error_message(error),
                        "); write a string with its quotes, e.g. '\"text\"'");
  }
  if (element.is_string()) {
    std::string_view decoded = element.get_string().value_unsafe();
    if (auto parsed = ValueTemplate::Parse(decoded, scope); !parsed.ok()) {
      return std::string(parsed.status().message());
    }
  }
  return {};
}

namespace {

// The names in `remove` and `rename` of query and JSON body edits.
void CheckRemovesAndRenames(const EditSpec& spec, const std::string& prefix,
                            ConfigErrors* errors) {
  for (size_t i = 0; i < spec.remove.size(); ++i) {
    CheckName(spec.remove[i], absl::StrCat(prefix, ".remove[", i, "]"), errors);
  }
  for (size_t i = 0; i < spec.rename.size(); ++i) {
    const auto& [from, to] = spec.rename[i];
    std::string field = absl::StrCat(prefix, ".rename[", i, "]");
    CheckName(from, field + ".from", errors);
    CheckName(to, field + ".to", errors);
    if (!from.empty() && from == to)
      errors->emplace_back(field + ".to", "is the same as from");
  }
}

}  // namespace

void CheckQueryEdits(const EditSpec& spec, const std::string& prefix,
                     const TemplateScope& scope, ConfigErrors* errors) {
  CheckListSizes(spec, prefix, errors);
  CheckRemovesAndRenames(spec, prefix, errors);
  auto check_values = [&](const auto& list, const char* kind) {
    for (size_t i = 0; i < list.size(); ++i) {
      std::string field = absl::StrCat(prefix, ".", kind, "[", i, "]");
      CheckName(list[i].first, field + ".name", errors);
      headers::CheckTemplateValue(list[i].second, field + ".value", scope,
                                  errors);
    }
  };
  check_values(spec.replace, "replace");
  check_values(spec.add, "add");
  check_values(spec.append, "append");
}

void CheckJsonBodyEdits(const EditSpec& spec, uint64_t max_body_bytes,
                        const std::string& prefix, const TemplateScope& scope,
                        ConfigErrors* errors) {
  CheckListSizes(spec, prefix, errors);
  if (max_body_bytes > kMaxBodyBytesLimit) {
    errors->emplace_back(
        absl::StrCat(prefix, ".max_body_bytes"),
        absl::StrCat("is ", max_body_bytes, "; at most ", kMaxBodyBytesLimit,
                     " (16 MiB); leave it out for 1 MiB"));
  }
  CheckRemovesAndRenames(spec, prefix, errors);
  auto check_values = [&](const auto& list, const char* kind) {
    for (size_t i = 0; i < list.size(); ++i) {
      std::string field = absl::StrCat(prefix, ".", kind, "[", i, "]");
      CheckName(list[i].first, field + ".name", errors);
      const std::string& value = list[i].second;
      if (value.size() > kMaxValueBytes) {
        errors->emplace_back(field + ".value",
                             absl::StrCat("is ", value.size(),
                                          " bytes; at most ", kMaxValueBytes));
      } else if (std::string why = headers::FieldValueControlError(value); !why.empty()) {
        errors->emplace_back(field + ".value", why);
      } else if (std::string why = CheckJsonValue(value, scope); !why.empty()) {
        errors->emplace_back(field + ".value", why);
      }
    }
  };
  check_values(spec.replace, "replace");
  check_values(spec.add, "add");
  if (!spec.append.empty()) {
    errors->emplace_back(absl::StrCat(prefix, ".append"), "is not a body edit");
  }
}

// --- Header edits ---

absl::Status NamedEdits::CompileFrom(const EditSpec& spec, const TemplateScope& scope) {
  remove_ = spec.remove;
  rename_ = spec.rename;
  taken_ = remove_;
  for (const auto& [from, to] : rename_) taken_.push_back(from);
  auto compile = [&](const auto& list, auto* into) -> absl::Status {
    for (const auto& [name, value] : list) {
      auto t = ValueTemplate::Parse(value, scope);
      if (!t.ok()) return t.status();
      into->emplace_back(name, std::move(*t));
    }
    return absl::OkStatus();
  };
  if (auto s = compile(spec.replace, &replace_); !s.ok()) return s;
  if (auto s = compile(spec.add, &add_); !s.ok()) return s;
  return compile(spec.append, &append_);
}

bool NamedEdits::empty() const {
  return remove_.empty() && rename_.empty() && replace_.empty() &&
         add_.empty() && append_.empty();
}

absl::StatusOr<HeaderEdits> HeaderEdits::Compile(const EditSpec& spec,
                                                 const TemplateScope& scope) {
  HeaderEdits out;
  if (absl::Status s = out.CompileFrom(spec, scope); !s.ok()) return s;
  return out;
}

void HeaderEdits::Apply(http::HeaderMap& headers,
                        const TemplateContext& context) const {
  if (empty()) return;
  // Values come from the fields as they are before any edit.
  // A rendered value loses white space at its ends (RFC 9110 5.5: a
  // field value has none; HTTP/2 upstreams refuse one), so a value that
  // renders to white space only counts as empty.
  auto render = [&](const auto& list) {
    std::vector<std::string> out;
    out.reserve(list.size());
    for (const auto& entry : list) {
      std::string value = entry.second.Render(context);
      size_t begin = 0, end = value.size();
      while (begin < end && (value[begin] == ' ' || value[begin] == '\t')) ++begin;
      while (end > begin && (value[end - 1] == ' ' || value[end - 1] == '\t')) --end;
      if (begin > 0 || end < value.size()) value = value.substr(begin, end - begin);
      out.push_back(std::move(value));
    }
    return out;
  };
  std::vector<std::string> replace = render(replace_);
  std::vector<std::string> add = render(add_);
  std::vector<std::string> append = render(append_);
  // A field CGI-style servers (PHP, WSGI, Rack) read as the same variable
  // (`X_Debug` for `x-debug`) goes with a removed, renamed or replaced
  // field, as with the `headers` policy: else a PHP upstream still reads
  // what `remove` took away.
  for (const std::string& name : remove_) {
    headers.Remove(name);
    headers.RemoveOtherCgiSpellings(name);
  }
  for (const auto& [from, to] : rename_) {
    headers.RemoveOtherCgiSpellings(from);
    std::vector<std::string> values;
    for (const http::HeaderMap::Field& f : headers.fields()) {
      if (absl::EqualsIgnoreCase(f.name, from)) values.push_back(f.value);
    }
    if (values.empty()) continue;
    headers.Remove(from);
    headers.Remove(to);
    headers.RemoveOtherCgiSpellings(to);
    for (const std::string& v : values) headers.Add(to, v);
  }
  // A value that renders empty sends no empty field (as the `headers`
  // policy): `replace` takes the fields away, `add` and `append` add none.
  for (size_t i = 0; i < replace_.size(); ++i) {
    if (headers.Get(replace_[i].first) == nullptr) continue;
    headers.RemoveOtherCgiSpellings(replace_[i].first);
    if (replace[i].empty()) {
      headers.Remove(replace_[i].first);
    } else {
      headers.Set(replace_[i].first, replace[i]);
    }
  }
  for (size_t i = 0; i < add_.size(); ++i) {
    if (!add[i].empty() && headers.Get(add_[i].first) == nullptr)
      headers.Add(add_[i].first, add[i]);
  }
  for (size_t i = 0; i < append_.size(); ++i) {
    if (!append[i].empty()) headers.Add(append_[i].first, append[i]);
  }
}

// --- Query edits ---

namespace {


struct QueryParameter {
  std::string name;  // decoded
  std::string raw;   // as it goes out: name[=value]
};

}  // namespace

std::string QueryEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
        std::string_view("-._~!$'()*,;:@/").find(c) != std::string_view::npos) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[(static_cast<unsigned char>(c) >> 4) & 0xf]);
      out.push_back(kHex[static_cast<unsigned char>(c) & 0xf]);
    }
  }
  return out;
}

absl::StatusOr<QueryEdits> QueryEdits::Compile(const EditSpec& spec,
                                               const TemplateScope& scope) {
  QueryEdits out;
  if (absl::Status s = out.CompileFrom(spec, scope); !s.ok()) return s;
  return out;
}

std::optional<std::string> QueryEdits::Apply(
    std::string_view query, const TemplateContext& context) const {
  if (empty()) return std::nullopt;
  // As they are: values are percent-encoded into the query.
  auto render = [&](const auto& list) {
    std::vector<std::string> out;
    out.reserve(list.size());
    for (const auto& entry : list) out.push_back(entry.second.RenderRaw(context));
    return out;
  };
  std::vector<std::string> replace = render(replace_);
  std::vector<std::string> add = render(add_);
  std::vector<std::string> append = render(append_);

  std::vector<QueryParameter> params;
  size_t at = 0;
  while (at < query.size()) {
    size_t amp = query.find('&', at);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view raw = query.substr(at, amp - at);
    if (!raw.empty()) {
      params.push_back(
          {PercentDecode(raw.substr(0, raw.find('='))), std::string(raw)});
    }
    at = amp + 1;
  }
  auto has = [&](const std::string& name) {
    for (const QueryParameter& p : params) {
      if (p.name == name) return true;
    }
    return false;
  };
  // Removed (and a rename's `to` cleared): the name in every spelling an
  // upstream reads as it (`debug%00`, `debug[]`, `+debug`: PHP's
  // $_GET['debug']), as key-auth compares names. Renamed, replaced, read:
  // the name itself (percent-decoded), whose bytes the upstream reads as it
  // (a PHP array `q[a]` is no `q` to rename; its bytes stay).
  auto named = [](const QueryParameter& p, const std::string& name) {
    return SameParameterName(std::string_view(p.raw).substr(0, p.raw.find('=')), name);
  };
  auto remove = [&](const std::string& name, const std::string& except = std::string()) {
    size_t before = params.size();
    std::erase_if(params, [&](const QueryParameter& p) {
      return named(p, name) && (except.empty() || p.name != except);
    });
    return params.size() != before;
  };
  bool changed = false;
  for (const std::string& name : remove_) changed = remove(name) || changed;
  for (const auto& [from, to] : rename_) {
    if (std::none_of(params.begin(), params.end(),
                     [&](const QueryParameter& p) { return p.name == from; })) {
      continue;
    }
    remove(to, from);
    for (QueryParameter& p : params) {
      if (p.name != from) continue;
      size_t eq = p.raw.find('=');
      p.raw = QueryEncode(to) +
              (eq == std::string::npos ? std::string() : p.raw.substr(eq));
      p.name = to;
    }
    changed = true;
  }
  for (size_t i = 0; i < replace_.size(); ++i) {
    const std::string& name = replace_[i].first;
    auto first =
        std::find_if(params.begin(), params.end(),
                     [&](const QueryParameter& p) { return p.name == name; });
    if (first == params.end()) continue;
    first->raw = absl::StrCat(QueryEncode(name), "=", QueryEncode(replace[i]));
    size_t keep = first - params.begin();
    for (size_t j = params.size(); j-- > keep + 1;) {
      if (params[j].name == name) params.erase(params.begin() + j);
    }
    changed = true;
  }
  for (size_t i = 0; i < add_.size(); ++i) {
    if (has(add_[i].first)) continue;
    params.push_back({add_[i].first, absl::StrCat(QueryEncode(add_[i].first),
                                                  "=", QueryEncode(add[i]))});
    changed = true;
  }
  for (size_t i = 0; i < append_.size(); ++i) {
    params.push_back(
        {append_[i].first, absl::StrCat(QueryEncode(append_[i].first), "=",
                                        QueryEncode(append[i]))});
    changed = true;
  }
  if (!changed) return std::nullopt;
  std::string out;
  for (const QueryParameter& p : params) {
    if (!out.empty()) out.push_back('&');
    out.append(p.raw);
  }
  return out;
}

// --- JSON body edits ---

absl::StatusOr<JsonBodyEdits> JsonBodyEdits::Compile(
    const EditSpec& spec, const TemplateScope& scope) {
  JsonBodyEdits out;
  out.remove_ = spec.remove;
  out.rename_ = spec.rename;
  auto compile = [&](const auto& list, auto* into) -> absl::Status {
    for (const auto& [name, text] : list) {
      std::string_view json = TrimJsonSpace(text);
      simdjson::dom::parser parser;
      simdjson::dom::element element;
      if (auto error = parser.parse(json.data(), json.size()).get(element)) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", text, "' is not valid JSON"));
      }
      Value value;
      if (element.is_string()) {
        auto t =
            ValueTemplate::Parse(element.get_string().value_unsafe(), scope);
        if (!t.ok()) return t.status();
        if (t->literal()) {
          value.json = JsonQuote(t->Render(TemplateContext()));
        } else {
          value.text = std::move(*t);
          value.literal = false;
        }
      } else {
        value.json = std::string(json);
      }
      into->emplace_back(name, std::move(value));
    }
    return absl::OkStatus();
  };
  if (auto s = compile(spec.replace, &out.replace_); !s.ok()) return s;
  if (auto s = compile(spec.add, &out.add_); !s.ok()) return s;
  return out;
}

bool JsonBodyEdits::empty() const {
  return remove_.empty() && rename_.empty() && replace_.empty() && add_.empty();
}

JsonBodyEdits::Values JsonBodyEdits::Render(
    const TemplateContext& context) const {
  Values values;
  values.reserve(replace_.size() + add_.size());
  for (const auto* list : {&replace_, &add_}) {
    for (const auto& [name, value] : *list) {
      // As they are: JsonQuote escapes control characters.
      values.push_back(value.literal ? value.json
                                     : JsonQuote(value.text.RenderRaw(context)));
    }
  }
  return values;
}

JsonBodyEdits::Result JsonBodyEdits::Apply(const Values& values,
                                           std::string* body) const {
  // A UTF-8 byte order mark, which a parser may ignore (RFC 8259 8.1) and a
  // browser's fetch().json() does: the object after it is edited (and goes
  // out without it), else a field to remove would reach the page.
  if (body->size() >= 3 && body->compare(0, 3, "\xEF\xBB\xBF") == 0) {
    std::string rest = body->substr(3);
    const Result result = Apply(values, &rest);
    if (result == Result::kChanged) *body = std::move(rest);
    return result;
  }
  struct Field {
    std::string name;          // unescaped
    std::string key;           // JSON text of the name, quotes included
    std::string_view raw_key;  // when `key` is empty
    std::string value;         // JSON text, when replaced
    std::string_view raw_value;
    bool replaced = false;
    bool removed = false;
  };
  std::vector<Field> fields;
  {
    // The parse only names the fields (views into `body` hold the rest):
    // its copy of the body and its DOM, about twice the body, are freed
    // before the edited copy is made.
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    simdjson::dom::object object;
    if (parser.parse(body->data(), body->size()).get(root)) return Result::kUnreadable;
    if (root.get_object().get(object)) return Result::kNotJsonObject;
    std::vector<RawField> raw;
    if (!SplitObject(*body, &raw)) return Result::kUnreadable;
    fields.reserve(raw.size() + add_.size());
    size_t i = 0;
    for (simdjson::dom::key_value_pair kv : object) {
      if (i >= raw.size()) return Result::kUnreadable;
      Field f;
      f.name = std::string(kv.key);
      f.raw_key = raw[i].key;
      f.raw_value = raw[i].value;
      fields.push_back(std::move(f));
      ++i;
    }
    if (i != raw.size()) return Result::kUnreadable;
  }

  bool changed = false;
  auto has = [&](const std::string& name) {
    for (const Field& f : fields) {
      if (!f.removed && f.name == name) return true;
    }
    return false;
  };
  for (const std::string& name : remove_) {
    for (Field& f : fields) {
      if (!f.removed && f.name == name) f.removed = changed = true;
    }
  }
  for (const auto& [from, to] : rename_) {
    if (!has(from)) continue;
    for (Field& f : fields) {
      if (!f.removed && f.name == to) f.removed = true;
    }
    for (Field& f : fields) {
      if (f.removed || f.name != from) continue;
      f.name = to;
      f.key = JsonQuote(to);
    }
    changed = true;
  }
  size_t v = 0;
  for (const auto& [name, value] : replace_) {
    for (Field& f : fields) {
      if (f.removed || f.name != name) continue;
      f.value = values[v];
      f.replaced = changed = true;
    }
    ++v;
  }
  for (const auto& [name, value] : add_) {
    if (!has(name)) {
      Field f;
      f.name = name;
      f.key = JsonQuote(name);
      f.value = values[v];
      f.replaced = true;
      fields.push_back(std::move(f));
      changed = true;
    }
    ++v;
  }
  if (!changed) return Result::kUnchanged;

  std::string out;
  out.reserve(body->size() + 64);
  out.push_back('{');
  bool first = true;
  for (const Field& f : fields) {
    if (f.removed) continue;
    if (!first) out.push_back(',');
    first = false;
    out.append(f.key.empty() ? f.raw_key : std::string_view(f.key));
    out.push_back(':');
    out.append(f.replaced ? std::string_view(f.value) : f.raw_value);
  }
  out.push_back('}');
  *body = std::move(out);
  return Result::kChanged;
}

// --- Helpers ---

std::string JsonQuote(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size() + 2);
  out.push_back('"');
  while (!text.empty()) {
    size_t n = Utf8SequenceLength(text);
    if (n == 0) {
      out.append("\\ufffd");
      text.remove_prefix(1);
      continue;
    }
    if (n > 1) {
      out.append(text.substr(0, n));
      text.remove_prefix(n);
      continue;
    }
    char c = text[0];
    text.remove_prefix(1);
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\b':
        out.append("\\b");
        break;
      case '\f':
        out.append("\\f");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out.append("\\u00");
          out.push_back(kHex[(c >> 4) & 0xf]);
          out.push_back(kHex[c & 0xf]);
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
  return out;
}

bool IsJsonContentType(std::string_view content_type) {
  std::string_view media = content_type.substr(0, content_type.find(';'));
  std::string lower =
      absl::AsciiStrToLower(absl::string_view(media.data(), media.size()));
  absl::string_view type = absl::StripAsciiWhitespace(lower);
  if (type == "application/json") return true;
  // gRPC's +json formats frame each message (five bytes of length before
  // it): no JSON document, and a call's body is never held.
  for (const char* grpc : {"application/grpc+", "application/grpc-web+",
                           "application/grpc-web-text+"}) {
    if (absl::StartsWith(type, grpc)) return false;
  }
  return absl::StartsWith(type, "application/") &&
         absl::EndsWith(type, "+json");
}

bool IsJsonTyped(const http::HeaderMap& headers) {
  // Of several Content-Type fields, or a field's comma-separated list (one
  // field to RFC 9110 5.3), a browser takes the last: any that names JSON
  // counts (a body that is no JSON object is left as it is).
  bool json = false;
  for (const http::HeaderMap::Field& f : headers.fields()) {
    if (!absl::EqualsIgnoreCase(f.name, "content-type")) continue;
    for (absl::string_view type : absl::StrSplit(f.value, ',')) {
      json = json || IsJsonContentType(std::string_view(type.data(), type.size()));
    }
  }
  return json;
}

bool IsPlainJson(const http::HeaderMap& headers) {
  return IsJsonTyped(headers) && EncodingOf(headers).empty();
}

std::string EncodingOf(const http::HeaderMap& headers) {
  // Every field line, every list element (RFC 9110 8.4): empty elements
  // and `identity` are no coding, as parsers read them (Express, Werkzeug
  // and Go take `Content-Encoding:` and `identity, identity` as none).
  for (const http::HeaderMap::Field& f : headers.fields()) {
    if (!absl::EqualsIgnoreCase(f.name, "content-encoding")) continue;
    for (absl::string_view coding : absl::StrSplit(f.value, ',')) {
      coding = absl::StripAsciiWhitespace(coding);
      if (!coding.empty() && !absl::EqualsIgnoreCase(coding, "identity")) {
        return std::string(coding);
      }
    }
  }
  return "";
}

}  // namespace sluice::policy::transformer
