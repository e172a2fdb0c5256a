"""The append-only, hash-chained audit log.

Entry ``n`` carries ``prev_hash`` (the hash of entry ``n-1``, or 64 zeros for the first) and
``hash = SHA-256(canonical JSON of id, at, actor, action, key_id, details, prev_hash)``.
A single head row names the newest entry; appending locks it (``FOR UPDATE`` on PostgreSQL,
the write lock on SQLite), so the chain stays linear however many writers there are.
Editing an entry breaks its hash; deleting one leaves a gap in the ids or a head that points
past the end. ``verify()`` finds the first such break.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlmodel import Session

from .db import Database
from .keyformat import digest
from .models import AuditEvent, AuditHead
from .outbox import Outbox
from .receipts import Receipts
from .redaction import redact, redact_value
from .timeutil import iso, utcnow

GENESIS_HASH = "0" * 64
HEAD_ID = 1


class Action(enum.StrEnum):
    KEY_CREATED = "key.created"
    KEY_REVOKED = "key.revoked"
    KEY_REVOKE_DENIED = "key.revoke_denied"
    KEY_LEAKED = "key.leaked"
    KEY_USED_AFTER_REVOKE = "key.used_after_revoke"
    ADMIN_ADDED = "admin.added"
    ADMIN_REMOVED = "admin.removed"
    COMMAND_DENIED = "command.denied"  # a state-changing slash command refused (a replayed request)


@dataclass(frozen=True)
class EventInput:
    actor: str
    action: str
    key_id: str | None = None
    details: dict[str, Any] | None = None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(*, id: int, at: datetime, actor: str, action: str, key_id: str | None, details: str, prev_hash: str) -> str:
    material = canonical_json(
        {
            "id": id,
            "at": at.isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "key_id": key_id,
            "details": json.loads(details),
            "prev_hash": prev_hash,
        }
    )
    return digest(material)


@dataclass(frozen=True)
class ChainBreak:
    entry_id: int
    problem: str

    def __str__(self) -> str:
        return f"audit entry {self.entry_id}: {self.problem}"


def event_to_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": iso(event.at),
        "actor": event.actor,
        "action": event.action,
        "key_id": event.key_id,
        "details": json.loads(event.details),
        "hash": event.hash,
    }


AUDIT_TOPIC = "audit"


class AuditLog:
    """``notify_channel``: when set, every appended action also queues one post to that channel
    in the outbox (same transaction), naming the entries it covers."""

    def __init__(self, db: Database, notify_channel: str | None = None):
        self.db = db
        self.notify_channel = notify_channel
        self.outbox = Outbox(db)
        self.receipts = Receipts(db)

    # -- writing (always inside the caller's write transaction) ---------------------------
    def append(self, session: Session, event: EventInput, *, at: datetime | None = None, notify: bool = True) -> AuditEvent:
        return self.append_many(session, [event], at=at, notify=notify)[0]

    def append_many(
        self, session: Session, events: Sequence[EventInput], *, at: datetime | None = None, notify: bool = True
    ) -> list[AuditEvent]:
        """Append entries as one action (one notification when a channel is configured)."""
        if not events:
            return []
        at = at or utcnow()
        head = session.execute(
            select(AuditHead.last_id, AuditHead.last_hash).where(AuditHead.id == HEAD_ID).with_for_update()
        ).first()
        if head is None:
            session.execute(insert(AuditHead).values(id=HEAD_ID, last_id=0, last_hash=GENESIS_HASH))
            last_id, prev = 0, GENESIS_HASH
        else:
            last_id, prev = head
        rows = []
        for offset, item in enumerate(events, start=1):
            # The log is permanent: whatever free text reaches it (a Slack field, a pasted note) is masked.
            details = canonical_json(redact_value(item.details or {}))
            actor = redact(item.actor)
            entry_id = last_id + offset
            h = entry_hash(
                id=entry_id, at=at, actor=actor, action=item.action, key_id=item.key_id, details=details, prev_hash=prev
            )
            rows.append(
                dict(id=entry_id, at=at, actor=actor, action=item.action, key_id=item.key_id, details=details,
                     prev_hash=prev, hash=h)
            )
            prev = h
        session.execute(insert(AuditEvent), rows)
        session.execute(
            update(AuditHead).where(AuditHead.id == HEAD_ID).values(last_id=rows[-1]["id"], last_hash=prev)
        )
        if self.notify_channel and notify:
            self.outbox.enqueue(session, topic=AUDIT_TOPIC, channel=self.notify_channel,
                                payload={"first": rows[0]["id"], "last": rows[-1]["id"]})
        return [AuditEvent.model_construct(**row) for row in rows]

    def record(self, event: EventInput) -> AuditEvent:
        """Append one event in its own transaction."""
        with self.db.write() as session:
            return self.append(session, event)

    def record_once(self, identity: str, event: EventInput) -> AuditEvent | None:
        """Append ``event`` unless ``identity`` was recorded before (a retried delivery, say): the
        receipt and the entry are one transaction, so neither exists without the other."""
        with self.db.write() as session:
            if not self.receipts.first_use(identity, session):
                return None
            return self.append(session, event)

    def between(self, first: int, last: int) -> list[AuditEvent]:
        with self.db.read() as session:
            return list(session.scalars(
                select(AuditEvent).where(AuditEvent.id >= first, AuditEvent.id <= last).order_by(AuditEvent.id)
            ))

    # -- reading --------------------------------------------------------------------------
    def recent(self, *, limit: int = 100, key_id: str | None = None, before_id: int | None = None,
               after_id: int | None = None) -> list[AuditEvent]:
        """Newest first: the newest ``limit`` entries older than ``before_id``, or with ``after_id``
        the ``limit`` entries just newer than it (still returned newest first)."""
        query = select(AuditEvent)
        if key_id is not None:
            query = query.where(AuditEvent.key_id == key_id)
        if before_id is not None:
            query = query.where(AuditEvent.id < before_id)
        if after_id is not None:
            query = query.where(AuditEvent.id > after_id).order_by(AuditEvent.id).limit(limit)
            with self.db.read() as session:
                return list(reversed(list(session.scalars(query))))
        with self.db.read() as session:
            return list(session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))

    def oldest_first(self, *, limit: int | None = None) -> list[AuditEvent]:
        """The log oldest first; with ``limit``, the newest ``limit`` entries (still oldest first)."""
        if limit is None:
            with self.db.read() as session:
                return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        return list(reversed(self.recent(limit=limit)))

    def verify(self) -> ChainBreak | None:
        """Walk the chain; return the first break, or None when the log is intact."""
        expected_id, prev = 1, GENESIS_HASH
        with self.db.read(snapshot=True) as session:  # SQLite read transactions are snapshots already
            head = session.execute(select(AuditHead.last_id, AuditHead.last_hash).where(AuditHead.id == HEAD_ID)).first()
            for event in _stream(session):
                if event.id != expected_id:
                    return ChainBreak(expected_id, f"missing (deleted); the log jumps to entry {event.id}")
                if event.prev_hash != prev:
                    return ChainBreak(event.id, "does not link to the entry before it (edited or reordered)")
                recomputed = entry_hash(
                    id=event.id, at=event.at, actor=event.actor, action=event.action,
                    key_id=event.key_id, details=event.details, prev_hash=event.prev_hash,
                )
                if recomputed != event.hash:
                    return ChainBreak(event.id, "content does not match its hash (edited)")
                prev = event.hash
                expected_id += 1
        last_id = expected_id - 1
        head_id, head_hash = head if head else (0, GENESIS_HASH)
        if head_id != last_id:
            if head_id > last_id:
                return ChainBreak(last_id + 1, f"missing (deleted); the log should end at entry {head_id}")
            return ChainBreak(head_id + 1, "was added outside the audit log (the head does not know it)")
        if head_hash != prev:
            return ChainBreak(last_id, "does not match the recorded head of the log (edited)")
        return None


def _stream(session: Session, batch: int = 2000) -> Iterable[AuditEvent]:
    after = 0
    while True:
        chunk = list(session.scalars(select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id).limit(batch)))
        yield from chunk
        if len(chunk) < batch:
            return
        after = chunk[-1].id
