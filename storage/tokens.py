"""Admin tokens for the management API: created, listed and revoked from the command line only (a
token can never manage tokens), each event in the signed audit log.

A token (``apkt_<22 base62><6 base62 CRC32>``) is stored like a key: only its SHA-256 digest and its
last four characters; it is shown once, on creation. It carries scopes (``keys:read``,
``keys:write``, ``keys:revoke``) and an expiry (90 days unless told otherwise, at most 366). The
database keeps a token's id, digest, name, scopes and lifetime fixed and its revocation permanent
(``0007_management``'s triggers), and ``authenticate`` accepts only a token whose ``token.created``
entry is in the log: a row inserted with SQL authenticates nothing.

Also here, because they are the management API's state and must hold across replicas: the budget of
writes per token per minute (``spend_write``) and the first answers of idempotent writes
(``remembered`` / ``remember``), both in the caller's transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, Index, Text, bindparam, delete, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Field, Session, SQLModel

from . import checkpoints, keyformat
from .audit import _CHECKPOINT_COLUMNS, _ENTRY_COLUMNS, Action, AuditLog, EventInput, _message_of, _stored_time, entry_hash
from .db import Database
from .errors import DatabaseUnavailable, InvalidInput, StorageError
from .models import AuditCheckpoint, AuditEvent, UTCDateTime
from .redaction import redact_value
from .timeutil import iso, utcnow
from .validation import check_actor

log = logging.getLogger("apikeys.tokens")

SCOPES = ("keys:read", "keys:write", "keys:revoke")
TOKEN_ID_RE = re.compile(r"^tok_[0-9A-Za-z]{17}$")
TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,79}$")
DEFAULT_LIFETIME = timedelta(days=90)
MAX_LIFETIME = timedelta(days=366)
WRITES_PER_MINUTE = 60
IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_IDEMPOTENCY_KEY = 255
LAST_USED_RESOLUTION = timedelta(seconds=60)


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_digest", "digest", unique=True),
                      Index("ix_api_tokens_live_name", "name", unique=True, sqlite_where=text("revoked_at IS NULL"),
                            postgresql_where=text("revoked_at IS NULL")))

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=80)
    scopes: str = Field(max_length=200)  # comma-separated, sorted
    prefix: str = Field(max_length=8)
    last4: str = Field(max_length=4)
    digest: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)
    created_by: str = Field(max_length=200)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_by: str | None = Field(default=None, max_length=200)

    @property
    def masked(self) -> str:
        return keyformat.mask(self.prefix, self.last4)

    @property
    def scope_list(self) -> tuple[str, ...]:
        return tuple(s for s in self.scopes.split(",") if s)

    def status_at(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """As ``tokens list --json`` shows it: never the token, never its digest."""
        return {"id": self.id, "name": self.name, "scopes": list(self.scope_list), "masked": self.masked,
                "status": self.status_at(now or utcnow()), "created_at": iso(self.created_at),
                "created_by": self.created_by, "expires_at": iso(self.expires_at),
                "last_used_at": iso(self.last_used_at), "revoked_at": iso(self.revoked_at),
                "revoked_by": self.revoked_by}


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created", "created_at"),)

    token_id: str = Field(primary_key=True, max_length=40)
    key: str = Field(primary_key=True, max_length=MAX_IDEMPOTENCY_KEY)
    request_hash: str = Field(max_length=64)
    status: int
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)


class TokenWrite(SQLModel, table=True):
    __tablename__ = "token_writes"

    token_id: str = Field(primary_key=True, max_length=40)
    window_start: datetime = Field(primary_key=True, sa_type=UTCDateTime)
    count: int


class TokenDenied(StorageError):
    """A bearer token that authenticates nothing; ``reason`` says why (for logs and metrics, never the token)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason  # missing | malformed | unknown | revoked | expired | unvouched


class RateLimited(StorageError):
    def __init__(self, retry_after: int):
        super().__init__(f"at most {WRITES_PER_MINUTE} writes a minute per token; try again in {retry_after} s")
        self.retry_after = retry_after


