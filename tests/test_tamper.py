"""An attacker's toolbox against the audit log, and the honest cases.

The attacker has the database (every trigger dropped, any row written) and this project's code, so
they can recompute the hash chain after any edit. Each attack is caught by ``apikeys audit --verify``
with the auditor's pinned public key, by ``--against-slack`` (the audit channel's posts witnessed
each position), or by both; the tests say which, so removing either check fails them.

The audit channel here is ``FakeSlack``: posts arrive through the real ``Deliverer`` and render
through the real ``audit_post``; ``conversations_history`` pages them back newest first. The real
stand-in is used end to end in ``test_witness_e2e``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from freezegun import freeze_time
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse
from sqlalchemy import text

from bot.slack.delivery import Deliverer
from bot.witness import check_against_slack
from storage import Store, checkpoints, open_store
from storage.audit import entry_hash
from storage.timeutil import utcnow

from .helpers import ADMIN, fresh_database, refused_by_guard
from .tampering import aware, forged, insert_at_head, replace_tables, rows, snapshot

AUDIT = "C0AUDIT"
BOT = "B0APIKEYS"
TABLES = ("audit_events", "audit_head", "audit_checkpoints")


# ======================================================================= the audit channel
class FakeSlack:
    """Just what delivery and the witness read use: chat.postMessage, auth.test, conversations.history."""

    def __init__(self) -> None:
        self.messages: list[dict] = []  # oldest first
        self.fail_next = 0

    def chat_postMessage(self, *, channel: str, text: str, blocks=None, **_) -> dict:
        if self.fail_next:
            self.fail_next -= 1
            raise SlackApiError("ratelimited", SlackResponse(client=None, http_verb="POST", api_url="chat.postMessage",
                                                             req_args={}, data={"ok": False, "error": "ratelimited"},
                                                             headers={}, status_code=429))
        self.messages.append({"channel": channel, "ts": f"{1700000000 + len(self.messages)}.000100", "text": text,
                              "blocks": blocks, "bot_id": BOT, "type": "message"})
        return {"ok": True}

    def auth_test(self) -> dict:
        return {"ok": True, "bot_id": BOT}

    def conversations_history(self, *, channel: str, limit: int = 100, cursor: str | None = None) -> dict:
        newest_first = [m for m in reversed(self.messages) if m["channel"] == channel]
        start = int(cursor or 0)
        page = newest_first[start:start + limit]
        more = start + limit < len(newest_first)
        return {"ok": True, "messages": page, "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}


@dataclass
class Installation:
    store: Store
    slack: FakeSlack
    signer: checkpoints.Signer
    public_key: str  # what the auditor pinned (base64 raw)

    def deliver(self) -> None:
        while Deliverer(self.store, self.slack).deliver_due():
            pass

    def act(self, n: int = 3) -> None:
        """Some audited actions, each posted to the audit channel."""
        for i in range(n):
            created = self.store.keys.create(name=f"svc-{utcnow().timestamp()}-{i}", owner="payments", actor=ADMIN)[0]
            if i % 2:
                self.store.keys.revoke(created.key.id, via="cli", actor=ADMIN, reason="rotation")
        self.deliver()

    def verify(self, public_key: str | None = "pinned"):
        return self.store.audit.verify(self.public_key if public_key == "pinned" else public_key)

    def witnessed(self):
        return check_against_slack(self.store.audit, self.slack, AUDIT)[0]


def _open(url: str) -> Installation:
    private, public = checkpoints.generate()
    signer = checkpoints.load_signer(private)
    store = open_store(url, bootstrap_admins=[ADMIN], notify_channel=AUDIT, signer=signer)
    return Installation(store, FakeSlack(), signer, checkpoints.load_public_key(public))


@pytest.fixture
def ours(database_url: str) -> Iterator[Installation]:
    inst = _open(database_url)
    yield inst
    inst.store.close()


@pytest.fixture
def theirs(tmp_path) -> Iterator[Installation]:
    """Another installation, with a key of its own."""
    with fresh_database(tmp_path / "other" if (tmp_path / "other").mkdir() is None else tmp_path) as url:
        inst = _open(url)
        yield inst
        inst.store.close()


# ======================================================================= honest cases
def test_an_untouched_log_verifies_against_the_key_and_the_channel(ours):
    ours.act(5)
    assert ours.verify() is None
    assert ours.witnessed() is None
    report = ours.store.audit.verification(ours.public_key)
    assert report.checkpoints == report.entries  # one entry per action here, each with its checkpoint
    assert report.signed_through == report.entries


def test_every_append_writes_its_checkpoint_in_the_same_transaction(ours):
    ours.store.keys.create(name="bulk", owner="fleet", actor=ADMIN, count=25)
    cps = rows(ours.store, "audit_checkpoints")
    entries = rows(ours.store, "audit_events")
    assert cps[-1]["entry_id"] == entries[-1]["id"] and cps[-1]["head_hash"] == entries[-1]["hash"]
    assert len(entries) == 25 and len(cps) == 1  # one checkpoint for the batch appended in one transaction


def test_no_entry_and_no_change_without_its_checkpoint(ours, monkeypatch):
    """The checkpoint is part of the action's transaction: when signing fails, nothing happened."""
    before = snapshot(ours.store)
    keys_before = ours.store.keys.count_keys(status="all")

    def broken_sign(msg: bytes) -> str:
        raise RuntimeError("the signing key is unusable")

    monkeypatch.setattr(ours.signer.__class__, "sign", lambda self, msg: broken_sign(msg))
    with pytest.raises(RuntimeError):
        ours.store.keys.create(name="unsigned", owner="payments", actor=ADMIN)
    assert snapshot(ours.store) == before and ours.store.keys.count_keys(status="all") == keys_before


