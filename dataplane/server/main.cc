// sluice-proxy: the data plane. Takes its whole config from sluice-control.
//
//   sluice-proxy --control-plane HOST:PORT[,HOST:PORT...] --node-id ID [--group G]
//                [--workers N] [--admin 127.0.0.1:9901] [--state-dir DIR]
//                [--drain-timeout 30s] [--log-level info]
//                [--max-connections N] [--max-memory-mb N] [--cache-memory-mb 64]
//                [--max-held-body-mb N]
//                [--control-plane-keepalive 30s] [--control-plane-keepalive-timeout 10s]
//                [--report-interval 5s] [--rate-limit-report-interval 200ms]
//                [--control-plane-ca FILE [--control-plane-cert FILE --control-plane-key FILE]
//                 [--control-plane-server-name NAME]]
#include <event2/event.h>
#if defined(SLUICE_TCMALLOC)
#include <gperftools/malloc_extension_c.h>
#elif defined(__SANITIZE_ADDRESS__)
// libasan's (GCC ships no header declaring it).
extern "C" void __sanitizer_purge_allocator();
#endif
#include <malloc.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "api/discovery.h"
#include "common/flags.h"
#include "common/grpc_log.h"
#include "common/log.h"
#include "common/loopback.h"
#include "common/random_id.h"
#include "common/pem_file.h"
#include "controlplane/store/file_store.h"
#include "dataplane/admin/admin_server.h"
#include "dataplane/admin/config_dump.h"
#include "dataplane/admin/clusters_page.h"
#include "dataplane/config/config_client.h"
#include "dataplane/accesslog/access_log.h"
#include "dataplane/config/snapshot.h"
#include "dataplane/policy/cache/store.h"
#include "dataplane/policy/rate_limit/fleet_board.h"
#include "dataplane/server/cpu_set.h"
#include "dataplane/server/liveness.h"
#include "dataplane/server/traffic_report.h"
#include "dataplane/server/worker.h"
#include "dataplane/upstream/dns_cache.h"
#include "dataplane/upstream/endpoint_state.h"
#include "dataplane/upstream/health_checker.h"

namespace sluice {
namespace {

// After a flag error: one line, then where the flags are listed (the whole
// usage buried the error).
constexpr char kUsageHint[] = "(sluice-proxy --help lists the flags)\n";

constexpr char kUsage[] =
    "usage: sluice-proxy --control-plane HOST:PORT[,HOST:PORT...] --node-id ID [--group G]\n"
    "                    [--workers N] [--cpu-affinity off|auto] [--io-uring auto|off]\n"
    "                    [--yield-to-local-peers on|off]\n"
    "                    [--admin 127.0.0.1:9901]\n"
    "                    [--state-dir DIR] [--drain-timeout 30s] [--drain-delay 0s]\n"
    "                    [--log-level debug|info|warning|error] [--max-connections N]\n"
    "                    [--max-memory-mb N] [--cache-memory-mb 64] [--max-held-body-mb N]\n"
    "                    [--control-plane-keepalive 30s]\n"
    "                    [--control-plane-keepalive-timeout 10s] [--report-interval 5s]\n"
    "                    [--rate-limit-report-interval 200ms]\n"
    "                    [--control-plane-ca FILE [--control-plane-cert FILE\n"
    "                     --control-plane-key FILE] [--control-plane-server-name NAME]]\n"
    "                    [--admin-token-file FILE] [--access-log-dir DIR]\n"
    "  --control-plane     sluice-control's address; several (replicas of one store):\n"
    "                      the proxy starts at a random one and moves to the next one\n"
    "                      when its stream breaks or cannot be opened\n"
    "  --workers N         worker threads; default one per CPU the proxy may use (its\n"
    "                      cpuset, capped by its cgroup's CPU quota)\n"
    "  --cpu-affinity auto pin worker i to the i-th of those CPUs (default off)\n"
    "  --io-uring off      make each send and read with its own send(2), recv(2); by\n"
    "                      default (auto) the sends of a loop pass go in one\n"
    "                      io_uring_enter(2), and its reads in another, when the kernel\n"
    "                      allows io_uring\n"
    "  --yield-to-local-peers off  never yield the CPU. By default (on) a worker whose\n"
    "                      loop pass sent to a client or upstream on this host (a\n"
    "                      loopback address) yields it once (sched_yield(2)), so that\n"
    "                      process, if it waits for the CPU, answers before the\n"
    "                      worker's next wait: less CPU per request, a longer tail\n"
    "  --drain-delay D     after SIGTERM, /ready fails at once but the listeners still\n"
    "                      accept and serve for D (load balancers see /ready fail\n"
    "                      first); then the drain, up to --drain-timeout. A second\n"
    "                      signal drains at once\n"
    "  --control-plane-ca  TLS to the control plane, verified against this PEM CA\n"
    "  --control-plane-cert/--control-plane-key  this proxy's client certificate (its URI\n"
    "                      SAN spiffe://sluice/node/ID must name --node-id)\n"
    "  --cache-memory-mb N  what the `cache` policy's responses may take together\n"
    "                      (default 64; least recently used ones go first)\n"
    "  --max-held-body-mb N  request bodies held whole for policies (request-validation's\n"
    "                      body_schema, ...), all together; past it such a request gets 503\n"
    "                      (default 1024, or a quarter of --max-memory-mb when that is given)\n"
    "  --admin-token-file FILE  the admin endpoint needs 'Authorization: Bearer <token>'\n"
    "                      with the token in FILE (one line, at least 16 characters)\n"
    "                      on every path but /ready and /livez\n"
    "  --access-log-dir DIR  listeners' access logs may be files inside DIR only (and\n"
    "                      standard output or error); default: any absolute path the proxy\n"
    "                      may write\n";

constexpr char kVersion[] = "0.1";
// What the proxy tells the control plane it is (its node's build_version).
const std::string kBuildVersion = absl::StrCat("sluice-proxy ", kVersion);

// For a build on glibc's allocator (--config=asan; the proxy otherwise
// links tcmalloc, whose mallopt does nothing): glibc gives the free memory
// at the top of a worker's arena back to the kernel (madvise) as soon as it
// passes 128 KiB, so a worker that frees an idle connection's buffers after
// every response and takes them again on the next request pays a madvise
// and page faults every loop iteration (about 5% of the rps of a cache
// hit). Keep up to 8 MiB free per arena (a burst's buffers for some
// hundreds of connections); blocks of 4 MiB and more still get their own
// mapping (returned when freed).
void TuneMalloc() {
  mallopt(M_TRIM_THRESHOLD, 8 << 20);
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
}

// Per-worker shards of histograms and access-log buffers: sized before
// anything is made with them.
void InitPerWorkerState(int workers) {
  stats::SetHistogramShards(workers);
  accesslog::SetWorkerCount(workers);
}

// Owns the workers and the current snapshot; applies new versions.
class ProxyServer {
 public:
  // `main_loop` runs the active health checks.
  // `node_group` is the proxy's --group: only listeners placed on it are bound.
  ProxyServer(event::Dispatcher& main_loop, int workers,
              std::unique_ptr<controlplane::FileStore> state_store, const std::string& node_id,
              std::string node_group)
      : main_loop_(main_loop),
        node_group_(std::move(node_group)),
        proxy_stats_(store_),
        sockets_(workers),
        state_store_(std::move(state_store)),
        health_checker_(std::make_unique<upstream::HealthChecker>(main_loop)) {
    store_.Describe("sluice_config_version", "The config version this proxy runs.");
    config_version_ = store_.GetGauge("sluice_config_version");
    configs_applied_ = store_.GetCounter("sluice_configs_applied_total");
    configs_rejected_ = store_.GetCounter("sluice_configs_rejected_total");
    store_.Describe("sluice_config_last_apply_timestamp_seconds",
                    "When this proxy last applied a config version (Unix time).");
    last_apply_ = store_.GetGauge("sluice_config_last_apply_timestamp_seconds");
    store_.Describe("sluice_build_info",
                    "1, labelled with this proxy's build, node id and group.");
    // The version, as sluice_control_build_info has it, and who this proxy
    // is: a scrape found by address (a pod's IP) is joined to its node id.
    store_.GetGauge("sluice_build_info",
                    absl::StrCat("version=", stats::LabelValue(kVersion),
                                 ",node=", stats::LabelValue(node_id),
                                 ",group=", stats::LabelValue(node_group_)))
        ->Set(1);
    std::vector<std::shared_ptr<server::PostGate>> gates;
    for (int i = 0; i < workers; ++i) {
      workers_.push_back(std::make_unique<server::Worker>(i, proxy_stats_));
      gates.push_back(workers_.back()->post_gate());
    }
    // A ping posted to a stopped worker is dropped (PostGate); its task
    // holds the pings it writes.
    liveness_ = std::make_unique<server::Liveness>(
        gates.size(),
        [gates](size_t i, std::function<void()> task) { gates[i]->Post(std::move(task)); });
    dns_.SetOnChange([this](const std::set<std::string>& keys) { RefreshDns(keys); });
    dns_.Start();
  }

