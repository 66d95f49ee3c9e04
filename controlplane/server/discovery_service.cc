#include "controlplane/server/discovery_service.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <system_error>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "api/discovery.h"
#include "common/log.h"
#include "grpc/grpc_security_constants.h"

namespace sluice::controlplane {
namespace {

using discovery::v1::DiscoveryRequest;
using discovery::v1::DiscoveryResponse;
using HashMap = std::map<api::ResourceId, uint64_t>;

// Per-stream state shared by the writer and the reader thread.
struct StreamState {
  absl::Mutex mu;
  bool closed ABSL_GUARDED_BY(mu) = false;          // reader saw the end
  grpc::Status error ABSL_GUARDED_BY(mu);           // why the reader ended it, if it did
  bool wake ABSL_GUARDED_BY(mu) = true;             // something changed
  bool shutdown ABSL_GUARDED_BY(mu) = false;        // the control plane stops
  std::string outstanding_nonce ABSL_GUARDED_BY(mu);  // empty: none pending
  uint64_t outstanding_version ABSL_GUARDED_BY(mu) = 0;
  absl::Time outstanding_sent_at ABSL_GUARDED_BY(mu);  // when it was written
  HashMap outstanding_hashes ABSL_GUARDED_BY(mu);
  // What the proxy runs, as far as we know; an empty store id: unknown.
  uint64_t held_version ABSL_GUARDED_BY(mu) = 0;
  HashMap held_hashes ABSL_GUARDED_BY(mu);
  std::string held_store_id ABSL_GUARDED_BY(mu);
  // The version the proxy last NACKed (0: its last answer was an ACK), how
  // many times in a row, and when to offer it again.
  uint64_t nacked_version ABSL_GUARDED_BY(mu) = 0;
  int nacks_in_a_row ABSL_GUARDED_BY(mu) = 0;
  absl::Time retry_at ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  // Cache purges to send (PurgeRelay), oldest first.
  std::deque<discovery::v1::CachePurge> purges ABSL_GUARDED_BY(mu);
  // The newest rate-limit leases answer not yet sent.
  std::optional<discovery::v1::DiscoveryResponse> leases ABSL_GUARDED_BY(mu);
};

grpc::Status TooLong(absl::string_view field, size_t size, size_t limit) {
  return grpc::Status(
      grpc::StatusCode::INVALID_ARGUMENT,
      absl::StrCat(field, " is ", size, " bytes; at most ", limit, " are accepted"));
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
  if (node.group().size() > api::kMaxNodeGroupBytes) {
    return TooLong("node.group", node.group().size(), api::kMaxNodeGroupBytes);
  }
  if (node.build_version().size() > api::kMaxBuildVersionBytes) {
    return TooLong("node.build_version", node.build_version().size(),
                   api::kMaxBuildVersionBytes);
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
std::optional<std::vector<std::string>> PeerSans(const grpc::ServerContext& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME).empty()) {
    return std::nullopt;
  }
  std::vector<std::string> sans;
  for (const auto& value : auth->FindPropertyValues(GRPC_X509_SAN_PROPERTY_NAME)) {
    sans.emplace_back(value.data(), value.size());
  }
  for (const auto& value : auth->FindPropertyValues(GRPC_PEER_URI_PROPERTY_NAME)) {
    sans.emplace_back(value.data(), value.size());
  }
  return sans;
}

}  // namespace

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
  if (ids.size() != 1 || ids.begin()->empty()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the client certificate must name exactly one node by a URI SAN ", kNodeUriPrefix,
        "<node id>; it names ", ids.empty() ? "none" : absl::StrJoin(ids, ", ")));
  }
  return *ids.begin();
}

absl::StatusOr<std::thread> StartThread(std::function<void()> body) {
  try {
    return std::thread(std::move(body));
  } catch (const std::system_error& e) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot start a thread: ", e.what()));
  }
}

