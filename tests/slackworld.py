"""The Slack app as users see it: a world of the stand-in for Slack, the app, and a store on the
same database, plus the helpers the Slack tests share (seeding, reading what users see, acting
like a user, the audit channel).

Two kinds of world, one interface (``stub``, ``sender``, ``store``, ``log()``, ``request()``):

* ``InProcessWorld`` (the default ``world`` fixture), in Bolt's own scenario-test style: the Bolt
  app (``bot.slack.app.create_app``) and its audit deliverer (``start_delivery``) run in this
  process, each signed request goes to ``app.dispatch`` through ``bolt_request`` exactly as the
  production WSGI handler builds it (``tests.slackhttp.BoltTransport``), and the key API is the
  production WSGI app (``bot.api.KeyApiApp``) called in-process. The app talks to the stand-in
  over loopback HTTP as in production (Web API calls, ``response_url`` posts). ``log()`` is every
  line logged meanwhile, formatted by the production formatter (``bot.logs.RedactingFormatter``).
* ``ServerWorld`` (tests marked ``end_to_end``): the real server (``python -m bot``, two gunicorn
  workers) on a free port, talked to over signed HTTP exactly as Slack does; ``log()`` is the
  server's output, and ``restart()`` stops it (SIGTERM, a clean exit expected) and starts another.

Keys are seeded straight into the database through the store. What the app shows comes back in
the ack of a slash command or as a POST to the ``response_url`` (clicks); audit-channel posts and
channel notices arrive at the stand-in as ``chat.postMessage`` calls. Nothing here sleeps to wait
for an effect: the stand-in's ``wait_for*`` block on a condition.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot.api import KeyApiApp
from bot.config import Settings
from bot.logs import FORMAT, RedactingFormatter
from bot.slack.app import create_app, make_client, start_delivery
from storage import Store, open_store
from storage.outbox import OutboxMessage
from storage.usage import flush_all

from .helpers import ADMIN
from .inprocess import TrackingExecutor, track_listeners
from .servers import Answer, ServerProcess, start_server, wsgi_request
from .slackhttp import FORM, BoltTransport, SlackReply, SlackSender, find_buttons
from .slacklimits import assert_stub_within_limits
from .slackstub import OWN_TEAM, Call, SlackStub

SIGNING_SECRET = "e2e-slack-signing-secret-7f3a"
AUDIT = "C0AUDIT"
INCIDENT = "C0INCIDENT"
SECOND_ADMIN = "UADMIN002"
BYSTANDER = "UMEMBER02"  # another member of the own workspace, never an admin
MISSING_KEY_ID = "key_" + "Z" * 17
ELLIPSIS = "\u2026"
NOISY_LOGGERS = ("sqlalchemy", "urllib3", "slack_sdk.socket_mode", "slack_bolt.App", "alembic")  # as bot.logs.configure


# ======================================================================= the running system


def server_env(stub: SlackStub, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment with Slack on and the stand-in as Slack."""
    return {
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": stub.api_url,
        "APIKEYS_AUDIT_CHANNEL": AUDIT,
        "APIKEYS_ADMINS": ADMIN,
        "WEB_CONCURRENCY": "2",
        **(extra or {}),
    }


def new_stub() -> SlackStub:
    """A started stand-in that also knows the people the tests use besides the demo users."""
    stub = SlackStub().start()
    with stub.lock:
        stub.users[SECOND_ADMIN] = {"team_id": OWN_TEAM, "name": "ann"}
        stub.users[BYSTANDER] = {"team_id": OWN_TEAM, "name": "bob"}
    return stub


