#include "dataplane/admin/clusters_page.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "dataplane/stats/stats.h"
#include "dataplane/upstream/endpoint_picker.h"

namespace sluice::admin {
namespace {

std::string HealthCheckText(const upstream::HealthCheckConfig& hc) {
  switch (hc.kind) {
    case upstream::HealthCheckConfig::Kind::kHttp: return absl::StrCat("http ", hc.path);
    case upstream::HealthCheckConfig::Kind::kGrpc:
      return hc.grpc_service.empty() ? std::string("grpc")
                                     : absl::StrCat("grpc ", hc.grpc_service);
    case upstream::HealthCheckConfig::Kind::kTcp: break;
  }
  return "tcp";
}

using upstream::EndpointInfo;
using upstream::Health;

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out + "\"";
}

struct EndpointView {
  std::string health;  // healthy, unhealthy, unknown, ejected
  std::string reason;
  double ejected_seconds_left = 0;
};

EndpointView View(const EndpointInfo& e, int64_t now) {
  EndpointView v;
  Health h = e.state->health.load();
  int64_t until = e.state->ejected_until_ns.load();
  if (h == Health::kUnhealthy) {
    v.health = "unhealthy";
    v.reason = absl::StrCat("active health check: ", e.state->last_check_failure());
  } else if (h == Health::kUnknown) {
    v.health = "unknown";
    v.reason = "no health check has passed yet";
    // Failing, not yet unhealthy_threshold times: "not checked yet" and
    // "failing" look alike otherwise.
    if (std::string failure = e.state->last_check_failure(); !failure.empty()) {
      absl::StrAppend(&v.reason, "; the last one failed: active health check: ", failure);
    }
  } else {
    v.health = "healthy";
  }
  if (until > now) {
    v.ejected_seconds_left = static_cast<double>(until - now) / 1e9;
    if (h == Health::kHealthy) {
      v.health = "ejected";
      v.reason = absl::StrCat("outlier detection, ejected ", e.state->times_ejected.load(),
                              " times");
    }
  }
  return v;
}

std::string Policy(const upstream::ClusterInfo& c) {
  return config::v1::Cluster::LbPolicy_Name(c.lb_policy);
}

// How many endpoints are usable, as the picker counts them; whether that is
// too few (panic: traffic goes to every endpoint, the unhealthy ones too).
bool InPanic(const upstream::ClusterInfo& c, int64_t now, size_t* usable) {
  *usable = 0;
  for (const EndpointInfo& e : c.endpoints) *usable += e.state->usable(now) ? 1 : 0;
  if (!c.health_check.enabled && !c.outlier.enabled) *usable = c.endpoints.size();
  return !c.endpoints.empty() && upstream::InPanic(c, *usable);
}

}  // namespace

