"""Benchmark 11: a million keys against 20,000, same build, same machine, one run.

For each size (a fresh database; SQLite, or PostgreSQL with ``BENCH_DATABASE_URL_SMALL`` and
``BENCH_DATABASE_URL_LARGE`` naming two empty databases): the keys are created (50,000 per
transaction), then the real server (2 workers) is measured —

* ``/v1/auth`` throughput with one of the keys (wrk -t2 -c16, ``--rounds`` rounds, median);
* the ``/apikeys`` list round trip through signed HTTP (median of ``--slack`` rounds);
* ``/apikeys find apk_…ab12`` (a masked key: the last four characters' index) round trip;
* the server's memory (PSS, master + workers) after that traffic and 20,000 verifications.

Targets: the million within 10% of the 20,000 on each.

    .venv/bin/python -m bench.scale [--large 1000000] [--small 20000] [--rounds 3] [--slack 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from storage import open_store

from .common import database, machine, running
from .common import wrk as common_wrk
from .memory import verify_many


def _seed(url: str, count: int) -> tuple[str, str]:
    """``count`` keys, 50,000 a transaction; returns one key's secret and its masked form."""
    store = open_store(url)
    try:
        if store.keys.count_keys(status="all"):
            raise SystemExit(f"{url} is not empty")
        middle = None
        start = time.perf_counter()
        for batch in range(0, count, 50_000):
            created = store.keys.create(name=f"svc{batch}", owner=f"team{batch % 7}", actor="bench",
                                        count=min(50_000, count - batch))
            if middle is None or batch <= count // 2 < batch + 50_000:
                middle = created[(count // 2 - batch) % len(created)]
        print(f"  seeded {count:,} keys in {time.perf_counter() - start:.1f} s")
        return middle.secret, middle.key.masked
    finally:
        store.close()


def measure(url: str, count: int, rounds: int, slack: int) -> dict[str, float]:
    secret, masked = _seed(url, count)
    with running(url, workers=2) as (_stub, server):
        sender = server.sender
        for _ in range(5):
            sender.command("")
            sender.command(f"find {masked}")
        lists, finds = [], []
        for _ in range(slack):
            start = time.perf_counter()
            assert sender.command("").status == 200
            lists.append(time.perf_counter() - start)
            start = time.perf_counter()
            reply = sender.command(f"find {masked}")
            finds.append(time.perf_counter() - start)
            assert reply.status == 200
        auth = [common_wrk(server.url + "/v1/auth", 3, threads=2, connections=16,
                           headers={"Authorization": f"Bearer {secret}"})[0] for _ in range(rounds)]
        verify_many(server.url, secret, 20_000)
        pss = server.pss_mb()
    return {"auth": statistics.median(auth), "list_ms": statistics.median(lists) * 1000,
            "find_ms": statistics.median(finds) * 1000, "pss_mb": pss}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slack", type=int, default=40)
    args = parser.parse_args()
    small_url = os.environ.get("BENCH_DATABASE_URL_SMALL") or database("scale-small.db")
    large_url = os.environ.get("BENCH_DATABASE_URL_LARGE") or database("scale-large.db")
    print(f"machine: {machine()}; {'PostgreSQL' if small_url.startswith('postgresql') else 'SQLite'}")
    small = measure(small_url, args.small, args.rounds, args.slack)
    large = measure(large_url, args.large, args.rounds, args.slack)
    print(f"{'measure':28s} {args.small:>12,} {args.large:>12,}   large/small")
    for name, label, better in (("auth", "/v1/auth req/s", "higher"), ("list_ms", "/apikeys list ms", "lower"),
                                ("find_ms", "/apikeys find (masked) ms", "lower"), ("pss_mb", "server PSS MB", "lower")):
        print(f"{label:28s} {small[name]:12,.1f} {large[name]:12,.1f}   {large[name] / small[name]:.2f}x ({better} is better)")


if __name__ == "__main__":
    main()
