"""``apikeys audit keygen``, ``--verify`` with a pinned key, ``export`` (and ``--follow``), the
documented offline verification of an export, and the server's warning when nothing is signed."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from storage import checkpoints, open_store

from .helpers import ADMIN, ROOT
from .servers import start_server

OFFLINE = ROOT / "docs" / "verify_audit_export.py"


@pytest.fixture
def keys(tmp_path: Path, run_cli) -> tuple[Path, Path]:
    """(private key file, public key file) made by ``apikeys audit keygen``."""
    private = tmp_path / "signing.pem"
    result = run_cli("audit", "keygen", "--out", str(private))
    assert result.code == 0, result.err
    public = tmp_path / "public.pem"
    public.write_text(result.out)
    return private, public


@pytest.fixture
def signed_cli(run_cli, keys):
    """The CLI with the signing key configured."""
    private, _ = keys

    def run(*argv, **kw):
        env = {"APIKEYS_AUDIT_SIGNING_KEY": str(private), **kw.pop("env", {})}
        return run_cli(*argv, env=env, **kw)

    return run


def _history(run) -> None:
    created = json.loads(run("create", "--name", "alpha", "--owner", "team-a", "--json").out)
    assert run("create", "--name", "fleet", "--owner", "team-b", "--count", "3").code == 0
    assert run("revoke", created["id"], "--actor", "alice", "--reason", "compromised").code == 0


def test_keygen_writes_a_0600_private_key_and_prints_only_the_public_key(keys, run_cli, tmp_path):
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    text = public.read_text()
    assert text.startswith("-----BEGIN PUBLIC KEY-----\n") and text.rstrip().endswith("-----END PUBLIC KEY-----")
    assert "PRIVATE" not in text
    signer = checkpoints.load_signer(str(private))
    assert checkpoints.load_public_key(text) == signer.public_raw
    again = run_cli("audit", "keygen", "--out", str(private))
    assert again.code == 2 and "already exists" in again.err and again.out == ""
    assert checkpoints.load_signer(str(private)).public_raw == signer.public_raw  # never overwritten


def test_verify_prints_the_public_key_to_pin_and_agrees_with_it(signed_cli, keys):
    _history(signed_cli)
    _, public = keys
    result = signed_cli("audit", "--verify", "--public-key", str(public))
    assert result.code == 0, result.out + result.err
    assert public.read_text() in result.out
    assert "3 signed checkpoints agree" in result.out and "through entry 5" in result.out


def test_verify_with_another_pinned_key_fails_naming_the_checkpoint(signed_cli, tmp_path, run_cli):
    _history(signed_cli)
    other = tmp_path / "other.pem"
    other.write_text(checkpoints.generate()[1])
    result = run_cli("audit", "--verify", "--public-key", str(other))
    assert result.code == 1
    assert "BROKEN: checkpoint at audit entry 1: signed by another key" in result.out


def test_verify_uses_the_installations_own_key_when_none_is_pinned(signed_cli, tmp_path, database_url):
    _history(signed_cli)
    other = tmp_path / "other-signing.pem"
    checkpoints.generate(other)
    result = signed_cli("audit", "--verify", env={"APIKEYS_AUDIT_SIGNING_KEY": str(other)})
    assert result.code == 1 and "signed by another key" in result.out


def test_an_unsigned_log_verifies_and_says_it_is_not_signed(run_cli):
    _history(run_cli)
    result = run_cli("audit", "--verify")
    assert result.code == 0 and "not signed" in result.out


def test_a_pinned_key_on_an_unsigned_log_fails(run_cli, keys):
    _history(run_cli)
    result = run_cli("audit", "--verify", "--public-key", str(keys[1]))
    assert result.code == 1 and "not signed" in result.out


def test_an_entry_appended_without_the_key_stays_named_after_signed_ones_follow(signed_cli, run_cli):
    """A later signed append vouches only for its own entries: an unsigned one (here a CLI without the
    key; as well a row inserted with SQL) is never covered by what comes after it."""
    _history(signed_cli)
    unsigned = run_cli("create", "--name", "late", "--owner", "team-a")
    assert unsigned.code == 0
    assert "not signed" in unsigned.err  # the operator is told at once
    assert "audit entry 6: not written by apikeys" in signed_cli("audit", "--verify").out
    assert signed_cli("create", "--name", "later", "--owner", "team-a").code == 0
    later = signed_cli("audit", "--verify")
    assert later.code == 1 and "audit entry 6: not written by apikeys" in later.out


@pytest.mark.parametrize("argv, message", [
    (("audit", "--public-key", "x.pem"), "go with --verify"),
    (("audit", "--against-slack"), "go with --verify"),
    (("audit", "--verify", "--public-key", "/nonexistent.pem"), "cannot read"),
    (("audit", "--verify", "--against-slack"), "needs SLACK_BOT_TOKEN"),
    (("audit", "export", "--since", "-1"), "--since"),
])
def test_bad_audit_arguments_are_one_line_and_exit_2(run_cli, argv, message):
    result = run_cli(*argv)
    assert result.code == 2 and message in result.err and result.err.count("\n") == 1


def test_a_bad_signing_key_is_refused_with_exit_2(run_cli, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    for value in (str(bad), str(tmp_path / "missing.pem")):
        result = run_cli("list", env={"APIKEYS_AUDIT_SIGNING_KEY": value})
        assert result.code == 2 and "APIKEYS_AUDIT_SIGNING_KEY" in result.err


def _export(run, *argv) -> list[dict]:
    result = run("audit", "export", *argv)
    assert result.code == 0, result.err
    return [json.loads(line) for line in result.out.splitlines()]


def test_export_is_json_lines_with_hash_and_covering_checkpoint_and_resumes_by_id(signed_cli):
    _history(signed_cli)
    lines = _export(signed_cli)
    assert [line["id"] for line in lines] == [1, 2, 3, 4, 5]
    assert all(line["hash"] and line["prev_hash"] for line in lines)
    assert [line["checkpoint"]["entry_id"] for line in lines] == [1, 4, 4, 4, 5]  # the batch of 3 shares one
    assert _export(signed_cli, "--since", "3") == lines[3:]
    assert _export(signed_cli, "--since", "5") == []


def test_an_export_verifies_offline_with_only_the_public_key(signed_cli, keys, tmp_path):
    _history(signed_cli)
    export = tmp_path / "audit.jsonl"
    export.write_text(signed_cli("audit", "export").out)
    ok = subprocess.run([sys.executable, str(OFFLINE), str(export), str(keys[1])], capture_output=True, text=True,
                        cwd=tmp_path, env={"PATH": os.environ["PATH"]})  # no apikeys configuration at all
    head = json.loads(export.read_text().splitlines()[-1])["hash"][:12]
    assert ok.returncode == 0 and ok.stdout.startswith("OK: entries 1-5 verified"), ok.stdout + ok.stderr
    assert f"head #5 · {head}" in ok.stdout  # what to compare with the audit channel's newest post
    partial = tmp_path / "since-2.jsonl"
    partial.write_text(signed_cli("audit", "export", "--since", "2").out)
    cut = subprocess.run([sys.executable, str(OFFLINE), str(partial), str(keys[1])], capture_output=True, text=True)
    assert cut.returncode == 1 and "starts at entry 3, not 1" in cut.stdout and "--starts-at" in cut.stdout
    told = subprocess.run([sys.executable, str(OFFLINE), str(partial), str(keys[1]), "--starts-at", "3"],
                          capture_output=True, text=True)
    assert told.returncode == 0 and told.stdout.startswith("OK: entries 3-5 verified"), told.stdout
    short = tmp_path / "first-2.jsonl"  # cut at the end after a checkpoint: verifies as far as it goes, says so
    short.write_text("\n".join(export.read_text().splitlines()[:1]) + "\n")
    ends = subprocess.run([sys.executable, str(OFFLINE), str(short), str(keys[1])], capture_output=True, text=True)
    assert ends.returncode == 0 and "entries 1-1 verified" in ends.stdout and "head #1 · " in ends.stdout

    lines = export.read_text().splitlines()
    edited = json.loads(lines[2])
    edited["details"]["name"] = "someone-else"
    cases = {
        "edited": [*lines[:2], json.dumps(edited), *lines[3:]],
        "deleted": [*lines[:2], *lines[3:]],
        "truncated after a checkpoint's entries": lines[:3],
        "not a line of an export": [lines[0], "garbage"],
    }
    for what, content in cases.items():
        tampered = tmp_path / "tampered.jsonl"
        tampered.write_text("\n".join(content) + "\n")
        bad = subprocess.run([sys.executable, str(OFFLINE), str(tampered), str(keys[1])], capture_output=True, text=True)
        assert bad.returncode == 1 and bad.stdout.startswith("BROKEN"), (what, bad.stdout)
    other = tmp_path / "other.pem"
    other.write_text(checkpoints.generate()[1])
    wrong_key = subprocess.run([sys.executable, str(OFFLINE), str(export), str(other)], capture_output=True, text=True)
    assert wrong_key.returncode == 1 and "another key" in wrong_key.stdout


def test_export_follow_streams_new_entries_and_stops_cleanly_on_sigterm(signed_cli, keys, database_url, tmp_path):
    _history(signed_cli)
    env = {**os.environ, "DATABASE_URL": database_url, "APIKEYS_AUDIT_SIGNING_KEY": str(keys[0])}
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "audit", "export", "--since", "4", "--follow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert json.loads(proc.stdout.readline())["id"] == 5
        store = open_store(database_url, signer=checkpoints.load_signer(str(keys[0])))
        try:
            store.keys.create(name="while-following", owner="team-a", actor=ADMIN)
        finally:
            store.close()
        line = json.loads(proc.stdout.readline())  # blocks until the follower polls (about a second)
        assert line["id"] == 6 and line["checkpoint"]["entry_id"] == 6
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_server_warns_once_when_the_audit_log_is_not_signed(database_url, tmp_path, keys):
    server = start_server(database_url, tmp_path)
    try:
        log = server.log()
    finally:
        server.stop()
    assert log.count("APIKEYS_AUDIT_SIGNING_KEY is not set") == 1
    signed = start_server(database_url, tmp_path, {"APIKEYS_AUDIT_SIGNING_KEY": str(keys[0])})
    try:
        assert "APIKEYS_AUDIT_SIGNING_KEY" not in signed.log()
    finally:
        signed.stop()


def test_the_server_refuses_a_bad_signing_key_with_exit_2(database_url, tmp_path):
    server = start_server(database_url, tmp_path, {"APIKEYS_AUDIT_SIGNING_KEY": "not a key"}, wait=False)
    assert server.proc.wait(timeout=30) == 2
    assert "APIKEYS_AUDIT_SIGNING_KEY" in server.log()


def test_an_export_with_an_entry_inserted_by_sql_fails_offline(signed_cli, keys, tmp_path, database_url):
    from .tampering import insert_at_head

    _history(signed_cli)
    store = open_store(database_url)
    try:
        forged_id = insert_at_head(store)
    finally:
        store.close()
    assert signed_cli("create", "--name", "after", "--owner", "team-a").code == 0  # signed on top of it
    export = tmp_path / "audit.jsonl"
    export.write_text(signed_cli("audit", "export").out)
    bad = subprocess.run([sys.executable, str(OFFLINE), str(export), str(keys[1])], capture_output=True, text=True)
    assert bad.returncode == 1 and f"audit entry {forged_id}: not written by apikeys" in bad.stdout, bad.stdout


def _corrupt_entry(database_url: str, entry_id: int) -> str:
    """The database owner's edit apikeys could never make: a time that does not parse (SQLite stores
    times as text) or, on PostgreSQL (whose timestamptz cannot hold one), details that are not JSON."""
    from sqlalchemy import text

    from .helpers import drop_audit_triggers

    store = open_store(database_url)
    try:
        drop_audit_triggers(store)
        with store.db.write() as session:
            if store.db.dialect == "sqlite":
                session.execute(text("UPDATE audit_events SET at = 'yesterday-ish' WHERE id = :id"), {"id": entry_id})
                return "its time does not parse"
            session.execute(text("UPDATE audit_events SET details = '{not json' WHERE id = :id"), {"id": entry_id})
            return "its details are not JSON"
    finally:
        store.close()


@pytest.mark.parametrize("argv", [("audit", "--verify"), ("audit",), ("audit", "--json"), ("audit", "export")])
def test_a_row_that_does_not_parse_is_named_and_exits_1(signed_cli, database_url, argv):
    _history(signed_cli)
    problem = _corrupt_entry(database_url, 2)
    result = signed_cli(*argv)
    assert result.code == 1, (result.out, result.err)
    assert f"audit entry 2: {problem}" in result.out + result.err
    assert "unexpected" not in result.err and "Traceback" not in result.err


@pytest.mark.parametrize("mangle", [
    lambda pem: f'"{pem}"',                           # quoted in a .env file
    lambda pem: f"'{pem}'",
    lambda pem: "APIKEYS_AUDIT_SIGNING_KEY=" + pem,   # the name pasted in with it
    lambda pem: pem.replace("\n", "\\n"),             # newlines written as \n
    lambda pem: pem.replace("\n", " "),
    lambda pem: pem[:-30],                            # cut short
], ids=["double-quoted", "single-quoted", "prefixed", "escaped-newlines", "one-line", "truncated"])
def test_a_malformed_inline_signing_key_is_named_never_printed(run_cli, database_url, tmp_path, mangle):
    private, _ = checkpoints.generate()
    value = mangle(private)
    body = "".join(private.splitlines()[1:-1])
    result = run_cli("create", "--name", "x", "--owner", "y", env={"APIKEYS_AUDIT_SIGNING_KEY": value})
    if result.code == 0:  # forgiven (quotes, escaped newlines): the key works, and is still never printed
        assert body[:16] not in result.out + result.err
        return
    assert result.code == 2 and "APIKEYS_AUDIT_SIGNING_KEY" in result.err
    for chunk in (body[i:i + 16] for i in range(0, len(body) - 16, 16)):
        assert chunk not in result.err
    server = start_server(database_url, tmp_path, {"APIKEYS_AUDIT_SIGNING_KEY": value}, wait=False)
    assert server.proc.wait(timeout=30) == 2
    assert "APIKEYS_AUDIT_SIGNING_KEY" in server.log()
    assert all(chunk not in server.log() for chunk in (body[i:i + 16] for i in range(0, len(body) - 16, 16)))
