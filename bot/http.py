"""The WSGI application: the key API, health, and the seam for Slack's requests.

Routes (see the contract):
* ``POST /v1/keys/verify``  body ``{"key": "..."}`` -> 200 with the verification
* ``GET  /v1/auth``         forward-auth for reverse proxies -> 204 or 401
* ``GET  /healthz``         200 when the database answers, else 503
* ``POST /slack/events``    handed to the Slack app (``slack_app``), when Slack is on
* ``POST /v1/secret-scanning/github``  GitHub's secret scanning alerts (``bot.github``) -> 200 with
  GitHub's feedback array; 401 unsigned, 400 not an array of matches, 413 over 1 MiB
* ``GET  /metrics``         Prometheus metrics (``bot.metrics``), unless served on METRICS_PORT
* ``GET  /openapi.json``    the OpenAPI 3.1 description of the key API (``bot.openapi``)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from storage import DatabaseUnavailable, InvalidInput, Store, VerifyCode, Via

from . import github, metrics, openapi
from .logs import RequestLog, fields

log = logging.getLogger("apikeys.http")
request_log = RequestLog("apikeys.http")  # the line per verification, on the cheap path


def _verified(event: str, result) -> None:
    """``event=auth code=VALID key_id=key_…``: codes and key ids are ours, never quoted or masked."""
    key_id = result.key_id
    metrics.verified(event, result.code)
    request_log.info(f"event={event} code={result.code.value} key_id={key_id}" if key_id
                     else f"event={event} code={result.code.value}")

MAX_BODY = 64 * 1024
JSON_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

STATUS_TEXT = {
    200: "200 OK", 204: "204 No Content", 400: "400 Bad Request", 401: "401 Unauthorized",
    404: "404 Not Found", 405: "405 Method Not Allowed", 408: "408 Request Timeout", 411: "411 Length Required",
    413: "413 Payload Too Large", 415: "415 Unsupported Media Type", 500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_to_json = json.JSONEncoder(ensure_ascii=False).encode  # built once: json.dumps with options builds one per call


def _respond(start_response, status: int, body: Any = None, headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    payload = b"" if body is None else _to_json(body).encode("utf-8")
    out_headers = list(JSON_HEADERS if body is not None else [("Cache-Control", "no-store")])
    out_headers += headers or []
    out_headers.append(("Content-Length", str(len(payload))))
    start_response(STATUS_TEXT[status], out_headers)
    return [payload]


def _respond_raw(start_response, payload: bytes, content_type: str) -> list[bytes]:
    start_response(STATUS_TEXT[200], [("Content-Type", content_type), ("Cache-Control", "no-store"),
                                      ("Content-Length", str(len(payload)))])
    return [payload]


UNREADABLE = "the request body could not be read (malformed chunked encoding, or it ended early)"


def read_body(environ: dict, limit: int = MAX_BODY) -> bytes:
    """The request body, at most ``limit`` bytes (else 413).

    A body the server cannot deliver is the client's error, not ours: the server de-chunks
    ``Transfer-Encoding: chunked``, and a malformed chunk or a connection that ends early shows
    here as an exception while reading (``OSError``, ``ValueError``, a server's own) or as a body
    shorter than its ``Content-Length``. All of them are a 400 with a JSON error, whatever WSGI
    server is in front (granian in production; the tests also call the app directly).
    """
    length_text = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if length_text:
        if not (length_text.isascii() and length_text.isdigit()):
            raise HttpError(400, "invalid Content-Length")
        length = int(length_text)
        if length > limit:
            raise HttpError(413, f"request body larger than {limit} bytes")
        data = _read(stream, length)
        if len(data) < length:
            raise HttpError(400, UNREADABLE)
        return data
    data = _read(stream, limit + 1)  # chunked bodies: the server de-chunks; bound what we read
    if len(data) > limit:
        raise HttpError(413, f"request body larger than {limit} bytes")
    return data


def _read(stream, size: int) -> bytes:
    try:
        return stream.read(size)
    except BodyTimeout:
        raise
    except Exception as exc:  # whatever the server raises for a body it cannot deliver
        log.info(fields(event="request", outcome="unreadable_body", error=type(exc).__name__))
        raise HttpError(400, UNREADABLE) from None


UNAVAILABLE = "UNAVAILABLE"  # the code a key check answers (503) when the key store cannot be read
_COMPLAINT_EVERY = 60.0  # seconds between two log lines about the database being unavailable
_last_complaint = [-_COMPLAINT_EVERY]


def _complain_unavailable(path: str, exc: Exception) -> None:
    """One line a minute while the key store cannot be read, however many requests fail (never a
    traceback per request)."""
    now = time.monotonic()
    if now - _last_complaint[0] >= _COMPLAINT_EVERY:
        _last_complaint[0] = now
        log.error(fields(event="request", path=path, outcome="database_unavailable", error=str(exc)[:200]))


def _presented_key(environ: dict) -> str | None:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if auth:
        scheme, _, credentials = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    api_key = environ.get("HTTP_X_API_KEY", "").strip()
    return api_key or None


class BodyTimeout(Exception):
    """A request body that took longer than the body timeout to arrive."""


class _TimedInput:
    """``wsgi.input`` for one request: releases the body slot once the body has been read, and refuses
    (``BodyTimeout``) a body that arrived after the deadline. granian has no body timeout of its own
    (a read blocks the thread until the body is there), so the slots bound how many threads slow
    bodies can hold, and the deadline turns a trickled body into a 408."""

    def __init__(self, stream, gate: "BodyGate", length: int | None):
        self._stream, self._gate, self._left = stream, gate, length
        self._deadline = time.monotonic() + gate.timeout

    def _account(self, data: bytes, size: int) -> bytes:
        if self._left is not None:
            self._left -= len(data)
        if (self._left is not None and self._left <= 0) or not data or (size is not None and 0 < len(data) < size):
            self._gate.done(self)
        if time.monotonic() > self._deadline:
            self._gate.done(self)
            raise BodyTimeout()
        return data

    def read(self, size: int = -1) -> bytes:
        return self._account(self._stream.read(size) if size is not None and size >= 0 else self._stream.read(), size)

    def readline(self, *args) -> bytes:
        return self._account(self._stream.readline(*args), None)

    def __iter__(self):
        return iter(self.readline, b"")


class BodyGate:
    """At most ``slots`` request bodies are being read at once in a worker (its threads less one, so
    that health and key checks by GET always find a thread); a request whose body cannot get a slot
    within ``wait`` seconds is answered 503 without reading it (the connection is closed)."""

    def __init__(self, slots: int, timeout: float, wait: float = 0.5):
        self.timeout = timeout
        self.wait = wait
        self._slots = threading.BoundedSemaphore(max(1, slots))
        self._held: set[int] = set()
        self._lock = threading.Lock()

    def admit(self, environ: dict) -> bool:
        """True, with ``wsgi.input`` wrapped, when the body may be read (or there is none)."""
        length_text = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower()
        length = int(length_text) if length_text.isascii() and length_text.isdigit() else None
        if not chunked and not length:
            return True
        if not self._slots.acquire(timeout=self.wait):
            return False
        timed = _TimedInput(environ["wsgi.input"], self, None if chunked else length)
        with self._lock:
            self._held.add(id(timed))
        environ["wsgi.input"] = timed
        environ["apikeys.body"] = timed
        return True

    def done(self, timed: _TimedInput) -> None:
        with self._lock:
            if id(timed) not in self._held:
                return
            self._held.discard(id(timed))
        self._slots.release()


CLOSE = [("Connection", "close")]
RETRY_GITHUB = 10  # seconds: Retry-After of an alert that waits for GitHub's keys (fetched meanwhile)


class KeyApiApp:
    """The WSGI callable served by the production server."""

    def __init__(self, store: Store, slack_app: WSGIApp | None = None,
                 slack_off: str = "Slack is off on this server (SLACK_BOT_TOKEN is not set)",
                 github_alerts: github.GitHubAlerts | None = None, metrics_here: bool = True,
                 body_gate: BodyGate | None = None):
        self.store = store
        self.body_gate = body_gate or BodyGate(slots=1, timeout=10.0)
        self.slack_app = slack_app
        self.slack_off = slack_off
        self.github_alerts = github_alerts or github.GitHubAlerts(github.GitHubKeys())
        # METRICS_PORT set: /metrics is served on that listener only, and is not a route here.
        self.metrics = metrics.MetricsEndpoint(store) if metrics_here else None

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if not self.body_gate.admit(environ):
            log.warning(fields(event="request", path=path, outcome="body_slots_busy"))
            return _respond(start_response, 503, {"error": "too many request bodies are still arriving; try again"},
                            [("Retry-After", "1"), *CLOSE])
        try:
            return self._route(path, method, environ, start_response)
        except BodyTimeout:
            log.info(fields(event="request", path=path, outcome="body_timeout"))
            return _respond(start_response, 408, {"error": f"the request body took longer than "
                                                           f"{self.body_gate.timeout:g} s to arrive"}, CLOSE)
        finally:
            timed = environ.get("apikeys.body")
            if timed is not None:
                self.body_gate.done(timed)  # a body left unread, or an error while reading it

    def _route(self, path: str, method: str, environ: dict, start_response) -> Iterable[bytes]:
        try:
            if path == "/v1/keys/verify":
                self._allow(method, "POST")
                return self.verify(environ, start_response)
            if path == "/v1/auth" or path.startswith("/v1/auth/"):
                # Proxies forward the original method (and Envoy appends the original path).
                return self.auth(environ, start_response)
            if path == "/healthz":
                self._allow(method, "GET", "HEAD")
                return self.health(environ, start_response)
            if path == "/slack/events":
                if self.slack_app is None:
                    raise HttpError(404, self.slack_off)
                self._allow(method, "POST")
                return self.slack_app(environ, start_response)
            if path == github.ALERT_PATH:
                self._allow(method, "POST")
                return self.github_alert(environ, start_response)
            if path == "/metrics" and self.metrics is not None:
                self._allow(method, "GET", "HEAD")
                return _respond_raw(start_response, self.metrics.render(), metrics.CONTENT_TYPE)
            if path == "/openapi.json":
                self._allow(method, "GET", "HEAD")
                return _respond_raw(start_response, openapi.DOCUMENT, "application/json")
            raise HttpError(404, f"no route {path}")
        except HttpError as exc:
            extra = [("Allow", exc.allow)] if hasattr(exc, "allow") else None
            return _respond(start_response, exc.status, {"error": exc.message}, extra)
        except DatabaseUnavailable as exc:
            _complain_unavailable(path, exc)
            return _respond(start_response, 503, {"code": UNAVAILABLE, "error": "the key store is unavailable; try again"},
                            [("Retry-After", "5")])
        except BodyTimeout:
            raise
        except Exception:
            log.exception(fields(event="request", path=path, outcome="error"))
            return _respond(start_response, 500, {"error": "internal error"})

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            error = HttpError(405, f"use {' or '.join(allowed)}")
            error.allow = ", ".join(allowed)
            raise error

    # -- routes -----------------------------------------------------------------------------
    def verify(self, environ: dict, start_response) -> list[bytes]:
        raw = read_body(environ)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise HttpError(400, 'the body must be JSON like {"key": "apk_..."}') from None
        if not isinstance(body, dict) or not isinstance(body.get("key"), str):
            raise HttpError(400, 'the body must be a JSON object with a string "key"')
        result = self.store.keys.verify(body["key"], via=Via.VERIFY)
        _verified("verify", result)
        return _respond(start_response, 200, result.to_dict())

    def auth(self, environ: dict, start_response) -> list[bytes]:
        presented = _presented_key(environ)
        unauthorized = [("WWW-Authenticate", "Bearer")]
        if presented is None:
            log.info(fields(event="auth", code="MALFORMED", outcome="no_key"))
            metrics.verified("auth", VerifyCode.MALFORMED)
            return _respond(
                start_response, 401,
                {"code": VerifyCode.MALFORMED.value, "error": "no API key: send Authorization: Bearer <key> or X-API-Key"},
                unauthorized,
            )
        result = self.store.keys.verify(presented, via=Via.AUTH)
        _verified("auth", result)
        if result.valid:
            return _respond(start_response, 204, None, [("X-Key-Id", result.key_id), ("X-Key-Owner", result.owner)])
        body = {"code": result.code.value}
        if result.key_id:
            body["key_id"] = result.key_id
        return _respond(start_response, 401, body, unauthorized)

    def github_alert(self, environ: dict, start_response) -> list[bytes]:
        """GitHub's secret scanning partner alert: verified, then every match handled in one transaction."""
        raw = read_body(environ, github.MAX_ALERT_BODY)
        try:
            answer = self.github_alerts.handle(self.store, raw, environ.get("HTTP_GITHUB_PUBLIC_KEY_IDENTIFIER"),
                                               environ.get("HTTP_GITHUB_PUBLIC_KEY_SIGNATURE"))
        except github.AlertRefused as exc:
            log.info(fields(event="github_alert", outcome="refused", status=exc.status, why=exc.message))
            if exc.status == 503:  # GitHub's keys are still being fetched (or could not be): GitHub retries
                return _respond(start_response, 503, {"error": exc.message}, [("Retry-After", str(RETRY_GITHUB))])
            raise HttpError(exc.status, exc.message) from None
        except InvalidInput as exc:
            raise HttpError(400, str(exc)) from None
        return _respond(start_response, 200, answer)

    def health(self, environ: dict, start_response) -> list[bytes]:
        """200 when keys can be checked and revoked; 503 saying which part fails (a load balancer
        takes a replica out whose revocations would fail, not only one that cannot check keys)."""
        if not self.store.db.ping():
            return _respond(start_response, 503, {"status": "unavailable", "database": "unreachable"})
        problem = self.store.db.writable()
        if problem is not None:
            return _respond(start_response, 503, {"status": "unavailable", "database": problem})
        return _respond(start_response, 200, {"status": "ok", "database": "ok"})
