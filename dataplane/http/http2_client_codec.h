// Client side (upstream) HTTP/2 codec on nghttp2: bytes in, events out.
//
// The codec does no I/O and reads no clock. The connection owner writes the
// output the codec queues at construction (the client preface and SETTINGS)
// and after every call (TakeOutput), feeds it the bytes it reads (Receive),
// opens streams with SubmitRequest and gets response events through
// Http2ClientCallbacks. Prior-knowledge HTTP/2 only: h2c, or h2 after ALPN.
//
// Responses. nghttp2 validates every response as RFC 9113 8.1-8.3 requires
// (HTTP messaging checks on): :status present and valid, no other or
// repeated pseudo-header, lower-case names, no connection-specific field,
// Content-Length equal to the DATA received, trailers without pseudo-header
// fields. The codec adds: a field nghttp2 would drop as invalid makes the
// response malformed, and so does a :status outside 100-599 (RFC 9110 15;
// nghttp2 takes 0xx for a final status). A malformed response resets the
// stream with PROTOCOL_ERROR and reports OnStreamReset(PROTOCOL_ERROR). 1xx
// heads are interim: dropped, never reported. A response head over
// Http2ClientLimits::max_header_list_bytes (decoded bytes, name + value + 32
// per field: an HPACK bomb costs no memory) resets the stream too:
// RST_STREAM and OnStreamReset with ENHANCE_YOUR_CALM, "too large" in the
// reason; the rest of the block is decoded only to keep the HPACK table in
// step. Trailers likewise.
//
// Response body flow control. OnResponseData hands out views; the caller
// says with ConsumeResponseData() how many bytes it has passed on. The
// stream's receive window is replenished only while the bytes given and not
// consumed stay under max(max_response_body_buffer, initial_window_size): a
// caller that stops consuming (a slow client) stalls that stream only.
// Connection-level credit is returned as bytes arrive.
//
// Requests. SubmitRequest opens a stream (HEADERS), SubmitData copies body
// bytes into the stream's send queue (framed as the peer's windows allow),
// SubmitTrailers ends the request with trailers. QueuedBytes() is the
// back-pressure signal; OnStreamWritable() fires when a stream's queue falls
// to stream_send_low_watermark. Connection-specific fields (connection,
// keep-alive, proxy-connection, transfer-encoding, upgrade, host) and
// pseudo-header names among the submitted fields are dropped, names are
// lower-cased, invalid fields dropped; `te` is kept only as "trailers" (when
// it lists trailers). Http2Request::authority is sent as :authority; when it
// is empty, the first `host` field's value is. A response that completes
// while the request is still being sent (RFC 9113 8.1) is reported as usual;
// the rest of the request is dropped (RST_STREAM(NO_ERROR)) and
// SubmitData/SubmitTrailers for the stream return false.
//
// Concurrency. CanOpenStream() is false once the peer's
// SETTINGS_MAX_CONCURRENT_STREAMS streams are open (100 assumed until its
// SETTINGS arrive: RFC 9113 recommends no fewer), after GOAWAY (sent or
// received), after a connection error, or when stream ids run out.
//
// GOAWAY from the peer: OnGoaway(last_stream_id, error_code); streams above
// last_stream_id were not processed and end with OnStreamReset(...,
// refused=true): the caller may send them again elsewhere. REFUSED_STREAM
// from the peer is reported with refused=true too (unless a response HEADERS
// frame had already arrived on the stream). Other open streams continue.
//
// Errors. A connection error queues GOAWAY; Receive() returns false and
// error() says why. Open streams then end with OnStreamReset (the GOAWAY's
// code; refused when their HEADERS frame was never sent). The caller writes
// the pending output and closes. (nghttp2 failing to frame output is a
// connection error found inside TakeOutput(); the streams end there.) If the
// transport closes first, the caller calls OnTransportClosed(): every open
// stream ends with OnStreamReset(INTERNAL_ERROR, refused = not a byte of its
// response arrived and the request never left -- conservative: refused only
// when the HEADERS frame was never sent).
//
// Output. The codec keeps up to Http2ClientLimits::max_buffered_output bytes
// of framed output itself; the rest waits in nghttp2 and in the stream
// queues until TakeOutput() makes room, so a peer that floods PINGs or
// SETTINGS and never reads the ACKs fails the connection instead of growing
// memory. Stream ends the codec decides (RST_STREAM) are reported when the
// frame is framed, so with output held back they may come from TakeOutput().
//
// Abuse from an upstream (it is less trusted than the config): nghttp2
// bounds SETTINGS entries, queued ACKs, CONTINUATION frames per block and the
// HPACK tables, as on the server side.
//
// Threading: not thread-safe; one worker. Callbacks run inside Receive(),
// TakeOutput() and OnTransportClosed() only; they may call Submit*,
// ResetStream, ConsumeResponseData, QueuedBytes, SubmitPing and Shutdown,
// but not Receive, TakeOutput or OnTransportClosed, and must not destroy
// the codec.
#ifndef SLUICE_DATAPLANE_HTTP_HTTP2_CLIENT_CODEC_H_
#define SLUICE_DATAPLANE_HTTP_HTTP2_CLIENT_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "dataplane/http/header_map.h"
#include "dataplane/http/http1_parser.h"

