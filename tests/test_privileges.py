"""Least privilege on real PostgreSQL: ``apikeys db grant ROLE`` gives a runtime role what the server
needs, and that role cannot disable a trigger, drop one, truncate or rewrite the log."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from storage import checkpoints, grants, open_store
from storage.selfcheck import SelfCheck

from .helpers import ADMIN, cli_runner
from .servers import start_server


@pytest.fixture
def runtime_role(database_url):
    """A fresh login role on the test database's server, and its URL; dropped afterwards."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: roles and privileges (SQLite has neither)")
    open_store(database_url).close()  # the schema, owned by the test's (owning) role
    role = f"apikeys_rt_{uuid.uuid4().hex[:10]}"
    owner = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'runtime'"))
    url = make_url(database_url).set(username=role, password="runtime").render_as_string(hide_password=False)
    try:
        yield role, url
    finally:
        with owner.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        owner.dispose()


def test_the_runtime_role_does_everything_the_server_does(runtime_role, database_url):
    role, url = runtime_role
    result = cli_runner(database_url)("db", "grant", role)
    assert result.code == 0, result.err
    signer = checkpoints.load_signer(checkpoints.generate()[0])
    store = open_store(url, bootstrap_admins=[ADMIN], create_schema=False, notify_channel="C0AUDIT", signer=signer)
    try:
        key = store.keys.create(name="svc", owner="ops", actor=ADMIN, count=2)[0]
        assert store.keys.verify(key.secret).code.value == "VALID"
        store.keys.revoke(key.key.id, via="cli", actor=ADMIN, reason="compromised")
        assert store.keys.verify(key.secret).code.value == "REVOKED"  # and the revoked use is counted
        store.admins.add("UREAL0001", actor=ADMIN)
        store.admins.add("UREAL0002", actor=ADMIN)
        store.admins.remove("UREAL0001", actor=ADMIN)
        assert store.outbox.backlog()[0] >= 1
        # the incident workflow: owners' channels, rotation with a one-time link, cards kept true, the expiry digest
        assert store.owners.set("ops", "C0OPS", actor=ADMIN)
        assert store.owners.set("ops", "C0OPS2", actor=ADMIN)
        other = store.keys.create(name="svc2", owner="ops", actor=ADMIN, expires_in=timedelta(days=5))[0]
        assert store.cards.keep([other.key.id], channel="C0INC", ts="1.000001", kind="list", context={}) >= 0
        seal = lambda session, key_id, secret, now: store.reveals.seal(  # noqa: E731
            session, key_id=key_id, secret=secret, for_user=ADMIN, now=now)
        rotated = store.keys.rotate(other.key.id, actor=ADMIN, via="cli", grace=timedelta(hours=1), seal=seal)
        assert store.reveals.look(rotated.sealed.token).state == "sealed"
        assert store.reveals.open(rotated.sealed.token).state == "opened"
        assert store.cards.of_key(other.key.id)
        store.expiry.send()
        store.reveals.sweep()
        store.owners.remove("ops", actor=ADMIN)
        outcome = SelfCheck(store.db, store.audit, public_key=signer.public_raw).run()
        assert outcome.findings == []
        assert grants.owner_warning(store.db) is None
        assert store.audit.verify(signer.public_raw) is None
    finally:
        store.close()


@pytest.mark.parametrize("statement", [
    "ALTER TABLE api_keys DISABLE TRIGGER api_keys_guard",
    "ALTER TABLE audit_events DISABLE TRIGGER ALL",
    "DROP TRIGGER audit_events_append_only ON audit_events",
    "TRUNCATE api_keys",
    "TRUNCATE audit_events",
    "UPDATE audit_events SET actor = 'someone else'",
    "DELETE FROM audit_checkpoints",
    "DELETE FROM api_keys",
    "CREATE TABLE mine (id int)",
    "INSERT INTO api_tokens (id, name, scopes, prefix, last4, digest, created_at, created_by, expires_at) VALUES "
    "('tok_00000000000000000', 'mint', 'keys:read', 'apkt', 'abcd', 'x', now(), 'm', now() + interval '1 day')",
    "CREATE OR REPLACE FUNCTION apikeys_guard_keys() RETURNS trigger AS $$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql",
])
def test_the_runtime_role_cannot_change_the_guards_or_the_log(runtime_role, database_url, statement):
    role, url = runtime_role
    assert cli_runner(database_url)("db", "grant", role).code == 0
    engine = create_engine(url)
    try:
        with pytest.raises(DBAPIError) as refused:
            with engine.begin() as conn:
                conn.execute(text(statement))
        assert "permission denied" in str(refused.value) or "must be owner" in str(refused.value)
    finally:
        engine.dispose()


