"""The audit outbox: every security event is committed with its change, in Queue's event shape,
with its tenant and without a secret; nothing of a change that rolled back is left."""

from __future__ import annotations

import json
from typing import Any

import pytest
from raptor import audit
from raptor.seed import DEMO_TENANT_ID
from sqlalchemy import Engine, text

from .authenticator import SoftAuthenticator, b64u, unb64u
from .conftest import ADMIN, Client, MakeCustomer
from .test_passkeys import register


def outbox(engine: Engine, *, about: int) -> list[dict[str, Any]]:
    """The outbox events whose actor or target is customer ``about``, oldest first."""
    with engine.connect() as conn:
        bodies = conn.execute(text("SELECT body FROM queue_outbox.queue_audit_outbox ORDER BY seq")).scalars()
        events = [json.loads(b) for b in bodies]
    who = {"type": "customer", "id": str(about)}
    return [e for e in events if who in (e["actor"], e["target"])]


def test_every_event_is_in_the_outbox_with_its_tenant_and_no_secret(
    base_url: str, engine: Engine, make_customer: MakeCustomer
) -> None:
    c = make_customer("outbox")
    client = Client(base_url)
    assert client.post("/api/signin/password", json={"email": c.email, "password": "wrong"}).status_code == 401
    client.signin(c.email, c.password)
    token = client.cookies["raptor_session"]
    codes = client.post("/api/backup-codes").json()["codes"]
    auth = SoftAuthenticator()
    register(client, auth)
    # A sign-in with a forged signature: refused, and the refusal is recorded (its own transaction).
    other = Client(base_url)
    options = other.post("/api/passkeys/signin/options", json={"email": c.email}).json()
    forged = auth.get(options)
    sig = bytearray(unb64u(forged["response"]["signature"]))
    sig[-1] ^= 1
    forged["response"]["signature"] = b64u(bytes(sig))
    assert other.post("/api/passkeys/signin/verify", json={"credential": forged}).status_code == 401
    client.post("/api/signout")

    events = outbox(engine, about=c.id)
    assert [e["action"] for e in events] == [
        "raptor.signin.failed",
        "raptor.session.created",
        "raptor.backup_codes.generated",
        "raptor.passkey.registered",
        "raptor.passkey.rejected",
        "raptor.session.revoked",
    ]
    assert {e["tenant_id"] for e in events} == {str(DEMO_TENANT_ID)}
    failed, created = events[0], events[1]
    assert failed["actor"] == {"type": "system", "id": "raptor"}
    assert failed["target"] == {"type": "customer", "id": str(c.id)}
    assert created["actor"] == {"type": "customer", "id": str(c.id)}
    assert created["target"]["type"] == "session" and created["payload"]["method"] == "password"
    assert created["ip"] == "127.0.0.1" and created["user_agent"] == "raptor-tests/1.0"
    assert events[3]["target"]["type"] == "passkey" and events[4]["target"] == events[3]["target"]
    stored = json.dumps(events)
    for secret in (c.password, "wrong", token, *codes, *(x.replace("-", "") for x in codes)):
        assert secret not in stored


def test_failed_signin_actor_is_the_system(base_url: str, engine: Engine, make_customer: MakeCustomer) -> None:
    c = make_customer("anon")
    assert Client(base_url).post("/api/signin/password", json={"email": c.email, "password": "x"}).status_code == 401
    with engine.connect() as conn:
        body = conn.execute(
            text("SELECT body FROM queue_outbox.queue_audit_outbox WHERE body LIKE :t ORDER BY seq DESC LIMIT 1"),
            {"t": f'%"target":{{"id":"{c.id}","type":"customer"}}%'},
        ).scalar_one()
    event = json.loads(body)
    assert event["action"] == "raptor.signin.failed" and event["actor"] == {"id": "raptor", "type": "system"}
    assert event["payload"] == {"email": c.email, "method": "password"}


def test_a_grant_is_recorded_with_its_scope_and_a_refused_one_is_not(
    base_url: str, engine: Engine, make_customer: MakeCustomer
) -> None:
    target = make_customer("grantee")
    admin = Client(base_url)
    admin.signin(*ADMIN)
    body = {"customer_id": target.id, "role": "viewer", "scope_type": "ticket", "ticket_id": "T-1001",
            "tenant_id": str(DEMO_TENANT_ID), "reason": "on call"}  # fmt: skip
    made = admin.post("/api/rbac/grants", json=body)
    assert made.status_code == 201, made.text
    refused = admin.post("/api/rbac/grants", json={**body, "role": "no-such-role"})
    assert refused.status_code in (400, 404, 422), refused.text
    grants = [e for e in outbox(engine, about=target.id) if e["action"].startswith("raptor.rbac.")]
    assert len(grants) == 1
    event = grants[0]
    assert event["action"] == "raptor.rbac.grant.created" and event["tenant_id"] == str(DEMO_TENANT_ID)
    assert event["target"] == {"type": "customer", "id": str(target.id)}
    assert event["payload"]["grant"]["ticket_id"] == "T-1001" and event["payload"]["grant"]["reason"] == "on call"


def test_an_event_rolls_back_with_its_transaction(engine: Engine, make_customer: MakeCustomer) -> None:
    c = make_customer("rollback")
    with pytest.raises(RuntimeError), engine.begin() as conn:
        audit.record("probe.rolled_back", actor=c.id, conn=conn)
        raise RuntimeError("the change failed")
    with engine.begin() as conn:
        audit.record("probe.kept", actor=c.id, conn=conn, note="x\u0000y is stored as JSON")
    events = outbox(engine, about=c.id)
    assert [e["action"] for e in events] == ["raptor.probe.kept"]
    assert events[0]["payload"] == {"note": "x\ufffdy is stored as JSON"}  # audit refuses U+0000


def test_an_event_without_a_tenant_is_only_logged(engine: Engine) -> None:
    with engine.begin() as conn:
        before = conn.execute(text("SELECT count(*) FROM queue_outbox.queue_audit_outbox")).scalar_one()
        audit.record("probe.nobody", actor=None, conn=conn, email="nobody@example.test")
        after = conn.execute(text("SELECT count(*) FROM queue_outbox.queue_audit_outbox")).scalar_one()
    assert after == before
