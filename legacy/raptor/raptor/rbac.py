"""RBAC v2 (#1500): roles, grants at global, tenant and ticket scope, and checks.

A grant is in force when it is not revoked and not expired. A global grant applies everywhere, a
tenant grant within its tenant (tickets included), a ticket grant to that ticket only. Granting and
revoking need ``rbac.grant`` at the grant's scope; granting also needs every permission of the role
there (no escalation), and nobody grants to themselves.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from . import audit

SCOPES = ("global", "tenant", "ticket")

_IN_FORCE = "g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())"
_COVERS = (
    "(g.scope_type = 'global'"
    " OR (g.scope_type = 'tenant' AND g.tenant_id = CAST(:tenant AS uuid))"
    " OR (g.scope_type = 'ticket' AND g.tenant_id = CAST(:tenant AS uuid) AND g.ticket_id = CAST(:ticket AS text)))"
)


class RbacError(Exception):
    """A grant or revocation refused; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Scope:
    type: str
    tenant_id: uuid.UUID | None = None
    ticket_id: str | None = None

    @classmethod
    def parse(cls, scope_type: str, tenant_id: str | None, ticket_id: str | None) -> Scope:
        if scope_type not in SCOPES:
            raise RbacError(400, f"scope_type must be one of {', '.join(SCOPES)}")
        if scope_type == "global":
            if tenant_id or ticket_id:
                raise RbacError(400, "a global grant has no tenant_id or ticket_id")
            return cls("global")
        if not tenant_id:
            raise RbacError(400, f"a {scope_type} grant needs tenant_id")
        try:
            tenant = uuid.UUID(tenant_id)
        except ValueError:
            raise RbacError(400, "tenant_id must be a UUID") from None
        if scope_type == "tenant":
            if ticket_id:
                raise RbacError(400, "a tenant grant has no ticket_id")
            return cls("tenant", tenant)
        if not ticket_id or len(ticket_id) > 128:
            raise RbacError(400, "a ticket grant needs ticket_id (1-128 characters)")
        return cls("ticket", tenant, ticket_id)


def may(
    conn: Connection, customer_id: int, permission: str, tenant_id: uuid.UUID | None, ticket_id: str | None
) -> bool:
    """Whether the customer holds ``permission`` at ``tenant_id`` (None: only global grants count)
    and, when given, ``ticket_id`` within it."""
    row = conn.execute(
        text(
            "SELECT 1 FROM rbac_grants g JOIN rbac_role_permissions rp ON rp.role_id = g.role_id"
            " JOIN customers c ON c.id = g.customer_id"
            f" WHERE g.customer_id = :c AND rp.permission = :p AND c.is_active AND {_IN_FORCE} AND {_COVERS} LIMIT 1"
        ),
        {"c": customer_id, "p": permission, "tenant": tenant_id, "ticket": ticket_id},
    ).first()
    return row is not None


def tickets_with(conn: Connection, customer_id: int, permission: str, tenant_id: uuid.UUID) -> set[str]:
    """The tickets of ``tenant_id`` the customer holds ``permission`` on through ticket grants."""
    rows = conn.execute(
        text(
            "SELECT DISTINCT g.ticket_id FROM rbac_grants g JOIN rbac_role_permissions rp ON rp.role_id = g.role_id"
            " JOIN customers c ON c.id = g.customer_id"
            f" WHERE g.customer_id = :c AND rp.permission = :p AND c.is_active AND {_IN_FORCE}"
            " AND g.scope_type = 'ticket' AND g.tenant_id = :t"
        ),
        {"c": customer_id, "p": permission, "t": tenant_id},
    ).all()
    return {str(r[0]) for r in rows}


def _may_at(conn: Connection, customer_id: int, permission: str, scope: Scope) -> bool:
    return may(conn, customer_id, permission, scope.tenant_id, scope.ticket_id)


