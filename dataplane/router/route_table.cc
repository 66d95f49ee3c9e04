#include "dataplane/router/route_table.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "api/resource.h"
#include "api/validation.h"
#include "dataplane/http/http1_parser.h"
#include "dataplane/http/path_normalizer.h"
#include "re2/re2.h"

namespace sluice::router {
namespace {

using config::v1::HeaderMatcher;
using config::v1::QueryParameterMatcher;
using config::v1::RouteMatch;

constexpr uint32_t kNoRouteId = std::numeric_limits<uint32_t>::max();
// How much of a path regex's literal range RE2 works out at Compile.
constexpr int kRegexRangeLength = 64;

absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() &&
         std::memcmp(s.data(), prefix.data(), prefix.size()) == 0;
}

bool ContainsIgnoringCase(std::string_view s, std::string_view part) {
  if (part.size() > s.size()) return false;
  for (size_t i = 0; i + part.size() <= s.size(); ++i) {
    if (absl::EqualsIgnoreCase(ToAbsl(s.substr(i, part.size())), ToAbsl(part))) return true;
  }
  return false;
}

bool StartsWithIgnoringCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() &&
         absl::EqualsIgnoreCase(ToAbsl(s.substr(0, prefix.size())), ToAbsl(prefix));
}

// True when `name` (any case) equals `lower` (already lower case).
bool EqualsLowered(std::string_view name, std::string_view lower) {
  if (name.size() != lower.size()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (absl::ascii_tolower(static_cast<unsigned char>(name[i])) != lower[i]) {
      return false;
    }
  }
  return true;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool NeedsDecoding(std::string_view s) {
  return s.find_first_of("%+") != std::string_view::npos;
}

// Percent-decodes `s` ('+' is a space) into `out` and returns a view of the
// result: `s` itself when there is nothing to decode.
std::string_view Decode(std::string_view s, std::string* out) {
  if (!NeedsDecoding(s)) return s;
  out->clear();
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '+') {
      out->push_back(' ');
    } else if (c == '%' && i + 2 < s.size() && HexValue(s[i + 1]) >= 0 &&
               HexValue(s[i + 2]) >= 0) {
      out->push_back(
          static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2])));
      i += 2;
    } else {
      out->push_back(c);
    }
  }
  return *out;
}

// The value of the first query parameter named `name` (after decoding), in
// `*value`; false when there is none. `scratch` holds decoded copies.
bool FindQueryParameter(std::string_view query, std::string_view name,
                        std::string* scratch, std::string_view* value) {
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t end = query.find('&', pos);
    if (end == std::string_view::npos) end = query.size();
    std::string_view piece = query.substr(pos, end - pos);
    pos = end + 1;
    if (piece.empty()) continue;
    size_t eq = piece.find('=');
    std::string_view raw_name = piece.substr(0, eq);
    std::string_view raw_value = eq == std::string_view::npos
                                     ? std::string_view()
                                     : piece.substr(eq + 1);
    if (Decode(raw_name, scratch) != name) continue;
    *value = Decode(raw_value, scratch);
    return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<RE2>> CompileRegex(const std::string& pattern,
                                                  const std::string& field,
                                                  bool case_sensitive = true) {
  RE2::Options options;
  options.set_log_errors(false);
  options.set_case_sensitive(case_sensitive);
  auto re = std::make_unique<RE2>(pattern, options);
  if (!re->ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": invalid RE2 regular expression '", pattern,
                     "': ", re->error()));
  }
  return re;
}

bool FullMatch(std::string_view text, const RE2& re) {
  return RE2::FullMatch(re2::StringPiece(text.data(), text.size()), re);
}

// A byte trie with single-child chains merged (a radix tree) over the prefix
// routes of one virtual host. Built once; read-only afterwards.
class PrefixTrie {
 public:
  // `prefixes` holds (prefix, route id) pairs sorted by prefix, then id.
  // Costs O(total bytes of the distinct prefixes); allocates only the
  // trie's own arrays.
  void Build(const std::vector<std::pair<absl::string_view, uint32_t>>& prefixes);

  // Calls visit(const uint32_t* ids, size_t count) for every stored prefix of
  // `path`, shortest first.
  template <typename Visit>
  void ForEachPrefixOf(std::string_view path, Visit&& visit) const;

 private:
  struct Node {
    uint32_t label_begin = 0;  // the edge from the parent, in labels_
    uint32_t label_size = 0;
    uint32_t ids_begin = 0;  // in ids_
    uint32_t ids_size = 0;
    uint32_t children_begin = 0;  // in child_byte_ / child_node_
    uint32_t children_size = 0;
  };

  std::vector<Node> nodes_;  // [0] is the root (empty label)
  std::string labels_;
  std::vector<uint32_t> ids_;
  // Children of a node are contiguous and sorted by the first byte of their
  // label.
  std::vector<unsigned char> child_byte_;
  std::vector<uint32_t> child_node_;
};

