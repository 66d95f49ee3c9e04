#include "controlplane/server/metrics_endpoint.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sluice::controlplane {
namespace {

constexpr size_t kMaxHeadersBytes = 8 * 1024;
constexpr int kTimeoutSeconds = 10;

void Reply(evhttp_request* request, int status, const char* reason, const std::string& body) {
  evkeyvalq* headers = evhttp_request_get_output_headers(request);
  evhttp_add_header(
      headers, "Content-Type",
      status == 200 ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8");
  if (status == 405) evhttp_add_header(headers, "Allow", "GET, HEAD");
  evbuffer* out = evbuffer_new();
  evbuffer_add(out, body.data(), body.size());
  evhttp_send_reply(request, status, reason, out);
  evbuffer_free(out);
}

}  // namespace

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& host_port) {
  size_t colon = host_port.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", host_port, "' is not HOST:PORT (e.g. 127.0.0.1:18001)"));
  }
  std::string host = host_port.substr(0, colon);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') {
      return absl::InvalidArgumentError(
          absl::StrCat("'", host_port, "': an IPv6 host is written [ADDRESS]:PORT"));
    }
    host = host.substr(1, host.size() - 2);
  }
  int port = -1;
  if (!absl::SimpleAtoi(host_port.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("'", host_port, "': the port must be 0..65535"));
  }
  return std::make_pair(host, port);
}

MetricsEndpoint::MetricsEndpoint(std::function<std::string()> render)
    : render_(std::move(render)) {}

MetricsEndpoint::~MetricsEndpoint() { Stop(); }

absl::StatusOr<int> MetricsEndpoint::Start(const std::string& host_port) {
  auto address = SplitHostPort(host_port);
  if (!address.ok()) return address.status();
  // Stop() wakes the loop from another thread: the base needs locks.
  static const int threads_enabled = evthread_use_pthreads();
  if (threads_enabled != 0) return absl::InternalError("libevent has no pthreads support");
  base_ = event_base_new();
  http_ = base_ ? evhttp_new(base_) : nullptr;
  if (http_ == nullptr) return absl::InternalError("cannot make an event loop");
  evhttp_set_gencb(http_, &MetricsEndpoint::Handle, this);
  // Every method evhttp parses reaches Handle(), which answers 405 to those
  // other than GET and HEAD.
  evhttp_set_allowed_methods(http_, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                        EVHTTP_REQ_PATCH);
  evhttp_set_max_headers_size(http_, kMaxHeadersBytes);
  evhttp_set_max_body_size(http_, 0);
  evhttp_set_timeout(http_, kTimeoutSeconds);
  errno = 0;
  evhttp_bound_socket* bound =
      evhttp_bind_socket_with_handle(http_, address->first.c_str(), address->second);
  if (bound == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", host_port, ": ",
        errno != 0 ? std::strerror(errno) : "address in use, or not an address this machine has"));
  }
  sockaddr_storage local{};
  socklen_t length = sizeof(local);
  if (getsockname(evhttp_bound_socket_get_fd(bound), reinterpret_cast<sockaddr*>(&local),
                  &length) != 0) {
    return absl::InternalError(absl::StrCat("getsockname: ", std::strerror(errno)));
  }
  int port = local.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&local)->sin6_port)
                                         : ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
  loop_ = std::thread([base = base_] { event_base_dispatch(base); });
  return port;
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
  if (http_ != nullptr) evhttp_free(http_);
  if (base_ != nullptr) event_base_free(base_);
  http_ = nullptr;
  base_ = nullptr;
}

void MetricsEndpoint::Handle(evhttp_request* request, void* arg) {
  auto* self = static_cast<MetricsEndpoint*>(arg);
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(request);
  const char* path = uri != nullptr ? evhttp_uri_get_path(uri) : nullptr;
  if (path == nullptr || std::strcmp(path, "/metrics") != 0) {
    Reply(request, 404, "Not Found", "sluice-control serves only GET /metrics here\n");
    return;
  }
  evhttp_cmd_type method = evhttp_request_get_command(request);
  if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
    Reply(request, 405, "Method Not Allowed", "GET or HEAD /metrics\n");
    return;
  }
  Reply(request, 200, "OK", method == EVHTTP_REQ_GET ? self->render_() : "");
}

}  // namespace sluice::controlplane
