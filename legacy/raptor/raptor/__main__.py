"""``python -m raptor``: create the schema on an empty database, seed, and serve."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from werkzeug.serving import run_simple

from .audit import ensure_outbox
from .config import Config, ConfigError
from .db import SchemaError, ensure_schema, make_engine
from .queue_link import rotate_key_file
from .seed import DEMO_CUSTOMERS, DEMO_TENANT_NAME, seed
from .web import create_app

HELP = """\
Raptor, the legacy Flask app (a stand-in on raptor-schema.sql).

  python -m raptor [serve] [--listen HOST:PORT]   create what is missing, seed, serve
  python -m raptor rotate-key                     write a new RAPTOR_SIGNING_KEY (a running Raptor
                                                  publishes it at once and signs with it after
                                                  RAPTOR_KEY_PUBLISH_LEAD_SECS); prints its kid

On start it executes raptor-schema.sql when the database has no tables, creates the audit outbox
(schema queue_outbox, beside public), seeds RBAC's built-in roles, and seeds the demo data (tenant
Acme and its customers) unless it is there already.

Environment:
  RAPTOR_DATABASE_URL      postgresql://USER@HOST:PORT/DB (required)
  RAPTOR_MAIL_DIR          where outgoing mail is written, one JSON file per message (required)
  RAPTOR_RP_ID             passkey relying party id (default localhost)
  RAPTOR_ORIGIN            the origin browsers use (default http://localhost:8080); https => Secure cookies
  RAPTOR_SECRET_KEY        signs the passkey-ceremony cookie (default: random per process)
  RAPTOR_PROXY_HOPS        proxies in front that set X-Forwarded-For (default 0; behind Queue's proxy: 1)
  FLAG_AUTH_BACKUP_CODES   1 to enable backup codes (#1507)
  FLAG_EMAIL_VERIFICATION  1 to enable email verification (#1508)

Queue (each optional; without RAPTOR_SIGNING_KEY Raptor calls nothing and its audit events wait
in the outbox):
  RAPTOR_SIGNING_KEY       Raptor's Ed25519 key, PKCS#8 PEM (queuectl keys init: var/keys/raptor.pem);
                           published at /.well-known/jwks.json, signs tokens as issuer raptor
  RAPTOR_QUEUE_AUDIT_URL   Queue's audit (e.g. http://127.0.0.1:8083): the outbox is delivered there
  RAPTOR_QUEUE_RBAC_URL    Queue's rbac, and
  RAPTOR_QUEUE_AUTH_URL    Queue's auth: the Queue-backed checks of /access and /api/queue/check
  RAPTOR_KEY_PUBLISH_LEAD_SECS  how long a new key is published before it signs (default 300;
                           at least the verifiers' tokens.jwks_refetch_min_secs)
  RAPTOR_KEY_CHECK_SECS    how often the key file is looked at for a rotation (default 2)
  RAPTOR_WRITEBACK_ISSUERS Queue services whose tokens may call the write-back API
                           (/internal/queue/v1/), e.g. auth,rbac; each needs its RAPTOR_QUEUE_<NAME>_URL
                           (keys at <url>/.well-known/jwks.json). Unset: the API answers 404
"""


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:8090, not {value!r}")
    return host.strip("[]"), int(port)


def _rotate_key(path: str) -> int:
    """Only RAPTOR_SIGNING_KEY matters here: no database, no mail."""
    if not path:
        print("raptor: RAPTOR_SIGNING_KEY is not set: which key file to rotate?", file=sys.stderr)
        return 2
    try:
        kid = rotate_key_file(Path(path))
    except OSError as e:
        print(f"raptor: cannot write {path}: {e.strerror}", file=sys.stderr)
        return 1
    print(kid)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raptor", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command", nargs="?", choices=("serve", "rotate-key"), default="serve", help="what to do (default: serve)"
    )
    parser.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 8090),
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:8090)",
    )
    parser.add_argument("--no-demo", action="store_true", help="do not seed the demo data")
    parser.add_argument("--init-only", action="store_true", help="create the schema and seed, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "rotate-key":
        return _rotate_key(os.environ.get("RAPTOR_SIGNING_KEY", "").strip())
    try:
        config = Config.from_env()
    except ConfigError as e:
        print(f"raptor: {e}", file=sys.stderr)
        return 2
    engine = make_engine(config.database_url)
    try:
        if ensure_schema(engine, config.schema_file):
            logging.getLogger("raptor").info("created the schema from %s", config.schema_file)
    except SchemaError as e:
        print(f"raptor: {e}", file=sys.stderr)
        return 1
    ensure_outbox(engine)
    if seed(engine, demo=not args.no_demo):
        who = ", ".join(f"{c.email} ({c.role})" for c in DEMO_CUSTOMERS)
        logging.getLogger("raptor").info(
            "seeded the demo tenant %s: %s (passwords in README.md)", DEMO_TENANT_NAME, who
        )
    if args.init_only:
        return 0
    host, port = args.listen
    app = create_app(config, engine)
    run_simple(host, port, app, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
