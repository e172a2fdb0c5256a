"""Idempotency receipts: remember that a one-time request (a Slack click, an event) was handled."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, Session, SQLModel

from .db import Database
from .keyformat import digest
from .models import UTCDateTime
from .timeutil import utcnow


class Receipt(SQLModel, table=True):
    __tablename__ = "receipts"

    id: str = Field(primary_key=True, max_length=64)  # SHA-256 of the request's identity
    at: datetime = Field(sa_type=UTCDateTime)


class Receipts:
    def __init__(self, db: Database):
        self.db = db

    def first_use(self, identity: str, session: Session | None = None) -> bool:
        """True the first time ``identity`` is seen, False on every later call (atomically).

        With ``session``, the receipt is part of the caller's write transaction: it exists only if
        that transaction commits, so a failure after it leaves the request unhandled (and retryable)."""
        if session is None:
            with self.db.write() as own:
                return self.first_use(identity, own)
        # RETURNING, not rowcount: drivers disagree on rowcount for INSERT … ON CONFLICT DO NOTHING.
        inserted = session.execute(
            self.db.insert(Receipt).values(id=digest(identity), at=utcnow())
            .on_conflict_do_nothing(index_elements=["id"]).returning(Receipt.id)
        ).first()
        return inserted is not None

    def first_uses(self, identities: list[str], session: Session, *, chunk: int = 500) -> set[str]:
        """Of ``identities``, those seen for the first time now (one INSERT … ON CONFLICT DO NOTHING
        per ``chunk``), inside the caller's write transaction as with ``first_use``."""
        by_id = {digest(identity): identity for identity in identities}
        new: set[str] = set()
        ids = list(by_id)
        now = utcnow()
        for start in range(0, len(ids), chunk):
            rows = [{"id": receipt_id, "at": now} for receipt_id in ids[start:start + chunk]]
            inserted = session.execute(
                self.db.insert(Receipt).values(rows).on_conflict_do_nothing(index_elements=["id"]).returning(Receipt.id)
            ).scalars()
            new.update(by_id[receipt_id] for receipt_id in inserted)
        return new
