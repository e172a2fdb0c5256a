"""A local stand-in for the Slack Web API and for ``response_url``\\ s.

``SlackStub`` is a real HTTP server (standard library only) bound to 127.0.0.1. Point the app at
it with ``SLACK_API_URL=stub.api_url`` (slack_sdk's ``WebClient(base_url=...)`` posts to
``base_url + method``, e.g. ``/api/chat.postMessage``) and hand out ``stub.response_url()`` as the
``response_url`` of slash commands and interactions. Every request is recorded as a ``Call`` and
answered the way Slack answers it, including Slack's quirks (HTTP 200 with ``{"ok": false}`` for
API errors, 429 with ``Retry-After`` when rate limited).

It is shared by the test suite and the browser playground, so it has no test-framework imports
and all of its state is guarded by one lock: requests arrive on server threads while tests and
the playground read from theirs.

Example::

    with SlackStub() as stub:
        client = WebClient(token=stub.bot_token, base_url=stub.api_url)
        client.chat_postMessage(channel="C0INCIDENT", text="hi")
        call = stub.wait_for_api("chat.postMessage")
        assert call.body["text"] == "hi"

        stub.fail_next("chat.postMessage", status=429, retry_after=1)
        stub.fail_next("chat.postMessage", error="channel_not_found", times=2)

Unknown paths answer 404; ``response_url`` paths that the stub never issued answer 404 with
``{"ok": false, "error": "unknown_response_url"}`` (a stub-specific error, so that an app posting
to a wrong URL is noticed).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

log = logging.getLogger("apikeys.devslack")

__all__ = [
    "ADMIN_USER", "APP_ID", "BOT_ID", "Call", "DEMO_CHANNELS", "DEMO_USERS", "MEMBER_USER",
    "OTHER_TEAM", "OTHER_WORKSPACE_USER", "OWN_TEAM", "RESPONSE", "SlackStub",
]

OWN_TEAM = "T0OWN"
"""The workspace the app is installed in."""
OTHER_TEAM = "T0OTHER"
"""Another workspace (e.g. a Slack Connect partner)."""
ADMIN_USER = "UADMIN001"
"""Demo user "ada" of the own workspace; the app's bootstrap admin in tests."""
MEMBER_USER = "UMEMBER01"
"""Demo user "max" of the own workspace, without admin rights in the app."""
OTHER_WORKSPACE_USER = "UOTHER001"
"""Demo user "eve" of another workspace (``OTHER_TEAM``)."""
BOT_ID = "B0BOT0001"
APP_ID = "A0APIKEYS"
RESPONSE = "response"
"""The pseudo method name of ``response_url`` calls (for ``fail_next`` and ``Call.method_name``)."""

DEMO_USERS: dict[str, dict[str, Any]] = {
    ADMIN_USER: {"team_id": OWN_TEAM, "name": "ada", "real_name": "Ada Admin"},
    MEMBER_USER: {"team_id": OWN_TEAM, "name": "max", "real_name": "Max Member"},
    OTHER_WORKSPACE_USER: {"team_id": OTHER_TEAM, "name": "eve", "real_name": "Eve Elsewhere"},
}
DEMO_CHANNELS: dict[str, str] = {"C0INCIDENT": "incident", "C0GENERAL": "general"}
DEMO_TEAMS: dict[str, str] = {OWN_TEAM: "own", OTHER_TEAM: "other"}

MAX_BLOCKS = 50
MAX_TEXT = 40_000
JSON_FIELDS = frozenset({"blocks", "attachments", "metadata", "view", "unfurls", "user_auth_blocks"})
"""Form-encoded fields that slack_sdk sends as JSON strings; the stub decodes them when they parse."""
_NOT_RECORDED_IN_MESSAGE = frozenset({"channel", "token", "as_user", "link_names", "parse"})


