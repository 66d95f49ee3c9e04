// MetricsEndpoint: sluice-control's HTTP endpoint for Prometheus
// (--metrics-listen), apart from the gRPC port:
//
//   GET /metrics   200, the Prometheus text format `render` returns
//   GET /livez     200 "ok" once `live` returned (it takes the locks a stuck
//                  process would hold; cheap, unlike a scrape)
//   GET /ready     200 "ready" between SetServing(true) and SetServing(false),
//                  else 503 ("starting", or "stopping" once it served)
//   other paths    404; methods other than GET and HEAD: 405 (501 unknown)
//
// It runs common::OpsHttpServer (the proxy's admin endpoint's server) on a
// thread of its own, so a slow scraper never holds a gRPC thread and the
// gRPC server knows nothing of it. Its bounds: 128 connections (a new one
// closes the oldest waiting for a request), 8 KiB request heads sent within
// 10 s, no request body, 10 s to read an answer (ops_http_server.h).
//
// Start(), Stop() and the destructor are called from one thread (main);
// `render` runs on the endpoint's thread and must be thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_METRICS_ENDPOINT_H_
#define SLUICE_CONTROLPLANE_SERVER_METRICS_ENDPOINT_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/ops_http_server.h"

struct event_base;

namespace sluice::controlplane {

class MetricsEndpoint {
 public:
  explicit MetricsEndpoint(std::function<std::string()> render,
                           std::function<void()> live = [] {});
  ~MetricsEndpoint();  // Stop()
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // Binds HOST:PORT (port 0 picks one) and starts serving; returns the bound
  // port. INVALID_ARGUMENT for a malformed address, UNAVAILABLE when it
  // cannot be bound. At most once.
  absl::StatusOr<int> Start(const std::string& host_port);
  // Stops serving and joins the thread; requests in progress are dropped.
  void Stop();
  // What /ready answers: whether the gRPC port serves. Any thread.
  void SetServing(bool serving);

 private:
  common::OpsReply Answer(const common::OpsRequest& request) const;

  std::function<std::string()> render_;
  std::function<void()> live_;
  // 0: not yet serving, 1: serving, 2: no longer serving.
  std::atomic<int> serving_{0};
  ::event_base* base_ = nullptr;
  std::unique_ptr<common::OpsHttpServer> server_;
  std::thread loop_;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_METRICS_ENDPOINT_H_