  // `pin_cpus`, when not empty, holds the CPU each worker is pinned to
  // (--cpu-affinity auto): worker i gets pin_cpus[i % size].
  void StartWorkers(const std::vector<int>& pin_cpus) {
    for (size_t i = 0; i < workers_.size(); ++i) {
      workers_[i]->Start(pin_cpus.empty() ? -1 : pin_cpus[i % pin_cpus.size()]);
    }
  }
  void StopWorkers() {
    for (auto& w : workers_) w->Stop();
  }

  // Validate, compile, publish. Called on the config thread (or at start-up
  // on the main thread before that thread exists).
  // `change`: what this version changes from the one running (nullptr: take
  // it whole).
  // `dns_refresh`: the same version compiled again for new DNS answers
  // (RefreshDns): not counted as an apply, and waits for no lookup.
  // `dns_wait`: how long new host names' first lookups may hold the apply.
  absl::Status Apply(uint64_t version, const api::ResourceMap& resources, bool persist,
                     const api::ConfigChange* change = nullptr, bool dns_refresh = false,
                     absl::Duration dns_wait = kDnsWarmup) {
    std::shared_ptr<const config::ConfigSnapshot> previous = current();
    // State of clusters that no version in use still has is freed (a
    // cluster removed, then added again, starts afresh). Metrics are pruned
    // by PruneStats(), off the apply path.
    registry_.Prune();
    // The host names of the endpoints: a name new to the proxy is looked up
    // before compiling (up to kDnsWarmup: a new cluster starts with its
    // endpoints), the names of the version running go on being refreshed
    // whatever becomes of this one.
    std::vector<upstream::DnsQuery> queries;
    if (!dns_refresh) {
      for (auto it = resources.lower_bound({config::v1::CLUSTER, std::string()});
           it != resources.end() && it->first.first == config::v1::CLUSTER; ++it) {
        if (!it->second.has_cluster()) continue;
        for (upstream::DnsQuery& q : upstream::DnsQueries(it->second.cluster())) {
          queries.push_back(std::move(q));
        }
      }
      std::vector<upstream::DnsQuery> both = dns_queries_;
      both.insert(both.end(), queries.begin(), queries.end());
      dns_.Track(both, dns_wait, &queries);
    }
    auto snapshot = config::CompileSnapshot(version, resources, sockets_, store_, registry_,
                                            previous.get(), change, node_group_, &dns_);
    if (!dns_refresh) {
      if (snapshot.ok()) dns_queries_ = std::move(queries);
      dns_.Track(dns_queries_, absl::ZeroDuration());
    }
    if (!snapshot.ok()) {
      if (!dns_refresh) configs_rejected_->Inc();
      return snapshot.status();
    }
    for (auto& w : workers_) w->Publish(*snapshot);
    accesslog::PruneUnused();  // logs only older versions named close when those go
    // The health checker follows the clusters when they changed (a version
    // that changes only routes shares them with the one before).
    if (previous == nullptr || &previous->clusters.get() != &(*snapshot)->clusters.get()) {
      std::vector<std::shared_ptr<const upstream::ClusterInfo>> clusters;
      for (const auto& [name, cluster] : (*snapshot)->clusters) clusters.push_back(cluster);
      main_loop_.Post([this, clusters = std::move(clusters)] {
        if (health_checker_) health_checker_->Update(clusters);
      });
    }
    {
      absl::MutexLock lock(&mu_);
      current_ = *snapshot;
    }
    if (dns_refresh) return absl::OkStatus();
    configs_applied_->Inc();
    config_version_->Set(static_cast<int64_t>(version));
    last_apply_->Set(absl::ToUnixSeconds(absl::Now()));
    last_apply_time_.store(absl::ToUnixNanos(absl::Now()));
    if (persist) Persist(controlplane::StoredState{version, resources, ""});
    return absl::OkStatus();
  }

  // Keeps the config (and the store it came from) in --state-dir for a
  // restart without the control plane.
  void Persist(const controlplane::StoredState& held) {
    if (!state_store_) return;
    absl::Status saved = state_store_->Save(held);
    if (!saved.ok()) SLUICE_LOG(kWarning, "cannot keep config in state dir: ", saved.message());
  }

