// The `basic-auth` policy's config rules, registered for every binary that
// validates config.
#include <memory>

#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "dataplane/policy/basic_auth/basic_auth_config.pb.h"

namespace sluice::policy::basic_auth {
namespace {

constexpr size_t kMaxRealmLength = 128;

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
  void Validate(const google::protobuf::Message& message,
                std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::BasicAuthConfig&>(message);
    if (config.realm().size() > kMaxRealmLength ||
        config.realm().find_first_of("\"\\\r\n") != std::string::npos) {
      errors->push_back({"realm", absl::StrCat("at most ", kMaxRealmLength,
                                               " characters, without quotes, backslashes or "
                                               "line breaks")});
    }
  }
  // A control character in the realm breaks the challenge: HTTP/1 would
  // send it raw (RFC 9110 5.5 forbids it), HTTP/2 drops the field and the
  // 401 goes without the WWW-Authenticate RFC 9110 15.5.2 requires.
  // Earlier builds accepted one, so it is refused at apply only.
  void ValidateNew(const google::protobuf::Message& message,
                   std::vector<api::PolicyConfigError>* errors) const override {
    const std::string& realm = static_cast<const v1::BasicAuthConfig&>(message).realm();
    for (size_t i = 0; i < realm.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(realm[i]);
      if ((c < 0x20 && c != '\t') || c == 0x7f) {
        errors->push_back({"realm", absl::StrCat("has a control character at position ", i + 1,
                                                 " (byte 0x", absl::Hex(c, absl::kZeroPad2),
                                                 "); a challenge cannot carry it")});
        return;
      }
    }
  }
};

const bool registered = api::RegisterPolicyValidator(std::make_unique<BasicAuthValidator>());

}  // namespace
}  // namespace sluice::policy::basic_auth
