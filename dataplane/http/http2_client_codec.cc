#include "dataplane/http/http2_client_codec.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>
#include <iterator>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "dataplane/http/http2_util.h"

namespace sluice::http {
namespace {

using http2::FieldList;
using http2::FieldSection;
using http2::MakeNv;

// RFC 9113 6.5.2 recommends allowing at least 100 concurrent streams; until
// the peer's SETTINGS say otherwise, that is what we assume (nghttp2 too).
constexpr uint32_t kAssumedMaxConcurrentStreams = 100;
// Our PINGs carry this payload; an ACK with another one is not ours.
constexpr uint8_t kPingPayload[8] = {'s', 'l', 'u', 'i', 'c', 'e', 'p', 'i'};

std::string_view View(const uint8_t* data, size_t len) {
  return std::string_view(reinterpret_cast<const char*>(data), len);
}

// For absl::StrCat, whose absl::string_view is not std::string_view here.
absl::string_view AbslView(const uint8_t* data, size_t len) {
  return absl::string_view(reinterpret_cast<const char*>(data), len);
}

}  // namespace

struct Http2ClientCodec::Stream {
  Stream(int32_t stream_id, const Http2ClientLimits& limits)
      : id(stream_id),
        window(limits.initial_window_size, limits.max_response_body_buffer) {}

  const int32_t id;

  // Request side.
  http2::OutboundBody body;       // ended(): the request's last byte is in
  bool headers_sent = false;      // the request's HEADERS frame went out
  bool request_end_sent = false;  // a frame with END_STREAM went out

  // Response side. `fields` collects the header block being decoded (a head,
  // then the trailers).
  int status = 0;
  HeaderMap fields;
  size_t header_bytes = 0;        // RFC 9113 size of the block being decoded
  bool response_started = false;  // a HEADERS frame arrived
  bool head_delivered = false;    // OnResponseHeaders was called
  http2::ReceiveWindow window;

  // How it ends, when it ends early.
  bool peer_reset = false;      // RST_STREAM received
  bool reset_by_codec = false;  // we sent RST_STREAM(codec_reset_code)
  uint32_t codec_reset_code = NGHTTP2_NO_ERROR;
  std::string reset_reason;  // set where the cause is known
};

// The nghttp2 callbacks, with access to the codec's internals. A callback
// into the caller may reset or finish streams: after one, a Stream pointer
// is not used again.
struct Http2ClientCodecAccess {
  static Http2ClientCodec* Codec(void* user_data) {
    return static_cast<Http2ClientCodec*>(user_data);
  }

  static int OnBeginHeaders(nghttp2_session* /*session*/,
                            const nghttp2_frame* frame, void* user_data) {
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    Http2ClientCodec::Stream* stream =
        Codec(user_data)->FindStream(frame->hd.stream_id);
    if (stream == nullptr) return 0;
    stream->response_started = true;
    stream->status = 0;
    stream->fields.Clear();
    stream->header_bytes = 0;
    return 0;
  }

