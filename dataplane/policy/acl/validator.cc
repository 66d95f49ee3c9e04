// The `acl` policy's config rules, registered for every binary that
// validates config.
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "dataplane/policy/acl/acl_config.pb.h"

namespace sluice::policy::acl {
namespace {

constexpr int kMaxGroups = 64;
constexpr size_t kMaxGroupLength = 128;

class AclValidator : public api::PolicyValidator {
 public:
  std::string name() const override { return "acl"; }
  const google::protobuf::Descriptor* config_type() const override {
    return v1::AclConfig::descriptor();
  }
  void Validate(const google::protobuf::Message& message,
                std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::AclConfig&>(message);
    if ((config.allow_size() == 0) == (config.deny_size() == 0)) {
      errors->push_back({"allow", "set exactly one of allow and deny"});
    }
    for (const char* list : {"allow", "deny"}) {
      const auto& groups = std::string_view(list) == "allow" ? config.allow() : config.deny();
      if (groups.size() > kMaxGroups) {
        errors->push_back({list, absl::StrCat("at most ", kMaxGroups, " groups, got ",
                                              groups.size())});
      }
      for (int i = 0; i < groups.size(); ++i) {
        if (groups[i].empty() || groups[i].size() > kMaxGroupLength) {
          errors->push_back({absl::StrCat(list, "[", i, "]"),
                             absl::StrCat("must be 1..", kMaxGroupLength, " characters")});
        }
      }
    }
  }
  // A Consumer's groups take these characters only: another name could
  // never match. Earlier builds accepted such a group (it allowed no one,
  // or denied no one).
  void ValidateNew(const google::protobuf::Message& message,
                   std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::AclConfig&>(message);
    for (const char* list : {"allow", "deny"}) {
      const auto& groups = std::string_view(list) == "allow" ? config.allow() : config.deny();
      for (int i = 0; i < groups.size(); ++i) {
        for (char c : groups[i]) {
          if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' &&
              c != '.' && c != '@') {
            errors->push_back({absl::StrCat(list, "[", i, "]"),
                               absl::StrCat("'", groups[i],
                                            "' would match no Consumer group (they take only "
                                            "letters, digits, '-', '_', '.' and '@')")});
            break;
          }
        }
      }
    }
  }
};

const bool registered = api::RegisterPolicyValidator(std::make_unique<AclValidator>());

}  // namespace
}  // namespace sluice::policy::acl