def test_a_log_that_grew_after_the_last_post_verifies(ours):
    ours.act(2)
    ours.store.keys.create(name="not-posted-yet", owner="payments", actor=ADMIN)  # queued, not delivered
    assert ours.verify() is None and ours.witnessed() is None


def test_a_post_that_failed_and_was_retried_witnesses_the_right_position(ours):
    with freeze_time(utcnow()) as clock:
        ours.slack.fail_next = 1
        first = ours.store.keys.create(name="first", owner="payments", actor=ADMIN)[0]
        ours.deliver()                      # fails: rate limited
        assert ours.slack.messages == []
        ours.store.keys.revoke(first.key.id, via="cli", actor=ADMIN, reason="compromised")  # the log moves on
        clock.tick(timedelta(seconds=5))
        ours.deliver()                      # the retry, and the revocation's post
    positions = [m["blocks"][-1]["elements"][0]["text"] for m in ours.slack.messages]
    entries = rows(ours.store, "audit_events")
    created = next(e for e in entries if e["action"] == "key.created" and e["key_id"] == first.key.id)
    assert f"#{created['id']} · {created['hash'][:12]}…" in positions  # its own position, not the head at retry
    assert ours.witnessed() is None and ours.verify() is None


def test_the_public_key_is_what_verification_reports_for_pinning(ours):
    ours.act(1)
    assert ours.store.audit.verification().public_key == ours.public_key


# ======================================================================= the attacks
def test_an_edited_entry_with_every_later_hash_recomputed(ours):
    ours.act(6)
    assert ours.store.audit.verify(None) is None
    replace_tables(ours.store, forged(ours, edit_entry=3))
    assert ours.store.audit.verify(None) is not None  # the old checkpoints no longer match the chain
    broken = ours.verify()
    assert broken is not None and broken.checkpoint and "does not match what was signed" in broken.problem
    assert ours.witnessed() is not None


def test_an_edit_resigned_by_someone_who_holds_the_signing_key_is_caught_by_the_channel(ours):
    ours.act(6)
    replace_tables(ours.store, forged(ours, edit_entry=3, signer=ours.signer))
    assert ours.verify() is None  # the key holder can make the database agree with itself ...
    broken = ours.witnessed()     # ... but not with what Slack was shown
    assert broken is not None and "not as witnessed" in broken.problem
    assert broken.entry_id >= 3


def test_a_deleted_last_entry_with_the_head_rolled_back(ours):
    ours.act(4)
    last = rows(ours.store, "audit_events")[-1]["id"]
    replace_tables(ours.store, forged(ours, keep_until=last - 1))
    assert ours.verify() is None  # a shorter log is still a consistent, signed log ...
    broken = ours.witnessed()     # ... that the channel saw longer
    assert broken is not None and broken.entry_id == last and "missing" in broken.problem


def test_the_audit_tables_restored_from_an_older_snapshot(ours):
    ours.act(2)
    old = snapshot(ours.store)
    ours.act(3)
    replace_tables(ours.store, old)
    assert ours.verify() is None
    broken = ours.witnessed()
    assert broken is not None and "missing" in broken.problem
    assert broken.entry_id == old["audit_events"][-1]["id"] + 1


