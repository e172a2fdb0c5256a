"""Block Kit builders: pure functions, checked against slack_sdk's own models and Slack's limits."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from slack_sdk.models.blocks import Block

from bot.slack import audit_posts, blocks, owner_posts
from bot.slack.values import (
    BadValue,
    HistoryView,
    KeyAction,
    ListView,
    OwnerAction,
    decode,
    decode_page,
    encode,
)
from storage import Action, ApiKey
from storage.admins import AdminEntry
from storage.audit import AuditEvent
from storage.keyformat import generate_secret
from storage.keys import KeyPage
from storage.owners import OwnerEntry

from .slacklimits import assert_within_limits

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def make_key(i: int = 1, **overrides) -> ApiKey:
    values = dict(id=f"key_{i:017d}", name=f"service-{i}", owner="payments", prefix="apk", last4="QVjP",
                  digest="0" * 64, created_at=NOW - timedelta(days=i), created_by="cli:ops")
    values.update(overrides)
    return ApiKey(**values)


def buttons(payload: list[dict]) -> list[dict]:
    found = []
    for block in payload:
        if block.get("accessory", {}).get("type") == "button":
            found.append(block["accessory"])
        found += [e for e in block.get("elements", []) if e.get("type") == "button"]
    return found


def assert_valid(payload: list[dict]) -> None:
    """slack_sdk's own validation, and Slack's limits checked by the one checker every Slack test uses."""
    assert_within_limits(payload)
    for block in payload:
        Block.parse(block).validate_json()


def test_a_full_page_of_keys_fits_a_message_and_every_row_has_a_revoke_button():
    page = KeyPage(items=[make_key(i) for i in range(blocks.KEYS_PER_PAGE)], next_cursor="c1", prev_cursor="c0")
    payload = blocks.key_list(page, ListView(), total=1001, now=NOW, admin=True)
    assert_valid(payload)
    labels = [b["text"]["text"] for b in buttons(payload)]
    assert labels.count("Revoke") == blocks.KEYS_PER_PAGE and labels.count("Rotate") == blocks.KEYS_PER_PAGE
    assert "Next" in labels and "Previous" in labels
    text = json.dumps(payload, ensure_ascii=False)
    assert "apk_…QVjP" in text and "payments" in text and "1,000+ in all" in text


def test_a_member_sees_no_button_that_changes_anything():
    page = KeyPage(items=[make_key(i) for i in range(3)], next_cursor="c1", prev_cursor=None)
    labels = [b["text"]["text"] for b in buttons(blocks.key_list(page, ListView(), total=3, now=NOW, admin=False))]
    assert labels == ["Next"]
    card = blocks.find_results([make_key(1)], "x", NOW, exact=True, admin=False)
    assert [b["text"]["text"] for b in buttons(card)] == ["History"]


def test_a_rotating_key_says_so_with_its_end_and_offers_no_second_rotation():
    rotating = make_key(1, rotated_to="key_00000000000000099", rotated_at=NOW, rotated_by="UADMIN001",
                        expires_at=NOW + timedelta(hours=24))
    payload = blocks.key_list(KeyPage([rotating], None, None), ListView(), total=1, now=NOW, admin=True)
    text = json.dumps(payload, ensure_ascii=False)
    assert "Rotated by <@UADMIN001>" in text and "works until" in text and "key_00000000000000099" in text
    assert [b["text"]["text"] for b in buttons(payload)] == ["Revoke"]


def test_revoked_and_expired_rows_have_no_revoke_button_and_say_why():
    revoked = make_key(1, revoked_at=NOW, revoked_by="UADMIN001", revoke_reason="compromised")
    expired = make_key(2, expires_at=NOW - timedelta(hours=1))
    payload = blocks.key_list(KeyPage([revoked, expired], None, None), ListView(status="all"), total=2, now=NOW,
                              admin=True)
    assert buttons(payload) == []
    text = json.dumps(payload, ensure_ascii=False)
    assert "Revoked" in text and "<@UADMIN001>" in text and "Compromised" in text and "Expired" in text


def test_names_cannot_inject_mrkdwn_links_or_mentions():
    payload = blocks.key_list(KeyPage([make_key(1, name="<!channel> & <https://evil|click>")], None, None),
                              ListView(), total=1, now=NOW, admin=True)
    text = json.dumps(payload, ensure_ascii=False)
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;" in text


def test_confirmation_has_exact_labels_danger_style_and_reason_choices():
    payload = blocks.confirm_revoke(make_key(), ListView(owner="payments"), reason="rotation", issued_at=123)
    assert_valid(payload)
    by_label = {b["text"]["text"]: b for b in buttons(payload)}
    assert set(by_label) == {"Cancel Revoke Key", "Revoke Key"}
    assert by_label["Revoke Key"]["style"] == "danger"
    assert "style" not in by_label["Cancel Revoke Key"]
    confirm = decode(KeyAction, by_label["Revoke Key"]["value"])
    assert confirm.key_id == make_key().id and confirm.reason == "rotation" and confirm.issued_at == 123
    assert decode(KeyAction, by_label["Cancel Revoke Key"]["value"]).view == ListView(owner="payments")
    select = next(b["accessory"] for b in payload if b.get("accessory", {}).get("type") == "static_select")
    assert [o["value"] for o in select["options"]] == ["compromised", "rotation", "decommissioned", "other"]
    assert select["initial_option"]["value"] == "rotation"


def test_audit_post_names_key_admin_reason_time_and_channel():
    from storage.audit import AuditEvent

    event = AuditEvent(id=7, at=NOW, actor="UADMIN001", action="key.revoked", key_id="key_x",
                       details=json.dumps({"name": "billing", "key": "apk_…QVjP", "owner": "payments",
                                           "reason": "compromised", "channel_id": "C0INCIDENT"}),
                       prev_hash="0" * 64, hash="1" * 64)
    text, payload = audit_posts.audit_post([event])
    assert_valid(payload)
    body = payload[0]["text"]["text"]
    for expected in ("billing", "apk_…QVjP", "<@UADMIN001>", "Compromised", "<#C0INCIDENT>", "<!date^"):
        assert expected in body
    assert "Key revoked" in text


def test_every_audit_post_names_the_position_and_head_it_follows():
    events = [event(i, "key.revoked", actor="UADMIN001", name=f"k{i}") for i in (41, 42)]
    events[-1] = AuditEvent(**{**events[-1].model_dump(), "hash": "3f9a0b1c2d3e" + "f" * 52})
    _, payload = audit_posts.audit_post(events)
    assert payload[-1] == {"type": "context", "elements": [{"type": "mrkdwn", "text": "#42 · 3f9a0b1c2d3e…"}]}
    from bot.witness import WITNESS_RE

    assert WITNESS_RE.search(payload[-1]["elements"][0]["text"]).groups() == ("42", "3f9a0b1c2d3e")


def test_every_action_has_its_own_audit_post():
    assert set(audit_posts.AUDIT_POSTS) == set(Action)


def test_a_refused_command_is_posted_with_the_command_the_user_and_why():
    text, payload = audit_posts.audit_post([event(3, "command.denied", actor="UADMIN001", command="admins add",
                                             user_id="UMEMBER01", why="a replayed request", channel_id="C0INCIDENT")])
    body = payload[0]["text"]["text"]
    for expected in ("Command refused", "<@UADMIN001>", "`/apikeys admins add`", "<@UMEMBER01>",
                     "a replayed request", "<#C0INCIDENT>"):
        assert expected in body, body
    assert text.startswith(":warning: *Command refused*")


def test_history_splits_long_pages_within_section_limits():
    from storage.audit import AuditEvent

    events = [AuditEvent(id=i, at=NOW, actor="cli:ops", action="key.created", key_id=f"key_{i}",
                         details=json.dumps({"name": "n" * 70, "key": "apk_…abcd", "owner": "o"}),
                         prev_hash="0" * 64, hash="1" * 64) for i in range(15, 0, -1)]
    payload = blocks.history_blocks(events, HistoryView(), has_older=True, has_newer=False, key=None)
    assert_valid(payload)
    assert [b["text"]["text"] for b in buttons(payload)] == ["Next"]


@pytest.mark.parametrize("value", [None, "", "x", "[]", "{}", '{"k": 5}', '{"k": "key_x"}', "{" * 3000,
                                   '{"k": "key_00000000000000001", "l": {"s": "bogus"}}',
                                   '{"k": "key_00000000000000001", "t": "yesterday"}',
                                   # strict parsing: no coercion of strings, booleans or floats to numbers
                                   '{"k": "key_00000000000000001", "t": "5"}',
                                   '{"k": "key_00000000000000001", "t": true}',
                                   '{"k": "key_00000000000000001", "t": 5.0}',
                                   '{"k": "key_00000000000000001", "t": -1}',
                                   '{"k": "key_00000000000000001", "t": 9007199254740992}',
                                   '{"k": "key_00000000000000001", "r": 3}',
                                   '{"k": "key_00000000000000001\\n"}',
                                   '{"k": "key_00000000000000001", "l": []}',
                                   '{"k": "key_00000000000000001", "l": {"o": "payments\\n"}}',
                                   '{"k": "key_00000000000000001", "l": {"a": "%s"}}' % ("c" * 81)])
def test_values_we_did_not_render_are_rejected(value):
    with pytest.raises(BadValue):
        decode(KeyAction, value)
    with pytest.raises(BadValue):
        decode_page(value)


@pytest.mark.parametrize("value", ['{"v": "h", "i": true}', '{"v": "h", "j": "7"}', '{"v": "h", "i": 2147483648}',
                                   '{"v": "h", "k": "key_x"}', '{"v": "x"}', '{"v": 1}', '{"v": "l", "s": "bogus"}',
                                   '{"o": "fleet", "u": "c", "n": 3}'])
def test_page_and_owner_values_we_did_not_render_are_rejected(value):
    with pytest.raises(BadValue):
        decode_page(value)
    with pytest.raises(BadValue):
        decode(OwnerAction, value)


def test_the_statuses_a_list_value_accepts_are_storages():
    from typing import get_args

    from bot.slack.values import Status
    from storage.keys import STATUSES

    assert set(get_args(Status)) == set(STATUSES)


def test_values_are_compact_and_leave_defaults_out():
    assert encode(ListView()) == '{"v":"l"}'
    assert encode(KeyAction(key_id="key_00000000000000001")) == '{"k":"key_00000000000000001"}'
    owner = OwnerAction(owner="fleet", up_to="c", count=3, issued_at=9)
    assert encode(owner) == '{"o":"fleet","u":"c","n":3,"t":9}' and decode(OwnerAction, encode(owner)) == owner
    history = HistoryView(key_id="key_00000000000000001", before_id=7)
    assert decode_page(encode(history)) == history


def test_values_round_trip():
    view = ListView(status="revoked", owner="payments", after="20261126000000000000.key_00000000000000001")
    assert decode_page(encode(view)) == view
    action = KeyAction(key_id="key_00000000000000001", view=view, reason="other", issued_at=5)
    assert decode(KeyAction, encode(action)) == action


def event(i: int, action: str = "key.created", actor: str = "cli:ops", **details) -> AuditEvent:
    return AuditEvent(id=i, at=NOW, actor=actor, action=action, key_id=f"key_{i}", details=json.dumps(details),
                      prev_hash="0" * 64, hash="1" * 64)


def section_texts(payload: list[dict]) -> list[str]:
    return [b["text"]["text"] for b in payload if b["type"] == "section" and "text" in b]


def test_history_with_long_notes_full_of_key_shaped_text_splits_within_section_limits():
    """Masking makes key-shaped text longer (``apk_12345678`` -> ``apk_…5678[redacted]``): the
    split must measure the masked text, or a section ends up over Slack's 3,000 characters."""
    note = "apk_12345678 " * 38  # a note (494 of at most 500 characters) of key-shaped fragments
    events = [event(i, "key.revoked", name="n" * 80, key="apk_…abcd", owner="payments", reason="compromised",
                    note=note, why="apk_ABCDEFGH " * 10) for i in range(15, 0, -1)]
    payload = blocks.history_blocks(events, HistoryView(), has_older=True, has_newer=True, key=None)
    assert_valid(payload)
    texts = section_texts(payload)
    assert len(texts) > 3  # it did split
    shown = "\n".join(texts)
    assert "apk_12345678" not in shown and "apk_ABCDEFGH" not in shown and "apk_…5678[redacted]" in shown
    lines = "\n".join(texts[1:]).split("\n")  # after the title
    assert len(lines) == 15 and all(line.endswith("[redacted] ”") for line in lines)  # every event, whole
    assert "…" not in shown.replace("apk_…", "")  # nothing was cut
    assert [b["text"]["text"] for b in buttons(payload)] == ["Previous", "Next"]


