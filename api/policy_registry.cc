#include "api/policy_registry.h"

#include <cstdio>
#include <cstdlib>
#include <map>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/message.h"

namespace sluice::api {
namespace {

std::map<std::string, std::unique_ptr<PolicyValidator>>& Registry() {
  static auto* const registry = new std::map<std::string, std::unique_ptr<PolicyValidator>>();
  return *registry;
}

}  // namespace

bool RegisterPolicyValidator(std::unique_ptr<PolicyValidator> validator) {
  std::string name = validator->name();
  if (!Registry().emplace(name, std::move(validator)).second) {
    fprintf(stderr, "policy '%s' registered twice\n", name.c_str());
    abort();
  }
  return true;
}

const PolicyValidator* FindPolicyValidator(const std::string& name) {
  auto it = Registry().find(name);
  return it == Registry().end() ? nullptr : it->second.get();
}

std::vector<std::string> RegisteredPolicyNames() {
  std::vector<std::string> names;
  for (const auto& [name, validator] : Registry()) names.push_back(name);
  return names;
}

std::unique_ptr<google::protobuf::Message> UnpackPolicyConfig(const PolicyValidator& validator,
                                                              const google::protobuf::Any& any,
                                                              std::string* error) {
  const google::protobuf::Descriptor* type = validator.config_type();
  const google::protobuf::Message* prototype =
      google::protobuf::MessageFactory::generated_factory()->GetPrototype(type);
  std::unique_ptr<google::protobuf::Message> config(prototype->New());
  if (any.type_url().empty() && any.value().empty()) return config;  // no settings: defaults
  std::string expected = absl::StrCat("type.googleapis.com/", type->full_name());
  if (any.type_url() != expected) {
    // Quoted escaped and cut: it is the client's text.
    absl::string_view url = any.type_url();
    *error = absl::StrCat("typed_config is a '", absl::CHexEscape(url.substr(0, 128)),
                          url.size() > 128 ? "..." : "", "', policy '", validator.name(),
                          "' takes '", expected, "'");
    return nullptr;
  }
  if (!config->ParseFromString(any.value())) {
    *error = absl::StrCat("typed_config does not parse as ", type->full_name());
    return nullptr;
  }
  return config;
}

}  // namespace sluice::api
