"""Hostile input, generated with Hypothesis.

The app runs in-process (``bot.server.create_app``, served by ``tests/inprocess.py``) behind a
small threaded WSGI server, so that hundreds of signed requests take seconds; Slack is the local ``SlackStub``. One database per
module (SQLite under tmp, or PostgreSQL with ``TEST_DATABASE_URL``) holds one seeded key.

For every generated request: the answer is 2xx or 4xx (never 5xx) and never a traceback; no
handler fails behind the ack (Bolt answers Slack before the handler runs, so a crash there only
shows in the log: any ERROR record other than "could not reach the response_url" counts); and
nothing changes: the seeded key still verifies VALID, no ``key.revoked`` event exists and the
admins are the same. Generated requests never carry what a real revocation needs (an admin of
the own workspace, a fresh confirmation, the seeded key), so "nothing changes" is the correct
outcome for every one of them.

Every kind of request Slack sends is generated: each interaction type (block_actions,
view_submission, view_closed, shortcut, message_action, block_suggestion, interactive_message,
dialog_*, workflow_step_edit), Events API bodies (event_callback with the events whose nested
objects Bolt reads, url_verification, app_rate_limited) and slash-command forms, each field mostly
of the shape Slack sends and sometimes a string, list, number or null where an object (or a list
of objects, or a string) belongs. A body whose every field has Slack's shape must also get
through the gate: not a 400.

Inputs known to break a property are tested by explicit examples instead of being generated, so
that each problem is named once and the generated tests keep looking for new ones: payloads that
are not a JSON object, ``actions`` that is not a list of objects with a string ``action_id``,
top-level fields, ``container`` or ``state`` of the wrong type, command text of only whitespace,
history positions beyond the id column, history of a key id that does not exist, JSON nested
deeper than the parser's recursion limit, and the signed bodies of shapes Slack never sends that
Bolt cannot read (``NOT_SLACK_SHAPES``: a view that is a string or a list, an event that is not
an object, a DM in a thread without a channel, two ``payload`` fields …).
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.slack.values import KeyAction, ListView, encode
from storage import Store, open_store
from storage.keyformat import generate_secret
from storage.keys import KEY_ID_RE
from storage.models import AuditEvent

from .helpers import ADMIN, MEMBER
from .inprocess import SECRET, Errors, TrackingExecutor, serve, unexpected
from .slackhttp import FORM, SlackSender
from .slacklimits import assert_stub_within_limits
from .slackstub import OTHER_TEAM, OTHER_WORKSPACE_USER, OWN_TEAM, SlackStub
from .slackworld import AUDIT, INCIDENT, Seeded, seed, shown

# No "explain" phase: it replays a failing example hundreds of times, minutes over HTTP.
FUZZ = settings(max_examples=40, deadline=None, database=None,
                phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_MORE = settings(FUZZ, max_examples=100)  # the interaction payloads: the largest input space, ~10 ms each

OUR_ACTIONS = [
    "apikeys.revoke", "apikeys.revoke.cancel", "apikeys.revoke.confirm", "apikeys.revoke.reason",
    "apikeys.page.next", "apikeys.page.prev", "apikeys.list", "apikeys.revoke_owner.confirm",
    "apikeys.revoke_owner.cancel",
]
UNKNOWN_ACTIONS = ["apikeys.nuke_everything", "", " apikeys.revoke", "APIKEYS.REVOKE.CONFIRM",
                   "apikeys.revoke.confirm\n", "apikeys.revoke.confirm.x", "x" * 300]
NO_SUCH_OWNERS = ["nobody-team", "ghost@example.com", "a", "x" * 100, "payments2", "Payments"]
STATUSES = ["active", "revoked", "expired", "all"]
REASONS = ["compromised", "rotation", "decommissioned", "other"]


# ======================================================================= the app under fire


@dataclass
class InProcess:
    url: str
    port: int
    stub: SlackStub
    sender: SlackSender
    store: Store
    key: Seeded
    forged_secret: str  # well-formed (checksum correct) but never issued here
    executor: TrackingExecutor
    errors: Errors
    admins: list[str] = field(default_factory=list)

    # -- sending -----------------------------------------------------------------------------
    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def signed(self, body: bytes, content_type: str = FORM) -> tuple[int, dict[str, str], str]:
        return self.sender.raw(body, {"Content-Type": content_type, **self.sender.signed_headers(body)})

    def interaction(self, payload: Any) -> tuple[int, dict[str, str], str]:
        raw = payload if isinstance(payload, str) else json.dumps(payload)
        return self.signed(urlencode({"payload": raw}).encode("utf-8"))

    # -- checking ----------------------------------------------------------------------------
    def begin(self) -> None:
        """Start an example clean: nothing still running from (or logged by) the one before."""
        self.executor.wait_idle()
        self.errors.records.clear()

    def settle(self) -> list[str]:
        """Wait for the handlers behind the acks; return unexpected errors logged meanwhile."""
        self.executor.wait_idle()
        found = unexpected(self.errors.records)
        self.errors.records.clear()
        return found

    def revoked_events(self) -> int:
        with self.store.db.read() as session:
            return session.scalar(select(func.count()).select_from(AuditEvent)
                                  .where(AuditEvent.action == "key.revoked")) or 0

    def assert_nothing_changed(self) -> None:
        assert self.store.keys.verify(self.key.secret).code.value == "VALID"
        assert self.store.keys.get(self.key.id).revoked_at is None
        assert self.revoked_events() == 0
        assert sorted(a.user_id for a in self.store.admins.list()) == self.admins


@pytest.fixture(scope="module")
def app(module_database_url: str) -> Iterator[InProcess]:
    store = open_store(module_database_url, bootstrap_admins=[ADMIN])
    key = seed(store, "billing-api", owner="payments")
    stub = SlackStub().start()
    errors = Errors()
    root = logging.getLogger()
    root.addHandler(errors)
    served = serve(module_database_url, stub, SECRET)
    forged = generate_secret()
    assert store.keys.verify(forged).code.value == "NOT_FOUND"
    harness = InProcess(served.url, served.port, stub, SlackSender(served.url, SECRET, stub), store, key, forged,
                        served.executor, errors, sorted(a.user_id for a in store.admins.list()))
    try:
        yield harness
        # After everything: still nothing revoked, the audit chain intact, no secret sent to Slack.
        harness.settle()
        harness.assert_nothing_changed()
        assert store.audit.verify() is None
        assert not any(key.secret in json.dumps(c.body) for c in stub.calls)
        assert_stub_within_limits(stub)
    finally:
        root.removeHandler(errors)
        served.close()
        stub.stop()
        store.close()


def assert_not_a_server_error(status: int, text: str, what: Any) -> None:
    assert 200 <= status < 500, f"{status} for {what!r}: {text[:300]}"
    assert "Traceback" not in text, text[:300]


# ======================================================================= strategies


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each chosen in proportion to its weight."""
    return st.sampled_from([s for w, s in choices for _ in range(w)]).flatmap(lambda strategy: strategy)


LONG = st.builds(lambda chunk, n: chunk * n, st.text(min_size=1, max_size=3), st.integers(200, 6000))
MENTIONS = st.builds(lambda user, name: f"<@{user}|{name}>", st.from_regex(r"\A[UW][A-Z0-9]{2,12}\Z"),
                     st.text(max_size=12))
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
WORDS = st.sampled_from(["list", "revoked", "all", "expired", "owner", "find", "history", "admins", "add", "remove",
                         "revoke-owner", "help", "payments", "billing-api", "LIST", "Find", "key_", "apk_"])


def key_like(app: InProcess) -> st.SearchStrategy[str]:
    secret = app.key.secret
    return st.sampled_from([
        secret, secret[:-1], secret + "x", secret.upper(), "x" + secret, secret[:4] + secret[5:],
        f"apk_\u2026{secret[-4:]}", secret[-4:], app.key.id, app.forged_secret, "apk_" + "A" * 28,
        f"<{secret}>", f"`{secret}`", f"{secret},{secret}", f"https://x.example/?k={secret}",
    ])