void PrefixTrie::Build(
    const std::vector<std::pair<absl::string_view, uint32_t>>& prefixes) {
  // The distinct prefixes, each with its run of ids in `prefixes`.
  struct Distinct {
    absl::string_view prefix;
    uint32_t begin, size;
  };
  std::vector<Distinct> sorted;
  for (size_t i = 0; i < prefixes.size(); ++i) {
    if (sorted.empty() || sorted.back().prefix != prefixes[i].first) {
      sorted.push_back({prefixes[i].first, static_cast<uint32_t>(i), 0});
    }
    ++sorted.back().size;
  }
  nodes_.clear();
  labels_.clear();
  ids_.clear();
  child_byte_.clear();
  child_node_.clear();

  // Every node of the pending tasks covers sorted[lo, hi), the strings that
  // share its first `depth` bytes; explicit stack, not recursion, as a chain
  // of nested prefixes can be as long as the route list.
  struct Task {
    uint32_t node;
    size_t lo, hi, depth;
  };
  nodes_.assign(1, Node());
  std::vector<Task> tasks = {{0, 0, sorted.size(), 0}};
  while (!tasks.empty()) {
    Task task = tasks.back();
    tasks.pop_back();
    size_t lo = task.lo;
    if (lo < task.hi && sorted[lo].prefix.size() == task.depth) {
      nodes_[task.node].ids_begin = ids_.size();
      nodes_[task.node].ids_size = sorted[lo].size;
      for (uint32_t i = 0; i < sorted[lo].size; ++i) {
        ids_.push_back(prefixes[sorted[lo].begin + i].second);
      }
      ++lo;
    }
    nodes_[task.node].children_begin = child_byte_.size();
    while (lo < task.hi) {
      absl::string_view first = sorted[lo].prefix;
      unsigned char byte = first[task.depth];
      size_t hi = lo + 1;
      while (hi < task.hi && static_cast<unsigned char>(
                                 sorted[hi].prefix[task.depth]) == byte) {
        ++hi;
      }
      // Sorted, so the common prefix of the group is that of its ends.
      absl::string_view last = sorted[hi - 1].prefix;
      size_t common = task.depth + 1;
      while (common < first.size() && common < last.size() &&
             first[common] == last[common]) {
        ++common;
      }
      Node child;
      child.label_begin = labels_.size();
      child.label_size = common - task.depth;
      labels_.append(first.data() + task.depth, common - task.depth);
      uint32_t child_index = nodes_.size();
      nodes_.push_back(child);
      child_byte_.push_back(byte);
      child_node_.push_back(child_index);
      ++nodes_[task.node].children_size;
      tasks.push_back({child_index, lo, hi, common});
      lo = hi;
    }
  }
}

template <typename Visit>
void PrefixTrie::ForEachPrefixOf(std::string_view path, Visit&& visit) const {
  if (nodes_.empty()) return;
  const Node* node = &nodes_[0];
  size_t pos = 0;
  while (true) {
    if (node->ids_size > 0) visit(&ids_[node->ids_begin], node->ids_size);
    if (pos >= path.size() || node->children_size == 0) return;
    const unsigned char* begin = child_byte_.data() + node->children_begin;
    const unsigned char* end = begin + node->children_size;
    const unsigned char* it =
        std::lower_bound(begin, end, static_cast<unsigned char>(path[pos]));
    if (it == end || *it != static_cast<unsigned char>(path[pos])) return;
    const Node* child = &nodes_[child_node_[it - child_byte_.data()]];
    if (path.size() - pos < child->label_size ||
        std::memcmp(path.data() + pos, labels_.data() + child->label_begin,
                    child->label_size) != 0) {
      return;
    }
    pos += child->label_size;
    node = child;
  }
}

// What a header or query parameter matcher asks of the value (the two
// protos share these fields).
struct ValueCondition {
  enum class Kind { kExact, kPrefix, kSuffix, kContains, kRegex, kPresent };
  Kind kind = Kind::kPresent;
  std::string value;  // kExact, kPrefix, kSuffix, kContains
  std::unique_ptr<RE2> regex;
  bool present = false;
  bool ignore_case = false;  // kExact, kPrefix, kSuffix, kContains

  // `found`: whether the request has the field; `text` its value.
  bool Holds(bool found, std::string_view text) const {
    if (kind == Kind::kPresent) return found == present;
    if (!found) return false;
    switch (kind) {
      case Kind::kExact:
        return ignore_case ? absl::EqualsIgnoreCase(ToAbsl(text), value) : text == value;
      case Kind::kPrefix:
        return ignore_case ? StartsWithIgnoringCase(text, value) : StartsWith(text, value);
      case Kind::kSuffix:
        return ignore_case ? absl::EndsWithIgnoreCase(ToAbsl(text), value)
                           : absl::EndsWith(ToAbsl(text), value);
      case Kind::kContains:
        return ignore_case ? ContainsIgnoringCase(text, value)
                           : absl::StrContains(ToAbsl(text), value);
      case Kind::kRegex:
        return FullMatch(text, *regex);
      case Kind::kPresent:
        break;
    }
    return false;
  }

  // From a HeaderMatcher or QueryParameterMatcher; `field` names it in errors.
  template <typename Matcher>
  absl::Status Compile(const Matcher& m, const std::string& field) {
    ignore_case = m.ignore_case();
    if (m.has_exact()) {
      kind = Kind::kExact;
      value = m.exact();
    } else if (m.has_prefix()) {
      kind = Kind::kPrefix;
      value = m.prefix();
    } else if (m.has_suffix()) {
      kind = Kind::kSuffix;
      value = m.suffix();
    } else if (m.has_contains()) {
      kind = Kind::kContains;
      value = m.contains();
    } else if (m.has_regex()) {
      kind = Kind::kRegex;
      auto re = CompileRegex(m.regex(), field + ".regex");
      if (!re.ok()) return re.status();
      regex = *std::move(re);
    } else if (m.has_present()) {
      kind = Kind::kPresent;
      present = m.present();
    } else {
      return absl::InvalidArgumentError(
          field + ": needs one of exact, prefix, suffix, contains, regex or present");
    }
    return absl::OkStatus();
  }
};

}  // namespace

