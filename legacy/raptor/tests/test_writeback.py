"""The write-back API (raptor/writeback.py) on real sockets: Raptor with RAPTOR_WRITEBACK_ISSUERS
set, Queue's services stood in for by their keys (real Ed25519 tokens, their JWKS served over
HTTP), the real PostgreSQL of the other tests."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask, abort, jsonify
from queue_client import Signer, jwks_document, private_key_pem
from raptor import Config, create_app
from raptor.seed import DEMO_TENANT_ID
from sqlalchemy import Engine, text
from werkzeug.security import check_password_hash

from .authenticator import SoftAuthenticator, b64u
from .conftest import RAPTOR_DIR, RAPTOR_PYTHONPATH, TIMEOUT, Client, MakeCustomer, Postgres, free_port, serve
from .test_passkeys import passkey_signin

PREFIX = "/internal/queue/v1"
SCOPE = "raptor:writeback"


@dataclass
class Issuers:
    """Queue's services as Raptor sees them: a key each, their JWKS at <base>/<name>/..."""

    keys: dict[str, Ed25519PrivateKey]
    base: str

    def signer(self, name: str) -> Signer:
        return Signer(name, self.keys[name])


@pytest.fixture(scope="module")
def issuers() -> Iterator[Issuers]:
    keys = {name: Ed25519PrivateKey.generate() for name in ("auth", "rbac", "raptor")}
    app = Flask("jwks")

    @app.get("/<name>/.well-known/jwks.json")
    def jwks(name: str) -> Any:
        if name not in keys:
            abort(404)
        return jsonify(jwks_document([keys[name]]))

    with serve(app) as url:
        yield Issuers(keys, url)


def writeback_config(config: Config, issuers: Issuers, allowed: tuple[str, ...]) -> Config:
    return replace(
        config,
        queue_auth_url=f"{issuers.base}/auth",
        queue_rbac_url=f"{issuers.base}/rbac",
        writeback_issuers=allowed,
    )


@pytest.fixture(scope="module")
def wb_url(config: Config, engine: Engine, issuers: Issuers) -> Iterator[str]:
    """Raptor taking write-back calls from auth and rbac."""
    with serve(create_app(writeback_config(config, issuers, ("auth", "rbac")), engine)) as url:
        yield url


class Queue:
    """A Queue service calling the write-back API: a fresh token per call, as the relay mints them."""

    def __init__(self, base: str, signer: Signer, *, scopes: tuple[str, ...] = (SCOPE,), audience: str = "raptor"):
        self.base = base
        self.signer = signer
        self.scopes = scopes
        self.audience = audience

    def token(self) -> str:
        return self.signer.mint(self.audience, list(self.scopes))

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.token()}"}
        kwargs: dict[str, Any] = {"headers": headers, "timeout": TIMEOUT, "allow_redirects": False}
        if body is not None:
            kwargs["json"] = body
        return requests.request(method, self.base + PREFIX + path, **kwargs)


@pytest.fixture
def auth(wb_url: str, issuers: Issuers) -> Queue:
    return Queue(wb_url, issuers.signer("auth"))


@pytest.fixture
def rbac_caller(wb_url: str, issuers: Issuers) -> Queue:
    return Queue(wb_url, issuers.signer("rbac"))


def error_of(r: requests.Response) -> dict[str, Any]:
    doc = r.json()
    assert set(doc) == {"error"}, doc
    return dict(doc["error"])


