"""The key store through its services: verify, revoke, audit chain, listing, admins."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import delete, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import SQLModel

from storage import (
    AdminNotFound,
    ApiKey,
    AuditEvent,
    InvalidInput,
    KeyNotFound,
    VerifyCode,
    open_store,
)
from storage.audit import ChainBreak
from storage.keyformat import digest, generate_secret

from .helpers import ADMIN, drop_audit_triggers

T0 = datetime(2030, 3, 14, 9, 0, 0, tzinfo=timezone.utc)
ACTOR = "ops@example.com"


def create_one(store, name="billing", owner="payments-team", **kwargs):
    return store.keys.create(name=name, owner=owner, actor=ACTOR, **kwargs)[0]


def typo_of(secret: str) -> str:
    i = 10
    return secret[:i] + ("0" if secret[i] != "0" else "1") + secret[i + 1:]


def events(store, action=None, key_id=None):
    found = store.audit.recent(limit=10_000, key_id=key_id)
    return [e for e in found if action is None or e.action == action]


# == verify ===================================================================================
def test_verify_valid_key_answers_valid_with_name_owner_and_key_id(store):
    created = create_one(store, name="billing", owner="payments-team")
    result = store.keys.verify(created.secret)
    assert result.code is VerifyCode.VALID
    assert result.valid
    body = result.to_dict()
    assert body["valid"] is True
    assert body["code"] == "VALID"
    assert body["key_id"] == created.key.id
    assert body["name"] == "billing"
    assert body["owner"] == "payments-team"


def test_verify_revoked_key_answers_revoked_with_key_id_only(store):
    created = create_one(store)
    store.keys.revoke(created.key.id, via="cli", actor=ACTOR, reason="compromised")
    result = store.keys.verify(created.secret)
    assert result.code is VerifyCode.REVOKED
    assert not result.valid
    body = result.to_dict()
    assert body["valid"] is False
    assert body["code"] == "REVOKED"
    assert body["key_id"] == created.key.id
    assert "name" not in body
    assert "owner" not in body


def test_verify_answers_expired_exactly_at_the_expiry_instant(store):
    with freeze_time(T0) as frozen:
        created = create_one(store, expires_in=timedelta(hours=1))
        assert created.key.expires_at == T0 + timedelta(hours=1)

        frozen.move_to(T0 + timedelta(minutes=59, seconds=59))
        assert store.keys.verify(created.secret).code is VerifyCode.VALID

        frozen.move_to(T0 + timedelta(hours=1))
        result = store.keys.verify(created.secret)
        assert result.code is VerifyCode.EXPIRED
        body = result.to_dict()
        assert body["valid"] is False
        assert body["code"] == "EXPIRED"
        assert body["key_id"] == created.key.id
        assert "name" not in body and "owner" not in body

        frozen.move_to(T0 + timedelta(days=30))
        assert store.keys.verify(created.secret).code is VerifyCode.EXPIRED


def test_verify_unknown_well_formed_key_answers_not_found(store):
    create_one(store)
    result = store.keys.verify(generate_secret())
    assert result.code is VerifyCode.NOT_FOUND
    assert result.to_dict() == {"valid": False, "code": "NOT_FOUND"}


@pytest.mark.parametrize("candidate", ["garbage", "", None, 123, b"apk_", "apk_" + "A" * 28])
def test_verify_garbage_answers_malformed(store, candidate):
    result = store.keys.verify(candidate)
    assert result.code is VerifyCode.MALFORMED
    assert result.to_dict() == {"valid": False, "code": "MALFORMED"}


def test_verify_stored_key_with_one_character_changed_answers_malformed(store):
    created = create_one(store)
    assert store.keys.verify(typo_of(created.secret)).code is VerifyCode.MALFORMED
    assert store.keys.verify(created.secret + "x").code is VerifyCode.MALFORMED
    assert store.keys.verify(created.secret.upper()).code is VerifyCode.MALFORMED


def test_malformed_answers_without_touching_the_database(store, monkeypatch):
    created = create_one(store)

    def no_database(*args, **kwargs):
        raise AssertionError("the database was touched")

    # Every way into the database: the verification read (Database.fetch_one, the path really
    # used), sessions, and the engines' connections.
    for name in ("fetch_one", "read", "write", "_thread_connection", "_fetch_one_pooled"):
        monkeypatch.setattr(store.db, name, no_database)
    for engine in (store.db.read_engine, store.db.write_engine):
        engine.dispose()
        monkeypatch.setattr(engine, "connect", no_database)
        monkeypatch.setattr(engine, "raw_connection", no_database)

    for candidate in ("garbage", None, typo_of(created.secret), "apk_" + "B" * 28):
        assert store.keys.verify(candidate).code is VerifyCode.MALFORMED
    # Control: a well-formed key that is not stored does need the database (its lookup, and nothing
    # else: no last-used write), so the patch covers the path verification really reads through.
    with pytest.raises(AssertionError, match="database was touched"):
        store.keys.verify(generate_secret())


def test_revoked_key_that_has_also_expired_answers_revoked(store):
    with freeze_time(T0) as frozen:
        created = create_one(store, expires_in=timedelta(hours=1))
        store.keys.revoke(created.key.id, via="cli", actor=ACTOR)
        frozen.move_to(T0 + timedelta(hours=2))
        result = store.keys.verify(created.secret)
        assert result.code is VerifyCode.REVOKED
        assert result.to_dict()["key_id"] == created.key.id


# == last_used_at =============================================================================
def test_every_thread_sees_a_revocation_at_once_on_its_next_verification(store):
    """Verification reads on a connection of the calling thread's own (on SQLite); none of them may
    hold on to a snapshot from before a revocation, whichever connection or process revoked."""
    created = create_one(store)
    ready, revoked, answers = threading.Barrier(5), threading.Event(), []

    def worker():
        before = store.keys.verify(created.secret).code  # opens (and keeps) this thread's connection
        ready.wait()
        revoked.wait()
        answers.append((before, store.keys.verify(created.secret).code))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    assert store.keys.verify(created.secret).code is VerifyCode.VALID
    ready.wait()
    other = open_store(store.db.url)  # another process would do the same: its own connections
    other.keys.revoke(created.key.id, via="cli", actor=ACTOR, reason="compromised")
    other.close()
    revoked.set()
    for t in threads:
        t.join()
    assert answers == [(VerifyCode.VALID, VerifyCode.REVOKED)] * 4
    assert store.keys.verify(created.secret).code is VerifyCode.REVOKED


def test_verification_works_again_after_the_store_is_closed_and_reopened_in_the_same_thread(database_url):
    first = open_store(database_url)
    created = create_one(first)
    assert first.keys.verify(created.secret).code is VerifyCode.VALID
    first.close()  # closes this thread's verification connection too
    second = open_store(database_url)
    assert second.keys.verify(created.secret).code is VerifyCode.VALID
    second.keys.revoke(created.key.id, via="cli", actor=ACTOR)
    assert second.keys.verify(created.secret).code is VerifyCode.REVOKED
    second.close()


def test_a_thread_that_ends_leaves_no_verification_connection_open(store):
    import gc

    created = create_one(store)
    before, during = len(store.db._thread_connections), []

    def verify_once():
        assert store.keys.verify(created.secret).code is VerifyCode.VALID
        during.append(len(store.db._thread_connections))

    for _ in range(20):
        t = threading.Thread(target=verify_once)
        t.start()
        t.join()
    gc.collect()
    if store.db.dialect == "sqlite":
        assert min(during) == before + 1  # the thread had a connection of its own...
    assert len(store.db._thread_connections) == before  # ...closed when the thread ended


def test_verification_reports_an_unreachable_database_as_unavailable(store, tmp_path):
    from storage import DatabaseUnavailable
    from storage.db import Database

    store.db = Database(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    store.keys.db = store.db
    with pytest.raises(DatabaseUnavailable):
        store.keys.verify(generate_secret())


def test_verify_records_last_use_at_most_once_a_minute(store):
    with freeze_time(T0) as frozen:
        created = create_one(store)
        assert store.keys.get(created.key.id).last_used_at is None

        frozen.move_to(T0 + timedelta(seconds=5))
        store.keys.verify(created.secret)
        first_use = T0 + timedelta(seconds=5)
        assert store.keys.flush_uses()  # the use recorder writes on its own thread
        assert store.keys.get(created.key.id).last_used_at == first_use

        frozen.move_to(first_use + timedelta(seconds=59))
        assert store.keys.verify(created.secret).valid
        assert store.keys.flush_uses()  # the use recorder writes on its own thread
        assert store.keys.get(created.key.id).last_used_at == first_use

        frozen.move_to(first_use + timedelta(seconds=60))
        assert store.keys.verify(created.secret).valid
        assert store.keys.flush_uses()  # the use recorder writes on its own thread
        assert store.keys.get(created.key.id).last_used_at == first_use + timedelta(seconds=60)


def test_failed_verifications_do_not_record_use(store):
    with freeze_time(T0) as frozen:
        created = create_one(store, expires_in=timedelta(hours=1))
        store.keys.verify(typo_of(created.secret))
        store.keys.verify(generate_secret())
        frozen.move_to(T0 + timedelta(hours=2))
        assert store.keys.verify(created.secret).code is VerifyCode.EXPIRED
        assert store.keys.flush_uses()  # the use recorder writes on its own thread
        assert store.keys.get(created.key.id).last_used_at is None


# == revoke ===================================================================================
def test_concurrent_revokes_have_exactly_one_winner_and_one_event(store):
    created = create_one(store)
    key_id = created.key.id
    threads_n = 16
    barrier = threading.Barrier(threads_n)
    outcomes, errors = [], []
    lock = threading.Lock()

    def racer(i):
        try:
            barrier.wait(timeout=30)
            outcome = store.keys.revoke(key_id, via="cli", actor=f"racer-{i}", reason="compromised")
            with lock:
                outcomes.append((i, outcome))
        except Exception as exc:  # collected and asserted below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    assert len(outcomes) == threads_n
    winners = [(i, o) for i, o in outcomes if o.revoked_now]
    assert len(winners) == 1
    winner_index, winner = winners[0]
    assert winner.event is not None
    assert all(o.event is None for _, o in outcomes if not o.revoked_now)

    revoked_events = events(store, "key.revoked", key_id=key_id)
    assert len(revoked_events) == 1
    assert revoked_events[0].actor == f"racer-{winner_index}"
    assert store.keys.get(key_id).revoked_by == f"racer-{winner_index}"
    assert store.audit.verify() is None


def test_second_revoke_reports_already_revoked_and_records_nothing(store):
    created = create_one(store)
    first = store.keys.revoke(created.key.id, via="cli", actor="alice", reason="rotation")
    second = store.keys.revoke(created.key.id, via="cli", actor="mallory", reason="other")
    assert first.revoked_now is True
    assert second.revoked_now is False
    assert second.key.revoked_by == "alice"
    assert second.key.revoke_reason == "rotation"
    assert len(events(store, "key.revoked", key_id=created.key.id)) == 1


def test_revocation_survives_a_restart(store, database_url):
    created = create_one(store)
    store.keys.revoke(created.key.id, via="cli", actor=ACTOR, reason="compromised")
    store.close()

    reopened = open_store(database_url, bootstrap_admins=[ADMIN])
    try:
        result = reopened.keys.verify(created.secret)
        assert result.code is VerifyCode.REVOKED
        assert result.key_id == created.key.id
        revoked = reopened.keys.list_keys(status="revoked").items
        assert [k.id for k in revoked] == [created.key.id]
        assert created.key.id not in [k.id for k in reopened.keys.list_keys(status="active").items]
    finally:
        reopened.close()


@pytest.fixture
def revoked_key(store):
    created = create_one(store)
    store.keys.revoke(created.key.id, via="cli", actor=ACTOR, reason="compromised")
    return created


@pytest.mark.parametrize(
    "values",
    [
        {"revoked_at": None},
        {"revoked_at": None, "revoked_by": None, "revoke_reason": None},
        {"revoked_at": T0},
        {"revoked_by": "someone-else"},
        {"revoke_reason": "other"},
    ],
    ids=["unset-revoked_at", "unset-everything", "move-revoked_at", "change-revoked_by", "change-reason"],
)
def test_storage_refuses_to_undo_or_rewrite_a_revocation(store, revoked_key, values):
    key_id = revoked_key.key.id
    before = store.keys.get(key_id)
    with pytest.raises((DBAPIError, IntegrityError)):
        with store.db.write() as session:
            session.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))
    after = store.keys.get(key_id)
    assert after.revoked_at == before.revoked_at
    assert after.revoked_by == before.revoked_by
    assert after.revoke_reason == before.revoke_reason
    assert store.keys.verify(revoked_key.secret).code is VerifyCode.REVOKED


def test_storage_refuses_to_delete_a_key(store, revoked_key):
    with pytest.raises((DBAPIError, IntegrityError)):
        with store.db.write() as session:
            session.execute(delete(ApiKey).where(ApiKey.id == revoked_key.key.id))
    assert store.keys.verify(revoked_key.secret).code is VerifyCode.REVOKED
    assert store.keys.count_keys(status="revoked") == 1


def test_storage_refuses_to_delete_an_active_key(store):
    created = create_one(store)
    with pytest.raises((DBAPIError, IntegrityError)):
        with store.db.write() as session:
            session.execute(delete(ApiKey).where(ApiKey.id == created.key.id))
    assert store.keys.verify(created.secret).code is VerifyCode.VALID


def test_storage_refuses_to_change_a_digest(store, revoked_key):
    active = create_one(store, name="other")
    for key_id in (revoked_key.key.id, active.key.id):
        with pytest.raises((DBAPIError, IntegrityError)):
            with store.db.write() as session:
                session.execute(
                    update(ApiKey).where(ApiKey.id == key_id).values(digest=digest(generate_secret()))
                )
    assert store.keys.verify(revoked_key.secret).code is VerifyCode.REVOKED
    assert store.keys.verify(active.secret).code is VerifyCode.VALID


def test_revoke_of_unknown_key_raises_key_not_found(store):
    create_one(store)
    with pytest.raises(KeyNotFound):
        store.keys.revoke("key_" + "A" * 17, via="cli", actor=ACTOR)
    with pytest.raises(KeyNotFound):
        store.keys.revoke("not-a-key-id", via="cli", actor=ACTOR)
    assert events(store, "key.revoked") == []


@pytest.mark.parametrize("reason", ["stolen", "COMPROMISED", "compromised ", 42])
def test_revoke_with_invalid_reason_raises_and_changes_nothing(store, reason):
    created = create_one(store)
    with pytest.raises(InvalidInput):
        store.keys.revoke(created.key.id, via="cli", actor=ACTOR, reason=reason)
    assert store.keys.get(created.key.id).revoked_at is None
    assert store.keys.verify(created.secret).code is VerifyCode.VALID
    assert events(store, "key.revoked") == []


def test_revoke_without_actor_raises_and_changes_nothing(store):
    created = create_one(store)
    with pytest.raises(InvalidInput):
        store.keys.revoke(created.key.id, via="cli", actor="   ")
    assert store.keys.verify(created.secret).code is VerifyCode.VALID


def test_revoke_reason_and_note_are_stored_on_the_key_and_the_event(store):
    created = create_one(store, name="billing", owner="payments-team")
    outcome = store.keys.revoke(created.key.id, via="cli", actor="alice", reason="compromised", note="pasted in #general")
    assert outcome.revoked_now

    key = store.keys.get(created.key.id)
    assert key.revoke_reason == "compromised"
    assert key.revoke_note == "pasted in #general"
    assert key.revoked_by == "alice"
    assert key.revoked_at is not None

    (event,) = events(store, "key.revoked", key_id=created.key.id)
    details = json.loads(event.details)
    assert event.actor == "alice"
    assert details["reason"] == "compromised"
    assert details["note"] == "pasted in #general"
    assert details["name"] == "billing"
    assert details["owner"] == "payments-team"
    assert details["key"] == "apk_\u2026" + created.secret[-4:]


def test_revoke_without_reason_records_none(store):
    created = create_one(store)
    store.keys.revoke(created.key.id, via="cli", actor=ACTOR)
    assert store.keys.get(created.key.id).revoke_reason is None
    (event,) = events(store, "key.revoked", key_id=created.key.id)
    assert json.loads(event.details)["reason"] is None


# == audit chain ==============================================================================
def _some_history(store):
    a = create_one(store, name="a")
    b = create_one(store, name="b")
    store.keys.revoke(a.key.id, via="cli", actor=ACTOR, reason="rotation")
    store.admins.add("UNEWADMIN1", actor=ADMIN)
    store.keys.create(name="batch", owner="team", actor=ACTOR, count=2)
    return a, b


def test_audit_chain_is_intact_after_normal_use(store):
    assert store.audit.verify() is None  # empty log
    _some_history(store)
    assert len(store.audit.oldest_first()) == 6
    assert [e.id for e in store.audit.oldest_first()] == [1, 2, 3, 4, 5, 6]
    assert store.audit.verify() is None


def test_audit_log_refuses_updates_and_deletes(store):
    _some_history(store)
    with pytest.raises((DBAPIError, IntegrityError)):
        with store.db.write() as session:
            session.execute(update(AuditEvent).where(AuditEvent.id == 2).values(details='{"x":1}'))
    with pytest.raises((DBAPIError, IntegrityError)):
        with store.db.write() as session:
            session.execute(delete(AuditEvent).where(AuditEvent.id == 2))
    with pytest.raises((DBAPIError, IntegrityError)):
        with store.db.write() as session:
            session.execute(delete(AuditEvent))
    assert len(store.audit.oldest_first()) == 6
    assert store.audit.verify() is None


def test_editing_an_audit_entry_is_detected(store):
    _some_history(store)
    drop_audit_triggers(store)
    with store.db.write() as session:
        session.execute(
            update(AuditEvent).where(AuditEvent.id == 3).values(details=json.dumps({"reason": "nothing to see"}))
        )
    broken = store.audit.verify()
    assert isinstance(broken, ChainBreak)
    assert broken.entry_id == 3
    assert "audit entry 3" in str(broken)


@pytest.mark.parametrize("column,value", [("actor", "mallory"), ("action", "key.created"), ("key_id", None)])
def test_editing_other_fields_of_an_audit_entry_is_detected(store, column, value):
    _some_history(store)
    drop_audit_triggers(store)
    with store.db.write() as session:
        session.execute(update(AuditEvent).where(AuditEvent.id == 3).values(**{column: value}))
    broken = store.audit.verify()
    assert isinstance(broken, ChainBreak)
    assert broken.entry_id == 3


def test_deleting_a_middle_audit_entry_is_detected(store):
    _some_history(store)
    drop_audit_triggers(store)
    with store.db.write() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.id == 3))
    broken = store.audit.verify()
    assert isinstance(broken, ChainBreak)
    assert broken.entry_id == 3
    assert "audit entry 3" in str(broken)


def test_deleting_the_first_audit_entry_is_detected(store):
    _some_history(store)
    drop_audit_triggers(store)
    with store.db.write() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.id == 1))
    broken = store.audit.verify()
    assert isinstance(broken, ChainBreak)
    assert broken.entry_id == 1


def test_deleting_the_last_audit_entry_is_detected(store):
    _some_history(store)
    drop_audit_triggers(store)
    with store.db.write() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.id == 6))
    broken = store.audit.verify()
    assert isinstance(broken, ChainBreak)
    assert broken.entry_id == 6


def test_audit_keeps_working_and_stays_verifiable_after_many_actions(store):
    for i in range(5):
        created = create_one(store, name=f"k{i}")
        store.keys.revoke(created.key.id, via="cli", actor=ACTOR)
    assert len(store.audit.oldest_first()) == 10
    assert store.audit.verify() is None


def test_audit_verify_is_not_fooled_by_an_entry_appended_while_it_runs(store, monkeypatch):
    """``apikeys audit --verify`` runs while the server keeps recording events. An entry that is
    appended (properly, through the log) while the check walks the chain is not tampering.
    The interleaving is forced by letting another writer commit just before the walk starts."""
    import storage.audit as audit_module

    _some_history(store)
    original_stream = audit_module._stream

    def stream_after_a_concurrent_append(session, *args, **kwargs):
        create_one(store, name="created-during-verify")  # another writer, its own transaction
        yield from original_stream(session, *args, **kwargs)

    monkeypatch.setattr(audit_module, "_stream", stream_after_a_concurrent_append)
    assert store.audit.verify() is None
    monkeypatch.undo()
    assert len(store.audit.oldest_first()) == 7
    assert store.audit.verify() is None


def test_concurrent_first_actions_on_a_fresh_database_all_succeed(store):
    """The very first audited actions on a new database may arrive at the same moment
    (two operators, or the server and the CLI): every one of them must succeed."""
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    errors = []
    lock = threading.Lock()

    def creator(i):
        try:
            barrier.wait(timeout=30)
            create_one(store, name=f"first-{i}")
        except Exception as exc:  # collected and asserted below
            with lock:
                errors.append(repr(exc)[:200])

    threads = [threading.Thread(target=creator, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    assert store.keys.count_keys(status="all") == threads_n
    assert len(events(store, "key.created")) == threads_n
    assert [e.id for e in store.audit.oldest_first()] == list(range(1, threads_n + 1))
    assert store.audit.verify() is None


# == no secret in the database ================================================================
def _dump_all_rows(store) -> str:
    chunks = []
    with store.db.read() as session:
        for table in SQLModel.metadata.sorted_tables:
            for row in session.execute(select(table)):
                chunks.append(" ".join(str(v) for v in row))
    return "\n".join(chunks)


def test_no_secret_is_stored_in_the_database(store, database_url):
    with freeze_time(T0):
        singles = [create_one(store, name=f"s{i}", expires_in=timedelta(days=1)) for i in range(3)]
        batch = store.keys.create(name="batch", owner="team", actor=ACTOR, count=5)
        created = singles + batch
        store.keys.verify(created[0].secret)  # records last use
        store.keys.revoke(created[1].key.id, via="cli", actor=ACTOR, reason="compromised", note="rotating")

    dump = _dump_all_rows(store)
    assert created[0].key.id in dump  # sanity: the dump does contain the data
    for c in created:
        assert c.secret not in dump
        assert c.secret[4:-4] not in dump  # not even the secret without prefix and last 4

    if store.db.dialect == "sqlite":
        path = Path(make_url(database_url).database)
        raw = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
        assert created[0].key.id.encode() in raw
        for c in created:
            assert c.secret.encode() not in raw
            assert c.secret[4:-4].encode() not in raw


def test_only_a_one_way_digest_of_the_secret_is_stored(store):
    created = create_one(store)
    with store.db.read() as session:
        stored = session.scalar(select(ApiKey.digest).where(ApiKey.id == created.key.id))
    assert stored != created.secret
    assert created.secret not in stored
    assert created.secret[4:-4] not in stored
    assert len(stored) == 64
    assert stored == digest(created.secret)
    # And the key as returned by the store has only the last four characters.
    assert created.key.last4 == created.secret[-4:]
    assert created.key.masked == "apk_\u2026" + created.secret[-4:]


# == listing and counting =====================================================================
def _mixed_keys(store, frozen):
    """At T0: two active (team-a, team-b), one revoked, one that expires at T0+1h."""
    active_a = create_one(store, name="active-a", owner="team-a")
    active_b = create_one(store, name="active-b", owner="team-b")
    revoked = create_one(store, name="revoked", owner="team-a")
    store.keys.revoke(revoked.key.id, via="cli", actor=ACTOR)
    expiring = create_one(store, name="expiring", owner="team-b", expires_in=timedelta(hours=1))
    frozen.move_to(T0 + timedelta(hours=2))
    return active_a, active_b, revoked, expiring


def _ids(page):
    return {k.id for k in page.items}


def test_list_keys_filters_by_status(store):
    with freeze_time(T0) as frozen:
        active_a, active_b, revoked, expiring = _mixed_keys(store, frozen)
        assert _ids(store.keys.list_keys()) == {active_a.key.id, active_b.key.id}
        assert _ids(store.keys.list_keys(status="active")) == {active_a.key.id, active_b.key.id}
        assert _ids(store.keys.list_keys(status="revoked")) == {revoked.key.id}
        assert _ids(store.keys.list_keys(status="expired")) == {expiring.key.id}
        assert _ids(store.keys.list_keys(status="all")) == {
            active_a.key.id, active_b.key.id, revoked.key.id, expiring.key.id
        }


def test_list_keys_filters_by_owner(store):
    with freeze_time(T0) as frozen:
        active_a, active_b, revoked, expiring = _mixed_keys(store, frozen)
        assert _ids(store.keys.list_keys(owner="team-a")) == {active_a.key.id}
        assert _ids(store.keys.list_keys(status="all", owner="team-a")) == {active_a.key.id, revoked.key.id}
        assert _ids(store.keys.list_keys(status="expired", owner="team-b")) == {expiring.key.id}
        assert _ids(store.keys.list_keys(status="expired", owner="team-a")) == set()
        assert _ids(store.keys.list_keys(status="all", owner="nobody")) == set()


def test_count_keys_matches_the_filters(store):
    with freeze_time(T0) as frozen:
        _mixed_keys(store, frozen)
        assert store.keys.count_keys() == 2
        assert store.keys.count_keys(status="active") == 2
        assert store.keys.count_keys(status="revoked") == 1
        assert store.keys.count_keys(status="expired") == 1
        assert store.keys.count_keys(status="all") == 4
        assert store.keys.count_keys(status="all", owner="team-b") == 2
        assert store.keys.count_keys(status="active", owner="team-a") == 1


def test_list_keys_is_newest_first(store):
    with freeze_time(T0) as frozen:
        first = create_one(store, name="first")
        frozen.tick(timedelta(seconds=1))
        second = create_one(store, name="second")
        frozen.tick(timedelta(seconds=1))
        third = create_one(store, name="third")
    assert [k.id for k in store.keys.list_keys().items] == [third.key.id, second.key.id, first.key.id]


@pytest.mark.parametrize("timing", ["distinct-times", "same-instant", "mixed-batch"])
def test_keyset_paging_visits_every_key_once_forward_and_back(store, timing):
    with freeze_time(T0) as frozen:
        if timing == "distinct-times":
            for i in range(25):
                create_one(store, name=f"k{i}")
                frozen.tick(timedelta(milliseconds=1))
        elif timing == "same-instant":
            for i in range(25):
                create_one(store, name=f"k{i}")
        else:
            for i in range(8):
                create_one(store, name=f"k{i}")
                frozen.tick(timedelta(seconds=1))
            store.keys.create(name="batch", owner="team", actor=ACTOR, count=12)
            frozen.tick(timedelta(seconds=1))
            for i in range(5):
                create_one(store, name=f"late{i}")
                frozen.tick(timedelta(seconds=1))

    everything = [k.id for k in store.keys.list_keys(status="all", limit=1000).items]
    assert len(everything) == len(set(everything)) == 25

    forward = []
    page = store.keys.list_keys(limit=10)
    assert page.prev_cursor is None
    forward.append([k.id for k in page.items])
    while page.next_cursor is not None:
        page = store.keys.list_keys(limit=10, after=page.next_cursor)
        assert page.prev_cursor is not None
        forward.append([k.id for k in page.items])
    assert [len(p) for p in forward] == [10, 10, 5]
    visited = [key_id for p in forward for key_id in p]
    assert visited == everything  # every key once, newest first, no duplicates

    backward = [[k.id for k in page.items]]
    while page.prev_cursor is not None:
        page = store.keys.list_keys(limit=10, before=page.prev_cursor)
        assert page.next_cursor is not None
        backward.append([k.id for k in page.items])
    assert backward == list(reversed(forward))


def test_paging_with_a_filter_stays_within_the_filter(store):
    for i in range(12):
        create_one(store, name=f"a{i}", owner="team-a")
        create_one(store, name=f"b{i}", owner="team-b")
    seen = []
    page = store.keys.list_keys(owner="team-a", limit=5)
    seen += page.items
    while page.next_cursor:
        page = store.keys.list_keys(owner="team-a", limit=5, after=page.next_cursor)
        seen += page.items
    assert len(seen) == 12
    assert len({k.id for k in seen}) == 12
    assert {k.owner for k in seen} == {"team-a"}


@pytest.mark.parametrize("cursor", ["garbage", "", "2030.key_x", "20300314090000000000.not-a-key", "."])
def test_bad_cursor_raises_invalid_input(store, cursor):
    create_one(store)
    with pytest.raises(InvalidInput):
        store.keys.list_keys(after=cursor)
    with pytest.raises(InvalidInput):
        store.keys.list_keys(before=cursor)


def test_bad_status_or_limit_raises_invalid_input(store):
    with pytest.raises(InvalidInput):
        store.keys.list_keys(status="bogus")
    with pytest.raises(InvalidInput):
        store.keys.count_keys(status="bogus")
    with pytest.raises(InvalidInput):
        store.keys.list_keys(limit=0)


# == create ===================================================================================
def test_create_returns_a_working_key_and_records_one_event(store):
    with freeze_time(T0):
        created = create_one(store, name="billing", owner="payments-team")
    assert created.key.name == "billing"
    assert created.key.owner == "payments-team"
    assert created.key.created_by == ACTOR
    assert created.key.created_at == T0
    assert created.key.expires_at is None
    assert store.keys.verify(created.secret).valid
    (event,) = events(store)
    assert event.action == "key.created"
    assert event.key_id == created.key.id
    assert event.actor == ACTOR
    details = json.loads(event.details)
    assert details["name"] == "billing"
    assert details["owner"] == "payments-team"
    assert created.secret not in event.details


def test_create_with_count_makes_numbered_keys_in_one_call(store):
    created = store.keys.create(name="worker", owner="batch-team", actor=ACTOR, count=5)
    assert [c.key.name for c in created] == [f"worker-{i}" for i in range(1, 6)]
    assert len({c.secret for c in created}) == 5
    assert len({c.key.id for c in created}) == 5
    assert store.keys.count_keys(status="all") == 5
    for c in created:
        assert store.keys.verify(c.secret).valid
    created_events = events(store, "key.created")
    assert len(created_events) == 5
    assert {e.key_id for e in created_events} == {c.key.id for c in created}
    assert store.audit.verify() is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 81},
        {"name": "bad\x00name"},
        {"name": "tab\tname"},
        {"owner": ""},
        {"owner": "has space"},
        {"owner": "-leading-dash"},
        {"owner": "o" * 101},
        {"owner": "semi;colon"},
        {"count": 0},
        {"count": -3},
        {"count": 100_001},
        {"name": "x" * 79, "count": 10},  # NAME-10 would be longer than a name may be
        {"expires_in": timedelta(0)},
        {"expires_in": timedelta(hours=-1)},
        {"actor": ""},
    ],
)
def test_invalid_create_raises_and_creates_nothing(store, kwargs):
    args = {"name": "billing", "owner": "payments-team", "actor": ACTOR, **kwargs}
    with pytest.raises(InvalidInput):
        store.keys.create(**args)
    assert store.keys.count_keys(status="all") == 0
    assert store.audit.recent() == []


# == admins ===================================================================================
def test_bootstrap_admin_is_admin(store):
    assert store.admins.is_admin(ADMIN)
    assert not store.admins.is_admin("UOTHER0001")
    assert not store.admins.is_admin(None)
    assert not store.admins.is_admin("")
    assert [e.user_id for e in store.admins.list()] == [ADMIN]


def test_add_and_remove_admin_are_audited(store):
    assert store.admins.add("UNEWADMIN1", actor=ADMIN) is True
    assert store.admins.is_admin("UNEWADMIN1")
    assert "UNEWADMIN1" in [e.user_id for e in store.admins.list()]

    store.admins.remove("UNEWADMIN1", actor=ADMIN)
    assert not store.admins.is_admin("UNEWADMIN1")
    assert "UNEWADMIN1" not in [e.user_id for e in store.admins.list()]

    actions = [(e.action, e.actor, json.loads(e.details)) for e in store.audit.oldest_first()]
    assert actions == [
        ("admin.added", ADMIN, {"user_id": "UNEWADMIN1"}),
        ("admin.removed", ADMIN, {"user_id": "UNEWADMIN1"}),
    ]
    assert store.audit.verify() is None


def test_adding_an_admin_twice_returns_false_with_one_event(store):
    assert store.admins.add("UNEWADMIN1", actor=ADMIN) is True
    assert store.admins.add("UNEWADMIN1", actor=ADMIN) is False
    assert len(events(store, "admin.added")) == 1


def test_adding_a_bootstrap_admin_changes_nothing(store):
    assert store.admins.add(ADMIN, actor=ADMIN) is False
    assert events(store) == []


def test_removing_a_bootstrap_admin_raises_invalid_input(store):
    with pytest.raises(InvalidInput):
        store.admins.remove(ADMIN, actor=ADMIN)
    assert store.admins.is_admin(ADMIN)
    assert events(store) == []


def test_removing_an_unknown_admin_raises_admin_not_found(store):
    with pytest.raises(AdminNotFound):
        store.admins.remove("UNOBODY001", actor=ADMIN)
    assert events(store) == []


@pytest.mark.parametrize("user_id", ["", "not-a-user", "u123abc", "C0123ABCD", "U1", "<@U123ABC>", "U" + "A" * 40])
def test_invalid_user_id_raises_invalid_input(store, user_id):
    with pytest.raises(InvalidInput):
        store.admins.add(user_id, actor=ADMIN)
    with pytest.raises(InvalidInput):
        store.admins.remove(user_id, actor=ADMIN)
    assert events(store) == []
    assert [e.user_id for e in store.admins.list()] == [ADMIN]


def test_the_admin_service_never_removes_the_last_admin(database_url):
    """The rule lives in storage, so Slack and the CLI keep it alike."""
    from storage import InvalidInput, open_store

    store = open_store(database_url)  # no bootstrap admins
    try:
        store.admins.add("UFIRST001", actor="ops")
        store.admins.add("USECOND01", actor="ops")
        store.admins.remove("USECOND01", actor="UFIRST001")
        with pytest.raises(InvalidInput, match="last admin"):
            store.admins.remove("UFIRST001", actor="UFIRST001")
        assert [a.user_id for a in store.admins.list()] == ["UFIRST001"]
        assert [e.action for e in store.audit.oldest_first()].count("admin.removed") == 1
    finally:
        store.close()


def test_a_new_sqlite_database_and_its_wal_and_shm_files_are_private(tmp_path):
    import os
    import stat

    old = os.umask(0o022)  # the usual umask: files would be world-readable
    try:
        store = open_store(f"sqlite:///{tmp_path / 'private.db'}")
        store.keys.create(name="svc", owner="ops", actor="UADMIN001")
        files = [tmp_path / name for name in ("private.db", "private.db-wal", "private.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
        store.close()
    finally:
        os.umask(old)


def test_every_revocation_path_records_the_same_entry(store):
    """One key, one owner's keys, and a leak report each revoke through ``storage.revocation``: the
    same columns set, the same ``key.revoked`` fields, ``via`` naming the interface."""
    from storage import Via
    from storage.leaks import Match

    single, = store.keys.create(name="single", owner="payments", actor="test")
    store.keys.create(name="bulk", owner="team-b", actor="test", count=2)
    leaked, = store.keys.create(name="leaked", owner="payments", actor="test")
    store.keys.revoke(single.key.id, actor="U1", via=Via.SLACK, reason="rotation", note="n")
    newest = store.keys.list_keys(owner="team-b").items[0]
    from storage.keys import encode_cursor

    store.keys.revoke_owner("team-b", up_to=encode_cursor(newest), actor="U1", via=Via.CLI, reason="decommissioned")
    store.leaks.report([Match(token=leaked.secret, url="https://example.com/x")], actor="github-secret-scanning",
                       via=Via.GITHUB)
    entries = [e for e in store.audit.oldest_first() if e.action == "key.revoked"]
    assert len(entries) == 4
    for entry in entries:
        details = json.loads(entry.details)
        assert {"name", "owner", "key", "reason", "note", "via"} <= details.keys(), details
        key = store.keys.get(entry.key_id)
        assert key.revoked_by == entry.actor and key.revoke_reason == details["reason"]
        assert details["key"] == key.masked and details["via"] in {v.value for v in Via}
    assert [json.loads(e.details)["via"] for e in entries] == ["slack", "cli", "cli", "github-secret-scanning"]
    assert [json.loads(e.details).get("bulk") for e in entries] == [None, 2, 2, None]


def test_a_key_is_expired_from_the_instant_its_lifetime_ends_in_every_read(store):
    """At its expiry instant a key is expired for the check, the list and a bulk revocation alike (no
    reader counts it active one instant longer than another)."""
    from datetime import timedelta

    from freezegun import freeze_time

    from storage import Via
    from storage.keys import encode_cursor
    from storage.timeutil import utcnow

    with freeze_time("2026-06-01 12:00:00"):
        ending, = store.keys.create(name="ending", owner="team-x", actor="test", expires_in=timedelta(hours=1))
        lasting, = store.keys.create(name="lasting", owner="team-x", actor="test")
        newest = store.keys.list_keys(owner="team-x").items[0]
    with freeze_time("2026-06-01 13:00:00"):
        assert utcnow() == ending.key.expires_at
        assert store.keys.verify(ending.secret).code is VerifyCode.EXPIRED
        assert [k.id for k in store.keys.list_keys(status="active", owner="team-x").items] == [lasting.key.id]
        assert [k.id for k in store.keys.list_keys(status="expired", owner="team-x").items] == [ending.key.id]
        revoked = store.keys.revoke_owner("team-x", up_to=encode_cursor(newest), actor="U1", via=Via.SLACK)
        assert [k.id for k in revoked] == [lasting.key.id]  # an expired key is not revoked by the bulk card