struct RouteTable::RouteMatcher {
  enum class PathKind { kPrefix, kExact, kRegex };
  struct Header {
    std::string name;  // lower case
    ValueCondition condition;
    bool invert = false;
  };
  struct QueryParameter {
    std::string name;
    ValueCondition condition;
  };

  PathKind path_kind = PathKind::kPrefix;
  std::string path;                 // kPrefix, kExact
  // case_sensitive: false. Such kPrefix and kExact routes are not in the
  // index: like regex routes, they are checked on every request.
  bool ignore_case = false;
  std::unique_ptr<RE2> path_regex;  // kRegex
  // kRegex: every path the regex matches is in [regex_min, regex_max] (empty
  // regex_max: no upper bound), a cheap test before running the regex.
  std::string regex_min;
  std::string regex_max;
  std::vector<std::string> methods;
  std::vector<Header> headers;
  std::vector<QueryParameter> query_parameters;

  // GET takes HEAD along (RFC 9110 9.1: a server that supports GET supports
  // HEAD; nginx's limit_except GET does so too).
  bool MethodMatches(std::string_view method) const {
    if (methods.empty()) return true;
    const bool head = method == "HEAD";
    for (const std::string& m : methods) {
      if (m == method || (head && m == "GET")) return true;
    }
    return false;
  }
  bool ListsMethod(std::string_view method) const {
    return std::find(methods.begin(), methods.end(), method) != methods.end();
  }

  // Everything but the method. The path of kPrefix and kExact routes is
  // checked by the index that yields them.
  // `host`: the request's authority (Host, or HTTP/2's :authority), which
  // a matcher on "host" reads whichever protocol carried it.
  bool RestMatches(
      std::string_view path_only, std::string_view query,
      const std::vector<http::HeaderField>* request_headers, std::string_view host) const {
    if (ignore_case && path_kind == PathKind::kPrefix &&
        !StartsWithIgnoringCase(path_only, path)) {
      return false;
    }
    if (ignore_case && path_kind == PathKind::kExact &&
        !absl::EqualsIgnoreCase(ToAbsl(path_only), path)) {
      return false;
    }
    if (path_kind == PathKind::kRegex &&
        (path_only < regex_min ||
         (!regex_max.empty() && path_only > regex_max) ||
         !FullMatch(path_only, *path_regex))) {
      return false;
    }
    std::string joined;  // a repeated field's lines, only when there are several
    for (const Header& h : headers) {
      // Several field lines mean their values joined with commas (RFC 9110
      // 5.3): matched as "a,b", as Envoy does, whatever their order. Cookie
      // lines are one cookie-string, "a=1; b=2" (RFC 6265 5.4), as HTTP/2
      // joins its crumbs (RFC 9113 8.2.3): the same on either protocol.
      bool found = false;
      std::string_view value;
      if (h.name == "host") {
        // HTTP/2 carries it as :authority, not a field: as Envoy, one value.
        found = !host.empty();
        value = host;
      } else if (request_headers != nullptr) {
        for (const http::HeaderField& field : *request_headers) {
          if (!EqualsLowered(field.name, h.name)) continue;
          if (!found) {
            found = true;
            value = field.value;
          } else {
            if (value.data() != joined.data()) joined.assign(value);
            joined.append(h.name == "cookie" ? "; " : ",");
            joined.append(field.value);
            value = joined;
          }
        }
      }
      if (h.condition.Holds(found, value) == h.invert) return false;
    }
    if (!query_parameters.empty()) {
      std::string scratch;  // decoded copies; empty unless '%' or '+' occur
      std::string_view value;
      for (const QueryParameter& q : query_parameters) {
        bool found = FindQueryParameter(query, q.name, &scratch, &value);
        if (!q.condition.Holds(found, value)) return false;
      }
    }
    return true;
  }
};

// A route's entry and matcher, compiled once and shared, immutable, by every
// table Recompile makes from the one that compiled it.
struct RouteTable::CompiledRoute {
  RouteMatcher matcher;
  RouteEntry entry;

  // Compiles route `r` of virtual host `v` (labelled `vhost_label`) as route
  // `id`. Errors: INVALID_ARGUMENT naming virtual_hosts[v].routes[r]...
  static absl::StatusOr<std::shared_ptr<const CompiledRoute>> Compile(
      const config::v1::Route& route_config, int v, int r,
      const std::string& vhost_label, uint32_t id);
  // Compiles the path, method, header and query conditions of `match`;
  // `field` names the route in errors.
  static absl::Status CompileMatcher(const RouteMatch& match,
                                     const std::string& field,
                                     RouteMatcher* matcher);
};

struct RouteTable::VirtualHost {
  // The name, or the index when unnamed (RouteEntry::virtual_host).
  std::string label;
  // Its routes are ids first_id .. first_id + route_count - 1.
  uint32_t first_id = 0;
  uint32_t route_count = 0;

  // Exact path -> its route ids, exact_ids[begin .. begin + size), ascending.
  // Keys view the `path` of the routes' matchers, which the table owns.
  struct IdSpan {
    uint32_t begin = 0;
    uint32_t size = 0;
  };
  absl::flat_hash_map<absl::string_view, IdSpan> exact_paths;
  std::vector<uint32_t> exact_ids;
  // The prefix routes as (prefix, id) sorted by prefix then id (viewing the
  // matchers' paths), and the trie built from them. Recompile patches the
  // sorted list rather than sorting the routes again.
  std::vector<std::pair<absl::string_view, uint32_t>> prefix_routes;
  PrefixTrie prefixes;
  // Regex routes and those ignoring case: checked on every request,
  // ascending.
  std::vector<uint32_t> regex_routes;

