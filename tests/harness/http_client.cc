#include "tests/harness/http_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace sluice::testing {
namespace {

constexpr absl::Duration kAbortPollInterval = absl::Milliseconds(20);
constexpr size_t kMaxRecordedErrors = 20;

std::string Errno(absl::string_view what) {
  return absl::StrCat(what, ": ", strerror(errno));
}

bool Aborted(const std::atomic<bool>* flag) {
  return flag != nullptr && flag->load(std::memory_order_relaxed);
}

enum class Wait { kReady, kTimeout, kAborted };

// Waits for `events` on `fd` until `deadline`, waking every
// kAbortPollInterval to check `abort` when one is given.
Wait WaitFd(int fd, short events, absl::Time deadline,
            const std::atomic<bool>* abort) {
  while (true) {
    if (Aborted(abort)) return Wait::kAborted;
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return Wait::kTimeout;
    if (abort != nullptr) left = std::min(left, kAbortPollInterval);
    pollfd p{fd, events, 0};
    int ms = static_cast<int>(
        absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))));
    int r = poll(&p, 1, std::max(ms, 1));
    if (r > 0) return Wait::kReady;
    if (r < 0 && errno != EINTR)
      return Wait::kReady;  // let the caller's I/O report it
  }
}

bool SplitHostPort(const std::string& host_port, std::string* host,
                   std::string* port) {
  size_t colon = host_port.rfind(':');
  if (colon == std::string::npos || colon + 1 == host_port.size()) return false;
  *host = host_port.substr(0, colon);
  *port = host_port.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return !host->empty();
}

// A connected non-blocking TCP socket with TCP_NODELAY, or -1 and *error.
int Dial(const std::string& host_port, absl::Time deadline,
         const std::atomic<bool>* abort, std::string* error) {
  std::string host, port;
  if (!SplitHostPort(host_port, &host, &port)) {
    *error = absl::StrCat("'", host_port, "' is not host:port");
    return -1;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addrs = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &addrs);
      rc != 0) {
    *error = absl::StrCat("resolve ", host_port, ": ", gai_strerror(rc));
    return -1;
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owned(addrs,
                                                           &freeaddrinfo);
  *error = absl::StrCat("connect ", host_port, ": no address");
  for (addrinfo* a = addrs; a != nullptr; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    a->ai_protocol);
    if (fd < 0) {
      *error = Errno("socket");
      continue;
    }
    int rc = connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      Wait w = WaitFd(fd, POLLOUT, deadline, abort);
      if (w != Wait::kReady) {
        close(fd);
        *error = w == Wait::kAborted
                     ? "aborted"
                     : absl::StrCat("connect ", host_port, ": timed out");
        return -1;
      }
      int so_error = 0;
      socklen_t len = sizeof(so_error);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
      errno = so_error;
      rc = so_error == 0 ? 0 : -1;
    }
    if (rc != 0) {
      *error = Errno(absl::StrCat("connect ", host_port));
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    error->clear();
    return fd;
  }
  return -1;
}

// Writes all of `bytes`; false and *error on failure or deadline.
bool SendAll(int fd, absl::string_view bytes, absl::Time deadline,
             const std::atomic<bool>* abort, std::string* error) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n =
        send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n >= 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      *error = absl::StrCat(Errno("send"), " (after ", sent, " of ",
                            bytes.size(), " bytes)");
      return false;
    }
    Wait w = WaitFd(fd, POLLOUT, deadline, abort);
    if (w != Wait::kReady) {
      *error = w == Wait::kAborted
                   ? "aborted"
                   : absl::StrCat("send: timed out after ", sent, " of ",
                                  bytes.size(), " bytes");
      return false;
    }
  }
  return true;
}

void FillResponse(const Http1Message& message, HttpResponse* response) {
  response->status = message.status;
  response->headers.clear();
  for (const auto& [name, value] : message.headers)
    response->headers[name] = value;
  response->body = message.body;
}

bool HasHeader(const Headers& headers, absl::string_view name) {
  for (const auto& [n, v] : headers) {
    if (absl::EqualsIgnoreCase(n, name)) return true;
  }
  return false;
}

}  // namespace

std::string HttpResponse::header(const std::string& name) const {
  auto it = headers.find(absl::AsciiStrToLower(name));
  return it == headers.end() ? "" : it->second;
}

