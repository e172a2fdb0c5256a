"""Through the incident in the Slack stand-in: rotate with a grace period and a one-time link, the
owners' channels told, every card kept true, who sees which button, history by name, notes, the
expiry digest. Storage's side of the same promises is tests/test_rotation.py; the browser opening
a link is tests/test_playground.py."""

from __future__ import annotations

import json
import re
import urllib.parse
from datetime import timedelta

import pytest
from freezegun import freeze_time

from bot.config import Settings
from bot.selfcheck import SelfCheckThread
from storage import Store
from storage.leaks import Match
from storage.reveals import decrypt

from .helpers import ADMIN, MEMBER, everything_stored
from .slackhttp import find_buttons
from .slackstub import assert_nothing_more
from .slackworld import (
    World,
    blocks_of,
    button_labels,
    click,
    code,
    command,
    events,
    seed,
    send_click,
    shown,
    wait_audit_post,
    wait_until,
)

PUBLIC = "https://apikeys.example.com"
OWNERS = "C0PAYMENTS"
GENERAL = "C0GENERAL"
LINK_RE = re.compile(r"<(https://apikeys\.example\.com/reveal/[^|>#]+)#([^|>]+)\|Open the new key>")


@pytest.fixture
def rotating(make_world) -> World:
    return make_world({"APIKEYS_PUBLIC_URL": PUBLIC})


def key_actions(listing: dict, key_id: str) -> list[dict]:
    """The row's buttons below it (``Rotate``; ``History`` on a card)."""
    return [b for b in blocks_of(listing) if b.get("block_id") == f"keyactions_{key_id}"]


def rotation_state(card: dict, grace: str | None, note: str | None = None) -> dict:
    values: dict = {}
    if grace is not None:
        option = {"text": {"type": "plain_text", "text": grace}, "value": grace}
        values["apikeys_grace"] = {"apikeys.rotate.grace": {"type": "static_select", "selected_option": option}}
    if note is not None:
        values["apikeys_note"] = {"apikeys.note": {"type": "plain_text_input", "value": note}}
    return values


def open_rotation(world: World, key, *, user: str = ADMIN) -> tuple[dict, str]:
    listing = command(world, "", user=ADMIN)
    card = click(world, key_actions(listing.body, key.id), "Rotate", thread=listing.response_url, user=user)
    return card, listing.response_url


def rotate(world: World, key, *, grace: str | None = "24 hours", note: str | None = None) -> dict:
    card, thread = open_rotation(world, key)
    assert button_labels(card) == ["Cancel Rotate Key", "Rotate Key"], shown(card)
    return click(world, card, "Rotate Key", thread=thread, state=rotation_state(card, grace, note))


def open_link(world: World, result: dict) -> tuple[str, str, str]:
    """The result's one-time link opened as its page's script does: (path, fragment, the secret)."""
    match = LINK_RE.search(json.dumps(result))
    assert match, shown(result)
    path = urllib.parse.urlsplit(match.group(1)).path
    status, _, body = world.request("POST", path, b"", {"X-Apikeys-Reveal": "1"})
    assert status == 200, body
    return path, match.group(2), decrypt(json.loads(body)["ciphertext"], match.group(2))


# ======================================================================= rotate