def audit_events(engine: Engine, action: str, target_id: int | str) -> list[dict[str, Any]]:
    """The events of the audit outbox for ``action`` about ``target_id``, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT body FROM queue_outbox.queue_audit_outbox WHERE CAST(body AS jsonb) ->> 'action' = :a"
                " AND CAST(body AS jsonb) -> 'target' ->> 'id' = :t ORDER BY seq"
            ),
            {"a": "raptor." + action, "t": str(target_id)},
        ).scalars()
        return [json.loads(r) for r in rows]


def passkey_body(customer_id: int, a: SoftAuthenticator, handle: bytes, /, **over: Any) -> dict[str, Any]:
    body = {
        "customer_id": customer_id,
        "credential_id": b64u(a.credential_id),
        "public_key": b64u(a.cose_key()),
        "sign_count": 0,
        "aaguid": "00000000-0000-0000-0000-000000000000",
        "device_type": "multi_device",
        "backed_up": True,
        "user_verified": True,
        "transports": ["internal", "hybrid"],
        "user_handle": b64u(handle),
        "name": "added at Queue",
        "created_at": "2026-01-02T03:04:05Z",
        "queue_id": str(uuid.uuid4()),
    }
    body.update(over)
    return body


def new_passkey(handle: bytes) -> SoftAuthenticator:
    """A resident passkey made at Queue (an authenticator's create() over Queue's options)."""
    a = SoftAuthenticator(backed_up=True)
    a.create({"rp": {"id": "localhost"}, "user": {"id": b64u(handle)}, "challenge": b64u(secrets.token_bytes(32))})
    return a


# --- the token check ------------------------------------------------------------------------------


def test_health_answers_a_trusted_caller_and_nobody_else(wb_url: str, issuers: Issuers, auth: Queue) -> None:
    r = auth.call("GET", "/health")
    assert r.status_code == 200 and r.json() == {"ok": True}
    # A read does not spend its token (as at Queue's services).
    token = auth.token()
    assert [auth.call("GET", "/health", token=token).status_code for _ in range(2)] == [200, 200]
    assert Queue(wb_url, issuers.signer("rbac")).call("GET", "/health").status_code == 200

    bare = requests.get(wb_url + PREFIX + "/health", timeout=TIMEOUT)
    assert bare.status_code == 401
    assert error_of(bare)["code"] == "unauthenticated"
    assert bare.headers["WWW-Authenticate"] == "Bearer"
    # Raptor's own issuer, another audience, a token for another service: refused, not verified.
    for caller in (
        Queue(wb_url, issuers.signer("raptor")),
        Queue(wb_url, issuers.signer("auth"), audience="rbac"),
        Queue(wb_url, issuers.signer("auth"), audience="raptorx"),
    ):
        r = caller.call("GET", "/health")
        assert r.status_code == 401, r.text
        assert error_of(r) == {"code": "unauthenticated", "message": "invalid service token"}
    # Verified, but without the scope: 403.
    r = Queue(wb_url, issuers.signer("auth"), scopes=("rbac:check",)).call("GET", "/health")
    assert r.status_code == 403 and error_of(r) == {"code": "forbidden", "message": "missing scope `raptor:writeback`"}


def test_a_forged_expired_or_replayed_token_is_refused(
    wb_url: str, issuers: Issuers, auth: Queue, make_customer: MakeCustomer
) -> None:
    # Signed with another key under auth's name and kid.
    forged = Signer("auth", Ed25519PrivateKey.generate()).mint("raptor", [SCOPE])
    _, payload, sig = forged.split(".")
    real_head = auth.token().split(".")[0]
    assert auth.call("GET", "/health", token=f"{real_head}.{payload}.{sig}").status_code == 401
    expired = Signer("auth", issuers.keys["auth"], clock=lambda: time.time() - 600).mint("raptor", [SCOPE])
    assert auth.call("GET", "/health", token=expired).status_code == 401
    assert auth.call("GET", "/health", token="not.a.token").status_code == 401

    # A change spends its token: the same token again is refused and changes nothing.
    c = make_customer("wb-replay")
    a = new_passkey(secrets.token_bytes(16))
    body = passkey_body(c.id, a, a.user_handle or b"")
    token = auth.token()
    assert auth.call("POST", "/passkeys", body, token=token).status_code == 201
    again = auth.call("POST", "/passkeys", body, token=token)
    assert again.status_code == 401 and error_of(again)["code"] == "token_replayed"
    # With a fresh token (a relay's retry): the same answer as the first time, nothing changed.
    assert auth.call("POST", "/passkeys", body).status_code == 200


def test_an_issuer_not_listed_is_forbidden(config: Config, engine: Engine, issuers: Issuers) -> None:
    """RAPTOR_WRITEBACK_ISSUERS=auth: rbac's token verifies (Raptor knows its JWKS) but may not call."""
    with serve(create_app(writeback_config(config, issuers, ("auth",)), engine)) as url:
        r = Queue(url, issuers.signer("rbac")).call("GET", "/health")
        assert r.status_code == 403
        assert error_of(r) == {"code": "forbidden", "message": "issuer `rbac` may not call this route"}
        assert Queue(url, issuers.signer("auth")).call("GET", "/health").status_code == 200