std::string FormatRequest(const std::string& host_port,
                          const std::string& method, const std::string& path,
                          const Headers& headers, const std::string& body,
                          bool connection_close) {
  std::string out = absl::StrCat(method, " ", path, " HTTP/1.1\r\n");
  if (!HasHeader(headers, "host"))
    absl::StrAppend(&out, "host: ", host_port, "\r\n");
  for (const auto& [name, value] : headers)
    absl::StrAppend(&out, name, ": ", value, "\r\n");
  const bool framed = HasHeader(headers, "content-length") ||
                      HasHeader(headers, "transfer-encoding");
  if (!framed && (!body.empty() || method == "POST" || method == "PUT" ||
                  method == "PATCH")) {
    absl::StrAppend(&out, "content-length: ", body.size(), "\r\n");
  }
  if (connection_close && !HasHeader(headers, "connection"))
    out += "connection: close\r\n";
  absl::StrAppend(&out, "\r\n", body);
  return out;
}

HttpResponse HttpGet(const std::string& host_port, const std::string& path,
                     const Headers& headers, absl::Duration timeout) {
  return HttpRequest(host_port, "GET", path, headers, "", timeout);
}

HttpResponse HttpRequest(const std::string& host_port,
                         const std::string& method, const std::string& path,
                         const Headers& headers, const std::string& body,
                         absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  HttpConnection connection(host_port,
                            {.reconnect = false, .connect_timeout = timeout});
  HttpResponse response;
  if (!connection.connected()) {
    response.error = connection.last_error();
    return response;
  }
  absl::Status sent = connection.Send(
      FormatRequest(host_port, method, path, headers, body, true),
      deadline - absl::Now());
  // Even if sending failed (the server may answer early and close), a
  // response may be waiting.
  response = connection.ReadResponse(method, deadline - absl::Now());
  if (!response.ok() && !sent.ok()) {
    response.error = absl::StrCat(sent.message(), "; then ", response.error);
  }
  return response;
}

int ConnectLoopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string SendRaw(const std::string& host_port, const std::string& bytes,
                    absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string error;
  int fd = Dial(host_port, deadline, nullptr, &error);
  if (fd < 0) return "";
  SendAll(fd, bytes, deadline, nullptr,
          &error);  // on failure, still read what came back
  std::string out;
  char buf[16384];
  while (true) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) break;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      break;  // reset: return what we have
    if (WaitFd(fd, POLLIN, deadline, nullptr) != Wait::kReady) break;
  }
  close(fd);
  return out;
}

// --- HttpConnection ---

HttpConnection::HttpConnection(std::string host_port)
    : HttpConnection(std::move(host_port), Options()) {}

HttpConnection::HttpConnection(std::string host_port, Options options)
    : host_port_(std::move(host_port)), options_(options) {
  Connect(absl::Now() + options_.connect_timeout);
}

HttpConnection::~HttpConnection() { Close(); }

bool HttpConnection::Connect(absl::Time deadline) {
  fd_ = Dial(host_port_, deadline, abort_flag_, &last_error_);
  if (fd_ < 0) return false;
  ++connections_opened_;
  responses_on_connection_ = 0;
  reader_ = Http1Reader(Http1Reader::Mode::kResponse);
  return true;
}

void HttpConnection::Disconnect(const std::string& why) {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  last_error_ = why;
  responses_on_connection_ = 0;
}

void HttpConnection::Close() { Disconnect("closed by the test"); }

