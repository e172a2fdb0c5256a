"""A local stand-in for the Slack Web API and for ``response_url``\\ s.

``SlackStub`` is a real HTTP server (standard library only) bound to 127.0.0.1. Point the app at
it with ``SLACK_API_URL=stub.api_url`` (slack_sdk's ``WebClient(base_url=...)`` posts to
``base_url + method``, e.g. ``/api/chat.postMessage``) and hand out ``stub.response_url()`` as the
``response_url`` of slash commands and interactions. Every request is recorded as a ``Call``
(``stub.calls``) and answered the way Slack answers it, including Slack's quirk of HTTP 200 with
``{"ok": false}`` for API errors.

The playground shows what the bot sent from ``stub.calls``; the test suite uses a subclass
(``tests/slackstub.py``) that adds what only tests need: waiting for a call, injected failures
(5xx, 429 with ``Retry-After``, redirects, delays) through the ``_injected`` hook, custom methods
through ``_method``, and assertions. It has no test-framework imports, and all of its state is
guarded by one lock: requests arrive on server threads while the playground (or a test) reads
from its own.

Example::

    with SlackStub() as stub:
        client = WebClient(token=stub.bot_token, base_url=stub.api_url)
        client.chat_postMessage(channel="C0INCIDENT", text="hi")
        assert stub.calls[-1].body["text"] == "hi"

It keeps the channels' messages (``chat.postMessage``/``update``/``delete``) and answers
``conversations.history`` from them, newest first and paged, as ``apikeys audit --verify
--against-slack`` reads the audit channel.

Unknown paths answer 404; ``response_url`` paths that the stub never issued answer 404 with
``{"ok": false, "error": "unknown_response_url"}`` (a stub-specific error, so that an app posting
to a wrong URL is noticed).

Every message it receives (``chat.postMessage``, ``chat.postEphemeral``, ``chat.update``, a
``response_url`` post) and every slash-command ack ``SlackSender`` receives (``check_limits``) is
checked against Slack's limits by ``limits.slack_limit_problems``: blocks that break one are
refused with ``invalid_blocks``, as Slack does (HTTP 400 on a ``response_url``), and every problem
is kept (the tests assert at teardown that there were none).
"""

from __future__ import annotations

import base64
import copy
import hmac
import itertools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from . import guard
from .limits import MAX_TEXT, breaks_block_limits, slack_limit_problems

log = logging.getLogger("apikeys.playground.slackstub")

