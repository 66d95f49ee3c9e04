// The compiled form of one config::v1::RouteTable: picks the route for a
// request.
//
// RouteTable::Compile turns a (validated) RouteTable into an immutable
// matcher; RouteTable::Recompile makes the same from an earlier compiled table
// when only some routes were replaced in place (discovery.v1.RouteTablePatch),
// compiling only those. The proxy builds one per config snapshot and every
// worker thread matches against it concurrently; matching takes no lock and,
// unless a route with query parameter matchers needs a percent-decoded copy
// of a parameter or the answer is a 405, allocates nothing.
//
// Matching semantics:
//
// Virtual host. The Host value is lower-cased and its port removed: "[v6]:p"
// keeps "[v6]"; a host with exactly one ':' loses ':' and what follows; a
// host with more ':' and no brackets is taken whole. No other normalization
// (a trailing '.' is kept). Then, in this order:
//   1. a virtual host listing the host exactly;
//   2. the virtual host with the longest "*.suffix" domain the host ends in
//      with at least one byte before the '.': "*.example.com" matches
//      "a.example.com" and "a.b.example.com", not "example.com";
//   3. the virtual host listing "*".
// None: kNoRoute. (If a domain is listed twice, which validation rejects, the
// first virtual host listing it wins.)
//
// Route. Within the virtual host the first route in declaration order whose
// whole match holds wins:
//   - path: compared with the request-target up to its first '?', as raw bytes
//     (no percent-decoding, no dot-segment removal). `prefix` is a byte
//     prefix, `path` byte equality, `regex` an RE2 full match.
//   - methods: empty means any; otherwise the request method must equal one of
//     them (case-sensitive, as HTTP methods are).
//   - headers: every matcher holds. Names compare case-insensitively; when a
//     header appears several times the first occurrence is used. exact, prefix
//     and regex (full match) test its value and fail when it is absent;
//     `present: true` holds when it is there, `present: false` when it is not.
//     `invert` negates the result (so an inverted exact matcher holds for an
//     absent header).
//   - query parameters: every matcher holds. The query (after the first '?')
//     is split on '&'; empty pieces are skipped; a piece splits at its first
//     '=' into name and value (no '=': the value is empty). Both are
//     percent-decoded ("%41" -> "A"; a '%' not followed by two hex digits
//     stays as is) and '+' decodes to a space. Names compare case-sensitively
//     and the first occurrence of a name is used. exact and regex (full match)
//     fail when the parameter is absent; `present` as for headers.
// 405: when no route matches but some route of the virtual host would if its
// methods were ignored, the result is kMethodNotAllowed with the union of
// those routes' methods, sorted and joined by ", ".
//
// Routes are indexed (exact paths in a hash map, prefixes in a radix trie,
// regex routes in a list checked every time); the index gives exactly the
// answer of a first-match scan of the declared routes.
//
// Thread-safety: Compile may be called from any thread. A compiled RouteTable
// is immutable: any thread may call its const methods concurrently, and the
// RouteEntry objects it hands out stay valid as long as the table does.
// Recompile builds a new table that shares the unchanged parts of an old one;
// neither table is changed, and either may be destroyed first.
#ifndef SLUICE_DATAPLANE_ROUTER_ROUTE_TABLE_H_
#define SLUICE_DATAPLANE_ROUTER_ROUTE_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/http/http1_parser.h"
#include "sluice/config/v1/config.pb.h"

namespace sluice::router {

// What Match looks at. The views must stay valid during the call only.
struct RouteRequest {
  std::string_view method;  // "GET"
  // Raw Host header (or :authority) value; may carry a port ("a.com:8080",
  // "[::1]:80") and any case. Empty when the request has none.
  std::string_view host;
  // Request-target in origin form: "/users/1?x=2".
  std::string_view path_and_query;
  // All request headers, names in any case. May be null: no headers.
  const std::vector<http::HeaderField>* headers = nullptr;
};

// One cluster of a kCluster route and the running total of weights up to and
// including it.
struct ClusterChoice {
  std::string name;
  uint32_t cumulative_weight = 0;
};

// One compiled route. Immutable; owned by its RouteTable. Any thread.
struct RouteEntry {
  enum class Action { kCluster, kRedirect, kDirectResponse };