def command_texts(app: InProcess) -> st.SearchStrategy[str]:
    token = st.one_of(WORDS, MENTIONS, key_like(app), st.text(max_size=20))
    return st.one_of(
        st.text(),
        st.lists(token, max_size=8).map(" ".join),
        st.builds(lambda verb, rest: f"{verb} {rest}", WORDS, st.one_of(key_like(app), MENTIONS, st.text())),
        LONG,
        st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"]), max_size=40),
    )


def key_ids(app: InProcess, privileged: bool) -> st.SearchStrategy[Any]:
    real = app.key.id
    forged = st.from_regex(r"\Akey_[0-9A-Za-z]{17}\Z").filter(lambda k: k != real)
    odd = ["key_", "key_x' OR '1'='1", "key_" + "A" * 16, "KEY_" + "A" * 17, "key_" + "A" * 18,
           "key_" + "A" * 17 + "\n", "key_" + "A" * 17 + "\u0000"]
    if not privileged:  # near misses of the real id (an admin's would be a fair request to revoke it)
        odd += [real + "\n", " " + real, real.upper(), real[:-1]]
    odd = st.sampled_from(odd)
    return weighted((0 if privileged else 4, st.just(real)), (2, forged), (1, odd), (1, st.text(max_size=30)),
                    (1, JSON_SCALARS))


def history_key_ids(app: InProcess) -> st.SearchStrategy[Any]:
    """The key of a history page: the real one or not an id at all. (A well-formed id of no key
    makes the handler raise after the ack: see test_an_error_in_a_click_handler_...)"""
    not_an_id = st.one_of(st.sampled_from(["key_", "key_x' OR '1'='1", " " + app.key.id, app.key.id[:-1]]),
                          st.text(max_size=30)).filter(lambda k: not KEY_ID_RE.match(k))
    return weighted((3, st.just(app.key.id)), (1, not_an_id), (1, JSON_SCALARS))


def issued_ats() -> st.SearchStrategy[Any]:
    """When a confirmation was shown: around now (computed when drawn, so that the choices
    Hypothesis makes do not depend on the clock), anything else, or not a number."""
    around_now = st.integers(-60, 60).map(lambda delta: int(time.time()) + delta)
    return st.one_of(around_now, around_now.map(float), around_now.map(str), st.integers(), JSON_SCALARS)


def cursors() -> st.SearchStrategy[Any]:
    return st.one_of(st.from_regex(r"\A\d{20}\.key_[0-9A-Za-z]{17}\Z"),
                     st.sampled_from(["99991231235959999999.key_" + "A" * 17, "00000101000000000000.key_" + "A" * 17,
                                      "20240230000000000000.key_" + "A" * 17, ".", "not-a-cursor", "x" * 81]),
                     st.text(max_size=30), JSON_SCALARS)


def list_views() -> st.SearchStrategy[Any]:
    return weighted(
        (4, st.fixed_dictionaries({}, optional={
            "s": weighted((3, st.sampled_from(STATUSES)), (1, JSON_SCALARS)),
            "o": weighted((3, st.sampled_from(["payments", *NO_SUCH_OWNERS])), (1, JSON_SCALARS)),
            "a": cursors(), "b": cursors()})),
        (1, JSON_VALUES))


def owners(privileged: bool) -> st.SearchStrategy[Any]:
    names = st.sampled_from(NO_SUCH_OWNERS if privileged else ["payments", *NO_SUCH_OWNERS])
    garbage = st.one_of(st.text(max_size=30), JSON_SCALARS).filter(
        lambda o: not privileged or not isinstance(o, str) or o.strip() != "payments")
    return st.one_of(names, garbage)


# Positions in the audit log fit the id column (32 bits on PostgreSQL) here; larger ones have
# their own test below.
POSITIONS = st.one_of(st.integers(-10, 2 ** 31 - 1), st.sampled_from([0, 1, 2 ** 31 - 1]), JSON_SCALARS.filter(
    lambda v: not isinstance(v, int) or isinstance(v, bool) or v < 2 ** 31))


def button_values(app: InProcess, privileged: bool, action_id: Any = None) -> st.SearchStrategy[Any]:
    """A button value: mostly one shaped like those the app renders for ``action_id`` (with
    forged or ill-typed fields), else any other shape, garbage, huge, or not a string at all."""
    key_action = st.fixed_dictionaries({"k": key_ids(app, privileged)}, optional={
        "t": issued_ats(), "l": list_views(), "r": weighted((3, st.sampled_from(REASONS)), (1, JSON_SCALARS)),
        "x": LONG})
    owner_action = st.fixed_dictionaries({"o": owners(privileged)}, optional={
        "u": cursors(), "n": st.one_of(st.integers(), JSON_SCALARS), "t": issued_ats()})
    page = st.fixed_dictionaries({"v": weighted((4, st.sampled_from(["l", "h"])), (1, JSON_SCALARS))}, optional={
        "s": weighted((3, st.sampled_from(STATUSES)), (1, JSON_SCALARS)), "o": owners(False), "a": cursors(),
        "b": cursors(), "k": history_key_ids(app), "i": POSITIONS, "j": POSITIONS})
    if action_id in ("apikeys.revoke", "apikeys.revoke.cancel", "apikeys.revoke.confirm"):
        matching = key_action
    elif action_id == "apikeys.revoke_owner.confirm":
        matching = owner_action
    else:
        matching = page
    other = st.one_of(key_action, owner_action, page)
    genuine = st.builds(lambda _: encode(KeyAction(key_id=app.key.id, view=ListView(), issued_at=int(time.time()))),
                        st.none())  # what a real confirmation for the seeded key carries
    return weighted(
        (6, matching.map(json.dumps)),
        (1, other.map(json.dumps)),
        (1, st.text(max_size=60)),                  # garbage
        (1, LONG),                                  # huge
        (1, JSON_VALUES.map(json.dumps)),           # JSON of the wrong shape
        (1, JSON_VALUES),                           # not even a string
        (0 if privileged else 2, genuine),
    )


def response_urls(app: InProcess) -> st.SearchStrategy[Any]:
    fresh = st.builds(lambda _: app.stub.response_url("fuzz"), st.none())
    odd = st.sampled_from(["", "not a url", "file:///etc/passwd", "ftp://127.0.0.1/x",
                           app.stub.base_url + "/response/never-issued", app.url + "/slack/events"])
    return st.sampled_from([fresh] * 4 + [odd, JSON_SCALARS]).flatmap(lambda strategy: strategy)


def users(privileged: bool) -> st.SearchStrategy[Any]:
    if privileged:  # the admin, in the own workspace
        return st.sampled_from([{"id": ADMIN, "team_id": OWN_TEAM, "name": "ada"}, {"id": ADMIN}])
    return st.one_of(
        st.sampled_from([
            {"id": MEMBER, "team_id": OWN_TEAM, "username": "max"},
            {"id": MEMBER},
            {"id": OTHER_WORKSPACE_USER, "team_id": OTHER_TEAM},
            {"id": ADMIN, "team_id": OTHER_TEAM},  # an admin's id, but from another workspace
            {"id": "UNOBODY01", "team_id": OWN_TEAM},
            {}, {"id": ""}, {"team_id": OWN_TEAM},
        ]),
        st.fixed_dictionaries({"id": st.one_of(JSON_VALUES, st.text(max_size=30))}).filter(
            lambda u: u["id"] != ADMIN),
    )


# Hypothesis favours small integers, so "present 5 times in 6" is drawn from a list.
OFTEN = st.sampled_from([True] * 5 + [False])
RARELY = st.sampled_from([False] * 5 + [True])


