"""What a database owner does around the log, and how apikeys finds it: rows minted with SQL, a
revocation undone by DDL (a trigger dropped and recreated on SQLite, disabled on PostgreSQL), the
self-check that revokes such a key again, and the lock that lets one process do it."""

from __future__ import annotations

import json
import time
import urllib.request
from contextlib import contextmanager

import pytest
from sqlalchemy import text

from storage import checkpoints, integrity, open_store
from storage.keyformat import digest, generate_secret
from storage.selfcheck import InstallationLock, SelfCheck

from .helpers import ADMIN
from .servers import start_server
from .tampering import insert_at_head


@pytest.fixture
def signer():
    return checkpoints.load_signer(checkpoints.generate()[0])


@pytest.fixture
def signed(database_url, signer):
    store = open_store(database_url, bootstrap_admins=[ADMIN], notify_channel="C0AUDIT", signer=signer)
    yield store
    store.close()


def mint_key_with_sql(store) -> tuple[str, str]:
    """A key row inserted with plain SQL (the insert guards allow a new key): no audit entry."""
    secret = generate_secret()
    with store.db.write() as session:
        session.execute(text(
            "INSERT INTO api_keys (id, name, owner, prefix, last4, digest, created_at, created_by) "
            "VALUES ('key_minted0000000000000', 'backdoor', 'ops', 'apk', :last4, :digest, :at, 'nobody')"),
            {"last4": secret[-4:], "digest": digest(secret),
             "at": "2026-01-01 00:00:00.000000" if store.db.dialect == "sqlite" else "2026-01-01T00:00:00+00:00"})
    return "key_minted0000000000000", secret


@contextmanager
def guard_off(store):
    """The database owner's way around the revocation guard: on SQLite the trigger is dropped and
    recreated afterwards (leaving no trace in the schema); on PostgreSQL it is disabled (and left so)."""
    with store.db.write() as session:
        if store.db.dialect == "postgresql":
            session.execute(text("ALTER TABLE api_keys DISABLE TRIGGER api_keys_guard"))
            yield session
        else:
            sql = session.execute(text("SELECT sql FROM sqlite_master WHERE name = 'api_keys_revocation_permanent'")).scalar()
            session.execute(text("DROP TRIGGER api_keys_revocation_permanent"))
            yield session
            session.execute(text(sql))


def unrevoke_with_ddl(store, key_id: str) -> None:
    with guard_off(store) as session:
        session.execute(text("UPDATE api_keys SET revoked_at = NULL, revoked_by = NULL, revoke_reason = NULL, "
                             "revoke_note = NULL WHERE id = :id"), {"id": key_id})


def assert_revocation_guarded(store) -> None:
    """The database itself refuses to clear a revocation."""
    from sqlalchemy.exc import DBAPIError

    key = store.keys.create(name="guarded", owner="ops", actor=ADMIN)[0]
    store.keys.revoke(key.key.id, via="cli", actor=ADMIN)
    with pytest.raises(DBAPIError, match="revocation is permanent"):
        with store.db.write() as session:
            session.execute(text("UPDATE api_keys SET revoked_at = NULL WHERE id = :id"), {"id": key.key.id})


# ======================================================================= the expected guards
def test_the_trigger_list_is_what_the_migrations_create(signed):
    assert integrity.trigger_problems(signed.db) == []
    with signed.db.read() as session:
        if signed.db.dialect == "postgresql":
            found = session.execute(text("SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON "
                                         "c.oid = t.tgrelid WHERE NOT t.tgisinternal")).all()
        else:
            found = session.execute(text("SELECT tbl_name, name FROM sqlite_master WHERE type = 'trigger'")).all()
    expected = {(table, name) for table, names in integrity.TRIGGERS[signed.db.dialect].items() for name in names}
    assert set(map(tuple, found)) == expected


# ======================================================================= rows that skip the log
def test_a_key_minted_with_sql_verifies_but_audit_verify_names_it(signed, run_cli, signer):
    signed.keys.create(name="real", owner="ops", actor=ADMIN)
    key_id, secret = mint_key_with_sql(signed)
    assert signed.keys.verify(secret).code.value == "VALID"  # what the attacker gets: prevented only by privileges
    result = run_cli("audit", "--verify")
    assert result.code == 1
    assert f"BROKEN: key {key_id} (apk_…{secret[-4:]}): has no key.created entry" in result.out
    assert secret not in result.out + result.err


def test_an_admin_granted_with_sql_is_named(signed, run_cli):
    signed.admins.add("UREAL0001", actor=ADMIN)
    with signed.db.write() as session:
        session.execute(text("INSERT INTO admins (user_id, added_by, added_at) VALUES ('UEVIL0001', 'x', :at)"),
                        {"at": "2026-01-01 00:00:00.000000" if signed.db.dialect == "sqlite" else "2026-01-01T00:00:00Z"})
    result = run_cli("audit", "--verify")
    assert result.code == 1 and "BROKEN: admin UEVIL0001: holds the admin role with no admin.added entry" in result.out
    assert "UREAL0001" not in result.out


