"""GitHub secret scanning partner alerts (``POST /v1/secret-scanning/github``) and ``apikeys leak report``.

GitHub is played by ``servers.GitHubKeysStub``: a local public-keys endpoint holding freshly generated
P-256 keys, which signs alerts as GitHub does. The key API is one worker's WSGI app in process
(``api``), fetching the keys from the stand-in over HTTP; one test drives the real server. The audit
channel's posts are delivered by the production deliverer to a recording client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from bot.api import KeyApiApp
from bot.config import ConfigError, Settings
from bot.github import ALERT_PATH, GitHubAlerts, GitHubKeys
from bot.slack.delivery import Deliverer
from storage import Store, open_store
from storage.keyformat import generate_secret
from storage.receipts import Receipt

from .helpers import ADMIN, RecordingClient, everything_stored
from .servers import GitHubKeysStub, InProcessApp, start_server
from .slacklimits import assert_within_limits

AUDIT = "C0AUDIT"
WHERE = "https://github.com/octo/app/blob/0123abc/config/settings.py"


@pytest.fixture
def app_store(database_url) -> Iterator[Store]:
    """The store as the server opens it with Slack on: every audited action queues one audit post."""
    store = open_store(database_url, bootstrap_admins=[ADMIN], notify_channel=AUDIT)
    yield store
    store.close()


def make_api(store: Store, github_keys: GitHubKeysStub, policy: str = "revoke") -> InProcessApp:
    # The stand-in answers at once; a wait longer than production's 0.25 s keeps a busy machine from
    # turning its first fetch into a 503 (the wait itself is tested with a slow fetch below).
    return InProcessApp(KeyApiApp(store, github_alerts=GitHubAlerts(GitHubKeys(github_keys.url, wait=10.0), policy)))


@pytest.fixture
def api(app_store, github_keys) -> InProcessApp:
    return make_api(app_store, github_keys)


@pytest.fixture
def keys(app_store):
    """An active key, a revoked key and an expired key, each with its secret."""
    active = app_store.keys.create(name="billing-api", owner="payments", actor="test")[0]
    revoked = app_store.keys.create(name="old-billing", owner="payments", actor="test")[0]
    app_store.keys.revoke(revoked.key.id, via="cli", actor="test", reason="rotation")
    with freeze_time(datetime.now(timezone.utc) - timedelta(days=2)):
        expired = app_store.keys.create(name="trial", owner="growth", actor="test", expires_in=timedelta(hours=1))[0]
    deliver(app_store)  # their own audit posts, out of the way
    return {"active": active, "revoked": revoked, "expired": expired}


def look_alike(secret: str) -> str:
    """Our shape, a wrong checksum."""
    return secret[:-1] + ("A" if secret[-1] != "A" else "B")


def match(token: str, url: str = WHERE, source: str = "content", type_: str = "apikeys_api_key") -> dict:
    return {"token": token, "type": type_, "url": url, "source": source}


def send(api: InProcessApp, github_keys: GitHubKeysStub, matches: Any = None, *, body: bytes | None = None,
         headers: dict | None = None) -> tuple[int, Any]:
    """POST an alert signed by GitHub's current key (or with ``headers`` as given)."""
    if body is None:
        body = json.dumps(matches).encode()
    status, answered_headers, data = api.request("POST", ALERT_PATH, body,
                                                 github_keys.sign(body) if headers is None else headers)
    assert answered_headers["Content-Type"] == "application/json"
    return status, json.loads(data)


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def key_status(store: Store, created) -> str:
    """A key's status, read without presenting it (a presented revoked key is an alert of its own)."""
    return store.keys.get(created.key.id).status_at(datetime.now(timezone.utc)).value


def entries(store: Store, action: str | None = None) -> list[tuple[str, str, str | None, dict]]:
    return [(e.action, e.actor, e.key_id, json.loads(e.details)) for e in store.audit.oldest_first()
            if action is None or e.action == action]


def count(store: Store, model) -> int:
    with store.db.read() as session:
        return session.scalar(select(func.count()).select_from(model))