  // Builds exact_paths, exact_ids, `prefixes` (from prefix_routes, which the
  // caller fills) and regex_routes from the matchers of the virtual host's
  // routes in `routes`. O(route_count) with no allocation per route.
  void BuildIndex(
      const std::vector<std::shared_ptr<const CompiledRoute>>& routes);

  // Calls visit(const uint32_t* ids, size_t count) for every list of routes
  // whose path condition may hold (for regex routes: is still to be checked).
  template <typename Visit>
  void ForEachCandidateList(std::string_view path, Visit&& visit) const {
    auto it = exact_paths.find(ToAbsl(path));
    if (it != exact_paths.end()) {
      visit(exact_ids.data() + it->second.begin, it->second.size);
    }
    prefixes.ForEachPrefixOf(path, visit);
    if (!regex_routes.empty()) visit(regex_routes.data(), regex_routes.size());
  }
};

void RouteTable::VirtualHost::BuildIndex(
    const std::vector<std::shared_ptr<const CompiledRoute>>& routes) {
  exact_paths.clear();
  exact_ids.clear();
  regex_routes.clear();
  // Count the routes of each exact path, lay the lists out, then fill them in
  // id order (so each is ascending).
  const uint32_t end = first_id + route_count;
  for (uint32_t id = first_id; id < end; ++id) {
    const RouteMatcher& m = routes[id]->matcher;
    if (m.path_kind == RouteMatcher::PathKind::kRegex || m.ignore_case) {
      regex_routes.push_back(id);
    } else if (m.path_kind == RouteMatcher::PathKind::kExact) {
      ++exact_paths[m.path].size;
    }
  }
  uint32_t next = 0;
  for (auto& [path, span] : exact_paths) {
    span.begin = next;
    next += span.size;
    span.size = 0;
  }
  exact_ids.resize(next);
  for (uint32_t id = first_id; id < end; ++id) {
    const RouteMatcher& m = routes[id]->matcher;
    if (m.path_kind != RouteMatcher::PathKind::kExact || m.ignore_case) continue;
    IdSpan& span = exact_paths.find(m.path)->second;
    exact_ids[span.begin + span.size++] = id;
  }
  prefixes.Build(prefix_routes);
}

RouteTable::RouteTable() = default;
RouteTable::~RouteTable() = default;

const RouteEntry& RouteTable::route(uint32_t id) const {
  return routes_[id]->entry;
}

absl::Status RouteTable::CompiledRoute::CompileMatcher(const RouteMatch& match,
                                                       const std::string& field,
                                                       RouteMatcher* matcher) {
  matcher->ignore_case = api::MatchIgnoresCase(match);
  switch (match.path_specifier_case()) {
    case RouteMatch::kPrefix:
      matcher->path_kind = RouteMatcher::PathKind::kPrefix;
      matcher->path = match.prefix();
      break;
    case RouteMatch::kPath:
      matcher->path_kind = RouteMatcher::PathKind::kExact;
      matcher->path = match.path();
      break;
    case RouteMatch::kRegex: {
      matcher->path_kind = RouteMatcher::PathKind::kRegex;
      auto re = CompileRegex(match.regex(), field + ".match.regex", !matcher->ignore_case);
      if (!re.ok()) return re.status();
      matcher->path_regex = *std::move(re);
      if (!matcher->path_regex->PossibleMatchRange(
              &matcher->regex_min, &matcher->regex_max, kRegexRangeLength)) {
        matcher->regex_min.clear();
        matcher->regex_max.clear();
      }
      break;
    }
    case RouteMatch::PATH_SPECIFIER_NOT_SET:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".match: needs one of prefix, path or regex"));
  }
  matcher->methods.assign(match.methods().begin(), match.methods().end());
  for (int i = 0; i < match.headers_size(); ++i) {
    const HeaderMatcher& h = match.headers(i);
    RouteMatcher::Header header;
    header.name = absl::AsciiStrToLower(h.name());
    header.invert = h.invert();
    absl::Status compiled =
        header.condition.Compile(h, absl::StrCat(field, ".match.headers[", i, "]"));
    if (!compiled.ok()) return compiled;
    matcher->headers.push_back(std::move(header));
  }
  for (int i = 0; i < match.query_parameters_size(); ++i) {
    const QueryParameterMatcher& q = match.query_parameters(i);
    RouteMatcher::QueryParameter param;
    param.name = q.name();
    absl::Status compiled =
        param.condition.Compile(q, absl::StrCat(field, ".match.query_parameters[", i, "]"));
    if (!compiled.ok()) return compiled;
    matcher->query_parameters.push_back(std::move(param));
  }
  return absl::OkStatus();
}

