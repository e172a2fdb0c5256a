"""``apikeys playground``: the real server and a local stand-in for Slack in one process, with a
page at ``/playground`` that behaves like a Slack channel.

Every command and click on the page is turned into exactly the request Slack would send (signed,
form-encoded, ``payload=`` for interactions, no ``message`` for ephemeral messages) and sent over
HTTP to the server's own ``/slack/events`` route, so the playground exercises the production code
path. What the bot sends back (ack bodies, ``response_url`` posts, ``chat.postMessage``) is read
from the stand-in and shown as messages, replaced in place where Slack would replace them.

The server is the production one (gunicorn, one worker): the stand-in, the page and the Slack
app live in that worker, which is started with ``APIKEYS_PLAYGROUND_STUB_PORT`` set.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from .devslack import ADMIN_USER, MEMBER_USER, OTHER_WORKSPACE_USER, SlackSender, SlackStub

STATIC = Path(__file__).resolve().parent / "playground_static"
INCIDENT, AUDIT = "C0INCIDENT", "C0AUDIT"
USERS = [
    {"id": ADMIN_USER, "name": "ada", "label": "ada (admin)"},
    {"id": MEMBER_USER, "name": "max", "label": "max (member)"},
    {"id": OTHER_WORKSPACE_USER, "name": "eve", "label": "eve (admin of another workspace)"},
]
CHANNELS = {INCIDENT: {"name": "incident"}, AUDIT: {"name": "apikeys-audit"}}
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
        with self.lock:
            message = self._find(int(data.get("message_id", -1)))
            if message is None or not self._visible(message, user):
                return {"ok": False, "error": "that message is gone"}
            url = self.stub.response_url("click")
            self.by_url[url] = message["id"]
            message["_clicker"] = user
        state = {block: {action: {"type": "static_select", "selected_option": option}
                         for action, option in actions.items() if option}
                 for block, actions in (data.get("state") or {}).items()}
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


class PlaygroundApp:
    """WSGI: ``/playground`` and its JSON API; everything else goes to the real application."""

    def __init__(self, app, conversation: Conversation):
        self.app = app
        self.conversation = conversation
        self.page = (STATIC / "index.html").read_bytes()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path in ("/playground", "/playground/"):
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
                                      ("Content-Length", str(len(self.page)))])
            return [self.page]
        if not path.startswith("/playground/api/"):
            return self.app(environ, start_response)
        try:
            result = self._api(path.removeprefix("/playground/api/"), environ)
            status = "200 OK" if result.get("ok", True) else "400 Bad Request"
        except (ValueError, KeyError, TypeError) as exc:
            result, status = {"ok": False, "error": f"bad request: {exc}"}, "400 Bad Request"
        body = json.dumps(result).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def _api(self, name: str, environ) -> dict[str, Any]:
        if name == "state":
            from urllib.parse import parse_qs

            user = parse_qs(environ.get("QUERY_STRING", "")).get("user", [ADMIN_USER])[0]
            return self.conversation.state(user if user in {u["id"] for u in USERS} else ADMIN_USER)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > 64 * 1024:
            raise ValueError("too large")
        data = json.loads(environ["wsgi.input"].read(length) or b"{}")
        user = data.get("user")
        if user not in {u["id"] for u in USERS}:
            raise ValueError("unknown user")
        if name == "command":
            return self.conversation.command(user, data.get("channel", INCIDENT), data.get("command", ""),
                                             str(data.get("text", ""))[:3000])
        if name == "click":
            return self.conversation.click(user, data)
        if name == "say":
            return self.conversation.say(user, data.get("channel", INCIDENT), str(data.get("text", ""))[:4000])
        raise ValueError(f"no API {name}")


def wrap(app, settings) -> PlaygroundApp:
    """Called in the server's worker when playground mode is on: start the stand-in there."""
    stub = SlackStub(bot_token=settings.slack_bot_token).start(port=int(os.environ["APIKEYS_PLAYGROUND_STUB_PORT"]))
    stub.users.setdefault(OTHER_WORKSPACE_USER, {"team_id": "T0OTHER", "name": "eve"})
    app_url = f"http://127.0.0.1:{settings.port}"
    sender = SlackSender(app_url, settings.slack_signing_secret, stub)
    return PlaygroundApp(app, Conversation(stub, sender))


DEMO_KEYS = [
    ("billing-api", "payments", None), ("checkout-web", "payments", None), ("refunds-worker", "payments", None),
    ("search-indexer", "search", None), ("query-api", "search", None), ("ab-testing", "growth", None),
    ("email-sender", "growth", None), ("warehouse-etl", "data", None), ("metrics-export", "data", None),
    ("notebook", "data", None), ("deploy-bot", "platform", None), ("partner-sandbox", "partners", timedelta(days=2)),
]


def seed(store) -> str | None:
    """A dozen demo keys across owners (one revoked, one expiring soon); returns one secret to paste."""
    if store.keys.count_keys(status="all"):
        return None
    created = {}
    for name, owner, lifetime in DEMO_KEYS:
        created[name] = store.keys.create(name=name, owner=owner, actor="playground", expires_in=lifetime)[0]
    store.keys.revoke(created["deploy-bot"].key.id, actor="playground", reason="rotation", note="replaced by deploy-bot-v2")
    return created["search-indexer"].secret


def main(argv: list[str] | None = None) -> int:
    from storage import open_store

    from . import logs
    from .config import Settings
    from .devslack import free_port
    from .server import run_server

    parser = argparse.ArgumentParser(prog="apikeys playground",
                                     description="The real bot with a local stand-in for Slack, in your browser.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    logs.configure()
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{tempfile.mkdtemp(prefix='apikeys-playground-')}/playground.db"
    env = {
        "DATABASE_URL": database_url, "HOST": args.host, "PORT": str(args.port), "WEB_CONCURRENCY": "1",
        "SLACK_BOT_TOKEN": "xoxb-playground", "SLACK_SIGNING_SECRET": secrets.token_hex(16),
        "APIKEYS_ADMINS": f"{ADMIN_USER},{OTHER_WORKSPACE_USER}", "APIKEYS_AUDIT_CHANNEL": AUDIT,
        "APIKEYS_PLAYGROUND_STUB_PORT": str(free_port()),
    }
    env["SLACK_API_URL"] = f"http://127.0.0.1:{env['APIKEYS_PLAYGROUND_STUB_PORT']}/api/"
    os.environ.update(env)
    os.environ.pop("SLACK_APP_TOKEN", None)
    settings = Settings.from_env()
    store = open_store(settings.database_url, bootstrap_admins=settings.admins, notify_channel=None)
    demo = seed(store)
    store.close()
    host = "localhost" if args.host in ("127.0.0.1", "0.0.0.0") else args.host
    print(f"\n  apikeys playground: open http://{host}:{args.port}/playground\n"
          f"  database: {database_url}\n"
          + (f"  a demo key to paste into a message (leak watch) or /apikeys find: {demo}\n" if demo else "")
          + "  Ctrl-C stops it.\n", flush=True)
    return run_server(settings)
