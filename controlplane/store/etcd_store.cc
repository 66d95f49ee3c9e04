#include "controlplane/store/etcd_store.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "common/pem_file.h"
#include "grpcpp/grpcpp.h"

namespace sluice::controlplane {

namespace {

constexpr char kStoreIdKey[] = "store_id";
constexpr char kVersionKey[] = "version";
constexpr char kStateKey[] = "state";
constexpr char kHistoryBaseKey[] = "history/base";
constexpr char kHistoryEntryPrefix[] = "history/v/";
constexpr char kTokensKey[] = "tokens";

// etcd's clientv3.WithRequireLeader: a member without a leader answers
// "etcdserver: no leader" at once instead of holding the request.
constexpr char kRequireLeaderKey[] = "hasleader";
constexpr char kRequireLeaderValue[] = "true";

// A read of the whole prefix may be large (every kept version's change).
constexpr int kMaxReceiveBytes = 512 * 1024 * 1024;

etcdserverpb::Compare Absent(const std::string& key) {
  etcdserverpb::Compare compare;
  compare.set_result(etcdserverpb::Compare::EQUAL);
  compare.set_target(etcdserverpb::Compare::VERSION);
  compare.set_key(key);
  compare.set_version(0);
  return compare;
}

etcdserverpb::Compare ValueIs(const std::string& key,
                              const std::string& value) {
  etcdserverpb::Compare compare;
  compare.set_result(etcdserverpb::Compare::EQUAL);
  compare.set_target(etcdserverpb::Compare::VALUE);
  compare.set_key(key);
  compare.set_value(value);
  return compare;
}

void AddPut(google::protobuf::RepeatedPtrField<etcdserverpb::RequestOp>* ops,
            const std::string& key, std::string value) {
  etcdserverpb::PutRequest* put = ops->Add()->mutable_request_put();
  put->set_key(key);
  put->set_value(std::move(value));
}

bool Retriable(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE ||
         code == grpc::StatusCode::DEADLINE_EXCEEDED;
}

// Whether gRPC's message for a failed connection names a TLS failure: a
// server certificate the CA did not sign, a name not in it, a handshake
// etcd aborted.
bool TlsHandshakeFailed(const std::string& message) {
  const std::string lower = absl::AsciiStrToLower(message);
  return absl::StrContains(lower, "ssl") || absl::StrContains(lower, "tls") ||
         absl::StrContains(lower, "certificate") ||
         absl::StrContains(lower, "handshake failed");
}

// Whether a connection was made and then closed or garbled by the peer: what
// a TLS 1.3 client without a certificate sees when etcd runs with
// --client-cert-auth (its handshake completes before etcd checks).
bool ClosedAfterConnecting(const std::string& message) {
  return absl::StrContains(message, "Endpoint read failed") ||
         absl::StrContains(message, "Socket closed") ||
         absl::StrContains(message, "Connection reset");
}

}  // namespace

absl::StatusOr<EtcdEndpoints> ParseEtcdEndpoints(const std::string& list) {
  EtcdEndpoints endpoints;
  for (absl::string_view item :
       absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    absl::string_view trimmed = absl::StripAsciiWhitespace(item);
    std::string scheme;
    if (absl::ConsumePrefix(&trimmed, "https://")) {
      scheme = "https";
    } else if (absl::ConsumePrefix(&trimmed, "http://")) {
      scheme = "http";
    }
    if (!scheme.empty()) {
      if (!endpoints.scheme.empty() && endpoints.scheme != scheme) {
        return absl::InvalidArgumentError(
            "--etcd-endpoints: mixes http:// and https:// URLs: a cluster's "
            "client URLs are all TLS or all plaintext");
      }
      endpoints.scheme = scheme;
    }
    std::string entry(trimmed);
    const size_t colon = entry.rfind(':');
    int port = 0;
    if (colon == std::string::npos || colon == 0 ||
        !absl::SimpleAtoi(entry.substr(colon + 1), &port) || port < 1 ||
        port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("--etcd-endpoints: '", entry,
                       "' is not HOST:PORT (e.g. 10.0.0.1:2379)"));
    }
    endpoints.addresses.push_back(entry);
  }
  if (endpoints.addresses.empty()) {
    return absl::InvalidArgumentError(
        "--etcd-endpoints: give at least one HOST:PORT");
  }
  return endpoints;
}

