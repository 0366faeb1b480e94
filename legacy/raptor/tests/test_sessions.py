"""Password sign-in and sign-out, the raptor_session cookie and its row."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from datetime import timedelta

from raptor import Config, create_app
from sqlalchemy import Engine, text

from .conftest import ADMIN, Client, MakeCustomer, serve

COOKIE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def session_row(engine: Engine, token: str) -> dict[str, object]:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT customer_id, token, created_at, expires_at, last_seen_at, revoked_at, host(ip) AS ip,"
                " user_agent FROM customer_sessions WHERE token = :t"
            ),
            {"t": token},
        ).one()
    return dict(row._mapping)


def test_password_signin_sets_the_cookie_and_stores_the_session(
    base_url: str, engine: Engine, make_customer: MakeCustomer
) -> None:
    c = make_customer("pw")
    client = Client(base_url)
    r = client.post("/api/signin/password", json={"email": f"  {c.email.upper()} ", "password": c.password})
    assert r.status_code == 200, r.text
    assert r.json()["customer"]["id"] == c.id
    header = r.headers["Set-Cookie"]
    token = client.cookies["raptor_session"]
    assert COOKIE_RE.match(token)
    assert len(base64.urlsafe_b64decode(token + "=")) == 32
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
    assert "Secure" not in header  # the origin is http
    row = session_row(engine, token)
    assert row["customer_id"] == c.id and row["token"] == token
    assert row["expires_at"] - row["created_at"] == timedelta(days=14)  # type: ignore[operator]
    assert row["last_seen_at"] is not None and row["revoked_at"] is None
    assert row["ip"] == "127.0.0.1" and row["user_agent"] == "raptor-tests/1.0"
    assert client.get("/api/me").json()["customer"]["email"] == c.email


def test_sign_out_revokes_the_session(base_url: str, engine: Engine, make_customer: MakeCustomer) -> None:
    c = make_customer("out")
    client = Client(base_url)
    client.signin(c.email, c.password)
    token = client.cookies["raptor_session"]
    r = client.post("/api/signout")
    assert r.status_code == 200 and r.json() == {"signed_out": True}
    assert 'raptor_session=""' in r.headers["Set-Cookie"] or "raptor_session=;" in r.headers["Set-Cookie"]
    assert session_row(engine, token)["revoked_at"] is not None
    replay = Client(base_url)
    replay.cookies.set("raptor_session", token)
    assert replay.get("/api/me").status_code == 401


def test_wrong_password_unknown_email_and_no_password(base_url: str, make_customer: MakeCustomer) -> None:
    c = make_customer("bad")
    invited = make_customer("invited", password=None)
    client = Client(base_url)
    for email, password in ((c.email, "wrong"), ("nobody@acme.test", "x"), (invited.email, "anything")):
        r = client.post("/api/signin/password", json={"email": email, "password": password})
        assert r.status_code == 401 and r.json() == {"error": "wrong email or password"}
        assert "raptor_session" not in client.cookies
    assert client.post("/api/signin/password", data="x").status_code == 415
    assert client.post("/api/signin/password", json={"email": c.email}).json()["error"] == "password is required"


def test_expired_session_and_last_seen(base_url: str, engine: Engine, make_customer: MakeCustomer) -> None:
    c = make_customer("exp")
    client = Client(base_url)
    client.signin(c.email, c.password)
    token = client.cookies["raptor_session"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE customer_sessions SET last_seen_at = NULL WHERE token = :t"), {"t": token})
    assert client.get("/api/me").status_code == 200
    assert session_row(engine, token)["last_seen_at"] is not None
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE customer_sessions SET expires_at = now() - interval '1 s' WHERE token = :t"), {"t": token}
        )
    assert client.get("/api/me").status_code == 401


def test_pages_sign_in_by_form_and_out(base_url: str) -> None:
    client = Client(base_url)
    home = client.get("/")
    assert home.status_code == 200 and "You are not signed in." in home.text
    page = client.get("/signin")
    assert 'id="passkey"' in page.text and "/api/passkeys/signin/options" in page.text
    bad = client.post("/signin", data={"email": ADMIN[0], "password": "nope"})
    assert bad.status_code == 401 and "wrong email or password" in bad.text
    r = client.post("/signin", data={"email": ADMIN[0], "password": ADMIN[1]})
    assert r.status_code == 303 and r.headers["Location"].endswith("/account")
    assert "Signed in as Ada Admin" in client.get("/").text
    assert client.get("/account").status_code == 200
    out = client.post("/signout")
    assert out.status_code == 303
    assert "You are not signed in." in client.get("/").text
    assert client.get("/account").headers["Location"].endswith("/signin")


def test_cross_origin_posts_are_refused(base_url: str) -> None:
    client = Client(base_url)
    r = client.post("/signin", data={"email": ADMIN[0], "password": ADMIN[1]}, headers={"Origin": "http://evil.test"})
    assert r.status_code == 403 and "raptor_session" not in client.cookies
    ok = client.post(
        "/signin", data={"email": ADMIN[0], "password": ADMIN[1]}, headers={"Origin": "http://localhost:8080"}
    )
    assert ok.status_code == 303


def test_the_cookie_is_secure_when_the_origin_is_https(config: Config, engine: Engine) -> None:
    from dataclasses import replace

    app = create_app(replace(config, origin="https://console.example"), engine)
    with serve(app) as url:
        r = Client(url).post("/api/signin/password", json={"email": ADMIN[0], "password": ADMIN[1]})
    assert r.status_code == 200
    assert "Secure" in r.headers["Set-Cookie"]


def test_behind_a_proxy_the_forwarded_address_is_recorded(
    config: Config, engine: Engine, make_customer: MakeCustomer
) -> None:
    c = make_customer("hops")
    for hops, sent, recorded in ((0, "203.0.113.9", "127.0.0.1"), (1, "203.0.113.9", "203.0.113.9")):
        with serve(create_app(replace(config, proxy_hops=hops), engine)) as url:
            r = Client(url).post(
                "/api/signin/password",
                json={"email": c.email, "password": c.password},
                headers={"X-Forwarded-For": sent},
            )
            assert r.status_code == 200, r.text
        with engine.connect() as conn:
            ip = conn.execute(
                text("SELECT host(ip) FROM customer_sessions WHERE customer_id = :c ORDER BY id DESC LIMIT 1"),
                {"c": c.id},
            ).scalar_one()
        assert ip == recorded, (hops, ip)
