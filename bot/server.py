"""``python -m bot``: the key API (and Slack's routes) on granian, a Rust HTTP server, through its
WSGI interface.

granian runs ``WEB_CONCURRENCY`` worker processes, forked from this one after the schema is
prepared and the code is imported (so they share those pages); each worker answers requests
on ``WEB_THREADS`` Python threads and opens its own connection pool. HTTP parsing, keep-alive and
the socket live in Rust, outside the interpreter lock. On SIGTERM the server stops accepting,
lets in-flight requests finish (at most ``GRACEFUL_TIMEOUT``) and exits 0. The Socket Mode
connection, when configured, runs in one process of its own beside the workers and stops with
them. ``docs/benchmarks.md`` has the comparison with gunicorn (gthread) that chose this.
"""

from __future__ import annotations

import atexit
import errno
import gc
import logging
import os
import re
import shutil
import socket
import sys
import tempfile

from storage import StorageError, grants, open_store

from . import logs
from .config import ConfigError, Settings, load_dotenv_file

log = logging.getLogger("apikeys.server")

# What prometheus-client writes in multi-process mode: <type>_<pid>.db (gauges: gauge_<mode>_<pid>.db, the
# modes of prometheus_client.Gauge), each an mmap'd file that starts with how much of it is used.
METRIC_FILE = re.compile(r"^(counter|histogram|summary|gauge_(live)?(all|min|max|sum|mostrecent))_\d+\.db$")
SQLITE_MAGIC = b"SQLite format 3\x00"


def _is_metric_file(directory: str, name: str) -> bool:
    """A file prometheus-client wrote: its name, a regular file, and not a SQLite database (one could be
    given a metric file's name as DATABASE_URL)."""
    path = os.path.join(directory, name)
    if not METRIC_FILE.match(name) or os.path.islink(path) or not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC


GRACEFUL_TIMEOUT = 8  # seconds; the contract promises an exit within 10
BACKLOG = 2048


def create_app(settings: Settings):
    """Build the WSGI application for one worker process."""
    from .api import KeyApiApp
    from .metrics import MeteredApp

    store = open_store(settings.database_url, bootstrap_admins=settings.admins, create_schema=False,
                       notify_channel=settings.audit_channel, pool_size=settings.threads + 2,
                       signer=settings.audit_signer)
    slack_app = None
    if settings.slack_enabled:
        from .slack import create_slack_wsgi  # the Slack app (HTTP mode)

        slack_app = create_slack_wsgi(settings, store)
    from .github import GitHubAlerts, GitHubKeys

    alerts = GitHubAlerts(GitHubKeys(settings.github_keys_url), settings.public_leak_action)
    metrics_here = settings.metrics_port is None
    from .wsgi import BodyGate

    # Bodies are read by at most WEB_THREADS - 1 threads at once: one is always free for GET /healthz
    # and /v1/auth, however many clients trickle their bodies (granian has no body timeout).
    gate = BodyGate(slots=settings.threads - 1, timeout=settings.body_timeout)
    if settings.slack_enabled and slack_app is None:
        return MeteredApp(KeyApiApp(store, metrics_here=metrics_here, github_alerts=alerts, body_gate=gate,
                                    slack_off="Slack requests arrive over Socket Mode on this server "
                                              "(SLACK_SIGNING_SECRET is not set, so HTTP requests from Slack are refused)"))
    return MeteredApp(KeyApiApp(store, slack_app=slack_app, github_alerts=alerts, metrics_here=metrics_here,
                                body_gate=gate))


# What each forked worker builds its application from (set by run_server before the fork).
_worker_config: tuple[Settings, object] | None = None


def _worker_app(_target: str):
    """granian's loader, run in each worker after the fork: our WSGI app (wrapped by the caller of
    run_server, when it gave a wrapper: `apikeys playground` adds its page and stand-in this way;
    nothing in the environment can)."""
    settings, wrap = _worker_config
    logs.route_all_loggers()  # granian configures its loggers again in the worker
    app = create_app(settings)
    from . import selfcheck

    selfcheck.start(app.store, settings)  # does the work in one worker of the installation at a time
    return app if wrap is None else wrap(app, settings)


def port_in_use(host: str, port: int) -> bool:
    """Whether another socket already listens on host:port (a second server is refused, rather
    than failing later in a worker)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host.strip("[]"), port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return True
        raise
    finally:
        probe.close()
    return False


def prepare_metrics_dir() -> str:
    """``PROMETHEUS_MULTIPROC_DIR`` for this server's processes, before anything imports
    prometheus-client (it chooses multi-process mode at import) and before the workers fork.

    Set: the directory is created if missing and emptied of the previous run's metric files (only the
    names prometheus-client writes: a directory holding anything else is refused, never emptied) (counters
    start again from zero with the server, as Prometheus expects of a restart). Unset: a fresh
    private directory (mode 0700, in /dev/shm unless TMPDIR says otherwise) is made and removed when
    the server exits."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the metrics directory was prepared")
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if path:
        os.makedirs(path, exist_ok=True)
        names = os.listdir(path)
        others = sorted(name for name in names if not _is_metric_file(path, name))
        if others:  # the data directory given by mistake: never delete what is not ours
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            raise ConfigError(f"PROMETHEUS_MULTIPROC_DIR {path} holds files that are not prometheus-client's metric "
                              f"files ({shown}); give it a directory of its own (nothing was deleted)")
        for name in names:
            os.remove(os.path.join(path, name))
    else:
        # In memory where there is a tmpfs: the workers write their counts to mmap'd files, and on a
        # disk the kernel's write-back would make writes fault again after every flush.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        path = tempfile.mkdtemp(prefix="apikeys-metrics-", dir=None if os.environ.get("TMPDIR") else shm)
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def main() -> int:
    load_dotenv_file()
    logs.configure()
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    return run_server(settings)


