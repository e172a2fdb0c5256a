"""Benchmark 9: the management API — token authentication beside the key check, and listing keys
with 100,000 of them (keyset paging: as fast on page 1,000 as on page 1, and as with 10 keys).

One run, one machine, ratios within the run (wrk as the load generator, medians of rounds):

* the bearer check alone, in process: ``TokenService.authenticate`` vs ``KeyService.verify`` (each one
  indexed lookup by digest and a constant-time compare);
* ``GET /v1/keys/{id}`` with an admin token (the bearer check, then one read by primary key) vs
  ``GET /v1/auth`` with a key, same server;
* ``GET /v1/keys?limit=50``: 100,000 keys vs 100 keys (both pages full), first page, and page 1,000
  of 100,000 (a cursor halfway down).

    .venv/bin/python -m bench.manage_api [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
import urllib.request

from storage import open_store

from .common import database, machine, running, wrk


def _seed(name: str, keys: int) -> tuple[str, str, str, str]:
    """A database of ``keys`` keys and an admin token: (url, token, a key's secret, a key id)."""
    url = database(name)
    store = open_store(url)
    created = store.keys.create(name="svc", owner="load", actor="bench", count=keys)
    token = store.tokens.create(name="bench", scopes="keys:read", actor="bench")[1]
    store.close()
    middle = created[len(created) // 2]
    return url, token, middle.secret, middle.key.id


def _cursor_halfway(base: str, token: str, keys: int) -> str:
    """The next_cursor of page ``keys / 2 / 50``, walked once through the API itself (200 a page)."""
    cursor, seen = None, 0
    while seen < keys // 2:
        query = "limit=200" + (f"&cursor={cursor}" if cursor else "")
        request = urllib.request.Request(f"{base}/v1/keys?{query}", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request) as response:
            page = json.loads(response.read())
        seen += len(page["items"])
        cursor = page["next_cursor"]
    return cursor


def _per_call(call, n: int = 20_000) -> float:
    """Median over 5 rounds of ``n`` calls, in microseconds."""
    call()
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            call()
        rounds.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")

    few = _seed("few.db", 100)
    many = _seed("many.db", args.keys)
    results: dict[str, list[float]] = {}

    def measure(label: str, url: str, headers: dict) -> None:
        results.setdefault(label, []).append(wrk(url, args.seconds, headers=headers)[0])

    with running(few[0], workers=2) as (_stub, server):
        bearer = {"Authorization": f"Bearer {few[1]}"}
        for _ in range(args.rounds):
            measure("list, 100 keys", server.url + "/v1/keys?limit=50", bearer)
    with running(many[0], workers=2) as (_stub, server):
        url, token, secret, key_id = many
        bearer = {"Authorization": f"Bearer {token}"}
        halfway = _cursor_halfway(server.url, token, args.keys)
        for _ in range(args.rounds):
            measure("auth, a key", server.url + "/v1/auth", {"Authorization": f"Bearer {secret}"})
            measure("get, a token", server.url + f"/v1/keys/{key_id}", bearer)
            measure(f"list, {args.keys:,} keys", server.url + "/v1/keys?limit=50", bearer)
            measure(f"list, {args.keys:,} keys, halfway", server.url + f"/v1/keys?limit=50&cursor={halfway}", bearer)

    store = open_store(many[0])
    try:
        per_call = {"token": _per_call(lambda: store.tokens.authenticate(many[1])),
                    "key": _per_call(lambda: store.keys.verify(many[2]))}
    finally:
        store.close()
    median = {label: statistics.median(values) for label, values in results.items()}
    print(f"machine: {machine()}; 2 workers, wrk -t2 -c16, {args.rounds} rounds of {args.seconds} s, medians")
    for label, value in median.items():
        print(f"  {label:34s} {value:9,.0f} req/s   (rounds: {', '.join(f'{v:,.0f}' for v in results[label])})")
    lists = f"list, {args.keys:,} keys"
    print(f"bearer check in process: token {per_call['token']:.1f} us, key {per_call['key']:.1f} us: "
          f"{per_call['key'] / per_call['token']:.2f}x the key check's speed")
    print(f"token check + read vs /v1/auth:            {median['get, a token'] / median['auth, a key']:.2f}x")
    print(f"list, {args.keys:,} vs 100 keys (page 1):  {median[lists] / median['list, 100 keys']:.2f}x")
    print(f"list, halfway vs page 1 ({args.keys:,}):   {median[lists + ', halfway'] / median[lists]:.2f}x")


if __name__ == "__main__":
    main()
