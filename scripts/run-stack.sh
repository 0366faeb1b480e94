#!/usr/bin/env bash
# `make run`: the whole stack on one machine, no Docker. Builds, starts the project-local
# PostgreSQL (var/pg, 127.0.0.1:54329), creates dev keys if missing (var/keys), migrates, starts
# Raptor (the legacy Flask app, legacy/raptor, on 127.0.0.1:8090, its own database `raptor`,
# its virtualenv var/venv-raptor built when missing or stale), then the four services with
# deploy/local/*.toml (the proxy with a copy of deploy/local/routes.toml in var/routes.toml,
# phase 1: Raptor at http://localhost:8080/), prints where each listens, and on Ctrl-C stops
# Raptor, the services and the cluster. Logs: var/log/<service>.log (JSON lines), var/log/raptor.log.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

PG_PORT=54329
DATABASE_URL="postgres://queue@127.0.0.1:${PG_PORT}/queue"
SERVICES=(audit rbac auth proxy)
declare -A PORT=([proxy]=8080 [auth]=8081 [rbac]=8082 [audit]=8083 [raptor]=8090)
# Absolute, so that `ps` (and scripts/smoke-run.sh) tell this checkout's processes from another's.
BIN="$PWD/target/debug"
RAPTOR_PY="$PWD/var/venv-raptor/bin/python"
# The table the proxy runs on: a copy, so `queuectl proxy phase N` never rewrites a tracked file.
ROUTES=var/routes.toml

say() { printf '\033[1m%s\033[0m\n' "$*"; }

for s in raptor "${SERVICES[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$s]}") 2>/dev/null; then
    echo "run: port ${PORT[$s]} (for $s) is already in use; is another 'make run' going?" >&2
    exit 1
  fi
done

say "building"
cargo build --workspace --bins

scripts/install-test-deps.sh pgaudit || echo "run: continuing without pgaudit" >&2
say "Raptor's virtualenv (var/venv-raptor, from legacy/raptor/requirements.txt)"
scripts/install-test-deps.sh raptor

say "starting PostgreSQL on 127.0.0.1:${PG_PORT} (data in var/pg, pgaudit log in var/pg/server.log)"
scripts/pg-cluster.sh start var/pg "$PG_PORT" queue
scripts/pg-cluster.sh start var/pg "$PG_PORT" raptor   # Raptor's own database (it creates its schema)

say "keys (var/keys)"
"$BIN/queuectl" keys init --dir var/keys
# Signs Raptor's passkey-ceremony cookie: made once, so a ceremony survives a restart. Never printed.
if [ ! -s var/keys/raptor-secret.key ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '\n=' >var/keys/raptor-secret.key.tmp)
  mv var/keys/raptor-secret.key.tmp var/keys/raptor-secret.key
fi

say "migrating"
"$BIN/queuectl" migrate --database-url "$DATABASE_URL"

mkdir -p var/log
pids=()
declare -A PID=()
stop() {
  # Once stopping, further signals are ignored: make passes its SIGTERM on to this script after
  # the one its process group got, and a second Ctrl-C must not leave the services running.
  trap '' INT TERM
  trap - EXIT
  say "stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  scripts/pg-cluster.sh stop var/pg
  say "stopped"
  exit 0
}
trap stop INT TERM EXIT

# wait_ready NAME PATH TRIES: until http://127.0.0.1:PORT[NAME]PATH answers 2xx (every 0.2 s, at
# most TRIES times, sooner given up when the process exited); else the log's last lines, exit 1.
wait_ready() {
  local name="$1" path="$2" tries="$3" url="http://127.0.0.1:${PORT[$1]}$2"
  for _ in $(seq 1 "$tries"); do
    if curl -fsS "$url" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then break; fi
    sleep 0.2
  done
  curl -fsS "$url" >/dev/null 2>&1 && return 0
  echo "run: $name did not answer $path; last lines of var/log/$name.log:" >&2
  tail -n 20 "var/log/$name.log" >&2
  exit 1
}