def deliver(store: Store) -> list[dict]:
    """Deliver every queued audit post with the production deliverer; the posts it sent."""
    client = RecordingClient()
    deliverer = Deliverer(store, client)
    while deliverer.deliver_due():
        pass
    for post in client.posts:
        assert_within_limits({"text": post["text"], "blocks": post["blocks"]}, "an audit post")
    return client.posts


def revoke_buttons(post: dict) -> list[str]:
    """The key ids behind the post's Revoke buttons."""
    from bot.slack.values import KeyAction, decode

    return [decode(KeyAction, b["accessory"]["value"]).key_id for b in post["blocks"]
            if b.get("accessory", {}).get("text", {}).get("text") == "Revoke"]


# ======================================================================= the alert


def test_an_alert_is_answered_by_hash_and_an_active_key_is_revoked_at_once(api, app_store, github_keys, keys):
    never_issued, typo = generate_secret(), look_alike(keys["active"].secret)
    alert = [match(keys["active"].secret), match(keys["revoked"].secret, url="https://gist.github.com/x", source="gist_content"),
             match(never_issued), match(typo)]
    status, answer = send(api, github_keys, alert)

    assert status == 200
    assert answer == [
        {"token_hash": sha256(keys["active"].secret), "token_type": "apikeys_api_key", "label": "true_positive"},
        {"token_hash": sha256(keys["revoked"].secret), "token_type": "apikeys_api_key", "label": "true_positive"},
        {"token_hash": sha256(never_issued), "token_type": "apikeys_api_key", "label": "false_positive"},
        {"token_hash": sha256(typo), "token_type": "apikeys_api_key", "label": "false_positive"},
    ]
    assert key_status(app_store, keys["active"]) == "revoked"
    key = app_store.keys.get(keys["active"].key.id)
    assert (key.revoked_by, key.revoke_reason) == ("github-secret-scanning", "compromised")

    # The active key: key.leaked (where it was found) and key.revoked, one action. The revoked key:
    # key.leaked only. Nothing for the two tokens that are not ours.
    new = entries(app_store)[4:]
    assert [(action, actor, key_id) for action, actor, key_id, _ in new] == [
        ("key.leaked", "github-secret-scanning", keys["active"].key.id),
        ("key.revoked", "github-secret-scanning", keys["active"].key.id),
        ("key.leaked", "github-secret-scanning", keys["revoked"].key.id),
    ]
    leaked, revoked, leaked_revoked = (details for *_, details in new)
    assert leaked | {"url": WHERE, "source": "content", "status": "active", "revoked": True} == leaked
    assert leaked["key"] == keys["active"].key.masked and leaked["owner"] == "payments"
    assert revoked["reason"] == "compromised" and revoked["url"] == WHERE and revoked["source"] == "content"
    assert leaked_revoked["status"] == "revoked" and leaked_revoked["revoked"] is False
    assert leaked_revoked["url"] == "https://gist.github.com/x" and leaked_revoked["source"] == "gist_content"
    assert app_store.outbox.pending() == 1  # one audit post for the alert
    assert app_store.audit.verify() is None


def test_the_audit_channel_gets_one_post_naming_each_key_its_owner_and_where_it_was_found(
        app_store, github_keys, keys):
    """Under the alert policy the active key stays active, so its row is the one with a Revoke button."""
    api = make_api(app_store, github_keys, policy="alert")
    extra = app_store.keys.create(name="search-api", owner="discovery", actor="test")[0]
    deliver(app_store)
    alert = [match(keys["active"].secret), match(keys["revoked"].secret), match(keys["expired"].secret),
             match(extra.secret, url="", source="npm"), match(generate_secret())]
    assert send(api, github_keys, alert)[0] == 200

    (post,) = deliver(app_store)
    shown = json.dumps(post, ensure_ascii=False)
    assert post["channel"] == AUDIT and "4 keys found in public" in post["text"]
    for created, owner in ((keys["active"], "payments"), (keys["revoked"], "payments"), (keys["expired"], "growth"),
                           (extra, "discovery")):
        assert created.key.masked in shown and f"owner {owner}" in shown
    assert WHERE in shown and "(npm)" in shown
    assert sorted(revoke_buttons(post)) == sorted([keys["active"].key.id, extra.key.id])


