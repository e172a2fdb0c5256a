"""Diagnostic: where a route's time goes in the worker, sampled by py-spy under wrk load.

One worker (its default threads) on a fresh SQLite file or ``BENCH_DATABASE_URL``; for each route,
wrk keeps 8 connections busy while ``py-spy record --format raw`` samples the worker; the samples are
then summed per function (inclusive: a function and everything it called), and the functions that
hold the most of the route's samples are printed. ``pip install py-spy`` (it needs ptrace: run as root
or with ``kernel.yama.ptrace_scope = 0``).

    .venv/bin/python -m bench.route_profile [--seconds 8] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from storage import open_store

from .common import database, machine, running, wrk_post_json_script


def profile(py_spy: str, pid: int, seconds: int, load: list[str]) -> collections.Counter:
    out = Path(tempfile.mkstemp(suffix=".txt")[1])
    wrk = subprocess.Popen(["wrk", "-t1", "-c8", f"-d{seconds + 2}s", *load], stdout=subprocess.DEVNULL)
    try:
        subprocess.run([py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "500",
                        "--format", "raw", "--nonblocking", "--output", str(out)],
                       check=True, capture_output=True)
    finally:
        wrk.wait()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if frames and frames[-1].startswith("process_cpu") or "idle" in stack:
            continue
        n = int(count)
        total += n
        for frame in dict.fromkeys(f.split(" (")[0] for f in frames):
            inclusive[frame] += n
    inclusive["(all samples)"] = total
    return inclusive


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not shutil.which("wrk") or not py_spy:
        sys.exit("wrk and py-spy are needed: apt-get install wrk; pip install -e '.[bench]'")
    url = database("profile.db")
    store = open_store(url)
    secret = store.keys.create(name="svc", owner="load", actor="bench", count=1_000)[500].secret
    store.close()
    with running(url, workers=1) as (_stub, server):
        worker = server.pids()[1]
        routes = {"/healthz": [server.url + "/healthz"],
                  "/v1/keys/verify": ["-s", wrk_post_json_script({"key": secret}), server.url + "/v1/keys/verify"]}
        print(f"machine: {machine()}; 1 worker, wrk -t1 -c8, py-spy at 500 Hz for {args.seconds} s")
        for route, load in routes.items():
            samples = profile(py_spy, worker, args.seconds, load)
            total = samples.pop("(all samples)") or 1
            print(f"\n{route}: {total} samples (inclusive share of the worker's busy samples)")
            for frame, n in samples.most_common(args.top):
                print(f"  {100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
