"""The audit seam: every security event goes through raptor.audit.record, and no secret does."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from sqlalchemy import Engine, text

from .conftest import Client, MakeCustomer


def events(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    out = []
    for r in caplog.records:
        if r.name == "raptor.audit":
            doc = json.loads(r.getMessage().removeprefix("audit "))
            out.append(doc)
    return out


def test_security_events_are_recorded_without_secrets(
    base_url: str, make_customer: MakeCustomer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="raptor.audit")
    c = make_customer("audit")
    client = Client(base_url)
    assert client.post("/api/signin/password", json={"email": c.email, "password": "wrong"}).status_code == 401
    client.signin(c.email, c.password)
    token = client.cookies["raptor_session"]
    codes = client.post("/api/backup-codes").json()["codes"]
    Client(base_url).post("/api/signin/backup-code", json={"email": c.email, "code": codes[0]})
    client.post("/api/signout")
    mine = [e for e in events(caplog) if e["actor"] == c.id or e.get("email") == c.email]
    assert [e["action"] for e in mine] == [
        "signin.failed",
        "session.created",
        "backup_codes.generated",
        "backup_code.used",
        "session.created",
        "session.revoked",
    ]
    assert [e.get("method") for e in mine if e["action"] == "session.created"] == ["password", "backup_code"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (c.password, "wrong", token, *codes, *(x.replace("-", "") for x in codes)):
        assert secret not in logged


def test_an_email_in_two_tenants_needs_the_tenant(engine: Engine, base_url: str, make_customer: MakeCustomer) -> None:
    other = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name) VALUES (:id, :n)"), {"id": other, "n": f"Other {other}"})
    a = make_customer("twin")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO customers (tenant_id, email, password_hash) SELECT :t, :e, password_hash FROM customers"
                " WHERE id = :id"
            ),
            {"t": other, "e": "  " + a.email.upper(), "id": a.id},
        )
    client = Client(base_url)
    r = client.post("/api/signin/password", json={"email": a.email, "password": a.password})
    assert r.status_code == 401 and "several tenants" in r.json()["error"]
    by_name = client.post(
        "/api/signin/password", json={"email": a.email, "password": a.password, "tenant": f"Other {other}"}
    )
    assert by_name.status_code == 200 and by_name.json()["customer"]["tenant_id"] == str(other)
    by_id = Client(base_url).post(
        "/api/signin/password",
        json={"email": a.email, "password": a.password, "tenant": "5a3c0e1e-0000-4000-8000-00000000a0c1"},
    )
    assert by_id.status_code == 200 and by_id.json()["customer"]["id"] == a.id
