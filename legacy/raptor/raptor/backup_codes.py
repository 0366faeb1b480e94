"""Backup codes (#1507, behind FLAG_AUTH_BACKUP_CODES): ten per set, 10 characters of lowercase
RFC 4648 base32 shown as ``xxxxx-xxxxx``; stored as werkzeug's default hash of the code without
the hyphen; each redeems once."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import Connection, text
from werkzeug.security import check_password_hash, generate_password_hash

from . import audit

ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
CODES_PER_SET = 10
CODE_RE = re.compile(r"^[a-z2-7]{10}$")


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def normalize(code: str) -> str | None:
    """The code as it was hashed (lowercase, no hyphen or spaces), or None when it cannot be one."""
    raw = re.sub(r"[\s-]", "", code).lower()
    return raw if CODE_RE.match(raw) else None


def generate_set(conn: Connection, customer_id: int) -> list[str]:
    """A new set of ten codes, shown once; the unused codes of the previous set stop working."""
    conn.execute(
        text("DELETE FROM customer_backup_codes WHERE customer_id = :c AND used_at IS NULL"), {"c": customer_id}
    )
    codes = [new_code() for _ in range(CODES_PER_SET)]
    for code in codes:
        conn.execute(
            text("INSERT INTO customer_backup_codes (customer_id, code_hash) VALUES (:c, :h)"),
            {"c": customer_id, "h": generate_password_hash(code.replace("-", ""))},
        )
    audit.record("backup_codes.generated", actor=customer_id, conn=conn, count=CODES_PER_SET)
    return codes


def remaining(conn: Connection, customer_id: int) -> int:
    return int(
        conn.execute(
            text("SELECT count(*) FROM customer_backup_codes WHERE customer_id = :c AND used_at IS NULL"),
            {"c": customer_id},
        ).scalar_one()
    )


def redeem(conn: Connection, customer_id: int, code: str) -> bool:
    """Use ``code`` once: True and marked used when it is one of the customer's unused codes."""
    raw = normalize(code)
    rows = conn.execute(
        text(
            "SELECT id, code_hash FROM customer_backup_codes WHERE customer_id = :c AND used_at IS NULL"
            " ORDER BY id FOR UPDATE"
        ),
        {"c": customer_id},
    ).all()
    if raw is not None:
        for row in rows:
            if check_password_hash(row.code_hash, raw):
                conn.execute(
                    text("UPDATE customer_backup_codes SET used_at = now() WHERE id = :id AND used_at IS NULL"),
                    {"id": row.id},
                )
                audit.record("backup_code.used", actor=customer_id, conn=conn, code_id=row.id)
                return True
    audit.record("backup_code.rejected", actor=customer_id, conn=conn)
    return False
