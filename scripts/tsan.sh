#!/usr/bin/env bash
# Runs tests under ThreadSanitizer and prints the data races in Sluice's own
# code. Usage: scripts/tsan.sh [bazel test targets]
#   (default: //tests/integration/... //tests/dataplane/...)
# Builds with --config=tsan in an output base of its own ($TSAN_DIR, default
# /tmp/sluice-tsan: the normal build's cache is left alone), preloads
# tests/tsan/absl_tsan_shim.cc into every process the tests start so TSan
# sees absl::Mutex, and groups the reports with tests/tsan/tsan_reports.py.
# Exit status: 1 if a race in Sluice code was reported, else 0. Test results
# are printed but do not count: under TSan the processes run 5-15x slower
# and use more memory, so tests with timing or RSS bounds may fail.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${TSAN_DIR:-/tmp/sluice-tsan}
logs=$dir/logs
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(//tests/integration/... //tests/dataplane/...)

lib=/usr/lib/x86_64-linux-gnu/libabsl_synchronization.so.20220623
if ! nm -D --defined-only "$lib" 2>/dev/null | grep -q _ZN4absl7debian35Mutex4LockEv; then
  echo "tsan.sh: needs Debian 12's absl ($lib with absl::debian3::Mutex)" >&2
  exit 2
fi
mkdir -p "$dir" && rm -rf "$logs" && mkdir -p "$logs" || exit 2
g++ -std=c++20 -O1 -fPIC -shared -o "$dir/absl_tsan_shim.so" tests/tsan/absl_tsan_shim.cc -ldl ||
  exit 2

# --symlink_prefix=/: no bazel-* links into this output base in the workspace
# (the normal build would then walk them in //... and fail).
bazel --output_base="$dir/output_base" test --config=tsan --keep_going --symlink_prefix=/ \
  --nocache_test_results --test_timeout=300,900,1800,3600 \
  --test_env=TSAN_OPTIONS="log_path=$logs/tsan:exitcode=0:second_deadlock_stack=1:history_size=4" \
  --test_env=LD_PRELOAD="$dir/absl_tsan_shim.so" "${targets[@]}"
echo "tsan.sh: test results above do not count (see the script's header); the races:"
/usr/bin/python3 tests/tsan/tsan_reports.py "$logs"
