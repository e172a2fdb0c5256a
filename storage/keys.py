"""The key service: create, list, get, verify and revoke.

Invariants owned here (and backed by database triggers, see ``db.py``):
* only a digest of each secret is stored, and lookups go by that digest;
* a revocation happens at most once per key (a conditional UPDATE, so racing callers get one
  winner and one ``key.revoked`` event), and is permanent.
"""

from __future__ import annotations

import enum
import logging
import re
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, or_, select, tuple_, update
from sqlalchemy.orm import configure_mappers

from . import keyformat
from .audit import Action, AuditEvent, AuditLog, EventInput
from .db import BulkInsert, Database
from .errors import InvalidInput, KeyNotFound
from .models import ApiKey, KeyStatus, RevokeReason
from .newkeys import _NEW_KEY_FIELDS, CreatedKey, _require_key_id_shape, new_key_id, new_key_row  # noqa: F401
from .revocation import Revocation, Via, active_at, revoke_rows
from .timeutil import iso, utcnow
from .usage import RevokedUseCounter, UseRecorder
from .validation import (  # noqa: F401  (re-exported: storage.keys is where callers have found them)
    KEY_ID_RE,
    MAX_ACTOR,
    MAX_NAME,
    MAX_NOTE,
    OWNER_RE,
    STATUSES,
    check_actor,
    check_key_id,
    check_name,
    check_note,
    check_owner,
    check_reason,
    check_status,
)

log = logging.getLogger("apikeys.keys")

MAX_BATCH = 100_000
LAST_USED_RESOLUTION = timedelta(seconds=60)


class VerifyCode(str, enum.Enum):
    VALID = "VALID"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    NOT_FOUND = "NOT_FOUND"
    MALFORMED = "MALFORMED"


@dataclass(frozen=True)
class Verification:
    code: VerifyCode
    key_id: str | None = None
    name: str | None = None
    owner: str | None = None
    expires_at: datetime | None = None

    @property
    def valid(self) -> bool:
        return self.code is VerifyCode.VALID

    def to_dict(self) -> dict[str, Any]:
        """The ``/v1/keys/verify`` answer: key_id for known keys, name/owner only when valid."""
        body: dict[str, Any] = {"valid": self.valid, "code": self.code.value}
        if self.code in (VerifyCode.VALID, VerifyCode.REVOKED, VerifyCode.EXPIRED):
            body["key_id"] = self.key_id
        if self.code in (VerifyCode.VALID, VerifyCode.EXPIRED):
            body["expires_at"] = iso(self.expires_at)
        if self.code is VerifyCode.VALID:
            body["name"] = self.name
            body["owner"] = self.owner
        return body


@dataclass(frozen=True)
class RevokeOutcome:
    key: ApiKey
    revoked_now: bool  # False: it was already revoked (nothing changed, nothing recorded)
    event: AuditEvent | None = None


@dataclass(frozen=True)
class KeyPage:
    items: list[ApiKey]
    next_cursor: str | None
    prev_cursor: str | None


# -- cursors ------------------------------------------------------------------------------
def encode_cursor(key: ApiKey) -> str:
    return f"{key.created_at.astimezone(timezone.utc).strftime('%Y%m%d%H%M%S%f')}.{key.id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, key_id = cursor.split(".", 1)
        return datetime.strptime(stamp, "%Y%m%d%H%M%S%f").replace(tzinfo=timezone.utc), check_key_id(key_id)
    except (ValueError, InvalidInput):
        raise InvalidInput("invalid page cursor") from None


def status_filter(status: str, now: datetime):
    if status == "active":
        return active_at(now)
    if status == "revoked":
        return ApiKey.revoked_at.is_not(None)
    if status == "expired":
        return and_(ApiKey.revoked_at.is_(None), ApiKey.expires_at <= now)
    return None