def test_rotate_key_makes_the_replacement_and_gives_a_one_time_link_never_the_secret(rotating: World, store: Store):
    key = seed(store, "billing-api", owner="payments", expires_in=timedelta(days=90))
    card, thread = open_rotation(rotating, key)
    assert card["replace_original"] is True
    assert button_labels(card) == ["Cancel Rotate Key", "Rotate Key"]
    [grace] = [b["accessory"] for b in card["blocks"] if b.get("block_id") == "apikeys_grace"]
    assert [o["value"] for o in grace["options"]] == ["now", "1 hour", "24 hours", "7 days"]
    assert grace["initial_option"]["value"] == "24 hours"
    assert key.masked in shown(card) and "one-time link" in shown(card)

    mark = rotating.stub.mark()
    result = click(rotating, card, "Rotate Key", thread=thread, state=rotation_state(card, "1 hour", "INC-7 vault"))
    assert result["replace_original"] is True and "Rotated" in shown(result)
    [rotated] = events(store, "key.rotated", key.id)
    new_id = rotated.details["new_key_id"]
    assert rotated.details["grace"] == "1 hour" and rotated.details["note"] == "INC-7 vault"
    assert new_id in shown(result) and rotated.actor == ADMIN
    assert code(store, key) == "VALID", "the old key works through its grace period"
    old = store.keys.get(key.id)
    assert old.rotated_to == new_id and timedelta(minutes=59) < old.expires_at - old.rotated_at <= timedelta(hours=1)
    assert store.keys.get(new_id).expires_at - store.keys.get(new_id).created_at == timedelta(days=90)
    post = wait_audit_post(rotating.stub, "Key rotated", key.masked, since=mark)
    assert new_id in shown(post.body) and "1 hour" in shown(post.body)
    assert len(rotating.stub.api_calls("chat.postMessage")) >= 1

    path, _, secret = open_link(rotating, result)
    assert store.keys.verify(secret).code.value == "VALID" and store.keys.verify(secret).key_id == new_id
    again = rotating.request("POST", path, b"", {"X-Apikeys-Reveal": "1"})
    assert again[0] == 410 and secret not in again[2].decode()
    page = rotating.request("GET", path)
    assert page[0] == 410 and b"Link used up" in page[2] and secret.encode() not in page[2]
    [revealed] = events(store, "key.secret_revealed", new_id)
    assert revealed.details["link_for"] == ADMIN
    wait_audit_post(rotating.stub, "New key viewed", since=mark)

    # The secret is nowhere: not in Slack, not in the log, not in the database.
    traffic = "".join(json.dumps(c.body) + json.dumps(c.response) for c in rotating.stub.calls)
    assert secret not in traffic and secret[4:] not in traffic
    assert secret not in rotating.log() and secret[4:] not in rotating.log()
    assert secret not in everything_stored(rotating.database_url)


def test_the_reveal_page_takes_nothing_on_a_look_and_refuses_a_post_without_its_header(rotating: World, store: Store):
    key = seed(store, "billing-api")
    result = rotate(rotating, key)
    match = LINK_RE.search(json.dumps(result))
    path = urllib.parse.urlsplit(match.group(1)).path
    for _ in range(2):  # a link preview or a mail scanner fetching the page takes nothing
        status, headers, body = rotating.request("GET", path)
        assert status == 200 and b"Show the key" in body
        assert "script-src 'sha256-" in dict(headers)["Content-Security-Policy"]
    forged = rotating.request("POST", path, b"", {})  # a hostile page's plain form post
    assert forged[0] == 403
    assert rotating.request("GET", "/reveal/" + "A" * 32)[0] == 404
    assert rotating.request("GET", "/reveal/not..a..token")[0] == 404
    _, _, secret = open_link(rotating, result)
    assert store.keys.verify(secret).code.value == "VALID"


def test_rotate_now_revokes_the_old_key_at_once_with_the_reason_rotation(rotating: World, store: Store):
    key = seed(store, "billing-api")
    result = rotate(rotating, key, grace="now")
    assert "revoked at once" in shown(result)
    assert code(store, key) == "REVOKED"
    [revoked] = events(store, "key.revoked", key.id)
    assert revoked.details["reason"] == "rotation"
    _, _, secret = open_link(rotating, result)
    assert store.keys.verify(secret).code.value == "VALID"


def test_a_rotating_key_shows_its_end_and_offers_no_second_rotation(rotating: World, store: Store):
    key = seed(store, "billing-api")
    rotate(rotating, key, grace="7 days")
    listing = command(rotating, "")
    text = shown(listing.body)
    assert f"Rotated by <@{ADMIN}>" in text and "works until" in text
    assert not find_buttons(key_actions(listing.body, key.id), "Rotate")
    # A Rotate click from an older list: told, nothing changed.
    card, thread = open_rotation(rotating, seed(store, "other"))
    mark = rotating.stub.mark()
    send_click(rotating, card, "Rotate Key", thread=thread)
    rotating.stub.wait_for_response(thread, since=mark)
    [first] = events(store, "key.rotated", key.id)
    again = click(rotating, card, "Rotate Key", thread=thread)  # the same card again: a replay
    assert "Not rotated" in shown(again)
    assert len(events(store, "key.rotated")) == 2 and first.details["grace"] == "7 days"


