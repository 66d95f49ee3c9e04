// The `response-transformer` policy's config rules, registered for every
// binary that validates config.
#include <memory>

#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "dataplane/policy/headers/headers_policy.h"
#include "dataplane/policy/request_transformer/transform.h"
#include "dataplane/policy/response_transformer/response_transformer_config.pb.h"

namespace sluice::policy::response_transformer {
namespace {

class ResponseTransformerValidator : public api::PolicyValidator {
 public:
  std::string name() const override { return "response-transformer"; }
  const google::protobuf::Descriptor* config_type() const override {
    return v1::ResponseTransformerConfig::descriptor();
  }
  void Validate(const google::protobuf::Message& message,
                std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config =
        static_cast<const v1::ResponseTransformerConfig&>(message);
    transformer::ConfigErrors found;
    const transformer::TemplateScope
        scope;  // the stream's facts and the consumer
    transformer::CheckHeaderEdits(transformer::ToEditSpec(config.headers()),
                                  "headers",
                                  /*request=*/false, scope, &found);
    transformer::CheckJsonBodyEdits(transformer::ToEditSpec(config.body()),
                                    config.body().max_body_bytes(), "body",
                                    scope, &found);
    for (auto& [field, text] : found) errors->push_back({field, text});
  }
  // Apply-only: a stored config an older build took still loads.
  void ValidateNew(const google::protobuf::Message& message,
                   std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::ResponseTransformerConfig&>(message);
    transformer::ConfigErrors found;
    const transformer::EditSpec spec = transformer::ToEditSpec(config.headers());
    transformer::CheckNewHeaderEdits(spec, "headers", &found);
    // gRPC's status fields. A removed field (and a renamed one's old name)
    // is taken out of trailers too (removed_response_fields).
    using headers::ResponseEdit;
    for (size_t i = 0; i < spec.remove.size(); ++i) {
      headers::CheckNewResponseFieldName(spec.remove[i], absl::StrCat("headers.remove[", i, "]"),
                                         ResponseEdit::kRemove, &found);
    }
    for (size_t i = 0; i < spec.rename.size(); ++i) {
      std::string field = absl::StrCat("headers.rename[", i, "]");
      headers::CheckNewResponseFieldName(spec.rename[i].first, field + ".from",
                                         ResponseEdit::kRemove, &found);
      headers::CheckNewResponseFieldName(spec.rename[i].second, field + ".to",
                                         ResponseEdit::kWrite, &found);
    }
    for (const auto& [list, what] : {std::pair{&spec.replace, "replace"},
                                     std::pair{&spec.add, "add"},
                                     std::pair{&spec.append, "append"}}) {
      for (size_t i = 0; i < list->size(); ++i) {
        headers::CheckNewResponseFieldName((*list)[i].first,
                                           absl::StrCat("headers.", what, "[", i, "].name"),
                                           ResponseEdit::kWrite, &found);
      }
    }
    for (auto& [field, text] : found) errors->push_back({field, text});
  }
};

const bool registered = api::RegisterPolicyValidator(
    std::make_unique<ResponseTransformerValidator>());

}  // namespace
}  // namespace sluice::policy::response_transformer