  std::shared_ptr<const config::ConfigSnapshot> current() const {
    absl::MutexLock lock(&mu_);
    return current_;
  }

  // /ready answers 503 from now on (balancers stop sending new traffic);
  // the listeners still accept until StartDrain.
  void FailReadiness() { draining_.store(true); }
  void StartDrain() {
    FailReadiness();
    for (auto& w : workers_) w->StartDrain();
  }
  bool draining() const { return draining_.load(); }
  void ShedHeavySessions(size_t min_bytes) {
    for (auto& w : workers_) w->ShedHeavySessions(min_bytes);
  }
  void EndStreamsAtDrainDeadline() {
    for (auto& w : workers_) w->EndStreamsAtDrainDeadline();
  }
  // See liveness.h.
  std::pair<bool, std::string> Live() { return liveness_->Check(); }
  int64_t active_connections() const {
    int64_t n = 0;
    for (const auto& w : workers_) n += w->active_connections();
    return n;
  }

  // Private keys redacted. The resources come from the config client (the
  // proxy's one copy of them), once it exists.
  std::string ConfigDump() const {
    DumpSource source;
    {
      // Not held while the source runs: the client holds its lock while a
      // version is applied, and applying takes mu_.
      absl::MutexLock lock(&mu_);
      source = dump_source_;
    }
    if (!source) return admin::RenderConfigDump(0, {});
    std::string out;
    source([&out](const controlplane::StoredState& held) {
      out = admin::RenderConfigDump(held.version, held.resources);
    });
    return out;
  }
  using DumpSource =
      std::function<void(const std::function<void(const controlplane::StoredState&)>&)>;
  void SetConfigDumpSource(DumpSource source) {
    std::set<std::string> pending;
    {
      absl::MutexLock lock(&mu_);
      dump_source_ = std::move(source);
      if (dump_source_) pending.swap(dns_pending_);
    }
    if (!pending.empty()) RefreshDns(pending);
  }

  // New DNS answers for `keys` (DnsQuery::Key()): the clusters of the
  // version running that use them are compiled again, on the DNS thread,
  // under the config client's lock (no version is applied meanwhile).
  void RefreshDns(const std::set<std::string>& keys) {
    DumpSource source;
    {
      absl::MutexLock lock(&mu_);
      source = dump_source_;
      // Before the config client exists (a --state-dir config serving):
      // done once it does.
      if (!source) {
        dns_pending_.insert(keys.begin(), keys.end());
        return;
      }
    }
    source([&](const controlplane::StoredState& held) {
      if (held.version == 0) return;
      api::ConfigChange change;
      std::vector<std::string> names;
      for (auto it = held.resources.lower_bound({config::v1::CLUSTER, std::string()});
           it != held.resources.end() && it->first.first == config::v1::CLUSTER; ++it) {
        if (!it->second.has_cluster()) continue;
        for (const upstream::DnsQuery& q : upstream::DnsQueries(it->second.cluster())) {
          if (keys.count(q.Key())) {
            change.changed.insert(it->first);
            names.push_back(it->first.second);
            break;
          }
        }
      }
      if (change.changed.empty()) return;
      absl::Status status = Apply(held.version, held.resources, /*persist=*/false, &change,
                                  /*dns_refresh=*/true);
      if (status.ok()) {
        SLUICE_LOG(kDebug, "clusters ", absl::StrJoin(names, ", "),
                   " compiled again for new DNS answers");
      } else {
        SLUICE_LOG(kWarning, "clusters ", absl::StrJoin(names, ", "),
                   " not compiled again for new DNS answers: ", status.message());
      }
    });
  }
  void StopDns() { dns_.Stop(); }

  stats::StatsStore& stats() { return store_; }

  // Forgets the metrics of routes and clusters that no version in use still
  // has (a walk over every metric: ~3 ms at 10,000 routes, so not on the
  // apply path). Runs every kStatsPruneInterval on the main thread while a
  // version was applied within kStatsPruneWindow (an old version's last
  // request may hold it a while).
  static constexpr absl::Duration kStatsPruneInterval = absl::Seconds(5);
  static constexpr absl::Duration kStatsPruneWindow = absl::Minutes(5);
  void PruneStats() {
    int64_t last = last_apply_time_.load();
    if (last == 0 || absl::Now() - absl::FromUnixNanos(last) > kStatsPruneWindow) return;
    // An access log the old version named closes once its last request is
    // done (at the apply, that version still held it), and its series go.
    accesslog::PruneUnused();
    store_.Prune();
  }
  std::string Clusters(bool json) const { return admin::RenderClusters(current().get(), json); }
  std::string EndpointHealthMetrics() const {
    return admin::RenderEndpointHealthMetrics(current().get());
  }
  // Main thread, after the loop ends: stop checking.
  void StopHealthChecks() { health_checker_.reset(); }

