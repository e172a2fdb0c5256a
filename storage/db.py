"""Engines, sessions and schema.

SQLite is configured for a server and a CLI writing at the same time: WAL journal, a busy
timeout, foreign keys on, and write transactions opened with ``BEGIN IMMEDIATE`` so that two
writers queue on the lock instead of failing with "database is locked" when a read
transaction tries to upgrade. PostgreSQL uses ordinary transactions plus row locks.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import logging
import os
import re
import sqlite3
import struct
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import bindparam, event, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, create_engine

from . import models  # noqa: F401  (registers the tables)
from .errors import DatabaseUnavailable, InvalidInput

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT = 5  # seconds: a key check waits at most this long for a connection, then answers 503
PG_CHECK_TIMEOUT_MS = 2000  # a key check's statement (a table a migration locked, an overloaded server): then 503
SQLITE_CACHE_KIB = 1024  # per connection (SQLite's default is 2 MiB); see _configure_sqlite
BULK_CACHE_KIB, BULK_CACHE_FROM = 64 * 1024, 1000  # a batch of more than 1,000 rows: 64 MiB while it runs

def _enable_wal(cursor) -> None:
    """Switch a database to WAL once. Switching takes an exclusive lock and SQLite answers "database is
    locked" at once (without waiting) when another connection is doing the same, as happens when a
    server's workers and a CLI open a brand-new database together: retry for a while."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _configure_sqlite(dbapi_connection: sqlite3.Connection) -> None:
    # Let SQLAlchemy (not the driver) decide when transactions begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    _enable_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # 1 MiB of page cache per connection (SQLite's default is 2 MiB): a worker holds many
    # connections and the operating system caches the file anyway.
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    # Statement journals in memory: each row of a bulk insert (its triggers may abort it) journals
    # the pages it changes, and on a temporary file that was twenty system calls a row.
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


class _ThreadConnection:
    """One thread's verification connection (see ``Database.fetch_one``); held by that thread only."""

    __slots__ = ("connection", "generation", "prepared", "busy", "timeout_ms", "__weakref__")

    def __init__(self, connection, generation: int):
        self.connection = connection
        self.generation = generation
        self.prepared: set[bytes] = set()  # PostgreSQL: the statements prepared on this connection
        self.busy = False  # PostgreSQL: a query is under way (dispose leaves it to its thread)
        self.timeout_ms = 0  # PostgreSQL: the connection's statement timeout


class _PgFailure(Exception):
    """A libpq result that is not the rows asked for."""

    def __init__(self, result):
        from psycopg import pq

        message = result.error_message.decode("utf-8", "replace").strip() if result.error_message else ""
        super().__init__(message.splitlines()[0][:200] if message else str(result.status))
        self.sqlstate = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()

    @property
    def timed_out(self) -> bool:
        return self.sqlstate == "57014"  # query_canceled: the statement timeout


_PARAM_RE = re.compile(r"%\((\w+)\)s")


@functools.lru_cache(maxsize=64)
def _pg_statement(sql: str) -> tuple[bytes, tuple[str, ...], bytes]:
    """A prebuilt statement's name on the server, its parameters' names in ``$n`` order, and its text
    with SQLAlchemy's ``%(name)s`` placeholders as libpq's ``$1`` … (a name used twice is one
    parameter) and ``%%`` as ``%``."""
    order: dict[str, int] = {}
    text = _PARAM_RE.sub(lambda m: f"${order.setdefault(m.group(1), len(order) + 1)}", sql).replace("%%", "%")
    return b"apikeys_" + hashlib.sha256(sql.encode()).hexdigest()[:16].encode(), tuple(order), text.encode()


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)  # binary timestamps count microseconds from here
_TIMESTAMPTZ, _TIMESTAMP, _BOOL, _INT2, _INT4, _INT8 = 1184, 1114, 16, 21, 23, 20
_INT_FORMATS = {_INT2: ">h", _INT4: ">i", _INT8: ">q"}


def _pg_value(raw: bytes | None, oid: int):
    """A binary-format column as psycopg would give it: text as str, integers, booleans, timestamps
    (with time zone: aware, in UTC; without: naive), NULL as None."""
    if raw is None:
        return None
    if oid == _TIMESTAMPTZ or oid == _TIMESTAMP:
        moment = _PG_EPOCH + timedelta(microseconds=struct.unpack(">q", raw)[0])
        return moment if oid == _TIMESTAMPTZ else moment.replace(tzinfo=None)
    if oid in _INT_FORMATS:
        return struct.unpack(_INT_FORMATS[oid], raw)[0]
    if oid == _BOOL:
        return raw == b"\x01"
    return raw.decode()


