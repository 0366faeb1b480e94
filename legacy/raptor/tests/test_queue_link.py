"""Raptor's link to Queue without a Queue: its JWKS, key rotation through the key file (published
first, signing after the lead, retired after its tokens expired), the settings, and what the
Queue-backed pages say when Raptor is not linked. Raptor *with* Queue (events arriving in audit,
checks, a rotation under load) is shown in crates/queue-e2e/tests/e2e/raptor.rs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from queue_client import key_id, load_private_key_file, load_public_key
from raptor import Config, create_app
from raptor.config import ConfigError
from raptor.queue_link import RETIRE_AFTER_SECS, KeyFile, rotate_key_file
from sqlalchemy import Engine

from .conftest import RAPTOR_PYTHONPATH, TIMEOUT, Client, serve


def kids(base: str) -> list[str]:
    r = requests.get(f"{base}/.well-known/jwks.json", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert all(k["kty"] == "OKP" and k["crv"] == "Ed25519" and k["alg"] == "EdDSA" for k in r.json()["keys"])
    return [k["kid"] for k in r.json()["keys"]]


def signing_kid(base: str) -> str:
    return str(requests.get(f"{base}/healthz", timeout=TIMEOUT).json()["signing_kid"])


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.05)


def test_a_rotation_is_published_before_it_signs(config: Config, engine: Engine, tmp_path: Path) -> None:
    key = tmp_path / "raptor.pem"
    old = rotate_key_file(key)  # the first key
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    linked = replace(config, signing_key=key, key_publish_lead_secs=1.5, key_check_secs=0.1)
    with serve(create_app(linked, engine)) as base:
        assert kids(base) == [old] and signing_kid(base) == old
        env = {**os.environ, "PYTHONPATH": RAPTOR_PYTHONPATH, "RAPTOR_SIGNING_KEY": str(key)}
        env.pop("RAPTOR_DATABASE_URL", None)  # rotate-key needs the key file only
        done = subprocess.run(
            [sys.executable, "-m", "raptor", "rotate-key"], env=env, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        new = done.stdout.strip()
        assert (
            new
            == key_id(load_private_key_file(key))
            == key_id(load_public_key(key.with_name("raptor.pub.pem").read_bytes()))
        )
        # Published at once, beside the old one, which still signs for the lead ...
        wait_for("the new key published", lambda: set(kids(base)) == {old, new})
        assert signing_kid(base) == old
        # ... then the new key signs, and the old one stays published (its tokens are still valid).
        wait_for("the new key signing", lambda: signing_kid(base) == new)
        assert kids(base) == [new, old]


def test_the_old_key_is_retired_and_a_bad_file_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    key = tmp_path / "raptor.pem"
    old = rotate_key_file(key)
    keys = KeyFile(key, publish_lead=30, clock=lambda: now[0])
    new = rotate_key_file(key)
    keys.check()
    assert (keys.signing_kid, keys.ring.state().staged_kid) == (old, new)
    now[0] += 30
    keys.check()
    assert keys.signing_kid == new and keys.ring.state().published_kids == (new, old)
    now[0] += RETIRE_AFTER_SECS - 1
    keys.check()
    assert keys.ring.state().published_kids == (new, old)
    now[0] += 1
    keys.check()
    assert keys.ring.state().published_kids == (new,)
    caplog.set_level(logging.ERROR, logger="raptor.queue")
    key.write_text("not a key")
    keys.check()
    assert keys.signing_kid == new and "cannot be used" in caplog.text
    assert "not a key" not in caplog.text


def test_the_settings(config: Config) -> None:
    base = {"RAPTOR_DATABASE_URL": config.database_url, "RAPTOR_MAIL_DIR": "/tmp"}
    with pytest.raises(ConfigError, match="RAPTOR_SIGNING_KEY is not set"):
        Config.from_env({**base, "RAPTOR_QUEUE_AUDIT_URL": "http://127.0.0.1:8083"})
    with pytest.raises(ConfigError, match="RAPTOR_QUEUE_RBAC_URL must be an http"):
        Config.from_env({**base, "RAPTOR_SIGNING_KEY": "k.pem", "RAPTOR_QUEUE_RBAC_URL": "127.0.0.1:8082"})
    with pytest.raises(ConfigError, match="RAPTOR_KEY_PUBLISH_LEAD_SECS must be a number"):
        Config.from_env({**base, "RAPTOR_KEY_PUBLISH_LEAD_SECS": "soon"})
    with pytest.raises(ConfigError, match="RAPTOR_KEY_CHECK_SECS must be between"):
        Config.from_env({**base, "RAPTOR_KEY_CHECK_SECS": "0"})
    ok = Config.from_env({**base, "RAPTOR_SIGNING_KEY": "k.pem", "RAPTOR_QUEUE_AUDIT_URL": "http://127.0.0.1:8083/"})
    assert ok.signing_key == Path("k.pem") and ok.queue_audit_url == "http://127.0.0.1:8083"
    assert ok.key_publish_lead_secs == 300 and ok.queue_rbac_url is None


def test_rotate_key_needs_the_key_setting() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAPTOR_")}
    env["PYTHONPATH"] = RAPTOR_PYTHONPATH
    done = subprocess.run(
        [sys.executable, "-m", "raptor", "rotate-key"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "RAPTOR_SIGNING_KEY is not set" in done.stderr


def test_without_queue_the_pages_say_so(base_url: str) -> None:
    r = requests.get(f"{base_url}/.well-known/jwks.json", timeout=TIMEOUT)
    assert r.status_code == 404 and "RAPTOR_SIGNING_KEY" in r.json()["error"]
    health = requests.get(f"{base_url}/healthz", timeout=TIMEOUT).json()
    assert health["signing_kid"] is None and health["outbox_pending"] >= 0
    client = Client(base_url)
    client.signin("agent@acme.test", "raptor-agent-demo")
    page = client.get("/access")
    assert page.status_code == 503 and "not linked to Queue" in page.text and 'class="raptor">allowed' in page.text
    check = client.get("/api/queue/check", params={"permission": "ticket.read"})
    assert check.status_code == 502 and "not linked to Queue" in check.json()["error"]
    assert client.get("/api/queue/check").status_code == 400
    assert Client(base_url).get("/api/queue/check", params={"permission": "ticket.read"}).status_code == 401
