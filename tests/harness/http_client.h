// A blocking HTTP/1.1 client for integration tests: raw sockets, strict
// parsing (http_wire.h), no retries it was not asked for. What a test sees is
// what came over the wire: a transport failure is reported in
// HttpResponse::error, never papered over.
//
// Free functions and HttpConnection are not shared between threads: each
// HttpConnection belongs to the thread that uses it. LoadGenerator runs its
// own threads; all of its methods may be called from any one thread, and
// counts() from any thread.
#ifndef SLUICE_TESTS_HARNESS_HTTP_CLIENT_H_
#define SLUICE_TESTS_HARNESS_HTTP_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tests/harness/http_wire.h"

namespace sluice::testing {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct HttpResponse {
  int status = 0;
  // Lower-case names; when a name repeats, the last value wins.
  std::map<std::string, std::string> headers;
  std::string body;  // chunk framing removed
  // Non-empty on transport or framing failure (connect, reset, timeout,
  // truncated or malformed response). Whatever did arrive is still filled in:
  // e.g. a response cut off mid-body has its status, headers and partial body.
  std::string error;

  bool ok() const { return error.empty(); }
  // The header's value, or "" when absent.
  std::string header(const std::string& name) const;
};

// Requests below send, in this order: the request line, `host: <host_port>`
// unless `headers` has a host, `headers` as given, `content-length` when the
// body is non-empty or the method is POST/PUT/PATCH (unless `headers` has a
// content-length or transfer-encoding: then `body` goes out as given, so a
// test can send a pre-chunked body, see EncodeChunked()), and for the
// one-shot functions `connection: close` unless `headers` has a connection.
// `timeout` bounds the whole exchange, connect included.

// One GET on a new connection.
HttpResponse HttpGet(const std::string& host_port, const std::string& path,
                     const Headers& headers = {},
                     absl::Duration timeout = absl::Seconds(10));

// One request on a new connection.
HttpResponse HttpRequest(const std::string& host_port,
                         const std::string& method, const std::string& path,
                         const Headers& headers, const std::string& body,
                         absl::Duration timeout = absl::Seconds(10));

// Sends `bytes` and returns everything read until the peer closes, resets or
// `timeout` passes (for malformed-request tests). Empty if connecting fails.
std::string SendRaw(const std::string& host_port, const std::string& bytes,
                    absl::Duration timeout = absl::Seconds(5));

// A blocking TCP socket connected to 127.0.0.1:`port`, or -1.
int ConnectLoopback(int port);

// The bytes of one request as the functions above send them.
std::string FormatRequest(const std::string& host_port,
                          const std::string& method, const std::string& path,
                          const Headers& headers, const std::string& body,
                          bool connection_close);

// A keep-alive connection used for a series of requests.
//
// Connects in the constructor. Once the connection is gone (the peer closed
// it, a response said "connection: close", or a request failed), Request()
// fails with an error, unless Options::reconnect: then the next Request()
// opens a new connection. A peer close noticed before a request is sent
// counts as "gone"; one noticed while waiting for the response is an error
// either way, and never retried.
class HttpConnection {
 public:
  struct Options {
    bool reconnect = false;
    absl::Duration connect_timeout = absl::Seconds(10);
  };

  explicit HttpConnection(std::string host_port);
  HttpConnection(std::string host_port, Options options);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  HttpResponse Request(const std::string& method, const std::string& path,
                       const Headers& headers = {},
                       const std::string& body = "",
                       absl::Duration timeout = absl::Seconds(10));

  // Lower level, for pipelining and requests sent in pieces: Send() writes
  // raw bytes; ReadResponse() reads the next response (skipping 1xx) to a
  // request with `method` (only HEAD matters: its response has no body).
  absl::Status Send(const std::string& bytes,
                    absl::Duration timeout = absl::Seconds(10));
  HttpResponse ReadResponse(const std::string& method = "GET",
                            absl::Duration timeout = absl::Seconds(10));

  // Whether the socket is open and the peer has not closed it (checked
  // without blocking, so a test can wait for the proxy to close an idle
  // connection).
  bool connected() const;
  void Close();
  // TCP connections this object has opened (1 + reconnects, if they worked).
  int connections_opened() const { return connections_opened_; }
  // Complete responses read on the current TCP connection: > 0 means the
  // next request reuses the connection.
  int responses_on_connection() const { return responses_on_connection_; }
  // Why the last connect failed or the connection was closed.
  const std::string& last_error() const { return last_error_; }
  // If set, blocking calls give up (error "aborted") soon after *flag turns
  // true. For shutting down load threads promptly.
  void set_abort_flag(const std::atomic<bool>* flag) { abort_flag_ = flag; }

 private:
  bool Connect(absl::Time deadline);
  void Disconnect(const std::string& why);

  std::string host_port_;
  Options options_;
  int fd_ = -1;
  Http1Reader reader_{Http1Reader::Mode::kResponse};
  int connections_opened_ = 0;
  int responses_on_connection_ = 0;
  std::string last_error_;
  const std::atomic<bool>* abort_flag_ = nullptr;
};

// Steady load: `concurrency` threads, each on its own keep-alive connection,
// sending GET `path` with `host: <host>` back to back (or at
// `rate_per_thread` requests/s) until Stop(). Every outcome is counted; a
// transport error (also on a reused connection) is a failure, after which the
// thread opens a new connection. A connection the peer closed cleanly between
// requests (or after "connection: close") is replaced without counting a
// failure; Counts::connections shows how often that happened. A request cut
// short by Stop() is not counted.
class LoadGenerator {
 public:
  struct Options {
    std::string host_port;
    std::string path = "/";
    std::string host = "localhost";
    int concurrency = 4;
    int rate_per_thread = 0;  // requests/s per thread; 0 = as fast as possible
    absl::Duration request_timeout = absl::Seconds(10);
  };
  struct Counts {
    uint64_t ok = 0;                // 2xx
    uint64_t failed = 0;            // non-2xx or transport error
    uint64_t transport_errors = 0;  // part of `failed`: no complete response
    uint64_t connections = 0;       // connections opened (or attempted)
    std::map<int, uint64_t> by_status;
    std::map<std::string, uint64_t> by_upstream;  // x-upstream header
    std::vector<std::string> first_errors;        // up to 20 descriptions
    uint64_t total() const { return ok + failed; }
  };

  explicit LoadGenerator(Options options);
  ~LoadGenerator();  // stops if running
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  // Start() after Stop() carries on counting into the same Counts.
  void Start();
  void Stop();  // joins the threads
  Counts counts() const;

 private:
  void Run(int thread_index);
  void Record(const HttpResponse& response, bool reused, int thread_index);
  void RecordConnect(const std::string& error, int thread_index);
  // Sleeps until `until` or Stop(), whichever is first.
  void SleepUntil(absl::Time until) const;

  Options options_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  mutable absl::Mutex mu_;
  Counts counts_ ABSL_GUARDED_BY(mu_);
};

// Paced GETs: `path` with `headers`, sent to each of `addresses` at its rate
// (requests per second) for `duration` from one common start, one thread
// per address, each request on a new connection. Counts the answers.
struct PacedLoadCounts {
  std::vector<int> admitted_by;  // 200s, per address
  int refused = 0;               // 429s
  int other = 0;                 // anything else, failures included
  int admitted() const;
  // "admitted N (a/b/...), refused R, other O"
  std::string Describe() const;
};
PacedLoadCounts PacedLoad(const std::vector<std::string>& addresses,
                          const std::vector<double>& rates, absl::Duration duration,
                          const std::string& path, const Headers& headers);

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_HARNESS_HTTP_CLIENT_H_
