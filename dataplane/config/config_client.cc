#include "dataplane/config/config_client.h"

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "api/route_patch.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/pem_file.h"
#include "dataplane/cache/purge.h"
#include "dataplane/http/path_normalizer.h"

namespace sluice::config {
namespace {

// A purge selector's host as cache keys hold hosts: lower case, without its
// port and one trailing dot (as a request's Host is matched).
std::string PurgeHost(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    host = host.substr(0, host.find(']') + 1);
  } else if (host.find(':') == host.rfind(':')) {
    host = host.substr(0, host.find(':'));
  }
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  return absl::AsciiStrToLower(absl::string_view(host.data(), host.size()));
}

// A purge selector's path (or prefix) as cache keys hold paths: normalised
// as requests are (dot segments resolved, percent-encodings of unreserved
// characters decoded, the others' hex in upper case). One that does not
// normalise is left as it is (it matches nothing a request stored).
std::string PurgePath(const std::string& path) {
  if (path.empty()) return path;
  absl::StatusOr<http::NormalizedPath> normalized =
      http::NormalizePath(path, http::PathNormalizeOptions());
  return normalized.ok() ? normalized->target : path;
}


// `text` cut to at most `limit` bytes on a UTF-8 character boundary (a
// proto3 string must stay valid UTF-8), marked as cut.
std::string Shorten(absl::string_view text, size_t limit) {
  if (text.size() <= limit) return std::string(text);
  constexpr absl::string_view kMark = " [cut]";
  size_t end = limit - kMark.size();
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return absl::StrCat(text.substr(0, end), kMark);
}

// "UNAVAILABLE: keepalive watchdog timeout" (gRPC's codes are absl's).
std::string StatusText(const grpc::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                      ": ", status.error_message());
}

}  // namespace

absl::Status ConfigClientOptions::Check() const {
  if (keepalive < absl::Milliseconds(api::kMinKeepaliveMs) || keepalive > absl::Hours(2)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "keepalive must be ", api::kMinKeepaliveMs / 1000, "s..2h, got ",
        absl::FormatDuration(keepalive)));
  }
  if (keepalive_timeout < absl::Milliseconds(1) || keepalive_timeout > absl::Hours(2)) {
    return absl::InvalidArgumentError(absl::StrCat("keepalive timeout must be 1ms..2h, got ",
                                                   absl::FormatDuration(keepalive_timeout)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ParseControlPlaneAddresses(absl::string_view flag) {
  std::vector<std::string> addresses;
  const std::vector<absl::string_view> parts = absl::StrSplit(flag, ',');
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string address(absl::StripAsciiWhitespace(parts[i]));
    if (address.empty()) {
      if (parts.size() == 1) return absl::InvalidArgumentError("--control-plane is empty");
      return absl::InvalidArgumentError(
          absl::StrCat("--control-plane \"", std::string(flag), "\": address ", i + 1, " of ",
                       parts.size(), " is empty (give HOST:PORT[,HOST:PORT...])"));
    }
    // A name with a control character or a quote is no host nor URI: it
    // reached the log as a line of its own.
    for (char c : address) {
      const unsigned char u = static_cast<unsigned char>(c);
      if (u < 0x20 || u == 0x7f || c == '"' || c == '\\' || c == ' ') {
        return absl::InvalidArgumentError(absl::StrCat(
            "--control-plane: address ", i + 1, " has a control character, a space, a quote or "
            "a backslash"));
      }
    }
    // gRPC would dial "h:99999" as port 34463 and "h" as port 443. A gRPC
    // target URI (dns:///host:port, unix:/path) is gRPC's to read.
    if (address.find('/') == std::string::npos) {
      if (absl::Status status = CheckHostPortFlag("control-plane", address); !status.ok()) {
        return status;
      }
    }
    if (std::find(addresses.begin(), addresses.end(), address) != addresses.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--control-plane \"", std::string(flag), "\": ", address, " is given twice"));
    }
    addresses.push_back(std::move(address));
  }
  return addresses;
}

ControlPlaneFailover::ControlPlaneFailover(std::vector<std::string> addresses, size_t first,
                                           Schedule schedule)
    : addresses_(std::move(addresses)), schedule_(schedule) {
  if (addresses_.empty()) {
    SLUICE_LOG(kError, "ControlPlaneFailover needs at least one address");
    std::abort();
  }
  index_ = first % addresses_.size();
}

