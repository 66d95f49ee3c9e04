#!/usr/bin/env bash
# What rate-limit `scope: FLEET` costs the control plane. Starts sluice-control
# and N sluice-proxy processes (1 worker each, traffic reports off, the default
# --rate-limit-report-interval of 200 ms), each serving its own listener
# (node_groups [gI], --group gI) with one direct_response route limited to
# LIMIT a SECOND per client IP (one key: all the load comes from 127.0.0.1).
# One client process sends RATE keep-alive requests a second to every proxy;
# after WARMUP seconds it samples the control plane's CPU time (utime+stime of
# /proc/PID/stat, all threads) over the window and prints CPU % of one core,
# CPU microseconds per report (reports estimated as proxies x 5 a second), RSS
# and threads. First with scope LOCAL (no reports: the baseline), then FLEET,
# fresh processes each; "net" is FLEET minus LOCAL.
# Usage: [RATE=20] [LIMIT=1000] [WARMUP=3] [BASE_PORT=19100] [KEY=CLIENT_IP|ROUTE]
#        scripts/bench-fleet.sh [proxies=50] [seconds=20]
# Ports: control plane BASE_PORT-1, listeners BASE_PORT+i, admins BASE_PORT+200+i.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50}
SECONDS_=${2:-20}
RATE=${RATE:-20}
LIMIT=${LIMIT:-1000}
WARMUP=${WARMUP:-3}
BASE=${BASE_PORT:-19100}
KEY=${KEY:-CLIENT_IP}
if ! [[ $N =~ ^[0-9]+$ ]] || ((N < 1 || N > 200)); then echo "proxies must be 1..200" >&2; exit 2; fi
if ! [[ $SECONDS_ =~ ^[0-9]+$ ]] || ((SECONDS_ < 1)); then echo "seconds must be >= 1" >&2; exit 2; fi
CP_PORT=$((BASE - 1))
ulimit -n 65536 2>/dev/null || true

W=$(scripts/build-opt.sh)

pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Give them a moment to drain, then make sure.
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() { stop_all; rm -rf "$W"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$CP_PORT" $(seq "$BASE" $((BASE + N - 1))) $(seq $((BASE + 200)) $((BASE + 200 + N - 1))); do
  if port_busy "$p"; then echo "port $p is in use; set BASE_PORT" >&2; exit 1; fi
done

# The client: RATE requests a second to each port, keep-alive, paced in one
# thread. Prints one line when the window is measured.
cat > "$W/load.py" <<'PY'
import http.client, json, os, sys, time
cp_pid, warmup, window, rate = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
proxy_pids = [int(p) for p in sys.argv[5].split(",")]
ports = [int(p) for p in sys.argv[6:]]
tick = os.sysconf("SC_CLK_TCK")

def cpu(pid):  # utime + stime, seconds, all threads
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])

conns = [None] * len(ports)
codes = {}
def get(i):
    for _ in range(2):
        try:
            if conns[i] is None:
                conns[i] = http.client.HTTPConnection("127.0.0.1", ports[i], timeout=5)
            conns[i].request("GET", "/bench")
            r = conns[i].getresponse()
            r.read()
            return r.status
        except Exception:
            if conns[i] is not None:
                conns[i].close()
            conns[i] = None
    return "error"

every = 1.0 / (rate * len(ports))
start = time.monotonic()
window_start = start + warmup
end = window_start + window
measuring = False
n = 0
lag_max = 0.0
while True:
    at = start + n * every
    now = time.monotonic()
    if at > now:
        time.sleep(at - now)
    elif at < now - 1.0:  # more than a second behind: drop the backlog, do not burst
        n = int((now - start) / every)
        continue
    now = time.monotonic()
    if not measuring and now >= window_start:
        measuring = True
        codes = {}
        t0, c0 = time.monotonic(), cpu(cp_pid)
        p0 = sum(cpu(p) for p in proxy_pids)
    if now >= end:
        break
    if measuring:
        lag_max = max(lag_max, now - at)
    s = get(n % len(ports))
    if measuring:
        codes[str(s)] = codes.get(str(s), 0) + 1
    n += 1
t1, c1 = time.monotonic(), cpu(cp_pid)
p1 = sum(cpu(p) for p in proxy_pids)
print(json.dumps({"wall": t1 - t0, "cp_cpu": c1 - c0, "proxies_cpu": p1 - p0,
                  "rss_kib": status(cp_pid, "VmRSS"), "threads": status(cp_pid, "Threads"),
                  "codes": codes, "lag_max": lag_max}), flush=True)
PY

config() { # scope
  printf 'kind: RouteTable\nname: bench\nspec:\n  virtual_hosts:\n    - domains: ["*"]\n'
  printf '      routes:\n        - match: {prefix: /}\n          direct_response: {status: 200, body: "ok\\n"}\n'
  printf '          policies:\n            - name: rate-limit\n'
  printf '              typed_config: {limits: [{requests: %d, per: SECOND}], key: [%s], scope: %s}\n' \
    "$LIMIT" "$KEY" "$1"
  for ((i = 0; i < N; i++)); do
    printf -- '---\nkind: Listener\nname: l%d\nspec: {address: 127.0.0.1, port: %d, route_table: bench, node_groups: [g%d]}\n' \
      "$i" $((BASE + i)) "$i"
  done
}

