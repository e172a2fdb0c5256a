"""Revocation and the audit log are permanent against the database's own statements.

An operator (or an attacker) with a SQL prompt tries the statements that bypass row-level
UPDATE/DELETE guards: SQLite's REPLACE conflict resolution (it deletes the old row without firing
DELETE triggers), re-inserting a revoked key as active, changing a key's id, and PostgreSQL's
TRUNCATE (which fires no row triggers). Each must be refused, and the key must keep answering
REVOKED with the audit chain intact.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from storage import VerifyCode

from .helpers import refused_by_guard

APPEND_ONLY = "the audit log is append-only: that entry already exists"


def _revoked(store):
    (created,) = store.keys.create(name="billing", owner="payments", actor="test")
    store.keys.revoke(created.key.id, via="cli", actor="alice", reason="compromised")
    return created


def _raw(store, statement: str, **params) -> None:
    with store.db.write() as session:
        session.execute(text(statement), params)


def _assert_still_revoked(store, created) -> None:
    assert store.keys.verify(created.secret).code is VerifyCode.REVOKED
    key = store.keys.get(created.key.id)
    assert key.revoked_at is not None and key.revoked_by == "alice"
    assert store.audit.verify() is None


def _columns(store, key_id: str) -> dict:
    with store.db.read() as session:
        return dict(session.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": key_id}).mappings().one())


REVIVE = ("INTO api_keys (id, name, owner, prefix, last4, digest, created_at, created_by) "
          "VALUES (:id, :name, :owner, :prefix, :last4, :digest, :created_at, :created_by)")


@pytest.mark.parametrize("verb", ["REPLACE", "INSERT OR REPLACE"])
def test_replace_cannot_bring_a_revoked_key_back(store, verb):
    if store.db.dialect != "sqlite":
        pytest.skip("REPLACE is SQLite's")
    created = _revoked(store)
    row = _columns(store, created.key.id)
    with pytest.raises(DBAPIError, match="never replaced|already exists"):
        _raw(store, f"{verb} {REVIVE}", **{k: row[k] for k in
                                            ("id", "name", "owner", "prefix", "last4", "digest", "created_at", "created_by")})
    _assert_still_revoked(store, created)


def test_a_second_row_with_a_revoked_keys_digest_is_refused(store):
    created = _revoked(store)
    row = _columns(store, created.key.id)
    verb = "INSERT OR REPLACE" if store.db.dialect == "sqlite" else "INSERT"
    with pytest.raises(DBAPIError):
        _raw(store, f"{verb} {REVIVE}", **{**{k: row[k] for k in
                                              ("name", "owner", "prefix", "last4", "digest", "created_at", "created_by")},
                                           "id": "key_" + "Q" * 17})
    _assert_still_revoked(store, created)


def test_an_insert_that_is_not_a_new_key_is_refused(store):
    """A row that arrives already revoked (or with a revocation's fields) did not come from create."""
    with pytest.raises(DBAPIError, match="new key"):
        _raw(store, "INSERT INTO api_keys (id, name, owner, prefix, last4, digest, created_at, created_by, revoked_by) "
                    "VALUES ('key_AAAAAAAAAAAAAAAAA', 'n', 'o', 'apk', 'abcd', :d, :t, 'x', 'someone')",
             d="0" * 64, t="2026-01-01 00:00:00")


def test_a_keys_id_never_changes(store):
    created = _revoked(store)
    (other,) = store.keys.create(name="other", owner="payments", actor="test")
    verb = "UPDATE OR REPLACE" if store.db.dialect == "sqlite" else "UPDATE"
    with pytest.raises(DBAPIError):
        _raw(store, f"{verb} api_keys SET id = :revoked WHERE id = :active", revoked=created.key.id, active=other.key.id)
    _assert_still_revoked(store, created)
    assert store.keys.verify(other.secret).code is VerifyCode.VALID


def test_replace_cannot_rewrite_an_audit_entry(store):
    created = _revoked(store)
    with store.db.read() as session:
        entry = dict(session.execute(text("SELECT * FROM audit_events WHERE id = 2")).mappings().one())
    verb = "INSERT OR REPLACE" if store.db.dialect == "sqlite" else "INSERT"
    with refused_by_guard(APPEND_ONLY):
        _raw(store, f"{verb} INTO audit_events (id, at, actor, action, key_id, details, prev_hash, hash) "
                    "VALUES (:id, :at, 'nobody', :action, :key_id, :details, :prev_hash, :hash)", **{
                        k: entry[k] for k in ("id", "at", "action", "key_id", "details", "prev_hash", "hash")})
    _assert_still_revoked(store, created)


def test_an_entry_below_the_head_is_refused_even_where_no_entry_has_its_id(store):
    """The guard's "at or below the head" clause on its own: id 0 conflicts with no row, so only that
    clause can refuse it (a log with a forged first entry would otherwise verify from there)."""
    created = _revoked(store)
    with refused_by_guard(APPEND_ONLY):
        _raw(store, "INSERT INTO audit_events (id, at, actor, action, key_id, details, prev_hash, hash) "
                    "VALUES (0, :at, 'nobody', 'key.created', NULL, '{}', :prev, :hash)",
             at="2026-01-01 00:00:00", prev="0" * 64, hash="f" * 64)
    _assert_still_revoked(store, created)


@pytest.mark.parametrize("table", ["api_keys", "audit_events"])
def test_truncate_is_refused(store, table):
    if store.db.dialect != "postgresql":
        pytest.skip("TRUNCATE is PostgreSQL's (SQLite's DELETE without WHERE fires the DELETE triggers)")
    created = _revoked(store)
    with pytest.raises(DBAPIError, match="never deleted|append-only"):
        _raw(store, f"TRUNCATE {table} CASCADE")
    _assert_still_revoked(store, created)


def test_upsert_cannot_unrevoke(store):
    created = _revoked(store)
    row = _columns(store, created.key.id)
    with pytest.raises(DBAPIError):
        _raw(store, f"INSERT {REVIVE} ON CONFLICT (id) DO UPDATE SET revoked_at = NULL, revoked_by = NULL",
             **{k: row[k] for k in ("id", "name", "owner", "prefix", "last4", "digest", "created_at", "created_by")})
    _assert_still_revoked(store, created)


# ======================================================================= one transaction


def _failing_append(monkeypatch):
    """The audit append writes its rows (and queues its post), then fails: what a split would survive."""
    from storage.audit import AuditLog

    original = AuditLog.append_many

    def append_then_fail(self, session, events, **kw):
        original(self, session, events, **kw)
        raise RuntimeError("audit append failed")

    monkeypatch.setattr(AuditLog, "append_many", append_then_fail)


@pytest.fixture
def notifying_store(database_url):
    from storage import open_store

    s = open_store(database_url, notify_channel="C0AUDIT")
    yield s
    s.close()


def test_a_revocation_whose_audit_entry_fails_does_not_happen(notifying_store, monkeypatch):
    store = notifying_store
    (created,) = store.keys.create(name="billing", owner="payments", actor="test")
    queued_before = store.outbox.pending()
    _failing_append(monkeypatch)
    with pytest.raises(RuntimeError):
        store.keys.revoke(created.key.id, via="cli", actor="alice", reason="compromised")
    assert store.keys.verify(created.secret).code is VerifyCode.VALID
    assert store.keys.get(created.key.id).revoked_at is None
    assert store.outbox.pending() == queued_before
    assert [e.action for e in store.audit.oldest_first()] == ["key.created"]
    monkeypatch.undo()
    assert store.keys.revoke(created.key.id, via="cli", actor="alice").revoked_now  # and it can still be revoked


def test_a_bulk_revocation_whose_audit_entries_fail_does_not_happen(notifying_store, monkeypatch):
    from storage.keys import encode_cursor

    store = notifying_store
    created = store.keys.create(name="batch", owner="payments", actor="test", count=3)
    newest = max((c.key for c in created), key=lambda k: (k.created_at, k.id))
    queued_before = store.outbox.pending()
    _failing_append(monkeypatch)
    with pytest.raises(RuntimeError):
        store.keys.revoke_owner("payments", up_to=encode_cursor(newest), via="cli", actor="alice")
    assert all(store.keys.verify(c.secret).code is VerifyCode.VALID for c in created)
    assert store.outbox.pending() == queued_before
