"""``Queue``: one object holding a client per service, each call with a fresh service token.

Paths, bodies, scopes and statuses follow ``docs/api/<svc>.openapi.json``. Which calls are
retried (see :class:`queue_client.RetryPolicy`):

- after any failure (reads, and writes that are idempotent):
  ``sessions.validate`` (auth ``POST /internal/v1/sessions/validate``, ``sessions:validate``),
  ``users.provision`` (auth ``POST /internal/v1/users``, ``users:write``; idempotent by tenant and
  email), ``rbac.check`` / ``check_batch`` (``POST /api/v1/rbac/check[/batch]``, ``rbac:check``),
  ``rbac.grants`` (``GET /api/v1/rbac/grants``, ``rbac:read``), ``audit.append`` /
  ``append_batch`` (``POST /api/v1/audit/events[/batch]``, ``audit:write``; idempotent by event
  id), ``audit.events`` (``GET /api/v1/audit/events``, ``audit:read``), ``*.caller``
  (``GET /internal/v1/caller``);
- only when the service cannot have applied them (no connection made, or 503 / 429, which the
  contract defines as "nothing changed"): ``rbac.grant`` (``POST /api/v1/rbac/grants``) and
  ``rbac.revoke`` (``DELETE /api/v1/rbac/grants/{id}``), scope ``rbac:grant``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import httpx

from queue_client._http import Repeat, RetryPolicy, ServiceClient
from queue_client.models import (
    Appended,
    AuditEvent,
    Caller,
    Check,
    Decision,
    EventPage,
    Grant,
    GrantChange,
    SessionInfo,
    User,
)
from queue_client.tokens import Signer


class _Base:
    def __init__(self, service: ServiceClient) -> None:
        self._s = service

    @property
    def url(self) -> str:
        return self._s.base_url

    def caller(self) -> Caller:
        """What the service makes of our token (``GET /internal/v1/caller``): a way to test trust end to end."""
        body = self._s.call(f"{self._s.name}.caller", "GET", "/internal/v1/caller", scopes=(), repeat=Repeat.ALWAYS)
        return Caller(
            issuer=body["issuer"],
            audience=body["audience"],
            scopes=tuple(body["scopes"]),
            expires_at=int(body["expires_at"]),
        )


class Sessions(_Base):
    """auth: is a user's session token valid?"""

    def validate(self, token: str) -> SessionInfo:
        """auth's answer for a session token (cookie ``queue_session`` or a bearer).

        Only full sessions are valid (enrollment and recovery sessions are not). Read-only:
        retried after any failure.
        """
        body = self._s.call(
            "sessions.validate",
            "POST",
            "/internal/v1/sessions/validate",
            scopes=("sessions:validate",),
            repeat=Repeat.ALWAYS,
            json={"token": token},
        )
        return SessionInfo.from_json(body)


class Users(_Base):
    """auth: provisioning users from the legacy app."""

    def provision(
        self,
        email: str,
        *,
        tenant_id: str | None = None,
        display_name: str | None = None,
        email_verified: bool = False,
    ) -> User:
        """Creates the user (``created=True``) or returns the one of that (tenant, email) (``created=False``).

        Idempotent by (tenant, email), so retried after any failure with a fresh token.
        """
        body: dict[str, Any] = {"email": email, "email_verified": email_verified}
        if tenant_id is not None:
            body["tenant_id"] = tenant_id
        if display_name is not None:
            body["display_name"] = display_name
        status_body = self._s.call(
            "users.provision",
            "POST",
            "/internal/v1/users",
            scopes=("users:write",),
            repeat=Repeat.ALWAYS,
            json=body,
            want_status=True,
        )
        status, answer = status_body
        return User.from_json(answer, created=status == 201)


class Rbac(_Base):
    """rbac: checks, grants and revokes."""

    def check(self, principal_id: str, permission: str, *, tenant_id: str, ticket_id: str | None = None) -> Decision:
        """May the principal do this on the tenant (or the ticket)? A read: retried after any failure."""
        body = self._s.call(
            "rbac.check",
            "POST",
            "/api/v1/rbac/check",
            scopes=("rbac:check",),
            repeat=Repeat.ALWAYS,
            json=Check(principal_id, permission, tenant_id, ticket_id).to_json(),
        )
        return Decision(bool(body["allowed"]), tuple(body["grant_ids"]), int(body["revision"]))

    def check_batch(self, checks: Sequence[Check]) -> list[Decision]:
        """Many checks (1 to 1000) answered at one revision, in order. A read: retried after any failure."""
        body = self._s.call(
            "rbac.check_batch",
            "POST",
            "/api/v1/rbac/check/batch",
            scopes=("rbac:check",),
            repeat=Repeat.ALWAYS,
            json={"checks": [c.to_json() for c in checks]},
        )
        revision = int(body["revision"])
        return [Decision(bool(d["allowed"]), tuple(d["grant_ids"]), revision) for d in body["results"]]

    def grant(
        self,
        principal_id: str,
        role: str,
        scope: dict[str, str],
        *,
        reason: str,
        expires_at: str | None = None,
    ) -> GrantChange:
        """Grants ``role`` at ``scope`` (:class:`queue_client.Scope`); rbac audits it before applying it.

        Not idempotent (a second call makes a second grant), so retried only when rbac cannot have
        applied it: no connection was made, or it answered 503/429 ("nothing changed"). After a
        timeout, :class:`queue_client.Unavailable` with ``maybe_applied=True``: look with
        :meth:`grants` before granting again.
        """
        body: dict[str, Any] = {"principal_id": principal_id, "role": role, "scope": scope, "reason": reason}
        if expires_at is not None:
            body["expires_at"] = expires_at
        answer = self._s.call(
            "rbac.grant",
            "POST",
            "/api/v1/rbac/grants",
            scopes=("rbac:grant",),
            repeat=Repeat.IF_NOT_APPLIED,
            json=body,
        )
        return GrantChange(Grant.from_json(answer["grant"]), answer["audit_event_id"], int(answer["revision"]))

    def revoke(self, grant_id: str, *, reason: str) -> GrantChange:
        """Revokes a grant (audited first). Retried like :meth:`grant`; a second revoke is :class:`Conflict`."""
        answer = self._s.call(
            "rbac.revoke",
            "DELETE",
            f"/api/v1/rbac/grants/{grant_id}",
            scopes=("rbac:grant",),
            repeat=Repeat.IF_NOT_APPLIED,
            json={"reason": reason},
        )
        return GrantChange(Grant.from_json(answer["grant"]), answer["audit_event_id"], int(answer["revision"]))

    def grants(
        self,
        *,
        principal_id: str | None = None,
        tenant_id: str | None = None,
        ticket_id: str | None = None,
        include_inactive: bool = False,
    ) -> list[Grant]:
        """Grants in force (or all, with ``include_inactive``), oldest first. A read."""
        params: dict[str, str | int | bool] = {}
        if principal_id is not None:
            params["principal_id"] = principal_id
        if tenant_id is not None:
            params["tenant_id"] = tenant_id
        if ticket_id is not None:
            params["ticket_id"] = ticket_id
        if include_inactive:
            params["include_inactive"] = "true"
        body = self._s.call(
            "rbac.grants", "GET", "/api/v1/rbac/grants", scopes=("rbac:read",), repeat=Repeat.ALWAYS, params=params
        )
        return [Grant.from_json(g) for g in body["grants"]]


