"""Owners' channels: where the people behind an owner (``payments-team``) are told what happens to
their keys.

``apikeys owners set OWNER --channel C…`` stores the channel (audited). From then on, every entry
about one of the owner's keys that its people must hear of (revoked, rotated, found leaked,
presented after revocation) queues one post to that channel in the transaction that appends the
entries (``AuditLog.after_append``): the post exists exactly when the entries do, and it is
delivered, retried and never doubled by the outbox like every other post. The expiry digest
(``storage.expiry``) uses the same channels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlmodel import Field, Session, SQLModel

from .audit import Action, Appended, AuditLog, EventInput
from .db import Database
from .errors import InvalidInput
from .models import UTCDateTime
from .timeutil import utcnow
from .validation import check_actor, check_owner

CHANNEL_RE = re.compile(r"^[CGD][A-Z0-9]{2,31}$")
OWNER_TOPIC = "owner"
# What an owner's channel hears of, as it is appended.
TOLD = frozenset({Action.KEY_REVOKED, Action.KEY_ROTATED, Action.KEY_LEAKED, Action.KEY_USED_AFTER_REVOKE})


def check_channel(channel: str) -> str:
    cleaned = (channel or "").strip()
    if not CHANNEL_RE.match(cleaned):
        raise InvalidInput(f"{channel!r} is not a Slack channel ID (they look like C012AB3CD; in Slack: the "
                           "channel's name, then About, at the bottom)")
    return cleaned


class OwnerChannel(SQLModel, table=True):
    __tablename__ = "owner_channels"

    owner: str = Field(primary_key=True, max_length=100)
    channel_id: str = Field(max_length=32)
    set_by: str = Field(max_length=200)
    set_at: datetime = Field(sa_type=UTCDateTime)


@dataclass(frozen=True)
class OwnerEntry:
    owner: str
    channel_id: str
    set_by: str
    set_at: datetime


class OwnerService:
    def __init__(self, db: Database, audit: AuditLog):
        self.db = db
        self.audit = audit
        audit.after_append.append(self._tell_owners)

    def set(self, owner: str, channel_id: str, *, actor: str) -> bool:
        """Point ``owner`` at ``channel_id``; False (nothing recorded) when it already pointed there."""
        owner, channel_id, actor = check_owner(owner), check_channel(channel_id), check_actor(actor)
        with self.db.write() as session:
            row = session.get(OwnerChannel, owner, with_for_update=True)
            if row is not None and row.channel_id == channel_id:
                return False
            previous = row.channel_id if row is not None else None
            now = utcnow()
            session.merge(OwnerChannel(owner=owner, channel_id=channel_id, set_by=actor, set_at=now))
            self.audit.append(session, EventInput(actor=actor, action=Action.OWNER_CHANNEL_SET, details={
                "owner": owner, "channel_id": channel_id, "previous_channel_id": previous}), at=now)
            return True

    def remove(self, owner: str, *, actor: str) -> None:
        owner, actor = check_owner(owner), check_actor(actor)
        with self.db.write() as session:
            row = session.get(OwnerChannel, owner, with_for_update=True)
            if row is None:
                raise InvalidInput(f"{owner} has no channel set (`apikeys owners list` shows them)")
            session.execute(delete(OwnerChannel).where(OwnerChannel.owner == owner))
            self.audit.append(session, EventInput(actor=actor, action=Action.OWNER_CHANNEL_REMOVED, details={
                "owner": owner, "channel_id": row.channel_id}))

    def list(self) -> list[OwnerEntry]:
        with self.db.read() as session:
            return [OwnerEntry(r.owner, r.channel_id, r.set_by, r.set_at)
                    for r in session.scalars(select(OwnerChannel).order_by(OwnerChannel.owner))]

    def channels(self, session: Session, owners: Sequence[str]) -> dict[str, str]:
        """``{owner: channel}`` for those of ``owners`` that have one (inside the caller's transaction)."""
        wanted = sorted(set(owners))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), 500):
            found.update(session.execute(select(OwnerChannel.owner, OwnerChannel.channel_id)
                                         .where(OwnerChannel.owner.in_(wanted[start:start + 500]))).all())
        return found

    def _tell_owners(self, session: Session, appended: Sequence[Appended]) -> None:
        """One post per owner's channel for the entries of this append its people must hear of."""
        by_owner: dict[str, list[int]] = {}
        for entry in appended:
            owner = entry.details.get("owner")
            if entry.action in TOLD and isinstance(owner, str):
                by_owner.setdefault(owner, []).append(entry.id)
        if not by_owner:
            return
        for owner, channel in self.channels(session, list(by_owner)).items():
            if channel == self.audit.notify_channel:
                continue  # the audit channel's own post already tells them
            ids = by_owner[owner]
            self.audit.outbox.enqueue(session, topic=OWNER_TOPIC, channel=channel,
                                      payload={"owner": owner, "first": ids[0], "last": ids[-1], "ids": ids[:500]})
