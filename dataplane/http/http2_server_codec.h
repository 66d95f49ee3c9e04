// Server side (downstream) HTTP/2 codec on nghttp2: bytes in, events out.
//
// The codec does no I/O and reads no clock. The connection owner feeds it the
// bytes it read (Receive), gets request events through Http2ServerCallbacks,
// submits responses (Submit*), and writes what TakeOutput() hands it. Only
// "prior knowledge" HTTP/2 is spoken: the first bytes must be the client
// connection preface (h2c without an HTTP/1 Upgrade, or h2 after ALPN).
//
// Requests. nghttp2 validates every request as RFC 9113 8.1-8.3 requires (it
// runs with HTTP messaging checks on): pseudo-header fields present, known,
// not repeated and before regular fields; :method, :scheme and :path present
// except for CONNECT; lower-case field names; no connection-specific field
// (connection, keep-alive, proxy-connection, transfer-encoding, upgrade); `te`
// only "trailers"; trailers end the stream and carry no pseudo-header;
// Content-Length equal to the DATA received. The codec adds: any field that
// nghttp2 would silently drop as invalid (a bad character in a name, CR/LF/NUL
// or leading/trailing white space in a value) makes the request malformed
// too. A malformed request is a stream error: RST_STREAM(PROTOCOL_ERROR).
// Cookie fields split into crumbs are joined with "; " (RFC 9113 8.2.3), so
// the HeaderMap can be forwarded to HTTP/1 as it is.
//
// Header list limit. SETTINGS_MAX_HEADER_LIST_SIZE advertises
// Http2Limits::max_header_list_bytes; the codec counts the decoded bytes of
// each field (name + value + 32, as RFC 9113 counts, pseudo-header fields
// included) and stops keeping fields past the limit, so a header block that
// expands through the HPACK dynamic table (an "HPACK bomb") costs no memory.
// A request head over the limit is answered by the codec itself: 431 with
// a JSON error body and the x-request-id OnRequestHeadersTooLarge() gave (a
// gRPC request, by its content-type: a trailers-only grpc-status 2), with
// END_STREAM (the rest of the request is then dropped or refused, as below).
// A head more than twice the limit is not decoded to its end: the stream gets
// RST_STREAM(ENHANCE_YOUR_CALM) at once, which also spares the CPU an HPACK
// bomb would cost. The caller never sees such a stream, except through
// OnRequestHeadersTooLarge(), which is informational. Trailers over the limit
// (bytes, or more than max_header_fields fields)
// reset the stream with ENHANCE_YOUR_CALM (a response may be under way, so
// 431 is no longer possible).
//
// Request body flow control. OnRequestData hands out views; the caller says
// with ConsumeRequestData() how much it has forwarded (or dropped). The codec
// returns flow-control credit to the peer on its own while the bytes the
// caller has been given and not consumed, plus what the peer may still send,
// stay within max(max_request_body_buffer, initial_window_size): a caller
// that stops consuming holds at most that many bytes per stream, and the peer
// then stalls on that stream only. Connection-level credit is returned as soon
// as bytes arrive, so a stalled stream never blocks the others.
//
// Responses. SubmitResponse / SubmitData / SubmitTrailers queue a response;
// body bytes are copied into a per-stream send queue and framed as the peer's
// flow-control windows allow. QueuedBytes() is the back-pressure signal (stop
// reading the upstream above your watermark); OnStreamWritable() fires when a
// stream's queue drains to Http2Limits::stream_send_low_watermark or below. A
// final response that ends while the client is still sending the request
// ends the stream for the caller (OnStreamReset(NO_ERROR)). When the rest of
// the request's declared content-length fits the flow-control windows the
// client already has, the codec reads and drops it and the stream ends with
// the client's END_STREAM; otherwise (or at the final GOAWAY) it sends
// RST_STREAM(NO_ERROR) (RFC 9113 8.1). (A client still sending a short body
// when the reset came, curl 7.88 among them, dropped the response; one with
// more to send than its windows allow stops reading once the response is
// whole and would wait for a reset forever.) Connection-specific fields and
// pseudo-header names in submitted headers are dropped; names are lower-cased.
//
// Output. The codec keeps up to Http2Limits::max_buffered_output bytes of
// framed output itself; the rest stays queued in nghttp2 and in the stream
// queues until TakeOutput() makes room. Call TakeOutput() when the transport
// can take more bytes, not into an unbounded buffer: a peer that sends PINGs
// or SETTINGS and never reads the ACKs then fills nghttp2's queue and the
// connection fails (max outbound ACKs), instead of growing memory.
//
// Abuse protections, besides the limits above (see http2_util.cc and
// http2_server_codec.cc for the values): nghttp2 bounds SETTINGS entries per
// frame, queued SETTINGS/PING ACKs, CONTINUATION frames per header block (8,
// more for a max_header_list_bytes over 96 KiB), the HPACK tables, single
// field sizes (64 KiB) and the rate of RST_STREAM frames received (token
// bucket). The codec itself counts "premature" stream ends -- streams the
// client reset before their response began, streams reset because the
// client broke the protocol on them, and 431 answers -- and fails the
// connection with GOAWAY(ENHANCE_YOUR_CALM) when Http2Limits::
// max_premature_resets of them fall among premature_reset_window streams
// opened (rapid reset, CVE-2023-44487, and its "make the server reset"
// variant), with no clock involved.
//
// Errors. A connection error queues GOAWAY; Receive() returns false (or, when
// the error is found while output is held back at max_buffered_output, the
// GOAWAY goes out with a later TakeOutput() and WantsRead() turns false);
// error() says why. The caller writes the pending output and closes. When the
// connection closes, streams still open just end: the codec does not call
// OnStreamReset for them.
//
// Threading: not thread-safe. A codec belongs to the worker thread that owns
// its connection. Callbacks run inside Receive() and TakeOutput(); they may
// call Submit*, ResetStream, ConsumeRequestData, QueuedBytes and Shutdown,
// but not Receive or TakeOutput, and must not destroy the codec.
#ifndef SLUICE_DATAPLANE_HTTP_HTTP2_SERVER_CODEC_H_
#define SLUICE_DATAPLANE_HTTP_HTTP2_SERVER_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "dataplane/http/header_map.h"

