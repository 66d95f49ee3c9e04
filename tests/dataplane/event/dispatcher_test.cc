// The dispatcher's simulated clock (timers in deadline order, only when due,
// with the loop's own work after them) and its real-time timers, which the
// simulated mode must leave as they were.
#include "dataplane/event/dispatcher.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace sluice::event {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1'000'000'000);

class SimulatedClockTest : public ::testing::Test {
 protected:
  SimulatedClockTest() { dispatcher_.UseSimulatedClock(kStart); }

  // A timer that records its name and the clock's time when it fires.
  std::unique_ptr<Timer> Recording(const std::string& name) {
    return std::make_unique<Timer>(dispatcher_, [this, name] {
      fired_.push_back(
          absl::StrCat(name, "@", absl::ToInt64Microseconds(dispatcher_.Now() - kStart)));
    });
  }

  Dispatcher dispatcher_;
  std::vector<std::string> fired_;
};

TEST_F(SimulatedClockTest, TimersFireInDeadlineOrderOnlyOnceDue) {
  auto a = Recording("a");
  auto b = Recording("b");
  auto c = Recording("c");
  auto d = Recording("d");
  a->Enable(absl::Milliseconds(30));
  b->Enable(absl::Milliseconds(10), /*shared_duration=*/true);
  c->Enable(absl::Milliseconds(10));  // same deadline, armed after b
  d->Enable(absl::Milliseconds(20));
  EXPECT_EQ(dispatcher_.Now(), kStart);
  EXPECT_TRUE(b->enabled());

  dispatcher_.AdvanceClock(absl::Milliseconds(10) - absl::Microseconds(1));
  EXPECT_TRUE(fired_.empty());
  EXPECT_EQ(dispatcher_.Now(), kStart + absl::Microseconds(9999));

  dispatcher_.AdvanceClock(absl::Microseconds(1));
  EXPECT_EQ(fired_, (std::vector<std::string>{"b@10000", "c@10000"}));
  EXPECT_FALSE(b->enabled());  // one-shot

  dispatcher_.AdvanceClock(absl::Seconds(1));  // both left, each at its deadline
  EXPECT_EQ(fired_, (std::vector<std::string>{"b@10000", "c@10000", "d@20000", "a@30000"}));
  EXPECT_EQ(dispatcher_.Now(), kStart + absl::Milliseconds(1010));
}

TEST_F(SimulatedClockTest, ACallbackArmsTimersThatFireInTheSameAdvanceWhenDue) {
  auto later = Recording("later");
  auto soon = Recording("soon");
  auto now = Recording("now");
  Timer first(dispatcher_, [&] {
    fired_.push_back("first");
    now->Enable(absl::ZeroDuration());
    soon->Enable(absl::Milliseconds(5));    // due at 15 ms: within the advance
    later->Enable(absl::Milliseconds(50));  // due at 60 ms: not
  });
  first.Enable(absl::Milliseconds(10));
  dispatcher_.AdvanceClock(absl::Milliseconds(20));
  EXPECT_EQ(fired_, (std::vector<std::string>{"first", "now@10000", "soon@15000"}));
  EXPECT_TRUE(later->enabled());
  dispatcher_.AdvanceClock(absl::Milliseconds(40) - absl::Microseconds(1));
  EXPECT_EQ(fired_.size(), 3u);
  dispatcher_.AdvanceClock(absl::Microseconds(1));
  EXPECT_EQ(fired_.back(), "later@60000");
}

TEST_F(SimulatedClockTest, DisablingReArmingAndDestroyingTakeTimersOut) {
  auto disabled = Recording("disabled");
  auto rearmed = Recording("rearmed");
  auto destroyed = Recording("destroyed");
  disabled->Enable(absl::Milliseconds(10));
  rearmed->Enable(absl::Milliseconds(10));
  destroyed->Enable(absl::Milliseconds(10));
  dispatcher_.AdvanceClock(absl::Milliseconds(5));
  disabled->Disable();
  EXPECT_FALSE(disabled->enabled());
  rearmed->Enable(absl::Milliseconds(10));  // from now: due at 15 ms
  destroyed.reset();
  dispatcher_.AdvanceClock(absl::Milliseconds(10) - absl::Microseconds(1));
  EXPECT_TRUE(fired_.empty());
  dispatcher_.AdvanceClock(absl::Microseconds(1));
  EXPECT_EQ(fired_, (std::vector<std::string>{"rearmed@15000"}));
}

