"""Each call against the real services: what it returns and how each failure surfaces."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from conftest import Stack
from queue_client import (
    AuditEvent,
    Check,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Party,
    Queue,
    Scope,
)


def email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


# --- users.provision --------------------------------------------------------------------------


def test_provision_creates_then_returns_the_same_user(queue: Queue, tenant: str) -> None:
    address = email()
    first = queue.users.provision(address, tenant_id=tenant, display_name="Ada", email_verified=True)
    assert first.created is True
    assert (first.email, first.tenant_id, first.display_name, first.status) == (address, tenant, "Ada", "active")
    assert first.email_verified_at is not None
    again = queue.users.provision(address, tenant_id=tenant)
    assert again.created is False and again.id == first.id


def test_provision_refuses_a_bad_address_naming_the_field(queue: Queue) -> None:
    with pytest.raises(Invalid) as e:
        queue.users.provision("not an address")
    assert e.value.status == 422 and e.value.field == "email"
    assert e.value.service == "auth" and e.value.operation == "users.provision"


# --- sessions.validate ------------------------------------------------------------------------


def test_a_full_session_validates_with_its_user_and_tenant(stack: Stack, queue: Queue, tenant: str) -> None:
    user = queue.users.provision(email(), tenant_id=tenant, email_verified=True)
    token = stack.full_session(user.id, tenant)
    info = queue.sessions.validate(token)
    assert info.valid and info.user_id == user.id and info.tenant_id == tenant
    assert info.session_id is not None and info.idle_expires_at is not None


def test_an_unknown_token_is_not_valid(queue: Queue) -> None:
    info = queue.sessions.validate("A" * 43)
    assert not info.valid and info.user_id is None


def test_an_email_verification_session_is_not_a_full_session(stack: Stack, queue: Queue) -> None:
    """The flow auth allows without an authenticator: mail a code (dev mailer), confirm it."""
    address = email()
    sent = httpx.post(f"{stack.auth.url}/api/v1/auth/email/verification", json={"email": address}, timeout=5)
    assert sent.status_code == 202
    code = None
    deadline = time.monotonic() + 15
    mail = stack.base / "mail"
    while code is None and time.monotonic() < deadline:
        for message in mail.glob("*.txt") if mail.is_dir() else []:
            text = Path(message).read_text()
            if f"To: {address}" in text:
                found = re.search(r"verification code is (\d{8})", text)
                code = found.group(1) if found else None
        time.sleep(0.1)
    assert code is not None, "the dev mailer wrote no message"
    confirmed = httpx.post(
        f"{stack.auth.url}/api/v1/auth/email/verification/confirm", json={"email": address, "code": code}, timeout=5
    )
    assert confirmed.status_code == 200, confirmed.text
    session = confirmed.json()["session"]
    assert session["kind"] == "enrollment"
    assert not queue.sessions.validate(session["token"]).valid, "only full sessions are valid for services"


# --- rbac -------------------------------------------------------------------------------------


def test_grant_check_batch_list_revoke(queue: Queue, tenant: str) -> None:
    principal = f"user-{uuid.uuid4().hex[:8]}"
    assert not queue.rbac.check(principal, "ticket.read", tenant_id=tenant, ticket_id="T-1")

    granted = queue.rbac.grant(principal, "viewer", Scope.ticket(tenant, "T-1"), reason="on call for T-1")
    assert granted.grant.role == "viewer" and granted.grant.granted_by == "service:raptor"
    assert granted.grant.scope == {"type": "ticket", "tenant_id": tenant, "ticket_id": "T-1"}

    allowed = queue.rbac.check(principal, "ticket.read", tenant_id=tenant, ticket_id="T-1")
    assert allowed.allowed and allowed.grant_ids == (granted.grant.id,)
    assert allowed.revision >= granted.revision

    decisions = queue.rbac.check_batch(
        [
            Check(principal, "ticket.read", tenant, "T-1"),
            Check(principal, "ticket.read", tenant, "T-2"),
            Check(principal, "ticket.write", tenant, "T-1"),
            Check(principal, "ticket.read", tenant),
        ]
    )
    assert [d.allowed for d in decisions] == [True, False, False, False]
    assert len({d.revision for d in decisions}) == 1

    assert [g.id for g in queue.rbac.grants(principal_id=principal)] == [granted.grant.id]

    revoked = queue.rbac.revoke(granted.grant.id, reason="T-1 closed")
    assert revoked.grant.revoked_at is not None
    assert not queue.rbac.check(principal, "ticket.read", tenant_id=tenant, ticket_id="T-1")
    assert queue.rbac.grants(principal_id=principal) == []
    assert [g.id for g in queue.rbac.grants(principal_id=principal, include_inactive=True)] == [granted.grant.id]

    with pytest.raises(Conflict) as e:
        queue.rbac.revoke(granted.grant.id, reason="again")
    assert e.value.status == 409 and e.value.operation == "rbac.revoke"


def test_rbac_errors_say_what_failed(queue: Queue, tenant: str) -> None:
    with pytest.raises(NotFound) as missing_role:
        queue.rbac.grant("user-1", "no-such-role", Scope.tenant(tenant), reason="test")
    assert missing_role.value.status == 404 and missing_role.value.code == "not_found"

    with pytest.raises(NotFound):
        queue.rbac.revoke(str(uuid.uuid4()), reason="test")

    with pytest.raises(Invalid) as bad:
        queue.rbac.grant("user 1", "viewer", Scope.tenant(tenant), reason="test")
    assert bad.value.field is not None and "principal_id" in bad.value.field

    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    with pytest.raises(Conflict):
        queue.rbac.grant("user-1", "viewer", Scope.tenant(tenant), reason="test", expires_at=past)


# --- audit ------------------------------------------------------------------------------------


def event(tenant: str, action: str = "raptor.ticket.closed", **payload: object) -> AuditEvent:
    return AuditEvent(
        action=action,
        tenant_id=tenant,
        actor=Party("user", "u-1"),
        target=Party("ticket", "T-1"),
        payload=dict(payload),
        user_agent="raptor-tests",
    )


def test_append_is_idempotent_by_event_id(queue: Queue, tenant: str) -> None:
    e = event(tenant, resolution="fixed")
    first = queue.audit.append(e)
    again = queue.audit.append(e)
    assert again == first, "the same id with the same content answers the first result"
    page = queue.audit.events(tenant)
    assert [ev["id"] for ev in page.events] == [e.id]
    assert page.events[0]["payload"] == {"resolution": "fixed"}

    changed = AuditEvent(
        action=e.action, tenant_id=tenant, actor=e.actor, target=e.target, payload={"resolution": "wontfix"}, id=e.id
    )
    with pytest.raises(Conflict) as c:
        queue.audit.append(changed)
    assert c.value.operation == "audit.append" and c.value.status == 409


def test_append_batch_is_in_order_and_read_back(queue: Queue, tenant: str) -> None:
    events = [event(tenant, n=i) for i in range(5)]
    results = queue.audit.append_batch(events)
    assert [r.id for r in results] == [e.id for e in events]
    assert [r.seq for r in results] == sorted(r.seq for r in results)
    page = queue.audit.events(tenant, limit=10)
    assert [ev["payload"]["n"] for ev in page.events] == [0, 1, 2, 3, 4]
    assert queue.audit.append_batch([]) == []


def test_an_action_raptor_does_not_own_is_forbidden(queue: Queue, tenant: str) -> None:
    with pytest.raises(Forbidden) as e:
        queue.audit.append(event(tenant, action="auth.session.created"))
    assert e.value.status == 403 and e.value.service == "audit"
    assert queue.audit.events(tenant).events == []


def test_writes_spend_tokens_so_the_client_mints_one_per_request(stack: Stack, queue: Queue, tenant: str) -> None:
    token = stack.signer().mint("audit", ["audit:write"])
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{stack.audit.url}/api/v1/audit/events"
    assert httpx.post(url, json=event(tenant).to_json(), headers=headers).status_code == 201
    replayed = httpx.post(url, json=event(tenant).to_json(), headers=headers)
    assert replayed.status_code == 401, "a token is spent by its first write"
    for _ in range(3):
        queue.audit.append(event(tenant))  # each with its own token
    assert len(queue.audit.events(tenant).events) == 4
