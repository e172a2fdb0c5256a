"""The append-only, hash-chained audit log.

Entry ``n`` carries ``prev_hash`` (the hash of entry ``n-1``, or 64 zeros for the first) and
``hash = SHA-256(canonical JSON of id, at, actor, action, key_id, details, prev_hash)``.
A single head row names the newest entry; appending locks it (``FOR UPDATE`` on PostgreSQL,
the write lock on SQLite), so the chain stays linear however many writers there are.
Editing an entry breaks its hash; deleting one leaves a gap in the ids or a head that points
past the end. ``verify()`` finds the first such break.

That alone stops a careless edit, not someone who can write to the database and recompute the
chain. With a signing key (``storage.checkpoints``) each append also writes a signed checkpoint of
the head in the same transaction; an auditor who pins the public key then catches a recomputed or
swapped-in chain, and the audit channel's posts (each names the position and head hash it follows)
catch a rollback or truncation, even by someone who holds the key.
"""

from __future__ import annotations

import enum
import json
import logging
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

from sqlalchemy import Text, func, insert, select, type_coerce, update
from sqlmodel import Session

from . import checkpoints
from .checkpoints import Signer
from .db import BulkInsert, Database
from .errors import CorruptEntry
from .keyformat import digest
from .models import AuditCheckpoint, AuditEvent, AuditHead
from .outbox import Outbox
from .receipts import Receipts
from .redaction import _encodable, redact, redact_value
from .timeutil import utcnow

GENESIS_HASH = "0" * 64
HEAD_ID = 1


class Action(enum.StrEnum):
    KEY_CREATED = "key.created"
    KEY_REVOKED = "key.revoked"
    KEY_REVOKE_DENIED = "key.revoke_denied"
    KEY_ROTATE_DENIED = "key.rotate_denied"  # a Rotate Key refused (not an admin, stale, replayed)
    KEY_ROTATED = "key.rotated"          # a replacement created; the old key ends after its grace period
    KEY_SECRET_REVEALED = "key.secret_revealed"  # a rotation's one-time link was opened (the secret shown once)
    KEY_REVEAL_EXPIRED = "key.reveal_expired"    # a one-time link expired unviewed (its secret is gone)
    OWNER_CHANNEL_SET = "owner.channel_set"
    OWNER_CHANNEL_REMOVED = "owner.channel_removed"
    KEY_LEAKED = "key.leaked"
    KEY_USED_AFTER_REVOKE = "key.used_after_revoke"
    KEY_CHECKED = "key.checked"  # an operator checked a key by hand ('apikeys verify'): not a use, no alert
    ADMIN_ADDED = "admin.added"
    ADMIN_REMOVED = "admin.removed"
    TOKEN_CREATED = "token.created"  # an admin token of the management API (key_id holds the token's id)
    TOKEN_REVOKED = "token.revoked"
    COMMAND_DENIED = "command.denied"  # a state-changing slash command refused (a replayed request)
    # What apikeys found that someone else did to its tables (an entry it did not write, a guard
    # trigger gone, a revocation undone): the alert, in the log it protects.
    TAMPER_DETECTED = "audit.tamper_detected"
    KEY_REVOCATION_RESTORED = "key.revocation_restored"  # an un-revoked key revoked again from its entry
    SIGNING_STARTED = "audit.signing_started"  # the first checkpoint of a log that had entries without one


TAMPER_ACTOR = "apikeys"
log = logging.getLogger("apikeys.audit")


class Appended(NamedTuple):
    """An entry just appended, as the hooks that follow an append see it (``AuditLog.after_append``)."""

    id: int
    action: str
    key_id: str | None
    details: dict[str, Any]  # as stored (masked)


@dataclass(frozen=True)
class EventInput:
    actor: str
    action: str
    key_id: str | None = None
    details: dict[str, Any] | None = None