def test_an_admin_removed_in_the_log_and_put_back_with_sql_is_named(signed, run_cli):
    signed.admins.add("UREAL0001", actor=ADMIN)
    signed.admins.add("UREAL0002", actor=ADMIN)
    signed.admins.remove("UREAL0001", actor=ADMIN)
    with signed.db.write() as session:
        session.execute(text("INSERT INTO admins (user_id, added_by, added_at) VALUES ('UREAL0001', 'x', :at)"),
                        {"at": "2026-01-01 00:00:00.000000" if signed.db.dialect == "sqlite" else "2026-01-01T00:00:00Z"})
    result = run_cli("audit", "--verify")
    assert result.code == 1 and "admin UREAL0001: holds the admin role although the log removed it" in result.out


def test_a_revocation_undone_with_ddl_is_named_by_audit_verify(signed, run_cli):
    key = signed.keys.create(name="svc", owner="ops", actor=ADMIN)[0]
    revoked = signed.keys.revoke(key.key.id, via="cli", actor=ADMIN, reason="compromised").event
    unrevoke_with_ddl(signed, key.key.id)
    assert signed.keys.verify(key.secret).code.value == "VALID"  # the door
    result = run_cli("audit", "--verify")
    assert result.code == 1
    assert f"BROKEN: key {key.key.id}: the log says it was revoked at" in result.out
    assert f"a revocation was undone outside apikeys (audit entry {revoked.id})" in result.out


def test_a_clean_installation_verifies_with_its_tables(signed, run_cli):
    key = signed.keys.create(name="svc", owner="ops", actor=ADMIN, count=3)[0]
    signed.keys.revoke(key.key.id, via="cli", actor=ADMIN, reason="rotation")
    signed.admins.add("UREAL0001", actor=ADMIN)
    result = run_cli("audit", "--verify")
    assert result.code == 0 and "every key and admin in the tables has its entries" in result.out
    assert "BROKEN" not in result.out


def test_db_status_reports_a_missing_or_disabled_trigger(signed, run_cli):
    assert run_cli("db", "status").code == 0
    with signed.db.write() as session:
        if signed.db.dialect == "postgresql":
            session.execute(text("ALTER TABLE api_keys DISABLE TRIGGER api_keys_guard"))
        else:
            session.execute(text("DROP TRIGGER api_keys_revocation_permanent"))
    result = run_cli("db", "status")
    assert result.code == 1
    name = "api_keys_guard" if signed.db.dialect == "postgresql" else "api_keys_revocation_permanent"
    assert f"BROKEN: trigger {name} on api_keys: " in result.out
    assert ("disabled" if signed.db.dialect == "postgresql" else "missing") in result.out


# ======================================================================= the self-check
def test_the_self_check_revokes_again_a_key_whose_revocation_was_undone(signed, signer):
    key = signed.keys.create(name="svc", owner="ops", actor=ADMIN)[0]
    first = signed.keys.revoke(key.key.id, via="cli", actor=ADMIN, reason="compromised", note="leaked in #general").event
    unrevoke_with_ddl(signed, key.key.id)
    outcome = SelfCheck(signed.db, signed.audit, public_key=signer.public_raw).run()
    assert outcome.restored == [(key.key.id, first.id)]
    assert signed.keys.verify(key.secret).code.value == "REVOKED"
    row = signed.keys.get(key.key.id)
    assert (row.revoked_at, row.revoked_by, row.revoke_reason, row.revoke_note) == (
        first.at, ADMIN, "compromised", "leaked in #general")  # as the log's entry says
    restored = [e for e in signed.audit.oldest_first() if e.action == "key.revocation_restored"]
    assert len(restored) == 1 and restored[0].key_id == key.key.id and json.loads(restored[0].details)["entry"] == first.id
    assert signed.audit.verify(signer.public_raw) is None


def test_the_self_check_alerts_a_missing_or_disabled_trigger_once(signed, signer, caplog):
    check = SelfCheck(signed.db, signed.audit, public_key=signer.public_raw)
    assert check.run().findings == []
    with signed.db.write() as session:
        if signed.db.dialect == "postgresql":
            session.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        else:
            session.execute(text("DROP TRIGGER audit_events_append_only_update"))
    outcome = check.run()
    assert len(outcome.alerted) == 1 and "audit_events" in outcome.alerted[0]
    assert check.run().alerted == []  # told once while it stays
    alerts = [e for e in signed.audit.oldest_first() if e.action == "audit.tamper_detected"]
    assert len(alerts) == 1 and "audit_events" in json.loads(alerts[0].details)["problem"]
    assert any("self-check: tamper detected" in r.getMessage() for r in caplog.records)
    pending, _ = signed.outbox.backlog()
    assert pending >= 1  # posted to the audit channel


