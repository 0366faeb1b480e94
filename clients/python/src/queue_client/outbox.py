"""An audit outbox for SQLAlchemy: events committed with the app's change, delivered later, once.

::

    outbox = Outbox(Base.metadata)                     # adds the table queue_audit_outbox
    with Session(engine) as session, session.begin():
        session.add(grant_row)
        outbox.enqueue(session, AuditEvent(...))       # same transaction: both or neither
    relay = Relay(engine, outbox, queue.audit)
    relay.start()                                      # a thread: delivers, backs off while audit is down

Delivery: the relay locks the oldest pending rows (``FOR UPDATE``, so two relays never send
the same rows at once and order is kept), sends them with ``append_batch`` exactly as they were
stored, and marks them delivered in the same transaction. If it dies between audit's answer and
its commit, the rows are sent again, and audit answers the first result for an event id with the
same content: each event is in the chain once. A row audit refuses for good (403 action not
allowed, 409 the id with other content, 422/413 invalid) is marked ``failed`` with the error, so
one bad event does not hold the others back; everything else (down, 503, 429, 401 during a key
mix-up) is retried with backoff.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Identity,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session

from queue_client._http import RetryPolicy
from queue_client.client import Audit
from queue_client.errors import Conflict, Forbidden, Invalid, QueueError
from queue_client.models import AuditEvent

log = logging.getLogger("queue_client.outbox")

#: Refusals that sending again cannot change.
_PERMANENT = (Forbidden, Conflict, Invalid)


def _now() -> datetime:
    return datetime.now(UTC)


class Outbox:
    """The outbox table in the app's own ``metadata`` (its schema, its migrations)."""

    def __init__(self, metadata: MetaData, *, name: str = "queue_audit_outbox", schema: str | None = None) -> None:
        self.table = Table(
            name,
            metadata,
            Column("seq", BigInteger().with_variant(Integer(), "sqlite"), Identity(), primary_key=True),
            Column("event_id", String(36), nullable=False, unique=True),
            Column("body", Text, nullable=False),
            Column("enqueued_at", DateTime(timezone=True), nullable=False),
            Column("delivered_at", DateTime(timezone=True)),
            Column("failed_at", DateTime(timezone=True)),
            Column("attempts", Integer, nullable=False, default=0),
            Column("last_error", Text),
            schema=schema,
        )

    def enqueue(self, session: Session | Connection, event: AuditEvent) -> None:
        """Adds the event in the transaction of ``session`` (an ORM session or a Core connection):
        committed with the change or not at all."""
        session.execute(
            self.table.insert().values(event_id=event.id, body=event.canonical(), enqueued_at=_now(), attempts=0)
        )

    def pending(self, session: Session) -> int:
        """How many events wait to be delivered."""
        t = self.table
        count = session.scalar(
            select(func.count()).select_from(t).where(t.c.delivered_at.is_(None), t.c.failed_at.is_(None))
        )
        return int(count or 0)


def enqueue(session: Session | Connection, event: AuditEvent, *, outbox: Outbox) -> None:
    """:meth:`Outbox.enqueue` as a function."""
    outbox.enqueue(session, event)


class Relay:
    """Delivers an outbox to audit, in order, at most ``batch`` (≤ 500) events per request.

    :meth:`run_once` delivers what is pending now and returns how many it delivered (it raises
    the :class:`QueueError` when audit cannot take them). :meth:`start` runs it in a daemon
    thread: every ``poll_interval`` seconds, and after a failure with jittered exponential
    backoff from ``backoff_initial`` up to ``backoff_max``; :meth:`stop` ends it. ``retry`` is
    the client-side policy for one batch (default: one attempt; the relay's own backoff retries).
    """

    def __init__(
        self,
        engine: Engine,
        outbox: Outbox,
        audit: Audit,
        *,
        batch: int = 100,
        poll_interval: float = 1.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        retry: RetryPolicy | None = None,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not 1 <= batch <= 500:
            raise ValueError("batch must be 1 to 500 (audit's largest batch)")
        self.engine = engine
        self.outbox = outbox
        self.audit = audit
        self.batch = batch
        self.poll_interval = poll_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.retry = retry or RetryPolicy.never()
        self._jitter = jitter
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failures = 0

    def run_once(self) -> int:
        """Delivers every pending event (batch by batch) and returns the count; raises when audit fails."""
        total = 0
        while True:
            sent = self._deliver_batch()
            total += sent
            if sent < self.batch:
                return total

    def _deliver_batch(self) -> int:
        t = self.outbox.table
        with Session(self.engine) as session:
            rows = session.execute(
                select(t.c.seq, t.c.event_id, t.c.body)
                .where(t.c.delivered_at.is_(None), t.c.failed_at.is_(None))
                .order_by(t.c.seq)
                .limit(self.batch)
                .with_for_update()
            ).all()
            if not rows:
                session.rollback()
                return 0
            bodies: list[dict[str, Any]] = [json.loads(r.body) for r in rows]
            seqs = [r.seq for r in rows]
            try:
                self.audit.append_batch(bodies, retry=self.retry)
            except _PERMANENT as e:
                done = self._deliver_singly(session, rows, e)
                session.commit()
                return done
            except QueueError as e:
                session.execute(update(t).where(t.c.seq.in_(seqs)).values(attempts=t.c.attempts + 1, last_error=str(e)))
                session.commit()
                raise
            session.execute(update(t).where(t.c.seq.in_(seqs)).values(delivered_at=_now(), attempts=t.c.attempts + 1))
            session.commit()
            self.delivered += len(rows)
            return len(rows)

    def _deliver_singly(self, session: Session, rows: Any, cause: QueueError) -> int:
        """A batch was refused for good: find the refused events, mark them failed, deliver the rest."""
        t = self.outbox.table
        log.warning("audit refused a batch (%s); delivering it event by event", cause)
        done = 0
        for row in rows:
            try:
                self.audit.append(json.loads(row.body))
            except _PERMANENT as e:
                log.error("audit refused event %s for good: %s", row.event_id, e)
                session.execute(
                    update(t)
                    .where(t.c.seq == row.seq)
                    .values(failed_at=_now(), attempts=t.c.attempts + 1, last_error=str(e))
                )
                done += 1
                continue
            session.execute(update(t).where(t.c.seq == row.seq).values(delivered_at=_now(), attempts=t.c.attempts + 1))
            self.delivered += 1
            done += 1
        return done

    def wake(self) -> None:
        """Deliver now rather than at the next poll (call after committing an enqueue)."""
        self._wake.set()

    def start(self) -> None:
        """Runs the relay in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            raise RuntimeError("the relay is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="queue-audit-outbox-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the thread (after the batch in flight) and waits for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        backoff = self.backoff_initial
        while not self._stop.is_set():
            try:
                self.run_once()
                backoff = self.backoff_initial
                wait = self.poll_interval
            except QueueError as e:
                self.failures += 1
                wait = self._jitter(backoff / 2, backoff)
                log.warning("audit outbox: delivery failed (%s); next try in %.2fs", e, wait)
                backoff = min(self.backoff_max, backoff * 2)
            except Exception:
                self.failures += 1
                wait = self._jitter(backoff / 2, backoff)
                log.exception("audit outbox: unexpected error; next try in %.2fs", wait)
                backoff = min(self.backoff_max, backoff * 2)
            self._wake.wait(wait)
            self._wake.clear()
