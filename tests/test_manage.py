"""The management API against the real server (``python -m bot``, two workers; SQLite or, with
``TEST_DATABASE_URL``, PostgreSQL): admin tokens and their scopes, the routes, idempotent writes, the
write budget, problem details; and, in process with freezegun, what depends on the clock (a token's
expiry, the minute's budget, the 24-hour idempotency window, replicas sharing both)."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import select, text

from bot.config import Settings
from bot.server import create_app
from storage import integrity, open_store
from storage.keyformat import digest, generate_token
from storage.models import AuditEvent
from storage.outbox import OutboxMessage
from storage.tokens import WRITES_PER_MINUTE

from .helpers import ADMIN, cli_runner
from .servers import InProcessApp, start_server

ALL = "keys:read,keys:write,keys:revoke"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def api(module_database_url, tmp_path_factory):
    open_store(module_database_url).close()
    server = start_server(module_database_url, tmp_path_factory.mktemp("manage"),
                          {"APIKEYS_AUDIT_CHANNEL": "C0AUDIT"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared(module_database_url):
    s = open_store(module_database_url)
    yield s
    s.close()


@pytest.fixture
def token(shared):
    """``token(scopes)``: a new admin token's secret (and its name as ``token.name``)."""
    def mint(scopes: str = ALL, **kwargs) -> str:
        made, secret = shared.tokens.create(name=f"bot-{next(_names)}", scopes=scopes, actor="alice", **kwargs)
        mint.name, mint.id = made.name, made.id
        return secret
    return mint


def bearer(secret: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **headers}


def call(target, method: str, path: str, secret: str | None = None, body=None, **headers: str):
    payload = None if body is None else (body if isinstance(body, (str, bytes)) else json.dumps(body))
    status, answer_headers, raw = target.request(method, path, payload, bearer(secret, **headers) if secret else headers)
    return status, answer_headers, (json.loads(raw) if raw else None)


def new_key(api, secret: str, owner: str = "payments", **extra) -> dict:
    status, _, body = call(api, "POST", "/v1/keys", secret, {"name": "billing-api", "owner": owner, **extra})
    assert status == 201, body
    return body


def verify(api, key: str) -> str:
    return call(api, "POST", "/v1/keys/verify", None, {"key": key})[2]["code"]


# ============================================================================ tokens and scopes
def test_a_created_key_verifies_and_its_secret_is_in_the_first_answer_only(api, token):
    secret = token("keys:read,keys:write")
    created = new_key(api, secret, expires_in="30d")
    assert created["key"].startswith("apk_") and verify(api, created["key"]) == "VALID"
    assert created["created_by"] == f"token:{token.name}" and created["expires_at"] is not None
    status, _, shown = call(api, "GET", f"/v1/keys/{created['id']}", secret)
    assert status == 200 and "key" not in shown and shown["masked"] == created["masked"]
    assert created["key"] not in json.dumps(call(api, "GET", "/v1/keys?limit=200", secret)[2])


def test_every_change_is_audited_as_the_token_through_the_api(api, token, shared):
    secret = token()
    created = new_key(api, secret)
    call(api, "POST", f"/v1/keys/{created['id']}/revoke", secret, {"reason": "compromised", "note": "ci"})
    with shared.db.read() as session:
        entries = list(session.scalars(select(AuditEvent).where(AuditEvent.key_id == created["id"])
                                       .order_by(AuditEvent.id)))
    assert [(e.action, e.actor) for e in entries] == [("key.created", f"token:{token.name}"),
                                                      ("key.revoked", f"token:{token.name}")]
    assert {k: json.loads(entries[0].details)[k] for k in ("via", "token_id")} == {"via": "api", "token_id": token.id}
    details = json.loads(entries[1].details)
    assert details["via"] == "api" and details["token_id"] == token.id and details["reason"] == "compromised"
    # ... and the audit channel is told, as it is of Slack's and the CLI's changes
    with shared.db.read() as session:
        posts = [json.loads(m.payload) for m in session.scalars(select(OutboxMessage).where(
            OutboxMessage.channel == "C0AUDIT"))]
    assert any(p["first"] <= entries[1].id <= p["last"] for p in posts)  # the post of the key.revoked entry


