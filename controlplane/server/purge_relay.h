// PurgeRelay: sends an operator's cache purge to the connected proxies on
// their config streams and collects their answers (AdminService.PurgeCache,
// api/sluice/discovery: "Cache purges").
//
// Each discovery stream attaches itself once it is established, with a way
// to queue a CachePurge for its writer thread, and detaches when it ends.
// Purge() gives the command an id, queues it on every attached stream (of the
// group, when one is given), and blocks until each of those proxies has
// answered, has disconnected, or the timeout passed. A stream's reader thread
// hands the proxy's PurgeResult to Answered(); an answer for an id that is no
// longer outstanding (it came after the timeout) or from a proxy the purge did
// not target is dropped.
//
// A proxy that was cut off (hung past the stream's keepalive, a network
// partition) keeps its cache, and came back serving entries purged
// meanwhile while the purge had said nothing of it. The relay keeps the
// purges of the last kReplayWindow (at most kMaxReplayed) and when each
// node id's last stream ended: a stream of a node id that left within the
// window is sent, as it attaches, every purge made from a minute before it
// left (one it may have missed on its way out; a purge twice costs a miss),
// and a purge made while such a proxy is away names it (Departed).
//
// Lock order: PurgeRelay's mutex, then a stream's (the queue function runs
// under the relay's mutex, so a stream cannot detach while it is called).
// Streams must therefore not call into the relay while holding their own
// mutex.
//
// Thread-safe.
#ifndef SLUICE_CONTROLPLANE_SERVER_PURGE_RELAY_H_
#define SLUICE_CONTROLPLANE_SERVER_PURGE_RELAY_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "sluice/discovery/v1/discovery.pb.h"

namespace sluice::controlplane {

// What one Purge() found out.
struct PurgeOutcome {
  struct Failure {
    std::string node_id;
    std::string reason;
  };
  // A proxy of the group that left within the replay window and is not
  // back: it is sent the purge when it reconnects.
  struct Departed {
    std::string node_id;
    absl::Duration ago;
  };
  int targeted = 0;
  int confirmed = 0;
  uint64_t entries_removed = 0;
  std::vector<Failure> failures;  // ordered by node id
  std::vector<Departed> departed;  // ordered by node id
};

class PurgeRelay {
 public:
  // Queues `purge` for the stream's writer; must not block and must not
  // call into the relay.
  using QueueFn = std::function<void(const discovery::v1::CachePurge& purge)>;

  static constexpr absl::Duration kReplayWindow = absl::Minutes(10);
  static constexpr size_t kMaxReplayed = 256;

  explicit PurgeRelay(std::function<absl::Time()> clock = &absl::Now)
      : clock_(std::move(clock)) {}

  // A stream is established: `handle` is unique among attached streams (the
  // ProxyRegistry's handle).
  void Attach(int handle, const discovery::v1::Node& node, QueueFn queue);
  // The stream ended: no more purges are queued on it, and those it has not
  // answered count it as disconnected. After it returns, `queue` is never
  // called again.
  void Detach(int handle);
  // The proxy on stream `handle` answered.
  void Answered(int handle, const discovery::v1::PurgeResult& result);

  // Sends `selector` to every attached stream whose node group is `group`
  // (every stream when empty) and waits up to `timeout` for their answers.
  // Blocks the calling thread.
  PurgeOutcome Purge(const discovery::v1::PurgeSelector& selector,
                     const std::string& group, absl::Duration timeout);

  // Purges still waiting for answers (for tests).
  int outstanding() const;

 private:
  struct Stream {
    std::string node_id;
    std::string group;
    QueueFn queue;
  };
  // One targeted proxy of an outstanding purge.
  struct Target {
    std::string node_id;
    bool answered = false;
    bool confirmed = false;
    uint64_t entries_removed = 0;
    std::string reason;  // why it did not confirm, once answered
  };
  struct Pending {
    std::map<int, Target> targets;  // by stream handle
    int unanswered = 0;
  };

  struct Made {
    absl::Time at;
    discovery::v1::PurgeSelector selector;
    std::string group;
  };
  struct Left {
    std::string group;
    absl::Time at;
  };
  // Drops what is older than the replay window.
  void Prune(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::function<absl::Time()> clock_;
  mutable absl::Mutex mu_;
  std::map<int, Stream> streams_ ABSL_GUARDED_BY(mu_);
  std::deque<Made> made_ ABSL_GUARDED_BY(mu_);  // oldest first
  std::map<std::string, Left> departed_ ABSL_GUARDED_BY(mu_);  // by node id
  std::map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_PURGE_RELAY_H_