  static int OnHeader(nghttp2_session* /*session*/, const nghttp2_frame* frame,
                      const uint8_t* name_bytes, size_t name_len,
                      const uint8_t* value_bytes, size_t value_len,
                      uint8_t /*flags*/, void* user_data) {
    Http2ClientCodec* codec = Codec(user_data);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    Http2ClientCodec::Stream* stream = codec->FindStream(frame->hd.stream_id);
    if (stream == nullptr) return 0;
    stream->header_bytes += name_len + value_len + http2::kFieldOverhead;
    if (stream->header_bytes > codec->limits_.max_header_list_bytes) {
      // nghttp2 decodes the rest of the block without calling us, only to
      // keep the HPACK table in step.
      codec->ResetByCodec(
          stream, NGHTTP2_ENHANCE_YOUR_CALM,
          absl::StrCat(
              stream->head_delivered ? "response trailers" : "response head",
              " too large: over ", codec->limits_.max_header_list_bytes,
              " bytes (name + value + 32 per field)"));
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    const std::string_view name = View(name_bytes, name_len);
    const std::string_view value = View(value_bytes, value_len);
    if (name == ":status") {
      // nghttp2 has checked: three digits, not 101, once, in a head. It
      // takes 0xx and 6xx-9xx for final statuses; RFC 9110 15 says they are
      // invalid.
      int status = 0;
      for (char c : value) status = status * 10 + (c - '0');
      if (status < 100 || status > 599) {
        codec->ResetByCodec(stream, NGHTTP2_PROTOCOL_ERROR,
                            absl::StrCat("malformed response: :status ",
                                         AbslView(value_bytes, value_len)));
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
      }
      stream->status = status;
      return 0;
    }
    // nghttp2 lets no other pseudo-header field through.
    if (!name.empty() && name[0] == ':') return 0;
    stream->fields.Add(name, value);
    return 0;
  }

  // A field nghttp2 would drop silently makes the response malformed
  // instead (RFC 9113 8.2.1): nghttp2 then resets the stream with
  // PROTOCOL_ERROR.
  static int OnInvalidHeader(nghttp2_session* /*session*/,
                             const nghttp2_frame* frame,
                             const uint8_t* name_bytes, size_t name_len,
                             const uint8_t* /*value*/, size_t /*value_len*/,
                             uint8_t /*flags*/, void* user_data) {
    Http2ClientCodec::Stream* stream =
        Codec(user_data)->FindStream(frame->hd.stream_id);
    if (stream != nullptr && stream->reset_reason.empty()) {
      stream->reset_reason =
          absl::StrCat("malformed response: invalid field \"",
                       absl::CHexEscape(AbslView(
                           name_bytes, std::min<size_t>(name_len, 64))),
                       "\"");
    }
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }

  // A frame that broke HTTP/2 or HTTP messaging rules. For a stream error
  // nghttp2 has queued RST_STREAM already; the stream's end is reported when
  // it closes, with this reason. (For a connection error, the connection's
  // reason is reported instead.)
  static int OnInvalidFrameRecv(nghttp2_session* /*session*/,
                                const nghttp2_frame* frame, int lib_error_code,
                                void* user_data) {
    if (frame->hd.stream_id == 0) return 0;
    Http2ClientCodec::Stream* stream =
        Codec(user_data)->FindStream(frame->hd.stream_id);
    if (stream != nullptr && stream->reset_reason.empty()) {
      const bool messaging = lib_error_code == NGHTTP2_ERR_HTTP_HEADER ||
                             lib_error_code == NGHTTP2_ERR_HTTP_MESSAGING;
      stream->reset_reason = absl::StrCat(
          messaging ? "malformed response: " : "upstream broke HTTP/2 rules: ",
          nghttp2_strerror(lib_error_code));
    }
    return 0;
  }

  static int OnFrameRecv(nghttp2_session* /*session*/,
                         const nghttp2_frame* frame, void* user_data) {
    Http2ClientCodec* codec = Codec(user_data);
    const int32_t id = frame->hd.stream_id;
    const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS: {
        Http2ClientCodec::Stream* stream = codec->FindStream(id);
        if (stream == nullptr) return 0;
        HeaderMap fields = std::move(stream->fields);
        stream->fields = HeaderMap();
        if (stream->head_delivered) {
          // Trailers; nghttp2 has checked that they end the stream.
          codec->FinishResponse(id);
          codec->callbacks_->OnResponseTrailers(id, fields);
          return 0;
        }
        const int status = stream->status;
        // Interim (1xx): nghttp2 has checked that it does not end the
        // stream and that a final head follows.
        if (status < 200) {
          codec->callbacks_->OnInformationalResponse(id, status, fields);
          return 0;
        }
        stream->head_delivered = true;
        if (end_stream) codec->FinishResponse(id);
        codec->callbacks_->OnResponseHeaders(id, status, fields, end_stream);
        return 0;
      }
      case NGHTTP2_DATA: {
        if (!end_stream || codec->FindStream(id) == nullptr) return 0;
        // nghttp2 has checked Content-Length against the body.
        codec->FinishResponse(id);
        codec->callbacks_->OnResponseData(id, std::string_view(), true);
        return 0;
      }
      case NGHTTP2_RST_STREAM: {
        Http2ClientCodec::Stream* stream = codec->FindStream(id);
        if (stream != nullptr) stream->peer_reset = true;
        return 0;
      }
      case NGHTTP2_SETTINGS:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) == 0) {
          codec->peer_settings_received_ = true;
          codec->callbacks_->OnSettings();
        }
        return 0;
      case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) != 0 &&
            codec->pings_in_flight_ > 0 &&
            std::memcmp(frame->ping.opaque_data, kPingPayload,
                        sizeof(kPingPayload)) == 0) {
          --codec->pings_in_flight_;
          codec->callbacks_->OnPingAck();
        }
        return 0;
      case NGHTTP2_GOAWAY:
        // nghttp2 closes the streams above last_stream_id with
        // REFUSED_STREAM right after this (OnStreamClose), and refuses the
        // requests not sent yet when it gets to them.
        codec->goaway_received_ = true;
        codec->goaway_last_stream_id_ = frame->goaway.last_stream_id;
        codec->callbacks_->OnGoaway(frame->goaway.last_stream_id,
                                    frame->goaway.error_code);
        return 0;
      default:
        return 0;
    }
  }

  static int OnDataChunkRecv(nghttp2_session* session, uint8_t /*flags*/,
                             int32_t stream_id, const uint8_t* data, size_t len,
                             void* user_data) {
    Http2ClientCodec* codec = Codec(user_data);
    // Connection-level credit goes back at once: one stalled stream must not
    // hold the connection window.
    nghttp2_session_consume_connection(session, len);
    Http2ClientCodec::Stream* stream = codec->FindStream(stream_id);
    if (stream == nullptr) {
      nghttp2_session_consume_stream(session, stream_id, len);
      return 0;
    }
    const size_t credit = stream->window.OnDelivered(len);
    if (credit > 0) nghttp2_session_consume_stream(session, stream_id, credit);
    codec->callbacks_->OnResponseData(stream_id, View(data, len), false);
    return 0;
  }

  static int OnFrameSend(nghttp2_session* /*session*/,
                         const nghttp2_frame* frame, void* user_data) {
    Http2ClientCodec* codec = Codec(user_data);
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
      case NGHTTP2_DATA: {
        Http2ClientCodec::Stream* stream =
            codec->FindStream(frame->hd.stream_id);
        if (stream == nullptr) return 0;
        if (frame->hd.type == NGHTTP2_HEADERS &&
            frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
          stream->headers_sent = true;
        }
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
          stream->request_end_sent = true;
        }
        return 0;
      }
      case NGHTTP2_GOAWAY:
        if (frame->goaway.error_code != NGHTTP2_NO_ERROR && !codec->failed_) {
          codec->failed_ = true;
          codec->failure_code_ = frame->goaway.error_code;
          codec->error_ =
              absl::StrCat("connection error: sent GOAWAY ",
                           nghttp2_http2_strerror(frame->goaway.error_code),
                           frame->goaway.opaque_data_len > 0 ? ": " : "",
                           AbslView(frame->goaway.opaque_data,
                                    frame->goaway.opaque_data_len));
        }
        return 0;
      default:
        return 0;
    }
  }

  // A HEADERS frame could not be sent. For a request, nghttp2 closes the
  // stream with REFUSED_STREAM next (OnStreamClose), which is what it is
  // when the connection is going away; a request head nghttp2 cannot send
  // at all (over its 64 KiB block limit) is no use sending elsewhere, so it
  // is not reported as refused. Trailers that cannot go out leave the
  // request unfinishable: the stream is reset.
  static int OnFrameNotSend(nghttp2_session* /*session*/,
                            const nghttp2_frame* frame, int lib_error_code,
                            void* user_data) {
    Http2ClientCodec* codec = Codec(user_data);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    Http2ClientCodec::Stream* stream = codec->FindStream(frame->hd.stream_id);
    if (stream == nullptr) return 0;
    if (lib_error_code == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED ||
        lib_error_code == NGHTTP2_ERR_SESSION_CLOSING) {
      stream->reset_reason = "request not sent: the connection is going away";
      return 0;
    }
    if (lib_error_code == NGHTTP2_ERR_STREAM_CLOSED ||
        lib_error_code == NGHTTP2_ERR_STREAM_CLOSING) {
      return 0;
    }
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      // The peer never heard of the stream: no RST_STREAM for it.
      stream->reset_by_codec = true;
      stream->codec_reset_code = NGHTTP2_INTERNAL_ERROR;
      stream->reset_reason = absl::StrCat("request head not sendable: ",
                                          nghttp2_strerror(lib_error_code));
      return 0;
    }
    codec->ResetByCodec(stream, NGHTTP2_INTERNAL_ERROR,
                        absl::StrCat("request trailers not sendable: ",
                                     nghttp2_strerror(lib_error_code)));
    return 0;
  }

  // A stream still known here ends before its response completed (finished
  // and caller-reset streams are gone already).
  static int OnStreamClose(nghttp2_session* /*session*/, int32_t stream_id,
                           uint32_t error_code, void* user_data) {
    Http2ClientCodec* codec = Codec(user_data);
    auto it = codec->streams_.find(stream_id);
    if (it == codec->streams_.end()) {
      // A finished stream closed (the peer's RST_STREAM): nothing to stop.
      std::erase(codec->finished_early_, stream_id);
      return 0;
    }
    std::unique_ptr<Http2ClientCodec::Stream> stream = std::move(it->second);
    codec->streams_.erase(it);
    const uint32_t code =
        stream->reset_by_codec ? stream->codec_reset_code : error_code;
    // REFUSED_STREAM from the peer, above its GOAWAY's last stream id, or a
    // request nghttp2 could not send: not processed. A peer that answered
    // and then refused contradicts itself; then it is not safe to retry.
    const bool refused = code == NGHTTP2_REFUSED_STREAM &&
                         !stream->reset_by_codec && !stream->response_started;
    std::string reason = std::move(stream->reset_reason);
    if (reason.empty()) {
      if (stream->peer_reset) {
        // The code's name: the callers say who reset what.
        reason = nghttp2_http2_strerror(code);
      } else if (code == NGHTTP2_REFUSED_STREAM && codec->goaway_received_) {
        reason = absl::StrCat("upstream GOAWAY: stream ", stream_id,
                              " is above its last stream id ",
                              codec->goaway_last_stream_id_, ", not processed");
      } else if (code == NGHTTP2_PROTOCOL_ERROR) {
        reason = "malformed response (PROTOCOL_ERROR)";
      } else {
        reason = absl::StrCat("stream error: ", nghttp2_http2_strerror(code));
      }
    }
    codec->callbacks_->OnStreamReset(stream_id, code, refused,
                                     stream->peer_reset && !stream->reset_by_codec, reason);
    return 0;
  }

  static ssize_t ReadRequestBody(nghttp2_session* session, int32_t stream_id,
                                 uint8_t* buf, size_t length,
                                 uint32_t* data_flags,
                                 nghttp2_data_source* /*source*/,
                                 void* user_data) {
    Http2ClientCodec* codec = Codec(user_data);
    Http2ClientCodec::Stream* stream = codec->FindStream(stream_id);
    // Streams leave the map only when they are reset or their response is
    // complete; nghttp2 does not read the body of either.
    if (stream == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    bool writable = false;
    const ssize_t rv =
        stream->body.Read(session, stream_id, buf, length, data_flags,
                          codec->limits_.stream_send_low_watermark, &writable);
    if (writable) codec->writable_.push_back(stream_id);
    return rv;
  }
};

