"""Replays and workspaces, in-process: the real WSGI app of one worker behind a local server,
Slack's Web API and response_urls served by the stand-in, requests signed exactly as Slack signs
them (one behaviour per test, like Bolt's own scenario tests)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from bot.slack.values import KeyAction, ListView, encode
from storage import Store, open_store

from .helpers import ADMIN, MEMBER
from .inprocess import SECRET, serve
from .slackhttp import FORM, SlackSender
from .slacklimits import assert_stub_within_limits
from .slackstub import OWN_TEAM, SlackStub


class Harness:
    def __init__(self, database_url: str):
        self.store: Store = open_store(database_url, bootstrap_admins=[ADMIN])
        self.stub = SlackStub().start()
        self.served = serve(database_url, self.stub, SECRET)
        self.executor = self.served.executor
        self.url = self.served.url
        self.sender = SlackSender(self.url, SECRET, self.stub)

    def close(self) -> None:
        assert_stub_within_limits(self.stub)
        self.served.close()
        self.stub.stop()
        self.store.close()

    def send(self, body: bytes) -> tuple[int, dict[str, Any] | str]:
        status, _, text = self.sender.raw(body, {"Content-Type": FORM, **self.sender.signed_headers(body)})
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def denials(self, action: str) -> list[dict]:
        return [json.loads(e.details) for e in self.store.audit.oldest_first() if e.action == action]


@pytest.fixture
def harness(database_url: str) -> Iterator[Harness]:
    h = Harness(database_url)
    yield h
    h.close()


def shown(answer: Any) -> str:
    return json.dumps(answer, ensure_ascii=False)


def command_body(text: str, *, user: str = ADMIN, trigger_id: str | None = "1111.2222.abcdef",
                 response_url: str) -> bytes:
    fields = {"team_id": OWN_TEAM, "channel_id": "C0INCIDENT", "user_id": user, "user_name": "ada", "command": "/apikeys",
              "text": text, "api_app_id": "A0APIKEYS", "response_url": response_url, "trigger_id": trigger_id}
    return urllib.parse.urlencode({name: value for name, value in fields.items() if value is not None}).encode()


# ======================================================================= replayed slash commands


@pytest.mark.parametrize("verb", ["add", "remove"])
def test_a_replayed_admins_command_is_refused_and_recorded(harness: Harness, verb: str):
    if verb == "remove":
        harness.store.admins.add(MEMBER, actor=ADMIN)
    captured = command_body(f"admins {verb} <@{MEMBER}|max>", response_url=harness.stub.response_url("cmd"))
    status, first = harness.send(captured)
    assert status == 200 and ("now an admin" if verb == "add" else "no longer an admin") in shown(first)
    # Someone undoes it the ordinary way, then the captured request is sent again within 5 minutes.
    if verb == "add":
        harness.store.admins.remove(MEMBER, actor=ADMIN)
    else:
        harness.store.admins.add(MEMBER, actor=ADMIN)
    admins_before = [a.user_id for a in harness.store.admins.list()]
    status, replay = harness.send(captured)
    assert status == 200 and "already processed" in shown(replay) and "Nothing changed" in shown(replay)
    assert [a.user_id for a in harness.store.admins.list()] == admins_before
    (denial,) = harness.denials("command.denied")
    assert denial["command"] == f"admins {verb}" and denial["user_id"] == MEMBER and "replayed" in denial["why"]


def test_an_admins_command_without_a_trigger_id_is_refused_and_recorded(harness: Harness):
    """Without a trigger_id a replay could not be told from a fresh request: the command is refused."""
    status, answer = harness.send(command_body(f"admins add <@{MEMBER}|max>", trigger_id=None,
                                               response_url=harness.stub.response_url("cmd")))
    assert status == 200 and "no trigger_id" in shown(answer) and "Nothing changed" in shown(answer)
    assert not harness.store.admins.is_admin(MEMBER)
    (denial,) = harness.denials("command.denied")
    assert denial["command"] == "admins add" and "trigger_id" in denial["why"]


def test_replays_of_one_command_are_each_recorded_and_posted_once(harness: Harness):
    """Ten replays of a captured command: ten ``command.denied`` entries, one audit-channel post
    (the refusals of one user reach the channel at most once in five minutes)."""
    captured = command_body(f"admins add <@{MEMBER}|max>", response_url=harness.stub.response_url("cmd"))
    assert harness.send(captured)[0] == 200
    for _ in range(10):
        status, replay = harness.send(captured)
        assert status == 200 and "already processed" in shown(replay)
    denials = harness.denials("command.denied")
    assert len(denials) == 10 and [d["posted"] for d in denials] == [True] + [False] * 9


def test_each_fresh_admins_command_is_processed(harness: Harness):
    """The receipt is per request (trigger_id), not per text: retyping the command works."""
    for n, text in enumerate(("add", "remove", "add")):
        status, answer = harness.send(command_body(f"admins {text} <@{MEMBER}>", trigger_id=f"1.2.{n}",
                                                   response_url=harness.stub.response_url("cmd")))
        assert status == 200 and "Nothing changed" not in shown(answer), answer
    assert harness.store.admins.is_admin(MEMBER) and not harness.denials("command.denied")


def test_a_read_only_command_may_be_repeated(harness: Harness):
    captured = command_body("admins", response_url=harness.stub.response_url("cmd"))
    for _ in range(2):
        status, answer = harness.send(captured)
        assert status == 200 and f"<@{ADMIN}>" in shown(answer)
    assert not harness.denials("command.denied")


# ======================================================================= whose workspace


def _confirm_click(harness: Harness, key_id: str, user: dict[str, Any], response_url: str, *,
                   issued: bool = True) -> bytes:
    import time

    value = encode(KeyAction(key_id=key_id, view=ListView(), issued_at=int(time.time()) if issued else None))
    payload = {
        "type": "block_actions", "user": user, "api_app_id": "A0APIKEYS", "trigger_id": "9.9.9",
        "team": {"id": OWN_TEAM, "domain": "own"}, "channel": {"id": "C0INCIDENT", "name": "incident"},
        "container": {"type": "message", "message_ts": "1.1", "channel_id": "C0INCIDENT", "is_ephemeral": True},
        "response_url": response_url, "state": {"values": {}},
        "actions": [{"action_id": "apikeys.revoke.confirm", "block_id": "b", "type": "button", "value": value,
                     "text": {"type": "plain_text", "text": "Revoke Key"}, "action_ts": "1.000001"}],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


@pytest.mark.parametrize("user", [{"id": ADMIN, "username": "ada"}, {"id": ADMIN, "team_id": None},
                                  {"id": ADMIN, "team_id": ""}],
                         ids=["no-team_id", "null-team_id", "empty-team_id"])
def test_a_click_without_the_users_workspace_is_refused(harness: Harness, user):
    """The payload's team is the installation's; it says nothing about the clicking user's workspace."""
    (created,) = harness.store.keys.create(name="billing", owner="payments", actor="test")
    url = harness.stub.response_url("click")
    status, _ = harness.send(_confirm_click(harness, created.key.id, user, url))
    assert status == 200
    answer = harness.stub.wait_for_response(url, timeout=10)
    assert "Not revoked" in shown(answer) and "workspace" in shown(answer)
    assert harness.store.keys.verify(created.secret).code.value == "VALID"
    (denial,) = harness.denials("key.revoke_denied")
    assert "workspace" in denial["why"]


