"""Use after revocation: every presentation of a revoked key is counted per key, with its last
time. The first one after revocation, and then at most one per key per hour, is recorded as a
``key.used_after_revoke`` audit event (which also queues the audit-channel alert).

Valid keys never come here, so their verification is not slowed down.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlmodel import Field, SQLModel

from .audit import Action, AuditLog, EventInput
from .db import Database
from .models import ApiKey, UTCDateTime
from .timeutil import iso

ALERT_INTERVAL = timedelta(hours=1)


class RevokedKeyUse(SQLModel, table=True):
    __tablename__ = "revoked_key_uses"

    key_id: str = Field(primary_key=True, max_length=40)
    uses: int = 0
    first_at: datetime = Field(sa_type=UTCDateTime)
    last_at: datetime = Field(sa_type=UTCDateTime)
    last_alert_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RevokedUseCounter:
    def __init__(self, db: Database, audit: AuditLog):
        self.db = db
        self.audit = audit

    def record(self, key: ApiKey, now: datetime, *, via: str) -> bool:
        """Count one presentation of revoked ``key``; True when it raised an alert."""
        table = RevokedKeyUse.__table__
        with self.db.write() as session:
            stmt = self.db.insert(RevokedKeyUse).values(key_id=key.id, uses=1, first_at=now, last_at=now)
            uses = session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["key_id"],
                    set_={"uses": table.c.uses + 1, "last_at": stmt.excluded.last_at},
                ).returning(table.c.uses)
            ).scalar_one()
            # One caller wins the right to alert: a conditional UPDATE, atomic on both databases.
            won = session.execute(
                update(RevokedKeyUse)
                .where(RevokedKeyUse.key_id == key.id,
                       or_(RevokedKeyUse.last_alert_at.is_(None), RevokedKeyUse.last_alert_at <= now - ALERT_INTERVAL))
                .values(last_alert_at=now)
                .returning(RevokedKeyUse.key_id)
            ).first()
            if won is None:
                return False
            first_at = session.get(RevokedKeyUse, key.id).first_at
            self.audit.append(session, EventInput(
                actor="apikeys", action=Action.KEY_USED_AFTER_REVOKE, key_id=key.id,
                details={"name": key.name, "key": key.masked, "owner": key.owner, "uses": uses,
                         "first_at": iso(first_at), "last_at": iso(now), "revoked_at": iso(key.revoked_at),
                         "revoked_by": key.revoked_by, "via": str(via)},
            ), at=now)
            return True

    def get(self, key_id: str) -> RevokedKeyUse | None:
        with self.db.read() as session:
            return session.get(RevokedKeyUse, key_id)
