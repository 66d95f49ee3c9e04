#include "controlplane/server/discovery_service.h"

#include <cmath>
#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "api/discovery.h"
#include "api/resource.h"
#include "api/route_patch.h"
#include "common/log.h"
#include "grpc/grpc_security_constants.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"
#include "grpcpp/support/slice.h"

namespace sluice::controlplane {
namespace {

using discovery::v1::DiscoveryRequest;
using discovery::v1::DiscoveryResponse;
using discovery::v1::RouteTablePatch;
using HashMap = std::map<api::ResourceId, uint64_t>;

grpc::Status TooLong(absl::string_view field, size_t size, size_t limit) {
  return grpc::Status(
      grpc::StatusCode::INVALID_ARGUMENT,
      absl::StrCat(field, " is ", size, " bytes; at most ", limit, " are accepted"));
}

// Why `report` holds figures no proxy measures; "" when it does not.
std::string ImpossibleReport(const discovery::v1::TrafficReport& report) {
  auto bad_latency = [](double ms) { return !std::isfinite(ms) || ms < 0 || ms > 86400e3; };
  if (bad_latency(report.p50_ms()) || bad_latency(report.p99_ms())) {
    return "a latency that is not a number of milliseconds from 0 to a day";
  }
  if (report.responses_4xx() > report.requests() || report.responses_5xx() > report.requests() ||
      report.responses_4xx() + report.responses_5xx() > report.requests()) {
    return "more error responses than requests";
  }
  if (report.active_connections() < 0) return "a negative number of connections";
  for (const discovery::v1::RouteTraffic& route : report.routes()) {
    if (bad_latency(route.p99_ms())) return "a route latency that is not a number of milliseconds";
    if (route.responses_5xx() > route.requests()) return "a route with more 5xx than requests";
  }
  return "";
}

// The bounds on what a proxy says about itself (api/discovery.h).
grpc::Status CheckNode(const discovery::v1::Node& node) {
  if (node.id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first DiscoveryRequest must carry node.id");
  }
  if (node.id().size() > api::kMaxNodeIdBytes) {
    return TooLong("node.id", node.id().size(), api::kMaxNodeIdBytes);
  }
  // Logged and listed as it is: a newline would forge a log line.
  for (const std::string* field : {&node.id(), &node.group()}) {
    for (char c : *field) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrCat(field == &node.id() ? "node.id" : "node.group",
                                         " has a control character"));
      }
    }
  }
  if (node.group().size() > api::kMaxNodeGroupBytes) {
    return TooLong("node.group", node.group().size(), api::kMaxNodeGroupBytes);
  }
  if (node.build_version().size() > api::kMaxBuildVersionBytes) {
    return TooLong("node.build_version", node.build_version().size(),
                   api::kMaxBuildVersionBytes);
  }
  if (node.client_features_size() > api::kMaxClientFeatures) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("node.client_features has ", node.client_features_size(),
                                     " entries; at most ", api::kMaxClientFeatures,
                                     " are accepted"));
  }
  for (const std::string& feature : node.client_features()) {
    if (feature.size() > api::kMaxClientFeatureBytes) {
      return TooLong("a node.client_features entry", feature.size(),
                     api::kMaxClientFeatureBytes);
    }
  }
  if (node.labels_size() > api::kMaxNodeLabels) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("node.labels has ", node.labels_size(),
                                     " entries; at most ", api::kMaxNodeLabels,
                                     " are accepted"));
  }
  for (const auto& [key, value] : node.labels()) {
    if (key.size() > api::kMaxLabelKeyBytes) {
      return TooLong("a node.labels key", key.size(), api::kMaxLabelKeyBytes);
    }
    if (value.size() > api::kMaxLabelValueBytes) {
      return TooLong(absl::StrCat("node.labels[\"", key, "\"]"), value.size(),
                     api::kMaxLabelValueBytes);
    }
  }
  return grpc::Status::OK;
}

// The subject alternative names of the peer's verified certificate, or
// nullopt when it presented none (--client-ca requests a certificate but
// lets a peer without one finish the handshake, for sluicectl).
std::optional<std::vector<std::string>> PeerSans(const grpc::ServerContextBase& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME).empty()) {
    return std::nullopt;
  }
  // URI SANs only: a DNS or email SAN spelled "spiffe://sluice/node/ID"
  // (which a CA that polices URIs may still sign) names no node.
  std::vector<std::string> sans;
  for (const auto& value : auth->FindPropertyValues(GRPC_PEER_URI_PROPERTY_NAME)) {
    sans.emplace_back(value.data(), value.size());
  }
  return sans;
}

// What a proxy holds: exactly a snapshot's resources (shared by every
// stream whose proxy holds it), or, when that is no snapshot we know, a map
// of its own.
struct HeldConfig {
  std::shared_ptr<const Snapshot> snapshot;  // set: this snapshot's resources
  std::shared_ptr<const HashMap> own;        // else these

  const HashMap& hashes() const { return snapshot != nullptr ? snapshot->hashes : *own; }
};

// A config response without its nonce, serialized: shared by the streams
// that make the same move.
struct PreparedResponse {
  grpc::Slice body;
  uint64_t version = 0;
  int resources = 0;
  int removed = 0;
  // The route tables sent as patches (forgotten on a NACK).
  std::vector<api::ResourceId> patched;
};

