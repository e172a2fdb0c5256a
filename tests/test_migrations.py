"""Schema migrations: the models and the migrations agree, and going from one release's
database to the next keeps every key, event and admin."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

from storage import VerifyCode, migrate, open_store
from storage.db import Database


def test_the_migrated_schema_is_exactly_the_models(database_url):
    db = Database(database_url)
    migrate.upgrade(db)
    with db.write_engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
    assert migrate.current_revision(db) == migrate.head_revision()
    db.dispose()


def test_the_head_every_command_checks_against_is_the_newest_migration_script():
    """``SCHEMA_HEAD`` saves each CLI command from loading alembic; a new migration must move it."""
    assert migrate.head_revision() == migrate.scripts_head()


def test_upgrading_a_release_5_database_keeps_every_key_event_and_admin(database_url):
    """The previous release's database comes through the upgrade whole. It is filled through today's
    store where that writes only release 5's columns (creating keys, admins, the audit chain) and by
    hand where today's store would read rotation's columns, which the upgrade adds (a revocation)."""
    from sqlalchemy import text
    db = Database(database_url)
    assert migrate.upgrade(db, "0005") == "0005"
    # Fill it as release 5 did: keys, a revocation, an admin, the audit chain.
    old = open_store(database_url, create_schema=False)
    active = old.keys.create(name="billing", owner="payments", actor="cli:ops")[0]
    revoked = old.keys.create(name="legacy", owner="payments", actor="cli:ops")[0]
    batch = old.keys.create(name="ci", owner="build", actor="cli:ops", count=3)
    with old.db.write() as session:
        session.execute(text("UPDATE api_keys SET revoked_at = :at, revoked_by = 'cli:ops', revoke_reason = 'rotation' "
                             "WHERE id = :id"), {"at": revoked.key.created_at, "id": revoked.key.id})
    assert old.admins.add("UADMIN001", actor="cli:ops")
    events_before = [(e.id, e.action, e.key_id, e.hash) for e in old.audit.oldest_first()]
    old.close()

    assert migrate.upgrade(db) == migrate.head_revision()
    new = open_store(database_url)
    assert new.keys.verify(active.secret).code is VerifyCode.VALID
    assert new.keys.verify(revoked.secret).code is VerifyCode.REVOKED
    assert new.keys.flush_uses()
    assert all(new.keys.verify(c.secret).code is VerifyCode.VALID for c in batch)
    assert new.keys.count_keys(status="all") == 5
    assert [(e.id, e.action, e.key_id, e.hash) for e in new.audit.oldest_first()][: len(events_before)] == events_before
    assert new.audit.verify() is None
    assert [a.user_id for a in new.admins.list()] == ["UADMIN001"]
    # Release 2's features work on the upgraded database.
    assert new.keys.revoked_uses.get(revoked.key.id).uses == 1
    assert [k.name for k in new.keys.search(active.key.last4)] == ["billing"]
    assert new.receipts.first_use("x") and not new.receipts.first_use("x")
    new.close()
    db.dispose()


def test_the_note_of_a_revocation_is_immutable_after_the_upgrade(database_url):
    from sqlalchemy import update

    from storage import ApiKey

    db = Database(database_url)
    migrate.upgrade(db, "0001")
    migrate.upgrade(db)
    store = open_store(database_url)
    key = store.keys.create(name="k", owner="o", actor="a")[0].key
    store.keys.revoke(key.id, via="cli", actor="a", note="leaked in #general")
    with pytest.raises(DBAPIError, match="revocation is permanent"):
        with store.db.write() as session:
            session.execute(update(ApiKey).where(ApiKey.id == key.id).values(revoke_note="nothing to see"))
    assert store.keys.get(key.id).revoke_note == "leaked in #general"
    store.close()
    db.dispose()


def test_concurrent_upgrades_of_a_fresh_database_all_succeed(database_url):
    results, errors = [], []
    barrier = threading.Barrier(4)

    def run():
        db = Database(database_url)
        try:
            barrier.wait()
            results.append(migrate.upgrade(db))
        except Exception as exc:  # collected and asserted below
            errors.append(repr(exc))
        finally:
            db.dispose()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [migrate.head_revision()] * 4


def test_a_database_from_before_migrations_is_adopted(database_url):
    """Tables created without Alembic (as early development builds did) are stamped and upgraded."""
    db = Database(database_url)
    migrate.upgrade(db, "0001")
    with db.write_engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
    assert migrate.current_revision(db) is None
    assert migrate.upgrade(db) == migrate.head_revision()
    db.dispose()


def test_cli_db_status_and_upgrade(run_cli_unmigrated, database_url):
    run_cli = run_cli_unmigrated
    db = Database(database_url)
    migrate.upgrade(db, "0001")
    status = run_cli("db", "status")
    assert status.code == 1 and "run 'apikeys db upgrade'" in status.out
    upgrade = run_cli("db", "upgrade")
    assert upgrade.code == 0 and migrate.head_revision() in upgrade.out
    assert run_cli("db", "status").code == 0
    db.dispose()


@pytest.mark.parametrize("argv", [("list",), ("create", "--name", "x", "--owner", "ops"), ("audit",),
                                  ("admins", "list"), ("verify", "garbage")])
def test_cli_commands_other_than_db_upgrade_never_migrate(run_cli_unmigrated, database_url, argv):
    """An older or newer CLI pointed at production must not apply DDL on the side."""
    db = Database(database_url)
    try:
        migrate.upgrade(db, "0002")
        result = run_cli_unmigrated(*argv)
        assert result.code == 2 and result.out == ""
        assert result.err.count("\n") == 1 and "revision 0002" in result.err and "apikeys db upgrade" in result.err
        assert migrate.current_revision(db) == "0002"
    finally:
        db.dispose()


def test_cli_on_an_empty_database_creates_nothing(run_cli_unmigrated, database_url):
    from sqlalchemy import inspect

    result = run_cli_unmigrated("list")
    assert result.code == 2 and "empty" in result.err and "apikeys db upgrade" in result.err
    db = Database(database_url)
    try:
        with db.read_engine.connect() as conn:
            assert "api_keys" not in inspect(conn).get_table_names()
    finally:
        db.dispose()
