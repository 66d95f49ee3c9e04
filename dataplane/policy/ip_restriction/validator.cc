// The `ip-restriction` policy's config rules, registered for every binary
// that validates config.
#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "dataplane/policy/ip_restriction/cidr.h"
#include "dataplane/policy/ip_restriction/ip_restriction_config.pb.h"

namespace sluice::policy::ip_restriction {
namespace {

constexpr int kMaxEntries = 1024;
constexpr size_t kMaxMessageBytes = 256;

class IpRestrictionValidator : public api::PolicyValidator {
 public:
  std::string name() const override { return "ip-restriction"; }
  const google::protobuf::Descriptor* config_type() const override {
    return v1::IpRestrictionConfig::descriptor();
  }
  void Validate(const google::protobuf::Message& message,
                std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::IpRestrictionConfig&>(message);
    if (config.allow_size() == 0 && config.deny_size() == 0) {
      errors->push_back({"allow", "set at least one of allow and deny"});
    }
    CheckList("allow", config.allow(), errors);
    CheckList("deny", config.deny(), errors);
    if (config.status() != 0 && (config.status() < 400 || config.status() > 599)) {
      errors->push_back({"status", absl::StrCat("must be 400..599, got ", config.status())});
    }
    const std::string& text = config.message();
    bool control = std::any_of(text.begin(), text.end(), [](char c) {
      return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
    });
    if (config.message().size() > kMaxMessageBytes || control) {
      errors->push_back({"message", absl::StrCat("at most ", kMaxMessageBytes,
                                                 " bytes, without control characters")});
    }
  }

  // A 401 must carry a WWW-Authenticate challenge and a 407 a
  // Proxy-Authenticate one (RFC 9110 15.5.2, 15.5.8), which this policy has
  // none of: 403 says "not from there". Earlier builds accepted them.
  void ValidateNew(const google::protobuf::Message& message,
                   std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::IpRestrictionConfig&>(message);
    if (config.status() == 401 || config.status() == 407) {
      errors->push_back({"status", absl::StrCat("a ", config.status(),
                                                " answer must carry an authentication challenge, "
                                                "which ip-restriction has none of; use 403 (the "
                                                "default) or another 4xx/5xx")});
    }
  }

 private:
  static void CheckList(const char* list,
                        const google::protobuf::RepeatedPtrField<std::string>& entries,
                        std::vector<api::PolicyConfigError>* errors) {
    if (entries.size() > kMaxEntries) {
      errors->push_back(
          {list, absl::StrCat("at most ", kMaxEntries, " entries, got ", entries.size())});
      return;  // one error, not a thousand
    }
    for (int i = 0; i < entries.size(); ++i) {
      absl::StatusOr<CidrBlock> block = ParseCidrBlock(entries[i]);
      if (!block.ok()) {
        errors->push_back({absl::StrCat(list, "[", i, "]"), std::string(block.status().message())});
      }
    }
  }
};

const bool registered = api::RegisterPolicyValidator(std::make_unique<IpRestrictionValidator>());

}  // namespace
}  // namespace sluice::policy::ip_restriction
