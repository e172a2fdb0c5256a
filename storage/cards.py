"""Cards that stay true: the messages this app posted with a live button (or a "still active") for a
key, so that they can be updated in place when the key is revoked or rotated.

A reference (channel, message ts, key, kind) is kept for every such message once Slack has taken
it: a leak warning in an incident thread, an audit-channel post of a leak. When an append records
``key.revoked`` or ``key.rotated``, the same transaction queues one ``card`` post per reference of
that key (``AuditLog.after_append``); the deliverer renders the message again from the key as it
is now and sends it with ``chat.update``, retried by the outbox like every post.

A message whose key changed between its rendering and its reference being kept is queued for an
update at once (``keep``), so no message is left showing a button for a key already revoked.
Ephemeral lists and cards cannot be updated by an app (only through their ``response_url``, for
half an hour, by the click that got it): a click on a stale one is answered from the key's state.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, Text, UniqueConstraint, select
from sqlmodel import Field, Session, SQLModel

from .audit import Action, Appended, AuditLog
from .db import Database
from .models import ApiKey, UTCDateTime
from .timeutil import utcnow

CARD_TOPIC = "card"
UPDATED_BY = frozenset({Action.KEY_REVOKED, Action.KEY_ROTATED})


class MessageRef(SQLModel, table=True):
    __tablename__ = "message_refs"
    __table_args__ = (UniqueConstraint("channel", "ts", "key_id", name="uq_message_refs_message_key"),
                      Index("ix_message_refs_key", "key_id"))

    id: int | None = Field(default=None, primary_key=True)
    key_id: str = Field(max_length=40)
    channel: str = Field(max_length=64)
    ts: str = Field(max_length=32)
    kind: str = Field(max_length=32)  # "leak_warning" or "audit"
    context: str = Field(sa_column=Column(Text, nullable=False))  # JSON: what the message is re-rendered from
    created_at: datetime = Field(sa_type=UTCDateTime)


@dataclass(frozen=True)
class Ref:
    id: int
    key_id: str
    channel: str
    ts: str
    kind: str
    context: dict[str, Any]


def _changed(key: ApiKey | None) -> bool:
    return key is not None and (key.revoked_at is not None or key.rotated_to is not None)


class Cards:
    def __init__(self, db: Database, audit: AuditLog):
        self.db = db
        self.audit = audit
        audit.after_append.append(self._update_cards)

    def keep(self, key_ids: Sequence[str], *, channel: str, ts: str, kind: str, context: dict[str, Any]) -> int:
        """Remember that the message ``(channel, ts)`` shows ``key_ids``; returns how many of those keys
        changed meanwhile (their update is queued now)."""
        queued = 0
        with self.db.write() as session:
            for key_id in dict.fromkeys(key_ids):
                ref = MessageRef(key_id=key_id, channel=channel, ts=ts, kind=kind,
                                 context=json.dumps(context, sort_keys=True), created_at=utcnow())
                session.add(ref)
                session.flush()
                # Read under a share lock (PostgreSQL): a revocation committing meanwhile either waits for
                # this reference (and queues its update) or is seen here; never neither.
                key = session.get(ApiKey, key_id, with_for_update={"read": True} if self.db.dialect == "postgresql"
                                  else None)
                if _changed(key):
                    self._enqueue(session, ref.id, key_id, channel)
                    queued += 1
        return queued

    def get(self, ref_id: int) -> Ref | None:
        with self.db.read() as session:
            row = session.get(MessageRef, ref_id)
        if row is None:
            return None
        return Ref(row.id, row.key_id, row.channel, row.ts, row.kind, json.loads(row.context))

    def of_key(self, key_id: str) -> list[Ref]:
        with self.db.read() as session:
            rows = list(session.scalars(select(MessageRef).where(MessageRef.key_id == key_id).order_by(MessageRef.id)))
        return [Ref(r.id, r.key_id, r.channel, r.ts, r.kind, json.loads(r.context)) for r in rows]

    def _enqueue(self, session: Session, ref_id: int, key_id: str, channel: str) -> None:
        self.audit.outbox.enqueue(session, topic=CARD_TOPIC, channel=channel, payload={"ref": ref_id, "key_id": key_id})

    def _update_cards(self, session: Session, appended: Sequence[Appended]) -> None:
        """One update per message (a GitHub alert's post may show twenty keys revoked together): the
        message is rendered again from all it shows."""
        key_ids = sorted({e.key_id for e in appended if e.action in UPDATED_BY and e.key_id})
        queued: set[tuple[str, str]] = set()
        for start in range(0, len(key_ids), 500):
            for ref_id, key_id, channel, ts in session.execute(
                    select(MessageRef.id, MessageRef.key_id, MessageRef.channel, MessageRef.ts)
                    .where(MessageRef.key_id.in_(key_ids[start:start + 500])).order_by(MessageRef.id)):
                if (channel, ts) not in queued:
                    queued.add((channel, ts))
                    self._enqueue(session, ref_id, key_id, channel)
