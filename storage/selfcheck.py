"""The server's look at itself: what a database owner changed since the last look.

``SelfCheck.run`` (every ``APIKEYS_SELF_CHECK_INTERVAL`` seconds, in one process per installation:
``InstallationLock``) checks, in this order:

1. the permanence triggers: each present and enabled (``integrity.trigger_problems``);
2. entries past the newest checkpoint (written by someone other than a signing apikeys): the tamper
   alert is appended at once (``AuditLog.seal``), as the next append would;
3. the entries appended since the last clean look: hashes, links and signed checkpoints;
4. keys the log says were revoked that the table says are not: revoked again from the log's entry
   (``key.revocation_restored``, posted);
5. rows that skipped the log: keys without ``key.created``, admins without a grant.

Each new finding is logged as an error and appended as one ``audit.tamper_detected`` entry (posted
to the audit channel, counted in ``apikeys_tamper_detected_total``); a finding already reported is
not reported again while it stays (it is again if it goes away and comes back).
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, text

from .audit import NOT_OURS, Action, AuditLog, EventInput, Resume
from .db import Database
from .integrity import SELF_CHECK_ACTOR, restore_revocations, table_problems, trigger_problems
from .models import AuditEvent

log = logging.getLogger("apikeys.selfcheck")
LOCK_ID = 7262312  # PostgreSQL advisory lock: one self-checking process per installation


@dataclass
class Outcome:
    findings: list[str] = field(default_factory=list)  # everything wrong now
    alerted: list[str] = field(default_factory=list)   # what this run reported (new since the last)
    restored: list[tuple[str, int]] = field(default_factory=list)  # (key id, entry id) revoked again
    sealed: bool = False                                # a tamper alert for unvouched entries was appended


class SelfCheck:
    def __init__(self, db: Database, audit: AuditLog, *, public_key: str | None = None):
        self.db = db
        self.audit = audit
        self.public_key = public_key
        self._resume: Resume | None = None
        self._reported: set[str] = set()

    FULL_WALK_EVERY = 60  # runs: an edit to an entry walked before is found within this many intervals

    def run(self) -> Outcome:
        """Every check runs, whatever another one met: a check that fails (a row a database owner made
        to break it) is itself a finding, never the end of the self-check."""
        outcome = Outcome()
        self._runs = getattr(self, "_runs", 0) + 1
        if self._runs % self.FULL_WALK_EVERY == 0:
            self._resume = None  # walk the whole log again now and then, not only what is new

        def phase(name: str, check) -> None:
            try:
                check()
            except Exception as exc:  # reported as a finding, and the next check runs
                outcome.findings.append(f"the self-check's {name} could not run ({type(exc).__name__}): a row "
                                        "apikeys could not have written may be in the way; run 'apikeys audit --verify'")

        phase("trigger check", lambda: outcome.findings.extend(str(p) for p in trigger_problems(self.db)))

        def seal() -> None:
            outcome.sealed = self.audit.seal() is not None

        def walk() -> None:
            report = self.audit.verification(self.public_key, resume=self._resume)
            if report.problem is None:
                self._resume = report.resume
                return
            self._resume = None  # a break: walk from the start next time (the break may be repaired)
            finding = f"the audit log: {report.problem}"
            outcome.findings.append(finding)
            if NOT_OURS in report.problem.problem and self._alerted_at_append(report.problem.entry_id):
                self._reported.add(finding)  # the append (or the seal above) that found it has told the channel

        def restore() -> None:
            outcome.restored = restore_revocations(self.db, self.audit)

        phase("seal", seal)
        phase("walk of the log", walk)
        phase("restore of revocations", restore)
        every_key = self._runs % self.FULL_WALK_EVERY in (0, 1)  # the first run, and now and then: key by key
        phase("table check", lambda: outcome.findings.extend(
            str(p) for p in table_problems(self.db, every_key=every_key)))
        for finding in outcome.findings:
            if finding in self._reported:
                continue
            log.error("self-check: tamper detected: %s", finding)
            self.audit.record(EventInput(actor=SELF_CHECK_ACTOR, action=Action.TAMPER_DETECTED,
                                         details={"problem": finding}))
            outcome.alerted.append(finding)
        for key_id, entry_id in outcome.restored:
            log.error("self-check: key %s was valid again although audit entry %s revoked it; revoked again",
                      key_id, entry_id)
        self._reported = set(outcome.findings)
        return outcome

    def _alerted_at_append(self, first: int) -> bool:
        """Whether a tamper alert names unvouched entries from ``first`` (details are canonical JSON)."""
        with self.db.read() as session:
            return session.execute(
                select(AuditEvent.id).where(AuditEvent.action == Action.TAMPER_DETECTED.value,
                                            AuditEvent.details.like(f'{{"first":{int(first)},%'))
                .limit(1)).first() is not None


class InstallationLock:
    """Held by at most one process of an installation at a time: a PostgreSQL session advisory lock
    on a connection of its own (released if that connection or process dies), or, on SQLite, an
    exclusive ``flock`` on a file beside the database."""

    def __init__(self, db: Database):
        self.db = db
        self._conn = None
        self._file: int | None = None

    def acquire(self) -> bool:
        """True while this process holds it (tries to take it when it does not)."""
        if self.db.dialect == "postgresql":
            return self._acquire_postgres()
        return self._acquire_file()

    def _acquire_postgres(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except Exception:
                self.release()
        try:
            conn = self.db.write_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if conn.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": LOCK_ID}).scalar():
                self._conn = conn
                return True
            conn.close()
        except Exception:
            return False
        return False

    def _lock_path(self) -> Path:
        database = self.db.write_engine.url.database or ""
        return Path(f"{database}.selfcheck.lock") if database and database != ":memory:" else Path(
            f"/tmp/apikeys-selfcheck-{os.getuid()}.lock")

    def _acquire_file(self) -> bool:
        if self._file is not None:
            return True
        try:
            fd = os.open(self._lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._file = fd
        return True

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": LOCK_ID})
            except Exception:
                pass
            try:
                self._conn.invalidate()  # closed for real, not back to the pool holding a session lock
                self._conn.close()
            except Exception:
                pass
            self._conn = None
        if self._file is not None:
            os.close(self._file)
            self._file = None