def test_the_self_check_seals_entries_it_did_not_write_with_one_alert(signed, signer):
    signed.keys.create(name="svc", owner="ops", actor=ADMIN)
    forged = insert_at_head(signed)
    check = SelfCheck(signed.db, signed.audit, public_key=signer.public_raw)
    outcome = check.run()
    assert outcome.sealed
    assert check.run().alerted == []
    alerts = [json.loads(e.details) for e in signed.audit.oldest_first() if e.action == "audit.tamper_detected"]
    assert len(alerts) == 1 and alerts[0]["first"] == forged  # one alert for one incident
    assert signed.audit.verify(signer.public_raw).entry_id == forged  # and named for ever


def test_the_self_check_names_a_minted_key(signed, signer):
    key_id, _ = mint_key_with_sql(signed)
    outcome = SelfCheck(signed.db, signed.audit, public_key=signer.public_raw).run()
    assert any(f"key {key_id}" in f and "no key.created entry" in f for f in outcome.alerted)


def test_a_key_minted_between_two_runs_of_the_self_check_is_named_by_the_next(signed, signer):
    """After its first run the self-check holds the keys against their entries by count (cheap at a
    million keys); a minted key makes the counts differ and is named key by key."""
    check = SelfCheck(signed.db, signed.audit, public_key=signer.public_raw)
    assert check.run().findings == [] and check.run().findings == []
    key_id, _ = mint_key_with_sql(signed)
    outcome = check.run()
    assert any(f"key {key_id}" in f and "no key.created entry" in f for f in outcome.alerted)


def test_one_process_per_installation_holds_the_self_check_lock(signed, database_url):
    other = open_store(database_url)
    try:
        a, b = InstallationLock(signed.db), InstallationLock(other.db)
        assert a.acquire() and a.acquire()
        assert not b.acquire()
        a.release()
        assert b.acquire()
        b.release()
    finally:
        other.close()


@pytest.mark.end_to_end
def test_the_server_revokes_again_a_key_unrevoked_behind_its_back(database_url, tmp_path, signer):
    store = open_store(database_url, bootstrap_admins=[ADMIN])
    try:
        key = store.keys.create(name="svc", owner="ops", actor=ADMIN)[0]
        store.keys.revoke(key.key.id, via="cli", actor=ADMIN, reason="compromised")
        server = start_server(database_url, tmp_path, {"APIKEYS_SELF_CHECK_INTERVAL": "0.3"})
        try:
            unrevoke_with_ddl(store, key.key.id)
            codes = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                request = urllib.request.Request(server.url + "/v1/keys/verify", method="POST",
                                                 data=json.dumps({"key": key.secret}).encode())
                with urllib.request.urlopen(request, timeout=5) as response:
                    codes.append(json.loads(response.read())["code"])
                if codes[-1] == "REVOKED":  # it was VALID after the update: the self-check revoked it again
                    break
                time.sleep(0.1)
            assert codes[-1] == "REVOKED", codes
            assert "key.revocation_restored" in {e.action for e in store.audit.oldest_first()}
            assert "self-check" in server.log() and key.secret not in server.log()
        finally:
            server.stop()
    finally:
        store.close()


def test_tamper_findings_are_counted_in_the_metrics(signed, signer):
    from prometheus_client.parser import text_string_to_metric_families

    from bot.metrics import MetricsEndpoint

    key = signed.keys.create(name="svc", owner="ops", actor=ADMIN)[0]
    signed.keys.revoke(key.key.id, via="cli", actor=ADMIN, reason="compromised")
    unrevoke_with_ddl(signed, key.key.id)
    insert_at_head(signed)
    SelfCheck(signed.db, signed.audit, public_key=signer.public_raw).run()
    samples = {(s.name, s.labels.get("action")): s.value
               for f in text_string_to_metric_families(MetricsEndpoint(signed).render().decode()) for s in f.samples}
    assert samples[("apikeys_tamper_detected_total", "audit.tamper_detected")] >= 1
    assert samples[("apikeys_tamper_detected_total", "key.revocation_restored")] == 1


def test_a_trigger_recreated_weaker_on_sqlite_is_named(signed, run_cli):
    if signed.db.dialect != "sqlite":
        pytest.skip("SQLite: a trigger's SQL is compared with what the migrations create")
    with signed.db.write() as session:
        session.execute(text("DROP TRIGGER api_keys_revocation_permanent"))
        session.execute(text("CREATE TRIGGER api_keys_revocation_permanent BEFORE UPDATE ON api_keys WHEN 0 "
                             "BEGIN SELECT RAISE(ABORT, 'revocation is permanent'); END"))
    result = run_cli("db", "status")
    assert result.code == 1 and "api_keys_revocation_permanent on api_keys: altered" in result.out


