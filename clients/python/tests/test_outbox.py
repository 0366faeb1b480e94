"""The SQLAlchemy outbox on a real PostgreSQL database of the app's own, delivering to the real audit."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Column, Engine, MetaData, String, Table, create_engine, func, select
from sqlalchemy.orm import Session

from conftest import Stack
from queue_client import AuditEvent, Party, Queue, Unavailable
from queue_client.outbox import Outbox, Relay, enqueue

metadata = MetaData()
tickets = Table("tickets", metadata, Column("id", String(32), primary_key=True), Column("state", String(16)))
outbox = Outbox(metadata)


@pytest.fixture(scope="module")
def engine(stack: Stack) -> Iterator[Engine]:
    name = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = stack.database_url.replace("postgres://", "postgresql+psycopg://").rsplit("/", 1)[0] + f"/{name}"
    engine = create_engine(url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def ticket_closed(tenant: str, ticket: str) -> AuditEvent:
    return AuditEvent(
        action="raptor.ticket.closed",
        tenant_id=tenant,
        actor=Party("user", "u-7"),
        target=Party("ticket", ticket),
        payload={"ticket": ticket},
    )


def close_ticket(engine: Engine, tenant: str, ticket: str, *, fail: bool = False) -> AuditEvent:
    """The app's change and its audit event in one transaction."""
    event = ticket_closed(tenant, ticket)
    with Session(engine) as session, session.begin():
        session.execute(tickets.insert().values(id=f"{tenant}:{ticket}", state="closed"))
        outbox.enqueue(session, event)
        if fail:
            raise RuntimeError("the app's change failed")
    return event


def rows(engine: Engine, tenant: str) -> list[tuple[str, bool, bool, int]]:
    t = outbox.table
    with Session(engine) as session:
        found = session.execute(
            select(t.c.event_id, t.c.delivered_at.is_not(None), t.c.failed_at.is_not(None), t.c.attempts)
            .where(t.c.body.contains(f'"tenant_id":"{tenant}"'))
            .order_by(t.c.seq)
        ).all()
    return [(r[0], bool(r[1]), bool(r[2]), r[3]) for r in found]


def chain_ids(queue: Queue, tenant: str) -> list[str]:
    return [e["id"] for e in queue.audit.events(tenant, limit=1000).events]


def test_the_event_commits_with_the_change_or_not_at_all(engine: Engine, tenant: str) -> None:
    kept = close_ticket(engine, tenant, "T-1")
    with pytest.raises(RuntimeError):
        close_ticket(engine, tenant, "T-2", fail=True)
    assert [r[0] for r in rows(engine, tenant)] == [kept.id]
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(tickets).where(tickets.c.id.like(f"{tenant}:%"))) == 1
        assert outbox.pending(session) >= 1


def test_the_function_form_enqueues_too(engine: Engine, tenant: str) -> None:
    event = ticket_closed(tenant, "T-9")
    with Session(engine) as session, session.begin():
        enqueue(session, event, outbox=outbox)
    assert [r[0] for r in rows(engine, tenant)] == [event.id]


def test_a_core_connection_enqueues_in_its_transaction(engine: Engine, tenant: str) -> None:
    kept, dropped = ticket_closed(tenant, "T-10"), ticket_closed(tenant, "T-11")
    with engine.begin() as conn:
        outbox.enqueue(conn, kept)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        outbox.enqueue(conn, dropped)
        raise RuntimeError("the change failed")
    assert [r[0] for r in rows(engine, tenant)] == [kept.id]


def test_the_relay_delivers_in_order_once(stack: Stack, engine: Engine, queue: Queue, tenant: str) -> None:
    events = [close_ticket(engine, tenant, f"T-{n}") for n in range(7)]
    relay = Relay(engine, outbox, queue.audit, batch=3)
    delivered = relay.run_once()
    assert delivered >= 7
    assert chain_ids(queue, tenant) == [e.id for e in events]
    assert all(delivered and not failed for _, delivered, failed, _ in rows(engine, tenant))
    assert relay.run_once() == 0
    assert chain_ids(queue, tenant) == [e.id for e in events], "nothing twice"


def test_audit_down_then_up_loses_nothing_and_writes_nothing_twice(
    stack: Stack, engine: Engine, queue: Queue, tenant: str
) -> None:
    Relay(engine, outbox, queue.audit).run_once()  # what other tests left
    stack.audit.stop()
    relay = Relay(engine, outbox, queue.audit, poll_interval=0.1, backoff_initial=0.1, backoff_max=0.5)
    try:
        events = [close_ticket(engine, tenant, f"T-{n}") for n in range(5)]  # the app keeps working
        with pytest.raises(Unavailable):
            relay.run_once()
        assert [r[1] for r in rows(engine, tenant)] == [False] * 5
        assert all(r[3] == 1 for r in rows(engine, tenant)), "the failed attempt is counted"
        relay.start()
        time.sleep(0.8)  # the relay backs off while audit is down
        assert relay.failures >= 2
        events.append(close_ticket(engine, tenant, "T-5"))
    finally:
        stack.audit.start()
    try:
        deadline = time.monotonic() + 20
        while not all(r[1] for r in rows(engine, tenant)) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        relay.stop()
    assert [r[1] for r in rows(engine, tenant)] == [True] * 6
    assert chain_ids(queue, tenant) == [e.id for e in events]


def test_a_relay_that_died_after_sending_does_not_write_twice(engine: Engine, queue: Queue, tenant: str) -> None:
    """Audit took the batch but the relay never marked it: the next run sends it again, and audit
    answers the first result for each event id, so the chain has each event once."""
    events = [close_ticket(engine, tenant, f"T-{n}") for n in range(3)]
    first = queue.audit.append_batch(events)  # as the relay would have, before dying
    relay = Relay(engine, outbox, queue.audit)
    assert relay.run_once() >= 3
    assert chain_ids(queue, tenant) == [e.id for e in events]
    page = queue.audit.events(tenant)
    assert [e["seq"] for e in page.events] == [a.seq for a in first]


def test_an_event_audit_refuses_for_good_does_not_block_the_others(engine: Engine, queue: Queue, tenant: str) -> None:
    good = close_ticket(engine, tenant, "T-1")
    bad = AuditEvent(action="auth.login", tenant_id=tenant, actor=Party("user", "u"), target=Party("user", "u"))
    with Session(engine) as session, session.begin():
        outbox.enqueue(session, bad)
    later = close_ticket(engine, tenant, "T-2")
    Relay(engine, outbox, queue.audit).run_once()
    state = {r[0]: (r[1], r[2]) for r in rows(engine, tenant)}
    assert state[good.id] == (True, False) and state[later.id] == (True, False)
    assert state[bad.id] == (False, True), "marked failed, with its error kept"
    assert chain_ids(queue, tenant) == [good.id, later.id]


def test_two_relays_at_once_still_deliver_each_event_once(engine: Engine, queue: Queue, tenant: str) -> None:
    events = [close_ticket(engine, tenant, f"T-{n}") for n in range(20)]
    relays = [Relay(engine, outbox, queue.audit, batch=4) for _ in range(3)]
    threads = [threading.Thread(target=r.run_once) for r in relays]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert chain_ids(queue, tenant) == [e.id for e in events]
    assert sum(r.delivered for r in relays) >= 20