def test_one_history_line_longer_than_a_section_is_shortened_not_dropped():
    events = [event(2, "key.revoked", name="n", key="apk_…abcd", note="apk_12345678" * 300), event(1, name="last")]
    payload = blocks.history_blocks(events, HistoryView(), has_older=False, has_newer=False, key=None)
    assert_valid(payload)
    shown = "\n".join(section_texts(payload))
    assert "apk_12345678" not in shown and "*last*" in shown


def render_all(text: str, *, name: str, owner: str, actor: str, note: str, keys: int = 15) -> dict[str, object]:
    """Every public renderer of ``bot.slack.blocks``, fed ``text`` and the given fields wherever they go."""
    active = [make_key(i, name=f"{name[:-3]}{i:03d}", owner=owner, created_by=actor) for i in range(keys)]
    revoked = make_key(99, name=name, owner=owner, revoked_by=actor, revoke_reason="other", revoked_at=NOW)
    expired = make_key(98, name=name, owner=owner, expires_at=NOW - timedelta(days=1))
    view = ListView(status="all", owner=owner, after="c" * 80)
    details = {"name": name, "key": text, "owner": owner, "note": note, "why": text, "reason": "other",
               "channel_id": "C0INCIDENT", "posted_by": actor, "status": "active", "user_id": "UADMIN001",
               "count": keys, "uses": 3, "via": "verify", "revoked_by": actor, "command": text}
    actions = [action.value for action in Action] + ["key.other"]
    history = [event(i, actions[i % len(actions)], actor=actor, **details) for i in range(15, 0, -1)]
    public = dict(details, url=f"https://github.com/{text}", source=text, type=text, via="github-secret-scanning")
    public_leaks = [event(i, "key.leaked" if i % 2 else "key.revoked", actor=actor,
                          **{**public, "status": ("active", "revoked", "expired")[i % 3], "revoked": i % 4 == 1})
                    for i in range(1, 80)]
    for leak in public_leaks:
        leak.key_id = f"key_{leak.id:017d}"
    owner_action = OwnerAction(owner=owner, up_to=active[0].id, count=keys, issued_at=1)
    rotating = make_key(97, name=name, owner=owner, rotated_to="key_00000000000000096", rotated_at=NOW,
                        rotated_by=actor, expires_at=NOW + timedelta(hours=1))
    rotation = {"new_key_id": "key_00000000000000096", "new_key": text, "grace": text, "grace_seconds": 3600,
                "ends_at": "2026-11-26T13:00:00Z", "link_for": actor, "previous_channel_id": "C0OLD"}
    return {
        "text_message": blocks.text_message(text),
        "key_list": blocks.key_list(KeyPage(active, next_cursor="n" * 80, prev_cursor="p" * 80), view,
                                    total=10**6, now=NOW, admin=True),
        "key_list (revoked, expired, rotating)": blocks.key_list(KeyPage([revoked, expired, rotating], None, None), view,
                                                                 total=3, now=NOW, admin=True),
        "confirm_rotate": blocks.confirm_rotate(active[0], view, issued_at=1, public_url_missing=True),
        "confirm_rotate (leaked)": blocks.confirm_rotate(active[0], view, issued_at=1, leaked=True),
        "rotate_result": blocks.rotate_result(rotating, active[0], "https://apikeys.example.com/reveal/" + "t" * 32
                                              + "#" + "k" * 43, NOW, view),
        "rotate_notice_text": blocks.rotate_notice_text(rotating),
        "owners_blocks": blocks.owners_blocks([OwnerEntry(owner, "C0PAYMENTS", actor, NOW)] * 60),
        "owners_blocks (none)": blocks.owners_blocks([]),
        "leak_warning (rotated)": blocks.leak_warning(rotating, actor, NOW),
        "owner_post": owner_posts.owner_post(owner, [event(i, a, actor=actor, **{**details, **rotation})
                                                     for i, a in enumerate(["key.revoked", "key.rotated", "key.leaked",
                                                                            "key.used_after_revoke"] * 8, start=1)]),
        "expiry_post": owner_posts.expiry_post([(k.id, 3) for k in active + [revoked]],
                                               {k.id: k for k in active + [revoked]}, NOW),
        "audit_post (public leaks, since revoked)": audit_posts.audit_post(
            public_leaks, current={leak.key_id: revoked for leak in public_leaks}),
        "confirm_revoke": blocks.confirm_revoke(active[0], view, reason="other", issued_at=1),
        "revoke_result": blocks.revoke_result(revoked, view),
        "already_revoked": blocks.already_revoked(revoked, view),
        "revoke_notice_text": blocks.revoke_notice_text(revoked),
        "find_results": blocks.find_results([active[0]], text, NOW, exact=True, admin=True),
        "find_results (fragment)": blocks.find_results(active + [revoked], text, NOW, exact=False, admin=True),
        "find_results (none)": blocks.find_results([], text, NOW, exact=False, admin=True),
        "leak_warning": blocks.leak_warning(active[0], actor, NOW),
        "leak_warning (revoked)": blocks.leak_warning(revoked, actor, NOW),
        "owner_confirm": blocks.owner_confirm(owner, active + [revoked] * 10, keys + 10, owner_action),
        "owner_result": blocks.owner_result(owner, active, keys + 5, actor, "other"),
        "help_blocks": blocks.help_blocks(text),
        "admins_blocks": blocks.admins_blocks([AdminEntry("UADMIN001", "config", None, None),
                                               AdminEntry("UADMIN002", "stored", actor, NOW)]),
        "history_blocks": blocks.history_blocks(history, HistoryView(), has_older=True, has_newer=True, key=active[0]),
        **{f"audit_post ({action})": audit_posts.audit_post([event(1, action, actor=actor, **details)]) for action in actions},
        "audit_post (several)": audit_posts.audit_post([event(i, "key.revoked", actor=actor, **details) for i in range(30)]),
        "audit_post (public leaks)": audit_posts.audit_post(public_leaks),
    }


