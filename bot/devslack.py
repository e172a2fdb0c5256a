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

Every message it receives (``chat.postMessage``, ``chat.postEphemeral``, ``chat.update``, a
``response_url`` post) and every slash-command ack ``SlackSender`` receives is checked against
Slack's limits by ``slack_limit_problems``: blocks that break one are refused with
``invalid_blocks``, as Slack does (HTTP 400 on a ``response_url``), and every problem is kept in
``stub.limit_problems`` until ``take_limit_problems`` — the tests assert at teardown that there
were none.
"""

from __future__ import annotations

import copy
import http.client
import itertools
import json
import logging
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from slack_sdk.signature import SignatureVerifier

log = logging.getLogger("apikeys.devslack")

__all__ = [
    "ADMIN_USER", "APP_ID", "BOT_ID", "Call", "DEMO_CHANNELS", "DEMO_USERS", "LIMITS", "MEMBER_USER",
    "OTHER_TEAM", "OTHER_WORKSPACE_USER", "OWN_TEAM", "RESPONSE", "SlackStub",
    "SlackReply", "SlackSender", "button", "find_buttons", "walk_buttons", "free_port", "slack_limit_problems",
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
"""Slack truncates a message's ``text`` beyond this (chat.postMessage answers ``msg_too_long``)."""

# Slack's limits (Block Kit reference: blocks, block elements, composition objects; chat.postMessage).
LIMITS: dict[str, int] = {
    "blocks": MAX_BLOCKS,             # blocks in one message
    "text": 4_000,                    # a message's top-level ``text``: Slack recommends at most 4,000
    "block_id": 255,                  # and unique within the message
    "section.text": 3_000,
    "section.fields": 10,
    "section.field": 2_000,
    "header.text": 150,
    "context.elements": 10,
    "actions.elements": 25,
    "text_object": 3_000,             # any other text object
    "action_id": 255,                 # and unique within its block
    "button.text": 75,
    "button.value": 2_000,
    "button.url": 3_000,
    "select.placeholder": 150,
    "select.options": 100,
    "option.text": 75,
    "option.value": 150,
    "option.description": 75,
}
_BUTTON_STYLES = frozenset({"primary", "danger"})


def _text_of(obj: Any) -> str | None:
    """The string of a text object (``{"type": ..., "text": ...}``), or None when it is not one."""
    if isinstance(obj, Mapping) and isinstance(obj.get("text"), str):
        return obj["text"]
    return None


def _check_text(problems: list[str], where: str, obj: Any, limit: str, *, required: bool = True) -> None:
    if obj is None and not required:
        return
    text = _text_of(obj)
    if text is None:
        problems.append(f"{where}: not a text object")
    elif not text:
        problems.append(f"{where}: empty text (Slack requires at least 1 character)")
    elif len(text) > LIMITS[limit]:
        problems.append(f"{where}: {len(text):,} characters, Slack allows {LIMITS[limit]:,}")