def test_rotating_without_a_public_url_says_how_to_set_it_and_changes_nothing(world: World, store: Store):
    key = seed(store, "billing-api")
    card, thread = open_rotation(world, key)
    assert "APIKEYS_PUBLIC_URL" in shown(card)
    answer = click(world, card, "Rotate Key", thread=thread, state=rotation_state(card, "1 hour"))
    assert "Not rotated" in shown(answer) and "APIKEYS_PUBLIC_URL" in shown(answer)
    world.settle()
    assert not events(store, "key.rotated") and store.keys.get(key.id).rotated_to is None


def test_a_member_is_shown_no_rotate_and_a_forged_rotate_is_refused_naming_the_admins(rotating: World, store: Store):
    key = seed(store, "billing-api")
    assert "Rotate" not in button_labels(command(rotating, "", user=MEMBER).body)
    listing = command(rotating, "")
    refused = click(rotating, key_actions(listing.body, key.id), "Rotate", thread=listing.response_url, user=MEMBER)
    assert "Not opened" in shown(refused) and f"<@{ADMIN}>" in shown(refused)
    card, thread = open_rotation(rotating, key)  # an admin's card, clicked by a member
    answer = click(rotating, card, "Rotate Key", thread=thread, user=MEMBER)
    assert "Not rotated" in shown(answer) and f"<@{ADMIN}>" in shown(answer)
    rotating.settle()
    assert store.keys.get(key.id).rotated_to is None
    assert [e.actor for e in events(store, "key.rotate_denied")] == [MEMBER, MEMBER]
    wait_audit_post(rotating.stub, "Rotate refused")  # one post; the second refusal is counted in the next


def test_a_member_typing_revoke_or_rotate_is_told_at_once_naming_the_admins(world: World, store: Store):
    for word in ("rotate billing-api", "revoke billing-api", "revoke-owner payments"):
        reply = command(world, word, user=MEMBER)
        assert "Only apikeys admins" in shown(reply.body) and f"<@{ADMIN}>" in shown(reply.body), word
    assert "find" in shown(command(world, "rotate billing-api").body)


# ======================================================================= owners' channels


def test_an_owners_channel_is_told_what_happened_who_did_it_and_what_next(rotating: World, store: Store):
    store.owners.set("payments", OWNERS, actor="ops")
    revoked, rotated, other = seed(store, "billing-api"), seed(store, "checkout"), seed(store, "search", owner="search")
    mark = rotating.stub.mark()
    listing = command(rotating, "")
    card = click(rotating, [b for b in blocks_of(listing.body) if b.get("block_id") == f"key_{revoked.id}"], "Revoke",
                 thread=listing.response_url)
    click(rotating, card, "Revoke Key", thread=listing.response_url)
    told = rotating.stub.wait_for_api("chat.postMessage", lambda c: c.body["channel"] == OWNERS, since=mark)
    text = shown(told.body)
    assert revoked.masked in text and "revoked" in text and f"<@{ADMIN}>" in text and "What now" in text
    assert "replacement" in text and revoked.secret not in text

    mark = rotating.stub.mark()
    rotate(rotating, rotated, grace="1 hour")
    told = rotating.stub.wait_for_api("chat.postMessage", lambda c: c.body["channel"] == OWNERS, since=mark)
    assert "rotated" in shown(told.body) and "holds the new key" in shown(told.body)
    # Another owner's key: nothing in this channel.
    mark = rotating.stub.mark()
    rotating.app_store.keys.revoke(other.id, actor="ops", via="cli")  # the server's store: audit channel on
    wait_audit_post(rotating.stub, "Key revoked", other.masked, since=mark)
    assert_nothing_more(rotating.stub, lambda c: c.kind == "api" and c.body.get("channel") == OWNERS, since=mark,
                        what="a post about another owner's key")
    owners = shown(command(rotating, "owners").body)
    assert "payments" in owners and OWNERS in owners


def test_an_owners_channel_is_told_of_a_leak_found_by_leak_watch(world: World, store: Store):
    store.owners.set("payments", OWNERS, actor="ops")
    key = seed(store, "billing-api")
    mark = world.stub.mark()
    world.sender.event({"type": "message", "channel": GENERAL, "user": MEMBER, "text": f"try {key.secret}",
                        "ts": "1700000100.000100"})
    told = world.stub.wait_for_api("chat.postMessage", lambda c: c.body["channel"] == OWNERS, since=mark)
    assert "found leaked" in shown(told.body) and "still active" in shown(told.body)
    assert key.secret not in json.dumps(told.body)


# ======================================================================= cards kept true