struct nghttp2_session;

namespace sluice::http {
namespace http2 {
class WholeFrameHeaderFeeder;  // http2_util.h
class SessionMemory;  // http2_util.h
}  // namespace http2

struct Http2ClientLimits {
  // SETTINGS_INITIAL_WINDOW_SIZE: the per-stream receive window we advertise.
  // It is what an upstream may send a stream whose client reads nothing, on
  // top of what the client side holds: 256 KiB keeps 100 stalled streams of
  // one client at 25 MiB (1 MiB made it 100 MiB), and still moves about
  // 250 MB/s per stream at a 1 ms round trip.
  uint32_t initial_window_size = 256 << 10;
  // The connection-level receive window (raised from 65535 at the start).
  uint32_t connection_window_size = 16 << 20;
  // SETTINGS_MAX_HEADER_LIST_SIZE, enforced on decoded bytes.
  uint32_t max_header_list_bytes = 96 * 1024;
  // Response body bytes per stream the caller may hold unconsumed before the
  // stream's window stops being replenished (at least initial_window_size).
  uint32_t max_response_body_buffer = 256 << 10;
  // Framed output the codec buffers before TakeOutput().
  uint32_t max_buffered_output = 64 * 1024;
  // OnStreamWritable() fires when a stream's send queue falls from above
  // this to at or below it.
  uint32_t stream_send_low_watermark = 16 * 1024;
};

// What SubmitRequest sends. Views are copied before it returns.
struct Http2Request {
  std::string_view method;
  std::string_view scheme;     // "http" / "https"
  std::string_view authority;  // sent as :authority
  std::string_view path;
  // :protocol, with method CONNECT: an extended CONNECT (RFC 8441, a
  // WebSocket), which keeps :scheme and :path. Only to a peer whose
  // SETTINGS allow it (peer_allows_extended_connect).
  std::string_view protocol;
  const HeaderField* fields = nullptr;  // regular fields
  size_t field_count = 0;
};

class Http2ClientCallbacks {
 public:
  virtual ~Http2ClientCallbacks() = default;
  // The final response head (status >= 200). end_stream: no body follows.
  virtual void OnResponseHeaders(int32_t stream_id, int status,
                                 const HeaderMap& headers, bool end_stream) = 0;
  // Response body bytes, a view valid during the call; report them with
  // ConsumeResponseData() once passed on. The call with end_stream set may
  // carry no bytes.
  virtual void OnResponseData(int32_t stream_id, std::string_view data,
                              bool end_stream) = 0;
  // Response trailers; they end the response.
  virtual void OnResponseTrailers(int32_t stream_id,
                                  const HeaderMap& trailers) = 0;
  // An informational (1xx) head before the final one, such as 103 Early
  // Hints; 101 cannot come over HTTP/2 (nghttp2 refuses it).
  virtual void OnInformationalResponse(int32_t /*stream_id*/, int /*status*/,
                                       const HeaderMap& /*headers*/) {}
  // The stream ended before its response completed (reset by the peer or by
  // the codec, GOAWAY, connection error or close). `refused`: the peer did
  // not process the request (REFUSED_STREAM, above GOAWAY's last stream id,
  // or never sent): safe to send again. (A request whose head nghttp2 cannot
  // send at all, over its 64 KiB block limit, ends with INTERNAL_ERROR and
  // is not refused: sending it elsewhere fails the same way.) `reason` is
  // for logs. `by_peer`: the upstream's RST_STREAM (else the codec reset
  // the stream, over what the upstream sent, or the connection ended). No
  // other event follows for the stream; it is gone from the codec when this
  // is called. Not called for streams the caller reset.
  virtual void OnStreamReset(int32_t stream_id, uint32_t error_code,
                             bool refused, bool by_peer, std::string_view reason) = 0;
  // The stream's send queue drained to the low watermark.
  virtual void OnStreamWritable(int32_t /*stream_id*/) {}
  // The peer sent GOAWAY: no new stream can be opened on this connection.
  virtual void OnGoaway(int32_t /*last_stream_id*/, uint32_t /*error_code*/) {}
  // The peer's SETTINGS arrived (CanOpenStream() may have changed).
  virtual void OnSettings() {}
  // A PING we sent was acknowledged.
  virtual void OnPingAck() {}
};

class Http2ClientCodec {
 public:
  // `callbacks` is not owned and must outlive the codec. The client preface
  // and SETTINGS are queued at once.
  Http2ClientCodec(Http2ClientCallbacks* callbacks,
                   const Http2ClientLimits& limits);
  ~Http2ClientCodec();