TEST_F(SimulatedClockTest, AFiringTimerMayDisableOrDestroyOneDueWithIt) {
  auto victim = Recording("victim");
  Timer killer(dispatcher_, [&] {
    fired_.push_back("killer");
    victim.reset();
  });
  killer.Enable(absl::Milliseconds(1));
  victim->Enable(absl::Milliseconds(1));  // same deadline, after killer
  dispatcher_.AdvanceClock(absl::Milliseconds(1));
  EXPECT_EQ(fired_, (std::vector<std::string>{"killer"}));
}

class Flagged : public DeferredDeletable {
 public:
  explicit Flagged(bool* deleted) : deleted_(deleted) {}
  ~Flagged() override { *deleted_ = true; }

 private:
  bool* deleted_;
};

class CountingFlush : public Flushable {
 public:
  void Flush() override { ++flushes; }
  int flushes = 0;
};

// A flush target cancelled while the batch it is in runs (an earlier
// target's flush ended it) is not flushed: it ran on a deleted upstream
// connection (a use-after-free ASan found, a proxy crash about once in ten
// runs of grpc_test's MaxConcurrentStreamsOpensMoreConnections).
TEST_F(SimulatedClockTest, AFlushCancelledDuringItsBatchDoesNotRun) {
  CountingFlush second;
  struct Canceller : Flushable {
    Dispatcher* dispatcher = nullptr;
    Flushable* other = nullptr;
    void Flush() override { dispatcher->CancelFlush(other); }
  } first;
  first.dispatcher = &dispatcher_;
  first.other = &second;
  Timer at10(dispatcher_, [&] {
    dispatcher_.ScheduleFlush(&first);
    dispatcher_.ScheduleFlush(&second);
  });
  at10.Enable(absl::Milliseconds(10));
  dispatcher_.AdvanceClock(absl::Milliseconds(20));
  EXPECT_EQ(second.flushes, 0);
}

TEST_F(SimulatedClockTest, TheLoopsWorkRunsAfterTheTimersOfEachDeadline) {
  CountingFlush flush;
  bool deleted = false;
  int flushes_seen_at_20ms = -1;
  bool deleted_seen_at_20ms = false;
  Timer at10(dispatcher_, [&] {
    dispatcher_.ScheduleFlush(&flush);
    dispatcher_.DeferredDelete(std::make_unique<Flagged>(&deleted));
    EXPECT_FALSE(deleted);  // never under the callback
  });
  Timer at20(dispatcher_, [&] {
    flushes_seen_at_20ms = flush.flushes;
    deleted_seen_at_20ms = deleted;
  });
  at10.Enable(absl::Milliseconds(10));
  at20.Enable(absl::Milliseconds(20));
  dispatcher_.AdvanceClock(absl::Milliseconds(30));
  EXPECT_EQ(flushes_seen_at_20ms, 1);
  EXPECT_TRUE(deleted_seen_at_20ms);

  // Posted work runs in an advance, even one of zero.
  bool posted = false;
  dispatcher_.Post([&] { posted = true; });
  EXPECT_FALSE(posted);
  dispatcher_.AdvanceClock(absl::ZeroDuration());
  EXPECT_TRUE(posted);
  EXPECT_EQ(dispatcher_.Now(), kStart + absl::Milliseconds(30));
}

TEST(SimulatedClockDeathTest, SwitchingAfterATimerWasArmedAborts) {
  EXPECT_DEATH(
      {
        Dispatcher dispatcher;
        Timer timer(dispatcher, [] {});
        timer.Enable(absl::Seconds(1));
        dispatcher.UseSimulatedClock();
      },
      "check failed");
}

