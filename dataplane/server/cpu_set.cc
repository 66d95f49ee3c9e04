#include "dataplane/server/cpu_set.h"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace sluice::server {
namespace {

std::optional<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::vector<int> AllowedCpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

std::optional<int> CpusFromCgroupCpuMax(absl::string_view text) {
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::StripAsciiWhitespace(text), ' ', absl::SkipEmpty());
  if (fields.size() != 2) return std::nullopt;
  int64_t quota = 0, period = 0;
  if (!absl::SimpleAtoi(fields[0], &quota) || !absl::SimpleAtoi(fields[1], &period) ||
      quota <= 0 || period <= 0) {
    return std::nullopt;  // "max" (no limit) or not a cpu.max line
  }
  const int64_t cpus = (quota + period - 1) / period;
  return static_cast<int>(std::min<int64_t>(cpus, CPU_SETSIZE));
}

std::optional<int> CgroupCpuLimit(absl::string_view proc_self_cgroup,
                                  const std::string& cgroup_root) {
  // cgroup v2 has one line, "0::/path"; v1 hierarchies have other numbers.
  std::string path;
  bool found = false;
  for (absl::string_view line : absl::StrSplit(proc_self_cgroup, '\n')) {
    if (absl::ConsumePrefix(&line, "0::")) {
      path = std::string(absl::StripAsciiWhitespace(line));
      found = true;
      break;
    }
  }
  if (!found || path.empty() || path[0] != '/') return std::nullopt;
  // The limit that binds is the smallest on the way up to the root.
  std::optional<int> limit;
  while (true) {
    if (auto text = ReadSmallFile(absl::StrCat(cgroup_root, path == "/" ? "" : path, "/cpu.max"))) {
      if (auto cpus = CpusFromCgroupCpuMax(*text); cpus && (!limit || *cpus < *limit)) {
        limit = cpus;
      }
    }
    if (path == "/") break;
    const size_t slash = path.rfind('/');
    path = slash == 0 ? "/" : path.substr(0, slash);
  }
  return limit;
}

CpuBudget ReadCpuBudget() {
  CpuBudget budget;
  budget.allowed = AllowedCpus();
  if (budget.allowed.empty()) {
    const int online = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    for (int cpu = 0; cpu < online; ++cpu) budget.allowed.push_back(cpu);
  }
  if (auto self = ReadSmallFile("/proc/self/cgroup")) {
    budget.quota_cpus = CgroupCpuLimit(*self, "/sys/fs/cgroup");
  }
  budget.default_workers = static_cast<int>(budget.allowed.size());
  if (budget.quota_cpus) budget.default_workers = std::min(budget.default_workers, *budget.quota_cpus);
  budget.default_workers = std::max(1, budget.default_workers);
  return budget;
}

absl::Status PinCurrentThread(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) {
    return absl::InvalidArgumentError(absl::StrCat("CPU ", cpu, " is out of range"));
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("pinning to CPU ", cpu, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace sluice::server
