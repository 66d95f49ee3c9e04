#include "dataplane/http/http2_util.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "common/log.h"

namespace sluice::http::http2 {
namespace {

// nghttp2's own flood and size guards. Set explicitly (most equal nghttp2's
// defaults) so that a library upgrade cannot loosen them unnoticed.
//
// SETTINGS and PING ACKs queued and not yet written: a peer that floods
// either and does not read fails the connection (NGHTTP2_ERR_FLOODED).
constexpr size_t kMaxOutboundAcks = 1000;
// Entries in one SETTINGS frame (there are 9 settings defined).
constexpr size_t kMaxSettingsEntries = 32;
// CONTINUATION frames after one HEADERS: at least this many, and enough for
// a legitimate header block of max_header_list_bytes in frames of the
// default 16 KiB (neither codec advertises a larger SETTINGS_MAX_FRAME_SIZE),
// with room to spare.
constexpr size_t kMinContinuations = 8;
constexpr size_t kDefaultMaxFrameSize = 16384;
// From an upstream: 64 (a block of about 1 MiB). A head past
// max_header_list_bytes fails its own stream while nghttp2 decodes the rest
// of its block, so the bound only stops an endless block; at 8 a 150 KB
// head ended the connection and every other stream on it.
constexpr size_t kUpstreamMaxContinuations = 64;
// HPACK dynamic table our encoder uses, whatever the peer allows.
constexpr size_t kMaxDeflateTableSize = 4096;
// A queue whose consumed prefix is at least this large (and at least half of
// it) is compacted.
constexpr size_t kCompactAfter = 64 * 1024;

bool IsConnectionSpecific(std::string_view name) {
  return name == "connection" || name == "keep-alive" ||
         name == "proxy-connection" || name == "transfer-encoding" ||
         name == "upgrade";
}

// The `te` field lists "trailers" (RFC 9110 10.1.4: comma-separated
// t-codings, each possibly with parameters).
bool ListsTrailers(std::string_view value) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    std::string_view item = value.substr(0, comma);
    item = item.substr(0, item.find(';'));
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) {
      item.remove_prefix(1);
    }
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) {
      item.remove_suffix(1);
    }
    if (ToLower(item) == "trailers") return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

nghttp2_nv MakeNv(std::string_view name, std::string_view value) {
  // The ids the gateway puts on every message (x-request-id, traceparent)
  // are new each time: entered in the HPACK table they would only evict
  // fields that do repeat (nghttp2 skips indexing its own per-message
  // fields, :path, content-length, etag..., the same way).
  const bool per_message = (name.size() == 12 && name == "x-request-id") ||
                           (name.size() == 11 && name == "traceparent");
  const uint8_t flags = per_message ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE;
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())),
                    name.size(), value.size(), flags};
}

namespace {

bool HasUpperCase(std::string_view s) {
  for (char c : s) {
    if (c >= 'A' && c <= 'Z') return true;
  }
  return false;
}

// What becomes of a field in a section (AddSendableField's rules).
enum class Disposition {
  kDrop,
  kSend,
  // A request head's `te` listing "trailers": sent once, as "trailers".
  kSendTeTrailers,
};

// `lower` is the field's name in lower case. `syntax_checked`: its bytes
// need no check (HeaderBlockBuilder::AddSendable).
Disposition Dispose(FieldSection section, std::string_view lower,
                    std::string_view value, bool syntax_checked = false) {
  if (lower.empty() || lower[0] == ':' || IsConnectionSpecific(lower)) {
    return Disposition::kDrop;
  }
  if (lower == "host" && section != FieldSection::kResponseHead) {
    return Disposition::kDrop;
  }
  if (lower == "te") {
    // RFC 9113 8.2.2: no other value than "trailers".
    return section == FieldSection::kRequestHead && ListsTrailers(value)
               ? Disposition::kSendTeTrailers
               : Disposition::kDrop;
  }
  if (syntax_checked) return Disposition::kSend;
  if (!nghttp2_check_header_name(reinterpret_cast<const uint8_t*>(lower.data()),
                                 lower.size()) ||
      !nghttp2_check_header_value_rfc9113(
          reinterpret_cast<const uint8_t*>(value.data()), value.size())) {
    return Disposition::kDrop;
  }
  return Disposition::kSend;
}

}  // namespace

