// What the HTTP/2 codecs (http2_server_codec, http2_client_codec) share:
// which fields may be sent and how they become nghttp2 name/value pairs, the
// nghttp2 session guards both sides set, a stream's outgoing body as
// nghttp2's data provider reads it, and the bookkeeping that bounds a
// stream's unconsumed incoming body. Internal to dataplane/http.
//
// No I/O, no clock. The functions are thread-safe; an OutboundBody or a
// ReceiveWindow belongs to one stream of one codec (one worker).
#ifndef SLUICE_DATAPLANE_HTTP_HTTP2_UTIL_H_
#define SLUICE_DATAPLANE_HTTP_HTTP2_UTIL_H_

#include <nghttp2/nghttp2.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::http::http2 {

// RFC 9113 6.5.2: each field counts 32 bytes beyond its name and value.
inline constexpr size_t kFieldOverhead = 32;

// Fields ready to send: lower-case names, values as given.
using FieldList = std::vector<std::pair<std::string, std::string>>;

std::string ToLower(std::string_view s);

// A name/value pair viewing `name` and `value`; nghttp2 copies both when the
// frame is submitted.
nghttp2_nv MakeNv(std::string_view name, std::string_view value);

// Where a field is to be sent; decides which fields are dropped.
enum class FieldSection {
  // A request head: `host` is dropped (the authority travels as
  // :authority), `te` is kept as "trailers" if it lists trailers.
  kRequestHead,
  // A response head: `te` is dropped.
  kResponseHead,
  // Trailers of either direction: `te` and `host` are dropped.
  kTrailers,
};

// Appends the field to `out` if it is fit to send in `section`: its name is
// lower-cased; pseudo-header fields (they are the codec's to write),
// connection-specific fields (connection, keep-alive, proxy-connection,
// transfer-encoding, upgrade: RFC 9113 8.2.2) and fields the peer would
// reject as invalid (a bad character in the name, CR/LF/NUL or white space
// at the ends of the value) are dropped.
void AddSendableField(FieldSection section, std::string_view name,
                      std::string_view value, FieldList* out);

// AddSendableField over `count` fields with `name` and `value` members
// (http::HeaderField), as an owned list.
template <typename Field>
FieldList SendableFields(FieldSection section, const Field* fields, size_t count) {
  FieldList out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) AddSendableField(section, fields[i].name, fields[i].value, &out);
  return out;
}

// Builds the nghttp2 name/value array of one header block without copying
// what it is given: names already in lower case and values are viewed in
// place, and only names with upper-case letters are lower-cased, into the
// builder's own storage. The storage is kept from one block to the next (a
// codec keeps one builder), so a block of fields costs no allocation once
// the builder has grown to the largest block seen. nghttp2 copies the array
// and the bytes it views when the block is submitted, so the views need to
// stay valid only until then.
class HeaderBlockBuilder {
 public:
  // Starts a new block; the array of the previous one becomes invalid.
  void Clear();
  // Clear(), and the storage is freed (an idle connection keeps none).
  void Release();
  // Appends the pair as given, with no check (pseudo-header fields and the
  // fields the codec writes itself).
  void AddRaw(std::string_view name, std::string_view value);
  // Appends the field if it is fit to send in `section`, by exactly the
  // rules of AddSendableField(): the result is the array ToNva() would make
  // of AddSendableField()'s list. `syntax_checked`: the name is a token and
  // the value field-vchars, SP and HTAB without surrounding whitespace (the
  // HTTP/1 parser's checks, which nghttp2's accept: http2_util_test), so
  // only the rules by name are applied, not nghttp2's check of the bytes.
  void AddSendable(FieldSection section, std::string_view name,
                   std::string_view value, bool syntax_checked = false);
  // The block so far, ready for nghttp2_submit_*; valid until the next
  // Clear() or Add*(), and while the viewed names and values are.
  const nghttp2_nv* data();
  size_t size() const { return nva_.size(); }

 private:
  std::vector<nghttp2_nv> nva_;
  // Lower-cased names, and where each goes: (index in nva_, offset here).
  // The pointers are set by data(), once `lowered_` has stopped growing.
  std::string lowered_;
  std::vector<std::pair<size_t, size_t>> lowered_at_;
};

