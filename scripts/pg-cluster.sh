#!/usr/bin/env bash
# A project-local PostgreSQL cluster from the system's PostgreSQL binaries.
#
#   scripts/pg-cluster.sh start DIR PORT [DBNAME]   initdb (first time), start on 127.0.0.1:PORT,
#                                                   create DBNAME (default: queue); idempotent
#   scripts/pg-cluster.sh stop DIR                  fast shutdown; no-op when not running
#   scripts/pg-cluster.sh status DIR
#
# PostgreSQL refuses to run as root, so as root the cluster belongs to an unprivileged system
# user (QUEUE_PG_USER, default queue-pg), created on first use. The superuser role is `queue`
# with trust authentication on loopback only: a development and test cluster, never production.
# Extra server settings: PG_EXTRA_OPTS (e.g. "-c fsync=off" for throwaway test clusters).
set -euo pipefail

cmd="${1:-}"; dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,13p' "$0" >&2; exit 64; }

pgbin="${QUEUE_PG_BIN:-}"
if [ -z "$pgbin" ]; then
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pgbin="$(pg_config --bindir)"
  else
    pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  fi
fi
[ -x "$pgbin/initdb" ] || { echo "pg-cluster: no PostgreSQL server binaries found (apt-get install postgresql)" >&2; exit 69; }

run=()
if [ "$(id -u)" = 0 ]; then
  pguser="${QUEUE_PG_USER:-queue-pg}"
  id "$pguser" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$pguser"
  run=(runuser -u "$pguser" --)
fi

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
data="$dir/data"

# pgaudit (Debian package postgresql-<major>-pgaudit): when installed, every cluster this script
# starts loads it and logs DDL and role changes to the server log (deploy/README.md, "pgaudit").
pglib="$( (command -v pg_config >/dev/null 2>&1 && pg_config --pkglibdir) || echo "$pgbin/../lib")"
audit_opts=""
if [ -f "$pglib/pgaudit.so" ]; then
  audit_opts="-c shared_preload_libraries=pgaudit -c pgaudit.log=ddl,role -c pgaudit.log_relation=on"
fi

case "$cmd" in
  start)
    port="${3:?port}"; db="${4:-queue}"
    [ "$(id -u)" = 0 ] && chown "$pguser" "$dir"
    if [ ! -f "$data/PG_VERSION" ]; then
      "${run[@]}" "$pgbin/initdb" -D "$data" -U queue --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if ! "${run[@]}" "$pgbin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      "${run[@]}" "$pgbin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 $audit_opts ${PG_EXTRA_OPTS:-}" >/dev/null \
        || { tail -n 20 "$dir/server.log" >&2; exit 1; }
    fi
    if ! "$pgbin/psql" -h 127.0.0.1 -p "$port" -U queue -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
      "$pgbin/createdb" -h 127.0.0.1 -p "$port" -U queue "$db"
    fi
    if [ -n "$audit_opts" ]; then
      "$pgbin/psql" -q -h 127.0.0.1 -p "$port" -U queue -d "$db" -c "CREATE EXTENSION IF NOT EXISTS pgaudit" >/dev/null
    fi
    ;;
  stop)
    if [ -f "$data/PG_VERSION" ] && "${run[@]}" "$pgbin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      "${run[@]}" "$pgbin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null
    fi
    ;;
  status)
    "${run[@]}" "$pgbin/pg_ctl" -D "$data" status
    ;;
  *) echo "pg-cluster: unknown command $cmd" >&2; exit 64 ;;
esac
