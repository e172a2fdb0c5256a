"""``apikeys playground``: the real server and a local stand-in for Slack in one process, with a
page at ``/playground`` that behaves like a Slack channel.

Every command and click on the page is turned into exactly the request Slack would send (signed,
form-encoded, ``payload=`` for interactions, no ``message`` for ephemeral messages) and sent over
HTTP to the server's own ``/slack/events`` route, so the playground exercises the production code
path. What the bot sends back (ack bodies, ``response_url`` posts, ``chat.postMessage``) is read
from the stand-in and shown as messages, replaced in place where Slack would replace them.

The server is the production one (granian, one worker): the stand-in, the page and the Slack
app live in that worker. ``main`` hands ``run_server`` a ``wrap`` callable (``wrap`` below with the
stand-in's port) that the worker applies to the app it builds; nothing in the production modules
knows about the playground, and no environment variable turns a server into it.

The page's JSON API changes the database the playground runs on (``/apikeys admins add`` is one
command away), so it answers only the page itself: ``application/json`` bodies (a cross-site form
or ``text/plain`` fetch, which a browser sends without asking, gets 415), no other origin (checked
with ``Sec-Fetch-Site`` and ``Origin``; 403), and only under a host name that cannot be rebound to
this machine by someone else's DNS (localhost, an IP address, ``--host``, this machine's name): one
check, ``guard.refusal``, which the Slack stand-in applies to its own requests too.
The playground listens on 127.0.0.1 unless ``--host`` says otherwise, and refuses to start on a
database holding anything it did not make unless ``--allow-existing-database`` is given (see
``foreign_rows``; on such a database it adds no demo keys).
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import itertools
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from . import guard
from .sender import SlackSender
from .slackstub import ADMIN_USER, MEMBER_USER, OTHER_WORKSPACE_USER, SlackStub

STATIC = Path(__file__).resolve().parent / "static"
INCIDENT, AUDIT, PAYMENTS = "C0INCIDENT", "C0AUDIT", "C0PAYMENTS"  # PAYMENTS: the owner "payments"' channel
USERS = [
    {"id": ADMIN_USER, "name": "ada", "label": "ada (admin)"},
    {"id": MEMBER_USER, "name": "max", "label": "max (member)"},
    {"id": OTHER_WORKSPACE_USER, "name": "eve", "label": "eve (admin of another workspace)"},
]
CHANNELS = {INCIDENT: {"name": "incident"}, AUDIT: {"name": "apikeys-audit"}, PAYMENTS: {"name": "payments-team"}}
_ts = itertools.count(1)


class Conversation:
    """The messages of the two demo channels, rebuilt from what the bot sent to the stand-in."""

    def __init__(self, stub: SlackStub, sender: SlackSender):
        self.stub = stub
        self.sender = sender
        self.lock = threading.RLock()
        self.messages: list[dict[str, Any]] = []
        self.by_url: dict[str, int] = {}       # response_url -> message id it belongs to
        self.ids = itertools.count(1)
        self.seen = 0
        self.version = 0

    # -- messages --------------------------------------------------------------------------------
    def _add(self, *, channel: str, author: str, blocks: list | None, text: str, ephemeral_for: str | None,
             thread_ts: str | None = None, ts: str | None = None) -> dict[str, Any]:
        message = {"id": next(self.ids), "channel": channel, "author": author, "blocks": blocks, "text": text,
                   "ephemeral_for": ephemeral_for, "at": time.time(), "ts": ts or f"{int(time.time())}.{next(_ts):06d}",
                   "thread_of": thread_ts}
        self.messages.append(message)
        self.version += 1
        return message

    def _find(self, message_id: int) -> dict[str, Any] | None:
        return next((m for m in self.messages if m["id"] == message_id), None)

    def sync(self) -> None:
        """Apply what the bot has sent since the last look."""
        with self.lock:
            calls = self.stub.calls[self.seen:]
            self.seen += len(calls)
            for call in calls:
                if call.failed:
                    continue
                if call.kind == "response":
                    self._apply_response(call.url, call.body)
                elif call.method_name == "chat.postMessage" and call.ok:
                    body = call.body
                    self._add(channel=body.get("channel", ""), author="bot", blocks=body.get("blocks"),
                              text=body.get("text", ""), ephemeral_for=None, thread_ts=body.get("thread_ts"),
                              ts=(call.response or {}).get("ts"))
                elif call.method_name == "chat.update" and call.ok:  # a card kept true: edited in place
                    body = call.body
                    for message in self.messages:
                        if message["channel"] == body.get("channel") and message["ts"] == body.get("ts"):
                            message.update(blocks=body.get("blocks"), text=body.get("text", ""))
                            self.version += 1
                elif call.method_name == "chat.postEphemeral" and call.ok:
                    body = call.body
                    self._add(channel=body.get("channel", ""), author="bot", blocks=body.get("blocks"),
                              text=body.get("text", ""), ephemeral_for=body.get("user"))

    def _apply_response(self, url: str, body: dict[str, Any]) -> None:
        origin = self._find(self.by_url.get(url, -1))
        if origin is None:
            return
        if body.get("delete_original"):
            self.messages.remove(origin)
            self.version += 1
        elif body.get("replace_original"):
            origin.update(blocks=body.get("blocks"), text=body.get("text", ""), at=time.time())
            self.version += 1
        else:
            public = body.get("response_type") == "in_channel"
            created = self._add(channel=origin["channel"], author="bot", blocks=body.get("blocks"),
                                text=body.get("text", ""), ephemeral_for=None if public else origin["_clicker"])
            self.by_url[url] = created["id"]

    # -- what the page does ----------------------------------------------------------------------
    def command(self, user: str, channel: str, command: str, text: str) -> dict[str, Any]:
        if command != "/apikeys":
            return {"ok": False, "error": f"{command} is not a command here; try /apikeys"}
        reply = self.sender.command(text, user=user, channel=channel, team=self._team(user))
        with self.lock:
            if reply.status == 200 and isinstance(reply.body, dict) and (reply.body.get("blocks") or reply.body.get("text")):
                message = self._add(channel=channel, author="bot", blocks=reply.body.get("blocks"),
                                    text=reply.body.get("text", ""), ephemeral_for=user)
                message["_clicker"] = user
                self.by_url[reply.response_url] = message["id"]
        return {"ok": reply.status == 200, "status": reply.status}

    def click(self, user: str, data: dict[str, Any]) -> dict[str, Any]:
        raw_state = data.get("state") or {}
        if not isinstance(raw_state, dict) or not all(
                isinstance(actions, dict) and all(o is None or isinstance(o, dict) for o in actions.values())
                for actions in raw_state.values()):
            raise ValueError("state must be an object of objects of options")
        with self.lock:
            message = self._find(int(data.get("message_id", -1)))
            if message is None or not self._visible(message, user):
                return {"ok": False, "error": "that message is gone"}
            url = self.stub.response_url("click")
            self.by_url[url] = message["id"]
            message["_clicker"] = user
        # As Slack sends it: a select's chosen option, a text input's value (the page sends {type, value}).
        state = {block: {action: (option if option.get("type") == "plain_text_input"
                                  else {"type": "static_select", "selected_option": option})
                         for action, option in actions.items() if option}
                 for block, actions in raw_state.items()}
        kwargs: dict[str, Any] = dict(user=user, team=self._team(user), channel=message["channel"], response_url=url,
                                      block_id=data.get("block_id") or "b", state=state,
                                      ephemeral=message["ephemeral_for"] is not None, text=data.get("text"))
        if data.get("selected_option"):
            kwargs["selected_option"] = data["selected_option"]
        if message["ephemeral_for"] is None:
            kwargs.update(message_ts=message["ts"], message_blocks=message["blocks"])
        reply = self.sender.click(data.get("action_id", ""), data.get("value"), **kwargs)
        return {"ok": reply.status == 200, "status": reply.status}

    def say(self, user: str, channel: str, text: str) -> dict[str, Any]:
        with self.lock:
            message = self._add(channel=channel, author=user, blocks=None, text=_escape(text), ephemeral_for=None)
        reply = self.sender.event({"type": "message", "channel": channel, "user": user, "text": text,
                                   "ts": message["ts"], "channel_type": "channel"}, team=self._team(user))
        return {"ok": reply.status == 200, "status": reply.status}

    def state(self, user: str) -> dict[str, Any]:
        self.sync()
        with self.lock:
            visible = [
                {k: v for k, v in m.items() if not k.startswith("_") and k != "ephemeral_for"}
                | {"ephemeral": m["ephemeral_for"] is not None}
                for m in self.messages if self._visible(m, user)
            ]
            return {"version": f"{self.version}:{len(visible)}", "user": user, "users": USERS,
                    "channels": CHANNELS, "messages": visible}

    @staticmethod
    def _visible(message: dict[str, Any], user: str) -> bool:
        return message["ephemeral_for"] in (None, user)

    def _team(self, user: str) -> str:
        return self.stub.users.get(user, {}).get("team_id", self.stub.team_id)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


API_METHODS = {"state": "GET", "command": "POST", "click": "POST", "say": "POST"}
PAGE_HEADERS = [
    ("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
    # Another site must not frame the page and have a visitor click its buttons for it.
    ("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
]


def page_policy(page: bytes) -> str:
    """The page's Content-Security-Policy: its one inline script runs (by its hash) and nothing else does,
    no inline handler, no other script; it talks to its own origin only and cannot be framed. Behind
    the page's rule of building every text as DOM text, never parsing one as markup."""
    scripts = re.findall(rb"<script>(.*?)</script>", page, re.DOTALL)
    if len(scripts) != 1 or b"<script" in page.replace(b"<script>" + scripts[0], b"", 1):
        raise RuntimeError("the playground page must have exactly one inline <script>")
    digest = base64.b64encode(hashlib.sha256(scripts[0]).digest()).decode()
    return (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; connect-src 'self'; "
            "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_STATUS = {200: "200 OK", 400: "400 Bad Request", 403: "403 Forbidden", 404: "404 Not Found",
           405: "405 Method Not Allowed", 413: "413 Content Too Large", 415: "415 Unsupported Media Type",
           502: "502 Bad Gateway"}