namespace {

// Fills the entry of route `r` (`route_config`) of the virtual host labelled
// `vhost_label`.
absl::Status CompileEntry(const config::v1::Route& route_config,
                          const std::string& field,
                          const std::string& vhost_label, int r, uint32_t id,
                          RouteEntry* entry) {
  const RouteMatch& match = route_config.match();
  entry->id = id;
  entry->name = api::RouteName(route_config, vhost_label, r);
  entry->virtual_host = vhost_label;
  entry->timeout = api::kDefaultRouteTimeout;
  switch (route_config.action_case()) {
    case config::v1::Route::kRoute: {
      const config::v1::RouteAction& action = route_config.route();
      entry->action = RouteEntry::Action::kCluster;
      if (action.has_weighted_clusters()) {
        uint64_t total = 0;
        for (const auto& c : action.weighted_clusters().clusters()) {
          total += c.weight();
          entry->clusters.push_back(
              {c.name(),
               static_cast<uint32_t>(std::min<uint64_t>(total, UINT32_MAX))});
        }
        if (total == 0 || total > UINT32_MAX) {
          return absl::InvalidArgumentError(
              absl::StrCat(field, ".route.weighted_clusters: weights sum to ",
                           total, "; must be 1..", UINT32_MAX));
        }
        entry->total_weight = total;
      } else if (action.has_cluster()) {
        entry->clusters.push_back({action.cluster(), 1});
        entry->total_weight = 1;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".route: needs cluster or weighted_clusters"));
      }
      if (action.has_timeout()) {
        entry->timeout = api::ToDuration(action.timeout());
      }
      entry->prefix_rewrite = action.prefix_rewrite();
      entry->websocket = action.websocket();
      entry->websocket_idle_timeout =
          action.has_websocket_idle_timeout()
              ? api::ToDuration(action.websocket_idle_timeout())
              : api::kDefaultWebSocketIdleTimeout;
      entry->idle_timeout = action.has_idle_timeout()
                                ? api::ToDuration(action.idle_timeout())
                                : api::kDefaultStreamIdleTimeout;
      entry->max_request_body_bytes = action.max_request_body_bytes();
      // Kept for resends even without a retry policy (see ProxyStream).
      entry->retry.max_replay_bytes = api::kDefaultMaxReplayBytes;
      if (action.has_retry_policy()) {
        const auto& rp = action.retry_policy();
        RouteEntry::Retry& r = entry->retry;
        r.num_retries = rp.has_num_retries() ? rp.num_retries() : 1;
        if (rp.retry_on_size() == 0) {
          r.on_connect_failure = r.on_reset = true;
        }
        for (const std::string& on : rp.retry_on()) {
          if (on == "connect-failure") r.on_connect_failure = true;
          if (on == "reset") r.on_reset = true;
          if (on == "gateway-error")
            r.on_gateway_error = r.on_connect_failure = r.on_reset = true;
          if (on == "5xx") r.on_5xx = r.on_connect_failure = r.on_reset = true;
          if (int code = api::GrpcRetryOnCode(on); code >= 0) r.grpc_statuses |= 1u << code;
        }
        r.status_codes.assign(rp.retriable_status_codes().begin(),
                              rp.retriable_status_codes().end());
        r.per_try_timeout = api::ToDuration(rp.per_try_timeout());
        r.base_interval = rp.has_base_interval()
                              ? api::ToDuration(rp.base_interval())
                              : api::kDefaultRetryBaseInterval;
        r.max_interval = rp.has_max_interval()
                             ? api::ToDuration(rp.max_interval())
                             : api::kDefaultRetryMaxInterval;
        if (r.max_interval < r.base_interval) r.max_interval = r.base_interval;
        r.retry_non_idempotent = rp.retry_non_idempotent();
        r.max_replay_bytes = rp.max_replay_bytes()
                                 ? rp.max_replay_bytes()
                                 : api::kDefaultMaxReplayBytes;
      } else {
        // No retry policy: a try that reached no upstream (refused, connect
        // timeout) is tried on up to two more endpoints it has not tried, as
        // nginx's proxy_next_upstream, HAProxy's retries and Kong's do by
        // default (two of three endpoints dying at once cost no request);
        // `retry_policy: {num_retries: 0}` turns it off.
        entry->retry.num_retries = 2;
        entry->retry.on_connect_failure = true;
        entry->retry.implicit = true;
        entry->retry.base_interval = api::kDefaultRetryBaseInterval;
        entry->retry.max_interval = api::kDefaultRetryMaxInterval;
      }
      break;
    }
    case config::v1::Route::kRedirect: {
      const config::v1::RedirectAction& redirect = route_config.redirect();
      entry->action = RouteEntry::Action::kRedirect;
      entry->host_redirect = redirect.host_redirect();
      entry->path_redirect = redirect.path_redirect();
      entry->prefix_rewrite = redirect.prefix_rewrite();
      entry->scheme_redirect = redirect.scheme_redirect();
      entry->redirect_code =
          redirect.response_code() == 0 ? 301 : redirect.response_code();
      entry->strip_query = redirect.strip_query();
      break;
    }
    case config::v1::Route::kDirectResponse: {
      const config::v1::DirectResponseAction& direct =
          route_config.direct_response();
      entry->action = RouteEntry::Action::kDirectResponse;
      entry->direct_status = direct.status();
      entry->direct_body = direct.body();
      entry->direct_content_type =
          direct.content_type().empty() ? "text/plain" : direct.content_type();
      break;
    }
    case config::v1::Route::ACTION_NOT_SET:
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": needs one of route, redirect or direct_response"));
  }
  if (match.path_specifier_case() == RouteMatch::kPrefix) {
    entry->matched_prefix = match.prefix();
    entry->matched_prefix_ignores_case = api::MatchIgnoresCase(match);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const RouteTable::CompiledRoute>>
RouteTable::CompiledRoute::Compile(const config::v1::Route& route_config, int v,
                                   int r, const std::string& vhost_label,
                                   uint32_t id) {
  const std::string field =
      absl::StrCat("virtual_hosts[", v, "].routes[", r, "]");
  auto route = std::make_shared<CompiledRoute>();
  absl::Status status =
      CompileMatcher(route_config.match(), field, &route->matcher);
  if (status.ok()) {
    status =
        CompileEntry(route_config, field, vhost_label, r, id, &route->entry);
  }
  if (!status.ok()) return status;
  return std::shared_ptr<const CompiledRoute>(std::move(route));
}

void RouteTable::IndexDomains(const config::v1::RouteTable& config) {
  for (int v = 0; v < config.virtual_hosts_size(); ++v) {
    for (const std::string& domain : config.virtual_hosts(v).domains()) {
      std::string lower = absl::AsciiStrToLower(domain);
      if (lower == "*") {
        if (star_virtual_host_ < 0) star_virtual_host_ = v;
      } else if (StartsWith(lower, "*.")) {
        wildcard_domains_.emplace(lower.substr(1), v);
      } else {
        exact_domains_.emplace(lower, v);
      }
    }
  }
}

absl::StatusOr<std::shared_ptr<const RouteTable>> RouteTable::Compile(
    const config::v1::RouteTable& config) {
  std::shared_ptr<RouteTable> table(new RouteTable());
  table->name_ = config.name();
  table->IndexDomains(config);
  for (int v = 0; v < config.virtual_hosts_size(); ++v) {
    const config::v1::VirtualHost& vhost_config = config.virtual_hosts(v);
    auto vhost = std::make_shared<VirtualHost>();
    vhost->label = api::VirtualHostLabel(vhost_config, v);
    vhost->first_id = table->routes_.size();
    vhost->route_count = vhost_config.routes_size();
    for (int r = 0; r < vhost_config.routes_size(); ++r) {
      const uint32_t id = table->routes_.size();
      auto route = CompiledRoute::Compile(vhost_config.routes(r), v, r,
                                          vhost->label, id);
      if (!route.ok()) return route.status();
      const RouteMatcher& m = (*route)->matcher;
      if (m.path_kind == RouteMatcher::PathKind::kPrefix && !m.ignore_case) {
        vhost->prefix_routes.emplace_back(m.path, id);
      }
      table->routes_.push_back(*std::move(route));
    }
    std::sort(vhost->prefix_routes.begin(), vhost->prefix_routes.end());
    vhost->BuildIndex(table->routes_);
    table->virtual_hosts_.push_back(std::move(vhost));
  }
  return std::shared_ptr<const RouteTable>(std::move(table));
}

absl::StatusOr<std::shared_ptr<const RouteTable>> RouteTable::Recompile(
    const RouteTable& previous, const config::v1::RouteTable& config,
    const std::vector<uint32_t>& replaced) {
  // The shape: virtual hosts, their labels and route counts.
  if (static_cast<size_t>(config.virtual_hosts_size()) !=
      previous.virtual_hosts_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "route table patch: the table has ", config.virtual_hosts_size(),
        " virtual hosts, the previous one ", previous.virtual_hosts_.size()));
  }
  for (int v = 0; v < config.virtual_hosts_size(); ++v) {
    const config::v1::VirtualHost& vhost_config = config.virtual_hosts(v);
    const VirtualHost& old = *previous.virtual_hosts_[v];
    if (static_cast<uint32_t>(vhost_config.routes_size()) != old.route_count) {
      return absl::InvalidArgumentError(
          absl::StrCat("route table patch: virtual_hosts[", v, "] has ",
                       vhost_config.routes_size(),
                       " routes, the previous table's ", old.route_count));
    }
    if (api::VirtualHostLabel(vhost_config, v) != old.label) {
      return absl::InvalidArgumentError(absl::StrCat(
          "route table patch: virtual_hosts[", v, "].name is '",
          vhost_config.name(), "', the previous table's '", old.label, "'"));
    }
  }
  for (size_t i = 0; i < replaced.size(); ++i) {
    if (replaced[i] >= previous.routes_.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("route table patch: replaced route id ", replaced[i],
                       " is out of range (the table has ",
                       previous.routes_.size(), " routes)"));
    }
    if (i > 0 && replaced[i] <= replaced[i - 1]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "route table patch: replaced route ids must be ascending and "
          "distinct; ",
          replaced[i], " follows ", replaced[i - 1]));
    }
  }

  std::shared_ptr<RouteTable> table(new RouteTable());
  table->name_ = config.name();
  table->IndexDomains(config);
  table->routes_ = previous.routes_;
  table->virtual_hosts_ = previous.virtual_hosts_;
  size_t k = 0;  // next in `replaced`
  for (int v = 0; v < config.virtual_hosts_size() && k < replaced.size(); ++v) {
    const VirtualHost& old = *previous.virtual_hosts_[v];
    const size_t begin = k;
    std::vector<std::pair<absl::string_view, uint32_t>> added_prefixes;
    for (; k < replaced.size() && replaced[k] < old.first_id + old.route_count;
         ++k) {
      const uint32_t id = replaced[k];
      const int r = id - old.first_id;
      auto route = CompiledRoute::Compile(config.virtual_hosts(v).routes(r), v,
                                          r, old.label, id);
      if (!route.ok()) return route.status();
      const RouteMatcher& m = (*route)->matcher;
      if (m.path_kind == RouteMatcher::PathKind::kPrefix && !m.ignore_case) {
        added_prefixes.emplace_back(m.path, id);
      }
      table->routes_[id] = *std::move(route);
    }
    if (k == begin) continue;  // no route of this virtual host replaced

    // The new index: the old sorted prefix list without the replaced routes,
    // merged with the replaced routes that match on prefix.
    auto vhost = std::make_shared<VirtualHost>();
    vhost->label = old.label;
    vhost->first_id = old.first_id;
    vhost->route_count = old.route_count;
    std::sort(added_prefixes.begin(), added_prefixes.end());
    std::vector<std::pair<absl::string_view, uint32_t>> kept;
    kept.reserve(old.prefix_routes.size());
    for (const auto& entry : old.prefix_routes) {
      if (!std::binary_search(replaced.begin() + begin, replaced.begin() + k,
                              entry.second)) {
        kept.push_back(entry);
      }
    }
    vhost->prefix_routes.reserve(kept.size() + added_prefixes.size());
    std::merge(kept.begin(), kept.end(), added_prefixes.begin(),
               added_prefixes.end(), std::back_inserter(vhost->prefix_routes));
    vhost->BuildIndex(table->routes_);
    table->virtual_hosts_[v] = std::move(vhost);
  }
  return std::shared_ptr<const RouteTable>(std::move(table));
}

