// ConfigClient: the proxy's side of the discovery stream to sluice-control.
//
// Runs on its own thread (gRPC's synchronous API blocks). It identifies the
// proxy, says which version and resources it holds, and for every response
// builds the next full resource set, hands it to `apply` (validate, compile,
// publish) and answers ACK or NACK with the reason. When the stream breaks it
// reconnects with exponential backoff (250 ms doubling to 10 s) and jitter;
// the proxy keeps serving its last good config meanwhile.
//
// Start()/Stop() from the main thread; `apply` runs on the client's thread.
#ifndef SLUICE_DATAPLANE_CONFIG_CONFIG_CLIENT_H_
#define SLUICE_DATAPLANE_CONFIG_CONFIG_CLIENT_H_

#include <atomic>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "api/resource.h"
#include "grpcpp/grpcpp.h"
#include "sluice/discovery/v1/discovery.grpc.pb.h"

namespace sluice::config {

class ConfigClient {
 public:
  // `changed`: the ids the response added or changed.
  using ApplyFn = std::function<absl::Status(uint64_t version, const api::ResourceMap& resources,
                                             const std::set<api::ResourceId>& changed)>;

  // `persist` runs after an applied version is ACKed (keeping it on disk
  // must not delay the ACK).
  using PersistFn = std::function<void(uint64_t version, const api::ResourceMap& resources)>;
  ConfigClient(std::string control_plane, discovery::v1::Node node, uint64_t held_version,
               api::ResourceMap held, ApplyFn apply, PersistFn persist);
  ~ConfigClient();

  void Start();
  void Stop();
  bool connected() const { return connected_.load(); }

 private:
  void Run();
  void RunStream();

  const std::string control_plane_;
  const discovery::v1::Node node_;
  ApplyFn apply_;
  PersistFn persist_;
  std::thread thread_;
  std::atomic<bool> connected_{false};

  // Client thread only.
  uint64_t held_version_;
  api::ResourceMap held_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace sluice::config

#endif  // SLUICE_DATAPLANE_CONFIG_CONFIG_CLIENT_H_
