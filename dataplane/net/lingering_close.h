// Lingering close: a connection closed while its peer may still be sending
// (a request body the gateway answered early: a 413, a policy's 401 or
// 429) must not be closed at once. close() with unread data makes the
// kernel send a reset, and a client still writing its body then fails on
// the write and never reads the response (curl: "Send failure: Broken
// pipe"). RFC 9112 9.6: close in stages. After the response and a FIN
// (shutdown SHUT_WR), the socket stays open here and whatever arrives is
// read and dropped, until the peer closes, kIdle passes without a byte,
// kTotal passes, or kMaxBytes were dropped; then it closes. As nginx's
// lingering_close (lingering_timeout 5 s, lingering_time 30 s).
#ifndef SLUICE_DATAPLANE_NET_LINGERING_CLOSE_H_
#define SLUICE_DATAPLANE_NET_LINGERING_CLOSE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>

#include "absl/time/time.h"
#include "dataplane/event/dispatcher.h"

namespace sluice::net {

class LingeringCloser {
 public:
  static constexpr absl::Duration kIdle = absl::Seconds(5);
  static constexpr absl::Duration kTotal = absl::Seconds(30);
  static constexpr uint64_t kMaxBytes = 64ull << 20;
  // More sockets than this lingering on one worker: the next closes at once
  // (a client cannot hold descriptors this way).
  static constexpr size_t kMaxSockets = 4096;

  // `acquire` takes a place for a socket in the connection budget it
  // shares with open connections (false: none left, the socket closes at
  // once); `release` gives it back when the socket closes.
  explicit LingeringCloser(event::Dispatcher& dispatcher,
                           std::function<bool()> acquire = nullptr,
                           std::function<void()> release = nullptr);
  ~LingeringCloser();  // closes what still lingers
  LingeringCloser(const LingeringCloser&) = delete;
  LingeringCloser& operator=(const LingeringCloser&) = delete;

  // Takes `fd`, already shut down for writing, and closes it when the peer
  // is done (or at once when too many linger, or the budget is spent).
  void Take(int fd);
  size_t size() const { return sockets_.size(); }

 private:
  struct Socket;
  void OnReadable(int fd);
  void Done(int fd);

  event::Dispatcher& dispatcher_;
  const std::function<bool()> acquire_;
  const std::function<void()> release_;
  std::unordered_map<int, std::unique_ptr<Socket>> sockets_;
};

}  // namespace sluice::net

#endif  // SLUICE_DATAPLANE_NET_LINGERING_CLOSE_H_
