#include "dataplane/http/http2_server_codec.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <iterator>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "dataplane/http/http1_parser.h"
#include "dataplane/http/http2_util.h"
#include "dataplane/http/http_util.h"

namespace sluice::http {
namespace {

using http2::FieldList;
using http2::FieldSection;
using http2::MakeNv;

// nghttp2's RST_STREAM token bucket (a clock inside nghttp2): a burst of
// 1000, 33 per second refilled. The codec's own, clock-free premature-reset
// count (Http2Limits) trips well before it. The other nghttp2 guards are
// http2::SetSessionGuards().
constexpr uint64_t kStreamResetBurst = 1000;
// The largest header block nghttp2 may send (its own default: 64 KiB).
constexpr size_t kMaxSendHeaderBlockBytes = 1 << 20;
constexpr uint64_t kStreamResetRate = 33;
// Graceful shutdown waits for the ACK of a PING with this payload.
constexpr uint8_t kShutdownPing[8] = {'s', 'l', 'u', 'i', 'c', 'e', 'g', 'a'};
// A request head up to this many times max_header_list_bytes is decoded to
// its end and answered with 431; beyond that the stream is reset at once.
constexpr size_t kMaxHeaderOverrunFactor = 2;

FieldList SendableFields(FieldSection section, const HeaderMap& headers) {
  FieldList out;
  out.reserve(headers.size());
  for (const HeaderMap::Field& f : headers.fields()) {
    http2::AddSendableField(section, f.name, f.value, &out);
  }
  return out;
}

// Decimal digits of a status (100-599) or of a content length.
constexpr size_t kDecimalDigits = 20;
std::string_view ToDecimal(uint64_t n, char (&buf)[kDecimalDigits]) {
  const auto [end, ec] = std::to_chars(buf, buf + kDecimalDigits, n);
  SLUICE_CHECK(ec == std::errc());
  return std::string_view(buf, static_cast<size_t>(end - buf));
}

}  // namespace

struct Http2ServerCodec::Stream {
  Stream(int32_t stream_id, const Http2Limits& limits)
      : id(stream_id),
        window(limits.initial_window_size, limits.max_request_body_buffer) {}

  const int32_t id;

  // Request side. `headers` collects the head, then the trailers.
  RequestPseudo pseudo;
  HeaderMap headers;
  std::string cookie;  // crumbs joined with "; "
  bool has_cookie = false;
  size_t header_bytes = 0;  // RFC 9113 size of the block being decoded
  bool too_large = false;
  std::string too_large_user_agent;  // for the 431's access-log line
  bool grpc = false;  // content-type application/grpc*, for the codec's 431
  bool in_trailers = false;
  bool delivered = false;         // OnRequestHeaders was called
  bool request_complete = false;  // END_STREAM received
  http2::ReceiveWindow window;

  // Response side.
  bool final_response = false;     // final response submitted
  bool codec_reply = false;        // the codec's own 431, body and all
  http2::OutboundBody body;        // ended(): the response's last byte is in
  bool response_end_sent = false;  // a frame with END_STREAM went out
  // The request's content-length (-1: none) and the DATA payload bytes
  // received so far.
  int64_t declared_length = -1;
  uint64_t body_received = 0;
  // The response ended first and the rest of the request is awaited, to be
  // dropped as it comes (the stream is `closed` for the caller; nghttp2
  // holds the rest to the declared length).
  bool lingering = false;

  // Response heads (interim and final) submitted, and sent as HEADERS.
  uint32_t heads_submitted = 0;
  uint32_t heads_sent = 0;

  // How it ends.
  bool reset_by_caller = false;
  // The caller reset the stream while its response head or body was still
  // queued, and the queue fit the send windows: it goes out first, then
  // RST_STREAM with reset_code (from the data provider).
  bool reset_after_queued = false;
  uint32_t reset_code = 0;
  bool reset_by_codec = false;  // counted and reported when it was decided
  bool peer_reset = false;
  // The caller sees no more events and its submits are refused.
  bool closed = false;
};

// The nghttp2 callbacks, with access to the codec's internals.
struct Http2ServerCodecAccess {
  static Http2ServerCodec* Codec(void* user_data) {
    return static_cast<Http2ServerCodec*>(user_data);
  }

  static int OnBeginHeaders(nghttp2_session* /*session*/,
                            const nghttp2_frame* frame, void* user_data) {
    Http2ServerCodec* codec = Codec(user_data);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    const int32_t id = frame->hd.stream_id;
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      if (codec->found_id_ == id) codec->found_id_ = 0;
      codec->streams_[id] =
          std::make_unique<Http2ServerCodec::Stream>(id, codec->limits_);
      if (++codec->streams_in_window_ >=
          codec->limits_.premature_reset_window) {
        codec->streams_in_window_ = 0;
        codec->premature_in_window_ = 0;
      }
      return 0;
    }
    Http2ServerCodec::Stream* stream = codec->FindStream(id);
    if (stream == nullptr) return 0;
    stream->in_trailers = true;
    stream->headers.Clear();
    stream->header_bytes = 0;
    stream->too_large = false;
    return 0;
  }

