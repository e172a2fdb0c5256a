"""SQLModel tables. Times are aware UTC datetimes."""

from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import Column, Index, Text, types
from sqlmodel import Field, SQLModel

from .keyformat import mask


class UTCDateTime(types.TypeDecorator):
    """Aware UTC datetimes in Python; ``timestamptz`` on PostgreSQL, UTC text on SQLite."""

    impl = types.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.utcoffset() is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _when(**kwargs):
    return Field(sa_type=UTCDateTime, **kwargs)


class KeyStatus(str, enum.Enum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


class RevokeReason(str, enum.Enum):
    COMPROMISED = "compromised"
    ROTATION = "rotation"
    DECOMMISSIONED = "decommissioned"
    OTHER = "other"

    @property
    def label(self) -> str:
        return self.value.capitalize()


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"
    __table_args__ = (
        Index("ix_api_keys_created", "created_at", "id"),
        Index("ix_api_keys_owner_created", "owner", "created_at", "id"),
        Index("ix_api_keys_revoked_created", "revoked_at", "created_at", "id"),
        Index("ix_api_keys_last4", "last4"),
        Index("ix_api_keys_expires", "expires_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200)
    owner: str = Field(max_length=100)
    prefix: str = Field(max_length=16)
    last4: str = Field(max_length=4)
    digest: str = Field(max_length=64, unique=True)
    created_at: datetime = _when()
    created_by: str = Field(max_length=200)
    expires_at: datetime | None = _when(default=None)
    last_used_at: datetime | None = _when(default=None)
    revoked_at: datetime | None = _when(default=None)
    revoked_by: str | None = Field(default=None, max_length=200)
    revoke_reason: str | None = Field(default=None, max_length=32)
    revoke_note: str | None = Field(default=None, max_length=1000)
    # A rotation: the replacement's id, who rotated it and when; the key itself ends at ``expires_at``
    # (the end of the grace period, or at once: then it is revoked, reason rotation).
    rotated_to: str | None = Field(default=None, max_length=40)
    rotated_at: datetime | None = _when(default=None)
    rotated_by: str | None = Field(default=None, max_length=200)

    @property
    def masked(self) -> str:
        return mask(self.prefix, self.last4)

    def rotating_at(self, now: datetime) -> bool:
        """Rotated, and still working until its grace period ends (``expires_at``)."""
        return self.rotated_to is not None and self.status_at(now) is KeyStatus.ACTIVE

    def status_at(self, now: datetime) -> KeyStatus:
        if self.revoked_at is not None:
            return KeyStatus.REVOKED
        if self.expires_at is not None and now >= self.expires_at:
            return KeyStatus.EXPIRED
        return KeyStatus.ACTIVE


class AuditEvent(SQLModel, table=True):
    """One entry of the append-only, hash-chained audit log. ``id`` is the chain position."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_key", "key_id", "id"),)

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime = _when()
    actor: str = Field(max_length=200)
    action: str = Field(max_length=64, index=True)
    key_id: str | None = Field(default=None, max_length=40)
    details: str = Field(sa_column=Column(Text, nullable=False))  # canonical JSON
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    """A single row naming the newest audit entry; locked to keep the chain linear."""

    __tablename__ = "audit_head"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    last_id: int
    last_hash: str = Field(max_length=64)


class AuditCheckpoint(SQLModel, table=True):
    """A signed statement "the log's head after entry ``entry_id`` is ``head_hash``" (Ed25519), made
    in the transaction that appended that entry. Checkpoints form a chain of their own: each signs
    the hash of the one before (``prev_hash``), so the newest valid signature vouches for all."""

    __tablename__ = "audit_checkpoints"

    entry_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    # The first entry this checkpoint vouches for (its own transaction's); None: a version 1 checkpoint.
    first_entry_id: int | None = Field(default=None)
    head_hash: str = Field(max_length=64)
    at: datetime = _when()
    public_key: str = Field(max_length=64)   # the signer's raw Ed25519 public key, base64
    prev_hash: str = Field(max_length=64)    # the previous checkpoint's hash (64 zeros for the first)
    signature: str = Field(max_length=128)   # Ed25519 over the checkpoint's message, base64
    hash: str = Field(max_length=64)         # SHA-256 of the message and the signature


class Admin(SQLModel, table=True):
    __tablename__ = "admins"

    user_id: str = Field(primary_key=True, max_length=32)
    added_by: str = Field(max_length=200)
    added_at: datetime = _when()
