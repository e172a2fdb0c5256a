"""Benchmark 2: key verification.

Over HTTP, with several keep-alive clients (wrk): ``POST /v1/keys/verify`` and ``GET /v1/auth`` vs
``GET /healthz`` on the same server (target: verification >= 0.7x of health), and side by side with
Django REST Framework + djangorestframework-api-key on the same gunicorn settings. In process: our
verify calls per second against the floor of one SHA-256 plus one indexed lookup, and DRF's
``APIKey.objects.is_valid``.

    apt-get install wrk   # once
    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m bench.verify_throughput [--keys 100000] [--seconds 3] [--rounds 9]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from storage import open_store

from .common import ROOT, database, free_port, machine, running, wrk_post_json_script
from .common import wrk as common_wrk

WRK_THREADS, WRK_CONNECTIONS = 2, 16


def wrk(url: str, seconds: int, *, script: str | None = None, headers: dict | None = None) -> float:
    """Requests per second reported by wrk (every answer must be a 2xx)."""
    return common_wrk(url, seconds, threads=WRK_THREADS, connections=WRK_CONNECTIONS, script=script, headers=headers)[0]


def in_process(fn, seconds: float) -> float:
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            fn()
        count += 100
    return count / seconds


def drf_server(db_path: str, keys: int):
    env = dict(os.environ, DRF_DB=db_path, DJANGO_SETTINGS_MODULE="")
    seeded = subprocess.run(
        [sys.executable, "-c", f"import json, bench.drf_app as d; print(json.dumps(d.seed({keys})))"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    sample = json.loads(seeded.stdout.strip().splitlines()[-1])
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "bench.drf_app:application", "-b", f"127.0.0.1:{port}",
         "-w", "2", "-k", "gthread", "--threads", "8", "--log-level", "warning"],
        cwd=ROOT, env=env)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/check", timeout=1)
        except urllib.error.HTTPError:
            break  # 403 without a key: it is up
        except OSError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}", sample


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed for the HTTP figures: apt-get install wrk")

    url = database("verify.db")
    store = open_store(url)
    created = store.keys.create(name="svc", owner="load", actor="bench", count=args.keys)
    secret = created[len(created) // 2].secret
    results: dict[str, float] = {}

    with running(url) as (_stub, server):
        wrk(server.url + "/healthz", 6)  # warm-up: every worker booted, pools and page cache filled
        verify_script = wrk_post_json_script({"key": secret})
        rounds: dict[str, list[float]] = {"healthz": [], "verify": [], "auth": []}
        for _ in range(args.rounds):  # interleaved, so that a noisy moment hits all three alike; the median counts
            rounds["healthz"].append(wrk(server.url + "/healthz", args.seconds))
            rounds["verify"].append(wrk(server.url + "/v1/keys/verify", args.seconds, script=verify_script))
            rounds["auth"].append(wrk(server.url + "/v1/auth", args.seconds,
                                      headers={"Authorization": f"Bearer {secret}"}))
        results.update({name: statistics.median(values) for name, values in rounds.items()})
        # Each round's three runs share one moment of the machine: compare within rounds, then take
        # the median, so that a slow moment in one round does not tilt the ratio.
        for name in ("verify", "auth"):
            paired = [v / h for v, h in zip(rounds[name], rounds["healthz"], strict=True)]
            results[f"{name}_ratio"] = statistics.median(paired)
            results[f"{name}_ratios"] = [round(r, 2) for r in paired]

    tmp = tempfile.mkdtemp(prefix="apikeys-bench-drf-")
    proc, drf_url, drf_keys = drf_server(str(Path(tmp) / "drf.db"), args.keys)
    try:
        wrk(drf_url + "/check", 3, headers={"Authorization": f"Api-Key {drf_keys[50]}"})  # warm-up
        results["drf_http"] = wrk(drf_url + "/check", args.seconds, headers={"Authorization": f"Api-Key {drf_keys[50]}"})
    finally:
        proc.terminate()
        proc.wait()

    # In process, one thread.
    results["inproc_verify"] = in_process(lambda: store.keys.verify(secret), 3)
    db_path = url.removeprefix("sqlite:///")
    conn = sqlite3.connect(db_path)
    wanted_secret = secret.encode()
    results["inproc_floor"] = in_process(
        lambda: conn.execute("SELECT id FROM api_keys WHERE digest = ?",
                             (hashlib.sha256(wanted_secret).hexdigest(),)).fetchone(), 3)
    drf = subprocess.run(
        [sys.executable, "-c",
         "import time, bench.drf_app\n"
         "from rest_framework_api_key.models import APIKey\n"
         f"key = {drf_keys[50]!r}\n"
         "assert APIKey.objects.is_valid(key)\n"
         "n, end = 0, time.perf_counter() + 3\n"
         "while time.perf_counter() < end:\n"
         "    APIKey.objects.is_valid(key); n += 1\n"
         "print(n / 3)\n"],
        cwd=ROOT, env=dict(os.environ, DRF_DB=str(Path(tmp) / "drf.db")), capture_output=True, text=True, check=True)
    results["inproc_drf"] = float(drf.stdout.strip().splitlines()[-1])
    store.close()

    print(f"machine: {machine()}; {args.keys:,} keys; wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{args.seconds}s")
    print(f"HTTP  /healthz            {results['healthz']:>10,.0f} req/s")
    for name, label in (("verify", "/v1/keys/verify"), ("auth", "/v1/auth")):
        ratios = results[f"{name}_ratios"]
        print(f"HTTP  {label:<19} {results[name]:>10,.0f} req/s  ({results[f'{name}_ratio']:.2f}x health: median of "
              f"the rounds' ratios, {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"HTTP  DRF + api-key check {results['drf_http']:>10,.0f} req/s  "
          f"(ours /v1/auth is {results['auth'] / results['drf_http']:.1f}x)")
    print(f"in-process verify         {results['inproc_verify']:>10,.0f} /s  "
          f"({results['inproc_verify'] / results['inproc_floor']:.2f}x the floor)")
    print(f"in-process floor          {results['inproc_floor']:>10,.0f} /s  (SHA-256 + indexed SELECT, raw sqlite3)")
    print(f"in-process DRF is_valid   {results['inproc_drf']:>10,.0f} /s  "
          f"(ours is {results['inproc_verify'] / results['inproc_drf']:.1f}x)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
