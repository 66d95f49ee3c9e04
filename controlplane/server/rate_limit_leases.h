// LeaseAllocator: the control plane's side of `rate-limit` scope FLEET.
// Proxies report, every --rate-limit-report-interval on their config stream,
// how many requests each key of each FLEET policy saw (admitted or not);
// this divides each limit among the proxies by their recent demand, and
// each report is answered with the reporting proxy's shares (leases) of the
// keys it reported. Proxies enforce their shares locally
// (dataplane/policy/rate_limit/fleet_limiter_impl.h).
//
// Per (policy identity, key), each proxy's demand is kept as two EWMAs of
// its requests per second, from 0 when it joins the key: a fast one
// (weight `ewma_weight` for the newest interval) and a slow one (time
// constant `smooth_time`, the plain mean of the samples while that weighs
// more). The division counts it at the slow one unless the fast one is off
// it by more than three standard deviations of its noise (DividedDemand):
// a proxy with a request every few intervals is counted at its average,
// and a real change in its traffic is followed fast. A proxy reports a key it holds a lease for with 0 requests while
// it is idle (for 20 s), so a key missing from its report is one it left:
// after `idle_reports` reports without it (default 1) it leaves the key. Limit L (per second) among the n proxies with demand d_i, D = sum:
//   - D <= L: each gets d_i + (L - D) / n (demand plus an even part of the
//     headroom); the shares sum to L;
//   - D > L: Doorman's ProportionalShare: a light proxy (d_i <= L / n) is
//     counted at its demand, and what that leaves of L goes to the heavy
//     ones in proportion to how much more they want (d_i - L / n); so
//     heavy shares + light demand = L. A light proxy's share is
//     min(1.15 d_i, L / n), or, when d_i W < 10 (W the limit's period in
//     seconds: a bucket too shallow for its randomness),
//     min(max(1.15 d_i, d_i + 2 sqrt(d_i / W)), L / n): room for its
//     randomness, which it uses only as
//     far as its requests come (its estimated demand is what it takes on
//     average, an EWMA being unbiased); a proxy whose demand really grew
//     takes at most that room until its next report;
//   - in both, no share is below `floor_fraction` * L / n, so a proxy with
//     little traffic is never starved (a floor above a proxy's demand is
//     room it does not use; it lifts the sum above L only by what that
//     proxy's demand then grows into, at most the floor).
// A share is sent in requests per the limit's period.
//
// The fleet is every proxy sending demand reports to this control plane
// (each one sends one every interval, empty or not), and a proxy that
// disconnects leaves it at once and gives back its shares: the others get
// them with their next report. Its size goes with every answer, plus the
// proxies of the other live replicas (SetOtherReplicasProxies); a proxy
// uses limit / size for a key it has no lease for yet, and when it hears
// from no replica (so a proxy whose only replica died, while the others
// hand its peers the whole limit, adds limit / size, not limit).
//
// Several replicas (sluice-control --store etcd): each divides only its
// share of each limit, L * fraction, among its own proxies; the fraction
// per (identity, key) is set by ReplicaShareExchange
// (replica_shares.h) from every replica's Demand(). Without one (file
// store, or a key only this replica has) the fraction is 1.
//
// Restarted: a control plane that comes back (kill -9, an upgrade) hears
// its proxies again one by one, as each one's reconnect backoff ends (up to
// 10 s apart). Those not back yet admit their fallback share (limit / the
// fleet size they last heard), so dividing the whole limit among those back
// let the fleet over it (+26% for 7 s when a light proxy came back last).
// Each report says the fleet size its proxy last heard (fleet_size_heard):
// for `rejoin_grace` after the first report the fleet counts at least the
// largest one heard, the proxies missing from it keep limit / that size of
// each limit, and answers give that size. A proxy gone for good meanwhile
// costs the others its part until the grace ends.
//
// Memory: at most `max_keys` (identity, key) pairs; keys reported beyond
// that get no lease (the proxy keeps limit / size).
//
// Thread-safe (one mutex); called from the streams' reader threads.
#ifndef SLUICE_CONTROLPLANE_SERVER_RATE_LIMIT_LEASES_H_
#define SLUICE_CONTROLPLANE_SERVER_RATE_LIMIT_LEASES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "sluice/discovery/v1/discovery.pb.h"