def _sqlite_engine(url: str, *, immediate: bool, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        pool_pre_ping=False,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised by every test
        _configure_sqlite(dbapi_connection)

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql(begin)

    return engine


HEALTH_SQL = "SELECT last_id FROM audit_head WHERE id = 1"  # the one row every migrated store has
# Needs a write transaction and the UPDATE privilege, changes nothing: refused by a read-only database
# (a PostgreSQL standby or default_transaction_read_only, a read-only SQLite file), a role without it.
WRITE_PROBE_SQL = "UPDATE audit_head SET last_id = last_id WHERE 1 = 0"
WRITABLE_TTL = 5.0  # seconds a write probe's answer is kept (health is asked often)
PING_COMPLAINT_EVERY = 60.0  # seconds between two log lines about a failing health ping


class BulkInsert:
    """An INSERT of many rows built from a table's columns, compiled once for a dialect, executed
    with the driver's ``executemany`` on the session's own connection (so inside its transaction):
    no ORM unit of work and no per-row statement compilation. Values go through each column's
    own bind processing (the models' UTCDateTime included), so the rows written are exactly what
    the ORM would write; a value that repeats from row to row (a batch's one timestamp) is
    processed once."""

    def __init__(self, table, columns: Sequence[str], dialect):
        cols = [table.c[name] for name in columns]
        compiled = insert(table).values({c.name: bindparam(c.name) for c in cols}).compile(dialect=dialect)
        self.sql = str(compiled)
        self.order = list(compiled.positiontup) if compiled.positional else None
        self.columns = list(columns)
        self.processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in cols]

    def execute(self, session, rows: Iterable[Sequence[Any]]) -> None:
        """``rows``: tuples in ``columns`` order."""
        processed = [(i, process) for i, process in enumerate(self.processors) if process is not None]
        if processed:
            last: dict[int, tuple[Any, Any]] = {}
            prepared = []
            for row in rows:
                values = list(row)
                for i, process in processed:
                    value = values[i]
                    if value is not None:
                        seen = last.get(i)
                        if seen is None or seen[0] is not value:
                            seen = last[i] = (value, process(value))
                        values[i] = seen[1]
                prepared.append(values)
        else:
            prepared = rows
        if self.order is not None:
            if self.order == self.columns:
                params = [tuple(values) for values in prepared]
            else:
                index = [self.columns.index(name) for name in self.order]
                params = [tuple(values[i] for i in index) for values in prepared]
        else:
            params = [dict(zip(self.columns, values, strict=True)) for values in prepared]
        if not params:
            return
        connection = session.connection()
        if len(params) > BULK_CACHE_FROM and connection.dialect.name == "sqlite":
            # A big batch dirties more pages than a connection's usual cache holds; spilling them
            # mid-transaction and reading them back cost more than the inserts. Give the batch
            # room for the transaction's length (the pool's next user gets the usual size back).
            connection.exec_driver_sql(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
            try:
                connection.exec_driver_sql(self.sql, params)
            finally:
                connection.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        else:
            connection.exec_driver_sql(self.sql, params)


def _create_private(path: str) -> None:
    """A new SQLite database file is created mode 0600 before SQLite opens it: its -wal and -shm
    files take the database file's mode, so none of the three is readable by other users whatever the
    umask. An existing file is left as it is."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return
    except OSError:
        return  # a directory that does not exist or cannot be written: SQLite says so when it opens it
    os.chmod(path, 0o600)


def sqlite_file(parsed) -> str | None:
    """The file a SQLite URL opens (``sqlite:///a.db``, ``…?timeout=30``, ``file:a.db?uri=true``,
    ``file:///srv/a.db?uri=true``), or None for an in-memory database."""
    path = parsed.database
    if not path or path == ":memory:":
        return None
    if not path.startswith("file:") or str(parsed.query.get("uri", "")).lower() not in ("true", "1"):
        return path  # without uri=true, "file:…" is a file's name like any other
    if parsed.query.get("mode") == "memory":
        return None
    rest = path.removeprefix("file:")
    if rest.startswith("//"):  # file://[localhost]/absolute/path
        host, _, tail = rest[2:].partition("/")
        if host not in ("", "localhost"):
            return None
        rest = "/" + tail
    return None if rest in ("", ":memory:") else rest


class Database:
    """Owns the engines. ``read()`` and ``write()`` give sessions that commit or roll back."""

    def __init__(self, url: str, *, pool_size: int = 10):
        """``pool_size``: connections kept open per engine; size it to the threads that use it, or
        every request beyond it pays for opening (and configuring) a new connection."""
        try:
            parsed = make_url(url)
        except Exception as exc:  # sqlalchemy.exc.ArgumentError and friends
            raise InvalidInput(f"DATABASE_URL is not a valid database URL ({exc})") from None
        self.url = url
        self.dialect = parsed.get_backend_name()
        self._joined: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
            f"apikeys_transaction_{id(self)}", default=None)
        # SQLite file databases: one connection per thread for ``fetch_one`` (see there).
        self._sqlite_path: str | None = None
        self._pg_checks = False
        self._local = threading.local()
        self._thread_connections: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._connections_lock = threading.Lock()
        self._generation = 0
        self.check_timeout_ms = PG_CHECK_TIMEOUT_MS  # PostgreSQL: taken by each check connection when it opens
        if self.dialect == "sqlite":
            # SQLite runs one writer at a time: a few pooled write connections are enough.
            self.write_engine = _sqlite_engine(url, immediate=True, pool_size=min(pool_size, 3))
            self.read_engine = _sqlite_engine(url, immediate=False, pool_size=pool_size)
            path = parsed.database
            if path and path != ":memory:" and not parsed.query and not path.startswith("file:"):
                self._sqlite_path = path
            private = sqlite_file(parsed)  # however the URL spells it: query parameters, a file: URI
            if private is not None and parsed.query.get("mode") != "ro":  # ro: SQLite must find it, not us make it
                _create_private(private)
        elif self.dialect == "postgresql":
            self.write_engine = create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size)
            self.read_engine = self.write_engine
            # ``fetch_one`` (the key check, health): a connection per thread, straight from psycopg.
            self._pg_checks = True
        else:
            raise InvalidInput(
                f"unsupported database {self.dialect!r}: use sqlite:///path.db or postgresql+psycopg://..."
            )

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        joined = self._joined.get()
        if joined is not None:  # inside ``transaction()``: one commit for everything
            yield joined
            return
        with self._session(self.write_engine) as session:
            yield session

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction that every ``write()`` inside it joins: a service's change and what
        the caller records beside it (an idempotent write's first answer) commit together or not at all."""
        with self._session(self.write_engine) as session:
            token = self._joined.set(session)
            try:
                yield session
            finally:
                self._joined.reset(token)

    @contextlib.contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[Session]:
        """A read session; ``snapshot=True`` sees one consistent snapshot for all its queries."""
        with self._session(self.read_engine) as session:
            if snapshot and self.dialect == "postgresql":
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    @contextlib.contextmanager
    def _session(self, engine: Engine) -> Iterator[Session]:
        session = Session(engine, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except DBAPIError as exc:
            session.rollback()
            if exc.connection_invalidated or _is_unavailable(exc.orig):
                raise DatabaseUnavailable(f"the database is unavailable ({type(exc.orig).__name__})") from exc
            raise
        except Exception as exc:
            session.rollback()
            if _is_unavailable(exc):  # the driver's own error, raised by a reconnect outside SQLAlchemy's wrapping
                raise DatabaseUnavailable(f"the database is unavailable ({type(exc).__name__})") from exc
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def insert(self, table):
        """INSERT with this dialect's ``on_conflict_do_*`` (SQLite and PostgreSQL spell it alike)."""
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)

    def ping(self) -> bool:
        """Whether the key store answers, on the path verifications take (``fetch_one``): one row of
        the schema is read, so a database that is reachable but empty, unreadable or of another
        application is not healthy (``SELECT 1`` would have said it was)."""
        try:
            return self.fetch_one(HEALTH_SQL, ()) is not None
        except Exception as exc:  # any failure means "not healthy"; said once a minute, not per probe
            now = time.monotonic()
            if now - getattr(self, "_ping_complaint", -PING_COMPLAINT_EVERY) >= PING_COMPLAINT_EVERY:
                self._ping_complaint = now
                log.warning("database ping failed: %s", type(getattr(exc, "__cause__", None) or exc).__name__)
            return False

    def writable(self) -> str | None:
        """None when revocations could be written now, else why not ("read-only: …"). Probed at most
        every WRITABLE_TTL seconds; on SQLite a writer holding the lock counts as writable."""
        now = time.monotonic()
        cached = getattr(self, "_writable_cache", None)
        if cached is not None and now - cached[0] < WRITABLE_TTL:
            return cached[1]
        problem = self._probe_write()
        self._writable_cache = (now, problem)
        return problem

    def _probe_write(self) -> str | None:
        try:
            if self._sqlite_path is not None:
                conn = sqlite3.connect(self._sqlite_path, timeout=0.5, isolation_level=None, check_same_thread=False)
                try:
                    conn.execute("BEGIN")
                    conn.execute(WRITE_PROBE_SQL)
                finally:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    conn.close()
                return None
            with self.write_engine.connect() as conn:
                with conn.begin() as transaction:
                    if self.dialect == "postgresql":
                        conn.exec_driver_sql("SET LOCAL statement_timeout = 2000")
                    conn.exec_driver_sql(WRITE_PROBE_SQL)
                    transaction.rollback()
            return None
        except Exception as exc:
            text = str(getattr(exc, "orig", None) or exc).lower()
            if "locked" in text or "busy" in text:
                return None  # another writer holds the lock: writes work
            if "read-only" in text or "readonly" in text or "read only" in text:
                return "read-only: revocations and audit entries cannot be written"
            if "permission denied" in text:
                return "not writable by this role: revocations and audit entries cannot be written"
            return f"not writable ({type(getattr(exc, 'orig', None) or exc).__name__})"

    def fetch_one(self, sql: str, params: tuple) -> tuple | None:
        """The first row of a prebuilt statement, for the key-verification hot path.

        On a SQLite file each calling thread uses a connection of its own, kept for the thread's
        life: no pool checkout, whose locks cost more than the lookup itself once a worker's
        threads contend for them. The connection is in autocommit mode and every row is fetched,
        so the statement's read transaction ends with the call and the next call sees everything
        committed before it (a revocation included). Elsewhere: a pooled DBAPI connection.
        """
        if self._sqlite_path is not None:
            conn = self._thread_connection()
            try:
                rows = conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if not _is_unavailable(exc):
                    raise
                raise DatabaseUnavailable(f"the database is unavailable ({exc})") from exc
            return rows[0] if rows else None
        if self._pg_checks:
            return self._fetch_one_postgres(sql, params)
        return self._fetch_one_pooled(sql, params)

    def _fetch_one_postgres(self, sql: str, params) -> tuple | None:
        """One round trip: the thread's own connection, in autocommit (no BEGIN, no ROLLBACK on
        return, no pre-ping), the statement prepared on the server once per connection and run through
        libpq directly (``PQexecPrepared``, which lets go of the interpreter lock while it waits; a
        third of the CPU of psycopg's cursor), its rows in binary (so no session setting, DateStyle or
        TimeZone, changes what is read). Anything that goes wrong — a connection the server dropped, a
        statement it refuses (a plan a migration changed, a pooler that lost it) — drops the connection
        and tries once more on a new one; when that fails too, the check answers 503
        (``DatabaseUnavailable``), never a pass."""
        import psycopg
        from psycopg import pq

        name, names, text = _pg_statement(sql)
        args = [None if (v := params[n]) is None else str(v).encode() for n in names] if names else None
        for attempt in (1, 2):
            held = self._pg_thread_connection()
            held.busy = True
            try:
                pgconn = held.connection.pgconn
                if name not in held.prepared:
                    prepared = pgconn.prepare(name, text)
                    if prepared.status != pq.ExecStatus.COMMAND_OK:
                        raise _PgFailure(prepared)
                    held.prepared.add(name)
                result = pgconn.exec_prepared(name, args, result_format=pq.Format.BINARY)
                if result.status != pq.ExecStatus.TUPLES_OK:
                    raise _PgFailure(result)
                if result.ntuples == 0:
                    return None
                return tuple(_pg_value(result.get_value(0, i), result.ftype(i)) for i in range(result.nfields))
            except (_PgFailure, psycopg.Error, OSError) as exc:
                if isinstance(exc, _PgFailure) and exc.timed_out:
                    # The connection is sound (the server cancelled the statement): kept, and no second
                    # try, which would only wait as long again.
                    raise DatabaseUnavailable(
                        f"the key store did not answer within {held.timeout_ms} ms (statement timeout)") from None
                self._local.pg = None
                try:
                    held.connection.close()
                except (psycopg.Error, OSError):  # closing a broken connection
                    pass
                if attempt == 2:
                    # Never chained: a driver's message can carry the connection string.
                    what = exc if isinstance(exc, _PgFailure) else type(exc).__name__
                    raise DatabaseUnavailable(f"the key store cannot be read ({what})") from None
            finally:
                held.busy = False
        raise AssertionError("unreachable")

    def _pg_thread_connection(self) -> _ThreadConnection:
        import psycopg

        held = getattr(self._local, "pg", None)
        if held is not None and (held.generation != self._generation or held.connection.closed):
            try:
                held.connection.close()  # this thread's own connection, from before a dispose()
            except (psycopg.Error, OSError):
                pass
            held = None
        if held is None:
            # Connected exactly as SQLAlchemy connects (the URL's hosts, options, sslmode, an escaped
            # password): only autocommit is added, and a connect timeout and keepalives where the URL sets none.
            _, kwargs = self.read_engine.dialect.create_connect_args(self.read_engine.url)
            kwargs.setdefault("connect_timeout", PG_CONNECT_TIMEOUT)
            kwargs.setdefault("keepalives", 1)
            kwargs.setdefault("keepalives_idle", 30)
            kwargs.setdefault("tcp_user_timeout", PG_CONNECT_TIMEOUT * 1000)  # a server gone silent mid-check
            timeout_ms = int(self.check_timeout_ms)
            conn = None
            try:
                conn = psycopg.connect(**kwargs, autocommit=True)
                # Session-wide on this connection only (it never serves anything but the check).
                conn.execute(f"SET statement_timeout = {timeout_ms}")
            except psycopg.Error as exc:
                if conn is not None:
                    conn.close()
                raise DatabaseUnavailable(f"the database is unavailable ({type(exc).__name__})") from None
            held = self._hold("pg", conn)
            held.timeout_ms = timeout_ms
        return held

    def _fetch_one_pooled(self, sql: str, params: tuple) -> tuple | None:
        try:
            raw = self.read_engine.raw_connection()
        except DBAPIError as exc:
            raise DatabaseUnavailable(f"the database is unavailable ({type(exc.orig).__name__})") from exc
        except Exception as exc:  # a reconnect after the pool was invalidated raises the driver's own error
            if not _is_unavailable(exc):
                raise
            raise DatabaseUnavailable(f"the database is unavailable ({type(exc).__name__})") from exc
        try:
            cursor = raw.cursor()
            cursor.execute(sql, params)
            row = cursor.fetchone()
            cursor.close()
        except Exception as exc:
            if not _is_unavailable(exc):
                raise
            raw.invalidate()  # the server went away: do not hand this connection out again
            raise DatabaseUnavailable(f"the database is unavailable ({type(exc).__name__})") from exc
        finally:
            raw.close()  # back to the pool (which rolls back whatever the driver opened)
        return row

    def _thread_connection(self) -> sqlite3.Connection:
        held = getattr(self._local, "held", None)
        if held is not None and held.generation == self._generation:
            return held.connection
        try:
            conn = sqlite3.connect(self._sqlite_path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
            _configure_sqlite(conn)
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(f"the database is unavailable ({exc})") from exc
        return self._hold("held", conn).connection

    def _hold(self, slot: str, conn) -> _ThreadConnection:
        """``conn`` as this thread's verification connection (``self._local.<slot>``), known to ``dispose``."""
        held = _ThreadConnection(conn, self._generation)
        with self._connections_lock:
            self._thread_connections.add(held)
        setattr(self._local, slot, held)  # the only strong reference: when the thread ends, the connection closes
        return held

    def dispose(self) -> None:
        with self._connections_lock:
            self._generation += 1  # threads open a fresh connection if they are called again
            held, self._thread_connections = list(self._thread_connections), weakref.WeakSet()
        for each in held:
            if not each.busy:  # a PostgreSQL check under way: its thread closes it after (the generation moved)
                each.connection.close()
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def _is_unavailable(driver_error: BaseException) -> bool:
    """Whether a driver's exception means the database cannot be reached (not a lock wait)."""
    name = type(driver_error).__name__
    return name in {"OperationalError", "InterfaceError"} and "locked" not in str(driver_error)
