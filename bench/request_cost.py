"""Diagnostic for benchmark 2: what one request costs the server, per route.

Throughput on a shared two-core machine swings from run to run; the CPU time a worker spends per
request, and the context switches it makes per request, are steadier and say *where* the time goes
(contention between a worker's threads shows up as switches). One worker, several keep-alive
clients (wrk), a few rounds per route; medians.

    .venv/bin/python -m bench.request_cost [--clients 8] [--threads 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from storage import open_store

from .common import database, machine, running, wrk_post_json_script


def _worker_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _worker_switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += sum(int(line.split()[1]) for line in (task / "status").read_text().splitlines()
                         if "ctxt_switches" in line)  # voluntary and involuntary
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8, help="WEB_THREADS of the measured worker")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=2)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")

    url = database("cost.db")
    store = open_store(url)
    secret = store.keys.create(name="svc", owner="load", actor="bench", count=10_000)[5_000].secret
    store.close()
    routes = {
        "/healthz": [],
        "/v1/keys/verify": ["-s", wrk_post_json_script({"key": secret})],
        "/v1/auth": ["-H", f"Authorization: Bearer {secret}"],
    }
    with running(url, workers=1, extra={"WEB_THREADS": str(args.threads)}) as (_stub, server):
        worker = server.pids()[1]
        subprocess.run(["wrk", "-t1", "-c1", "-d2s", server.url + "/healthz"], capture_output=True, check=True)
        cost: dict[str, list[tuple[float, float]]] = {route: [] for route in routes}
        for _ in range(args.rounds):
            for route, extra in routes.items():
                cpu, switches = _worker_cpu_seconds(worker), _worker_switches(worker)
                out = subprocess.run(["wrk", "-t1", f"-c{args.clients}", f"-d{args.seconds}s", *extra, server.url + route],
                                     capture_output=True, text=True, check=True).stdout
                requests = int(re.search(r"(\d+) requests in", out).group(1))
                cost[route].append(((_worker_cpu_seconds(worker) - cpu) / requests * 1e6,
                                    (_worker_switches(worker) - switches) / requests))

    print(f"machine: {machine()}; 1 worker x {args.threads} threads, {args.clients} keep-alive clients")
    summary = {}
    for route, samples in cost.items():
        cpu_us = statistics.median(c for c, _ in samples)
        switches = statistics.median(s for _, s in samples)
        summary[route] = {"cpu_us": round(cpu_us, 1), "switches": round(switches, 1)}
        print(f"{route:18s} {cpu_us:7.1f} us CPU per request   {switches:5.1f} context switches per request")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
