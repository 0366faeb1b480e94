"""Fresh service tokens for the API tools, minted by `queuectl token mint` (no crypto here).

Service tokens are one-use on state-changing routes, so a caller mints one per request.

Environment (set by crates/queuectl/tests/cli/api_conformance.rs, or by hand against `make run`):
  QUEUE_API_QUEUECTL  the queuectl binary          QUEUE_API_KEY       the issuer's private key (PEM)
  QUEUE_API_ISSUER    the calling identity         QUEUE_API_AUDIENCE  the service called
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence


def mint(scopes: Sequence[str]) -> str:
    """A token from QUEUE_API_ISSUER for QUEUE_API_AUDIENCE with `scopes`; raises if queuectl refuses."""
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
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"queuectl token mint failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()
