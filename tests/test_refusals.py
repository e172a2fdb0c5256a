"""Refusals: a user of another workspace (Slack Connect) gets nothing at all; every refusal is
recorded; the audit channel hears of one user's refusals at most once in five minutes."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from freezegun import freeze_time

from storage import Action, EventInput, Store
from storage.refusals import record_refusal

from .helpers import ADMIN, MEMBER
from .slackstub import OTHER_TEAM, OTHER_WORKSPACE_USER, OWN_TEAM
from .slackworld import (
    World,
    audit_posts,
    button_labels,
    command,
    events,
    open_confirmation,
    seed,
    send_click,
    shown,
    wait_audit_post,
)


def wait_for_entries(store: Store, action: str, count: int, timeout: float = 10.0) -> list:
    """Refusals are recorded after the ack: wait (bounded) until ``count`` are."""
    deadline = time.monotonic() + timeout
    while True:
        found = events(store, action)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# ======================================================================= another workspace
@pytest.mark.parametrize("text", ["", "list all", "find billing", "admins", "help", "revoked", "billing-api"])
def test_a_user_of_another_workspace_gets_no_list_card_history_or_admin_list(world: World, store: Store, text):
    key = seed(store, "billing-api", owner="payments")
    reply = command(world, text, user=OTHER_WORKSPACE_USER, team=OTHER_TEAM).body
    answer = shown(reply)
    assert "another workspace" in answer and "Nothing was shown or changed" in answer
    assert key.name not in answer and key.owner not in answer and key.id not in answer and ADMIN not in answer
    assert not button_labels(reply)
    [denied] = wait_for_entries(store, "command.denied", 1)
    assert denied.actor == OTHER_WORKSPACE_USER and denied.details["team_id"] == OTHER_TEAM


@pytest.mark.parametrize("label", ["Cancel Revoke Key", "Revoke Key"])
def test_a_click_from_another_workspace_on_our_card_gets_no_list_back(world: World, store: Store, label):
    key = seed(store, "billing-api", owner="payments")
    other = seed(store, "search-indexer", owner="search")
    card, thread = open_confirmation(world, key)  # our admin opened it, in a shared channel
    mark = world.stub.mark()
    send_click(world, card, label, thread=thread, user=OTHER_WORKSPACE_USER, user_team=OTHER_TEAM, team=OWN_TEAM)
    answer = world.stub.wait_for_response(thread, since=mark)
    assert answer["replace_original"] is False and "another workspace" in shown(answer)
    assert other.name not in shown(answer) and not button_labels(answer)
    [denied] = wait_for_entries(store, "key.revoke_denied", 1)
    assert denied.actor == OTHER_WORKSPACE_USER and denied.key_id == key.id
    world.settle()  # the handlers behind the ack have finished: nothing more can change
    assert not events(store, "key.revoked")


# ======================================================================= a flood of refusals
def test_thirty_refused_clicks_are_each_recorded_and_posted_once(world: World, store: Store):
    key = seed(store, "billing-api")
    card, thread = open_confirmation(world, key)
    mark = world.stub.mark()
    for _ in range(30):
        send_click(world, card, "Revoke Key", thread=thread, user=MEMBER)
    denied = wait_for_entries(store, "key.revoke_denied", 30)
    assert len(denied) == 30 and {d.actor for d in denied} == {MEMBER}
    assert [d.details["posted"] for d in denied] == [True] + [False] * 29
    wait_audit_post(world.stub, "Revoke refused", f"<@{MEMBER}>", since=mark)
    time.sleep(0.5)  # a bound for deliveries that must not come
    assert len(audit_posts(world.stub, "Revoke refused", f"<@{MEMBER}>", since=mark)) == 1


def test_after_five_minutes_the_next_refusal_posts_a_summary_of_those_between(store: Store):
    notifying = store.audit
    notifying.notify_channel = "C0AUDIT"

    def refuse(user: str = MEMBER):
        return record_refusal(notifying, EventInput(actor=user, action=Action.KEY_REVOKE_DENIED,
                                                    details={"why": "not an admin"}))

    with freeze_time("2030-01-01 10:00:00") as clock:
        first = refuse()
        for _ in range(3):
            clock.tick(timedelta(seconds=30))
            refuse()
        other_user = refuse("UOTHER002")  # another user's refusals are throttled on their own
        clock.tick(timedelta(minutes=4))
        summary = refuse()
    details = [json.loads(e.details) for e in (first, other_user, summary)]
    assert details[0]["posted"] and details[0]["refused_since_last_post"] == 0
    assert details[1]["posted"]
    assert details[2]["posted"] and details[2]["refused_since_last_post"] == 3
    posted = [json.loads(e.details).get("posted") for e in store.audit.oldest_first()]
    assert posted == [True, False, False, False, True, True]
    pending, _ = store.outbox.backlog()
    assert pending == 3  # one post each for the first, the other user's and the summary


def test_a_refusal_with_a_lone_surrogate_in_its_channel_is_recorded(store: Store):
    entry = record_refusal(store.audit, EventInput(actor=MEMBER, action=Action.KEY_REVOKE_DENIED,
                                                   details={"why": "not an admin", "channel_id": "C0\ud800X"}))
    assert json.loads(entry.details)["channel_id"] == "C0\ufffdX"
    assert store.audit.verify() is None


def test_a_click_with_a_lone_surrogate_in_its_channel_id_is_answered_and_recorded(world: World, store: Store):
    key = seed(store, "billing-api")
    card, thread = open_confirmation(world, key)
    mark = world.stub.mark()
    send_click(world, card, "Revoke Key", thread=thread, user=MEMBER, channel="C0\ud800X")
    assert "Not revoked" in shown(world.stub.wait_for_response(thread, since=mark))
    [denied] = wait_for_entries(store, "key.revoke_denied", 1)
    assert denied.actor == MEMBER and "\ud800" not in json.dumps(denied.details, ensure_ascii=False)


def test_a_summary_post_says_how_many_refusals_came_between(store: Store):
    from bot.slack.audit_posts import audit_post

    entry = record_refusal(store.audit, EventInput(actor=MEMBER, action=Action.KEY_REVOKE_DENIED,
                                                   details={"why": "not an admin"}))
    assert "more refusal" not in str(audit_post([entry]))
    summary = type(entry).model_construct(**{**entry.model_dump(), "details": json.dumps(
        {**json.loads(entry.details), "refused_since_last_post": 29})})
    assert "Also 29 more refusals of theirs since the last post" in str(audit_post([summary]))


# ======================================================================= another organisation, however it is named
def test_a_click_whose_team_is_another_workspace_gets_no_list_back(world: World, store: Store):
    """``team.id`` names another workspace (a shared channel hosted there): refused, even though
    the user claims our workspace in ``user.team_id``."""
    key = seed(store, "billing-api", owner="payments")
    other = seed(store, "search-indexer", owner="search")
    card, thread = open_confirmation(world, key)
    mark = world.stub.mark()
    send_click(world, card, "Cancel Revoke Key", thread=thread, user=ADMIN, user_team=OWN_TEAM, team=OTHER_TEAM)
    answer = world.stub.wait_for_response(thread, since=mark)
    assert "another workspace" in shown(answer) and other.name not in shown(answer) and not button_labels(answer)
    [denied] = wait_for_entries(store, "key.revoke_denied", 1)
    assert denied.actor == ADMIN and denied.details["workspace"] == OTHER_TEAM


def _with_enterprise(body: bytes, enterprise: str) -> bytes:
    """A signed-to-be interaction body whose payload names ``enterprise`` (an Enterprise Grid org)."""
    from urllib.parse import parse_qs, urlencode

    payload = json.loads(parse_qs(body.decode())["payload"][0])
    payload["enterprise"] = {"id": enterprise, "name": "Other Org"}
    payload["user"]["enterprise_id"] = enterprise
    return urlencode({"payload": json.dumps(payload)}).encode()


def test_a_click_from_another_enterprise_is_refused_and_revokes_nothing(world: World, store: Store):
    from .slackworld import build_click, post_signed

    key = seed(store, "billing-api", owner="payments")
    card, thread = open_confirmation(world, key)
    mark = world.stub.mark()
    body = _with_enterprise(build_click(world.sender, card, "Revoke Key", response_url=thread, user=ADMIN), "E0OTHER")
    assert post_signed(world.sender, body).status == 200
    answer = world.stub.wait_for_response(thread, since=mark)
    assert "another workspace" in shown(answer) and "Not revoked" in shown(answer)
    [denied] = wait_for_entries(store, "key.revoke_denied", 1)
    assert denied.actor == ADMIN and denied.key_id == key.id and denied.details["workspace"] == "E0OTHER"
    world.settle()  # the handlers behind the ack have finished: nothing more can change
    assert not events(store, "key.revoked") and store.keys.get(key.id).revoked_at is None


@pytest.mark.parametrize("extra", [b"&enterprise_id=E0OTHER&enterprise_name=Other", b"&enterprise=E0OTHER"])
def test_a_command_from_another_enterprise_gets_no_list(world: World, store: Store, extra: bytes):
    from .slackworld import post_signed

    key = seed(store, "billing-api", owner="payments")
    body = world.sender.body_of("command", "all", user=ADMIN) + extra
    reply = post_signed(world.sender, body)
    assert reply.status == 200
    answer = json.loads(reply.text)
    assert answer["response_type"] == "ephemeral" and "another workspace" in shown(answer)
    assert key.name not in shown(answer) and not button_labels(answer)
    [denied] = wait_for_entries(store, "command.denied", 1)
    assert denied.actor == ADMIN and denied.details["workspace"] == "E0OTHER"


# ======================================================================= the throttle's state is the database's
def test_replicas_on_one_database_share_the_five_minute_window(store: Store, database_url: str):
    """Two server processes (two stores on one database): the second replica's refusal within five
    minutes of the first's post is counted, not posted; the next one after the window posts the count."""
    from storage import open_store

    replica = open_store(database_url)
    try:
        def refuse(audit):
            return json.loads(record_refusal(audit, EventInput(actor=MEMBER, action=Action.KEY_REVOKE_DENIED,
                                                               details={"why": "not an admin"})).details)

        store.audit.notify_channel = replica.audit.notify_channel = "C0AUDIT"
        with freeze_time("2030-01-01 10:00:00") as clock:
            assert refuse(store.audit)["posted"] is True
            clock.tick(timedelta(minutes=1))
            assert refuse(replica.audit)["posted"] is False
            assert refuse(store.audit)["posted"] is False
            clock.tick(timedelta(minutes=4, seconds=1))
            summary = refuse(replica.audit)
        assert summary["posted"] is True and summary["refused_since_last_post"] == 2
        assert replica.outbox.backlog()[0] == 2
    finally:
        replica.close()


