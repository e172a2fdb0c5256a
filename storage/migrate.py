"""Schema migrations (Alembic), run in-process.

``upgrade(db)`` brings a database to the newest schema. It is safe when several processes start
at once: on PostgreSQL they queue on an advisory lock, on SQLite on the write lock. A database
created before migrations existed (tables but no ``alembic_version``) is adopted at revision 0001
and upgraded from there.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from .db import Database

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
LOCK_ID = 7262311


def _config(connection=None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.read_engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> str | None:
    """Apply migrations up to ``revision``; returns the revision the database is at afterwards."""
    with db.write_engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})
        config = _config(conn)
        inspector = inspect(conn)
        if inspector.has_table("api_keys") and not inspector.has_table("alembic_version"):
            command.stamp(config, "0001")
        command.upgrade(config, revision)
        return MigrationContext.configure(conn).get_current_revision()
