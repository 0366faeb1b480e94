"""Raptor's configuration: read from the environment (prefix ``RAPTOR_``, flags ``FLAG_``) by
:func:`Config.from_env`, or built directly in code and tests."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_SCHEMA_FILE = Path(__file__).resolve().parent.parent / "raptor-schema.sql"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})
#: Queue's services Raptor knows a URL for (RAPTOR_QUEUE_<NAME>_URL).
QUEUE_SERVICES = ("auth", "rbac", "audit")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be one of 1/true/yes/on or 0/false/no/off, not {raw!r}")


@dataclass(frozen=True)
class Config:
    database_url: str
    mail_dir: Path
    rp_id: str = "localhost"
    rp_name: str = "Raptor"
    origin: str = "http://localhost:8080"
    secret_key: str | None = None
    flag_backup_codes: bool = False
    flag_email_verification: bool = False
    schema_file: Path = field(default=DEFAULT_SCHEMA_FILE)
    # Queue (issue 18): Raptor signs service tokens as issuer `raptor` with this key, publishes it
    # at /.well-known/jwks.json, and calls the services whose URLs are set.
    signing_key: Path | None = None
    queue_audit_url: str | None = None
    queue_rbac_url: str | None = None
    queue_auth_url: str | None = None
    key_publish_lead_secs: float = 300.0
    key_check_secs: float = 2.0
    # How many proxies in front of Raptor set X-Forwarded-For (werkzeug's ProxyFix); 0: none, the
    # socket's address is the client's. Behind Queue's proxy (make run): 1.
    proxy_hops: int = 0
    # Issue 19: the Queue services whose tokens may call the write-back API (/internal/queue/v1/,
    # raptor/writeback.py), e.g. ("auth", "rbac"); each one's keys are at its URL above plus
    # /.well-known/jwks.json. Empty: the API answers 404.
    writeback_issuers: tuple[str, ...] = ()

    def queue_url(self, service: str) -> str | None:
        """The base URL of Queue's ``service`` (audit, rbac, auth), if set."""
        urls = {"audit": self.queue_audit_url, "rbac": self.queue_rbac_url, "auth": self.queue_auth_url}
        return urls.get(service)

    def writeback_jwks(self) -> dict[str, str]:
        """The JWKS URL of each Queue service Raptor has a URL for: whose tokens it can verify."""
        out: dict[str, str] = {}
        for service in QUEUE_SERVICES:
            url = self.queue_url(service)
            if url:
                out[service] = f"{url}/.well-known/jwks.json"
        return out

    @property
    def secure_cookies(self) -> bool:
        """The session cookie is ``Secure`` when Raptor's public origin is https."""
        return urlsplit(self.origin).scheme == "https"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        url = env.get("RAPTOR_DATABASE_URL", "").strip()
        if not url:
            raise ConfigError("RAPTOR_DATABASE_URL is not set (e.g. postgresql://queue@127.0.0.1:5432/raptor)")
        mail_dir = env.get("RAPTOR_MAIL_DIR", "").strip()
        if not mail_dir:
            raise ConfigError("RAPTOR_MAIL_DIR is not set (the directory Raptor writes its outgoing mail into)")
        origin = env.get("RAPTOR_ORIGIN", "http://localhost:8080").strip().rstrip("/")
        if urlsplit(origin).scheme not in ("http", "https") or not urlsplit(origin).netloc:
            raise ConfigError(f"RAPTOR_ORIGIN must be an http(s) origin like http://localhost:8080, not {origin!r}")
        schema = env.get("RAPTOR_SCHEMA_FILE", "").strip()
        key = env.get("RAPTOR_SIGNING_KEY", "").strip()
        urls = {name: _url(env, f"RAPTOR_QUEUE_{name.upper()}_URL") for name in QUEUE_SERVICES}
        if not key and any(urls.values()):
            raise ConfigError(
                "RAPTOR_SIGNING_KEY is not set: calling Queue needs Raptor's Ed25519 key (var/keys/raptor.pem)"
            )
        return cls(
            database_url=normalize_database_url(url),
            mail_dir=Path(mail_dir),
            rp_id=env.get("RAPTOR_RP_ID", "localhost").strip() or "localhost",
            origin=origin,
            secret_key=env.get("RAPTOR_SECRET_KEY") or None,
            flag_backup_codes=_flag(env, "FLAG_AUTH_BACKUP_CODES"),
            flag_email_verification=_flag(env, "FLAG_EMAIL_VERIFICATION"),
            schema_file=Path(schema) if schema else DEFAULT_SCHEMA_FILE,
            signing_key=Path(key) if key else None,
            queue_audit_url=urls["audit"],
            queue_rbac_url=urls["rbac"],
            queue_auth_url=urls["auth"],
            key_publish_lead_secs=_seconds(env, "RAPTOR_KEY_PUBLISH_LEAD_SECS", 300.0),
            key_check_secs=_seconds(env, "RAPTOR_KEY_CHECK_SECS", 2.0, minimum=0.1),
            proxy_hops=_hops(env.get("RAPTOR_PROXY_HOPS", "").strip()),
            writeback_issuers=_writeback_issuers(env.get("RAPTOR_WRITEBACK_ISSUERS", ""), urls),
        )


def _writeback_issuers(raw: str, urls: Mapping[str, str | None]) -> tuple[str, ...]:
    """``RAPTOR_WRITEBACK_ISSUERS`` (a comma list): each a Queue service whose URL is set."""
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    for name in names:
        if name not in QUEUE_SERVICES:
            raise ConfigError(
                f"RAPTOR_WRITEBACK_ISSUERS names {name!r}: each must be one of {', '.join(QUEUE_SERVICES)}"
            )
        if not urls.get(name):
            var = f"RAPTOR_QUEUE_{name.upper()}_URL"
            raise ConfigError(
                f"RAPTOR_WRITEBACK_ISSUERS names {name!r} but {var} is not set (its keys are at"
                f" {var} + /.well-known/jwks.json)"
            )
    return names


def _url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip().rstrip("/")
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http(s) URL like http://127.0.0.1:8083, not {raw!r}")
    return raw


def _hops(raw: str) -> int:
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > 5:
        raise ConfigError(f"RAPTOR_PROXY_HOPS must be 0 to 5 (proxies in front of Raptor), not {raw!r}")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not minimum <= value <= 86400:
        raise ConfigError(f"{name} must be between {minimum} and 86400 seconds, not {raw}")
    return value


def normalize_database_url(url: str) -> str:
    """Accept libpq-style ``postgresql://`` URLs and select SQLAlchemy's psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
