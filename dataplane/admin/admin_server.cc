#include "dataplane/admin/admin_server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/keyvalq_struct.h>

#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/credentials.h"
#include "common/log.h"
#include "dataplane/net/socket.h"

namespace sluice::admin {
namespace {

// Admin servers by their listener, for OnAcceptError.
std::map<evconnlistener*, AdminServer*>& Servers() {
  static auto* servers = new std::map<evconnlistener*, AdminServer*>();
  return *servers;
}
constexpr size_t kMaxHeadBytes = 8 * 1024;
constexpr size_t kMaxBodyBytes = 1024;
constexpr int kTimeoutSeconds = 10;

std::mutex& ServersMutex() {
  static auto* mu = new std::mutex();
  return *mu;
}

}  // namespace

AdminServer::AdminServer(event::Dispatcher& dispatcher, AdminHandlers handlers)
    : base_(dispatcher.base()), http_(evhttp_new(dispatcher.base())), handlers_(std::move(handlers)) {
  evhttp_set_gencb(http_, &AdminServer::Handle, this);
  // Every method reaches Handle, which answers all but GET and HEAD with
  // 405 and Allow (libevent's own answer would be 501, which RFC 9110
  // 15.6.2 keeps for methods a server does not know).
  evhttp_set_allowed_methods(http_, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                        EVHTTP_REQ_PATCH | EVHTTP_REQ_TRACE |
                                        EVHTTP_REQ_CONNECT);
  // Checked before the token is (libevent reads a request whole first): a
  // small head and body (enough for a stray POST to get its 405), and a
  // connection that sends nothing for kTimeoutSeconds is closed, so that a
  // caller without the token cannot fill memory or hold connections.
  evhttp_set_max_headers_size(http_, kMaxHeadBytes);
  evhttp_set_max_body_size(http_, kMaxBodyBytes);
  evhttp_set_timeout(http_, kTimeoutSeconds);
}

AdminServer::~AdminServer() {
  if (listener_ != nullptr) {
    std::lock_guard<std::mutex> lock(ServersMutex());
    Servers().erase(listener_);
  }
  if (resume_ != nullptr) event_free(resume_);
  evhttp_free(http_);
}

void AdminServer::OnAcceptError(evconnlistener* listener, void* /*evhttp*/) {
  const int err = EVUTIL_SOCKET_ERROR();
  AdminServer* self = nullptr;
  {
    std::lock_guard<std::mutex> lock(ServersMutex());
    auto it = Servers().find(listener);
    if (it != Servers().end()) self = it->second;
  }
  if (self == nullptr) return;
  bool log = false;
  const absl::Duration pause = self->accept_backoff_.OnFailure(absl::Now(), &log);
  if (log) {
    SLUICE_LOG(kWarning, "admin endpoint: accept failed: ", std::strerror(err),
               (err == EMFILE || err == ENFILE) ? " (out of descriptors)" : "",
               "; pausing accepts for ", absl::FormatDuration(pause));
  }
  evconnlistener_disable(listener);
  timeval tv = absl::ToTimeval(pause);
  evtimer_add(self->resume_, &tv);
}

void AdminServer::OnResumeAccepting(int /*fd*/, short /*what*/, void* arg) {
  auto* self = static_cast<AdminServer*>(arg);
  if (self->listener_ != nullptr) evconnlistener_enable(self->listener_);
}

absl::StatusOr<int> AdminServer::Listen(const std::string& host_port) {
  auto address = net::ParseHostPort(host_port);
  if (!address.ok()) return address.status();
  auto fd = net::Listen(*address, /*reuse_port=*/false, 128);
  if (!fd.ok()) return fd.status();
  evhttp_bound_socket* bound = evhttp_accept_socket_with_handle(http_, *fd);
  if (bound == nullptr) {
    return absl::InternalError(absl::StrCat("cannot serve admin on ", host_port));
  }
  listener_ = evhttp_bound_socket_get_listener(bound);
  if (resume_ == nullptr) resume_ = event_new(base_, -1, 0, &AdminServer::OnResumeAccepting, this);
  // The error callback gets the listener's own argument (the evhttp): the
  // server is found by its listener.
  {
    std::lock_guard<std::mutex> lock(ServersMutex());
    Servers()[listener_] = this;
  }
  evconnlistener_set_error_cb(listener_, &AdminServer::OnAcceptError);
  return net::BoundPort(*fd);
}

void AdminServer::RequireToken(const std::string& token) {
  token_sha256_ = api::Sha256Hex(token);
}

absl::Status AdminServer::RequireTokenFromFile(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read a token from ", path));
  }
  std::string token(absl::StripAsciiWhitespace(line));
  if (token.size() < 16) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the token is ", token.size(), " characters; at least 16"));
  }
  RequireToken(token);
  return absl::OkStatus();
}

