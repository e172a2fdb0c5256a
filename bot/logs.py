"""Logging: one readable line per event, and no API key ever written out.

``RedactingFormatter`` masks anything shaped like one of our keys in the final line
(message, arguments and tracebacks alike), as a last line of defence behind code that
never logs secrets in the first place.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import weakref

from storage.keyformat import KEY_PREFIX
from storage.redaction import looks_like_key, redact

__all__ = ["FORMAT", "GroupWriteHandler", "RedactingFormatter", "configure", "escape_controls", "fields",
           "looks_like_key", "redact"]

# Every control character but the line feed (tracebacks span lines; values never do, see
# ``fields``): C0, DEL and C1 (0x9b is a one-byte CSI, as dangerous on a terminal as ESC [).
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """Control characters written as ``\\xNN``, so that ESC, BEL or NUL from a request, a Slack
    field or a CLI flag never reach a terminal or a log collector raw."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


class RedactingFormatter(logging.Formatter):
    """Masks key-shaped text and escapes control characters in the whole line (message,
    arguments and tracebacks alike); also caches the timestamp text per second (formatting time is the
    largest part of a log line's cost, and the key API logs one line per request)."""

    _marker = KEY_PREFIX  # "apk": keys (apk_) and admin tokens (apkt_) alike
    _cached: tuple[int, str] = (-1, "")  # (second, its text): one attribute, so threads never see half an update

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return self.stamp(record.created)

    def stamp(self, created: float) -> str:
        """``2026-12-02 01:02:03,456`` for a ``time.time()`` value, the second's text cached."""
        second = int(created)
        cached_second, text = self._cached
        if second != cached_second:
            text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
            self._cached = (second, text)
        return f"{text},{int((created - second) * 1000):03d}"

    @classmethod
    def clean(cls, text: str) -> str:
        """The finished line, key-shaped text masked and control characters escaped."""
        if cls._marker in text:
            text = redact(text)
        return escape_controls(text) if not text.isprintable() else text

    def format(self, record: logging.LogRecord) -> str:
        return self.clean(super().format(record))


class GroupWriteHandler(logging.StreamHandler):
    """A stream handler whose threads never queue behind each other's writes.

    ``logging.StreamHandler`` holds its lock across the ``write`` system call, so under load the
    key API's threads (one log line per request) lined up on that lock and on the interpreter
    lock it hands around: each line cost tens of microseconds of switching. Here a line is
    formatted outside any lock and appended to a list; the thread that finds no write in
    progress writes everything pending, in one ``write``, until the list is empty; the others
    return at once. No line waits for a timer: each is written by its own thread or by the one
    already writing, before that thread returns.
    """

    def __init__(self, stream=None):
        super().__init__(stream)
        self._pending: list[str] = []
        self._writing = False
        _handlers.add(self)

    def handle(self, record: logging.LogRecord):
        passed = self.filter(record)
        if isinstance(passed, logging.LogRecord):  # Python 3.12+: a filter may hand back a replacement
            record = passed
        if passed:
            self.emit(record)  # locks only what it must (below)
        return passed

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self.write_line(line, record)

    def write_line(self, line: str, record: logging.LogRecord | None = None) -> None:
        """Write one finished line (``RequestLog`` hands its lines here directly)."""
        with self.lock:
            self._pending.append(line)
            if self._writing:
                return  # the thread writing now writes this line too before it stops
            self._writing = True
        try:
            while True:
                with self.lock:
                    if not self._pending:
                        self._writing = False
                        return
                    batch = "".join(self._pending)
                    self._pending.clear()
                self.stream.write(batch)
                self.stream.flush()
        except Exception:
            with self.lock:
                self._writing = False
            self.handleError(record or logging.makeLogRecord({"msg": line.rstrip()}))

    def _after_fork_in_child(self) -> None:
        # Lines pending at the fork belong to the parent, which writes them; a write that was in
        # progress in another thread of the parent does not exist here.
        self._pending = []
        self._writing = False


_handlers: weakref.WeakSet[GroupWriteHandler] = weakref.WeakSet()


def _reset_handlers_in_child() -> None:
    for handler in list(_handlers):
        handler._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_handlers_in_child)


FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure(level: int = logging.INFO) -> None:
    # Our line format names no thread or source line: skip collecting them for every record
    # (the "Optimization" section of the logging HOWTO).
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = GroupWriteHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("sqlalchemy", "urllib3", "slack_sdk.socket_mode", "slack_bolt.App", "alembic"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    route_all_loggers()


def route_all_loggers() -> None:
    """Send every logger the process has through the root's one redacting handler: a library that
    installed a handler of its own (granian does, for its own lines) would otherwise
    write its lines past the redaction, for example a malformed request line carrying a key."""
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and (logger.handlers or not logger.propagate):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


class RequestLog:
    """The key API's one line per request, at a fraction of ``logging``'s cost.

    Security teams rely on a line per verification, and at 10,000+ requests a second building a
    ``LogRecord`` and running it through the formatter was a third of a request's work. When the
    process logs through ``configure``'s one handler, the line is built here, in exactly the
    format ``RedactingFormatter`` gives (same time stamp, same masking and escaping, which the
    values written here never need), and handed to that handler; with any other handler in place
    (a test's log capture, another configuration) it goes through ``logging`` as usual."""

    def __init__(self, name: str):
        self.logger = logging.getLogger(name)
        self.name = name
        self._formatter = RedactingFormatter(FORMAT)
        self._pid = -1
        self._prefix = ""

    def info(self, line: str) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handlers = logging.root.handlers
        if logger.handlers or len(handlers) != 1 or type(handlers[0]) is not GroupWriteHandler or not logger.propagate:
            logger.info(line)
            return
        pid = os.getpid()
        if pid != self._pid:
            self._pid, self._prefix = pid, f" INFO [{pid}] {self.name}: "
        formatter = self._formatter
        handlers[0].write_line(formatter.clean(f"{formatter.stamp(time.time())}{self._prefix}{line}") + "\n")


_NEEDS_QUOTES = re.compile(r'[\s"=]')


def fields(**values) -> str:
    """``key=value`` pairs (logfmt). Values with spaces, quotes, ``=`` or line breaks are quoted,
    and line breaks escaped, so a value (a reason typed in Slack, say) can never start a line of its own."""
    parts = []
    for name, value in values.items():
        if value is None:
            continue
        text = value if type(value) is str else str(value)
        if not text or _NEEDS_QUOTES.search(text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'
        parts.append(f"{name}={text}")
    return " ".join(parts)
