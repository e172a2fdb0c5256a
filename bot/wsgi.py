"""WSGI helpers below both faces of the server: the key API (``bot.api``) and the Slack gate
(``bot.slack.gate``) answer, read bodies and bound slow ones the same way, and neither imports the other.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .logs import fields

log = logging.getLogger("apikeys.http")

MAX_BODY = 64 * 1024
JSON_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
ROUTE_KEY = "apikeys.route"  # environ: the label of the route that answered (the metrics' series)

STATUS_TEXT = {
    200: "200 OK", 201: "201 Created", 204: "204 No Content", 400: "400 Bad Request", 401: "401 Unauthorized",
    404: "404 Not Found", 405: "405 Method Not Allowed", 408: "408 Request Timeout", 411: "411 Length Required",
    413: "413 Payload Too Large", 415: "415 Unsupported Media Type", 500: "500 Internal Server Error",
    403: "403 Forbidden", 410: "410 Gone", 409: "409 Conflict", 422: "422 Unprocessable Content",
    429: "429 Too Many Requests", 503: "503 Service Unavailable",
}


class HttpError(Exception):
    """A request refused with ``status`` and a message safe to answer with (and, for a 405, ``allow``)."""

    def __init__(self, status: int, message: str, *, allow: tuple[str, ...] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.allow = allow

    @property
    def headers(self) -> list[tuple[str, str]] | None:
        return [("Allow", ", ".join(self.allow))] if self.allow else None


_to_json = json.JSONEncoder(ensure_ascii=False).encode  # built once: json.dumps with options builds one per call


def respond(start_response, status: int, body: Any = None, headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    payload = b"" if body is None else _to_json(body).encode("utf-8")
    out_headers = list(JSON_HEADERS if body is not None else [("Cache-Control", "no-store")])
    out_headers += headers or []
    out_headers.append(("Content-Length", str(len(payload))))
    start_response(STATUS_TEXT[status], out_headers)
    return [payload]


def respond_raw(start_response, payload: bytes, content_type: str) -> list[bytes]:
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
