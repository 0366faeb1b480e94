"""RBAC v2 (#1500): the built-in roles, the grant API (grant, revoke with reason, list) and checks."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from raptor import rbac
from raptor.seed import BUILTIN_ROLES, DEMO_TENANT_ID
from sqlalchemy import Engine, text

from .conftest import ADMIN, AGENT, Client, MakeCustomer

T = str(DEMO_TENANT_ID)


def admin(base_url: str) -> Client:
    client = Client(base_url)
    client.signin(*ADMIN)
    return client


def check(client: Client, customer_id: int, permission: str, ticket: str | None = None, tenant: str | None = T) -> bool:
    params: dict[str, str | int] = {"customer_id": customer_id, "permission": permission}
    if tenant:
        params["tenant_id"] = tenant
    if ticket:
        params["ticket_id"] = ticket
    r = client.get("/api/rbac/check", params=params)
    assert r.status_code == 200, r.text
    return bool(r.json()["allowed"])


def test_the_built_in_roles_are_seeded(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT r.name, array_agg(rp.permission ORDER BY rp.permission) FROM rbac_roles r"
                " JOIN rbac_role_permissions rp ON rp.role_id = r.id WHERE r.tenant_id IS NULL GROUP BY r.name"
            )
        ).all()
    assert {name: tuple(perms) for name, perms in rows} == {n: tuple(sorted(p)) for n, (_, p) in BUILTIN_ROLES.items()}


def test_grant_check_revoke_at_tenant_scope(
    base_url: str, engine: Engine, make_customer: MakeCustomer, caplog: pytest.LogCaptureFixture
) -> None:
    boss = admin(base_url)
    c = make_customer("grantee")
    assert not check(boss, c.id, "ticket.write")
    r = boss.post(
        "/api/rbac/grants",
        json={"customer_id": c.id, "role": "agent", "scope_type": "tenant", "tenant_id": T, "reason": "joins support"},
    )
    assert r.status_code == 201, r.text
    g = r.json()["grant"]
    assert g["role"] == "agent" and g["scope_type"] == "tenant" and g["tenant_id"] == T and g["ticket_id"] is None
    assert g["reason"] == "joins support" and g["revoked_at"] is None
    with engine.connect() as conn:
        granted_by = conn.execute(text("SELECT granted_by FROM rbac_grants WHERE id = :id"), {"id": g["id"]}).scalar()
        admin_id = conn.execute(text("SELECT id FROM customers WHERE email = :e"), {"e": ADMIN[0]}).scalar()
    assert granted_by == admin_id == g["granted_by"]
    assert check(boss, c.id, "ticket.write") and check(boss, c.id, "ticket.read", ticket="T-1003")
    assert not check(boss, c.id, "rbac.grant")
    with engine.connect() as conn:
        assert not rbac.may(conn, c.id, "ticket.read", uuid.uuid4(), None)
    foreign = boss.get(
        "/api/rbac/check", params={"customer_id": str(c.id), "permission": "x", "tenant_id": str(uuid.uuid4())}
    )
    assert foreign.status_code == 403  # the admin has no rbac.read in that tenant
    # The grantee checks themselves without rbac.read.
    own = Client(base_url)
    own.signin(c.email, c.password)
    assert own.get("/api/rbac/check", params={"permission": "ticket.write", "tenant_id": T}).json()["allowed"] is True
    assert [x["id"] for x in own.get("/api/rbac/grants").json()["grants"]] == [g["id"]]
    assert own.get("/api/rbac/grants", params={"tenant_id": T}).status_code == 403
    assert own.get("/api/rbac/check", params={"permission": "x", "customer_id": admin_id}).status_code == 403

    listed = boss.get("/api/rbac/grants", params={"tenant_id": T, "customer_id": str(c.id)}).json()["grants"]
    assert [x["id"] for x in listed] == [g["id"]]

    assert boss.post(f"/api/rbac/grants/{g['id']}/revoke", json={}).status_code == 400
    caplog.set_level(logging.INFO, logger="raptor.audit")
    rv = boss.post(f"/api/rbac/grants/{g['id']}/revoke", json={"reason": "left the team"})
    assert rv.status_code == 200, rv.text
    assert rv.json()["grant"]["revoked_by"] == admin_id and rv.json()["grant"]["revoked_at"]
    assert any("rbac.grant.revoked" in m and "left the team" in m for m in caplog.messages)
    assert not check(boss, c.id, "ticket.write")
    again = boss.post(f"/api/rbac/grants/{g['id']}/revoke", json={"reason": "twice"})
    assert again.status_code == 409
    assert boss.get("/api/rbac/grants", params={"tenant_id": T, "customer_id": str(c.id)}).json()["grants"] == []
    history = boss.get("/api/rbac/grants", params={"tenant_id": T, "customer_id": str(c.id), "include_inactive": "1"})
    assert [x["reason"] for x in history.json()["grants"]] == ["joins support"]
    assert boss.post("/api/rbac/grants/999999999/revoke", json={"reason": "x"}).status_code == 404


def test_ticket_scope(base_url: str, engine: Engine, make_customer: MakeCustomer) -> None:
    boss = admin(base_url)
    c = make_customer("ticket")
    r = boss.post(
        "/api/rbac/grants",
        json={"customer_id": c.id, "role": "viewer", "scope_type": "ticket", "tenant_id": T, "ticket_id": "T-1003"},
    )
    assert r.status_code == 201, r.text
    assert check(boss, c.id, "ticket.read", ticket="T-1003")
    assert not check(boss, c.id, "ticket.read", ticket="T-1001")
    assert not check(boss, c.id, "ticket.read")  # the tenant as a whole
    assert not check(boss, c.id, "ticket.write", ticket="T-1003")
    with engine.connect() as conn:
        assert not rbac.may(conn, c.id, "ticket.read", uuid.uuid4(), "T-1003")
        assert rbac.may(conn, c.id, "ticket.read", DEMO_TENANT_ID, "T-1003")


def test_refused_grants(base_url: str, engine: Engine, make_customer: MakeCustomer) -> None:
    boss = admin(base_url)
    c = make_customer("refused")
    elsewhere = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name) VALUES (:id, 'Elsewhere')"), {"id": elsewhere})
    stranger = make_customer("stranger", tenant=elsewhere)

    def grant(client: Client, **body: Any) -> tuple[int, str]:
        r = client.post(
            "/api/rbac/grants",
            json={"customer_id": c.id, "role": "viewer", "scope_type": "tenant", "tenant_id": T, **body},
        )
        return r.status_code, r.json().get("error", "")

    agent = Client(base_url)
    agent.signin(*AGENT)
    assert grant(agent) == (403, "granting at this scope needs rbac.grant there")
    assert grant(boss, role="security_admin")[0] == 403  # the admin lacks audit.read, security.manage
    assert "audit.read" in grant(boss, role="auditor")[1]
    assert grant(boss, scope_type="global", tenant_id=None) == (403, "granting at this scope needs rbac.grant there")
    assert grant(boss, customer_id=stranger.id) == (409, "the customer is not in the grant's tenant")
    assert grant(boss, tenant_id=str(elsewhere), customer_id=stranger.id)[0] == 403
    assert grant(boss, role="wizard") == (404, "no role 'wizard' for this scope")
    assert grant(boss, customer_id=10**9) == (404, f"no active customer {10**9}")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert grant(boss, expires_at=past) == (409, "expires_at is not in the future")
    assert grant(boss, scope_type="ticket")[0] == 400
    assert grant(boss, scope_type="galaxy")[0] == 400
    assert grant(boss, customer_id="1")[0] == 400
    me = Client(base_url)
    me.signin(c.email, c.password)
    assert grant(me) == (403, "nobody grants to themselves")
    assert Client(base_url).post("/api/rbac/grants", json={}).status_code == 401


def test_expiry_and_may(base_url: str, engine: Engine, make_customer: MakeCustomer) -> None:
    boss = admin(base_url)
    c = make_customer("expiring")
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = boss.post(
        "/api/rbac/grants",
        json={"customer_id": c.id, "role": "agent", "scope_type": "tenant", "tenant_id": T, "expires_at": soon},
    )
    assert r.status_code == 201
    assert check(boss, c.id, "ticket.write")
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE rbac_grants SET expires_at = now() - interval '1 s' WHERE id = :id"),
            {"id": r.json()["grant"]["id"]},
        )
        assert not rbac.may(conn, c.id, "ticket.write", DEMO_TENANT_ID, None)
        # A global grant (by the system) applies in every tenant, and only global grants count without one.
        conn.execute(
            text(
                "INSERT INTO rbac_grants (customer_id, role_id, scope_type) SELECT :c, id, 'global' FROM rbac_roles"
                " WHERE tenant_id IS NULL AND name = 'auditor'"
            ),
            {"c": c.id},
        )
        assert rbac.may(conn, c.id, "audit.read", None, None)
        assert rbac.may(conn, c.id, "audit.read", uuid.uuid4(), "T-9")
        assert not rbac.may(conn, c.id, "ticket.read", None, None)
        conn.execute(text("UPDATE customers SET is_active = false WHERE id = :c"), {"c": c.id})
        assert not rbac.may(conn, c.id, "audit.read", None, None)
