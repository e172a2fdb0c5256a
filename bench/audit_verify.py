"""Benchmark 7: ``apikeys audit --verify --public-key`` over 1,000,000 entries, in constant memory
(target: under 60 s here).

The log is written the way the store writes it (the real schema and triggers, every entry hashed
and chained, a signed checkpoint per transaction), straight on a raw SQLite connection so that
building it does not take an hour. ``--per-checkpoint N`` entries share a transaction (1: every
entry is its own action with its own checkpoint, the worst case for verification; the default).
The whole command runs as a child process; its wall time and peak RSS are reported, for a log of
100,000 entries and then 1,000,000, to show that memory does not grow with the log.

    .venv/bin/python -m bench.audit_verify [--entries 1000000] [--per-checkpoint 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from storage import checkpoints, open_store
from storage.audit import canonical_json, entry_hash

from .common import ROOT, database, machine

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def build(url: str, entries: int, per_checkpoint: int, signer: checkpoints.Signer) -> None:
    open_store(url).close()  # the real schema, triggers included
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    prev, cp_prev = "0" * 64, checkpoints.GENESIS
    entry_id = 0
    conn.execute("BEGIN")
    while entry_id < entries:
        at = T0 + timedelta(seconds=entry_id)
        stored_at = at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        batch = []
        for _ in range(min(per_checkpoint, entries - entry_id)):
            entry_id += 1
            details = canonical_json({"name": f"svc-{entry_id}", "key": "apk_…a1b2", "owner": "payments",
                                      "reason": "rotation", "channel_id": "C0INCIDENT"})
            h = entry_hash(id=entry_id, at=at, actor="UADMIN001", action="key.revoked", key_id=None,
                           details=details, prev_hash=prev)
            batch.append((entry_id, stored_at, "UADMIN001", "key.revoked", None, details, prev, h))
            prev = h
        conn.executemany("INSERT INTO audit_events (id, at, actor, action, key_id, details, prev_hash, hash) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
        conn.execute("UPDATE audit_head SET last_id = ?, last_hash = ? WHERE id = 1", (entry_id, prev))
        fields = dict(entry_id=entry_id, head_hash=prev, at=at, public_key=signer.public_raw, prev_hash=cp_prev)
        msg = checkpoints.message(**fields)
        signature = signer.sign(msg)
        cp_hash = checkpoints.checkpoint_hash(msg, signature)
        conn.execute("INSERT INTO audit_checkpoints (entry_id, head_hash, at, public_key, prev_hash, signature, hash) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", (entry_id, prev, stored_at, signer.public_raw, cp_prev, signature,
                                                      cp_hash))
        cp_prev = cp_hash
        if entry_id % 50_000 < per_checkpoint:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
    conn.execute("COMMIT")
    conn.close()


def timed_verify(url: str, public_pem: str) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB, last output line) of the whole command in a child process."""
    key_file = ROOT / ".bench-public.pem"
    key_file.write_text(public_pem)
    env = dict(os.environ, DATABASE_URL=url)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "audit", "--verify", "--public-key", str(key_file)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    key_file.unlink()
    assert proc.returncode == 0, output
    return seconds, usage.ru_maxrss / 1024, output.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--per-checkpoint", type=int, default=1)
    args = parser.parse_args()
    private, public = checkpoints.generate()
    signer = checkpoints.load_signer(private)
    results = {}
    for entries in (args.entries // 10, args.entries):
        url = database(f"audit-{entries}.db")
        start = time.perf_counter()
        build(url, entries, args.per_checkpoint, signer)
        built = time.perf_counter() - start
        seconds, peak, said = timed_verify(url, public)
        results[entries] = {"build_s": round(built, 1), "verify_s": round(seconds, 1), "peak_rss_mib": round(peak, 1),
                            "entries_per_s": round(entries / seconds), "said": said}
        print(json.dumps({"entries": entries, **results[entries]}), flush=True)
    print(json.dumps({"machine": machine(), "per_checkpoint": args.per_checkpoint, "results": results}, indent=2))


if __name__ == "__main__":
    main()
