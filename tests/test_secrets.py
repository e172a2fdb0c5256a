"""No full key in a log line, a database row or CLI output; no raw control character in a log line.

Each test here names one way a secret (or a terminal escape) used to get through, found by a
review that tried it as an attacker or a careless insider would.
"""

from __future__ import annotations

import json
import socket
import urllib.parse

import pytest

from storage.keyformat import generate_secret

from .helpers import everything_stored
from .servers import start_server

CONTROLS = ("\x1b", "\x07", "\x00", "\x9b")


def _raw_request(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(data)
        chunks = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def _assert_clean(text_: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text_ and secret[4:-4] not in text_, "a full key reached the log"
    for ch in CONTROLS:
        assert ch not in text_, f"a raw control character {ch!r} reached the log"


# ======================================================================= the server's own log


def test_malformed_request_lines_carrying_a_key_are_refused_and_never_logged(database_url, tmp_path):
    secret_in_query, secret_as_method, secret_in_header = generate_secret(), generate_secret(), generate_secret()
    server = start_server(database_url, tmp_path, {"WEB_CONCURRENCY": "1"})
    try:
        bad_requests = [
            f"GET /v1/auth?api_key={secret_in_query}\x01\x1b[31m HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            f"{secret_as_method} /v1/auth HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            f"GET /v1/auth HTTP/1.1\r\nHost: x\r\nX-API-Key\x07: {secret_in_header}\r\n\r\n".encode(),
        ]
        answers = [_raw_request(server.url, request) for request in bad_requests]
        # granian's HTTP parser refuses the control characters itself; a key where the method goes
        # is just an unknown method, which /v1/auth answers like any other (proxies forward theirs).
        assert answers[0].startswith(b"HTTP/1.1 400") and answers[2].startswith(b"HTTP/1.1 400"), answers
        assert answers[1].startswith(b"HTTP/1.1 401"), answers[1][:200]
        for answer in answers:
            _assert_clean(answer.decode("latin-1"), secret_in_query, secret_as_method, secret_in_header)
    finally:
        assert server.stop() == 0
    _assert_clean(server.log(), secret_in_query, secret_as_method, secret_in_header)


def test_every_logger_writes_through_the_one_redacting_handler():
    import logging

    import slack_bolt  # noqa: F401
    import slack_sdk  # noqa: F401

    from bot import logs
    from bot.config import Settings
    from bot.server import _granian

    logs.configure()
    try:
        _granian(Settings())  # granian configures handlers of its own for its loggers
        assert logging.getLogger("_granian").isEnabledFor(logging.INFO)
        for name, logger in logging.Logger.manager.loggerDict.items():
            if isinstance(logger, logging.Logger):
                assert not logger.handlers, f"logger {name} has a handler of its own: {logger.handlers}"
                assert logger.propagate, f"logger {name} does not reach the root handler"
        (root_handler,) = logging.getLogger().handlers
        assert isinstance(root_handler.formatter, logs.RedactingFormatter)
    finally:
        logging.getLogger().handlers.clear()


def test_control_characters_in_a_logged_value_are_escaped():
    import io
    import logging

    from bot.logs import FORMAT, GroupWriteHandler, RedactingFormatter, fields

    stream = io.StringIO()
    handler = GroupWriteHandler(stream)
    handler.setFormatter(RedactingFormatter(FORMAT))
    logger = logging.getLogger("test.controls")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.warning(fields(event="revoke", actor="ana\x1b]0;owned\x07", note="a\x00b\x9bc"))
    logger.warning("reply failed: %s", "x\x1b[2J")
    line = stream.getvalue()
    _assert_clean(line)
    assert "ana\\x1b]0;owned\\x07" in line and "a\\x00b\\x9bc" in line and "x\\x1b[2J" in line
    assert line.count("\n") == 2


# ======================================================================= free text in storage


@pytest.fixture
def leaked():
    """A key someone found in the wild, pasted into every free-text field."""
    return generate_secret()


def _created_id(run_cli) -> str:
    result = run_cli("create", "--name", "billing", "--owner", "payments", "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)["id"]


def test_a_key_pasted_into_revoke_actor_and_note_is_masked_everywhere(run_cli, database_url, leaked):
    key_id = _created_id(run_cli)
    result = run_cli("revoke", key_id, "--actor", f"ana (found {leaked})", "--note", f"leaked key was {leaked}!",
                     "--reason", "compromised")
    assert result.code == 0, result.err
    outputs = [result.out, result.err]
    for argv in (("audit", "--json"), ("audit",), ("list", "--status", "all", "--json"), ("list", "--status", "all")):
        shown = run_cli(*argv)
        assert shown.code == 0, shown.err
        outputs += [shown.out, shown.err]
    stored = everything_stored(database_url)
    for where in [*outputs, stored]:
        assert leaked not in where and leaked[4:-4] not in where
    assert f"apk_\u2026{leaked[-4:]}[redacted]" in stored  # masked, so the note still says which key
    (revoked,) = json.loads(run_cli("list", "--status", "revoked", "--json").out)
    assert revoked["revoked_by"] == f"ana (found apk_\u2026{leaked[-4:]}[redacted])"
    assert run_cli("audit", "--verify").code == 0


@pytest.mark.parametrize("field", ["--name", "--owner"])
def test_a_key_in_a_name_or_owner_is_refused(run_cli, database_url, leaked, field):
    argv = {"--name": "billing", "--owner": "payments"}
    argv[field] = f"{leaked}" if field == "--owner" else f"billing {leaked}"
    result = run_cli("create", *[part for pair in argv.items() for part in pair])
    assert result.code == 2
    assert result.err.count("\n") == 1 and "API key" in result.err
    assert leaked not in result.err and leaked[4:-4] not in result.err
    assert leaked[4:-4] not in everything_stored(database_url)
    assert json.loads(run_cli("list", "--status", "all", "--json").out) == []


def test_a_key_in_the_admins_actor_is_masked(run_cli, database_url, leaked):
    result = run_cli("admins", "add", "UNEWADMIN", "--actor", f"ops {leaked}")
    assert result.code == 0, result.err
    result = run_cli("admins", "remove", "UNEWADMIN", "--actor", f"ops {leaked}")
    assert result.code == 0, result.err
    stored = everything_stored(database_url)
    assert leaked[4:-4] not in stored and f"ops apk_\u2026{leaked[-4:]}[redacted]" in stored


@pytest.mark.parametrize("actor", ["", "   ", "x" * 201, "ana\x1b[31m", "ana\x00", "ana\x07", "ana\nroot"])
def test_the_admins_actor_is_validated_like_every_other_actor(run_cli, database_url, actor):
    result = run_cli("admins", "add", "UNEWADMIN", "--actor", actor)
    assert result.code == 2, result.out
    assert result.err.startswith("apikeys: error:") and result.err.count("\n") == 1
    assert "UNEWADMIN" not in run_cli("admins", "list").out


def test_payload_fields_that_reach_audit_details_are_masked(store, leaked):
    """Slack hands us channel ids, team ids and user names; a forged or odd payload can carry a key."""
    (created,) = store.keys.create(name="billing", owner="payments", actor="test")
    store.keys.revoke(created.key.id, actor="UADMIN001", note=None,
                      via="slack", context={"channel_id": leaked, "team_id": f"T{leaked}", leaked: "as a name"})
    store.audit.record(__import__("storage").EventInput(
        actor=f"U{leaked}", action="key.leaked", key_id=created.key.id,
        details={"posted_by": leaked, "nested": {"list": [leaked, 1, None]}}))
    entries = store.audit.oldest_first()
    everything = json.dumps([(e.actor, e.details) for e in entries])
    assert leaked[4:-4] not in everything
    assert everything.count("[redacted]") == 6
    assert store.audit.verify() is None


@pytest.mark.parametrize("encode", [
    lambda k: k.replace("_", "%5F"), lambda k: k.replace("_", "%5f"), lambda k: k.replace("_", "%255F"),
    lambda k: "".join(f"%{ord(c):02X}" for c in k), lambda k: k.replace("_", "&#95;"), lambda k: k.replace("_", "&lowbar;"),
], ids=["percent", "percent-lower", "double-percent", "all-percent", "html-decimal", "html-named"])
def test_a_key_in_an_encoding_a_url_or_text_carries_is_masked_before_storing(run_cli, database_url, encode):
    from storage.redaction import redact

    key = json.loads(run_cli("create", "--name", "svc", "--owner", "ops", "--json").out)["key"]
    url = "https://gist.example.com/raw?token=" + encode(key) + "&x=1"
    assert key not in redact(url) and key[4:] not in redact(url) and key[4:] not in urllib.parse.unquote(redact(url))
    result = run_cli("leak", "report", "-", "--url", url, stdin=key + "\n")
    assert result.code == 0, result.err
    dump = everything_stored(database_url)
    assert key[4:] not in dump and encode(key)[4:] not in dump
    assert key[4:] not in urllib.parse.unquote(urllib.parse.unquote(dump))


def test_the_shortest_key_shaped_text_is_masked_by_redact_value():
    """``redact_value`` leaves strings shorter than the shortest key-shaped text alone (speed): the
    boundary is masked, also in an encoding or as a token, and a surrogate is still made storable."""
    from storage.redaction import redact_value

    shortest = {"key": "apk_12345678", "token": "apkt_12345678", "encoded": "apk%5F12345678", "html": "apk&#95;12345678"}
    for name, value in redact_value(shortest).items():
        assert value.endswith("5678[redacted]"), (name, value)
    assert redact_value({"k": "apk_1234567"}) == {"k": "apk_1234567"}  # seven: not key-shaped
    assert redact_value(["\ud800"]) == ["\ufffd"]
