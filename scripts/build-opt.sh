#!/usr/bin/env bash
# For the benchmark scripts: installs what they need, builds sluice-control,
# sluicectl and sluice-proxy (and the extra targets given, e.g.
# //tests/tools:discovery_sim) with --config=opt, copies the binaries into a
# new temporary directory and prints its path. The copies stay put while a
# later bazel build replaces bazel-bin's. Build errors go to stderr.
# Usage: W=$(scripts/build-opt.sh [//extra:target ...])
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >&2
targets=(//controlplane/server:sluice-control //controlplane/cli:sluicectl
         //dataplane/server:sluice-proxy "$@")
bazel build --config=opt "${targets[@]}" >/dev/null 2>&1 || bazel build --config=opt "${targets[@]}" >&2
dir=$(mktemp -d)
for t in "${targets[@]}"; do
  package=${t#//}; package=${package%%:*}
  cp "bazel-bin/$package/${t##*:}" "$dir/"
done
echo "$dir"
