"""Verifying Queue's service tokens in a Python app: the tokens Queue's services mint when they
call the app (Raptor's write-back API, docs/raptor.md).

The checks and their order are those of Queue's own verifier (``crates/queue-svc-token/src/
verify.rs``): size and shape, hostile header members (``jku``, ``x5u``, ``jwk``, ``x5c``, ``x5t``,
``x5t#S256``, ``crit``), ``typ: queue-svc+jwt``, a ``kid``, the (still unverified) issuer must be
trusted, the key must be known for *that* issuer (one issuer's key never verifies another's
tokens), ``alg`` must be ``EdDSA`` (``none``, HS256 and the rest are refused before any key is
used), the signature, then the claims: ``aud`` exactly this app (one string), ``iat``, ``exp``
(with ``leeway``; at most 300 s of lifetime), ``jti`` and ``scope`` (an array of strings).

Keys come from each issuer's JWKS (``GET <service>/.well-known/jwks.json``), fetched on first
use, again every ``refresh_interval`` when asked for, and when a token names an unknown ``kid``
at most once per ``refetch_min_interval`` (after a failed fetch, once per ``failed_fetch_backoff``).
A fetch that fails keeps the keys already known; a token that needs a key that could not be
fetched is :class:`KeysUnavailable` (a 503: the caller retries), not a refusal.

Replay: a token used for a change (``spend=True``) is remembered by ``(iss, jti)`` until it can
no longer verify (``exp`` + leeway) and refused the second time. The set is **per process**
(bounded: when it holds ``replay_max_entries`` live tokens, new one-use tokens are refused with
:class:`KeysUnavailable`-like :class:`ReplayCacheFull`, rather than old ones forgotten): several
worker processes each accept a given token once, as Queue's replicas do.

Policy (which issuers, which scopes) is checked after the token verifies: a verified caller that
may not do this is :class:`NotAllowed` (403), anything that does not verify is
:class:`TokenInvalid` (401). Messages are for logs; callers should only learn the status.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from queue_client.tokens import MAX_TTL_SECS, TOKEN_TYPE, key_id

#: Header members that would let a token choose its own key or add rules nobody checks.
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit")
#: Longer tokens are refused before any parsing.
MAX_TOKEN_BYTES = 8 * 1024
#: The only algorithm an Ed25519 key verifies.
PINNED_ALG = "EdDSA"
DEFAULT_REPLAY_MAX_ENTRIES = 100_000

log = logging.getLogger("queue_client.verify")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class TokenRefused(Exception):
    """A service token was refused. ``status`` is the HTTP answer it calls for, ``code`` the error
    code, ``reason`` what was wrong (for logs: callers get a generic message)."""

    status = 401
    code = "unauthenticated"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenInvalid(TokenRefused):
    """401: missing, malformed, forged, expired, wrong audience, unknown key or untrusted issuer."""


class TokenReplayed(TokenRefused):
    """401: the token was already used for a change (one use per ``jti``)."""

    code = "token_replayed"


class NotAllowed(TokenRefused):
    """403: the token verified, but its issuer may not call this or it lacks a scope."""

    status = 403
    code = "forbidden"


class KeysUnavailable(TokenRefused):
    """503: the issuer's keys could not be fetched now; the caller should retry."""

    status = 503
    code = "unavailable"


class ReplayCacheFull(TokenRefused):
    """503: too many live one-use tokens remembered to accept another now."""

    status = 503
    code = "unavailable"


@dataclass(frozen=True)
class VerifiedToken:
    """What a verified token says."""

    iss: str
    aud: str
    iat: int
    exp: int
    jti: str
    scope: tuple[str, ...]
    kid: str

    def has_scope(self, scope: str) -> bool:
        return scope in self.scope


@dataclass
class _Issuer:
    url: str
    keys: dict[str, Ed25519PublicKey]
    # time.monotonic() of the last attempt and whether it worked
    last_attempt: tuple[float, bool] | None
    fetching: threading.Lock


JwksFetcher = Callable[[str], Mapping[str, Any]]


