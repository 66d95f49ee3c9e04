#!/usr/bin/env bash
# Config at scale (../shared/DESIGN.md targets): 10,000 routes and 2,000
# clusters in the state, N proxies connected (default 50, one worker each).
# Measures: time for one changed route to be ACKed by every proxy, a proxy's
# RSS with that config, and route-matching time (route_table_benchmark).
# Usage: scripts/bench-config.sh [proxies=50] [routes=10000] [clusters=2000]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50}; ROUTES=${2:-10000}; CLUSTERS=${3:-2000}
scripts/install-deps.sh
bazel build --config=opt //controlplane/server:sluice-control //controlplane/cli:sluicectl \
  //dataplane/server:sluice-proxy //tests/dataplane/router:route_table_benchmark >/dev/null 2>&1
W=$(mktemp -d)
cp bazel-bin/controlplane/server/sluice-control bazel-bin/controlplane/cli/sluicectl \
  bazel-bin/dataplane/server/sluice-proxy bazel-bin/tests/dataplane/router/route_table_benchmark "$W/"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"; }
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
PY

"$W/sluice-control" --listen 127.0.0.1:18291 --data-dir "$W/data" --log-level warning 2>"$W/cp.log" &
pids+=($!)
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

# One changed route: time until every proxy has ACKed the new version.
start=$(date +%s%N)
$CTL apply -f "$W/change.yaml" | tail -1
applied=$(date +%s%N)
for _ in $(seq 1 2000); do [ "$(acked)" = "$N" ] && break; done
done_ns=$(date +%s%N)
echo "one changed route: apply answered in $(( (applied - start) / 1000000 )) ms," \
     "all $N proxies ACKed $(( (done_ns - start) / 1000000 )) ms after the apply began" \
     "(polling resolution ~$(( (done_ns - applied) / 1000000 > 0 ? 20 : 0 )) ms)"
grep -h "applied config version 2" "$W"/p*.log | sed "s/.* in //" | sort -n | sed -n "1p;\$p" | tr "\n" " "; echo "(fastest, slowest proxy apply of the change)"
"$W/route_table_benchmark" --benchmark_min_time=0.2 2>/dev/null | grep -E '^BM_' | head -8
