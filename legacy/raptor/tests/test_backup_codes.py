"""Backup codes (#1507): ten per set, werkzeug hashes, each used once, behind the flag."""

from __future__ import annotations

import re

from sqlalchemy import Engine, text
from werkzeug.security import check_password_hash

from .conftest import Client, MakeCustomer

CODE_RE = re.compile(r"^[a-z2-7]{5}-[a-z2-7]{5}$")


def test_a_set_is_ten_hashed_codes_each_used_once(base_url: str, engine: Engine, make_customer: MakeCustomer) -> None:
    c = make_customer("bc")
    client = Client(base_url)
    client.signin(c.email, c.password)
    r = client.post("/api/backup-codes")
    assert r.status_code == 201
    codes = r.json()["codes"]
    assert len(codes) == 10 == len(set(codes)) and all(CODE_RE.match(x) for x in codes)
    with engine.connect() as conn:
        hashes = (
            conn.execute(
                text("SELECT code_hash FROM customer_backup_codes WHERE customer_id = :c AND used_at IS NULL"),
                {"c": c.id},
            )
            .scalars()
            .all()
        )
    assert len(hashes) == 10
    assert all(h.startswith("scrypt:32768:8:1$") for h in hashes)
    assert all(any(check_password_hash(h, code.replace("-", "")) for h in hashes) for code in codes[:2])
    assert client.get("/api/backup-codes").json() == {"remaining": 10}

    browser = Client(base_url)
    ok = browser.post("/api/signin/backup-code", json={"email": c.email, "code": codes[0]})
    assert ok.status_code == 200 and ok.json()["customer"]["id"] == c.id
    assert len(browser.cookies["raptor_session"]) == 43
    again = Client(base_url).post("/api/signin/backup-code", json={"email": c.email, "code": codes[0]})
    assert again.status_code == 401 and again.json()["error"] == "wrong email or backup code"
    loose = Client(base_url).post(
        "/api/signin/backup-code", json={"email": c.email, "code": " " + codes[1].upper().replace("-", "") + " "}
    )
    assert loose.status_code == 200
    assert client.get("/api/backup-codes").json() == {"remaining": 8}
    with engine.connect() as conn:
        used = conn.execute(
            text("SELECT count(*) FROM customer_backup_codes WHERE customer_id = :c AND used_at IS NOT NULL"),
            {"c": c.id},
        ).scalar_one()
    assert used == 2
    assert (
        Client(base_url).post("/api/signin/backup-code", json={"email": c.email, "code": "aaaaa-aaaaa"}).status_code
        == 401
    )

    # A new set: the old unused codes stop working, the used ones stay used.
    page = client.post("/account/backup-codes")
    assert page.status_code == 200
    new_codes = re.findall(r"<code>([a-z2-7]{5}-[a-z2-7]{5})</code>", page.text)
    assert len(new_codes) == 10
    assert (
        Client(base_url).post("/api/signin/backup-code", json={"email": c.email, "code": codes[2]}).status_code == 401
    )
    form = Client(base_url).post("/signin/backup-code", data={"email": c.email, "code": new_codes[0]})
    assert form.status_code == 303
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE used_at IS NULL), count(*) FROM customer_backup_codes"
                " WHERE customer_id = :c"
            ),
            {"c": c.id},
        ).one()
    assert tuple(rows) == (9, 12)


def test_the_flag_off_hides_backup_codes(base_url_flags_off: str, make_customer: MakeCustomer) -> None:
    c = make_customer("bcoff")
    client = Client(base_url_flags_off)
    client.signin(c.email, c.password)
    assert client.post("/api/backup-codes").status_code == 404
    assert client.get("/api/backup-codes").status_code == 404
    r = client.post("/api/signin/backup-code", json={"email": c.email, "code": "aaaaa-aaaaa"})
    assert r.status_code == 404 and r.json() == {"error": "this feature is not enabled"}
    assert "Backup codes" not in client.get("/account").text
    assert "backup code" not in Client(base_url_flags_off).get("/signin").text