// One move's response, built once: the first stream that needs it builds it
// under `mu` and the others wait for it (push threads only).
// It does not keep the snapshots alive: the streams that hold them do, and
// an entry whose snapshot is gone is dropped.
struct DeltaEntry {
  std::weak_ptr<const Snapshot> from;
  std::weak_ptr<const Snapshot> to;
  absl::Mutex mu;
  std::shared_ptr<const PreparedResponse> response ABSL_GUARDED_BY(mu);
};

// One (base, new) route table pair's patch, made once like a DeltaEntry.
struct PatchEntry {
  absl::Mutex mu;
  bool made ABSL_GUARDED_BY(mu) = false;
  std::optional<RouteTablePatch> patch ABSL_GUARDED_BY(mu);
};

// Serializes `message` into `buffer`, replacing what it held.
template <typename Message>
void SerializeTo(const Message& message, grpc::ByteBuffer* buffer) {
  buffer->Clear();
  bool own = false;
  grpc::Status status = grpc::SerializationTraits<Message>::Serialize(message, buffer, &own);
  if (!status.ok()) {
    SLUICE_LOG(kError, "cannot serialize a discovery response: ", status.error_message());
  }
}

}  // namespace

namespace discovery_internal {

class ConfigStream;

// What every stream shares: the service's collaborators, the caches of
// prepared responses and patches, and the push threads with their queue.
struct StreamHub {
  StreamHub(ConfigState* state, ProxyRegistry* registry, DiscoveryOptions options,
            ControlPlaneMetrics* metrics, PurgeRelay* purges)
      : state(state),
        registry(registry),
        options(std::move(options)),
        metrics(metrics),
        purges(purges),
        empty(std::make_shared<const Snapshot>()) {}

  // Runs `stream`'s Pump() on a push thread soon; a stream is queued once.
  void Schedule(const std::shared_ptr<ConfigStream>& stream);
  // Schedules `stream` at `when` (a NACKed version's next offer).
  void ScheduleAt(const std::weak_ptr<ConfigStream>& stream, absl::Time when);
  void PushThread();
  void Stop();

  // The response taking a proxy that holds `held` to `to`.
  // `patches`: the proxy accepts RouteTablePatches (responses for proxies
  // that do not are built per stream, never shared).
  std::shared_ptr<const PreparedResponse> Prepare(const HeldConfig& held,
                                                  const std::shared_ptr<const Snapshot>& to,
                                                  bool patches);
  std::shared_ptr<const PreparedResponse> Build(const HeldConfig& held, const Snapshot& to,
                                                bool patches);
  // The content of route table `id` at `hash`, from `held` or a kept
  // snapshot; null when none has it. `pin` keeps it alive.
  const api::Resource* FindTable(const HeldConfig& held, const api::ResourceId& id,
                                 uint64_t hash, std::shared_ptr<const Snapshot>* pin);
  // The patch from `base` to `next` (made once per pair); nullopt: send it
  // whole.
  std::optional<RouteTablePatch> PatchFor(const std::string& name, const api::Resource& base,
                                          uint64_t base_hash, const api::Resource& next,
                                          uint64_t next_hash);

  ConfigState* const state;
  ProxyRegistry* const registry;
  const DiscoveryOptions options;
  ControlPlaneMetrics* const metrics;
  PurgeRelay* const purges;
  LeaseAllocator* leases = nullptr;
  // What a proxy that holds nothing holds: version 0, no resources.
  const std::shared_ptr<const Snapshot> empty;
  std::atomic<uint64_t> next_nonce{1};
  std::atomic<int> active_streams{0};
  std::atomic<uint64_t> next_lease_client{1};

  absl::Mutex cache_mu;
  // Oldest first; at most kMaxCachedDeltas / kMaxCachedPatches /
  // kKeptSnapshots.
  std::deque<std::shared_ptr<DeltaEntry>> deltas ABSL_GUARDED_BY(cache_mu);
  std::deque<std::pair<std::tuple<std::string, uint64_t, uint64_t>, std::shared_ptr<PatchEntry>>>
      patches ABSL_GUARDED_BY(cache_mu);
  std::deque<std::shared_ptr<const Snapshot>> kept ABSL_GUARDED_BY(cache_mu);

  absl::Mutex queue_mu;
  absl::CondVar queue_cv;
  std::deque<std::shared_ptr<ConfigStream>> ready ABSL_GUARDED_BY(queue_mu);
  std::multimap<absl::Time, std::weak_ptr<ConfigStream>> timers ABSL_GUARDED_BY(queue_mu);
  bool stopping ABSL_GUARDED_BY(queue_mu) = false;
  std::vector<std::thread> threads;
};

// One proxy's stream. Created by StreamConfig, it owns itself (`self_`)
// until gRPC calls OnDone; the push queue, the subscription and the purge
// relay hold it by shared or weak pointer, so a late wakeup finds it
// finished rather than gone. gRPC calls its On* methods (one read and one
// write outstanding at most); Pump() runs on a push thread, one at a time.
// gRPC operations are started without holding `mu_`.
class ConfigStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                           public std::enable_shared_from_this<ConfigStream> {
 public:
  ConfigStream(StreamHub* hub, grpc::CallbackServerContext* context)
      : hub_(hub), context_(context) {}

  // Refuses the stream over max_streams, else reads the first request.
  void Start(std::shared_ptr<ConfigStream> self);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override { End(DefaultEnd()); }
  void OnDone() override;

  // Builds and starts the next write, if one is due (push threads).
  void Pump();
  // A new version (or the shutdown): from ConfigState's notification.
  void Wake(bool shutting_down);
  void QueuePurge(const discovery::v1::CachePurge& purge);

 private:
  enum class Action { kNone, kWrite, kFinish };

