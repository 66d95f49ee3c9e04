// Dispatcher: one libevent event_base and the thread that runs it.
//
// Every worker and the main thread own one. All methods except Post() and
// Exit() must be called on the dispatcher's own thread. Objects that are
// destroyed from inside their own callbacks go through DeferredDelete(): they
// are freed after the current callback returns, never under it.
#ifndef SLUICE_DATAPLANE_EVENT_DISPATCHER_H_
#define SLUICE_DATAPLANE_EVENT_DISPATCHER_H_

#include <event2/event.h>

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace sluice::event {

class Dispatcher;

// Something the dispatcher may free later.
class DeferredDeletable {
 public:
  virtual ~DeferredDeletable() = default;
};

// A one-shot timer on a dispatcher. Not thread-safe: owner's thread only.
class Timer {
 public:
  Timer(Dispatcher& dispatcher, std::function<void()> callback);

  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  // (Re)arms the timer to fire once after `delay`. `shared_duration`: many
  // timers use this same delay (idle and route timeouts), so libevent keeps
  // them in a FIFO queue instead of its heap (O(1) instead of O(log n)).
  void Enable(absl::Duration delay, bool shared_duration = false);
  void Disable();
  bool enabled() const;

 private:
  static void OnFire(evutil_socket_t, short, void* arg);
  Dispatcher& dispatcher_;
  ::event* event_;
  std::function<void()> callback_;
};

// Read/write readiness on a file descriptor. Not thread-safe.
class FileEvent {
 public:
  enum : short { kRead = EV_READ, kWrite = EV_WRITE };
  // `callback` gets the ready events (kRead | kWrite).
  FileEvent(Dispatcher& dispatcher, int fd, std::function<void(short)> callback);
  ~FileEvent();
  FileEvent(const FileEvent&) = delete;
  FileEvent& operator=(const FileEvent&) = delete;
  // Sets which events to wait for (0: none). Persistent until changed.
  void SetEnabled(short events);
  short enabled() const { return enabled_; }

 private:
  static void OnReady(evutil_socket_t, short what, void* arg);
  Dispatcher& dispatcher_;
  int fd_;
  ::event* event_ = nullptr;
  short enabled_ = 0;
  std::function<void(short)> callback_;
};

// Something with output to send at the end of the loop iteration.
class Flushable {
 public:
  virtual ~Flushable() = default;
  virtual void Flush() = 0;
};

class Dispatcher {
 public:
  Dispatcher();
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  event_base* base() { return base_; }

  // Runs the loop on the calling thread until Exit().
  void Run();
  // Thread-safe: makes Run() return after the current callback.
  void Exit();
  // Thread-safe: runs `fn` on the dispatcher's thread, in posting order.
  void Post(std::function<void()> fn);

  void DeferredDelete(std::unique_ptr<DeferredDeletable> object);
  // libevent's "common timeout" for `delay`, or nullptr when too many
  // distinct ones exist already.
  const timeval* CommonTimeout(absl::Duration delay);

  // Sends are gathered and made after the I/O events of a loop iteration
  // (as HAProxy does), so a burst of events wakes each peer once, not in the
  // middle of the burst. ScheduleFlush() queues `target` (once);
  // CancelFlush() must be called before a queued target is destroyed.
  void ScheduleFlush(Flushable* target);
  void CancelFlush(Flushable* target);
  // Frees what DeferredDelete() queued, now (at shutdown, outside callbacks).
  void RunDeferredDeletes() { ClearDeferred(); }

 private:
  static void OnWake(evutil_socket_t fd, short, void* arg);
  void RunPosted();
  void ClearDeferred();
  void RunFlushes();

  event_base* base_;
  int wake_fd_;
  ::event* wake_event_;
  ::event* deferred_event_;
  ::event* flush_event_;
  std::vector<Flushable*> to_flush_;
  std::map<int64_t, const timeval*> common_timeouts_;  // by microseconds
  std::vector<std::unique_ptr<DeferredDeletable>> deferred_;

  absl::Mutex post_mu_;
  std::vector<std::function<void()>> posted_ ABSL_GUARDED_BY(post_mu_);
};

}  // namespace sluice::event

#endif  // SLUICE_DATAPLANE_EVENT_DISPATCHER_H_
