"""The tables held against the signed log, and the guards held against the schema.

The audit log is the truth: a row that skipped it (a key minted with SQL, an admin granted with SQL)
or that contradicts it (a revoked key made valid again) was written by someone other than apikeys.
``table_problems`` names each such row and the entry it contradicts (``apikeys audit --verify`` and
the server's self-check); ``restore_revocations`` revokes again, from the log's own entry, every key
the log says was revoked but the table says is not; ``trigger_problems`` names every permanence
trigger that is missing or disabled (``apikeys db status`` and the self-check).

None of this prevents a database owner from doing those things (least privilege on PostgreSQL does,
``apikeys db grant``); it detects them, and undoes the one that matters most.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Text, and_, exists, func, or_, select, text, type_coerce, update

from .audit import Action, AuditLog, EventInput, _stored_time
from .db import Database
from .errors import CorruptEntry
from .keyformat import mask
from .models import Admin, ApiKey, AuditEvent
from .timeutil import iso

# Every trigger the migrations create, by table (tests/test_integrity.py holds these to a fresh database).
TRIGGERS = {
    "sqlite": {
        "api_keys": ("api_keys_digest_immutable", "api_keys_id_immutable", "api_keys_insert_new_only",
                     "api_keys_never_deleted", "api_keys_never_replaced", "api_keys_revocation_permanent"),
        "api_tokens": ("api_tokens_immutable", "api_tokens_insert_new_only", "api_tokens_never_deleted",
                       "api_tokens_never_replaced", "api_tokens_revocation_permanent"),
        "audit_checkpoints": ("audit_checkpoints_append_only_delete", "audit_checkpoints_append_only_update",
                              "audit_checkpoints_at_the_head"),
        "audit_events": ("audit_events_append_only_delete", "audit_events_append_only_insert",
                         "audit_events_append_only_update"),
        "audit_head": ("audit_head_forward_only", "audit_head_never_deleted"),
    },
    "postgresql": {
        "api_keys": ("api_keys_guard", "api_keys_insert_new_only", "api_keys_never_truncated"),
        "api_tokens": ("api_tokens_guard", "api_tokens_never_truncated"),
        "audit_checkpoints": ("audit_checkpoints_append_only", "audit_checkpoints_at_the_head",
                              "audit_checkpoints_never_truncated"),
        "audit_events": ("audit_events_append_only", "audit_events_append_only_insert", "audit_events_never_truncated"),
        "audit_head": ("audit_head_forward_only", "audit_head_never_truncated"),
    },
}
REVOKED = (Action.KEY_REVOKED.value, Action.KEY_REVOCATION_RESTORED.value)
SELF_CHECK_ACTOR = "apikeys-self-check"


@dataclass(frozen=True)
class Problem:
    """One row that disagrees with the log (``subject``: ``key <id>`` or ``admin <user>``)."""

    subject: str
    problem: str
    entry_id: int | None = None
    kind: str = "table"

    def __str__(self) -> str:
        where = f" (audit entry {self.entry_id})" if self.entry_id is not None else ""
        return f"{self.subject}: {self.problem}{where}"


def trigger_count(db: Database) -> int:
    return sum(len(names) for names in TRIGGERS.get(db.dialect, {}).values())


def _normal(sql: str) -> str:
    return " ".join((sql or "").split())


@functools.lru_cache(maxsize=1)
def canonical_sqlite_triggers() -> dict[str, str]:
    """Each SQLite trigger's SQL exactly as the migrations create it (from a scratch database
    migrated once per process): a trigger dropped and recreated weaker is told from the real one."""
    from sqlalchemy import create_engine

    from .alembic_config import alembic_config

    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{Path(scratch) / 'scratch.db'}")
        try:
            with engine.begin() as conn:
                from alembic import command

                command.upgrade(alembic_config(conn), "head")
                return {name: sql for name, sql in conn.execute(text(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"))}
        finally:
            engine.dispose()


_TG_ROW, _TG_BEFORE, _TG_EVENTS = 1, 2, {"INSERT": 4, "DELETE": 8, "UPDATE": 16, "TRUNCATE": 32}


def _expected_tgtype(statement: str) -> int:
    """PostgreSQL's ``tgtype`` bits for a CREATE TRIGGER statement of the migrations."""
    head = " ".join(statement.split()).upper()
    events = " " + head.split(" ON ")[0].split(None, 3)[3]  # after CREATE TRIGGER <name>
    bits = _TG_BEFORE if " BEFORE " in f"{events} " else 0
    bits |= _TG_ROW if "FOR EACH ROW" in head else 0
    for event, bit in _TG_EVENTS.items():
        if f" {event}" in events:
            bits |= bit
    return bits


def _function_body(statement: str) -> str:
    return _normal(statement.split("$$")[1])


