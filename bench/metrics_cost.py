"""What the metrics cost on the hot path: ``python -m bot`` of this tree against the same server of a
base revision without them (default ``main``; ``git archive`` into a temporary directory, run with
the same interpreter), side by side on one database, rounds interleaved (wrk, 2 threads, 16
keep-alive connections, as ``bench.server_models``). The target: ``/v1/auth`` within 5%.

    .venv/bin/python -m bench.metrics_cost [--base main] [--keys 10000] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from bot.playground.slackstub import SlackStub

from .common import ROOT, Server, machine, seeded, wrk, wrk_post_json_script


def cpu_seconds(server: Server) -> float:
    """utime + stime of the server's master and workers."""
    total = 0.0
    for pid in server.pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def measured(server: Server, seconds: int, run) -> tuple[float, float, float]:
    """(req/s, p99 ms, server CPU µs per request): CPU per request is steadier than throughput on a
    machine shared with other work."""
    before = cpu_seconds(server)
    rate, p99 = run()
    return rate, p99, (cpu_seconds(server) - before) / (rate * seconds) * 1e6


def in_process(url: str, secret: str, calls: int = 20_000, repeats: int = 7) -> dict[str, float]:
    """µs per ``GET /v1/auth`` through one worker's WSGI app in this process, without the server:
    the app bare (no timing, verifications not counted) against the app as served (MeteredApp and
    the count), alternated, best of ``repeats``. Steadier than any figure over HTTP on a shared machine."""
    import io
    import time

    from bot import metrics
    from bot.config import Settings
    from bot.server import create_app

    metered = create_app(Settings(database_url=url))
    bare = metered.app
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v1/auth", "HTTP_AUTHORIZATION": f"Bearer {secret}",
               "wsgi.input": io.BytesIO(b"")}

    def start_response(status, headers, exc_info=None):
        pass

    counted = metrics.verified
    best = {"bare": float("inf"), "metered": float("inf")}
    for _ in range(repeats):
        for label, app in (("bare", bare), ("metered", metered)):
            metrics.verified = counted if label == "metered" else (lambda route, code: None)
            started = time.perf_counter()
            for _ in range(calls):
                app(environ, start_response)
            best[label] = min(best[label], (time.perf_counter() - started) / calls * 1e6)
    metrics.verified = counted
    metered.store.close()
    return best


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
    url, secret = seeded("metrics.db", args.keys)
    auth = {"Authorization": f"Bearer {secret}"}
    verify_script = wrk_post_json_script({"key": secret})

    cost = in_process(url, secret)
    stub = SlackStub().start()
    servers = {"before": Server(url, stub, cwd=base_dir), "after": Server(url, stub)}
    runs = {}
    for label, server in servers.items():
        runs[f"{label} /v1/auth"] = lambda s=server: measured(
            s, args.seconds, lambda: wrk(s.url + "/v1/auth", args.seconds, headers=auth))
        runs[f"{label} /v1/keys/verify"] = lambda s=server: measured(
            s, args.seconds, lambda: wrk(s.url + "/v1/keys/verify", args.seconds, script=verify_script))
    rounds: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
    try:
        for run in runs.values():  # warm-up
            run()
        names = list(runs)
        for i in range(args.rounds):  # ABBA: every other round the other server goes first
            for name in names if i % 2 == 0 else [n.replace("before", "@").replace("after", "before").replace("@", "after")
                                                  for n in names]:
                rounds[name].append(runs[name]())
    finally:
        for server in servers.values():
            server.stop()
        stub.stop()

    print(f"machine: {machine()}; {args.keys:,} keys; wrk -t2 -c16 -d{args.seconds}s; {args.rounds} interleaved "
          f"rounds (medians); before = {args.base}, after = this tree")
    for name in runs:
        print(f"  {name:<24} {statistics.median(r[0] for r in rounds[name]):>9,.0f} req/s   "
              f"p99 {statistics.median(r[1] for r in rounds[name]):6.2f} ms   "
              f"CPU {statistics.median(r[2] for r in rounds[name]):6.1f} µs/request")
    for route in ("/v1/auth", "/v1/keys/verify"):
        ratio = statistics.median(a[0] / b[0] for a, b in zip(rounds[f"after {route}"], rounds[f"before {route}"],
                                                              strict=True))
        cpu = statistics.median(a[2] / b[2] for a, b in zip(rounds[f"after {route}"], rounds[f"before {route}"],
                                                            strict=True))
        print(f"  after/before {route:<16} {ratio:.3f} req/s, {cpu:.3f} CPU per request; req/s per round: "
              + " ".join(f"{a[0] / b[0]:.3f}" for a, b in zip(rounds[f"after {route}"], rounds[f"before {route}"],
                                                             strict=True)))
    print(f"  in process, GET /v1/auth through the WSGI app: bare {cost['bare']:.1f} µs, with metrics "
          f"{cost['metered']:.1f} µs (+{cost['metered'] - cost['bare']:.1f} µs, {cost['metered'] / cost['bare']:.3f}x)")
    print(json.dumps({"rounds": rounds, "in_process": cost}))


if __name__ == "__main__":
    main()