  // 0..route_count()-1, unique within the table, in declaration order
  // (virtual host by virtual host, route by route).
  uint32_t id = 0;
  // route.name, or "<vhost name, or its index when unnamed>/<route index>".
  std::string name;
  // The virtual host's name, or its index when unnamed (metrics' label).
  std::string virtual_host;
  Action action = Action::kCluster;

  // kCluster: `cluster` gives one entry of weight 1; weighted_clusters one
  // entry per cluster in declaration order. Empty for other actions.
  std::vector<ClusterChoice> clusters;
  uint32_t total_weight = 0;  // clusters.back().cumulative_weight, or 0
  // api::kDefaultRouteTimeout when unset; absl::ZeroDuration() = disabled.
  absl::Duration timeout;
  // kCluster: forward WebSocket upgrades, and close a tunnel idle this long.
  bool websocket = false;
  absl::Duration websocket_idle_timeout;
  // kCluster: once the response has begun, no byte either way for this long
  // cuts the exchange; absl::ZeroDuration() = disabled.
  absl::Duration idle_timeout;
  // kCluster: the route's request body limit; 0: the listener's.
  uint64_t max_request_body_bytes = 0;
  // Retries (kCluster); num_retries == 0 when the route has no retry policy.
  struct Retry {
    uint32_t num_retries = 0;
    bool on_connect_failure = false;
    bool on_reset = false;
    bool on_gateway_error = false;  // 502/503/504 responses
    bool on_5xx = false;            // any 5xx response
    std::vector<uint32_t> status_codes;
    // Bit n set: a gRPC call answered trailers-only with grpc-status n is
    // retried (whatever retries_non_idempotent says: every call is a POST).
    uint32_t grpc_statuses = 0;
    absl::Duration per_try_timeout;  // ZeroDuration: none
    absl::Duration base_interval;
    absl::Duration max_interval;
    bool retry_non_idempotent = false;
    uint32_t max_replay_bytes = 0;
    // The route has no retry_policy: this is the default connect-failure
    // retry, which is made only to another endpoint (none in a cluster of
    // one: nginx's proxy_next_upstream_tries is capped by its peers too).
    bool implicit = false;
    // Whether a response with this status is retried.
    bool RetriesStatus(int status) const;
    // Whether a gRPC call's trailers-only answer with this grpc-status is.
    bool RetriesGrpcStatus(int code) const {
      return num_retries > 0 && code >= 0 && code < 32 && (grpc_statuses >> code & 1) != 0;
    }
  } retry;
  // prefix_rewrite as configured (empty: none; kCluster: the upstream's
  // path, kRedirect: the Location's) and the route's prefix match (empty
  // unless the route matches on prefix).
  std::string prefix_rewrite;
  std::string matched_prefix;
  bool matched_prefix_ignores_case = false;  // the match's case_sensitive: false

  // kRedirect. Empty strings keep the request's value; redirect_code defaults
  // to 301.
  std::string host_redirect;
  std::string path_redirect;
  std::string scheme_redirect;
  uint32_t redirect_code = 0;
  bool strip_query = false;

  // kDirectResponse. direct_content_type defaults to "text/plain".
  uint32_t direct_status = 0;
  std::string direct_body;
  std::string direct_content_type;

  // The cluster for a request given a uniformly random 64-bit value: the
  // value is scaled onto [0, total_weight) and the first cluster whose
  // cumulative weight exceeds it wins, so each cluster gets its weight's share
  // of the 64-bit space (to within 2^-64). Returns an empty string when the
  // route has no clusters.
  const std::string& PickCluster(uint64_t random) const;

  // The request-target for the upstream request: when prefix_rewrite is set
  // and the path starts with matched_prefix, that prefix replaced by
  // prefix_rewrite (the rest, query included, kept); otherwise the input
  // unchanged.
  std::string RewritePath(std::string_view path_and_query) const;

  // The Location header value for a redirect, given the request's scheme
  // ("http"/"https"), Host value and request-target:
  //   <scheme_redirect or scheme>://<host_redirect or host><path><query>
  // where <path> is path_redirect or the request's path, and <query> is the
  // request's "?query" unless strip_query is set. A path_redirect carrying its
  // own '?' replaces the request's query whatever strip_query says. When the
  // scheme changes and the kept request host ends in the old scheme's default
  // port (":80" for http, ":443" for https), that port is dropped. A
  // path_redirect's "#fragment" goes last. Without a host (an HTTP/1.0
  // request without Host): the relative "<path><query>", or "" when the
  // scheme changes (no Location can say where).
  std::string RedirectLocation(std::string_view scheme, std::string_view host,
                               std::string_view path_and_query) const;
};

// The outcome of RouteTable::Match.
struct MatchResult {
  enum class Kind {
    kRoute,             // `route` is set
    kNoRoute,           // 404: no virtual host, or no route matches
    kMethodNotAllowed,  // 405: see the file comment
  };

