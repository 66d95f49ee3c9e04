// Dispatcher: one libevent event_base and the thread that runs it.
//
// Every worker and the main thread own one. All methods except Post() and
// Exit() must be called on the dispatcher's own thread. Objects that are
// destroyed from inside their own callbacks go through DeferredDelete(): they
// are freed after the current callback returns, never under it.
//
// Time is real (libevent's monotonic clock) unless UseSimulatedClock() was
// called: then timers wait on a simulated clock that only AdvanceClock()
// moves, so a unit test drives timeouts without sleeping.
#ifndef SLUICE_DATAPLANE_EVENT_DISPATCHER_H_
#define SLUICE_DATAPLANE_EVENT_DISPATCHER_H_

#include <event2/event.h>

#include <time.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sluice::event {

class Dispatcher;

// Something the dispatcher may free later.
class DeferredDeletable {
 public:
  virtual ~DeferredDeletable() = default;
};

// A one-shot timer on a dispatcher. Not thread-safe: owner's thread only.
// On a dispatcher with a simulated clock it waits in the dispatcher's own
// queue instead of libevent's, and fires from AdvanceClock().
class Timer {
 public:
  Timer(Dispatcher& dispatcher, std::function<void()> callback);

  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  // (Re)arms the timer to fire once after `delay`. `shared_duration`: many
  // timers use this same delay (idle and route timeouts), so libevent keeps
  // them in a FIFO queue instead of its heap (O(1) instead of O(log n)).
  // A negative delay counts as zero.
  void Enable(absl::Duration delay, bool shared_duration = false);
  // Disarms; costs a test when the timer is not armed.
  void Disable();
  bool enabled() const;

 private:
  friend class Dispatcher;  // fires simulated timers
  static void OnFire(evutil_socket_t, short, void* arg);
  Dispatcher& dispatcher_;
  // Made at the first Enable: a timer that is never armed (an idle
  // connection's resume timer) costs no libevent event (128 bytes).
  ::event* event_ = nullptr;
  std::function<void()> callback_;
  bool armed_ = false;  // real time: whether event_ is pending
};

// A deadline that is set and cleared far more often than it is reached: a
// request's route and idle timeouts, a connection's idle timeout. The
// underlying Timer is moved only to an earlier time. Setting a later
// deadline than the one it waits for, or clearing the deadline, touches no
// libevent structure; when the timer fires it compares the deadline with
// the clock and waits again for what is left, or does nothing if the
// deadline was cleared. A request on a reused stream or connection thus
// costs one clock read instead of an event_add and an event_del, and a
// stream whose deadline went with its request wakes once, for nothing.
// The callback runs once per deadline reached, never before it.
// On a simulated clock Clear() disarms at once, so a test's count of armed
// timers sees only deadlines that are set.
class DeadlineTimer {
 public:
  DeadlineTimer(Dispatcher& dispatcher, std::function<void()> callback);
  DeadlineTimer(const DeadlineTimer&) = delete;
  DeadlineTimer& operator=(const DeadlineTimer&) = delete;
  // The deadline becomes `delay` from now (a negative delay counts as
  // zero; an infinite one clears), replacing the one set before.
  // `shared_duration` as for Timer::Enable.
  void Set(absl::Duration delay, bool shared_duration = false);
  void Clear();
  bool set() const { return deadline_ != absl::InfiniteFuture(); }

 private:
  void OnFire();
  Dispatcher& dispatcher_;
  std::function<void()> callback_;
  absl::Time deadline_ = absl::InfiniteFuture();
  // When timer_ fires; InfiniteFuture while it is not armed.
  absl::Time wakes_at_ = absl::InfiniteFuture();
  Timer timer_;
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
  // Sets which events to wait for (0: none). Persistent until changed. The
  // kernel is told at the loop's next wait, once for all of a pass's changes.
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
  // For a dispatcher that batches sends (a SendRing): the one send(2) that
  // Flush() would make first, as the socket and the bytes (a TLS
  // connection's records, encrypted now); false when there is none. The
  // bytes stay put until SendMade().
  virtual bool PendingSend(int* /*fd*/, std::string_view* /*bytes*/) { return false; }
  // That send was made and gave `result` (the bytes sent, or -errno). Called
  // for every send of the batch before any callback of the pass runs (so
  // nothing can send those bytes twice); runs no callback itself.
  virtual void SendMade(int /*result*/) {}
  // Flush(), after SendMade(): goes on from what the send gave.
  virtual void FlushAfterSend() { Flush(); }
};