// Follows the frames in the bytes a client sends (after its 24-byte
// preface), for what nghttp2 does not tell or check:
//  - whether the bytes end inside a head: a frame's 9-byte header, or a
//    header block (from a HEADERS or PUSH_PROMISE frame's header to the last
//    byte of the frame that carries END_HEADERS). nghttp2 reports a block's
//    end only for blocks it accepts, so a stall inside a refused one would
//    go unseen;
//  - RFC 9113's rules for PRIORITY frames, which nghttp2 skips once RFC 7540
//    priorities are off (we send SETTINGS_NO_RFC7540_PRIORITIES): a PRIORITY
//    frame on stream 0 (6.3), or one by which a stream depends on itself
//    (5.3.1), is a PROTOCOL_ERROR; the codec makes it a connection error, as
//    5.4.1 allows for a stream error.
//  - the client's side of each stream (FollowStream below): a DATA or
//    HEADERS on a stream it never opened or already closed;
//  - floods of frames that cost work and carry nothing (CVE-2019-9518;
//    Envoy's limits): more than kMaxEmptyFramesInARow DATA, HEADERS or
//    CONTINUATION frames in a row with no payload and no END_STREAM; more
//    than kControlFramesPerStream PRIORITY, PRIORITY_UPDATE and unknown
//    frames per stream the client opened (plus one); more WINDOW_UPDATE
//    frames than 5 + 2 x (streams opened + 10 x DATA frames we sent). These
//    are ENHANCE_YOUR_CALM.
// Other frames are not checked here: nghttp2 refuses what is malformed.
class ClientFrameWatch {
 public:
  static constexpr uint32_t kMaxEmptyFramesInARow = 1;
  static constexpr uint64_t kControlFramesPerStream = 100;
  static constexpr uint64_t kWindowUpdatesPerDataFrame = 10;

  // Follows `bytes`. Returns the offset in `bytes` where a frame that breaks
  // a rule above starts (0 if it started in an earlier call), or npos.
  // After a violation nothing more is followed.
  size_t Feed(std::string_view bytes);
  bool head_pending() const { return frame_header_have_ > 0 || in_block_ || in_header_frame_; }
  // Why Feed() returned an offset; empty before.
  const char* violation() const { return violation_; }
  // The GOAWAY code for it: PROTOCOL_ERROR, or ENHANCE_YOUR_CALM for a flood.
  uint32_t violation_code() const { return violation_code_; }
  // We sent a DATA frame (WINDOW_UPDATE frames are credited per one).
  void OnDataFrameSent() { ++data_frames_sent_; }

 private:
  static constexpr size_t kFrameHeaderBytes = 9;
  // Counts a frame whose header was just read (frame_header_ holds it);
  // the violation, or nullptr.
  const char* CountFrame(uint8_t type, uint64_t length);
  // Follows the client's side of the streams through the DATA, HEADERS
  // and RST_STREAM frame whose header was just read: a HEADERS above the
  // highest id opens a stream (and records the odd ids it skipped); END_STREAM
  // or RST_STREAM closes the client's side. A DATA or HEADERS on a lower id
  // whose client side is not open is a connection error (RFC 9113 5.1.1 and
  // 5.1: PROTOCOL_ERROR for an id skipped, never opened; STREAM_CLOSED after
  // the client's END_STREAM or RST_STREAM). nghttp2 keeps no closed streams
  // (no RFC 7540 priority tree), so it would ignore the frame and a client
  // sending a HEADERS would wait forever for an answer. Frames on a stream
  // the gateway reset while the client's side was open stay allowed (5.1:
  // they may have been sent before the reset arrived); nghttp2 ignores them.
  // Sets `code` and returns the violation, or nullptr.
  const char* FollowStream(uint8_t type, bool end_stream, uint32_t* code);
  // Odd ids a client skipped, as [first, last] ranges; at most
  // kMaxSkippedRanges are kept (past them, such an id is taken for a closed
  // stream: still a connection error, STREAM_CLOSED).
  static constexpr size_t kMaxSkippedRanges = 32;
  std::vector<std::pair<uint32_t, uint32_t>> skipped_;
  // Streams whose client side is open, ascending. At most kMaxOpenFollowed
  // (twice the highest max_concurrent_streams: streams the gateway refused
  // or reset stay here until the client ends them); past that the lowest is
  // dropped and ids up to it are no longer judged (frames on them are
  // nghttp2's to ignore, as before).
  static constexpr size_t kMaxOpenFollowed = 2048;
  std::vector<uint32_t> open_;
  uint32_t unjudged_up_to_ = 0;
  size_t preface_left_ = 24;
  uint8_t frame_header_[kFrameHeaderBytes] = {};
  size_t frame_header_have_ = 0;
  uint64_t payload_left_ = 0;
  uint32_t stream_id_ = 0;
  bool in_frame_ = false;         // a frame header was read; its payload is due
  bool in_header_frame_ = false;  // that frame is HEADERS, PUSH_PROMISE or CONTINUATION
  bool ends_block_ = false;       // ... and carries END_HEADERS
  bool in_block_ = false;         // a block's last frame has not been read whole
  bool is_priority_ = false;      // that frame is PRIORITY
  uint8_t dependency_[4] = {};    // a PRIORITY frame's first payload bytes
  size_t dependency_have_ = 0;
  const char* violation_ = "";
  uint32_t violation_code_ = 0;
  // Flood accounting.
  uint32_t empty_in_a_row_ = 0;
  // A padded DATA frame is empty when its padding fills it (Envoy counts
  // length - padding): decided at its first payload byte, the pad length.
  bool pad_check_ = false;
  bool pad_end_stream_ = false;
  uint64_t pad_frame_length_ = 0;
  uint32_t last_stream_opened_ = 0;
  uint64_t streams_opened_ = 0;
  uint64_t control_frames_ = 0;  // PRIORITY, PRIORITY_UPDATE, unknown types
  uint64_t window_updates_ = 0;
  uint64_t data_frames_sent_ = 0;
};