  void OnFirstRequest(const DiscoveryRequest& first);
  // A request after the first; false: the stream ended.
  bool OnRequest(DiscoveryRequest& request);
  // Decides the next write (filling write_buf_) or the end; Pump() starts it.
  Action NextAction(grpc::Status* finish);
  // Finishes the stream with `status` once no write is outstanding.
  void End(grpc::Status status);
  // OK, or UNAVAILABLE when the control plane shuts down.
  grpc::Status DefaultEnd() const;

  StreamHub* const hub_;
  grpc::CallbackServerContext* const context_;
  std::shared_ptr<ConfigStream> self_;  // released by OnDone
  bool counted_ = false;                // in hub_->active_streams

  // Set by the first request, before `established_`; constant after.
  std::string node_id_;
  std::string node_group_;
  // The proxy listed api::kFeatureRouteTablePatch: it may be sent patches.
  bool accepts_patches_ = false;
  int handle_ = -1;
  int subscription_ = -1;
  uint64_t lease_client_ = 0;

  grpc::ByteBuffer read_buf_;   // the read outstanding (gRPC callbacks only)
  grpc::ByteBuffer write_buf_;  // the write outstanding; set only while none is

  // Guarded by hub_->queue_mu: in the ready queue.
  bool queued_ = false;
  friend struct StreamHub;

