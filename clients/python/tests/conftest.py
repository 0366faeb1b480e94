"""The real services for the client's tests: a throwaway PostgreSQL, queue-audit, queue-rbac and
queue-auth as processes on loopback, started once per session and stopped at the end.

Nothing here mocks Queue. Each service trusts issuer ``raptor`` by the static public key that
``queuectl keys init`` wrote; the rotation test starts its own auth replica that trusts
``raptor`` through a JWKS URL instead.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from queue_client import Queue, RetryPolicy, Signer, load_private_key_file

REPO = Path(__file__).resolve().parents[3]
BIN = REPO / "target" / "debug"
BINARIES = ("queuectl", "queue-auth", "queue-rbac", "queue-audit")
READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run(*args: str | Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, timeout=120, env=env, cwd=REPO
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


@dataclass
class Service:
    """One service process, restartable on the same port and config."""

    name: str
    config: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "QUEUE_CONFIG": str(self.config)}
        env.pop("DATABASE_URL", None)
        out = self.log.open("ab")
        self.process = subprocess.Popen([str(BIN / f"queue-{self.name}")], env=env, stdout=out, stderr=out, cwd=REPO)
        out.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"queue-{self.name} exited with {self.process.returncode}:\n{tail}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"queue-{self.name} not ready within {READY_TIMEOUT}s; log: {self.log}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None


@dataclass
class Stack:
    base: Path
    keys: Path
    database_url: str
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def auth(self) -> Service:
        return self.services["auth"]

    @property
    def rbac(self) -> Service:
        return self.services["rbac"]

    @property
    def audit(self) -> Service:
        return self.services["audit"]

    def replica(self, name: str, *, raptor: str) -> Service:
        """Another replica of a service (same database, a port of its own) whose trust in
        ``raptor`` is the given ``[[tokens.trusted]]`` line (``jwks_url = "…"``). Not started."""
        original = self.services[name]
        port = free_port()
        text = original.config.read_text()
        text = text.replace(f'listen = "127.0.0.1:{original.port}"', f'listen = "127.0.0.1:{port}"')
        static = f'public_key = "{self.keys / "raptor.pub.pem"}"'
        assert static in text
        text = text.replace(static, raptor)
        config = self.base / f"{name}-replica-{port}.toml"
        config.write_text(text)
        return Service(name, config, port, self.base / f"{name}-replica-{port}.log")

    def signer(self) -> Signer:
        return Signer("raptor", load_private_key_file(self.keys / "raptor.pem"))

    def queue(self, *, retry: RetryPolicy | None = None, signer: Signer | None = None) -> Queue:
        return Queue(
            signer or self.signer(),
            auth_url=self.auth.url,
            rbac_url=self.rbac.url,
            audit_url=self.audit.url,
            retry=retry,
        )

    def full_session(self, user_id: str, tenant_id: str) -> str:
        """A full session for the user, minted in auth's table as a passkey login would mint it.

        There is no authenticator in these tests; the repo's own API conformance test mints its
        sessions the same way (crates/queuectl/tests/cli/api_conformance.rs, `full_sessions`).
        The token is 32 random bytes as base64url; auth stores only its SHA-256.
        """
        token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        now = datetime.now(UTC)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO auth.queue_sessions (id, token_hash, user_id, tenant_id, kind, created_at,"
                " last_seen_at, idle_expires_at, absolute_expires_at, verified_at)"
                " VALUES (%s, %s, %s, %s, 'full', %s, %s, %s, %s, %s)",
                (
                    uuid.uuid4(),
                    hashlib.sha256(token.encode()).digest(),
                    uuid.UUID(user_id),
                    tenant_id,
                    now,
                    now,
                    now + timedelta(minutes=30),
                    now + timedelta(hours=12),
                    now,
                ),
            )
        return token


def service_config(
    name: str,
    port: int,
    stack_keys: Path,
    database_url: str,
    *,
    peers: dict[str, str],
    raptor: str,
    extra: str = "",
) -> str:
    """A config like deploy/local/<name>.toml. ``raptor`` is the [[tokens.trusted]] line for it."""
    trusted = "".join(
        f'\n[[tokens.trusted]]\nissuer = "{peer}"\njwks_url = "{url}/.well-known/jwks.json"\n'
        for peer, url in peers.items()
        if peer != name
    )
    return f"""