// `pseudo` (the pseudo-header fields, in order) followed by `fields`, as
// nghttp2 wants them. The result views `fields`, which must outlive it.
std::vector<nghttp2_nv> ToNva(std::vector<nghttp2_nv> pseudo,
                              const FieldList& fields);

// Sets nghttp2's flood and size guards both codecs use (bounded SETTINGS
// entries, queued ACKs, CONTINUATION frames per header block -- enough for a
// legitimate block of `max_header_list_bytes`, and 64 from an upstream, whose
// oversized head fails only its stream --, our HPACK encoder's table) and
// drops closed-stream state.
void SetSessionGuards(nghttp2_option* option, uint32_t max_header_list_bytes,
                      bool peer_is_upstream);

// The GOAWAY code for a connection error nghttp2_session_mem_recv reported.
uint32_t GoawayCodeFor(int lib_error);

// Appends what nghttp2_session_mem_send produces to `sink` until `sink` holds
// at least `limit` bytes or nghttp2 has nothing more. Returns 0, or the
// negative nghttp2 error that made it stop.
int DrainSession(nghttp2_session* session, std::string* sink, size_t limit);

// What both codecs' TakeOutput() do: moves `buffered` (output held back
// earlier) to the end of `out`, releasing its storage, then drains the
// session into `out` until at least `max_bytes` were appended. Returns
// DrainSession()'s result.
int TakeSessionOutput(nghttp2_session* session, std::string* buffered, std::string* out,
                      size_t max_bytes);

// Feeds all of `bytes` to the session (no callback pauses it). Returns 0,
// or the negative nghttp2 error of a connection error.
int ReceiveAll(nghttp2_session* session, std::string_view bytes);

// Feeds a session so that no read ends between the frames of a header
// block or inside a frame header: nghttp2 1.52 (Debian 12, with the
// CVE-2024-27316 fix) counts a CONTINUATION each time a read starts or ends
// in its "CONTINUATION expected" state (nghttp2 issue 2817), so a legitimate
// block of a HEADERS and a few CONTINUATIONs passed the limit (8) when TCP
// split it at a frame boundary or in a frame header (twice per frame): GOAWAY
// ENHANCE_YOUR_CALM, every stream on the connection lost. At the end of a
// read, the octets of a frame header not yet whole are held back, and so is
// the last octet of a HEADERS, PUSH_PROMISE or CONTINUATION frame without
// END_HEADERS until the next frame's header is whole (at most 9 octets).
class WholeFrameHeaderFeeder {
 public:
  // `preface_bytes`: what comes before the first frame (the client's
  // 24-octet preface, on a server session; 0 on a client session).
  explicit WholeFrameHeaderFeeder(size_t preface_bytes) : preface_left_(preface_bytes) {}
  // ReceiveAll of what was held back and `bytes`, less what is held now.
  int Receive(nghttp2_session* session, std::string_view bytes);
  size_t held() const { return held_.size(); }