struct nghttp2_session;

namespace sluice::http {

struct HeaderField;  // http1_parser.h
namespace http2 {
class HeaderBlockBuilder;  // http2_util.h
class ClientFrameWatch;  // http2_util.h
class WholeFrameHeaderFeeder;  // http2_util.h
class SessionMemory;  // http2_util.h
}  // namespace http2

struct Http2Limits {
  // SETTINGS_MAX_CONCURRENT_STREAMS.
  uint32_t max_concurrent_streams = 100;
  // SETTINGS_INITIAL_WINDOW_SIZE: the per-stream receive window we advertise.
  uint32_t initial_window_size = 65535;
  // SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441): extended CONNECT, its
  // :protocol passed on in RequestPseudo. false: nghttp2 resets such a
  // request (PROTOCOL_ERROR).
  bool enable_connect_protocol = true;
  // The connection-level receive window (raised from 65535 at the start).
  uint32_t connection_window_size = 1 << 20;
  // SETTINGS_MAX_HEADER_LIST_SIZE, enforced on decoded bytes (name + value +
  // 32 per field). Over it: 431 for a request head (RST_STREAM when more than
  // twice over), RST_STREAM for trailers.
  uint32_t max_header_list_bytes = 61440;
  // Fields a request's trailer section may have (the head's count is the
  // caller's to check): more reset the stream, as too many bytes do.
  uint32_t max_trailer_fields = 100;
  // Request body bytes per stream the caller may hold unconsumed before the
  // peer's stream window stops being replenished (at least
  // initial_window_size).
  uint32_t max_request_body_buffer = 1 << 20;
  // Framed output the codec buffers before TakeOutput() (see Output above).
  uint32_t max_buffered_output = 64 * 1024;
  // OnStreamWritable() fires when a stream's send queue falls from above this
  // to at or below it.
  uint32_t stream_send_low_watermark = 16 * 1024;
  // Rapid-reset protection: GOAWAY(ENHANCE_YOUR_CALM) once
  // `max_premature_resets` premature stream ends are counted within a window
  // of `premature_reset_window` streams opened.
  uint32_t premature_reset_window = 200;
  uint32_t max_premature_resets = 100;
};

// The request pseudo-header fields (RFC 9113 8.3.1), validated by nghttp2.
struct RequestPseudo {
  std::string method;
  std::string scheme;     // empty for CONNECT
  std::string authority;  // empty when absent (then see the "host" field)
  std::string path;       // empty for CONNECT
  // RFC 8441's :protocol ("websocket"), on an extended CONNECT only.
  std::string protocol;
};

class Http2ServerCallbacks {
 public:
  virtual ~Http2ServerCallbacks() = default;
  // A complete, valid request head. `headers` holds the regular fields
  // (lower-case names, cookie crumbs joined). end_stream: no body follows.
  virtual void OnRequestHeaders(int32_t stream_id, RequestPseudo pseudo,
                                HeaderMap headers, bool end_stream) = 0;
  // Request body bytes, a view valid during the call; report them with
  // ConsumeRequestData() once forwarded. The call with end_stream set may
  // carry no bytes (the end of the stream is known only after the last DATA
  // frame has been checked against Content-Length).
  virtual void OnRequestData(int32_t stream_id, std::string_view data,
                             bool end_stream) = 0;
  // Request trailers; they end the request.
  virtual void OnRequestTrailers(int32_t stream_id, HeaderMap trailers) = 0;
  // The stream ended before both directions completed: the peer reset it,
  // the codec reset it (a protocol error on it, trailers too large), or the
  // response completed while the request was still open (NO_ERROR). Called
  // only for streams the caller has seen in OnRequestHeaders and not reset
  // itself. Afterwards no events come for the stream, Submit* for it return
  // false and ConsumeRequestData() ignores it.
  virtual void OnStreamReset(int32_t stream_id, uint32_t error_code) = 0;
  // The stream's send queue drained to the low watermark (the peer's window
  // opened, or the connection took the bytes): QueuedBytes() is low again.
  virtual void OnStreamWritable(int32_t /*stream_id*/) {}
  // What the caller puts in the codec's own 431 answer (the codec has no
  // clock and makes no ids); an empty field is left out.
  struct ReplyFields {
    std::string request_id;  // x-request-id, and in the JSON body
    std::string date;        // the Date field (RFC 9110 6.6.1)
    // Set by the codec: a gRPC request, answered grpc-status 2 (UNKNOWN),
    // as gRPC maps a 431, in a trailers-only response.
    bool grpc = false;
    // Set by the codec, for the access log: the request's pseudo-header
    // fields and User-Agent, as far as they came before the limit.
    const RequestPseudo* pseudo = nullptr;
    std::string_view user_agent;
  };
  // Informational (access log, metrics): the request head was over
  // max_header_list_bytes; the codec answers it with 431 itself, right
  // after, with the fields the caller puts in `reply`; `reply` is null when
  // the codec resets the stream instead (more than twice over). No other
  // event comes for the stream.
  virtual void OnRequestHeadersTooLarge(int32_t /*stream_id*/, ReplyFields* /*reply*/) {}
  // nghttp2 reset a stream with PROTOCOL_ERROR before its head was
  // delivered: a malformed request (RFC 9113 8.1.1: an upper-case or
  // connection-specific field, a bad pseudo-header...). `pseudo` and
  // `headers` hold what was decoded of it.
  virtual void OnRequestMalformed(int32_t /*stream_id*/, const RequestPseudo& /*pseudo*/,
                                  const HeaderMap& /*headers*/) {}
  // nghttp2 reset a stream the caller has seen because the client broke
  // the protocol on it afterwards (DATA past its content-length, a
  // pseudo-header in trailers, a stream window overrun): called just before
  // its OnStreamReset.
  virtual void OnStreamProtocolError(int32_t /*stream_id*/, uint32_t /*error_code*/) {}
  // The client reset a stream the caller has seen, before its response
  // began: whether that counts towards rapid reset (the codec reads no
  // clock; the caller knows how long the exchange lived).
  virtual bool ClientResetIsPremature(int32_t /*stream_id*/) { return true; }
};

class Http2ServerCodec {
 public:
  // `callbacks` is not owned and must outlive the codec. The server
  // connection preface (SETTINGS, connection WINDOW_UPDATE) is queued at
  // once: call TakeOutput() before the first Receive().
  Http2ServerCodec(Http2ServerCallbacks* callbacks, const Http2Limits& limits);
  ~Http2ServerCodec();

