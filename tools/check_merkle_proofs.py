#!/usr/bin/env python3
"""An independent check of Queue's Merkle proofs, written from RFC 6962 / RFC 9162 alone.

    tools/check_merkle_proofs.py EXPORT.ndjson PROOFS.json
    tools/check_merkle_proofs.py --root SIZE EXPORT.ndjson
    tools/check_merkle_proofs.py --selftest

EXPORT.ndjson is a tenant's export (`GET /api/v1/audit/export`); each event's leaf is
SHA-256(0x00 || canonical(event)) with canonical() as in docs/audit-chain.md (taken from
tools/verify_audit_export.py), leaf index seq - 1. The roots are computed here from the leaves
with RFC 6962's MTH definition, not asked of Queue. PROOFS.json is
`{"inclusion": [{"seq", "tree_size", "hashes"}], "consistency": [{"from", "to", "hashes"}]}`
with the answers of `/api/v1/audit/proofs/inclusion` and `/consistency` (base64 hashes), and
optionally `"roots": {"SIZE": base64}`: roots the verifier trusts (a signed checkpoint's), which
the export's own must equal — without them an export rewritten whole checks against itself.
`--root SIZE` prints the root of the export's first SIZE events (base64). Each proof is checked
with RFC 9162's verification algorithms (2.1.3.2 and 2.1.4.2); prints
`ok` or the first proof that fails. Standard library only.
"""

import base64
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verify_audit_export import canonical


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 2.1: the Merkle Tree Hash of the leaf hashes."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, first_hash: bytes, second_hash: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2."""
    if first == second:
        return not proof and first_hash == second_hash
    if first == 0 or first > second or not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the first tree is a subtree of the second
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_hash and sr == second_hash


def check(export_lines: Sequence[str], proofs: dict[str, Any]) -> str:
    events = [json.loads(line) for line in export_lines if line.strip()]
    events = [e for e in events if e.get("type", "event") == "event" and "seq" in e]
    events.sort(key=lambda e: int(e["seq"]))
    leaves = [leaf_hash(canonical(e)) for e in events]
    for size, root in proofs.get("roots", {}).items():
        if int(size) > len(leaves) or mth(leaves[: int(size)]) != base64.b64decode(root):
            return f"tree of {size}: the export's root is not the trusted one"
    for p in proofs.get("inclusion", []):
        seq, size = int(p["seq"]), int(p["tree_size"])
        path = [base64.b64decode(h) for h in p["hashes"]]
        if size > len(leaves) or not verify_inclusion(seq - 1, size, leaves[seq - 1], path, mth(leaves[:size])):
            return f"inclusion of seq {seq} in {size}: does not verify"
    for p in proofs.get("consistency", []):
        first, second = int(p["from"]), int(p["to"])
        path = [base64.b64decode(h) for h in p["hashes"]]
        if second > len(leaves) or not verify_consistency(
            first, second, mth(leaves[:first]), mth(leaves[:second]), path
        ):
            return f"consistency {first} -> {second}: does not verify"
    return "ok"


def selftest() -> None:
    """RFC 9162's algorithms against proofs built here from the definitions, for every size."""
    leaves = [leaf_hash(bytes([i])) for i in range(20)]

    def path(m: int, d: Sequence[bytes]) -> list[bytes]:  # RFC 6962 2.1.1 PATH(m, D[n])
        if len(d) == 1:
            return []
        k = 1
        while k * 2 < len(d):
            k *= 2
        return [*path(m, d[:k]), mth(d[k:])] if m < k else [*path(m - k, d[k:]), mth(d[:k])]

    def subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:  # RFC 6962 2.1.2
        n = len(d)
        if m == n:
            return [] if b else [mth(d)]
        k = 1
        while k * 2 < n:
            k *= 2
        if m <= k:
            return [*subproof(m, d[:k], b), mth(d[k:])]
        return [*subproof(m - k, d[k:], False), mth(d[:k])]

    for n in range(1, 21):
        root = mth(leaves[:n])
        for m in range(n):
            assert verify_inclusion(m, n, leaves[m], path(m, leaves[:n]), root), (m, n)
            assert not verify_inclusion(m, n, leaves[(m + 1) % 20], path(m, leaves[:n]), root) or n == 1
        for m in range(1, n):
            proof = subproof(m, leaves[:n], True)
            assert verify_consistency(m, n, mth(leaves[:m]), root, proof), (m, n)
            assert not verify_consistency(m, n, leaves[0] if m > 1 else leaves[1], root, proof), (m, n)
    print("selftest ok")


def main(argv: Sequence[str]) -> int:
    if list(argv) == ["--selftest"]:
        selftest()
        return 0
    if len(argv) == 3 and argv[0] == "--root":
        lines = Path(argv[2]).read_text(encoding="utf-8").splitlines()
        events = sorted((json.loads(x) for x in lines if x.strip()), key=lambda e: int(e.get("seq", 0)))
        leaves = [leaf_hash(canonical(e)) for e in events if e.get("type", "event") == "event" and "seq" in e]
        print(base64.b64encode(mth(leaves[: int(argv[1])])).decode())
        return 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    lines = Path(argv[0]).read_text(encoding="utf-8").splitlines()
    proofs = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    verdict = check(lines, proofs)
    print(verdict)
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
