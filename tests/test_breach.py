"""Breach response: find, leak watch, revoke by owner, reasons and history, and alerts on the use
of revoked keys.

Part A sends correctly signed Slack requests to the app in its world, like ``test_slack.py``
(``tests/slackworld.py``: the Bolt app in process, the stand-in as Slack over loopback HTTP), and
asks the key API (the production WSGI app, in process). Part B checks the use-after-revocation
counter in-process with a frozen clock. Part C checks that no seeded secret ever leaves the app
(Slack traffic, HTTP answers, the app's log).

Nothing here sleeps to wait for an effect: the stub's ``wait_for*`` block on a condition, and
"nothing more happened" is checked only after a later positive signal (for leak watch: a probe
message whose warning arrives), with a short bounded wait.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from bot.slack.audit_posts import audit_post
from bot.slack.values import OwnerAction, encode
from storage import Action, EventInput, Store, open_store
from storage.keyformat import generate_secret, is_well_formed
from storage.keys import encode_cursor
from storage.usage import RevokedKeyUse

from .helpers import ADMIN, MEMBER
from .slackhttp import find_buttons
from .slackstub import BOT_ID, OWN_TEAM, Call, assert_nothing_more
from .slackworld import (
    AUDIT,
    INCIDENT,
    Seeded,
    World,
    audit_posts,
    button_labels,
    click,
    code,
    command,
    events,
    is_audit_post,
    is_help,
    key_rows,
    mentions_time,
    outbox_rows,
    revoke_flow,
    row_names,
    seed,
    seed_many,
    select_state,
    send_click,
    shown,
    snapshot,
    wait_audit_post,
)

GENERAL = "C0GENERAL"
BOT_USER = "UBOT00001"  # the stub's bot user
_ts_numbers = itertools.count(1)
_event_numbers = itertools.count(1)


# ======================================================================= helpers


def next_ts() -> str:
    """A fresh Slack message ts (unique within the run)."""
    return f"{1700000000 + next(_ts_numbers)}.{next(_ts_numbers):06d}"


def next_event_id() -> str:
    return f"Ev0BREACH{next(_event_numbers):06d}"


def message_event(text: str, *, ts: str | None = None, channel: str = GENERAL, user: str = MEMBER,
                  **extra: Any) -> dict:
    """A channel ``message`` event as the Events API delivers it."""
    ts = ts or next_ts()
    event = {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
             "event_ts": ts, "channel_type": "channel", "team": OWN_TEAM}
    event.update(extra)
    return event


def edit_event(original_ts: str, new_text: str, old_text: str, *, channel: str = GENERAL,
               user: str = MEMBER) -> dict:
    """A ``message_changed`` event: the message (with its original ts) now reads ``new_text``."""
    ts = next_ts()
    return {
        "type": "message", "subtype": "message_changed", "hidden": True, "channel": channel,
        "ts": ts, "event_ts": ts, "channel_type": "channel",
        "message": {"type": "message", "user": user, "text": new_text, "ts": original_ts,
                    "edited": {"user": user, "ts": ts}, "team": OWN_TEAM},
        "previous_message": {"type": "message", "user": user, "text": old_text, "ts": original_ts,
                             "team": OWN_TEAM},
    }


def deliver_event(world: World, event: dict, **kw: Any):
    """Send an event; Slack needs a 200 within 3 seconds."""
    reply = world.sender.event(event, **kw)
    assert reply.status == 200, (reply.status, reply.text)
    assert reply.elapsed < 3, f"the event took {reply.elapsed:.2f}s to acknowledge"
    return reply


def is_thread_post(call: Call, thread_ts: str, channel: str = GENERAL) -> bool:
    """A (successful) bot post in the thread of ``thread_ts``."""
    return (call.kind == "api" and call.method_name == "chat.postMessage" and call.ok
            and call.body.get("channel") == channel and call.body.get("thread_ts") == thread_ts)


def thread_posts(world: World, thread_ts: str, channel: str = GENERAL) -> list[Call]:
    return [c for c in world.stub.calls if is_thread_post(c, thread_ts, channel)]


def wait_warning(world: World, thread_ts: str, *, since: int, channel: str = GENERAL) -> Call:
    return world.stub.wait_for(lambda c: is_thread_post(c, thread_ts, channel), since=since,
                               description=f"a leak warning in the thread of {thread_ts}")


def probe(world: World, key: Seeded) -> Call:
    """A positive signal through the same (asynchronous) event path: a fresh leak that must warn."""
    mark = world.stub.mark()
    event = message_event(f"probe {key.secret}")
    deliver_event(world, event, event_id=next_event_id())
    return wait_warning(world, event["ts"], since=mark)


def lookalike(secret: str) -> str:
    """The same key with one character of its random part changed: the checksum no longer matches."""
    index = 10
    changed = secret[:index] + ("B" if secret[index] == "A" else "A") + secret[index + 1:]
    assert changed != secret and not is_well_formed(changed)
    return changed


def http_verify(world: World, secret: str) -> tuple[int, str]:
    status, _, data = world.request("POST", "/v1/keys/verify", json.dumps({"key": secret}),
                                    {"Content-Type": "application/json"})
    return status, data.decode()


def http_auth(world: World, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    status, out_headers, data = world.request("GET", "/v1/auth", headers=headers)
    return status, {k.lower(): v for k, v in out_headers.items()}, data.decode()


def assert_no_secrets(world: World, secrets: list[str], http_bodies: list[Any]) -> None:
    """No seeded secret (nor its first 24 characters) in any Slack call, HTTP answer or the log."""
    traffic = [json.dumps(c.body, ensure_ascii=False) + json.dumps(c.response, ensure_ascii=False)
               for c in world.stub.calls]
    traffic += [b if isinstance(b, str) else json.dumps(b, ensure_ascii=False) for b in http_bodies]
    log = world.log()
    for secret in secrets:
        for fragment in (secret, secret[:-4]):
            leaks = [t[:200] for t in traffic if fragment in t]
            assert not leaks, f"a secret was sent out: {leaks}"
            assert fragment not in log, "a secret is in the server log"
    assert "Traceback" not in log, log[-3000:]


def find_rows(reply) -> set[str]:
    return set(key_rows(reply.body))


def expected_matches(keys: list[Seeded], query: str) -> set[str]:
    """What a fragment search should show: last four characters, name fragment or exact owner."""
    q = query.strip()
    masked = re.fullmatch(r"(?:apk_)?(?:\u2026|\.\.\.)([0-9A-Za-z]{4})", q)
    if masked:
        return {k.name for k in keys if k.secret[-4:] == masked.group(1)}
    return {k.name for k in keys
            if (re.fullmatch(r"[0-9A-Za-z]{4}", q) and k.secret[-4:] == q)
            or q.lower() in k.name.lower() or k.owner == q}


# ======================================================================= A1. /apikeys find


def test_find_a_pasted_key_or_a_fragment(world: World, store: Store):
    billing = seed(store, "billing-api", owner="payments")
    worker = seed(store, "billing-worker", owner="payments")
    search = seed(store, "search-indexer", owner="search-team")
    mobile = seed(store, "mobile-app", owner="mobile")
    old = seed(store, "old-checkout", owner="payments")
    store.keys.revoke(old.id, via="cli", actor=ADMIN, reason="rotation")
    keys = [billing, worker, search, mobile, old]
    bodies: list[Any] = []
    before = snapshot(store)

    # A pasted active key: its card (status, owner, Revoke), never the key itself.
    reply = command(world, f"find {billing.secret}")
    bodies.append(reply.text)
    assert billing.secret not in reply.text and billing.secret[:-4] not in reply.text
    text = shown(reply.body)
    assert billing.name in text and billing.masked in text and billing.owner in text
    assert "Active" in text and "Revoked" not in text and billing.id in text
    assert row_names(reply.body) == [billing.name]
    assert button_labels(reply.body) == ["Revoke", "Rotate", "History"]
    for other in (worker, search, mobile, old):
        assert other.name not in text

    # The Revoke on that card opens the confirmation for that key, in place.
    card = click(world, reply.body, "Revoke", thread=reply.response_url)
    bodies.append(card)
    assert card["replace_original"] is True
    assert billing.name in shown(card) and sorted(button_labels(card)) == ["Cancel Revoke Key", "Revoke Key"]

    # A pasted revoked key: Revoked, no Revoke button.
    reply = command(world, f"find {old.secret}")
    bodies.append(reply.text)
    assert old.secret not in reply.text
    text = shown(reply.body)
    assert old.name in text and old.masked in text and "Revoked" in text and "Active" not in text
    assert not find_buttons(reply.body, "Revoke")

    # A well-formed key this store never issued: not ours.
    foreign = generate_secret()
    reply = command(world, f"find {foreign}")
    bodies.append(reply.text)
    assert foreign not in reply.text and foreign[:-4] not in reply.text
    text = shown(reply.body)
    assert "not one this key store issued" in text, text
    assert not find_buttons(reply.body) and not key_rows(reply.body)

    # A look-alike with a broken checksum: said so, not echoed.
    broken = lookalike(search.secret)
    reply = command(world, f"find {broken}")
    bodies.append(reply.text)
    assert broken not in reply.text and broken[:-4] not in reply.text
    text = shown(reply.body)
    assert "checksum does not match" in text, text
    assert not find_buttons(reply.body) and not key_rows(reply.body)

    # Fragments: the last four characters, masked forms, a name fragment, an owner.
    queries = [search.secret[-4:], f"apk_\u2026{mobile.secret[-4:]}", f"apk_...{worker.secret[-4:]}",
               f"\u2026{old.secret[-4:]}", "billing", "BILL", "checkout", "search-team", "payments"]
    for query in queries:
        reply = command(world, f"find {query}")
        bodies.append(reply.text)
        expected = expected_matches(keys, query)
        assert expected, query
        assert find_rows(reply) == expected, f"/apikeys find {query}: {shown(reply.body)}"
        # Active ones can be revoked from there; the revoked one cannot.
        for name, row in key_rows(reply.body).items():
            has_button = (row.get("accessory") or {}).get("type") == "button"
            assert has_button == (name != old.name), (query, name)
    assert find_rows(command(world, "find billing")) == {billing.name, worker.name}
    assert find_rows(command(world, "find search-team")) == {search.name}
    nothing = command(world, "find no-such-thing")
    assert not key_rows(nothing.body) and "No keys match" in shown(nothing.body)

    # find with nothing: the help.
    for text in ("find", "find   "):
        assert is_help(command(world, text).body), text

    assert snapshot(store) == before
    assert not world.stub.api_calls("chat.postMessage")
    assert_no_secrets(world, [k.secret for k in keys] + [foreign, broken], bodies)


# ======================================================================= A2. leak watch


def test_leak_watch_warns_once_in_the_thread_and_never_revokes(world: World, store: Store):
    key = seed(store, "billing-api", owner="payments")
    second = seed(store, "search-indexer", owner="search-team")
    third = seed(store, "mobile-app", owner="mobile")
    gone = seed(store, "old-checkout", owner="payments")
    store.keys.revoke(gone.id, via="cli", actor=ADMIN, reason="rotation")
    canary = seed(store, "canary", owner="probe-team")
    ci = seed(store, "ci-runner", owner="platform")
    bodies: list[Any] = []

    def deliver(world: World, event: dict, **kw: Any):  # every ack is checked for secrets at the end
        reply = deliver_event(world, event, **kw)
        bodies.append(reply.text)
        return reply

    # A member pastes a key in #general, among other words.
    mark = world.stub.mark()
    ts = next_ts()
    pasted = message_event(f"deploy failed :( try curl -H 'X-API-Key: {key.secret}' and tell me", ts=ts)
    event_id = next_event_id()
    deliver(world, pasted, event_id=event_id)
    warning = wait_warning(world, ts, since=mark)
    body = warning.body
    assert body["thread_ts"] == ts
    text = shown(body)
    assert key.name in text and key.masked in text and key.owner in text
    assert f"<@{MEMBER}>" in text
    assert button_labels(body) == ["Revoke"]

    post = wait_audit_post(world.stub, "Key leaked", key.masked, since=mark)
    assert key.name in shown(post.body) and f"<#{GENERAL}>" in shown(post.body)
    [leaked] = events(store, "key.leaked")
    assert leaked.key_id == key.id and leaked.actor == "apikeys"
    assert leaked.details["channel_id"] == GENERAL and leaked.details["message_ts"] == ts
    assert leaked.details["posted_by"] == MEMBER and leaked.details["key"] == key.masked

    # Slack retries the same delivery: no second warning, no second event.
    deliver(world, pasted, event_id=event_id, retry_num=1)
    deliver(world, pasted, event_id=event_id, retry_num=2, retry_reason="http_error")

    # A look-alike (one character changed) and the bot's own messages: nothing.
    fake_ts = next_ts()
    deliver(world, message_event(f"is this it? {lookalike(second.secret)}", ts=fake_ts), event_id=next_event_id())
    own_ts = next_ts()
    deliver(world, message_event(f"echo {second.secret}", ts=own_ts, user=BOT_USER, bot_id=BOT_ID,
                                 subtype="bot_message", app_id="A0APIKEYS"), event_id=next_event_id())
    own_user_ts = next_ts()
    deliver(world, message_event(f"echo {second.secret}", ts=own_user_ts, user=BOT_USER),
            event_id=next_event_id())

    signal = probe(world, canary)
    since = world.stub.calls.index(warning) + 1
    assert_nothing_more(world.stub, lambda c: is_thread_post(c, ts) or is_thread_post(c, fake_ts)
                        or is_thread_post(c, own_ts) or is_thread_post(c, own_user_ts),
                        since=since, what="warning for a retry, a look-alike or the bot's own message")
    assert [c.body["thread_ts"] for c in world.stub.calls[:world.stub.calls.index(signal)]
            if c.method_name == "chat.postMessage" and c.body.get("channel") == GENERAL] == [ts]
    assert len(events(store, "key.leaked", key.id)) == 1
    assert not events(store, "key.leaked", second.id)

    # An edit that keeps the same key: nothing new. An edit that adds another known key: one
    # warning, about the new key only, in the same message's thread.
    original = f"deploy failed :( try curl -H 'X-API-Key: {key.secret}' and tell me"
    mark = world.stub.mark()
    deliver(world, edit_event(ts, original + " (edited: typo)", original), event_id=next_event_id())
    added = original + f" or the search one {second.secret}"
    deliver(world, edit_event(ts, added, original + " (edited: typo)"), event_id=next_event_id())
    new_warning = world.stub.wait_for(lambda c: is_thread_post(c, ts), since=mark,
                                      description="a warning about the added key")
    text = shown(new_warning.body)
    assert second.masked in text and second.owner in text and second.name in text
    assert key.masked not in text and key.name not in text
    probe(world, canary)
    assert_nothing_more(world.stub, lambda c: is_thread_post(c, ts),
                        since=world.stub.calls.index(new_warning) + 1, what="another warning for the edits")
    posts = thread_posts(world, ts)
    assert len(posts) == 2, [shown(c.body)[:160] for c in posts]
    assert len(events(store, "key.leaked", key.id)) == 1
    assert len(events(store, "key.leaked", second.id)) == 1

    # A reply in a thread: the warning goes to the parent's thread.
    parent_ts = next_ts()
    reply_ts = next_ts()
    mark = world.stub.mark()
    deliver(world, message_event(f"here you go {third.secret}", ts=reply_ts, thread_ts=parent_ts),
            event_id=next_event_id())
    in_thread = wait_warning(world, parent_ts, since=mark)
    assert third.masked in shown(in_thread.body)
    [leak3] = events(store, "key.leaked", third.id)
    assert leak3.details["message_ts"] == reply_ts

    # A key inside an attachment (pasted logs): warned about too.
    logs_ts = next_ts()
    mark = world.stub.mark()
    deliver(world, message_event("CI logs attached", ts=logs_ts,
                                 attachments=[{"fallback": "build log", "text": f"export API_KEY={ci.secret}\nexit 1"}]),
            event_id=next_event_id())
    assert ci.masked in shown(wait_warning(world, logs_ts, since=mark).body)

    # A revoked key pasted: still warned about (delete the message), but nothing to revoke.
    gone_ts = next_ts()
    mark = world.stub.mark()
    deliver(world, message_event(f"old one: {gone.secret}", ts=gone_ts), event_id=next_event_id())
    gone_warning = wait_warning(world, gone_ts, since=mark)
    assert gone.masked in shown(gone_warning.body) and "revoked" in shown(gone_warning.body).lower()
    assert not find_buttons(gone_warning.body, "Revoke")

    # One audit-channel alert per leak; leak watch never revokes anything.
    for leaked_key in (key, second, third, gone, ci):
        wait_audit_post(world.stub, "Key leaked", leaked_key.masked)
    mark = world.stub.mark()
    probe(world, canary)
    wait_audit_post(world.stub, "Key leaked", canary.masked, since=mark)
    for leaked_key in (key, second, third):
        posts = audit_posts(world.stub, "Key leaked", leaked_key.masked)
        assert len(posts) == 1, (leaked_key.name, [shown(c.body)[:160] for c in posts])
        assert code(store, leaked_key) == "VALID"
    assert not events(store, "key.revoked", key.id) and not events(store, "key.revoked", second.id)
    assert_no_secrets(world, [k.secret for k in (key, second, third, gone, canary, ci)], bodies)


# ======================================================================= A3. Revoke on the public warning


def test_revoke_from_the_public_leak_warning(world: World, store: Store):
    key = seed(store, "billing-api", owner="payments")
    mark = world.stub.mark()
    ts = next_ts()
    deliver_event(world, message_event(f"token {key.secret}", ts=ts), event_id=next_event_id())
    warning = wait_warning(world, ts, since=mark)
    warning_ts = warning.response["ts"]
    wait_audit_post(world.stub, "Key leaked", key.masked, since=mark)

    def open_card(user: str) -> tuple[dict, str]:
        thread = world.stub.response_url("leak-warning")
        before = world.stub.mark()
        send_click(world, warning.body, "Revoke", thread=thread, user=user, channel=GENERAL,
                   ephemeral=False, message_ts=warning_ts)
        card = world.stub.wait_for_response(thread, since=before)
        # A NEW ephemeral message: the public warning stays as it is.
        assert card["replace_original"] is False, "the public leak warning was replaced"
        assert card["response_type"] == "ephemeral"
        assert key.name in shown(card) and key.masked in shown(card)
        assert sorted(button_labels(card)) == ["Cancel Revoke Key", "Revoke Key"]
        return card, thread

    # A member clicks the public warning's Revoke: refused at once, privately, naming the admins to ask.
    thread = world.stub.response_url("leak-warning")
    mark = world.stub.mark()
    send_click(world, warning.body, "Revoke", thread=thread, user=MEMBER, channel=GENERAL,
               ephemeral=False, message_ts=warning_ts)
    refusal = world.stub.wait_for_response(thread, since=mark)
    assert refusal["replace_original"] is False and "Not opened" in shown(refusal)
    assert f"<@{ADMIN}>" in shown(refusal) and not button_labels(refusal)
    world.settle()  # the handlers behind the ack have finished: nothing more can change
    assert code(store, key) == "VALID"
    [denied] = events(store, "key.revoke_denied")
    assert denied.actor == MEMBER and denied.key_id == key.id

    # An admin opens it and revokes.
    card, thread = open_card(ADMIN)
    [select] = [b["accessory"] for b in card["blocks"] if b.get("accessory", {}).get("type") == "static_select"]
    assert select["initial_option"]["value"] == "compromised", "a leak's Revoke preselects the reason"
    mark = world.stub.mark()
    send_click(world, card, "Revoke Key", thread=thread, user=ADMIN, channel=GENERAL)  # the preselected reason
    result = world.stub.wait_for_response(thread, since=mark)
    assert result["replace_original"] is True and ":white_check_mark:" in shown(result)
    assert code(store, key) == "REVOKED"
    [revoked] = events(store, "key.revoked")
    assert revoked.actor == ADMIN and revoked.details["reason"] == "compromised"
    post = wait_audit_post(world.stub, "Key revoked", key.masked, since=mark)
    assert "Compromised" in shown(post.body) and f"<@{ADMIN}>" in shown(post.body)
    # The warning in the thread is kept true: updated in place, no live button left.
    updated = world.stub.wait_for_api("chat.update", lambda c: c.body["ts"] == warning_ts, since=mark)
    assert f"Revoked by <@{ADMIN}>" in shown(updated.body) and "(Compromised)" in shown(updated.body)
    assert not find_buttons(updated.body, "Revoke")
    # Revoke on the warning again, now that the key is revoked: told so privately, warning kept.
    thread = world.stub.response_url("leak-warning")
    mark = world.stub.mark()
    send_click(world, warning.body, "Revoke", thread=thread, user=ADMIN, channel=GENERAL,
               ephemeral=False, message_ts=warning_ts)
    again = world.stub.wait_for_response(thread, since=mark)
    assert again["replace_original"] is False and "already revoked" in shown(again)
    assert len(events(store, "key.revoked")) == 1
    # Every reply went to a response_url (ephemeral); none of them replaced the warning.
    assert all(c.body.get("replace_original") is not True
               for c in world.stub.calls if c.kind == "response" and "leak-warning" in c.url
               and "Revoke Key" in button_labels(c.body))
    assert_no_secrets(world, [key.secret], [])


# ======================================================================= A4. revoke-owner


def owner_card(world: World, owner: str, *, user: str = ADMIN):
    return command(world, f"revoke-owner {owner}", user=user)


def test_revoke_owner_revokes_exactly_the_keys_shown(world: World, store: Store):
    names = ["billing-api", "billing-worker", "invoices", "refunds", "ledger"]
    mine = [seed(store, name, owner="payments") for name in names]
    old = seed(store, "old-checkout", owner="payments")
    store.keys.revoke(old.id, via="cli", actor="ops", reason="rotation")
    others = [seed(store, "search-indexer", owner="search-team"), seed(store, "mobile-app", owner="mobile")]
    before = snapshot(store)

    reply = owner_card(world, "payments")
    card = reply.body
    text = shown(card)
    for key in mine:
        assert key.name in text and key.masked in text, key.name
    assert old.name not in text
    for key in others:
        assert key.name not in text
    assert button_labels(card) == ["Cancel Revoke Key", "Revoke 5 Keys"]
    assert find_buttons(card, "Revoke 5 Keys")[0].get("style") == "danger"

    # Cancel: nothing changes.
    mark = world.stub.mark()
    back = click(world, card, "Cancel Revoke Key", thread=reply.response_url)
    assert back["replace_original"] is True
    assert sorted(row_names(back)) == sorted(names)
    assert snapshot(store) == before
    assert_nothing_more(world.stub, is_audit_post, since=mark, what="audit post after Cancel", timeout=0.5)

    # Confirm (with a reason), after a new key of the same owner appeared meanwhile.
    reply = owner_card(world, "payments")
    card = reply.body
    late = seed(store, "late-key", owner="payments")
    mark = world.stub.mark()
    result = click(world, card, "Revoke 5 Keys", thread=reply.response_url, state=select_state(card, "compromised"))
    assert result["replace_original"] is True
    assert "Revoked 5 keys" in shown(result) and "payments" in shown(result)
    for key in mine:
        assert code(store, key) == "REVOKED", key.name
    assert code(store, late) == "VALID", "a key created after the confirmation was revoked"
    for key in others:
        assert code(store, key) == "VALID"

    revoked = [e for e in events(store, "key.revoked") if e.key_id != old.id]
    assert sorted(e.key_id for e in revoked) == sorted(k.id for k in mine)
    assert all(e.actor == ADMIN and e.details["reason"] == "compromised" for e in revoked)
    assert len({e.at for e in revoked}) == 1  # one go
    [old_event] = events(store, "key.revoked", old.id)
    assert old_event.actor == "ops" and store.keys.get(old.id).revoked_by == "ops"

    summary = wait_audit_post(world.stub, "5 keys revoked", since=mark)
    summary_text = shown(summary.body)
    assert "payments" in summary_text and f"<@{ADMIN}>" in summary_text and "Compromised" in summary_text
    for key in mine:
        assert key.name in summary_text
    notice = world.stub.wait_for_api("chat.postMessage", lambda c: c.body["channel"] == INCIDENT, since=mark)
    assert "5" in shown(notice.body) and "payments" in shown(notice.body)
    assert_nothing_more(world.stub, is_audit_post, since=world.stub.calls.index(summary) + 1,
                        what="a second audit post for one bulk revocation")
    assert len(audit_posts(world.stub, since=mark)) == 1
    assert len(outbox_rows(store)) == 1

    # The history shows it; a second click on the same card revokes nothing more (not even the late key).
    assert f"<@{ADMIN}>" in shown(command(world, f"history {mine[0].id}").body)
    again = click(world, card, "Revoke 5 Keys", thread=reply.response_url)
    assert "Revoked 0 keys" in shown(again), shown(again)
    assert code(store, late) == "VALID"
    assert len(events(store, "key.revoked")) == 6
    assert [k.name for k in store.keys.list_keys(status="active", owner="payments").items] == [late.name]


def test_revoke_owner_with_many_keys_and_who_may_do_it(world: World, store: Store):
    fleet = seed_many(store, "fleet", 32, owner="fleet")
    bystander = seed(store, "search-indexer", owner="search-team")

    # A member is refused up front, and nothing changes (another member than the one below: the audit
    # channel hears of one user's refusals at most once in five minutes).
    before = snapshot(store)
    refused = command(world, "revoke-owner fleet", user="UMEMBER02").body
    assert "admins" in shown(refused).lower() and "Nothing changed" in shown(refused)
    assert not find_buttons(refused)
    assert snapshot(store) == before
    wait_audit_post(world.stub, "Command refused", "<@UMEMBER02>")  # recorded and posted
    assert [e.actor for e in events(store, "command.denied")] == ["UMEMBER02"]

    reply = owner_card(world, "fleet")
    card = reply.body
    text = shown(card)
    assert "and 12 more" in text, text
    assert len(re.findall(r"\*fleet-\d+\*", text)) == 20
    assert button_labels(card) == ["Cancel Revoke Key", "Revoke 32 Keys"]

    # A forged "Revoke 32 Keys" by a member: refused, recorded, nothing revoked.
    newest = store.keys.list_keys(status="active", owner="fleet", limit=1).items[0]
    forged = encode(OwnerAction(owner="fleet", up_to=encode_cursor(newest), count=32,
                                             issued_at=int(time.time())))
    action_id = find_buttons(card, "Revoke 32 Keys")[0]["action_id"]
    thread = world.stub.response_url("forged")
    mark = world.stub.mark()
    assert world.sender.click(action_id, forged, text="Revoke 32 Keys", user=MEMBER,
                              response_url=thread).status == 200
    refusal = world.stub.wait_for_response(thread, since=mark)
    assert refusal["replace_original"] is False and "Not revoked" in shown(refusal)
    [denied] = events(store, "key.revoke_denied")
    assert denied.actor == MEMBER and denied.details.get("owner") == "fleet"
    world.settle()  # the handlers behind the ack have finished: nothing more can change
    assert all(code(store, k) == "VALID" for k in fleet)
    refused_post = wait_audit_post(world.stub, "Revoke refused", f"<@{MEMBER}>", since=mark)

    # A stale (an hour old) bulk confirmation, even from an admin: refused.
    stale = encode(OwnerAction(owner="fleet", up_to=encode_cursor(newest), count=32,
                                            issued_at=int(time.time()) - 3600))
    mark = world.stub.mark()
    assert world.sender.click(action_id, stale, text="Revoke 32 Keys", user=ADMIN,
                              response_url=thread).status == 200
    refusal = world.stub.wait_for_response(thread, since=mark)
    assert refusal["replace_original"] is False and "Not revoked" in shown(refusal)
    denied = events(store, "key.revoke_denied")
    assert len(denied) == 2 and denied[1].actor == ADMIN and "minutes old" in denied[1].details["why"]
    world.settle()  # the handlers behind the ack have finished: nothing more can change
    assert all(code(store, k) == "VALID" for k in fleet)
    assert not events(store, "key.revoked")

    # The real card revokes all 32 (not only the 20 named), and nothing else.
    mark = world.stub.mark()
    result = click(world, card, "Revoke 32 Keys", thread=reply.response_url)
    assert "Revoked 32 keys" in shown(result)
    assert all(code(store, k) == "REVOKED" for k in fleet)
    assert code(store, bystander) == "VALID"
    assert len(events(store, "key.revoked")) == 32
    summary = wait_audit_post(world.stub, "32 keys revoked", since=mark)
    assert "and 22 more" in shown(summary.body) and "not given" in shown(summary.body)
    assert_nothing_more(world.stub, is_audit_post, since=world.stub.calls.index(summary) + 1,
                        what="a second audit post for one bulk revocation")

    # Nothing left to revoke.
    again = command(world, "revoke-owner fleet").body
    assert "no active keys" in shown(again) and not find_buttons(again)

    # The audit channel must say what the refused bulk revocation was about (whose keys, how many),
    # not that someone "tried to revoke an unknown key".
    refused_text = shown(refused_post.body)
    assert "fleet" in refused_text and "unknown key" not in refused_text, (
        "the audit post for a refused bulk revocation does not name the owner: " + refused_text)


# ======================================================================= A5. reasons and history


def test_reasons_and_history(world: World, store: Store, run_cli):
    slack_key = seed(store, "billing-api", owner="payments")
    cli_key = seed(store, "search-indexer", owner="search-team")

    mark = world.stub.mark()
    _, outcome, _ = revoke_flow(world, slack_key, reason="compromised")
    assert "Compromised" in shown(outcome)
    [event] = events(store, "key.revoked", slack_key.id)
    assert event.details["reason"] == "compromised"
    post = wait_audit_post(world.stub, "Key revoked", slack_key.masked, since=mark)
    assert "Compromised" in shown(post.body)

    history = command(world, f"history {slack_key.id}").body
    lines = [line for line in shown(history).split("\n") if "key.revoked" in line]
    assert len(lines) == 1, shown(history)
    line = lines[0]
    assert f"<@{ADMIN}>" in line and mentions_time(line, event.at) and "Compromised" in line, line
    assert "key.created" in shown(history) and cli_key.name not in shown(history)

    # The break-glass path: same trail, with its reason.
    mark = world.stub.mark()
    result = run_cli("revoke", cli_key.id, "--actor", "ops@example.com", "--reason", "rotation",
                     env={"APIKEYS_AUDIT_CHANNEL": AUDIT})
    assert result.code == 0, result.err
    [cli_event] = events(store, "key.revoked", cli_key.id)
    assert cli_event.details["reason"] == "rotation" and cli_event.details["via"] == "cli"
    history = shown(command(world, f"history {cli_key.id}").body)
    line = next(line for line in history.split("\n") if "key.revoked" in line)
    assert "Rotation" in line and "ops@example.com" in line and mentions_time(line, cli_event.at), line
    post = wait_audit_post(world.stub, "Key revoked", cli_key.masked, since=mark, timeout=15)
    assert "Rotation" in shown(post.body)
    everything = shown(command(world, "history").body)
    assert "Rotation" in everything and "Compromised" in everything


def test_history_pages_back_and_forth(world: World, store: Store):
    key = seed(store, "noisy", owner="payments")
    quiet = seed(store, "quiet", owner="payments")
    for i in range(1, 41):
        store.audit.record(EventInput(actor=MEMBER, action=Action.KEY_REVOKE_DENIED, key_id=key.id,
                                      details={"name": key.name, "key": key.masked, "why": f"attempt {i:02d}"}))

    def attempts(page: dict) -> list[int]:
        return [int(n) for n in re.findall(r"attempt (\d\d)", shown(page))]

    reply = command(world, f"history {key.id}")
    thread = reply.response_url
    page1 = reply.body
    assert attempts(page1) == list(range(40, 25, -1))
    assert button_labels(page1) == ["Next"]
    assert quiet.name not in shown(page1)

    page2 = click(world, page1, "Next", thread=thread)
    assert attempts(page2) == list(range(25, 10, -1))
    assert button_labels(page2) == ["Previous", "Next"]
    page3 = click(world, page2, "Next", thread=thread)
    assert attempts(page3) == list(range(10, 0, -1)) and "key.created" in shown(page3)
    assert button_labels(page3) == ["Previous"]

    back2 = click(world, page3, "Previous", thread=thread)
    assert attempts(back2) == attempts(page2), "Previous did not return to the page before"
    assert button_labels(back2) == ["Previous", "Next"]
    back1 = click(world, back2, "Previous", thread=thread)
    assert attempts(back1) == attempts(page1)
    assert button_labels(back1) == ["Next"]


# ======================================================================= A6. use after revocation


def test_revoked_key_presented_over_http_alerts_once_an_hour(world: World, store: Store):
    key = seed(store, "billing-api", owner="payments")
    other = seed(store, "search-indexer", owner="search-team")
    store.keys.revoke(key.id, via="cli", actor=ADMIN, reason="compromised")
    bodies: list[Any] = []

    mark = world.stub.mark()
    status, text = http_verify(world, key.secret)
    bodies.append(text)
    assert status == 200
    answer = json.loads(text)
    assert answer["code"] == "REVOKED" and answer["valid"] is False and answer["key_id"] == key.id

    alert = wait_audit_post(world.stub, "Revoked key presented", key.masked, since=mark)
    alert_text = shown(alert.body)
    assert key.name in alert_text and "1 use" in alert_text, alert_text
    [used] = events(store, "key.used_after_revoke")
    assert used.key_id == key.id and used.details["uses"] == 1 and used.details["via"] == "verify"
    assert mentions_time(alert_text, used.at)

    # More presentations within the hour, through both routes: counted, no further alert.
    presentations = 1
    for headers in ({"Authorization": f"Bearer {key.secret}"}, {"X-API-Key": key.secret},
                    {"Authorization": f"Bearer {key.secret}"}):
        status, out_headers, text = http_auth(world, headers)
        bodies.append(text)
        presentations += 1
        assert status == 401 and out_headers.get("www-authenticate") == "Bearer"
        assert json.loads(text)["code"] == "REVOKED"
    for _ in range(2):
        status, text = http_verify(world, key.secret)
        bodies.append(text)
        presentations += 1
        assert json.loads(text)["code"] == "REVOKED"
    # A valid key is still served (and never counted).
    status, out_headers, _ = http_auth(world, {"Authorization": f"Bearer {other.secret}"})
    assert status == 204 and out_headers.get("x-key-id") == other.id

    assert len(events(store, "key.used_after_revoke")) == 1  # (events() waits for the use recorder)
    usage = store.keys.revoked_uses.get(key.id)
    assert usage is not None and usage.uses == presentations
    assert store.keys.revoked_uses.get(other.id) is None

    # A later positive signal on the audit channel, then check nothing more about that key came.
    mark = world.stub.mark()
    revoke_flow(world, other, reason="rotation")
    signal = wait_audit_post(world.stub, "Key revoked", other.masked, since=mark)
    assert_nothing_more(world.stub, lambda c: is_audit_post(c) and "Revoked key presented" in shown(c.body),
                        since=world.stub.calls.index(alert) + 1, what="a second use-after-revocation alert")
    assert len(audit_posts(world.stub, "Revoked key presented")) == 1
    assert store.outbox.pending() == 0
    assert f"<@{ADMIN}>" in shown(signal.body)
    assert_no_secrets(world, [key.secret, other.secret], bodies)


# ======================================================================= B. in-process, frozen clock


@pytest.fixture
def alerting(store: Store, database_url: str):
    """A store on the test database that queues audit-channel posts (like the server does)."""
    s = open_store(database_url, notify_channel=AUDIT, create_schema=False)
    yield s
    s.close()


def used_events(s: Store, key_id: str | None = None):
    return [e for e in events(s, "key.used_after_revoke") if key_id is None or e.key_id == key_id]


def alert_rows(s: Store) -> int:
    """Outbox rows that report a key.used_after_revoke event."""
    ids = {e.id for e in used_events(s)}
    return sum(1 for row in outbox_rows(s) if json.loads(row.payload)["first"] in ids)


T = datetime(2031, 3, 14, 9, 26, 53, tzinfo=timezone.utc)


def test_use_after_revocation_alerts_at_most_once_an_hour(alerting: Store):
    s = alerting
    with freeze_time(T - timedelta(days=1)):
        created = s.keys.create(name="billing-api", owner="payments", actor="seed")[0]
    key_id, secret = created.key.id, created.secret
    with freeze_time(T) as clock:
        outcome = s.keys.revoke(key_id, via="cli", actor=ADMIN, reason="compromised")
        assert outcome.revoked_now
        assert s.keys.revoked_uses.get(key_id) is None  # revoking is not a use

        schedule = [  # (offset, uses after it, alerts so far)
            (timedelta(seconds=1), 1, 1),
            (timedelta(minutes=10), 2, 1),
            (timedelta(minutes=59, seconds=59), 3, 1),
            (timedelta(hours=1, seconds=1), 4, 2),
            (timedelta(hours=1, minutes=30), 5, 2),
            (timedelta(hours=2, seconds=2), 6, 3),
        ]
        for offset, uses, alerts in schedule:
            clock.move_to(T + offset)
            assert s.keys.verify(secret).code.value == "REVOKED"
            assert s.keys.flush_uses()
            usage = s.keys.revoked_uses.get(key_id)
            assert usage.uses == uses, offset
            assert usage.last_at == T + offset, offset
            assert usage.first_at == T + timedelta(seconds=1)
            assert len(used_events(s, key_id)) == alerts, f"at T+{offset}"
            assert alert_rows(s) == alerts, f"outbox at T+{offset}"

    alerts = used_events(s, key_id)
    assert [e.details["uses"] for e in alerts] == [1, 4, 6]
    assert [e.at for e in alerts] == [T + timedelta(seconds=1), T + timedelta(hours=1, seconds=1),
                                     T + timedelta(hours=2, seconds=2)]
    assert all(e.details["key"] == created.key.masked and e.details["revoked_by"] == ADMIN for e in alerts)
    assert all(row.channel == AUDIT for row in outbox_rows(s))

    # The alert as posted: what was presented, how often, when last.
    text = shown(audit_post([s.audit.between(alerts[1].id, alerts[1].id)[0]])[1])
    assert "Revoked key presented" in text and created.key.masked in text and "billing-api" in text
    assert "4 use(s)" in text, text
    assert f"last at <!date^{int((T + timedelta(hours=1, seconds=1)).timestamp())}^" in text, text
    assert mentions_time(text, T)  # when it was revoked
    assert secret not in text


def test_valid_unknown_and_malformed_keys_are_never_counted(alerting: Store):
    s = alerting
    created = s.keys.create(name="billing-api", owner="payments", actor="seed")[0]
    for candidate in (created.secret, created.secret, generate_secret(), lookalike(created.secret), "nonsense", ""):
        s.keys.verify(candidate)
    assert s.keys.flush_uses()
    with s.db.read() as session:
        assert session.scalar(select(func.count()).select_from(RevokedKeyUse)) == 0
    assert not used_events(s) and alert_rows(s) == 0


def test_racing_first_presentations_raise_one_alert(alerting: Store):
    """Eight workers (a store each: each has its own use recorder, as each worker process does) see
    the first presentations at once; their writes race, and one alert is raised."""
    s = alerting
    created = s.keys.create(name="billing-api", owner="payments", actor="seed")[0]
    s.keys.revoke(created.key.id, via="cli", actor=ADMIN, reason="compromised")
    threads = 8
    workers_stores = [open_store(s.db.url, notify_channel=AUDIT, create_schema=False) for _ in range(threads)]
    barrier = threading.Barrier(threads)
    codes: list[str] = []
    errors: list[BaseException] = []

    def present(store: Store) -> None:
        try:
            barrier.wait(timeout=10)
            codes.append(store.keys.verify(created.secret).code.value)
            assert store.keys.flush_uses()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    try:
        with freeze_time(datetime.now(timezone.utc) + timedelta(minutes=5)):
            workers = [threading.Thread(target=present, args=(store,)) for store in workers_stores]
            for w in workers:
                w.start()
            for w in workers:
                w.join(timeout=30)
    finally:
        for store in workers_stores:
            store.close()
    assert not errors, errors
    assert codes == ["REVOKED"] * threads
    assert s.keys.revoked_uses.get(created.key.id).uses == threads
    alerts = used_events(s, created.key.id)
    assert len(alerts) == 1, [e.details for e in alerts]
    assert 1 <= alerts[0].details["uses"] <= threads
    assert alert_rows(s) == 1