def _found_triggers(conn, dialect: str, tables: list[str]) -> dict[tuple[str, str], str]:
    """``(table, trigger) -> state``: on PostgreSQL ``tgenabled``, or ``altered`` when the trigger calls
    another function, fires on other events, has a WHEN condition, or its function's body is not the
    migrations' (a guard replaced by ``RETURN NEW``); SQLite's SQL text."""
    if dialect == "postgresql":
        functions, creates = _postgres_definitions()
        rows = conn.execute(text(
            "SELECT c.relname, t.tgname, t.tgenabled, t.tgtype, p.proname, p.prosrc, t.tgqual IS NULL "
            "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE NOT t.tgisinternal AND c.relname = ANY(:tables) AND pg_table_is_visible(c.oid)"),
            {"tables": tables}).all()
        found = {}
        for table, name, enabled, tgtype, function, source, no_condition in rows:
            expected = creates.get(name)
            altered = expected is not None and (
                tgtype != _expected_tgtype(expected) or not no_condition
                or f"FUNCTION {function}(" not in " ".join(expected.split())
                or (function in functions and _normal(source) != _function_body(functions[function])))
            found[(table, name)] = "altered" if altered else enabled
        return found
    return {(table, name): sql for table, name, sql in conn.execute(text(
        "SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'trigger'"))}


def _problems(dialect: str, found: dict[tuple[str, str], str]) -> list[Problem]:
    problems = []
    canonical = canonical_sqlite_triggers() if dialect == "sqlite" else {}
    for table, names in TRIGGERS.get(dialect, {}).items():
        for name in names:
            state = found.get((table, name))
            subject = f"trigger {name} on {table}"
            if state is None:
                problems.append(Problem(subject, "missing (dropped): the table is not guarded", kind="trigger"))
            elif dialect == "postgresql" and state == "altered":
                problems.append(Problem(subject, "altered (its events, condition or function are not what the "
                                        "migrations create): the table may not be guarded", kind="trigger"))
            elif dialect == "postgresql" and state not in ("O", "A"):
                problems.append(Problem(subject, "disabled (ALTER TABLE … DISABLE TRIGGER): the table is not guarded",
                                        kind="trigger"))
            elif dialect == "sqlite" and name in canonical and _normal(state) != _normal(canonical[name]):
                problems.append(Problem(subject, "altered (its SQL is not what the migrations create): the table may "
                                        "not be guarded", kind="trigger"))
    return problems


def trigger_problems(db: Database) -> list[Problem]:
    """Every permanence trigger that is missing, present but disabled (PostgreSQL's ``DISABLE
    TRIGGER``, or set to fire only under replication) or, on SQLite, recreated with other SQL."""
    with db.read() as session:
        found = _found_triggers(session, db.dialect, list(TRIGGERS.get(db.dialect, {})))
    return _problems(db.dialect, found)


@functools.lru_cache(maxsize=1)
def _postgres_definitions() -> tuple[dict[str, str], dict[str, str]]:
    """``({function: CREATE OR REPLACE FUNCTION …}, {trigger: CREATE TRIGGER …})``, newest of each."""
    functions: dict[str, str] = {}
    for statement in _postgres_statements()[0]:
        functions[re.search(r"CREATE OR REPLACE FUNCTION (\w+)", statement).group(1)] = statement
    return functions, _postgres_statements()[1]


