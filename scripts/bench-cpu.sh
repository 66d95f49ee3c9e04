#!/usr/bin/env bash
# CPU per request: sluice-proxy (one worker) and HAProxy (one thread) in
# front of the same nginx backend, under the load peers.sh gives (wrk -t1
# -c50 keep-alive; h2load -t1 -c50 -m10 for h2 and h2c), rounds alternating.
# For each run it prints the rps and the CPU microseconds per request of the
# proxy (user, system), the backend and the load generator, and how idle the
# machine's CPUs were. Rps on a small machine depends on where the scheduler
# puts three busy processes; CPU per request is the proxy's own cost. The
# last column is the rps the three would reach with no CPU idle (the CPUs
# divided by their microseconds per request together): the most a proxy's
# lower cost can give here, whatever the scheduler does.
# Usage: [MODE=http1|https|h2|h2c] scripts/bench-cpu.sh [seconds=5] [rounds=3]
# PROXY_ARGS go on sluice-proxy's command line, e.g. PROXY_ARGS='--io-uring off'.
# UPSTREAM_CLOSE=1: the backend closes its connection after every response
# (nginx's keepalive_requests 1), so each request opens a new upstream
# connection: what connection setup costs each proxy. CLIENT_CLOSE=1 (http1,
# https): wrk sends Connection: close, a new client connection per request.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-5}; R=${2:-3}; MODE=${MODE:-http1}
case $MODE in
  http1) SCHEME=http; HA_BIND="" ;;
  h2c) SCHEME=http; HA_BIND="proto h2" ;;
  https) SCHEME=https; HA_BIND="ssl crt @CERT@ alpn http/1.1" ;;
  h2) SCHEME=https; HA_BIND="ssl crt @CERT@ alpn h2,http/1.1" ;;
  *) echo "unknown MODE=$MODE (http1, https, h2, h2c)" >&2; exit 2 ;;
esac
W=$(scripts/build-opt.sh)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
start() { setsid "$@" >>"$W/procs.log" 2>&1 & pids+=($!); }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
cat "$W/cert.pem" "$W/key.pem" > "$W/combined.pem"
KEEPALIVE_REQUESTS=1000000
[ "${UPSTREAM_CLOSE:-0}" = 1 ] && KEEPALIVE_REQUESTS=1
WRK_ARGS=()
[ "${CLIENT_CLOSE:-0}" = 1 ] && WRK_ARGS=(-H 'Connection: close')
cat > "$W/backend.conf" <<NG
worker_processes 1; daemon off; pid $W/b.pid; error_log $W/b.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests $KEEPALIVE_REQUESTS;
  server { listen 127.0.0.1:18280 reuseport backlog=4096;
    location / { return 200 "hello world\n"; } } }
