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
    from bot.slack.blocks import audit_post

    entry = record_refusal(store.audit, EventInput(actor=MEMBER, action=Action.KEY_REVOKE_DENIED,
                                                   details={"why": "not an admin"}))
    assert "more refusal" not in str(audit_post([entry]))
    summary = type(entry).model_construct(**{**entry.model_dump(), "details": json.dumps(
        {**json.loads(entry.details), "refused_since_last_post": 29})})
    assert "Also 29 more refusals of theirs since the last post" in str(audit_post([summary]))
