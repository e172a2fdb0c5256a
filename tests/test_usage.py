"""A check never waits for its bookkeeping: a key's last use and a revoked key's presentations are
written by a thread of their own (``storage.usage.UseRecorder``), coalesced per key, and a write
that fails is tried again for revoked keys (whose use raises the alert), never lost to a lock."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from freezegun import freeze_time
from sqlalchemy import create_engine, text

from storage import DatabaseUnavailable
from storage.usage import flush_all

from .helpers import ADMIN
from .slackworld import events

T = "2026-12-07 09:00:00"


@contextmanager
def writes_blocked(store, database_url: str):
    """Every write to the key store waits while this is open; reads go on (SQLite: another connection
    holds the write lock; PostgreSQL: a SHARE lock on api_keys, which readers do not conflict with)."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(store.db._sqlite_path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
    else:
        engine = create_engine(database_url)
        try:
            with engine.connect() as conn:
                conn.execute(text("LOCK TABLE api_keys, revoked_key_uses IN SHARE MODE"))
                yield
                conn.rollback()
        finally:
            engine.dispose()


def checked_in_time(store, secret: str) -> str:
    """The code a check answers, from a thread given ten seconds: a check that waits on a write fails."""
    answer: dict = {}
    worker = threading.Thread(target=lambda: answer.update(code=store.keys.verify(secret).code.value), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the check waited for its bookkeeping to be written"
    return answer["code"]


def test_a_valid_keys_check_answers_while_the_store_cannot_be_written_and_its_use_is_recorded_after(
        store, database_url):
    created = store.keys.create(name="svc", owner="ops", actor=ADMIN)[0]
    with freeze_time(T):
        with writes_blocked(store, database_url):
            assert checked_in_time(store, created.secret) == "VALID"
            assert store.keys.get(created.key.id).last_used_at is None  # not yet written
        assert store.keys.flush_uses()
        assert store.keys.get(created.key.id).last_used_at == datetime(2026, 12, 7, 9, tzinfo=timezone.utc)


def test_a_revoked_keys_presentations_are_coalesced_counted_and_alerted_once(store, database_url):
    created = store.keys.create(name="billing", owner="payments", actor=ADMIN)[0]
    store.keys.revoke(created.key.id, actor=ADMIN, via="cli", reason="compromised")
    with freeze_time(T) as clock:
        with writes_blocked(store, database_url):
            for _ in range(25):
                assert checked_in_time(store, created.secret) == "REVOKED"
                clock.tick(timedelta(seconds=1))
        assert store.keys.flush_uses()
    usage = store.keys.revoked_uses.get(created.key.id)
    assert usage.uses == 25
    assert usage.first_at.isoformat() == "2026-12-07T09:00:00+00:00"
    assert usage.last_at.isoformat() == "2026-12-07T09:00:24+00:00"
    [alert] = events(store, "key.used_after_revoke")
    assert alert.details["uses"] >= 1


def test_a_revoked_keys_presentation_whose_write_fails_is_kept_and_written_on_the_next_try(store, monkeypatch):
    created = store.keys.create(name="billing", owner="payments", actor=ADMIN)[0]
    store.keys.revoke(created.key.id, actor=ADMIN, via="cli", reason="compromised")
    real = store.keys.revoked_uses.record
    failures = []

    def failing_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise DatabaseUnavailable("the database is unavailable (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(store.keys.revoked_uses, "record", failing_once)
    monkeypatch.setattr(store.keys.uses, "RETRY_AFTER", 0.01)
    assert store.keys.verify(created.secret).code.value == "REVOKED"
    assert store.keys.flush_uses()
    assert failures == [1]
    assert store.keys.revoked_uses.get(created.key.id).uses == 1
    assert len(events(store, "key.used_after_revoke")) == 1


def test_the_interpreters_exit_flushes_what_every_store_was_handed(store):
    """``flush_all`` runs at exit (the CLI's ``verify`` ends right after its check)."""
    created = store.keys.create(name="svc", owner="ops", actor=ADMIN)[0]
    assert store.keys.verify(created.secret).code.value == "VALID"
    assert flush_all()
    assert store.keys.get(created.key.id).last_used_at is not None
