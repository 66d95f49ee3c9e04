#include "dataplane/admin/admin_server.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "dataplane/net/socket.h"

namespace sluice::admin {

AdminServer::AdminServer(event::Dispatcher& dispatcher, AdminHandlers handlers)
    : http_(evhttp_new(dispatcher.base())), handlers_(std::move(handlers)) {
  evhttp_set_gencb(http_, &AdminServer::Handle, this);
  evhttp_set_allowed_methods(http_, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
}

AdminServer::~AdminServer() { evhttp_free(http_); }

absl::StatusOr<int> AdminServer::Listen(const std::string& host_port) {
  auto address = net::ParseHostPort(host_port);
  if (!address.ok()) return address.status();
  auto fd = net::Listen(*address, /*reuse_port=*/false, 128);
  if (!fd.ok()) return fd.status();
  if (evhttp_accept_socket(http_, *fd) != 0) {
    return absl::InternalError(absl::StrCat("cannot serve admin on ", host_port));
  }
  return net::BoundPort(*fd);
}

void AdminServer::Handle(evhttp_request* request, void* arg) {
  auto* self = static_cast<AdminServer*>(arg);
  const char* uri = evhttp_request_get_uri(request);
  const evhttp_uri* parsed = evhttp_request_get_evhttp_uri(request);
  const char* path = parsed ? evhttp_uri_get_path(parsed) : uri;
  if (path == nullptr) path = "/";
  int status = 200;
  std::string body;
  const char* content_type = "text/plain; charset=utf-8";
  if (std::strcmp(path, "/ready") == 0) {
    auto [ready, reason] = self->handlers_.ready();
    status = ready ? 200 : 503;
    body = absl::StrCat(reason, "\n");
  } else if (std::strcmp(path, "/metrics") == 0 || std::strcmp(path, "/stats") == 0) {
    // /metrics is the Prometheus convention; /stats stays as an alias.
    body = self->handlers_.stats();
    content_type = "text/plain; version=0.0.4";
  } else if (std::strcmp(path, "/config_dump") == 0) {
    body = self->handlers_.config_dump();
    content_type = "application/json";
  } else if (std::strcmp(path, "/clusters") == 0) {
    const char* query = parsed ? evhttp_uri_get_query(parsed) : nullptr;
    bool json = query != nullptr && std::strstr(query, "format=json") != nullptr;
    body = self->handlers_.clusters(json);
    if (json) content_type = "application/json";
  } else {
    status = 404;
    body = "unknown admin path; try /ready, /metrics, /config_dump or /clusters\n";
  }
  evhttp_add_header(evhttp_request_get_output_headers(request), "Content-Type", content_type);
  evbuffer* out = evbuffer_new();
  evbuffer_add(out, body.data(), body.size());
  evhttp_send_reply(request, status, status == 200 ? "OK" : status == 503 ? "Service Unavailable" : "Not Found", out);
  evbuffer_free(out);
}

}  // namespace sluice::admin