std::string RenderClusters(const config::ConfigSnapshot* snapshot, bool json) {
  if (snapshot == nullptr) return json ? "{\"version\":0,\"clusters\":[]}\n" : "no config applied yet\n";
  const int64_t now = upstream::NowNanos();
  std::map<std::string, const upstream::ClusterInfo*> sorted;
  for (const auto& [name, cluster] : snapshot->clusters) sorted[name] = cluster.get();
  std::string out;
  if (json) absl::StrAppend(&out, "{\"version\":", snapshot->version, ",\"clusters\":[");
  bool first_cluster = true;
  for (const auto& [name, c] : sorted) {
    const upstream::ClusterState& cs = *c->state;
    size_t usable = 0;
    const bool panic = InPanic(*c, now, &usable);
    if (json) {
      absl::StrAppend(&out, first_cluster ? "" : ",", "{\"name\":", JsonString(name),
                      ",\"lb_policy\":\"", Policy(*c), "\",\"active_requests\":",
                      cs.active_requests.load(), ",\"pending_requests\":",
                      cs.pending_requests.load(), ",\"connections\":", cs.connections.load(),
                      ",\"active_retries\":", cs.active_retries.load(),
                      ",\"usable_endpoints\":", usable, ",\"panic\":", panic ? "true" : "false");
      if (!c->dns_problems.empty()) {
        absl::StrAppend(&out, ",\"dns_problems\":[");
        for (size_t i = 0; i < c->dns_problems.size(); ++i) {
          absl::StrAppend(&out, i ? "," : "", JsonString(c->dns_problems[i]));
        }
        absl::StrAppend(&out, "]");
      }
      absl::StrAppend(&out, ",\"endpoints\":[");
    } else {
      absl::StrAppend(&out, "cluster ", name, " (", Policy(*c), ", ", c->endpoints.size(),
                      " endpoints");
      if (c->health_check.enabled) {
        absl::StrAppend(&out, ", health check ",
                        HealthCheckText(c->health_check),
                        " every ", absl::FormatDuration(c->health_check.interval));
      }
      if (c->outlier.enabled) absl::StrAppend(&out, ", outlier detection");
      absl::StrAppend(&out, "): active_requests=", cs.active_requests.load(),
                      " pending=", cs.pending_requests.load(),
                      " connections=", cs.connections.load(),
                      " active_retries=", cs.active_retries.load(), "\n");
      if (panic) {
        absl::StrAppend(&out, "  panic: ", usable, " of ", c->endpoints.size(),
                        " endpoints usable, under panic_threshold_percent ",
                        c->panic_threshold_percent,
                        ": requests go to every endpoint, the unhealthy ones too\n");
      }
      for (const std::string& problem : c->dns_problems) {
        absl::StrAppend(&out, "  dns: ", problem, " (no endpoint from it)\n");
      }
    }
    first_cluster = false;
    bool first_endpoint = true;
    for (const EndpointInfo& e : c->endpoints) {
      EndpointView v = View(e, now);
      const upstream::EndpointState& s = *e.state;
      // A healthy endpoint in its slow start, and its share of its weight.
      const int64_t permille = upstream::SlowStartPermille(*c, s, now);
      const bool ramping = permille < 1000 && v.health == "healthy";
      if (json) {
        absl::StrAppend(&out, first_endpoint ? "" : ",", "{\"address\":", JsonString(e.key),
                        e.host_name.empty() ? std::string()
                                            : absl::StrCat(",\"host_name\":",
                                                           JsonString(e.host_name)),
                        ",\"health\":\"", v.health, "\",\"reason\":", JsonString(v.reason),
                        ",\"ejected_seconds_left\":", v.ejected_seconds_left,
                        // As the next ejection will count it (decayed).
                        ",\"times_ejected\":",
                        upstream::DecayedTimesEjected(c->outlier, s, now),
                        ",\"weight\":", e.weight,
                        ramping ? absl::StrCat(",\"slow_start_percent\":", permille / 10)
                                : std::string(),
                        ",\"active_requests\":", s.active_requests.load(),
                        ",\"connections\":", s.connections.load(),
                        ",\"successes\":", s.successes.load(), ",\"errors\":", s.errors.load(), "}");
      } else {
        absl::StrAppend(&out, "  ", e.key,
                        e.host_name.empty() ? std::string() : absl::StrCat(" (", e.host_name, ")"),
                        " health=", v.health, " weight=", e.weight);
        if (ramping) absl::StrAppend(&out, " slow_start=", permille / 10, "%");
        absl::StrAppend(&out, " active_requests=", s.active_requests.load(),
                        " connections=", s.connections.load(), " successes=", s.successes.load(),
                        " errors=", s.errors.load());
        if (!v.reason.empty()) absl::StrAppend(&out, " (", v.reason, ")");
        if (v.ejected_seconds_left > 0) {
          absl::StrAppend(&out, " ejected_for=", absl::FormatDuration(
                                                    absl::Seconds(v.ejected_seconds_left)));
        }
        absl::StrAppend(&out, "\n");
      }
      first_endpoint = false;
    }
    if (json) absl::StrAppend(&out, "]}");
  }
  if (json) absl::StrAppend(&out, "]}\n");
  return out;
}

std::string RenderEndpointHealthMetrics(const config::ConfigSnapshot* snapshot) {
  if (snapshot == nullptr) return "";
  static constexpr const char* kStates[] = {"healthy", "unhealthy", "unknown", "ejected"};
  const int64_t now = upstream::NowNanos();
  std::map<std::string, const upstream::ClusterInfo*> sorted;
  for (const auto& [name, cluster] : snapshot->clusters) sorted[name] = cluster.get();
  std::string out =
      "# HELP sluice_cluster_endpoints Endpoints of each cluster by health, as /clusters "
      "shows them: healthy, unhealthy (failed its active check), unknown (no check passed "
      "yet), ejected (outlier detection).\n"
      "# TYPE sluice_cluster_endpoints gauge\n";
  for (const auto& [name, c] : sorted) {
    size_t counts[4] = {};
    for (const EndpointInfo& e : c->endpoints) {
      const std::string health = View(e, now).health;
      for (size_t i = 0; i < 4; ++i) {
        if (health == kStates[i]) ++counts[i];
      }
    }
    const std::string label = stats::LabelValue(name);
    for (size_t i = 0; i < 4; ++i) {
      absl::StrAppend(&out, "sluice_cluster_endpoints{cluster=", label, ",health=\"",
                      kStates[i], "\"} ", counts[i], "\n");
    }
  }
  return out;
}

}  // namespace sluice::admin
