#!/usr/bin/env bash
# Config at scale (../shared/DESIGN.md targets): 10,000 routes and 2,000
# clusters in the state, N proxies connected (default 50, one worker each).
# Measures: time for one changed route to be ACKed by every proxy, a proxy's
# RSS with that config, and route-matching time (route_table_benchmark).
# With SIM=M (e.g. SIM=1000), then also: the control plane's RSS and threads
# with M simulated proxies connected (tests/tools/discovery_sim, which ACKs
# every config at once) against none, and the time until all M have ACKed one
# changed route, over SIM_ROUNDS (default 3) applies. Off by default: the
# first sync sends the whole config to every simulated proxy.
# Usage: [SIM=1000] scripts/bench-config.sh [proxies=50] [routes=10000] [clusters=2000]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50}; ROUTES=${2:-10000}; CLUSTERS=${3:-2000}
SIM=${SIM:-0}; SIM_ROUNDS=${SIM_ROUNDS:-3}
# gRPC listens with SO_REUSEPORT: a second control plane on the port would
# silently take half the connections.
if ss -ltn 2>/dev/null | grep -qE '127\.0\.0\.1\]?:18291 '; then
  echo "bench-config: port 18291 is in use on 127.0.0.1; stop that process first" >&2
  exit 1
fi
W=$(scripts/build-opt.sh //tests/dataplane/router:route_table_benchmark //tests/tools:discovery_sim)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

python3 - "$W" "$ROUTES" "$CLUSTERS" <<'PY'
import sys
w, routes, clusters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for c in range(clusters):
    out.append(f"kind: Cluster\nname: c{c}\nspec:\n  endpoints: [{{address: 127.0.0.1, port: {20000 + c % 5000}}}, {{address: 127.0.0.1, port: {30000 + c % 5000}}}]\n")
def table(marker):
    lines = ["kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n"]
    per_host = routes // 10
    for h in range(10):
        extra = ', "*"' if h == 9 else ''
        lines.append(f"  - name: h{h}\n    domains: [h{h}.example.com{extra}]\n    routes:\n")
        for r in range(per_host):
            i = h * per_host + r
            kind = "path" if r % 2 else "prefix"
            lines.append(f"    - {{name: r{i}, match: {{{kind}: /svc{i}/{marker if i == 0 else 'v'}}}, route: {{cluster: c{i % clusters}}}}}\n")
    return "".join(lines)
out.append(table("v"))
out.append("kind: Listener\nname: l\nspec: {address: 127.0.0.1, port: 18290, route_table: main}\n")
open(f"{w}/config.yaml", "w").write("---\n".join(out))
open(f"{w}/change.yaml", "w").write(table("changed"))
open(f"{w}/back.yaml", "w").write(table("v"))
# The change plus one route added at the end of the last virtual host.
open(f"{w}/add.yaml", "w").write(
    table("changed") + "    - {name: added, match: {path: /added}, route: {cluster: c1}}\n")
PY

# The stream limit (default 1000) leaves room for the simulated proxies.
MAX_STREAMS=$(( N + SIM + 100 > 1000 ? N + SIM + 100 : 1000 ))
"$W/sluice-control" --listen 127.0.0.1:18291 --data-dir "$W/data" --log-level warning \
  --max-discovery-streams "$MAX_STREAMS" 2>"$W/cp.log" &
cp_pid=$!
pids+=($cp_pid)
CTL="$W/sluicectl --server 127.0.0.1:18291"
for _ in $(seq 1 100); do $CTL get >/dev/null 2>&1 && break; sleep 0.05; done
start=$(date +%s%N)
$CTL apply -f "$W/config.yaml" | tail -1
echo "apply of $ROUTES routes and $CLUSTERS clusters: $(( ($(date +%s%N) - start) / 1000000 )) ms"
for i in $(seq 1 "$N"); do
  "$W/sluice-proxy" --control-plane 127.0.0.1:18291 --node-id "p$i" --workers 1 \
    --admin 127.0.0.1:0 --log-level info 2>"$W/p$i.log" &
  pids+=($!)
done
acked() { $CTL proxies -o json | python3 -c "
import json,sys; d=json.load(sys.stdin); v=int(d.get('current_version',0))
print(sum(1 for p in d.get('proxies',[]) if int(p.get('version_applied',0))==v))"; }
for _ in $(seq 1 600); do [ "$(acked)" = "$N" ] && break; sleep 0.1; done
echo "$(acked) of $N proxies hold the config"
proxy_pid=${pids[1]}
echo "proxy RSS with the config: $(( $(awk '/VmRSS/{print $2}' /proc/$proxy_pid/status) / 1024 )) MiB"

# One changed route, then one added route: time until every proxy has ACKed
# each new version (sluicectl apply --wait asks every 20 ms).
measure() {  # FILE VERSION LABEL
  local start done_ns
  start=$(date +%s%N)
  $CTL apply -f "$1" --wait --timeout 60s | tail -1
  done_ns=$(date +%s%N)
  echo "$3: all $N proxies ACKed $(( (done_ns - start) / 1000000 )) ms after the apply began" \
       "(sluicectl apply --wait, which polls every 20 ms)"
  # absl durations ("950.1us", "1.13ms", "1.2s") in microseconds, sorted.
  grep -h "applied config version $2 " "$W"/p*.log | sed "s/.* in //" |
    awk '{v=$1+0; if ($1 ~ /ms$/) v*=1000; else if ($1 ~ /us$/) v*=1; else if ($1 ~ /ns$/) v/=1000;
          else if ($1 ~ /s$/) v*=1000000; printf "%.0f\n", v}' |
    sort -n | sed -n "1p;\$p" | awk '{printf "%.2f ms ", $1 / 1000}'
  echo "(fastest, slowest proxy apply of the $3)"
}
measure "$W/change.yaml" 2 "one changed route"
measure "$W/add.yaml" 3 "one added route"
"$W/route_table_benchmark" --benchmark_min_time=0.2 2>/dev/null | grep -E '^BM_' | head -8

[ "$SIM" -gt 0 ] || exit 0

# SIM simulated proxies on the same control plane. The real proxies go first,
# so that the numbers are the control plane's alone: on a small machine 50
# proxies compiling each change compete with it for the CPUs.
for p in "${pids[@]:1}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
pids=("$cp_pid")
for _ in $(seq 1 200); do [ "$($CTL proxies -o json | python3 -c "
import json,sys; print(len(json.load(sys.stdin).get('proxies',[])))")" = 0 ] && break; sleep 0.05; done
cp_status() { awk '/^VmRSS/{r=$2} /^VmHWM/{h=$2} /^Threads/{t=$2}
  END{printf "%d MiB RSS (peak %d MiB), %d threads", r/1024, h/1024, t}' "/proc/$cp_pid/status"; }
echo "control plane with no proxies connected: $(cp_status)"
"$W/discovery_sim" --control-plane 127.0.0.1:18291 --streams "$SIM" --node-prefix sim- \
  >"$W/sim.out" 2>"$W/sim.err" &
sim_pid=$!
pids+=($sim_pid)
# Waits for a line of the simulator's output matching $1, for at most $2 s.
await_sim() {
  local deadline=$(( $(date +%s) + $2 ))
  until grep -q "$1" "$W/sim.out"; do
    if ! kill -0 "$sim_pid" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
      echo "bench-config: no \"$1\" from discovery_sim within $2 s; its errors:" >&2
      sort "$W/sim.err" | uniq -c | sort -rn | head -5 >&2
      exit 1
    fi
    sleep 0.01
  done
}
await_sim "^all $SIM streams hold version" 600
echo "$SIM simulated proxies connected and $(head -1 "$W/sim.out" | sed 's/^all [0-9]* streams //')"
echo "control plane with $SIM simulated proxies connected: $(cp_status)"
# One changed route, applied and applied back: the time until all SIM have
# ACKed it, from the apply's start and from its answer. The ACK can come
# before sluicectl has printed (the fan-out starts before the answer).
for round in $(seq 1 "$SIM_ROUNDS"); do
  file=$([ $(( round % 2 )) = 1 ] && echo back.yaml || echo change.yaml)
  start=$(date +%s%N)
  version=$($CTL apply -f "$W/$file" | tail -1 | awk '{print $NF}')
  applied=$(date +%s%N)
  await_sim "^all $SIM streams hold version $version at" 120
  acked_ms=$(grep "^all $SIM streams hold version $version at" "$W/sim.out" | awk '{print $9}')
  echo "one changed route, round $round (version $version): apply answered in" \
       "$(( (applied - start) / 1000000 )) ms, all $SIM simulated proxies ACKed" \
       "$(( acked_ms - start / 1000000 )) ms after the apply began," \
       "$(( acked_ms - applied / 1000000 )) ms after it answered"
done
echo "control plane after the rounds: $(cp_status)"