@pytest.mark.parametrize("header, code", [
    (None, "token_missing"),
    ("Basic YWxpY2U6c2VjcmV0", "token_missing"),
    ("Bearer apkt_notatoken", "token_malformed"),
    ("Bearer " + generate_token(), "token_unknown"),
])
def test_a_request_without_a_known_token_is_401(api, header, code):
    status, headers, body = call(api, "GET", "/v1/keys", None, **({"Authorization": header} if header else {}))
    assert (status, body["code"]) == (401, code)
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["WWW-Authenticate"].startswith('Bearer realm="apikeys"')


def test_an_api_key_is_not_an_admin_token(api, token):
    key = new_key(api, token())["key"]
    status, _, body = call(api, "GET", "/v1/keys", key)
    assert status == 401 and body["code"] == "token_malformed" and "API key, not an admin token" in body["detail"]
    assert key not in json.dumps(body)


def test_a_revoked_token_is_401_at_once(api, token, module_database_url):
    secret = token()
    assert call(api, "GET", "/v1/keys", secret)[0] == 200
    assert cli_runner(module_database_url)("tokens", "revoke", token.id, "--actor", "alice").code == 0
    status, headers, body = call(api, "GET", "/v1/keys", secret)
    assert (status, body["code"]) == (401, "token_revoked") and 'error="invalid_token"' in headers["WWW-Authenticate"]


@pytest.mark.parametrize("scopes, method, path, needs", [
    ("keys:read", "POST", "/v1/keys", "keys:write"),
    ("keys:write", "GET", "/v1/keys", "keys:read"),
    ("keys:read,keys:write", "POST", "/v1/keys/{id}/revoke", "keys:revoke"),
    ("keys:revoke", "POST", "/v1/keys/{id}/rotate", "keys:write"),
    ("keys:revoke", "GET", "/v1/keys/{id}", "keys:read"),
])
def test_a_missing_scope_is_403_naming_it_and_changes_nothing(api, token, scopes, method, path, needs):
    key = new_key(api, token())
    secret = token(scopes)
    status, headers, body = call(api, method, path.format(id=key["id"]), secret,
                                 {"name": "x", "owner": "y"} if path == "/v1/keys" else {})
    assert (status, body["code"], body["required_scope"]) == (403, "scope_missing", needs)
    assert headers["WWW-Authenticate"].endswith(f'error="insufficient_scope", scope="{needs}"')
    assert verify(api, key["key"]) == "VALID"


# ============================================================================ the routes
def test_keys_are_listed_newest_first_by_cursor_and_filtered(api, token):
    secret = token()
    owner = f"team-{next(_names)}"
    made = [new_key(api, secret, owner=owner)["id"] for _ in range(5)]
    call(api, "POST", f"/v1/keys/{made[0]}/revoke", secret, {})
    seen, cursor, pages = [], None, 0
    while True:
        status, _, page = call(api, "GET", f"/v1/keys?owner={owner}&limit=2" + (f"&cursor={cursor}" if cursor else ""),
                               secret)
        assert status == 200 and len(page["items"]) <= 2
        seen += [k["id"] for k in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made)) and pages == 3
    revoked = call(api, "GET", f"/v1/keys?owner={owner}&status=revoked", secret)[2]["items"]
    assert [k["id"] for k in revoked] == [made[0]] and revoked[0]["status"] == "revoked"
    assert len(call(api, "GET", f"/v1/keys?owner={owner}&status=active", secret)[2]["items"]) == 4


@pytest.mark.parametrize("query, code", [
    ("limit=0", "limit_invalid"), ("limit=201", "limit_invalid"), ("limit=ten", "limit_invalid"),
    ("status=lost", "query_invalid"), ("cursor=%%%", "cursor_invalid"), ("cursor=bm9wZQ", "cursor_invalid"),
])
def test_a_query_it_cannot_use_is_400(api, token, query, code):
    status, _, body = call(api, "GET", f"/v1/keys?{query}", token("keys:read"))
    assert (status, body["code"]) == (400, code), body


def test_an_unknown_key_is_404(api, token):
    secret = token()
    for method, path in [("GET", "/v1/keys/key_00000000000000000"), ("GET", "/v1/keys/nope"),
                         ("POST", "/v1/keys/key_00000000000000000/revoke"),
                         ("POST", "/v1/keys/key_00000000000000000/rotate")]:
        status, headers, body = call(api, method, path, secret, {} if method == "POST" else None)
        assert (status, headers["Content-Type"]) == (404, "application/problem+json"), (path, body)