def test_under_the_revoke_policy_the_post_has_no_revoke_button_left(api, app_store, github_keys, keys):
    assert send(api, github_keys, [match(keys["active"].secret), match(keys["revoked"].secret)])[0] == 200
    (post,) = deliver(app_store)
    assert revoke_buttons(post) == []
    shown = json.dumps(post, ensure_ascii=False)
    assert "revoked now" in shown and keys["active"].key.masked in shown


def test_look_alikes_never_reach_the_database(api, app_store, github_keys, keys, monkeypatch):
    def no_database(*args, **kwargs):
        raise AssertionError("the database was asked about a token that is not ours")

    for name in ("write", "read", "fetch_one"):
        monkeypatch.setattr(app_store.db, name, no_database)
    tokens = [look_alike(keys["active"].secret), "apk_short", "ghp_" + "a" * 36, keys["active"].secret + "x", ""]
    status, answer = send(api, github_keys, [match(t) for t in tokens])
    assert status == 200
    assert [a["label"] for a in answer] == ["false_positive"] * len(tokens)
    assert [a["token_hash"] for a in answer] == [sha256(t) for t in tokens]


# ======================================================================= refused: nothing changes


def _unsigned(_stub: GitHubKeysStub, _body: bytes) -> dict:
    return {"Content-Type": "application/json"}


def _another_key(stub: GitHubKeysStub, body: bytes) -> dict:
    """Signed by a key GitHub does not publish, claiming GitHub's current identifier."""
    forged = stub.sign(body, stub.new_key())
    return {**forged, "Github-Public-Key-Identifier": stub.current}


def _another_body(stub: GitHubKeysStub, body: bytes) -> dict:
    return stub.sign(body + b" ")


def _unknown_identifier(stub: GitHubKeysStub, body: bytes) -> dict:
    return stub.sign(body, stub.new_key())


def _not_base64(stub: GitHubKeysStub, body: bytes) -> dict:
    return {**stub.sign(body), "Github-Public-Key-Signature": "not base64 at all!"}


def _not_der(stub: GitHubKeysStub, body: bytes) -> dict:
    return {**stub.sign(body), "Github-Public-Key-Signature": "AAAA"}


def _no_identifier(stub: GitHubKeysStub, body: bytes) -> dict:
    headers = stub.sign(body)
    del headers["Github-Public-Key-Identifier"]
    return headers


@pytest.mark.parametrize("headers", [_unsigned, _another_key, _another_body, _unknown_identifier, _not_base64, _not_der,
                                     _no_identifier],
                         ids=["unsigned", "another-key", "another-body", "unknown-identifier", "not-base64", "not-der",
                              "no-identifier"])
def test_a_missing_or_wrong_signature_is_401_and_changes_nothing(api, app_store, github_keys, keys, database_url,
                                                                  headers):
    body = json.dumps([match(keys["active"].secret)]).encode()
    before = everything_stored(database_url)
    status, answer = send(api, github_keys, body=body, headers=headers(github_keys, body))
    assert status == 401 and answer["error"]
    assert everything_stored(database_url) == before
    assert key_status(app_store, keys["active"]) == "active"


@pytest.mark.parametrize("body", [b"not json", b'{"token": "x"}', b"[1]", b"\xff\xfe"])
@pytest.mark.parametrize("headers", [_unsigned, _another_body], ids=["unsigned", "another-body"])
def test_an_unsigned_body_that_is_not_an_array_of_matches_is_401_not_400(api, github_keys, database_url, body, headers):
    """The signature is checked before the body is read: garbage that is not GitHub's is refused as
    unsigned, and says nothing about what a well-formed alert looks like."""
    before = everything_stored(database_url)
    status, answer = send(api, github_keys, body=body, headers=headers(github_keys, body))
    assert status == 401 and "JSON" not in answer["error"], answer
    assert everything_stored(database_url) == before


@pytest.mark.parametrize("body", [b"", b"not json", b'{"token": "x"}', b'"apk"', b"[1]", b'["apk_x"]', b'[{"type": "x"}]',
                                  b'[{"token": 5}]', b'[{"token": "apk_x", "url": 7}]', b"\xff\xfe", b"[" * 100_000])
