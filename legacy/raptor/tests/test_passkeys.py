"""Passkeys: registration and sign-in with a software authenticator, by email and usernameless."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from .authenticator import SoftAuthenticator, b64u, unb64u
from .conftest import Client, MakeCustomer, NewCustomer


def register(client: Client, auth: SoftAuthenticator, name: str = "laptop") -> dict[str, Any]:
    options = client.post("/api/passkeys/register/options").json()
    r = client.post("/api/passkeys/register/verify", json={"credential": auth.create(options), "name": name})
    assert r.status_code == 201, r.text
    return dict(options)


def credential_row(engine: Engine, auth: SoftAuthenticator) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT * FROM webauthn_credentials WHERE credential_id = :id"), {"id": auth.credential_id}
        ).one()
    return dict(row._mapping)


def passkey_signin(base_url: str, auth: SoftAuthenticator, email: str | None, **get: Any) -> tuple[Client, Any]:
    client = Client(base_url)
    options = client.post("/api/passkeys/signin/options", json={"email": email}).json()
    r = client.post("/api/passkeys/signin/verify", json={"credential": auth.get(options, **get)})
    return client, r


def signed_in(base_url: str, make_customer: MakeCustomer) -> tuple[Client, NewCustomer]:
    c = make_customer("pk")
    client = Client(base_url)
    client.signin(c.email, c.password)
    return client, c


def test_register_stores_every_column(base_url: str, engine: Engine, make_customer: MakeCustomer) -> None:
    client, c = signed_in(base_url, make_customer)
    auth = SoftAuthenticator()
    options = register(client, auth)
    assert options["rp"] == {"id": "localhost", "name": "Raptor"}
    assert options["authenticatorSelection"]["residentKey"] == "required"
    handle = unb64u(options["user"]["id"])
    assert len(handle) == 16
    row = credential_row(engine, auth)
    assert row["customer_id"] == c.id
    assert bytes(row["public_key"]) == auth.cose_key()
    assert row["sign_count"] == 0
    assert row["aaguid"] == "00000000-0000-0000-0000-000000000000"
    assert row["device_type"] == "single_device" and row["backed_up"] is False
    assert row["user_verified"] is True
    assert row["transports"] == ["hybrid", "internal"]
    assert bytes(row["user_handle"]) == handle
    assert row["name"] == "laptop" and row["last_used_at"] is None

    # A second passkey: the same user handle, the first one excluded, a synced (backed-up) one.
    synced = SoftAuthenticator(backed_up=True)
    options2 = register(client, synced, "phone")
    assert unb64u(options2["user"]["id"]) == handle
    assert [d["id"] for d in options2["excludeCredentials"]] == [b64u(auth.credential_id)]
    row2 = credential_row(engine, synced)
    assert bytes(row2["user_handle"]) == handle
    assert row2["device_type"] == "multi_device" and row2["backed_up"] is True
    listed = client.get("/api/passkeys").json()["passkeys"]
    assert [p["name"] for p in listed] == ["laptop", "phone"]
    assert "laptop" in client.get("/account").text

    # The same credential again is refused; another customer gets another handle.
    again = client.post("/api/passkeys/register/options").json()
    dup = client.post("/api/passkeys/register/verify", json={"credential": auth.create(again)})
    assert dup.status_code == 400 and "already registered" in dup.json()["error"]
    other, _ = signed_in(base_url, make_customer)
    assert unb64u(other.post("/api/passkeys/register/options").json()["user"]["id"]) != handle


def test_sign_in_by_email_updates_the_sign_count(base_url: str, engine: Engine, make_customer: MakeCustomer) -> None:
    client, c = signed_in(base_url, make_customer)
    auth = SoftAuthenticator()
    register(client, auth)
    client.post("/api/signout")
    browser = Client(base_url)
    options = browser.post("/api/passkeys/signin/options", json={"email": c.email.upper()}).json()
    assert [d["id"] for d in options["allowCredentials"]] == [b64u(auth.credential_id)]
    r = browser.post("/api/passkeys/signin/verify", json={"credential": auth.get(options)})
    assert r.status_code == 200, r.text
    assert r.json()["customer"]["id"] == c.id
    assert browser.get("/api/me").json()["customer"]["id"] == c.id
    row = credential_row(engine, auth)
    assert row["sign_count"] == 1 and row["last_used_at"] is not None
    _, r2 = passkey_signin(base_url, auth, c.email)
    assert r2.status_code == 200
    assert credential_row(engine, auth)["sign_count"] == 2


def test_usernameless_sign_in(base_url: str, make_customer: MakeCustomer) -> None:
    client, c = signed_in(base_url, make_customer)
    auth = SoftAuthenticator()
    register(client, auth)
    browser = Client(base_url)
    options = browser.post("/api/passkeys/signin/options", json={}).json()
    assert options.get("allowCredentials", []) == []
    r = browser.post("/api/passkeys/signin/verify", json={"credential": auth.get(options)})
    assert r.status_code == 200 and r.json()["customer"]["id"] == c.id
    assert len(browser.cookies["raptor_session"]) == 43


def test_refusals(base_url: str, make_customer: MakeCustomer) -> None:
    client, c = signed_in(base_url, make_customer)
    auth = SoftAuthenticator()
    register(client, auth)
    # A wrong user handle, none at all, a cloned authenticator, the wrong origin, another's passkey.
    _, r = passkey_signin(base_url, auth, None, user_handle=b"\x00" * 16)
    assert r.status_code == 401 and "user handle" in r.json()["error"]
    handle, auth.user_handle = auth.user_handle, None
    _, r = passkey_signin(base_url, auth, None)
    assert r.status_code == 401 and "user handle" in r.json()["error"]
    auth.user_handle = handle
    _, ok = passkey_signin(base_url, auth, None)
    assert ok.status_code == 200
    auth.sign_count = 0  # a clone replays an older counter
    _, r = passkey_signin(base_url, auth, None)
    assert r.status_code == 401 and "sign count" in r.json()["error"]
    auth.sign_count = 100
    evil = SoftAuthenticator(origin="http://evil.test")
    evil.key, evil.credential_id, evil.user_handle, evil.sign_count = (
        auth.key,
        auth.credential_id,
        auth.user_handle,
        200,
    )
    _, r = passkey_signin(base_url, evil, None)
    assert r.status_code == 401 and "origin" in r.json()["error"].lower()
    other = make_customer("other")
    _, r = passkey_signin(base_url, SoftAuthenticator(), None)
    assert r.status_code == 401 and r.json()["error"] == "unknown passkey"
    browser = Client(base_url)
    options = browser.post("/api/passkeys/signin/options", json={"email": other.email}).json()
    assert options.get("allowCredentials", []) == []
    auth2 = SoftAuthenticator()
    auth2.key, auth2.credential_id, auth2.user_handle, auth2.sign_count = (
        auth.key,
        auth.credential_id,
        auth.user_handle,
        300,
    )
    r = browser.post("/api/passkeys/signin/verify", json={"credential": auth2.get({"challenge": options["challenge"]})})
    assert r.status_code == 401 and "not the customer's" in r.json()["error"]
    # No ceremony in progress, or one used already; registration needs a session.
    fresh = Client(base_url)
    r = fresh.post("/api/passkeys/signin/verify", json={"credential": auth.get({"challenge": "AAAA"})})
    assert r.status_code == 400 and "no authenticate ceremony" in r.json()["error"]
    assert fresh.post("/api/passkeys/register/options").status_code == 401
    assert c.id > 0


def test_concurrent_registrations_keep_one_user_handle(
    base_url: str, engine: Engine, make_customer: MakeCustomer
) -> None:
    c = make_customer("race")
    first, second = Client(base_url), Client(base_url)
    first.signin(c.email, c.password)
    second.signin(c.email, c.password)
    a, b = SoftAuthenticator(), SoftAuthenticator()
    options_a = first.post("/api/passkeys/register/options").json()
    options_b = second.post("/api/passkeys/register/options").json()
    assert options_a["user"]["id"] != options_b["user"]["id"]  # nobody has a passkey yet: two fresh handles
    assert second.post("/api/passkeys/register/verify", json={"credential": b.create(options_b)}).status_code == 201
    late = first.post("/api/passkeys/register/verify", json={"credential": a.create(options_a)})
    assert late.status_code == 400 and "start again" in late.json()["error"]
    register(first, a)  # a new ceremony picks up the handle the customer has now
    with engine.connect() as conn:
        handles = (
            conn.execute(
                text("SELECT DISTINCT user_handle FROM webauthn_credentials WHERE customer_id = :c"), {"c": c.id}
            )
            .scalars()
            .all()
        )
    assert [bytes(h) for h in handles] == [unb64u(options_b["user"]["id"])]
