"""Logging: one readable line per event, and no API key ever written out.

``RedactingFormatter`` masks anything shaped like one of our keys in the final line
(message, arguments and tracebacks alike), as a last line of defence behind code that
never logs secrets in the first place.
"""

from __future__ import annotations

import logging
import re
import sys
import time

from storage.keyformat import KEY_PREFIX, MASK_ELLIPSIS

_KEYLIKE = re.compile(rf"{KEY_PREFIX}_[0-9A-Za-z]{{8,}}")


def redact(text: str) -> str:
    return _KEYLIKE.sub(lambda m: f"{KEY_PREFIX}_{MASK_ELLIPSIS}{m.group(0)[-4:]}[redacted]", text)


def looks_like_key(text: str) -> bool:
    return bool(_KEYLIKE.search(text))


class RedactingFormatter(logging.Formatter):
    """Masks key-shaped text; also caches the timestamp text per second (formatting time is the
    largest part of a log line's cost, and the key API logs one line per request)."""

    _marker = f"{KEY_PREFIX}_"
    _cached_second: int = -1
    _cached_text: str = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        if second != self._cached_second:
            self._cached_second, self._cached_text = second, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
        return f"{self._cached_text},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return redact(text) if self._marker in text else text


FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("sqlalchemy", "urllib3", "slack_sdk.socket_mode", "slack_bolt.App", "alembic"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def fields(**values) -> str:
    """``key=value`` pairs (logfmt), quoting values with spaces."""
    parts = []
    for name, value in values.items():
        if value is None:
            continue
        text = str(value)
        if not text or any(c in text for c in ' "='):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{name}={text}")
    return " ".join(parts)
