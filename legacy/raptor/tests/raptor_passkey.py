"""A software passkey for the Rust tests that meet Raptor: Raptor's own authenticator
(``authenticator.py``, which keeps a resident key and its user handle) from the command line, its
state (key, credential id, counter, user handle, origin) in a JSON file between calls.

  raptor_passkey.py register STATE LEGACY_ID USER_LEGACY_ID   registers against py_webauthn the way
      raptor/passkeys.py does and prints the record `queuectl legacy import` sends for that
      ``webauthn_credentials`` row (queue-auth's tests/api/import_passkeys.rs)
  raptor_passkey.py create STATE ORIGIN < OPTIONS   navigator.credentials.create() over Raptor's
      options (WebAuthn's JSON) at ORIGIN; prints the credential to post back
      (queue-e2e's tests/e2e/legacy_import.rs)
  raptor_passkey.py get STATE [USER_HANDLE_B64URL] < OPTIONS   an assertion over a server's
      options (``{"publicKey": ...}`` as webauthn-rs writes them, or WebAuthn's JSON)

Run with var/venv-raptor/bin/python (py_webauthn, cbor2, cryptography), not collected by pytest.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn import generate_registration_options, options_to_json, verify_registration_response
from webauthn.helpers.structs import AuthenticatorSelectionCriteria, ResidentKeyRequirement, UserVerificationRequirement

# Run as a file: legacy/raptor on the path, so the tests package imports as pytest sees it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.authenticator import SoftAuthenticator, b64u, unb64u

RP_ID = "localhost"
ORIGIN = "http://localhost:8080"


def save(path: Path, a: SoftAuthenticator) -> None:
    pem = a.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    state = {
        "key": pem.decode(),
        "credential_id": b64u(a.credential_id),
        "sign_count": a.sign_count,
        "user_handle": b64u(a.user_handle or b""),
        "backed_up": a.backed_up,
        "origin": a.origin,
    }
    path.write_text(json.dumps(state))


def load(path: Path) -> SoftAuthenticator:
    state = json.loads(path.read_text())
    a = SoftAuthenticator(RP_ID, state.get("origin", ORIGIN), backed_up=state["backed_up"])
    key = serialization.load_pem_private_key(state["key"].encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    a.key = key
    a.credential_id = unb64u(state["credential_id"])
    a.sign_count = state["sign_count"]
    a.user_handle = unb64u(state["user_handle"])
    return a


def register(path: Path, legacy_id: str, user_legacy_id: str) -> dict[str, Any]:
    """raptor/passkeys.py's registration_options and register, without its database."""
    a = SoftAuthenticator(RP_ID, ORIGIN, backed_up=True)
    handle = secrets.token_bytes(16)
    options = generate_registration_options(
        rp_id=RP_ID,
        rp_name="Raptor",
        user_id=handle,
        user_name="ada@example.com",
        user_display_name="Ada",
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED, user_verification=UserVerificationRequirement.PREFERRED
        ),
    )
    credential = a.create(json.loads(options_to_json(options)))
    verified = verify_registration_response(
        credential=credential, expected_challenge=options.challenge, expected_rp_id=RP_ID, expected_origin=ORIGIN
    )
    save(path, a)
    return {
        "legacy_id": legacy_id,
        "user_legacy_id": user_legacy_id,
        "credential_id": b64u(verified.credential_id),
        "public_key": b64u(verified.credential_public_key),
        "sign_count": verified.sign_count,
        "aaguid": verified.aaguid,
        "device_type": verified.credential_device_type.value,
        "backed_up": verified.credential_backed_up,
        "user_verified": verified.user_verified,
        "transports": credential["response"]["transports"],
        "user_handle": b64u(handle),
        "name": "Ada's phone",
        "created_at": "2025-06-01T10:00:00Z",
        "last_used_at": None,
    }


def create(path: Path, origin: str, options: dict[str, Any]) -> dict[str, Any]:
    """A new resident passkey over ``options`` (py_webauthn's JSON, as Raptor's page gets it)."""
    a = SoftAuthenticator(RP_ID, origin, backed_up=True)
    credential: dict[str, Any] = a.create(options)
    save(path, a)
    return credential


def get(path: Path, options: dict[str, Any], user_handle: str | None) -> dict[str, Any]:
    """An assertion over a server's options; the counter goes up."""
    a = load(path)
    handle = unb64u(user_handle) if user_handle else None
    assertion: dict[str, Any] = a.get(options.get("publicKey", options), user_handle=handle)
    save(path, a)
    return assertion


def main(argv: list[str]) -> None:
    command, path = argv[1], Path(argv[2])
    if command == "register":
        print(json.dumps(register(path, argv[3], argv[4])))
    elif command == "create":
        print(json.dumps(create(path, argv[3], json.load(sys.stdin))))
    elif command == "get":
        print(json.dumps(get(path, json.load(sys.stdin), argv[3] if len(argv) > 3 else None)))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv)