def test_the_audit_tables_of_another_installation_swapped_in(ours, theirs):
    ours.act(3)
    theirs.act(5)
    replace_tables(ours.store, snapshot(theirs.store))
    assert ours.store.audit.verify(None) is None  # consistent in itself
    broken = ours.verify()
    assert broken is not None and broken.problem == "signed by another key"
    assert ours.witnessed() is not None


def test_a_checkpoint_signed_with_another_key(ours, theirs):
    ours.act(3)
    replace_tables(ours.store, forged(ours, signer=theirs.signer))
    broken = ours.verify()
    assert broken is not None and broken.problem == "signed by another key"


def test_a_checkpoint_signed_with_another_key_that_claims_ours(ours, theirs):
    ours.act(3)
    replace_tables(ours.store, forged(ours, signer=theirs.signer, claim_key=ours.public_key))
    broken = ours.verify()
    assert broken is not None and "signature invalid" in broken.problem


def test_a_removed_checkpoint_in_the_middle(ours):
    ours.act(4)
    snap = snapshot(ours.store)
    del snap["audit_checkpoints"][1]
    replace_tables(ours.store, snap)
    broken = ours.verify()
    assert broken is not None and broken.checkpoint and "does not link to the checkpoint before it" in broken.problem


def test_a_removed_newest_checkpoint_leaves_its_entries_unsigned(ours):
    ours.act(4)
    snap = snapshot(ours.store)
    snap["audit_checkpoints"].pop()
    replace_tables(ours.store, snap)
    broken = ours.verify()
    assert broken is not None and "not signed" in broken.problem


def test_the_database_refuses_to_change_or_add_checkpoints_out_of_place(ours):
    ours.act(2)
    head = rows(ours.store, "audit_head")[0]["last_id"]
    newest = rows(ours.store, "audit_checkpoints")[-1]["entry_id"]
    insert = ("INSERT INTO audit_checkpoints (entry_id, head_hash, at, public_key, prev_hash, signature, hash) "
              "VALUES ({}, 'x', '2026-01-01 00:00:00', 'k', 'p', 's', 'h')")
    at_the_head = "a checkpoint names the head of the log, after every earlier one"
    # Each statement is refused by its own guard (a primary-key conflict would not be the guard): an
    # update, a delete, a checkpoint below the head, and a second checkpoint at the head itself (the
    # ordering clause: the head is right, but a checkpoint already names it).
    for statement, guard in (("UPDATE audit_checkpoints SET head_hash = 'x'", "audit checkpoints are append-only"),
                             ("DELETE FROM audit_checkpoints", "audit checkpoints are append-only"),
                             (insert.format(head - 1), at_the_head),
                             (insert.format(head), at_the_head)):
        with refused_by_guard(guard):
            with ours.store.db.write() as session:
                session.execute(text(statement))
    assert newest == head  # so the last insert is refused by the ordering clause alone
    assert ours.verify() is None


# ======================================================================= entries apikeys did not write
def test_an_entry_inserted_with_sql_at_the_head_is_named_not_written_by_apikeys_for_ever(ours):
    ours.act(2)
    forged_id = insert_at_head(ours.store)  # plain SQL, no trigger dropped, the head moved onto it
    ours.act(3)  # the server's next appends sign checkpoints on top of it
    broken = ours.verify()
    assert broken is not None and broken.entry_id == forged_id and not broken.checkpoint
    assert "not written by apikeys" in broken.problem
    assert ours.witnessed() is None  # the channel saw nothing wrong: only the signatures tell


