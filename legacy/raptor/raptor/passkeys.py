"""Passkeys with py_webauthn: registration for a signed-in customer, and sign-in by email or
usernameless (a discoverable credential's user handle names the customer).

Each column of ``webauthn_credentials`` is stored from the ``VerifiedRegistration`` field the
schema names; ``user_handle`` is 16 random bytes per customer, the same for all their passkeys.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from . import audit
from .accounts import Customer


class PasskeyError(Exception):
    """A ceremony failed; the message says why (never secret). A sign-in refused for a known
    passkey names it, so the caller can record the rejection (its own transaction is rolled back)."""

    def __init__(self, message: str, *, customer_id: int | None = None, passkey_id: int | None = None) -> None:
        super().__init__(message)
        self.customer_id = customer_id
        self.passkey_id = passkey_id


@dataclass(frozen=True)
class RelyingParty:
    id: str
    name: str
    origin: str


def user_handle_for(conn: Connection, customer_id: int) -> bytes:
    """The customer's user handle: the one their passkeys carry, or 16 new random bytes."""
    row = conn.execute(
        text("SELECT user_handle FROM webauthn_credentials WHERE customer_id = :c ORDER BY id LIMIT 1"),
        {"c": customer_id},
    ).first()
    return bytes(row[0]) if row else secrets.token_bytes(16)


def registration_options(conn: Connection, rp: RelyingParty, customer: Customer) -> tuple[str, bytes, bytes]:
    """The options JSON for navigator.credentials.create(), the challenge and the user handle."""
    handle = user_handle_for(conn, customer.id)
    existing = conn.execute(
        text("SELECT credential_id FROM webauthn_credentials WHERE customer_id = :c"), {"c": customer.id}
    ).scalars()
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=handle,
        user_name=customer.email.strip(),
        user_display_name=customer.display_name or customer.email.strip(),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=bytes(c)) for c in existing],
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED, user_verification=UserVerificationRequirement.PREFERRED
        ),
    )
    return options_to_json(options), options.challenge, handle


def register(
    conn: Connection,
    rp: RelyingParty,
    customer: Customer,
    credential: dict[str, Any],
    challenge: bytes,
    user_handle: bytes,
    name: str | None,
) -> int:
    """Verify the browser's registration response and store the passkey; returns its row id."""
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.id, expected_origin=rp.origin
        )
    except (InvalidRegistrationResponse, ValueError, KeyError, TypeError) as e:
        raise PasskeyError(f"registration not verified: {e}") from None
    transports = (credential.get("response") or {}).get("transports")
    if transports is not None and not (isinstance(transports, list) and all(isinstance(t, str) for t in transports)):
        raise PasskeyError("response.transports must be a list of strings")
    # Serialize registrations per customer so that all their passkeys carry one user handle.
    conn.execute(text("SELECT 1 FROM customers WHERE id = :c FOR UPDATE"), {"c": customer.id})
    current = conn.execute(
        text("SELECT user_handle FROM webauthn_credentials WHERE customer_id = :c ORDER BY id LIMIT 1"),
        {"c": customer.id},
    ).first()
    if current is not None and not secrets.compare_digest(bytes(current[0]), user_handle):
        raise PasskeyError("another passkey was registered meanwhile: start again")
    taken = conn.execute(
        text("SELECT 1 FROM webauthn_credentials WHERE credential_id = :id"), {"id": verified.credential_id}
    ).first()
    if taken:
        raise PasskeyError("this passkey is already registered")
    row_id = conn.execute(
        text(
            "INSERT INTO webauthn_credentials (customer_id, credential_id, public_key, sign_count, aaguid, device_type,"
            " backed_up, user_verified, transports, user_handle, name)"
            " VALUES (:c, :cid, :pk, :n, :aaguid, :dt, :bu, :uv, :tr, :uh, :name) RETURNING id"
        ),
        {
            "c": customer.id,
            "cid": verified.credential_id,
            "pk": verified.credential_public_key,
            "n": verified.sign_count,
            "aaguid": verified.aaguid,
            "dt": verified.credential_device_type.value,
            "bu": verified.credential_backed_up,
            "uv": verified.user_verified,
            "tr": transports,
            "uh": user_handle,
            "name": (name or "").strip()[:100] or None,
        },
    ).scalar_one()
    audit.record(
        "passkey.registered",
        actor=customer.id,
        conn=conn,
        tenant=customer.tenant_id,
        target=("passkey", row_id),
        passkey_id=row_id,
    )
    return int(row_id)


