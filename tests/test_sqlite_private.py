"""A new SQLite database, and its -wal and -shm files, are mode 0600 whatever the umask and however
DATABASE_URL spells the file: with query parameters, or as a ``file:`` URI (``uri=true``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from storage import open_store


@pytest.mark.parametrize("spelling", ["plain", "query", "uri", "uri-absolute"])
def test_a_new_sqlite_database_is_private_however_the_url_names_it(tmp_path: Path, spelling: str):
    path = tmp_path / "private.db"
    url = {"plain": f"sqlite:///{path}", "query": f"sqlite:///{path}?timeout=30",
           "uri": f"sqlite:///file:{path}?uri=true", "uri-absolute": f"sqlite:///file://{path}?uri=true"}[spelling]
    old = os.umask(0o022)  # the usual umask: files would be world-readable
    try:
        store = open_store(url)
        try:
            store.keys.create(name="svc", owner="ops", actor="UADMIN001")
            files = [tmp_path / name for name in ("private.db", "private.db-wal", "private.db-shm")]
            assert all(f.exists() for f in files), sorted(p.name for p in tmp_path.iterdir())
            assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
        finally:
            store.close()
    finally:
        os.umask(old)


def test_the_file_is_found_in_every_spelling_and_memory_has_none():
    from sqlalchemy.engine import make_url

    from storage.db import sqlite_file

    assert sqlite_file(make_url("sqlite:////srv/a.db?timeout=30")) == "/srv/a.db"
    assert sqlite_file(make_url("sqlite:///file:rel%20dir/a.db?mode=rwc&uri=true")) == "rel dir/a.db"
    assert sqlite_file(make_url("sqlite:///file:///srv/a.db?uri=true")) == "/srv/a.db"
    assert sqlite_file(make_url("sqlite:///file://localhost/srv/a.db?uri=true")) == "/srv/a.db"
    for memory in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:mem?mode=memory&cache=shared&uri=true",
                   "sqlite:///file::memory:?uri=true"):
        assert sqlite_file(make_url(memory)) is None, memory