@st.composite
def interactions(draw, app: InProcess) -> dict[str, Any]:
    privileged = draw(st.booleans(), label="admin of the own workspace")
    payload: dict[str, Any] = {
        "type": draw(st.sampled_from(["block_actions"] * 16 + ["view_submission", "block_suggestion", "", "BLOCK_ACTIONS"])),
        "api_app_id": "A0APIKEYS",
        "token": "legacy-verification-token",
        "trigger_id": draw(st.one_of(st.builds(lambda n: f"{time.time_ns()}.{n}", st.integers(0, 10 ** 6)),
                                     JSON_SCALARS)),
    }
    user = draw(users(privileged))
    if privileged or draw(st.booleans()):  # "no user" as well
        payload["user"] = user
    if draw(OFTEN):
        payload["team"] = draw(st.sampled_from([{"id": OWN_TEAM, "domain": "own"}, {"id": OTHER_TEAM}, {}, {"id": 5}]))
    if draw(OFTEN):
        payload["channel"] = draw(st.sampled_from([{"id": INCIDENT, "name": "incident"}, {"id": AUDIT}, {}, {"id": None}]))
    # container and state are objects here (with anything inside); other types: explicit tests below.
    if draw(st.booleans()):
        payload["container"] = draw(st.one_of(
            st.fixed_dictionaries({"type": st.just("message")}, optional={
                "is_ephemeral": JSON_SCALARS, "channel_id": st.one_of(st.just(INCIDENT), JSON_SCALARS),
                "message_ts": JSON_SCALARS}),
            st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)))
    if draw(st.booleans()):
        payload["state"] = draw(st.one_of(
            st.just({"values": {"apikeys_reason": {"apikeys.revoke.reason": {
                "type": "static_select", "selected_option": {"value": draw(st.one_of(st.sampled_from(REASONS),
                                                                                      JSON_VALUES))}}}}}),
            st.fixed_dictionaries({"values": JSON_VALUES}),
            st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)))
    if draw(RARELY):
        payload["message"] = draw(JSON_VALUES)
    if draw(OFTEN):
        payload["response_url"] = draw(response_urls(app))

    def action() -> dict[str, Any]:
        item: dict[str, Any] = {
            "action_id": draw(st.sampled_from([st.sampled_from(OUR_ACTIONS)] * 4 + [
                st.sampled_from(UNKNOWN_ACTIONS), st.text(max_size=30)]).flatmap(lambda strategy: strategy)),
            "type": draw(st.sampled_from(["button", "static_select", "overflow", ""])),
        }
        if draw(OFTEN):
            item["value"] = draw(button_values(app, privileged, item["action_id"]))
        if draw(st.booleans()):
            item["block_id"] = draw(st.one_of(st.sampled_from(["b", "apikeys_confirm_actions"]), JSON_SCALARS))
        if draw(st.booleans()):
            item["action_ts"] = draw(st.one_of(st.just(f"{time.time():.6f}"), JSON_SCALARS))
        if draw(RARELY):
            item["selected_option"] = draw(JSON_VALUES)
        return item

    payload["actions"] = [action() for _ in range(draw(st.sampled_from([1, 1, 1, 2])))]
    return payload


# -- every kind of interaction, and the Events API ----------------------------------------------
# Each strategy below draws a body together with whether every field has the shape Slack sends
# (``proper``): a proper body must get through the gate (never a 400); any other may be refused,
# but never with a 5xx, and nothing may change either way.

INTERACTION_TYPES = ["block_actions", "view_submission", "view_closed", "shortcut", "message_action",
                     "block_suggestion", "interactive_message", "dialog_submission", "dialog_cancellation",
                     "dialog_suggestion", "workflow_step_edit", "", "BLOCK_ACTIONS", "view_submission "]
EVENT_TYPES = ["message", "app_mention", "reaction_added", "app_home_opened", "team_join", "function_executed",
               "assistant_thread_started", "app_uninstalled", "tokens_revoked", "member_joined_channel", ""]
# Where an object is expected: any other JSON type, including strings and lists that hold the
# names Bolt looks for ("callback_id" in a string is a substring test, not an error).
NON_OBJECTS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12),
    st.lists(JSON_SCALARS, max_size=3),
    st.sampled_from(["id", "type", "callback_id", "channel_id", ["id"], ["type"], ["callback_id"], [None], [[]]]))
NOT_A_LIST_OF_OBJECTS = st.one_of(NON_OBJECTS.filter(lambda v: not isinstance(v, list) or v),
                                  st.lists(NON_OBJECTS, min_size=1, max_size=2))
NOT_A_STRING = st.one_of(st.none(), st.booleans(), st.integers(), st.lists(st.text(max_size=5), max_size=2),
                         st.dictionaries(st.text(max_size=5), JSON_SCALARS, max_size=2))
IDS = st.sampled_from([OWN_TEAM, OTHER_TEAM, MEMBER, INCIDENT, AUDIT, "E0ENTERPRISE", "D0DIRECT", "", "x"])


class Shaper:
    """Draws fields that are mostly of the right shape, and records when one is not."""

    def __init__(self, draw):
        self.draw = draw
        self.proper = True

    def field(self, proper: st.SearchStrategy[Any], wrong: st.SearchStrategy[Any], label: str) -> Any:
        if self.draw(RARELY, label=f"{label} of the wrong shape"):
            self.proper = False
            return self.draw(wrong, label=label)
        return self.draw(proper, label=label)

    def maybe(self, body: dict[str, Any], name: str, proper: st.SearchStrategy[Any],
              wrong: st.SearchStrategy[Any] = NON_OBJECTS, often: bool = True) -> None:
        if self.draw(OFTEN if often else RARELY, label=f"has {name}"):
            body[name] = self.field(proper, wrong, name)


def _team_objects() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"id": IDS}, optional={"domain": st.text(max_size=8), "enterprise_id": IDS})


def _views() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "id": st.just("V0VIEW"), "type": st.sampled_from(["modal", "home"]),
        "callback_id": st.sampled_from(["apikeys.revoke.confirm", "apikeys.revoke", "apikeys.list", "x", ""]),
    }, optional={"team_id": IDS, "app_installed_team_id": IDS, "private_metadata": st.text(max_size=20),
                 "state": st.fixed_dictionaries({"values": JSON_VALUES}), "blocks": st.lists(JSON_VALUES, max_size=2),
                 "hash": st.text(max_size=8)})


def _authorizations() -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(st.fixed_dictionaries({}, optional={
        "enterprise_id": st.one_of(st.none(), IDS), "team_id": IDS, "user_id": IDS, "is_bot": st.booleans(),
        "is_enterprise_install": st.booleans()}), max_size=2)


def _actions(app: InProcess) -> st.SearchStrategy[list[dict[str, Any]]]:
    action = st.fixed_dictionaries({
        "action_id": st.sampled_from(OUR_ACTIONS + UNKNOWN_ACTIONS), "type": st.sampled_from(["button", "static_select"]),
    }, optional={"value": button_values(app, privileged=False), "block_id": st.sampled_from(["b", "apikeys_confirm_actions"]),
                 "action_ts": st.just(f"{time.time():.6f}")})
    return st.lists(action, min_size=1, max_size=2)