void AddSendableField(FieldSection section, std::string_view name,
                      std::string_view value, FieldList* out) {
  std::string lower = ToLower(name);
  switch (Dispose(section, lower, value)) {
    case Disposition::kDrop:
      return;
    case Disposition::kSendTeTrailers:
      // Sent once.
      for (const auto& field : *out) {
        if (field.first == "te") return;
      }
      out->emplace_back(std::move(lower), "trailers");
      return;
    case Disposition::kSend:
      out->emplace_back(std::move(lower), std::string(value));
      return;
  }
}

void HeaderBlockBuilder::Clear() {
  nva_.clear();
  lowered_.clear();
  lowered_at_.clear();
}

void HeaderBlockBuilder::Release() {
  std::vector<nghttp2_nv>().swap(nva_);
  std::string().swap(lowered_);
  std::vector<std::pair<size_t, size_t>>().swap(lowered_at_);
}

void HeaderBlockBuilder::AddRaw(std::string_view name, std::string_view value) {
  nva_.push_back(MakeNv(name, value));
}

void HeaderBlockBuilder::AddSendable(FieldSection section,
                                     std::string_view name,
                                     std::string_view value,
                                     bool syntax_checked) {
  if (!HasUpperCase(name)) {
    switch (Dispose(section, name, value, syntax_checked)) {
      case Disposition::kDrop:
        return;
      case Disposition::kSendTeTrailers:
        break;  // below
      case Disposition::kSend:
        nva_.push_back(MakeNv(name, value));
        return;
    }
  } else {
    const size_t offset = lowered_.size();
    lowered_.append(name);
    char* lower = lowered_.data() + offset;
    for (size_t i = 0; i < name.size(); ++i) {
      if (lower[i] >= 'A' && lower[i] <= 'Z') {
        lower[i] = static_cast<char>(lower[i] - 'A' + 'a');
      }
    }
    switch (Dispose(section, std::string_view(lower, name.size()), value,
                    syntax_checked)) {
      case Disposition::kDrop:
        lowered_.resize(offset);
        return;
      case Disposition::kSendTeTrailers:
        lowered_.resize(offset);
        break;  // below
      case Disposition::kSend:
        // The name's pointer is set by data(): `lowered_` may still move.
        lowered_at_.emplace_back(nva_.size(), offset);
        nva_.push_back(MakeNv(std::string_view(nullptr, 0), value));
        nva_.back().namelen = name.size();
        return;
    }
  }
  // `te: trailers`, sent once. The name and value are literals here, so a
  // `te` already in the block is found by its name's bytes.
  for (const nghttp2_nv& nv : nva_) {
    if (nv.namelen == 2 && nv.name != nullptr &&
        std::memcmp(nv.name, "te", 2) == 0) {
      return;
    }
  }
  nva_.push_back(MakeNv("te", "trailers"));
}

const nghttp2_nv* HeaderBlockBuilder::data() {
  for (const auto& [index, offset] : lowered_at_) {
    nva_[index].name = reinterpret_cast<uint8_t*>(lowered_.data() + offset);
  }
  return nva_.data();
}

std::vector<nghttp2_nv> ToNva(std::vector<nghttp2_nv> pseudo,
                              const FieldList& fields) {
  std::vector<nghttp2_nv> nva = std::move(pseudo);
  nva.reserve(nva.size() + fields.size());
  for (const auto& [name, value] : fields) nva.push_back(MakeNv(name, value));
  return nva;
}

void SetSessionGuards(nghttp2_option* option, uint32_t max_header_list_bytes,
                      bool peer_is_upstream) {
  nghttp2_option_set_max_outbound_ack(option, kMaxOutboundAcks);
  nghttp2_option_set_max_settings(option, kMaxSettingsEntries);
  size_t continuations =
      std::max(kMinContinuations, max_header_list_bytes / kDefaultMaxFrameSize + 2);
  if (peer_is_upstream) continuations = std::max(continuations, kUpstreamMaxContinuations);
  nghttp2_option_set_max_continuations(option, continuations);
  nghttp2_option_set_max_deflate_dynamic_table_size(option,
                                                    kMaxDeflateTableSize);
  nghttp2_option_set_no_closed_streams(option, 1);
}

