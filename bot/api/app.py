"""The WSGI application served by the production server: the key API, health, and the seam for
Slack's requests, dispatched from the route table (``bot.api.table``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from storage import DatabaseUnavailable, Store
from storage.redaction import redact

from .. import github, metrics
from ..logs import fields
from ..wsgi import CLOSE, ROUTE_KEY, BodyGate, BodyTimeout, HttpError, WSGIApp, respond
from . import openapi
from .problems import Problem, respond_problem
from .routes import PATH_PARAMS, RouteTable
from .table import ROUTES

log = logging.getLogger("apikeys.http")

UNAVAILABLE = "UNAVAILABLE"  # the code a key check answers (503) when the key store cannot be read
_COMPLAINT_EVERY = 60.0  # seconds between two log lines about the database being unavailable


class KeyApiApp:
    """The WSGI callable served by the production server."""

    def __init__(self, store: Store, slack_app: WSGIApp | None = None,
                 slack_off: str = "Slack is off on this server (SLACK_BOT_TOKEN is not set)",
                 github_alerts: github.GitHubAlerts | None = None, metrics_here: bool = True,
                 body_gate: BodyGate | None = None, routes: RouteTable = ROUTES):
        self.store = store
        self.routes = routes
        self.body_gate = body_gate or BodyGate(slots=1, timeout=10.0)
        self.slack_app = slack_app
        self.slack_off = slack_off
        self.github_alerts = github_alerts or github.GitHubAlerts(github.GitHubKeys())
        # METRICS_PORT set: /metrics is served on that listener only, and is not a route here.
        self.metrics = metrics.MetricsEndpoint(store) if metrics_here else None
        self.document = openapi.document_bytes(routes)
        self._last_complaint = -_COMPLAINT_EVERY

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if not self.body_gate.admit(environ):
            log.warning(fields(event="request", path=path, outcome="body_slots_busy"))
            return self._refuse(path, start_response, 503, "too many request bodies are still arriving; try again",
                                [("Retry-After", "1"), *CLOSE])
        try:
            return self._dispatch(path, environ, start_response)
        except BodyTimeout:
            log.info(fields(event="request", path=path, outcome="body_timeout"))
            return self._refuse(path, start_response, 408, f"the request body took longer than "
                                                          f"{self.body_gate.timeout:g} s to arrive", CLOSE)
        finally:
            timed = environ.get("apikeys.body")
            if timed is not None:
                self.body_gate.done(timed)  # a body left unread, or an error while reading it

    def _refuse(self, path: str, start_response, status: int, message: str, headers) -> list[bytes]:
        """An answer given outside a route's handler, in that route's error format."""
        route = self.routes.find(path)
        if route is not None and route.problems:
            return respond_problem(start_response, Problem(status, message, headers=list(headers)))
        return respond(start_response, status, {"error": message}, list(headers))

    def _dispatch(self, path: str, environ: dict, start_response) -> Iterable[bytes]:
        route = None
        try:
            params: dict[str, str] = {}
            route = self.routes.find(path, params)
            if route is None:
                raise HttpError(404, f"no route {path}")
            environ[ROUTE_KEY] = route.label
            environ[PATH_PARAMS] = params
            if route.off is not None and (off := route.off(self)) is not None:
                raise HttpError(404, off)
            method = environ.get("REQUEST_METHOD", "GET").upper()
            if route.methods is not None and method not in route.methods:
                raise HttpError(405, f"use {' or '.join(route.methods)}", allow=route.methods)
            return route.handler(self, environ, start_response)
        except HttpError as exc:
            if route is not None and route.problems:
                return respond_problem(start_response, exc)
            return respond(start_response, exc.status, {"error": redact(exc.message)}, exc.headers)
        except DatabaseUnavailable as exc:
            self._complain_unavailable(path, exc)
            if route is not None and route.problems:
                return respond_problem(start_response, Problem(503, "the key store is unavailable; try again",
                                                               headers=[("Retry-After", "5")]))
            return respond(start_response, 503, {"code": UNAVAILABLE, "error": "the key store is unavailable; try again"},
                           [("Retry-After", "5")])
        except BodyTimeout:
            raise
        except Exception:
            log.exception(fields(event="request", path=path, outcome="error"))
            if route is not None and route.problems:
                return respond_problem(start_response, Problem(500, "internal error"))
            return respond(start_response, 500, {"error": "internal error"})

    def _complain_unavailable(self, path: str, exc: Exception) -> None:
        """One line a minute while the key store cannot be read, however many requests fail (never a
        traceback per request)."""
        now = time.monotonic()
        if now - self._last_complaint >= _COMPLAINT_EVERY:
            self._last_complaint = now
            log.error(fields(event="request", path=path, outcome="database_unavailable", error=str(exc)[:200]))
