#!/usr/bin/env python3
"""Verify an exported apikeys audit log offline, with nothing but the installation's public key.

    apikeys audit export > audit.jsonl            # on a machine that reaches the database
    python3 verify_audit_export.py audit.jsonl public.pem
    apikeys audit export --since 1000 > tail.jsonl
    python3 verify_audit_export.py tail.jsonl public.pem --starts-at 1001

Needs Python 3.9+ and the ``cryptography`` package; it does not use apikeys' own code. It checks
that every entry's hash is the SHA-256 of its canonical JSON, that each entry links to the one
before it, that every checkpoint names the hash of the entry it sits on, links to the checkpoint
before it and is signed by the public key (Ed25519), and that every entry lies in the range of
entries some checkpoint vouches for (``first_entry_id`` to ``entry_id``: the entries apikeys wrote in
that transaction; an entry outside every range was not written by apikeys).

An export must start at entry 1 unless ``--starts-at ID`` says where it starts (an export made with
``--since``): then its first entry's link is taken as given. The OK line names the range verified
and the head it ends at (``#<id> · <first 12 hex of its hash>``, as the audit channel's posts show
it): compare that head with the newest post in the audit channel, since an export cut short at a
checkpoint verifies as far as it goes. Exit 0 and one OK line when all of that holds; exit 1 naming
the first line that does not; exit 2 for bad arguments.
"""

import argparse
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
    body = {k: cp[k] for k in ("entry_id", "head_hash", "at", "public_key", "prev_hash")}
    if cp.get("first_entry_id") is None:  # version 1 (apikeys release 4): vouched for all since the last
        return canonical({"v": "apikeys-audit-checkpoint/1", **body})
    return canonical({"v": "apikeys-audit-checkpoint/2", "first_entry_id": cp["first_entry_id"], **body})


def verify(lines, public_key: Ed25519PublicKey, starts_at: int = 1) -> str:
    raw = base64.b64encode(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
    prev_entry = None
    last_checkpoint = None    # (entry_id, hash) of the newest checkpoint verified
    vouched_through = starts_at - 1  # every entry up to here lies in a checkpoint's range
    first_id = None
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
            entry_id = entry["id"]
            computed = entry_hash(entry)
        except (ValueError, KeyError, TypeError):
            return f"BROKEN: line {number}: not an audit entry as 'apikeys audit export' writes it"
        where = f"line {number} (audit entry {entry_id})"
        if prev_entry is None:
            first_id = entry_id
            if entry_id != starts_at:
                hint = "" if starts_at != 1 else " (an export made with --since: pass --starts-at ID)"
                return f"BROKEN: {where}: the export starts at entry {entry_id}, not {starts_at}{hint}"
            if entry_id == 1 and entry["prev_hash"] != "0" * 64:
                return f"BROKEN: {where}: the first entry does not start the chain"
        elif entry_id != prev_entry["id"] + 1 or entry["prev_hash"] != prev_entry["hash"]:
            return f"BROKEN: {where}: does not follow the entry before it (missing, reordered or edited)"
        if computed != entry["hash"]:
            return f"BROKEN: {where}: content does not match its hash (edited)"
        cp = entry.get("checkpoint")
        if cp is not None and cp.get("entry_id") == entry_id:
            try:
                msg = checkpoint_message(cp)
            except (KeyError, TypeError):
                return f"BROKEN: {where}: its checkpoint is not one apikeys writes"
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
            first = cp.get("first_entry_id")
            if first is None:
                first = last_checkpoint[0] + 1 if last_checkpoint else starts_at
            if first > vouched_through + 1 and not (last_checkpoint is None and first <= starts_at):
                return (f"BROKEN: audit entry {vouched_through + 1}: not written by apikeys (no checkpoint "
                        "vouches for it)")
            vouched_through = entry_id
            last_checkpoint = (entry_id, cp["hash"])
        prev_entry = entry
    if prev_entry is None:
        return "BROKEN: the export is empty"
    if last_checkpoint is None or last_checkpoint[0] != prev_entry["id"]:
        return (f"BROKEN: entries after {last_checkpoint[0] if last_checkpoint else 'the start'} are not covered by a "
                "signed checkpoint in this export")
    return (f"OK: entries {first_id}-{prev_entry['id']} verified ({prev_entry['id'] - first_id + 1} entries), "
            f"signed by the given key; the export ends at head #{prev_entry['id']} · {prev_entry['hash'][:12]} "
            "(compare it with the audit channel's newest post).")


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="verify_audit_export.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("export", metavar="EXPORT.jsonl")
    parser.add_argument("public_key", metavar="PUBLIC_KEY.pem")
    parser.add_argument("--starts-at", type=int, default=1, metavar="ID",
                        help="the first entry's id, for an export made with --since (default 1)")
    args = parser.parse_args(argv[1:])
    if args.starts_at < 1:
        parser.error("--starts-at must be an entry id (1 or more)")
    try:
        with open(args.public_key, "rb") as handle:
            key = serialization.load_pem_public_key(handle.read())
    except (OSError, ValueError) as exc:
        print(f"verify_audit_export.py: error: cannot read the public key: {exc}", file=sys.stderr)
        return 2
    if not isinstance(key, Ed25519PublicKey):
        print("verify_audit_export.py: error: the public key is not an Ed25519 key", file=sys.stderr)
        return 2
    try:
        with open(args.export, encoding="utf-8") as lines:
            result = verify(lines, key, args.starts_at)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"verify_audit_export.py: error: cannot read the export: {exc}", file=sys.stderr)
        return 2
    print(result)
    return 0 if result.startswith("OK") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
