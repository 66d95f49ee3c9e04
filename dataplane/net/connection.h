// Connection: a non-blocking TCP socket on one dispatcher, with an input
// buffer filled on readiness and an output buffer for what the kernel did not
// take at once. Bytes move through the connection's TransportSocket (plain,
// or TLS with its handshake first), never by read(2)/write(2) here. Writes
// are gathered and sent at the end of the loop iteration; reads are made
// there too, on a dispatcher that batches them (Dispatcher::ScheduleRead).
//
// Owner's worker thread only. After Close() no callback runs again.
#ifndef SLUICE_DATAPLANE_NET_CONNECTION_H_
#define SLUICE_DATAPLANE_NET_CONNECTION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "dataplane/event/dispatcher.h"
#include "dataplane/net/buffer.h"
#include "dataplane/net/transport_socket.h"

namespace sluice::net {

enum class CloseReason { kLocal, kRemoteClosed, kReset, kConnectFailed, kHandshakeFailed };

class ConnectionCallbacks {
 public:
  virtual ~ConnectionCallbacks() = default;
  // New bytes are in input(). May call Close() or destroy nothing else.
  virtual void OnReadable() = 0;
  // The output buffer has been fully written.
  virtual void OnWriteDrained() {}
  // A client connection finished connecting and its TLS handshake, if any;
  // an accepted TLS connection finished its handshake.
  virtual void OnConnected() {}
  // The peer closed or the socket failed; the fd is already closed.
  virtual void OnClosed(CloseReason reason, int error) = 0;
  // The peer finished sending (FIN) and everything it sent was delivered.
  // true: keep the connection half-closed (reading stops; writing goes on,
  // e.g. to answer a request whose client half-closed after sending it);
  // false (the default): OnClosed(kRemoteClosed) follows at once.
  virtual bool OnReadEof() { return false; }
  // An accepted TLS connection's handshake failed because the client sent
  // an HTTP/1 request in the clear. true: `reply` holds the bytes to answer
  // it with, in the clear, before the connection closes; false (the
  // default): it closes with nothing said. OnClosed(kHandshakeFailed)
  // follows either way.
  virtual bool OnPlainHttpRequest(std::string* /*reply*/) { return false; }
};

class LingeringCloser;

class Connection : public event::Flushable, public event::RecvTarget {
 public:
  // Takes ownership of `fd`. `connecting`: a connect() is in progress.
  // `transport`: how bytes move (TLS); nullptr for a plain socket.
  Connection(event::Dispatcher& dispatcher, int fd, bool connecting,
             std::unique_ptr<TransportSocket> transport = nullptr);
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void SetCallbacks(ConnectionCallbacks* callbacks) { callbacks_ = callbacks; }

  Buffer& input() { return input_; }
  void Write(std::string_view bytes);
  // Writes several pieces with one syscall when possible.
  void Write2(std::string_view a, std::string_view b);
  // Bytes written and not yet sent (a TLS transport's records too).
  size_t output_size() const { return output_.size() + transport_->pending_output().size(); }
  // Writes queue and are sent at the end of the loop iteration (see
  // Dispatcher::ScheduleFlush), with one syscall for everything queued.
  void Flush() override;
  // The pending bytes, for a dispatcher that batches sends: as written on a
  // plain socket; encrypted first (TransportSocket::Seal) on a TLS one.
  bool PendingSend(int* fd, std::string_view* bytes) override;
  void SendMade(int result) override;
  void FlushAfterSend() override;
  // The batched read (event::RecvTarget): into the input buffer (plain), or
  // the TLS transport's, whose Read() then decrypts the records.
  bool PendingRecv(int* fd, char** data, size_t* size) override;
  void RecvMade(int result) override;
  void ReadAfterRecv() override;

  // Frees the input and output buffers if both are empty: an idle
  // keep-alive connection then holds no buffer memory.
  void ReleaseIdleBuffers() {
    if (input_.empty() && output_.empty()) {
      input_.Release();
      output_.Release();
      transport_->ReleaseIdleBuffers();
    }
  }

  // On a write that fails (the peer closed or reset), first hand on what
  // the peer sent before and the socket still holds (OnReadable), then
  // fail: an HTTP/2 upstream's GOAWAY says which streams it did not
  // process. Plain sockets only: a failed TLS session does no more I/O.
  void ReadBeforeWriteFailure() { read_before_write_failure_ = true; }
  // The peer is a process on this host (a loopback address): each pass
  // that sends to it tells the dispatcher (Dispatcher::NoteLocalSend), which
  // may then let that process run before its next wait.
  void SetPeerIsLocal(bool local) { peer_is_local_ = local; }
  bool peer_is_local() const { return peer_is_local_; }
  // Stops (or resumes) reading from the socket: back-pressure.
  void SetReadEnabled(bool enabled);
  bool read_enabled() const { return read_enabled_; }

