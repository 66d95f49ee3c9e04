#include "dataplane/server/cpu_set.h"

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace sluice::server {
namespace {

TEST(CpuSetTest, CpuMaxIsReadInWholeCpusRoundedUp) {
  EXPECT_EQ(CpusFromCgroupCpuMax("200000 100000\n"), 2);
  EXPECT_EQ(CpusFromCgroupCpuMax("150000 100000"), 2);
  EXPECT_EQ(CpusFromCgroupCpuMax("50000 100000"), 1);
  EXPECT_EQ(CpusFromCgroupCpuMax("100000 100000"), 1);
  EXPECT_EQ(CpusFromCgroupCpuMax("max 100000"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupCpuMax(""), std::nullopt);
  EXPECT_EQ(CpusFromCgroupCpuMax("0 100000"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupCpuMax("100000 0"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupCpuMax("100000"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupCpuMax("a b"), std::nullopt);
}

class CgroupTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    root_ = std::string(tmp ? tmp : "/tmp") + "/cgroup-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (const std::string& dir : {root_, root_ + "/kubepods", root_ + "/kubepods/pod1",
                                   root_ + "/kubepods/pod1/proxy"}) {
      ::mkdir(dir.c_str(), 0755);
    }
  }
  void Write(const std::string& dir, const std::string& text) {
    std::ofstream(root_ + dir + "/cpu.max") << text;
  }
  std::string root_;
};

TEST_F(CgroupTreeTest, TheSmallestQuotaOnTheWayUpBinds) {
  Write("", "max 100000\n");
  Write("/kubepods", "max 100000\n");
  Write("/kubepods/pod1", "300000 100000\n");
  Write("/kubepods/pod1/proxy", "max 100000\n");
  EXPECT_EQ(CgroupCpuLimit("0::/kubepods/pod1/proxy\n", root_), 3);
  Write("/kubepods/pod1/proxy", "150000 100000\n");
  EXPECT_EQ(CgroupCpuLimit("0::/kubepods/pod1/proxy\n", root_), 2);
}

TEST_F(CgroupTreeTest, NoQuotaOrCgroupV1MeansNoLimit) {
  Write("", "max 100000\n");
  EXPECT_EQ(CgroupCpuLimit("0::/kubepods/pod1/proxy\n", root_), std::nullopt);
  // A cgroup namespace shows its own root as "/".
  EXPECT_EQ(CgroupCpuLimit("0::/\n", root_), std::nullopt);
  Write("", "400000 100000\n");
  EXPECT_EQ(CgroupCpuLimit("0::/\n", root_), 4);
  // cgroup v1 lines (no "0::") say nothing about cpu.max.
  EXPECT_EQ(CgroupCpuLimit("4:cpu,cpuacct:/kubepods\n1:name=systemd:/x\n", root_), std::nullopt);
}

TEST(CpuSetTest, TheDefaultWorkersFollowTheAllowedCpusAndQuota) {
  const CpuBudget budget = ReadCpuBudget();
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  EXPECT_EQ(budget.allowed.size(), static_cast<size_t>(CPU_COUNT(&set)));
  int expected = static_cast<int>(budget.allowed.size());
  if (budget.quota_cpus) expected = std::min(expected, *budget.quota_cpus);
  EXPECT_EQ(budget.default_workers, std::max(1, expected));
}

TEST(CpuSetTest, APinnedThreadRunsOnlyOnItsCpu) {
  const std::vector<int> allowed = AllowedCpus();
  ASSERT_FALSE(allowed.empty());
  const int target = allowed.back();
  std::vector<int> seen;
  absl::Status pinned;
  std::thread t([&] {
    pinned = PinCurrentThread(target);
    seen = AllowedCpus();
  });
  t.join();
  ASSERT_TRUE(pinned.ok()) << pinned;
  EXPECT_EQ(seen, std::vector<int>{target});
  // The calling thread keeps its own set.
  EXPECT_EQ(AllowedCpus(), allowed);
  EXPECT_FALSE(PinCurrentThread(-1).ok());
  EXPECT_FALSE(PinCurrentThread(CPU_SETSIZE).ok());
}

}  // namespace
}  // namespace sluice::server
