"""Schemathesis hooks: each request carries the credential its operation declares.

Service tokens are one-use on state-changing routes, so every request gets a fresh one, minted by
`queuectl token mint` with exactly the scopes the operation's `service_token` requirement lists:
a document that names too few scopes fails the run. Operations that take only a user session get
the session in `QUEUE_API_SESSION` (when set) as a bearer.

Environment (set by crates/queuectl/tests/cli/api_conformance.rs, or by hand against `make run`):
  QUEUE_API_QUEUECTL  the queuectl binary          QUEUE_API_KEY       the issuer's private key (PEM)
  QUEUE_API_ISSUER    the calling identity         QUEUE_API_AUDIENCE  the service under test
  QUEUE_API_SESSION   optional session token for session-only operations; several, separated
                      by spaces, are handed out one per request (the last one is kept once
                      they run out), so a logout in the run does not sign out the rest of it
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import schemathesis
from schemathesis import Case
from schemathesis.auths import AuthContext

SERVICE_TOKEN = "service_token"
SESSION_SCHEMES = ("session_cookie", "session_bearer")


def security_of(case: Case) -> list[dict[str, list[str]]]:
    """The operation's security requirements, or the document's when it has none of its own."""
    raw: dict[str, Any] = case.operation.definition.raw
    if "security" in raw:
        return list(raw["security"])
    return list(case.operation.schema.raw_schema.get("security", []))


def mint(scopes: list[str]) -> str:
    command = [
        os.environ["QUEUE_API_QUEUECTL"],
        "token",
        "mint",
        "--iss",
        os.environ["QUEUE_API_ISSUER"],
        "--aud",
        os.environ["QUEUE_API_AUDIENCE"],
        "--key",
        os.environ["QUEUE_API_KEY"],
    ]
    for scope in scopes:
        command += ["--scope", scope]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return done.stdout.strip()


_sessions: list[str] = []


def next_session() -> str | None:
    """The next of the sessions in `QUEUE_API_SESSION`, keeping the last one once they run out."""
    if not _sessions:
        _sessions.extend(reversed(os.environ.get("QUEUE_API_SESSION", "").split()))
    if len(_sessions) > 1:
        return _sessions.pop()
    return _sessions[0] if _sessions else None


@schemathesis.auth(refresh_interval=None)
class Credential:
    """A fresh service token per request (they are one-use), else the test session, else nothing."""

    def get(self, case: Case, ctx: AuthContext) -> str | None:
        for requirement in security_of(case):
            if SERVICE_TOKEN in requirement:
                return mint(requirement[SERVICE_TOKEN])
        if any(scheme in r for r in security_of(case) for scheme in SESSION_SCHEMES):
            return next_session()
        return None

    def set(self, case: Case, data: str, ctx: AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