__all__ = [
    "ADMIN_USER", "APP_ID", "BOT_ID", "Call", "DEMO_CHANNELS", "DEMO_TEAMS", "DEMO_USERS", "Injected", "MEMBER_USER",
    "OTHER_TEAM", "OTHER_WORKSPACE_USER", "OWN_TEAM", "RESPONSE", "Reply", "SlackStub",
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
"""The pseudo method name of ``response_url`` calls (``Call.method_name``, and for injected failures)."""

DEMO_USERS: dict[str, dict[str, Any]] = {
    ADMIN_USER: {"team_id": OWN_TEAM, "name": "ada", "real_name": "Ada Admin"},
    MEMBER_USER: {"team_id": OWN_TEAM, "name": "max", "real_name": "Max Member"},
    OTHER_WORKSPACE_USER: {"team_id": OTHER_TEAM, "name": "eve", "real_name": "Eve Elsewhere"},
}
DEMO_CHANNELS: dict[str, str] = {"C0INCIDENT": "incident", "C0GENERAL": "general"}
DEMO_TEAMS: dict[str, str] = {OWN_TEAM: "own", OTHER_TEAM: "other"}

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
    failure answered instead of the normal handler; ``delay`` is the injected delay in seconds
    before answering (both only ever set by the tests' subclass).
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


@dataclass
class Reply:
    """What the stub answers: ``body`` a dict or list (sent as JSON) or a string (text/plain)."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Injected:
    """What the tests' subclass injects into one request (``SlackStub._injected``): ``reply`` answers
    instead of the normal handler (None: handled normally), after ``delay`` seconds."""

    reply: Reply | None = None
    delay: float = 0.0


NOTHING_INJECTED = Injected()


def _ok(**fields: Any) -> Reply:
    return Reply(200, {"ok": True, **fields})


def _error(error: str, status: int = 200) -> Reply:
    return Reply(status, {"ok": False, "error": error})


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
    timeout = 10  # seconds a client may take to send its request (a stalled one frees the thread)

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        self.server.stub._handle(self)

    def do_GET(self) -> None:  # noqa: N802 - the bot only POSTs; a GET is a browser (an <img>, a link) or a probe
        self.server.stub._refuse(self, 405, f"method_not_allowed: the stand-in takes POST only, not {self.command}")

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

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
        self._ts_counter = itertools.count(1)
        self._url_counter = itertools.count(1)
        self._names = guard.HostNames(host)
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

    # ------------------------------------------------------------------ inspection

    @property
    def calls(self) -> list[Call]:
        """A snapshot of all recorded calls, oldest first."""
        with self.lock:
            return list(self._calls)

    def check_limits(self, what: str, payload: Any) -> list[str]:
        """Check a message the stub did not receive itself (``SlackSender`` hands it the ack bodies of
        slash commands) and record its problems like those of calls. Returns them."""
        problems = [f"{what}: {problem}" for problem in slack_limit_problems(payload)]
        if problems:
            with self.lock:
                self._limit_problems.extend(problems)
        return problems

    # ------------------------------------------------------------------ request handling

    # The bodies the bot sends: slack_sdk's Web API calls are form-encoded (or JSON), response_url posts JSON.
    MEDIA_TYPES = ("application/x-www-form-urlencoded", "application/json", "")
    MAX_BODY = 8 * 1024 * 1024
    """Bytes a request body may have (a message at every one of Slack's limits, form-encoded, fits)."""

    def _refuse(self, req: _Handler, status: int, error: str) -> None:
        """Answer without reading, recording or changing anything."""
        self._send(req, Reply(status, {"ok": False, "error": error}, {"Allow": "POST"} if status == 405 else {}))

    def _handle(self, req: _Handler) -> None:
        parts = urlsplit(req.path)
        headers = {k.lower(): v for k, v in req.headers.items()}
        # A web page the operator visits must not post messages (or anything) through the stand-in: the
        # playground's own guard, with no page of the stand-in's own (every browser request is another site's).
        refusal = guard.refusal(headers, names=self._names, own_pages=False, media_types=self.MEDIA_TYPES,
                                what="the Slack stand-in")
        if refusal is not None:
            self._refuse(req, refusal.status, refusal.error)
            return
        length_text = (headers.get("content-length") or "0").strip()
        if not length_text.isdigit():
            self._refuse(req, 400, "invalid_content_length: Content-Length must be a number of bytes")
            return
        length = int(length_text)
        if length > self.MAX_BODY:
            self._refuse(req, 413, f"request_too_large: at most {self.MAX_BODY} bytes")
            return
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
            self._send(req, Reply(404, {"ok": False, "error": "not_found: the stand-in serves /api/<method> and "
                                                             "/response/<id> only"}))
            return

        problems: tuple[str, ...] = ()
        if bad_body is None and (kind == RESPONSE or name in MESSAGE_METHODS):
            problems = tuple(f"{name if kind == 'api' else parts.path}: {p}" for p in slack_limit_problems(body))
        with self.lock:
            self._limit_problems.extend(problems)
            injected = self._injected(name)
            if injected.reply is not None:
                reply = injected.reply
            elif kind == "api":
                reply = self._api(name, body, headers, bad_body)
            else:
                reply = self._response(base + parts.path, body, bad_body)
            call = Call(kind=kind, path=parts.path,
                        method_name=name, body=body, headers=headers, at=time.time(),
                        url=base + parts.path, http_method=req.command, status=reply.status,
                        response=copy.deepcopy(reply.body), failed=injected.reply is not None,
                        delay=injected.delay, limit_problems=problems)
            self._calls.append(call)
            self._changed.notify_all()
        if injected.delay:
            self._stopping.wait(injected.delay)
        self._send(req, reply)

    def _injected(self, method_name: str) -> Injected:
        """What to inject into this request to ``method_name`` (a Web API method or ``RESPONSE``);
        called under the lock. The stand-in injects nothing; the tests' subclass queues failures."""
        return NOTHING_INJECTED

    @staticmethod
    def _send(req: _Handler, reply: Reply) -> None:
        if isinstance(reply.body, (dict, list)):
            payload = json.dumps(reply.body).encode("utf-8")
            content_type = "application/json; charset=utf-8"
        else:
            payload = str(reply.body).encode("utf-8")
            content_type = "text/plain; charset=utf-8"
        req.send_response(reply.status)
        req.send_header("Content-Type", content_type)
        req.send_header("Content-Length", str(len(payload)))
        req.send_header("X-Content-Type-Options", "nosniff")
        for name, value in reply.headers.items():
            req.send_header(name, value)
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(payload)

    def _response(self, url: str, body: dict[str, Any], bad_body: str | None) -> Reply:
        if url not in self._responses:
            return _error("unknown_response_url", 404)
        if bad_body is not None:
            return _error("invalid_payload", 400)
        if breaks_block_limits(body):
            return _error("invalid_blocks", 400)
        self._responses[url].append(body)
        return _ok()

    def _api(self, method: str, body: dict[str, Any], headers: dict[str, str],
             bad_body: str | None) -> Reply:
        if bad_body is not None:
            return _error("invalid_json")
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else body.get("token")
        handler = self._method(method)
        if handler is None:
            return _error("unknown_method")
        if not token:
            return _error("not_authed")
        if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self.bot_token.encode()):
            return _error("invalid_auth")
        if any(not isinstance(body[name], str) for name in self.STRING_ARGUMENTS & body.keys()):
            return _error("invalid_arguments")
        return handler(body)

    STRING_ARGUMENTS = frozenset({"channel", "ts", "thread_ts", "user", "text", "cursor"})
    """Web API arguments that are strings (a form body has nothing else; a JSON body could)."""

    def _method(self, method: str) -> Callable[[dict[str, Any]], Reply] | None:
        """The handler of Web API ``method`` (called under the lock), or None: it is unknown."""
        return getattr(self, "_m_" + method.replace(".", "_"), None)

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
        if blocks is not None and breaks_block_limits(body):
            return "invalid_blocks"
        if isinstance(body.get("text"), str) and len(body["text"]) > MAX_TEXT:
            return "msg_too_long"
        return None

    def _message(self, body: dict[str, Any], ts: str) -> dict[str, Any]:
        message = {k: v for k, v in body.items() if k not in _NOT_RECORDED_IN_MESSAGE}
        message.update({"type": "message", "ts": ts, "user": self.bot_user_id, "bot_id": self.bot_id,
                        "app_id": self.app_id, "team": self.team_id})
        return message

    def _m_auth_test(self, body: dict[str, Any]) -> Reply:
        return _ok(url="https://own.slack.com/", team="Own Corp", user="apikeys", team_id=self.team_id,
                   user_id=self.bot_user_id, bot_id=self.bot_id, is_enterprise_install=False)

    def _m_chat_postMessage(self, body: dict[str, Any]) -> Reply:  # noqa: N802 - Slack's name
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

    def _m_chat_postEphemeral(self, body: dict[str, Any]) -> Reply:  # noqa: N802
        error = self._channel_error(body.get("channel"))
        if not error and not body.get("user"):
            error = "user_not_found"
        error = error or self._content_error(body)
        if error:
            return _error(error)
        return _ok(message_ts=self._next_ts())

    def _m_chat_update(self, body: dict[str, Any]) -> Reply:
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

    def _m_chat_delete(self, body: dict[str, Any]) -> Reply:
        channel, ts = body.get("channel"), body.get("ts")
        error = self._channel_error(channel) or (None if ts else "message_not_found")
        if error:
            return _error(error)
        self.messages.pop((channel, ts), None)
        return _ok(channel=channel, ts=ts)

    def _m_users_info(self, body: dict[str, Any]) -> Reply:
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

    def _m_conversations_history(self, body: dict[str, Any]) -> Reply:
        """A channel's messages, newest first, paged like Slack (``limit`` up to 999, an opaque
        ``cursor``, ``has_more``); thread replies are not in it. The bot must be in the channel."""
        channel = body.get("channel")
        error = self._channel_error(channel)
        if error:
            return _error(error)
        try:
            limit = min(max(int(body.get("limit") or 100), 1), 999)
            start = int(base64.b64decode(body["cursor"]).decode().removeprefix("next_ts:")) if body.get("cursor") else 0
        except (ValueError, TypeError, UnicodeDecodeError):
            return _error("invalid_cursor")
        newest_first = sorted(
            (m for (ch, ts), m in self.messages.items() if ch == channel and m.get("thread_ts") in (None, ts)),
            key=lambda m: float(m["ts"]), reverse=True)
        page = newest_first[start:start + limit]
        more = start + limit < len(newest_first)
        cursor = base64.b64encode(f"next_ts:{start + limit}".encode()).decode() if more else ""
        return _ok(messages=copy.deepcopy(page), has_more=more, response_metadata={"next_cursor": cursor})

    def _m_conversations_info(self, body: dict[str, Any]) -> Reply:
        channel = body.get("channel")
        if not channel or not isinstance(channel, str) or channel in self.unknown_channels:
            return _error("channel_not_found")
        return _ok(channel={"id": channel, "name": self.channels.get(channel, channel.lower()),
                            "is_channel": channel[0] == "C", "is_im": channel[0] == "D",
                            "is_private": channel[0] == "G", "is_archived": False,
                            "is_member": channel not in self.channels_bot_is_not_in})
