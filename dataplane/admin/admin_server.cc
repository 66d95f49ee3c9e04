#include "dataplane/admin/admin_server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "api/credentials.h"
#include "common/log.h"
#include "dataplane/http/http_util.h"
#include "dataplane/net/socket.h"

namespace sluice::admin {

struct AdminServer::Connection {
  AdminServer* server = nullptr;
  ConnectionList::iterator self;
  ::bufferevent* bev = nullptr;
  ::event* deadline = nullptr;  // the request head's (or the idle) timeout
  bool writing = false;         // a response is queued, not yet written
  absl::Time writing_since;     // when it was queued
  bool close_after = false;     // close once it is written
  bool peer_eof = false;        // the client sends no more (a half-close)
  size_t discard = 0;           // body bytes of the last request still to drop
};

namespace {

// Whether the bearer token in `authorization` is the one whose SHA-256 is
// `want_hex`.
bool HasToken(absl::string_view authorization, const std::string& want_hex) {
  if (!absl::StartsWithIgnoreCase(authorization, "Bearer ")) return false;
  const std::string got_hex = api::Sha256Hex(std::string(authorization.substr(7)));
  return got_hex.size() == want_hex.size() &&
         CRYPTO_memcmp(got_hex.data(), want_hex.data(), want_hex.size()) == 0;
}

absl::string_view ToAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

void ArmDeadline(::event* deadline, absl::Duration after) {
  timeval tv = absl::ToTimeval(after);
  evtimer_add(deadline, &tv);
}

}  // namespace

AdminServer::AdminServer(event::Dispatcher& dispatcher, AdminHandlers handlers)
    : base_(dispatcher.base()), handlers_(std::move(handlers)) {}

AdminServer::~AdminServer() {
  while (!connections_.empty()) Close(connections_.begin());
  if (listener_ != nullptr) evconnlistener_free(listener_);
  if (resume_ != nullptr) event_free(resume_);
}

void AdminServer::OnAcceptError(::evconnlistener* listener, void* arg) {
  const int err = EVUTIL_SOCKET_ERROR();
  auto* self = static_cast<AdminServer*>(arg);
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
  const int port = net::BoundPort(*fd);
  listener_ = evconnlistener_new(base_, &AdminServer::OnAccept, this,
                                 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, *fd);
  if (listener_ == nullptr) {
    close(*fd);
    return absl::InternalError(absl::StrCat("cannot serve admin on ", host_port));
  }
  evconnlistener_set_error_cb(listener_, &AdminServer::OnAcceptError);
  if (resume_ == nullptr) resume_ = event_new(base_, -1, 0, &AdminServer::OnResumeAccepting, this);
  return port;
}

void AdminServer::RequireToken(const std::string& token) {
  token_sha256_ = api::Sha256Hex(token);
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
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
  return token;
}

bool AdminServer::MakeRoom() {
  ConnectionList::iterator longest = connections_.end();
  for (auto it = connections_.begin(); it != connections_.end(); ++it) {
    if (!it->writing) {
      Close(it);
      return true;
    }
    if (longest == connections_.end() || it->writing_since < longest->writing_since) longest = it;
  }
  if (longest == connections_.end()) return false;
  Close(longest);  // every one is writing: the slowest reader goes
  return true;
}

void AdminServer::OnAccept(::evconnlistener* /*listener*/, int fd, ::sockaddr* /*address*/,
                           int /*length*/, void* arg) {
  auto* self = static_cast<AdminServer*>(arg);
  self->accept_backoff_.OnSuccess();
  if (self->connections_.size() >= kMaxConnections && !self->MakeRoom()) {
    close(fd);
    return;
  }
  ::bufferevent* bev = bufferevent_socket_new(self->base_, fd, BEV_OPT_CLOSE_ON_FREE);
  if (bev == nullptr) {
    close(fd);
    return;
  }
  auto it = self->connections_.emplace(self->connections_.end());
  it->server = self;
  it->self = it;
  it->bev = bev;
  it->deadline = evtimer_new(self->base_, &AdminServer::OnDeadline, &*it);
  bufferevent_setcb(bev, &AdminServer::OnRead, &AdminServer::OnWritten, &AdminServer::OnEvent,
                    &*it);
  // Reading stops once a head, a body and a little more are buffered: one
  // request at a time is answered, the next waits in the socket.
  bufferevent_setwatermark(bev, EV_READ, 0, kMaxHeadBytes + kMaxBodyBytes + 4);
  // A client that stops reading its response is given up on.
  timeval write_timeout = absl::ToTimeval(kRequestTimeout);
  bufferevent_set_timeouts(bev, nullptr, &write_timeout);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
  ArmDeadline(it->deadline, kRequestTimeout);
}

void AdminServer::OnRead(::bufferevent* /*bev*/, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  c->server->Serve(c->self);
}

void AdminServer::OnWritten(::bufferevent* /*bev*/, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  if (!c->writing) return;
  c->writing = false;
  AdminServer* server = c->server;
  if (c->close_after) {
    server->Close(c->self);
    return;
  }
  // The next request (already here, or to come) within the timeout.
  ArmDeadline(c->deadline, kRequestTimeout);
  server->Serve(c->self);
  // Half-closed: what it sent before is answered, then it is closed.
  if (c->peer_eof && !c->writing) server->Close(c->self);
}

void AdminServer::OnEvent(::bufferevent* /*bev*/, short what, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  if ((what & BEV_EVENT_EOF) != 0 && (what & BEV_EVENT_ERROR) == 0) {
    // A half-close: the client sends no more, but what it sent (pipelined
    // requests included, RFC 9112 9.3.2) is answered first.
    c->peer_eof = true;
    if (c->writing) return;
    c->server->Serve(c->self);
    if (c->writing) return;
  }
  c->server->Close(c->self);
}

void AdminServer::OnDeadline(int /*fd*/, short /*what*/, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  if (c->writing) return;  // the write timeout bounds that
  c->server->Close(c->self);
}

void AdminServer::Close(ConnectionList::iterator c) {
  if (c->deadline != nullptr) event_free(c->deadline);
  bufferevent_free(c->bev);  // closes the socket; safe inside its callbacks
  connections_.erase(c);
}

void AdminServer::Serve(ConnectionList::iterator c) {
  if (c->writing) return;
  evbuffer* in = bufferevent_get_input(c->bev);
  if (c->discard > 0) {
    const size_t n = std::min(c->discard, evbuffer_get_length(in));
    evbuffer_drain(in, n);
    c->discard -= n;
    if (c->discard > 0) return;
  }
  // Empty lines before a request line are ignored (RFC 9112 2.2).
  for (char lead[2]; evbuffer_get_length(in) >= 2 && evbuffer_copyout(in, lead, 2) == 2 &&
                     lead[0] == '\r' && lead[1] == '\n';) {
    evbuffer_drain(in, 2);
  }
  const evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, nullptr);
  if (end.pos < 0) {
    // A head ended by bare LFs never ends here: said at once.
    const evbuffer_ptr bare = evbuffer_search(in, "\n\n", 2, nullptr);
    if (bare.pos >= 0 && static_cast<size_t>(bare.pos) < kMaxHeadBytes) {
      Send(c, Reply{400, "bare LF in the request head\n", "text/plain; charset=utf-8", "", true},
           false);
      return;
    }
    if (evbuffer_get_length(in) > kMaxHeadBytes) {
      Send(c, Reply{431, "request head over 8 KiB\n", "text/plain; charset=utf-8", "", true},
           false);
    }
    return;
  }
  const size_t head_length = static_cast<size_t>(end.pos) + 4;
  if (head_length > kMaxHeadBytes) {
    Send(c, Reply{431, "request head over 8 KiB\n", "text/plain; charset=utf-8", "", true},
         false);
    return;
  }
  std::string head(head_length, '\0');
  evbuffer_remove(in, head.data(), head_length);
  head.resize(head_length - 4);  // its last CRLF and the empty line

