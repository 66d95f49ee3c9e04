#include "dataplane/event/dispatcher.h"

#include <errno.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "common/log.h"
#include "dataplane/event/send_ring.h"

namespace sluice::event {
namespace {

timeval DelayToTimeval(absl::Duration d) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  return absl::ToTimeval(d);
}

std::atomic<bool> batch_sends{true};
std::atomic<bool> yield_to_local_peers{true};

// A batch of sends takes one system call per this many.
constexpr unsigned kSendRingEntries = 128;

}  // namespace

void Dispatcher::SetBatchSends(bool enabled) { batch_sends.store(enabled); }

void Dispatcher::SetYieldToLocalPeers(bool enabled) { yield_to_local_peers.store(enabled); }

std::string Dispatcher::BatchSendsUnavailable() {
  std::string why;
  if (SendRing::Create(kSendRingEntries, &why) != nullptr) return "";
  return why;
}

// The simulated clock's timers: ordered by deadline, then by arming order
// (so equal deadlines fire first-armed first), with an index by timer for
// Disable() and re-arming.
struct Dispatcher::SimulatedClock {
  using Key = std::pair<absl::Time, uint64_t>;  // deadline, arming sequence
  std::map<Key, Timer*> queue;
  absl::flat_hash_map<const Timer*, Key> armed;
  uint64_t next_sequence = 0;
  bool advancing = false;  // AdvanceClock() is running
};

Timer::Timer(Dispatcher& dispatcher, std::function<void()> callback)
    : dispatcher_(dispatcher), callback_(std::move(callback)) {}

Timer::~Timer() {
  if (ABSL_PREDICT_FALSE(dispatcher_.simulated_ != nullptr)) dispatcher_.DisarmSimulated(this);
  if (event_ != nullptr) event_free(event_);
}

void Timer::Enable(absl::Duration delay, bool shared_duration) {
  // The one test of the real-time path: a per-request cost, kept to a
  // predictable branch.
  if (ABSL_PREDICT_FALSE(dispatcher_.simulated_ != nullptr)) {
    dispatcher_.ArmSimulated(this, delay);
    return;
  }
  if (ABSL_PREDICT_FALSE(event_ == nullptr)) {
    event_ = evtimer_new(dispatcher_.base(), &Timer::OnFire, this);
    SLUICE_CHECK(event_ != nullptr);
  }
  armed_ = true;
  if (shared_duration) {
    if (const timeval* common = dispatcher_.CommonTimeout(delay)) {
      evtimer_add(event_, common);
      return;
    }
  }
  timeval tv = DelayToTimeval(delay);
  evtimer_add(event_, &tv);
}

void Timer::Disable() {
  if (ABSL_PREDICT_FALSE(dispatcher_.simulated_ != nullptr)) {
    dispatcher_.DisarmSimulated(this);
    return;
  }
  if (!armed_) return;
  armed_ = false;
  evtimer_del(event_);
}

bool Timer::enabled() const {
  if (ABSL_PREDICT_FALSE(dispatcher_.simulated_ != nullptr)) {
    return dispatcher_.ArmedSimulated(this);
  }
  return armed_;
}

void Timer::OnFire(evutil_socket_t, short, void* arg) {
  Timer* timer = static_cast<Timer*>(arg);
  timer->armed_ = false;
  timer->callback_();
}

DeadlineTimer::DeadlineTimer(Dispatcher& dispatcher, std::function<void()> callback)
    : dispatcher_(dispatcher), callback_(std::move(callback)), timer_(dispatcher, [this] {
        OnFire();
      }) {}

void DeadlineTimer::Set(absl::Duration delay, bool shared_duration) {
  if (delay == absl::InfiniteDuration()) {
    Clear();
    return;
  }
  if (delay < absl::ZeroDuration()) delay = absl::ZeroDuration();
  deadline_ = dispatcher_.Now() + delay;
  if (wakes_at_ <= deadline_) return;  // it wakes first, and waits again
  wakes_at_ = deadline_;
  timer_.Enable(delay, shared_duration);
}

void DeadlineTimer::Clear() {
  deadline_ = absl::InfiniteFuture();
  if (ABSL_PREDICT_FALSE(dispatcher_.simulated_clock())) {
    timer_.Disable();
    wakes_at_ = absl::InfiniteFuture();
  }
}

