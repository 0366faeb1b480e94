"""The Flask app: pages, the JSON API, and the ``raptor_session`` cookie."""

from __future__ import annotations

import base64
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import Flask, Response, abort, current_app, g, jsonify, redirect, render_template, request, session
from sqlalchemy import Engine
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from . import accounts, audit, backup_codes, email_verification, passkeys, rbac, writeback
from .accounts import COOKIE_NAME, SESSION_DAYS, Customer
from .config import Config
from .db import make_engine
from .queue_link import QueueLink, QueueUnavailable, QueueView
from .tickets import TICKETS

if TYPE_CHECKING:
    from queue_client.verify import ServiceTokenVerifier

log = logging.getLogger("raptor")
F = TypeVar("F", bound=Callable[..., Any])
CEREMONY_SECONDS = 300


@dataclass(frozen=True)
class State:
    config: Config
    engine: Engine
    rp: passkeys.RelyingParty
    # Raptor's link to Queue (RAPTOR_SIGNING_KEY set), else None.
    queue: QueueLink | None


def state() -> State:
    return cast(State, current_app.extensions["raptor"])


def create_app(
    config: Config,
    engine: Engine | None = None,
    *,
    start_queue: bool = True,
    writeback_verifier: ServiceTokenVerifier | None = None,
) -> Flask:
    """The Raptor app for ``config``. It expects the schema and the outbox to exist (``python -m
    raptor`` creates them). With ``RAPTOR_SIGNING_KEY`` it links to Queue and, unless
    ``start_queue`` is false, starts the key-file watcher and the audit relay (threads). With
    ``RAPTOR_WRITEBACK_ISSUERS`` it serves the write-back API (``writeback_verifier``: the token
    verifier to use, default one over the issuers' JWKS)."""
    app = Flask(__name__)
    secret = config.secret_key
    if not secret:
        log.warning("RAPTOR_SECRET_KEY is not set: passkey ceremonies in flight will not survive a restart")
        secret = secrets.token_urlsafe(32)
    app.config.update(
        SECRET_KEY=secret,
        # Flask's signed cookie carries only a ceremony's challenge; the sign-in is raptor_session.
        SESSION_COOKIE_NAME="raptor_ceremony",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.secure_cookies,
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    engine = engine or make_engine(config.database_url)
    link = QueueLink(config, engine) if config.signing_key is not None else None
    if link is not None and start_queue:
        link.start()
    app.extensions["raptor"] = State(
        config=config,
        engine=engine,
        rp=passkeys.RelyingParty(id=config.rp_id, name=config.rp_name, origin=config.origin),
        queue=link,
    )
    if config.proxy_hops:
        # The client's address from X-Forwarded-For as the proxies in front set it (only theirs:
        # Queue's proxy replaces what the client sent), for sessions and audit events.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.proxy_hops)  # type: ignore[method-assign]
    app.before_request(_load_session)
    app.register_error_handler(HTTPException, _error)
    _routes(app)
    writeback.init_app(app, config, engine, verifier=writeback_verifier)
    return app


# --- helpers -----------------------------------------------------------------------------------


def _load_session() -> Response | None:
    g.customer = None
    g.session_id = None
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        origin = request.headers.get("Origin")
        if origin is not None and origin != state().config.origin:
            return _fail(403, f"cross-origin request from {origin} refused")
    token = request.cookies.get(COOKIE_NAME)
    if token:
        with state().engine.begin() as conn:
            found = accounts.session_customer(conn, token)
        if found:
            g.customer, g.session_id = found
    return None


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def _fail(status: int, message: str) -> Response:
    if writeback.is_writeback_path(request.path):
        return writeback.error(status, message)
    if _wants_json():
        resp = jsonify(error=message)
    else:
        resp = Response(render_template("error.html", status=status, message=message, customer=g.get("customer")))
    resp.status_code = status
    return resp


def _error(e: HTTPException) -> Response:
    return _fail(e.code or 500, e.description or e.name)


def customer() -> Customer:
    return cast(Customer, g.customer)


def signed_in(view: F) -> F:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.customer is None:
            if _wants_json():
                return _fail(401, "sign in first")
            return redirect("/signin")
        return view(*args, **kwargs)

    return cast(F, wrapper)


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not request.is_json:
        abort(415, "send application/json")
    if not isinstance(body, dict):
        abort(400, "the body must be a JSON object")
    return body


def _str(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    v = body.get(key)
    if v is None or v == "":
        if required:
            abort(400, f"{key} is required")
        return None
    if not isinstance(v, str):
        abort(400, f"{key} must be a string")
    return v


def _start_session(c: Customer, method: str, resp: Response) -> Response:
    with state().engine.begin() as conn:
        token = accounts.create_session(
            conn, c, method=method, ip=request.remote_addr, user_agent=request.headers.get("User-Agent")
        )
    resp.set_cookie(
        COOKIE_NAME,
        token,
        max_age=SESSION_DAYS * 86400,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=state().config.secure_cookies,
    )
    return resp


def _me(c: Customer) -> dict[str, Any]:
    return {
        "id": c.id,
        "tenant_id": str(c.tenant_id),
        "email": c.email,
        "display_name": c.display_name,
        "email_verified": c.email_verified_at is not None,
    }


def _ceremony_put(kind: str, challenge: bytes, **extra: Any) -> None:
    session["ceremony"] = {
        "kind": kind,
        "challenge": base64.urlsafe_b64encode(challenge).decode(),
        "exp": time.time() + CEREMONY_SECONDS,
        **extra,
    }


def _ceremony_take(kind: str) -> dict[str, Any]:
    c = session.pop("ceremony", None)
    if not isinstance(c, dict) or c.get("kind") != kind or float(c.get("exp", 0)) < time.time():
        abort(400, f"no {kind} ceremony in progress (ask for options first)")
    c["challenge"] = base64.urlsafe_b64decode(c["challenge"])
    return c


def _flag(on: bool) -> None:
    if not on:
        abort(404, "this feature is not enabled")


def _tenant_arg(raw: str | None) -> uuid.UUID:
    try:
        return uuid.UUID(raw or "")
    except ValueError:
        abort(400, "tenant_id must be a UUID")


def _queue_view(permission: str, tickets: list[str | None]) -> QueueView:
    link = state().queue
    if link is None or not link.can_check:
        raise QueueUnavailable("Raptor is not linked to Queue (RAPTOR_QUEUE_AUTH_URL and RAPTOR_QUEUE_RBAC_URL)")
    return link.check_tickets(customer(), permission, tickets)


def _visible_tickets(c: Customer) -> list[Any]:
    with state().engine.begin() as conn:
        if rbac.may(conn, c.id, "ticket.read", c.tenant_id, None):
            return list(TICKETS)
        mine = rbac.tickets_with(conn, c.id, "ticket.read", c.tenant_id)
    return [t for t in TICKETS if t.id in mine]


# --- routes ------------------------------------------------------------------------------------


def _routes(app: Flask) -> None:
    @app.get("/")
    def home() -> str:
        return render_template("home.html", customer=g.customer)

    @app.get("/healthz")
    def healthz() -> Response:
        link = state().queue
        return jsonify(
            status="ok",
            signing_kid=link.keys.signing_kid if link else None,
            outbox_pending=audit.pending(state().engine),
        )

    @app.get("/.well-known/jwks.json")
    def jwks() -> Response:
        """Raptor's public keys, for Queue's services (``[[tokens.trusted]] jwks_url``)."""
        link = state().queue
        if link is None:
            resp = jsonify(error="Raptor has no signing key (RAPTOR_SIGNING_KEY is not set)")
            resp.status_code = 404
            return resp
        return jsonify(link.keys.ring.jwks())

    # sign-in and sign-out

    @app.get("/signin")
    def signin_page() -> str:
        return render_template("signin.html", customer=g.customer, flags=state().config, error=None)

    @app.post("/signin")
    def signin_form() -> Any:
        form = request.form
        c, error = _password_signin(form.get("email", ""), form.get("password", ""), form.get("tenant"))
        if c is None:
            page = render_template("signin.html", customer=None, flags=state().config, error=error)
            return Response(page, status=401)
        return _start_session(c, "password", cast(Response, redirect("/account", code=303)))

    @app.post("/api/signin/password")
    def signin_password() -> Any:
        body = json_body()
        c, error = _password_signin(
            _str(body, "email") or "", _str(body, "password") or "", _str(body, "tenant", required=False)
        )
        if c is None:
            return _fail(401, error or "sign-in failed")
        return _start_session(c, "password", jsonify(customer=_me(c)))

    @app.post("/signin/backup-code")
    def signin_backup_form() -> Any:
        _flag(state().config.flag_backup_codes)
        c, error = _backup_signin(
            request.form.get("email", ""), request.form.get("code", ""), request.form.get("tenant")
        )
        if c is None:
            page = render_template("signin.html", customer=None, flags=state().config, error=error)
            return Response(page, status=401)
        return _start_session(c, "backup_code", cast(Response, redirect("/account", code=303)))

    @app.post("/api/signin/backup-code")
    def signin_backup() -> Any:
        _flag(state().config.flag_backup_codes)
        body = json_body()
        c, error = _backup_signin(
            _str(body, "email") or "", _str(body, "code") or "", _str(body, "tenant", required=False)
        )
        if c is None:
            return _fail(401, error or "sign-in failed")
        return _start_session(c, "backup_code", jsonify(customer=_me(c)))

    def _signout(resp: Response) -> Response:
        if g.session_id is not None:
            with state().engine.begin() as conn:
                accounts.revoke_session(conn, g.session_id, customer().id)
        resp.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Lax", secure=state().config.secure_cookies)
        return resp

    @app.post("/signout")
    def signout_form() -> Response:
        return _signout(cast(Response, redirect("/", code=303)))

    @app.post("/api/signout")
    def signout() -> Response:
        return _signout(jsonify(signed_out=g.session_id is not None))

    @app.get("/api/me")
    @signed_in
    def me() -> Response:
        return jsonify(customer=_me(customer()))

    # passkeys

    @app.post("/api/passkeys/register/options")
    @signed_in
    def passkey_register_options() -> Response:
        with state().engine.begin() as conn:
            options, challenge, handle = passkeys.registration_options(conn, state().rp, customer())
        _ceremony_put("register", challenge, customer_id=customer().id, user_handle=handle.hex())
        return Response(options, mimetype="application/json")

    @app.post("/api/passkeys/register/verify")
    @signed_in
    def passkey_register_verify() -> Any:
        body = json_body()
        ceremony = _ceremony_take("register")
        if ceremony.get("customer_id") != customer().id:
            return _fail(400, "the ceremony was started by another customer")
        credential = body.get("credential")
        if not isinstance(credential, dict):
            return _fail(400, "credential (the PublicKeyCredential as JSON) is required")
        try:
            with state().engine.begin() as conn:
                row_id = passkeys.register(
                    conn,
                    state().rp,
                    customer(),
                    credential,
                    ceremony["challenge"],
                    bytes.fromhex(ceremony["user_handle"]),
                    _str(body, "name", required=False),
                )
        except passkeys.PasskeyError as e:
            return _fail(400, str(e))
        return jsonify(id=row_id), 201

    @app.get("/api/passkeys")
    @signed_in
    def passkey_list() -> Response:
        with state().engine.begin() as conn:
            return jsonify(passkeys=passkeys.list_passkeys(conn, customer().id))

    @app.post("/api/passkeys/signin/options")
    def passkey_signin_options() -> Any:
        body = json_body()
        email = _str(body, "email", required=False)
        customer_id: int | None = None
        with state().engine.begin() as conn:
            if email:
                try:
                    found = accounts.find_by_email(conn, email, _str(body, "tenant", required=False))
                except accounts.AmbiguousEmail:
                    return _fail(409, "this email is in several tenants: say which (tenant)")
                # An unknown email gets options too (with no credentials): nobody learns who exists.
                customer_id = found[0].id if found else -1
            options, challenge = passkeys.authentication_options(conn, state().rp, customer_id)
        _ceremony_put("authenticate", challenge, customer_id=customer_id)
        return Response(options, mimetype="application/json")

    @app.post("/api/passkeys/signin/verify")
    def passkey_signin_verify() -> Any:
        body = json_body()
        ceremony = _ceremony_take("authenticate")
        credential = body.get("credential")
        if not isinstance(credential, dict):
            return _fail(400, "credential (the PublicKeyCredential as JSON) is required")
        try:
            with state().engine.begin() as conn:
                customer_id = passkeys.authenticate(
                    conn, state().rp, credential, ceremony["challenge"], ceremony.get("customer_id")
                )
                c = accounts.get_customer(conn, customer_id)
        except passkeys.PasskeyError as e:
            if e.customer_id is not None:
                # The ceremony's transaction was rolled back: the rejection is its own.
                with state().engine.begin() as conn:
                    audit.record(
                        "passkey.rejected",
                        actor=e.customer_id,
                        conn=conn,
                        target=("passkey", e.passkey_id or 0),
                        passkey_id=e.passkey_id,
                        error=str(e),
                    )
            return _fail(401, str(e))
        if c is None:
            return _fail(401, "the customer is not active")
        return _start_session(c, "passkey", jsonify(customer=_me(c)))

    # account

    @app.get("/account")
    @signed_in
    def account() -> str:
        with state().engine.begin() as conn:
            keys = passkeys.list_passkeys(conn, customer().id)
            left = backup_codes.remaining(conn, customer().id)
        return render_template(
            "account.html", customer=customer(), passkeys=keys, codes_left=left, flags=state().config, notice=None
        )

    @app.post("/account/backup-codes")
    @signed_in
    def account_backup_codes() -> str:
        _flag(state().config.flag_backup_codes)
        with state().engine.begin() as conn:
            codes = backup_codes.generate_set(conn, customer().id)
        return render_template("codes.html", customer=customer(), codes=codes)

    @app.post("/api/backup-codes")
    @signed_in
    def api_backup_codes() -> Any:
        _flag(state().config.flag_backup_codes)
        with state().engine.begin() as conn:
            codes = backup_codes.generate_set(conn, customer().id)
        return jsonify(codes=codes), 201

    @app.get("/api/backup-codes")
    @signed_in
    def api_backup_codes_left() -> Response:
        _flag(state().config.flag_backup_codes)
        with state().engine.begin() as conn:
            return jsonify(remaining=backup_codes.remaining(conn, customer().id))

    @app.post("/account/email/send")
    @signed_in
    def account_email_send() -> Any:
        _flag(state().config.flag_email_verification)
        with state().engine.begin() as conn:
            email_verification.send_code(conn, customer(), state().config.mail_dir)
        return redirect("/account", code=303)

    @app.post("/account/email/verify")
    @signed_in
    def account_email_verify() -> Any:
        _flag(state().config.flag_email_verification)
        with state().engine.begin() as conn:
            ok = email_verification.verify(conn, customer().id, request.form.get("code", ""))
        if not ok:
            return _fail(400, "that code is wrong or expired")
        return redirect("/account", code=303)

    @app.post("/api/email/send-code")
    @signed_in
    def api_email_send() -> Any:
        _flag(state().config.flag_email_verification)
        with state().engine.begin() as conn:
            email_verification.send_code(conn, customer(), state().config.mail_dir)
        return jsonify(sent=True), 202

    @app.post("/api/email/verify")
    @signed_in
    def api_email_verify() -> Any:
        _flag(state().config.flag_email_verification)
        code = _str(json_body(), "code") or ""
        with state().engine.begin() as conn:
            ok = email_verification.verify(conn, customer().id, code)
        if not ok:
            return _fail(400, "that code is wrong or expired")
        return jsonify(verified=True)

    # RBAC

    @app.post("/api/rbac/grants")
    @signed_in
    def api_grant() -> Any:
        body = json_body()
        target = body.get("customer_id")
        if not isinstance(target, int) or isinstance(target, bool):
            return _fail(400, "customer_id must be an integer")
        expires_raw = _str(body, "expires_at", required=False)
        try:
            expires = datetime.fromisoformat(expires_raw) if expires_raw else None
        except ValueError:
            return _fail(400, "expires_at must be an ISO 8601 time")
        if expires is not None and expires.tzinfo is None:
            return _fail(400, "expires_at needs a time zone offset")
        try:
            scope = rbac.Scope.parse(
                _str(body, "scope_type") or "",
                _str(body, "tenant_id", required=False),
                _str(body, "ticket_id", required=False),
            )
            with state().engine.begin() as conn:
                made = rbac.grant(
                    conn,
                    customer().id,
                    target,
                    _str(body, "role") or "",
                    scope,
                    expires_at=expires,
                    reason=_str(body, "reason", required=False),
                )
        except rbac.RbacError as e:
            return _fail(e.status, e.message)
        return jsonify(grant=made), 201

    @app.post("/api/rbac/grants/<int:grant_id>/revoke")
    @signed_in
    def api_revoke(grant_id: int) -> Any:
        reason = _str(json_body(), "reason") or ""
        try:
            with state().engine.begin() as conn:
                done = rbac.revoke(conn, customer().id, grant_id, reason)
        except rbac.RbacError as e:
            return _fail(e.status, e.message)
        return jsonify(grant=done)

    @app.get("/api/rbac/grants")
    @signed_in
    def api_grants() -> Any:
        """A tenant's grants (``tenant_id``; needs rbac.read there), or without it the caller's own."""
        tenant_raw = request.args.get("tenant_id")
        include = request.args.get("include_inactive", "") in ("1", "true")
        with state().engine.begin() as conn:
            if tenant_raw is None:
                return jsonify(
                    grants=rbac.list_grants(conn, tenant_id=None, customer_id=customer().id, include_inactive=include)
                )
            tenant = _tenant_arg(tenant_raw)
            if not rbac.may(conn, customer().id, "rbac.read", tenant, None):
                return _fail(403, "listing a tenant's grants needs rbac.read there")
            cid = request.args.get("customer_id", type=int)
            return jsonify(grants=rbac.list_grants(conn, tenant_id=tenant, customer_id=cid, include_inactive=include))

    @app.get("/api/rbac/check")
    @signed_in
    def api_check() -> Any:
        """``may(customer, permission, tenant, ticket)``; another customer's check needs rbac.read."""
        permission = request.args.get("permission", "")
        if not permission:
            return _fail(400, "permission is required")
        tenant_raw = request.args.get("tenant_id")
        tenant = _tenant_arg(tenant_raw) if tenant_raw else None
        ticket = request.args.get("ticket_id") or None
        who = request.args.get("customer_id", type=int) or customer().id
        with state().engine.begin() as conn:
            if who != customer().id and not rbac.may(
                conn, customer().id, "rbac.read", tenant or customer().tenant_id, None
            ):
                return _fail(403, "checking another customer needs rbac.read")
            allowed = rbac.may(conn, who, permission, tenant, ticket)
        return jsonify(
            allowed=allowed,
            customer_id=who,
            permission=permission,
            tenant_id=str(tenant) if tenant else None,
            ticket_id=ticket,
        )

    # Queue-backed checks

    @app.get("/access")
    @signed_in
    def access() -> Any:
        """Each ticket with Raptor's decision and Queue's (rbac, for the customer's Queue user)."""
        with state().engine.begin() as conn:
            ours = [rbac.may(conn, customer().id, "ticket.read", customer().tenant_id, t.id) for t in TICKETS]
        try:
            view = _queue_view("ticket.read", [t.id for t in TICKETS])
            error = None
        except QueueUnavailable as e:
            view, error = None, str(e)
        page = render_template(
            "access.html",
            customer=customer(),
            rows=[(t, ours[i], view.allowed[i] if view else None) for i, t in enumerate(TICKETS)],
            queue_user=view.user_id if view else None,
            error=error,
        )
        return Response(page, status=200 if view else 503)

    @app.get("/api/queue/check")
    @signed_in
    def api_queue_check() -> Any:
        """``permission`` (and ``ticket_id``) for the signed-in customer, asked of Raptor and of Queue."""
        permission = request.args.get("permission", "")
        if not permission:
            return _fail(400, "permission is required")
        ticket = request.args.get("ticket_id") or None
        with state().engine.begin() as conn:
            ours = rbac.may(conn, customer().id, permission, customer().tenant_id, ticket)
        try:
            view = _queue_view(permission, [ticket])
        except QueueUnavailable as e:
            return _fail(502, f"Queue did not answer the check: {e}")
        return jsonify(
            raptor=ours,
            queue=view.allowed[0],
            queue_user_id=view.user_id,
            permission=permission,
            tenant_id=str(customer().tenant_id),
            ticket_id=ticket,
        )

    # tickets

    @app.get("/tickets")
    @signed_in
    def tickets() -> Any:
        visible = _visible_tickets(customer())
        if not visible:
            return _fail(403, "you need ticket.read to see tickets")
        return render_template("tickets.html", customer=customer(), tickets=visible)

    @app.get("/tickets/<ticket_id>")
    @signed_in
    def ticket(ticket_id: str) -> Any:
        found = next((t for t in TICKETS if t.id == ticket_id), None)
        with state().engine.begin() as conn:
            allowed = rbac.may(conn, customer().id, "ticket.read", customer().tenant_id, ticket_id)
        if not allowed:
            return _fail(403, f"you need ticket.read on {ticket_id}")
        if found is None:
            return _fail(404, f"no ticket {ticket_id}")
        return render_template("tickets.html", customer=customer(), tickets=[found])


def _password_signin(email: str, password: str, tenant: str | None) -> tuple[Customer | None, str | None]:
    if not email.strip() or not password:
        return None, "email and password are required"
    with state().engine.begin() as conn:
        try:
            c = accounts.check_password(conn, email, password, tenant or None)
        except accounts.AmbiguousEmail:
            return None, "this email is in several tenants: say which (tenant)"
        if c is None:
            # Attributed to the customer's tenant when the email is someone's (else logged only).
            known = accounts.find_by_email(conn, email, tenant or None)
            audit.record(
                "signin.failed",
                actor=None,
                conn=conn,
                tenant=known[0].tenant_id if known else None,
                target=("customer", known[0].id) if known else None,
                method="password",
                email=email.strip().lower(),
            )
    return (c, None) if c else (None, "wrong email or password")


def _backup_signin(email: str, code: str, tenant: str | None) -> tuple[Customer | None, str | None]:
    with state().engine.begin() as conn:
        try:
            found = accounts.find_by_email(conn, email, tenant or None)
        except accounts.AmbiguousEmail:
            return None, "this email is in several tenants: say which (tenant)"
        if found is None:
            accounts.burn_time(code)  # an unknown email costs what a wrong code costs
            audit.record("signin.failed", actor=None, conn=conn, method="backup_code", email=email.strip().lower())
            return None, "wrong email or backup code"
        if not backup_codes.redeem(conn, found[0].id, code):
            return None, "wrong email or backup code"
    return found[0], None
