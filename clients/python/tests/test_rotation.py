"""Raptor's JWKS and key rotation: Queue takes the new key without a restart and without a 401."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from conftest import Service, Stack
from queue_client import (
    KeyRing,
    Queue,
    QueueError,
    RetryPolicy,
    Signer,
    Unauthorized,
    generate_private_key,
    key_id,
    load_private_key_file,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_ring_publishes_first_signs_later_and_keeps_the_old_key() -> None:
    clock = FakeClock()
    old, new = generate_private_key(), generate_private_key()
    ring = KeyRing(old, publish_lead=30, clock=clock)
    assert [k["kid"] for k in ring.jwks()["keys"]] == [key_id(old)]

    ring.begin_rotation(new)
    assert key_id(ring.signing_key()) == key_id(old), "not before the lead has passed"
    assert [k["kid"] for k in ring.jwks()["keys"]] == [key_id(old), key_id(new)]
    assert ring.state().staged_kid == key_id(new) and ring.state().staged_signs_in == 30
    with pytest.raises(RuntimeError):
        ring.begin_rotation(generate_private_key())

    clock.now += 30
    assert key_id(ring.signing_key()) == key_id(new)
    assert [k["kid"] for k in ring.jwks()["keys"]] == [key_id(new), key_id(old)], "the old key stays published"
    assert ring.state().staged_kid is None

    assert ring.retire(key_id(old)) is True
    assert [k["kid"] for k in ring.jwks()["keys"]] == [key_id(new)]
    assert ring.retire(key_id(old)) is False
    with pytest.raises(ValueError):
        ring.begin_rotation(new)
    assert "PRIVATE" not in repr(ring)


class RecordingKeys:
    """A KeySource over the ring that notes the kid of every token minted."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self.kids: list[str] = []
        self.lock = threading.Lock()

    def signing_key(self) -> Ed25519PrivateKey:
        key = self.ring.signing_key()
        with self.lock:
            self.kids.append(key_id(key))
        return key


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, KeyRing]]]:
    """Serves ``holder["ring"].jwks()`` at /.well-known/jwks.json, as Raptor will."""
    holder: dict[str, KeyRing] = {}
    fetches: list[float] = []

    @Request.application
    def app(request: Request) -> Response:
        if request.path != "/.well-known/jwks.json":
            return Response("not found", status=404)
        fetches.append(time.monotonic())
        import json

        return Response(json.dumps(holder["ring"].jwks()), content_type="application/json")

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json", holder
    server.shutdown()
    thread.join(5)


@pytest.fixture
def auth_trusting_jwks(stack: Stack, jwks_server: tuple[str, dict[str, KeyRing]]) -> Iterator[tuple[Service, KeyRing]]:
    url, holder = jwks_server
    holder["ring"] = KeyRing(load_private_key_file(stack.keys / "raptor.pem"), publish_lead=2.0)
    replica = stack.replica("auth", raptor=f'jwks_url = "{url}"')
    replica.start()
    try:
        yield replica, holder["ring"]
    finally:
        replica.stop()


def test_rotation_under_load_has_no_401_and_no_restart(
    stack: Stack, auth_trusting_jwks: tuple[Service, KeyRing]
) -> None:
    replica, ring = auth_trusting_jwks
    assert replica.process is not None
    pid = replica.process.pid
    keys = RecordingKeys(ring)
    user = stack.queue().users.provision(f"rot-{uuid.uuid4().hex[:8]}@example.com", tenant_id="rotation")
    session = stack.full_session(user.id, "rotation")
    statuses: Counter[int | str] = Counter()
    stop = threading.Event()

    def hammer() -> None:
        q = Queue(Signer("raptor", keys), auth_url=replica.url, retry=RetryPolicy.never())
        with q:
            while not stop.is_set():
                try:
                    assert q.sessions.validate(session).valid
                    q.users.caller()
                    statuses[200] += 2
                except QueueError as e:
                    statuses[e.status or "no answer"] += 1

    workers = [threading.Thread(target=hammer) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.5)
        old_kid = ring.state().signing_kid
        new = generate_private_key()
        ring.begin_rotation(new)  # published now, signs in 2 s
        deadline = time.monotonic() + 10
        while ring.state().signing_kid != key_id(new) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # keep calling with the new key
    finally:
        stop.set()
        for w in workers:
            w.join(10)

    kids = Counter(keys.kids)
    assert kids[old_kid] > 10 and kids[key_id(new)] > 10, kids
    assert set(statuses) == {200}, f"every call passed: {statuses}"
    assert replica.process is not None and replica.process.pid == pid and replica.process.poll() is None


def test_a_key_the_jwks_does_not_list_is_refused(stack: Stack, auth_trusting_jwks: tuple[Service, KeyRing]) -> None:
    replica, ring = auth_trusting_jwks
    with Queue(Signer("raptor", ring), auth_url=replica.url, retry=RetryPolicy.never()) as q:
        assert q.users.caller().issuer == "raptor"
    unlisted = Signer("raptor", generate_private_key())
    with Queue(unlisted, auth_url=replica.url, retry=RetryPolicy.never()) as q, pytest.raises(Unauthorized):
        q.users.caller()


def test_without_the_publish_lead_there_is_a_window_of_401s(
    stack: Stack, auth_trusting_jwks: tuple[Service, KeyRing]
) -> None:
    """The control for the test above: switch keys right after the service fetched the JWKS (here
    forced by a token with an unknown kid) and the new key is refused until the service may fetch
    again (``jwks_refetch_min_secs``, 1 s in these configs). The ring's lead is what avoids this."""
    replica, ring = auth_trusting_jwks
    stranger = Queue(Signer("raptor", generate_private_key()), auth_url=replica.url, retry=RetryPolicy.never())
    with stranger, pytest.raises(Unauthorized):
        stranger.users.caller()  # the service fetches the JWKS now
    ring.begin_rotation(generate_private_key(), publish_lead=0)
    with Queue(Signer("raptor", ring), auth_url=replica.url, retry=RetryPolicy.never()) as q:
        with pytest.raises(Unauthorized):
            q.users.caller()
        time.sleep(1.2)
        assert q.users.caller().issuer == "raptor", "after the refetch interval the new key is found"
