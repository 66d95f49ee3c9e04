// The `basic-auth` policy's config rules, registered for every binary that
// validates config.
#include <memory>

#include "api/policy_registry.h"
#include "dataplane/policy/basic_auth/basic_auth_config.pb.h"
#include "dataplane/policy/realm_rules.h"

namespace sluice::policy::basic_auth {
namespace {

class BasicAuthValidator : public api::PolicyValidator {
 public:
  std::string name() const override { return "basic-auth"; }
  const google::protobuf::Descriptor* config_type() const override {
    return v1::BasicAuthConfig::descriptor();
  }
  void ConsumerReferences(const google::protobuf::Message& message,
                          std::vector<std::pair<std::string, std::string>>* refs) const override {
    const auto& config = static_cast<const v1::BasicAuthConfig&>(message);
    if (!config.anonymous().empty()) refs->emplace_back("anonymous", config.anonymous());
  }
  void RemovedRequestFields(const google::protobuf::Message& message,
                            std::vector<std::string>* fields) const override {
    const auto& config = static_cast<const v1::BasicAuthConfig&>(message);
    if (!config.keep_credentials()) fields->push_back("authorization");
  }
  void Validate(const google::protobuf::Message& message,
                std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::BasicAuthConfig&>(message);
    CheckRealm(config.realm(), errors);
  }
  void ValidateNew(const google::protobuf::Message& message,
                   std::vector<api::PolicyConfigError>* errors) const override {
    CheckRealmNew(static_cast<const v1::BasicAuthConfig&>(message).realm(), errors);
  }
};

const bool registered = api::RegisterPolicyValidator(std::make_unique<BasicAuthValidator>());

}  // namespace
}  // namespace sluice::policy::basic_auth
