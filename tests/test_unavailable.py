"""When the key store cannot be read, a key check answers 503 ``UNAVAILABLE`` (never 500, never a
pass) and the log says so once a minute; when it can be read but not written, every key gets its
correct code and ``/healthz`` says 503 (revocations would fail)."""

from __future__ import annotations

import io
import json
import logging
from contextlib import contextmanager
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import storage.db
from bot.api import KeyApiApp
from storage import open_store

from .helpers import ADMIN


def call(app, path: str, method: str = "GET", body: bytes = b"", headers: dict | None = None):
    environ = {"PATH_INFO": path, "REQUEST_METHOD": method, "wsgi.input": io.BytesIO(body),
               "CONTENT_LENGTH": str(len(body)), **(headers or {})}
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(response_headers)

    payload = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], json.loads(payload) if payload else None


def verify(app, secret: str):
    return call(app, "/v1/keys/verify", "POST", json.dumps({"key": secret}).encode())


def auth(app, secret: str):
    return call(app, "/v1/auth", headers={"HTTP_AUTHORIZATION": f"Bearer {secret}"})


@contextmanager
def server_admin(database_url: str):
    """A connection to the PostgreSQL server's own database (to drop or alter the test's)."""
    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            yield conn, url.database
    finally:
        admin.dispose()


def take_down(database_url: str, tmp_path: Path) -> None:
    """The database goes away: PostgreSQL's database dropped (its connections terminated); SQLite's
    file gone, with a directory where it was (it cannot be created again)."""
    if database_url.startswith("postgresql"):
        with server_admin(database_url) as (conn, name):
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        return
    path = Path(make_url(database_url).database)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.mkdir()


@pytest.fixture
def app_and_keys(database_url):
    store = open_store(database_url, bootstrap_admins=[ADMIN])
    valid = store.keys.create(name="svc", owner="ops", actor=ADMIN)[0]
    revoked = store.keys.create(name="old", owner="ops", actor=ADMIN)[0]
    store.keys.revoke(revoked.key.id, via="cli", actor=ADMIN, reason="rotation")
    yield KeyApiApp(store), valid, revoked
    store.close()


def test_a_key_store_that_cannot_be_read_answers_503_unavailable_and_logs_once_a_minute(
        app_and_keys, database_url, tmp_path, caplog):
    app, valid, _ = app_and_keys
    assert verify(app, valid.secret)[0] == 200
    take_down(database_url, tmp_path)
    app.store.db.dispose()  # SQLite: an open connection would go on reading the unlinked file
    caplog.set_level(logging.INFO)
    with freeze_time("2030-01-01 10:00:00") as clock:
        for _ in range(5):
            status, headers, body = verify(app, valid.secret)
            assert (status, body["code"]) == (503, "UNAVAILABLE") and headers["Retry-After"]
            status, headers, body = auth(app, valid.secret)
            assert (status, body["code"]) == (503, "UNAVAILABLE")
        assert sum("database_unavailable" in r.getMessage() for r in caplog.records) == 1
        assert not any(r.exc_info for r in caplog.records)  # no traceback per request
        clock.tick(61)
        verify(app, valid.secret)
        assert sum("database_unavailable" in r.getMessage() for r in caplog.records) == 2
    assert call(app, "/healthz")[0] == 503