absl::StatusOr<EtcdTls> MakeEtcdTls(const EtcdEndpoints& endpoints,
                                    const EtcdTlsFlags& flags) {
  EtcdTls tls;
  if (flags.cert_file.empty() != flags.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--etcd-cert and --etcd-key go together: give both, or neither");
  }
  if (flags.ca_file.empty()) {
    if (endpoints.scheme == "https") {
      return absl::InvalidArgumentError(
          "--etcd-endpoints names https:// URLs: give --etcd-ca FILE, the CA "
          "that signed etcd's server certificates");
    }
    if (!flags.cert_file.empty() || !flags.server_name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          flags.cert_file.empty() ? "--etcd-server-name" : "--etcd-cert",
          " needs TLS to etcd: give --etcd-ca FILE (and https:// endpoints)"));
    }
    return tls;
  }
  if (endpoints.scheme == "http") {
    return absl::InvalidArgumentError(
        "--etcd-ca turns TLS on, but --etcd-endpoints names http:// URLs: "
        "write them https://");
  }
  absl::StatusOr<std::string> ca = ReadPemFile("--etcd-ca", flags.ca_file, PemKind::kCertificate);
  if (!ca.ok()) return ca.status();
  tls.ca_pem = *std::move(ca);
  if (!flags.cert_file.empty()) {
    absl::StatusOr<std::string> cert =
        ReadPemFile("--etcd-cert", flags.cert_file, PemKind::kCertificate);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPemFile("--etcd-key", flags.key_file, PemKind::kPrivateKey);
    if (!key.ok()) return key.status();
    // As --tls-key: the etcd client certificate reads and writes the whole
    // store (every Secret's private key, the operator tokens' digests).
    if (std::string loose = OthersCanRead("--etcd-key", flags.key_file); !loose.empty()) {
      SLUICE_LOG(kWarning, loose,
                 ": anyone who can log in here can read and write the whole store in etcd");
    }
    tls.cert_pem = *std::move(cert);
    tls.key_pem = *std::move(key);
  }
  tls.server_name = flags.server_name;
  return tls;
}

namespace etcd_layout {

std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    unsigned char last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  // Every key: etcd's "\0" range end.
  return std::string(1, '\0');
}

std::string HistoryEntryKey(const std::string& prefix, uint64_t version) {
  return absl::StrFormat("%s%s%020u", prefix, kHistoryEntryPrefix, version);
}

absl::StatusOr<Contents> Decode(const std::string& prefix,
                                const etcdserverpb::RangeResponse& range) {
  Contents contents;
  contents.revision = range.header().revision();
  for (const mvccpb::KeyValue& kv : range.kvs()) {
    if (!absl::StartsWith(kv.key(), prefix)) continue;
    const std::string name = kv.key().substr(prefix.size());
    const std::string where = absl::StrCat("etcd key ", kv.key());
    if (name == kStoreIdKey) {
      contents.store_id = kv.value();
    } else if (name == kStateKey) {
      absl::StatusOr<StoredState> state = FileStore::Decode(kv.value(), where);
      if (!state.ok()) return state.status();
      contents.state = std::move(*state);
    } else if (name == kHistoryBaseKey) {
      absl::StatusOr<StoredHistory> base =
          FileStore::DecodeHistory(kv.value(), where);
      if (!base.ok()) return base.status();
      contents.history.base = std::move(base->base);
    } else if (absl::StartsWith(name, kHistoryEntryPrefix)) {
      absl::StatusOr<StoredHistory> one =
          FileStore::DecodeHistory(kv.value(), where);
      if (!one.ok()) return one.status();
      if (one->entries.size() != 1) {
        return absl::DataLossError(
            absl::StrCat(where, " holds ", one->entries.size(),
                         " history entries, expected 1"));
      }
      // Keys sort by version (zero-padded): the entries come oldest first.
      contents.history.entries.push_back(std::move(one->entries.front()));
    } else if (name == kTokensKey) {
      absl::StatusOr<std::vector<StoredToken>> tokens =
          TokenFile::Decode(kv.value(), where);
      if (!tokens.ok()) return tokens.status();
      contents.tokens = std::move(*tokens);
      contents.has_tokens = true;
      contents.tokens_mod_revision = kv.mod_revision();
    }
  }
  if (contents.state.store_id.empty())
    contents.state.store_id = contents.store_id;
  return contents;
}