def test_db_upgrade_as_the_owner_puts_back_what_was_removed_disabled_or_altered(signed, run_cli):
    with signed.db.write() as session:
        if signed.db.dialect == "postgresql":
            session.execute(text("ALTER TABLE api_keys DISABLE TRIGGER api_keys_guard"))
            session.execute(text("DROP TRIGGER audit_events_append_only ON audit_events"))
            session.execute(text("CREATE OR REPLACE FUNCTION apikeys_guard_keys() RETURNS trigger AS $$ "
                                 "BEGIN RETURN NEW; END $$ LANGUAGE plpgsql"))
        else:
            session.execute(text("DROP TRIGGER api_keys_revocation_permanent"))
            session.execute(text("DROP TRIGGER audit_events_append_only_update"))
    assert run_cli("db", "status").code == 1
    assert run_cli("db", "upgrade").code == 0
    status = run_cli("db", "status")
    assert status.code == 0 and "permanence triggers present and enabled" in status.out
    assert_revocation_guarded(signed)  # the guard works again, body and all


def test_the_audit_channel_is_told_in_words_what_was_found(signed, signer):
    from bot.slack.audit_posts import audit_post

    key = signed.keys.create(name="svc", owner="ops", actor=ADMIN)[0]
    signed.keys.revoke(key.key.id, via="cli", actor=ADMIN, reason="compromised")
    unrevoke_with_ddl(signed, key.key.id)
    mint_key_with_sql(signed)
    SelfCheck(signed.db, signed.audit, public_key=signer.public_raw).run()
    entries = signed.audit.oldest_first()
    restored = audit_post([e for e in entries if e.action == "key.revocation_restored"])
    assert "Revocation restored" in restored[0] and f"apk_…{key.secret[-4:]}" in str(restored[1])
    assert key.secret not in str(restored)
    alert = audit_post([next(e for e in entries if e.action == "audit.tamper_detected" and "key.created" in e.details)])
    assert alert[0].startswith(":rotating_light: *Tamper detected*") and "no key.created entry" in str(alert[1])


def test_a_row_made_to_break_the_self_check_neither_stops_it_nor_revokes_anything(signed, signer):
    """One INSERT by a runtime role: a key.revoked entry for a valid key, with a reason too long for
    the column and a time that does not parse (SQLite). It is named, revokes nothing, and every later
    finding is still alerted."""
    key = signed.keys.create(name="svc", owner="ops", actor=ADMIN)[0]
    insert_at_head(signed, action="key.revoked", key_id=key.key.id, details={"reason": "x" * 40, "note": "y" * 5000})
    if signed.db.dialect == "sqlite":
        forged = insert_at_head(signed, action="key.revoked", key_id=key.key.id, details={"reason": "other"})
        from .helpers import drop_audit_triggers
        drop_audit_triggers(signed)
        with signed.db.write() as session:
            session.execute(text("UPDATE audit_events SET at = 'garbage' WHERE id = :id"), {"id": forged})
    check = SelfCheck(signed.db, signed.audit, public_key=signer.public_raw)
    first = check.run()
    assert first.restored == [] and signed.keys.verify(key.secret).code.value == "VALID"
    assert first.findings  # the forged entries are named
    with signed.db.write() as session:
        if signed.db.dialect == "postgresql":
            session.execute(text("ALTER TABLE api_keys DISABLE TRIGGER api_keys_guard"))
        else:
            session.execute(text("DROP TRIGGER api_keys_revocation_permanent"))
    later = check.run()
    assert any("api_keys" in finding and "trigger" in finding for finding in later.alerted), later


@pytest.mark.parametrize("attack", [
    ["CREATE OR REPLACE FUNCTION apikeys_guard_keys() RETURNS trigger AS $$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql"],
    ["DROP TRIGGER api_keys_guard ON api_keys",
     "CREATE TRIGGER api_keys_guard BEFORE INSERT ON api_keys FOR EACH ROW WHEN (false) EXECUTE FUNCTION apikeys_guard_keys()"],
], ids=["guard-function-emptied", "trigger-recreated-on-other-events"])
def test_a_guard_changed_on_postgresql_is_named_and_put_back(signed, run_cli, attack):
    if signed.db.dialect != "postgresql":
        pytest.skip("PostgreSQL: a guard's function body and events are compared with the migrations'")
    with signed.db.write() as session:
        for statement in attack:
            session.execute(text(statement))
    status = run_cli("db", "status")
    assert status.code == 1 and "api_keys_guard on api_keys: altered" in status.out
    assert run_cli("db", "upgrade").code == 0
    assert run_cli("db", "status").code == 0
    assert_revocation_guarded(signed)