@pytest.fixture
def read_only(database_url, monkeypatch):
    """From now on the database can be read but not written: PostgreSQL's default_transaction_read_only
    (as on a standby), SQLite's query_only on every new connection (root ignores a file's mode)."""
    def make_read_only(store):
        if database_url.startswith("postgresql"):
            with server_admin(database_url) as (conn, name):
                conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
        else:
            configure = storage.db._configure_sqlite

            def query_only(connection):
                configure(connection)
                connection.execute("PRAGMA query_only = ON")

            monkeypatch.setattr(storage.db, "_configure_sqlite", query_only)
            real_connect = storage.db.sqlite3.connect

            def connect(*args, **kwargs):
                connection = real_connect(*args, **kwargs)
                connection.execute("PRAGMA query_only = ON")
                return connection

            monkeypatch.setattr(storage.db.sqlite3, "connect", connect)
        store.db.dispose()  # new connections from here on
        store.db._writable_cache = None

    yield make_read_only
    if database_url.startswith("postgresql"):
        with server_admin(database_url) as (conn, name):
            conn.execute(text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only'))


def test_a_read_only_database_gives_every_key_its_code_and_health_says_it_cannot_write(app_and_keys, read_only):
    app, valid, revoked = app_and_keys
    assert call(app, "/healthz")[:1] == (200,)
    read_only(app.store)
    assert verify(app, valid.secret)[2]["code"] == "VALID"  # its last use cannot be recorded: still VALID
    assert verify(app, revoked.secret)[2]["code"] == "REVOKED"  # its use cannot be counted: still REVOKED
    assert auth(app, valid.secret)[0] == 204
    assert auth(app, revoked.secret)[0] == 401
    assert verify(app, "apk_" + "x" * 28)[2]["code"] == "MALFORMED"
    status, _, body = call(app, "/healthz")
    assert status == 503 and body["database"].startswith("read-only")


def test_health_logs_an_unreachable_database_once_a_minute_not_per_probe(app_and_keys, database_url, tmp_path, caplog):
    app, _, _ = app_and_keys
    take_down(database_url, tmp_path)
    app.store.db.dispose()
    caplog.set_level(logging.INFO)
    with freeze_time("2030-01-01 10:00:00") as clock:
        for _ in range(5):  # a load balancer probes every few seconds
            status, _, body = call(app, "/healthz")
            assert (status, body["database"]) == (503, "unreachable")
            clock.tick(5)
        pings = [r for r in caplog.records if "ping failed" in r.getMessage()]
        assert len(pings) == 1 and not pings[0].exc_info
        clock.tick(61)
        call(app, "/healthz")
        assert sum("ping failed" in r.getMessage() for r in caplog.records) == 2


def test_a_dropped_verification_connection_is_replaced_and_never_a_pass(app_and_keys, database_url):
    """PostgreSQL: each thread checks keys on a connection of its own (one round trip). When the server
    drops it, the check connects again and answers as before: a revoked key stays refused."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's per-thread verification connection")
    app, valid, revoked = app_and_keys
    assert auth(app, valid.secret)[0] == 204 and auth(app, revoked.secret)[0] == 401
    with server_admin(database_url) as (conn, name):
        killed = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": name}).scalar()
    assert killed >= 1
    assert auth(app, revoked.secret)[0] == 401 and auth(app, valid.secret)[0] == 204


def test_the_postgres_check_reads_values_as_the_driver_would_and_a_refused_statement_is_unavailable(store, database_url):
    """The key check's libpq path: timestamps come back aware and in UTC, NULLs as None, and a statement
    the server refuses answers 503 (``DatabaseUnavailable``), never a pass."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's libpq path")
    from datetime import timedelta

    from storage import DatabaseUnavailable

    created = store.keys.create(name="svc", owner="ops", actor=ADMIN, expires_in=timedelta(days=2))[0]
    checked = store.keys.verify(created.secret)
    assert checked.code.value == "VALID" and checked.expires_at == created.key.expires_at
    assert checked.expires_at.utcoffset() == timedelta(0)
    assert store.keys.get(created.key.id).revoked_at is None and store.keys.get(created.key.id).last4 == created.key.last4
    with pytest.raises(DatabaseUnavailable):
        store.db.fetch_one("SELECT no_such_column FROM api_keys WHERE id = %(id)s", {"id": created.key.id})
    assert store.keys.verify(created.secret).code.value == "VALID"  # the connection goes on serving


# ---- the PostgreSQL check path, held to what SQLAlchemy's own connection does (found in review) ----
def _postgres_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's libpq path")


