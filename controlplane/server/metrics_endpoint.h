// MetricsEndpoint: sluice-control's HTTP endpoint for Prometheus
// (--metrics-listen), apart from the gRPC port:
//
//   GET /metrics   200, the Prometheus text format `render` returns
//   other paths    404; methods other than GET and HEAD: 405
//
// It runs libevent's evhttp on a thread of its own, so a slow scraper never
// holds a gRPC thread and the gRPC server knows nothing of it. Requests are
// bounded: 8 KiB of headers, no body, 10 s to send the request and to read
// the answer.
//
// Start(), Stop() and the destructor are called from one thread (main);
// `render` runs on the endpoint's thread and must be thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_METRICS_ENDPOINT_H_
#define SLUICE_CONTROLPLANE_SERVER_METRICS_ENDPOINT_H_

#include <functional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

struct event_base;
struct evhttp;
struct evhttp_request;

namespace sluice::controlplane {

// Splits "HOST:PORT" ("[::1]:PORT" for IPv6) into host and port 0..65535;
// INVALID_ARGUMENT naming what is wrong otherwise.
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& host_port);

class MetricsEndpoint {
 public:
  explicit MetricsEndpoint(std::function<std::string()> render);
  ~MetricsEndpoint();  // Stop()
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // Binds HOST:PORT (port 0 picks one) and starts serving; returns the bound
  // port. INVALID_ARGUMENT for a malformed address, UNAVAILABLE when it
  // cannot be bound. At most once.
  absl::StatusOr<int> Start(const std::string& host_port);
  // Stops serving and joins the thread; requests in progress are dropped.
  void Stop();

 private:
  static void Handle(::evhttp_request* request, void* arg);

  std::function<std::string()> render_;
  ::event_base* base_ = nullptr;
  ::evhttp* http_ = nullptr;
  std::thread loop_;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_METRICS_ENDPOINT_H_
