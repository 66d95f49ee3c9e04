// sluice-control: holds the declared state and pushes it to every proxy.
//
//   sluice-control [--listen 127.0.0.1:18000] [--data-dir ./sluice-data]
//                  [--log-level info]
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/log.h"
#include "controlplane/server/admin_service.h"
#include "controlplane/server/config_state.h"
#include "controlplane/server/discovery_service.h"
#include "controlplane/server/proxy_registry.h"
#include "controlplane/store/file_store.h"
#include "grpcpp/grpcpp.h"

namespace {

constexpr char kUsage[] =
    "usage: sluice-control [--listen HOST:PORT] [--data-dir DIR] "
    "[--log-level debug|info|warning|error]\n";

int Run(int argc, char** argv) {
  using namespace sluice;
  auto flags = ParseFlags(argc, argv, {"listen", "data-dir", "log-level"}, {"help"});
  if (!flags.ok()) {
    std::fprintf(stderr, "sluice-control: %s\n%s", std::string(flags.status().message()).c_str(), kUsage);
    return 2;
  }
  if (flags->switches.count("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (!flags->positional.empty()) {
    std::fprintf(stderr, "sluice-control: unexpected argument '%s'\n%s",
                 flags->positional[0].c_str(), kUsage);
    return 2;
  }
  auto get = [&](const std::string& name, const std::string& fallback) {
    auto it = flags->values.find(name);
    return it == flags->values.end() ? fallback : it->second;
  };
  auto level = ParseLogLevel(get("log-level", "info"));
  if (!level.ok()) {
    std::fprintf(stderr, "sluice-control: --log-level: %s\n",
                 std::string(level.status().message()).c_str());
    return 2;
  }
  SetLogLevel(*level);
  const std::string listen = get("listen", "127.0.0.1:18000");
  const std::string data_dir = get("data-dir", "./sluice-data");

  // Signals go to the thread that waits for them, never to gRPC's threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto store = controlplane::FileStore::Open(data_dir);
  if (!store.ok()) {
    SLUICE_LOG(kError, "cannot open the store: ", store.status().message());
    return 1;
  }
  auto state = controlplane::ConfigState::Create(std::move(*store));
  if (!state.ok()) {
    SLUICE_LOG(kError, "cannot restore the state: ", state.status().message());
    return 1;
  }
  controlplane::ProxyRegistry registry;
  controlplane::DiscoveryServiceImpl discovery((*state).get(), &registry);
  controlplane::AdminServiceImpl admin((*state).get(), &registry);

  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(&discovery);
  builder.RegisterService(&admin);
  // Discovery streams hold a thread each; leave room for many proxies.
  grpc::ResourceQuota quota("sluice-control");
  quota.SetMaxThreads(2048);
  builder.SetResourceQuota(quota);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    SLUICE_LOG(kError, "cannot listen on ", listen,
               " (address in use, or not a HOST:PORT this machine has)");
    return 1;
  }
  std::string host = listen.substr(0, listen.rfind(':'));
  SLUICE_LOG(kInfo, "sluice-control listening on ", host, ":", bound_port,
             ", data dir ", data_dir, ", version ", (*state)->Current()->version);

  int received = 0;
  sigwait(&signals, &received);
  SLUICE_LOG(kInfo, "signal ", received, ": shutting down");
  (*state)->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  SLUICE_LOG(kInfo, "stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