  Http2ClientCodec(const Http2ClientCodec&) = delete;
  Http2ClientCodec& operator=(const Http2ClientCodec&) = delete;

  // Feeds bytes read from the connection; all are consumed. False on a
  // connection error (GOAWAY queued), and false from then on.
  bool Receive(std::string_view bytes);
  // Appends output to `out`, stopping once at least `max_bytes` were added.
  void TakeOutput(std::string* out,
                  size_t max_bytes = std::numeric_limits<size_t>::max());
  bool WantsWrite() const;
  // The connection still expects input (false after a connection error, or
  // after GOAWAY once every stream is done).
  bool WantsRead() const;
  // Idle (no output to take, input still expected): nghttp2's frame buffer
  // gives its pages back to the kernel (http2::SessionMemory). Returns the
  // bytes given back; 0 when not idle or nothing was sent since last time.
  size_t ReleaseIdleMemory();
  // The session's allocator, for tests.
  const http2::SessionMemory& memory() const { return *memory_; }

  // Opens a stream; returns its id, or -1 when !CanOpenStream() or the
  // request lacks :method, or (except for CONNECT) :scheme or :path (nothing
  // is sent then). CONNECT sends :method and :authority only. end_stream:
  // the request has no body.
  int32_t SubmitRequest(const Http2Request& request, bool end_stream);
  // Copies body bytes into the stream's send queue; end_stream ends the
  // request. False if the stream is unknown, closed or its request ended.
  bool SubmitData(int32_t stream_id, std::string_view data, bool end_stream);
  // Sends trailers after the queued body; they end the request.
  bool SubmitTrailers(int32_t stream_id, const HeaderField* fields,
                      size_t count);
  // RST_STREAM with `error_code` (CANCEL when the client went away) and
  // drops the stream's queue. No OnStreamReset follows for it.
  void ResetStream(int32_t stream_id, uint32_t error_code);
  // Body bytes submitted for the stream and not yet framed.
  size_t QueuedBytes(int32_t stream_id) const;
  // The caller is done with `n` bytes of the stream's OnResponseData.
  void ConsumeResponseData(int32_t stream_id, size_t n);
  // Queues a PING (liveness of an idle connection); OnPingAck follows.
  void SubmitPing();
  // GOAWAY(NO_ERROR): no new streams; open ones complete.
  void Shutdown();
  // The transport closed: every open stream ends with OnStreamReset; the
  // codec takes no more input and produces no more output.
  void OnTransportClosed();

