"""The playground as a process of its own (`apikeys playground`): started, waited for until it serves
its page, and stopped. For what drives it from outside: tools/screenshots.py, and the tests that use
a browser or send it a signal."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .app import free_port


@dataclass(frozen=True)
class Running:
    url: str                 # http://127.0.0.1:<port>
    proc: subprocess.Popen
    log: Path                # its output (stdout and stderr)


@contextlib.contextmanager
def running(cwd: Path, env: dict[str, str], *, startup: float = 30.0) -> Iterator[Running]:
    """The playground started in ``cwd`` with exactly ``env``, once ``/playground`` answers (its
    output then in ``cwd/playground.log``, which a failure to start raises with); stopped on the way
    out, whatever happens (SIGTERM, then SIGKILL after 15 s), unless it has ended already."""
    port = free_port()
    log_path = cwd / "playground.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "playground", "--port", str(port)], cwd=cwd,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + startup
            while True:
                try:
                    urllib.request.urlopen(url + "/playground", timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(log_path.read_text()) from None
                    time.sleep(0.1)
            yield Running(url, proc, log_path)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
