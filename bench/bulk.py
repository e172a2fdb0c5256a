"""Benchmarks 3 and 4: ``apikeys create --count 50000`` (target >= 10,000 keys/s, the whole command, one transaction)
and revoking 10,000 keys of one owner (target < 2 s, one transaction, every event recorded).

    .venv/bin/python -m bench.bulk
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from storage import open_store
from storage.keys import encode_cursor

from .common import ROOT, database, machine

COUNT = 50_000


def _sqlite_floor(created: list[dict]) -> float:
    """The same key rows written by plain sqlite3: one executemany in one transaction, into a fresh
    database with the same schema (its guard triggers included). No secrets made, no audit entries."""
    import sqlite3
    from datetime import datetime

    from storage.keyformat import digest

    floor_url = database("bulk-floor.db")
    open_store(floor_url).close()
    rows = [(c["id"], c["name"], c["owner"], c["prefix"], c["key"][-4:], digest(c["key"]),
             datetime.fromisoformat(c["created_at"].replace("Z", "+00:00")).isoformat(" "), "bench", None)
            for c in created]
    conn = sqlite3.connect(floor_url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO api_keys (id, name, owner, prefix, last4, digest, created_at, created_by, expires_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def main() -> None:
    url = database("bulk.db")
    open_store(url).close()  # schema first, so the timing is the command's own work
    env = dict(os.environ, DATABASE_URL=url)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "bot.cli", "create", "--name", "load", "--owner", "bulk",
                          "--count", str(COUNT)], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    create_s = time.perf_counter() - start
    created = json.loads(out.stdout)
    assert len(created) == COUNT

    store = open_store(url)
    store.keys.create(name="victim", owner="breached", actor="bench", count=10_000)
    newest = store.keys.list_keys(owner="breached", limit=1).items[0]
    events_before = store.audit.oldest_first(limit=1)[0].id
    start = time.perf_counter()
    revoked = store.keys.revoke_owner("breached", up_to=encode_cursor(newest), via="cli", actor="UADMIN001", reason="compromised")
    revoke_s = time.perf_counter() - start
    events = store.audit.oldest_first(limit=1)[0].id - events_before
    assert len(revoked) == 10_000 and events == 10_000
    assert store.audit.verify() is None
    store.close()

    floor_s = _sqlite_floor(created) if url.startswith("sqlite") else None

    print(f"machine: {machine()}; database {url.split(':')[0]}")
    print(f"apikeys create --count {COUNT}: {create_s:.2f} s for the whole command = {COUNT / create_s:,.0f} keys/s")
    if floor_s is not None:
        print(f"the floor, the same {COUNT:,} rows by sqlite3 executemany in one transaction (triggers on): "
              f"{floor_s:.2f} s; the command is {floor_s / create_s:.2f}x of it")
    print(f"revoke-owner of 10,000 keys:   {revoke_s:.2f} s, {events:,} key.revoked events, chain verified")
    print(json.dumps({"create_s": create_s, "create_per_s": COUNT / create_s, "revoke_10k_s": revoke_s}))


if __name__ == "__main__":
    main()
