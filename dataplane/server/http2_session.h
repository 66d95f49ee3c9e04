// Http2Session: the HTTP/2 session of one client connection: the nghttp2
// server codec (dataplane/http/http2_server_codec.h) on the connection's
// bytes, and one ProxyStream per HTTP/2 stream, each answering through its
// own DownstreamSink (a response becomes HEADERS, DATA and trailers frames).
//
// A connection becomes an Http2Session when TLS ALPN picked "h2", or when a
// plain connection starts with the HTTP/2 connection preface (h2c with prior
// knowledge); DownstreamConnection hands the connection over.
//
// Flow control end to end: a stream's request body is acknowledged to the
// client (WINDOW_UPDATE) only as its upstream takes it, and a stream whose
// client reads slowly stops reading its upstream once its send queue passes
// the watermark; other streams are not held up. Framed output is taken from
// the codec only while the socket keeps up.
//
// Streams are reused: a finished stream is reset at the end of the event
// loop iteration it ended in (when it would have been freed) and kept, up to
// kMaxFreeStreams per session, for the next stream of the connection, so
// that a stream costs no allocation of its exchange, its timers and their
// buffers. A busy connection (one that has opened kBusyStreams streams)
// keeps its spare streams and socket buffers through moments with no stream
// open, as a client with a few requests in flight has between batches, and
// drops them once it has had none open for kSpareHold. Any other connection
// drops them as soon as no stream is open, so an idle connection keeps none.
//
// Worker thread only. Frees itself (deferred) when the connection ends.
#ifndef SLUICE_DATAPLANE_SERVER_HTTP2_SESSION_H_
#define SLUICE_DATAPLANE_SERVER_HTTP2_SESSION_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/http2_server_codec.h"
#include "dataplane/net/connection.h"
#include "dataplane/server/downstream_session.h"
#include "dataplane/server/proxy_stream.h"