uint32_t GoawayCodeFor(int lib_error) {
  switch (lib_error) {
    case NGHTTP2_ERR_FLOODED:
    case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
      return NGHTTP2_ENHANCE_YOUR_CALM;
    case NGHTTP2_ERR_BAD_CLIENT_MAGIC:
      return NGHTTP2_PROTOCOL_ERROR;
    default:
      return NGHTTP2_INTERNAL_ERROR;
  }
}

int DrainSession(nghttp2_session* session, std::string* sink, size_t limit) {
  while (sink->size() < limit) {
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session, &data);
    if (n < 0) return static_cast<int>(n);
    if (n == 0) return 0;
    sink->append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
  return 0;
}

int TakeSessionOutput(nghttp2_session* session, std::string* buffered, std::string* out,
                      size_t max_bytes) {
  const size_t start = out->size();
  const size_t limit = max_bytes > std::numeric_limits<size_t>::max() - start
                           ? std::numeric_limits<size_t>::max()
                           : start + max_bytes;
  out->append(*buffered);
  // Handed over: an idle connection keeps no output storage.
  std::string().swap(*buffered);
  return DrainSession(session, out, limit);
}

int ReceiveAll(nghttp2_session* session, std::string_view bytes) {
  const ssize_t rv = nghttp2_session_mem_recv(
      session, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  if (rv < 0) return static_cast<int>(rv);
  // No callback pauses nghttp2, so it takes everything.
  SLUICE_CHECK(static_cast<size_t>(rv) == bytes.size());
  return 0;
}

size_t WholeFrameHeaderFeeder::Follow(std::string_view bytes) {
  size_t i = 0;
  const size_t n = bytes.size();
  while (i < n) {
    if (preface_left_ > 0) {
      const size_t take = std::min(preface_left_, n - i);
      preface_left_ -= take;
      i += take;
      continue;
    }
    if (payload_left_ > 0) {
      const uint64_t take = std::min<uint64_t>(payload_left_, n - i);
      payload_left_ -= take;
      i += take;
      if (payload_left_ == 0) between_block_frames_ = block_frame_open_;
      continue;
    }
    header_[header_have_++] = static_cast<uint8_t>(bytes[i++]);
    if (header_have_ < kFrameHeaderBytes) continue;
    header_have_ = 0;
    payload_left_ = (uint64_t{header_[0]} << 16) | (uint64_t{header_[1]} << 8) | header_[2];
    const uint8_t type = header_[3];
    const bool end_headers = (header_[4] & NGHTTP2_FLAG_END_HEADERS) != 0;
    block_frame_open_ = !end_headers && (type == NGHTTP2_HEADERS || type == NGHTTP2_PUSH_PROMISE ||
                                         type == NGHTTP2_CONTINUATION);
    between_block_frames_ = payload_left_ == 0 && block_frame_open_;
  }
  return header_have_ + (between_block_frames_ ? 1 : 0);
}

int WholeFrameHeaderFeeder::Receive(nghttp2_session* session, std::string_view bytes) {
  const size_t hold = Follow(bytes);
  const size_t total = held_.size() + bytes.size();
  if (hold >= total) {
    held_.append(bytes);
    return 0;
  }
  const size_t give = total - hold;
  if (held_.empty()) {
    const int rv = ReceiveAll(session, bytes.substr(0, give));
    held_.assign(bytes.substr(give));
    return rv;
  }
  // After a read that ended in a header block's frame boundary (rare): one
  // copy, so the held octets and what follows them go in one call.
  std::string joined = std::move(held_);
  joined.append(bytes);
  const int rv = ReceiveAll(session, std::string_view(joined).substr(0, give));
  held_.assign(joined, give, std::string::npos);
  return rv;
}

void SubmitLocalSettings(nghttp2_session* session, const nghttp2_settings_entry* settings,
                         size_t count, uint32_t connection_window) {
  SLUICE_CHECK(nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings, count) == 0);
  if (connection_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE) {
    SLUICE_CHECK(nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0,
                                                       static_cast<int32_t>(connection_window)) ==
                 0);
  }
}

void OutboundBody::Submit(nghttp2_session* session, int32_t stream_id,
                          std::string_view data, bool end,
                          size_t low_watermark) {
  bytes_.append(data);
  end_ = end;
  if (queued() > low_watermark) above_low_watermark_ = true;
  if (deferred_ && (!data.empty() || end)) {
    deferred_ = false;
    nghttp2_session_resume_data(session, stream_id);
  }
}