def test_the_check_connects_with_the_urls_own_options_so_a_search_path_is_kept(database_url):
    """A URL that sets ``options`` (here the schema) is obeyed by the check too: with an older copy of
    the tables in ``public``, a key revoked in the URL's schema answers REVOKED, not the copy's VALID."""
    _postgres_only(database_url)
    owner = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.execute(text("CREATE SCHEMA app"))
    open_store(database_url).close()  # the copy in public
    in_app = make_url(database_url).update_query_dict({"options": "-csearch_path=app"}).render_as_string(
        hide_password=False)
    store = open_store(in_app)
    try:
        created = store.keys.create(name="svc", owner="ops", actor=ADMIN)[0]
        with owner.connect() as conn:
            conn.execute(text("INSERT INTO public.api_keys SELECT * FROM app.api_keys"))
        assert store.keys.verify(created.secret).code.value == "VALID"
        store.keys.revoke(created.key.id, actor=ADMIN, via="cli")
        assert store.keys.verify(created.secret).code.value == "REVOKED"
    finally:
        store.close()
        owner.dispose()


def test_a_statement_the_server_stops_accepting_is_prepared_again_not_refused_for_ever(store, database_url):
    """A migration that changes a column's type invalidates the prepared check ("cached plan must not
    change result type"): the next check prepares it again on a new connection and answers."""
    _postgres_only(database_url)
    created = store.keys.create(name="svc", owner="ops", actor=ADMIN)[0]
    assert store.keys.verify(created.secret).code.value == "VALID"
    owner = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.execute(text("ALTER TABLE api_keys ALTER COLUMN name TYPE varchar(300)"))
    owner.dispose()
    assert store.keys.verify(created.secret).code.value == "VALID"
    assert store.db.ping()


def test_the_check_reads_times_whatever_the_sessions_date_style_and_time_zone(database_url):
    _postgres_only(database_url)
    from datetime import timedelta

    with server_admin(database_url) as (conn, name):
        conn.execute(text(f"ALTER DATABASE \"{name}\" SET DateStyle = 'SQL, DMY'"))
        conn.execute(text(f"ALTER DATABASE \"{name}\" SET TimeZone = 'Pacific/Auckland'"))
    store = open_store(database_url, bootstrap_admins=[ADMIN])
    try:
        created = store.keys.create(name="svc", owner="ops", actor=ADMIN, expires_in=timedelta(days=2))[0]
        checked = store.keys.verify(created.secret)
        assert checked.code.value == "VALID" and checked.expires_at == created.key.expires_at
    finally:
        store.close()


def test_the_checks_statement_numbers_each_parameter_once():
    from storage.db import _pg_statement

    _, names, sql = _pg_statement("SELECT %(a)s, %(b)s, %(a)s, '100%%'")
    assert names == ("a", "b") and sql == b"SELECT $1, $2, $1, '100%'"


def test_a_check_the_server_does_not_answer_in_time_is_a_503_not_a_wait(store, database_url):
    """A table locked by a migration (``ACCESS EXCLUSIVE``) or an overloaded server must not hold every
    request thread: the check's own connection has a statement timeout, and past it the check answers
    503 (``DatabaseUnavailable``) at once, without a second try that would double the wait. When the
    lock is gone the same thread checks again as before."""
    _postgres_only(database_url)
    import threading

    from storage import DatabaseUnavailable

    created = store.keys.create(name="svc", owner="ops", actor=ADMIN)[0]
    store.db.check_timeout_ms = 300
    store.db.dispose()  # connections made from here on take the timeout
    outcome: dict = {}

    def check():
        try:
            outcome["code"] = store.keys.verify(created.secret).code.value
        except DatabaseUnavailable as exc:
            outcome["unavailable"] = str(exc)

    owner = create_engine(database_url)
    try:
        with owner.connect() as conn:
            conn.execute(text("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE"))
            worker = threading.Thread(target=check, daemon=True)
            worker.start()
            worker.join(30)  # the lock is held until this block ends: a check with no timeout is still waiting
            assert not worker.is_alive(), "the check waited on the lock with no timeout"
            conn.rollback()
    finally:
        owner.dispose()
    assert "did not answer within 300 ms" in outcome.get("unavailable", ""), outcome
    assert store.keys.verify(created.secret).code.value == "VALID"
