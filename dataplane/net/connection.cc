#include "dataplane/net/connection.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "dataplane/net/socket.h"

namespace sluice::net {
namespace {

// Read at most this much per readiness event, so one busy connection cannot
// starve the others on its worker.
constexpr size_t kReadChunk = 16384;
constexpr int kMaxReadsPerEvent = 4;

}  // namespace

Connection::Connection(event::Dispatcher& dispatcher, int fd, bool connecting)
    : dispatcher_(dispatcher), fd_(fd), connecting_(connecting) {
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
  } else {
    if (read_enabled_ && !close_after_flush_) events |= event::FileEvent::kRead;
    if (!output_.empty()) events |= event::FileEvent::kWrite;
  }
  file_event_->SetEnabled(events);
}

void Connection::SetReadEnabled(bool enabled) {
  if (read_enabled_ == enabled) return;
  read_enabled_ = enabled;
  UpdateEvents();
}

void Connection::Write(std::string_view bytes) { Write2(bytes, {}); }

void Connection::Write2(std::string_view a, std::string_view b) {
  if (fd_ < 0) return;
  output_.Append(a);
  output_.Append(b);
  if (connecting_ || flush_scheduled_ || (file_event_->enabled() & event::FileEvent::kWrite)) {
    return;  // sent when connected, at the scheduled flush, or when writable
  }
  flush_scheduled_ = true;
  dispatcher_.ScheduleFlush(this);
}

void Connection::Flush() {
  flush_scheduled_ = false;
  if (fd_ < 0 || connecting_ || output_.empty()) return;
  HandleWrite();
}

void Connection::OnEvents(short events) {
  if (connecting_) {
    int err = SocketError(fd_);
    if (err != 0) {
      Fail(CloseReason::kConnectFailed, err);
      return;
    }
    connecting_ = false;
    UpdateEvents();
    if (callbacks_) callbacks_->OnConnected();
    if (fd_ >= 0 && !output_.empty()) HandleWrite();
    return;
  }
  if (events & event::FileEvent::kWrite) {
    HandleWrite();
    if (fd_ < 0) return;
  }
  if (events & event::FileEvent::kRead) HandleRead();
}

void Connection::HandleRead() {
  bool got = false;
  for (int i = 0; i < kMaxReadsPerEvent; ++i) {
    char* dst = input_.Reserve(kReadChunk);
    ssize_t n = ::read(fd_, dst, kReadChunk);
    if (n > 0) {
      input_.Commit(static_cast<size_t>(n));
      bytes_read_ += static_cast<uint64_t>(n);
      got = true;
      if (static_cast<size_t>(n) < kReadChunk) break;
      continue;
    }
    if (n == 0) {
      if (got && callbacks_) {
        callbacks_->OnReadable();
        if (fd_ < 0) return;
      }
      Fail(CloseReason::kRemoteClosed, 0);
      return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
    int err = errno;
    if (got && callbacks_) {
      callbacks_->OnReadable();
      if (fd_ < 0) return;
    }
    Fail(CloseReason::kReset, err);
    return;
  }
  if (got && callbacks_) callbacks_->OnReadable();
}

void Connection::HandleWrite() {
  while (!output_.empty()) {
    std::string_view pending = output_.view();
    ssize_t n = ::write(fd_, pending.data(), pending.size());
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      Fail(CloseReason::kReset, errno);
      return;
    }
    output_.Drain(static_cast<size_t>(n));
  }
  if (output_.empty()) {
    output_.ShrinkIfEmpty();
    if (close_after_flush_) {
      ConnectionCallbacks* callbacks = callbacks_;
      ShutdownAndClose();
      if (callbacks) callbacks->OnClosed(CloseReason::kLocal, 0);
      return;
    }
    UpdateEvents();
    if (callbacks_) callbacks_->OnWriteDrained();
  }
}

void Connection::Fail(CloseReason reason, int error) {
  ConnectionCallbacks* callbacks = callbacks_;
  Close();
  if (callbacks) callbacks->OnClosed(reason, error);
}

void Connection::Close() {
  if (flush_scheduled_) {
    dispatcher_.CancelFlush(this);
    flush_scheduled_ = false;
  }
  if (fd_ < 0) return;
  file_event_.reset();
  ::close(fd_);
  fd_ = -1;
  callbacks_ = nullptr;
}

bool Connection::CloseAfterFlush() {
  if (fd_ < 0) return true;
  if (output_.empty() && !connecting_) {
    ShutdownAndClose();
    return true;
  }
  close_after_flush_ = true;
  UpdateEvents();
  return false;
}

void Connection::ShutdownAndClose() {
  ::shutdown(fd_, SHUT_WR);
  char discard[4096];
  for (int i = 0; i < 16 && ::read(fd_, discard, sizeof(discard)) > 0; ++i) {
  }
  Close();
}

}  // namespace sluice::net