def _messages(rendered: object) -> list[dict]:
    """A renderer's output as the messages the bot sends: (fallback text, blocks), blocks, or text."""
    if isinstance(rendered, tuple):
        return [{"text": rendered[0], "blocks": rendered[1]}]
    if isinstance(rendered, str):
        return [{"text": rendered}]
    return [{"text": "fallback", "blocks": rendered}]


def test_the_renderer_table_covers_every_public_renderer():
    import inspect

    public = {name for module in (blocks, audit_posts, owner_posts) for name, fn in inspect.getmembers(module, inspect.isfunction)
              if fn.__module__ == module.__name__ and not name.startswith("_")
              and inspect.signature(fn).return_annotation in ("list[dict]", "tuple[str, list[dict]]")}
    public |= {"revoke_notice_text", "rotate_notice_text"}  # message texts
    public.discard("serialise")  # the helper every renderer ends with, not a message of its own
    covered = {name.split(" ")[0] for name in render_all("x", name="n", owner="o", actor="a", note="n", keys=1)}
    assert public <= covered, f"renderers not checked against Slack's limits: {sorted(public - covered)}"


def test_every_renderer_stays_within_slack_limits_at_the_sizes_storage_allows():
    """Names of 80 characters (that escaping makes longer), owners of 100, actors of 200, notes of 500."""
    rendered = render_all("q" * 3000, name=("&<>" * 27)[:80], owner="o" * 100, actor="a" * 200, note="&" * 500)
    for what, output in rendered.items():
        for message in _messages(output):
            assert_within_limits(message, what)
            for block in message.get("blocks", []):
                Block.parse(block).validate_json()


