"""ServiceTokenVerifier: Queue's service tokens verified as Queue's own verifier does, with real
Ed25519 keys and each issuer's JWKS served over HTTP on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from queue_client import Signer, jwks_document, key_id, public_key_pem
from queue_client.verify import (
    KeysUnavailable,
    NotAllowed,
    ReplayCacheFull,
    ServiceTokenVerifier,
    TokenInvalid,
    TokenReplayed,
    bearer,
    parse_jwks,
)

AUD = "raptor"
SCOPE = "raptor:writeback"


class Clock:
    """Unix seconds and a monotonic clock the test moves."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.mono = 1000.0

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, secs: float) -> None:
        self.now += secs
        self.mono += secs


@dataclass
class Jwks:
    """The issuers' JWKS on a real socket: ``keys[name]`` is what /<name>/jwks.json serves."""

    base: str
    keys: dict[str, list[Ed25519PrivateKey]]
    fetches: dict[str, int] = field(default_factory=dict)
    down: bool = False

    def url(self, name: str) -> str:
        return f"{self.base}/{name}/jwks.json"


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    state = Jwks("", {"auth": [Ed25519PrivateKey.generate()], "rbac": [Ed25519PrivateKey.generate()]})

    @Request.application
    def app(request: Request) -> Response:
        name = request.path.strip("/").split("/")[0]
        state.fetches[name] = state.fetches.get(name, 0) + 1
        if state.down:
            return Response("down", status=503)
        if name not in state.keys:
            return Response("no such issuer", status=404)
        return Response(json.dumps(jwks_document(state.keys[name])), mimetype="application/json")

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_port}"
    try:
        yield state
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def verifier(jwks: Jwks, clock: Clock, **kw: Any) -> ServiceTokenVerifier:
    return ServiceTokenVerifier(
        AUD,
        {"auth": jwks.url("auth"), "rbac": jwks.url("rbac")},
        clock=clock,
        monotonic=clock.monotonic,
        timeout=5,
        **kw,
    )


