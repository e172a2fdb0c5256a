"""Benchmark 10: the key check on PostgreSQL, beside the same build on SQLite and the FastAPI +
asyncpg service a team would write (``bench/fastapi_pg_app.py``), in one run.

Each server: 2 workers and its defaults; wrk 2 threads / 16 keep-alive connections; ``--keys`` keys
(20,000 by default) in each database. Every round measures every candidate once, in the same order;
the figures are medians over the rounds, and the ratios are taken within each round (then their median).

    createdb -h 127.0.0.1 -U postgres apikeys_bench     # an empty database
    BENCH_DATABASE_URL=postgresql+psycopg://postgres:postgres@127.0.0.1:5432/apikeys_bench \\
        .venv/bin/python -m bench.postgres [--keys 20000] [--seconds 3] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

from storage import open_store

from .common import Server, SlackStub, fastapi_peer, machine, wrk_post_json_script
from .common import wrk as common_wrk


def wrk(url: str, seconds: int, **kwargs) -> tuple[float, float]:
    return common_wrk(url, seconds, threads=2, connections=16, **kwargs)


def _seed(url: str, keys: int) -> str:
    store = open_store(url)
    try:
        existing = store.keys.count_keys(status="all")
        if existing:
            sys.exit(f"{make_url(url).render_as_string()} already holds {existing} keys: give an empty database")
        created = store.keys.create(name="svc", owner="load", actor="bench", count=keys)
        return created[len(created) // 2].secret
    finally:
        store.close()


def _peer(pg_url: str):
    dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    return fastapi_peer("bench.fastapi_pg_app:app", {"FASTAPI_PG": dsn})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="WEB_THREADS of both of our servers (default: theirs)")
    args = parser.parse_args()
    pg_url = os.environ.get("BENCH_DATABASE_URL", "")
    if not pg_url.startswith("postgresql"):
        sys.exit("BENCH_DATABASE_URL must name an empty PostgreSQL database (see the module's docstring)")
    sqlite_url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='apikeys-bench-')) / 'pg-vs.db'}"
    pg_secret, sqlite_secret = _seed(pg_url, args.keys), _seed(sqlite_url, args.keys)
    extra = {"WEB_THREADS": str(args.threads)} if args.threads else {}

    stub = SlackStub().start()
    on_pg, on_sqlite = Server(pg_url, stub, extra=extra), Server(sqlite_url, stub, extra=extra)
    peer, peer_url = _peer(pg_url)
    verify_pg = wrk_post_json_script({"key": pg_secret})
    runs = {
        "postgres /healthz": lambda: wrk(on_pg.url + "/healthz", args.seconds),
        "postgres /v1/keys/verify": lambda: wrk(on_pg.url + "/v1/keys/verify", args.seconds, script=verify_pg),
        "postgres /v1/auth": lambda: wrk(on_pg.url + "/v1/auth", args.seconds,
                                         headers={"Authorization": f"Bearer {pg_secret}"}),
        "sqlite /v1/auth": lambda: wrk(on_sqlite.url + "/v1/auth", args.seconds,
                                       headers={"Authorization": f"Bearer {sqlite_secret}"}),
        "fastapi+asyncpg /v1/auth": lambda: wrk(peer_url + "/v1/auth", args.seconds,
                                                headers={"Authorization": f"Bearer {pg_secret}"}),
    }
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    try:
        for run in runs.values():  # warm every server up once
            run()
        for _ in range(args.rounds):
            for name, run in runs.items():
                rounds[name].append(run())
    finally:
        for server in (on_pg, on_sqlite):
            server.stop()
        peer.terminate()
        peer.wait(timeout=15)
        stub.stop()

    def rate(name: str) -> float:
        return statistics.median(r for r, _ in rounds[name])

    def ratio(a: str, b: str) -> str:
        per_round = [x[0] / y[0] for x, y in zip(rounds[a], rounds[b], strict=True)]
        return (f"{statistics.median(per_round):.2f}x (rounds {min(per_round):.2f}-{max(per_round):.2f}; "
                f"{rate(a):,.0f} vs {rate(b):,.0f} req/s)")

    print(f"machine: {machine()}; {args.keys:,} keys; 2 workers each"
          f"{f', WEB_THREADS={args.threads}' if args.threads else ''}; wrk -t2 -c16, {args.rounds} rounds of "
          f"{args.seconds} s")
    for name in runs:
        p99 = statistics.median(p for _, p in rounds[name])
        print(f"  {name:28s} {rate(name):9,.0f} req/s   p99 {p99:6.2f} ms")
    print(f"/v1/auth, PostgreSQL vs FastAPI + asyncpg:   {ratio('postgres /v1/auth', 'fastapi+asyncpg /v1/auth')}")
    print(f"/v1/auth, PostgreSQL vs SQLite:              {ratio('postgres /v1/auth', 'sqlite /v1/auth')}")
    print(f"/v1/keys/verify vs /healthz, PostgreSQL:     {ratio('postgres /v1/keys/verify', 'postgres /healthz')}")


if __name__ == "__main__":
    main()