class ServiceTokenVerifier:
    """Verifies service tokens for ``audience`` (this app's name, e.g. ``raptor``) from
    ``trusted`` issuers (``{"auth": "http://127.0.0.1:8081/.well-known/jwks.json", ...}``).

    Thread-safe. ``clock`` is Unix seconds (tests move it); ``fetch`` gets a JWKS document
    (default: an HTTP GET with ``timeout``).
    """

    def __init__(
        self,
        audience: str,
        trusted: Mapping[str, str],
        *,
        leeway: int = 30,
        refresh_interval: float = 300.0,
        refetch_min_interval: float = 30.0,
        failed_fetch_backoff: float = 1.0,
        replay_max_entries: int = DEFAULT_REPLAY_MAX_ENTRIES,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        fetch: JwksFetcher | None = None,
    ) -> None:
        if not audience:
            raise ValueError("audience must not be empty")
        self.audience = audience
        self.leeway = leeway
        self._refresh = refresh_interval
        self._refetch_min = refetch_min_interval
        self._failed_backoff = failed_fetch_backoff
        self._clock = clock
        self._monotonic = monotonic
        self._timeout = timeout
        self._fetch = fetch or self._http_fetch
        self._issuers = {
            name: _Issuer(url, {}, None, threading.Lock()) for name, url in trusted.items() if name and url
        }
        self._lock = threading.Lock()
        self._replay = _ReplayGuard(replay_max_entries)

    @property
    def trusted_issuers(self) -> tuple[str, ...]:
        return tuple(self._issuers)

    def verify(
        self,
        token: str,
        *,
        issuers: Collection[str] | None = None,
        scopes: Collection[str] = (),
        spend: bool = True,
    ) -> VerifiedToken:
        """The verified token, or a :class:`TokenRefused` saying why. ``issuers`` (default: every
        trusted one) and ``scopes`` are the caller's policy (403 when not met); ``spend`` makes
        this the token's one use (for a request that changes something)."""
        verified = self._verify_token(token)
        if issuers is not None and verified.iss not in issuers:
            raise NotAllowed(f"issuer `{verified.iss}` may not call this route")
        missing = next((s for s in scopes if not verified.has_scope(s)), None)
        if missing is not None:
            raise NotAllowed(f"missing scope `{missing}`")
        # Spent only once the policy accepted the caller: a refused call burns nothing.
        if spend:
            self._replay.first_use(verified.iss, verified.jti, verified.exp + self.leeway, int(self._clock()))
        return verified

    def _verify_token(self, token: str) -> VerifiedToken:
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenInvalid("token is too long")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenInvalid("token is not a well-formed compact JWS")
        header = _json_part(parts[0])
        forbidden = next((h for h in FORBIDDEN_HEADERS if h in header), None)
        if forbidden is not None:
            raise TokenInvalid(f"token header carries `{forbidden}`, which is never accepted")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() != TOKEN_TYPE:
            raise TokenInvalid("token `typ` is not a service token")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenInvalid("token has no `kid`")
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise TokenInvalid("token has no `alg`")
        # The issuer is read before the signature is checked only to choose whose keys to use.
        issuer = _json_part(parts[1]).get("iss")
        if not isinstance(issuer, str):
            raise TokenInvalid("claim `iss` is missing or has the wrong type")
        state = self._issuers.get(issuer)
        if state is None:
            raise TokenInvalid(f"issuer `{issuer}` is not trusted")
        key = self._key_for(issuer, state, kid)
        if alg != PINNED_ALG:
            raise TokenInvalid(f"algorithm `{alg}` is not the one pinned by the key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[PINNED_ALG],
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "require": [],
                },
            )
        except jwt.PyJWTError:
            raise TokenInvalid("signature does not verify") from None
        return self._check_claims(claims, kid)

    def _check_claims(self, c: Mapping[str, Any], kid: str) -> VerifiedToken:
        iss = c.get("iss")
        if not isinstance(iss, str):
            raise TokenInvalid("claim `iss` is missing or has the wrong type")
        aud = c.get("aud")
        if isinstance(aud, list) and len(aud) > 1:
            raise TokenInvalid("token carries several audiences")
        if not isinstance(aud, str):
            raise TokenInvalid("claim `aud` is missing or has the wrong type")
        if aud != self.audience:
            raise TokenInvalid(f"token is for audience `{aud}`")
        iat, exp = _unsigned(c, "iat"), _unsigned(c, "exp")
        now = int(self._clock())
        if now >= exp + self.leeway:
            raise TokenInvalid("token has expired")
        if iat > now + self.leeway:
            raise TokenInvalid("token was issued in the future")
        if exp <= iat:
            raise TokenInvalid("claim `exp` is not after `iat`")
        if exp - iat > MAX_TTL_SECS:
            raise TokenInvalid("token lives longer than allowed")
        jti = c.get("jti")
        if not isinstance(jti, str) or not jti:
            raise TokenInvalid("claim `jti` is missing or has the wrong type")
        scope = c.get("scope")
        if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
            raise TokenInvalid("claim `scope` is missing or has the wrong type")
        return VerifiedToken(iss=iss, aud=aud, iat=iat, exp=exp, jti=jti, scope=tuple(scope), kid=kid)

    # --- keys ---------------------------------------------------------------------------------

    def _key_for(self, issuer: str, state: _Issuer, kid: str) -> Ed25519PublicKey:
        stale = self._stale(state)
        key = state.keys.get(kid)
        if key is not None and not stale:
            return key
        with state.fetching:
            # Someone may have fetched while we waited.
            key = state.keys.get(kid)
            if key is not None and not self._stale(state):
                return key
            if key is None and self._recently_fetched(state):
                if state.last_attempt is not None and not state.last_attempt[1]:
                    # Unlike a key the issuer does not publish, keys we could not fetch are worth a retry.
                    raise KeysUnavailable(f"keys for issuer `{issuer}` could not be fetched")
                raise TokenInvalid(f"no key `{kid}` for issuer `{issuer}`")
            fetched = self._fetch_into(issuer, state)
            key = state.keys.get(kid)
            if key is not None:
                return key
            if not fetched:
                raise KeysUnavailable(f"keys for issuer `{issuer}` could not be fetched")
            raise TokenInvalid(f"no key `{kid}` for issuer `{issuer}`")

    def _stale(self, state: _Issuer) -> bool:
        """Due for the periodic refresh (the keys are used meanwhile if the refresh fails)."""
        last = state.last_attempt
        return last is None or self._monotonic() - last[0] >= self._refresh

    def _recently_fetched(self, state: _Issuer) -> bool:
        last = state.last_attempt
        if last is None:
            return False
        at, ok = last
        wait = self._refetch_min if ok else min(self._refetch_min, self._failed_backoff)
        return self._monotonic() - at < wait

    def _fetch_into(self, issuer: str, state: _Issuer) -> bool:
        started = self._monotonic()
        try:
            keys = parse_jwks(self._fetch(state.url))
        except (httpx.HTTPError, ValueError, TypeError, KeyError) as e:
            state.last_attempt = (started, False)
            log.warning("JWKS fetch for issuer `%s` from %s failed: %s; keeping the keys we have", issuer, state.url, e)
            return False
        state.keys = keys
        state.last_attempt = (started, True)
        return True

    def _http_fetch(self, url: str) -> Mapping[str, Any]:
        response = httpx.get(url, timeout=self._timeout, follow_redirects=False)
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError("the JWKS is not a JSON object")
        return document

    def __repr__(self) -> str:
        return f"ServiceTokenVerifier(audience={self.audience!r}, issuers={list(self._issuers)!r})"