Http2ClientCodec::Http2ClientCodec(Http2ClientCallbacks* callbacks,
                                   const Http2ClientLimits& limits)
    : callbacks_(callbacks),
      limits_(limits),
      memory_(std::make_unique<http2::SessionMemory>()),
      whole_headers_(std::make_unique<http2::WholeFrameHeaderFeeder>(0)) {
  SLUICE_CHECK(callbacks_ != nullptr);
  SLUICE_CHECK(limits_.initial_window_size <= NGHTTP2_MAX_WINDOW_SIZE);
  SLUICE_CHECK(limits_.connection_window_size <= NGHTTP2_MAX_WINDOW_SIZE);

  nghttp2_session_callbacks* cbs = nullptr;
  SLUICE_CHECK(nghttp2_session_callbacks_new(&cbs) == 0);
  using A = Http2ClientCodecAccess;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs,
                                                          A::OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cbs, A::OnHeader);
  nghttp2_session_callbacks_set_on_invalid_header_callback(cbs,
                                                           A::OnInvalidHeader);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(
      cbs, A::OnInvalidFrameRecv);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, A::OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
                                                            A::OnDataChunkRecv);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, A::OnFrameSend);
  nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs,
                                                           A::OnFrameNotSend);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, A::OnStreamClose);

  nghttp2_option* opt = nullptr;
  SLUICE_CHECK(nghttp2_option_new(&opt) == 0);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  http2::SetSessionGuards(opt, limits_.max_header_list_bytes,
                           /*peer_is_upstream=*/true);
  // nghttp2's own assumption, pinned: CanOpenStream() relies on it.
  nghttp2_option_set_peer_max_concurrent_streams(opt,
                                                 kAssumedMaxConcurrentStreams);

  memory_->MakingSession(true);
  const int rv = nghttp2_session_client_new3(&session_, cbs, this, opt, memory_->mem());
  memory_->MakingSession(false);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  SLUICE_CHECK(rv == 0);

  // nghttp2 writes the client connection preface before these.
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, limits_.initial_window_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits_.max_header_list_bytes},
  };
  http2::SubmitLocalSettings(session_, settings, std::size(settings),
                             limits_.connection_window_size);
}