@dataclass(frozen=True)
class Call:
    """One request the stub received, and what it answered.

    ``kind`` is ``"api"`` (Web API method) or ``"response"`` (a POST to a ``response_url``).
    ``method_name`` is the Web API method (``"chat.postMessage"``) or ``"response"``.
    ``body`` holds the parsed request: query parameters merged with the JSON or form body, with
    JSON-string fields such as ``blocks`` decoded. ``headers`` has lower-case names.
    ``status``/``response`` are what the stub answered; ``failed`` is True when an injected
    failure (``fail_next``) answered instead of the normal handler; ``delay`` is the injected
    delay in seconds before answering.
    """

    kind: str
    path: str
    method_name: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    url: str = ""
    http_method: str = "POST"
    status: int = 200
    response: Any = None
    failed: bool = False
    delay: float = 0.0

    @property
    def token(self) -> str | None:
        """The token sent in ``Authorization: Bearer ...`` (or in a ``token`` parameter)."""
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        token = self.body.get("token")
        return token if isinstance(token, str) else None

    @property
    def ok(self) -> bool:
        """True when the stub answered HTTP 200 and (for JSON answers) ``"ok": true``."""
        if self.status != 200:
            return False
        return not isinstance(self.response, dict) or bool(self.response.get("ok"))

    def summary(self) -> str:
        """A one-line description for assertion messages."""
        body = json.dumps(self.body, ensure_ascii=False, default=str)
        if len(body) > 160:
            body = body[:157] + "..."
        outcome = f"{self.status}"
        if isinstance(self.response, dict) and "error" in self.response:
            outcome += f" error={self.response['error']}"
        if self.failed:
            outcome += " (injected failure)"
        if self.delay:
            outcome += f" (delayed {self.delay:g}s)"
        target = self.method_name if self.kind == "api" else self.path
        return f"{self.kind} {self.http_method} {target} -> {outcome} body={body}"


@dataclass
class _Failure:
    status: int | None
    error: str | None
    retry_after: int | None
    delay: float

    @property
    def replaces_answer(self) -> bool:
        return self.status is not None or self.error is not None

    def reply(self) -> _Reply:
        if self.status == 429:
            headers = {"Retry-After": str(self.retry_after if self.retry_after is not None else 1)}
            return _Reply(429, {"ok": False, "error": self.error or "ratelimited"}, headers)
        if self.status is not None and self.status != 200:
            if self.error is None:
                return _Reply(self.status, _STATUS_TEXT.get(self.status, "Error"))
            return _Reply(self.status, {"ok": False, "error": self.error})
        return _Reply(200, {"ok": False, "error": self.error or "fatal_error"})


_STATUS_TEXT = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
                504: "Gateway Timeout", 404: "Not Found", 400: "Bad Request"}


@dataclass
class _Reply:
    status: int
    body: Any  # dict -> JSON, str -> text/plain
    headers: dict[str, str] = field(default_factory=dict)


def _ok(**fields: Any) -> _Reply:
    return _Reply(200, {"ok": True, **fields})


def _error(error: str, status: int = 200) -> _Reply:
    return _Reply(status, {"ok": False, "error": error})


def _decode_json_fields(values: dict[str, Any]) -> dict[str, Any]:
    for key in JSON_FIELDS & values.keys():
        value = values[key]
        if isinstance(value, str):
            try:
                values[key] = json.loads(value)
            except ValueError:
                pass
    return values


def _parse_form(text: str) -> dict[str, Any]:
    parsed = parse_qs(text, keep_blank_values=True)
    return _decode_json_fields({k: v[0] if len(v) == 1 else v for k, v in parsed.items()})


def _parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    """Parse a request body the way Slack does: JSON or form-encoded. Raises ValueError."""
    if not raw:
        return {}
    mime = content_type.split(";", 1)[0].strip().lower()
    text = raw.decode("utf-8")
    if mime == "application/json" or (not mime and text.lstrip().startswith("{")):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("JSON body is not an object")
        return value
    return _parse_form(text)


