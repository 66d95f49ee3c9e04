// Access logs: one JSON object per request, per listener, to a file or
// standard output, written off the request path.
//
// Each worker formats its entries into its own buffer (a mutex per worker
// that only the writer ever contends, when it swaps the buffer out); one
// writer thread per destination writes the buffers every 100 ms. A worker
// never waits for the disk: an entry that does not fit in what is left of
// a worker's kMaxBufferedBytes is dropped and counted
// (sluice_access_log_dropped_total); one larger than the whole buffer is
// taken when the buffer is empty.
// ReopenAll() (SIGUSR1) makes every writer reopen its file, for logrotate.
//
// Thread-safe. Destinations are shared by listeners that name the same path;
// one no config version uses is closed by PruneUnused().
#ifndef SLUICE_DATAPLANE_ACCESSLOG_ACCESS_LOG_H_
#define SLUICE_DATAPLANE_ACCESSLOG_ACCESS_LOG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/stats/stats.h"

namespace sluice::accesslog {

// What one request leaves in the log. Views are valid during Log().
struct Entry {
  absl::Time start;
  std::string_view request_id;
  std::string_view trace_id;
  std::string_view client_ip;
  // The TCP peer's address (the nearest proxy's behind trusted proxies);
  // empty: the same as client_ip.
  std::string_view peer_ip;
  std::string_view method;
  std::string_view authority;
  std::string_view path;
  std::string_view protocol;  // "HTTP/1.1", "HTTP/1.0", "HTTP/2"
  int status = 0;             // 0: no response was sent (the exchange was cut)
  uint64_t bytes_in = 0;      // request body bytes received
  uint64_t bytes_out = 0;     // response body bytes sent
  absl::Duration duration = absl::ZeroDuration();
  absl::Duration upstream_duration = absl::InfiniteDuration();  // infinite: no upstream
  std::string_view route;
  std::string_view cluster;
  std::string_view endpoint;
  int attempts = 0;
  std::string_view consumer;
  std::string_view tls_version;
  std::string_view sni;
  std::string_view tls_cipher;          // "TLS_AES_128_GCM_SHA256" (OpenSSL's name)
  std::string_view tls_client_subject;  // the client certificate's subject, RFC 2253
  std::string_view user_agent;
  std::string_view response_flag;  // why the gateway answered as it did; empty: upstream's answer
  // Why the last upstream try failed ("connect: ...", "TLS handshake: ...",
  // "reset the HTTP/2 stream ..."); empty when none did.
  std::string_view upstream_failure;
  // The grpc-status the client got (a gRPC request); -1: none.
  int grpc_status = -1;
  // The X-Cache-Status a cache policy gave the response ("Hit", "Miss",
  // ...); empty when none ran for it.
  std::string_view cache_status;
};

// The fields an entry may have, in their default order.
const std::vector<std::string>& FieldNames();

class Destination;

// One listener's log: where, which fields, what share of requests.
class AccessLog {
 public:
  // `path`: "-" or "stdout" for standard output, else an absolute file path
  // (appended to; created with mode 0640). `fields`: names from
  // FieldNames(), empty for all. `sample_percent`: 1..100.
  static absl::StatusOr<std::shared_ptr<const AccessLog>> Open(
      const std::string& path, const std::vector<std::string>& fields, uint32_t sample_percent,
      stats::StatsStore& store);

  uint32_t sample_percent() const { return sample_percent_; }
  // Whether a request is logged, given a random number for it (drawn only
  // when sampling, so an unsampled log costs none): sample_percent in 100.
  template <typename Random>
  bool Samples(Random&& random) const {
    return sample_percent_ >= 100 || random() % 100 < sample_percent_;
  }
  // Formats `entry` into worker `worker`'s buffer (or drops it).
  void Log(int worker, const Entry& entry) const;

 private:
  std::shared_ptr<Destination> destination_;
  std::vector<int> fields_;  // indexes into FieldNames()
  uint32_t sample_percent_ = 100;
};

// How many workers log (buffers per destination). Call before any Open().
void SetWorkerCount(int workers);
// From now on Open() takes only files inside `dir` (an absolute path; the
// file's real directory is checked, so a link inside cannot lead out), not
// through a symbolic link in their last component, regular files or FIFOs
// only, and standard output and error; empty: any absolute path but a block
// device. `sluice-proxy --access-log-dir`. A FIFO is written non-blocking
// (a stalled reader costs entries, counted, never a stuck writer).
void SetAllowedDirectory(std::string dir);
// Every destination reopens its file at its next write (SIGUSR1).
void ReopenAll();
// Writes what is buffered now, everywhere (tests, shutdown).
void FlushAll();
// The writer threads' interval (100 ms); for tests only.
void SetWriteIntervalForTest(absl::Duration interval);
// Closes destinations no listener uses any more.
// Thread-safe (the config thread at an apply, the main thread's periodic
// prune after one).
void PruneUnused();


}  // namespace sluice::accesslog

#endif  // SLUICE_DATAPLANE_ACCESSLOG_ACCESS_LOG_H_