// A socket the loop's wait found readable, for a dispatcher that batches
// its reads: read with the pass's other readable sockets in one system call
// (a SendRing), once the pass's readiness callbacks have run.
class RecvTarget {
 public:
  virtual ~RecvTarget() = default;
  // The one recv(2) to make now: the socket, and where to put at most
  // `*size` bytes (which stay put until RecvMade()); false: none (reading
  // was stopped meanwhile).
  virtual bool PendingRecv(int* fd, char** data, size_t* size) = 0;
  // That read was made and gave `result` (bytes read, 0 at the end of the
  // stream, or -errno). Called for every read of the batch before any
  // callback of the pass runs; runs no callback itself.
  virtual void RecvMade(int result) = 0;
  // Goes on from what the read gave (hands the bytes on, reads more), or
  // reads itself if the batch made no read for it.
  virtual void ReadAfterRecv() = 0;
};

class SendRing;

class Dispatcher {
 public:
  // Whether dispatchers made from now on batch the sends of a loop
  // iteration into one io_uring_enter(2) (see send_ring.h), when the kernel
  // allows it. On by default; the proxy's --io-uring off turns it off.
  static void SetBatchSends(bool enabled);
  // Whether the kernel allows it: empty when so, else why not (logged once
  // by the proxy at start).
  static std::string BatchSendsUnavailable();
  // Whether dispatchers made from now on give up the CPU once
  // (sched_yield(2)) at the end of a loop pass that sent to a peer on this
  // host (NoteLocalSend). The process those bytes woke (a client, an
  // upstream on the same machine) is then runnable; when it waits for this
  // CPU, it runs before the loop's next wait, which then finds its answer
  // instead of sleeping and being woken for it (both cost a context switch).
  // When nothing else waits for the CPU, the call returns at once. On by
  // default; the proxy's --yield-to-local-peers off turns it off (it trades
  // some tail latency for CPU: docs/architecture.md).
  static void SetYieldToLocalPeers(bool enabled);

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
  // Whether this dispatcher batches its sends; how many sends it has made
  // through its ring, in how many system calls.
  bool batches_sends() const { return send_ring_ != nullptr; }
  uint64_t batched_sends() const { return batched_sends_; }
  uint64_t send_batches() const { return send_batches_; }
  // Reads, batched the same way (with the same ring): a socket found
  // readable is not read in its readiness callback but queued here, and the
  // pass's queued reads are made together once its readiness callbacks have
  // run, before its sends (so the sends the reads cause go in the same
  // batch). CancelRead() must be called before a queued target is
  // destroyed.
  bool batches_reads() const { return send_ring_ != nullptr; }
  void ScheduleRead(RecvTarget* target);
  void CancelRead(RecvTarget* target);
  uint64_t batched_recvs() const { return batched_recvs_; }
  uint64_t recv_batches() const { return recv_batches_; }
  // A send to a peer on this host is made (or queued) in this pass (see
  // SetYieldToLocalPeers); how many times the loop has yielded for that.
  void NoteLocalSend() { local_send_ = true; }
  uint64_t yields() const { return yields_; }
  // Frees what DeferredDelete() queued, now (at shutdown, outside callbacks).
  void RunDeferredDeletes() { ClearDeferred(); }