class PlaygroundApp:
    """WSGI: ``/playground`` and its JSON API; everything else goes to the real application.

    The API answers the page only: same origin (``Sec-Fetch-Site``, ``Origin``), a host name that
    DNS rebinding cannot point here (``Host``), and JSON bodies (``Content-Type``)."""

    def __init__(self, app, conversation: Conversation, *, host: str | None = None):
        self.app = app
        self.conversation = conversation
        self.page = (STATIC / "index.html").read_bytes()
        self.page_headers = [*PAGE_HEADERS, ("Content-Security-Policy", page_policy(self.page))]
        self.names = guard.HostNames(host)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path in ("/playground", "/playground/"):
            start_response("200 OK", [*self.page_headers, ("Content-Length", str(len(self.page)))])
            return [self.page]
        if not path.startswith("/playground/api/"):
            return self.app(environ, start_response)
        name = path.removeprefix("/playground/api/")
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                   ("X-Content-Type-Options", "nosniff")]
        code, result = self._checked(name, environ)
        if code == 405:
            headers.append(("Allow", API_METHODS[name]))
        body = json.dumps(result).encode()
        start_response(_STATUS[code], [*headers, ("Content-Length", str(len(body)))])
        return [body]

    def _checked(self, name: str, environ) -> tuple[int, dict[str, Any]]:
        if name not in API_METHODS:
            return 404, {"ok": False, "error": f"no playground API {name[:40]!r}"}
        method = environ.get("REQUEST_METHOD", "GET")
        if method != API_METHODS[name]:
            return 405, {"ok": False, "error": f"/playground/api/{name} takes {API_METHODS[name]}, not {method[:10]}"}
        # Only the page itself: same origin, a host name DNS rebinding cannot use, JSON bodies (guard.py).
        refusal = guard.refusal(guard.wsgi_headers(environ), names=self.names, own_pages=True,
                                media_types=("application/json",) if method == "POST" else None,
                                what="the playground API", scheme=environ.get("wsgi.url_scheme", "http"))
        if refusal is not None:
            return refusal.status, {"ok": False, "error": refusal.error}
        try:
            result = self._api(name, environ)
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {"ok": False, "error": f"bad request: {exc}"}
        except OSError as exc:  # the bot (this server's own /slack/events) did not answer
            return 502, {"ok": False, "error": f"the bot did not answer ({type(exc).__name__})"}
        return (200 if result.get("ok", True) else 400), result

    def _api(self, name: str, environ) -> dict[str, Any]:
        if name == "state":
            user = parse_qs(environ.get("QUERY_STRING", "")).get("user", [ADMIN_USER])[0]
            return self.conversation.state(user if user in {u["id"] for u in USERS} else ADMIN_USER)
        length_text = (environ.get("CONTENT_LENGTH") or "0").strip()
        if not length_text.isdigit():
            raise ValueError("Content-Length must be a number of bytes")
        length = int(length_text)
        if length > 64 * 1024:
            raise ValueError("too large")
        data = json.loads(environ["wsgi.input"].read(length) or b"{}")
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        user = data.get("user")
        if user not in {u["id"] for u in USERS}:
            raise ValueError("unknown user")
        if name == "click":
            return self.conversation.click(user, _click_fields(data))
        channel = _string(data, "channel", INCIDENT)
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
        if name == "command":
            return self.conversation.command(user, channel, _string(data, "command", ""),
                                             _string(data, "text", "")[:3000])
        if name == "say":
            return self.conversation.say(user, channel, _string(data, "text", "")[:4000])
        raise ValueError(f"no API {name}")