  // Closes now, dropping unwritten output. No callbacks after this.
  void Close();
  // Closes now, having said so first when nothing is left to write: TLS
  // sends close_notify (RFC 8446 6.1), which a strict client otherwise
  // reports as a truncation. For a connection the gateway ends between
  // messages (idle, drained).
  void CloseOrderly();
  // Closes now with a reset (SO_LINGER 0), not a FIN: the peer cannot take
  // what it got for a whole message delimited by the close.
  void Reset();
  // Closes once the output is written: at once (returning true, with no
  // callback) when nothing is pending, else later with OnClosed(kLocal).
  bool CloseAfterFlush();
  // Shuts the socket down for writing (FIN; TLS's close_notify first) once
  // the output is written, at once when nothing is pending: a half-close
  // carried on (an HTTP/2 WebSocket's END_STREAM). Reading goes on.
  void ShutdownWriteAfterFlush();
  // The peer may still be sending (a request body answered early): when
  // CloseAfterFlush() closes, the socket, shut down for writing, goes to
  // `closer` to be closed once the peer is done (see lingering_close.h).
  void LingerOnClose(LingeringCloser* closer) { lingerer_ = closer; }

  bool open() const { return fd_ >= 0; }
  // The TCP connect is in progress. (A TLS handshake follows it: nothing is
  // sent before handshake_complete() either.)
  bool connecting() const { return connecting_; }
  bool handshake_complete() const { return !connecting_ && !handshaking_; }
  const TransportSocket& transport() const { return *transport_; }
  int fd() const { return fd_; }
  // Bytes read and written over the connection's life.
  uint64_t bytes_read() const { return bytes_read_; }

 private:
  void OnEvents(short events);
  // Advances the handshake; true once it is complete and I/O may go on.
  bool AdvanceHandshake();
  // Reads what the socket holds and hands it on. `first_result`: the first
  // read was made already (batched), its bytes are in input_, and it gave
  // this (bytes, 0 at the end, or -errno); kNoResult: it was not.
  void HandleRead(int64_t first_result);
  // Whether a readable socket is read now (connected, reading on).
  bool ReadsNow() const {
    return fd_ >= 0 && !connecting_ && !handshaking_ && read_enabled_ && !close_after_flush_;
  }
  // Takes this connection out of the dispatcher's queued flush and read.
  void CancelQueued();
  // Sends what is pending. `first_result`: the first send was made already
  // and gave this (bytes, or -errno); kNoResult: it was not.
  static constexpr int64_t kNoResult = INT64_MIN;
  // The most plain bytes a TLS connection encrypts for one batched send (as
  // much as one read event takes from a socket).
  static constexpr size_t kSealedPerBatch = 64 * 1024;
  bool HasOutput() const { return !output_.empty() || !transport_->pending_output().empty(); }
  void HandleWrite(int64_t first_result = kNoResult);
  void UpdateEvents();
  void Fail(CloseReason reason, int error);
  // Reads what the socket still holds and hands it on (a write failed).
  void ReadLeftovers();
  // Sends FIN, discards what the peer already sent (so close() does not turn
  // into a reset that could destroy the response in flight), closes.
  void ShutdownAndClose();
  void ShutdownWrite();  // for ShutdownWriteAfterFlush()

  event::Dispatcher& dispatcher_;
  int fd_;
  bool connecting_;
  const bool client_side_;  // we connected out (upstream), not accepted
  bool handshaking_ = true;
  uint8_t handshake_wants_ = 0;  // FileEvent bits the handshake waits for
  bool read_enabled_ = true;
  bool read_eof_ = false;  // the peer half-closed; nothing more to read
  bool close_after_flush_ = false;
  bool shutdown_write_after_flush_ = false;  // ShutdownWriteAfterFlush(), not yet done
  bool flush_scheduled_ = false;
  bool read_before_write_failure_ = false;
  bool read_scheduled_ = false;  // queued for the dispatcher's batched reads
  bool peer_is_local_ = false;  // SetPeerIsLocal()
  // A batched send's error (-errno), from SendMade() to FlushAfterSend(),
  // and a batched read's result, from RecvMade() to ReadAfterRecv() (or,
  // made while reading was stopped, until reading resumes); kNoResult32
  // when none is waiting. (A result is an int.)
  static constexpr int32_t kNoResult32 = INT32_MIN;
  int32_t send_error_ = kNoResult32;
  int32_t recv_result_ = kNoResult32;
  uint64_t bytes_read_ = 0;
  Buffer input_;
  Buffer output_;
  PlainTransportSocket plain_;
  std::unique_ptr<TransportSocket> owned_transport_;
  TransportSocket* transport_;
  std::unique_ptr<event::FileEvent> file_event_;
  ConnectionCallbacks* callbacks_ = nullptr;
  LingeringCloser* lingerer_ = nullptr;
};

}  // namespace sluice::net

#endif  // SLUICE_DATAPLANE_NET_CONNECTION_H_
