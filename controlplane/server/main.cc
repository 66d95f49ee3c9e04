// sluice-control: holds the declared state and pushes it to every proxy.
//
//   sluice-control [--listen 127.0.0.1:18000] [--data-dir ./sluice-data]
//                  [--max-config-bytes 33554432] [--max-discovery-streams 1000]
//                  [--nack-retry 5s] [--metrics-listen HOST:PORT] [--history 100]
//                  [--log-level info]
//                  [--tls-cert FILE --tls-key FILE [--client-ca FILE]] [--insecure]
//                  [--require-tokens] [--admin-token-file FILE]
//                  [--store file|etcd --etcd-endpoints HOST:PORT,...
//                   [--etcd-prefix /sluice/] [--etcd-timeout 5s]
//                   [--etcd-max-request-bytes 1572864]
//                   [--etcd-ca FILE [--etcd-cert FILE --etcd-key FILE]
//                    [--etcd-server-name NAME]]]
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <memory>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "api/discovery.h"
#include "api/tls_material.h"
#include "common/flags.h"
#include "common/grpc_log.h"
#include "common/log.h"
#include "common/pem_file.h"
#include "controlplane/server/admin_service.h"
#include "controlplane/server/certificate_expiry.h"
#include "controlplane/server/config_state.h"
#include "controlplane/server/control_plane_metrics.h"
#include "controlplane/server/discovery_service.h"
#include "controlplane/server/metrics_endpoint.h"
#include "controlplane/server/proxy_registry.h"
#include "controlplane/server/purge_relay.h"
#include "controlplane/server/rate_limit_leases.h"
#include "controlplane/server/replica_shares.h"
#include "controlplane/server/rollout.h"
#include "controlplane/server/server_credentials.h"
#include "controlplane/store/etcd_store.h"
#include "controlplane/store/file_config_store.h"
#include "controlplane/store/file_store.h"
#include "grpcpp/grpcpp.h"

namespace {

// A board of one entry per replica on etcd: leases/ (rate-limit demand) or
// fleet/ (proxy lists).
class EtcdDemandBoard : public sluice::controlplane::ReplicaDemandBoard {
 public:
  explicit EtcdDemandBoard(sluice::controlplane::EtcdStore* etcd,
                           std::string space = sluice::controlplane::EtcdStore::kLeases)
      : etcd_(etcd), space_(std::move(space)) {}
  absl::Status Publish(const std::string& replica, std::string value) override {
    return etcd_->PutReplicaEntry(replica, std::move(value), space_);
  }
  absl::StatusOr<std::vector<Entry>> ReadAll() override {
    auto entries = etcd_->ReadReplicaEntries(space_);
    if (!entries.ok()) return entries.status();
    std::vector<Entry> out;
    for (auto& entry : *entries) {
      out.push_back({std::move(entry.replica), std::move(entry.value), entry.mod_revision});
    }
    return out;
  }
  absl::Status Remove(const std::string& replica, int64_t revision) override {
    return etcd_->DeleteReplicaEntry(replica, revision, space_);
  }

