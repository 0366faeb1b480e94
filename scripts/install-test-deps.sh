#!/usr/bin/env bash
# Installs what the tests need beyond Rust, idempotently (a second run takes ~0 s):
#   - pgaudit for PostgreSQL (Debian package postgresql-<major>-pgaudit), loaded by
#     scripts/pg-cluster.sh when present;
#   - moto[server] in var/venv-moto: a KMS-compatible server the aws-kms tests start on loopback;
#   - Debian's chromium (/usr/bin/chromium) and tests/browser/node_modules (`npm ci`: playwright-core,
#     pinned by tests/browser/package-lock.json) for the browser journey (crates/queue-e2e, browser.rs).
# Runs as root on CI (apt-get); as another user it only reports what is missing.
#   scripts/install-test-deps.sh pgaudit   only pgaudit (what `make run` needs)
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION="5.1.22"
pgbin="$( (command -v pg_config >/dev/null && pg_config --bindir) || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
major="$(basename "$(dirname "$pgbin")")"
libdir="$( (command -v pg_config >/dev/null && pg_config --pkglibdir) || echo "/usr/lib/postgresql/$major/lib")"

apt_missing=()
[ -f "$libdir/pgaudit.so" ] || apt_missing+=("postgresql-$major-pgaudit")
[ "${1:-}" = pgaudit ] || python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_missing+=(python3-venv)
[ "${1:-}" = pgaudit ] || [ -x /usr/bin/chromium ] || apt_missing+=(chromium)
if [ "${#apt_missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "test-deps: apt-get install ${apt_missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
  else
    echo "test-deps: missing ${apt_missing[*]} (install them as root)" >&2
    exit 1
  fi
fi

[ "${1:-}" = pgaudit ] && exit 0

if ! var/venv-moto/bin/moto_server --help >/dev/null 2>&1; then
  echo "test-deps: pip install moto[server]==$MOTO_VERSION into var/venv-moto"
  mkdir -p var
  python3 -m venv var/venv-moto
  var/venv-moto/bin/pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "test-deps: npm ci in tests/browser (playwright-core; no browser download)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
