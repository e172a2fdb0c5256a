"""The audit channel as a witness, end to end through the Slack stand-in: the app's real posts (a
revocation clicked in Slack, the deliverer's posts), read back with ``conversations.history`` by
``apikeys audit --verify --against-slack``."""

from __future__ import annotations

import pytest

from bot import witness
from storage import checkpoints

from .slackworld import AUDIT, SIGNING_SECRET, revoke_flow, seed, server_env, wait_audit_post
from .tampering import replace_tables, snapshot


@pytest.fixture
def signing_key(tmp_path):
    path = tmp_path / "audit-signing.pem"
    _, public = checkpoints.generate(path)
    public_path = tmp_path / "audit-public.pem"
    public_path.write_text(public)
    return path, public_path


@pytest.fixture
def signed_world(make_world, signing_key):
    return make_world({"APIKEYS_AUDIT_SIGNING_KEY": str(signing_key[0])})


def _verify(run_cli, world, signing_key, *extra):
    env = {**server_env(world.stub), "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    return run_cli("audit", "--verify", "--public-key", str(signing_key[1]), "--against-slack", *extra, env=env)


def _posted(world, n: int) -> None:
    for i in range(n):
        created = world.app_store.keys.create(name=f"witnessed-{i}", owner="payments", actor="UADMIN001")[0]
        wait_audit_post(world.stub, created.key.masked)


def test_a_revocation_clicked_in_slack_is_witnessed_and_verifies(signed_world, signing_key, run_cli):
    key = seed(signed_world.app_store, "billing")
    wait_audit_post(signed_world.stub, "Key created", key.masked)
    revoke_flow(signed_world, key)
    post = wait_audit_post(signed_world.stub, "Key revoked", key.masked)
    last = signed_world.app_store.audit.oldest_first(limit=1)[-1]
    assert witness.witness_text(last.id, last.hash) in str(post.body)
    result = _verify(run_cli, signed_world, signing_key)
    assert result.code == 0, result.out + result.err
    assert "all 2 positions the audit channel witnessed agree" in result.out


def test_the_channel_is_read_page_by_page(signed_world, signing_key, run_cli, monkeypatch):
    _posted(signed_world, 5)
    monkeypatch.setattr(witness, "PAGE", 2)
    pages = []
    original = signed_world.stub._m_conversations_history

    def counting(body):
        pages.append(body.get("cursor"))
        return original(body)

    monkeypatch.setattr(signed_world.stub, "_m_conversations_history", counting)
    result = _verify(run_cli, signed_world, signing_key)
    assert result.code == 0 and "all 5 positions" in result.out, result.out + result.err
    assert len(pages) == 3 and pages[0] is None and all(pages[1:])


def test_a_rollback_to_an_older_copy_is_caught_by_the_channel(signed_world, signing_key, run_cli):
    _posted(signed_world, 2)
    older = snapshot(signed_world.app_store)
    _posted(signed_world, 2)
    replace_tables(signed_world.app_store, older)
    without_slack = run_cli("audit", "--verify", "--public-key", str(signing_key[1]))
    # A shorter log, consistent and signed: the chain alone cannot tell. The keys created after the
    # copy have no key.created entry in it, so the tables do; and the witness knows the positions.
    assert without_slack.code == 1 and "BROKEN: audit entry" not in without_slack.out
    assert "has no key.created entry" in without_slack.out
    result = _verify(run_cli, signed_world, signing_key)
    assert result.code == 1
    assert f"BROKEN: audit entry {older['audit_events'][-1]['id'] + 1}: missing" in result.out


def test_a_channel_the_bot_cannot_read_is_one_line_and_exit_2(signed_world, signing_key, run_cli):
    _posted(signed_world, 1)
    with signed_world.stub.lock:
        signed_world.stub.channels_bot_is_not_in.add(AUDIT)
    result = _verify(run_cli, signed_world, signing_key)
    assert result.code == 2 and "not_in_channel" in result.err and result.err.count("\n") == 1


def test_an_empty_channel_does_not_witness_a_log(signed_world, signing_key, run_cli):
    _posted(signed_world, 1)
    with signed_world.stub.lock:  # someone deleted the channel's history
        signed_world.stub.messages.clear()
    result = _verify(run_cli, signed_world, signing_key)
    assert result.code == 1 and "not witnessed" in result.out