def test_without_issuers_the_api_is_not_there(base_url: str, issuers: Issuers) -> None:
    """The session fixture's Raptor has no RAPTOR_WRITEBACK_ISSUERS: every path is 404."""
    caller = Queue(base_url, issuers.signer("auth"))
    for method, path in (("GET", "/health"), ("POST", "/grants"), ("DELETE", "/passkeys/1"), ("GET", "/nope")):
        r = caller.call(method, path, {} if method == "POST" else None)
        assert r.status_code == 404, (method, path, r.text)
        assert error_of(r)["code"] == "not_found"


def test_errors_are_in_queue_shape(auth: Queue, wb_url: str) -> None:
    r = auth.call("GET", "/nope")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    r = auth.call("GET", "/passkeys")
    assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"
    r = requests.post(
        wb_url + PREFIX + "/grants",
        data="customer_id=1",
        headers={"Authorization": f"Bearer {auth.token()}", "Content-Type": "application/x-www-form-urlencoded"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 400 and error_of(r)["code"] == "bad_request"
    r = auth.call("POST", "/grants", [1, 2])
    assert r.status_code == 422 and error_of(r)["field"] == "body"


# --- passkeys -------------------------------------------------------------------------------------


def test_a_passkey_written_back_signs_in_at_raptor(
    wb_url: str, engine: Engine, auth: Queue, make_customer: MakeCustomer
) -> None:
    """What a rollback needs: a passkey added at Queue is one Raptor verifies, by email and
    usernameless, and Raptor's counter moves on from the one Queue wrote back."""
    c = make_customer("wb-pk")
    a = new_passkey(secrets.token_bytes(16))
    body = passkey_body(c.id, a, a.user_handle or b"", sign_count=3)
    a.sign_count = 3
    r = auth.call("POST", "/passkeys", body)
    assert r.status_code == 201, r.text
    row_id = r.json()["id"]
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM webauthn_credentials WHERE id = :id"), {"id": row_id}).one()._mapping
    assert row["customer_id"] == c.id and bytes(row["credential_id"]) == a.credential_id
    assert bytes(row["public_key"]) == a.cose_key() and bytes(row["user_handle"]) == a.user_handle
    assert row["sign_count"] == 3 and row["device_type"] == "multi_device" and row["backed_up"] is True
    assert row["transports"] == ["internal", "hybrid"] and row["name"] == "added at Queue"
    assert row["aaguid"] == "00000000-0000-0000-0000-000000000000"
    assert row["created_at"].isoformat() == "2026-01-02T03:04:05+00:00" and row["last_used_at"] is None

    events = audit_events(engine, "passkey.registered", row_id)
    assert len(events) == 1
    event = events[0]
    assert event["actor"] == {"type": "system", "id": "queue"}
    assert event["tenant_id"] == str(DEMO_TENANT_ID)
    assert event["payload"]["customer_id"] == c.id and event["payload"]["queue_id"] == body["queue_id"]
    assert event["payload"]["queue_issuer"] == "auth" and event["payload"]["via"] == "queue.writeback"

    # Sent again (a relay retry): the same answer, nothing changed, no second event.
    again = auth.call("POST", "/passkeys", body)
    assert again.status_code == 200 and again.json() == {"id": row_id}
    assert len(audit_events(engine, "passkey.registered", row_id)) == 1

    client, r = passkey_signin(wb_url, a, c.email)
    assert r.status_code == 200, r.text
    assert client.get("/api/me").json()["customer"]["id"] == c.id
    _, r = passkey_signin(wb_url, a, None)
    assert r.status_code == 200, r.text
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT sign_count FROM webauthn_credentials WHERE id = :id"), {"id": row_id}
            ).scalar_one()
            == 5
        )


