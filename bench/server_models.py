"""Benchmark 2: the server model, measured side by side in one run (wrk, 2 threads, 16 keep-alive
connections, on the same two cores as the servers).

Candidates, all with 2 worker processes on one database of ``--keys`` keys:

* ``granian``  — ``python -m bot`` as shipped: our WSGI app on granian (production);
* ``gunicorn`` — the same app under gunicorn's threaded workers (``gthread``, 8 threads), the
  server before granian (``bench/gunicorn_app.py``);
* ``fastapi``  — the service a team would write in an afternoon: FastAPI on uvicorn (uvloop,
  httptools), one SHA-256 lookup in SQLite, no logging (``bench/fastapi_app.py``);
* ``drf``      — Django REST Framework + djangorestframework-api-key on gunicorn (``bench/drf_app.py``);
* ``floor``    — granian answering a fixed body, GET and POST (``bench/granian_floor.py``): what the
  server itself costs a request, and how much more a POST with a body costs it than a GET.

Every round runs each measurement once, in the same order, so a noisy moment hits all alike;
the figures are the medians over the rounds, and ratios are taken within a round. p99 latency is
wrk's. Our log line per verification stays on (to a file), as in production.

    .venv/bin/python -m bench.server_models [--keys 100000] [--seconds 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .common import ROOT, Server, SlackStub, fastapi_peer, free_port, machine, seeded, wrk_post_json_script
from .common import wrk as common_wrk
from .verify_throughput import drf_server

THREADS, CONNECTIONS = 2, 16


def wrk(url: str, seconds: int, *, script: str | None = None, headers: dict | None = None) -> tuple[float, float]:
    return common_wrk(url, seconds, threads=THREADS, connections=CONNECTIONS, script=script, headers=headers)


def _wait_for(url: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)


def fastapi_server(db_path: str):
    return fastapi_peer("bench.fastapi_app:app", {"FASTAPI_DB": db_path})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    url, secret = seeded("models.db", args.keys)
    auth = {"Authorization": f"Bearer {secret}"}
    verify_script = wrk_post_json_script({"key": secret})

    stub = SlackStub().start()
    ours = Server(url, stub)  # python -m bot: granian
    gunicorn = Server(url, stub, command=[sys.executable, "-m", "gunicorn", "bench.gunicorn_app:app", "-w", "2",
                                          "-k", "gthread", "--threads", "8", "-b", "127.0.0.1:{port}",
                                          "--log-level", "warning"])
    fastapi, fastapi_url = fastapi_server(url.removeprefix("sqlite:///"))
    floor_port = free_port()
    floor = subprocess.Popen([sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", "2",
                              "--blocking-threads", "2", "--port", str(floor_port), "--log-level", "warning",
                              "bench.granian_floor:app"], cwd=ROOT)
    floor_url = f"http://127.0.0.1:{floor_port}/"
    _wait_for(floor_url)
    drf, drf_url, drf_keys = drf_server(str(Path(tempfile.mkdtemp(prefix="apikeys-bench-drf-")) / "drf.db"), args.keys)
    drf_auth = {"Authorization": f"Api-Key {drf_keys[50]}"}
    runs = {
        "granian /healthz": lambda: wrk(ours.url + "/healthz", args.seconds),
        "granian /v1/keys/verify": lambda: wrk(ours.url + "/v1/keys/verify", args.seconds, script=verify_script),
        "granian /v1/auth": lambda: wrk(ours.url + "/v1/auth", args.seconds, headers=auth),
        "gunicorn /healthz": lambda: wrk(gunicorn.url + "/healthz", args.seconds),
        "gunicorn /v1/keys/verify": lambda: wrk(gunicorn.url + "/v1/keys/verify", args.seconds, script=verify_script),
        "gunicorn /v1/auth": lambda: wrk(gunicorn.url + "/v1/auth", args.seconds, headers=auth),
        "fastapi /v1/auth": lambda: wrk(fastapi_url + "/v1/auth", args.seconds, headers=auth),
        "drf check": lambda: wrk(drf_url + "/check", args.seconds, headers=drf_auth),
        "floor GET": lambda: wrk(floor_url, args.seconds),
        "floor POST": lambda: wrk(floor_url, args.seconds, script=verify_script),
    }
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    try:
        for run in runs.values():  # warm-up: every worker up, caches filled
            run()
        for _ in range(args.rounds):
            for name, run in runs.items():
                rounds[name].append(run())
    finally:
        for proc in (fastapi, drf, floor):
            proc.terminate()
            proc.wait()
        ours.stop()
        gunicorn.stop()
        stub.stop()

    def rps(name: str) -> float:
        return statistics.median(r for r, _ in rounds[name])

    def ratio(a: str, b: str) -> float:
        return statistics.median(x[0] / y[0] for x, y in zip(rounds[a], rounds[b], strict=True))

    print(f"machine: {machine()}; {args.keys:,} keys; wrk -t{THREADS} -c{CONNECTIONS} -d{args.seconds}s; "
          f"{args.rounds} interleaved rounds (medians)")
    for name in runs:
        p99 = statistics.median(p for _, p in rounds[name])
        print(f"  {name:<26} {rps(name):>9,.0f} req/s   p99 {p99:6.2f} ms")
    summary = {
        "auth_vs_fastapi": ratio("granian /v1/auth", "fastapi /v1/auth"),
        "auth_vs_drf": ratio("granian /v1/auth", "drf check"),
        "auth_vs_healthz": ratio("granian /v1/auth", "granian /healthz"),
        "verify_vs_healthz": ratio("granian /v1/keys/verify", "granian /healthz"),
        "granian_vs_gunicorn_auth": ratio("granian /v1/auth", "gunicorn /v1/auth"),
        "gunicorn_auth_vs_fastapi": ratio("gunicorn /v1/auth", "fastapi /v1/auth"),
        "floor_post_vs_get": ratio("floor POST", "floor GET"),
        "healthz_vs_floor_get": ratio("granian /healthz", "floor GET"),
        "auth_p99_ms": statistics.median(p for _, p in rounds["granian /v1/auth"]),
    }
    for name, value in summary.items():
        print(f"  {name:<26} {value:.2f}")
    print(json.dumps({"rounds": rounds, "summary": summary}))


if __name__ == "__main__":
    main()
