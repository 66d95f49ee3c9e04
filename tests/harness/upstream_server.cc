// upstream_server: a real HTTP/1.1 origin server for loopback integration
// tests. One libevent loop on one thread; delays and slow responses are timers,
// so a slow request never holds up another connection.
//
//   upstream_server --port 0 --name backend-a [--address 127.0.0.2]
//   -> prints "listening on 127.0.0.1:PORT" (the --address, an IPv4
//      address, 127.0.0.1 by default) once, then serves until
//      SIGTERM/SIGINT (exit status 0).
//
// Every response carries `x-upstream: NAME` and `content-type: text/plain`
// (json=1 and echo=1 below say otherwise),
// and echoes selected request headers as `x-echo-<name>` (all occurrences
// joined with ", "): x-forwarded-for, x-forwarded-proto, x-request-id, host,
// connection, te, transfer-encoding, content-length, x-consumer-name,
// x-consumer-groups, x-anonymous-consumer, authorization, apikey,
// traceparent, tracestate, x-forwarded-host, x-forwarded-port, forwarded,
// x-forwarded-prefix,
// max-forwards, range, if-range, accept-encoding, x-real-ip, via,
// x-forwarded-client-cert, x-forwarded-ssl, front-end-https; and every
// field whose name starts with "x-test-" or has a '_', one echo per field, in
// arrival order. The default body is
// "NAME METHOD TARGET\n" (TARGET as received, query included), followed, if
// the request declared a body (Content-Length or Transfer-Encoding, even for
// zero bytes), by "body-bytes=N body-crc=HEX\n" with HEX from Crc32Hex() in
// http_wire.h.
//
// Query parameters steer one request (they combine; unknown ones are ignored):
//   status=N     respond with status N (200..599)
//   delay_ms=N   wait N ms before responding
//   size=N       body is N bytes of 'x' instead of the text
//   chunked=1    chunked response, written as 4 chunks 2 ms apart
//   gap_ms=N     with chunked=1: N ms between the chunks instead (0..60000)
//   trailers=1   with chunked=1: the last chunk carries the trailer field
//                "x-test-trailer: done"
// Trailer fields of a chunked request are echoed as "x-echo-trailer-<name>".
//   close=1      "connection: close", then close after the response
//   hang=1       never respond; close only when the client does
//   reset=1      close without responding, with an RST (SO_LINGER 0)
//   timeout_next=1 answer as usual (keep-alive), then answer the next
//                request on the connection "408 Request Timeout" with
//                "connection: close" and close: an idle timeout (Node's,
//                Apache's) that raced the reuse
//   drop_next=1  answer as usual (keep-alive), then close the connection
//                without a word when the next request on it arrives: the
//                race of a keep-alive timeout with a reused connection
//   close_reset=1 a body delimited by the close (no length), then an RST
//                (SO_LINGER 0) in place of the FIN
//   early=1      as soon as the head is in and before its body is read:
//                "403", "connection: close", the body "early answer\n", then
//                close at once (the unread body makes the kernel reset the
//                connection): an origin refusing an upload it will not take
//   midway=1     "content-length: 1000", 10 body bytes, then close; with
//                chunked=1: a chunked head and one 10-byte chunk, then close
//   smuggle=1    after the response, in the same write, a second response
//                nobody asked for ("...\r\n\r\nsmuggled"): bytes past the
//                framing that must never reach another request
//   json=1       "content-type: application/json" and the body
//                {"upstream":"NAME","method":"METHOD","target":"TARGET",
//                 "secret":"s3cr3t","nested":{"a":[1,2.50,{"b":null}]}}
//                (one line, no newline); with size=N, a last field
//                "pad" holding N 'x' characters
//   echo=1       the body is the request body as received (framing
//                removed), with the request's content-type (default
//                application/octet-stream)
// For caches (values as written, no percent-decoding; use ',' not spaces):
//   cc=V         "cache-control: V" (e.g. cc=public,max-age=60)
//   etag=V       "etag: \"V\""; a request whose If-None-Match lists it
//                (or is *) gets 304 with no body
//   lm=1         "last-modified: Mon, 02 Jan 2023 03:04:05 GMT"; a request
//                with If-Modified-Since (and no If-None-Match) gets 304
//   vary=V       "vary: V"
//   cookie=1     "set-cookie: session=abc"
//   rid=V        "x-request-id: V" (an upstream's own request id)
//   date=1       "date:" now
// `GET /__stats` answers "requests=N": complete requests received by this
// process (including hang/reset ones), /__stats itself excluded.
//
// Requests on one connection are answered strictly in order (pipelining).
// `Expect: 100-continue` gets an interim 100 when the body is still due.
// Malformed requests get 400 (the reason in the body) and the connection is
// closed.
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/flags.h"
#include "tests/harness/http_wire.h"