@st.composite
def any_interaction(draw, app: InProcess) -> tuple[dict[str, Any], bool]:
    """An interaction of any type (never one an admin of the own workspace sends)."""
    shaper = Shaper(draw)
    kind = draw(st.sampled_from(INTERACTION_TYPES), label="type")
    body: dict[str, Any] = {"type": kind, "api_app_id": "A0APIKEYS", "token": "legacy-verification-token",
                            "trigger_id": f"{time.time_ns()}.1"}
    shaper.maybe(body, "user", users(privileged=False).filter(lambda u: isinstance(u.get("id"), (str, type(None)))))
    shaper.maybe(body, "team", _team_objects())
    shaper.maybe(body, "channel", st.fixed_dictionaries({"id": IDS}, optional={"name": st.text(max_size=8)}))
    shaper.maybe(body, "enterprise", st.one_of(st.none(), st.fixed_dictionaries({"id": IDS, "name": st.text(max_size=8)})),
                 often=False)
    shaper.maybe(body, "authorizations", _authorizations(), NOT_A_LIST_OF_OBJECTS, often=False)
    shaper.maybe(body, "is_enterprise_install", st.booleans(), JSON_SCALARS, often=False)
    shaper.maybe(body, "response_url", response_urls(app), JSON_SCALARS, often=False)
    shaper.maybe(body, "container", st.fixed_dictionaries({"type": st.sampled_from(["message", "view"])}, optional={
        "is_ephemeral": st.booleans(), "channel_id": IDS, "message_ts": st.just("1.2"), "view_id": st.just("V0VIEW")}),
        often=False)
    shaper.maybe(body, "message", st.fixed_dictionaries({"ts": st.just("1.2"), "text": st.text(max_size=30)},
                                                       optional={"user": IDS, "bot_id": IDS}), often=False)
    callback_id = st.sampled_from(["apikeys.revoke.confirm", "apikeys.revoke", "apikeys.list", "x", ""])
    if kind in ("view_submission", "view_closed"):
        shaper.maybe(body, "view", _views())
        if kind == "view_submission":
            shaper.maybe(body, "response_urls", st.lists(st.fixed_dictionaries({
                "block_id": st.just("b"), "action_id": st.just("a"), "channel_id": IDS,
                "response_url": response_urls(app)}), max_size=1), NOT_A_LIST_OF_OBJECTS, often=False)  # see test_gate
    elif draw(RARELY, label="has a view"):
        body["view"] = shaper.field(_views(), NON_OBJECTS, "view")
    if kind in ("shortcut", "message_action", "interactive_message", "dialog_submission", "dialog_cancellation",
                "dialog_suggestion", "workflow_step_edit"):
        shaper.maybe(body, "callback_id", callback_id, NOT_A_STRING)
    if kind in ("block_actions", "interactive_message"):
        if draw(OFTEN, label="has actions"):
            body["actions"] = shaper.field(_actions(app), NOT_A_LIST_OF_OBJECTS, "actions")
        elif kind == "interactive_message" and "callback_id" in body:
            shaper.proper = False  # an attachment's click always names its action
    if kind == "block_suggestion":
        shaper.maybe(body, "action_id", st.sampled_from(OUR_ACTIONS + UNKNOWN_ACTIONS), NOT_A_STRING)
        shaper.maybe(body, "block_id", st.just("b"), NOT_A_STRING)
        body["value"] = draw(st.one_of(st.text(max_size=20), JSON_SCALARS), label="value")
    if kind == "dialog_submission":
        body["submission"] = draw(JSON_VALUES, label="submission")
    if kind == "workflow_step_edit":
        shaper.maybe(body, "workflow_step", st.fixed_dictionaries({"workflow_step_edit_id": st.just("1")}),
                     JSON_VALUES)
        if "workflow_step" not in body and "callback_id" in body:
            shaper.proper = False
    if draw(RARELY, label="has an event"):  # never in an interaction: Bolt still reads it
        body["event"] = draw(st.one_of(st.fixed_dictionaries({"type": st.sampled_from(EVENT_TYPES)}), NON_OBJECTS),
                             label="event")
        shaper.proper = False
    return body, shaper.proper


def _message_texts(app: InProcess) -> st.SearchStrategy[str]:
    """What a message says: anything but the seeded key (a leak of it would rightly be recorded)."""
    return st.one_of(st.text(max_size=40), st.sampled_from([app.forged_secret, f"a key: {app.forged_secret}",
                                                            "apk_" + "A" * 28, app.key.id])
                     ).filter(lambda text: app.key.secret not in text)


@st.composite
def events(draw, app: InProcess) -> tuple[dict[str, Any], bool]:
    """An Events API event of some type, its fields mostly of the right shape."""
    shaper = Shaper(draw)
    kind = draw(st.sampled_from(EVENT_TYPES), label="event type")
    event: dict[str, Any] = {"type": kind, "event_ts": "1.1"}
    channel = st.sampled_from([INCIDENT, AUDIT, "D0DIRECT", "G0PRIVATE"])
    user = st.sampled_from([MEMBER, OTHER_WORKSPACE_USER, "UNOBODY01", "UBOT00001"])
    if kind == "message":
        event["channel"] = shaper.field(channel, NOT_A_STRING, "channel")
        event["ts"] = "1700000000.000100"
        shaper.maybe(event, "channel_type", st.sampled_from(["channel", "im", "group", "mpim"]), NOT_A_STRING)
        shaper.maybe(event, "user", user, NON_OBJECTS.filter(lambda v: not isinstance(v, str)))
        shaper.maybe(event, "text", _message_texts(app), NOT_A_STRING)
        subtype = draw(st.sampled_from([None, None, "message_changed", "bot_message", "file_share", "message_deleted",
                                        "thread_broadcast"]), label="subtype")
        if subtype:
            event["subtype"] = subtype
        if draw(st.booleans(), label="in a thread"):
            event["thread_ts"] = "1700000000.000001"
        if subtype == "message_changed":
            edited = st.fixed_dictionaries({"ts": st.just("1700000000.000100"), "text": _message_texts(app)},
                                           optional={"user": user})
            shaper.maybe(event, "message", edited)
            shaper.maybe(event, "previous_message", edited)
        if subtype == "bot_message" or draw(RARELY, label="from a bot"):
            event["bot_id"] = draw(st.sampled_from(["B0OTHER", "B0APIKEYS"]), label="bot_id")
        shaper.maybe(event, "assistant_thread", st.fixed_dictionaries({"channel_id": channel,
                                                                       "thread_ts": st.just("1.1")}), often=False)
    elif kind == "team_join":
        shaper.maybe(event, "user", st.fixed_dictionaries({"id": user, "team_id": IDS}))
    elif kind == "reaction_added":
        shaper.maybe(event, "user", user, NON_OBJECTS.filter(lambda v: not isinstance(v, str)))
        shaper.maybe(event, "item", st.fixed_dictionaries({"type": st.just("message"), "channel": channel,
                                                           "ts": st.just("1.2")}))
    elif kind == "function_executed":
        event["function_execution_id"] = "Fx0001"
        shaper.maybe(event, "function", st.fixed_dictionaries({"callback_id": st.just("f")}))
        shaper.maybe(event, "inputs", st.dictionaries(st.text(max_size=5), JSON_SCALARS, max_size=2))
    elif kind == "assistant_thread_started":
        shaper.maybe(event, "assistant_thread", st.fixed_dictionaries({"channel_id": channel, "thread_ts": st.just("1.1"),
                                                                       "user_id": user}))
    else:
        shaper.maybe(event, "user", user, NON_OBJECTS.filter(lambda v: not isinstance(v, str)))
        shaper.maybe(event, "channel", channel, NON_OBJECTS.filter(lambda v: not isinstance(v, str)))
    return event, shaper.proper


@st.composite
def events_api_bodies(draw, app: InProcess) -> tuple[dict[str, Any], bool]:
    """An Events API body: event_callback (most of them), url_verification, app_rate_limited."""
    shaper = Shaper(draw)
    kind = draw(st.sampled_from(["event_callback"] * 6 + ["url_verification", "app_rate_limited", "", "ssl_check"]),
                label="type")
    body: dict[str, Any] = {"token": "legacy-verification-token", "type": kind}
    if kind == "url_verification":
        body["challenge"] = draw(st.one_of(st.text(max_size=40), JSON_SCALARS), label="challenge")
    elif kind == "app_rate_limited":
        body.update(team_id=OWN_TEAM, api_app_id="A0APIKEYS", minute_rate_limited=draw(st.integers(), label="minute"))
    else:
        body.update(team_id=draw(IDS, label="team_id"), api_app_id="A0APIKEYS", event_id=f"Ev{time.time_ns()}",
                    event_time=int(time.time()))
        shaper.maybe(body, "context_team_id", IDS, NOT_A_STRING, often=False)
        shaper.maybe(body, "enterprise_id", IDS, NOT_A_STRING, often=False)
        shaper.maybe(body, "is_ext_shared_channel", st.booleans(), JSON_SCALARS, often=False)
        shaper.maybe(body, "authorizations", _authorizations(), NOT_A_LIST_OF_OBJECTS)
        if kind == "event_callback" or draw(st.booleans(), label="has an event"):
            if draw(RARELY, label="event of the wrong shape"):
                shaper.proper = False
                body["event"] = draw(NON_OBJECTS, label="event")
            else:
                event, proper = draw(events(app), label="event")
                body["event"] = event
                shaper.proper = shaper.proper and proper
    if draw(RARELY, label="has stray fields"):
        for name in draw(st.lists(st.sampled_from(["user", "team", "channel", "enterprise", "view", "response_urls",
                                                   "actions", "callback_id"]), min_size=1, max_size=2, unique=True)):
            body[name] = draw(NON_OBJECTS, label=name)
            shaper.proper = False
    return body, shaper.proper