def mint(
    jwks: Jwks, clock: Clock, issuer: str = "auth", *, audience: str = AUD, scopes: tuple[str, ...] = (SCOPE,)
) -> str:
    return Signer(issuer, jwks.keys[issuer][0], clock=clock).mint(audience, list(scopes))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(header: dict[str, Any], claims: dict[str, Any], key: Ed25519PrivateKey | None) -> str:
    """A token built by hand (what an attacker can send), signed with ``key`` if given."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode()) if key else b""
    return f"{signing_input}.{b64(signature)}"


def claims(clock: Clock, **over: Any) -> dict[str, Any]:
    now = int(clock())
    c: dict[str, Any] = {
        "iss": "auth",
        "aud": AUD,
        "iat": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
        "scope": [SCOPE],
    }
    c.update(over)
    return c


def header(key: Ed25519PrivateKey, **over: Any) -> dict[str, Any]:
    h: dict[str, Any] = {"alg": "EdDSA", "typ": "queue-svc+jwt", "kid": key_id(key)}
    h.update(over)
    return {k: v for k, v in h.items() if v is not None}


def test_a_valid_token_verifies_with_its_claims(jwks: Jwks, clock: Clock) -> None:
    v = verifier(jwks, clock)
    token = mint(jwks, clock)
    got = v.verify(token, issuers=("auth", "rbac"), scopes=(SCOPE,))
    assert got.iss == "auth" and got.aud == AUD and got.scope == (SCOPE,)
    assert got.exp - got.iat == 60 and got.kid == key_id(jwks.keys["auth"][0])
    assert uuid.UUID(got.jti)
    # Each issuer with its own key.
    assert v.verify(mint(jwks, clock, "rbac")).iss == "rbac"
    assert jwks.fetches == {"auth": 1, "rbac": 1}


def test_the_audience_must_be_this_app(jwks: Jwks, clock: Clock) -> None:
    v = verifier(jwks, clock)
    with pytest.raises(TokenInvalid, match="audience `auth`"):
        v.verify(mint(jwks, clock, audience="auth"))
    key = jwks.keys["auth"][0]
    with pytest.raises(TokenInvalid, match="several audiences"):
        v.verify(craft(header(key), claims(clock, aud=[AUD, "rbac"]), key))
    with pytest.raises(TokenInvalid, match="`aud`"):
        v.verify(craft(header(key), claims(clock, aud=[AUD]), key))


def test_an_untrusted_issuer_or_another_issuers_key_is_refused(jwks: Jwks, clock: Clock) -> None:
    v = verifier(jwks, clock)
    outsider = Ed25519PrivateKey.generate()
    with pytest.raises(TokenInvalid, match="issuer `raptor` is not trusted"):
        v.verify(Signer("raptor", outsider, clock=clock).mint(AUD, [SCOPE]))
    # rbac's key never verifies a token that says it is auth's.
    rbac_key = jwks.keys["rbac"][0]
    with pytest.raises(TokenInvalid, match="no key"):
        v.verify(craft(header(rbac_key), claims(clock, iss="auth"), rbac_key))
    # A trusted issuer the route does not take: verified, then 403.
    with pytest.raises(NotAllowed, match="issuer `rbac` may not") as refused:
        v.verify(mint(jwks, clock, "rbac"), issuers=("auth",))
    assert refused.value.status == 403


def test_a_missing_scope_is_forbidden_and_burns_nothing(jwks: Jwks, clock: Clock) -> None:
    v = verifier(jwks, clock)
    token = mint(jwks, clock, scopes=("rbac:check",))
    with pytest.raises(NotAllowed, match="missing scope `raptor:writeback`"):
        v.verify(token, scopes=(SCOPE,))
    # Refused by the policy, not spent: the same token still does what it may.
    assert v.verify(token, scopes=("rbac:check",)).scope == ("rbac:check",)


def test_an_unknown_kid_is_refetched_at_most_every_30_seconds(jwks: Jwks, clock: Clock) -> None:
    v = verifier(jwks, clock)
    v.verify(mint(jwks, clock), spend=False)
    assert jwks.fetches["auth"] == 1
    new = Ed25519PrivateKey.generate()
    stranger = Signer("auth", new, clock=clock).mint(AUD, [SCOPE])
    # Fetched just now: an unknown kid does not make it fetch again.
    with pytest.raises(TokenInvalid, match="no key"):
        v.verify(stranger)
    assert jwks.fetches["auth"] == 1
    # Later: one refetch, then none within 30 s whatever the traffic.
    clock.advance(31)
    stranger = Signer("auth", new, clock=clock).mint(AUD, [SCOPE])
    for _ in range(5):
        with pytest.raises(TokenInvalid, match="no key"):
            v.verify(stranger)
    assert jwks.fetches["auth"] == 2
    # The issuer rotates: published beside the old key; after 30 s the new kid is fetched.
    jwks.keys["auth"].append(new)
    clock.advance(10)
    with pytest.raises(TokenInvalid, match="no key"):
        v.verify(Signer("auth", new, clock=clock).mint(AUD, [SCOPE]))
    assert jwks.fetches["auth"] == 2
    clock.advance(21)
    assert v.verify(Signer("auth", new, clock=clock).mint(AUD, [SCOPE])).kid == key_id(new)
    assert jwks.fetches["auth"] == 3


def test_keys_are_refreshed_and_a_retired_key_stops_verifying(jwks: Jwks, clock: Clock) -> None:
    v = verifier(jwks, clock)
    old = jwks.keys["auth"][0]
    v.verify(mint(jwks, clock))
    jwks.keys["auth"] = [Ed25519PrivateKey.generate()]
    clock.advance(100)
    assert v.verify(Signer("auth", old, clock=clock).mint(AUD, [SCOPE])).iss == "auth"  # cached, not stale
    clock.advance(200)  # 300 s: the periodic refresh is due and drops the retired key
    with pytest.raises(TokenInvalid, match="no key"):
        v.verify(Signer("auth", old, clock=clock).mint(AUD, [SCOPE]))


def test_an_unreachable_jwks_is_a_retry_not_a_refusal(jwks: Jwks, clock: Clock) -> None:
    v = verifier(jwks, clock)
    jwks.down = True
    with pytest.raises(KeysUnavailable) as e:
        v.verify(mint(jwks, clock))
    assert e.value.status == 503
    with pytest.raises(KeysUnavailable):
        v.verify(mint(jwks, clock))  # within the 1 s backoff: no new fetch, still a 503
    assert jwks.fetches["auth"] == 1
    jwks.down = False
    clock.advance(1.5)
    assert v.verify(mint(jwks, clock)).iss == "auth"
    # Down again when the refresh is due: the keys already known keep working.
    jwks.down = True
    clock.advance(301)
    assert v.verify(mint(jwks, clock)).iss == "auth"


def test_nothing_but_eddsa_is_accepted(jwks: Jwks, clock: Clock) -> None:
    v = verifier(jwks, clock)
    key = jwks.keys["auth"][0]
    v.verify(mint(jwks, clock), spend=False)  # keys known
    with pytest.raises(TokenInvalid, match="algorithm `none`"):
        v.verify(craft(header(key, alg="none"), claims(clock), None))
    # HS256 keyed with the public key (the classic confusion): refused before any key is used.
    pem = public_key_pem(key)
    signing_input = f"{b64(json.dumps(header(key, alg='HS256')).encode())}.{b64(json.dumps(claims(clock)).encode())}"
    forged = f"{signing_input}.{b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"
    with pytest.raises(TokenInvalid, match="algorithm `HS256`"):
        v.verify(forged)
    # The right algorithm, the wrong signature.
    with pytest.raises(TokenInvalid, match="signature"):
        v.verify(craft(header(key), claims(clock), Ed25519PrivateKey.generate()))


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"typ": "JWT"}, "typ"),
        ({"typ": None}, "typ"),
        ({"kid": None}, "kid"),
        ({"jku": "http://evil.example/jwks.json"}, "jku"),
        ({"jwk": {"kty": "OKP"}}, "jwk"),
        ({"crit": ["exp"]}, "crit"),
    ],
)
def test_hostile_or_incomplete_headers_are_refused(jwks: Jwks, clock: Clock, over: dict[str, Any], reason: str) -> None:
    key = jwks.keys["auth"][0]
    with pytest.raises(TokenInvalid, match=reason):
        verifier(jwks, clock).verify(craft(header(key, **over), claims(clock), key))


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"exp": None}, "`exp`"),
        ({"iat": None}, "`iat`"),
        ({"jti": ""}, "`jti`"),
        ({"scope": "raptor:writeback"}, "`scope`"),
        ({"exp": "soon"}, "`exp`"),
    ],
)
def test_claims_are_required(jwks: Jwks, clock: Clock, over: dict[str, Any], reason: str) -> None:
    key = jwks.keys["auth"][0]
    c = {k: v for k, v in claims(clock, **over).items() if v is not None}
    with pytest.raises(TokenInvalid, match=reason):
        verifier(jwks, clock).verify(craft(header(key), c, key))


def test_time_is_checked_with_leeway(jwks: Jwks, clock: Clock) -> None:
    v = verifier(jwks, clock, leeway=30)
    key = jwks.keys["auth"][0]
    now = int(clock())
    assert v.verify(craft(header(key), claims(clock, iat=now - 80, exp=now - 20), key)).iss == "auth"
    with pytest.raises(TokenInvalid, match="expired"):
        v.verify(craft(header(key), claims(clock, iat=now - 100, exp=now - 30), key))
    with pytest.raises(TokenInvalid, match="future"):
        v.verify(craft(header(key), claims(clock, iat=now + 31, exp=now + 60), key))
    with pytest.raises(TokenInvalid, match="longer than allowed"):
        v.verify(craft(header(key), claims(clock, iat=now, exp=now + 301), key))
    token = mint(jwks, clock)
    clock.advance(60 + 30)
    with pytest.raises(TokenInvalid, match="expired"):
        v.verify(token)


def test_a_token_is_spent_once_until_it_expires(jwks: Jwks, clock: Clock) -> None:
    v = verifier(jwks, clock)
    token = mint(jwks, clock)
    v.verify(token)
    with pytest.raises(TokenReplayed) as e:
        v.verify(token)
    assert (e.value.status, e.value.code) == (401, "token_replayed")
    # Reads may reuse a token.
    read = mint(jwks, clock)
    for _ in range(3):
        v.verify(read, spend=False)
    v.verify(read)
    # The same jti from another issuer is another token.
    key = jwks.keys["rbac"][0]
    jti = str(uuid.uuid4())
    v.verify(craft(header(jwks.keys["auth"][0]), claims(clock, jti=jti), jwks.keys["auth"][0]))
    v.verify(craft(header(key), claims(clock, iss="rbac", jti=jti), key))


def test_the_replay_set_is_bounded_and_forgets_expired_tokens(jwks: Jwks, clock: Clock) -> None:
    v = verifier(jwks, clock, replay_max_entries=2)
    v.verify(mint(jwks, clock))
    v.verify(mint(jwks, clock))
    with pytest.raises(ReplayCacheFull) as e:
        v.verify(mint(jwks, clock))
    assert e.value.status == 503
    clock.advance(91)  # the first two are past exp + leeway: forgotten, room again
    v.verify(mint(jwks, clock))


def test_helpers() -> None:
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer("Bearer ") is None and bearer(None) is None
    key = Ed25519PrivateKey.generate()
    doc = jwks_document([key])
    doc["keys"].append({"kty": "RSA", "n": "x", "e": "AQAB"})
    doc["keys"].append({"kty": "OKP", "crv": "Ed25519", "x": "short"})
    # The kid is computed (RFC 7638), whatever the document says.
    doc["keys"][0]["kid"] = "lies"
    assert list(parse_jwks(doc)) == [key_id(key)]
    with pytest.raises(ValueError):
        parse_jwks({"nokeys": []})
    with pytest.raises(TokenInvalid):
        ServiceTokenVerifier(AUD, {}).verify("a" * 9000)
