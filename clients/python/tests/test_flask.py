"""The Flask extension in a tiny app on a real socket, against the real auth and rbac."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from flask import Flask, g
from werkzeug.serving import make_server

from conftest import Stack, free_port
from queue_client import KeyRing, Queue, Scope, load_private_key_file
from queue_client.flask import QueueAuth, queue, require_permission, require_session


def create_app(config: dict[str, Any]) -> Flask:
    app = Flask("tiny")
    app.config.update(config)
    QueueAuth(app)

    @app.get("/me")
    @require_session
    def me() -> dict[str, Any]:
        return {"user_id": g.queue_session.user_id, "tenant_id": g.queue_session.tenant_id}

    @app.get("/tickets/<ticket_id>")
    @require_permission("ticket.read", ticket=lambda kw: kw["ticket_id"])
    def ticket(ticket_id: str) -> dict[str, Any]:
        return {"ticket": ticket_id, "grants": list(g.queue_decision.grant_ids)}

    @app.get("/tenants/<tenant_id>/report")
    @require_permission("ticket.write", tenant=lambda kw: kw["tenant_id"])
    def report(tenant_id: str) -> dict[str, Any]:
        return {"tenant": tenant_id}

    @app.get("/whoami-service")
    def whoami() -> dict[str, Any]:
        return {"issuer": queue().rbac.caller().issuer}

    return app


@dataclass
class Served:
    url: str
    user_id: str
    tenant: str
    session: str


def serve(app: Flask) -> tuple[str, Any, threading.Thread]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.server_port}", server, thread


@pytest.fixture
def served(stack: Stack, tenant: str) -> Iterator[Served]:
    app = create_app(
        {
            "QUEUE_AUTH_URL": stack.auth.url,
            "QUEUE_RBAC_URL": stack.rbac.url,
            "QUEUE_SIGNING_KEY": str(stack.keys / "raptor.pem"),
        }
    )
    url, server, thread = serve(app)
    with stack.queue() as q:
        user = q.users.provision(f"flask-{uuid.uuid4().hex[:8]}@example.com", tenant_id=tenant)
    yield Served(url, user.id, tenant, stack.full_session(user.id, tenant))
    server.shutdown()
    thread.join(5)
    app.extensions["queue_auth"].queue.close()


def test_no_session_is_a_json_401(served: Served) -> None:
    answer = httpx.get(f"{served.url}/me")
    assert answer.status_code == 401
    assert answer.json() == {"error": {"code": "unauthorized", "message": "sign in first"}}
    assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_an_invalid_session_is_a_json_401(served: Served) -> None:
    answer = httpx.get(f"{served.url}/me", cookies={"queue_session": "B" * 43})
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"


def test_the_cookie_or_a_bearer_signs_in(served: Served) -> None:
    by_cookie = httpx.get(f"{served.url}/me", cookies={"queue_session": served.session})
    assert by_cookie.status_code == 200
    assert by_cookie.json() == {"user_id": served.user_id, "tenant_id": served.tenant}
    by_bearer = httpx.get(f"{served.url}/me", headers={"Authorization": f"Bearer {served.session}"})
    assert by_bearer.status_code == 200 and by_bearer.json()["user_id"] == served.user_id


def test_permission_follows_rbac_grants(stack: Stack, served: Served) -> None:
    cookies = {"queue_session": served.session}
    denied = httpx.get(f"{served.url}/tickets/T-7", cookies=cookies)
    assert denied.status_code == 403
    assert denied.json() == {"error": {"code": "forbidden", "message": "not allowed: ticket.read"}}
    assert httpx.get(f"{served.url}/tickets/T-7").status_code == 401, "no session: 401 before any check"

    with stack.queue() as q:
        granted = q.rbac.grant(served.user_id, "viewer", Scope.ticket(served.tenant, "T-7"), reason="flask test")
        allowed = httpx.get(f"{served.url}/tickets/T-7", cookies=cookies)
        assert allowed.status_code == 200
        assert allowed.json() == {"ticket": "T-7", "grants": [granted.grant.id]}
        assert httpx.get(f"{served.url}/tickets/T-8", cookies=cookies).status_code == 403, "ticket scope only"
        assert httpx.get(f"{served.url}/tenants/{served.tenant}/report", cookies=cookies).status_code == 403

        q.rbac.grant(served.user_id, "agent", Scope.tenant(served.tenant), reason="flask test")
        assert httpx.get(f"{served.url}/tenants/{served.tenant}/report", cookies=cookies).status_code == 200
        assert httpx.get(f"{served.url}/tenants/other-tenant/report", cookies=cookies).status_code == 403

        q.rbac.revoke(granted.grant.id, reason="done")
    # the agent grant covers the tenant's tickets too; the revoked viewer grant no longer counts
    answer = httpx.get(f"{served.url}/tickets/T-7", cookies=cookies)
    assert answer.status_code == 200 and granted.grant.id not in answer.json()["grants"]


def test_an_id_rbac_cannot_take_is_403_not_500(served: Served) -> None:
    answer = httpx.get(f"{served.url}/tickets/bad%20id", cookies={"queue_session": served.session})
    assert answer.status_code == 403


def test_queue_down_is_503_not_signed_out(stack: Stack, tenant: str) -> None:
    app = create_app(
        {
            "QUEUE_AUTH_URL": f"http://127.0.0.1:{free_port()}",
            "QUEUE_SIGNING_KEY": str(stack.keys / "raptor.pem"),
            "QUEUE_TIMEOUT": 1.0,
        }
    )
    url, server, thread = serve(app)
    try:
        answer = httpx.get(f"{url}/me", cookies={"queue_session": "C" * 43}, timeout=30)
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "unavailable" and "Retry-After" in answer.headers
    finally:
        server.shutdown()
        thread.join(5)


def test_a_key_ring_is_served_as_jwks_and_signs(stack: Stack) -> None:
    ring = KeyRing(load_private_key_file(stack.keys / "raptor.pem"))
    app = create_app({"QUEUE_AUTH_URL": stack.auth.url, "QUEUE_RBAC_URL": stack.rbac.url, "QUEUE_KEYRING": ring})
    url, server, thread = serve(app)
    try:
        assert httpx.get(f"{url}/.well-known/jwks.json").json() == ring.jwks()
        assert httpx.get(f"{url}/whoami-service").json() == {"issuer": "raptor"}
    finally:
        server.shutdown()
        thread.join(5)


def test_init_app_later_and_config_errors(stack: Stack) -> None:
    ext = QueueAuth()
    app = Flask("later")
    with pytest.raises(RuntimeError, match="QUEUE_SIGNING_KEY"):
        ext.init_app(app)
    app.config["QUEUE_SIGNING_KEY"] = str(stack.keys / "raptor.pem")
    with pytest.raises(RuntimeError, match="QUEUE_AUTH_URL"):
        ext.init_app(app)
    app.config["QUEUE_AUTH_URL"] = stack.auth.url
    ext.init_app(app)
    with app.app_context():
        assert isinstance(queue(), Queue)
        queue().close()
    with Flask("bare").app_context(), pytest.raises(RuntimeError, match="not initialised"):
        queue()