COMMAND = {"command": "/apikeys", "text": "help", "user_id": MEMBER, "team_id": OWN_TEAM, "channel_id": INCIDENT,
           "trigger_id": "1.1"}
SLASH_EXTRAS = ["event", "view", "authorizations", "response_urls", "user", "team", "channel", "enterprise", "type",
                "actions", "callback_id", "is_enterprise_install", "message", "ssl_check", "action_id", "api_app_id"]


@st.composite
def slash_command_forms(draw, app: InProcess) -> tuple[dict[str, str], bool]:
    """A slash command's form fields (always strings), sometimes with fields Slack never sends."""
    form = {"token": "legacy-verification-token", "team_id": OWN_TEAM, "team_domain": "own", "channel_id": INCIDENT,
            "channel_name": "incident", "user_id": draw(st.sampled_from([MEMBER, OTHER_WORKSPACE_USER, "UNOBODY01"])),
            "user_name": "max", "command": draw(st.sampled_from(["/apikeys", "/apikeys", "/other"]), label="command"),
            "text": draw(st.sampled_from(["", "help", "list", "revoked", "find x"]), label="text"),
            "api_app_id": "A0APIKEYS", "is_enterprise_install": "false",
            "response_url": app.stub.response_url("form"), "trigger_id": f"{time.time_ns()}.1"}
    extras = draw(st.lists(st.sampled_from(SLASH_EXTRAS), max_size=3, unique=True), label="extra fields")
    for name in extras:
        form[name] = draw(st.one_of(st.text(max_size=12), st.sampled_from(["id", "1", "{}", "[]", "callback_id"])),
                          label=name)
    return form, not extras


# ======================================================================= slash commands


def _check_command(app: InProcess, user: str, text: str) -> None:
    app.begin()
    mark = app.stub.mark()
    reply = app.sender.command(text, user=user, team=OTHER_TEAM if user == OTHER_WORKSPACE_USER else OWN_TEAM)
    assert_not_a_server_error(reply.status, reply.text, text)
    assert reply.status == 200, (reply.status, reply.text[:300])
    assert reply.elapsed < 3, f"{reply.elapsed:.2f}s for {text[:80]!r}"
    assert isinstance(reply.body, dict) and reply.body.get("response_type") == "ephemeral", reply.text[:300]
    assert shown(reply.body).strip(), "an empty answer"
    assert app.key.secret not in reply.text, f"the key was echoed for {text[:120]!r}"
    assert app.settle() == [], text
    assert not any(app.key.secret in json.dumps(c.body) for c in app.stub.calls[mark:])
    app.assert_nothing_changed()


def test_a_pasted_key_in_any_command_is_never_echoed(app: InProcess):
    secret = app.key.secret
    cases = [(MEMBER, f"find {secret}"), (ADMIN, f"find {secret}"), (MEMBER, secret),
             (ADMIN, f"owner {secret}"), (ADMIN, f"history {secret}"), (ADMIN, f"revoke-owner {secret}"),
             (MEMBER, f"admins add <@{MEMBER}|{secret}>"), (ADMIN, "x" * 60 + secret), (ADMIN, "x" * 70 + secret),
             (ADMIN, "find " + "\u0000" * 3 + secret + "\u202e"), (MEMBER, "\n".join([secret] * 20)),
             (ADMIN, f"{secret[:-6]} {secret}"), (ADMIN, f"find apk_{secret}")]
    for user, text in cases:
        _check_command(app, user, text)


def test_command_text_of_only_whitespace_is_like_no_text(app: InProcess):
    """``/apikeys`` followed by a non-breaking space (Option-Space on a Mac) and the like: the
    text strips to nothing, so the answer is the list, as for ``/apikeys`` alone."""
    answers = {}
    for text in (" ", "\t", "\u00a0", "\u3000", "\u2028", "\x1c", "\x85", " \u00a0 \t"):
        app.begin()
        reply = app.sender.command(text, user=MEMBER)
        problems = app.settle()
        ok = (reply.status == 200 and isinstance(reply.body, dict) and reply.body.get("response_type") == "ephemeral"
              and "Active API keys" in shown(reply.body) and not problems)
        if not ok:
            answers[text] = (reply.status, reply.text[:60], problems)
        app.assert_nothing_changed()
    assert answers == {}


@FUZZ
@given(data=st.data())
def test_slash_command_text_never_fails_or_echoes_a_key(app: InProcess, data):
    user = data.draw(st.sampled_from([MEMBER, OTHER_WORKSPACE_USER, "UNOBODY01", ADMIN]), label="user")
    text = data.draw(command_texts(app), label="text")
    words = text.strip().split()
    # An admin's "admins add/remove" would rightly change the admins; everything else must not.
    assume(not (user == ADMIN and words and words[0].lower() == "admins" and len(words) > 1))
    # Text of whitespace only has its own test (above).
    assume(not (text and not words))
    _check_command(app, user, text)


# ======================================================================= interactions


@FUZZ_MORE
@given(data=st.data())
def test_interaction_payloads_never_fail_and_change_nothing(app: InProcess, data):
    payload = data.draw(interactions(app), label="payload")
    app.begin()
    started = time.monotonic()
    status, _, text = app.interaction(payload)
    elapsed = time.monotonic() - started
    assert_not_a_server_error(status, text, payload)
    if payload["type"] == "block_actions":
        assert status == 200 and text == "", (status, text[:300])  # acknowledged at once, empty
    else:
        assert status in (200, 404), (status, text[:300])
    problems = app.settle()
    assert problems == [], f"a handler failed behind the ack: {problems}"
    assert elapsed < 2.5, f"the ack took {elapsed:.2f}s (Slack gives up after 3)"
    app.assert_nothing_changed()


def _check_refused_or_answered(app: InProcess, status: int, text: str, sent: Any, proper: bool) -> None:
    assert_not_a_server_error(status, text, sent)
    assert status in (200, 400, 404), (status, text[:300])
    if status == 400:
        assert isinstance(json.loads(text).get("error"), str), text[:300]
        assert not proper, f"a body of the shape Slack sends was refused: {text[:200]}"
    problems = app.settle()
    assert problems == [], f"a handler failed behind the ack: {problems}"
    app.assert_nothing_changed()


@FUZZ_MORE
@given(data=st.data())
@example(data=({"type": "view_submission", "view": "x", "user": {"id": MEMBER, "team_id": OWN_TEAM}}, False))
@example(data=({"type": "view_closed", "view": [1], "user": {"id": MEMBER, "team_id": OWN_TEAM}}, False))
def test_every_kind_of_interaction_never_fails_and_changes_nothing(app: InProcess, data):
    payload, proper = data if isinstance(data, tuple) else data.draw(any_interaction(app), label="payload")
    app.begin()
    status, _, text = app.interaction(payload)
    _check_refused_or_answered(app, status, text, payload, proper)


@FUZZ_MORE
@given(data=st.data())
@example(data=({"type": "event_callback", "event": "type"}, False))
@example(data=({"type": "event_callback", "event": {"type": "message", "channel_type": "im", "thread_ts": "1.2"},
                "channel_id": INCIDENT}, False))
def test_events_api_bodies_never_fail_and_change_nothing(app: InProcess, data):
    body, proper = data if isinstance(data, tuple) else data.draw(events_api_bodies(app), label="body")
    app.begin()
    status, _, text = app.signed(json.dumps(body).encode(), "application/json")
    _check_refused_or_answered(app, status, text, body, proper)
    if proper and body["type"] == "url_verification":
        assert (status, json.loads(text)) == (200, {"challenge": body["challenge"]})


@FUZZ
@given(data=st.data())
@example(data=({**COMMAND, "event": "x"}, False))
@example(data=({**COMMAND, "command": "/other", "view": "x"}, False))
def test_slash_command_forms_with_any_fields_never_fail_and_change_nothing(app: InProcess, data):
    form, proper = data if isinstance(data, tuple) else data.draw(slash_command_forms(app), label="form")
    app.begin()
    status, _, text = app.signed(urlencode(form).encode())
    _check_refused_or_answered(app, status, text, form, proper)
    if proper and form["command"] == "/apikeys":
        assert status == 200 and json.loads(text).get("response_type") == "ephemeral", (status, text[:300])


