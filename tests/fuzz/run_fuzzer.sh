#!/usr/bin/env bash
# Builds a libFuzzer target with clang and runs it for a fixed time on a fresh
# corpus seeded with a few valid inputs (the SEEDS script, sourced, writes them
# with a dictionary and names the libraries to link). Exits non-zero if the
# build fails or the fuzzer finds a crash, leak, sanitizer report or invariant
# violation.
#
# The tests are "exclusive", so the machine's cores are theirs: the sources
# compile side by side, and FUZZ_WORKERS fuzzing processes (default: the
# number of cores, at most 2) each run for SECONDS, with their own random
# seeds, on the one corpus.
#
# Usage: [FUZZ_WORKERS=N] run_fuzzer.sh SEEDS FUZZER_NAME SECONDS SRC...
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
cflags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
        -I"${root}")
workers="${FUZZ_WORKERS:-$(nproc 2>/dev/null || echo 1)}"
if [[ ! "${workers}" =~ ^[1-9][0-9]*$ ]]; then
  echo "run_fuzzer.sh: FUZZ_WORKERS must be a positive number, got '${workers}'" >&2
  exit 2
fi
if [[ -z "${FUZZ_WORKERS:-}" && ${workers} -gt 2 ]]; then workers=2; fi
objs=()
pids=()
for i in "${!srcs[@]}"; do
  objs+=("${work}/obj${i}.o")
  clang++ "${cflags[@]}" -c "${srcs[$i]}" -o "${work}/obj${i}.o" &
  pids+=($!)
  if [[ ${#pids[@]} -ge ${workers} ]]; then
    wait "${pids[0]}" || { echo "FAIL: compiling for ${name}" >&2; exit 1; }
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do
  wait "${pid}" || { echo "FAIL: compiling for ${name}" >&2; exit 1; }
done
clang++ "${cflags[@]}" "${objs[@]}" -o "${work}/${name}" "${libs[@]}"

echo "fuzzing ${name} for ${seconds}s in ${workers} process(es)"
status=0
pids=()
for ((w = 0; w < workers; ++w)); do
  "${work}/${name}" -max_total_time="${seconds}" -rss_limit_mb=1024 \
    -timeout=10 -print_final_stats=1 -dict="${work}/fuzz.dict" \
    -artifact_prefix="${artifacts}/" "${corpus}" >"${work}/worker${w}.log" 2>&1 &
  pids+=($!)
done
for w in "${!pids[@]}"; do
  worker_status=0
  wait "${pids[$w]}" || worker_status=$?
  echo "--- worker ${w} (exit ${worker_status})"
  cat "${work}/worker${w}.log"
  if [[ ${worker_status} -ne 0 ]]; then status=${worker_status}; fi
done

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
echo "PASS: ${name} ran ${seconds}s in ${workers} process(es) without findings"