  absl::Mutex mu_;
  bool established_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish called or waiting for the write
  std::optional<grpc::Status> finish_after_write_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool write_is_config_ ABSL_GUARDED_BY(mu_) = false;
  bool pumping_ ABSL_GUARDED_BY(mu_) = false;
  bool repump_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = true;  // something changed
  // An impossible traffic report was logged (ImpossibleReport): once a stream.
  bool impossible_report_logged_ ABSL_GUARDED_BY(mu_) = false;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::string outstanding_nonce_ ABSL_GUARDED_BY(mu_);  // empty: none pending
  uint64_t outstanding_version_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time outstanding_sent_at_ ABSL_GUARDED_BY(mu_);
  absl::Time first_request_deadline_;  // set by Start, before any Pump
  std::shared_ptr<const Snapshot> outstanding_snapshot_ ABSL_GUARDED_BY(mu_);
  std::vector<api::ResourceId> outstanding_patched_ ABSL_GUARDED_BY(mu_);
  // What the proxy runs, as far as we know; an empty store id: unknown.
  uint64_t held_version_ ABSL_GUARDED_BY(mu_) = 0;
  HeldConfig held_ ABSL_GUARDED_BY(mu_);
  std::string held_store_id_ ABSL_GUARDED_BY(mu_);
  // The version the proxy last NACKed (0: its last answer was an ACK), how
  // many times in a row, and when to offer it again.
  uint64_t nacked_version_ ABSL_GUARDED_BY(mu_) = 0;
  int nacks_in_a_row_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time retry_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // With replicas: a proxy that came holding a newer version than this
  // replica has is offered nothing until this time (the replica reads the
  // store again meanwhile); past it, the store really is behind the proxy (a
  // restored backup) and it is offered the current version, as with one
  // control plane. InfinitePast: no such wait.
  absl::Time catch_up_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Cache purges to send (PurgeRelay), oldest first.
  std::deque<discovery::v1::CachePurge> purges_ ABSL_GUARDED_BY(mu_);
  // The newest rate-limit leases answer not yet sent.
  std::optional<DiscoveryResponse> leases_ ABSL_GUARDED_BY(mu_);
};

void StreamHub::Schedule(const std::shared_ptr<ConfigStream>& stream) {
  absl::MutexLock lock(&queue_mu);
  if (stream->queued_ || stopping) return;
  stream->queued_ = true;
  ready.push_back(stream);
  queue_cv.Signal();
}

void StreamHub::ScheduleAt(const std::weak_ptr<ConfigStream>& stream, absl::Time when) {
  absl::MutexLock lock(&queue_mu);
  if (stopping) return;
  timers.emplace(when, stream);
  queue_cv.Signal();
}

void StreamHub::PushThread() {
  // Named, so that its CPU time can be told apart (top -H, /proc/PID/task).
  pthread_setname_np(pthread_self(), "discovery-push");
  while (true) {
    std::shared_ptr<ConfigStream> stream;
    {
      absl::MutexLock lock(&queue_mu);
      while (true) {
        if (stopping) return;
        const absl::Time now = absl::Now();
        while (!timers.empty() && timers.begin()->first <= now) {
          if (std::shared_ptr<ConfigStream> due = timers.begin()->second.lock();
              due != nullptr && !due->queued_) {
            due->queued_ = true;
            ready.push_back(std::move(due));
          }
          timers.erase(timers.begin());
        }
        if (!ready.empty()) break;
        queue_cv.WaitWithDeadline(
            &queue_mu, timers.empty() ? absl::InfiniteFuture() : timers.begin()->first);
      }
      stream = std::move(ready.front());
      ready.pop_front();
      stream->queued_ = false;
    }
    stream->Pump();
  }
}

void StreamHub::Stop() {
  {
    absl::MutexLock lock(&queue_mu);
    stopping = true;
    queue_cv.SignalAll();
  }
  for (std::thread& thread : threads) thread.join();
  threads.clear();
  absl::MutexLock lock(&queue_mu);
  ready.clear();
  timers.clear();
}

std::shared_ptr<const PreparedResponse> StreamHub::Prepare(
    const HeldConfig& held, const std::shared_ptr<const Snapshot>& to, bool patches) {
  if (!patches) return Build(held, *to, /*patches=*/false);
  std::shared_ptr<DeltaEntry> entry;
  {
    absl::MutexLock lock(&cache_mu);
    if (std::find(kept.begin(), kept.end(), to) == kept.end()) {
      kept.push_back(to);
      if (kept.size() > kKeptSnapshots) kept.pop_front();
    }
    if (held.snapshot == nullptr) {
      entry = nullptr;
    } else {
      deltas.erase(std::remove_if(deltas.begin(), deltas.end(),
                                  [](const std::shared_ptr<DeltaEntry>& cached) {
                                    return cached->from.expired() || cached->to.expired();
                                  }),
                   deltas.end());
      // A live weak pointer equal to a live shared one is the same object.
      for (const auto& cached : deltas) {
        if (cached->from.lock() == held.snapshot && cached->to.lock() == to) entry = cached;
      }
      if (entry == nullptr) {
        entry = std::make_shared<DeltaEntry>();
        entry->from = held.snapshot;
        entry->to = to;
        deltas.push_back(entry);
        if (deltas.size() > kMaxCachedDeltas) deltas.pop_front();
      }
    }
  }
  // Not a snapshot: this stream's own diff.
  if (entry == nullptr) return Build(held, *to, /*patches=*/true);
  absl::MutexLock lock(&entry->mu);
  if (entry->response == nullptr) entry->response = Build(held, *to, /*patches=*/true);
  return entry->response;
}

std::shared_ptr<const PreparedResponse> StreamHub::Build(const HeldConfig& held,
                                                         const Snapshot& to, bool patches) {
  auto prepared = std::make_shared<PreparedResponse>();
  const HashMap& hashes = held.hashes();
  DiscoveryResponse response;
  for (const auto& [id, hash] : to.hashes) {
    auto it = hashes.find(id);
    if (it != hashes.end() && it->second == hash) continue;
    const api::Resource& next = to.resources.at(id);
    if (patches && it != hashes.end() && id.first == config::v1::ROUTE_TABLE) {
      std::shared_ptr<const Snapshot> pin;
      if (const api::Resource* base = FindTable(held, id, it->second, &pin); base != nullptr) {
        std::optional<RouteTablePatch> patch = PatchFor(id.second, *base, it->second, next, hash);
        if (patch.has_value()) {
          *response.add_route_table_patches() = std::move(*patch);
          prepared->patched.push_back(id);
          continue;
        }
      }
    }
    *response.add_resources() = next;
  }
  for (const auto& [id, hash] : hashes) {
    if (!to.hashes.count(id)) {
      auto* key = response.add_removed();
      key->set_kind(id.first);
      key->set_name(id.second);
    }
  }
  response.set_version(to.version);
  response.set_store_id(state->store_id());
  prepared->version = to.version;
  prepared->resources = response.resources_size();
  prepared->removed = response.removed_size();
  prepared->body = grpc::Slice(response.SerializeAsString());
  return prepared;
}

const api::Resource* StreamHub::FindTable(const HeldConfig& held, const api::ResourceId& id,
                                          uint64_t hash, std::shared_ptr<const Snapshot>* pin) {
  auto holds = [&](const Snapshot& snapshot) {
    auto it = snapshot.hashes.find(id);
    return it != snapshot.hashes.end() && it->second == hash;
  };
  if (held.snapshot != nullptr && holds(*held.snapshot)) {
    return &held.snapshot->resources.at(id);
  }
  absl::MutexLock lock(&cache_mu);
  for (const auto& snapshot : kept) {
    if (holds(*snapshot)) {
      *pin = snapshot;
      return &snapshot->resources.at(id);
    }
  }
  return nullptr;
}

std::optional<RouteTablePatch> StreamHub::PatchFor(const std::string& name,
                                                   const api::Resource& base, uint64_t base_hash,
                                                   const api::Resource& next,
                                                   uint64_t next_hash) {
  std::shared_ptr<PatchEntry> entry;
  {
    auto key = std::make_tuple(name, base_hash, next_hash);
    absl::MutexLock lock(&cache_mu);
    for (const auto& [cached_key, cached] : patches) {
      if (cached_key == key) entry = cached;
    }
    if (entry == nullptr) {
      entry = std::make_shared<PatchEntry>();
      patches.emplace_back(std::move(key), entry);
      if (patches.size() > kMaxCachedPatches) patches.pop_front();
    }
  }
  absl::MutexLock lock(&entry->mu);
  if (!entry->made) {
    entry->patch =
        api::MakeRouteTablePatch(base.route_table(), base_hash, next.route_table(), next_hash);
    entry->made = true;
  }
  return entry->patch;
}

void ConfigStream::Start(std::shared_ptr<ConfigStream> self) {
  self_ = std::move(self);
  // A peer without a certificate that names a node is refused before it
  // takes a slot (the node.id it claims is checked with its first request).
  if (hub_->options.require_node_certificate) {
    std::optional<std::vector<std::string>> sans = PeerSans(*context_);
    absl::StatusOr<std::string> certified =
        NodeIdFromCertificate(sans.has_value(), sans.value_or(std::vector<std::string>{}));
    if (!certified.ok()) {
      if (hub_->metrics != nullptr) hub_->metrics->CountStreamRefusal();
      SLUICE_LOG(kWarning, "refused a discovery stream from ", context_->peer(), ": ",
                 certified.status().message());
      End(grpc::Status(static_cast<grpc::StatusCode>(certified.status().code()),
                       std::string(certified.status().message())));
      return;
    }
  }
  // Counted before the first request, so that streams that never send one
  // count too; those end at first_request_timeout.
  counted_ = true;
  const int active = hub_->active_streams.fetch_add(1) + 1;
  if (active > hub_->options.max_streams) {
    SLUICE_LOG(kWarning, "refused a discovery stream from ", context_->peer(), ": ",
               hub_->options.max_streams, " streams are open (--max-discovery-streams)");
    End(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                     absl::StrCat("sluice-control already serves ", hub_->options.max_streams,
                                  " discovery streams, its limit (--max-discovery-streams)")));
    return;
  }
  first_request_deadline_ = absl::Now() + hub_->options.first_request_timeout;
  hub_->ScheduleAt(self_, first_request_deadline_);
  StartRead(&read_buf_);
}