def test_a_second_passkey_must_carry_the_customers_handle(
    wb_url: str, auth: Queue, make_customer: MakeCustomer
) -> None:
    c = make_customer("wb-handle")
    handle = secrets.token_bytes(16)
    first = new_passkey(handle)
    assert auth.call("POST", "/passkeys", passkey_body(c.id, first, handle)).status_code == 201
    other = new_passkey(secrets.token_bytes(16))
    r = auth.call("POST", "/passkeys", passkey_body(c.id, other, other.user_handle or b""))
    assert r.status_code == 422 and error_of(r)["field"] == "user_handle"
    second = new_passkey(handle)
    assert auth.call("POST", "/passkeys", passkey_body(c.id, second, handle)).status_code == 201
    # Both sign in usernameless at Raptor.
    for a in (first, second):
        _, r = passkey_signin(wb_url, a, None)
        assert r.status_code == 200, r.text


def test_a_credential_of_another_customer_conflicts(auth: Queue, make_customer: MakeCustomer) -> None:
    c, d = make_customer("wb-own"), make_customer("wb-other")
    a = new_passkey(secrets.token_bytes(16))
    assert auth.call("POST", "/passkeys", passkey_body(c.id, a, a.user_handle or b"")).status_code == 201
    r = auth.call("POST", "/passkeys", passkey_body(d.id, a, a.user_handle or b""))
    assert r.status_code == 409 and error_of(r)["code"] == "conflict"


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"surprise": 1}, "surprise"),
        ({"customer_id": "12"}, "customer_id"),
        ({"customer_id": 999_999_999}, "customer_id"),
        ({"credential_id": "AAA="}, "credential_id"),
        ({"credential_id": "a+b/"}, "credential_id"),
        ({"public_key": b64u(b"not cbor")}, "public_key"),
        ({"sign_count": -1}, "sign_count"),
        ({"sign_count": True}, "sign_count"),
        ({"device_type": "platform"}, "device_type"),
        ({"backed_up": "yes"}, "backed_up"),
        ({"aaguid": "nope"}, "aaguid"),
        ({"transports": "usb"}, "transports"),
        ({"created_at": "2026-01-02"}, "created_at"),
        ({"created_at": "2026-01-02T03:04:05"}, "created_at"),
        ({"user_handle": ""}, "user_handle"),
    ],
)
def test_a_passkey_body_is_checked(auth: Queue, make_customer: MakeCustomer, over: dict[str, Any], field: str) -> None:
    c = make_customer("wb-bad")
    a = new_passkey(secrets.token_bytes(16))
    r = auth.call("POST", "/passkeys", passkey_body(c.id, a, a.user_handle or b"", **over))
    assert r.status_code == 422, r.text
    assert error_of(r)["code"] == "invalid_request" and error_of(r)["field"] == field


def test_a_missing_member_is_named(auth: Queue, make_customer: MakeCustomer) -> None:
    c = make_customer("wb-missing")
    a = new_passkey(secrets.token_bytes(16))
    body = passkey_body(c.id, a, a.user_handle or b"")
    del body["public_key"]
    r = auth.call("POST", "/passkeys", body)
    assert r.status_code == 422 and error_of(r)["field"] == "public_key"
    # The nullable members may be left out.
    body = passkey_body(c.id, a, a.user_handle or b"")
    for key in ("aaguid", "transports", "name", "queue_id"):
        del body[key]
    assert auth.call("POST", "/passkeys", body).status_code == 201


def test_a_counter_never_goes_down(engine: Engine, auth: Queue, make_customer: MakeCustomer) -> None:
    c = make_customer("wb-count")
    a = new_passkey(secrets.token_bytes(16))
    row_id = auth.call("POST", "/passkeys", passkey_body(c.id, a, a.user_handle or b"")).json()["id"]
    r = auth.call("PATCH", f"/passkeys/{row_id}", {"sign_count": 7, "last_used_at": "2026-02-01T10:00:00+01:00"})
    assert r.status_code == 200
    assert r.json() == {"id": row_id, "sign_count": 7, "last_used_at": "2026-02-01T09:00:00Z", "backed_up": True}
    # Lower values (an older update arriving late): ignored, not an error.
    r = auth.call("PATCH", f"/passkeys/{row_id}", {"sign_count": 4, "last_used_at": "2026-01-31T00:00:00Z"})
    assert r.status_code == 200 and r.json()["sign_count"] == 7
    assert r.json()["last_used_at"] == "2026-02-01T09:00:00Z"
    r = auth.call("PATCH", f"/passkeys/{row_id}", {"backed_up": False})
    assert r.status_code == 200 and r.json()["backed_up"] is False
    assert auth.call("PATCH", f"/passkeys/{row_id}", {}).json()["sign_count"] == 7
    events = audit_events(engine, "passkey.updated", row_id)
    assert [e["payload"]["changes"] for e in events] == [
        {"sign_count": {"from": 0, "to": 7}, "last_used_at": {"from": None, "to": "2026-02-01T09:00:00Z"}},
        {"backed_up": {"from": True, "to": False}},
    ]
    r = auth.call("PATCH", "/passkeys/999999999", {"sign_count": 1})
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    r = auth.call("PATCH", f"/passkeys/{row_id}", {"sign_count": 1, "name": "x"})
    assert r.status_code == 422 and error_of(r)["field"] == "name"


