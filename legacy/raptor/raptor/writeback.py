"""The write-back API (issue 19): what users do at Queue after a cutover, written back to Raptor's
own tables so that a rollback locks nobody out. Queue's auth and rbac call it under
``/internal/queue/v1/`` (docs/raptor.md, "Write-back API (for the real Raptor)").

- Auth: ``Authorization: Bearer <service token>`` minted by a Queue service listed in
  ``RAPTOR_WRITEBACK_ISSUERS`` (keys from its JWKS), audience ``raptor``, scope
  ``raptor:writeback``; a token is one use on a change (per process). Without issuers configured
  every path here answers 404.
- Bodies: JSON objects, unknown members refused (422 naming the field), times RFC 3339 with an
  offset, bytes base64url without padding. Errors are Queue's shape ``{"error": {"code",
  "message", "field?"}}``.
- Idempotent: every call sent again answers the same and changes nothing. The rules use only
  what ``raptor-schema.sql`` has (a passkey by its credential id, a grant by customer, role,
  scope and ``granted_at``; a revocation or a use keeps its first time).
- Each applied change records Raptor's own audit event (``raptor/audit.py``) with actor
  ``system:queue``, in the change's transaction; a call that changes nothing records nothing.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError
from webauthn.helpers import decode_credential_public_key

from . import audit
from .config import Config

if TYPE_CHECKING:
    # queue_client.verify is imported when the API is on (init_app, the token check): a Raptor
    # that does not serve it runs with a queue-client that predates the verifier.
    from queue_client.verify import ServiceTokenVerifier, VerifiedToken

log = logging.getLogger("raptor.writeback")

PREFIX = "/internal/queue/v1"
#: Raptor's name as Queue's tokens address it.
AUDIENCE = "raptor"
SCOPE = "raptor:writeback"
#: The audit events' actor: ``system:queue``.
SYSTEM_ACTOR = "queue"
EXTENSION = "raptor.writeback"

DEVICE_TYPES = ("single_device", "multi_device")
SCOPE_TYPES = ("global", "tenant", "ticket")
BIGINT_MAX = 2**63 - 1
#: WebAuthn's limits: a credential id is at most 1023 bytes, a user handle at most 64.
CREDENTIAL_ID_MAX = 1023
USER_HANDLE_MAX = 64
PUBLIC_KEY_MAX = 2048
QUEUE_ID_MAX = 128
NAME_MAX = 100  # as raptor/passkeys.py stores a name
REASON_MAX = 1000
TICKET_ID_MAX = 128
TRANSPORTS_MAX = 16

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}

bp = Blueprint("writeback", __name__, url_prefix=PREFIX)
T = TypeVar("T")


@dataclass(frozen=True)
class WriteBack:
    engine: Engine
    #: None: the API is off (RAPTOR_WRITEBACK_ISSUERS is empty).
    verifier: ServiceTokenVerifier | None
    issuers: tuple[str, ...]


class Refused(Exception):
    """A call refused; answered in Queue's error shape."""

    def __init__(self, status: int, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.code = code or _CODES.get(status, "error")


def init_app(app: Flask, config: Config, engine: Engine, *, verifier: ServiceTokenVerifier | None = None) -> None:
    """Register the blueprint; ``verifier`` defaults to one over the issuers' JWKS."""
    if verifier is None and config.writeback_issuers:
        from queue_client.verify import ServiceTokenVerifier

        verifier = ServiceTokenVerifier(AUDIENCE, config.writeback_jwks())
    app.extensions[EXTENSION] = WriteBack(
        engine, verifier if config.writeback_issuers else None, config.writeback_issuers
    )
    app.register_blueprint(bp)


def _wb() -> WriteBack:
    found = current_app.extensions.get(EXTENSION)
    if not isinstance(found, WriteBack):
        raise RuntimeError("the write-back API is not initialised on this app (writeback.init_app)")
    return found


def is_writeback_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def error(status: int, message: str, *, field: str | None = None, code: str | None = None) -> Response:
    """An error of this API in Queue's shape (``{"error": {"code", "message", "field?"}}``, as
    ``queue_client.flask.error_response``); every path here is 404 while the API is off."""
    if _wb().verifier is None:
        status, message, field, code = 404, "the write-back API is off (RAPTOR_WRITEBACK_ISSUERS)", None, None
    detail = {"code": code or _CODES.get(status, "error"), "message": message}
    if field is not None:
        detail["field"] = field
    response = jsonify(error=detail)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(Refused)
def _refused(e: Refused) -> Response:
    return error(e.status, e.message, field=e.field, code=e.code)


@bp.before_request
def _authenticate() -> Response | None:
    from queue_client.verify import TokenRefused, bearer

    wb = _wb()
    if wb.verifier is None:
        return error(404, "the write-back API is off")
    token = bearer(request.headers.get("Authorization"))
    if token is None:
        return error(401, "missing service token (Authorization: Bearer)")
    try:
        g.queue_caller = wb.verifier.verify(
            token,
            issuers=wb.issuers,
            scopes=(SCOPE,),
            # A token is one use on a change, as at Queue's services; reads may reuse it.
            spend=request.method not in ("GET", "HEAD", "OPTIONS"),
        )
    except TokenRefused as e:
        log.info("write-back call refused: %s", e.reason)
        message = {
            401: "invalid service token",
            403: e.reason,
            503: "cannot verify service tokens right now; retry",
        }.get(e.status, "invalid service token")
        if e.code == "token_replayed":
            message = "this service token was already used for a change; mint a fresh token for each request"
        return error(e.status, message, code=e.code)
    return None


def caller() -> VerifiedToken:
    """The verified Queue service of this request (set by the token check)."""
    found = g.get("queue_caller")
    if found is None:
        raise RuntimeError("no verified caller: the token check did not run")
    return cast("VerifiedToken", found)


# --- bodies ------------------------------------------------------------------------------------


def body(required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON object of the request: ``required`` members present (``optional`` ones may be
    missing or null; ``queue_id`` is always allowed), nothing else."""
    raw = request.get_data(cache=True)
    if not raw.strip() and not required:
        return {}
    if not request.is_json:
        raise Refused(400, "expected Content-Type: application/json")
    parsed = request.get_json(silent=True)
    if parsed is None:
        if not required and raw.strip() == b"null":
            return {}
        raise Refused(400, "malformed JSON")
    if not isinstance(parsed, dict):
        raise Refused(422, "the body must be a JSON object", field="body")
    allowed = set(required) | set(optional) | {"queue_id"}
    unknown = sorted(k for k in parsed if k not in allowed)
    if unknown:
        raise Refused(422, f"unknown field `{unknown[0]}`", field=unknown[0])
    missing = [k for k in required if k not in parsed]
    if missing:
        raise Refused(422, f"`{missing[0]}` is required", field=missing[0])
    return parsed


def _need(b: Mapping[str, Any], key: str, kind: Callable[[str, Any], T]) -> T:
    """Member ``key``, required and not null, read by ``kind``."""
    value = b.get(key)
    if value is None:
        raise Refused(422, f"`{key}` is required", field=key)
    return kind(key, value)


def _maybe(b: Mapping[str, Any], key: str, kind: Callable[[str, Any], T]) -> T | None:
    """Member ``key``, which may be null or missing, read by ``kind``."""
    value = b.get(key)
    return None if value is None else kind(key, value)


def _int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BIGINT_MAX:
        raise Refused(422, f"`{key}` must be a non-negative integer", field=key)
    return value


def _id(key: str, value: Any) -> int:
    n = _int(key, value)
    if n == 0:
        raise Refused(422, f"`{key}` must be a positive integer", field=key)
    return n


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise Refused(422, f"`{key}` must be true or false", field=key)
    return value


def _time(key: str, value: Any) -> datetime:
    if isinstance(value, str) and "T" in value.upper():
        try:
            # RFC 3339 allows a lowercase t and z; digits beyond microseconds are dropped.
            parsed = datetime.fromisoformat(value.upper())
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    raise Refused(422, f"`{key}` must be an RFC 3339 time with an offset, e.g. 2026-01-02T03:04:05Z", field=key)


def _text(limit: int) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > limit or "\x00" in value:
            raise Refused(422, f"`{key}` must be a string of 1 to {limit} characters", field=key)
        return value

    return parse


def _bytes(limit: int) -> Callable[[str, Any], bytes]:
    def parse(key: str, value: Any) -> bytes:
        if isinstance(value, str) and value and _B64URL.fullmatch(value) and len(value) % 4 != 1:
            try:
                raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            except (binascii.Error, ValueError):
                raw = b""
            if 0 < len(raw) <= limit:
                return raw
        raise Refused(422, f"`{key}` must be 1 to {limit} bytes as base64url without padding", field=key)

    return parse


def _one_of(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        if value not in choices:
            raise Refused(422, f"`{key}` must be one of {', '.join(choices)}", field=key)
        return str(value)

    return parse


def _uuid(key: str, value: Any) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise Refused(422, f"`{key}` must be a UUID", field=key)


def _transports(key: str, value: Any) -> list[str]:
    if (
        not isinstance(value, list)
        or len(value) > TRANSPORTS_MAX
        or not all(isinstance(t, str) and 0 < len(t) <= 32 for t in value)
    ):
        raise Refused(422, f"`{key}` must be a list of at most {TRANSPORTS_MAX} short strings, or null", field=key)
    return list(value)


def _cose_key(key: str, value: Any) -> bytes:
    raw = _bytes(PUBLIC_KEY_MAX)(key, value)
    try:
        decode_credential_public_key(raw)
    except Exception:  # py_webauthn raises several types for a key it cannot read
        raise Refused(422, f"`{key}` is not a COSE public key py_webauthn can use", field=key) from None
    return raw


def _queue_fields(b: Mapping[str, Any]) -> dict[str, Any]:
    """What every audit event of this API carries: where the change came from at Queue."""
    return {
        "via": "queue.writeback",
        "queue_issuer": caller().iss,
        "queue_id": _maybe(b, "queue_id", _text(QUEUE_ID_MAX)),
    }


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _tenant_of(conn: Connection, customer_id: int) -> uuid.UUID | None:
    found = conn.execute(text("SELECT tenant_id FROM customers WHERE id = :c"), {"c": customer_id}).scalar()
    return found if isinstance(found, uuid.UUID) else None


def _record_for(conn: Connection, event: str, owner: int, target: tuple[str, int], **payload: Any) -> None:
    """Raptor's audit event of a change Queue wrote back: actor `system:queue`, the tenant of customer `owner`."""
    audit.record(
        event,
        actor=None,
        system=SYSTEM_ACTOR,
        conn=conn,
        tenant=_tenant_of(conn, owner),
        target=target,
        **payload,
    )


def _customer(conn: Connection, key: str, customer_id: int, *, lock: bool = False) -> uuid.UUID:
    """The customer's tenant; 422 naming ``key`` when there is no such customer."""
    sql = "SELECT tenant_id FROM customers WHERE id = :c" + (" FOR UPDATE" if lock else "")
    found = conn.execute(text(sql), {"c": customer_id}).scalar()
    if not isinstance(found, uuid.UUID):
        raise Refused(422, f"no customer {customer_id}", field=key)
    return found


def _transaction(work: Callable[[Connection], T]) -> T:
    """``work`` in one transaction; a unique or foreign-key race with a concurrent change is a
    503 (sent again, the call finds what the other one did)."""
    try:
        with _wb().engine.begin() as conn:
            return work(conn)
    except IntegrityError as e:
        log.warning("write-back call conflicted with a concurrent change: %s", e.orig)
        raise Refused(503, "a concurrent change conflicted with this one; send it again") from None


# --- endpoints ---------------------------------------------------------------------------------


@bp.get("/health")
def health() -> Response:
    return jsonify(ok=True)


PASSKEY_FIELDS = (
    "customer_id",
    "credential_id",
    "public_key",
    "sign_count",
    "device_type",
    "backed_up",
    "user_verified",
    "user_handle",
    "created_at",
)


@bp.post("/passkeys")
def create_passkey() -> tuple[Response, int]:
    """A passkey registered at Queue: 201 with Raptor's id; 200 with it when the credential is
    already the customer's; 409 when it is another customer's."""
    b = body(PASSKEY_FIELDS, ("aaguid", "transports", "name"))
    customer_id = _need(b, "customer_id", _id)
    credential_id = _need(b, "credential_id", _bytes(CREDENTIAL_ID_MAX))
    public_key = _need(b, "public_key", _cose_key)
    sign_count = _need(b, "sign_count", _int)
    aaguid = _maybe(b, "aaguid", _uuid)
    device_type = _need(b, "device_type", _one_of(DEVICE_TYPES))
    backed_up = _need(b, "backed_up", _bool)
    user_verified = _need(b, "user_verified", _bool)
    transports = _maybe(b, "transports", _transports)
    user_handle = _need(b, "user_handle", _bytes(USER_HANDLE_MAX))
    name = b.get("name")
    if name is not None and not isinstance(name, str):
        raise Refused(422, "`name` must be a string or null", field="name")
    created_at = _need(b, "created_at", _time)
    fields = _queue_fields(b)

    def work(conn: Connection) -> tuple[int, int]:
        # Locked: one customer's passkeys keep one user handle (as raptor/passkeys.py's register).
        tenant = _customer(conn, "customer_id", customer_id, lock=True)
        existing = conn.execute(
            text("SELECT id, customer_id FROM webauthn_credentials WHERE credential_id = :cid"),
            {"cid": credential_id},
        ).first()
        if existing is not None:
            if int(existing.customer_id) != customer_id:
                raise Refused(409, "this credential id is registered to another customer", field="credential_id")
            return int(existing.id), 200
        handle = conn.execute(
            text("SELECT user_handle FROM webauthn_credentials WHERE customer_id = :c ORDER BY id LIMIT 1"),
            {"c": customer_id},
        ).scalar()
        if handle is not None and bytes(handle) != user_handle:
            raise Refused(422, "the customer's passkeys carry another user handle", field="user_handle")
        row_id = int(
            conn.execute(
                text(
                    "INSERT INTO webauthn_credentials (customer_id, credential_id, public_key, sign_count, aaguid,"
                    " device_type, backed_up, user_verified, transports, user_handle, name, created_at)"
                    " VALUES (:c, :cid, :pk, :n, :aaguid, :dt, :bu, :uv, :tr, :uh, :name, :at) RETURNING id"
                ),
                {
                    "c": customer_id,
                    "cid": credential_id,
                    "pk": public_key,
                    "n": sign_count,
                    "aaguid": str(aaguid) if aaguid else None,
                    "dt": device_type,
                    "bu": backed_up,
                    "uv": user_verified,
                    "tr": transports,
                    "uh": user_handle,
                    "name": (name or "").strip()[:NAME_MAX] or None,
                    "at": created_at,
                },
            ).scalar_one()
        )
        audit.record(
            "passkey.registered",
            actor=None,
            system=SYSTEM_ACTOR,
            conn=conn,
            tenant=tenant,
            target=("passkey", row_id),
            passkey_id=row_id,
            customer_id=customer_id,
            **fields,
        )
        return row_id, 201

    row_id, status = _transaction(work)
    return jsonify(id=row_id), status


@bp.patch("/passkeys/<int:passkey_id>")
def update_passkey(passkey_id: int) -> Response:
    """A passkey's counter, last use or backup state after sign-ins at Queue. The counter and the
    last use never go back (a lower value is ignored)."""
    b = body((), ("sign_count", "last_used_at", "backed_up"))
    sign_count = _maybe(b, "sign_count", _int)
    last_used_at = _maybe(b, "last_used_at", _time)
    backed_up = _maybe(b, "backed_up", _bool)
    fields = _queue_fields(b)

    def work(conn: Connection) -> dict[str, Any]:
        row = conn.execute(
            text(
                "SELECT id, customer_id, sign_count, last_used_at, backed_up FROM webauthn_credentials"
                " WHERE id = :id FOR UPDATE"
            ),
            {"id": passkey_id},
        ).first()
        if row is None:
            raise Refused(404, f"no passkey {passkey_id}")
        new_count = max(int(row.sign_count), sign_count) if sign_count is not None else int(row.sign_count)
        new_used = row.last_used_at
        if last_used_at is not None and (new_used is None or last_used_at > new_used):
            new_used = last_used_at
        new_backed_up = backed_up if backed_up is not None else bool(row.backed_up)
        changes: dict[str, Any] = {}
        if new_count != row.sign_count:
            changes["sign_count"] = {"from": int(row.sign_count), "to": new_count}
        if new_used != row.last_used_at:
            changes["last_used_at"] = {"from": rfc3339(row.last_used_at), "to": rfc3339(new_used)}
        if new_backed_up != row.backed_up:
            changes["backed_up"] = {"from": bool(row.backed_up), "to": new_backed_up}
        if changes:
            conn.execute(
                text(
                    "UPDATE webauthn_credentials SET sign_count = :n, last_used_at = :u, backed_up = :b WHERE id = :id"
                ),
                {"n": new_count, "u": new_used, "b": new_backed_up, "id": passkey_id},
            )
            _record_for(
                conn,
                "passkey.updated",
                int(row.customer_id),
                target=("passkey", passkey_id),
                passkey_id=passkey_id,
                customer_id=int(row.customer_id),
                changes=changes,
                **fields,
            )
        return {
            "id": passkey_id,
            "sign_count": new_count,
            "last_used_at": rfc3339(new_used),
            "backed_up": new_backed_up,
        }

    return jsonify(_transaction(work))


@bp.delete("/passkeys/<int:passkey_id>")
def delete_passkey(passkey_id: int) -> Response:
    """A passkey deleted at Queue: 204, also when it is gone already."""
    b = body(())
    fields = _queue_fields(b)

    def work(conn: Connection) -> None:
        row = conn.execute(
            text("DELETE FROM webauthn_credentials WHERE id = :id RETURNING customer_id"), {"id": passkey_id}
        ).first()
        if row is not None:
            _record_for(
                conn,
                "passkey.deleted",
                int(row.customer_id),
                target=("passkey", passkey_id),
                passkey_id=passkey_id,
                customer_id=int(row.customer_id),
                **fields,
            )

    _transaction(work)
    return Response(status=204)


@dataclass(frozen=True)
class _Once:
    """A row whose time column is set once (a revocation, a use): the first time is kept."""

    table: str
    column: str
    #: The audit event's target type, also the noun in messages.
    target: str
    event: str
    #: rbac_grants also records who revoked.
    revoked_by: bool = False


SESSION_REVOKE = _Once("customer_sessions", "revoked_at", "session", "session.revoked")
CODE_USE = _Once("customer_backup_codes", "used_at", "backup_code", "backup_code.used")
GRANT_REVOKE = _Once("rbac_grants", "revoked_at", "grant", "rbac.grant.revoked", revoked_by=True)


def _set_once(spec: _Once, row_id: int) -> Response:
    """Set ``spec.column`` of row ``row_id`` unless it is set: 200 with what the row holds."""
    b = body((spec.column,), ("revoked_by",) if spec.revoked_by else ())
    at = _need(b, spec.column, _time)
    by = _maybe(b, "revoked_by", _id)
    fields = _queue_fields(b)
    by_column = "revoked_by" if spec.revoked_by else "NULL"

    def work(conn: Connection) -> dict[str, Any]:
        row = conn.execute(
            text(
                f"SELECT customer_id, {spec.column} AS at, {by_column} AS by FROM {spec.table}"
                " WHERE id = :id FOR UPDATE"
            ),
            {"id": row_id},
        ).first()
        if row is None:
            raise Refused(404, f"no {spec.target.replace('_', ' ')} {row_id}")
        if row.at is not None:
            kept_at, kept_by = row.at, row.by
        else:
            if by is not None:
                _customer(conn, "revoked_by", by)
            sets = f"{spec.column} = :at" + (", revoked_by = :by" if spec.revoked_by else "")
            conn.execute(text(f"UPDATE {spec.table} SET {sets} WHERE id = :id"), {"at": at, "by": by, "id": row_id})
            kept_at, kept_by = at, by
            _record_for(
                conn,
                spec.event,
                int(row.customer_id),
                target=(spec.target, row_id),
                customer_id=int(row.customer_id),
                **{f"{spec.target}_id": row_id, spec.column: rfc3339(at)},
                **({"revoked_by": by} if spec.revoked_by else {}),
                **fields,
            )
        answer: dict[str, Any] = {"id": row_id, spec.column: rfc3339(kept_at)}
        if spec.revoked_by:
            answer["revoked_by"] = int(kept_by) if kept_by is not None else None
        return answer

    return jsonify(_transaction(work))


@bp.post("/sessions/<int:session_id>/revoke")
def revoke_session(session_id: int) -> Response:
    """An imported session revoked at Queue (sign-out, revoke one, revoke all): it ends at Raptor."""
    return _set_once(SESSION_REVOKE, session_id)


@bp.post("/backup-codes/<int:code_id>/use")
def use_backup_code(code_id: int) -> Response:
    """An imported backup code redeemed at Queue: it cannot be redeemed at Raptor any more."""
    return _set_once(CODE_USE, code_id)


@bp.post("/grants")
def create_grant() -> tuple[Response, int]:
    """A grant made at Queue: 201 with Raptor's id; the same grant again (customer, role, scope,
    tenant, ticket and ``granted_at``) is 200 with the existing id."""
    b = body(
        ("customer_id", "role_id", "scope_type", "granted_at"),
        ("tenant_id", "ticket_id", "granted_by", "expires_at", "reason"),
    )
    customer_id = _need(b, "customer_id", _id)
    role_id = _need(b, "role_id", _id)
    scope_type = _need(b, "scope_type", _one_of(SCOPE_TYPES))
    tenant_id = _maybe(b, "tenant_id", _uuid)
    ticket_id = _maybe(b, "ticket_id", _text(TICKET_ID_MAX))
    granted_by = _maybe(b, "granted_by", _id)
    granted_at = _need(b, "granted_at", _time)
    expires_at = _maybe(b, "expires_at", _time)
    reason = _maybe(b, "reason", _text(REASON_MAX))
    fields = _queue_fields(b)
    if scope_type == "global" and (tenant_id is not None or ticket_id is not None):
        raise Refused(
            422, "a global grant has no tenant_id or ticket_id", field="tenant_id" if tenant_id else "ticket_id"
        )
    if scope_type != "global" and tenant_id is None:
        raise Refused(422, f"a {scope_type} grant needs tenant_id", field="tenant_id")
    if scope_type == "tenant" and ticket_id is not None:
        raise Refused(422, "a tenant grant has no ticket_id", field="ticket_id")
    if scope_type == "ticket" and ticket_id is None:
        raise Refused(422, "a ticket grant needs ticket_id", field="ticket_id")

    def work(conn: Connection) -> tuple[int, int]:
        # Locked: two copies of one call serialize, the second finds the first's row.
        tenant = _customer(conn, "customer_id", customer_id, lock=True)
        if tenant_id is not None and tenant != tenant_id:
            raise Refused(422, f"customer {customer_id} is not in tenant {tenant_id}", field="tenant_id")
        role = conn.execute(text("SELECT tenant_id FROM rbac_roles WHERE id = :r"), {"r": role_id}).first()
        if role is None:
            raise Refused(422, f"no role {role_id}", field="role_id")
        if role.tenant_id is not None and role.tenant_id != tenant_id:
            raise Refused(422, f"role {role_id} is tenant {role.tenant_id}'s own role", field="role_id")
        if granted_by is not None:
            _customer(conn, "granted_by", granted_by)
        existing = conn.execute(
            text(
                "SELECT id FROM rbac_grants WHERE customer_id = :c AND role_id = :r AND scope_type = :s"
                " AND tenant_id IS NOT DISTINCT FROM CAST(:t AS uuid)"
                " AND ticket_id IS NOT DISTINCT FROM CAST(:k AS text)"
                " AND granted_at = :at ORDER BY id LIMIT 1"
            ),
            {"c": customer_id, "r": role_id, "s": scope_type, "t": tenant_id, "k": ticket_id, "at": granted_at},
        ).scalar()
        if existing is not None:
            return int(existing), 200
        grant_id = int(
            conn.execute(
                text(
                    "INSERT INTO rbac_grants (customer_id, role_id, scope_type, tenant_id, ticket_id, granted_by,"
                    " granted_at, expires_at, reason) VALUES (:c, :r, :s, :t, :k, :by, :at, :e, :why) RETURNING id"
                ),
                {
                    "c": customer_id,
                    "r": role_id,
                    "s": scope_type,
                    "t": tenant_id,
                    "k": ticket_id,
                    "by": granted_by,
                    "at": granted_at,
                    "e": expires_at,
                    "why": reason,
                },
            ).scalar_one()
        )
        audit.record(
            "rbac.grant.created",
            actor=None,
            system=SYSTEM_ACTOR,
            conn=conn,
            tenant=tenant_id or tenant,
            target=("customer", customer_id),
            grant_id=grant_id,
            grant={
                "id": grant_id,
                "customer_id": customer_id,
                "role_id": role_id,
                "scope_type": scope_type,
                "tenant_id": str(tenant_id) if tenant_id else None,
                "ticket_id": ticket_id,
                "granted_by": granted_by,
                "granted_at": rfc3339(granted_at),
                "expires_at": rfc3339(expires_at),
                "reason": reason,
            },
            **fields,
        )
        return grant_id, 201

    grant_id, status = _transaction(work)
    return jsonify(id=grant_id), status


@bp.post("/grants/<int:grant_id>/revoke")
def revoke_grant(grant_id: int) -> Response:
    """A grant revoked at Queue: 200; revoked already: 200, the first revocation kept."""
    return _set_once(GRANT_REVOKE, grant_id)