grpc::Status ConfigStream::DefaultEnd() const {
  if (hub_->state->shutting_down()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "sluice-control is shutting down");
  }
  return grpc::Status::OK;
}

void ConfigStream::End(grpc::Status status) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
    if (write_in_flight_) {
      finish_after_write_ = std::move(status);
      return;
    }
  }
  Finish(std::move(status));
}

void ConfigStream::OnReadDone(bool ok) {
  if (!ok) {
    // The proxy closed its side, or the stream is cancelled.
    End(DefaultEnd());
    return;
  }
  DiscoveryRequest request;
  if (grpc::Status parsed = grpc::SerializationTraits<DiscoveryRequest>::Deserialize(
          &read_buf_, &request);
      !parsed.ok()) {
    End(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                     absl::StrCat("cannot parse a DiscoveryRequest: ", parsed.error_message())));
    return;
  }
  bool established;
  {
    absl::MutexLock lock(&mu_);
    established = established_;
  }
  if (!established) {
    OnFirstRequest(request);
    return;
  }
  if (OnRequest(request)) StartRead(&read_buf_);
}

void ConfigStream::OnFirstRequest(const DiscoveryRequest& first) {
  if (grpc::Status status = CheckNode(first.node()); !status.ok()) {
    SLUICE_LOG(kWarning, "refused a discovery stream from ", context_->peer(), ": ",
               status.error_message());
    End(status);
    return;
  }
  if (hub_->options.require_node_certificate) {
    std::optional<std::vector<std::string>> sans = PeerSans(*context_);
    absl::StatusOr<std::string> certified =
        NodeIdFromCertificate(sans.has_value(), sans.value_or(std::vector<std::string>{}));
    grpc::Status refusal;
    if (!certified.ok()) {
      refusal = grpc::Status(static_cast<grpc::StatusCode>(certified.status().code()),
                             std::string(certified.status().message()));
    } else if (*certified != first.node().id()) {
      refusal = grpc::Status(
          grpc::StatusCode::PERMISSION_DENIED,
          absl::StrCat("node.id \"", first.node().id(), "\" differs from the node \"",
                       api::Shown(*certified), "\" that the client certificate names (",
                       kNodeUriPrefix, api::Shown(*certified), ")"));
    }
    if (!refusal.ok()) {
      if (hub_->metrics != nullptr) hub_->metrics->CountStreamRefusal();
      SLUICE_LOG(kWarning, "refused a discovery stream from ", context_->peer(), " (node.id \"",
                 first.node().id(), "\"): ", refusal.error_message());
      End(refusal);
      return;
    }
  }
  node_id_ = first.node().id();
  node_group_ = first.node().group();
  accepts_patches_ =
      std::find(first.node().client_features().begin(), first.node().client_features().end(),
                api::kFeatureRouteTablePatch) != first.node().client_features().end();
  const std::string& store_id = hub_->state->store_id();
  // What the proxy holds: nothing (the shared empty snapshot), the snapshot
  // meant for it (so that it shares that snapshot's responses), or a map of
  // its own.
  HeldConfig held;
  std::shared_ptr<const Snapshot> meant = hub_->state->SnapshotFor(node_id_, node_group_);
  if (first.known_resources().empty()) {
    held.snapshot = hub_->empty;
  } else {
    auto own = std::make_shared<HashMap>();
    for (const auto& key : first.known_resources()) {
      (*own)[{key.kind(), key.name()}] = key.hash();
    }
    if (*own == meant->hashes) {
      held.snapshot = meant;
    } else {
      held.own = std::move(own);
    }
  }
  handle_ = hub_->registry->Connect(first.node(), first.version_applied());
  lease_client_ = hub_->next_lease_client.fetch_add(1);
  std::weak_ptr<ConfigStream> weak = weak_from_this();
  subscription_ = hub_->state->Subscribe([weak](bool shutting_down) {
    if (std::shared_ptr<ConfigStream> stream = weak.lock()) stream->Wake(shutting_down);
  });
  // Attached before the proxy hears the stream is up, so that a purge sent
  // after it logged "connected" reaches it.
  if (hub_->purges != nullptr) {
    hub_->purges->Attach(handle_, first.node(), [weak](const discovery::v1::CachePurge& purge) {
      if (std::shared_ptr<ConfigStream> stream = weak.lock()) stream->QueuePurge(purge);
    });
  }
  {
    absl::MutexLock lock(&mu_);
    held_version_ = first.version_applied();
    held_store_id_ = first.store_id();
    held_ = std::move(held);
    established_ = true;  // OnDone undoes what was set up above
    // Ended meanwhile (its first-request deadline): Finish sends the
    // initial metadata, which may be sent once only.
    if (finished_) return;
    // The stream is established: tell the proxy before any response. Under
    // the lock: once established_ is seen, a shutdown's Pump may Finish the
    // stream at once, which sends initial metadata itself, and a second
    // send is a gRPC assertion (sluice-control aborted on a SIGTERM that
    // came as a proxy connected).
    context_->AddInitialMetadata(api::kStreamAcceptedKey, "1");
    StartSendInitialMetadata();
  }
  SLUICE_LOG(kInfo, "proxy ", node_id_, " connected (", context_->peer(), "), holds version ",
             first.version_applied());
  if (!first.store_id().empty() && first.store_id() == store_id &&
      first.version_applied() > hub_->state->Current()->version) {
    if (hub_->state->shared_store()) {
      // Another replica stored it and this one has not seen it yet (its
      // watch may be on a hung etcd member): read the store again now, not
      // offer the proxy an older version it refuses.
      SLUICE_LOG(kInfo, "proxy ", node_id_, " runs version ", first.version_applied(),
                 ", newer than this replica's ", hub_->state->Current()->version,
                 ": reading the store again");
      {
        absl::MutexLock lock(&mu_);
        catch_up_until_ = absl::Now() + hub_->options.catch_up_wait;
        hub_->ScheduleAt(weak_from_this(), catch_up_until_);
      }
      hub_->state->ResyncStore();
    } else {
      SLUICE_LOG(kWarning, "proxy ", node_id_, " runs version ", first.version_applied(),
                 " of this store, newer than this control plane's ",
                 hub_->state->Current()->version,
                 " (was the data dir restored from a backup?); it refuses older versions");
    }
  }
  hub_->Schedule(shared_from_this());
  StartRead(&read_buf_);
}