 private:
  event::Dispatcher& main_loop_;
  const std::string node_group_;
  stats::StatsStore store_;
  server::ProxyStats proxy_stats_;
  upstream::HealthRegistry registry_;
  config::ListenerSocketCache sockets_;
  std::unique_ptr<controlplane::FileStore> state_store_;
  std::vector<std::unique_ptr<server::Worker>> workers_;
  std::unique_ptr<server::Liveness> liveness_;
  std::unique_ptr<upstream::HealthChecker> health_checker_;  // main thread
  stats::Gauge* config_version_;
  stats::Gauge* last_apply_;
  stats::Counter* configs_applied_;
  stats::Counter* configs_rejected_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const config::ConfigSnapshot> current_ ABSL_GUARDED_BY(mu_);
  DumpSource dump_source_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> last_apply_time_{0};  // unix ns
  std::set<std::string> dns_pending_ ABSL_GUARDED_BY(mu_);
  // The DNS queries of the version running (config thread).
  std::vector<upstream::DnsQuery> dns_queries_;
  // How long an apply waits for the first lookup of a host name new to it.
  static constexpr absl::Duration kDnsWarmup = upstream::DnsCache::kLookupTimeout;
  // Last: its thread (which applies) stops before the rest goes.
  upstream::DnsCache dns_{upstream::CaresLookup, &store_};
};

// Hands the free memory the allocator keeps for reuse back to the kernel:
// what a burst took stays resident after it is freed otherwise (both
// tcmalloc and glibc's malloc keep it), and the overload guard would go on
// refusing work on account of memory nobody uses.
void ReleaseFreeMemory() {
#if defined(SLUICE_TCMALLOC)
  MallocExtension_ReleaseFreeMemory();
#elif defined(__SANITIZE_ADDRESS__)
  __sanitizer_purge_allocator();  // ASan's quarantine holds freed memory back too
#else
  malloc_trim(0);
#endif
}

// Free memory the allocator keeps beyond this goes back to the kernel (every
// kFreeMemoryCheck): tcmalloc keeps what a burst freed for reuse, so after
// one (an attack's held bodies, a flood of connections) resident memory
// stayed at its peak, and a memory graph could not tell that from a leak.
// What stays covers a busy proxy's churn without a page fault per request.
constexpr size_t kFreeMemoryKept = size_t{32} << 20;
constexpr absl::Duration kFreeMemoryCheck = absl::Seconds(10);
// Over --max-memory-mb, a client connection holding this much response it
// has not read is closed (a stalled HTTP/2 client holds up to 8 MiB).
constexpr size_t kOverloadShedBytes = size_t{1} << 20;

void ReleaseFreeMemoryOverKept() {
#if defined(SLUICE_TCMALLOC)
  size_t free_bytes = 0;
  if (MallocExtension_GetNumericProperty("tcmalloc.pageheap_free_bytes", &free_bytes) &&
      free_bytes > kFreeMemoryKept) {
    MallocExtension_ReleaseToSystem(free_bytes - kFreeMemoryKept);
  }
#endif
}

// Resident set size, from /proc/self/statm.
int64_t ResidentMemoryBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  long size = 0, resident = 0;
  int n = std::fscanf(f, "%ld %ld", &size, &resident);
  std::fclose(f);
  return n == 2 ? static_cast<int64_t>(resident) * sysconf(_SC_PAGESIZE) : 0;
}

// --control-plane-ca, --control-plane-cert, --control-plane-key and
// --control-plane-server-name into `options`; errors name the flag.
absl::Status ReadControlPlaneTls(const ParsedFlags& flags, config::ConfigClientOptions& options) {
  auto value = [&](const std::string& name) {
    auto it = flags.values.find(name);
    return it == flags.values.end() ? std::string() : it->second;
  };
  const std::string ca = value("control-plane-ca");
  const std::string cert = value("control-plane-cert");
  const std::string key = value("control-plane-key");
  options.tls_server_name = value("control-plane-server-name");
  if (ca.empty() && (!cert.empty() || !key.empty() || !options.tls_server_name.empty())) {
    return absl::InvalidArgumentError(
        "--control-plane-cert, --control-plane-key and --control-plane-server-name need "
        "--control-plane-ca (TLS to the control plane)");
  }
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError(
        "--control-plane-cert and --control-plane-key go together: give both, or neither");
  }
  if (ca.empty()) return absl::OkStatus();
  absl::StatusOr<std::string> pem = ReadPemFile("--control-plane-ca", ca, PemKind::kCertificate);
  if (!pem.ok()) return pem.status();
  options.tls_ca_pem = *std::move(pem);
  options.tls_ca_file = ca;  // read again at each reconnect (renewals)
  if (cert.empty()) return absl::OkStatus();
  options.tls_cert_file = cert;
  options.tls_key_file = key;
  pem = ReadPemFile("--control-plane-cert", cert, PemKind::kCertificate);
  if (!pem.ok()) return pem.status();
  options.tls_cert_pem = *std::move(pem);
  pem = ReadPemFile("--control-plane-key", key, PemKind::kPrivateKey);
  if (!pem.ok()) return pem.status();
  options.tls_key_pem = *std::move(pem);
  if (std::string loose = OthersCanRead("--control-plane-key", key); !loose.empty()) {
    SLUICE_LOG(kWarning, loose, ": anyone who can log in here can take this proxy's identity");
  }
  if (std::string problem = CertificateTimeProblem(cert); !problem.empty()) {
    SLUICE_LOG(kWarning, "--control-plane-cert: the certificate ", problem,
               ": sluice-control refuses it until it is renewed");
  }
  return CheckKeyMatchesCertificate("--control-plane-cert", options.tls_cert_pem,
                                    "--control-plane-key", options.tls_key_pem);
}

// SIGHUP and SIGUSR1 reopen the access logs once the main loop runs. Until
// then (a logrotate postrotate that lands during a restart) they must not end
// the process, as their default action would: ignored until the main loop's
// handlers replace that, from the executable's pre-initialization on, which
// the dynamic loader runs before the shared libraries' initializers (gRPC's,
// protobuf's: 30-50 ms on a loaded machine, which a constructor of the
// executable came after). Only the loader's own mapping and linking of the
// libraries comes first (about 40 ms measured on a loaded machine).
void IgnoreReopenSignalsUntilHandled(int, char**, char**) {
  signal(SIGHUP, SIG_IGN);
  signal(SIGUSR1, SIG_IGN);
}
__attribute__((section(".preinit_array"), used)) void (*const kIgnoreReopenSignals)(
    int, char**, char**) = IgnoreReopenSignalsUntilHandled;

