"""A transactional outbox: notifications written in the same transaction as what they report.

A row is claimed by one delivering process at a time (a lease; ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, the write lock on SQLite), delivered, and marked done. A failed delivery is retried
with capped exponential backoff; a process that dies mid-delivery leaves a lease that expires,
after which any other process delivers the row. Nothing here knows about Slack: a row holds a
topic, a channel and a JSON payload that the delivering side renders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, Index, Text, event, func, insert, or_, select, update
from sqlmodel import Field, Session, SQLModel

from .db import Database
from .models import UTCDateTime
from .timeutil import utcnow

MAX_BACKOFF = timedelta(minutes=5)


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "delivered_at", "next_attempt_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    topic: str = Field(max_length=32)
    channel: str = Field(max_length=64)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    claimed_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    claimed_by: str | None = Field(default=None, max_length=64)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=500)


@dataclass(frozen=True)
class Claimed:
    id: int
    topic: str
    channel: str
    payload: dict[str, Any]
    attempts: int


def backoff(attempts: int) -> timedelta:
    """1 s, 2 s, 4 s … capped at five minutes."""
    return min(timedelta(seconds=2 ** min(attempts - 1, 16)), MAX_BACKOFF)


SENDING_LEASE = timedelta(minutes=5)


class Outbox:
    def __init__(self, db: Database):
        self.db = db
        self.on_commit: list = []  # callables run after a transaction that queued something commits

    def enqueue(self, session: Session, *, topic: str, channel: str, payload: dict[str, Any]) -> None:
        if self.on_commit:
            event.listen(session, "after_commit", self._committed, once=True)
        now = utcnow()
        session.execute(insert(OutboxMessage).values(
            created_at=now, topic=topic, channel=channel, payload=json.dumps(payload, sort_keys=True),
            attempts=0, next_attempt_at=now,
        ))

    def _committed(self, _session) -> None:
        for callback in self.on_commit:
            callback()

    def claim(self, worker: str, *, limit: int = 10, lease: timedelta = timedelta(seconds=60)) -> list[Claimed]:
        now = utcnow()
        with self.db.write() as session:
            query = (
                select(OutboxMessage)
                .where(OutboxMessage.delivered_at.is_(None), OutboxMessage.next_attempt_at <= now,
                       or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now))
                .order_by(OutboxMessage.id).limit(limit)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(session.scalars(query))
            if not rows:
                return []
            session.execute(
                update(OutboxMessage).where(OutboxMessage.id.in_([r.id for r in rows]))
                .values(claimed_until=now + lease, claimed_by=worker)
            )
            return [Claimed(r.id, r.topic, r.channel, json.loads(r.payload), r.attempts) for r in rows]

    def renew(self, message_id: int, worker: str, *, lease: timedelta = SENDING_LEASE) -> bool:
        """Hold ``message_id`` for ``lease``, right before sending it (longer than any one send, retries and
        429 waits included); False when the batch's lease ran out and another deliverer may have taken
        it: then this one must not send it, or it would go out twice."""
        now = utcnow()
        with self.db.write() as session:
            held = session.execute(
                update(OutboxMessage).where(OutboxMessage.id == message_id, OutboxMessage.claimed_by == worker,
                                            OutboxMessage.claimed_until >= now, OutboxMessage.delivered_at.is_(None))
                .values(claimed_until=now + lease).returning(OutboxMessage.id)).first()
        return held is not None

    def delivered(self, message_id: int, worker: str) -> None:
        with self.db.write() as session:
            session.execute(
                update(OutboxMessage).where(OutboxMessage.id == message_id, OutboxMessage.claimed_by == worker)
                .values(delivered_at=utcnow(), claimed_until=None)
            )

    def failed(self, message_id: int, worker: str, error: str, *, attempts: int) -> datetime:
        """Record a failed attempt; returns when the next attempt is due."""
        retry_at = utcnow() + backoff(attempts + 1)
        with self.db.write() as session:
            session.execute(
                update(OutboxMessage).where(OutboxMessage.id == message_id, OutboxMessage.claimed_by == worker)
                .values(attempts=attempts + 1, next_attempt_at=retry_at, claimed_until=None, last_error=error[:500])
            )
        return retry_at

    def pending(self) -> int:
        with self.db.read() as session:
            return session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.delivered_at.is_(None))
            ) or 0

    def backlog(self) -> tuple[int, datetime | None]:
        """How many notifications are not delivered yet, and when the oldest of them was queued."""
        with self.db.read() as session:
            count, oldest = session.execute(
                select(func.count(), func.min(OutboxMessage.created_at)).where(OutboxMessage.delivered_at.is_(None))
            ).one()
        return count or 0, oldest

    def delivery_state(self, topic: str, *, stuck_after: timedelta = timedelta(minutes=2),
                       ) -> tuple[datetime | None, int, datetime | None]:
        """Whether anything delivers ``topic``'s posts: when one was last delivered (None: never), and
        how many have waited longer than ``stuck_after``, since when (another topic's posts stuck on a
        channel the bot is not in say nothing about these)."""
        cutoff = utcnow() - stuck_after
        with self.db.read() as session:
            last = session.scalar(select(func.max(OutboxMessage.delivered_at)).where(OutboxMessage.topic == topic))
            waiting, since = session.execute(
                select(func.count(), func.min(OutboxMessage.created_at))
                .where(OutboxMessage.topic == topic, OutboxMessage.delivered_at.is_(None),
                       OutboxMessage.created_at < cutoff)).one()
        return last, waiting or 0, since

    def next_due(self) -> datetime | None:
        """When the earliest pending row not being delivered right now becomes due."""
        now = utcnow()
        with self.db.read() as session:
            return session.scalar(
                select(func.min(OutboxMessage.next_attempt_at)).where(
                    OutboxMessage.delivered_at.is_(None),
                    or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now))
            )
