"""Customers and their ``raptor_session`` sessions (the old kind: fixed 14-day lifetime, token in
plaintext as the cookie carries it), password sign-in and sign-out."""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text
from werkzeug.security import check_password_hash, generate_password_hash

from . import audit

COOKIE_NAME = "raptor_session"
SESSION_DAYS = 14
# Checked when no customer matches, so that an unknown email costs as much as a wrong password.
_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Customer:
    id: int
    tenant_id: uuid.UUID
    email: str
    display_name: str | None
    email_verified_at: datetime | None
    has_password: bool


class AmbiguousEmail(Exception):
    """The email belongs to customers in several tenants: the caller must name the tenant."""


_CUSTOMER_COLS = (
    "c.id, c.tenant_id, c.email, c.display_name, c.email_verified_at, (c.password_hash IS NOT NULL) AS has_password"
)


def _customer(row: object) -> Customer:
    m = row._mapping  # type: ignore[attr-defined]
    return Customer(
        id=m["id"],
        tenant_id=m["tenant_id"],
        email=m["email"],
        display_name=m["display_name"],
        email_verified_at=m["email_verified_at"],
        has_password=m["has_password"],
    )


def get_customer(conn: Connection, customer_id: int) -> Customer | None:
    row = conn.execute(
        text(f"SELECT {_CUSTOMER_COLS} FROM customers c WHERE c.id = :id AND c.is_active"), {"id": customer_id}
    ).first()
    return _customer(row) if row else None


def find_by_email(conn: Connection, email: str, tenant: str | None) -> tuple[Customer, str | None] | None:
    """The active customer whose email is ``email`` (compared as ``lower(btrim(email))``), within
    ``tenant`` (an id or a name) when given, with their password hash. Raises AmbiguousEmail when
    no tenant is given and several tenants have that email."""
    params: dict[str, object] = {"e": email}
    where = "lower(btrim(c.email)) = lower(btrim(:e)) AND c.is_active"
    if tenant:
        where += " AND (c.tenant_id::text = :t OR c.tenant_id IN (SELECT id FROM tenants WHERE name = :t))"
        params["t"] = tenant.strip()
    rows = conn.execute(
        text(f"SELECT {_CUSTOMER_COLS}, c.password_hash FROM customers c WHERE {where} ORDER BY c.id LIMIT 2"), params
    ).all()
    if len(rows) > 1:
        raise AmbiguousEmail(email)
    if not rows:
        return None
    return _customer(rows[0]), rows[0]._mapping["password_hash"]


def burn_time(secret: str) -> None:
    """Spend what checking one werkzeug hash costs (when there is no hash to check)."""
    check_password_hash(_DUMMY_HASH, secret)


def check_password(conn: Connection, email: str, password: str, tenant: str | None) -> Customer | None:
    """The customer when ``password`` is theirs, else None (unknown email, no password, wrong one)."""
    found = find_by_email(conn, email, tenant)
    customer, password_hash = found if found else (None, None)
    if customer is None or password_hash is None:
        burn_time(password)
        return None
    return customer if check_password_hash(password_hash, password) else None


def create_session(conn: Connection, customer: Customer, *, method: str, ip: str | None, user_agent: str | None) -> str:
    """A new session for ``customer``; returns the cookie value (32 random bytes, URL-safe base64
    without padding: 43 characters). ``expires_at`` is exactly ``created_at`` + 14 days."""
    token = secrets.token_urlsafe(32)
    session_id = conn.execute(
        text(
            "INSERT INTO customer_sessions (customer_id, token, created_at, expires_at, last_seen_at, ip, user_agent)"
            " VALUES (:c, :t, now(), now() + make_interval(days => :d), now(), CAST(:ip AS inet), :ua) RETURNING id"
        ),
        {"c": customer.id, "t": token, "d": SESSION_DAYS, "ip": ip, "ua": user_agent},
    ).scalar_one()
    audit.record(
        "session.created",
        actor=customer.id,
        conn=conn,
        tenant=customer.tenant_id,
        target=("session", session_id),
        method=method,
        ip=ip,
    )
    return token


def session_customer(conn: Connection, token: str) -> tuple[Customer, int] | None:
    """The customer and session id behind a live session token (not revoked, not expired, the
    customer active); marks the session seen."""
    if not token or len(token) > 128:
        return None
    row = conn.execute(
        text(
            f"SELECT {_CUSTOMER_COLS}, s.id AS session_id, s.token FROM customer_sessions s"
            " JOIN customers c ON c.id = s.customer_id"
            " WHERE s.token = :t AND s.revoked_at IS NULL AND s.expires_at > now() AND c.is_active"
        ),
        {"t": token},
    ).first()
    if row is None or not hmac.compare_digest(row._mapping["token"].encode(), token.encode()):
        return None
    conn.execute(text("UPDATE customer_sessions SET last_seen_at = now() WHERE id = :id"), {"id": row.session_id})
    return _customer(row), int(row._mapping["session_id"])


def revoke_session(conn: Connection, session_id: int, actor: int) -> None:
    conn.execute(
        text("UPDATE customer_sessions SET revoked_at = now() WHERE id = :id AND revoked_at IS NULL"),
        {"id": session_id},
    )
    audit.record("session.revoked", actor=actor, conn=conn, target=("session", session_id), session_id=session_id)
