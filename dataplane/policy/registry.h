// The proxy's side of policies: each policy registers a PolicyFactory by
// name, which compiles a validated typed config into an http::FilterFactory
// for a route's chain. (The config checks both planes share are in
// api/policy_registry.h.)
//
// A new policy is a folder dataplane/policy/<name>/ with its config proto, a
// PolicyValidator and a PolicyFactory registered from static initializers,
// plus its name in POLICIES in dataplane/policy/BUILD.bazel. No core file
// changes.
//
// Registration happens before main(); lookups are thread-safe afterwards.
#ifndef SLUICE_DATAPLANE_POLICY_REGISTRY_H_
#define SLUICE_DATAPLANE_POLICY_REGISTRY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "dataplane/http/filter.h"
#include "google/protobuf/message.h"

namespace sluice::policy {

class PolicyFactory {
 public:
  virtual ~PolicyFactory() = default;
  virtual std::string name() const = 0;
  // `config` has passed the policy's validator. Runs on the config thread.
  virtual absl::StatusOr<std::shared_ptr<const http::FilterFactory>> Compile(
      const google::protobuf::Message& config) const = 0;
};

// Called from static initializers. Aborts on a duplicate name.
bool RegisterPolicyFactory(std::unique_ptr<PolicyFactory> factory);
const PolicyFactory* FindPolicyFactory(const std::string& name);

}  // namespace sluice::policy

#endif  // SLUICE_DATAPLANE_POLICY_REGISTRY_H_
