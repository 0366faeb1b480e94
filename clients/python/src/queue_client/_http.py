"""One Queue service over httpx: a fresh token per attempt, errors as exceptions, bounded retries."""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from queue_client.errors import QueueError, RateLimited, Unavailable, error_for_status
from queue_client.tokens import Signer

log = logging.getLogger("queue_client")

#: Network failures where the request never reached the service: always safe to repeat.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class Repeat(enum.Enum):
    """When an operation may be sent again after a failure.

    ``ALWAYS``: reads, checks and idempotent writes (audit appends by event id, user provisioning
    by (tenant, email)): after any network failure, a 503 or a 429.
    ``IF_NOT_APPLIED``: writes that are not idempotent (grant, revoke): only when the service
    cannot have applied it: the connection was never made, or it answered 503 / 429, which the
    contract defines as "nothing changed". A timeout after sending raises
    :class:`queue_client.Unavailable` with ``maybe_applied=True`` instead.
    """

    ALWAYS = "always"
    IF_NOT_APPLIED = "if_not_applied"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded, jittered exponential backoff.

    At most ``attempts`` tries within ``total`` seconds. The n-th wait is uniform in
    ``[0, min(max_delay, base_delay * 2**n)]`` (full jitter), but never shorter than the
    server's ``Retry-After``; a wait that would end past ``total`` is not started: the last error
    is raised instead.
    """

    attempts: int = 4
    total: float = 10.0
    base_delay: float = 0.1
    max_delay: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    jitter: Callable[[float, float], float] = field(default=random.uniform, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.total < 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    @classmethod
    def never(cls) -> RetryPolicy:
        """One attempt only."""
        return cls(attempts=1)

    def delay(self, retry_number: int, retry_after: float | None) -> float:
        """The wait before retry ``retry_number`` (0-based)."""
        ceiling = min(self.max_delay, self.base_delay * (2**retry_number))
        wait = self.jitter(0.0, ceiling)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: Queue never sends one


def _error_from(response: httpx.Response, service: str, operation: str) -> QueueError:
    code: str | None = None
    message = response.reason_phrase or "error"
    field_name: str | None = None
    try:
        body = response.json()
        detail = body.get("error") if isinstance(body, dict) else None
        if isinstance(detail, dict):
            if isinstance(detail.get("code"), str):
                code = detail["code"]
            if isinstance(detail.get("message"), str):
                message = detail["message"]
            if isinstance(detail.get("field"), str):
                field_name = detail["field"]
    except ValueError:
        pass
    return error_for_status(
        response.status_code,
        service=service,
        operation=operation,
        code=code,
        message=message,
        field=field_name,
        retry_after=_retry_after(response),
    )


class ServiceClient:
    """Calls one service (``name`` is its audience) at ``base_url``."""

    def __init__(self, name: str, base_url: str, signer: Signer, http: httpx.Client, retry: RetryPolicy) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.signer = signer
        self.http = http
        self.retry = retry

    def call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        scopes: Sequence[str],
        repeat: Repeat,
        json: Any = None,
        params: Mapping[str, str | int | bool] | None = None,
        retry: RetryPolicy | None = None,
        want_status: bool = False,
    ) -> Any:
        """Sends the request (a fresh token each attempt) and returns the decoded JSON body of a 2xx.

        With ``want_status``, returns ``(status, body)``.
        """
        policy = retry or self.retry
        deadline = policy.clock() + policy.total
        url = self.base_url + path
        attempt = 0
        while True:
            token = self.signer.mint(self.name, scopes)
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            error: QueueError
            try:
                response = self.http.request(method, url, json=json, params=params, headers=headers)
            except _NOT_SENT as e:
                error = Unavailable(
                    f"cannot reach {self.base_url}: {type(e).__name__}", service=self.name, operation=operation
                )
            except httpx.TransportError as e:
                error = Unavailable(
                    f"no answer from {self.base_url}: {type(e).__name__}",
                    service=self.name,
                    operation=operation,
                    maybe_applied=True,
                )
                if repeat is not Repeat.ALWAYS:
                    raise error from None
            else:
                if response.is_success:
                    try:
                        body = response.json() if response.content else None
                    except ValueError:
                        raise QueueError(
                            f"answered {response.status_code} with a body that is not JSON",
                            service=self.name,
                            operation=operation,
                            status=response.status_code,
                        ) from None
                    return (response.status_code, body) if want_status else body
                error = _error_from(response, self.name, operation)
                if not isinstance(error, (RateLimited, Unavailable)) or (
                    isinstance(error, Unavailable) and error.status not in (None, 503)
                ):
                    raise error
            attempt += 1
            if attempt >= policy.attempts:
                raise error
            wait = policy.delay(attempt - 1, getattr(error, "retry_after", None))
            if policy.clock() + wait > deadline:
                raise error
            log.info("%s: %s; retry %d in %.2fs", operation, error.message, attempt, wait)
            policy.sleep(wait)