  // Simulated time, for unit tests. From this call on, timers wait on a
  // clock that starts at `start` and moves only through AdvanceClock(); the
  // loop (Run) still serves file events and posted work, but never fires
  // a timer. Must be called once, before any timer or file event of this
  // dispatcher is armed (aborts otherwise: such a timer would still run in
  // real time). There is no way back to real time.
  void UseSimulatedClock(absl::Time start = absl::FromUnixSeconds(1'000'000'000));
  bool simulated_clock() const { return simulated_ != nullptr; }
  // The time deadlines are computed against: the simulated clock, or the
  // monotonic clock (CLOCK_MONOTONIC, as libevent's timers; an absl::Time
  // counted from boot, so only differences mean anything, and a step of the
  // wall clock moves no deadline). Measurements (latency histograms,
  // access-log times) read absl::Now().
  absl::Time Now() const {
    if (ABSL_PREDICT_FALSE(simulated_ != nullptr)) return simulated_now_;
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return absl::TimeFromTimespec(ts);
  }
  // Simulated clock only; not from inside a callback of this dispatcher
  // (aborts). Moves the clock forward by `delay` (>= 0): every timer whose
  // deadline is reached fires, in deadline order (equal deadlines in the
  // order they were armed), with Now() at its deadline; a timer that a
  // callback arms with a deadline within the advance fires in the same call.
  // After the timers of each deadline, and once at the end, the work a loop
  // iteration would do runs: posted functions, flushes, deferred deletes
  // (and any ready file event). AdvanceClock(absl::ZeroDuration()) runs just
  // that, plus timers armed with a zero delay.
  void AdvanceClock(absl::Duration delay);
  // Simulated clock only: how many timers are armed (a test's check that
  // an exchange left none behind).
  size_t simulated_timers_armed() const;

 private:
  friend class Timer;
  struct SimulatedClock;  // the simulated timers' queue (dispatcher.cc)
  void ArmSimulated(Timer* timer, absl::Duration delay);
  void DisarmSimulated(Timer* timer);
  bool ArmedSimulated(const Timer* timer) const;
  // One non-blocking pass of the libevent loop (until nothing is active).
  void RunReadyWork();

  static void OnWake(evutil_socket_t fd, short, void* arg);
  void RunPosted();
  void ClearDeferred();
  void RunFlushes();
  // Makes the batch's plain sends through send_ring_ and hands each result
  // to its target (SendMade); sent_[i]: target i had one.
  void SendBatch();
  // Makes the queued reads (one system call) and lets each target go on.
  void RunReads();
  // Before something is queued for the end of the pass: makes sure the
  // pass's end (RunFlushes) will come.
  void ActivateEndOfPass();

  event_base* base_;
  int wake_fd_;
  ::event* wake_event_;
  ::event* deferred_event_;
  ::event* flush_event_;
  std::vector<Flushable*> to_flush_;
  std::vector<Flushable*> flushing_;  // the batch RunFlushes is running
  Flushable* flushing_now_ = nullptr;  // the target whose Flush() it is in
  std::unique_ptr<SendRing> send_ring_;  // null: sends are made one by one
  std::vector<bool> sent_;  // by index in flushing_
  uint64_t batched_sends_ = 0;
  uint64_t send_batches_ = 0;
  bool running_flushes_ = false;  // RunFlushes is in its loop
  const bool yield_to_local_peers_;  // SetYieldToLocalPeers when made
  bool local_send_ = false;  // NoteLocalSend() since the last yield
  uint64_t yields_ = 0;
  std::vector<RecvTarget*> to_read_;
  std::vector<RecvTarget*> reading_;  // the batch RunReads is running
  uint64_t batched_recvs_ = 0;
  uint64_t recv_batches_ = 0;
 public:
  // Whether RunFlushes is calling `target`'s Flush() now (its queued call is
  // the one running: nothing to cancel).
  bool FlushingNow(const Flushable* target) const { return flushing_now_ == target; }
 private:
  std::map<int64_t, const timeval*> common_timeouts_;  // by microseconds
  std::vector<std::unique_ptr<DeferredDeletable>> deferred_;

  absl::Mutex post_mu_;
  std::vector<std::function<void()>> posted_ ABSL_GUARDED_BY(post_mu_);

  // Null in real time: Timer tests it once per call.
  std::unique_ptr<SimulatedClock> simulated_;
  absl::Time simulated_now_;
};

}  // namespace sluice::event

#endif  // SLUICE_DATAPLANE_EVENT_DISPATCHER_H_
