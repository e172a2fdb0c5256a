"""The app in this process: one worker's WSGI app (``bot.server.create_app``) behind a small
threaded WSGI server, and the means to know when the Slack handlers behind the acks are done.

Bolt answers Slack before the handler runs (``process_before_response=False``): the handler runs on
Bolt's listener executor, which ``TrackingExecutor`` wraps to wait for it (``wait_idle``). A crash
there only shows in the log: ``Errors`` keeps the ERROR records, ``unexpected`` names those that
mean something failed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from bot.config import Settings
from bot.server import create_app

from .helpers import ADMIN

SECRET = "fuzz-signing-secret-5c1d"
AUDIT = "C0AUDIT"


class _Threading(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class TrackingExecutor:
    """Wraps Bolt's listener executor to know when the handlers behind the acks are done."""

    def __init__(self, inner):
        self.inner = inner
        self.active = 0
        self.cond = threading.Condition()

    def submit(self, fn, *args, **kwargs):
        with self.cond:
            self.active += 1

        def run():
            try:
                return fn(*args, **kwargs)
            finally:
                with self.cond:
                    self.active -= 1
                    self.cond.notify_all()

        return self.inner.submit(run)

    def wait_idle(self, timeout: float = 20.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.active == 0, timeout):
                raise AssertionError(f"{self.active} Slack handler(s) still running after {timeout:g}s")

    def __getattr__(self, name):
        return getattr(self.inner, name)


def track_listeners(bolt_app) -> TrackingExecutor:
    """Put a ``TrackingExecutor`` around the Bolt app's listener executor; return it."""
    runner = bolt_app.listener_runner
    executor = TrackingExecutor(runner.listener_executor)
    runner.listener_executor = executor
    return executor


class Errors(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def unexpected(records: list[logging.LogRecord]) -> list[str]:
    """ERROR records that mean something failed (not: the response_url was unreachable)."""
    out = []
    for record in records:
        message = record.getMessage()
        if record.exc_info is None and (message.startswith("reply failed") or record.name == "slack_sdk.webhook.client"):
            continue  # a garbage response_url: the app could not answer there, and said so
        error = f" ({record.exc_info[0].__name__}: {record.exc_info[1]})" if record.exc_info else ""
        out.append(f"{record.name}: {message}{error}")
    return out


@dataclass
class Served:
    """One worker's WSGI app on a free local port."""

    server: Any
    wsgi: Any
    executor: TrackingExecutor

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for callback in self.wsgi.store.outbox.on_commit:  # the audit deliverer of this app
            stop = getattr(getattr(callback, "__self__", None), "stop", None)
            if stop:
                stop()
        self.wsgi.store.close()


def serve(database_url: str, stub, secret: str = SECRET) -> Served:
    """The real WSGI app of one worker (Slack on, the stand-in as Slack) on a free local port."""
    app_settings = Settings(database_url=database_url, slack_bot_token="xoxb-test", slack_signing_secret=secret,
                            slack_api_url=stub.api_url, admins=(ADMIN,), audit_channel=AUDIT)
    wsgi = create_app(app_settings)
    executor = track_listeners(wsgi.slack_app.app)  # the Bolt app behind the gate
    server = make_server("127.0.0.1", 0, wsgi, server_class=_Threading, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return Served(server, wsgi, executor)