def _string(data: dict[str, Any], name: str, default: str | None) -> str | None:
    """``data[name]``, a string (absent or null: ``default``); ValueError naming the field otherwise."""
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {type(value).__name__}")
    return value


def _click_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a click, each of its type (the page sends exactly these)."""
    message_id = data.get("message_id")
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise ValueError("message_id must be a whole number")
    action_id = _string(data, "action_id", None)
    if not action_id:
        raise ValueError("action_id must be a non-empty string")
    option = data.get("selected_option")
    if option is not None and not (isinstance(option, dict) and isinstance(option.get("value"), str)):
        raise ValueError("selected_option must be an option object with a string value")
    return {"message_id": message_id, "action_id": action_id, "block_id": _string(data, "block_id", None),
            "value": _string(data, "value", None), "text": _string(data, "text", None), "selected_option": option,
            "state": data.get("state")}


def _own_url(settings) -> str:
    """Where the worker reaches its own server (the stand-in sends Slack's requests there)."""
    host = settings.host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"


def wrap(app, settings, *, stub_port: int) -> PlaygroundApp:
    """Applied in the server's worker (``run_server(settings, wrap=...)``): start the stand-in there."""
    stub = SlackStub(bot_token=settings.slack_bot_token).start(port=stub_port)
    stub.users.setdefault(OTHER_WORKSPACE_USER, {"team_id": "T0OTHER", "name": "eve"})
    sender = SlackSender(_own_url(settings), settings.slack_signing_secret, stub)
    return PlaygroundApp(app, Conversation(stub, sender), host=settings.host)


DEMO_KEYS = [
    ("billing-api", "payments", None), ("checkout-web", "payments", None), ("refunds-worker", "payments", None),
    ("search-indexer", "search", None), ("query-api", "search", None), ("ab-testing", "growth", None),
    ("email-sender", "growth", None), ("warehouse-etl", "data", None), ("metrics-export", "data", None),
    ("notebook", "data", None), ("deploy-bot", "platform", None), ("partner-sandbox", "partners", timedelta(days=2)),
]


def seed(store) -> str | None:
    """Mark the database as the playground's (``PLAYGROUND_MARK``, before anything else is written), then,
    when it has no key yet, a dozen demo keys across owners (one revoked, one expiring soon); returns one
    secret to paste. Only for a database that ``foreign_rows`` found empty or the playground's own."""
    store.receipts.first_use(PLAYGROUND_MARK)
    if store.keys.count_keys(status="all"):
        return None
    created = {}
    for name, owner, lifetime in DEMO_KEYS:
        created[name] = store.keys.create(name=name, owner=owner, actor="playground", expires_in=lifetime)[0]
    store.keys.revoke(created["deploy-bot"].key.id, actor="playground", via="cli", reason="rotation",
                      note="replaced by deploy-bot-v2")
    # The owner "payments" is told in #payments-team: revoke or rotate one of its keys to see the post.
    store.owners.set("payments", PAYMENTS, actor="playground")
    return created["search-indexer"].secret


def _shown(database_url: str) -> str:
    """The URL without its password, for the banner and messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: open_store says so
        return "(not a database URL)"


# Which databases the playground may use without --allow-existing-database: only those it made.
# A database counts as made by the playground when it is
#  * empty: no table of it holds a row, but for the rows the migrations themselves write (alembic's
#    version, and the audit log's genesis head: audit_head (1, 0, 64 zeros)) - a new database, or one
#    that 'apikeys db upgrade' only migrated; or
#  * marked: its receipts table holds the receipt of PLAYGROUND_MARK. The playground writes that mark
#    into an empty database right after migrating it, before anything else (demo keys, audit entries,
#    checkpoints), and never into a database it found holding anything, not even when
#    --allow-existing-database lets it run there. Nothing else writes it (the app's receipts are
#    "revoke-click|...", "command|..." and leak places, never this string).
# Anything else - a row in any table, apikeys' own (keys, admins, audit entries, checkpoints, outbox,
# receipts, ...) or another application's - was made by something else, a real installation perhaps,
# and is refused: the playground makes its demo users admins and signs the audit log with a key thrown
# away at exit, which would break a pinned 'apikeys audit --verify' of a real log for ever.
PLAYGROUND_MARK = "playground|database"
_NAMED = {"api_keys": ("key", "keys"), "admins": ("admin", "admins"), "audit_events": ("audit entry", "audit entries"),
          "audit_checkpoints": ("audit checkpoint", "audit checkpoints"), "outbox": ("audit post", "audit posts"),
          "receipts": ("receipt", "receipts"), "revoked_key_uses": ("revoked-key use", "revoked-key uses")}
_MIGRATIONS_WRITE = {"alembic_version": None,  # None: every row; else the condition of a row someone made
                     "audit_head": "NOT (id = 1 AND last_id = 0 AND last_hash = '" + "0" * 64 + "')"}
_SYSTEM_SCHEMAS = ("information_schema", "pg_catalog", "pg_toast")


def foreign_rows(database_url: str) -> str | None:
    """What the database holds that the playground did not make ("2 keys, 1 admin, 3 rows in invoices"),
    or None for an empty database or the playground's own (see above). Reads only: nothing is migrated
    or written first."""
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import SQLAlchemyError

    from storage import Database, StorageError
    from storage.keyformat import digest

    db = Database(database_url, pool_size=1)
    try:
        with db.read() as session:
            inspector = inspect(session.connection())
            quote = session.connection().dialect.identifier_preparer.quote
            default = inspector.default_schema_name
            schemas = [default] + [name for name in inspector.get_schema_names()
                                   if name != default and name not in _SYSTEM_SCHEMAS and not name.startswith("pg_")]
            if "receipts" in inspector.get_table_names(schema=default) and session.execute(
                    text("SELECT 1 FROM receipts WHERE id = :id"), {"id": digest(PLAYGROUND_MARK)}).first():
                return None  # the playground's own
            found = []
            for schema in schemas:
                for table in sorted(inspector.get_table_names(schema=schema)):
                    mine = schema == default and table in _MIGRATIONS_WRITE
                    if mine and _MIGRATIONS_WRITE[table] is None:
                        continue
                    where = f" WHERE {_MIGRATIONS_WRITE[table]}" if mine else ""
                    qualified = quote(table) if schema == default else f"{quote(schema)}.{quote(table)}"
                    count = int(session.execute(text(f"SELECT COUNT(*) FROM {qualified}{where}")).scalar_one())
                    if not count:
                        continue
                    if schema == default and table in _NAMED:
                        found.append(f"{count} {_NAMED[table][count != 1]}")
                    else:
                        name = table if schema == default else f"{schema}.{table}"
                        found.append(f"{count} row{'s' if count != 1 else ''} in {ascii(name)[1:-1][:60]}")
            return ", ".join(found) or None
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read the database at {_shown(database_url)} ({type(exc).__name__})") from None
    finally:
        db.dispose()


def _browser_host(host: str) -> str:
    """The host a browser on this machine uses for ``host`` (a wildcard address means localhost)."""
    if host in ("0.0.0.0", "::"):
        return "localhost"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for the stand-in, which the worker starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refuse(message: str) -> int:
    sys.stderr.write(f"apikeys: error: {message}\n")
    sys.stderr.flush()
    return 2


def main(argv: list[str] | None = None) -> int:
    from .. import logs

    parser = argparse.ArgumentParser(prog="apikeys playground",
                                     description="The real bot with a local stand-in for Slack, in your browser.")
    parser.add_argument("--host", default="127.0.0.1", help="where to listen (default 127.0.0.1; HOST is ignored)")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--allow-existing-database", action="store_true",
                        help="run on DATABASE_URL even though it holds data the playground did not create "
                             "(keys, admins, audit entries, any row)")
    args = parser.parse_args(argv)
    if not args.host.strip():
        return _refuse("--host must not be empty (use 127.0.0.1, or 0.0.0.0 to listen on every interface)")
    if not 0 < args.port < 65536:
        return _refuse(f"--port must be a TCP port number, got {args.port}")
    logs.configure()
    # DATABASE_URL (from the environment) points the playground at an existing database; by default
    # it gets a fresh one. HOST and PORT are never taken from the environment or .env: only --host/--port.
    scratch = None if os.environ.get("DATABASE_URL") else tempfile.mkdtemp(prefix="apikeys-playground-")
    try:
        return _run(args, os.environ.get("DATABASE_URL") or f"sqlite:///{scratch}/playground.db")
    finally:  # Ctrl-C, SIGTERM or a refusal: the fresh database goes with the signing key it was signed with
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _run(args, database_url: str) -> int:
    from storage import checkpoints, open_store

    from ..config import Settings
    from ..server import run_server

    foreign = foreign_rows(database_url)
    consequences = "demo users are admins there and its audit log is signed with a key thrown away at exit"
    if foreign and not args.allow_existing_database:
        return _refuse(
            f"DATABASE_URL ({_shown(database_url)}) holds {foreign} that the playground did not create; "
            f"in the playground its {consequences}; unset DATABASE_URL for a fresh database, or pass "
            "--allow-existing-database if you mean it")
    if foreign:
        sys.stderr.write(f"apikeys: warning: running on {_shown(database_url)}, which holds {foreign} "
                         f"(--allow-existing-database): its {consequences}; no demo keys are added\n")
        sys.stderr.flush()
    stub_port = free_port()
    env = {
        **{name: value for name, value in os.environ.items() if name != "SLACK_APP_TOKEN"},
        "DATABASE_URL": database_url, "HOST": args.host.strip(), "PORT": str(args.port), "WEB_CONCURRENCY": "1",
        # A token of this run's own, unknown to any page (a well-known one, any page could use): the stand-in
        # takes no other. It goes to the settings (so to the bot and the stand-in in the server's worker) and
        # nowhere else: not into the environment, which every child process inherits, and not to the page.
        "SLACK_BOT_TOKEN": f"xoxb-{secrets.token_urlsafe(32)}", "SLACK_SIGNING_SECRET": secrets.token_urlsafe(32),
        "APIKEYS_ADMINS": f"{ADMIN_USER},{OTHER_WORKSPACE_USER}", "APIKEYS_AUDIT_CHANNEL": AUDIT,
        "SLACK_API_URL": f"http://127.0.0.1:{stub_port}/api/",
        # Rotation's one-time links point at this server (GET /reveal/<token>), opened in the same browser.
        "APIKEYS_PUBLIC_URL": f"http://{_browser_host(args.host.strip())}:{args.port}",
        # A signing key of its own (thrown away on exit): the audit channel shows its witness lines.
        "APIKEYS_AUDIT_SIGNING_KEY": checkpoints.generate()[0],
    }
    settings = Settings.from_env(env)
    del env
    store = open_store(settings.database_url, bootstrap_admins=settings.admins, notify_channel=None,
                       signer=settings.audit_signer)
    demo = seed(store) if foreign is None else None
    store.close()
    host = _browser_host(settings.host)
    print(f"\n  apikeys playground: open http://{host}:{args.port}/playground\n"
          f"  database: {_shown(database_url)}\n"
          + (f"  a demo key to paste into a message (leak watch) or /apikeys find: {demo}\n" if demo else "")
          + "  Ctrl-C stops it.\n", flush=True)
    return run_server(settings, wrap=functools.partial(wrap, stub_port=stub_port))