def _payload(app: InProcess, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "block_actions", "user": {"id": MEMBER, "team_id": OWN_TEAM}, "api_app_id": "A0APIKEYS",
        "team": {"id": OWN_TEAM, "domain": "own"}, "channel": {"id": INCIDENT, "name": "incident"},
        "container": {"type": "message", "is_ephemeral": True, "channel_id": INCIDENT},
        "trigger_id": f"{time.time_ns()}.1", "response_url": app.stub.response_url("shape"),
        "actions": [{"action_id": "apikeys.list", "type": "button", "value": "{}", "action_ts": f"{time.time():.6f}"}],
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not ...}


def _server_errors(app: InProcess, cases: dict[str, Any], send) -> dict[str, str]:
    """Send every case; return those answered with a 5xx (or a traceback), as what -> answer."""
    failed = {}
    for what, case in cases.items():
        app.begin()
        status, _, text = send(case)
        app.settle()
        if status >= 500 or "Traceback" in text:
            failed[what] = f"{status} {text[:80]}"
        app.assert_nothing_changed()
    return failed


# Each of these is signed correctly; Slack never sends them, but the signing secret is no proof
# that a body is well-formed. "No actions at all" is unhandled (404 is fine).
MALFORMED_ACTIONS = {
    "no actions at all": {"actions": ...},
    "actions empty": {"actions": []},
    "actions a string": {"actions": "apikeys.revoke.confirm"},
    "actions an object": {"actions": {"action_id": "apikeys.revoke.confirm"}},
    "action not an object": {"actions": [1]},
    "action without action_id": {"actions": [{"value": "x", "type": "button"}]},
    "action_id a number": {"actions": [{"action_id": 5, "type": "button"}]},
}
WRONG_FIELD_TYPES = {
    "user a number": {"user": 5},
    "team a list": {"team": ["id"]},
    "channel a boolean": {"channel": True},
    "enterprise a number": {"enterprise": 5},
    "authorizations a string": {"authorizations": "x"},
    "event null": {"event": None},
}
NOT_AN_OBJECT = {"not json": "{not json", "a list": "[1, 2]", "a string": '"a string"', "null": "null",
                 "empty": "", "latin-1 text": "\u00ff"}


def test_signed_interaction_with_malformed_actions_gets_no_server_error(app: InProcess):
    failed = _server_errors(app, MALFORMED_ACTIONS, lambda overrides: app.interaction(_payload(app, **overrides)))
    assert failed == {}


def test_signed_interaction_with_fields_of_the_wrong_type_gets_no_server_error(app: InProcess):
    failed = _server_errors(app, WRONG_FIELD_TYPES, lambda overrides: app.interaction(_payload(app, **overrides)))
    assert failed == {}


def test_signed_payload_that_is_not_a_json_object_gets_no_server_error(app: InProcess):
    failed = _server_errors(app, NOT_AN_OBJECT, app.interaction)
    assert failed == {}


# Signed bodies of shapes that Slack never sends and that Bolt cannot read (found in its source:
# request/internals.py builds the context, payload_utils.py and the listener matchers pick the
# listener, logger/messages.py describes an unhandled request, the ignoring-self-events and
# assistant middlewares read the event). Most got a 500 before the gate refused them (or made a
# handler fail behind the ack); the others Bolt only got through because no listener of that kind
# is registered (a view or shortcut listener with a pattern fails on a callback_id that is not a
# string) or because the listener that matched never looks (a view that is a string in a click).
def _click(**overrides: Any) -> dict[str, Any]:
    base = {"user": {"id": MEMBER, "team_id": OWN_TEAM}, "team": {"id": OWN_TEAM}, "api_app_id": "A0APIKEYS",
            "trigger_id": "1.1"}
    return {**base, **overrides}


def _envelope(event: Any = ..., **overrides: Any) -> dict[str, Any]:
    body = {"type": "event_callback", "team_id": OWN_TEAM, "api_app_id": "A0APIKEYS", "event_id": "Ev1",
            "event_time": 1, **overrides}
    if event is not ...:
        body["event"] = event
    return body


LISTED_VIEW = {"id": "V1", "type": "modal", "callback_id": "x"}
NOT_SLACK_SHAPES: dict[str, tuple[str, Any]] = {
    # interactions: payload=<json>
    "view_submission whose view is a string": ("payload", _click(type="view_submission", view="x")),
    "view_submission whose view is the string callback_id": ("payload", _click(type="view_submission",
                                                                             view="callback_id")),
    "view_closed whose view is a list": ("payload", _click(type="view_closed", view=[1])),
    "view_closed whose view is null": ("payload", _click(type="view_closed", view=None)),
    "view_submission whose view is a number": ("payload", _click(type="view_submission", view=5)),
    "a click in a view that is a string": ("payload", _click(type="block_actions", view="home", actions=[
        {"action_id": "apikeys.list", "type": "button", "value": "{}"}])),
    "view_submission whose view has no type": ("payload", _click(type="view_submission", view={"callback_id": "x"})),
    "a workflow step's view_submission without workflow_step": ("payload", _click(
        type="view_submission", view={"callback_id": "x", "type": "workflow_step"})),
    "view_submission whose response_urls is a string": ("payload", _click(type="view_submission", view=LISTED_VIEW,
                                                                         response_urls="x")),
    "view_submission whose response_urls are numbers": ("payload", _click(type="view_submission", view=LISTED_VIEW,
                                                                         response_urls=[1])),
    "view_submission whose callback_id is a number": ("payload", _click(type="view_submission",
                                                                       view={**LISTED_VIEW, "callback_id": 5})),
    "workflow_step_edit without workflow_step": ("payload", _click(type="workflow_step_edit", callback_id="x")),
    "workflow_step_edit whose callback_id is a number": ("payload", _click(type="workflow_step_edit", callback_id=5,
                                                                          workflow_step={})),
    "interactive_message without actions": ("payload", _click(type="interactive_message", callback_id="x")),
    "interactive_message with no action": ("payload", _click(type="interactive_message", callback_id="x",
                                                            actions=[])),
    "interactive_message whose callback_id is a number": ("payload", _click(type="interactive_message", callback_id=5,
                                                                           actions=[{"name": "a"}])),
    "dialog_submission whose callback_id is a list": ("payload", _click(type="dialog_submission", callback_id=["x"],
                                                                       submission={})),
    "dialog_cancellation whose callback_id is an object": ("payload", _click(type="dialog_cancellation",
                                                                            callback_id={"a": 1})),
    "block_suggestion whose action_id is a number": ("payload", _click(type="block_suggestion", action_id=5,
                                                                      block_id="b", value="x")),
    "block_suggestion whose action_id is a list": ("payload", _click(type="block_suggestion", action_id=["a"],
                                                                    value="x")),
    "block_actions whose actions is null": ("payload", _click(type="block_actions", actions=None)),
    "shortcut whose callback_id is an object": ("payload", _click(type="shortcut", callback_id={"x": 1})),
    "message_action whose channel is a list holding id": ("payload", _click(type="message_action", callback_id="x",
                                                                           channel=["id"])),
    "a click whose authorizations are numbers": ("payload", _click(type="block_actions", authorizations=[1], actions=[
        {"action_id": "apikeys.list", "type": "button", "value": "{}"}])),
    "a click whose authorization holds authorizations": ("payload", _click(type="shortcut", callback_id="x",
                                                                          authorizations=[{"authorizations": 5}])),
    # Events API: a JSON body
    "event_callback whose event is a string": ("json", _envelope("type")),
    "event_callback whose event is a list": ("json", _envelope(["type"])),
    "event_callback whose event is null": ("json", _envelope(None)),
    "url_verification with an event that is null": ("json", {"type": "url_verification", "challenge": "c",
                                                             "event": None}),
    "app_rate_limited with an event that is a number": ("json", {"type": "app_rate_limited", "team_id": OWN_TEAM,
                                                                 "minute_rate_limited": 1, "event": 5}),
    "event_callback whose authorizations are strings": ("json", _envelope({"type": "app_mention"},
                                                                          authorizations=["x"])),
    "event_callback whose authorizations is an object": ("json", _envelope({"type": "app_mention"},
                                                                           authorizations={"team_id": OWN_TEAM})),
    "event_callback whose authorization's team is a number": ("json", {
        "type": "event_callback", "authorizations": [{"team": 5}], "event": {"type": "app_mention"}}),
    "a DM in a thread without channel": ("json", _envelope({"type": "message", "channel_type": "im",
                                                            "thread_ts": "1.2", "ts": "1.3"}, channel_id=INCIDENT)),
    "a message whose channel is an object": ("json", _envelope({"type": "message", "channel": {"id": INCIDENT},
                                                                "ts": "1.3", "text": "hi"})),
    "a message whose assistant_thread is a string": ("json", _envelope({
        "type": "message", "channel": "D1", "channel_type": "im", "thread_ts": "1.2", "assistant_thread": "x"})),
    "function_executed whose function is null": ("json", _envelope({"type": "function_executed",
                                                                    "function_execution_id": "Fx1", "function": None})),
    "an event whose user is a number": ("json", _envelope({"type": "app_mention", "user": 5})),
    "an event whose channel is a list holding id": ("json", _envelope({"type": "app_mention", "channel": ["id"]})),
    "an edit whose message's user is a number": ("json", _envelope({
        "type": "message", "subtype": "message_changed", "channel": INCIDENT, "message": {"user": 5}})),
    "a reaction whose item's channel is a number": ("json", _envelope({"type": "reaction_added", "item": {"channel": 5}})),
    "event_callback whose view is a string": ("json", _envelope({"type": "app_home_opened", "user": MEMBER},
                                                                view="x")),
    "a slash command sent as JSON whose text is a number": ("json", {**COMMAND, "text": 5}),
    "a slash command sent as JSON whose user_id is a list": ("json", {**COMMAND, "user_id": [MEMBER]}),
    # slash-command forms: field=value&...
    "a slash command with an event field": ("form", {**COMMAND, "event": "x"}),
    "an unknown slash command with a view field": ("form", {**COMMAND, "command": "/other", "view": "x"}),
    "a slash command with an authorizations field": ("form", {**COMMAND, "authorizations": "x"}),
    "a slash command with a response_urls field": ("form", {**COMMAND, "response_urls": "x"}),
    # what the gate and Bolt would read differently
    "two payload fields, the last one malformed": ("raw", urlencode([
        ("payload", json.dumps(_click(type="shortcut", callback_id="x"))),
        ("payload", json.dumps(_click(type="view_submission", view="x")))])),
    "JSON sent as a form": ("raw", json.dumps(_click(type="view_submission", view="x"))),
}