ssize_t OutboundBody::Read(nghttp2_session* session, int32_t stream_id,
                           uint8_t* buf, size_t length, uint32_t* data_flags,
                           size_t low_watermark, bool* crossed_low_watermark) {
  const size_t n = std::min(length, queued());
  if (n > 0) {
    std::memcpy(buf, bytes_.data() + offset_, n);
    offset_ += n;
    if (offset_ == bytes_.size()) {
      bytes_.clear();
      offset_ = 0;
    } else if (offset_ >= kCompactAfter && offset_ * 2 >= bytes_.size()) {
      bytes_.erase(0, offset_);
      offset_ = 0;
    }
    if (above_low_watermark_ && queued() <= low_watermark) {
      above_low_watermark_ = false;
      *crossed_low_watermark = true;
    }
  }
  if (queued() == 0 && end_) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (has_trailers_) {
      *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      const std::vector<nghttp2_nv> nva = ToNva({}, trailers_);
      if (nghttp2_submit_trailer(session, stream_id, nva.data(), nva.size()) !=
          0) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
      }
      trailers_.clear();
      has_trailers_ = false;
    }
    return static_cast<ssize_t>(n);
  }
  if (n == 0) {
    deferred_ = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return static_cast<ssize_t>(n);
}

void OutboundBody::Wake(nghttp2_session* session, int32_t stream_id) {
  if (!deferred_) return;
  deferred_ = false;
  nghttp2_session_resume_data(session, stream_id);
}

void OutboundBody::Drop() {
  std::string().swap(bytes_);
  offset_ = 0;
  trailers_.clear();
  has_trailers_ = false;
}

ReceiveWindow::ReceiveWindow(size_t window, size_t buffer_limit)
    : window_(window), budget_(std::max(buffer_limit, window)) {}

size_t ReceiveWindow::OnDelivered(size_t n) {
  held_ += n;
  withheld_ += n;
  return Release();
}

size_t ReceiveWindow::OnConsumed(size_t n) {
  held_ -= std::min(n, held_);
  return Release();
}

size_t ReceiveWindow::Release() {
  // Credit the peer may still use plus bytes the caller holds stay within
  // the budget: keep back enough credit to guarantee it.
  const size_t keep = held_ + window_ > budget_ ? held_ + window_ - budget_ : 0;
  if (withheld_ <= keep) return 0;
  const size_t credit = withheld_ - keep;
  withheld_ = keep;
  return credit;
}

const char* ClientFrameWatch::FollowStream(uint8_t type, bool end_stream, uint32_t* code) {
  const uint32_t id = stream_id_;
  if ((id & 1) == 0) return nullptr;  // nghttp2 refuses stream 0 and even ids itself
  if (id > last_stream_opened_) {
    // An idle stream: nghttp2 refuses anything but HEADERS on it.
    if (type != NGHTTP2_HEADERS) return nullptr;
    const uint32_t first_skipped = last_stream_opened_ == 0 ? 1 : last_stream_opened_ + 2;
    if (first_skipped < id && skipped_.size() < kMaxSkippedRanges) {
      skipped_.emplace_back(first_skipped, id - 2);
    }
    if (!end_stream) {
      if (open_.size() == kMaxOpenFollowed) {
        unjudged_up_to_ = open_.front();
        open_.erase(open_.begin());
      }
      open_.push_back(id);
    }
    return nullptr;  // CountFrame records it as opened
  }
  const auto it = std::lower_bound(open_.begin(), open_.end(), id);
  if (it != open_.end() && *it == id) {
    if (end_stream || type == NGHTTP2_RST_STREAM) open_.erase(it);
    return nullptr;
  }
  // A RST_STREAM after the client's END_STREAM is allowed (its stream is
  // half-closed (local) on the client's side); a repeated one is harmless.
  if (type == NGHTTP2_RST_STREAM || id <= unjudged_up_to_) return nullptr;
  *code = NGHTTP2_PROTOCOL_ERROR;
  for (const auto& [first, last] : skipped_) {
    if (id >= first && id <= last) {
      return type == NGHTTP2_HEADERS
                 ? "HEADERS on a stream id below one already used, never opened itself"
                 : "DATA on a stream id below one already used, never opened itself";
    }
  }
  *code = NGHTTP2_STREAM_CLOSED;
  return type == NGHTTP2_HEADERS ? "HEADERS on a stream the client had closed"
                                 : "DATA on a stream the client had closed";
}

