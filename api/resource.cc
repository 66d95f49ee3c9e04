#include "api/resource.h"

#include "api/policy_registry.h"
#include "common/nearest.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/message_differencer.h"

namespace sluice::api {

ResourceKind KindOf(const Resource& resource) {
  switch (resource.kind_case()) {
    case Resource::kListener: return config::v1::LISTENER;
    case Resource::kRouteTable: return config::v1::ROUTE_TABLE;
    case Resource::kCluster: return config::v1::CLUSTER;
    case Resource::kSecret: return config::v1::SECRET;
    case Resource::kConsumer: return config::v1::CONSUMER;
    case Resource::KIND_NOT_SET: break;
  }
  return config::v1::RESOURCE_KIND_UNSPECIFIED;
}

const std::string& NameOf(const Resource& resource) {
  switch (resource.kind_case()) {
    case Resource::kListener: return resource.listener().name();
    case Resource::kRouteTable: return resource.route_table().name();
    case Resource::kCluster: return resource.cluster().name();
    case Resource::kSecret: return resource.secret().name();
    case Resource::kConsumer: return resource.consumer().name();
    case Resource::KIND_NOT_SET: break;
  }
  static const std::string* const kEmpty = new std::string();
  return *kEmpty;
}

ResourceId IdOf(const Resource& resource) {
  return {KindOf(resource), NameOf(resource)};
}

absl::string_view KindName(ResourceKind kind) {
  switch (kind) {
    case config::v1::LISTENER: return "Listener";
    case config::v1::ROUTE_TABLE: return "RouteTable";
    case config::v1::CLUSTER: return "Cluster";
    case config::v1::SECRET: return "Secret";
    case config::v1::CONSUMER: return "Consumer";
    default: return "Unknown";
  }
}

std::string Shown(absl::string_view text, size_t max) {
  if (text.size() <= max) return absl::CHexEscape(text);
  return absl::StrCat(absl::CHexEscape(text.substr(0, max)), "...(", text.size(), " bytes)");
}

std::string Describe(const ResourceId& id) {
  return absl::StrCat(KindName(id.first), " \"", Shown(id.second), "\"");
}

absl::StatusOr<ResourceKind> ParseKind(absl::string_view text) {
  std::string key = absl::AsciiStrToLower(text);
  key = absl::StrReplaceAll(key, {{"_", ""}, {"-", ""}});
  if (key.size() > 1 && key.back() == 's') key.pop_back();
  if (key == "listener") return config::v1::LISTENER;
  if (key == "routetable" || key == "route" || key == "rt") return config::v1::ROUTE_TABLE;
  if (key == "cluster") return config::v1::CLUSTER;
  if (key == "secret") return config::v1::SECRET;
  if (key == "consumer") return config::v1::CONSUMER;
  // A typo of a kind's name (`Clustr`, `RoutTable`): the kind meant.
  static const std::vector<std::string> kKinds = {"Listener", "RouteTable", "Cluster", "Secret",
                                                  "Consumer"};
  std::vector<std::string> lowered;
  for (const std::string& kind : kKinds) lowered.push_back(absl::AsciiStrToLower(kind));
  const std::string near = common::Nearest(absl::AsciiStrToLower(text), lowered);
  std::string hint;
  for (size_t i = 0; i < kKinds.size(); ++i) {
    if (!near.empty() && lowered[i] == near) hint = absl::StrCat("; did you mean '", kKinds[i], "'?");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown kind '", Shown(text),
      "' (expected Listener, RouteTable, Cluster, Secret or Consumer)", hint));
}

namespace {

// A policy's secret values (its validator knows which), in place.
void RedactPolicies(google::protobuf::RepeatedPtrField<config::v1::TypedExtensionConfig>* list) {
  for (config::v1::TypedExtensionConfig& policy : *list) {
    const PolicyValidator* validator = FindPolicyValidator(policy.name());
    if (validator == nullptr) continue;
    std::string error;
    auto config = UnpackPolicyConfig(*validator, policy.typed_config(), &error);
    if (config == nullptr) continue;
    std::string before = config->SerializeAsString();
    validator->Redact(config.get());
    if (config->SerializeAsString() != before) policy.mutable_typed_config()->PackFrom(*config);
  }
}

}  // namespace

void RedactSecrets(Resource* resource) {
  if (resource->has_route_table()) {
    for (config::v1::VirtualHost& vhost : *resource->mutable_route_table()->mutable_virtual_hosts()) {
      RedactPolicies(vhost.mutable_policies());
      for (config::v1::Route& route : *vhost.mutable_routes()) {
        RedactPolicies(route.mutable_policies());
      }
    }
    return;
  }
  if (resource->has_secret() && resource->secret().has_tls_certificate()) {
    config::v1::TlsCertificate* certificate =
        resource->mutable_secret()->mutable_tls_certificate();
    if (!certificate->private_key().empty()) {
      certificate->set_private_key(std::string(kRedactedText));
    }
  } else if (resource->has_consumer()) {
    config::v1::Consumer* consumer = resource->mutable_consumer();
    for (config::v1::ApiKey& key : *consumer->mutable_keys()) {
      if (!key.key().empty()) key.set_key(std::string(kRedactedText));
    }
    if (consumer->has_basic_auth() && !consumer->basic_auth().password().empty()) {
      consumer->mutable_basic_auth()->set_password(std::string(kRedactedText));
    }
  }
}

void RedactSecrets(ResourceMap* resources) {
  for (auto& [id, resource] : *resources) RedactSecrets(&resource);
}

std::string DeterministicBytes(const Resource& resource) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    resource.SerializeToCodedStream(&coded);
  }
  return bytes;
}

uint64_t ContentHashOfBytes(absl::string_view bytes) {
  uint64_t hash = 14695981039346656037ull;  // FNV-1a offset basis
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;  // FNV-1a prime
  }
  return hash;
}

uint64_t ContentHash(const Resource& resource) {
  return ContentHashOfBytes(DeterministicBytes(resource));
}

absl::Duration ToDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

std::string VirtualHostLabel(const config::v1::VirtualHost& vhost, int v) {
  return vhost.name().empty() ? absl::StrCat(v) : vhost.name();
}

std::string RouteName(const config::v1::Route& route, absl::string_view vhost_label, int r) {
  return route.name().empty() ? absl::StrCat(vhost_label, "/", r) : route.name();
}

ResourceKey KeyOf(const Resource& resource) {
  ResourceKey key;
  key.set_kind(KindOf(resource));
  key.set_name(NameOf(resource));
  key.set_hash(ContentHash(resource));
  return key;
}

StateDiff ComputeDiff(
    const ResourceMap& from, const ResourceMap& to,
    const std::function<bool(const ResourceId&, const Resource&, const Resource&)>& same) {
  StateDiff diff;
  auto a = from.begin();
  auto b = to.begin();
  while (a != from.end() || b != to.end()) {
    if (b == to.end() || (a != from.end() && a->first < b->first)) {
      diff.removed.push_back(a->first);
      ++a;
    } else if (a == from.end() || b->first < a->first) {
      diff.added.push_back(b->first);
      ++b;
    } else {
      if (same ? same(a->first, a->second, b->second)
               : google::protobuf::util::MessageDifferencer::Equals(a->second, b->second)) {
        ++diff.unchanged;
      } else {
        diff.changed.push_back(a->first);
      }
      ++a;
      ++b;
    }
  }
  return diff;
}

}  // namespace sluice::api