def test_a_signed_body_that_is_not_an_array_of_matches_is_400_and_changes_nothing(api, github_keys, keys, database_url,
                                                                                   body):
    before = everything_stored(database_url)
    status, answer = send(api, github_keys, body=body)
    assert status == 400 and "JSON array" in answer["error"]
    assert everything_stored(database_url) == before


def test_a_body_over_one_mebibyte_is_413_and_changes_nothing(api, github_keys, keys, database_url):
    body = json.dumps([match(keys["active"].secret, url="https://github.com/" + "x" * (1024 * 1024))]).encode()
    before = everything_stored(database_url)
    status, answer = send(api, github_keys, body=body)
    assert status == 413 and "larger" in answer["error"]
    assert everything_stored(database_url) == before


def test_only_post(api):
    status, headers, _ = api.request("GET", ALERT_PATH)
    assert status == 405 and headers["Allow"] == "POST"


def test_when_githubs_keys_cannot_be_fetched_the_alert_is_503_for_github_to_retry(api, github_keys, keys, database_url):
    body = json.dumps([match(keys["active"].secret)]).encode()
    headers = github_keys.sign(body)
    github_keys.stop()
    before = everything_stored(database_url)
    status, answered_headers, data = api.request("POST", ALERT_PATH, body, headers)
    assert status == 503 and "try again" in json.loads(data)["error"]
    assert answered_headers["Retry-After"].isdigit()  # GitHub retries; the header says when
    assert everything_stored(database_url) == before


# ======================================================================= GitHub's keys


def test_a_key_github_rotated_in_is_fetched_and_unknown_ones_at_most_once_a_minute(api, app_store, github_keys, keys):
    with freeze_time("2026-12-01 12:00:00") as clock:
        assert send(api, github_keys, [match(generate_secret())])[0] == 200
        assert github_keys.fetches == 1
        assert send(api, github_keys, [match(generate_secret())])[0] == 200
        assert github_keys.fetches == 1  # cached

        clock.tick(61)
        rotated = github_keys.rotate()  # GitHub rotates a new key in: an identifier we have not seen
        status, answer = send(api, github_keys, [match(keys["active"].secret)])
        assert status == 200 and answer[0]["label"] == "true_positive"
        assert github_keys.fetches == 2
        assert key_status(app_store, keys["active"]) == "revoked"

        # Forged identifiers cannot make us ask GitHub more than once a minute ...
        clock.tick(5)
        for _ in range(3):
            body = json.dumps([match(keys["expired"].secret)]).encode()
            status, _ = send(api, github_keys, body=body, headers=github_keys.sign(body, github_keys.new_key()))
            assert status == 401
        assert github_keys.fetches == 2
        # ... and the keys already known keep working meanwhile, the older one included.
        body = json.dumps([match(generate_secret())]).encode()
        assert send(api, github_keys, body=body, headers=github_keys.sign(body, github_keys.published[0]))[0] == 200
        assert send(api, github_keys, [match(generate_secret())])[0] == 200
        assert github_keys.fetches == 2 and github_keys.current == rotated

        # A key rotated in within the minute of a fetch is refused (GitHub retries) until the minute has passed.
        github_keys.rotate()
        assert send(api, github_keys, [match(generate_secret())])[0] == 401
        assert github_keys.fetches == 2
        clock.tick(55)
        assert send(api, github_keys, [match(generate_secret())])[0] == 200
        assert github_keys.fetches == 3


# ======================================================================= retries, policy, scale


def test_a_retried_alert_changes_nothing_and_posts_nothing_new(api, app_store, github_keys, keys, database_url):
    alert = [match(keys["active"].secret), match(keys["revoked"].secret), match(generate_secret())]
    first = send(api, github_keys, alert)
    assert len(deliver(app_store)) == 1
    before = everything_stored(database_url)

    again = send(api, github_keys, alert)
    # The same answer (the key is as much ours as before), and not a row more anywhere.
    assert again == first
    assert everything_stored(database_url) == before
    assert deliver(app_store) == []

    # The same key found somewhere else is a new report (no revocation left to do).
    status, _ = send(api, github_keys, [match(keys["active"].secret, url="https://github.com/another/fork")])
    assert status == 200
    (leak,) = [d for action, _, key_id, d in entries(app_store, "key.leaked") if d["url"] == "https://github.com/another/fork"]
    assert leak["status"] == "revoked" and leak["revoked"] is False
    assert len(entries(app_store, "key.revoked")) == 2  # the rotation, and GitHub's once
    assert len(deliver(app_store)) == 1


