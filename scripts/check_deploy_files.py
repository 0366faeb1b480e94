#!/usr/bin/env python3
"""Static checks of the deployment files, run by scripts/check-deploy.sh.

- every YAML file under deploy/k8s parses;
- every Deployment's containers have a readiness probe on GET /readyz and a liveness probe on
  GET /healthz, run as non-root on a read-only root filesystem;
- each deploy/k8s/<service>/kustomization.yaml lists files that exist;
- every service config (deploy/compose/*.toml and the config.toml in each k8s ConfigMap)
  follows the config schema the services accept: they refuse unknown keys, so a stray key
  here would stop a service at start-up;
- every SERVICE build argument in docker-compose.yml has a final stage in deploy/Dockerfile.

Needs Python 3.11+ (tomllib) and PyYAML. Prints one line per problem; exit status 1 if any.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Set
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"proxy": 8080, "auth": 8081, "rbac": 8082, "audit": 8083}
OPERATOR_CALLEES = frozenset({"proxy", "auth", "rbac"})
LEGACY_ISSUER = "raptor"

problems: list[str] = []


def problem(where: Path | str, message: str) -> None:
    rel = where.relative_to(ROOT) if isinstance(where, Path) else where
    problems.append(f"{rel}: {message}")


# ------------------------------------------------------------------------------------------
# The config schema: mirrors crates/queue-platform/src/config.rs (ServiceConfig, and the
# proxy's ProxyConfig, which has no [database]); keep the two in step. Beyond the code's own
# rules, these deployment files must set server.public_url and trust every peer.
# ------------------------------------------------------------------------------------------
OPTIONAL = {
    "server": {"workers", "shutdown_timeout_secs", "max_body_bytes", "tls"},
    "database": {"timeout_secs"},
    "telemetry": {"format", "level", "otlp_endpoint", "trusted_peers"},
    "tokens": {
        "previous_public_keys",
        "leeway_secs",
        "jwks_refresh_secs",
        "jwks_refetch_min_secs",
        "replay_max_entries",
    },
}


def check_keys(where: str, table: dict[str, Any], required: set[str], optional: Set[str] = frozenset()) -> None:
    for key in sorted(set(table) - required - set(optional)):
        problem(where, f"unknown key `{key}` (the service refuses unknown keys)")
    for key in sorted(required - set(table)):
        problem(where, f"missing key `{key}`")


def check_config(where: str, text: str, service: str, target: str) -> None:
    """target is "compose" (database.url in the file) or "k8s" (database.url from DATABASE_URL)."""
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        problem(where, f"not valid TOML: {err}")
        return

    # Service-specific tables are checked by the Rust test that parses these files into the
    # services' own config types (crates/queuectl/tests/cli/deploy_configs.rs).
    own = {
        "audit": {"keys", "chain", "limits", "users"},
        "auth": {"auth", "sessions", "webauthn", "email", "mailer", "limits", "audit", "flags"},
        "rbac": {"audit", "auth", "callers", "cache", "expiry"},
        "proxy": {"admin", "audit", "routing", "forwarding", "identity", "shadow"},
    }.get(service, set())
    check_keys(where, cfg, {"server", "tokens"}, {"telemetry"} | own | (set() if service == "proxy" else {"database"}))
    if service != "proxy" and "database" not in cfg:
        problem(where, "missing [database] section")

    server = cfg.get("server", {})
    check_keys(f"{where} [server]", server, {"listen", "public_url"}, OPTIONAL["server"])
    listen = str(server.get("listen", ""))
    if not re.fullmatch(r"[0-9.]+:\d+|\[[0-9a-fA-F:]+\]:\d+", listen):
        problem(where, f"server.listen `{listen}` is not a socket address (IP:port)")
    elif not listen.endswith(f":{SERVICES[service]}"):
        problem(where, f"server.listen `{listen}` is not on {service}'s port {SERVICES[service]}")
    if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", str(server.get("public_url", ""))):
        problem(where, "server.public_url is not an http(s) URL")
    # Service-to-service TLS (docs/configuration.md, [server.tls]): the deployments use it. The
    # services serve HTTPS and trust the CA; the proxy's listener stays plain, it only trusts.
    tls = server.get("tls", {})
    needed = {"ca_file"} if service == "proxy" else {"cert_file", "key_file", "ca_file"}
    check_keys(f"{where} [server.tls]", tls, needed)

    if "database" in cfg:
        db = cfg["database"]
        if target == "compose":
            check_keys(f"{where} [database]", db, {"url"}, {"pool_size"} | OPTIONAL["database"])
        else:
            # In Kubernetes the URL (with its password) comes from a Secret via DATABASE_URL.
            if "url" in db:
                problem(where, "database.url must not be in a ConfigMap: DATABASE_URL comes from the Secret")
            check_keys(f"{where} [database]", db, set(), {"pool_size"} | OPTIONAL["database"])
        if "url" in db and not str(db["url"]).startswith(("postgres://", "postgresql://")):
            problem(where, "database.url is not a postgres:// URL")
        if "pool_size" in db and (not isinstance(db["pool_size"], int) or db["pool_size"] < 1):
            problem(where, "database.pool_size must be a positive integer")

    telemetry = cfg.get("telemetry", {})
    check_keys(f"{where} [telemetry]", telemetry, set(), OPTIONAL["telemetry"])
    if telemetry.get("format", "json") not in ("json", "pretty"):
        problem(where, 'telemetry.format must be "json" or "pretty"')

    tokens = cfg.get("tokens", {})
    check_keys(f"{where} [tokens]", tokens, {"issuer", "signing_key", "trusted"}, OPTIONAL["tokens"])
    if tokens.get("issuer") != service:
        problem(where, f'tokens.issuer must be "{service}"')
    trusted = tokens.get("trusted", [])
    if not isinstance(trusted, list):
        problem(where, "tokens.trusted must be an array of tables ([[tokens.trusted]])")
        trusted = []
    for i, peer in enumerate(trusted):
        here = f"{where} [[tokens.trusted]] #{i + 1}"
        check_keys(here, peer, {"issuer"}, {"jwks_url", "public_key"})
        if ("jwks_url" in peer) == ("public_key" in peer):
            problem(here, "needs exactly one of jwks_url and public_key")
    issuers = [p.get("issuer") for p in trusted]
    # The operator's tokens: the proxy's admin API (scope proxy:admin), and the imports of Raptor's
    # data into auth and rbac (`queuectl legacy import`, scopes users:import and rbac:import).
    operator = {"operator"} if service in OPERATOR_CALLEES else set()
    expected = sorted((set(SERVICES) - {service}) | {LEGACY_ISSUER} | operator)
    if sorted(issuers) != expected:
        problem(where, f"trusted issuers are {sorted(issuers)}, expected {expected}")

    # Behind the proxy, auth must believe its X-Forwarded-For: else every client counts as the
    # proxy and one client's flood locks everybody out (docs/configuration.md, "Client addresses").
    if service == "auth":
        proxies = (cfg.get("auth") or {}).get("trusted_proxies")
        if not isinstance(proxies, list) or not proxies or not all(isinstance(p, str) for p in proxies):
            problem(where, "auth.trusted_proxies must list the proxy's addresses (CIDRs)")


# ------------------------------------------------------------------------------------------
# Kubernetes
# ------------------------------------------------------------------------------------------
def check_probe(where: str, container: dict[str, Any], probe: str, path: str) -> None:
    get = (container.get(probe) or {}).get("httpGet") or {}
    if not get:
        problem(where, f"container `{container.get('name')}` has no {probe} (httpGet)")
    elif get.get("path") != path:
        problem(where, f"container `{container.get('name')}` {probe} is on {get.get('path')}, expected {path}")
    elif isinstance(get.get("port"), str):
        names = {p.get("name") for p in container.get("ports") or []}
        if get["port"] not in names:
            problem(where, f"container `{container.get('name')}` {probe} uses undeclared port `{get['port']}`")


def check_deployment(path: Path, doc: dict[str, Any]) -> None:
    where = f"{path.relative_to(ROOT)} (Deployment {doc.get('metadata', {}).get('name')})"
    pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = pod.get("containers") or []
    if not containers:
        problem(where, "no containers")
    pod_sc = pod.get("securityContext") or {}
    for c in containers:
        check_probe(where, c, "readinessProbe", "/readyz")
        check_probe(where, c, "livenessProbe", "/healthz")
        sc = c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            problem(where, f"container `{c.get('name')}` does not set runAsNonRoot")
        if not sc.get("readOnlyRootFilesystem"):
            problem(where, f"container `{c.get('name')}` does not set readOnlyRootFilesystem")


def check_k8s() -> int:
    k8s = ROOT / "deploy" / "k8s"
    files = sorted(p for p in k8s.rglob("*") if p.suffix in (".yaml", ".yml"))
    if not files:
        problem(k8s, "no YAML files found")
    deployments = 0
    for path in files:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as err:
            problem(path, f"not valid YAML: {err}")
            continue
        for doc in docs:
            if not isinstance(doc, dict):
                problem(path, "a document is not a mapping")
                continue
            kind = doc.get("kind")
            if kind == "Deployment":
                deployments += 1
                check_deployment(path, doc)
            elif kind == "Kustomization":
                for res in doc.get("resources") or []:
                    if not (path.parent / res).exists():
                        problem(path, f"resource `{res}` does not exist")
            elif kind == "ConfigMap" and "config.toml" in (doc.get("data") or {}):
                service = path.parent.name
                if service in SERVICES:
                    check_config(str(path.relative_to(ROOT)), doc["data"]["config.toml"], service, "k8s")
    for service in SERVICES:
        for name in ("deployment.yaml", "service.yaml", "configmap.yaml", "kustomization.yaml"):
            if not (k8s / service / name).is_file():
                problem(k8s / service, f"missing {name}")
    return deployments


# ------------------------------------------------------------------------------------------
# Compose configs and the Dockerfile's stages
# ------------------------------------------------------------------------------------------
def check_compose_side() -> None:
    for service in SERVICES:
        path = ROOT / "deploy" / "compose" / f"{service}.toml"
        if not path.is_file():
            problem(path, "missing")
            continue
        check_config(str(path.relative_to(ROOT)), path.read_text(), service, "compose")

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+svc-(\S+)\s*$", dockerfile, re.M | re.I))
    for name, svc in (compose.get("services") or {}).items():
        build = svc.get("build") or {}
        if isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile":
            arg = (build.get("args") or {}).get("SERVICE")
            if arg not in stages:
                problem(
                    "docker-compose.yml", f"service `{name}`: SERVICE={arg} has no svc-{arg} stage in deploy/Dockerfile"
                )


def main() -> int:
    deployments = check_k8s()
    check_compose_side()
    for line in problems:
        print(f"  {line}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"  {deployments} Deployments with /readyz and /healthz probes; "
        f"{2 * len(SERVICES)} service configs match the schema; Dockerfile stages match compose"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
