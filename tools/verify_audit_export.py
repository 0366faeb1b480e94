#!/usr/bin/env python3
"""An independent verifier of Queue's audit chain, written from docs/audit-chain.md only.

    tools/verify_audit_export.py --key-hex EPOCH=HEX [...] EXPORT.ndjson
    tools/verify_audit_export.py --selftest

It recomputes every MAC of an NDJSON export (one JSON object per event line, as
`GET /api/v1/audit/export` and `queuectl audit export` write) with the data keys given, and
prints the first bad seq and why, or `ok`. Standard library only.
"""

import hashlib
import hmac
import json
import struct
import sys
from collections.abc import Iterable
from typing import Any

VERSION = "queue-audit/v1"


def field(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">I", 0xFFFFFFFF)
    b = s.encode("utf-8")
    return struct.pack(">I", len(b)) + b


def canonical(e: dict[str, Any]) -> bytes:
    parts: list[str | None] = [
        VERSION,
        e["tenant_id"],
        str(e["seq"]),
        e["event_id"],
        e["occurred_at"],
        e["recorded_at"],
        e["actor_type"],
        e["actor_id"],
        e["action"],
        e["target_type"],
        e["target_id"],
        e.get("ip"),
        e.get("user_agent"),
        e.get("trace_id"),
        e["payload_canonical"],
        str(e["key_id"]),
    ]
    return b"".join(field(p) for p in parts)


def genesis(tenant: str) -> bytes:
    return hashlib.sha256((VERSION + "/genesis/" + tenant).encode("utf-8")).digest()


def mac(key: bytes, prev: bytes, canon: bytes) -> bytes:
    return hmac.new(key, prev + canon, hashlib.sha256).digest()


def verify(lines: Iterable[str], keys: dict[int, bytes]) -> str:
    prev, expected_seq = b"", 1
    for line in lines:
        e = json.loads(line)
        if e.get("type", "event") != "event":
            continue
        seq = e["seq"]
        if seq != expected_seq:
            return f"seq {expected_seq}: missing (found {seq})"
        want_prev = genesis(e["tenant_id"]) if seq == 1 else prev
        if bytes.fromhex(e["prev_mac"]) != want_prev:
            return f"seq {seq}: prev_mac does not link to seq {seq - 1}"
        key = keys.get(e["key_id"])
        if key is None:
            return f"seq {seq}: no key for epoch {e['key_id']}"
        m = mac(key, want_prev, canonical(e))
        if not hmac.compare_digest(m, bytes.fromhex(e["mac"])):
            return f"seq {seq}: mac mismatch"
        prev, expected_seq = m, seq + 1
    return "ok"


def selftest() -> None:
    e: dict[str, Any] = {
        "tenant_id": "t1",
        "seq": 1,
        "event_id": "6f1c2d7e-0000-4000-8000-000000000001",
        "occurred_at": "2026-11-22T20:51:37.123456Z",
        "recorded_at": "2026-11-22T20:51:37.200000Z",
        "actor_type": "user",
        "actor_id": "u1",
        "action": "login.ok",
        "target_type": "session",
        "target_id": "s1",
        "ip": "127.0.0.1",
        "user_agent": None,
        "trace_id": None,
        "payload_canonical": '{"a":1}',
        "key_id": 1,
    }
    print("genesis(t1) =", genesis("t1").hex())
    print("mac         =", mac(b"\x42" * 32, genesis("t1"), canonical(e)).hex())


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["--selftest"]:
        selftest()
        sys.exit(0)
    keys: dict[int, bytes] = {}
    files: list[str] = []
    while args:
        a = args.pop(0)
        if a == "--key-hex":
            epoch, hx = args.pop(0).split("=", 1)
            keys[int(epoch)] = bytes.fromhex(hx)
        else:
            files.append(a)
    if len(files) != 1:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    with open(files[0]) as f:
        result = verify(f, keys)
    print(result)
    sys.exit(0 if result == "ok" else 1)
