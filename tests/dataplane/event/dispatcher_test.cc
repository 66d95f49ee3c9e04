// The dispatcher's simulated clock (timers in deadline order, only when due,
// with the loop's own work after them) and its real-time timers, which the
// simulated mode must leave as they were.
#include "dataplane/event/dispatcher.h"

#include <gtest/gtest.h>

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
  const absl::Time start = absl::Now();
  shared.Enable(absl::Milliseconds(5), /*shared_duration=*/true);
  disabled.Enable(absl::Milliseconds(10));
  last.Enable(absl::Milliseconds(20));
  EXPECT_TRUE(disabled.enabled());
  disabled.Disable();
  EXPECT_FALSE(disabled.enabled());
  dispatcher.Run();
  // libevent reads a coarse monotonic clock (a few ms of resolution): a
  // timer may fire that much before absl::Now() says its delay is over.
  const absl::Time end = dispatcher.Now();
  EXPECT_GE(end - start, absl::Milliseconds(10));
  EXPECT_LT(absl::AbsDuration(absl::Now() - end), absl::Seconds(1));
  EXPECT_EQ(fired, (std::vector<std::string>{"shared", "last"}));
}

}  // namespace
}  // namespace sluice::event
