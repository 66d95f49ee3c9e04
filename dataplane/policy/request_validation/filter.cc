// The `request-validation` policy's filter: checks the request's header
// fields, query parameters and content type on the head, and, with a body
// schema, the whole JSON body (held by the stream, up to max_body_bytes)
// before anything goes upstream. The first failure is answered: 400 (415
// for the content type) naming the field and the rule.
#include "dataplane/http/filter.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "dataplane/policy/auth_util.h"
#include "dataplane/policy/registry.h"
#include "dataplane/policy/request_validation/json_schema.h"
#include "dataplane/policy/request_validation/request_rules.h"
#include "dataplane/policy/request_validation/request_validation_config.pb.h"
#include "re2/re2.h"

namespace sluice::policy::request_validation {
namespace {

struct ParameterRule {
  std::string name;
  // Headers: other spellings of the name (x_tenant for x-tenant) are
  // removed, but for those other rules check (other_checked).
  bool remove_other_spellings = false;
  std::vector<std::string> other_checked;
  bool required = false;
  std::unique_ptr<RE2> pattern;  // nullptr: any value
};

struct Settings {
  std::vector<ParameterRule> headers;
  std::vector<ParameterRule> query_parameters;
  std::vector<std::string> content_types;  // lower-case "type/subtype"
  // No content_types but a body_schema: JSON's types only (application/json,
  // application/*+json), as Kong's request-validator by default.
  bool json_types_only = false;
  std::string allowed_types;               // for messages
  std::unique_ptr<const JsonSchema> body_schema;
  bool body_required = false;
  uint64_t body_limit = 0;  // bytes held for body_schema; 0 without one
  // The header rules' names: a request trailer of one of them (in any CGI
  // spelling) was never checked, and is dropped.
  std::vector<std::string> checked_headers;
};

// The `charset` parameter of a Content-Type value (quotes taken off),
// "" when it has none.
std::string CharsetOf(std::string_view value) {
  const size_t semicolon = value.find(';');
  if (semicolon == std::string_view::npos) return "";
  const absl::string_view params(value.data() + semicolon + 1, value.size() - semicolon - 1);
  for (absl::string_view param : absl::StrSplit(params, ';')) {
    param = absl::StripAsciiWhitespace(param);
    const size_t equals = param.find('=');
    if (equals == absl::string_view::npos) continue;
    if (!absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(param.substr(0, equals)), "charset")) {
      continue;
    }
    absl::string_view charset = absl::StripAsciiWhitespace(param.substr(equals + 1));
    if (charset.size() >= 2 && charset.front() == '"' && charset.back() == '"') {
      charset = charset.substr(1, charset.size() - 2);
    }
    return std::string(charset.empty() ? absl::string_view("\"\"") : charset);
  }
  return "";
}

bool Matches(const RE2& pattern, std::string_view value) {
  return RE2::FullMatch(re2::StringPiece(value.data(), value.size()), pattern);
}

// Calls fn(value, exact, form_value) with the percent-decoded value of
// every parameter an upstream may read as `name` (PHP's spellings too:
// `page[]`, `page%00`), `exact` when the percent-decoded name is `name`
// itself (`pag%65`), and the value with each `+` read as a space when it
// has one, in the query of `path_and_query`, in order, until fn returns
// false.
template <typename Fn>
void ForEachQueryValue(std::string_view path_and_query, std::string_view name, Fn fn) {
  size_t q = path_and_query.find('?');
  if (q == std::string_view::npos) return;
  const absl::string_view query(path_and_query.data() + q + 1, path_and_query.size() - q - 1);
  for (absl::string_view pair : absl::StrSplit(query, '&')) {
    const std::string_view sent(pair.data(), pair.substr(0, pair.find('=')).size());
    if (!SameParameterName(sent, name)) continue;
    // The one decoder the policies share, applied to this parameter alone.
    std::optional<std::string> value = FindQueryParameter(absl::StrCat("?", pair), name);
    if (!value) continue;
    // A `+` sent as such is a space to form decoders (PHP, Python, Go,
    // Node, the transformer's %QUERY%) and a `+` to others: the value as
    // those read it too, when it differs.
    std::optional<std::string> form_value;
    const size_t equals = pair.find('=');
    if (equals != absl::string_view::npos && pair.find('+', equals) != absl::string_view::npos) {
      form_value = FindQueryParameter(absl::StrCat("?", pair), name,
                                      ParameterNames::kAnySpelling, /*plus_is_space=*/true);
    }
    if (!fn(*value, PercentDecode(sent) == name, form_value)) return;
  }
}

class RequestValidationFilter : public http::Filter {
 public:
  explicit RequestValidationFilter(const Settings& settings) : settings_(settings) {}