TEST(SimulatedClockDeathTest, AdvancingFromATimersCallbackAborts) {
  EXPECT_DEATH(
      {
        Dispatcher dispatcher;
        dispatcher.UseSimulatedClock();
        Timer timer(dispatcher, [&] { dispatcher.AdvanceClock(absl::Seconds(1)); });
        timer.Enable(absl::Seconds(1));
        dispatcher.AdvanceClock(absl::Seconds(1));
      },
      "check failed");
}

// The real-time path, unchanged: timers (shared durations included) fire
// from Run() after their delay, and Now() is the real time.
TEST(RealTimeTimerTest, TimersFireFromTheLoopAfterTheirDelay) {
  Dispatcher dispatcher;
  EXPECT_FALSE(dispatcher.simulated_clock());
  std::vector<std::string> fired;
  Timer shared(dispatcher, [&] { fired.push_back("shared"); });
  Timer disabled(dispatcher, [&] { fired.push_back("disabled"); });
  Timer last(dispatcher, [&] {
    fired.push_back("last");
    dispatcher.Exit();
  });
  const absl::Time start = dispatcher.Now();
  const absl::Time wall_start = absl::Now();
  shared.Enable(absl::Milliseconds(5), /*shared_duration=*/true);
  disabled.Enable(absl::Milliseconds(10));
  last.Enable(absl::Milliseconds(20));
  EXPECT_TRUE(disabled.enabled());
  disabled.Disable();
  EXPECT_FALSE(disabled.enabled());
  disabled.Disable();  // twice: a no-op
  dispatcher.Run();
  EXPECT_FALSE(last.enabled());  // fired: one-shot
  // libevent reads a coarse monotonic clock (a few ms of resolution): a
  // timer may fire that much before Now() says its delay is over. Now() is
  // monotonic: it moves as the wall clock does, from another origin.
  const absl::Duration elapsed = dispatcher.Now() - start;
  EXPECT_GE(elapsed, absl::Milliseconds(10));
  EXPECT_LT(absl::AbsDuration((absl::Now() - wall_start) - elapsed), absl::Seconds(1));
  EXPECT_EQ(fired, (std::vector<std::string>{"shared", "last"}));
}

// A deadline moved later or cleared leaves the underlying timer where it
// was: it wakes then, waits again for what is left, or does nothing.
TEST_F(SimulatedClockTest, ADeadlineRunsItsCallbackOnceAtTheLastDeadlineSet) {
  int runs = 0;
  absl::Duration ran_at;
  DeadlineTimer deadline(dispatcher_, [&] {
    ++runs;
    ran_at = dispatcher_.Now() - kStart;
  });
  EXPECT_FALSE(deadline.set());
  deadline.Set(absl::Milliseconds(10), /*shared_duration=*/true);
  EXPECT_TRUE(deadline.set());
  dispatcher_.AdvanceClock(absl::Milliseconds(5));
  deadline.Set(absl::Milliseconds(30));  // later: due at 35 ms
  EXPECT_EQ(dispatcher_.simulated_timers_armed(), 1u);
  dispatcher_.AdvanceClock(absl::Milliseconds(30) - absl::Microseconds(1));
  EXPECT_EQ(runs, 0);  // woke at 10 ms for nothing, and waited again
  EXPECT_EQ(dispatcher_.simulated_timers_armed(), 1u);
  dispatcher_.AdvanceClock(absl::Microseconds(1));
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(ran_at, absl::Milliseconds(35));
  EXPECT_FALSE(deadline.set());
  EXPECT_EQ(dispatcher_.simulated_timers_armed(), 0u);

  // Earlier than the one waited for: the timer moves.
  deadline.Set(absl::Milliseconds(50));
  deadline.Set(absl::Milliseconds(20));
  dispatcher_.AdvanceClock(absl::Milliseconds(20));
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(ran_at, absl::Milliseconds(55));

  // Cleared: nothing runs, and nothing stays armed.
  deadline.Set(absl::Milliseconds(10));
  deadline.Clear();
  EXPECT_FALSE(deadline.set());
  EXPECT_EQ(dispatcher_.simulated_timers_armed(), 0u);
  dispatcher_.AdvanceClock(absl::Seconds(1));
  EXPECT_EQ(runs, 2);

  // Negative counts as zero; infinite clears.
  deadline.Set(-absl::Seconds(1));
  dispatcher_.AdvanceClock(absl::ZeroDuration());
  EXPECT_EQ(runs, 3);
  deadline.Set(absl::InfiniteDuration());
  EXPECT_FALSE(deadline.set());
}

