"""PROMETHEUS_MULTIPROC_DIR: only prometheus-client's own files are deleted at start. A file is
prometheus-client's by its name (``<type>_<pid>.db``, ``gauge_<mode>_<pid>.db``) and by what it holds:
a SQLite database under such a name (``counter_1.db`` as DATABASE_URL, say) is refused, not deleted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage import open_store

from .servers import start_server


def test_a_sqlite_database_named_like_a_metric_file_is_refused_not_deleted(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'counter_1.db'}"
    open_store(url).close()
    sqlite3.connect(data / "counter_1.db").execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    for suffix in ("-wal", "-shm"):  # a clean shutdown leaves the database file alone
        (data / f"counter_1.db{suffix}").unlink(missing_ok=True)
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    assert list(before) == ["counter_1.db"]
    server = start_server(url, tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(data)}, wait=False)
    assert server.proc.wait(timeout=30) == 2
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    lines = [line for line in server.log().splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "counter_1.db" in lines[0] and "PROMETHEUS_MULTIPROC_DIR" in lines[0]
    assert "Traceback" not in server.log()


def test_a_gauge_file_of_a_mode_prometheus_client_does_not_have_is_refused(tmp_path: Path, database_url: str):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "gauge_backup_1.db").write_bytes(b"x" * 16)
    server = start_server(database_url, tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}, wait=False)
    assert server.proc.wait(timeout=30) == 2
    assert (metrics / "gauge_backup_1.db").exists()