def key_to_dict(key: ApiKey, now: datetime | None = None) -> dict[str, Any]:
    """A key as shown to operators: never the secret, never the digest."""
    now = now or utcnow()
    return {
        "id": key.id,
        "name": key.name,
        "owner": key.owner,
        "prefix": key.prefix,
        "masked": key.masked,
        "status": key.status_at(now).value,
        "created_at": iso(key.created_at),
        "created_by": key.created_by,
        "expires_at": iso(key.expires_at),
        "last_used_at": iso(key.last_used_at),
        "revoked_at": iso(key.revoked_at),
        "revoked_by": key.revoked_by,
        "revoke_reason": key.revoke_reason,
    }


# The hot path's one statement: built from the table, compiled once per dialect, with each
# column's own result processing (the models' UTCDateTime, on SQLite after its text parsing), so a
# change to the table cannot leave this read behind.
_VERIFY_COLUMNS = tuple(ApiKey.__table__.c[name] for name in (
    "id", "name", "owner", "digest", "prefix", "last4", "expires_at", "revoked_at", "revoked_by", "last_used_at"))


class _VerifyRead:
    def __init__(self, dialect, columns=_VERIFY_COLUMNS, by: str = "digest"):
        self.columns = columns
        by_digest = ApiKey.__table__.c[by] == bindparam("digest")  # timing: an index lookup; then digests_equal
        compiled = select(*columns).where(by_digest).compile(dialect=dialect)
        self.sql = str(compiled)
        self.positional = compiled.positional
        processors = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
        self.processed = [(i, process) for i, process in enumerate(processors) if process is not None]

    def params(self, digest: str):
        return (digest,) if self.positional else {"digest": digest}

    def value(self, found: tuple, index: int):
        """One column of a raw row, through that column's result processing."""
        for i, process in self.processed:
            if i == index:
                return process(found[index])
        return found[index]

    def row(self, found: tuple) -> "_VerifyRow":
        values = list(found)
        for i, process in self.processed:
            values[i] = process(values[i])
        return _VerifyRow(*values)


_EXPIRES_AT, _REVOKED_AT, _LAST_USED_AT = (
    [column.name for column in _VERIFY_COLUMNS].index(name) for name in ("expires_at", "revoked_at", "last_used_at"))

_VerifyRow = namedtuple("_VerifyRow", [column.name for column in _VERIFY_COLUMNS])


