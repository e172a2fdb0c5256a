"""``python -m bot``: the key API (and Slack's routes) on gunicorn.

gunicorn runs ``WEB_CONCURRENCY`` worker processes with ``WEB_THREADS`` threads each. The
database schema is prepared once in the master before workers start; each worker opens
its own connection pool after the fork. On SIGTERM gunicorn stops accepting connections,
lets in-flight requests finish (``graceful_timeout``) and exits 0.

Each worker listens on a socket of its own (``SO_REUSEPORT``), so the kernel spreads new
connections evenly across workers. With one shared socket the workers race to accept, and a
burst of keep-alive connections (a proxy's pool, a load test) often lands mostly on one
worker, which then does all the work on one core while the others idle.
"""

from __future__ import annotations

import errno
import gc
import logging
import socket
import sys

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.workers.gthread import ThreadWorker

from storage import StorageError, open_store

from . import logs
from .config import ConfigError, Settings, load_dotenv_file

log = logging.getLogger("apikeys.server")

GRACEFUL_TIMEOUT = 8  # seconds; the contract promises an exit within 10


def create_app(settings: Settings):
    """Build the WSGI application for one worker process."""
    from .http import KeyApiApp

    store = open_store(settings.database_url, bootstrap_admins=settings.admins, create_schema=False,
                       notify_channel=settings.audit_channel, pool_size=settings.threads + 2,
                       signer=settings.audit_signer)
    slack_app = None
    if settings.slack_enabled:
        from .slack import create_slack_wsgi  # the Slack app (HTTP mode)

        slack_app = create_slack_wsgi(settings, store)
    if settings.slack_enabled and slack_app is None:
        return KeyApiApp(store, slack_off="Slack requests arrive over Socket Mode on this server "
                                          "(SLACK_SIGNING_SECRET is not set, so HTTP requests from Slack are refused)")
    return KeyApiApp(store, slack_app=slack_app)


class Worker(ThreadWorker):
    """gunicorn's threaded worker, which also closes its own listening socket as soon as it stops
    accepting to shut down: new connections then go to a sibling (or are refused, when the
    whole server is stopping) instead of queueing on a socket nobody will accept from."""

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            for listener in self.sockets:
                listener.close()


class _Logger(GunicornLogger):
    """gunicorn's error log (and access log, when on) through the process's one redacting handler:
    gunicorn gives them handlers of their own, and its error log quotes malformed request lines,
    keys and control characters included."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        logs.route_all_loggers()


# Linux balances connections across SO_REUSEPORT sockets; other systems do not, so they keep one shared socket.
PER_WORKER_SOCKETS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def port_in_use(host: str, port: int) -> bool:
    """Whether another socket already listens on host:port. Each worker binds with SO_REUSEPORT,
    which would otherwise let a second server on the same port silently take half the traffic."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn's own sockets
        probe.bind((host.strip("[]"), port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return True
        raise
    finally:
        probe.close()
    return False


class _Gunicorn(BaseApplication):
    def __init__(self, settings: Settings, socket_mode=None, wrap=None):
        self.settings = settings
        self.socket_mode = socket_mode
        self.wrap = wrap
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        host = f"[{s.host}]" if ":" in s.host and not s.host.startswith("[") else s.host
        options = {
            "bind": f"{host}:{s.port}",
            "workers": s.workers,
            "worker_class": Worker,
            "reuse_port": PER_WORKER_SOCKETS,
            "threads": s.threads,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "timeout": 30,
            "keepalive": 5,
            "accesslog": None,
            "errorlog": "-",
            "logger_class": _Logger,
            "loglevel": "info",
            "proc_name": "apikeys-bot",
            "control_socket_disable": True,
        }
        if self.socket_mode is not None:
            # Socket Mode runs in one process of its own beside the HTTP workers.
            options["when_ready"] = lambda _arbiter: self.socket_mode.start()
            options["on_exit"] = lambda _arbiter: self.socket_mode.stop()
        for name, value in options.items():
            if name in self.cfg.settings:
                self.cfg.set(name, value)

    def load(self):
        logs.configure()
        app = create_app(self.settings)
        # Only a caller of run_server wraps the app (`apikeys playground` adds its page and stand-in
        # for Slack this way, in the worker); nothing in the environment can.
        return app if self.wrap is None else self.wrap(app, self.settings)


def main() -> int:
    load_dotenv_file()
    logs.configure()
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    return run_server(settings)


def run_server(settings: Settings, wrap=None) -> int:
    """Apply migrations, then serve until SIGTERM/SIGINT. ``wrap(app, settings) -> app``, when
    given, is applied to the application in each worker after ``create_app``."""
    try:
        store = open_store(settings.database_url, bootstrap_admins=settings.admins, create_schema=True)
        store.close()
        if settings.socket_mode:
            from .slack.socket import SocketModeProcess

            options_hooks = SocketModeProcess(settings)
        else:
            options_hooks = None
    except (ConfigError, StorageError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    try:
        if PER_WORKER_SOCKETS and port_in_use(settings.host, settings.port):
            log.error("cannot start: %s:%s is already in use by another program", settings.host, settings.port)
            return 2
    except OSError as exc:
        log.error("cannot start: cannot listen on %s:%s: %s", settings.host, settings.port, exc.strerror or exc)
        return 2
    if not settings.slack_enabled:
        log.info("Slack is off (SLACK_BOT_TOKEN is not set); serving the key API only")
    if settings.audit_signer is None:
        log.warning("APIKEYS_AUDIT_SIGNING_KEY is not set: audit checkpoints are not signed, so the audit log is "
                    "only tamper-evident against edits, not against someone who rewrites it with database access "
                    "(make a key with 'apikeys audit keygen')")
    log.info("serving on %s:%s with %d workers", settings.host, settings.port, settings.workers)
    # Import what the workers run before they are forked, so that they share those pages with the
    # master (copy-on-write) instead of each loading its own copy: less memory per worker.
    from . import http  # noqa: F401
    if settings.slack_enabled:
        from .slack import app  # noqa: F401
    # Keep the garbage collector from touching (and so un-sharing) those objects in the workers.
    gc.collect()
    gc.freeze()
    _Gunicorn(settings, options_hooks, wrap).run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
