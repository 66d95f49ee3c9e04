#!/usr/bin/env bash
# What gateway policies cost: wrk against one sluice-proxy (one worker)
# on a plain route and on routes with policies, in the same run, rounds
# interleaved; prints each route's median rps and its ratio to the plain
# route's. Also loads CONSUMERS consumers with API keys (default 100000)
# before measuring, and reports the proxy's RSS before and after them and
# how long the control plane took to apply them.
#
#   /plain   no policy
#   /auth    key-auth + acl + headers (the issue's target: >= 0.9x plain)
#   /basic   basic-auth with one user (verifications cached after the first)
#   /jwt     jwt (ES256) with one token repeated (verification cached) and
#            with a new token per request (a signature check each time)
#   /plain on a second listener (port 18085) with a JSON access log to a
#            file: what logging every request costs (the issue's target:
#            >= 0.95x)
#
# Usage: scripts/bench-policies.sh [seconds=5] [connections=50] [rounds=3]
# Loopback only (ports 18080, 18996-18999); needs nginx and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-5}
C=${2:-50}
R=${3:-3}
CONSUMERS=${CONSUMERS:-100000}
W=$(scripts/build-opt.sh)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
start() { setsid "$@" >>"$W/procs.log" 2>&1 & pids+=($!); }

cat > "$W/backend.conf" <<NG
worker_processes 1; daemon off; pid $W/b.pid; error_log $W/b.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:18080 reuseport backlog=4096;
    location / { return 200 "hello world\n"; } } }
NG
start nginx -c "$W/backend.conf"
CTL=("$W/sluicectl" --server 127.0.0.1:18999)
start "$W/sluice-control" --listen 127.0.0.1:18999 --data-dir "$W/data" --log-level warning
for _ in $(seq 1 200); do "${CTL[@]}" get >/dev/null 2>&1 && break; sleep 0.05; done

# An ES256 key, its JWKS, and 200,000 tokens signed with it (python3-jwt).
/usr/bin/python3 - "$W" <<'PY'
import json, sys, time, jwt
from cryptography.hazmat.primitives.asymmetric import ec
w = sys.argv[1]
key = ec.generate_private_key(ec.SECP256R1())
jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
jwk["kid"] = "bench"
open(f"{w}/jwks.json", "w").write(json.dumps({"keys": [jwk]}))
exp = int(time.time()) + 3600
with open(f"{w}/tokens.txt", "w") as out:
    for i in range(200000):
        out.write(jwt.encode({"sub": f"user-{i}", "exp": exp}, key, algorithm="ES256",
                             headers={"kid": "bench"}) + "\n")
PY
cat > "$W/tokens.lua" <<LUA
local tokens = {}
for line in io.lines("$W/tokens.txt") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/jwt", {["authorization"] = "Bearer " .. tokens[i]})
end
LUA
JWKS=$(cat "$W/jwks.json")
cat > "$W/config.yaml" <<YAML
kind: Consumer
name: bench-user
spec:
  groups: [bench]
  keys: [{key: bench-key-0123456789}]
  basic_auth: {username: bench, password: bench-password}
---
kind: Cluster
name: backend
spec:
  endpoints: [{address: 127.0.0.1, port: 18080}]
---
kind: RouteTable
name: bench
spec:
  virtual_hosts:
    - domains: ["*"]
      routes:
        - match: {prefix: /auth}
          route: {cluster: backend}
          policies:
            - {name: key-auth, typed_config: {}}
            - {name: acl, typed_config: {allow: [bench]}}
            - name: headers
              typed_config:
                request: {set: [{name: x-gateway, value: sluice}]}
                response: {add: [{name: x-served-by, value: sluice}]}
        - match: {prefix: /basic}
          route: {cluster: backend}
          policies: [{name: basic-auth, typed_config: {}}]
        - match: {prefix: /jwt}
          route: {cluster: backend}
          policies: [{name: jwt, typed_config: {algorithms: [ES256], jwks: '$JWKS'}}]
        - match: {prefix: /}
          route: {cluster: backend}
---
kind: Listener
name: bench
spec: {address: 127.0.0.1, port: 18083, route_table: bench}
---
kind: Listener
name: logged
spec: {address: 127.0.0.1, port: 18085, route_table: bench, access_log: {path: ${ACCESS_LOG:-$W/access.log}}}
YAML
"${CTL[@]}" apply -f "$W/config.yaml" >/dev/null
start "$W/sluice-proxy" --control-plane 127.0.0.1:18999 --node-id bench --workers 1 \
  --admin 127.0.0.1:18998 --log-level warning
