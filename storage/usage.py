"""Use after revocation: every presentation of a revoked key is counted per key, with its last
time. The first one after revocation, and then at most one per key per hour, is recorded as a
``key.used_after_revoke`` audit event (which also queues the audit-channel alert).

Valid keys never come here, so their verification is not slowed down.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlmodel import Field, SQLModel

from .audit import Action, AuditLog, EventInput
from .db import Database
from .models import ApiKey, UTCDateTime
from .timeutil import iso

ALERT_INTERVAL = timedelta(hours=1)

log = logging.getLogger(__name__)


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

    def record(self, key: ApiKey, now: datetime, *, via: str, uses: int = 1, first_at: datetime | None = None) -> bool:
        """Count ``uses`` presentations of revoked ``key`` (the first at ``first_at``, the last at
        ``now``); True when it raised an alert."""
        table = RevokedKeyUse.__table__
        with self.db.write() as session:
            stmt = self.db.insert(RevokedKeyUse).values(key_id=key.id, uses=uses, first_at=first_at or now, last_at=now)
            uses = session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["key_id"],
                    set_={"uses": table.c.uses + stmt.excluded.uses,
                          "last_at": stmt.excluded.last_at},
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


class UseRecorder:
    """A verification's bookkeeping (a key's last use, a revoked key's presentations), written by a
    thread of its own so that no check waits for a write: the request hands its record over (a dict
    update under a lock) and answers.

    Records are coalesced per key until the writer takes them: a key's latest use; a revoked key's
    count of presentations with the first and last time. The writer takes everything pending at
    once and writes it in one transaction, so a burst of checks costs one write, not one per check.
    A write that fails (the database can be read but not written) is logged at most once a minute;
    revoked keys' presentations are put back and tried again a second later, last uses are dropped
    (the next use records them). ``flush`` waits for everything handed over so far (tests, and the
    interpreter's exit, which flushes for up to two seconds).

    What is lost, and when: a process killed outright loses the records it had not written, at most
    the last moment's (the writer starts as soon as a record arrives). That never changes a check's
    answer; it can delay the count and the alert of a revoked key's use to its next presentation.
    """

    RETRY_AFTER = 1.0
    MAX_PENDING = 100_000  # keys; beyond it new last uses are dropped (a revoked key's use never is)

    def __init__(self, write_uses, write_revoked):
        self._write_uses = write_uses  # (session, {key_id: when})
        self._write_revoked = write_revoked  # ({key_id: PendingRevokedUse}) -> None, one transaction
        self._reset()
        self._last_complaint = -60.0
        _RECORDERS.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._uses: dict[str, datetime] = {}
        self._revoked: dict[str, PendingRevokedUse] = {}
        self._handed = 0  # records handed over
        self._written = 0  # of them, written (or given up: a last use that failed)
        self._thread: threading.Thread | None = None

    # -- the request's side: no I/O ------------------------------------------------------------
    def used(self, key_id: str, now: datetime) -> None:
        with self._lock:
            if key_id not in self._uses and len(self._uses) >= self.MAX_PENDING:
                return
            self._uses[key_id] = now
            self._hand_over()

    def revoked_use(self, key: ApiKey, now: datetime, *, via: str) -> None:
        with self._lock:
            pending = self._revoked.get(key.id)
            if pending is None:
                self._revoked[key.id] = PendingRevokedUse(key, 1, now, now, str(via))
            else:
                pending.uses += 1
                pending.last_at = max(pending.last_at, now)
                pending.via = str(via)
            self._hand_over()

    def _hand_over(self) -> None:
        self._handed += 1
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="apikeys-use-recorder", daemon=True)
            self._thread.start()
        self._changed.notify_all()

    # -- waiting for it -----------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record handed over before the call is written; False after ``timeout``."""
        with self._lock:
            target = self._handed
            return self._changed.wait_for(lambda: self._written >= target, timeout)

    # -- the writer ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                self._changed.wait_for(lambda: self._uses or self._revoked)
                uses, self._uses = self._uses, {}
                revoked, self._revoked = self._revoked, {}
                handed = self._handed
            failed = self._write(uses, revoked)
            with self._lock:
                if failed:  # put the revoked keys' presentations back, merged with any since
                    for key_id, pending in revoked.items():
                        since = self._revoked.get(key_id)
                        self._revoked[key_id] = pending if since is None else pending.merged(since)
                else:
                    self._written = handed
                    self._changed.notify_all()
            if failed:
                threading.Event().wait(self.RETRY_AFTER)

    def _write(self, uses: dict[str, datetime], revoked: dict[str, "PendingRevokedUse"]) -> bool:
        """Write one batch; True when it failed."""
        try:
            if uses:
                self._write_uses(uses)
            if revoked:
                self._write_revoked(revoked)
            return False
        except Exception as exc:  # noqa: BLE001 - the writer must outlive any failure; it is logged
            moment = time.monotonic()
            if moment - self._last_complaint >= 60:
                self._last_complaint = moment
                log.warning("a verification's record (last use, or a revoked key's use) could not be written: %s; "
                            "the answer was given anyway", type(getattr(exc, "orig", None) or exc).__name__)
            return True


@dataclass
class PendingRevokedUse:
    key: ApiKey
    uses: int
    first_at: datetime
    last_at: datetime
    via: str

    def merged(self, later: "PendingRevokedUse") -> "PendingRevokedUse":
        return PendingRevokedUse(self.key, self.uses + later.uses, min(self.first_at, later.first_at),
                                 max(self.last_at, later.last_at), later.via)


_RECORDERS: "weakref.WeakSet[UseRecorder]" = weakref.WeakSet()


def _after_fork() -> None:  # a forked worker starts with no writer thread and a lock nobody holds
    for recorder in list(_RECORDERS):
        recorder._reset()


def flush_all(timeout: float = 10.0) -> bool:
    """Wait for every recorder in this process (every open store's) to write what it was handed."""
    deadline = time.monotonic() + timeout
    return all([recorder.flush(max(0.0, deadline - time.monotonic())) for recorder in list(_RECORDERS)])


def _flush_at_exit() -> None:
    flush_all(timeout=2.0)


os.register_at_fork(after_in_child=_after_fork)
atexit.register(_flush_at_exit)
