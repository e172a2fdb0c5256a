"""Delivers queued audit-channel posts (the outbox) to Slack, in a background thread.

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

from storage import Store
from storage.audit import AUDIT_TOPIC
from storage.timeutil import utcnow

from .. import metrics
from ..logs import fields, redact
from . import audit_posts

log = logging.getLogger("apikeys.delivery")

CHANNEL_PROBLEMS = {"channel_not_found", "not_in_channel", "is_archived", "restricted_action"}


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
            self._deliver(item)
        return bool(claimed)

    def _deliver(self, item) -> None:
        try:
            if item.topic == AUDIT_TOPIC:
                events = self.store.audit.between(item.payload["first"], item.payload["last"])
                if not events:
                    raise ValueError("audit entries missing")
                text, post_blocks = audit_posts.audit_post(events, self._keys(audit_posts.keys_named_only_by_id(events)))
            else:
                text, post_blocks = item.payload.get("text", ""), item.payload.get("blocks")
            self.client.chat_postMessage(channel=item.channel, text=redact(text), blocks=post_blocks, unfurl_links=False)
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc.response.status_code)
            self._failed(item, error)
            if error in CHANNEL_PROBLEMS:
                log.error(fields(event="audit_channel_unusable", channel=item.channel, error=error,
                                 action="invite the bot to the audit channel or fix APIKEYS_AUDIT_CHANNEL"))
            return
        except Exception as exc:  # timeouts, connection errors, rendering problems
            self._failed(item, type(exc).__name__)
            return
        self.store.outbox.delivered(item.id, self.worker)
        metrics.audit_post("delivered")
        log.info(fields(event="audit_post", outbox_id=item.id, channel=item.channel, outcome="delivered"))

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