def test_an_expired_key_is_reported_not_revoked(api, app_store, github_keys, keys):
    status, answer = send(api, github_keys, [match(keys["expired"].secret)])
    assert status == 200 and answer[0]["label"] == "true_positive"
    assert key_status(app_store, keys["expired"]) == "expired"
    assert app_store.keys.get(keys["expired"].key.id).revoked_at is None
    ((_, _, key_id, leaked),) = entries(app_store, "key.leaked")
    assert key_id == keys["expired"].key.id and leaked["status"] == "expired" and leaked["revoked"] is False


def test_the_same_key_twice_in_one_alert_is_revoked_once(api, app_store, github_keys, keys):
    alert = [match(keys["active"].secret), match(keys["active"].secret), match(keys["active"].secret, url="elsewhere")]
    status, answer = send(api, github_keys, alert)
    assert status == 200 and [a["label"] for a in answer] == ["true_positive"] * 3
    assert [a for a, *_ in entries(app_store)[4:]] == ["key.leaked", "key.revoked", "key.leaked"]


def test_the_alert_policy_only_reports(app_store, github_keys, keys):
    api = make_api(app_store, github_keys, policy="alert")
    status, answer = send(api, github_keys, [match(keys["active"].secret)])
    assert status == 200 and answer[0]["label"] == "true_positive"
    assert key_status(app_store, keys["active"]) == "active"
    (leaked,) = entries(app_store, "key.leaked")
    assert leaked[3]["policy"] == "alert" and leaked[3]["revoked"] is False and leaked[3]["status"] == "active"
    assert len(entries(app_store, "key.revoked")) == 1  # the fixture's rotation only


def test_a_thousand_tokens_in_one_alert_are_handled_in_one_transaction(api, app_store, github_keys, monkeypatch):
    created = app_store.keys.create(name="svc", owner="bulk", actor="test", count=1000)
    deliver(app_store)
    writes = []
    original = app_store.db.write

    def counted():
        writes.append(1)
        return original()

    monkeypatch.setattr(app_store.db, "write", counted)
    started = time.perf_counter()
    status, answer = send(api, github_keys, [match(c.secret, url=f"https://github.com/o/r/blob/x/{i}.env")
                                             for i, c in enumerate(created)])
    elapsed = time.perf_counter() - started
    assert status == 200 and {a["label"] for a in answer} == {"true_positive"} and len(answer) == 1000
    assert len(writes) == 1
    assert elapsed < 30, f"{elapsed:.1f} s: GitHub gives up after 30 s"
    assert app_store.keys.count_keys(status="active", owner="bulk") == 0
    assert len(entries(app_store, "key.leaked")) == 1000 and len(entries(app_store, "key.revoked")) == 1000
    assert app_store.outbox.pending() == 1 and count(app_store, Receipt) == 1000
    (post,) = deliver(app_store)
    assert "1000 keys found in public" in post["text"]


def test_the_revocation_and_its_record_are_one_transaction(api, app_store, github_keys, keys, monkeypatch, database_url):
    """The audit append fails after writing: nothing of the alert survives, and GitHub's retry is handled."""
    from storage.audit import AuditLog

    original = AuditLog.append_many

    def append_then_fail(self, session, events, **kw):
        original(self, session, events, **kw)
        raise RuntimeError("disk full")

    before = everything_stored(database_url)
    monkeypatch.setattr(AuditLog, "append_many", append_then_fail)
    status, answer = send(api, github_keys, [match(keys["active"].secret)])
    assert status == 500 and answer == {"error": "internal error"}
    assert everything_stored(database_url) == before
    assert key_status(app_store, keys["active"]) == "active"

    monkeypatch.setattr(AuditLog, "append_many", original)
    assert send(api, github_keys, [match(keys["active"].secret)])[0] == 200
    assert key_status(app_store, keys["active"]) == "revoked"