  Http2ServerCodec(const Http2ServerCodec&) = delete;
  Http2ServerCodec& operator=(const Http2ServerCodec&) = delete;

  // The JSON body of the codec's own 431 (not to gRPC), for the access
  // log's bytes_out too.
  static constexpr char kHeadersTooLargeError[] = "request header section too large";
  static std::string HeadersTooLargeBody(std::string_view request_id);

  // Feeds bytes read from the connection; all of them are consumed. Returns
  // false on a connection error (GOAWAY queued: write the pending output,
  // then close), and keeps returning false afterwards.
  bool Receive(std::string_view bytes);

  // Appends output for the connection to `out`: first what the codec has
  // buffered, then frames nghttp2 can produce now, stopping once at least
  // `max_bytes` were appended. Call after Receive() and Submit*.
  void TakeOutput(std::string* out,
                  size_t max_bytes = std::numeric_limits<size_t>::max());

  // There is output to take.
  bool WantsWrite() const;
  // The connection still expects input. When both are false (after GOAWAY,
  // once every stream is done), close the connection.
  bool WantsRead() const;
  // Idle (no output to take, input still expected): nghttp2's frame buffer
  // gives its pages back to the kernel (http2::SessionMemory); an empty
  // stream table and the response head builder free their storage. Returns the frame buffer bytes given back; 0
  // when not idle or nothing was sent since last time.
  size_t ReleaseIdleMemory();
  // The session's allocator, for tests.
  const http2::SessionMemory& memory() const { return *memory_; }
  // Slots of the stream table, for tests.
  size_t stream_table_capacity() const { return streams_.capacity(); }