etcdserverpb::TxnRequest CommitTxn(const std::string& prefix,
                                   uint64_t base_version,
                                   const StoredState& next,
                                   const StoredHistory& history,
                                   bool put_base) {
  etcdserverpb::TxnRequest txn;
  const std::string version_key = prefix + kVersionKey;
  *txn.add_compare() = base_version == 0
                           ? Absent(version_key)
                           : ValueIs(version_key, absl::StrCat(base_version));
  AddPut(txn.mutable_success(), version_key, absl::StrCat(next.version));
  AddPut(txn.mutable_success(), prefix + kStateKey, FileStore::Encode(next));
  if (!history.entries.empty()) {
    const HistoryEntry& newest = history.entries.back();
    AddPut(txn.mutable_success(), HistoryEntryKey(prefix, newest.version),
           FileStore::EncodeHistory(StoredHistory{{}, {newest}}));
    // The versions no longer kept.
    etcdserverpb::DeleteRangeRequest* drop =
        txn.add_success()->mutable_request_delete_range();
    drop->set_key(HistoryEntryKey(prefix, 0));
    drop->set_range_end(
        HistoryEntryKey(prefix, history.entries.front().version));
    if (put_base) {
      AddPut(txn.mutable_success(), prefix + kHistoryBaseKey,
             FileStore::EncodeHistory(StoredHistory{history.base, {}}));
    }
  }
  // Who got there first.
  txn.add_failure()->mutable_request_range()->set_key(prefix + kStateKey);
  return txn;
}

}  // namespace etcd_layout

// The tokens key of an EtcdStore, as a TokenStore.
class EtcdStore::TokenView : public TokenStore {
 public:
  explicit TokenView(EtcdStore* store) : store_(store) {}
  ~TokenView() override {
    absl::MutexLock lock(&store_->delivery_mu_);
    store_->on_tokens_ = nullptr;
  }
  absl::StatusOr<std::vector<StoredToken>> LoadTokens() override {
    return store_->LoadTokens();
  }
  absl::Status SaveTokens(const std::vector<StoredToken>& previous,
                          const std::vector<StoredToken>& next) override {
    return store_->SaveTokens(previous, next);
  }
  void WatchTokens(TokensCallback on_tokens) override {
    {
      absl::MutexLock lock(&store_->delivery_mu_);
      store_->on_tokens_ = std::move(on_tokens);
    }
    absl::MutexLock lock(&store_->mu_);
    store_->StartWatchThread();
  }
  bool TokensCurrent(int64_t revision) override {
    absl::MutexLock lock(&store_->mu_);
    return revision >= store_->tokens_mod_revision_;
  }
  std::string Describe() const override {
    return absl::StrCat("etcd key ", store_->options_.prefix, kTokensKey);
  }

 private:
  EtcdStore* store_;
};

absl::StatusOr<std::unique_ptr<EtcdStore>> EtcdStore::Open(
    EtcdOptions options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError(
        "--etcd-endpoints: give at least one HOST:PORT");
  }
  if (options.prefix.empty() || options.prefix.back() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("--etcd-prefix '", options.prefix, "' must end with '/'"));
  }
  return std::unique_ptr<EtcdStore>(new EtcdStore(std::move(options)));
}

EtcdStore::EtcdStore(EtcdOptions options) : options_(std::move(options)) {
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (options_.tls.enabled()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options_.tls.ca_pem;
    ssl.pem_cert_chain = options_.tls.cert_pem;
    ssl.pem_private_key = options_.tls.key_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  for (const std::string& address : options_.endpoints) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxReceiveBytes);
    args.SetMaxSendMessageSize(kMaxReceiveBytes);
    // A member that comes back is used again within a second.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    // The watch stream notices a member that vanished (etcd accepts pings
    // every 5 s by default).
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
    // One connection per member, not shared with another channel.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (!options_.tls.server_name.empty())
      args.SetSslTargetNameOverride(options_.tls.server_name);
    auto channel = grpc::CreateCustomChannel(address, credentials, args);
    endpoints_.push_back(Endpoint{address, etcdserverpb::KV::NewStub(channel),
                                  etcdserverpb::Watch::NewStub(channel)});
  }
}

