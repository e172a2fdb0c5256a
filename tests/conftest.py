"""Shared fixtures.

Every test gets its own database. ``TEST_DATABASE_URL`` (a PostgreSQL server URL) switches the
suite to PostgreSQL; otherwise a fresh SQLite file under the test's tmp_path is used.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot import cli
from storage import Store, open_store

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


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    with fresh_database(tmp_path) as url:
        yield url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = open_store(database_url, bootstrap_admins=[ADMIN])
    yield s
    s.close()


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


@pytest.fixture
def run_cli(database_url: str):
    """The CLI on the test database, its schema prepared as the server's start leaves it."""
    open_store(database_url).close()
    return cli_runner(database_url)


@pytest.fixture
def run_cli_unmigrated(database_url: str):
    """The CLI on the test database exactly as it is (empty, unless the test prepared it)."""
    return cli_runner(database_url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode


def start_server(database_url: str, tmp_path: Path, extra_env: dict[str, str] | None = None,
                 wait: bool = True) -> ServerProcess:
    """Start ``python -m bot`` on a free port and wait until /healthz answers."""
    import urllib.request

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env.update({"DATABASE_URL": database_url, "HOST": "127.0.0.1", "PORT": str(port),
                "WEB_CONCURRENCY": "2", "APIKEYS_ADMINS": ADMIN, **(extra_env or {})})
    log_path = tmp_path / f"server-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "bot"], cwd=tmp_path, env=env,
                            stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log_path)
    if not wait:
        return server
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not become healthy:\n{server.log()}")


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    srv = start_server(database_url, tmp_path)
    yield srv
    srv.stop()