@pytest.mark.parametrize("body, field", [
    ({"owner": "payments"}, "name"), ({"name": "x", "owner": "no spaces"}, None), ({"name": 5, "owner": "a"}, "name"),
    ({"name": "x", "owner": "a", "expires_in": "soon"}, None), ({"name": "x", "owner": "a", "colour": "red"}, "colour"),
    ({"name": "apk_" + "a" * 28, "owner": "a"}, None),
])
def test_an_invalid_body_is_422_and_creates_nothing(api, token, shared, body, field):
    secret = token()
    before = shared.keys.count_keys(status="all")
    status, headers, answer = call(api, "POST", "/v1/keys", secret, body)
    assert status == 422 and headers["Content-Type"] == "application/problem+json", answer
    if field:
        assert answer["errors"][0]["field"] == field
    assert shared.keys.count_keys(status="all") == before


def test_a_body_that_is_not_a_json_object_is_400(api, token):
    for raw in ["not json", "[1, 2]", '"x"']:
        status, _, body = call(api, "POST", "/v1/keys", token(), raw)
        assert (status, body["code"]) == (400, "not_json")


def test_revoke_answers_the_revoked_key_then_409_and_the_key_answers_REVOKED(api, token):
    secret = token()
    key = new_key(api, secret)
    status, _, body = call(api, "POST", f"/v1/keys/{key['id']}/revoke", secret, {"reason": "compromised"})
    assert status == 200 and body["status"] == "revoked" and body["revoked_by"] == f"token:{token.name}"
    assert verify(api, key["key"]) == "REVOKED"
    status, _, again = call(api, "POST", f"/v1/keys/{key['id']}/revoke", secret, {"reason": "other"})
    assert (status, again["code"]) == (409, "already_revoked") and again["key"]["revoke_reason"] == "compromised"


def test_rotate_answers_the_replacement_once_and_the_old_key_works_for_its_grace(api, token):
    secret = token()
    old = new_key(api, secret)
    status, _, body = call(api, "POST", f"/v1/keys/{old['id']}/rotate", secret, {"grace": "1 hour"})
    assert status == 201 and body["key"] != old["key"] and body["name"] == old["name"]
    assert body["replaces"]["id"] == old["id"] and body["replaces"]["rotated_to"] == body["id"]
    assert verify(api, body["key"]) == "VALID" and verify(api, old["key"]) == "VALID"
    status, _, again = call(api, "POST", f"/v1/keys/{old['id']}/rotate", secret, {})
    assert (status, again["code"]) == (409, "key_state")
    now = new_key(api, secret)
    assert call(api, "POST", f"/v1/keys/{now['id']}/rotate", secret, {"grace": "now"})[0] == 201
    assert verify(api, now["key"]) == "REVOKED"
    assert call(api, "POST", f"/v1/keys/{new_key(api, secret)['id']}/rotate", secret, {"grace": "31d"})[0] == 422


# ============================================================================ idempotent writes
def test_the_same_idempotency_key_and_body_answer_the_first_answer_without_the_secret(api, token, shared):
    secret = token()
    body = {"name": f"idem-{next(_names)}", "owner": "payments"}
    first = call(api, "POST", "/v1/keys", secret, body, **{"Idempotency-Key": "deploy-42"})
    again = call(api, "POST", "/v1/keys", secret, body, **{"Idempotency-Key": "deploy-42"})
    assert first[0] == again[0] == 201 and again[1]["Idempotent-Replayed"] == "true"
    assert again[2]["id"] == first[2]["id"] and again[2]["key"] is None and "already shown" in again[2]["key_shown"]
    assert {k: v for k, v in again[2].items() if k not in ("key", "key_shown")} == {
        k: v for k, v in first[2].items() if k != "key"}
    assert len(shared.keys.search(body["name"])) == 1
    other = call(api, "POST", "/v1/keys", secret, {**body, "owner": "ops"}, **{"Idempotency-Key": "deploy-42"})
    assert (other[0], other[2]["code"]) == (422, "idempotency_key_reused")
    # another token's key of the same name is its own
    assert call(api, "POST", "/v1/keys", token(), body, **{"Idempotency-Key": "deploy-42"})[2]["key"] is not None


