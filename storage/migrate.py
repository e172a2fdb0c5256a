"""Schema migrations (Alembic), run in-process.

``upgrade(db)`` brings a database to the newest schema. It is safe when several processes start
at once: on PostgreSQL they queue on an advisory lock, on SQLite on the write lock. A database
created before migrations existed (tables but no ``alembic_version``) is adopted at revision 0001
and upgraded from there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from .alembic_config import alembic_config
from .db import Database
from .errors import DatabaseUnavailable, InvalidInput

log = logging.getLogger("apikeys.migrate")
LOCK_ID = 7262311
# The newest revision in migrations/versions (tests/test_migrations.py holds it to alembic's own
# answer). Every CLI command checks the database against it, so the check reads one row instead
# of importing alembic and loading every migration script (a quarter of a second per command).
SCHEMA_HEAD = "0007"


def _config(connection=None):
    return alembic_config(connection)


def head_revision() -> str:
    return SCHEMA_HEAD


def scripts_head() -> str:
    """The head revision as alembic reads it from the migration scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    """The revision the database is at (alembic's ``alembic_version`` row), None when it has none."""
    with db.read_engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def require_head(db: Database) -> None:
    """Refuse (``InvalidInput``) unless the database is at the newest schema this code knows."""
    try:
        current = current_revision(db)
    except DBAPIError as exc:
        raise DatabaseUnavailable(f"the database is unavailable ({type(exc.orig).__name__})") from exc
    head = head_revision()
    if current != head:
        state = f"at revision {current}" if current else "empty (no schema yet)"
        raise InvalidInput(f"the database is {state}; this apikeys needs revision {head}: run 'apikeys db upgrade' "
                           "(the server also upgrades it when it starts)")


def upgrade(db: Database, revision: str = "head", progress: Callable[[int, int], None] | None = None) -> str | None:
    """Apply migrations up to ``revision``; returns the revision the database is at afterwards.
    ``progress(done, total)``: called before the first migration to apply and after each (not at all
    when the schema is already there)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with db.write_engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})
        config = _config(conn)
        inspector = inspect(conn)
        if inspector.has_table("api_keys") and not inspector.has_table("alembic_version"):
            command.stamp(config, "0001")
        if progress is not None:
            _report_steps(config, conn, revision, progress)
        command.upgrade(config, revision)
        if revision == "head":
            _repair_guards(conn, db.dialect)
        return MigrationContext.configure(conn).get_current_revision()


def _report_steps(config, conn, revision: str, progress: Callable[[int, int], None]) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    current = MigrationContext.configure(conn).get_current_revision()
    total = len(list(ScriptDirectory.from_config(config).iterate_revisions(revision, current)))
    if total == 0:
        return
    done = [0]

    def applied(**_):
        done[0] += 1
        progress(done[0], total)

    progress(0, total)
    config.attributes["on_version_apply"] = applied


def _repair_guards(conn, dialect: str) -> None:
    """Put back any permanence trigger someone removed, disabled or altered (as the owning role; a
    runtime role cannot, and the self-check keeps alerting until the owner runs 'apikeys db upgrade')."""
    from .integrity import repair_triggers

    savepoint = conn.begin_nested()
    try:
        repaired = repair_triggers(conn, dialect)
    except DBAPIError as exc:
        savepoint.rollback()
        log.warning("permanence triggers are missing or disabled and this role cannot put them back (%s): run "
                    "'apikeys db upgrade' as the owning role (DATABASE_MIGRATION_URL)", type(exc.orig).__name__)
        return
    savepoint.commit()
    if repaired:
        log.warning("put back permanence triggers that were missing, disabled or altered: %s", ", ".join(repaired))
