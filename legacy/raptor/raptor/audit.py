"""The one seam for Raptor's security events.

Every security-relevant action calls :func:`record` exactly once. Today the event is logged (no
secrets: callers pass identifiers, never tokens, passwords or codes); later this is where the
audit outbox (Queue's audit writer, issue 18 deliverable 3) is wired in, in the same transaction
as the change when ``conn`` is given.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import Connection

log = logging.getLogger("raptor.audit")


def record(action: str, *, actor: int | None, conn: Connection | None = None, **fields: Any) -> None:
    """Record the security event ``action`` (e.g. ``session.created``) done by customer ``actor``
    (None: the system or an anonymous caller). ``conn`` is the transaction the change happened in."""
    del conn  # the outbox will write through it; logging needs no transaction
    log.info("audit %s", json.dumps({"action": action, "actor": actor, **fields}, default=str, sort_keys=True))