  bool head_method = false;  // known once the request line is read
  auto bad = [&](int status, std::string message) {
    Send(c, Reply{status, std::move(message), "text/plain; charset=utf-8", "", true},
         head_method);
  };
  std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  for (absl::string_view line : lines) {
    if (line.find_first_of("\r\n") != absl::string_view::npos) {
      return bad(400, "bare CR or LF in the request head\n");
    }
  }
  // METHOD SP request-target SP HTTP-version
  std::vector<absl::string_view> parts = absl::StrSplit(lines[0], ' ');
  if (parts.size() != 3 || parts[1].empty() ||
      !http::IsToken(std::string_view(parts[0].data(), parts[0].size()))) {
    return bad(400, "malformed request line\n");
  }
  const absl::string_view method = parts[0];
  const absl::string_view target = parts[1];
  const absl::string_view version = parts[2];
  head_method = method == "HEAD";
  const bool http_version = absl::StartsWith(version, "HTTP/") && version.size() == 8 &&
                            absl::ascii_isdigit(static_cast<unsigned char>(version[5])) &&
                            version[6] == '.' &&
                            absl::ascii_isdigit(static_cast<unsigned char>(version[7]));
  if (!http_version) return bad(400, "malformed request line\n");
  // HTTP/1.2 and up are read as 1.1 (RFC 9110 2.5).
  if (version[5] != '1') return bad(505, "the admin endpoint speaks HTTP/1.1\n");
  const bool http10 = version == "HTTP/1.0";
  if (target[0] != '/') return bad(400, "the admin endpoint takes origin-form targets (/path)\n");
  for (char ch : target) {
    if (static_cast<unsigned char>(ch) <= 0x20 || static_cast<unsigned char>(ch) >= 0x7f ||
        ch == '#') {
      return bad(400, "invalid character in the request target\n");
    }
  }
  int hosts = 0;
  bool keep_alive = !http10, has_length = false, chunked = false;
  uint64_t length = 0;
  absl::string_view authorization;
  for (size_t i = 1; i < lines.size(); ++i) {
    absl::string_view line = lines[i];
    if (line.empty() || line[0] == ' ' || line[0] == '\t') {
      return bad(400, "obsolete line folding in the request head\n");
    }
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos || !http::IsToken(std::string_view(line.data(), colon))) {
      return bad(400, "malformed header field\n");
    }
    const absl::string_view name = line.substr(0, colon);
    const absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    for (char ch : value) {
      if ((static_cast<unsigned char>(ch) < 0x20 && ch != '\t') || ch == 0x7f) {
        return bad(400, "control character in a header field\n");
      }
    }
    if (absl::EqualsIgnoreCase(name, "host")) {
      ++hosts;
    } else if (absl::EqualsIgnoreCase(name, "content-length")) {
      uint64_t n = 0;
      if (value.empty() || !std::all_of(value.begin(), value.end(), absl::ascii_isdigit) ||
          !absl::SimpleAtoi(value, &n) || (has_length && n != length)) {
        return bad(400, "invalid or conflicting Content-Length\n");
      }
      has_length = true;
      length = n;
    } else if (absl::EqualsIgnoreCase(name, "transfer-encoding")) {
      chunked = true;
    } else if (absl::EqualsIgnoreCase(name, "connection")) {
      for (absl::string_view token : absl::StrSplit(value, ',')) {
        token = absl::StripAsciiWhitespace(token);
        if (absl::EqualsIgnoreCase(token, "close")) keep_alive = false;
        if (absl::EqualsIgnoreCase(token, "keep-alive") && http10) keep_alive = true;
      }
    } else if (absl::EqualsIgnoreCase(name, "authorization")) {
      authorization = value;
    }
  }
  if (hosts > 1 || (hosts == 0 && !http10)) return bad(400, "one Host field is required\n");
  if (has_length && chunked) return bad(400, "Content-Length with Transfer-Encoding\n");
  if (chunked) {
    return bad(400, "the admin endpoint takes no request body (Transfer-Encoding)\n");
  }
  if (length > kMaxBodyBytes) return bad(413, "the admin endpoint takes no request body\n");
  c->discard = length;  // dropped before the next request is read

  Reply reply = Answer(method, target, !token_sha256_.empty() && HasToken(authorization, token_sha256_));
  reply.close = reply.close || !keep_alive;
  if (http10 && !reply.close) reply.extra_headers += "Connection: keep-alive\r\n";
  // Past the bytes in flight, an answer of any size but a probe's waits.
  if (!reply.body.empty() && reply.body.size() > 4096 &&
      *reply_bytes_in_flight_ + reply.body.size() > kMaxReplyBytesInFlight) {
    reply = Reply{503,
                  absl::StrCat("the admin endpoint is writing ", *reply_bytes_in_flight_ >> 20,
                               " MiB of answers already; try again\n"),
                  "text/plain; charset=utf-8", "Retry-After: 1\r\n", reply.close};
  }
  Send(c, std::move(reply), method == "HEAD");
}