def test_a_deleted_passkey_is_gone_and_deleting_again_is_fine(
    wb_url: str, engine: Engine, auth: Queue, make_customer: MakeCustomer
) -> None:
    c = make_customer("wb-del")
    a = new_passkey(secrets.token_bytes(16))
    row_id = auth.call("POST", "/passkeys", passkey_body(c.id, a, a.user_handle or b"")).json()["id"]
    r = auth.call("DELETE", f"/passkeys/{row_id}", {"queue_id": "q-1"})
    assert r.status_code == 204 and r.content == b""
    assert auth.call("DELETE", f"/passkeys/{row_id}").status_code == 204
    assert auth.call("DELETE", f"/passkeys/{row_id}", None).status_code == 204
    r = requests.delete(
        f"{wb_url}{PREFIX}/passkeys/{row_id}",
        data="null",
        headers={"Authorization": f"Bearer {auth.token()}", "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 204
    r = auth.call("DELETE", f"/passkeys/{row_id}", {"sign_count": 1})
    assert r.status_code == 422 and error_of(r)["field"] == "sign_count"
    assert auth.call("DELETE", "/passkeys/999999999").status_code == 204
    events = audit_events(engine, "passkey.deleted", row_id)
    assert len(events) == 1 and events[0]["payload"]["queue_id"] == "q-1"
    _, r = passkey_signin(wb_url, a, None)
    assert r.status_code == 401


# --- sessions and backup codes ----------------------------------------------------------------------


def _session_id(engine: Engine, token: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT id FROM customer_sessions WHERE token = :t"), {"t": token}).scalar_one())


def test_a_session_revoked_at_queue_ends_at_raptor(
    wb_url: str, engine: Engine, auth: Queue, make_customer: MakeCustomer
) -> None:
    c = make_customer("wb-sess")
    browser = Client(wb_url)
    browser.signin(c.email, c.password)
    assert browser.get("/api/me").status_code == 200
    sid = _session_id(engine, browser.cookies["raptor_session"])
    # Nanoseconds as chrono may write them: kept to the microsecond, as PostgreSQL keeps time.
    r = auth.call("POST", f"/sessions/{sid}/revoke", {"revoked_at": "2026-03-01t12:00:00.000000999z"})
    assert r.status_code == 200 and r.json() == {"id": sid, "revoked_at": "2026-03-01T12:00:00Z"}
    assert browser.get("/api/me").status_code == 401
    # Again, later: the first revocation is kept.
    r = auth.call("POST", f"/sessions/{sid}/revoke", {"revoked_at": "2026-03-02T12:00:00Z"})
    assert r.status_code == 200 and r.json()["revoked_at"] == "2026-03-01T12:00:00Z"
    events = audit_events(engine, "session.revoked", sid)
    assert len(events) == 1 and events[0]["actor"] == {"type": "system", "id": "queue"}
    assert auth.call("POST", "/sessions/999999999/revoke", {"revoked_at": "2026-03-01T12:00:00Z"}).status_code == 404
    r = auth.call("POST", f"/sessions/{sid}/revoke", {})
    assert r.status_code == 422 and error_of(r)["field"] == "revoked_at"


def test_a_backup_code_used_at_queue_no_longer_signs_in_at_raptor(
    wb_url: str, engine: Engine, auth: Queue, make_customer: MakeCustomer
) -> None:
    c = make_customer("wb-code")
    browser = Client(wb_url)
    browser.signin(c.email, c.password)
    codes = browser.post("/api/backup-codes").json()["codes"]
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, code_hash FROM customer_backup_codes WHERE customer_id = :c"), {"c": c.id}
        ).all()
    code_id = next(r.id for r in rows if check_password_hash(r.code_hash, codes[0].replace("-", "")))
    r = auth.call("POST", f"/backup-codes/{code_id}/use", {"used_at": "2026-03-01T12:00:00.123456Z"})
    assert r.status_code == 200 and r.json() == {"id": code_id, "used_at": "2026-03-01T12:00:00.123456Z"}
    r = auth.call("POST", f"/backup-codes/{code_id}/use", {"used_at": "2026-03-09T12:00:00Z"})
    assert r.status_code == 200 and r.json()["used_at"] == "2026-03-01T12:00:00.123456Z"
    assert len(audit_events(engine, "backup_code.used", code_id)) == 1
    signin = Client(wb_url).post("/api/signin/backup-code", json={"email": c.email, "code": codes[0]})
    assert signin.status_code == 401
    signin = Client(wb_url).post("/api/signin/backup-code", json={"email": c.email, "code": codes[1]})
    assert signin.status_code == 200
    assert auth.call("POST", "/backup-codes/999999999/use", {"used_at": "2026-03-01T12:00:00Z"}).status_code == 404


# --- grants ---------------------------------------------------------------------------------------


def _role_id(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT id FROM rbac_roles WHERE name = :n AND tenant_id IS NULL"), {"n": name}
            ).scalar_one()
        )


def _may(engine: Engine, customer_id: int, permission: str, ticket: str | None = None) -> bool:
    from raptor import rbac

    with engine.connect() as conn:
        return rbac.may(conn, customer_id, permission, DEMO_TENANT_ID, ticket)


def test_a_grant_made_at_queue_counts_at_raptor(
    engine: Engine, rbac_caller: Queue, make_customer: MakeCustomer
) -> None:
    c, admin = make_customer("wb-grant"), make_customer("wb-admin")
    body = {
        "customer_id": c.id,
        "role_id": _role_id(engine, "viewer"),
        "scope_type": "ticket",
        "tenant_id": str(DEMO_TENANT_ID),
        "ticket_id": "T-1003",
        "granted_by": admin.id,
        "granted_at": "2026-03-01T12:00:00Z",
        "expires_at": None,
        "reason": "asked for it",
        "queue_id": str(uuid.uuid4()),
    }
    assert not _may(engine, c.id, "ticket.read", "T-1003")
    r = rbac_caller.call("POST", "/grants", body)
    assert r.status_code == 201, r.text
    grant_id = r.json()["id"]
    assert _may(engine, c.id, "ticket.read", "T-1003") and not _may(engine, c.id, "ticket.read", "T-1001")
    again = rbac_caller.call("POST", "/grants", body)
    assert again.status_code == 200 and again.json() == {"id": grant_id}
    events = audit_events(engine, "rbac.grant.created", c.id)
    assert len(events) == 1
    assert events[0]["payload"]["grant"]["granted_by"] == admin.id
    assert events[0]["payload"]["queue_id"] == body["queue_id"]
    assert events[0]["actor"] == {"type": "system", "id": "queue"}
    # Another grant of the same role at the same scope, made at another time: another row.
    later = rbac_caller.call("POST", "/grants", {**body, "granted_at": "2026-03-02T12:00:00Z"})
    assert later.status_code == 201 and later.json()["id"] != grant_id

    r = rbac_caller.call(
        "POST", f"/grants/{grant_id}/revoke", {"revoked_at": "2026-03-05T00:00:00Z", "revoked_by": None}
    )
    assert r.status_code == 200
    assert r.json() == {"id": grant_id, "revoked_at": "2026-03-05T00:00:00Z", "revoked_by": None}
    r = rbac_caller.call(
        "POST", f"/grants/{grant_id}/revoke", {"revoked_at": "2026-03-06T00:00:00Z", "revoked_by": admin.id}
    )
    assert r.status_code == 200
    assert r.json() == {"id": grant_id, "revoked_at": "2026-03-05T00:00:00Z", "revoked_by": None}
    assert len(audit_events(engine, "rbac.grant.revoked", grant_id)) == 1
    r = rbac_caller.call("POST", "/grants/999999999/revoke", {"revoked_at": "2026-03-05T00:00:00Z"})
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"scope_type": "global", "tenant_id": str(DEMO_TENANT_ID)}, "tenant_id"),
        ({"scope_type": "tenant", "tenant_id": None}, "tenant_id"),
        ({"scope_type": "tenant", "ticket_id": "T-1"}, "ticket_id"),
        ({"scope_type": "ticket"}, "ticket_id"),
        ({"scope_type": "planet"}, "scope_type"),
        ({"tenant_id": str(uuid.uuid4())}, "tenant_id"),
        ({"role_id": 999_999_999}, "role_id"),
        ({"granted_by": 999_999_999}, "granted_by"),
        ({"granted_at": "yesterday"}, "granted_at"),
        ({"reason": ""}, "reason"),
        ({"role": "viewer"}, "role"),
    ],
)
def test_a_grant_body_is_checked(
    engine: Engine, rbac_caller: Queue, make_customer: MakeCustomer, over: dict[str, Any], field: str
) -> None:
    c = make_customer("wb-badgrant")
    body = {
        "customer_id": c.id,
        "role_id": _role_id(engine, "agent"),
        "scope_type": "tenant",
        "tenant_id": str(DEMO_TENANT_ID),
        "granted_at": "2026-03-01T12:00:00Z",
        **over,
    }
    r = rbac_caller.call("POST", "/grants", body)
    assert r.status_code == 422, r.text
    assert error_of(r)["field"] == field