  static int OnHeader(nghttp2_session* /*session*/, const nghttp2_frame* frame,
                      const uint8_t* name_bytes, size_t name_len,
                      const uint8_t* value_bytes, size_t value_len,
                      uint8_t /*flags*/, void* user_data) {
    Http2ServerCodec* codec = Codec(user_data);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    Http2ServerCodec::Stream* stream = codec->FindStream(frame->hd.stream_id);
    if (stream == nullptr) return 0;
    if (stream->closed) return 0;
    stream->header_bytes += name_len + value_len + http2::kFieldOverhead;
    // The last content-type decides, as for the stream (ProxyStream).
    if (name_len == 12 && !stream->in_trailers &&
        std::memcmp(name_bytes, "content-type", 12) == 0) {
      stream->grpc = ClassifyGrpcContentType(std::string_view(
                         reinterpret_cast<const char*>(value_bytes), value_len)) !=
                     GrpcContentType::kNone;
    }
    const size_t limit = codec->limits_.max_header_list_bytes;
    if (stream->in_trailers && stream->headers.size() >= codec->limits_.max_trailer_fields) {
      codec->RejectHeaderBlock(stream);
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (stream->header_bytes > limit) {
      if (stream->in_trailers ||
          stream->header_bytes > kMaxHeaderOverrunFactor * limit) {
        // Not worth decoding further (an HPACK bomb expands without end),
        // or trailers, which can no longer get a 431: reset the stream now.
        // nghttp2 then decodes the rest of the block only to keep the HPACK
        // table in sync, without validating (scanning) the field values.
        codec->RejectHeaderBlock(stream);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
      }
      if (!stream->too_large) {
        // 431 at the end of the block; keep nothing until then but what
        // the access log names the request by: the pseudo-header fields,
        // which came first, and the User-Agent if it came (as HTTP/1's
        // 431 is logged).
        stream->too_large = true;
        if (const std::string* agent = stream->headers.Get("user-agent")) {
          stream->too_large_user_agent = *agent;
        }
        stream->headers = HeaderMap();
        stream->cookie = std::string();
        stream->has_cookie = false;
      }
      return 0;
    }
    if (stream->too_large) return 0;
    const std::string_view name(reinterpret_cast<const char*>(name_bytes),
                                name_len);
    const std::string_view value(reinterpret_cast<const char*>(value_bytes),
                                 value_len);
    if (!name.empty() && name[0] == ':') {
      // nghttp2 has checked: request heads only, known names, no repeats.
      RequestPseudo& p = stream->pseudo;
      if (name == ":method") {
        p.method.assign(value);
      } else if (name == ":scheme") {
        p.scheme.assign(value);
      } else if (name == ":authority") {
        p.authority.assign(value);
      } else if (name == ":path") {
        p.path.assign(value);
      } else if (name == ":protocol") {
        p.protocol.assign(value);
      }
      return 0;
    }
    if (name == "cookie" && !stream->in_trailers) {
      // Empty crumbs carry nothing, and joining them would leave white space
      // at the ends of the value.
      if (value.empty()) return 0;
      if (stream->has_cookie) stream->cookie.append("; ");
      stream->cookie.append(value);
      stream->has_cookie = true;
      return 0;
    }
    stream->headers.Add(name, value);
    return 0;
  }

  // A field nghttp2 would drop silently: reject the request instead (RFC 9113
  // 8.2.1: malformed). nghttp2 then resets the stream with PROTOCOL_ERROR.
  static int OnInvalidHeader(nghttp2_session* /*session*/,
                             const nghttp2_frame* /*frame*/,
                             const uint8_t* /*name*/, size_t /*name_len*/,
                             const uint8_t* /*value*/, size_t /*value_len*/,
                             uint8_t /*flags*/, void* /*user_data*/) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }

  static int OnFrameRecv(nghttp2_session* session, const nghttp2_frame* frame,
                         void* user_data) {
    Http2ServerCodec* codec = Codec(user_data);
    const int32_t id = frame->hd.stream_id;
    const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS: {
        Http2ServerCodec::Stream* stream = codec->FindStream(id);
        if (stream == nullptr) return 0;
        if (end_stream) stream->request_complete = true;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
          OnRequestHead(codec, stream, end_stream);
        } else if (!stream->closed) {
          OnTrailers(codec, stream);
        }
        return 0;
      }
      case NGHTTP2_DATA: {
        if (!end_stream) return 0;
        Http2ServerCodec::Stream* stream = codec->FindStream(id);
        if (stream == nullptr) return 0;
        stream->request_complete = true;
        if (stream->delivered && !stream->closed) {
          codec->callbacks_->OnRequestData(id, std::string_view(), true);
        }
        return 0;
      }
      case NGHTTP2_RST_STREAM: {
        Http2ServerCodec::Stream* stream = codec->FindStream(id);
        if (stream == nullptr) return 0;
        stream->peer_reset = true;
        // Premature: reset before its response began, and (the caller says)
        // soon after it started. A client that cancels a stream it is being
        // answered on (a gRPC call it no longer needs, an aborted download)
        // is no attacker: the work was done; nor is one giving up on a slow
        // call it waited for.
        if (!stream->final_response &&
            (!stream->delivered || stream->closed ||
             codec->callbacks_->ClientResetIsPremature(id))) {
          codec->CountPrematureEnd();
        }
        return 0;
      }
      case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) != 0 &&
            codec->shutdown_ ==
                Http2ServerCodec::ShutdownState::kAwaitingPingAck &&
            std::memcmp(frame->ping.opaque_data, kShutdownPing,
                        sizeof(kShutdownPing)) == 0) {
          codec->SubmitFinalGoaway();
        }
        return 0;
      default:
        return 0;
    }
  }

  // RFC 9218 priorities (the settings turn RFC 7540's off). A stream whose
  // client sent no Priority field is made incremental: nghttp2 takes the
  // RFC's default (not incremental) and sends such streams one after
  // another, whole, so on a slow link the later ones got nothing for a
  // minute and were cut at the route's idle timeout (100 streams, 28
  // starved). RFC 9218 10 leaves the server its own scheduling; Envoy and
  // nginx share the link among the streams that are ready. A client's own
  // Priority field (or a later PRIORITY_UPDATE) is followed as nghttp2
  // reads it: `u=1` without `i` asks for one response after another.
  static void SetStreamPriority(Http2ServerCodec* codec, const Http2ServerCodec::Stream* stream) {
    if (stream->headers.Get("priority") != nullptr) return;
    const nghttp2_extpri extpri{NGHTTP2_EXTPRI_DEFAULT_URGENCY, 1};
    nghttp2_session_change_extpri_stream_priority(codec->session_, stream->id, &extpri,
                                                  /*ignore_client_signal=*/0);
  }

  static void OnRequestHead(Http2ServerCodec* codec,
                            Http2ServerCodec::Stream* stream, bool end_stream) {
    if (stream->too_large) {
      stream->closed = true;
      Http2ServerCallbacks::ReplyFields reply;
      reply.grpc = stream->grpc;
      reply.pseudo = &stream->pseudo;
      reply.user_agent = stream->too_large_user_agent;
      codec->callbacks_->OnRequestHeadersTooLarge(stream->id, &reply);
      codec->RespondHeadersTooLarge(stream, reply);
      codec->CountPrematureEnd();
      return;
    }
    if (stream->has_cookie) {
      stream->headers.Add("cookie", stream->cookie);
      stream->cookie = std::string();
    }
    stream->delivered = true;
    codec->last_delivered_ = std::max(codec->last_delivered_, stream->id);
    SetStreamPriority(codec, stream);
    if (const std::string* length = stream->headers.Get("content-length")) {
      uint64_t n = 0;
      // nghttp2 has checked it (digits) and holds the body to it.
      if (absl::SimpleAtoi(*length, &n) && n <= static_cast<uint64_t>(INT64_MAX)) {
        stream->declared_length = static_cast<int64_t>(n);
      }
    }
    codec->callbacks_->OnRequestHeaders(stream->id, std::move(stream->pseudo),
                                        std::move(stream->headers), end_stream);
    stream->headers = HeaderMap();
  }

  static void OnTrailers(Http2ServerCodec* codec,
                         Http2ServerCodec::Stream* stream) {
    if (!stream->delivered) return;
    codec->callbacks_->OnRequestTrailers(stream->id,
                                         std::move(stream->headers));
    stream->headers = HeaderMap();
  }

  static int OnDataChunkRecv(nghttp2_session* session, uint8_t /*flags*/,
                             int32_t stream_id, const uint8_t* data, size_t len,
                             void* user_data) {
    Http2ServerCodec* codec = Codec(user_data);
    // Connection-level credit goes back at once: one stalled stream must not
    // hold the connection window.
    nghttp2_session_consume_connection(session, len);
    Http2ServerCodec::Stream* stream = codec->FindStream(stream_id);
    if (stream != nullptr) stream->body_received += len;
    if (stream == nullptr || stream->closed || !stream->delivered) {
      nghttp2_session_consume_stream(session, stream_id, len);
      return 0;
    }
    const size_t credit = stream->window.OnDelivered(len);
    if (credit > 0) nghttp2_session_consume_stream(session, stream_id, credit);
    codec->callbacks_->OnRequestData(
        stream_id, std::string_view(reinterpret_cast<const char*>(data), len),
        false);
    return 0;
  }

  static int OnFrameSend(nghttp2_session* session, const nghttp2_frame* frame,
                         void* user_data) {
    Http2ServerCodec* codec = Codec(user_data);
    if (frame->hd.type == NGHTTP2_DATA) codec->frames_received_->OnDataFrameSent();
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
      case NGHTTP2_DATA: {
        Http2ServerCodec::Stream* stream =
            codec->FindStream(frame->hd.stream_id);
        if (stream == nullptr) return 0;
        if (frame->hd.type == NGHTTP2_HEADERS &&
            stream->heads_sent < stream->heads_submitted) {
          ++stream->heads_sent;
        }
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) return 0;
        stream->response_end_sent = true;
        // RFC 9113 8.1: the response is complete, the request is not; the
        // client is asked to stop (RST_STREAM NO_ERROR). But a client still
        // sending a short body takes a reset for a failure and drops the
        // response (curl 7.88: "Stream error in the HTTP/2 framing layer",
        // 8 of 60 small POSTs answered at once). So a rest that the
        // client may send within the windows it has (a declared
        // content-length) is read and dropped, and the stream ends with its
        // END_STREAM. A longer one is refused at once: such a client may
        // stop reading once the response is whole (curl does) and never see
        // the credit it would need.
        if (!stream->request_complete && !stream->peer_reset && !stream->reset_by_caller &&
            !stream->reset_by_codec) {
          // Until the client acknowledges our SETTINGS, nghttp2 counts the
          // stream's window from the default 65535, while the client, once
          // it reads them, may send up to initial_window_size: a client with
          // prior knowledge sends its request before it reads them (a body
          // refused 413 at its HEADERS was reset, and curl 7.88 showed no
          // answer at all).
          const int64_t unacknowledged = std::max<int64_t>(
              0, static_cast<int64_t>(codec->limits_.initial_window_size) -
                     nghttp2_session_get_local_settings(session,
                                                        NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE));
          const int64_t window = std::min<int64_t>(
              nghttp2_session_get_stream_local_window_size(session, stream->id) + unacknowledged,
              nghttp2_session_get_local_window_size(session));
          // After the final GOAWAY nothing lingers: the connection is to
          // close once its streams end.
          const bool fits = codec->shutdown_ != Http2ServerCodec::ShutdownState::kFinalGoawaySubmitted &&
                            stream->declared_length >= 0 && window >= 0 &&
                            static_cast<uint64_t>(stream->declared_length) >=
                                stream->body_received &&
                            static_cast<uint64_t>(stream->declared_length) -
                                    stream->body_received <=
                                static_cast<uint64_t>(window);
          if (fits) {
            stream->lingering = true;
            const size_t credit = stream->window.OnConsumed(stream->window.held());
            if (credit > 0) nghttp2_session_consume_stream(session, stream->id, credit);
          } else {
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream->id,
                                      NGHTTP2_NO_ERROR);
          }
          // For the caller the stream is over.
          if (stream->delivered && !stream->closed) {
            stream->closed = true;
            codec->callbacks_->OnStreamReset(stream->id, NGHTTP2_NO_ERROR);
          }
        }
        return 0;
      }
      case NGHTTP2_GOAWAY:
        if (frame->goaway.error_code != NGHTTP2_NO_ERROR && !codec->failed_) {
          codec->failed_ = true;
          switch (frame->goaway.error_code) {
            case NGHTTP2_ENHANCE_YOUR_CALM:
              codec->error_kind_ = "flood";
              break;
            case NGHTTP2_COMPRESSION_ERROR:
              codec->error_kind_ = "compression";
              break;
            case NGHTTP2_FLOW_CONTROL_ERROR:
              codec->error_kind_ = "flow_control";
              break;
            case NGHTTP2_PROTOCOL_ERROR:
            case NGHTTP2_FRAME_SIZE_ERROR:
            case NGHTTP2_STREAM_CLOSED:
              codec->error_kind_ = "protocol";
              break;
            default:
              codec->error_kind_ = "other";
          }
          codec->error_ = absl::StrCat(
              "connection error: sent GOAWAY ",
              nghttp2_http2_strerror(frame->goaway.error_code),
              frame->goaway.opaque_data_len > 0 ? ": " : "",
              std::string(
                  reinterpret_cast<const char*>(frame->goaway.opaque_data),
                  frame->goaway.opaque_data_len));
        }
        return 0;
      default:
        return 0;
    }
  }

  // A response frame could not be sent (e.g. a header block over nghttp2's
  // send limit): the stream cannot complete, reset it.
  static int OnFrameNotSend(nghttp2_session* session,
                            const nghttp2_frame* frame, int lib_error_code,
                            void* user_data) {
    Http2ServerCodec* codec = Codec(user_data);
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) {
      return 0;
    }
    if (lib_error_code == NGHTTP2_ERR_STREAM_CLOSED ||
        lib_error_code == NGHTTP2_ERR_STREAM_CLOSING ||
        lib_error_code == NGHTTP2_ERR_SESSION_CLOSING) {
      return 0;
    }
    Http2ServerCodec::Stream* stream = codec->FindStream(frame->hd.stream_id);
    if (stream == nullptr || stream->closed) return 0;
    stream->reset_by_codec = true;
    stream->closed = true;
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream->id,
                              NGHTTP2_INTERNAL_ERROR);
    if (stream->delivered) {
      codec->callbacks_->OnStreamReset(stream->id, NGHTTP2_INTERNAL_ERROR);
    }
    return 0;
  }

  static int OnStreamClose(nghttp2_session* /*session*/, int32_t stream_id,
                           uint32_t error_code, void* user_data) {
    Http2ServerCodec* codec = Codec(user_data);
    auto it = codec->streams_.find(stream_id);
    if (it == codec->streams_.end()) return 0;
    Http2ServerCodec::Stream* stream = it->second.get();
    // A stream nghttp2 reset because the client broke the protocol on it.
    const bool client_broke_it = error_code != NGHTTP2_NO_ERROR && !stream->reset_by_caller &&
                                 !stream->reset_by_codec && !stream->peer_reset;
    if (client_broke_it) {
      if (error_code == NGHTTP2_PROTOCOL_ERROR && !stream->delivered) {
        codec->callbacks_->OnRequestMalformed(stream_id, stream->pseudo, stream->headers);
      }
      codec->CountPrematureEnd();
    }
    const bool completed =
        stream->request_complete && stream->response_end_sent;
    if (stream->delivered && !stream->closed && !completed) {
      stream->closed = true;
      if (client_broke_it) codec->callbacks_->OnStreamProtocolError(stream_id, error_code);
      codec->callbacks_->OnStreamReset(stream_id, error_code);
    }
    if (codec->found_id_ == stream_id) {
      codec->found_id_ = 0;
      codec->found_ = nullptr;
    }
    codec->streams_.erase(stream_id);
    return 0;
  }

  static ssize_t ReadResponseBody(nghttp2_session* session, int32_t stream_id,
                                  uint8_t* buf, size_t length,
                                  uint32_t* data_flags,
                                  nghttp2_data_source* /*source*/,
                                  void* user_data) {
    Http2ServerCodec* codec = Codec(user_data);
    Http2ServerCodec::Stream* stream = codec->FindStream(stream_id);
    if (stream != nullptr && stream->reset_after_queued) {
      if (stream->body.queued() == 0) {  // all out: now the reset
        stream->reset_after_queued = false;
        stream->body.Drop();
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, stream->reset_code);
        return NGHTTP2_ERR_DEFERRED;
      }
      bool unused = false;  // the caller is gone: nobody to tell
      return stream->body.Read(session, stream_id, buf, length, data_flags,
                               codec->limits_.stream_send_low_watermark, &unused);
    }
    if (stream == nullptr || (stream->closed && !stream->codec_reply)) {
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    bool writable = false;
    const ssize_t rv =
        stream->body.Read(session, stream_id, buf, length, data_flags,
                          codec->limits_.stream_send_low_watermark, &writable);
    if (writable) codec->writable_.push_back(stream_id);
    return rv;
  }
};

