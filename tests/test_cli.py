"""The ``apikeys`` command line, as an operator uses it."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from sqlalchemy import text, update

from storage import AuditEvent, open_store
from storage.keyformat import digest, generate_secret

from .helpers import ADMIN, ROOT, drop_audit_triggers

T0 = datetime(2030, 3, 14, 9, 0, 0, tzinfo=timezone.utc)
SECRET_RE = re.compile(r"apk_[0-9A-Za-z]{28}")
UNKNOWN_KEY_ID = "key_" + "A" * 17


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def masked(secret: str) -> str:
    return "apk_\u2026" + secret[-4:]


def create_json(run_cli, name="billing", owner="payments-team", *extra):
    result = run_cli("create", "--name", name, "--owner", owner, "--json", *extra)
    assert result.code == 0, result.err
    return json.loads(result.out)


def list_json(run_cli, *extra):
    result = run_cli("list", "--json", *extra)
    assert result.code == 0, result.err
    return json.loads(result.out)


def audit_json(run_cli, *extra):
    result = run_cli("audit", "--json", *extra)
    assert result.code == 0, result.err
    return json.loads(result.out)


def assert_one_line_error(result, code=2):
    assert result.code == code
    assert "Traceback" not in result.err
    assert result.err.endswith("\n")
    assert result.err.count("\n") == 1, result.err
    assert result.err.strip()


# == create ===================================================================================
def test_create_prints_the_secret_once_and_the_id(run_cli):
    result = run_cli("create", "--name", "billing", "--owner", "payments-team")
    assert result.code == 0, result.err
    assert result.err == ""
    secrets = SECRET_RE.findall(result.out)
    assert len(secrets) == 1
    secret = secrets[0]
    assert result.out.count(secret) == 1
    (key,) = list_json(run_cli)
    assert key["id"] in result.out
    assert key["name"] == "billing"
    assert key["owner"] == "payments-team"
    assert run_cli("verify", secret).out.strip() == "VALID"


def test_create_json_has_the_documented_fields(run_cli):
    with freeze_time(T0):
        created = create_json(run_cli, "billing", "payments-team")
    assert {"id", "key", "name", "owner", "prefix", "created_at", "expires_at"} <= set(created)
    assert SECRET_RE.fullmatch(created["key"])
    assert created["id"].startswith("key_")
    assert created["name"] == "billing"
    assert created["owner"] == "payments-team"
    assert created["prefix"] == "apk"
    assert created["created_at"] == iso(T0)
    assert created["expires_at"] is None
    verify = run_cli("verify", created["key"])
    assert (verify.code, verify.out.strip()) == (0, "VALID")


@pytest.mark.parametrize(
    "duration,lifetime",
    [("90d", timedelta(days=90)), ("12h", timedelta(hours=12)), ("30m", timedelta(minutes=30))],
)
def test_create_expires_in_sets_the_expiry(run_cli, duration, lifetime):
    with freeze_time(T0):
        created = create_json(run_cli, "billing", "payments-team", "--expires-in", duration)
    assert created["created_at"] == iso(T0)
    assert created["expires_at"] == iso(T0 + lifetime)
    (listed,) = list_json(run_cli, "--status", "all")
    assert listed["expires_at"] == iso(T0 + lifetime)


def test_create_with_expiry_mentions_it_in_text_output(run_cli):
    with freeze_time(T0):
        result = run_cli("create", "--name", "temp", "--owner", "ops", "--expires-in", "90d")
    assert result.code == 0
    assert iso(T0 + timedelta(days=90)) in result.out


def test_create_count_prints_a_json_array_of_numbered_keys(run_cli):
    result = run_cli("create", "--name", "worker", "--owner", "batch-team", "--count", "3")
    assert result.code == 0, result.err
    created = json.loads(result.out)
    assert isinstance(created, list)
    assert [c["name"] for c in created] == ["worker-1", "worker-2", "worker-3"]
    for c in created:
        assert {"id", "key", "name", "owner", "prefix", "created_at", "expires_at"} <= set(c)
        assert c["owner"] == "batch-team"
        assert run_cli("verify", c["key"]).code == 0
    assert len({c["key"] for c in created}) == 3
    assert len({c["id"] for c in created}) == 3
    assert len(list_json(run_cli)) == 3
    assert [e["action"] for e in audit_json(run_cli)] == ["key.created"] * 3 + ["key.checked"] * 3


def test_created_secret_never_appears_in_the_audit_log(run_cli):
    created = create_json(run_cli)
    run_cli("revoke", created["id"], "--actor", "alice")
    for args in (("audit",), ("audit", "--json")):
        result = run_cli(*args)
        assert result.code == 0
        assert created["key"] not in result.out
        assert masked(created["key"]) in result.out


# == usage and input errors ===================================================================
BAD_INPUT = {
    "duration-unknown-unit": ["create", "--name", "x", "--owner", "ops", "--expires-in", "9x"],
    "duration-zero": ["create", "--name", "x", "--owner", "ops", "--expires-in", "0d"],
    "duration-negative": ["create", "--name", "x", "--owner", "ops", "--expires-in=-5d"],
    "duration-negative-separate": ["create", "--name", "x", "--owner", "ops", "--expires-in", "-5d"],
    "duration-empty": ["create", "--name", "x", "--owner", "ops", "--expires-in", ""],
    "missing-name": ["create", "--owner", "ops"],
    "missing-owner": ["create", "--name", "x"],
    "blank-name": ["create", "--name", "  ", "--owner", "ops"],
    "owner-with-space": ["create", "--name", "x", "--owner", "payments team"],
    "count-zero": ["create", "--name", "x", "--owner", "ops", "--count", "0"],
    "count-negative": ["create", "--name", "x", "--owner", "ops", "--count", "-2"],
    "count-not-a-number": ["create", "--name", "x", "--owner", "ops", "--count", "three"],
    "unknown-command": ["frobnicate"],
    "unknown-option": ["list", "--colour"],
    "bad-status": ["list", "--status", "bogus"],
    "revoke-unknown-key": ["revoke", UNKNOWN_KEY_ID, "--actor", "alice"],
    "revoke-not-a-key-id": ["revoke", "not-a-key-id", "--actor", "alice"],
    "revoke-bad-reason": ["revoke", UNKNOWN_KEY_ID, "--actor", "alice", "--reason", "stolen"],
    "revoke-without-actor": ["revoke", UNKNOWN_KEY_ID],
    "revoke-blank-actor": ["revoke", UNKNOWN_KEY_ID, "--actor", "  "],
    "audit-limit-zero": ["audit", "--limit", "0"],
    "audit-limit-not-a-number": ["audit", "--limit", "ten"],
    "admins-no-subcommand": ["admins"],
    "admins-add-not-a-user": ["admins", "add", "not-a-user"],
    "admins-remove-not-a-user": ["admins", "remove", "not-a-user"],
    "admins-remove-unknown": ["admins", "remove", "UNOBODY001"],
    "admins-remove-bootstrap": ["admins", "remove", ADMIN],
    "verify-without-key": ["verify"],
}


@pytest.mark.parametrize("argv", list(BAD_INPUT.values()), ids=list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_changes_nothing(run_cli, argv):
    result = run_cli(*argv)
    assert_one_line_error(result, code=2)
    assert result.out == ""
    assert list_json(run_cli, "--status", "all") == []
    assert audit_json(run_cli) == []
    admins = run_cli("admins", "list")
    assert admins.code == 0
    assert ADMIN in admins.out


@pytest.mark.parametrize(
    "extra",
    [["--reason", "stolen"], ["--reason", "COMPROMISED"], ["--note", "bad\x07note"], ["--actor", ""]],
    ids=["unknown-reason", "upper-case-reason", "control-char-note", "empty-actor"],
)
def test_invalid_revoke_of_an_existing_key_changes_nothing(run_cli, extra):
    created = create_json(run_cli)
    argv = ["revoke", created["id"], "--actor", "alice", *extra]
    result = run_cli(*argv)
    assert_one_line_error(result, code=2)
    assert [e["action"] for e in audit_json(run_cli)] == ["key.created"]
    assert run_cli("verify", created["key"]).out.strip() == "VALID"
    assert [k["status"] for k in list_json(run_cli, "--status", "all")] == ["active"]


def test_usage_error_message_names_the_problem(run_cli):
    result = run_cli("create", "--name", "x", "--owner", "ops", "--expires-in", "9x")
    assert result.err.startswith("apikeys: error:")
    assert "9x" in result.err


# == list =====================================================================================
def test_list_never_shows_secrets_only_masked_keys(run_cli):
    a = create_json(run_cli, "alpha", "team-a")
    b = create_json(run_cli, "beta", "team-b")
    run_cli("revoke", b["id"], "--actor", "alice")
    outputs = [
        run_cli("list").out,
        run_cli("list", "--status", "all").out,
        run_cli("list", "--status", "revoked").out,
        json.dumps(list_json(run_cli, "--status", "all"), ensure_ascii=False),
    ]
    for output in outputs:
        for created in (a, b):
            assert created["key"] not in output
            assert created["key"][4:-4] not in output
            assert digest(created["key"]) not in output
    table = run_cli("list", "--status", "all").out
    assert masked(a["key"]) in table and masked(b["key"]) in table
    listed = {k["id"]: k for k in list_json(run_cli, "--status", "all")}
    assert listed[a["id"]]["masked"] == masked(a["key"])
    assert listed[b["id"]]["masked"] == masked(b["key"])
    assert "key" not in listed[a["id"]]
    assert "digest" not in listed[a["id"]]


def test_list_filters_by_status_and_owner(run_cli):
    with freeze_time(T0) as frozen:
        active = create_json(run_cli, "active", "team-a")
        revoked = create_json(run_cli, "revoked", "team-a")
        expiring = create_json(run_cli, "expiring", "team-b", "--expires-in", "1h")
        assert run_cli("revoke", revoked["id"], "--actor", "alice").code == 0
        frozen.move_to(T0 + timedelta(hours=2))

        def ids(*extra):
            return {k["id"] for k in list_json(run_cli, *extra)}

        assert ids() == {active["id"]}
        assert ids("--status", "active") == {active["id"]}
        assert ids("--status", "revoked") == {revoked["id"]}
        assert ids("--status", "expired") == {expiring["id"]}
        assert ids("--status", "all") == {active["id"], revoked["id"], expiring["id"]}
        assert ids("--status", "all", "--owner", "team-a") == {active["id"], revoked["id"]}
        assert ids("--status", "all", "--owner", "team-b") == {expiring["id"]}
        assert ids("--owner", "team-b") == set()

        statuses = {k["id"]: k["status"] for k in list_json(run_cli, "--status", "all")}
        assert statuses == {active["id"]: "active", revoked["id"]: "revoked", expiring["id"]: "expired"}

        table = run_cli("list", "--status", "revoked").out
        assert revoked["id"] in table
        assert active["id"] not in table and expiring["id"] not in table
        table = run_cli("list", "--owner", "team-a").out
        assert active["id"] in table and revoked["id"] not in table


def test_list_of_nothing_says_so(run_cli):
    result = run_cli("list")
    assert result.code == 0
    assert result.out.strip()
    assert list_json(run_cli) == []


def test_list_shows_every_key_beyond_one_page(run_cli):
    result = run_cli("create", "--name", "many", "--owner", "ops", "--count", "520")
    assert result.code == 0
    listed = list_json(run_cli)
    assert len(listed) == 520
    assert len({k["id"] for k in listed}) == 520


# == revoke ===================================================================================
def test_revoke_then_verify_answers_revoked(run_cli):
    created = create_json(run_cli)
    result = run_cli("revoke", created["id"], "--actor", "alice", "--reason", "compromised")
    assert result.code == 0, result.err
    assert created["id"] in result.out
    assert created["key"] not in result.out
    verify = run_cli("verify", created["key"])
    assert verify.code == 1
    assert verify.out.strip() == "REVOKED"
    (listed,) = list_json(run_cli, "--status", "revoked")
    assert listed["id"] == created["id"]
    assert listed["revoked_by"] == "alice"
    assert listed["revoke_reason"] == "compromised"


def test_second_revoke_says_already_revoked_and_records_nothing(run_cli):
    created = create_json(run_cli)
    assert run_cli("revoke", created["id"], "--actor", "alice").code == 0
    again = run_cli("revoke", created["id"], "--actor", "bob", "--reason", "other")
    assert again.code == 0
    assert "already revoked" in again.out
    revoked_events = [e for e in audit_json(run_cli) if e["action"] == "key.revoked"]
    assert len(revoked_events) == 1
    assert revoked_events[0]["actor"] == "alice"
    assert run_cli("verify", created["key"]).out.strip() == "REVOKED"


def test_revoke_reason_note_and_actor_land_in_the_audit_event(run_cli):
    created = create_json(run_cli, "billing", "payments-team")
    result = run_cli(
        "revoke", created["id"], "--actor", "ana@example.com", "--reason", "rotation", "--note", "quarterly rotation"
    )
    assert result.code == 0
    (event,) = [e for e in audit_json(run_cli) if e["action"] == "key.revoked"]
    assert event["key_id"] == created["id"]
    assert event["actor"] == "ana@example.com"
    assert event["details"]["reason"] == "rotation"
    assert event["details"]["note"] == "quarterly rotation"
    assert event["details"]["key"] == masked(created["key"])


# == verify ===================================================================================
def test_verify_valid_key_exits_0(run_cli):
    created = create_json(run_cli)
    result = run_cli("verify", created["key"])
    assert result.code == 0
    assert result.out == "VALID\n"


def test_verify_unknown_key_exits_1_not_found(run_cli):
    result = run_cli("verify", generate_secret())
    assert result.code == 1
    assert result.out == "NOT_FOUND\n"


@pytest.mark.parametrize("candidate", ["garbage", "apk_" + "A" * 28, ""])
def test_verify_malformed_key_exits_1(run_cli, candidate):
    result = run_cli("verify", candidate)
    assert result.code == 1
    assert result.out == "MALFORMED\n"


def test_verify_key_with_a_typo_exits_1_malformed(run_cli):
    secret = create_json(run_cli)["key"]
    typo = secret[:10] + ("0" if secret[10] != "0" else "1") + secret[11:]
    result = run_cli("verify", typo)
    assert (result.code, result.out) == (1, "MALFORMED\n")


def test_verify_expired_key_exits_1(run_cli):
    with freeze_time(T0) as frozen:
        created = create_json(run_cli, "temp", "ops", "--expires-in", "1h")
        frozen.move_to(T0 + timedelta(minutes=59))
        assert run_cli("verify", created["key"]).code == 0
        frozen.move_to(T0 + timedelta(hours=1))
        result = run_cli("verify", created["key"])
    assert result.code == 1
    assert result.out == "EXPIRED\n"


def test_verify_dash_reads_the_key_from_stdin(run_cli):
    created = create_json(run_cli)
    result = run_cli("verify", "-", stdin=created["key"] + "\n")
    assert (result.code, result.out) == (0, "VALID\n")
    result = run_cli("verify", "-", stdin="garbage\n")
    assert (result.code, result.out) == (1, "MALFORMED\n")


# == audit ====================================================================================
def _history(run_cli):
    with freeze_time(T0) as frozen:
        a = create_json(run_cli, "alpha", "team-a")
        frozen.tick(timedelta(seconds=1))
        b = create_json(run_cli, "beta", "team-b")
        frozen.tick(timedelta(seconds=1))
        assert run_cli("revoke", a["id"], "--actor", "alice", "--reason", "compromised").code == 0
        frozen.tick(timedelta(seconds=1))
        assert run_cli("admins", "add", "UNEWADMIN1", "--actor", ADMIN).code == 0
    return a, b


def test_audit_json_is_oldest_first_with_the_documented_fields(run_cli):
    a, b = _history(run_cli)
    log = audit_json(run_cli)
    assert [e["action"] for e in log] == ["key.created", "key.created", "key.revoked", "admin.added"]
    for entry in log:
        assert {"id", "at", "actor", "action", "key_id", "details"} <= set(entry)
    ids = [e["id"] for e in log]
    assert ids == sorted(ids)
    assert [e["at"] for e in log] == [(T0 + timedelta(seconds=i)).isoformat(timespec="microseconds") for i in range(4)]
    assert [e["key_id"] for e in log] == [a["id"], b["id"], a["id"], None]
    assert log[2]["actor"] == "alice"
    assert log[3]["actor"] == ADMIN
    assert log[3]["details"] == {"user_id": "UNEWADMIN1"}


def test_audit_limit_gives_the_newest_entries_oldest_first(run_cli):
    _history(run_cli)
    full = audit_json(run_cli)
    last_two = audit_json(run_cli, "--limit", "2")
    assert last_two == full[-2:]
    assert [e["action"] for e in last_two] == ["key.revoked", "admin.added"]
    assert audit_json(run_cli, "--limit", "100") == full


def test_audit_table_lists_the_entries(run_cli):
    a, _ = _history(run_cli)
    result = run_cli("audit")
    assert result.code == 0
    assert "key.revoked" in result.out
    assert a["id"] in result.out
    assert run_cli("audit", "--limit", "1").out.count("key.created") == 0


def test_audit_of_an_empty_log(run_cli):
    assert audit_json(run_cli) == []
    result = run_cli("audit", "--verify")
    assert result.code == 0


def test_audit_verify_exits_0_on_an_intact_log(run_cli):
    _history(run_cli)
    result = run_cli("audit", "--verify")
    assert result.code == 0, result.out + result.err
    assert "BROKEN" not in result.out


def test_audit_verify_exits_1_naming_an_edited_entry(run_cli, database_url):
    _history(run_cli)
    store = open_store(database_url)
    try:
        drop_audit_triggers(store)
        with store.db.write() as session:
            session.execute(
                update(AuditEvent).where(AuditEvent.id == 3).values(details=json.dumps({"reason": "rotation"}))
            )
    finally:
        store.close()
    result = run_cli("audit", "--verify")
    assert result.code == 1
    assert "audit entry 3" in result.out + result.err


def test_audit_verify_exits_1_naming_a_deleted_entry(run_cli, database_url):
    _history(run_cli)
    store = open_store(database_url)
    try:
        drop_audit_triggers(store)
        with store.db.write() as session:
            session.execute(text("DELETE FROM audit_events WHERE id = 2"))
    finally:
        store.close()
    result = run_cli("audit", "--verify")
    assert result.code == 1
    assert "audit entry 2" in result.out + result.err


# == admins ===================================================================================
def test_admins_list_shows_the_bootstrap_admin(run_cli):
    result = run_cli("admins", "list")
    assert result.code == 0
    assert ADMIN in result.out


def test_admins_add_and_remove_are_listed_and_audited(run_cli):
    added = run_cli("admins", "add", "UNEWADMIN1", "--actor", "ana@example.com")
    assert added.code == 0, added.err
    assert "UNEWADMIN1" in run_cli("admins", "list").out

    again = run_cli("admins", "add", "UNEWADMIN1")
    assert again.code == 0
    assert "already" in again.out

    removed = run_cli("admins", "remove", "UNEWADMIN1", "--actor", "ana@example.com")
    assert removed.code == 0, removed.err
    listing = run_cli("admins", "list").out
    assert "UNEWADMIN1" not in listing
    assert ADMIN in listing

    log = audit_json(run_cli)
    assert [(e["action"], e["actor"], e["details"]) for e in log] == [
        ("admin.added", "ana@example.com", {"user_id": "UNEWADMIN1"}),
        ("admin.removed", "ana@example.com", {"user_id": "UNEWADMIN1"}),
    ]


def test_admins_actor_defaults_to_the_cli_user(run_cli):
    assert run_cli("admins", "add", "UNEWADMIN1").code == 0
    (event,) = audit_json(run_cli)
    assert event["action"] == "admin.added"
    assert event["actor"].startswith("cli:")


# == the real command ==========================================================================
def _run_module(database_url, tmp_path, *argv):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "APIKEYS_"))}
    env["DATABASE_URL"] = database_url
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *argv],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )


def test_the_command_runs_as_a_program(database_url, tmp_path):
    assert _run_module(database_url, tmp_path, "db", "upgrade").returncode == 0
    verify = _run_module(database_url, tmp_path, "verify", "garbage")
    assert verify.returncode == 1, verify.stderr
    assert verify.stdout == "MALFORMED\n"
    assert "Traceback" not in verify.stderr

    usage = _run_module(database_url, tmp_path, "create", "--name", "x")
    assert usage.returncode == 2
    assert usage.stdout == ""
    assert "Traceback" not in usage.stderr
    assert usage.stderr.count("\n") == 1 and usage.stderr.endswith("\n")


def test_verify_with_the_key_in_argv_warns_once_on_stderr(run_cli):
    created = create_json(run_cli)
    result = run_cli("verify", created["key"])
    assert (result.code, result.out) == (0, "VALID\n")
    assert result.err.count("\n") == 1
    assert "shell history" in result.err and "ps" in result.err and "apikeys verify -" in result.err
    assert created["key"] not in result.err


def test_verify_from_stdin_does_not_warn(run_cli):
    created = create_json(run_cli)
    result = run_cli("verify", "-", stdin=created["key"] + "\n")
    assert (result.code, result.out, result.err) == (0, "VALID\n", "")


def test_the_last_admin_cannot_be_removed_from_the_cli_either(run_cli):
    """Without APIKEYS_ADMINS, the stored admins are all there is: the last one stays."""
    no_bootstrap = {"APIKEYS_ADMINS": ""}
    assert run_cli("admins", "add", "UONLYADMIN", env=no_bootstrap).code == 0
    assert run_cli("admins", "add", "USECOND01", env=no_bootstrap).code == 0
    assert run_cli("admins", "remove", "USECOND01", env=no_bootstrap).code == 0
    result = run_cli("admins", "remove", "UONLYADMIN", env=no_bootstrap)
    assert result.code == 2 and "last admin" in result.err and result.err.count("\n") == 1
    assert "UONLYADMIN" in run_cli("admins", "list", env=no_bootstrap).out
    assert [e["action"] for e in audit_json(run_cli)].count("admin.removed") == 1


# == for people (contract: "Command line for people") ===========================================
def test_apikeys_alone_prints_its_help_and_version_prints_the_version(run_cli):
    alone = run_cli()
    assert alone.code == 0 and alone.out.startswith("usage: apikeys") and "examples:" in alone.out
    version = run_cli("--version")
    assert version.code == 0 and version.out.strip().startswith("apikeys ") and version.out.strip() != "apikeys"


@pytest.mark.parametrize("command", [["create"], ["list"], ["revoke"], ["verify"], ["audit"], ["audit", "export"],
                                     ["admins"], ["db"], ["leak", "report"]])
def test_each_commands_help_ends_with_examples(run_cli, command):
    result = run_cli(*command, "--help")
    assert result.code == 0
    tail = result.out.rstrip().splitlines()
    examples = next(i for i, line in enumerate(tail) if line == "examples:")
    assert all(line.startswith("  apikeys ") for line in tail[examples + 1:]), result.out


@pytest.mark.parametrize("argv", [["create", "--name", "x", "--owner", "o", "--expires-in", "soon"],
                                  ["create", "--name", "x", "--owner", "o", "--count", "0"],
                                  ["audit", "--limit", "0"], ["audit", "export", "--since", "-3"]])
def test_flags_are_checked_before_the_database_is_opened(tmp_path, argv):
    from .helpers import cli_runner

    missing = tmp_path / "never-created.db"
    result = cli_runner(f"sqlite:///{missing}")(*argv)
    assert_one_line_error(result)
    assert not missing.exists()


def test_revoke_takes_the_key_itself_and_never_prints_it(run_cli):
    created = run_cli("create", "--name", "leaked", "--owner", "payments", "--json")
    key = json.loads(created.out)
    result = run_cli("revoke", key["key"], "--actor", "alice", "--reason", "compromised")
    assert result.code == 0, result.err
    assert key["id"] in result.out and key["key"] not in result.out + result.err
    assert list_json(run_cli, "--status", "revoked")[0]["id"] == key["id"]


def test_revoke_reads_the_key_from_stdin(run_cli):
    key = json.loads(run_cli("create", "--name", "leaked", "--owner", "payments", "--json").out)
    result = run_cli("revoke", "-", "--actor", "alice", stdin=key["key"] + "\n")
    assert result.code == 0 and key["id"] in result.out
    assert key["key"] not in result.out + result.err and "shell history" not in result.err


@pytest.mark.parametrize("mangle", [lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"), lambda k: k[:20]],
                         ids=["typo", "truncated"])
def test_revoke_of_a_mistyped_key_says_so_without_printing_it(run_cli, mangle):
    key = json.loads(run_cli("create", "--name", "leaked", "--owner", "payments", "--json").out)
    wrong = mangle(key["key"])
    for result in (run_cli("revoke", wrong, "--actor", "alice"), run_cli("revoke", "-", "--actor", "alice", stdin=wrong)):
        assert_one_line_error(result)
        assert wrong not in result.err and key["key"][:12] not in result.err
    assert list_json(run_cli, "--status", "revoked") == []


def test_a_key_in_an_unexpected_place_is_never_echoed(run_cli):
    key = json.loads(run_cli("create", "--name", "leaked", "--owner", "payments", "--json").out)
    for argv in (["revoke", "--actor", "alice", "--reason", key["key"], "x"], ["list", key["key"]],
                 ["revoke", key["key"], key["key"], "--actor", "a"]):
        result = run_cli(*argv)
        assert result.code == 2 and key["key"] not in result.err + result.out, argv


def test_verify_json_prints_the_keys_id_name_owner_and_expiry(run_cli):
    key = json.loads(run_cli("create", "--name", "svc", "--owner", "payments", "--expires-in", "30d", "--json").out)
    result = run_cli("verify", "-", "--json", stdin=key["key"] + "\n")
    body = json.loads(result.out)
    assert result.code == 0 and body["code"] == "VALID" and body["key_id"] == key["id"]
    assert (body["name"], body["owner"], body["expires_at"]) == ("svc", "payments", key["expires_at"])
    run_cli("revoke", key["id"], "--actor", "alice")
    revoked = run_cli("verify", "-", "--json", stdin=key["key"] + "\n")
    assert revoked.code == 1 and json.loads(revoked.out)["code"] == "REVOKED"


def test_output_piped_into_head_ends_quietly(run_cli, database_url, tmp_path):
    import subprocess
    import sys

    run_cli("create", "--name", "fleet", "--owner", "iot", "--count", "3000")
    env = {"DATABASE_URL": database_url, "PATH": os.environ["PATH"]}
    pipeline = subprocess.run(f"{sys.executable} -m bot.cli list --status all | head -2", shell=True, env=env,
                              capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert len(pipeline.stdout.splitlines()) == 2
    assert pipeline.stderr == "", pipeline.stderr


@pytest.mark.parametrize("name, value", [("APIKEYS_SELF_CHECK_INTERVAL", "0"), ("APIKEYS_SELF_CHECK_INTERVAL", "soon"),
                                         ("APIKEYS_BODY_TIMEOUT", "-1"), ("APIKEYS_BODY_TIMEOUT", "9999")])
def test_a_bad_seconds_setting_is_named_in_one_line(run_cli, name, value):
    result = run_cli("list", env={name: value})
    assert_one_line_error(result)
    assert name in result.err and "seconds" in result.err


@pytest.mark.parametrize("wrap", ["'{}'", '"{}"', " {} ", "Bearer {}", "API_KEY={}", "export KEY={};"])
def test_revoke_finds_the_key_inside_what_was_pasted(run_cli, wrap):
    key = json.loads(run_cli("create", "--name", "leaked", "--owner", "payments", "--json").out)
    result = run_cli("revoke", "-", "--actor", "alice", stdin=wrap.format(key["key"]) + "\n")
    assert result.code == 0, result.err
    assert key["id"] in result.out and key["key"] not in result.out + result.err


# == the command line for people (issue 26) ====================================================
def test_verifying_a_revoked_key_from_the_cli_is_an_operators_check_not_an_alert(run_cli, database_url):
    from storage.usage import flush_all

    key = create_json(run_cli, "svc", "payments")
    assert run_cli("revoke", key["id"], "--actor", "alice", "--reason", "compromised").code == 0
    result = run_cli("verify", "-", "--json", stdin=key["key"] + "\n")
    assert result.code == 1
    body = json.loads(result.out)
    assert (body["code"], body["key_id"], body["name"], body["owner"]) == ("REVOKED", key["id"], "svc", "payments")
    flush_all()
    log = audit_json(run_cli)
    assert "key.used_after_revoke" not in [e["action"] for e in log]
    checked = log[-1]
    assert checked["action"] == "key.checked" and checked["key_id"] == key["id"]
    assert checked["actor"].startswith("cli:") and checked["details"]["code"] == "REVOKED"
    store = open_store(database_url)
    try:
        assert store.keys.revoked_uses.get(key["id"]) is None  # not counted as a presentation
        # ... and a service presenting it afterwards is still the first use, alerted at once
        assert store.keys.verify(key["key"]).code.value == "REVOKED"
        store.keys.flush_uses()
        assert store.keys.revoked_uses.get(key["id"]).uses == 1
    finally:
        store.close()
    assert audit_json(run_cli)[-1]["action"] == "key.used_after_revoke"


def test_verifying_a_valid_key_from_the_cli_is_recorded_as_a_check_not_a_use(run_cli):
    from storage.usage import flush_all

    key = create_json(run_cli, "svc", "payments")
    assert run_cli("verify", "-", stdin=key["key"] + "\n").out == "VALID\n"
    flush_all()
    (listed,) = list_json(run_cli)
    assert listed["last_used_at"] is None
    assert audit_json(run_cli)[-1]["action"] == "key.checked"


def test_an_audit_entry_reads_the_same_time_in_audit_json_and_audit_export(run_cli):
    _history(run_cli)
    exported = [json.loads(line) for line in run_cli("audit", "export").out.splitlines()]
    listed = audit_json(run_cli)
    assert [e["at"] for e in listed] == [e["at"] for e in exported]
    assert [(e["id"], e["hash"]) for e in listed] == [(e["id"], e["hash"]) for e in exported]
    assert listed[0]["at"] == "2030-03-14T09:00:00.000000+00:00"  # as the entry's hash covers it


def test_the_audit_table_has_a_summary_column_not_raw_json(run_cli):
    a, b = _history(run_cli)
    result = run_cli("audit")
    header, *rows = result.out.splitlines()
    assert header.split() == ["ID", "AT", "ACTOR", "ACTION", "KEY", "SUMMARY"]
    assert "{" not in result.out and '":' not in result.out
    by_action = {row.split()[3]: row for row in rows}
    assert "alpha" in by_action["key.revoked"] and "reason compromised" in by_action["key.revoked"]
    assert "owner team-b" in rows[1] and "beta" in rows[1]
    assert "UNEWADMIN1" in by_action["admin.added"]
    assert all(len(row) <= 200 for row in rows)


def test_list_of_revoked_keys_shows_when_by_whom_and_why(run_cli):
    with freeze_time(T0):
        key = create_json(run_cli, "svc", "payments")
        create_json(run_cli, "other", "payments")
        assert run_cli("revoke", key["id"], "--actor", "alice", "--reason", "compromised").code == 0
    result = run_cli("list", "--status", "revoked")
    header, *rows = result.out.splitlines()
    assert header.split() == ["ID", "NAME", "OWNER", "KEY", "REVOKED", "BY", "REASON"]
    (row,) = rows
    assert row.split() == [key["id"], "svc", "payments", masked(key["key"]), iso(T0), "alice", "compromised"]
    (listed,) = list_json(run_cli, "--status", "revoked")
    assert (listed["revoked_at"], listed["revoked_by"], listed["revoke_reason"]) == (iso(T0), "alice", "compromised")


def test_creating_a_second_active_key_with_the_same_name_warns_but_creates_it(run_cli):
    first = create_json(run_cli, "billing", "payments")
    result = run_cli("create", "--name", "billing", "--owner", "payments")
    assert result.code == 0
    assert SECRET_RE.search(result.out)
    assert result.err.startswith("apikeys: warning:") and result.err.count("\n") == 1
    assert "billing" in result.err and first["id"] in result.err
    assert len(list_json(run_cli)) == 2
    assert run_cli("create", "--name", "ledger", "--owner", "payments").err == ""


def _leaf_commands(parser, prefix=()):
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    if not subs[0].required:  # 'apikeys audit' alone prints the log: it is a command of its own
        yield prefix, parser
    for name, sub in subs[0].choices.items():
        yield from _leaf_commands(sub, (*prefix, name))


# Commands that print no data: a confirmation sentence, a PEM, a server, or JSON lines already.
PRINTS_NO_DATA = {("audit", "keygen"), ("audit", "export"), ("playground",), ("db", "upgrade"), ("db", "grant"),
                  ("owners", "set"), ("owners", "remove"), ("notify", "expiring"), ("tokens", "revoke"),
                  ("admins", "add"), ("admins", "remove")}


def test_every_command_that_prints_data_takes_json():
    from bot.cli import build_parser

    commands = dict(_leaf_commands(build_parser()))
    commands.pop((), None)
    assert PRINTS_NO_DATA <= commands.keys()
    lacking = [" ".join(name) for name, parser in commands.items()
               if name not in PRINTS_NO_DATA and "--json" not in parser._option_string_actions]
    assert lacking == []


def test_json_output_of_revoke_admins_list_db_status_and_leak_report(run_cli):
    key = create_json(run_cli, "svc", "payments")
    revoked = json.loads(run_cli("revoke", key["id"], "--actor", "alice", "--json").out)
    assert revoked["revoked_now"] is True and revoked["key"]["status"] == "revoked"
    assert "key" not in revoked["key"] and key["key"] not in json.dumps(revoked)
    again = json.loads(run_cli("revoke", key["id"], "--actor", "alice", "--json").out)
    assert again["revoked_now"] is False
    admins = json.loads(run_cli("admins", "list", "--json").out)
    assert [a["user_id"] for a in admins] == [ADMIN] and admins[0]["source"] == "APIKEYS_ADMINS"
    status = run_cli("db", "status", "--json")
    body = json.loads(status.out)
    assert status.code == 0 and body["ok"] is True and body["revision"] == body["newest"]
    other = create_json(run_cli, "leaky", "payments")
    leak = run_cli("leak", "report", "-", "--url", "https://gist.example.com/x", "--json", stdin=other["key"] + "\n")
    found = json.loads(leak.out)
    assert leak.code == 0 and found["ours"] is True and found["recorded"] is True
    assert found["key"]["id"] == other["id"] and other["key"] not in leak.out


def deliver_as_a_server(database_url: str, audit_channel: str = "C0AUDIT01"):
    """What a server with Slack settings (its audit channel ``audit_channel``) delivers of the
    outbox, to a recording client: returned."""
    from bot.slack.delivery import Deliverer

    from .helpers import RecordingClient

    server = open_store(database_url, notify_channel=audit_channel)
    try:
        slack = RecordingClient()
        while Deliverer(server, slack).deliver_due():
            pass
        return slack
    finally:
        server.close()


def test_a_break_glass_revocation_without_slack_settings_queues_its_audit_post_for_the_server(run_cli, database_url):
    """The laptop has DATABASE_URL only: the post is queued for whichever server delivers, which posts
    it to its own audit channel; the CLI says so, and warns while nothing has ever delivered a post."""


    first = create_json(run_cli, "svc", "payments")
    second = create_json(run_cli, "svc2", "payments")
    result = run_cli("revoke", first["id"], "--actor", "alice", "--reason", "compromised")
    assert result.code == 0
    assert "queued" in result.out and "audit channel" in result.out
    assert result.err.startswith("apikeys: warning:") and "no server has delivered" in result.err
    slack = deliver_as_a_server(database_url)
    posted = [p for p in slack.posts if "Key revoked" in p["text"]]
    assert [p["channel"] for p in posted] == ["C0AUDIT01"] and "svc" in posted[0]["text"]
    server = open_store(database_url)
    try:
        assert server.outbox.pending() == 0
    finally:
        server.close()
    again = run_cli("revoke", second["id"], "--actor", "alice")
    assert again.code == 0 and "queued" in again.out and again.err == ""  # a server delivers: nothing to warn of


def test_a_break_glass_revocation_warns_when_queued_posts_are_not_being_delivered(run_cli, database_url):
    keys = [create_json(run_cli, f"svc{i}", "payments") for i in range(3)]
    deliver_as_a_server(database_url)
    with freeze_time(datetime.now(timezone.utc)) as frozen:
        assert run_cli("revoke", keys[0]["id"], "--actor", "alice").err == ""
        frozen.tick(timedelta(minutes=10))  # and no server took it since
        result = run_cli("revoke", keys[1]["id"], "--actor", "alice")
    assert result.code == 0
    assert result.err.startswith("apikeys: warning:") and "waiting since" in result.err
    assert "no server is delivering" in result.err


def test_a_server_without_an_audit_channel_keeps_posts_queued_for_it_waiting(run_cli, database_url, caplog):
    from bot.slack.delivery import Deliverer

    from .helpers import RecordingClient

    key = create_json(run_cli, "svc", "payments")
    run_cli("revoke", key["id"], "--actor", "alice")
    server = open_store(database_url)  # no APIKEYS_AUDIT_CHANNEL on the server either
    try:
        slack = RecordingClient()
        Deliverer(server, slack).deliver_due()
        assert slack.posts == [] and server.outbox.pending() == 2  # waiting (retried), never "delivered"
        last, _, _ = server.outbox.delivery_state("audit")
        assert last is None
    finally:
        server.close()
    assert "no_audit_channel" in caplog.text and "APIKEYS_AUDIT_CHANNEL" in caplog.text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_on(database_url, err, *argv):
    from bot import cli

    out = io.StringIO()
    code = cli.run(list(argv), out=out, err=err, env={"DATABASE_URL": database_url, "APIKEYS_ADMINS": ADMIN})
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv, shown", [
    (("create", "--name", "fleet", "--owner", "iot", "--count", "2500"), "making keys"),
    (("audit", "--verify"), "verifying the audit log"),
    (("audit", "export"), "exporting the audit log"),
], ids=["create-count", "audit-verify", "audit-export"])
def test_long_commands_show_progress_on_a_terminal_and_nothing_when_piped(run_cli, database_url, monkeypatch,
                                                                           argv, shown):
    from bot import cli

    monkeypatch.setattr(cli, "PROGRESS_DELAY", 0)  # shown at once (a real run waits half a second)
    assert run_cli("create", "--name", "seed", "--owner", "iot", "--count", "2500").code == 0
    code, out, err = _run_on(database_url, Terminal(), *argv)
    assert code == 0, err
    assert shown in err and "it/s" not in err and "%" in err
    code, piped_out, piped_err = _run_on(database_url, io.StringIO(), *argv)
    assert code == 0 and piped_err == ""
    if argv[0] != "create":
        assert piped_out == out  # the bar never reaches stdout


def test_db_upgrade_shows_its_migrations_on_a_terminal(database_url, monkeypatch):
    from bot import cli

    monkeypatch.setattr(cli, "PROGRESS_DELAY", 0)
    code, out, err = _run_on(database_url, Terminal(), "db", "upgrade")
    assert code == 0 and "applying migrations" in err and "revision" in out
    code, out, err = _run_on(database_url, Terminal(), "db", "upgrade")  # nothing left to apply: no bar
    assert code == 0 and err == ""


def test_the_audit_summary_is_one_printable_line_whatever_the_details_hold():
    from bot.cli import SUMMARY_WIDTH, _summary

    line = _summary("key.leaked", {"name": "svc", "key": "apk_…a1b2", "url": "https://x.example/\x1b[2J\nnext",
                                   "status": "active"})
    assert "\x1b" not in line and "\n" not in line and "\\x1b" in line and line.isprintable()
    assert len(_summary("key.revoked", {"name": "svc", "note": "n" * 500})) == SUMMARY_WIDTH
    assert _summary("some.future_action", {"nested": {"a": 1}, "items": [1], "none": None, "kept": "yes"}) == "kept yes"



def test_a_cli_check_is_in_the_log_but_not_posted_to_the_audit_channel(run_cli, database_url):
    key = create_json(run_cli, "svc", "payments")
    store = open_store(database_url)
    try:
        before = store.outbox.pending()
        for _ in range(3):
            assert run_cli("verify", "-", stdin=key["key"] + "\n").code == 0
        assert store.outbox.pending() == before  # a triage loop buries no revocation's post
    finally:
        store.close()
    assert [e["action"] for e in audit_json(run_cli)][-3:] == ["key.checked"] * 3


def test_a_cli_check_without_the_signing_key_on_a_signed_log_is_not_recorded_and_says_so(run_cli, tmp_path):
    from storage import checkpoints

    pem, public = checkpoints.generate(tmp_path / "signing.pem")
    (tmp_path / "public.pem").write_text(public)
    signed = {"APIKEYS_AUDIT_SIGNING_KEY": str(tmp_path / "signing.pem")}
    key = json.loads(run_cli("create", "--name", "svc", "--owner", "payments", "--json", env=signed).out)
    result = run_cli("verify", "-", stdin=key["key"] + "\n")  # this machine has no signing key
    assert result.out == "VALID\n" and "not recorded in the audit log" in result.err
    assert [e["action"] for e in audit_json(run_cli)] == ["key.created"]
    verified = run_cli("audit", "--verify", "--public-key", str(tmp_path / "public.pem"))
    assert verified.code == 0 and "BROKEN" not in verified.out
    with_key = run_cli("verify", "-", stdin=key["key"] + "\n", env=signed)
    assert with_key.err == "" and audit_json(run_cli)[-1]["action"] == "key.checked"


def test_db_status_json_names_a_missing_trigger(run_cli, database_url):
    from .helpers import drop_audit_triggers

    store = open_store(database_url)
    try:
        drop_audit_triggers(store)
    finally:
        store.close()
    result = run_cli("db", "status", "--json")
    body = json.loads(result.out)
    assert result.code == 1 and body["ok"] is False and body["trigger_problems"]
    assert all(isinstance(p, str) and p for p in body["trigger_problems"])


def test_the_audit_table_shows_entries_apikeys_did_not_write(run_cli):
    from bot.cli import _summary

    secret = generate_secret()
    assert _summary("admin.added", {"user_id": 5}) == "5"
    assert _summary("token.created", {"name": "t", "scopes": [1, 2]}) == "t; 1,2"
    assert _summary("key.created", [1, 2]) == "[1, 2]"
    assert secret not in _summary("key.revoked", {"name": "x", "note": f"pasted {secret}"})


def test_the_queued_post_warning_ignores_other_channels_posts_stuck(run_cli, database_url):
    keys = [create_json(run_cli, f"svc{i}", "payments") for i in range(2)]
    deliver_as_a_server(database_url)
    store = open_store(database_url)
    try:
        with freeze_time(datetime.now(timezone.utc) - timedelta(hours=1)), store.db.write() as session:
            store.outbox.enqueue(session, topic="owner", channel="C0NOTIN01", payload={"ids": []})  # stuck for an hour
    finally:
        store.close()
    result = run_cli("revoke", keys[0]["id"], "--actor", "alice")
    assert result.code == 0 and result.err == ""