EtcdStore::~EtcdStore() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (watch_context_ != nullptr) watch_context_->TryCancel();
  }
  if (watch_thread_.joinable()) watch_thread_.join();
  if (compaction_thread_.joinable()) compaction_thread_.join();
}

absl::StatusOr<int64_t> EtcdStore::CurrentRevision() {
  etcdserverpb::RangeRequest request;
  request.set_key(options_.prefix + "version");
  request.set_count_only(true);
  etcdserverpb::RangeResponse response;
  absl::Status status = CallAny([&](Endpoint& endpoint, grpc::ClientContext* context) {
    response.Clear();
    return endpoint.kv->Range(context, request, &response);
  });
  if (!status.ok()) return status;
  return response.header().revision();
}

absl::Status EtcdStore::Compact(int64_t revision) {
  etcdserverpb::CompactionRequest request;
  request.set_revision(revision);
  etcdserverpb::CompactionResponse response;
  absl::Status status = CallAny(
      [&](Endpoint& endpoint, grpc::ClientContext* context) {
        return endpoint.kv->Compact(context, request, &response);
      },
      /*change=*/false);
  if (!status.ok() && absl::StrContains(status.message(), "required revision has been compacted")) {
    return absl::OkStatus();  // another replica compacted as far, or further
  }
  return status;
}

void EtcdStore::CompactionLoop() {
  int64_t previous = 0;  // the revision one interval ago
  bool failing = false;
  while (SleepUnlessStopping(options_.compaction_interval)) {
    absl::StatusOr<int64_t> now = CurrentRevision();
    if (!now.ok()) continue;  // etcd unreachable: the watch says so
    if (previous > 0) {
      if (absl::Status compacted = Compact(previous); !compacted.ok()) {
        if (!failing) {
          SLUICE_LOG(kWarning, "etcd: cannot compact the history to revision ", previous, ": ",
                     compacted.message(), " (etcd's database grows until it is)");
        }
        failing = true;
      } else {
        if (failing) SLUICE_LOG(kInfo, "etcd: compacting the history again");
        failing = false;
      }
    }
    previous = *now;
  }
}

std::string EtcdStore::EndpointList() const {
  return absl::StrJoin(options_.endpoints, ",");
}

std::string EtcdStore::Describe() const {
  return absl::StrCat("etcd ", EndpointList(), " prefix ", options_.prefix,
                      !options_.tls.enabled() ? " (plaintext)"
                      : options_.tls.cert_pem.empty()
                          ? " (TLS)"
                          : " (TLS with a client certificate)");
}

absl::Status EtcdStore::Txn(const etcdserverpb::TxnRequest& txn,
                             etcdserverpb::TxnResponse* response, bool change) {
  return CallAny(
      [&](Endpoint& endpoint, grpc::ClientContext* context) {
        response->Clear();  // a retry against another endpoint starts afresh
        return endpoint.kv->Txn(context, txn, response);
      },
      change);
}

