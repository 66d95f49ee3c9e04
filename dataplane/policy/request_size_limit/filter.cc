// The `request-size-limit` policy's filter: 413 for a request body over
// max_bytes, on the declared length first, else while the body streams.
#include <memory>

#include "absl/strings/str_cat.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/registry.h"
#include "dataplane/policy/request_size_limit/request_size_limit_config.pb.h"

namespace sluice::policy::request_size_limit {
namespace {

class RequestSizeLimitFilter : public http::Filter {
 public:
  explicit RequestSizeLimitFilter(uint64_t max_bytes) : max_bytes_(max_bytes) {}

  http::FilterStatus OnRequestHeaders(http::HeaderMap&, http::FilterCallbacks& callbacks) override {
    int64_t declared = callbacks.info().request_content_length;
    if (declared >= 0 && static_cast<uint64_t>(declared) > max_bytes_) {
      return Refuse(callbacks, absl::StrCat("request body of ", declared,
                                            " bytes is over this route's limit of ", max_bytes_));
    }
    return http::FilterStatus::kContinue;
  }

  http::FilterStatus OnRequestData(std::string_view data, bool,
                                   http::FilterCallbacks& callbacks) override {
    seen_ += data.size();
    if (seen_ > max_bytes_) {
      return Refuse(callbacks,
                    absl::StrCat("request body over this route's limit of ", max_bytes_, " bytes"));
    }
    return http::FilterStatus::kContinue;
  }

 private:
  http::FilterStatus Refuse(http::FilterCallbacks& callbacks, const std::string& message) {
    callbacks.SendLocalReply(413, message, http::HeaderMap());
    return http::FilterStatus::kStopLocalReply;
  }

  const uint64_t max_bytes_;
  uint64_t seen_ = 0;
};

class RequestSizeLimitFilterFactory : public http::FilterFactory {
 public:
  explicit RequestSizeLimitFilterFactory(uint64_t max_bytes) : max_bytes_(max_bytes) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<RequestSizeLimitFilter>(max_bytes_);
  }
  std::string_view policy_name() const override { return "request-size-limit"; }
  http::FilterPhase phase() const override { return http::FilterPhase::kValidation; }
  uint64_t request_body_max() const override { return max_bytes_; }

 private:
  const uint64_t max_bytes_;
};

class RequestSizeLimitPolicyFactory : public PolicyFactory {
 public:
  std::string name() const override { return "request-size-limit"; }
  absl::StatusOr<std::shared_ptr<const http::FilterFactory>> Compile(
      const google::protobuf::Message& message) const override {
    const auto& config = static_cast<const v1::RequestSizeLimitConfig&>(message);
    return std::shared_ptr<const http::FilterFactory>(
        std::make_shared<RequestSizeLimitFilterFactory>(config.max_bytes()));
  }
};

const bool registered =
    RegisterPolicyFactory(std::make_unique<RequestSizeLimitPolicyFactory>());

}  // namespace
}  // namespace sluice::policy::request_size_limit
