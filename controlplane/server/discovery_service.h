// DiscoveryServiceImpl: the config stream to proxies (api/sluice/discovery).
//
// Each stream runs on a gRPC sync-server thread (the writer) plus one reader
// thread of its own. The writer sends a response whenever the proxy is behind
// the current version and has no response outstanding; the reader records
// ACKs and NACKs. What a proxy holds is tracked per stream as content hashes,
// so every response carries only the resources that differ.
//
// Thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_DISCOVERY_SERVICE_H_
#define SLUICE_CONTROLPLANE_SERVER_DISCOVERY_SERVICE_H_

#include <atomic>

#include "controlplane/server/config_state.h"
#include "controlplane/server/proxy_registry.h"
#include "sluice/discovery/v1/discovery.grpc.pb.h"

namespace sluice::controlplane {

class DiscoveryServiceImpl final : public discovery::v1::DiscoveryService::Service {
 public:
  DiscoveryServiceImpl(ConfigState* state, ProxyRegistry* registry)
      : state_(state), registry_(registry) {}

  grpc::Status StreamConfig(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<discovery::v1::DiscoveryResponse,
                               discovery::v1::DiscoveryRequest>* stream) override;

 private:
  ConfigState* state_;
  ProxyRegistry* registry_;
  std::atomic<uint64_t> next_nonce_{1};
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_DISCOVERY_SERVICE_H_