  http::FilterStatus OnRequestHeaders(http::HeaderMap& headers,
                                      http::FilterCallbacks& callbacks) override {
    for (const ParameterRule& rule : settings_.headers) {
      // CGI, WSGI, Rack and PHP read `x_tenant` as `x-tenant`: a field the
      // rule did not check must not reach the upstream under that spelling.
      if (rule.remove_other_spellings) {
        headers.RemoveOtherCgiSpellings(rule.name, rule.other_checked);
      }
      bool present = false;
      for (const http::HeaderMap::Field& f : headers.fields()) {
        if (!absl::EqualsIgnoreCase(f.name, rule.name)) continue;
        present = true;
        if (rule.pattern && !Matches(*rule.pattern, f.value)) {
          return Refuse(callbacks, 400,
                        absl::StrCat("header ", rule.name, ": does not match pattern ",
                                     rule.pattern->pattern()));
        }
      }
      if (!present && rule.required) {
        return Refuse(callbacks, 400, absl::StrCat("header ", rule.name, ": is required"));
      }
    }
    for (const ParameterRule& rule : settings_.query_parameters) {
      // `?a=1;page=x`: Rack 2, Python before 3.9.2 and Go before 1.17 split
      // at ';' too and read a `page` this rule never saw.
      if (QueryParameterAfterSemicolon(callbacks.info().path, rule.name)) {
        return Refuse(callbacks, 400,
                      absl::StrCat("query ", rule.name, ": given after a ';', where an upstream "
                                   "that splits at ';' reads it unchecked"));
      }
      bool present = false;
      bool matches = true;
      // Every spelling is checked; only the name itself makes it present
      // (a Python, Go or Node upstream reads `page[x]` as no `page`).
      ForEachQueryValue(callbacks.info().path, rule.name,
                        [&](const std::string& value, bool exact,
                            const std::optional<std::string>& form_value) {
        present = present || exact;
        // Read either way (else `a+OR+1` passes where `a%20OR%201` does not).
        matches = rule.pattern == nullptr ||
                  (Matches(*rule.pattern, value) &&
                   (!form_value || Matches(*rule.pattern, *form_value)));
        return matches;
      });
      if (!matches) {
        return Refuse(callbacks, 400,
                      absl::StrCat("query ", rule.name, ": does not match pattern ",
                                   rule.pattern->pattern()));
      }
      if (!present && rule.required) {
        return Refuse(callbacks, 400, absl::StrCat("query ", rule.name, ": is required"));
      }
    }
    const bool has_body = callbacks.info().request_content_length != 0;
    if (has_body && (!settings_.content_types.empty() || settings_.json_types_only)) {
      const std::string* value = headers.Get("content-type");
      // A singleton field (RFC 9110 8.3): with two, this check would read
      // one and the upstream perhaps the other.
      if (headers.Count("content-type") > 1) {
        return Refuse(callbacks, 400, "header content-type: is given more than once");
      }
      if (value == nullptr) {
        return Refuse(callbacks, 415,
                      absl::StrCat("header content-type: is required with a body "
                                   "(allowed: ",
                                   settings_.allowed_types, ")"));
      }
      std::optional<std::string> media = MediaTypeOf(*value);
      bool allowed = false;
      for (const std::string& type : settings_.content_types) {
        allowed = allowed || (media && *media == type);
      }
      if (settings_.json_types_only && media) {
        allowed = *media == "application/json" ||
                  (absl::StartsWith(*media, "application/") && absl::EndsWith(*media, "+json"));
      }
      if (!allowed) {
        return Refuse(
            callbacks, 415,
            absl::StrCat("header content-type: ", media ? *media : std::string("the value"),
                         " is not allowed (allowed: ", settings_.allowed_types, ")"));
      }
    }
    if (has_body && settings_.body_schema) {
      // The schema reads the body as UTF-8 (RFC 8259 8.1): one labelled
      // otherwise would be checked as one text and read upstream as another.
      if (const std::string* type = headers.Get("content-type"); type != nullptr) {
        if (std::string charset = CharsetOf(*type); !charset.empty() &&
            !absl::EqualsIgnoreCase(charset, "utf-8") &&
            !absl::EqualsIgnoreCase(charset, "us-ascii")) {
          return Refuse(callbacks, 415,
                        absl::StrCat("header content-type: charset=", charset,
                                     " is not accepted: the body schema reads the body as "
                                     "UTF-8 (RFC 8259)"));
        }
      }
      // The schema reads the body as sent: an encoded one (gzip) is not
      // JSON it can check. RFC 9110 15.5.16: 415, naming what is accepted.
      for (const http::HeaderMap::Field& f : headers.fields()) {
        if (!absl::EqualsIgnoreCase(f.name, "content-encoding")) continue;
        for (absl::string_view coding : absl::StrSplit(f.value, ',')) {
          coding = absl::StripAsciiWhitespace(coding);
          if (coding.empty() || absl::EqualsIgnoreCase(coding, "identity")) continue;
          http::HeaderMap reply;
          reply.Add("accept-encoding", "identity");
          callbacks.SendLocalReply(
              415,
              absl::StrCat("header content-encoding: ", coding,
                           " is not accepted: the body schema checks an unencoded body"),
              reply);
          return http::FilterStatus::kStopLocalReply;
        }
      }
    }
    if (!has_body && settings_.body_schema && settings_.body_required) {
      return Refuse(callbacks, 400, "body: is required");
    }
    return http::FilterStatus::kContinue;
  }