void DeadlineTimer::OnFire() {
  wakes_at_ = absl::InfiniteFuture();
  if (deadline_ == absl::InfiniteFuture()) return;
  // libevent's clock is coarse: it may wake a little before the deadline.
  const absl::Time now = dispatcher_.Now();
  if (now < deadline_) {
    wakes_at_ = deadline_;
    timer_.Enable(deadline_ - now);
    return;
  }
  deadline_ = absl::InfiniteFuture();
  callback_();  // may set a new deadline, or destroy this
}

FileEvent::FileEvent(Dispatcher& dispatcher, int fd, std::function<void(short)> callback)
    : dispatcher_(dispatcher), fd_(fd), callback_(std::move(callback)) {}

FileEvent::~FileEvent() {
  if (event_ != nullptr) event_free(event_);
}

void FileEvent::SetEnabled(short events) {
  if (events == enabled_) return;
  if (event_ == nullptr) {
    event_ = event_new(dispatcher_.base(), fd_, events | EV_PERSIST, &FileEvent::OnReady, this);
    SLUICE_CHECK(event_ != nullptr);
  } else {
    // The one event is reused: deleted and set again, no allocation. With
    // the base's changelist the two make at most one epoll_ctl(2), at the
    // loop's next wait, or none when the events end up as they were.
    if (enabled_ != 0) event_del(event_);
    if (events != 0) {
      event_assign(event_, dispatcher_.base(), fd_, events | EV_PERSIST, &FileEvent::OnReady,
                   this);
    }
  }
  enabled_ = events;
  if (events != 0) event_add(event_, nullptr);
}

void FileEvent::OnReady(evutil_socket_t, short what, void* arg) {
  static_cast<FileEvent*>(arg)->callback_(what & (EV_READ | EV_WRITE));
}

