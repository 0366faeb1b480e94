"""Raptor's link to Queue, through the Queue client (``clients/python``): its signing key and the
JWKS it publishes, key rotation, the audit relay, and the Queue-backed permission checks.

**Keys.** Raptor signs service tokens as issuer ``raptor`` with ``RAPTOR_SIGNING_KEY`` through a
:class:`queue_client.KeyRing` and serves the ring's JWK Set at ``/.well-known/jwks.json``, so
Queue's services fetch Raptor's keys like a peer's (``[[tokens.trusted]] jwks_url``; a static
``public_key`` works too, at the price of a restart on rotation). A rotation is a new key written
over the file (``python -m raptor rotate-key``): :class:`KeyFile` notices it within
``RAPTOR_KEY_CHECK_SECS``, publishes the new key at once, signs with it after
``RAPTOR_KEY_PUBLISH_LEAD_SECS`` (see ``queue_client/jwks.py`` for why that leaves no window of
401s), and stops publishing the old key once its last tokens have expired.

**Audit.** :class:`QueueLink` runs the client's outbox :class:`queue_client.outbox.Relay`, which
delivers what :func:`raptor.audit.record` committed, in order and once, backing off while audit is
down.

**Checks.** Queue's rbac knows people as Queue users: a customer's Queue user is provisioned
through auth (idempotent by tenant and email) the first time it is needed and remembered.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from queue_client import Check, KeyRing, Queue, QueueError, RetryPolicy, Signer, key_id, load_private_key_file
from queue_client.outbox import Relay
from queue_client.tokens import MAX_TTL_SECS, generate_private_key, private_key_pem, public_key_pem
from sqlalchemy import Engine

from . import audit
from .accounts import Customer
from .config import Config

log = logging.getLogger("raptor.queue")

ISSUER = "raptor"
#: How long a key that stopped signing stays published: its last token's lifetime (at most
#: 300 s) plus the verifiers' leeway (60 s).
RETIRE_AFTER_SECS = MAX_TTL_SECS + 60.0
#: Calls made while a page waits: two attempts within 3 s, then the page says Queue is unreachable.
PAGE_RETRY = RetryPolicy(attempts=2, total=3.0)


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size, st.st_ino


class KeyFile:
    """The signing key file and the ring built from it; :meth:`check` picks up a rotation."""

    def __init__(self, path: Path, *, publish_lead: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.publish_lead = publish_lead
        self._clock = clock
        self._seen = _stamp(path)
        self.ring = KeyRing(load_private_key_file(path), publish_lead=publish_lead, clock=clock)
        self._retire_at: dict[str, float] = {}

    def check(self) -> None:
        """Start a rotation when the file holds a new key; retire keys whose tokens have expired."""
        try:
            stamp = _stamp(self.path)
        except OSError as e:
            log.error("cannot read the signing key %s: %s (still signing with kid %s)", self.path, e, self.signing_kid)
            return
        if stamp != self._seen:
            self._rotate_to_file(stamp)
        state = self.ring.state()
        now = self._clock()
        for kid in state.published_kids:
            if kid in (state.signing_kid, state.staged_kid):
                continue
            if now >= self._retire_at.setdefault(kid, now + RETIRE_AFTER_SECS):
                self.ring.retire(kid)
                del self._retire_at[kid]
                log.info("key rotation: kid %s retired (no token signed with it is still valid)", kid)

    def _rotate_to_file(self, stamp: tuple[int, int, int]) -> None:
        try:
            key = load_private_key_file(self.path)
        except (OSError, ValueError) as e:
            log.error(
                "the signing key file changed but cannot be used: %s (still signing with kid %s)", e, self.signing_kid
            )
            self._seen = stamp
            return
        kid = key_id(key)
        state = self.ring.state()
        if kid in (state.signing_kid, state.staged_kid):
            self._seen = stamp
            return
        if state.staged_kid is not None:
            # One rotation at a time: this file is taken once the staged key signs.
            return
        self.ring.begin_rotation(key)
        self._seen = stamp
        log.info(
            "key rotation: kid %s published now, signs in %.0f s (kid %s until then)",
            kid,
            self.publish_lead,
            state.signing_kid,
        )

    @property
    def signing_kid(self) -> str:
        return self.ring.state().signing_kid


def rotate_key_file(path: Path) -> str:
    """Write a fresh key over ``path`` (and its public half beside it as ``<name>.pub.pem``), each
    atomically, mode 0600 for the private key; returns the new kid. A running Raptor picks it up."""
    key = generate_private_key()
    public = path.with_name(path.name.removesuffix(".pem") + ".pub.pem")
    _write_atomically(public, public_key_pem(key), 0o644)
    _write_atomically(path, private_key_pem(key), 0o600)
    return key_id(key)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass(frozen=True)
class QueueView:
    """What Queue's rbac answers for a customer: their Queue user and one decision per ticket."""

    user_id: str
    allowed: list[bool]


class QueueUnavailable(Exception):
    """Queue refused or did not answer; the message says which service and why (no secrets)."""


class QueueLink:
    """Raptor's keys, its Queue client and the audit relay, started with the app."""

    def __init__(self, config: Config, engine: Engine) -> None:
        if config.signing_key is None:
            raise ValueError("QueueLink needs RAPTOR_SIGNING_KEY")
        self.keys = KeyFile(config.signing_key, publish_lead=config.key_publish_lead_secs)
        self.signer = Signer(ISSUER, self.keys.ring)
        self.queue = Queue(
            self.signer,
            auth_url=config.queue_auth_url,
            rbac_url=config.queue_rbac_url,
            audit_url=config.queue_audit_url,
            retry=PAGE_RETRY,
        )
        self.relay = Relay(engine, audit.OUTBOX, self.queue.audit) if config.queue_audit_url else None
        self.can_check = config.queue_auth_url is not None and config.queue_rbac_url is not None
        self._check_every = config.key_check_secs
        self._users: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        self._watcher = threading.Thread(target=self._watch, name="raptor-key-file", daemon=True)
        self._watcher.start()
        if self.relay is not None:
            self.relay.start()
        log.info("Queue link: issuer %s, kid %s; %r", ISSUER, self.keys.signing_kid, self.queue)

    def stop(self) -> None:
        self._stop.set()
        if self.relay is not None:
            self.relay.stop()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self.queue.close()

    def _watch(self) -> None:
        while not self._stop.wait(self._check_every):
            try:
                self.keys.check()
            except Exception:  # the watcher must outlive any one bad check
                log.exception("key file check failed")

    def queue_user(self, customer: Customer) -> str:
        """The customer's Queue user id (provisioned in auth by tenant and email, then remembered)."""
        with self._lock:
            known = self._users.get(customer.id)
        if known is not None:
            return known
        user = self.queue.users.provision(
            customer.email.strip().lower(),
            tenant_id=str(customer.tenant_id),
            display_name=customer.display_name,
            email_verified=customer.email_verified_at is not None,
        )
        with self._lock:
            self._users[customer.id] = user.id
        return user.id

    def check_tickets(self, customer: Customer, permission: str, tickets: Sequence[str | None]) -> QueueView:
        """Queue's answer to ``permission`` for each ticket (None: the whole tenant)."""
        try:
            user_id = self.queue_user(customer)
            tenant = str(customer.tenant_id)
            decisions = self.queue.rbac.check_batch([Check(user_id, permission, tenant, t) for t in tickets])
        except QueueError as e:
            raise QueueUnavailable(str(e)) from None
        return QueueView(user_id, [bool(d) for d in decisions])