bool ConfigStream::OnRequest(DiscoveryRequest& request) {
  if (request.has_purge_result()) {
    // Outside the ACK/NACK protocol, and outside mu_ (lock order: the
    // relay's first).
    if (hub_->purges != nullptr) hub_->purges->Answered(handle_, request.purge_result());
    return true;
  }
  if (request.has_rate_limit_demand()) {
    // Outside the ACK/NACK protocol: answered by a leases response.
    if (hub_->leases != nullptr) {
      DiscoveryResponse answer;
      answer.set_store_id(hub_->state->store_id());
      *answer.mutable_rate_limit_leases() =
          hub_->leases->Report(lease_client_, request.rate_limit_demand(), absl::Now());
      {
        absl::MutexLock lock(&mu_);
        leases_ = std::move(answer);
      }
      hub_->Schedule(shared_from_this());
    }
    return true;
  }
  if (request.error_detail().size() > api::kMaxNackErrorBytes) {
    grpc::Status error =
        TooLong("error_detail", request.error_detail().size(), api::kMaxNackErrorBytes);
    SLUICE_LOG(kWarning, "proxy ", node_id_, ": ", error.error_message(), "; ending its stream");
    End(std::move(error));
    return false;
  }
  {
    absl::MutexLock lock(&mu_);
    if (request.has_report()) {
      // A traffic summary (bounded: at most 10 routes are kept).
      if (request.report().routes_size() > 10) {
        request.mutable_report()->mutable_routes()->DeleteSubrange(
            10, request.report().routes_size() - 10);
      }
      // Figures no proxy measures (a NaN or negative latency, more errors
      // than requests) are dropped, not shown or weighed in a canary's
      // verdict: a NaN p99 compares false with every limit.
      if (std::string why = ImpossibleReport(request.report()); !why.empty()) {
        if (!impossible_report_logged_) {
          impossible_report_logged_ = true;
          SLUICE_LOG(kWarning, "proxy ", node_id_, " sent a traffic report with ", why,
                     ": ignored (and any more from this stream)");
        }
      } else {
        hub_->registry->Reported(handle_, request.report());
      }
    }
    if (request.response_nonce().empty() || request.response_nonce() != outstanding_nonce_) {
      return true;  // stale or unsolicited: only the outstanding nonce counts
    }
    if (request.error_detail().empty()) {
      held_version_ = outstanding_version_;
      held_ = HeldConfig{std::move(outstanding_snapshot_), nullptr};
      held_store_id_ = hub_->state->store_id();
      nacked_version_ = 0;
      nacks_in_a_row_ = 0;
      hub_->registry->Acked(handle_, held_version_);
      if (hub_->metrics != nullptr) {
        hub_->metrics->CountAck(absl::Now() - outstanding_sent_at_);
      }
      SLUICE_LOG(kDebug, "proxy ", node_id_, " ACK version ", held_version_);
    } else {
      nacks_in_a_row_ = nacked_version_ == outstanding_version_ ? nacks_in_a_row_ + 1 : 1;
      nacked_version_ = outstanding_version_;
      absl::Duration backoff = hub_->options.nack_retry;
      for (int i = 1; i < nacks_in_a_row_ && backoff < hub_->options.nack_retry_max; ++i) {
        backoff *= 2;
      }
      backoff = std::min(backoff, hub_->options.nack_retry_max);
      retry_at_ = absl::Now() + backoff;
      hub_->ScheduleAt(weak_from_this(), retry_at_);
      if (!outstanding_patched_.empty()) {
        // The proxy may not hold the bases it was patched from: the next
        // offer sends those tables whole.
        auto own = std::make_shared<HashMap>(held_.hashes());
        for (const api::ResourceId& id : outstanding_patched_) own->erase(id);
        held_ = HeldConfig{nullptr, std::move(own)};
      }
      hub_->registry->Nacked(handle_, outstanding_version_, request.error_detail());
      if (hub_->metrics != nullptr) hub_->metrics->CountNack();
      // Escaped: the reason is the proxy's text, and a newline in it would
      // forge a log line (as node.id's control characters would).
      SLUICE_LOG(kWarning, "proxy ", node_id_, " NACK version ", outstanding_version_, ": ",
                 api::Shown(request.error_detail(), api::kMaxNackErrorBytes),
                 " (offered again in ", absl::FormatDuration(backoff), ")");
    }
    outstanding_nonce_.clear();
    outstanding_snapshot_.reset();
    outstanding_patched_.clear();
    wake_ = true;
  }
  hub_->Schedule(shared_from_this());
  return true;
}