def parse_jwks(document: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 keys of a JWK Set by their RFC 7638 ``kid`` (computed, not taken from the
    document); other keys are skipped, as Queue's verifier skips them."""
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise ValueError("the JWKS has no `keys` array")
    out: dict[str, Ed25519PublicKey] = {}
    for jwk in keys:
        if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        if jwk.get("alg") not in (None, PINNED_ALG):
            continue
        x = jwk.get("x")
        try:
            raw = _unb64url(x) if isinstance(x, str) else b""
        except ValueError:
            continue
        if len(raw) != 32:
            continue
        key = Ed25519PublicKey.from_public_bytes(raw)
        out[key_id(key)] = key
    return out


class _ReplayGuard:
    """The ``(iss, jti)`` pairs spent and not yet expired, at most ``max_entries``."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()
        self._by_expiry: list[tuple[int, str, str]] = []

    def first_use(self, issuer: str, jti: str, forget_after: int, now: int) -> None:
        with self._lock:
            while self._by_expiry and self._by_expiry[0][0] <= now:
                _, i, j = heapq.heappop(self._by_expiry)
                self._seen.discard((i, j))
            if (issuer, jti) in self._seen:
                raise TokenReplayed("token was already used on a state-changing route")
            if len(self._seen) >= self._max:
                raise ReplayCacheFull("too many live tokens remembered to accept another one-use token")
            self._seen.add((issuer, jti))
            heapq.heappush(self._by_expiry, (forget_after, issuer, jti))

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    scheme, _, value = (authorization or "").partition(" ")
    token = value.strip()
    return token if scheme.lower() == "bearer" and token else None


def _unb64url(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url without padding")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def _json_part(part: str) -> dict[str, Any]:
    try:
        value = json.loads(_unb64url(part))
    except (ValueError, UnicodeDecodeError):
        raise TokenInvalid("token is not a well-formed compact JWS") from None
    if not isinstance(value, dict):
        raise TokenInvalid("token is not a well-formed compact JWS")
    return value


def _unsigned(c: Mapping[str, Any], name: str) -> int:
    value = c.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TokenInvalid(f"claim `{name}` is missing or has the wrong type")
    return value
