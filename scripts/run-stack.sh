#!/usr/bin/env bash
# `make run`: the whole stack on one machine, no Docker. Builds, starts the project-local
# PostgreSQL (var/pg, 127.0.0.1:54329), creates dev keys if missing (var/keys), migrates, starts
# the four services with deploy/local/*.toml, prints where each listens, and on Ctrl-C stops
# the services and the cluster. Logs: var/log/<service>.log (JSON lines).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_PORT=54329
DATABASE_URL="postgres://queue@127.0.0.1:${PG_PORT}/queue"
SERVICES=(audit rbac auth proxy)
declare -A PORT=([proxy]=8080 [auth]=8081 [rbac]=8082 [audit]=8083)
BIN=target/debug

say() { printf '\033[1m%s\033[0m\n' "$*"; }

for s in "${SERVICES[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$s]}") 2>/dev/null; then
    echo "run: port ${PORT[$s]} (for $s) is already in use; is another 'make run' going?" >&2
    exit 1
  fi
done

say "building"
cargo build --workspace --bins

scripts/install-test-deps.sh pgaudit || echo "run: continuing without pgaudit" >&2

say "starting PostgreSQL on 127.0.0.1:${PG_PORT} (data in var/pg, pgaudit log in var/pg/server.log)"
scripts/pg-cluster.sh start var/pg "$PG_PORT" queue

say "keys (var/keys)"
"$BIN/queuectl" keys init --dir var/keys

say "migrating"
"$BIN/queuectl" migrate --database-url "$DATABASE_URL"

mkdir -p var/log
pids=()
declare -A PID=()
stop() {
  trap - INT TERM EXIT
  say "stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  scripts/pg-cluster.sh stop var/pg
  say "stopped"
  exit 0
}
trap stop INT TERM EXIT

# The legacy stand-in plays Raptor behind the proxy (deploy/local/routes.toml, docs/proxy.md).
if (exec 3<>"/dev/tcp/127.0.0.1/8090") 2>/dev/null; then
  echo "run: port 8090 (for the legacy stand-in) is already in use" >&2
  exit 1
fi
setsid "$BIN/legacy-standin" --listen 127.0.0.1:8090 >>var/log/legacy-standin.log 2>&1 &
pids+=($!)

for s in "${SERVICES[@]}"; do
  # Own session: Ctrl-C reaches only this script, which then stops the services in order.
  QUEUE_CONFIG="deploy/local/$s.toml" setsid "$BIN/queue-$s" >>"var/log/$s.log" 2>&1 &
  pids+=($!)
  PID[$s]=$!
done

for s in "${SERVICES[@]}"; do
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:${PORT[$s]}/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "${PID[$s]}" 2>/dev/null; then break; fi
    sleep 0.2
  done
  if ! curl -fsS "http://127.0.0.1:${PORT[$s]}/readyz" >/dev/null 2>&1; then
    echo "run: $s did not become ready; last lines of var/log/$s.log:" >&2
    tail -n 20 "var/log/$s.log" >&2
    exit 1
  fi
done

say "Queue is running"
for s in proxy auth rbac audit; do
  printf '  %-6s http://127.0.0.1:%s   (health /healthz, ready /readyz, keys /.well-known/jwks.json, log var/log/%s.log)\n' "$s" "${PORT[$s]}" "$s"
done
printf '  %-6s %s\n' "admin" "http://127.0.0.1:9080/admin/routes   (proxy admin, loopback, operator token: queuectl proxy status|phase N|rollback|reload|metrics)"
printf '  %-6s %s\n' "legacy" "http://127.0.0.1:8090   (stand-in for Raptor, echoes requests; log var/log/legacy-standin.log)"
printf '  %-6s %s\n' "db" "$DATABASE_URL"
echo "  try: curl -H \"Authorization: Bearer \$($BIN/queuectl token mint --iss raptor --aud audit --scope audit:write)\" http://127.0.0.1:8083/internal/v1/caller"
echo "Ctrl-C stops everything."
wait -n "${pids[@]}" || true
echo "run: a service exited; see var/log/" >&2
exit 1