# Built once: ``json.dumps`` with options builds an encoder per call (a bulk create makes 100,000 of these).
canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode


def entry_time(at: datetime) -> str:
    """An entry's time as its hash covers it (and as ``export`` writes it)."""
    return at.isoformat(timespec="microseconds")


def entry_hash(*, id: int, at: datetime, actor: str, action: str, key_id: str | None, details: str, prev_hash: str) -> str:
    """The hash of a stored entry (``details`` as stored: canonical JSON)."""
    return _hash(id, entry_time(at), actor, action, key_id, json.loads(details), prev_hash)


def _hash(id: int, at: str, actor: str, action: str, key_id: str | None, details: Any, prev_hash: str) -> str:
    material = canonical_json({"id": id, "at": at, "actor": actor, "action": action, "key_id": key_id,
                               "details": details, "prev_hash": prev_hash})
    return digest(material)


@dataclass(frozen=True)
class ChainBreak:
    """The first place where the log does not agree: an entry, or the checkpoint at an entry."""

    entry_id: int
    problem: str
    checkpoint: bool = False

    def __str__(self) -> str:
        return f"{'checkpoint at audit entry' if self.checkpoint else 'audit entry'} {self.entry_id}: {self.problem}"


@dataclass(frozen=True)
class AuditReport:
    """What ``AuditLog.verification`` found: the first problem (or None) and what it covered."""

    problem: ChainBreak | None
    entries: int                 # the log's length
    checkpoints: int
    public_key: str | None       # the newest checkpoint's signer (base64 raw), for pinning
    signed_through: int | None   # the newest checkpoint's entry
    resume: "Resume | None" = None  # where a later walk may go on from (a clean report only)


class Resume(NamedTuple):
    """How far a clean walk got: the next entry, the hash it must link to, the newest checkpoint."""

    expected_id: int
    prev: str
    cp_prev: str
    newest: Any
    count: int
    signer: str | None


def _checkpoint_dict(cp) -> dict[str, Any]:
    return {"entry_id": cp.entry_id, "first_entry_id": cp.first_entry_id, "head_hash": cp.head_hash,
            "at": entry_time(cp.at), "public_key": cp.public_key,
            "prev_hash": cp.prev_hash, "signature": cp.signature, "hash": cp.hash}