Http2ClientCodec::~Http2ClientCodec() { nghttp2_session_del(session_); }

Http2ClientCodec::Stream* Http2ClientCodec::FindStream(
    int32_t stream_id) const {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? nullptr : it->second.get();
}

bool Http2ClientCodec::Receive(std::string_view bytes) {
  SLUICE_CHECK(!in_session_call_);
  if (failed_ || transport_closed_) return false;
  in_session_call_ = true;
  memory_->NoteInput();  // streams may come and go
  if (const int rv = whole_headers_->Receive(session_, bytes); rv != 0) {
    FailConnection(http2::GoawayCodeFor(rv),
                   absl::StrCat("connection error: ", nghttp2_strerror(rv)));
  }
  for (int32_t id : finished_early_) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
  }
  finished_early_.clear();
  const size_t had = output_.size();
  OnDrained(http2::DrainSession(session_, &output_, limits_.max_buffered_output));
  if (output_.size() > had) memory_->NoteOutput();
  FinishSessionCall();
  in_session_call_ = false;
  return !failed_;
}

void Http2ClientCodec::TakeOutput(std::string* out, size_t max_bytes) {
  SLUICE_CHECK(!in_session_call_);
  if (transport_closed_) return;
  in_session_call_ = true;
  const size_t had = out->size() + output_.size();
  OnDrained(http2::TakeSessionOutput(session_, &output_, out, max_bytes));
  if (out->size() > had) memory_->NoteOutput();
  FinishSessionCall();
  in_session_call_ = false;
}