AdminServer::Reply AdminServer::Answer(absl::string_view method, absl::string_view target,
                                       bool has_token) {
  Reply reply;
  const size_t question = target.find('?');
  const absl::string_view path = target.substr(0, question);
  const absl::string_view query =
      question == absl::string_view::npos ? absl::string_view() : target.substr(question + 1);
  if (method != "GET" && method != "HEAD") {
    static constexpr absl::string_view kKnown[] = {"POST",    "PUT",   "DELETE", "CONNECT",
                                                  "OPTIONS", "TRACE", "PATCH"};
    if (std::find(std::begin(kKnown), std::end(kKnown), method) == std::end(kKnown)) {
      reply.status = 501;
      reply.body = "unknown method; the admin endpoint takes GET and HEAD\n";
    } else {
      reply.status = 405;
      reply.body = "the admin endpoint takes GET and HEAD only\n";
      reply.extra_headers = "Allow: GET, HEAD\r\n";
    }
    return reply;
  }
  if (path != "/ready" && path != "/livez" && !token_sha256_.empty() && !has_token) {
    reply.status = 401;
    reply.body = "the admin endpoint needs 'Authorization: Bearer <token>' (--admin-token-file)\n";
    reply.extra_headers = "WWW-Authenticate: Bearer realm=\"sluice-proxy admin\"\r\n";
    return reply;
  }
  if (path == "/ready") {
    auto [ready, reason] = handlers_.ready();
    reply.status = ready ? 200 : 503;
    reply.body = absl::StrCat(reason, "\n");
  } else if (path == "/livez") {
    auto [alive, reason] = handlers_.live();
    reply.status = alive ? 200 : 503;
    reply.body = absl::StrCat(reason, "\n");
  } else if (path == "/metrics" || path == "/stats") {
    // /metrics is the Prometheus convention; /stats stays as an alias.
    reply.body = handlers_.stats();
    reply.content_type = "text/plain; version=0.0.4";
  } else if (path == "/config_dump") {
    reply.body = handlers_.config_dump();
    reply.content_type = "application/json";
  } else if (path == "/clusters") {
    bool json = false;
    for (absl::string_view parameter : absl::StrSplit(query, '&')) {
      json = json || parameter == "format=json";
    }
    reply.body = handlers_.clusters(json);
    if (json) reply.content_type = "application/json";
  } else {
    reply.status = 404;
    reply.body = "unknown admin path; try /ready, /livez, /metrics, /config_dump or /clusters\n";
  }
  return reply;
}