Dispatcher::Dispatcher() : yield_to_local_peers_(yield_to_local_peers.load()) {
  event_config* config = event_config_new();
  // One thread per base: no locking inside libevent.
  event_config_set_flag(config, EVENT_BASE_FLAG_NOLOCK);
  // epoll changes wait for the loop's next epoll_wait(2) and are merged per
  // descriptor there: a connection whose events change several times in one
  // pass (an upstream connect: writable, then a request sent, then reading)
  // makes one epoll_ctl(2), not a delete and an add per change. libevent's
  // one caveat, descriptors cloned by dup(2), does not arise: the data plane
  // dups none, and a descriptor closed and reused in the same pass is
  // handled by libevent (a MOD that finds nothing becomes an ADD).
  event_config_set_flag(config, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  base_ = event_base_new_with_config(config);
  event_config_free(config);
  SLUICE_CHECK(base_ != nullptr);
  // Priority 0: I/O and timers. Priority 1: flushing sends and deferred
  // deletion, which libevent runs only once no priority-0 event is active.
  event_base_priority_init(base_, 2);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  SLUICE_CHECK(wake_fd_ >= 0);
  wake_event_ = event_new(base_, wake_fd_, EV_READ | EV_PERSIST, &Dispatcher::OnWake, this);
  event_add(wake_event_, nullptr);
  deferred_event_ = event_new(
      base_, -1, 0,
      [](evutil_socket_t, short, void* arg) { static_cast<Dispatcher*>(arg)->ClearDeferred(); },
      this);
  event_priority_set(deferred_event_, 1);
  flush_event_ = event_new(
      base_, -1, 0,
      [](evutil_socket_t, short, void* arg) { static_cast<Dispatcher*>(arg)->RunFlushes(); },
      this);
  event_priority_set(flush_event_, 1);
  if (batch_sends.load()) send_ring_ = SendRing::Create(kSendRingEntries);
}

Dispatcher::~Dispatcher() {
  ClearDeferred();
  event_free(flush_event_);
  event_free(deferred_event_);
  event_free(wake_event_);
  close(wake_fd_);
  event_base_free(base_);
}

void Dispatcher::Run() { event_base_loop(base_, 0); }

void Dispatcher::Exit() {
  Post([this] { event_base_loopbreak(base_); });
}

void Dispatcher::Post(std::function<void()> fn) {
  bool first;
  {
    absl::MutexLock lock(&post_mu_);
    first = posted_.empty();
    posted_.push_back(std::move(fn));
  }
  if (first) {
    uint64_t one = 1;
    ssize_t ignored = write(wake_fd_, &one, sizeof(one));
    (void)ignored;
  }
}

void Dispatcher::OnWake(evutil_socket_t fd, short, void* arg) {
  uint64_t value;
  ssize_t ignored = read(fd, &value, sizeof(value));
  (void)ignored;
  static_cast<Dispatcher*>(arg)->RunPosted();
}

void Dispatcher::RunPosted() {
  std::vector<std::function<void()>> batch;
  {
    absl::MutexLock lock(&post_mu_);
    batch.swap(posted_);
  }
  for (auto& fn : batch) fn();
}

const timeval* Dispatcher::CommonTimeout(absl::Duration delay) {
  int64_t micros = absl::ToInt64Microseconds(delay);
  if (micros <= 0) return nullptr;
  auto it = common_timeouts_.find(micros);
  if (it != common_timeouts_.end()) return it->second;
  if (common_timeouts_.size() >= 64) return nullptr;  // libevent allows 256
  timeval tv = DelayToTimeval(delay);
  const timeval* common = event_base_init_common_timeout(base_, &tv);
  common_timeouts_[micros] = common;
  return common;
}

void Dispatcher::ActivateEndOfPass() {
  // Running, RunFlushes takes what is queued in its loop. Reads and sends
  // share the event: one pass's reads, then its sends.
  if (!running_flushes_ && to_flush_.empty() && to_read_.empty()) {
    event_active(flush_event_, 0, 0);
  }
}

namespace {

// Forgets `target` in a queue and in the batch being run from it: a
// target's callbacks may delete another target of the batch.
template <typename T>
void Forget(std::vector<T*>& queued, std::vector<T*>& running, const T* target) {
  for (std::vector<T*>* list : {&queued, &running}) {
    for (auto& t : *list) {
      if (t == target) t = nullptr;
    }
  }
}

}  // namespace

void Dispatcher::ScheduleFlush(Flushable* target) {
  ActivateEndOfPass();
  to_flush_.push_back(target);
}

void Dispatcher::CancelFlush(Flushable* target) { Forget(to_flush_, flushing_, target); }

void Dispatcher::ScheduleRead(RecvTarget* target) {
  ActivateEndOfPass();
  to_read_.push_back(target);
}

void Dispatcher::CancelRead(RecvTarget* target) { Forget(to_read_, reading_, target); }

void Dispatcher::RunReads() {
  reading_.swap(to_read_);
  if (send_ring_ != nullptr) {
    auto record = [this](uint64_t tag, int result) {
      reading_[tag]->RecvMade(result);
      ++batched_recvs_;
    };
    bool refused = false;
    auto submit = [&] {
      if (send_ring_->queued() == 0) return;
      if (send_ring_->Submit(record)) {
        ++recv_batches_;
      } else {
        refused = true;
      }
    };
    int fd;
    char* data;
    size_t size;
    for (size_t i = 0; i < reading_.size() && !refused; ++i) {
      if (reading_[i] == nullptr || !reading_[i]->PendingRecv(&fd, &data, &size)) continue;
      if (!send_ring_->QueueRecv(fd, data, size, i)) {
        submit();  // the batch is full
        if (!refused) send_ring_->QueueRecv(fd, data, size, i);
      }
    }
    if (!refused) submit();
    if (refused) {
      // The kernel took no batch (it should never): a target with no result
      // reads by itself, and so does everything from now on.
      SLUICE_LOG(kWarning, "io_uring refused a batch of reads: reading one by one from now on");
      send_ring_.reset();
    }
  }
  // Targets run in the order their sockets were found readable; a target's
  // callbacks may cancel (destroy) a later one.
  for (size_t i = 0; i < reading_.size(); ++i) {
    if (RecvTarget* t = reading_[i]) t->ReadAfterRecv();
  }
  reading_.clear();
}

void Dispatcher::RunFlushes() {
  // Reads first, so the sends they cause go with this pass's batch.
  // Flushing may schedule more (a flush that completes a close): loop.
  running_flushes_ = true;
  while (!to_read_.empty() || !to_flush_.empty()) {
    if (!to_read_.empty()) RunReads();
    if (to_flush_.empty()) continue;
    flushing_.swap(to_flush_);
    const bool batched = send_ring_ != nullptr;
    if (batched) SendBatch();
    for (size_t i = 0; i < flushing_.size(); ++i) {
      if (Flushable* t = flushing_[i]) {
        flushing_now_ = t;
        if (batched && sent_[i]) {
          t->FlushAfterSend();
        } else {
          t->Flush();
        }
        flushing_now_ = nullptr;
      }
    }
    flushing_.clear();
  }
  running_flushes_ = false;
  if (local_send_) {
    local_send_ = false;
    if (yield_to_local_peers_) {
      sched_yield();
      ++yields_;
    }
  }
}

void Dispatcher::SendBatch() {
  sent_.assign(flushing_.size(), false);
  auto record = [this](uint64_t tag, int result) {
    sent_[tag] = true;
    flushing_[tag]->SendMade(result);
    ++batched_sends_;
  };
  auto submit = [&] {
    if (send_ring_->queued() == 0) return true;
    if (!send_ring_->Submit(record)) return false;
    ++send_batches_;
    return true;
  };
  int fd;
  std::string_view bytes;
  bool refused = false;
  for (size_t i = 0; i < flushing_.size() && !refused; ++i) {
    if (flushing_[i] == nullptr || !flushing_[i]->PendingSend(&fd, &bytes)) continue;
    if (!send_ring_->Queue(fd, bytes.data(), bytes.size(), i)) {
      refused = !submit();  // the batch is full
      if (!refused) send_ring_->Queue(fd, bytes.data(), bytes.size(), i);
    }
  }
  if (!refused) refused = !submit();
  if (refused) {
    // The kernel took no batch (it should never): what has no result is
    // sent one by one, and so is everything from now on.
    SLUICE_LOG(kWarning, "io_uring refused a batch of sends: sending one by one from now on");
    send_ring_.reset();
  }
}

void Dispatcher::DeferredDelete(std::unique_ptr<DeferredDeletable> object) {
  if (deferred_.empty()) event_active(deferred_event_, 0, 0);
  deferred_.push_back(std::move(object));
}

void Dispatcher::ClearDeferred() {
  while (!deferred_.empty()) {
    std::vector<std::unique_ptr<DeferredDeletable>> batch;
    batch.swap(deferred_);
    batch.clear();  // destructors may defer more
  }
}

void Dispatcher::UseSimulatedClock(absl::Time start) {
  SLUICE_CHECK(simulated_ == nullptr);  // once
  // Only the wake event may be added: a timer armed before this call sits
  // in libevent's real-time queue, and would fire in real time.
  SLUICE_CHECK(event_base_get_num_events(base_, EVENT_BASE_COUNT_ADDED) == 1);
  simulated_ = std::make_unique<SimulatedClock>();
  simulated_now_ = start;
}

void Dispatcher::ArmSimulated(Timer* timer, absl::Duration delay) {
  DisarmSimulated(timer);
  if (delay < absl::ZeroDuration()) delay = absl::ZeroDuration();
  SimulatedClock::Key key{simulated_now_ + delay, simulated_->next_sequence++};
  simulated_->queue.emplace(key, timer);
  simulated_->armed.emplace(timer, key);
}

void Dispatcher::DisarmSimulated(Timer* timer) {
  auto it = simulated_->armed.find(timer);
  if (it == simulated_->armed.end()) return;
  simulated_->queue.erase(it->second);
  simulated_->armed.erase(it);
}

size_t Dispatcher::simulated_timers_armed() const {
  SLUICE_CHECK(simulated_ != nullptr);
  return simulated_->queue.size();
}

bool Dispatcher::ArmedSimulated(const Timer* timer) const {
  return simulated_->armed.contains(timer);
}

void Dispatcher::AdvanceClock(absl::Duration delay) {
  SLUICE_CHECK(simulated_ != nullptr);
  SLUICE_CHECK(delay >= absl::ZeroDuration());
  SLUICE_CHECK(!simulated_->advancing);  // not from a timer's callback
  simulated_->advancing = true;
  const absl::Time target = simulated_now_ + delay;
  std::map<SimulatedClock::Key, Timer*>& queue = simulated_->queue;
  while (!queue.empty() && queue.begin()->first.first <= target) {
    // Every timer due at this deadline, including those its callbacks arm
    // for it (a zero delay), then what the loop iteration would run after.
    simulated_now_ = std::max(simulated_now_, queue.begin()->first.first);
    while (!queue.empty() && queue.begin()->first.first <= simulated_now_) {
      Timer* timer = queue.begin()->second;
      simulated_->armed.erase(timer);
      queue.erase(queue.begin());
      timer->callback_();  // may arm, disarm or destroy any timer
    }
    RunReadyWork();
  }
  simulated_now_ = target;
  RunReadyWork();
  simulated_->advancing = false;
}

void Dispatcher::RunReadyWork() {
  // -1: called from inside the loop (libevent refuses a nested loop).
  SLUICE_CHECK(event_base_loop(base_, EVLOOP_NONBLOCK) != -1);
}

}  // namespace sluice::event