absl::Status EtcdStore::CallAny(const UnaryCall& call, bool change) {
  const absl::Time deadline = absl::Now() + options_.timeout;
  const size_t n = endpoints_.size();
  const absl::Duration per_attempt =
      std::max(options_.timeout / static_cast<double>(n), absl::Seconds(1));
  size_t index;
  {
    absl::MutexLock lock(&mu_);
    index = preferred_;
  }
  std::vector<std::string> errors(n);
  // The endpoints whose error is a TLS failure. gRPC names a failed
  // handshake once, to the call that waited for it; reconnects nobody waited
  // for fail as "tcp handshaker shutdown", so that first error is kept.
  // Per endpoint: 0 no TLS failure seen, 1 only the handshake's end
  // ("handshaker shutdown", also what a retry after any TLS failure
  // shows), 2 a failure that says why; a message never replaces one of a
  // higher rank.
  std::vector<int> tls_failed(n, 0);
  // A write that timed out inside etcd may still be committed later.
  bool uncertain = false;
  absl::Duration pause = absl::Milliseconds(50);
  for (size_t attempt = 0;; ++attempt) {
    const absl::Time now = absl::Now();
    if (now >= deadline) break;
    Endpoint& endpoint = endpoints_[index];
    grpc::ClientContext context;
    context.set_deadline(
        absl::ToChronoTime(std::min(deadline, now + per_attempt)));
    context.AddMetadata(kRequireLeaderKey, kRequireLeaderValue);
    grpc::Status status = call(endpoint, &context);
    if (status.ok()) {
      absl::MutexLock lock(&mu_);
      preferred_ = index;
      return absl::OkStatus();
    }
    if (!Retriable(status.error_code())) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          absl::StrCat("etcd ", endpoint.address, ": ",
                                       status.error_message()));
    }
    std::string message = status.error_message();
    bool tls_failure = false;
    int rank = 0;
    if (options_.tls.enabled()) {
      tls_failure = TlsHandshakeFailed(message);
      if (!tls_failure && options_.tls.cert_pem.empty() &&
          ClosedAfterConnecting(message)) {
        absl::StrAppend(&message,
                        " (TLS: etcd closed the connection; with "
                        "--client-cert-auth it refuses clients without a "
                        "certificate: give --etcd-cert and --etcd-key; or the "
                        "endpoint does not serve TLS: http://?)");
        tls_failure = true;
      } else if (!tls_failure && !options_.tls.cert_pem.empty() &&
                 (ClosedAfterConnecting(message) ||
                  absl::StrContains(message, "handshaker shutdown"))) {
        // etcd aborts the handshake of a client certificate its
        // --trusted-ca-file did not sign; gRPC only sees the end.
        absl::StrAppend(&message,
                        " (TLS: etcd ended the handshake; with "
                        "--client-cert-auth it refuses a client certificate "
                        "its --trusted-ca-file did not sign: check "
                        "--etcd-cert; or the endpoint does not serve TLS: "
                        "http://?)");
        tls_failure = true;
        rank = 1;
      }
      if (tls_failure && rank == 0) rank = 2;
    }
    if (rank >= tls_failed[index]) {
      errors[index] = absl::StrCat(endpoint.address, ": ", message);
      tls_failed[index] = rank;
    }
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
      uncertain = true;
    index = (index + 1) % n;
    // Every member tried once: a leader election may be under way; pause
    // a little before the next round.
    if ((attempt + 1) % n == 0) {
      absl::SleepFor(std::min(
          pause, std::max(deadline - absl::Now(), absl::ZeroDuration())));
      pause = std::min(pause * 2, absl::Milliseconds(500));
    }
  }
  std::vector<std::string> seen;
  bool all_tls = true;
  for (size_t i = 0; i < n; ++i) {
    if (errors[i].empty()) continue;
    seen.push_back(errors[i]);
    all_tls = all_tls && tls_failed[i] > 0;
  }
  const std::string what =
      !seen.empty() && all_tls
          ? "etcd: TLS failed with every endpoint (check --etcd-ca, "
            "--etcd-cert/--etcd-key and --etcd-server-name against etcd's "
            "certificates; endpoints "
          : "etcd: no quorum or unreachable (endpoints ";
  return absl::UnavailableError(absl::StrCat(
      what, EndpointList(), ", tried for ",
      absl::FormatDuration(options_.timeout), "): ",
      !change     ? ""
      : uncertain ? "not applied now, but a member that timed out may still "
                    "apply it once the "
                    "quorum is back (check sluicectl history before retrying): "
                  : "nothing applied: ",
      seen.empty() ? std::string("no answer") : absl::StrJoin(seen, "; ")));
}

absl::StatusOr<etcd_layout::Contents> EtcdStore::ReadAll() {
  etcdserverpb::RangeRequest request;
  request.set_key(options_.prefix);
  request.set_range_end(etcd_layout::PrefixEnd(options_.prefix));
  etcdserverpb::RangeResponse response;
  absl::Status status =
      CallAny([&](Endpoint& endpoint, grpc::ClientContext* context) {
        response.Clear();
        return endpoint.kv->Range(context, request, &response);
      });
  if (!status.ok()) return status;
  return etcd_layout::Decode(options_.prefix, response);
}