def _check_length(problems: list[str], where: str, value: Any, limit: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        problems.append(f"{where}: not a string")
    elif len(value) > LIMITS[limit]:
        problems.append(f"{where}: {len(value):,} characters, Slack allows {LIMITS[limit]:,}")


def _check_option(problems: list[str], where: str, option: Any) -> None:
    if not isinstance(option, Mapping):
        problems.append(f"{where}: not an option object")
        return
    _check_text(problems, f"{where}.text", option.get("text"), "option.text")
    _check_length(problems, f"{where}.value", option.get("value"), "option.value")
    _check_text(problems, f"{where}.description", option.get("description"), "option.description", required=False)


def _check_id(problems: list[str], where: str, value: Any, limit: str, seen: set[str], scope: str) -> None:
    """An action_id or block_id: within its length limit, and used once in its ``scope``."""
    _check_length(problems, where, value, limit)
    if isinstance(value, str):
        if value in seen:
            problems.append(f"{where}: {value!r} is used twice in one {scope}")
        seen.add(value)


def _check_element(problems: list[str], where: str, element: Any, action_ids: set[str]) -> None:
    if not isinstance(element, Mapping):
        problems.append(f"{where}: not an element object")
        return
    _check_id(problems, f"{where}.action_id", element.get("action_id"), "action_id", action_ids, "block")
    kind = element.get("type")
    if kind == "button":
        _check_text(problems, f"{where}.text", element.get("text"), "button.text")
        _check_length(problems, f"{where}.value", element.get("value"), "button.value")
        _check_length(problems, f"{where}.url", element.get("url"), "button.url")
        if "style" in element and element["style"] not in _BUTTON_STYLES:
            problems.append(f"{where}.style: {element['style']!r} is not primary or danger")
    elif kind in ("static_select", "multi_static_select"):
        _check_text(problems, f"{where}.placeholder", element.get("placeholder"), "select.placeholder",
                    required=False)
        options = element.get("options")
        if not isinstance(options, list) or not options:
            problems.append(f"{where}.options: a static select needs a list of 1 to 100 options")
            return
        if len(options) > LIMITS["select.options"]:
            problems.append(f"{where}.options: {len(options)} options, Slack allows {LIMITS['select.options']}")
        for i, option in enumerate(options):
            _check_option(problems, f"{where}.options[{i}]", option)
        initial = element.get("initial_option")
        if initial is not None and initial not in options:
            problems.append(f"{where}.initial_option: not one of the options")


def _check_block(problems: list[str], where: str, block: Any, block_ids: set[str]) -> None:
    if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
        problems.append(f"{where}: not a block object")
        return
    _check_id(problems, f"{where}.block_id", block.get("block_id"), "block_id", block_ids, "message")
    action_ids: set[str] = set()
    kind = block["type"]
    if kind == "section":
        fields = block.get("fields")
        if "text" in block or fields is None:
            _check_text(problems, f"{where}.text", block.get("text"), "section.text")
        if fields is not None:
            if not isinstance(fields, list) or not fields:
                problems.append(f"{where}.fields: not a list of 1 to 10 text objects")
            else:
                if len(fields) > LIMITS["section.fields"]:
                    problems.append(f"{where}.fields: {len(fields)} fields, Slack allows {LIMITS['section.fields']}")
                for i, item in enumerate(fields):
                    _check_text(problems, f"{where}.fields[{i}]", item, "section.field")
        if block.get("accessory") is not None:
            _check_element(problems, f"{where}.accessory", block["accessory"], action_ids)
    elif kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            problems.append(f"{where}.elements: an actions block needs 1 to 25 elements")
            return
        if len(elements) > LIMITS["actions.elements"]:
            problems.append(f"{where}.elements: {len(elements)} elements, Slack allows {LIMITS['actions.elements']}")
        for i, element in enumerate(elements):
            _check_element(problems, f"{where}.elements[{i}]", element, action_ids)
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            problems.append(f"{where}.elements: a context block needs 1 to 10 elements")
            return
        if len(elements) > LIMITS["context.elements"]:
            problems.append(f"{where}.elements: {len(elements)} elements, Slack allows {LIMITS['context.elements']}")
        for i, element in enumerate(elements):
            if isinstance(element, Mapping) and element.get("type") in ("mrkdwn", "plain_text"):
                _check_text(problems, f"{where}.elements[{i}]", element, "text_object")
    elif kind == "header":
        _check_text(problems, f"{where}.text", block.get("text"), "header.text")


def slack_limit_problems(payload: Any) -> list[str]:
    """Every way ``payload`` breaks one of Slack's limits, one line each; empty when none does.

    ``payload`` is a message (a dict with ``text`` and/or ``blocks``: a chat.postMessage body, a
    ``response_url`` payload, a slash command's ack) or a list of blocks. Checked: at most 50
    blocks; block ids at most 255 characters and unique in the message; section text 1 to 3,000
    characters, at most 10 fields of at most 2,000; at most 10 context and 25 actions elements;
    action ids at most 255 characters and unique in their block; button text 1 to 75 characters,
    value at most 2,000, style primary or danger; static selects with 1 to 100 options whose text
    is at most 75 characters and value at most 150 (``initial_option`` one of them); and the
    message ``text`` at most 4,000 characters (what Slack recommends; it truncates at 40,000).
    The stub answers ``invalid_blocks`` when the blocks break a limit, as Slack does.
    """
    problems: list[str] = []
    if isinstance(payload, Mapping):
        text = payload.get("text")
        if text is not None and not isinstance(text, str):
            problems.append("text: not a string")
        elif isinstance(text, str) and len(text) > LIMITS["text"]:
            problems.append(f"text: {len(text):,} characters, Slack recommends at most {LIMITS['text']:,}"
                            f" (and truncates at {MAX_TEXT:,})")
        if "blocks" not in payload:
            return problems
        blocks = payload["blocks"]
        if isinstance(blocks, str):  # form-encoded: a JSON string the stub could not decode
            problems.append("blocks: not valid JSON")
            return problems
    else:
        blocks = payload
    if not isinstance(blocks, list):
        problems.append("blocks: not a list of blocks")
        return problems
    if len(blocks) > LIMITS["blocks"]:
        problems.append(f"blocks: {len(blocks)} blocks, Slack allows {LIMITS['blocks']}")
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        _check_block(problems, f"blocks[{i}]", block, block_ids)
    return problems


def _breaks_block_limits(message: Mapping[str, Any]) -> bool:
    """Whether Slack would refuse ``message``'s blocks (``invalid_blocks``); a long ``text`` it truncates."""
    return "blocks" in message and any(not p.startswith("text:") for p in slack_limit_problems(message))
JSON_FIELDS = frozenset({"blocks", "attachments", "metadata", "view", "unfurls", "user_auth_blocks"})
"""Form-encoded fields that slack_sdk sends as JSON strings; the stub decodes them when they parse."""
_NOT_RECORDED_IN_MESSAGE = frozenset({"channel", "token", "as_user", "link_names", "parse"})
MESSAGE_METHODS = frozenset({"chat.postMessage", "chat.postEphemeral", "chat.update", "chat.scheduleMessage"})
"""Web API methods whose body is a message, checked against Slack's limits (as are response_url posts)."""


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
    limit_problems: tuple[str, ...] = ()
    """How the message in this call breaks Slack's limits (``slack_limit_problems``), if it does."""

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
    location: str | None = None

    @property
    def replaces_answer(self) -> bool:
        return self.status is not None or self.error is not None

    def reply(self) -> _Reply:
        if self.location is not None:
            return _Reply(self.status or 302, "Found", {"Location": self.location})
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
        self._limit_problems: list[str] = []
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
                  retry_after: int | None = None, delay: float | None = None, times: int = 1,
                  location: str | None = None) -> None:
        """Make the next ``times`` requests to ``method_name`` fail; queued failures apply in order.

        ``method_name`` is a Web API method or ``"response"`` (any ``response_url``).

        * ``status=500`` (the default when nothing else is given): plain-text HTTP error.
        * ``status=429, retry_after=1``: ``Retry-After: 1`` and ``{"ok": false, "error": "ratelimited"}``.
        * ``error="channel_not_found"``: HTTP 200 with ``{"ok": false, "error": ...}`` (with
          ``status`` too: that status with the JSON error).
        * ``delay=2.0``: sleep before answering (to make clients time out). Alone, the request is
          then handled normally (a message is still posted, as on Slack); combined with ``status``
          or ``error``, the failure is answered after the delay.
        * ``location="http://..."``: a redirect there (``status`` 302 unless given), as a hostile or
          misconfigured server might answer; a client that follows it shows up at that URL.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        if location is not None and status is None:
            status = 302
        if status is None and error is None and not delay:
            status = 500
        if retry_after is not None and status is None:
            status = 429
        failure = _Failure(status, error, retry_after, float(delay or 0), location)
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

        Issued response URLs stay valid. Limit problems are kept (see ``take_limit_problems``).
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

    @property
    def limit_problems(self) -> list[str]:
        """A snapshot of every way a message sent to the stub (or checked with ``check_limits``) broke
        Slack's limits, oldest first: ``"<method or response path>: <problem>"``."""
        with self.lock:
            return list(self._limit_problems)

    def take_limit_problems(self) -> list[str]:
        """``limit_problems``, forgotten afterwards (a test that breaks a limit on purpose takes them)."""
        with self.lock:
            problems, self._limit_problems = self._limit_problems, []
            return problems

    def check_limits(self, what: str, payload: Any) -> list[str]:
        """Check a message the stub did not receive itself (``SlackSender`` hands it the ack bodies of
        slash commands) and record its problems like those of calls. Returns them."""
        problems = [f"{what}: {problem}" for problem in slack_limit_problems(payload)]
        if problems:
            with self.lock:
                self._limit_problems.extend(problems)
        return problems

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

        problems: tuple[str, ...] = ()
        if bad_body is None and (kind == RESPONSE or name in MESSAGE_METHODS):
            problems = tuple(f"{name if kind == 'api' else parts.path}: {p}" for p in slack_limit_problems(body))
        with self.lock:
            self._limit_problems.extend(problems)
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
                        delay=failure.delay if failure else 0.0, limit_problems=problems)
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
        if _breaks_block_limits(body):
            return _error("invalid_blocks", 400)
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
        if blocks is not None and _breaks_block_limits(body):
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ================================================================================================
# The other direction: requests to the app the way Slack sends them.
#
# Send requests to the app the way Slack does: signed slash commands, clicks and events.
#
# ``SlackSender`` posts to ``app_url + "/slack/events"`` with ``X-Slack-Request-Timestamp`` (from
# ``time.time()``, so freezegun controls it) and ``X-Slack-Signature`` computed by slack_sdk's
# ``SignatureVerifier``. Payload shapes follow what Slack really sends, including the quirk that
# ``block_actions`` payloads for ephemeral messages have no ``message`` key.
#
# The block helpers (``find_buttons``, ``button``, ``SlackSender.click_button``) let a test "click
# what the user sees": find a button by its visible text in the blocks the app sent and send its
# ``action_id``, ``value`` and ``block_id``.