@dataclass
class World:
    """The stand-in, the app and a sender pointed at it, plus a store on the same database."""

    stub: SlackStub
    sender: SlackSender
    store: Store
    database_url: str
    tmp_path: Path
    env: dict[str, str]

    def log(self) -> str:
        """What the app logged."""
        raise NotImplementedError

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None) -> Answer:
        """A request to the key API: ``(status, headers, body)``."""
        raise NotImplementedError

    def get(self, path: str) -> int:
        return self.request("GET", path)[0]

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until what runs behind the acks has finished, so that "nothing changed" is checked
        after everything that could change it (the real server: in its process, so each end-to-end
        test waits for the answer it asserts on instead)."""

    def close(self) -> None:
        pass


@dataclass
class InProcessWorld(World):
    """The Bolt app and its deliverer in this process (see the module's docstring)."""

    app: Any = None
    app_store: Store | None = None
    deliverer: Any = None
    listeners: TrackingExecutor | None = None
    key_api: Any = None
    _handler: logging.Handler | None = None
    _levels: dict[str, int] = field(default_factory=dict)
    _lines: io.StringIO = field(default_factory=io.StringIO)

    @classmethod
    def start(cls, stub: SlackStub, store: Store, database_url: str, tmp_path: Path,
              env: dict[str, str]) -> InProcessWorld:
        world = cls(stub, None, store, database_url, tmp_path, env)  # type: ignore[arg-type]
        world._capture_logs()
        try:
            # What one worker of the server builds (bot.server.create_app), from the same settings.
            settings = Settings.from_env({**env, "DATABASE_URL": database_url})
            world.app_store = open_store(settings.database_url, bootstrap_admins=settings.admins, create_schema=False,
                                         notify_channel=settings.audit_channel, pool_size=settings.threads + 2,
                                         signer=settings.audit_signer)
            client = make_client(settings)
            world.deliverer = start_delivery(world.app_store, client)
            world.app = create_app(settings, world.app_store, client=client)
            world.listeners = track_listeners(world.app)
            world.key_api = KeyApiApp(world.app_store)
            world.sender = SlackSender(BoltTransport(world.app), settings.slack_signing_secret, stub)
        except BaseException:
            world.close()
            raise
        return world

    def _capture_logs(self) -> None:
        handler = logging.StreamHandler(self._lines)
        handler.setFormatter(RedactingFormatter(FORMAT))
        handler.setLevel(logging.INFO)
        root = logging.getLogger()
        self._levels = {name: logging.getLogger(name).level for name in ("", *NOISY_LOGGERS)}
        root.addHandler(handler)
        root.setLevel(logging.INFO)  # as the server logs
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        self._handler = handler

    def log(self) -> str:
        return self._lines.getvalue()

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None) -> Answer:
        return wsgi_request(self.key_api, method, path, body, headers)

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until the handlers behind the acks have finished."""
        self.listeners.wait_idle(timeout)

    def close(self) -> None:
        """Let running handlers finish, then stop the deliverer, the listener threads and the store."""
        try:
            if self.listeners is not None:
                self.listeners.wait_idle()
        finally:
            if self.deliverer is not None:
                self.deliverer.stop()
            if self.listeners is not None:
                self.listeners.inner.shutdown(wait=True, cancel_futures=True)
            if self.app_store is not None:
                self.app_store.close()
            if self._handler is not None:
                logging.getLogger().removeHandler(self._handler)
                for name, level in self._levels.items():
                    logging.getLogger(name).setLevel(level)
                self._handler = None


@dataclass
class ServerWorld(World):
    """The real server as a process (see the module's docstring)."""

    server: ServerProcess | None = None
    servers: list[ServerProcess] = field(default_factory=list)

    @classmethod
    def start(cls, stub: SlackStub, store: Store, database_url: str, tmp_path: Path,
              env: dict[str, str]) -> ServerWorld:
        server = start_server(database_url, tmp_path, env)
        return cls(stub, SlackSender(server.url, SIGNING_SECRET, stub), store, database_url, tmp_path, env,
                   server, [server])

    def restart(self) -> None:
        """Stop the server (SIGTERM, expecting a clean exit) and start a new one on the same database."""
        assert self.server.stop() == 0, self.server.log()
        self.server = start_server(self.database_url, self.tmp_path, self.env)
        self.servers.append(self.server)
        self.sender = SlackSender(self.server.url, SIGNING_SECRET, self.stub)

    def log(self) -> str:
        return self.server.log()

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None) -> Answer:
        return self.server.request(method, path, body, headers)

    def close(self) -> None:
        for server in self.servers:
            server.stop_quietly()


class Worlds:
    """``make_world(extra_env)``: worlds on one test's database sharing one stand-in; at the end,
    everything stopped and no message the app sent (and no ack it gave) broke Slack's limits."""

    def __init__(self, kind: type[World], store: Store, database_url: str, tmp_path: Path):
        self.kind = kind
        self.store = store
        self.database_url = database_url
        self.tmp_path = tmp_path
        self.stub = new_stub()
        self.made: list[World] = []

    def __call__(self, extra_env: dict[str, str] | None = None) -> World:
        world = self.kind.start(self.stub, self.store, self.database_url, self.tmp_path,
                                server_env(self.stub, extra_env))
        self.made.append(world)
        return world

    def close(self) -> None:
        try:
            for world in self.made:
                world.close()
        finally:
            self.stub.stop()
        assert_stub_within_limits(self.stub)


# ======================================================================= seeding and inspecting


@dataclass(frozen=True)
class Seeded:
    id: str
    name: str
    owner: str
    secret: str
    created_at: datetime

    @property
    def masked(self) -> str:
        return f"apk_{ELLIPSIS}{self.secret[-4:]}"


