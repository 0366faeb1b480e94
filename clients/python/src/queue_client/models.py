"""What the client sends and receives: small frozen dataclasses over the services' JSON."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class SessionInfo:
    """auth's answer to ``sessions.validate``: ``valid`` and, when valid, whose session it is."""

    valid: bool
    user_id: str | None = None
    tenant_id: str | None = None
    session_id: str | None = None
    idle_expires_at: str | None = None
    absolute_expires_at: str | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SessionInfo:
        return cls(
            valid=bool(body.get("valid")),
            user_id=body.get("user_id"),
            tenant_id=body.get("tenant_id"),
            session_id=body.get("session_id"),
            idle_expires_at=body.get("idle_expires_at"),
            absolute_expires_at=body.get("absolute_expires_at"),
        )


@dataclass(frozen=True)
class User:
    """A user in auth. ``created`` is true when this call created it (201), false when it existed (200)."""

    id: str
    tenant_id: str
    email: str
    status: str
    display_name: str | None
    email_verified_at: str | None
    created: bool

    @classmethod
    def from_json(cls, body: dict[str, Any], *, created: bool) -> User:
        return cls(
            id=body["id"],
            tenant_id=body["tenant_id"],
            email=body["email"],
            status=body["status"],
            display_name=body.get("display_name"),
            email_verified_at=body.get("email_verified_at"),
            created=created,
        )


@dataclass(frozen=True)
class Check:
    """One question for rbac: may ``principal_id`` do ``permission`` on the tenant (or one of its tickets)?"""

    principal_id: str
    permission: str
    tenant_id: str
    ticket_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        resource: dict[str, str] = {"tenant_id": self.tenant_id}
        if self.ticket_id is not None:
            resource["ticket_id"] = self.ticket_id
        return {"principal_id": self.principal_id, "permission": self.permission, "resource": resource}


@dataclass(frozen=True)
class Decision:
    """rbac's answer to one check; ``grant_ids`` are the grants that allow it (empty when denied)."""

    allowed: bool
    grant_ids: tuple[str, ...]
    revision: int

    def __bool__(self) -> bool:
        return self.allowed


class Scope:
    """Where a grant applies (rbac's ``Scope``)."""

    @staticmethod
    def global_() -> dict[str, str]:
        return {"type": "global"}

    @staticmethod
    def tenant(tenant_id: str) -> dict[str, str]:
        return {"type": "tenant", "tenant_id": tenant_id}

    @staticmethod
    def ticket(tenant_id: str, ticket_id: str) -> dict[str, str]:
        return {"type": "ticket", "tenant_id": tenant_id, "ticket_id": ticket_id}


@dataclass(frozen=True)
class Grant:
    """A grant as rbac answers it (``raw`` holds every member)."""

    id: str
    principal_id: str
    role: str
    scope: dict[str, str]
    reason: str
    granted_by: str
    granted_at: str
    expires_at: str | None
    revoked_at: str | None
    audit_event_id: str
    raw: dict[str, Any] = field(compare=False, repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Grant:
        return cls(
            id=body["id"],
            principal_id=body["principal_id"],
            role=body["role"],
            scope=dict(body["scope"]),
            reason=body["reason"],
            granted_by=body["granted_by"],
            granted_at=body["granted_at"],
            expires_at=body.get("expires_at"),
            revoked_at=body.get("revoked_at"),
            audit_event_id=body["audit_event_id"],
            raw=body,
        )


@dataclass(frozen=True)
class GrantChange:
    """The answer to a grant or a revoke: the grant, the audit event written first, the revision."""

    grant: Grant
    audit_event_id: str
    revision: int


@dataclass(frozen=True)
class Party:
    """An actor or a target of an audit event: ``{"type": …, "id": …}``."""

    type: str
    id: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id}


@dataclass(frozen=True)
class AuditEvent:
    """One audit event. ``id`` (a UUID) is the idempotency key: send it again, it is written once.

    ``occurred_at`` defaults to now (UTC), kept to the microsecond as audit keeps it.
    """

    action: str
    tenant_id: str
    actor: Party
    target: Party
    payload: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ip: str | None = None
    user_agent: str | None = None
    trace_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The request body of ``POST /api/v1/audit/events``."""
        body: dict[str, Any] = {
            "id": self.id,
            "action": self.action,
            "tenant_id": self.tenant_id,
            "actor": self.actor.to_json(),
            "target": self.target.to_json(),
            "occurred_at": _rfc3339(self.occurred_at),
            "payload": self.payload,
        }
        for name in ("ip", "user_agent", "trace_id"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body

    def canonical(self) -> str:
        """The body as compact JSON with sorted keys: what an outbox stores and sends again, unchanged."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Appended:
    """Where an event landed in its tenant's chain."""

    id: str
    seq: int
    mac: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Appended:
        return cls(id=body["id"], seq=int(body["seq"]), mac=body["mac"])


@dataclass(frozen=True)
class EventPage:
    """A page of a tenant's events, oldest first; pass ``next_after_seq`` as ``after_seq`` for the next."""

    events: list[dict[str, Any]]
    next_after_seq: int | None


@dataclass(frozen=True)
class Caller:
    """What a service saw of our token (``GET /internal/v1/caller``)."""

    issuer: str
    audience: str
    scopes: tuple[str, ...]
    expires_at: int