 private:
  sluice::controlplane::EtcdStore* const etcd_;
  const std::string space_;
};

// After a flag error: one line, then where the flags are listed (the whole
// usage buried the error).
constexpr char kUsageHint[] = "(sluice-control --help lists the flags)\n";

constexpr char kUsage[] =
    "usage: sluice-control [--listen HOST:PORT] [--data-dir DIR] [--max-config-bytes N]\n"
    "                      [--max-discovery-streams N] [--nack-retry 5s]\n"
    "                      [--metrics-listen HOST:PORT] [--history N] [--audit-log-max-mb 100]\n"
    "                      [--log-level debug|info|warning|error]\n"
    "                      [--tls-cert FILE --tls-key FILE [--client-ca FILE]] [--insecure]\n"
    "                      [--tls-reload-interval 60s]\n"
    "                      [--require-tokens] [--admin-token-file FILE]\n"
    "                      [--store file|etcd [--etcd-endpoints URL,... [--etcd-prefix P]\n"
    "                       [--etcd-timeout D] [--etcd-max-request-bytes N]\n"
    "                       [--etcd-compaction-interval 5m]\n"
    "                       [--etcd-ca FILE [--etcd-cert FILE --etcd-key FILE]\n"
    "                       [--etcd-server-name NAME]]]]\n"
    "  --history N  versions kept for sluicectl history, diff and rollback (default 100,\n"
    "               1..100000; the current version is always kept)\n"
    "  --audit-log-max-mb N  the audit log moves to audit.log.1 at this size (default 100;\n"
    "               0: never, rotate it yourself)\n"
    "  --tls-cert, --tls-key  serve gRPC over TLS with this PEM certificate and key\n"
    "  --tls-reload-interval D  how often the TLS files are looked at again (default 60s,\n"
    "               1s..24h): a renewed certificate, key or CA needs no restart\n"
    "  --client-ca FILE  proxies must present a client certificate signed by this CA that\n"
    "               names their node id (URI SAN spiffe://sluice/node/ID)\n"
    "  --insecure   allow plaintext on a non-loopback --listen address\n"
    "  --require-tokens  every admin API call needs an operator token (docs/operations.md)\n"
    "  --admin-token-file FILE  accept the token in FILE (one line) as an admin token\n"
    "  --store file|etcd  where the state, history and tokens live: the data dir's files\n"
    "               (default; one control plane), or etcd, shared by several replicas\n"
    "  --etcd-endpoints URL,...  the etcd cluster's client URLs: HOST:PORT,\n"
    "               http://HOST:PORT or https://HOST:PORT (https needs --etcd-ca)\n"
    "  --etcd-prefix P  the keys' prefix (default /sluice/; one store per prefix)\n"
    "  --etcd-timeout D  each etcd operation, every endpoint tried (default 5s)\n"
    "  --etcd-max-request-bytes N  etcd's --max-request-bytes (default 1572864)\n"
    "  --etcd-compaction-interval D  compact etcd's history to the revision of one\n"
    "               interval ago, every interval (default 5m; 0: off, leave it to etcd's\n"
    "               --auto-compaction-*)\n"
    "  --etcd-ca FILE  TLS to etcd: the PEM CA that signed etcd's server certificates\n"
    "  --etcd-cert FILE --etcd-key FILE  the client certificate (PEM) for etcd's\n"
    "               --client-cert-auth\n"
    "  --etcd-server-name NAME  the name to verify in etcd's certificates (default:\n"
    "               each endpoint's host)\n"
    "With --store etcd the data dir keeps only this replica's audit log, canary\n"
    "rollouts are refused, and replicas split FLEET rate limits through etcd.\n"
    "A canary rollout (sluicectl apply --canary) is kept in DIR/rollout.db; a start that\n"
    "finds one ends it: every proxy goes back to the stable version's content.\n";

// The gRPC server's limits, set on purpose rather than left to gRPC's
// defaults (4 MiB receive, unlimited send, pings without data refused after
// two), and its threads. Discovery streams hold none (gRPC's callback API;
// a few push threads serve them all); the admin API's synchronous handlers
// take one each while they run, at most 128 at once.
void ConfigureServer(grpc::ServerBuilder& builder, grpc::ResourceQuota& quota) {
  using namespace sluice;
  builder.SetMaxReceiveMessageSize(api::kMaxMessageBytes);
  builder.SetMaxSendMessageSize(api::kMaxMessageBytes);
  // Proxies ping an idle stream every --control-plane-keepalive (at least
  // api::kMinKeepaliveMs): accept that with room for timer jitter, and still
  // end a connection that pings far faster.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             api::kMinKeepaliveMs / 2);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // And ping proxies too, so that the stream (and its slot) of a proxy
  // that vanished is ended.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, api::kDefaultKeepaliveMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, api::kDefaultKeepaliveTimeoutMs);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // gRPC binds with SO_REUSEPORT by default, so a proxy on this host whose
  // Listener asks for this port (proxies bind with SO_REUSEPORT too, to
  // share a listener) would take half of the operators' connections: a
  // config could lock them out. Without it the proxy's bind fails and it
  // refuses that version.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  quota.SetMaxThreads(128);
  builder.SetResourceQuota(quota);
}

// SIGHUP and SIGUSR1 are held for the sigwait below (they reopen the audit
// log) from the executable's pre-initialization on, which the dynamic loader
// runs before the shared libraries' initializers (gRPC's, protobuf's): a
// logrotate postrotate that lands during a restart must not end the process,
// as their default action would. Only the loader's own mapping and linking
// of the libraries comes first (about 40 ms measured on a loaded machine).
void HoldReopenSignals(int, char**, char**) {
  sigset_t reopen;
  sigemptyset(&reopen);
  sigaddset(&reopen, SIGHUP);
  sigaddset(&reopen, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &reopen, nullptr);
}
__attribute__((section(".preinit_array"), used)) void (*const kHoldReopenSignals)(
    int, char**, char**) = HoldReopenSignals;

int Run(int argc, char** argv) {
  using namespace sluice;
  auto flags = ParseFlags(argc, argv,
                          {"listen", "data-dir", "max-config-bytes", "max-discovery-streams",
                           "nack-retry", "metrics-listen", "history", "log-level",
                           "tls-cert", "tls-key", "client-ca", "tls-reload-interval",
                           "admin-token-file", "store",
                           "etcd-endpoints", "etcd-prefix", "etcd-timeout",
                           "etcd-max-request-bytes", "etcd-ca", "etcd-cert", "etcd-key",
                           "etcd-server-name", "etcd-compaction-interval", "audit-log-max-mb"},
                          {"help", "insecure", "require-tokens"});
  if (!flags.ok()) {
    std::fprintf(stderr, "sluice-control: %s\n%s", std::string(flags.status().message()).c_str(), kUsageHint);
    return 2;
  }
  if (flags->switches.count("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!flags->positional.empty()) {
    std::fprintf(stderr, "sluice-control: unexpected argument '%s'\n%s",
                 flags->positional[0].c_str(), kUsageHint);
    return 2;
  }
  auto get = [&](const std::string& name, const std::string& fallback) {
    auto it = flags->values.find(name);
    return it == flags->values.end() ? fallback : it->second;
  };
  auto fail = [](absl::string_view message) {
    std::fprintf(stderr, "sluice-control: %s\n%s", std::string(message).c_str(), kUsageHint);
    return 2;
  };
  auto level = ParseLogLevel(get("log-level", "info"));
  if (!level.ok()) {
    std::fprintf(stderr, "sluice-control: --log-level: %s\n%s",
                 std::string(level.status().message()).c_str(), kUsageHint);
    return 2;
  }
  SetLogLevel(*level);
  RouteGrpcLogging();
  const std::string listen = get("listen", "127.0.0.1:18000");
  if (absl::Status checked = CheckHostPortFlag("listen", listen, /*allow_zero=*/true);
      !checked.ok()) {
    std::fprintf(stderr, "sluice-control: %s\n%s", std::string(checked.message()).c_str(), kUsageHint);
    return 2;
  }
  const std::string data_dir = get("data-dir", "./sluice-data");
  int64_t max_config_bytes = api::kMaxConfigBytes;
  if (absl::Status status =
          IntFlagInRange(*flags, "max-config-bytes", 1024, api::kMaxConfigBytes, &max_config_bytes);
      !status.ok()) {
    return fail(status.message());
  }
  controlplane::DiscoveryOptions discovery_options;
  {
    int64_t max_streams = discovery_options.max_streams;
    if (absl::Status status =
            IntFlagInRange(*flags, "max-discovery-streams", 1, 100000, &max_streams);
        !status.ok()) {
      return fail(status.message());
    }
    discovery_options.max_streams = static_cast<int>(max_streams);
  }
  int64_t audit_log_max_mb = 100;
  if (absl::Status status =
          IntFlagInRange(*flags, "audit-log-max-mb", 0, 1000000, &audit_log_max_mb);
      !status.ok()) {
    return fail(status.message());
  }
  int64_t history_versions = controlplane::kDefaultHistoryVersions;
  if (absl::Status status = IntFlagInRange(*flags, "history", 1, 100000, &history_versions);
      !status.ok()) {
    return fail(status.message());
  }
  auto nack_retry = ParseDurationFlag("nack-retry", get("nack-retry", "5s"));
  if (!nack_retry.ok() || *nack_retry <= absl::ZeroDuration()) {
    std::fprintf(stderr, "sluice-control: %s\n%s",
                 nack_retry.ok() ? "--nack-retry must be more than 0s"
                                 : std::string(nack_retry.status().message()).c_str(),
                 kUsageHint);
    return 2;
  }
  discovery_options.nack_retry = *nack_retry;
  discovery_options.nack_retry_max = std::max(*nack_retry, absl::Minutes(5));
  // Off unless asked for: the Prometheus endpoint (metrics_endpoint.h).
  const std::string metrics_listen = get("metrics-listen", "");
  if (flags->values.count("metrics-listen")) {
    if (auto split = common::SplitHostPort(metrics_listen); !split.ok()) {
      std::fprintf(stderr, "sluice-control: --metrics-listen: %s\n%s",
                   std::string(split.status().message()).c_str(), kUsageHint);
      return 2;
    }
  }
  // Read before the store is opened (or made): a bad file left a new
  // store and a locked data dir behind.
  std::string bootstrap_token;
  if (flags->values.count("admin-token-file")) {
    auto token = controlplane::OperatorTokens::ReadBootstrapTokenFile(
        flags->values["admin-token-file"]);
    if (!token.ok()) {
      std::fprintf(stderr, "sluice-control: --admin-token-file: %s\n%s",
                   std::string(token.status().message()).c_str(), kUsageHint);
      return 2;
    }
    bootstrap_token = *std::move(token);
    if (std::string loose = OthersCanRead("--admin-token-file", flags->values["admin-token-file"]);
        !loose.empty()) {
      SLUICE_LOG(kWarning, loose, ": anyone who can log in here can take the admin token");
    }
  }
  // --require-tokens with no bootstrap token and a data dir that has never
  // held one (no tokens.db): refused before anything is created there.
  // With etcd the stored tokens are known once it is reached (below).
  if (flags->switches.count("require-tokens") && bootstrap_token.empty() &&
      get("store", "file") == "file" && !data_dir.empty() &&
      ::access((data_dir + "/tokens.db").c_str(), F_OK) != 0) {
    std::fprintf(stderr,
                 "sluice-control: --require-tokens: no token exists yet; give "
                 "--admin-token-file FILE\n%s",
                 kUsageHint);
    return 2;
  }
  controlplane::ServerSecurityFlags security_flags{get("tls-cert", ""), get("tls-key", ""),
                                                  get("client-ca", ""),
                                                  flags->switches.count("insecure") > 0};
  auto reload = ParseDurationFlag("tls-reload-interval", get("tls-reload-interval", "60s"));
  if (!reload.ok() || *reload < absl::Seconds(1) || *reload > absl::Hours(24)) {
    std::fprintf(stderr, "sluice-control: %s\n%s",
                 reload.ok() ? "--tls-reload-interval must be 1s..24h"
                             : std::string(reload.status().message()).c_str(),
                 kUsageHint);
    return 2;
  }
  security_flags.reload_interval_seconds =
      static_cast<unsigned int>(absl::ToInt64Seconds(*reload));
  absl::StatusOr<controlplane::ServerSecurity> security =
      controlplane::MakeServerSecurity(listen.substr(0, listen.rfind(':')), security_flags);
  if (!security.ok()) {
    std::fprintf(stderr, "sluice-control: %s\n%s", std::string(security.status().message()).c_str(),
                 kUsageHint);
    return 2;
  }
  discovery_options.require_node_certificate = security->client_certificates;
  if (security->tls && !security->client_certificates &&
      !controlplane::IsLoopbackHost(listen.substr(0, listen.rfind(':')))) {
    // Tokens guard the admin API only: a config stream needs no token.
    SLUICE_LOG(kWarning, "TLS without --client-ca on ", listen,
               ": any client that reaches this port can open a config stream as a proxy and "
               "receive every Secret, private keys included; give --client-ca (see "
               "deploy/kubernetes-mtls) or let only the proxies reach the port");
  }
  if (!flags->switches.count("require-tokens") &&
      !controlplane::IsLoopbackHost(listen.substr(0, listen.rfind(':')))) {
    // Stored tokens still close it (below); with none, it is open.
    SLUICE_LOG(kWarning, "admin API on ", listen, " without --require-tokens: unless tokens "
               "are stored, anyone who reaches this port can change the config; give "
               "--require-tokens --admin-token-file FILE");
  }
  if (security->tls) {
    if (std::string problem = CertificateTimeProblem(get("tls-cert", "")); !problem.empty()) {
      SLUICE_LOG(kWarning, "--tls-cert: the certificate ", problem,
                 ": clients refuse every handshake until it is renewed");
    }
  }
  const std::string store_kind = get("store", "file");
  controlplane::EtcdOptions etcd_options;
  if (store_kind == "etcd") {
    auto endpoints = controlplane::ParseEtcdEndpoints(get("etcd-endpoints", ""));
    if (!endpoints.ok()) {
      std::fprintf(stderr, "sluice-control: %s\n%s",
                   std::string(endpoints.status().message()).c_str(), kUsageHint);
      return 2;
    }
    controlplane::EtcdTlsFlags tls_flags{get("etcd-ca", ""), get("etcd-cert", ""),
                                         get("etcd-key", ""), get("etcd-server-name", "")};
    auto tls = controlplane::MakeEtcdTls(*endpoints, tls_flags);
    if (!tls.ok()) {
      std::fprintf(stderr, "sluice-control: %s\n%s", std::string(tls.status().message()).c_str(),
                   kUsageHint);
      return 2;
    }
    etcd_options.endpoints = std::move(endpoints->addresses);
    etcd_options.tls = *std::move(tls);
    etcd_options.prefix = get("etcd-prefix", "/sluice/");
    if (etcd_options.prefix.empty() || etcd_options.prefix.back() != '/') {
      std::fprintf(stderr, "sluice-control: --etcd-prefix must end with '/'\n%s", kUsageHint);
      return 2;
    }
    auto timeout = ParseDurationFlag("etcd-timeout", get("etcd-timeout", "5s"));
    if (!timeout.ok() || *timeout < absl::Milliseconds(100)) {
      std::fprintf(stderr, "sluice-control: %s\n%s",
                   timeout.ok() ? "--etcd-timeout must be at least 100ms"
                                : std::string(timeout.status().message()).c_str(),
                   kUsageHint);
      return 2;
    }
    etcd_options.timeout = *timeout;
    if (flags->values.count("etcd-compaction-interval")) {
      auto interval =
          ParseDurationFlag("etcd-compaction-interval", flags->values["etcd-compaction-interval"]);
      if (!interval.ok() ||
          (*interval != absl::ZeroDuration() &&
           (*interval < absl::Seconds(1) || *interval > absl::Hours(24)))) {
        std::fprintf(stderr, "sluice-control: %s\n%s",
                     interval.ok() ? "--etcd-compaction-interval must be 0 (off) or 1s..24h"
                                   : std::string(interval.status().message()).c_str(),
                     kUsageHint);
        return 2;
      }
      etcd_options.compaction_interval = *interval;
    }
    if (absl::Status status =
            IntFlagInRange(*flags, "etcd-max-request-bytes", 4096,
                           std::numeric_limits<int64_t>::max(), &etcd_options.max_request_bytes);
        !status.ok()) {
      return fail(status.message());
    }
  } else if (store_kind != "file") {
    std::fprintf(stderr, "sluice-control: --store must be file or etcd, got '%s'\n%s",
                 store_kind.c_str(), kUsageHint);
    return 2;
  } else if (flags->values.count("etcd-endpoints") || flags->values.count("etcd-prefix") ||
             flags->values.count("etcd-timeout") ||
             flags->values.count("etcd-max-request-bytes") || flags->values.count("etcd-ca") ||
             flags->values.count("etcd-cert") || flags->values.count("etcd-key") ||
             flags->values.count("etcd-server-name") ||
             flags->values.count("etcd-compaction-interval")) {
    std::fprintf(stderr, "sluice-control: --etcd-* flags need --store etcd\n%s", kUsageHint);
    return 2;
  }

  // Signals go to the thread that waits for them, never to gRPC's threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  // A logrotate postrotate or a `reload` sends these to every Sluice
  // process: they reopen the audit log, never stop the control plane.
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // A write past the file-size limit (ulimit -f) fails with EFBIG, as on a
  // full disk, and is handled as such: the signal would end the process.
  signal(SIGXFSZ, SIG_IGN);

  // The data dir: the whole store with --store file; with --store etcd only
  // this replica's audit log, locked all the same.
  auto store = controlplane::FileStore::Open(data_dir);
  if (!store.ok()) {
    SLUICE_LOG(kError, "cannot open the store: ", store.status().message());
    return 1;
  }
  std::unique_ptr<controlplane::FileStore> data_dir_lock;
  controlplane::EtcdStore* etcd = nullptr;
  absl::StatusOr<std::unique_ptr<controlplane::ConfigState>> state =
      absl::UnavailableError("not loaded");
  if (store_kind == "etcd") {
    data_dir_lock = std::move(*store);
    // etcd may not be reachable yet: retry until it is (or a signal ends
    // the start); nothing is served meanwhile.
    absl::Duration backoff = absl::Milliseconds(500);
    while (true) {
      auto etcd_store = controlplane::EtcdStore::Open(etcd_options);
      if (!etcd_store.ok()) {
        SLUICE_LOG(kError, etcd_store.status().message());
        return 2;
      }
      etcd = etcd_store->get();
      state = controlplane::ConfigState::Create(std::move(*etcd_store), &absl::Now,
                                                max_config_bytes,
                                                static_cast<size_t>(history_versions));
      if (state.ok() || state.status().code() != absl::StatusCode::kUnavailable) break;
      etcd = nullptr;
      SLUICE_LOG(kWarning, "cannot load the state from etcd, retrying in ",
                 absl::FormatDuration(backoff), " (nothing is served until it loads): ",
                 state.status().message());
      struct timespec wait = absl::ToTimespec(backoff);
      int received = sigtimedwait(&signals, nullptr, &wait);
      if (received == SIGTERM || received == SIGINT) {
        SLUICE_LOG(kInfo, "signal ", received, ": stopped before the state was loaded");
        return 1;
      }
      backoff = std::min(backoff * 2, absl::Seconds(5));
    }
  } else {
    state = controlplane::ConfigState::Create(std::move(*store), &absl::Now, max_config_bytes,
                                              static_cast<size_t>(history_versions));
  }
  if (!state.ok()) {
    SLUICE_LOG(kError, "cannot restore the state: ", state.status().message());
    return 1;
  }
  controlplane::ProxyRegistry registry;
  controlplane::ControlPlaneMetrics metrics;
  // Cache purges go from the admin API to the proxies' streams through it.
  controlplane::PurgeRelay purges;
  controlplane::DiscoveryServiceImpl discovery(
      (*state).get(), &registry, discovery_options, &metrics, &purges);
  // rate-limit scope FLEET: each proxy's share of each limit, by demand.
  controlplane::LeaseAllocator leases;
  discovery.set_lease_allocator(&leases);
  // With --store etcd the replicas divide each limit between them by their
  // proxies' demand (replica_shares.h); `etcd` lives as long as `state`.
  std::unique_ptr<EtcdDemandBoard> demand_board;
  std::unique_ptr<controlplane::ReplicaShareExchange> replica_shares;
  // This process's name among the replicas: its etcd keys leases/<id> and
  // fleet/<id>, and the `replica` sluicectl proxies -o json gives its proxies.
  const std::string replica_id =
      etcd != nullptr ? controlplane::ReplicaShareExchange::NewReplicaId() : "";
  if (etcd != nullptr) {
    SLUICE_LOG(kInfo, "replica id ", replica_id,
               " (etcd keys leases/ and fleet/ under the prefix; the `replica` of its proxies "
               "in sluicectl proxies -o json)");
    demand_board = std::make_unique<EtcdDemandBoard>(etcd);
    controlplane::ReplicaShareOptions share_options;
    share_options.replica_id = replica_id;
    replica_shares = std::make_unique<controlplane::ReplicaShareExchange>(
        demand_board.get(), &leases, std::move(share_options));
    replica_shares->Start();
  }
  // Operator tokens and the audit log of changes (docs/operations.md); the
  // data dir is locked by the store already.
  auto tokens = etcd != nullptr ? controlplane::OperatorTokens::Open(etcd->Tokens())
                                : controlplane::OperatorTokens::Open(data_dir);
  if (!tokens.ok()) {
    SLUICE_LOG(kError, "cannot load the operator tokens: ", tokens.status().message());
    return 1;
  }
  if (!bootstrap_token.empty()) {
    if (absl::Status added = (*tokens)->AddBootstrapToken(bootstrap_token); !added.ok()) {
      SLUICE_LOG(kError, "--admin-token-file: ", added.message());
      return 2;
    }
  }
  const bool require_tokens = flags->switches.count("require-tokens") > 0;
  if (require_tokens && (*tokens)->empty()) {
    SLUICE_LOG(kError, "--require-tokens: no token exists yet; give --admin-token-file FILE");
    return 2;
  }
  // Replicas sharing the store require tokens from now on too, whether or
  // not they were started with the flag: before, one without it let anyone
  // in (and mint an admin token the others accept) until a token was
  // stored, which never happens while only the bootstrap token is used.
  if (require_tokens && etcd != nullptr) {
    if (absl::Status recorded = (*tokens)->RecordTokensRequired(); !recorded.ok()) {
      SLUICE_LOG(kWarning, "--require-tokens: could not record in the store that every "
                 "replica requires tokens (", recorded.message(), "): replicas started "
                 "without the flag let anyone in until a token is made");
    }
  }
  if (!require_tokens && (*tokens)->OnlyMarkerStored()) {
    SLUICE_LOG(kWarning, "a replica started with --require-tokens recorded in the store that "
               "every replica requires tokens: every admin call needs one (to open the admin "
               "API, once no replica runs with the flag: sluicectl token revoke '",
               controlplane::kTokensRequiredMarker, "')");
  } else if (!require_tokens && (*tokens)->HasStored()) {
    SLUICE_LOG(kWarning, "the store holds operator tokens: every admin call needs one, as with "
               "--require-tokens (revoke them all to open the admin API)");
  }
  auto audit = controlplane::AuditLog::Open(data_dir + "/audit.log", &absl::Now,
                                           static_cast<uint64_t>(audit_log_max_mb) << 20);
  if (!audit.ok()) {
    SLUICE_LOG(kError, "cannot open the audit log: ", audit.status().message());
    return 1;
  }
  // Canary rollouts; one a previous process left running is ended before any
  // proxy is served, so the fleet is never left split.
  controlplane::RolloutManager rollouts((*state).get(), &registry, data_dir + "/rollout.db",
                                        &absl::Now, absl::Milliseconds(100), &metrics);
  rollouts.SetAuditLog(audit->get());
  if (absl::Status recovered = rollouts.RecoverInterrupted(); !recovered.ok()) {
    SLUICE_LOG(kError, recovered.message());
    return 1;
  }
  controlplane::AdminServiceImpl admin(
      (*state).get(), &registry, &rollouts, &metrics,
      controlplane::AdminAccess{require_tokens, tokens->get(), audit->get()}, &purges);
  // With --store etcd every replica lists every replica's proxies
  // (fleet_view.h): sluicectl proxies, apply --wait and top see the fleet.
  std::unique_ptr<EtcdDemandBoard> fleet_board;
  std::unique_ptr<controlplane::FleetView> fleet_view;
  if (etcd != nullptr) {
    fleet_board = std::make_unique<EtcdDemandBoard>(etcd, controlplane::EtcdStore::kFleet);
    controlplane::FleetViewOptions fleet_options;
    fleet_options.replica_id = replica_id;
    // One put under etcd's request limit, with room for the key.
    fleet_options.max_entry_bytes = static_cast<size_t>(std::min<int64_t>(
        fleet_options.max_entry_bytes, etcd_options.max_request_bytes - 1024));
    fleet_view = std::make_unique<controlplane::FleetView>(
        fleet_board.get(), [&registry] { return registry.List(); }, std::move(fleet_options));
    admin.set_fleet_view(fleet_view.get());
    fleet_view->Start();
  }

  // Before the gRPC port, so that a busy metrics port ends the start before
  // anything is served.
  controlplane::ConfigState* config_state = (*state).get();
  controlplane::CertificateExpiries expiries;
  controlplane::MetricsEndpoint metrics_endpoint(
      [&metrics, config_state, &registry, &rollouts, &expiries] {
        bool running = false;
        rollouts.Get(&running);
        const auto current = config_state->Current();
        controlplane::ControlPlaneMetrics::ScrapeState scrape{
            current->version, static_cast<int64_t>(registry.connected()), running, {}};
        scrape.certificate_expiry = expiries.Of(current->resources);
        return metrics.Render(scrape);
      },
      // /livez: the state's lock and the registry's, which a stuck apply or
      // stream would hold, without a scrape's work.
      [config_state, &registry] {
        config_state->Current();
        registry.connected();
      });
  if (!metrics_listen.empty()) {
    absl::StatusOr<int> metrics_port = metrics_endpoint.Start(metrics_listen);
    if (!metrics_port.ok()) {
      SLUICE_LOG(kError, "--metrics-listen: ", metrics_port.status().message());
      return 1;
    }
    // Not "listening on": that line names the gRPC port.
    SLUICE_LOG(kInfo, "Prometheus metrics on http://",
               metrics_listen.substr(0, metrics_listen.rfind(':')), ":", *metrics_port,
               "/metrics");
  }

  grpc::ServerBuilder builder;
  int bound_port = 0;
  // With TLS, a call to the admin API without a valid token is refused on
  // its metadata, before its request is read (plaintext credentials take
  // no such processor: there, the handlers refuse it once it is read).
  if (security->tls) security->credentials->SetAuthMetadataProcessor(
      controlplane::MakeAdminTokenGate(&admin));
  builder.AddListeningPort(listen, security->credentials, &bound_port);
  builder.RegisterService(&discovery);
  builder.RegisterService(&admin);
  grpc::ResourceQuota quota("sluice-control");
  ConfigureServer(builder, quota);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    SLUICE_LOG(kError, "cannot listen on ", listen,
               " (address in use, or not a HOST:PORT this machine has)");
    return 1;
  }
  std::string host = listen.substr(0, listen.rfind(':'));
  SLUICE_LOG(kInfo, "sluice-control listening on ", host, ":", bound_port,
             ", data dir ", data_dir,
             etcd != nullptr ? absl::StrCat(", state in ", (*state)->store_description())
                             : std::string(),
             ", version ", (*state)->Current()->version,
             ", store ", (*state)->store_id(), ", ", security->Describe());
  metrics_endpoint.SetServing(true);


  int received = 0;
  while (sigwait(&signals, &received) == 0 && (received == SIGHUP || received == SIGUSR1)) {
    if (absl::Status reopened = (*audit)->Reopen(); !reopened.ok()) {
      SLUICE_LOG(kError, "signal ", received, ": cannot reopen the audit log (still writing the "
                 "old file): ", reopened.message());
    } else {
      SLUICE_LOG(kInfo, "signal ", received, ": audit log reopened");
    }
  }
  SLUICE_LOG(kInfo, "signal ", received, ": shutting down");
  metrics_endpoint.SetServing(false);
  // Side by side, their entries' removals too: each may wait on etcd (up to
  // --etcd-timeout), so the stop takes one such wait, not two.
  if (replica_shares) replica_shares->RequestStop();
  if (fleet_view) fleet_view->RequestStop();
  {
    std::thread shares_stop([&] {
      if (replica_shares) replica_shares->Stop();
    });
    if (fleet_view) fleet_view->Stop();
    shares_stop.join();
  }
  (*state)->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  metrics_endpoint.Stop();
  SLUICE_LOG(kInfo, "stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