# ======================================================================= no secret anywhere


def test_no_secret_in_any_response_log_line_database_row_or_slack_post(api, app_store, github_keys, keys, database_url,
                                                                        caplog):
    never_issued = generate_secret()
    secrets = [keys["active"].secret, keys["revoked"].secret, never_issued]
    alert = [match(keys["active"].secret, url=f"https://github.com/o/r/blob/x/.env?token={keys['active'].secret}",
                   source=f"commit {keys['active'].secret}", type_=f"apikeys {never_issued}"),
             match(keys["revoked"].secret), match(never_issued), match(look_alike(keys["active"].secret))]
    caplog.set_level(logging.DEBUG)
    body = json.dumps(alert).encode()
    responses = [api.request("POST", ALERT_PATH, body, github_keys.sign(body))[2],
                 api.request("POST", ALERT_PATH, body, github_keys.sign(body))[2],   # the retry
                 api.request("POST", ALERT_PATH, body, {**github_keys.sign(body), "Github-Public-Key-Signature": "AAAA"})[2]]
    posts = json.dumps(deliver(app_store), ensure_ascii=False)
    logged = "\n".join(record.getMessage() for record in caplog.records)  # before any formatter masks it
    stored = everything_stored(database_url)
    for where, what in ((b"".join(responses).decode(), "a response"), (logged, "a log line"), (stored, "a database row"),
                        (posts, "a Slack post")):
        for secret in secrets:
            assert secret not in where and secret[4:-4] not in where, f"a full key reached {what}"
    assert f"apk_\u2026{keys['active'].secret[-4:]}[redacted]" in stored  # the URL kept, the key in it masked
    assert "key_leaked_public" in logged


# ======================================================================= the real server


def test_the_real_server_takes_githubs_alert(database_url, tmp_path, github_keys, keys):
    server = start_server(database_url, tmp_path, {"APIKEYS_GITHUB_KEYS_URL": github_keys.url, "WEB_CONCURRENCY": "1"})
    try:
        body = json.dumps([match(keys["active"].secret), match(generate_secret())]).encode()
        status, _, data = server.request("POST", ALERT_PATH, body, github_keys.sign(body))
        assert status == 200, data
        assert [a["label"] for a in json.loads(data)] == ["true_positive", "false_positive"]
        status, _, _ = server.request("POST", ALERT_PATH, body, _another_key(github_keys, body))
        assert status == 401
    finally:
        assert server.stop() == 0
    store = open_store(database_url)
    try:
        assert key_status(store, keys["active"]) == "revoked"
    finally:
        store.close()
    assert keys["active"].secret[4:-4] not in server.log() and "event=github_alert" in server.log()


# ======================================================================= configuration


@pytest.mark.parametrize("env, problem", [
    ({"APIKEYS_PUBLIC_LEAK_ACTION": "delete"}, "APIKEYS_PUBLIC_LEAK_ACTION"),
    ({"APIKEYS_GITHUB_KEYS_URL": "ftp://example.com/keys"}, "APIKEYS_GITHUB_KEYS_URL"),
])
def test_a_wrong_setting_is_named(env, problem):
    with pytest.raises(ConfigError, match=problem):
        Settings.from_env(env)


def test_the_defaults_are_the_contracts():
    settings = Settings.from_env({})
    assert settings.github_keys_url == "https://api.github.com/meta/public_keys/secret_scanning"
    assert settings.public_leak_action == "revoke"
    assert Settings.from_env({"APIKEYS_PUBLIC_LEAK_ACTION": "alert"}).public_leak_action == "alert"


# ======================================================================= apikeys leak report