# Raptor first: the services fetch its JWKS (deploy/local/*.toml, [[tokens.trusted]] raptor).
mkdir -p var/raptor-mail
RAPTOR_SECRET_KEY="$(<var/keys/raptor-secret.key)" \
RAPTOR_DATABASE_URL="postgresql://queue@127.0.0.1:${PG_PORT}/raptor" \
RAPTOR_MAIL_DIR="$PWD/var/raptor-mail" \
RAPTOR_ORIGIN="http://localhost:8080" \
RAPTOR_SIGNING_KEY="$PWD/var/keys/raptor.pem" \
RAPTOR_QUEUE_AUTH_URL="http://127.0.0.1:${PORT[auth]}" \
RAPTOR_QUEUE_RBAC_URL="http://127.0.0.1:${PORT[rbac]}" \
RAPTOR_QUEUE_AUDIT_URL="http://127.0.0.1:${PORT[audit]}" \
FLAG_AUTH_BACKUP_CODES=1 FLAG_EMAIL_VERIFICATION=1 RAPTOR_PROXY_HOPS=1 \
RAPTOR_WRITEBACK_ISSUERS=auth,rbac \
PYTHONPATH="$PWD/legacy/raptor:$PWD/clients/python/src" \
  setsid "$RAPTOR_PY" -m raptor --listen "127.0.0.1:${PORT[raptor]}" >>var/log/raptor.log 2>&1 &
pids+=($!)
PID[raptor]=$!
# The first start creates the schema and seeds the demo data (password hashing: a few seconds).
wait_ready raptor /healthz 300

# Fresh at each start: the shipped phase (1), whatever `queuectl proxy phase N` did last time.
cp deploy/local/routes.toml "$ROUTES"

for s in "${SERVICES[@]}"; do
  # Own session: Ctrl-C reaches only this script, which then stops the services in order.
  extra=()
  [ "$s" = proxy ] && extra=(QUEUE_ROUTING__TABLE="$ROUTES")
  env QUEUE_CONFIG="deploy/local/$s.toml" "${extra[@]}" setsid "$BIN/queue-$s" >>"var/log/$s.log" 2>&1 &
  pids+=($!)
  PID[$s]=$!
done

for s in "${SERVICES[@]}"; do
  wait_ready "$s" /readyz 100
done

say "Queue is running (started in $((SECONDS - started)) s)"
for s in proxy auth rbac audit; do
  printf '  %-6s http://127.0.0.1:%s   (health /healthz, ready /readyz, keys /.well-known/jwks.json, log var/log/%s.log)\n' "$s" "${PORT[$s]}" "$s"
done
printf '  %-6s %s\n' "admin" "http://127.0.0.1:9080/admin/routes   (proxy admin, loopback, operator token: queuectl proxy status|phase N|rollback|reload|metrics)"
printf '  %-6s %s\n' "routes" "$ROUTES   (copied from deploy/local/routes.toml at each start, phase 1; \`queuectl proxy phase N\` rewrites the copy)"
printf '  %-6s %s\n' "raptor" "http://127.0.0.1:${PORT[raptor]}   (the legacy Flask app behind the proxy; keys /.well-known/jwks.json, log var/log/raptor.log, mail var/raptor-mail/)"
printf '  %-6s %s\n' "db" "$DATABASE_URL   (Raptor's: postgres://queue@127.0.0.1:${PG_PORT}/raptor)"
echo "  open http://localhost:8080/ (Raptor, phase 1), sign in as admin@acme.test / raptor-admin-demo"
echo "       (also agent@acme.test / raptor-agent-demo, viewer@acme.test / raptor-viewer-demo: legacy/raptor/README.md)"
echo "  Queue's account pages: http://localhost:8081/auth/login (through the proxy from phase 3: queuectl proxy phase 3)"
echo "  mail: Raptor's in var/raptor-mail/, Queue's auth's in var/mail/"
echo "  try: curl -H \"Authorization: Bearer \$(target/debug/queuectl token mint --iss raptor --aud audit --scope audit:write)\" http://127.0.0.1:8083/internal/v1/caller"
echo "Ctrl-C stops everything."
wait -n "${pids[@]}" || true
echo "run: a service exited; see var/log/" >&2
exit 1
