#include "dataplane/net/connection.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>

#include "dataplane/net/lingering_close.h"
#include "dataplane/net/socket.h"

namespace sluice::net {
namespace {

// Read at most this much per readiness event, so one busy connection cannot
// starve the others on its worker.
constexpr size_t kReadChunk = 16384;
constexpr int kMaxReadsPerEvent = 4;

}  // namespace

Connection::Connection(event::Dispatcher& dispatcher, int fd, bool connecting,
                       std::unique_ptr<TransportSocket> transport)
    : dispatcher_(dispatcher),
      fd_(fd),
      connecting_(connecting),
      client_side_(connecting),
      owned_transport_(std::move(transport)),
      transport_(owned_transport_ ? owned_transport_.get() : &plain_) {
  transport_->Attach(fd_);
  // A plain socket has no handshake; TLS starts with the peer's (server) or
  // our (client, once connected) first flight.
  handshaking_ = owned_transport_ != nullptr;
  handshake_wants_ = event::FileEvent::kRead;
  file_event_ = std::make_unique<event::FileEvent>(dispatcher_, fd_,
                                                   [this](short events) { OnEvents(events); });
  UpdateEvents();
}

Connection::~Connection() { Close(); }


void Connection::UpdateEvents() {
  if (fd_ < 0) return;
  short events = 0;
  if (connecting_) {
    events = event::FileEvent::kWrite;
  } else if (handshaking_) {
    events = handshake_wants_;
  } else {
    if ((read_enabled_ && !close_after_flush_) || transport_->wants_read()) {
      events |= event::FileEvent::kRead;
    }
    if (!output_.empty() || transport_->wants_write() || !transport_->pending_output().empty()) {
      events |= event::FileEvent::kWrite;
    }
  }
  file_event_->SetEnabled(events);
}

void Connection::SetReadEnabled(bool enabled) {
  if (read_eof_) enabled = false;
  if (read_enabled_ == enabled) return;
  read_enabled_ = enabled;
  UpdateEvents();
  if (enabled && recv_result_ != kNoResult32 && !read_scheduled_ && ReadsNow()) {
    // A batched read's result held while reading was stopped: handed on at
    // the end of this pass, as a read would be.
    read_scheduled_ = true;
    dispatcher_.ScheduleRead(this);
  }
}

void Connection::Write(std::string_view bytes) { Write2(bytes, {}); }

void Connection::Write2(std::string_view a, std::string_view b) {
  if (fd_ < 0) return;
  output_.Append(a);
  output_.Append(b);
  if (connecting_ || handshaking_ || flush_scheduled_ ||
      (file_event_->enabled() & event::FileEvent::kWrite)) {
    return;  // sent after the handshake, at the scheduled flush, or when writable
  }
  flush_scheduled_ = true;
  dispatcher_.ScheduleFlush(this);
}

void Connection::Flush() {
  // Called directly between a batched send and its FlushAfterSend (which
  // will not come: the queued call is cancelled below): the send's error,
  // if any, comes again from the next send.
  send_error_ = kNoResult32;
  if (flush_scheduled_) {
    // Called directly (an owner flushing before it closes), the queued call
    // is cancelled: left queued, it ran on a connection deleted meanwhile
    // (Close() cancels only what it knows to be queued). Called by the
    // dispatcher, nothing is left to cancel (no scan per flush).
    if (!dispatcher_.FlushingNow(this)) dispatcher_.CancelFlush(this);
    flush_scheduled_ = false;
  }
  if (fd_ < 0 || connecting_ || handshaking_ || !HasOutput()) return;
  HandleWrite();
}

bool Connection::PendingSend(int* fd, std::string_view* bytes) {
  if (fd_ < 0 || connecting_ || handshaking_) return false;
  if (transport_ == &plain_) {
    if (output_.empty()) return false;
    *bytes = output_.view();
  } else {
    // TLS: the records are made now and go with the batch. At most
    // kSealedPerBatch at a time: the rest is encrypted as the socket takes
    // it (HandleWrite), not copied once more here.
    if (!output_.empty() && transport_->pending_output().empty()) {
      const std::string_view plain = output_.view();
      output_.Drain(transport_->Seal(plain.data(), std::min(plain.size(), kSealedPerBatch)));
    }
    *bytes = transport_->pending_output();
    if (bytes->empty()) return false;
  }
  *fd = fd_;
  if (peer_is_local_) dispatcher_.NoteLocalSend();
  return true;
}

void Connection::SendMade(int result) {
  if (result < 0) {
    send_error_ = result;
  } else if (transport_ == &plain_) {
    output_.Drain(std::min(static_cast<size_t>(result), output_.size()));
  } else {
    transport_->DrainPendingOutput(static_cast<size_t>(result));
  }
}

void Connection::FlushAfterSend() {
  flush_scheduled_ = false;  // the dispatcher's own call: nothing to cancel
  const int64_t error = send_error_ == kNoResult32 ? kNoResult : send_error_;
  send_error_ = kNoResult32;
  if (fd_ < 0) return;
  // An error goes where a failed send(2) would; bytes sent are drained
  // already: what is left (a partial send) is sent on, or the drain said.
  HandleWrite(HasOutput() ? error : kNoResult);
}

bool Connection::PendingRecv(int* fd, char** data, size_t* size) {
  // A result held from an earlier batch goes on first (ReadAfterRecv).
  if (!ReadsNow() || recv_result_ != kNoResult32) return false;
  if (transport_ == &plain_) {
    *data = input_.Reserve(kReadChunk);
    *size = kReadChunk;
  } else if (!transport_->RecvRoom(data, size)) {
    return false;  // read through the transport (ReadAfterRecv)
  }
  *fd = fd_;
  return true;
}

void Connection::RecvMade(int result) {
  recv_result_ = result;
  if (transport_ != &plain_) {
    transport_->RecvMade(result);  // the records, decrypted by Read()
  } else if (result > 0) {
    input_.Commit(static_cast<size_t>(result));
  }
}

void Connection::ReadAfterRecv() {
  read_scheduled_ = false;
  if (recv_result_ == kNoResult32) {
    if (ReadsNow()) HandleRead(kNoResult);  // the batch made no read for it
    return;
  }
  // The batch's reads are made before any of its callbacks runs: one of
  // them may have stopped this connection's reading since (back-pressure).
  // What was read then waits, unseen, until reading resumes
  // (SetReadEnabled).
  if (!ReadsNow()) return;
  const int64_t result = recv_result_;
  recv_result_ = kNoResult32;
  if (transport_ == &plain_) {
    HandleRead(result);
  } else if (result != -EAGAIN && result != -EWOULDBLOCK) {
    HandleRead(kNoResult);  // Read() takes the records from the transport
  }
}

bool Connection::AdvanceHandshake() {
  switch (transport_->Handshake()) {
    case TransportSocket::Progress::kDone:
      handshaking_ = false;
      return true;
    case TransportSocket::Progress::kWantRead:
      handshake_wants_ = event::FileEvent::kRead;
      break;
    case TransportSocket::Progress::kWantWrite:
      handshake_wants_ = event::FileEvent::kWrite;
      break;
    case TransportSocket::Progress::kFailed:
      if (!client_side_ && callbacks_ != nullptr && transport_->plain_http1_request()) {
        std::string reply;
        if (callbacks_->OnPlainHttpRequest(&reply)) {
          // The TLS session wrote nothing (no alert for bytes that are not
          // TLS): the answer is the first thing the client reads. Small,
          // on a new socket: one send takes it whole, or it is lost as the
          // bare close would be. Then FIN, and what the client sent after
          // its request line is read and dropped, so the close is no reset.
          (void)::send(fd_, reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
          ConnectionCallbacks* callbacks = callbacks_;
          ShutdownAndClose();
          callbacks->OnClosed(CloseReason::kHandshakeFailed, EPROTO);
          return false;
        }
      }
      Fail(CloseReason::kHandshakeFailed, EPROTO);
      return false;
  }
  UpdateEvents();
  return false;
}

void Connection::OnEvents(short events) {
  if (connecting_) {
    int err = SocketError(fd_);
    if (err != 0) {
      Fail(CloseReason::kConnectFailed, err);
      return;
    }
    connecting_ = false;
    if (handshaking_ && !AdvanceHandshake()) return;  // our ClientHello is sent
    UpdateEvents();
    if (callbacks_) callbacks_->OnConnected();
    if (fd_ >= 0 && HasOutput()) HandleWrite();
    return;
  }
  if (handshaking_) {
    if (!AdvanceHandshake()) return;
    UpdateEvents();
    if (callbacks_) callbacks_->OnConnected();
    if (fd_ < 0) return;
    // The peer's first bytes may have come with its last handshake flight.
    if (HasOutput()) HandleWrite();
    if (fd_ >= 0 && read_enabled_) HandleRead(kNoResult);
    return;
  }
  // A TLS read may wait for writability and a write for readability.
  bool read_waits_for_write = transport_->wants_write();
  bool write_waits_for_read = transport_->wants_read();
  if ((events & event::FileEvent::kWrite) || ((events & event::FileEvent::kRead) && write_waits_for_read)) {
    HandleWrite();
    if (fd_ < 0) return;
  }
  if ((events & event::FileEvent::kRead) || ((events & event::FileEvent::kWrite) && read_waits_for_write)) {
    if ((events & event::FileEvent::kRead) && !read_waits_for_write &&
        dispatcher_.batches_reads()) {
      // Read with the pass's other readable sockets, in one system call.
      if (!read_scheduled_) {
        read_scheduled_ = true;
        dispatcher_.ScheduleRead(this);
      }
      return;
    }
    HandleRead(kNoResult);
  }
}

void Connection::HandleRead(int64_t first_result) {
  bool got = false;
  // Bytes a TLS socket already decrypted are read on: no readiness event
  // would ever announce them.
  for (int i = 0; i < kMaxReadsPerEvent || transport_->has_buffered_input(); ++i) {
    ssize_t n;
    if (first_result != kNoResult) {
      n = first_result;  // its bytes are in input_ already
      if (n < 0) {
        errno = static_cast<int>(-n);
        n = -1;
      }
      first_result = kNoResult;
    } else {
      char* dst = input_.Reserve(kReadChunk);
      n = transport_->Read(dst, kReadChunk);
      if (n > 0) input_.Commit(static_cast<size_t>(n));
    }
    if (n > 0) {
      bytes_read_ += static_cast<uint64_t>(n);
      got = true;
      if (!transport_->has_buffered_input() &&
          transport_->drained(static_cast<size_t>(n), kReadChunk)) {
        break;  // the socket is drained
      }
      continue;
    }
    if (n == 0) {
      if (got && callbacks_ && !input_.empty()) {
        callbacks_->OnReadable();
        if (fd_ < 0) return;
      }
      if (callbacks_ && callbacks_->OnReadEof()) {
        if (fd_ < 0) return;
        read_eof_ = true;
        SetReadEnabled(false);
        return;
      }
      Fail(CloseReason::kRemoteClosed, 0);
      return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      if (transport_->wants_write()) UpdateEvents();
      break;
    }
    int err = errno;
    if (got && callbacks_ && !input_.empty()) {
      callbacks_->OnReadable();
      if (fd_ < 0) return;
    }
    Fail(CloseReason::kReset, err);
    return;
  }
  // (A held read's bytes may have been taken already by an owner that
  // looked at input() as it resumed reading: nothing then to hand on.)
  if (got && callbacks_ && !input_.empty()) callbacks_->OnReadable();
}

void Connection::HandleWrite(int64_t first_result) {
  if (peer_is_local_ && first_result == kNoResult && HasOutput()) dispatcher_.NoteLocalSend();
  // A TLS transport's pending output goes first, by Write() (with no more
  // bytes if output_ is empty).
  while (HasOutput()) {
    ssize_t n;
    if (first_result != kNoResult) {
      n = first_result;
      if (n < 0) {
        errno = static_cast<int>(-n);
        n = -1;
      }
      first_result = kNoResult;
    } else {
      std::string_view pending = output_.view();
      n = transport_->Write(pending.data(), pending.size());
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        UpdateEvents();
        break;
      }
      if (errno == EINTR) continue;
      const int err = errno;
      if (read_before_write_failure_ && read_enabled_ && !read_eof_ && !transport_->secure()) {
        ReadLeftovers();
        if (fd_ < 0) return;  // the callbacks closed it
      }
      Fail(CloseReason::kReset, err);
      return;
    }
    output_.Drain(static_cast<size_t>(n));
  }
  if (!HasOutput()) {
    output_.ShrinkIfEmpty();
    if (close_after_flush_) {
      ConnectionCallbacks* callbacks = callbacks_;
      ShutdownAndClose();
      if (callbacks) callbacks->OnClosed(CloseReason::kLocal, 0);
      return;
    }
    if (shutdown_write_after_flush_) ShutdownWrite();
    UpdateEvents();
    if (callbacks_) callbacks_->OnWriteDrained();
  }
}

void Connection::ReadLeftovers() {
  bool got = false;
  for (int i = 0; i < kMaxReadsPerEvent; ++i) {
    char* dst = input_.Reserve(kReadChunk);
    ssize_t n = transport_->Read(dst, kReadChunk);
    if (n <= 0) break;  // the end, the reset, or nothing more
    input_.Commit(static_cast<size_t>(n));
    bytes_read_ += static_cast<uint64_t>(n);
    got = true;
  }
  if (got && callbacks_) callbacks_->OnReadable();
}

void Connection::Fail(CloseReason reason, int error) {
  ConnectionCallbacks* callbacks = callbacks_;
  Close();
  if (callbacks) callbacks->OnClosed(reason, error);
}

void Connection::CancelQueued() {
  if (flush_scheduled_) {
    dispatcher_.CancelFlush(this);
    flush_scheduled_ = false;
  }
  if (read_scheduled_) {
    dispatcher_.CancelRead(this);
    read_scheduled_ = false;
  }
  recv_result_ = kNoResult32;
}

void Connection::Close() {
  CancelQueued();
  if (fd_ < 0) return;
  file_event_.reset();
  ::close(fd_);
  fd_ = -1;
  callbacks_ = nullptr;
}

void Connection::CloseOrderly() {
  if (fd_ >= 0 && handshake_complete() && output_.empty()) transport_->Shutdown();
  Close();
}

void Connection::Reset() {
  if (fd_ >= 0) {
    linger abortive = {1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &abortive, sizeof(abortive));
  }
  Close();
}

bool Connection::CloseAfterFlush() {
  if (fd_ < 0) return true;
  if (!HasOutput() && !connecting_) {
    ShutdownAndClose();
    return true;
  }
  close_after_flush_ = true;
  UpdateEvents();
  return false;
}

void Connection::ShutdownWriteAfterFlush() {
  if (fd_ < 0) return;
  shutdown_write_after_flush_ = true;
  if (!HasOutput() && !connecting_ && handshake_complete()) ShutdownWrite();
}

void Connection::ShutdownWrite() {
  shutdown_write_after_flush_ = false;
  transport_->Shutdown();
  ::shutdown(fd_, SHUT_WR);
}

void Connection::ShutdownAndClose() {
  transport_->Shutdown();
  ::shutdown(fd_, SHUT_WR);
  char discard[4096];
  ssize_t n = 0;
  for (int i = 0; i < 16 && (n = ::read(fd_, discard, sizeof(discard))) > 0; ++i) {
  }
  if (lingerer_ != nullptr && n != 0 && (n > 0 || errno == EAGAIN || errno == EWOULDBLOCK)) {
    // The peer may still be sending: its bytes are dropped until it is done.
    CancelQueued();
    file_event_.reset();
    lingerer_->Take(fd_);
    fd_ = -1;
    callbacks_ = nullptr;
    return;
  }
  Close();
}

}  // namespace sluice::net