def test_every_renderer_keeps_full_keys_out_even_when_one_reaches_it():
    """The last line of defence: whatever reaches a renderer (a name, an owner, a note, an actor, a
    query, a list view in a button value), no full key leaves it, in blocks or fallback text."""
    secret = generate_secret()
    rendered = render_all(secret, name=f"svc {secret}", owner=secret, actor=f"ops {secret}", note=f"rotated {secret}")
    for what, output in rendered.items():
        text = json.dumps(output, ensure_ascii=False)
        assert secret not in text and secret[4:] not in text, f"{what}: {text}"
        for message in _messages(output):
            assert_within_limits(message, what)


def test_a_public_leak_post_has_revoke_only_where_the_key_is_still_active_and_stays_one_message():
    states = [("active", False), ("active", True), ("revoked", False), ("expired", False)] * 10
    leaks = []
    for i, (status, revoked) in enumerate(states, start=1):
        leak = event(i, "key.leaked", actor="github-secret-scanning", name=f"svc-{i}", key="apk_\u2026QVjP",
                     owner="payments", status=status, revoked=revoked, url=f"https://github.com/o/r/{i}", source="content")
        leak.key_id = f"key_{i:017d}"
        leaks.append(leak)
    text, payload = audit_posts.audit_post(leaks)
    assert text.startswith("40 keys found in public by GitHub secret scanning")
    assert_within_limits({"text": text, "blocks": payload}, "the public leak post")
    rows = [b for b in payload if b.get("block_id", "").startswith("leak_")]
    assert len(rows) == audit_posts.PUBLIC_LEAKS_SHOWN
    with_button = {b["block_id"] for b in rows if b.get("accessory")}
    shown = range(1, audit_posts.PUBLIC_LEAKS_SHOWN + 1)
    assert with_button == {f"leak_{i}" for i in shown if states[i - 1] == ("active", False)}
    assert "and 20 more" in json.dumps(payload)
    assert "10 revoked now · 10 still active · 20 already revoked or expired" in json.dumps(payload, ensure_ascii=False)