const RouteTable::VirtualHost* RouteTable::FindVirtualHost(
    std::string_view raw_host) const {
  std::string_view host = http::StripPort(raw_host);
  // "api.example.com." is the same name, fully qualified (RFC 1034 3.1);
  // upstreams read it so (nginx drops the dot too), so it must get the same
  // virtual host and policies.
  if (host.size() > 1 && host.back() == '.') host.remove_suffix(1);
  // An IPv6 address in its usual spelling (RFC 5952), as domains are
  // written: [0:0::1] is [::1], and gets its virtual host and policies.
  std::string address;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    if (std::string canonical = http::CanonicalIpv6(host.substr(1, host.size() - 2));
        !canonical.empty()) {
      address = absl::StrCat("[", canonical, "]");
      host = address;
    }
  }
  // Lower-case on the stack; a Host longer than any DNS name takes the slow
  // path.
  char buffer[256];
  std::string long_host;
  bool has_upper = std::any_of(host.begin(), host.end(),
                               [](char c) { return absl::ascii_isupper(c); });
  if (has_upper) {
    if (host.size() <= sizeof(buffer)) {
      for (size_t i = 0; i < host.size(); ++i) {
        buffer[i] = absl::ascii_tolower(static_cast<unsigned char>(host[i]));
      }
      host = std::string_view(buffer, host.size());
    } else {
      long_host = absl::AsciiStrToLower(ToAbsl(host));
      host = long_host;
    }
  }

  if (!exact_domains_.empty()) {
    auto it = exact_domains_.find(ToAbsl(host));
    if (it != exact_domains_.end()) return virtual_hosts_[it->second].get();
  }
  if (!wildcard_domains_.empty()) {
    // The leftmost '.' (after the first byte) gives the longest suffix.
    for (size_t dot = host.find('.', 1); dot != std::string_view::npos;
         dot = host.find('.', dot + 1)) {
      auto it = wildcard_domains_.find(ToAbsl(host.substr(dot)));
      if (it != wildcard_domains_.end()) return virtual_hosts_[it->second].get();
    }
  }
  if (star_virtual_host_ >= 0) return virtual_hosts_[star_virtual_host_].get();
  return nullptr;
}