class KeyService:
    def __init__(self, db: Database, audit: AuditLog):
        self.db = db
        self.audit = audit
        self.revoked_uses = RevokedUseCounter(db, audit)
        # The hot path: one indexed SELECT, prebuilt, on a bare DBAPI connection (Database.fetch_one).
        self._verify = _VerifyRead(db.read_engine.dialect)
        # ``get``: one row by primary key, prebuilt the same way (the management API reads keys by id on every GET).
        self._by_id = _VerifyRead(db.read_engine.dialect, tuple(ApiKey.__table__.c), by="id")
        configure_mappers()  # models built with model_construct need the mapped attributes set up first
        self._bulk: BulkInsert | None = None
        self._recently_touched: dict[str, datetime] = {}  # key id -> when its last use was recorded, as far as we know
        # Last uses and revoked keys' presentations are written off the request's path, on a thread of their own.
        self.uses = UseRecorder(self._write_uses, self._write_revoked_use)

    # -- create ---------------------------------------------------------------------------
    def create(
        self, *, name: str, owner: str, actor: str, expires_in: timedelta | None = None, count: int | None = None,
        context: dict[str, Any] | None = None, progress: Callable[[int, int], None] | None = None,
    ) -> list[CreatedKey]:
        """Create one key (``count=None``) or ``count`` keys named NAME-1..NAME-count, in one transaction.
        ``context``: what the ``key.created`` entries also record (the management API's ``via`` and token).
        ``progress(made, total)``: called every 1,000 keys made, and once all are made, before they are written."""
        if count is not None and not 1 <= count <= MAX_BATCH:
            raise InvalidInput(f"--count must be between 1 and {MAX_BATCH}")
        name = check_name(name, room=0 if count is None else len(f"-{count}"))
        owner = check_owner(owner)
        actor = check_actor(actor)
        if expires_in is not None and expires_in <= timedelta(0):
            raise InvalidInput("an expiry must be in the future")
        now = utcnow()
        expires_at = now + expires_in if expires_in is not None else None
        names = [name] if count is None else [f"{name}-{i}" for i in range(1, count + 1)]
        rows, secrets, events = [], [], []
        # Ids sorted in creation order, so that NAME-1..NAME-N list in order (newest first).
        ids = sorted(new_key_id() for _ in names)
        for made, (key_id, key_name) in enumerate(zip(ids, names, strict=True), start=1):
            row, secret, event = new_key_row(key_id, key_name, owner, actor, now, expires_at, **(context or {}))
            rows.append(row)
            secrets.append(secret)
            events.append(event)
            if progress is not None and (made % 1000 == 0 or made == len(names)):
                progress(made, len(names))
        with self.db.write() as session:
            # One transaction: the keys (executemany on the session's connection), their entries
            # chained in one pass, one checkpoint and one audit-channel post.
            self._insert(session).execute(session, rows)
            self.audit.append_many(session, events, at=now)
        return [CreatedKey(row, secret) for row, secret in zip(rows, secrets, strict=True)]

    def _insert(self, session) -> BulkInsert:
        if self._bulk is None:
            self._bulk = BulkInsert(ApiKey.__table__, _NEW_KEY_FIELDS, session.get_bind().dialect)
        return self._bulk

    # -- read -----------------------------------------------------------------------------
    def get(self, key_id: str) -> ApiKey:
        """One key by id, read committed (outside any open ``Database.transaction``)."""
        _require_key_id_shape(key_id)
        found = self.db.fetch_one(self._by_id.sql, self._by_id.params(key_id))
        if found is None:
            raise KeyNotFound(key_id)
        values = list(found)
        for i, process in self._by_id.processed:
            values[i] = process(values[i])
        return ApiKey.model_construct(**{c.name: v for c, v in zip(self._by_id.columns, values, strict=True)})

    def list_keys(
        self, *, status: str = "active", owner: str | None = None, limit: int = 20,
        after: str | None = None, before: str | None = None, now: datetime | None = None, with_prev: bool = True,
    ) -> KeyPage:
        """Newest first, keyset-paged: ``after``/``before`` take the cursors of a previous page.
        ``with_prev=False``: no ``prev_cursor`` (one query fewer, for callers that only page forward)."""
        check_status(status)
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        now = now or utcnow()
        conditions = []
        if (cond := status_filter(status, now)) is not None:
            conditions.append(cond)
        if owner is not None:
            conditions.append(ApiKey.owner == owner)
        order_key = tuple_(ApiKey.created_at, ApiKey.id)
        with self.db.read() as session:
            if before is not None:
                anchor = decode_cursor(before)
                rows = list(session.scalars(
                    select(ApiKey).where(*conditions, order_key > anchor)
                    .order_by(ApiKey.created_at, ApiKey.id).limit(limit + 1)
                ))
                has_prev = len(rows) > limit
                items = list(reversed(rows[:limit]))
                has_next = bool(items) and session.scalar(
                    select(exists().where(*conditions, order_key < (items[-1].created_at, items[-1].id)))
                )
            else:
                query = select(ApiKey).where(*conditions)
                if after is not None:
                    query = query.where(order_key < decode_cursor(after))
                rows = list(session.scalars(
                    query.order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).limit(limit + 1)
                ))
                has_next = len(rows) > limit
                items = rows[:limit]
                has_prev = with_prev and bool(items) and after is not None and session.scalar(
                    select(exists().where(*conditions, order_key > (items[0].created_at, items[0].id)))
                )
        return KeyPage(
            items=items,
            next_cursor=encode_cursor(items[-1]) if has_next else None,
            prev_cursor=encode_cursor(items[0]) if has_prev else None,
        )

    def count_keys(self, *, status: str = "active", owner: str | None = None, now: datetime | None = None,
                   cap: int | None = None) -> int:
        """How many keys match. With ``cap``, counting stops after ``cap + 1`` (so the cost stays flat
        however many keys there are); a result above ``cap`` means "more than cap"."""
        check_status(status)
        conditions = []
        if (cond := status_filter(status, now or utcnow())) is not None:
            conditions.append(cond)
        if owner is not None:
            conditions.append(ApiKey.owner == owner)
        query = select(ApiKey.id).where(*conditions)
        if cap is not None:
            query = query.limit(cap + 1)
        with self.db.read() as session:
            return session.scalar(select(func.count()).select_from(query.subquery())) or 0

    def active_named(self, owner: str, name: str, *, limit: int = 4) -> list[ApiKey]:
        """``owner``'s active keys named ``name`` (through the owner's index), newest first."""
        now = utcnow()
        with self.db.read() as session:
            return list(session.scalars(
                select(ApiKey).where(ApiKey.owner == owner, ApiKey.name == name, active_at(now))
                .order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).limit(limit)))

    # -- verify ---------------------------------------------------------------------------
    def verify(self, secret: object, *, via: Via = Via.VERIFY) -> Verification:
        """Check a presented secret. Malformed input never reaches the database.

        A revoked key's presentation is counted (and alerted on); ``via`` says which interface saw it.
        """
        if not keyformat.is_well_formed(secret):
            return Verification(VerifyCode.MALFORMED)
        assert isinstance(secret, str)
        wanted = keyformat.digest(secret)
        found = self.db.fetch_one(self._verify.sql, self._verify.params(wanted))
        if found is None or not keyformat.digests_equal(found[3], wanted):
            return Verification(VerifyCode.NOT_FOUND)
        now = utcnow()
        if found[_REVOKED_AT] is not None or found[_EXPIRES_AT] is not None:  # the rare paths: the whole row
            row = self._verify.row(found)
            if row.revoked_at is not None:
                self.uses.revoked_use(ApiKey(**row._asdict()), now, via=via)
                return Verification(VerifyCode.REVOKED, key_id=row.id)
            if now >= row.expires_at:
                return Verification(VerifyCode.EXPIRED, key_id=row.id, expires_at=row.expires_at)
            expires_at = row.expires_at
        else:
            expires_at = None
        key_id = found[0]
        # last_used_at is kept to a minute: this process knows when it last recorded a use, so the
        # stored time is only read (and parsed) when that may be due again.
        recorded = self._recently_touched.get(key_id)
        if recorded is None or now - recorded >= LAST_USED_RESOLUTION:
            last_used = self._verify.value(found, _LAST_USED_AT)
            if last_used is None or now - last_used >= LAST_USED_RESOLUTION:
                self.uses.used(key_id, now)
            self._remember_touch(key_id, last_used, now)
        return Verification(VerifyCode.VALID, key_id=key_id, name=found[1], owner=found[2], expires_at=expires_at)

    def check(self, secret: object, *, actor: str, via: Via | str = Via.CLI,
              record: bool = True) -> tuple[Verification, ApiKey | None]:
        """An operator's check of a key they hold (``apikeys verify``): the answer ``verify`` gives,
        and the key. It is not a use: no last use is recorded, and a revoked key checked by hand
        raises no "revoked key still in use" alert and is not counted as presented. A check of a key
        we issued is recorded as ``key.checked`` (who held the secret, and what it answered), in the log
        only: no audit-channel post (a triage loop over a thousand leaked keys must not bury the posts
        of its revocations). ``record=False``: not recorded at all."""
        if not keyformat.is_well_formed(secret):
            return Verification(VerifyCode.MALFORMED), None
        assert isinstance(secret, str)
        key = self.find_by_secret(secret)
        if key is None:
            return Verification(VerifyCode.NOT_FOUND), None
        now = utcnow()
        status = key.status_at(now)
        code = {KeyStatus.REVOKED: VerifyCode.REVOKED, KeyStatus.EXPIRED: VerifyCode.EXPIRED}.get(status, VerifyCode.VALID)
        if record:
            with self.db.write() as session:
                self.audit.append(session, EventInput(
                    actor=actor, action=Action.KEY_CHECKED, key_id=key.id,
                    details={"name": key.name, "key": key.masked, "owner": key.owner, "code": code.value,
                             "via": str(via)},
                ), at=now, notify=False)
        return Verification(code, key_id=key.id, name=key.name, owner=key.owner, expires_at=key.expires_at), key

    def flush_uses(self, timeout: float = 10.0) -> bool:
        """Wait until the last uses and revoked keys' presentations seen so far are written (the
        writer runs on its own thread: ``UseRecorder``). False when they could not be in ``timeout``."""
        return self.uses.flush(timeout)

    def _write_uses(self, uses: list[tuple[str, datetime]]) -> None:
        """Record each key's use, at most once per LAST_USED_RESOLUTION (a conditional UPDATE)."""
        with self.db.write() as session:
            for key_id, now in uses:
                session.execute(
                    update(ApiKey)
                    .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None),
                           or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - LAST_USED_RESOLUTION))
                    .values(last_used_at=now)
                )

    def _write_revoked_use(self, pending) -> None:
        self.revoked_uses.record(pending.key, pending.last_at, via=pending.via, uses=pending.uses,
                                 first_at=pending.first_at)

    def _remember_touch(self, key_id: str, last_used: datetime | None, now: datetime) -> None:
        if len(self._recently_touched) >= 50_000:  # bounded: forgetting only costs a read
            self._recently_touched.clear()
        due = last_used is None or now - last_used >= LAST_USED_RESOLUTION
        self._recently_touched[key_id] = now if due else last_used

    # -- find -----------------------------------------------------------------------------
    def find_by_secret(self, secret: str) -> ApiKey | None:
        """The key a full secret belongs to (by digest), or None. Never stores or returns the secret."""
        if not keyformat.is_well_formed(secret):
            return None
        wanted = keyformat.digest(secret)
        with self.db.read() as session:
            key = session.scalars(select(ApiKey).where(ApiKey.digest == wanted)).first()  # timing: index, then digests_equal
        if key is None or not keyformat.digests_equal(key.digest, wanted):
            return None
        return key

    def find_by_secrets(self, secrets: Sequence[str], *, chunk: int = 500) -> dict[str, ApiKey]:
        """The keys that any of ``secrets`` belong to, by digest, in one query per ``chunk`` of
        well-formed candidates (leak watch: every candidate in a message, however many decoys)."""
        by_digest = {keyformat.digest(s): s for s in dict.fromkeys(secrets) if keyformat.is_well_formed(s)}
        found: dict[str, ApiKey] = {}
        digests = list(by_digest)
        with self.db.read() as session:
            for start in range(0, len(digests), chunk):
                for key in session.scalars(select(ApiKey).where(ApiKey.digest.in_(digests[start:start + chunk]))):
                    if key.digest in by_digest:
                        found[by_digest[key.digest]] = key
        return found

    def search(self, text: str, *, limit: int = 15) -> list[ApiKey]:
        """Keys matching a fragment: a key id, a masked key (``apk_…a1b2``), the last four
        characters, or part of a name (case-insensitive) or an owner. Newest first."""
        text = (text or "").strip()
        if not text or len(text) > 200:
            return []
        masked = re.fullmatch(rf"(?:{keyformat.KEY_PREFIX}_)?(?:\u2026|\.\.\.)([0-9A-Za-z]{{4}})", text)
        conditions = []
        if KEY_ID_RE.match(text):
            conditions.append(ApiKey.id == text)
        elif masked:
            conditions.append(ApiKey.last4 == masked.group(1))
        else:
            if re.fullmatch(r"[0-9A-Za-z]{4}", text):
                conditions.append(ApiKey.last4 == text)
            pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            conditions.append(func.lower(ApiKey.name).like(pattern, escape="\\"))
            conditions.append(ApiKey.owner == text)
        with self.db.read() as session:
            return list(session.scalars(
                select(ApiKey).where(or_(*conditions)).order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).limit(limit)
            ))

    # -- rotate (storage.rotation) --------------------------------------------------------
    def rotate(self, key_id: str, *, actor: str, via: Via | str, grace: timedelta, note: str | None = None,
               context: dict[str, Any] | None = None, seal=None):
        """Replace a key: see ``storage.rotation.rotate``."""
        from .rotation import rotate

        return rotate(self, key_id, actor=actor, via=via, grace=grace, note=note, context=context, seal=seal)

    # -- revoke (one path: storage.revocation) -------------------------------------------
    def revoke(self, key_id: str, *, actor: str, via: Via | str, reason: str | RevokeReason | None = None,
               note: str | None = None, context: dict[str, Any] | None = None) -> RevokeOutcome:
        """Revoke once, atomically. A second call returns ``revoked_now=False`` and records nothing."""
        revocation = Revocation.of(actor=actor, via=via, reason=reason, note=note, context=context)
        _require_key_id_shape(key_id)
        with self.db.write() as session:
            now = utcnow()
            changed = revoke_rows(session, ApiKey.id == key_id, revocation.values(now))
            key = session.get(ApiKey, key_id, populate_existing=True)
            if key is None:
                raise KeyNotFound(key_id)
            if not changed:
                return RevokeOutcome(key=key, revoked_now=False)
            event = self.audit.append(session, revocation.entry(key), at=now)
            return RevokeOutcome(key=key, revoked_now=True, event=event)

    def revoke_owner(self, owner: str, *, up_to: str, actor: str, via: Via | str,
                     reason: str | RevokeReason | None = None, note: str | None = None,
                     context: dict[str, Any] | None = None) -> list[ApiKey]:
        """Revoke, in one transaction, the owner's active keys that were listed: those at or before the
        cursor ``up_to`` (the newest key shown). A key created after the list was shown is left alone.
        One ``key.revoked`` event per key, queued as one notification. Returns the keys revoked now."""
        owner = check_owner(owner)
        revocation = Revocation.of(actor=actor, via=via, reason=reason, note=note, context=context)
        anchor = decode_cursor(up_to)
        with self.db.write() as session:
            now = utcnow()
            ids = revoke_rows(session, and_(ApiKey.owner == owner, active_at(now),
                                            tuple_(ApiKey.created_at, ApiKey.id) <= anchor), revocation.values(now))
            if not ids:
                return []
            keys = list(session.scalars(
                select(ApiKey).where(ApiKey.id.in_(ids)).order_by(ApiKey.created_at, ApiKey.id)
                .execution_options(populate_existing=True)
            ))
            self.audit.append_many(session, [revocation.entry(key, bulk=len(keys)) for key in keys], at=now)
            return keys

    def revoke_active_in(self, session, key_ids: list[str], revocation: Revocation, *, now: datetime,
                         chunk: int = 500) -> set[str]:
        """Inside the caller's write transaction: revoke those of ``key_ids`` that are active at ``now``.
        Returns the ids revoked by this call; the caller appends their entries (``revocation.entry``)
        in the same transaction, beside its own."""
        revoked: set[str] = set()
        ids = sorted(set(key_ids))  # one lock order for every caller
        for start in range(0, len(ids), chunk):
            revoked.update(revoke_rows(session, and_(ApiKey.id.in_(ids[start:start + chunk]), active_at(now)),
                                       revocation.values(now)))
        return revoked