 private:
  static constexpr size_t kFrameHeaderBytes = 9;
  // Follows the frames through `bytes`; how many octets at the end of
  // everything followed so far to hold back.
  size_t Follow(std::string_view bytes);

  size_t preface_left_;
  uint8_t header_[kFrameHeaderBytes] = {};
  size_t header_have_ = 0;
  uint64_t payload_left_ = 0;
  bool block_frame_open_ = false;  // the frame being read continues a header block
  bool between_block_frames_ = false;  // a block frame ended; no END_HEADERS yet
  std::string held_;
};

// Queues our SETTINGS and, when larger than the protocol's 65535, raises the
// connection-level receive window to `connection_window`.
void SubmitLocalSettings(nghttp2_session* session, const nghttp2_settings_entry* settings,
                         size_t count, uint32_t connection_window);

// A stream's outgoing body: the bytes submitted and not yet framed, how the
// body ends (END_STREAM, or trailers), and what nghttp2's data provider read
// callback needs. The owner keeps it per stream and forwards the callback to
// Read().
class OutboundBody {
 public:
  // Queues `data`; `end` ends the body. Resumes nghttp2's deferred data
  // provider for `stream_id` when there is something new to send.
  void Submit(nghttp2_session* session, int32_t stream_id,
              std::string_view data, bool end, size_t low_watermark);
  // Trailers to send once the queue is empty; call before the Submit() that
  // ends the body. An empty list just ends the body.
  void SetTrailers(FieldList trailers) {
    trailers_ = std::move(trailers);
    has_trailers_ = !trailers_.empty();
  }
  // The data provider's read callback for the stream. Sets
  // *crossed_low_watermark when the queue fell from above `low_watermark` to
  // at or below it.
  ssize_t Read(nghttp2_session* session, int32_t stream_id, uint8_t* buf,
               size_t length, uint32_t* data_flags, size_t low_watermark,
               bool* crossed_low_watermark);
  // Has nghttp2 call the read callback again although nothing was queued
  // (when it was deferred): the stream has something else to do there.
  void Wake(nghttp2_session* session, int32_t stream_id);
  // Forgets the queue (the stream is reset or done) and frees its storage.
  void Drop();

  // Submitted and not yet framed.
  size_t queued() const { return bytes_.size() - offset_; }
  // The body's last byte has been submitted.
  bool ended() const { return end_; }

 private:
  std::string bytes_;
  size_t offset_ = 0;
  bool end_ = false;
  FieldList trailers_;
  bool has_trailers_ = false;
  bool deferred_ = false;  // the read callback returned NGHTTP2_ERR_DEFERRED
  bool above_low_watermark_ = false;
};

// Flow control of one stream's incoming body with manual window updates
// (nghttp2_option_set_no_auto_window_update): the credit given back to the
// peer is bounded so that the bytes the caller holds (given to it, not yet
// consumed) plus the window the peer may still fill stay within
// max(buffer_limit, window). A caller that stops consuming stalls the
// stream, and holds at most that many bytes of it.
class ReceiveWindow {
 public:
  ReceiveWindow(size_t window, size_t buffer_limit);
  // `n` bytes given to the caller; returns the credit to return now
  // (nghttp2_session_consume_stream).
  size_t OnDelivered(size_t n);
  // The caller is done with `n` bytes; returns the credit to return now.
  size_t OnConsumed(size_t n);
  // Given to the caller and not yet consumed.
  size_t held() const { return held_; }

 private:
  size_t Release();

  size_t window_;
  size_t budget_;
  size_t held_ = 0;
  size_t withheld_ = 0;  // received, credit not yet returned
};