void Http2ClientCodec::OnDrained(int rv) {
  if (rv != 0) {
    FailConnection(NGHTTP2_INTERNAL_ERROR,
                   absl::StrCat("connection error: ", nghttp2_strerror(rv)));
  }
}

void Http2ClientCodec::FinishSessionCall() {
  if (!failed_ && SessionTerminating()) {
    // The GOAWAY waits behind output held back at max_buffered_output; the
    // connection is over all the same.
    failed_ = true;
    failure_code_ = NGHTTP2_PROTOCOL_ERROR;
    error_ = "connection error: the upstream broke the HTTP/2 protocol";
  }
  NotifyWritable();
  if (failed_ && !streams_.empty()) {
    EndAllStreams(failure_code_, error_);
  }
}

bool Http2ClientCodec::SessionTerminating() const {
  // Requests stop being allowed after GOAWAY (received, or sent by
  // Shutdown()), when stream ids run out, or when nghttp2 is terminating the
  // session.
  return !goaway_received_ && !goaway_sent_ &&
         nghttp2_session_get_next_stream_id(session_) <=
             static_cast<uint32_t>(std::numeric_limits<int32_t>::max()) &&
         nghttp2_session_check_request_allowed(session_) == 0;
}

void Http2ClientCodec::NotifyWritable() {
  if (writable_.empty()) return;
  std::vector<int32_t> ids;
  ids.swap(writable_);
  for (int32_t id : ids) {
    Stream* stream = FindStream(id);
    if (stream == nullptr) continue;
    if (stream->body.queued() > limits_.stream_send_low_watermark) continue;
    callbacks_->OnStreamWritable(id);
  }
}