absl::StatusOr<etcd_layout::Contents> EtcdStore::ReadAllCreatingId() {
  absl::StatusOr<etcd_layout::Contents> contents = ReadAll();
  if (!contents.ok() || !contents->store_id.empty()) return contents;
  // A new prefix: the first replica makes the id; the others read it.
  const std::string key = options_.prefix + kStoreIdKey;
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = Absent(key);
  AddPut(txn.mutable_success(), key, NewStoreId());
  etcdserverpb::TxnResponse response;
  absl::Status status = Txn(txn, &response, /*change=*/false);
  if (!status.ok()) return status;
  contents = ReadAll();
  if (contents.ok() && response.succeeded()) {
    SLUICE_LOG(kInfo, "new store id ", contents->store_id, " in ", Describe());
  }
  return contents;
}

absl::StatusOr<StoredState> EtcdStore::Load() {
  absl::StatusOr<etcd_layout::Contents> contents = ReadAllCreatingId();
  if (!contents.ok()) return contents.status();
  absl::MutexLock lock(&mu_);
  oldest_stored_ = contents->history.entries.empty()
                       ? 0
                       : contents->history.entries.front().version;
  loaded_ = *contents;
  return contents->state;
}

absl::StatusOr<StoredHistory> EtcdStore::LoadHistory() {
  {
    absl::MutexLock lock(&mu_);
    if (loaded_.has_value()) {
      StoredHistory history = std::move(loaded_->history);
      loaded_.reset();
      return history;
    }
  }
  absl::StatusOr<etcd_layout::Contents> contents = ReadAll();
  if (!contents.ok()) return contents.status();
  return std::move(contents->history);
}

absl::Status EtcdStore::RecordStoreId(const StoredState& state,
                                      bool* replaced) {
  if (replaced != nullptr) *replaced = false;
  return absl::FailedPreconditionError(
      absl::StrCat(Describe(), " has no store id: Load() makes one"));
}

absl::Status EtcdStore::Commit(uint64_t base_version, const StoredState& next,
                               const StoredHistory& history,
                               std::string* warning) {
  warning->clear();
  bool put_base;
  {
    absl::MutexLock lock(&mu_);
    put_base = history.entries.empty() ||
               history.entries.front().version != oldest_stored_;
  }
  etcdserverpb::TxnRequest txn = etcd_layout::CommitTxn(
      options_.prefix, base_version, next, history, put_base);
  const int64_t bytes = static_cast<int64_t>(txn.ByteSizeLong());
  if (bytes > options_.max_request_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the change needs an etcd request of ", bytes,
                     " bytes (the whole config",
                     put_base ? ", the oldest kept version's content" : "",
                     " and the change), over the ", options_.max_request_bytes,
                     " bytes etcd accepts (sluice-control "
                     "--etcd-max-request-bytes, set to etcd's "
                     "--max-request-bytes); nothing applied"));
  }
  etcdserverpb::TxnResponse response;
  absl::Status status = Txn(txn, &response, /*change=*/true);
  if (!status.ok()) return status;
  if (!response.succeeded()) {
    // Another replica committed after base_version, unless an earlier try of
    // this very transaction went through and only its answer was lost.
    uint64_t stored_version = 0;
    if (response.responses_size() > 0 &&
        response.responses(0).response_range().kvs_size() > 0) {
      const std::string& stored =
          response.responses(0).response_range().kvs(0).value();
      if (stored == FileStore::Encode(next)) {
        response.set_succeeded(true);
      } else if (absl::StatusOr<StoredState> state =
                     FileStore::Decode(stored, "etcd state");
                 state.ok()) {
        stored_version = state->version;
      }
    }
    if (!response.succeeded()) {
      return absl::AbortedError(absl::StrCat(
          "another control-plane replica applied version ", stored_version,
          " first (this change was based on version ", base_version,
          "); nothing applied: retry"));
    }
  }
  absl::MutexLock lock(&mu_);
  if (!history.entries.empty())
    oldest_stored_ = history.entries.front().version;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<StoredToken>> EtcdStore::LoadTokens() {
  absl::StatusOr<etcd_layout::Contents> contents = ReadAll();
  if (!contents.ok()) return contents.status();
  absl::MutexLock lock(&mu_);
  if (contents->tokens_mod_revision >= tokens_mod_revision_) {
    tokens_mod_revision_ = contents->tokens_mod_revision;
    has_tokens_ = contents->has_tokens;
  }
  return std::move(contents->tokens);
}

