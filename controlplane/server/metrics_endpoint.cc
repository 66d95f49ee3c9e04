#include "controlplane/server/metrics_endpoint.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sluice::controlplane {

MetricsEndpoint::MetricsEndpoint(std::function<std::string()> render,
                                 std::function<void()> live)
    : render_(std::move(render)), live_(std::move(live)) {}

void MetricsEndpoint::SetServing(bool serving) {
  serving_.store(serving ? 1 : 2, std::memory_order_relaxed);
}

MetricsEndpoint::~MetricsEndpoint() { Stop(); }

absl::StatusOr<int> MetricsEndpoint::Start(const std::string& host_port) {
  absl::StatusOr<int> fd = common::ListenTcp(host_port);
  if (!fd.ok()) return fd.status();
  sockaddr_storage local{};
  socklen_t length = sizeof(local);
  getsockname(*fd, reinterpret_cast<sockaddr*>(&local), &length);
  const int port = local.ss_family == AF_INET6
                       ? ntohs(reinterpret_cast<sockaddr_in6*>(&local)->sin6_port)
                       : ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
  // Stop() wakes the loop from another thread: the base needs locks.
  static const int threads_enabled = evthread_use_pthreads();
  base_ = threads_enabled == 0 ? event_base_new() : nullptr;
  if (base_ == nullptr) {
    close(*fd);
    return absl::InternalError("cannot make an event loop");
  }
  server_ = std::make_unique<common::OpsHttpServer>(
      base_, "the metrics endpoint",
      [this](const common::OpsRequest& request) { return Answer(request); });
  if (absl::Status served = server_->Serve(*fd); !served.ok()) return served;
  loop_ = std::thread([base = base_] { event_base_dispatch(base); });
  return port;
}

common::OpsReply MetricsEndpoint::Answer(const common::OpsRequest& request) const {
  common::OpsReply reply;
  if (request.path == "/livez") {
    live_();
    reply.body = "ok\n";
    return reply;
  }
  if (request.path == "/ready") {
    const int serving = serving_.load(std::memory_order_relaxed);
    if (serving != 1) reply.status = 503;
    reply.body = serving == 1 ? "ready\n" : serving == 0 ? "starting\n" : "stopping\n";
    return reply;
  }
  if (request.path != "/metrics") {
    reply.status = 404;
    reply.body = "sluice-control serves GET /metrics, /livez and /ready here\n";
    return reply;
  }
  reply.body = render_();
  reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
  return reply;
}

void MetricsEndpoint::Stop() {
  if (loop_.joinable()) {
    // An event made active from here runs on the loop's thread and breaks
    // it, even if the loop has not started yet (a loopbreak before the loop
    // starts would be forgotten).
    event* wake = event_new(
        base_, -1, 0,
        [](evutil_socket_t, short, void* base) {
          event_base_loopbreak(static_cast<event_base*>(base));
        },
        base_);
    event_active(wake, 0, 0);
    loop_.join();
    event_free(wake);
  }
  server_.reset();  // closes its connections and its socket
  if (base_ != nullptr) event_base_free(base_);
  base_ = nullptr;
}

}  // namespace sluice::controlplane
