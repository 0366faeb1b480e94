"""Retries: bounded, jittered, honouring Retry-After, and only where repeating is safe."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from conftest import Stack, free_port
from queue_client import Queue, RateLimited, RetryPolicy, Scope, Unavailable


@dataclass
class Recorder:
    """A RetryPolicy whose sleeps are recorded (and really taken)."""

    sleeps: list[float] = field(default_factory=list)

    def record(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(seconds)

    def policy(self, attempts: int = 4, total: float = 10.0) -> RetryPolicy:
        return RetryPolicy(attempts=attempts, total=total, base_delay=0.01, max_delay=0.05, sleep=self.record)


def test_a_refused_connection_is_retried_then_reported(stack: Stack) -> None:
    rec = Recorder()
    q = Queue(stack.signer(), rbac_url=f"http://127.0.0.1:{free_port()}", retry=rec.policy(attempts=3))
    with q, pytest.raises(Unavailable) as e:
        q.rbac.check("u", "ticket.read", tenant_id="t")
    assert len(rec.sleeps) == 2, "three attempts, two waits"
    assert all(0 <= s <= 0.05 for s in rec.sleeps)
    assert e.value.status is None and not e.value.maybe_applied
    assert "rbac.check (rbac): no answer: cannot reach" in str(e.value)


def test_the_total_time_bounds_the_retries(stack: Stack) -> None:
    slow = RetryPolicy(attempts=100, total=0.3, base_delay=0.1, max_delay=0.1, jitter=lambda lo, hi: hi)
    q = Queue(stack.signer(), rbac_url=f"http://127.0.0.1:{free_port()}", retry=slow)
    started = time.monotonic()
    with q, pytest.raises(Unavailable):
        q.rbac.check("u", "ticket.read", tenant_id="t")
    assert time.monotonic() - started < 1.0


def test_a_503_from_rbac_while_audit_is_down_is_retried_and_grants_once(stack: Stack, tenant: str) -> None:
    """rbac audits a grant first: with audit down it answers 503 "nothing changed". The client
    retries (a fresh token each time) until audit is back, and the grant exists exactly once."""
    principal = f"user-{uuid.uuid4().hex[:8]}"
    rec = Recorder()
    stack.audit.stop()
    restarter = threading.Timer(1.5, stack.audit.start)
    restarter.start()
    try:
        q = stack.queue(retry=RetryPolicy(attempts=60, total=45, base_delay=0.05, max_delay=0.3, sleep=rec.record))
        with q:
            granted = q.rbac.grant(principal, "viewer", Scope.tenant(tenant), reason="retry test")
            assert rec.sleeps, "the first attempts met a 503 and waited"
            assert [g.id for g in q.rbac.grants(principal_id=principal, include_inactive=True)] == [granted.grant.id]
    finally:
        restarter.join()
        if stack.audit.process is None:
            stack.audit.start()


def test_without_retries_the_503_says_so(stack: Stack, tenant: str) -> None:
    stack.audit.stop()
    try:
        with stack.queue(retry=RetryPolicy.never()) as q, pytest.raises(Unavailable) as e:
            q.rbac.grant("user-x", "viewer", Scope.tenant(tenant), reason="audit is down")
        assert e.value.status == 503 and e.value.code == "unavailable"
        assert e.value.retry_after is not None
        assert not e.value.maybe_applied
    finally:
        stack.audit.start()


# --- against a loopback stub: behaviour the real services do not show on demand -----------------


@dataclass
class Stub:
    url: str
    hits: list[str]


@pytest.fixture
def rate_limiting_stub() -> Iterator[Stub]:
    """Answers 429 (Retry-After: 1) twice, then a check's 200."""
    hits: list[str] = []

    @Request.application
    def app(request: Request) -> Response:
        hits.append(request.headers.get("Authorization", ""))
        if len(hits) <= 2:
            return Response(
                '{"error":{"code":"rate_limited","message":"slow down"}}',
                status=429,
                headers={"Retry-After": "1", "Content-Type": "application/json"},
            )
        return Response('{"allowed":true,"grant_ids":[],"revision":7}', content_type="application/json")

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Stub(f"http://127.0.0.1:{server.server_port}", hits)
    server.shutdown()
    thread.join(5)


def test_429_waits_at_least_retry_after_with_a_fresh_token_each_time(stack: Stack, rate_limiting_stub: Stub) -> None:
    rec = Recorder()
    q = Queue(stack.signer(), rbac_url=rate_limiting_stub.url, retry=rec.policy(attempts=5))
    with q:
        decision = q.rbac.check("u", "ticket.read", tenant_id="t")
    assert decision.allowed and decision.revision == 7
    assert rec.sleeps and all(s >= 1.0 for s in rec.sleeps)
    assert len(set(rate_limiting_stub.hits)) == 3, "every attempt carried its own token"


def test_429_beyond_the_budget_is_raised_with_retry_after(stack: Stack, rate_limiting_stub: Stub) -> None:
    q = Queue(stack.signer(), rbac_url=rate_limiting_stub.url, retry=RetryPolicy(attempts=5, total=0.5))
    with q, pytest.raises(RateLimited) as e:
        q.rbac.check("u", "ticket.read", tenant_id="t")
    assert e.value.retry_after == 1.0 and e.value.status == 429
    assert len(rate_limiting_stub.hits) == 1, "a wait past the total budget is not started"


@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[int]]]:
    """Accepts connections, reads the request, never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted: list[int] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    stop.set()
    thread.join(5)
    for c in held:
        c.close()
    listener.close()


def test_a_grant_that_timed_out_is_not_sent_again(stack: Stack, silent_server: tuple[str, list[int]]) -> None:
    url, accepted = silent_server
    rec = Recorder()
    q = Queue(stack.signer(), rbac_url=url, timeout=0.3, retry=rec.policy(attempts=4))
    with q, pytest.raises(Unavailable) as e:
        q.rbac.grant("u-1", "viewer", Scope.tenant("t"), reason="may have landed")
    assert e.value.maybe_applied, "the caller is told the grant may have been applied"
    assert accepted == [1] and rec.sleeps == []


def test_a_check_that_timed_out_is_sent_again(stack: Stack, silent_server: tuple[str, list[int]]) -> None:
    url, accepted = silent_server
    rec = Recorder()
    q = Queue(stack.signer(), rbac_url=url, timeout=0.3, retry=rec.policy(attempts=3))
    with q, pytest.raises(Unavailable):
        q.rbac.check("u-1", "ticket.read", tenant_id="t")
    assert len(accepted) == 3 and len(rec.sleeps) == 2