namespace sluice::server {

class Worker;

struct Http2SessionOptions {
  http::Http2Limits limits;
  absl::Duration idle_timeout;
  // A frame header, and a header block (HEADERS and CONTINUATIONs), must be
  // received whole within this from its first byte; else GOAWAY and the
  // connection closes.
  absl::Duration request_headers_timeout = absl::Seconds(10);
  // GOAWAY after this many streams, or this long after the session began;
  // 0: no limit.
  uint32_t max_requests = 0;
  absl::Duration max_connection_age = absl::ZeroDuration();
};

class Http2Session : public net::ConnectionCallbacks,
                     public http::Http2ServerCallbacks,
                     public event::Flushable,
                     public DownstreamSession {
 public:
  // Takes the connection over; bytes already in its input buffer (the
  // client's preface) are processed by Start().
  Http2Session(Worker& worker, std::unique_ptr<net::Connection> connection, std::string listener,
               std::string peer_ip, const Http2SessionOptions& options);
  ~Http2Session() override;

  void Start();

  // DownstreamSession
  void StartDrain() override;
  void EndStreamsAtDrainDeadline() override;
  size_t HeldResponseBytes() const override;
  void ShedForOverload() override;
  // StartDrain, and the streams left at ListenerDrain::timeout() are ended
  // with `flag` (the access log's response_flag).
  void StartListenerDrain(std::string_view flag);
  // WebSockets (RFC 8441 streams) have no next response to end them: at
  // max_connection_age or a listener event they are ended (END_STREAM, what
  // was queued still goes out) on the next loop turn, logged with `flag`,
  // and so is one whose 101 comes later.
  void EndTunnels(std::string_view flag);
  // A tunnel opened (its 200 submitted): ended too if EndTunnels came first.
  void OnTunnelOpened();
  // Calls `end` with each open stream's exchange. Ending one may erase it
  // from streams_: they are visited by id, not by iterator.
  template <typename F>
  void EndEachStream(F end);
  // The last snapshot that had the listener, when it is gone already (the
  // HTTP/1 connection it came from kept it).
  void KeepListenerSnapshot(std::shared_ptr<const config::ConfigSnapshot> snapshot) {
    listener_snapshot_ = std::move(snapshot);
  }
  void OnSnapshotChanged(const std::shared_ptr<const config::ConfigSnapshot>& previous) override;
  // net::ConnectionCallbacks
  void OnReadable() override;
  void OnWriteDrained() override;
  void OnClosed(net::CloseReason reason, int error) override;
  // http::Http2ServerCallbacks
  void OnRequestHeaders(int32_t stream_id, http::RequestPseudo pseudo, http::HeaderMap headers,
                        bool end_stream) override;
  void OnRequestData(int32_t stream_id, std::string_view data, bool end_stream) override;
  void OnRequestTrailers(int32_t stream_id, http::HeaderMap trailers) override;
  void OnStreamReset(int32_t stream_id, uint32_t error_code) override;
  void OnStreamProtocolError(int32_t stream_id, uint32_t error_code) override;
  bool ClientResetIsPremature(int32_t stream_id) override;
  void OnRequestHeadersTooLarge(int32_t stream_id, ReplyFields* reply) override;
  // Counted as a protocol error and access-logged (status 0, bad_request).
  void OnRequestMalformed(int32_t stream_id, const http::RequestPseudo& pseudo,
                          const http::HeaderMap& headers) override;
  // What each stream may hold each way (ProxyStream's back-pressure
  // point): 8 MiB shared by the open streams, 64 KiB..1 MiB each.
  size_t StreamBufferLimit() const;
  void OnStreamWritable(int32_t stream_id) override;
  // event::Flushable: moves framed output from the codec to the socket.
  void Flush() override;

 private:
  class Stream;
  class RecycleBatch;

  // Finished streams kept for reuse, at most.
  static constexpr size_t kMaxFreeStreams = 16;
  // A connection that has opened this many streams is busy (see above).
  static constexpr uint64_t kBusyStreams = 8;
  static constexpr absl::Duration kSpareHold = absl::Seconds(1);

  bool Busy() const { return streams_opened_ >= kBusyStreams; }

  Stream* Find(int32_t stream_id);
  // The stream is over: forget it now, reset it for reuse (or free it)
  // after the current callback.
  void RemoveStream(int32_t stream_id);
  // A stream for `stream_id`: a reused one, or a new one.
  std::unique_ptr<Stream> NewStream(int32_t stream_id);
  // Output was submitted outside Receive(): send it at the end of the loop
  // iteration.
  void ScheduleFlush();
  // No stream is open: the idle timer runs (first for kSpareHold on a busy
  // connection, which then drops its spares and buffers).
  void ArmIdleTimer();
  void OnIdle();
  // No stream open, nothing to write: the socket buffers, nghttp2's frame
  // buffer and the stream tables' storage are given back.
  void ReleaseIdleMemory();
  // After input: a frame header or header block the client has begun must
  // end in time.
  void WatchHeaderBlock();
  void OnHeaderBlockTimeout();
  void CloseNow();
  // Stops reading and closes once the output is written.
  void CloseAfterOutput();

  Worker& worker_;
  std::unique_ptr<net::Connection> connection_;
  std::string listener_;
  // The last config that had listener_, once a newer one removed it.
  std::shared_ptr<const config::ConfigSnapshot> listener_snapshot_;
  std::string peer_ip_;
  Http2SessionOptions options_;
  http::Http2ServerCodec codec_;
  absl::flat_hash_map<int32_t, std::unique_ptr<Stream>> streams_;
  // Finished streams, reset, ready for the next ones.
  std::vector<std::unique_ptr<Stream>> free_streams_;
  // The streams that ended in this loop iteration, queued for deferred
  // deletion (which recycles them); nullptr when none did.
  RecycleBatch* recycle_batch_ = nullptr;
  event::DeadlineTimer idle_timer_;
  // A frame header or header block not ended; made the first time one is
  // pending after a read (most connections never need it).
  std::unique_ptr<event::DeadlineTimer> head_timer_;
  std::unique_ptr<event::Timer> age_timer_;  // with a max_connection_age
  // Made at the first graceful shutdown: sends the final GOAWAY when the
  // client has not answered the shutdown PING in time (BeginShutdown).
  std::unique_ptr<event::Timer> final_goaway_timer_;
  // Made when its listener moved, went, or changed its TLS rules: ends the
  // streams left at ListenerDrain::timeout().
  std::unique_ptr<event::Timer> listener_drain_timer_;
  // EndTunnels' flag (empty: not asked), and its next-turn timer.
  std::string_view end_tunnels_flag_;
  std::unique_ptr<event::Timer> end_tunnels_timer_;
  uint64_t streams_opened_ = 0;
  // The idle timer runs for kSpareHold: spares and buffers are kept.
  bool holding_spares_ = false;
  bool flush_scheduled_ = false;
  bool in_receive_ = false;
  bool closed_ = false;
  bool draining_ = false;

  // GOAWAY(2^31-1) and a PING now; the final GOAWAY (the real last stream
  // id) when the PING's ACK comes, or after kFinalGoawayWait at the latest.
  void BeginShutdown();
  static constexpr absl::Duration kFinalGoawayWait = absl::Seconds(2);
};

}  // namespace sluice::server

#endif  // SLUICE_DATAPLANE_SERVER_HTTP2_SESSION_H_
