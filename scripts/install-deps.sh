#!/usr/bin/env bash
# Installs every Debian package that Sluice's build, tests, quickstart and
# benchmarks need. Idempotent: quiet and quick when everything is there; runs
# apt-get update only when something is missing.
set -euo pipefail

PACKAGES=(
  # build
  bazel-bootstrap bazel-bootstrap-source g++ protobuf-compiler protobuf-compiler-grpc
  # libraries
  libgrpc++-dev libprotobuf-dev libabsl-dev libnghttp2-dev libssl-dev libevent-dev libc-ares-dev
  libre2-dev libyaml-cpp-dev libsimdjson-dev zlib1g-dev
  # sluice-proxy's allocator: gperftools' tcmalloc (libtcmalloc_minimal)
  libgoogle-perftools-dev
  # tests, fuzzers and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev clang libclang-rt-14-dev
  # real peers and clients used by tests, the quickstart and benchmarks
  curl nghttp2-client openssl nginx haproxy wrk python3 python3-websockets python3-grpcio
  prometheus python3-jwt python3-cryptography
  # tests/deploy: the Kubernetes manifests' checks
  python3-yaml
  # sluice-control --store etcd: the etcd cluster its integration tests start
  # (etcd on PATH), etcdctl for looking at the keys by hand
  etcd-server etcd-client
)
# kubectl (`kubectl kustomize`, offline) for tests/deploy: Debian's
# kubernetes-client, unless a kubectl is installed already (another vendor's
# package, e.g. Google Cloud SDK's, also owns /usr/bin/kubectl and the two
# would conflict).
if ! command -v kubectl >/dev/null 2>&1; then
  PACKAGES+=(kubernetes-client)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