def test_the_leak_warning_is_updated_when_the_key_is_rotated(rotating: World, store: Store):
    key = seed(store, "billing-api")
    mark = rotating.stub.mark()
    rotating.sender.event({"type": "message", "channel": GENERAL, "user": MEMBER, "text": f"key {key.secret}",
                           "ts": "1700000200.000200"})
    warning = rotating.stub.wait_for_api("chat.postMessage", lambda c: c.body.get("thread_ts") == "1700000200.000200",
                                         since=mark)
    assert find_buttons(warning.body, "Revoke")
    mark = rotating.stub.mark()
    rotate(rotating, key, grace="1 hour")
    updated = rotating.stub.wait_for_api("chat.update", lambda c: c.body["ts"] == warning.response["ts"], since=mark)
    assert f"Rotated by <@{ADMIN}>" in shown(updated.body) and not find_buttons(updated.body, "Revoke")
    assert rotating.stub.messages[(GENERAL, warning.response["ts"])]["blocks"] == updated.body["blocks"]


def test_a_public_leak_post_loses_its_revoke_once_the_key_is_revoked(world: World, store: Store):
    key = seed(store, "billing-api")
    mark = world.stub.mark()
    world.app_store.leaks.report([Match(token=key.secret, url="https://github.com/acme/app/blob/main/.env")], actor="ops",
                       policy="alert", via="cli")
    post = wait_audit_post(world.stub, "found in public", since=mark)
    assert find_buttons(post.body, "Revoke")
    wait_until(lambda: store.cards.of_key(key.id), "the post's reference kept")
    mark = world.stub.mark()
    world.app_store.keys.revoke(key.id, actor="alice", via="cli", reason="compromised")
    updated = world.stub.wait_for_api("chat.update", lambda c: c.body["ts"] == post.response["ts"], since=mark)
    assert "Revoked by alice" in shown(updated.body) and not find_buttons(updated.body, "Revoke")
    assert "still active" not in shown(updated.body)


def test_a_card_whose_message_is_gone_is_not_retried(world: World, store: Store):
    key = seed(store, "billing-api")
    store.cards.keep([key.id], channel=GENERAL, ts="1700000300.000300", kind="leak_warning", context={"poster": MEMBER})
    world.stub.fail_next("chat.update", error="message_not_found")
    mark = world.stub.mark()
    world.app_store.keys.revoke(key.id, actor="alice", via="cli")
    wait_audit_post(world.stub, "Key revoked", since=mark)
    wait_until(lambda: all(r.delivered_at is not None for r in _outbox(store)), "every post done")
    assert len(world.stub.api_calls("chat.update")) == 1


def _outbox(store: Store):
    from sqlalchemy import select

    from storage.outbox import OutboxMessage

    with store.db.read() as session:
        return list(session.scalars(select(OutboxMessage)))


# ======================================================================= cards: key id, History, note


def test_a_key_card_shows_its_id_and_a_history_button(world: World, store: Store):
    key = seed(store, "billing-api")
    store.keys.revoke(seed(store, "other").id, actor="ops", via="cli")
    card = command(world, f"find {key.name}")
    assert key.id in shown(card.body)
    history = click(world, key_actions(card.body, key.id), "History", thread=card.response_url)
    assert "key.created" in shown(history) or "created" in shown(history).lower()
    assert key.name in shown(history) and "other" not in shown(history)


def test_history_by_name(world: World, store: Store):
    key = seed(store, "billing-api")
    store.keys.revoke(key.id, actor="ops", via="cli", reason="compromised")
    assert "Compromised" in shown(command(world, "history billing-api").body)
    assert "No key is named" in shown(command(world, "history nothing-like-it").body)
    twin = seed(store, "billing-api")
    both = shown(command(world, "history billing-api").body)
    assert key.id in both and twin.id in both and "2 keys are named" in both


def test_a_note_on_a_confirmation_is_stored_masked(world: World, store: Store):
    key = seed(store, "billing-api")
    other = seed(store, "pasted")
    listing = command(world, "")
    card = click(world, [b for b in blocks_of(listing.body) if b.get("block_id") == f"key_{key.id}"], "Revoke",
                 thread=listing.response_url)
    assert [b for b in card["blocks"] if b["type"] == "input" and b["optional"] is True]
    state = {"apikeys_note": {"apikeys.note": {"type": "plain_text_input", "value": f"INC-9, it was {other.secret}"}}}
    click(world, card, "Revoke Key", thread=listing.response_url, state=state)
    [revoked] = events(store, "key.revoked", key.id)
    assert revoked.details["note"].startswith("INC-9, it was apk_") and other.secret not in revoked.details["note"]
    assert other.secret not in everything_stored(world.database_url)


