"""Logging: one readable line per event, and no API key ever written out.

``RedactingFormatter`` masks anything shaped like one of our keys in the final line
(message, arguments and tracebacks alike), as a last line of defence behind code that
never logs secrets in the first place.
"""

from __future__ import annotations

import logging
import re
import sys

from storage.keyformat import KEY_PREFIX, MASK_ELLIPSIS

_KEYLIKE = re.compile(rf"{KEY_PREFIX}_[0-9A-Za-z]{{8,}}")


def redact(text: str) -> str:
    return _KEYLIKE.sub(lambda m: f"{KEY_PREFIX}_{MASK_ELLIPSIS}{m.group(0)[-4:]}[redacted]", text)


def looks_like_key(text: str) -> bool:
    return bool(_KEYLIKE.search(text))


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


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