  // Response head. 1xx statuses (except 101, which HTTP/2 forbids) are
  // interim and may precede the final one. end_stream: no body follows.
  // Returns false (and queues nothing) if the stream is not open for a
  // response: unknown, reset, or a final response already submitted.
  bool SubmitResponse(int32_t stream_id, int status, const HeaderMap& headers,
                      bool end_stream);
  // The same for a head given as views, valid during the call: the `count`
  // `fields` are checked and lower-cased as above (the same frames as the
  // HeaderMap form) without being copied first, and a `content_length`, when
  // set, adds a content-length field after them. The proxy's path.
  // The first `syntax_checked` fields are known to have RFC 9110 field syntax
  // (the HTTP/1 parser checked the upstream's response): the rules by name
  // still apply to them, nghttp2's check of their bytes is skipped.
  bool SubmitResponse(int32_t stream_id, int status, const HeaderField* fields,
                      size_t count, std::optional<uint64_t> content_length,
                      bool end_stream, size_t syntax_checked = 0);
  // Copies body bytes into the stream's send queue. end_stream ends the
  // response (without trailers). False if no final response without
  // end_stream precedes it, the body already ended, or the stream is gone.
  bool SubmitData(int32_t stream_id, std::string_view data, bool end_stream);
  // Sends trailers after the queued body; they end the response. Same
  // preconditions as SubmitData().
  bool SubmitTrailers(int32_t stream_id, const HeaderMap& trailers);
  bool SubmitTrailers(int32_t stream_id, const HeaderField* fields,
                      size_t count);
  // RST_STREAM with `error_code` and drops the stream's queue. No
  // OnStreamReset follows for it.
  void ResetStream(int32_t stream_id, uint32_t error_code);
  // What ResetStream would drop of what was submitted for the stream:
  // whether its response head (not yet sent), and how many body bytes.
  void ResetLoss(int32_t stream_id, bool* head_lost, size_t* bytes_lost) const;

  // Body bytes submitted for the stream and not yet framed (0 for unknown).
  size_t QueuedBytes(int32_t stream_id) const;

  // The caller is done with `n` bytes of the stream's OnRequestData.
  void ConsumeRequestData(int32_t stream_id, size_t n);

