"""Seed data: RBAC v2's built-in permissions and roles (#1500, the same as Queue's rbac seed) and
the demo tenant with its customers and grants. Both are idempotent."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text
from werkzeug.security import generate_password_hash

from . import audit

PERMISSIONS: dict[str, str] = {
    "ticket.read": "read tickets",
    "ticket.write": "change tickets",
    "audit.read": "read the audit log",
    "rbac.read": "read roles and grants",
    "rbac.grant": "grant and revoke roles",
    "rbac.roles": "define a tenant's own roles",
    "security.manage": "manage security settings",
}

BUILTIN_ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "viewer": ("reads tickets", ("ticket.read",)),
    "agent": ("works tickets", ("ticket.read", "ticket.write")),
    "customer_admin": (
        "runs a tenant: tickets, roles, grants",
        ("ticket.read", "ticket.write", "rbac.read", "rbac.grant", "rbac.roles"),
    ),
    "auditor": ("reads the audit log", ("audit.read", "rbac.read")),
    "security_admin": (
        "everything, including security",
        ("ticket.read", "ticket.write", "audit.read", "rbac.read", "rbac.grant", "rbac.roles", "security.manage"),
    ),
}

DEMO_TENANT_ID = uuid.UUID("5a3c0e1e-0000-4000-8000-00000000a0c1")
DEMO_TENANT_NAME = "Acme"


@dataclass(frozen=True)
class DemoCustomer:
    email: str
    display_name: str
    password: str
    role: str
    ticket_id: str | None  # None: the grant is at the tenant


DEMO_CUSTOMERS: tuple[DemoCustomer, ...] = (
    DemoCustomer("admin@acme.test", "Ada Admin", "raptor-admin-demo", "customer_admin", None),
    DemoCustomer("agent@acme.test", "Alan Agent", "raptor-agent-demo", "agent", None),
    DemoCustomer("viewer@acme.test", "Vera Viewer", "raptor-viewer-demo", "viewer", "T-1002"),
)


def seed_rbac(conn: Connection) -> None:
    for name, description in PERMISSIONS.items():
        conn.execute(
            text("INSERT INTO rbac_permissions (name, description) VALUES (:n, :d) ON CONFLICT (name) DO NOTHING"),
            {"n": name, "d": description},
        )
    for role, (description, perms) in BUILTIN_ROLES.items():
        conn.execute(
            text(
                "INSERT INTO rbac_roles (tenant_id, name, description) VALUES (NULL, :n, :d)"
                " ON CONFLICT ((coalesce(tenant_id::text, '')), name) DO NOTHING"
            ),
            {"n": role, "d": description},
        )
        for perm in perms:
            conn.execute(
                text(
                    "INSERT INTO rbac_role_permissions (role_id, permission)"
                    " SELECT id, :p FROM rbac_roles WHERE tenant_id IS NULL AND name = :n"
                    " ON CONFLICT DO NOTHING"
                ),
                {"n": role, "p": perm},
            )


def seed_demo(conn: Connection) -> bool:
    """The demo tenant, customers and grants, unless the demo tenant exists; True when it seeded."""
    exists = conn.execute(text("SELECT 1 FROM tenants WHERE id = :id"), {"id": DEMO_TENANT_ID}).first()
    if exists:
        return False
    conn.execute(text("INSERT INTO tenants (id, name) VALUES (:id, :n)"), {"id": DEMO_TENANT_ID, "n": DEMO_TENANT_NAME})
    for c in DEMO_CUSTOMERS:
        customer_id = conn.execute(
            text(
                "INSERT INTO customers (tenant_id, email, display_name, password_hash)"
                " VALUES (:t, :e, :d, :p) RETURNING id"
            ),
            {"t": DEMO_TENANT_ID, "e": c.email, "d": c.display_name, "p": generate_password_hash(c.password)},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO rbac_grants (customer_id, role_id, scope_type, tenant_id, ticket_id, reason)"
                " SELECT :c, id, :s, :t, :k, 'demo data' FROM rbac_roles WHERE tenant_id IS NULL AND name = :r"
            ),
            {
                "c": customer_id,
                "s": "ticket" if c.ticket_id else "tenant",
                "t": DEMO_TENANT_ID,
                "k": c.ticket_id,
                "r": c.role,
            },
        )
    audit.record("demo.seeded", actor=None, conn=conn, tenant=DEMO_TENANT_ID, target=("tenant", str(DEMO_TENANT_ID)))
    return True


def seed(engine: Engine, *, demo: bool) -> bool:
    """Seed the built-ins, and the demo data when ``demo``; one transaction, serialized by a lock."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(7018)"))
        seed_rbac(conn)
        return seed_demo(conn) if demo else False
