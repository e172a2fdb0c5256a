"""The Slack app as users see it, one behaviour per test.

Each test gets a world (``tests/slackworld.py``): the local stand-in for Slack's Web API and
response_urls, the app on a fresh database, and correctly signed Slack requests. By default the
Bolt app runs in this process (``app.dispatch`` of each signed request, as the production WSGI
handler hands it over); the tests marked ``end_to_end`` boot the real server (``python -m bot``, two
gunicorn workers) and talk to it over HTTP exactly as Slack does: where the gate in front of Bolt,
a restart or the server's own log is the point, and one full revocation. Keys are seeded straight
into the same database through the store. What the app shows comes back either in the ack of a
slash command or as a POST to the ``response_url`` (clicks); audit-channel posts and channel
notices arrive at the stub as ``chat.postMessage`` calls.

Nothing here sleeps to wait for an effect: the stub's ``wait_for*`` block on a condition. To show
that something did *not* happen, a test first waits for a later positive signal, or waits a short
bounded time expecting nothing (``assert_nothing_more``).
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time

from bot.slack.values import KeyAction, ListView, encode
from storage import Store, open_store

from .helpers import ADMIN, MEMBER
from .slackhttp import FORM, SlackReply, button, find_buttons
from .slackstub import OTHER_TEAM, OTHER_WORKSPACE_USER, OWN_TEAM, assert_nothing_more, summary
from .slackworld import (
    AUDIT,
    BYSTANDER,
    INCIDENT,
    MISSING_KEY_ID,
    SECOND_ADMIN,
    ServerWorld,
    World,
    audit_posts,
    build_click,
    button_labels,
    click,
    click_row,
    code,
    command,
    events,
    is_audit_post,
    is_help,
    key_rows,
    mentions_time,
    open_confirmation,
    outbox_rows,
    post_signed,
    responses_since,
    revoke_flow,
    row_names,
    seed,
    seed_many,
    select_state,
    send_click,
    shown,
    snapshot,
    wait_audit_post,
    wait_responses,
    wait_until,
)

END_TO_END = pytest.mark.end_to_end


# ======================================================================= 1. signatures


@END_TO_END
def test_unsigned_wrongly_signed_and_stale_requests_are_refused_and_change_nothing(world: World, store: Store):
    key = seed(store, "billing-api")
    card, thread = open_confirmation(world, key)
    before = snapshot(store)
    sender = world.sender

    forged_thread = world.stub.response_url("forged")
    revoke_click = build_click(sender, card, "Revoke Key", response_url=forged_thread,
                               state=select_state(card, "compromised"))
    admins_add = urllib.parse.urlencode({
        "team_id": OWN_TEAM, "channel_id": INCIDENT, "user_id": MEMBER, "command": "/apikeys",
        "text": f"admins add <@{MEMBER}|max>", "response_url": forged_thread, "trigger_id": "1.2.3",
    }).encode()
    now = int(time.time())
    for body in (revoke_click, admins_add):
        attempts = {
            "unsigned": {"Content-Type": FORM},
            "timestamp only": {"Content-Type": FORM, "X-Slack-Request-Timestamp": str(now)},
            "wrong secret": {"Content-Type": FORM, **sender.signed_headers(body, secret="not-the-secret")},
            "garbage signature": {"Content-Type": FORM, "X-Slack-Request-Timestamp": str(now),
                                  "X-Slack-Signature": "v0=" + "0" * 64},
            "older than 5 minutes": {"Content-Type": FORM, **sender.signed_headers(body, timestamp=now - 6 * 60)},
            "from the future": {"Content-Type": FORM, **sender.signed_headers(body, timestamp=now + 6 * 60)},
            "signed for another body": {"Content-Type": FORM, **sender.signed_headers(body + b"&x=1")},
        }
        for what, headers in attempts.items():
            status, _, text = sender.raw(body, headers)
            assert status == 401, f"{what}: {status} {text}"

    # A correctly signed request right after is served, and the forged ones changed nothing.
    assert command(world, "").body["blocks"]
    world.settle()  # the handlers behind the ack have finished: nothing more can change
    assert code(store, key) == "VALID"
    assert snapshot(store) == before
    assert not events(store, "key.revoked") and not events(store, "key.revoke_denied")
    assert not store.admins.is_admin(MEMBER)
    assert world.stub.responses_to(forged_thread) == []
    assert not world.stub.api_calls("chat.postMessage")
    # The genuine card still works: the forgeries did not use it up.
    outcome = click(world, card, "Revoke Key", thread=thread)
    assert "Revoked" in shown(outcome) and code(store, key) == "REVOKED"


# ======================================================================= 2. /apikeys and its words


def test_list_shows_one_row_per_active_key_with_a_revoke_button(world: World, store: Store):
    billing = seed(store, "billing-api", owner="payments")
    search = seed(store, "search-indexer", owner="search-team")
    mobile = seed(store, "mobile-app", owner="mobile@example.com")
    old = seed(store, "old-billing", owner="payments")
    store.keys.revoke(old.id, via="cli", actor="ops", reason="rotation")
    with freeze_time(datetime.now(timezone.utc) - timedelta(days=2)):
        expired = seed(store, "trial", owner="growth", expires_in=timedelta(hours=1))
    assert code(store, search) == "VALID"  # search has been used now
    used_at = store.keys.get(search.id).last_used_at
    before = snapshot(store)

    for text in ("", "list", "  LIST  "):
        reply = command(world, text)
        body = reply.body
        assert len(body["blocks"]) <= 50
        rows = key_rows(body)
        assert sorted(rows) == sorted([billing.name, search.name, mobile.name]), f"/apikeys {text!r}: {shown(body)}"
        for key in (billing, search, mobile):
            row = rows[key.name]
            line = row["text"]["text"]
            assert f"`{key.masked}`" in line
            assert key.owner in line
            assert "created" in line and mentions_time(line, key.created_at), line
            accessory = row["accessory"]
            assert accessory["type"] == "button" and accessory["text"]["text"] == "Revoke"
            assert key.id in line
        assert re.search(r"last used[^·\n]*never", rows[billing.name]["text"]["text"])
        assert "last used" in rows[search.name]["text"]["text"] and mentions_time(rows[search.name]["text"]["text"], used_at)
        assert button_labels(body) == ["Revoke", "Rotate"] * 3  # three keys fit one page: no Next/Previous
        text_shown = shown(body)
        for hidden in (old, expired):
            assert hidden.name not in text_shown and hidden.masked not in text_shown

    assert snapshot(store) == before
    assert not world.stub.api_calls("chat.postMessage")


def test_the_other_words_answer_ephemerally_and_change_nothing(world: World, store: Store):
    billing = seed(store, "billing-api", owner="payments")
    search = seed(store, "search-indexer", owner="search-team")
    old = seed(store, "old-billing", owner="payments")
    store.keys.revoke(old.id, via="cli", actor="ops@example.com", reason="rotation", note="replaced by a new key")
    with freeze_time(datetime.now(timezone.utc) - timedelta(days=2)):
        expired = seed(store, "trial", owner="growth", expires_in=timedelta(hours=1))
    before = snapshot(store)

    revoked = command(world, "revoked").body
    assert row_names(revoked) == [old.name]
    row = key_rows(revoked)[old.name]["text"]["text"]
    assert old.masked in row and "Revoked" in row and "Rotation" in row and "ops@example.com" in row
    assert button_labels(revoked) == []  # nothing to revoke there

    everything = command(world, "all").body
    assert sorted(row_names(everything)) == sorted([billing.name, search.name, old.name, expired.name])
    assert len(find_buttons(everything, "Revoke")) == 2  # only the active keys can be revoked
    assert "Revoke" not in json.dumps(key_rows(everything)[old.name].get("accessory"))

    assert row_names(command(world, "expired").body) == [expired.name]
    assert row_names(command(world, "owner payments").body) == [billing.name]
    assert row_names(command(world, "owner search-team").body) == [search.name]
    assert row_names(command(world, "owner nobody-at-all").body) == []

    history = shown(command(world, "history").body)
    assert "key.revoked" in history and "key.created" in history
    assert "Rotation" in history and "ops@example.com" in history and old.name in history

    one = shown(command(world, f"history {old.id}").body)
    assert old.name in one and old.masked in one and "key.revoked" in one and "Rotation" in one
    assert billing.name not in one and search.name not in one

    admins = shown(command(world, "admins").body)
    assert f"<@{ADMIN}>" in admins

    assert is_help(command(world, "help").body)

    bad_inputs = [
        "frobnicate", "list everything", "revoke-all now", "owner", "owner a b", "owner bad!owner",
        "owner <@U123>", "history not-a-key", f"history {billing.id} extra", "help me", "x" * 600,
        "owner " + "a" * 501, "\u202e\u0000weird",
    ]
    for text in bad_inputs:
        body = command(world, text).body
        assert is_help(body), f"/apikeys {text[:40]!r} did not get the help: {shown(body)[:300]}"
        assert not find_buttons(body, "Revoke")

    unknown_key = command(world, f"history {MISSING_KEY_ID}").body
    assert MISSING_KEY_ID in shown(unknown_key) and not find_buttons(unknown_key)

    assert snapshot(store) == before
    assert code(store, billing) == "VALID" and code(store, search) == "VALID"
    assert not world.stub.api_calls("chat.postMessage")


# ======================================================================= 3. paging


def test_many_keys_are_paged_with_next_and_previous(world: World, store: Store):
    keys = seed_many(store, "batch", 30)  # one transaction: same creation time, ordered by id
    keys += [seed(store, f"single-{i}", owner="singles") for i in range(10)]
    reply = command(world, "")
    thread = reply.response_url

    pages = [reply.body]
    while "Next" in button_labels(pages[-1]):
        assert len(pages) < 10, "paging does not end"
        pages.append(click(world, pages[-1], "Next", thread=thread))
        assert pages[-1]["replace_original"] is True
    assert len(pages) >= 2
    for index, page in enumerate(pages):
        assert len(page["blocks"]) <= 50
        labels = button_labels(page)
        assert ("Previous" in labels) == (index > 0), f"page {index + 1}: {labels}"
        assert ("Next" in labels) == (index < len(pages) - 1), f"page {index + 1}: {labels}"
        assert labels.count("Revoke") == len(key_rows(page))

    seen = [name for page in pages for name in row_names(page)]
    assert len(seen) == len(set(seen)), "a key appears on two pages"
    assert sorted(seen) == sorted(k.name for k in keys), "a key is missing from every page"

    # Back again, page by page, to the first page.
    back = pages[-1]
    for expected in reversed(pages[:-1]):
        back = click(world, back, "Previous", thread=thread)
        assert row_names(back) == row_names(expected)
    assert "Previous" not in button_labels(back)

    # Revoke on page 2, then Cancel Revoke Key: back to page 2, nothing changed.
    page2 = click(world, back, "Next", thread=thread)
    name = row_names(page2)[3]
    before = snapshot(store)
    card = click_row(world, page2, name, thread=thread)
    assert name in shown(card)
    again = click(world, card, "Cancel Revoke Key", thread=thread)
    assert again["replace_original"] is True
    assert row_names(again) == row_names(page2) == row_names(pages[1])
    assert snapshot(store) == before


# ======================================================================= 4. the admin flow


@END_TO_END
def test_admin_cancels_then_revokes_with_a_reason(world: World, store: Store):
    key = seed(store, "billing-api", owner="payments")
    other = seed(store, "search-indexer", owner="search-team")
    listing = command(world, "")
    thread = listing.response_url

    card = click_row(world, listing.body, key.name, thread=thread)
    assert card["replace_original"] is True
    details = shown(card)
    assert key.name in details and key.masked in details and key.owner in details
    assert other.name not in details
    selects = [b["accessory"] for b in card["blocks"] if (b.get("accessory") or {}).get("type") == "static_select"]
    assert len(selects) == 1
    assert "compromised" in [o["value"] for o in selects[0]["options"]]
    assert sorted(button_labels(card)) == ["Cancel Revoke Key", "Revoke Key"]
    assert button(card, "Revoke Key").get("style") == "danger"

    # Cancel: the same list again, nothing changed.
    mark = world.stub.mark()
    back = click(world, card, "Cancel Revoke Key", thread=thread)
    assert back["replace_original"] is True
    assert back["blocks"] == listing.body["blocks"]
    world.settle()  # the handlers behind the ack have finished: nothing more can change
    assert code(store, key) == "VALID"
    assert not events(store, "key.revoked") and not events(store, "key.revoke_denied")

    # Revoke, choosing "compromised" in the select first (the select's own click only acks).
    card = click_row(world, back, key.name, thread=thread)
    state = select_state(card, "compromised")
    block_id, element = next(iter(state.items()))
    action_id, chosen = next(iter(element.items()))
    picked = world.sender.click(action_id, block_id=block_id, selected_option=chosen["selected_option"],
                                response_url=thread)
    assert picked.status == 200
    mark = world.stub.mark()
    send_click(world, card, "Revoke Key", thread=thread, state=state)
    result = world.stub.wait_for_response(thread, since=mark)
    assert result["replace_original"] is True
    outcome = shown(result)
    assert "Revoked" in outcome and key.name in outcome and key.masked in outcome
    assert "Compromised" in outcome and f"<@{ADMIN}>" in outcome
    assert not find_buttons(result, "Revoke Key")
    assert code(store, key) == "REVOKED"
    assert code(store, other) == "VALID"

    revoked = events(store, "key.revoked")
    assert len(revoked) == 1
    event = revoked[0]
    assert event.key_id == key.id and event.actor == ADMIN
    assert event.details["reason"] == "compromised" and event.details["via"] == "slack"
    assert event.details["channel_id"] == INCIDENT
    assert not events(store, "key.revoke_denied")

    post = wait_audit_post(world.stub, "Key revoked", key.name, since=mark)
    text = shown(post.body)
    assert key.masked in text and f"<@{ADMIN}>" in text and "Compromised" in text
    assert mentions_time(text, event.at), text
    # The post and the audit log agree.
    assert event.details["name"] in text and event.details["key"] in text and event.details["owner"] in text

    notice = world.stub.wait_for_api("chat.postMessage", lambda c: c.body["channel"] == INCIDENT, since=mark)
    assert key.name in shown(notice.body) and key.masked in shown(notice.body)

    assert_nothing_more(world.stub, is_audit_post, since=world.stub.calls.index(post) + 1,
                        what="second audit post")
    assert len(audit_posts(world.stub, since=mark)) == 1
    assert [r.delivered_at is not None for r in outbox_rows(store)] == [True]

    # The list no longer offers it.
    assert row_names(command(world, "").body) == [other.name]


# ======================================================================= 5, 6. who may revoke


def test_a_member_sees_no_button_that_changes_anything_and_a_forged_click_is_refused_naming_the_admins(
        world: World, store: Store):
    key = seed(store, "billing-api")
    member_list = command(world, "", user=MEMBER)
    assert key.name in shown(member_list.body) and key.id in shown(member_list.body)
    assert button_labels(member_list.body) == [], "a member's list shows buttons that change anything"
    admin_list = command(world, "")  # a member clicks a Revoke they were not shown (a forged or old button)
    answer = click_row(world, admin_list.body, key.name, thread=member_list.response_url, user=MEMBER)
    assert answer["replace_original"] is False and "Not opened" in shown(answer)
    assert f"<@{ADMIN}>" in shown(answer), "the refusal names the admins to ask"
    world.settle()
    [denied] = events(store, "key.revoke_denied")
    assert denied.actor == MEMBER and denied.key_id == key.id


def test_member_cannot_revoke(world: World, store: Store):
    """A member who holds a confirmation (an admin's, or one opened before their role was removed)."""
    key = seed(store, "billing-api")
    card, thread = open_confirmation(world, key, user=ADMIN)
    mark = world.stub.mark()
    send_click(world, card, "Revoke Key", thread=thread, user=MEMBER, state=select_state(card, "compromised"))
    answer = world.stub.wait_for_response(thread, since=mark)
    assert answer["replace_original"] is False and answer["response_type"] == "ephemeral"
    assert "admins" in shown(answer).lower()
    world.settle()  # the handlers behind the ack have finished: nothing more can change
    assert code(store, key) == "VALID"

    denied = events(store, "key.revoke_denied")
    assert len(denied) == 1 and denied[0].actor == MEMBER and denied[0].key_id == key.id
    assert "admin" in denied[0].details["why"].lower()
    assert not events(store, "key.revoked")

    post = wait_audit_post(world.stub, f"<@{MEMBER}>", since=mark)
    assert key.name in shown(post.body) and key.masked in shown(post.body)
    assert not audit_posts(world.stub, "Key revoked")


def test_admin_of_another_workspace_is_refused(make_world, store: Store):
    world = make_world({"APIKEYS_ADMINS": f"{ADMIN},{OTHER_WORKSPACE_USER}"})
    key = seed(store, "billing-api")
    card, thread = open_confirmation(world, key)  # an own admin opened it in a shared channel
    mark = world.stub.mark()
    send_click(world, card, "Revoke Key", thread=thread, user=OTHER_WORKSPACE_USER,
               user_team=OTHER_TEAM, team=OWN_TEAM)
    answer = world.stub.wait_for_response(thread, since=mark)
    assert answer["replace_original"] is False
    assert "workspace" in shown(answer).lower()
    world.settle()  # the handlers behind the ack have finished: nothing more can change
    assert code(store, key) == "VALID"

    denied = events(store, "key.revoke_denied")
    assert len(denied) == 1 and denied[0].actor == OTHER_WORKSPACE_USER and denied[0].key_id == key.id
    assert "workspace" in denied[0].details["why"].lower()
    assert denied[0].details["team_id"] == OTHER_TEAM
    assert not events(store, "key.revoked")
    wait_audit_post(world.stub, f"<@{OTHER_WORKSPACE_USER}>", since=mark)


# ======================================================================= 7. double clicks and replays


def test_double_click_and_two_admins_at_once_revoke_once(world: World, store: Store):
    store.admins.add(SECOND_ADMIN, actor=ADMIN)
    first = seed(store, "billing-api")
    second = seed(store, "search-indexer")
    sender = world.sender

    def race(bodies: list[bytes]) -> list[SlackReply]:
        barrier = threading.Barrier(len(bodies))

        def send(body: bytes) -> SlackReply:
            barrier.wait()
            return post_signed(sender, body)

        with ThreadPoolExecutor(len(bodies)) as pool:
            return list(pool.map(send, bodies))

    # One admin double-clicks Revoke Key on one card.
    card, thread = open_confirmation(world, first)
    mark = world.stub.mark()
    double = [build_click(sender, card, "Revoke Key", response_url=thread) for _ in range(2)]
    assert all(r.status == 200 for r in race(double))
    answers = wait_responses(world.stub, thread, 2, since=mark)
    outcomes = sorted(shown(a) for a in answers)
    assert sum("already revoked" in o for o in outcomes) == 1, outcomes
    assert sum(":white_check_mark:" in o for o in outcomes) == 1, outcomes

    # Two admins, each on their own card, at the same moment.
    card_a, thread_a = open_confirmation(world, second, user=ADMIN)
    card_b, thread_b = open_confirmation(world, second, user=SECOND_ADMIN)
    mark2 = world.stub.mark()
    both = [build_click(sender, card_a, "Revoke Key", response_url=thread_a, user=ADMIN,
                        state=select_state(card_a, "compromised")),
            build_click(sender, card_b, "Revoke Key", response_url=thread_b, user=SECOND_ADMIN,
                        state=select_state(card_b, "rotation"))]
    assert all(r.status == 200 for r in race(both))
    answer_a = shown(wait_responses(world.stub, thread_a, 1, since=mark2)[0])
    answer_b = shown(wait_responses(world.stub, thread_b, 1, since=mark2)[0])
    assert sorted(["already revoked" in answer_a, "already revoked" in answer_b]) == [False, True]

    for key in (first, second):
        assert code(store, key) == "REVOKED"
        assert len(events(store, "key.revoked", key.id)) == 1
    assert not events(store, "key.revoke_denied")
    winner = events(store, "key.revoked", second.id)[0]
    assert winner.actor in (ADMIN, SECOND_ADMIN)
    assert winner.details["reason"] == {ADMIN: "compromised", SECOND_ADMIN: "rotation"}[winner.actor]
    assert ("already revoked" in (answer_b if winner.actor == ADMIN else answer_a))

    wait_audit_post(world.stub, "Key revoked", first.name, since=mark)
    wait_audit_post(world.stub, "Key revoked", second.name, since=mark2)
    assert_nothing_more(world.stub, lambda c: is_audit_post(c) and "Key revoked" in shown(c.body),
                        since=world.stub.mark(), what="third revocation post")
    for key in (first, second):
        assert len(audit_posts(world.stub, "Key revoked", key.name)) == 1


def test_replayed_click_is_refused_and_recorded(world: World, store: Store):
    key = seed(store, "billing-api")
    card, thread = open_confirmation(world, key)
    body = build_click(world.sender, card, "Revoke Key", response_url=thread,
                       state=select_state(card, "compromised"))
    mark = world.stub.mark()
    assert post_signed(world.sender, body).status == 200
    assert ":white_check_mark:" in shown(world.stub.wait_for_response(thread, since=mark))
    wait_audit_post(world.stub, "Key revoked", key.name, since=mark)

    # The exact same request body again, with fresh valid signature headers.
    mark = world.stub.mark()
    assert post_signed(world.sender, body).status == 200
    refusal = world.stub.wait_for_response(thread, since=mark)
    assert refusal["replace_original"] is False, f"not refused as a replay: {shown(refusal)}"
    assert "replayed" in shown(refusal).lower()
    denied = events(store, "key.revoke_denied")
    assert len(denied) == 1 and denied[0].key_id == key.id and denied[0].actor == ADMIN
    assert "replayed" in denied[0].details["why"]
    wait_audit_post(world.stub, "Revoke refused", since=mark)

    assert len(events(store, "key.revoked")) == 1
    assert_nothing_more(world.stub, lambda c: is_audit_post(c) and "Key revoked" in shown(c.body),
                        since=mark, what="second revocation post")
    assert len(audit_posts(world.stub, "Key revoked")) == 1


# ======================================================================= 8. stale confirmations


def test_stale_or_future_confirmation_is_refused(world: World, store: Store):
    key = seed(store, "billing-api")
    card, thread = open_confirmation(world, key)
    action_id = button(card, "Revoke Key")["action_id"]
    now = int(time.time())
    for issued_at in (now - 3600, now + 3600):
        mark = world.stub.mark()
        value = encode(KeyAction(key_id=key.id, view=ListView(), issued_at=issued_at))
        reply = world.sender.click(action_id, value, text="Revoke Key", response_url=thread)
        assert reply.status == 200
        answer = world.stub.wait_for_response(thread, since=mark)
        assert answer["replace_original"] is False and "Not revoked" in shown(answer)
        world.settle()  # the handlers behind the ack have finished: nothing more can change
        assert code(store, key) == "VALID"
    denied = events(store, "key.revoke_denied")
    assert len(denied) == 2 and all(e.key_id == key.id and e.actor == ADMIN for e in denied)
    assert "minutes old" in denied[0].details["why"]
    assert not events(store, "key.revoked")

    # The fresh card still works.
    outcome = click(world, card, "Revoke Key", thread=thread)
    assert ":white_check_mark:" in shown(outcome) and code(store, key) == "REVOKED"


# ======================================================================= 9. forged values


def test_forged_action_values_never_fail_and_change_nothing(world: World, store: Store):
    key = seed(store, "billing-api")
    card, thread = open_confirmation(world, key)
    listing = command(world, "").body
    confirm_id = button(card, "Revoke Key")["action_id"]
    revoke_id = find_buttons(listing, "Revoke")[0]["action_id"]
    cancel_id = button(card, "Cancel Revoke Key")["action_id"]
    now = int(time.time())
    before = snapshot(store)

    forged_confirm = {
        "garbage json": "{not json",
        "not an object": "[1, 2, 3]",
        "empty": "",
        "no value at all": None,
        "unknown key id": encode(KeyAction(key_id=MISSING_KEY_ID, view=ListView(), issued_at=now)),
        "key id of the wrong type": json.dumps({"k": 12345, "t": now}),
        "time of the wrong type": json.dumps({"k": key.id, "t": str(now)}),
        "time as a boolean": json.dumps({"k": key.id, "t": True}),
        "list view of the wrong type": json.dumps({"k": key.id, "l": "active", "t": now}),
        "injection in the key id": json.dumps({"k": "key_x' OR '1'='1", "t": now}),
        "huge": json.dumps({"k": key.id, "t": now, "x": "A" * 30_000}),
    }
    for what, value in forged_confirm.items():
        mark = world.stub.mark()
        reply = world.sender.click(confirm_id, value, text="Revoke Key", response_url=thread)
        assert reply.status == 200, f"{what}: {reply.status} {reply.text}"
        answer = world.stub.wait_for_response(thread, since=mark)
        assert answer["replace_original"] is False, what
        assert "Not revoked" in shown(answer), f"{what}: {shown(answer)}"
    denied = events(store, "key.revoke_denied")
    assert len(denied) == len(forged_confirm)
    assert [e for e in denied if e.details.get("requested_key_id") == MISSING_KEY_ID]

    others = [
        (revoke_id, "{not json", "Revoke"),
        (revoke_id, encode(KeyAction(key_id=MISSING_KEY_ID, view=ListView())), "Revoke"),
        (revoke_id, "A" * 5000, "Revoke"),
        ("apikeys.nuke_everything", json.dumps({"k": key.id}), "Nuke"),
        ("unknown.action", None, "?"),
    ]
    for action_id, value, label in others:
        mark = world.stub.mark()
        reply = world.sender.click(action_id, value, text=label, response_url=thread)
        assert reply.status == 200, (action_id, reply.status, reply.text)
        answer = world.stub.wait_for_response(thread, since=mark)
        assert answer["replace_original"] is False and answer["response_type"] == "ephemeral"
        assert "out of date" in shown(answer) or "run `/apikeys`" in shown(answer), shown(answer)

    # Forged paging and cancel values fall back to the first page of the list.
    for action_id, value, label in [(cancel_id, "{garbage", "Cancel Revoke Key"),
                                    ("apikeys.page.next", json.dumps({"v": "l", "a": "not-a-cursor"}), "Next"),
                                    ("apikeys.page.prev", json.dumps({"v": "l", "s": "deleted"}), "Previous"),
                                    ("apikeys.page.next", json.dumps({"v": "h", "i": -5}), "Next")]:
        mark = world.stub.mark()
        reply = world.sender.click(action_id, value, text=label, response_url=thread)
        assert reply.status == 200, (action_id, value, reply.status)
        answer = world.stub.wait_for_response(thread, since=mark)
        assert row_names(answer) == [key.name], (value, shown(answer))

    assert len(events(store, "key.revoke_denied")) == len(forged_confirm)
    world.settle()  # the handlers behind the ack have finished: nothing more can change
    assert code(store, key) == "VALID"
    assert not events(store, "key.revoked")
    after = snapshot(store)
    assert after[0] == before[0] and after[2] == before[2]
    log = world.log()
    assert "Traceback" not in log and "slack_error" not in log


# ======================================================================= 10. already revoked


def test_already_revoked_key_says_so_and_posts_nothing_new(world: World, database_url: str, store: Store):
    listed = seed(store, "billing-api")
    carded = seed(store, "search-indexer")
    cli = open_store(database_url, bootstrap_admins=[ADMIN], create_schema=False, notify_channel=AUDIT)
    try:
        listing = command(world, "")
        card, card_thread = open_confirmation(world, carded)
        mark = world.stub.mark()
        # Both keys are revoked from the command line meanwhile (the break-glass path).
        cli.keys.revoke(listed.id, actor="ops", reason="rotation", via="cli")
        cli.keys.revoke(carded.id, actor="ops", reason="rotation", via="cli")
    finally:
        cli.close()
    wait_audit_post(world.stub, "Key revoked", listed.name, since=mark, timeout=15)
    wait_audit_post(world.stub, "Key revoked", carded.name, since=mark, timeout=15)
    mark = world.stub.mark()

    stale_row = click_row(world, listing.body, listed.name, thread=listing.response_url)
    assert stale_row["replace_original"] is True
    assert "already revoked" in shown(stale_row) and listed.masked in shown(stale_row)
    assert not find_buttons(stale_row, "Revoke Key")

    answer = click(world, card, "Revoke Key", thread=card_thread, state=select_state(card, "compromised"))
    assert "already revoked" in shown(answer) and carded.name in shown(answer)

    for key in (listed, carded):
        revoked = events(store, "key.revoked", key.id)
        assert len(revoked) == 1 and revoked[0].actor == "ops" and revoked[0].details["reason"] == "rotation"
        assert store.keys.get(key.id).revoke_reason == "rotation"
    assert not events(store, "key.revoke_denied")
    assert_nothing_more(world.stub, is_audit_post, since=mark, what="audit post for an already revoked key")
    assert len(outbox_rows(store)) == 2


# ======================================================================= 11, 12. delivery


def test_audit_post_is_delivered_once_after_slack_failures(world: World, store: Store):
    key = seed(store, "billing-api")
    with world.stub.lock:
        world.stub.unknown_channels.add(AUDIT)  # the first attempt fails (channel_not_found)
    mark = world.stub.mark()
    _, outcome, _ = revoke_flow(world, key)
    assert ":white_check_mark:" in shown(outcome)
    assert code(store, key) == "REVOKED"  # the revocation stands at once
    world.stub.wait_for(lambda c: c.method_name == "chat.postMessage" and c.body["channel"] == AUDIT
                        and not c.ok, since=mark, description="a failed audit post")
    world.stub.wait_for_api("chat.postMessage", lambda c: c.body["channel"] == INCIDENT, since=mark)
    assert world.get("/healthz") == 200

    # Now Slack itself misbehaves: three 500s, a rate limit, then the bot is not in the channel.
    world.stub.fail_next("chat.postMessage", status=500, times=3)
    world.stub.fail_next("chat.postMessage", status=429, retry_after=1)
    world.stub.fail_next("chat.postMessage", error="not_in_channel")
    with world.stub.lock:
        world.stub.unknown_channels.discard(AUDIT)
    assert world.get("/healthz") == 200

    post = wait_audit_post(world.stub, "Key revoked", key.name, since=mark, timeout=40)
    assert key.masked in shown(post.body) and f"<@{ADMIN}>" in shown(post.body)
    failures = [c for c in world.stub.calls[mark:] if c.method_name == "chat.postMessage" and c.failed]
    assert len(failures) == 5, [summary(c) for c in failures]
    assert_nothing_more(world.stub, is_audit_post, since=world.stub.calls.index(post) + 1,
                        what="duplicate audit post")
    assert len(audit_posts(world.stub, "Key revoked")) == 1
    assert store.outbox.pending() == 0
    assert len(events(store, "key.revoked")) == 1


@END_TO_END
def test_pending_audit_post_survives_a_restart(world: ServerWorld, store: Store):
    key = seed(store, "billing-api")
    with world.stub.lock:
        world.stub.unknown_channels.add(AUDIT)
    mark = world.stub.mark()
    revoke_flow(world, key)
    assert code(store, key) == "REVOKED"
    world.stub.wait_for(lambda c: c.method_name == "chat.postMessage" and c.body["channel"] == AUDIT
                        and not c.ok, since=mark, description="a failed audit post")
    for _ in range(3):
        assert world.get("/healthz") == 200
    # Stop only once the failed attempt is on record (not mid-delivery, holding a lease).
    wait_until(lambda: [(r.attempts >= 1, r.claimed_until, r.delivered_at) for r in outbox_rows(store)]
               == [(True, None, None)], "the failed attempt to be recorded")

    world.server.stop()
    world.stub.clear()
    with world.stub.lock:
        world.stub.unknown_channels.discard(AUDIT)
    world.restart()

    post = wait_audit_post(world.stub, "Key revoked", key.name, timeout=20)
    assert key.masked in shown(post.body) and "Compromised" in shown(post.body)
    assert_nothing_more(world.stub, is_audit_post, since=world.stub.calls.index(post) + 1,
                        what="duplicate audit post after restart")
    assert len(audit_posts(world.stub)) == 1
    assert store.outbox.pending() == 0


def test_notice_channel_failure_does_not_affect_result_or_audit_post(world: World, store: Store):
    key = seed(store, "billing-api")
    with world.stub.lock:
        world.stub.channels_bot_is_not_in.add(INCIDENT)
    mark = world.stub.mark()
    _, outcome, thread = revoke_flow(world, key)
    assert outcome["replace_original"] is True
    assert ":white_check_mark:" in shown(outcome) and key.masked in shown(outcome)
    post = wait_audit_post(world.stub, "Key revoked", key.name, since=mark)
    assert "Compromised" in shown(post.body)
    notice = world.stub.wait_for(lambda c: c.method_name == "chat.postMessage" and c.body["channel"] == INCIDENT,
                                 since=mark, description="the notice attempt")
    assert notice.response["error"] == "not_in_channel"
    assert code(store, key) == "REVOKED"
    # The user saw the result and no error (wait for a later signal: a fresh /apikeys round trip).
    command(world, "")
    answers = responses_since(world.stub, thread, mark)
    assert answers[-1] == outcome
    assert all(a["replace_original"] is True for a in answers), [shown(a) for a in answers]  # no error message


# ======================================================================= 13. secrets


@END_TO_END
def test_no_full_key_appears_in_any_traffic_or_log(world: World, store: Store):
    keys = [seed(store, "billing-api"), seed(store, "search-indexer", owner="search-team"),
            seed(store, "mobile-app", owner="mobile")]
    replies: list[Any] = []
    for key in keys:  # the server sees the secrets through the key API
        status, _, data = world.request("POST", "/v1/keys/verify", json.dumps({"key": key.secret}),
                                        {"Content-Type": "application/json"})
        assert status == 200
        replies.append(data.decode())
    mark = world.stub.mark()
    _, outcome, thread = revoke_flow(world, keys[0])
    replies.append(outcome)
    wait_audit_post(world.stub, "Key revoked", keys[0].name, since=mark)
    for text in ("", "all", "revoked", "history", f"history {keys[0].id}", "owner search-team", "admins"):
        replies.append(command(world, text).text)
    card, card_thread = open_confirmation(world, keys[1], user=ADMIN)
    replies.append(card)
    mark = world.stub.mark()
    send_click(world, card, "Revoke Key", thread=card_thread, user=MEMBER)
    wait_audit_post(world.stub, "Revoke refused", since=mark)

    traffic = [json.dumps(c.body, ensure_ascii=False) + json.dumps(c.response, ensure_ascii=False)
               for c in world.stub.calls]
    traffic += [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in replies]
    log = world.log()
    for key in keys:
        assert not any(key.secret in t for t in traffic), f"{key.name}'s secret was sent to Slack"
        assert key.secret not in log, f"{key.name}'s secret is in the server log"
        assert key.secret[:-4] not in log


def test_a_pasted_key_is_never_echoed_back(world: World, store: Store):
    key = seed(store, "billing-api")
    mark = world.stub.mark()
    echoed = []
    for text in (f"find {key.secret}", key.secret, f"owner {key.secret}", f"history {key.secret}",
                 f"revoked {key.secret}", f"admins add {key.secret}"):
        reply = command(world, text)
        if key.secret in reply.text:
            echoed.append("/apikeys " + text.replace(key.secret, "<full key>"))
    assert echoed == [], f"the full key is shown back in the answer to: {echoed}"
    assert not any(key.secret in json.dumps(c.body) for c in world.stub.calls[mark:])
    assert key.secret not in world.log()


# ======================================================================= 14. managing admins


def test_admins_add_and_remove(world: World, store: Store):
    key = seed(store, "billing-api")
    mention = f"<@{MEMBER}|max>"

    refused = command(world, f"admins add {mention}", user=MEMBER).body
    assert "admins" in shown(refused).lower() and "Nothing changed" in shown(refused)
    assert not store.admins.is_admin(MEMBER) and not events(store, "admin.added")
    wait_audit_post(world.stub, "Command refused", f"<@{MEMBER}>")  # the refusal is recorded and posted
    [refusal] = events(store, "command.denied")
    assert refusal.actor == MEMBER and refusal.details["command"] == "admins add"

    mark = world.stub.mark()
    added = shown(command(world, f"admins add {mention}").body)
    assert f"<@{MEMBER}>" in added and "now an admin" in added
    assert store.admins.is_admin(MEMBER)
    [event] = events(store, "admin.added")
    assert event.actor == ADMIN and event.details["user_id"] == MEMBER
    post = wait_audit_post(world.stub, f"<@{MEMBER}>", "admin", since=mark)
    assert f"<@{ADMIN}>" in shown(post.body) and mentions_time(shown(post.body), event.at)
    assert f"<@{MEMBER}>" in shown(command(world, "admins").body)

    again = shown(command(world, f"admins add <@{MEMBER}>").body)
    assert "already" in again and len(events(store, "admin.added")) == 1

    # The new admin may revoke now (whichever worker answers).
    _, outcome, _ = revoke_flow(world, key, user=MEMBER)
    assert ":white_check_mark:" in shown(outcome) and code(store, key) == "REVOKED"
    assert events(store, "key.revoked")[0].actor == MEMBER

    before = snapshot(store)
    refused = shown(command(world, f"admins remove {mention}", user=BYSTANDER).body)
    assert "admins" in refused.lower() and "Nothing changed" in refused
    assert store.admins.is_admin(MEMBER) and snapshot(store) == before

    for text in (f"admins add <@{MEMBER}", "admins add max", "admins add", "admins add <@bad>",
                 f"admins remove {mention} extra", f"admins promote {mention}", "admins add <#C0INCIDENT|incident>"):
        assert is_help(command(world, text).body), text
    assert snapshot(store) == before

    mark = world.stub.mark()
    removed = shown(command(world, f"admins remove {mention}").body)
    assert f"<@{MEMBER}>" in removed and "no longer" in removed
    assert not store.admins.is_admin(MEMBER)
    [event] = events(store, "admin.removed")
    assert event.actor == ADMIN and event.details["user_id"] == MEMBER
    wait_audit_post(world.stub, f"<@{MEMBER}>", "no longer", since=mark)

    # A configured admin and a non-admin cannot be removed from Slack: told so, nothing changes.
    before = snapshot(store)
    for target in (f"<@{ADMIN}>", f"<@{BYSTANDER}|bob>"):
        answer = shown(command(world, f"admins remove {target}").body)
        assert "no longer" not in answer and ("not" in answer or "admin" in answer), answer
    assert snapshot(store) == before and store.admins.is_admin(ADMIN)