void AdminServer::Send(ConnectionList::iterator c, Reply reply, bool head_only) {
  evtimer_del(c->deadline);
  c->writing = true;
  c->writing_since = absl::Now();
  c->close_after = reply.close;
  // HEAD: the GET's length and no content (RFC 9110 9.3.2).
  std::string out = absl::StrCat("HTTP/1.1 ", reply.status, " ",
                                 ToAbsl(http::ReasonPhrase(reply.status)),
                                 "\r\nContent-Type: ", reply.content_type,
                                 "\r\nContent-Length: ", reply.body.size(), "\r\n",
                                 reply.extra_headers, reply.close ? "Connection: close\r\n" : "",
                                 "\r\n");
  evbuffer* output = bufferevent_get_output(c->bev);
  evbuffer_add(output, out.data(), out.size());
  if (!head_only && !reply.body.empty()) {
    // The body is lent to the buffer, not copied; freed once written (or
    // its client gone).
    struct Lent {
      std::string body;
      const std::function<void()>* release;
      std::shared_ptr<size_t> in_flight;  // outlives the server if need be
    };
    *reply_bytes_in_flight_ += reply.body.size();
    auto* lent =
        new Lent{std::move(reply.body), &handlers_.release_memory, reply_bytes_in_flight_};
    evbuffer_add_reference(
        output, lent->body.data(), lent->body.size(),
        [](const void*, size_t, void* arg) {
          std::unique_ptr<Lent> done(static_cast<Lent*>(arg));
          *done->in_flight -= done->body.size();
          const bool large = done->body.size() >= kLargeReplyBytes;
          const std::function<void()>* release = done->release;
          done.reset();
          if (large && *release) (*release)();
        },
        lent);
  }
}

}  // namespace sluice::admin
