"""``METRICS_PORT``: ``GET /metrics`` on a listener of its own, so it stays off the public one.

One process of its own, beside the workers (started and stopped with them, like the Socket Mode
process): a fresh interpreter ("spawn") that opens the key store for the scrape-time readings and
adds up the workers' counts from ``PROMETHEUS_MULTIPROC_DIR``. It answers only ``GET``/``HEAD
/metrics``, on prometheus-client's own small threaded server (the exporter's usual listener; it
serves one scraper, not the public traffic granian serves).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket

from .config import Settings

log = logging.getLogger("apikeys.metrics")


def _run(settings: Settings, metrics_dir: str) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from storage import open_store

    from . import logs
    from .metrics import CONTENT_TYPE, MetricsEndpoint

    logs.configure()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    store = open_store(settings.database_url, create_schema=False, pool_size=2)
    endpoint = MetricsEndpoint(store)

    def app(environ, start_response):
        if environ.get("PATH_INFO") != "/metrics":
            body = b'{"error": "only /metrics is served here"}'
            start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            body = b'{"error": "use GET or HEAD"}'
            start_response("405 Method Not Allowed", [("Content-Type", "application/json"), ("Allow", "GET, HEAD"),
                                                      ("Content-Length", str(len(body)))])
            return [body]
        body = endpoint.render()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE), ("Cache-Control", "no-store"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    host = settings.host.strip("[]")

    class Listener(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Quiet(WSGIRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - the standard library's signature
            pass  # no line per scrape

    httpd = make_server(host, settings.metrics_port, app, Listener, handler_class=Quiet)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
        store.close()


class MetricsProcess:
    def __init__(self, settings: Settings, metrics_dir: str):
        self.settings = settings
        self.metrics_dir = metrics_dir
        self.process: multiprocessing.Process | None = None

    def start(self) -> None:
        self.process = multiprocessing.get_context("spawn").Process(
            target=_run, args=(self.settings, self.metrics_dir), name="apikeys-metrics", daemon=True
        )
        self.process.start()

    def stop(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