def _send_shape(app: InProcess, kind: str, body: Any) -> tuple[int, dict[str, str], str]:
    if kind == "payload":
        return app.interaction(body)
    if kind == "json":
        return app.signed(json.dumps(body).encode(), "application/json")
    if kind == "form":
        return app.signed(urlencode(body).encode())
    return app.signed(body.encode())  # raw, as a form


def test_signed_bodies_not_shaped_like_slack_requests_get_400_and_change_nothing(app: InProcess):
    wrong = {}
    for what, (kind, body) in NOT_SLACK_SHAPES.items():
        app.begin()
        status, headers, text = _send_shape(app, kind, body)
        problems = app.settle()
        try:
            error = json.loads(text).get("error") if status == 400 else None
        except ValueError:
            error = None
        if status != 400 or not isinstance(error, str) or problems:
            wrong[what] = f"{status} {text[:60]!r} {problems[:1]}"
        app.assert_nothing_changed()
    assert wrong == {}


UNSIGNED_BODIES = {
    "payload not json": (urlencode({"payload": "{not json"}).encode(), FORM),
    "payload a list": (urlencode({"payload": "[1]"}).encode(), FORM),
    "payload bad percent-encoding": (b"payload=%ff%fe", FORM),
    "json body not json": (b"{not json", "application/json"),
    "json body a list": (b"[1]", "application/json"),
    "a click with empty actions": (urlencode({"payload": json.dumps({"type": "block_actions", "actions": []})}).encode(),
                                   FORM),
    "a slash command": (urlencode({"command": "/apikeys", "text": "admins add <@UEVIL0001>", "user_id": ADMIN,
                                   "team_id": OWN_TEAM}).encode(), FORM),
}


def test_unsigned_or_wrongly_signed_garbage_is_refused_with_401(app: InProcess):
    """The contract: only correctly signed requests are processed; anything else gets 401."""
    answers = {}
    for what, (body, content_type) in UNSIGNED_BODIES.items():
        for how, headers in (("unsigned", {"Content-Type": content_type}),
                             ("wrongly signed", {"Content-Type": content_type,
                                                 **app.sender.signed_headers(body, secret="not-the-secret")})):
            status, _, text = app.sender.raw(body, headers)
            answers[f"{what}, {how}"] = status
    app.settle()
    assert {what: status for what, status in answers.items() if status != 401} == {}
    app.assert_nothing_changed()


def test_a_container_of_the_wrong_type_is_ignored(app: InProcess):
    """Nothing needs ``container`` (it only says whether the message was ephemeral): a "Revoke"
    click whose container is not an object opens the confirmation like any other."""
    for container in ([None], "message", 5):
        app.begin()
        thread = app.stub.response_url("container")
        value = encode(KeyAction(key_id=app.key.id, view=ListView()))
        admin = {"id": ADMIN, "team_id": OWN_TEAM}  # a member is refused at once, whatever the container
        payload = _payload(app, response_url=thread, container=container, user=admin, actions=[{
            "action_id": "apikeys.revoke", "type": "button", "value": value, "action_ts": f"{time.time():.6f}"}])
        started = time.monotonic()
        status, _, text = app.interaction(payload)
        elapsed = time.monotonic() - started
        problems = app.settle()
        answer = app.stub.last_response(thread)
        assert answer is not None and f"Revoke {app.key.name}?" in shown(answer), (container, answer and shown(answer))
        assert problems == [], (container, problems)
        assert (status, text) == (200, "") and elapsed < 1.5, (status, text, elapsed)
    app.assert_nothing_changed()


def test_an_error_in_a_click_handler_answers_once_and_in_time(app: InProcess):
    """A handler that fails after acknowledging (here: the history of a key id that does not
    exist, so the handler's lookup raises) must still have acknowledged at once, and the user
    must get one answer saying what went wrong, not also "This button is out of date" from the
    catch-all handler for unknown buttons."""
    missing = "key_" + "Z" * 17
    outcomes = []
    for _ in range(3):  # the ack races the failure: repeat so that the failure wins at least once
        app.begin()
        thread = app.stub.response_url("history-missing")
        payload = _payload(app, response_url=thread, actions=[{
            "action_id": "apikeys.page.next", "type": "button", "value": json.dumps({"v": "h", "k": missing}),
            "action_ts": f"{time.time():.6f}"}])
        started = time.monotonic()
        status, _, text = app.interaction(payload)
        elapsed = time.monotonic() - started
        app.settle()
        answers = [shown(a).split("\n")[0] for a in app.stub.responses_to(thread)]
        outcomes.append((status, round(elapsed, 1), answers))
    assert all(status == 200 and elapsed < 1.5 and len(answers) == 1 and "out of date" not in answers[0]
               for status, elapsed, answers in outcomes), outcomes
    app.assert_nothing_changed()


def test_history_page_with_an_out_of_range_position_falls_back_instead_of_failing(app: InProcess):
    for position in ({"i": 2 ** 31}, {"j": 2 ** 32}, {"i": 2 ** 63}, {"j": 2 ** 64}, {"i": 10 ** 30}):
        app.begin()
        thread = app.stub.response_url("history")
        payload = _payload(app, response_url=thread, actions=[{
            "action_id": "apikeys.page.next", "type": "button", "value": json.dumps({"v": "h", **position}),
            "action_ts": f"{time.time():.6f}"}])
        status, _, text = app.interaction(payload)
        assert (status, text) == (200, "")
        problems = app.settle()
        answer = app.stub.last_response(thread)
        assert answer is not None and "Something went wrong" not in shown(answer), (position, answer)
        assert problems == [], (position, problems)
    app.assert_nothing_changed()