TEST_F(SimulatedClockTest, ADeadlinesCallbackMaySetItAgain) {
  std::vector<int64_t> ran_at_ms;
  std::unique_ptr<DeadlineTimer> deadline;
  deadline = std::make_unique<DeadlineTimer>(dispatcher_, [&] {
    ran_at_ms.push_back(absl::ToInt64Milliseconds(dispatcher_.Now() - kStart));
    if (ran_at_ms.size() < 3) deadline->Set(absl::Milliseconds(10));
  });
  deadline->Set(absl::Milliseconds(10));
  dispatcher_.AdvanceClock(absl::Seconds(1));
  EXPECT_EQ(ran_at_ms, (std::vector<int64_t>{10, 20, 30}));
}

// On the real clock, Clear() is lazy too: the cleared deadline's timer
// still wakes, and must run nothing; a deadline moved later runs at the
// later time, never before it.
TEST(RealTimeTimerTest, ADeadlineMovedLaterOrClearedWaitsOrRunsNothing) {
  Dispatcher dispatcher;
  int cleared_runs = 0;
  absl::Time moved_ran_at = absl::InfinitePast();
  DeadlineTimer cleared(dispatcher, [&] { ++cleared_runs; });
  DeadlineTimer moved(dispatcher, [&] {
    moved_ran_at = dispatcher.Now();
    dispatcher.Exit();
  });
  Timer guard(dispatcher, [&] { dispatcher.Exit(); });  // fails rather than hangs
  const absl::Time start = dispatcher.Now();
  cleared.Set(absl::Milliseconds(5), /*shared_duration=*/true);
  cleared.Clear();
  moved.Set(absl::Milliseconds(5), /*shared_duration=*/true);
  moved.Set(absl::Milliseconds(40));
  guard.Enable(absl::Seconds(10));
  dispatcher.Run();
  // The cleared deadline's wake (at 5 ms) came before the moved one ran.
  EXPECT_EQ(cleared_runs, 0);
  ASSERT_NE(moved_ran_at, absl::InfinitePast());
  EXPECT_GE(moved_ran_at - start, absl::Milliseconds(40));
  EXPECT_FALSE(moved.set());
}

// Descriptor events: epoll changes wait for the loop's next wait and are
// merged there (libevent's changelist). A pair of connected sockets, closed
// when the test ends.
class SocketPair {
 public:
  SocketPair() { EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds_), 0); }
  ~SocketPair() {
    CloseFirst();
    if (fds_[1] >= 0) close(fds_[1]);
  }
  int first() const { return fds_[0]; }
  int second() const { return fds_[1]; }
  void CloseFirst() {
    if (fds_[0] >= 0) close(fds_[0]);
    fds_[0] = -1;
  }

 private:
  int fds_[2] = {-1, -1};
};