void ConfigStream::Wake(bool shutting_down) {
  {
    absl::MutexLock lock(&mu_);
    wake_ = true;
    shutdown_ = shutdown_ || shutting_down;
  }
  hub_->Schedule(shared_from_this());
}

void ConfigStream::QueuePurge(const discovery::v1::CachePurge& purge) {
  {
    absl::MutexLock lock(&mu_);
    purges_.push_back(purge);
  }
  hub_->Schedule(shared_from_this());
}

void ConfigStream::Pump() {
  {
    absl::MutexLock lock(&mu_);
    if (pumping_) {
      repump_ = true;
      return;
    }
    pumping_ = true;
  }
  while (true) {
    grpc::Status finish;
    switch (NextAction(&finish)) {
      case Action::kWrite:
        StartWrite(&write_buf_);
        break;
      case Action::kFinish:
        Finish(std::move(finish));
        break;
      case Action::kNone:
        break;
    }
    absl::MutexLock lock(&mu_);
    if (!repump_) {
      pumping_ = false;
      return;
    }
    repump_ = false;
  }
}

ConfigStream::Action ConfigStream::NextAction(grpc::Status* finish) {
  HeldConfig held;
  uint64_t held_version;
  std::string held_store_id;
  uint64_t nacked_version;
  absl::Time retry_at;
  absl::Time catch_up_until;
  const std::string& store_id = hub_->state->store_id();
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return Action::kNone;
    if (!established_) {
      if (absl::Now() < first_request_deadline_) return Action::kNone;
      finished_ = true;
      SLUICE_LOG(kWarning, "ended a discovery stream from ", context_->peer(),
                 ": no first request within ",
                 absl::FormatDuration(hub_->options.first_request_timeout));
      *finish = grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                             absl::StrCat("no DiscoveryRequest within ",
                                          absl::FormatDuration(hub_->options.first_request_timeout),
                                          " of opening the stream"));
      return Action::kFinish;
    }
    if (shutdown_) {
      finished_ = true;
      grpc::Status status(grpc::StatusCode::UNAVAILABLE, "sluice-control is shutting down");
      if (write_in_flight_) {
        finish_after_write_ = std::move(status);
        return Action::kNone;
      }
      *finish = std::move(status);
      return Action::kFinish;
    }
    if (write_in_flight_) return Action::kNone;
    if (!purges_.empty()) {
      // A response of its own, with no nonce: neither outstanding nor
      // ACKed. Version 0 and the store id make a proxy that predates purges
      // reject it as older than what it runs (api/sluice/discovery).
      DiscoveryResponse command;
      command.set_store_id(store_id);
      *command.mutable_purge() = std::move(purges_.front());
      purges_.pop_front();
      SerializeTo(command, &write_buf_);
      write_in_flight_ = true;
      write_is_config_ = false;
      SLUICE_LOG(kDebug, "sending cache purge ", command.purge().id(), " to ", node_id_);
      return Action::kWrite;
    }
    if (leases_.has_value()) {
      // Like a purge: a response of its own, no nonce, version 0.
      SerializeTo(*leases_, &write_buf_);
      leases_.reset();
      write_in_flight_ = true;
      write_is_config_ = false;
      return Action::kWrite;
    }
    if (!outstanding_nonce_.empty()) return Action::kNone;
    // The NACKed version's backoff is over: offer it again.
    if (nacked_version_ != 0 && absl::Now() >= retry_at_) wake_ = true;
    // The catch-up wait is over: look again.
    if (catch_up_until_ != absl::InfinitePast() && absl::Now() >= catch_up_until_) wake_ = true;
    if (!wake_) return Action::kNone;
    wake_ = false;
    held = held_;
    held_version = held_version_;
    held_store_id = held_store_id_;
    nacked_version = nacked_version_;
    retry_at = retry_at_;
    catch_up_until = catch_up_until_;
  }
  // During a canary rollout the canaries get the candidate and the rest the
  // stable version (ConfigState::SnapshotFor). Outside mu_: ConfigState
  // calls Wake() under its own lock.
  std::shared_ptr<const Snapshot> snapshot = hub_->state->SnapshotFor(node_id_, node_group_);
  // Nothing was ever applied to this store (a new or wrong data dir): offer
  // nothing, so proxies keep what they serve (or stay unready) until the
  // first apply, as an Envoy control plane without a snapshot does.
  if (snapshot->version == 0) return Action::kNone;
  if (snapshot->version == held_version &&
      (held.snapshot == snapshot || snapshot->hashes == held.hashes()) &&
      (held_store_id.empty() || held_store_id == store_id)) {
    return Action::kNone;
  }
  // With replicas, a proxy holding a newer version of this store than this
  // replica has seen (it came from another replica) is offered nothing
  // until this replica catches up (it refuses older versions: a NACK each
  // time); ResyncStore() was asked when it connected.
  if (catch_up_until != absl::InfinitePast() && held_store_id == store_id &&
      held_version > snapshot->version) {
    if (absl::Now() < catch_up_until) return Action::kNone;
    SLUICE_LOG(kWarning, "proxy ", node_id_, " runs version ", held_version,
               " of this store, newer than its ", snapshot->version, " after reading it again",
               " (was the store restored from a backup?); it refuses older versions");
    absl::MutexLock lock(&mu_);
    catch_up_until_ = absl::InfinitePast();
  }
  // A version the proxy rejected waits for its backoff; a newer one goes at
  // once.
  if (snapshot->version == nacked_version && absl::Now() < retry_at) return Action::kNone;
  std::shared_ptr<const PreparedResponse> prepared =
      hub_->Prepare(held, snapshot, accepts_patches_);
  DiscoveryResponse nonce_only;
  nonce_only.set_nonce(absl::StrCat(hub_->next_nonce.fetch_add(1)));
  // A message's fields may come in any order: the shared body, then the
  // nonce, parse as one response.
  grpc::Slice parts[2] = {prepared->body, grpc::Slice(nonce_only.SerializeAsString())};
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return Action::kNone;
    outstanding_nonce_ = nonce_only.nonce();
    outstanding_version_ = snapshot->version;
    outstanding_snapshot_ = snapshot;
    outstanding_patched_ = prepared->patched;
    // Before the write: the ACK may come before OnWriteDone.
    outstanding_sent_at_ = absl::Now();
    write_buf_ = grpc::ByteBuffer(parts, 2);
    write_in_flight_ = true;
    write_is_config_ = true;
  }
  hub_->registry->Sent(handle_, snapshot->version);
  SLUICE_LOG(kDebug, "sending version ", prepared->version, " to ", node_id_, " (",
             prepared->resources, " resources, ", prepared->patched.size(), " patched, ",
             prepared->removed, " removed)");
  return Action::kWrite;
}

