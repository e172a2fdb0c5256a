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


def test_one_revoked_keys_failed_write_neither_undoes_nor_counts_twice_the_others(store, monkeypatch):
    gate, first, second = store.keys.create(name="billing", owner="payments", actor=ADMIN, count=3)
    for created in (gate, first, second):
        store.keys.revoke(created.key.id, actor=ADMIN, via="cli", reason="compromised")
    real = store.keys.revoked_uses.record
    released, failures = threading.Event(), []

    def recording(key, *args, **kwargs):
        if key.id == gate.key.id:  # holds the writer while first and second are handed over: one batch
            released.wait(10)
        elif key.id == second.key.id and len(failures) < 2:
            failures.append(key.id)
            raise DatabaseUnavailable("the database is unavailable (test)")
        return real(key, *args, **kwargs)

    monkeypatch.setattr(store.keys.revoked_uses, "record", recording)
    monkeypatch.setattr(store.keys.uses, "RETRY_AFTER", 0.01)
    for created in (gate, first, second):
        assert store.keys.verify(created.secret).code.value == "REVOKED"
    released.set()
    assert store.keys.flush_uses()
    assert len(failures) == 2
    assert [store.keys.revoked_uses.get(c.key.id).uses for c in (gate, first, second)] == [1, 1, 1]


def test_a_last_use_whose_write_fails_is_given_up_and_does_not_hold_a_flush(store, monkeypatch):
    created = store.keys.create(name="svc", owner="ops", actor=ADMIN)[0]

    def failing(uses):
        raise DatabaseUnavailable("the database is unavailable (test)")

    monkeypatch.setattr(store.keys.uses, "_write_uses", failing)
    assert store.keys.verify(created.secret).code.value == "VALID"
    assert store.keys.flush_uses(timeout=5)
    assert store.keys.get(created.key.id).last_used_at is None


def _present_and_end(url: str, secret: str) -> None:
    """A worker process: it checks a revoked key and ends (no close, no flush)."""
    from storage import open_store

    child = open_store(url, create_schema=False)
    assert child.keys.verify(secret).code.value == "REVOKED"


def test_a_worker_process_that_ends_writes_what_it_was_handed_first(store):
    """granian's workers are ``multiprocessing`` processes, forked; they end through ``os._exit``
    (no ``atexit``). What their recorder holds is written by the process's own finalizers."""
    import multiprocessing

    created = store.keys.create(name="billing", owner="payments", actor=ADMIN)[0]
    store.keys.revoke(created.key.id, actor=ADMIN, via="cli", reason="compromised")
    store.db.dispose()  # the parent's connections are not the child's
    worker = multiprocessing.get_context("fork").Process(target=_present_and_end, args=(store.db.url, created.secret))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    assert store.keys.revoked_uses.get(created.key.id).uses == 1
    assert len(events(store, "key.used_after_revoke")) == 1


def test_a_command_that_ends_after_its_check_writes_what_it_was_handed_first(store):
    """The interpreter's exit flushes (``apikeys verify`` ends right after its check)."""
    import subprocess
    import sys

    created = store.keys.create(name="billing", owner="payments", actor=ADMIN)[0]
    store.keys.revoke(created.key.id, actor=ADMIN, via="cli", reason="compromised")
    script = ("import sys; from storage import open_store; "
              "s = open_store(sys.argv[1], create_schema=False); "
              "assert s.keys.verify(sys.argv[2]).code.value == 'REVOKED'")
    done = subprocess.run([sys.executable, "-c", script, store.db.url, created.secret], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert store.keys.revoked_uses.get(created.key.id).uses == 1