def test_a_tenants_own_role_is_granted_only_in_that_tenant(
    engine: Engine, rbac_caller: Queue, make_customer: MakeCustomer
) -> None:
    other = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name) VALUES (:id, :n)"), {"id": other, "n": f"Other {other}"})
        role_id = conn.execute(
            text("INSERT INTO rbac_roles (tenant_id, name) VALUES (:t, 'their-role') RETURNING id"), {"t": other}
        ).scalar_one()
    c = make_customer("wb-role")
    body = {
        "customer_id": c.id,
        "role_id": role_id,
        "scope_type": "tenant",
        "tenant_id": str(DEMO_TENANT_ID),
        "granted_at": "2026-03-01T12:00:00Z",
    }
    r = rbac_caller.call("POST", "/grants", body)
    assert r.status_code == 422 and error_of(r)["field"] == "role_id"


# --- races and peers ------------------------------------------------------------------------------


def test_the_same_call_sent_concurrently_makes_one_row(
    engine: Engine, rbac_caller: Queue, auth: Queue, make_customer: MakeCustomer
) -> None:
    """A relay retrying while its first attempt is still in flight: one grant, one passkey, one
    event each; every answer names the same id."""
    c = make_customer("wb-race")
    grant = {
        "customer_id": c.id,
        "role_id": _role_id(engine, "agent"),
        "scope_type": "tenant",
        "tenant_id": str(DEMO_TENANT_ID),
        "granted_at": "2026-04-01T00:00:00Z",
    }
    a = new_passkey(secrets.token_bytes(16))
    passkey = passkey_body(c.id, a, a.user_handle or b"")
    with ThreadPoolExecutor(max_workers=8) as pool:
        grants = list(pool.map(lambda _: rbac_caller.call("POST", "/grants", grant), range(8)))
        keys = list(pool.map(lambda _: auth.call("POST", "/passkeys", passkey), range(8)))
    for answers in (grants, keys):
        assert sorted(r.status_code for r in answers) == [200] * 7 + [201], [r.text for r in answers]
        assert len({r.json()["id"] for r in answers}) == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM rbac_grants WHERE customer_id = :c"), {"c": c.id}).scalar() == 1
        n = conn.execute(text("SELECT count(*) FROM webauthn_credentials WHERE customer_id = :c"), {"c": c.id}).scalar()
        assert n == 1
    assert len(audit_events(engine, "rbac.grant.created", c.id)) == 1
    assert len(audit_events(engine, "passkey.registered", keys[0].json()["id"])) == 1