def _stored_time(entry_id: int, value: Any) -> datetime:
    """An entry's ``at`` as read raw (text on SQLite, a datetime on PostgreSQL), parsed here so that a
    row whose time does not parse is named instead of failing the whole read."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise CorruptEntry(entry_id, "its time does not parse") from None
    return moment.replace(tzinfo=timezone.utc) if moment.utcoffset() is None else moment.astimezone(timezone.utc)


def _stored_details(entry_id: int, details: Any) -> Any:
    try:
        return json.loads(details)
    except (TypeError, ValueError):
        raise CorruptEntry(entry_id, "its details are not JSON") from None


def event_to_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": entry_time(event.at),  # as 'audit export' writes it, and as its hash covers it
        "actor": event.actor,
        "action": event.action,
        "key_id": event.key_id,
        "details": _stored_details(event.id, event.details),
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


AUDIT_TOPIC = "audit"
PROGRESS_EVERY = 2000  # entries between two progress reports of a walk of the log
# The channel of a post queued by a process that does not know the audit channel (the command line
# on a break-glass machine with DATABASE_URL only): the server that delivers it posts it to its own.
SERVER_AUDIT_CHANNEL = "@audit-channel"
_ENTRY_FIELDS = ("id", "at", "actor", "action", "key_id", "details", "prev_hash", "hash")


class _Appended(Sequence):
    """The entries an append wrote, as AuditEvent objects built only when asked for (a bulk create
    of 50,000 keys never asks)."""

    def __init__(self, rows: list[tuple]):
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [AuditEvent.model_construct(**dict(zip(_ENTRY_FIELDS, row, strict=True))) for row in self._rows[index]]
        return AuditEvent.model_construct(**dict(zip(_ENTRY_FIELDS, self._rows[index], strict=True)))


class AuditLog:
    """``notify_channel``: when set, every appended action also queues one post to that channel
    in the outbox (same transaction), naming the entries it covers."""

    def __init__(self, db: Database, notify_channel: str | None = None, signer: Signer | None = None):
        self.db = db
        self.notify_channel = notify_channel
        self.signer = signer
        self._bulk: BulkInsert | None = None
        self.outbox = Outbox(db)
        self.receipts = Receipts(db)
        # Called inside the append's transaction with the entries it wrote: what follows from them in
        # the same commit (an owner's channel told, the messages showing a key's buttons updated).
        self.after_append: list = []

    # -- writing (always inside the caller's write transaction) ---------------------------
    def append(self, session: Session, event: EventInput, *, at: datetime | None = None, notify: bool = True) -> AuditEvent:
        return self.append_many(session, [event], at=at, notify=notify)[0]

    def append_many(
        self, session: Session, events: Sequence[EventInput], *, at: datetime | None = None, notify: bool = True,
        seal: bool = False,
    ) -> Sequence[AuditEvent]:
        """Append entries as one action (one notification when a channel is configured). ``seal``:
        with no events, append only the tamper alert, if there is one to make (see ``seal``)."""
        if not events and not seal:
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
        newest_cp, alerts = None, 0
        if self.signer is not None:
            # The head row is locked: no append of ours can be between this read and our checkpoint.
            newest_cp = session.execute(select(AuditCheckpoint.entry_id, AuditCheckpoint.hash)
                                        .order_by(AuditCheckpoint.entry_id.desc()).limit(1)).first()
            alert = _unvouched_alert(newest_cp, last_id)
            if alert is not None:  # written first (its own post), before the entries it was found with
                events, alerts = [alert, *events], 1
        if not events:
            return []
        rows, appended = [], []
        at_text = entry_time(at)
        for offset, item in enumerate(events, start=1):
            # The log is permanent: whatever free text reaches it (a Slack field, a pasted note) is masked.
            masked = redact_value(item.details or {})
            details = canonical_json(masked)
            actor = redact(_encodable(item.actor))
            entry_id = last_id + offset
            # The hash of what is stored: the masked details object is exactly what the stored text
            # parses back to (canonical JSON both times), so it is hashed without a second parse.
            h = _hash(entry_id, at_text, actor, str(item.action), item.key_id, masked, prev)
            rows.append((entry_id, at, actor, str(item.action), item.key_id, details, prev, h))
            if self.after_append:
                appended.append(Appended(entry_id, str(item.action), item.key_id, masked))
            prev = h
        self._insert(session).execute(session, rows)
        session.execute(
            update(AuditHead).where(AuditHead.id == HEAD_ID).values(last_id=rows[-1][0], last_hash=prev)
        )
        if self.signer is not None:
            # The first checkpoint of a log adopts the entries written before signing was turned on
            # (and says so: the audit.signing_started entry above).
            first = rows[0][0] if newest_cp is not None else 1
            self._checkpoint(session, first, rows[-1][0], prev, at, newest_cp[1] if newest_cp else None)
        if self.notify_channel and alerts:  # the tamper alert is always posted, on its own
            self.outbox.enqueue(session, topic=AUDIT_TOPIC, channel=self.notify_channel,
                                payload={"first": rows[0][0], "last": rows[0][0]})
        if self.notify_channel and notify and len(rows) > alerts:
            self.outbox.enqueue(session, topic=AUDIT_TOPIC, channel=self.notify_channel,
                                payload={"first": rows[alerts][0], "last": rows[-1][0]})
        for hook in self.after_append:
            hook(session, appended)
        return _Appended(rows[alerts:] if not seal else rows)

    def _insert(self, session: Session) -> BulkInsert:
        if self._bulk is None:
            self._bulk = BulkInsert(AuditEvent.__table__, _ENTRY_FIELDS, session.get_bind().dialect)
        return self._bulk

    def _checkpoint(self, session: Session, first: int, entry_id: int, head_hash: str, at: datetime,
                    previous: str | None) -> None:
        """Sign the new head and the entries this transaction wrote (``first`` to ``entry_id``); the
        head row is locked, so checkpoints are as linear as the log."""
        fields = dict(first_entry_id=first, entry_id=entry_id, head_hash=head_hash, at=at,
                      public_key=self.signer.public_raw, prev_hash=previous or checkpoints.GENESIS)
        msg = checkpoints.message(**fields)
        signature = self.signer.sign(msg)
        session.execute(insert(AuditCheckpoint).values(**fields, signature=signature,
                                                       hash=checkpoints.checkpoint_hash(msg, signature)))

    def seal(self) -> AuditEvent | None:
        """With a signing key: if entries past the newest checkpoint exist (someone else wrote them),
        append the tamper alert now, as the next append would (the self-check calls this). Returns
        the alert, or None when every entry is vouched for."""
        if self.signer is None:
            return None
        with self.db.write() as session:
            appended = self.append_many(session, [], seal=True)
        return appended[0] if appended else None

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
            return _events(session, select(*_ENTRY_COLUMNS).where(AuditEvent.id >= first, AuditEvent.id <= last)
                           .order_by(AuditEvent.id))

    def tail(self, after_id: int, actions: Sequence[str], *, limit: int = 5000) -> list[tuple[int, str, str, str]]:
        """``(id, action, actor, details JSON)`` of the entries newer than ``after_id`` with one of
        ``actions``, oldest first, at most ``limit`` (for counting what the log holds incrementally)."""
        with self.db.read() as session:
            return [tuple(row) for row in session.execute(
                select(AuditEvent.id, AuditEvent.action, AuditEvent.actor, AuditEvent.details)
                .where(AuditEvent.id > after_id, AuditEvent.action.in_(list(actions)))
                .order_by(AuditEvent.id).limit(limit)
            )]

    # -- reading --------------------------------------------------------------------------
    def recent(self, *, limit: int = 100, key_id: str | None = None, before_id: int | None = None,
               after_id: int | None = None) -> list[AuditEvent]:
        """Newest first: the newest ``limit`` entries older than ``before_id``, or with ``after_id``
        the ``limit`` entries just newer than it (still returned newest first)."""
        query = select(*_ENTRY_COLUMNS)
        if key_id is not None:
            query = query.where(AuditEvent.key_id == key_id)
        if before_id is not None:
            query = query.where(AuditEvent.id < before_id)
        if after_id is not None:
            query = query.where(AuditEvent.id > after_id).order_by(AuditEvent.id).limit(limit)
            with self.db.read() as session:
                return list(reversed(_events(session, query)))
        with self.db.read() as session:
            return _events(session, query.order_by(AuditEvent.id.desc()).limit(limit))

    def oldest_first(self, *, limit: int | None = None) -> list[AuditEvent]:
        """The log oldest first; with ``limit``, the newest ``limit`` entries (still oldest first)."""
        if limit is None:
            with self.db.read() as session:
                return _events(session, select(*_ENTRY_COLUMNS).order_by(AuditEvent.id))
        return list(reversed(self.recent(limit=limit)))

    def verify(self, public_key: str | None = None) -> ChainBreak | None:
        """The first break in the log, or None when it is intact (see ``verification``)."""
        return self.verification(public_key).problem

    def verification(self, public_key: str | None = None, resume: "Resume | None" = None,
                     progress: Callable[[int, int], None] | None = None) -> AuditReport:
        """Walk the log and its checkpoints once, oldest first, in constant memory.

        Every entry's hash and link are recomputed; every checkpoint must sit on an entry, name
        that entry's hash, link to the checkpoint before it and be signed by one key. The newest
        checkpoint's signature is verified, which vouches for all the others (each signs the
        hash of the one before). ``public_key`` (base64 raw Ed25519, as pinned by an auditor):
        the checkpoints must be signed by it, and a log without checkpoints fails.

        ``resume``: the ``resume`` of an earlier clean report: only what was appended since is walked
        (the server's self-check; an edit to an older entry is found by a full walk).
        ``progress(done, total)``: called every PROGRESS_EVERY entries (the command line's bar)."""
        expected_id, prev = 1, GENESIS_HASH
        cp_prev, newest, count = checkpoints.GENESIS, None, 0
        signer = public_key
        signing_started = 0
        if resume is not None:
            expected_id, prev, cp_prev, newest, count, signer = resume
            signer = public_key or signer
        with self.db.read(snapshot=True) as session:  # SQLite read transactions are snapshots already
            head = session.execute(select(AuditHead.last_id, AuditHead.last_hash).where(AuditHead.id == HEAD_ID)).first()
            cps = _stream_checkpoints(session, after=newest.entry_id if newest else 0)
            cp = next(cps, None)

            def report(problem: ChainBreak | None) -> AuditReport:
                state = None
                if problem is None:
                    state = Resume(expected_id, prev, cp_prev, newest, count, signer)
                return AuditReport(problem, expected_id - 1, count, newest.public_key if newest else None,
                                   newest.entry_id if newest else None, state)

            entries = _stream(session, after=expected_id - 1)
            total = head.last_id if head else 0
            while True:
                if progress is not None and expected_id % PROGRESS_EVERY == 0:
                    progress(expected_id - 1, total)
                try:
                    event = next(entries, None)
                    if event is not None:
                        _stored_details(event.id, event.details)
                except CorruptEntry as exc:
                    return report(ChainBreak(exc.entry_id, f"{exc.problem} (the row was changed outside apikeys)"))
                if event is None:
                    break
                if event.id != expected_id:
                    return report(ChainBreak(expected_id, f"missing (deleted); the log jumps to entry {event.id}"))
                if event.prev_hash != prev:
                    return report(ChainBreak(event.id, "does not link to the entry before it (edited or reordered)"))
                recomputed = entry_hash(
                    id=event.id, at=event.at, actor=event.actor, action=event.action,
                    key_id=event.key_id, details=event.details, prev_hash=event.prev_hash,
                )
                if recomputed != event.hash:
                    return report(ChainBreak(event.id, "content does not match its hash (edited)"))
                if event.action == Action.SIGNING_STARTED.value:
                    if signing_started:  # only a log without any checkpoint is adopted: they were deleted
                        return report(ChainBreak(event.id, f"signing started again (it started at entry "
                                                           f"{signing_started}): every checkpoint before it was "
                                                           "deleted and the log signed from scratch"))
                    signing_started = event.id
                prev = event.hash
                expected_id += 1
                if cp is not None and cp.entry_id < event.id:
                    return report(ChainBreak(cp.entry_id, "names an entry the log does not have", checkpoint=True))
                if cp is not None and cp.entry_id == event.id:
                    since = newest.entry_id + 1 if newest else 1
                    problem = _checkpoint_problem(cp, event.hash, cp_prev, signer, since)
                    if problem:
                        return report(ChainBreak(cp.entry_id, problem, checkpoint=True))
                    # What it vouches for: its own transaction's entries (version 1: all since the last).
                    first = cp.first_entry_id if cp.first_entry_id is not None else since
                    if first > since:
                        return report(ChainBreak(since, NOT_OURS))
                    if first < since:
                        return report(ChainBreak(cp.entry_id, f"claims entries from {first}, which an earlier "
                                                              "checkpoint vouched for", checkpoint=True))
                    signer = signer or cp.public_key
                    cp_prev, newest, count = cp.hash, cp, count + 1
                    cp = next(cps, None)
            last_id = expected_id - 1
            if cp is not None:
                return report(ChainBreak(cp.entry_id, f"names an entry past the end of the log (entry {last_id}): "
                                                      "entries were deleted or the log rolled back", checkpoint=True))
        head_id, head_hash = head if head else (0, GENESIS_HASH)
        if head_id != last_id:
            if head_id > last_id:
                return report(ChainBreak(last_id + 1, f"missing (deleted); the log should end at entry {head_id}"))
            return report(ChainBreak(head_id + 1, "was added outside the audit log (the head does not know it)"))
        if head_hash != prev:
            return report(ChainBreak(last_id, "does not match the recorded head of the log (edited)"))
        if newest is not None:
            if not checkpoints.signature_valid(newest.public_key, _message_of(newest), newest.signature):
                return report(ChainBreak(newest.entry_id, "signature invalid (altered or forged)", checkpoint=True))
            if newest.entry_id != last_id:
                return report(ChainBreak(newest.entry_id + 1, NOT_OURS))
        elif public_key is not None and last_id:
            return report(ChainBreak(1, "not signed: the log has no checkpoints, and a public key was given"))
        return report(None)

    # -- export -----------------------------------------------------------------------------
    def export(self, since: int = 0, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Entries after ``since``, oldest first, each with its hash and the checkpoint that covers
        it (the first at or after it; None when none does yet), streamed in batches."""
        sent = 0
        with self.db.read(snapshot=True) as session:
            cps = _stream_checkpoints(session, after=since)
            cp = next(cps, None)
            for event in _stream(session, after=since):
                while cp is not None and cp.entry_id < event.id:
                    cp = next(cps, None)
                yield {"id": event.id, "at": entry_time(event.at), "actor": event.actor, "action": event.action,
                       "key_id": event.key_id, "details": _stored_details(event.id, event.details), "prev_hash": event.prev_hash,
                       "hash": event.hash, "checkpoint": _checkpoint_dict(cp) if cp is not None else None}
                sent += 1
                if limit is not None and sent >= limit:
                    return

    def signed_through(self) -> int | None:
        """The entry the newest checkpoint covers, or None when the log has never been signed."""
        with self.db.read() as session:
            return session.execute(select(func.max(AuditCheckpoint.entry_id))).scalar()

    def hash_at(self, entry_id: int) -> str | None:
        with self.db.read() as session:
            return session.execute(select(AuditEvent.hash).where(AuditEvent.id == entry_id)).scalar()

    def last_id(self) -> int:
        with self.db.read() as session:
            return session.execute(select(AuditHead.last_id).where(AuditHead.id == HEAD_ID)).scalar() or 0


def _message_of(cp) -> bytes:
    return checkpoints.message(entry_id=cp.entry_id, head_hash=cp.head_hash, at=cp.at, public_key=cp.public_key,
                               prev_hash=cp.prev_hash, first_entry_id=cp.first_entry_id)


NOT_OURS = ("not written by apikeys: not signed, no checkpoint vouches for it (inserted outside apikeys, for "
            "example with SQL; appended by a command line without APIKEYS_AUDIT_SIGNING_KEY; or its checkpoint removed)")


def _unvouched_alert(newest_cp, last_id: int) -> EventInput | None:
    """At a signed append: entries past the newest checkpoint (or a head behind it) were not written by
    an apikeys that signs. Named in the log, logged, and posted with the append (never blocking it).
    A log with entries and no checkpoint at all is adopted by the first checkpoint: that is said too
    (``audit.signing_started``), since it is also what deleting every checkpoint would look like."""
    if newest_cp is None and last_id > 0:
        message = (f"signing starts at entry {last_id + 1}: the first checkpoint vouches for entries 1-{last_id}, "
                   "written before APIKEYS_AUDIT_SIGNING_KEY was set. If it was set before, every checkpoint was "
                   "deleted: check with 'apikeys audit --verify --against-slack'")
        log.warning("audit: %s", message)
        return EventInput(actor=TAMPER_ACTOR, action=Action.SIGNING_STARTED,
                          details={"problem": message, "adopted_through": last_id})
    if newest_cp is None or newest_cp[0] == last_id:
        return None
    if newest_cp[0] < last_id:
        first, problem = newest_cp[0] + 1, f"audit entries {newest_cp[0] + 1}-{last_id} {NOT_OURS}"
    else:
        first, problem = last_id + 1, (f"the head of the audit log was moved back from entry {newest_cp[0]} to "
                                       f"{last_id}: entries after it were hidden or deleted")
    log.error("tamper detected: %s", problem)
    return EventInput(actor=TAMPER_ACTOR, action=Action.TAMPER_DETECTED,
                      details={"problem": problem, "first": first, "last": max(last_id, newest_cp[0])})


def _checkpoint_problem(cp, entry_hash_: str, prev_checkpoint: str, signer: str | None, since: int) -> str | None:
    if cp.head_hash != entry_hash_:
        span = f"entry {cp.entry_id}" if since >= cp.entry_id else f"entries {since}-{cp.entry_id}"
        return (f"the log does not match what was signed: {span} edited and the chain recomputed, "
                "or another log swapped in")
    if signer is not None and cp.public_key != signer:
        return "signed by another key"
    if checkpoints.checkpoint_hash(_message_of(cp), cp.signature) != cp.hash:
        return "altered (its content does not match its hash)"
    if cp.prev_hash != prev_checkpoint:
        return "does not link to the checkpoint before it (a checkpoint was removed, reordered or altered)"
    return None


_RAW_AT = type_coerce(AuditEvent.at, Text).label("at")  # parsed by _stored_time, row by row
_ENTRY_COLUMNS = (AuditEvent.id, _RAW_AT, AuditEvent.actor, AuditEvent.action, AuditEvent.key_id,
                  AuditEvent.details, AuditEvent.prev_hash, AuditEvent.hash)
_CHECKPOINT_COLUMNS = (AuditCheckpoint.entry_id, AuditCheckpoint.first_entry_id, AuditCheckpoint.head_hash, AuditCheckpoint.at,
                       AuditCheckpoint.public_key, AuditCheckpoint.prev_hash, AuditCheckpoint.signature,
                       AuditCheckpoint.hash)


def _stream_checkpoints(session: Session, after: int = 0, batch: int = 5000) -> Iterator:
    while True:
        chunk = session.execute(select(*_CHECKPOINT_COLUMNS).where(AuditCheckpoint.entry_id > after)
                                .order_by(AuditCheckpoint.entry_id).limit(batch)).all()
        yield from chunk
        if len(chunk) < batch:
            return
        after = chunk[-1].entry_id


_Entry = namedtuple("_Entry", _ENTRY_FIELDS)


def _stream(session: Session, after: int = 0, batch: int = 5000) -> Iterable:
    """Entries after ``after`` as plain rows (no ORM objects kept), oldest first, a batch at a time;
    a row whose time does not parse raises ``CorruptEntry`` naming it."""
    while True:
        chunk = session.execute(select(*_ENTRY_COLUMNS).where(AuditEvent.id > after).order_by(AuditEvent.id)
                                .limit(batch)).all()
        for row in chunk:
            yield _Entry(row[0], _stored_time(row[0], row[1]), *row[2:])
        if len(chunk) < batch:
            return
        after = chunk[-1].id


def _events(session: Session, query) -> list[AuditEvent]:
    """``query`` (a select of ``_ENTRY_COLUMNS``) as AuditEvent objects, each row's time parsed on its own."""
    return [AuditEvent.model_construct(**dict(row._mapping, at=_stored_time(row.id, row.at)))
            for row in session.execute(query)]
