#!/usr/bin/env bash
# Builds a libFuzzer target with clang and runs it for a fixed time on a fresh
# corpus seeded with a few valid inputs (the SEEDS script, sourced, writes them
# with a dictionary and names the libraries to link). Exits non-zero if the
# build fails or the fuzzer finds a crash, leak, sanitizer report or invariant
# violation.
#
# Usage: run_fuzzer.sh SEEDS FUZZER_NAME SECONDS SRC...
#   SRC paths are relative to the source root (the directory holding
#   dataplane/). Under `bazel test` (sh_test) that is the runfiles tree
#   $TEST_SRCDIR/$TEST_WORKSPACE; run by hand it is the repository root.
#   SEEDS is relative to the source root too (tests/fuzz/http1_seeds.sh,
#   tests/fuzz/http2_seeds.sh).
set -euo pipefail

if [[ $# -lt 4 ]]; then
  echo "usage: $0 SEEDS FUZZER_NAME SECONDS SRC..." >&2
  exit 2
fi
seeds_arg="$1"
name="$2"
seconds="$3"
shift 3

root=""
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  root="${TEST_SRCDIR}/${TEST_WORKSPACE:-sluice}"
fi
if [[ -z "${root}" || ! -d "${root}/dataplane" ]]; then
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
fi
if [[ ! -d "${root}/dataplane" ]]; then
  echo "run_fuzzer.sh: cannot find the source root (no dataplane/ in ${root})" >&2
  exit 2
fi

if [[ -n "${TEST_TMPDIR:-}" ]]; then
  work="${TEST_TMPDIR}/${name}"
  rm -rf "${work}"
  mkdir -p "${work}"
else
  work="$(mktemp -d "${TMPDIR:-/tmp}/${name}.XXXXXX")"
fi
corpus="${work}/corpus"
artifacts="${work}/artifacts"
mkdir -p "${corpus}" "${artifacts}"

seeds="${root}/${seeds_arg}"
srcs=()
for src in "$@"; do
  srcs+=("${root}/${src}")
done

# The target's seeds, dictionary and libraries.
# shellcheck source=/dev/null
source "${seeds}"

echo "building ${name} in ${work}"
# -fno-sanitize-recover makes every UBSan report fatal, so it counts as a crash.
clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined \
  -fno-sanitize-recover=all -I"${root}" "${srcs[@]}" -o "${work}/${name}" "${libs[@]}"

echo "fuzzing ${name} for ${seconds}s"
status=0
"${work}/${name}" -max_total_time="${seconds}" -rss_limit_mb=1024 \
  -timeout=10 -print_final_stats=1 -dict="${work}/fuzz.dict" \
  -artifact_prefix="${artifacts}/" "${corpus}" || status=$?

crashes=("${artifacts}"/*)
if [[ ${status} -ne 0 || -e "${crashes[0]}" ]]; then
  echo "FAIL: ${name} exited with ${status}; artifacts:" >&2
  for f in "${artifacts}"/*; do
    [[ -e "${f}" ]] || continue
    echo "--- ${f}" >&2
    od -c "${f}" | head -n 40 >&2
    if [[ -n "${TEST_UNDECLARED_OUTPUTS_DIR:-}" ]]; then
      cp "${f}" "${TEST_UNDECLARED_OUTPUTS_DIR}/"
    fi
  done
  exit 1
fi
echo "PASS: ${name} ran ${seconds}s without findings"
