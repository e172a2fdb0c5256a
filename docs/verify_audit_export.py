#!/usr/bin/env python3
"""Verify an exported apikeys audit log offline, with nothing but the installation's public key.

    apikeys audit export > audit.jsonl            # on a machine that reaches the database
    python3 verify_audit_export.py audit.jsonl public.pem

Needs Python 3.9+ and the ``cryptography`` package; it does not use apikeys' own code. It checks
that every entry's hash is the SHA-256 of its canonical JSON, that each entry links to the one
before it, that every checkpoint names the hash of the entry it sits on, links to the checkpoint
before it and is signed by the public key (Ed25519). An export made with ``--since`` starts in the
middle of the chain: its first entry's link is taken as given. Exit 0 and one OK line when all of
that holds; exit 1 naming the first line that does not.
"""

import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: dict) -> str:
    fields = {k: entry[k] for k in ("id", "at", "actor", "action", "key_id", "details", "prev_hash")}
    return hashlib.sha256(canonical(fields)).hexdigest()


def checkpoint_message(cp: dict) -> bytes:
    return canonical({"v": "apikeys-audit-checkpoint/1", **{k: cp[k] for k in
                      ("entry_id", "head_hash", "at", "public_key", "prev_hash")}})


def verify(lines, public_key: Ed25519PublicKey) -> str:
    raw = base64.b64encode(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
    prev_entry = None
    hashes = {}             # entry id -> hash, for the entries since the last checkpoint checked
    checked = {}            # checkpoint hash -> True, once verified
    last_checkpoint = None  # (entry_id, hash) of the newest checkpoint verified
    count = 0
    for number, line in enumerate(lines, start=1):
        entry = json.loads(line)
        where = f"line {number} (audit entry {entry.get('id')})"
        if prev_entry is not None and (entry["id"] != prev_entry["id"] + 1 or entry["prev_hash"] != prev_entry["hash"]):
            return f"BROKEN: {where}: does not follow the entry before it (missing, reordered or edited)"
        if entry_hash(entry) != entry["hash"]:
            return f"BROKEN: {where}: content does not match its hash (edited)"
        hashes[entry["id"]] = entry["hash"]
        cp = entry.get("checkpoint")
        if cp is not None and cp["hash"] not in checked and cp["entry_id"] == entry["id"]:
            msg = checkpoint_message(cp)
            if cp["public_key"] != raw:
                return f"BROKEN: {where}: its checkpoint is signed by another key"
            try:
                public_key.verify(base64.b64decode(cp["signature"]), msg)
            except (InvalidSignature, ValueError):
                return f"BROKEN: {where}: its checkpoint's signature is invalid"
            if hashlib.sha256(msg + b"\n" + cp["signature"].encode()).hexdigest() != cp["hash"]:
                return f"BROKEN: {where}: its checkpoint was altered"
            if cp["head_hash"] != entry["hash"]:
                return f"BROKEN: {where}: the log does not match what was signed"
            if last_checkpoint is not None and cp["prev_hash"] != last_checkpoint[1]:
                return f"BROKEN: {where}: its checkpoint does not link to the one before it"
            checked[cp["hash"]] = True
            last_checkpoint = (cp["entry_id"], cp["hash"])
            hashes.clear()
        prev_entry = entry
        count += 1
    if count == 0:
        return "BROKEN: the export is empty"
    if last_checkpoint is None or last_checkpoint[0] != prev_entry["id"]:
        return (f"BROKEN: entries after {last_checkpoint[0] if last_checkpoint else 'the start'} are not covered by a "
                "signed checkpoint in this export")
    return f"OK: {count} entries verified; signed through entry {last_checkpoint[0]} by the given key."


def main(argv) -> int:
    if len(argv) != 3:
        print("usage: verify_audit_export.py EXPORT.jsonl PUBLIC_KEY.pem", file=sys.stderr)
        return 2
    with open(argv[2], "rb") as handle:
        key = serialization.load_pem_public_key(handle.read())
    with open(argv[1], encoding="utf-8") as lines:
        result = verify(lines, key)
    print(result)
    return 0 if result.startswith("OK") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
