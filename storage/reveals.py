"""One-time links for a new secret (a rotation from Slack): the secret never enters Slack.

``seal`` encrypts the secret with a fresh 256-bit AES-GCM key and keeps only the ciphertext, under
the SHA-256 of a random token. The AES key is returned to the caller, which puts it in the link's
``#fragment`` (browsers never send a fragment to the server) and forgets it: the database holds a
ciphertext nobody here can read, Slack holds a link that opens once.

``open`` hands the ciphertext out once, within ``REVEAL_TTL``, deletes it in the same transaction
and records ``key.secret_revealed``; a second visit learns when it was viewed. ``sweep`` deletes
what expired unviewed, records ``key.reveal_expired`` and queues a message telling the admin.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Column, Index, Text, select, update
from sqlmodel import Field, Session, SQLModel

from .audit import Action, AuditLog, EventInput
from .db import Database
from .keyformat import digest
from .models import ApiKey, UTCDateTime
from .timeutil import utcnow

REVEAL_TTL = timedelta(minutes=15)
TOKEN_RE_PATTERN = r"[A-Za-z0-9_-]{22,64}"
DM_TOPIC = "text"  # a ready-made message (the deliverer posts its text and blocks as they are)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Reveal(SQLModel, table=True):
    __tablename__ = "reveals"
    __table_args__ = (Index("ix_reveals_expires", "expires_at"),)

    token_digest: str = Field(primary_key=True, max_length=64)
    key_id: str = Field(max_length=40)
    for_user: str = Field(max_length=200)
    ciphertext: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # base64url nonce|ct|tag
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    viewed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expired_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # swept unviewed


@dataclass(frozen=True)
class Sealed:
    token: str     # the link's path
    fragment: str  # the AES key, base64url: the link's #fragment, never stored
    expires_at: datetime

    def link(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/reveal/{self.token}#{self.fragment}"


@dataclass(frozen=True)
class Opened:
    """What a visit finds: the ciphertext (the first visit), or when it was viewed or expired."""

    state: str  # "sealed" (not opened yet) | "opened" (this call took it) | "viewed" | "expired" | "unknown"
    ciphertext: str | None = None
    key_name: str | None = None
    key_masked: str | None = None
    viewed_at: datetime | None = None
    expires_at: datetime | None = None


def encrypt(secret: str) -> tuple[str, str]:
    """``(ciphertext, fragment)``: AES-256-GCM of ``secret`` under a fresh key (the fragment)."""
    key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    sealed = nonce + AESGCM(key).encrypt(nonce, secret.encode("utf-8"), None)
    return b64url(sealed), b64url(key)


def decrypt(ciphertext: str, fragment: str) -> str:
    """What the browser does (WebCrypto); used by tests and the CLI's checks."""
    raw = base64.urlsafe_b64decode(ciphertext + "=" * (-len(ciphertext) % 4))
    key = base64.urlsafe_b64decode(fragment + "=" * (-len(fragment) % 4))
    return AESGCM(key).decrypt(raw[:12], raw[12:], None).decode("utf-8")


class RevealService:
    def __init__(self, db: Database, audit: AuditLog):
        self.db = db
        self.audit = audit

    def seal(self, session: Session, *, key_id: str, secret: str, for_user: str, now: datetime) -> Sealed:
        """Inside the caller's transaction (the rotation's): keep the ciphertext of ``secret``."""
        token = secrets.token_urlsafe(24)
        ciphertext, fragment = encrypt(secret)
        expires_at = now + REVEAL_TTL
        session.add(Reveal(token_digest=digest(token), key_id=key_id, for_user=for_user, ciphertext=ciphertext,
                           created_at=now, expires_at=expires_at))
        return Sealed(token, fragment, expires_at)

    def look(self, token: str) -> Opened:
        """A visit's page, without opening anything."""
        with self.db.read() as session:
            row = session.get(Reveal, digest(token)) if isinstance(token, str) else None
            key = session.get(ApiKey, row.key_id) if row is not None else None
        return self._state(row, key, utcnow())

    def open(self, token: str) -> Opened:
        """Take the ciphertext, once: deleted in the same transaction that records the view."""
        now = utcnow()
        if not isinstance(token, str):
            return Opened("unknown")
        with self.db.write() as session:
            row = session.get(Reveal, digest(token), with_for_update=True)
            if row is None:
                return Opened("unknown")
            key = session.get(ApiKey, row.key_id)
            if row.ciphertext is None or row.viewed_at is not None or row.expires_at <= now:
                return self._state(row, key, now)
            taken = row.ciphertext
            # Conditional: of two racing visits, one takes the ciphertext (SQLite's write lock, PostgreSQL's row lock).
            # timing: the row was found by primary key; this names it again, by the digest we hold, not the token
            same = Reveal.token_digest == row.token_digest  # timing: see above
            won = session.execute(update(Reveal).where(same, Reveal.viewed_at.is_(None))
                                  .values(viewed_at=now, ciphertext=None).returning(Reveal.token_digest)).first()
            if won is None:
                return Opened("viewed", key_name=key.name, key_masked=key.masked, viewed_at=now)
            self.audit.append(session, EventInput(actor="apikeys", action=Action.KEY_SECRET_REVEALED, key_id=row.key_id,
                                                  details={"name": key.name, "key": key.masked, "owner": key.owner,
                                                           "link_for": row.for_user}), at=now)
        return Opened("opened", ciphertext=taken, key_name=key.name, key_masked=key.masked, viewed_at=now,
                      expires_at=row.expires_at)

    @staticmethod
    def _state(row: Reveal | None, key: ApiKey | None, now: datetime) -> Opened:
        if row is None or key is None:
            return Opened("unknown")
        common = dict(key_name=key.name, key_masked=key.masked, viewed_at=row.viewed_at, expires_at=row.expires_at)
        if row.viewed_at is not None:
            return Opened("viewed", **common)
        if row.ciphertext is None or row.expires_at <= now:
            return Opened("expired", **common)
        return Opened("sealed", **common)

    def sweep(self, *, now: datetime | None = None, limit: int = 200) -> int:
        """Delete what expired unviewed; tell each admin (``key.reveal_expired`` and a direct message)."""
        now = now or utcnow()
        with self.db.write() as session:
            rows = list(session.scalars(
                select(Reveal).where(Reveal.viewed_at.is_(None), Reveal.expired_at.is_(None), Reveal.expires_at <= now)
                .order_by(Reveal.expires_at).limit(limit)))
            for row in rows:
                key = session.get(ApiKey, row.key_id)
                same = Reveal.token_digest == row.token_digest  # timing: the row's own key, read from the database
                session.execute(update(Reveal).where(same).values(ciphertext=None, expired_at=now))
                details = {"name": key.name, "key": key.masked, "owner": key.owner, "link_for": row.for_user}
                self.audit.append(session, EventInput(actor="apikeys", action=Action.KEY_REVEAL_EXPIRED,
                                                      key_id=row.key_id, details=details), at=now)
                if row.for_user.startswith(("U", "W")):
                    text = (f":hourglass: The one-time link to the new key *{key.name}* `{key.masked}` (`{key.id}`) "
                            "expired unviewed, and its secret is gone: nobody has it. Rotate that key again "
                            "(`Rotate` on it, grace `now`) for a new link, or `apikeys rotate` on the command line.")
                    self.audit.outbox.enqueue(session, topic=DM_TOPIC, channel=row.for_user, payload={"text": text})
        return len(rows)