def test_concurrent_refusals_on_two_replicas_post_once(store: Store, database_url: str):
    """Refusals racing on two replicas: each recorded, exactly one posted."""
    from concurrent.futures import ThreadPoolExecutor

    from storage import open_store

    replica = open_store(database_url)
    try:
        store.audit.notify_channel = replica.audit.notify_channel = "C0AUDIT"

        def refuse(n: int):
            audit = (store, replica)[n % 2].audit
            return record_refusal(audit, EventInput(actor=MEMBER, action=Action.KEY_REVOKE_DENIED,
                                                    details={"why": "not an admin"}))

        with ThreadPoolExecutor(max_workers=8) as pool:
            entries = list(pool.map(refuse, range(24)))
        assert len(entries) == 24
        assert sum(json.loads(e.details)["posted"] for e in entries) == 1
        assert store.outbox.backlog()[0] == 1
    finally:
        replica.close()


def test_an_actor_that_is_stored_masked_is_still_throttled(store: Store):
    """The window is found by the actor as stored (a lone surrogate replaced), so such an actor's
    refusals are recorded and throttled like anyone's."""
    store.audit.notify_channel = "C0AUDIT"
    first, second = (record_refusal(store.audit, EventInput(actor="U0\ud800BAD", action=Action.KEY_REVOKE_DENIED,
                                                            details={"why": "not an admin"})) for _ in range(2))
    assert json.loads(first.details)["posted"] is True and json.loads(second.details)["posted"] is False
    assert store.outbox.backlog()[0] == 1