# ======================================================================= the expiry digest


def test_the_expiry_digest_tells_the_owners_channel_once(world: World, store: Store):
    store.owners.set("payments", OWNERS, actor="ops")
    soon = seed(store, "billing-api", expires_in=timedelta(days=2, hours=1))
    later = seed(store, "search", owner="search", expires_in=timedelta(days=10))
    seed(store, "forever")
    mark = world.stub.mark()
    assert len(world.app_store.expiry.send()) == 2  # the server's store: the audit channel is the fallback
    told = world.stub.wait_for_api("chat.postMessage", lambda c: c.body["channel"] == OWNERS, since=mark)
    assert soon.masked in shown(told.body) and "within 3 days" in shown(told.body)
    audit = world.stub.wait_for_api("chat.postMessage", lambda c: "expiring soon" in shown(c.body)
                                    and c.body["channel"] == "C0AUDIT", since=mark)
    assert later.masked in shown(audit.body) and soon.masked not in shown(audit.body)
    assert world.app_store.expiry.send() == []  # told once per threshold


def test_the_server_clock_sends_the_digest_at_its_hour_once_and_sweeps_expired_links(database_url: str, store: Store):
    store.owners.set("payments", OWNERS, actor="ops")
    settings = Settings.from_env({"DATABASE_URL": database_url, "APIKEYS_EXPIRY_DIGEST_HOUR": "9"})
    clock = SelfCheckThread(store, settings)

    def seal(session, key_id, secret, now):
        return store.reveals.seal(session, key_id=key_id, secret=secret, for_user=ADMIN, now=now)

    try:
        with freeze_time("2030-01-01 08:50:00") as frozen:
            soon = seed(store, "billing-api", expires_in=timedelta(days=2))
            store.keys.rotate(seed(store, "checkout").id, actor=ADMIN, via="cli", grace=timedelta(hours=1), seal=seal)
            clock.tick()  # before nine, and the link is still good: nothing
            assert _topics(store) == []
            frozen.move_to("2030-01-01 09:06:00")
            clock.tick()
            assert _topics(store) == ["expiry", "text"]
            [expiry] = [json.loads(r.payload) for r in _outbox(store) if r.topic == "expiry"]
            assert expiry["keys"] == [[soon.id, 3]]
            [dm] = [r for r in _outbox(store) if r.topic == "text"]
            assert dm.channel == ADMIN and "expired unviewed" in json.loads(dm.payload)["text"]
            assert [e.action for e in store.audit.recent(limit=3)][0] == "key.reveal_expired"
            frozen.move_to("2030-01-01 15:00:00")
            clock.tick()  # the same day: not again
            assert _topics(store) == ["expiry", "text"]
    finally:
        clock.stop()


def _topics(store: Store) -> list[str]:
    return sorted(r.topic for r in _outbox(store) if r.topic in ("expiry", "text"))


# ======================================================================= the command line


def test_apikeys_rotate_prints_the_new_key_once_and_the_old_one_keeps_its_grace(run_cli, database_url: str):
    created = run_cli("create", "--name", "billing-api", "--owner", "payments", "--expires-in", "30d", "--json")
    old = json.loads(created.out)
    result = run_cli("rotate", old["id"], "--actor", "alice", "--grace", "1h")
    assert result.code == 0, result.err
    [secret] = [line for line in result.out.splitlines() if line.startswith("apk_")]
    assert "keeps working until" in result.out and "(1 hour)" in result.out
    assert run_cli("verify", "-", stdin=secret).out.strip() == "VALID"
    assert run_cli("verify", "-", stdin=old["key"]).out.strip() == "VALID"
    assert secret not in everything_stored(database_url)
    again = run_cli("rotate", old["id"], "--actor", "alice")
    assert again.code == 2 and "already rotated" in again.err