// The allocator a codec gives its nghttp2 session (nghttp2_session_*_new3).
// Everything goes to malloc and free except two chunks nghttp2 allocates as
// the session is made and keeps for the session's life:
// - the frame buffer (kFrameBufferBytes), into which it packs every frame it
//   sends (DATA payloads are copied there): after one response of 16 KB or
//   more its 16 KiB would stay resident for as long as the connection lives;
// - the stream map's table (kStreamMapBytes: 256 buckets of 16 bytes, which
//   it never shrinks), a page that one stream makes resident.
// Both get whole pages of their own, side by side (the map's first), so that
// an idle session can give them back to the kernel with one madvise(2).
//
// One session per SessionMemory, which must outlive it (nghttp2_session_del
// frees through it). Not movable: nghttp2 holds its address.
class SessionMemory {
 public:
  // nghttp2's NGHTTP2_FRAMEBUF_CHUNKLEN (frame header, a pad-length byte
  // and the largest payload of the default SETTINGS_MAX_FRAME_SIZE), which
  // only the frame buffer has among what a new session allocates.
  static constexpr size_t kFrameBufferBytes = 9 + 1 + 16384;
  // The stream map's first table: nghttp2_map_init's calloc of 1 << 8
  // buckets of 16 bytes (hash, stream id, pointer), all zero when empty.
  static constexpr size_t kStreamMapBytes = 256 * 16;

  SessionMemory();
  SessionMemory(const SessionMemory&) = delete;
  SessionMemory& operator=(const SessionMemory&) = delete;
  ~SessionMemory();

  // For nghttp2_session_*_new3; call MakingSession(true) before it and
  // MakingSession(false) after: the two chunks are recognized by their size
  // among what is allocated in between (nghttp2 1.52 allocates the session,
  // two HPACK tables of 1 KiB, the stream map, then the frame buffer).
  nghttp2_mem* mem() { return &mem_; }
  void MakingSession(bool making) { making_ = making; }
  // The chunks were recognized (false if an nghttp2 release changed their
  // sizes: that one is then not released).
  bool has_frame_buffer() const { return frame_buffer_ != nullptr; }
  bool has_stream_map() const { return stream_map_ != nullptr; }
  // Where they are, for tests (mincore(2) sees whether pages are resident).
  const void* frame_buffer() const { return frame_buffer_; }
  size_t frame_buffer_capacity() const { return frame_buffer_capacity_; }
  const void* stream_map() const { return stream_map_; }
  size_t stream_map_capacity() const { return stream_map_capacity_; }

  // The session packed frames: the frame buffer's pages are in use again
  // (and streams may have come and gone).
  void NoteOutput() { written_ = true; map_touched_ = true; }
  // The session read frames: streams may have come and gone.
  void NoteInput() { map_touched_ = true; }
  // Gives back to the kernel (MADV_DONTNEED) the frame buffer's pages if
  // frames were packed since the last time, and the stream map's page if
  // it was touched since and is all zero (no stream in it: an all-zero page
  // comes back as one, so that holds whatever nghttp2 keeps there). The
  // next frame or stream faults in zeroed pages. Returns the bytes given
  // back. Call only while the session has no frame in progress, when what
  // the frame buffer holds is dead until the next frame is packed over it:
  // nghttp2_session_want_write is 0, all output was taken, and
  // nghttp2_session_want_read is not 0 (after its terminating GOAWAY a
  // session wants no write with that frame still active).
  size_t ReleaseIdlePages();

 private:
  static void* Malloc(size_t size, void* self);
  static void Free(void* ptr, void* self);
  static void* Calloc(size_t count, size_t size, void* self);
  static void* Realloc(void* ptr, size_t size, void* self);
  // malloc, or the frame buffer when this is it.
  void* Allocate(size_t size);
  // `ptr` (one of the two chunks) is no longer nghttp2's.
  void Forget(void* ptr);

  nghttp2_mem mem_;
  // Page-aligned: the stream map's pages, then room for the frame buffer's.
  // Freed once neither chunk is in it.
  char* region_ = nullptr;
  void* stream_map_ = nullptr;
  size_t stream_map_capacity_ = 0;  // whole pages
  void* frame_buffer_ = nullptr;
  size_t frame_buffer_capacity_ = 0;  // whole pages
  bool frame_buffer_in_region_ = false;
  bool making_ = false;
  bool written_ = false;
  bool map_touched_ = false;
};

}  // namespace sluice::http::http2

#endif  // SLUICE_DATAPLANE_HTTP_HTTP2_UTIL_H_
