"""Use after revocation: every presentation of a revoked key is counted per key, with its last
time. The first one after revocation, and then at most one per key per hour, is recorded as a
``key.used_after_revoke`` audit event (which also queues the audit-channel alert).

Valid keys never come here, so their verification is not slowed down.
"""

from __future__ import annotations

import logging
import multiprocessing.util
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
    count of presentations with the first and last time. The writer takes everything pending at once
    and writes the revoked keys' presentations first (each key in its own transaction, so one that
    fails does not undo, or count twice, the others), then the last uses in key order, a few hundred a
    transaction (rows locked in one order, briefly: no deadlock between workers, no long wait for a
    revocation). A write that fails (the database can be read but not written) is logged at most once
    a minute; a revoked key's presentations are put back and tried again a second later, last uses are
    dropped (the next use records them). ``flush`` waits for everything handed over so far; the store's
    ``close`` flushes and stops the thread, and so does the process's end — the interpreter's exit and
    a ``multiprocessing`` worker's (granian's workers are such processes, which skip ``atexit``).

    What is lost, and when: a process killed outright (SIGKILL, a crash) loses the records it had not
    written: the writer starts at once, so that is the last moments' records, or more while the
    database cannot be written. That never changes a check's answer; it can lose presentations of a
    revoked key from its count, and the alert when they were its first.
    """

    RETRY_AFTER = 1.0
    MAX_PENDING = 100_000  # keys; beyond it new last uses are dropped (a revoked key's use never is)
    USES_PER_TRANSACTION = 200

    def __init__(self, write_uses, write_revoked):
        self._write_uses = write_uses  # ([(key_id, when), ...] in key order): one transaction
        self._write_revoked = write_revoked  # (PendingRevokedUse): one transaction
        self._reset()
        self._last_complaint = -60.0
        _RECORDERS.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._uses: dict[str, datetime] = {}
        self._revoked: dict[str, PendingRevokedUse] = {}
        self._handed = 0  # records handed over
        self._written = 0  # of them, written (or given up: last uses whose write failed)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._finalizer = None

    # -- the request's side: no I/O ------------------------------------------------------------
    def used(self, key_id: str, now: datetime) -> None:
        with self._lock:
            if key_id not in self._uses and len(self._uses) >= self.MAX_PENDING:
                return
            self._uses[key_id] = now
            self._hand_over()

    def revoked_use(self, key: ApiKey, now: datetime, *, via: str) -> None:
        with self._lock:
            self._pend_revoked(PendingRevokedUse(key, 1, now, now, str(via)))
            self._hand_over()

    def _pend_revoked(self, pending: "PendingRevokedUse") -> None:
        """Add ``pending`` to what waits for the writer, merged with that key's (the lock held)."""
        waiting = self._revoked.get(pending.key.id)
        self._revoked[pending.key.id] = pending if waiting is None else waiting.merged(pending)

    def _hand_over(self) -> None:
        self._handed += 1
        if self._thread is None or not self._thread.is_alive():  # the first record, or a writer that died
            self._stopping = False
            _RECORDERS.add(self)
            self._thread = threading.Thread(target=self._run, name="apikeys-use-recorder", daemon=True)
            self._thread.start()
            # multiprocessing's finalizers run at the interpreter's exit and at a multiprocessing
            # worker's end (which skips atexit): one registration covers both.
            if self._finalizer is None:
                self._finalizer = multiprocessing.util.Finalize(None, _stop, args=(weakref.ref(self),),
                                                                exitpriority=100)
        self._changed.notify_all()

    # -- waiting for it -----------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record handed over before the call is written; False after ``timeout``."""
        with self._lock:
            target = self._handed
            return self._changed.wait_for(lambda: self._written >= target, timeout)

    def stop(self, timeout: float = 2.0) -> bool:
        """Flush, then end the writer thread; False (and a warning) when records were left unwritten."""
        flushed = self.flush(timeout)
        with self._lock:
            self._stopping = True
            self._changed.notify_all()
            thread = self._thread
            finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer.cancel()
        _RECORDERS.discard(self)  # a closed store's recorder is no longer waited for (``flush_all``)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if not flushed:
            log.warning("a verification's records (last uses, or a revoked key's uses) were left unwritten: "
                        "the database could not be written within %g s", timeout)
        return flushed

    # -- the writer ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                self._changed.wait_for(lambda: self._uses or self._revoked or self._stopping)
                if self._stopping:  # ``stop`` flushed what it could (and warned of the rest)
                    self._uses, self._revoked = {}, {}
                    self._written = self._handed
                    self._thread = None
                    self._changed.notify_all()
                    return
                uses, self._uses = self._uses, {}
                revoked, self._revoked = self._revoked, {}
                handed = self._handed
            left = self._write(uses, revoked)
            with self._lock:
                for pending in left.values():  # put back, merged with any since
                    self._pend_revoked(pending)
                if not left:
                    self._written = handed
                    self._changed.notify_all()
                else:  # a second before the next try (``stop`` cuts it short)
                    self._changed.wait_for(lambda: self._stopping, self.RETRY_AFTER)

    def _write(self, uses: dict[str, datetime], revoked: dict[str, "PendingRevokedUse"]) -> dict:
        """Write one batch; the revoked keys' presentations that could not be written."""
        left = {}
        failure = None
        for key_id, pending in revoked.items():
            try:
                self._write_revoked(pending)
            except Exception as exc:  # noqa: BLE001 - the writer must outlive any failure; it is logged
                left[key_id], failure = pending, exc
        ordered = sorted(uses.items())
        for start in range(0, len(ordered), self.USES_PER_TRANSACTION):
            try:
                self._write_uses(ordered[start:start + self.USES_PER_TRANSACTION])
            except Exception as exc:  # noqa: BLE001 - dropped: the key's next use records it
                failure = exc
        if failure is not None:
            moment = time.monotonic()
            if moment - self._last_complaint >= 60:
                self._last_complaint = moment
                log.warning("a verification's record (last use, or a revoked key's use) could not be written: %s; "
                            "the answer was given anyway", type(getattr(failure, "orig", None) or failure).__name__)
        return left


@dataclass
class PendingRevokedUse:
    key: ApiKey
    uses: int
    first_at: datetime
    last_at: datetime
    via: str

    def merged(self, other: "PendingRevokedUse") -> "PendingRevokedUse":
        """Both counts together, in either order: the via is the last presentation's."""
        last = other if other.last_at >= self.last_at else self
        return PendingRevokedUse(self.key, self.uses + other.uses, min(self.first_at, other.first_at),
                                 last.last_at, last.via)


_RECORDERS: "weakref.WeakSet[UseRecorder]" = weakref.WeakSet()


def _stop(recorder_ref) -> None:
    recorder = recorder_ref()
    if recorder is not None:
        recorder.stop(timeout=2.0)


def _after_fork() -> None:  # a forked worker starts with no writer thread and a lock nobody holds
    for recorder in list(_RECORDERS):
        recorder._reset()


def flush_all(timeout: float = 10.0) -> bool:
    """Wait for every recorder in this process (every open store's) to write what it was handed."""
    deadline = time.monotonic() + timeout
    return all([recorder.flush(max(0.0, deadline - time.monotonic())) for recorder in list(_RECORDERS)])


os.register_at_fork(after_in_child=_after_fork)