absl::Duration ControlPlaneFailover::Next(absl::Duration lived, uint64_t random) {
  if (lived >= schedule_.healthy_after) failures_ = 0;
  // Passes over the whole list that failed before this failure.
  const uint64_t passes = failures_ / addresses_.size();
  ++failures_;
  index_ = (index_ + 1) % addresses_.size();
  absl::Duration ceiling = schedule_.base;
  for (uint64_t i = 0; i < passes && ceiling < schedule_.max; ++i) ceiling *= 2;
  ceiling = std::min(ceiling, schedule_.max);
  // Uniform in [ceiling/2, ceiling].
  const absl::Duration half = ceiling / 2;
  const uint64_t spread = static_cast<uint64_t>(absl::ToInt64Nanoseconds(ceiling - half));
  return half + absl::Nanoseconds(static_cast<int64_t>(random % (spread + 1)));
}

ConfigClient::ConfigClient(std::vector<std::string> control_planes, discovery::v1::Node node,
                           controlplane::StoredState held, ApplyFn apply, PersistFn persist,
                           ConfigClientOptions options)
    : control_planes_(std::move(control_planes)),
      node_(std::move(node)),
      options_(options),
      apply_(std::move(apply)),
      persist_(std::move(persist)),
      held_(std::move(held)) {
  if (control_planes_.empty()) {
    SLUICE_LOG(kError, "ConfigClient needs at least one control-plane address");
    std::abort();
  }
}

ConfigClient::~ConfigClient() { Stop(); }

void ConfigClient::WithHeld(
    const std::function<void(const controlplane::StoredState&)>& fn) const {
  absl::MutexLock lock(&held_mu_);
  fn(held_);
}

void ConfigClient::SetReportSource(ReportFn source, absl::Duration interval) {
  report_source_ = std::move(source);
  report_interval_ = interval;
}

void ConfigClient::SetRateLimitExchange(DemandFn demand, absl::Duration interval,
                                        LeasesFn leases) {
  demand_source_ = std::move(demand);
  demand_interval_ = interval;
  leases_sink_ = std::move(leases);
}

void ConfigClient::Start() {
  thread_ = std::thread([this] { Run(); });
  if (report_source_) {
    reporter_ = std::thread([this] {
      RunPeriodic(report_interval_, [this]() -> std::optional<discovery::v1::DiscoveryRequest> {
        discovery::v1::DiscoveryRequest request;
        *request.mutable_report() = report_source_();
        return request;
      });
    });
  }
  if (demand_source_) {
    demand_reporter_ = std::thread([this] {
      RunPeriodic(demand_interval_, [this]() -> std::optional<discovery::v1::DiscoveryRequest> {
        std::optional<discovery::v1::RateLimitDemand> demand = demand_source_();
        if (!demand.has_value()) return std::nullopt;
        discovery::v1::DiscoveryRequest request;
        *request.mutable_rate_limit_demand() = *std::move(demand);
        return request;
      });
    });
  }
}

void ConfigClient::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (context_) context_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
  if (reporter_.joinable()) reporter_.join();
  if (demand_reporter_.joinable()) demand_reporter_.join();
}

void ConfigClient::RunPeriodic(
    absl::Duration interval,
    const std::function<std::optional<discovery::v1::DiscoveryRequest>()>& make) {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      mu_.AwaitWithTimeout(absl::Condition(&stopping), interval);
      if (stopping_) return;
    }
    // Made every interval (so each covers one interval), sent when a stream
    // is up; a summary made while disconnected is dropped.
    std::optional<discovery::v1::DiscoveryRequest> request = make();
    if (!request.has_value()) continue;
    absl::MutexLock lock(&write_mu_);
    if (stream_ != nullptr) stream_->Write(*request);
  }
}