EVENTS_PATH = "/slack/events"
VERIFICATION_TOKEN = "legacy-verification-token"
USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

_ids = itertools.count(1)


@dataclass
class SlackReply:
    """The app's answer to one request.

    ``body`` is the parsed JSON when the answer is JSON, else the text (``""`` for an empty ack).
    ``headers`` has lower-case names. ``sent`` is what was sent (command fields, interaction
    payload or event envelope); ``response_url`` the one given to the app (None for events).
    ``elapsed`` is the time the app took to answer, in seconds (Slack gives up after 3).
    """

    status: int
    headers: dict[str, str]
    text: str
    body: Any
    sent: dict[str, Any]
    response_url: str | None = None
    elapsed: float = 0.0


class _Button(NamedTuple):
    block_id: str | None
    element: dict[str, Any]


def _blocks_of(blocks: Any) -> list[dict[str, Any]]:
    """Accept a block list, a JSON string of one, or a message/payload dict with ``blocks``."""
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if isinstance(blocks, Mapping):
        blocks = blocks.get("blocks") or []
    return list(blocks or [])


def walk_buttons(blocks: Any) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """Yield ``(block_id, button_element)`` for every button in ``actions`` elements and section
    accessories, in display order."""
    for block in _blocks_of(blocks):
        candidates: list[Any] = []
        if block.get("type") == "actions":
            candidates = list(block.get("elements") or [])
        elif block.get("type") == "section" and block.get("accessory"):
            candidates = [block["accessory"]]
        for element in candidates:
            if isinstance(element, Mapping) and element.get("type") == "button":
                yield block.get("block_id"), dict(element)


