"""The key store: SQLModel tables and the key, audit and admin services (no Slack here)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .admins import AdminService
from .audit import Action, AuditLog, EventInput
from .db import Database
from .errors import AdminNotFound, DatabaseUnavailable, InvalidInput, KeyNotFound, StorageError
from .keys import KeyService, Verification, VerifyCode
from .models import ApiKey, AuditEvent, KeyStatus, RevokeReason

DEFAULT_DATABASE_URL = "sqlite:///apikeys.db"


@dataclass
class Store:
    db: Database
    keys: KeyService
    audit: AuditLog
    admins: AdminService

    def close(self) -> None:
        self.db.dispose()


def open_store(url: str = DEFAULT_DATABASE_URL, *, bootstrap_admins: Iterable[str] = (), create_schema: bool = True) -> Store:
    db = Database(url)
    if create_schema:
        db.create_schema()
    audit = AuditLog(db)
    return Store(db=db, keys=KeyService(db, audit), audit=audit, admins=AdminService(db, audit, bootstrap_admins))


__all__ = [
    "Action", "AdminNotFound", "AdminService", "ApiKey", "AuditEvent", "AuditLog", "Database",
    "DatabaseUnavailable", "EventInput", "InvalidInput", "KeyNotFound", "KeyService", "KeyStatus",
    "RevokeReason", "StorageError", "Store", "Verification", "VerifyCode", "open_store",
]