def _runtime_privileges(settings: Settings, owner, store) -> str | None:
    """A migration can add a table the runtime role was never granted: every revocation would then fail.
    With the owner's URL (DATABASE_MIGRATION_URL) the start grants it, as 'apikeys db grant' would;
    without it the server refuses to start, naming what is missing. Returns what was granted, if anything."""
    missing = grants.missing_privileges(store.db)
    if not missing:
        return None
    role = grants.current_role(store.db)
    if not settings.database_migration_url or grants.current_role(owner.db) == role:
        raise StorageError(f"the database role {role} lacks {', '.join(missing[:4])}"
                           f"{f' and {len(missing) - 4} more' if len(missing) > 4 else ''}, so keys could not be "
                           f"revoked or checked: as the tables' owner run 'apikeys db grant {role}' (after every "
                           "upgrade), or set DATABASE_MIGRATION_URL so that the start grants it")
    grants.grant_runtime(owner.db, role)
    still = grants.missing_privileges(store.db)
    if still:
        raise StorageError(f"the database role {role} still lacks {', '.join(still)} after 'apikeys db grant {role}'")
    return (f"granted the runtime role {role} what the new schema needs ({', '.join(missing)}), "
            "as 'apikeys db grant' does")


def run_server(settings: Settings, wrap=None) -> int:
    """Apply migrations, then serve until SIGTERM/SIGINT. ``wrap(app, settings) -> app``, when
    given, is applied to the application in each worker after ``create_app``."""
    try:  # first: prometheus-client must not be imported before (the Slack modules import it)
        metrics_dir = prepare_metrics_dir()
    except OSError as exc:
        log.error("cannot start: PROMETHEUS_MULTIPROC_DIR cannot be used: %s", exc)
        return 2
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    try:
        # Migrations as the owning role when one is given (DATABASE_MIGRATION_URL); the workers use DATABASE_URL.
        owner = open_store(settings.database_migration_url or settings.database_url, create_schema=True)
        try:
            store = open_store(settings.database_url, bootstrap_admins=settings.admins, create_schema=False)
            try:
                too_strong = grants.owner_warning(store.db)
                granted = _runtime_privileges(settings, owner, store)
            finally:
                store.close()
        finally:
            owner.close()
        if settings.socket_mode:
            from .slack.socket import SocketModeProcess

            socket_mode = SocketModeProcess(settings)
        else:
            socket_mode = None
    except (ConfigError, StorageError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    try:
        if port_in_use(settings.host, settings.port):
            log.error("cannot start: %s:%s is already in use by another program", settings.host, settings.port)
            return 2
    except OSError as exc:
        log.error("cannot start: cannot listen on %s:%s: %s", settings.host, settings.port, exc.strerror or exc)
        return 2
    if too_strong:
        log.warning("%s", too_strong)
    if granted:
        log.info("%s", granted)
    if not settings.slack_enabled:
        log.info("Slack is off (SLACK_BOT_TOKEN is not set); serving the key API only")
    if settings.audit_signer is None:
        log.warning("APIKEYS_AUDIT_SIGNING_KEY is not set: audit checkpoints are not signed, so the audit log is "
                    "only tamper-evident against edits, not against someone who rewrites it with database access "
                    "(make a key with 'apikeys audit keygen')")
    if settings.metrics_port is not None:
        try:
            if port_in_use(settings.host, settings.metrics_port):
                log.error("cannot start: METRICS_PORT %s:%s is already in use by another program",
                          settings.host, settings.metrics_port)
                return 2
        except OSError as exc:
            log.error("cannot start: cannot listen on %s:%s: %s", settings.host, settings.metrics_port,
                      exc.strerror or exc)
            return 2
    log.info("serving on %s:%s with %d workers", settings.host, settings.port, settings.workers)
    # Import what the workers run before they are forked, so that they share those pages with the
    # master (copy-on-write) instead of each loading its own copy: less memory per worker.
    from . import api  # noqa: F401
    if settings.slack_enabled:
        from .slack import app  # noqa: F401
    # Keep the garbage collector from touching (and so un-sharing) those objects in the workers.
    gc.collect()
    gc.freeze()
    global _worker_config
    _worker_config = (settings, wrap)
    server = _granian(settings)
    if socket_mode is not None:
        server.on_startup(socket_mode.start)
        server.on_shutdown(socket_mode.stop)
    if settings.metrics_port is not None:
        from .metrics_listener import MetricsProcess

        metrics_process = MetricsProcess(settings, metrics_dir)
        server.on_startup(metrics_process.start)
        server.on_shutdown(metrics_process.stop)
        log.info("metrics on %s:%s/metrics (METRICS_PORT), not on the public listener",
                 settings.host, settings.metrics_port)
    try:
        server.serve(target_loader=_worker_app)
    except SystemExit as exc:  # granian exits 1 when a worker died unexpectedly
        return int(exc.code or 0)
    return 0


def _granian(settings: Settings):
    from granian.constants import HTTPModes, Interfaces
    from granian.server import Server

    server = Server(
        "bot.server:app", address=settings.host.strip("[]"), port=settings.port, interface=Interfaces.WSGI,
        workers=settings.workers, blocking_threads=settings.threads, backlog=BACKLOG, http=HTTPModes.http1,
        websockets=False, log_enabled=True, log_access=False, workers_kill_timeout=GRACEFUL_TIMEOUT,
    )
    logs.route_all_loggers()  # granian's own lines (start, stop, worker trouble) through our one handler
    return server


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