def test_grant_refuses_what_would_not_be_least_privilege(runtime_role, database_url):
    role, _ = runtime_role
    run = cli_runner(database_url)
    owner = make_url(database_url).username
    for argv, message in [(("db", "grant", "no_such_role_x"), "there is no PostgreSQL role"),
                          (("db", "grant", owner), "superuser"),
                          (("db", "grant", "bad-name;"), "must be a PostgreSQL role name")]:
        result = run(*argv)
        assert result.code == 2 and message in result.err, (argv, result.err)


def test_the_server_warns_when_its_role_owns_the_tables_and_not_as_the_runtime_role(runtime_role, database_url,
                                                                                  tmp_path):
    role, url = runtime_role
    assert cli_runner(database_url)("db", "grant", role).code == 0
    assert "superuser" in grants.owner_warning(open_store(database_url, create_schema=False).db)
    server = start_server(url, tmp_path, {"DATABASE_MIGRATION_URL": database_url})
    try:
        assert "owns the tables" not in server.log() and "superuser" not in server.log()
    finally:
        server.stop()
    (tmp_path / "owner").mkdir()
    server = start_server(database_url, tmp_path / "owner")
    try:
        assert "is a superuser: whoever holds DATABASE_URL can disable the permanence triggers" in server.log()
    finally:
        server.stop()


def test_every_table_the_server_creates_has_its_runtime_privileges(store):
    """A table added without its line in RUNTIME_PRIVILEGES would be denied to the runtime role in production."""
    tables = set(inspect(store.db.write_engine).get_table_names())
    assert tables - set(grants.RUNTIME_PRIVILEGES) == set()


def test_grant_on_sqlite_says_what_to_do_instead(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    open_store(url).close()
    result = cli_runner(url)("db", "grant", "someone")
    assert result.code == 2 and "for PostgreSQL" in result.err


def _as_if_a_migration_added_a_table(database_url: str, role: str) -> None:
    """What an upgrade leaves behind: a table the runtime role was never granted."""
    owner = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.execute(text(f"REVOKE ALL ON TABLE owner_channels FROM {role}"))
    owner.dispose()


def test_a_runtime_role_missing_a_new_table_stops_the_start_and_db_status_names_it(runtime_role, database_url,
                                                                                    tmp_path):
    role, url = runtime_role
    assert cli_runner(database_url)("db", "grant", role).code == 0
    _as_if_a_migration_added_a_table(database_url, role)
    status = cli_runner(url)("db", "status")
    assert status.code == 1 and f"the role {role} lacks SELECT on owner_channels" in status.out, status.out
    server = start_server(url, tmp_path, wait=False)
    assert server.proc.wait(timeout=60) == 2
    assert f"cannot start: the database role {role} lacks SELECT on owner_channels" in server.log()
    assert f"apikeys db grant {role}" in server.log()


def test_with_the_owners_url_the_start_grants_what_a_migration_added(runtime_role, database_url, tmp_path):
    role, url = runtime_role
    assert cli_runner(database_url)("db", "grant", role).code == 0
    _as_if_a_migration_added_a_table(database_url, role)
    server = start_server(url, tmp_path, {"DATABASE_MIGRATION_URL": database_url})
    try:
        assert f"granted the runtime role {role} what the new schema needs (SELECT on owner_channels" in server.log()
    finally:
        server.stop()
    store = open_store(url, create_schema=False)
    try:
        assert grants.missing_privileges(store.db) == []
        assert store.owners.set("ops", "C0OPS", actor=ADMIN)
    finally:
        store.close()
    assert cli_runner(url)("db", "status").code == 0


def test_an_admin_token_is_made_as_the_owner_never_by_the_runtime_role(runtime_role, database_url):
    role, url = runtime_role
    assert cli_runner(database_url)("db", "grant", role).code == 0
    argv = ("tokens", "create", "--name", "ci", "--scope", "keys:read", "--actor", "alice")
    refused = cli_runner(url)(*argv)
    assert refused.code == 2 and "needs the tables' owner: set DATABASE_MIGRATION_URL" in refused.err, refused.err
    made = cli_runner(url)(*argv, env={"DATABASE_MIGRATION_URL": database_url})
    assert made.code == 0 and "apkt_" in made.out, made.err
    listed = cli_runner(url)("tokens", "list")  # the runtime role reads, and revokes
    assert listed.code == 0 and "ci" in listed.out
    token_id = listed.out.splitlines()[1].split()[0]
    assert cli_runner(url)("tokens", "revoke", token_id, "--actor", "alice").code == 0
