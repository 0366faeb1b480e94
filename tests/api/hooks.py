"""Schemathesis hooks: each request carries the credential its operation declares.

Service tokens are one-use on state-changing routes, so every request gets a fresh one (tokens.py)
with exactly the scopes the operation's `service_token` requirement lists, no more. (A 403 is a
valid answer to schemathesis, so scopes named too few show as 403s in its report rather than as
failures; use_generated_client.py fails on them for the operations it calls.)

Operations that take only a user session get one of the sessions in `QUEUE_API_SESSION` (several,
separated by spaces, are handed out one per request, the last one kept once they run out, so a
logout in the run does not sign out the rest of it) as a bearer. The rest of the environment is
tokens.py's.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from requests.structures import CaseInsensitiveDict
from schemathesis import Case
from schemathesis.auths import AuthContext
from tokens import mint

SERVICE_TOKEN = "service_token"
SESSION_SCHEMES = ("session_cookie", "session_bearer")


def security_of(case: Case[Any]) -> list[dict[str, list[str]]]:
    """The operation's security requirements, or the document's when it has none of its own."""
    raw: dict[str, Any] = case.operation.definition.raw
    if "security" in raw:
        return list(raw["security"])
    return list(case.operation.schema.raw_schema.get("security", []))


@schemathesis.auth(refresh_interval=None)
class Credential:
    """A fresh service token per request (they are one-use), else a test session, else nothing."""

    def __init__(self) -> None:
        # Handed out from the end: the first listed goes first.
        self.sessions = list(reversed(os.environ.get("QUEUE_API_SESSION", "").split()))

    def next_session(self) -> str | None:
        """The next session, keeping the last one once they run out."""
        if len(self.sessions) > 1:
            return self.sessions.pop()
        return self.sessions[0] if self.sessions else None

    def get(self, case: Case[Any], ctx: AuthContext) -> str | None:
        requirements = security_of(case)
        for requirement in requirements:
            if SERVICE_TOKEN in requirement:
                return mint(requirement[SERVICE_TOKEN])
        if any(scheme in r for r in requirements for scheme in SESSION_SCHEMES):
            return self.next_session()
        return None

    def set(self, case: Case[Any], data: str, ctx: AuthContext) -> None:
        headers = case.headers if case.headers is not None else CaseInsensitiveDict()
        headers["Authorization"] = f"Bearer {data}"
        case.headers = headers