class _Handler(BaseHTTPRequestHandler):
    server_version = "SlackStub/1.0"
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        self.server.stub._handle(self)

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from base
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    stub: SlackStub

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout test) closes its socket while we still answer.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class SlackStub:
    """A local HTTP stand-in for the Slack Web API and ``response_url``\\ s.

    Configure it through its public attributes (read and changed under ``stub.lock`` when other
    threads are running, or before ``start``):

    * ``users``: user id -> dict with ``team_id``, ``name``, optional ``real_name``/``is_admin``/
      ``tz`` (answers ``users.info``); pre-filled with ``DEMO_USERS``.
    * ``channels``: channel id -> name (answers ``conversations.info``; other ids are named after
      their lower-cased id).
    * ``channels_bot_is_not_in``: channel ids answering ``not_in_channel`` to ``chat.postMessage``
      and ``is_member: false`` in ``conversations.info``.
    * ``unknown_channels``: channel ids answering ``channel_not_found``.
    * ``teams``: team id -> domain.
    """

    def __init__(self, team_id: str = OWN_TEAM, bot_user_id: str = "UBOT00001",
                 bot_token: str = "xoxb-test", *, port: int = 0, host: str = "127.0.0.1"):
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_token = bot_token
        self.bot_id = BOT_ID
        self.app_id = APP_ID
        self.host = host
        self.port = port
        self.users: dict[str, dict[str, Any]] = copy.deepcopy(DEMO_USERS)
        self.channels: dict[str, str] = dict(DEMO_CHANNELS)
        self.teams: dict[str, str] = dict(DEMO_TEAMS)
        self.channels_bot_is_not_in: set[str] = set()
        self.unknown_channels: set[str] = set()
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        """Current state of channel messages: (channel, ts) -> message (chat.postMessage/update/delete)."""

        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)
        self._calls: list[Call] = []
        self._responses: dict[str, list[dict[str, Any]]] = {}
        self._failures: dict[str, deque[_Failure]] = {}
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self._ts_counter = itertools.count(1)
        self._url_counter = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self, port: int | None = None) -> SlackStub:
        """Bind ``host`` on ``port`` (0: a free port), serve in a daemon thread, return self."""
        if self._server is not None:
            raise RuntimeError("SlackStub already started")
        if port is not None:
            self.port = port
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.stub = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"SlackStub:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket. Injected delays still sleeping are cut short."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SlackStub:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (only after ``start``)."""
        if self._server is None:
            raise RuntimeError("SlackStub is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The Web API base URL to give the app (``SLACK_API_URL``): ``http://127.0.0.1:PORT/api/``."""
        return self.base_url + "/api/"

    def response_url(self, tag: str = "response") -> str:
        """A fresh ``response_url`` (``http://127.0.0.1:PORT/response/<tag>-<n>``) the stub accepts."""
        url = f"{self.base_url}/response/{quote(tag, safe='')}-{next(self._url_counter)}"
        with self.lock:
            self._responses[url] = []
        return url

    # ------------------------------------------------------------------ configuration

    def fail_next(self, method_name: str, *, status: int | None = None, error: str | None = None,
                  retry_after: int | None = None, delay: float | None = None, times: int = 1) -> None:
        """Make the next ``times`` requests to ``method_name`` fail; queued failures apply in order.

        ``method_name`` is a Web API method or ``"response"`` (any ``response_url``).

        * ``status=500`` (the default when nothing else is given): plain-text HTTP error.
        * ``status=429, retry_after=1``: ``Retry-After: 1`` and ``{"ok": false, "error": "ratelimited"}``.
        * ``error="channel_not_found"``: HTTP 200 with ``{"ok": false, "error": ...}`` (with
          ``status`` too: that status with the JSON error).
        * ``delay=2.0``: sleep before answering (to make clients time out). Alone, the request is
          then handled normally (a message is still posted, as on Slack); combined with ``status``
          or ``error``, the failure is answered after the delay.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        if status is None and error is None and not delay:
            status = 500
        if retry_after is not None and status is None:
            status = 429
        failure = _Failure(status, error, retry_after, float(delay or 0))
        with self.lock:
            self._failures.setdefault(method_name, deque()).extend(failure for _ in range(times))

    def add_method(self, method_name: str, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Answer ``method_name`` with ``handler(body)`` (a dict sent as JSON with HTTP 200).

        Token checking and failure injection still apply. Overrides built-in methods too.
        """
        with self.lock:
            self._methods[method_name] = handler

    def clear(self) -> None:
        """Forget recorded calls, response payloads, channel messages and pending failures.

        Issued response URLs stay valid.
        """
        with self.lock:
            self._calls.clear()
            for payloads in self._responses.values():
                payloads.clear()
            self._failures.clear()
            self.messages.clear()

    # ------------------------------------------------------------------ inspection

    @property
    def calls(self) -> list[Call]:
        """A snapshot of all recorded calls, oldest first."""
        with self.lock:
            return list(self._calls)

    def mark(self) -> int:
        """The number of calls recorded so far; pass it as ``since=`` to only see later calls."""
        with self.lock:
            return len(self._calls)

    def api_calls(self, method_name: str | None = None) -> list[Call]:
        """Recorded Web API calls (all, or to ``method_name``), including injected failures."""
        with self.lock:
            return [c for c in self._calls
                    if c.kind == "api" and (method_name is None or c.method_name == method_name)]

    @property
    def responses(self) -> dict[str, list[dict[str, Any]]]:
        """A snapshot: response URL -> payloads it received (successful POSTs only), oldest first."""
        with self.lock:
            return {url: list(payloads) for url, payloads in self._responses.items()}

    def responses_to(self, url: str) -> list[dict[str, Any]]:
        """Payloads successfully POSTed to ``url`` so far, oldest first."""
        with self.lock:
            return list(self._responses.get(url, ()))

    def last_response(self, url: str) -> dict[str, Any] | None:
        """The latest payload POSTed to ``url``, or None."""
        payloads = self.responses_to(url)
        return payloads[-1] if payloads else None

    def current_message(self, url: str) -> dict[str, Any] | None:
        """What the user sees now in the message thread of ``url`` (e.g. an ephemeral message).

        The thread's content is its latest payload; ``delete_original`` removes it (None). This
        treats every POST as replacing the thread's message: good enough to ask "what does the
        user see after this click", not a model of Slack's new-message-vs-replace rules.
        """
        current: dict[str, Any] | None = None
        for payload in self.responses_to(url):
            current = None if payload.get("delete_original") else payload
        return current

    # ------------------------------------------------------------------ waiting

    def wait_for(self, predicate: Callable[[Call], bool], timeout: float = 5.0, *,
                 since: int = 0, description: str | None = None) -> Call:
        """Return the first recorded call (from index ``since``) matching ``predicate``.

        Waits up to ``timeout`` seconds for it to arrive, woken by each new call. A predicate that
        raises (e.g. ``KeyError`` on a call without that field) counts as "no match". Raises
        AssertionError listing the most recent calls when nothing matches in time.
        """
        found: list[Call] = []

        def matched() -> bool:
            for call in self._calls[since:]:
                try:
                    if predicate(call):
                        found.append(call)
                        return True
                except Exception:  # noqa: BLE001 - a non-matching shape is simply no match
                    continue
            return False

        with self._changed:
            # Condition.wait_for uses threading's clock, which freezegun leaves alone.
            if self._changed.wait_for(matched, timeout=timeout):
                return found[0]
            recent = self._calls[-10:]
            total = len(self._calls)
        what = description or getattr(predicate, "__name__", "predicate")
        lines = [f"no matching Slack call within {timeout:g}s (waiting for {what});"
                 f" {total} call(s) recorded" + (", most recent:" if recent else ".")]
        lines += [f"  {call.summary()}" for call in recent]
        raise AssertionError("\n".join(lines))

    def wait_for_api(self, method_name: str, predicate: Callable[[Call], bool] | None = None,
                     timeout: float = 5.0, *, since: int = 0) -> Call:
        """Wait for a successful (``ok``) call of Web API ``method_name`` matching ``predicate``."""
        return self.wait_for(
            lambda c: c.kind == "api" and c.method_name == method_name and c.ok
            and (predicate is None or predicate(c)),
            timeout, since=since, description=f"a successful {method_name} call")

    def wait_for_response(self, url: str, timeout: float = 5.0, *, since: int = 0) -> dict[str, Any]:
        """Wait for a successful POST to response URL ``url``; return its payload."""
        call = self.wait_for(lambda c: c.kind == "response" and c.url == url and c.ok, timeout,
                             since=since, description=f"a POST to {url}")
        return call.body

    # ------------------------------------------------------------------ request handling

    def _handle(self, req: _Handler) -> None:
        parts = urlsplit(req.path)
        headers = {k.lower(): v for k, v in req.headers.items()}
        length = int(headers.get("content-length") or 0)
        raw = req.rfile.read(length) if length > 0 else b""
        query = _parse_form(parts.query)
        try:
            body = {**query, **_parse_body(raw, headers.get("content-type", ""))}
            bad_body = None
        except (ValueError, UnicodeDecodeError) as exc:
            body, bad_body = dict(query), str(exc)
        base = f"http://{self.host}:{self.port}"
        if parts.path.startswith("/api/"):
            kind, name = "api", parts.path[len("/api/"):]
        elif parts.path.startswith("/response/"):
            kind, name = RESPONSE, RESPONSE
        else:
            self._send(req, _Reply(404, "Not Found"))
            return

        with self.lock:
            failures = self._failures.get(name)
            failure = failures.popleft() if failures else None
            if failure is not None and failure.replaces_answer:
                reply = failure.reply()
            elif kind == "api":
                reply = self._api(name, body, headers, bad_body)
            else:
                reply = self._response(base + parts.path, body, bad_body)
            call = Call(kind=kind, path=parts.path,
                        method_name=name, body=body, headers=headers, at=time.time(),
                        url=base + parts.path, http_method=req.command, status=reply.status,
                        response=copy.deepcopy(reply.body),
                        failed=failure is not None and failure.replaces_answer,
                        delay=failure.delay if failure else 0.0)
            self._calls.append(call)
            self._changed.notify_all()
        if failure is not None and failure.delay:
            self._stopping.wait(failure.delay)
        self._send(req, reply)

    @staticmethod
    def _send(req: _Handler, reply: _Reply) -> None:
        if isinstance(reply.body, (dict, list)):
            payload = json.dumps(reply.body).encode("utf-8")
            content_type = "application/json; charset=utf-8"
        else:
            payload = str(reply.body).encode("utf-8")
            content_type = "text/plain; charset=utf-8"
        req.send_response(reply.status)
        req.send_header("Content-Type", content_type)
        req.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            req.send_header(name, value)
        req.end_headers()
        req.wfile.write(payload)

    def _response(self, url: str, body: dict[str, Any], bad_body: str | None) -> _Reply:
        if url not in self._responses:
            return _error("unknown_response_url", 404)
        if bad_body is not None:
            return _error("invalid_payload", 400)
        self._responses[url].append(body)
        return _ok()

    def _api(self, method: str, body: dict[str, Any], headers: dict[str, str],
             bad_body: str | None) -> _Reply:
        if bad_body is not None:
            return _error("invalid_json")
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else body.get("token")
        custom = self._methods.get(method)
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if custom is None and handler is None:
            return _error("unknown_method")
        if not token:
            return _error("not_authed")
        if token != self.bot_token:
            return _error("invalid_auth")
        if custom is not None:
            return _Reply(200, custom(body))
        return handler(body)

    # --- Web API methods (called under the lock)

    def _next_ts(self) -> str:
        micros = next(self._ts_counter) * 100
        return f"{1_700_000_000 + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _channel_error(self, channel: Any) -> str | None:
        if not channel or not isinstance(channel, str) or channel in self.unknown_channels:
            return "channel_not_found"
        if channel in self.channels_bot_is_not_in:
            return "not_in_channel"
        return None

    @staticmethod
    def _content_error(body: dict[str, Any]) -> str | None:
        blocks = body.get("blocks")
        if not body.get("text") and not blocks and not body.get("attachments"):
            return "no_text"
        if blocks is not None and (not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS):
            return "invalid_blocks"
        if isinstance(body.get("text"), str) and len(body["text"]) > MAX_TEXT:
            return "msg_too_long"
        return None

    def _message(self, body: dict[str, Any], ts: str) -> dict[str, Any]:
        message = {k: v for k, v in body.items() if k not in _NOT_RECORDED_IN_MESSAGE}
        message.update({"type": "message", "ts": ts, "user": self.bot_user_id, "bot_id": self.bot_id,
                        "app_id": self.app_id, "team": self.team_id})
        return message

    def _m_auth_test(self, body: dict[str, Any]) -> _Reply:
        return _ok(url="https://own.slack.com/", team="Own Corp", user="apikeys", team_id=self.team_id,
                   user_id=self.bot_user_id, bot_id=self.bot_id, is_enterprise_install=False)

    def _m_chat_postMessage(self, body: dict[str, Any]) -> _Reply:  # noqa: N802 - Slack's name
        channel = body.get("channel")
        error = self._channel_error(channel) or self._content_error(body)
        if error:
            return _error(error)
        if channel[0] in "UW":  # posting to a user id opens the DM with them
            channel = "D" + channel[1:]
        ts = self._next_ts()
        message = self._message(body, ts)
        self.messages[(channel, ts)] = message
        return _ok(channel=channel, ts=ts, message=copy.deepcopy(message))

    def _m_chat_postEphemeral(self, body: dict[str, Any]) -> _Reply:  # noqa: N802
        error = self._channel_error(body.get("channel"))
        if not error and not body.get("user"):
            error = "user_not_found"
        error = error or self._content_error(body)
        if error:
            return _error(error)
        return _ok(message_ts=self._next_ts())

    def _m_chat_update(self, body: dict[str, Any]) -> _Reply:
        channel, ts = body.get("channel"), body.get("ts")
        error = self._channel_error(channel)
        if not error and not ts:
            error = "message_not_found"
        error = error or self._content_error(body)
        if error:
            return _error(error)
        message = self._message({k: v for k, v in body.items() if k != "ts"}, ts)
        self.messages[(channel, ts)] = message
        return _ok(channel=channel, ts=ts, text=body.get("text", ""), message=copy.deepcopy(message))

    def _m_chat_delete(self, body: dict[str, Any]) -> _Reply:
        channel, ts = body.get("channel"), body.get("ts")
        error = self._channel_error(channel) or (None if ts else "message_not_found")
        if error:
            return _error(error)
        self.messages.pop((channel, ts), None)
        return _ok(channel=channel, ts=ts)

    def _m_users_info(self, body: dict[str, Any]) -> _Reply:
        user_id = body.get("user")
        known = self.users.get(user_id) if isinstance(user_id, str) else None
        if known is None:
            return _error("user_not_found")
        name = known.get("name", user_id.lower())
        real_name = known.get("real_name", name)
        user = {"id": user_id, "team_id": known.get("team_id", self.team_id), "name": name,
                "real_name": real_name, "deleted": False, "is_bot": False, "is_admin": False,
                "is_owner": False, "tz": "UTC",
                "profile": {"real_name": real_name, "display_name": name}}
        user.update({k: v for k, v in known.items() if k not in ("name", "real_name")})
        return _ok(user=user)

    def _m_conversations_info(self, body: dict[str, Any]) -> _Reply:
        channel = body.get("channel")
        if not channel or not isinstance(channel, str) or channel in self.unknown_channels:
            return _error("channel_not_found")
        return _ok(channel={"id": channel, "name": self.channels.get(channel, channel.lower()),
                            "is_channel": channel[0] == "C", "is_im": channel[0] == "D",
                            "is_private": channel[0] == "G", "is_archived": False,
                            "is_member": channel not in self.channels_bot_is_not_in})
