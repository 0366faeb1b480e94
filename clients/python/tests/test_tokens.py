"""Service tokens minted in Python are the tokens the services verify."""

from __future__ import annotations

import json

import httpx
import jwt
import pytest

from conftest import BIN, Stack, run
from queue_client import (
    Forbidden,
    Queue,
    RetryPolicy,
    Signer,
    Unauthorized,
    generate_private_key,
    jwks_document,
    key_id,
    load_private_key_file,
    load_public_key,
    private_key_pem,
)


def header(token: str) -> dict[str, object]:
    return dict(jwt.get_unverified_header(token))


def test_a_python_token_has_the_format_of_docs_service_tokens(stack: Stack) -> None:
    signer = stack.signer()
    token = signer.mint("audit", ["audit:write", "audit:read"])
    h = header(token)
    assert h == {"alg": "EdDSA", "typ": "queue-svc+jwt", "kid": signer.kid}
    public = load_public_key((stack.keys / "raptor.pub.pem").read_bytes())
    claims = jwt.decode(token, public, algorithms=["EdDSA"], audience="audit")
    assert claims["iss"] == "raptor"
    assert claims["aud"] == "audit", "one audience, as a string"
    assert claims["exp"] - claims["iat"] == 60
    assert claims["scope"] == ["audit:write", "audit:read"]
    assert (
        len(claims["jti"]) == 36
        and claims["jti"] != jwt.decode(signer.mint("audit"), public, algorithms=["EdDSA"], audience="audit")["jti"]
    )


def test_queuectl_and_python_give_the_same_kid_for_the_same_key(stack: Stack) -> None:
    token = run(
        BIN / "queuectl",
        "token",
        "mint",
        "--iss",
        "raptor",
        "--aud",
        "auth",
        "--scope",
        "x:y",
        "--keys-dir",
        stack.keys,
    ).strip()
    assert header(token)["kid"] == stack.signer().kid
    assert header(token)["typ"] == header(stack.signer().mint("auth"))["typ"]


@pytest.mark.parametrize("service", ["auth", "rbac", "audit"])
def test_a_real_service_accepts_a_python_token_and_echoes_its_caller(stack: Stack, service: str) -> None:
    with stack.queue() as q:
        caller = {"auth": q.users, "rbac": q.rbac, "audit": q.audit}[service].caller()
    assert caller.issuer == "raptor"
    assert caller.audience == service
    assert caller.scopes == ()


def test_scopes_reach_the_service(stack: Stack) -> None:
    token = stack.signer().mint("rbac", ["rbac:check", "rbac:read"])
    answer = httpx.get(f"{stack.rbac.url}/internal/v1/caller", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert answer.json()["scopes"] == ["rbac:check", "rbac:read"]


def test_a_token_from_an_unknown_key_is_refused_as_unauthorized(stack: Stack) -> None:
    stranger = Signer("raptor", generate_private_key())
    with stack.queue(signer=stranger, retry=RetryPolicy.never()) as q, pytest.raises(Unauthorized) as e:
        q.rbac.caller()
    assert e.value.status == 401
    assert e.value.service == "rbac" and e.value.operation == "rbac.caller"
    assert e.value.code == "unauthorized"
    assert "rbac.caller (rbac): 401 unauthorized" in str(e.value)


def test_a_token_for_another_audience_is_refused(stack: Stack) -> None:
    token = stack.signer().mint("audit")
    answer = httpx.get(f"{stack.rbac.url}/internal/v1/caller", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401


def test_a_missing_scope_is_forbidden_and_says_which_operation(stack: Stack) -> None:
    # users:write is not what validate takes: call validate's route with the wrong scope by hand.
    token = stack.signer().mint("auth", ["users:write"])
    answer = httpx.post(
        f"{stack.auth.url}/internal/v1/sessions/validate",
        headers={"Authorization": f"Bearer {token}"},
        json={"token": "x" * 43},
    )
    assert answer.status_code == 403
    with stack.queue() as q:
        signer_without_rights = Signer("rbac", load_private_key_file(stack.keys / "rbac.pem"))
        q2 = Queue(signer_without_rights, auth_url=stack.auth.url, retry=RetryPolicy.never())
        with pytest.raises(Forbidden) as e:
            q2.users.provision("nobody@example.com")
        q2.close()
        assert e.value.operation == "users.provision"
        assert q.sessions is not None


def test_the_jwks_document_matches_what_a_service_publishes(stack: Stack) -> None:
    auth_key = load_private_key_file(stack.keys / "auth.pem")
    published = httpx.get(f"{stack.auth.url}/.well-known/jwks.json").json()
    assert published == jwks_document([auth_key])
    assert published["keys"][0]["kid"] == key_id(auth_key)


def test_ttl_and_arguments_are_checked() -> None:
    signer = Signer("raptor", generate_private_key())
    with pytest.raises(ValueError, match="ttl"):
        signer.mint("audit", ttl=301)
    with pytest.raises(TypeError):
        signer.mint("audit", "audit:write")
    assert "PRIVATE" not in repr(signer)
    assert signer.kid in repr(signer)


def test_a_key_file_error_names_the_file_not_the_content(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "bad.pem"
    path.write_text("not a key")
    with pytest.raises(ValueError, match=r"bad\.pem"):
        load_private_key_file(path)
    good = Path(str(tmp_path)) / "good.pem"
    key = generate_private_key()
    good.write_bytes(private_key_pem(key))
    assert key_id(load_private_key_file(good)) == key_id(key)
    assert json.dumps(jwks_document([key, key])).count('"kid"') == 1
