// ReplicaShareExchange: rate-limit scope FLEET across several control-plane
// replicas (sluice-control --store etcd). Without it each replica would
// divide the whole limit among its own proxies, and k replicas would admit
// up to k times the limit.
//
// Every period (500 ms) each replica publishes its demand per (policy
// identity, key) — the sum of its proxies' EWMA demand, as its
// LeaseAllocator knows it — and how many proxies report to it, in one entry
// of its own on a ReplicaDemandBoard (etcd: <prefix>leases/<replica id>),
// reads every replica's entry, tells its allocator how many proxies the
// other live replicas have (so the fleet size it answers is the whole
// fleet's), and sets its allocator's fraction of each key's limits:
//
//   n = the live replicas whose entries name the key (this one included),
//   D = the sum of their demands, D_r = this replica's:
//   fraction = 1                                   when n == 1,
//              1 / n                               when D == 0,
//              max(D_r / D, floor_fraction / n)    otherwise
//
// so the replicas' shares sum to the limit (a little more where a floor
// applies: a replica with little demand is never starved).
//
// Liveness without clocks compared across machines: an entry is live while
// its board revision keeps changing; one whose revision has not changed for
// `stale_after` (3 s, six periods) is left out, and one unchanged for
// `forget_after` (60 s) is deleted (only if it still has that revision). An
// entry seen for the first time counts as just changed. A replica that
// stops cleanly deletes its own entry (Stop).
//
// RunOnce() is one period, driven by a unit test with a fake board and
// clock; Start() runs it every period on a thread of its own until Stop().
// Thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_REPLICA_SHARES_H_
#define SLUICE_CONTROLPLANE_SERVER_REPLICA_SHARES_H_

#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controlplane/server/rate_limit_leases.h"

namespace sluice::controlplane {

// Where the replicas' entries live (etcd's leases/ keys; a fake in tests).
class ReplicaDemandBoard {
 public:
  struct Entry {
    std::string replica;
    std::string value;
    int64_t revision = 0;  // changes with every Publish
  };
  virtual ~ReplicaDemandBoard() = default;
  virtual absl::Status Publish(const std::string& replica,
                               std::string value) = 0;
  virtual absl::StatusOr<std::vector<Entry>> ReadAll() = 0;
  // Removes `replica`'s entry if it still has `revision` (0: in any case).
  virtual absl::Status Remove(const std::string& replica, int64_t revision) = 0;
};

// This replica's own entry on a board, for the exchanges below: written
// every period, and removed at the stop unless the board was out of reach at
// the last run (another --etcd-timeout spent on an etcd that is gone gains
// nothing: the others drop an entry once it stops changing). A refusal (an
// entry over etcd's request limit) is no outage: the entry left from before
// is removed. Callers serialize.
class OwnBoardEntry {
 public:
  OwnBoardEntry(ReplicaDemandBoard* board, std::string replica)
      : board_(board), replica_(std::move(replica)) {}
  absl::Status Publish(std::string value);
  // The period's outcome: whether the board was out of reach.
  void RunEnded(const absl::Status& status);
  // At the stop.
  void Remove();

 private:
  ReplicaDemandBoard* const board_;
  const std::string replica_;
  bool published_ = false;  // the entry may exist
  bool out_of_reach_ = false;
};

// Demand per LeaseAllocator::ShareKey, requests per second.
using ReplicaDemand = absl::flat_hash_map<std::string, double>;

// An entry's value: "sluice-replica-demand 1\n", "#proxies TAB n\n" (the
// proxies reporting to that replica; a share key always holds an escaped
// NUL, so it is never "#proxies"), then one line per key: CEscape(share
// key) TAB demand.
std::string EncodeReplicaDemand(const ReplicaDemand& demand, size_t proxies = 0);
// INVALID_ARGUMENT naming the line that does not parse. `proxies` (if not
// null) gets the entry's proxy count (0 when it has none: an older
// replica's).
absl::StatusOr<ReplicaDemand> DecodeReplicaDemand(const std::string& value,
                                                  size_t* proxies = nullptr);

// The division above: this replica's fraction of each of its keys, given
// the other live replicas' demand. Keys whose fraction is 1 are left out.
absl::flat_hash_map<std::string, double> ReplicaFractions(
    const ReplicaDemand& own, const std::vector<ReplicaDemand>& others,
    double floor_fraction);

struct ReplicaShareOptions {
  std::string replica_id;  // unique per process
  absl::Duration period = absl::Milliseconds(500);
  absl::Duration stale_after = absl::Seconds(3);
  absl::Duration forget_after = absl::Seconds(60);
  double floor_fraction = 0.05;
  std::function<absl::Time()> clock = &absl::Now;
};

// Runs `run` every `period` on a thread of its own, from Start() until
// Stop(); a failure is logged once ("<what> with the other replicas failed:
// <why>; <meanwhile>") until it works again. The replicas' exchanges on a
// board (ReplicaShareExchange, FleetView) run on one each.
class PeriodicRunner {
 public:
  PeriodicRunner(std::string what, std::string meanwhile, absl::Duration period,
                 std::function<absl::Status()> run);
  ~PeriodicRunner();  // Stop()
  void Start();
  // Tells the thread to end after its current run, without waiting: so
  // several runners stop side by side (each run may wait on etcd).
  void RequestStop();
  // Ends the thread (joined). Idempotent.
  void Stop();

 private:
  void Loop();

  const std::string what_;
  const std::string meanwhile_;
  const absl::Duration period_;
  const std::function<absl::Status()> run_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex join_mu_;  // one joiner
  std::thread thread_;
};

class ReplicaShareExchange {
 public:
  // `board` and `allocator` must outlive this.
  ReplicaShareExchange(ReplicaDemandBoard* board, LeaseAllocator* allocator,
                       ReplicaShareOptions options);
  ~ReplicaShareExchange();  // Stop()

  // One period: publish, read, set the allocator's fractions. On a board
  // error the fractions set before stay.
  absl::Status RunOnce();
  void Start();
  // Tells the thread to end after its current run, without waiting.
  void RequestStop();
  // Ends the thread and removes this replica's entry (when it published
  // one and the board did not just fail). Idempotent; RunOnce must not be
  // called after it.
  void Stop();

  // A random id (32 hex digits) for ReplicaShareOptions::replica_id.
  static std::string NewReplicaId();

 private:
  struct Seen {
    int64_t revision = 0;
    absl::Time changed;
  };

  absl::Status RunOnceLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(run_mu_);

  ReplicaDemandBoard* const board_;
  LeaseAllocator* const allocator_;
  const ReplicaShareOptions options_;

  absl::Mutex run_mu_;  // one RunOnce at a time
  absl::flat_hash_map<std::string, Seen> seen_ ABSL_GUARDED_BY(run_mu_);
  OwnBoardEntry own_entry_ ABSL_GUARDED_BY(run_mu_);

  PeriodicRunner runner_;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_REPLICA_SHARES_H_