namespace {

// Whether `request` carries the bearer token whose SHA-256 is `want_hex`.
bool HasToken(evhttp_request* request, const std::string& want_hex) {
  const char* header =
      evhttp_find_header(evhttp_request_get_input_headers(request), "Authorization");
  if (header == nullptr || !absl::StartsWithIgnoreCase(header, "Bearer ")) return false;
  const std::string got_hex = api::Sha256Hex(header + 7);
  return got_hex.size() == want_hex.size() &&
         CRYPTO_memcmp(got_hex.data(), want_hex.data(), want_hex.size()) == 0;
}

}  // namespace

void AdminServer::Handle(evhttp_request* request, void* arg) {
  auto* self = static_cast<AdminServer*>(arg);
  const char* uri = evhttp_request_get_uri(request);
  const evhttp_uri* parsed = evhttp_request_get_evhttp_uri(request);
  const char* path = parsed ? evhttp_uri_get_path(parsed) : uri;
  if (path == nullptr) path = "/";
  int status = 200;
  std::string body;
  const char* content_type = "text/plain; charset=utf-8";
  const evhttp_cmd_type method = evhttp_request_get_command(request);
  if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
    evhttp_add_header(evhttp_request_get_output_headers(request), "Allow", "GET, HEAD");
    status = 405;
    body = "the admin endpoint takes GET and HEAD only\n";
  } else if (std::strcmp(path, "/ready") != 0 && std::strcmp(path, "/livez") != 0 &&
             !self->token_sha256_.empty() && !HasToken(request, self->token_sha256_)) {
    evhttp_add_header(evhttp_request_get_output_headers(request), "WWW-Authenticate",
                      "Bearer realm=\"sluice-proxy admin\"");
    status = 401;
    body = "the admin endpoint needs 'Authorization: Bearer <token>' (--admin-token-file)\n";
  } else if (std::strcmp(path, "/ready") == 0) {
    auto [ready, reason] = self->handlers_.ready();
    status = ready ? 200 : 503;
    body = absl::StrCat(reason, "\n");
  } else if (std::strcmp(path, "/livez") == 0) {
    auto [alive, reason] = self->handlers_.live();
    status = alive ? 200 : 503;
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
    body = "unknown admin path; try /ready, /livez, /metrics, /config_dump or /clusters\n";
  }
  evhttp_add_header(evhttp_request_get_output_headers(request), "Content-Type", content_type);
  if (method == EVHTTP_REQ_HEAD) {
    // The GET's length and no content (RFC 9110 9.3.2): libevent would
    // send the body, and a keep-alive client would read it as the start
    // of its next response.
    evhttp_add_header(evhttp_request_get_output_headers(request), "Content-Length",
                      absl::StrCat(body.size()).c_str());
    body.clear();
  }
  evbuffer* out = evbuffer_new();
  // The body is lent to the buffer, not copied; freed once written.
  struct Lent {
    std::string body;
    const std::function<void()>* release;
  };
  auto* lent = new Lent{std::move(body), &self->handlers_.release_memory};
  evbuffer_add_reference(
      out, lent->body.data(), lent->body.size(),
      [](const void*, size_t, void* arg) {
        std::unique_ptr<Lent> done(static_cast<Lent*>(arg));
        const bool large = done->body.size() >= kLargeReplyBytes;
        const std::function<void()>* release = done->release;
        done.reset();
        if (large && *release) (*release)();
      },
      lent);
  evhttp_send_reply(request, status, status == 200   ? "OK"
                      : status == 503 ? "Service Unavailable"
                      : status == 401 ? "Unauthorized"
                      : status == 405 ? "Method Not Allowed"
                                      : "Not Found", out);
  evbuffer_free(out);
}

}  // namespace sluice::admin
