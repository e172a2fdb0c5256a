"""What the key API's line per verification costs: ``logging`` with ``fields`` (before) against
``RequestLog`` (the server's path now), written through the process's one handler to a file, as
many lines as a busy server writes (100,000, at well over 10,000 a second).

    .venv/bin/python -m bench.log_cost
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time

from bot import logs
from bot.logs import fields

from .common import machine

N = 100_000


def main() -> None:
    target = tempfile.NamedTemporaryFile("w", prefix="apikeys-bench-log-", suffix=".log", delete=False)
    stderr = sys.stderr
    sys.stderr = target  # configure() writes to stderr: here, a file
    try:
        logs.configure()
        request_log = logs.RequestLog("apikeys.http")
        logger = logging.getLogger("apikeys.http")
        key_id = "key_1HBjGtqUWYBclrlwg"
        results = {}
        for name, write in (
            ("logging.info(fields(...))", lambda: logger.info(fields(event="auth", code="VALID", key_id=key_id))),
            ("RequestLog.info(...)", lambda: request_log.info(f"event=auth code=VALID key_id={key_id}")),
        ):
            for _ in range(2):  # the second run counts
                start = time.perf_counter()
                for _ in range(N):
                    write()
                results[name] = (time.perf_counter() - start) / N
    finally:
        sys.stderr = stderr
        logging.getLogger().handlers.clear()
    lines = open(target.name).read().splitlines()
    assert len(lines) == 4 * N and lines[-1].endswith(f"event=auth code=VALID key_id={key_id}")
    assert lines[0].split(" ", 2)[2] == lines[-1].split(" ", 2)[2]  # the same line, but for its time
    print(f"machine: {machine()}; {N:,} lines each, to a file")
    for name, seconds in results.items():
        print(f"  {name:<28} {seconds * 1e6:6.2f} us a line  ({1 / seconds:>9,.0f} lines/s on one thread)")
    before, after = results.values()
    print(f"  the line costs {before / after:.1f}x less")


if __name__ == "__main__":
    main()