def seed(store: Store, name: str, owner: str = "payments", **kwargs: Any) -> Seeded:
    created = store.keys.create(name=name, owner=owner, actor="seed", **kwargs)[0]
    return Seeded(created.key.id, created.key.name, created.key.owner, created.secret, created.key.created_at)


def seed_many(store: Store, name: str, count: int, owner: str = "bulk") -> list[Seeded]:
    return [Seeded(c.key.id, c.key.name, c.key.owner, c.secret, c.key.created_at)
            for c in store.keys.create(name=name, owner=owner, actor="seed", count=count)]


def code(store: Store, key: Seeded) -> str:
    answer = store.keys.verify(key.secret).code.value
    assert flush_all()  # its bookkeeping (last use, a revoked key's use) is written off the request's thread
    return answer


@dataclass(frozen=True)
class Event:
    id: int
    at: datetime
    actor: str
    action: str
    key_id: str | None
    details: dict[str, Any]


def events(store: Store, action: str | None = None, key_id: str | None = None) -> list[Event]:
    assert flush_all()  # a use after revocation is recorded by the use recorder's thread
    out = []
    for e in store.audit.oldest_first():
        if (action is None or e.action == action) and (key_id is None or e.key_id == key_id):
            out.append(Event(e.id, e.at, e.actor, e.action, e.key_id, json.loads(e.details)))
    return out


REFUSALS = ("key.revoke_denied", "command.denied")


def snapshot(store: Store) -> tuple:
    """Everything a Slack request could change: keys and their state, the audit log, the admins.
    A refusal's own record (``key.revoke_denied``, ``command.denied``) is what a refused request is
    meant to leave, so it is left out here; the tests that refuse check those entries themselves."""
    assert flush_all()
    keys = store.keys.list_keys(status="all", limit=1000).items
    return (
        [(k.id, k.revoked_at, k.revoked_by, k.revoke_reason, k.expires_at) for k in keys],
        [(e.action, e.key_id) for e in store.audit.oldest_first() if e.action not in REFUSALS],
        [(a.user_id, a.source) for a in store.admins.list()],
    )


def outbox_rows(store: Store) -> list[OutboxMessage]:
    with store.db.read() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll a database condition (the stub cannot see it) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


# ======================================================================= reading what users see