bool HttpConnection::connected() const {
  if (fd_ < 0) return false;
  char c;
  ssize_t n = recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return true;  // unread bytes: still open as far as we know
  if (n == 0) return false;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

HttpResponse HttpConnection::Request(const std::string& method,
                                     const std::string& path,
                                     const Headers& headers,
                                     const std::string& body,
                                     absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  HttpResponse response;
  if (fd_ >= 0 && !connected()) {
    Disconnect("the peer closed the connection while it was idle");
  }
  if (fd_ < 0) {
    if (!options_.reconnect) {
      response.error = absl::StrCat("not connected: ", last_error_);
      return response;
    }
    if (!Connect(deadline)) {
      response.error = last_error_;
      return response;
    }
  }
  absl::Status sent =
      Send(FormatRequest(host_port_, method, path, headers, body, false),
           deadline - absl::Now());
  if (!sent.ok() && (fd_ < 0 || Aborted(abort_flag_))) {
    response.error = std::string(sent.message());
    return response;
  }
  // Even if sending failed (the server may answer early and close), a
  // response may be waiting.
  response = ReadResponse(method, deadline - absl::Now());
  if (!response.ok() && !sent.ok()) {
    response.error = absl::StrCat(sent.message(), "; then ", response.error);
  }
  return response;
}

absl::Status HttpConnection::Send(const std::string& bytes,
                                  absl::Duration timeout) {
  if (fd_ < 0)
    return absl::FailedPreconditionError(
        absl::StrCat("not connected: ", last_error_));
  std::string error;
  if (!SendAll(fd_, bytes, absl::Now() + timeout, abort_flag_, &error)) {
    // Keep the socket: the server may have answered (e.g. 413) before
    // closing, and ReadResponse() can still collect that.
    return absl::UnavailableError(error);
  }
  return absl::OkStatus();
}

HttpResponse HttpConnection::ReadResponse(const std::string& method,
                                          absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const bool head = method == "HEAD";
  HttpResponse response;
  if (fd_ < 0) {
    response.error = absl::StrCat("not connected: ", last_error_);
    return response;
  }
  bool eof = false;
  size_t bytes_read = 0;
  char buf[65536];
  while (true) {
    Http1Message message;
    switch (reader_.Next(&message, head)) {
      case Http1Reader::Result::kMessage:
        if (message.status >= 100 && message.status < 200 &&
            message.status != 101) {
          continue;  // interim response
        }
        FillResponse(message, &response);
        ++responses_on_connection_;
        if (eof || !message.KeepAlive()) {
          Disconnect(eof ? "the server closed the connection after a response"
                         : "the response said connection: close");
        }
        return response;
      case Http1Reader::Result::kError:
        FillResponse(message, &response);
        response.error = absl::StrCat("bad response from ", host_port_, ": ",
                                      reader_.error());
        Disconnect(response.error);
        return response;
      case Http1Reader::Result::kClosed:
        response.error = absl::StrCat(
            "connection closed by ", host_port_, " before a response",
            responses_on_connection_ > 0
                ? absl::StrCat(" (after ", responses_on_connection_,
                               " responses on this connection)")
                : "");
        Disconnect(response.error);
        return response;
      case Http1Reader::Result::kNeedMore:
        break;
    }
    ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      bytes_read += static_cast<size_t>(n);
      reader_.Feed(absl::string_view(buf, static_cast<size_t>(n)));
      continue;
    }
    if (n == 0) {
      eof = true;
      reader_.FeedEof();
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      Wait w = WaitFd(fd_, POLLIN, deadline, abort_flag_);
      if (w == Wait::kReady) continue;
      if (const Http1Message* partial = reader_.head_in_progress()) {
        FillResponse(*partial, &response);
      }
      response.error =
          w == Wait::kAborted
              ? "aborted"
              : absl::StrCat("timed out after ", absl::FormatDuration(timeout),
                             " waiting for a response from ", host_port_, " (",
                             bytes_read, " bytes received)");
      Disconnect(response.error);
      return response;
    }
    // A reset or similar: report it with whatever had arrived.
    std::string recv_error = Errno(absl::StrCat("recv from ", host_port_));
    reader_.FeedEof();
    Http1Message partial;
    if (reader_.Next(&partial, head) != Http1Reader::Result::kClosed) {
      FillResponse(partial, &response);
    }
    response.error =
        absl::StrCat(recv_error, " (", bytes_read, " bytes received)");
    Disconnect(response.error);
    return response;
  }
}

// --- LoadGenerator ---

LoadGenerator::LoadGenerator(Options options) : options_(std::move(options)) {}

LoadGenerator::~LoadGenerator() { Stop(); }

void LoadGenerator::Start() {
  if (!threads_.empty()) return;
  stop_ = false;
  for (int i = 0; i < options_.concurrency; ++i)
    threads_.emplace_back([this, i] { Run(i); });
}