def grant_to_json(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {
        "id": m["id"],
        "customer_id": m["customer_id"],
        "role": m["role"],
        "scope_type": m["scope_type"],
        "tenant_id": str(m["tenant_id"]) if m["tenant_id"] else None,
        "ticket_id": m["ticket_id"],
        "granted_by": m["granted_by"],
        "granted_at": m["granted_at"].isoformat(),
        "expires_at": m["expires_at"].isoformat() if m["expires_at"] else None,
        "reason": m["reason"],
        "revoked_at": m["revoked_at"].isoformat() if m["revoked_at"] else None,
        "revoked_by": m["revoked_by"],
    }


_GRANT_SELECT = (
    "SELECT g.id, g.customer_id, r.name AS role, g.scope_type, g.tenant_id, g.ticket_id, g.granted_by, g.granted_at,"
    " g.expires_at, g.reason, g.revoked_at, g.revoked_by FROM rbac_grants g JOIN rbac_roles r ON r.id = g.role_id"
)


def grant(
    conn: Connection,
    granter: int,
    customer_id: int,
    role: str,
    scope: Scope,
    *,
    expires_at: datetime | None,
    reason: str | None,
) -> dict[str, Any]:
    if customer_id == granter:
        raise RbacError(403, "nobody grants to themselves")
    if not _may_at(conn, granter, "rbac.grant", scope):
        raise RbacError(403, "granting at this scope needs rbac.grant there")
    target = conn.execute(
        text("SELECT tenant_id FROM customers WHERE id = :c AND is_active"), {"c": customer_id}
    ).first()
    if target is None:
        raise RbacError(404, f"no active customer {customer_id}")
    if scope.tenant_id is not None and target.tenant_id != scope.tenant_id:
        raise RbacError(409, "the customer is not in the grant's tenant")
    role_row = conn.execute(
        text(
            "SELECT id FROM rbac_roles WHERE name = :n AND (tenant_id IS NULL OR tenant_id = CAST(:t AS uuid))"
            " ORDER BY tenant_id NULLS FIRST LIMIT 1"
        ),
        {"n": role, "t": scope.tenant_id},
    ).first()
    if role_row is None:
        raise RbacError(404, f"no role {role!r} for this scope")
    perms = conn.execute(
        text("SELECT permission FROM rbac_role_permissions WHERE role_id = :r ORDER BY permission"), {"r": role_row.id}
    ).scalars()
    lacking = [p for p in perms if not _may_at(conn, granter, p, scope)]
    if lacking:
        raise RbacError(403, f"the granter lacks {', '.join(lacking)} at this scope")
    if expires_at is not None:
        future = conn.execute(text("SELECT CAST(:e AS timestamptz) > now()"), {"e": expires_at}).scalar_one()
        if not future:
            raise RbacError(409, "expires_at is not in the future")
    grant_id = conn.execute(
        text(
            "INSERT INTO rbac_grants (customer_id, role_id, scope_type, tenant_id, ticket_id, granted_by, expires_at,"
            " reason) VALUES (:c, :r, :s, :t, :k, :by, :e, :why) RETURNING id"
        ),
        {
            "c": customer_id,
            "r": role_row.id,
            "s": scope.type,
            "t": scope.tenant_id,
            "k": scope.ticket_id,
            "by": granter,
            "e": expires_at,
            "why": reason,
        },
    ).scalar_one()
    row = conn.execute(text(_GRANT_SELECT + " WHERE g.id = :id"), {"id": grant_id}).one()
    made = grant_to_json(row)
    audit.record(
        "rbac.grant.created",
        actor=granter,
        conn=conn,
        tenant=scope.tenant_id,
        target=("customer", customer_id),
        grant=made,
    )
    return made


def revoke(conn: Connection, actor: int, grant_id: int, reason: str) -> dict[str, Any]:
    """Revoke a grant in force. The schema has no column for a revocation's reason, so the reason
    (required) goes to the audit event; ``revoked_at`` and ``revoked_by`` go to the row."""
    if not reason.strip():
        raise RbacError(400, "a revocation needs a reason")
    row = conn.execute(text(_GRANT_SELECT + " WHERE g.id = :id FOR UPDATE OF g"), {"id": grant_id}).first()
    if row is None:
        raise RbacError(404, f"no grant {grant_id}")
    scope = Scope(row.scope_type, row.tenant_id, row.ticket_id)
    if not _may_at(conn, actor, "rbac.grant", scope):
        raise RbacError(403, "revoking at this scope needs rbac.grant there")
    if row.revoked_at is not None:
        raise RbacError(409, f"grant {grant_id} is already revoked")
    conn.execute(
        text("UPDATE rbac_grants SET revoked_at = now(), revoked_by = :by WHERE id = :id"),
        {"id": grant_id, "by": actor},
    )
    after = conn.execute(text(_GRANT_SELECT + " WHERE g.id = :id"), {"id": grant_id}).one()
    audit.record(
        "rbac.grant.revoked",
        actor=actor,
        conn=conn,
        tenant=row.tenant_id,
        target=("grant", grant_id),
        grant_id=grant_id,
        reason=reason.strip(),
    )
    return grant_to_json(after)


def list_grants(
    conn: Connection, *, tenant_id: uuid.UUID | None, customer_id: int | None, include_inactive: bool
) -> list[dict[str, Any]]:
    where = ["TRUE"]
    params: dict[str, Any] = {}
    if tenant_id is not None:
        where.append("g.tenant_id = :t")
        params["t"] = tenant_id
    if customer_id is not None:
        where.append("g.customer_id = :c")
        params["c"] = customer_id
    if not include_inactive:
        where.append(_IN_FORCE)
    rows = conn.execute(text(f"{_GRANT_SELECT} WHERE {' AND '.join(where)} ORDER BY g.id"), params).all()
    return [grant_to_json(r) for r in rows]
