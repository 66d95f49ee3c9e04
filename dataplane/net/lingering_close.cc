#include "dataplane/net/lingering_close.h"

#include <errno.h>
#include <unistd.h>

#include "absl/time/clock.h"

namespace sluice::net {

struct LingeringCloser::Socket : event::DeferredDeletable {
  Socket(event::Dispatcher& dispatcher, int fd, LingeringCloser& owner)
      : readable(dispatcher, fd, [&owner, fd](short) { owner.OnReadable(fd); }),
        timer(dispatcher, [&owner, fd] { owner.Done(fd); }) {}
  event::FileEvent readable;
  event::Timer timer;  // kIdle from the last byte, never past `until`
  absl::Time until;
  uint64_t dropped = 0;
};

LingeringCloser::LingeringCloser(event::Dispatcher& dispatcher, std::function<bool()> acquire,
                                 std::function<void()> release)
    : dispatcher_(dispatcher), acquire_(std::move(acquire)), release_(std::move(release)) {}

LingeringCloser::~LingeringCloser() {
  for (auto& [fd, socket] : sockets_) {
    socket.reset();
    ::close(fd);
    if (release_) release_();
  }
}

void LingeringCloser::Take(int fd) {
  if (sockets_.size() >= kMaxSockets || (acquire_ && !acquire_())) {
    ::close(fd);
    return;
  }
  auto socket = std::make_unique<Socket>(dispatcher_, fd, *this);
  socket->until = absl::Now() + kTotal;
  socket->readable.SetEnabled(event::FileEvent::kRead);
  socket->timer.Enable(kIdle);
  sockets_.emplace(fd, std::move(socket));
}

void LingeringCloser::OnReadable(int fd) {
  auto it = sockets_.find(fd);
  if (it == sockets_.end()) return;
  Socket& socket = *it->second;
  char discard[16384];
  // A few reads per readiness event, as for any connection: a fast sender
  // is read again on the next (the socket stays readable).
  for (int i = 0; i < 8; ++i) {
    ssize_t n = ::read(fd, discard, sizeof(discard));
    if (n > 0) {
      socket.dropped += static_cast<uint64_t>(n);
      if (socket.dropped >= kMaxBytes) break;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
    Done(fd);  // the peer closed, or the socket failed
    return;
  }
  const absl::Duration left = socket.until - absl::Now();
  if (socket.dropped >= kMaxBytes || left <= absl::ZeroDuration()) {
    Done(fd);
    return;
  }
  // kIdle more from this byte, never past the total.
  socket.timer.Enable(left < kIdle ? left : kIdle);
}

void LingeringCloser::Done(int fd) {
  auto it = sockets_.find(fd);
  if (it == sockets_.end()) return;
  // Its events stop before the descriptor closes (a new socket may get its
  // number); the object goes once the current callback, maybe its own, is
  // over.
  std::unique_ptr<Socket> socket = std::move(it->second);
  sockets_.erase(it);
  socket->readable.SetEnabled(0);
  socket->timer.Disable();
  ::close(fd);
  if (release_) release_();
  dispatcher_.DeferredDelete(std::move(socket));
}

}  // namespace sluice::net