bool Http2ClientCodec::WantsWrite() const {
  return !transport_closed_ &&
         (!output_.empty() || nghttp2_session_want_write(session_) != 0);
}

size_t Http2ClientCodec::ReleaseIdleMemory() {
  // A frame nghttp2 is sending is in the frame buffer: not while it wants to
  // write, nor after its terminating GOAWAY (then it says it wants neither).
  if (in_session_call_ || WantsWrite() || !WantsRead()) return 0;
  return memory_->ReleaseIdlePages();
}

bool Http2ClientCodec::WantsRead() const {
  return !failed_ && !transport_closed_ &&
         nghttp2_session_want_read(session_) != 0;
}

void Http2ClientCodec::FailConnection(uint32_t h2_error_code,
                                      std::string reason) {
  if (failed_) return;
  failed_ = true;
  failure_code_ = h2_error_code;
  error_ = std::move(reason);
  nghttp2_session_terminate_session(session_, h2_error_code);
}

void Http2ClientCodec::EndAllStreams(uint32_t error_code,
                                     std::string_view reason) {
  std::vector<int32_t> ids;
  ids.reserve(streams_.size());
  for (const auto& [id, stream] : streams_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  // `reason` may be error_, which a callback cannot change (the connection
  // has failed or closed), so the view stays valid.
  for (int32_t id : ids) {
    auto it = streams_.find(id);
    if (it == streams_.end()) continue;  // reset by an earlier callback
    const bool refused = !it->second->headers_sent;
    streams_.erase(it);
    callbacks_->OnStreamReset(id, error_code, refused, /*by_peer=*/false, reason);
  }
}

void Http2ClientCodec::FinishResponse(int32_t stream_id) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return;
  if (!it->second->request_end_sent) {
    // RFC 9113 8.1: the response does not need the rest of the request.
    // Sent once the bytes at hand are read: unless the peer reset the
    // stream itself right after its answer (RFC 9113 5.4.2: no RST_STREAM
    // answers one).
    finished_early_.push_back(stream_id);
  }
  streams_.erase(it);
}

void Http2ClientCodec::ResetByCodec(Stream* stream, uint32_t error_code,
                                    std::string reason) {
  stream->reset_by_codec = true;
  stream->codec_reset_code = error_code;
  stream->reset_reason = std::move(reason);
  stream->fields = HeaderMap();
  stream->body.Drop();
  // Queued before nghttp2 queues its own RST_STREAM(INTERNAL_ERROR) for the
  // failed header callback, which then does nothing: the peer sees this
  // code. The stream's end is reported when the frame goes out.
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream->id,
                            error_code);
}

int32_t Http2ClientCodec::SubmitRequest(const Http2Request& request,
                                        bool end_stream) {
  if (!CanOpenStream()) return -1;
  // A plain CONNECT has neither :scheme nor :path; an extended one has both.
  const bool extended = !request.protocol.empty();
  const bool connect = request.method == "CONNECT" && !extended;
  if (request.method.empty() ||
      (!connect && (request.scheme.empty() || request.path.empty())) ||
      (extended && (request.method != "CONNECT" ||
                    !peer_allows_extended_connect()))) {
    return -1;
  }
  FieldList fields;
  fields.reserve(request.field_count);
  std::string_view host;
  for (size_t i = 0; i < request.field_count; ++i) {
    const HeaderField& f = request.fields[i];
    if (host.empty() && f.name.size() == 4 &&
        http2::ToLower(f.name) == "host") {
      host = f.value;
    }
    http2::AddSendableField(FieldSection::kRequestHead, f.name, f.value,
                            &fields);
  }
  const std::string_view authority =
      request.authority.empty() ? host : request.authority;
  if (connect && authority.empty()) return -1;
  std::vector<nghttp2_nv> pseudo;
  pseudo.push_back(MakeNv(":method", request.method));
  if (extended) pseudo.push_back(MakeNv(":protocol", request.protocol));
  if (!connect) {
    pseudo.push_back(MakeNv(":scheme", request.scheme));
  }
  if (!authority.empty()) pseudo.push_back(MakeNv(":authority", authority));
  if (!connect) pseudo.push_back(MakeNv(":path", request.path));
  const std::vector<nghttp2_nv> nva = http2::ToNva(std::move(pseudo), fields);

  nghttp2_data_provider provider;
  provider.source.ptr = nullptr;
  provider.read_callback = Http2ClientCodecAccess::ReadRequestBody;
  const int32_t id =
      nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(),
                             end_stream ? nullptr : &provider, nullptr);
  if (id < 0) return -1;
  auto stream = std::make_unique<Stream>(id, limits_);
  if (end_stream) {
    stream->body.Submit(session_, id, std::string_view(), true,
                        limits_.stream_send_low_watermark);
  }
  streams_[id] = std::move(stream);
  return id;
}