const char* ClientFrameWatch::CountFrame(uint8_t type, uint64_t length) {
  const bool end_stream = (frame_header_[4] & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (type) {
    case NGHTTP2_DATA:
    case NGHTTP2_HEADERS:
    case NGHTTP2_CONTINUATION:
      if (type == NGHTTP2_HEADERS && stream_id_ > last_stream_opened_) {
        last_stream_opened_ = stream_id_;
        ++streams_opened_;
      }
      if (type == NGHTTP2_DATA && length > 0 && (frame_header_[4] & NGHTTP2_FLAG_PADDED) != 0) {
        pad_check_ = true;  // at the pad length byte
        pad_end_stream_ = end_stream;
        pad_frame_length_ = length;
        return nullptr;
      }
      if (length > 0 || (type != NGHTTP2_CONTINUATION && end_stream)) {
        empty_in_a_row_ = 0;
      } else if (++empty_in_a_row_ > kMaxEmptyFramesInARow) {
        return "flood of frames with no payload";
      }
      return nullptr;
    case NGHTTP2_WINDOW_UPDATE:
      if (++window_updates_ >
          5 + 2 * (streams_opened_ + kWindowUpdatesPerDataFrame * data_frames_sent_)) {
        return "flood of WINDOW_UPDATE frames";
      }
      return nullptr;
    case NGHTTP2_RST_STREAM:
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PUSH_PROMISE:
    case NGHTTP2_PING:
    case NGHTTP2_GOAWAY:
      return nullptr;  // nghttp2's own limits, or a connection error
    default:  // PRIORITY, PRIORITY_UPDATE, frames of unknown types
      if (++control_frames_ > kControlFramesPerStream * (streams_opened_ + 1)) {
        return "flood of PRIORITY or unknown frames";
      }
      return nullptr;
  }
}

size_t ClientFrameWatch::Feed(std::string_view bytes) {
  if (*violation_ != '\0') return std::string_view::npos;
  const auto* const start = reinterpret_cast<const uint8_t*>(bytes.data());
  const uint8_t* p = start;
  size_t n = bytes.size();
  size_t frame_start = 0;  // in `bytes`; 0 for a frame begun in an earlier call
  auto violate = [&](const char* why, uint32_t code = NGHTTP2_PROTOCOL_ERROR) {
    violation_ = why;
    violation_code_ = code;
    return frame_start;
  };
  while (n > 0) {
    if (preface_left_ > 0) {
      const size_t take = std::min(preface_left_, n);
      preface_left_ -= take;
      p += take;
      n -= take;
      continue;
    }
    if (!in_frame_) {
      if (frame_header_have_ == 0) frame_start = static_cast<size_t>(p - start);
      const size_t take = std::min(kFrameHeaderBytes - frame_header_have_, n);
      std::memcpy(frame_header_ + frame_header_have_, p, take);
      frame_header_have_ += take;
      p += take;
      n -= take;
      if (frame_header_have_ < kFrameHeaderBytes) return std::string_view::npos;
      frame_header_have_ = 0;
      in_frame_ = true;
      payload_left_ = (uint64_t{frame_header_[0]} << 16) | (uint64_t{frame_header_[1]} << 8) |
                      frame_header_[2];
      const uint8_t type = frame_header_[3];
      in_header_frame_ = type == NGHTTP2_HEADERS || type == NGHTTP2_PUSH_PROMISE ||
                         type == NGHTTP2_CONTINUATION;
      ends_block_ = (frame_header_[4] & NGHTTP2_FLAG_END_HEADERS) != 0;
      stream_id_ = ((uint32_t{frame_header_[5]} & 0x7f) << 24) | (uint32_t{frame_header_[6]} << 16) |
                   (uint32_t{frame_header_[7]} << 8) | frame_header_[8];
      is_priority_ = type == NGHTTP2_PRIORITY;
      dependency_have_ = 0;
      // RFC 9113 6.10: a header block's frame without END_HEADERS may be
      // followed by a CONTINUATION only. Said first: a DATA after a HEADERS
      // with END_STREAM and no END_HEADERS read as a frame on a stream the
      // client had closed (STREAM_CLOSED).
      if (in_block_ && type != NGHTTP2_CONTINUATION) {
        return violate("a frame other than CONTINUATION inside a header block");
      }
      // RFC 9113 6.3: the length is checked first (h2spec 6.3/2: a 4-byte
      // PRIORITY whose payload names its own stream was a PROTOCOL_ERROR).
      if (is_priority_ && payload_left_ != 5) {
        return violate("PRIORITY: length other than 5", NGHTTP2_FRAME_SIZE_ERROR);
      }
      if (is_priority_ && stream_id_ == 0) return violate("PRIORITY on stream 0");
      if (type == NGHTTP2_HEADERS || type == NGHTTP2_DATA || type == NGHTTP2_RST_STREAM) {
        uint32_t code = 0;
        if (const char* why =
                FollowStream(type, (frame_header_[4] & NGHTTP2_FLAG_END_STREAM) != 0, &code)) {
          return violate(why, code);
        }
      }
      if (const char* flood = CountFrame(type, payload_left_)) {
        return violate(flood, NGHTTP2_ENHANCE_YOUR_CALM);
      }
    }
    if (is_priority_ && dependency_have_ < sizeof(dependency_)) {
      const size_t take =
          static_cast<size_t>(std::min<uint64_t>({sizeof(dependency_) - dependency_have_,
                                                  payload_left_, n}));
      std::memcpy(dependency_ + dependency_have_, p, take);
      dependency_have_ += take;
      if (dependency_have_ == sizeof(dependency_)) {
        const uint32_t depends_on = ((uint32_t{dependency_[0]} & 0x7f) << 24) |
                                    (uint32_t{dependency_[1]} << 16) |
                                    (uint32_t{dependency_[2]} << 8) | dependency_[3];
        if (depends_on == stream_id_) return violate("PRIORITY: a stream depends on itself");
      }
    }
    if (pad_check_ && n > 0) {
      pad_check_ = false;
      const uint64_t pad = static_cast<uint8_t>(*p);
      if (pad_frame_length_ > 1 + pad || pad_end_stream_) {
        empty_in_a_row_ = 0;
      } else if (++empty_in_a_row_ > kMaxEmptyFramesInARow) {
        return violate("flood of frames with no payload", NGHTTP2_ENHANCE_YOUR_CALM);
      }
    }
    const size_t take = static_cast<size_t>(std::min<uint64_t>(payload_left_, n));
    payload_left_ -= take;
    p += take;
    n -= take;
    if (payload_left_ > 0) return std::string_view::npos;
    // The frame is whole. Only a CONTINUATION may follow an open block's
    // frame; anything else is nghttp2's connection error.
    in_frame_ = false;
    in_block_ = in_header_frame_ && !ends_block_;
    in_header_frame_ = false;
  }
  return std::string_view::npos;
}

namespace {

size_t PageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

size_t WholePages(size_t bytes) { return (bytes + PageSize() - 1) / PageSize() * PageSize(); }

bool AllZero(const void* p, size_t bytes) {
  const auto* words = static_cast<const uint64_t*>(p);  // whole pages
  uint64_t any = 0;
  for (size_t i = 0; i < bytes / sizeof(uint64_t); ++i) any |= words[i];
  return any == 0;
}

}  // namespace

SessionMemory::SessionMemory() : mem_{this, Malloc, Free, Calloc, Realloc} {}

SessionMemory::~SessionMemory() {
  // What nghttp2 did not free (a session that was never made whole).
  if (frame_buffer_ != nullptr && !frame_buffer_in_region_) std::free(frame_buffer_);
  std::free(region_);
}

void* SessionMemory::Malloc(size_t size, void* self) {
  return static_cast<SessionMemory*>(self)->Allocate(size);
}

void* SessionMemory::Allocate(size_t size) {
  if (!making_ || size != kFrameBufferBytes || frame_buffer_ != nullptr) return std::malloc(size);
  const size_t capacity = WholePages(size);
  if (region_ != nullptr) {
    // Next to the stream map, which Calloc made room for.
    frame_buffer_ = region_ + stream_map_capacity_;
    frame_buffer_in_region_ = true;
  } else {
    void* p = nullptr;
    if (posix_memalign(&p, PageSize(), capacity) != 0) return nullptr;
    frame_buffer_ = p;
  }
  frame_buffer_capacity_ = capacity;
  return frame_buffer_;
}

void* SessionMemory::Calloc(size_t count, size_t size, void* self) {
  auto* memory = static_cast<SessionMemory*>(self);
  if (!memory->making_ || memory->region_ != nullptr || size == 0 ||
      count != kStreamMapBytes / size || kStreamMapBytes % size != 0) {
    return std::calloc(count, size);
  }
  // The stream map: its pages, then room for the frame buffer (allocated
  // next), so that one madvise(2) can cover both.
  const size_t map_capacity = WholePages(kStreamMapBytes);
  void* p = nullptr;
  if (posix_memalign(&p, PageSize(), map_capacity + WholePages(kFrameBufferBytes)) != 0) {
    return nullptr;
  }
  std::memset(p, 0, map_capacity);
  memory->region_ = static_cast<char*>(p);
  memory->stream_map_ = p;
  memory->stream_map_capacity_ = map_capacity;
  return p;
}

void SessionMemory::Forget(void* ptr) {
  if (ptr == stream_map_) {
    // nghttp2 grew the map (past 192 streams) or is deleting the session.
    stream_map_ = nullptr;
    if (frame_buffer_in_region_) {
      madvise(region_, stream_map_capacity_, MADV_DONTNEED);  // its old page
    }
  } else {
    frame_buffer_ = nullptr;
    frame_buffer_capacity_ = 0;
    frame_buffer_in_region_ = false;
  }
  if (stream_map_ == nullptr && !frame_buffer_in_region_) {
    std::free(region_);
    region_ = nullptr;
  }
}

void SessionMemory::Free(void* ptr, void* self) {
  auto* memory = static_cast<SessionMemory*>(self);
  if (ptr == nullptr) return;
  if (ptr == memory->stream_map_ ||
      (ptr == memory->frame_buffer_ && memory->frame_buffer_in_region_)) {
    memory->Forget(ptr);
    return;
  }
  if (ptr == memory->frame_buffer_) {
    memory->frame_buffer_ = nullptr;
    memory->frame_buffer_capacity_ = 0;
  }
  std::free(ptr);
}

void* SessionMemory::Realloc(void* ptr, size_t size, void* self) {
  auto* memory = static_cast<SessionMemory*>(self);
  // nghttp2 allocates its buffers with realloc(nullptr, size).
  if (ptr == nullptr) return memory->Allocate(size);
  // Not seen from nghttp2 (it never resizes either chunk), but handled: the
  // chunk becomes an ordinary block.
  if (ptr == memory->stream_map_ ||
      (ptr == memory->frame_buffer_ && memory->frame_buffer_in_region_)) {
    const size_t had = ptr == memory->stream_map_ ? kStreamMapBytes : kFrameBufferBytes;
    void* moved = std::malloc(size);
    if (moved == nullptr) return nullptr;
    std::memcpy(moved, ptr, std::min(had, size));
    memory->Forget(ptr);
    return moved;
  }
  if (ptr == memory->frame_buffer_) {
    memory->frame_buffer_ = nullptr;
    memory->frame_buffer_capacity_ = 0;
  }
  return std::realloc(ptr, size);
}

size_t SessionMemory::ReleaseIdlePages() {
  const bool frames = frame_buffer_ != nullptr && written_;
  const bool map = stream_map_ != nullptr && map_touched_ &&
                   AllZero(stream_map_, stream_map_capacity_);
  // Pages of their own (page-aligned, whole pages): no allocator metadata
  // or other object shares them.
  size_t released = 0;
  if (frames && map && frame_buffer_in_region_) {
    // Side by side: one call.
    const size_t both = stream_map_capacity_ + frame_buffer_capacity_;
    if (madvise(region_, both, MADV_DONTNEED) == 0) released = both;
  } else {
    if (map && madvise(stream_map_, stream_map_capacity_, MADV_DONTNEED) == 0) {
      released += stream_map_capacity_;
    }
    if (frames && madvise(frame_buffer_, frame_buffer_capacity_, MADV_DONTNEED) == 0) {
      released += frame_buffer_capacity_;
    }
  }
  if (frames) written_ = false;
  if (map) map_touched_ = false;
  return released;
}

}  // namespace sluice::http::http2
