"""Exceptions that say what failed: which service, which operation, the status and Queue's error body.

Every error of a Queue service has the body ``{"error": {"code", "message", "field?"}}``
(docs/error-policy.md); the exception carries those members. Network failures (connection
refused, timeouts) are :class:`Unavailable` with ``status = None``.
"""

from __future__ import annotations


class QueueError(Exception):
    """A call to a Queue service failed.

    Attributes: ``service`` (``auth``, ``rbac``, ``audit``), ``operation`` (e.g. ``rbac.grant``),
    ``status`` (HTTP status, ``None`` when no answer came), ``code`` and ``message`` (the API's
    ``error.code`` / ``error.message``), ``field`` (the offending field, for 422s).
    """

    def __init__(
        self,
        message: str,
        *,
        service: str,
        operation: str,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
    ) -> None:
        self.service = service
        self.operation = operation
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"{self.operation} ({self.service})"
        what = f"{self.status} {self.code}" if self.status is not None else "no answer"
        if self.code is None and self.status is not None:
            what = str(self.status)
        text = f"{where}: {what}: {self.message}"
        if self.field:
            text += f" [field: {self.field}]"
        return text


class Unauthorized(QueueError):
    """401: the service token (or session) did not verify: unknown key, expired, spent, wrong audience."""


class Forbidden(QueueError):
    """403: verified, but this issuer, scope or principal may not do this."""


class NotFound(QueueError):
    """404: no such resource (a grant, a role)."""


class Conflict(QueueError):
    """409: conflicts with current state (already revoked; the same event id with other content)."""


class Invalid(QueueError):
    """400, 413 or 422: the request is not one the operation takes; ``field`` names the offending part."""


class RateLimited(QueueError):
    """429: the caller's rate limit is spent; ``retry_after`` is the server's ``Retry-After`` in seconds."""

    def __init__(
        self,
        message: str,
        *,
        service: str,
        operation: str,
        status: int | None = 429,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, service=service, operation=operation, status=status, code=code)


class Unavailable(QueueError):
    """503, another 5xx, or no answer at all (connection refused, timeout).

    ``retry_after`` is the server's ``Retry-After`` when it sent one. ``maybe_applied`` is true
    when the request may have reached the service before the failure (a read timeout on a
    write): a non-idempotent write (grant, revoke) should then be checked before it is repeated.
    """

    def __init__(
        self,
        message: str,
        *,
        service: str,
        operation: str,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        maybe_applied: bool = False,
    ) -> None:
        self.retry_after = retry_after
        self.maybe_applied = maybe_applied
        super().__init__(message, service=service, operation=operation, status=status, code=code)


_BY_STATUS: dict[int, type[QueueError]] = {
    400: Invalid,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: Invalid,
    422: Invalid,
}


def error_for_status(
    status: int,
    *,
    service: str,
    operation: str,
    code: str | None,
    message: str,
    field: str | None,
    retry_after: float | None,
) -> QueueError:
    """The exception for an error answer."""
    if status == 429:
        return RateLimited(
            message, retry_after=retry_after, service=service, operation=operation, status=status, code=code
        )
    if status >= 500:
        return Unavailable(
            message, retry_after=retry_after, service=service, operation=operation, status=status, code=code
        )
    cls = _BY_STATUS.get(status, QueueError)
    return cls(message, service=service, operation=operation, status=status, code=code, field=field)
