// The `request-size-limit` policy's config rules, registered for every
// binary that validates config.
#include <memory>

#include "absl/strings/str_cat.h"
#include "api/policy_registry.h"
#include "dataplane/policy/request_size_limit/request_size_limit_config.pb.h"

namespace sluice::policy::request_size_limit {
namespace {

constexpr uint64_t kMaxLimit = uint64_t{16} << 30;

class RequestSizeLimitValidator : public api::PolicyValidator {
 public:
  std::string name() const override { return "request-size-limit"; }
  const google::protobuf::Descriptor* config_type() const override {
    return v1::RequestSizeLimitConfig::descriptor();
  }
  void Validate(const google::protobuf::Message& message,
                std::vector<api::PolicyConfigError>* errors) const override {
    const auto& config = static_cast<const v1::RequestSizeLimitConfig&>(message);
    if (config.max_bytes() == 0 || config.max_bytes() > kMaxLimit) {
      errors->push_back({"max_bytes", absl::StrCat("must be 1..", kMaxLimit, ", got ",
                                                   config.max_bytes())});
    }
  }
};

const bool registered =
    api::RegisterPolicyValidator(std::make_unique<RequestSizeLimitValidator>());

}  // namespace
}  // namespace sluice::policy::request_size_limit
