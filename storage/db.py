"""Engines, sessions and schema.

SQLite is configured for a server and a CLI writing at the same time: WAL journal, a busy
timeout, foreign keys on, and write transactions opened with ``BEGIN IMMEDIATE`` so that two
writers queue on the lock instead of failing with "database is locked" when a read
transaction tries to upgrade. PostgreSQL uses ordinary transactions plus row locks.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, SQLModel, create_engine

from . import models  # noqa: F401  (registers the tables)
from .errors import DatabaseUnavailable, InvalidInput

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000

_SQLITE_TRIGGERS = [
    # Revocation is permanent: once revoked_at is set, it and its who/why never change.
    """CREATE TRIGGER IF NOT EXISTS api_keys_revocation_permanent
       BEFORE UPDATE ON api_keys
       WHEN OLD.revoked_at IS NOT NULL AND (
            NEW.revoked_at IS NULL OR NEW.revoked_at IS NOT OLD.revoked_at
            OR NEW.revoked_by IS NOT OLD.revoked_by OR NEW.revoke_reason IS NOT OLD.revoke_reason
            OR NEW.revoke_note IS NOT OLD.revoke_note)
       BEGIN SELECT RAISE(ABORT, 'revocation is permanent'); END""",
    # The digest identifies the key for ever (a revoked key keeps answering REVOKED).
    """CREATE TRIGGER IF NOT EXISTS api_keys_digest_immutable
       BEFORE UPDATE OF digest ON api_keys WHEN NEW.digest IS NOT OLD.digest
       BEGIN SELECT RAISE(ABORT, 'a key digest never changes'); END""",
    """CREATE TRIGGER IF NOT EXISTS api_keys_never_deleted
       BEFORE DELETE ON api_keys
       BEGIN SELECT RAISE(ABORT, 'keys are never deleted; revoke them'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_events_append_only_update
       BEFORE UPDATE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_events_append_only_delete
       BEFORE DELETE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
]

_POSTGRES_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION apikeys_guard_keys() RETURNS trigger AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'keys are never deleted; revoke them';
      END IF;
      IF NEW.digest IS DISTINCT FROM OLD.digest THEN
        RAISE EXCEPTION 'a key digest never changes';
      END IF;
      IF OLD.revoked_at IS NOT NULL AND (
           NEW.revoked_at IS DISTINCT FROM OLD.revoked_at
           OR NEW.revoked_by IS DISTINCT FROM OLD.revoked_by
           OR NEW.revoke_reason IS DISTINCT FROM OLD.revoke_reason
           OR NEW.revoke_note IS DISTINCT FROM OLD.revoke_note) THEN
        RAISE EXCEPTION 'revocation is permanent';
      END IF;
      RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS api_keys_guard ON api_keys",
    """CREATE TRIGGER api_keys_guard BEFORE UPDATE OR DELETE ON api_keys
       FOR EACH ROW EXECUTE FUNCTION apikeys_guard_keys()""",
    """CREATE OR REPLACE FUNCTION apikeys_audit_append_only() RETURNS trigger AS $$
    BEGIN
      RAISE EXCEPTION 'the audit log is append-only';
    END $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events",
    """CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
       FOR EACH ROW EXECUTE FUNCTION apikeys_audit_append_only()""",
]


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        pool_pre_ping=False,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised by every test
        # Let SQLAlchemy (not the driver) decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql(begin)

    return engine


class Database:
    """Owns the engines. ``read()`` and ``write()`` give sessions that commit or roll back."""

    def __init__(self, url: str):
        try:
            parsed = make_url(url)
        except Exception as exc:  # sqlalchemy.exc.ArgumentError and friends
            raise InvalidInput(f"DATABASE_URL is not a valid database URL ({exc})") from None
        self.url = url
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            self.write_engine = _sqlite_engine(url, immediate=True)
            self.read_engine = _sqlite_engine(url, immediate=False)
        elif self.dialect == "postgresql":
            self.write_engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
            self.read_engine = self.write_engine
        else:
            raise InvalidInput(
                f"unsupported database {self.dialect!r}: use sqlite:///path.db or postgresql+psycopg://..."
            )

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        with self._session(self.write_engine) as session:
            yield session

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
            if exc.connection_invalidated or _is_unavailable(exc):
                raise DatabaseUnavailable(f"the database is unavailable ({type(exc.orig).__name__})") from exc
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def create_schema(self) -> None:
        """Create missing tables, indexes and guard triggers (idempotent)."""
        SQLModel.metadata.create_all(self.write_engine)
        triggers = _SQLITE_TRIGGERS if self.dialect == "sqlite" else _POSTGRES_TRIGGERS
        with self.write_engine.begin() as conn:
            if self.dialect == "postgresql":
                # Two processes starting at once must not race on DDL.
                conn.execute(text("SELECT pg_advisory_xact_lock(7262311)"))
            for statement in triggers:
                conn.exec_driver_sql(statement)
            # The audit chain's head row exists from the start, so appenders can always lock it.
            conn.execute(
                text("INSERT INTO audit_head (id, last_id, last_hash) VALUES (1, 0, :genesis) ON CONFLICT (id) DO NOTHING"),
                {"genesis": "0" * 64},
            )

    def ping(self) -> bool:
        try:
            with self.read_engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # any failure means "not healthy"
            log.warning("database ping failed", exc_info=False)
            return False

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def _is_unavailable(exc: DBAPIError) -> bool:
    name = type(exc.orig).__name__
    return name in {"OperationalError", "InterfaceError"} and "locked" not in str(exc.orig)