@functools.lru_cache(maxsize=1)
def _postgres_statements() -> tuple[list[str], dict[str, str]]:
    """From the migration scripts, in order: the newest ``CREATE OR REPLACE FUNCTION`` of each
    function and the newest ``CREATE TRIGGER`` of each trigger (what a fresh database ends up with)."""
    functions: dict[str, str] = {}
    triggers: dict[str, str] = {}
    versions = Path(__file__).resolve().parent / "migrations" / "versions"
    for path in sorted(versions.glob("0*.py")):
        spec = importlib.util.spec_from_file_location(f"_apikeys_migration_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for attribute, value in vars(module).items():
            if "POSTGRES" not in attribute or not isinstance(value, list):
                continue
            for statement in value:
                if match := re.search(r"CREATE OR REPLACE FUNCTION (\w+)", statement):
                    functions[match.group(1)] = statement
                elif match := re.search(r"CREATE TRIGGER (\w+)", statement):
                    triggers[match.group(1)] = statement
    return list(functions.values()), triggers


def repair_triggers(conn, dialect: str) -> list[str]:
    """Inside a migration's transaction, as the owning role: put back every permanence trigger that is
    missing, disabled or (SQLite) altered, as the migrations made it. Returns the triggers repaired."""
    tables = list(TRIGGERS.get(dialect, {}))
    problems = _problems(dialect, _found_triggers(conn, dialect, tables))
    if not problems:
        return []
    repaired = []
    if dialect == "sqlite":
        canonical = canonical_sqlite_triggers()
        for problem in problems:
            name = problem.subject.split()[1]
            conn.execute(text(f'DROP TRIGGER IF EXISTS "{name}"'))
            conn.execute(text(canonical[name]))
            repaired.append(name)
        return repaired
    functions, creates = _postgres_statements()
    for statement in functions:  # a function body replaced by a weaker one is put back too
        conn.execute(text(statement))
    for problem in problems:
        name, table = problem.subject.split()[1], problem.subject.split()[3]
        if "disabled" in problem.problem:
            conn.execute(text(f'ALTER TABLE "{table}" ENABLE TRIGGER "{name}"'))
        else:
            conn.execute(text(f'DROP TRIGGER IF EXISTS "{name}" ON "{table}"'))
            conn.execute(text(creates[name]))
        repaired.append(name)
    return repaired


def _details(text_value: str) -> dict:
    try:
        value = json.loads(text_value)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


_REASONS = {"compromised", "rotation", "decommissioned", "other"}


def _vouched(db: Database, entry_id: int) -> bool:
    """Whether a signed checkpoint vouches for the entry (its own transaction's range; a version 1
    checkpoint vouches for all since the one before). A log never signed vouches for nothing and is
    trusted as it is."""
    from .models import AuditCheckpoint

    with db.read() as session:
        if session.execute(select(AuditCheckpoint.entry_id).limit(1)).first() is None:
            return True
        cp = session.execute(select(AuditCheckpoint.entry_id, AuditCheckpoint.first_entry_id)
                             .where(AuditCheckpoint.entry_id >= entry_id)
                             .order_by(AuditCheckpoint.entry_id).limit(1)).first()
    return cp is not None and (cp[1] is None or cp[1] <= entry_id)


def unrevoked(db: Database, *, limit: int = 1000) -> list[tuple[int, str, datetime, str, dict]]:
    """Keys the log says were revoked that the table says are not: ``(entry id, key id, revoked at,
    actor, details)`` of their ``key.revoked`` entries."""
    with db.read() as session:
        rows = session.execute(
            select(AuditEvent.id, AuditEvent.key_id, type_coerce(AuditEvent.at, Text).label("at"),
                   AuditEvent.actor, AuditEvent.details)
            .join(ApiKey, ApiKey.id == AuditEvent.key_id)
            .where(AuditEvent.action == Action.KEY_REVOKED.value, ApiKey.revoked_at.is_(None))
            .order_by(AuditEvent.id).limit(limit)
        ).all()
    found = []
    for entry_id, key_id, at, actor, details in rows:
        try:
            found.append((entry_id, key_id, _stored_time(entry_id, at), actor, _details(details)))
        except CorruptEntry:
            continue  # a time that does not parse: the walk of the log names that entry
    return found


def restore_revocations(db: Database, audit: AuditLog) -> list[tuple[str, int]]:
    """Revoke again, as the log's entry says (its time, actor, reason and note), every key found
    un-revoked; one ``key.revocation_restored`` entry each (posted to the audit channel). Returns
    ``(key id, entry id)`` of each key restored."""
    restored = []
    for entry_id, key_id, at, actor, details in unrevoked(db):
        if not _vouched(db, entry_id):
            continue  # an entry apikeys did not write revokes nothing (the walk names it)
        reason = details.get("reason")
        note = details.get("note")
        with db.write() as session:
            changed = session.execute(
                update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=at, revoked_by=str(actor)[:200],
                        revoke_reason=reason if reason in _REASONS else None,
                        revoke_note=str(note)[:1000] if isinstance(note, str) else None)
            ).rowcount
            if not changed:
                continue
            key = session.get(ApiKey, key_id)
            audit.append(session, EventInput(
                actor=SELF_CHECK_ACTOR, action=Action.KEY_REVOCATION_RESTORED, key_id=key_id,
                details={"revoked_at": iso(at), "entry": entry_id, "name": key.name, "owner": key.owner,
                         "key": key.masked,
                         "problem": f"key {key_id} ({key.masked}) was valid again although audit entry {entry_id} "
                                    "revoked it: someone changed the table outside apikeys; revoked again"}))
        restored.append((key_id, entry_id))
    return restored


def table_problems(db: Database, *, limit: int = 20, every_key: bool = True) -> list[Problem]:
    """Rows that skipped or contradict the log, at most ``limit`` of each kind, oldest first.
    ``every_key=False``: the keys are held against their ``key.created`` entries one by one only when
    the two counts differ (two index scans instead of an anti-join over every key: 0.1 s instead of
    1.1 s at a million keys). A key minted with SQL makes them differ; one minted with a forged entry
    beside it is the forged entry's finding (not written by apikeys)."""
    keys = _keys_without_creation(db, limit) if every_key or _key_counts_differ(db) else ()
    return [*keys, *_revocations_not_in_table(db, limit), *_admins_without_grant(db, limit),
            *_tokens_without_creation(db, limit)]