[server]
listen = "127.0.0.1:{port}"
workers = 2
shutdown_timeout_secs = 2

[database]
url = "{database_url}"
pool_size = 8

[telemetry]
format = "json"
level = "info"

[tokens]
issuer = "{name}"
signing_key = "{stack_keys / f"{name}.pem"}"
jwks_refetch_min_secs = 1
{trusted}
[[tokens.trusted]]
issuer = "raptor"
{raptor}
{extra}
"""


def write_configs(base: Path, keys: Path, database_url: str, ports: dict[str, int]) -> dict[str, Path]:
    urls = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
    static_raptor = f'public_key = "{keys / "raptor.pub.pem"}"'
    extras = {
        "audit": f"""
[keys]
provider = "local"
local_master_key = "{keys / "audit-master.key"}"
local_checkpoint_key = "{keys / "audit-checkpoint.pem"}"
""",
        "rbac": f"""
[audit]
url = "{urls["audit"]}"
timeout_ms = 2000

[auth]
url = "{urls["auth"]}"
session_cache_secs = 0
""",
        "auth": f"""
[auth]
pepper_file = "{keys / "auth-pepper.key"}"
provisioners = ["raptor"]
validators = ["raptor", "rbac", "audit"]

[mailer]
kind = "dev"
dev_dir = "{base / "mail"}"

[audit]
url = "{urls["audit"]}"
poll_interval_ms = 200
""",
    }
    paths = {}
    for name, port in ports.items():
        path = base / f"{name}.toml"
        path.write_text(
            service_config(name, port, keys, database_url, peers=urls, raptor=static_raptor, extra=extras[name])
        )
        paths[name] = path
    return paths


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    missing = [b for b in BINARIES if not (BIN / b).is_file()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)} in {BIN}: run `cargo build --bins` first", pytrace=False)
    base = Path(tempfile.mkdtemp(prefix="queue-client-tests-"))
    base.chmod(0o755)  # the cluster runs as an unprivileged user when we are root
    pg_dir = base / "pg"
    pg_port = free_port()
    env = {**os.environ, "PG_EXTRA_OPTS": "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"}
    run(REPO / "scripts" / "pg-cluster.sh", "start", pg_dir, str(pg_port), "queue", env=env)
    stack = Stack(base=base, keys=base / "keys", database_url=f"postgres://queue@127.0.0.1:{pg_port}/queue")
    try:
        run(BIN / "queuectl", "keys", "init", "--dir", stack.keys)
        run(BIN / "queuectl", "migrate", "--database-url", stack.database_url)
        ports = {name: free_port() for name in ("audit", "rbac", "auth")}
        configs = write_configs(base, stack.keys, stack.database_url, ports)
        for name in ("audit", "rbac", "auth"):
            service = Service(name, configs[name], ports[name], base / f"{name}.log")
            stack.services[name] = service
            service.start()
        yield stack
    finally:
        for service in reversed(list(stack.services.values())):
            service.stop()
        run(REPO / "scripts" / "pg-cluster.sh", "stop", pg_dir)
        if os.environ.get("QUEUE_CLIENT_KEEP_TEST_DIR") != "1":
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def queue(stack: Stack) -> Iterator[Queue]:
    with stack.queue() as q:
        yield q


@pytest.fixture
def tenant() -> str:
    """A tenant of its own per test, so tests never see each other's grants or events."""
    return f"t-{uuid.uuid4().hex[:10]}"