  bool CanOpenStream() const;
  // The peer's first SETTINGS arrived: its stream limit is known.
  bool peer_settings_received() const { return peer_settings_received_; }
  // Its SETTINGS said SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441 3).
  bool peer_allows_extended_connect() const;
  // Streams opened whose end the caller has not yet seen or caused. A stream
  // the caller reset, or whose response completed, leaves at once; should
  // the peer still count it (its RST_STREAM not yet written), nghttp2 holds
  // a new request's HEADERS back until it may send it.
  size_t open_streams() const { return streams_.size(); }
  // The peer's SETTINGS_MAX_CONCURRENT_STREAMS (100 until its SETTINGS
  // arrive; unlimited, 2^32-1, if they do not name it).
  uint32_t peer_max_concurrent_streams() const;
  bool goaway_received() const { return goaway_received_; }
  const std::string& error() const { return error_; }

 private:
  struct Stream;
  friend struct Http2ClientCodecAccess;  // the nghttp2 callbacks

  Stream* FindStream(int32_t stream_id) const;
  // A drain of nghttp2's output returned `rv`: a connection error unless 0.
  void OnDrained(int rv);
  // What every Receive() and TakeOutput() ends with: notices a connection
  // error nghttp2 found, OnStreamWritable, and the end of every stream once
  // the connection failed.
  void FinishSessionCall();
  void NotifyWritable();
  void FailConnection(uint32_t h2_error_code, std::string reason);
  // nghttp2 has queued a GOAWAY for a connection error of its own finding.
  bool SessionTerminating() const;
  // Removes every stream, reporting OnStreamReset(error_code); `refused`
  // for those whose HEADERS never went out.
  void EndAllStreams(uint32_t error_code, std::string_view reason);
  // The response completed: drops the rest of the request, if any, and the
  // stream.
  void FinishResponse(int32_t stream_id);
  // Resets the stream (a response head or trailers over
  // max_header_list_bytes, an invalid :status); OnStreamReset follows when
  // the RST_STREAM goes out.
  void ResetByCodec(Stream* stream, uint32_t error_code, std::string reason);

  Http2ClientCallbacks* const callbacks_;
  const Http2ClientLimits limits_;
  // Outlives session_ (deleted in the destructor's body), which allocates
  // through it.
  std::unique_ptr<http2::SessionMemory> memory_;
  nghttp2_session* session_ = nullptr;
  absl::flat_hash_map<int32_t, std::unique_ptr<Stream>> streams_;
  std::string output_;
  std::string error_;
  uint32_t failure_code_ = 0;  // the GOAWAY code of a connection error
  bool failed_ = false;
  // Streams whose response completed before their request was sent whole:
  // reset (NO_ERROR) once Receive has read its bytes, unless closed by then.
  std::vector<int32_t> finished_early_;
  bool transport_closed_ = false;
  bool goaway_received_ = false;
  int32_t goaway_last_stream_id_ = 0;
  bool goaway_sent_ = false;
  bool peer_settings_received_ = false;
  // Whole frame headers to nghttp2.
  std::unique_ptr<http2::WholeFrameHeaderFeeder> whole_headers_;
  size_t pings_in_flight_ = 0;
  // Receive, TakeOutput or OnTransportClosed is running (they must not
  // nest).
  bool in_session_call_ = false;
  // Streams whose send queue crossed the low watermark while nghttp2 output was drained.
  std::vector<int32_t> writable_;
};

}  // namespace sluice::http

#endif  // SLUICE_DATAPLANE_HTTP_HTTP2_CLIENT_CODEC_H_