def test_a_replayed_revocation_answers_200_again_not_409(api, token):
    secret = token()
    key = new_key(api, secret)
    first = call(api, "POST", f"/v1/keys/{key['id']}/revoke", secret, {}, **{"Idempotency-Key": "r1"})
    again = call(api, "POST", f"/v1/keys/{key['id']}/revoke", secret, {}, **{"Idempotency-Key": "r1"})
    assert first[0] == again[0] == 200 and again[2] == first[2]


def test_requests_racing_with_one_idempotency_key_change_once(api, token, shared):
    secret = token()
    body = {"name": f"race-{next(_names)}", "owner": "payments"}
    answers = []

    def send():
        answers.append(call(api, "POST", "/v1/keys", secret, body, **{"Idempotency-Key": "race"}))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(shared.keys.search(body["name"])) == 1
    assert {a[2]["id"] for a in answers if a[0] == 201} == {shared.keys.search(body["name"])[0].id}
    assert [a[2]["key"] is not None for a in answers if a[0] == 201].count(True) == 1
    assert all(a[0] in (201, 409) for a in answers), [a[:1] + (a[2],) for a in answers]


def test_an_idempotency_key_it_cannot_keep_is_400(api, token):
    for bad in ["x" * 256, "tab\there", "apk_" + "a" * 28]:
        status, _, body = call(api, "POST", "/v1/keys", token(), {"name": "a", "owner": "b"},
                               **{"Idempotency-Key": bad})
        assert (status, body["code"]) == (400, "idempotency_key_invalid")


# ============================================================================ the write budget
def test_writes_beyond_the_budget_are_429_with_retry_after(api, token):
    """Whatever second of the minute this starts at, two minutes' budgets are spent within 2 x 60 + 1 writes."""
    secret = token()
    answers = [call(api, "POST", "/v1/keys", secret, {"name": "burst", "owner": "qa"}) for _ in range(2 * WRITES_PER_MINUTE + 1)]
    limited = [a for a in answers if a[0] == 429]
    assert limited and limited[0][2]["code"] == "rate_limited" and 1 <= int(limited[0][1]["Retry-After"]) <= 60
    assert sum(a[0] == 201 for a in answers) <= 2 * WRITES_PER_MINUTE
    assert call(api, "GET", "/v1/keys?limit=1", secret)[0] == 200  # reads are not limited


# ============================================================================ in process, on the clock
@pytest.fixture
def replicas(database_url):
    """Two apps on one database: what two replicas are."""
    open_store(database_url).close()
    apps = [create_app(Settings(database_url=database_url, admins=(ADMIN,))) for _ in range(2)]
    yield [InProcessApp(a) for a in apps]
    for a in apps:
        a.store.close()


def test_the_budget_is_per_minute_and_shared_by_replicas(replicas, database_url):
    one, two = replicas
    with freeze_time("2026-12-07 10:00:05") as clock:
        secret = one.app.store.tokens.create(name="ci", scopes=ALL, actor="alice")[1]
        for i in range(WRITES_PER_MINUTE):
            assert call(one if i % 2 else two, "POST", "/v1/keys", secret, {"name": "n", "owner": "o"})[0] == 201
        status, headers, body = call(two, "POST", "/v1/keys", secret, {"name": "n", "owner": "o"})
        assert (status, headers["Retry-After"]) == (429, "55")
        assert call(one, "POST", "/v1/keys", secret, {"name": "n", "owner": "o"})[0] == 429
        clock.tick(timedelta(seconds=55))
        assert call(one, "POST", "/v1/keys", secret, {"name": "n", "owner": "o"})[0] == 201


def test_a_refused_write_does_not_spend_the_budget(replicas):
    one, _ = replicas
    with freeze_time("2026-12-07 10:00:00"):
        secret = one.app.store.tokens.create(name="ci", scopes=ALL, actor="alice")[1]
        for _ in range(WRITES_PER_MINUTE + 5):
            assert call(one, "POST", "/v1/keys", secret, {"name": "n", "owner": "bad owner"})[0] == 422
        assert call(one, "POST", "/v1/keys", secret, {"name": "n", "owner": "o"})[0] == 201


def test_a_token_expires(replicas):
    one, _ = replicas
    with freeze_time("2026-12-07 10:00:00") as clock:
        secret = one.app.store.tokens.create(name="ci", scopes=ALL, actor="alice", expires_in=timedelta(days=1))[1]
        assert call(one, "GET", "/v1/keys", secret)[0] == 200
        clock.tick(timedelta(days=1))
        status, _, body = call(one, "GET", "/v1/keys", secret)
        assert (status, body["code"]) == (401, "token_expired")