void ConfigClient::Run() {
  std::mt19937_64 rng(std::random_device{}());
  // Replicas are equal: start at a random one, so that a fleet spreads
  // over them.
  ControlPlaneFailover failover(control_planes_, static_cast<size_t>(rng()));
  while (true) {
    const std::string address = failover.current();
    current_.store(failover.index(), std::memory_order_relaxed);
    absl::Time started = absl::Now();
    std::optional<grpc::Status> ended = RunStream(address);
    const bool was_connected = connected_.exchange(false);
    if (was_connected && connection_observer_) connection_observer_(address, false);
    if (!ended) return;
    const absl::Duration wait = failover.Next(absl::Now() - started, rng());
    const std::string in = absl::FormatDuration(absl::Trunc(wait, absl::Milliseconds(1)));
    std::string serving = absl::StrCat("serving version ", held_.version, ", ");
    if (control_planes_.size() == 1) {
      absl::StrAppend(&serving, "reconnecting in ", in);
    } else {
      absl::StrAppend(&serving, "trying ", failover.current(), " in ", in);
      current_.store(failover.index(), std::memory_order_relaxed);
    }
    if (was_connected) {
      SLUICE_LOG(kWarning, "config stream to control plane ", address, " broken (",
                 StatusText(*ended), "); ", serving);
    } else if (ended->error_code() == grpc::StatusCode::UNAVAILABLE ||
               ended->error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      // As sluicectl says it: plaintext against a TLS port reads as a
      // closed socket. A refused connection is no TLS matter, nor one that
      // timed out (a hung server: a TLS one would have closed at once).
      const bool tls_hint =
          tls_ca_pem_.empty() && ended->error_code() == grpc::StatusCode::UNAVAILABLE &&
          !absl::StrContains(ended->error_message(), "Connection refused") &&
          !absl::StrContains(ended->error_message(), "timed out");
      SLUICE_LOG(kWarning, "control plane ", address, " unreachable (", StatusText(*ended), ")",
                 tls_hint ? " (if it serves TLS, give --control-plane-ca FILE)" : "", "; ",
                 serving);
    } else {
      SLUICE_LOG(kWarning, "control plane ", address, " refused the config stream (",
                 StatusText(*ended), "); ", serving);
    }
    absl::MutexLock lock(&mu_);
    auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
    mu_.AwaitWithTimeout(absl::Condition(&stopping), wait);
    if (stopping_) return;
  }
}

uint64_t ConfigClient::HeldTableHash(const std::string& name, const api::Resource& table) {
  auto [it, added] = table_hashes_.try_emplace(name, 0);
  if (added) it->second = api::ContentHash(table);
  return it->second;
}

void ConfigClient::MarkConnected(const std::string& address, absl::string_view how) {
  if (!connected_.exchange(true)) {
    SLUICE_LOG(kInfo, "connected to control plane ", address, " (", how, ")");
    if (connection_observer_) connection_observer_(address, true);
  }
}

void ConfigClient::RefreshTlsMaterial() {
  if (tls_ca_pem_.empty()) {
    tls_ca_pem_ = options_.tls_ca_pem;
    tls_cert_pem_ = options_.tls_cert_pem;
    tls_key_pem_ = options_.tls_key_pem;
  }
  auto reread = [](const std::string& flag, const std::string& path, std::string* pem,
                   PemKind kind) {
    if (path.empty()) return true;
    absl::StatusOr<std::string> now = ReadPemFile(flag, path, kind);
    if (!now.ok()) {
      SLUICE_LOG(kWarning, now.status().message(), "; connecting with what was read before");
      return false;
    }
    *pem = *std::move(now);
    return true;
  };
  std::string ca = tls_ca_pem_;
  if (reread("--control-plane-ca", options_.tls_ca_file, &ca, PemKind::kCertificate)) {
    if (absl::Status parses = CheckCertificatesParse("--control-plane-ca", ca); !parses.ok()) {
      SLUICE_LOG(kWarning, parses.message(), "; connecting with what was read before");
    } else {
      tls_ca_pem_ = std::move(ca);
    }
  }
  // No client certificate (server-authenticated TLS): nothing to read.
  // Before, an empty pair was checked and warned of ("the certificate does
  // not parse") at every start.
  if (options_.tls_cert_file.empty() && options_.tls_key_file.empty()) return;
  // The certificate and its key change together: both read and matching
  // (not one caught renewed before the other), or neither kept.
  std::string cert = tls_cert_pem_;
  std::string key = tls_key_pem_;
  if (reread("--control-plane-cert", options_.tls_cert_file, &cert, PemKind::kCertificate) &&
      reread("--control-plane-key", options_.tls_key_file, &key, PemKind::kPrivateKey)) {
    absl::Status problem = CheckKeyMatchesCertificate("--control-plane-cert", cert,
                                                      "--control-plane-key", key);
    if (problem.ok() && cert != tls_cert_pem_) {
      // A renewal past its dates is not traded for the pair that works.
      if (std::string expired = CertificateTimeProblemOfPem(cert); !expired.empty()) {
        problem = absl::InvalidArgumentError(
            absl::StrCat("--control-plane-cert: the certificate ", expired));
      }
    }
    if (!problem.ok()) {
      // Once per problem, not at every reconnect.
      if (problem.message() != tls_warned_) {
        tls_warned_ = std::string(problem.message());
        SLUICE_LOG(kWarning, problem.message(), "; connecting with what was read before");
      }
      return;
    }
    tls_warned_.clear();
    tls_cert_pem_ = std::move(cert);
    tls_key_pem_ = std::move(key);
  }
}

