"""The one seam for Raptor's security events: every security-relevant action calls :func:`record`
exactly once, in the transaction of the change.

An event is logged (identifiers only: callers never pass tokens, passwords or codes) and written
to the audit outbox in the same transaction, so it is committed with the change or not at all.
The outbox is the Queue client's table (``queue_client.outbox``) in a schema of its own,
``queue_outbox``, beside Raptor's ``public`` schema, which stays exactly ``raptor-schema.sql``.
When Raptor is wired to Queue (``RAPTOR_QUEUE_AUDIT_URL``) a relay delivers the outbox to Queue's
audit writer, in order and once, as action ``raptor.<event>``; while audit is down events wait
in the outbox, and without Queue they stay there until it is configured.

Queue's audit keeps a chain per tenant, so an event needs one: the ``tenant`` given, else the
acting customer's. An event with neither (a failed sign-in for an email nobody has) is logged
only.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from flask import has_request_context, request
from queue_client import AuditEvent, Party
from queue_client.outbox import Outbox
from sqlalchemy import Connection, Engine, MetaData, text
from sqlalchemy.orm import Session

log = logging.getLogger("raptor.audit")

#: The schema of the outbox in Raptor's database (not ``public``: that is raptor-schema.sql's).
OUTBOX_SCHEMA = "queue_outbox"
#: Every event Raptor writes to Queue's audit is ``raptor.<event>`` (audit's writers policy
#: lets issuer ``raptor`` write ``raptor.*``).
ACTION_PREFIX = "raptor."

_metadata = MetaData(schema=OUTBOX_SCHEMA)
OUTBOX = Outbox(_metadata)

#: Audit's longest User-Agent (docs/api/audit.md).
USER_AGENT_MAX = 1024

#: The target's party type for each kind of identifier an event names.
Target = tuple[str, str | int]


def ensure_outbox(engine: Engine) -> None:
    """Create the outbox schema and table when missing (the client's DDL, never in ``public``)."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(7018)"))
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {OUTBOX_SCHEMA}"))
        _metadata.create_all(conn, checkfirst=True)


def pending(engine: Engine) -> int:
    """How many events wait for Queue's audit."""
    with Session(engine) as session:
        return OUTBOX.pending(session)


def record(
    action: str,
    *,
    actor: int | None,
    conn: Connection,
    tenant: uuid.UUID | str | None = None,
    target: Target | None = None,
    system: str | None = None,
    **fields: Any,
) -> None:
    """Record the security event ``action`` (e.g. ``session.created``) done by customer ``actor``
    (None: the system or an anonymous caller), in ``conn``'s transaction. ``system`` names the
    system that acted when no customer did (default ``raptor``; ``queue`` for the write-back
    API): the actor is then ``system:<name>``. ``target`` is what the event is about, ``(type,
    id)``; default: the actor. ``fields`` go to the event's payload."""
    payload = _without_nul(json.loads(json.dumps(fields, default=str)))
    who: int | str | None = actor if actor is not None or system is None else f"system:{system}"
    log.info("audit %s", json.dumps({"action": action, "actor": who, **payload}, sort_keys=True))
    tenant_id = tenant if tenant is not None else _tenant_of(conn, actor)
    if tenant_id is None:
        return
    actor_party = Party("customer", str(actor)) if actor is not None else Party("system", system or "raptor")
    target_party = Party(target[0], str(target[1])) if target is not None else actor_party
    event = AuditEvent(
        action=ACTION_PREFIX + action,
        tenant_id=str(tenant_id),
        actor=actor_party,
        target=target_party,
        payload=payload,
        ip=request.remote_addr if has_request_context() else None,
        user_agent=_user_agent(),
    )
    OUTBOX.enqueue(conn, event)


def _without_nul(value: Any) -> Any:
    """``value`` with U+0000 replaced in every key and string: audit refuses it in a payload (it
    keeps payloads as jsonb, which cannot hold it), and a refused event would never arrive."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def _user_agent() -> str | None:
    """The request's User-Agent as audit takes it: no control characters, at most 1,024 characters."""
    if not has_request_context():
        return None
    raw = request.headers.get("User-Agent") or ""
    clean = "".join(ch for ch in raw if ch.isprintable())[:USER_AGENT_MAX]
    return clean or None


def _tenant_of(conn: Connection, customer_id: int | None) -> uuid.UUID | None:
    if customer_id is None:
        return None
    found = conn.execute(text("SELECT tenant_id FROM customers WHERE id = :id"), {"id": customer_id}).scalar()
    return found if isinstance(found, uuid.UUID) else None
