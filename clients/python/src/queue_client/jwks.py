"""The JWK Set an app publishes so Queue fetches its keys like a peer's, and key rotation.

The document has the shape and member names the services publish at
``GET /.well-known/jwks.json`` (``crates/queue-svc-token/src/jwks.rs``)::

    {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "…", "kid": "…", "alg": "EdDSA", "use": "sig"}]}

A service that trusts the app through ``[[tokens.trusted]] jwks_url`` fetches it at start-up,
every ``tokens.jwks_refresh_secs`` (300 s) and, when a token names a ``kid`` it does not know,
once more, at most once per ``tokens.jwks_refetch_min_secs`` (30 s).

Rotation without a window of 401s (:class:`KeyRing`):

1. :meth:`KeyRing.begin_rotation` publishes the new public key *beside* the current one; tokens
   are still signed with the current key.
2. Once ``publish_lead`` seconds have passed, :meth:`KeyRing.signing_key` switches to the new key
   by itself; the old public key stays published. Any verifier that sees the new ``kid`` then
   either fetched the JWKS after step 1 (and knows it), or last fetched more than
   ``jwks_refetch_min_secs`` ago and refetches now. So ``publish_lead`` ≥ the verifiers'
   ``jwks_refetch_min_secs`` is enough with one JWKS server; with several app replicas that may
   publish at different moments, use ``jwks_refresh_secs`` (the default, 300 s).
3. Tokens signed with the old key stay valid until they expire (at most 300 s, plus the
   verifiers' leeway): call :meth:`KeyRing.retire` after that to stop publishing it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from queue_client.tokens import _b64url, key_id, raw_public_bytes

#: What the services' own ``tokens.jwks_refresh_secs`` defaults to: the safe lead for any setup.
DEFAULT_PUBLISH_LEAD_SECS = 300.0


def public_jwk(key: Ed25519PublicKey | Ed25519PrivateKey) -> dict[str, str]:
    """The public key as the services publish one (RFC 8037 OKP JWK, ``kid`` per RFC 7638)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(raw_public_bytes(public)),
        "kid": key_id(public),
        "alg": "EdDSA",
        "use": "sig",
    }


def jwks_document(keys: Iterable[Ed25519PublicKey | Ed25519PrivateKey]) -> dict[str, list[dict[str, str]]]:
    """A JWK Set of these keys' public halves, without duplicates, in the order given."""
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    for key in keys:
        jwk = public_jwk(key)
        if jwk["kid"] not in seen:
            seen.add(jwk["kid"])
            out.append(jwk)
    return {"keys": out}


@dataclass(frozen=True)
class RotationState:
    """Where a :class:`KeyRing` is: the signing ``kid``, the staged one (if any) and when it takes over."""

    signing_kid: str
    staged_kid: str | None
    staged_signs_in: float | None
    published_kids: tuple[str, ...]


class KeyRing:
    """The app's signing key plus the public keys it still publishes; rotates without 401s.

    Thread-safe. ``previous`` are public keys to keep publishing (the keys of tokens still in
    flight after a restart with a new key). ``clock`` is monotonic seconds (tests may move it).
    Use it as the key of a :class:`queue_client.Signer` and serve :meth:`jwks` at
    ``/.well-known/jwks.json``.
    """

    def __init__(
        self,
        current: Ed25519PrivateKey,
        *,
        previous: Iterable[Ed25519PublicKey] = (),
        publish_lead: float = DEFAULT_PUBLISH_LEAD_SECS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if publish_lead < 0:
            raise ValueError("publish_lead must not be negative")
        self._lock = threading.Lock()
        self._current = current
        self._previous: list[Ed25519PublicKey] = list(previous)
        self._staged: tuple[Ed25519PrivateKey, float] | None = None
        self._lead = publish_lead
        self._clock = clock

    def _promote_if_due(self) -> None:
        # Called with the lock held.
        if self._staged is not None and self._clock() >= self._staged[1]:
            new, _ = self._staged
            self._previous.insert(0, self._current.public_key())
            self._current = new
            self._staged = None

    def signing_key(self) -> Ed25519PrivateKey:
        """The key to sign with now (the staged key once its publish lead has passed)."""
        with self._lock:
            self._promote_if_due()
            return self._current

    def begin_rotation(self, new_key: Ed25519PrivateKey, *, publish_lead: float | None = None) -> None:
        """Publish ``new_key`` now and sign with it after ``publish_lead`` seconds (default: the ring's)."""
        lead = self._lead if publish_lead is None else publish_lead
        if lead < 0:
            raise ValueError("publish_lead must not be negative")
        with self._lock:
            self._promote_if_due()
            if self._staged is not None:
                raise RuntimeError("a rotation is already under way; wait until the staged key signs")
            if key_id(new_key) == key_id(self._current):
                raise ValueError("the new key is the current key")
            self._staged = (new_key, self._clock() + lead)

    def retire(self, kid: str) -> bool:
        """Stop publishing a previous public key (after its last tokens expired). True if it was there."""
        with self._lock:
            self._promote_if_due()
            before = len(self._previous)
            self._previous = [k for k in self._previous if key_id(k) != kid]
            return len(self._previous) != before

    def public_keys(self) -> list[Ed25519PublicKey]:
        """Every key published now: the signing key, the staged one, then the previous ones."""
        with self._lock:
            self._promote_if_due()
            keys = [self._current.public_key()]
            if self._staged is not None:
                keys.append(self._staged[0].public_key())
            return keys + list(self._previous)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWK Set to serve at ``/.well-known/jwks.json``."""
        return jwks_document(self.public_keys())

    def state(self) -> RotationState:
        """A snapshot, for logs and status pages (no key material)."""
        with self._lock:
            self._promote_if_due()
            staged_kid = key_id(self._staged[0]) if self._staged else None
            signs_in = max(0.0, self._staged[1] - self._clock()) if self._staged else None
            published = [self._current.public_key()]
            if self._staged:
                published.append(self._staged[0].public_key())
            published += self._previous
            return RotationState(key_id(self._current), staged_kid, signs_in, tuple(key_id(k) for k in published))

    def __repr__(self) -> str:
        return f"KeyRing({self.state()!r})"
