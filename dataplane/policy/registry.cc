#include "dataplane/policy/registry.h"

#include <cstdio>
#include <cstdlib>
#include <map>

namespace sluice::policy {
namespace {

std::map<std::string, std::unique_ptr<PolicyFactory>>& Registry() {
  static auto* const registry = new std::map<std::string, std::unique_ptr<PolicyFactory>>();
  return *registry;
}

}  // namespace

bool RegisterPolicyFactory(std::unique_ptr<PolicyFactory> factory) {
  std::string name = factory->name();
  if (!Registry().emplace(name, std::move(factory)).second) {
    fprintf(stderr, "policy factory '%s' registered twice\n", name.c_str());
    abort();
  }
  return true;
}

const PolicyFactory* FindPolicyFactory(const std::string& name) {
  auto it = Registry().find(name);
  return it == Registry().end() ? nullptr : it->second.get();
}

}  // namespace sluice::policy
