// The `ip-restriction` policy's filter: refuses a client whose address is
// in `deny`, or not in a non-empty `allow`. The address is parsed once per
// request (inet_pton) and looked up in two CidrSets compiled with the
// config: O(log n) per list, whatever its size.
#include "dataplane/http/filter.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "dataplane/policy/ip_restriction/cidr.h"
#include "dataplane/policy/ip_restriction/ip_restriction_config.pb.h"
#include "dataplane/policy/registry.h"

namespace sluice::policy::ip_restriction {
namespace {

constexpr int kDefaultStatus = 403;
constexpr char kDefaultMessage[] = "your IP address is not allowed";

struct Settings {
  CidrSet allow;
  CidrSet deny;
  bool allow_listed = false;  // `allow` is non-empty: only its clients pass
  int status = kDefaultStatus;
  std::string message;
};

class IpRestrictionFilter : public http::Filter {
 public:
  explicit IpRestrictionFilter(const Settings& settings) : settings_(settings) {}

  http::FilterStatus OnRequestHeaders(http::HeaderMap&, http::FilterCallbacks& callbacks) override {
    // An address that does not parse (none should) is refused: a
    // restriction fails closed.
    std::optional<IpAddress> client = ParseIpAddress(callbacks.info().client_ip);
    if (client && !settings_.deny.Contains(*client) &&
        (!settings_.allow_listed || settings_.allow.Contains(*client))) {
      return http::FilterStatus::kContinue;
    }
    callbacks.SendLocalReply(settings_.status, settings_.message, http::HeaderMap());
    return http::FilterStatus::kStopLocalReply;
  }

 private:
  const Settings& settings_;
};

class IpRestrictionFilterFactory : public http::FilterFactory {
 public:
  explicit IpRestrictionFilterFactory(Settings settings) : settings_(std::move(settings)) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<IpRestrictionFilter>(settings_);
  }
  std::string_view policy_name() const override { return "ip-restriction"; }
  // Before authentication: a refused address costs no credential check.
  http::FilterPhase phase() const override { return http::FilterPhase::kAccess; }

 private:
  const Settings settings_;
};

class IpRestrictionPolicyFactory : public PolicyFactory {
 public:
  std::string name() const override { return "ip-restriction"; }
  absl::StatusOr<std::shared_ptr<const http::FilterFactory>> Compile(
      const google::protobuf::Message& message) const override {
    const auto& config = static_cast<const v1::IpRestrictionConfig&>(message);
    Settings s;
    absl::StatusOr<CidrSet> allow = CompileList("allow", config.allow());
    if (!allow.ok()) return allow.status();
    absl::StatusOr<CidrSet> deny = CompileList("deny", config.deny());
    if (!deny.ok()) return deny.status();
    s.allow = *std::move(allow);
    s.deny = *std::move(deny);
    s.allow_listed = config.allow_size() > 0;
    s.status = config.status() != 0 ? static_cast<int>(config.status()) : kDefaultStatus;
    s.message = config.message().empty() ? kDefaultMessage : config.message();
    return std::shared_ptr<const http::FilterFactory>(
        std::make_shared<IpRestrictionFilterFactory>(std::move(s)));
  }

 private:
  static absl::StatusOr<CidrSet> CompileList(
      const char* list, const google::protobuf::RepeatedPtrField<std::string>& entries) {
    std::vector<CidrBlock> blocks;
    blocks.reserve(entries.size());
    for (int i = 0; i < entries.size(); ++i) {
      absl::StatusOr<CidrBlock> block = ParseCidrBlock(entries[i]);
      if (!block.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(list, "[", i, "]: ", std::string(block.status().message())));
      }
      blocks.push_back(*block);
    }
    return CidrSet(blocks);
  }
};

const bool registered = RegisterPolicyFactory(std::make_unique<IpRestrictionPolicyFactory>());

}  // namespace
}  // namespace sluice::policy::ip_restriction