namespace sluice::testing {
namespace {

constexpr int kResponseChunks = 4;
constexpr int kChunkGapMs = 2;
constexpr int kLingerTimeoutMs =
    5000;  // after our FIN, wait this long for the peer's
constexpr size_t kReadBytes = 64 * 1024;
constexpr absl::string_view kEchoedHeaders[] = {
    "x-forwarded-for",   "x-forwarded-proto",
    "x-request-id",      "host",
    "connection",        "te",
    "transfer-encoding", "content-length",
    "x-consumer-name",   "x-consumer-groups",
    "x-anonymous-consumer", "authorization",
    "apikey",            "traceparent",
    "tracestate",        "x-forwarded-host",
    "x-forwarded-port",  "forwarded",
    "x-forwarded-prefix",
    "max-forwards",      "range",
    "if-range",          "accept-encoding",
    "x-real-ip",         "via",
    "x-forwarded-client-cert", "x-forwarded-ssl",
    "front-end-https",
};

// What one request asked for through its query parameters.
struct ResponsePlan {
  int status = 200;
  int delay_ms = 0;
  bool has_size = false;
  size_t size = 0;
  bool chunked = false;
  int gap_ms = kChunkGapMs;
  bool trailers = false;
  bool close = false;
  bool hang = false;
  bool reset = false;
  bool midway = false;
  bool early = false;
  bool close_reset = false;
  bool smuggle = false;
  bool drop_next = false;
  bool timeout_next = false;
  bool json = false;
  bool echo = false;
  std::string cache_control;
  std::string request_id;  // rid=
  std::string etag;
  bool last_modified = false;
  std::string vary;
  bool cookie = false;
  bool date = false;
};

// `text` as a JSON string (quotes, backslashes and control bytes escaped).
std::string JsonString(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppend(&out, "\\u00", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

absl::string_view PathOf(absl::string_view target) {
  return target.substr(0, target.find('?'));
}

// --defaults: query parameters applied to every request before its own
// (so one server of several can be made to fail, hang or be slow).
std::string* const g_default_query = new std::string();

absl::StatusOr<ResponsePlan> ParsePlan(absl::string_view target) {
  ResponsePlan plan;
  size_t q = target.find('?');
  std::string query = *g_default_query;
  if (q != absl::string_view::npos) absl::StrAppend(&query, "&", target.substr(q + 1));
  for (absl::string_view param : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(param, absl::MaxSplits('=', 1));
    const absl::string_view key = kv.first;
    const absl::string_view value = kv.second;
    auto integer = [&](int64_t min, int64_t max, int64_t* out) -> absl::Status {
      if (!absl::SimpleAtoi(value, out) || *out < min || *out > max) {
        return absl::InvalidArgumentError(
            absl::StrCat("query parameter ", key, "=", value,
                         ": want an integer in [", min, ", ", max, "]"));
      }
      return absl::OkStatus();
    };
    auto flag = [&](bool* out) -> absl::Status {
      if (value.empty() || value == "1" || value == "true") {
        *out = true;
      } else if (value == "0" || value == "false") {
        *out = false;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("query parameter ", key, "=", value, ": want 1 or 0"));
      }
      return absl::OkStatus();
    };
    int64_t n = 0;
    absl::Status status;
    if (key == "status") {
      status = integer(200, 599, &n);
      plan.status = static_cast<int>(n);
    } else if (key == "delay_ms") {
      status = integer(0, 600000, &n);
      plan.delay_ms = static_cast<int>(n);
    } else if (key == "size") {
      status = integer(0, int64_t{1} << 30, &n);
      plan.has_size = true;
      plan.size = static_cast<size_t>(n);
    } else if (key == "chunked") {
      status = flag(&plan.chunked);
    } else if (key == "gap_ms") {
      status = integer(0, 60000, &n);
      plan.gap_ms = static_cast<int>(n);
    } else if (key == "trailers") {
      status = flag(&plan.trailers);
    } else if (key == "close") {
      status = flag(&plan.close);
    } else if (key == "hang") {
      status = flag(&plan.hang);
    } else if (key == "reset") {
      status = flag(&plan.reset);
    } else if (key == "midway") {
      status = flag(&plan.midway);
    } else if (key == "early") {
      status = flag(&plan.early);
    } else if (key == "close_reset") {
      status = flag(&plan.close_reset);
    } else if (key == "smuggle") {
      status = flag(&plan.smuggle);
    } else if (key == "drop_next") {
      status = flag(&plan.drop_next);
    } else if (key == "timeout_next") {
      status = flag(&plan.timeout_next);
    } else if (key == "json") {
      status = flag(&plan.json);
    } else if (key == "echo") {
      status = flag(&plan.echo);
    } else if (key == "cc") {
      plan.cache_control = std::string(value);
    } else if (key == "rid") {
      plan.request_id = std::string(value);
    } else if (key == "etag") {
      plan.etag = absl::StrCat("\"", value, "\"");
    } else if (key == "lm") {
      status = flag(&plan.last_modified);
    } else if (key == "vary") {
      plan.vary = std::string(value);
    } else if (key == "cookie") {
      status = flag(&plan.cookie);
    } else if (key == "date") {
      status = flag(&plan.date);
    }
    if (!status.ok()) return status;
  }
  return plan;
}

absl::string_view ReasonPhrase(int status) {
  static const auto* const kReasons = new std::map<int, absl::string_view>{
      {200, "OK"},
      {201, "Created"},
      {202, "Accepted"},
      {204, "No Content"},
      {206, "Partial Content"},
      {301, "Moved Permanently"},
      {302, "Found"},
      {304, "Not Modified"},
      {400, "Bad Request"},
      {401, "Unauthorized"},
      {403, "Forbidden"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {408, "Request Timeout"},
      {413, "Content Too Large"},
      {429, "Too Many Requests"},
      {500, "Internal Server Error"},
      {501, "Not Implemented"},
      {502, "Bad Gateway"},
      {503, "Service Unavailable"},
      {504, "Gateway Timeout"},
  };
  auto it = kReasons->find(status);
  return it == kReasons->end() ? absl::string_view("Status") : it->second;
}

class OriginServer;

// Timers to the microsecond, from the clock as it is when they are armed
// (not as cached at the top of the loop iteration): delay_ms never fires early.
event_base* NewEventBase() {
  event_config* config = event_config_new();
  event_config_set_flag(config, EVENT_BASE_FLAG_PRECISE_TIMER);
  event_config_set_flag(config, EVENT_BASE_FLAG_NO_CACHE_TIME);
  event_base* base = event_base_new_with_config(config);
  event_config_free(config);
  return base;
}

// One accepted connection. Owned by OriginServer; loop thread only.
// Handlers may Close() the connection; the static trampolines then hand it
// back to the server to be freed, so nothing is freed under its own callback.
class Connection {
 public:
  Connection(OriginServer& server, int fd);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void Start();
  bool closed() const { return closed_; }

 private:
  enum class Phase {
    kIdle,       // ready for the next queued request once output is flushed
    kDelaying,   // timer runs until the response is due
    kStreaming,  // timer spaces out the remaining chunks
    kHanging,    // never responding; waiting for the client to close
    kLingering,  // last response sent; FIN after flush, then drain to EOF
  };
  struct Pending {
    Http1Message request;
    std::string parse_error;  // non-empty: answer 400 and close
  };

  static void OnReadable(evutil_socket_t, short, void* arg);
  static void OnWritable(evutil_socket_t, short, void* arg);
  static void OnTimer(evutil_socket_t, short, void* arg);

  void HandleRead();
  void HandleWrite();
  void HandleTimer();
  void ParseRequests();
  // Starts queued requests while the connection is idle and flushed.
  void Advance();
  void Answer(const Pending& pending);
  void Respond(const Http1Message& request, const ResponsePlan& plan);
  std::string Head(
      int status, const Http1Message& request,
      const std::vector<std::pair<std::string, std::string>>& extra,
      absl::string_view content_type = "text/plain") const;
  // Ends the current response: close it if asked, otherwise go idle.
  void FinishResponse(bool close_after);
  void Write(absl::string_view bytes);
  void Flush();
  void ArmTimer(int ms);
  void ResetConnection();
  // early=1: 403 and close, whatever of the request is still unread.
  void AnswerEarly(const Http1Message& request);
  void Close();

  OriginServer& server_;
  int fd_;
  event* read_event_ = nullptr;
  event* write_event_ = nullptr;
  event* timer_event_ = nullptr;
  Http1Reader reader_{Http1Reader::Mode::kRequest};
  std::deque<Pending> pending_;
  std::string out_;
  size_t out_pos_ = 0;
  Phase phase_ = Phase::kIdle;
  // The delayed request (kDelaying) or the remaining chunk writes (kStreaming).
  Http1Message delayed_request_;
  ResponsePlan delayed_plan_;
  std::deque<std::string> chunks_;
  int chunk_gap_ms_ = kChunkGapMs;
  bool close_after_stream_ = false;
  bool drop_next_ = false;  // close when the next request arrives (drop_next=1)
  bool timeout_next_ = false;  // 408 and close at the next request (timeout_next=1)
  bool peer_eof_ = false;
  bool shut_down_write_ = false;
  bool parse_failed_ = false;
  uint64_t messages_parsed_ = 0;
  uint64_t continue_sent_for_ =
      UINT64_MAX;  // messages_parsed_ value at the last 100
  bool closed_ = false;
};

// Listens on 127.0.0.1 and owns the connections. Loop thread only.
class OriginServer {
 public:
  explicit OriginServer(std::string name) : name_(std::move(name)) {}
  ~OriginServer();

  // Binds and prints the "listening on" line. Errors name the cause.
  absl::Status Listen(int port, const std::string& address = "127.0.0.1");
  // Serves until SIGTERM or SIGINT.
  void Run();

  event_base* base() { return base_; }
  const std::string& name() const { return name_; }
  uint64_t requests() const { return requests_; }
  void CountRequest() { ++requests_; }
  void FreeIfClosed(Connection* connection);

 private:
  static void OnAccept(evutil_socket_t, short, void* arg);
  static void OnSignal(evutil_socket_t, short, void* arg);

  std::string name_;
  event_base* base_ = NewEventBase();
  int listen_fd_ = -1;
  event* accept_event_ = nullptr;
  std::vector<event*> signal_events_;
  std::map<Connection*, std::unique_ptr<Connection>> connections_;
  uint64_t requests_ = 0;
};

// --- Connection ---

Connection::Connection(OriginServer& server, int fd)
    : server_(server), fd_(fd) {
  read_event_ =
      event_new(server_.base(), fd_, EV_READ | EV_PERSIST, &OnReadable, this);
  write_event_ =
      event_new(server_.base(), fd_, EV_WRITE | EV_PERSIST, &OnWritable, this);
  timer_event_ = evtimer_new(server_.base(), &OnTimer, this);
}

Connection::~Connection() { Close(); }

void Connection::Start() { event_add(read_event_, nullptr); }

void Connection::OnReadable(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Connection*>(arg);
  self->HandleRead();
  self->server_.FreeIfClosed(self);
}

void Connection::OnWritable(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Connection*>(arg);
  self->HandleWrite();
  self->server_.FreeIfClosed(self);
}

void Connection::OnTimer(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Connection*>(arg);
  self->HandleTimer();
  self->server_.FreeIfClosed(self);
}

void Connection::HandleRead() {
  char buf[kReadBytes];
  while (!closed_) {
    ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      Close();  // ECONNRESET and friends: nobody left to answer
      return;
    }
    if (n == 0) {
      peer_eof_ = true;
      event_del(read_event_);
      // A hanging or finished connection ends when the client closes it.
      if (phase_ == Phase::kHanging || phase_ == Phase::kLingering) {
        Close();
        return;
      }
      reader_.FeedEof();
      break;
    }
    // Hanging and lingering connections discard whatever else arrives.
    if (phase_ == Phase::kHanging || phase_ == Phase::kLingering) continue;
    reader_.Feed(absl::string_view(buf, static_cast<size_t>(n)));
  }
  ParseRequests();
  Advance();
}

void Connection::HandleWrite() {
  Flush();
  Advance();
}

void Connection::HandleTimer() {
  if (closed_) return;
  switch (phase_) {
    case Phase::kDelaying:
      phase_ = Phase::kIdle;
      Respond(delayed_request_, delayed_plan_);
      break;
    case Phase::kStreaming:
      if (chunks_.empty()) {  // Respond() never streams without a chunk left
        std::fprintf(stderr,
                     "upstream_server: bug: streaming with no chunk left\n");
        std::abort();
      }
      Write(chunks_.front());
      chunks_.pop_front();
      if (chunks_.empty()) {
        FinishResponse(close_after_stream_);
      } else {
        ArmTimer(chunk_gap_ms_);
      }
      break;
    case Phase::kLingering:
      Close();  // the peer never closed its side
      return;
    default:
      break;
  }
  Advance();
}

void Connection::ParseRequests() {
  if (parse_failed_ || closed_) return;
  while (true) {
    Pending pending;
    switch (reader_.Next(&pending.request)) {
      case Http1Reader::Result::kMessage:
        ++messages_parsed_;
        if (PathOf(pending.request.target) != "/__stats")
          server_.CountRequest();
        pending_.push_back(std::move(pending));
        continue;
      case Http1Reader::Result::kError:
        parse_failed_ = true;
        pending.parse_error = reader_.error();
        pending_.push_back(std::move(pending));
        return;
      case Http1Reader::Result::kNeedMore:
      case Http1Reader::Result::kClosed:
        return;
    }
  }
}

void Connection::Advance() {
  while (!closed_ && phase_ == Phase::kIdle && out_pos_ == out_.size()) {
    if (pending_.empty()) {
      if (peer_eof_) {
        Close();  // everything the client sent is answered
        return;
      }
      const Http1Message* head = reader_.head_in_progress();
      if (head != nullptr && PathOf(head->target) != "/__stats") {
        absl::StatusOr<ResponsePlan> plan = ParsePlan(head->target);
        if (plan.ok() && plan->early) {
          server_.CountRequest();
          AnswerEarly(*head);
          return;
        }
      }
      if (head != nullptr && head->HasToken("expect", "100-continue") &&
          continue_sent_for_ != messages_parsed_) {
        continue_sent_for_ = messages_parsed_;
        Write("HTTP/1.1 100 Continue\r\n\r\n");
      }
      return;
    }
    Pending next = std::move(pending_.front());
    pending_.pop_front();
    Answer(next);
  }
}

void Connection::Answer(const Pending& pending) {
  if (!pending.parse_error.empty()) {
    std::string body = absl::StrCat("bad request: ", pending.parse_error, "\n");
    Write(absl::StrCat(Head(400, pending.request,
                            {{"content-length", absl::StrCat(body.size())},
                             {"connection", "close"}}),
                       body));
    FinishResponse(/*close_after=*/true);
    return;
  }
  if (drop_next_) {
    Close();
    return;
  }
  if (timeout_next_) {
    Write("HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
    FinishResponse(/*close_after=*/true);
    return;
  }
  const Http1Message& request = pending.request;
  absl::StatusOr<ResponsePlan> plan = ResponsePlan();
  if (PathOf(request.target) != "/__stats") plan = ParsePlan(request.target);
  if (plan.ok() && plan->drop_next) drop_next_ = true;
  if (plan.ok() && plan->timeout_next) timeout_next_ = true;
  if (!plan.ok()) {
    std::string body =
        absl::StrCat("bad request: ", plan.status().message(), "\n");
    bool close_after = !request.KeepAlive();
    std::vector<std::pair<std::string, std::string>> extra = {
        {"content-length", absl::StrCat(body.size())}};
    if (close_after) extra.emplace_back("connection", "close");
    Write(absl::StrCat(Head(400, request, extra), body));
    FinishResponse(close_after);
    return;
  }
  if (plan->reset) {
    ResetConnection();
    return;
  }
  if (plan->early) {  // the body came with the head: answered as if it had not
    AnswerEarly(request);
    return;
  }
  if (plan->hang) {
    phase_ = Phase::kHanging;
    return;
  }
  if (plan->delay_ms > 0) {
    phase_ = Phase::kDelaying;
    delayed_request_ = request;
    delayed_plan_ = *plan;
    ArmTimer(plan->delay_ms);
    return;
  }
  Respond(request, *plan);
}

std::string Connection::Head(
    int status, const Http1Message& request,
    const std::vector<std::pair<std::string, std::string>>& extra,
    absl::string_view content_type) const {
  std::string head = absl::StrCat(
      "HTTP/1.1 ", status, " ", ReasonPhrase(status),
      "\r\nx-upstream: ", server_.name(), "\r\ncontent-type: ", content_type,
      "\r\n");
  for (const auto& [name, value] : extra)
    absl::StrAppend(&head, name, ": ", value, "\r\n");
  for (absl::string_view name : kEchoedHeaders) {
    if (request.HasHeader(name)) {
      absl::StrAppend(&head, "x-echo-", name, ": ", request.Header(name),
                      "\r\n");
    }
  }
  for (const auto& [name, value] : request.headers) {
    if (absl::StartsWith(name, "x-test-") || absl::StrContains(name, "_")) {
      absl::StrAppend(&head, "x-echo-", name, ": ", value, "\r\n");
    }
  }
  for (const auto& [name, value] : request.trailers) {
    absl::StrAppend(&head, "x-echo-trailer-", name, ": ", value, "\r\n");
  }
  head += "\r\n";
  return head;
}

void Connection::Respond(const Http1Message& request,
                         const ResponsePlan& plan) {
  std::string body;
  std::string content_type = "text/plain";
  if (PathOf(request.target) == "/__stats") {
    body = absl::StrCat("requests=", server_.requests());
  } else if (plan.json) {
    content_type = "application/json";
    body = absl::StrCat("{\"upstream\":", JsonString(server_.name()),
                        ",\"method\":", JsonString(request.method),
                        ",\"target\":", JsonString(request.target),
                        ",\"secret\":\"s3cr3t\",\"nested\":{\"a\":[1,2.50,{\"b\":null}]}");
    if (plan.has_size) absl::StrAppend(&body, ",\"pad\":\"", std::string(plan.size, 'x'), "\"");
    body.push_back('}');
  } else if (plan.echo) {
    content_type = request.HasHeader("content-type") ? request.Header("content-type")
                                                     : "application/octet-stream";
    body = request.body;
  } else if (plan.has_size) {
    body.assign(plan.size, 'x');
  } else {
    body = absl::StrCat(server_.name(), " ", request.method, " ",
                        request.target, "\n");
    if (request.has_body_framing) {
      absl::StrAppend(&body, "body-bytes=", request.body.size(),
                      " body-crc=", Crc32Hex(request.body), "\n");
    }
  }
  const bool close_after = plan.close || plan.midway || !request.KeepAlive();
  std::vector<std::pair<std::string, std::string>> extra;
  int status = plan.status;
  if (!plan.cache_control.empty()) extra.emplace_back("cache-control", plan.cache_control);
  if (!plan.vary.empty()) extra.emplace_back("vary", plan.vary);
  if (!plan.request_id.empty()) extra.emplace_back("x-request-id", plan.request_id);
  if (plan.cookie) extra.emplace_back("set-cookie", "session=abc");
  if (plan.date) {
    char date[64];
    time_t now = time(nullptr);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    extra.emplace_back("date", date);
  }
  if (plan.last_modified) {
    extra.emplace_back("last-modified", "Mon, 02 Jan 2023 03:04:05 GMT");
    if (status == 200 && request.HasHeader("if-modified-since") &&
        !request.HasHeader("if-none-match")) {
      status = 304;
    }
  }
  if (!plan.etag.empty()) {
    extra.emplace_back("etag", plan.etag);
    if (status == 200 && request.HasHeader("if-none-match")) {
      std::string inm = std::string(request.Header("if-none-match"));
      if (absl::StrContains(inm, plan.etag) || inm == "*") status = 304;
    }
  }
  if (plan.close_reset) {
    extra.emplace_back("connection", "close");
    Write(absl::StrCat(Head(status, request, extra, content_type), body));
    ResetConnection();
    return;
  }
  if (plan.midway) {
    extra.emplace_back(plan.chunked ? "transfer-encoding" : "content-length",
                       plan.chunked ? "chunked" : "1000");
    extra.emplace_back("connection", "close");
    Write(absl::StrCat(Head(status, request, extra, content_type),
                       plan.chunked ? "a\r\n" : "", std::string(10, 'x'),
                       plan.chunked ? "\r\n" : ""));
    FinishResponse(/*close_after=*/true);
    return;
  }
  const bool no_body_status = status == 204 || status == 304;
  const bool send_body = !no_body_status && request.method != "HEAD";
  if (!no_body_status) {
    if (plan.chunked) {
      extra.emplace_back("transfer-encoding", "chunked");
      if (plan.trailers) extra.emplace_back("trailer", "x-test-trailer");
    } else {
      extra.emplace_back("content-length", absl::StrCat(body.size()));
    }
  }
  if (close_after) extra.emplace_back("connection", "close");
  const std::string smuggled =
      plan.smuggle ? "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled" : "";
  if (!send_body) {
    Write(absl::StrCat(Head(status, request, extra, content_type), smuggled));
    FinishResponse(close_after);
    return;
  }
  if (!plan.chunked) {
    // Head and body in one write: a process killed mid-response cuts whole
    // responses, not a response between its head and its body.
    Write(absl::StrCat(Head(status, request, extra, content_type), body, smuggled));
    FinishResponse(close_after);
    return;
  }
  Write(Head(status, request, extra, content_type));
  // Separate writes a few ms apart, so the chunks reach the proxy as separate
  // reads rather than one coalesced segment.
  size_t pieces =
      std::max<size_t>(1, std::min<size_t>(kResponseChunks, body.size()));
  size_t base = body.size() / pieces, extra_bytes = body.size() % pieces,
         at = 0;
  for (size_t i = 0; i < pieces && !body.empty(); ++i) {
    size_t len = base + (i < extra_bytes ? 1 : 0);
    chunks_.push_back(absl::StrCat(absl::Hex(len), "\r\n",
                                   absl::string_view(body).substr(at, len),
                                   "\r\n"));
    at += len;
  }
  chunks_.push_back(plan.trailers ? "0\r\nx-test-trailer: done\r\n\r\n" : "0\r\n\r\n");
  Write(chunks_.front());
  chunks_.pop_front();
  if (chunks_.empty()) {  // an empty body: the last chunk was all there was
    FinishResponse(close_after);
    return;
  }
  phase_ = Phase::kStreaming;
  chunk_gap_ms_ = plan.gap_ms;
  close_after_stream_ = close_after;
  ArmTimer(chunk_gap_ms_);
}

void Connection::FinishResponse(bool close_after) {
  if (closed_) return;
  if (!close_after) {
    phase_ = Phase::kIdle;
    return;
  }
  // Closing gracefully: FIN once the output is flushed (Flush() does it),
  // then read and discard until the client closes. Closing with unread input
  // would send an RST that could destroy the response in flight.
  phase_ = Phase::kLingering;
  pending_.clear();
  Flush();
}

void Connection::Write(absl::string_view bytes) {
  if (closed_) return;
  out_.append(bytes.data(), bytes.size());
  Flush();
}

void Connection::Flush() {
  while (!closed_ && out_pos_ < out_.size()) {
    ssize_t n =
        send(fd_, out_.data() + out_pos_, out_.size() - out_pos_, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        event_add(write_event_, nullptr);
        return;
      }
      Close();
      return;
    }
    out_pos_ += static_cast<size_t>(n);
  }
  if (closed_) return;
  out_.clear();
  out_pos_ = 0;
  event_del(write_event_);
  if (phase_ == Phase::kLingering && !shut_down_write_) {
    shut_down_write_ = true;
    shutdown(fd_, SHUT_WR);
    if (peer_eof_) {
      Close();
      return;
    }
    event_add(read_event_, nullptr);
    ArmTimer(kLingerTimeoutMs);
  }
}

void Connection::ArmTimer(int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  evtimer_add(timer_event_, &tv);
}

void Connection::ResetConnection() {
  linger lin{1, 0};
  setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin));
  Close();
}

void Connection::AnswerEarly(const Http1Message& request) {
  const std::string body = "early answer\n";
  Write(absl::StrCat(
      Head(403, request, {{"content-length", absl::StrCat(body.size())}, {"connection", "close"}}),
      body));
  Close();
}

void Connection::Close() {
  if (closed_) return;
  closed_ = true;
  for (event** e : {&read_event_, &write_event_, &timer_event_}) {
    if (*e != nullptr) {
      event_free(*e);
      *e = nullptr;
    }
  }
  close(fd_);
  fd_ = -1;
}

// --- OriginServer ---

OriginServer::~OriginServer() {
  connections_.clear();
  for (event* e : signal_events_) event_free(e);
  if (accept_event_ != nullptr) event_free(accept_event_);
  if (listen_fd_ >= 0) close(listen_fd_);
  event_base_free(base_);
}

absl::Status OriginServer::Listen(int port, const std::string& address) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0)
    return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, address.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("--address ", address, ": not IPv4"));
  }
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError(
        absl::StrCat("bind ", address, ":", port, ": ", strerror(errno)));
  }
  if (listen(listen_fd_, 1024) != 0) {
    return absl::InternalError(absl::StrCat("listen: ", strerror(errno)));
  }
  socklen_t len = sizeof(addr);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  accept_event_ =
      event_new(base_, listen_fd_, EV_READ | EV_PERSIST, &OnAccept, this);
  event_add(accept_event_, nullptr);
  for (int sig : {SIGTERM, SIGINT}) {
    event* e = evsignal_new(base_, sig, &OnSignal, this);
    event_add(e, nullptr);
    signal_events_.push_back(e);
  }
  std::printf("listening on %s:%d\n", address.c_str(), ntohs(addr.sin_port));
  std::fflush(stdout);
  return absl::OkStatus();
}

