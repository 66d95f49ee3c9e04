#!/usr/bin/env bash
# Starts the whole picture on this machine: sluice-control with a data dir
# under the working copy, two sluice-proxy replicas, three small demo
# upstreams; applies examples/quickstart.yaml and prints what to try.
# Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
scripts/install-deps.sh
echo "quickstart: building (the first build takes several minutes)..."
mkdir -p "$ROOT/.quickstart"
# A failed build stops here: stale binaries from an earlier build would run.
if ! bazel build //controlplane/server:sluice-control //controlplane/cli:sluicectl \
    //dataplane/server:sluice-proxy //tests/harness:upstream_server \
    >"$ROOT/.quickstart/build.log" 2>&1; then
  grep -E 'ERROR|error:' "$ROOT/.quickstart/build.log" >&2 || tail -20 "$ROOT/.quickstart/build.log" >&2
  echo "quickstart: the build failed (all of it in .quickstart/build.log)" >&2
  exit 1
fi

# Something else on our ports would answer in our place: refuse to start.
for port in 18000 8080 9001 9002 9003 9901 9902; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "quickstart: port $port is already in use (another quickstart, or another service);" \
         "stop it first" >&2
    exit 1
  fi
done
# The README tour's later listeners: a taken one would only show as the
# proxies' NACK, so say it now.
for port in 8443 8090 8081 8082; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "quickstart: note: port $port is in use; the README's listener on it will be refused" \
         "(sluicectl proxies shows the NACK)" >&2
  fi
done

BIN=$ROOT/bazel-bin
RUN=$ROOT/.quickstart
mkdir -p "$RUN"
pids=()
cleanup() {
  local rc=$?  # the script's status, or 128 + the signal's number
  trap - EXIT INT TERM HUP  # once: Ctrl-C then the exit would run it twice
  set +e  # a closed terminal fails the echo: the processes must still stop
  echo; echo "stopping..."
  for p in "${pids[@]}" ${sleeper:+"$sleeper"}; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT INT TERM HUP

start() { # name, command...
  local name=$1; shift
  "$@" >"$RUN/$name.log" 2>&1 &
  pids+=($!)
}
wait_for() { # url: until it answers 2xx (a proxy without config answers /ready 503)
  for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "quickstart: $1 did not come up; see $RUN/*.log" >&2; exit 1
}

start control "$BIN/controlplane/server/sluice-control" --listen 127.0.0.1:18000 \
  --data-dir "$ROOT/sluice-data"
for i in 1 2 3; do
  start "upstream-900$i" "$BIN/tests/harness/upstream_server" --port "900$i" --name "upstream-900$i"
done
export SLUICE_SERVER=127.0.0.1:18000
for _ in $(seq 1 100); do "$BIN/controlplane/cli/sluicectl" get >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN/controlplane/cli/sluicectl" apply -f examples/quickstart.yaml

start proxy-a "$BIN/dataplane/server/sluice-proxy" --control-plane 127.0.0.1:18000 \
  --node-id proxy-a --group quickstart --admin 127.0.0.1:9901 --state-dir "$RUN/proxy-a"
start proxy-b "$BIN/dataplane/server/sluice-proxy" --control-plane 127.0.0.1:18000 \
  --node-id proxy-b --group quickstart --admin 127.0.0.1:9902 --state-dir "$RUN/proxy-b"
wait_for http://127.0.0.1:9901/ready
wait_for http://127.0.0.1:9902/ready
# Everything started must still be running (a process that exited found
# its port or directory taken).
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[$i]}" 2>/dev/null; then
    echo "quickstart: a process it started has exited; see $RUN/*.log" >&2
    exit 1
  fi
done

cat <<MSG

Sluice is running (logs in $RUN/).
  control plane  127.0.0.1:18000   (export SLUICE_SERVER=127.0.0.1:18000)
  proxy-a        admin http://127.0.0.1:9901
  proxy-b        admin http://127.0.0.1:9902
  listener       http://127.0.0.1:8080   (both replicas share it: the kernel
                                          spreads connections, SO_REUSEPORT)
  upstreams      127.0.0.1:9001 9002 9003

Try:
  curl -i http://127.0.0.1:8080/users/1        # round robin over 9001 and 9002
  curl -i http://127.0.0.1:8080/orders          # least request over 9003
  curl -i http://127.0.0.1:8080/healthz         # a direct response
  $BIN/controlplane/cli/sluicectl get
  $BIN/controlplane/cli/sluicectl proxies
  curl -s http://127.0.0.1:9901/stats | head
Ctrl-C stops everything.
MSG
# `wait` returns at once when a trapped signal comes (a foreground `sleep`
# would hold the trap back until it ends): `kill` of this script, not only
# Ctrl-C, stops everything now.
while true; do sleep 3600 & sleeper=$!; wait "$sleeper" || true; done