def _key_counts_differ(db: Database) -> bool:
    with db.read() as session:
        keys = session.execute(select(func.count()).select_from(ApiKey)).scalar()
        created = session.execute(select(func.count()).select_from(AuditEvent)
                                  .where(AuditEvent.action == Action.KEY_CREATED.value)).scalar()
    return keys != created


def _uncreated(db: Database, model, action: Action, limit: int) -> list[tuple[str, str]]:
    """The rows of ``model`` (a key or a token) with no ``action`` entry naming them: ``(id, masked)``."""
    created = exists().where(AuditEvent.key_id == model.id, AuditEvent.action == action.value)
    with db.read() as session:
        rows = session.execute(select(model.id, model.prefix, model.last4).where(~created)
                               .order_by(model.id).limit(limit)).all()
    return [(row_id, mask(prefix, last4)) for row_id, prefix, last4 in rows]


def _tokens_without_creation(db: Database, limit: int) -> Iterator[Problem]:
    """An admin token inserted with SQL: refused by every route already (``TokenService.authenticate``
    asks for its entry), and named here so that someone finds out who inserted it."""
    from .tokens import ApiToken

    for token_id, masked in _uncreated(db, ApiToken, Action.TOKEN_CREATED, limit):
        yield Problem(f"token {token_id} ({masked})",
                      "has no token.created entry in the audit log: the row was inserted outside apikeys (the "
                      f"management API refuses it; 'apikeys tokens revoke {token_id} --actor WHO' ends it)")


def _keys_without_creation(db: Database, limit: int) -> Iterator[Problem]:
    for key_id, masked in _uncreated(db, ApiKey, Action.KEY_CREATED, limit):
        yield Problem(f"key {key_id} ({masked})",
                      "has no key.created entry in the audit log: the row was inserted outside apikeys, and the key "
                      f"verifies until it is revoked ('apikeys revoke {key_id} --actor WHO --reason compromised')")


def _revocations_not_in_table(db: Database, limit: int) -> Iterator[Problem]:
    with db.read() as session:
        rows = session.execute(
            select(AuditEvent.id, AuditEvent.key_id, type_coerce(AuditEvent.at, Text).label("at"),
                   ApiKey.id.label("row"), type_coerce(ApiKey.revoked_at, Text).label("revoked_at"))
            .outerjoin(ApiKey, ApiKey.id == AuditEvent.key_id)
            .where(AuditEvent.action == Action.KEY_REVOKED.value,
                   or_(ApiKey.id.is_(None), ApiKey.revoked_at.is_(None),
                       and_(ApiKey.revoked_at.is_not(None), ApiKey.revoked_at != AuditEvent.at)))
            .order_by(AuditEvent.id).limit(limit)
        ).all()
    for entry_id, key_id, at, row, revoked_at in rows:
        when = iso(_stored_time(entry_id, at))
        if row is None:
            yield Problem(f"key {key_id}", f"the log says it was revoked at {when}, but the table has no such key",
                          entry_id)
        elif revoked_at is None:
            yield Problem(f"key {key_id}", f"the log says it was revoked at {when}, but the table says it is not "
                                           "revoked: a revocation was undone outside apikeys", entry_id)
        else:
            yield Problem(f"key {key_id}", f"the log says it was revoked at {when}, but the table says "
                                           f"{iso(_stored_time(entry_id, revoked_at))}: the row was changed outside "
                                           "apikeys", entry_id)


def _admins_without_grant(db: Database, limit: int) -> Iterator[Problem]:
    """Every stored admin needs an ``admin.added`` entry not followed by an ``admin.removed``."""
    last: dict[str, tuple[int, str]] = {}
    with db.read() as session:
        for entry_id, action, details in session.execute(
                select(AuditEvent.id, AuditEvent.action, AuditEvent.details)
                .where(AuditEvent.action.in_((Action.ADMIN_ADDED.value, Action.ADMIN_REMOVED.value)))
                .order_by(AuditEvent.id)):
            user = _details(details).get("user_id")
            if isinstance(user, str):
                last[user] = (entry_id, action)
        admins = list(session.scalars(select(Admin.user_id).order_by(Admin.user_id)))
    found = 0
    for user in admins:
        entry = last.get(user)
        if entry is None:
            yield Problem(f"admin {user}", "holds the admin role with no admin.added entry in the audit log: the row "
                                           "was inserted outside apikeys")
        elif entry[1] == Action.ADMIN_REMOVED.value:
            yield Problem(f"admin {user}", "holds the admin role although the log removed it", entry[0])
        else:
            continue
        found += 1
        if found >= limit:
            return
