"""Alembic's configuration for this package's migrations, on a given connection (used by
``storage.migrate`` and by ``storage.integrity``'s scratch migration)."""

from __future__ import annotations

from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection=None):
    from alembic.config import Config  # alembic only when migrating: it costs every command 0.1 s to import

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config