MatchResult RouteTable::Match(const RouteRequest& request) const {
  MatchResult result;
  const VirtualHost* vhost = FindVirtualHost(request.host);
  if (vhost == nullptr) return result;

  std::string_view path = request.path_and_query;
  std::string_view query;
  size_t question = path.find('?');
  if (question != std::string_view::npos) {
    query = path.substr(question + 1);
    path = path.substr(0, question);
  }

  // The answer is the smallest id that matches fully: each candidate list is
  // ascending, so it is searched only below the best id found so far.
  uint32_t best = kNoRouteId;
  vhost->ForEachCandidateList(path, [&](const uint32_t* ids, size_t count) {
    for (size_t i = 0; i < count && ids[i] < best; ++i) {
      const RouteMatcher& m = routes_[ids[i]]->matcher;
      if (m.MethodMatches(request.method) &&
          m.RestMatches(path, query, request.headers, request.host)) {
        best = ids[i];
        return;
      }
    }
  });
  // A HEAD that the first match takes only along with its GET goes to the
  // next matching route that takes HEAD itself, when that one lists HEAD:
  // its author meant HEAD to go there (it did before GET took HEAD along).
  // When the next one takes any method, the GET route keeps it.
  if (best != kNoRouteId && request.method == "HEAD" && !routes_[best]->matcher.methods.empty() &&
      !routes_[best]->matcher.ListsMethod("HEAD")) {
    uint32_t next = kNoRouteId;
    vhost->ForEachCandidateList(path, [&](const uint32_t* ids, size_t count) {
      for (size_t i = 0; i < count && ids[i] < next; ++i) {
        const RouteMatcher& m = routes_[ids[i]]->matcher;
        if (ids[i] > best && (m.methods.empty() || m.ListsMethod("HEAD")) &&
            m.RestMatches(path, query, request.headers, request.host)) {
          next = ids[i];
          return;
        }
      }
    });
    if (next != kNoRouteId && routes_[next]->matcher.ListsMethod("HEAD")) best = next;
  }
  if (best != kNoRouteId) {
    result.kind = MatchResult::Kind::kRoute;
    result.route = &routes_[best]->entry;
    return result;
  }

  // Slow path: would a route match with any method?
  std::set<std::string_view> allowed;
  vhost->ForEachCandidateList(path, [&](const uint32_t* ids, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      const RouteMatcher& m = routes_[ids[i]]->matcher;
      if (m.RestMatches(path, query, request.headers, request.host)) {
        allowed.insert(m.methods.begin(), m.methods.end());
        if (m.MethodMatches("HEAD")) allowed.insert("HEAD");
      }
    }
  });
  if (!allowed.empty()) {
    result.kind = MatchResult::Kind::kMethodNotAllowed;
    for (std::string_view method : allowed) {
      if (!result.allowed_methods.empty()) result.allowed_methods += ", ";
      result.allowed_methods.append(method);
    }
  }
  return result;
}

