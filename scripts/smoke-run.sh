#!/usr/bin/env bash
# CI's check of `make run`: start it, wait for "Queue is running", check /healthz, /readyz and
# /.well-known/jwks.json on all four ports; then Raptor behind the proxy at http://localhost:8080
# (its home page, the demo admin's sign-in, the tickets page with that session), Raptor's JWKS on
# 8090, that the sign-in's audit event (raptor.session.created) reached Queue's audit, that the
# sync (queuectl legacy import --follow) brought Raptor's customers and that session, the Python
# quickstart of docs/raptor.md (clients/python/examples/quickstart.py), and that
# `queuectl proxy phase N` rewrites var/routes.toml, not deploy/local/routes.toml. Then it stops
# the stack (SIGTERM to make's process group, as Ctrl-C does) and checks that no service, Raptor
# or cluster process of this checkout is left. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PROXY=http://localhost:8080
RAPTOR=http://127.0.0.1:8090
AUDIT=http://127.0.0.1:8083
ACME=5a3c0e1e-0000-4000-8000-00000000a0c1   # Raptor's demo tenant (legacy/raptor/README.md)
QUEUECTL=target/debug/queuectl

log="$(mktemp)"
work="$(mktemp -d)"
setsid make run >"$log" 2>&1 &
runner=$!
cleanup() { kill -TERM -- "-$runner" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

for _ in $(seq 1 600); do
  grep -q "Queue is running" "$log" && break
  if ! kill -0 "$runner" 2>/dev/null; then cat "$log" >&2; echo "smoke: make run exited early" >&2; exit 1; fi
  sleep 1
done
grep -q "Queue is running" "$log" || { tail -n 30 "$log" >&2; echo "smoke: make run never became ready" >&2; exit 1; }
grep "Queue is running" "$log"

fail=0
ok() { echo "smoke: ok   $*"; }
bad() { echo "smoke: FAIL $*" >&2; fail=1; }
# A JSON document on stdin; prints what the Python expression EXPR makes of it (`d`).
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

for port in 8080 8081 8082 8083; do
  for path in /healthz /readyz /.well-known/jwks.json; do
    if curl -fsS "http://127.0.0.1:$port$path" >/dev/null; then ok "$port$path"; else bad "$port$path"; fi
  done
done

# Raptor behind the proxy, phase 1.
type="$(curl -fsS -o "$work/home" -w '%{content_type}' "$PROXY/")" || type=""
if [[ "$type" == text/html* ]] && grep -q "<title>[^<]*Raptor</title>" "$work/home"; then
  ok "$PROXY/ is Raptor's home page"
else
  bad "$PROXY/ is not Raptor's home page (content type '$type')"
fi
since="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
code="$(curl -sS -o "$work/signin" -w '%{http_code}' -c "$work/jar" -H "Origin: $PROXY" \
  -H 'Content-Type: application/json' --data '{"email": "admin@acme.test", "password": "raptor-admin-demo"}' \
  "$PROXY/api/signin/password")" || code=000
if [ "$code" = 200 ] && grep -q raptor_session "$work/jar"; then
  ok "POST $PROXY/api/signin/password (admin@acme.test): 200 with a raptor_session cookie"
else
  bad "POST $PROXY/api/signin/password (admin@acme.test): $code $(head -c 200 "$work/signin")"
fi
code="$(curl -sS -o "$work/tickets" -w '%{http_code}' -b "$work/jar" "$PROXY/tickets")" || code=000
if [ "$code" = 200 ] && grep -q "T-1001" "$work/tickets"; then
  ok "GET $PROXY/tickets as the admin: 200 listing T-1001"
else
  bad "GET $PROXY/tickets as the admin: $code"
fi

keys="$(curl -fs "$RAPTOR/.well-known/jwks.json" | json 'len(d["keys"])' 2>/dev/null)" || keys=0
if [ "$keys" -gt 0 ]; then ok "$RAPTOR/.well-known/jwks.json: $keys key(s)"; else bad "$RAPTOR/.well-known/jwks.json: no key"; fi

# The sign-in's event goes through Raptor's outbox to Queue's audit (asynchronously: poll).
token="$("$QUEUECTL" token mint --iss raptor --aud audit --scope audit:read)" || token=""
found=0
for _ in $(seq 1 20); do
  code="$(curl -sS -o "$work/events" -w '%{http_code}' -H "Authorization: Bearer $token" \
    "$AUDIT/api/v1/audit/events?tenant_id=$ACME&action=raptor.session.created&since=$since")" || code=000
  if [ "$code" = 200 ]; then found="$(json 'len(d["events"])' <"$work/events")" || found=0; fi
  [ "$found" -gt 0 ] && break
  sleep 0.5
done
if [ "$found" -gt 0 ]; then
  ok "raptor.session.created reached Queue's audit (tenant Acme)"
else
  bad "raptor.session.created did not reach Queue's audit within 10 s (last answer $code $(head -c 200 "$work/events"))"
fi

# The sync (queuectl legacy import --follow, every 5 s) brings Raptor's customers and the admin's
# session into Queue: the status shows no difference in users and the session carried over.
synced=""
for _ in $(seq 1 40); do
  synced="$("$QUEUECTL" legacy status --source-url "postgresql://queue@127.0.0.1:54329/raptor" --json 2>/dev/null \
    | json '[k["difference"]["rows"] for k in d["kinds"] if k["kind"] == "users"][0] == 0 and d["sessions_carried_over"] > 0' \
    2>/dev/null)" || synced=""
  [ "$synced" = True ] && break
  sleep 0.5
