"""``python -m raptor``: help, configuration errors, and a first start on an empty database that
creates the schema and the demo data, and a second one that changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests
from raptor.seed import DEMO_CUSTOMERS, DEMO_TENANT_ID
from sqlalchemy import create_engine, text
from werkzeug.security import check_password_hash

from .conftest import RAPTOR_DIR, RAPTOR_PYTHONPATH, Client, Postgres, free_port


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raptor", *args],
        cwd=RAPTOR_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAPTOR_", "FLAG_"))}
    env["PYTHONPATH"] = RAPTOR_PYTHONPATH
    return env


def test_help_and_configuration_errors() -> None:
    r = run(["--help"], base_env())
    assert r.returncode == 0
    for word in (
        "--listen",
        "HOST:PORT",
        "RAPTOR_DATABASE_URL",
        "RAPTOR_MAIL_DIR",
        "FLAG_AUTH_BACKUP_CODES",
        "FLAG_EMAIL_VERIFICATION",
        "RAPTOR_ORIGIN",
        "demo",
    ):
        assert word in r.stdout, word
    r = run([], base_env())
    assert r.returncode == 2 and "RAPTOR_DATABASE_URL is not set" in r.stderr
    r = run(["--listen", "nowhere"], base_env())
    assert r.returncode == 2 and "expected HOST:PORT" in r.stderr
    env = {
        **base_env(),
        "RAPTOR_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
        "RAPTOR_MAIL_DIR": "/tmp",
        "FLAG_AUTH_BACKUP_CODES": "maybe",
    }
    r = run([], env)
    assert r.returncode == 2 and "FLAG_AUTH_BACKUP_CODES must be" in r.stderr


def counts(url: str) -> dict[str, int]:
    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as conn:
            return {
                t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
                for t in (
                    "tenants",
                    "customers",
                    "rbac_grants",
                    "rbac_roles",
                    "rbac_role_permissions",
                    "rbac_permissions",
                    "webauthn_credentials",
                )
            }
    finally:
        eng.dispose()


def test_first_start_creates_schema_and_demo_data_once(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.create_database("raptor_cli")
    port = free_port()
    env = {**base_env(), "RAPTOR_DATABASE_URL": url, "RAPTOR_MAIL_DIR": str(tmp_path / "mail")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "raptor", "--listen", f"127.0.0.1:{port}"],
        cwd=RAPTOR_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "raptor did not start in 30 s"
            time.sleep(0.1)
        home = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert home.status_code == 200 and "<h1>Raptor</h1>" in home.text
        for demo in DEMO_CUSTOMERS:
            Client(f"http://127.0.0.1:{port}").signin(demo.email, demo.password)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "created the schema" in out and "seeded the demo tenant Acme" in out
    assert "raptor-admin-demo" not in out  # passwords are documented, never logged

    first = counts(url)
    assert first == {
        "tenants": 1,
        "customers": 3,
        "rbac_grants": 3,
        "rbac_roles": 5,
        "rbac_role_permissions": 17,
        "rbac_permissions": 7,
        "webauthn_credentials": 0,
    }
    again = run(["--init-only"], env)
    assert again.returncode == 0, again.stderr
    assert "created the schema" not in again.stderr and "seeded the demo" not in again.stderr
    assert counts(url) == first

    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT c.email, c.password_hash, r.name AS role, g.scope_type, g.tenant_id, g.ticket_id,"
                    " g.granted_by, (SELECT count(*) FROM webauthn_credentials w WHERE w.customer_id = c.id) AS keys"
                    " FROM customers c JOIN rbac_grants g ON g.customer_id = c.id JOIN rbac_roles r ON r.id = g.role_id"
                    " ORDER BY c.id"
                )
            ).all()
    finally:
        eng.dispose()
    by_email = {r.email: r for r in rows}
    for demo in DEMO_CUSTOMERS:
        row = by_email[demo.email]
        assert check_password_hash(row.password_hash, demo.password)
        assert row.role == demo.role and row.tenant_id == DEMO_TENANT_ID and row.granted_by is None
        assert row.scope_type == ("ticket" if demo.ticket_id else "tenant") and row.ticket_id == demo.ticket_id
        assert row.keys == 0
    assert by_email["admin@acme.test"].role == "customer_admin"
