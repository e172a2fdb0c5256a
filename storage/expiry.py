"""The expiry digest: keys ending within 14, 3 and 1 days, told once per key and threshold.

``send`` finds the active keys that end within the largest threshold; for each, the nearest
threshold it is inside (a key with two days left: 3) is claimed with ``INSERT … ON CONFLICT DO
NOTHING`` together with every larger one (so a key already inside several gets one post, for the
nearest, and never a later one for a larger threshold). Claims and posts are one transaction: one
post per channel (the owner's, else the audit channel) queued in the outbox, so a Slack outage
delays the digest and never loses it, and two replicas (or the CLI beside the server) running it at
once post each key once: the second finds every claim taken.

``due`` says whether today's scheduled digest is still to send (``APIKEYS_EXPIRY_DIGEST_HOUR``,
UTC): a receipt per day, taken in the same transaction as the sending, so a server that was down at
that hour sends it when it comes back, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import Field, SQLModel

from .audit import AuditLog
from .db import Database
from .models import ApiKey, UTCDateTime
from .owners import OwnerService
from .timeutil import utcnow

THRESHOLDS = (1, 3, 14)  # days
EXPIRY_TOPIC = "expiry"
MAX_PER_POST = 40


class ExpiryNotice(SQLModel, table=True):
    __tablename__ = "expiry_notices"

    key_id: str = Field(primary_key=True, max_length=40)
    threshold_days: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    sent_at: datetime = Field(sa_type=UTCDateTime)


@dataclass(frozen=True)
class Notice:
    key_id: str
    threshold_days: int
    channel: str


def nearest(remaining: timedelta) -> int | None:
    """The smallest threshold ``remaining`` is inside, or None when it is inside none."""
    return next((days for days in THRESHOLDS if remaining <= timedelta(days=days)), None)


class ExpiryDigest:
    def __init__(self, db: Database, audit: AuditLog, owners: OwnerService):
        self.db = db
        self.audit = audit
        self.owners = owners

    def send(self, *, now: datetime | None = None, fallback_channel: str | None = None,
             scheduled_for: str | None = None) -> list[Notice] | None:
        """Queue the digest now; returns the notices sent (None: ``scheduled_for``'s digest was sent already)."""
        now = now or utcnow()
        fallback = fallback_channel or self.audit.notify_channel
        horizon = now + timedelta(days=max(THRESHOLDS))
        with self.db.write() as session:
            if scheduled_for is not None and not self.audit.receipts.first_use(f"expiry-digest|{scheduled_for}", session):
                return None
            # Only the expiry range goes to the database, so that its index is the one used (SQLite, with no
            # statistics, would otherwise walk every unrevoked key: 0.5 s at a million); revoked and rotated
            # keys (a rotated key ends on purpose, and its owners were told so at the rotation) are few here.
            keys = [(key_id, owner, expires_at) for key_id, owner, expires_at, revoked_at, rotated_to in session.execute(
                select(ApiKey.id, ApiKey.owner, ApiKey.expires_at, ApiKey.revoked_at, ApiKey.rotated_to)
                .where(ApiKey.expires_at > now, ApiKey.expires_at <= horizon)
                .order_by(ApiKey.expires_at, ApiKey.id))
                if revoked_at is None and rotated_to is None]
            channels = self.owners.channels(session, [owner for _, owner, _ in keys])
            notices: list[Notice] = []
            for key_id, owner, expires_at in keys:
                channel = channels.get(owner) or fallback
                if not channel:
                    continue  # nowhere to tell (Slack off): nothing is claimed, so it is told once there is
                days = nearest(expires_at - now)
                claims = [{"key_id": key_id, "threshold_days": t, "sent_at": now} for t in THRESHOLDS if t >= days]
                won = set(session.execute(
                    self.db.insert(ExpiryNotice).values(claims)
                    .on_conflict_do_nothing(index_elements=["key_id", "threshold_days"])
                    .returning(ExpiryNotice.threshold_days)).scalars())
                if days in won:  # else: told for this threshold already (or for a nearer one)
                    notices.append(Notice(key_id, days, channel))
            by_channel: dict[str, list[Notice]] = {}
            for notice in notices:
                by_channel.setdefault(notice.channel, []).append(notice)
            for channel, items in by_channel.items():
                for start in range(0, len(items), MAX_PER_POST):
                    self.audit.outbox.enqueue(session, topic=EXPIRY_TOPIC, channel=channel, payload={
                        "at": now.isoformat(), "keys": [[n.key_id, n.threshold_days] for n in items[start:start + MAX_PER_POST]]})
            return notices

    def scheduled(self, *, hour: int, now: datetime | None = None) -> list[Notice] | None:
        """Today's digest, when it is ``hour`` (UTC) or later and it was not sent today."""
        now = now or utcnow()
        if now.hour < hour:
            return None
        return self.send(now=now, scheduled_for=now.date().isoformat())
