// The CPUs a proxy may use: how many workers it starts by default and, with
// --cpu-affinity auto, the CPU each worker is pinned to. A container is
// limited two ways, and both count: a cpuset (the CPUs the process may run
// on, sched_getaffinity) and a CFS quota (cgroup v2 `cpu.max`, what
// Kubernetes sets from a CPU limit), which caps CPU time, not CPUs.
// Called from the main thread at start; PinCurrentThread from a worker.
#ifndef SLUICE_DATAPLANE_SERVER_CPU_SET_H_
#define SLUICE_DATAPLANE_SERVER_CPU_SET_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sluice::server {

// The CPUs this process may run on, ascending. Empty when the kernel does not
// say (then every online CPU is assumed).
std::vector<int> AllowedCpus();

// What a cgroup v2 `cpu.max` file ("QUOTA PERIOD", or "max PERIOD" for no
// limit) allows, in whole CPUs rounded up (a limit of 1.5 CPUs is 2). nullopt
// for "max" and for text that is not two positive integers.
std::optional<int> CpusFromCgroupCpuMax(absl::string_view text);

// The smallest CPU limit on this process's cgroup (v2) and its ancestors, read
// under `cgroup_root` (/sys/fs/cgroup) from the path in `proc_self_cgroup`
// (the text of /proc/self/cgroup, whose "0::/path" line names the cgroup).
// nullopt when there is none (cgroup v1, or no quota anywhere).
std::optional<int> CgroupCpuLimit(absl::string_view proc_self_cgroup,
                                  const std::string& cgroup_root);

// The CPUs a proxy started here should plan for.
struct CpuBudget {
  std::vector<int> allowed;        // AllowedCpus(), or 0..hardware_concurrency-1
  std::optional<int> quota_cpus;   // CgroupCpuLimit() of this process
  // Workers when --workers is not given: one per allowed CPU, at most the
  // quota's CPUs, at least 1.
  int default_workers = 1;
};
CpuBudget ReadCpuBudget();

// Pins the calling thread to `cpu` (sched_setaffinity). An error names the CPU
// and the reason (a CPU taken out of the cpuset, say).
absl::Status PinCurrentThread(int cpu);

}  // namespace sluice::server

#endif  // SLUICE_DATAPLANE_SERVER_CPU_SET_H_