grpc::Status DiscoveryServiceImpl::StreamConfig(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<DiscoveryResponse, DiscoveryRequest>* stream) {
  // Counted before the first request, so that streams that never send one
  // count too.
  const int active = active_streams_.fetch_add(1) + 1;
  absl::Cleanup release = [this] { active_streams_.fetch_sub(1); };
  if (active > options_.max_streams) {
    SLUICE_LOG(kWarning, "refused a discovery stream from ", context->peer(), ": ",
               options_.max_streams, " streams are open (--max-discovery-streams)");
    return grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("sluice-control already serves ", options_.max_streams,
                     " discovery streams, its limit (--max-discovery-streams)"));
  }
  DiscoveryRequest first;
  if (!stream->Read(&first)) return grpc::Status::OK;
  if (grpc::Status status = CheckNode(first.node()); !status.ok()) {
    SLUICE_LOG(kWarning, "refused a discovery stream from ", context->peer(), ": ",
               status.error_message());
    return status;
  }
  if (options_.require_node_certificate) {
    std::optional<std::vector<std::string>> sans = PeerSans(*context);
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
                       *certified, "\" that the client certificate names (", kNodeUriPrefix,
                       *certified, ")"));
    }
    if (!refusal.ok()) {
      SLUICE_LOG(kWarning, "refused a discovery stream from ", context->peer(), " (node.id \"",
                 first.node().id(), "\"): ", refusal.error_message());
      return refusal;
    }
  }
  const std::string node_id = first.node().id();
  const std::string node_group = first.node().group();
  const std::string& store_id = state_->store_id();
  StreamState s;
  {
    absl::MutexLock lock(&s.mu);
    s.held_version = first.version_applied();
    s.held_store_id = first.store_id();
    for (const auto& key : first.known_resources()) {
      s.held_hashes[{key.kind(), key.name()}] = key.hash();
    }
  }
  int handle = registry_->Connect(first.node(), first.version_applied());
  int subscription = state_->Subscribe([&s](bool shutting_down) {
    absl::MutexLock lock(&s.mu);
    s.wake = true;
    s.shutdown = shutting_down;
  });
  // However the stream ends, the proxy leaves the registry and the state
  // stops calling into this frame.
  absl::Cleanup leave = [&] {
    state_->Unsubscribe(subscription);
    registry_->Disconnect(handle);
  };
  // Rate-limit leases: the proxy gives back its shares when the stream ends
  // (after the reader, which reports, has been joined).
  const uint64_t lease_client = next_lease_client_.fetch_add(1);
  absl::Cleanup release_leases = [&] {
    if (leases_ != nullptr) leases_->Disconnect(lease_client);
  };

  absl::StatusOr<std::thread> reader = options_.start_thread([&] {
    DiscoveryRequest request;
    while (stream->Read(&request)) {
      if (request.has_purge_result()) {
        // Outside the ACK/NACK protocol, and outside s.mu (lock order:
        // the relay's first).
        if (purges_ != nullptr) {
          purges_->Answered(handle, request.purge_result());
        }
        continue;
      }
      if (request.has_rate_limit_demand()) {
        // Outside the ACK/NACK protocol: answered by a leases response.
        if (leases_ != nullptr) {
          DiscoveryResponse answer;
          answer.set_store_id(store_id);
          *answer.mutable_rate_limit_leases() =
              leases_->Report(lease_client, request.rate_limit_demand(), absl::Now());
          absl::MutexLock lock(&s.mu);
          s.leases = std::move(answer);
        }
        continue;
      }
      absl::MutexLock lock(&s.mu);
      if (request.error_detail().size() > api::kMaxNackErrorBytes) {
        s.error = TooLong("error_detail", request.error_detail().size(),
                          api::kMaxNackErrorBytes);
        SLUICE_LOG(kWarning, "proxy ", node_id, ": ", s.error.error_message(),
                   "; ending its stream");
        break;
      }
      if (request.has_report()) {
        // A traffic summary (bounded: at most 10 routes are kept).
        if (request.report().routes_size() > 10) {
          request.mutable_report()->mutable_routes()->DeleteSubrange(
              10, request.report().routes_size() - 10);
        }
        registry_->Reported(handle, request.report());
      }
      if (request.response_nonce().empty() ||
          request.response_nonce() != s.outstanding_nonce) {
        continue;  // stale or unsolicited: only the outstanding nonce counts
      }
      if (request.error_detail().empty()) {
        s.held_version = s.outstanding_version;
        s.held_hashes = std::move(s.outstanding_hashes);
        s.held_store_id = store_id;
        s.nacked_version = 0;
        s.nacks_in_a_row = 0;
        registry_->Acked(handle, s.held_version);
        if (metrics_ != nullptr) metrics_->CountAck(absl::Now() - s.outstanding_sent_at);
        SLUICE_LOG(kDebug, "proxy ", node_id, " ACK version ", s.held_version);
      } else {
        s.nacks_in_a_row =
            s.nacked_version == s.outstanding_version ? s.nacks_in_a_row + 1 : 1;
        s.nacked_version = s.outstanding_version;
        absl::Duration backoff = options_.nack_retry;
        for (int i = 1; i < s.nacks_in_a_row && backoff < options_.nack_retry_max; ++i) {
          backoff *= 2;
        }
        backoff = std::min(backoff, options_.nack_retry_max);
        s.retry_at = absl::Now() + backoff;
        registry_->Nacked(handle, s.outstanding_version, request.error_detail());
        if (metrics_ != nullptr) metrics_->CountNack();
        SLUICE_LOG(kWarning, "proxy ", node_id, " NACK version ", s.outstanding_version,
                   ": ", request.error_detail(), " (offered again in ",
                   absl::FormatDuration(backoff), ")");
      }
      s.outstanding_nonce.clear();
      s.outstanding_hashes.clear();
      s.wake = true;
    }
    absl::MutexLock lock(&s.mu);
    s.closed = true;
  });
  if (!reader.ok()) {
    SLUICE_LOG(kError, "proxy ", node_id, ": stream refused: ", reader.status().message());
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("sluice-control cannot serve this stream now: ",
                                     reader.status().message()));
  }
  // Attached before the proxy hears the stream is up, so that a purge sent
  // after it logged "connected" reaches it.
  if (purges_ != nullptr) {
    purges_->Attach(handle, first.node(),
                    [&s](const discovery::v1::CachePurge& purge) {
                      absl::MutexLock lock(&s.mu);
                      s.purges.push_back(purge);
                    });
  }
  // Before `s` goes: the relay stops queueing on it.
  absl::Cleanup detach = [&] {
    if (purges_ != nullptr) purges_->Detach(handle);
  };
  // The stream is established: tell the proxy before any response.
  context->AddInitialMetadata(api::kStreamAcceptedKey, "1");
  stream->SendInitialMetadata();
  SLUICE_LOG(kInfo, "proxy ", node_id, " connected (", context->peer(), "), holds version ",
             first.version_applied());
  if (!first.store_id().empty() && first.store_id() == store_id &&
      first.version_applied() > state_->Current()->version) {
    SLUICE_LOG(kWarning, "proxy ", node_id, " runs version ", first.version_applied(),
               " of this store, newer than this control plane's ", state_->Current()->version,
               " (was the data dir restored from a backup?); it refuses older versions");
  }

  while (true) {
    std::optional<discovery::v1::CachePurge> purge;
    std::optional<DiscoveryResponse> leases;
    {
      absl::MutexLock lock(&s.mu);
      auto ready = [](StreamState* st) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return st->closed || st->shutdown || !st->purges.empty() || st->leases.has_value() ||
               (st->wake && st->outstanding_nonce.empty());
      };
      if (s.nacked_version != 0 && s.outstanding_nonce.empty()) {
        // Time to offer the NACKed version again, unless something else
        // wakes us first.
        if (!s.mu.AwaitWithDeadline(absl::Condition(+ready, &s), s.retry_at)) s.wake = true;
      } else {
        s.mu.Await(absl::Condition(+ready, &s));
      }
      if (s.closed || s.shutdown) break;
      if (!s.purges.empty()) {
        purge = std::move(s.purges.front());
        s.purges.pop_front();
      } else if (s.leases.has_value()) {
        leases = std::move(s.leases);
        s.leases.reset();
      } else {
        s.wake = false;
      }
    }
    if (purge.has_value()) {
      // A response of its own, with no nonce: neither outstanding nor
      // ACKed. Version 0 and the store id make a proxy that predates purges
      // reject it as older than what it runs (api/sluice/discovery).
      DiscoveryResponse command;
      command.set_store_id(store_id);
      *command.mutable_purge() = std::move(*purge);
      if (!stream->Write(command)) break;
      SLUICE_LOG(kDebug, "sent cache purge ", command.purge().id(), " to ",
                 node_id);
      continue;
    }
    if (leases.has_value()) {
      // Like a purge: a response of its own, no nonce, version 0.
      if (!stream->Write(*leases)) break;
      continue;
    }
    // During a canary rollout the canaries get the candidate and the rest the
    // stable version (ConfigState::SnapshotFor).
    std::shared_ptr<const Snapshot> snapshot = state_->SnapshotFor(node_id, node_group);
    DiscoveryResponse response;
    {
      absl::MutexLock lock(&s.mu);
      if (snapshot->version == s.held_version && snapshot->hashes == s.held_hashes &&
          (s.held_store_id.empty() || s.held_store_id == store_id)) {
        continue;
      }
      // A version the proxy rejected waits for its backoff; a newer one goes
      // at once.
      if (snapshot->version == s.nacked_version && absl::Now() < s.retry_at) continue;
      for (const auto& [id, hash] : snapshot->hashes) {
        auto it = s.held_hashes.find(id);
        if (it == s.held_hashes.end() || it->second != hash) {
          *response.add_resources() = snapshot->resources.at(id);
        }
      }
      for (const auto& [id, hash] : s.held_hashes) {
        if (!snapshot->hashes.count(id)) {
          auto* key = response.add_removed();
          key->set_kind(id.first);
          key->set_name(id.second);
        }
      }
      response.set_version(snapshot->version);
      response.set_nonce(absl::StrCat(next_nonce_.fetch_add(1)));
      response.set_store_id(store_id);
      s.outstanding_nonce = response.nonce();
      s.outstanding_version = snapshot->version;
      s.outstanding_hashes = snapshot->hashes;
      // Before the write: the ACK may come before Write() returns.
      s.outstanding_sent_at = absl::Now();
    }
    registry_->Sent(handle, snapshot->version);
    if (!stream->Write(response)) break;
    if (metrics_ != nullptr) metrics_->CountPush();
    SLUICE_LOG(kDebug, "sent version ", response.version(), " to ", node_id, " (",
               response.resources_size(), " resources, ", response.removed_size(),
               " removed)");
  }
  grpc::Status error;
  {
    absl::MutexLock lock(&s.mu);
    error = s.error;
  }
  // A reader that ended the stream itself has left Read already; otherwise
  // cancelling is what ends its Read.
  if (error.ok()) context->TryCancel();
  reader->join();
  SLUICE_LOG(kInfo, "proxy ", node_id, " disconnected");
  if (!error.ok()) return error;
  if (state_->shutting_down()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "sluice-control is shutting down");
  }
  return grpc::Status::OK;
}

}  // namespace sluice::controlplane
