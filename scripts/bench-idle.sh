#!/usr/bin/env bash
# Memory per idle connection: N keep-alive connections (each has had one
# request answered) held open to sluice-proxy (one worker) and to HAProxy
# (one thread), plain HTTP/1.1, TLS and HTTP/2 (h2c with prior knowledge);
# prints the RSS growth per connection. The request is a GET with Host
# alone; IDLE_HEADERS=browser adds the 14 other fields a browser sends
# (scripts/idle_clients.py), which a server that keeps a request's storage
# while idle pays for.
# Usage: [IDLE_HEADERS=browser] scripts/bench-idle.sh [connections=10000]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
ulimit -n $((N * 4 + 1000)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# HAProxy wants two descriptors per connection (maxconn): within the limit.
if [ "$(ulimit -n)" != unlimited ] && [ $((N * 2 + 1000)) -gt "$(ulimit -n)" ]; then
  N=$((($(ulimit -n) - 1000) / 2))
  echo "# the descriptor limit is $(ulimit -n): $N connections each" >&2
fi
W=$(scripts/build-opt.sh)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
cat "$W/cert.pem" "$W/key.pem" > "$W/combined.pem"
{ printf 'kind: RouteTable\nname: idle\nspec:\n  virtual_hosts: [{domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200, body: ok}}]}]\n'
  printf -- '---\nkind: Secret\nname: idle-cert\nspec:\n  tls_certificate:\n    certificate_chain: |\n'
  sed 's/^/      /' "$W/cert.pem"; printf '    private_key: |\n'; sed 's/^/      /' "$W/key.pem"
  printf -- '---\nkind: Listener\nname: plain\nspec: {address: 127.0.0.1, port: 18183, route_table: idle}\n'
  printf -- '---\nkind: Listener\nname: tls\nspec: {address: 127.0.0.1, port: 18184, route_table: idle, tls: {certificates: [idle-cert]}}\n'
} > "$W/idle.yaml"
cat > "$W/haproxy.cfg" <<HA
global
  nbthread 1
  maxconn $((N + 100))
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 30s
  timeout http-keep-alive 300s
frontend plain
  bind 127.0.0.1:18185
  http-request return status 200 content-type text/plain string ok
frontend tls
  bind 127.0.0.1:18186 ssl crt $W/combined.pem alpn http/1.1
  http-request return status 200 content-type text/plain string ok
frontend h2c
  bind 127.0.0.1:18187 proto h2
  http-request return status 200 content-type text/plain string ok
HA
"$W/sluice-control" --listen 127.0.0.1:18199 --data-dir "$W/data" --log-level warning & pids+=($!)
for _ in $(seq 1 100); do "$W/sluicectl" --server 127.0.0.1:18199 get >/dev/null 2>&1 && break; sleep 0.05; done
"$W/sluicectl" --server 127.0.0.1:18199 apply -f "$W/idle.yaml" >/dev/null
# Each measurement gets fresh processes: memory freed by an earlier one would
# be reused and hide what the next one costs.
start_sluice() {
  # --max-connections: the default, half the descriptor limit, is under N
  # where the hard limit is 20000.
  "$W/sluice-proxy" --control-plane 127.0.0.1:18199 --node-id idle --workers 1 \
    --admin 127.0.0.1:18198 --log-level warning --max-connections $((N + 100)) & pids+=($!); SLUICE=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:18183/ && break; sleep 0.1; done
}
start_haproxy() {
  haproxy -f "$W/haproxy.cfg" -db >/dev/null 2>&1 & pids+=($!); HAPROXY=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:18185/ && break; sleep 0.1; done
}
stop() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null || true; }
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
measure() { # name pid port [tls]
  local before after ready
  before=$(rss "$2")
  coproc CLIENTS { /usr/bin/python3 scripts/idle_clients.py "$3" "$N" ${4:-}; }
  read -r ready <&"${CLIENTS[0]}"
  after=$(rss "$2")
  printf '%-16s %s: RSS %d KiB -> %d KiB, %.2f KiB per idle connection\n' "$1" "$ready" \
    "$before" "$after" "$(awk -v a="$after" -v b="$before" -v n="$N" 'BEGIN{print (a-b)/n}')"
  exec {CLIENTS[1]}>&-
  wait "$CLIENTS_PID" 2>/dev/null || true
}
echo "# $N idle keep-alive connections each (one worker / one thread), fresh processes each"
for mode in http1 https h2c; do
  case $mode in http1) sp=18183 hp=18185 arg="" ;; https) sp=18184 hp=18186 arg=tls ;; h2c) sp=18183 hp=18187 arg=h2c ;; esac
  start_sluice; measure "sluice $mode" "$SLUICE" "$sp" $arg; stop "$SLUICE"
  start_haproxy; measure "haproxy $mode" "$HAPROXY" "$hp" $arg; stop "$HAPROXY"
done
