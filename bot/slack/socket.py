"""Socket Mode: one process of its own (started beside the HTTP server's workers, stopped with
them) holding the WebSocket to Slack. It runs the same Bolt app and the same storage as HTTP mode.
When Slack cannot be reached it says so in one line and tries again, backing off to a minute."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time

from ..config import Settings

log = logging.getLogger("apikeys.socket")


def _run(settings: Settings) -> None:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from storage import open_store

    from .. import logs
    from .app import create_app, make_client, start_delivery

    logs.configure()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    store = open_store(settings.database_url, bootstrap_admins=settings.admins, create_schema=False,
                       notify_channel=settings.audit_channel, signer=settings.audit_signer)
    client = make_client(settings)
    start_delivery(store, client)
    app = create_app(settings, store, client=client, socket_mode=True)
    delay = 1.0
    while True:
        log.info("connecting to Slack over Socket Mode")
        try:
            SocketModeHandler(app, settings.slack_app_token, trace_enabled=False).start()
            return
        except Exception as exc:  # Slack unreachable, a refused token: one line, then again
            log.error("Socket Mode could not connect (%s: %s); trying again in %.0f s",
                      type(exc).__name__, str(exc)[:200], delay)
        time.sleep(delay)
        delay = min(delay * 2, 60.0)


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