bool Http2ClientCodec::SubmitData(int32_t stream_id, std::string_view data,
                                  bool end_stream) {
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr || stream->body.ended() || stream->reset_by_codec) {
    return false;
  }
  stream->body.Submit(session_, stream_id, data, end_stream,
                      limits_.stream_send_low_watermark);
  return true;
}

bool Http2ClientCodec::SubmitTrailers(int32_t stream_id,
                                      const HeaderField* fields, size_t count) {
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr || stream->body.ended() || stream->reset_by_codec) {
    return false;
  }
  // An empty trailer section is just the end of the body.
  stream->body.SetTrailers(http2::SendableFields(FieldSection::kTrailers, fields, count));
  stream->body.Submit(session_, stream_id, std::string_view(), true,
                      limits_.stream_send_low_watermark);
  return true;
}

void Http2ClientCodec::ResetStream(int32_t stream_id, uint32_t error_code) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return;
  streams_.erase(it);
  // A request whose HEADERS is still queued is never sent; nghttp2 then
  // closes the stream without a frame.
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code);
}

size_t Http2ClientCodec::QueuedBytes(int32_t stream_id) const {
  const Stream* stream = FindStream(stream_id);
  return stream == nullptr ? 0 : stream->body.queued();
}

void Http2ClientCodec::ConsumeResponseData(int32_t stream_id, size_t n) {
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr) return;
  const size_t credit = stream->window.OnConsumed(n);
  if (credit > 0) nghttp2_session_consume_stream(session_, stream_id, credit);
}

void Http2ClientCodec::SubmitPing() {
  if (failed_ || transport_closed_) return;
  if (nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, kPingPayload) == 0) {
    ++pings_in_flight_;
  }
}

void Http2ClientCodec::Shutdown() {
  if (failed_ || transport_closed_ || goaway_sent_) return;
  goaway_sent_ = true;
  // The last stream id is the peer's (pushed streams): none, push is off.
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_),
                        NGHTTP2_NO_ERROR, nullptr, 0);
}

void Http2ClientCodec::OnTransportClosed() {
  SLUICE_CHECK(!in_session_call_);
  if (transport_closed_) return;
  transport_closed_ = true;
  in_session_call_ = true;
  EndAllStreams(NGHTTP2_INTERNAL_ERROR, "connection closed");
  in_session_call_ = false;
}

bool Http2ClientCodec::CanOpenStream() const {
  return !failed_ && !transport_closed_ && !goaway_received_ && !goaway_sent_ &&
         streams_.size() < peer_max_concurrent_streams() &&
         nghttp2_session_check_request_allowed(session_) != 0;
}

bool Http2ClientCodec::peer_allows_extended_connect() const {
  return peer_settings_received_ &&
         nghttp2_session_get_remote_settings(
             session_, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL) == 1;
}

uint32_t Http2ClientCodec::peer_max_concurrent_streams() const {
  const uint32_t value = nghttp2_session_get_remote_settings(
      session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  return peer_settings_received_
             ? value
             : std::min(value, kAssumedMaxConcurrentStreams);
}

}  // namespace sluice::http