# ======================================================================= what the self-check tells the channel
def test_a_tamper_alert_stands_out_and_says_what_was_found():
    alert = event(9, "audit.tamper_detected", actor="apikeys-self-check",
                  problem="audit entries 7-7 were not written by apikeys")
    text, payload = audit_posts.audit_post([alert])
    assert text.startswith(":rotating_light: *Tamper detected*: audit entries 7-7 were not written by apikeys")
    assert "apikeys audit --verify" in json.dumps(payload)
    assert_within_limits({"text": text, "blocks": payload}, "the tamper alert")


def test_a_restored_revocation_names_the_key_masked_and_the_entry_it_was_revoked_again_from():
    key = make_key(3)
    restored = event(10, "key.revocation_restored", actor="apikeys-self-check",
                     revoked_at="2026-11-20T08:00:00Z", entry=42)
    restored.key_id = key.id
    text, payload = audit_posts.audit_post([restored], keys={key.id: key})  # the entry names only the key's id
    shown = json.dumps(payload, ensure_ascii=False)
    assert text.startswith(":rotating_light: *Revocation restored*")
    assert "*service-3* `apk_\u2026QVjP`" in shown and "#42" in shown and "Revoked again from the log's entry" in shown
    assert "2026-11-20T08:00:00Z" in shown


def test_a_restored_revocation_of_a_key_no_longer_found_names_its_id():
    restored = event(11, "key.revocation_restored", actor="apikeys", revoked_at="2026-11-20T08:00:00Z", entry=42)
    text, payload = audit_posts.audit_post([restored])
    shown = json.dumps(payload, ensure_ascii=False)
    assert "`key_11`" in shown and "** ``" not in shown and "(owner )" not in shown


def test_a_check_by_hand_reads_as_one_in_the_history_and_the_audit_channel():
    checked = event(7, "key.checked", actor="cli:ana", name="billing", key="apk_…a1b2", owner="payments",
                    code="REVOKED", via="cli")
    (line,) = [t for t in section_texts(blocks.history_blocks([checked], HistoryView(), has_older=False,
                                                             has_newer=False, key=None)) if "key.checked" in t]
    assert "checked by hand, answered `REVOKED`" in line
    text, post = audit_posts.audit_post([checked])
    shown = json.dumps(post, ensure_ascii=False)
    assert "Key checked by hand" in text and "`REVOKED`" in text and "no alert" in shown