void LoadGenerator::Stop() {
  stop_ = true;
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

LoadGenerator::Counts LoadGenerator::counts() const {
  absl::MutexLock lock(&mu_);
  return counts_;
}

void LoadGenerator::SleepUntil(absl::Time until) const {
  while (!stop_) {
    absl::Duration left = until - absl::Now();
    if (left <= absl::ZeroDuration()) return;
    absl::SleepFor(std::min(left, kAbortPollInterval));
  }
}

void LoadGenerator::RecordConnect(const std::string& error, int thread_index) {
  absl::MutexLock lock(&mu_);
  ++counts_.connections;
  if (error.empty()) return;
  ++counts_.failed;
  ++counts_.transport_errors;
  if (counts_.first_errors.size() < kMaxRecordedErrors) {
    counts_.first_errors.push_back(
        absl::StrCat("thread ", thread_index, ": ", error));
  }
}

void LoadGenerator::Record(const HttpResponse& response, bool reused,
                           int thread_index) {
  absl::MutexLock lock(&mu_);
  std::string description;
  if (!response.ok()) {
    ++counts_.failed;
    ++counts_.transport_errors;
    description = absl::StrCat(reused ? "reused" : "new",
                               " connection: ", response.error);
  } else {
    ++counts_.by_status[response.status];
    if (auto it = response.headers.find("x-upstream");
        it != response.headers.end()) {
      ++counts_.by_upstream[it->second];
    }
    if (response.status >= 200 && response.status < 300) {
      ++counts_.ok;
      return;
    }
    ++counts_.failed;
    description = absl::StrCat("status ", response.status, " (x-upstream: '",
                               response.header("x-upstream"), "', body: '",
                               response.body.substr(0, 100), "')");
  }
  if (counts_.first_errors.size() < kMaxRecordedErrors) {
    counts_.first_errors.push_back(
        absl::StrCat("thread ", thread_index, ": ", description));
  }
}

void LoadGenerator::Run(int thread_index) {
  std::unique_ptr<HttpConnection> connection;
  const Headers headers = {{"host", options_.host}};
  const absl::Duration interval =
      options_.rate_per_thread > 0 ? absl::Seconds(1) / options_.rate_per_thread
                                   : absl::ZeroDuration();
  absl::Time next = absl::Now();
  while (!stop_) {
    if (options_.rate_per_thread > 0) {
      SleepUntil(next);
      if (stop_) break;
      // After a stall, carry on at the rate rather than catching up in a burst.
      next = std::max(next, absl::Now() - interval) + interval;
    }
    if (connection == nullptr || !connection->connected()) {
      connection = std::make_unique<HttpConnection>(
          options_.host_port,
          HttpConnection::Options{.reconnect = false,
                                  .connect_timeout = options_.request_timeout});
      connection->set_abort_flag(&stop_);
      if (stop_) break;
      bool up = connection->connected();
      RecordConnect(up ? "" : connection->last_error(), thread_index);
      if (!up) {
        connection.reset();
        SleepUntil(absl::Now() +
                   absl::Milliseconds(10));  // no busy loop while it is down
        continue;
      }
    }
    const bool reused = connection->responses_on_connection() > 0;
    HttpResponse response = connection->Request("GET", options_.path, headers,
                                                "", options_.request_timeout);
    if (stop_ && !response.ok()) break;  // cut short by Stop(): not an outcome
    Record(response, reused, thread_index);
  }
}

int PacedLoadCounts::admitted() const {
  int n = 0;
  for (int a : admitted_by) n += a;
  return n;
}

std::string PacedLoadCounts::Describe() const {
  return absl::StrCat("admitted ", admitted(), " (", absl::StrJoin(admitted_by, "/"),
                      "), refused ", refused, ", other ", other);
}

PacedLoadCounts PacedLoad(const std::vector<std::string>& addresses,
                          const std::vector<double>& rates, absl::Duration duration,
                          const std::string& path, const Headers& headers) {
  std::vector<std::atomic<int>> admitted(addresses.size());
  std::atomic<int> refused{0}, other{0};
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  for (size_t i = 0; i < addresses.size(); ++i) {
    threads.emplace_back([&, i] {
      const absl::Duration every = absl::Seconds(1) / rates[i];
      for (int n = 0;; ++n) {
        const absl::Time at = start + every * n;
        if (at >= start + duration) return;
        absl::SleepFor(at - absl::Now());
        HttpResponse r = HttpGet(addresses[i], path, headers);
        if (r.status == 200) {
          ++admitted[i];
        } else if (r.status == 429) {
          ++refused;
        } else {
          ++other;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  PacedLoadCounts counts;
  for (const auto& a : admitted) counts.admitted_by.push_back(a.load());
  counts.refused = refused;
  counts.other = other;
  return counts;
}

}  // namespace sluice::testing
