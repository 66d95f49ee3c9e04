#!/usr/bin/env bash
# Throughput benchmark: builds with -c opt, then runs ../shared/bench/peers.sh
# with sluice-proxy (one worker) in front of the same backend as nginx and
# HAProxy. Usage: [MODE=http1|https|https-close|h2|h2c] scripts/bench.sh [seconds=5]
# [connections=50] [rounds=3]. In the TLS modes peers.sh hands the gateway a
# certificate (BENCH_CERT, BENCH_KEY): it is applied as a Secret and the
# listener terminates TLS with it.
# POLICIES (a YAML flow list) puts policies on the benchmark route, e.g.
#   POLICIES='[{name: rate-limit, typed_config: {limits: [{requests: 1000000, per: SECOND}], key: [CLIENT_IP]}}]'
# PROXY_ARGS go on sluice-proxy's command line, e.g. PROXY_ARGS='--cpu-affinity auto'
# (the peers run unpinned: report such a run next to the default one), or
# PROXY_ARGS='--yield-to-local-peers off' (the proxy yields to its local peers by default).
# CACHE=1 is short for the cache policy with a 60 s TTL: after the first
# request every request is a hit (the backend sends no Cache-Control).
set -euo pipefail
if [ "${CACHE:-0}" = 1 ]; then POLICIES='[{name: cache, typed_config: {default_ttl: 60s}}]'; fi
POLICIES=${POLICIES:-}
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=$(scripts/build-opt.sh)
cat > "$BIN/bench.yaml" <<YAML
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
      routes: [{match: {prefix: /}, route: {cluster: backend}${POLICIES:+, policies: $POLICIES}}]
YAML
cat > "$BIN/gateway.sh" <<GW
#!/usr/bin/env bash
# Started by peers.sh in its own process group; everything dies with it.
trap 'kill 0' EXIT
cp "$BIN/bench.yaml" "$BIN/run.yaml"
if [ -n "\${BENCH_CERT:-}" ]; then
  { printf -- '---\nkind: Secret\nname: bench-cert\nspec:\n  tls_certificate:\n    certificate_chain: |\n'
    sed 's/^/      /' "\$BENCH_CERT"
    printf '    private_key: |\n'
    sed 's/^/      /' "\$BENCH_KEY"
    printf -- '---\nkind: Listener\nname: bench\nspec: {address: 127.0.0.1, port: 18083, route_table: bench, tls: {certificates: [bench-cert]}}\n'
  } >> "$BIN/run.yaml"
else
  printf -- '---\nkind: Listener\nname: bench\nspec: {address: 127.0.0.1, port: 18083, route_table: bench}\n' >> "$BIN/run.yaml"
fi
"$BIN/sluice-control" --listen 127.0.0.1:18999 --data-dir "$BIN/data" --log-level warning &
for _ in \$(seq 1 100); do "$BIN/sluicectl" --server 127.0.0.1:18999 get >/dev/null 2>&1 && break; sleep 0.05; done
"$BIN/sluicectl" --server 127.0.0.1:18999 apply -f "$BIN/run.yaml" >/dev/null
"$BIN/sluice-proxy" --control-plane 127.0.0.1:18999 --node-id bench --workers 1 \
  --admin 127.0.0.1:18998 --log-level warning ${PROXY_ARGS:-} &
wait
GW
chmod +x "$BIN/gateway.sh"
GATEWAY_CMD="$BIN/gateway.sh" bash "$ROOT/../shared/bench/peers.sh" "$@"
rm -rf "$BIN"