def test_apikeys_rotate_reads_the_leaked_key_itself_and_now_revokes_it(run_cli):
    old = json.loads(run_cli("create", "--name", "billing-api", "--owner", "payments", "--json").out)
    result = run_cli("rotate", "-", "--actor", "alice", "--grace", "now", "--json", stdin=old["key"] + "\n")
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert answer["grace"] == "now" and answer["old"]["status"] == "revoked" and answer["new"]["key"].startswith("apk_")
    assert old["key"] not in result.out + result.err
    assert run_cli("verify", "-", stdin=old["key"]).out.strip() == "REVOKED"
    assert run_cli("verify", "-", stdin=answer["new"]["key"]).out.strip() == "VALID"


@pytest.mark.parametrize("argv, said", [
    (["rotate", "key_" + "A" * 17, "--actor", "a", "--grace", "31d"], "at most 30 days"),
    (["rotate", "key_" + "A" * 17, "--actor", "a", "--grace", "soon"], "invalid duration"),
    (["rotate", "key_" + "A" * 17], "--actor"),
    (["rotate", "key_" + "A" * 17, "--actor", "a"], "no key"),
    (["owners", "set", "payments", "--channel", "#payments"], "not a Slack channel ID"),
    (["owners", "remove", "nobody"], "has no channel"),
    (["notify"], "expiring"),
])
def test_bad_input_on_the_new_commands_exits_2_and_changes_nothing(run_cli, argv, said):
    result = run_cli(*argv)
    assert result.code == 2 and said in result.err and "Traceback" not in result.err, result.err
    assert run_cli("audit", "--json").out.count("key.rotated") == 0


def test_apikeys_owners_set_list_remove(run_cli):
    assert "is told in C0PAYMENTS" in run_cli("owners", "set", "payments", "--channel", "C0PAYMENTS", "--actor", "a").out
    assert "nothing changed" in run_cli("owners", "set", "payments", "--channel", "C0PAYMENTS").out
    listed = json.loads(run_cli("owners", "list", "--json").out)
    assert [(o["owner"], o["channel_id"], o["set_by"]) for o in listed] == [("payments", "C0PAYMENTS", "a")]
    assert run_cli("owners", "remove", "payments", "--actor", "a").code == 0
    assert "No owner has a channel" in run_cli("owners", "list").out
    audit = run_cli("audit", "--json").out
    assert audit.count("owner.channel_set") == 1 and audit.count("owner.channel_removed") == 1


def test_apikeys_notify_expiring_queues_the_digest_once(run_cli):
    run_cli("owners", "set", "payments", "--channel", "C0PAYMENTS")
    run_cli("create", "--name", "billing-api", "--owner", "payments", "--expires-in", "2d")
    first = run_cli("notify", "expiring")
    assert first.code == 0 and "Queued 1 expiry notice to C0PAYMENTS" in first.out
    assert "Nothing to send" in run_cli("notify", "expiring").out


# ======================================================================= the outbox under a slow Slack


def test_a_post_whose_lease_ran_out_is_left_to_the_deliverer_that_took_it(database_url: str):
    """Deliverer A claims a batch; Slack is so slow on the first post that the lease runs out and B
    takes the rest. A must not send what B now holds: each post goes out once."""
    from bot.slack.delivery import Deliverer
    from storage import open_store

    from .helpers import RecordingClient

    store = open_store(database_url, bootstrap_admins=[ADMIN], notify_channel="C0AUDIT")
    try:
        with freeze_time("2030-01-01 10:00:00") as frozen:
            for name in ("one", "two", "three"):
                seed(store, name)
            b_client = RecordingClient()
            b = Deliverer(store, b_client)

            class Slow(RecordingClient):
                def chat_postMessage(self, **kwargs):  # noqa: N802
                    if not self.posts:
                        frozen.tick(timedelta(seconds=61))  # the lease of A's batch runs out …
                        while b.deliver_due():  # … and B takes what is left
                            pass
                    return super().chat_postMessage(**kwargs)

            a_client = Slow()
            a = Deliverer(store, a_client)
            assert a.deliver_due()
            texts = [p["text"] for p in a_client.posts + b_client.posts]
            assert len(texts) == 3 and len(set(texts)) == 3, texts
            assert len(a_client.posts) == 1 and len(b_client.posts) == 2
    finally:
        store.close()


def test_a_grace_this_app_did_not_offer_is_refused_and_changes_nothing(rotating: World, store: Store):
    key = seed(store, "billing-api")
    card, thread = open_rotation(rotating, key)
    answer = click(rotating, card, "Rotate Key", thread=thread, state=rotation_state(card, "30 days"))
    assert "Not rotated" in shown(answer)
    rotating.settle()
    assert store.keys.get(key.id).rotated_to is None and events(store, "key.rotate_denied")


