"""A Flask extension: Queue sessions and rbac checks for a Flask app's views.

::

    queue_auth = QueueAuth()          # no app, no network at import time

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config.update(QUEUE_AUTH_URL=..., QUEUE_RBAC_URL=..., QUEUE_SIGNING_KEY="var/keys/raptor.pem")
        queue_auth.init_app(app)
        return app

    @app.get("/me")
    @require_session
    def me(): return {"user": g.queue_session.user_id}

    @app.get("/tenants/<tenant>/tickets/<ticket>")
    @require_permission("ticket.read", tenant=lambda kw: kw["tenant"], ticket=lambda kw: kw["ticket"])
    def ticket(tenant, ticket): ...

Config keys (prefix ``QUEUE_``): ``QUEUE_AUTH_URL``, ``QUEUE_RBAC_URL``, ``QUEUE_AUDIT_URL``,
``QUEUE_ISSUER`` (default ``raptor``), ``QUEUE_SIGNING_KEY`` (a PKCS#8 PEM path) or
``QUEUE_KEYRING`` (a :class:`queue_client.KeyRing`), ``QUEUE_SESSION_COOKIE`` (default
``queue_session``), ``QUEUE_TIMEOUT`` (seconds, default 5), ``QUEUE_JWKS_PATH`` (with a key
ring: where to serve its JWKS, default ``/.well-known/jwks.json``; ``None``: not served).

The session comes from the cookie, else ``Authorization: Bearer``; auth validates it
(``sessions:validate``). Refusals are JSON in Queue's shape: 401 ``unauthorized`` (with
``WWW-Authenticate: Bearer``), 403 ``forbidden``, and 503 ``unavailable`` (with ``Retry-After``)
when auth or rbac cannot answer, so a Queue outage never reads as "signed out".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from flask import Flask, Response, current_app, g, jsonify, request

from queue_client.client import Queue
from queue_client.errors import Invalid, QueueError, Unavailable
from queue_client.jwks import KeyRing
from queue_client.models import SessionInfo
from queue_client.tokens import Signer, load_private_key_file

P = ParamSpec("P")
R = TypeVar("R")

EXTENSION = "queue_auth"

#: A literal id, or a function of the view's keyword arguments (the URL variables).
IdSource = str | Callable[[Mapping[str, Any]], str | None] | None


def error_response(status: int, code: str, message: str, *, retry_after: int | None = None) -> Response:
    """Queue's error shape: ``{"error": {"code", "message"}}``."""
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    response.headers["Cache-Control"] = "no-store"
    return response


class QueueAuth:
    """The extension: ``QueueAuth(app)`` or ``QueueAuth()`` then ``init_app(app)``."""

    def __init__(self, app: Flask | None = None, *, queue: Queue | None = None) -> None:
        self._queue = queue
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        app.config.setdefault("QUEUE_ISSUER", "raptor")
        app.config.setdefault("QUEUE_SESSION_COOKIE", "queue_session")
        app.config.setdefault("QUEUE_TIMEOUT", 5.0)
        app.config.setdefault("QUEUE_JWKS_PATH", "/.well-known/jwks.json")
        queue = self._queue or self._make_queue(app)
        app.extensions[EXTENSION] = _State(queue, app.config["QUEUE_SESSION_COOKIE"])
        ring = app.config.get("QUEUE_KEYRING")
        if isinstance(ring, KeyRing) and app.config["QUEUE_JWKS_PATH"]:
            app.add_url_rule(app.config["QUEUE_JWKS_PATH"], "queue_jwks", _jwks_view(ring))

    @staticmethod
    def _make_queue(app: Flask) -> Queue:
        cfg = app.config
        ring = cfg.get("QUEUE_KEYRING")
        if isinstance(ring, KeyRing):
            signer = Signer(cfg["QUEUE_ISSUER"], ring)
        elif cfg.get("QUEUE_SIGNING_KEY"):
            signer = Signer(cfg["QUEUE_ISSUER"], load_private_key_file(cfg["QUEUE_SIGNING_KEY"]))
        else:
            raise RuntimeError("QueueAuth: set QUEUE_SIGNING_KEY (a PKCS#8 PEM path) or QUEUE_KEYRING")
        if not cfg.get("QUEUE_AUTH_URL"):
            raise RuntimeError("QueueAuth: set QUEUE_AUTH_URL (the auth service validates sessions)")
        return Queue(
            signer,
            auth_url=cfg.get("QUEUE_AUTH_URL"),
            rbac_url=cfg.get("QUEUE_RBAC_URL"),
            audit_url=cfg.get("QUEUE_AUDIT_URL"),
            timeout=float(cfg["QUEUE_TIMEOUT"]),
        )


