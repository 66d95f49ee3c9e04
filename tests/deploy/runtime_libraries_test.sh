#!/usr/bin/env bash
# The runtime stage of deploy/Dockerfile installs every Debian package that
# holds a shared library sluice-control, sluice-proxy or sluicectl loads:
# each library `ldd` resolves is mapped to its package with `dpkg -S` and
# must be named in the stage's `apt-get install` list (libc6 and libgcc-s1
# are in every Debian image). Before, libsimdjson14, libnghttp2-14 and
# libtcmalloc-minimal4 were missing: the image's binaries would not start.
set -euo pipefail

root="${TEST_SRCDIR:-}/${TEST_WORKSPACE:-sluice}"
[[ -d "${root}/deploy" ]] || root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dockerfile="${root}/deploy/Dockerfile"

# The install list of the last stage (FROM ... to the end), continuation
# lines joined.
listed=$(awk '/^FROM /{stage=""} {stage=stage"\n"$0} END{print stage}' "${dockerfile}" |
  sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | grep 'apt-get install' |
  tr ' ' '\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -v -E '^(apt-get|install|rm|update)$' | sort -u)
[[ -n "${listed}" ]] || { echo "FAIL: no apt-get install list in the last stage of ${dockerfile}"; exit 1; }

failed=0
# Each library once, with the binaries that load it.
declare -A loaders=()
for binary in controlplane/server/sluice-control dataplane/server/sluice-proxy \
              controlplane/cli/sluicectl; do
  path="${root}/${binary}"
  [[ -x "${path}" ]] || { echo "FAIL: ${binary} not found"; failed=1; continue; }
  while read -r library; do
    loaders["${library}"]+="${binary##*/} "
  done < <(ldd "${path}" | awk '$2 == "=>" && $3 ~ /^\// {print $3}')
done
# One dpkg -S for every path a library may be listed under (each call reads
# the whole package database: one per path took most of a minute on a busy
# machine). Lines are "package[, package]: path".
declare -A candidates=() owner=()
for library in "${!loaders[@]}"; do
  candidates["${library}"]="${library} /usr${library} $(readlink -f "${library}")"
done
# shellcheck disable=SC2046
while IFS= read -r line; do
  owner["${line#*: }"]="${line%%[:,]*}"
done < <(dpkg -S $(printf '%s ' "${candidates[@]}") 2>/dev/null || true)
for library in "${!loaders[@]}"; do
  package=""
  for candidate in ${candidates[${library}]}; do
    package="${owner[${candidate}]:-}"
    [[ -n "${package}" ]] && break
  done
  if [[ -z "${package}" ]]; then
    echo "FAIL: no package holds ${library} (loaded by ${loaders[${library}]})"; failed=1; continue
  fi
  case "${package}" in libc6|libgcc-s1) continue ;; esac
  if ! grep -qx -- "${package}" <<<"${listed}"; then
    echo "FAIL: ${loaders[${library}]}load ${library} (package ${package}), which deploy/Dockerfile does not install"
    failed=1
  fi
done
[[ ${failed} == 0 ]] && echo "PASS: every library the binaries load is installed by deploy/Dockerfile"
exit ${failed}