class IdempotencyMismatch(InvalidInput):
    """The Idempotency-Key was used within 24 hours for another request."""


@dataclass(frozen=True)
class Caller:
    """An authenticated token: what the routes need to know about who calls."""

    id: str
    name: str
    scopes: frozenset[str]

    @property
    def actor(self) -> str:
        return f"token:{self.name}"


@dataclass(frozen=True)
class Remembered:
    status: int
    body: dict[str, Any]


def new_token_id() -> str:
    return "tok_" + keyformat.b62encode(int.from_bytes(os.urandom(12), "big"), 17)


def check_token_name(name: str) -> str:
    cleaned = (name or "").strip()
    if not TOKEN_NAME_RE.match(cleaned):
        raise InvalidInput(f"invalid token name {name!r}: 1-80 letters, digits and . _ - (like terraform or "
                           "ci-deploy); the audit log names it token:<name>")
    return cleaned


def check_scopes(scopes: str | Iterable[str]) -> tuple[str, ...]:
    items = [s.strip() for s in (scopes.split(",") if isinstance(scopes, str) else scopes)]
    items = [s for s in items if s]
    if not items:
        raise InvalidInput(f"a token needs at least one scope: {', '.join(SCOPES)}")
    unknown = [s for s in items if s not in SCOPES]
    if unknown:
        extra = " (a token can never manage tokens: that is the command line's)" if any(
            s.startswith("token") for s in unknown) else ""
        raise InvalidInput(f"unknown scope {unknown[0]!r}: choose from {', '.join(SCOPES)}{extra}")
    return tuple(sorted(set(items), key=SCOPES.index))


def check_token_id(token_id: str) -> str:
    cleaned = (token_id or "").strip()
    if not TOKEN_ID_RE.match(cleaned):
        raise InvalidInput(f"{token_id!r} is not a token id (they look like tok_3hX9bQ2mZ7pL4tV8w)")
    return cleaned


def check_idempotency_key(key: str) -> str:
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable() or key != key.strip():
        raise InvalidInput(f"an Idempotency-Key is 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters (a UUID is "
                           "usual)")
    if keyformat.KEY_PREFIX + "_" in key or keyformat.TOKEN_PREFIX + "_" in key:
        raise InvalidInput("an Idempotency-Key must not contain a key or a token")
    return key


_AUTH_COLUMNS = tuple(ApiToken.__table__.c[name] for name in (
    "id", "name", "scopes", "digest", "expires_at", "revoked_at", "last_used_at"))


class _AuthRead:
    """The bearer check's one statement, prebuilt (as the key check's): an indexed lookup by digest."""

    def __init__(self, dialect):
        compiled = select(*_AUTH_COLUMNS).where(
            ApiToken.__table__.c.digest == bindparam("digest")).compile(dialect=dialect)  # timing: index, then equal
        self.sql = str(compiled)
        self.positional = compiled.positional
        self.processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in _AUTH_COLUMNS]

    def params(self, digest: str):
        return (digest,) if self.positional else {"digest": digest}

    def value(self, found: tuple, index: int):
        process = self.processors[index]
        return process(found[index]) if process is not None else found[index]


