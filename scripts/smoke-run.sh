#!/usr/bin/env bash
# CI's check of `make run`: start it, wait for "Queue is running", check /healthz, /readyz and
# /.well-known/jwks.json on all four ports, then stop it (SIGTERM, as Ctrl-C does) and check that
# no service or cluster process is left. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
setsid make run >"$log" 2>&1 &
runner=$!
cleanup() { kill -TERM -- "-$runner" 2>/dev/null || true; }
trap cleanup EXIT

for _ in $(seq 1 600); do
  grep -q "Queue is running" "$log" && break
  if ! kill -0 "$runner" 2>/dev/null; then cat "$log" >&2; echo "smoke: make run exited early" >&2; exit 1; fi
  sleep 1
done
grep -q "Queue is running" "$log" || { tail -n 30 "$log" >&2; echo "smoke: make run never became ready" >&2; exit 1; }

fail=0
for port in 8080 8081 8082 8083; do
  for path in /healthz /readyz /.well-known/jwks.json; do
    if curl -fsS "http://127.0.0.1:$port$path" >/dev/null; then
      echo "smoke: ok   $port$path"
    else
      echo "smoke: FAIL $port$path" >&2; fail=1
    fi
  done
done

# The script under make traps TERM and stops the services and the cluster.
pkill -TERM -f "scripts/run-stack.sh" || true
for _ in $(seq 1 60); do
  pgrep -f "target/debug/queue-(auth|rbac|audit|proxy)" >/dev/null || pgrep -f "postgres -D $PWD/var/pg" >/dev/null || break
  sleep 0.5
done
if pgrep -fa "target/debug/queue-(auth|rbac|audit|proxy)|postgres -D $PWD/var/pg" >&2; then
  echo "smoke: processes left after stopping" >&2; fail=1
else
  echo "smoke: stopped cleanly"
fi
trap - EXIT
exit "$fail"