Http2ServerCodec::Http2ServerCodec(Http2ServerCallbacks* callbacks,
                                   const Http2Limits& limits)
    : callbacks_(callbacks),
      limits_(limits),
      memory_(std::make_unique<http2::SessionMemory>()),
      block_(std::make_unique<http2::HeaderBlockBuilder>()),
      frames_received_(std::make_unique<http2::ClientFrameWatch>()),
      whole_headers_(std::make_unique<http2::WholeFrameHeaderFeeder>(24)) {
  SLUICE_CHECK(callbacks_ != nullptr);
  SLUICE_CHECK(limits_.initial_window_size <= NGHTTP2_MAX_WINDOW_SIZE);
  SLUICE_CHECK(limits_.connection_window_size <= NGHTTP2_MAX_WINDOW_SIZE);
  SLUICE_CHECK(limits_.premature_reset_window > 0);

  nghttp2_session_callbacks* cbs = nullptr;
  SLUICE_CHECK(nghttp2_session_callbacks_new(&cbs) == 0);
  using A = Http2ServerCodecAccess;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs,
                                                          A::OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cbs, A::OnHeader);
  nghttp2_session_callbacks_set_on_invalid_header_callback(cbs,
                                                           A::OnInvalidHeader);
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
  // A response head up to what the gateway takes from upstreams (96 KiB
  // decoded from HTTP/2, in any number of fields) goes out: nghttp2's own
  // bound on a header block it sends is 64 KiB, and a 70 KB head was reset
  // (INTERNAL_ERROR) while HTTP/1 clients got it. No single field reaching
  // here is over 64 KiB, what HTTP/2 decoders take (HTTP/1 upstream heads
  // are at most 60 KiB, policy values 4 KiB).
  nghttp2_option_set_max_send_header_block_length(opt, kMaxSendHeaderBlockBytes);
  http2::SetSessionGuards(opt, limits_.max_header_list_bytes,
                           /*peer_is_upstream=*/false);
  nghttp2_option_set_stream_reset_rate_limit(opt, kStreamResetBurst,
                                             kStreamResetRate);

  memory_->MakingSession(true);
  const int rv = nghttp2_session_server_new3(&session_, cbs, this, opt, memory_->mem());
  memory_->MakingSession(false);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  SLUICE_CHECK(rv == 0);

  // RFC 8441: a WebSocket may open as a stream (extended CONNECT with
  // :protocol), which nghttp2 then lets through, checked. Last, so that
  // leaving it out is sending one entry less.
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits_.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, limits_.initial_window_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits_.max_header_list_bytes},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      // No RFC 7540 priority tree to maintain for the client.
      {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
      {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
  };
  http2::SubmitLocalSettings(session_, settings,
                             std::size(settings) - (limits_.enable_connect_protocol ? 0 : 1),
                             limits_.connection_window_size);
}

