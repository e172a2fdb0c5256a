"""Delivers queued posts (the outbox) to Slack, in a background thread: audit-channel posts, owners'
channels, the expiry digest, direct messages, and ``chat.update`` of messages that must stay true
(a leak warning or an audit post whose key was revoked or rotated since: ``storage.cards``).

Every process that talks to Slack runs one. Rows are claimed with a lease, so each post goes
out once even with several workers or replicas; a failure (5xx, 429, timeout, a channel the
bot cannot post to) is retried with capped backoff and logged, while the revocation it
reports stands. Posts queued while Slack was down, or by a process that died, are delivered
when any deliverer next runs.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from storage import KeyNotFound, Store
from storage.audit import AUDIT_TOPIC, SERVER_AUDIT_CHANNEL
from storage.cards import CARD_TOPIC
from storage.expiry import EXPIRY_TOPIC
from storage.owners import OWNER_TOPIC
from storage.timeutil import utcnow

from .. import metrics
from ..logs import fields, redact
from . import audit_posts, blocks, owner_posts

log = logging.getLogger("apikeys.delivery")

CHANNEL_PROBLEMS = {"channel_not_found", "not_in_channel", "is_archived", "restricted_action"}
# chat.update errors that no retry can mend: the message was deleted, or is too old or not ours to edit.
GONE = {"message_not_found", "cant_update_message", "edit_window_closed", "channel_not_found", "is_archived"}
CARD_ATTEMPTS = 10  # a card update failing otherwise is given up after this many tries (about 30 minutes)


class NoAuditChannel(Exception):
    """A post queued for the audit channel (by a command line that does not know it), on a deliverer
    without one: it waits, retried, for a deliverer that has one."""


class Nothing(Exception):
    """Nothing left to post (a card whose message is gone, an owner post about no entry): done."""


class Deliverer:
    def __init__(self, store: Store, client: WebClient, *, idle_wait: float = 5.0):
        self.store = store
        self.client = client
        self.idle_wait = idle_wait
        self.worker = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Deliverer":
        self._thread = threading.Thread(target=self._run, name="audit-delivery", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                delivered_any = self.deliver_due()
            except Exception:
                log.exception("audit delivery loop failed; retrying")
                delivered_any = False
            if not delivered_any:
                self._wake.wait(self._until_next_due())
                self._wake.clear()

    def _until_next_due(self) -> float:
        """Sleep until the earliest retry is due (at most ``idle_wait``)."""
        try:
            due = self.store.outbox.next_due()
        except Exception:
            return self.idle_wait
        if due is None:
            return self.idle_wait
        return min(self.idle_wait, max(0.05, (due - utcnow()).total_seconds()))

    def deliver_due(self) -> bool:
        """Deliver what is due now; True when something was attempted."""
        claimed = self.store.outbox.claim(self.worker)
        for item in claimed:
            if self._stop.is_set():
                break
            # A batch can outlive its lease (Slack slow, 429s): another deliverer may then have taken
            # the rest, so each post is held again just before it is sent, or left to that one.
            if not self.store.outbox.renew(item.id, self.worker):
                log.info(fields(event="audit_post", outbox_id=item.id, outcome="lease_lost"))
                continue
            self._deliver(item)
        return bool(claimed)

    def _deliver(self, item) -> None:
        try:
            if item.topic == CARD_TOPIC:
                self._update_card(item)
            else:
                text, post_blocks = self._render(item)
                channel = self._channel(item)
                response = self.client.chat_postMessage(channel=channel, text=redact(text), blocks=post_blocks,
                                                        unfurl_links=False)
                if item.topic == AUDIT_TOPIC:
                    self._keep_live(item, response)
        except Nothing:
            pass
        except NoAuditChannel:
            self._failed(item, "no_audit_channel")
            log.error(fields(event="audit_channel_unusable", outbox_id=item.id, error="no_audit_channel",
                             action="a post queued for the audit channel waits: set APIKEYS_AUDIT_CHANNEL"))
            return
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc.response.status_code)
            if item.topic == CARD_TOPIC and (error in GONE or item.attempts + 1 >= CARD_ATTEMPTS):
                # the message is gone or frozen, or keeps failing: nothing more to keep true
                log.warning(fields(event="card_update", outbox_id=item.id, channel=item.channel, outcome=error,
                                   attempts=item.attempts + 1))
            else:
                self._failed(item, error)
                if error in CHANNEL_PROBLEMS:
                    log.error(fields(event="audit_channel_unusable", channel=item.channel, error=error,
                                     action="invite the bot to the channel or fix APIKEYS_AUDIT_CHANNEL / "
                                            "apikeys owners set"))
                return
        except Exception as exc:  # timeouts, connection errors, rendering problems
            self._failed(item, type(exc).__name__)
            return
        self.store.outbox.delivered(item.id, self.worker)
        metrics.audit_post("delivered")
        log.info(fields(event="audit_post", outbox_id=item.id, channel=item.channel, topic=item.topic,
                        outcome="delivered"))

    def _channel(self, item) -> str:
        """Where a post goes: its channel, or this server's audit channel for one queued without it."""
        if item.channel != SERVER_AUDIT_CHANNEL:
            return item.channel
        if not self.store.audit.notify_channel:
            raise NoAuditChannel()
        return self.store.audit.notify_channel

    def _render(self, item) -> tuple[str, list[dict] | None]:
        payload = item.payload
        if item.topic == AUDIT_TOPIC:
            events = self.store.audit.between(payload["first"], payload["last"])
            if not events:
                raise ValueError("audit entries missing")
            return audit_posts.audit_post(events, self._keys(audit_posts.keys_named_only_by_id(events)))
        if item.topic == OWNER_TOPIC:
            wanted = set(payload["ids"])
            events = [e for e in self.store.audit.between(payload["first"], payload["last"]) if e.id in wanted]
            text, post_blocks = owner_posts.owner_post(payload["owner"], events)
        elif item.topic == EXPIRY_TOPIC:
            items = [(key_id, days) for key_id, days in payload["keys"]]
            text, post_blocks = owner_posts.expiry_post(items, self._keys([key_id for key_id, _ in items]), utcnow())
        else:  # "text": a direct message or a notice, rendered when it was queued
            return payload.get("text", ""), payload.get("blocks")
        if not post_blocks:
            raise Nothing()
        return text, post_blocks

    def _keep_live(self, item, response) -> None:
        """An audit post that shows a key as still active (a leak) is kept true: remember where it is."""
        try:  # the post is out: a failure here must not make it go out twice
            key_ids = audit_posts.live_keys(self.store.audit.between(item.payload["first"], item.payload["last"]))
            channel, ts = response.get("channel") or item.channel, response.get("ts")
            if key_ids and ts:
                self.store.cards.keep(key_ids, channel=channel, ts=ts, kind="audit",
                                      context={"first": item.payload["first"], "last": item.payload["last"]})
        except Exception as exc:
            log.warning(fields(event="card_keep", outbox_id=item.id, outcome=type(exc).__name__))

    def _update_card(self, item) -> None:
        """Render a kept message again from what it shows now, and ``chat.update`` it in place."""
        ref = self.store.cards.get(item.payload.get("ref")) if isinstance(item.payload.get("ref"), int) else None
        if ref is None:
            raise Nothing()
        try:
            key = self.store.keys.get(ref.key_id)
        except KeyNotFound:  # keys are never deleted; a reference to no key is nothing to update
            raise Nothing() from None
        if ref.kind == "leak_warning":
            text, new_blocks = blocks.leak_warning(key, ref.context.get("poster"), utcnow())
        else:
            events = self.store.audit.between(ref.context["first"], ref.context["last"])
            if not events:
                raise Nothing()
            current = self._keys(audit_posts.live_keys(events))
            text, new_blocks = audit_posts.audit_post(events, self._keys(audit_posts.keys_named_only_by_id(events)),
                                                      current=current)
        self.client.chat_update(channel=ref.channel, ts=ref.ts, text=redact(text), blocks=new_blocks)

    def _keys(self, key_ids: list[str]) -> dict:
        """The keys an entry names only by id (a restored revocation), for its post; best effort: a
        key that cannot be read is named by its id."""
        found = {}
        for key_id in key_ids:
            try:
                found[key_id] = self.store.keys.get(key_id)
            except Exception as exc:
                log.warning(fields(event="audit_post", key_id=key_id, outcome="key_not_read", error=type(exc).__name__))
        return found

    def _failed(self, item, error: str) -> None:
        retry_at = self.store.outbox.failed(item.id, self.worker, error, attempts=item.attempts)
        metrics.audit_post("failed")
        log.warning(fields(event="audit_post", outbox_id=item.id, channel=item.channel, outcome="failed",
                           error=error, attempt=item.attempts + 1, retry_at=retry_at.isoformat(timespec="seconds")))