std::optional<grpc::Status> ConfigClient::RunStream(const std::string& address) {
  grpc::ChannelArguments args;
  // Pings go on while the stream is idle (gRPC stops after two without data
  // unless told otherwise); sluice-control accepts them (api/discovery.h).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options_.keepalive)));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options_.keepalive_timeout)));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // A whole config fits in one response (api::kMaxConfigBytes), and the
  // first request lists everything held.
  args.SetMaxReceiveMessageSize(api::kMaxMessageBytes);
  args.SetMaxSendMessageSize(api::kMaxMessageBytes);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options_.tls_ca_pem.empty()) {
    RefreshTlsMaterial();
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = tls_ca_pem_;
    tls.pem_cert_chain = tls_cert_pem_;
    tls.pem_private_key = tls_key_pem_;
    credentials = grpc::SslCredentials(tls);
    if (!options_.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options_.tls_server_name);
    }
  }
  auto channel = grpc::CreateCustomChannel(address, credentials, args);
  auto stub = discovery::v1::DiscoveryService::NewStub(channel);
  grpc::ClientContext context;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return std::nullopt;
    context_ = &context;
  }
  auto stream = stub->StreamConfig(&context);
  {
    absl::MutexLock lock(&write_mu_);
    stream_ = stream.get();
  }
  discovery::v1::DiscoveryRequest hello;
  *hello.mutable_node() = node_;
  // This client applies route table patches (api/route_patch.h).
  hello.mutable_node()->add_client_features(api::kFeatureRouteTablePatch);
  hello.set_version_applied(held_.version);
  hello.set_store_id(held_.store_id);
  for (const auto& [id, resource] : held_.resources) {
    if (resource.has_route_table()) {
      // The hash patches were checked against and moved on.
      config::v1::ResourceKey* key = hello.add_known_resources();
      key->set_kind(id.first);
      key->set_name(id.second);
      key->set_hash(HeldTableHash(id.second, resource));
    } else {
      *hello.add_known_resources() = api::KeyOf(resource);
    }
  }
  bool ok;
  {
    absl::MutexLock lock(&write_mu_);
    ok = stream->Write(hello);
  }
  if (ok) {
    // sluice-control sends its initial metadata once it has accepted the
    // stream; a refusal ends the call without it.
    stream->WaitForInitialMetadata();
    if (context.GetServerInitialMetadata().count(api::kStreamAcceptedKey)) {
      MarkConnected(address, "stream established");
    }
  }
  discovery::v1::DiscoveryResponse response;
  while (ok && stream->Read(&response)) {
    // A control plane that predates the accepted-stream metadata.
    MarkConnected(address, "first response");
    if (response.has_purge()) {
      // Not a config response: no ACK/NACK, no change to what is held.
      discovery::v1::DiscoveryRequest result = PurgeCache(response.purge());
      absl::MutexLock lock(&write_mu_);
      ok = stream->Write(result);
      continue;
    }
    if (response.has_rate_limit_leases()) {
      // Not a config response either, and not answered.
      if (leases_sink_) leases_sink_(response.rate_limit_leases());
      continue;
    }
    bool applied = false;
    discovery::v1::DiscoveryRequest answer;
    {
      absl::MutexLock lock(&held_mu_);
      answer = Answer(response, &applied);
    }
    {
      absl::MutexLock lock(&write_mu_);
      ok = stream->Write(answer);
    }
    if (applied && persist_) persist_(held_);
  }
  {
    absl::MutexLock lock(&write_mu_);
    stream_ = nullptr;
  }
  grpc::Status status = stream->Finish();
  {
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
    if (stopping_) return std::nullopt;
  }
  return status;
}