@pytest.fixture
def cli_key(run_cli):
    result = run_cli("create", "--name", "billing", "--owner", "payments", "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_leak_report_revokes_records_where_and_never_prints_the_key(run_cli, cli_key, database_url):
    result = run_cli("leak", "report", "-", "--url", "https://pastebin.example/abc", "--source", "pastebin scanner",
                     stdin=cli_key["key"] + "\n")
    assert result.code == 0, result.err
    assert "Revoked" in result.out and cli_key["masked"] in result.out
    assert result.err.startswith("apikeys: warning: no server has delivered") and result.err.count("\n") == 1
    again = run_cli("leak", "report", "-", "--url", "https://pastebin.example/abc", "--source", "pastebin scanner",
                    stdin=cli_key["key"] + "\n")
    assert again.code == 0 and "nothing changed" in again.out
    audit = json.loads(run_cli("audit", "--json").out)
    leaked = [e for e in audit if e["action"] == "key.leaked"]
    revoked = [e for e in audit if e["action"] == "key.revoked"]
    assert len(leaked) == 1 and len(revoked) == 1
    assert leaked[0]["details"]["url"] == "https://pastebin.example/abc" and leaked[0]["details"]["via"] == "cli"
    assert revoked[0]["details"]["reason"] == "compromised" and revoked[0]["actor"].startswith("cli:")
    for output in (result.out, result.err, again.out, again.err, everything_stored(database_url)):
        assert cli_key["key"][4:-4] not in output


def test_leak_report_on_the_command_line_warns_about_the_shell_history(run_cli, cli_key):
    result = run_cli("leak", "report", cli_key["key"])
    assert result.code == 0 and "shell history" in result.err and cli_key["key"] not in result.out + result.err


def test_leak_report_under_the_alert_policy_only_reports(run_cli, cli_key):
    result = run_cli("leak", "report", "-", stdin=cli_key["key"], env={"APIKEYS_PUBLIC_LEAK_ACTION": "alert"})
    assert result.code == 0 and "still active" in result.out
    assert run_cli("verify", "-", stdin=cli_key["key"]).out.strip() == "VALID"


@pytest.mark.parametrize("token", ["never-issued", "look-alike"])
def test_leak_report_of_a_key_we_never_issued_is_a_negative_answer(run_cli, cli_key, database_url, token):
    secret = generate_secret() if token == "never-issued" else look_alike(cli_key["key"])
    before = everything_stored(database_url)
    result = run_cli("leak", "report", "-", stdin=secret)
    assert result.code == 1 and "nothing recorded" in result.out
    assert everything_stored(database_url) == before


@pytest.mark.parametrize("argv, stdin", [(("leak", "report"), None), (("leak", "report", "-"), "\n"), (("leak",), None),
                                         (("leak", "report", "-", "--bogus"), "x")])
def test_leak_report_bad_input_is_one_line_and_exit_2(run_cli, argv, stdin):
    result = run_cli(*argv, stdin=stdin)
    assert result.code == 2 and result.err.startswith("apikeys: error:") and result.err.count("\n") == 1
    assert "Traceback" not in result.err


# ======================================================================= the audit post's Revoke button, in Slack


def test_revoke_from_the_audit_post_of_an_alert(world, github_keys):
    """Under the alert policy: the post arrives in the audit channel, and an admin's Revoke on it opens the
    normal confirmation privately (the post stays as it is) and revokes."""
    from .slackworld import AUDIT, button_labels, code, seed, select_state, send_click, shown, wait_audit_post

    key = seed(world.store, "billing-api", owner="payments")
    api = make_api(world.app_store, github_keys, policy="alert")
    mark = world.stub.mark()
    assert send(api, github_keys, [match(key.secret), match(generate_secret())])[0] == 200
    post = wait_audit_post(world.stub, "found in public", key.masked, since=mark)
    assert key.secret[4:-4] not in json.dumps(post.body) and WHERE in shown(post.body)

    thread = world.stub.response_url("audit-post")
    before = world.stub.mark()
    send_click(world, post.body, "Revoke", thread=thread, user=ADMIN, channel=AUDIT, ephemeral=False,
               message_ts=post.response["ts"])
    card = world.stub.wait_for_response(thread, since=before)
    assert card["replace_original"] is False and card["response_type"] == "ephemeral"
    assert sorted(button_labels(card)) == ["Cancel Revoke Key", "Revoke Key"]
    before = world.stub.mark()
    send_click(world, card, "Revoke Key", thread=thread, user=ADMIN, channel=AUDIT, state=select_state(card, "compromised"))
    result = world.stub.wait_for_response(thread, since=before)
    assert ":white_check_mark:" in shown(result)
    assert code(world.store, key) == "REVOKED"


# ======================================================================= a slow GitHub, odd tokens
def test_a_slow_github_never_holds_a_request_thread_longer_than_the_wait(keys):
    """The keys are fetched on a thread of their own: while GitHub does not answer, every request
    for an unknown identifier returns (503: GitHub retries) after at most ``wait``, one fetch is made
    for all of them, and a later request finds the keys once the fetch is done."""
    import threading

    from bot.github import GitHubKeys

    release, fetching, fetches = threading.Event(), threading.Event(), []

    def slow_fetch(url: str) -> bytes:
        fetches.append(url)
        fetching.set()
        release.wait(60)
        return json.dumps({"public_keys": []}).encode()

    github = GitHubKeys("http://127.0.0.1:9/keys", fetch=slow_fetch, wait=0.2)
    outcomes: list[str] = []

    def ask() -> None:
        try:
            outcomes.append(repr(github.get("some-identifier")))
        except OSError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)  # a bound for a hung test, not a speed goal
    try:
        assert fetching.is_set() and not release.is_set()
        assert not any(thread.is_alive() for thread in threads), "a request waited for GitHub"
        assert outcomes == ["GitHub's public keys are still being fetched"] * 4 and len(fetches) == 1
    finally:
        release.set()


