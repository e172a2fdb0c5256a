"""Shared helpers for the benchmarks: a Slack stand-in, a real server process, seeding, stats."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import free_port  # noqa: E402
from tests.slackhttp import SlackSender  # noqa: E402
from tests.slackstub import SlackStub  # noqa: E402

SECRET = "bench-signing-secret"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = cpu
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}, {platform.system()}"


def wrk(url: str, seconds: int, *, threads: int = 2, connections: int = 16, script: str | None = None,
        headers: dict | None = None) -> tuple[float, float]:
    """(requests per second, p99 latency in ms) as wrk reports them; every answer must be a 2xx
    (wrk counts the others, and any is an error here). ``script``: the path of a wrk Lua script."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{url}: {bad.group(1)} failed responses\n{out}")
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), float(p99.group(1)) * scale


def wrk_post_json_script(payload: dict) -> str:
    """A wrk Lua script that POSTs ``payload`` as JSON on every request; the path of a temporary file."""
    body = json.dumps(payload)
    path = Path(tempfile.mkstemp(suffix=".lua")[1])
    path.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')
    return str(path)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p95": percentile(values, 95), "n": len(values)}


def database(name: str) -> str:
    url = os.environ.get("BENCH_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{Path(tempfile.mkdtemp(prefix='apikeys-bench-')) / name}"


def seeded(name: str, keys: int) -> tuple[str, str]:
    """A database of ``keys`` keys (``database(name)``) and the secret of the one in the middle."""
    from storage import open_store

    url = database(name)
    store = open_store(url)
    created = store.keys.create(name="svc", owner="load", actor="bench", count=keys)
    secret = created[len(created) // 2].secret
    store.close()
    return url, secret


class Server:
    def __init__(self, database_url: str, stub: SlackStub, *, workers: int = 2, extra: dict | None = None,
                 command: list[str] | None = None, cwd: Path = ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
        env.update(DATABASE_URL=database_url, HOST="127.0.0.1", PORT=str(self.port), WEB_CONCURRENCY=str(workers),
                   SLACK_BOT_TOKEN="xoxb-test", SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=stub.api_url,
                   APIKEYS_ADMINS="UADMIN001", APIKEYS_AUDIT_CHANNEL="C0AUDIT", **(extra or {}))
        self.log = tempfile.NamedTemporaryFile(prefix="apikeys-bench-server-", suffix=".log", delete=False)
        argv = [arg.replace("{port}", str(self.port)) for arg in (command or [sys.executable, "-m", "bot"])]
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(Path(self.log.name).read_text()) from None
                time.sleep(0.1)
        self.sender = SlackSender(self.url, SECRET, stub)

    def pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        return [self.proc.pid, *map(int, out)]

    def _sum_kb(self, filename: str, field: str) -> float:
        """Add up one /proc field (in kB) over the master and its workers; MB."""
        total = 0
        for pid in self.pids():
            try:
                for line in open(f"/proc/{pid}/{filename}"):
                    if line.startswith(field):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def rss_mb(self) -> float:
        """Resident memory of the master and its workers, in MB."""
        return self._sum_kb("status", "VmRSS:")

    def pss_mb(self) -> float:
        """Proportional set size: shared pages split between the processes that share them (the
        honest total for a forking server, where RSS counts every shared page once per process)."""
        return self._sum_kb("smaps_rollup", "Pss:")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)


@contextmanager
def running(database_url: str, **kwargs):
    stub = SlackStub().start()
    server = Server(database_url, stub, **kwargs)
    try:
        yield stub, server
    finally:
        server.stop()
        stub.stop()


def fastapi_peer(app: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """A FastAPI peer (``bench/<module>:app``) on uvicorn with 2 workers, uvloop and httptools, no access
    log; returns the process and its URL once ``/v1/auth`` answers (401 without a key)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", app, "--port", str(port), "--workers", "2",
                             "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"],
                            cwd=ROOT, env=dict(os.environ, **env))
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/v1/auth", timeout=1)
        except urllib.error.HTTPError:
            break  # 401 without a key: it is up
        except OSError:
            time.sleep(0.1)
    return proc, url


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
