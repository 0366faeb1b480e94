"""Email verification (#1508, behind FLAG_EMAIL_VERIFICATION): a code mailed to the customer (one
JSON file per message in RAPTOR_MAIL_DIR, standing in for the Postmark API), its werkzeug hash in
``email_verifications``; the right code sets ``customers.email_verified_at``."""

from __future__ import annotations

import json
import os
import re
import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, text
from werkzeug.security import check_password_hash, generate_password_hash

from . import audit
from .accounts import Customer

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off a mail and typed
CODE_MINUTES = 30
CODE_RE = re.compile(r"^[A-Z2-9]{8}$")


def write_mail(mail_dir: Path, *, to: str, subject: str, body: str) -> str:
    """Write one message as ``<utc time>-<id>.json`` (keys id, to, subject, text, created_at),
    atomically; returns its id (what Postmark would call the MessageID)."""
    mail_dir.mkdir(parents=True, exist_ok=True)
    message_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    doc = {"id": message_id, "to": to, "subject": subject, "text": body, "created_at": now.isoformat()}
    final = mail_dir / f"{now:%Y%m%dT%H%M%S%f}-{message_id}.json"
    tmp = mail_dir / f".{message_id}.tmp"
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, final)
    return message_id


def send_code(conn: Connection, customer: Customer, mail_dir: Path) -> None:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(8))
    shown = f"{raw[:4]}-{raw[4:]}"
    message_id = write_mail(
        mail_dir,
        to=customer.email.strip(),
        subject="Your Raptor verification code",
        body=f"Your verification code is {shown}. It expires in {CODE_MINUTES} minutes.\n",
    )
    conn.execute(
        text(
            "INSERT INTO email_verifications (customer_id, code_hash, expires_at, postmark_message_id)"
            " VALUES (:c, :h, now() + make_interval(mins => :m), :mid)"
        ),
        {"c": customer.id, "h": generate_password_hash(raw), "m": CODE_MINUTES, "mid": message_id},
    )
    audit.record("email_verification.sent", actor=customer.id, conn=conn, message_id=message_id)


def verify(conn: Connection, customer_id: int, code: str) -> bool:
    """True, the code consumed and the email verified, when ``code`` is a live code of the customer."""
    raw = re.sub(r"[\s-]", "", code).upper()
    rows = conn.execute(
        text(
            "SELECT id, code_hash FROM email_verifications WHERE customer_id = :c AND consumed_at IS NULL"
            " AND expires_at > now() ORDER BY id DESC FOR UPDATE"
        ),
        {"c": customer_id},
    ).all()
    if CODE_RE.match(raw):
        for row in rows:
            if check_password_hash(row.code_hash, raw):
                conn.execute(text("UPDATE email_verifications SET consumed_at = now() WHERE id = :id"), {"id": row.id})
                conn.execute(
                    text(
                        "UPDATE customers SET email_verified_at = coalesce(email_verified_at, now()),"
                        " updated_at = now() WHERE id = :c"
                    ),
                    {"c": customer_id},
                )
                audit.record("email.verified", actor=customer_id, conn=conn, verification_id=row.id)
                return True
    audit.record("email_verification.rejected", actor=customer_id, conn=conn)
    return False