Http2ServerCodec::~Http2ServerCodec() { nghttp2_session_del(session_); }

Http2ServerCodec::Stream* Http2ServerCodec::FindStream(
    int32_t stream_id) const {
  if (stream_id == found_id_) return found_;
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return nullptr;
  found_id_ = stream_id;
  found_ = it->second.get();
  return found_;
}

bool Http2ServerCodec::Receive(std::string_view bytes) {
  SLUICE_CHECK(!in_session_call_);
  if (failed_) return false;
  in_session_call_ = true;
  memory_->NoteInput();  // streams may come and go
  // nghttp2 gets the bytes before a frame that breaks a rule it does not
  // check; then the connection fails.
  const size_t bad = frames_received_->Feed(bytes);
  if (const int rv = whole_headers_->Receive(session_, bytes.substr(0, bad)); rv != 0) {
    FailConnection(http2::GoawayCodeFor(rv),
                   absl::StrCat("connection error: ", nghttp2_strerror(rv)),
                   rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS ? "continuation_flood"
                   : rv == NGHTTP2_ERR_FLOODED              ? "flood"
                   : rv == NGHTTP2_ERR_HEADER_COMP          ? "compression"
                   : rv == NGHTTP2_ERR_FLOW_CONTROL         ? "flow_control"
                                                            : "protocol");
  }
  if (bad != std::string_view::npos && !failed_) {
    FailConnection(frames_received_->violation_code(),
                   absl::StrCat("connection error: ", frames_received_->violation()),
                   frames_received_->violation_code() == NGHTTP2_ENHANCE_YOUR_CALM ? "flood"
                                                                                  : "protocol");
  }
  const size_t had = output_.size();
  OnDrained(http2::DrainSession(session_, &output_, limits_.max_buffered_output));
  if (output_.size() > had) memory_->NoteOutput();
  in_session_call_ = false;
  NotifyWritable();
  return !failed_;
}