  Kind kind = Kind::kNoRoute;
  const RouteEntry* route = nullptr;  // kRoute only; owned by the table
  // kMethodNotAllowed only: the Allow header value, e.g. "GET, POST".
  std::string allowed_methods;
};

// The compiled route table. Immutable once built; every method is safe to
// call from any thread concurrently.
class RouteTable {
 public:
  // Compiles `table`, which should have passed api validation. Errors are
  // INVALID_ARGUMENT naming the field, e.g.
  //   virtual_hosts[0].routes[2].match.regex: invalid RE2 regular expression
  //   ...
  // for a regex that does not compile, a route without a path specifier or an
  // action, or a weighted route whose weights sum to 0 or overflow.
  static absl::StatusOr<std::shared_ptr<const RouteTable>> Compile(
      const config::v1::RouteTable& table);

  // The table Compile(table) gives, made from `previous`, which was compiled
  // (or recompiled) from a table with the same shape (the same virtual hosts
  // with the same names, with as many routes each: api/route_patch.h) that
  // differs from `table` only in the routes whose ids are in `replaced`
  // (ascending, each once). The routes not replaced are trusted to be equal
  // to those `previous` was compiled from; they are not compared.
  //
  // Cost: only the replaced routes are compiled (regexes included). Every
  // other route's compiled entry and matcher is shared with `previous` (one
  // reference-count increment per route, no copy), so is every virtual host
  // with no replaced route; the path index of a virtual host with a replaced
  // route is rebuilt from the compiled matchers, O(its routes) with no
  // allocation per route and no sort of its routes (its sorted prefix list
  // is patched). Domains are indexed again from `table` (O(domains)). A
  // one-route patch of a 10,000-route table costs about 0.1 ms (Compile:
  // 2-4 ms; route_table_benchmark).
  //
  // Errors, all INVALID_ARGUMENT: Compile's, for the replaced routes
  // ("virtual_hosts[i].routes[j]..."); a virtual host count, a virtual host's
  // route count or name that differs from `previous`'s; a replaced id out of
  // range, or ids not strictly ascending. `previous` is never changed.
  // (Used for discovery.v1.RouteTablePatch.)
  static absl::StatusOr<std::shared_ptr<const RouteTable>> Recompile(
      const RouteTable& previous, const config::v1::RouteTable& table,
      const std::vector<uint32_t>& replaced);

  RouteTable(const RouteTable&) = delete;
  RouteTable& operator=(const RouteTable&) = delete;
  ~RouteTable();

  // The route for `request`; see the file comment for the rules.
  MatchResult Match(const RouteRequest& request) const;

  size_t route_count() const { return routes_.size(); }
  // `id` < route_count().
  const RouteEntry& route(uint32_t id) const;
  const std::string& name() const { return name_; }

 private:
  struct RouteMatcher;   // the conditions of one route
  struct CompiledRoute;  // a RouteEntry and its RouteMatcher
  struct VirtualHost;    // the path index of one virtual host

  RouteTable();

  const VirtualHost* FindVirtualHost(std::string_view host) const;
  // Fills the domain maps and star_virtual_host_ from `config`.
  void IndexDomains(const config::v1::RouteTable& config);

  std::string name_;
  // By id. Routes and virtual hosts are immutable and shared with the tables
  // Recompile makes from this one (and with the one this was made from).
  std::vector<std::shared_ptr<const CompiledRoute>> routes_;
  std::vector<std::shared_ptr<const VirtualHost>> virtual_hosts_;  // in order
  // Domain -> index into virtual_hosts_. Wildcard keys keep the '.' of
  // "*.suffix" (".example.com").
  absl::flat_hash_map<std::string, uint32_t> exact_domains_;
  absl::flat_hash_map<std::string, uint32_t> wildcard_domains_;
  int32_t star_virtual_host_ = -1;
};

}  // namespace sluice::router

#endif  // SLUICE_DATAPLANE_ROUTER_ROUTE_TABLE_H_