EventLike = AuditEvent | dict[str, Any]


def _event_body(event: EventLike) -> dict[str, Any]:
    return event.to_json() if isinstance(event, AuditEvent) else event


class Audit(_Base):
    """audit: appending events (idempotent by event id) and reading them back."""

    def append(self, event: EventLike) -> Appended:
        """Appends one event. Idempotent by ``event.id``: retried after any failure."""
        body = self._s.call(
            "audit.append",
            "POST",
            "/api/v1/audit/events",
            scopes=("audit:write",),
            repeat=Repeat.ALWAYS,
            json=_event_body(event),
        )
        return Appended.from_json(body)

    def append_batch(self, events: Iterable[EventLike], *, retry: RetryPolicy | None = None) -> list[Appended]:
        """Appends 1 to 500 events atomically (all or none), in order. Idempotent by event id: retried."""
        payload = [_event_body(e) for e in events]
        if not payload:
            return []
        body = self._s.call(
            "audit.append_batch",
            "POST",
            "/api/v1/audit/events/batch",
            scopes=("audit:write",),
            repeat=Repeat.ALWAYS,
            json={"events": payload},
            retry=retry,
        )
        return [Appended.from_json(r) for r in body["results"]]

    def events(
        self, tenant_id: str, *, after_seq: int | None = None, limit: int = 100, action: str | None = None
    ) -> EventPage:
        """A page of the tenant's events, oldest first (needs an issuer in audit's ``limits.readers``)."""
        params: dict[str, str | int | bool] = {"tenant_id": tenant_id, "limit": limit}
        if after_seq is not None:
            params["after_seq"] = after_seq
        if action is not None:
            params["action"] = action
        body = self._s.call(
            "audit.events", "GET", "/api/v1/audit/events", scopes=("audit:read",), repeat=Repeat.ALWAYS, params=params
        )
        return EventPage(list(body["events"]), body.get("next_after_seq"))


class Queue:
    """Queue's services for one calling app.

    ``Queue(signer, auth_url=…, rbac_url=…, audit_url=…)``; a service whose URL is not given is
    not available (using it raises ``RuntimeError``). One ``httpx.Client`` (connection pool) is
    shared; close it with :meth:`close` or use ``with Queue(...) as q:``. ``timeout`` is per
    request (seconds); ``retry`` the policy for every call (:class:`RetryPolicy`).
    """

    def __init__(
        self,
        signer: Signer,
        *,
        auth_url: str | None = None,
        rbac_url: str | None = None,
        audit_url: str | None = None,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.signer = signer
        self.retry = retry or RetryPolicy()
        self._owns_http = http is None
        self.http = http or httpx.Client(timeout=timeout)
        self._auth = self._service("auth", auth_url)
        self._rbac = self._service("rbac", rbac_url)
        self._audit = self._service("audit", audit_url)

    def _service(self, name: str, url: str | None) -> ServiceClient | None:
        return ServiceClient(name, url, self.signer, self.http, self.retry) if url else None

    def _need(self, name: str, service: ServiceClient | None) -> ServiceClient:
        if service is None:
            raise RuntimeError(f"no URL for Queue's {name} service (pass {name}_url)")
        return service

    @property
    def sessions(self) -> Sessions:
        return Sessions(self._need("auth", self._auth))

    @property
    def users(self) -> Users:
        return Users(self._need("auth", self._auth))

    @property
    def rbac(self) -> Rbac:
        return Rbac(self._need("rbac", self._rbac))

    @property
    def audit(self) -> Audit:
        return Audit(self._need("audit", self._audit))

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        urls = {n: s.base_url for n, s in (("auth", self._auth), ("rbac", self._rbac), ("audit", self._audit)) if s}
        return f"Queue(issuer={self.signer.issuer!r}, {urls})"