# Waits until cond (a command) succeeds, at most $1 seconds.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}
ready_version() { curl -s -m 2 "http://127.0.0.1:$1/ready" | grep -q "version $2\b"; }
all_ready() { # version
  local i
  for ((i = 0; i < N; i++)); do ready_version $((BASE + 200 + i)) "$1" || return 1; done
}

run() { # scope -> RESULT="scope {json}"
  local scope=$1 cp version proxy_pids=() t0=$SECONDS
  rm -rf "$W/data" "$W/state"; mkdir -p "$W/state"
  "$W/sluice-control" --listen "127.0.0.1:$CP_PORT" --data-dir "$W/data" --log-level warning \
    >/dev/null 2>"$W/control.log" & cp=$!; pids+=("$cp")
  wait_for 30 "$W/sluicectl" --server "127.0.0.1:$CP_PORT" get ||
    { echo "sluice-control not answering after 30 s" >&2; cat "$W/control.log" >&2; exit 1; }
  config "$scope" > "$W/config.yaml"
  version=$("$W/sluicectl" --server "127.0.0.1:$CP_PORT" apply -f "$W/config.yaml" |
    sed -n 's/^applied: version \([0-9]*\).*/\1/p')
  [ -n "$version" ] || { echo "apply did not make a new version" >&2; exit 1; }
  for ((i = 0; i < N; i++)); do
    "$W/sluice-proxy" --control-plane "127.0.0.1:$CP_PORT" --node-id "fleet-$i" --group "g$i" \
      --workers 1 --admin "127.0.0.1:$((BASE + 200 + i))" --state-dir "$W/state/$i" \
      --report-interval 0 --rate-limit-report-interval 200ms --log-level warning \
      >/dev/null 2>>"$W/proxies.log" & pids+=($!); proxy_pids+=($!)
  done
  wait_for $((60 + N)) all_ready "$version" ||
    { echo "not every proxy reached version $version within $((60 + N)) s" >&2; tail -20 "$W/proxies.log" >&2; exit 1; }
  echo "# $scope: $N proxies at version $version after $((SECONDS - t0)) s; measuring" >&2
  local pid_list
  pid_list=$(IFS=,; echo "${proxy_pids[*]}")
  # In the background and waited for, so that a signal stops the run at once.
  /usr/bin/python3 "$W/load.py" "$cp" "$WARMUP" "$SECONDS_" "$RATE" "$pid_list" \
    $(seq "$BASE" $((BASE + N - 1))) > "$W/result.json" & pids+=($!)
  wait $! || { echo "the client failed" >&2; exit 1; }
  RESULT="$scope $(cat "$W/result.json")"
  stop_all
}

echo "# $N proxies (1 worker each), $RATE req/s to each (keep-alive), rate-limit $LIMIT/SECOND key [$KEY]," \
  "report interval 200 ms, ${WARMUP}s warm-up, ${SECONDS_}s window; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
run LOCAL; local_line=$RESULT
run FLEET; fleet_line=$RESULT
/usr/bin/python3 - "$N" "$local_line" "$fleet_line" <<'PY'
import json, sys
n = int(sys.argv[1])
rows = {}
for arg in sys.argv[2:]:
    scope, js = arg.split(" ", 1)
    rows[scope] = json.loads(js)
print(f"{'scope':<6} {'proxies':>7} {'reports/s':>9} {'cp CPU %':>8} {'us/report':>9} "
      f"{'cp RSS MiB':>10} {'threads':>7} {'proxy CPU % (avg)':>17}  responses in window")
for scope in ("LOCAL", "FLEET"):
    r = rows[scope]
    reports = n * 5 if scope == "FLEET" else 0
    pct = 100 * r["cp_cpu"] / r["wall"]
    per = f"{1e6 * r['cp_cpu'] / (reports * r['wall']):.1f}" if reports else "-"
    print(f"{scope:<6} {n:>7} {reports:>9} {pct:>8.2f} {per:>9} {r['rss_kib'] / 1024:>10.1f} "
          f"{r['threads']:>7} {100 * r['proxies_cpu'] / r['wall'] / n:>17.2f}  "
          f"{' '.join(f'{k}:{v}' for k, v in sorted(r['codes'].items()))} (client max lag {r['lag_max'] * 1000:.0f} ms)")
l, f = rows["LOCAL"], rows["FLEET"]
net = f["cp_cpu"] / f["wall"] - l["cp_cpu"] / l["wall"]
print(f"net    FLEET - LOCAL: {100 * net:.2f} % of one core, {1e6 * net / (n * 5):.1f} CPU us per report, "
      f"RSS {(f['rss_kib'] - l['rss_kib']) / 1024:+.1f} MiB, threads {f['threads'] - l['threads']:+d}")
PY
