"""Shared helpers (not fixtures; those are in ``conftest.py``): the demo people, a fresh database
per test, the CLI in-process, and a free port.

Every test gets its own database. ``TEST_DATABASE_URL`` (a PostgreSQL server URL) switches the
suite to PostgreSQL; otherwise a fresh SQLite file under the test's tmp_path is used.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bot import cli

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "UADMIN001"
MEMBER = "UMEMBER01"


def _postgres_database(base_url: str) -> str:
    """Create a throw-away database on the server named by TEST_DATABASE_URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"apikeys_test_{uuid.uuid4().hex[:12]}"
    url = make_url(base_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def _drop_postgres_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    admin.dispose()


@contextlib.contextmanager
def fresh_database(directory: Path) -> Iterator[str]:
    """A new empty database: on the PostgreSQL server of TEST_DATABASE_URL, else SQLite in ``directory``."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        yield f"sqlite:///{directory / 'apikeys.db'}"
        return
    url = _postgres_database(base)
    try:
        yield url
    finally:
        _drop_postgres_database(url)


def drop_audit_triggers(store) -> None:
    """Simulate an attacker with direct database access: remove the append-only guard first."""
    from sqlalchemy import text

    with store.db.write() as session:
        if store.db.dialect == "postgresql":
            session.execute(text("DROP TRIGGER audit_events_append_only ON audit_events"))
            session.execute(text("DROP TRIGGER audit_events_append_only_insert ON audit_events"))
            session.execute(text("DROP TRIGGER audit_events_never_truncated ON audit_events"))
        else:
            session.execute(text("DROP TRIGGER audit_events_append_only_update"))
            session.execute(text("DROP TRIGGER audit_events_append_only_delete"))
            session.execute(text("DROP TRIGGER audit_events_append_only_insert"))


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def cli_runner(database_url: str):
    """``run(*argv, stdin=, env=)``: the ``apikeys`` entry function in-process on ``database_url``."""

    def run(*argv: str, stdin: str | None = None, env: dict[str, str] | None = None) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        environ = {"DATABASE_URL": database_url, "APIKEYS_ADMINS": ADMIN, **(env or {})}
        old_stdin = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            code = cli.run(list(argv), out=out, err=err, env=environ)
        finally:
            sys.stdin = old_stdin
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordingClient:
    """Records chat.postMessage as slack_sdk's WebClient would send it."""

    def __init__(self):
        self.posts: list[dict] = []

    def chat_postMessage(self, **kwargs):  # noqa: N802 - slack_sdk's name
        self.posts.append(kwargs)
        return {"ok": True, "ts": "1.000001"}


def everything_stored(database_url: str) -> str:
    """Every row of every table, as text: what someone with a database dump would read."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = []
            for table in inspect(conn).get_table_names():
                rows += [repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{table}"'))]
        return "\n".join(rows)
    finally:
        engine.dispose()


def refused_by_guard(message: str):
    """``pytest.raises`` for a statement the database's own guard (a trigger) refuses, matching that
    guard's message: any other database error (a primary-key conflict, a syntax error) is not the
    guard and fails the test."""
    import re

    import pytest
    from sqlalchemy.exc import DBAPIError

    return pytest.raises(DBAPIError, match=re.escape(message))
