// Helpers over config resources shared by both planes: kinds and names,
// stable content hashes, whole-state maps and diffs between them.
//
// All functions are pure and thread-safe.
#ifndef SLUICE_API_RESOURCE_H_
#define SLUICE_API_RESOURCE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include "absl/strings/string_view.h"
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "sluice/config/v1/config.pb.h"

namespace sluice::api {

using config::v1::Resource;
using config::v1::ResourceKey;
using config::v1::ResourceKind;

// (kind, name): how a resource is addressed.
using ResourceId = std::pair<ResourceKind, std::string>;

// The whole declared state at one version, ordered by kind then name.
using ResourceMap = std::map<ResourceId, Resource>;

ResourceKind KindOf(const Resource& resource);
const std::string& NameOf(const Resource& resource);
ResourceId IdOf(const Resource& resource);

// "Listener", "RouteTable", "Cluster", "Secret", "Consumer".
absl::string_view KindName(ResourceKind kind);
// `Cluster "users"`: how errors and CLI output name a resource. A name
// that breaks the naming rules is shown escaped and cut (Shown).
std::string Describe(const ResourceId& id);

// Text a client sent, as messages quote it: control, non-ASCII, quote and
// backslash bytes escaped (C style), and past `max` bytes cut with how
// long it was, so that an error can neither forge lines nor grow without
// bound (gRPC drops a status message over its metadata limit).
std::string Shown(absl::string_view text, size_t max = 128);

// Accepts the kind names as written in files and on the command line, case
// insensitive, singular or plural: "Cluster", "clusters", "routetable",
// "route_table", "route-tables", "listener", "secrets", "consumers", ...
absl::StatusOr<ResourceKind> ParseKind(absl::string_view text);

// What is shown in place of a private key, an API key or a password.
inline constexpr absl::string_view kRedactedText = "[redacted]";

// gRPC metadata key of an admin call sluicectl makes to learn what the
// control plane does (a dry run), not for an operator: sluice-control
// neither counts nor audits it.
inline constexpr char kSluicectlCheckMetadata[] = "sluice-check";

// Replaces with kRedactedText a Secret's non-empty
// tls_certificate.private_key, and a Consumer's non-empty plain credentials:
// each keys[].key and basic_auth.password. (The control plane stores only
// their hashes, see api/credentials.h SealCredentials; this covers a plain
// value that reaches output some other way. key_sha256 and password_hash
// stay visible.) In route tables, each policy's secret values, as its
// validator says (PolicyValidator::Redact: the jwt policy's HS256 keys).
// Leaves every other resource and field as it is. For what is
// shown to people (sluicectl get, the admin API's Get and List, a proxy's
// /config_dump), never for what is stored, diffed or pushed to proxies.
void RedactSecrets(Resource* resource);
void RedactSecrets(ResourceMap* resources);

// A hash of the resource's content that is the same in every process and on
// every machine (FNV-1a over deterministic serialization).
uint64_t ContentHash(const Resource& resource);
// The deterministic serialization ContentHash hashes, and the hash of such
// bytes: ContentHash(r) == ContentHashOfBytes(DeterministicBytes(r)).
std::string DeterministicBytes(const Resource& resource);
uint64_t ContentHashOfBytes(absl::string_view bytes);

ResourceKey KeyOf(const Resource& resource);

// A protobuf Duration as an absl::Duration.
absl::Duration ToDuration(const google::protobuf::Duration& d);

// What a virtual host and a route go by in metrics, cache entries, rate-limit
// counters and purges: the virtual host's name, or its index `v` when it has
// none; the route's name, or "<virtual host label>/<its index r>".
std::string VirtualHostLabel(const config::v1::VirtualHost& vhost, int v);
std::string RouteName(const config::v1::Route& route, absl::string_view vhost_label, int r);

struct StateDiff {
  std::vector<ResourceId> added;
  std::vector<ResourceId> changed;
  std::vector<ResourceId> removed;
  int unchanged = 0;
  bool empty() const {
    return added.empty() && changed.empty() && removed.empty();
  }
};

// What changes when going from `from` to `to`. A resource in both is
// unchanged when `same` says so (by default: equal content).
StateDiff ComputeDiff(
    const ResourceMap& from, const ResourceMap& to,
    const std::function<bool(const ResourceId&, const Resource&, const Resource&)>& same =
        nullptr);

}  // namespace sluice::api

#endif  // SLUICE_API_RESOURCE_H_
