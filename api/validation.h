// The config validation library. sluice-control runs it before accepting a
// change and sluice-proxy runs it on every version it receives, so a proxy
// rejects only what the control plane would have rejected too.
//
// Every error names the resource and the field, e.g.
//   Cluster "users": endpoints[1].port: must be 1..65535, got 0
//
// Pure functions; thread-safe.
#ifndef SLUICE_API_VALIDATION_H_
#define SLUICE_API_VALIDATION_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "api/resource.h"

namespace sluice::api {

// Limits a config must stay within. Documented in docs/configuration.md.
inline constexpr size_t kMaxNameLength = 128;
inline constexpr int kMaxWeight = 10000;
inline constexpr size_t kMaxEndpointsPerCluster = 10000;
inline constexpr size_t kMaxDirectResponseBody = 64 * 1024;
inline constexpr uint32_t kMinHeaderLimit = 1024;
inline constexpr uint32_t kMaxHeaderLimit = 1024 * 1024;
inline constexpr uint32_t kDefaultMaxUriBytes = 16384;
inline constexpr uint32_t kDefaultMaxRequestHeaders = 100;
inline constexpr size_t kMaxPoliciesPerList = 32;
inline constexpr size_t kMaxListenerCertificates = 64;
inline constexpr size_t kMaxAlpnProtocols = 8;
inline constexpr size_t kMaxConsumerGroups = 64;
inline constexpr size_t kMaxConsumerKeys = 64;

// Defaults for fields left unset.
inline constexpr uint32_t kDefaultMaxRequestHeadersBytes = 60 * 1024;
inline constexpr absl::Duration kDefaultRequestHeadersTimeout = absl::Seconds(10);
inline constexpr absl::Duration kDefaultIdleTimeout = absl::Seconds(60);
inline constexpr uint32_t kDefaultHttp2MaxConcurrentStreams = 100;
inline constexpr uint32_t kMaxHttp2MaxConcurrentStreams = 1000;
inline constexpr uint32_t kDefaultHttp2StreamWindow = 1 << 20;
inline constexpr uint32_t kMinHttp2StreamWindow = 65535;
inline constexpr uint32_t kMaxHttp2StreamWindow = 16 << 20;
inline constexpr absl::Duration kDefaultRouteTimeout = absl::Seconds(15);
inline constexpr absl::Duration kDefaultWebSocketIdleTimeout = absl::Seconds(300);
inline constexpr absl::Duration kDefaultStreamIdleTimeout = absl::Seconds(60);
inline constexpr absl::Duration kDefaultConnectTimeout = absl::Seconds(5);
inline constexpr absl::Duration kDefaultDnsRefreshInterval = absl::Seconds(5);
inline constexpr size_t kMaxDnsResolvers = 8;
inline constexpr uint32_t kDefaultMaxIdleConnectionsPerEndpoint = 1024;
inline constexpr absl::Duration kDefaultIdleConnectionTimeout = absl::Seconds(60);
inline constexpr uint32_t kDefaultUpstreamMaxConcurrentStreams = 100;
inline constexpr absl::Duration kDefaultHealthCheckInterval = absl::Seconds(5);
inline constexpr absl::Duration kDefaultHealthCheckTimeout = absl::Seconds(1);
inline constexpr uint32_t kDefaultHealthyThreshold = 2;
inline constexpr uint32_t kDefaultUnhealthyThreshold = 3;
inline constexpr uint32_t kDefaultConsecutive5xx = 5;
inline constexpr uint32_t kDefaultConsecutiveGatewayFailure = 5;
inline constexpr absl::Duration kDefaultBaseEjectionTime = absl::Seconds(30);
inline constexpr absl::Duration kDefaultMaxEjectionTime = absl::Seconds(300);
inline constexpr uint32_t kDefaultMaxEjectionPercent = 10;
inline constexpr uint32_t kDefaultPanicThresholdPercent = 50;
inline constexpr uint32_t kDefaultMaxConnections = 1024;
inline constexpr uint32_t kDefaultMaxPendingRequests = 1024;
inline constexpr uint32_t kDefaultMaxRequests = 1024;
inline constexpr uint32_t kDefaultRetryBudgetPercent = 20;
inline constexpr uint32_t kDefaultMinRetryConcurrency = 10;
inline constexpr uint32_t kDefaultRingPointsPerWeight = 160;
inline constexpr uint32_t kMaglevTableSize = 65537;
inline constexpr absl::Duration kDefaultRetryBaseInterval = absl::Milliseconds(25);
inline constexpr absl::Duration kDefaultRetryMaxInterval = absl::Milliseconds(250);
inline constexpr uint32_t kDefaultMaxReplayBytes = 64 * 1024;

// A retry_policy.retry_on name for a gRPC status (Envoy's names: "cancelled",
// "deadline-exceeded", "resource-exhausted", "internal", "unavailable"): its
// code, or -1 when `name` is not one of them.
int GrpcRetryOnCode(absl::string_view name);

// The fields an access log entry may have, in their default order.
const std::vector<std::string>& AccessLogFieldNames();

struct ValidationError {
  ResourceId resource;  // kind unspecified for errors about the whole state
  std::string field;    // path such as "endpoints[1].port"; may be empty
  std::string message;
  std::string ToString() const;
};

// Rules that look at one resource alone: names, ranges, addresses, regexes,
// durations, key material (PEM syntax, sizes, the key matching the
// certificate), a Consumer's credentials (plain or hashed, each in its
// format). Appends to `errors`. Errors never quote a key, a password or a
// password hash.
void ValidateResource(const Resource& resource,
                      std::vector<ValidationError>* errors);

// Rules about the moment of a change rather than its content: a Secret's
// certificate must be valid (not expired, not before its start) at `now`,
// and (a rule added after such keys were accepted) its key on a curve TLS
// 1.3 signs with.
// The control plane runs them on the resources an apply adds or changes.
// They are deliberately not part of ValidateResource and ValidateState, whose
// answer must not depend on when or where they run: otherwise a certificate
// that expires in service would make the stored state invalid (every later
// change refused, a restarting proxy refusing its whole config), and clock
// skew could make a proxy refuse a version the control plane accepted.
// Appends to `errors`.
void ValidateAtApplyTime(const Resource& resource, absl::Time now,
                         std::vector<ValidationError>* errors);

// Rules for what an apply writes that a stored state, a pushed version and a
// rollback need not meet, because breaking them loses nothing that worked: a
// route `match.prefix` or `match.path` that no request path can equal or
// start with once normalised (a space or non-ASCII byte, '?', '#', a bad or
// non-canonical percent-encoding, a "." or ".." segment); a domain's label
// lengths; an empty regex;
// CONNECT or a repeated method; a prefix_rewrite requests would get 400
// from or that puts bytes into the target unencoded; a host_redirect that
// is no host; a body on a 204/205/304 direct response; an endpoint at the
// unspecified address or another's IPv4-mapped spelling; hash_policy
// source_ip/path false; a health check path or host out of their syntax;
// a private key over 64 KiB; each policy's PolicyValidator::ValidateNew
// rules (on a virtual host's and a route's policies). Earlier builds
// accepted them: refusing them at apply
// tells their author, while a proxy or a rollback that meets one keeps
// working. sluicectl runs them too, only to name the lines of what the
// control plane refuses (and alongside its own errors).
// The control plane runs them on the resources an apply adds or changes.
// Appends to `errors`.
void ValidateNewContent(const Resource& resource, std::vector<ValidationError>* errors);

// The first field `message` (or a message in it, a policy's typed_config
// included; not a message of type `skip`) carries that its schema does not
// know: its number into *number, the message holding it into *owner, and
// the path to that message under `at` (`at.more[0]`) into *path. A known
// number there came with another wire type than its field's.
bool FindUnknownField(const google::protobuf::Message& message, const std::string& at,
                      std::string* path, int* number,
                      const google::protobuf::Descriptor** owner,
                      const google::protobuf::Descriptor* skip = nullptr);

// The RE2 program size of all of `resource`'s regular expressions together
// (each compiled, as ValidateNewContent does), for the config-wide bound
// api::kMaxConfigRegexProgramSize. Past that bound it stops counting.
int64_t RegexProgramSizeOf(const Resource& resource);
// What an apply is told when the config's regular expressions would be
// `total` instructions (over the bound; `biggest`: the changed resources
// with the most, for the message).
std::string RegexBudgetError(int64_t total,
                             const std::vector<std::pair<ResourceId, int64_t>>& biggest);

// A rule between resources that earlier builds did not check, so it is run
// on the change only (as ValidateNewContent): a policy's reference to a
// Consumer (an authentication policy's `anonymous`) must name one that
// `next` has. Checked in route tables that `next` adds or changes from
// `base`, and in every route table of `next` that names a Consumer `base`
// has and `next` has not (a delete). Appends to `errors`, on the route
// table, with the policy's field.
void CheckConsumerReferences(const ResourceMap& next, const ResourceMap& base,
                             std::vector<ValidationError>* errors);

// What is valid but cannot do what it says, in `next` where `diff` (from
// the state before) added or changed a route table or a cluster its routes
// name: a route with `websocket: true` to a cluster that speaks HTTP2
// (upgrades go upstream as plain requests); a route no request reaches (an
// earlier one without header or query conditions matches all it would);
// an added or changed cluster
// with `tls.insecure_skip_verify`; and each certificate of an added or
// changed Secret's trusted_ca that is not valid now (expired, or not yet
// valid). One line each, naming the
// resource and the field; the change is applied all the same.
std::vector<std::string> ConfigNotes(const ResourceMap& next, const StateDiff& diff);

// Every per-resource rule plus the rules across resources: references to
// unknown route tables, clusters and Secrets (or Secrets of the wrong type),
// listeners that conflict on an address (two listeners whose node_groups are
// both set and disjoint never do: no proxy binds both), Consumers that share an API key
// (plain keys compared by their SHA-256 with key_sha256 values) or a
// basic-auth username.
// With `changed`, the per-resource rules run only for those ids (the rest
// passed them when they were accepted); the rules across resources always
// run over the whole state. A conflict between two resources (a shared key
// or username, a listener's address) is told to the one in `new_ids` (else
// `changed`) when the other is not: the resource the user is applying.
std::vector<ValidationError> ValidateState(const ResourceMap& state,
                                           const std::set<ResourceId>* changed = nullptr,
                                           const std::set<ResourceId>* new_ids = nullptr);

// What a config version changes from the accepted version before it, as
// the proxy's config client saw it on the stream.
// A route match with `case_sensitive: false`: its prefix, path and regex
// compare the path ignoring ASCII case.
bool MatchIgnoresCase(const config::v1::RouteMatch& match);

// Whether a Cluster endpoint's `address` is a host name (the proxy
// resolves it), not an IP literal. Only for validated endpoints.
bool IsEndpointHostName(const std::string& address);
// The name a host-name endpoint is resolved and compared by: lower case,
// without a trailing dot.
std::string CanonicalHostName(const std::string& name);

struct ConfigChange {
  // Resources added or replaced whole.
  std::set<ResourceId> changed;
  // Route tables changed route by route (discovery.v1.RouteTablePatch): the
  // table's name and the ids of its replaced and inserted routes
  // (RouteEntry::id: the position counted over the virtual hosts in order,
  // in the patched table), ascending. Such a table keeps its virtual hosts,
  // their names, domains and policies (api/route_patch.h). A table is here
  // or in `changed`, not both.
  std::map<std::string, std::vector<uint32_t>> patched;
  // One run of routes replaced by another in a patched table
  // (api::RoutePatchResult::Splice): in the patched table, routes
  // [first, first + inserted) took the place of `removed` routes; the ids
  // of the routes after them shifted by inserted - removed.
  struct Splice {
    uint32_t first;
    uint32_t removed;
    uint32_t inserted;
  };
  // The splices of the patched tables that had any (a subset of `patched`'s
  // names), ascending by `first`. A table with none keeps its route ids.
  std::map<std::string, std::vector<Splice>> spliced;
  // Some resource was removed.
  bool removed = false;
};

// The rules ValidateState applies, for a version made from an accepted one
// (which passed them) by `change`. The per-resource rules run for
// change.changed and, in a patched route table, for its replaced and
// inserted routes only (the rest of the table, its virtual hosts included,
// did not change), plus, in a spliced table, the rule that every virtual
// host has a route. The rules across resources run over the whole state as
// ValidateState's do, unless the version only patched route tables (nothing
// changed whole, nothing removed): then only the replaced and inserted
// routes' references to clusters are checked, as nothing else those rules
// look at changed (a removed route refers to nothing any more). Errors name
// the route by its position, e.g.
//   RouteTable "main": virtual_hosts[2].routes[7].route.cluster: refers to
//   Cluster "c9", which does not exist
std::vector<ValidationError> ValidateChange(const ResourceMap& state, const ConfigChange& change);

// Shorthand: ToStatus(ValidateChange(state, change)).
absl::Status CheckChange(const ResourceMap& state, const ConfigChange& change);

// Whether a proxy started with --group `group` binds and serves `listener`:
// its node_groups is empty or names `group`.
bool ListenerPlacedOn(const config::v1::Listener& listener, absl::string_view group);

// OK, or INVALID_ARGUMENT listing the errors one per line (at most 20, then a
// count of the rest).
absl::Status ToStatus(const std::vector<ValidationError>& errors);

// Shorthand: ToStatus(ValidateState(state, changed)).
absl::Status CheckState(const ResourceMap& state, const std::set<ResourceId>* changed = nullptr);

}  // namespace sluice::api

#endif  // SLUICE_API_VALIDATION_H_
