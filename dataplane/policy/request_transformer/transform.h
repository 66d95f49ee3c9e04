// What the request-transformer and response-transformer policies share:
// edits of header fields (remove, rename, replace, add, append) and of the
// top-level fields of a JSON object body (remove, rename, replace, add),
// their config rules, and the compiled forms the filters apply.
//
// Each policy copies its config messages into EditSpec (ToEditSpec: the two
// protos have the same shapes), checks them with the Check* functions (in
// every binary that validates config) and compiles them once per config
// version (HeaderEdits, JsonBodyEdits: immutable, shared by the workers).
// Apply functions run on the request's worker.
#ifndef SLUICE_DATAPLANE_POLICY_REQUEST_TRANSFORMER_TRANSFORM_H_
#define SLUICE_DATAPLANE_POLICY_REQUEST_TRANSFORMER_TRANSFORM_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "dataplane/http/header_map.h"
#include "dataplane/policy/headers/headers_policy.h"

namespace sluice::policy::transformer {

using headers::TemplateContext;
using headers::TemplateScope;
using headers::ValueTemplate;

inline constexpr size_t kMaxEntriesPerList = headers::kMaxEntriesPerList;  // 64
inline constexpr size_t kMaxValueBytes = headers::kMaxValueBytes;  // 4096
inline constexpr size_t kMaxNameBytes =
    256;  // query parameter and JSON field names
inline constexpr uint64_t kDefaultMaxBodyBytes = uint64_t{1} << 20;
inline constexpr uint64_t kMaxBodyBytesLimit = uint64_t{16} << 20;

// (field, message) pairs, as the validators report them.
using ConfigErrors = std::vector<std::pair<std::string, std::string>>;

// One list of edits, whatever it applies to. Order of application:
// remove, rename, replace, add, append.
struct EditSpec {
  std::vector<std::string> remove;
  std::vector<std::pair<std::string, std::string>> rename;   // from, to
  std::vector<std::pair<std::string, std::string>> replace;  // name, value
  std::vector<std::pair<std::string, std::string>> add;
  std::vector<std::pair<std::string, std::string>> append;
  bool empty() const {
    return remove.empty() && rename.empty() && replace.empty() && add.empty() &&
           append.empty();
  }
};

// From a config message with remove/rename/replace/add (and maybe append)
// fields of the transformer protos' shapes.
template <typename Edits>
EditSpec ToEditSpec(const Edits& edits) {
  EditSpec spec;
  spec.remove.assign(edits.remove().begin(), edits.remove().end());
  for (const auto& r : edits.rename())
    spec.rename.emplace_back(r.from(), r.to());
  for (const auto& f : edits.replace())
    spec.replace.emplace_back(f.name(), f.value());
  for (const auto& f : edits.add()) spec.add.emplace_back(f.name(), f.value());
  if constexpr (requires { edits.append(); }) {
    for (const auto& f : edits.append())
      spec.append.emplace_back(f.name(), f.value());
  }
  return spec;
}

// --- Config rules ---

// Every list has at most kMaxEntriesPerList entries.
void CheckListSizes(const EditSpec& spec, const std::string& prefix,
                    ConfigErrors* errors);

// Header edits: names pass headers::CheckHeaderName (`host` may only be
// replaced, and only on a request), values headers::CheckTemplateValue in
// `scope`; a rename's from and to differ.
void CheckHeaderEdits(const EditSpec& spec, const std::string& prefix,
                      bool request, const TemplateScope& scope,
                      ConfigErrors* errors);
// Apply-only header rules (a stored config keeps loading): no value begins
// or ends with white space (RFC 9110 5.5, as the `headers` policy), and a
// rename's from and to differ in more than case.
void CheckNewHeaderEdits(const EditSpec& spec, const std::string& prefix,
                         ConfigErrors* errors);

// Query edits: names are 1..kMaxNameBytes of UTF-8 without control
// characters (matched against percent-decoded names, percent-encoded when
// written); values as header values.
void CheckQueryEdits(const EditSpec& spec, const std::string& prefix,
                     const TemplateScope& scope, ConfigErrors* errors);

// JSON body edits: names are 1..kMaxNameBytes of UTF-8 without control
// characters; values are JSON texts (a JSON string: a template in `scope`),
// at most kMaxValueBytes, without CR, LF or NUL; max_body_bytes is 0 (the
// default) or 1..kMaxBodyBytesLimit.
void CheckJsonBodyEdits(const EditSpec& spec, uint64_t max_body_bytes,
                        const std::string& prefix, const TemplateScope& scope,
                        ConfigErrors* errors);

// Why `text` cannot be a body field's value (not valid JSON, or a JSON
// string that is not a valid template in `scope`); empty when it can.
std::string CheckJsonValue(std::string_view text, const TemplateScope& scope);

// --- Compiled edits ---

// Header field edits. Immutable; thread-safe.
// The name-and-value edits header and query edits share, compiled.
class NamedEdits {
 public:
  bool empty() const;
  // The names the edits take away: those `remove` lists and those `rename`
  // renames from (a trailer of such a name is dropped: the head's field is
  // gone under that name).
  const std::vector<std::string>& removed() const { return taken_; }

