// DownstreamConnection: the HTTP/1.1 session of one client connection. It
// owns the connection (and its transport socket), feeds the bytes to the
// request parser, and hands each request to a ProxyStream (the exchange:
// routing, policies, upstream), which answers through this class's
// DownstreamSink side: this class encodes the response as HTTP/1 (status
// line, chunking or Content-Length, Connection: close) and decides whether
// the connection goes on.
//
// Requests on a connection are handled one at a time, in order: a pipelined
// request waits, unparsed, in the input buffer until the response before it
// is done. Bodies stream both ways; when either side's output backs up past
// ProxyStream::kHighWatermark, reading from the other side pauses until it
// drains. The idle and request-head timers are this class's; the exchange's
// timers are the stream's.
//
// Worker thread only. Frees itself (deferred) when the connection ends.
#ifndef SLUICE_DATAPLANE_SERVER_DOWNSTREAM_CONNECTION_H_
#define SLUICE_DATAPLANE_SERVER_DOWNSTREAM_CONNECTION_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "dataplane/config/snapshot.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/http1_parser.h"
#include "dataplane/net/connection.h"
#include "dataplane/server/downstream_session.h"
#include "dataplane/server/http2_session.h"
#include "dataplane/server/proxy_stream.h"

namespace sluice::server {

class Worker;

class DownstreamConnection : public net::ConnectionCallbacks,
                             public http::Http1Callbacks,
                             public DownstreamSink,
                             public DownstreamSession {
 public:
  static constexpr size_t kHighWatermark = ProxyStream::kHighWatermark;
  // A request body of up to this many bytes (declared) is read and dropped
  // when the response came first, and the connection goes on; a longer or
  // chunked one, or one the client waits to send (Expect: 100-continue),
  // ends the connection after the response (as a 413 always does).
  static constexpr uint64_t kDiscardableBodyBytes = 64 * 1024;

  // `transport`: the listener's TLS socket; nullptr on a plain listener.
  // `peer_ip`: the socket's peer, as accept(2) gave it; `peer_is_local`: that
  // peer is on this host (net::Connection::SetPeerIsLocal).
  DownstreamConnection(Worker& worker, int fd, const config::ListenerRuntime& listener,
                       std::unique_ptr<net::TransportSocket> transport, std::string peer_ip,
                       bool peer_is_local = false);
  ~DownstreamConnection() override;

  // Connection: close on the next response; closes now when idle.
  void StartDrain() override;
  void EndStreamsAtDrainDeadline() override;
  size_t HeldResponseBytes() const override;
  void ShedForOverload() override;
  // Closes an idle connection whose listener is gone.
  void OnSnapshotChanged(const std::shared_ptr<const config::ConfigSnapshot>& previous) override;

  // net::ConnectionCallbacks (client side)
  void OnReadable() override;
  void OnWriteDrained() override;
  void OnConnected() override;  // TLS handshake done
  void OnClosed(net::CloseReason reason, int error) override;
  bool OnPlainHttpRequest(std::string* reply) override;
  bool OnReadEof() override;
  // http::Http1Callbacks (request parser)
  void OnHead(const http::MessageHead& head) override;
  void OnBody(std::string_view chunk) override;
  void OnChunkSize(uint64_t size) override;
  void OnTrailers(const std::vector<http::HeaderField>& trailers) override;
  void OnMessageComplete() override;
  // DownstreamSink (the stream's response)
  void EncodeHeaders(const ResponseHead& head) override;
  void EncodeData(std::string_view data) override;
  void EncodeEnd(const std::vector<http::HeaderField>& trailers) override;
  void EncodeContinue() override;
  void EncodeInformational(int status, const std::vector<http::HeaderField>& fields) override;
  void Abort() override;
  void AbortUnsent() override;
  size_t buffered_response_bytes() const override;
  void SetRequestReadEnabled(bool enabled) override;
  void OnStreamDone() override;
  const std::shared_ptr<const config::ConfigSnapshot>& listener_snapshot() const override {
    return listener_snapshot_;
  }

 private:
  void ProcessInput();
  // The client speaks HTTP/2 (ALPN "h2", or the h2c preface): an
  // Http2Session takes the connection over and this object is done.
  void SwitchToHttp2();
  void HandleParseError(http::ParseError error);
  // A response the session makes without a stream (400, 408, 431): JSON
  // error body, Connection: close.
  // Answers `status` and closes. The answer is counted on the listener and
  // written to its access log like any request's (with what `head` says
  // of the request, when it was parsed), unless `logged`: the exchange it
  // ends already wrote its entry.
  void SendSessionError(int status, std::string_view error,
                        const http::MessageHead* head = nullptr, bool logged = false);
  // The head of such an answer: a JSON error body of `body_size` bytes,
  // then the connection closes.
  std::string ClosingErrorHead(int status, size_t body_size, std::string_view request_id);
  void RecordSessionError(int status, std::string_view request_id, const http::MessageHead* head,
                          size_t bytes_out);
  // The client closed (or reset) the connection in the middle of a request
  // head: one access-log line, status 0, `client_closed`, with what of the
  // head came whole. Once per connection.
  void RecordAbandonedHead();
  // What the parser kept of a request it refused (or that was cut) after
  // its request line: method, target, version, Host, User-Agent,
  // traceparent. Nothing when it kept nothing.
  void FillFromRefusedRequest(accesslog::Entry& e, std::string_view* traceparent) const;
  // After a response: close if asked to, else wait for the next request.
  void FinishConnectionAfterResponse();
  // Ends a WebSocket tunnel at once, both sides, `why` in the access log
  // (its listener was removed, the connection reached max_connection_age).
  void EndTunnel(std::string_view why);
  // Set when the connection is told to end (its listener removed, its
  // max_connection_age reached): a WebSocket it carries, or opens later, is
  // ended with this as its access log flag.
  const char* end_tunnel_reason_ = nullptr;  // a literal (8 bytes, not a view's 16)
  std::string_view end_tunnel_reason() const {
    return end_tunnel_reason_ != nullptr ? end_tunnel_reason_ : "";
  }
  void CloseNow();
  // CloseNow() for a connection ended with no message under way (idle,
  // drained): over TLS with close_notify first.
  void CloseBetweenMessages();
  // Closes once the output is written (a close the last response said, or
  // a client that half-closed with nothing it sent whole left to answer).
  void CloseOnceWritten();
  // The request's body is still arriving and too long (or unknown) to be
  // read and dropped after the response: the connection ends with it.
  bool UnreadBodyEndsConnection() const;
  void ArmIdleTimer();
  void OnDownstreamTimer();
  // StartDrain, and a response still under way at ListenerDrain::timeout()
  // is ended (end_tunnel_reason_ names why).
  void StartListenerDrain();
  // Reads the socket again unless the input already buffered is over the
  // watermark (FinishConnectionAfterResponse comes back once it is not).
  void ResumeReading();
  // ProcessInput() at the end of this pass, outside the current callback.
  void ResumeSoon();
  bool idle() const;

  Worker& worker_;
  std::unique_ptr<net::Connection> connection_;
  std::string listener_name_;
  // The last config that had listener_name_, once a newer one removed it.
  std::shared_ptr<const config::ConfigSnapshot> listener_snapshot_;
  std::string peer_ip_;
  // The listener's, in nanoseconds (8 bytes each, an absl::Duration's 16:
  // every idle connection has them); read as durations by the functions.
  int64_t request_headers_timeout_ns_;
  int64_t idle_timeout_ns_;
  absl::Duration request_headers_timeout() const { return FromNanos(request_headers_timeout_ns_); }
  absl::Duration idle_timeout() const { return FromNanos(idle_timeout_ns_); }
  static int64_t ToNanos(absl::Duration d);
  static absl::Duration FromNanos(int64_t ns);
  http::Http1Parser parser_;
  event::DeadlineTimer timer_;  // idle, then request-head timeout
  // Continues pipelined input outside callbacks (ResumeSoon); made when
  // first needed.
  std::unique_ptr<event::Timer> resume_timer_;
  // When a request head's first byte came (Unix nanoseconds; 0: none yet).
  int64_t head_began_ns_ = 0;
  // From the worker's spares at a request's head (Worker::TakeStream),
  // given back once the connection idles; kept for pipelined requests.
  std::unique_ptr<ProxyStream> stream_;
  std::vector<http::HeaderField> request_trailers_;  // OnTrailers -> OnMessageComplete
  // "/?q" for an absolute-form target with no path (rare: made when needed).
  std::unique_ptr<std::string> absolute_target_;
  // The flags, together: no padding after each (every idle connection has
  // one of these objects).
  bool timer_is_head_ = false;  // timer_ counts the request-head timeout
  bool abandoned_head_logged_ = false;
  bool stream_in_use_ = false;  // from OnHead to OnStreamDone / Abort
  bool in_process_input_ = false;
  bool process_again_ = false;
  bool close_after_response_ = false;
  // Asked to end gracefully (the worker drains, the listener was removed,
  // max_connection_age): the next response head says Connection: close
  // and the connection closes after it; one that already went without
  // it does not close the connection (the client may be sending its next
  // request, which would be lost), an idle one closes after 1 s.
  bool drain_requested_ = false;
  // The drain is only for limits copied at accept (a listener's idle
  // timeout changed, say): an idle connection keeps its own idle timeout
  // instead of the 1 s, so a client reusing it gets its next request
  // answered (with Connection: close) rather than a close it may race.
  bool soft_drain_ = false;
  bool closed_ = false;
  bool closing_ = false;               // flushing the last response, then closed
  bool peer_eof_ = false;  // the client half-closed: answer what it sent, then close
  bool awaiting_drain_ = false;  // output over the watermark: the next request waits
  bool request_message_open_ = false;  // the request's body is still arriving
  bool request_has_body_ = false;
  // Answered before the request head was whole (414, 431): close lingering.
  bool linger_on_close_ = false;
  bool request_body_discardable_ = false;  // Content-Length <= kDiscardableBodyBytes, no Expect
  bool client_http10_ = false;
  bool response_chunked_ = false;
  // The response's body ends with the connection (an HTTP/1.0 client).
  bool response_by_close_ = false;
  bool tunnel_ = false;  // a WebSocket: raw bytes, closes when it ends
  const bool secure_;    // a TLS listener's: no h2c preface
  uint32_t requests_ = 0;      // stops counting at its largest value
  uint32_t max_requests_ = 0;  // listener's max_requests_per_connection
  std::unique_ptr<event::Timer> age_timer_;  // listener's max_connection_age
  // Made when its listener moved, went, or changed its TLS rules
  // (StartListenerDrain).
  std::unique_ptr<event::Timer> listener_drain_timer_;
};

}  // namespace sluice::server

#endif  // SLUICE_DATAPLANE_SERVER_DOWNSTREAM_CONNECTION_H_
