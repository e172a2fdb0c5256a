"""Rotation, one-time links, owners' channels, cards and the expiry digest, in storage (the Slack
side is tests/test_incident.py): each invariant the README promises, on both databases."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from storage import InvalidInput, KeyNotFound, VerifyCode, open_store
from storage.outbox import OutboxMessage
from storage.reveals import decrypt

from .helpers import ADMIN, everything_stored

AUDIT = "C0AUDIT"
OWNERS = "C0PAYMENTS"


@pytest.fixture
def audited(database_url):
    s = open_store(database_url, bootstrap_admins=[ADMIN], notify_channel=AUDIT)
    yield s
    s.close()


def _outbox(store, topic=None):
    with store.db.read() as session:
        rows = list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
    return [(r.topic, r.channel, json.loads(r.payload)) for r in rows if topic is None or r.topic == topic]


def _actions(store, key_id=None):
    return [e.action for e in reversed(store.audit.recent(limit=100, key_id=key_id))]


# -- rotate ------------------------------------------------------------------------------------
def test_a_rotation_with_a_grace_period_keeps_the_old_key_working_until_it_ends(audited):
    with freeze_time("2026-12-01 10:00:00"):
        old = audited.keys.create(name="billing", owner="payments", actor="cli:ops", expires_in=timedelta(days=90))[0]
    with freeze_time("2026-12-03 10:00:00"):
        rotated = audited.keys.rotate(old.key.id, actor=ADMIN, via="slack", grace=timedelta(hours=24))
        new = rotated.new
        assert (new.key.name, new.key.owner) == ("billing", "payments") and new.key.id != old.key.id
        assert new.key.expires_at - new.key.created_at == timedelta(days=90)  # the same lifetime
        assert audited.keys.verify(old.secret).code is VerifyCode.VALID
        assert audited.keys.verify(new.secret).code is VerifyCode.VALID
        stored = audited.keys.get(old.key.id)
        assert stored.rotated_to == new.key.id and stored.rotated_by == ADMIN
        assert stored.rotating_at(audited.keys.get(old.key.id).rotated_at)
    with freeze_time("2026-12-04 09:59:59"):
        assert audited.keys.verify(old.secret).code is VerifyCode.VALID
    with freeze_time("2026-12-04 10:00:00"):  # the grace is an expiry time: no process needed
        assert audited.keys.verify(old.secret).code is VerifyCode.EXPIRED
        assert audited.keys.verify(new.secret).code is VerifyCode.VALID


def test_a_rotation_now_revokes_the_old_key_with_the_reason_rotation(audited):
    old = audited.keys.create(name="billing", owner="payments", actor="cli:ops")[0]
    rotated = audited.keys.rotate(old.key.id, actor=ADMIN, via="cli", grace=timedelta(0))
    assert audited.keys.verify(old.secret).code is VerifyCode.REVOKED
    assert audited.keys.get(old.key.id).revoke_reason == "rotation"
    assert audited.keys.verify(rotated.new.secret).code is VerifyCode.VALID
    assert rotated.new.key.expires_at is None  # the old key had no expiry: neither has its replacement


def test_a_rotation_is_one_action_one_key_rotated_entry_naming_both_ids_and_the_grace(audited):
    old = audited.keys.create(name="billing", owner="payments", actor="cli:ops")[0]
    before = len(_outbox(audited, "audit"))
    rotated = audited.keys.rotate(old.key.id, actor=ADMIN, via="slack", grace=timedelta(0), note="leaked in CI")
    entries = audited.audit.recent(limit=3)
    assert [e.action for e in reversed(entries)] == ["key.rotated", "key.created", "key.revoked"]
    rotation = json.loads(entries[-1].details)
    assert entries[-1].key_id == old.key.id and rotation["new_key_id"] == rotated.new.key.id
    assert rotation["grace"] == "now" and rotation["note"] == "leaked in CI"
    assert json.loads(entries[1].details)["rotated_from"] == old.key.id
    assert len(_outbox(audited, "audit")) == before + 1  # one audit-channel post
    assert audited.audit.verify() is None


@pytest.mark.parametrize("state", ["revoked", "rotated", "missing"])
def test_only_an_active_unrotated_key_can_be_rotated_and_a_refusal_changes_nothing(audited, state):
    old = audited.keys.create(name="billing", owner="payments", actor="cli:ops")[0]
    key_id = old.key.id
    if state == "revoked":
        audited.keys.revoke(key_id, actor=ADMIN, via="cli")
    elif state == "rotated":
        audited.keys.rotate(key_id, actor=ADMIN, via="cli", grace=timedelta(hours=1))
    else:
        key_id = "key_" + "Z" * 17
    keys_before, log_before = audited.keys.count_keys(status="all"), len(_actions(audited))
    with pytest.raises(KeyNotFound if state == "missing" else InvalidInput):
        audited.keys.rotate(key_id, actor=ADMIN, via="cli", grace=timedelta(hours=1))
    assert audited.keys.count_keys(status="all") == keys_before and len(_actions(audited)) == log_before


@pytest.mark.parametrize("grace", [timedelta(seconds=-1), timedelta(days=31), "24h", None])
def test_a_grace_period_out_of_range_is_refused(audited, grace):
    old = audited.keys.create(name="billing", owner="payments", actor="cli:ops")[0]
    with pytest.raises(InvalidInput, match="grace"):
        audited.keys.rotate(old.key.id, actor=ADMIN, via="cli", grace=grace)
    assert audited.keys.count_keys(status="all") == 1


def test_of_two_racing_rotations_one_wins(database_url):
    stores = [open_store(database_url) for _ in range(2)]
    old = stores[0].keys.create(name="billing", owner="payments", actor="cli:ops")[0]
    results, barrier = [], threading.Barrier(2)

    def rotate(store):
        barrier.wait()
        try:
            results.append(store.keys.rotate(old.key.id, actor=ADMIN, via="cli", grace=timedelta(hours=1)))
        except InvalidInput as exc:
            results.append(exc)

    threads = [threading.Thread(target=rotate, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert stores[0].keys.count_keys(status="all") == 2  # one replacement, not two
    assert _actions(stores[0]).count("key.rotated") == 1
    for s in stores:
        s.close()


def test_the_grace_never_extends_a_key_past_its_own_expiry(audited):
    with freeze_time("2026-12-01 10:00:00"):
        old = audited.keys.create(name="billing", owner="payments", actor="cli:ops", expires_in=timedelta(hours=2))[0]
        audited.keys.rotate(old.key.id, actor=ADMIN, via="cli", grace=timedelta(days=7))
        assert audited.keys.get(old.key.id).expires_at == old.key.expires_at


# -- one-time links ----------------------------------------------------------------------------
def _rotate_with_link(store, key_id, for_user=ADMIN):
    return store.keys.rotate(key_id, actor=for_user, via="slack", grace=timedelta(hours=1),
                             seal=lambda session, new_id, secret, now: store.reveals.seal(
                                 session, key_id=new_id, secret=secret, for_user=for_user, now=now))


def test_a_link_opens_once_and_its_ciphertext_is_gone_after(audited, database_url):
    old = audited.keys.create(name="billing", owner="payments", actor="cli:ops")[0]
    rotated = _rotate_with_link(audited, old.key.id)
    sealed = rotated.sealed
    assert rotated.new.secret not in everything_stored(database_url)  # only a ciphertext is kept
    assert sealed.fragment not in everything_stored(database_url)     # and never its key
    assert audited.reveals.look(sealed.token).state == "sealed"
    opened = audited.reveals.open(sealed.token)
    assert opened.state == "opened" and decrypt(opened.ciphertext, sealed.fragment) == rotated.new.secret
    assert opened.ciphertext not in everything_stored(database_url)   # deleted on the first view
    again = audited.reveals.open(sealed.token)
    assert again.state == "viewed" and again.ciphertext is None and again.viewed_at == opened.viewed_at
    assert _actions(audited, rotated.new.key.id).count("key.secret_revealed") == 1


def test_a_link_expires_after_15_minutes_and_the_admin_is_told(audited):
    with freeze_time("2026-12-03 10:00:00"):
        old = audited.keys.create(name="billing", owner="payments", actor="cli:ops")[0]
        sealed = _rotate_with_link(audited, old.key.id).sealed
    with freeze_time("2026-12-03 10:14:59"):
        assert audited.reveals.sweep() == 0 and audited.reveals.look(sealed.token).state == "sealed"
    with freeze_time("2026-12-03 10:15:00"):
        assert audited.reveals.open(sealed.token).state == "expired"
        assert audited.reveals.sweep() == 1
        assert audited.reveals.sweep() == 0  # told once
    told = _outbox(audited, "text")
    assert len(told) == 1 and told[0][1] == ADMIN and "expired unviewed" in told[0][2]["text"]
    assert "key.reveal_expired" in _actions(audited)
    assert audited.reveals.open(sealed.token).state == "expired"


def test_an_unknown_token_finds_nothing(audited):
    assert audited.reveals.look("x" * 32).state == "unknown"
    assert audited.reveals.open("x" * 32).state == "unknown"


# -- owners' channels --------------------------------------------------------------------------
def test_an_owners_channel_is_told_of_a_revocation_rotation_leak_and_use_after_revocation(audited):
    assert audited.owners.set("payments", OWNERS, actor="cli:ops")
    assert not audited.owners.set("payments", OWNERS, actor="cli:ops")  # unchanged: nothing recorded
    keys = audited.keys.create(name="billing", owner="payments", actor="cli:ops", count=3)
    other = audited.keys.create(name="search", owner="search", actor="cli:ops")[0]
    audited.keys.revoke(keys[0].key.id, actor=ADMIN, via="slack")
    audited.keys.rotate(keys[1].key.id, actor=ADMIN, via="slack", grace=timedelta(hours=1))
    audited.leaks.report([__import__("storage.leaks", fromlist=["Match"]).Match(keys[2].secret, url="https://x")],
                         actor="github-secret-scanning", via="github-secret-scanning")
    audited.keys.verify(keys[0].secret)  # presented after revocation
    assert audited.keys.flush_uses()
    audited.keys.revoke(other.key.id, actor=ADMIN, via="slack")  # not theirs: no post to them
    posts = _outbox(audited, "owner")
    assert [p[1] for p in posts] == [OWNERS] * 4
    told = [_actions_between(audited, p[2]) for p in posts]
    assert told == [["key.revoked"], ["key.rotated"], ["key.leaked", "key.revoked"], ["key.used_after_revoke"]]


def _actions_between(store, payload):
    return [e.action for e in store.audit.between(payload["first"], payload["last"]) if e.id in payload["ids"]]


def test_owners_channels_are_listed_and_removed_and_each_change_is_audited(audited):
    audited.owners.set("payments", OWNERS, actor="cli:ops")
    assert [(o.owner, o.channel_id) for o in audited.owners.list()] == [("payments", OWNERS)]
    audited.owners.remove("payments", actor="cli:ops")
    assert audited.owners.list() == []
    with pytest.raises(InvalidInput, match="no channel"):
        audited.owners.remove("payments", actor="cli:ops")
    assert _actions(audited) == ["owner.channel_set", "owner.channel_removed"]


@pytest.mark.parametrize("channel", ["general", "#payments", "U0USER1", "C" * 40, ""])
def test_a_channel_that_is_not_a_channel_id_is_refused(audited, channel):
    with pytest.raises(InvalidInput, match="channel ID"):
        audited.owners.set("payments", channel, actor="cli:ops")
    assert audited.owners.list() == []


# -- cards -------------------------------------------------------------------------------------
def test_a_revocation_queues_an_update_of_every_message_showing_the_key(audited):
    key = audited.keys.create(name="billing", owner="payments", actor="cli:ops")[0]
    audited.cards.keep([key.key.id], channel="C0INCIDENT", ts="1.0001", kind="leak_warning", context={})
    audited.cards.keep([key.key.id], channel=AUDIT, ts="1.0002", kind="audit", context={"first": 1, "last": 1})
    assert _outbox(audited, "card") == []
    audited.keys.revoke(key.key.id, actor=ADMIN, via="slack")
    assert sorted(p[1] for p in _outbox(audited, "card")) == sorted(["C0INCIDENT", AUDIT])


def test_a_message_kept_after_its_key_changed_is_updated_at_once(audited):
    key = audited.keys.create(name="billing", owner="payments", actor="cli:ops")[0]
    audited.keys.revoke(key.key.id, actor=ADMIN, via="slack")
    assert audited.cards.keep([key.key.id], channel="C0INCIDENT", ts="1.0001", kind="leak_warning", context={}) == 1
    assert len(_outbox(audited, "card")) == 1


# -- the expiry digest -------------------------------------------------------------------------
def test_each_key_is_told_once_per_threshold_and_once_for_the_nearest(audited):
    audited.owners.set("payments", OWNERS, actor="cli:ops")
    with freeze_time("2026-12-01 09:00:00"):
        far = audited.keys.create(name="far", owner="payments", actor="cli:ops", expires_in=timedelta(days=20))[0]
        near = audited.keys.create(name="near", owner="search", actor="cli:ops", expires_in=timedelta(days=2))[0]
        sent = audited.expiry.send()
        assert [(n.key_id, n.threshold_days, n.channel) for n in sent] == [(near.key.id, 3, AUDIT)]
        assert audited.expiry.send() == []  # nothing twice
    with freeze_time("2026-12-07 09:00:00"):  # far: 14 days left
        assert [(n.key_id, n.threshold_days, n.channel) for n in audited.expiry.send()] == [(far.key.id, 14, OWNERS)]
    with freeze_time("2026-12-02 09:00:01"):  # near: inside a day now
        assert [(n.key_id, n.threshold_days) for n in audited.expiry.send()] == [(near.key.id, 1)]
    with freeze_time("2026-12-18 09:00:00"):  # far: 3 days left (14 was told), then 1
        assert [n.threshold_days for n in audited.expiry.send()] == [3]
    with freeze_time("2026-12-20 09:00:01"):
        assert [n.threshold_days for n in audited.expiry.send()] == [1]
    assert len(_outbox(audited, "expiry")) == 5


def test_the_scheduled_digest_is_sent_once_a_day_at_its_hour_and_caught_up_after_downtime(audited):
    audited.keys.create(name="near", owner="search", actor="cli:ops", expires_in=timedelta(days=40))
    with freeze_time("2026-12-01 08:59:59"):
        assert audited.expiry.scheduled(hour=9) is None  # not yet
    with freeze_time("2026-12-01 09:00:00"):
        assert audited.expiry.scheduled(hour=9) == []    # sent (nothing due), once
        assert audited.expiry.scheduled(hour=9) is None
    with freeze_time("2026-12-02 15:30:00"):  # the server was down at 9: sent when it is back
        assert audited.expiry.scheduled(hour=9) == []
        assert audited.expiry.scheduled(hour=9) is None


def test_two_replicas_sending_the_digest_at_once_post_each_key_once(database_url):
    stores = [open_store(database_url, notify_channel=AUDIT) for _ in range(3)]
    for i in range(20):
        stores[0].keys.create(name=f"k{i}", owner="payments", actor="cli:ops", expires_in=timedelta(days=2))
    barrier, sent = threading.Barrier(3), []

    def send(store):
        barrier.wait()
        sent.extend(store.expiry.send())

    threads = [threading.Thread(target=send, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sent) == 20 and len({n.key_id for n in sent}) == 20
    posted = [k for _, _, p in _outbox(stores[0], "expiry") for k in p["keys"]]
    assert len(posted) == 20
    for s in stores:
        s.close()
