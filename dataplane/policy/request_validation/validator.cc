// The `request-validation` policy's config rules, registered for every
// binary that validates config. The body schema is compiled here exactly as
// the proxy compiles it, so a schema sluicectl accepts is one the proxy
// can use.
#include <algorithm>
#include <memory>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "api/regex_limit.h"
#include "dataplane/policy/request_validation/json_schema.h"
#include "dataplane/policy/request_validation/request_rules.h"
#include "dataplane/policy/request_validation/request_validation_config.pb.h"
#include "re2/re2.h"

namespace sluice::policy::request_validation {
namespace {

using Rules = google::protobuf::RepeatedPtrField<v1::ParameterRule>;

// `list` is "headers" or "query_parameters".
void ValidateRules(const Rules& rules, const std::string& list, bool headers,
                   std::vector<api::PolicyConfigError>* errors) {
  if (rules.size() > kMaxParameterRules) {
    errors->push_back(
        {list, absl::StrCat("at most ", kMaxParameterRules, " rules, got ", rules.size())});
  }
  absl::flat_hash_set<std::string> names;
  for (int i = 0; i < rules.size(); ++i) {
    const v1::ParameterRule& rule = rules[i];
    const std::string field = absl::StrCat(list, "[", i, "]");
    if (headers) {
      if (!IsToken(rule.name()) || rule.name().size() > kMaxHeaderNameLength) {
        errors->push_back(
            {field + ".name", absl::StrCat("must be 1..", kMaxHeaderNameLength,
                                           " header-name characters (an RFC 9110 token), got \"",
                                           rule.name(), "\"")});
      }
    } else if (!IsQueryParameterName(rule.name())) {
      errors->push_back(
          {field + ".name", absl::StrCat("must be 1..", kMaxQueryNameLength,
                                         " bytes without '&', '=', '#', '?', spaces or control "
                                         "characters, got \"",
                                         absl::CEscape(rule.name()), "\"")});
    }
    const std::string key = headers ? absl::AsciiStrToLower(rule.name()) : rule.name();
    if (!rule.name().empty() && !names.insert(key).second) {
      errors->push_back(
          {field + ".name", absl::StrCat("'", rule.name(), "' has a rule already",
                                         headers ? " (names match in any case)" : "")});
    }
    if (rule.pattern().size() > kMaxPatternBytes) {
      errors->push_back({field + ".pattern", absl::StrCat("at most ", kMaxPatternBytes,
                                                          " bytes, got ", rule.pattern().size())});
    } else if (!rule.pattern().empty()) {
      RE2::Options options;
      options.set_log_errors(false);
      RE2 re(rule.pattern(), options);
      if (!re.ok()) {
        errors->push_back({field + ".pattern", absl::StrCat("invalid RE2 pattern: ", re.error())});
      }
    }
    if (!rule.required() && rule.pattern().empty()) {
      errors->push_back({field, "sets neither required nor pattern: the rule checks nothing"});
    }
  }
}

// Fields the gateway reads and removes before the filter chain (the
// connection, the framing, Expect, HTTP2-Settings, and the '_' spellings
// of the fields it sets, which CGI would read as them): a
// request-validation rule never sees them.
bool IsTakenBeforePolicies(std::string_view lower) {
  for (std::string_view name : {"connection", "keep-alive", "proxy-connection", "te",
                                "transfer-encoding", "upgrade", "trailer", "content-length",
                                "expect", "http2-settings"}) {
    if (lower == name) return true;
  }
  if (lower.find('_') == std::string_view::npos) return false;
  std::string dashed(lower);
  std::replace(dashed.begin(), dashed.end(), '_', '-');
  for (std::string_view name : {"content-length", "transfer-encoding", "x-forwarded-for",
                                "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
                                "x-forwarded-prefix", "x-request-id", "x-real-ip",
                                "x-forwarded-client-cert", "x-anonymous-consumer"}) {
    if (dashed == name) return true;
  }
  return dashed.rfind("x-consumer-", 0) == 0;
}

class RequestValidationValidator : public api::PolicyValidator {
 public:
  std::string name() const override { return "request-validation"; }
  const google::protobuf::Descriptor* config_type() const override {
    return v1::RequestValidationConfig::descriptor();
  }
  // Apply-only: a stored config an older build took still loads. Each
  // pattern within api/regex_limit.h's program size.
  void ValidateNew(const google::protobuf::Message& message,
                   std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::RequestValidationConfig&>(message);
    auto check = [&](const auto& rules, const std::string& list) {
      for (int i = 0; i < rules.size() && i < static_cast<int>(kMaxParameterRules); ++i) {
        const std::string& pattern = rules.Get(i).pattern();
        if (pattern.empty() || pattern.size() > kMaxPatternBytes) continue;
        if (api::RegexBudgetSpent()) return;  // refused anyway: compile no more
        RE2::Options options;
        options.set_log_errors(false);
        RE2 re(pattern, options);
        if (!re.ok()) continue;  // Validate says so
        if (std::string why = api::RegexProgramTooLarge(re); !why.empty()) {
          errors->push_back({absl::StrCat(list, "[", i, "].pattern"), why});
        }
      }
    };
    check(config.headers(), "headers");
    check(config.query_parameters(), "query_parameters");
    for (int i = 0; i < config.headers_size() && i < static_cast<int>(kMaxParameterRules); ++i) {
      const std::string& name = config.headers(i).name();
      if (IsTakenBeforePolicies(absl::AsciiStrToLower(name))) {
        errors->push_back(
            {absl::StrCat("headers[", i, "].name"),
             absl::StrCat("'", name, "' is taken off the request before policies run (the "
                          "connection and framing fields, Expect, and the '_' spellings of the "
                          "fields the gateway sets): a rule on it checks nothing (with required: "
                          "true it refuses every request)")});
      }
    }
    if (!config.body_schema().empty()) {
      auto schema = JsonSchema::CompileNew(config.body_schema());
      // Said here only when it is the new-content rule's (Validate says the
      // rest).
      if (!schema.ok() && JsonSchema::Compile(config.body_schema()).ok()) {
        errors->push_back({"body_schema", std::string(schema.status().message())});
      }
    }
  }
  void Validate(const google::protobuf::Message& message,
                std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::RequestValidationConfig&>(message);
    ValidateRules(config.headers(), "headers", /*headers=*/true, errors);
    ValidateRules(config.query_parameters(), "query_parameters", /*headers=*/false, errors);

    if (config.content_types_size() > kMaxContentTypes) {
      errors->push_back(
          {"content_types", absl::StrCat("at most ", kMaxContentTypes, " media types, got ",
                                         config.content_types_size())});
    }
    for (int i = 0; i < config.content_types_size(); ++i) {
      const std::string& type = config.content_types(i);
      const std::string field = absl::StrCat("content_types[", i, "]");
      if (type.find(';') != std::string::npos) {
        errors->push_back({field,
                           "write the media type alone (\"type/subtype\"): parameters "
                           "such as charset are ignored when matching"});
      } else if (type.find('*') != std::string::npos) {
        errors->push_back({field, "wildcards are not supported: list each media type"});
      } else if (!MediaTypeOf(type) || *MediaTypeOf(type) != absl::AsciiStrToLower(type)) {
        errors->push_back({field, absl::StrCat("must be a media type \"type/subtype\" (RFC 9110 "
                                               "tokens, at most ",
                                               kMaxMediaTypeLength, " characters), got \"",
                                               absl::CEscape(type), "\"")});
      }
    }

    if (!config.body_schema().empty()) {
      auto schema = JsonSchema::Compile(config.body_schema());
      if (!schema.ok()) errors->push_back({"body_schema", std::string(schema.status().message())});
    } else {
      if (config.body_required()) {
        errors->push_back({"body_required",
                           "needs body_schema (the body is only looked at to "
                           "validate it against the schema)"});
      }
      if (config.has_max_body_bytes()) {
        errors->push_back({"max_body_bytes",
                           "needs body_schema (without one the body is not "
                           "held and streams upstream)"});
      }
    }
    if (config.has_max_body_bytes() &&
        (config.max_body_bytes() == 0 || config.max_body_bytes() > kMaxMaxBodyBytes)) {
      errors->push_back({"max_body_bytes", absl::StrCat("must be 1..", kMaxMaxBodyBytes, ", got ",
                                                        config.max_body_bytes())});
    }
  }
};

const bool registered =
    api::RegisterPolicyValidator(std::make_unique<RequestValidationValidator>());

}  // namespace
}  // namespace sluice::policy::request_validation
