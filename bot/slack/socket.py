"""Socket Mode: one process of its own (started beside the HTTP server's workers, stopped with
them) holding the WebSocket to Slack. It runs the same Bolt app and the same storage as HTTP mode.
When Slack cannot be reached it says so in one line and tries again, backing off to a minute."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
import time

from ..config import Settings

log = logging.getLogger("apikeys.socket")


def _run(settings: Settings) -> None:
    from storage import open_store

    from .. import logs
    from .app import create_app, make_client, start_delivery

    logs.configure()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches us too: the server stops us
    store = open_store(settings.database_url, bootstrap_admins=settings.admins, create_schema=False,
                       notify_channel=settings.audit_channel, signer=settings.audit_signer)
    client = make_client(settings)
    start_delivery(store, client)
    app = create_app(settings, store, client=client, socket_mode=True)
    connect(app, settings)
    threading.Event().wait()  # as SocketModeHandler.start: the client reconnects by itself from here


# The Socket Mode client's own lines (reconnects, a dropped WebSocket), at warning and above.
CLIENT_LOG = logging.getLogger("slack_sdk.socket_mode.apikeys")
WEB_LOG = logging.getLogger("slack_sdk.web.base_client")


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
    drop = logging.Filter("nothing")  # passes no record: its name matches no logger's
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def connect(app, settings: Settings, *, sleep=time.sleep):
    """Connect ``app`` over Socket Mode, trying again (backing off to a minute) until it is: one line
    when it starts, one per failed attempt saying what to do, one when it is connected."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    delay = 1.0
    log.info("connecting to Slack over Socket Mode")
    while True:
        handler = SocketModeHandler(app, settings.slack_app_token, trace_enabled=False, logger=CLIENT_LOG)
        try:
            # Each failure is said once, below, with what to do: not the client's lines, nor slack_sdk's
            # own for each failed call and retry (nine lines in all). Its lines for other calls stay.
            with _quiet(CLIENT_LOG), _quiet(WEB_LOG):
                handler.connect()
        except Exception as exc:  # Slack unreachable, a refused token: one line, then again
            with contextlib.suppress(Exception):
                handler.close()
            log.error("Socket Mode could not connect: %s; trying again in %.0f s", connect_problem(exc, settings), delay)
            sleep(delay)
            delay = min(delay * 2, 60.0)
            continue
        log.info("connected to Slack over Socket Mode")
        return handler


def connect_problem(exc: Exception, settings: Settings) -> str:
    """What went wrong, and what to do about it, in a few words (never the token)."""
    from slack_sdk.errors import SlackApiError

    if isinstance(exc, SlackApiError):
        error = exc.response.get("error") if hasattr(exc.response, "get") else None
        hint = {
            "invalid_auth": "SLACK_APP_TOKEN was refused: use the app-level token (xapp-…) from Basic Information",
            "not_authed": "SLACK_APP_TOKEN is missing",
            "not_allowed_token_type": "SLACK_APP_TOKEN must be an app-level token (xapp-…) with connections:write, "
                                      "not the bot token",
            "missing_scope": "the app-level token lacks connections:write",
            "invalid_app_token": "SLACK_APP_TOKEN was refused: use the app-level token (xapp-…) from Basic Information",
        }.get(error or "", "enable Socket Mode in the app's settings, and check SLACK_APP_TOKEN")
        return f"Slack answered {error or exc.response.status_code} ({hint})"
    return f"cannot reach {settings.slack_api_url} ({type(exc).__name__}: {str(exc)[:160]})"


class SocketModeProcess:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.process: multiprocessing.Process | None = None

    def start(self) -> None:
        # "spawn": a fresh interpreter, not a fork of the server's master.
        self.process = multiprocessing.get_context("spawn").Process(
            target=_run, args=(self.settings,), name="apikeys-socket-mode", daemon=True
        )
        self.process.start()

    def stop(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
