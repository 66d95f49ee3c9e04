// The `response-transformer` policy's config rules, registered for every
// binary that validates config.
#include <memory>

#include "api/policy_registry.h"
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
    transformer::CheckNewHeaderEdits(transformer::ToEditSpec(config.headers()), "headers",
                                     &found);
    for (auto& [field, text] : found) errors->push_back({field, text});
  }
};

const bool registered = api::RegisterPolicyValidator(
    std::make_unique<ResponseTransformerValidator>());

}  // namespace
}  // namespace sluice::policy::response_transformer
