// Policies known to this build, by name: how their typed config is checked.
// Each policy (dataplane/policy/<name>/) registers a PolicyValidator from a
// static initializer in a library built with alwayslink; the binaries that
// validate config (sluicectl, sluice-control, sluice-proxy) link
// //dataplane/policy:validators, so all three apply the same rules.
//
// Registration happens before main(); lookups are thread-safe afterwards.
#ifndef SLUICE_API_POLICY_REGISTRY_H_
#define SLUICE_API_POLICY_REGISTRY_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "google/protobuf/any.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace sluice::api {

// One error in a policy's config: the field path inside the config message
// (e.g. "request.set[0].name") and what is wrong.
struct PolicyConfigError {
  std::string field;
  std::string message;
};

class PolicyValidator {
 public:
  virtual ~PolicyValidator() = default;
  // The name routes use, e.g. "headers".
  virtual std::string name() const = 0;
  // The config message type, e.g. sluice.policy.headers.v1.HeadersConfig.
  virtual const google::protobuf::Descriptor* config_type() const = 0;
  // `config` is of config_type().
  virtual void Validate(const google::protobuf::Message& config,
                        std::vector<PolicyConfigError>* errors) const = 0;
  // Rules that earlier builds did not check and whose breaking loses
  // nothing that worked: run on what an apply adds or changes only
  // (api::ValidateNewContent), never on a stored or pushed state, so a
  // new proxy keeps serving a config an older build accepted. Default:
  // none.
  virtual void ValidateNew(const google::protobuf::Message& config,
                           std::vector<PolicyConfigError>* errors) const {}
  // Replaces secret values in `config` (e.g. an HMAC key) with
  // kRedactedText (api/resource.h) for what is shown to people: sluicectl
  // get, the admin API's Get and List, /config_dump. Default: none.
  virtual void Redact(google::protobuf::Message* config) const {}
  // The Consumers `config` names, as (field, consumer name): an
  // authentication policy's `anonymous`. The control plane refuses an apply
  // or a delete that leaves one naming no Consumer. Default: none.
  virtual void ConsumerReferences(const google::protobuf::Message& config,
                                  std::vector<std::pair<std::string, std::string>>* refs) const {}
  // Request header fields (lower case) this policy takes off the request
  // before the policies of later phases run: an authentication policy's
  // credential field, unless it keeps it. Default: none.
  virtual void RemovedRequestFields(const google::protobuf::Message& config,
                                    std::vector<std::string>* fields) const {}
  // Request header fields (lower case) this policy reads after the
  // authentication phase, as (its field path in the config, the header
  // name): a rate-limit's header_name. The control plane refuses an apply
  // that has a route's policy read one that another of its policies takes
  // off (the read would find nothing, every request alike). Default: none.
  virtual void ReadRequestFields(const google::protobuf::Message& config,
                                 std::vector<std::pair<std::string, std::string>>* fields) const {}
};

// Called from static initializers. Aborts on a duplicate name.
bool RegisterPolicyValidator(std::unique_ptr<PolicyValidator> validator);
// nullptr when no policy of that name is registered.
const PolicyValidator* FindPolicyValidator(const std::string& name);
// Sorted.
std::vector<std::string> RegisteredPolicyNames();

// Unpacks `any` into a new message of the validator's config type. Returns
// nullptr and sets `error` when the type URL names another type or the bytes
// do not parse.
std::unique_ptr<google::protobuf::Message> UnpackPolicyConfig(const PolicyValidator& validator,
                                                              const google::protobuf::Any& any,
                                                              std::string* error);

}  // namespace sluice::api

#endif  // SLUICE_API_POLICY_REGISTRY_H_