for _ in $(seq 1 200); do
  curl -fsS -o /dev/null http://127.0.0.1:18083/plain 2>/dev/null && break; sleep 0.05
done
proxy_pid=$(pgrep -f "$W/sluice-proxy" | head -1)
rss() { awk '/^VmRSS/{print $2}' "/proc/$proxy_pid/status"; }

if [ "$CONSUMERS" -gt 0 ]; then
  rss_before=$(rss)
  awk -v n="$CONSUMERS" 'BEGIN { for (i = 0; i < n; i++)
    printf "---\nkind: Consumer\nname: c%d\nspec: {groups: [g%d], keys: [{key: key-%08d-abcdef}]}\n", i, i % 100, i }' \
    > "$W/consumers.yaml"
  t0=$(date +%s.%N)
  "${CTL[@]}" apply -f "$W/consumers.yaml" >/dev/null
  t1=$(date +%s.%N)
  version=$("${CTL[@]}" get -o json 2>/dev/null | grep -o '"version": *"*[0-9]*' | head -1 | grep -o '[0-9]*$' || true)
  # Wait until the proxy knows the last consumer's key.
  key=$(printf 'key-%08d-abcdef' $((CONSUMERS - 1)))
  for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "apikey: $key" http://127.0.0.1:18083/auth)" = 403 ] && break
    sleep 0.1
  done
  t2=$(date +%s.%N)
  rss_after=$(rss)
  # One more consumer: pushed alone (per-resource discovery); time until it works.
  printf 'kind: Consumer\nname: late\nspec: {groups: [bench], keys: [{key: late-key-0123456789}]}\n' > "$W/late.yaml"
  t3=$(date +%s.%N)
  "${CTL[@]}" apply -f "$W/late.yaml" >/dev/null
  for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'apikey: late-key-0123456789' http://127.0.0.1:18083/auth)" = 200 ] && break
    sleep 0.01
  done
  t4=$(date +%s.%N)
  echo "# $CONSUMERS consumers: apply $(echo "$t1 - $t0" | bc) s, on the proxy after $(echo "$t2 - $t0" | bc) s;" \
    "proxy RSS ${rss_before} -> ${rss_after} KiB; one more consumer usable after $(echo "$t4 - $t3" | bc) s"
fi

run() {  # route, extra wrk args...
  local path=$1; shift
  local port=18083
  if [ "$path" = /logged ]; then port=18085; path=/plain; fi
  wrk -t1 -c"$C" -d"${D}s" "$@" "http://127.0.0.1:$port$path" 2>&1 |
    awk '/^Requests\/sec/{print int($2)} /Non-2xx/{print "NON2XX " $0 > "/dev/stderr"}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > "$W/plain"; : > "$W/auth"; : > "$W/basic"; : > "$W/logged"; : > "$W/jwt"; : > "$W/jwtnew"
TOKEN=$(head -1 "$W/tokens.txt")
for _ in $(seq 1 "$R"); do
  run /jwt -H "authorization: Bearer $TOKEN" >> "$W/jwt"
  run /jwt -s "$W/tokens.lua" >> "$W/jwtnew"
  run /plain >> "$W/plain"
  run /logged >> "$W/logged"
  run /auth -H 'apikey: bench-key-0123456789' >> "$W/auth"
  run /basic -H "authorization: Basic $(printf bench:bench-password | base64)" >> "$W/basic"
done
p=$(median < "$W/plain"); a=$(median < "$W/auth"); b=$(median < "$W/basic")
l=$(median < "$W/logged"); j=$(median < "$W/jwt"); jn=$(median < "$W/jwtnew")
echo "# seconds=$D connections=$C rounds=$R (median rps, one worker)"
printf '%-40s %10s %8s\n' route rps ratio
printf '%-40s %10s %8s\n' "/plain (no policy)" "$p" 1.00
printf '%-40s %10s %8s\n' "/auth (key-auth + acl + headers)" "$a" "$(echo "scale=2; $a / $p" | bc)"
printf '%-40s %10s %8s\n' "/basic (basic-auth, cached)" "$b" "$(echo "scale=2; $b / $p" | bc)"
printf '%-40s %10s %8s\n' "/plain with the access log on" "$l" "$(echo "scale=2; $l / $p" | bc)"
printf '%-40s %10s %8s\n' "/jwt ES256, one token (cached)" "$j" "$(echo "scale=2; $j / $p" | bc)"
printf '%-40s %10s %8s\n' "/jwt ES256, a new token per request" "$jn" "$(echo "scale=2; $jn / $p" | bc)"
[ -f "$W/access.log" ] && echo "# access log lines written: $(wc -l < "$W/access.log")"
