"""Email verification (#1508): a mailed code (a JSON file), its hash, email_verified_at."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, text

from .conftest import Client, MakeCustomer

CODE_RE = re.compile(r"verification code is ([A-Z2-9]{4}-[A-Z2-9]{4})")


def mail_to(mail_dir: Path, email: str) -> list[dict[str, str]]:
    docs = [json.loads(p.read_text()) for p in sorted(mail_dir.glob("*.json"))]
    return [d for d in docs if d["to"] == email]


def test_the_mailed_code_verifies_the_email(
    base_url: str, engine: Engine, mail_dir: Path, make_customer: MakeCustomer
) -> None:
    c = make_customer("ev")
    client = Client(base_url)
    client.signin(c.email, c.password)
    assert client.get("/api/me").json()["customer"]["email_verified"] is False
    assert client.post("/api/email/send-code").status_code == 202
    [mail] = mail_to(mail_dir, c.email)
    assert mail["subject"] == "Your Raptor verification code"
    m = CODE_RE.search(mail["text"])
    assert m, mail
    code = m.group(1)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM email_verifications WHERE customer_id = :c"), {"c": c.id}).one()._mapping
    assert row["postmark_message_id"] == mail["id"]
    assert code.replace("-", "") not in row["code_hash"] and row["code_hash"].startswith("scrypt:")
    assert timedelta(minutes=29) < row["expires_at"] - row["created_at"] <= timedelta(minutes=30)
    assert row["consumed_at"] is None

    bad = client.post("/api/email/verify", json={"code": "AAAA-AAAA"})
    assert bad.status_code == 400 and bad.json() == {"error": "that code is wrong or expired"}
    ok = client.post("/api/email/verify", json={"code": code.lower()})
    assert ok.status_code == 200 and ok.json() == {"verified": True}
    assert client.get("/api/me").json()["customer"]["email_verified"] is True
    assert client.post("/api/email/verify", json={"code": code}).status_code == 400  # consumed
    with engine.connect() as conn:
        verified_at, consumed = conn.execute(
            text(
                "SELECT c.email_verified_at, v.consumed_at FROM customers c JOIN email_verifications v"
                " ON v.customer_id = c.id WHERE c.id = :c"
            ),
            {"c": c.id},
        ).one()
    assert verified_at is not None and consumed is not None
    assert "Verified on" in client.get("/account").text


def test_an_expired_code_is_refused_and_the_form_works(
    base_url: str, engine: Engine, mail_dir: Path, make_customer: MakeCustomer
) -> None:
    c = make_customer("evx")
    client = Client(base_url)
    client.signin(c.email, c.password)
    assert client.post("/account/email/send").status_code == 303
    code = CODE_RE.search(mail_to(mail_dir, c.email)[0]["text"]).group(1)  # type: ignore[union-attr]
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE email_verifications SET expires_at = now() - interval '1 s' WHERE customer_id = :c"),
            {"c": c.id},
        )
    assert client.post("/account/email/verify", data={"code": code}).status_code == 400
    client.post("/account/email/send")
    second = CODE_RE.search(mail_to(mail_dir, c.email)[1]["text"]).group(1)  # type: ignore[union-attr]
    assert client.post("/account/email/verify", data={"code": second}).status_code == 303
    assert client.get("/api/me").json()["customer"]["email_verified"] is True


def test_the_flag_off_hides_email_verification(base_url_flags_off: str, make_customer: MakeCustomer) -> None:
    c = make_customer("evoff")
    client = Client(base_url_flags_off)
    client.signin(c.email, c.password)
    assert client.post("/api/email/send-code").status_code == 404
    assert client.post("/api/email/verify", json={"code": "AAAA-AAAA"}).status_code == 404
    assert "Mail me a code" not in client.get("/account").text
