"""Service tokens: Ed25519-signed JWTs in the format Queue's services verify.

The format (docs/service-tokens.md, ``crates/queue-svc-token``): header ``alg: EdDSA``,
``typ: queue-svc+jwt``, ``kid`` = the RFC 7638 thumbprint of the key's OKP JWK; claims ``iss``,
``aud`` (exactly one service, a string), ``iat``, ``exp`` (60 s by default, at most 300 s),
``jti`` (a UUID v4) and ``scope`` (a JSON array of strings).

State-changing requests *spend* their token (one use per ``jti``), so mint one per request,
retries included; :class:`queue_client.Queue` does.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

TOKEN_TYPE = "queue-svc+jwt"
DEFAULT_TTL_SECS = 60
MAX_TTL_SECS = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    """The 32 bytes of an Ed25519 public key (the JWK's ``x``)."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The RFC 7638 thumbprint of the key's OKP JWK: the ``kid`` Queue's services expect.

    SHA-256 over ``{"crv":"Ed25519","kty":"OKP","x":…}`` (required members, lexicographic
    order, no whitespace), base64url without padding.
    """
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    canonical = '{"crv":"Ed25519","kty":"OKP","x":"' + _b64url(raw_public_bytes(public)) + '"}'
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def load_private_key(pem: bytes | str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PKCS#8 PEM (as ``queuectl keys init`` writes it)."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        hint = ""
        if "extra data" in str(e):
            # A PKCS#8 v2 key (RFC 5958: the public key inside), which cryptography < 51 refuses;
            # `queuectl keys init` writes v1 now, as `openssl genpkey -algorithm ed25519` does.
            hint = " (a PKCS#8 v2 key, which this cryptography cannot read: make a new one)"
        raise ValueError(f"not a PKCS#8 PEM private key: {e}{hint}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"not an Ed25519 key: {type(key).__name__}")
    return key


def load_private_key_file(path: str | Path) -> Ed25519PrivateKey:
    """:func:`load_private_key` from a file; the error names the file, never its content."""
    try:
        return load_private_key(Path(path).read_bytes())
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def load_public_key(pem: bytes | str) -> Ed25519PublicKey:
    """An Ed25519 public key from SPKI PEM (``<name>.pub.pem``)."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 key: {type(key).__name__}")
    return key


def generate_private_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 key (for a rotation)."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """The key as PKCS#8 PEM, the format ``queuectl keys init`` writes."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The public key as SPKI PEM (what ``[[tokens.trusted]] public_key`` takes)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class KeySource(Protocol):
    """Where a :class:`Signer` takes the key to sign with: one key, or a :class:`queue_client.KeyRing`."""

    def signing_key(self) -> Ed25519PrivateKey: ...


class StaticKey:
    """One signing key, never rotated."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    def signing_key(self) -> Ed25519PrivateKey:
        return self._key

    def __repr__(self) -> str:
        return f"StaticKey(kid={key_id(self._key)!r})"


class Signer:
    """Mints service tokens for one issuer.

    ``key`` is an Ed25519 private key or a :class:`KeySource` (a :class:`queue_client.KeyRing` to
    rotate). The key is never printed: ``repr`` shows the issuer and the ``kid`` only.
    """

    def __init__(
        self,
        issuer: str,
        key: Ed25519PrivateKey | KeySource,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not issuer:
            raise ValueError("issuer must not be empty")
        self.issuer = issuer
        self._source: KeySource = StaticKey(key) if isinstance(key, Ed25519PrivateKey) else key
        self._clock = clock

    @classmethod
    def from_pem_file(cls, issuer: str, path: str | Path) -> Signer:
        """A signer from a PKCS#8 PEM file (``var/keys/raptor.pem``)."""
        return cls(issuer, load_private_key_file(path))

    @property
    def kid(self) -> str:
        """The ``kid`` tokens minted now carry."""
        return key_id(self._source.signing_key())

    def mint(self, audience: str, scopes: Sequence[str] = (), *, ttl: int = DEFAULT_TTL_SECS) -> str:
        """A token for ``audience`` (one service) carrying ``scopes``, valid ``ttl`` seconds (1 to 300)."""
        if not audience:
            raise ValueError("audience must not be empty")
        if isinstance(scopes, str):
            raise TypeError("scopes must be a sequence of strings, not one string")
        if not 1 <= ttl <= MAX_TTL_SECS:
            raise ValueError(f"ttl must be 1 to {MAX_TTL_SECS} seconds, not {ttl}")
        key = self._source.signing_key()
        now = int(self._clock())
        claims = {
            "iss": self.issuer,
            "aud": audience,
            "iat": now,
            "exp": now + ttl,
            "jti": str(uuid.uuid4()),
            "scope": list(scopes),
        }
        headers = {"typ": TOKEN_TYPE, "kid": key_id(key)}
        return jwt.encode(claims, key, algorithm="EdDSA", headers=headers)

    def __repr__(self) -> str:
        return f"Signer(issuer={self.issuer!r}, kid={self.kid!r})"