class _State:
    def __init__(self, queue: Queue, cookie: str) -> None:
        self.queue = queue
        self.cookie = cookie


def _jwks_view(ring: KeyRing) -> Callable[[], Response]:
    def view() -> Response:
        response = jsonify(ring.jwks())
        response.headers["Cache-Control"] = "no-store"
        return response

    return view


def _state() -> _State:
    state = current_app.extensions.get(EXTENSION)
    if not isinstance(state, _State):
        raise RuntimeError("QueueAuth is not initialised on this app (QueueAuth(app) or init_app(app))")
    return state


def queue() -> Queue:
    """The app's :class:`queue_client.Queue` (inside a request or an app context)."""
    return _state().queue


def _session_token(cookie: str) -> str | None:
    token = request.cookies.get(cookie)
    if token:
        return token
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _unavailable(e: QueueError) -> Response:
    retry = e.retry_after if isinstance(e, Unavailable) and e.retry_after is not None else 5
    return error_response(503, "unavailable", f"{e.service} is unavailable; try again", retry_after=int(retry))


def _load_session() -> SessionInfo | Response:
    """``g.queue_session`` for this request, validated once; or the error response."""
    existing = g.get("queue_session")
    if isinstance(existing, SessionInfo):
        return existing
    state = _state()
    token = _session_token(state.cookie)
    if token is None:
        return error_response(401, "unauthorized", "sign in first")
    try:
        info = state.queue.sessions.validate(token)
    except QueueError as e:
        current_app.logger.warning("session validation failed: %s", e)
        return _unavailable(e)
    if not info.valid:
        return error_response(401, "unauthorized", "the session is not valid; sign in again")
    g.queue_session = info
    return info


def require_session(view: Callable[P, R]) -> Callable[P, R | Response]:
    """The view runs only with a valid Queue session, in ``g.queue_session`` (:class:`SessionInfo`)."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        loaded = _load_session()
        if isinstance(loaded, Response):
            return loaded
        return view(*args, **kwargs)

    return wrapper


def _resolve(source: IdSource, kwargs: Mapping[str, Any]) -> str | None:
    if source is None or isinstance(source, str):
        return source
    return source(kwargs)


def require_permission(
    permission: str, *, tenant: IdSource = None, ticket: IdSource = None
) -> Callable[[Callable[P, R]], Callable[P, R | Response]]:
    """The view runs only if rbac allows the session's user ``permission``.

    ``tenant`` (default: the session's tenant) and ``ticket`` (default: none, a tenant-wide
    check) are literal ids or functions of the view's keyword arguments. The decision is in
    ``g.queue_decision``. Implies :func:`require_session`.
    """

    def decorate(view: Callable[P, R]) -> Callable[P, R | Response]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            loaded = _load_session()
            if isinstance(loaded, Response):
                return loaded
            tenant_id = _resolve(tenant, kwargs) or loaded.tenant_id
            ticket_id = _resolve(ticket, kwargs)
            if not tenant_id or not loaded.user_id:
                return error_response(403, "forbidden", f"not allowed: {permission}")
            try:
                decision = _state().queue.rbac.check(
                    loaded.user_id, permission, tenant_id=tenant_id, ticket_id=ticket_id
                )
            except Invalid:
                # An id rbac cannot take (from the URL, say) names nothing anyone may reach.
                return error_response(403, "forbidden", f"not allowed: {permission}")
            except QueueError as e:
                current_app.logger.warning("permission check failed: %s", e)
                return _unavailable(e)
            if not decision.allowed:
                return error_response(403, "forbidden", f"not allowed: {permission}")
            g.queue_decision = decision
            return view(*args, **kwargs)

        return wrapper

    return decorate