def authentication_options(conn: Connection, rp: RelyingParty, customer_id: int | None) -> tuple[str, bytes]:
    """Options for navigator.credentials.get(): the customer's passkeys as allowCredentials, or
    none for a usernameless sign-in (customer_id None)."""
    allow: list[PublicKeyCredentialDescriptor] = []
    if customer_id is not None:
        rows = conn.execute(
            text("SELECT credential_id, transports FROM webauthn_credentials WHERE customer_id = :c ORDER BY id"),
            {"c": customer_id},
        ).all()
        allow = [PublicKeyCredentialDescriptor(id=bytes(r[0])) for r in rows]
    options = generate_authentication_options(
        rp_id=rp.id, allow_credentials=allow, user_verification=UserVerificationRequirement.PREFERRED
    )
    return options_to_json(options), options.challenge


def authenticate(
    conn: Connection, rp: RelyingParty, credential: dict[str, Any], challenge: bytes, customer_id: int | None
) -> int:
    """Verify an assertion; returns the customer id. With ``customer_id`` (sign-in by email) the
    passkey must be theirs; without it the response's user handle must be the passkey's."""
    try:
        raw_id = base64url_to_bytes(str(credential["rawId"]))
    except (KeyError, ValueError, TypeError):
        raise PasskeyError("rawId is missing or not base64url") from None
    row = conn.execute(
        text(
            "SELECT w.id, w.customer_id, w.public_key, w.sign_count, w.user_handle FROM webauthn_credentials w"
            " JOIN customers c ON c.id = w.customer_id WHERE w.credential_id = :id AND c.is_active FOR UPDATE OF w"
        ),
        {"id": raw_id},
    ).first()
    if row is None:
        raise PasskeyError("unknown passkey")
    if customer_id is not None and row.customer_id != customer_id:
        raise PasskeyError("this passkey is not the customer's")
    handle = (credential.get("response") or {}).get("userHandle")
    if customer_id is None:
        if not handle:
            raise PasskeyError("a usernameless sign-in needs the passkey's user handle")
        try:
            given = base64url_to_bytes(str(handle))
        except ValueError:
            raise PasskeyError("userHandle is not base64url") from None
        if not secrets.compare_digest(given, bytes(row.user_handle)):
            raise PasskeyError("the user handle does not match the passkey")
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=bytes(row.public_key),
            credential_current_sign_count=int(row.sign_count),
        )
    except (InvalidAuthenticationResponse, ValueError, KeyError, TypeError) as e:
        raise PasskeyError(
            f"sign-in not verified: {e}", customer_id=int(row.customer_id), passkey_id=int(row.id)
        ) from None
    conn.execute(
        text("UPDATE webauthn_credentials SET sign_count = :n, last_used_at = now() WHERE id = :id"),
        {"n": verified.new_sign_count, "id": row.id},
    )
    audit.record("passkey.used", actor=int(row.customer_id), conn=conn, target=("passkey", row.id), passkey_id=row.id)
    return int(row.customer_id)


def list_passkeys(conn: Connection, customer_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        text(
            "SELECT id, name, aaguid, device_type, backed_up, transports, sign_count, created_at, last_used_at"
            " FROM webauthn_credentials WHERE customer_id = :c ORDER BY id"
        ),
        {"c": customer_id},
    ).all()
    return [json.loads(json.dumps(dict(r._mapping), default=str)) for r in rows]
