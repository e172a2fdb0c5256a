"""The audit channel as the self-check's alerts reach it: through the outbox and the deliverer,
in-process (``world``), the entries written as the self-check writes them (through the server's own
store, whose commits wake its deliverer)."""

from __future__ import annotations

from storage import EventInput, Store

from .slackworld import World, seed, wait_audit_post


def test_a_restored_revocation_posted_names_the_key_masked_though_its_entry_names_only_the_id(
        world: World, store: Store):
    key = seed(store, "billing-api", owner="payments")
    world.app_store.audit.record(EventInput(actor="apikeys-self-check", action="key.revocation_restored", key_id=key.id,
                                            details={"revoked_at": "2026-11-20T08:00:00Z", "entry": 2}))
    post = wait_audit_post(world.stub, "Revocation restored")
    text = post.body["text"] + str(post.body["blocks"])
    assert "billing-api" in text and key.masked in text and "#2" in text and "Revoked again" in text
    assert key.secret not in text


def test_a_tamper_alert_is_posted_in_words(world: World):
    world.app_store.audit.record(EventInput(actor="apikeys", action="audit.tamper_detected",
                                            details={"problem": "trigger api_keys_permanent is disabled"}))
    post = wait_audit_post(world.stub, "Tamper detected")
    assert post.body["text"].startswith(":rotating_light: *Tamper detected*: trigger api_keys_permanent is disabled")