const std::string& RouteEntry::PickCluster(uint64_t random) const {
  static const std::string* const kEmpty = new std::string();
  if (clusters.empty() || total_weight == 0) return *kEmpty;
  // Scale onto [0, total_weight): floor(random * total / 2^64).
  uint64_t point =
      absl::Uint128High64(absl::uint128(random) * absl::uint128(total_weight));
  auto it = std::upper_bound(clusters.begin(), clusters.end(), point,
                             [](uint64_t p, const ClusterChoice& c) {
                               return p < c.cumulative_weight;
                             });
  if (it == clusters.end()) --it;  // unreachable: point < total_weight
  return it->name;
}

namespace {

// Whether `path` begins with the prefix `entry` matched (in any case, when
// the match ignores case): what its prefix_rewrite replaces.
bool StartsWithMatchedPrefix(const RouteEntry& entry, std::string_view path) {
  return !entry.matched_prefix.empty() &&
         (entry.matched_prefix_ignores_case ? StartsWithIgnoringCase(path, entry.matched_prefix)
                                            : StartsWith(path, entry.matched_prefix));
}

}  // namespace

std::string RouteEntry::RewritePath(std::string_view path_and_query) const {
  if (prefix_rewrite.empty() || !StartsWithMatchedPrefix(*this, path_and_query)) {
    return std::string(path_and_query);
  }
  std::string out = prefix_rewrite;
  out.append(path_and_query.substr(matched_prefix.size()));
  return out;
}

std::string RouteEntry::RedirectLocation(
    std::string_view scheme, std::string_view host,
    std::string_view path_and_query) const {
  std::string_view new_scheme =
      scheme_redirect.empty() ? scheme : std::string_view(scheme_redirect);
  std::string_view new_host = host;
  if (!host_redirect.empty()) {
    new_host = host_redirect;
  } else if (new_scheme != scheme) {
    std::string_view default_port = scheme == "http"    ? ":80"
                                    : scheme == "https" ? ":443"
                                                        : std::string_view();
    if (!default_port.empty() && host.size() > default_port.size() &&
        host.substr(host.size() - default_port.size()) == default_port) {
      std::string_view bare = host.substr(0, host.size() - default_port.size());
      // "[::1]:80" or "a.com:80", not the bare IPv6 "::80".
      if (bare.back() == ']' || bare.find(':') == std::string_view::npos) {
        new_host = bare;
      }
    }
  }

  std::string_view path = path_and_query;
  std::string_view query;  // with its '?'
  size_t question = path.find('?');
  if (question != std::string_view::npos) {
    query = path.substr(question);
    path = path.substr(0, question);
  }
  std::string_view fragment;  // with its '#': the path_redirect's own
  if (!path_redirect.empty()) {
    path = path_redirect;
    if (size_t hash = path.find('#'); hash != std::string_view::npos) {
      fragment = path.substr(hash);
      path = path.substr(0, hash);
    }
    if (path.find('?') != std::string_view::npos) query = {};
  }
  std::string rewritten;  // prefix_rewrite's path
  if (path_redirect.empty() && !prefix_rewrite.empty() && StartsWithMatchedPrefix(*this, path)) {
    rewritten = absl::StrCat(prefix_rewrite, ToAbsl(path.substr(matched_prefix.size())));
    path = rewritten;
  }
  if (strip_query) query = {};

  std::string out;
  out.reserve(new_scheme.size() + 3 + new_host.size() + path.size() + query.size() +
              fragment.size());
  // No host to name (an HTTP/1.0 request without Host): a relative
  // reference, which Location allows (RFC 9110 10.2.2); "http:///x" is no
  // URI (RFC 9110 4.2.1). Not when the scheme changes: the reference would
  // keep this one and send the client back here (the caller answers 400).
  if (new_host.empty() && new_scheme != scheme) return "";
  if (!new_host.empty()) {
    out.append(new_scheme);
    out.append("://");
    out.append(new_host);
  } else if (path.size() >= 2 && path[0] == '/' && path[1] == '/') {
    // A relative "//evil.example/x" names another host (RFC 3986 4.2): "/."
    // keeps it a path on this one ("/.//evil.example/x" resolves to the
    // path "//evil.example/x").
    out.append("/.");
  }
  // A backslash kept in a path (KEEP_BACKSLASH) goes as %5C.
  http::AppendLocationPath(path, &out);
  out.append(query);  // before the fragment (RFC 3986 3.5)
  out.append(fragment);
  return out;
}

}  // namespace sluice::router

namespace sluice::router {

bool RouteEntry::Retry::RetriesStatus(int status) const {
  if (num_retries == 0) return false;
  if (on_5xx && status >= 500 && status <= 599) return true;
  if (on_gateway_error && (status == 502 || status == 503 || status == 504)) return true;
  for (uint32_t code : status_codes) {
    if (static_cast<int>(code) == status) return true;
  }
  return false;
}

}  // namespace sluice::router