bool Http2ServerCodec::head_pending() const {
  return !failed_ && frames_received_->head_pending();
}

void Http2ServerCodec::TakeOutput(std::string* out, size_t max_bytes) {
  SLUICE_CHECK(!in_session_call_);
  in_session_call_ = true;
  const size_t had = out->size() + output_.size();
  OnDrained(http2::TakeSessionOutput(session_, &output_, out, max_bytes));
  if (out->size() > had) memory_->NoteOutput();
  in_session_call_ = false;
  NotifyWritable();
}

void Http2ServerCodec::OnDrained(int rv) {
  if (rv != 0) {
    FailConnection(NGHTTP2_INTERNAL_ERROR,
                   absl::StrCat("connection error: ", nghttp2_strerror(rv)), "output");
  }
}

void Http2ServerCodec::NotifyWritable() {
  if (writable_.empty()) return;
  std::vector<int32_t> ids;
  ids.swap(writable_);
  for (int32_t id : ids) {
    Stream* stream = FindStream(id);
    if (stream == nullptr || stream->closed) continue;
    if (stream->body.queued() > limits_.stream_send_low_watermark) continue;
    callbacks_->OnStreamWritable(id);
  }
}

bool Http2ServerCodec::WantsWrite() const {
  return !output_.empty() || nghttp2_session_want_write(session_) != 0;
}

size_t Http2ServerCodec::ReleaseIdleMemory() {
  // A frame nghttp2 is sending is in the frame buffer: not while it wants to
  // write, nor after its terminating GOAWAY (then it says it wants neither).
  if (in_session_call_ || WantsWrite() || !WantsRead()) return 0;
  // The stream table keeps the capacity of the most streams it held (2 KiB
  // after 100 at once), the head builder that of the largest head.
  if (streams_.empty() && streams_.capacity() > 0) {
    absl::flat_hash_map<int32_t, std::unique_ptr<Stream>>().swap(streams_);
  }
  block_->Release();
  return memory_->ReleaseIdlePages();
}

bool Http2ServerCodec::WantsRead() const {
  return !failed_ && nghttp2_session_want_read(session_) != 0;
}

void Http2ServerCodec::FailConnection(uint32_t h2_error_code, std::string reason,
                                      std::string_view kind) {
  if (failed_) return;
  failed_ = true;
  error_ = std::move(reason);
  error_kind_ = kind;
  nghttp2_session_terminate_session(session_, h2_error_code);
}

void Http2ServerCodec::CountPrematureEnd() {
  if (++premature_in_window_ >= limits_.max_premature_resets) {
    FailConnection(
        NGHTTP2_ENHANCE_YOUR_CALM,
        absl::StrCat("connection error: ", premature_in_window_,
                     " streams reset or refused before their "
                     "response began, within ",
                     limits_.premature_reset_window, " streams (rapid reset)"),
        "rapid_reset");
  }
}

void Http2ServerCodec::RejectHeaderBlock(Stream* stream) {
  const bool known_to_caller = stream->delivered && !stream->closed;
  stream->closed = true;
  stream->reset_by_codec = true;
  stream->body.Drop();
  // Queued before nghttp2 queues its own RST_STREAM(INTERNAL_ERROR) for the
  // failed callback, which then does nothing: the client sees this code.
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream->id,
                            NGHTTP2_ENHANCE_YOUR_CALM);
  if (known_to_caller) {
    callbacks_->OnStreamReset(stream->id, NGHTTP2_ENHANCE_YOUR_CALM);
  } else if (!stream->delivered) {
    callbacks_->OnRequestHeadersTooLarge(stream->id, nullptr);
  }
  CountPrematureEnd();
}