def test_an_idempotency_key_is_kept_24_hours(replicas):
    one, two = replicas
    with freeze_time("2026-12-07 10:00:00") as clock:
        secret = one.app.store.tokens.create(name="ci", scopes=ALL, actor="alice")[1]
        first = call(one, "POST", "/v1/keys", secret, {"name": "n", "owner": "o"}, **{"Idempotency-Key": "k"})
        clock.tick(timedelta(hours=23, minutes=59))
        again = call(two, "POST", "/v1/keys", secret, {"name": "n", "owner": "o"}, **{"Idempotency-Key": "k"})
        assert again[2]["id"] == first[2]["id"] and again[1].get("Idempotent-Replayed") == "true"
        clock.tick(timedelta(minutes=1))
        later = call(one, "POST", "/v1/keys", secret, {"name": "n", "owner": "o"}, **{"Idempotency-Key": "k"})
        assert later[0] == 201 and later[2]["id"] != first[2]["id"] and later[2]["key"]


# ============================================================================ what the database holds
def _insert_token_row(session, token_id: str, name: str) -> str:
    """A token row with every scope, written with SQL as the database owner could; returns its secret."""
    secret = generate_token()
    session.execute(text(
        "INSERT INTO api_tokens (id, name, scopes, prefix, last4, digest, created_at, created_by, expires_at) "
        "VALUES (:id, :name, 'keys:read,keys:write,keys:revoke', 'apkt', :l4, :d, :now, 'mallory', :later)"),
        {"id": token_id, "name": name, "l4": secret[-4:], "d": digest(secret), "now": "2026-12-01 00:00:00",
         "later": "2030-01-01 00:00:00"})
    return secret


def test_a_token_inserted_with_sql_authenticates_nothing_and_the_self_check_names_it(replicas, database_url):
    one, _ = replicas
    store = one.app.store
    with store.db.write() as session:
        secret = _insert_token_row(session, "tok_00000000000000mint", "mint")
    status, _, body = call(one, "GET", "/v1/keys", secret)
    assert (status, body["code"]) == (401, "token_unknown")
    problems = [str(p) for p in integrity.table_problems(store.db)]
    assert any("token tok_00000000000000mint" in p and "no token.created entry" in p for p in problems), problems


@pytest.mark.parametrize("statement", [
    "UPDATE api_tokens SET scopes = 'keys:read,keys:write,keys:revoke'",
    "UPDATE api_tokens SET expires_at = '2099-01-01 00:00:00'",
    "UPDATE api_tokens SET revoked_at = NULL, revoked_by = NULL",
    "DELETE FROM api_tokens",
])
def test_the_database_keeps_a_tokens_scopes_lifetime_and_revocation(store, statement):
    token, _ = store.tokens.create(name="ro", scopes="keys:read", actor="alice")
    store.tokens.revoke(token.id, actor="alice")
    with pytest.raises(Exception) as refused:
        with store.db.write() as session:
            session.execute(text(statement))
    assert any(w in str(refused.value) for w in ("never change", "permanent", "never deleted"))


def test_no_token_is_kept_or_printed_in_full_after_creation(run_cli, database_url):
    created = run_cli("tokens", "create", "--name", "terraform", "--scope", "keys:read,keys:write", "--actor",
                      "alice", "--json")
    assert created.code == 0, created.err
    shown = json.loads(created.out)
    assert shown["token"].startswith("apkt_") and shown["scopes"] == ["keys:read", "keys:write"]
    listed = run_cli("tokens", "list")
    assert shown["token"] not in listed.out and shown["masked"] in listed.out
    store = open_store(database_url, create_schema=False)
    try:
        with store.db.read() as session:
            for table in ("api_tokens", "audit_events", "outbox"):
                rows = session.execute(text(f"SELECT * FROM {table}")).all()
                assert shown["token"] not in repr(rows), table
    finally:
        store.close()
    assert run_cli("tokens", "revoke", shown["id"], "--actor", "alice").out.startswith("Revoked admin token")
    assert "already revoked" in run_cli("tokens", "revoke", shown["id"], "--actor", "alice").out
    actions = [e.action for e in open_store(database_url, create_schema=False).audit.recent(limit=2)]
    assert actions == ["token.revoked", "token.created"]


