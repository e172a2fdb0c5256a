"""Who holds the admin role: the bootstrap list from configuration plus stored admins."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select

from .audit import Action, AuditLog, EventInput
from .db import Database
from .errors import AdminNotFound, InvalidInput
from .keys import check_actor
from .models import Admin
from .timeutil import utcnow

USER_ID_RE = re.compile(r"^[UW][A-Z0-9]{2,31}$")


def check_user_id(user_id: str) -> str:
    cleaned = (user_id or "").strip()
    if not USER_ID_RE.match(cleaned):
        raise InvalidInput(f"{user_id!r} is not a Slack user ID (they look like U012AB3CD)")
    return cleaned


@dataclass(frozen=True)
class AdminEntry:
    user_id: str
    source: str  # "config" or "stored"
    added_by: str | None = None
    added_at: datetime | None = None


class AdminService:
    def __init__(self, db: Database, audit: AuditLog, bootstrap: Iterable[str] = ()):
        self.db = db
        self.audit = audit
        self.bootstrap = frozenset(u.strip() for u in bootstrap if u and u.strip())

    def is_admin(self, user_id: str | None) -> bool:
        if not user_id:
            return False
        if user_id in self.bootstrap:
            return True
        with self.db.read() as session:
            return session.get(Admin, user_id) is not None

    def list(self) -> list[AdminEntry]:
        with self.db.read() as session:
            stored = list(session.scalars(select(Admin).order_by(Admin.added_at, Admin.user_id)))
        entries = [AdminEntry(u, "config") for u in sorted(self.bootstrap)]
        entries += [AdminEntry(a.user_id, "stored", a.added_by, a.added_at) for a in stored if a.user_id not in self.bootstrap]
        return entries

    def add(self, user_id: str, *, actor: str) -> bool:
        """Grant the role. Returns False (and records nothing) when the user already held it."""
        user_id = check_user_id(user_id)
        actor = check_actor(actor)
        with self.db.write() as session:
            if user_id in self.bootstrap or session.get(Admin, user_id) is not None:
                return False
            inserted = session.execute(
                self.db.insert(Admin)
                .values(user_id=user_id, added_by=actor, added_at=utcnow())
                .on_conflict_do_nothing(index_elements=["user_id"])
                .returning(Admin.user_id)
            ).first()
            if inserted is None:
                return False
            self.audit.append(session, EventInput(actor=actor, action=Action.ADMIN_ADDED, details={"user_id": user_id}))
            return True

    def remove(self, user_id: str, *, actor: str) -> None:
        user_id = check_user_id(user_id)
        actor = check_actor(actor)
        if user_id in self.bootstrap:
            raise InvalidInput(f"{user_id} is an admin through APIKEYS_ADMINS; remove it there")
        with self.db.write() as session:
            session.execute(select(Admin.user_id).with_for_update())  # PostgreSQL: removals queue here
            if not session.execute(delete(Admin).where(Admin.user_id == user_id)).rowcount:
                raise AdminNotFound(user_id)
            # Never the last admin: someone must always be able to revoke from Slack. Counted after
            # the delete, in the same write transaction, so two removals at once cannot both pass.
            if not self.bootstrap and session.scalar(select(func.count()).select_from(Admin)) == 0:
                raise InvalidInput(f"{user_id} is the last admin; add another admin first")
            self.audit.append(session, EventInput(actor=actor, action=Action.ADMIN_REMOVED, details={"user_id": user_id}))