def test_a_signed_alert_whose_token_is_a_lone_surrogate_is_answered(api, github_keys, keys, database_url):
    body = b'[{"token": "\\ud800", "type": "apikeys_api_key", "url": "https://x.example/\\udfff", "source": "content"}]'
    before = everything_stored(database_url)
    status, answer = send(api, github_keys, body=body)
    assert status == 200 and answer[0]["label"] == "false_positive"
    assert answer[0]["token_hash"] == hashlib.sha256("\ud800".encode("utf-8", "surrogatepass")).hexdigest()
    assert everything_stored(database_url) == before


def test_a_slow_github_keys_endpoint_does_not_stall_auth_on_the_real_server(database_url, tmp_path):
    """GitHub's keys endpoint answers nothing while signed alerts with an identifier we do not know
    arrive: they are answered 503 with Retry-After (one fetch for all of them), and /v1/auth keeps
    answering on the worker's two threads while the fetch is still hanging."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from .servers import http_request

    release, fetches = threading.Event(), []

    class Hanging(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            fetches.append(self.path)
            release.wait(30)  # a bound for a hung test, not a speed goal
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args):
            pass

    hanging = ThreadingHTTPServer(("127.0.0.1", 0), Hanging)
    threading.Thread(target=hanging.serve_forever, daemon=True).start()
    signer = GitHubKeysStub()
    signer.current = signer.new_key()  # signs, but is published nowhere
    store = open_store(database_url, bootstrap_admins=[ADMIN])
    secret = store.keys.create(name="svc", owner="ops", actor=ADMIN)[0].secret
    store.close()
    server = start_server(database_url, tmp_path, {
        "WEB_CONCURRENCY": "1", "WEB_THREADS": "2",
        "APIKEYS_GITHUB_KEYS_URL": f"http://127.0.0.1:{hanging.server_address[1]}/keys"})
    try:
        body = json.dumps([match(secret)]).encode()
        with ThreadPoolExecutor(4) as pool:
            alerts = [pool.submit(http_request, server.url, "POST", ALERT_PATH, body, signer.sign(body), 20)
                      for _ in range(4)]
            auths = [http_request(server.url, "GET", "/v1/auth", headers={"X-API-Key": secret}, timeout=20)[0]
                     for _ in range(5)]
            answered = [future.result() for future in alerts]
        assert not release.is_set()  # every answer above came while GitHub still had not answered
        assert auths == [204] * 5
        assert [status for status, _, _ in answered] == [503] * 4
        assert all(headers["Retry-After"].isdigit() for _, headers, _ in answered)
        assert fetches == ["/keys"]  # one fetch for all of them
    finally:
        release.set()
        server.stop_quietly()
        hanging.shutdown()
        hanging.server_close()