std::string Http2ServerCodec::HeadersTooLargeBody(std::string_view request_id) {
  std::string body = absl::StrCat("{\"error\":\"", kHeadersTooLargeError, "\"");
  if (!request_id.empty()) {
    body.append(",\"request_id\":\"");
    body.append(request_id);
    body.push_back('"');
  }
  body.append("}\n");
  return body;
}

void Http2ServerCodec::RespondHeadersTooLarge(Stream* stream,
                                              const Http2ServerCallbacks::ReplyFields& reply) {
  const std::string& request_id = reply.request_id;
  // The gateway's error form (as every other answer of its own): a small
  // JSON body and x-request-id; to gRPC, a trailers-only status.
  std::vector<nghttp2_nv> nva;
  std::string body;
  char length_text[kDecimalDigits];
  if (stream->grpc) {
    nva = {MakeNv(":status", "200"), MakeNv("content-type", "application/grpc"),
           MakeNv("grpc-status", "8"), MakeNv("grpc-message", kHeadersTooLargeError)};
  } else {
    body = HeadersTooLargeBody(request_id);
    nva = {MakeNv(":status", "431"), MakeNv("content-type", "application/json"),
           MakeNv("content-length", ToDecimal(body.size(), length_text))};
  }
  if (!request_id.empty()) nva.push_back(MakeNv("x-request-id", request_id));
  if (!reply.date.empty()) nva.push_back(MakeNv("date", reply.date));
  stream->final_response = true;
  stream->codec_reply = true;
  stream->body.Submit(session_, stream->id, body, true, limits_.stream_send_low_watermark);
  if (body.empty()) {
    nghttp2_submit_response(session_, stream->id, nva.data(), nva.size(), nullptr);
    return;
  }
  nghttp2_data_provider provider;
  provider.source.ptr = nullptr;
  provider.read_callback = Http2ServerCodecAccess::ReadResponseBody;
  nghttp2_submit_response(session_, stream->id, nva.data(), nva.size(), &provider);
}

Http2ServerCodec::Stream* Http2ServerCodec::StreamForResponse(int32_t stream_id,
                                                              int status,
                                                              bool end_stream) {
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr || stream->closed || !stream->delivered ||
      stream->final_response || status < 100 || status > 599 || status == 101) {
    return nullptr;
  }
  if (status < 200 && end_stream) return nullptr;  // interim
  return stream;
}

bool Http2ServerCodec::SubmitResponse(int32_t stream_id, int status,
                                      const HeaderMap& headers,
                                      bool end_stream) {
  Stream* stream = StreamForResponse(stream_id, status, end_stream);
  if (stream == nullptr) return false;
  char status_text[kDecimalDigits];
  block_->Clear();
  block_->AddRaw(":status",
                 ToDecimal(static_cast<uint64_t>(status), status_text));
  for (const HeaderMap::Field& f : headers.fields()) {
    block_->AddSendable(FieldSection::kResponseHead, f.name, f.value);
  }
  return SubmitResponseBlock(stream, status < 200, end_stream);
}

bool Http2ServerCodec::SubmitResponse(int32_t stream_id, int status,
                                      const HeaderField* fields, size_t count,
                                      std::optional<uint64_t> content_length,
                                      bool end_stream, size_t syntax_checked) {
  Stream* stream = StreamForResponse(stream_id, status, end_stream);
  if (stream == nullptr) return false;
  char status_text[kDecimalDigits];
  char length_text[kDecimalDigits];
  block_->Clear();
  block_->AddRaw(":status",
                 ToDecimal(static_cast<uint64_t>(status), status_text));
  for (size_t i = 0; i < count; ++i) {
    block_->AddSendable(FieldSection::kResponseHead, fields[i].name,
                        fields[i].value, /*syntax_checked=*/i < syntax_checked);
  }
  if (content_length.has_value()) {
    block_->AddRaw("content-length", ToDecimal(*content_length, length_text));
  }
  return SubmitResponseBlock(stream, status < 200, end_stream);
}

bool Http2ServerCodec::SubmitResponseBlock(Stream* stream, bool interim,
                                           bool end_stream) {
  // nghttp2 copies the array and the bytes it views here: the views need
  // not outlive the call.
  const nghttp2_nv* nva = block_->data();
  const size_t nvlen = block_->size();
  int rv;
  if (interim) {
    rv = nghttp2_submit_headers(session_, NGHTTP2_FLAG_NONE, stream->id,
                                nullptr, nva, nvlen, nullptr);
  } else if (end_stream) {
    rv = nghttp2_submit_response(session_, stream->id, nva, nvlen, nullptr);
  } else {
    nghttp2_data_provider provider;
    provider.source.ptr = nullptr;
    provider.read_callback = Http2ServerCodecAccess::ReadResponseBody;
    rv = nghttp2_submit_response(session_, stream->id, nva, nvlen, &provider);
  }
  block_->Clear();
  if (rv < 0) return false;
  ++stream->heads_submitted;
  if (!interim) {
    stream->final_response = true;
    // Without a body to follow, marks the body ended.
    if (end_stream) {
      stream->body.Submit(session_, stream->id, std::string_view(), true,
                          limits_.stream_send_low_watermark);
    }
  }
  return true;
}