namespace sluice::controlplane {

struct LeaseAllocatorOptions {
  double ewma_weight = 0.2;
  // The time constant of the slower average the demand is divided by
  // (Report; about weight 0.03 at 200 ms reports).
  absl::Duration smooth_time = absl::Milliseconds(6500);
  int idle_reports = 1;
  double floor_fraction = 0.05;
  size_t max_keys = 1000000;
  // A proxy silent this long is no longer counted in the fleet's size.
  absl::Duration member_timeout = absl::Seconds(2);
  // For this long after its first report, the fleet is at least the
  // largest fleet_size_heard a proxy reported (see "Restarted" above).
  absl::Duration rejoin_grace = absl::Seconds(15);
};

class LeaseAllocator {
 public:
  explicit LeaseAllocator(LeaseAllocatorOptions options = {});

  // Takes proxy `proxy`'s report at `now` and answers with its shares of
  // the keys it reported. `proxy`: unique per connected stream.
  discovery::v1::RateLimitLeases Report(uint64_t proxy,
                                        const discovery::v1::RateLimitDemand& demand,
                                        absl::Time now);
  // The proxy's stream ended: it leaves the fleet and every key.
  void Disconnect(uint64_t proxy);

  // The fleet's size: this replica's live proxies and the other replicas'.
  size_t fleet_size(absl::Time now);
  // The proxies reporting to this replica (for the other replicas).
  size_t own_proxies(absl::Time now);
  // How many proxies the other live replicas have (ReplicaShareExchange).
  void SetOtherReplicasProxies(size_t proxies);

  // The name of (identity, key) in Demand() and SetReplicaShares().
  static std::string ShareKey(const std::string& identity, const std::string& key);
  // Per (identity, key) this replica's proxies are in: the sum of their
  // demand (the slow EWMAs, requests per second: the fractions move with
  // the traffic, not with its noise).
  absl::flat_hash_map<std::string, double> Demand();
  // This replica's fraction (0..1] of every limit of each (identity, key),
  // replacing the fractions set before, and how many replicas took part.
  // A key not in `fractions` (new since that exchange) gets 1 / replicas
  // until the next exchange: with etcd out of reach that lasts, and new
  // keys (a CLIENT_IP's, a CONSUMER's) got the whole limit on every
  // replica, a multiple of it in all. Before any exchange: 1.
  void SetReplicaShares(absl::flat_hash_map<std::string, double> fractions, size_t replicas);
  size_t tracked_keys();

  // The division above: `limit` and `demand` in the same unit (requests
  // per second); one share per demand, in that unit.
  // `window_seconds`: the limit's period, for a light proxy's room (0: 15%
  // only).
  static std::vector<double> Divide(double limit, const std::vector<double>& demand,
                                    double floor_fraction, double window_seconds = 0);

  struct Client {
    double rate = 0;    // EWMA (ewma_weight), requests per second
    double smooth = 0;  // EWMA (smooth_time), requests per second
    uint64_t samples = 0;
    int idle = 0;     // zero samples in a row
  };
 private:
  struct KeyState {
    std::vector<double> limits_per_second;
    std::vector<double> periods_seconds;
    absl::flat_hash_map<uint64_t, Client> clients;
  };

  size_t FleetSize(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The fleet size heard before a restart, while rejoin_grace lasts (else 0).
  size_t ExpectedFleet(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const LeaseAllocatorOptions options_;
  absl::Mutex mu_;
  // (identity, key) -> state; the pair as identity + '\0' + key.
  absl::flat_hash_map<std::string, KeyState> keys_ ABSL_GUARDED_BY(mu_);
  // Per proxy: the keys it is in, and when it last reported.
  absl::flat_hash_map<uint64_t, absl::flat_hash_set<std::string>> joined_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, absl::Time> last_report_ ABSL_GUARDED_BY(mu_);
  // ShareKey -> this replica's fraction of the limits; absent:
  // new_key_fraction_.
  absl::flat_hash_map<std::string, double> replica_shares_ ABSL_GUARDED_BY(mu_);
  double new_key_fraction_ ABSL_GUARDED_BY(mu_) = 1.0;
  size_t other_replicas_proxies_ ABSL_GUARDED_BY(mu_) = 0;
  // The first report's time, and the largest fleet_size_heard since.
  absl::Time first_report_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  size_t heard_fleet_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sluice::controlplane

#endif  // SLUICE_CONTROLPLANE_SERVER_RATE_LIMIT_LEASES_H_