def texts(value: Any) -> list[str]:
    """Every piece of text in a payload: ``text`` fields at any depth, in order."""
    found: list[str] = []
    if isinstance(value, dict):
        for name, item in value.items():
            if name == "text" and isinstance(item, str):
                found.append(item)
            else:
                found.extend(texts(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(texts(item))
    return found


def shown(payload: Any) -> str:
    """All the text a user sees in a message (blocks and fallback), as one string."""
    return "\n".join(texts(payload))


def blocks_of(payload: Any) -> list[dict]:
    return payload["blocks"] if isinstance(payload, dict) else payload


def button_labels(payload: Any) -> list[str]:
    return [b["text"]["text"] for b in find_buttons(blocks_of(payload))]


ROW_RE = re.compile(rf"^\*(?P<name>[^*]+)\*\s+`(?P<masked>apk_{ELLIPSIS}[0-9A-Za-z]{{4}})`")


def key_rows(payload: Any) -> dict[str, dict]:
    """The key rows of a list, by key name, in display order: each has its text and its button."""
    rows: dict[str, dict] = {}
    for block in blocks_of(payload):
        if block.get("type") != "section" or not isinstance(block.get("text"), dict):
            continue
        match = ROW_RE.match(block["text"]["text"])
        if match:
            assert match["name"] not in rows, f"{match['name']} shown twice on one page"
            rows[match["name"]] = block
    return rows


def row_names(payload: Any) -> list[str]:
    return list(key_rows(payload))


def is_help(payload: Any) -> bool:
    text = shown(payload)
    return "/apikeys revoked" in text and "/apikeys history" in text and "/apikeys admins add" in text


def mentions_time(text: str, at: datetime) -> bool:
    """A moment shown either as a Slack date token (unix seconds) or as ISO/UTC text."""
    at = at.astimezone(timezone.utc)
    return any(form in text for form in (
        f"<!date^{int(at.timestamp())}^", at.strftime("%Y-%m-%dT%H:%M:%S"), at.strftime("%Y-%m-%d %H:%M")))


def select_state(card: dict, value: str) -> dict:
    """The ``state`` Slack sends with a click after the user chose ``value`` in the card's select."""
    for block in card["blocks"]:
        accessory = block.get("accessory") or {}
        if accessory.get("type") == "static_select":
            option = next(o for o in accessory["options"] if o["value"] == value)
            return {block["block_id"]: {accessory["action_id"]: {"type": "static_select",
                                                                  "selected_option": option}}}
    raise AssertionError(f"no reason select in the card: {shown(card)}")


# ======================================================================= acting like a user


def command(world: World, text: str = "", *, user: str = ADMIN, channel: str = INCIDENT, **kw: Any) -> SlackReply:
    reply = world.sender.command(text, user=user, channel=channel, **kw)
    assert reply.status == 200, reply.text
    assert reply.elapsed < 3, f"/apikeys {text} took {reply.elapsed:.2f}s (Slack gives up after 3)"
    assert reply.body["response_type"] == "ephemeral", reply.body
    return reply


def send_click(world: World, blocks: Any, label: str, *, thread: str, user: str = ADMIN, **kw: Any) -> SlackReply:
    reply = world.sender.click_button(blocks, label, response_url=thread, user=user, **kw)
    assert reply.status == 200 and reply.text == "", (reply.status, reply.text)  # acked empty
    assert reply.elapsed < 3
    return reply


def click(world: World, blocks: Any, label: str, *, thread: str, user: str = ADMIN, **kw: Any) -> dict:
    """Click the button labelled ``label`` and return what the app then posts to the message."""
    mark = world.stub.mark()
    send_click(world, blocks, label, thread=thread, user=user, **kw)
    return world.stub.wait_for_response(thread, since=mark)


def click_row(world: World, listing: dict, name: str, *, thread: str, user: str = ADMIN, **kw: Any) -> dict:
    """Click ``Revoke`` on the row of key ``name`` in a list."""
    row = key_rows(listing).get(name)
    assert row is not None, f"{name} is not in the list: {row_names(listing)}"
    return click(world, [row], "Revoke", thread=thread, user=user, **kw)


def open_confirmation(world: World, key: Seeded, *, user: str = ADMIN, channel: str = INCIDENT,
                      text: str = "") -> tuple[dict, str]:
    """``/apikeys`` then ``Revoke`` on the key's row: the confirmation card and its message thread."""
    listing = command(world, text, user=user, channel=channel)
    card = click_row(world, listing.body, key.name, thread=listing.response_url, user=user, channel=channel)
    assert card["replace_original"] is True, card
    assert find_buttons(card, "Revoke Key"), f"not a confirmation: {shown(card)}"
    return card, listing.response_url


def revoke_flow(world: World, key: Seeded, *, user: str = ADMIN, reason: str | None = "compromised",
                channel: str = INCIDENT) -> tuple[dict, dict, str]:
    """The whole admin flow: list, Revoke, choose a reason, Revoke Key. Returns (card, outcome, thread)."""
    card, thread = open_confirmation(world, key, user=user, channel=channel)
    state = select_state(card, reason) if reason else None
    outcome = click(world, card, "Revoke Key", thread=thread, user=user, channel=channel, state=state)
    return card, outcome, thread


def build_click(sender: SlackSender, blocks: Any, label: str, **kw: Any) -> bytes:
    """The exact request body a click would send (not sent), for replays and forgeries."""
    return sender.body_of("click_button", blocks, label, **kw)


def post_signed(sender: SlackSender, body: bytes) -> SlackReply:
    """POST ``body`` as-is with fresh, valid signature headers."""
    status, headers, text = sender.raw(body, {"Content-Type": FORM, **sender.signed_headers(body)})
    return SlackReply(status, headers, text, text, {}, None)


# ======================================================================= the audit channel


def is_audit_post(call: Call) -> bool:
    return (call.kind == "api" and call.method_name == "chat.postMessage" and call.ok
            and call.body.get("channel") == AUDIT)


def audit_posts(stub: SlackStub, *needles: str, since: int = 0) -> list[Call]:
    return [c for c in stub.calls[since:] if is_audit_post(c) and all(n in shown(c.body) for n in needles)]


def wait_audit_post(stub: SlackStub, *needles: str, since: int = 0, timeout: float = 5.0) -> Call:
    """Wait for a delivered audit-channel post whose text contains all ``needles``."""
    return stub.wait_for(lambda c: is_audit_post(c) and all(n in shown(c.body) for n in needles), timeout,
                         since=since, description=f"an audit post with {needles}")


def responses_since(stub: SlackStub, url: str, since: int) -> list[dict]:
    return [c.body for c in stub.calls[since:] if c.kind == "response" and c.url == url and c.ok]


def wait_responses(stub: SlackStub, url: str, count: int, *, since: int, timeout: float = 5.0) -> list[dict]:
    stub.wait_for(lambda _c: len(responses_since(stub, url, since)) >= count, timeout, since=since,
                  description=f"{count} POSTs to {url}")
    return responses_since(stub, url, since)