done
if [ "$synced" = True ]; then
  ok "the sync brought Raptor's customers and the admin's session into Queue (queuectl legacy status)"
else
  bad "queuectl legacy status: Raptor's customers or the admin's session not in Queue within 20 s (var/log/legacy-sync.log: $(tail -n 3 var/log/legacy-sync.log 2>/dev/null))"
fi

# The quickstart of docs/raptor.md, as a Python service runs it against make run (the client's
# test venv has the package; `make test` builds it before CI runs this).
if var/venv-client/bin/python clients/python/examples/quickstart.py >"$work/quickstart" 2>&1 \
  && grep -q "^may read T-1: True" "$work/quickstart" && grep -q "^may read T-2: False" "$work/quickstart" \
  && grep -q "^after the revocation, may read T-1: False" "$work/quickstart"; then
  ok "clients/python/examples/quickstart.py (docs/raptor.md) against make run"
else
  bad "clients/python/examples/quickstart.py: $(tail -n 5 "$work/quickstart")"
fi

# A phase change rewrites the proxy's copy of the table, never the tracked file.
before="$(sha256sum deploy/local/routes.toml)"
if "$QUEUECTL" proxy phase 2 >/dev/null && grep -q '^phase = 2' var/routes.toml \
  && [ "$(sha256sum deploy/local/routes.toml)" = "$before" ] && "$QUEUECTL" proxy rollback >/dev/null \
  && grep -q '^phase = 1' var/routes.toml; then
  ok "queuectl proxy phase 2 / rollback rewrite var/routes.toml, not deploy/local/routes.toml"
else
  bad "queuectl proxy phase 2 / rollback and the route table files"
fi

# make's process group holds make and scripts/run-stack.sh, which traps TERM and stops Raptor,
# the services (each in its own session) and the cluster.
kill -TERM -- "-$runner" 2>/dev/null || true
left="$PWD/target/debug/queue-(auth|rbac|audit|proxy)|$PWD/var/venv-raptor/bin/python -m raptor|postgres -D $PWD/var/pg"
for _ in $(seq 1 60); do
  pgrep -f "$left" >/dev/null || break
  sleep 0.5
done
if pgrep -fa "$left" >&2; then
  echo "smoke: processes left after stopping" >&2; fail=1
else
  echo "smoke: stopped cleanly"
fi
trap - EXIT
rm -rf "$work"
exit "$fail"