def _button_text(element: Mapping[str, Any]) -> str:
    text = element.get("text")
    return text.get("text", "") if isinstance(text, Mapping) else str(text or "")


def find_buttons(blocks: Any, text: str | None = None) -> list[dict[str, Any]]:
    """All button elements in ``blocks`` (or only those whose visible text is exactly ``text``)."""
    return [element for _, element in walk_buttons(blocks)
            if text is None or _button_text(element) == text]


def _find_one(blocks: Any, text: str) -> _Button:
    found = [_Button(block_id, element) for block_id, element in walk_buttons(blocks)
             if _button_text(element) == text]
    if len(found) != 1:
        seen = [_button_text(e) for _, e in walk_buttons(blocks)]
        problem = "no button" if not found else f"{len(found)} buttons"
        raise AssertionError(f"{problem} with text {text!r}; buttons shown: {seen}")
    return found[0]


def button(blocks: Any, text: str) -> dict[str, Any]:
    """The one button element whose visible text is exactly ``text``.

    Raises AssertionError (listing the visible buttons) when there is none or more than one.
    """
    return _find_one(blocks, text).element


class SlackSender:
    """Send signed Slack requests to the app at ``app_url`` (e.g. ``http://127.0.0.1:PORT``).

    ``stub`` (a started ``SlackStub``) issues the ``response_url``\\ s and knows the users (for
    ``user_name`` and the clicking user's team) and the bot user (for event authorizations).
    """

    def __init__(self, app_url: str, signing_secret: str, stub: SlackStub, *,
                 timeout: float = 10.0, api_app_id: str = APP_ID,
                 verification_token: str = VERIFICATION_TOKEN):
        self.app_url = app_url.rstrip("/")
        self.events_url = self.app_url + EVENTS_PATH
        self.signing_secret = signing_secret
        self.stub = stub
        self.timeout = timeout
        self.api_app_id = api_app_id
        self.verification_token = verification_token

    # ------------------------------------------------------------------ signing and sending

    def signed_headers(self, body: bytes | str, timestamp: str | int | None = None,
                       secret: str | None = None) -> dict[str, str]:
        """``X-Slack-Request-Timestamp`` and ``X-Slack-Signature`` for ``body``.

        ``timestamp`` defaults to now (``time.time()``); pass an old one for a stale request, or
        another ``secret`` for a wrongly signed one.
        """
        ts = str(int(time.time()) if timestamp is None else timestamp)
        verifier = SignatureVerifier(self.signing_secret if secret is None else secret)
        signature = verifier.generate_signature(timestamp=ts, body=body)
        assert signature is not None
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}

    def raw(self, body: bytes, headers: Mapping[str, str], *, path: str = EVENTS_PATH
            ) -> tuple[int, dict[str, str], str]:
        """POST ``body`` with exactly ``headers`` (no signing); return (status, headers, text)."""
        status, out_headers, text, _ = self._post(body, dict(headers), path)
        return status, out_headers, text

    def _post(self, body: bytes, headers: dict[str, str], path: str = EVENTS_PATH
              ) -> tuple[int, dict[str, str], str, float]:
        parts = urlsplit(self.app_url + path)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        started = time.perf_counter()
        try:
            conn.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""),
                         body=body, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
            return (resp.status, {k.lower(): v for k, v in resp.getheaders()}, text,
                    time.perf_counter() - started)
        finally:
            conn.close()

    def _send_signed(self, body: bytes, content_type: str, sent: dict[str, Any],
                     response_url: str | None, extra: Mapping[str, str] | None = None) -> SlackReply:
        headers = {"Content-Type": content_type, "User-Agent": USER_AGENT, "Accept": "*/*",
                   **self.signed_headers(body), **(extra or {})}
        status, out_headers, text, elapsed = self._post(body, headers)
        parsed: Any = text
        if text and "json" in out_headers.get("content-type", ""):
            try:
                parsed = json.loads(text)
            except ValueError:
                pass
        if isinstance(parsed, dict) and ("blocks" in parsed or "text" in parsed):
            # An ack with a message (a slash command's answer) is shown by Slack like any other message.
            what = f"ack of {sent['command']}" if isinstance(sent.get("command"), str) else "ack"
            self.stub.check_limits(what, parsed)
        return SlackReply(status, out_headers, text, parsed, sent, response_url, elapsed)

    # ------------------------------------------------------------------ payload helpers

    def _user_name(self, user: str) -> str:
        with self.stub.lock:
            return self.stub.users.get(user, {}).get("name", user.lower())

    def _user_team(self, user: str, default: str) -> str:
        with self.stub.lock:
            return self.stub.users.get(user, {}).get("team_id", default)

    def _team_domain(self, team: str) -> str:
        with self.stub.lock:
            return self.stub.teams.get(team, team.lower())

    def _channel_name(self, channel: str) -> str:
        with self.stub.lock:
            return self.stub.channels.get(channel, channel.lower())

    @staticmethod
    def _trigger_id() -> str:
        n = next(_ids)
        return f"{1000000000 + n}.{2000000000 + n}.{n:032x}"

    @staticmethod
    def _action_ts() -> str:
        return f"{time.time():.6f}"

    # ------------------------------------------------------------------ slash commands

    def command(self, text: str, *, user: str = ADMIN_USER, team: str = OWN_TEAM,
                channel: str = "C0INCIDENT", command: str = "/apikeys",
                response_url: str | None = None) -> SlackReply:
        """Send a slash command, form-encoded with the fields Slack sends, in Slack's order.

        A fresh ``stub.response_url("cmd")`` is used unless ``response_url`` is given.
        """
        response_url = response_url or self.stub.response_url("cmd")
        fields = {
            "token": self.verification_token,
            "team_id": team,
            "team_domain": self._team_domain(team),
            "channel_id": channel,
            "channel_name": self._channel_name(channel),
            "user_id": user,
            "user_name": self._user_name(user),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": self._trigger_id(),
        }
        return self._send_signed(urlencode(fields).encode("utf-8"), FORM, fields, response_url)

    # ------------------------------------------------------------------ interactions

    def click(self, action_id: str, value: str | None = None, *, user: str = ADMIN_USER,
              user_team: str | None = None, team: str = OWN_TEAM, channel: str = "C0INCIDENT",
              response_url: str | None = None, block_id: str = "b",
              state: dict[str, Any] | None = None, selected_option: dict[str, Any] | None = None,
              ephemeral: bool = True, text: str | None = None, message_ts: str | None = None,
              message_blocks: list[dict[str, Any]] | None = None) -> SlackReply:
        """Send a ``block_actions`` interaction (``payload=<json>``, form-encoded) like Slack.

        A button click by default; with ``selected_option`` a ``static_select`` choice. ``text``
        is the button's visible text (defaults to ``value``). ``user_team`` defaults to the
        user's team in ``stub.users``. For ``ephemeral=True`` (the default) the payload has no
        ``message`` key, as on Slack; with ``ephemeral=False`` it carries a ``message`` from the
        bot with ``message_blocks``. A fresh ``stub.response_url("click")`` is used unless
        ``response_url`` is given (pass the command's to keep one message thread).
        """
        response_url = response_url or self.stub.response_url("click")
        message_ts = message_ts or self._message_ts()
        if selected_option is not None:
            action: dict[str, Any] = {"type": "static_select", "action_id": action_id,
                                      "block_id": block_id, "selected_option": selected_option,
                                      "action_ts": self._action_ts()}
        else:
            action = {"action_id": action_id, "block_id": block_id,
                      "text": {"type": "plain_text", "text": text if text is not None else str(value),
                               "emoji": True},
                      "value": value, "type": "button", "action_ts": self._action_ts()}
            if value is None:  # Slack omits the value of a button that has none
                del action["value"]
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user, "username": self._user_name(user), "name": self._user_name(user),
                     "team_id": user_team or self._user_team(user, team)},
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                          "is_ephemeral": ephemeral},
            "trigger_id": self._trigger_id(),
            "team": {"id": team, "domain": self._team_domain(team)},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": self._channel_name(channel)},
        }
        if not ephemeral:
            payload["message"] = {"user": self.stub.bot_user_id, "type": "message", "ts": message_ts,
                                  "bot_id": self.stub.bot_id, "app_id": self.api_app_id,
                                  "text": "", "team": team, "blocks": message_blocks or []}
        payload["state"] = {"values": state or {}}
        payload["response_url"] = response_url
        payload["actions"] = [action]
        body = urlencode({"payload": json.dumps(payload)}).encode("utf-8")
        return self._send_signed(body, FORM, payload, response_url)

    def click_button(self, blocks: Any, text: str, **kwargs: Any) -> SlackReply:
        """Click the button whose visible text is exactly ``text`` in ``blocks``.

        ``blocks`` may be a block list or a message/response payload with ``blocks``. Sends the
        button's ``action_id``, ``value`` and its block's ``block_id`` (or ``kwargs["block_id"]``
        when the block has none); other keyword arguments go to ``click``. For a non-ephemeral
        click the message carries ``blocks``.
        """
        found = _find_one(blocks, text)
        if found.block_id is not None:
            kwargs["block_id"] = found.block_id
        if not kwargs.get("ephemeral", True):
            kwargs.setdefault("message_blocks", _blocks_of(blocks))
        return self.click(found.element.get("action_id", ""), found.element.get("value"),
                          text=_button_text(found.element), **kwargs)

    @staticmethod
    def _message_ts() -> str:
        """A message ts for interactions on messages the stub did not post."""
        n = next(_ids)
        return f"1690000000.{n:06d}"

    # ------------------------------------------------------------------ events

    def event(self, event: dict[str, Any], *, event_id: str | None = None,
              retry_num: int | None = None, retry_reason: str = "http_timeout",
              team: str = OWN_TEAM) -> SlackReply:
        """Send an Events API ``event_callback`` envelope (JSON) around ``event``.

        With ``retry_num``, adds ``X-Slack-Retry-Num``/``X-Slack-Retry-Reason`` as Slack does when
        it redelivers (reuse the first delivery's ``event_id`` for a realistic retry).
        """
        event_id = event_id or f"Ev{next(_ids):08d}APIKEYS"
        envelope = {
            "token": self.verification_token,
            "team_id": team,
            "context_team_id": team,
            "context_enterprise_id": None,
            "api_app_id": self.api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": team, "user_id": self.stub.bot_user_id,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False,
        }
        extra = None
        if retry_num is not None:
            extra = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
        return self._send_signed(json.dumps(envelope).encode("utf-8"), JSON, envelope, None, extra)

    def url_verification(self, challenge: str = "challenge-token") -> SlackReply:
        """Send the ``url_verification`` handshake Slack sends when the Request URL is set."""
        body = {"token": self.verification_token, "challenge": challenge, "type": "url_verification"}
        return self._send_signed(json.dumps(body).encode("utf-8"), JSON, body, None)