@pytest.mark.parametrize("argv, message", [
    (("tokens", "create", "--name", "x", "--scope", "tokens:write", "--actor", "a"), "can never manage tokens"),
    (("tokens", "create", "--name", "x", "--scope", "", "--actor", "a"), "at least one scope"),
    (("tokens", "create", "--name", "two words", "--scope", "keys:read", "--actor", "a"), "invalid token name"),
    (("tokens", "create", "--name", "x", "--scope", "keys:read", "--expires-in", "400d", "--actor", "a"), "366"),
    (("tokens", "create", "--name", "x", "--scope", "keys:read"), "--actor"),
    (("tokens", "revoke", "tok_nope", "--actor", "a"), "not a token id"),
    (("tokens", "revoke", "tok_00000000000000000", "--actor", "a"), "no token with id"),
])
def test_a_tokens_command_it_cannot_do_exits_2_and_changes_nothing(run_cli, argv, message):
    result = run_cli(*argv)
    assert result.code == 2 and message in result.err, result.err
    assert "No admin tokens" in run_cli("tokens", "list").out


def test_the_characters_free_text_may_not_hold_are_this_pythons_control_and_format_characters():
    """``FORBIDDEN_CHARS`` is written out (computing it costs 130 ms at every start); a Python whose
    Unicode has a new format character fails here until the constant is regenerated."""
    import re
    import sys
    import unicodedata

    from storage.validation import FORBIDDEN_BMP, FORBIDDEN_CHARS

    forbidden, bmp = re.compile(f"[{FORBIDDEN_CHARS}]"), re.compile(f"[{FORBIDDEN_BMP}]")
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        assert bool(forbidden.match(ch)) == (unicodedata.category(ch) in ("Cc", "Cf")), hex(cp)
        assert bool(bmp.match(ch)) == (cp <= 0xFFFF and unicodedata.category(ch) in ("Cc", "Cf")), hex(cp)


@pytest.mark.parametrize("expires_in, status", [(60.0, 201), (3600, 201), ("12h", 201), (True, 422), (0, 422),
                                                ("0d", 422), ("3661d", 422), (60.5, 422)])
def test_a_lifetime_is_what_the_document_says(api, token, expires_in, status):
    answer = call(api, "POST", "/v1/keys", token(), {"name": "life", "owner": "qa", "expires_in": expires_in})
    assert answer[0] == status, answer[2]
    if status == 422:
        assert answer[2]["errors"][0]["field"] == "expires_in" and "lifetime like 90d" in answer[2]["detail"]


def test_a_tokens_last_use_is_recorded_once_a_minute(replicas):
    one, _ = replicas
    store = one.app.store
    with freeze_time("2026-12-07 10:00:00") as clock:
        made, secret = store.tokens.create(name="ci", scopes=ALL, actor="alice")
        assert store.tokens.list()[0].last_used_at is None
        call(one, "GET", "/v1/keys", secret)
        first = store.tokens.list()[0].last_used_at
        assert first is not None and first.isoformat().startswith("2026-12-07T10:00:00")
        clock.tick(timedelta(seconds=30))
        call(one, "GET", "/v1/keys", secret)
        assert store.tokens.list()[0].last_used_at == first
        clock.tick(timedelta(seconds=31))
        call(one, "GET", "/v1/keys", secret)
        assert store.tokens.list()[0].last_used_at.isoformat().startswith("2026-12-07T10:01:01")


def test_an_admin_token_is_masked_wherever_text_is_kept_or_logged(api, token, shared):
    """A token pasted into a revocation's note, a key name or a log line is a token still: masked (or refused)."""
    import logging

    from bot import logs
    from storage.redaction import redact

    secret = token()
    assert redact(f"oops {secret}") == f"oops apkt_…{secret[-4:]}[redacted]"
    key = new_key(api, secret)
    call(api, "POST", f"/v1/keys/{key['id']}/revoke", secret, {"reason": "other", "note": f"pasted {secret}"})
    with shared.db.read() as session:
        kept = repr(session.execute(text("SELECT * FROM api_keys")).all()) + repr(
            session.execute(text("SELECT * FROM audit_events")).all())
    assert secret not in kept and f"apkt_…{secret[-4:]}[redacted]" in kept
    status, _, body = call(api, "POST", "/v1/keys", secret, {"name": f"svc {secret}", "owner": "qa"})
    assert status == 422 and secret not in json.dumps(body)
    record = logging.LogRecord("apikeys.test", logging.INFO, __file__, 1, "token %s", (secret,), None)
    assert secret not in logs.RedactingFormatter().format(record)
    assert secret not in api.log()


