// /livez's check, with posted tasks run by hand and a clock the test moves.
#include "dataplane/server/liveness.h"

#include <gtest/gtest.h>

#include <functional>
#include <vector>

namespace sluice::server {
namespace {

struct Loops {
  // Tasks posted to each worker, not yet run.
  std::vector<std::vector<std::function<void()>>> queued;
  absl::Time now = absl::FromUnixSeconds(1000);
  int posted = 0;

  explicit Loops(size_t workers) : queued(workers) {}
  Liveness Make() {
    return Liveness(
        queued.size(),
        [this](size_t i, std::function<void()> task) {
          ++posted;
          queued[i].push_back(std::move(task));
        },
        [this] { return now; });
  }
  void Run(size_t i) {
    for (auto& task : queued[i]) task();
    queued[i].clear();
  }
};

TEST(LivenessTest, AWorkerIsStuckOnlyWhenItsPingWaitedFiveSeconds) {
  Loops loops(2);
  Liveness liveness = loops.Make();
  EXPECT_EQ(liveness.Check(), std::make_pair(true, std::string("alive")));
  EXPECT_EQ(loops.posted, 2);
  // Callers in a loop post nothing more, and a ping just posted counts for
  // nothing yet (back-to-back callers made healthy workers look stuck).
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(liveness.Check().first);
  EXPECT_EQ(loops.posted, 2);
  loops.now += absl::Milliseconds(4999);
  EXPECT_TRUE(liveness.Check().first);
  // Worker 0 runs its loop; worker 1 does not.
  loops.Run(0);
  loops.now += absl::Milliseconds(1);
  auto [alive, why] = liveness.Check();
  EXPECT_FALSE(alive);
  EXPECT_EQ(why, "worker 1 has not run a task posted 5s or more ago (its event loop is stuck)");
  EXPECT_EQ(loops.posted, 3);  // worker 0 got its next ping
  // Worker 1 comes back.
  loops.Run(1);
  loops.Run(0);
  EXPECT_TRUE(liveness.Check().first);
}

TEST(LivenessTest, ATaskRunAfterTheCheckerIsGoneIsHarmless) {
  Loops loops(1);
  {
    Liveness liveness = loops.Make();
    liveness.Check();
  }
  loops.Run(0);  // the pings it writes are its own
  SUCCEED();
}

}  // namespace
}  // namespace sluice::server