class TokenService:
    def __init__(self, db: Database, audit: AuditLog):
        self.db = db
        self.audit = audit
        self._read = _AuthRead(db.read_engine.dialect)
        self._vouched: set[str] = set()  # token ids whose token.created entry this process has seen
        self._touched: dict[str, datetime] = {}  # when this process last recorded (or saw) a token's use
        self._expiries: dict[str, datetime] = {}
        self._last_complaint = -60.0

    # -- the command line's ---------------------------------------------------------------
    def create(self, *, name: str, scopes: str | Iterable[str], actor: str,
               expires_in: timedelta | None = None) -> tuple[ApiToken, str]:
        """A new token and its secret (shown once)."""
        name, scopes, actor = check_token_name(name), check_scopes(scopes), check_actor(actor)
        lifetime = DEFAULT_LIFETIME if expires_in is None else expires_in
        if not timedelta(0) < lifetime <= MAX_LIFETIME:
            raise InvalidInput(f"a token's lifetime is more than 0 and at most {MAX_LIFETIME.days} days")
        if self.audit.signer is None and self.audit.signed_through() is not None:
            raise InvalidInput("the audit log is signed, and a server that signs accepts only a token whose creation "
                               "a signed checkpoint vouches for: give this command APIKEYS_AUDIT_SIGNING_KEY")
        secret = keyformat.generate_token()
        now = utcnow()
        token = ApiToken(id=new_token_id(), name=name, scopes=",".join(scopes), prefix=keyformat.TOKEN_PREFIX,
                         last4=secret[-4:], digest=keyformat.digest(secret), created_at=now, created_by=actor,
                         expires_at=now + lifetime)
        with self.db.write() as session:
            if session.scalars(select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))).first():
                raise InvalidInput(f"a token named {name} exists: revoke it first, or choose another name")
            session.add(token)
            try:
                session.flush()
            except IntegrityError:  # another create of the name committed first
                raise InvalidInput(f"a token named {name} exists: revoke it first, or choose another name") from None
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege
                    raise
                raise InvalidInput("making an admin token needs the tables' owner: set DATABASE_MIGRATION_URL to the "
                                   "owner's URL (the server's runtime role cannot insert tokens)") from None
            self.audit.append(session, EventInput(actor=actor, action=Action.TOKEN_CREATED, key_id=token.id, details={
                "name": name, "token": token.masked, "scopes": list(scopes), "expires_at": iso(token.expires_at)}),
                at=now)
        return token, secret

    def list(self) -> list[ApiToken]:
        with self.db.read() as session:
            return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at.desc(), ApiToken.id.desc())))

    def revoke(self, token_id: str, *, actor: str) -> tuple[ApiToken, bool]:
        """Revoke once; ``(token, False)`` when it was revoked already (nothing recorded)."""
        token_id, actor = check_token_id(token_id), check_actor(actor)
        with self.db.write() as session:
            now = utcnow()
            won = session.execute(update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                                  .values(revoked_at=now, revoked_by=actor).returning(ApiToken.id)).first()
            token = session.get(ApiToken, token_id, populate_existing=True)
            if token is None:
                raise InvalidInput(f"no token with id {token_id!r} ('apikeys tokens list' shows them)")
            if won is None:
                return token, False
            self.audit.append(session, EventInput(actor=actor, action=Action.TOKEN_REVOKED, key_id=token.id, details={
                "name": token.name, "token": token.masked, "scopes": list(token.scope_list)}), at=now)
        return token, True

    # -- every management request's --------------------------------------------------------
    def authenticate(self, presented: object) -> Caller:
        """The caller of a bearer token, or ``TokenDenied``. A malformed token never reaches the
        database; a well-formed one is one indexed lookup (and, once per process and token, a look
        for its ``token.created`` entry)."""
        if not isinstance(presented, str) or not presented:
            raise TokenDenied("missing", "send Authorization: Bearer apkt_… (an admin token from 'apikeys tokens "
                                         "create')")
        if not keyformat.is_well_formed_token(presented):
            if keyformat.is_well_formed(presented):
                raise TokenDenied("malformed", "that is an API key, not an admin token (apkt_…): keys are checked "
                                               "at /v1/keys/verify, and never manage keys")
            raise TokenDenied("malformed", "not an admin token (apkt_…)")
        wanted = keyformat.digest(presented)
        found = self.db.fetch_one(self._read.sql, self._read.params(wanted))
        if found is None or not keyformat.digests_equal(found[3], wanted):
            raise TokenDenied("unknown", "unknown token")
        token_id, name, scopes = found[0], found[1], found[2]
        if found[5] is not None:  # revoked_at, read on every request: a revocation counts from the next one
            raise TokenDenied("revoked", f"token {token_id} was revoked")
        now = utcnow()
        # A token's expiry never changes (the triggers), so its parsed value is kept once read.
        expires_at = self._expiries.get(token_id)
        if expires_at is None:
            expires_at = self._read.value(found, 4)
            if len(self._expiries) >= 10_000:
                self._expiries.clear()
            self._expiries[token_id] = expires_at
        if now >= expires_at:
            raise TokenDenied("expired", f"token {token_id} expired at {iso(expires_at)}")
        if token_id not in self._vouched:
            problem = self._vouch(token_id, name, scopes, expires_at)
            if problem is not None:
                log.warning("token %s refused: %s (the row was written outside apikeys)", token_id, problem)
                raise TokenDenied("unvouched", "unknown token")
            self._vouched.add(token_id)
        self._touch(token_id, found, now)
        return Caller(id=token_id, name=name, scopes=frozenset(s for s in scopes.split(",") if s))

    def _vouch(self, token_id: str, name: str, scopes: str, expires_at: datetime) -> str | None:
        """Why the log does not vouch for this token row, or None. Its ``token.created`` entry must name it
        as it is (name, scopes, expiry); with a signing key, a signed checkpoint must cover
        that entry and the entries from it to the checkpoint's head must chain to the signed hash, so an
        entry inserted with SQL next to a row inserted with SQL opens nothing. Once per process and token."""
        with self.db.read() as session:
            entry = session.execute(select(*_ENTRY_COLUMNS).where(
                AuditEvent.key_id == token_id, AuditEvent.action == Action.TOKEN_CREATED.value)
                .order_by(AuditEvent.id).limit(1)).first()
            if entry is None:
                return "no token.created entry in the audit log"
            try:
                details = json.loads(entry.details)
            except ValueError:
                details = None
            if not isinstance(details, dict) or (details.get("name"), details.get("scopes"), details.get("expires_at")) \
                    != (name, [s for s in scopes.split(",") if s], iso(expires_at)):
                return "its token.created entry describes another token"
            signer = self.audit.signer
            if signer is None:
                return None
            cp = session.execute(select(*_CHECKPOINT_COLUMNS).where(
                AuditCheckpoint.first_entry_id <= entry.id, AuditCheckpoint.entry_id >= entry.id)
                .order_by(AuditCheckpoint.entry_id).limit(1)).first()
            if cp is None:
                return "no signed checkpoint vouches for its token.created entry"
            if cp.public_key != signer.public_raw or not checkpoints.signature_valid(
                    cp.public_key, _message_of(cp), cp.signature):
                return "the checkpoint over its token.created entry is not signed by this installation"
            chain = session.execute(select(*_ENTRY_COLUMNS).where(AuditEvent.id >= entry.id, AuditEvent.id <= cp.entry_id)
                                    .order_by(AuditEvent.id)).all()
        previous, expected_id = None, entry.id
        for row in chain:
            computed = entry_hash(id=row.id, at=_stored_time(row.id, row.at), actor=row.actor, action=row.action,
                                  key_id=row.key_id, details=row.details, prev_hash=row.prev_hash)
            if row.id != expected_id or computed != row.hash or (previous is not None and row.prev_hash != previous):
                return "its token.created entry does not chain to the signed head"
            previous, expected_id = row.hash, row.id + 1
        if previous != cp.head_hash:
            return "its token.created entry does not chain to the signed head"
        return None

    def _touch(self, token_id: str, found: tuple, now: datetime) -> None:
        """Record the token's use at most once a minute (its stored last use read only when that may be due)."""
        recorded = self._touched.get(token_id)
        if recorded is None or now - recorded >= LAST_USED_RESOLUTION:
            recorded = self._read.value(found, 6)
        if recorded is not None and now - recorded < LAST_USED_RESOLUTION:
            self._touched[token_id] = recorded
            return
        if len(self._touched) >= 10_000:
            self._touched.clear()
        self._touched[token_id] = now
        try:
            with self.db.write() as session:
                session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))
        except (DatabaseUnavailable, DBAPIError) as exc:  # bookkeeping: the answer does not depend on it
            moment = time.monotonic()
            if moment - self._last_complaint >= 60:
                self._last_complaint = moment
                log.warning("a token's last use could not be recorded: %s",
                            type(getattr(exc, "orig", None) or exc).__name__)

    def spend_write(self, session: Session, token_id: str, *, now: datetime | None = None) -> None:
        """Count one write of ``token_id`` in this minute (in the caller's transaction, shared by the
        replicas through the database); ``RateLimited`` past ``WRITES_PER_MINUTE``. A refused write
        rolls its transaction back, so it is not counted."""
        now = now or utcnow()
        window = now.replace(second=0, microsecond=0)
        insert = self.db.insert(TokenWrite).values(token_id=token_id, window_start=window, count=1)
        count = session.execute(insert.on_conflict_do_update(
            index_elements=["token_id", "window_start"], set_={"count": TokenWrite.count + 1})
            .returning(TokenWrite.count)).scalar()
        if count > WRITES_PER_MINUTE:
            raise RateLimited(max(1, 60 - now.second))
        if count == 1:  # a new minute: the token's older minutes are of no more use
            session.execute(delete(TokenWrite).where(TokenWrite.token_id == token_id, TokenWrite.window_start < window))

    def hold(self, session: Session, token_id: str, key: str) -> None:
        """Wait for any other transaction answering this token's ``key`` to end (PostgreSQL: an advisory
        lock for the rest of the transaction; SQLite's write transactions are one at a time already).
        Then ``remembered`` sees its answer: a racing retry of a revoke answers the first answer, not 409."""
        if self.db.dialect != "postgresql":
            return
        material = hashlib.sha256(f"apikeys-idempotency\0{token_id}\0{key}".encode()).digest()
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": int.from_bytes(material[:8], "big", signed=True)})

    def remembered(self, session: Session, token_id: str, key: str, request_hash: str, *,
                   now: datetime | None = None) -> Remembered | None:
        """The first answer to this token's ``key`` within 24 hours, if the request is the same;
        ``IdempotencyMismatch`` if it was another; None if there is none (an older one is dropped)."""
        now = now or utcnow()
        row = session.get(IdempotencyKey, (token_id, key))
        if row is None:
            return None
        if row.created_at <= now - IDEMPOTENCY_WINDOW:
            session.execute(delete(IdempotencyKey).where(IdempotencyKey.token_id == token_id, IdempotencyKey.key == key))
            return None
        if row.request_hash != request_hash:  # timing: not a secret (a hash of the caller's own request)
            raise IdempotencyMismatch("this Idempotency-Key was used in the last 24 hours for another request; use a "
                                      "new key for a new request")
        return Remembered(row.status, json.loads(row.body))

    def remember(self, session: Session, token_id: str, key: str, request_hash: str, status: int,
                 body: dict[str, Any], *, now: datetime | None = None) -> None:
        """Keep the first answer, in the transaction of the change it answers (so both happen or
        neither). ``body`` must hold no secret; anything key-shaped in it is masked anyway."""
        session.add(IdempotencyKey(token_id=token_id, key=key, request_hash=request_hash, status=status,
                                   body=json.dumps(redact_value(body), separators=(",", ":")),
                                   created_at=now or utcnow()))
        session.flush()  # a racing request with the same key fails here, and its change rolls back with it

    def prune(self, *, now: datetime | None = None, limit: int = 1000) -> int:
        """Drop first answers older than the window (the server's clock calls this)."""
        cutoff = (now or utcnow()) - IDEMPOTENCY_WINDOW
        with self.db.write() as session:
            old = list(session.execute(select(IdempotencyKey.token_id, IdempotencyKey.key)
                                       .where(IdempotencyKey.created_at <= cutoff).limit(limit)))
            for token_id, key in old:
                session.execute(delete(IdempotencyKey).where(IdempotencyKey.token_id == token_id,
                                                             IdempotencyKey.key == key))
        return len(old)