absl::Status EtcdStore::SaveTokens(const std::vector<StoredToken>& previous,
                                   const std::vector<StoredToken>& next) {
  const std::string key = options_.prefix + kTokensKey;
  etcdserverpb::TxnRequest txn;
  {
    absl::MutexLock lock(&mu_);
    *txn.add_compare() = !has_tokens_ && previous.empty()
                             ? Absent(key)
                             : ValueIs(key, TokenFile::Encode(previous));
  }
  AddPut(txn.mutable_success(), key, TokenFile::Encode(next));
  etcdserverpb::TxnResponse response;
  absl::Status status = Txn(txn, &response, /*change=*/true);
  if (!status.ok()) return status;
  if (!response.succeeded()) {
    return absl::AbortedError(
        "another control-plane replica changed the operator tokens first; "
        "nothing changed: "
        "retry");
  }
  absl::MutexLock lock(&mu_);
  tokens_mod_revision_ =
      std::max(tokens_mod_revision_, response.header().revision());
  has_tokens_ = true;
  return absl::OkStatus();
}

absl::Status EtcdStore::PutReplicaEntry(const std::string& replica,
                                        std::string value, const std::string& space) {
  etcdserverpb::PutRequest request;
  request.set_key(options_.prefix + space + replica);
  request.set_value(std::move(value));
  etcdserverpb::PutResponse response;
  return CallAny(
      [&](Endpoint& endpoint, grpc::ClientContext* context) {
        return endpoint.kv->Put(context, request, &response);
      },
      /*change=*/false);
}

absl::StatusOr<std::vector<EtcdStore::ReplicaEntry>>
EtcdStore::ReadReplicaEntries(const std::string& space) {
  const std::string leases = options_.prefix + space;
  etcdserverpb::RangeRequest request;
  request.set_key(leases);
  request.set_range_end(etcd_layout::PrefixEnd(leases));
  etcdserverpb::RangeResponse response;
  absl::Status status =
      CallAny([&](Endpoint& endpoint, grpc::ClientContext* context) {
        response.Clear();
        return endpoint.kv->Range(context, request, &response);
      });
  if (!status.ok()) return status;
  std::vector<ReplicaEntry> entries;
  for (const mvccpb::KeyValue& kv : response.kvs()) {
    if (!absl::StartsWith(kv.key(), leases)) continue;
    entries.push_back(
        {kv.key().substr(leases.size()), kv.value(), kv.mod_revision()});
  }
  return entries;
}

absl::Status EtcdStore::DeleteReplicaEntry(const std::string& replica,
                                           int64_t mod_revision, const std::string& space) {
  const std::string key = options_.prefix + space + replica;
  etcdserverpb::TxnRequest txn;
  if (mod_revision != 0) {
    etcdserverpb::Compare* compare = txn.add_compare();
    compare->set_result(etcdserverpb::Compare::EQUAL);
    compare->set_target(etcdserverpb::Compare::MOD);
    compare->set_key(key);
    compare->set_mod_revision(mod_revision);
  }
  txn.add_success()->mutable_request_delete_range()->set_key(key);
  etcdserverpb::TxnResponse response;
  return Txn(txn, &response, /*change=*/false);
}

std::unique_ptr<TokenStore> EtcdStore::Tokens() {
  return std::make_unique<TokenView>(this);
}

void EtcdStore::Watch(VersionCallback on_version) {
  {
    absl::MutexLock lock(&delivery_mu_);
    on_version_ = std::move(on_version);
  }
  absl::MutexLock lock(&mu_);
  StartWatchThread();
}

void EtcdStore::Resync() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (stopping_ || now - last_resync_ < absl::Seconds(2)) return;
  last_resync_ = now;
  SLUICE_LOG(kInfo, "etcd: a proxy runs a newer version than the watch delivered; reading ",
             options_.prefix, " again from another member");
  preferred_ = (preferred_ + 1) % endpoints_.size();
  if (watch_context_ != nullptr) watch_context_->TryCancel();
}

void EtcdStore::StartWatchThread() {
  if (watch_started_ || stopping_) return;
  watch_started_ = true;
  watch_thread_ = std::thread([this] { WatchLoop(); });
  if (options_.compaction_interval > absl::ZeroDuration()) {
    compaction_thread_ = std::thread([this] { CompactionLoop(); });
  }
}