def test_a_click_from_the_users_own_workspace_revokes(harness: Harness):
    (created,) = harness.store.keys.create(name="billing", owner="payments", actor="test")
    url = harness.stub.response_url("click")
    status, _ = harness.send(_confirm_click(harness, created.key.id, {"id": ADMIN, "team_id": OWN_TEAM}, url))
    assert status == 200
    assert "Revoked" in shown(harness.stub.wait_for_response(url, timeout=10))
    assert harness.store.keys.verify(created.secret).code.value == "REVOKED"


def test_a_revoke_key_value_without_its_issue_time_is_refused_as_expired(harness: Harness):
    """A confirmation that does not say when it was shown cannot be shown to be fresh: refused."""
    (created,) = harness.store.keys.create(name="billing", owner="payments", actor="test")
    url = harness.stub.response_url("click")
    status, _ = harness.send(_confirm_click(harness, created.key.id, {"id": ADMIN, "team_id": OWN_TEAM}, url,
                                            issued=False))
    assert status == 200
    answer = harness.stub.wait_for_response(url, timeout=10)
    assert "minutes old" in shown(answer) and "Nothing changed" in shown(answer)
    assert harness.store.keys.verify(created.secret).code.value == "VALID"
    (denial,) = harness.denials("key.revoke_denied")
    assert "minutes old" in denial["why"] and denial["key"] == created.key.masked


# ======================================================================= the word "payload"


@pytest.mark.parametrize("text", ["owner payload-team", "find payload", "admins add <@UPAYLOAD1|payload>"])
def test_a_command_containing_the_word_payload_is_answered(harness: Harness, text: str):
    """Bolt reads any form body containing "payload" as an interaction (and then finds none)."""
    harness.store.keys.create(name="payload-api", owner="payload-team", actor="test")
    status, answer = harness.send(command_body(text, response_url=harness.stub.response_url("cmd")))
    assert status == 200, answer
    assert answer["text"] != "apikeys help", answer  # the help is the answer to text it did not read
    assert "payload" in shown(answer).lower()


# ======================================================================= the client listeners get


def test_listeners_get_the_client_that_follows_no_redirects(harness: Harness):
    from bot.slack import reply

    seen = []
    bolt = harness.served.wsgi.slack_app.app

    @bolt.command("/probe")
    def probe(ack, client):
        seen.append(client)
        ack()

    body = command_body("", response_url=harness.stub.response_url("cmd")).replace(b"%2Fapikeys", b"%2Fprobe")
    status, _ = harness.send(body)
    assert status == 200 and len(seen) == 1
    assert isinstance(seen[0], reply.ApiClient) and seen[0].token == "xoxb-test"