def test_rotating_a_key_found_leaked_preselects_now_and_says_why(rotating: World, store: Store):
    key = seed(store, "billing-api")
    mark = rotating.stub.mark()
    rotating.sender.event({"type": "message", "channel": GENERAL, "user": MEMBER, "text": f"key {key.secret}",
                           "ts": "1700000400.000400"})
    wait_audit_post(rotating.stub, "Key leaked", since=mark)
    card, _ = open_rotation(rotating, key)
    [grace] = [b["accessory"] for b in card["blocks"] if b.get("block_id") == "apikeys_grace"]
    assert grace["initial_option"]["value"] == "now" and "found leaked" in shown(card)


def test_when_the_card_cannot_be_answered_the_link_goes_to_the_admin_directly(rotating: World, store: Store):
    key = seed(store, "billing-api")
    card, thread = open_rotation(rotating, key)
    rotating.stub.fail_next("response", status=404, times=3)  # the response_url is gone
    mark = rotating.stub.mark()
    send_click(rotating, card, "Rotate Key", thread=thread, state=rotation_state(card, "1 hour"))
    direct = rotating.stub.wait_for_api("chat.postMessage", lambda c: c.body["channel"] == ADMIN, since=mark)
    _, _, secret = open_link(rotating, direct.body)
    assert store.keys.verify(secret).code.value == "VALID"


def test_a_post_showing_several_keys_revoked_together_is_updated_once(world: World, store: Store):
    keys = [seed(store, f"svc-{i}") for i in range(3)]
    mark = world.stub.mark()
    world.app_store.leaks.report([Match(token=k.secret, url=f"https://github.com/acme/app/blob/main/{i}.env")
                                  for i, k in enumerate(keys)], actor="ops", policy="alert", via="cli")
    post = wait_audit_post(world.stub, "found in public", since=mark)
    wait_until(lambda: all(store.cards.of_key(k.id) for k in keys), "the post's references kept")
    from storage.keys import encode_cursor

    newest = world.app_store.keys.list_keys(status="active", owner="payments", limit=1).items[0]
    mark = world.stub.mark()
    world.app_store.keys.revoke_owner("payments", up_to=encode_cursor(newest), actor="alice", via="cli")
    updated = world.stub.wait_for_api("chat.update", lambda c: c.body["ts"] == post.response["ts"], since=mark)
    assert not find_buttons(updated.body, "Revoke") and "3 revoked or rotated since" in shown(updated.body)
    wait_until(lambda: all(r.delivered_at is not None for r in _outbox(store)), "every post done")
    assert len(world.stub.api_calls("chat.update")) == 1


def test_a_card_update_that_keeps_failing_or_names_nothing_is_given_up(database_url: str):
    from slack_sdk.errors import SlackApiError
    from sqlalchemy import update

    from bot.slack.delivery import CARD_ATTEMPTS, Deliverer
    from storage import open_store
    from storage.outbox import OutboxMessage

    class Refusing:
        calls = 0

        def chat_update(self, **kwargs):
            Refusing.calls += 1
            raise SlackApiError("no", {"ok": False, "error": "not_in_channel"})

    store = open_store(database_url, bootstrap_admins=[ADMIN])
    try:
        key = seed(store, "billing-api")
        store.cards.keep([key.id], channel=GENERAL, ts="1700000500.000500", kind="leak_warning", context={})
        with store.db.write() as session:
            store.outbox.enqueue(session, topic="card", channel=GENERAL, payload={"ref": 10**9, "key_id": key.id})
        store.keys.revoke(key.id, actor="alice", via="cli")
        deliverer = Deliverer(store, Refusing())
        deliverer.deliver_due()  # the reference to nothing: done; the real one: failed once
        assert [(r.payload, r.delivered_at is None) for r in _outbox(store)][0][1] is False
        with store.db.write() as session:  # it has failed all but once already
            session.execute(update(OutboxMessage).where(OutboxMessage.delivered_at.is_(None))
                            .values(attempts=CARD_ATTEMPTS - 1, next_attempt_at=OutboxMessage.created_at))
        deliverer.deliver_due()
        assert all(r.delivered_at is not None for r in _outbox(store)) and Refusing.calls == 2
    finally:
        store.close()