def test_a_malformed_state_does_not_abort_an_admin_revocation(database_url: str):
    """``state`` only carries the optional reason: a confirmation whose state is not an object
    revokes without a reason (an unknown reason is ignored, the revocation matters more).
    On a database of its own: this one does revoke."""
    store = open_store(database_url, bootstrap_admins=[ADMIN])
    stub = SlackStub().start()
    errors = Errors()
    logging.getLogger().addHandler(errors)
    served = serve(database_url, stub, SECRET)
    executor = served.executor
    try:
        sender = SlackSender(served.url, SECRET, stub)
        for state in ("garbage", [1], 5):
            key = seed(store, f"key-{type(state).__name__}")
            thread = stub.response_url("state")
            value = encode(KeyAction(key_id=key.id, view=ListView(), issued_at=int(time.time())))
            payload = {"type": "block_actions", "user": {"id": ADMIN, "team_id": OWN_TEAM},
                       "team": {"id": OWN_TEAM}, "channel": {"id": INCIDENT}, "trigger_id": f"{time.time_ns()}.1",
                       "response_url": thread, "state": state,
                       "actions": [{"action_id": "apikeys.revoke.confirm", "type": "button", "value": value,
                                    "action_ts": f"{time.time():.6f}"}]}
            body = urlencode({"payload": json.dumps(payload)}).encode()
            status, _, text = sender.raw(body, {"Content-Type": FORM, **sender.signed_headers(body)})
            assert (status, text) == (200, "")
            executor.wait_idle()
            answer = stub.last_response(thread)
            assert answer is not None and ":white_check_mark:" in shown(answer), (state, answer and shown(answer))
            assert store.keys.verify(key.secret).code.value == "REVOKED"
        assert unexpected(errors.records) == []
    finally:
        logging.getLogger().removeHandler(errors)
        served.close()
        stub.stop()
        store.close()


# ======================================================================= the key API


@FUZZ
@given(body=st.binary(max_size=4096), content_type=st.sampled_from(["application/json", "text/plain", "", FORM]))
@example(body=b'{"key": "apk_x"}', content_type="application/json")
@example(body=b"\xff\xfe{}", content_type="application/json")
@example(body=b'{"key": "\\ud800"}', content_type="application/json")
def test_verify_with_arbitrary_bytes(app: InProcess, body: bytes, content_type: str):
    headers = {"Content-Type": content_type} if content_type else {}
    status, out_headers, text = app.post("/v1/keys/verify", body, headers)
    assert_not_a_server_error(status, text, body)
    try:
        parsed = json.loads(body.decode("utf-8"))
        well_formed = isinstance(parsed, dict) and isinstance(parsed.get("key"), str)
    except (UnicodeDecodeError, ValueError):
        well_formed = False
    assert status == (200 if well_formed else 400), (status, text)
    assert out_headers.get("content-type", "").startswith("application/json")
    answer = json.loads(text)
    assert ("code" in answer) if status == 200 else ("error" in answer)
    app.assert_nothing_changed()


@FUZZ
@given(data=st.data())
def test_verify_with_arbitrary_json(app: InProcess, data):
    value = data.draw(st.one_of(
        JSON_VALUES,
        st.fixed_dictionaries({"key": st.one_of(key_like(app), st.text(), JSON_VALUES)},
                              optional={"other": JSON_VALUES, "Key": key_like(app)}),
    ), label="body")
    status, _, text = app.post("/v1/keys/verify", json.dumps(value).encode(), {"Content-Type": "application/json"})
    assert_not_a_server_error(status, text, value)
    answer = json.loads(text)
    if isinstance(value, dict) and isinstance(value.get("key"), str):
        assert status == 200, (status, answer)
        assert answer["code"] in {"VALID", "REVOKED", "EXPIRED", "NOT_FOUND", "MALFORMED"}
        assert answer["valid"] is (answer["code"] == "VALID")
        if value["key"] == app.key.secret:
            assert (answer["code"], answer["key_id"], answer["owner"]) == ("VALID", app.key.id, app.key.owner)
        else:
            assert answer["code"] in {"NOT_FOUND", "MALFORMED"} and "key_id" not in answer, answer
        if value["key"] == app.forged_secret:
            assert answer["code"] == "NOT_FOUND"
    else:
        assert status == 400 and "error" in answer, (status, answer)
    assert app.key.secret not in text
    app.assert_nothing_changed()


def test_verify_body_limits(app: InProcess):
    big = json.dumps({"key": app.key.secret, "pad": "x" * 70_000}).encode()
    status, _, text = app.post("/v1/keys/verify", big, {"Content-Type": "application/json"})
    assert status == 413 and "error" in json.loads(text)
    status, _, text = app.post("/v1/keys/verify", b"x" * 1000, {"Content-Length": "12abc"})
    assert status == 400 and "error" in json.loads(text)
    # A digit that is not ASCII ("²".isdigit() is true, int("²") raises); gunicorn refuses it itself.
    status, _, text = app.post("/v1/keys/verify", b"x" * 10, {"Content-Length": "\u00b2"})
    assert status == 400 and "error" in json.loads(text)
    app.assert_nothing_changed()


def test_verify_with_deeply_nested_json_is_a_400(app: InProcess):
    """JSON nested deeper than the parser's recursion limit, well within the 64 KB body limit,
    is "a body that is not JSON with a string key": 400 with a JSON error, like any other."""
    answers = {}
    for what, nested in {"arrays": b"[" * 30_000 + b"]" * 30_000,
                         "in the key": b'{"key": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
                         "objects": b'{"a":' * 10_000 + b"1" + b"}" * 10_000}.items():
        assert len(nested) <= 64 * 1024
        status, _, text = app.post("/v1/keys/verify", nested, {"Content-Type": "application/json"})
        if status != 400 or "error" not in json.loads(text):
            answers[what] = f"{status} {text[:80]}"
    assert answers == {}
    app.assert_nothing_changed()


HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0xFF, exclude_characters="\r\n"),
                      max_size=120)


@FUZZ
@given(data=st.data())
def test_auth_with_arbitrary_header_values(app: InProcess, data):
    secret = app.key.secret
    value = st.one_of(HEADER_TEXT, key_like(app),
                      st.builds(lambda scheme, key: f"{scheme} {key}",
                                st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", ""]),
                                st.one_of(key_like(app), HEADER_TEXT))
                      ).filter(lambda v: max(map(ord, v), default=0) <= 0xFF)  # HTTP header values are latin-1
    headers = data.draw(st.dictionaries(st.sampled_from(["Authorization", "X-API-Key"]), value, max_size=2),
                        label="headers")
    status, out, text = app.get("/v1/auth", headers)
    assert status in (204, 401), (status, text[:300])
    assert "Traceback" not in text
    exact = headers.get("Authorization") == f"Bearer {secret}" or (
        "Authorization" not in headers and headers.get("X-API-Key") == secret)
    if status == 204:
        assert any(secret in v for v in headers.values()), headers
        assert (out.get("x-key-id"), out.get("x-key-owner")) == (app.key.id, app.key.owner)
        assert text == ""
    else:
        assert not exact, f"the valid key was refused: {headers!r} -> {text}"
        assert out.get("www-authenticate", "").startswith("Bearer")
        assert json.loads(text)["code"] in {"MALFORMED", "NOT_FOUND", "REVOKED", "EXPIRED"}
        assert "x-key-id" not in out
    assert secret not in text
    app.assert_nothing_changed()


# ======================================================================= after all that


def test_after_all_the_fuzzing_nothing_changed(app: InProcess):
    app.settle()
    app.assert_nothing_changed()
    events = app.store.audit.oldest_first()
    assert [e.action for e in events if e.action == "key.revoked"] == []
    # Refused clicks and commands are recorded (a fuzzed non-admin or foreign user is refused): nothing else.
    assert {e.action for e in events} <= {"key.created", "key.revoke_denied", "command.denied"}, {e.action for e in events}
    assert app.store.audit.verify() is None
    assert not any(app.key.secret in json.dumps(c.body) for c in app.stub.calls)
