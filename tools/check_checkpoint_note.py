#!/usr/bin/env python3
"""An independent check of a Queue audit checkpoint, written from the C2SP specs alone
(c2sp.org/signed-note, c2sp.org/tlog-checkpoint).

    tools/check_checkpoint_note.py --key VERIFIER_KEY NOTE_FILE

VERIFIER_KEY is `<name>+<key id, 8 hex>+<base64(0x02 || SubjectPublicKeyInfo DER)>` (as
`GET /api/v1/audit/checkpoint-keys` lists them). The note is the checkpoint text (origin, tree
size, base64 root, optional extension lines), a blank line, then signature lines
`— <name> <base64(key id (4 bytes, big-endian) || signature)>`. For type 0x02 the key id is the
first 4 bytes of SHA-256(name || "\\n" || 0x02 || SPKI DER) and the signature is ASN.1 DER
ECDSA P-256 / SHA-256 over the checkpoint text including its final newline. Prints
`ok ORIGIN SIZE ROOT` (ROOT in base64) or why it does not verify; exit 0 or 1.
Needs the `cryptography` package for ECDSA.
"""

import base64
import hashlib
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

EM_DASH = "\u2014"


def check(note: str, verifier_key: str) -> str:
    name, key_id_hex, key_b64 = verifier_key.split("+", 2)
    key = base64.b64decode(key_b64)
    if key[:1] != b"\x02":
        return "not an ECDSA (type 0x02) key"
    key_id = hashlib.sha256(name.encode() + b"\n" + key).digest()[:4]
    if key_id.hex() != key_id_hex:
        return "the key's id does not match its name and key"
    public = serialization.load_der_public_key(key[1:])
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        return "not a P-256 key"
    if "\n\n" not in note:
        return "no signature block"
    text, signatures = note.split("\n\n", 1)
    text += "\n"
    for line in signatures.splitlines():
        if not line.startswith(EM_DASH + " "):
            return f"a malformed signature line: {line!r}"
        signer, sig_b64 = line[2:].rsplit(" ", 1)
        raw = base64.b64decode(sig_b64)
        if signer != name or raw[:4] != key_id:
            continue
        try:
            public.verify(raw[4:], text.encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return "the signature does not verify"
        lines = text.splitlines()
        if len(lines) < 3 or not lines[1].isdigit():
            return "not a checkpoint"
        struct.unpack(">32s", base64.b64decode(lines[2]))  # a 32-byte root
        return f"ok {lines[0]} {lines[1]} {lines[2]}"
    return "no signature of this key"


def main(argv: Sequence[str]) -> int:
    if len(argv) != 3 or argv[0] != "--key":
        print(__doc__, file=sys.stderr)
        return 2
    verdict = check(Path(argv[2]).read_text(encoding="utf-8"), argv[1])
    print(verdict)
    return 0 if verdict.startswith("ok ") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
