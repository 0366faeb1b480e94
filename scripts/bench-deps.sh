#!/usr/bin/env bash
# The load generator and reference server the benchmarks use (`make bench-*`): wrk and nginx
# (Debian packages), installed when missing (as root), else a clear message. PostgreSQL and pgbench
# come with the test dependencies (scripts/install-test-deps.sh).
set -euo pipefail
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "bench-deps: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "bench-deps: missing ${missing[*]} (install them as root: apt-get install ${missing[*]})" >&2
  exit 1
fi
