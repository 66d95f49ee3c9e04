// The `request-transformer` policy's config rules, registered for every
// binary that validates config.
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "api/regex_limit.h"
#include "dataplane/policy/headers/headers_policy.h"
#include "dataplane/policy/request_transformer/path_rewrite.h"
#include "dataplane/policy/request_transformer/request_transformer_config.pb.h"
#include "dataplane/policy/request_transformer/transform.h"
#include "re2/re2.h"

namespace sluice::policy::request_transformer {
namespace {

class RequestTransformerValidator : public api::PolicyValidator {
 public:
  std::string name() const override { return "request-transformer"; }
  const google::protobuf::Descriptor* config_type() const override {
    return v1::RequestTransformerConfig::descriptor();
  }
  void Validate(const google::protobuf::Message& message,
                std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config =
        static_cast<const v1::RequestTransformerConfig&>(message);
    transformer::ConfigErrors found;
    transformer::TemplateScope scope;
    scope.request_fields = true;
    scope.captures = PathRewrite::Check(
        config.path().regex(), config.path().rewrite(), "path", &found);
    transformer::CheckHeaderEdits(transformer::ToEditSpec(config.headers()),
                                  "headers",
                                  /*request=*/true, scope, &found);
    transformer::CheckQueryEdits(transformer::ToEditSpec(config.query()),
                                 "query", scope, &found);
    transformer::CheckJsonBodyEdits(transformer::ToEditSpec(config.body()),
                                    config.body().max_body_bytes(), "body",
                                    scope, &found);
    for (auto& [field, text] : found) errors->push_back({field, text});
  }
  // Apply-only: a stored config an older build took still loads.
  void ValidateNew(const google::protobuf::Message& message,
                   std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::RequestTransformerConfig&>(message);
    const auto& replace = config.headers().replace();
    transformer::ConfigErrors found;
    if (!config.path().regex().empty() && !api::RegexBudgetSpent()) {
      RE2::Options options;
      options.set_log_errors(false);
      const RE2 re(config.path().regex(), options);
      if (std::string why = re.ok() ? api::RegexProgramTooLarge(re) : std::string();
          !why.empty()) {
        found.emplace_back("path.regex", why);
      }
    }
    const transformer::EditSpec spec = transformer::ToEditSpec(config.headers());
    transformer::CheckNewHeaderEdits(spec, "headers", &found);
    for (size_t i = 0; i < spec.rename.size(); ++i) {
      headers::CheckNewRequestFieldName(spec.rename[i].second,
                                        absl::StrCat("headers.rename[", i, "].to"), &found);
    }
    for (const auto& [list, what] : {std::pair{&spec.replace, "replace"},
                                     std::pair{&spec.add, "add"},
                                     std::pair{&spec.append, "append"}}) {
      for (size_t i = 0; i < list->size(); ++i) {
        headers::CheckNewRequestFieldName((*list)[i].first,
                                          absl::StrCat("headers.", what, "[", i, "].name"),
                                          &found);
      }
    }
    for (int i = 0; i < replace.size(); ++i) {
      if (absl::EqualsIgnoreCase(replace.Get(i).name(), "host")) {
        headers::CheckHostValue(replace.Get(i).value(),
                                absl::StrCat("headers.replace[", i, "].value"), &found);
      }
    }
    for (auto& [field, text] : found) errors->push_back({field, text});
  }
};

const bool registered = api::RegisterPolicyValidator(
    std::make_unique<RequestTransformerValidator>());

}  // namespace
}  // namespace sluice::policy::request_transformer
