"""The attacker's tools against a copy of the audit tables: the database administrator who drops
the guards, rewrites rows and recomputes the chain with this project's own code."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text

from storage import Store, checkpoints
from storage.audit import entry_hash

TABLES = ("audit_events", "audit_head", "audit_checkpoints")


def drop_guards(store: Store) -> None:
    """Every trigger on the audit tables goes: the attacker is the database administrator."""
    with store.db.write() as session:
        if store.db.dialect == "postgresql":
            rows = session.execute(text(
                "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE NOT t.tgisinternal AND c.relname = ANY(:tables)"), {"tables": list(TABLES)}).all()
            for name, table in rows:
                session.execute(text(f'DROP TRIGGER "{name}" ON "{table}"'))
        else:
            names = session.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN "
                                         "('audit_events', 'audit_head', 'audit_checkpoints')")).scalars().all()
            for name in names:
                session.execute(text(f'DROP TRIGGER "{name}"'))


def rows(store: Store, table: str) -> list[dict]:
    order = "entry_id" if table == "audit_checkpoints" else "id"
    with store.db.read() as session:
        return [dict(r._mapping) for r in session.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))]


def replace_tables(store: Store, snapshot: dict[str, list[dict]]) -> None:
    """Empty the audit tables and write ``snapshot``'s rows instead."""
    drop_guards(store)
    with store.db.write() as session:
        for table in TABLES:
            session.execute(text(f"DELETE FROM {table}"))
        for table in TABLES:
            for row in snapshot[table]:
                columns = ", ".join(row)
                session.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(':' + c for c in row)})"), row)


def snapshot(store: Store) -> dict[str, list[dict]]:
    return {table: rows(store, table) for table in TABLES}


def recompute_chain(store: Store, entries: list[dict]) -> list[dict]:
    """The entries with every hash and link recomputed, and the head moved to the last."""
    prev = "0" * 64
    fixed = []
    for entry in entries:
        at = entry["at"] if not isinstance(entry["at"], str) else None
        entry = dict(entry, prev_hash=prev)
        entry["hash"] = entry_hash(id=entry["id"], at=aware(at or entry["at"]), actor=entry["actor"],
                                   action=entry["action"], key_id=entry["key_id"], details=entry["details"],
                                   prev_hash=prev)
        prev = entry["hash"]
        fixed.append(entry)
    return fixed


def aware(value):
    from datetime import datetime, timezone

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def resigned(entries: list[dict], old: list[dict], signer: checkpoints.Signer, *,
             claim_key: str | None = None) -> list[dict]:
    """Checkpoints at the same positions, signed over the (recomputed) entries by ``signer``.
    ``claim_key``: write that public key in the rows instead of the signer's own."""
    by_id = {e["id"]: e for e in entries}
    prev, out = checkpoints.GENESIS, []
    for cp in old:
        if cp["entry_id"] not in by_id:
            continue
        fields = dict(entry_id=cp["entry_id"], head_hash=by_id[cp["entry_id"]]["hash"], at=aware(cp["at"]),
                      public_key=claim_key or signer.public_raw, prev_hash=prev, first_entry_id=cp.get("first_entry_id"))
        msg = checkpoints.message(**fields)
        signature = signer.sign(msg)
        prev = checkpoints.checkpoint_hash(msg, signature)
        out.append(dict(cp, **{k: v for k, v in fields.items() if k != "at"}, signature=signature, hash=prev))
    return out


def forged(inst: Any, *, edit_entry: int | None = None, keep_until: int | None = None,
           signer: checkpoints.Signer | None = None, claim_key: str | None = None) -> dict[str, list[dict]]:
    """The log as an attacker rewrites it: entry ``edit_entry`` changed, everything after
    ``keep_until`` dropped, the chain recomputed, the head moved; the checkpoints re-signed with
    ``signer`` when given, else the old ones kept (those still on a kept entry)."""
    snap = snapshot(inst.store)
    entries = snap["audit_events"]
    if keep_until is not None:
        entries = [e for e in entries if e["id"] <= keep_until]
    if edit_entry is not None:
        entries = [dict(e, details=json.dumps({"note": "nothing happened here"})) if e["id"] == edit_entry else e
                   for e in entries]
    entries = recompute_chain(inst.store, entries)
    kept = [cp for cp in snap["audit_checkpoints"] if cp["entry_id"] <= entries[-1]["id"]]
    cps = resigned(entries, kept, signer, claim_key=claim_key) if signer else kept
    head = [dict(snap["audit_head"][0], last_id=entries[-1]["id"], last_hash=entries[-1]["hash"])]
    return {"audit_events": entries, "audit_head": head, "audit_checkpoints": cps}


def insert_at_head(store: Store, *, action: str = "admin.added", actor: str = "UADMIN001",
                   key_id: str | None = None, details: dict | None = None) -> int:
    """What a database user can do with plain SQL and no trigger dropped: an entry at head+1, hashed
    and linked exactly as apikeys would, and the head row moved onto it. Returns its id."""
    from datetime import datetime, timezone

    with store.db.write() as session:
        last_id, last_hash = session.execute(text("SELECT last_id, last_hash FROM audit_head WHERE id = 1")).one()
        at = datetime.now(timezone.utc).replace(microsecond=0)
        body = json.dumps(details if details is not None else {"user_id": "UEVIL0001"}, sort_keys=True,
                          separators=(",", ":"))
        entry_id = last_id + 1
        h = entry_hash(id=entry_id, at=at, actor=actor, action=action, key_id=key_id, details=body, prev_hash=last_hash)
        stored_at = at if store.db.dialect == "postgresql" else at.replace(tzinfo=None).isoformat(sep=" ")
        session.execute(text("INSERT INTO audit_events (id, at, actor, action, key_id, details, prev_hash, hash) "
                             "VALUES (:id, :at, :actor, :action, :key_id, :details, :prev, :hash)"),
                        {"id": entry_id, "at": stored_at, "actor": actor, "action": action, "key_id": key_id,
                         "details": body, "prev": last_hash, "hash": h})
        session.execute(text("UPDATE audit_head SET last_id = :id, last_hash = :hash WHERE id = 1"),
                        {"id": entry_id, "hash": h})
    return entry_id