void OriginServer::Run() { event_base_dispatch(base_); }

void OriginServer::FreeIfClosed(Connection* connection) {
  if (connection->closed()) connections_.erase(connection);
}

void OriginServer::OnAccept(evutil_socket_t fd, short, void* arg) {
  auto* self = static_cast<OriginServer*>(arg);
  while (true) {
    int client = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (client < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        std::fprintf(stderr, "upstream_server: accept: %s\n", strerror(errno));
      }
      return;
    }
    int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto connection = std::make_unique<Connection>(*self, client);
    Connection* raw = connection.get();
    self->connections_.emplace(raw, std::move(connection));
    raw->Start();
  }
}

void OriginServer::OnSignal(evutil_socket_t, short, void* arg) {
  event_base_loopbreak(static_cast<OriginServer*>(arg)->base_);
}

int Main(int argc, char** argv) {
  absl::StatusOr<ParsedFlags> flags =
      ParseFlags(argc, argv, {"port", "name", "defaults", "address"}, {});
  if (!flags.ok()) {
    std::fprintf(stderr,
                 "upstream_server: %s\nusage: upstream_server [--port N] "
                 "[--name NAME] [--defaults QUERY] [--address IPv4]\n",
                 std::string(flags.status().message()).c_str());
    return 2;
  }
  int port = 0;
  if (auto it = flags->values.find("port"); it != flags->values.end()) {
    if (!absl::SimpleAtoi(it->second, &port) || port < 0 || port > 65535) {
      std::fprintf(stderr,
                   "upstream_server: --port: '%s' is not a port number\n",
                   it->second.c_str());
      return 2;
    }
  }
  if (auto it = flags->values.find("defaults"); it != flags->values.end()) {
    *g_default_query = it->second;
    if (!ParsePlan("/").ok()) {
      std::fprintf(stderr, "upstream_server: --defaults: %s\n",
                   std::string(ParsePlan("/").status().message()).c_str());
      return 2;
    }
  }
  std::string name = "upstream";
  if (auto it = flags->values.find("name"); it != flags->values.end())
    name = it->second;
  if (name.empty() || name.find_first_of("\r\n") != std::string::npos) {
    std::fprintf(stderr,
                 "upstream_server: --name must be a non-empty single line\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  OriginServer server(name);
  std::string address = "127.0.0.1";
  if (auto it = flags->values.find("address"); it != flags->values.end()) address = it->second;
  if (absl::Status status = server.Listen(port, address); !status.ok()) {
    std::fprintf(stderr, "upstream_server: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  server.Run();
  return 0;
}

}  // namespace
}  // namespace sluice::testing

int main(int argc, char** argv) { return sluice::testing::Main(argc, argv); }