NG
cat > "$W/haproxy.cfg" <<HA
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:18282 ${HA_BIND//@CERT@/$W/combined.pem}
  default_backend be
backend be
  server s1 127.0.0.1:18280
HA
{ printf 'kind: Cluster\nname: backend\nspec: {endpoints: [{address: 127.0.0.1, port: 18280}]}\n'
  printf -- '---\nkind: RouteTable\nname: bench\nspec:\n  virtual_hosts: [{domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}]\n'
  if [ "$SCHEME" = https ]; then
    printf -- '---\nkind: Secret\nname: bench-cert\nspec:\n  tls_certificate:\n    certificate_chain: |\n'
    sed 's/^/      /' "$W/cert.pem"; printf '    private_key: |\n'; sed 's/^/      /' "$W/key.pem"
    printf -- '---\nkind: Listener\nname: bench\nspec: {address: 127.0.0.1, port: 18283, route_table: bench, tls: {certificates: [bench-cert]}}\n'
  else
    printf -- '---\nkind: Listener\nname: bench\nspec: {address: 127.0.0.1, port: 18283, route_table: bench}\n'
  fi
} > "$W/bench.yaml"

start nginx -c "$W/backend.conf"; BACKEND_MASTER=${pids[-1]}
start haproxy -f "$W/haproxy.cfg" -db; HAPROXY=${pids[-1]}
start "$W/sluice-control" --listen 127.0.0.1:18299 --data-dir "$W/data" --log-level warning
for _ in $(seq 1 100); do "$W/sluicectl" --server 127.0.0.1:18299 get >/dev/null 2>&1 && break; sleep 0.05; done
"$W/sluicectl" --server 127.0.0.1:18299 apply -f "$W/bench.yaml" >/dev/null
start "$W/sluice-proxy" --control-plane 127.0.0.1:18299 --node-id bench-cpu --workers 1 \
  --admin 127.0.0.1:18298 --log-level warning ${PROXY_ARGS:-}; SLUICE=${pids[-1]}
answers() { # port: does it answer in this mode? (the backend speaks HTTP/1.1 only)
  if [ "$1" != 18280 ] && { [ "$MODE" = h2 ] || [ "$MODE" = h2c ]; }; then
    h2load -n1 -c1 "$SCHEME://127.0.0.1:$1/" 2>/dev/null | grep -q '1 succeeded'
  elif [ "$1" = 18280 ]; then
    curl -s -o /dev/null "http://127.0.0.1:$1/"
  else
    curl -sk -o /dev/null "$SCHEME://127.0.0.1:$1/"
  fi
}
for port in 18280 18282 18283; do
  for _ in $(seq 1 100); do answers "$port" && break; sleep 0.1; done
  answers "$port" || { echo "port $port never answered" >&2; cat "$W/procs.log" >&2; exit 1; }
done
BACKEND=$(pgrep -P "$BACKEND_MASTER" | head -1)  # nginx's worker

ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }  # user, system (clock ticks, all threads)
cpu_total() { awk '/^cpu /{print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat; }
run() { # name pid port
  local p0 b0 c0 p1 b1 c1 out n rps load
  p0=$(ticks "$2"); b0=$(ticks "$BACKEND"); c0=$(cpu_total)
  if [ "$MODE" = h2 ] || [ "$MODE" = h2c ]; then
    out=$( { /usr/bin/time -f "LOAD %U %S" h2load -t1 -c50 -m10 -D"$D" "$SCHEME://127.0.0.1:$3/"; } 2>&1)
    n=$(echo "$out" | awk '/^requests:/{print $8}')
    rps=$(echo "$out" | awk '/^finished in/{for(i=1;i<=NF;i++) if($i ~ /req\/s/) print $(i-1)}')
  else
    out=$( { /usr/bin/time -f "LOAD %U %S" wrk -t1 -c50 -d"${D}s" "${WRK_ARGS[@]}" \
      "$SCHEME://127.0.0.1:$3/"; } 2>&1)
    n=$(echo "$out" | awk '/requests in/{print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  fi
  p1=$(ticks "$2"); b1=$(ticks "$BACKEND"); c1=$(cpu_total)
  load=$(echo "$out" | awk '/^LOAD/{print $2, $3}')
  awk -v name="$1" -v n="$n" -v rps="$rps" -v p0="$p0" -v p1="$p1" -v b0="$b0" -v b1="$b1" \
      -v c0="$c0" -v c1="$c1" -v load="$load" -v hz="$(getconf CLK_TCK)" \
      -v cpus="$(nproc)" 'BEGIN {
    split(p0, a); split(p1, b); split(b0, c); split(b1, d); split(c0, e); split(c1, f); split(load, l)
    us = 1e6 / hz / n
    proxy = (b[1]-a[1]+b[2]-a[2])*us; backend = (d[1]-c[1]+d[2]-c[2])*us; gen = (l[1]+l[2])*1e6/n
    printf "%-8s rps=%-9.0f proxy us/req: user %.2f sys %.2f total %.2f | backend %.2f",
      name, rps, (b[1]-a[1])*us, (b[2]-a[2])*us, proxy, backend
    printf " | load generator %.2f | idle %.1f%% | no CPU idle: %.0f rps\n",
      gen, 100*(f[1]-e[1])/(f[2]-e[2]), cpus * 1e6 / (proxy + backend + gen) }'
}
echo "# mode=$MODE seconds=$D rounds=$R upstream_close=${UPSTREAM_CLOSE:-0}" \
  "client_close=${CLIENT_CLOSE:-0}:" \
  "CPU microseconds per request (one worker / one thread)"
for _ in $(seq 1 "$R"); do
  run haproxy "$HAPROXY" 18282
  run gateway "$SLUICE" 18283
done
