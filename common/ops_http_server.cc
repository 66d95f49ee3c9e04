#include "common/ops_http_server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/log.h"

namespace sluice::common {

struct OpsHttpServer::Connection {
  OpsHttpServer* server = nullptr;
  ConnectionList::iterator self;
  ::bufferevent* bev = nullptr;
  ::event* deadline = nullptr;  // the request head's (or the idle) timeout
  bool writing = false;         // a response is queued, not yet written
  absl::Time writing_since;     // when it was queued
  bool close_after = false;     // close once it is written
  bool peer_eof = false;        // the client sends no more (a half-close)
  size_t discard = 0;           // body bytes of the last request still to drop
  // Answered with Connection: close while the client may still be sending
  // (a 431 to a head still coming): the sending side is shut and what
  // arrives is read and dropped for a while, so that the close is no RST
  // that destroys the answer before the client reads it (RFC 9112 9.6).
  bool lingering = false;
  size_t lingered = 0;  // bytes dropped so far
};

namespace {

// RFC 9110 5.6.2 token.
bool IsToken(absl::string_view s) {
  if (s.empty()) return false;
  for (unsigned char ch : s) {
    if (absl::ascii_isalnum(ch)) continue;
    if (std::strchr("!#$%&'*+-.^_`|~", ch) == nullptr || ch == '\0') return false;
  }
  return true;
}

// The reason phrases of what these endpoints answer (RFC 9110 15).
const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

void ArmDeadline(::event* deadline, absl::Duration after) {
  timeval tv = absl::ToTimeval(after);
  evtimer_add(deadline, &tv);
}

}  // namespace

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
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

absl::StatusOr<int> ListenTcp(const std::string& host_port, int backlog) {
  auto split = SplitHostPort(host_port);
  if (!split.ok()) return split.status();
  const auto& [host, port] = *split;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const int lookup = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (lookup != 0 || found == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", host_port, ": ",
                                               lookup != 0 ? gai_strerror(lookup) : "no address"));
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> release(found, freeaddrinfo);
  const int fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", host_port, ": ", std::strerror(errno)));
  }
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (found->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (bind(fd, found->ai_addr, found->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
    const int err = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", host_port, ": ", std::strerror(err)));
  }
  return fd;
}

OpsHttpServer::OpsHttpServer(::event_base* base, std::string name, Handler handler,
                             std::function<void()> release_memory)
    : base_(base),
      name_(std::move(name)),
      handler_(std::move(handler)),
      release_memory_(std::make_shared<const std::function<void()>>(std::move(release_memory))) {}

OpsHttpServer::~OpsHttpServer() {
  while (!connections_.empty()) Close(connections_.begin());
  if (listener_ != nullptr) evconnlistener_free(listener_);
  if (resume_ != nullptr) event_free(resume_);
}

absl::Status OpsHttpServer::Serve(int fd) {
  if (listener_ != nullptr) {
    close(fd);
    return absl::FailedPreconditionError(absl::StrCat(name_, " serves one socket"));
  }
  listener_ = evconnlistener_new(base_, &OpsHttpServer::OnAccept, this,
                                 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
  if (listener_ == nullptr) {
    close(fd);
    return absl::InternalError(absl::StrCat(name_, ": cannot serve its socket"));
  }
  evconnlistener_set_error_cb(listener_, &OpsHttpServer::OnAcceptError);
  resume_ = event_new(base_, -1, 0, &OpsHttpServer::OnResumeAccepting, this);
  return absl::OkStatus();
}

void OpsHttpServer::OnAcceptError(::evconnlistener* listener, void* arg) {
  const int err = EVUTIL_SOCKET_ERROR();
  auto* self = static_cast<OpsHttpServer*>(arg);
  bool log = false;
  const absl::Duration pause = self->accept_backoff_.OnFailure(absl::Now(), &log);
  if (log) {
    SLUICE_LOG(kWarning, self->name_, ": accept failed: ", std::strerror(err),
               (err == EMFILE || err == ENFILE) ? " (out of descriptors)" : "",
               "; pausing accepts for ", absl::FormatDuration(pause));
  }
  evconnlistener_disable(listener);
  timeval tv = absl::ToTimeval(pause);
  evtimer_add(self->resume_, &tv);
}

void OpsHttpServer::OnResumeAccepting(int /*fd*/, short /*what*/, void* arg) {
  auto* self = static_cast<OpsHttpServer*>(arg);
  if (self->listener_ != nullptr) evconnlistener_enable(self->listener_);
}

bool OpsHttpServer::MakeRoom() {
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

void OpsHttpServer::OnAccept(::evconnlistener* /*listener*/, int fd, ::sockaddr* /*address*/,
                             int /*length*/, void* arg) {
  auto* self = static_cast<OpsHttpServer*>(arg);
  self->accept_backoff_.OnSuccess();
  if (self->connections_.size() >= kMaxConnections && !self->MakeRoom()) {
    close(fd);
    return;
  }
  // Answers go out in 16 KiB pieces: without it Nagle held the last of a
  // /metrics until the client's delayed ACK, 40 ms per keep-alive request.
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  ::bufferevent* bev = bufferevent_socket_new(self->base_, fd, BEV_OPT_CLOSE_ON_FREE);
  if (bev == nullptr) {
    close(fd);
    return;
  }
  auto it = self->connections_.emplace(self->connections_.end());
  it->server = self;
  it->self = it;
  it->bev = bev;
  it->deadline = evtimer_new(self->base_, &OpsHttpServer::OnDeadline, &*it);
  bufferevent_setcb(bev, &OpsHttpServer::OnRead, &OpsHttpServer::OnWritten,
                    &OpsHttpServer::OnEvent, &*it);
  // Reading stops once a head, a body and a little more are buffered: one
  // request at a time is answered, the next waits in the socket.
  bufferevent_setwatermark(bev, EV_READ, 0, kMaxHeadBytes + kMaxBodyBytes + 4);
  // A client that stops reading its response is given up on.
  timeval write_timeout = absl::ToTimeval(kRequestTimeout);
  bufferevent_set_timeouts(bev, nullptr, &write_timeout);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
  ArmDeadline(it->deadline, kRequestTimeout);
}

void OpsHttpServer::OnRead(::bufferevent* /*bev*/, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  if (c->lingering) {
    evbuffer* in = bufferevent_get_input(c->bev);
    c->lingered += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (c->lingered > kMaxLingerBytes) c->server->Close(c->self);
    return;
  }
  c->server->Serve(c->self);
}

void OpsHttpServer::Linger(ConnectionList::iterator c) {
  evbuffer* in = bufferevent_get_input(c->bev);
  evbuffer_drain(in, evbuffer_get_length(in));
  if (::shutdown(bufferevent_getfd(c->bev), SHUT_WR) != 0) {
    Close(c);
    return;
  }
  c->lingering = true;
  bufferevent_enable(c->bev, EV_READ);
  ArmDeadline(c->deadline, kLingerTime);
}

void OpsHttpServer::OnWritten(::bufferevent* /*bev*/, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  if (!c->writing) return;
  c->writing = false;
  OpsHttpServer* server = c->server;
  if (c->close_after) {
    // A client that sent all it meant to (a half-close) loses nothing.
    if (c->peer_eof) {
      server->Close(c->self);
    } else {
      server->Linger(c->self);
    }
    return;
  }
  // The next request (already here, or to come) within the timeout.
  ArmDeadline(c->deadline, kRequestTimeout);
  server->Serve(c->self);
  // Half-closed: what it sent before is answered, then it is closed.
  if (c->peer_eof && !c->writing) server->Close(c->self);
}

void OpsHttpServer::OnEvent(::bufferevent* /*bev*/, short what, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  if (c->lingering) {  // the client closed too, or failed: done
    c->server->Close(c->self);
    return;
  }
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

void OpsHttpServer::OnDeadline(int /*fd*/, short /*what*/, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  if (c->writing) return;  // the write timeout bounds that
  c->server->Close(c->self);
}

void OpsHttpServer::Close(ConnectionList::iterator c) {
  if (c->deadline != nullptr) event_free(c->deadline);
  bufferevent_free(c->bev);  // closes the socket; safe inside its callbacks
  connections_.erase(c);
}

void OpsHttpServer::Serve(ConnectionList::iterator c) {
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
  auto refuse = [&](int status, absl::string_view why, bool head_only) {
    Send(c, OpsReply{status, absl::StrCat(why, "\n"), "text/plain; charset=utf-8", "", true},
         head_only);
  };
  const evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, nullptr);
  if (end.pos < 0) {
    // A head ended by bare LFs never ends here: said at once.
    const evbuffer_ptr bare = evbuffer_search(in, "\n\n", 2, nullptr);
    if (bare.pos >= 0 && static_cast<size_t>(bare.pos) < kMaxHeadBytes) {
      return refuse(400, "bare LF in the request head", false);
    }
    if (evbuffer_get_length(in) > kMaxHeadBytes) {
      return refuse(431, "request head over 8 KiB", false);
    }
    return;
  }
  const size_t head_length = static_cast<size_t>(end.pos) + 4;
  if (head_length > kMaxHeadBytes) return refuse(431, "request head over 8 KiB", false);
  std::string head(head_length, '\0');
  evbuffer_remove(in, head.data(), head_length);
  head.resize(head_length - 4);  // its last CRLF and the empty line

  bool head_method = false;  // known once the request line is read
  auto bad = [&](int status, absl::string_view why) { refuse(status, why, head_method); };
  std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  for (absl::string_view line : lines) {
    if (line.find_first_of("\r\n") != absl::string_view::npos) {
      return bad(400, "bare CR or LF in the request head");
    }
  }
  // METHOD SP request-target SP HTTP-version
  std::vector<absl::string_view> parts = absl::StrSplit(lines[0], ' ');
  if (parts.size() != 3 || parts[1].empty() || !IsToken(parts[0])) {
    return bad(400, "malformed request line");
  }
  const absl::string_view method = parts[0];
  const absl::string_view target = parts[1];
  const absl::string_view version = parts[2];
  head_method = method == "HEAD";
  const bool http_version = absl::StartsWith(version, "HTTP/") && version.size() == 8 &&
                            absl::ascii_isdigit(static_cast<unsigned char>(version[5])) &&
                            version[6] == '.' &&
                            absl::ascii_isdigit(static_cast<unsigned char>(version[7]));
  if (!http_version) return bad(400, "malformed request line");
  // HTTP/1.2 and up are read as 1.1 (RFC 9110 2.5).
  if (version[5] != '1') return bad(505, absl::StrCat(name_, " speaks HTTP/1.1"));
  const bool http10 = version == "HTTP/1.0";
  if (target[0] != '/') {
    return bad(400, absl::StrCat(name_, " takes origin-form targets (/path)"));
  }
  for (char ch : target) {
    if (static_cast<unsigned char>(ch) <= 0x20 || static_cast<unsigned char>(ch) >= 0x7f ||
        ch == '#') {
      return bad(400, "invalid character in the request target");
    }
  }
  int hosts = 0;
  bool keep_alive = !http10, has_length = false, chunked = false;
  uint64_t length = 0;
  absl::string_view authorization;
  int authorizations = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    absl::string_view line = lines[i];
    if (line.empty() || line[0] == ' ' || line[0] == '\t') {
      return bad(400, "obsolete line folding in the request head");
    }
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos || !IsToken(line.substr(0, colon))) {
      return bad(400, "malformed header field");
    }
    const absl::string_view name = line.substr(0, colon);
    const absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    for (char ch : value) {
      if ((static_cast<unsigned char>(ch) < 0x20 && ch != '\t') || ch == 0x7f) {
        return bad(400, "control character in a header field");
      }
    }
    if (absl::EqualsIgnoreCase(name, "host")) {
      ++hosts;
    } else if (absl::EqualsIgnoreCase(name, "content-length")) {
      uint64_t n = 0;
      if (value.empty() || !std::all_of(value.begin(), value.end(), absl::ascii_isdigit) ||
          !absl::SimpleAtoi(value, &n) || (has_length && n != length)) {
        return bad(400, "invalid or conflicting Content-Length");
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
      ++authorizations;
    }
  }
  if (hosts > 1 || (hosts == 0 && !http10)) return bad(400, "one Host field is required");
  // A singleton field (RFC 9110 11.6.2): which of two a proxy in front would
  // check is its own choice, so neither is taken.
  if (authorizations > 1) return bad(400, "more than one Authorization field");
  if (has_length && chunked) return bad(400, "Content-Length with Transfer-Encoding");
  if (chunked) return bad(400, absl::StrCat(name_, " takes no request body (Transfer-Encoding)"));
  if (length > kMaxBodyBytes) return bad(413, absl::StrCat(name_, " takes no request body"));
  c->discard = length;  // dropped before the next request is read

  OpsReply reply;
  if (method != "GET" && method != "HEAD") {
    static constexpr absl::string_view kKnown[] = {"POST",    "PUT",   "DELETE", "CONNECT",
                                                  "OPTIONS", "TRACE", "PATCH"};
    if (std::find(std::begin(kKnown), std::end(kKnown), method) == std::end(kKnown)) {
      reply.status = 501;
      reply.body = absl::StrCat("unknown method; ", name_, " takes GET and HEAD\n");
    } else {
      reply.status = 405;
      reply.body = absl::StrCat(name_, " takes GET and HEAD only\n");
      reply.extra_headers = "Allow: GET, HEAD\r\n";
    }
  } else {
    const size_t question = target.find('?');
    OpsRequest request;
    request.path = target.substr(0, question);
    if (question != absl::string_view::npos) request.query = target.substr(question + 1);
    request.authorization = authorization;
    reply = handler_(request);
  }
  reply.close = reply.close || !keep_alive;
  if (http10 && !reply.close) reply.extra_headers += "Connection: keep-alive\r\n";
  // Past the bytes in flight, an answer of any size but a probe's waits.
  if (reply.body.size() > 4096 &&
      *reply_bytes_in_flight_ + reply.body.size() > kMaxReplyBytesInFlight) {
    reply = OpsReply{503,
                     absl::StrCat(name_, " is writing ", *reply_bytes_in_flight_ >> 20,
                                  " MiB of answers already; try again\n"),
                     "text/plain; charset=utf-8", "Retry-After: 1\r\n", reply.close};
  }
  Send(c, std::move(reply), head_method);
}

void OpsHttpServer::Send(ConnectionList::iterator c, OpsReply reply, bool head_only) {
  evtimer_del(c->deadline);
  c->writing = true;
  c->writing_since = absl::Now();
  c->close_after = reply.close;
  // HEAD: the GET's length and no content (RFC 9110 9.3.2).
  std::string out = absl::StrCat("HTTP/1.1 ", reply.status, " ", Reason(reply.status),
                                 "\r\nContent-Type: ", reply.content_type,
                                 "\r\nContent-Length: ", reply.body.size(), "\r\n",
                                 reply.extra_headers, reply.close ? "Connection: close\r\n" : "",
                                 "\r\n");
  evbuffer* output = bufferevent_get_output(c->bev);
  evbuffer_add(output, out.data(), out.size());
  if (head_only || reply.body.empty()) return;
  // The body is lent to the buffer, not copied; freed once written (or its
  // client gone).
  struct Lent {
    std::string body;
    // Both outlive the server if need be (libevent may free a closed
    // connection's buffers after the server is gone).
    std::shared_ptr<const std::function<void()>> release;
    std::shared_ptr<size_t> in_flight;
  };
  *reply_bytes_in_flight_ += reply.body.size();
  auto* lent = new Lent{std::move(reply.body), release_memory_, reply_bytes_in_flight_};
  evbuffer_add_reference(
      output, lent->body.data(), lent->body.size(),
      [](const void*, size_t, void* arg) {
        std::unique_ptr<Lent> done(static_cast<Lent*>(arg));
        *done->in_flight -= done->body.size();
        const bool large = done->body.size() >= kLargeReplyBytes;
        std::shared_ptr<const std::function<void()>> release = std::move(done->release);
        done.reset();
        if (large && *release) (*release)();
      },
      lent);
}

}  // namespace sluice::common
