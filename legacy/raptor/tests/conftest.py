"""Fixtures: a throwaway PostgreSQL (scripts/pg-cluster.sh) and Raptor on real sockets."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest
import requests
from flask import Flask
from raptor import Config, create_app
from raptor.audit import ensure_outbox
from raptor.db import ensure_schema, make_engine
from raptor.seed import DEMO_TENANT_ID, seed
from sqlalchemy import Engine, text
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

RAPTOR_DIR = Path(__file__).resolve().parent.parent
REPO = RAPTOR_DIR.parent.parent
TIMEOUT = 10  # seconds, every HTTP call of the tests
#: PYTHONPATH for a `python -m raptor` the tests start: this folder, and this checkout's Queue
#: client ahead of the one the virtualenv's editable install points at (another checkout's, in a
#: worktree sharing main's var/venv-raptor).
RAPTOR_PYTHONPATH = os.pathsep.join([str(RAPTOR_DIR), str(REPO / "clients" / "python" / "src")])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postgres:
    port: int

    def url(self, db: str) -> str:
        return f"postgresql://queue@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    workdir = Path(tempfile.mkdtemp(prefix="raptor-pg-"))
    workdir.chmod(0o755)  # as root, the cluster runs as another user (scripts/pg-cluster.sh)
    port = free_port()
    script = str(REPO / "scripts" / "pg-cluster.sh")
    env = {**os.environ, "PG_EXTRA_OPTS": "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"}
    subprocess.run([script, "start", str(workdir), str(port), "raptor"], check=True, env=env, timeout=120)
    try:
        yield Postgres(port)
    finally:
        subprocess.run([script, "stop", str(workdir)], check=False, timeout=120)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def mail_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="raptor-mail-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def config(postgres: Postgres, mail_dir: Path) -> Config:
    return Config.from_env(
        {
            "RAPTOR_DATABASE_URL": postgres.url("raptor"),
            "RAPTOR_MAIL_DIR": str(mail_dir),
            "RAPTOR_SECRET_KEY": "test-secret-key",
            "FLAG_AUTH_BACKUP_CODES": "1",
            "FLAG_EMAIL_VERIFICATION": "true",
        }
    )


@pytest.fixture(scope="session")
def engine(config: Config) -> Iterator[Engine]:
    eng = make_engine(config.database_url)
    assert ensure_schema(eng, config.schema_file) is True
    ensure_outbox(eng)
    seed(eng, demo=True)
    yield eng
    eng.dispose()


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def base_url(config: Config, engine: Engine) -> Iterator[str]:
    """Raptor with both flags on."""
    with serve(create_app(config, engine)) as url:
        yield url


@pytest.fixture(scope="session")
def base_url_flags_off(config: Config, engine: Engine) -> Iterator[str]:
    """Raptor on the same database with FLAG_AUTH_BACKUP_CODES and FLAG_EMAIL_VERIFICATION off."""
    off = replace(config, flag_backup_codes=False, flag_email_verification=False)
    with serve(create_app(off, engine)) as url:
        yield url


class Client(requests.Session):
    """A browser stand-in: keeps cookies, prefixes the base URL, bounds every call."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base
        self.headers["User-Agent"] = "raptor-tests/1.0"

    def request(self, method: str | bytes, url: str | bytes, *args: object, **kwargs: object) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        kwargs["allow_redirects"] = False  # a test looks at each redirect itself
        return super().request(method, self.base + str(url), *args, **kwargs)  # type: ignore[arg-type]

    def signin(self, email: str, password: str) -> requests.Response:
        r = self.post("/api/signin/password", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        return r


@dataclass
class NewCustomer:
    id: int
    email: str
    password: str


MakeCustomer = Callable[..., NewCustomer]


@pytest.fixture
def make_customer(engine: Engine) -> MakeCustomer:
    """Insert a customer of the demo tenant (or ``tenant``) with a unique email."""

    def make(
        prefix: str = "c", *, password: str | None = "correct horse battery", tenant: uuid.UUID = DEMO_TENANT_ID
    ) -> NewCustomer:
        email = f"{prefix}-{uuid.uuid4().hex[:10]}@acme.test"
        with engine.begin() as conn:
            cid = conn.execute(
                text("INSERT INTO customers (tenant_id, email, password_hash) VALUES (:t, :e, :p) RETURNING id"),
                {"t": tenant, "e": email, "p": generate_password_hash(password) if password else None},
            ).scalar_one()
        return NewCustomer(int(cid), email, password or "")

    return make


ADMIN = ("admin@acme.test", "raptor-admin-demo")
AGENT = ("agent@acme.test", "raptor-agent-demo")
VIEWER = ("viewer@acme.test", "raptor-viewer-demo")
