#include "controlplane/server/discovery_service.h"

#include <map>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace sluice::controlplane {
namespace {

using discovery::v1::DiscoveryRequest;
using discovery::v1::DiscoveryResponse;
using HashMap = std::map<api::ResourceId, uint64_t>;

// Per-stream state shared by the writer and the reader thread.
struct StreamState {
  absl::Mutex mu;
  bool closed ABSL_GUARDED_BY(mu) = false;          // reader saw the end
  bool wake ABSL_GUARDED_BY(mu) = true;             // something changed
  bool shutdown ABSL_GUARDED_BY(mu) = false;        // the control plane stops
  std::string outstanding_nonce ABSL_GUARDED_BY(mu);  // empty: none pending
  uint64_t outstanding_version ABSL_GUARDED_BY(mu) = 0;
  HashMap outstanding_hashes ABSL_GUARDED_BY(mu);
  // What the proxy runs, as far as we know.
  uint64_t held_version ABSL_GUARDED_BY(mu) = 0;
  HashMap held_hashes ABSL_GUARDED_BY(mu);
};

}  // namespace

grpc::Status DiscoveryServiceImpl::StreamConfig(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<DiscoveryResponse, DiscoveryRequest>* stream) {
  DiscoveryRequest first;
  if (!stream->Read(&first)) return grpc::Status::OK;
  if (first.node().id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first DiscoveryRequest must carry node.id");
  }
  const std::string node_id = first.node().id();
  StreamState s;
  {
    absl::MutexLock lock(&s.mu);
    s.held_version = first.version_applied();
    for (const auto& key : first.known_resources()) {
      s.held_hashes[{key.kind(), key.name()}] = key.hash();
    }
  }
  int handle = registry_->Connect(first.node(), first.version_applied());
  SLUICE_LOG(kInfo, "proxy ", node_id, " connected (", context->peer(),
             "), holds version ", first.version_applied());
  int subscription = state_->Subscribe([&s](bool shutting_down) {
    absl::MutexLock lock(&s.mu);
    s.wake = true;
    s.shutdown = shutting_down;
  });

  std::thread reader([&] {
    DiscoveryRequest request;
    while (stream->Read(&request)) {
      absl::MutexLock lock(&s.mu);
      if (request.response_nonce().empty() ||
          request.response_nonce() != s.outstanding_nonce) {
        continue;  // stale or unsolicited: only the outstanding nonce counts
      }
      if (request.error_detail().empty()) {
        s.held_version = s.outstanding_version;
        s.held_hashes = std::move(s.outstanding_hashes);
        registry_->Acked(handle, s.held_version);
        SLUICE_LOG(kDebug, "proxy ", node_id, " ACK version ", s.held_version);
      } else {
        registry_->Nacked(handle, s.outstanding_version, request.error_detail());
        SLUICE_LOG(kWarning, "proxy ", node_id, " NACK version ",
                   s.outstanding_version, ": ", request.error_detail());
      }
      s.outstanding_nonce.clear();
      s.outstanding_hashes.clear();
      s.wake = true;
    }
    absl::MutexLock lock(&s.mu);
    s.closed = true;
  });

  uint64_t last_sent_version = 0;
  while (true) {
    {
      absl::MutexLock lock(&s.mu);
      s.mu.Await(absl::Condition(
          +[](StreamState* st) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return st->closed || st->shutdown ||
                   (st->wake && st->outstanding_nonce.empty());
          },
          &s));
      if (s.closed || s.shutdown) break;
      s.wake = false;
    }
    std::shared_ptr<const Snapshot> snapshot = state_->Current();
    DiscoveryResponse response;
    {
      absl::MutexLock lock(&s.mu);
      if (snapshot->version == s.held_version && snapshot->hashes == s.held_hashes) {
        continue;
      }
      // A version the proxy rejected (NACK) is not sent again; the next is.
      if (snapshot->version == last_sent_version) continue;
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
      s.outstanding_nonce = response.nonce();
      s.outstanding_version = snapshot->version;
      s.outstanding_hashes = snapshot->hashes;
      last_sent_version = snapshot->version;
    }
    registry_->Sent(handle, snapshot->version);
    if (!stream->Write(response)) break;
    SLUICE_LOG(kDebug, "sent version ", response.version(), " to ", node_id, " (",
               response.resources_size(), " resources, ", response.removed_size(),
               " removed)");
  }
  state_->Unsubscribe(subscription);
  context->TryCancel();
  reader.join();
  registry_->Disconnect(handle);
  SLUICE_LOG(kInfo, "proxy ", node_id, " disconnected");
  if (state_->shutting_down()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "sluice-control is shutting down");
  }
  return grpc::Status::OK;
}

}  // namespace sluice::controlplane