def test_an_issuer_whose_keys_cannot_be_fetched_is_a_retry(config: Config, engine: Engine, issuers: Issuers) -> None:
    """auth's JWKS unreachable (auth's URL names a closed port): 503, which the relay retries,
    not a 401 that would fail its rows for good."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = replace(writeback_config(config, issuers, ("auth", "rbac")), queue_auth_url=closed)
    with serve(create_app(down, engine)) as url:
        r = Queue(url, issuers.signer("auth")).call("GET", "/health")
        assert r.status_code == 503, r.text
        assert error_of(r)["code"] == "unavailable"
        # rbac's keys are fetched from rbac: unaffected.
        assert Queue(url, issuers.signer("rbac")).call("GET", "/health").status_code == 200


def test_the_settings(config: Config) -> None:
    from raptor.config import ConfigError

    base = {"RAPTOR_DATABASE_URL": "postgresql://q@127.0.0.1:1/r", "RAPTOR_MAIL_DIR": "/tmp/m"}
    linked = {**base, "RAPTOR_SIGNING_KEY": "k.pem", "RAPTOR_QUEUE_AUTH_URL": "http://127.0.0.1:8081/"}
    assert Config.from_env(base).writeback_issuers == ()
    on = Config.from_env({**linked, "RAPTOR_WRITEBACK_ISSUERS": " auth, auth ,"})
    assert on.writeback_issuers == ("auth",)
    assert on.writeback_jwks() == {"auth": "http://127.0.0.1:8081/.well-known/jwks.json"}
    with pytest.raises(ConfigError, match="RAPTOR_QUEUE_RBAC_URL is not set"):
        Config.from_env({**linked, "RAPTOR_WRITEBACK_ISSUERS": "auth,rbac"})
    with pytest.raises(ConfigError, match="must be one of auth, rbac, audit"):
        Config.from_env({**linked, "RAPTOR_WRITEBACK_ISSUERS": "raptor"})


def test_python_m_raptor_serves_it_as_make_run_configures_it(
    postgres: Postgres, engine: Engine, issuers: Issuers, tmp_path: Path, make_customer: MakeCustomer
) -> None:
    """The process with make run's settings (scripts/run-stack.sh): the setting is read, the
    verifier fetches the issuers' JWKS over HTTP, a token is never logged."""
    key = tmp_path / "raptor.pem"
    key.write_bytes(private_key_pem(issuers.keys["raptor"]))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RAPTOR_", "FLAG_"))},
        "PYTHONPATH": RAPTOR_PYTHONPATH,
        "RAPTOR_DATABASE_URL": postgres.url("raptor"),
        "RAPTOR_MAIL_DIR": str(tmp_path / "mail"),
        "RAPTOR_SIGNING_KEY": str(key),
        "RAPTOR_QUEUE_AUTH_URL": f"{issuers.base}/auth",
        "RAPTOR_QUEUE_RBAC_URL": f"{issuers.base}/rbac",
        "RAPTOR_WRITEBACK_ISSUERS": "auth,rbac",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "raptor", "--listen", f"127.0.0.1:{port}", "--no-demo"],
        cwd=RAPTOR_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    sent: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "raptor did not start in 30 s"
            time.sleep(0.1)
        assert requests.get(base + PREFIX + "/health", timeout=TIMEOUT).status_code == 401
        rbac_caller = Queue(base, issuers.signer("rbac"))
        sent.append(rbac_caller.token())
        assert rbac_caller.call("GET", "/health", token=sent[-1]).json() == {"ok": True}
        c = make_customer("wb-proc")
        grant = {
            "customer_id": c.id,
            "role_id": _role_id(engine, "viewer"),
            "scope_type": "tenant",
            "tenant_id": str(DEMO_TENANT_ID),
            "granted_at": "2026-05-01T00:00:00Z",
        }
        sent.append(rbac_caller.token())
        assert rbac_caller.call("POST", "/grants", grant, token=sent[-1]).status_code == 201
        assert rbac_caller.call("POST", "/grants", grant, token=sent[-1]).status_code == 401  # spent
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "write-back call refused: token was already used" in out
    for token in sent:
        assert token not in out and token.split(".")[2] not in out
