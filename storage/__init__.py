"""The key store: SQLModel tables and the key, audit and admin services (no Slack here)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import grants, integrity  # noqa: F401  (storage.grants, storage.integrity)
from .admins import AdminService
from .audit import Action, AuditLog, EventInput
from .cards import Cards
from .checkpoints import Signer
from .db import Database
from .errors import AdminNotFound, DatabaseUnavailable, InvalidInput, KeyNotFound, StorageError
from .expiry import ExpiryDigest
from .keys import KeyService, Verification, VerifyCode
from .leaks import LeakPolicy, LeakService
from .migrate import upgrade
from .models import ApiKey, AuditEvent, KeyStatus, RevokeReason
from .outbox import Outbox
from .owners import OwnerService
from .receipts import Receipts
from .reveals import RevealService
from .revocation import Revocation, Via
from .tokens import TokenService

DEFAULT_DATABASE_URL = "sqlite:///apikeys.db"


@dataclass
class Store:
    db: Database
    keys: KeyService
    audit: AuditLog
    admins: AdminService
    outbox: Outbox
    receipts: Receipts
    leaks: LeakService
    owners: OwnerService
    cards: Cards
    reveals: RevealService
    expiry: ExpiryDigest
    tokens: TokenService

    def close(self) -> None:
        self.keys.uses.stop(timeout=2.0)  # write the last uses and revoked keys' presentations handed over
        self.db.dispose()


def open_store(
    url: str = DEFAULT_DATABASE_URL, *, bootstrap_admins: Iterable[str] = (), create_schema: bool = True,
    notify_channel: str | None = None, pool_size: int = 10, signer: Signer | None = None,
    migration_progress: Callable[[int, int], None] | None = None,
) -> Store:
    """Open the key store. ``notify_channel``: queue one audit-channel post per audited action;
    ``signer``: sign a checkpoint of the audit log with every append."""
    db = Database(url, pool_size=pool_size)
    if create_schema:
        upgrade(db, progress=migration_progress)  # the newest schema (idempotent, safe with concurrent starters)
    audit = AuditLog(db, notify_channel=notify_channel, signer=signer)
    keys = KeyService(db, audit)
    owners = OwnerService(db, audit)
    return Store(db=db, keys=keys, audit=audit, admins=AdminService(db, audit, bootstrap_admins),
                 outbox=audit.outbox, receipts=audit.receipts, leaks=LeakService(db, audit, keys), owners=owners,
                 cards=Cards(db, audit), reveals=RevealService(db, audit), expiry=ExpiryDigest(db, audit, owners),
                 tokens=TokenService(db, audit))


__all__ = [
    "Revocation",
    "Via",
    "Action", "AdminNotFound", "AdminService", "ApiKey", "AuditEvent", "AuditLog", "Database",
    "DatabaseUnavailable", "EventInput", "InvalidInput", "KeyNotFound", "KeyService", "KeyStatus", "LeakPolicy", "LeakService",
    "RevokeReason", "Signer", "StorageError", "Store", "Verification", "VerifyCode", "open_store",
]