bool Http2ServerCodec::SubmitData(int32_t stream_id, std::string_view data,
                                  bool end_stream) {
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr || stream->closed || !stream->final_response ||
      stream->body.ended()) {
    return false;
  }
  stream->body.Submit(session_, stream_id, data, end_stream,
                      limits_.stream_send_low_watermark);
  return true;
}

bool Http2ServerCodec::SubmitTrailers(int32_t stream_id,
                                      const HeaderMap& trailers) {
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr || stream->closed || !stream->final_response ||
      stream->body.ended()) {
    return false;
  }
  // An empty trailer section is just the end of the body.
  stream->body.SetTrailers(SendableFields(FieldSection::kTrailers, trailers));
  return SubmitData(stream_id, std::string_view(), true);
}

bool Http2ServerCodec::SubmitTrailers(int32_t stream_id,
                                      const HeaderField* fields, size_t count) {
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr || stream->closed || !stream->final_response ||
      stream->body.ended()) {
    return false;
  }
  // Owned: they are sent after the queued body, from nghttp2's read callback.
  stream->body.SetTrailers(http2::SendableFields(FieldSection::kTrailers, fields, count));
  return SubmitData(stream_id, std::string_view(), true);
}

bool Http2ServerCodec::Unsent(const Stream& stream) const {
  return stream.final_response && !stream.body.ended() &&
         (stream.heads_sent < stream.heads_submitted || stream.body.queued() > 0);
}

bool Http2ServerCodec::QueueFitsWindows(const Stream& stream) const {
  const int32_t stream_window = nghttp2_session_get_stream_remote_window_size(session_, stream.id);
  const int32_t connection_window = nghttp2_session_get_remote_window_size(session_);
  return stream_window >= 0 && connection_window >= 0 &&
         stream.body.queued() <= static_cast<size_t>(std::min(stream_window, connection_window));
}

void Http2ServerCodec::ResetLoss(int32_t stream_id, bool* head_lost, size_t* bytes_lost) const {
  *head_lost = false;
  *bytes_lost = 0;
  const Stream* stream = FindStream(stream_id);
  if (stream == nullptr || stream->closed || !Unsent(*stream) || QueueFitsWindows(*stream)) return;
  *head_lost = stream->heads_sent < stream->heads_submitted;
  *bytes_lost = stream->body.queued();
}

void Http2ServerCodec::ResetStream(int32_t stream_id, uint32_t error_code) {
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr || stream->closed) return;
  stream->closed = true;
  stream->reset_by_caller = true;
  // What the client was already given of the response (a head, bytes that
  // came from the upstream) goes out before the reset, as it does on
  // HTTP/1, when the send windows take it now: RST_STREAM would otherwise
  // overtake it (nghttp2 sends control frames first) and the head and
  // bytes would be dropped. A queue the windows cannot take is dropped.
  if (Unsent(*stream) && QueueFitsWindows(*stream)) {
    stream->reset_after_queued = true;
    stream->reset_code = error_code;
    stream->body.Wake(session_, stream_id);
    return;
  }
  stream->body.Drop();
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code);
}

size_t Http2ServerCodec::QueuedBytes(int32_t stream_id) const {
  const Stream* stream = FindStream(stream_id);
  return stream == nullptr ? 0 : stream->body.queued();
}

void Http2ServerCodec::ConsumeRequestData(int32_t stream_id, size_t n) {
  Stream* stream = FindStream(stream_id);
  if (stream == nullptr || stream->closed) return;
  const size_t credit = stream->window.OnConsumed(n);
  if (credit > 0) nghttp2_session_consume_stream(session_, stream_id, credit);
}

void Http2ServerCodec::Shutdown(uint32_t error_code) {
  if (failed_) return;
  if (error_code != NGHTTP2_NO_ERROR) {
    FailConnection(
        error_code,
        absl::StrCat("shutdown: ", nghttp2_http2_strerror(error_code)), "other");
    return;
  }
  switch (shutdown_) {
    case ShutdownState::kNone:
      if (nghttp2_submit_shutdown_notice(session_) != 0 ||
          nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, kShutdownPing) !=
              0) {
        SubmitFinalGoaway();
        return;
      }
      shutdown_ = ShutdownState::kAwaitingPingAck;
      return;
    case ShutdownState::kAwaitingPingAck:
      // Called again: do not wait for the round trip any longer.
      SubmitFinalGoaway();
      return;
    case ShutdownState::kFinalGoawaySubmitted:
      return;
  }
}

void Http2ServerCodec::SubmitFinalGoaway() {
  shutdown_ = ShutdownState::kFinalGoawaySubmitted;
  // A stream whose response is complete would hold the connection open as
  // long as its client keeps sending (or stalls): reset now.
  for (auto& [id, stream] : streams_) {
    if (!stream->lingering) continue;
    stream->lingering = false;
    stream->closed = true;
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
  }
  // The last stream that may have been acted on (RFC 9113 6.8) is the last
  // one whose request reached the caller: a stream whose header block is
  // still coming (the head's timeout) was not, and its client may send it
  // again elsewhere. nghttp2's last processed id counted it.
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, last_delivered_, NGHTTP2_NO_ERROR, nullptr,
                        0);
}

}  // namespace sluice::http
