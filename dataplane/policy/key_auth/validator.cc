// The `key-auth` policy's config rules, registered for every binary that
// validates config.
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "dataplane/http/header_map.h"
#include "dataplane/policy/key_auth/key_auth_config.pb.h"
#include "dataplane/policy/realm_rules.h"

namespace sluice::policy::key_auth {
namespace {

constexpr int kMaxKeyNames = 8;
constexpr size_t kMaxKeyNameLength = 64;

bool IsTokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

class KeyAuthValidator : public api::PolicyValidator {
 public:
  std::string name() const override { return "key-auth"; }
  const google::protobuf::Descriptor* config_type() const override {
    return v1::KeyAuthConfig::descriptor();
  }
  void ConsumerReferences(const google::protobuf::Message& message,
                          std::vector<std::pair<std::string, std::string>>* refs) const override {
    const auto& config = static_cast<const v1::KeyAuthConfig&>(message);
    if (!config.anonymous().empty()) refs->emplace_back("anonymous", config.anonymous());
  }
  void RemovedRequestFields(const google::protobuf::Message& message,
                            std::vector<std::string>* fields) const override {
    const auto& config = static_cast<const v1::KeyAuthConfig&>(message);
    if (config.keep_credentials() || (config.has_key_in_header() && !config.key_in_header())) {
      return;
    }
    for (const std::string& name : config.key_names()) fields->push_back(absl::AsciiStrToLower(name));
    if (config.key_names_size() == 0) fields->push_back("apikey");
  }
  void Validate(const google::protobuf::Message& message,
                std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::KeyAuthConfig&>(message);
    if (config.key_names_size() > kMaxKeyNames) {
      errors->push_back({"key_names", absl::StrCat("at most ", kMaxKeyNames, " names, got ",
                                                   config.key_names_size())});
    }
    for (int i = 0; i < config.key_names_size(); ++i) {
      const std::string& n = config.key_names(i);
      bool ok = !n.empty() && n.size() <= kMaxKeyNameLength;
      for (char c : n) ok = ok && IsTokenChar(c);
      if (!ok) {
        errors->push_back({absl::StrCat("key_names[", i, "]"),
                           absl::StrCat("must be 1..", kMaxKeyNameLength,
                                        " header-name characters, got \"", n, "\"")});
      }
    }
    if (config.has_key_in_header() && config.has_key_in_query() && !config.key_in_header() &&
        !config.key_in_query()) {
      errors->push_back({"key_in_header", "key_in_header and key_in_query are both false: "
                                          "no key could ever be found"});
    }
    CheckRealm(config.realm(), errors);
  }
  void ValidateNew(const google::protobuf::Message& message,
                   std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::KeyAuthConfig&>(message);
    CheckRealmNew(config.realm(), errors);
    // A key header the gateway sets or removes before the policy runs (or
    // that frames the message) never holds the client's key.
    const bool in_header = !config.has_key_in_header() || config.key_in_header();
    for (int i = 0; i < config.key_names_size() && in_header; ++i) {
      if (http::IsGatewayOrFramingField(config.key_names(i))) {
        errors->push_back({absl::StrCat("key_names[", i, "]"),
                           absl::StrCat("\"", config.key_names(i),
                                        "\" is set by the gateway or frames the message: no key "
                                        "could be read from it; choose another name")});
      }
    }
  }
};

const bool registered = api::RegisterPolicyValidator(std::make_unique<KeyAuthValidator>());

}  // namespace
}  // namespace sluice::policy::key_auth
