"""Shared fixtures (the helpers they use are plain modules: ``helpers``, ``servers``, ``slackworld``).

Every test gets its own database (``database_url``): a fresh SQLite file under its tmp_path, or,
with ``TEST_DATABASE_URL`` (a PostgreSQL server URL), a database of its own on that server.

The Slack tests' ``world`` runs the Bolt app in this process (``slackworld.InProcessWorld``); a
test marked ``end_to_end`` gets the real server instead (``slackworld.ServerWorld``), talked to
over signed HTTP exactly as Slack does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage import Store, open_store

from .helpers import ADMIN, cli_runner, fresh_database
from .servers import GitHubKeysStub, ServerProcess, start_server
from .slackworld import InProcessWorld, ServerWorld, World, Worlds


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    with fresh_database(tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(tmp_path_factory) -> Iterator[str]:
    """One database for a module whose tests share one app and change nothing in it."""
    with fresh_database(tmp_path_factory.mktemp("module")) as url:
        yield url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = open_store(database_url, bootstrap_admins=[ADMIN])
    yield s
    s.close()


@pytest.fixture
def run_cli(database_url: str):
    """The CLI on the test database, its schema prepared as the server's start leaves it."""
    open_store(database_url).close()
    return cli_runner(database_url)


@pytest.fixture
def run_cli_unmigrated(database_url: str):
    """The CLI on the test database exactly as it is (empty, unless the test prepared it)."""
    return cli_runner(database_url)


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """The real server (``python -m bot``, two workers, Slack off) on the test database."""
    srv = start_server(database_url, tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def make_world(request, database_url: str, tmp_path: Path, store: Store) -> Iterator[Callable[..., World]]:
    """``make_world(extra_env)``: the app on this test's database, with the stand-in as Slack; in
    process, or the real server for a test marked ``end_to_end``. At teardown: everything stopped,
    and nothing the app sent broke one of Slack's limits."""
    end_to_end = request.node.get_closest_marker("end_to_end") is not None
    worlds = Worlds(ServerWorld if end_to_end else InProcessWorld, store, database_url, tmp_path)
    try:
        yield worlds
    finally:
        worlds.close()


@pytest.fixture
def world(make_world) -> World:
    return make_world()


@pytest.fixture
def github_keys() -> Iterator[GitHubKeysStub]:
    """A stand-in for GitHub's secret scanning public-keys endpoint, with one current key."""
    stub = GitHubKeysStub().start()
    yield stub
    stub.stop()
