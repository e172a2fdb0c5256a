"""What the metrics cost on the hot path: ``python -m bot`` of this tree against the same server of a
base revision without them (default ``main``; ``git archive`` into a temporary directory, run with
the same interpreter), side by side on one database, rounds interleaved (wrk, 2 threads, 16
keep-alive connections, as ``bench.server_models``). The target: ``/v1/auth`` within 5%.

    .venv/bin/python -m bench.metrics_cost [--base main] [--keys 10000] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

from bot.playground.slackstub import SlackStub
from storage import open_store

from .common import ROOT, Server, database, machine, wrk, wrk_post_json_script


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="main")
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    base_dir = Path(tempfile.mkdtemp(prefix="apikeys-bench-base-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(base_dir)], input=archive, check=True)
    url = database("metrics.db")
    store = open_store(url)
    created = store.keys.create(name="svc", owner="load", actor="bench", count=args.keys)
    secret = created[len(created) // 2].secret
    store.close()
    auth = {"Authorization": f"Bearer {secret}"}
    verify_script = wrk_post_json_script({"key": secret})

    stub = SlackStub().start()
    servers = {"before": Server(url, stub, cwd=base_dir), "after": Server(url, stub)}
    runs = {}
    for label, server in servers.items():
        runs[f"{label} /v1/auth"] = lambda s=server: wrk(s.url + "/v1/auth", args.seconds, headers=auth)
        runs[f"{label} /v1/keys/verify"] = lambda s=server: wrk(s.url + "/v1/keys/verify", args.seconds,
                                                               script=verify_script)
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    try:
        for run in runs.values():  # warm-up
            run()
        for _ in range(args.rounds):
            for name, run in runs.items():
                rounds[name].append(run())
    finally:
        for server in servers.values():
            server.stop()
        stub.stop()

    print(f"machine: {machine()}; {args.keys:,} keys; wrk -t2 -c16 -d{args.seconds}s; {args.rounds} interleaved "
          f"rounds (medians); before = {args.base}, after = this tree")
    for name in runs:
        print(f"  {name:<24} {statistics.median(r for r, _ in rounds[name]):>9,.0f} req/s   "
              f"p99 {statistics.median(p for _, p in rounds[name]):6.2f} ms")
    for route in ("/v1/auth", "/v1/keys/verify"):
        ratio = statistics.median(a[0] / b[0] for a, b in zip(rounds[f"after {route}"], rounds[f"before {route}"],
                                                              strict=True))
        print(f"  after/before {route:<16} {ratio:.3f}")
    print(json.dumps({"rounds": rounds}))


if __name__ == "__main__":
    main()