def test_the_next_append_after_an_entry_apikeys_did_not_write_alerts_once(ours, caplog):
    ours.act(1)
    forged_id = insert_at_head(ours.store)
    created = ours.store.keys.create(name="after", owner="payments", actor=ADMIN)[0]  # never blocked
    outcome = ours.store.keys.revoke(created.key.id, via="cli", actor=ADMIN, reason="compromised")
    assert outcome.event.action == "key.revoked"  # the caller gets its own entry, not the alert
    ours.deliver()
    alerts = [e for e in ours.store.audit.oldest_first() if e.action == "audit.tamper_detected"]
    assert len(alerts) == 1 and alerts[0].id == forged_id + 1  # appended first, with the create it detected at
    assert f"audit entries {forged_id}-{forged_id}" in alerts[0].details and "not written by apikeys" in alerts[0].details
    assert any("tamper detected" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    alert_posts = [m for m in ours.slack.messages if f"{forged_id}-{forged_id}" in m["text"] + str(m["blocks"])]
    assert len(alert_posts) == 1  # a post of its own, and the create and revoke keep theirs
    assert sum("after" in m["text"] + str(m["blocks"]) for m in ours.slack.messages) >= 2
    assert ours.store.keys.get(created.key.id).revoked_at is not None


def test_the_head_cannot_be_moved_back_or_off_the_log(ours):
    ours.act(3)
    moves = "the audit head only moves forward, onto an entry of the log"
    for statement, guard in (("UPDATE audit_head SET last_id = last_id - 1", moves),
                             ("UPDATE audit_head SET last_hash = 'x'", moves),
                             ("DELETE FROM audit_head", "the audit head is never deleted")):
        with refused_by_guard(guard):
            with ours.store.db.write() as session:
                session.execute(text(statement))
    assert ours.verify() is None


def test_a_version_1_log_still_verifies_and_vouches_from_its_checkpoints(ours):
    """Release 4 signed checkpoints without first_entry_id: each vouched for all since the last."""
    ours.act(3)
    snap = snapshot(ours.store)
    old = [dict(cp, first_entry_id=None) for cp in snap["audit_checkpoints"]]
    from .tampering import resigned
    snap["audit_checkpoints"] = resigned(snap["audit_events"], old, ours.signer)
    replace_tables(ours.store, snap)
    assert ours.verify() is None


def test_signing_started_on_a_log_with_entries_is_said_and_so_is_a_re_genesis(database_url):
    """A log that had entries and no checkpoint is adopted by the first checkpoint: the audit channel
    is told, because deleting every checkpoint (the triggers dropped) looks the same to the database."""
    unsigned = open_store(database_url, bootstrap_admins=[ADMIN])
    unsigned.keys.create(name="before-signing", owner="ops", actor=ADMIN)
    unsigned.close()
    inst = _open(database_url)
    try:
        inst.act(1)
        started = [e for e in inst.store.audit.oldest_first() if e.action == "audit.signing_started"]
        assert len(started) == 1 and json.loads(started[0].details)["adopted_through"] == 1
        assert inst.verify() is None
        inst.deliver()
        assert any("Audit signing started" in m["text"] for m in inst.slack.messages)
        # The database owner deletes every checkpoint and slips an entry in: the next append adopts the
        # log again, and says so in the channel (the running self-check also sees the chain restart).
        snap = snapshot(inst.store)
        snap["audit_checkpoints"] = []
        replace_tables(inst.store, snap)
        insert_at_head(inst.store)
        inst.act(1)
        started = [e for e in inst.store.audit.oldest_first() if e.action == "audit.signing_started"]
        assert len(started) == 2
        broken = inst.verify()
        assert broken is not None and broken.entry_id == started[1].id and "signing started again" in broken.problem
    finally:
        inst.store.close()


# ======================================================================= each check on its own
def test_an_unsigned_log_with_one_entry_edited_and_only_its_own_hash_recomputed(database_url):
    """The default log (no signing key): the entry-to-entry link is the only thing that sees an
    entry edited with its own hash recomputed and nothing after it touched."""
    store = open_store(database_url, bootstrap_admins=[ADMIN])
    try:
        for i in range(3):
            store.keys.create(name=f"svc-{i}", owner="payments", actor=ADMIN)
        snap = snapshot(store)
        edited = snap["audit_events"][1]
        edited["details"] = json.dumps({"note": "nothing happened here"})
        edited["hash"] = entry_hash(id=edited["id"], at=aware(edited["at"]), actor=edited["actor"],
                                    action=edited["action"], key_id=edited["key_id"], details=edited["details"],
                                    prev_hash=edited["prev_hash"])
        replace_tables(store, snap)
        broken = store.audit.verify(None)
        assert broken is not None and broken.entry_id == edited["id"] + 1, broken
        assert "does not link to the entry before it" in broken.problem
    finally:
        store.close()


def test_the_newest_checkpoint_with_its_own_hash_altered(ours):
    """Nothing links to the newest checkpoint yet, and its signature is over its message, not its
    hash: only recomputing its own hash sees the change."""
    ours.act(3)
    snap = snapshot(ours.store)
    snap["audit_checkpoints"][-1]["hash"] = "0" * 64
    replace_tables(ours.store, snap)
    broken = ours.verify()
    assert broken is not None and broken.checkpoint, broken
    assert "altered (its content does not match its hash)" in broken.problem