# ============================================================================ found in review
@pytest.mark.parametrize("target", ["revoke", "rotate"])
def test_retries_racing_with_one_idempotency_key_on_a_revoke_or_rotate_get_one_answer(api, token, target):
    secret = token()
    key = new_key(api, secret)
    answers = []
    barrier = threading.Barrier(6)

    def send():
        barrier.wait()
        answers.append(call(api, "POST", f"/v1/keys/{key['id']}/{target}", secret, {}, **{"Idempotency-Key": "once"}))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(a[0] for a in answers)
    assert statuses == [200 if target == "revoke" else 201] * 6, [(a[0], a[2].get("code")) for a in answers]
    assert len({a[2]["id"] for a in answers}) == 1


def test_a_secret_in_the_path_is_never_answered_back(api, token):
    secret = token()
    key = new_key(api, secret)["key"]
    for method, path in [("GET", f"/v1/keys/{key}"), ("POST", f"/v1/keys/{key}/revoke"), ("GET", f"/{key}"),
                         ("GET", f"/v1/keys/{secret}")]:
        status, _, raw = api.request(method, path, "{}" if method == "POST" else None, bearer(secret))
        assert status == 404 and key.encode() not in raw and secret.encode() not in raw, (path, raw)


def _forge_token(store, entry_details) -> str:
    """As the database owner would: a token row, and a token.created entry at the head for it."""
    from storage.audit import EventInput

    with store.db.write() as session:
        secret = _insert_token_row(session, "tok_0000000000000forge", "forged")
        unsigned = type(store.audit)(store.db)  # an append that signs nothing: what SQL alone can do
        unsigned.append(session, EventInput(actor="mallory", action="token.created", key_id="tok_0000000000000forge",
                                            details=entry_details(secret)))
    return secret


def test_with_a_signing_key_a_token_whose_creation_no_checkpoint_vouches_for_is_refused(database_url):
    from storage import checkpoints

    signer = checkpoints.load_signer(checkpoints.generate()[0])
    open_store(database_url, signer=signer).close()
    app = create_app(Settings(database_url=database_url, admins=(ADMIN,), audit_signer=signer))
    try:
        client = InProcessApp(app)
        real = app.store.tokens.create(name="real", scopes=ALL, actor="alice")[1]
        assert call(client, "GET", "/v1/keys", real)[0] == 200
        forged = _forge_token(app.store, lambda s: {"name": "forged", "token": f"apkt_…{s[-4:]}",
                                                    "scopes": ALL.split(","), "expires_at": "2030-01-01T00:00:00Z"})
        status, _, body = call(client, "GET", "/v1/keys", forged)
        assert (status, body["code"]) == (401, "token_unknown")
    finally:
        app.store.close()


def test_a_tokens_creation_entry_must_describe_the_row(replicas):
    one, _ = replicas
    forged = _forge_token(one.app.store, lambda s: {"name": "forged", "token": f"apkt_…{s[-4:]}",
                                                    "scopes": ["keys:read"], "expires_at": "2030-01-01T00:00:00Z"})
    assert call(one, "GET", "/v1/keys", forged)[0] == 401  # the row claims more scopes than its entry


def test_the_command_line_points_an_admin_token_to_tokens_revoke(run_cli, shared):
    secret = generate_token()
    for argv in (("revoke", secret, "--actor", "a"), ("verify", secret), ("rotate", secret, "--actor", "a")):
        result = run_cli(*argv)
        assert result.code == 2 and "admin token" in result.err and "tokens revoke" in result.err, result.err
        assert secret not in result.err + result.out


def test_a_token_is_not_made_unsigned_into_a_signed_log(database_url, run_cli):
    from storage import checkpoints

    signer = checkpoints.load_signer(checkpoints.generate()[0])
    store = open_store(database_url, signer=signer)
    store.keys.create(name="signed", owner="qa", actor="alice")
    store.close()
    result = run_cli("tokens", "create", "--name", "ci", "--scope", "keys:read", "--actor", "alice")
    assert result.code == 2 and "give this command APIKEYS_AUDIT_SIGNING_KEY" in result.err
    assert "No admin tokens" in run_cli("tokens", "list").out