// Many changes to one descriptor's events in one pass end as the last one
// set: a socket with bytes to read that is left watching for reads only is
// never reported writable, and one set to nothing reports nothing.
TEST(FileEventTest, EventsChangedSeveralTimesInOnePassEndAsTheLastSet) {
  Dispatcher dispatcher;
  SocketPair watched;
  SocketPair silenced;
  std::vector<short> reported;
  int silenced_reports = 0;
  FileEvent event(dispatcher, watched.first(), [&](short what) {
    reported.push_back(what);
    char byte;
    while (read(watched.first(), &byte, 1) == 1) {
    }
    dispatcher.Exit();
  });
  FileEvent silent(dispatcher, silenced.first(), [&](short) { ++silenced_reports; });
  Timer guard(dispatcher, [&] { dispatcher.Exit(); });  // fails rather than hangs
  guard.Enable(absl::Seconds(10));
  ASSERT_EQ(write(watched.second(), "x", 1), 1);
  ASSERT_EQ(write(silenced.second(), "x", 1), 1);
  Timer changes(dispatcher, [&] {
    event.SetEnabled(FileEvent::kWrite);
    event.SetEnabled(0);
    event.SetEnabled(FileEvent::kRead | FileEvent::kWrite);
    event.SetEnabled(FileEvent::kRead);
    silent.SetEnabled(FileEvent::kRead | FileEvent::kWrite);
    silent.SetEnabled(0);
  });
  event.SetEnabled(FileEvent::kWrite);  // applied by the first wait
  event.SetEnabled(FileEvent::kRead | FileEvent::kWrite);
  silent.SetEnabled(FileEvent::kWrite);
  changes.Enable(absl::ZeroDuration());
  dispatcher.Run();
  // The first wait saw kRead | kWrite: both reported (one callback), and the
  // timer's changes came in the same pass, after it. What the loop reports
  // from the next wait on is reads only.
  ASSERT_FALSE(reported.empty());
  reported.clear();
  silenced_reports = 0;
  ASSERT_EQ(write(watched.second(), "y", 1), 1);
  dispatcher.Run();
  EXPECT_EQ(reported, std::vector<short>{FileEvent::kRead});
  EXPECT_EQ(silenced_reports, 0);
  EXPECT_EQ(event.enabled(), FileEvent::kRead);
  EXPECT_EQ(silent.enabled(), 0);
}

// A descriptor whose event is deleted, closed and its number reused by a new
// socket in the same pass (an upstream connection closed and another opened
// at once) is watched again: the change merged for that number must reach
// the kernel for the new socket, whichever events the new one wants.
TEST(FileEventTest, ADescriptorClosedAndReusedInOnePassIsWatchedForTheNewSocket) {
  for (const short wanted : {FileEvent::kRead, FileEvent::kWrite}) {
    SCOPED_TRACE(wanted == FileEvent::kRead ? "read" : "write");
    Dispatcher dispatcher;
    auto old_pair = std::make_unique<SocketPair>();
    const int number = old_pair->first();
    auto old_event = std::make_unique<FileEvent>(dispatcher, number, [](short) {});
    old_event->SetEnabled(FileEvent::kRead);
    std::unique_ptr<SocketPair> new_pair;
    std::unique_ptr<FileEvent> new_event;
    short reported = 0;
    Timer guard(dispatcher, [&] { dispatcher.Exit(); });  // fails rather than hangs
    guard.Enable(absl::Seconds(10));
    // The old event reaches epoll in the first pass; the swap is made in
    // the second, from a timer, and the new socket's readiness comes after.
    Timer swap(dispatcher, [&] {
      old_event.reset();
      old_pair->CloseFirst();
      new_pair = std::make_unique<SocketPair>();
      ASSERT_EQ(new_pair->first(), number) << "the descriptor number was not reused";
      new_event = std::make_unique<FileEvent>(dispatcher, number, [&](short what) {
        reported = what;
        dispatcher.Exit();
      });
      new_event->SetEnabled(wanted);
      ASSERT_EQ(write(new_pair->second(), "x", 1), 1);
    });
    swap.Enable(absl::Milliseconds(1));
    dispatcher.Run();
    EXPECT_EQ(reported, wanted);
    if (new_pair != nullptr) {
      // Still watched on later passes.
      reported = 0;
      if (wanted == FileEvent::kRead) ASSERT_EQ(write(new_pair->second(), "y", 1), 1);
      dispatcher.Run();
      EXPECT_EQ(reported, wanted);
    }
  }
}

}  // namespace
}  // namespace sluice::event
