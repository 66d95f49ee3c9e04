// The `acl` policy's filter: 403 unless the consumer an authentication
// policy identified is in an allowed group (or in no denied group); 403 too
// when no authentication policy identified one (the route has none that
// names consumers: authenticating again cannot help, so not a 401, which
// would also need a challenge to offer, RFC 9110 15.5.2).
#include <memory>
#include <string>
#include <vector>

#include "dataplane/auth/consumers.h"
#include "dataplane/http/filter.h"
#include "dataplane/policy/acl/acl_config.pb.h"
#include "dataplane/policy/registry.h"

namespace sluice::policy::acl {
namespace {

struct Settings {
  std::vector<std::string> groups;
  bool allow = true;  // groups is the allow list (else the deny list)
};

class AclFilter : public http::Filter {
 public:
  explicit AclFilter(const Settings& settings) : settings_(settings) {}

  http::FilterStatus OnRequestHeaders(http::HeaderMap&, http::FilterCallbacks& callbacks) override {
    const auth::Consumer* consumer = callbacks.info().consumer;
    if (consumer == nullptr) {
      // A jwt policy without consumer_claim lets a token through without
      // naming a consumer: groups cannot be checked.
      callbacks.SendLocalReply(403, "no consumer was identified (acl needs an authentication "
                                    "policy on the route that names one: key-auth, basic-auth, "
                                    "or jwt with consumer_claim)",
                               http::HeaderMap());
      return http::FilterStatus::kStopLocalReply;
    }
    bool listed = false;
    for (const std::string& g : settings_.groups) {
      if (consumer->InGroup(g)) {
        listed = true;
        break;
      }
    }
    if (listed != settings_.allow) {
      callbacks.SendLocalReply(403, "you cannot consume this service", http::HeaderMap());
      return http::FilterStatus::kStopLocalReply;
    }
    return http::FilterStatus::kContinue;
  }

 private:
  const Settings& settings_;
};

class AclFilterFactory : public http::FilterFactory {
 public:
  explicit AclFilterFactory(Settings settings) : settings_(std::move(settings)) {}
  std::unique_ptr<http::Filter> CreateFilter() const override {
    return std::make_unique<AclFilter>(settings_);
  }
  std::string_view policy_name() const override { return "acl"; }
  http::FilterPhase phase() const override { return http::FilterPhase::kAuthorization; }

 private:
  const Settings settings_;
};

class AclPolicyFactory : public PolicyFactory {
 public:
  std::string name() const override { return "acl"; }
  absl::StatusOr<std::shared_ptr<const http::FilterFactory>> Compile(
      const google::protobuf::Message& message) const override {
    const auto& config = static_cast<const v1::AclConfig&>(message);
    Settings s;
    s.allow = config.allow_size() > 0;
    const auto& groups = s.allow ? config.allow() : config.deny();
    s.groups.assign(groups.begin(), groups.end());
    return std::shared_ptr<const http::FilterFactory>(
        std::make_shared<AclFilterFactory>(std::move(s)));
  }
};

const bool registered = RegisterPolicyFactory(std::make_unique<AclPolicyFactory>());

}  // namespace
}  // namespace sluice::policy::acl
