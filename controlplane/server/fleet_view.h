// FleetView: the proxies of every control-plane replica (sluice-control
// --store etcd), for ListProxies: `sluicectl proxies`, `apply --wait` and
// `top` see the whole fleet, whichever replica they ask. Without it each
// replica answered for the proxies connected to it alone: `apply --wait`
// could say "taken by 2 of 2" while a proxy on the other replica refused the
// version.
//
// Every period (1 s) each replica publishes its proxies' statuses (a
// ListProxiesResponse, each status naming this replica) in one entry of its
// own on a board (etcd: <prefix>fleet/<replica id>), reads every replica's
// entry and keeps the others' statuses. An entry is live while its board
// revision keeps changing: one first seen counts only once it changes (a
// replica that just started shows no dead replica's proxies), one unchanged
// for `stale_after` (3 s) is left out of Others() (its replica is gone, and
// its proxies have moved or will) but listed by Silent(), with how long it
// has been silent, until it is unchanged for `forget_after` (60 s), when it
// is deleted: a replica that hangs keeps its proxies (they notice only when
// their keepalive gives up, some 40 s later), and `apply --wait` must not
// take them for gone. A
// replica that stops cleanly deletes its own entry. When the board cannot be
// read for `stale_after`, the others' proxies are left out too (they may
// have moved, and their versions are unknown). An entry is kept within
// `max_entry_bytes`: past it without the traffic reports, then with each
// NACK message cut to 256 bytes.
//
// Thread-safe; RunOnce() is one period, for unit tests with a fake board.
#ifndef SLUICE_CONTROLPLANE_SERVER_FLEET_VIEW_H_
#define SLUICE_CONTROLPLANE_SERVER_FLEET_VIEW_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controlplane/server/replica_shares.h"
#include "sluice/admin/v1/admin.pb.h"

namespace sluice::controlplane {

struct FleetViewOptions {
  std::string replica_id;  // unique per process
  absl::Duration period = absl::Seconds(1);
  absl::Duration stale_after = absl::Seconds(3);
  absl::Duration forget_after = absl::Seconds(60);
  // What one board entry may hold (etcd: under --etcd-max-request-bytes).
  size_t max_entry_bytes = 256 * 1024;
  std::function<absl::Time()> clock = &absl::Now;
};

class FleetView {
 public:
  static constexpr size_t kNackBytesWhenCut = 256;
  // `own` lists this replica's proxies (ProxyRegistry::List). `board` must
  // outlive this.
  FleetView(ReplicaDemandBoard* board,
            std::function<std::vector<admin::v1::ProxyStatus>()> own, FleetViewOptions options);
  ~FleetView();  // Stop()

  const std::string& replica_id() const { return options_.replica_id; }
  // One period: publish, read. On a board error the others seen before stay
  // (until they are stale).
  absl::Status RunOnce();
  void Start();
  // Tells the thread to end after its current run, without waiting.
  void RequestStop();
  // Ends the thread and removes this replica's entry (unless the board
  // just failed). Idempotent.
  void Stop();
  // The proxies of the other live replicas, as they last published them.
  std::vector<admin::v1::ProxyStatus> Others();
  // The proxies of the replicas that stopped publishing (past stale_after,
  // within forget_after), as they last published them, each with
  // replica_silent_for set. Empty while the board cannot be read.
  std::vector<admin::v1::ProxyStatus> Silent();
  // How long the other replicas' entries have gone unread, when that is
  // past stale_after (Others() and Silent() are empty then); zero otherwise.
  absl::Duration UnreadFor();
  // Waits (at most `timeout`) until the view is whole: two reads of the
  // board a period apart (a replica's entry counts only once seen to change),
  // so a replica that just started does not answer with its own proxies
  // alone. True once whole.
  bool WaitWhole(absl::Duration timeout);

 private:
  struct Seen {
    int64_t revision = 0;
    absl::Time changed;
    bool confirmed = false;  // seen to change since first read: its replica lives
  };

  absl::Status RunOnceLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(run_mu_);

  ReplicaDemandBoard* const board_;
  const std::function<std::vector<admin::v1::ProxyStatus>()> own_;
  const FleetViewOptions options_;

  absl::Mutex run_mu_;  // one RunOnce at a time
  absl::flat_hash_map<std::string, Seen> seen_ ABSL_GUARDED_BY(run_mu_);
  // The others' last entries, by replica.
  absl::flat_hash_map<std::string, admin::v1::ListProxiesResponse> entries_
      ABSL_GUARDED_BY(run_mu_);
  OwnBoardEntry own_entry_ ABSL_GUARDED_BY(run_mu_);
  bool too_large_logged_ ABSL_GUARDED_BY(run_mu_) = false;

  absl::Mutex others_mu_;
  std::vector<admin::v1::ProxyStatus> others_ ABSL_GUARDED_BY(others_mu_);
  std::vector<admin::v1::ProxyStatus> silent_ ABSL_GUARDED_BY(others_mu_);
  absl::Time read_at_ ABSL_GUARDED_BY(others_mu_) = absl::InfinitePast();  // last good read
  int good_reads_ ABSL_GUARDED_BY(others_mu_) = 0;

  PeriodicRunner runner_;
  const absl::Time created_;  // UnreadFor() before the first good read
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_FLEET_VIEW_H_