  // NO_ERROR: graceful shutdown -- a GOAWAY announcing the end (last stream
  // 2^31-1) and a PING now, the final GOAWAY with the last stream processed
  // when the PING's ACK arrives (one round trip later, no timer needed);
  // streams up to it complete, later ones are refused. Called again while
  // the ACK is awaited (the caller's drain timer), the final GOAWAY goes out
  // at once. Any other code: a connection error now (GOAWAY with that code,
  // no more input processed).
  void Shutdown(uint32_t error_code);

  // Why the connection failed; empty while it has not.
  const std::string& error() const { return error_; }
  // The same as one word, for a metric's label (empty while it has not
  // failed): rapid_reset, continuation_flood, flood (SETTINGS, PING or
  // empty-frame floods), compression (HPACK), flow_control, protocol,
  // output (more queued for the client than allowed), other.
  std::string_view error_kind() const { return error_kind_; }
  // Streams opened by the peer and not yet closed.
  size_t open_streams() const { return streams_.size(); }
  // The bytes received so far end inside a frame's 9-byte header or inside
  // a header block (HEADERS and its CONTINUATIONs), accepted or not: the
  // session bounds how long that may last (the request-head timeout).
  bool head_pending() const;

 private:
  struct Stream;
  friend struct Http2ServerCodecAccess;  // the nghttp2 callbacks

  Stream* FindStream(int32_t stream_id) const;
  // A response head or body bytes submitted and not yet framed.
  bool Unsent(const Stream& stream) const;
  // The stream's queued body fits the peer's stream and connection windows.
  bool QueueFitsWindows(const Stream& stream) const;
  // A drain of nghttp2's output returned `rv`: a connection error unless 0.
  void OnDrained(int rv);
  void NotifyWritable();
  void FailConnection(uint32_t h2_error_code, std::string reason, std::string_view kind);
  void CountPrematureEnd();
  void RespondHeadersTooLarge(Stream* stream, const Http2ServerCallbacks::ReplyFields& reply);
  void RejectHeaderBlock(Stream* stream);
  void SubmitFinalGoaway();
  // Submits the head in block_ (":status" first) for the open stream.
  bool SubmitResponseBlock(Stream* stream, bool interim, bool end_stream);
  // The stream is open for a response head with this status.
  Stream* StreamForResponse(int32_t stream_id, int status, bool end_stream);

  Http2ServerCallbacks* const callbacks_;
  const Http2Limits limits_;
  // Outlives session_ (deleted in the destructor's body), which allocates
  // through it.
  std::unique_ptr<http2::SessionMemory> memory_;
  nghttp2_session* session_ = nullptr;
  absl::flat_hash_map<int32_t, std::unique_ptr<Stream>> streams_;
  // What FindStream found last (nghttp2 asks for the same stream for every
  // field of a header block); 0 and nullptr when nothing is cached.
  mutable int32_t found_id_ = 0;
  // The highest stream whose request head went to the caller.
  int32_t last_delivered_ = 0;
  mutable Stream* found_ = nullptr;
  std::string output_;
  // The response head being submitted; its storage is kept between heads.
  std::unique_ptr<http2::HeaderBlockBuilder> block_;
  std::unique_ptr<http2::ClientFrameWatch> frames_received_;
  // Whole frame headers to nghttp2 (after the client's 24-octet preface).
  std::unique_ptr<http2::WholeFrameHeaderFeeder> whole_headers_;
  std::string error_;
  std::string_view error_kind_;  // static strings (error_kind())
  bool failed_ = false;
  // Receive or TakeOutput is running (they must not nest).
  bool in_session_call_ = false;
  // Streams whose send queue crossed the low watermark while nghttp2 output was drained.
  std::vector<int32_t> writable_;
  // Graceful shutdown: the notice went out, the final GOAWAY waits for the
  // ACK of our PING.
  enum class ShutdownState { kNone, kAwaitingPingAck, kFinalGoawaySubmitted };
  ShutdownState shutdown_ = ShutdownState::kNone;
  uint32_t streams_in_window_ = 0;
  uint32_t premature_in_window_ = 0;
};

}  // namespace sluice::http

#endif  // SLUICE_DATAPLANE_HTTP_HTTP2_SERVER_CODEC_H_