  // Only with a body schema (request_body_limit() > 0).
  http::FilterStatus OnRequestBody(std::string& body, http::FilterCallbacks& callbacks) override {
    if (settings_.body_schema == nullptr) return http::FilterStatus::kContinue;
    // A chunked (or HTTP/2) body may turn out empty: as no body.
    if (body.empty()) {
      if (settings_.body_required) return Refuse(callbacks, 400, "body: is required");
      return http::FilterStatus::kContinue;
    }
    absl::Status status = settings_.body_schema->Validate(
        body, body.capacity() - body.size() >= JsonSchema::kPadding);
    if (!status.ok()) {
      return Refuse(callbacks, 400,
                    std::string_view(status.message().data(), status.message().size()));
    }
    return http::FilterStatus::kContinue;
  }

 private:
  http::FilterStatus Refuse(http::FilterCallbacks& callbacks, int status,
                            std::string_view message) {
    callbacks.SendLocalReply(status, message, http::HeaderMap());
    return http::FilterStatus::kStopLocalReply;
  }

  const Settings& settings_;
};

class RequestValidationFilterFactory : public http::FilterFactory {
 public:
  explicit RequestValidationFilterFactory(Settings settings) : settings_(std::move(settings)) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<RequestValidationFilter>(settings_);
  }
  std::string_view policy_name() const override { return "request-validation"; }
  http::FilterPhase phase() const override { return http::FilterPhase::kValidation; }
  uint64_t request_body_limit() const override { return settings_.body_limit; }
  const std::vector<std::string>& removed_request_fields() const override {
    return settings_.checked_headers;
  }

 private:
  const Settings settings_;
};

absl::StatusOr<std::vector<ParameterRule>> CompileRules(
    const google::protobuf::RepeatedPtrField<v1::ParameterRule>& rules) {
  std::vector<ParameterRule> out;
  for (const v1::ParameterRule& rule : rules) {
    ParameterRule compiled;
    compiled.name = rule.name();
    compiled.required = rule.required();
    if (!rule.pattern().empty()) {
      RE2::Options options;
      options.set_log_errors(false);
      compiled.pattern = std::make_unique<RE2>(rule.pattern(), options);
      if (!compiled.pattern->ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(rule.name(), ": invalid RE2 pattern: ", compiled.pattern->error()));
      }
    }
    out.push_back(std::move(compiled));
  }
  return out;
}

class RequestValidationPolicyFactory : public PolicyFactory {
 public:
  std::string name() const override { return "request-validation"; }
  absl::StatusOr<std::shared_ptr<const http::FilterFactory>> Compile(
      const google::protobuf::Message& message) const override {
    const auto& config = static_cast<const v1::RequestValidationConfig&>(message);
    Settings s;
    auto headers = CompileRules(config.headers());
    if (!headers.ok()) return headers.status();
    s.headers = std::move(*headers);
    for (const ParameterRule& rule : s.headers) s.checked_headers.push_back(rule.name);
    for (ParameterRule& rule : s.headers) {
      if (rule.name.find_first_of("-_") == std::string::npos) continue;
      rule.remove_other_spellings = true;
      for (const ParameterRule& other : s.headers) {
        if (&other != &rule && http::SameCgiName(other.name, rule.name)) {
          rule.other_checked.push_back(other.name);
        }
      }
    }
    auto query = CompileRules(config.query_parameters());
    if (!query.ok()) return query.status();
    s.query_parameters = std::move(*query);
    for (const std::string& type : config.content_types()) {
      std::optional<std::string> media = MediaTypeOf(type);
      if (!media) return absl::InvalidArgumentError(absl::StrCat("content type ", type));
      s.content_types.push_back(std::move(*media));
    }
    s.allowed_types = absl::StrJoin(s.content_types, ", ");
    if (!config.body_schema().empty() && s.content_types.empty()) {
      s.json_types_only = true;
      s.allowed_types = "application/json, application/*+json";
    }
    if (!config.body_schema().empty()) {
      auto schema = JsonSchema::Compile(config.body_schema());
      if (!schema.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("body_schema: ", schema.status().message()));
      }
      s.body_schema = std::move(*schema);
      s.body_required = config.body_required();
      s.body_limit = config.has_max_body_bytes() ? config.max_body_bytes() : kDefaultMaxBodyBytes;
    }
    return std::shared_ptr<const http::FilterFactory>(
        std::make_shared<RequestValidationFilterFactory>(std::move(s)));
  }
};

const bool registered = RegisterPolicyFactory(std::make_unique<RequestValidationPolicyFactory>());

}  // namespace
}  // namespace sluice::policy::request_validation
