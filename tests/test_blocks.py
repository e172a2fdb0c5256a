"""Block Kit builders: pure functions, checked against slack_sdk's own models and Slack's limits."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from slack_sdk.models.blocks import Block

from bot.slack import blocks
from bot.slack.views import (
    BadValue,
    HistoryView,
    KeyAction,
    ListView,
    decode_key_action,
    decode_page,
    encode_key_action,
    encode_list,
)
from storage import ApiKey
from storage.keys import KeyPage

import pytest

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
    assert len(payload) <= 50
    for block in payload:
        Block.parse(block).validate_json()  # slack_sdk's own validation


def test_a_full_page_of_keys_fits_a_message_and_every_row_has_a_revoke_button():
    page = KeyPage(items=[make_key(i) for i in range(blocks.KEYS_PER_PAGE)], next_cursor="c1", prev_cursor="c0")
    payload = blocks.key_list(page, ListView(), total=1001, now=NOW)
    assert_valid(payload)
    labels = [b["text"]["text"] for b in buttons(payload)]
    assert labels.count("Revoke") == blocks.KEYS_PER_PAGE
    assert "Next" in labels and "Previous" in labels
    text = json.dumps(payload, ensure_ascii=False)
    assert "apk_…QVjP" in text and "payments" in text and "1,000+ in all" in text


def test_revoked_and_expired_rows_have_no_revoke_button_and_say_why():
    revoked = make_key(1, revoked_at=NOW, revoked_by="UADMIN001", revoke_reason="compromised")
    expired = make_key(2, expires_at=NOW - timedelta(hours=1))
    payload = blocks.key_list(KeyPage([revoked, expired], None, None), ListView(status="all"), total=2, now=NOW)
    assert buttons(payload) == []
    text = json.dumps(payload, ensure_ascii=False)
    assert "Revoked" in text and "<@UADMIN001>" in text and "Compromised" in text and "Expired" in text


def test_names_cannot_inject_mrkdwn_links_or_mentions():
    payload = blocks.key_list(KeyPage([make_key(1, name="<!channel> & <https://evil|click>")], None, None),
                              ListView(), total=1, now=NOW)
    text = json.dumps(payload, ensure_ascii=False)
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;" in text


def test_confirmation_has_exact_labels_danger_style_and_reason_choices():
    payload = blocks.confirm_revoke(make_key(), ListView(owner="payments"), reason="rotation", issued_at=123)
    assert_valid(payload)
    by_label = {b["text"]["text"]: b for b in buttons(payload)}
    assert set(by_label) == {"Cancel Revoke Key", "Revoke Key"}
    assert by_label["Revoke Key"]["style"] == "danger"
    assert "style" not in by_label["Cancel Revoke Key"]
    confirm = decode_key_action(by_label["Revoke Key"]["value"])
    assert confirm.key_id == make_key().id and confirm.reason == "rotation" and confirm.issued_at == 123
    assert decode_key_action(by_label["Cancel Revoke Key"]["value"]).view == ListView(owner="payments")
    select = next(b["accessory"] for b in payload if b.get("accessory", {}).get("type") == "static_select")
    assert [o["value"] for o in select["options"]] == ["compromised", "rotation", "decommissioned", "other"]
    assert select["initial_option"]["value"] == "rotation"


def test_audit_post_names_key_admin_reason_time_and_channel():
    from storage.audit import AuditEvent

    event = AuditEvent(id=7, at=NOW, actor="UADMIN001", action="key.revoked", key_id="key_x",
                       details=json.dumps({"name": "billing", "key": "apk_…QVjP", "owner": "payments",
                                           "reason": "compromised", "channel_id": "C0INCIDENT"}),
                       prev_hash="0" * 64, hash="1" * 64)
    text, payload = blocks.audit_post([event])
    assert_valid(payload)
    body = payload[0]["text"]["text"]
    for expected in ("billing", "apk_…QVjP", "<@UADMIN001>", "Compromised", "<#C0INCIDENT>", "<!date^"):
        assert expected in body
    assert "Key revoked" in text


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
                                   '{"k": "key_00000000000000001", "t": "yesterday"}'])
def test_values_we_did_not_render_are_rejected(value):
    with pytest.raises(BadValue):
        decode_key_action(value)
    with pytest.raises(BadValue):
        decode_page(value)


def test_values_round_trip():
    view = ListView(status="revoked", owner="payments", after="20261126000000000000.key_00000000000000001")
    assert decode_page(encode_list(view)) == view
    action = KeyAction(key_id="key_00000000000000001", view=view, reason="other", issued_at=5)
    assert decode_key_action(encode_key_action(action)) == action