 protected:
  // `spec` passed its check (CheckHeaderEdits / CheckQueryEdits).
  absl::Status CompileFrom(const EditSpec& spec, const TemplateScope& scope);

  std::vector<std::string> remove_;
  std::vector<std::string> taken_;  // remove_ and rename_'s from
  std::vector<std::pair<std::string, std::string>> rename_;
  std::vector<std::pair<std::string, ValueTemplate>> replace_;
  std::vector<std::pair<std::string, ValueTemplate>> add_;
  std::vector<std::pair<std::string, ValueTemplate>> append_;
};

class HeaderEdits : public NamedEdits {
 public:
  // `spec` passed CheckHeaderEdits.
  static absl::StatusOr<HeaderEdits> Compile(const EditSpec& spec,
                                             const TemplateScope& scope);
  // Renders every value (from `context`, i.e. the fields as they are now),
  // then removes, renames, replaces, adds and appends.
  void Apply(http::HeaderMap& headers, const TemplateContext& context) const;
};

// Query parameter edits, on the query string (without '?'). Parameter
// names compare percent-decoded ('+' is not a space); what is written is
// percent-encoded; untouched parameters keep their bytes. Immutable;
// thread-safe.
class QueryEdits : public NamedEdits {
 public:
  // `spec` passed CheckQueryEdits.
  static absl::StatusOr<QueryEdits> Compile(const EditSpec& spec,
                                            const TemplateScope& scope);
  // The new query (may be empty), or nullopt when nothing changed. Values
  // are rendered before any edit.
  std::optional<std::string> Apply(std::string_view query,
                                   const TemplateContext& context) const;
};

// `text` percent-encoded for a query parameter name or value: unreserved
// characters and !$'()*,;:@/ stay, every other byte is %XX.
std::string QueryEncode(std::string_view text);

// Edits of the top-level fields of a JSON object. Immutable; thread-safe.
//
// The body is checked whole (simdjson: valid JSON, valid UTF-8) and its
// root must be an object; anything else is left as it is. Fields are
// matched by their unescaped names; every field of a name is affected
// (JSON allows repeats). Untouched fields keep their order and their bytes
// (numbers, strings, nested values exactly as written); whitespace between
// top-level fields is dropped when anything changes. Added fields go last.
class JsonBodyEdits {
 public:
  // kUnreadable: not JSON simdjson reads (invalid, or a number beyond 64
  // bits and doubles, a lone surrogate, nesting past 1024), though another
  // parser may read it, fields and all. kNotJsonObject: JSON, not an object.
  enum class Result { kChanged, kUnchanged, kNotJsonObject, kUnreadable };
  // The JSON texts of replace and add values for one exchange.
  using Values = std::vector<std::string>;

  // `spec` passed CheckJsonBodyEdits; append is unused.
  static absl::StatusOr<JsonBodyEdits> Compile(const EditSpec& spec,
                                               const TemplateScope& scope);
  bool empty() const;
  // Whether the edits take fields out (remove, rename): then a body they
  // cannot read must not go on as it is.
  bool takes_fields() const { return !remove_.empty() || !rename_.empty(); }
  Values Render(const TemplateContext& context) const;
  // Applies remove, rename, replace (only present fields), add (only absent
  // ones) to `body` with `values` from Render().
  Result Apply(const Values& values, std::string* body) const;

 private:
  // A value: a JSON text, or a template rendered into a JSON string.
  struct Value {
    std::string json;  // when `literal`
    ValueTemplate text;
    bool literal = true;
  };
  std::vector<std::string> remove_;
  std::vector<std::pair<std::string, std::string>> rename_;
  std::vector<std::pair<std::string, Value>> replace_;
  std::vector<std::pair<std::string, Value>> add_;
};

// `text` as a JSON string literal, quotes included. Bytes that are not
// UTF-8 become U+FFFD.
std::string JsonQuote(std::string_view text);

// Whether a content-type (parameters allowed) is application/json or
// application/<something>+json.
bool IsJsonContentType(std::string_view content_type);

// Whether `headers` give a JSON content-type (any of several fields).
bool IsJsonTyped(const http::HeaderMap& headers);
// The first content coding other than identity (empty list elements are
// none), or "" when the body is not encoded.
std::string EncodingOf(const http::HeaderMap& headers);
// Whether a body in `headers` can be read as JSON text: IsJsonTyped and no
// content coding.
bool IsPlainJson(const http::HeaderMap& headers);

}  // namespace sluice::policy::transformer

#endif  // SLUICE_DATAPLANE_POLICY_REQUEST_TRANSFORMER_TRANSFORM_H_
