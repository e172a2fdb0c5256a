"""Leak watch in-process: what it scans, whose messages it skips, and that a warning's receipt and
its ``key.leaked`` entry are one transaction (end-to-end flows are in test_breach.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.slack.events import warn_about_leaks
from storage import Store

from .helpers import RecordingClient

OWN_BOT, OWN_BOT_USER = "B0BOT0001", "UBOT00001"


@pytest.fixture
def key(store: Store):
    (created,) = store.keys.create(name="billing-api", owner="payments", actor="test")
    return created


_ts = iter(range(1, 10_000))


def message(**fields: Any) -> dict:
    n = next(_ts)
    return {"type": "message", "channel": "C0GENERAL", "ts": f"1700000000.{n:06d}", "channel_type": "channel", **fields}


def leaked_events(store: Store) -> list[dict]:
    return [json.loads(e.details) for e in store.audit.oldest_first() if e.action == "key.leaked"]


def test_a_key_printed_by_another_bot_is_a_leak(store, key):
    client = RecordingClient()
    ci_bot = message(subtype="bot_message", bot_id="B0CIRUNNER", text=f"deploy env: APIKEY={key.secret}")
    assert warn_about_leaks(store, ci_bot, client, OWN_BOT_USER, OWN_BOT) == 1
    assert len(client.posts) == 1 and key.secret not in json.dumps(client.posts)
    assert leaked_events(store)[0]["posted_by"] == "B0CIRUNNER"


@pytest.mark.parametrize("own", [{"bot_id": OWN_BOT, "subtype": "bot_message"}, {"user": OWN_BOT_USER}])
def test_only_this_apps_own_messages_are_skipped(store, key, own):
    client = RecordingClient()
    assert warn_about_leaks(store, message(text=f"echo {key.secret}", **own), client, OWN_BOT_USER, OWN_BOT) == 0
    assert client.posts == [] and leaked_events(store) == []


@pytest.mark.parametrize("where", [
    lambda k: {"attachments": [{"title": f"build log {k}"}]},
    lambda k: {"attachments": [{"fields": [{"title": "token", "value": k}]}]},
    lambda k: {"attachments": [{"footer": f"sent with {k}"}]},
    lambda k: {"files": [{"id": "F1", "title": f"env {k}", "name": "env.txt"}]},
    lambda k: {"files": [{"id": "F1", "name": "config.py", "preview": f"API_KEY = '{k}'\n", "mode": "snippet"}]},
    lambda k: {"blocks": [{"type": "rich_text", "elements": [{"type": "rich_text_section",
                                                              "elements": [{"type": "text", "text": k}]}]}]},
    lambda k: {"text": f"curl 'https://api.example.com/?api_key%3D{k}'"},
    lambda k: {"text": f"MY_APIKEY_{k}xyz"},
], ids=["attachment-title", "attachment-field", "attachment-footer", "file-title", "snippet-preview", "blocks",
        "url-encoded", "glued"])
def test_every_place_a_message_shows_text_is_scanned(store, key, where):
    client = RecordingClient()
    assert warn_about_leaks(store, message(user="UMEMBER01", **where(key.secret)), client, OWN_BOT_USER, OWN_BOT) == 1
    assert len(leaked_events(store)) == 1


def test_the_receipt_and_the_leak_entry_are_one_transaction(store, key, monkeypatch):
    """If recording the leak fails, the receipt goes with it: Slack's retry is handled, not skipped."""
    from storage.audit import AuditLog

    event = message(user="UMEMBER01", text=f"oops {key.secret}")
    original = AuditLog.append_many

    def append_then_fail(self, session, events, **kw):
        original(self, session, events, **kw)
        raise RuntimeError("disk full")

    monkeypatch.setattr(AuditLog, "append_many", append_then_fail)
    with pytest.raises(RuntimeError):
        warn_about_leaks(store, event, RecordingClient(), OWN_BOT_USER, OWN_BOT)
    monkeypatch.setattr(AuditLog, "append_many", original)
    assert leaked_events(store) == []

    client = RecordingClient()
    assert warn_about_leaks(store, event, client, OWN_BOT_USER, OWN_BOT) == 1  # the retry warns …
    assert warn_about_leaks(store, event, client, OWN_BOT_USER, OWN_BOT) == 0  # … once
    assert len(leaked_events(store)) == 1 and len(client.posts) == 1


def test_decoys_cannot_hide_a_real_key_and_all_are_looked_up_in_one_query(store, key, monkeypatch):
    """Well-formed keys we never issued (anyone can compute the checksum) pasted before a real one."""
    from storage.keyformat import generate_secret

    decoys = [generate_secret() for _ in range(250)]
    queries = []
    original = store.keys.find_by_secrets
    monkeypatch.setattr(store.keys, "find_by_secrets", lambda secrets: queries.append(len(secrets)) or original(secrets))
    client = RecordingClient()
    text = " ".join(decoys) + f" and the real one {key.secret}"
    assert warn_about_leaks(store, message(user="U0DEV0001", text=text), client, OWN_BOT_USER, OWN_BOT) == 1
    assert [d["key"] for d in leaked_events(store)] == [key.key.masked]
    assert queries == [251]


def test_find_by_secrets_finds_each_known_key_by_digest(store, key):
    from storage.keyformat import generate_secret

    other = store.keys.create(name="other", owner="ops", actor="test")[0]
    found = store.keys.find_by_secrets([generate_secret(), key.secret, other.secret, "apk_not-a-key"] +
                                       [generate_secret() for _ in range(1200)])
    assert {s: k.id for s, k in found.items()} == {key.secret: key.key.id, other.secret: other.key.id}


def test_a_message_full_of_decoys_costs_one_key_lookup_query(store, key):
    """The lookup is one statement however many candidates (counted at the database, not the call)."""
    from sqlalchemy import event

    from storage.keyformat import generate_secret

    statements: list[str] = []
    engines = {store.db.read_engine, store.db.write_engine}
    record = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        text = " ".join(generate_secret() for _ in range(400)) + f" {key.secret}"
        assert warn_about_leaks(store, message(user="U0DEV0001", text=text), RecordingClient(), OWN_BOT_USER, OWN_BOT) == 1
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)
    lookups = [s for s in statements if "FROM api_keys" in s and "digest IN" in s]
    assert len(lookups) == 1, statements