void EtcdStore::Deliver(const etcd_layout::Contents& contents) {
  bool tokens_changed = false;
  {
    absl::MutexLock lock(&mu_);
    if (contents.tokens_mod_revision > tokens_mod_revision_) {
      tokens_mod_revision_ = contents.tokens_mod_revision;
      has_tokens_ = contents.has_tokens;
      tokens_changed = true;
    }
  }
  absl::MutexLock lock(&delivery_mu_);
  if (on_version_ && contents.state.version > delivered_version_) {
    delivered_version_ = contents.state.version;
    on_version_(contents.state, contents.history);
  }
  if (on_tokens_ && tokens_changed) on_tokens_(contents.tokens, contents.tokens_mod_revision);
}

bool EtcdStore::SleepUnlessStopping(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  return !mu_.AwaitWithTimeout(absl::Condition(&stopping_), d);
}

void EtcdStore::WatchLoop() {
  absl::Duration backoff = absl::Milliseconds(100);
  bool broken = false;  // logged once until it works again
  while (true) {
    // Catch up first: whatever happened while not watching.
    absl::StatusOr<etcd_layout::Contents> contents = ReadAll();
    if (!contents.ok()) {
      if (!broken) {
        SLUICE_LOG(kWarning, "etcd watch: cannot read ", options_.prefix, ": ",
                   contents.status().message(),
                   "; retrying (serving the last version read)");
        broken = true;
      }
      if (!SleepUnlessStopping(backoff)) return;
      backoff = std::min(backoff * 2, absl::Seconds(2));
      continue;
    }
    Deliver(*contents);
    size_t index;
    grpc::ClientContext context;
    context.AddMetadata(kRequireLeaderKey, kRequireLeaderValue);
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      index = preferred_;
      watch_context_ = &context;
    }
    Endpoint& endpoint = endpoints_[index];
    auto stream = endpoint.watch->Watch(&context);
    etcdserverpb::WatchRequest request;
    etcdserverpb::WatchCreateRequest* create = request.mutable_create_request();
    create->set_key(options_.prefix);
    create->set_range_end(etcd_layout::PrefixEnd(options_.prefix));
    create->set_start_revision(contents->revision + 1);
    std::string why = "the stream ended";
    bool ended_by_etcd = true;  // else it is cancelled here
    if (stream->Write(request)) {
      etcdserverpb::WatchResponse response;
      while (stream->Read(&response)) {
        if (response.created()) {
          if (broken)
            SLUICE_LOG(kInfo, "etcd watch: watching ", options_.prefix,
                       " again");
          broken = false;
          backoff = absl::Milliseconds(100);
        }
        if (response.canceled()) {
          why = absl::StrCat("etcd canceled the watch: ",
                             response.cancel_reason());
          ended_by_etcd = false;
          break;
        }
        if (response.events_size() == 0) continue;
        // Replicas' demand (every 500 ms each) and proxy lists (every
        // second) are not the state.
        const std::string leases = options_.prefix + kLeases;
        const std::string fleet = options_.prefix + kFleet;
        bool only_leases = true;
        for (const mvccpb::Event& event : response.events()) {
          only_leases = only_leases && (absl::StartsWith(event.kv().key(), leases) ||
                                        absl::StartsWith(event.kv().key(), fleet));
        }
        if (only_leases) continue;
        contents = ReadAll();
        if (!contents.ok()) {
          why = std::string(contents.status().message());
          ended_by_etcd = false;
          break;
        }
        Deliver(*contents);
      }
    }
    if (!ended_by_etcd) context.TryCancel();
    grpc::Status status = stream->Finish();
    {
      absl::MutexLock lock(&mu_);
      watch_context_ = nullptr;
      if (stopping_) return;
      // Another member next time.
      if (preferred_ == index) preferred_ = (index + 1) % endpoints_.size();
    }
    if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
      why = status.error_message();
    }
    if (!broken) {
      SLUICE_LOG(kWarning, "etcd watch on ", endpoint.address, " broken (", why,
                 "); watching again");
      broken = true;
    }
    if (!SleepUnlessStopping(backoff)) return;
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

}  // namespace sluice::controlplane