int Run(int argc, char** argv) {
  auto flags = ParseFlags(argc, argv,
                          {"control-plane", "node-id", "group", "workers", "admin", "state-dir",
                           "drain-timeout", "log-level", "max-connections", "max-memory-mb",
                           "report-interval", "rate-limit-report-interval", "cache-memory-mb",
                           "control-plane-keepalive", "control-plane-keepalive-timeout",
                           "control-plane-ca", "control-plane-cert", "control-plane-key",
                           "control-plane-server-name", "admin-token-file", "cpu-affinity",
                           "access-log-dir", "drain-delay", "max-held-body-mb", "io-uring",
                           "yield-to-local-peers"},
                          {"help"});
  if (!flags.ok()) {
    std::fprintf(stderr, "sluice-proxy: %s\n%s", std::string(flags.status().message()).c_str(),
                 kUsageHint);
    return 2;
  }
  if (flags->switches.count("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  auto get = [&](const std::string& name, const std::string& fallback) {
    auto it = flags->values.find(name);
    return it == flags->values.end() ? fallback : it->second;
  };
  auto fail = [](const std::string& message) {
    std::fprintf(stderr, "sluice-proxy: %s\n%s", message.c_str(), kUsageHint);
    return 2;
  };
  // Every flag is checked before anything starts (a state dir locked, a
  // listener bound from the held config, the admin port): a bad one late
  // left sockets that took connections and closed them.
  if (!flags->positional.empty()) {
    return fail(absl::StrCat("unexpected argument '", flags->positional[0], "'"));
  }

  auto level = ParseLogLevel(get("log-level", "info"));
  if (!level.ok()) return fail(std::string(level.status().message()));
  SetLogLevel(*level);
  RouteGrpcLogging();
  if (flags->values.count("access-log-dir")) {
    const std::string& dir = flags->values["access-log-dir"];
    char resolved[PATH_MAX];
    struct stat st;
    if (dir.empty() || dir[0] != '/' || ::realpath(dir.c_str(), resolved) == nullptr ||
        ::stat(resolved, &st) != 0 || !S_ISDIR(st.st_mode)) {
      return fail(absl::StrCat("--access-log-dir ", dir, ": must be an absolute path to a "
                               "directory that exists"));
    }
    accesslog::SetAllowedDirectory(resolved);
  }
  const std::string control_plane = get("control-plane", "");
  const std::string node_id = get("node-id", "");
  if (control_plane.empty()) return fail("--control-plane is required");
  auto control_planes = config::ParseControlPlaneAddresses(control_plane);
  if (!control_planes.ok()) return fail(std::string(control_planes.status().message()));
  if (node_id.empty()) return fail("--node-id is required");
  // The control plane refuses longer ones (api/discovery.h): said at start,
  // not by a stream retried forever.
  if (node_id.size() > api::kMaxNodeIdBytes) {
    return fail(absl::StrCat("--node-id is ", node_id.size(), " bytes; at most ",
                             api::kMaxNodeIdBytes));
  }
  for (const char* flag : {"node-id", "group"}) {
    for (char c : get(flag, "")) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        return fail(absl::StrCat("--", flag, " has a control character"));
      }
    }
  }
  if (get("group", "").size() > api::kMaxNodeGroupBytes) {
    return fail(absl::StrCat("--group is ", get("group", "").size(), " bytes; at most ",
                             api::kMaxNodeGroupBytes));
  }
  // By default one worker per CPU the container lets the proxy use: its
  // cpuset, capped by its cgroup's CPU quota (a Kubernetes CPU limit).
  const server::CpuBudget cpu_budget = server::ReadCpuBudget();
  int workers = cpu_budget.default_workers;
  {
    int64_t given = workers;
    if (absl::Status status = IntFlagInRange(*flags, "workers", 1, 256, &given); !status.ok()) {
      return fail(std::string(status.message()));
    }
    workers = static_cast<int>(given);
  }
  const std::string cpu_affinity = get("cpu-affinity", "off");
  if (cpu_affinity != "off" && cpu_affinity != "auto") {
    return fail("--cpu-affinity must be off or auto, not '" + cpu_affinity + "'");
  }
  const std::string io_uring = get("io-uring", "auto");
  if (io_uring != "off" && io_uring != "auto") {
    return fail("--io-uring must be off or auto, not '" + io_uring + "'");
  }
  const std::string yield_to_local_peers = get("yield-to-local-peers", "on");
  if (yield_to_local_peers != "on" && yield_to_local_peers != "off") {
    return fail("--yield-to-local-peers must be on or off, not '" + yield_to_local_peers + "'");
  }
  event::Dispatcher::SetYieldToLocalPeers(yield_to_local_peers == "on");
  if (yield_to_local_peers == "off") {
    SLUICE_LOG(kInfo, "--yield-to-local-peers off: no loop pass ends with sched_yield(2)");
  }
  // Before any dispatcher is made: each makes its ring when it is.
  event::Dispatcher::SetBatchSends(io_uring == "auto");
  if (io_uring == "auto") {
    if (std::string why = event::Dispatcher::BatchSendsUnavailable(); !why.empty()) {
      event::Dispatcher::SetBatchSends(false);
      SLUICE_LOG(kInfo, "io_uring unavailable (", why,
                 "): each send and read is its own system call");
    } else {
      SLUICE_LOG(kInfo, "io_uring: the sends of each loop pass go out in one system call, "
                        "its reads are made in another");
    }
  }
  // auto: worker i runs only on the i-th CPU the process may use (wrapping
  // when there are more workers than CPUs).
  const std::vector<int> pin_cpus =
      cpu_affinity == "auto" ? cpu_budget.allowed : std::vector<int>{};
  auto drain_timeout = ParseDurationFlag("drain-timeout", get("drain-timeout", "30s"));
  if (!drain_timeout.ok()) return fail(std::string(drain_timeout.status().message()));
  if (*drain_timeout > absl::Hours(1)) {
    return fail("--drain-timeout is at most 1h, got " + absl::FormatDuration(*drain_timeout));
  }
  server::ListenerDrain::SetTimeout(*drain_timeout);
  auto drain_delay = ParseDurationFlag("drain-delay", get("drain-delay", "0s"));
  if (!drain_delay.ok()) return fail(std::string(drain_delay.status().message()));
  if (*drain_delay > absl::Minutes(10)) {
    return fail("--drain-delay is at most 10m, got " + absl::FormatDuration(*drain_delay));
  }
  config::ConfigClientOptions client_options;
  auto keepalive = ParseDurationFlag("control-plane-keepalive",
                                     get("control-plane-keepalive", "30s"));
  if (!keepalive.ok()) return fail(std::string(keepalive.status().message()));
  auto keepalive_timeout = ParseDurationFlag("control-plane-keepalive-timeout",
                                             get("control-plane-keepalive-timeout", "10s"));
  if (!keepalive_timeout.ok()) return fail(std::string(keepalive_timeout.status().message()));
  client_options.keepalive = *keepalive;
  client_options.keepalive_timeout = *keepalive_timeout;
  if (absl::Status status = client_options.Check(); !status.ok()) {
    return fail(absl::StrCat("--control-plane-keepalive ", absl::FormatDuration(*keepalive),
                             " / --control-plane-keepalive-timeout ",
                             absl::FormatDuration(*keepalive_timeout), ": ", status.message()));
  }
  if (absl::Status status = ReadControlPlaneTls(*flags, client_options); !status.ok()) {
    return fail(std::string(status.message()));
  }
  int64_t default_max_connections = server::ConnectionLimit::DefaultMax();  // raises RLIMIT_NOFILE
  int64_t max_connections = default_max_connections;
  if (absl::Status status = IntFlagInRange(*flags, "max-connections", 1, 10000000,
                                            &max_connections);
      !status.ok()) {
    return fail(std::string(status.message()));
  }
  server::ConnectionLimit::SetMax(max_connections);
  if (struct rlimit files; ::getrlimit(RLIMIT_NOFILE, &files) == 0 &&
      files.rlim_cur != RLIM_INFINITY &&
      static_cast<uint64_t>(max_connections) * 2 + 256 > files.rlim_cur) {
    // Each client connection may need an upstream one: past the descriptors,
    // accepts and upstream connects fail instead of the limit answering.
    SLUICE_LOG(kWarning, "up to ", max_connections, " client connections, but the descriptor "
               "limit is ", static_cast<uint64_t>(files.rlim_cur), " (each may need an upstream "
               "connection too: ", max_connections * 2 + 256, " wanted); raise it (ulimit -n, "
               "LimitNOFILE) or lower --max-connections");
  }
  int64_t max_memory_mb = 0;
  if (absl::Status status = IntFlagInRange(*flags, "max-memory-mb", 1, 1024 * 1024,
                                            &max_memory_mb);
      !status.ok()) {
    return fail(std::string(status.message()));
  }
  // Request bodies held whole for policies: 1 GiB, or a quarter of the
  // memory guard's limit (a held body is in memory about twice on its way
  // upstream, and a body_schema's parse takes more while it runs).
  int64_t max_held_body_mb = max_memory_mb > 0 ? std::max<int64_t>(1, max_memory_mb / 4) : 1024;
  if (absl::Status status = IntFlagInRange(*flags, "max-held-body-mb", 1, 1024 * 1024,
                                            &max_held_body_mb);
      !status.ok()) {
    return fail(std::string(status.message()));
  }
  server::HeldBodies::SetMax(max_held_body_mb << 20);
  int64_t cache_memory_mb = 64;
  if (absl::Status status = IntFlagInRange(*flags, "cache-memory-mb", 1, 1024 * 1024,
                                            &cache_memory_mb);
      !status.ok()) {
    return fail(std::string(status.message()));
  }
  auto report_interval = ParseDurationFlag("report-interval", get("report-interval", "5s"));
  if (!report_interval.ok()) return fail(std::string(report_interval.status().message()));
  if (*report_interval != absl::ZeroDuration() &&
      (*report_interval < absl::Milliseconds(100) || *report_interval > absl::Hours(1))) {
    return fail("--report-interval must be 0 (off) or 100ms..1h, not " +
                absl::FormatDuration(*report_interval));
  }
  auto demand_interval = ParseDurationFlag("rate-limit-report-interval",
                                           get("rate-limit-report-interval", "200ms"));
  if (!demand_interval.ok()) return fail(std::string(demand_interval.status().message()));
  if (*demand_interval < absl::Milliseconds(50) || *demand_interval > absl::Seconds(10)) {
    return fail("--rate-limit-report-interval must be 50ms..10s, not " +
                absl::FormatDuration(*demand_interval));
  }
  const std::string admin_address = get("admin", "127.0.0.1:9901");
  if (absl::Status status = CheckHostPortFlag("admin", admin_address, /*allow_zero=*/true);
      !status.ok()) {
    return fail(std::string(status.message()));
  }
  std::string admin_token;
  if (flags->values.count("admin-token-file")) {
    auto token = admin::ReadTokenFile(flags->values["admin-token-file"]);
    if (!token.ok()) return fail(absl::StrCat("--admin-token-file: ", token.status().message()));
    admin_token = *std::move(token);
    if (std::string loose = OthersCanRead("--admin-token-file", flags->values["admin-token-file"]);
        !loose.empty()) {
      SLUICE_LOG(kWarning, loose, ": anyone who can log in here can take the admin token");
    }
  }
  if (get("state-dir", "x").empty()) return fail("--state-dir is empty");

  signal(SIGPIPE, SIG_IGN);
  // A write past the file-size limit (ulimit -f) fails with EFBIG, as on a
  // full disk, and is handled as such: the signal would end the process.
  signal(SIGXFSZ, SIG_IGN);

  // The last good config, so a proxy restarted while the control plane is
  // down still serves.
  std::unique_ptr<controlplane::FileStore> state_store;
  controlplane::StoredState held;
  const std::string state_dir = get("state-dir", "");
  if (!state_dir.empty()) {
    auto opened = controlplane::FileStore::Open(state_dir);
    if (!opened.ok()) {
      SLUICE_LOG(kError, "--state-dir: ", opened.status().message());
      return 1;
    }
    auto loaded = (*opened)->Load();
    if (!loaded.ok() && loaded.status().code() == absl::StatusCode::kDataLoss) {
      // Only a cache of what the control plane holds: a damaged one is set
      // aside (kept for a look) and the proxy starts empty, to be filled by
      // the control plane, rather than failing to start over and over.
      const std::string path = state_dir + "/state.db";
      const std::string aside = path + ".damaged";
      const bool moved = std::rename(path.c_str(), aside.c_str()) == 0;
      std::string why(loaded.status().message());
      why = why.substr(0, why.find(". sluice-control"));
      SLUICE_LOG(kWarning, "--state-dir: ", why, "; ",
                 moved ? "moved to " + aside + "; " : std::string(),
                 "starting without a held config: the control plane's replaces it");
      loaded = (*opened)->Load();
    }
    if (!loaded.ok()) {
      SLUICE_LOG(kError, "--state-dir: ", loaded.status().message());
      return 1;
    }
    held = std::move(*loaded);
    state_store = std::move(*opened);
  }

  event::Dispatcher main_loop;
  TuneMalloc();
  InitPerWorkerState(workers);
  const std::string node_group = get("group", "");
  ProxyServer proxy(main_loop, workers, std::move(state_store), node_id, node_group);
  // The response cache: one store for every route with a `cache` policy.
  policy::cache::SetMemoryBudget(static_cast<uint64_t>(cache_memory_mb) << 20);
  policy::cache::SetStatsStore(&proxy.stats());
  policy::cache::InstallPurgeHandler();
  proxy.StartWorkers(pin_cpus);
  if (held.version > 0) {
    // Held names' lookups wait 1 s at most: the admin port and the signal
    // handlers come after this (with DNS down, a --state-dir start was not
    // live for 5 s); later answers apply as they come.
    absl::Status status = proxy.Apply(held.version, held.resources, /*persist=*/false,
                                      /*change=*/nullptr, /*dns_refresh=*/false,
                                      absl::Seconds(1));
    if (status.ok()) {
      SLUICE_LOG(kInfo, "serving config version ", held.version, " from ", state_dir,
                 " until the control plane answers");
    } else {
      SLUICE_LOG(kWarning, "the config in ", state_dir, " cannot be served: ", status.message());
      held = {};
    }
  }

  // The config client, once it exists: /ready names the control plane in use.
  std::atomic<const config::ConfigClient*> config_client{nullptr};
  admin::AdminServer admin_server(
      main_loop,
      {[&proxy, &config_client]() -> std::pair<bool, std::string> {
         if (proxy.draining()) return {false, "draining"};
         auto snapshot = proxy.current();
         if (!snapshot) return {false, "no config applied yet"};
         std::string ready = absl::StrCat("ready: config version ", snapshot->version);
         if (const config::ConfigClient* client = config_client.load(); client != nullptr) {
           absl::StrAppend(&ready, "; control plane ", client->control_plane(),
                           client->connected() ? " (connected)" : " (not connected)");
         }
         return {true, ready};
       },
       [&proxy] { return proxy.Live(); },
       [&proxy] { return proxy.stats().RenderPrometheus() + proxy.EndpointHealthMetrics(); },
       [&proxy] { return proxy.ConfigDump(); },
       [&proxy](bool json) { return proxy.Clusters(json); },
       [] { ReleaseFreeMemory(); }});
  if (!admin_token.empty()) admin_server.RequireToken(admin_token);
  if (!flags->values.count("admin-token-file")) {
    if (!IsLoopbackHost(std::string_view(admin_address).substr(0, admin_address.rfind(':')))) {
      SLUICE_LOG(kWarning, "--admin ", admin_address,
                 " is not a loopback address and there is no --admin-token-file: anyone who "
                 "reaches it reads /config_dump (credential hashes included), /metrics and "
                 "/clusters");
    }
  }
  auto admin_port = admin_server.Listen(admin_address);
  if (!admin_port.ok()) {
    SLUICE_LOG(kError, "--admin: ", admin_port.status().message());
    proxy.StopWorkers();
    return 1;
  }

  discovery::v1::Node node;
  node.set_id(node_id);
  node.set_group(node_group);
  node.set_build_version(kBuildVersion);
  (*node.mutable_labels())["pid"] = std::to_string(getpid());
  // This process, whatever its pid (every container's is 1): the control
  // planes tell two processes under one node id apart by it.
  (*node.mutable_labels())["instance"] = sluice::RandomHexId();
  config::ConfigClient client(
      *control_planes, node, std::move(held),
      [&proxy](uint64_t version, const api::ResourceMap& resources,
               const api::ConfigChange& change) {
        return proxy.Apply(version, resources, /*persist=*/false, &change);
      },
      [&proxy](const controlplane::StoredState& state) { proxy.Persist(state); },
      client_options);
  proxy.SetConfigDumpSource([&client](const auto& fn) { client.WithHeld(fn); });
  // Which control plane the config stream is on: 1 for that address, 0 for
  // the others (and for all while none is connected).
  proxy.stats().Describe("sluice_control_plane_connected",
                         "1 for the control-plane address whose config stream is up.");
  for (const std::string& address : *control_planes) {
    proxy.stats().GetGauge("sluice_control_plane_connected",
                           absl::StrCat("address=", stats::LabelValue(address)));
  }
  client.SetConnectionObserver([&proxy](const std::string& address, bool connected) {
    proxy.stats()
        .GetGauge("sluice_control_plane_connected",
                  absl::StrCat("address=", stats::LabelValue(address)))
        ->Set(connected ? 1 : 0);
  });
  // Traffic summaries for the fleet view, on the config stream.
  server::TrafficReporter::ClassCounters responses{};
  for (int c = 1; c <= 5; ++c) {
    responses[c] = proxy.stats().GetCounter("sluice_downstream_responses_total",
                                            absl::StrCat("status_class=\"", c, "xx\""));
  }
  server::TrafficReporter reporter([&proxy] { return proxy.current(); },
                                   proxy.stats().GetGauge("sluice_downstream_connections_active"),
                                   responses);
  if (*report_interval > absl::ZeroDuration()) {
    // The baseline, before the reporter's thread starts: the first report
    // sent covers the first interval (the fleet view has figures after one
    // interval, not two).
    reporter.Make();
    client.SetReportSource([&reporter] { return reporter.Make(); }, *report_interval);
  }
  // rate-limit scope FLEET: demand out, leases in, on the config stream.
  const uint64_t demand_interval_ms =
      static_cast<uint64_t>(absl::ToInt64Milliseconds(*demand_interval));
  client.SetRateLimitExchange(
      [demand_interval_ms] {
        return policy::rate_limit::FleetBoard::Get().MakeDemand(demand_interval_ms);
      },
      *demand_interval,
      [](const discovery::v1::RateLimitLeases& leases) {
        // The rate-limit policies' clock (steady_clock nanoseconds).
        const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::steady_clock::now().time_since_epoch())
                                .count();
        policy::rate_limit::FleetBoard::Get().ApplyLeases(leases, now);
      });
  client.Start();
  config_client.store(&client);
  SLUICE_LOG(kInfo, "sluice-proxy ", node_id, " started: ", workers, " workers (",
             cpu_budget.allowed.size(), " CPUs allowed",
             cpu_budget.quota_cpus ? absl::StrCat(", CPU quota ", *cpu_budget.quota_cpus) : "",
             pin_cpus.empty() ? "" : ", pinned", "), admin on ",
             admin_address.substr(0, admin_address.rfind(':')), ":", *admin_port,
             ", control plane ", control_plane, ", up to ", max_connections,
             " client connections (",
             flags->values.count("max-connections") ? "--max-connections"
                                                    : "from the descriptor limit",
             ")");

  // The overload guard: resident memory checked 4 times a second.
  std::unique_ptr<event::Timer> memory_check;
  if (max_memory_mb > 0) {
    stats::Gauge* overloaded = proxy.stats().GetGauge("sluice_overload_active");
    memory_check = std::make_unique<event::Timer>(main_loop, [&, overloaded] {
      // In bytes: whole MiB let it run up to a MiB past the limit.
      const int64_t limit_bytes = static_cast<int64_t>(max_memory_mb) << 20;
      int64_t rss = ResidentMemoryBytes();
      if (rss > limit_bytes) {
        ReleaseFreeMemory();  // then count what is really in use
        rss = ResidentMemoryBytes();
      }
      const int64_t rss_mb = rss >> 20;
      bool over = rss > limit_bytes;
      if (over != server::Overload::active()) {
        if (over) {
          SLUICE_LOG(kWarning, "resident memory ", rss_mb, " MiB is over --max-memory-mb ",
                     max_memory_mb, ": refusing new connections and requests (503)");
        } else {
          SLUICE_LOG(kInfo, "resident memory ", rss_mb, " MiB is back under --max-memory-mb ",
                     max_memory_mb, ": serving again");
        }
        server::Overload::Set(over);
        overloaded->Set(over ? 1 : 0);
      }
      // Still over after new work was refused: the clients that hold the
      // most unread response go (Envoy's reset_high_memory_stream).
      if (over) proxy.ShedHeavySessions(kOverloadShedBytes);
      memory_check->Enable(absl::Milliseconds(250));
    });
    memory_check->Enable(absl::Milliseconds(250));
  }

  std::unique_ptr<event::Timer> memory_release;
  memory_release = std::make_unique<event::Timer>(main_loop, [&] {
    ReleaseFreeMemoryOverKept();
    memory_release->Enable(kFreeMemoryCheck);
  });
  memory_release->Enable(kFreeMemoryCheck);

  std::unique_ptr<event::Timer> stats_prune;
  stats_prune = std::make_unique<event::Timer>(main_loop, [&] {
    proxy.PruneStats();
    stats_prune->Enable(ProxyServer::kStatsPruneInterval);
  });
  stats_prune->Enable(ProxyServer::kStatsPruneInterval);

  // SIGTERM / SIGINT: drain, then exit when idle or at the drain timeout.
  absl::Time drain_deadline = absl::InfiniteFuture();
  std::unique_ptr<event::Timer> drain_check;
  bool streams_ended = false;
  drain_check = std::make_unique<event::Timer>(main_loop, [&] {
    if (proxy.active_connections() > 0 && absl::Now() >= drain_deadline && !streams_ended) {
      // gRPC calls still open get UNAVAILABLE in trailers, not a cut; their
      // connections then close as drained ones do, within a short grace.
      streams_ended = true;
      // Said at the deadline, whatever the exchanges then do (before, a cut
      // call whose connection closed within the grace was in the access log
      // only).
      SLUICE_LOG(kWarning, "drain timeout (", absl::FormatDuration(*drain_timeout), ") with ",
                 proxy.active_connections(),
                 proxy.active_connections() == 1 ? " connection" : " connections",
                 " still open: ending their exchanges (a gRPC call gets "
                 "UNAVAILABLE, a WebSocket or another response is cut; drain_timeout in the "
                 "access log)");
      proxy.EndStreamsAtDrainDeadline();
      drain_deadline = absl::Now() + absl::Milliseconds(200);
    }
    if (proxy.active_connections() == 0 || absl::Now() >= drain_deadline) {
      if (proxy.active_connections() > 0) {
        SLUICE_LOG(kWarning, "drain timeout: closing ", proxy.active_connections(),
                   proxy.active_connections() == 1 ? " connection" : " connections",
                   " that did not close within the grace");
      }
      main_loop.Exit();
      return;
    }
    drain_check->Enable(absl::Milliseconds(20));
  });
  bool drain_started = false;
  auto begin_drain = [&] {
    if (drain_started) return;
    drain_started = true;
    drain_deadline = absl::Now() + *drain_timeout;
    proxy.StartDrain();
    drain_check->Enable(absl::Milliseconds(20));
  };
  // --drain-delay: /ready fails first, the listeners keep serving meanwhile.
  event::Timer drain_start(main_loop, [&] {
    SLUICE_LOG(kInfo, "drain delay over: draining (up to ", absl::FormatDuration(*drain_timeout),
               ")");
    begin_drain();
  });
  auto on_signal = [&](int signo) {
    if (drain_started) {
      // Said, so that a second Ctrl-C is not taken for a hang.
      SLUICE_LOG(kInfo, "signal ", signo, " again: already draining, ",
                 proxy.active_connections(), " connections open; exits when they close or in ",
                 absl::FormatDuration(absl::Trunc(
                     std::max(drain_deadline - absl::Now(), absl::ZeroDuration()),
                     absl::Milliseconds(100))),
                 " (--drain-timeout); SIGKILL stops it now");
      return;
    }
    if (proxy.draining()) {  // again within the delay
      SLUICE_LOG(kInfo, "signal ", signo, " again: draining now (up to ",
                 absl::FormatDuration(*drain_timeout), ")");
      drain_start.Disable();
      begin_drain();
      return;
    }
    if (*drain_delay > absl::ZeroDuration()) {
      SLUICE_LOG(kInfo, "signal ", signo, ": /ready fails; serving for ",
                 absl::FormatDuration(*drain_delay), " (--drain-delay), then draining (up to ",
                 absl::FormatDuration(*drain_timeout), ")");
      proxy.FailReadiness();
      drain_start.Enable(*drain_delay);
      return;
    }
    SLUICE_LOG(kInfo, "signal ", signo, ": draining (up to ",
               absl::FormatDuration(*drain_timeout), ")");
    begin_drain();
  };
  struct SignalContext {
    std::function<void(int)> fn;
  } signal_context{on_signal};
  auto signal_cb = [](evutil_socket_t signo, short, void* arg) {
    static_cast<SignalContext*>(arg)->fn(static_cast<int>(signo));
  };
  ::event* sigterm = evsignal_new(main_loop.base(), SIGTERM, signal_cb, &signal_context);
  ::event* sigint = evsignal_new(main_loop.base(), SIGINT, signal_cb, &signal_context);
  evsignal_add(sigterm, nullptr);
  evsignal_add(sigint, nullptr);
  // SIGUSR1: access logs reopen their files (after logrotate moved them).
  // SIGHUP too, which a logrotate `postrotate` or an nginx habit may send:
  // it killed the proxy (its default action). Nothing else reloads: the
  // config comes from the control plane.
  auto reopen_cb = [](evutil_socket_t signo, short, void*) {
    SLUICE_LOG(kInfo, signo == SIGHUP ? "SIGHUP" : "SIGUSR1",
               ": reopening access logs (the config comes from the control plane)");
    accesslog::ReopenAll();
  };
  ::event* sigusr1 = evsignal_new(main_loop.base(), SIGUSR1, reopen_cb, nullptr);
  evsignal_add(sigusr1, nullptr);
  ::event* sighup = evsignal_new(main_loop.base(), SIGHUP, reopen_cb, nullptr);
  evsignal_add(sighup, nullptr);

  main_loop.Run();

  event_free(sigterm);
  event_free(sigint);
  event_free(sigusr1);
  event_free(sighup);
  config_client.store(nullptr);
  proxy.StopDns();  // it applies through the client
  client.Stop();
  proxy.SetConfigDumpSource(nullptr);
  proxy.StopWorkers();
  policy::cache::SetStatsStore(nullptr);  // its metrics go with `proxy`
  accesslog::FlushAll();
  proxy.StopHealthChecks();
  SLUICE_LOG(kInfo, "stopped");
  return 0;
}

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) { return sluice::Run(argc, argv); }