void ConfigStream::OnWriteDone(bool ok) {
  std::optional<grpc::Status> finish;
  bool config;
  {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    config = write_is_config_;
    finish = std::move(finish_after_write_);
    finish_after_write_.reset();
  }
  if (ok && config && hub_->metrics != nullptr) hub_->metrics->CountPush();
  if (finish.has_value()) {
    Finish(std::move(*finish));
    return;
  }
  if (!ok) {
    End(DefaultEnd());
    return;
  }
  // Purges or leases may be waiting.
  hub_->Schedule(shared_from_this());
}

void ConfigStream::OnDone() {
  bool established;
  {
    absl::MutexLock lock(&mu_);
    established = established_;
  }
  if (established) {
    hub_->state->Unsubscribe(subscription_);
    if (hub_->purges != nullptr) hub_->purges->Detach(handle_);
    hub_->registry->Disconnect(handle_);
    if (hub_->leases != nullptr) hub_->leases->Disconnect(lease_client_);
    SLUICE_LOG(kInfo, "proxy ", node_id_, " disconnected");
  }
  if (counted_) hub_->active_streams.fetch_sub(1);
  // The push queue may still hold it: it finds it finished.
  std::shared_ptr<ConfigStream> last = std::move(self_);
}

}  // namespace discovery_internal

absl::StatusOr<std::string> NodeIdFromCertificate(bool verified,
                                                  const std::vector<std::string>& sans) {
  if (!verified) {
    return absl::UnauthenticatedError(
        "sluice-control requires proxies to present a client certificate signed by its "
        "--client-ca; this connection presented none");
  }
  std::set<std::string> ids;
  for (const std::string& san : sans) {
    if (absl::StartsWith(san, kNodeUriPrefix)) ids.insert(san.substr(strlen(kNodeUriPrefix)));
  }
  // Shown escaped: a certificate's text would otherwise forge log lines.
  std::vector<std::string> shown;
  for (const std::string& id : ids) shown.push_back(api::Shown(id));
  if (ids.size() != 1 || ids.begin()->empty()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the client certificate must name exactly one node by a URI SAN ", kNodeUriPrefix,
        "<node id>; it names ", ids.empty() ? "none" : absl::StrJoin(shown, ", ")));
  }
  for (char c : *ids.begin()) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return absl::PermissionDeniedError(absl::StrCat(
          "the node id the client certificate names (", shown[0],
          ") has a control character, which no node.id may have"));
    }
  }
  return *ids.begin();
}

DiscoveryServiceImpl::DiscoveryServiceImpl(ConfigState* state, ProxyRegistry* registry,
                                           DiscoveryOptions options,
                                           ControlPlaneMetrics* metrics, PurgeRelay* purges)
    : hub_(std::make_unique<discovery_internal::StreamHub>(state, registry, std::move(options),
                                                           metrics, purges)) {
  const int threads = std::clamp(hub_->options.push_threads, 1, 64);
  for (int i = 0; i < threads; ++i) {
    hub_->threads.emplace_back([hub = hub_.get()] { hub->PushThread(); });
  }
}

DiscoveryServiceImpl::~DiscoveryServiceImpl() { hub_->Stop(); }

int DiscoveryServiceImpl::active_streams() const { return hub_->active_streams.load(); }

void DiscoveryServiceImpl::set_lease_allocator(LeaseAllocator* leases) {
  hub_->leases = leases;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* DiscoveryServiceImpl::StreamConfig(
    grpc::CallbackServerContext* context) {
  auto stream = std::make_shared<discovery_internal::ConfigStream>(hub_.get(), context);
  discovery_internal::ConfigStream* reactor = stream.get();
  reactor->Start(std::move(stream));
  return reactor;
}

}  // namespace sluice::controlplane