discovery::v1::DiscoveryRequest ConfigClient::PurgeCache(
    const discovery::v1::CachePurge& purge) {
  const discovery::v1::PurgeSelector& from = purge.selector();
  cache::PurgeSelector selector{from.route(), PurgeHost(from.host()), PurgePath(from.path()),
                                PurgePath(from.prefix())};
  const uint64_t removed = cache::Purge(selector);
  SLUICE_LOG(kInfo, "cache purge ", purge.id(), " (route \"", selector.route,
             "\", host \"", selector.host, "\", path \"", selector.path,
             "\", prefix \"", selector.prefix, "\"): ", removed,
             " entries removed");
  discovery::v1::DiscoveryRequest answer;
  answer.mutable_purge_result()->set_id(purge.id());
  answer.mutable_purge_result()->set_entries_removed(removed);
  return answer;
}

discovery::v1::DiscoveryRequest ConfigClient::Answer(
    const discovery::v1::DiscoveryResponse& response, bool* applied) {
  absl::Time received = absl::Now();
  discovery::v1::DiscoveryRequest answer;
  answer.set_response_nonce(response.nonce());
  auto reject = [&](absl::string_view why) {
    answer.set_version_applied(held_.version);
    answer.set_error_detail(Shorten(why, api::kMaxNackErrorBytes));
    SLUICE_LOG(kWarning, "rejected config version ", response.version(), ": ", why);
    *applied = false;
    return answer;
  };
  // Versions compare only within one store: a lower one from the same store
  // would take the proxy back; from a new store (the control plane's data
  // dir was reset) it is what the control plane now holds.
  if (!held_.store_id.empty() && response.store_id() == held_.store_id &&
      response.version() < held_.version) {
    return reject(absl::StrCat("version ", response.version(), " is older than version ",
                               held_.version, ", which this proxy runs from the same store (",
                               held_.store_id, "); a proxy never goes back within a store"));
  }
  // Version 0 is a store nothing was ever applied to (a control plane
  // started on an empty or wrong data dir): taking it would close every
  // listener. Control planes do not send it; an older one might.
  if (response.version() == 0 && held_.version > 0) {
    return reject(absl::StrCat("version 0 is an empty store (", response.store_id(),
                               "): nothing was ever applied to it; keeping version ",
                               held_.version));
  }
  // Change what we hold in place (no copy of a large config), keeping what
  // is replaced so that a NACK can put it back.
  api::ConfigChange change;
  std::vector<std::pair<api::ResourceId, std::optional<api::Resource>>> undo;
  struct PatchUndo {
    api::Resource* table;
    api::RoutePatchUndo undo;
  };
  std::vector<PatchUndo> patch_undo;
  std::vector<std::pair<std::string, std::optional<uint64_t>>> hash_undo;
  auto set_hash = [&](const std::string& name, std::optional<uint64_t> hash) {
    auto it = table_hashes_.find(name);
    hash_undo.emplace_back(name, it == table_hashes_.end() ? std::nullopt
                                                           : std::optional<uint64_t>(it->second));
    if (hash.has_value()) {
      table_hashes_[name] = *hash;
    } else if (it != table_hashes_.end()) {
      table_hashes_.erase(it);
    }
  };
  // Puts back everything changed above, newest first.
  auto roll_back = [&] {
    for (auto it = patch_undo.rbegin(); it != patch_undo.rend(); ++it) {
      api::UndoRouteTablePatch(&it->undo, it->table->mutable_route_table());
    }
    for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
      if (it->second) {
        held_.resources[it->first] = std::move(*it->second);
      } else {
        held_.resources.erase(it->first);
      }
    }
    for (auto it = hash_undo.rbegin(); it != hash_undo.rend(); ++it) {
      if (it->second) {
        table_hashes_[it->first] = *it->second;
      } else {
        table_hashes_.erase(it->first);
      }
    }
  };
  for (const auto& key : response.removed()) {
    auto it = held_.resources.find({key.kind(), key.name()});
    if (it == held_.resources.end()) continue;
    change.removed = true;
    if (it->second.has_route_table()) set_hash(key.name(), std::nullopt);
    undo.emplace_back(it->first, std::move(it->second));
    held_.resources.erase(it);
  }
  for (const auto& resource : response.resources()) {
    api::ResourceId id = api::IdOf(resource);
    change.changed.insert(id);
    if (resource.has_route_table()) set_hash(id.second, api::ContentHash(resource));
    auto it = held_.resources.find(id);
    if (it != held_.resources.end()) {
      undo.emplace_back(id, std::move(it->second));
      it->second = resource;
    } else {
      undo.emplace_back(id, std::nullopt);
      held_.resources.emplace(id, resource);
    }
  }
  size_t replaced_routes = 0, inserted_routes = 0, removed_routes = 0;
  for (const discovery::v1::RouteTablePatch& patch : response.route_table_patches()) {
    const api::ResourceId id{config::v1::ROUTE_TABLE, patch.name()};
    std::string refused;
    auto it = held_.resources.find(id);
    if (change.changed.count(id) || change.patched.count(patch.name())) {
      refused = absl::StrCat("RouteTable \"", patch.name(),
                             "\" is patched twice or both patched and sent whole");
    } else if (it == held_.resources.end() || !it->second.has_route_table()) {
      refused = absl::StrCat("route table patch for RouteTable \"", patch.name(), "\" (base hash ",
                             absl::Hex(patch.base_hash(), absl::kZeroPad16),
                             "): this proxy does not hold that table; send it whole");
    } else if (const uint64_t held_hash = HeldTableHash(patch.name(), it->second);
               held_hash != patch.base_hash()) {
      refused = absl::StrCat("route table patch for RouteTable \"", patch.name(), "\": base hash ",
                             absl::Hex(patch.base_hash(), absl::kZeroPad16),
                             ", but this proxy holds the table at hash ",
                             absl::Hex(held_hash, absl::kZeroPad16), "; send it whole");
    } else {
      PatchUndo entry{&it->second, {}};
      absl::StatusOr<api::RoutePatchResult> result =
          api::ApplyRouteTablePatch(patch, it->second.mutable_route_table(), &entry.undo);
      if (result.ok()) {
        patch_undo.push_back(std::move(entry));
        set_hash(patch.name(), patch.hash());
        size_t inserted = 0;
        for (const api::RoutePatchResult::Splice& s : result->splices) inserted += s.inserted;
        replaced_routes += result->changed.size() - inserted;
        inserted_routes += inserted;
        removed_routes += result->removed;
        if (!result->splices.empty()) {
          std::vector<api::ConfigChange::Splice>& splices = change.spliced[patch.name()];
          for (const api::RoutePatchResult::Splice& s : result->splices) {
            splices.push_back({s.first, s.removed, s.inserted});
          }
        }
        change.patched.emplace(patch.name(), std::move(result->changed));
        continue;
      }
      refused = std::string(result.status().message());
    }
    roll_back();
    return reject(refused);
  }
  absl::Status status = apply_(response.version(), held_.resources, change);
  if (!status.ok()) {
    roll_back();
    return reject(status.message());
  }
  // Another store: a reset data dir, or replicas that are no failover set
  // (each with its own data dir); said whether the version went down or up.
  if (response.version() < held_.version ||
      (!held_.store_id.empty() && !response.store_id().empty() &&
       response.store_id() != held_.store_id)) {
    SLUICE_LOG(kWarning, "took version ", response.version(), " after version ", held_.version,
               ": the control plane's store (", response.store_id(),
               ") is not the one that version came from (",
               held_.store_id.empty() ? "unknown" : held_.store_id, ")");
  }
  held_.version = response.version();
  held_.store_id = response.store_id();
  answer.set_version_applied(held_.version);
  *applied = true;
  std::string patched;
  if (!change.patched.empty()) {
    patched = absl::StrCat("; ", change.patched.size(),
                           change.patched.size() == 1 ? " route table" : " route tables",
                           " patched: ", replaced_routes,
                           replaced_routes == 1 ? " route" : " routes", " replaced, ",
                           inserted_routes, " inserted, ", removed_routes, " removed");
  }
  SLUICE_LOG(kInfo, "applied config version ", held_.version, " (", change.changed.size(),
             " resources changed, ", response.removed_size(), " removed", patched, ") in ",
             absl::FormatDuration(absl::Now() - received));
  return answer;
}

}  // namespace sluice::config
